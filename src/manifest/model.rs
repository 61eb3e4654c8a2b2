//! The manifest's model: the app, its container, health check, hooks, secrets and UI.
//!
//! Over 600 lines only with its unit tests (the contract's example parsed field by field);
//! the model itself is about 500.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::memory::MemoryLimit;

use super::backup::BackupPolicy;
use super::id::AppId;
use super::mounts::{PortMapping, VolumeMount};
use super::source::BuildSpec;
use super::yaml::{scalar_map, serde_duration};

/// One app, as its `manifest.yml` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppManifest {
    /// Equals the app's folder name.
    pub id: AppId,
    /// Human-readable name for the dashboard.
    pub name: String,
    /// The app's version; also the tag of images built from source.
    pub version: String,
    /// One line for the dashboard.
    #[serde(default)]
    pub description: Option<String>,
    /// Apps that must be running and healthy before this one starts.
    #[serde(default)]
    pub dependencies: Vec<AppId>,
    /// The app's one container.
    pub container: ContainerConfig,
    /// Commands run inside the container at points of its life.
    #[serde(default)]
    pub hooks: Hooks,
    /// Secrets generated once at install, by name.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSpec>,
    /// Where the dashboard links to.
    #[serde(default)]
    pub ui: Option<UiSpec>,
    /// Onion services of this app, served by the tor app.
    #[serde(default)]
    pub onion: Option<OnionSpec>,
    /// What of this app goes into the node's backups, and how (see [`BackupPolicy`]).
    #[serde(default)]
    pub backup: BackupPolicy,
}

/// `onion: {ports: ["ONION:TARGET", ...]}`: each onion port is forwarded to the app's
/// TARGET port on the app network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnionSpec {
    pub ports: Vec<OnionPort>,
}

/// One port of an onion service: `ONION:TARGET` (the port onion clients connect to, and
/// the port the app listens on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OnionPort {
    pub onion: u16,
    pub target: u16,
}

impl FromStr for OnionPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid onion port {s:?}: expected ONION:TARGET, e.g. 80:3000");
        let (onion, target) = s.split_once(':').ok_or_else(bad)?;
        let port = |p: &str| match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(bad()),
        };
        Ok(OnionPort {
            onion: port(onion)?,
            target: port(target)?,
        })
    }
}

impl fmt::Display for OnionPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.onion, self.target)
    }
}

/// The container an app runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerConfig {
    /// Image to pull; exactly one of `image` and `build`.
    #[serde(default)]
    pub image: Option<String>,
    /// Build from a folder inside the app's folder instead of pulling.
    #[serde(default)]
    pub build: Option<BuildSpec>,
    /// Replaces the image's command.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Replaces the image's entrypoint.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// `uid[:gid]` or a user name known to the image.
    #[serde(default)]
    pub user: Option<String>,
    /// Environment; values may hold `${secret:…}` references. Scalars are read as text.
    #[serde(default, deserialize_with = "scalar_map")]
    pub env: BTreeMap<String, String>,
    /// Published ports, `host:container[/tcp|/udp]`.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// Volumes: the app's own `NAME:PATH[:ro]`, a dependency's `APP/NAME:PATH:ro`, or the
    /// long form with a snapshot policy.
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    /// Capabilities added to the default set (names such as `NET_ADMIN`, `CAP_` optional).
    #[serde(default)]
    pub cap_add: Vec<String>,
    /// Capabilities removed from the default set, beside those always dropped
    /// ([`DEFAULT_CAP_DROP`]).
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// Most processes and threads the container may hold (default [`DEFAULT_PIDS_LIMIT`]).
    #[serde(default)]
    pub pids_limit: Option<u32>,
    /// `host`, `none` or a network name; `None` means the config's
    /// `engine.default_network`. Joining another container's namespace is refused.
    #[serde(default)]
    pub network: Option<String>,
    /// Hard memory limit (required).
    pub memory_limit: MemoryLimit,
    /// Grace between SIGTERM and SIGKILL.
    #[serde(default = "default_stop_timeout", with = "serde_duration")]
    pub stop_timeout: Duration,
    /// When the supervisor restarts the container.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// How to tell the app is healthy.
    #[serde(default)]
    pub health: Option<HealthCheck>,
}

/// Capabilities every container loses unless its manifest adds them back: servers rarely
/// need raw sockets or device nodes, and both widen what a compromised app can do.
pub const DEFAULT_CAP_DROP: &[&str] = &["NET_RAW", "MKNOD"];

/// The pids limit of a container whose manifest sets none: far above what a server uses,
/// low enough that a fork bomb cannot starve the node.
pub const DEFAULT_PIDS_LIMIT: u32 = 4096;

/// Linux capability names (without `CAP_`), for `cap_add` and `cap_drop`.
pub(super) const CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// A capability name as the engine wants it (`NET_ADMIN`), or why it is not one.
pub fn capability_name(name: &str) -> Result<String, String> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if bare == "ALL" {
        return Err(format!(
            "{name:?}: ALL is refused; name each capability the app needs"
        ));
    }
    if CAPABILITIES.contains(&bare) {
        Ok(bare.to_string())
    } else {
        Err(format!("{name:?} is not a Linux capability"))
    }
}

pub(super) fn default_stop_timeout() -> Duration {
    Duration::from_secs(10)
}

/// When the supervisor restarts an app's container after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Always,
    #[default]
    OnFailure,
    Never,
}

/// How the supervisor probes an app's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "RawHealthCheck")]
pub struct HealthCheck {
    pub probe: HealthProbe,
    /// Time between probes (default 10s).
    pub interval: Duration,
    /// Time one probe may take (default 3s).
    pub timeout: Duration,
    /// Failed probes in a row before the app is unhealthy (default 3).
    pub retries: u32,
    /// Grace after start during which failures do not count (default 0s).
    pub start_period: Duration,
}

/// One way of probing health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthProbe {
    /// An HTTP GET on the container's port answering 2xx or 3xx.
    Http { port: u16, path: String },
    /// A TCP connect to the container's port.
    Tcp { port: u16 },
    /// A command inside the container exiting 0.
    Exec(Vec<String>),
}

/// The YAML shape of [`HealthCheck`]: one of `http`, `tcp`, `exec` beside the timings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    http: Option<HttpProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tcp: Option<TcpProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exec: Option<Vec<String>>,
    #[serde(default = "default_interval", with = "serde_duration")]
    interval: Duration,
    #[serde(default = "default_timeout", with = "serde_duration")]
    timeout: Duration,
    #[serde(default = "default_retries")]
    retries: u32,
    #[serde(default, with = "serde_duration")]
    start_period: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HttpProbe {
    port: u16,
    #[serde(default = "default_ui_path")]
    path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TcpProbe {
    port: u16,
}

pub(super) fn default_interval() -> Duration {
    Duration::from_secs(10)
}

pub(super) fn default_timeout() -> Duration {
    Duration::from_secs(3)
}

pub(super) fn default_retries() -> u32 {
    3
}

impl<'de> Deserialize<'de> for HealthCheck {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Checked inside the map visitor (not with `try_from`) so that YAML errors point at
        // the health mapping's line rather than its parent's.
        struct HealthVisitor;

        impl<'de> Visitor<'de> for HealthVisitor {
            type Value = HealthCheck;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a health check with one of http, tcp and exec")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<HealthCheck, A::Error> {
                let raw = RawHealthCheck::deserialize(de::value::MapAccessDeserializer::new(map))?;
                HealthCheck::try_from(raw).map_err(de::Error::custom)
            }
        }

        deserializer.deserialize_map(HealthVisitor)
    }
}

impl TryFrom<RawHealthCheck> for HealthCheck {
    type Error = String;

    fn try_from(raw: RawHealthCheck) -> Result<Self, Self::Error> {
        let probe = match (raw.http, raw.tcp, raw.exec) {
            (Some(HttpProbe { port, path }), None, None) => HealthProbe::Http { port, path },
            (None, Some(TcpProbe { port }), None) => HealthProbe::Tcp { port },
            (None, None, Some(exec)) => HealthProbe::Exec(exec),
            (None, None, None) => {
                return Err("needs one probe: http, tcp or exec".to_string());
            }
            _ => return Err("has more than one probe: keep one of http, tcp and exec".to_string()),
        };
        Ok(HealthCheck {
            probe,
            interval: raw.interval,
            timeout: raw.timeout,
            retries: raw.retries,
            start_period: raw.start_period,
        })
    }
}

impl From<HealthCheck> for RawHealthCheck {
    fn from(check: HealthCheck) -> Self {
        let (mut http, mut tcp, mut exec) = (None, None, None);
        match check.probe {
            HealthProbe::Http { port, path } => http = Some(HttpProbe { port, path }),
            HealthProbe::Tcp { port } => tcp = Some(TcpProbe { port }),
            HealthProbe::Exec(command) => exec = Some(command),
        }
        RawHealthCheck {
            http,
            tcp,
            exec,
            interval: check.interval,
            timeout: check.timeout,
            retries: check.retries,
            start_period: check.start_period,
        }
    }
}

/// Commands run inside the container at points of its life.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Run once, in order, after the container is first created and started.
    #[serde(default)]
    pub post_create: Vec<HookStep>,
}

/// One command of a hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookStep {
    /// The command and its arguments; may hold `${secret:…}` references.
    pub exec: Vec<String>,
    /// Time the command may take (default 1m).
    #[serde(default = "default_hook_timeout", with = "serde_duration")]
    pub timeout: Duration,
}

pub(super) fn default_hook_timeout() -> Duration {
    Duration::from_secs(60)
}

/// A secret generated once at install, stored as `<data_dir>/secrets/<id>/<NAME>`.
///
/// YAML: `{kind: password, length: 32}`, `{kind: hex, bytes: 32}`,
/// `{kind: rpcauth, user: NAME, password: SECRET}` or `{kind: imported}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SecretSpec {
    /// Random alphanumeric text of `length` characters (default 32).
    Password { length: usize },
    /// `bytes` random bytes written as hex (default 32).
    Hex { bytes: usize },
    /// bitcoind's `rpcauth=` value for `user`, from the app's secret named `password`.
    Rpcauth { user: String, password: String },
    /// Never generated: the value comes from the node the app was imported from
    /// (`archipelago import` writes it with [`crate::secrets::write_imported`]).
    Imported,
}

pub(super) fn default_secret_size() -> usize {
    32
}

/// Kinds of [`SecretSpec`], for the `kind` field.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum SecretKind {
    Password,
    Hex,
    Rpcauth,
    Imported,
}

/// Every field any kind of secret has; the kind decides which are allowed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecretSpec {
    kind: SecretKind,
    length: Option<usize>,
    bytes: Option<usize>,
    user: Option<String>,
    password: Option<String>,
}

impl<'de> Deserialize<'de> for SecretSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A hand-written visitor instead of serde's internally tagged enum, which buffers
        // the mapping and so loses the line of errors inside it.
        struct SecretVisitor;

        impl<'de> Visitor<'de> for SecretVisitor {
            type Value = SecretSpec;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a secret such as {kind: password, length: 32}")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SecretSpec, A::Error> {
                let raw = RawSecretSpec::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let given = [
                    ("length", raw.length.is_some()),
                    ("bytes", raw.bytes.is_some()),
                    ("user", raw.user.is_some()),
                    ("password", raw.password.is_some()),
                ];
                let allowed: &[&str] = match raw.kind {
                    SecretKind::Password => &["length"],
                    SecretKind::Hex => &["bytes"],
                    SecretKind::Rpcauth => &["user", "password"],
                    SecretKind::Imported => &[],
                };
                if let Some((name, _)) = given.iter().find(|(n, set)| *set && !allowed.contains(n))
                {
                    return Err(de::Error::unknown_field(name, allowed));
                }
                Ok(match raw.kind {
                    SecretKind::Password => SecretSpec::Password {
                        length: raw.length.unwrap_or_else(default_secret_size),
                    },
                    SecretKind::Hex => SecretSpec::Hex {
                        bytes: raw.bytes.unwrap_or_else(default_secret_size),
                    },
                    SecretKind::Rpcauth => SecretSpec::Rpcauth {
                        user: raw.user.ok_or_else(|| de::Error::missing_field("user"))?,
                        password: raw
                            .password
                            .ok_or_else(|| de::Error::missing_field("password"))?,
                    },
                    SecretKind::Imported => SecretSpec::Imported,
                })
            }
        }

        deserializer.deserialize_map(SecretVisitor)
    }
}

/// Where the dashboard links to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiSpec {
    pub port: u16,
    #[serde(default = "default_ui_path")]
    pub path: String,
}

pub(super) fn default_ui_path() -> String {
    "/".to_string()
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use super::super::fixtures::*;
    use crate::manifest::*;

    #[test]
    fn parses_the_full_example() {
        let m = parse(FULL).expect("the contract example parses");
        assert_eq!(m.id.as_str(), "lnd");
        assert_eq!(m.dependencies, vec!["bitcoind".parse::<AppId>().unwrap()]);
        let c = &m.container;
        assert_eq!(c.image.as_deref(), Some("lightninglabs/lnd:v0.18.3-beta"));
        assert_eq!(c.env["PORT"], "8080");
        assert_eq!(
            c.ports,
            vec![
                PortMapping {
                    host: 9735,
                    container: 9735,
                    protocol: Protocol::Tcp
                },
                PortMapping {
                    host: 10009,
                    container: 10009,
                    protocol: Protocol::Tcp
                },
                PortMapping {
                    host: 53,
                    container: 53,
                    protocol: Protocol::Udp
                },
            ]
        );
        assert_eq!(
            c.volumes[1],
            VolumeMount {
                app: None,
                name: "conf".into(),
                path: "/etc/lnd".into(),
                read_only: true,
                snapshot: SnapshotPolicy::Copy,
            }
        );
        assert!(!c.volumes[2].read_only);
        assert_eq!(c.memory_limit.bytes(), 1 << 30);
        assert_eq!(c.stop_timeout, Duration::from_secs(300));
        assert_eq!(c.restart, RestartPolicy::Always);
        let health = c.health.as_ref().expect("health is set");
        assert_eq!(
            health.probe,
            HealthProbe::Http {
                port: 8080,
                path: "/".into()
            }
        );
        assert_eq!(health.start_period, Duration::from_secs(60));
        assert_eq!(m.hooks.post_create[0].timeout, Duration::from_secs(120));
        assert_eq!(m.secrets["macaroon_key"], SecretSpec::Hex { bytes: 32 });
        assert_eq!(
            m.secrets["rpcauth"],
            SecretSpec::Rpcauth {
                user: "archipelago".into(),
                password: "rpc_password".into()
            }
        );
        assert_eq!(
            m.ui,
            Some(UiSpec {
                port: 8080,
                path: "/".into()
            })
        );
        assert_eq!(
            m.validate(Path::new("apps/lnd/manifest.yml"), Path::new("apps/lnd")),
            vec![]
        );
    }

    #[test]
    fn fills_defaults() {
        let m = parse(MINIMAL).expect("minimal manifest parses");
        let c = &m.container;
        assert_eq!(c.stop_timeout, Duration::from_secs(10));
        assert_eq!(c.restart, RestartPolicy::OnFailure);
        assert_eq!(
            (c.network.clone(), c.health.clone(), m.ui.clone()),
            (None, None, None)
        );
        assert!(
            m.dependencies.is_empty() && m.secrets.is_empty() && m.hooks.post_create.is_empty()
        );

        let extra = "  health: {tcp: {port: 9735}}\nhooks: {post_create: [{exec: [x]}]}\n\
                     secrets: {a: {kind: password}}\nui: {port: 80}\n";
        let m = parse(&format!("{MINIMAL}{extra}")).expect("defaults parse");
        let health = m.container.health.expect("health is set");
        assert_eq!(health.probe, HealthProbe::Tcp { port: 9735 });
        let timings = (
            health.interval,
            health.timeout,
            health.retries,
            health.start_period,
        );
        assert_eq!(
            timings,
            (
                Duration::from_secs(10),
                Duration::from_secs(3),
                3,
                Duration::ZERO
            )
        );
        assert_eq!(m.hooks.post_create[0].timeout, Duration::from_secs(60));
        assert_eq!(m.secrets["a"], SecretSpec::Password { length: 32 });
        assert_eq!(m.ui.expect("ui is set").path, "/");

        let build =
            "id: lnd\nname: LND\nversion: '1'\ncontainer:\n  build: {}\n  memory_limit: 64Mi\n";
        let spec = parse(build)
            .expect("build parses")
            .container
            .build
            .expect("build is set");
        assert_eq!(spec.context, PathBuf::from("."));
        assert_eq!(spec.dockerfile, "Dockerfile");
    }

    #[test]
    fn imported_secrets_have_no_fields() {
        let m = parse(&format!("{MINIMAL}secrets: {{old: {{kind: imported}}}}\n"))
            .expect("an imported secret parses");
        assert_eq!(m.secrets["old"], SecretSpec::Imported);
        let text = serde_yaml::to_string(&m).expect("manifests serialize");
        assert!(text.contains("kind: imported"), "{text}");
        assert_eq!(parse(&text), Ok(m));
        let err = parse(&format!(
            "{MINIMAL}secrets: {{old: {{kind: imported, length: 9}}}}\n"
        ))
        .expect_err("an imported secret takes no length");
        let text = lines(&err).join("\n");
        assert!(text.contains("unknown field `length`"), "{text}");
    }

    #[test]
    fn serializes_and_parses_back() {
        let m = parse(FULL).expect("the contract example parses");
        let text = serde_yaml::to_string(&m).expect("manifests serialize");
        assert_eq!(parse(&text), Ok(m));
    }
}
