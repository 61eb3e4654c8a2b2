//! A throwaway node for supervisor tests: config, catalog and data folder in a temp dir,
//! a supervisor started on them, and cleanup of the test's containers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use archipelago::api::{AppState, Package};
use archipelago::catalog::Catalog;
use archipelago::config::Config;
use archipelago::engine::reconnect::ReconnectingRuntime;
use archipelago::engine::ContainerRuntime;
use archipelago::planner::CrashPolicy;
use archipelago::store::Store;
use archipelago::supervisor::{GetPackage, Supervisor};

use super::*;

/// A test node: a config, a catalog folder and a data folder in a temp dir.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub prefix: String,
}

impl Node {
    pub fn new(tag: &str) -> Node {
        Node {
            dir: tempfile::tempdir().unwrap(),
            prefix: format!("t{}{}", std::process::id(), tag),
        }
    }

    pub fn id(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    pub fn apps_dir(&self) -> PathBuf {
        self.dir.path().join("apps")
    }

    /// Writes a busybox app. `extra` is YAML under `container:`; `top` is YAML at the top.
    pub fn app(&self, name: &str, command: &str, extra: &str, top: &str) -> String {
        let id = self.id(name);
        let dir = self.apps_dir().join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        let manifest = busybox_manifest(&id, name, "1", command, top, extra);
        std::fs::write(dir.join("manifest.yml"), manifest).unwrap();
        id
    }

    pub fn config(&self, default_apps: &[String], extra: &str) -> PathBuf {
        let path = self.dir.path().join("config.yml");
        let apps = default_apps.join(", ");
        std::fs::write(
            &path,
            format!(
                "listen: 127.0.0.1:0\napps_dir: apps\ndata_dir: data\nengine:\n  host: {host}\n  default_network: none\nreconcile_interval: 200ms\ndefault_apps: [{apps}]\nauth:\n  password_file: password\n{extra}",
                host = docker_host()
            ),
        )
        .unwrap();
        path
    }

    /// Starts a supervisor on this node's config.
    pub fn start(&self, config: &Path) -> Addr<Supervisor> {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let config = Config::load(config).unwrap();
        let (catalog, problems) = Catalog::load(&config.apps_dir);
        assert!(problems.is_empty(), "{problems:?}");
        let engine: Arc<dyn ContainerRuntime> =
            Arc::new(ReconnectingRuntime::new(&config.engine.host));
        let store = Store::open(&config.data_dir).unwrap();
        let policy = CrashPolicy {
            initial_backoff: Duration::from_millis(200),
            ..CrashPolicy::default()
        };
        Supervisor::new(&config, catalog, engine, store)
            .unwrap()
            .with_crash_policy(policy)
            .start()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        remove_containers(&self.prefix);
    }
}

pub async fn package(sup: &Addr<Supervisor>, id: &str) -> Package {
    sup.send(GetPackage { id: id.into() })
        .await
        .unwrap()
        .unwrap()
}

/// Polls until `id` reads `state`, or panics after `within`.
pub async fn wait_state(
    sup: &Addr<Supervisor>,
    id: &str,
    state: AppState,
    within: Duration,
) -> Package {
    wait_until(&format!("{id} reaching {state:?}"), within, async || {
        let p = package(sup, id).await;
        if p.state == state {
            Ok(p)
        } else {
            Err(format!(
                "it is {:?} (last_error {:?}, op {:?})",
                p.state, p.last_error, p.operation
            ))
        }
    })
    .await
}

pub async fn inspect(id: &str) -> bollard::models::ContainerInspectResponse {
    let docker = connect(&docker_host()).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let res = docker
            .inspect_container(
                &format!("archipelago-{id}"),
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await;
        match res {
            // Podman briefly reports a state (`stopped`) that bollard cannot parse.
            Err(bollard::errors::Error::JsonDataError { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other.unwrap(),
        }
    }
}

/// The memory limit the kernel enforces on the app's container, read from inside it
/// (cgroup v2 `memory.max` or v1 `memory.limit_in_bytes`). Podman's inspect can keep
/// reporting an old limit after a live update; the cgroup never does.
pub async fn cgroup_memory_limit(id: &str) -> u64 {
    use archipelago::engine::docker::DockerRuntime;
    let rt = DockerRuntime::connect(&docker_host()).await.unwrap();
    let cmd: Vec<String> = [
        "sh",
        "-c",
        "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = rt
        .exec(&format!("archipelago-{id}"), &cmd, Duration::from_secs(10))
        .await
        .unwrap();
    out.output
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("cgroup memory of {id}: {:?}: {e}", out.output))
}
