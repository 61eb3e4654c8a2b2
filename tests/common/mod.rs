//! Shared set-up for integration tests that talk to a real engine.
//!
//! The engines are started by `scripts/test-env.sh up` (the README's test command runs it).
//! Tests never skip when an engine is missing: they fail, naming that command.
#![allow(dead_code)]

use std::time::{Duration, Instant};

pub mod browser;
pub mod node;
pub mod serve;

/// The command that starts every engine the tests need.
pub const SETUP_COMMAND: &str = "scripts/test-env.sh up";

/// Tiny local image (static busybox plus its applet links), present on both engines.
pub const BUSYBOX_IMAGE: &str = "archipelago-test/busybox:latest";

/// The registry on loopback that pull and upgrade tests use.
pub fn registry() -> String {
    std::env::var("ARCHIPELAGO_TEST_REGISTRY").unwrap_or_else(|_| "localhost:5000".to_string())
}

/// Docker's socket, as a bollard/DOCKER_HOST style address.
pub fn docker_host() -> String {
    std::env::var("ARCHIPELAGO_TEST_DOCKER_HOST")
        .unwrap_or_else(|_| "unix:///tmp/archipelago-test/docker.sock".to_string())
}

/// Podman's Docker-compatible socket.
pub fn podman_host() -> String {
    std::env::var("ARCHIPELAGO_TEST_PODMAN_HOST")
        .unwrap_or_else(|_| "unix:///tmp/archipelago-test/podman.sock".to_string())
}

/// The machine's own dockerd at the default socket: the engine node owners run.
pub fn system_docker_host() -> String {
    std::env::var("ARCHIPELAGO_TEST_SYSTEM_DOCKER_HOST")
        .unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string())
}

/// Every engine, named, for the engine-layer tests that run against each: the private
/// dockerd, Podman, and the machine's own dockerd.
pub fn engines() -> Vec<(&'static str, String)> {
    vec![
        ("docker", docker_host()),
        ("podman", podman_host()),
        ("system-docker", system_docker_host()),
    ]
}

/// Connects to the engine at `host` and pings it, or panics with a message naming the
/// set-up command. Never returns a "skip".
pub async fn connect(host: &str) -> bollard::Docker {
    let path = host.strip_prefix("unix://").unwrap_or(host);
    let docker = bollard::Docker::connect_with_unix(path, 30, bollard::API_DEFAULT_VERSION)
        .unwrap_or_else(|e| panic!("no engine at {host} ({e}); start it with `{SETUP_COMMAND}`"));
    let docker = docker
        .negotiate_version()
        .await
        .unwrap_or_else(|e| panic!("no engine at {host} ({e}); start it with `{SETUP_COMMAND}`"));
    match tokio::time::timeout(Duration::from_secs(10), docker.ping()).await {
        Ok(Ok(_)) => docker,
        Ok(Err(e)) => panic!("no engine at {host} ({e}); start it with `{SETUP_COMMAND}`"),
        Err(_) => panic!("engine at {host} did not answer in 10s; start it with `{SETUP_COMMAND}`"),
    }
}

/// A name unique to this test process, for containers and images.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `check` every 50 ms until it answers `Ok`, and returns that value; panics after
/// `within`, naming `what` and the last `Err` it gave.
pub async fn wait_until<T>(
    what: &str,
    within: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) => assert!(
                Instant::now() < deadline,
                "{what} within {within:?}: {last}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The manifest of a busybox app running `sh -c COMMAND`: `top` is YAML at the top level,
/// `extra` YAML under `container:`. The one manifest builder of the tests.
pub fn busybox_manifest(
    id: &str,
    name: &str,
    version: &str,
    command: &str,
    top: &str,
    extra: &str,
) -> String {
    format!(
        "id: {id}\nname: {name}\nversion: \"{version}\"\n{top}container:\n  image: {BUSYBOX_IMAGE}\n  command: [\"sh\", \"-c\", {command:?}]\n  memory_limit: 64MiB\n{extra}"
    )
}

/// Cargo's target folder, where tests leave screenshots.
pub fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Builds `<registry>/<repo>:<tag>` from `dockerfile` (over busybox, say) on the test
/// dockerd, pushes it to the loopback registry and removes the local copy, so an install
/// or upgrade must pull it. Returns the image reference.
pub async fn publish(repo: &str, tag: &str, dockerfile: &str) -> String {
    use archipelago::engine::{BuildRequest, ContainerRuntime, DockerRuntime};
    use futures_util::StreamExt;
    let engine = DockerRuntime::connect(&docker_host()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    let image = format!("{}/{repo}:{tag}", registry());
    let req = BuildRequest {
        context: dir.path().to_path_buf(),
        dockerfile: "Dockerfile".into(),
        args: Default::default(),
        tag: image.clone(),
    };
    engine.build(&req, &|_| {}).await.unwrap();
    let docker = connect(&docker_host()).await;
    let opts = bollard::query_parameters::PushImageOptionsBuilder::new()
        .tag(tag)
        .build();
    let name = format!("{}/{repo}", registry());
    let mut push = docker.push_image(&name, Some(opts), None);
    while let Some(item) = push.next().await {
        let info = item.unwrap();
        assert!(info.error_detail.is_none(), "push {image}: {info:?}");
    }
    engine.image_remove(&image).await.unwrap();
    image
}

/// Removes, by force, every container on the test dockerd whose name starts with
/// `archipelago-<prefix>-`: what a test's node leaves behind, whatever happened.
pub fn remove_containers(prefix: &str) {
    let prefix = format!("archipelago-{prefix}-");
    let host = docker_host();
    let cleanup = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let docker = connect(&host).await;
            let opts = bollard::query_parameters::ListContainersOptionsBuilder::new()
                .all(true)
                .build();
            for c in docker.list_containers(Some(opts)).await.unwrap_or_default() {
                let ours = c
                    .names
                    .unwrap_or_default()
                    .iter()
                    .any(|n| n.trim_start_matches('/').starts_with(&prefix));
                if ours {
                    let rm = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
                        .force(true)
                        .build();
                    let _ = docker
                        .remove_container(c.id.as_deref().unwrap_or_default(), Some(rm))
                        .await;
                }
            }
        });
    });
    let _ = cleanup.join();
}

/// The image of Debian-packaged servers (`scripts/test-env.sh up`).
pub fn servers_image() -> String {
    std::env::var("ARCHIPELAGO_TEST_SERVERS_IMAGE")
        .unwrap_or_else(|_| "archipelago-test/servers:latest".to_string())
}

/// Every network named exactly `name`.
pub async fn networks_named(docker: &bollard::Docker, name: &str) -> Vec<String> {
    let opts = bollard::query_parameters::ListNetworksOptionsBuilder::new()
        .filters(&std::collections::HashMap::from([("name", vec![name])]))
        .build();
    docker
        .list_networks(Some(opts))
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.name.as_deref() == Some(name))
        .filter_map(|n| n.id)
        .collect()
}

/// Removes every network of a name when the test ends, however it ends.
pub struct NetworkGuard {
    pub host: String,
    pub name: String,
}

impl NetworkGuard {
    /// Makes a bridge network `name` on the engine at `host`, as compose makes a
    /// project's, and removes it when dropped.
    pub async fn create(host: &str, name: &str) -> NetworkGuard {
        let docker = connect(host).await;
        let body = bollard::models::NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".to_string()),
            ..Default::default()
        };
        docker
            .create_network(body)
            .await
            .unwrap_or_else(|e| panic!("create network {name}: {e}"));
        NetworkGuard {
            host: host.to_string(),
            name: name.to_string(),
        }
    }
}

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        let (host, name) = (self.host.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let docker = connect(&host).await;
                for id in networks_named(&docker, &name).await {
                    let _ = docker.remove_network(&id).await;
                }
            });
        })
        .join();
    }
}
