//! The supervisor actor: owns the app actors, schedules reconcile ticks, routes engine
//! events to the app they concern, and answers the web layer's questions.
//!
//! The messages below are the whole interface the web layer uses: each RPC becomes one of
//! them, and the answer comes back at once (an operation is answered when it starts, not
//! when it ends).

use actix::prelude::*;
use tokio::sync::broadcast;

use crate::api::{Event, Operation, OperationKind, Package, ServerStatus};
use crate::error::AppError;

/// `package.list`: every catalog app, sorted by id.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Package>")]
pub struct ListPackages;

/// `package.get`.
#[derive(Debug, Message)]
#[rtype(result = "Result<Package, AppError>")]
pub struct GetPackage {
    pub id: String,
}

/// `package.install` / `start` / `stop` / `restart` / `upgrade` / `rollback` / `uninstall`.
/// Answers with the operation as soon as it has started (or at once `succeeded` when the
/// request is already satisfied).
#[derive(Debug, Message)]
#[rtype(result = "Result<Operation, AppError>")]
pub struct RunOperation {
    pub id: String,
    pub kind: OperationKind,
    /// Only for uninstall: also delete volumes and secrets.
    pub purge: bool,
}

/// `operation.get`.
#[derive(Debug, Message)]
#[rtype(result = "Result<Operation, AppError>")]
pub struct GetOperation {
    pub id: String,
}

/// `package.logs`: the last `tail` lines of the app's container.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<String>, AppError>")]
pub struct GetLogs {
    pub id: String,
    pub tail: usize,
}

/// `GET /api/logs/{id}`: the app's last `tail` log lines, then each new one as the
/// container writes it. The stream comes from the engine; the supervisor only checks the
/// app exists and names its container.
#[derive(Message)]
#[rtype(result = "Result<LogStream, AppError>")]
pub struct FollowLogs {
    pub id: String,
    pub tail: usize,
}

/// Log lines as the engine sends them; ends with the container.
pub type LogStream =
    futures_util::stream::BoxStream<'static, Result<String, crate::engine::EngineError>>;

/// `catalog.reload`: re-reads `apps_dir`; answers the number of apps.
#[derive(Debug, Message)]
#[rtype(result = "Result<usize, AppError>")]
pub struct ReloadCatalog;

/// `server.status`.
#[derive(Debug, Message)]
#[rtype(result = "ServerStatus")]
pub struct GetStatus;

/// Subscribes to package and operation changes, for `/api/events`.
#[derive(Debug, Message)]
#[rtype(result = "broadcast::Receiver<Event>")]
pub struct Subscribe;

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

/// The usage sampler's state (see [`crate::usage`] and [`Supervisor::sample_usage`]).
#[derive(Debug, Default)]
struct Sampling {
    /// Container id → its cgroup files, or `None` when they are not visible (the
    /// engine's one-shot stats are asked instead). Found once per container.
    cgroups: HashMap<String, Option<usage::CgroupFiles>>,
    /// App → when, CPU nanoseconds and container of its last reading, for CPU %.
    cpu: HashMap<String, (Instant, u64, String)>,
    /// App → the usage last published (figures move on only past [`usage::changed`]).
    usage: BTreeMap<String, Usage>,
    /// App → bytes in its volume folders, from the last walk.
    disk: BTreeMap<String, u64>,
    /// Free space where `data_dir` lives, from the last look.
    data_disk: Option<DiskStatus>,
    /// Apps seen `running` since the supervisor started: a start of their container
    /// from then on is a restart (an adopted container counts from its first sighting).
    seen_running: std::collections::HashSet<String>,
    /// App → restarts of its container heard from the engine since then.
    restarts: BTreeMap<String, u64>,
    /// A memory/CPU sample is running (never two at once).
    busy: bool,
    /// A disk walk is running on the blocking pool (never two at once).
    disk_busy: bool,
    /// Memory/CPU rounds so far, for the rarer engine stats.
    rounds: u64,
    /// Engine reachability and memory reserved as last pushed in a `status` event.
    status_pushed: Option<(bool, u64)>,
}

/// Containers whose cgroup is not visible are asked of the engine every this many
/// sampling rounds (30 s): one-shot stats cost the engine about 2 ms of CPU each and can
/// take a second to answer (docs/performance.md, "Usage sampling").
const STATS_EVERY: u64 = 6;
/// Engine stats asked at once.
const STATS_PARALLEL: usize = 8;

/// Where the cgroup file systems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

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

/// A cheap summary of `apps_dir`: each entry's name with the SHA-256 of its
/// `manifest.yml` (one readdir and one small read per app). Any edit, added or removed
/// app changes it; file times are not used, as two edits within one clock tick of the
/// filesystem can leave them equal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogFingerprint(Vec<(std::ffi::OsString, Option<[u8; 32]>)>);

impl CatalogFingerprint {
    /// Reads `apps_dir` now; an unreadable folder gives an empty fingerprint.
    pub fn of(apps_dir: &std::path::Path) -> Self {
        use sha2::{Digest, Sha256};
        let Ok(entries) = std::fs::read_dir(apps_dir) else {
            return CatalogFingerprint::default();
        };
        let mut seen: Vec<_> = entries
            .flatten()
            .map(|e| {
                let manifest = e.path().join(crate::catalog::MANIFEST_FILE);
                let digest = std::fs::read(manifest)
                    .ok()
                    .map(|bytes| Sha256::digest(bytes).into());
                (e.file_name(), digest)
            })
            .collect();
        seen.sort();
        CatalogFingerprint(seen)
    }
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

    /// The onion services the tor app should serve now: every app that declares onion
    /// ports and is installed or being installed, pointed at its name on the app network
    /// while it runs; with the tor app's `data` volume (host folder, path in its
    /// container). `None` when the catalog has no such tor app.
    fn onion_services(&self) -> Option<(PathBuf, String, Vec<onion::Service>)> {
        let tor = AppId::try_from(self.onion.tor_app.clone()).ok()?;
        let tor_app = self.catalog.get(&tor)?;
        let data = tor_app
            .manifest
            .container
            .volumes
            .iter()
            .find(|v| v.is_own() && v.name == "data")?;
        let network_of = |app: &crate::catalog::CatalogApp| {
            app.manifest
                .container
                .network
                .clone()
                .unwrap_or_else(|| self.shared.default_network.clone())
        };
        let tor_network = network_of(tor_app);
        let services = self
            .catalog
            .apps
            .iter()
            .filter(|(id, _)| **id != tor)
            .filter_map(|(id, app)| {
                let spec = app.manifest.onion.as_ref()?;
                let p = self.packages.get(id.as_str())?;
                let installing = p.operation.as_ref().is_some_and(|o| {
                    o.kind == OperationKind::Install
                        && o.status == crate::api::OperationStatus::Running
                });
                (p.installed_version.is_some() || installing).then(|| onion::Service {
                    app: id.to_string(),
                    ports: spec.ports.clone(),
                    // By name only on tor's own named network: a name tor cannot
                    // resolve would make it refuse the whole file.
                    target: if p.state == AppState::Running
                        && network_of(app) == tor_network
                        && !crate::engine::is_builtin_network(&tor_network)
                    {
                        id.to_string()
                    } else {
                        "127.0.0.1".to_string()
                    },
                })
            })
            .collect();
        Some((
            self.shared.store.app_dir(tor.as_str()).join("data"),
            data.path.clone(),
            services,
        ))
    }

    /// Keeps the tor app's services file in step with the installed apps, has tor reload
    /// it when it changed, removes the keys of purged apps, and reads the addresses tor
    /// wrote. File work runs on the blocking pool, one round at a time; a round is started
    /// only when there is something to do.
    fn sync_onion(&mut self, ctx: &mut Context<Self>) {
        if self.onion.busy {
            return;
        }
        let Some((tor_data, mount, services)) = self.onion_services() else {
            return;
        };
        let text = onion::services_file(&services, &mount);
        let purged: Vec<String> = self
            .onion
            .purging
            .iter()
            .filter(|id| {
                self.packages.get(*id).is_some_and(|p| {
                    p.installed_version.is_none()
                        && p.operation
                            .as_ref()
                            .is_none_or(|o| o.status != crate::api::OperationStatus::Running)
                })
            })
            .cloned()
            .collect();
        let missing = services
            .iter()
            .any(|s| !self.onion.addresses.contains_key(&s.app));
        let stale = self
            .onion
            .addresses
            .keys()
            .any(|a| !services.iter().any(|s| s.app == *a));
        if self.onion.written.as_deref() == Some(text.as_str())
            && purged.is_empty()
            && !missing
            && !stale
        {
            return;
        }
        self.onion.busy = true;
        let store = self.shared.store.clone();
        let apps: Vec<String> = services.iter().map(|s| s.app.clone()).collect();
        let write = text.clone();
        let purge = purged.clone();
        let work = tokio::task::spawn_blocking(move || {
            let changed = if tor_data.is_dir() {
                onion::write_services_file(&tor_data, &write)
                    .map_err(|e| format!("{}: {e}", tor_data.join(onion::SERVICES_FILE).display()))
            } else {
                Err(format!("{} does not exist yet", tor_data.display()))
            };
            for app in &purge {
                if let Some(dir) = onion::service_dir(&store, app) {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
            let addresses: BTreeMap<String, String> = apps
                .iter()
                .filter_map(|a| onion::address(&store, a).ok().map(|addr| (a.clone(), addr)))
                .collect();
            (changed, addresses)
        });
        ctx.spawn(work.into_actor(self).map(move |done, act, ctx| {
            act.onion.busy = false;
            let Ok((changed, addresses)) = done else { return };
            for app in &purged {
                act.onion.purging.remove(app);
            }
            match changed {
                Ok(changed) => {
                    act.onion.written = Some(text);
                    if changed {
                        tracing::info!(tor = %act.onion.tor_app, "onion services changed; tor reloads them");
                        if let Some(tor) = act.actors.get(&act.onion.tor_app) {
                            tor.do_send(app::Signal("HUP"));
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "onion services file not written"),
            }
            if addresses != act.onion.addresses {
                act.onion.addresses = addresses;
                let ids: Vec<String> = act.packages.keys().cloned().collect();
                for id in ids {
                    let address = act.onion.addresses.get(&id).cloned();
                    if let Some(p) = act.packages.get_mut(&id) {
                        if p.onion_address != address {
                            p.onion_address = address;
                            let _ = act.shared.events.send(Event::Package(Box::new(p.clone())));
                        }
                    }
                }
            }
            let _ = ctx;
        }));
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

/// What the supervisor hears from the engine's event stream.
#[derive(Debug)]
enum Heard {
    /// A (new) subscription began: it may have missed events, so relist at once.
    Subscribed,
    Event(crate::engine::EngineEvent),
}

/// The engine's events, resubscribed whenever the stream ends or fails: after a pause
/// that grows from 250 ms to 10 s while subscriptions bring nothing, and goes back to
/// 250 ms after an event.
fn engine_events(
    engine: Arc<dyn ContainerRuntime>,
) -> futures_util::stream::BoxStream<'static, Heard> {
    use futures_util::stream::{self, BoxStream, StreamExt};
    type Events =
        BoxStream<'static, Result<crate::engine::EngineEvent, crate::engine::EngineError>>;
    struct Follow {
        engine: Arc<dyn ContainerRuntime>,
        current: Option<Events>,
        backoff: Duration,
        got_any: bool,
    }
    let start = Follow {
        engine,
        current: None,
        backoff: Duration::from_millis(250),
        got_any: false,
    };
    stream::unfold(start, |mut f| async move {
        loop {
            let Some(current) = f.current.as_mut() else {
                f.current = Some(f.engine.events());
                f.got_any = false;
                return Some((Heard::Subscribed, f));
            };
            match current.next().await {
                Some(Ok(ev)) => {
                    f.got_any = true;
                    f.backoff = Duration::from_millis(250);
                    return Some((Heard::Event(ev), f));
                }
                ended => {
                    if let Some(Err(e)) = ended {
                        tracing::debug!(error = %e, "engine event stream error");
                    }
                    f.current = None;
                    if !f.got_any {
                        f.backoff = (f.backoff * 2).min(Duration::from_secs(10));
                    }
                    tokio::time::sleep(f.backoff).await;
                }
            }
        }
    })
    .boxed()
}

impl StreamHandler<Heard> for Supervisor {
    fn handle(&mut self, heard: Heard, ctx: &mut Context<Self>) {
        match heard {
            Heard::Subscribed => self.tick(ctx),
            Heard::Event(ev) => {
                if ev.action == "start" && self.sampling.seen_running.contains(&ev.app) {
                    *self.sampling.restarts.entry(ev.app.clone()).or_default() += 1;
                }
                if let Some(addr) = self.actors.get(&ev.app) {
                    addr.do_send(app::ContainerEvent(ev));
                }
            }
        }
    }

    /// The stream never ends by itself; when the actor stops, it is dropped.
    fn finished(&mut self, _: &mut Context<Self>) {}
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
                        params: OpParams {
                            purge: false,
                            deps_ready: false,
                        },
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

impl Handler<ListPackages> for Supervisor {
    type Result = MessageResult<ListPackages>;
    fn handle(&mut self, _: ListPackages, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.packages.values().cloned().collect())
    }
}

impl Handler<GetPackage> for Supervisor {
    type Result = Result<Package, AppError>;
    fn handle(&mut self, msg: GetPackage, _: &mut Context<Self>) -> Self::Result {
        self.packages
            .get(&msg.id)
            .cloned()
            .ok_or(AppError::UnknownApp { id: msg.id })
    }
}

impl Handler<RunOperation> for Supervisor {
    type Result = ResponseActFuture<Self, Result<Operation, AppError>>;
    fn handle(&mut self, msg: RunOperation, _: &mut Context<Self>) -> Self::Result {
        let id = msg.id.clone();
        let Some(addr) = self.actors.get(&id).cloned() else {
            return Box::pin(fut::ready(Err(AppError::UnknownApp { id })));
        };
        let starts = matches!(
            msg.kind,
            OperationKind::Install
                | OperationKind::Start
                | OperationKind::Restart
                | OperationKind::Upgrade
                | OperationKind::Rollback
        );
        let pkg = self.packages.get(&id).cloned();
        let already_running = pkg.as_ref().is_some_and(|p| p.state == AppState::Running);
        let mut deps_ready = true;
        if starts && !already_running {
            if let Deps::Blocked { dependency, state } = self.deps_of(&id) {
                return Box::pin(fut::ready(Err(AppError::DependencyNotReady {
                    app: id,
                    dependency,
                    state,
                })));
            }
        } else {
            deps_ready = !matches!(self.deps_of(&id), Deps::Blocked { .. });
        }
        // The memory the app would hold: the catalog's limit (an upgrade moves to it).
        let needed = AppId::try_from(id.clone())
            .ok()
            .and_then(|app| self.catalog.get(&app))
            .map(|a| a.manifest.container.memory_limit.bytes())
            .or(pkg.as_ref().map(|p| p.memory_limit_bytes))
            .unwrap_or(0);
        let wanted = pkg
            .as_ref()
            .is_some_and(|p| p.desired == crate::api::Desired::Running);
        let current = pkg.as_ref().map_or(0, |p| p.memory_limit_bytes);
        let checked = admission::needs_check(msg.kind, wanted, current, needed);
        if checked {
            let reserved = self.reserved_memory(&id);
            if let Err(over) = admission::check(self.memory_budget, reserved, needed) {
                return Box::pin(fut::ready(Err(AppError::MemoryBudget {
                    app: id,
                    needed_bytes: over.needed,
                    reserved_bytes: over.reserved,
                    budget_bytes: over.budget,
                })));
            }
            // Held from now, before the actor has seen the command.
            self.ledger.admit(&id, needed);
        }
        if msg.kind == OperationKind::Uninstall && msg.purge {
            self.onion.purging.insert(id.clone());
        }
        let command = addr.send(Command {
            kind: msg.kind,
            params: OpParams {
                purge: msg.purge,
                deps_ready,
            },
        });
        Box::pin(async move { command.await? }.into_actor(self).map(
            move |result: Result<Operation, AppError>, act, _| {
                if checked {
                    let began = result
                        .as_ref()
                        .ok()
                        .filter(|op| op.status == crate::api::OperationStatus::Running)
                        .map(|op| op.id.as_str());
                    act.ledger.began(&id, began);
                    // The operation may have ended before this answer was read.
                    if let Some(p) = act.packages.get(&id) {
                        act.ledger.reported(p);
                    }
                }
                result
            },
        ))
    }
}

impl Handler<GetOperation> for Supervisor {
    type Result = ResponseFuture<Result<Operation, AppError>>;
    fn handle(&mut self, msg: GetOperation, _: &mut Context<Self>) -> Self::Result {
        // An operation id names its app, so no table of operations is kept.
        let addr = app::app_of_operation(&msg.id)
            .and_then(|app| self.actors.get(app))
            .cloned();
        Box::pin(async move {
            let unknown = || AppError::UnknownOperation { id: msg.id.clone() };
            let addr = addr.ok_or_else(unknown)?;
            addr.send(FindOperation(msg.id.clone()))
                .await?
                .ok_or_else(unknown)
        })
    }
}

impl Handler<GetLogs> for Supervisor {
    type Result = ResponseFuture<Result<Vec<String>, AppError>>;
    fn handle(&mut self, msg: GetLogs, _: &mut Context<Self>) -> Self::Result {
        let known = self.actors.contains_key(&msg.id);
        let engine = self.shared.engine.clone();
        Box::pin(async move {
            if !known {
                return Err(AppError::UnknownApp { id: msg.id });
            }
            match engine
                .logs(&crate::engine::container_name(&msg.id), msg.tail)
                .await
            {
                Ok(lines) => Ok(lines),
                Err(e) if crate::ops::is_not_found(&e) => Ok(vec![]),
                Err(e) => Err(e.into()),
            }
        })
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

impl Handler<ReloadCatalog> for Supervisor {
    type Result = ResponseActFuture<Self, Result<usize, AppError>>;
    fn handle(&mut self, _: ReloadCatalog, _: &mut Context<Self>) -> Self::Result {
        let apps_dir = self.apps_dir.clone();
        let load = tokio::task::spawn_blocking(move || {
            (CatalogFingerprint::of(&apps_dir), Catalog::load(&apps_dir))
        });
        Box::pin(load.into_actor(self).map(|loaded, act, ctx| {
            let (seen, (catalog, problems)) =
                loaded.map_err(|e| AppError::Internal(format!("catalog load: {e}")))?;
            Ok(act.apply_catalog(seen, catalog, problems, ctx))
        }))
    }
}

impl Supervisor {
    /// Applies a catalog read off the actors' thread: changed apps get their new manifest, new apps an actor, and
    /// apps that left it are retired (see [`app::LeaveCatalog`]). Answers the number of
    /// catalog apps.
    fn apply_catalog(
        &mut self,
        seen: CatalogFingerprint,
        catalog: Catalog,
        problems: Vec<crate::manifest::Problem>,
        ctx: &mut Context<Self>,
    ) -> usize {
        self.catalog_seen = seen;
        for p in &problems {
            tracing::warn!("{p}");
        }
        self.catalog = catalog;
        for id in self.catalog.topo_order() {
            match self.actors.get(id.as_str()) {
                Some(addr) => {
                    if let Some(app) = self.catalog.get(&id) {
                        addr.do_send(app::CatalogUpdate(self.hold_memory_raise(app)));
                    }
                }
                None => self.spawn_app(&id, ctx),
            }
        }
        let gone: Vec<(String, Addr<AppActor>)> = self
            .actors
            .iter()
            .filter(|(id, _)| !self.catalog.apps.keys().any(|k| k.as_str() == id.as_str()))
            .map(|(id, addr)| (id.clone(), addr.clone()))
            .collect();
        for (id, addr) in gone {
            let fut = addr.send(app::LeaveCatalog);
            ctx.spawn(fut.into_actor(self).map(move |stopped, act, ctx| {
                // Only drop the actor we asked: a reload may have spawned a new one since.
                if stopped.unwrap_or(false) && act.actors.get(&id).is_some_and(|a| *a == addr) {
                    act.actors.remove(&id);
                    act.packages.remove(&id);
                    // The app came back while its actor was stopping: give it a new one.
                    if let Ok(app_id) = AppId::try_from(id) {
                        if act.catalog.get(&app_id).is_some() {
                            act.spawn_app(&app_id, ctx);
                        }
                    }
                }
            }));
        }
        self.catalog.apps.len()
    }
}

impl Handler<GetStatus> for Supervisor {
    type Result = MessageResult<GetStatus>;
    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.status())
    }
}

impl Handler<FollowLogs> for Supervisor {
    type Result = Result<LogStream, AppError>;
    fn handle(&mut self, msg: FollowLogs, _: &mut Context<Self>) -> Self::Result {
        if !self.actors.contains_key(&msg.id) {
            return Err(AppError::UnknownApp { id: msg.id });
        }
        Ok(self
            .shared
            .engine
            .follow_logs(&crate::engine::container_name(&msg.id), msg.tail))
    }
}

/// A random number from the OS, for jitter (0 should the source fail).
fn rand_u16() -> u16 {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    u16::from_le_bytes(b)
}

/// What one sample found for one app: its container, the reading (if any) and when.
type Sample = (String, String, Option<usage::Reading>, Instant);

impl Supervisor {
    /// The node summary of `server.status` and the `status` event.
    fn status(&self) -> ServerStatus {
        ServerStatus {
            version: env!("CARGO_PKG_VERSION").to_string(),
            engine: self.engine_status.clone(),
            last_reconcile: self.last_reconcile.clone(),
            memory: MemoryStatus {
                budget_bytes: self.memory_budget,
                reserved_bytes: self.reserved_memory(""),
            },
            disk: self.sampling.data_disk.clone(),
        }
    }

    /// Samples memory and CPU of every app with a container, off the actor's thread: an
    /// inspect the first time a container is seen (for its pid, hence its cgroup), then
    /// a few small cgroup files per app on the blocking pool; the engine's one-shot
    /// stats only for containers whose cgroup is not visible. Never two at once.
    fn sample_usage(&mut self, ctx: &mut Context<Self>) {
        // The node summary follows within one round when the engine comes or goes or the
        // memory reserved changes (besides the stream's own keep-alive).
        let key = (self.engine_status.reachable, self.reserved_memory(""));
        if self.sampling.status_pushed != Some(key) {
            self.sampling.status_pushed = Some(key);
            let _ = self
                .shared
                .events
                .send(Event::Status(Box::new(self.status())));
        }
        if self.sampling.busy {
            return;
        }
        let targets: Vec<(String, String)> = self
            .packages
            .values()
            .filter(|p| p.state == AppState::Running || p.state.is_transitional())
            .filter_map(|p| Some((p.id.clone(), p.container_id.clone()?)))
            .collect();
        let live: std::collections::HashSet<&String> = targets.iter().map(|(_, c)| c).collect();
        self.sampling.cgroups.retain(|c, _| live.contains(c));
        // Apps without a container: memory and CPU are gone, disk stays.
        let idle: Vec<String> = self
            .sampling
            .usage
            .iter()
            .filter(|(app, u)| u.memory_bytes.is_some() && !targets.iter().any(|(a, _)| a == *app))
            .map(|(app, _)| app.clone())
            .collect();
        for app in idle {
            self.sampling.cpu.remove(&app);
            let disk = self.sampling.disk.get(&app).copied();
            self.set_usage(&app, None, None, disk);
        }
        if targets.is_empty() {
            return;
        }
        self.sampling.busy = true;
        self.sampling.rounds += 1;
        let with_stats = self.sampling.rounds % STATS_EVERY == 1;
        let known: HashMap<String, Option<usage::CgroupFiles>> = self.sampling.cgroups.clone();
        let engine = self.shared.engine.clone();
        let fut = async move {
            use futures_util::StreamExt;
            let mut pids = HashMap::new();
            for (_, c) in targets.iter().filter(|(_, c)| !known.contains_key(c)) {
                if let Ok(Some(pid)) = engine.inspect(c).await.map(|d| d.pid) {
                    pids.insert(c.clone(), pid);
                }
            }
            let read = tokio::task::spawn_blocking(move || {
                let mut files = known;
                for (c, pid) in pids {
                    files.insert(c, usage::cgroup_of(pid, std::path::Path::new(CGROUP_ROOT)));
                }
                let at = Instant::now();
                let samples: Vec<Sample> = targets
                    .into_iter()
                    .map(|(app, c)| {
                        let reading = match files.get(&c) {
                            Some(Some(f)) => match usage::read(f) {
                                Ok(r) => Some(r),
                                // Gone with its container; found again next time.
                                Err(_) => {
                                    files.remove(&c);
                                    None
                                }
                            },
                            _ => None,
                        };
                        (app, c, reading, at)
                    })
                    .collect();
                (files, samples)
            })
            .await;
            let Ok((files, mut samples)) = read else {
                return (HashMap::new(), vec![]);
            };
            // Containers whose cgroup is not visible: the engine's one-shot stats, a few
            // at a time (an answer can take a second), and only every
            // `STATS_EVERY` rounds, as they cost the engine far more than a file read.
            if with_stats {
                let asks = samples
                    .iter()
                    .enumerate()
                    .filter(|(_, (_, c, r, _))| {
                        r.is_none() && matches!(files.get(c.as_str()), Some(None))
                    })
                    .map(|(i, (_, c, _, _))| {
                        let (engine, c) = (engine.clone(), c.clone());
                        async move { (i, engine.stats(&c).await.ok(), Instant::now()) }
                    })
                    .collect::<Vec<_>>();
                let answers: Vec<_> = futures_util::stream::iter(asks)
                    .buffer_unordered(STATS_PARALLEL)
                    .collect()
                    .await;
                for (i, reading, at) in answers {
                    samples[i].2 = reading;
                    samples[i].3 = at;
                }
            }
            (files, samples)
        };
        ctx.spawn(fut.into_actor(self).map(|(files, samples), act, _| {
            act.sampling.busy = false;
            act.sampling.cgroups.extend(files);
            for (app, container, reading, at) in samples {
                let Some(r) = reading else { continue };
                let cpu = match act.sampling.cpu.get(&app) {
                    Some((t, ns, c)) if *c == container => {
                        usage::cpu_percent((*t, *ns), (at, r.cpu_ns))
                    }
                    _ => None,
                };
                act.sampling
                    .cpu
                    .insert(app.clone(), (at, r.cpu_ns, container));
                let disk = act.sampling.disk.get(&app).copied();
                act.set_usage(&app, Some(r.memory_bytes), cpu, disk);
            }
        }));
    }

    /// Records an app's usage and pushes its `Package` when a figure moved enough.
    fn set_usage(
        &mut self,
        app: &str,
        memory: Option<u64>,
        cpu: Option<crate::api::Percent>,
        disk: Option<u64>,
    ) {
        let Some(p) = self.packages.get_mut(app) else {
            return;
        };
        // A CPU figure needs two readings: keep the last one until then.
        let old = self.sampling.usage.get(app);
        let cpu = cpu.or_else(|| memory.and(old.and_then(|u| u.cpu_percent)));
        let new = Usage {
            memory_bytes: memory,
            cpu_percent: cpu,
            disk_bytes: disk,
            sampled_at: crate::api::now(),
        };
        if !usage::changed(old, &new, p.memory_limit_bytes) {
            return;
        }
        self.sampling.usage.insert(app.to_string(), new.clone());
        p.usage = Some(new);
        let _ = self.shared.events.send(Event::Package(Box::new(p.clone())));
    }

    /// Walks the volume folders of every installed app, one app after the other on one
    /// blocking thread, and reads the free space of `data_dir`; pushes what changed.
    fn measure_disk(&mut self, ctx: &mut Context<Self>) {
        if self.sampling.disk_busy {
            return;
        }
        self.sampling.disk_busy = true;
        let store = self.shared.store.clone();
        let apps: Vec<String> = self
            .packages
            .values()
            .filter(|p| p.installed_version.is_some())
            .map(|p| p.id.clone())
            .collect();
        let walk = tokio::task::spawn_blocking(move || {
            let sizes: Vec<(String, u64)> = apps
                .into_iter()
                .map(|app| {
                    let size = usage::dir_size(&store.app_dir(&app), usage::DISK_WALK_LIMIT);
                    (app, size)
                })
                .collect();
            (sizes, usage::disk_status(store.data_dir()))
        });
        ctx.spawn(walk.into_actor(self).map(|walked, act, _| {
            act.sampling.disk_busy = false;
            let Ok((sizes, data_disk)) = walked else {
                return;
            };
            act.sampling.disk = sizes.iter().cloned().collect();
            for (app, size) in sizes {
                let (memory, cpu) = act
                    .sampling
                    .usage
                    .get(&app)
                    .map_or((None, None), |u| (u.memory_bytes, u.cpu_percent));
                act.set_usage(&app, memory, cpu, Some(size));
            }
            const STEP: u64 = 64 * 1024 * 1024;
            let moved = match (&act.sampling.data_disk, &data_disk) {
                (Some(a), Some(b)) => a.free_bytes.abs_diff(b.free_bytes) >= STEP,
                (a, b) => a.is_some() != b.is_some(),
            };
            if moved {
                act.sampling.data_disk = data_disk;
                let _ = act
                    .shared
                    .events
                    .send(Event::Status(Box::new(act.status())));
            }
        }));
    }
}

impl Handler<Subscribe> for Supervisor {
    type Result = MessageResult<Subscribe>;
    fn handle(&mut self, _: Subscribe, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.shared.events.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::api::{Desired, OperationStatus};
    use crate::engine::FakeRuntime;

    const MIB: u64 = 1024 * 1024;

    /// Writes `<apps>/<id>/manifest.yml` for a 64 MiB app on image `img:1`; `extra` is
    /// YAML under `container:`.
    fn write_app(apps: &Path, id: &str, extra: &str) {
        let dir = apps.join(id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("manifest.yml"),
            format!(
                "id: {id}\nname: {id}\nversion: \"1\"\ncontainer:\n  image: img:1\n  network: none\n  memory_limit: 64MiB\n{extra}"
            ),
        )
        .unwrap();
    }

    /// Starts a supervisor on the fake engine over `dir` (holding `apps/`), with
    /// `extra` appended to the config.
    fn start(
        dir: &Path,
        fake: &Arc<FakeRuntime>,
        extra: &str,
        policy: CrashPolicy,
    ) -> Addr<Supervisor> {
        let path = dir.join("config.yml");
        let text = format!(
            "apps_dir: apps\ndata_dir: data\nengine:\n  host: fake\n  default_network: none\nreconcile_interval: 50ms\nauth:\n  password_file: password\n{extra}"
        );
        let config = Config::from_yaml(&path, &text).unwrap();
        let (catalog, problems) = Catalog::load(&config.apps_dir);
        assert!(problems.is_empty(), "{problems:?}");
        let store = Store::open(&config.data_dir).unwrap();
        fake.set_images(["img:1"]);
        let engine: Arc<dyn ContainerRuntime> = fake.clone();
        Supervisor::new(&config, catalog, engine, store)
            .unwrap()
            .with_crash_policy(policy)
            .start()
    }

    /// Polls `id`'s package until `pred` holds, or panics after 5 s naming `what`.
    async fn wait_for(
        sup: &Addr<Supervisor>,
        id: &str,
        what: &str,
        pred: impl Fn(&Package) -> bool,
    ) -> Package {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let p = sup.send(GetPackage { id: id.into() }).await.unwrap();
            if let Ok(p) = &p {
                if pred(p) {
                    return p.clone();
                }
            }
            assert!(Instant::now() < deadline, "{id}: never {what}: {p:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn settled_running(p: &Package) -> bool {
        p.state == AppState::Running
            && p.operation
                .as_ref()
                .is_none_or(|o| o.status != OperationStatus::Running)
    }

    async fn run(
        sup: &Addr<Supervisor>,
        id: &str,
        kind: OperationKind,
    ) -> Result<Operation, AppError> {
        sup.send(RunOperation {
            id: id.into(),
            kind,
            purge: false,
        })
        .await
        .unwrap()
    }

    /// Adding, editing (same length) and removing a manifest each change the fingerprint;
    /// reading twice with no change does not.
    #[test]
    fn the_catalog_fingerprint_sees_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let apps = dir.path();
        write_app(apps, "a", "");
        let mut last = CatalogFingerprint::of(apps);
        assert_eq!(CatalogFingerprint::of(apps), last, "no change");
        type Change = fn(&Path);
        let changes: [(&str, Change); 4] = [
            ("add", |apps| write_app(apps, "b", "")),
            ("edit, same length", |apps| {
                let path = apps.join("a/manifest.yml");
                let text = std::fs::read_to_string(&path).unwrap();
                std::fs::write(&path, text.replace("64MiB", "80MiB")).unwrap();
            }),
            ("remove manifest", |apps| {
                std::fs::remove_file(apps.join("b/manifest.yml")).unwrap()
            }),
            ("remove folder", |apps| {
                std::fs::remove_dir_all(apps.join("b")).unwrap()
            }),
        ];
        for (what, change) in changes {
            change(apps);
            let now = CatalogFingerprint::of(apps);
            assert_ne!(now, last, "{what}");
            last = now;
        }
    }

    /// Two 64 MiB apps under a 100 MiB budget: the second is refused with -32004 and the
    /// figures, and nothing is created for it.
    /// At first boot the default apps are held to the memory budget too: in dependency
    /// order, an app that would exceed it is left out, and so is its dependent.
    #[actix_web::test]
    async fn first_boot_holds_default_apps_to_the_memory_budget() {
        let dir = tempfile::tempdir().unwrap();
        let apps = dir.path().join("apps");
        write_app(&apps, "a", "");
        write_app(&apps, "b", "");
        let dependent = "dependencies: [b]\n";
        let dir_c = apps.join("c");
        std::fs::create_dir_all(&dir_c).unwrap();
        std::fs::write(
            dir_c.join("manifest.yml"),
            format!("id: c\nname: c\nversion: \"1\"\n{dependent}container:\n  image: img:1\n  network: none\n  memory_limit: 8MiB\n"),
        )
        .unwrap();
        let fake = Arc::new(FakeRuntime::new());
        // c (8 MiB) would fit, but it depends on b, which does not.
        let sup = start(
            dir.path(),
            &fake,
            "default_apps: [c, b, a]\nmemory_budget: 100MiB\n",
            CrashPolicy::default(),
        );
        wait_for(&sup, "a", "running", settled_running).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        for left_out in ["b", "c"] {
            let p = sup
                .send(GetPackage {
                    id: left_out.into(),
                })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(p.state, AppState::NotInstalled, "{left_out}");
            assert_eq!(p.desired, Desired::NotInstalled, "{left_out}");
        }
        let status = sup.send(GetStatus).await.unwrap();
        assert_eq!(status.memory.reserved_bytes, 64 * MIB);
    }

    #[actix_web::test]
    async fn a_start_over_the_memory_budget_is_refused_with_figures() {
        let dir = tempfile::tempdir().unwrap();
        write_app(&dir.path().join("apps"), "a", "");
        write_app(&dir.path().join("apps"), "b", "");
        let fake = Arc::new(FakeRuntime::new());
        let sup = start(
            dir.path(),
            &fake,
            "default_apps: [a]\nmemory_budget: 100MiB\n",
            CrashPolicy::default(),
        );
        wait_for(&sup, "a", "running", settled_running).await;

        let err = run(&sup, "b", OperationKind::Install).await.unwrap_err();

        assert_eq!(err.rpc_code(), -32004);
        assert_eq!(
            err,
            AppError::MemoryBudget {
                app: "b".into(),
                needed_bytes: 64 * MIB,
                reserved_bytes: 64 * MIB,
                budget_bytes: 100 * MIB,
            }
        );
        let text = err.to_string();
        for figure in ["67108864", "104857600"] {
            assert!(text.contains(figure), "{text}");
        }
        let p = sup
            .send(GetPackage { id: "b".into() })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.state, AppState::NotInstalled);
        assert!(fake.container("archipelago-b").is_none());
        // Stopping a frees its share: b now fits.
        run(&sup, "a", OperationKind::Stop).await.unwrap();
        wait_for(&sup, "a", "stopped", |p| p.state == AppState::Stopped).await;
        run(&sup, "b", OperationKind::Install).await.unwrap();
        wait_for(&sup, "b", "running", settled_running).await;
    }

    /// Issue 13, defect 2: an install still in flight holds its memory, so two installs
    /// asked for at once cannot both pass a budget that fits one. Failed before the
    /// ledger (both were accepted).
    #[actix_web::test]
    async fn two_installs_at_once_cannot_both_pass_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        write_app(&dir.path().join("apps"), "a", "");
        write_app(&dir.path().join("apps"), "b", "");
        let fake = Arc::new(FakeRuntime::new());
        fake.set_stop_delay(Duration::ZERO);
        let sup = start(
            dir.path(),
            &fake,
            "default_apps: []
memory_budget: 100MiB
",
            CrashPolicy::default(),
        );
        wait_for(&sup, "a", "listed", |_| true).await;
        let (a, b) = futures_util::join!(
            run(&sup, "a", OperationKind::Install),
            run(&sup, "b", OperationKind::Install)
        );
        assert!(a.is_ok(), "{a:?}");
        assert_eq!(b.unwrap_err().rpc_code(), -32004);
        wait_for(&sup, "a", "running", settled_running).await;
        let status = sup.send(GetStatus).await.unwrap();
        assert_eq!(status.memory.reserved_bytes, 64 * MIB);
    }

    /// Issue 13, defect 2: an upgrade of a running app to a larger limit is held to the
    /// budget, and so is a live raise from a catalog change (the app keeps its limit).
    /// Failed before (the upgrade was never checked, the raise applied live).
    #[actix_web::test]
    async fn raising_a_running_apps_memory_is_held_to_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let apps = dir.path().join("apps");
        write_app(&apps, "a", "");
        write_app(&apps, "b", "");
        let fake = Arc::new(FakeRuntime::new());
        let sup = start(
            dir.path(),
            &fake,
            "default_apps: [a, b]
memory_budget: 150MiB
",
            CrashPolicy::default(),
        );
        wait_for(&sup, "a", "running", settled_running).await;
        wait_for(&sup, "b", "running", settled_running).await;
        // b's catalog entry asks 100 MiB: 64 + 100 > 150.
        let text = std::fs::read_to_string(apps.join("b/manifest.yml")).unwrap();
        std::fs::write(
            apps.join("b/manifest.yml"),
            text.replace("memory_limit: 64MiB", "memory_limit: 100MiB"),
        )
        .unwrap();
        sup.send(ReloadCatalog).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            fake.container("archipelago-b").unwrap().memory_limit,
            64 * MIB,
            "raise held back"
        );
        let p = sup
            .send(GetPackage { id: "b".into() })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            p.memory_limit_bytes,
            64 * MIB,
            "the package shows the limit in force"
        );
        let err = run(&sup, "b", OperationKind::Upgrade).await.unwrap_err();
        assert_eq!(
            err,
            AppError::MemoryBudget {
                app: "b".into(),
                needed_bytes: 100 * MIB,
                reserved_bytes: 64 * MIB,
                budget_bytes: 150 * MIB,
            }
        );
        // With a stopped, the raise fits and is applied at the next reload.
        run(&sup, "a", OperationKind::Stop).await.unwrap();
        wait_for(&sup, "a", "stopped", |p| p.state == AppState::Stopped).await;
        sup.send(ReloadCatalog).await.unwrap().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while fake.container("archipelago-b").unwrap().memory_limit != 100 * MIB {
            assert!(Instant::now() < deadline, "the raise was never applied");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A request while an operation runs answers -32002 naming that operation.
    #[actix_web::test]
    async fn a_request_during_an_operation_is_a_conflict_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        write_app(&dir.path().join("apps"), "a", "  stop_timeout: 30s\n");
        let fake = Arc::new(FakeRuntime::new());
        let sup = start(
            dir.path(),
            &fake,
            "default_apps: [a]\n",
            CrashPolicy::default(),
        );
        wait_for(&sup, "a", "running", settled_running).await;
        fake.set_stop_delay(Duration::from_millis(800));

        let stop = run(&sup, "a", OperationKind::Stop).await.unwrap();
        assert_eq!(stop.status, OperationStatus::Running);
        let err = run(&sup, "a", OperationKind::Start).await.unwrap_err();

        assert_eq!(err.rpc_code(), -32002);
        assert_eq!(
            err,
            AppError::Conflict {
                app: "a".into(),
                operation: stop.id.clone(),
                kind: "stop".into(),
            }
        );
        assert!(err.to_string().contains(&stop.id), "{err}");
        let p = wait_for(&sup, "a", "stopped", |p| p.state == AppState::Stopped).await;
        assert_eq!(p.desired, Desired::Stopped);
    }

    /// Collects nothing: stands in for the supervisor as an app actor's listener.
    struct Sink;
    impl Actor for Sink {
        type Context = Context<Self>;
    }
    impl Handler<PackageChanged> for Sink {
        type Result = ();
        fn handle(&mut self, _: PackageChanged, _: &mut Context<Self>) {}
    }

    async fn app_state(app: &Addr<AppActor>, want: AppState) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let p = app.send(app::Snapshot).await.unwrap();
            let settled = p
                .operation
                .as_ref()
                .is_none_or(|o| o.status != OperationStatus::Running);
            if p.state == want && settled {
                return;
            }
            assert!(Instant::now() < deadline, "never {want:?}: {p:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// An installed app wanted running, on `img:1`.
    fn installed_record() -> crate::store::AppRecord {
        crate::store::AppRecord {
            desired: crate::api::Desired::Running,
            installed: Some(crate::store::Installed {
                version: "1".into(),
                image: "img:1".into(),
            }),
            ..Default::default()
        }
    }

    /// An actor for app `a` of `dir/apps`, on the fake engine and `dir/data`, without a
    /// supervisor; `record` makes its persisted record from its catalog entry.
    fn app_actor(
        dir: &Path,
        fake: &Arc<FakeRuntime>,
        record: impl FnOnce(&crate::catalog::CatalogApp) -> crate::store::AppRecord,
    ) -> Addr<AppActor> {
        let (catalog, problems) = Catalog::load(&dir.join("apps"));
        assert!(problems.is_empty(), "{problems:?}");
        fake.set_images(["img:1"]);
        let store = Store::open(&dir.join("data")).unwrap();
        let (events, _) = broadcast::channel(16);
        let shared = Arc::new(Shared {
            engine: fake.clone(),
            store,
            default_network: "none".into(),
            start_slots: Arc::new(Semaphore::new(1)),
            events,
            crash_policy: CrashPolicy::default(),
        });
        let id = AppId::try_from("a".to_string()).unwrap();
        let app = catalog.get(&id).unwrap().clone();
        let record = record(&app);
        AppActor::new(app, record, shared, Sink.start().recipient()).start()
    }

    /// A tick whose list was taken before a stop ended still shows the container running;
    /// the app must not plan a second stop (or read `running`) from it.
    #[actix_web::test]
    async fn a_tick_listed_before_an_operation_ended_is_not_planned_from() {
        let dir = tempfile::tempdir().unwrap();
        write_app(&dir.path().join("apps"), "a", "");
        let fake = Arc::new(FakeRuntime::new());
        let actor = app_actor(dir.path(), &fake, |_| installed_record());
        let observe = |container, listed_at| Observe {
            container,
            deps: Deps::Ready,
            listed_at,
        };
        actor
            .send(observe(None, std::time::Instant::now()))
            .await
            .unwrap();
        app_state(&actor, AppState::Running).await;

        let listed_at = std::time::Instant::now();
        let stale = fake.list().await.unwrap().pop();
        assert!(stale.as_ref().is_some_and(|c| c.state.is_running()));
        actor
            .send(app::Command {
                kind: OperationKind::Stop,
                params: OpParams::default(),
            })
            .await
            .unwrap()
            .unwrap();
        app_state(&actor, AppState::Stopped).await;

        let actions = actor.send(observe(stale, listed_at)).await.unwrap();
        assert_eq!(actions, 0);
        tokio::time::sleep(Duration::from_millis(100)).await;
        app_state(&actor, AppState::Stopped).await;
        let stops = fake
            .calls()
            .iter()
            .filter(|c| matches!(c, crate::engine::fake::Call::Stop(..)))
            .count();
        assert_eq!(stops, 1, "a second stop was planned from a stale list");
    }

    /// A policy that gives up after three quick crashes, with short backoffs.
    fn three_crashes() -> CrashPolicy {
        CrashPolicy {
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(50),
            stable_after: Duration::from_secs(60),
            max_quick_crashes: 3,
        }
    }

    /// Crashes app `a` `n` times, each time once the supervisor has it running again.
    async fn crash_times(sup: &Addr<Supervisor>, fake: &FakeRuntime, n: u32) {
        let mut starts: Vec<String> = vec![];
        for crash in 1..=n {
            // Running again on a new start (the supervisor restarted it after the crash).
            let deadline = Instant::now() + Duration::from_secs(5);
            let stamp = loop {
                let c = fake.container("archipelago-a");
                let stamp = c.as_ref().and_then(|c| c.started_at.clone());
                let fresh = stamp.as_ref().is_some_and(|s| !starts.contains(s));
                if fresh && c.is_some_and(|c| c.state.is_running()) {
                    break stamp.unwrap_or_default();
                }
                assert!(
                    Instant::now() < deadline,
                    "not restarted before crash {crash}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            wait_for(sup, "a", "running", settled_running).await;
            starts.push(stamp);
            assert!(fake.crash("a", 1), "crash {crash}");
        }
    }

    fn starts(fake: &FakeRuntime) -> usize {
        fake.calls()
            .iter()
            .filter(|c| matches!(c, crate::engine::fake::Call::Start(..)))
            .count()
    }

    /// A supervisor started again over a given-up app (as after kill -9) keeps it
    /// `failed` with its error and does not start it; Retry does.
    #[actix_web::test]
    async fn a_failed_app_stays_failed_across_a_supervisor_restart() {
        let dir = tempfile::tempdir().unwrap();
        write_app(&dir.path().join("apps"), "a", "  restart: always\n");
        let fake = Arc::new(FakeRuntime::new());
        let first = start(dir.path(), &fake, "default_apps: [a]\n", three_crashes());
        crash_times(&first, &fake, 3).await;
        wait_for(&first, "a", "failed", |p| p.state == AppState::Failed).await;
        let before = starts(&fake);

        // The first supervisor has given up and does nothing more; the second reads the
        // same data folder.
        let second = start(dir.path(), &fake, "default_apps: [a]\n", three_crashes());
        let p = wait_for(&second, "a", "failed", |p| p.state == AppState::Failed).await;
        assert!(
            p.last_error
                .as_deref()
                .unwrap_or("")
                .contains("crashed 3 times"),
            "{p:?}"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(starts(&fake), before, "started again after the restart");
        let p = second
            .send(GetPackage { id: "a".into() })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.state, AppState::Failed);

        run(&second, "a", OperationKind::Start).await.unwrap();
        let p = wait_for(&second, "a", "running again", settled_running).await;
        assert_eq!(p.last_error, None);
        let saved = Store::open(&dir.path().join("data"))
            .unwrap()
            .load("a")
            .unwrap()
            .unwrap()
            .record;
        assert_eq!(saved.crashes, None, "Retry forgets the history on disk too");
    }

    /// An app restored in the middle of a crash backoff waits out what is left of it
    /// (`restarting`), then starts; a history of another manifest is not restored.
    #[actix_web::test]
    async fn a_backoff_in_progress_is_waited_out_after_a_restart() {
        for (same_manifest, held) in [(true, true), (false, false)] {
            let dir = tempfile::tempdir().unwrap();
            write_app(&dir.path().join("apps"), "a", "  restart: always\n");
            let fake = Arc::new(FakeRuntime::new());
            let restart_at = std::time::SystemTime::now() + Duration::from_millis(800);
            let actor = app_actor(dir.path(), &fake, |app| crate::store::AppRecord {
                crashes: Some(crate::store::CrashRecord {
                    quick_crashes: 2,
                    given_up: false,
                    started_at: None,
                    restart_at: Some(restart_at),
                    manifest: Some(match same_manifest {
                        true => app::manifest_digest(&app.manifest),
                        false => "another".into(),
                    }),
                }),
                ..installed_record()
            });
            let began = Instant::now();
            actor
                .send(Observe {
                    container: None,
                    deps: Deps::Ready,
                    listed_at: std::time::Instant::now(),
                })
                .await
                .unwrap();
            if held {
                let p = actor.send(app::Snapshot).await.unwrap();
                assert_eq!(p.state, AppState::Restarting);
                tokio::time::sleep(Duration::from_millis(500)).await;
                assert_eq!(starts(&fake), 0, "started before the backoff ended");
            }
            app_state(&actor, AppState::Running).await;
            let waited = began.elapsed();
            assert_eq!(
                waited >= Duration::from_millis(700),
                held,
                "same manifest {same_manifest}: running after {waited:?}"
            );
        }
    }

    /// Operation ids never repeat across supervisor restarts, even when the new process
    /// has the old one's pid (here: the same process): an actor made again, as at a
    /// restart, does not hand out its predecessor's ids.
    #[actix_web::test]
    async fn operation_ids_are_unique_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        write_app(&dir.path().join("apps"), "a", "");
        let fake = Arc::new(FakeRuntime::new());
        let stop = || app::Command {
            kind: OperationKind::Stop,
            params: OpParams::default(),
        };
        let mut ids = vec![];
        for _boot in 0..2 {
            let actor = app_actor(dir.path(), &fake, |_| crate::store::AppRecord {
                desired: Desired::Stopped,
                ..installed_record()
            });
            let op = actor.send(stop()).await.unwrap().unwrap();
            assert_eq!(app::app_of_operation(&op.id), Some("a"), "{}", op.id);
            ids.push(op.id);
        }
        assert_ne!(ids[0], ids[1], "the same id after a restart");
    }

    /// `package.stop` while an app waits out a crash backoff (`restarting`) is accepted
    /// and stops the restart: the app ends `stopped` and is not started again.
    #[actix_web::test]
    async fn stop_during_a_crash_backoff_is_accepted_and_cancels_the_restart() {
        let dir = tempfile::tempdir().unwrap();
        write_app(&dir.path().join("apps"), "a", "  restart: always\n");
        let fake = Arc::new(FakeRuntime::new());
        let policy = CrashPolicy {
            initial_backoff: Duration::from_millis(1500),
            ..three_crashes()
        };
        let sup = start(dir.path(), &fake, "default_apps: [a]\n", policy);
        // The first crash restarts at once, the second waits 1.5 s.
        crash_times(&sup, &fake, 2).await;
        wait_for(&sup, "a", "restarting", |p| p.state == AppState::Restarting).await;
        let before = starts(&fake);

        let op = run(&sup, "a", OperationKind::Stop).await.unwrap();

        assert_eq!(op.kind, OperationKind::Stop);
        let p = wait_for(&sup, "a", "stopped", |p| {
            p.state == AppState::Stopped
                && p.operation
                    .as_ref()
                    .is_some_and(|o| o.status != OperationStatus::Running)
        })
        .await;
        assert_eq!(p.desired, Desired::Stopped);
        tokio::time::sleep(Duration::from_millis(2000)).await;
        assert_eq!(starts(&fake), before, "restarted after the stop");
        let p = sup
            .send(GetPackage { id: "a".into() })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.state, AppState::Stopped);
    }

    /// A health check that a catalog reload adds to a running app is probed: the app
    /// turns `healthy` (instead of `starting` for ever, which held its dependants back).
    #[actix_web::test]
    async fn a_health_check_added_by_a_reload_is_probed() {
        let dir = tempfile::tempdir().unwrap();
        let apps = dir.path().join("apps");
        write_app(&apps, "a", "");
        let fake = Arc::new(FakeRuntime::new());
        let sup = start(
            dir.path(),
            &fake,
            "default_apps: [a]\n",
            CrashPolicy::default(),
        );
        let p = wait_for(&sup, "a", "running", settled_running).await;
        assert_eq!(p.health, Health::None);

        write_app(
            &apps,
            "a",
            "  health:\n    exec: [\"true\"]\n    interval: 50ms\n",
        );
        sup.send(ReloadCatalog).await.unwrap().unwrap();

        wait_for(&sup, "a", "healthy", |p| p.health == Health::Healthy).await;
        assert!(fake.calls().iter().any(|c| matches!(
            c,
            crate::engine::fake::Call::Exec(_, cmd) if cmd == &["true".to_string()]
        )));
    }

    /// `${secret:…}` in a `post_create` hook and in an exec health check reach the
    /// engine rendered, as in env and command.
    #[actix_web::test]
    async fn hook_and_health_exec_commands_render_secrets() {
        let dir = tempfile::tempdir().unwrap();
        write_app(
            &dir.path().join("apps"),
            "a",
            concat!(
                "  health:\n    exec: [\"check\", \"--token=${secret:token}\"]\n    interval: 50ms\n",
                "hooks:\n  post_create:\n    - exec: [\"init\", \"${secret:token}\"]\n",
                "secrets:\n  token: {kind: hex, bytes: 8}\n",
            ),
        );
        let fake = Arc::new(FakeRuntime::new());
        let sup = start(
            dir.path(),
            &fake,
            "default_apps: [a]\n",
            CrashPolicy::default(),
        );
        wait_for(&sup, "a", "running", settled_running).await;
        // At least one probe after the start.
        tokio::time::sleep(Duration::from_millis(200)).await;

        let token = std::fs::read_to_string(dir.path().join("data/secrets/a/token")).unwrap();
        let execs: Vec<Vec<String>> = fake
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                crate::engine::fake::Call::Exec(_, cmd) => Some(cmd),
                _ => None,
            })
            .collect();
        let hook = vec!["init".to_string(), token.clone()];
        let probe = vec!["check".to_string(), format!("--token={token}")];
        assert!(execs.contains(&hook), "{execs:?}");
        assert!(execs.contains(&probe), "{execs:?}");
        assert!(
            !execs.iter().flatten().any(|arg| arg.contains("${secret:")),
            "{execs:?}"
        );
    }

    /// A catalog edit that adds a secret (and uses it) to a running app generates the
    /// secret and recreates the container with it; it never takes the app for one that
    /// is not installed and force-removes its container.
    #[actix_web::test]
    async fn a_catalog_edit_adding_a_secret_generates_it_and_keeps_the_app() {
        let dir = tempfile::tempdir().unwrap();
        let apps = dir.path().join("apps");
        write_app(&apps, "a", "");
        let fake = Arc::new(FakeRuntime::new());
        let sup = start(
            dir.path(),
            &fake,
            "default_apps: [a]\n",
            CrashPolicy::default(),
        );
        wait_for(&sup, "a", "running", settled_running).await;

        write_app(
            &apps,
            "a",
            "  env:\n    TOKEN: \"${secret:token}\"\nsecrets:\n  token: {kind: hex, bytes: 8}\n",
        );
        sup.send(ReloadCatalog).await.unwrap().unwrap();

        let token_file = dir.path().join("data/secrets/a/token");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let c = fake.container("archipelago-a");
            let token = std::fs::read_to_string(&token_file).ok();
            let has_token = |c: &crate::engine::fake::FakeContainer| {
                token
                    .as_ref()
                    .is_some_and(|t| c.spec.env.get("TOKEN") == Some(t))
            };
            if c.as_ref()
                .is_some_and(|c| c.state.is_running() && has_token(c))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "never recreated with the token: {c:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let p = wait_for(&sup, "a", "running", settled_running).await;
        assert_eq!(p.last_error, None);
        assert_eq!(p.desired, Desired::Running);
    }

    /// An installed app whose wanted spec cannot be computed (a dependency's secret is
    /// missing) keeps its running container: it is not an orphan.
    #[actix_web::test]
    async fn an_installed_app_without_a_wanted_spec_keeps_its_container() {
        let dir = tempfile::tempdir().unwrap();
        let apps = dir.path().join("apps");
        write_app(&apps, "z", "secrets:\n  tok: {kind: hex, bytes: 8}\n");
        write_app(
            &apps,
            "a",
            "  env:\n    TOK: \"${secret:z/tok}\"\ndependencies: [z]\n",
        );
        let fake = Arc::new(FakeRuntime::new());
        // A's container runs with z's secret, which then goes missing.
        let store = Store::open(&dir.path().join("data")).unwrap();
        let secret = store.secrets_dir("z").join("tok");
        std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
        std::fs::write(&secret, "abcd").unwrap();
        let (catalog, _) = Catalog::load(&apps);
        let a = catalog
            .get(&AppId::try_from("a".to_string()).unwrap())
            .unwrap();
        let spec = crate::spec::container_spec(a, &store, "none").unwrap();
        fake.set_images(["img:1"]);
        fake.create(&spec).await.unwrap();
        fake.start("archipelago-a").await.unwrap();
        std::fs::remove_file(&secret).unwrap();

        let actor = app_actor(dir.path(), &fake, |_| installed_record());
        let container = fake.list().await.unwrap().pop();
        actor
            .send(Observe {
                container,
                deps: Deps::Ready,
                listed_at: std::time::Instant::now(),
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;

        let removes = fake
            .calls()
            .iter()
            .filter(|c| matches!(c, crate::engine::fake::Call::Remove(..)))
            .count();
        assert_eq!(removes, 0, "the container was removed as an orphan");
        assert!(fake.container("archipelago-a").unwrap().state.is_running());
        let p = actor.send(app::Snapshot).await.unwrap();
        assert_eq!(p.state, AppState::Running);
        let error = p.last_error.unwrap_or_default();
        assert!(error.contains("z/tok"), "{error}");
    }

    /// Uninstalling every app does not make the next boot a first boot: the default
    /// apps are installed once in the node's life, not again.
    #[actix_web::test]
    async fn a_node_with_every_app_uninstalled_is_not_booted_as_new() {
        let dir = tempfile::tempdir().unwrap();
        write_app(&dir.path().join("apps"), "a", "");
        let fake = Arc::new(FakeRuntime::new());
        let first = start(
            dir.path(),
            &fake,
            "default_apps: [a]\n",
            CrashPolicy::default(),
        );
        wait_for(&first, "a", "running", settled_running).await;
        run(&first, "a", OperationKind::Uninstall).await.unwrap();
        wait_for(&first, "a", "uninstalled", |p| {
            p.state == AppState::NotInstalled
        })
        .await;
        let state = dir.path().join("data/state");
        assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0);

        // The next boot, on an engine of its own so the first supervisor cannot interfere.
        let engine = Arc::new(FakeRuntime::new());
        let second = start(
            dir.path(),
            &engine,
            "default_apps: [a]\n",
            CrashPolicy::default(),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let p = second
            .send(GetPackage { id: "a".into() })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.state, AppState::NotInstalled, "{p:?}");
        assert_eq!(p.desired, Desired::NotInstalled);
        assert!(engine.container("archipelago-a").is_none());
    }

    /// A container that exits while its start waits for health fails the start and
    /// counts as one crash, not two (once as a failed start, once as an exit).
    #[actix_web::test]
    async fn an_exit_during_a_start_counts_as_one_crash() {
        let dir = tempfile::tempdir().unwrap();
        write_app(
            &dir.path().join("apps"),
            "a",
            "  restart: always\n  health:\n    exec: [\"check\"]\n    interval: 50ms\n    start_period: 30s\n",
        );
        let fake = Arc::new(FakeRuntime::new());
        fake.set_exec_result(
            "archipelago-a",
            crate::engine::ExecOutput {
                exit_code: 1,
                output: String::new(),
            },
        );
        let policy = CrashPolicy {
            max_quick_crashes: 2,
            ..three_crashes()
        };
        let sup = start(dir.path(), &fake, "default_apps: [a]\n", policy);
        // Waiting for health: the container runs, the start has not ended.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !fake
            .container("archipelago-a")
            .is_some_and(|c| c.state.is_running())
        {
            assert!(Instant::now() < deadline, "never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(fake.crash("a", 1));

        // One crash of two allowed: restarted, not given up.
        let deadline = Instant::now() + Duration::from_secs(5);
        while starts(&fake) < 2 {
            let p = sup
                .send(GetPackage { id: "a".into() })
                .await
                .unwrap()
                .unwrap();
            assert_ne!(p.state, AppState::Failed, "{p:?}");
            assert!(Instant::now() < deadline, "never restarted: {p:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Three quick crashes (the policy's limit) end in `failed`; Retry (start) clears it.
    #[actix_web::test]
    async fn a_crash_loop_ends_failed_and_retry_clears_it() {
        let dir = tempfile::tempdir().unwrap();
        write_app(&dir.path().join("apps"), "a", "  restart: always\n");
        let fake = Arc::new(FakeRuntime::new());
        let sup = start(dir.path(), &fake, "default_apps: [a]\n", three_crashes());
        crash_times(&sup, &fake, 3).await;
        let p = wait_for(&sup, "a", "failed", |p| p.state == AppState::Failed).await;
        let error = p.last_error.unwrap_or_default();
        assert!(error.contains("crashed 3 times"), "{error}");
        // Given up: no restart comes, however many ticks pass.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let c = fake.container("archipelago-a").unwrap();
        assert!(!c.state.is_running());
        assert_eq!(
            sup.send(GetPackage { id: "a".into() })
                .await
                .unwrap()
                .unwrap()
                .state,
            AppState::Failed
        );

        let op = run(&sup, "a", OperationKind::Start).await.unwrap();
        assert_eq!(op.kind, OperationKind::Start);
        let p = wait_for(&sup, "a", "running again", settled_running).await;
        assert_eq!(p.last_error, None);
        assert!(fake.container("archipelago-a").unwrap().state.is_running());
    }

    /// An app whose folder leaves `apps_dir` loses its actor when it is not installed,
    /// and stays (on its last manifest, no update offered) when it is; both are noticed
    /// on disk without `catalog.reload`.
    #[actix_web::test]
    async fn apps_leaving_the_catalog_are_retired_unless_installed() {
        let dir = tempfile::tempdir().unwrap();
        let apps = dir.path().join("apps");
        write_app(&apps, "a", "");
        write_app(&apps, "b", "");
        let fake = Arc::new(FakeRuntime::new());
        let sup = start(
            dir.path(),
            &fake,
            "default_apps: [a]\n",
            CrashPolicy::default(),
        );
        wait_for(&sup, "a", "running", settled_running).await;
        // An update is offered, then both folders go away.
        std::fs::write(
            apps.join("a/manifest.yml"),
            "id: a\nname: a\nversion: \"2\"\ncontainer:\n  image: img:2\n  network: none\n  memory_limit: 64MiB\n",
        )
        .unwrap();
        wait_for(&sup, "a", "offering 2", |p| p.update_available).await;
        std::fs::remove_dir_all(apps.join("a")).unwrap();
        std::fs::remove_dir_all(apps.join("b")).unwrap();

        let deadline = Instant::now() + Duration::from_secs(5);
        while sup
            .send(ListPackages)
            .await
            .unwrap()
            .iter()
            .any(|p| p.id == "b")
        {
            assert!(Instant::now() < deadline, "b never retired");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let err = sup
            .send(GetPackage { id: "b".into() })
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err, AppError::UnknownApp { id: "b".into() });
        let a = wait_for(&sup, "a", "without an update", |p| !p.update_available).await;
        assert_eq!(a.state, AppState::Running);
        assert_eq!(a.installed_version.as_deref(), Some("1"));
        assert!(fake.container("archipelago-a").unwrap().state.is_running());
        // `b` comes back with its folder.
        write_app(&apps, "b", "");
        wait_for(&sup, "b", "back", |p| p.state == AppState::NotInstalled).await;
    }
}
