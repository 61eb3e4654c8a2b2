//! The single-app rules a parsed manifest must keep; each broken one is a [`Problem`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::model::{capability_name, AppManifest, HealthProbe, SecretSpec};
use super::mounts::PortMapping;
use super::secret_ref::{is_valid_secret_name, secret_refs};
use super::source::{escapes_folder, ManifestError};
use super::Problem;

impl AppManifest {
    /// Checks the single-app rules; `path` names the manifest in problems and `app_dir` is
    /// the app's folder. Returns every problem found (empty when the app is fine).
    pub fn validate(&self, path: &Path, app_dir: &Path) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem =
            |field: &str, reason: String| problems.push(Problem::new(path, field, reason));

        // identity
        match app_dir.file_name().and_then(|n| n.to_str()) {
            Some(folder) if folder == self.id.as_str() => {}
            Some(folder) => problem(
                "id",
                format!(
                    "{:?} does not match the folder name {folder:?}",
                    self.id.as_str()
                ),
            ),
            None => problem(
                "id",
                format!("cannot tell the folder name of {}", app_dir.display()),
            ),
        }
        if self.name.trim().is_empty() {
            problem("name", "is empty".to_string());
        }
        if !is_valid_tag(&self.version) {
            problem(
                "version",
                format!(
                    "{:?} is not usable as an image tag: use 1 to 128 characters of A-Z a-z 0-9 _ . -, not starting with . or -",
                    self.version
                ),
            );
        }
        let mut seen = BTreeSet::new();
        for (i, dep) in self.dependencies.iter().enumerate() {
            if *dep == self.id {
                problem(
                    &format!("dependencies[{i}]"),
                    "an app cannot depend on itself".to_string(),
                );
            } else if !seen.insert(dep) {
                problem(
                    &format!("dependencies[{i}]"),
                    format!("`{dep}` is listed twice"),
                );
            }
        }

        // image source
        let c = &self.container;
        match (&c.image, &c.build) {
            (Some(_), Some(_)) => problem(
                "container",
                "has both image and build: keep exactly one".to_string(),
            ),
            (None, None) => problem("container", "needs one of image and build".to_string()),
            (Some(image), None) => {
                if image.is_empty() || image.chars().any(char::is_whitespace) {
                    problem(
                        "container.image",
                        format!("{image:?} is not an image reference"),
                    );
                }
            }
            (None, Some(build)) => {
                if escapes_folder(&build.context) {
                    problem(
                        "container.build.context",
                        format!(
                            "{:?} escapes the app folder: use a path inside it",
                            build.context.display().to_string()
                        ),
                    );
                } else if let Err(ManifestError::ContextEscapes { .. }) =
                    c.resolve(app_dir, &self.id, &self.version)
                {
                    problem(
                        "container.build.context",
                        format!(
                            "{:?} escapes the app folder through a symlink",
                            build.context.display().to_string()
                        ),
                    );
                }
                if build.dockerfile.is_empty() || escapes_folder(Path::new(&build.dockerfile)) {
                    problem(
                        "container.build.dockerfile",
                        format!(
                            "{:?} must be a path inside the build context",
                            build.dockerfile
                        ),
                    );
                }
            }
        }

        // container settings
        if c.user.as_ref().is_some_and(|u| u.trim().is_empty()) {
            problem("container.user", "is empty".to_string());
        }
        for key in c.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                problem(
                    "container.env",
                    format!("{key:?} is not a valid variable name"),
                );
            }
        }
        let mut host_ports = BTreeMap::new();
        for (i, port) in c.ports.iter().enumerate() {
            if let Some(first) = host_ports.insert((port.host, port.protocol), i) {
                problem(
                    &format!("container.ports[{i}]"),
                    format!(
                        "host port {}/{} is already published by ports[{first}]",
                        port.host, port.protocol
                    ),
                );
            }
        }
        let mut paths = BTreeSet::new();
        for (i, volume) in c.volumes.iter().enumerate() {
            let field = format!("container.volumes[{i}]");
            if let Err(reason) = check_volume_name(&volume.name) {
                problem(&field, reason);
            }
            if let Some(app) = &volume.app {
                if !self.dependencies.contains(app) {
                    problem(
                        &field,
                        format!(
                            "volume {:?} belongs to `{app}`, which is not a dependency of this app",
                            volume.source()
                        ),
                    );
                }
                if !volume.read_only {
                    problem(
                        &field,
                        format!(
                            "a dependency's volume is mounted read-only only: write \"{}:{}:ro\"",
                            volume.source(),
                            volume.path
                        ),
                    );
                }
            }
            if !volume.path.starts_with('/') {
                problem(
                    &field,
                    format!("container path {:?} must be absolute", volume.path),
                );
            } else if !paths.insert(volume.path.as_str()) {
                problem(
                    &field,
                    format!("container path {:?} is mounted twice", volume.path),
                );
            }
        }
        if let Some(network) = &c.network {
            if let Err(reason) = check_network(network) {
                problem("container.network", reason);
            }
        }
        for (field, names) in [
            ("container.cap_add", &c.cap_add),
            ("container.cap_drop", &c.cap_drop),
        ] {
            for (i, name) in names.iter().enumerate() {
                if let Err(reason) = capability_name(name) {
                    problem(&format!("{field}[{i}]"), reason);
                }
            }
        }
        if c.pids_limit == Some(0) {
            problem(
                "container.pids_limit",
                "must be above 0: leave it out for the default".to_string(),
            );
        }
        if let Some(health) = &c.health {
            match &health.probe {
                HealthProbe::Http { port, path } => {
                    if *port == 0 {
                        problem(
                            "container.health.http.port",
                            "port 0 is not allowed".to_string(),
                        );
                    }
                    if !path.starts_with('/') {
                        problem(
                            "container.health.http.path",
                            format!("{path:?} must start with '/'"),
                        );
                    }
                    if let Err(reason) = check_probe_port(*port, &c.ports) {
                        problem("container.health.http.port", reason);
                    }
                }
                HealthProbe::Tcp { port } => {
                    if *port == 0 {
                        problem(
                            "container.health.tcp.port",
                            "port 0 is not allowed".to_string(),
                        );
                    }
                    if let Err(reason) = check_probe_port(*port, &c.ports) {
                        problem("container.health.tcp.port", reason);
                    }
                }
                HealthProbe::Exec(command) => {
                    if command.is_empty() {
                        problem("container.health.exec", "is empty".to_string());
                    }
                }
            }
            if health.interval.is_zero() {
                problem("container.health.interval", "must be above 0s".to_string());
            }
            if health.timeout.is_zero() {
                problem("container.health.timeout", "must be above 0s".to_string());
            }
        }

        // hooks
        for (i, step) in self.hooks.post_create.iter().enumerate() {
            if step.exec.is_empty() {
                problem(
                    &format!("hooks.post_create[{i}].exec"),
                    "is empty".to_string(),
                );
            }
            if step.timeout.is_zero() {
                problem(
                    &format!("hooks.post_create[{i}].timeout"),
                    "must be above 0s".to_string(),
                );
            }
        }

        // secrets
        for (name, spec) in &self.secrets {
            let field = format!("secrets.{name}");
            if !is_valid_secret_name(name) {
                problem(
                    &field,
                    format!("{name:?} is not a valid secret name: use A-Z a-z 0-9 _ . -, starting with a letter, digit or _"),
                );
            }
            match spec {
                SecretSpec::Password { length } if !(8..=4096).contains(length) => {
                    problem(
                        &format!("{field}.length"),
                        format!("{length} is out of range 8-4096"),
                    );
                }
                SecretSpec::Hex { bytes } if !(8..=4096).contains(bytes) => {
                    problem(
                        &format!("{field}.bytes"),
                        format!("{bytes} is out of range 8-4096"),
                    );
                }
                SecretSpec::Rpcauth { user, password } => {
                    if user.is_empty()
                        || user.contains(':')
                        || user.chars().any(char::is_whitespace)
                    {
                        problem(
                            &format!("{field}.user"),
                            format!("{user:?} is not a valid rpc user name"),
                        );
                    }
                    match self.secrets.get(password) {
                        None => problem(
                            &format!("{field}.password"),
                            format!("names no secret of this app: {password:?}"),
                        ),
                        Some(SecretSpec::Rpcauth { .. }) => problem(
                            &format!("{field}.password"),
                            format!(
                                "{password:?} is an rpcauth secret; name a password or hex secret"
                            ),
                        ),
                        Some(_) => {}
                    }
                }
                _ => {}
            }
        }
        for (field, value) in self.secret_ref_sites() {
            match secret_refs(value) {
                Err(reason) => problem(&field, reason),
                Ok(refs) => {
                    for r in refs {
                        match &r.app {
                            None => {
                                if !self.secrets.contains_key(&r.name) {
                                    problem(&field, format!("${{secret:{}}} names no secret of this app", r.name));
                                }
                            }
                            Some(app) if *app == self.id => {
                                if !self.secrets.contains_key(&r.name) {
                                    problem(&field, format!("${{secret:{app}/{}}} names no secret of this app", r.name));
                                }
                            }
                            Some(app) if !self.dependencies.contains(app) => problem(
                                &field,
                                format!(
                                    "${{secret:{app}/{}}} refers to `{app}`, which is not a dependency of this app",
                                    r.name
                                ),
                            ),
                            Some(_) => {} // existence is a cross-app rule, see catalog
                        }
                    }
                }
            }
        }

        // onion
        if let Some(onion) = &self.onion {
            if onion.ports.is_empty() {
                problem(
                    "onion.ports",
                    "is empty: list at least one ONION:TARGET".to_string(),
                );
            }
            let mut seen = BTreeSet::new();
            for (i, p) in onion.ports.iter().enumerate() {
                if !seen.insert(p.onion) {
                    problem(
                        &format!("onion.ports[{i}]"),
                        format!("onion port {} is listed twice", p.onion),
                    );
                }
            }
        }
        for (field, value) in self.onion_ref_sites() {
            match crate::onion::references(self.id.as_str(), value) {
                Err(e) => problem(&field, e.to_string()),
                Ok(targets) => {
                    for target in targets {
                        if target == self.id.as_str() {
                            if self.onion.is_none() {
                                problem(
                                    &field,
                                    "${onion} needs this app's own `onion` ports".to_string(),
                                );
                            }
                        } else if !self.dependencies.iter().any(|d| d.as_str() == target) {
                            problem(
                                &field,
                                format!("${{onion:{target}}} refers to `{target}`, which is not a dependency of this app"),
                            );
                        }
                    }
                }
            }
        }

        // ui
        if let Some(ui) = &self.ui {
            if ui.port == 0 {
                problem("ui.port", "port 0 is not allowed".to_string());
            }
            if !ui.path.starts_with('/') {
                problem("ui.path", format!("{:?} must start with '/'", ui.path));
            }
        }

        // backup
        let own: Vec<&str> = self.own_volume_names();
        for (field, reason) in self.backup.problems(&own) {
            problem(&field, reason);
        }
        problems
    }
}

/// Docker's tag grammar: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub(super) fn is_valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `host`, `none` or a network name. Sharing another container's namespaces
/// (`container:NAME`, `ns:PATH`) is refused: an app would see and reach everything of the
/// other one, and the supervisor could not tell what the app's network is.
pub(super) fn check_network(network: &str) -> Result<(), String> {
    if network.trim().is_empty() {
        return Err("is empty: leave it out for the default network".to_string());
    }
    if let Some((mode, _)) = network.split_once(':') {
        return Err(format!(
            "{network:?}: {mode}: networks are refused; use host, none or a network name"
        ));
    }
    let ok = network.as_bytes()[0].is_ascii_alphanumeric()
        && network
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{network:?} is not a network name: use A-Z a-z 0-9 _ . -, starting with a letter or digit"
        ))
    }
}

/// A probe connects to `port` inside the container's own network namespace, so it names
/// the port the server listens on. A port that is only the host side of a published
/// mapping to another port is never answered there: that is a mistake, not a probe.
pub(super) fn check_probe_port(port: u16, ports: &[PortMapping]) -> Result<(), String> {
    let listened = ports.iter().any(|p| p.container == port);
    match ports.iter().find(|p| p.host == port && p.container != port) {
        Some(p) if !listened => Err(format!(
            "{port} is the host side of the published port {p}: probes connect inside the container, so name the port it listens on ({})",
            p.container
        )),
        _ => Ok(()),
    }
}

/// A volume name is one folder name under the app's data folder: never a host path.
pub(super) fn check_volume_name(name: &str) -> Result<(), String> {
    if name.starts_with('/') {
        return Err(format!(
            "{name:?} is a host path: absolute host paths are refused, use a volume name such as data"
        ));
    }
    if name.contains('/') || name.contains("..") {
        return Err(format!("volume name {name:?} may not contain '/' or '..'"));
    }
    let ok = !name.is_empty()
        && name != "."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !ok {
        return Err(format!(
            "volume name {name:?} is invalid: use A-Z a-z 0-9 _ . -"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::fixtures::*;

    #[test]
    fn validates_single_app_rules() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("id: lnd", "id: lnd2", &["id: \"lnd2\" does not match the folder name \"lnd\""]),
            ("name: LND", "name: ' '", &["name: is empty"]),
            ("\"0.18.3\"", "\"0.18 beta\"", &["version: \"0.18 beta\" is not usable as an image tag: use 1 to 128 characters of A-Z a-z 0-9 _ . -, not starting with . or -"]),
            ("[bitcoind]", "[bitcoind, lnd, bitcoind]", &[
                "dependencies[1]: an app cannot depend on itself",
                "dependencies[2]: `bitcoind` is listed twice",
            ]),
            ("  image: lightninglabs/lnd:v0.18.3-beta\n", "  image: lightninglabs/lnd:v0.18.3-beta\n  build: {context: .}\n", &["container: has both image and build: keep exactly one"]),
            ("  image: lightninglabs/lnd:v0.18.3-beta\n", "", &["container: needs one of image and build"]),
            ("  image: lightninglabs/lnd:v0.18.3-beta\n", "  build: {context: ../bitcoind}\n", &["container.build.context: \"../bitcoind\" escapes the app folder: use a path inside it"]),
            ("  image: lightninglabs/lnd:v0.18.3-beta\n", "  build: {context: /srv}\n", &["container.build.context: \"/srv\" escapes the app folder: use a path inside it"]),
            ("  image: lightninglabs/lnd:v0.18.3-beta\n", "  build: {context: src, dockerfile: ../../Dockerfile}\n", &["container.build.dockerfile: \"../../Dockerfile\" must be a path inside the build context"]),
            ("  image: lightninglabs/lnd:v0.18.3-beta\n", "  image: 'a b'\n", &["container.image: \"a b\" is not an image reference"]),
            ("\"53:53/udp\"", "\"9735:9999\"", &["container.ports[2]: host port 9735/tcp is already published by ports[0]"]),
            ("\"data:/root/.lnd\"", "\"/srv/lnd:/root/.lnd\"", &["container.volumes[0]: \"/srv/lnd\" is a host path: absolute host paths are refused, use a volume name such as data"]),
            ("\"data:/root/.lnd\"", "\"../data:/root/.lnd\"", &["container.volumes[0]: volume name \"../data\" may not contain '/' or '..'"]),
            ("\"data:/root/.lnd\"", "\"a..b:/root/.lnd\"", &["container.volumes[0]: volume name \"a..b\" may not contain '/' or '..'"]),
            ("\"data:/root/.lnd\"", "\"da ta:/root/.lnd\"", &["container.volumes[0]: volume name \"da ta\" is invalid: use A-Z a-z 0-9 _ . -"]),
            ("\"data:/root/.lnd\"", "\"data:root\"", &["container.volumes[0]: container path \"root\" must be absolute"]),
            ("\"data:/root/.lnd\"", "\"data:/etc/lnd\"", &["container.volumes[1]: container path \"/etc/lnd\" is mounted twice"]),
            ("\"data:/root/.lnd\"", "\"bitcoind/data:/bitcoin\"", &["container.volumes[0]: a dependency's volume is mounted read-only only: write \"bitcoind/data:/bitcoin:ro\""]),
            ("\"data:/root/.lnd\"", "\"tor/data:/tor:ro\"", &["container.volumes[0]: volume \"tor/data\" belongs to `tor`, which is not a dependency of this app"]),
            ("network: host", "network: 'container:bitcoind'", &["container.network: \"container:bitcoind\": container: networks are refused; use host, none or a network name"]),
            ("network: host", "network: 'ns:/proc/1/ns/net'", &["container.network: \"ns:/proc/1/ns/net\": ns: networks are refused; use host, none or a network name"]),
            ("network: host", "network: '-x'", &["container.network: \"-x\" is not a network name: use A-Z a-z 0-9 _ . -, starting with a letter or digit"]),
            ("network: host\n", "network: host\n  cap_add: [net_admin, CAP_SYS_TIME, BOGUS]\n  cap_drop: [ALL]\n  pids_limit: 0\n", &[
                "container.cap_add[2]: \"BOGUS\" is not a Linux capability",
                "container.cap_drop[0]: \"ALL\": ALL is refused; name each capability the app needs",
                "container.pids_limit: must be above 0: leave it out for the default",
            ]),
            ("ui: {port: 8080, path: /}", "ui: {port: 8080, path: /}\nonion: {ports: [\"80:8080\", \"80:9000\"]}", &["onion.ports[1]: onion port 80 is listed twice"]),
            ("ui: {port: 8080, path: /}", "ui: {port: 8080, path: /}\nonion: {ports: []}", &["onion.ports: is empty: list at least one ONION:TARGET"]),
            ("    PORT: 8080", "    PORT: \"${onion}\"", &["container.env.PORT: ${onion} needs this app's own `onion` ports"]),
            ("    PORT: 8080", "    PORT: \"${onion:tor}\"", &["container.env.PORT: ${onion:tor} refers to `tor`, which is not a dependency of this app"]),
            ("\"10009:10009/tcp\"", "\"8080:80\"", &["container.health.http.port: 8080 is the host side of the published port 8080:80/tcp: probes connect inside the container, so name the port it listens on (80)"]),
            ("http: {port: 8080, path: /}", "http: {port: 0, path: health}", &[
                "container.health.http.path: \"health\" must start with '/'",
                "container.health.http.port: port 0 is not allowed",
            ]),
            ("interval: 10s", "interval: 0s", &["container.health.interval: must be above 0s"]),
            ("[\"lncli\", \"create\"]", "[]", &["hooks.post_create[0].exec: is empty"]),
            ("{kind: password, length: 32}", "{kind: password, length: 4}", &["secrets.rpc_password.length: 4 is out of range 8-4096"]),
            ("password: rpc_password}", "password: nope}", &["secrets.rpcauth.password: names no secret of this app: \"nope\""]),
            ("password: rpc_password}", "password: rpcauth}", &["secrets.rpcauth.password: \"rpcauth\" is an rpcauth secret; name a password or hex secret"]),
            ("user: archipelago", "user: 'a:b'", &["secrets.rpcauth.user: \"a:b\" is not a valid rpc user name"]),
            ("macaroon_key: {kind: hex}", "'.key': {kind: hex}", &[
                "container.env.MACAROON: ${secret:macaroon_key} names no secret of this app",
                "secrets..key: \".key\" is not a valid secret name: use A-Z a-z 0-9 _ . -, starting with a letter, digit or _",
            ]),
            ("${secret:bitcoind/rpc_password}", "${secret:tor/rpc_password}", &["container.env.RPCPASS: ${secret:tor/rpc_password} refers to `tor`, which is not a dependency of this app"]),
            ("${secret:bitcoind/rpc_password}", "${secret:lnd/nope}", &["container.env.RPCPASS: ${secret:lnd/nope} names no secret of this app"]),
            ("${secret:bitcoind/rpc_password}", "${secret:bitcoind/rpc", &["container.env.RPCPASS: unterminated secret reference in \"${secret:bitcoind/rpc\": missing '}'"]),
            ("[\"--bitcoin.mainnet\"]", "[\"--pw=${secret:nope}\"]", &["container.command[0]: ${secret:nope} names no secret of this app"]),
            ("ui: {port: 8080, path: /}", "ui: {port: 8080, path: x}", &["ui.path: \"x\" must start with '/'"]),
        ];
        for (from, to, want) in cases {
            assert!(FULL.contains(from), "{from:?} is not in the example");
            let text = FULL.replacen(from, to, 1);
            let m = parse(&text).unwrap_or_else(|p| panic!("{to:?} parses: {p:?}"));
            let mut got =
                lines(&m.validate(Path::new("apps/lnd/manifest.yml"), Path::new("apps/lnd")));
            got.sort();
            let want: Vec<String> = want
                .iter()
                .map(|w| format!("apps/lnd/manifest.yml: {w}"))
                .collect();
            assert_eq!(got, want, "{from:?} -> {to:?}");
        }
    }
}
