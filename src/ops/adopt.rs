//! Adopt: a running container archipelago did not create becomes the app's container,
//! without a restart, when it matches what the manifest would create (docs/migrate.md).
//! Nothing is changed unless everything matches; then the secrets it holds are stored,
//! it is renamed to the app's container name, its restart policy and pids limit are set
//! live, and the app is recorded as installed with the container adopted.

use std::path::Path;

use super::{blocking, OpEnv, OpError};
use crate::api::{Desired, Health};
use crate::engine::{container_name, Adopted, EngineErrorKind, RunState, LABEL_APP};
use crate::migrate::adopt::{compare, Lookup, Wanted};
use crate::onion;
use crate::secrets::{self, Imported};
use crate::spec::container_spec;
use crate::store::{AdoptedContainer, AppRecord, Installed};

pub(super) async fn adopt(
    env: &OpEnv,
    record: &mut AppRecord,
    container: &str,
    health: &mut Option<Health>,
) -> Result<String, OpError> {
    let refused = |reason: String| OpError::AdoptRefused {
        container: container.to_string(),
        reason,
    };
    env.say(format!("reading {container}"));
    let found = env.engine.inspect_foreign(container).await?;
    if let Some(app) = found.labels.get(LABEL_APP) {
        return Err(refused(format!("it is already the container of app {app}")));
    }
    if found.state != RunState::Running {
        return Err(refused(format!(
            "it is {:?}, not running: install the app instead",
            found.state
        )));
    }
    let name = container_name(env.id());
    if found.name != name {
        match env.engine.inspect(&name).await {
            Ok(other) => {
                return Err(refused(format!(
                    "another container ({}) is named {name}",
                    &other.id[..other.id.len().min(12)]
                )))
            }
            Err(e) if e.kind() == EngineErrorKind::ContainerNotFound => {}
            Err(e) => return Err(e.into()),
        }
    }

    // What the manifest would create, but env, command and entrypoint, which are compared
    // as written so that the secrets they hold can be read back out of the container.
    let manifest = &env.app.manifest;
    let mut bare = env.app.clone();
    bare.manifest.container.env.clear();
    bare.manifest.container.command = None;
    bare.manifest.container.entrypoint = None;
    let spec = container_spec(&bare, &env.store, &env.default_network)?;
    let image_id = env.engine.image_inspect(&spec.image).await?.map(|i| i.id);
    env.say("comparing with the manifest");
    let (store, id) = (env.store.clone(), env.id().to_string());
    let (env_t, command, entrypoint) = (
        manifest.container.env.clone(),
        manifest.container.command.clone(),
        manifest.container.entrypoint.clone(),
    );
    let foreign = found.clone();
    let wanted_spec = spec.clone();
    let cmp = blocking(move || {
        let render = |text: &str| -> Result<String, String> {
            let text = secrets::render(&store, &id, text).map_err(|e| e.to_string())?;
            onion::render(&store, &id, &text).map_err(|e| e.to_string())
        };
        let stored = |name: &str| secrets::read(&store, &id, name).ok();
        let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let wanted = Wanted {
            env: &env_t,
            command: command.as_deref(),
            entrypoint: entrypoint.as_deref(),
            spec: &wanted_spec,
            image_id: image_id.as_deref(),
        };
        let look = Lookup {
            render: &render,
            stored: &stored,
            canonical: &canonical,
        };
        Ok(compare(&foreign, &wanted, &look))
    })
    .await?;
    if !cmp.mismatches.is_empty() {
        return Err(OpError::AdoptMismatch {
            container: container.to_string(),
            mismatches: cmp.mismatches,
        });
    }

    // Everything matches: from here on the container is taken over.
    let (store, id, values) = (env.store.clone(), env.id().to_string(), cmp.secrets.clone());
    blocking(move || {
        for (name, value) in &values {
            if secrets::write_imported(&store, &id, name, value)? == Imported::Conflict {
                // compare() checked the stored value; only a concurrent writer gets here.
                return Err(OpError::AdoptRefused {
                    container: id.clone(),
                    reason: format!("secret {name} changed on disk meanwhile"),
                });
            }
        }
        Ok(())
    })
    .await?;
    let installed = Installed {
        version: manifest.version.clone(),
        image: spec.image.clone(),
    };
    let full = env.spec_for(&installed)?;
    if found.name != name {
        env.say(format!("renaming {} to {name}", found.name));
        // By name: Podman 4.3's rename does not find a container by its id.
        env.engine.rename(&found.name, &name).await?;
    }
    env.engine.take_over(&name, full.pids_limit).await?;
    let adopted = AdoptedContainer {
        container_id: found.id.clone(),
        spec_hash: full.hash(),
        former_name: found.name.clone(),
        adopted_at: crate::api::now(),
    };
    env.engine.adopt(Adopted {
        container_id: found.id.clone(),
        app: env.id().to_string(),
        spec_hash: adopted.spec_hash.clone(),
        version: installed.version.clone(),
    });
    record.installed = Some(installed);
    record.desired = Desired::Running;
    record.memory_limit = Some(found.memory_limit);
    // The container has run its first start long ago: its hooks are not run again.
    record.hooks_done = true;
    record.adopted = Some(adopted);
    *health = None;
    let mut outcome = format!(
        "adopted {} ({}) without a restart",
        found.name,
        &found.id[..found.id.len().min(12)]
    );
    if !cmp.live.is_empty() {
        outcome.push_str(&format!("; changed live: {}", cmp.live.join(", ")));
    }
    if !cmp.later.is_empty() {
        outcome.push_str(&format!("; at its next recreate: {}", cmp.later.join(", ")));
    }
    tracing::info!(app = env.id(), %outcome);
    Ok(outcome)
}
