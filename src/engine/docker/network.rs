//! App networks: looking one up by exact name and repairing duplicates an earlier version
//! left behind.

use std::collections::HashMap;

use super::errors::Target;
use super::DockerRuntime;
use crate::engine::{EngineError, LABEL_NETWORK};

impl DockerRuntime {
    /// Every network whose name is exactly `name` (the engine's name filter also matches
    /// parts of names), oldest first.
    pub(super) async fn networks_named(
        &self,
        name: &str,
    ) -> Result<Vec<NetworkFacts>, EngineError> {
        let opts = bollard::query_parameters::ListNetworksOptionsBuilder::new()
            .filters(&HashMap::from([("name", vec![name])]))
            .build();
        let list = self
            .docker
            .list_networks(Some(opts))
            .await
            .map_err(|e| self.err(Target::Network(name), e))?;
        let mut found = Vec::new();
        for n in list.into_iter().filter(|n| n.name.as_deref() == Some(name)) {
            let Some(id) = n.id else { continue };
            // The list call leaves `Containers` empty; inspect says who is attached.
            let inspected = self
                .docker
                .inspect_network(
                    &id,
                    None::<bollard::query_parameters::InspectNetworkOptions>,
                )
                .await
                .map_err(|e| self.err(Target::Network(name), e))?;
            found.push(NetworkFacts {
                containers: inspected.containers.map_or(0, |c| c.len()),
                ours: inspected
                    .labels
                    .is_some_and(|l| l.contains_key(LABEL_NETWORK)),
                created: n.created.map(|t| t.to_string()).unwrap_or_default(),
                id,
            });
        }
        found.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(found)
    }

    /// Several networks share `name` (an earlier version raced itself at first boot).
    /// Keeps the one in use (or the oldest) and removes the empty ones; when two or more
    /// hold containers, nothing is touched and the error says what to do.
    pub(super) async fn repair_duplicate_networks(
        &self,
        name: &str,
        found: Vec<NetworkFacts>,
    ) -> Result<(), EngineError> {
        match plan_network_repair(&found) {
            Ok(remove) => {
                for id in remove {
                    tracing::warn!(network = %name, %id, "removing an empty duplicate network");
                    self.docker
                        .remove_network(&id)
                        .await
                        .map_err(|e| self.err(Target::Network(name), e))?;
                }
                Ok(())
            }
            Err(in_use) => Err(EngineError::Other {
                target: format!("network {name}"),
                reason: format!(
                    "is ambiguous: {} networks share this name and these cannot be removed \
                     safely: {}; move every container to one of them (`docker network \
                     disconnect` / `connect`), then remove the others with `docker network rm \
                     ID`",
                    found.len(),
                    in_use.join(", ")
                ),
            }),
        }
    }
}

/// What [`ContainerRuntime::ensure_network`](crate::engine::ContainerRuntime::ensure_network) knows of one network of the wanted name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NetworkFacts {
    pub(super) id: String,
    pub(super) containers: usize,
    /// Carries [`LABEL_NETWORK`]: the supervisor made it.
    pub(super) ours: bool,
    pub(super) created: String,
}

/// Which duplicates to remove (`found` oldest first): every empty network we made, but
/// the one holding containers (or the oldest when none does). `Err` lists the networks
/// that would still share the name: in use, or made by someone else.
pub(super) fn plan_network_repair(found: &[NetworkFacts]) -> Result<Vec<String>, Vec<String>> {
    let keep = found
        .iter()
        .find(|n| n.containers > 0)
        .or(found.first())
        .map(|n| n.id.as_str());
    let (remove, stay): (Vec<&NetworkFacts>, Vec<&NetworkFacts>) = found
        .iter()
        .partition(|n| Some(n.id.as_str()) != keep && n.containers == 0 && n.ours);
    if stay.len() > 1 {
        return Err(stay
            .iter()
            .map(|n| match (n.containers, n.ours) {
                (0, _) => format!("{} (empty, not made by archipelago)", short_id(&n.id)),
                (c, _) => format!("{} ({c} containers)", short_id(&n.id)),
            })
            .collect());
    }
    Ok(remove.iter().map(|n| n.id.clone()).collect())
}

pub(super) fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}
