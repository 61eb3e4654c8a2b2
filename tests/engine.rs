//! The engine layer against both real engines, Docker and Podman.
//!
//! Every test runs its scenario on each engine of `common::engines()` and names the engine
//! in its assertion messages. Containers use network `none` and unique names; a guard
//! removes what a test created even when it fails.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use archipelago::engine::{
    container_name, BuildRequest, ContainerRuntime, ContainerSpec, DockerRuntime, EngineError,
    EngineErrorKind, Progress, RunState, LABEL_APP,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, KillContainerOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, StartContainerOptions,
};
use futures_util::StreamExt;

use common::{BUSYBOX_IMAGE, SETUP_COMMAND};

const MIB: u64 = 1024 * 1024;

/// Our runtime on `host`, or a panic naming the set-up command.
async fn runtime(engine: &str, host: &str) -> DockerRuntime {
    // The plain client's ping gives the standard "start it with" message.
    common::connect(host).await;
    DockerRuntime::connect(host).await.unwrap_or_else(|e| {
        panic!("{engine}: cannot connect at {host} ({e}); start it with `{SETUP_COMMAND}`")
    })
}

/// Asserts that `err` is of `kind`, naming the engine and the error.
fn assert_kind(engine: &str, err: &EngineError, kind: EngineErrorKind) {
    assert_eq!(err.kind(), kind, "{engine}: {err}");
}

/// Removes the containers and images a test made, on drop, even after a failed assert.
struct Cleanup {
    host: String,
    containers: Vec<String>,
    images: Vec<String>,
}

impl Cleanup {
    fn new(host: &str) -> Self {
        Cleanup {
            host: host.to_string(),
            containers: Vec::new(),
            images: Vec::new(),
        }
    }

    fn container(&mut self, name: &str) {
        self.containers.push(name.to_string());
    }

    fn image(&mut self, name: &str) {
        self.images.push(name.to_string());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let host = self.host.clone();
        let containers = std::mem::take(&mut self.containers);
        let images = std::mem::take(&mut self.images);
        // A runtime of its own on a thread of its own: drop may run inside the test's
        // runtime, which cannot be blocked on.
        let job = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            rt.block_on(async move {
                let docker = common::connect(&host).await;
                for c in containers {
                    let opts = RemoveContainerOptionsBuilder::new().force(true).build();
                    let _ = docker.remove_container(&c, Some(opts)).await;
                }
                for i in images {
                    let opts = RemoveImageOptionsBuilder::new().force(true).build();
                    let _ = docker.remove_image(&i, Some(opts), None).await;
                }
            });
        });
        let _ = job.join();
    }
}

fn spec(app: &str, command: &str) -> ContainerSpec {
    ContainerSpec {
        app: app.to_string(),
        version: "1".to_string(),
        image: BUSYBOX_IMAGE.to_string(),
        env: BTreeMap::from([("ARCHIPELAGO_TEST".to_string(), "1".to_string())]),
        command: Some(vec!["sh".into(), "-c".into(), command.to_string()]),
        entrypoint: None,
        user: None,
        ports: vec![],
        binds: vec![],
        network: "none".to_string(),
        memory_limit: 64 * MIB,
        stop_timeout: Duration::from_secs(2),
        cap_add: vec![],
        cap_drop: vec![],
        pids_limit: 4096,
        group_add: vec![],
    }
}

/// Creates and starts the app's container, registering it for cleanup. Returns its name.
async fn run(
    rt: &DockerRuntime,
    guard: &mut Cleanup,
    engine: &str,
    spec: &ContainerSpec,
) -> String {
    let name = container_name(&spec.app);
    guard.container(&name);
    rt.create(spec)
        .await
        .unwrap_or_else(|e| panic!("{engine}: create {name}: {e}"));
    rt.start(&name)
        .await
        .unwrap_or_else(|e| panic!("{engine}: start {name}: {e}"));
    name
}

/// Polls `inspect` until the container has exited, for at most `limit`.
async fn wait_exited(rt: &DockerRuntime, engine: &str, name: &str, limit: Duration) {
    let t0 = Instant::now();
    loop {
        let d = rt
            .inspect(name)
            .await
            .unwrap_or_else(|e| panic!("{engine}: {e}"));
        if !d.state.is_running() && d.state != RunState::Created {
            return;
        }
        assert!(
            t0.elapsed() < limit,
            "{engine}: {name} still {:?} after {limit:?}",
            d.state
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn version_is_negotiated() {
    for (engine, host) in common::engines() {
        let rt = runtime(engine, &host).await;
        let v = rt
            .version()
            .await
            .unwrap_or_else(|e| panic!("{engine}: {e}"));
        println!("{engine}: version {} api {}", v.version, v.api_version);
        assert!(!v.version.is_empty(), "{engine}: empty version");
        assert!(
            v.api_version.starts_with("1."),
            "{engine}: api {}",
            v.api_version
        );
        assert_eq!(rt.host(), host, "{engine}");
    }
}

#[tokio::test]
async fn memory_limit_is_applied_and_listed() {
    for (engine, host) in common::engines() {
        let rt = runtime(engine, &host).await;
        let mut guard = Cleanup::new(&host);
        let s = spec(&common::unique("mem"), "sleep 60");
        let name = run(&rt, &mut guard, engine, &s).await;
        let d = rt
            .inspect(&name)
            .await
            .unwrap_or_else(|e| panic!("{engine}: {e}"));
        assert_eq!(d.memory_limit, 67_108_864, "{engine}: memory limit");
        assert_eq!(d.state, RunState::Running, "{engine}: state");
        assert_eq!(d.name, name, "{engine}: name");
        assert_eq!(d.labels.get(LABEL_APP), Some(&s.app), "{engine}: app label");
        assert!(d.started_at.is_some(), "{engine}: started_at");
        let list = rt.list().await.unwrap_or_else(|e| panic!("{engine}: {e}"));
        let ours = list
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("{engine}: {name} not listed"));
        assert_eq!(ours.app, s.app, "{engine}");
        assert_eq!(
            ours.spec_hash.as_deref(),
            Some(s.hash().as_str()),
            "{engine}"
        );
        assert_eq!(ours.version.as_deref(), Some("1"), "{engine}");
        assert_eq!(ours.state, RunState::Running, "{engine}");
        assert_eq!(ours.id, d.id, "{engine}");
        rt.remove(&name)
            .await
            .unwrap_or_else(|e| panic!("{engine}: {e}"));
        let err = rt.inspect(&name).await.expect_err("removed");
        assert_kind(engine, &err, EngineErrorKind::ContainerNotFound);
    }
}

#[tokio::test]
async fn stop_kills_after_the_timeout() {
    for (engine, host) in common::engines() {
        let rt = runtime(engine, &host).await;
        let mut guard = Cleanup::new(&host);
        // SIGTERM ignored (an ignored disposition survives the exec of sleep), so only
        // the SIGKILL after the grace period ends it.
        let s = spec(&common::unique("stop"), "trap '' TERM; sleep 60");
        let name = run(&rt, &mut guard, engine, &s).await;
        // Let the shell install its trap.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t0 = Instant::now();
        rt.stop(&name, Duration::from_secs(2))
            .await
            .unwrap_or_else(|e| panic!("{engine}: stop: {e}"));
        let took = t0.elapsed();
        println!("{engine}: stop with 2s timeout took {took:?}");
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
            "{engine}: stop took {took:?}"
        );
        let d = rt
            .inspect(&name)
            .await
            .unwrap_or_else(|e| panic!("{engine}: {e}"));
        assert_eq!(d.state, RunState::Exited, "{engine}: state");
        assert_eq!(d.exit_code, Some(137), "{engine}: exit code");
        assert!(d.finished_at.is_some(), "{engine}: finished_at");
        // Stopping a stopped container is not an error.
        rt.stop(&name, Duration::from_secs(2))
            .await
            .unwrap_or_else(|e| panic!("{engine}: second stop: {e}"));
    }
}

#[tokio::test]
async fn build_honours_dockerignore() {
    for (engine, host) in common::engines() {
        let rt = runtime(engine, &host).await;
        let mut guard = Cleanup::new(&host);
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = dir.path();
        std::fs::write(
            ctx.join("Dockerfile"),
            format!(
                "FROM {BUSYBOX_IMAGE}\nARG GREETING\nCOPY copied.txt /copied.txt\nCOPY . /ctx/\n"
            ),
        )
        .expect("write");
        std::fs::write(ctx.join(".dockerignore"), "ignored.txt\n").expect("write");
        std::fs::write(ctx.join("copied.txt"), "copied-content\n").expect("write");
        std::fs::write(ctx.join("ignored.txt"), "must not be sent\n").expect("write");
        let tag = format!("archipelago-test/{}:1", common::unique("build"));
        guard.image(&tag);
        let seen = Mutex::new(Vec::<Progress>::new());
        let sink = |p: Progress| seen.lock().expect("not poisoned").push(p);
        let req = BuildRequest {
            context: ctx.to_path_buf(),
            dockerfile: "Dockerfile".into(),
            args: BTreeMap::from([("GREETING".into(), "hi".into())]),
            tag: tag.clone(),
        };
        rt.build(&req, &sink)
            .await
            .unwrap_or_else(|e| panic!("{engine}: build: {e}"));
        let seen = seen.into_inner().expect("not poisoned");
        println!("{engine}: build gave {} progress lines", seen.len());
        assert!(!seen.is_empty(), "{engine}: no build progress");
        assert!(
            rt.image_inspect(&tag).await.expect("inspect").is_some(),
            "{engine}: built image absent"
        );

        let mut s = spec(&common::unique("built"), "sleep 60");
        s.image = tag.clone();
        let name = run(&rt, &mut guard, engine, &s).await;
        let out = rt
            .exec(
                &name,
                &["cat".into(), "/copied.txt".into()],
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|e| panic!("{engine}: exec: {e}"));
        assert_eq!(
            (out.exit_code, out.output.trim()),
            (0, "copied-content"),
            "{engine}: copied file"
        );
        let out = rt
            .exec(
                &name,
                &["ls".into(), "-a".into(), "/ctx".into()],
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|e| panic!("{engine}: exec: {e}"));
        assert!(
            out.output.contains("copied.txt"),
            "{engine}: /ctx: {}",
            out.output
        );
        assert!(
            !out.output.contains("ignored.txt"),
            "{engine}: ignored file sent: {}",
            out.output
        );

        // A failing build names the tag.
        std::fs::write(
            ctx.join("Dockerfile"),
            format!("FROM {BUSYBOX_IMAGE}\nCOPY nothere /x\n"),
        )
        .expect("write");
        let bad_tag = format!("archipelago-test/{}:1", common::unique("badbuild"));
        guard.image(&bad_tag);
        let req = BuildRequest {
            tag: bad_tag.clone(),
            ..req
        };
        let err = rt.build(&req, &|_| {}).await.expect_err("bad build");
        assert_kind(engine, &err, EngineErrorKind::BuildFailed);
        assert!(err.to_string().contains(&bad_tag), "{engine}: {err}");
    }
}

#[tokio::test]
async fn pull_from_the_loopback_registry() {
    for (engine, host) in common::engines() {
        let rt = runtime(engine, &host).await;
        let image = format!("{}/archipelago-test/busybox:1", common::registry());
        if let Err(e) = rt.image_remove(&image).await {
            assert_eq!(
                e.kind(),
                EngineErrorKind::ImageNotFound,
                "{engine}: remove: {e}"
            );
        }
        assert!(
            rt.image_inspect(&image).await.expect("inspect").is_none(),
            "{engine}: {image} still present"
        );
        let seen = Mutex::new(Vec::<Progress>::new());
        let sink = |p: Progress| seen.lock().expect("not poisoned").push(p);
        rt.pull(&image, &sink)
            .await
            .unwrap_or_else(|e| panic!("{engine}: pull {image}: {e}"));
        let seen = seen.into_inner().expect("not poisoned");
        println!(
            "{engine}: pull gave {} progress lines, last {:?}",
            seen.len(),
            seen.last()
        );
        assert!(
            seen.iter()
                .any(|p| !p.message.is_empty() || p.total.is_some()),
            "{engine}: no pull progress"
        );
        let info = rt.image_inspect(&image).await.expect("inspect");
        assert!(info.is_some(), "{engine}: pulled image absent");

        // A tag with a registry port, then its removal.
        let alias = format!(
            "{}/archipelago-test/{}:2",
            common::registry(),
            common::unique("alias")
        );
        rt.image_tag(&image, &alias)
            .await
            .unwrap_or_else(|e| panic!("{engine}: tag: {e}"));
        let info = rt.image_inspect(&alias).await.expect("inspect");
        assert!(
            info.as_ref().is_some_and(|i| i.tags.contains(&alias)),
            "{engine}: alias tags {info:?}"
        );
        rt.image_remove(&alias)
            .await
            .unwrap_or_else(|e| panic!("{engine}: remove alias: {e}"));
        assert!(
            rt.image_inspect(&alias).await.expect("inspect").is_none(),
            "{engine}"
        );
    }
}

#[tokio::test]
async fn pull_of_a_missing_image_names_it() {
    for (engine, host) in common::engines() {
        let rt = runtime(engine, &host).await;
        let image = format!(
            "{}/archipelago-test/{}:1",
            common::registry(),
            common::unique("nonexistent")
        );
        let err = rt.pull(&image, &|_| {}).await.expect_err("missing image");
        println!("{engine}: missing pull: {err}");
        assert!(
            matches!(
                err.kind(),
                EngineErrorKind::ImageNotFound | EngineErrorKind::PullFailed
            ),
            "{engine}: {err}"
        );
        assert!(err.to_string().contains(&image), "{engine}: {err}");
    }
}

#[tokio::test]
async fn error_kinds() {
    for (engine, host) in common::engines() {
        let rt = runtime(engine, &host).await;
        let mut guard = Cleanup::new(&host);
        let err = rt
            .inspect("archipelago-no-such-container")
            .await
            .expect_err("missing");
        assert_kind(engine, &err, EngineErrorKind::ContainerNotFound);
        let err = rt
            .stop("archipelago-no-such-container", Duration::from_secs(1))
            .await
            .expect_err("missing");
        assert_kind(engine, &err, EngineErrorKind::ContainerNotFound);
        let err = rt
            .remove("archipelago-no-such-container")
            .await
            .expect_err("missing");
        assert_kind(engine, &err, EngineErrorKind::ContainerNotFound);

        let s = spec(&common::unique("dup"), "sleep 60");
        guard.container(&container_name(&s.app));
        rt.create(&s)
            .await
            .unwrap_or_else(|e| panic!("{engine}: {e}"));
        let err = rt.create(&s).await.expect_err("duplicate");
        assert_kind(engine, &err, EngineErrorKind::NameConflict);

        let mut s = spec(&common::unique("noimage"), "true");
        s.image = "archipelago-test/no-such-image:1".into();
        guard.container(&container_name(&s.app));
        let err = rt.create(&s).await.expect_err("no image");
        assert_kind(engine, &err, EngineErrorKind::ImageNotFound);
        assert!(err.to_string().contains(&s.image), "{engine}: {err}");

        assert!(
            rt.image_inspect("archipelago-test/no-such-image:1")
                .await
                .expect("inspect")
                .is_none(),
            "{engine}"
        );
        let err = rt
            .image_remove("archipelago-test/no-such-image:1")
            .await
            .expect_err("missing");
        assert_kind(engine, &err, EngineErrorKind::ImageNotFound);
    }
}

#[tokio::test]
async fn die_event_arrives_within_a_second() {
    for (engine, host) in common::engines() {
        let rt = runtime(engine, &host).await;
        let plain = common::connect(&host).await;
        let mut guard = Cleanup::new(&host);
        let mut events = rt.events();
        let s = spec(&common::unique("die"), "sleep 60");
        let name = run(&rt, &mut guard, engine, &s).await;
        let id = rt.inspect(&name).await.expect("inspect").id;
        // Wait for our start: the stream is live from here on.
        let started = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(ev) = events.next().await {
                let ev = ev.unwrap_or_else(|e| panic!("{engine}: event error {e}"));
                if ev.container_id == id && ev.action == "start" {
                    return;
                }
            }
            panic!("{engine}: event stream ended");
        })
        .await;
        assert!(started.is_ok(), "{engine}: no start event in 10s");

        let opts = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
        let t0 = Instant::now();
        plain
            .kill_container(&name, Some(opts))
            .await
            .unwrap_or_else(|e| panic!("{engine}: plain kill: {e}"));
        let die = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(ev) = events.next().await {
                let ev = ev.unwrap_or_else(|e| panic!("{engine}: event error {e}"));
                if ev.container_id == id && ev.action == "die" {
                    return ev;
                }
            }
            panic!("{engine}: event stream ended");
        })
        .await
        .unwrap_or_else(|_| panic!("{engine}: no die event in 5s"));
        let latency = t0.elapsed();
        println!(
            "{engine}: die event latency {latency:?}, exit code {:?}",
            die.exit_code
        );
        assert!(
            latency < Duration::from_secs(1),
            "{engine}: die after {latency:?}"
        );
        assert_eq!(die.app, s.app, "{engine}");
        assert_eq!(die.exit_code, Some(137), "{engine}: die exit code");
    }
}

#[tokio::test]
async fn exec_returns_exit_code_and_output() {
    for (engine, host) in common::engines() {
        let rt = runtime(engine, &host).await;
        let mut guard = Cleanup::new(&host);
        let s = spec(&common::unique("exec"), "sleep 60");
        let name = run(&rt, &mut guard, engine, &s).await;
        let cmd = ["sh", "-c", "echo to-out; echo to-err >&2; exit 3"].map(String::from);
        let out = rt
            .exec(&name, &cmd, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{engine}: exec: {e}"));
        assert_eq!(out.exit_code, 3, "{engine}: exit code");
        assert!(
            out.output.contains("to-out"),
            "{engine}: output {:?}",
            out.output
        );
        assert!(
            out.output.contains("to-err"),
            "{engine}: output {:?}",
            out.output
        );

        let t0 = Instant::now();
        let err = rt
            .exec(
                &name,
                &["sleep".into(), "10".into()],
                Duration::from_millis(500),
            )
            .await
            .expect_err("times out");
        assert_kind(engine, &err, EngineErrorKind::Timeout);
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "{engine}: {:?}",
            t0.elapsed()
        );
    }
}

#[tokio::test]
async fn memory_is_updated_live() {
    for (engine, host) in common::engines() {
        let rt = runtime(engine, &host).await;
        let mut guard = Cleanup::new(&host);
        let s = spec(&common::unique("upd"), "sleep 60");
        let name = run(&rt, &mut guard, engine, &s).await;
        let before = rt.inspect(&name).await.expect("inspect");
        assert_eq!(before.memory_limit, 64 * MIB, "{engine}");
        rt.update_memory(&name, 128 * MIB)
            .await
            .unwrap_or_else(|e| panic!("{engine}: grow: {e}"));
        let after = rt.inspect(&name).await.expect("inspect");
        assert_eq!(after.memory_limit, 134_217_728, "{engine}: grown limit");
        assert_eq!(after.state, RunState::Running, "{engine}: state");
        assert_eq!(after.started_at, before.started_at, "{engine}: restarted");
        assert_eq!(
            cgroup_limit(&rt, engine, &name).await,
            128 * MIB,
            "{engine}: cgroup"
        );
        rt.update_memory(&name, 48 * MIB)
            .await
            .unwrap_or_else(|e| panic!("{engine}: shrink: {e}"));
        let after = rt.inspect(&name).await.expect("inspect");
        assert_eq!(after.memory_limit, 48 * MIB, "{engine}: shrunk limit");
        assert_eq!(after.started_at, before.started_at, "{engine}: restarted");
        assert_eq!(
            cgroup_limit(&rt, engine, &name).await,
            48 * MIB,
            "{engine}: cgroup"
        );
    }
}

/// The memory limit the kernel enforces on the container, read from inside it (cgroup v1
/// or v2): proof that the update reached the cgroup, whatever inspect says.
async fn cgroup_limit(rt: &DockerRuntime, engine: &str, name: &str) -> u64 {
    let cmd = [
        "sh",
        "-c",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
    ]
    .map(String::from);
    let out = rt
        .exec(name, &cmd, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{engine}: exec: {e}"));
    out.output
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{engine}: cgroup limit {:?}: {e}", out.output))
}

#[tokio::test]
async fn foreign_containers_are_invisible_and_untouched() {
    for (engine, host) in common::engines() {
        let rt = runtime(engine, &host).await;
        let plain = common::connect(&host).await;
        let mut guard = Cleanup::new(&host);
        let mut events = rt.events();

        let foreign = common::unique("foreign");
        guard.container(&foreign);
        let body = bollard::models::ContainerCreateBody {
            image: Some(BUSYBOX_IMAGE.to_string()),
            cmd: Some(vec!["sleep".into(), "60".into()]),
            labels: Some(std::collections::HashMap::from([(
                "io.example.other".to_string(),
                "x".to_string(),
            )])),
            host_config: Some(bollard::models::HostConfig {
                network_mode: Some("none".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::new().name(&foreign).build();
        let foreign_id = plain
            .create_container(Some(opts), body)
            .await
            .unwrap_or_else(|e| panic!("{engine}: plain create: {e}"))
            .id;
        plain
            .start_container(&foreign, None::<StartContainerOptions>)
            .await
            .unwrap_or_else(|e| panic!("{engine}: plain start: {e}"));

        // One of ours after it: events arrive in order, so once ours shows, the foreign
        // start has been filtered out (or wrongly let through).
        let s = spec(&common::unique("ours"), "sleep 60");
        let name = run(&rt, &mut guard, engine, &s).await;
        let ours_id = rt.inspect(&name).await.expect("inspect").id;
        let seen = tokio::time::timeout(Duration::from_secs(10), async {
            let mut seen = Vec::new();
            while let Some(ev) = events.next().await {
                let ev = ev.unwrap_or_else(|e| panic!("{engine}: event error {e}"));
                let done = ev.container_id == ours_id && ev.action == "start";
                seen.push(ev);
                if done {
                    return seen;
                }
            }
            panic!("{engine}: event stream ended");
        })
        .await
        .unwrap_or_else(|_| panic!("{engine}: no start event for ours in 10s"));
        assert!(
            seen.iter().all(|e| e.container_id != foreign_id),
            "{engine}: foreign container in events: {seen:?}"
        );

        let list = rt.list().await.expect("list");
        assert!(
            list.iter().all(|c| c.id != foreign_id && c.name != foreign),
            "{engine}: foreign container listed"
        );
        assert!(
            list.iter().any(|c| c.id == ours_id),
            "{engine}: ours not listed"
        );
        let f = plain
            .inspect_container(&foreign, None::<InspectContainerOptions>)
            .await
            .expect("inspect foreign");
        assert_eq!(
            f.state.and_then(|s| s.running),
            Some(true),
            "{engine}: foreign container not left running"
        );
    }
}

#[tokio::test]
async fn logs_tail_gives_the_last_lines() {
    for (engine, host) in common::engines() {
        let rt = runtime(engine, &host).await;
        let mut guard = Cleanup::new(&host);
        let s = spec(
            &common::unique("logs"),
            "echo err-line >&2; sleep 0.5; for i in 1 2 3 4 5 6 7 8 9 10; do echo line$i; done",
        );
        let name = run(&rt, &mut guard, engine, &s).await;
        wait_exited(&rt, engine, &name, Duration::from_secs(20)).await;
        // The engine may still be writing the last lines just after the exit.
        let t0 = Instant::now();
        loop {
            let all = rt.logs(&name, 100).await.expect("logs");
            if all.len() >= 11 {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{engine}: logs so far {all:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let lines = rt
            .logs(&name, 3)
            .await
            .unwrap_or_else(|e| panic!("{engine}: {e}"));
        assert_eq!(lines, vec!["line8", "line9", "line10"], "{engine}: tail 3");
        // stderr is in the logs too (written first: the two streams are copied apart, so
        // only a pause orders them).
        let all = rt.logs(&name, 100).await.expect("logs");
        assert_eq!(all.len(), 11, "{engine}: all lines {all:?}");
        assert_eq!(all[0], "err-line", "{engine}: all lines {all:?}");
    }
}

/// A container on a named network: create makes the network first (labelled as ours), and
/// a second ensure finds it. The container is never started: nothing crosses the network.
#[tokio::test]
async fn create_makes_a_named_network() {
    for (engine, host) in common::engines() {
        let rt = runtime(engine, &host).await;
        let docker = common::connect(&host).await;
        let network = common::unique("archipelago-net");
        let mut s = spec(&common::unique("net"), "sleep 30");
        s.network = network.clone();
        let created = rt.create(&s).await;
        let inspected = docker
            .inspect_network(
                &network,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await;
        let again = rt.ensure_network(&network).await;
        let _ = rt.remove(&container_name(&s.app)).await;
        let _ = docker.remove_network(&network).await;
        created.unwrap_or_else(|e| panic!("{engine}: create on {network}: {e}"));
        let labels = inspected
            .unwrap_or_else(|e| panic!("{engine}: network {network} missing: {e}"))
            .labels
            .unwrap_or_default();
        assert_eq!(
            labels
                .get(archipelago::engine::LABEL_NETWORK)
                .map(String::as_str),
            Some("true"),
            "{engine}"
        );
        assert!(!again.unwrap(), "{engine}: second ensure created it again");
    }
}

/// The digest the loopback registry holds for `repo:tag` (its `Docker-Content-Digest`).
fn registry_digest(repo: &str, tag: &str) -> String {
    use std::io::{Read, Write};
    let addr = common::registry().replace("localhost", "127.0.0.1");
    let mut s = std::net::TcpStream::connect(&addr).expect("registry answers");
    write!(
        s,
        "HEAD /v2/{repo}/manifests/{tag} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = String::new();
    s.read_to_string(&mut head).unwrap();
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("docker-content-digest")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no digest for {repo}:{tag}: {head}"))
}

/// Catalog images are pinned as `name:tag@sha256:…`: such a reference is pulled, found
/// and run on every engine.
#[tokio::test]
async fn an_image_pinned_by_tag_and_digest_is_pulled_and_run() {
    for (engine, host) in common::engines() {
        let rt = runtime(engine, &host).await;
        let mut guard = Cleanup::new(&host);
        let tagged = format!("{}/archipelago-test/busybox:1", common::registry());
        let digest = registry_digest("archipelago-test/busybox", "1");
        let pinned = format!("{tagged}@{digest}");
        for image in [&pinned, &tagged] {
            let _ = rt.image_remove(image).await;
        }
        rt.pull(&pinned, &|_| {})
            .await
            .unwrap_or_else(|e| panic!("{engine}: pull {pinned}: {e}"));
        assert!(
            rt.image_inspect(&pinned).await.expect("inspect").is_some(),
            "{engine}: {pinned} absent after its pull"
        );
        let mut s = spec(&common::unique("pinned"), "sleep 30");
        s.image = pinned.clone();
        run(&rt, &mut guard, engine, &s).await;
        let d = rt.inspect(&container_name(&s.app)).await.unwrap();
        assert!(d.state.is_running(), "{engine}: {d:?}");
    }
}
