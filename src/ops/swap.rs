//! Upgrade and rollback, both a swap: snapshot, new image, old container kept aside as
//! `-previous`, new one started and gated on health, everything put back on failure; and
//! [`recover_swap`], which finishes or undoes a swap cut off by a crash.

use std::path::Path;

use tokio::time::Instant;

use super::snapshots::{check_snapshot_space, prune_snapshots, restore_snapshot, take_snapshot};
use super::start::{create_container, start_quietly, stop, wait_healthy};
use super::{
    fetch_image, journal, remove_quietly, remove_tree_off_thread, OpEnv, OpError, PREVIOUS_SUFFIX,
};
use crate::api::{Desired, Health, OperationKind};
use crate::engine::{container_name, EngineErrorKind};
use crate::store::{AppRecord, Installed, JournalEntry, JournalStep};

/// Where a [`swap`] goes: upgrade or rollback, from what, to what, and for a rollback the
/// snapshot to restore.
pub(super) struct SwapPlan {
    kind: OperationKind,
    from: Installed,
    to: Installed,
    restore_from: Option<std::path::PathBuf>,
}

/// Moves the app from `from` to `to`: snapshot, new image, old container kept aside,
/// new one started and gated on health; on failure everything goes back.
pub(super) async fn swap(
    env: &OpEnv,
    record: &mut AppRecord,
    op_id: &str,
    plan: SwapPlan,
    started: &mut bool,
    health: &mut Option<Health>,
) -> Result<String, OpError> {
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
            Err(e) => return Err(e.into()),
        }
        if let Some(src) = &restore_from {
            env.say("restoring the snapshot of the previous version");
            restore_snapshot(env, src).await?;
        }
        create_container(env, &new_spec).await?;
        env.say(format!("starting {}", to.version));
        env.engine.start(&name).await?;
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
            Err(OpError::SwapFailed {
                verb: if kind == OperationKind::Upgrade {
                    "upgrade"
                } else {
                    "rollback"
                },
                to: to.version.clone(),
                from: from.version.clone(),
                error: Box::new(e),
            })
        }
    }
}

/// The clean-up after a swap that succeeded: the old container and older snapshots go.
async fn complete_swap(env: &OpEnv, snapshot: &Path) -> Result<(), OpError> {
    let aside = format!("{}{PREVIOUS_SUFFIX}", container_name(env.id()));
    remove_quietly(env.engine.as_ref(), &aside).await?;
    prune_snapshots(env, snapshot).await;
    Ok(())
}

/// Takes the new container away, restores the snapshot, and puts the old container back.
async fn undo_swap(env: &OpEnv, snapshot: &Path, start_old: bool) -> Result<(), OpError> {
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
        engine.rename(&aside, &name).await?;
    }
    if start_old {
        match engine.start(&name).await {
            Ok(()) => {}
            Err(e) if e.kind() == EngineErrorKind::NotModified => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// An upgrade: from what is installed to the catalog's version.
pub(super) fn upgrade(env: &OpEnv, record: &AppRecord) -> Result<SwapPlan, OpError> {
    Ok(SwapPlan {
        kind: OperationKind::Upgrade,
        from: record.installed.clone().ok_or(OpError::NothingToSwap)?,
        to: env.catalog_install(),
        restore_from: None,
    })
}

/// A rollback: from what is installed to what was before it, with the latest snapshot.
/// On success `swap` clears `previous`: a rollback is not undone by another rollback.
pub(super) fn rollback(env: &OpEnv, record: &AppRecord) -> Result<SwapPlan, OpError> {
    Ok(SwapPlan {
        kind: OperationKind::Rollback,
        from: record.installed.clone().ok_or(OpError::NothingToSwap)?,
        to: record.previous.clone().ok_or(OpError::NoPrevious)?,
        restore_from: latest_snapshot(env),
    })
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

/// Recovers an upgrade or rollback from its journal step:
/// - `fetch`: the old container was at most stopped; a partial snapshot is deleted and
///   reconcile starts the old container again when it is wanted running.
/// - `swap`: undone. The new container (if any) is removed, the snapshot restored, the
///   `-previous` container renamed back and started when wanted running. Before the
///   rename the app's container is still the old one and is simply started.
/// - `commit`: the new version passed its gate and is recorded as installed: the
///   `-previous` container and older snapshots are removed and the new one started.
pub(super) async fn recover_swap(
    env: &OpEnv,
    record: &AppRecord,
    j: &JournalEntry,
) -> Result<String, OpError> {
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
            Err(OpError::SwapInterrupted {
                verb,
                to: to.to_string(),
                from: from.to_string(),
            })
        }
        _ => {
            remove_tree_off_thread(env.store.snapshots_dir(env.id()).join(&j.operation)).await?;
            Err(OpError::InterruptedBeforeSwap {
                verb,
                to: to.to_string(),
                from: from.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::recover;
    use super::super::test_util::{env, v, ID, OP};
    use super::*;
    use crate::engine::{CallKind, ContainerRuntime, EngineError, FakeRuntime};

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
            .unwrap_err()
            .to_string();
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
                let err = end.result.unwrap_err().to_string();
                assert!(err.contains("on 1"), "{cut:?}: {err}");
                assert_eq!(saved.last_error, Some(err), "{cut:?}");
            }
        }
    }
}
