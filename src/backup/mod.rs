//! Backups off the node: scheduled runs of every installed app's volumes, secrets and
//! state into an encrypted, deduplicated restic repository (local folder, SFTP or
//! S3-compatible storage), Lightning channel backups copied within seconds of each
//! change, and the restore onto a new node (see docs/backups.md).
//!
//! One concern per file: `config` (the config file's `backup:` section), `plan` (what a
//! run takes), `restic` (the repository, through the restic program), `run` (one
//! scheduled run), `channel` (the channel-backup watcher), `restore` (a new node from a
//! snapshot) and `cli`. The [`BackupActor`] owns the schedule and the one run in flight;
//! it asks the supervisor to stop and start apps through the normal operations and never
//! changes a container itself. Every restic call runs as a child process on tokio, so no
//! run ever holds up the supervisor, the RPC or the dashboard.

pub mod cli;
pub mod config;
pub mod plan;
pub mod restic;
pub mod restore;
mod run;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use serde::Serialize;
use serde_json::{json, Value};

pub use config::BackupConfig;

use crate::api::{OperationProgress, OperationStatus};
use crate::engine::ContainerRuntime;
use crate::error::AppError;
use crate::manifest::AppManifest;
use crate::supervisor::{GetPackage, ListPackages, RunOperation};
use restic::Restic;

/// How often the channel-backup files are looked at.
pub const CHANNEL_POLL: Duration = Duration::from_secs(1);

/// Why a backup, a restore or a channel-backup copy failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup is not configured: {0}")]
    Config(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("restic {command}: {reason}")]
    Restic { command: String, reason: String },
    #[error("partial backup (some files could not be read): {unreadable}")]
    Partial { unreadable: String },
    #[error("{app}: {reason}")]
    App { app: String, reason: String },
    #[error("{0}")]
    Refused(String),
}

/// One backup run, as `backup.status` and the dashboard show it: an operation of kind
/// `backup` with its progress in bytes, plus what the run made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupRun {
    pub id: String,
    /// `backup`, or `restore` for a `backup.restore` of one app.
    pub kind: &'static str,
    pub status: OperationStatus,
    /// `schedule` or `request`.
    pub trigger: &'static str,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    pub progress: OperationProgress,
    /// The apps the run took.
    pub apps: Vec<String>,
    pub snapshot_id: Option<String>,
    /// Bytes this run added to the repository (an incremental run adds only the changes).
    pub data_added: Option<u64>,
    pub bytes_processed: Option<u64>,
    /// The repository passed its check (a sample read back) after the run.
    pub checked: bool,
}

/// The last copy of one app's channel backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelCopy {
    pub app: String,
    /// When the change was copied to the target (or the copy failed).
    pub at: String,
    pub snapshot_id: Option<String>,
    pub error: Option<String>,
}

/// `backup.status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupStatus {
    pub configured: bool,
    /// The repository, as restic names it (no secret in it).
    pub repository: Option<String>,
    pub schedule: Option<String>,
    pub next_run_at: Option<String>,
    pub running: Option<BackupRun>,
    pub last: Option<BackupRun>,
    pub channel_backups: Vec<ChannelCopy>,
}

/// A request from the web layer: one message for every `backup.*` method.
#[derive(Debug, Message)]
#[rtype(result = "Result<Value, AppError>")]
pub enum BackupRequest {
    /// `backup.run`: starts a run now; a run in flight is a conflict.
    Run,
    /// `backup.status`.
    Status,
    /// `backup.list`: the repository's snapshots.
    List,
    /// `backup.restore`: one installed app's volumes and secrets from a node snapshot
    /// (the newest, or `snapshot`), with the app stopped; refused for apps with `never`
    /// paths or a channel backup (Lightning), which are restored onto a new node only.
    Restore {
        app: String,
        snapshot: Option<String>,
    },
}

/// How the backup actor reaches the supervisor.
#[derive(Clone)]
pub struct SupervisorLink {
    pub list: Recipient<ListPackages>,
    pub get: Recipient<GetPackage>,
    pub run: Recipient<RunOperation>,
}

/// Owns the schedule, the one run in flight, the last result and the channel watcher.
pub struct BackupActor {
    config: BackupConfig,
    restic: Restic,
    data_dir: PathBuf,
    apps_dir: PathBuf,
    supervisor: SupervisorLink,
    engine: Arc<dyn ContainerRuntime>,
    /// The run in flight: never two at once.
    running: Option<BackupRun>,
    /// The last finished run, shown until the next one ends.
    last: Option<BackupRun>,
    next_run_at: Option<SystemTime>,
    /// Number of the next run (operation ids are `backup-<n>-<time>`).
    seq: u64,
    /// What the watcher last copied per Lightning app: (mtime, size) and the report.
    channel_seen: BTreeMap<String, (SystemTime, u64)>,
    channel_copies: BTreeMap<String, ChannelCopy>,
    /// A watcher pass is running (passes never overlap).
    channel_busy: bool,
    /// Lightning apps of the catalog with their channel-backup file, read at start and
    /// before each run.
    channel_apps: Vec<(String, PathBuf)>,
}

impl BackupActor {
    /// The actor for `config` (already resolved by the config loader).
    pub fn new(
        config: BackupConfig,
        data_dir: PathBuf,
        apps_dir: PathBuf,
        supervisor: SupervisorLink,
        engine: Arc<dyn ContainerRuntime>,
    ) -> Result<BackupActor, BackupError> {
        let restic = Restic::new(&config)?;
        Ok(BackupActor {
            config,
            restic,
            data_dir,
            apps_dir,
            supervisor,
            engine,
            running: None,
            last: None,
            next_run_at: None,
            seq: 0,
            channel_seen: BTreeMap::new(),
            channel_copies: BTreeMap::new(),
            channel_busy: false,
            channel_apps: Vec::new(),
        })
    }

    fn status(&self) -> BackupStatus {
        BackupStatus {
            configured: true,
            repository: Some(self.restic.repository().to_string()),
            schedule: self
                .config
                .schedule
                .map(|s| humantime::format_duration(s).to_string()),
            next_run_at: self.next_run_at.map(crate::api::timestamp),
            running: self.running.clone(),
            last: self.last.clone(),
            channel_backups: self.channel_copies.values().cloned().collect(),
        }
    }

    /// Starts a backup run (or, with `restore`, the restore of one app) unless a run is in
    /// flight; answers the run.
    fn start_run(
        &mut self,
        trigger: &'static str,
        restore: Option<(String, Option<String>)>,
        ctx: &mut Context<Self>,
    ) -> Result<BackupRun, AppError> {
        if let Some(run) = &self.running {
            return Err(AppError::Conflict {
                app: "backup".to_string(),
                operation: run.id.clone(),
                kind: run.kind.to_string(),
            });
        }
        let kind = if restore.is_some() {
            "restore"
        } else {
            "backup"
        };
        self.seq += 1;
        let started = SystemTime::now();
        let id = format!(
            "{kind}-{}-{}",
            self.seq,
            started
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default()
        );
        let run = BackupRun {
            id: id.clone(),
            kind,
            status: OperationStatus::Running,
            trigger,
            started_at: crate::api::timestamp(started),
            finished_at: None,
            error: None,
            progress: OperationProgress {
                message: "starting".to_string(),
                done: None,
                total: None,
            },
            apps: restore.iter().map(|(app, _)| app.clone()).collect(),
            snapshot_id: None,
            data_added: None,
            bytes_processed: None,
            checked: false,
        };
        self.running = Some(run.clone());
        let job = run::Job {
            id,
            restic: self.restic.clone(),
            config: self.config.clone(),
            data_dir: self.data_dir.clone(),
            apps_dir: self.apps_dir.clone(),
            supervisor: self.supervisor.clone(),
            engine: self.engine.clone(),
            me: ctx.address(),
        };
        match restore {
            Some((app, snapshot)) => actix::spawn(run::restore_app(job, app, snapshot)),
            None => actix::spawn(run::run(job)),
        };
        Ok(run)
    }

    fn channel_pass(&mut self, ctx: &mut Context<Self>) {
        if self.channel_busy || self.channel_apps.is_empty() {
            return;
        }
        self.channel_busy = true;
        let apps = self.channel_apps.clone();
        let seen = self.channel_seen.clone();
        let restic = self.restic.clone();
        let data_dir = self.data_dir.clone();
        let keep = self.config.keep.channel;
        let fut = async move { run::channel_pass(restic, data_dir, apps, seen, keep).await };
        ctx.spawn(fut.into_actor(self).map(|copies, act, _| {
            act.channel_busy = false;
            for (app, stamp, copy) in copies {
                if copy.error.is_none() {
                    act.channel_seen.insert(app.clone(), stamp);
                }
                act.channel_copies.insert(app, copy);
            }
        }));
    }

    fn schedule_next(&mut self) {
        self.next_run_at = self.config.schedule.map(|s| SystemTime::now() + s);
    }
}

/// The Lightning apps of `apps` and their channel-backup files.
pub fn channel_files(data_dir: &std::path::Path, apps: &[&AppManifest]) -> Vec<(String, PathBuf)> {
    apps.iter()
        .filter_map(|app| {
            let cb = app.backup.channel_backup.as_ref()?;
            let id = app.id.as_str();
            Some((
                id.to_string(),
                data_dir
                    .join("apps")
                    .join(id)
                    .join(&cb.volume)
                    .join(&cb.path),
            ))
        })
        .collect()
}

impl Actor for BackupActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (data_dir, apps_dir) = (self.data_dir.clone(), self.apps_dir.clone());
        let load = async move {
            tokio::task::spawn_blocking(move || {
                let (catalog, _) = crate::catalog::Catalog::load(&apps_dir);
                let apps: Vec<&AppManifest> = catalog.apps.values().map(|a| &a.manifest).collect();
                channel_files(&data_dir, &apps)
            })
            .await
            .unwrap_or_default()
        };
        ctx.spawn(load.into_actor(self).map(|files, act, _| {
            act.channel_apps = files;
        }));
        actix::spawn(run::resume_stopped(
            self.data_dir.clone(),
            self.supervisor.clone(),
        ));
        ctx.run_interval(CHANNEL_POLL, |act, ctx| act.channel_pass(ctx));
        if let Some(every) = self.config.schedule {
            self.schedule_next();
            ctx.run_interval(every, |act, ctx| {
                act.schedule_next();
                if act.running.is_none() {
                    let _ = act.start_run("schedule", None, ctx);
                } else {
                    tracing::info!("backup: the scheduled run is skipped, one is still running");
                }
            });
        }
    }
}

/// Progress of the run in flight, from its task.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct RunProgress {
    id: String,
    progress: OperationProgress,
    apps: Option<Vec<String>>,
}

/// The run in flight ended.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct RunEnded {
    run: run::Outcome,
}

impl Handler<RunProgress> for BackupActor {
    type Result = ();

    fn handle(&mut self, msg: RunProgress, _: &mut Context<Self>) {
        if let Some(run) = self.running.as_mut().filter(|r| r.id == msg.id) {
            // A step without figures keeps the bytes copied so far.
            let (done, total) = match msg.progress.done {
                Some(_) => (msg.progress.done, msg.progress.total),
                None => (run.progress.done, run.progress.total),
            };
            run.progress = OperationProgress {
                message: msg.progress.message,
                done,
                total,
            };
            if let Some(apps) = msg.apps {
                run.apps = apps;
            }
        }
    }
}

impl Handler<RunEnded> for BackupActor {
    type Result = ();

    fn handle(&mut self, msg: RunEnded, _: &mut Context<Self>) {
        let Some(mut run) = self.running.take() else {
            return;
        };
        let outcome = msg.run;
        run.finished_at = Some(crate::api::now());
        if let Some(files) = outcome.channel_files {
            self.channel_apps = files;
        }
        match outcome.result {
            Ok(done) => {
                run.status = OperationStatus::Succeeded;
                run.snapshot_id = Some(done.summary.snapshot_id.clone());
                run.data_added = Some(done.summary.data_added);
                run.bytes_processed = Some(done.summary.total_bytes_processed);
                run.checked = done.checked;
                run.progress.message = "done".to_string();
                tracing::info!(
                    run = %run.id,
                    snapshot = %done.summary.snapshot_id,
                    data_added = done.summary.data_added,
                    "{} succeeded",
                    run.kind
                );
            }
            Err(e) => {
                run.status = OperationStatus::Failed;
                run.error = Some(e.to_string());
                run.progress.message = "failed".to_string();
                tracing::error!(run = %run.id, error = %e, "{} failed", run.kind);
            }
        }
        self.last = Some(run);
    }
}

impl Handler<BackupRequest> for BackupActor {
    type Result = ResponseFuture<Result<Value, AppError>>;

    fn handle(&mut self, msg: BackupRequest, ctx: &mut Context<Self>) -> Self::Result {
        match msg {
            BackupRequest::Run => {
                let answer = self
                    .start_run("request", None, ctx)
                    .and_then(|run| Ok(json!({ "operation": to_value(&run)? })));
                Box::pin(async move { answer })
            }
            BackupRequest::Restore { app, snapshot } => {
                let answer = self
                    .start_run("request", Some((app, snapshot)), ctx)
                    .and_then(|run| Ok(json!({ "operation": to_value(&run)? })));
                Box::pin(async move { answer })
            }
            BackupRequest::Status => {
                let answer = to_value(&self.status());
                Box::pin(async move { answer })
            }
            BackupRequest::List => {
                let restic = self.restic.clone();
                Box::pin(async move {
                    let snapshots = restic
                        .snapshots(None)
                        .await
                        .map_err(|e| AppError::Internal(e.to_string()))?;
                    to_value(&snapshots)
                })
            }
        }
    }
}

fn to_value<T: Serialize>(value: &T) -> Result<Value, AppError> {
    serde_json::to_value(value).map_err(|e| AppError::Internal(e.to_string()))
}

/// `backup.status` of a node without a `backup:` section.
pub fn unconfigured_status() -> Value {
    json!({
        "configured": false,
        "repository": null,
        "schedule": null,
        "next_run_at": null,
        "running": null,
        "last": null,
        "channel_backups": [],
    })
}
