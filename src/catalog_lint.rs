//! `archipelago validate --strict`: rules for a catalog that ships, on top of the rules the
//! supervisor needs to load it (those stay in [`crate::manifest`] and [`crate::catalog`]).
//!
//! A manifest states some facts the format has no field for in comment lines, each a
//! line of its own that starts with `#` and one of these keys (see `docs/manifest.md`,
//! *Strict validation*):
//!
//! - `# digest: SOURCE` — where the image's `@sha256:` digest was read; or
//!   `# digest: none, because REASON` for an image pinned by tag only.
//! - `# listens: PORT[, PORT…] — why` — ports the server listens on that neither `ports`,
//!   `onion` nor a listen address in `env`/`command` shows (an image's built-in default).
//! - `# image user: NAME — source` — the user the image runs as, for an app that has
//!   volumes and no `user:`.
//! - `# provides: VOLUME/PATH[, VOLUME/PATH…] — what` — files or folders the app makes in
//!   its own volume VOLUME for its dependants (lnd's macaroons, NBXplorer's cookie).
//!
//! The rules, each reported as `PATH: FIELD: reason`:
//!
//! 1. `container.image`: the reference has a tag other than `latest`, and either a digest
//!    (`NAME:TAG@sha256:<64 hex>`) with a `# digest:` line naming its source, or a
//!    `# digest: none, because …` line. `container.build`: a built image has a `# digest:`
//!    line about its Dockerfile's base image.
//! 2. `container.health.http.port` / `container.health.tcp.port`: the probe's port is one
//!    the app is known to listen on: the container side of `ports`, an `onion` target, a
//!    listen address (`0.0.0.0:P`, `[::]:P`, `127.0.0.1:P`, `localhost:P`) in `env`,
//!    `command` or `entrypoint`, an env variable `X_PORT` set to P (unless an `X_HOST`
//!    variable names another host: then it is something else's address), or a
//!    `# listens:` line.
//! 3. `container.user`: an app with volumes of its own runs as a known user: `user:` or a
//!    `# image user:` line; and `container.volumes[N]`: a `user:` other than root has no
//!    volume of its own under `/root` (root's 0700 home, which it cannot enter).
//! 4. References to files and addresses something else must make: an absolute path in
//!    `env`, `command`, `entrypoint`, `hooks` or an `exec` probe that lies in a dependency's
//!    volume must be provided by that dependency (`# provides:`); a path that looks like a
//!    credential (`*.macaroon`, `*.cookie`, `.cookie`, `*.cert`, `*.crt`, `*.pem`, `*.key`)
//!    must lie in a mounted volume; `${onion:APP}` needs APP to declare `onion` ports.

use std::collections::BTreeSet;

use crate::catalog::{Catalog, CatalogApp};
use crate::manifest::{AppManifest, HealthProbe, Problem};

/// The facts a manifest states in its comment lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotations {
    /// Text after `# digest:`, trimmed; `None` without such a line.
    pub digest: Option<String>,
    /// Ports of every `# listens:` line.
    pub listens: BTreeSet<u16>,
    /// Text after `# image user:`, trimmed.
    pub image_user: Option<String>,
    /// `VOLUME/PATH` entries of every `# provides:` line.
    pub provides: Vec<String>,
}

/// Reads the annotation lines of a manifest's text.
pub fn annotations(text: &str) -> Annotations {
    let mut out = Annotations::default();
    for line in text.lines() {
        let Some(comment) = line.trim_start().strip_prefix('#') else {
            continue;
        };
        let comment = comment.trim();
        if let Some(rest) = comment.strip_prefix("digest:") {
            out.digest = Some(rest.trim().to_string());
        } else if let Some(rest) = comment.strip_prefix("listens:") {
            // Numbers up to the first word that is not one: "28183, 28283 — jmwalletd".
            for word in rest.split([',', ' ']).filter(|w| !w.is_empty()) {
                match word.parse::<u16>() {
                    Ok(port) => {
                        out.listens.insert(port);
                    }
                    Err(_) => break,
                }
            }
        } else if let Some(rest) = comment.strip_prefix("image user:") {
            out.image_user = Some(rest.trim().to_string()).filter(|s| !s.is_empty());
        } else if let Some(rest) = comment.strip_prefix("provides:") {
            let list = rest.split(" — ").next().unwrap_or("");
            out.provides.extend(
                list.split(',')
                    .map(|s| s.trim().trim_end_matches('/').to_string())
                    .filter(|s| s.contains('/')),
            );
        }
    }
    out
}

/// Lints every app of the catalog (the apps that passed the loading rules). Reads each
/// manifest's text again for its comment lines. Problems come sorted by path.
pub fn lint(catalog: &Catalog) -> Vec<Problem> {
    let notes: std::collections::BTreeMap<String, Annotations> = catalog
        .apps
        .iter()
        .map(|(id, app)| {
            let text = std::fs::read_to_string(&app.path).unwrap_or_default();
            (id.as_str().to_string(), annotations(&text))
        })
        .collect();
    let mut problems = Vec::new();
    for (id, app) in &catalog.apps {
        let own = &notes[id.as_str()];
        problems.extend(lint_app(app, own, catalog, &notes));
    }
    problems.sort_by(|a, b| a.path.cmp(&b.path));
    problems
}

fn lint_app(
    app: &CatalogApp,
    own: &Annotations,
    catalog: &Catalog,
    notes: &std::collections::BTreeMap<String, Annotations>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut problem = |field: &str, reason: String| {
        problems.push(Problem::new(&app.path, field, reason));
    };
    let m = &app.manifest;
    let c = &m.container;

    // 1. image: tag, digest and where it came from.
    if let Some(image) = &c.image {
        if let Some(reason) = image_problem(image, own.digest.as_deref()) {
            problem("container.image", reason);
        }
    } else if own.digest.as_deref().is_none_or(str::is_empty) {
        problem(
            "container.build",
            "a built image needs a `# digest:` comment about its Dockerfile's base image \
             (where its digest was read, or `none, because …`)"
                .to_string(),
        );
    }

    // 2. probes reach a port the server listens on.
    if let Some(health) = &c.health {
        let (field, port) = match &health.probe {
            HealthProbe::Http { port, .. } => ("container.health.http.port", Some(*port)),
            HealthProbe::Tcp { port } => ("container.health.tcp.port", Some(*port)),
            HealthProbe::Exec(_) => ("", None),
        };
        if let Some(port) = port {
            if !listen_ports(m, own).contains(&port) {
                problem(
                    field,
                    format!(
                        "nothing shows that the app listens on {port}: publish it in `ports`, \
                         write its listen address in env or command, or name the image's \
                         default in a `# listens: {port}` comment"
                    ),
                );
            }
        }
    }

    // 3. the owner of the app's own volumes is known.
    if c.volumes.iter().any(|v| v.app.is_none()) && c.user.is_none() && own.image_user.is_none() {
        problem(
            "container.user",
            "the app has volumes but not who owns them: set `user:` or say which user the \
             image runs as in an `# image user: NAME` comment"
                .to_string(),
        );
    }

    // 3b. a user other than root cannot reach a volume inside root's 0700 home.
    if let Some(user) = &c.user {
        let name = user.split(':').next().unwrap_or(user);
        if name != "root" && name != "0" {
            for (i, v) in c.volumes.iter().enumerate() {
                if v.app.is_none() && (v.path == "/root" || v.path.starts_with("/root/")) {
                    problem(
                        &format!("container.volumes[{i}]"),
                        format!(
                            "{:?} is inside /root, root's 0700 home, which user {user:?} cannot \
                             enter: mount the volume elsewhere (e.g. /data)",
                            v.path
                        ),
                    );
                }
            }
        }
    }

    // 4. files and addresses that something else must make.
    for (field, text) in referenced_texts(m) {
        for path in path_tokens(&text) {
            if let Some(reason) = path_problem(m, &path, notes) {
                problem(&field, reason);
            }
        }
        for target in onion_targets(&text) {
            let declares = catalog
                .apps
                .iter()
                .find(|(id, _)| id.as_str() == target)
                .is_some_and(|(_, dep)| dep.manifest.onion.is_some());
            if !declares {
                problem(
                    &field,
                    format!(
                        "${{onion:{target}}}: `{target}` declares no `onion` ports, so tor \
                         never makes its address"
                    ),
                );
            }
        }
    }
    problems
}

/// Why an image reference does not pass rule 1, if it does not.
fn image_problem(image: &str, digest_note: Option<&str>) -> Option<String> {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    let after_slash = name.rfind('/').map_or(0, |i| i + 1);
    let tag = name[after_slash..].rsplit_once(':').map(|(_, tag)| tag);
    match tag {
        None => return Some(format!("{image:?} has no tag: pin a release, `NAME:TAG`")),
        Some("latest") => {
            return Some(format!(
                "{image:?} uses `latest`: pin a release tag instead"
            ))
        }
        Some(_) => {}
    }
    let note = digest_note.unwrap_or("");
    let says_none = note.to_ascii_lowercase().starts_with("none");
    match digest {
        Some(digest) => {
            let hex = digest.strip_prefix("sha256:").unwrap_or("");
            if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                Some(format!(
                    "{image:?}: the digest must be `sha256:` and 64 lowercase hex digits"
                ))
            } else if note.is_empty() || says_none {
                Some(format!(
                    "{image:?} is pinned by digest but no `# digest: SOURCE` comment says \
                     where the digest was read"
                ))
            } else {
                None
            }
        }
        None => {
            let reason = note
                .get(4..)
                .unwrap_or("")
                .trim_start_matches([',', ':', ' ', '-', '—']);
            if says_none && reason.chars().any(char::is_alphabetic) {
                None
            } else {
                Some(format!(
                    "{image:?} is not pinned by digest (`NAME:TAG@sha256:…`) and no \
                     `# digest: none, because …` comment says why"
                ))
            }
        }
    }
}

/// Ports rule 2 accepts for a probe.
fn listen_ports(m: &AppManifest, notes: &Annotations) -> BTreeSet<u16> {
    let c = &m.container;
    let mut ports: BTreeSet<u16> = c.ports.iter().map(|p| p.container).collect();
    if let Some(onion) = &m.onion {
        ports.extend(onion.ports.iter().map(|p| p.target));
    }
    ports.extend(notes.listens.iter().copied());
    let args = c.command.iter().chain(c.entrypoint.iter()).flatten();
    for text in c.env.values().chain(args) {
        ports.extend(listen_addresses(text));
    }
    for (name, value) in &c.env {
        let Ok(port) = value.trim().parse::<u16>() else {
            continue;
        };
        let Some(stem) = name.strip_suffix("PORT") else {
            continue;
        };
        let stem = stem.trim_end_matches('_');
        let mut stems = vec![stem.to_string()];
        if let Some((shorter, _)) = stem.rsplit_once('_') {
            stems.push(shorter.to_string());
        }
        let elsewhere = stems.iter().any(|s| {
            [format!("{s}_HOST"), format!("{s}HOST")]
                .iter()
                .filter_map(|h| c.env.get(h))
                .any(|host| !is_local_host(host))
        });
        if !elsewhere {
            ports.insert(port);
        }
    }
    ports
}

fn is_local_host(host: &str) -> bool {
    matches!(
        host.trim(),
        "0.0.0.0" | "::" | "[::]" | "127.0.0.1" | "localhost" | "*" | ""
    )
}

/// Ports of listen addresses written in `text`: `0.0.0.0:P`, `[::]:P`, `127.0.0.1:P`,
/// `localhost:P`.
fn listen_addresses(text: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for host in ["0.0.0.0:", "[::]:", "127.0.0.1:", "localhost:"] {
        let mut rest = text;
        while let Some(at) = rest.find(host) {
            let after = &rest[at + host.len()..];
            let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(port) = digits.parse::<u16>() {
                out.push(port);
            }
            rest = after;
        }
    }
    out
}

/// Every text of the manifest whose paths and references reach the container, by field.
fn referenced_texts(m: &AppManifest) -> Vec<(String, String)> {
    let c = &m.container;
    let mut out: Vec<(String, String)> = c
        .env
        .iter()
        .map(|(k, v)| (format!("container.env.{k}"), v.clone()))
        .collect();
    let lists = [
        ("container.command", &c.command),
        ("container.entrypoint", &c.entrypoint),
    ];
    for (field, list) in lists {
        for (i, arg) in list.iter().flatten().enumerate() {
            out.push((format!("{field}[{i}]"), arg.clone()));
        }
    }
    if let Some(HealthProbe::Exec(args)) = c.health.as_ref().map(|h| &h.probe) {
        for (i, arg) in args.iter().enumerate() {
            out.push((format!("container.health.exec[{i}]"), arg.clone()));
        }
    }
    for (s, step) in m.hooks.post_create.iter().enumerate() {
        for (i, arg) in step.exec.iter().enumerate() {
            out.push((format!("hooks.post_create[{s}].exec[{i}]"), arg.clone()));
        }
    }
    out
}

/// Absolute paths written in `text` (not URLs: `https://x/…` gives none).
fn path_tokens(text: &str) -> Vec<String> {
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/');
    let mut out = Vec::new();
    let mut current = String::new();
    let mut prev: Option<char> = None;
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        if current.is_empty() {
            // A path starts with `/` after a separator, not inside a word or after `:`.
            let starts = ch == '/'
                && !matches!(prev, Some(p) if p.is_ascii_alphanumeric() || p == ':' || p == '/' || p == '.');
            if starts && chars.peek() != Some(&'/') {
                current.push(ch);
            }
        } else if is_path_char(ch) {
            current.push(ch);
        } else {
            out.push(std::mem::take(&mut current));
        }
        prev = Some(ch);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out.into_iter()
        .map(|p| p.trim_end_matches(['.', '/']).to_string())
        .filter(|p| p.len() > 1)
        .collect()
}

/// Why `path`, written in app `m`, refers to something nothing makes, if it does.
fn path_problem(
    m: &AppManifest,
    path: &str,
    notes: &std::collections::BTreeMap<String, Annotations>,
) -> Option<String> {
    let mount = m
        .container
        .volumes
        .iter()
        .filter(|v| {
            path == v.path || path.starts_with(&format!("{}/", v.path.trim_end_matches('/')))
        })
        .max_by_key(|v| v.path.len());
    match mount {
        Some(v) => {
            let dep = v.app.as_ref()?;
            let rel = path[v.path.len()..].trim_start_matches('/');
            if rel.is_empty() {
                return None;
            }
            let wanted = format!("{}/{rel}", v.name);
            let provided = notes
                .get(dep.as_str())
                .map(|n| n.provides.as_slice())
                .unwrap_or_default();
            let covered = provided.iter().any(|p| {
                p == &wanted
                    || p.starts_with(&format!("{wanted}/"))
                    || wanted.starts_with(&format!("{p}/"))
            });
            if covered {
                None
            } else {
                Some(format!(
                    "{path:?} lies in `{dep}`'s volume `{}`, but `{dep}` does not say it makes \
                     `{rel}` there (no `# provides: {wanted}` comment in its manifest)",
                    v.name
                ))
            }
        }
        None if looks_like_credential(path) => Some(format!(
            "{path:?} looks like a credential file, but no volume is mounted there, so nothing \
             makes it: mount the volume of the app that writes it"
        )),
        None => None,
    }
}

fn looks_like_credential(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name == ".cookie"
        || [".macaroon", ".cookie", ".cert", ".crt", ".pem", ".key"]
            .iter()
            .any(|ext| name.ends_with(ext))
}

/// The apps named by `${onion:APP}` in `text`.
fn onion_targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("${onion:") {
        let after = &rest[at + "${onion:".len()..];
        if let Some(end) = after.find('}') {
            out.push(after[..end].to_string());
        }
        rest = after;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_are_read_from_comment_lines() {
        let text = "# Facts: x\n# digest: none, because no source pins 1.2\n\
                    # listens: 28183, 28283 — jmwalletd's defaults\n\
                    # image user: appuser (Dockerfile USER)\n\
                    # provides: data/tls.cert, data/data/chain/bitcoin/mainnet/ — for RTL\n\
                    id: x\n";
        let a = annotations(text);
        assert_eq!(
            a.digest.as_deref(),
            Some("none, because no source pins 1.2")
        );
        assert_eq!(a.listens, BTreeSet::from([28183, 28283]));
        assert_eq!(a.image_user.as_deref(), Some("appuser (Dockerfile USER)"));
        assert_eq!(
            a.provides,
            vec!["data/tls.cert", "data/data/chain/bitcoin/mainnet"]
        );
    }

    #[test]
    fn image_rule_wants_a_tag_and_a_sourced_digest_or_a_reason() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let pinned = format!("x/y:1.0@{digest}");
        assert_eq!(
            image_problem(&pinned, Some("Umbrel's compose, commit abc")),
            None
        );
        assert!(image_problem(&pinned, None).is_some());
        assert!(image_problem(&pinned, Some("none, because")).is_some());
        assert_eq!(
            image_problem("x/y:1.0", Some("none, because no store pins 1.0")),
            None
        );
        assert!(image_problem("x/y:1.0", Some("none")).is_some());
        assert!(image_problem("x/y:1.0", None).is_some());
        assert!(image_problem("x/y", Some("none, because")).is_some());
        assert!(image_problem("x/y:latest", Some("none, because x")).is_some());
        assert!(image_problem("x/y:1@sha256:abc", Some("src")).is_some());
        assert_eq!(
            image_problem("localhost:5000/y:2", Some("none, because local")),
            None
        );
    }

    #[test]
    fn paths_are_found_but_urls_and_words_are_not() {
        assert_eq!(
            path_tokens("https://archipelago-lnd:8080/ and /lnd/tls.cert;x=/a/b."),
            vec!["/lnd/tls.cert", "/a/b"]
        );
        assert_eq!(path_tokens("tcp://x:1 a/b"), Vec::<String>::new());
        assert_eq!(
            path_tokens("test -f /data/thubConfig.yaml || printf > /data/x"),
            vec!["/data/thubConfig.yaml", "/data/x"]
        );
    }

    #[test]
    fn listen_addresses_are_read() {
        assert_eq!(listen_addresses("--rpclisten=0.0.0.0:10009"), vec![10009]);
        assert_eq!(
            listen_addresses("archipelago-bitcoind:8332"),
            Vec::<u16>::new()
        );
        assert_eq!(listen_addresses("[::]:80 localhost:9"), vec![80, 9]);
    }

    #[test]
    fn credentials_are_recognised() {
        assert!(looks_like_credential("/nbx/Main/.cookie"));
        assert!(looks_like_credential("/lnd/tls.cert"));
        assert!(looks_like_credential("/x/admin.macaroon"));
        assert!(!looks_like_credential("/data/plugins"));
    }
}
