//! The long work of each operation, run as a future spawned by the app's actor. Each
//! step is journaled in the app's record before it acts, so a supervisor killed midway
//! finishes or undoes the operation at the next boot ([`recover`]).
//!
//! These futures own the app's record while they run (the actor writes nothing
//! meanwhile) and hand it back when they end.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::api::{Desired, Health, OperationKind, OperationProgress};
use crate::catalog::CatalogApp;
use crate::engine::{
    container_name, ContainerRuntime, ContainerSpec, EngineError, EngineErrorKind, Progress,
    LABEL_SPEC_HASH,
};
use crate::health::{self, HealthTracker};
use crate::manifest::ResolvedSource;
use crate::secrets;
use crate::spec::{container_spec, create_volume_dirs};
use crate::store::{AppRecord, Installed, JournalEntry, Store};

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

    fn save(&self, record: &AppRecord) -> Result<(), String> {
        self.store
            .save(self.id(), record)
            .map_err(|e| e.to_string())
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
    /// upgrade, never a side effect of a reconcile).
    pub fn spec_for(&self, installed: &Installed) -> Result<ContainerSpec, String> {
        let mut spec = container_spec(&self.app, &self.store, &self.default_network)
            .map_err(|e| e.to_string())?;
        spec.image = installed.image.clone();
        spec.version = installed.version.clone();
        Ok(spec)
    }
}

/// How an operation ended.
pub struct OpEnd {
    pub record: AppRecord,
    pub result: Result<String, String>,
    /// The container was started by this operation (for the crash tracker).
    pub started: bool,
    pub health: Option<Health>,
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
    finish(&env, record, result, started, health, persist)
}

/// Ends an operation: clears its journal, persists the record when asked, and hands it
/// back with the result.
fn finish(
    env: &OpEnv,
    mut record: AppRecord,
    result: Result<String, String>,
    started: bool,
    health: Option<Health>,
    persist: bool,
) -> OpEnd {
    record.journal = None;
    if persist {
        if let Err(e) = env.save(&record) {
            tracing::error!(app = env.id(), error = %e, "could not persist state");
        }
    }
    OpEnd {
        record,
        result,
        started,
        health,
    }
}

fn journal(
    env: &OpEnv,
    record: &mut AppRecord,
    op_id: &str,
    kind: OperationKind,
    step: &str,
) -> Result<(), String> {
    match &mut record.journal {
        Some(j) if j.operation == op_id => j.step = step.to_string(),
        _ => {
            record.journal = Some(JournalEntry {
                operation: op_id.to_string(),
                kind,
                step: step.to_string(),
                started_at: crate::api::now(),
                from: None,
                to: None,
                snapshot: None,
            })
        }
    }
    env.save(record)
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
    env.say("creating container");
    engine
        .create(spec)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
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
    create_volume_dirs(&env.app, &env.store).map_err(|e| format!("volume folders: {e}"))?;
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
            let out = run_hook(env.engine.as_ref(), &name, &hook.exec, hook.timeout).await?;
            if out != 0 {
                return Err(format!(
                    "post_create hook {} ({}) exited {out}",
                    i + 1,
                    hook.exec.join(" ")
                ));
            }
        }
        record.hooks_done = true;
        env.save(record)?;
    }
    *health = Some(wait_healthy(env, &spec, started_at).await?);
    Ok("running".into())
}

async fn run_hook(
    engine: &dyn ContainerRuntime,
    container: &str,
    cmd: &[String],
    timeout: Duration,
) -> Result<i64, String> {
    engine
        .exec(container, cmd, timeout)
        .await
        .map(|o| o.exit_code)
        .map_err(|e| format!("post_create hook {}: {e}", cmd.join(" ")))
}

/// Probes until healthy, or fails once the check's start period and retries are spent.
async fn wait_healthy(env: &OpEnv, spec: &ContainerSpec, since: Instant) -> Result<Health, String> {
    let Some(check) = env.app.manifest.container.health.clone() else {
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
    journal(env, record, op_id, OperationKind::Install, "prepare")?;
    let prepared = async {
        env.say("generating secrets");
        secrets::generate(&env.store, env.id(), &env.app.manifest.secrets)
            .map_err(|e| e.to_string())?;
        create_volume_dirs(&env.app, &env.store).map_err(|e| format!("volume folders: {e}"))?;
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
    journal(env, record, op_id, OperationKind::Install, "start")?;
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
    journal(env, record, op_id, OperationKind::Uninstall, "remove")?;
    stop(env).await?;
    let name = container_name(env.id());
    remove_quietly(env.engine.as_ref(), &name).await?;
    remove_quietly(env.engine.as_ref(), &format!("{name}{PREVIOUS_SUFFIX}")).await?;
    if purge {
        env.say("deleting volumes and secrets");
        remove_tree(&env.store.app_dir(env.id()))?;
        remove_tree(&env.store.snapshots_dir(env.id()))?;
        secrets::remove_all(&env.store, env.id()).map_err(|e| e.to_string())?;
    }
    env.store.remove(env.id()).map_err(|e| e.to_string())?;
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

/// Copies a folder tree. `std::fs::copy` uses `copy_file_range`, which clones extents
/// (a reflink) on filesystems that can, and copies bytes elsewhere.
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let dest = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(entry.path())?;
            std::os::unix::fs::symlink(target, dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    let perms = std::fs::metadata(from)?.permissions();
    std::fs::set_permissions(to, perms)
}

/// Replaces the app's volumes with the snapshot's content.
fn restore_snapshot(env: &OpEnv, snapshot: &Path) -> Result<(), String> {
    let live = env.store.app_dir(env.id());
    let err = |e: std::io::Error| format!("restoring snapshot {}: {e}", snapshot.display());
    let aside = live.with_extension("restoring");
    remove_tree(&aside)?;
    copy_tree(snapshot, &aside).map_err(err)?;
    remove_tree(&live)?;
    std::fs::rename(&aside, &live).map_err(err)
}

fn take_snapshot(env: &OpEnv, op_id: &str) -> Result<std::path::PathBuf, String> {
    let live = env.store.app_dir(env.id());
    let dir = env.store.snapshots_dir(env.id());
    let snapshot = dir.join(op_id);
    remove_tree(&snapshot)?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if live.exists() {
        copy_tree(&live, &snapshot).map_err(|e| format!("snapshot of {}: {e}", live.display()))?;
    } else {
        std::fs::create_dir_all(&snapshot).map_err(|e| format!("{}: {e}", snapshot.display()))?;
    }
    Ok(snapshot)
}

/// Keeps only the newest snapshot (the one a rollback restores).
fn prune_snapshots(env: &OpEnv, keep: &Path) {
    if let Ok(entries) = std::fs::read_dir(env.store.snapshots_dir(env.id())) {
        for e in entries.flatten() {
            if e.path() != keep {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
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
    journal(env, record, op_id, kind, "fetch")?;
    if let Some(j) = &mut record.journal {
        j.from = Some(from.clone());
        j.to = Some(to.clone());
    }
    fetch_image(env, &to, kind == OperationKind::Upgrade).await?;
    let new_spec = env.spec_for(&to)?;
    env.say("snapshotting volumes");
    let was_running = env
        .engine
        .inspect(&name)
        .await
        .map(|d| d.state.is_running())
        .unwrap_or(false);
    stop(env).await?;
    let snapshot = take_snapshot(env, op_id)?;
    if let Some(j) = &mut record.journal {
        j.snapshot = Some(snapshot.clone());
    }
    journal(env, record, op_id, kind, "swap")?;
    remove_quietly(env.engine.as_ref(), &aside).await?;
    match env.engine.rename(&name, &aside).await {
        Ok(()) => {}
        Err(e) if e.kind() == EngineErrorKind::ContainerNotFound => {}
        Err(e) => return Err(e.to_string()),
    }
    if let Some(src) = &restore_from {
        env.say("restoring the snapshot of the previous version");
        restore_snapshot(env, src)?;
    }
    let attempt = async {
        env.engine
            .create(&new_spec)
            .await
            .map_err(|e| e.to_string())?;
        env.say(format!("starting {}", to.version));
        env.engine.start(&name).await.map_err(|e| e.to_string())?;
        wait_healthy(env, &new_spec, Instant::now()).await
    }
    .await;
    match attempt {
        Ok(h) => {
            *started = true;
            *health = Some(h);
            remove_quietly(env.engine.as_ref(), &aside).await?;
            record.previous = Some(from);
            record.installed = Some(to.clone());
            record.memory_limit = Some(new_spec.memory_limit);
            prune_snapshots(env, &snapshot);
            Ok(format!("running {}", to.version))
        }
        Err(e) => {
            env.say(format!("{e}; rolling back to {}", from.version));
            undo_swap(env, &snapshot, was_running).await?;
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
        restore_snapshot(env, snapshot)?;
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
    let result = swap(
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
    .await;
    if result.is_ok() {
        // A rollback is not undone by another rollback.
        record.previous = None;
    }
    result
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
/// journal. Install and uninstall are finished (their steps are idempotent); upgrade and
/// rollback are undone (the old container and the snapshot are put back).
pub async fn recover(env: &OpEnv, mut record: AppRecord) -> OpEnd {
    let Some(j) = record.journal.clone() else {
        return OpEnd {
            record,
            result: Ok("nothing to recover".into()),
            started: false,
            health: None,
        };
    };
    tracing::warn!(app = env.id(), operation = %j.operation, kind = ?j.kind, step = %j.step, "recovering an interrupted operation");
    let mut started = false;
    let mut health = None;
    let result = match j.kind {
        OperationKind::Install if record.installed.is_none() => {
            // Cut off before anything was installed: nothing to undo but the container.
            remove_quietly(env.engine.as_ref(), &container_name(env.id()))
                .await
                .map(|_| "install undone".to_string())
        }
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
        OperationKind::Uninstall => uninstall(env, &mut record, &j.operation, false).await,
        OperationKind::Upgrade | OperationKind::Rollback => {
            if j.step == "swap" {
                let snapshot = j.snapshot.clone().unwrap_or_default();
                let desired_running = record.desired == Desired::Running;
                undo_swap(env, &snapshot, desired_running).await.map(|_| {
                    format!(
                        "interrupted {:?} undone; back on {}",
                        j.kind,
                        j.from.as_ref().map(|f| f.version.as_str()).unwrap_or("?")
                    )
                })
            } else {
                Ok("interrupted before the swap; nothing changed".into())
            }
        }
        _ => Ok("nothing to recover".into()),
    };
    let persist = record.installed.is_some() || record.desired != Desired::NotInstalled;
    finish(env, record, result, started, health, persist)
}

/// Convenience for callers matching engine errors by kind.
pub fn is_not_found(e: &EngineError) -> bool {
    e.kind() == EngineErrorKind::ContainerNotFound
}
