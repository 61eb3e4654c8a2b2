//! Onion services with the real Tor of the test image (its network disabled: no traffic
//! leaves the test's engine, and tor still makes services and their addresses): two apps
//! with onion ports get distinct v3 addresses equal to tor's hostname files, read through
//! `${onion}` and `${onion:APP}`; they survive a supervisor restart and a tor restart;
//! uninstall with purge removes one service and its keys, and the other address stays.

mod common;

use std::time::{Duration, Instant};

use archipelago::ctl::RpcClient;
use archipelago::engine::docker::DockerRuntime;
use archipelago::engine::ContainerRuntime;
use common::serve;
use common::{docker_host, servers_image};
use serde_json::{json, Value};
use serve::{get, require_engine, ServeNode};

/// Waits until `id` is running and healthy (or has no check), and its operation ended.
async fn healthy(c: &mut RpcClient, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let p = get(c, id).await;
        let settled = p["operation"]["status"] != "running";
        if p["state"] == "running"
            && p["health"] != "starting"
            && p["health"] != "unhealthy"
            && settled
        {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "{id} not running within {within:?}: {p}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `id`'s package shows an onion address, and answers it.
async fn address(c: &mut RpcClient, id: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let p = get(c, id).await;
        if let Some(a) = p["onion_address"].as_str() {
            return a.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "{id} has no onion address within {within:?}: {p}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn env_of(engine: &DockerRuntime, id: &str, var: &str) -> String {
    let cmd = ["sh", "-c", &format!("echo ${var}")].map(String::from);
    let out = engine
        .exec(&format!("archipelago-{id}"), &cmd, Duration::from_secs(10))
        .await
        .unwrap();
    out.output.trim().to_string()
}

fn is_v3(a: &str) -> bool {
    a.len() == 62
        && a.ends_with(".onion")
        && a[..56]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
}

#[actix_web::test]
async fn apps_get_tor_made_onion_addresses_that_last_until_purge() {
    require_engine().await;
    let host = docker_host();
    let engine = DockerRuntime::connect(&host).await.unwrap();
    let node = ServeNode::new("tor");
    let network = format!("{}-net", node.prefix);
    let image = servers_image();
    let tor = node.id("tor");
    // Config `tor_app` names the tor app; its `data` volume holds the services file and keys.
    node.manifest(
        "tor",
        &format!(
            "id: {{id}}\nname: Tor\nversion: \"1\"\ncontainer:\n  image: {image}\n  user: debian-tor\n  command: [tor, --defaults-torrc, /dev/null, --allow-missing-torrc, -f, /var/lib/tor/data/onion-services.torrc, --SocksPort, 0.0.0.0:9050, --ControlPort, 127.0.0.1:9051, --CookieAuthentication, \"1\", --DataDirectory, /var/lib/tor/data, --DisableNetwork, \"1\", --Log, notice stdout]\n  volumes: [\"data:/var/lib/tor/data\"]\n  memory_limit: 256MiB\n  stop_timeout: 10s\n  health: {{tcp: {{port: 9051}}, interval: 1s, retries: 60}}\n"
        ),
    );
    // Two busybox apps with onion ports, reading their addresses from env.
    let sleeper = |name: &str, top: &str, env: &str| {
        let extra = format!("  env: {env}\n  stop_timeout: 2s\n");
        common::busybox_manifest("{id}", name, "1", "sleep 100000", top, &extra)
    };
    let web = node.manifest(
        "web",
        &sleeper(
            "Web",
            &format!("dependencies: [{tor}]\nonion: {{ports: [\"80:8080\"]}}\n"),
            "{ONION: \"${onion}\"}",
        ),
    );
    let api = node.manifest(
        "api",
        &sleeper(
            "Api",
            &format!(
                "dependencies: [{tor}, {web}]\nonion: {{ports: [\"9735:9735\", \"443:8443\"]}}\n"
            ),
            &format!("{{OWN: \"${{onion}}\", WEB: \"${{onion:{web}}}\"}}"),
        ),
    );
    let config = node.config(&host, &network, &[], &format!("tor_app: {tor}\n"));
    let mut server = serve::Server::start(&config);
    let mut c = server.client().await;

    for id in [&tor, &web, &api] {
        c.call("package.install", json!({ "id": id }))
            .await
            .unwrap_or_else(|e| panic!("install {id}: {e}"));
        healthy(&mut c, id, Duration::from_secs(120)).await;
    }
    let web_addr = address(&mut c, &web, Duration::from_secs(60)).await;
    let api_addr = address(&mut c, &api, Duration::from_secs(60)).await;
    println!("web {web_addr}, api {api_addr}");
    assert!(
        is_v3(&web_addr) && is_v3(&api_addr),
        "{web_addr} {api_addr}"
    );
    assert_ne!(web_addr, api_addr);
    let keys = node
        .dir
        .path()
        .join("data/apps")
        .join(&tor)
        .join("data/onion");
    let services_file = || {
        let path = node.dir.path().join("data/apps").join(&tor);
        std::fs::read_to_string(path.join("data/onion-services.torrc")).unwrap()
    };
    let hostname = |app: &str| {
        std::fs::read_to_string(keys.join(app).join("hostname"))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(hostname(&web), web_addr, "the address is tor's own");
    assert_eq!(hostname(&api), api_addr);
    assert_eq!(env_of(&engine, &web, "ONION").await, web_addr);
    assert_eq!(env_of(&engine, &api, "OWN").await, api_addr);
    assert_eq!(env_of(&engine, &api, "WEB").await, web_addr);
    let services = services_file();
    assert!(
        services.contains(&format!("HiddenServicePort 443 {api}:8443")),
        "{services}"
    );

    // A supervisor restart and a tor restart keep both addresses.
    let started_at = |id: String| {
        let engine = &engine;
        async move {
            engine
                .inspect(&format!("archipelago-{id}"))
                .await
                .unwrap()
                .started_at
        }
    };
    let before = (started_at(web.clone()).await, started_at(api.clone()).await);
    server.kill9();
    let server = serve::Server::start(&config);
    let mut c = server.client().await;
    for id in [&tor, &web, &api] {
        healthy(&mut c, id, Duration::from_secs(60)).await;
    }
    let after = (started_at(web.clone()).await, started_at(api.clone()).await);
    assert_eq!(after, before, "a supervisor restart restarted an app");
    assert_eq!(
        address(&mut c, &web, Duration::from_secs(30)).await,
        web_addr
    );
    assert_eq!(
        address(&mut c, &api, Duration::from_secs(30)).await,
        api_addr
    );
    c.call("package.restart", json!({ "id": &tor }))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in [&tor, &web, &api] {
        healthy(&mut c, id, Duration::from_secs(60)).await;
    }
    assert_eq!(hostname(&web), web_addr);
    assert_eq!(hostname(&api), api_addr);
    assert_eq!(get(&mut c, &web).await["onion_address"], web_addr.as_str());

    // Purge removes the service and its keys; the other address stays.
    c.call("package.uninstall", json!({ "id": &api, "purge": true }))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = get(&mut c, &api).await;
        let gone = !keys.join(&api).exists();
        if p["state"] == "not-installed" && gone && p["onion_address"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "api's service not removed: {p}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let services = services_file();
    assert!(!services.contains(&api), "{services}");
    assert_eq!(hostname(&web), web_addr);
    assert_eq!(get(&mut c, &web).await["onion_address"], web_addr.as_str());
}
