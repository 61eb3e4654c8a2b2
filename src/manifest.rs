//! The app manifest (`<apps_dir>/<id>/manifest.yml`): its model, parsing and single-app rules.
//!
//! One app is one container. This module turns one manifest file into an [`AppManifest`]
//! and checks the rules that need nothing but that app and its folder; it reports every
//! problem as a [`Problem`] naming file, field and reason. Rules that span apps
//! (dependencies exist, cycles, host ports, references to another app's secrets) live in
//! [`crate::catalog`]. Nothing here touches the engine or the data folder.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::memory::MemoryLimit;

/// One thing wrong with a manifest, a catalog or a config file.
///
/// Displays as `PATH: FIELD: reason`, the line `archipelago validate` prints.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// The file (or folder) at fault.
    pub path: PathBuf,
    /// Dotted path of the field at fault, e.g. `container.memory_limit` or `ports[1]`;
    /// `file` when the file itself cannot be read, `yaml` when it is not valid YAML.
    pub field: String,
    /// What is wrong, lowercase, prefixed with `line N: ` when the line is known.
    pub reason: String,
}

impl Problem {
    /// Builds a problem from anything printable.
    pub fn new(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        reason: impl fmt::Display,
    ) -> Self {
        Problem {
            path: path.into(),
            field: field.into(),
            reason: reason.to_string(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.path.display(),
            self.field,
            self.reason
        )
    }
}

/// Why an [`AppId`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid app id {id:?}: use 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit")]
pub struct InvalidAppId {
    /// The refused text.
    pub id: String,
}

/// An app's id: `^[a-z0-9][a-z0-9-]{0,62}$`. It names the app's folder, container, volumes
/// and secrets, so it is validated once here and can never hold `/` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppId(String);

impl AppId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AppId {
    type Error = InvalidAppId;

    fn try_from(id: String) -> Result<Self, Self::Error> {
        let bytes = id.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= 63
            && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
            && bytes
                .iter()
                .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(AppId(id))
        } else {
            Err(InvalidAppId { id })
        }
    }
}

impl FromStr for AppId {
    type Err = InvalidAppId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AppId::try_from(s.to_string())
    }
}

impl From<AppId> for String {
    fn from(id: AppId) -> String {
        id.0
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for AppId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

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
const CAPABILITIES: &[&str] = &[
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

fn default_stop_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Build the image from source in the app's folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSpec {
    /// Build context, relative to the app's folder; may not escape it.
    #[serde(default = "default_context")]
    pub context: PathBuf,
    /// Dockerfile, relative to the context.
    #[serde(default = "default_dockerfile")]
    pub dockerfile: String,
    /// Build arguments. Scalars are read as text.
    #[serde(default, deserialize_with = "scalar_map")]
    pub args: BTreeMap<String, String>,
}

fn default_context() -> PathBuf {
    PathBuf::from(".")
}

fn default_dockerfile() -> String {
    "Dockerfile".to_string()
}

/// Where an app's image comes from, with paths resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolvedSource {
    /// Pull this image reference.
    Pull { image: String },
    /// Build from an absolute context folder and tag the result.
    Build {
        context: PathBuf,
        dockerfile: String,
        args: BTreeMap<String, String>,
        tag: String,
    },
}

/// Why [`ContainerConfig::resolve`] could not say where the image comes from.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Neither `image` nor `build` is set.
    #[error("app {app}: container needs one of image and build")]
    NoSource { app: AppId },
    /// Both `image` and `build` are set.
    #[error("app {app}: container has both image and build; keep one")]
    BothSources { app: AppId },
    /// The build context leaves the app's folder.
    #[error("app {app}: build context {context} escapes the app folder {app_dir}")]
    ContextEscapes {
        app: AppId,
        context: PathBuf,
        app_dir: PathBuf,
    },
    /// A path could not be made absolute or canonical.
    #[error("app {app}: cannot resolve {path}: {source}")]
    Io {
        app: AppId,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ContainerConfig {
    /// Says where the image comes from: the `image` to pull, or the absolute build context
    /// (checked not to escape `app_dir`, following symlinks when it exists) and the tag
    /// `archipelago/<id>:<version>` to build.
    pub fn resolve(
        &self,
        app_dir: &Path,
        id: &AppId,
        version: &str,
    ) -> Result<ResolvedSource, ManifestError> {
        match (&self.image, &self.build) {
            (Some(_), Some(_)) => Err(ManifestError::BothSources { app: id.clone() }),
            (None, None) => Err(ManifestError::NoSource { app: id.clone() }),
            (Some(image), None) => Ok(ResolvedSource::Pull {
                image: image.clone(),
            }),
            (None, Some(build)) => {
                let escapes = || ManifestError::ContextEscapes {
                    app: id.clone(),
                    context: build.context.clone(),
                    app_dir: app_dir.to_path_buf(),
                };
                if escapes_folder(&build.context) {
                    return Err(escapes());
                }
                let io = |path: &Path| {
                    let path = path.to_path_buf();
                    let app = id.clone();
                    move |source| ManifestError::Io { app, path, source }
                };
                let app_dir_abs = std::path::absolute(app_dir).map_err(io(app_dir))?;
                let context = app_dir_abs.join(&build.context);
                let context = if context.exists() {
                    let real_dir = app_dir_abs.canonicalize().map_err(io(app_dir))?;
                    let real = context.canonicalize().map_err(io(&context))?;
                    if !real.starts_with(&real_dir) {
                        return Err(escapes());
                    }
                    real
                } else {
                    normalize(&context)
                };
                Ok(ResolvedSource::Build {
                    context,
                    dockerfile: build.dockerfile.clone(),
                    args: build.args.clone(),
                    tag: build_tag(id, version),
                })
            }
        }
    }

    /// The image reference the container runs: `image`, or `archipelago/<id>:<version>`
    /// for an app built from source.
    pub fn image_ref(&self, id: &AppId, version: &str) -> String {
        match &self.image {
            Some(image) => image.clone(),
            None => build_tag(id, version),
        }
    }
}

fn build_tag(id: &AppId, version: &str) -> String {
    format!("archipelago/{id}:{version}")
}

/// True when a relative path is absolute or climbs out of its base with `..`.
fn escapes_folder(path: &Path) -> bool {
    let mut depth: i64 = 0;
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => return true,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            Component::Normal(_) => depth += 1,
        }
    }
    false
}

/// Removes `.` and resolvable `..` components without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A published port, written `host:container[/tcp|/udp]` (default tcp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortMapping {
    pub host: u16,
    pub container: u16,
    pub protocol: Protocol,
}

impl FromStr for PortMapping {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shape = || {
            format!(
                "invalid port mapping {s:?}: expected HOST:CONTAINER[/tcp|/udp], e.g. 9735:9735"
            )
        };
        let (ports, protocol) = match s.split_once('/') {
            None => (s, Protocol::Tcp),
            Some((ports, "tcp")) => (ports, Protocol::Tcp),
            Some((ports, "udp")) => (ports, Protocol::Udp),
            Some((_, other)) => {
                return Err(format!(
                    "invalid port mapping {s:?}: unknown protocol {other:?}, expected tcp or udp"
                ))
            }
        };
        let (host, container) = ports.split_once(':').ok_or_else(shape)?;
        let port = |p: &str| -> Result<u16, String> {
            match p.parse::<u16>() {
                Ok(0) => Err(format!("invalid port mapping {s:?}: port 0 is not allowed")),
                Ok(n) if p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
                _ => Err(format!(
                    "invalid port mapping {s:?}: {p:?} is not a port number (1-65535)"
                )),
            }
        };
        Ok(PortMapping {
            host: port(host)?,
            container: port(container)?,
            protocol,
        })
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.host, self.container, self.protocol)
    }
}

/// What an upgrade does with a volume before it swaps the container.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotPolicy {
    /// Copied before the swap and put back if the new version fails (reflink where the
    /// filesystem can).
    #[default]
    Copy,
    /// Never copied nor put back: a rollback runs the old image on the data as it is. For
    /// data that is huge and re-derivable (a blockchain), or dangerous to restore (lnd's
    /// channel database: an old channel state can lose funds to a penalty transaction).
    None,
}

/// A volume: `NAME:PATH[:ro|:rw]`, a folder under `<data_dir>/apps/<id>/`, or
/// `APP/NAME:PATH:ro`, volume NAME of the dependency APP mounted read-only.
/// [`AppManifest::validate`] refuses names with `/` or `..` and writable dependency volumes.
///
/// The long form `{name, path, read_only, snapshot}` also sets the [`SnapshotPolicy`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VolumeMount {
    /// The dependency that owns the volume; `None` for the app's own.
    pub app: Option<AppId>,
    pub name: String,
    /// Absolute path inside the container.
    pub path: String,
    pub read_only: bool,
    pub snapshot: SnapshotPolicy,
}

impl VolumeMount {
    /// `NAME` or `APP/NAME`, as written in the manifest.
    pub fn source(&self) -> String {
        match &self.app {
            Some(app) => format!("{app}/{}", self.name),
            None => self.name.clone(),
        }
    }

    /// True for the app's own volumes (not a dependency's).
    pub fn is_own(&self) -> bool {
        self.app.is_none()
    }

    /// Splits `APP/NAME` into the dependency and the name; anything else stays a plain
    /// name, for [`check_volume_name`] to judge (so `../data` is still reported as such).
    fn split_source(source: &str) -> (Option<AppId>, String) {
        if let Some((app, name)) = source.split_once('/') {
            if let Ok(app) = app.parse::<AppId>() {
                if !name.contains('/') {
                    return (Some(app), name.to_string());
                }
            }
        }
        (None, source.to_string())
    }
}

impl FromStr for VolumeMount {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        let (source, path, read_only) = match parts.as_slice() {
            [name, path] => (*name, *path, false),
            [name, path, "ro"] => (*name, *path, true),
            [name, path, "rw"] => (*name, *path, false),
            [_, _, mode] => {
                return Err(format!(
                    "invalid volume {s:?}: unknown mode {mode:?}, expected ro or rw"
                ))
            }
            _ => {
                return Err(format!(
                    "invalid volume {s:?}: expected NAME:PATH[:ro], e.g. data:/data"
                ))
            }
        };
        let (app, name) = VolumeMount::split_source(source);
        Ok(VolumeMount {
            app,
            name,
            path: path.to_string(),
            read_only,
            snapshot: SnapshotPolicy::Copy,
        })
    }
}

impl fmt::Display for VolumeMount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source(), self.path)?;
        if self.read_only {
            f.write_str(":ro")?;
        }
        Ok(())
    }
}

/// The long YAML form of [`VolumeMount`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVolume {
    name: String,
    path: String,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    snapshot: SnapshotPolicy,
}

impl Serialize for VolumeMount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.snapshot == SnapshotPolicy::Copy {
            serializer.collect_str(self)
        } else {
            RawVolume {
                name: self.source(),
                path: self.path.clone(),
                read_only: self.read_only,
                snapshot: self.snapshot,
            }
            .serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for VolumeMount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct VolumeVisitor;

        impl<'de> Visitor<'de> for VolumeVisitor {
            type Value = VolumeMount;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a volume such as \"data:/data\" or {name: data, path: /data, snapshot: none}",
                )
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<VolumeMount, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<VolumeMount, A::Error> {
                let raw = RawVolume::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let (app, name) = VolumeMount::split_source(&raw.name);
                Ok(VolumeMount {
                    app,
                    name,
                    path: raw.path,
                    read_only: raw.read_only,
                    snapshot: raw.snapshot,
                })
            }
        }

        deserializer.deserialize_any(VolumeVisitor)
    }
}

/// Serializes through `Display` and deserializes through `FromStr`, for the types above
/// whose YAML form is one compact string.
macro_rules! string_form {
    ($ty:ty, $expecting:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct StrVisitor;

                impl Visitor<'_> for StrVisitor {
                    type Value = $ty;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }

                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                }

                deserializer.deserialize_str(StrVisitor)
            }
        }
    };
}

string_form!(OnionPort, "an onion port such as \"80:3000\"");
string_form!(
    PortMapping,
    "a port mapping such as \"9735:9735\" or \"53:53/udp\""
);

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
struct RawHealthCheck {
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
struct HttpProbe {
    port: u16,
    #[serde(default = "default_ui_path")]
    path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TcpProbe {
    port: u16,
}

fn default_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_timeout() -> Duration {
    Duration::from_secs(3)
}

fn default_retries() -> u32 {
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

fn default_hook_timeout() -> Duration {
    Duration::from_secs(60)
}

/// A secret generated once at install, stored as `<data_dir>/secrets/<id>/<NAME>`.
///
/// YAML: `{kind: password, length: 32}`, `{kind: hex, bytes: 32}` or
/// `{kind: rpcauth, user: NAME, password: SECRET}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SecretSpec {
    /// Random alphanumeric text of `length` characters (default 32).
    Password { length: usize },
    /// `bytes` random bytes written as hex (default 32).
    Hex { bytes: usize },
    /// bitcoind's `rpcauth=` value for `user`, from the app's secret named `password`.
    Rpcauth { user: String, password: String },
}

fn default_secret_size() -> usize {
    32
}

/// Kinds of [`SecretSpec`], for the `kind` field.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum SecretKind {
    Password,
    Hex,
    Rpcauth,
}

/// Every field any kind of secret has; the kind decides which are allowed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecretSpec {
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

fn default_ui_path() -> String {
    "/".to_string()
}

/// True for a secret name usable as a file name: `^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$`.
pub fn is_valid_secret_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A `${secret:NAME}` (own secret, `app: None`) or `${secret:APP/NAME}` reference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretRef {
    pub app: Option<AppId>,
    pub name: String,
}

impl SecretRef {
    /// The app whose secret this is, `owner` for an own reference.
    pub fn app_or<'a>(&'a self, owner: &'a AppId) -> &'a AppId {
        self.app.as_ref().unwrap_or(owner)
    }
}

/// The opening of a secret reference.
pub const SECRET_REF_OPEN: &str = "${secret:";

/// Finds every `${secret:NAME}` and `${secret:APP/NAME}` in `value`, in order. Other `${…}`
/// text is left alone. An unterminated or malformed reference is an error.
pub fn secret_refs(value: &str) -> Result<Vec<SecretRef>, String> {
    let mut refs = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find(SECRET_REF_OPEN) {
        let after = &rest[start + SECRET_REF_OPEN.len()..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated secret reference in {value:?}: missing '}}'"))?;
        let inner = &after[..end];
        let (app, name) = match inner.split_once('/') {
            Some((app, name)) => {
                let app = app.parse::<AppId>().map_err(|_| {
                    format!("secret reference ${{secret:{inner}}} names an invalid app id {app:?}")
                })?;
                (Some(app), name)
            }
            None => (None, inner),
        };
        if !is_valid_secret_name(name) {
            return Err(format!(
                "secret reference ${{secret:{inner}}} has an invalid secret name {name:?}"
            ));
        }
        refs.push(SecretRef {
            app,
            name: name.to_string(),
        });
        rest = &after[end + 1..];
    }
    Ok(refs)
}

impl AppManifest {
    /// Reads, parses and validates the manifest at `path` (its folder is the app folder).
    /// Every problem found is returned; parse errors stop at the first.
    pub fn load(path: &Path) -> Result<AppManifest, Vec<Problem>> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| vec![Problem::new(path, "file", format!("cannot read: {err}"))])?;
        let manifest = AppManifest::from_yaml(path, &text)?;
        let app_dir = path.parent().unwrap_or(Path::new("."));
        let problems = manifest.validate(path, app_dir);
        if problems.is_empty() {
            Ok(manifest)
        } else {
            Err(problems)
        }
    }

    /// Parses manifest text; `path` only names the file in problems. No validation beyond
    /// the types (see [`AppManifest::validate`]).
    pub fn from_yaml(path: &Path, text: &str) -> Result<AppManifest, Vec<Problem>> {
        parse_yaml(path, text).map_err(|problem| vec![problem])
    }

    /// The places where `${secret:…}` references are substituted, as (field, value):
    /// env values, command, entrypoint, the health exec probe and post_create commands.
    pub fn secret_ref_sites(&self) -> Vec<(String, &str)> {
        let c = &self.container;
        let mut sites = self.onion_ref_sites();
        if let Some(HealthCheck {
            probe: HealthProbe::Exec(command),
            ..
        }) = &c.health
        {
            for (i, arg) in command.iter().enumerate() {
                sites.push((format!("container.health.exec[{i}]"), arg));
            }
        }
        for (step, hook) in self.hooks.post_create.iter().enumerate() {
            for (i, arg) in hook.exec.iter().enumerate() {
                sites.push((format!("hooks.post_create[{step}].exec[{i}]"), arg));
            }
        }
        sites
    }

    /// The places where `${onion}` references are substituted: env values, command and
    /// entrypoint.
    pub fn onion_ref_sites(&self) -> Vec<(String, &str)> {
        let c = &self.container;
        let mut sites: Vec<(String, &str)> = Vec::new();
        for (key, value) in &c.env {
            sites.push((format!("container.env.{key}"), value));
        }
        for (field, list) in [
            ("container.command", &c.command),
            ("container.entrypoint", &c.entrypoint),
        ] {
            for (i, arg) in list.iter().flatten().enumerate() {
                sites.push((format!("{field}[{i}]"), arg));
            }
        }
        sites
    }

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
        problems
    }
}

/// Docker's tag grammar: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn is_valid_tag(tag: &str) -> bool {
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
fn check_network(network: &str) -> Result<(), String> {
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
fn check_probe_port(port: u16, ports: &[PortMapping]) -> Result<(), String> {
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
fn check_volume_name(name: &str) -> Result<(), String> {
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

/// Parses YAML into `T`, turning the first error into a [`Problem`] with the field path and
/// the line.
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, Problem> {
    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let (field, reason) = describe_yaml_error(&err);
        Problem::new(path, field, reason)
    })
}

/// Splits a serde_yaml error into (field path, `line N: reason`).
pub(crate) fn describe_yaml_error(
    err: &serde_path_to_error::Error<serde_yaml::Error>,
) -> (String, String) {
    let inner = err.inner();
    let mut field = err.path().to_string();
    if field == "." {
        field.clear();
    }
    let mut message = strip_marks(&inner.to_string());
    // serde_yaml prefixes its own idea of the path; the field column already says it.
    if let Some((head, tail)) = message.split_once(": ") {
        let path_like = !head.is_empty()
            && head
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-[]?".contains(&b));
        if path_like
            && (head == field || field.starts_with(head) || head.starts_with(&field) || head == ".")
        {
            message = tail.to_string();
        }
    }
    // For unknown and missing fields, name the field itself.
    for prefix in ["unknown field `", "missing field `"] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some((name, _)) = rest.split_once('`') {
                let named = field == name || field.ends_with(&format!(".{name}"));
                if !named {
                    field = if field.is_empty() {
                        name.to_string()
                    } else {
                        format!("{field}.{name}")
                    };
                }
                if prefix.starts_with("missing") {
                    message = "is required".to_string();
                } else if name == "privileged" {
                    message = "unknown field `privileged`: privileged containers are not supported"
                        .to_string();
                }
            }
        }
    }
    if field.is_empty() {
        field = "yaml".to_string();
    }
    let reason = match inner.location() {
        Some(location) => format!("line {}: {message}", location.line()),
        None => message,
    };
    (field, reason)
}

/// Removes serde_yaml's ` at line N column M` marks; the reason carries the line up front.
fn strip_marks(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(" at line ") {
        out.push_str(&rest[..start]);
        let after = &rest[start + " at line ".len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let tail = &after[digits..];
        match tail.strip_prefix(" column ") {
            Some(col) if digits > 0 => {
                let col_digits = col.bytes().take_while(u8::is_ascii_digit).count();
                rest = &col[col_digits..];
            }
            _ => {
                out.push_str(" at line ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Durations written with humantime (`30s`, `5m`, `1h 30m`).
pub(crate) mod serde_duration {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Deserializer, Visitor};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 30s or 5m")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                humantime::parse_duration(v)
                    .map_err(|err| E::custom(format_args!("invalid duration {v:?}: {err}")))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(format_args!(
                    "duration {v} has no unit: write e.g. {v}s"
                )))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(format_args!("invalid duration {v}")))
            }
        }

        deserializer.deserialize_any(DurationVisitor)
    }
}

/// Deserializes a map whose values may be any YAML scalar, read as text (`PORT: 8080`).
fn scalar_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct Scalar(String);

    impl<'de> Deserialize<'de> for Scalar {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct ScalarVisitor;

            impl Visitor<'_> for ScalarVisitor {
                type Value = Scalar;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string, number or boolean")
                }

                fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                    Ok(Scalar(v.to_string()))
                }

                fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                    Ok(Scalar(v.to_string()))
                }

                fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                    Ok(Scalar(v.to_string()))
                }

                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                    Ok(Scalar(v.to_string()))
                }

                fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                    Ok(Scalar(v.to_string()))
                }

                fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                    Err(E::custom("value is empty: write \"\" for an empty string"))
                }
            }

            deserializer.deserialize_any(ScalarVisitor)
        }
    }

    struct MapVisitor;

    impl<'de> Visitor<'de> for MapVisitor {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of names to values")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((key, Scalar(value))) = map.next_entry::<String, Scalar>()? {
                if out.insert(key.clone(), value).is_some() {
                    return Err(de::Error::custom(format_args!("{key:?} appears twice")));
                }
            }
            Ok(out)
        }
    }

    deserializer.deserialize_map(MapVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract's example manifest, with a build-free image source.
    const FULL: &str = r#"id: lnd
name: LND
version: "0.18.3"
description: Lightning Network Daemon
dependencies: [bitcoind]
container:
  image: lightninglabs/lnd:v0.18.3-beta
  command: ["--bitcoin.mainnet"]
  entrypoint: ["lnd"]
  user: "1000:1000"
  env:
    RPCPASS: "${secret:bitcoind/rpc_password}"
    MACAROON: "${secret:macaroon_key}"
    PORT: 8080
  ports: ["9735:9735", "10009:10009/tcp", "53:53/udp"]
  volumes: ["data:/root/.lnd", "conf:/etc/lnd:ro", "logs:/var/log:rw"]
  network: host
  memory_limit: 1GiB
  stop_timeout: 5m
  restart: always
  health:
    http: {port: 8080, path: /}
    interval: 10s
    timeout: 3s
    retries: 3
    start_period: 60s
hooks:
  post_create:
    - exec: ["lncli", "create"]
      timeout: 2m
secrets:
  rpc_password: {kind: password, length: 32}
  macaroon_key: {kind: hex}
  rpcauth: {kind: rpcauth, user: archipelago, password: rpc_password}
ui: {port: 8080, path: /}
"#;

    const MINIMAL: &str =
        "id: lnd\nname: LND\nversion: '1'\ncontainer:\n  image: busybox\n  memory_limit: 64Mi\n";

    fn parse(text: &str) -> Result<AppManifest, Vec<Problem>> {
        AppManifest::from_yaml(Path::new("apps/lnd/manifest.yml"), text)
    }

    fn lines(problems: &[Problem]) -> Vec<String> {
        problems.iter().map(ToString::to_string).collect()
    }

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
    fn serializes_and_parses_back() {
        let m = parse(FULL).expect("the contract example parses");
        let text = serde_yaml::to_string(&m).expect("manifests serialize");
        assert_eq!(parse(&text), Ok(m));
    }

    #[test]
    fn reports_parse_errors_with_field_and_line() {
        let cases: &[(&str, &str, &str)] = &[
            ("1GiB", "512m", "container.memory_limit: line 18: \"512m\" is ambiguous: write 512Mi for powers of 1024 or 512M for powers of 1000"),
            ("1GiB", "5Mi", "container.memory_limit: line 18: \"5Mi\" is 5242880 bytes, below the minimum of 6 MiB (6291456 bytes)"),
            ("  network: host\n", "  network: host\n  privileged: true\n", "container.privileged: line 18: unknown field `privileged`: privileged containers are not supported"),
            ("  network: host\n", "  netwrok: host\n", "container.netwrok: line 17: unknown field `netwrok`, expected one of `image`, `build`, `command`, `entrypoint`, `user`, `env`, `ports`, `volumes`, `cap_add`, `cap_drop`, `pids_limit`, `network`, `memory_limit`, `stop_timeout`, `restart`, `health`"),
            ("ui: {port", "color: red\nui: {port", "color: line 35: unknown field `color`, expected one of `id`, `name`, `version`, `description`, `dependencies`, `container`, `hooks`, `secrets`, `ui`, `onion`"),
            ("  memory_limit: 1GiB\n", "", "container.memory_limit: line 7: is required"),
            ("name: LND\n", "", "name: line 1: is required"),
            ("stop_timeout: 5m", "stop_timeout: 5x", "container.stop_timeout: line 19: invalid duration \"5x\": unknown time unit \"x\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)"),
            ("stop_timeout: 5m", "stop_timeout: 5", "container.stop_timeout: line 19: duration 5 has no unit: write e.g. 5s"),
            ("\"10009:10009/tcp\"", "\"10009:10009/sctp\"", "container.ports[1]: line 15: invalid port mapping \"10009:10009/sctp\": unknown protocol \"sctp\", expected tcp or udp"),
            ("\"conf:/etc/lnd:ro\"", "\"conf\"", "container.volumes[1]: line 16: invalid volume \"conf\": expected NAME:PATH[:ro], e.g. data:/data"),
            ("{kind: hex}", "{kind: hex, length: 3}", "secrets.macaroon_key.length: line 33: unknown field `length`, expected `bytes`"),
            ("{kind: hex}", "{kind: rsa}", "secrets.macaroon_key.kind: line 33: unknown variant `rsa`, expected one of `password`, `hex`, `rpcauth`"),
            ("user: archipelago, ", "", "secrets.rpcauth.user: line 34: is required"),
            ("    http: {port: 8080, path: /}\n", "", "container.health: line 22: needs one probe: http, tcp or exec"),
            ("    http: {port: 8080, path: /}\n", "    http: {port: 8080, path: /}\n    tcp: {port: 1}\n", "container.health: line 22: has more than one probe: keep one of http, tcp and exec"),
            ("    retries: 3\n", "    retries: -1\n", "container.health.retries: line 25: invalid type: integer `-1`, expected u32"),
            ("id: lnd", "id: LND", "id: line 1: invalid app id \"LND\": use 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit"),
            ("[bitcoind]", "[../etc]", "dependencies[0]: line 5: invalid app id \"../etc\": use 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit"),
            ("restart: always", "restart: sometimes", "container.restart: line 20: unknown variant `sometimes`, expected one of `always`, `on-failure`, `never`"),
            ("    PORT: 8080\n", "    PORT:\n", "container.env.PORT: line 14: value is empty: write \"\" for an empty string"),
            ("id: lnd\n", "id: 'lnd\n", "id: line 36: found unexpected end of stream, while scanning a quoted scalar"),
        ];
        for (from, to, want) in cases {
            assert!(FULL.contains(from), "{from:?} is not in the example");
            let text = FULL.replacen(from, to, 1);
            let got = parse(&text).map(|_| ()).map_err(|p| lines(&p));
            assert_eq!(
                got,
                Err(vec![format!("apps/lnd/manifest.yml: {want}")]),
                "{from:?} -> {to:?}"
            );
        }
    }

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

    type PortCase<'a> = (&'a str, Result<(u16, u16, Protocol), &'a str>);
    type VolumeCase<'a> = (&'a str, Result<(&'a str, &'a str, bool), &'a str>);

    #[test]
    fn parses_ports_and_volumes() {
        let ports: &[PortCase] = &[
            ("80:8080", Ok((80, 8080, Protocol::Tcp))),
            ("53:53/udp", Ok((53, 53, Protocol::Udp))),
            ("1:65535/tcp", Ok((1, 65535, Protocol::Tcp))),
            ("8080", Err("expected HOST:CONTAINER")),
            ("0:80", Err("port 0 is not allowed")),
            ("65536:80", Err("\"65536\" is not a port number")),
            ("+80:80", Err("\"+80\" is not a port number")),
            ("127.0.0.1:80:80", Err("\"127.0.0.1\" is not a port number")),
            ("80:80/sctp", Err("unknown protocol \"sctp\"")),
        ];
        for (input, want) in ports {
            let got = input.parse::<PortMapping>();
            match (got, want) {
                (Ok(p), Ok((h, c, proto))) => {
                    assert_eq!((p.host, p.container, p.protocol), (*h, *c, *proto))
                }
                (Err(e), Err(text)) => assert!(e.contains(text), "{input}: {e}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
        let volumes: &[VolumeCase] = &[
            ("data:/data", Ok(("data", "/data", false))),
            ("conf:/etc/app:ro", Ok(("conf", "/etc/app", true))),
            ("conf:/etc/app:rw", Ok(("conf", "/etc/app", false))),
            ("conf:/etc/app:z", Err("unknown mode \"z\"")),
            ("data", Err("expected NAME:PATH[:ro]")),
            ("a:b:c:d", Err("expected NAME:PATH[:ro]")),
            ("lnd/data:/lnd:ro", Ok(("data", "/lnd", true))),
        ];
        for (input, want) in volumes {
            let got = input.parse::<VolumeMount>();
            match (got, want) {
                (Ok(v), Ok((n, p, ro))) => assert_eq!(
                    (v.name.as_str(), v.path.as_str(), v.read_only),
                    (*n, *p, *ro)
                ),
                (Err(e), Err(text)) => assert!(e.contains(text), "{input}: {e}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn volumes_of_dependencies_and_the_long_form() {
        let parse = |yaml: &str| serde_yaml::from_str::<VolumeMount>(yaml);
        let dep = parse("\"lnd/data:/lnd:ro\"").unwrap();
        assert_eq!(dep.app.as_ref().map(AppId::as_str), Some("lnd"));
        assert_eq!(dep.source(), "lnd/data");
        assert_eq!(dep.to_string(), "lnd/data:/lnd:ro");
        let not_an_app = parse("\"../data:/x\"").unwrap();
        assert_eq!(
            (not_an_app.app, not_an_app.name.as_str()),
            (None, "../data")
        );
        let long = parse("{name: chain, path: /data, snapshot: none}").unwrap();
        assert_eq!(long.snapshot, SnapshotPolicy::None);
        assert!(long.is_own() && !long.read_only);
        let round = serde_yaml::to_string(&long).unwrap();
        assert_eq!(parse(&round).unwrap(), long);
        let err = parse("{name: chain, path: /data, snapshot: maybe}").unwrap_err();
        assert!(err.to_string().contains("unknown variant `maybe`"), "{err}");
        let err = parse("{name: chain, path: /data, mode: ro}").unwrap_err();
        assert!(err.to_string().contains("unknown field `mode`"), "{err}");
    }

    #[test]
    fn finds_secret_references() {
        let r = |app: Option<&str>, name: &str| SecretRef {
            app: app.map(|a| a.parse().expect("valid id")),
            name: name.to_string(),
        };
        let cases: Vec<(&str, Result<Vec<SecretRef>, &str>)> = vec![
            ("plain", Ok(vec![])),
            ("${HOME}/x", Ok(vec![])),
            ("${secret:pw}", Ok(vec![r(None, "pw")])),
            (
                "u:${secret:bitcoind/rpc_password}@${secret:a.b-c_d}",
                Ok(vec![
                    r(Some("bitcoind"), "rpc_password"),
                    r(None, "a.b-c_d"),
                ]),
            ),
            ("${secret:pw", Err("unterminated secret reference")),
            ("${secret:}", Err("invalid secret name \"\"")),
            ("${secret:Bad/x}", Err("invalid app id \"Bad\"")),
            ("${secret:a/b/c}", Err("invalid secret name \"b/c\"")),
            ("${secret:../x}", Err("invalid app id \"..\"")),
        ];
        for (input, want) in cases {
            match (secret_refs(input), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{input}"),
                (Err(e), Err(text)) => assert!(e.contains(text), "{input}: {e}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn validates_app_ids() {
        let long = "a".repeat(63);
        let too_long = "a".repeat(64);
        let cases = [
            ("lnd", true),
            ("0x", true),
            ("a-b-1", true),
            (long.as_str(), true),
            (too_long.as_str(), false),
            ("", false),
            ("-a", false),
            ("A", false),
            ("a_b", false),
            ("a/b", false),
            ("..", false),
            ("a.b", false),
        ];
        for (id, ok) in cases {
            assert_eq!(id.parse::<AppId>().is_ok(), ok, "{id:?}");
        }
        let id: AppId = serde_yaml::from_str("lnd").expect("valid id");
        assert_eq!((id.as_str(), id.to_string()), ("lnd", "lnd".to_string()));
        assert_eq!(serde_yaml::to_string(&id).expect("ids serialize"), "lnd\n");
    }

    #[test]
    fn resolves_image_sources() {
        let dir = tempfile::tempdir().expect("temp dir");
        let app_dir = dir.path().join("lnd");
        std::fs::create_dir_all(app_dir.join("src")).expect("create app dir");
        let id: AppId = "lnd".parse().expect("valid id");
        let base = parse(MINIMAL).expect("minimal parses").container;

        assert_eq!(base.image_ref(&id, "1"), "busybox");
        assert_eq!(
            base.resolve(&app_dir, &id, "1").expect("pull resolves"),
            ResolvedSource::Pull {
                image: "busybox".into()
            }
        );

        let mut built = base.clone();
        built.image = None;
        built.build = Some(BuildSpec {
            context: "src/../src".into(),
            dockerfile: "Dockerfile".into(),
            args: BTreeMap::from([("A".into(), "1".into())]),
        });
        assert_eq!(built.image_ref(&id, "0.1"), "archipelago/lnd:0.1");
        let real = app_dir.join("src").canonicalize().expect("src exists");
        assert_eq!(
            built.resolve(&app_dir, &id, "0.1").expect("build resolves"),
            ResolvedSource::Build {
                context: real,
                dockerfile: "Dockerfile".into(),
                args: BTreeMap::from([("A".into(), "1".into())]),
                tag: "archipelago/lnd:0.1".into(),
            }
        );

        std::os::unix::fs::symlink(dir.path(), app_dir.join("out")).expect("symlink");
        let mut escaping = built.clone();
        escaping.build.as_mut().expect("build is set").context = "out".into();
        let err = escaping
            .resolve(&app_dir, &id, "0.1")
            .expect_err("symlink escapes");
        assert!(matches!(err, ManifestError::ContextEscapes { .. }), "{err}");
        escaping.build.as_mut().expect("build is set").context = "../x".into();
        let err = escaping
            .resolve(&app_dir, &id, "0.1")
            .expect_err(".. escapes");
        assert!(matches!(err, ManifestError::ContextEscapes { .. }), "{err}");

        let mut both = built.clone();
        both.image = Some("busybox".into());
        let err = both
            .resolve(&app_dir, &id, "0.1")
            .expect_err("both is an error");
        assert_eq!(
            err.to_string(),
            "app lnd: container has both image and build; keep one"
        );
    }
}
