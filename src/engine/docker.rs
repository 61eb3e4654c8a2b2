//! The real engine: [`ContainerRuntime`] over the Docker Engine API with bollard.
//!
//! Speaks to Docker (20.10 and later) and to Podman's Docker-compatible API (4.x) through
//! one code path; where the two differ (event names, exit-code attributes, error wording)
//! the difference is absorbed here, never in the callers. Every failure goes through
//! [`map_error`], the one place that decides which [`EngineError`] a bollard error is.
//!
//! Choices worth knowing:
//! - A missing image on pull is [`EngineError::ImageNotFound`] when the engine or the
//!   registry says so (`not found`, `manifest unknown`, `no such image`, ...), and
//!   [`EngineError::PullFailed`] for every other pull failure; both name the image.
//! - Every call that can hang is bounded: plain calls by `call_timeout`, a stop by its
//!   grace period plus `call_timeout`, an exec by its own timeout, a pull or build by an
//!   idle limit between two progress messages. The event stream is unbounded by design.
//! - This module never shells out to `docker` or `podman`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, ContainerSummaryStateEnum, ContainerUpdateBody,
    EndpointSettings, EventMessage, HostConfig, NetworkingConfig, PortBinding as DockerPortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    EventsOptionsBuilder, InspectContainerOptions, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveImageOptionsBuilder, StartContainerOptions, StopContainerOptionsBuilder,
    TagImageOptionsBuilder,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures_util::stream::{BoxStream, StreamExt};

use super::parse_subid;
use super::{
    container_name, BuildRequest, ContainerDetails, ContainerRuntime, ContainerSpec,
    ContainerSummary, EngineError, EngineEvent, EngineVersion, ExecOutput, IdMap, ImageInfo,
    Progress, ProgressSink, RunState, LABEL_APP, LABEL_NETWORK, LABEL_SPEC_HASH, LABEL_VERSION,
};

/// bollard's own per-request limit (time to the response head). Only a backstop: every
/// call is bounded more tightly below, and a stop legitimately waits for its grace period.
const CLIENT_TIMEOUT_SECS: u64 = 3600;
/// Default bound on one plain API call.
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on the version negotiation when connecting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A pull or build that says nothing for this long is given up.
const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long an exec's exit code may lag behind the end of its output (Podman).
const EXEC_EXIT_WAIT: Duration = Duration::from_secs(2);
/// How long an answer naming a state outside the API (Podman's `stopped`) is retried.
const TRANSIENT_STATE_WAIT: Duration = Duration::from_secs(5);
/// The libpod API version we address Podman's own endpoints with.
const PODMAN_LIBPOD_API: &str = "4.0.0";
/// Docker's placeholder for "never": what `StartedAt` holds before the first start.
const ZERO_TIME_PREFIX: &str = "0001-01-01";

/// The engine at one address, Docker or Podman.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: Docker,
    /// The address as the user gave it, for error messages.
    host: String,
    call_timeout: Duration,
    /// Podman's compat API lacks a few calls (the memory update): those go to its libpod
    /// API instead.
    podman: bool,
    /// Limits set live on Podman, by container id, with the `StartedAt` of the run they
    /// apply to. Podman 4.3 changes the cgroup but keeps reporting the old limit in
    /// inspect; this is what [`ContainerRuntime::inspect`] reports instead while the run
    /// lasts. A restart of the container (or of the supervisor) forgets it, which is
    /// right: Podman then applies its stored, old limit again, inspect shows that, and the
    /// caller updates again.
    live_limits: Arc<Mutex<LiveLimits>>,
    /// Held while a network is looked up and made, so apps installing at once never
    /// create two networks of the same name (Docker allows that, and every create then
    /// fails with `network … is ambiguous`).
    network_lock: Arc<tokio::sync::Mutex<()>>,
    /// Container ids to host ids: a rootless engine's user namespace.
    id_map: IdMap,
}

/// Container id → (`StartedAt` of the run, limit in bytes).
type LiveLimits = HashMap<String, (Option<String>, u64)>;

/// The user namespace of a rootless engine: its user is the owner of its socket, and its
/// subordinate ids come from `/etc/subuid` and `/etc/subgid`.
fn rootless_id_map(host: &str) -> IdMap {
    use std::os::unix::fs::MetadataExt;
    let owner = host
        .strip_prefix("unix://")
        .and_then(|path| std::fs::metadata(path).ok())
        .map(|m| (m.uid(), m.gid()));
    let Some((uid, gid)) = owner else {
        tracing::warn!(%host, "rootless engine over tcp: volume owners are not mapped");
        return IdMap::Identity;
    };
    let name = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let mut f = line.split(':');
                let name = f.next()?;
                (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
            })
        })
        .unwrap_or_default();
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    IdMap::Rootless {
        uid,
        gid,
        subuid: parse_subid(&read("/etc/subuid"), &name, uid),
        subgid: parse_subid(&read("/etc/subgid"), &name, gid),
    }
}

impl DockerRuntime {
    /// Connects to `host` (`unix:///path`, `tcp://host:port` or `http://host:port`) and
    /// negotiates the API version. Fails with [`EngineError::Unreachable`] when nothing
    /// answers; the caller retries with backoff.
    pub async fn connect(host: &str) -> Result<DockerRuntime, EngineError> {
        let unreachable = |reason: String| EngineError::Unreachable {
            host: host.to_string(),
            reason,
        };
        let docker = if let Some(path) = host.strip_prefix("unix://") {
            Docker::connect_with_unix(path, CLIENT_TIMEOUT_SECS, API_DEFAULT_VERSION)
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            Docker::connect_with_http(host, CLIENT_TIMEOUT_SECS, API_DEFAULT_VERSION)
        } else {
            return Err(unreachable(
                "unsupported address: use unix://, tcp:// or http://".to_string(),
            ));
        }
        .map_err(|e| map_error(host, Target::Engine, e))?;
        let docker = match tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()).await {
            Ok(Ok(docker)) => docker,
            Ok(Err(e)) => return Err(map_error(host, Target::Engine, e)),
            Err(_) => {
                return Err(unreachable(format!(
                    "no answer to the version request in {CONNECT_TIMEOUT:?}"
                )))
            }
        };
        let version = tokio::time::timeout(CONNECT_TIMEOUT, docker.version())
            .await
            .map_err(|_| {
                unreachable(format!(
                    "no answer to the version request in {CONNECT_TIMEOUT:?}"
                ))
            })?
            .map_err(|e| map_error(host, Target::Engine, e))?;
        let podman = version
            .components
            .unwrap_or_default()
            .iter()
            .any(|c| c.name.to_ascii_lowercase().contains("podman"));
        let rootless = match tokio::time::timeout(CONNECT_TIMEOUT, docker.info()).await {
            Ok(Ok(info)) => info
                .security_options
                .unwrap_or_default()
                .iter()
                .any(|o| o.contains("name=rootless")),
            _ => false,
        };
        let id_map = if rootless {
            rootless_id_map(host)
        } else {
            IdMap::Identity
        };
        Ok(DockerRuntime {
            docker,
            host: host.to_string(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            podman,
            live_limits: Arc::default(),
            network_lock: Arc::default(),
            id_map,
        })
    }

    /// True when the engine is Podman (its Docker-compatible API).
    pub fn is_podman(&self) -> bool {
        self.podman
    }

    fn live_limits(&self) -> std::sync::MutexGuard<'_, LiveLimits> {
        // The map is only read and written whole under the lock; a poisoned lock still
        // holds a consistent map.
        self.live_limits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every network whose name is exactly `name` (the engine's name filter also matches
    /// parts of names), oldest first.
    async fn networks_named(&self, name: &str) -> Result<Vec<NetworkFacts>, EngineError> {
        let opts = bollard::query_parameters::ListNetworksOptionsBuilder::new()
            .filters(&HashMap::from([("name", vec![name])]))
            .build();
        let list = self
            .docker
            .list_networks(Some(opts))
            .await
            .map_err(|e| self.err(Target::Network(name), e))?;
        let mut found = Vec::new();
        for n in list.into_iter().filter(|n| n.name.as_deref() == Some(name)) {
            let Some(id) = n.id else { continue };
            // The list call leaves `Containers` empty; inspect says who is attached.
            let inspected = self
                .docker
                .inspect_network(
                    &id,
                    None::<bollard::query_parameters::InspectNetworkOptions>,
                )
                .await
                .map_err(|e| self.err(Target::Network(name), e))?;
            found.push(NetworkFacts {
                containers: inspected.containers.map_or(0, |c| c.len()),
                ours: inspected
                    .labels
                    .is_some_and(|l| l.contains_key(LABEL_NETWORK)),
                created: n.created.map(|t| t.to_string()).unwrap_or_default(),
                id,
            });
        }
        found.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(found)
    }

    /// Several networks share `name` (an earlier version raced itself at first boot).
    /// Keeps the one in use (or the oldest) and removes the empty ones; when two or more
    /// hold containers, nothing is touched and the error says what to do.
    async fn repair_duplicate_networks(
        &self,
        name: &str,
        found: Vec<NetworkFacts>,
    ) -> Result<(), EngineError> {
        match plan_network_repair(&found) {
            Ok(remove) => {
                for id in remove {
                    tracing::warn!(network = %name, %id, "removing an empty duplicate network");
                    self.docker
                        .remove_network(&id)
                        .await
                        .map_err(|e| self.err(Target::Network(name), e))?;
                }
                Ok(())
            }
            Err(in_use) => Err(EngineError::Other {
                target: format!("network {name}"),
                reason: format!(
                    "is ambiguous: {} networks share this name and these cannot be removed \
                     safely: {}; move every container to one of them (`docker network \
                     disconnect` / `connect`), then remove the others with `docker network rm \
                     ID`",
                    found.len(),
                    in_use.join(", ")
                ),
            }),
        }
    }

    /// Changes the bound on plain API calls (default 60 s).
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The address this runtime talks to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The API version agreed with the engine, e.g. `1.41`.
    pub fn api_version(&self) -> String {
        self.docker.client_version().to_string()
    }

    fn err(&self, target: Target<'_>, e: BollardError) -> EngineError {
        map_error(&self.host, target, e)
    }

    /// Runs `fut`, failing with [`EngineError::Timeout`] after `after`.
    async fn bounded<T>(
        &self,
        what: impl FnOnce() -> String,
        after: Duration,
        fut: impl Future<Output = Result<T, EngineError>>,
    ) -> Result<T, EngineError> {
        match tokio::time::timeout(after, fut).await {
            Ok(res) => res,
            Err(_) => Err(EngineError::Timeout {
                what: what(),
                after,
            }),
        }
    }

    async fn update_limits(
        &self,
        container: &str,
        memory: i64,
        memory_swap: i64,
    ) -> Result<(), EngineError> {
        let body = ContainerUpdateBody {
            memory: Some(memory),
            memory_swap: Some(memory_swap),
            ..Default::default()
        };
        self.docker
            .update_container(container, body)
            .await
            .map_err(|e| self.err(Target::Container(container), e))
    }

    /// Podman 4.x has no compat `/containers/{id}/update`; its libpod API has one, with a
    /// body of its own. bollard has no call for it, so the compat call is sent through a
    /// client whose request hook rewrites path and body.
    async fn podman_update_memory(&self, container: &str, bytes: i64) -> Result<(), EngineError> {
        let body = serde_json::json!({ "memory": { "limit": bytes, "swap": bytes } }).to_string();
        let client = self.docker.clone().with_request_modifier(move |mut req| {
            if let Some(libpod) = libpod_uri(&req.uri().to_string()) {
                if let Ok(parsed) = libpod.parse() {
                    *req.uri_mut() = parsed;
                }
            }
            *req.body_mut() = bollard::body_full(body.clone().into());
            req
        });
        client
            .update_container(container, ContainerUpdateBody::default())
            .await
            .map_err(|e| self.err(Target::Container(container), e))
    }
}

/// Podman reports a container whose process has just exited, before its clean-up, with
/// state `stopped`, a value the API (and so bollard) does not know: the whole answer then
/// fails to parse. The state lasts well under a second, so such answers are retried.
async fn retry_transient_state<T, F, Fut>(mut call: F) -> Result<T, BollardError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BollardError>>,
{
    let deadline = tokio::time::Instant::now() + TRANSIENT_STATE_WAIT;
    loop {
        match call().await {
            Err(BollardError::JsonDataError { message, .. })
                if message.contains("unknown variant")
                    && tokio::time::Instant::now() < deadline =>
            {
                tracing::debug!(%message, "engine reported a transient state; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// The libpod twin of a compat `/containers/...` URI. Podman serves libpod paths only
/// under a version prefix of 4.0.0 or later, and bollard sends compat paths without one.
fn libpod_uri(uri: &str) -> Option<String> {
    let scheme_end = uri.find("://").map_or(0, |i| i + 3);
    let path_start = uri[scheme_end..]
        .find('/')
        .map_or(uri.len(), |i| scheme_end + i);
    let i = uri[path_start..].find("/containers/")?;
    Some(format!(
        "{}/v{PODMAN_LIBPOD_API}/libpod{}",
        &uri[..path_start],
        &uri[path_start + i..]
    ))
}

/// What a failing call was about, so [`map_error`] can name it and read a 404 or 409 right.
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    /// The engine itself (version, list, events).
    Engine,
    Container(&'a str),
    Image(&'a str),
    Create {
        container: &'a str,
        image: &'a str,
    },
    Pull(&'a str),
    Build(&'a str),
    Network(&'a str),
}

impl Target<'_> {
    fn name(&self) -> String {
        match self {
            Target::Engine => "engine".to_string(),
            Target::Container(c) | Target::Create { container: c, .. } => c.to_string(),
            Target::Image(i) | Target::Pull(i) => i.to_string(),
            Target::Build(t) => t.to_string(),
            Target::Network(n) => format!("network {n}"),
        }
    }
}

/// True when an engine or registry message means "no such image". Docker says `not
/// found` or `manifest unknown`; Podman says `image not known` or `no such image`.
fn says_image_missing(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "not found",
        "manifest unknown",
        "no such image",
        "image not known",
        "name unknown",
        "does not exist",
    ]
    .iter()
    .any(|s| m.contains(s))
}

/// The one place where bollard errors become [`EngineError`]s.
fn map_error(host: &str, target: Target<'_>, err: BollardError) -> EngineError {
    use BollardError as B;
    let other = |reason: String| EngineError::Other {
        target: target.name(),
        reason,
    };
    match err {
        B::DockerResponseServerError {
            status_code,
            message,
        } => match (status_code, target) {
            (_, Target::Pull(image)) => {
                if status_code == 404 || says_image_missing(&message) {
                    EngineError::ImageNotFound {
                        image: image.to_string(),
                    }
                } else {
                    EngineError::PullFailed {
                        image: image.to_string(),
                        reason: message,
                    }
                }
            }
            (_, Target::Build(tag)) => EngineError::BuildFailed {
                tag: tag.to_string(),
                reason: message,
            },
            (404, Target::Container(c)) => EngineError::ContainerNotFound {
                container: c.to_string(),
            },
            (404, Target::Image(i)) => EngineError::ImageNotFound {
                image: i.to_string(),
            },
            (_, Target::Create { image, .. })
                if status_code == 404 || (status_code >= 500 && says_image_missing(&message)) =>
            {
                EngineError::ImageNotFound {
                    image: image.to_string(),
                }
            }
            (_, Target::Create { container, .. })
                if status_code == 409 || message.contains("already in use") =>
            {
                EngineError::NameConflict {
                    container: container.to_string(),
                }
            }
            // Podman answers some lookups of a missing container with a 500.
            (500, Target::Container(c)) if message.contains("no such container") => {
                EngineError::ContainerNotFound {
                    container: c.to_string(),
                }
            }
            (304, Target::Container(c)) => EngineError::NotModified {
                container: c.to_string(),
                what: "in that state".to_string(),
            },
            _ => other(format!("status {status_code}: {message}")),
        },
        B::DockerStreamError { error } => match target {
            Target::Pull(image) if says_image_missing(&error) => EngineError::ImageNotFound {
                image: image.to_string(),
            },
            Target::Pull(image) => EngineError::PullFailed {
                image: image.to_string(),
                reason: error,
            },
            Target::Build(tag) => EngineError::BuildFailed {
                tag: tag.to_string(),
                reason: error,
            },
            _ => other(error),
        },
        B::RequestTimeoutError => EngineError::Timeout {
            what: format!("engine request about {}", target.name()),
            after: Duration::from_secs(CLIENT_TIMEOUT_SECS),
        },
        e @ (B::HyperLegacyError { .. }
        | B::HyperResponseError { .. }
        | B::IOError { .. }
        | B::SocketNotFoundError(_)
        | B::UnsupportedURISchemeError { .. }) => EngineError::Unreachable {
            host: host.to_string(),
            reason: lower_first(&e.to_string()),
        },
        e => other(lower_first(&e.to_string())),
    }
}

/// Our messages are lowercase; bollard's start with a capital.
fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Splits an image reference into repository and tag or digest:
/// `localhost:5000/x:1` → (`localhost:5000/x`, `Some("1")`), `x@sha256:…` →
/// (`x`, `Some("sha256:…")`), `x` → (`x`, `None`).
pub fn split_image_ref(image: &str) -> (&str, Option<&str>) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo, Some(digest));
    }
    let after_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[after_slash..].rfind(':') {
        Some(i) => (
            &image[..after_slash + i],
            Some(&image[after_slash + i + 1..]),
        ),
        None => (image, None),
    }
}

fn run_state(status: Option<ContainerStateStatusEnum>, running: bool) -> RunState {
    use ContainerStateStatusEnum as S;
    match status {
        Some(S::CREATED) => RunState::Created,
        Some(S::RUNNING) | Some(S::STOPPING) => RunState::Running,
        Some(S::PAUSED) => RunState::Paused,
        Some(S::RESTARTING) => RunState::Restarting,
        Some(S::REMOVING) => RunState::Removing,
        Some(S::EXITED) => RunState::Exited,
        Some(S::DEAD) => RunState::Dead,
        Some(S::EMPTY) | None if running => RunState::Running,
        Some(S::EMPTY) | None => RunState::Created,
    }
}

fn summary_state(state: Option<ContainerSummaryStateEnum>) -> RunState {
    use ContainerSummaryStateEnum as S;
    match state {
        Some(S::RUNNING) | Some(S::STOPPING) => RunState::Running,
        Some(S::PAUSED) => RunState::Paused,
        Some(S::RESTARTING) => RunState::Restarting,
        Some(S::REMOVING) => RunState::Removing,
        Some(S::EXITED) => RunState::Exited,
        Some(S::DEAD) => RunState::Dead,
        Some(S::CREATED) | Some(S::EMPTY) | None => RunState::Created,
    }
}

/// `None` for Docker's zero time and for empty strings.
fn real_time(t: Option<String>) -> Option<String> {
    t.filter(|t| !t.is_empty() && !t.starts_with(ZERO_TIME_PREFIX))
}

/// Whole seconds, rounded up, as the API wants them.
fn secs_i32(d: Duration) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

fn bytes_i64(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// The create body for `spec`, labelled with app, version and spec hash.
fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let labels = HashMap::from([
        (LABEL_APP.to_string(), spec.app.clone()),
        (LABEL_VERSION.to_string(), spec.version.clone()),
        (LABEL_SPEC_HASH.to_string(), spec.hash()),
    ]);
    let env = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut port_bindings: HashMap<String, Option<Vec<DockerPortBinding>>> = HashMap::new();
    for p in &spec.ports {
        let key = format!("{}/{}", p.container, if p.udp { "udp" } else { "tcp" });
        // No HostIp: the engine's default, all interfaces, like `docker run -p`.
        port_bindings
            .entry(key)
            .or_default()
            .get_or_insert_with(Vec::new)
            .push(DockerPortBinding {
                host_ip: None,
                host_port: Some(p.host.to_string()),
            });
    }
    let mut exposed: Vec<String> = port_bindings.keys().cloned().collect();
    exposed.sort();
    let binds = spec
        .binds
        .iter()
        .map(|b| {
            let ro = if b.read_only { ":ro" } else { "" };
            format!("{}:{}{ro}", b.host.display(), b.container)
        })
        .collect::<Vec<_>>();
    let memory = (spec.memory_limit > 0).then(|| bytes_i64(spec.memory_limit));
    let list = |v: &[String]| (!v.is_empty()).then(|| v.to_vec());
    let host_config = HostConfig {
        cap_add: list(&spec.cap_add),
        cap_drop: list(&spec.cap_drop),
        security_opt: Some(vec!["no-new-privileges".to_string()]),
        pids_limit: Some(i64::from(spec.pids_limit)),
        group_add: (!spec.group_add.is_empty())
            .then(|| spec.group_add.iter().map(u32::to_string).collect()),
        binds: (!binds.is_empty()).then_some(binds),
        network_mode: (!spec.network.is_empty()).then(|| spec.network.clone()),
        // Swap equal to memory: the limit is the real ceiling, not memory plus as much swap.
        memory,
        memory_swap: memory,
        port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
        // The supervisor restarts crashed apps, with its own backoff; the engine must not.
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        env: Some(env),
        cmd: spec.command.clone(),
        entrypoint: spec.entrypoint.clone(),
        user: spec.user.clone(),
        labels: Some(labels),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        stop_timeout: Some(i64::from(secs_i32(spec.stop_timeout))),
        host_config: Some(host_config),
        networking_config: network_aliases(spec),
        ..Default::default()
    }
}

/// On a named network, the app id is an alias of the container, so `bitcoind:8332` works
/// beside `archipelago-bitcoind:8332`.
fn network_aliases(spec: &ContainerSpec) -> Option<NetworkingConfig> {
    if super::is_builtin_network(&spec.network) || spec.network.is_empty() {
        return None;
    }
    let endpoint = EndpointSettings {
        aliases: Some(vec![spec.app.clone()]),
        ..Default::default()
    };
    Some(NetworkingConfig {
        endpoints_config: Some(HashMap::from([(spec.network.clone(), endpoint)])),
    })
}

/// What [`DockerRuntime::ensure_network`] knows of one network of the wanted name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NetworkFacts {
    id: String,
    containers: usize,
    /// Carries [`LABEL_NETWORK`]: the supervisor made it.
    ours: bool,
    created: String,
}

/// Which duplicates to remove (`found` oldest first): every empty network we made, but
/// the one holding containers (or the oldest when none does). `Err` lists the networks
/// that would still share the name: in use, or made by someone else.
fn plan_network_repair(found: &[NetworkFacts]) -> Result<Vec<String>, Vec<String>> {
    let keep = found
        .iter()
        .find(|n| n.containers > 0)
        .or(found.first())
        .map(|n| n.id.as_str());
    let (remove, stay): (Vec<&NetworkFacts>, Vec<&NetworkFacts>) = found
        .iter()
        .partition(|n| Some(n.id.as_str()) != keep && n.containers == 0 && n.ours);
    if stay.len() > 1 {
        return Err(stay
            .iter()
            .map(|n| match (n.containers, n.ours) {
                (0, _) => format!("{} (empty, not made by archipelago)", short_id(&n.id)),
                (c, _) => format!("{} ({c} containers)", short_id(&n.id)),
            })
            .collect());
    }
    Ok(remove.iter().map(|n| n.id.clone()).collect())
}

fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// The largest file [`ContainerRuntime::read_file`] reads.
const MAX_READ_FILE: usize = 1 << 20;

/// The content of the first regular file in a tar archive (the archive endpoint answers
/// one entry for a file); `Ok(None)` when the path was not a regular file.
fn first_file_of_tar(tar: &[u8]) -> Result<Option<Vec<u8>>, String> {
    use std::io::Read;
    let mut archive = tar::Archive::new(tar);
    let mut entries = archive.entries().map_err(|e| format!("bad archive: {e}"))?;
    let Some(entry) = entries.next() else {
        return Ok(None);
    };
    let mut entry = entry.map_err(|e| format!("bad archive: {e}"))?;
    if !entry.header().entry_type().is_file() {
        return Ok(None);
    }
    let mut out = Vec::new();
    entry
        .by_ref()
        .take(MAX_READ_FILE as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("bad archive: {e}"))?;
    if out.len() > MAX_READ_FILE {
        return Err(format!("larger than {MAX_READ_FILE} bytes"));
    }
    Ok(Some(out))
}

/// Running byte totals of a pull, per layer.
#[derive(Default)]
struct PullProgress {
    layers: BTreeMap<String, (u64, Option<u64>)>,
}

impl PullProgress {
    fn update(&mut self, id: Option<&str>, status: &str, current: Option<i64>, total: Option<i64>) {
        let Some(id) = id else { return };
        let entry = self.layers.entry(id.to_string()).or_insert((0, None));
        if let Some(t) = total.filter(|t| *t > 0) {
            entry.1 = Some(t as u64);
        }
        // Bytes downloaded per layer, never going back: extraction reports a current of
        // its own, which would move the bar backwards, so only downloads count; a layer
        // downloaded (or already present) counts as whole.
        if let Some(c) = current.filter(|c| *c >= 0 && status.starts_with("Downloading")) {
            entry.0 = entry.0.max(c as u64);
        }
        let whole = [
            "Pull complete",
            "Download complete",
            "Already exists",
            "Extracting",
        ];
        if whole.iter().any(|w| status.starts_with(w)) {
            if let Some(t) = entry.1 {
                entry.0 = t;
            }
        }
    }

    /// (done, total) over layers whose size is known, or `None` before any is.
    fn totals(&self) -> (Option<u64>, Option<u64>) {
        let sized: Vec<_> = self
            .layers
            .values()
            .filter_map(|(c, t)| t.map(|t| (*c.min(&t), t)))
            .collect();
        if sized.is_empty() {
            return (None, None);
        }
        let done = sized.iter().map(|(c, _)| c).sum();
        let total = sized.iter().map(|(_, t)| t).sum();
        (Some(done), Some(total))
    }
}

/// A `.dockerignore` file: patterns matched against slash-separated paths relative to
/// the context; the last matching pattern wins, `!` re-includes. A pattern matches a path
/// or any folder above it, so `dir/` and `dir` both drop the whole folder. Supports `*`,
/// `?` and `**`; no character classes.
#[derive(Debug, Default, Clone)]
pub struct IgnoreMatcher {
    /// (negated, pattern), in file order: the last pattern that matches decides.
    patterns: Vec<(bool, globset::GlobMatcher)>,
}

impl IgnoreMatcher {
    /// Parses the text of a `.dockerignore` file. Patterns are Go's `filepath.Match`
    /// with `**` across folders, as Docker reads them: `*` and `?` never cross a `/`.
    /// A pattern that does not parse is left out, as Docker would fail the build on it.
    pub fn parse(text: &str) -> Self {
        let patterns = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| {
                let (negate, p) = match l.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, l),
                };
                let clean: Vec<&str> = p
                    .split('/')
                    .filter(|s| !s.is_empty() && *s != ".")
                    .collect();
                if clean.is_empty() {
                    return None;
                }
                let glob = globset::GlobBuilder::new(&clean.join("/"))
                    .literal_separator(true)
                    .build()
                    .ok()?;
                Some((negate, glob.compile_matcher()))
            })
            .collect();
        IgnoreMatcher { patterns }
    }

    /// True when `path` (relative, `/`-separated) is left out of the context: a pattern
    /// that matches the path or one of its parent folders.
    pub fn is_ignored(&self, path: &str) -> bool {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let prefixes: Vec<String> = (1..=segs.len()).map(|n| segs[..n].join("/")).collect();
        let mut ignored = false;
        for (negate, pattern) in &self.patterns {
            if prefixes.iter().any(|p| pattern.is_match(p)) {
                ignored = !negate;
            }
        }
        ignored
    }
}

/// Tars the build context, leaving out what `.dockerignore` says, but always keeping the
/// Dockerfile and `.dockerignore` themselves (as the docker CLI does).
pub fn tar_context(context: &Path, dockerfile: &str) -> std::io::Result<Vec<u8>> {
    let ignore = match std::fs::read_to_string(context.join(".dockerignore")) {
        Ok(text) => IgnoreMatcher::parse(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => IgnoreMatcher::default(),
        Err(e) => return Err(e),
    };
    let keep = |rel: &str| {
        rel == dockerfile.trim_start_matches("./")
            || rel == ".dockerignore"
            || !ignore.is_ignored(rel)
    };
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let mut entries =
            std::fs::read_dir(context.join(&rel_dir))?.collect::<Result<Vec<_>, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let rel = rel_dir.join(entry.file_name());
            let rel_str = rel.to_string_lossy().replace('\\', "/");
            let file_type = entry.file_type()?;
            if file_type.is_dir() {
                // Descend even into an ignored folder: a `!` pattern may re-include a file.
                if keep(&rel_str) {
                    builder.append_dir(&rel, entry.path())?;
                }
                stack.push(rel);
            } else if keep(&rel_str) {
                builder.append_path_with_name(entry.path(), &rel)?;
            }
        }
    }
    builder.into_inner()
}

/// Reads the exit code out of an event's attributes: Docker says `exitCode`, Podman
/// `containerExitCode`.
fn event_exit_code(attrs: &HashMap<String, String>) -> Option<i64> {
    ["exitCode", "containerExitCode"]
        .iter()
        .find_map(|k| attrs.get(*k))
        .and_then(|v| v.trim().parse().ok())
}

/// Turns an engine event into ours; `None` for events that are not about one of our
/// containers. Podman's `died` becomes Docker's `die`; an exec's command line is dropped
/// from the action (it can hold secrets).
fn map_event(ev: EventMessage) -> Option<EngineEvent> {
    let actor = ev.actor?;
    let attrs = actor.attributes.unwrap_or_default();
    let app = attrs.get(LABEL_APP)?.clone();
    let raw = ev.action.unwrap_or_default();
    let action = if raw.starts_with("exec_") {
        raw.split(':').next().unwrap_or_default().trim().to_string()
    } else if raw == "died" {
        "die".to_string()
    } else {
        raw
    };
    let exit_code = if action == "die" {
        event_exit_code(&attrs)
    } else {
        None
    };
    Some(EngineEvent {
        container_id: actor.id.unwrap_or_default(),
        app,
        action,
        exit_code,
    })
}

/// `logs` with `follow`: the last `tail` lines, then each new one; frames are cut into
/// lines (a frame may hold several, or part of one). Ends with the container.
fn follow_logs(
    docker: Docker,
    host: String,
    container: &str,
    tail: usize,
) -> BoxStream<'static, Result<String, EngineError>> {
    let opts = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .follow(true)
        .tail(&tail.to_string())
        .build();
    let target = container.to_string();
    let frames = docker.logs(container, Some(opts));
    let mut partial = String::new();
    frames
        .map(move |frame| match frame {
            Ok(frame) => {
                partial.push_str(&String::from_utf8_lossy(&frame.into_bytes()));
                let mut lines = Vec::new();
                while let Some(at) = partial.find('\n') {
                    let line: String = partial.drain(..=at).collect();
                    lines.push(Ok(line.trim_end_matches(['\n', '\r']).to_string()));
                }
                futures_util::stream::iter(lines)
            }
            Err(e) => futures_util::stream::iter(vec![Err(map_error(
                &host,
                Target::Container(&target),
                e,
            ))]),
        })
        .flatten()
        .boxed()
}

/// One sample of the engine's stats for a container (`stream=false`, `one-shot=true`:
/// no wait for a second sample). Memory leaves out the inactive file cache, as `docker
/// stats` does.
async fn stats_once(
    docker: &Docker,
    host: &str,
    container: &str,
) -> Result<crate::usage::Reading, EngineError> {
    let opts = bollard::query_parameters::StatsOptionsBuilder::new()
        .stream(false)
        .one_shot(true)
        .build();
    let mut stream = docker.stats(container, Some(opts));
    let stats = match stream.next().await {
        Some(s) => s.map_err(|e| map_error(host, Target::Container(container), e))?,
        None => {
            return Err(EngineError::Other {
                target: container.to_string(),
                reason: "the engine sent no stats".to_string(),
            })
        }
    };
    let memory = stats.memory_stats.unwrap_or_default();
    let inactive = memory
        .stats
        .as_ref()
        .and_then(|s| {
            s.get("total_inactive_file")
                .or_else(|| s.get("inactive_file"))
        })
        .copied()
        .unwrap_or(0);
    let cpu = stats
        .cpu_stats
        .and_then(|c| c.cpu_usage)
        .and_then(|u| u.total_usage)
        .unwrap_or(0);
    Ok(crate::usage::Reading {
        memory_bytes: memory.usage.unwrap_or(0).saturating_sub(inactive),
        cpu_ns: cpu,
    })
}

/// Collects log frames into whole lines.
fn frames_to_lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_string)
        .collect()
}

#[async_trait::async_trait]
impl ContainerRuntime for DockerRuntime {
    async fn version(&self) -> Result<EngineVersion, EngineError> {
        let fut = async {
            let v = self
                .docker
                .version()
                .await
                .map_err(|e| self.err(Target::Engine, e))?;
            Ok(EngineVersion {
                version: v.version.unwrap_or_default(),
                api_version: self.api_version(),
            })
        };
        self.bounded(|| "version".to_string(), self.call_timeout, fut)
            .await
    }

    async fn list(&self) -> Result<Vec<ContainerSummary>, EngineError> {
        let filters = HashMap::from([("label", vec![LABEL_APP])]);
        let opts = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let fut = async {
            let list = retry_transient_state(|| self.docker.list_containers(Some(opts.clone())))
                .await
                .map_err(|e| self.err(Target::Engine, e))?;
            Ok(list
                .into_iter()
                .filter_map(|c| {
                    let labels = c.labels.unwrap_or_default();
                    // The engine filtered already; this keeps the promise even if it did not.
                    let app = labels.get(LABEL_APP)?.clone();
                    let name = c
                        .names
                        .unwrap_or_default()
                        .first()
                        .map(|n| n.trim_start_matches('/').to_string())
                        .unwrap_or_default();
                    Some(ContainerSummary {
                        id: c.id.unwrap_or_default(),
                        name,
                        app,
                        spec_hash: labels.get(LABEL_SPEC_HASH).cloned(),
                        version: labels.get(LABEL_VERSION).cloned(),
                        image: c.image.unwrap_or_default(),
                        state: summary_state(c.state),
                    })
                })
                .collect())
        };
        self.bounded(|| "list containers".to_string(), self.call_timeout, fut)
            .await
    }

    async fn inspect(&self, container: &str) -> Result<ContainerDetails, EngineError> {
        let fut = async {
            let info = retry_transient_state(|| {
                self.docker
                    .inspect_container(container, None::<InspectContainerOptions>)
            })
            .await
            .map_err(|e| self.err(Target::Container(container), e))?;
            let state = info.state.unwrap_or_default();
            let run_state = run_state(state.status, state.running.unwrap_or(false));
            let config = info.config.unwrap_or_default();
            let hc = info.host_config.unwrap_or_default();
            let id = info.id.unwrap_or_default();
            let started_at = real_time(state.started_at);
            let mut memory_limit = hc.memory.unwrap_or(0).max(0) as u64;
            if self.podman {
                if let Some((run, bytes)) = self.live_limits().get(&id) {
                    if *run == started_at {
                        memory_limit = *bytes;
                    }
                }
            }
            Ok(ContainerDetails {
                id,
                name: info
                    .name
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                image: config.image.unwrap_or_default(),
                labels: config.labels.unwrap_or_default().into_iter().collect(),
                state: run_state,
                exit_code: matches!(run_state, RunState::Exited | RunState::Dead)
                    .then_some(state.exit_code)
                    .flatten(),
                started_at,
                finished_at: real_time(state.finished_at),
                memory_limit,
                oom_killed: state.oom_killed.unwrap_or(false),
                pid: state
                    .pid
                    .and_then(|p| u32::try_from(p).ok())
                    .filter(|p| *p > 0 && run_state.is_running()),
                user: config.user.unwrap_or_default(),
            })
        };
        self.bounded(|| format!("inspect {container}"), self.call_timeout, fut)
            .await
    }

    async fn pull(&self, image: &str, progress: ProgressSink<'_>) -> Result<(), EngineError> {
        let (repo, tag) = split_image_ref(image);
        let opts = CreateImageOptionsBuilder::new()
            .from_image(repo)
            .tag(tag.unwrap_or("latest"))
            .build();
        let mut stream = self.docker.create_image(Some(opts), None, None);
        let mut totals = PullProgress::default();
        loop {
            let next = tokio::time::timeout(STREAM_IDLE_TIMEOUT, stream.next()).await;
            let item = match next {
                Err(_) => {
                    return Err(EngineError::Timeout {
                        what: format!("pull {image}: no progress"),
                        after: STREAM_IDLE_TIMEOUT,
                    })
                }
                Ok(None) => break,
                Ok(Some(item)) => item.map_err(|e| self.err(Target::Pull(image), e))?,
            };
            let status = item.status.unwrap_or_default();
            let detail = item.progress_detail.unwrap_or_default();
            totals.update(item.id.as_deref(), &status, detail.current, detail.total);
            let (done, total) = totals.totals();
            let message = match item.id {
                Some(id) if !status.is_empty() => format!("{status} {id}"),
                _ => status,
            };
            progress(Progress {
                message,
                done,
                total,
            });
        }
        // Belt and braces: an engine that ends the stream without an error line must
        // still have produced the image.
        match self.image_inspect(image).await? {
            Some(_) => Ok(()),
            None => Err(EngineError::PullFailed {
                image: image.to_string(),
                reason: "the engine reported success but the image is absent".to_string(),
            }),
        }
    }

    async fn build(
        &self,
        req: &BuildRequest,
        progress: ProgressSink<'_>,
    ) -> Result<(), EngineError> {
        let tag = req.tag.as_str();
        let context = req.context.clone();
        let dockerfile = req.dockerfile.clone();
        let tarball = tokio::task::spawn_blocking(move || tar_context(&context, &dockerfile))
            .await
            .map_err(|e| EngineError::BuildFailed {
                tag: tag.to_string(),
                reason: format!("packing the context: {e}"),
            })?
            .map_err(|e| EngineError::BuildFailed {
                tag: tag.to_string(),
                reason: format!("packing the context {}: {e}", req.context.display()),
            })?;
        let args: HashMap<&str, &str> = req
            .args
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let opts = BuildImageOptionsBuilder::new()
            .dockerfile(&req.dockerfile)
            .t(tag)
            .buildargs(&args)
            .rm(true)
            .forcerm(true)
            .build();
        let mut stream =
            self.docker
                .build_image(opts, None, Some(bollard::body_full(tarball.into())));
        loop {
            let next = tokio::time::timeout(STREAM_IDLE_TIMEOUT, stream.next()).await;
            let item = match next {
                Err(_) => {
                    return Err(EngineError::Timeout {
                        what: format!("build {tag}: no progress"),
                        after: STREAM_IDLE_TIMEOUT,
                    })
                }
                Ok(None) => break,
                Ok(Some(item)) => item.map_err(|e| self.err(Target::Build(tag), e))?,
            };
            let text = item.stream.or(item.status).unwrap_or_default();
            let text = text.trim_end();
            if !text.is_empty() {
                let detail = item.progress_detail.unwrap_or_default();
                progress(Progress {
                    message: text.to_string(),
                    done: detail.current.map(|c| c.max(0) as u64),
                    total: detail.total.map(|t| t.max(0) as u64),
                });
            }
        }
        match self.image_inspect(tag).await? {
            Some(_) => Ok(()),
            None => Err(EngineError::BuildFailed {
                tag: tag.to_string(),
                reason: "the engine reported success but the image is absent".to_string(),
            }),
        }
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, EngineError> {
        // A named network is made on first use, so apps on it reach each other by name.
        if !super::is_builtin_network(&spec.network) && self.ensure_network(&spec.network).await? {
            tracing::info!(network = %spec.network, "created network");
        }
        let name = container_name(&spec.app);
        let opts = CreateContainerOptionsBuilder::new().name(&name).build();
        let body = create_body(spec);
        let target = Target::Create {
            container: &name,
            image: &spec.image,
        };
        let fut = async {
            let res = self
                .docker
                .create_container(Some(opts), body)
                .await
                .map_err(|e| self.err(target, e))?;
            Ok(res.id)
        };
        self.bounded(|| format!("create {name}"), self.call_timeout, fut)
            .await
    }

    async fn start(&self, container: &str) -> Result<(), EngineError> {
        let fut = async {
            // An already running container answers 304, which bollard counts as success.
            self.docker
                .start_container(container, None::<StartContainerOptions>)
                .await
                .map_err(|e| self.err(Target::Container(container), e))
        };
        self.bounded(|| format!("start {container}"), self.call_timeout, fut)
            .await
    }

    async fn stop(&self, container: &str, timeout: Duration) -> Result<(), EngineError> {
        let opts = StopContainerOptionsBuilder::new()
            .t(secs_i32(timeout))
            .build();
        let fut = async {
            // A stopped container answers 304: fine, it is stopped.
            self.docker
                .stop_container(container, Some(opts))
                .await
                .map_err(|e| self.err(Target::Container(container), e))
        };
        self.bounded(
            || format!("stop {container}"),
            timeout + self.call_timeout,
            fut,
        )
        .await
    }

    async fn kill(&self, container: &str, signal: &str) -> Result<(), EngineError> {
        let opts = KillContainerOptionsBuilder::new().signal(signal).build();
        let fut = async {
            self.docker
                .kill_container(container, Some(opts))
                .await
                .map_err(|e| self.err(Target::Container(container), e))
        };
        self.bounded(|| format!("kill {container}"), self.call_timeout, fut)
            .await
    }

    async fn remove(&self, container: &str) -> Result<(), EngineError> {
        let opts = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(false)
            .build();
        let fut = async {
            self.docker
                .remove_container(container, Some(opts))
                .await
                .map_err(|e| self.err(Target::Container(container), e))
        };
        self.bounded(|| format!("remove {container}"), self.call_timeout, fut)
            .await
    }

    async fn exec(
        &self,
        container: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, EngineError> {
        let target = Target::Container(container);
        let fut = async {
            let created = self
                .docker
                .create_exec(
                    container,
                    CreateExecOptions {
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        cmd: Some(cmd.to_vec()),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| self.err(target, e))?;
            let mut output = Vec::new();
            match self
                .docker
                .start_exec(&created.id, None)
                .await
                .map_err(|e| self.err(target, e))?
            {
                StartExecResults::Attached {
                    output: mut out, ..
                } => {
                    while let Some(frame) = out.next().await {
                        output.extend_from_slice(
                            &frame.map_err(|e| self.err(target, e))?.into_bytes(),
                        );
                    }
                }
                StartExecResults::Detached => {}
            }
            // The exit code can lag the end of the output by a moment (Podman): poll.
            let deadline = tokio::time::Instant::now() + EXEC_EXIT_WAIT;
            loop {
                let info = self
                    .docker
                    .inspect_exec(&created.id)
                    .await
                    .map_err(|e| self.err(target, e))?;
                let running = info.running.unwrap_or(false);
                if let (false, Some(code)) = (running, info.exit_code) {
                    return Ok(ExecOutput {
                        exit_code: code,
                        output: String::from_utf8_lossy(&output).into_owned(),
                    });
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(EngineError::Other {
                        target: container.to_string(),
                        reason: "exec output ended but no exit code was reported".to_string(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        self.bounded(
            || {
                format!(
                    "exec {} in {container}",
                    cmd.first().map_or("", String::as_str)
                )
            },
            timeout,
            fut,
        )
        .await
    }

    async fn logs(&self, container: &str, tail: usize) -> Result<Vec<String>, EngineError> {
        let opts = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .follow(false)
            .tail(&tail.to_string())
            .build();
        let fut = async {
            let mut stream = self.docker.logs(container, Some(opts));
            let mut bytes = Vec::new();
            while let Some(frame) = stream.next().await {
                let frame = frame.map_err(|e| self.err(Target::Container(container), e))?;
                bytes.extend_from_slice(&frame.into_bytes());
            }
            let lines = frames_to_lines(&bytes);
            let skip = lines.len().saturating_sub(tail);
            Ok(lines.into_iter().skip(skip).collect())
        };
        self.bounded(|| format!("logs of {container}"), self.call_timeout, fut)
            .await
    }

    fn follow_logs(
        &self,
        container: &str,
        tail: usize,
    ) -> BoxStream<'static, Result<String, EngineError>> {
        follow_logs(self.docker.clone(), self.host.clone(), container, tail)
    }

    async fn stats(&self, container: &str) -> Result<crate::usage::Reading, EngineError> {
        let fut = stats_once(&self.docker, &self.host, container);
        self.bounded(|| format!("stats of {container}"), self.call_timeout, fut)
            .await
    }

    fn events(&self) -> BoxStream<'static, Result<EngineEvent, EngineError>> {
        let mut filters = HashMap::from([("type", vec!["container"])]);
        // Podman 4.3 matches an event label filter only as `key=value`, so a bare key
        // drops every event there; it gets the type filter only, and `map_event` drops
        // foreign containers on our side (it does so for Docker too, as a second fence).
        if !self.podman {
            filters.insert("label", vec![LABEL_APP]);
        }
        // The request goes out on the first poll, not now: `since` now makes the engine
        // replay whatever happens in between, so no event after this call is lost.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let since = format!("{}.{:09}", now.as_secs(), now.subsec_nanos());
        let opts = EventsOptionsBuilder::new()
            .since(&since)
            .filters(&filters)
            .build();
        let host = self.host.clone();
        self.docker
            .events(Some(opts))
            .filter_map(move |item| {
                let out = match item {
                    Ok(ev) => map_event(ev).map(Ok),
                    Err(e) => Some(Err(map_error(&host, Target::Engine, e))),
                };
                futures_util::future::ready(out)
            })
            .boxed()
    }

    async fn update_memory(&self, container: &str, bytes: u64) -> Result<(), EngineError> {
        if bytes == 0 {
            return Err(EngineError::Other {
                target: container.to_string(),
                reason: "a memory limit cannot be lifted on a running container".to_string(),
            });
        }
        let new = bytes_i64(bytes);
        let fut = async {
            let info = retry_transient_state(|| {
                self.docker
                    .inspect_container(container, None::<InspectContainerOptions>)
            })
            .await
            .map_err(|e| self.err(Target::Container(container), e))?;
            if self.podman {
                // Podman's inspect may show a stale limit (see `live_limits`): always apply.
                self.podman_update_memory(container, new).await?;
                let started_at = real_time(info.state.and_then(|s| s.started_at));
                self.live_limits()
                    .insert(info.id.unwrap_or_default(), (started_at, bytes));
                return Ok(());
            }
            let hc = info.host_config.unwrap_or_default();
            let (memory, swap) = (hc.memory.unwrap_or(0), hc.memory_swap.unwrap_or(0));
            if memory == new && swap == new {
                return Ok(());
            }
            // The engine refuses memory above memory+swap at every step, so order the two
            // changes: when growing, raise swap first; when shrinking, lower memory first.
            if memory > 0 && swap > 0 {
                if new > swap {
                    self.update_limits(container, memory, new).await?;
                } else if new < memory {
                    self.update_limits(container, new, swap).await?;
                }
            }
            self.update_limits(container, new, new).await
        };
        self.bounded(
            || format!("update memory of {container}"),
            self.call_timeout,
            fut,
        )
        .await
    }

    async fn image_inspect(&self, image: &str) -> Result<Option<ImageInfo>, EngineError> {
        let fut = async {
            match self.docker.inspect_image(image).await {
                Ok(info) => Ok(Some(ImageInfo {
                    id: info.id.unwrap_or_default(),
                    tags: info.repo_tags.unwrap_or_default(),
                })),
                Err(e) => match self.err(Target::Image(image), e) {
                    EngineError::ImageNotFound { .. } => Ok(None),
                    other => Err(other),
                },
            }
        };
        self.bounded(|| format!("inspect image {image}"), self.call_timeout, fut)
            .await
    }

    async fn image_tag(&self, image: &str, new_ref: &str) -> Result<(), EngineError> {
        let (repo, tag) = split_image_ref(new_ref);
        let opts = TagImageOptionsBuilder::new()
            .repo(repo)
            .tag(tag.unwrap_or("latest"))
            .build();
        let fut = async {
            self.docker
                .tag_image(image, Some(opts))
                .await
                .map_err(|e| self.err(Target::Image(image), e))
        };
        self.bounded(
            || format!("tag {image} as {new_ref}"),
            self.call_timeout,
            fut,
        )
        .await
    }

    async fn image_remove(&self, image: &str) -> Result<(), EngineError> {
        let opts = RemoveImageOptionsBuilder::new()
            .force(false)
            .noprune(false)
            .build();
        let fut = async {
            self.docker
                .remove_image(image, Some(opts), None)
                .await
                .map(|_| ())
                .map_err(|e| self.err(Target::Image(image), e))
        };
        self.bounded(|| format!("remove image {image}"), self.call_timeout, fut)
            .await
    }

    async fn ensure_network(&self, name: &str) -> Result<bool, EngineError> {
        let _one_at_a_time = self.network_lock.lock().await;
        let fut = async {
            let found = self.networks_named(name).await?;
            match found.len() {
                0 => {}
                1 => return Ok(false),
                _ => {
                    self.repair_duplicate_networks(name, found).await?;
                    return Ok(false);
                }
            }
            let request = bollard::models::NetworkCreateRequest {
                name: name.to_string(),
                driver: Some("bridge".to_string()),
                labels: Some(HashMap::from([(
                    LABEL_NETWORK.to_string(),
                    "true".to_string(),
                )])),
                ..Default::default()
            };
            self.docker
                .create_network(request)
                .await
                .map(|_| true)
                .map_err(|e| self.err(Target::Network(name), e))
        };
        self.bounded(|| format!("ensure network {name}"), self.call_timeout, fut)
            .await
    }

    async fn read_file(&self, container: &str, path: &str) -> Result<Option<Vec<u8>>, EngineError> {
        let fut = async {
            let opts = bollard::query_parameters::DownloadFromContainerOptionsBuilder::new()
                .path(path)
                .build();
            let mut stream = self.docker.download_from_container(container, Some(opts));
            let mut tar = Vec::new();
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(bytes) => {
                        tar.extend_from_slice(&bytes);
                        if tar.len() > MAX_READ_FILE + 64 * 1024 {
                            return Err(EngineError::Other {
                                target: format!("{container}:{path}"),
                                reason: format!("larger than {MAX_READ_FILE} bytes"),
                            });
                        }
                    }
                    Err(BollardError::DockerResponseServerError {
                        status_code: 404,
                        message,
                    }) if !message.to_ascii_lowercase().contains("no such container") => {
                        return Ok(None)
                    }
                    Err(e) => return Err(self.err(Target::Container(container), e)),
                }
            }
            first_file_of_tar(&tar).map_err(|reason| EngineError::Other {
                target: format!("{container}:{path}"),
                reason,
            })
        };
        self.bounded(
            || format!("read {path} of {container}"),
            self.call_timeout,
            fut,
        )
        .await
    }

    fn id_map(&self) -> IdMap {
        self.id_map.clone()
    }

    async fn rename(&self, container: &str, new_name: &str) -> Result<(), EngineError> {
        let opts = bollard::query_parameters::RenameContainerOptionsBuilder::new()
            .name(new_name)
            .build();
        let fut = async {
            self.docker
                .rename_container(container, opts)
                .await
                .map_err(|e| self.err(Target::Container(container), e))
        };
        self.bounded(
            || format!("rename {container} to {new_name}"),
            self.call_timeout,
            fut,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Bind, EngineErrorKind, PortBinding};

    #[test]
    fn duplicate_networks_keep_the_one_in_use() {
        let net = |id: &str, containers, ours| NetworkFacts {
            id: id.to_string(),
            containers,
            ours,
            created: id.to_string(),
        };
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        type Case<'a> = (&'a [NetworkFacts], Result<Vec<String>, usize>);
        let cases: &[Case] = &[
            (
                &[net("a", 0, true), net("b", 0, true), net("c", 0, true)],
                Ok(ids(&["b", "c"])),
            ),
            (
                &[net("a", 0, true), net("b", 2, true), net("c", 0, true)],
                Ok(ids(&["a", "c"])),
            ),
            (&[net("a", 1, true), net("b", 2, true)], Err(2)),
            (&[net("a", 0, false), net("b", 0, true)], Ok(ids(&["b"]))),
            (&[net("a", 3, true), net("b", 0, false)], Err(2)),
        ];
        for (found, want) in cases {
            let got = plan_network_repair(found).map_err(|stay| stay.len());
            assert_eq!(&got, want, "{found:?}");
        }
    }

    #[test]
    fn split_refs() {
        let cases = [
            ("busybox", ("busybox", None)),
            ("busybox:1", ("busybox", Some("1"))),
            (
                "archipelago/lnd:0.18.3",
                ("archipelago/lnd", Some("0.18.3")),
            ),
            ("localhost:5000/x:1", ("localhost:5000/x", Some("1"))),
            ("localhost:5000/x", ("localhost:5000/x", None)),
            ("localhost:5000/a/b:c", ("localhost:5000/a/b", Some("c"))),
            ("x@sha256:abcd", ("x", Some("sha256:abcd"))),
        ];
        for (input, want) in cases {
            assert_eq!(split_image_ref(input), want, "{input}");
        }
    }

    #[test]
    fn dockerignore_patterns() {
        let m = IgnoreMatcher::parse(
            "# comment\nsecret.txt\n*.log\nbuild/\n!build/keep.txt\ndocs/**/*.md\n/abs\n[ab].key\n",
        );
        let cases = [
            ("secret.txt", true),
            ("a/secret.txt", false),
            ("x.log", true),
            ("sub/x.log", false),
            ("build", true),
            ("build/out.o", true),
            ("build/keep.txt", false),
            ("docs/a.md", true),
            ("docs/x/y/a.md", true),
            ("docs/a.txt", false),
            ("abs", true),
            ("Dockerfile", false),
            ("copied.txt", false),
            ("a.key", true),
            ("c.key", false),
        ];
        for (path, want) in cases {
            assert_eq!(m.is_ignored(path), want, "{path}");
        }
        assert!(!IgnoreMatcher::default().is_ignored("anything"));
    }

    #[test]
    fn tar_honours_dockerignore() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("Dockerfile"), "FROM scratch\n").expect("write");
        std::fs::write(d.join(".dockerignore"), "ignored.txt\nsub/\n!sub/keep\n").expect("write");
        std::fs::write(d.join("copied.txt"), "yes").expect("write");
        std::fs::write(d.join("ignored.txt"), "no").expect("write");
        std::fs::create_dir(d.join("sub")).expect("mkdir");
        std::fs::write(d.join("sub/keep"), "k").expect("write");
        std::fs::write(d.join("sub/drop"), "d").expect("write");
        let bytes = tar_context(d, "Dockerfile").expect("tar");
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut names: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![".dockerignore", "Dockerfile", "copied.txt", "sub/keep"]
        );
    }

    #[test]
    fn create_body_fields() {
        let spec = ContainerSpec {
            app: "demo".into(),
            version: "1.2".into(),
            image: "archipelago/demo:1.2".into(),
            env: BTreeMap::from([("A".into(), "1".into())]),
            command: Some(vec!["sh".into(), "-c".into(), "sleep 1".into()]),
            entrypoint: None,
            user: Some("1000".into()),
            ports: vec![
                PortBinding {
                    host: 8080,
                    container: 80,
                    udp: false,
                },
                PortBinding {
                    host: 5353,
                    container: 53,
                    udp: true,
                },
            ],
            binds: vec![Bind {
                host: "/srv/apps/demo/data".into(),
                container: "/data".into(),
                read_only: true,
            }],
            network: "host".into(),
            memory_limit: 64 << 20,
            stop_timeout: Duration::from_millis(1500),
            cap_add: vec![],
            cap_drop: vec![],
            pids_limit: 4096,
            group_add: vec![],
        };
        let body = create_body(&spec);
        let hc = body.host_config.clone().expect("host config");
        assert_eq!(hc.memory, Some(64 << 20));
        assert_eq!(hc.memory_swap, Some(64 << 20));
        assert_eq!(
            hc.binds,
            Some(vec!["/srv/apps/demo/data:/data:ro".to_string()])
        );
        assert_eq!(hc.network_mode.as_deref(), Some("host"));
        assert_eq!(
            hc.restart_policy.and_then(|r| r.name),
            Some(RestartPolicyNameEnum::NO)
        );
        let pb = hc.port_bindings.expect("ports");
        let tcp = pb["80/tcp"].clone().expect("80");
        assert_eq!(tcp[0].host_port.as_deref(), Some("8080"));
        assert_eq!(tcp[0].host_ip, None);
        assert!(pb.contains_key("53/udp"));
        assert_eq!(
            body.exposed_ports,
            Some(vec!["53/udp".to_string(), "80/tcp".to_string()])
        );
        assert_eq!(body.stop_timeout, Some(2));
        assert_eq!(body.env, Some(vec!["A=1".to_string()]));
        assert_eq!(body.user.as_deref(), Some("1000"));
        let labels = body.labels.expect("labels");
        assert_eq!(labels[LABEL_APP], "demo");
        assert_eq!(labels[LABEL_VERSION], "1.2");
        assert_eq!(labels[LABEL_SPEC_HASH], spec.hash());
    }

    #[test]
    fn error_mapping() {
        let server = |status_code: u16, message: &str| BollardError::DockerResponseServerError {
            status_code,
            message: message.to_string(),
        };
        let create = Target::Create {
            container: "archipelago-x",
            image: "img:1",
        };
        let cases: Vec<(Target<'_>, BollardError, EngineErrorKind)> = vec![
            (
                Target::Container("c"),
                server(404, "no such container"),
                EngineErrorKind::ContainerNotFound,
            ),
            (
                Target::Container("c"),
                server(
                    500,
                    "no container with name or ID \"c\" found: no such container",
                ),
                EngineErrorKind::ContainerNotFound,
            ),
            (
                Target::Image("i"),
                server(404, "no such image"),
                EngineErrorKind::ImageNotFound,
            ),
            (
                create,
                server(404, "No such image: img:1"),
                EngineErrorKind::ImageNotFound,
            ),
            (
                create,
                server(409, "Conflict. The container name is already in use"),
                EngineErrorKind::NameConflict,
            ),
            (
                create,
                server(500, "the container name \"x\" is already in use by abc"),
                EngineErrorKind::NameConflict,
            ),
            (
                Target::Pull("i"),
                server(404, "manifest unknown"),
                EngineErrorKind::ImageNotFound,
            ),
            (
                Target::Pull("i"),
                server(
                    500,
                    "initializing source: reading manifest 1: manifest unknown",
                ),
                EngineErrorKind::ImageNotFound,
            ),
            (
                Target::Pull("i"),
                server(500, "connection refused"),
                EngineErrorKind::PullFailed,
            ),
            (
                Target::Pull("i"),
                BollardError::DockerStreamError {
                    error: "x: not found".into(),
                },
                EngineErrorKind::ImageNotFound,
            ),
            (
                Target::Pull("i"),
                BollardError::DockerStreamError {
                    error: "unauthorized".into(),
                },
                EngineErrorKind::PullFailed,
            ),
            (
                Target::Build("t"),
                BollardError::DockerStreamError {
                    error: "step failed".into(),
                },
                EngineErrorKind::BuildFailed,
            ),
            (
                Target::Engine,
                BollardError::SocketNotFoundError("/x".into()),
                EngineErrorKind::Unreachable,
            ),
            (
                Target::Engine,
                BollardError::IOError {
                    err: std::io::Error::other("reset"),
                },
                EngineErrorKind::Unreachable,
            ),
            (
                Target::Container("c"),
                server(409, "is not running"),
                EngineErrorKind::Other,
            ),
            (
                Target::Engine,
                BollardError::RequestTimeoutError,
                EngineErrorKind::Timeout,
            ),
        ];
        for (target, err, want) in cases {
            let desc = format!("{target:?} {err}");
            let got = map_error("unix:///x.sock", target, err);
            assert_eq!(got.kind(), want, "{desc} -> {got}");
        }
        let e = map_error(
            "unix:///x.sock",
            Target::Engine,
            BollardError::SocketNotFoundError("/x.sock".into()),
        );
        assert!(e.to_string().contains("unix:///x.sock"), "{e}");
        let e = map_error("h", Target::Pull("img:9"), server(500, "boom"));
        assert!(e.to_string().contains("img:9"), "{e}");
    }

    #[test]
    fn pull_progress_sums_layers() {
        let mut p = PullProgress::default();
        assert_eq!(p.totals(), (None, None));
        p.update(Some("a"), "Downloading", Some(10), Some(100));
        p.update(Some("b"), "Downloading", Some(5), Some(50));
        assert_eq!(p.totals(), (Some(15), Some(150)));
        p.update(Some("a"), "Pull complete", None, None);
        assert_eq!(p.totals(), (Some(105), Some(150)));
        p.update(None, "Digest: sha256:x", None, None);
        assert_eq!(p.totals(), (Some(105), Some(150)));
        // Extraction of b reports its own smaller current: the bar does not go back.
        p.update(Some("b"), "Downloading", Some(30), Some(50));
        p.update(Some("b"), "Extracting", Some(2), Some(50));
        assert_eq!(p.totals(), (Some(150), Some(150)));
    }

    #[test]
    fn events_map_podman_and_docker() {
        use bollard::models::EventActor;
        let ev = |action: &str, attrs: &[(&str, &str)]| EventMessage {
            action: Some(action.to_string()),
            actor: Some(EventActor {
                id: Some("abc".into()),
                attributes: Some(
                    attrs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
            }),
            ..Default::default()
        };
        let e = map_event(ev("die", &[(LABEL_APP, "demo"), ("exitCode", "137")])).expect("ours");
        assert_eq!(
            (e.action.as_str(), e.exit_code, e.app.as_str()),
            ("die", Some(137), "demo")
        );
        let e = map_event(ev(
            "died",
            &[(LABEL_APP, "demo"), ("containerExitCode", "3")],
        ))
        .expect("ours");
        assert_eq!((e.action.as_str(), e.exit_code), ("die", Some(3)));
        let e = map_event(ev("exec_start: sh -c secret", &[(LABEL_APP, "demo")])).expect("ours");
        assert_eq!(e.action, "exec_start");
        assert!(
            map_event(ev("die", &[("exitCode", "1")])).is_none(),
            "not ours"
        );
    }

    #[test]
    fn libpod_uris() {
        let cases = [
            (
                "unix://2f746d70/containers/x/update",
                Some("unix://2f746d70/v4.0.0/libpod/containers/x/update"),
            ),
            (
                "http://127.0.0.1:2375/v1.41/containers/x/update",
                Some("http://127.0.0.1:2375/v4.0.0/libpod/containers/x/update"),
            ),
            ("unix://2f746d70/images/x/json", None),
        ];
        for (input, want) in cases {
            assert_eq!(libpod_uri(input).as_deref(), want, "{input}");
        }
    }

    #[test]
    fn misc_helpers() {
        assert_eq!(secs_i32(Duration::from_millis(1500)), 2);
        assert_eq!(secs_i32(Duration::from_secs(2)), 2);
        assert_eq!(real_time(Some("0001-01-01T00:00:00Z".into())), None);
        assert_eq!(
            real_time(Some("2024-01-01T00:00:00Z".into())).as_deref(),
            Some("2024-01-01T00:00:00Z")
        );
        assert_eq!(frames_to_lines(b"a\nb\r\nc"), vec!["a", "b", "c"]);
        assert_eq!(lower_first("Socket not found"), "socket not found");
    }

    #[tokio::test]
    async fn connect_to_nothing_is_unreachable() {
        let err = DockerRuntime::connect("unix:///nonexistent/archipelago.sock")
            .await
            .expect_err("no socket");
        assert_eq!(err.kind(), EngineErrorKind::Unreachable);
        assert!(
            err.to_string()
                .contains("unix:///nonexistent/archipelago.sock"),
            "{err}"
        );
        let err = DockerRuntime::connect("ftp://x").await.expect_err("scheme");
        assert_eq!(err.kind(), EngineErrorKind::Unreachable);
    }
}
