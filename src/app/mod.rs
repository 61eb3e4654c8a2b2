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

mod observe;
mod operations;
mod probe;
#[cfg(test)]
mod tests;

pub use observe::{
    CatalogUpdate, ContainerEvent, DepsChanged, LeaveCatalog, Observe, Signal, Snapshot,
};
use operations::OpFinished;
pub use operations::{Command, FindOperation};

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
        // An adopted container carries no labels: the engine layer must know it before
        // the first tick lists the containers.
        if let (Some(adopted), Some(installed)) = (&record.adopted, &record.installed) {
            shared.engine.adopt(crate::engine::Adopted {
                container_id: adopted.container_id.clone(),
                app: app.manifest.id.to_string(),
                spec_hash: adopted.spec_hash.clone(),
                version: installed.version.clone(),
            });
        }
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
            let id = operation_id(self.id(), &self.instance, "recover");
            let progress = OperationProgress {
                message: "recovering an interrupted operation".into(),
                done: None,
                total: None,
            };
            let op = self.hold_operation(id, kind, progress);
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

/// Installed facts for tests and the supervisor's memory budget.
impl AppActor {
    pub fn installed(&self) -> Option<&Installed> {
        self.record.installed.as_ref()
    }
}
