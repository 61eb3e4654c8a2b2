//! The long work of each operation, run as a future spawned by the app's actor. Each
//! step is journaled in the app's record before it acts, so a supervisor killed midway
//! finishes or undoes the operation at the next boot ([`recover`]).
//!
//! These futures own the app's record while they run (the actor writes nothing
//! meanwhile) and hand it back when they end. They do not decide whether an operation may
//! run (the lifecycle guards and the supervisor do), and they keep no state between
//! operations.
//!
//! This file holds what every operation shares: [`OpEnv`], [`OpEnd`], [`run`] (the
//! dispatch), the journal, [`recover`] (its dispatch), image fetching and the blocking-pool
//! helpers. One operation per file beside it, each with its recovery:
//! - `start.rs`: start, stop and restart's pieces, container creation (volume owners),
//!   `post_create` hooks and the health gate;
//! - `install.rs`: install;
//! - `uninstall.rs`: uninstall, with purge;
//! - `swap.rs`: upgrade and rollback (the swap, its undo and its recovery);
//! - `snapshots.rs`: the volume snapshots a swap takes and restores.
//!
//! Every step fails with an [`OpError`] (`error.rs`) carrying its cause; its text is what
//! the owner reads as the operation's `error`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::api::{Desired, Health, OperationKind, OperationProgress};
use crate::catalog::CatalogApp;
use crate::engine::{
    container_name, ContainerRuntime, ContainerSpec, ContainerSummary, EngineError,
    EngineErrorKind, Progress, LABEL_SPEC_HASH, LABEL_VERSION,
};
use crate::manifest::{HealthCheck, HealthProbe, ResolvedSource, SnapshotPolicy};
use crate::secrets;
use crate::spec::container_spec;
use crate::store::{AppRecord, Installed, JournalEntry, JournalStep, Store};

use adopt::adopt;
pub use error::OpError;
use install::install;
use start::{start, stop};
use swap::{recover_swap, rollback, swap, upgrade};
use uninstall::uninstall;

mod adopt;
mod error;
mod install;
mod snapshots;
mod start;
mod swap;
mod uninstall;

/// Suffix of the old container kept during an upgrade.
pub const PREVIOUS_SUFFIX: &str = "-previous";

/// What an operation needs besides the record.
#[derive(Clone)]
pub struct OpEnv {
    pub engine: Arc<dyn ContainerRuntime>,
    pub store: Store,
    pub app: CatalogApp,
    pub default_network: String,
    /// Bounds how many apps start at once (boot starts independent apps in parallel).
    pub start_slots: Arc<Semaphore>,
    pub progress: Arc<dyn Fn(OperationProgress) + Send + Sync>,
}

impl OpEnv {
    fn id(&self) -> &str {
        self.app.manifest.id.as_str()
    }

    fn say(&self, message: impl Into<String>) {
        (self.progress)(OperationProgress {
            message: message.into(),
            done: None,
            total: None,
        });
    }

    /// Persists the record (temp file, fsync, rename) on the blocking pool: an fsync
    /// during a large copy can take long, and must not hold up the actors' thread.
    async fn save(&self, record: &AppRecord) -> Result<(), OpError> {
        let (store, id, record) = (self.store.clone(), self.id().to_string(), record.clone());
        blocking(move || Ok(store.save(&id, &record)?)).await
    }

    /// Removes the app's state file, off the actors' thread.
    async fn remove_state(&self) -> Result<(), OpError> {
        let (store, id) = (self.store.clone(), self.id().to_string());
        blocking(move || Ok(store.remove(&id)?)).await
    }

    /// Reports bytes done of a total, with a message.
    fn say_bytes(&self, message: &str, done: u64, total: u64) {
        (self.progress)(OperationProgress {
            message: message.to_string(),
            done: Some(done),
            total: Some(total),
        });
    }

    /// The app's own volumes that an upgrade copies (`snapshot: copy`).
    fn snapshot_volumes(&self) -> Vec<String> {
        self.app
            .manifest
            .container
            .volumes
            .iter()
            .filter(|v| v.is_own() && v.snapshot == SnapshotPolicy::Copy)
            .map(|v| v.name.clone())
            .collect()
    }

    /// The image and version the catalog offers now.
    pub fn catalog_install(&self) -> Installed {
        let m = &self.app.manifest;
        Installed {
            version: m.version.clone(),
            image: m.container.image_ref(&m.id, &m.version),
        }
    }

    /// The spec for the installed image (not the catalog's: moving to a new image is an
    /// upgrade, never a side effect of a reconcile). A secret the manifest declares but
    /// that does not exist yet (a catalog change added it) is generated first; existing
    /// ones are kept.
    pub fn spec_for(&self, installed: &Installed) -> Result<ContainerSpec, OpError> {
        secrets::generate(&self.store, self.id(), &self.app.manifest.secrets)?;
        let mut spec = container_spec(&self.app, &self.store, &self.default_network)?;
        spec.image = installed.image.clone();
        spec.version = installed.version.clone();
        Ok(spec)
    }

    /// The manifest's health check with `${secret:…}` rendered in an `exec` probe, as it
    /// is in env and command; `None` without a check.
    pub fn health_check(&self) -> Result<Option<HealthCheck>, OpError> {
        let Some(check) = &self.app.manifest.container.health else {
            return Ok(None);
        };
        let mut check = check.clone();
        if let HealthProbe::Exec(cmd) = &check.probe {
            let cmd =
                secrets::render_all(&self.store, self.id(), cmd).map_err(OpError::HealthSecret)?;
            check.probe = HealthProbe::Exec(cmd);
        }
        Ok(Some(check))
    }
}

/// How an operation ended.
pub struct OpEnd {
    pub record: AppRecord,
    pub result: Result<String, OpError>,
    /// The container was started by this operation (for the crash tracker).
    pub started: bool,
    pub health: Option<Health>,
    /// The app's container as the operation left it (`Some(None)`: there is none);
    /// `None` when the engine could not say.
    pub observed: Option<Option<ContainerSummary>>,
}

/// The app's container as the engine reports it now: `Some(None)` when there is none,
/// `None` when the engine could not say.
pub async fn observe(engine: &dyn ContainerRuntime, app: &str) -> Option<Option<ContainerSummary>> {
    match engine.inspect(&container_name(app)).await {
        Ok(d) => Some(Some(ContainerSummary {
            id: d.id,
            name: d.name,
            app: app.to_string(),
            spec_hash: d.labels.get(LABEL_SPEC_HASH).cloned(),
            version: d.labels.get(LABEL_VERSION).cloned(),
            image: d.image,
            state: d.state,
        })),
        Err(e) if is_not_found(&e) => Some(None),
        Err(_) => None,
    }
}

/// Parameters an operation was asked with.
#[derive(Debug, Clone, Default)]
pub struct OpParams {
    pub purge: bool,
    /// Dependencies are running and healthy, so an install may start the app.
    pub deps_ready: bool,
    /// Only for adopt: the container to take over, by name or id.
    pub container: Option<String>,
}

/// Runs one operation to its end.
pub async fn run(
    kind: OperationKind,
    env: OpEnv,
    mut record: AppRecord,
    op_id: String,
    params: OpParams,
) -> OpEnd {
    let mut started = false;
    let mut health = None;
    let result = match kind {
        OperationKind::Install => {
            install(&env, &mut record, &op_id, params, &mut started, &mut health).await
        }
        OperationKind::Start => start(&env, &mut record, &mut started, &mut health).await,
        OperationKind::Stop => stop(&env).await.map(|_| "stopped".to_string()),
        OperationKind::Restart => match stop(&env).await {
            Ok(()) => start(&env, &mut record, &mut started, &mut health).await,
            Err(e) => Err(e),
        },
        OperationKind::Upgrade | OperationKind::Rollback => {
            // The arm's own kind: `Upgrade`, or else `Rollback`.
            let plan = match kind {
                OperationKind::Upgrade => upgrade(&env, &record),
                _ => rollback(&env, &record),
            };
            match plan {
                Ok(plan) => swap(&env, &mut record, &op_id, plan, &mut started, &mut health).await,
                Err(e) => Err(e),
            }
        }
        OperationKind::Uninstall => uninstall(&env, &mut record, &op_id, params.purge).await,
        OperationKind::Adopt => {
            let container = params.container.clone().unwrap_or_default();
            adopt(&env, &mut record, &container, &mut health).await
        }
    };
    record.last_error = result.as_ref().err().map(ToString::to_string);
    // A finished uninstall removed the state file on purpose: do not write it back.
    let persist = kind != OperationKind::Uninstall || result.is_err();
    finish(&env, record, result, started, health, persist).await
}

/// Ends an operation: clears its journal, persists the record when asked, and hands it
/// back with the result.
async fn finish(
    env: &OpEnv,
    mut record: AppRecord,
    result: Result<String, OpError>,
    started: bool,
    health: Option<Health>,
    persist: bool,
) -> OpEnd {
    record.journal = None;
    let observed = observe(env.engine.as_ref(), env.id()).await;
    release_replaced_adoption(env, &mut record, &observed);
    let mut result = result;
    if !persist {
        // Nothing left to remember (uninstalled, or an install that never got going):
        // no state file either, so the disk never holds a stale journal.
        if let Err(e) = env.remove_state().await {
            tracing::error!(app = env.id(), error = %e, "could not remove state");
        }
    } else if let Err(e) = env.save(&record).await {
        // The work is done but not recorded: say so, the owner must not be told
        // all is well while the disk holds an older wish.
        tracing::error!(app = env.id(), error = %e, "could not persist state");
        let source = Box::new(e);
        result = Err(match result {
            Ok(outcome) => OpError::NotPersisted { outcome, source },
            Err(error) => OpError::FailedNotPersisted {
                error: Box::new(error),
                source,
            },
        });
        record.last_error = result.as_ref().err().map(ToString::to_string);
    }
    OpEnd {
        record,
        result,
        started,
        health,
        observed,
    }
}

/// An adopted container that the operation replaced (an upgrade, a recreate) or removed
/// is no longer the app's: its adoption ends, and the new container carries our labels.
fn release_replaced_adoption(
    env: &OpEnv,
    record: &mut AppRecord,
    observed: &Option<Option<ContainerSummary>>,
) {
    let Some(adopted) = &record.adopted else {
        return;
    };
    let replaced = match observed {
        Some(Some(c)) => c.id != adopted.container_id,
        Some(None) => true,
        None => false,
    };
    if replaced {
        tracing::info!(app = env.id(), container = %adopted.container_id, "the adopted container was replaced");
        env.engine.release(&adopted.container_id);
        record.adopted = None;
    }
}

async fn journal(
    env: &OpEnv,
    record: &mut AppRecord,
    op_id: &str,
    kind: OperationKind,
    step: JournalStep,
) -> Result<(), OpError> {
    match &mut record.journal {
        Some(j) if j.operation == op_id => j.step = step,
        _ => {
            record.journal = Some(JournalEntry {
                operation: op_id.to_string(),
                kind,
                step,
                started_at: crate::api::now(),
                from: None,
                to: None,
                snapshot: None,
                purge: false,
            })
        }
    }
    env.save(record).await
}

/// Makes the image of `installed` present: pulled, or built from the manifest's context.
async fn fetch_image(env: &OpEnv, installed: &Installed, force: bool) -> Result<(), OpError> {
    let engine = &env.engine;
    if !force {
        if let Ok(Some(_)) = engine.image_inspect(&installed.image).await {
            return Ok(());
        }
    }
    let m = &env.app.manifest;
    let source = m
        .container
        .resolve(&env.app.dir, &m.id, &installed.version)?;
    let progress = env.progress.clone();
    let sink = move |p: Progress| {
        progress(OperationProgress {
            message: p.message,
            done: p.done,
            total: p.total,
        })
    };
    match source {
        ResolvedSource::Pull { .. } => {
            env.say(format!("pulling {}", installed.image));
            engine.pull(&installed.image, &sink).await
        }
        ResolvedSource::Build {
            context,
            dockerfile,
            args,
            ..
        } => {
            env.say(format!("building {}", installed.image));
            let req = crate::engine::BuildRequest {
                context,
                dockerfile,
                args,
                tag: installed.image.clone(),
            };
            engine.build(&req, &sink).await
        }
    }
    .map_err(OpError::from)
}

/// Runs blocking file work on tokio's blocking pool, off the actors' thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, OpError> + Send + 'static,
) -> Result<T, OpError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(OpError::Panicked)?
}

async fn remove_quietly(engine: &dyn ContainerRuntime, name: &str) -> Result<(), OpError> {
    match engine.remove(name).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == EngineErrorKind::ContainerNotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn remove_tree(path: &Path) -> Result<(), OpError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(OpError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// [`remove_tree`] on the blocking pool.
async fn remove_tree_off_thread(path: PathBuf) -> Result<(), OpError> {
    blocking(move || remove_tree(&path)).await
}

/// Finishes or undoes an operation a previous supervisor left half-done, from its
/// journal. Install and uninstall are finished (their steps are idempotent; an uninstall
/// keeps its `purge`); an upgrade or rollback is undone (the old container and the
/// snapshot put back) unless it had committed, in which case it is finished.
pub async fn recover(env: &OpEnv, mut record: AppRecord) -> OpEnd {
    let Some(j) = record.journal.clone() else {
        return OpEnd {
            record,
            result: Ok("nothing to recover".into()),
            started: false,
            health: None,
            observed: None,
        };
    };
    tracing::warn!(app = env.id(), operation = %j.operation, kind = ?j.kind, step = %j.step, "recovering an interrupted operation");
    let mut started = false;
    let mut health = None;
    let result = match j.kind {
        // An accepted install is finished: every step is idempotent.
        OperationKind::Install => {
            let params = OpParams::default();
            install(
                env,
                &mut record,
                &j.operation,
                params,
                &mut started,
                &mut health,
            )
            .await
        }
        OperationKind::Uninstall => uninstall(env, &mut record, &j.operation, j.purge).await,
        OperationKind::Upgrade | OperationKind::Rollback => recover_swap(env, &record, &j).await,
        _ => Ok("nothing to recover".into()),
    };
    record.last_error = result.as_ref().err().map(ToString::to_string);
    let persist = record.installed.is_some() || record.desired != Desired::NotInstalled;
    finish(env, record, result, started, health, persist).await
}

/// Convenience for callers matching engine errors by kind.
pub fn is_not_found(e: &EngineError) -> bool {
    e.kind() == EngineErrorKind::ContainerNotFound
}

/// Helpers shared by the operations' unit tests.
#[cfg(test)]
mod test_util {
    use std::path::Path;
    use std::sync::Arc;

    use tokio::sync::Semaphore;

    use super::OpEnv;
    use crate::catalog::CatalogApp;
    use crate::engine::FakeRuntime;
    use crate::manifest::AppManifest;
    use crate::store::{Installed, Store};

    pub(super) const ID: &str = "app";
    pub(super) const OP: &str = "app-1-1";

    pub(super) fn v(n: u32) -> Installed {
        Installed {
            version: n.to_string(),
            image: format!("img:{n}"),
        }
    }

    /// An env whose catalog offers version 2 of a one-volume app.
    pub(super) fn env(dir: &Path, fake: Arc<FakeRuntime>) -> OpEnv {
        let app_dir = dir.join("apps").join(ID);
        std::fs::create_dir_all(&app_dir).unwrap();
        let path = app_dir.join("manifest.yml");
        let text = format!(
            "id: {ID}\nname: App\nversion: \"2\"\ncontainer:\n  image: img:2\n  network: none\n  memory_limit: 64MiB\n  volumes: [\"data:/data\"]\n"
        );
        let manifest = AppManifest::from_yaml(&path, &text).unwrap();
        OpEnv {
            engine: fake,
            store: Store::open(&dir.join("data")).unwrap(),
            app: CatalogApp {
                manifest,
                dir: app_dir,
                path,
            },
            default_network: "none".into(),
            start_slots: Arc::new(Semaphore::new(1)),
            progress: Arc::new(|_| {}),
        }
    }
}
