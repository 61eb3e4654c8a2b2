//! A new node from a backup: the newest (or a named) snapshot restored into an empty
//! `data_dir`, every app record set to installed and wanted running, and each Lightning
//! app's channel backup put back from its newest copy — never an old channel database,
//! which the snapshot never holds. Runs before `serve`, on a data folder no supervisor
//! uses.

use serde::Serialize;

use super::plan::restore_excludes;
use super::restic::{Restic, Snapshot, TAG_CHANNEL, TAG_NODE};
use super::BackupError;
use crate::api::Desired;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::manifest::AppManifest;
use crate::store::Store;

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    pub snapshot_id: String,
    pub apps: Vec<String>,
    /// One line per Lightning app: what the owner must know and do.
    pub warnings: Vec<String>,
}

/// Restores `snapshot` (an id, or the newest node snapshot when `None`) into the config's
/// empty `data_dir`.
pub async fn restore(
    config: &Config,
    snapshot: Option<&str>,
) -> Result<RestoreReport, BackupError> {
    let backup = config
        .backup
        .as_ref()
        .ok_or_else(|| BackupError::Config("the config has no `backup:` section".into()))?;
    let data_dir = &config.data_dir;
    let state = data_dir.join("state");
    if let Ok(mut entries) = std::fs::read_dir(&state) {
        if entries.next().is_some() {
            return Err(BackupError::Refused(format!(
                "{}: already holds app state; restore onto an empty data_dir",
                state.display()
            )));
        }
    }
    let password = backup
        .password_file
        .as_ref()
        .ok_or_else(|| BackupError::Config("backup.password_file is not set".into()))?;
    if !password.exists() {
        return Err(BackupError::Config(format!(
            "backup.password_file: {}: missing; put the repository password there first",
            password.display()
        )));
    }
    let restic = Restic::new(backup)?;
    restic.unlock().await?;
    let snapshots = restic.snapshots(Some(TAG_NODE)).await?;
    let chosen = pick(&snapshots, snapshot)?;

    let (catalog, _) = Catalog::load(&config.apps_dir);
    let manifests: Vec<&AppManifest> = catalog.apps.values().map(|a| &a.manifest).collect();
    std::fs::create_dir_all(data_dir).map_err(|source| BackupError::Io {
        path: data_dir.clone(),
        source,
    })?;
    restic
        .restore(&chosen.id, data_dir, &[], &restore_excludes(&manifests))
        .await?;

    // The records: installed, wanted running, nothing in flight.
    let store = Store::open(data_dir).map_err(|e| BackupError::Refused(e.to_string()))?;
    let mut report = RestoreReport {
        snapshot_id: chosen.id.clone(),
        ..RestoreReport::default()
    };
    let entries = std::fs::read_dir(&state).map_err(|source| BackupError::Io {
        path: state.clone(),
        source,
    })?;
    let mut ids: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .map(str::to_string)
        })
        .collect();
    ids.sort();
    for id in &ids {
        let Some(mut loaded) = store
            .load(id)
            .map_err(|e| BackupError::Refused(e.to_string()))?
        else {
            continue;
        };
        let record = &mut loaded.record;
        if record.installed.is_none() {
            continue;
        }
        record.desired = Desired::Running;
        record.journal = None;
        record.crashes = None;
        record.last_error = None;
        store
            .save(id, record)
            .map_err(|e| BackupError::Refused(e.to_string()))?;
        report.apps.push(id.clone());
    }

    // Lightning apps: their newest channel backup, copied after the node snapshot.
    for app in &manifests {
        let Some(cb) = &app.backup.channel_backup else {
            continue;
        };
        let id = app.id.as_str();
        if !report.apps.iter().any(|a| a == id) {
            continue;
        }
        let tag = format!("{TAG_CHANNEL},app:{id}");
        let copies = restic.snapshots(Some(&tag)).await?;
        let file = format!("/apps/{id}/{}/{}", cb.volume, cb.path);
        match copies.last() {
            Some(copy) if time(&chosen.time) <= time(&copy.time) => {
                restic
                    .restore(&copy.id, data_dir, std::slice::from_ref(&file), &[])
                    .await?;
            }
            _ => {}
        }
        let restored = data_dir.join(file.trim_start_matches('/'));
        report.warnings.push(if restored.exists() {
            format!(
                "{id}: restored WITHOUT its channel database (an old one would lose funds); its \
                 channels can only be recovered from the static channel backup {}: \
                 every channel will be force-closed by its peer and the funds return on chain",
                restored.display()
            )
        } else {
            format!(
                "{id}: restored WITHOUT its channel database and no channel backup was found: \
                 channel funds can only be recovered with the peers' help"
            )
        });
    }
    Ok(report)
}

fn pick<'a>(snapshots: &'a [Snapshot], wanted: Option<&str>) -> Result<&'a Snapshot, BackupError> {
    match wanted {
        Some(id) => snapshots
            .iter()
            .find(|s| s.id == id || s.short_id == id)
            .ok_or_else(|| {
                BackupError::Refused(format!("no node snapshot {id} in the repository"))
            }),
        None => snapshots
            .iter()
            .max_by_key(|s| time(&s.time))
            .ok_or_else(|| BackupError::Refused("the repository holds no node snapshot".into())),
    }
}

/// A snapshot's time (restic writes RFC 3339); an unreadable one sorts first.
fn time(text: &str) -> std::time::SystemTime {
    humantime::parse_rfc3339_weak(text).unwrap_or(std::time::SystemTime::UNIX_EPOCH)
}
