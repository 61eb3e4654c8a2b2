//! Operations against a real engine and a registry on loopback: upgrade with automatic
//! rollback, uninstall with and without purge, and hot swap of the supervisor binary.

mod common;

use std::time::{Duration, Instant};

use archipelago::api::{AppState, OperationKind, OperationStatus};
use archipelago::engine::docker::DockerRuntime;
use archipelago::engine::ContainerRuntime;
use archipelago::supervisor::{GetOperation, ReloadCatalog, RunOperation};
use common::node::{inspect, package, wait_state, Node};
use common::serve::{ctl, free_port, TestNode};

/// Publishes `<registry>/<repo>:<tag>` whose /version file says `tag` (see
/// [`common::publish`]).
async fn publish(repo: &str, tag: &str) -> String {
    let dockerfile = format!(
        "FROM {}\nRUN echo {tag} > /version\n",
        common::BUSYBOX_IMAGE
    );
    common::publish(repo, tag, &dockerfile).await
}

/// The app serves its /version over HTTP, except version v3, which never gets healthy.
fn versioned_app(node: &Node, name: &str, image: &str, version: &str, port: u16) -> String {
    let cmd = format!(
        "v=$(cat /version); if [ \"$v\" = v3 ]; then exec sleep 1000; fi; mkdir -p /www; cp /version /www/index.html; exec httpd -f -p 127.0.0.1:{port} -h /www"
    );
    let id = node.id(name);
    let dir = node.apps_dir().join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("manifest.yml"),
        format!(
            "id: {id}\nname: {name}\nversion: \"{version}\"\ncontainer:\n  image: {image}\n  command: [\"sh\", \"-c\", {cmd:?}]\n  network: host\n  memory_limit: 64MiB\n  stop_timeout: 2s\n  volumes: [\"data:/data\"]\n  health:\n    http: {{port: {port}, path: /}}\n    interval: 200ms\n    timeout: 1s\n    retries: 3\n    start_period: 2s\n"
        ),
    )
    .unwrap();
    id
}

async fn run(
    sup: &actix::Addr<archipelago::supervisor::Supervisor>,
    id: &str,
    kind: OperationKind,
) -> archipelago::api::Operation {
    let op = sup
        .send(RunOperation {
            id: id.into(),
            kind,
            purge: false,
        })
        .await
        .unwrap()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now = sup
            .send(GetOperation { id: op.id.clone() })
            .await
            .unwrap()
            .unwrap();
        if now.status != OperationStatus::Running {
            return now;
        }
        assert!(Instant::now() < deadline, "{kind:?} of {id} never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// v1 → v2 succeeds; v2 → v3 fails its health check and rolls back by itself, with the
/// volume's content unchanged; a missing image fails clearly and leaves the app running.
#[actix_web::test]
async fn upgrade_succeeds_then_a_bad_upgrade_rolls_back_with_data_intact() {
    common::connect(&common::docker_host()).await;
    let node = Node::new("upg");
    let repo = format!("{}/app", node.prefix);
    let v1 = publish(&repo, "v1").await;
    let v2 = publish(&repo, "v2").await;
    let v3 = publish(&repo, "v3").await;
    let port = free_port();
    let id = versioned_app(&node, "app", &v1, "1", port);
    let sup = node.start(&node.config(std::slice::from_ref(&id), ""));
    wait_state(&sup, &id, AppState::Running, Duration::from_secs(60)).await;

    // A file the owner's data depends on.
    let volume = node.dir.path().join("data/apps").join(&id).join("data");
    std::fs::write(volume.join("wallet.dat"), b"precious").unwrap();

    versioned_app(&node, "app", &v2, "2", port);
    sup.send(ReloadCatalog).await.unwrap().unwrap();
    assert!(package(&sup, &id).await.update_available);
    let op = run(&sup, &id, OperationKind::Upgrade).await;
    assert_eq!(op.status, OperationStatus::Succeeded, "{op:?}");
    let p = package(&sup, &id).await;
    assert_eq!(p.installed_version.as_deref(), Some("2"));
    assert_eq!(p.image.as_deref(), Some(v2.as_str()));
    assert_eq!(p.state, AppState::Running);

    versioned_app(&node, "app", &v3, "3", port);
    sup.send(ReloadCatalog).await.unwrap().unwrap();
    let op = run(&sup, &id, OperationKind::Upgrade).await;
    assert_eq!(op.status, OperationStatus::Failed, "{op:?}");
    let p = wait_state(&sup, &id, AppState::Running, Duration::from_secs(10)).await;
    assert_eq!(p.installed_version.as_deref(), Some("2"), "back on v2");
    assert!(
        p.last_error.as_deref().unwrap_or("").contains("back on 2"),
        "{:?}",
        p.last_error
    );
    assert_eq!(
        inspect(&id).await.config.unwrap().image.as_deref(),
        Some(v2.as_str())
    );
    assert_eq!(
        std::fs::read(volume.join("wallet.dat")).unwrap(),
        b"precious"
    );
    println!("rolled back: {:?}", p.last_error);

    // A pull of an image that does not exist: clear error, the running app untouched.
    let started = inspect(&id).await.state.unwrap().started_at;
    let missing = format!("{}/{}/missing:v9", common::registry(), node.prefix);
    versioned_app(&node, "app", &missing, "9", port);
    sup.send(ReloadCatalog).await.unwrap().unwrap();
    let op = run(&sup, &id, OperationKind::Upgrade).await;
    assert_eq!(op.status, OperationStatus::Failed);
    let err = op.error.unwrap();
    assert!(err.contains("missing"), "{err}");
    assert_eq!(
        inspect(&id).await.state.unwrap().started_at,
        started,
        "app was touched"
    );
    assert_eq!(package(&sup, &id).await.state, AppState::Running);

    // Rollback on request goes back to v1 (the version before the last good upgrade).
    let op = run(&sup, &id, OperationKind::Rollback).await;
    assert_eq!(op.status, OperationStatus::Succeeded, "{op:?}");
    assert_eq!(
        package(&sup, &id).await.installed_version.as_deref(),
        Some("1")
    );
}

/// Uninstall keeps data; purge removes it.
#[actix_web::test]
async fn uninstall_keeps_data_and_purge_removes_it() {
    common::connect(&common::docker_host()).await;
    let node = Node::new("rm");
    let id = node.app(
        "app",
        "while true; do sleep 1 & wait $!; done",
        "  network: none\n  volumes: [\"data:/data\"]\n",
        "secrets:\n  token: {kind: hex, bytes: 16}\n",
    );
    let sup = node.start(&node.config(std::slice::from_ref(&id), ""));
    wait_state(&sup, &id, AppState::Running, Duration::from_secs(60)).await;
    let data = node.dir.path().join("data");
    let file = data.join("apps").join(&id).join("data/keep.txt");
    std::fs::write(&file, b"x").unwrap();
    let op = run(&sup, &id, OperationKind::Uninstall).await;
    assert_eq!(op.status, OperationStatus::Succeeded, "{op:?}");
    assert_eq!(package(&sup, &id).await.state, AppState::NotInstalled);
    assert!(file.exists(), "data kept");
    assert!(
        data.join("secrets").join(&id).join("token").exists(),
        "secret kept"
    );
    let docker = common::connect(&common::docker_host()).await;
    assert!(docker
        .inspect_container(
            &format!("archipelago-{id}"),
            None::<bollard::query_parameters::InspectContainerOptions>
        )
        .await
        .is_err());

    run(&sup, &id, OperationKind::Install).await;
    wait_state(&sup, &id, AppState::Running, Duration::from_secs(60)).await;
    let op = sup
        .send(RunOperation {
            id: id.clone(),
            kind: OperationKind::Uninstall,
            purge: true,
        })
        .await
        .unwrap()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sup
        .send(GetOperation { id: op.id.clone() })
        .await
        .unwrap()
        .unwrap()
        .status
        == OperationStatus::Running
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!file.exists(), "purged");
    assert!(!data.join("secrets").join(&id).exists(), "secrets purged");
}

/// kill -9 of the supervisor and a restart: every container keeps its id and start time.
#[actix_web::test]
async fn hot_swap_after_kill_9_restarts_no_container() {
    let docker = common::connect(&common::docker_host()).await;
    let node = Node::new("swap");
    let ids: Vec<String> = (0..3)
        .map(|i| {
            node.app(
                &format!("a{i}"),
                "while true; do sleep 1 & wait $!; done",
                "  network: none\n",
                "",
            )
        })
        .collect();
    let port = free_port();
    let config = node.config(
        &ids,
        &format!("listen_override: {port}\n").replace("listen_override: ", "# port "),
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("listen: 127.0.0.1:0", &format!("listen: 127.0.0.1:{port}"));
    std::fs::write(&config, text).unwrap();
    std::fs::write(node.dir.path().join("password"), "secret\n").unwrap();

    let mut first = TestNode::start(&config);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut before = vec![];
    loop {
        before.clear();
        for id in &ids {
            if let Ok(c) = docker
                .inspect_container(
                    &format!("archipelago-{id}"),
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
                .await
            {
                if c.state.as_ref().and_then(|s| s.running) == Some(true) {
                    before.push((c.id.clone().unwrap(), c.state.unwrap().started_at.unwrap()));
                }
            }
        }
        if before.len() == ids.len() {
            break;
        }
        assert!(Instant::now() < deadline, "apps never all ran");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // kill -9: no chance to clean up anything.
    first.kill9();
    let _second = TestNode::start(&config);
    // Give the new supervisor several ticks (200 ms) to do anything it would do.
    let healthz = Instant::now();
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        assert!(
            healthz.elapsed() < Duration::from_secs(20),
            "second supervisor never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "second supervisor serving {:?} after the kill",
        healthz.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (id, (cid, started)) in ids.iter().zip(&before) {
        let c = inspect(id).await;
        assert_eq!(c.id.as_ref(), Some(cid), "{id} recreated");
        assert_eq!(
            c.state.unwrap().started_at.as_ref(),
            Some(started),
            "{id} restarted"
        );
    }
}

/// Install of a two-app chain: the second reads a secret of the first from its env, and
/// bitcoind-style rpcauth is derived from the first's password.
#[actix_web::test]
async fn a_dependant_reads_its_dependencys_secret_from_env() {
    common::connect(&common::docker_host()).await;
    let node = Node::new("sec");
    let a = node.app(
        "bitcoind",
        "while true; do sleep 1 & wait $!; done",
        "  network: none\n  env:\n    RPCAUTH: \"${secret:rpcauth}\"\n",
        "secrets:\n  rpc_password: {kind: password, length: 32}\n  rpcauth: {kind: rpcauth, user: archipelago, password: rpc_password}\n",
    );
    let b = node.app(
        "lnd",
        "while true; do sleep 1 & wait $!; done",
        &format!("  network: none\n  env:\n    RPCPASS: \"${{secret:{a}/rpc_password}}\"\n"),
        &format!("dependencies: [{a}]\n"),
    );
    let sup = node.start(&node.config(&[a.clone(), b.clone()], ""));
    wait_state(&sup, &b, AppState::Running, Duration::from_secs(60)).await;
    let secrets = node.dir.path().join("data/secrets").join(&a);
    let password = std::fs::read_to_string(secrets.join("rpc_password")).unwrap();
    assert_eq!(password.len(), 32);
    let env_of =
        |c: bollard::models::ContainerInspectResponse| c.config.unwrap().env.unwrap_or_default();
    assert!(env_of(inspect(&b).await).contains(&format!("RPCPASS={password}")));
    let rpcauth = std::fs::read_to_string(secrets.join("rpcauth")).unwrap();
    let (_, rest) = rpcauth.split_once(':').unwrap();
    let (salt, _) = rest.split_once('$').unwrap();
    assert_eq!(
        rpcauth,
        archipelago::secrets::rpcauth_line("archipelago", salt, &password)
    );
    assert!(env_of(inspect(&a).await).contains(&format!("RPCAUTH={rpcauth}")));
}

/// Every container labelled as the app's, any state: (name, image, running). Listed
/// through our runtime, which waits out Podman's transient `stopped` state.
async fn containers_of(id: &str) -> Vec<(String, String, bool)> {
    let rt = DockerRuntime::connect(&common::docker_host())
        .await
        .unwrap();
    rt.list()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.app == id)
        .map(|c| (c.name, c.image, c.state.is_running()))
        .collect()
}

/// Where the supervisor is killed during an upgrade.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// As soon as `package.upgrade` has answered.
    AfterAnswer,
    /// While the new version is starting (it takes 4 s to get healthy): the old container
    /// is aside as `-previous` and the new one is running.
    NewStarting,
    /// While the journal says `commit`: the new version is recorded as installed and the
    /// old container is being removed (a window of a few engine calls; when the poll
    /// misses it, the kill lands just after, as in `AfterSwap`).
    Committing,
    /// Once the old container is gone and the new one runs.
    AfterSwap,
}

/// kill -9 of `archipelago serve` at four points of an upgrade, started over real
/// HTTP with `ctl`: after a restart the app is `running` on exactly one version, its one
/// container runs that version's image, nothing is left aside, the volume's file is
/// unchanged and the state file holds no journal.
#[actix_web::test]
async fn a_supervisor_killed_during_an_upgrade_recovers_to_one_version() {
    let docker = common::connect(&common::docker_host()).await;
    let node = Node::new("kup");
    let repo = format!("{}/app", node.prefix);
    let images = [publish(&repo, "v1").await, publish(&repo, "v2").await];
    let app_port = free_port();
    let web_port = free_port();
    // v2 takes 4 s to serve, so there is a window while it starts.
    let manifest = |n: usize| {
        let id = node.id("app");
        let dir = node.apps_dir().join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        let cmd = format!(
            "if [ \"$(cat /version)\" = v2 ]; then sleep 4; fi; mkdir -p /www; cp /version /www/index.html; exec httpd -f -p 127.0.0.1:{app_port} -h /www"
        );
        std::fs::write(
            dir.join("manifest.yml"),
            format!(
                "id: {id}\nname: app\nversion: \"{v}\"\ncontainer:\n  image: {image}\n  command: [\"sh\", \"-c\", {cmd:?}]\n  network: host\n  memory_limit: 64MiB\n  stop_timeout: 2s\n  volumes: [\"data:/data\"]\n  health:\n    http: {{port: {app_port}, path: /}}\n    interval: 200ms\n    timeout: 1s\n    retries: 3\n    start_period: 10s\n",
                v = n + 1,
                image = images[n],
            ),
        )
        .unwrap();
        id
    };
    let id = manifest(0);
    let config = node.config(std::slice::from_ref(&id), "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "listen: 127.0.0.1:0",
        &format!("listen: 127.0.0.1:{web_port}"),
    );
    std::fs::write(&config, text).unwrap();
    // serve's own file (it replaces the password by its argon2 hash on start), and a
    // clear copy for `ctl --password-file`.
    std::fs::write(node.dir.path().join("password"), "secret\n").unwrap();
    let password = node.dir.path().join("ctl-password");
    std::fs::write(&password, "secret\n").unwrap();
    let state_file = node
        .dir
        .path()
        .join("data/state")
        .join(format!("{id}.json"));
    let volume = node.dir.path().join("data/apps").join(&id).join("data");

    // Polls `ctl get` until the app is running with no operation in flight.
    let settled = |within: Duration| {
        let id = id.clone();
        let password = password.clone();
        async move {
            let deadline = Instant::now() + within;
            loop {
                if let Some(p) = ctl(web_port, &password, &["get", &id]) {
                    let op_running = p["operation"]["status"] == "running";
                    if p["state"] == "running" && !op_running {
                        return p;
                    }
                    assert!(Instant::now() < deadline, "{id} never settled: {p}");
                } else {
                    assert!(Instant::now() < deadline, "{id}: supervisor never answered");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };

    let mut sup = TestNode::start(&config);
    settled(Duration::from_secs(60)).await;
    std::fs::create_dir_all(&volume).unwrap();
    std::fs::write(volume.join("wallet.dat"), b"precious").unwrap();

    let name = format!("archipelago-{id}");
    // Index into `images` of the version installed now.
    let mut current = 0;
    let aside = format!("{name}-previous");
    for point in [
        KillPoint::AfterAnswer,
        KillPoint::NewStarting,
        KillPoint::Committing,
        KillPoint::AfterSwap,
    ] {
        // Offer the version not installed now (the last point goes back from 2 to 1).
        let target = 1 - current;
        manifest(target);
        ctl(web_port, &password, &["reload"]).expect("catalog.reload");
        let before = settled(Duration::from_secs(10)).await;
        assert_eq!(before["update_available"], true, "{point:?}: {before}");
        let op = ctl(web_port, &password, &["upgrade", &id]).expect("package.upgrade");
        assert_eq!(op["operation"]["status"], "running", "{op}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let cs = containers_of(&id).await;
            let has = |n: &str| cs.iter().any(|c| c.0 == n);
            let new_running = cs
                .iter()
                .any(|c| c.0 == name && c.1 == images[target] && c.2);
            let swapped = !has(&aside) && new_running;
            let reached = match point {
                KillPoint::AfterAnswer => true,
                KillPoint::NewStarting => has(&aside) && new_running,
                KillPoint::Committing => {
                    let state = std::fs::read_to_string(&state_file).unwrap_or_default();
                    let state: serde_json::Value = serde_json::from_str(&state).unwrap_or_default();
                    state["journal"]["step"] == "commit" || swapped
                }
                KillPoint::AfterSwap => swapped,
            };
            if reached {
                break;
            }
            assert!(Instant::now() < deadline, "{point:?} never reached: {cs:?}");
            if !matches!(point, KillPoint::Committing) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // kill -9: no chance to clean anything up.
        sup.kill9();
        let journal = std::fs::read_to_string(&state_file).unwrap();
        let journal: serde_json::Value = serde_json::from_str(&journal).unwrap();
        println!("{point:?}: killed with journal {}", journal["journal"]);

        sup = TestNode::start(&config);
        let p = settled(Duration::from_secs(60)).await;
        let version = p["installed_version"].as_str().unwrap().to_string();
        let image = &images[version.parse::<usize>().unwrap() - 1];
        println!(
            "{point:?}: recovered on version {version}; last_error {}",
            p["last_error"]
        );
        assert_eq!(p["image"], image.as_str(), "{point:?}: {p}");
        let cs = containers_of(&id).await;
        assert_eq!(
            cs,
            vec![(name.clone(), image.clone(), true)],
            "{point:?}: one container, on the installed version"
        );
        assert_eq!(
            std::fs::read(volume.join("wallet.dat")).unwrap(),
            b"precious",
            "{point:?}"
        );
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
        assert!(state["journal"].is_null(), "{point:?}: {state}");
        let ended = version.parse::<usize>().unwrap() - 1;
        match point {
            KillPoint::AfterAnswer => {}
            KillPoint::NewStarting => {
                assert_eq!(ended, current, "a swap cut before its gate is undone")
            }
            KillPoint::Committing | KillPoint::AfterSwap => {
                assert_eq!(ended, target, "a swap past its gate is kept")
            }
        }
        current = ended;
    }
    // Clean up: the supervisor, the app's container, and the images it pulled.
    drop(sup);
    let rm = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
        .force(true)
        .build();
    docker.remove_container(&name, Some(rm)).await.unwrap();
    for image in &images {
        let _ = docker
            .remove_image(
                image,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await;
    }
}
