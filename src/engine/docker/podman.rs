//! Where Podman (and a rootless engine) differ from Docker: the user namespace of a rootless
//! engine, the libpod memory update, and answers naming a state outside the API.

use std::future::Future;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::ContainerUpdateBody;

use super::errors::Target;
use super::{DockerRuntime, PODMAN_LIBPOD_API, TRANSIENT_STATE_WAIT};
use crate::engine::parse_subid;
use crate::engine::{EngineError, IdMap};

/// The user namespace of a rootless engine: its user is the owner of its socket, and its
/// subordinate ids come from `/etc/subuid` and `/etc/subgid`.
pub(super) fn rootless_id_map(host: &str) -> IdMap {
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
    /// Podman 4.x has no compat `/containers/{id}/update`; its libpod API has one, with a
    /// body of its own. bollard has no call for it, so the compat call is sent through a
    /// client whose request hook rewrites path and body.
    pub(super) async fn podman_update_memory(
        &self,
        container: &str,
        bytes: i64,
    ) -> Result<(), EngineError> {
        let body = serde_json::json!({ "memory": { "limit": bytes, "swap": bytes } });
        self.podman_update(container, body).await
    }

    /// Podman's own update endpoint, with `resources` as its body (OCI Linux resources).
    pub(super) async fn podman_update(
        &self,
        container: &str,
        resources: serde_json::Value,
    ) -> Result<(), EngineError> {
        let body = resources.to_string();
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
pub(super) async fn retry_transient_state<T, F, Fut>(mut call: F) -> Result<T, BollardError>
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
pub(super) fn libpod_uri(uri: &str) -> Option<String> {
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
