//! Fault injection against the real `archipelago serve` binary and a real engine: kill -9
//! of the supervisor inside install and uninstall, the engine restarted under a running
//! supervisor, a full `data_dir`, and a corrupt state file.
//!
//! Every wait is bounded. The number of kill points is `ARCHIPELAGO_FAULT_ITERATIONS`
//! (default 3 here; `scripts/faults.sh` runs many more).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use archipelago::api::{AppState, Desired, OperationStatus, Package};
use archipelago::ctl::RpcClient;
use archipelago::store::Store;
use bollard::query_parameters::{
    ImportImageOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use serde_json::{json, Value};

use common::node::Node;
use common::serve::{free_port, TestNode, PASSWORD};

/// The node's config with a fixed port, the password file and `host` as the engine.
fn serve_config(node: &Node, default_apps: &[String], host: &str) -> PathBuf {
    let port = free_port();
    let config = node.config(default_apps, "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("listen: 127.0.0.1:0", &format!("listen: 127.0.0.1:{port}"))
        .replace(
            &format!("host: {}", common::docker_host()),
            &format!("host: {host}"),
        );
    std::fs::write(&config, text).unwrap();
    std::fs::write(node.dir.path().join("password"), format!("{PASSWORD}\n")).unwrap();
    config
}

/// Kills `serve` with SIGKILL after `d`, starts it again on `config` and waits until `id`
/// settles: a client of the new process, the package, and how long recovery took.
async fn kill_after(
    serve: &mut TestNode,
    d: Duration,
    config: &Path,
    id: &str,
) -> (RpcClient, Package, Duration) {
    tokio::time::sleep(d).await;
    serve.kill9();
    let killed = Instant::now();
    *serve = TestNode::start(config);
    let mut c = serve.client().await;
    let p = settle(&mut c, id, Duration::from_secs(40)).await;
    (c, p, killed.elapsed())
}

/// A busybox command that runs until SIGTERM, then exits 0 at once.
const SLEEPER: &str = "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done";

/// Starts `serve` on `node` with `id` as its one default app, on the engine at `host`, and
/// waits until the app runs.
async fn serve_running(node: &Node, id: &str, host: &str) -> (TestNode, RpcClient) {
    let config = serve_config(node, &[id.to_string()], host);
    let serve = TestNode::start(&config);
    let mut c = serve.client().await;
    let p = settle(&mut c, id, Duration::from_secs(40)).await;
    assert_eq!(p.state, AppState::Running);
    (serve, c)
}

async fn package(c: &mut RpcClient, id: &str) -> Package {
    let v = c.call("package.get", json!({ "id": id })).await.unwrap();
    serde_json::from_value(v).unwrap()
}

fn wanted(desired: Desired) -> AppState {
    match desired {
        Desired::Running => AppState::Running,
        Desired::Stopped => AppState::Stopped,
        Desired::NotInstalled => AppState::NotInstalled,
    }
}

/// Waits until `id` has no operation in flight and its state is its desired one, and has
/// stayed so for 1 s; panics after `within`.
async fn settle(c: &mut RpcClient, id: &str, within: Duration) -> Package {
    let deadline = Instant::now() + within;
    let mut since: Option<Instant> = None;
    loop {
        let p = package(c, id).await;
        let idle = p
            .operation
            .as_ref()
            .is_none_or(|op| op.status != OperationStatus::Running);
        let settled = idle && p.state == wanted(p.desired);
        match (settled, since) {
            (true, Some(t)) if t.elapsed() >= Duration::from_secs(1) => return p,
            (true, None) => since = Some(Instant::now()),
            (true, Some(_)) => {}
            (false, _) => since = None,
        }
        assert!(
            Instant::now() < deadline,
            "{id} never settled within {within:?}: state {:?}, desired {:?}, op {:?}, last_error {:?}",
            p.state,
            p.desired,
            p.operation,
            p.last_error
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `method` on `id` and waits for its operation to end; returns the operation.
async fn operate(c: &mut RpcClient, method: &str, params: Value) -> Value {
    let op = c.call(method, params).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = c
            .call("operation.get", json!({ "id": op["operation"]["id"] }))
            .await
            .unwrap();
        if now["status"] != "running" {
            return now;
        }
        assert!(Instant::now() < deadline, "{method} never ended: {now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Containers of this node on the engine: (name without the slash, running).
async fn containers(docker: &bollard::Docker, prefix: &str) -> Vec<(String, bool)> {
    let opts = ListContainersOptionsBuilder::new().all(true).build();
    let mut out = vec![];
    for c in docker.list_containers(Some(opts)).await.unwrap() {
        for n in c.names.unwrap_or_default() {
            let n = n.trim_start_matches('/').to_string();
            if n.starts_with(&format!("archipelago-{prefix}-")) {
                out.push((
                    n,
                    c.state.as_ref().map(|s| s.to_string()) == Some("running".into()),
                ));
            }
        }
    }
    out
}

/// Nothing orphaned: the only container of `id` is `archipelago-<id>`, present exactly
/// when the app is installed and running exactly when it is running.
async fn assert_no_orphans(docker: &bollard::Docker, prefix: &str, p: &Package, when: &str) {
    let found = containers(docker, prefix).await;
    let name = format!("archipelago-{}", p.id);
    let expect: Vec<(String, bool)> = match p.state {
        AppState::NotInstalled => vec![],
        AppState::Running => vec![(name, true)],
        _ => vec![(name, false)],
    };
    assert_eq!(found, expect, "{when}: containers do not match {p:?}");
    if p.state == AppState::NotInstalled {
        assert!(p.installed_version.is_none(), "{when}: {p:?}");
    } else {
        assert!(p.installed_version.is_some(), "{when}: {p:?}");
    }
}

fn iterations() -> u32 {
    std::env::var("ARCHIPELAGO_FAULT_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1)
}

/// The kill delay of iteration `i` of `n`: sliding over 0..=`max_ms`, plus a few ms of
/// jitter so repeated runs hit different instants.
fn delay(i: u32, n: u32, max_ms: u64) -> Duration {
    let base = if n == 1 {
        0
    } else {
        max_ms * u64::from(i) / u64::from(n - 1)
    };
    let jitter = u64::from(std::process::id() % 7) * 3;
    Duration::from_millis(base + jitter)
}

/// kill -9 at sliding instants after `package.install` and `package.uninstall` answered:
/// after a restart the app ends in its desired state, no container is orphaned (none
/// without an installed app, no `-previous`), and the volume survives uninstall.
#[actix_web::test]
async fn kill_9_inside_install_and_uninstall_leaves_a_consistent_node() {
    let docker = common::connect(&common::docker_host()).await;
    let node = Node::new("k9");
    // Install takes about 1.5 s (health after 1 s); stop ignores SIGTERM for its 1 s.
    let id = node.app(
        "app",
        "rm -f /tmp/ready; (sleep 1; touch /tmp/ready) & while true; do sleep 1 & wait $!; done",
        "  network: none\n  stop_timeout: 1s\n  volumes: [\"data:/data\"]\n  health:\n    exec: [\"test\", \"-f\", \"/tmp/ready\"]\n    interval: 200ms\n    timeout: 1s\n    retries: 3\n",
        "secrets:\n  token: {kind: hex, bytes: 16}\n",
    );
    let config = serve_config(&node, &[], &common::docker_host());
    let volume = node.dir.path().join("data/apps").join(&id).join("data");
    let n = iterations();
    let mut outcomes = vec![];
    let mut serve = TestNode::start(&config);
    for i in 0..n {
        let d = delay(i, n, 1800);

        // Install, killed after d.
        let mut c = serve.client().await;
        let p = package(&mut c, &id).await;
        assert_eq!(p.state, AppState::NotInstalled, "iteration {i} start");
        c.call("package.install", json!({ "id": id }))
            .await
            .unwrap();
        let (mut c, p, recovered) = kill_after(&mut serve, d, &config, &id).await;
        let when = format!("install killed after {d:?}");
        assert_no_orphans(&docker, &node.prefix, &p, &when).await;
        outcomes.push(format!(
            "{when}: {:?} (settled {recovered:?} after the kill)",
            p.state
        ));
        // An accepted install is journaled before it is answered, so it is finished.
        assert_eq!(p.state, AppState::Running, "{when}: accepted install lost");

        // Uninstall without purge, killed after d: the volume must survive.
        let keep = volume.join(format!("keep-{i}.txt"));
        std::fs::write(&keep, b"precious").unwrap();
        c.call("package.uninstall", json!({ "id": id }))
            .await
            .unwrap();
        let (mut c, p, recovered) = kill_after(&mut serve, d, &config, &id).await;
        let when = format!("uninstall killed after {d:?}");
        assert_no_orphans(&docker, &node.prefix, &p, &when).await;
        assert_eq!(
            std::fs::read(&keep).ok().as_deref(),
            Some(&b"precious"[..]),
            "{when}: volume file lost"
        );
        outcomes.push(format!(
            "{when}: {:?} (settled {recovered:?} after the kill)",
            p.state
        ));
        if p.state != AppState::NotInstalled {
            let op = operate(&mut c, "package.uninstall", json!({ "id": id })).await;
            assert_eq!(op["status"], "succeeded", "{when}: retry {op}");
            let p = settle(&mut c, &id, Duration::from_secs(40)).await;
            assert_no_orphans(&docker, &node.prefix, &p, &when).await;
        }
        assert!(keep.exists(), "{when}: volume file lost");
    }
    for o in &outcomes {
        println!("{o}");
    }
}

/// A state file overwritten with garbage (app running) and one truncated (app stopped)
/// while the supervisor is down: the restart logs the corrupt file, uses the `.bak` copy,
/// and each app keeps its desired state.
#[actix_web::test]
async fn a_corrupt_or_truncated_state_file_falls_back_to_the_last_good_copy() {
    let docker = common::connect(&common::docker_host()).await;
    let node = Node::new("cs");
    let ids: Vec<String> = ["garbled", "truncated"]
        .iter()
        .map(|name| node.app(name, SLEEPER, "  network: none\n  restart: always\n", ""))
        .collect();
    let config = serve_config(&node, &ids, &common::docker_host());
    let mut serve = TestNode::start(&config);
    let mut c = serve.client().await;
    for id in &ids {
        let p = settle(&mut c, id, Duration::from_secs(40)).await;
        assert_eq!(p.state, AppState::Running, "{id}");
    }
    let op = operate(&mut c, "package.stop", json!({ "id": ids[1] })).await;
    assert_eq!(op["status"], "succeeded", "{op}");
    let p = settle(&mut c, &ids[1], Duration::from_secs(20)).await;
    assert_eq!(p.desired, Desired::Stopped);
    serve.kill9();

    let state = node.dir.path().join("data/state");
    for id in &ids {
        assert!(
            state.join(format!("{id}.json.bak")).exists(),
            "{id}: no .bak to fall back on"
        );
    }
    std::fs::write(state.join(format!("{}.json", ids[0])), b"\0\x07garbage{{{").unwrap();
    let path = state.join(format!("{}.json", ids[1]));
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();

    let serve = TestNode::start(&config);
    let mut c = serve.client().await;
    for (id, desired) in ids.iter().zip([Desired::Running, Desired::Stopped]) {
        let p = settle(&mut c, id, Duration::from_secs(40)).await;
        assert_eq!(p.desired, desired, "{id}: desired state lost: {p:?}");
        assert_eq!(p.state, wanted(desired), "{id}: {p:?}");
        assert!(p.installed_version.is_some(), "{id}: {p:?}");
    }
    assert_eq!(containers(&docker, &node.prefix).await.len(), 2);
    let log = serve.log().join("\n");
    for id in &ids {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("{id}.json")) && l.contains("corrupt state file"))
            .unwrap_or_else(|| panic!("no clear error for {id} in the log:\n{log}"));
        assert!(line.contains("using last good copy"), "{line}");
        assert!(line.contains("WARN") || line.contains("ERROR"), "{line}");
        println!("{line}");
    }
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {}", path.display());
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem holding `dir` with one file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    for _ in 0..100_000 {
        if f.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = f.sync_all();
    path
}

/// `data_dir` on a 1 MiB tmpfs that fills up: the stop's state write fails cleanly, the
/// API says "no space", the previous state file stays readable, and once space is freed
/// the next operation persists again.
#[actix_web::test]
async fn a_full_data_dir_fails_the_write_cleanly_and_recovers() {
    common::connect(&common::docker_host()).await;
    let node = Node::new("full");
    let id = node.app(
        "app",
        SLEEPER,
        "  network: none\n  restart: always\n  volumes: [\"data:/data\"]\n",
        "",
    );
    let data = node.dir.path().join("data");
    let _tmpfs = Tmpfs::mount(&data, "1m");
    let (serve, mut c) = serve_running(&node, &id, &common::docker_host()).await;
    let before = std::fs::read(data.join("state").join(format!("{id}.json"))).unwrap();

    let filler = fill(&data);
    // The owner's wish cannot be stored, so the stop is refused with the reason (an
    // app stopped without the disk knowing would start again at the next boot).
    let refused = c.call("package.stop", json!({ "id": id })).await;
    let op = match &refused {
        Err(archipelago::ctl::CtlError::Rpc { code, message }) => {
            assert_eq!(*code, -32000, "{message}");
            json!({ "error": message })
        }
        other => panic!("stop on a full disk was not refused: {other:?}"),
    };
    let p = package(&mut c, &id).await;
    assert_eq!(p.state, AppState::Running, "the app was stopped anyway");
    let said = format!(
        "{} {}",
        op["error"],
        p.last_error.clone().unwrap_or_default()
    );
    println!("stop on a full disk: {op}; last_error {:?}", p.last_error);
    let logged: Vec<String> = serve
        .log()
        .join("\n")
        .lines()
        .filter(|l| l.contains("persist"))
        .map(str::to_string)
        .collect();
    assert!(
        said.to_lowercase().contains("no space"),
        "the API does not report the full disk: operation {op}, last_error {:?}; log:\n{}",
        p.last_error,
        logged.join("\n")
    );
    // The file on disk is the previous state, whole, and loads without a warning.
    let after = std::fs::read(data.join("state").join(format!("{id}.json"))).unwrap();
    assert_eq!(after, before, "state file changed by a failed write");
    let loaded = Store::open(&data).unwrap().load(&id).unwrap().unwrap();
    assert!(loaded.warning.is_none(), "{:?}", loaded.warning);
    assert_eq!(loaded.record.desired, Desired::Running);
    assert!(!data.join("state").join(format!("{id}.json.tmp")).exists());

    // Space back: the next operation persists, and the error goes away.
    std::fs::remove_file(&filler).unwrap();
    let op = operate(&mut c, "package.start", json!({ "id": id })).await;
    assert_eq!(op["status"], "succeeded", "{op}");
    let p = settle(&mut c, &id, Duration::from_secs(20)).await;
    assert_eq!(p.state, AppState::Running);
    let op = operate(&mut c, "package.stop", json!({ "id": id })).await;
    assert_eq!(op["status"], "succeeded", "{op}");
    let loaded = Store::open(&data).unwrap().load(&id).unwrap().unwrap();
    assert_eq!(loaded.record.desired, Desired::Stopped, "not persisted");
    let p = package(&mut c, &id).await;
    assert!(
        !p.last_error.unwrap_or_default().contains("no space"),
        "stale full-disk error"
    );
    drop(serve);
}

/// An upgrade whose volume snapshot would not fit on the disk is refused with the
/// figures before anything is touched: the app keeps running, never stopped, on its
/// version, and its data is as it was.
#[actix_web::test]
async fn an_upgrade_whose_snapshot_would_not_fit_is_refused_and_the_app_runs_on() {
    let docker = common::connect(&common::docker_host()).await;
    let node = Node::new("nospace");
    let id = node.app(
        "app",
        SLEEPER,
        "  network: none\n  volumes: [\"data:/data\"]\n",
        "",
    );
    let data = node.dir.path().join("data");
    let _tmpfs = Tmpfs::mount(&data, "96m");
    let (serve, mut c) = serve_running(&node, &id, &common::docker_host()).await;
    // 60 MiB of data on a 96 MiB disk: a copy cannot fit.
    let blob = data.join("apps").join(&id).join("data").join("blob");
    std::fs::write(&blob, vec![7u8; 60 << 20]).unwrap();
    let started = |docker: bollard::Docker, id: String| async move {
        docker
            .inspect_container(
                &format!("archipelago-{id}"),
                None::<InspectContainerOptions>,
            )
            .await
            .unwrap()
            .state
            .unwrap()
            .started_at
    };
    let before = started(docker.clone(), id.clone()).await;
    // Version 2 is the loopback registry's copy of the same busybox.
    let manifest = node.apps_dir().join(&id).join("manifest.yml");
    let text = std::fs::read_to_string(&manifest).unwrap().replace(
        &format!(
            "version: \"1\"\ncontainer:\n  image: {}",
            common::BUSYBOX_IMAGE
        ),
        &format!(
            "version: \"2\"\ncontainer:\n  image: {}/archipelago-test/busybox:1",
            common::registry()
        ),
    );
    std::fs::write(&manifest, text).unwrap();
    c.call("catalog.reload", Value::Null).await.unwrap();
    let op = operate(&mut c, "package.upgrade", json!({ "id": id })).await;
    assert_eq!(op["status"], "failed", "{op}");
    let error = op["error"].as_str().unwrap_or_default();
    println!("upgrade refused: {error}");
    assert!(
        error.contains("not enough free space for the snapshot of data: it needs 60.0 MiB and")
            && error.contains(" is free on "),
        "{op}"
    );
    let p = package(&mut c, &id).await;
    assert_eq!(p.state, AppState::Running);
    assert_eq!(p.installed_version.as_deref(), Some("1"));
    assert_eq!(
        started(docker, id.clone()).await,
        before,
        "the app was stopped or restarted"
    );
    assert_eq!(std::fs::metadata(&blob).unwrap().len(), 60 << 20);
    let snapshots = data.join("snapshots").join(&id);
    let left = std::fs::read_dir(&snapshots)
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "no partial snapshot");
    drop(serve);
}

/// A private dockerd under a temp dir, stopped (SIGTERM) when dropped.
struct PrivateDocker {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateDocker {
    fn new() -> PrivateDocker {
        let dir = tempfile::Builder::new()
            .prefix("afd")
            .tempdir_in("/tmp")
            .unwrap();
        PrivateDocker { dir, child: None }
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("d.sock")
    }

    fn host(&self) -> String {
        format!("unix://{}", self.sock().display())
    }

    /// Starts dockerd with the test engine's flags and waits (at most 60 s) until it answers.
    async fn start(&mut self) -> bollard::Docker {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("dockerd.log"))
            .unwrap();
        // A config of its own: the system dockerd's /etc/docker/daemon.json may set what
        // the flags set, and dockerd refuses to start then. Its own containerd namespaces
        // too, so nothing is shared with a system dockerd.
        let config = d.join("daemon.json");
        std::fs::write(&config, "{}\n").unwrap();
        let child = Command::new("dockerd")
            .args([
                "--iptables=false",
                "--ip-forward=false",
                "--bridge=none",
                "--storage-driver=overlay2",
                "--shutdown-timeout=2",
                "--containerd-namespace=archipelago-faults",
                "--containerd-plugins-namespace=archipelago-faults-plugins",
            ])
            .arg("--config-file")
            .arg(&config)
            .arg("-H")
            .arg(self.host())
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("d.pid"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(docker) = bollard::Docker::connect_with_unix(
                &self.sock().to_string_lossy(),
                10,
                bollard::API_DEFAULT_VERSION,
            ) {
                if docker.ping().await.is_ok() {
                    return docker.negotiate_version().await.unwrap();
                }
            }
            assert!(
                Instant::now() < deadline,
                "private dockerd never answered; log:\n{}",
                std::fs::read_to_string(d.join("dockerd.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then waits (at most 30 s, then SIGKILL) for dockerd to exit.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PrivateDocker {
    fn drop(&mut self) {
        self.stop();
        // Leftover mounts under the data root, if any, would keep the temp dir from going.
        let _ = Command::new("umount")
            .arg("-R")
            .arg(self.dir.path().join("data"))
            .stderr(Stdio::null())
            .status();
    }
}

/// Copies the test image from the shared engine into `to` (export, then load).
async fn copy_image(from: &bollard::Docker, to: &bollard::Docker) {
    let mut tar = Vec::new();
    let mut export = from.export_image(common::BUSYBOX_IMAGE);
    while let Some(chunk) = export.next().await {
        tar.extend_from_slice(&chunk.unwrap());
    }
    let opts = ImportImageOptionsBuilder::new().quiet(true).build();
    let mut load = to.import_image(opts, bollard::body_full(tar.into()), None);
    while let Some(item) = load.next().await {
        let info = item.unwrap();
        assert!(info.error_detail.is_none(), "load: {info:?}");
    }
}

async fn engine_reachable(c: &mut RpcClient) -> bool {
    let s = c.call("server.status", Value::Null).await.unwrap();
    s["engine"]["reachable"].as_bool().unwrap()
}

/// The engine (a private dockerd) restarted under a running supervisor: `server.status`
/// says unreachable while it is down, and once it is back the supervisor reconnects and
/// starts the app that the engine's restart stopped.
#[actix_web::test]
async fn the_engine_restarted_under_the_supervisor_gets_its_app_back() {
    let shared = common::connect(&common::docker_host()).await;
    let mut engine = PrivateDocker::new();
    let docker = engine.start().await;
    copy_image(&shared, &docker).await;

    let node = Node::new("eng");
    let id = node.app(
        "app",
        "while true; do sleep 1 & wait $!; done",
        "  network: none\n  stop_timeout: 1s\n",
        "",
    );
    let (serve, mut c) = serve_running(&node, &id, &engine.host()).await;
    assert!(engine_reachable(&mut c).await);
    let name = format!("archipelago-{id}");
    let started_before = docker
        .inspect_container(&name, None::<InspectContainerOptions>)
        .await
        .unwrap()
        .state
        .unwrap()
        .started_at;

    let down = Instant::now();
    engine.stop();
    let stopped_in = down.elapsed();
    let gone = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(15);
    while engine_reachable(&mut c).await {
        assert!(Instant::now() < deadline, "engine.reachable stayed true");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen_down = gone.elapsed();

    let up = Instant::now();
    let docker = engine.start().await;
    let engine_up = up.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut reachable_after = None;
    loop {
        if reachable_after.is_none() && engine_reachable(&mut c).await {
            reachable_after = Some(up.elapsed());
        }
        let running = docker
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
            .ok()
            .and_then(|c| c.state)
            .filter(|s| s.running == Some(true) && s.started_at != started_before)
            .is_some();
        let p = package(&mut c, &id).await;
        if running && p.state == AppState::Running && reachable_after.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "app not back within 60 s after the engine restart: {p:?}; supervisor log:\n{}",
            serve.log().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let back = up.elapsed();
    let p = settle(&mut c, &id, Duration::from_secs(20)).await;
    assert_eq!(p.state, AppState::Running);
    println!(
        "dockerd stopped in {stopped_in:?}; unreachable reported {seen_down:?} after it exited; \
         dockerd answered {engine_up:?} after start; reachable again after {:?}; app running \
         again {back:?} after the engine start",
        reachable_after.unwrap_or_default()
    );
    drop(serve);
    let rm = RemoveContainerOptionsBuilder::new().force(true).build();
    let _ = docker.remove_container(&name, Some(rm)).await;
}
