//! Persisted state in `data_dir`: one small JSON file per app holding what the owner wants
//! (`desired`), what is installed, the previous install (for rollback), whether the
//! `post_create` hooks ran, and the journal of the operation in flight.
//!
//! Writes are atomic: temp file, fsync, the current file linked as `.bak`, temp renamed
//! over it, fsync of the folder. A file that cannot be read or parsed is reported and
//! the `.bak` copy (the last good one) is used instead. This module does no engine I/O.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::api::{Desired, OperationKind};

/// What is installed for an app: enough to recreate its container or go back to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    pub version: String,
    pub image: String,
}

/// A step of a journaled operation, as the state file writes it (`"swap"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalStep {
    /// Install or uninstall accepted, nothing done yet.
    Accepted,
    /// Install: secrets, volume folders, image.
    Prepare,
    /// Install: the app is installed and starting.
    Start,
    /// Uninstall: the container is being removed (and the data, with purge).
    Remove,
    /// Upgrade or rollback: fetching the new image; the old container at most stopped.
    Fetch,
    /// Upgrade or rollback: snapshot taken, containers being swapped.
    Swap,
    /// Upgrade or rollback: the new version passed its gate and is recorded as installed.
    Commit,
}

impl std::fmt::Display for JournalStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// The step an interrupted operation had reached, written before the step acts, so the
/// next boot knows whether to finish or undo it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub operation: String,
    pub kind: OperationKind,
    pub step: JournalStep,
    pub started_at: String,
    /// For upgrade and rollback: what the app ran before the operation.
    #[serde(default)]
    pub from: Option<Installed>,
    /// For upgrade and rollback: what the operation moves to.
    #[serde(default)]
    pub to: Option<Installed>,
    /// Snapshot folder of the app's volumes taken before an upgrade.
    #[serde(default)]
    pub snapshot: Option<PathBuf>,
    /// For uninstall: volumes and secrets are deleted too, so an uninstall cut off
    /// midway finishes with the same purge.
    #[serde(default)]
    pub purge: bool,
}

/// Everything persisted about one app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRecord {
    pub desired: Desired,
    #[serde(default)]
    pub installed: Option<Installed>,
    #[serde(default)]
    pub previous: Option<Installed>,
    /// The memory limit last applied to the container, in bytes; a different value in the
    /// manifest is applied live.
    #[serde(default)]
    pub memory_limit: Option<u64>,
    #[serde(default)]
    pub hooks_done: bool,
    #[serde(default)]
    pub journal: Option<JournalEntry>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// The crash loop as the app actor last knew it: a supervisor restart must not
    /// forget that an app was given up as `failed`, nor a backoff in progress. `None`
    /// when there is nothing to remember (files written before it existed read so too).
    #[serde(default)]
    pub crashes: Option<CrashRecord>,
    /// The app's container is one archipelago did not create but adopted; it carries no
    /// labels until it is replaced at the next upgrade or spec change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted: Option<AdoptedContainer>,
}

/// An adopted container, as the app's record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdoptedContainer {
    pub container_id: String,
    /// The spec hash the manifest gave when it was adopted (it matched the container).
    pub spec_hash: String,
    /// The container's name before adoption.
    pub former_name: String,
    pub adopted_at: String,
}

/// An app's crash history, persisted with its record in wall-clock time so that it
/// means the same after a restart (the supervisor's own clock starts anew).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashRecord {
    /// Quick crashes in a row so far.
    #[serde(default)]
    pub quick_crashes: u32,
    /// The crash loop gave up: the app stays `failed` until the owner acts or its
    /// manifest changes.
    #[serde(default)]
    pub given_up: bool,
    /// When the supervisor last started the container, if the crash loop is still
    /// counting: a crash later than the stable period after it starts the count over.
    #[serde(default, with = "rfc3339")]
    pub started_at: Option<SystemTime>,
    /// When the backoff in progress ends.
    #[serde(default, with = "rfc3339")]
    pub restart_at: Option<SystemTime>,
    /// SHA-256 (hex) of the manifest the crashes happened with: a different manifest
    /// (a new version may fix the crash) starts over.
    #[serde(default)]
    pub manifest: Option<String>,
}

/// `Option<SystemTime>` as an RFC 3339 timestamp (UTC, milliseconds), readable in the
/// state file.
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl Default for AppRecord {
    fn default() -> Self {
        AppRecord {
            adopted: None,
            desired: Desired::NotInstalled,
            installed: None,
            previous: None,
            memory_limit: None,
            hooks_done: false,
            journal: None,
            last_error: None,
            crashes: None,
        }
    }
}

/// `<data_dir>/first-boot-done`: written once the first boot has accepted the default
/// apps for install.
const FIRST_BOOT_DONE: &str = "first-boot-done";

/// A state file problem, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt state file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A record read back, with a warning when the last good copy had to be used.
#[derive(Debug)]
pub struct Loaded {
    pub record: AppRecord,
    pub warning: Option<String>,
}

/// The folder layout under `data_dir`, and the per-app state files.
#[derive(Debug, Clone)]
pub struct Store {
    data_dir: PathBuf,
    /// The tor app, whose `data` volume holds every onion service's keys.
    tor_app: Option<String>,
}

impl Store {
    /// Opens (and creates) `data_dir` with its `state/`, `secrets/` (0700) and `apps/`
    /// folders.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        for sub in ["state", "secrets", "apps", "snapshots"] {
            let dir = data_dir.join(sub);
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        let secrets = data_dir.join("secrets");
        set_mode(&secrets, 0o700)?;
        Ok(Store {
            data_dir: data_dir.to_path_buf(),
            tor_app: None,
        })
    }

    /// Names the tor app (config `tor_app`): onion services live in its `data` volume.
    pub fn with_tor_app(mut self, tor_app: &str) -> Store {
        self.tor_app = Some(tor_app.to_string());
        self
    }

    /// The tor app's `data` volume (`<data_dir>/apps/<tor>/data`), when a tor app is named.
    pub fn tor_data(&self) -> Option<PathBuf> {
        self.tor_app.as_ref().map(|t| self.app_dir(t).join("data"))
    }

    /// The tor app's id, when one is named.
    pub fn tor_app(&self) -> Option<&str> {
        self.tor_app.as_deref()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// True on the node's first boot: the first boot was never completed
    /// ([`Store::mark_first_boot_done`]) and no app has any state. An empty `state/`
    /// alone is not enough, since uninstalling every app empties it too; state files
    /// without the marker are a node from before the marker existed, not a new one.
    pub fn is_first_boot(&self) -> Result<bool, StoreError> {
        if self.first_boot_done()? {
            return Ok(false);
        }
        let dir = self.data_dir.join("state");
        let mut entries = fs::read_dir(&dir).map_err(io_err(&dir))?;
        Ok(entries.next().is_none())
    }

    /// Whether the first boot's marker is written.
    pub fn first_boot_done(&self) -> Result<bool, StoreError> {
        let marker = self.data_dir.join(FIRST_BOOT_DONE);
        marker.try_exists().map_err(io_err(&marker))
    }

    /// Records durably that the node's first boot is over (its default apps accepted for
    /// install), so no later boot installs them again.
    pub fn mark_first_boot_done(&self) -> Result<(), StoreError> {
        let marker = self.data_dir.join(FIRST_BOOT_DONE);
        let write = || -> std::io::Result<()> {
            let mut file = fs::File::create(&marker)?;
            writeln!(
                file,
                "{}",
                humantime::format_rfc3339_seconds(SystemTime::now())
            )?;
            file.sync_all()
        };
        write().map_err(io_err(&marker))?;
        sync_dir(&self.data_dir)
    }

    /// `<data_dir>/apps/<id>`: the app's volumes live below it.
    pub fn app_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("apps").join(id)
    }

    /// `<data_dir>/secrets/<id>`: one 0600 file per secret.
    pub fn secrets_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("secrets").join(id)
    }

    /// `<data_dir>/snapshots/<id>`: volume snapshots taken before upgrades.
    pub fn snapshots_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("snapshots").join(id)
    }

    fn state_path(&self, id: &str) -> PathBuf {
        self.data_dir.join("state").join(format!("{id}.json"))
    }

    /// Reads an app's record; `Ok(None)` when it has none. A corrupt or unreadable file
    /// falls back to the last good copy, with a warning saying so.
    pub fn load(&self, id: &str) -> Result<Option<Loaded>, StoreError> {
        let path = self.state_path(id);
        let backup = path.with_extension("json.bak");
        match read_record(&path) {
            Ok(Some(record)) => Ok(Some(Loaded {
                record,
                warning: None,
            })),
            Ok(None) => match read_record(&backup)? {
                // The current file is missing but a backup exists: a save was cut off
                // between its two renames.
                Some(record) => Ok(Some(Loaded {
                    record,
                    warning: Some(format!(
                        "{}: missing, using last good copy {}",
                        path.display(),
                        backup.display()
                    )),
                })),
                None => Ok(None),
            },
            Err(err) => match read_record(&backup) {
                Ok(Some(record)) => Ok(Some(Loaded {
                    record,
                    warning: Some(format!("{err}; using last good copy {}", backup.display())),
                })),
                _ => Err(err),
            },
        }
    }

    /// Writes an app's record atomically, keeping the previous one as `.bak`.
    pub fn save(&self, id: &str, record: &AppRecord) -> Result<(), StoreError> {
        let path = self.state_path(id);
        let dir = self.data_dir.join("state");
        let tmp = path.with_extension("json.tmp");
        let backup = path.with_extension("json.bak");
        // Serializing plain data with string keys cannot fail.
        let body = serde_json::to_vec_pretty(record).expect("AppRecord serializes");
        let write = || -> std::io::Result<()> {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(&body)?;
            file.sync_all()
        };
        if let Err(source) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::Io { path: tmp, source });
        }
        if path.exists() && read_record(&path).is_ok() {
            // The backup is a second link to the current file, so `<id>.json` exists at
            // every instant: a crash here leaves the old state, never none.
            let linking = path.with_extension("json.bak.tmp");
            let _ = fs::remove_file(&linking);
            fs::hard_link(&path, &linking).map_err(io_err(&linking))?;
            fs::rename(&linking, &backup).map_err(io_err(&backup))?;
        }
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        sync_dir(&dir)
    }

    /// Deletes an app's record and its backup (after an uninstall).
    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        let path = self.state_path(id);
        for p in [
            path.with_extension("json.bak.tmp"),
            path.with_extension("json.bak"),
            path.clone(),
        ] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(StoreError::Io { path: p, source }),
            }
        }
        sync_dir(&self.data_dir.join("state"))
    }
}

fn read_record(path: &Path) -> Result<Option<AppRecord>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Sets a Unix permission mode on a path.
pub fn set_mode(path: &Path, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(desired: Desired) -> AppRecord {
        AppRecord {
            desired,
            installed: Some(Installed {
                version: "1".into(),
                image: "img:1".into(),
            }),
            ..AppRecord::default()
        }
    }

    #[test]
    fn save_then_load_round_trips_and_keeps_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.is_first_boot().unwrap());
        store.save("lnd", &record(Desired::Running)).unwrap();
        store.save("lnd", &record(Desired::Stopped)).unwrap();
        let loaded = store.load("lnd").unwrap().unwrap();
        assert_eq!(loaded.record.desired, Desired::Stopped);
        assert!(loaded.warning.is_none());
        assert!(!store.is_first_boot().unwrap());
        let bak = fs::read(dir.path().join("state/lnd.json.bak")).unwrap();
        let bak: AppRecord = serde_json::from_slice(&bak).unwrap();
        assert_eq!(bak.desired, Desired::Running);
    }

    /// First boot is the marker's absence on a node without state: uninstalling every
    /// app does not bring it back, and a node from before the marker is not new.
    #[test]
    fn first_boot_is_recorded_not_inferred() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.is_first_boot().unwrap(), "a new node");
        store.mark_first_boot_done().unwrap();
        assert!(!store.is_first_boot().unwrap(), "marked");
        assert!(dir.path().join("first-boot-done").exists());

        let old = tempfile::tempdir().unwrap();
        let store = Store::open(old.path()).unwrap();
        store.save("lnd", &record(Desired::Running)).unwrap();
        assert!(
            !store.is_first_boot().unwrap(),
            "state, no marker: an older node"
        );
        store.mark_first_boot_done().unwrap();
        store.remove("lnd").unwrap();
        assert!(!store.is_first_boot().unwrap(), "every app uninstalled");
    }

    #[test]
    fn a_truncated_file_falls_back_to_the_last_good_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.save("lnd", &record(Desired::Running)).unwrap();
        store.save("lnd", &record(Desired::Stopped)).unwrap();
        let path = dir.path().join("state/lnd.json");
        let full = fs::read(&path).unwrap();
        fs::write(&path, &full[..full.len() / 2]).unwrap();
        let loaded = store.load("lnd").unwrap().unwrap();
        assert_eq!(loaded.record.desired, Desired::Running);
        let warning = loaded.warning.unwrap();
        assert!(warning.contains("corrupt state file"), "{warning}");
        assert!(warning.contains("lnd.json"), "{warning}");
    }

    #[test]
    fn a_write_cut_off_before_the_rename_leaves_the_previous_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.save("lnd", &record(Desired::Running)).unwrap();
        // A crash mid-write leaves a partial temp file and nothing else changed.
        fs::write(
            dir.path().join("state/lnd.json.tmp"),
            b"{\"desired\": \"sto",
        )
        .unwrap();
        let loaded = store.load("lnd").unwrap().unwrap();
        assert_eq!(loaded.record.desired, Desired::Running);
        assert!(loaded.warning.is_none());
        // And the next save succeeds over it.
        store.save("lnd", &record(Desired::Stopped)).unwrap();
        assert_eq!(
            store.load("lnd").unwrap().unwrap().record.desired,
            Desired::Stopped
        );
    }

    #[test]
    fn a_save_never_leaves_the_state_file_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.save("lnd", &record(Desired::Running)).unwrap();
        // A crash after the backup link, before the temp file is renamed into place.
        let path = dir.path().join("state/lnd.json");
        fs::hard_link(&path, dir.path().join("state/lnd.json.bak.tmp")).unwrap();
        fs::write(dir.path().join("state/lnd.json.tmp"), b"{").unwrap();
        let loaded = store.load("lnd").unwrap().unwrap();
        assert_eq!(loaded.record.desired, Desired::Running);
        assert!(loaded.warning.is_none());
        // The next save goes over the leftovers.
        store.save("lnd", &record(Desired::Stopped)).unwrap();
        store.save("lnd", &record(Desired::Running)).unwrap();
        let bak = fs::read(dir.path().join("state/lnd.json.bak")).unwrap();
        let bak: AppRecord = serde_json::from_slice(&bak).unwrap();
        assert_eq!(bak.desired, Desired::Stopped);
        assert!(!dir.path().join("state/lnd.json.bak.tmp").exists());
    }

    #[test]
    fn a_cut_between_the_renames_uses_the_backup() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.save("lnd", &record(Desired::Running)).unwrap();
        fs::rename(
            dir.path().join("state/lnd.json"),
            dir.path().join("state/lnd.json.bak"),
        )
        .unwrap();
        let loaded = store.load("lnd").unwrap().unwrap();
        assert_eq!(loaded.record.desired, Desired::Running);
        assert!(loaded.warning.unwrap().contains("missing"));
    }

    #[test]
    fn corrupt_file_and_backup_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        fs::write(dir.path().join("state/lnd.json"), b"not json").unwrap();
        let err = store.load("lnd").unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("state/lnd.json"), "{err}");
    }

    #[test]
    fn secrets_folder_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        Store::open(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join("secrets"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
