//! Uninstall: the container (and any `-previous` one) removed and the state file deleted;
//! with purge also the volumes, snapshots and secrets. Its recovery is the same function
//! run again with the journaled `purge` ([`super::recover`]).

use super::start::stop;
use super::{blocking, journal, remove_quietly, remove_tree, OpEnv, OpError, PREVIOUS_SUFFIX};
use crate::api::OperationKind;
use crate::engine::container_name;
use crate::secrets;
use crate::store::{AppRecord, JournalStep};

pub(super) async fn uninstall(
    env: &OpEnv,
    record: &mut AppRecord,
    op_id: &str,
    purge: bool,
) -> Result<String, OpError> {
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
            Ok(secrets::remove_all(&store, &id)?)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::recover;
    use super::super::test_util::{env, v, ID, OP};
    use crate::api::{Desired, OperationKind};
    use crate::engine::{container_name, ContainerRuntime, FakeRuntime};
    use crate::store::{AppRecord, JournalEntry, JournalStep};

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
