//! Adoption on a real engine: a container started by hand (the `docker run` command
//! line, outside archipelago, with a bind-mounted data folder and a password in its env)
//! is imported, its data moved, and it becomes an app's container without a restart;
//! `package.stop` and `package.upgrade` then work on it; a container that does not match is
//! listed field by field and left as it was. And a compose-style node of real servers is
//! migrated the same way, bottom-up.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use archipelago::ctl::RpcClient;
use archipelago::engine::docker::DockerRuntime;
use archipelago::engine::ContainerRuntime;
use bollard::models::{ContainerCreateBody, HostConfig, RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, PushImageOptionsBuilder,
    RemoveContainerOptionsBuilder, TagImageOptionsBuilder,
};
use common::serve::{ServeNode, TestNode};
use common::{
    connect, docker_host, podman_host, registry, servers_image, system_docker_host, wait_until,
    NetworkGuard, BUSYBOX_IMAGE,
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

/// `docker run -d --name NAME --restart unless-stopped -m 64m --network none -e K=V…
/// -v SRC:/data IMAGE sh -c LOOP`, with the docker command line against the engine at
/// `host` (Podman's socket speaks the same API). Answers the container id.
fn run_by_hand(host: &str, name: &str, image: &str, env: &[(&str, &str)], data: &Path) -> String {
    let mut cmd = std::process::Command::new("docker");
    cmd.args([
        "-H",
        host,
        "run",
        "-d",
        "--name",
        name,
        "--restart",
        "unless-stopped",
    ])
    .args(["-m", "64m", "--network", "none"])
    .arg("-v")
    .arg(format!("{}:/data", data.display()));
    for (k, v) in env {
        cmd.arg("-e").arg(format!("{k}={v}"));
    }
    let out = cmd
        .args([image, "sh", "-c", LOOP])
        .output()
        .expect("the docker command line runs");
    assert!(
        out.status.success(),
        "docker run {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
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

/// Waits (at most 60 s) until `package.get` of `id` passes `ok`; answers the package.
async fn wait_package(
    client: &mut RpcClient,
    id: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    wait_until(
        &format!("{id} {what}"),
        Duration::from_secs(60),
        async || {
            let p = client
                .call("package.get", json!({ "id": id }))
                .await
                .unwrap();
            if ok(&p) {
                Ok(p)
            } else {
                Err(p.to_string())
            }
        },
    )
    .await
}

/// `package.adopt` of `container` as app `id`, to its end.
async fn adopt(client: &mut RpcClient, id: &str, container: &str) -> Value {
    let params = json!({ "id": id, "container": container });
    operation(client, "package.adopt", params).await
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

/// Removes containers when the test ends, however it ends: by id, as adoption renames
/// them.
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
        containers: Vec::new(),
    };

    // The old node: a container run by hand with its data in a folder of its own.
    let old = node.dir.path().join("old-node/db");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("chain.dat"), "block 1\n").unwrap();
    let env = [("DB_PASSWORD", password.as_str())];
    let container = run_by_hand(host, &id, &format!("{repo}:1"), &env, &old);
    cleanup.containers.push(container.clone());
    let before = inspect(&docker, &container).await;
    // And one that will not match the app: other env, other data folder.
    let other_dir = node.dir.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let env = [("DB_PASSWORD", "x"), ("EXTRA", "1")];
    let other_id = run_by_hand(host, &other, &format!("{repo}:1"), &env, &other_dir);
    cleanup.containers.push(other_id.clone());

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
    let refused = adopt(&mut client, &id, &other).await;
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
    // The same from the command line: exit 1, each difference on a line of its own.
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_archipelago"))
        .args(["adopt", &other, "--app", &id, "--url", &server.base])
        .env("ARCHIPELAGO_PASSWORD", common::serve::PASSWORD)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&cli.stderr);
    assert_eq!(cli.status.code(), Some(1), "{said}");
    for field in ["env.EXTRA", "volume /data", "secrets.db_password"] {
        let line = |l: &str| l.trim_start().starts_with(&format!("{field}:"));
        assert!(
            said.lines().any(line),
            "a line of its own for {field}: {said}"
        );
    }
    let pkg = client
        .call("package.get", json!({ "id": id }))
        .await
        .unwrap();
    assert_eq!(pkg["state"], "not-installed", "{pkg}");

    // The matching one is adopted: same container, same run.
    let adopted = adopt(&mut client, &id, &id).await;
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
    let pkg = wait_package(&mut client, &id, "running", |p| p["state"] == "running").await;
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
    wait_package(
        &mut client,
        &id,
        "the same container after a restart",
        |p| p["state"] == "running" && p["container_id"] == json!(container),
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

/// `docker run` of one real server, compose-style: on the project's network with the
/// service's alias and compose's labels, a bind-mounted data folder, a health check.
struct Run<'a> {
    name: &'a str,
    user: &'a str,
    env: Vec<String>,
    command: &'a str,
    bind: Option<String>,
    health: &'a str,
    depends_on: String,
}

async fn run_server(
    docker: &bollard::Docker,
    image: &str,
    network: &str,
    project: &str,
    run: Run<'_>,
) -> String {
    use bollard::models::{EndpointSettings, HealthConfig, NetworkingConfig};
    let mut labels = std::collections::HashMap::from([
        (
            "com.docker.compose.project".to_string(),
            project.to_string(),
        ),
        (
            "com.docker.compose.service".to_string(),
            run.name.to_string(),
        ),
    ]);
    if !run.depends_on.is_empty() {
        labels.insert("com.docker.compose.depends_on".into(), run.depends_on);
    }
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        user: Some(run.user.to_string()),
        env: Some(run.env),
        cmd: Some(vec!["sh".into(), "-c".into(), run.command.into()]),
        labels: Some(labels),
        healthcheck: Some(HealthConfig {
            test: Some(vec!["CMD-SHELL".into(), run.health.into()]),
            interval: Some(1_000_000_000),
            timeout: Some(3_000_000_000),
            retries: Some(60),
            ..Default::default()
        }),
        host_config: Some(HostConfig {
            binds: run.bind.map(|b| vec![b]),
            memory: Some(256 << 20),
            network_mode: Some(network.to_string()),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(std::collections::HashMap::from([(
                network.to_string(),
                EndpointSettings {
                    aliases: Some(vec![run.name.to_string()]),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    };
    create_and_start(docker, Some(run.name), body).await
}

/// Creates a container (named, or by the engine) and starts it; answers its id.
async fn create_and_start(
    docker: &bollard::Docker,
    name: Option<&str>,
    body: ContainerCreateBody,
) -> String {
    let opts = name.map(|n| CreateContainerOptionsBuilder::new().name(n).build());
    let id = docker
        .create_container(opts, body)
        .await
        .unwrap_or_else(|e| panic!("create {name:?}: {e}"))
        .id;
    docker
        .start_container(
            &id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .unwrap_or_else(|e| panic!("start {name:?}: {e}"));
    id
}

/// Waits until the client has reached postgres (and so redis before it): the old node
/// serves. Not by the engine's health status: Podman runs its checks from systemd timers,
/// which a container host without systemd never fires.
async fn old_node_serves(engine: &DockerRuntime, client: &str) {
    wait_until(
        "the old node serving",
        Duration::from_secs(90),
        async || {
            let cmd = ["grep", "-q", "42", "/tmp/pg"].map(String::from);
            match engine.exec(client, &cmd, Duration::from_secs(10)).await {
                Ok(out) if out.exit_code == 0 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

/// Postgres from Debian's packages as its own user, initialised on first start.
const PG_CMD: &str = "test -s $PGDATA/PG_VERSION || { /usr/lib/postgresql/15/bin/initdb -g --auth=trust -U postgres && echo \"host all all 0.0.0.0/0 trust\" >> $PGDATA/pg_hba.conf; } && exec /usr/lib/postgresql/15/bin/postgres -c listen_addresses=* -c unix_socket_directories=/tmp";

#[tokio::test(flavor = "multi_thread")]
async fn a_node_of_real_servers_run_by_hand_is_imported_moved_and_adopted() {
    real_servers_migrate(docker_host(), "mig").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_of_real_servers_run_by_hand_is_imported_moved_and_adopted_on_podman() {
    real_servers_migrate(podman_host(), "migp").await;
}

/// Postgres, redis and a client of both, started by hand as compose would (project
/// network, aliases, labels, health checks), with a password in env: imported, their
/// data moved, adopted bottom-up without a restart, then run by the supervisor.
async fn real_servers_migrate(host: String, tag: &str) {
    let docker = connect(&host).await;
    let node = ServeNode::new(tag);
    let project = node.prefix.clone();
    let network = format!("{project}_default");
    let _net = NetworkGuard::create(&host, &network).await;
    let mut cleanup = Cleanup {
        host: host.clone(),
        containers: Vec::new(),
    };
    let image = servers_image();
    let (pg, redis, client) = (node.id("pg"), node.id("redis"), node.id("client"));

    // The old node: its folders, owned by the servers' users as its owner set them up.
    let old = node.dir.path().join("old-node");
    for dir in ["pg", "redis"] {
        std::fs::create_dir_all(old.join(dir)).unwrap();
    }
    run_once(
        &docker,
        &image,
        "chown postgres:postgres /old/pg && chown redis:redis /old/redis",
        &format!("{}:/old", old.display()),
    )
    .await;
    let password = format!("pw-{}", std::process::id());
    let pg_id = run_server(
        &docker,
        &image,
        &network,
        &project,
        Run {
            name: &pg,
            user: "postgres",
            env: vec!["PGDATA=/var/lib/postgresql/data".into()],
            command: PG_CMD,
            bind: Some(format!(
                "{}:/var/lib/postgresql/data",
                old.join("pg").display()
            )),
            health: "psql -h 127.0.0.1 -U postgres -tAc 'select 1'",
            depends_on: String::new(),
        },
    )
    .await;
    cleanup.containers.push(pg_id.clone());
    let redis_id = run_server(&docker, &image, &network, &project, Run {
        name: &redis,
        user: "redis",
        env: vec![format!("REDIS_PASSWORD={password}")],
        command: "exec redis-server --requirepass \"$REDIS_PASSWORD\" --dir /data --protected-mode no",
        bind: Some(format!("{}:/data", old.join("redis").display())),
        health: "redis-cli -a \"$REDIS_PASSWORD\" --no-auth-warning ping | grep -q PONG",
        depends_on: String::new(),
    })
    .await;
    cleanup.containers.push(redis_id.clone());
    let client_cmd = format!(
        "while true; do redis-cli -h {redis} -a \"$REDIS_PASSWORD\" --no-auth-warning incr hits > /tmp/hits; psql -h {pg} -U postgres -tAc 'select 40+2' > /tmp/pg; sleep 1; done"
    );
    let client_id = run_server(
        &docker,
        &image,
        &network,
        &project,
        Run {
            name: &client,
            user: "nobody",
            env: vec![format!("REDIS_PASSWORD={password}")],
            command: &client_cmd,
            bind: None,
            health: "grep -q 42 /tmp/pg",
            depends_on: format!("{pg}:service_healthy:false,{redis}:service_healthy:false"),
        },
    )
    .await;
    cleanup.containers.push(client_id.clone());
    cleanup
        .containers
        .extend([&pg_id, &redis_id, &client_id].map(String::clone));
    let ids = [&pg_id, &redis_id, &client_id];
    let engine = DockerRuntime::connect(&host).await.unwrap();
    old_node_serves(&engine, &client_id).await;
    let mut before = Vec::new();
    for id in ids {
        before.push(started_at(&inspect(&docker, id).await));
    }

    // Import: drafts into the catalog, the password into secret files, data renamed.
    let config = node.config(&host, "none", &[], "");
    let report = import(&config, &[&pg, &redis, &client]);
    assert!(
        !report.contains(&password),
        "no secret in the report:\n{report}"
    );
    for id in [&pg, &redis, &client] {
        let draft = std::fs::read_to_string(draft(&node, id)).unwrap();
        assert!(
            !draft.contains(&password),
            "{id}'s draft holds the password:\n{draft}"
        );
    }
    let moved = std::fs::read_link(old.join("pg"))
        .unwrap_or_else(|e| panic!("old/pg is a link now: {e}\n{report}"));
    assert!(
        moved.starts_with(node.dir.path().join("data/apps").join(&pg)),
        "{}",
        moved.display()
    );

    // Adopt, dependencies first: nothing restarts.
    let server = TestNode::start(&config);
    let mut c = server.client().await;
    for id in [&pg, &redis, &client] {
        let op = adopt(&mut c, id, id).await;
        assert_eq!(op["status"], "succeeded", "{op}");
        wait_package(&mut c, id, "running and healthy", |p| {
            p["state"] == "running" && p["health"] == "healthy"
        })
        .await;
    }
    for (id, started) in ids.iter().zip(&before) {
        let now = inspect(&docker, id).await;
        assert_eq!(&started_at(&now), started, "{id} was not restarted");
    }
    let secret = node
        .dir
        .path()
        .join("data/secrets")
        .join(&redis)
        .join("redis_password");
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap().trim_end(),
        password
    );
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The client still talks to both with the password: redis's counter moves on.
    let hits = async || -> u64 {
        let cmd = ["cat", "/tmp/hits"].map(String::from);
        let out = engine
            .exec(&client_id, &cmd, Duration::from_secs(10))
            .await
            .unwrap();
        out.output.trim().parse().unwrap_or(0)
    };
    // The client rewrites the file every second: a read may fall between the truncate and
    // the write, so the count is waited for rather than read once.
    let mut seen = 0;
    wait_until(
        "the client's counter moving on",
        Duration::from_secs(15),
        async || {
            let now = hits().await;
            if seen > 0 && now > seen {
                return Ok(());
            }
            seen = seen.max(now);
            Err(format!("{now} hits (seen {seen})"))
        },
    )
    .await;

    // They are the node's apps now: a restart of postgres is the supervisor's.
    let op = operation(&mut c, "package.restart", json!({ "id": pg })).await;
    assert_eq!(op["status"], "succeeded", "{op}");
    assert_ne!(started_at(&inspect(&docker, &pg_id).await), before[0]);
    let op = operation(&mut c, "package.stop", json!({ "id": client })).await;
    assert_eq!(op["status"], "succeeded", "{op}");
    assert_eq!(
        inspect(&docker, &client_id).await.state.unwrap().running,
        Some(false)
    );
}

/// Runs `script` as root in a throwaway container with `bind`, to its end: the owner's own
/// set-up of the old node.
async fn run_once(docker: &bollard::Docker, image: &str, script: &str, bind: &str) {
    use futures_util::StreamExt;
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        user: Some("0".into()),
        cmd: Some(vec!["sh".into(), "-c".into(), script.into()]),
        host_config: Some(HostConfig {
            binds: Some(vec![bind.to_string()]),
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = create_and_start(docker, None, body).await;
    let mut wait =
        docker.wait_container(&id, None::<bollard::query_parameters::WaitContainerOptions>);
    while let Some(item) = wait.next().await {
        let code = item
            .map(|w| w.status_code)
            .unwrap_or_else(|e| panic!("{script}: {e}"));
        assert_eq!(code, 0, "{script}");
    }
    let rm = RemoveContainerOptionsBuilder::new().force(true).build();
    let _ = docker.remove_container(&id, Some(rm)).await;
}
