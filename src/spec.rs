//! Turns an app's manifest into the container spec the engine is asked for: the image,
//! secrets rendered into env and command, volumes as binds under the app's data folder,
//! the network, the memory limit.

use std::path::Path;

use crate::catalog::CatalogApp;
use crate::engine::{Bind, ContainerSpec, PortBinding};
use crate::manifest::{capability_name, AppId, Protocol, DEFAULT_CAP_DROP, DEFAULT_PIDS_LIMIT};
use crate::onion::{self, OnionError};
use crate::secrets::{self, SecretError};

/// Why an app's container spec cannot be made now.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Onion(#[from] OnionError),
}
use crate::store::Store;

/// The spec for an app's container, as the manifest says now.
pub fn container_spec(
    app: &CatalogApp,
    store: &Store,
    default_network: &str,
) -> Result<ContainerSpec, SpecError> {
    let m = &app.manifest;
    let c = &m.container;
    let id = m.id.as_str();
    let render = |s: &String| -> Result<String, SpecError> {
        Ok(onion::render(store, id, &secrets::render(store, id, s)?)?)
    };
    let render_all = |v: &Option<Vec<String>>| -> Result<Option<Vec<String>>, SpecError> {
        v.as_ref()
            .map(|v| v.iter().map(render).collect())
            .transpose()
    };
    let env = c
        .env
        .iter()
        .map(|(k, v)| Ok((k.clone(), render(v)?)))
        .collect::<Result<_, SpecError>>()?;
    let caps = |names: &[String]| -> Vec<String> {
        // validate refused anything else, so a name that fails here cannot occur.
        names
            .iter()
            .filter_map(|n| capability_name(n).ok())
            .collect()
    };
    let cap_add = caps(&c.cap_add);
    let mut cap_drop: Vec<String> = DEFAULT_CAP_DROP.iter().map(|c| c.to_string()).collect();
    cap_drop.extend(caps(&c.cap_drop));
    cap_drop.retain(|cap| !cap_add.contains(cap));
    cap_drop.sort();
    cap_drop.dedup();
    Ok(ContainerSpec {
        app: id.to_string(),
        version: m.version.clone(),
        image: c.image_ref(&m.id, &m.version),
        env,
        command: render_all(&c.command)?,
        entrypoint: render_all(&c.entrypoint)?,
        user: c.user.clone(),
        ports: c
            .ports
            .iter()
            .map(|p| PortBinding {
                host: p.host,
                container: p.container,
                udp: p.protocol == Protocol::Udp,
            })
            .collect(),
        binds: c
            .volumes
            .iter()
            .map(|v| Bind {
                host: store
                    .app_dir(v.app.as_ref().map_or(id, AppId::as_str))
                    .join(&v.name),
                container: v.path.clone(),
                read_only: v.read_only,
            })
            .collect(),
        network: c
            .network
            .clone()
            .unwrap_or_else(|| default_network.to_string()),
        memory_limit: c.memory_limit.bytes(),
        stop_timeout: c.stop_timeout,
        cap_add,
        cap_drop,
        pids_limit: c.pids_limit.unwrap_or(DEFAULT_PIDS_LIMIT),
        group_add: Vec::new(),
    })
}

/// Creates the host folders an app's own volumes are bound from (a dependency's exist
/// already: the dependency runs before its dependants). Blocking file work.
pub fn create_volume_dirs(app: &CatalogApp, store: &Store) -> std::io::Result<()> {
    let root = store.app_dir(app.manifest.id.as_str());
    std::fs::create_dir_all(&root)?;
    for v in app.manifest.container.volumes.iter().filter(|v| v.is_own()) {
        std::fs::create_dir_all(root.join(&v.name))?;
    }
    Ok(())
}

/// The host port where a container port can be reached from the host's loopback: the
/// port itself under host networking, else the published host port that maps to it.
/// Probes use it only when they cannot enter the container's network namespace.
pub fn host_port(spec: &ContainerSpec, container_port: u16) -> Option<u16> {
    if spec.network == "host" {
        return Some(container_port);
    }
    spec.ports
        .iter()
        .find(|p| p.container == container_port && !p.udp)
        .map(|p| p.host)
}

/// True when `path` is inside `root` (used for volume snapshots and purges).
pub fn is_within(path: &Path, root: &Path) -> bool {
    path.starts_with(root)
}
