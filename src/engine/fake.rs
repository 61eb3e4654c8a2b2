//! A recording, in-memory [`ContainerRuntime`] for unit tests of the layers above.
//!
//! It keeps containers and images in a map, records every call as a [`Call`], can be told
//! to fail the next call of a kind, to take a while to stop (with `tokio::time::sleep`, so
//! tests under `tokio::time::pause` stay instant), to crash an app (a `die` event on the
//! event stream) and to be unreachable. It does not model the engine's every rule, only
//! the ones the supervisor relies on.
//!
//! Over 600 lines because it is one `impl ContainerRuntime` (an impl block cannot be
//! split across files) with its own tests; compiled for unit tests only.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::sync::broadcast;

use super::{
    container_name, BuildRequest, ContainerDetails, ContainerRuntime, ContainerSpec,
    ContainerSummary, EngineError, EngineEvent, EngineVersion, ExecOutput, ImageInfo, Progress,
    ProgressSink, RunState, LABEL_APP, LABEL_SPEC_HASH, LABEL_VERSION,
};

/// The host name the fake reports in [`EngineError::Unreachable`].
pub const FAKE_HOST: &str = "fake://engine";

/// One call made on the fake, with the arguments that matter to assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Version,
    List,
    Inspect(String),
    Pull(String),
    /// The build's tag.
    Build(String),
    Create {
        app: String,
        spec_hash: String,
    },
    Start(String),
    Stop(String, Duration),
    Kill(String, String),
    Remove(String),
    Exec(String, Vec<String>),
    Logs(String, usize),
    Events,
    UpdateMemory(String, u64),
    ImageInspect(String),
    ImageTag(String, String),
    ImageRemove(String),
    Rename(String, String),
    EnsureNetwork(String),
}

/// The kind of a [`Call`], without its arguments: what [`FakeRuntime::fail_next`] matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallKind {
    Version,
    List,
    Inspect,
    Pull,
    Build,
    Create,
    Start,
    Stop,
    Kill,
    Remove,
    Exec,
    Logs,
    Events,
    UpdateMemory,
    ImageInspect,
    ImageTag,
    ImageRemove,
    Rename,
    EnsureNetwork,
}

impl Call {
    /// This call's kind.
    pub fn kind(&self) -> CallKind {
        match self {
            Call::Version => CallKind::Version,
            Call::List => CallKind::List,
            Call::Inspect(_) => CallKind::Inspect,
            Call::Pull(_) => CallKind::Pull,
            Call::Build(_) => CallKind::Build,
            Call::Create { .. } => CallKind::Create,
            Call::Start(_) => CallKind::Start,
            Call::Stop(..) => CallKind::Stop,
            Call::Kill(..) => CallKind::Kill,
            Call::Remove(_) => CallKind::Remove,
            Call::Exec(..) => CallKind::Exec,
            Call::Logs(..) => CallKind::Logs,
            Call::Events => CallKind::Events,
            Call::UpdateMemory(..) => CallKind::UpdateMemory,
            Call::ImageInspect(_) => CallKind::ImageInspect,
            Call::ImageTag(..) => CallKind::ImageTag,
            Call::ImageRemove(_) => CallKind::ImageRemove,
            Call::Rename(..) => CallKind::Rename,
            Call::EnsureNetwork(_) => CallKind::EnsureNetwork,
        }
    }
}

/// A container as the fake holds it: what inspect answers, and the spec it was made from.
/// It reads as its [`ContainerDetails`] (`c.state`, `c.exit_code`), whose `started_at`
/// takes a fresh value on every start, so tests can tell a restart from none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeContainer {
    pub spec: ContainerSpec,
    pub details: ContainerDetails,
}

impl std::ops::Deref for FakeContainer {
    type Target = ContainerDetails;

    fn deref(&self) -> &ContainerDetails {
        &self.details
    }
}

impl std::ops::DerefMut for FakeContainer {
    fn deref_mut(&mut self) -> &mut ContainerDetails {
        &mut self.details
    }
}

impl FakeContainer {
    fn summary(&self) -> ContainerSummary {
        ContainerSummary {
            id: self.id.clone(),
            name: self.name.clone(),
            app: self.spec.app.clone(),
            spec_hash: self.labels.get(LABEL_SPEC_HASH).cloned(),
            version: self.labels.get(LABEL_VERSION).cloned(),
            image: self.spec.image.clone(),
            state: self.state,
        }
    }
}

#[derive(Default)]
struct State {
    containers: BTreeMap<String, FakeContainer>,
    images: BTreeSet<String>,
    /// Images a pull can fetch.
    registry: BTreeSet<String>,
    calls: Vec<Call>,
    failures: HashMap<CallKind, VecDeque<EngineError>>,
    unreachable: bool,
    stop_delay: Duration,
    exec_results: HashMap<String, ExecOutput>,
    logs: HashMap<String, Vec<String>>,
    /// Files of every container's filesystem, by path.
    files: HashMap<String, Vec<u8>>,
    /// Counter for ids and start stamps.
    clock: u64,
    /// User-defined networks that exist.
    networks: BTreeSet<String>,
}

impl State {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Finds a container by name or id.
    fn find_key(&self, container: &str) -> Result<String, EngineError> {
        if self.containers.contains_key(container) {
            return Ok(container.to_string());
        }
        self.containers
            .values()
            .find(|c| c.id == container)
            .map(|c| c.name.clone())
            .ok_or_else(|| EngineError::ContainerNotFound {
                container: container.to_string(),
            })
    }

    /// Like [`State::find_key`], for a call that needs the container running.
    fn running_key(&self, container: &str) -> Result<String, EngineError> {
        let key = self.find_key(container)?;
        if !self.containers[&key].state.is_running() {
            return Err(EngineError::Other {
                target: container.to_string(),
                reason: "container is not running".to_string(),
            });
        }
        Ok(key)
    }
}

/// The in-memory engine. Cheap to share behind an `Arc`.
pub struct FakeRuntime {
    state: Mutex<State>,
    events: broadcast::Sender<EngineEvent>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeRuntime {
    /// An empty, reachable engine with no images.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(256);
        FakeRuntime {
            state: Mutex::new(State::default()),
            events,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock only happens inside a failing test; the state is
        // still usable for its report.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Every call so far, and forgets them.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.lock().calls)
    }

    /// Makes the next call of `kind` fail with `err` (queued: several can be lined up).
    pub fn fail_next(&self, kind: CallKind, err: EngineError) {
        self.lock().failures.entry(kind).or_default().push_back(err);
    }

    /// While set, every call fails with [`EngineError::Unreachable`] and the event stream
    /// yields that error and ends.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.lock().unreachable = unreachable;
    }

    /// How long a stop of a running container takes (capped by the stop's timeout, after
    /// which the container is killed with exit code 137).
    pub fn set_stop_delay(&self, delay: Duration) {
        self.lock().stop_delay = delay;
    }

    /// Replaces the set of local images.
    pub fn set_images<I: IntoIterator<Item = S>, S: Into<String>>(&self, images: I) {
        self.lock().images = images.into_iter().map(Into::into).collect();
    }

    /// Replaces the set of images a pull can fetch.
    pub fn set_registry<I: IntoIterator<Item = S>, S: Into<String>>(&self, images: I) {
        self.lock().registry = images.into_iter().map(Into::into).collect();
    }

    /// The local images.
    pub fn images(&self) -> BTreeSet<String> {
        self.lock().images.clone()
    }

    /// What `exec` in `container` (name) returns; default exit code 0 and no output.
    pub fn set_exec_result(&self, container: &str, out: ExecOutput) {
        self.lock().exec_results.insert(container.to_string(), out);
    }

    /// The log lines of `container` (name).
    /// A file every container's filesystem holds, for [`ContainerRuntime::read_file`].
    pub fn set_file(&self, path: &str, content: &[u8]) {
        self.lock().files.insert(path.to_string(), content.to_vec());
    }

    pub fn set_logs(&self, container: &str, lines: Vec<String>) {
        self.lock().logs.insert(container.to_string(), lines);
    }

    /// A snapshot of one container, by name or id.
    pub fn container(&self, container: &str) -> Option<FakeContainer> {
        let st = self.lock();
        let key = st.find_key(container).ok()?;
        st.containers.get(&key).cloned()
    }

    /// A snapshot of every container, by name.
    pub fn containers(&self) -> BTreeMap<String, FakeContainer> {
        self.lock().containers.clone()
    }

    /// Simulates the app's process dying on its own: the container exits with
    /// `exit_code` and a `die` event goes out. Returns false when the app has no running
    /// container.
    pub fn crash(&self, app: &str, exit_code: i64) -> bool {
        let mut st = self.lock();
        let stamp = st.tick();
        let Some(c) = st.containers.get_mut(&container_name(app)) else {
            return false;
        };
        if !c.state.is_running() {
            return false;
        }
        c.state = RunState::Exited;
        c.exit_code = Some(exit_code);
        c.finished_at = Some(format!("fake-time-{stamp}"));
        let id = c.id.clone();
        drop(st);
        self.emit(&id, app, "die", Some(exit_code));
        true
    }

    fn emit(&self, id: &str, app: &str, action: &str, exit_code: Option<i64>) {
        // No subscriber is fine: events are fire-and-forget.
        let _ = self.events.send(EngineEvent {
            container_id: id.to_string(),
            app: app.to_string(),
            action: action.to_string(),
            exit_code,
        });
    }

    /// Records the call and returns the failure it was told to produce, if any.
    fn enter(&self, call: Call) -> Result<(), EngineError> {
        let mut st = self.lock();
        let kind = call.kind();
        st.calls.push(call);
        if st.unreachable {
            return Err(EngineError::Unreachable {
                host: FAKE_HOST.to_string(),
                reason: "set unreachable".to_string(),
            });
        }
        match st.failures.get_mut(&kind).and_then(VecDeque::pop_front) {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Marks a container exited and emits the matching events.
    fn exit(&self, key: &str, exit_code: i64, actions: &[&str]) {
        let mut st = self.lock();
        let stamp = st.tick();
        let Some(c) = st.containers.get_mut(key) else {
            return;
        };
        c.state = RunState::Exited;
        c.exit_code = Some(exit_code);
        c.finished_at = Some(format!("fake-time-{stamp}"));
        let (id, app) = (c.id.clone(), c.spec.app.clone());
        drop(st);
        for action in actions {
            let code = (*action == "die").then_some(exit_code);
            self.emit(&id, &app, action, code);
        }
    }
}

#[async_trait::async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn version(&self) -> Result<EngineVersion, EngineError> {
        self.enter(Call::Version)?;
        Ok(EngineVersion {
            version: "fake".to_string(),
            api_version: "1.41".to_string(),
        })
    }

    async fn list(&self) -> Result<Vec<ContainerSummary>, EngineError> {
        self.enter(Call::List)?;
        Ok(self
            .lock()
            .containers
            .values()
            .map(FakeContainer::summary)
            .collect())
    }

    async fn inspect(&self, container: &str) -> Result<ContainerDetails, EngineError> {
        self.enter(Call::Inspect(container.to_string()))?;
        let st = self.lock();
        let key = st.find_key(container)?;
        Ok(st.containers[&key].details.clone())
    }

    async fn pull(&self, image: &str, progress: ProgressSink<'_>) -> Result<(), EngineError> {
        self.enter(Call::Pull(image.to_string()))?;
        let found = {
            let mut st = self.lock();
            let found = st.registry.contains(image);
            if found {
                st.images.insert(image.to_string());
            }
            found
        };
        if !found {
            return Err(EngineError::ImageNotFound {
                image: image.to_string(),
            });
        }
        progress(Progress {
            message: format!("Pulling {image}"),
            done: Some(0),
            total: Some(100),
        });
        progress(Progress {
            message: format!("Downloaded newer image for {image}"),
            done: Some(100),
            total: Some(100),
        });
        Ok(())
    }

    async fn build(
        &self,
        req: &BuildRequest,
        progress: ProgressSink<'_>,
    ) -> Result<(), EngineError> {
        self.enter(Call::Build(req.tag.clone()))?;
        progress(Progress {
            message: format!("Successfully tagged {}", req.tag),
            done: None,
            total: None,
        });
        self.lock().images.insert(req.tag.clone());
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, EngineError> {
        let hash = spec.hash();
        self.enter(Call::Create {
            app: spec.app.clone(),
            spec_hash: hash.clone(),
        })?;
        let name = container_name(&spec.app);
        let mut st = self.lock();
        if st.containers.contains_key(&name) {
            return Err(EngineError::NameConflict { container: name });
        }
        if !st.images.contains(&spec.image) {
            return Err(EngineError::ImageNotFound {
                image: spec.image.clone(),
            });
        }
        let id = format!("fake{:012}", st.tick());
        let labels = BTreeMap::from([
            (LABEL_APP.to_string(), spec.app.clone()),
            (LABEL_VERSION.to_string(), spec.version.clone()),
            (LABEL_SPEC_HASH.to_string(), hash),
        ]);
        st.containers.insert(
            name.clone(),
            FakeContainer {
                spec: spec.clone(),
                details: ContainerDetails {
                    id: id.clone(),
                    name,
                    image: spec.image.clone(),
                    labels,
                    state: RunState::Created,
                    exit_code: None,
                    started_at: None,
                    finished_at: None,
                    memory_limit: spec.memory_limit,
                    oom_killed: false,
                    pid: None,
                    user: spec.user.clone().unwrap_or_default(),
                },
            },
        );
        drop(st);
        self.emit(&id, &spec.app, "create", None);
        Ok(id)
    }

    async fn start(&self, container: &str) -> Result<(), EngineError> {
        self.enter(Call::Start(container.to_string()))?;
        let mut st = self.lock();
        let key = st.find_key(container)?;
        let stamp = st.tick();
        let c = st
            .containers
            .get_mut(&key)
            .expect("find_key returned a present key under the same lock");
        if c.state.is_running() {
            return Ok(());
        }
        c.state = RunState::Running;
        c.exit_code = None;
        c.started_at = Some(format!("fake-time-{stamp}"));
        let (id, app) = (c.id.clone(), c.spec.app.clone());
        drop(st);
        self.emit(&id, &app, "start", None);
        Ok(())
    }

    async fn stop(&self, container: &str, timeout: Duration) -> Result<(), EngineError> {
        self.enter(Call::Stop(container.to_string(), timeout))?;
        let (key, running, delay) = {
            let st = self.lock();
            let key = st.find_key(container)?;
            let running = st.containers[&key].state.is_running();
            (key, running, st.stop_delay)
        };
        if !running {
            return Ok(());
        }
        if delay > timeout {
            tokio::time::sleep(timeout).await;
            self.exit(&key, 137, &["kill", "die", "stop"]);
        } else {
            tokio::time::sleep(delay).await;
            self.exit(&key, 0, &["kill", "die", "stop"]);
        }
        Ok(())
    }

    async fn kill(&self, container: &str, signal: &str) -> Result<(), EngineError> {
        self.enter(Call::Kill(container.to_string(), signal.to_string()))?;
        let key = self.lock().running_key(container)?;
        let code = match signal.trim_start_matches("SIG") {
            "TERM" | "15" => 143,
            "INT" | "2" => 130,
            _ => 137,
        };
        self.exit(&key, code, &["kill", "die"]);
        Ok(())
    }

    async fn remove(&self, container: &str) -> Result<(), EngineError> {
        self.enter(Call::Remove(container.to_string()))?;
        let mut st = self.lock();
        let key = st.find_key(container)?;
        let c = st
            .containers
            .remove(&key)
            .expect("find_key returned a present key under the same lock");
        drop(st);
        if c.state.is_running() {
            self.emit(&c.id, &c.spec.app, "kill", None);
            self.emit(&c.id, &c.spec.app, "die", Some(137));
        }
        self.emit(&c.id, &c.spec.app, "destroy", None);
        Ok(())
    }

    async fn exec(
        &self,
        container: &str,
        cmd: &[String],
        _timeout: Duration,
    ) -> Result<ExecOutput, EngineError> {
        self.enter(Call::Exec(container.to_string(), cmd.to_vec()))?;
        let st = self.lock();
        let key = st.running_key(container)?;
        Ok(st.exec_results.get(&key).cloned().unwrap_or(ExecOutput {
            exit_code: 0,
            output: String::new(),
        }))
    }

    async fn logs(&self, container: &str, tail: usize) -> Result<Vec<String>, EngineError> {
        self.enter(Call::Logs(container.to_string(), tail))?;
        let st = self.lock();
        let key = st.find_key(container)?;
        let lines = st.logs.get(&key).cloned().unwrap_or_default();
        let skip = lines.len().saturating_sub(tail);
        Ok(lines.into_iter().skip(skip).collect())
    }

    fn events(&self) -> BoxStream<'static, Result<EngineEvent, EngineError>> {
        if let Err(err) = self.enter(Call::Events) {
            return stream::once(async move { Err(err) }).boxed();
        }
        let rx = self.events.subscribe();
        stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => return Some((Ok(ev), rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed()
    }

    async fn update_memory(&self, container: &str, bytes: u64) -> Result<(), EngineError> {
        self.enter(Call::UpdateMemory(container.to_string(), bytes))?;
        let mut st = self.lock();
        let key = st.find_key(container)?;
        let c = st
            .containers
            .get_mut(&key)
            .expect("find_key returned a present key under the same lock");
        c.memory_limit = bytes;
        Ok(())
    }

    async fn image_inspect(&self, image: &str) -> Result<Option<ImageInfo>, EngineError> {
        self.enter(Call::ImageInspect(image.to_string()))?;
        Ok(self.lock().images.contains(image).then(|| ImageInfo {
            id: format!("sha256:fake-{image}"),
            tags: vec![image.to_string()],
        }))
    }

    async fn image_tag(&self, image: &str, new_ref: &str) -> Result<(), EngineError> {
        self.enter(Call::ImageTag(image.to_string(), new_ref.to_string()))?;
        let mut st = self.lock();
        if !st.images.contains(image) {
            return Err(EngineError::ImageNotFound {
                image: image.to_string(),
            });
        }
        st.images.insert(new_ref.to_string());
        Ok(())
    }

    async fn image_remove(&self, image: &str) -> Result<(), EngineError> {
        self.enter(Call::ImageRemove(image.to_string()))?;
        if self.lock().images.remove(image) {
            Ok(())
        } else {
            Err(EngineError::ImageNotFound {
                image: image.to_string(),
            })
        }
    }

    async fn ensure_network(&self, name: &str) -> Result<bool, EngineError> {
        self.enter(Call::EnsureNetwork(name.to_string()))?;
        Ok(self.lock().networks.insert(name.to_string()))
    }

    /// Every container of the fake has the files given to [`FakeRuntime::set_file`].
    async fn read_file(&self, container: &str, path: &str) -> Result<Option<Vec<u8>>, EngineError> {
        let state = self.lock();
        state.find_key(container)?;
        Ok(state.files.get(path).cloned())
    }

    async fn rename(&self, container: &str, new_name: &str) -> Result<(), EngineError> {
        self.enter(Call::Rename(container.to_string(), new_name.to_string()))?;
        let mut state = self.lock();
        let key = state.find_key(container)?;
        if state.containers.contains_key(new_name) {
            return Err(EngineError::NameConflict {
                container: new_name.to_string(),
            });
        }
        // The key was just found, so the entry exists.
        let mut c = state.containers.remove(&key).expect("found above");
        c.name = new_name.to_string();
        state.containers.insert(new_name.to_string(), c);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::EngineErrorKind;

    const IMAGE: &str = "archipelago/demo:1";

    fn spec(app: &str) -> ContainerSpec {
        ContainerSpec {
            app: app.into(),
            version: "1".into(),
            image: IMAGE.into(),
            env: BTreeMap::new(),
            command: None,
            entrypoint: None,
            user: None,
            ports: vec![],
            binds: vec![],
            network: "none".into(),
            memory_limit: 64 << 20,
            stop_timeout: Duration::from_secs(10),
            cap_add: vec![],
            cap_drop: vec![],
            pids_limit: 4096,
            group_add: vec![],
        }
    }

    fn fake() -> FakeRuntime {
        let f = FakeRuntime::new();
        f.set_images([IMAGE]);
        f
    }

    fn no_progress(_: Progress) {}

    #[tokio::test]
    async fn create_start_list_records_calls() {
        let f = fake();
        let id = f.create(&spec("demo")).await.expect("create");
        f.start("archipelago-demo").await.expect("start");
        let list = f.list().await.expect("list");
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].id, id);
        assert_eq!(list[0].app, "demo");
        assert_eq!(list[0].state, RunState::Running);
        assert_eq!(list[0].spec_hash, Some(spec("demo").hash()));
        assert_eq!(list[0].version.as_deref(), Some("1"));
        assert_eq!(
            f.take_calls(),
            vec![
                Call::Create {
                    app: "demo".into(),
                    spec_hash: spec("demo").hash()
                },
                Call::Start("archipelago-demo".into()),
                Call::List,
            ]
        );
        assert!(f.calls().is_empty());
    }

    #[tokio::test]
    async fn create_errors() {
        let f = fake();
        f.create(&spec("demo")).await.expect("create");
        let err = f.create(&spec("demo")).await.expect_err("second create");
        assert_eq!(err.kind(), EngineErrorKind::NameConflict);
        let mut s = spec("other");
        s.image = "missing:1".into();
        let err = f.create(&s).await.expect_err("missing image");
        assert_eq!(err.kind(), EngineErrorKind::ImageNotFound);
        let err = f.start("archipelago-nope").await.expect_err("start");
        assert_eq!(err.kind(), EngineErrorKind::ContainerNotFound);
    }

    #[tokio::test]
    async fn fail_next_fails_once() {
        let f = fake();
        f.fail_next(
            CallKind::List,
            EngineError::Other {
                target: "list".into(),
                reason: "boom".into(),
            },
        );
        assert_eq!(
            f.list().await.expect_err("first").kind(),
            EngineErrorKind::Other
        );
        assert!(f.list().await.is_ok());
        assert_eq!(f.calls(), vec![Call::List, Call::List]);
    }

    #[tokio::test]
    async fn unreachable_fails_everything() {
        let f = fake();
        f.set_unreachable(true);
        assert_eq!(
            f.version().await.expect_err("version").kind(),
            EngineErrorKind::Unreachable
        );
        let mut ev = f.events();
        let first = ev.next().await.expect("one item");
        assert_eq!(
            first.expect_err("error").kind(),
            EngineErrorKind::Unreachable
        );
        assert!(ev.next().await.is_none());
        f.set_unreachable(false);
        assert!(f.version().await.is_ok());
    }

    // Real but short sleeps: the crate's tokio has no `test-util`, so no `pause` here;
    // the fake sleeps with `tokio::time::sleep`, which a paused clock does skip.
    #[tokio::test]
    async fn stop_delay_and_timeout() {
        let f = fake();
        f.create(&spec("demo")).await.expect("create");
        let ms = Duration::from_millis;
        // (how long the app takes to stop, the grace it gets, its exit code): one that
        // stops in time exits 0; one that outlasts the grace is killed, 137.
        for (delay, grace, code) in [(ms(100), ms(30_000), 0), (ms(30_000), ms(50), 137)] {
            f.start("archipelago-demo").await.expect("start");
            f.set_stop_delay(delay);
            let t0 = tokio::time::Instant::now();
            f.stop("archipelago-demo", grace).await.expect("stop");
            let took = t0.elapsed();
            assert!(
                took >= delay.min(grace) && took < Duration::from_secs(5),
                "{took:?}"
            );
            let c = f.container("archipelago-demo").expect("exists");
            assert_eq!((c.state, c.exit_code), (RunState::Exited, Some(code)));
        }
    }

    #[tokio::test]
    async fn crash_sends_die_event() {
        let f = Arc::new(fake());
        let mut ev = f.events();
        let id = f.create(&spec("demo")).await.expect("create");
        f.start(&id).await.expect("start by id");
        let first_start = f.container(&id).expect("exists").details.started_at;
        assert!(f.crash("demo", 1));
        assert!(!f.crash("demo", 1), "already dead");
        assert!(!f.crash("nope", 1));
        let actions: Vec<(String, Option<i64>)> = ev
            .by_ref()
            .take(3)
            .map(|e| {
                let e = e.expect("event");
                assert_eq!((e.app.as_str(), e.container_id.as_str()), ("demo", &*id));
                (e.action, e.exit_code)
            })
            .collect()
            .await;
        assert_eq!(
            actions,
            vec![
                ("create".into(), None),
                ("start".into(), None),
                ("die".into(), Some(1)),
            ]
        );
        f.start(&id).await.expect("restart");
        assert_ne!(f.container(&id).expect("exists").started_at, first_start);
    }

    #[tokio::test]
    async fn memory_exec_logs_images() {
        let f = fake();
        f.create(&spec("demo")).await.expect("create");
        let err = f
            .exec("archipelago-demo", &["true".into()], Duration::from_secs(1))
            .await
            .expect_err("not running");
        assert_eq!(err.kind(), EngineErrorKind::Other);
        f.start("archipelago-demo").await.expect("start");
        let before = f.inspect("archipelago-demo").await.expect("inspect");
        f.update_memory("archipelago-demo", 128 << 20)
            .await
            .expect("update");
        let after = f.inspect("archipelago-demo").await.expect("inspect");
        assert_eq!(after.memory_limit, 128 << 20);
        assert_eq!(after.started_at, before.started_at);

        f.set_exec_result(
            "archipelago-demo",
            ExecOutput {
                exit_code: 3,
                output: "x\n".into(),
            },
        );
        let out = f
            .exec("archipelago-demo", &["sh".into()], Duration::from_secs(1))
            .await
            .expect("exec");
        assert_eq!(out.exit_code, 3);

        f.set_logs("archipelago-demo", vec!["a".into(), "b".into(), "c".into()]);
        assert_eq!(
            f.logs("archipelago-demo", 2).await.expect("logs"),
            vec!["b".to_string(), "c".to_string()]
        );

        assert!(f.image_inspect(IMAGE).await.expect("inspect").is_some());
        assert!(f.image_inspect("x:1").await.expect("inspect").is_none());
        f.image_tag(IMAGE, "archipelago/demo:prev")
            .await
            .expect("tag");
        f.image_remove(IMAGE).await.expect("remove");
        assert_eq!(
            f.images(),
            BTreeSet::from(["archipelago/demo:prev".to_string()])
        );
        let err = f.image_remove(IMAGE).await.expect_err("gone");
        assert_eq!(err.kind(), EngineErrorKind::ImageNotFound);
    }

    #[tokio::test]
    async fn pull_from_registry_only() {
        let f = FakeRuntime::new();
        f.set_registry(["a:1"]);
        f.pull("a:1", &no_progress).await.expect("pull");
        assert!(f.images().contains("a:1"));
        let err = f.pull("b:1", &no_progress).await.expect_err("missing");
        assert_eq!(err.kind(), EngineErrorKind::ImageNotFound);
    }

    #[tokio::test]
    async fn kill_and_remove() {
        let f = fake();
        f.create(&spec("demo")).await.expect("create");
        f.start("archipelago-demo").await.expect("start");
        f.kill("archipelago-demo", "SIGTERM").await.expect("kill");
        let c = f.container("archipelago-demo").expect("exists");
        assert_eq!(c.exit_code, Some(143));
        f.remove("archipelago-demo").await.expect("remove");
        assert!(f.containers().is_empty());
        let err = f.remove("archipelago-demo").await.expect_err("gone");
        assert_eq!(err.kind(), EngineErrorKind::ContainerNotFound);
    }
}
