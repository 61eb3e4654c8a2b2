//! The supervisor actor: owns the app actors, schedules reconcile ticks, routes engine
//! events to the app they concern, and answers the web layer's questions.
//!
//! The messages of `messages.rs` are the whole interface the web layer uses: each RPC
//! becomes one of them, and the answer comes back at once (an operation is answered when
//! it starts, not when it ends).
//!
//! One concern per file: this one holds the actor, its start, the reconcile tick and the
//! packages the app actors report; `messages` (the web layer's messages and their
//! answers), `events` (the engine's event stream), `catalog_watch` (noticing and applying
//! catalog edits), `onion_sync` (the tor app's onion services), `sampling` (the usage
//! sampler's schedule and the node summary) and `tests`.

use actix::prelude::*;
use tokio::sync::broadcast;

use crate::api::{Event, Operation, OperationKind, Package, ServerStatus};
use crate::error::AppError;

mod catalog_watch;
mod events;
mod messages;
mod onion_sync;
mod sampling;
#[cfg(test)]
mod tests;

pub use catalog_watch::CatalogFingerprint;
pub use messages::*;

use events::engine_events;
use sampling::{rand_u16, Sampling};

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::admission::{self, Ledger};
use crate::api::{
    AppState, DiskStatus, EngineStatus, Health, MemoryStatus, ReconcileStatus, Usage,
};
use crate::app::{
    self, AppActor, Command, DepsChanged, FindOperation, Observe, PackageChanged, Shared,
};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::engine::{ContainerRuntime, ContainerSummary, EngineErrorKind};
use crate::manifest::AppId;
use crate::onion;
use crate::ops::OpParams;
use crate::planner::{CrashPolicy, Deps};
use crate::store::Store;
use crate::usage;

/// How many apps may be starting at once.
pub const START_PARALLELISM: usize = 4;

/// The supervisor actor.
pub struct Supervisor {
    apps_dir: PathBuf,
    reconcile_interval: Duration,
    default_apps: Vec<AppId>,
    memory_budget: Option<u64>,
    /// Memory reserved by operations admitted and not yet seen ended: written when an
    /// operation is admitted, so the next request is decided with it.
    ledger: Ledger,
    catalog: Catalog,
    shared: Arc<Shared>,
    /// One actor per catalog app.
    actors: BTreeMap<String, Addr<AppActor>>,
    /// The last `Package` each app reported: `package.list` answers from here at once,
    /// whatever the app actors are doing.
    packages: BTreeMap<String, Package>,
    engine_status: EngineStatus,
    /// The current engine outage was logged already.
    engine_lost_logged: bool,
    last_reconcile: ReconcileStatus,
    /// A tick is running (ticks never overlap).
    ticking: bool,
    first_boot: bool,
    /// What `apps_dir` looked like when the catalog was last read; a tick that sees it
    /// differ reloads the catalog.
    catalog_seen: CatalogFingerprint,
    /// A look at `apps_dir` is running on the blocking pool (never two at once).
    catalog_checking: bool,
    /// Onion services: the tor app, what was last written to its services file, and the
    /// addresses tor wrote.
    onion: OnionState,
    /// What the apps use, as the background sampler last measured it.
    sampling: Sampling,
}

/// The supervisor's side of the onion services (see [`crate::onion`]).
#[derive(Debug, Default)]
struct OnionState {
    tor_app: String,
    /// The services file as last written (or found unchanged); `None` before the first.
    written: Option<String>,
    /// App id → address, as read from tor's hostname files.
    addresses: BTreeMap<String, String>,
    /// A write or read is running on the blocking pool.
    busy: bool,
    /// Apps being uninstalled with purge: their service keys go once the uninstall ended.
    purging: std::collections::BTreeSet<String>,
}

impl Supervisor {
    /// Builds the supervisor from a loaded config and catalog. Nothing runs until the
    /// actor starts.
    pub fn new(
        config: &Config,
        catalog: Catalog,
        engine: Arc<dyn ContainerRuntime>,
        store: Store,
    ) -> Result<Self, crate::store::StoreError> {
        // Onion services live in the tor app's volume: every user of the store knows where.
        let store = store.with_tor_app(config.tor_app.as_str());
        let first_boot = store.is_first_boot()?;
        let (events, _) = broadcast::channel(1024);
        Ok(Supervisor {
            apps_dir: config.apps_dir.clone(),
            reconcile_interval: config.reconcile_interval,
            default_apps: config.default_apps.clone(),
            memory_budget: config.memory_budget.map(|m| m.bytes()),
            ledger: Ledger::default(),
            catalog,
            shared: Arc::new(Shared {
                engine,
                store,
                default_network: config.engine.default_network.clone(),
                start_slots: Arc::new(Semaphore::new(START_PARALLELISM)),
                events,
                crash_policy: CrashPolicy::default(),
            }),
            actors: BTreeMap::new(),
            packages: BTreeMap::new(),
            engine_status: EngineStatus::default(),
            engine_lost_logged: false,
            last_reconcile: ReconcileStatus::default(),
            ticking: false,
            first_boot,
            catalog_seen: CatalogFingerprint::of(&config.apps_dir),
            catalog_checking: false,
            onion: OnionState {
                tor_app: config.tor_app.to_string(),
                ..OnionState::default()
            },
            sampling: Sampling::default(),
        })
    }

    /// Overrides the crash-restart policy (tests use short backoffs).
    pub fn with_crash_policy(mut self, policy: CrashPolicy) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.crash_policy = policy;
        }
        self
    }

    fn spawn_app(&mut self, id: &AppId, ctx: &mut Context<Self>) {
        let Some(app) = self.catalog.get(id).cloned() else {
            return;
        };
        let record = match self.shared.store.load(id.as_str()) {
            Ok(Some(loaded)) => {
                if let Some(w) = loaded.warning {
                    tracing::warn!(app = %id, "{w}");
                    // Put the last good copy back in place of the missing or corrupt file.
                    if let Err(e) = self.shared.store.save(id.as_str(), &loaded.record) {
                        tracing::error!(app = %id, error = %e, "could not persist state");
                    }
                }
                loaded.record
            }
            Ok(None) => Default::default(),
            Err(e) => {
                tracing::error!(app = %id, error = %e, "state unreadable; treating the app as not installed until fixed");
                crate::store::AppRecord {
                    last_error: Some(e.to_string()),
                    ..Default::default()
                }
            }
        };
        let actor = AppActor::new(app, record, self.shared.clone(), ctx.address().recipient());
        // Known at once, so `package.list` never misses an app that is still starting.
        self.packages.insert(id.to_string(), actor.package());
        self.actors.insert(id.to_string(), actor.start());
    }

    /// Readiness of an app's dependencies, from the packages the apps last reported.
    fn deps_of(&self, id: &str) -> Deps {
        let Some(app) = self
            .catalog
            .apps
            .iter()
            .find(|(k, _)| k.as_str() == id)
            .map(|(_, a)| a)
        else {
            return Deps::Ready;
        };
        for dep in &app.manifest.dependencies {
            let ready = self.packages.get(dep.as_str()).is_some_and(|p| {
                p.state == AppState::Running && matches!(p.health, Health::Healthy | Health::None)
            });
            if !ready {
                let state = self
                    .packages
                    .get(dep.as_str())
                    .map(|p| format!("{}, health {:?}", p.state.as_str(), p.health).to_lowercase())
                    .unwrap_or_else(|| "unknown".into());
                return Deps::Blocked {
                    dependency: dep.to_string(),
                    state,
                };
            }
        }
        Deps::Ready
    }

    /// Memory held by every app but `except`: wanted running, or reserved by an operation
    /// admitted and not yet ended.
    fn reserved_memory(&self, except: &str) -> u64 {
        self.ledger.reserved(self.packages.values(), except)
    }
    /// A catalog change that raises the limit of an app wanted running is applied live
    /// by its actor; when the raise would not fit the budget, the app keeps its current
    /// limit (the manifest it gets says so) and the log gives the figures. The next reload
    /// tries again.
    fn hold_memory_raise(&self, app: &crate::catalog::CatalogApp) -> crate::catalog::CatalogApp {
        let id = app.manifest.id.as_str();
        let new = app.manifest.container.memory_limit.bytes();
        let Some(current) = self
            .packages
            .get(id)
            .filter(|p| p.desired == crate::api::Desired::Running)
            .map(|p| p.memory_limit_bytes)
        else {
            return app.clone();
        };
        if new <= current {
            return app.clone();
        }
        let reserved = self.reserved_memory(id);
        let Err(over) = admission::check(self.memory_budget, reserved, new) else {
            return app.clone();
        };
        tracing::warn!(
            app = id,
            wanted_bytes = over.needed,
            current_bytes = current,
            reserved_bytes = over.reserved,
            budget_bytes = over.budget,
            "memory raise from the catalog held back: it would exceed the memory budget"
        );
        let mut held = app.clone();
        if let Ok(limit) = crate::memory::MemoryLimit::from_bytes(current) {
            held.manifest.container.memory_limit = limit;
        }
        held
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.ticking {
            return;
        }
        // `catalog.reload` is also done when `apps_dir` changes on disk: seen at the next
        // tick, so within one `reconcile_interval`. The folder is read and hashed on the
        // blocking pool, and the catalog loaded there when it changed; the actor only
        // compares and applies.
        if !self.catalog_checking {
            self.catalog_checking = true;
            let (apps_dir, seen) = (self.apps_dir.clone(), self.catalog_seen.clone());
            let check = tokio::task::spawn_blocking(move || {
                let now = CatalogFingerprint::of(&apps_dir);
                (now != seen).then(|| (now, Catalog::load(&apps_dir)))
            });
            ctx.spawn(check.into_actor(self).map(|changed, act, ctx| {
                act.catalog_checking = false;
                if let Ok(Some((seen, (catalog, problems)))) = changed {
                    tracing::info!(apps_dir = %act.apps_dir.display(), "catalog changed on disk; reloading");
                    act.apply_catalog(seen, catalog, problems, ctx);
                }
            }));
        }
        self.sync_onion(ctx);
        self.ticking = true;
        let engine = self.shared.engine.clone();
        let started = Instant::now();
        // The version is asked only while the engine is not known to be reachable: a
        // tick is then one list call, and a failing list is what says the engine left.
        let ask_version = !self.engine_status.reachable;
        let fut = async move {
            let version = match ask_version {
                true => Some(engine.version().await),
                false => None,
            };
            let list = match &version {
                Some(Err(e)) => Err(e.clone()),
                _ => engine.list().await,
            };
            (version, list)
        };
        ctx.spawn(fut.into_actor(self).map(move |(version, list), act, ctx| {
            act.ticking = false;
            if let Some(Ok(v)) = version {
                if act.engine_lost_logged {
                    tracing::info!(version = %v.version, "engine reachable again");
                }
                act.engine_lost_logged = false;
                act.engine_status = EngineStatus {
                    reachable: true,
                    version: Some(v.version),
                };
            }
            let list = match list {
                Ok(l) => l,
                Err(e) => {
                    let lost = ask_version
                        || matches!(
                            e.kind(),
                            EngineErrorKind::Unreachable | EngineErrorKind::Timeout
                        );
                    if lost {
                        // Said once per outage, not on every tick of it.
                        if !act.engine_lost_logged {
                            tracing::warn!(error = %e, "engine unreachable");
                            act.engine_lost_logged = true;
                        }
                        act.engine_status.reachable = false;
                    } else {
                        tracing::warn!(error = %e, "listing containers failed");
                    }
                    return;
                }
            };
            let mut by_app: HashMap<String, ContainerSummary> = HashMap::new();
            for c in list {
                // Only the app's own container counts; `-previous` copies belong to an
                // upgrade in flight.
                if c.name == crate::engine::container_name(&c.app) {
                    by_app.insert(c.app.clone(), c);
                }
            }
            let sends: Vec<_> = act
                .actors
                .iter()
                .map(|(id, addr)| {
                    addr.send(Observe {
                        container: by_app.remove(id),
                        deps: act.deps_of(id),
                        listed_at: started,
                    })
                })
                .collect();
            ctx.spawn(futures_util::future::join_all(sends).into_actor(act).map(
                move |results, act, _| {
                    let actions: usize = results.into_iter().filter_map(Result::ok).sum();
                    act.last_reconcile = ReconcileStatus {
                        at: Some(crate::api::now()),
                        took_ms: started.elapsed().as_millis() as u64,
                        actions: actions as u64,
                    };
                },
            ));
        }));
    }

    /// Follows the engine's event stream as a stream of this actor (see
    /// [`engine_events`]); it ends with the actor.
    fn follow_events(&self, ctx: &mut Context<Self>) {
        ctx.add_stream(engine_events(self.shared.engine.clone()));
    }
}

fn mark_first_boot_done(store: &Store) {
    if let Err(e) = store.mark_first_boot_done() {
        tracing::error!(error = %e, "could not record that the first boot is done");
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        let ids: Vec<AppId> = self.catalog.topo_order();
        for id in &ids {
            self.spawn_app(id, ctx);
        }
        tracing::info!(
            apps = ids.len(),
            first_boot = self.first_boot,
            "supervisor started"
        );
        if self.first_boot {
            // First boot: install the default apps; each starts once its dependencies
            // are running and healthy (the planner waits for them). They go in
            // dependency order, and the memory budget holds for them as for any install:
            // an app that would exceed it is left out, and so are its dependents.
            let wanted: std::collections::BTreeSet<&AppId> = self.default_apps.iter().collect();
            for id in &self.default_apps {
                if self.catalog.get(id).is_none() {
                    tracing::warn!(app = %id, "default app is not in the catalog");
                }
            }
            let mut reserved = 0u64;
            let mut left_out: Vec<AppId> = vec![];
            let mut accepted = vec![];
            for id in ids.iter().filter(|id| wanted.contains(id)) {
                let Some(app) = self.catalog.get(id) else {
                    continue;
                };
                let needs = app.manifest.container.memory_limit.bytes();
                if let Some(dep) = app
                    .manifest
                    .dependencies
                    .iter()
                    .find(|d| left_out.contains(d))
                {
                    tracing::warn!(app = %id, dependency = %dep, "default app left out: its dependency was left out");
                    left_out.push(id.clone());
                    continue;
                }
                if let Some(budget) = self.memory_budget.filter(|b| reserved + needs > *b) {
                    tracing::warn!(
                        app = %id,
                        needed_bytes = needs,
                        reserved_bytes = reserved,
                        budget_bytes = budget,
                        "default app left out: memory budget exceeded"
                    );
                    left_out.push(id.clone());
                    continue;
                }
                reserved += needs;
                if let Some(addr) = self.actors.get(id.as_str()) {
                    let install = addr.send(Command {
                        kind: OperationKind::Install,
                        params: OpParams::default(),
                    });
                    let id = id.clone();
                    accepted.push(async move { (id, install.await) });
                }
            }
            // The first boot is over once every default app's install is accepted (its
            // journal written, so a crash from here on finishes it): recorded then, and
            // never inferred again from an empty `state/`.
            let store = self.shared.store.clone();
            ctx.spawn(fut::wrap_future(async move {
                let mut all = true;
                for (id, answer) in futures_util::future::join_all(accepted).await {
                    if let Err(e) = answer.map_err(AppError::from).and_then(|r| r) {
                        tracing::warn!(app = %id, error = %e, "default app not accepted for install");
                        all = false;
                    }
                }
                if all {
                    mark_first_boot_done(&store);
                }
            }));
        } else if !self.shared.store.first_boot_done().unwrap_or(true) {
            // A node from before the marker existed: it had its first boot.
            mark_first_boot_done(&self.shared.store);
        }
        self.follow_events(ctx);
        ctx.run_interval(self.reconcile_interval, |act, ctx| act.tick(ctx));
        // Usage: memory and CPU every few seconds, disk every few minutes (the first walk
        // soon after start). A random offset keeps the samples off the reconcile ticks.
        let jitter = Duration::from_millis(u64::from(rand_u16()) % 1000);
        ctx.run_later(jitter, |_, ctx| {
            ctx.run_interval(usage::SAMPLE_INTERVAL, |act, ctx| act.sample_usage(ctx));
        });
        ctx.run_later(Duration::from_secs(2) + jitter, |act, ctx| {
            act.measure_disk(ctx);
            ctx.run_interval(usage::DISK_INTERVAL, |act, ctx| act.measure_disk(ctx));
        });
    }
}

/// Runs a reconcile tick now.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Tick;

impl Handler<Tick> for Supervisor {
    type Result = ();
    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        self.tick(ctx);
    }
}

impl Handler<PackageChanged> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: PackageChanged, ctx: &mut Context<Self>) {
        let mut pkg = msg.0;
        pkg.onion_address = self.onion.addresses.get(&pkg.id).cloned();
        pkg.usage = self.sampling.usage.get(&pkg.id).cloned();
        if pkg.state == AppState::Running {
            self.sampling.seen_running.insert(pkg.id.clone());
        }
        pkg.restarts = self.sampling.restarts.get(&pkg.id).copied().unwrap_or(0);
        let id = pkg.id.clone();
        let readiness_changed = self
            .packages
            .get(&id)
            .is_none_or(|old| old.state != pkg.state || old.health != pkg.health);
        let _ = self
            .shared
            .events
            .send(Event::Package(Box::new(pkg.clone())));
        self.ledger.reported(&pkg);
        self.packages.insert(id.clone(), pkg);
        self.sync_onion(ctx);
        if readiness_changed {
            let dependents = AppId::try_from(id.clone())
                .map(|id| self.catalog.dependents(&id))
                .unwrap_or_default();
            for dependent in dependents {
                if let Some(addr) = self.actors.get(dependent.as_str()) {
                    addr.do_send(DepsChanged(self.deps_of(dependent.as_str())));
                }
            }
        }
    }
}

/// Proves the supervisor answers messages: the systemd watchdog is pinged only after it
/// did, so a supervisor wedged on its thread is restarted, while one that is merely busy
/// (a copy runs on the blocking pool) is not.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Heartbeat;

impl Handler<Heartbeat> for Supervisor {
    type Result = ();
    fn handle(&mut self, _: Heartbeat, _: &mut Context<Self>) {}
}
