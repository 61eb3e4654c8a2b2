//! The volume snapshots of a swap as file work on the blocking pool: the space check
//! before anything is touched, the copy of the `snapshot: copy` volumes, the restore
//! through `<volume>.restoring`, and pruning to the newest one.

use std::path::{Path, PathBuf};

use super::{blocking, remove_tree, OpEnv, OpError};
use crate::snapshot;

/// Puts the snapshot's volumes back in place of the live ones, each through
/// `apps/<id>/<volume>.restoring`. Only volumes the manifest still snapshots are put back:
/// a `snapshot: none` volume is never restored, whatever an older snapshot holds. Runs off
/// the actors' thread, with progress in bytes.
pub(super) async fn restore_snapshot(env: &OpEnv, snapshot: &Path) -> Result<(), OpError> {
    let volumes = env.snapshot_volumes();
    let (live, snapshot) = (env.store.app_dir(env.id()), snapshot.to_path_buf());
    let progress = env.clone();
    blocking(move || {
        let err = |source| OpError::Restore {
            snapshot: snapshot.clone(),
            source,
        };
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
            std::fs::rename(&aside, &target).map_err(|source| OpError::RestoreRename {
                snapshot: snapshot.clone(),
                source,
            })?;
        }
        Ok(())
    })
    .await
}

/// Copies the app's `snapshot: copy` volumes to `snapshots/<id>/<op_id>/`, off the actors'
/// thread, with progress in bytes. `total` is what [`snapshot::measure`] said.
pub(super) async fn take_snapshot(
    env: &OpEnv,
    op_id: &str,
    total: u64,
) -> Result<PathBuf, OpError> {
    let volumes = env.snapshot_volumes();
    let live = env.store.app_dir(env.id());
    let snap = env.store.snapshots_dir(env.id()).join(op_id);
    let progress = env.clone();
    let target = snap.clone();
    blocking(move || {
        remove_tree(&target)?;
        std::fs::create_dir_all(&target).map_err(|source| OpError::Io {
            path: target.clone(),
            source,
        })?;
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
            .map_err(|source| OpError::SnapshotCopy {
                volume: from.clone(),
                source,
            })?;
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
pub(super) async fn check_snapshot_space(env: &OpEnv) -> Result<u64, OpError> {
    let volumes = env.snapshot_volumes();
    let live = env.store.app_dir(env.id());
    let dest = env.store.snapshots_dir(env.id());
    blocking(move || {
        let folders: Vec<PathBuf> = volumes.iter().map(|v| live.join(v)).collect();
        let bytes = snapshot::measure(&folders)?;
        snapshot::check_space(&volumes, &live, &dest, bytes)?;
        Ok(bytes)
    })
    .await
}

/// Keeps only the newest snapshot (the one a rollback restores). Off the actors' thread.
pub(super) async fn prune_snapshots(env: &OpEnv, keep: &Path) {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::test_util::{env, ID, OP};
    use super::*;
    use crate::engine::FakeRuntime;

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
}
