//! The actor core against a real engine: the seed bug (a slow stop owns `stopping`),
//! crash detection, live memory updates, dependency order, and adoption on restart.

mod common;

use common::node::{cgroup_memory_limit, inspect, package, wait_state, Node};
use common::serve::{Served, TestNode};

use std::time::{Duration, Instant};

use archipelago::api::{AppState, OperationKind, OperationStatus};
use archipelago::supervisor::{GetOperation, ListPackages, ReloadCatalog, RunOperation};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The seed bug: with a 200 ms tick, an app whose stop takes 8 s reads `stopping` on
/// every 100 ms poll until it is `stopped`, and the answers stay fast meanwhile.
#[actix_web::test]
async fn a_slow_stop_owns_stopping_until_it_ends() {
    common::connect(&common::docker_host()).await;
    let node = Node::new("slow");
    let cmd = "trap 'sleep 8; exit 0' TERM; while true; do sleep 1 & wait $!; done";
    let id = node.app("lnd", cmd, "  network: none\n  stop_timeout: 30s\n", "");
    let sup = node.start(&node.config(std::slice::from_ref(&id), ""));
    wait_state(&sup, &id, AppState::Running, Duration::from_secs(60)).await;

    let op = sup
        .send(RunOperation {
            id: id.clone(),
            kind: OperationKind::Stop,
            purge: false,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(op.status, OperationStatus::Running);
    let began = Instant::now();
    let mut latencies = vec![];
    let mut polls = 0;
    loop {
        let t = Instant::now();
        let p = package(&sup, &id).await;
        let list = sup.send(ListPackages).await.unwrap();
        latencies.push(t.elapsed());
        assert!(list.iter().any(|p| p.id == id));
        polls += 1;
        if p.state == AppState::Stopped {
            break;
        }
        assert_eq!(
            p.state,
            AppState::Stopping,
            "poll {polls} at {:?}",
            began.elapsed()
        );
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "stop never ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = began.elapsed();
    latencies.sort();
    println!(
        "stop took {took:?}; {polls} polls all read stopping; status latency p50 {:?} p99 {:?} max {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap()
    );
    assert!(
        took >= Duration::from_secs(7),
        "the stop was not slow: {took:?}"
    );
    assert!(polls >= 60, "only {polls} polls");
    assert!(percentile(&latencies, 0.99) < Duration::from_millis(50));
    let done = sup
        .send(GetOperation { id: op.id.clone() })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.status, OperationStatus::Succeeded);
    // And it stays stopped through further ticks.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(package(&sup, &id).await.state, AppState::Stopped);
}

/// A container killed from outside is back `running` within 3 s.
#[actix_web::test]
async fn a_container_killed_from_outside_comes_back() {
    let docker = common::connect(&common::docker_host()).await;
    let node = Node::new("kill");
    let id = node.app(
        "app",
        "while true; do sleep 1 & wait $!; done",
        "  network: none\n  restart: always\n",
        "",
    );
    let sup = node.start(&node.config(std::slice::from_ref(&id), ""));
    wait_state(&sup, &id, AppState::Running, Duration::from_secs(60)).await;
    let before = inspect(&id).await;
    docker
        .kill_container(
            &format!("archipelago-{id}"),
            None::<bollard::query_parameters::KillContainerOptions>,
        )
        .await
        .unwrap();
    let killed = Instant::now();
    loop {
        let c = inspect(&id).await;
        let st = c.state.unwrap();
        if st.running == Some(true) && st.started_at != before.state.as_ref().unwrap().started_at {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(3),
            "not running again within 3 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("back running {:?} after the kill", killed.elapsed());
    wait_state(&sup, &id, AppState::Running, Duration::from_secs(3)).await;
}

/// A running app whose manifest memory is about to change: its node, supervisor, id, the
/// manifest's path and the container as it was before the change.
struct MemoryCase {
    _node: Node,
    sup: actix::Addr<archipelago::supervisor::Supervisor>,
    id: String,
    manifest: std::path::PathBuf,
    before: bollard::models::ContainerInspectResponse,
}

async fn running_64mib_app(tag: &str) -> MemoryCase {
    common::connect(&common::docker_host()).await;
    let node = Node::new(tag);
    let id = node.app(
        "app",
        "while true; do sleep 1 & wait $!; done",
        "  network: none\n",
        "",
    );
    let sup = node.start(&node.config(std::slice::from_ref(&id), ""));
    wait_state(&sup, &id, AppState::Running, Duration::from_secs(60)).await;
    assert_eq!(cgroup_memory_limit(&id).await, 64 * 1024 * 1024);
    MemoryCase {
        manifest: node.apps_dir().join(&id).join("manifest.yml"),
        before: inspect(&id).await,
        _node: node,
        sup,
        id,
    }
}

impl MemoryCase {
    /// Rewrites the manifest's `64MiB` as `to`.
    fn edit(&self, to: &str) {
        let text = std::fs::read_to_string(&self.manifest)
            .unwrap()
            .replace("64MiB", to);
        std::fs::write(&self.manifest, text).unwrap();
    }

    /// Waits until the kernel enforces `bytes`, then checks the container was neither
    /// recreated nor restarted.
    async fn applied_live(&self, bytes: u64, within: Duration, what: &str) {
        let deadline = Instant::now() + within;
        while cgroup_memory_limit(&self.id).await != bytes {
            assert!(Instant::now() < deadline, "{what}: limit not applied");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let now = inspect(&self.id).await;
        assert_eq!(now.id, self.before.id, "{what}: recreated");
        assert_eq!(
            now.state.unwrap().started_at,
            self.before.state.as_ref().unwrap().started_at,
            "{what}: restarted"
        );
    }
}

/// A manifest memory change is applied live: new limit, same start time.
#[actix_web::test]
async fn a_memory_change_is_applied_live() {
    let case = running_64mib_app("mem").await;
    case.edit("96MiB");
    case.sup.send(ReloadCatalog).await.unwrap().unwrap();
    case.applied_live(96 * 1024 * 1024, Duration::from_secs(5), "catalog.reload")
        .await;
}

/// An edit of a manifest on disk is picked up without `catalog.reload`: the supervisor
/// sees `apps_dir` change at its next tick and applies the new memory limit live.
#[actix_web::test]
async fn a_manifest_edited_on_disk_is_reloaded_by_itself() {
    let case = running_64mib_app("disk").await;
    // Same length as before: a size check alone would miss it.
    case.edit("80MiB");
    let edited = Instant::now();
    case.applied_live(80 * 1024 * 1024, Duration::from_secs(5), "edit on disk")
        .await;
    println!(
        "edit on disk applied {:?} after the write",
        edited.elapsed()
    );
    assert_eq!(
        package(&case.sup, &case.id).await.memory_limit_bytes,
        80 * 1024 * 1024
    );
}

/// A chain of three apps boots in dependency order: each starts only after the one it
/// depends on is running and healthy.
#[actix_web::test]
async fn a_dependency_chain_boots_in_order() {
    common::connect(&common::docker_host()).await;
    let node = Node::new("chain");
    let port = |n: u16| 20000 + (std::process::id() % 20000) as u16 + n;
    let (pa, pb) = (port(0), port(1));
    // Each app serves HTTP after a short delay, so "running" and "healthy" differ.
    let web = |p: u16| {
        format!(
            "sleep 1; mkdir -p /www; echo ok > /www/index.html; httpd -f -p 127.0.0.1:{p} -h /www"
        )
    };
    let health = |p: u16| {
        format!("  network: host\n  health:\n    http: {{port: {p}, path: /}}\n    interval: 200ms\n    retries: 3\n    start_period: 10s\n")
    };
    let a = node.app("a", &web(pa), &health(pa), "");
    let b = node.app(
        "b",
        &web(pb),
        &health(pb),
        &format!("dependencies: [{a}]\n"),
    );
    let c = node.app(
        "c",
        "while true; do sleep 1 & wait $!; done",
        "  network: none\n",
        &format!("dependencies: [{b}]\n"),
    );
    // Listed in reverse on purpose: order comes from dependencies, not the list.
    let sup = node.start(&node.config(&[c.clone(), b.clone(), a.clone()], ""));
    for id in [&a, &b, &c] {
        wait_state(&sup, id, AppState::Running, Duration::from_secs(60)).await;
    }
    let started = |i: &bollard::models::ContainerInspectResponse| {
        i.state.as_ref().unwrap().started_at.clone().unwrap()
    };
    let (ia, ib, ic) = (inspect(&a).await, inspect(&b).await, inspect(&c).await);
    // RFC 3339 with the same zone sorts as text.
    assert!(
        started(&ia) < started(&ib),
        "a {} b {}",
        started(&ia),
        started(&ib)
    );
    assert!(
        started(&ib) < started(&ic),
        "b {} c {}",
        started(&ib),
        started(&ic)
    );
    // b waited for a's health (a needs >= 1 s to serve).
    let ms = |s: String| humantime::parse_rfc3339(&format!("{}Z", &s[..23])).unwrap();
    let gap = ms(started(&ib)).duration_since(ms(started(&ia))).unwrap();
    println!("a→b start gap {gap:?}");
    assert!(
        gap >= Duration::from_millis(900),
        "b started {gap:?} after a: before a was healthy"
    );
}

/// Starting an app whose dependency is down answers -32003 naming it.
#[actix_web::test]
async fn starting_with_a_dependency_down_is_refused() {
    common::connect(&common::docker_host()).await;
    let node = Node::new("dep");
    let a = node.app(
        "a",
        "while true; do sleep 1 & wait $!; done",
        "  network: none\n",
        "",
    );
    let b = node.app(
        "b",
        "while true; do sleep 1 & wait $!; done",
        "  network: none\n",
        &format!("dependencies: [{a}]\n"),
    );
    let sup = node.start(&node.config(&[], ""));
    wait_state(&sup, &b, AppState::NotInstalled, Duration::from_secs(5)).await;
    let err = sup
        .send(RunOperation {
            id: b.clone(),
            kind: OperationKind::Install,
            purge: false,
        })
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.rpc_code(), -32003);
    assert!(err.to_string().contains(&a), "{err}");
}

/// Issue 22: an app that exits 1 at once is given up as `failed`; `serve` is killed with
/// SIGKILL and started again; for the next 10 s the app is still `failed` with its error
/// and its container was not started again; `package.start` then starts it.
#[actix_web::test]
async fn a_failed_app_stays_failed_across_a_kill_9_of_serve() {
    common::connect(&common::docker_host()).await;
    let node = Node::new("gaveup");
    let id = node.app("app", "exit 1", "  network: none\n", "");
    let served = Served::new(&node, std::slice::from_ref(&id));
    let get = |within: Duration| {
        let deadline = Instant::now() + within;
        let (served, id) = (&served, &id);
        async move {
            loop {
                if let Some(p) = served.ctl(&["get", id]) {
                    return p;
                }
                assert!(Instant::now() < deadline, "{id}: supervisor never answered");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let started_at = |c: bollard::models::ContainerInspectResponse| {
        let st = c.state.unwrap();
        (st.started_at, st.running)
    };

    let mut first = TestNode::start(&served.config);
    // The default policy: restarted at once, then after 1, 2 and 4 s; the fifth quick
    // crash gives up.
    let deadline = Instant::now() + Duration::from_secs(90);
    let failed = loop {
        let p = get(Duration::from_secs(30)).await;
        if p["state"] == "failed" {
            break p;
        }
        assert!(Instant::now() < deadline, "never failed: {p}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let error = failed["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains("crashed 5 times"), "{failed}");
    let (before, running) = started_at(inspect(&id).await);
    assert_ne!(running, Some(true));

    first.kill9();
    let _second = TestNode::start(&served.config);
    let p = get(Duration::from_secs(30)).await;
    let watch = Instant::now();
    let mut polls = 0;
    let mut p = p;
    while watch.elapsed() < Duration::from_secs(10) {
        assert_eq!(p["state"], "failed", "after {:?}: {p}", watch.elapsed());
        assert_eq!(p["last_error"].as_str(), Some(error.as_str()), "{p}");
        let (now, running) = started_at(inspect(&id).await);
        assert_eq!(now, before, "started again after {:?}", watch.elapsed());
        assert_ne!(running, Some(true));
        polls += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
        p = get(Duration::from_secs(5)).await;
    }
    println!("still failed for 10 s after the restart ({polls} polls)");

    let op = served.ctl(&["start", &id]).expect("package.start");
    assert_eq!(op["operation"]["kind"], "start", "{op}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while started_at(inspect(&id).await).0 == before {
        assert!(Instant::now() < deadline, "package.start did not start it");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
