//! The real engine: [`ContainerRuntime`](crate::engine::ContainerRuntime) over the Docker Engine API with bollard.
//!
//! Speaks to Docker (20.10 and later) and to Podman's Docker-compatible API (4.x) through
//! one code path; where the two differ (event names, exit-code attributes, error wording)
//! the difference is absorbed here, never in the callers. Every failure goes through
//! `map_error` (`errors.rs`), the one place that decides which [`EngineError`] a bollard error is.
//!
//! Choices worth knowing:
//! - A missing image on pull is [`EngineError::ImageNotFound`] when the engine or the
//!   registry says so (`not found`, `manifest unknown`, `no such image`, ...), and
//!   [`EngineError::PullFailed`] for every other pull failure; both name the image.
//! - Every call that can hang is bounded: plain calls by `call_timeout`, a stop by its
//!   grace period plus `call_timeout`, an exec by its own timeout, a pull or build by an
//!   idle limit between two progress messages. The event stream is unbounded by design.
//! - This module never shells out to `docker` or `podman`.
//!
//! One concern per file: `calls` (the trait's calls), `errors` (error mapping), `convert`
//! (our types to the engine's and back), `build_context` (the tar and `.dockerignore`),
//! `network` (app networks), `podman` (Podman and rootless differences), `events`,
//! `follow` (a following log stream and one-shot stats), and `foreign` (a container we did
//! not create, read whole for import and adoption).

mod build_context;
mod calls;
mod convert;
mod errors;
mod events;
mod follow;
mod foreign;
mod network;
mod podman;
#[cfg(test)]
mod tests;

pub use build_context::{tar_context, IgnoreMatcher};
pub use convert::split_image_ref;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerInspectResponse, ContainerUpdateBody};
use bollard::query_parameters::InspectContainerOptions;
use bollard::{Docker, API_DEFAULT_VERSION};
use futures_util::stream::{Stream, StreamExt};

use errors::{map_error, Target};
use podman::{retry_transient_state, rootless_id_map};

use super::{Adoptions, EngineError, IdMap};

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
    /// inspect; this is what [`ContainerRuntime::inspect`](crate::engine::ContainerRuntime::inspect) reports instead while the run
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
    /// Containers we did not create that were adopted as apps' containers.
    adopted: Arc<Adoptions>,
}

/// Container id → (`StartedAt` of the run, limit in bytes).
type LiveLimits = HashMap<String, (Option<String>, u64)>;

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
            adopted: Arc::default(),
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

    /// Shares a table of adopted containers (a reconnecting runtime keeps one across
    /// connections).
    pub fn with_adoptions(mut self, adopted: Arc<Adoptions>) -> Self {
        self.adopted = adopted;
        self
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

    /// The next item of a pull or build stream; [`EngineError::Timeout`] once the engine
    /// has said nothing for [`STREAM_IDLE_TIMEOUT`], `None` at the end.
    async fn next_or_idle<T, S>(
        &self,
        stream: &mut S,
        what: &str,
        target: Target<'_>,
    ) -> Result<Option<T>, EngineError>
    where
        S: Stream<Item = Result<T, BollardError>> + Unpin,
    {
        match tokio::time::timeout(STREAM_IDLE_TIMEOUT, stream.next()).await {
            Err(_) => Err(EngineError::Timeout {
                what: format!("{what}: no progress"),
                after: STREAM_IDLE_TIMEOUT,
            }),
            Ok(None) => Ok(None),
            Ok(Some(item)) => item.map(Some).map_err(|e| self.err(target, e)),
        }
    }

    /// One engine call: its bollard error mapped for `target`, bounded by `after`.
    async fn call<T>(
        &self,
        what: impl FnOnce() -> String,
        after: Duration,
        target: Target<'_>,
        fut: impl Future<Output = Result<T, BollardError>>,
    ) -> Result<T, EngineError> {
        let mapped = async { fut.await.map_err(|e| self.err(target, e)) };
        self.bounded(what, after, mapped).await
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

    /// The engine's whole record of `container`, riding out Podman's passing states
    /// (`retry_transient_state`); unbounded, so callers bound it.
    async fn inspect_container(
        &self,
        container: &str,
    ) -> Result<ContainerInspectResponse, EngineError> {
        retry_transient_state(|| {
            self.docker
                .inspect_container(container, None::<InspectContainerOptions>)
        })
        .await
        .map_err(|e| self.err(Target::Container(container), e))
    }
}
