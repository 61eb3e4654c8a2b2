//! Shared set-up for integration tests that talk to a real engine.
//!
//! The engines are started by `scripts/test-env.sh up` (the README's test command runs it).
//! Tests never skip when an engine is missing: they fail, naming that command.
#![allow(dead_code)]

use std::time::Duration;

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
