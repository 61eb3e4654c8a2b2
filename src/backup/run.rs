//! One backup run, as a task off the actor: open the repository, make each app
//! consistent (stop it through the supervisor, or run its pre-backup command), back up,
//! start what was stopped, apply the retention and read a sample back. Also one pass of
//! the channel-backup watcher.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::Addr;

use super::config::BackupConfig;
use super::plan::{backup_set, BackupSet};
use super::restic::{Restic, Summary, TAG_CHANNEL, TAG_NODE};
use super::{
    channel_files, BackupActor, BackupError, ChannelCopy, RunEnded, RunProgress, SupervisorLink,
};
use crate::api::{AppState, OperationKind, OperationProgress};
use crate::catalog::Catalog;
use crate::engine::ContainerRuntime;
use crate::error::AppError;
use crate::manifest::AppManifest;
use crate::supervisor::{GetPackage, ListPackages, RunOperation};

/// Beyond an app's `stop_timeout`, how long a stop may take before the run gives up.
const STOP_GRACE: Duration = Duration::from_secs(60);
/// Longest wait for the supervisor to answer one message.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// Progress is sent to the actor at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// What a run needs, handed over by the actor.
pub(super) struct Job {
    pub id: String,
    pub restic: Restic,
    pub config: BackupConfig,
    pub data_dir: PathBuf,
    pub apps_dir: PathBuf,
    pub supervisor: SupervisorLink,
    pub engine: Arc<dyn ContainerRuntime>,
    pub me: Addr<BackupActor>,
}

/// A successful run.
#[derive(Debug)]
pub(super) struct Done {
    pub summary: Summary,
    /// The repository was checked after the run (backups; a restore is not).
    pub checked: bool,
}

/// How a run ended, for the actor.
#[derive(Debug)]
pub(super) struct Outcome {
    pub result: Result<Done, BackupError>,
    /// The catalog's channel-backup files as this run read them.
    pub channel_files: Option<Vec<(String, PathBuf)>>,
}

/// Runs one backup to its end and reports to the actor.
pub(super) async fn run(job: Job) {
    let me = job.me.clone();
    let mut channel = None;
    let result = run_inner(&job, &mut channel).await;
    me.do_send(RunEnded {
        run: Outcome {
            result,
            channel_files: channel,
        },
    });
}

fn say(job: &Job, message: &str, done: Option<u64>, total: Option<u64>, apps: Option<Vec<String>>) {
    job.me.do_send(RunProgress {
        id: job.id.clone(),
        progress: OperationProgress {
            message: message.to_string(),
            done,
            total,
        },
        apps,
    });
}

async fn run_inner(
    job: &Job,
    channel: &mut Option<Vec<(String, PathBuf)>>,
) -> Result<Done, BackupError> {
    let restic = &job.restic;
    say(job, "opening the repository", None, None, None);
    if restic.prepare().await? {
        tracing::warn!(
            path = ?job.config.password_file,
            "backup: made a new repository password: keep a copy of this file off the node, \
             no backup can be read without it"
        );
    }
    restic.unlock().await?;

    // What to take: the installed apps of the catalog.
    let apps_dir = job.apps_dir.clone();
    let catalog = tokio::task::spawn_blocking(move || Catalog::load(&apps_dir).0)
        .await
        .map_err(|e| BackupError::Refused(format!("catalog: {e}")))?;
    let packages = tokio::time::timeout(ASK_TIMEOUT, job.supervisor.list.send(ListPackages))
        .await
        .map_err(|_| BackupError::Refused("the supervisor did not answer".into()))?
        .map_err(|e| BackupError::Refused(e.to_string()))?;
    let installed: BTreeMap<String, (AppState, Option<String>)> = packages
        .into_iter()
        .filter(|p| p.installed_version.is_some())
        .map(|p| (p.id, (p.state, p.container_id)))
        .collect();
    let manifests: Vec<&AppManifest> = catalog
        .apps
        .values()
        .map(|a| &a.manifest)
        .filter(|m| installed.contains_key(m.id.as_str()))
        .collect();
    *channel = Some(channel_files(
        &job.data_dir,
        &catalog
            .apps
            .values()
            .map(|a| &a.manifest)
            .collect::<Vec<_>>(),
    ));
    let data_dir = job.data_dir.clone();
    let set = backup_set(&data_dir, &manifests, |p| data_dir.join(p).exists());
    if set.apps.is_empty() {
        return Err(BackupError::Refused("no installed app to back up".into()));
    }
    say(job, "preparing apps", None, None, Some(set.apps.clone()));

    // Consistency: pre-backup commands, then stops.
    for id in &set.exec {
        let Some(app) = manifests.iter().find(|m| m.id.as_str() == id) else {
            continue;
        };
        let Some(pre) = &app.backup.pre else { continue };
        let (state, container) = installed
            .get(id)
            .cloned()
            .unwrap_or((AppState::Stopped, None));
        if state != AppState::Running {
            continue; // a stopped app's files are at rest already
        }
        let Some(container) = container else { continue };
        say(job, &format!("{id}: pre-backup command"), None, None, None);
        let out = job
            .engine
            .exec(&container, &pre.exec, pre.timeout)
            .await
            .map_err(|e| BackupError::App {
                app: id.clone(),
                reason: format!("pre-backup command: {e}"),
            })?;
        if out.exit_code != 0 {
            return Err(BackupError::App {
                app: id.clone(),
                reason: format!(
                    "pre-backup command exited {}: {}",
                    out.exit_code,
                    out.output.trim()
                ),
            });
        }
    }
    let mut stopped = Vec::new();
    let marker = job.data_dir.join(STOPPED_MARKER);
    let result = async {
        for id in &set.stop {
            let running = installed
                .get(id)
                .is_some_and(|(s, _)| !matches!(s, AppState::Stopped | AppState::Failed));
            if !running {
                continue;
            }
            say(
                job,
                &format!("{id}: stopping for a consistent copy"),
                None,
                None,
                None,
            );
            let timeout = manifests
                .iter()
                .find(|m| m.id.as_str() == id)
                .map(|m| m.container.stop_timeout)
                .unwrap_or_default()
                + STOP_GRACE;
            stopped.push(id.clone());
            // Written before the stop: a supervisor that dies mid-run starts them at its
            // next boot.
            write_stopped(&marker, &stopped).await?;
            stop_app(&job.supervisor, id, timeout).await?;
        }
        back_up(job, &set).await
    }
    .await;
    // Whatever happened, what was stopped starts again.
    start_again(&job.supervisor, &stopped).await;
    if !stopped.is_empty() {
        let _ = tokio::fs::remove_file(&marker).await;
    }
    let summary = result?;

    say(job, "applying the retention", None, None, None);
    restic.forget(TAG_NODE, &job.config.keep).await?;
    say(job, "checking the repository", None, None, None);
    restic.check(&job.config.check_subset).await?;
    Ok(Done {
        summary,
        checked: true,
    })
}

async fn back_up(job: &Job, set: &BackupSet) -> Result<Summary, BackupError> {
    let mut last = Instant::now() - PROGRESS_EVERY;
    let progress = |done: u64, total: u64| {
        if last.elapsed() >= PROGRESS_EVERY {
            last = Instant::now();
            say(job, "backing up", Some(done), Some(total), None);
        }
    };
    let summary = job
        .restic
        .backup(
            &job.data_dir,
            &set.paths,
            &set.excludes,
            &[TAG_NODE],
            progress,
        )
        .await?;
    say(
        job,
        "backed up",
        Some(summary.total_bytes_processed),
        Some(summary.total_bytes_processed),
        None,
    );
    Ok(summary)
}

/// Restores one app's volumes and secrets from a node snapshot and reports to the actor.
pub(super) async fn restore_app(job: Job, app: String, snapshot: Option<String>) {
    let me = job.me.clone();
    let result = restore_inner(&job, &app, snapshot.as_deref()).await;
    me.do_send(RunEnded {
        run: Outcome {
            result,
            channel_files: None,
        },
    });
}

async fn restore_inner(job: &Job, id: &str, wanted: Option<&str>) -> Result<Done, BackupError> {
    let refuse = |reason: String| BackupError::App {
        app: id.to_string(),
        reason,
    };
    let apps_dir = job.apps_dir.clone();
    let catalog = tokio::task::spawn_blocking(move || Catalog::load(&apps_dir).0)
        .await
        .map_err(|e| BackupError::Refused(format!("catalog: {e}")))?;
    let manifest = catalog
        .apps
        .values()
        .map(|a| &a.manifest)
        .find(|m| m.id.as_str() == id)
        .ok_or_else(|| refuse("not in the catalog".into()))?;
    if !manifest.backup.never.is_empty() || manifest.backup.channel_backup.is_some() {
        return Err(refuse(
            "holds state that must never go back in time (Lightning channels): restore it \
             onto a new node with `archipelago backup restore`, never over a running one"
                .into(),
        ));
    }
    let get = GetPackage { id: id.to_string() };
    let package = tokio::time::timeout(ASK_TIMEOUT, job.supervisor.get.send(get))
        .await
        .map_err(|_| refuse("the supervisor did not answer".into()))?
        .map_err(|e| refuse(e.to_string()))?
        .map_err(|e| refuse(e.to_string()))?;
    if package.installed_version.is_none() {
        return Err(refuse("is not installed".into()));
    }
    let restic = &job.restic;
    say(job, "opening the repository", None, None, None);
    restic.prepare().await?;
    restic.unlock().await?;
    let snapshots = restic.snapshots(Some(TAG_NODE)).await?;
    let snapshot = match wanted {
        Some(w) => snapshots
            .iter()
            .find(|s| s.id == w || s.short_id == w)
            .ok_or_else(|| BackupError::Refused(format!("no node snapshot {w}")))?,
        None => snapshots
            .last()
            .ok_or_else(|| BackupError::Refused("the repository holds no node snapshot".into()))?,
    };
    // Into a staging folder first: the live data is only touched once the copy is whole.
    let stage = job.data_dir.join("backup").join("restore-staging");
    remove_tree(&stage).await?;
    say(
        job,
        &format!("restoring from {}", snapshot.short_id),
        None,
        None,
        None,
    );
    let include = vec![format!("/apps/{id}"), format!("/secrets/{id}")];
    restic.restore(&snapshot.id, &stage, &include, &[]).await?;
    let staged_app = stage.join("apps").join(id);
    if !staged_app.exists() {
        remove_tree(&stage).await?;
        return Err(refuse(format!(
            "snapshot {} does not hold it",
            snapshot.short_id
        )));
    }

    let was_running = !matches!(package.state, AppState::Stopped | AppState::Failed);
    let marker = job.data_dir.join(STOPPED_MARKER);
    if was_running {
        write_stopped(&marker, &[id.to_string()]).await?;
        let timeout = manifest.container.stop_timeout + STOP_GRACE;
        say(
            job,
            &format!("{id}: stopping for the restore"),
            None,
            None,
            None,
        );
        stop_app(&job.supervisor, id, timeout).await?;
    }
    say(job, "putting the data in place", None, None, None);
    let swapped = swap_in(&job.data_dir, &stage, id).await;
    if was_running {
        let start = RunOperation {
            id: id.to_string(),
            kind: OperationKind::Start,
            purge: false,
        };
        let _ = tokio::time::timeout(ASK_TIMEOUT, job.supervisor.run.send(start)).await;
        let _ = tokio::fs::remove_file(&marker).await;
    }
    swapped?;
    remove_tree(&stage).await?;
    Ok(Done {
        summary: Summary {
            snapshot_id: snapshot.id.clone(),
            ..Summary::default()
        },
        checked: false,
    })
}

/// Replaces each of the app's restored folders (volumes, secrets) by its staged copy; the
/// old ones go to the staging folder and are deleted with it.
async fn swap_in(data_dir: &Path, stage: &Path, id: &str) -> Result<(), BackupError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BackupError::Io { path, source }
    };
    let mut pairs = Vec::new();
    let staged_app = stage.join("apps").join(id);
    let mut volumes = tokio::fs::read_dir(&staged_app)
        .await
        .map_err(io(&staged_app))?;
    while let Some(e) = volumes.next_entry().await.map_err(io(&staged_app))? {
        pairs.push((e.path(), data_dir.join("apps").join(id).join(e.file_name())));
    }
    let staged_secrets = stage.join("secrets").join(id);
    if staged_secrets.exists() {
        pairs.push((staged_secrets, data_dir.join("secrets").join(id)));
    }
    let old = stage.join("old");
    tokio::fs::create_dir_all(&old).await.map_err(io(&old))?;
    for (i, (from, to)) in pairs.iter().enumerate() {
        if tokio::fs::try_exists(to).await.unwrap_or(false) {
            let aside = old.join(i.to_string());
            tokio::fs::rename(to, &aside).await.map_err(io(to))?;
        }
        tokio::fs::rename(from, to).await.map_err(io(to))?;
    }
    Ok(())
}

async fn remove_tree(path: &Path) -> Result<(), BackupError> {
    let owned = path.to_path_buf();
    let result = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&owned) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    result.map_err(|source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// `<data_dir>/backup/stopped-for-backup`: the apps a run in flight has stopped, as a JSON
/// list; present only while they are down.
pub(super) const STOPPED_MARKER: &str = "backup/stopped-for-backup";

async fn write_stopped(path: &Path, apps: &[String]) -> Result<(), BackupError> {
    let io = |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_vec(apps).unwrap_or_default();
    tokio::fs::write(&tmp, text).await.map_err(io)?;
    tokio::fs::rename(&tmp, path).await.map_err(io)
}

/// At boot: starts again the apps that a run of a dead supervisor had stopped, then drops
/// the marker. The supervisor may not know its apps yet: each start is retried for a while.
pub(super) async fn resume_stopped(data_dir: PathBuf, link: SupervisorLink) {
    let marker = data_dir.join(STOPPED_MARKER);
    let Ok(text) = tokio::fs::read(&marker).await else {
        return;
    };
    let apps: Vec<String> = serde_json::from_slice(&text).unwrap_or_default();
    tracing::info!(
        ?apps,
        "backup: starting again the apps a cut-off run had stopped"
    );
    start_again(&link, &apps).await;
    let _ = tokio::fs::remove_file(&marker).await;
}

/// How long [`start_again`] keeps asking.
const START_AGAIN_FOR: Duration = Duration::from_secs(60);

/// Asks the supervisor to start `apps`, in rounds a second apart: a start refused because a
/// dependency is not running yet (both were stopped) or because the supervisor does not
/// know the app yet (just booted) is asked again in the next round, for at most a minute.
async fn start_again(link: &SupervisorLink, apps: &[String]) {
    let deadline = Instant::now() + START_AGAIN_FOR;
    let mut pending: Vec<String> = apps.to_vec();
    while !pending.is_empty() {
        let mut later = Vec::new();
        for id in pending {
            let start = RunOperation {
                id: id.clone(),
                kind: OperationKind::Start,
                purge: false,
            };
            match tokio::time::timeout(ASK_TIMEOUT, link.run.send(start)).await {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err(AppError::DependencyNotReady { .. } | AppError::UnknownApp { .. })))
                | Ok(Err(_))
                | Err(_)
                    if Instant::now() < deadline =>
                {
                    later.push(id)
                }
                Ok(Ok(Err(e))) => {
                    tracing::error!(app = %id, error = %e, "backup: could not start the app again")
                }
                _ => tracing::error!(app = %id, "backup: the supervisor did not take the start"),
            }
        }
        pending = later;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Stops an app through the supervisor's normal stop operation and waits until it is
/// stopped.
async fn stop_app(link: &SupervisorLink, id: &str, within: Duration) -> Result<(), BackupError> {
    let fail = |reason: String| BackupError::App {
        app: id.to_string(),
        reason,
    };
    let stop = RunOperation {
        id: id.to_string(),
        kind: OperationKind::Stop,
        purge: false,
    };
    tokio::time::timeout(ASK_TIMEOUT, link.run.send(stop))
        .await
        .map_err(|_| fail("the supervisor did not take the stop".into()))?
        .map_err(|e| fail(e.to_string()))?
        .map_err(|e| fail(format!("cannot stop for the backup: {e}")))?;
    let deadline = Instant::now() + within;
    loop {
        let get = GetPackage { id: id.to_string() };
        if let Ok(Ok(Ok(p))) = tokio::time::timeout(ASK_TIMEOUT, link.get.send(get)).await {
            if p.state == AppState::Stopped {
                return Ok(());
            }
            if p.state == AppState::Failed {
                return Err(fail("failed while stopping for the backup".into()));
            }
        }
        if Instant::now() > deadline {
            return Err(fail(format!(
                "not stopped within {}",
                humantime::format_duration(within)
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One watcher pass: each Lightning app's channel-backup file whose time or size differs
/// from what was last copied is backed up on its own (tag `channel-backup`). Answers what
/// was copied (or failed) with the file's stamp.
pub(super) async fn channel_pass(
    restic: Restic,
    data_dir: PathBuf,
    apps: Vec<(String, PathBuf)>,
    seen: BTreeMap<String, (SystemTime, u64)>,
    keep: u32,
) -> Vec<(String, (SystemTime, u64), ChannelCopy)> {
    let mut copies = Vec::new();
    for (app, file) in apps {
        let Ok(meta) = tokio::fs::metadata(&file).await else {
            continue;
        };
        let stamp = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        if seen.get(&app) == Some(&stamp) {
            continue;
        }
        let result = async {
            restic.prepare().await?;
            let relative = relative_to(&file, &data_dir)?;
            let tag = format!("app:{app}");
            let summary = restic
                .backup(&data_dir, &[relative], &[], &[TAG_CHANNEL, &tag], |_, _| {})
                .await?;
            // The copy is on the target; dropping old copies needs the exclusive lock, which
            // a scheduled run may hold: it is tried again with the next copy.
            if let Err(e) = restic.forget_keep_last(&tag, keep).await {
                tracing::info!(%app, error = %e, "old channel-backup copies not dropped yet");
            }
            Ok::<_, BackupError>(summary.snapshot_id)
        }
        .await;
        let copy = match result {
            Ok(id) => {
                tracing::info!(%app, snapshot = %id, "channel backup copied to the target");
                ChannelCopy {
                    app: app.clone(),
                    at: crate::api::now(),
                    snapshot_id: Some(id),
                    error: None,
                }
            }
            Err(e) => {
                tracing::warn!(%app, error = %e, "channel backup not copied yet; retrying");
                ChannelCopy {
                    app: app.clone(),
                    at: crate::api::now(),
                    snapshot_id: None,
                    error: Some(e.to_string()),
                }
            }
        };
        copies.push((app, stamp, copy));
    }
    copies
}

fn relative_to(file: &Path, base: &Path) -> Result<String, BackupError> {
    file.strip_prefix(base)
        .map(|p| p.display().to_string())
        .map_err(|_| BackupError::Refused(format!("{} is outside the data folder", file.display())))
}
