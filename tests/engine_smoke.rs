//! Smoke test of each real engine: the API answers, and a memory-limited container runs.
//!
//! Fails (never skips) with the set-up command named when an engine is not running.

mod common;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};

/// 64 MiB, the limit the smoke container gets.
const MEMORY_LIMIT: i64 = 64 * 1024 * 1024;

/// The address of the engine called `name` in `common::engines()`.
fn engine(name: &str) -> String {
    common::engines()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, host)| host)
        .unwrap_or_else(|| panic!("no engine named {name} in common::engines()"))
}

/// Runs `sleep 30` from the busybox image with a 64 MiB limit and no network, checks the
/// limit the engine reports, and removes the container whatever the outcome.
async fn run_memory_limited_container(engine_name: &str) {
    let host = engine(engine_name);
    let docker = common::connect(&host).await;
    println!(
        "{engine_name} at {host}: negotiated API version {}",
        docker.client_version()
    );

    let name = common::unique("archipelago-smoke");
    let body = ContainerCreateBody {
        image: Some(common::BUSYBOX_IMAGE.to_string()),
        cmd: Some(vec!["sleep".to_string(), "30".to_string()]),
        host_config: Some(HostConfig {
            memory: Some(MEMORY_LIMIT),
            network_mode: Some("none".to_string()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::new().name(&name).build();
    docker
        .create_container(Some(options), body)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{engine_name}: creating {name} from {} failed: {e}; is the image loaded? run `{}`",
                common::BUSYBOX_IMAGE,
                common::SETUP_COMMAND
            )
        });

    let started = docker.start_container(&name, None).await;
    let inspected = docker.inspect_container(&name, None).await;
    let removed = docker
        .remove_container(
            &name,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await;

    started.unwrap_or_else(|e| panic!("{engine_name}: starting {name} failed: {e}"));
    let inspected =
        inspected.unwrap_or_else(|e| panic!("{engine_name}: inspecting {name} failed: {e}"));
    let running = inspected.state.as_ref().and_then(|s| s.running);
    assert_eq!(running, Some(true), "{engine_name}: {name} is not running");
    let memory = inspected.host_config.as_ref().and_then(|h| h.memory);
    assert_eq!(
        memory,
        Some(MEMORY_LIMIT),
        "{engine_name}: HostConfig.Memory of {name}"
    );
    removed.unwrap_or_else(|e| panic!("{engine_name}: removing {name} failed: {e}"));
}

#[tokio::test]
async fn docker_runs_a_memory_limited_container() {
    run_memory_limited_container("docker").await;
}

#[tokio::test]
async fn podman_runs_a_memory_limited_container() {
    run_memory_limited_container("podman").await;
}

#[tokio::test]
async fn the_system_docker_runs_a_memory_limited_container() {
    run_memory_limited_container("system-docker").await;
}
