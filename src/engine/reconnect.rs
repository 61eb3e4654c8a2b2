//! An engine that may not be there yet: connects (and negotiates the API version) on
//! first use, and again after the engine went away, so an unreachable engine at boot is
//! not fatal and a restarted engine is picked up.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::sync::Mutex;

use super::docker::DockerRuntime;
use super::*;

/// A [`DockerRuntime`] behind a lazily (re)made connection.
pub struct ReconnectingRuntime {
    host: String,
    conn: Arc<Mutex<Option<DockerRuntime>>>,
    /// Outlives every connection: an adoption is the supervisor's, not the socket's.
    adopted: Arc<Adoptions>,
}

impl ReconnectingRuntime {
    pub fn new(host: &str) -> Self {
        ReconnectingRuntime {
            host: host.to_string(),
            conn: Arc::new(Mutex::new(None)),
            adopted: Arc::default(),
        }
    }

    async fn get(
        conn: &Mutex<Option<DockerRuntime>>,
        host: &str,
        adopted: &Arc<Adoptions>,
    ) -> Result<DockerRuntime, EngineError> {
        let mut guard = conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let c = DockerRuntime::connect(host)
            .await?
            .with_adoptions(adopted.clone());
        tracing::info!(host, api = %c.api_version(), "connected to the engine");
        *guard = Some(c.clone());
        Ok(c)
    }

    async fn conn(&self) -> Result<DockerRuntime, EngineError> {
        Self::get(&self.conn, &self.host, &self.adopted).await
    }

    /// Forgets the connection after the engine went away, so the next call renegotiates.
    async fn check<T>(&self, r: Result<T, EngineError>) -> Result<T, EngineError> {
        if let Err(e) = &r {
            if e.kind() == EngineErrorKind::Unreachable {
                *self.conn.lock().await = None;
            }
        }
        r
    }
}

macro_rules! forward {
    ($self:ident, $c:ident => $call:expr) => {{
        let $c = $self.conn().await?;
        let r = $call.await;
        $self.check(r).await
    }};
}

#[async_trait::async_trait]
impl ContainerRuntime for ReconnectingRuntime {
    async fn version(&self) -> Result<EngineVersion, EngineError> {
        forward!(self, c => c.version())
    }
    async fn list(&self) -> Result<Vec<ContainerSummary>, EngineError> {
        forward!(self, c => c.list())
    }
    async fn inspect(&self, container: &str) -> Result<ContainerDetails, EngineError> {
        forward!(self, c => c.inspect(container))
    }
    async fn pull(&self, image: &str, progress: ProgressSink<'_>) -> Result<(), EngineError> {
        forward!(self, c => c.pull(image, progress))
    }
    async fn build(
        &self,
        req: &BuildRequest,
        progress: ProgressSink<'_>,
    ) -> Result<(), EngineError> {
        forward!(self, c => c.build(req, progress))
    }
    async fn create(&self, spec: &ContainerSpec) -> Result<String, EngineError> {
        forward!(self, c => c.create(spec))
    }
    async fn start(&self, container: &str) -> Result<(), EngineError> {
        forward!(self, c => c.start(container))
    }
    async fn stop(&self, container: &str, timeout: Duration) -> Result<(), EngineError> {
        forward!(self, c => c.stop(container, timeout))
    }
    async fn kill(&self, container: &str, signal: &str) -> Result<(), EngineError> {
        forward!(self, c => c.kill(container, signal))
    }
    async fn remove(&self, container: &str) -> Result<(), EngineError> {
        forward!(self, c => c.remove(container))
    }
    async fn exec(
        &self,
        container: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, EngineError> {
        forward!(self, c => c.exec(container, cmd, timeout))
    }
    async fn logs(&self, container: &str, tail: usize) -> Result<Vec<String>, EngineError> {
        forward!(self, c => c.logs(container, tail))
    }
    async fn stats(&self, container: &str) -> Result<crate::usage::Reading, EngineError> {
        forward!(self, c => c.stats(container))
    }
    fn follow_logs(
        &self,
        container: &str,
        tail: usize,
    ) -> BoxStream<'static, Result<String, EngineError>> {
        let (conn, host, container) = (self.conn.clone(), self.host.clone(), container.to_string());
        let adopted = self.adopted.clone();
        stream::once(async move {
            match Self::get(&conn, &host, &adopted).await {
                Ok(c) => c.follow_logs(&container, tail),
                Err(e) => stream::once(async move { Err(e) }).boxed(),
            }
        })
        .flatten()
        .boxed()
    }
    fn events(&self) -> BoxStream<'static, Result<EngineEvent, EngineError>> {
        let conn = self.conn.clone();
        let host = self.host.clone();
        let adopted = self.adopted.clone();
        stream::once(async move {
            match Self::get(&conn, &host, &adopted).await {
                Ok(c) => c.events(),
                Err(e) => {
                    *conn.lock().await = None;
                    stream::once(async move { Err(e) }).boxed()
                }
            }
        })
        .flatten()
        .boxed()
    }
    async fn update_memory(&self, container: &str, bytes: u64) -> Result<(), EngineError> {
        forward!(self, c => c.update_memory(container, bytes))
    }
    async fn image_inspect(&self, image: &str) -> Result<Option<ImageInfo>, EngineError> {
        forward!(self, c => c.image_inspect(image))
    }
    async fn image_tag(&self, image: &str, new_ref: &str) -> Result<(), EngineError> {
        forward!(self, c => c.image_tag(image, new_ref))
    }
    async fn image_remove(&self, image: &str) -> Result<(), EngineError> {
        forward!(self, c => c.image_remove(image))
    }
    async fn rename(&self, container: &str, new_name: &str) -> Result<(), EngineError> {
        forward!(self, c => c.rename(container, new_name))
    }
    async fn inspect_foreign(&self, container: &str) -> Result<ForeignContainer, EngineError> {
        forward!(self, c => c.inspect_foreign(container))
    }
    fn adopt(&self, adopted: Adopted) {
        self.adopted.insert(adopted);
    }
    fn release(&self, container_id: &str) {
        self.adopted.remove(container_id);
    }
    async fn take_over(&self, container: &str, pids_limit: u32) -> Result<(), EngineError> {
        forward!(self, c => c.take_over(container, pids_limit))
    }
    async fn ensure_network(&self, name: &str) -> Result<bool, EngineError> {
        forward!(self, c => c.ensure_network(name))
    }
    async fn read_file(&self, container: &str, path: &str) -> Result<Option<Vec<u8>>, EngineError> {
        forward!(self, c => c.read_file(container, path))
    }
    /// The map of the current connection; the identity while none is made (nothing is
    /// created then either).
    fn id_map(&self) -> IdMap {
        self.conn
            .try_lock()
            .ok()
            .and_then(|c| c.as_ref().map(ContainerRuntime::id_map))
            .unwrap_or_default()
    }
}
