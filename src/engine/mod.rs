//! The container engine, behind a trait of our own.
//!
//! Everything the supervisor asks of Docker or Podman goes through [`ContainerRuntime`].
//! The bollard implementation lives in [`docker`], a recording fake for unit tests of the
//! layers above lives in [`fake`]. This module knows nothing of manifests: callers turn a
//! manifest into a [`ContainerSpec`] first.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::stream::BoxStream;

pub mod docker;
/// The recording fake is for unit tests of the layers above the engine; it is not part of
/// the shipped binary.
#[cfg(test)]
pub mod fake;
mod hash;
pub mod reconnect;

pub use docker::DockerRuntime;
#[cfg(test)]
pub use fake::{Call, CallKind, FakeRuntime};

/// Label every container we own carries; its value is the app id.
pub const LABEL_APP: &str = "io.archipelago.app";
/// Label holding the hash of the resolved container spec (see [`ContainerSpec::hash`]).
pub const LABEL_SPEC_HASH: &str = "io.archipelago.spec-hash";
/// Label holding the app version the container was created from.
pub const LABEL_VERSION: &str = "io.archipelago.version";

/// The engine's name for an app's container.
pub fn container_name(app: &str) -> String {
    format!("archipelago-{app}")
}

/// What the engine says about itself, after API version negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineVersion {
    /// Product version, e.g. `20.10.24` (Docker) or `4.3.1` (Podman).
    pub version: String,
    /// The API version we speak with it, e.g. `1.41`.
    pub api_version: String,
}

/// A container's run state, as the engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunState {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl RunState {
    /// True when the container's process is alive.
    pub fn is_running(self) -> bool {
        matches!(
            self,
            RunState::Running | RunState::Paused | RunState::Restarting
        )
    }
}

/// One of our containers as the list call sees it: enough for a reconcile tick, which
/// makes one list call and no per-container call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSummary {
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// Value of [`LABEL_APP`].
    pub app: String,
    /// Value of [`LABEL_SPEC_HASH`], if present.
    pub spec_hash: Option<String>,
    /// Value of [`LABEL_VERSION`], if present.
    pub version: Option<String>,
    pub image: String,
    pub state: RunState,
}

/// Full facts about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerDetails {
    pub id: String,
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub state: RunState,
    pub exit_code: Option<i64>,
    /// RFC 3339 as the engine wrote it; compared for equality to prove "not restarted".
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Memory limit in bytes; 0 means unlimited.
    pub memory_limit: u64,
    pub oom_killed: bool,
    /// Host pid of the container's first process while it runs: the way into its network
    /// namespace for health probes.
    pub pid: Option<u32>,
    /// The user the container runs as (`Config.User`): the manifest's, or else the image's;
    /// empty means root.
    pub user: String,
}

/// A container archipelago did not create, as `import container` and `adopt` read it: the
/// whole recipe it runs with, so that it can be turned into a manifest or compared with one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignContainer {
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// The image reference it was created from (`Config.Image`).
    pub image: String,
    /// The id of the image it runs (`sha256:…`).
    pub image_id: String,
    pub state: RunState,
    /// RFC 3339 as the engine wrote it.
    pub started_at: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `Config.Cmd` and `Config.Entrypoint` as the container has them: the image's
    /// defaults where the run did not override them.
    pub command: Vec<String>,
    pub entrypoint: Vec<String>,
    /// The image's own `Cmd`, `Entrypoint` and `Env`, so that a draft leaves out what the
    /// image says already.
    pub image_command: Vec<String>,
    pub image_entrypoint: Vec<String>,
    pub image_env: BTreeMap<String, String>,
    /// The image's `User`; empty means root.
    pub image_user: String,
    /// The container's whole environment (the image's plus the run's).
    pub env: BTreeMap<String, String>,
    /// `Config.User`; empty means the image's user (root when it names none).
    pub user: String,
    pub mounts: Vec<ForeignMount>,
    /// Published ports (`HostConfig.PortBindings`), host side first.
    pub ports: Vec<PortBinding>,
    /// `HostConfig.NetworkMode`: `bridge`, `host`, `none`, `container:…` or a network name.
    pub network_mode: String,
    /// Bytes; 0 means unlimited.
    pub memory_limit: u64,
    /// `no`, `always`, `unless-stopped` or `on-failure`.
    pub restart_policy: String,
    /// Seconds, when the run set one (`--stop-timeout`).
    pub stop_timeout: Option<u64>,
    pub health: Option<ForeignHealth>,
    pub privileged: bool,
    /// Host devices passed in (`--device`), as `HOST:CONTAINER`.
    pub devices: Vec<String>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// `None` or a value ≤ 0 means unlimited.
    pub pids_limit: Option<i64>,
    pub security_opt: Vec<String>,
}

/// One mount of a [`ForeignContainer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignMount {
    /// `bind`, `volume` or `tmpfs`.
    pub kind: String,
    /// The host folder: a bind's source, or a named volume's mount point on the host.
    pub source: PathBuf,
    /// A named volume's name; empty for a bind.
    pub name: String,
    pub destination: String,
    pub read_only: bool,
}

/// The engine's own health check of a [`ForeignContainer`] (`Config.Healthcheck`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignHealth {
    /// As the engine stores it: `["CMD", …]`, `["CMD-SHELL", "…"]` or `["NONE"]`.
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub start_period: Option<Duration>,
}

/// A container archipelago did not create that was adopted as an app's container: the
/// engine layer shows it as if it carried our labels, with these values, until it is
/// replaced (labels cannot be added to a container without recreating it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopted {
    pub container_id: String,
    pub app: String,
    /// The hash of the spec the manifest gave when the container was adopted: it matched.
    pub spec_hash: String,
    pub version: String,
}

/// The adopted containers an engine connection knows, by container id; shared between a
/// [`reconnect::ReconnectingRuntime`] and each connection it makes.
#[derive(Debug, Default)]
pub struct Adoptions(std::sync::RwLock<BTreeMap<String, Adopted>>);

impl Adoptions {
    pub fn insert(&self, adopted: Adopted) {
        self.write().insert(adopted.container_id.clone(), adopted);
    }

    pub fn remove(&self, container_id: &str) {
        self.write().remove(container_id);
    }

    /// The adoption of the container with this id, if it is one.
    pub fn get(&self, container_id: &str) -> Option<Adopted> {
        self.read().get(container_id).cloned()
    }

    /// Every adopted container id.
    pub fn ids(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// The labels an adopted container would carry had we created it.
    pub fn labels(&self, container_id: &str) -> Option<BTreeMap<String, String>> {
        self.get(container_id).map(|a| {
            BTreeMap::from([
                (LABEL_APP.to_string(), a.app),
                (LABEL_SPEC_HASH.to_string(), a.spec_hash),
                (LABEL_VERSION.to_string(), a.version),
            ])
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Adopted>> {
        // Written whole under the lock; a poisoned lock still holds a consistent map.
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Adopted>> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// A host port published by a container.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortBinding {
    pub host: u16,
    pub container: u16,
    pub udp: bool,
}

/// A host folder mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bind {
    /// Absolute host path, always under `<data_dir>/apps/<id>/` (or a dependency's
    /// `<data_dir>/apps/<dep>/`, read-only).
    pub host: PathBuf,
    pub container: String,
    pub read_only: bool,
}

/// Everything needed to create an app's container: the resolved manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The app id; the container is named [`container_name`] of it.
    pub app: String,
    pub version: String,
    pub image: String,
    pub env: BTreeMap<String, String>,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub user: Option<String>,
    pub ports: Vec<PortBinding>,
    pub binds: Vec<Bind>,
    /// `bridge`, `host`, `none` or a network name. On a named network the container is
    /// also reachable by its app id (a network alias).
    pub network: String,
    /// Bytes. Changing it alone never needs a recreate: see [`ContainerRuntime::update_memory`].
    pub memory_limit: u64,
    pub stop_timeout: Duration,
    /// Capabilities added to and dropped from the engine's default set. Every container
    /// also runs with `no-new-privileges`.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub pids_limit: u32,
    /// Supplementary groups (numeric gids): the owners of the dependency volumes the app
    /// reads. Derived from those folders at create time, so not part of the spec hash (the
    /// binds that cause them are).
    pub group_add: Vec<u32>,
}

/// A request to build an image from a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRequest {
    /// Absolute path of the build context.
    pub context: PathBuf,
    /// Dockerfile path relative to the context.
    pub dockerfile: String,
    pub args: BTreeMap<String, String>,
    /// Tag given to the result, e.g. `archipelago/lnd:0.18.3`.
    pub tag: String,
}

/// Progress of a pull or build, reported as it streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Human-readable line, e.g. `Downloading 3f4e…`.
    pub message: String,
    /// Bytes done over all layers seen so far, when the engine says.
    pub done: Option<u64>,
    pub total: Option<u64>,
}

/// Receives progress; called from the engine task, must not block.
pub type ProgressSink<'a> = &'a (dyn Fn(Progress) + Send + Sync);

/// Result of running a command inside a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i64,
    /// stdout and stderr interleaved, as text.
    pub output: String,
}

/// An engine event about one of our containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineEvent {
    pub container_id: String,
    /// Value of [`LABEL_APP`].
    pub app: String,
    /// `create`, `start`, `die`, `stop`, `kill`, `oom`, `destroy`, `health_status`, …
    /// Podman adds its own (`init`, `cleanup`, …); its `died` arrives as `die`. An exec's
    /// command line is cut off (`exec_start`), as it may carry secrets.
    pub action: String,
    pub exit_code: Option<i64>,
}

/// Basic facts about a local image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub id: String,
    pub tags: Vec<String>,
}

/// What kind of failure an [`EngineError`] is, for callers that must branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineErrorKind {
    Unreachable,
    ImageNotFound,
    ContainerNotFound,
    NameConflict,
    PullFailed,
    BuildFailed,
    Timeout,
    NotModified,
    Other,
}

/// Every engine failure, with the thing at fault named. Clonable, so one failure can be
/// reported to every caller that waited on it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("engine unreachable at {host}: {reason}")]
    Unreachable { host: String, reason: String },
    #[error("image not found: {image}")]
    ImageNotFound { image: String },
    #[error("container not found: {container}")]
    ContainerNotFound { container: String },
    #[error("name conflict: a container named {container} already exists")]
    NameConflict { container: String },
    #[error("pull failed: {image}: {reason}")]
    PullFailed { image: String, reason: String },
    #[error("build failed: {tag}: {reason}")]
    BuildFailed { tag: String, reason: String },
    #[error("timed out after {after:?}: {what}")]
    Timeout { what: String, after: Duration },
    /// The container is already in the asked-for state (Docker's HTTP 304).
    #[error("{container}: already {what}")]
    NotModified { container: String, what: String },
    #[error("engine error on {target}: {reason}")]
    Other { target: String, reason: String },
}

impl EngineError {
    pub fn kind(&self) -> EngineErrorKind {
        match self {
            EngineError::Unreachable { .. } => EngineErrorKind::Unreachable,
            EngineError::ImageNotFound { .. } => EngineErrorKind::ImageNotFound,
            EngineError::ContainerNotFound { .. } => EngineErrorKind::ContainerNotFound,
            EngineError::NameConflict { .. } => EngineErrorKind::NameConflict,
            EngineError::PullFailed { .. } => EngineErrorKind::PullFailed,
            EngineError::BuildFailed { .. } => EngineErrorKind::BuildFailed,
            EngineError::Timeout { .. } => EngineErrorKind::Timeout,
            EngineError::NotModified { .. } => EngineErrorKind::NotModified,
            EngineError::Other { .. } => EngineErrorKind::Other,
        }
    }
}

/// The container engine as the supervisor sees it. Implementations touch only containers
/// that carry [`LABEL_APP`] or were adopted ([`ContainerRuntime::adopt`]); `list` and
/// `events` never return anything else.
#[async_trait::async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Pings the engine and returns its version and the negotiated API version.
    async fn version(&self) -> Result<EngineVersion, EngineError>;
    /// All our containers, in any state. One API call.
    async fn list(&self) -> Result<Vec<ContainerSummary>, EngineError>;
    /// One container by name or id.
    async fn inspect(&self, container: &str) -> Result<ContainerDetails, EngineError>;
    async fn pull(&self, image: &str, progress: ProgressSink<'_>) -> Result<(), EngineError>;
    async fn build(
        &self,
        req: &BuildRequest,
        progress: ProgressSink<'_>,
    ) -> Result<(), EngineError>;
    /// Creates (does not start) the container for `spec`, labelled with app, version and
    /// spec hash. Returns the container id.
    async fn create(&self, spec: &ContainerSpec) -> Result<String, EngineError>;
    async fn start(&self, container: &str) -> Result<(), EngineError>;
    /// SIGTERM, then SIGKILL after `timeout`.
    async fn stop(&self, container: &str, timeout: Duration) -> Result<(), EngineError>;
    async fn kill(&self, container: &str, signal: &str) -> Result<(), EngineError>;
    /// Removes the container (forced); never its volumes, which are host folders.
    async fn remove(&self, container: &str) -> Result<(), EngineError>;
    async fn exec(
        &self,
        container: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, EngineError>;
    /// The last `tail` lines of stdout and stderr.
    async fn logs(&self, container: &str, tail: usize) -> Result<Vec<String>, EngineError>;
    /// The last `tail` lines, then every new line as the container writes it (stdout
    /// and stderr); ends when the container stops or the engine goes away.
    fn follow_logs(
        &self,
        container: &str,
        tail: usize,
    ) -> BoxStream<'static, Result<String, EngineError>> {
        use futures_util::StreamExt;
        let _ = tail;
        let target = container.to_string();
        futures_util::stream::once(async move {
            Err(EngineError::Other {
                target,
                reason: "this engine cannot follow logs".to_string(),
            })
        })
        .boxed()
    }
    /// One sample of a container's memory and CPU counters, asked of the engine once
    /// (no stream): the fallback when its cgroup is not visible to the supervisor.
    async fn stats(&self, container: &str) -> Result<crate::usage::Reading, EngineError> {
        Err(EngineError::Other {
            target: container.to_string(),
            reason: "this engine gives no stats".to_string(),
        })
    }
    /// The engine's event stream, filtered to our label. Ends or errors when the engine
    /// goes away; the caller resubscribes with backoff.
    fn events(&self) -> BoxStream<'static, Result<EngineEvent, EngineError>>;
    /// Changes the memory limit of a running container without restarting it.
    async fn update_memory(&self, container: &str, bytes: u64) -> Result<(), EngineError>;
    /// `Ok(None)` when the image is not present locally.
    async fn image_inspect(&self, image: &str) -> Result<Option<ImageInfo>, EngineError>;
    async fn image_tag(&self, image: &str, new_ref: &str) -> Result<(), EngineError>;
    async fn image_remove(&self, image: &str) -> Result<(), EngineError>;
    /// Renames a container (an upgrade keeps the old one aside under another name).
    async fn rename(&self, container: &str, new_name: &str) -> Result<(), EngineError>;
    /// Makes sure a user-defined network exists (bridge driver, labelled
    /// [`LABEL_NETWORK`]); answers whether it had to be created. Apps on such a network
    /// reach each other by container name.
    async fn ensure_network(&self, name: &str) -> Result<bool, EngineError>;
    /// A regular file of a container's filesystem (created or running), at most 1 MiB;
    /// `Ok(None)` when it does not exist. Used to read the image's `/etc/passwd`.
    async fn read_file(&self, container: &str, path: &str) -> Result<Option<Vec<u8>>, EngineError>;
    /// Any container by name or id, ours or not, with the recipe it runs with: what
    /// `import container` and `adopt` read. Never changes anything.
    async fn inspect_foreign(&self, container: &str) -> Result<ForeignContainer, EngineError> {
        Err(EngineError::Other {
            target: container.to_string(),
            reason: "this engine cannot read a foreign container".to_string(),
        })
    }
    /// From now on, shows the container `adopted.container_id` as the app's: in `list`,
    /// `inspect` and `events`, with the labels it would carry had we created it.
    fn adopt(&self, adopted: Adopted) {
        let _ = adopted;
    }
    /// Ends an adoption (the container was replaced or the app uninstalled).
    fn release(&self, container_id: &str) {
        let _ = container_id;
    }
    /// Turns the engine's own restart policy off (the supervisor restarts apps) and sets
    /// the pids limit, on a running container, without restarting it: what adoption
    /// changes live.
    async fn take_over(&self, container: &str, pids_limit: u32) -> Result<(), EngineError> {
        let _ = pids_limit;
        Err(EngineError::Other {
            target: container.to_string(),
            reason: "this engine cannot update a container".to_string(),
        })
    }
    /// How the engine maps container user ids to host ids: the identity, or a rootless
    /// engine's user namespace.
    fn id_map(&self) -> IdMap {
        IdMap::Identity
    }
}

/// Container ids to host ids, for the owners of volume folders.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum IdMap {
    /// A rootful engine: container uid N is host uid N.
    #[default]
    Identity,
    /// A rootless engine run by host user `uid`/`gid`: container id 0 is that user, and
    /// container id N ≥ 1 is the (N-1)th id of its subordinate ranges (`/etc/subuid`,
    /// `/etc/subgid`), as `newuidmap` lays them out.
    Rootless {
        uid: u32,
        gid: u32,
        subuid: Vec<(u32, u32)>,
        subgid: Vec<(u32, u32)>,
    },
}

impl IdMap {
    /// The host uid of container uid `id`, or `None` when the namespace does not map it.
    pub fn host_uid(&self, id: u32) -> Option<u32> {
        match self {
            IdMap::Identity => Some(id),
            IdMap::Rootless { uid, subuid, .. } => map_id(id, *uid, subuid),
        }
    }

    /// The host gid of container gid `id`, or `None` when the namespace does not map it.
    pub fn host_gid(&self, id: u32) -> Option<u32> {
        match self {
            IdMap::Identity => Some(id),
            IdMap::Rootless { gid, subgid, .. } => map_id(id, *gid, subgid),
        }
    }
}

fn map_id(id: u32, own: u32, ranges: &[(u32, u32)]) -> Option<u32> {
    if id == 0 {
        return Some(own);
    }
    let mut index = id - 1;
    for &(start, count) in ranges {
        if index < count {
            return start.checked_add(index);
        }
        index -= count;
    }
    None
}

/// The ranges `/etc/subuid` or `/etc/subgid` give to a user (`name:start:count` lines,
/// matched by name or by numeric id), in file order.
pub fn parse_subid(text: &str, user: &str, id: u32) -> Vec<(u32, u32)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.trim().split(':');
            let (who, start, count) = (parts.next()?, parts.next()?, parts.next()?);
            let matches = who == user || who.parse::<u32>() == Ok(id);
            Some((start.parse().ok()?, count.parse().ok()?)).filter(|_| matches)
        })
        .collect()
}

/// Label on networks the supervisor created.
pub const LABEL_NETWORK: &str = "io.archipelago.network";

/// True for the networks every engine has built in, which are never created.
pub fn is_builtin_network(name: &str) -> bool {
    matches!(name, "bridge" | "host" | "none" | "default") || name.starts_with("container:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootless_ids_map_through_the_subordinate_ranges() {
        let subuid = parse_subid(
            "other:100000:65536\nnode:200000:1000\n1001:300000:65536\nbroken line\n",
            "node",
            1001,
        );
        assert_eq!(subuid, vec![(200000, 1000), (300000, 65536)]);
        let map = IdMap::Rootless {
            uid: 1001,
            gid: 1002,
            subuid: subuid.clone(),
            subgid: vec![(500000, 10)],
        };
        let cases = [
            (0, Some(1001), Some(1002)),
            (1, Some(200000), Some(500000)),
            (1000, Some(200999), None),
            (1001, Some(300000), None),
            (65536 + 1000, Some(365535), None),
            (65536 + 1001, None, None),
        ];
        for (id, uid, gid) in cases {
            assert_eq!(map.host_uid(id), uid, "uid {id}");
            assert_eq!(map.host_gid(id), gid, "gid {id}");
        }
        assert_eq!(IdMap::Identity.host_uid(70), Some(70));
    }
}
