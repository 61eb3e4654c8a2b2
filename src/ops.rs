//! The long work of each operation, run as a future spawned by the app's actor. Each
//! step is journaled in the app's record before it acts, so a supervisor killed midway
//! finishes or undoes the operation at the next boot ([`recover`]).
//!
//! These futures own the app's record while they run (the actor writes nothing
//! meanwhile) and hand it back when they end.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::api::{Desired, Health, OperationKind, OperationProgress};
use crate::catalog::CatalogApp;
use crate::engine::{
    container_name, ContainerRuntime, ContainerSpec, ContainerSummary, EngineError,
    EngineErrorKind, Progress, LABEL_SPEC_HASH, LABEL_VERSION,
};
use crate::health::{self, HealthTracker};
use crate::manifest::{HealthCheck, HealthProbe, ResolvedSource, SnapshotPolicy};
use crate::owner;
use crate::secrets;
use crate::snapshot;
use crate::spec::{container_spec, create_volume_dirs};
use crate::store::{AppRecord, Installed, JournalEntry, JournalStep, Store};

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
    async fn save(&self, record: &AppRecord) -> Result<(), String> {
        let (store, id, record) = (self.store.clone(), self.id().to_string(), record.clone());
        blocking(move || store.save(&id, &record).map_err(|e| e.to_string())).await
    }

    /// Removes the app's state file, off the actors' thread.
    async fn remove_state(&self) -> Result<(), String> {
        let (store, id) = (self.store.clone(), self.id().to_string());
        blocking(move || store.remove(&id).map_err(|e| e.to_string())).await
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
    pub fn spec_for(&self, installed: &Installed) -> Result<ContainerSpec, String> {
        secrets::generate(&self.store, self.id(), &self.app.manifest.secrets)
            .map_err(|e| e.to_string())?;
        let mut spec = container_spec(&self.app, &self.store, &self.default_network)
            .map_err(|e| e.to_string())?;
        spec.image = installed.image.clone();
        spec.version = installed.version.clone();
        Ok(spec)
    }

    /// The manifest's health check with `${secret:…}` rendered in an `exec` probe, as it
    /// is in env and command; `None` without a check.
    pub fn health_check(&self) -> Result<Option<HealthCheck>, String> {
        let Some(check) = &self.app.manifest.container.health else {
            return Ok(None);
        };
        let mut check = check.clone();
        if let HealthProbe::Exec(cmd) = &check.probe {
            let cmd = secrets::render_all(&self.store, self.id(), cmd)
                .map_err(|e| format!("health check: {e}"))?;
            check.probe = HealthProbe::Exec(cmd);
        }
        Ok(Some(check))
    }
}

/// How an operation ended.
pub struct OpEnd {
    pub record: AppRecord,
    pub result: Result<String, String>,
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
#[derive(Debug, Clone, Copy, Default)]
pub struct OpParams {
    pub purge: bool,
    /// Dependencies are running and healthy, so an install may start the app.
    pub deps_ready: bool,
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
        OperationKind::Upgrade => {
            upgrade(&env, &mut record, &op_id, &mut started, &mut health).await
        }
        OperationKind::Rollback => {
            rollback(&env, &mut record, &op_id, &mut started, &mut health).await
        }
        OperationKind::Uninstall => uninstall(&env, &mut record, &op_id, params.purge).await,
    };
    record.last_error = result.as_ref().err().cloned();
    // A finished uninstall removed the state file on purpose: do not write it back.
    let persist = kind != OperationKind::Uninstall || result.is_err();
    finish(&env, record, result, started, health, persist).await
}

/// Ends an operation: clears its journal, persists the record when asked, and hands it
/// back with the result.
async fn finish(
    env: &OpEnv,
    mut record: AppRecord,
    result: Result<String, String>,
    started: bool,
    health: Option<Health>,
    persist: bool,
) -> OpEnd {
    record.journal = None;
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
        let e = format!("could not persist state: {e}");
        result = Err(match result {
            Ok(done) => format!("{done}, but {e}"),
            Err(err) => format!("{err}; {e}"),
        });
        record.last_error = result.as_ref().err().cloned();
    }
    OpEnd {
        record,
        result,
        started,
        health,
        observed: observe(env.engine.as_ref(), env.id()).await,
    }
}

async fn journal(
    env: &OpEnv,
    record: &mut AppRecord,
    op_id: &str,
    kind: OperationKind,
    step: JournalStep,
) -> Result<(), String> {
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
async fn fetch_image(env: &OpEnv, installed: &Installed, force: bool) -> Result<(), String> {
    let engine = &env.engine;
    if !force {
        if let Ok(Some(_)) = engine.image_inspect(&installed.image).await {
            return Ok(());
        }
    }
    let m = &env.app.manifest;
    let source = m
        .container
        .resolve(&env.app.dir, &m.id, &installed.version)
        .map_err(|e| e.to_string())?;
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
    .map_err(|e| e.to_string())
}

/// Creates the container for `spec` if it is missing or has another spec hash.
async fn ensure_container(env: &OpEnv, spec: &ContainerSpec) -> Result<(), String> {
    let name = container_name(&spec.app);
    let engine = &env.engine;
    match engine.inspect(&name).await {
        Ok(d)
            if d.labels.get(LABEL_SPEC_HASH).map(String::as_str) == Some(spec.hash().as_str()) =>
        {
            return Ok(())
        }
        Ok(_) => {
            env.say("replacing container with a changed spec");
            engine.remove(&name).await.map_err(|e| e.to_string())?;
        }
        Err(e) if e.kind() == EngineErrorKind::ContainerNotFound => {}
        Err(e) => return Err(e.to_string()),
    }
    create_container(env, spec).await
}

/// Creates the app's container and gives the app's own volume folders to the user it runs
/// as (see [`crate::owner`]). The folders are made first; the owner is known only from the
/// created container (the manifest's user, or else the image's) and, for names, from the
/// image's own `/etc/passwd` and `/etc/group`. A user that cannot be resolved takes the
/// new container away again and fails, naming the user.
async fn create_container(env: &OpEnv, spec: &ContainerSpec) -> Result<(), String> {
    let volumes: Vec<_> = env.app.manifest.container.volumes.iter().collect();
    let own: Vec<PathBuf> = volumes
        .iter()
        .filter(|v| v.is_own())
        .map(|v| env.store.app_dir(env.id()).join(&v.name))
        .collect();
    let deps: Vec<PathBuf> = spec
        .binds
        .iter()
        .filter(|b| !own.contains(&b.host))
        .map(|b| b.host.clone())
        .collect();
    let (app, store) = (env.app.clone(), env.store.clone());
    let groups = blocking(move || {
        create_volume_dirs(&app, &store).map_err(|e| format!("volume folders: {e}"))?;
        let mut groups: Vec<u32> = deps.iter().filter_map(|d| owner::folder_group(d)).collect();
        groups.sort_unstable();
        groups.dedup();
        Ok(groups)
    })
    .await?;
    let mut spec = spec.clone();
    spec.group_add = groups;
    env.say("creating container");
    let engine = env.engine.as_ref();
    engine.create(&spec).await.map_err(|e| e.to_string())?;
    if own.is_empty() {
        return Ok(());
    }
    let name = container_name(env.id());
    let name = name.as_str();
    let owned = async {
        let user = engine.inspect(name).await.map_err(|e| e.to_string())?.user;
        let (passwd, group) = if owner::needs_image_files(&user) {
            let read = |path: &'static str| async move {
                engine
                    .read_file(name, path)
                    .await
                    .map(|f| f.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
                    .map_err(|e| e.to_string())
            };
            (read("/etc/passwd").await?, read("/etc/group").await?)
        } else {
            (None, None)
        };
        let on_host = owner::resolve(&user, passwd.as_deref(), group.as_deref())
            .and_then(|o| o.on_host(&engine.id_map()))
            .map_err(|e| format!("volume owner: {e}"))?;
        blocking(move || {
            owner::own_volumes(&own, on_host).map_err(|e| format!("volume owner: {e}"))
        })
        .await
    }
    .await;
    if owned.is_err() {
        let _ = remove_quietly(engine, name).await;
    }
    owned
}

/// Runs blocking file work on tokio's blocking pool, off the actors' thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| format!("file work panicked: {e}"))?
}

/// Starts the installed image's container, runs the `post_create` hooks once, and waits
/// until it is healthy (when it has a health check).
async fn start(
    env: &OpEnv,
    record: &mut AppRecord,
    started: &mut bool,
    health: &mut Option<Health>,
) -> Result<String, String> {
    let installed = record
        .installed
        .clone()
        .ok_or_else(|| format!("{} is not installed", env.id()))?;
    let _slot = env.start_slots.acquire().await.map_err(|e| e.to_string())?;
    let spec = env.spec_for(&installed)?;
    fetch_image(env, &installed, false).await?;
    ensure_container(env, &spec).await?;
    env.say("starting container");
    let name = container_name(env.id());
    match env.engine.start(&name).await {
        Ok(()) => {}
        Err(e) if e.kind() == EngineErrorKind::NotModified => {}
        Err(e) => return Err(e.to_string()),
    }
    *started = true;
    record.memory_limit = Some(spec.memory_limit);
    let started_at = Instant::now();
    if !record.hooks_done && !env.app.manifest.hooks.post_create.is_empty() {
        for (i, hook) in env.app.manifest.hooks.post_create.iter().enumerate() {
            env.say(format!(
                "post_create hook {}: {}",
                i + 1,
                hook.exec.join(" ")
            ));
            // Rendered for the engine only: messages show the command as written, so no
            // secret reaches the operation's progress, errors or logs.
            let cmd = secrets::render_all(&env.store, env.id(), &hook.exec)
                .map_err(|e| format!("post_create hook {}: {e}", i + 1))?;
            let out = run_hook(env.engine.as_ref(), &name, &cmd, &hook.exec, hook.timeout).await?;
            if out != 0 {
                return Err(format!(
                    "post_create hook {} ({}) exited {out}",
                    i + 1,
                    hook.exec.join(" ")
                ));
            }
        }
        record.hooks_done = true;
        env.save(record).await?;
    }
    *health = Some(wait_healthy(env, &spec, started_at).await?);
    Ok("running".into())
}

/// Runs a hook's rendered `cmd`; errors show it as `written` (secrets not rendered).
async fn run_hook(
    engine: &dyn ContainerRuntime,
    container: &str,
    cmd: &[String],
    written: &[String],
    timeout: Duration,
) -> Result<i64, String> {
    engine
        .exec(container, cmd, timeout)
        .await
        .map(|o| o.exit_code)
        .map_err(|e| format!("post_create hook {}: {e}", written.join(" ")))
}

/// Probes until healthy, or fails once the check's start period and retries are spent.
async fn wait_healthy(env: &OpEnv, spec: &ContainerSpec, since: Instant) -> Result<Health, String> {
    let Some(check) = env.health_check()? else {
        return Ok(Health::None);
    };
    env.say("waiting until healthy");
    let mut tracker = HealthTracker::started();
    // Probe faster than the interval while starting so the start ends promptly.
    let step = check.interval.min(Duration::from_millis(500));
    let deadline = check.start_period + check.interval * check.retries.max(1) + check.timeout;
    let mut last_err = String::new();
    loop {
        let result = health::probe(env.engine.as_ref(), spec, &check).await;
        let elapsed = since.elapsed();
        if let Err(e) = &result {
            last_err = e.clone();
        }
        if result.is_ok() {
            tracker.record(true, elapsed, &check);
            return Ok(Health::Healthy);
        }
        // Exit early if the container died while we waited.
        if let Ok(d) = env.engine.inspect(&container_name(&spec.app)).await {
            if !d.state.is_running() {
                return Err(format!(
                    "container exited with code {} while starting",
                    d.exit_code.unwrap_or(-1)
                ));
            }
        }
        if elapsed >= deadline {
            return Err(format!(
                "not healthy after {}: {last_err}",
                humantime::format_duration(Duration::from_secs(elapsed.as_secs()))
            ));
        }
        tokio::time::sleep(step).await;
    }
}

async fn stop(env: &OpEnv) -> Result<(), String> {
    let name = container_name(env.id());
    let timeout = env.app.manifest.container.stop_timeout;
    env.say(format!(
        "stopping (grace {})",
        humantime::format_duration(timeout)
    ));
    match env.engine.stop(&name, timeout).await {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                EngineErrorKind::NotModified | EngineErrorKind::ContainerNotFound
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

async fn remove_quietly(engine: &dyn ContainerRuntime, name: &str) -> Result<(), String> {
    match engine.remove(name).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == EngineErrorKind::ContainerNotFound => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

async fn install(
    env: &OpEnv,
    record: &mut AppRecord,
    op_id: &str,
    params: OpParams,
    started: &mut bool,
    health: &mut Option<Health>,
) -> Result<String, String> {
    let target = env.catalog_install();
    journal(
        env,
        record,
        op_id,
        OperationKind::Install,
        JournalStep::Prepare,
    )
    .await?;
    let prepared = async {
        env.say("generating secrets");
        secrets::generate(&env.store, env.id(), &env.app.manifest.secrets)
            .map_err(|e| e.to_string())?;
        fetch_image(env, &target, false).await
    }
    .await;
    if let Err(e) = prepared {
        *record = AppRecord::default();
        return Err(e);
    }
    record.installed = Some(target.clone());
    record.desired = Desired::Running;
    record.hooks_done = false;
    journal(
        env,
        record,
        op_id,
        OperationKind::Install,
        JournalStep::Start,
    )
    .await?;
    if !params.deps_ready {
        return Ok("installed; it starts once its dependencies are running and healthy".into());
    }
    match start(env, record, started, health).await {
        Ok(m) => Ok(m),
        Err(e) => {
            // No half-made container: take it away, keep secrets and volumes.
            let _ = remove_quietly(env.engine.as_ref(), &container_name(env.id())).await;
            *started = false;
            *record = AppRecord::default();
            Err(e)
        }
    }
}

async fn uninstall(
    env: &OpEnv,
    record: &mut AppRecord,
    op_id: &str,
    purge: bool,
) -> Result<String, String> {
    journal(
        env,
        record,
        op_id,
        OperationKind::Uninstall,
        JournalStep::Remove,
    )
    .await?;
    if purge {
        // Recorded so an uninstall cut off midway finishes with the same purge.
        if let Some(j) = &mut record.journal {
            j.purge = true;
        }
        env.save(record).await?;
    }
    stop(env).await?;
    let name = container_name(env.id());
    remove_quietly(env.engine.as_ref(), &name).await?;
    remove_quietly(env.engine.as_ref(), &format!("{name}{PREVIOUS_SUFFIX}")).await?;
    if purge {
        env.say("deleting volumes and secrets");
        let (store, id) = (env.store.clone(), env.id().to_string());
        blocking(move || {
            remove_tree(&store.app_dir(&id))?;
            remove_tree(&store.snapshots_dir(&id))?;
            secrets::remove_all(&store, &id).map_err(|e| e.to_string())
        })
        .await?;
    }
    env.remove_state().await?;
    *record = AppRecord::default();
    Ok(if purge {
        "removed with data"
    } else {
        "removed; data kept"
    }
    .into())
}

fn remove_tree(path: &Path) -> Result<(), String> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Puts the snapshot's volumes back in place of the live ones, each through
/// `apps/<id>/<volume>.restoring`. Only volumes the manifest still snapshots are put back:
/// a `snapshot: none` volume is never restored, whatever an older snapshot holds. Runs off
/// the actors' thread, with progress in bytes.
async fn restore_snapshot(env: &OpEnv, snapshot: &Path) -> Result<(), String> {
    let volumes = env.snapshot_volumes();
    let (live, snapshot) = (env.store.app_dir(env.id()), snapshot.to_path_buf());
    let progress = env.clone();
    blocking(move || {
        let err =
            |e: snapshot::SnapshotError| format!("restoring snapshot {}: {e}", snapshot.display());
        let present: Vec<&String> = volumes
            .iter()
            .filter(|v| snapshot.join(v).is_dir())
            .collect();
        let sources: Vec<PathBuf> = present.iter().map(|v| snapshot.join(v)).collect();
        let total = snapshot::measure(&sources).map_err(err)?;
        let mut done = 0;
        for volume in present {
            let target = live.join(volume);
            let aside = live.join(format!("{volume}.restoring"));
            remove_tree(&aside)?;
            let before = done;
            let stats = snapshot::copy_tree(&snapshot.join(volume), &aside, total, &|d, t| {
                progress.say_bytes("restoring the snapshot", before + d, t)
            })
            .map_err(err)?;
            done += stats.bytes;
            remove_tree(&target)?;
            std::fs::rename(&aside, &target)
                .map_err(|e| format!("restoring snapshot {}: {e}", snapshot.display()))?;
        }
        Ok(())
    })
    .await
}

/// Copies the app's `snapshot: copy` volumes to `snapshots/<id>/<op_id>/`, off the actors'
/// thread, with progress in bytes. `total` is what [`snapshot::measure`] said.
async fn take_snapshot(env: &OpEnv, op_id: &str, total: u64) -> Result<PathBuf, String> {
    let volumes = env.snapshot_volumes();
    let live = env.store.app_dir(env.id());
    let snap = env.store.snapshots_dir(env.id()).join(op_id);
    let progress = env.clone();
    let target = snap.clone();
    blocking(move || {
        remove_tree(&target)?;
        std::fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
        let mut done = 0;
        for volume in volumes {
            let from = live.join(&volume);
            if !from.is_dir() {
                continue;
            }
            let before = done;
            let stats = snapshot::copy_tree(&from, &target.join(&volume), total, &|d, t| {
                progress.say_bytes("snapshotting volumes", before + d, t)
            })
            .map_err(|e| format!("snapshot of {}: {e}", from.display()))?;
            done += stats.bytes;
            if stats.skipped > 0 {
                tracing::warn!(
                    volume,
                    skipped = stats.skipped,
                    "special files left out of the snapshot"
                );
            }
        }
        Ok(())
    })
    .await?;
    Ok(snap)
}

/// Refuses an upgrade whose snapshot would not fit on the disk, before anything is
/// touched. Answers the bytes to copy.
async fn check_snapshot_space(env: &OpEnv) -> Result<u64, String> {
    let volumes = env.snapshot_volumes();
    let live = env.store.app_dir(env.id());
    let dest = env.store.snapshots_dir(env.id());
    blocking(move || {
        let folders: Vec<PathBuf> = volumes.iter().map(|v| live.join(v)).collect();
        let bytes = snapshot::measure(&folders).map_err(|e| e.to_string())?;
        snapshot::check_space(&volumes, &live, &dest, bytes).map_err(|e| e.to_string())?;
        Ok(bytes)
    })
    .await
}

/// Keeps only the newest snapshot (the one a rollback restores). Off the actors' thread.
async fn prune_snapshots(env: &OpEnv, keep: &Path) {
    let (dir, keep) = (env.store.snapshots_dir(env.id()), keep.to_path_buf());
    let _ = blocking(move || {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.path() != keep {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(())
    })
    .await;
}

/// Moves the app from `from` to `to`: snapshot, new image, old container kept aside,
/// new one started and gated on health; on failure everything goes back.
/// Where a [`swap`] goes: upgrade or rollback, from what, to what, and for a rollback the
/// snapshot to restore.
struct SwapPlan {
    kind: OperationKind,
    from: Installed,
    to: Installed,
    restore_from: Option<std::path::PathBuf>,
}

async fn swap(
    env: &OpEnv,
    record: &mut AppRecord,
    op_id: &str,
    plan: SwapPlan,
    started: &mut bool,
    health: &mut Option<Health>,
) -> Result<String, String> {
    let SwapPlan {
        kind,
        from,
        to,
        restore_from,
    } = plan;
    let name = container_name(env.id());
    let aside = format!("{name}{PREVIOUS_SUFFIX}");
    journal(env, record, op_id, kind, JournalStep::Fetch).await?;
    if let Some(j) = &mut record.journal {
        j.from = Some(from.clone());
        j.to = Some(to.clone());
    }
    env.save(record).await?;
    fetch_image(env, &to, kind == OperationKind::Upgrade).await?;
    let new_spec = env.spec_for(&to)?;
    // Refused here, with the figures, while the app still runs untouched.
    let snapshot_bytes = check_snapshot_space(env).await?;
    let was_running = env
        .engine
        .inspect(&name)
        .await
        .map(|d| d.state.is_running())
        .unwrap_or(false);
    stop(env).await?;
    env.say("snapshotting volumes");
    let snapshot = match take_snapshot(env, op_id, snapshot_bytes).await {
        Ok(s) => s,
        Err(e) => {
            // Nothing was swapped: drop the partial copy and bring the old one back.
            let _ = remove_tree_off_thread(env.store.snapshots_dir(env.id()).join(op_id)).await;
            if was_running {
                let _ = start_quietly(env).await;
            }
            return Err(e);
        }
    };
    if let Some(j) = &mut record.journal {
        j.snapshot = Some(snapshot.clone());
    }
    // From the snapshot on, every failure goes through the undo below: none may leave
    // the snapshot behind, or a later rollback would put back this data instead of the
    // data from before the last upgrade that succeeded.
    let attempt = async {
        journal(env, record, op_id, kind, JournalStep::Swap).await?;
        remove_quietly(env.engine.as_ref(), &aside).await?;
        match env.engine.rename(&name, &aside).await {
            Ok(()) => {}
            Err(e) if e.kind() == EngineErrorKind::ContainerNotFound => {}
            Err(e) => return Err(e.to_string()),
        }
        if let Some(src) = &restore_from {
            env.say("restoring the snapshot of the previous version");
            restore_snapshot(env, src).await?;
        }
        create_container(env, &new_spec).await?;
        env.say(format!("starting {}", to.version));
        env.engine.start(&name).await.map_err(|e| e.to_string())?;
        let h = wait_healthy(env, &new_spec, Instant::now()).await?;
        // The new version passed its gate: persist it as installed (journal step
        // "commit") before cleaning up, so a crash from here on finishes the operation
        // instead of undoing it.
        let mut next = record.clone();
        next.previous = (kind == OperationKind::Upgrade).then(|| from.clone());
        next.installed = Some(to.clone());
        next.memory_limit = Some(new_spec.memory_limit);
        journal(env, &mut next, op_id, kind, JournalStep::Commit).await?;
        *record = next;
        Ok(h)
    }
    .await;
    match attempt {
        Ok(h) => {
            *started = true;
            *health = Some(h);
            complete_swap(env, &snapshot).await?;
            Ok(format!("running {}", to.version))
        }
        Err(e) => {
            env.say(format!("{e}; rolling back to {}", from.version));
            let undone = undo_swap(env, &snapshot, was_running).await;
            // This snapshot equals the data now live; a later rollback wants the one
            // taken before the last upgrade that succeeded.
            remove_tree_off_thread(snapshot).await?;
            undone?;
            *started = was_running;
            Err(format!(
                "{} to {} failed: {e}; back on {}",
                if kind == OperationKind::Upgrade {
                    "upgrade"
                } else {
                    "rollback"
                },
                to.version,
                from.version
            ))
        }
    }
}

/// [`remove_tree`] on the blocking pool.
async fn remove_tree_off_thread(path: PathBuf) -> Result<(), String> {
    blocking(move || remove_tree(&path)).await
}

/// The clean-up after a swap that succeeded: the old container and older snapshots go.
async fn complete_swap(env: &OpEnv, snapshot: &Path) -> Result<(), String> {
    let aside = format!("{}{PREVIOUS_SUFFIX}", container_name(env.id()));
    remove_quietly(env.engine.as_ref(), &aside).await?;
    prune_snapshots(env, snapshot).await;
    Ok(())
}

/// Takes the new container away, restores the snapshot, and puts the old container back.
async fn undo_swap(env: &OpEnv, snapshot: &Path, start_old: bool) -> Result<(), String> {
    let name = container_name(env.id());
    let aside = format!("{name}{PREVIOUS_SUFFIX}");
    let engine = env.engine.as_ref();
    let old_exists = engine.inspect(&aside).await.is_ok();
    if old_exists {
        let _ = engine
            .stop(&name, env.app.manifest.container.stop_timeout)
            .await;
        remove_quietly(engine, &name).await?;
    }
    if snapshot.exists() {
        restore_snapshot(env, snapshot).await?;
    }
    if old_exists {
        engine
            .rename(&aside, &name)
            .await
            .map_err(|e| e.to_string())?;
    }
    if start_old {
        match engine.start(&name).await {
            Ok(()) => {}
            Err(e) if e.kind() == EngineErrorKind::NotModified => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

async fn upgrade(
    env: &OpEnv,
    record: &mut AppRecord,
    op_id: &str,
    started: &mut bool,
    health: &mut Option<Health>,
) -> Result<String, String> {
    let from = record.installed.clone().ok_or("not installed")?;
    let to = env.catalog_install();
    swap(
        env,
        record,
        op_id,
        SwapPlan {
            kind: OperationKind::Upgrade,
            from,
            to,
            restore_from: None,
        },
        started,
        health,
    )
    .await
}

async fn rollback(
    env: &OpEnv,
    record: &mut AppRecord,
    op_id: &str,
    started: &mut bool,
    health: &mut Option<Health>,
) -> Result<String, String> {
    let from = record.installed.clone().ok_or("not installed")?;
    let to = record
        .previous
        .clone()
        .ok_or("no previous version to roll back to")?;
    let snapshot = latest_snapshot(env);
    // On success `swap` clears `previous`: a rollback is not undone by another rollback.
    swap(
        env,
        record,
        op_id,
        SwapPlan {
            kind: OperationKind::Rollback,
            from,
            to,
            restore_from: snapshot,
        },
        started,
        health,
    )
    .await
}

fn latest_snapshot(env: &OpEnv) -> Option<std::path::PathBuf> {
    let mut snaps: Vec<_> = std::fs::read_dir(env.store.snapshots_dir(env.id()))
        .ok()?
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    snaps.sort();
    snaps.pop().map(|(_, p)| p)
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
            let params = OpParams {
                purge: false,
                deps_ready: false,
            };
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
    record.last_error = result.as_ref().err().cloned();
    let persist = record.installed.is_some() || record.desired != Desired::NotInstalled;
    finish(env, record, result, started, health, persist).await
}

/// Recovers an upgrade or rollback from its journal step:
/// - `fetch`: the old container was at most stopped; a partial snapshot is deleted and
///   reconcile starts the old container again when it is wanted running.
/// - `swap`: undone. The new container (if any) is removed, the snapshot restored, the
///   `-previous` container renamed back and started when wanted running. Before the
///   rename the app's container is still the old one and is simply started.
/// - `commit`: the new version passed its gate and is recorded as installed: the
///   `-previous` container and older snapshots are removed and the new one started.
async fn recover_swap(env: &OpEnv, record: &AppRecord, j: &JournalEntry) -> Result<String, String> {
    let verb = if j.kind == OperationKind::Upgrade {
        "upgrade"
    } else {
        "rollback"
    };
    let to = j.to.as_ref().map(|t| t.version.as_str()).unwrap_or("?");
    let from = j.from.as_ref().map(|f| f.version.as_str()).unwrap_or("?");
    let wanted_running = record.desired == Desired::Running;
    match j.step {
        JournalStep::Commit => {
            let snapshot = j.snapshot.clone().unwrap_or_default();
            complete_swap(env, &snapshot).await?;
            if wanted_running {
                start_quietly(env).await?;
            }
            Ok(format!("interrupted {verb} to {to} finished; running {to}"))
        }
        JournalStep::Swap => {
            let snapshot = j.snapshot.clone().unwrap_or_default();
            undo_swap(env, &snapshot, wanted_running).await?;
            remove_tree_off_thread(snapshot).await?;
            Err(format!(
                "{verb} to {to} interrupted by a supervisor restart; back on {from}"
            ))
        }
        _ => {
            remove_tree_off_thread(env.store.snapshots_dir(env.id()).join(&j.operation)).await?;
            Err(format!(
                "{verb} to {to} interrupted by a supervisor restart before the swap; still on {from}"
            ))
        }
    }
}

async fn start_quietly(env: &OpEnv) -> Result<(), String> {
    match env.engine.start(&container_name(env.id())).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == EngineErrorKind::NotModified => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Convenience for callers matching engine errors by kind.
pub fn is_not_found(e: &EngineError) -> bool {
    e.kind() == EngineErrorKind::ContainerNotFound
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{CallKind, FakeRuntime};
    use crate::manifest::AppManifest;

    const ID: &str = "app";
    const OP: &str = "app-1-1";

    fn v(n: u32) -> Installed {
        Installed {
            version: n.to_string(),
            image: format!("img:{n}"),
        }
    }

    /// An env whose catalog offers version 2 of a one-volume app.
    fn env(dir: &Path, fake: Arc<FakeRuntime>) -> OpEnv {
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

    /// Issue 13, defect 3: a swap that failed before its undo left its snapshot behind,
    /// and a later rollback restored that one instead of the snapshot taken before the
    /// last upgrade that succeeded. Failed before the fix (the rename's error returned at
    /// once: stray snapshot, old container left stopped).
    #[tokio::test]
    async fn a_failed_swap_leaves_no_snapshot_and_the_old_version_running() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakeRuntime::new());
        let env = env(dir.path(), fake.clone());
        fake.set_images(["img:1", "img:2", "img:3"]);
        fake.set_registry(["img:3"]);
        let live = env.store.app_dir(ID).join("data");
        std::fs::create_dir_all(&live).unwrap();
        std::fs::write(live.join("wallet.dat"), b"v2 data").unwrap();
        // The snapshot of the upgrade from 1 to 2, which a rollback must restore.
        let earlier = env.store.snapshots_dir(ID).join("app-earlier");
        std::fs::create_dir_all(earlier.join("data")).unwrap();
        std::fs::write(earlier.join("data/wallet.dat"), b"v1 data").unwrap();
        let name = container_name(ID);
        fake.create(&env.spec_for(&v(2)).unwrap()).await.unwrap();
        fake.start(&name).await.unwrap();
        let mut record = AppRecord {
            desired: Desired::Running,
            installed: Some(v(2)),
            previous: Some(v(1)),
            ..AppRecord::default()
        };
        fake.fail_next(
            CallKind::Rename,
            EngineError::Other {
                target: name.clone(),
                reason: "injected".into(),
            },
        );
        let plan = SwapPlan {
            kind: OperationKind::Upgrade,
            from: v(2),
            to: v(3),
            restore_from: None,
        };
        let (mut started, mut health) = (false, None);
        let err = swap(&env, &mut record, OP, plan, &mut started, &mut health)
            .await
            .unwrap_err();
        assert!(
            err.contains("injected") && err.contains("back on 2"),
            "{err}"
        );
        let left: Vec<_> = std::fs::read_dir(env.store.snapshots_dir(ID))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("app-earlier")],
            "no stray snapshot"
        );
        assert_eq!(latest_snapshot(&env), Some(earlier));
        assert!(
            fake.container(&name).unwrap().state.is_running(),
            "the old version runs again"
        );
        assert_eq!(record.installed, Some(v(2)));
        assert_eq!(std::fs::read(live.join("wallet.dat")).unwrap(), b"v2 data");
    }

    /// `snapshot: none` volumes are neither copied before a swap nor put back after one.
    #[tokio::test]
    async fn snapshot_none_volumes_are_never_copied_nor_restored() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakeRuntime::new());
        let mut env = env(dir.path(), fake.clone());
        env.app.manifest.container.volumes = vec![
            "data:/data".parse().unwrap(),
            serde_yaml::from_str("{name: chain, path: /chain, snapshot: none}").unwrap(),
        ];
        let root = env.store.app_dir(ID);
        for (volume, text) in [("data", "wallet"), ("chain", "blocks")] {
            std::fs::create_dir_all(root.join(volume)).unwrap();
            std::fs::write(root.join(volume).join("f"), text).unwrap();
        }
        let snap = take_snapshot(&env, OP, 0).await.unwrap();
        assert!(snap.join("data/f").exists());
        assert!(!snap.join("chain").exists(), "a none volume is not copied");
        // Even a snapshot that holds the volume (an older layout) never puts it back.
        std::fs::create_dir_all(snap.join("chain")).unwrap();
        std::fs::write(snap.join("chain/f"), "old blocks").unwrap();
        std::fs::write(root.join("data/f"), "changed").unwrap();
        std::fs::write(root.join("chain/f"), "new blocks").unwrap();
        restore_snapshot(&env, &snap).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("data/f")).unwrap(),
            "wallet"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("chain/f")).unwrap(),
            "new blocks"
        );
    }

    /// Where a kill during an upgrade from 1 to 2 left things.
    #[derive(Debug, Clone, Copy)]
    enum Cut {
        /// Journal `fetch`: old container stopped, a partial snapshot on disk.
        Fetch,
        /// Journal `swap`, old container stopped, not yet renamed aside.
        SwapBeforeRename,
        /// Journal `swap`, old container renamed aside, no new one yet.
        SwapAfterRename,
        /// Journal `swap`, new container running and writing to the volume.
        SwapNewRunning,
        /// Journal `commit`: new version recorded, old container still aside.
        Commit,
        /// Journal `commit`, old container already removed.
        CommitCleaned,
    }

    /// Builds the state `cut` describes and returns the record as persisted and the old
    /// container's id.
    async fn cut_upgrade(env: &OpEnv, fake: &FakeRuntime, cut: Cut) -> (AppRecord, String) {
        let name = container_name(ID);
        let aside = format!("{name}{PREVIOUS_SUFFIX}");
        fake.set_images(["img:1", "img:2"]);
        let live = env.store.app_dir(ID).join("data");
        std::fs::create_dir_all(&live).unwrap();
        std::fs::write(live.join("wallet.dat"), b"precious").unwrap();
        let old_spec = env.spec_for(&v(1)).unwrap();
        let old_id = fake.create(&old_spec).await.unwrap();
        fake.start(&name).await.unwrap();
        let snapshot = env.store.snapshots_dir(ID).join(OP);
        let mut record = AppRecord {
            desired: Desired::Running,
            installed: Some(v(1)),
            ..AppRecord::default()
        };
        let step = match cut {
            Cut::Fetch => JournalStep::Fetch,
            Cut::Commit | Cut::CommitCleaned => JournalStep::Commit,
            _ => JournalStep::Swap,
        };
        record.journal = Some(JournalEntry {
            operation: OP.into(),
            kind: OperationKind::Upgrade,
            step,
            started_at: crate::api::now(),
            from: Some(v(1)),
            to: Some(v(2)),
            snapshot: (step != JournalStep::Fetch).then(|| snapshot.clone()),
            purge: false,
        });
        fake.stop(&name, Duration::from_secs(1)).await.unwrap();
        std::fs::create_dir_all(&snapshot).unwrap();
        crate::snapshot::copy_tree(
            &env.store.app_dir(ID).join("data"),
            &snapshot.join("data"),
            0,
            &|_, _| {},
        )
        .unwrap();
        if matches!(cut, Cut::Fetch | Cut::SwapBeforeRename) {
            return (record, old_id);
        }
        fake.rename(&name, &aside).await.unwrap();
        if matches!(cut, Cut::SwapAfterRename) {
            return (record, old_id);
        }
        fake.create(&env.spec_for(&v(2)).unwrap()).await.unwrap();
        fake.start(&name).await.unwrap();
        std::fs::write(live.join("wallet.dat"), b"written by 2").unwrap();
        if matches!(cut, Cut::Commit | Cut::CommitCleaned) {
            record.installed = Some(v(2));
            record.previous = Some(v(1));
        }
        if matches!(cut, Cut::CommitCleaned) {
            fake.remove(&aside).await.unwrap();
        }
        (record, old_id)
    }

    /// Every kill point of an upgrade recovers to one container on one version, with no
    /// `-previous` container and no journal left.
    #[tokio::test]
    async fn an_upgrade_cut_off_anywhere_recovers_to_one_version() {
        // (cut, version after, volume content after, recovered result is ok)
        let table = [
            (Cut::Fetch, 1, "precious", false),
            (Cut::SwapBeforeRename, 1, "precious", false),
            (Cut::SwapAfterRename, 1, "precious", false),
            (Cut::SwapNewRunning, 1, "precious", false),
            (Cut::Commit, 2, "written by 2", true),
            (Cut::CommitCleaned, 2, "written by 2", true),
        ];
        for (cut, version, content, ok) in table {
            let dir = tempfile::tempdir().unwrap();
            let fake = Arc::new(FakeRuntime::new());
            let env = env(dir.path(), fake.clone());
            let (record, old_id) = cut_upgrade(&env, &fake, cut).await;
            env.store.save(ID, &record).unwrap();

            let end = recover(&env, record).await;

            assert_eq!(end.result.is_ok(), ok, "{cut:?}: {:?}", end.result);
            let containers = fake.containers();
            assert_eq!(
                containers.keys().collect::<Vec<_>>(),
                vec![&container_name(ID)],
                "{cut:?}: one container, nothing aside"
            );
            let c = &containers[&container_name(ID)];
            assert_eq!(c.spec.image, format!("img:{version}"), "{cut:?}");
            if version == 1 {
                assert_eq!(c.id, old_id, "{cut:?}: the old container is back");
            }
            // Before the swap began the planner starts the old container; every other
            // cut leaves it running.
            assert_eq!(c.state.is_running(), !matches!(cut, Cut::Fetch), "{cut:?}");
            assert_eq!(
                end.record.installed,
                Some(v(version)),
                "{cut:?}: record names the version that runs"
            );
            let saved = env.store.load(ID).unwrap().unwrap().record;
            assert_eq!(saved.journal, None, "{cut:?}: journal cleared");
            assert_eq!(saved.installed, Some(v(version)), "{cut:?}");
            let data = std::fs::read(env.store.app_dir(ID).join("data/wallet.dat")).unwrap();
            assert_eq!(data, content.as_bytes(), "{cut:?}");
            let snapshots: Vec<_> = std::fs::read_dir(env.store.snapshots_dir(ID))
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            let kept = usize::from(ok);
            assert_eq!(snapshots.len(), kept, "{cut:?}: {snapshots:?}");
            if !ok {
                let err = end.result.unwrap_err();
                assert!(err.contains("on 1"), "{cut:?}: {err}");
                assert_eq!(saved.last_error, Some(err), "{cut:?}");
            }
        }
    }

    /// An uninstall with purge cut off after its journal finishes with the purge.
    #[tokio::test]
    async fn an_interrupted_purge_finishes_the_purge() {
        for purge in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let fake = Arc::new(FakeRuntime::new());
            let env = env(dir.path(), fake.clone());
            fake.set_images(["img:2"]);
            fake.create(&env.spec_for(&v(2)).unwrap()).await.unwrap();
            fake.start(&container_name(ID)).await.unwrap();
            let volume = env.store.app_dir(ID).join("data");
            std::fs::create_dir_all(&volume).unwrap();
            std::fs::write(volume.join("f"), b"x").unwrap();
            std::fs::create_dir_all(env.store.secrets_dir(ID)).unwrap();
            std::fs::write(env.store.secrets_dir(ID).join("token"), b"t").unwrap();
            let record = AppRecord {
                desired: Desired::Running,
                installed: Some(v(2)),
                journal: Some(JournalEntry {
                    operation: OP.into(),
                    kind: OperationKind::Uninstall,
                    step: JournalStep::Remove,
                    started_at: crate::api::now(),
                    from: None,
                    to: None,
                    snapshot: None,
                    purge,
                }),
                ..AppRecord::default()
            };
            env.store.save(ID, &record).unwrap();
            // The journal round-trips through the state file.
            let loaded = env.store.load(ID).unwrap().unwrap().record;
            assert_eq!(loaded.journal.as_ref().map(|j| j.purge), Some(purge));

            let end = recover(&env, loaded).await;

            assert!(end.result.is_ok(), "{:?}", end.result);
            assert!(fake.containers().is_empty(), "purge {purge}");
            assert!(env.store.load(ID).unwrap().is_none(), "state file removed");
            assert_eq!(volume.join("f").exists(), !purge, "volume, purge {purge}");
            assert_eq!(
                env.store.secrets_dir(ID).exists(),
                !purge,
                "secrets, purge {purge}"
            );
        }
    }

    /// A journal written before `purge` existed reads as no purge.
    #[test]
    fn an_old_journal_without_purge_reads_as_false() {
        let json = r#"{"operation":"x","kind":"uninstall","step":"remove","started_at":"t"}"#;
        let j: JournalEntry = serde_json::from_str(json).unwrap();
        assert!(!j.purge);
    }
}
