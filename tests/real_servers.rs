//! Real servers on a private network: tor, postgres and redis from Debian's packages, each
//! as its own non-root user with its data on a volume, no published port and no host
//! networking; an app that reaches two of them by name and reads a file from a
//! dependency's volume mounted read-only. Also the app network itself: made once when
//! apps install at once, and duplicates an earlier version left behind repaired.
//!
//! Runs on the engine named by `ARCHIPELAGO_TEST_DOCKER_HOST` (Docker by default;
//! `scripts/test.sh` runs this file again on Podman) with the image of real servers that
//! `scripts/test-env.sh up` builds.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use archipelago::ctl::RpcClient;
use archipelago::engine::docker::DockerRuntime;
use archipelago::engine::ContainerRuntime;
use common::serve;
use common::{connect, docker_host, networks_named, servers_image, NetworkGuard};
use serde_json::json;
use serve::{get, require_engine, ServeNode};

async fn exec(engine: &DockerRuntime, id: &str, script: &str) -> (i64, String) {
    let cmd = ["sh", "-c", script].map(String::from);
    let out = engine
        .exec(&format!("archipelago-{id}"), &cmd, Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("exec in {id}: {e}"));
    (out.exit_code, out.output.trim().to_string())
}

/// Waits until every app is running and healthy.
async fn wait_all_healthy(c: &mut RpcClient, ids: &[&String], within: Duration) {
    let deadline = Instant::now() + within;
    for id in ids {
        loop {
            let p = get(c, id).await;
            if p["state"] == "running" && p["health"] == "healthy" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id} not running and healthy within {within:?}: {p}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[actix_web::test]
async fn real_servers_start_on_a_private_network_from_an_empty_engine() {
    require_engine().await;
    let host = docker_host();
    let docker = connect(&host).await;
    let engine = DockerRuntime::connect(&host).await.unwrap();
    let node = ServeNode::new("rs");
    let network = format!("{}-net", node.prefix);
    let _net = NetworkGuard {
        host: host.clone(),
        name: network.clone(),
    };
    assert!(
        networks_named(&docker, &network).await.is_empty(),
        "the network must not exist beforehand"
    );
    let image = servers_image();
    let head = |name: &str| {
        format!("id: {{id}}\nname: {name}\nversion: \"1\"\ncontainer:\n  image: {image}\n  memory_limit: 256MiB\n  stop_timeout: 20s\n")
    };
    // Tor runs with its network disabled (no traffic may leave the test's engine), so it
    // opens no SocksPort; its ControlPort, on the container's loopback only, is what the
    // probe reaches inside the container's namespace.
    let tor = node.manifest(
        "tor",
        &(head("Tor")
            + "  user: debian-tor\n  command: [tor, --SocksPort, 0.0.0.0:9050, --ControlPort, 127.0.0.1:9051, --CookieAuthentication, \"1\", --DataDirectory, /var/lib/tor/data, --DisableNetwork, \"1\", --Log, notice stdout]\n  volumes: [\"data:/var/lib/tor/data\"]\n  health: {tcp: {port: 9051}, interval: 1s, retries: 60}\n"),
    );
    let postgres = node.manifest(
        "postgres",
        &(head("PostgreSQL")
            + "  user: postgres\n  env: {PGDATA: /var/lib/postgresql/data}\n  command: [sh, -c, 'test -s $PGDATA/PG_VERSION || { /usr/lib/postgresql/15/bin/initdb -g --auth=trust -U postgres && echo \"host all all 0.0.0.0/0 trust\" >> $PGDATA/pg_hba.conf; } && exec /usr/lib/postgresql/15/bin/postgres -c listen_addresses=* -c unix_socket_directories=/tmp']\n  volumes: [\"data:/var/lib/postgresql/data\"]\n  health: {tcp: {port: 5432}, interval: 1s, retries: 60}\n"),
    );
    let redis = node.manifest(
        "redis",
        &(head("Redis")
            + "  user: redis\n  command: [redis-server, --bind, 0.0.0.0, --protected-mode, \"no\", --dir, /var/lib/redis, --appendonly, \"yes\"]\n  volumes: [\"data:/var/lib/redis\"]\n  health: {tcp: {port: 6379}, interval: 1s, retries: 60}\n"),
    );
    // Reaches redis by its alias (the app id) and postgres by container name; reads
    // postgres's PG_VERSION through the read-only mount as `nobody`, by the group of the
    // folder's owner, and must fail to write there.
    let script = format!(
        "until redis-cli -h {redis} ping | grep -q PONG && psql -h archipelago-{postgres} -U postgres -tAc 'select 40+2' | grep -q 42; do sleep 1; done; cat /pg/PG_VERSION > /tmp/pgv && if touch /pg/x 2>/dev/null; then echo wrote; else touch /tmp/ok; fi; exec sleep 100000"
    );
    let client = node.manifest(
        "client",
        &format!(
            "id: {{id}}\nname: Client\nversion: \"1\"\ndependencies: [{redis}, {postgres}]\ncontainer:\n  image: {image}\n  user: nobody\n  command: [sh, -c, {script:?}]\n  volumes: [\"{postgres}/data:/pg:ro\"]\n  memory_limit: 64MiB\n  stop_timeout: 2s\n  health: {{exec: [test, -f, /tmp/ok], interval: 1s, retries: 60}}\n"
        ),
    );
    let apps = [&tor, &postgres, &redis, &client];

    let mut server = node.serve_on(&host, &network, &[]);
    let mut c = server.client().await;
    // The three servers installing at once (each install answers at once and runs in its
    // actor, so each finds the network missing); the client once they are healthy, as
    // installing a dependant is refused before.
    let began = Instant::now();
    for id in [&tor, &postgres, &redis] {
        c.call("package.install", json!({ "id": id }))
            .await
            .unwrap_or_else(|e| panic!("install {id}: {e}"));
    }
    wait_all_healthy(&mut c, &[&postgres, &redis], Duration::from_secs(180)).await;
    c.call("package.install", json!({ "id": &client }))
        .await
        .unwrap_or_else(|e| panic!("install {client}: {e}"));
    wait_all_healthy(&mut c, &apps, Duration::from_secs(120)).await;
    println!(
        "all four running and healthy {:?} after install",
        began.elapsed()
    );

    assert_eq!(
        networks_named(&docker, &network).await.len(),
        1,
        "exactly one app network"
    );
    let mut started = BTreeMap::new();
    for id in apps {
        let c = common::node::inspect(id).await;
        let hc = c.host_config.clone().unwrap();
        // Podman reports `bridge` as the mode of any bridge network; both name the
        // networks the container is on.
        let networks = c
            .network_settings
            .clone()
            .and_then(|n| n.networks)
            .unwrap_or_default();
        assert_eq!(
            networks.keys().collect::<Vec<_>>(),
            vec![&network],
            "{id} is on the app network only"
        );
        assert!(
            hc.port_bindings.unwrap_or_default().is_empty(),
            "{id} publishes no port"
        );
        assert!(
            hc.security_opt
                .unwrap_or_default()
                .iter()
                .any(|o| o.starts_with("no-new-privileges")),
            "{id} runs with no-new-privileges"
        );
        assert!(
            hc.cap_drop
                .unwrap_or_default()
                .iter()
                .any(|c| c.ends_with("NET_RAW")),
            "{id} drops NET_RAW"
        );
        started.insert(
            id.clone(),
            (c.id.unwrap(), c.state.unwrap().started_at.unwrap()),
        );
    }
    // Each server's volume belongs to the user it runs as, and not to others.
    for id in [&tor, &postgres, &redis] {
        let folder = node.dir.path().join("data/apps").join(id).join("data");
        let meta = std::fs::metadata(&folder).unwrap();
        let (code, ids) = exec(&engine, id, "echo $(id -u) $(id -g)").await;
        assert_eq!(code, 0);
        assert_eq!(
            ids,
            format!("{} {}", meta.uid(), meta.gid()),
            "{id} owns {folder:?}"
        );
        assert_ne!(meta.uid(), 0, "{id} runs as a non-root user");
        assert_eq!(
            meta.permissions().mode() & 0o007,
            0,
            "{folder:?} is not for others"
        );
    }
    let (code, wrote) = exec(&engine, &tor, "test -e /var/lib/tor/data/lock && echo ok").await;
    assert_eq!(
        (code, wrote.as_str()),
        (0, "ok"),
        "tor wrote its data folder"
    );
    let (_, pgv) = exec(&engine, &client, "cat /tmp/pgv").await;
    assert_eq!(
        pgv, "15",
        "the client read PG_VERSION through the read-only mount"
    );
    let (code, _) = exec(&engine, &client, "touch /pg/y").await;
    assert_ne!(code, 0, "the dependency's volume is read-only");

    // A supervisor killed and started again adopts every container: none restarts.
    server.kill9();
    let server = node.serve_on(&host, &network, &[]);
    let mut c = server.client().await;
    wait_all_healthy(&mut c, &apps, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_all_healthy(&mut c, &apps, Duration::from_secs(5)).await;
    for id in apps {
        let c = common::node::inspect(id).await;
        let now = (c.id.unwrap(), c.state.unwrap().started_at.unwrap());
        assert_eq!(&now, &started[id], "{id} was recreated or restarted");
    }
    assert_eq!(networks_named(&docker, &network).await.len(), 1);
}

/// Docker lets several networks share a name; apps installing at once used to make one
/// each. The runtime now makes one, removes empty duplicates it made, and explains what to
/// do when duplicates hold containers. Podman refuses a second network of a name.
#[actix_web::test]
async fn the_app_network_is_made_once_and_duplicates_are_repaired() {
    require_engine().await;
    let host = docker_host();
    let docker = connect(&host).await;
    let engine = DockerRuntime::connect(&host).await.unwrap();
    let name = common::unique("archipelago-dup");
    let _net = NetworkGuard {
        host: host.clone(),
        name: name.clone(),
    };
    // Ten at once, as ten installs would.
    let results =
        futures_util::future::join_all((0..10).map(|_| engine.ensure_network(&name))).await;
    let made = results.iter().filter(|r| matches!(r, Ok(true))).count();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(made, 1, "{results:?}");
    assert_eq!(networks_named(&docker, &name).await.len(), 1);

    let create = |labelled: bool| bollard::models::NetworkCreateRequest {
        name: name.clone(),
        driver: Some("bridge".into()),
        labels: labelled.then(|| {
            std::collections::HashMap::from([(
                archipelago::engine::LABEL_NETWORK.to_string(),
                "true".to_string(),
            )])
        }),
        ..Default::default()
    };
    if engine.is_podman() {
        let second = docker.create_network(create(true)).await;
        assert!(
            second.is_err(),
            "podman refuses a duplicate name: {second:?}"
        );
        return;
    }
    // What an earlier version left: three networks of one name, all empty.
    for _ in 0..2 {
        docker.create_network(create(true)).await.unwrap();
    }
    assert_eq!(networks_named(&docker, &name).await.len(), 3);
    assert!(
        !engine.ensure_network(&name).await.unwrap(),
        "nothing new is made"
    );
    assert_eq!(
        networks_named(&docker, &name).await.len(),
        1,
        "empty duplicates removed"
    );

    // A container joins the network while it is alone, then an empty duplicate appears:
    // the empty one goes, the one in use stays.
    let first = networks_named(&docker, &name).await.remove(0);
    let mut containers = vec![];
    let run = |cname: String, net: String| {
        let docker = docker.clone();
        async move {
            let body = bollard::models::ContainerCreateBody {
                image: Some(common::BUSYBOX_IMAGE.to_string()),
                cmd: Some(vec!["sleep".into(), "600".into()]),
                host_config: Some(bollard::models::HostConfig {
                    network_mode: Some(net),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let opts = bollard::query_parameters::CreateContainerOptionsBuilder::new()
                .name(&cname)
                .build();
            docker.create_container(Some(opts), body).await.unwrap();
            docker
                .start_container(
                    &cname,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
                .unwrap();
        }
    };
    let c0 = format!("{name}-c0");
    run(c0.clone(), name.clone()).await;
    containers.push(c0);
    docker.create_network(create(true)).await.unwrap();
    assert!(
        !engine.ensure_network(&name).await.unwrap(),
        "nothing new is made"
    );
    assert_eq!(
        networks_named(&docker, &name).await,
        vec![first.clone()],
        "the one in use stays"
    );

    // Two duplicates in use: nothing is touched and the error says what to do.
    let second = docker.create_network(create(true)).await.unwrap().id;
    let other = format!("{name}-other");
    let _other = NetworkGuard {
        host: host.clone(),
        name: other.clone(),
    };
    engine.ensure_network(&other).await.unwrap();
    let c1 = format!("{name}-c1");
    run(c1.clone(), other).await;
    containers.push(c1.clone());
    docker
        .connect_network(
            &second,
            bollard::models::NetworkConnectRequest {
                container: c1.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let err = engine.ensure_network(&name).await.unwrap_err().to_string();
    for cname in &containers {
        let rm = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
            .force(true)
            .build();
        let _ = docker.remove_container(cname, Some(rm)).await;
    }
    assert!(
        err.contains("is ambiguous") && err.contains("docker network rm"),
        "{err}"
    );
    assert_eq!(
        networks_named(&docker, &name).await.len(),
        2,
        "nothing removed"
    );
}

/// A volume user the image does not know fails the install, naming the user, and leaves
/// no container behind.
#[actix_web::test]
async fn an_unknown_volume_user_fails_the_install_naming_it() {
    require_engine().await;
    let host = docker_host();
    let node = ServeNode::new("nouser");
    let id = node.manifest(
        "ghost",
        &format!(
            "id: {{id}}\nname: Ghost\nversion: \"1\"\ncontainer:\n  image: {}\n  user: ghost-user\n  command: [sleep, \"1000\"]\n  volumes: [\"data:/data\"]\n  network: none\n  memory_limit: 64MiB\n",
            servers_image()
        ),
    );
    let server = node.serve(&host, &[]);
    let mut c = server.client().await;
    c.call("package.install", json!({ "id": &id }))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let p = loop {
        let p = get(&mut c, &id).await;
        if p["operation"]["status"] == "failed" {
            break p;
        }
        assert!(Instant::now() < deadline, "install never failed: {p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let error = p["operation"]["error"].as_str().unwrap_or_default();
    // Docker creates the container and the supervisor finds no such user in the image's
    // /etc/passwd; Podman already refuses the create, saying the same in its words.
    assert!(
        error.contains("user `ghost-user` is not in the image's /etc/passwd")
            || error.contains("unknown user error looking up user \"ghost-user\""),
        "{p}"
    );
    assert_eq!(p["state"], "not-installed", "{p}");
    let docker = connect(&host).await;
    let left = docker
        .inspect_container(
            &format!("archipelago-{id}"),
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await;
    assert!(left.is_err(), "no container is left behind");
}
