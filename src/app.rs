//! The app actor: one per catalog app. It owns the app's container lifecycle and memory
//! limit: only this actor (through the operations it spawns) changes the app's container.
//!
//! It holds the facts the user-visible state is derived from (the persisted record, what
//! the engine last reported, health, the operation in flight) and never stores a state.
//! Long work runs as a spawned future that reports back by message, so the actor keeps
//! answering while an operation runs; one operation at a time.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use actix::prelude::*;
use tokio::sync::{broadcast, Semaphore};
use tokio::time::Instant;

use crate::api::{
    self, Desired, Event, Health, Operation, OperationKind, OperationProgress, OperationStatus,
    Package,
};
use crate::catalog::CatalogApp;
use crate::engine::{
    container_name, ContainerRuntime, ContainerSpec, ContainerSummary, EngineEvent,
};
use crate::error::AppError;
use crate::health::{self, HealthTracker};
use crate::lifecycle::{self, Guard, GuardFacts, StateFacts};
use crate::ops::{self, OpEnd, OpEnv, OpParams};
use crate::planner::{self, Action, CrashPolicy, CrashTracker, Deps, Observed};
use crate::store::{AppRecord, Installed, JournalEntry, Store};

/// What the manifest asks for with the installed image, secrets rendered: the container
/// spec, its hash, and the health check.
#[derive(Clone)]
struct Wanted {
    installed: Installed,
    spec: Arc<ContainerSpec>,
    hash: String,
    health: Option<Arc<crate::manifest::HealthCheck>>,
}

/// What every app actor shares.
pub struct Shared {
    pub engine: Arc<dyn ContainerRuntime>,
    pub store: Store,
    pub default_network: String,
    pub start_slots: Arc<Semaphore>,
    pub events: broadcast::Sender<Event>,
    pub crash_policy: CrashPolicy,
}

/// Sent to the supervisor whenever the app's `Package` changes.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct PackageChanged(pub Package);

/// How many finished operations an app keeps for `operation.get`.
const KEPT_OPERATIONS: usize = 16;

/// An operation id: `<app>-<instance>-<n>`, where `instance` is drawn afresh for each
/// app actor (see [`instance_token`]). It names its app, so `operation.get` finds the app
/// without a table of operations; and it never repeats across supervisor restarts, since
/// journal entries and snapshot folders are named by it.
fn operation_id(app: &str, instance: &str, n: &str) -> String {
    format!("{app}-{instance}-{n}")
}

/// 12 random hex digits, different for every app actor ever made: a pid repeats after a
/// reboot, and a wall clock can go back (a board without a real-time clock), so neither
/// will do. Should the OS random source fail, the wall clock's nanoseconds stand in.
fn instance_token() -> String {
    let mut bytes = [0u8; 6];
    match getrandom::fill(&mut bytes) {
        Ok(()) => hex::encode(bytes),
        Err(_) => {
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            format!("{:012x}", nanos as u64 & 0xffff_ffff_ffff)
        }
    }
}

/// SHA-256 (hex) of a manifest's content, whatever its file's layout.
pub(crate) fn manifest_digest(m: &crate::manifest::AppManifest) -> String {
    use sha2::{Digest, Sha256};
    // Plain data with string keys (maps are sorted) serializes, and always alike.
    let bytes = serde_json::to_vec(m).expect("a manifest serializes");
    hex::encode(Sha256::digest(bytes))
}

/// The app an [`operation_id`] belongs to.
pub fn app_of_operation(id: &str) -> Option<&str> {
    let mut parts = id.rsplitn(3, '-');
    let (_n, _pid, app) = (parts.next()?, parts.next()?, parts.next()?);
    Some(app)
}

/// Where the manifest's `ui` page is reachable: the host port publishing `ui.port` (the
/// port itself on the host network) and the onion port forwarded to it.
fn ui_address(m: &crate::manifest::AppManifest) -> Option<api::UiAddress> {
    let ui = m.ui.as_ref()?;
    let c = &m.container;
    let published = c
        .ports
        .iter()
        .find(|p| p.container == ui.port && p.protocol == crate::manifest::Protocol::Tcp)
        .map(|p| p.host);
    let port = match c.network.as_deref() {
        Some("host") => Some(ui.port),
        _ => published,
    };
    let onion_port = m
        .onion
        .as_ref()
        .and_then(|o| o.ports.iter().find(|p| p.target == ui.port))
        .map(|p| p.onion);
    Some(api::UiAddress {
        port,
        path: ui.path.clone(),
        onion_port,
    })
}

pub struct AppActor {
    app: CatalogApp,
    shared: Arc<Shared>,
    supervisor: Recipient<PackageChanged>,
    /// Persisted facts: desired, installed, previous, journal.
    record: AppRecord,
    /// The container the engine last reported; `None` when it has none.
    observed: Option<ContainerSummary>,
    /// Health of the running container, from the probe loop or the start operation.
    health: HealthTracker,
    /// When our container last started, for health start periods.
    running_since: Option<Instant>,
    /// The operation in flight, if any; it owns the state until it ends.
    op: Option<Operation>,
    /// Recent operations, newest last.
    finished: VecDeque<Operation>,
    /// Crash restarts and their backoff; persisted in the record (`crashes`) whenever it
    /// changes, and restored from it at start.
    crash: CrashTracker,
    /// SHA-256 of the manifest, so a crash history is kept only for the manifest it
    /// happened with.
    manifest_digest: String,
    /// Whether dependencies allow a start, as the supervisor last said.
    deps: Deps,
    /// The run (container id and start time) whose exit was last handled: an exit seen
    /// both at an operation's end and by its late `die` event counts once.
    exit_handled: Option<(String, Option<String>)>,
    /// A probe is in flight (never two at once).
    probing: bool,
    /// A live memory update is on its way to the engine (never two at once; the actor
    /// keeps answering meanwhile).
    updating_memory: bool,
    /// The periodic health probe and its interval, while the manifest has a check; armed
    /// again when a catalog change adds, removes or retimes the check.
    probe_loop: Option<(std::time::Duration, SpawnHandle)>,
    /// Makes this actor's operation ids unique across restarts ([`operation_id`]).
    instance: String,
    op_counter: u64,
    /// When the last operation ended: a tick's list taken before then is stale for this
    /// app (it may still show the container as the operation found it).
    last_op_end: Option<std::time::Instant>,
    /// The container spec the manifest asks for with the installed image, its hash and
    /// the health check: computing them reads the secrets files, so ticks and probes
    /// reuse them until the manifest, the installed image or a dependency's readiness
    /// changes.
    wanted: Option<Wanted>,
    /// The last Package sent, to send only changes.
    last_sent: Option<Package>,
    /// False once the app's folder left the catalog while it stayed installed: the actor
    /// keeps running it on its last manifest, and offers no update.
    in_catalog: bool,
}

impl AppActor {
    pub fn new(
        app: CatalogApp,
        record: AppRecord,
        shared: Arc<Shared>,
        supervisor: Recipient<PackageChanged>,
    ) -> Self {
        let manifest_digest = manifest_digest(&app.manifest);
        let crash = match &record.crashes {
            Some(crashes) => CrashTracker::from_record(
                crashes,
                &manifest_digest,
                Instant::now(),
                SystemTime::now(),
                &shared.crash_policy,
            ),
            None => CrashTracker::default(),
        };
        AppActor {
            app,
            shared,
            supervisor,
            record,
            observed: None,
            health: HealthTracker::started(),
            running_since: None,
            op: None,
            finished: VecDeque::new(),
            crash,
            manifest_digest,
            exit_handled: None,
            deps: Deps::Ready,
            probing: false,
            updating_memory: false,
            probe_loop: None,
            instance: instance_token(),
            op_counter: 0,
            last_op_end: None,
            wanted: None,
            last_sent: None,
            in_catalog: true,
        }
    }

    fn id(&self) -> &str {
        self.app.manifest.id.as_str()
    }

    fn running(&self) -> bool {
        self.observed.as_ref().is_some_and(|o| o.state.is_running())
    }

    fn in_flight(&self) -> Option<OperationKind> {
        self.op.as_ref().map(|o| o.kind)
    }

    /// The state a user sees, derived from the facts.
    pub fn state(&self) -> api::AppState {
        lifecycle::derive_state(StateFacts {
            installed: self.record.installed.is_some(),
            running: self.running(),
            in_flight: self.in_flight(),
            failed: self.crash.given_up(),
            restart_pending: self.crash.restart_pending(),
        })
    }

    fn update_available(&self) -> bool {
        if !self.in_catalog {
            return false;
        }
        match &self.record.installed {
            Some(i) => {
                let m = &self.app.manifest;
                i.version != m.version || i.image != m.container.image_ref(&m.id, &m.version)
            }
            None => false,
        }
    }

    fn health(&self) -> Health {
        if self.app.manifest.container.health.is_none() || !self.running() {
            return Health::None;
        }
        self.health.health()
    }

    pub fn package(&self) -> Package {
        let m = &self.app.manifest;
        Package {
            id: m.id.to_string(),
            name: m.name.clone(),
            version: m.version.clone(),
            installed_version: self.record.installed.as_ref().map(|i| i.version.clone()),
            state: self.state(),
            desired: self.record.desired,
            health: self.health(),
            memory_limit_bytes: m.container.memory_limit.bytes(),
            image: Some(
                self.record
                    .installed
                    .as_ref()
                    .map(|i| i.image.clone())
                    .unwrap_or_else(|| m.container.image_ref(&m.id, &m.version)),
            ),
            container_id: self.observed.as_ref().map(|o| o.id.clone()),
            update_available: self.update_available(),
            dependencies: m.dependencies.iter().map(|d| d.to_string()).collect(),
            last_error: self.record.last_error.clone(),
            operation: self.op.clone().or_else(|| self.finished.back().cloned()),
            // Filled in by the supervisor, which follows the tor app's hostname files.
            onion_address: None,
            ui: ui_address(m),
            // Filled in by the supervisor, whose sampler measures every container.
            usage: None,
            restarts: 0,
        }
    }

    /// Tells the supervisor (and through it the event stream) when anything changed.
    fn publish(&mut self) {
        let pkg = self.package();
        if self.last_sent.as_ref() != Some(&pkg) {
            self.last_sent = Some(pkg.clone());
            self.supervisor.do_send(PackageChanged(pkg));
        }
    }

    fn publish_operation(&self, op: &Operation) {
        let _ = self
            .shared
            .events
            .send(Event::Operation(Box::new(op.clone())));
    }

    fn env(&self, ctx: &mut Context<Self>, op_id: &str) -> OpEnv {
        let addr = ctx.address();
        let op_id = op_id.to_string();
        OpEnv {
            engine: self.shared.engine.clone(),
            store: self.shared.store.clone(),
            app: self.app.clone(),
            default_network: self.shared.default_network.clone(),
            start_slots: self.shared.start_slots.clone(),
            progress: Arc::new(move |p: OperationProgress| {
                addr.do_send(OpProgress {
                    op_id: op_id.clone(),
                    progress: p,
                })
            }),
        }
    }

    /// Persists the record; on failure the error is logged and kept in `last_error`.
    fn save(&mut self) {
        if let Err(e) = self.try_save() {
            self.record.last_error = Some(e);
        }
    }

    fn try_save(&self) -> Result<(), String> {
        self.shared
            .store
            .save(self.id(), &self.record)
            .map_err(|e| {
                tracing::error!(app = self.id(), error = %e, "could not persist state");
                format!("could not persist state: {e}")
            })
    }

    /// Persists the crash history after it changed, so a restarted supervisor keeps a
    /// `failed` app failed and waits out a backoff in progress. While an operation runs
    /// it owns the record on disk: the history is then written when the operation ends.
    /// `disk_differs` says the file holds another history than the record in memory.
    fn remember_crashes(&mut self, disk_differs: bool) {
        let crashes =
            self.crash
                .to_record(Instant::now(), SystemTime::now(), &self.manifest_digest);
        if crashes.is_none() && self.record.crashes.is_none() && !disk_differs {
            return;
        }
        self.record.crashes = crashes;
        if self.op.is_none() && self.record.installed.is_some() {
            self.save();
        }
    }

    /// The id of this actor's `n`th operation.
    fn op_id(&self, n: u64) -> String {
        operation_id(self.id(), &self.instance, &n.to_string())
    }

    /// Starts an operation: the actor marks it in flight, the work runs as a future, and
    /// [`OpFinished`] comes back when it ends.
    fn begin(
        &mut self,
        ctx: &mut Context<Self>,
        kind: OperationKind,
        params: OpParams,
    ) -> Operation {
        self.op_counter += 1;
        let op = Operation {
            id: self.op_id(self.op_counter),
            package: self.id().to_string(),
            kind,
            status: OperationStatus::Running,
            started_at: api::now(),
            finished_at: None,
            error: None,
            progress: OperationProgress::default(),
        };
        self.op = Some(op.clone());
        let env = self.env(ctx, &op.id);
        let record = self.record.clone();
        let op_id = op.id.clone();
        let addr = ctx.address();
        tracing::info!(app = self.id(), operation = %op.id, ?kind, "operation started");
        actix::spawn(async move {
            let end = ops::run(kind, env, record, op_id.clone(), params).await;
            addr.do_send(OpFinished {
                op_id,
                end: Box::new(end),
            });
        });
        self.publish_operation(&op);
        self.publish();
        op
    }

    /// An operation that is already satisfied: answered `succeeded` at once.
    fn satisfied(&mut self, kind: OperationKind) -> Operation {
        self.op_counter += 1;
        let now = api::now();
        let op = Operation {
            id: self.op_id(self.op_counter),
            package: self.id().to_string(),
            kind,
            status: OperationStatus::Succeeded,
            started_at: now.clone(),
            finished_at: Some(now),
            error: None,
            progress: OperationProgress {
                message: "already done".into(),
                done: None,
                total: None,
            },
        };
        self.remember(op.clone());
        op
    }

    fn remember(&mut self, op: Operation) {
        self.finished.push_back(op);
        while self.finished.len() > KEPT_OPERATIONS {
            self.finished.pop_front();
        }
    }

    /// What the manifest asks for with the installed image (see [`AppActor::wanted`]).
    fn wanted_spec(&mut self, ctx: &mut Context<Self>) -> Option<Wanted> {
        let installed = self.record.installed.clone()?;
        if let Some(w) = &self.wanted {
            if w.installed == installed {
                return Some(w.clone());
            }
        }
        let env = self.env(ctx, "plan");
        match env
            .spec_for(&installed)
            .and_then(|spec| Ok((spec, env.health_check()?)))
        {
            Ok((spec, health)) => {
                let wanted = Wanted {
                    installed,
                    hash: spec.hash(),
                    spec: Arc::new(spec),
                    health: health.map(Arc::new),
                };
                self.wanted = Some(wanted.clone());
                Some(wanted)
            }
            Err(e) => {
                self.record.last_error = Some(e.to_string());
                self.wanted = None;
                None
            }
        }
    }

    /// Reconcile: plan from the facts and carry the actions out.
    fn reconcile(&mut self, ctx: &mut Context<Self>) -> usize {
        let wanted = self.wanted_spec(ctx);
        let observed = self.observed.as_ref().map(|o| Observed {
            state: o.state,
            spec_hash: o.spec_hash.clone(),
        });
        let now = Instant::now();
        let facts = planner::Facts {
            // An installed app stays installed when its spec cannot be computed: its
            // container is never taken for an orphan.
            installed: self.record.installed.is_some(),
            desired: self.record.desired,
            wanted_hash: wanted.as_ref().map(|w| w.hash.as_str()),
            wanted_memory: self.app.manifest.container.memory_limit.bytes(),
            applied_memory: self.record.memory_limit,
            observed: observed.as_ref(),
            in_flight: self.in_flight(),
            deps: &self.deps,
            backoff: self.crash.backoff(now),
            given_up: self.crash.given_up(),
        };
        let actions = planner::plan(&facts);
        for action in &actions {
            tracing::debug!(app = self.id(), ?action, "reconcile");
            match action {
                Action::Start(_) => {
                    let kind = if self.crash.restart_pending() || self.crash.quick_crashes() > 0 {
                        OperationKind::Restart
                    } else {
                        OperationKind::Start
                    };
                    self.begin(ctx, kind, OpParams::default());
                }
                Action::Recreate => {
                    self.begin(ctx, OperationKind::Restart, OpParams::default());
                }
                Action::Stop => {
                    self.begin(ctx, OperationKind::Stop, OpParams::default());
                }
                Action::UpdateMemory(bytes) => self.update_memory(ctx, *bytes),
                Action::RemoveOrphan => {
                    let engine = self.shared.engine.clone();
                    let name = container_name(self.id());
                    tracing::warn!(
                        app = self.id(),
                        "removing a container of an app that is not installed"
                    );
                    actix::spawn(async move {
                        let _ = engine.remove(&name).await;
                    });
                }
                Action::Backoff(wait) => {
                    ctx.run_later(*wait, |act, ctx| {
                        act.reconcile(ctx);
                    });
                }
                Action::WaitForDependency { .. } => {}
            }
        }
        self.publish();
        actions.len()
    }

    fn update_memory(&mut self, ctx: &mut Context<Self>, bytes: u64) {
        // A second tick while the first update is on its way sends nothing.
        if self.updating_memory {
            return;
        }
        self.updating_memory = true;
        let engine = self.shared.engine.clone();
        let name = container_name(self.id());
        let fut = async move { engine.update_memory(&name, bytes).await };
        ctx.spawn(fut.into_actor(self).map(move |res, act, _| {
            act.updating_memory = false;
            match res {
                Ok(()) => {
                    tracing::info!(app = act.id(), bytes, "memory limit applied live");
                    act.record.memory_limit = Some(bytes);
                    act.save();
                }
                Err(e) => {
                    tracing::warn!(app = act.id(), error = %e, "memory limit update failed");
                    act.record.last_error = Some(format!("memory limit update: {e}"));
                }
            }
        }));
    }

    /// The container died with nobody asking: a crash, unless the restart policy or a
    /// clean exit says the app meant to stop.
    fn on_exit(&mut self, ctx: &mut Context<Self>, exit_code: Option<i64>) {
        use crate::manifest::RestartPolicy;
        if self.in_flight().is_some() || self.record.desired != Desired::Running {
            return;
        }
        let code = exit_code.unwrap_or(-1);
        let keep_stopped = match self.app.manifest.container.restart {
            RestartPolicy::Never => true,
            RestartPolicy::OnFailure => code == 0,
            RestartPolicy::Always => false,
        };
        if keep_stopped {
            tracing::info!(
                app = self.id(),
                code,
                "container exited; restart policy keeps it stopped"
            );
            self.record.desired = Desired::Stopped;
            self.record.last_error = (code != 0).then(|| format!("exited with code {code}"));
            self.save();
            self.publish();
            return;
        }
        match self
            .crash
            .crashed(Instant::now(), &self.shared.crash_policy)
        {
            Some(wait) => {
                tracing::warn!(app = self.id(), code, backoff = ?wait, "container crashed; restarting");
                self.record.last_error = Some(format!("crashed with exit code {code}"));
                self.remember_crashes(false);
                self.reconcile(ctx);
            }
            None => {
                tracing::error!(app = self.id(), code, "container keeps crashing; giving up");
                self.record.last_error = Some(format!(
                    "crashed {} times in a row (last exit code {code}); press Retry to start it again",
                    self.crash.quick_crashes()
                ));
                self.remember_crashes(false);
                self.publish();
            }
        }
    }

    /// Runs the health probe every `interval` of the manifest's check, and not at all
    /// without one; a loop of another interval is replaced.
    fn arm_probe(&mut self, ctx: &mut Context<Self>) {
        let want = self
            .app
            .manifest
            .container
            .health
            .as_ref()
            .map(|c| c.interval);
        if self.probe_loop.as_ref().map(|(every, _)| *every) == want {
            return;
        }
        if let Some((_, handle)) = self.probe_loop.take() {
            ctx.cancel_future(handle);
        }
        if let Some(every) = want {
            let handle = ctx.run_interval(every, |act, ctx| act.probe_health(ctx));
            self.probe_loop = Some((every, handle));
        }
    }

    fn probe_health(&mut self, ctx: &mut Context<Self>) {
        if self.app.manifest.container.health.is_none() {
            return;
        }
        if self.probing || self.in_flight().is_some() || !self.running() {
            return;
        }
        // The check as the engine is to run it, secrets rendered.
        let Some(Wanted {
            spec,
            health: Some(check),
            ..
        }) = self.wanted_spec(ctx)
        else {
            return;
        };
        self.probing = true;
        let engine = self.shared.engine.clone();
        let fut = async move { health::probe(engine.as_ref(), &spec, &check).await };
        ctx.spawn(fut.into_actor(self).map(|res, act, _| {
            act.probing = false;
            let Some(check) = act.app.manifest.container.health.clone() else {
                return;
            };
            let since = act.running_since.map(|t| t.elapsed()).unwrap_or(check.start_period);
            let before = act.health.health();
            let after = act.health.record(res.is_ok(), since, &check);
            if before != after {
                tracing::info!(app = act.id(), health = ?after, reason = ?res.err(), "health changed");
            }
            act.publish();
        }));
    }
}

impl Actor for AppActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.arm_probe(ctx);
        if self.record.journal.is_some() {
            // Finish or undo what a previous supervisor left half-done, before anything
            // else touches the app.
            let kind = self
                .record
                .journal
                .as_ref()
                .map(|j| j.kind)
                .unwrap_or(OperationKind::Start);
            self.op_counter += 1;
            let op = Operation {
                id: operation_id(self.id(), &self.instance, "recover"),
                package: self.id().to_string(),
                kind,
                status: OperationStatus::Running,
                started_at: api::now(),
                finished_at: None,
                error: None,
                progress: OperationProgress {
                    message: "recovering an interrupted operation".into(),
                    done: None,
                    total: None,
                },
            };
            self.op = Some(op.clone());
            let env = self.env(ctx, &op.id);
            let record = self.record.clone();
            let addr = ctx.address();
            actix::spawn(async move {
                let end = ops::recover(&env, record).await;
                addr.do_send(OpFinished {
                    op_id: op.id,
                    end: Box::new(end),
                });
            });
        }
        self.publish();
    }
}

/// Progress of the operation in flight.
#[derive(Message)]
#[rtype(result = "()")]
struct OpProgress {
    op_id: String,
    progress: OperationProgress,
}

impl Handler<OpProgress> for AppActor {
    type Result = ();
    fn handle(&mut self, msg: OpProgress, _: &mut Context<Self>) {
        if let Some(op) = self.op.as_mut().filter(|o| o.id == msg.op_id) {
            // Keep the last known totals when a message carries none.
            let mut p = msg.progress;
            if p.total.is_none() {
                p.done = p.done.or(op.progress.done);
                p.total = op.progress.total;
            }
            op.progress = p;
            let op = op.clone();
            self.publish_operation(&op);
            self.publish();
        }
    }
}

/// The operation in flight ended.
#[derive(Message)]
#[rtype(result = "()")]
struct OpFinished {
    op_id: String,
    end: Box<OpEnd>,
}

impl Handler<OpFinished> for AppActor {
    type Result = ();
    fn handle(&mut self, msg: OpFinished, ctx: &mut Context<Self>) {
        let Some(mut op) = self.op.take().filter(|o| o.id == msg.op_id) else {
            return;
        };
        let end = *msg.end;
        // The crash history is the actor's: the operation worked on a copy taken when
        // it began, which may be older.
        let crashes = self.record.crashes.take();
        self.record = end.record;
        let crashes_stale = self.record.crashes != crashes;
        self.record.crashes = crashes;
        // An install may have made new secrets: compute the wanted spec afresh.
        self.wanted = None;
        self.last_op_end = Some(std::time::Instant::now());
        op.finished_at = Some(api::now());
        match &end.result {
            Ok(message) => {
                op.status = OperationStatus::Succeeded;
                op.progress.message = message.clone();
                tracing::info!(app = self.id(), operation = %op.id, %message, "operation succeeded");
            }
            Err(e) => {
                op.status = OperationStatus::Failed;
                op.error = Some(e.to_string());
                tracing::warn!(app = self.id(), operation = %op.id, error = %e, "operation failed");
            }
        }
        let crash_before = self.crash.clone();
        if end.started {
            self.crash.started(Instant::now());
            self.running_since = Some(Instant::now());
            self.health = HealthTracker::started();
            if let Some(h) = end.health {
                if h == Health::Healthy {
                    if let Some(check) = &self.app.manifest.container.health {
                        self.health.record(true, std::time::Duration::ZERO, check);
                    }
                }
            }
        }
        // The container this operation started has exited already (an app that fails at
        // once): its `die` came while the operation owned the app and was not counted.
        // It counts below, through the same path as a `die`, so it counts once.
        let exited = end.started && matches!(&end.observed, Some(Some(c)) if !c.state.is_running());
        if op.status == OperationStatus::Failed
            && matches!(op.kind, OperationKind::Start | OperationKind::Restart)
            && !exited
        {
            // A start that fails counts toward the crash loop, so it is retried with
            // backoff and ends `failed` instead of looping.
            self.crash
                .crashed(Instant::now(), &self.shared.crash_policy);
        }
        if crashes_stale || self.crash != crash_before {
            self.remember_crashes(crashes_stale);
        }
        self.publish_operation(&op);
        self.remember(op);
        // The package (installed version, container facts, last error) reflects the
        // operation's end before anyone can read the operation as ended.
        match end.observed {
            Some(seen) => {
                self.observed = seen;
                if exited {
                    // Counted now, or the app would be started again and again without
                    // ever ending `failed`.
                    self.confirm_exit(ctx, None);
                } else {
                    self.reconcile(ctx);
                }
            }
            None => self.refresh(ctx),
        }
        self.publish();
    }
}

impl AppActor {
    /// The container seems to have exited (`code` if the event said): confirmed with the
    /// engine before it counts as a crash, so a late event from a stop that has already
    /// ended restarts nothing. Reconciles when the container is running after all.
    fn confirm_exit(&mut self, ctx: &mut Context<Self>, code: Option<i64>) {
        let engine = self.shared.engine.clone();
        let name = container_name(self.id());
        let fut = async move { engine.inspect(&name).await };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            match res {
                Ok(d) if !d.state.is_running() => {
                    if let Some(o) = act.observed.as_mut() {
                        o.state = d.state;
                    }
                    let run = Some((d.id.clone(), d.started_at.clone()));
                    if act.exit_handled == run {
                        act.publish();
                        return;
                    }
                    // An exit seen while an operation owns the app is left to that
                    // operation's end, which looks again.
                    if act.in_flight().is_none() {
                        act.exit_handled = run;
                    }
                    act.on_exit(ctx, d.exit_code.or(code));
                    if act.in_flight().is_none() && act.record.desired != Desired::Running {
                        act.reconcile(ctx);
                    }
                }
                _ => {
                    act.reconcile(ctx);
                }
            }
            act.publish();
        }));
    }

    /// Re-reads the app's container from the engine and reconciles.
    fn refresh(&mut self, ctx: &mut Context<Self>) {
        let engine = self.shared.engine.clone();
        let app = self.id().to_string();
        let fut = async move { ops::observe(engine.as_ref(), &app).await };
        ctx.spawn(fut.into_actor(self).map(|seen, act, ctx| {
            if let Some(seen) = seen {
                act.observed = seen;
            }
            act.reconcile(ctx);
        }));
    }
}

/// A reconcile tick: what the engine's list said about this app, and whether its
/// dependencies are ready. Answers how many actions were taken.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct Observe {
    pub container: Option<ContainerSummary>,
    pub deps: Deps,
    /// When the engine call that produced `container` was sent.
    pub listed_at: std::time::Instant,
}

impl Handler<Observe> for AppActor {
    type Result = usize;
    fn handle(&mut self, msg: Observe, ctx: &mut Context<Self>) -> usize {
        self.deps = msg.deps;
        if self.last_op_end.is_some_and(|end| msg.listed_at < end) {
            // Listed before the last operation ended: read the container afresh instead of
            // planning from what the operation already changed.
            self.refresh(ctx);
            return 0;
        }
        let was_running = self.running();
        self.observed = msg.container;
        if self.running() && !was_running && self.in_flight().is_none() {
            // Adopted (or started from outside): health starts over.
            self.running_since.get_or_insert_with(Instant::now);
        }
        self.reconcile(ctx)
    }
}

/// Dependencies changed readiness.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct DepsChanged(pub Deps);

impl Handler<DepsChanged> for AppActor {
    type Result = ();
    fn handle(&mut self, msg: DepsChanged, ctx: &mut Context<Self>) {
        if self.deps != msg.0 {
            self.deps = msg.0;
            // A dependency that went away and came back may have new secrets.
            self.wanted = None;
            self.reconcile(ctx);
        }
    }
}

/// An engine event about this app's container.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ContainerEvent(pub EngineEvent);

impl Handler<ContainerEvent> for AppActor {
    type Result = ();
    fn handle(&mut self, msg: ContainerEvent, ctx: &mut Context<Self>) {
        let ev = msg.0;
        match ev.action.as_str() {
            "die" | "oom" => self.confirm_exit(ctx, ev.exit_code),
            "start" | "destroy" | "create" | "rename" if self.in_flight().is_none() => {
                self.refresh(ctx);
            }
            _ => {}
        }
    }
}

/// The app's `Package` now.
#[derive(Debug, Message)]
#[rtype(result = "Package")]
pub struct Snapshot;

impl Handler<Snapshot> for AppActor {
    type Result = MessageResult<Snapshot>;
    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.package())
    }
}

/// An operation asked for by the owner. The supervisor has checked dependencies and the
/// memory budget.
#[derive(Debug, Message)]
#[rtype(result = "Result<Operation, AppError>")]
pub struct Command {
    pub kind: OperationKind,
    pub params: OpParams,
}

impl Handler<Command> for AppActor {
    type Result = Result<Operation, AppError>;
    fn handle(&mut self, msg: Command, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(op) = &self.op {
            return Err(AppError::Conflict {
                app: self.id().to_string(),
                operation: op.id.clone(),
                kind: format!("{:?}", op.kind).to_lowercase(),
            });
        }
        let facts = GuardFacts {
            update_available: self.update_available(),
            has_previous: self.record.previous.is_some(),
        };
        let kind = msg.kind;
        match lifecycle::check(self.id(), self.state(), kind, facts)? {
            Guard::AlreadySatisfied => {
                if kind == OperationKind::Install && self.record.desired != Desired::Running {
                    self.record.desired = Desired::Running;
                    self.save();
                    self.reconcile(ctx);
                }
                return Ok(self.satisfied(kind));
            }
            Guard::Proceed => {}
        }
        // The owner's wish is persisted before the work starts; a wish that cannot be
        // stored is refused, so a restart never brings back an older one.
        let before = self.record.clone();
        if matches!(kind, OperationKind::Install | OperationKind::Uninstall) {
            // Journaled before the answer: an accepted install or uninstall is finished
            // at the next boot even when power fails before its first step.
            self.record.journal = Some(JournalEntry {
                operation: self.op_id(self.op_counter + 1),
                kind,
                step: crate::store::JournalStep::Accepted,
                started_at: api::now(),
                from: None,
                to: None,
                snapshot: None,
                purge: msg.params.purge,
            });
        }
        match kind {
            OperationKind::Start | OperationKind::Restart => {
                self.record.desired = Desired::Running;
                self.record.last_error = None;
            }
            OperationKind::Stop => {
                self.record.desired = Desired::Stopped;
            }
            _ => {}
        }
        // The owner acted: whatever the crash loop decided is forgotten, on disk too.
        self.record.crashes = None;
        if let Err(e) = self.try_save() {
            self.record = before;
            return Err(AppError::Internal(format!("{}: {e}", self.id())));
        }
        self.crash.reset();
        Ok(self.begin(ctx, kind, msg.params))
    }
}

/// Looks up one of this app's operations.
#[derive(Debug, Message)]
#[rtype(result = "Option<Operation>")]
pub struct FindOperation(pub String);

impl Handler<FindOperation> for AppActor {
    type Result = Option<Operation>;
    fn handle(&mut self, msg: FindOperation, _: &mut Context<Self>) -> Self::Result {
        self.op
            .iter()
            .chain(self.finished.iter())
            .find(|o| o.id == msg.0)
            .cloned()
    }
}

/// Sends a signal to the app's running container (the tor app reloads its onion services
/// on SIGHUP). Nothing is sent while an operation runs or when nothing runs.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Signal(pub &'static str);

impl Handler<Signal> for AppActor {
    type Result = ();
    fn handle(&mut self, msg: Signal, _: &mut Context<Self>) {
        if self.in_flight().is_some() || !self.running() {
            return;
        }
        let engine = self.shared.engine.clone();
        let name = container_name(self.id());
        let app = self.id().to_string();
        actix::spawn(async move {
            if let Err(e) = engine.kill(&name, msg.0).await {
                tracing::warn!(%app, signal = msg.0, error = %e, "signal not delivered");
            }
        });
    }
}

/// The catalog changed this app's manifest.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CatalogUpdate(pub CatalogApp);

impl Handler<CatalogUpdate> for AppActor {
    type Result = ();
    fn handle(&mut self, msg: CatalogUpdate, ctx: &mut Context<Self>) {
        if msg.0.manifest != self.app.manifest {
            self.manifest_digest = manifest_digest(&msg.0.manifest);
            if self.crash != CrashTracker::default() {
                // A new manifest (a new version, another command) may fix the crash: a
                // `failed` app or one in backoff gets a fresh start.
                tracing::info!(
                    app = self.id(),
                    "manifest changed; crash history starts over"
                );
                self.crash.reset();
                self.remember_crashes(false);
            }
        }
        self.app = msg.0;
        self.in_catalog = true;
        self.wanted = None;
        self.arm_probe(ctx);
        self.reconcile(ctx);
    }
}

/// The app's folder left the catalog. An app with nothing on the node (not installed, no
/// container, no operation in flight, no journal) stops its actor and answers `true`.
/// Otherwise the actor stays, keeps the app on its last manifest, shows no update, and
/// answers `false`: an installed app is never dropped because its folder went away.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct LeaveCatalog;

impl Handler<LeaveCatalog> for AppActor {
    type Result = bool;
    fn handle(&mut self, _: LeaveCatalog, ctx: &mut Context<Self>) -> bool {
        let on_node = self.record.installed.is_some()
            || self.record.journal.is_some()
            || self.op.is_some()
            || self.observed.is_some();
        if on_node {
            tracing::warn!(
                app = self.id(),
                "app left the catalog but is on the node; keeping it on its last manifest"
            );
            self.in_catalog = false;
            self.publish();
            return false;
        }
        tracing::info!(app = self.id(), "app left the catalog; its actor stops");
        ctx.stop();
        true
    }
}

/// Installed facts for tests and the supervisor's memory budget.
impl AppActor {
    pub fn installed(&self) -> Option<&Installed> {
        self.record.installed.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ui_address_is_the_published_port_or_the_host_networks() {
        let ui = |extra: &str, tail: &str| {
            let text = format!(
                "id: web\nname: Web\nversion: '1'\ncontainer:\n  image: busybox\n  memory_limit: 64Mi\n{extra}{tail}"
            );
            let m = crate::manifest::AppManifest::from_yaml(
                std::path::Path::new("apps/web/manifest.yml"),
                &text,
            )
            .unwrap();
            ui_address(&m).map(|u| (u.port, u.path, u.onion_port))
        };
        let page = "ui: {port: 8080, path: /app}\n";
        let cases = [
            (
                "  ports: [\"8081:8080\"]\n",
                page,
                Some((Some(8081), "/app".to_string(), None)),
            ),
            (
                "  network: host\n",
                page,
                Some((Some(8080), "/app".to_string(), None)),
            ),
            (
                "  ports: [\"9000:9000\"]\n",
                page,
                Some((None, "/app".to_string(), None)),
            ),
            (
                "  ports: [\"8081:8080/udp\"]\n",
                page,
                Some((None, "/app".to_string(), None)),
            ),
            (
                "",
                "ui: {port: 8080}\nonion: {ports: [\"80:8080\"]}\n",
                Some((None, "/".to_string(), Some(80))),
            ),
            ("  ports: [\"8081:8080\"]\n", "", None),
        ];
        for (extra, tail, want) in cases {
            assert_eq!(ui(extra, tail), want, "{extra}{tail}");
        }
    }

    #[test]
    fn an_operation_id_names_its_app() {
        for app in ["lnd", "mempool-api", "a-b-c"] {
            for n in ["1", "42", "recover"] {
                let id = operation_id(app, &instance_token(), n);
                assert_eq!(app_of_operation(&id), Some(app), "{id}");
            }
        }
        // Ids written before the instance token (`<app>-<pid>-<n>`) still name their app.
        assert_eq!(app_of_operation("lnd-4242-7"), Some("lnd"));
        assert_eq!(app_of_operation("nodashes"), None);
        assert_eq!(app_of_operation("one-dash"), None);
    }
}
