//! Adoption on a real engine: a container started by hand (`docker run`, outside
//! archipelago, with a bind-mounted data folder and a password in its env) becomes an
//! app's container without a restart; `package.stop` and `package.upgrade` then work on it;
//! a container that does not match is listed field by field and left as it was.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use archipelago::ctl::RpcClient;
use bollard::models::{ContainerCreateBody, HostConfig, RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, PushImageOptionsBuilder,
    RemoveContainerOptionsBuilder, TagImageOptionsBuilder,
};
use common::serve::{ServeNode, TestNode};
use common::{
    connect, docker_host, podman_host, registry, system_docker_host, wait_until, BUSYBOX_IMAGE,
};
use serde_json::{json, Value};

/// What the old node ran: the same loop for both versions of its image.
const LOOP: &str = "while true; do date >> /data/log; sleep 1; done";

/// Tags the test busybox image as `<registry>/archipelago-test/adopt-db:{1,2}` and pushes
/// both to the loopback registry (an upgrade pulls its image).
async fn tag_versions(docker: &bollard::Docker) -> String {
    use futures_util::StreamExt;
    let repo = format!("{}/archipelago-test/adopt-db", registry());
    for tag in ["1", "2"] {
        let opts = TagImageOptionsBuilder::new().repo(&repo).tag(tag).build();
        docker
            .tag_image(BUSYBOX_IMAGE, Some(opts))
            .await
            .unwrap_or_else(|e| panic!("tag {BUSYBOX_IMAGE} as {repo}:{tag}: {e}"));
        let opts = PushImageOptionsBuilder::new().tag(tag).build();
        let mut push = docker.push_image(&repo, Some(opts), None);
        while let Some(item) = push.next().await {
            let info = item.unwrap_or_else(|e| panic!("push {repo}:{tag}: {e}"));
            assert!(info.error_detail.is_none(), "push {repo}:{tag}: {info:?}");
        }
    }
    repo
}

/// `docker run -d --name NAME --restart unless-stopped -m 64m -e K=V… -v SRC:/data IMAGE sh -c LOOP`.
async fn run_by_hand(
    docker: &bollard::Docker,
    name: &str,
    image: &str,
    env: &[(&str, &str)],
    data: &Path,
) -> String {
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(vec!["sh".into(), "-c".into(), LOOP.into()]),
        env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{}:/data", data.display())]),
            memory: Some(64 << 20),
            network_mode: Some("none".into()),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let opts = CreateContainerOptionsBuilder::new().name(name).build();
    let id = docker
        .create_container(Some(opts), body)
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"))
        .id;
    docker
        .start_container(
            &id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .unwrap();
    id
}

async fn inspect(docker: &bollard::Docker, id: &str) -> bollard::models::ContainerInspectResponse {
    docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .unwrap_or_else(|e| panic!("inspect {id}: {e}"))
}

fn started_at(c: &bollard::models::ContainerInspectResponse) -> String {
    c.state.as_ref().unwrap().started_at.clone().unwrap()
}

/// Sends a mutating call and waits until its operation ends; answers the operation.
async fn operation(client: &mut RpcClient, method: &str, params: Value) -> Value {
    let answer = client
        .call(method, params.clone())
        .await
        .unwrap_or_else(|e| panic!("{method} {params}: {e}"));
    let id = answer["operation"]["id"].as_str().unwrap().to_string();
    let mut op = answer["operation"].clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while op["status"] == "running" {
        assert!(
            std::time::Instant::now() < deadline,
            "{method} still running: {op}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        op = client
            .call("operation.get", json!({ "id": id }))
            .await
            .unwrap();
    }
    op
}

/// `archipelago import container NAME… --move --config CONFIG`: drafts into the node's
/// catalog, secrets into its data folder, data folders renamed into app volumes. Answers
/// the report.
fn import(config: &Path, containers: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_archipelago"))
        .args(["import", "container"])
        .args(containers)
        .args(["--move", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let report =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "import {containers:?}:\n{report}"
    );
    report
}

/// The draft import wrote for `id`.
fn draft(node: &ServeNode, id: &str) -> PathBuf {
    node.dir.path().join("apps").join(id).join("manifest.yml")
}

/// Removes containers by name or id when the test ends, however it ends.
struct Cleanup {
    host: String,
    containers: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (host, containers) = (self.host.clone(), std::mem::take(&mut self.containers));
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let docker = connect(&host).await;
                let rm = RemoveContainerOptionsBuilder::new().force(true).build();
                for c in containers {
                    let _ = docker.remove_container(&c, Some(rm.clone())).await;
                }
            });
        })
        .join();
    }
}

fn file_len(path: &PathBuf) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

async fn adopt_stop_and_upgrade(host: &str, tag: &str) {
    let docker = connect(host).await;
    let repo = tag_versions(&docker).await;
    let node = ServeNode::new(tag);
    let id = node.id("olddb");
    let password = format!("hunter2-{}", std::process::id());
    let other = format!("other-{id}");
    let mut cleanup = Cleanup {
        host: host.to_string(),
        containers: vec![id.clone(), other.clone()],
    };

    // The old node: a container run by hand with its data in a folder of its own.
    let old = node.dir.path().join("old-node/db");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("chain.dat"), "block 1\n").unwrap();
    let env = [("DB_PASSWORD", password.as_str())];
    let container = run_by_hand(&docker, &id, &format!("{repo}:1"), &env, &old).await;
    let before = inspect(&docker, &container).await;
    // And one that will not match the app: other env, other data folder.
    let other_dir = node.dir.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let env = [("DB_PASSWORD", "x"), ("EXTRA", "1")];
    let other_id = run_by_hand(&docker, &other, &format!("{repo}:1"), &env, &other_dir).await;

    // Import: the draft, the password into a 0600 file, the data renamed into the volume.
    let config = node.config(host, "none", &[], "");
    let report = import(&config, &[&id]);
    let manifest = std::fs::read_to_string(draft(&node, &id)).unwrap();
    assert!(!manifest.contains(&password), "{manifest}");
    assert!(!report.contains(&password), "{report}");
    let volume = std::fs::read_link(&old)
        .unwrap_or_else(|e| panic!("{} is a link now: {e}\n{report}", old.display()));
    assert!(
        volume.starts_with(node.dir.path().join("data/apps").join(&id)),
        "{}",
        volume.display()
    );
    assert_eq!(
        std::fs::read_to_string(volume.join("chain.dat")).unwrap(),
        "block 1\n"
    );

    let mut server = TestNode::start(&config);
    let mut client = server.client().await;

    // The wrong container is refused, field by field, and left as it was.
    let refused = operation(
        &mut client,
        "package.adopt",
        json!({ "id": id, "container": other }),
    )
    .await;
    assert_eq!(refused["status"], "failed", "{refused}");
    let error = refused["error"].as_str().unwrap();
    for field in ["env.EXTRA", "volume /data", "secrets.db_password"] {
        assert!(error.contains(field), "the refusal names {field}: {error}");
    }
    assert!(
        !error.contains(&password) && !error.contains("=x"),
        "no secret value in a message: {error}"
    );
    let untouched = inspect(&docker, &other_id).await;
    assert_eq!(
        untouched.name.as_deref(),
        Some(format!("/{other}").as_str())
    );
    assert_eq!(
        untouched.host_config.unwrap().restart_policy.unwrap().name,
        Some(RestartPolicyNameEnum::UNLESS_STOPPED),
        "a refused container is left as it was"
    );
    let pkg = client
        .call("package.get", json!({ "id": id }))
        .await
        .unwrap();
    assert_eq!(pkg["state"], "not-installed", "{pkg}");

    // The matching one is adopted: same container, same run.
    let adopted = operation(
        &mut client,
        "package.adopt",
        json!({ "id": id, "container": id }),
    )
    .await;
    assert_eq!(adopted["status"], "succeeded", "{adopted}");
    let after = inspect(&docker, &container).await;
    assert_eq!(after.id, before.id);
    assert_eq!(started_at(&after), started_at(&before), "not restarted");
    assert_eq!(
        after.name.as_deref(),
        Some(format!("/archipelago-{id}").as_str())
    );
    if host != podman_host() {
        assert_eq!(
            after
                .host_config
                .as_ref()
                .unwrap()
                .restart_policy
                .as_ref()
                .unwrap()
                .name,
            Some(RestartPolicyNameEnum::NO),
            "the engine's restart policy is off: the supervisor restarts apps"
        );
    }
    let pkg = wait_until(
        "the adopted app running",
        Duration::from_secs(20),
        async || {
            let p = client
                .call("package.get", json!({ "id": id }))
                .await
                .unwrap();
            if p["state"] == "running" {
                Ok(p)
            } else {
                Err(p.to_string())
            }
        },
    )
    .await;
    assert_eq!(pkg["container_id"], json!(container));
    assert_eq!(pkg["installed_version"], "1");

    // The password left the env for a 0600 file, and is in no manifest.
    let secrets = node.dir.path().join("data/secrets").join(&id);
    let stored: Vec<_> = std::fs::read_dir(&secrets)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(
        std::fs::read_to_string(&stored[0]).unwrap().trim_end(),
        password
    );
    assert_eq!(
        std::fs::metadata(&stored[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let manifest = std::fs::read_to_string(draft(&node, &id)).unwrap();
    assert!(!manifest.contains(&password), "{manifest}");

    // The container writes into the app's volume now.
    let log = volume.join("log");
    let grown = file_len(&log);
    wait_until(
        "the log growing in the volume",
        Duration::from_secs(10),
        async || {
            if file_len(&log) > grown {
                Ok(())
            } else {
                Err(format!("{} stays at {grown} bytes", log.display()))
            }
        },
    )
    .await;

    // A supervisor killed and started again keeps it: same container, same run.
    server.kill9();
    drop(server);
    let server = TestNode::start(&config);
    let mut client = server.client().await;
    wait_until(
        "the same container after a restart",
        Duration::from_secs(20),
        async || {
            let p = client
                .call("package.get", json!({ "id": id }))
                .await
                .unwrap();
            if p["state"] == "running" && p["container_id"] == json!(container) {
                Ok(())
            } else {
                Err(p.to_string())
            }
        },
    )
    .await;
    assert_eq!(
        started_at(&inspect(&docker, &container).await),
        started_at(&before)
    );

    // package.stop stops it, like any app's.
    let stop = operation(&mut client, "package.stop", json!({ "id": id })).await;
    assert_eq!(stop["status"], "succeeded", "{stop}");
    let stopped = inspect(&docker, &container).await;
    assert_eq!(stopped.state.unwrap().running, Some(false));
    let start = operation(&mut client, "package.start", json!({ "id": id })).await;
    assert_eq!(start["status"], "succeeded", "{start}");

    // package.upgrade replaces it with a container of ours, data kept.
    let next = manifest
        .replace(&format!("{repo}:1"), &format!("{repo}:2"))
        .replace("version: '1'", "version: '2'")
        .replace("version: \"1\"", "version: \"2\"");
    assert_ne!(
        next, manifest,
        "the draft names version 1 of {repo}:\n{manifest}"
    );
    std::fs::write(draft(&node, &id), next).unwrap();
    client.call("catalog.reload", Value::Null).await.unwrap();
    let upgrade = operation(&mut client, "package.upgrade", json!({ "id": id })).await;
    assert_eq!(upgrade["status"], "succeeded", "{upgrade}");
    let pkg = client
        .call("package.get", json!({ "id": id }))
        .await
        .unwrap();
    assert_eq!(pkg["installed_version"], "2");
    let new_id = pkg["container_id"].as_str().unwrap().to_string();
    cleanup.containers.push(new_id.clone());
    assert_ne!(new_id, container, "the upgrade made a new container");
    let new = inspect(&docker, &new_id).await;
    let labels = new.config.unwrap().labels.unwrap();
    assert_eq!(labels.get("io.archipelago.app"), Some(&id));
    assert_eq!(
        std::fs::read_to_string(volume.join("chain.dat")).unwrap(),
        "block 1\n"
    );
    let state = std::fs::read_to_string(
        node.dir
            .path()
            .join("data/state")
            .join(format!("{id}.json")),
    )
    .unwrap_or_default();
    assert!(
        !state.contains("\"adopted\""),
        "the adoption ended with the old container: {state}"
    );
    drop(client);
    drop(server);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_run_by_hand_is_adopted_without_a_restart_on_docker() {
    adopt_stop_and_upgrade(&docker_host(), "adoptd").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_run_by_hand_is_adopted_without_a_restart_on_podman() {
    adopt_stop_and_upgrade(&podman_host(), "adoptp").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_run_by_hand_is_adopted_without_a_restart_on_the_system_docker() {
    adopt_stop_and_upgrade(&system_docker_host(), "adopts").await;
}
