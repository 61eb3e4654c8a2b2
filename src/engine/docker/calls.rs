//! The [`ContainerRuntime`] calls, each bounded and each error mapped by `map_error`.
//!
//! Longer than 600 lines for one reason: it is the one `impl ContainerRuntime for
//! DockerRuntime`, and an impl block cannot be split across files; what each call needs
//! beyond bollard lives in the sibling files.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    EventsOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
    StartContainerOptions, StopContainerOptionsBuilder, TagImageOptionsBuilder,
};
use futures_util::stream::{BoxStream, StreamExt};

use super::build_context::tar_context;
use super::convert::{
    bare_name, bytes_i64, create_body, first_file_of_tar, frames_to_lines, real_time, run_state,
    secs_i32, split_image_ref, summary_state, PullProgress, MAX_READ_FILE,
};
use super::errors::{map_error, Target};
use super::events::map_event;
use super::follow::{follow_logs, stats_once};
use super::foreign::{foreign_container, take_over};
use super::podman::retry_transient_state;
use super::{DockerRuntime, EXEC_EXIT_WAIT};
use crate::engine::{
    container_name, Adopted, BuildRequest, ContainerDetails, ContainerRuntime, ContainerSpec,
    ContainerSummary, EngineError, EngineEvent, EngineVersion, ExecOutput, ForeignContainer, IdMap,
    ImageInfo, Progress, ProgressSink, RunState, LABEL_APP, LABEL_NETWORK, LABEL_SPEC_HASH,
    LABEL_VERSION,
};

/// A plain engine call: bounded by `call_timeout`, its bollard error mapped for `target`;
/// the format arguments after the call name it in a timeout.
macro_rules! plain_call {
    ($rt:ident, $target:expr, $call:expr, $($what:tt)+) => {
        $rt.call(|| format!($($what)+), $rt.call_timeout, $target, $call)
            .await
    };
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
            let mut list =
                retry_transient_state(|| self.docker.list_containers(Some(opts.clone())))
                    .await
                    .map_err(|e| self.err(Target::Engine, e))?;
            // Adopted containers carry no label: one more call asks for them by id.
            let adopted = self.adopted.ids();
            if !adopted.is_empty() {
                let ids: Vec<&str> = adopted.iter().map(String::as_str).collect();
                let filters = HashMap::from([("id", ids)]);
                let opts = ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build();
                let more =
                    retry_transient_state(|| self.docker.list_containers(Some(opts.clone())))
                        .await
                        .map_err(|e| self.err(Target::Engine, e))?;
                list.extend(
                    more.into_iter()
                        .filter(|c| !c.labels.as_ref().is_some_and(|l| l.contains_key(LABEL_APP))),
                );
            }
            Ok(list
                .into_iter()
                .filter_map(|c| {
                    let mut labels = c.labels.unwrap_or_default();
                    if let Some(adopted) = c.id.as_deref().and_then(|id| self.adopted.labels(id)) {
                        labels.extend(adopted);
                    }
                    // The engine filtered already; this keeps the promise even if it did not.
                    let app = labels.get(LABEL_APP)?.clone();
                    let name = bare_name(c.names.unwrap_or_default().first().map(String::as_str));
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
            let info = self.inspect_container(container).await?;
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
            let mut labels: std::collections::BTreeMap<_, _> =
                config.labels.unwrap_or_default().into_iter().collect();
            labels.extend(self.adopted.labels(&id).unwrap_or_default());
            Ok(ContainerDetails {
                id,
                name: bare_name(info.name.as_deref()),
                image: config.image.unwrap_or_default(),
                labels,
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
        let what = format!("pull {image}");
        while let Some(item) = self
            .next_or_idle(&mut stream, &what, Target::Pull(image))
            .await?
        {
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
        let what = format!("build {tag}");
        while let Some(item) = self
            .next_or_idle(&mut stream, &what, Target::Build(tag))
            .await?
        {
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
        if !crate::engine::is_builtin_network(&spec.network)
            && self.ensure_network(&spec.network).await?
        {
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
        // An already running container answers 304, which bollard counts as success.
        let call = self
            .docker
            .start_container(container, None::<StartContainerOptions>);
        plain_call!(
            self,
            Target::Container(container),
            call,
            "start {container}"
        )
    }

    async fn stop(&self, container: &str, timeout: Duration) -> Result<(), EngineError> {
        let opts = StopContainerOptionsBuilder::new()
            .t(secs_i32(timeout))
            .build();
        // A stopped container answers 304: fine, it is stopped.
        self.call(
            || format!("stop {container}"),
            timeout + self.call_timeout,
            Target::Container(container),
            self.docker.stop_container(container, Some(opts)),
        )
        .await
    }

    async fn kill(&self, container: &str, signal: &str) -> Result<(), EngineError> {
        let opts = KillContainerOptionsBuilder::new().signal(signal).build();
        let call = self.docker.kill_container(container, Some(opts));
        plain_call!(self, Target::Container(container), call, "kill {container}")
    }

    async fn remove(&self, container: &str) -> Result<(), EngineError> {
        let opts = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(false)
            .build();
        let call = self.docker.remove_container(container, Some(opts));
        plain_call!(
            self,
            Target::Container(container),
            call,
            "remove {container}"
        )
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
        // No label filter: adopted containers carry no label, and Podman 4.3 matches an
        // event label filter only as `key=value` (a bare key drops every event). `map_event`
        // keeps the events of containers with our label or in the adoption table.
        let filters = HashMap::from([("type", vec!["container"])]);
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
        let adopted = self.adopted.clone();
        self.docker
            .events(Some(opts))
            .filter_map(move |item| {
                let out = match item {
                    Ok(ev) => map_event(ev, &adopted).map(Ok),
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
            let info = self.inspect_container(container).await?;
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
        let call = self.docker.tag_image(image, Some(opts));
        plain_call!(self, Target::Image(image), call, "tag {image} as {new_ref}")
    }

    async fn image_remove(&self, image: &str) -> Result<(), EngineError> {
        let opts = RemoveImageOptionsBuilder::new()
            .force(false)
            .noprune(false)
            .build();
        let call = self.docker.remove_image(image, Some(opts), None);
        plain_call!(self, Target::Image(image), call, "remove image {image}").map(|_| ())
    }

    async fn inspect_foreign(&self, container: &str) -> Result<ForeignContainer, EngineError> {
        let fut = async {
            let info = self.inspect_container(container).await?;
            let image_id = info.image.clone().unwrap_or_default();
            let image = match self.docker.inspect_image(&image_id).await {
                Ok(image) => Some(image),
                Err(e) => match self.err(Target::Image(&image_id), e) {
                    EngineError::ImageNotFound { .. } => None,
                    other => return Err(other),
                },
            };
            Ok(foreign_container(info, image))
        };
        self.bounded(|| format!("inspect {container}"), self.call_timeout, fut)
            .await
    }

    fn adopt(&self, adopted: Adopted) {
        self.adopted.insert(adopted);
    }

    fn release(&self, container_id: &str) {
        self.adopted.remove(container_id);
    }

    async fn take_over(&self, container: &str, pids_limit: u32) -> Result<(), EngineError> {
        self.bounded(
            || format!("update {container}"),
            self.call_timeout,
            take_over(self, container, pids_limit),
        )
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
        let call = self.docker.rename_container(container, opts);
        plain_call!(
            self,
            Target::Container(container),
            call,
            "rename {container} to {new_name}"
        )
    }
}
