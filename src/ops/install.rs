//! Install: secrets generated, image fetched, `desired: running` recorded with the
//! installed image, then started when the dependencies are ready. Its recovery is the
//! same function run again ([`super::recover`]): every step is idempotent.

use super::start::start;
use super::{fetch_image, journal, remove_quietly, OpEnv, OpError, OpParams};
use crate::api::{Desired, Health, OperationKind};
use crate::engine::container_name;
use crate::secrets;
use crate::store::{AppRecord, JournalStep};

pub(super) async fn install(
    env: &OpEnv,
    record: &mut AppRecord,
    op_id: &str,
    params: OpParams,
    started: &mut bool,
    health: &mut Option<Health>,
) -> Result<String, OpError> {
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
        secrets::generate(&env.store, env.id(), &env.app.manifest.secrets)?;
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
