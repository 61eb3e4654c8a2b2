//! Unit tests of the supervisor on `FakeRuntime`. One file over 600 lines, as every test
//! builds its node from the same fixtures at the top.

use std::path::Path;

use super::*;
use crate::api::{Desired, OperationStatus};
use crate::engine::fake::CallKind;
use crate::engine::FakeRuntime;

const MIB: u64 = 1024 * 1024;

/// The config line that makes `a` the default app.
const DEFAULT_A: &str = "default_apps: [a]\n";

/// Writes `<apps>/<id>/manifest.yml` for a 64 MiB app on image `img:1`; `extra` is
/// YAML under `container:`.
fn write_app(apps: &Path, id: &str, extra: &str) {
    write_manifest(
        apps,
        id,
        &format!("version: \"1\"\ncontainer:\n  image: img:1\n  network: none\n  memory_limit: 64MiB\n{extra}"),
    );
}

/// Writes `<apps>/<id>/manifest.yml`: its id and name, then `rest`.
fn write_manifest(apps: &Path, id: &str, rest: &str) {
    let dir = apps.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("manifest.yml"),
        format!("id: {id}\nname: {id}\n{rest}"),
    )
    .unwrap();
}

/// A fresh folder whose `apps/` holds the apps `(id, YAML under container:)`, and a
/// fresh fake engine.
fn catalog_of(apps: &[(&str, &str)]) -> (tempfile::TempDir, Arc<FakeRuntime>) {
    let dir = tempfile::tempdir().unwrap();
    for (id, extra) in apps {
        write_app(&dir.path().join("apps"), id, extra);
    }
    (dir, Arc::new(FakeRuntime::new()))
}

/// A supervisor started with `policy` over [`catalog_of`]`(apps)`, with `config`
/// appended to its config.
fn node(
    apps: &[(&str, &str)],
    config: &str,
    policy: CrashPolicy,
) -> (tempfile::TempDir, Arc<FakeRuntime>, Addr<Supervisor>) {
    let (dir, fake) = catalog_of(apps);
    let sup = start(dir.path(), &fake, config, policy);
    (dir, fake, sup)
}

/// Starts a supervisor on the fake engine over `dir` (holding `apps/`), with
/// `extra` appended to the config.
fn start(
    dir: &Path,
    fake: &Arc<FakeRuntime>,
    extra: &str,
    policy: CrashPolicy,
) -> Addr<Supervisor> {
    let path = dir.join("config.yml");
    let text = format!(
        "apps_dir: apps\ndata_dir: data\nengine:\n  host: fake\n  default_network: none\nreconcile_interval: 50ms\nauth:\n  password_file: password\n{extra}"
    );
    let config = Config::from_yaml(&path, &text).unwrap();
    let (catalog, problems) = Catalog::load(&config.apps_dir);
    assert!(problems.is_empty(), "{problems:?}");
    let store = Store::open(&config.data_dir).unwrap();
    fake.set_images(["img:1"]);
    let engine: Arc<dyn ContainerRuntime> = fake.clone();
    Supervisor::new(&config, catalog, engine, store)
        .unwrap()
        .with_crash_policy(policy)
        .start()
}

/// Polls `id`'s package until `pred` holds, or panics after 5 s naming `what`.
async fn wait_for(
    sup: &Addr<Supervisor>,
    id: &str,
    what: &str,
    pred: impl Fn(&Package) -> bool,
) -> Package {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let p = sup.send(GetPackage { id: id.into() }).await.unwrap();
        if let Ok(p) = &p {
            if pred(p) {
                return p.clone();
            }
        }
        assert!(Instant::now() < deadline, "{id}: never {what}: {p:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn settled_running(p: &Package) -> bool {
    p.state == AppState::Running
        && p.operation
            .as_ref()
            .is_none_or(|o| o.status != OperationStatus::Running)
}

/// A node whose one app `a` (manifest lines `extra`) is its default app, started and
/// settled running on a fresh fake engine.
async fn one_running_app(extra: &str) -> (tempfile::TempDir, Arc<FakeRuntime>, Addr<Supervisor>) {
    let (dir, fake, sup) = node(&[("a", extra)], DEFAULT_A, CrashPolicy::default());
    wait_for(&sup, "a", "running", settled_running).await;
    (dir, fake, sup)
}

/// `id`'s package, which must exist.
async fn package(sup: &Addr<Supervisor>, id: &str) -> Package {
    sup.send(GetPackage { id: id.into() })
        .await
        .unwrap()
        .unwrap()
}

/// Polls `done` until it holds, or panics after 5 s naming `what`.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "never {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How many calls of `kind` the fake engine has had.
fn calls_of(fake: &FakeRuntime, kind: CallKind) -> usize {
    fake.calls().iter().filter(|c| c.kind() == kind).count()
}

async fn run(sup: &Addr<Supervisor>, id: &str, kind: OperationKind) -> Result<Operation, AppError> {
    sup.send(RunOperation {
        id: id.into(),
        kind,
        purge: false,
    })
    .await
    .unwrap()
}

/// Adding, editing (same length) and removing a manifest each change the fingerprint;
/// reading twice with no change does not.
#[test]
fn the_catalog_fingerprint_sees_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let apps = dir.path();
    write_app(apps, "a", "");
    let mut last = CatalogFingerprint::of(apps);
    assert_eq!(CatalogFingerprint::of(apps), last, "no change");
    type Change = fn(&Path);
    let changes: [(&str, Change); 4] = [
        ("add", |apps| write_app(apps, "b", "")),
        ("edit, same length", |apps| {
            let path = apps.join("a/manifest.yml");
            let text = std::fs::read_to_string(&path).unwrap();
            std::fs::write(&path, text.replace("64MiB", "80MiB")).unwrap();
        }),
        ("remove manifest", |apps| {
            std::fs::remove_file(apps.join("b/manifest.yml")).unwrap()
        }),
        ("remove folder", |apps| {
            std::fs::remove_dir_all(apps.join("b")).unwrap()
        }),
    ];
    for (what, change) in changes {
        change(apps);
        let now = CatalogFingerprint::of(apps);
        assert_ne!(now, last, "{what}");
        last = now;
    }
}

/// At first boot the default apps are held to the memory budget too: in dependency
/// order, an app that would exceed it is left out, and so is its dependent.
#[actix_web::test]
async fn first_boot_holds_default_apps_to_the_memory_budget() {
    let (dir, fake) = catalog_of(&[("a", ""), ("b", "")]);
    write_manifest(
        &dir.path().join("apps"),
        "c",
        "version: \"1\"\ndependencies: [b]\ncontainer:\n  image: img:1\n  network: none\n  memory_limit: 8MiB\n",
    );
    // c (8 MiB) would fit, but it depends on b, which does not.
    let config = "default_apps: [c, b, a]\nmemory_budget: 100MiB\n";
    let sup = start(dir.path(), &fake, config, CrashPolicy::default());
    wait_for(&sup, "a", "running", settled_running).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for left_out in ["b", "c"] {
        let p = package(&sup, left_out).await;
        assert_eq!(p.state, AppState::NotInstalled, "{left_out}");
        assert_eq!(p.desired, Desired::NotInstalled, "{left_out}");
    }
    let status = sup.send(GetStatus).await.unwrap();
    assert_eq!(status.memory.reserved_bytes, 64 * MIB);
}

/// Two 64 MiB apps under a 100 MiB budget: the second is refused with -32004 and the
/// figures, and nothing is created for it.
#[actix_web::test]
async fn a_start_over_the_memory_budget_is_refused_with_figures() {
    let config = "default_apps: [a]\nmemory_budget: 100MiB\n";
    let (_dir, fake, sup) = node(&[("a", ""), ("b", "")], config, CrashPolicy::default());
    wait_for(&sup, "a", "running", settled_running).await;

    let err = run(&sup, "b", OperationKind::Install).await.unwrap_err();

    assert_eq!(err.rpc_code(), -32004);
    assert_eq!(
        err,
        AppError::MemoryBudget {
            app: "b".into(),
            needed_bytes: 64 * MIB,
            reserved_bytes: 64 * MIB,
            budget_bytes: 100 * MIB,
        }
    );
    let text = err.to_string();
    for figure in ["67108864", "104857600"] {
        assert!(text.contains(figure), "{text}");
    }
    let p = package(&sup, "b").await;
    assert_eq!(p.state, AppState::NotInstalled);
    assert!(fake.container("archipelago-b").is_none());
    // Stopping a frees its share: b now fits.
    run(&sup, "a", OperationKind::Stop).await.unwrap();
    wait_for(&sup, "a", "stopped", |p| p.state == AppState::Stopped).await;
    run(&sup, "b", OperationKind::Install).await.unwrap();
    wait_for(&sup, "b", "running", settled_running).await;
}

/// Issue 13, defect 2: an install still in flight holds its memory, so two installs
/// asked for at once cannot both pass a budget that fits one. Failed before the
/// ledger (both were accepted).
#[actix_web::test]
async fn two_installs_at_once_cannot_both_pass_the_budget() {
    let (dir, fake) = catalog_of(&[("a", ""), ("b", "")]);
    fake.set_stop_delay(Duration::ZERO);
    let config = "default_apps: []\nmemory_budget: 100MiB\n";
    let sup = start(dir.path(), &fake, config, CrashPolicy::default());
    wait_for(&sup, "a", "listed", |_| true).await;
    let (a, b) = futures_util::join!(
        run(&sup, "a", OperationKind::Install),
        run(&sup, "b", OperationKind::Install)
    );
    assert!(a.is_ok(), "{a:?}");
    assert_eq!(b.unwrap_err().rpc_code(), -32004);
    wait_for(&sup, "a", "running", settled_running).await;
    let status = sup.send(GetStatus).await.unwrap();
    assert_eq!(status.memory.reserved_bytes, 64 * MIB);
}

/// Issue 13, defect 2: an upgrade of a running app to a larger limit is held to the
/// budget, and so is a live raise from a catalog change (the app keeps its limit).
/// Failed before (the upgrade was never checked, the raise applied live).
#[actix_web::test]
async fn raising_a_running_apps_memory_is_held_to_the_budget() {
    let config = "default_apps: [a, b]\nmemory_budget: 150MiB\n";
    let (dir, fake, sup) = node(&[("a", ""), ("b", "")], config, CrashPolicy::default());
    let apps = dir.path().join("apps");
    wait_for(&sup, "a", "running", settled_running).await;
    wait_for(&sup, "b", "running", settled_running).await;
    // b's catalog entry asks 100 MiB: 64 + 100 > 150.
    let text = std::fs::read_to_string(apps.join("b/manifest.yml")).unwrap();
    std::fs::write(
        apps.join("b/manifest.yml"),
        text.replace("memory_limit: 64MiB", "memory_limit: 100MiB"),
    )
    .unwrap();
    sup.send(ReloadCatalog).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.container("archipelago-b").unwrap().memory_limit,
        64 * MIB,
        "raise held back"
    );
    let p = package(&sup, "b").await;
    assert_eq!(
        p.memory_limit_bytes,
        64 * MIB,
        "the package shows the limit in force"
    );
    let err = run(&sup, "b", OperationKind::Upgrade).await.unwrap_err();
    assert_eq!(
        err,
        AppError::MemoryBudget {
            app: "b".into(),
            needed_bytes: 100 * MIB,
            reserved_bytes: 64 * MIB,
            budget_bytes: 150 * MIB,
        }
    );
    // With a stopped, the raise fits and is applied at the next reload.
    run(&sup, "a", OperationKind::Stop).await.unwrap();
    wait_for(&sup, "a", "stopped", |p| p.state == AppState::Stopped).await;
    sup.send(ReloadCatalog).await.unwrap().unwrap();
    until("applied the raise", || {
        fake.container("archipelago-b").unwrap().memory_limit == 100 * MIB
    })
    .await;
}

/// A request while an operation runs answers -32002 naming that operation.
#[actix_web::test]
async fn a_request_during_an_operation_is_a_conflict_naming_it() {
    let (_dir, fake, sup) = one_running_app("  stop_timeout: 30s\n").await;
    fake.set_stop_delay(Duration::from_millis(800));

    let stop = run(&sup, "a", OperationKind::Stop).await.unwrap();
    assert_eq!(stop.status, OperationStatus::Running);
    let err = run(&sup, "a", OperationKind::Start).await.unwrap_err();

    assert_eq!(err.rpc_code(), -32002);
    assert_eq!(
        err,
        AppError::Conflict {
            app: "a".into(),
            operation: stop.id.clone(),
            kind: "stop".into(),
        }
    );
    assert!(err.to_string().contains(&stop.id), "{err}");
    let p = wait_for(&sup, "a", "stopped", |p| p.state == AppState::Stopped).await;
    assert_eq!(p.desired, Desired::Stopped);
}

/// Collects nothing: stands in for the supervisor as an app actor's listener.
struct Sink;
impl Actor for Sink {
    type Context = Context<Self>;
}
impl Handler<PackageChanged> for Sink {
    type Result = ();
    fn handle(&mut self, _: PackageChanged, _: &mut Context<Self>) {}
}

async fn app_state(app: &Addr<AppActor>, want: AppState) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let p = app.send(app::Snapshot).await.unwrap();
        let settled = p
            .operation
            .as_ref()
            .is_none_or(|o| o.status != OperationStatus::Running);
        if p.state == want && settled {
            return;
        }
        assert!(Instant::now() < deadline, "never {want:?}: {p:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An installed app wanted running, on `img:1`.
fn installed_record() -> crate::store::AppRecord {
    crate::store::AppRecord {
        desired: crate::api::Desired::Running,
        installed: Some(crate::store::Installed {
            version: "1".into(),
            image: "img:1".into(),
        }),
        ..Default::default()
    }
}

/// An actor for app `a` of `dir/apps`, on the fake engine and `dir/data`, without a
/// supervisor; `record` makes its persisted record from its catalog entry.
fn app_actor(
    dir: &Path,
    fake: &Arc<FakeRuntime>,
    record: impl FnOnce(&crate::catalog::CatalogApp) -> crate::store::AppRecord,
) -> Addr<AppActor> {
    let (catalog, problems) = Catalog::load(&dir.join("apps"));
    assert!(problems.is_empty(), "{problems:?}");
    fake.set_images(["img:1"]);
    let store = Store::open(&dir.join("data")).unwrap();
    let (events, _) = broadcast::channel(16);
    let shared = Arc::new(Shared {
        engine: fake.clone(),
        store,
        default_network: "none".into(),
        start_slots: Arc::new(Semaphore::new(1)),
        events,
        crash_policy: CrashPolicy::default(),
    });
    let id = AppId::try_from("a".to_string()).unwrap();
    let app = catalog.get(&id).unwrap().clone();
    let record = record(&app);
    AppActor::new(app, record, shared, Sink.start().recipient()).start()
}

/// A tick whose list was taken before a stop ended still shows the container running;
/// the app must not plan a second stop (or read `running`) from it.
#[actix_web::test]
async fn a_tick_listed_before_an_operation_ended_is_not_planned_from() {
    let (dir, fake) = catalog_of(&[("a", "")]);
    let actor = app_actor(dir.path(), &fake, |_| installed_record());
    let observe = |container, listed_at| Observe {
        container,
        deps: Deps::Ready,
        listed_at,
    };
    actor
        .send(observe(None, std::time::Instant::now()))
        .await
        .unwrap();
    app_state(&actor, AppState::Running).await;

    let listed_at = std::time::Instant::now();
    let stale = fake.list().await.unwrap().pop();
    assert!(stale.as_ref().is_some_and(|c| c.state.is_running()));
    actor
        .send(app::Command {
            kind: OperationKind::Stop,
            params: OpParams::default(),
        })
        .await
        .unwrap()
        .unwrap();
    app_state(&actor, AppState::Stopped).await;

    let actions = actor.send(observe(stale, listed_at)).await.unwrap();
    assert_eq!(actions, 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    app_state(&actor, AppState::Stopped).await;
    assert_eq!(
        calls_of(&fake, CallKind::Stop),
        1,
        "a second stop was planned from a stale list"
    );
}

/// Manifest lines for an app restarted whatever its exit.
const ALWAYS: &str = "  restart: always\n";

/// A policy that gives up after three quick crashes, with short backoffs.
fn three_crashes() -> CrashPolicy {
    CrashPolicy {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(50),
        stable_after: Duration::from_secs(60),
        max_quick_crashes: 3,
    }
}

/// Crashes app `a` `n` times, each time once the supervisor has it running again.
async fn crash_times(sup: &Addr<Supervisor>, fake: &FakeRuntime, n: u32) {
    let mut starts: Vec<String> = vec![];
    for crash in 1..=n {
        // Running again on a new start (the supervisor restarted it after the crash).
        let deadline = Instant::now() + Duration::from_secs(5);
        let stamp = loop {
            let c = fake.container("archipelago-a");
            let stamp = c.as_ref().and_then(|c| c.started_at.clone());
            let fresh = stamp.as_ref().is_some_and(|s| !starts.contains(s));
            if fresh && c.is_some_and(|c| c.state.is_running()) {
                break stamp.unwrap_or_default();
            }
            assert!(
                Instant::now() < deadline,
                "not restarted before crash {crash}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        wait_for(sup, "a", "running", settled_running).await;
        starts.push(stamp);
        assert!(fake.crash("a", 1), "crash {crash}");
    }
}

fn starts(fake: &FakeRuntime) -> usize {
    calls_of(fake, CallKind::Start)
}

/// A supervisor started again over a given-up app (as after kill -9) keeps it
/// `failed` with its error and does not start it; Retry does.
#[actix_web::test]
async fn a_failed_app_stays_failed_across_a_supervisor_restart() {
    let (dir, fake, first) = node(&[("a", ALWAYS)], DEFAULT_A, three_crashes());
    crash_times(&first, &fake, 3).await;
    wait_for(&first, "a", "failed", |p| p.state == AppState::Failed).await;
    let before = starts(&fake);

    // The first supervisor has given up and does nothing more; the second reads the
    // same data folder.
    let second = start(dir.path(), &fake, DEFAULT_A, three_crashes());
    let p = wait_for(&second, "a", "failed", |p| p.state == AppState::Failed).await;
    assert!(
        p.last_error
            .as_deref()
            .unwrap_or("")
            .contains("crashed 3 times"),
        "{p:?}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(starts(&fake), before, "started again after the restart");
    assert_eq!(package(&second, "a").await.state, AppState::Failed);

    run(&second, "a", OperationKind::Start).await.unwrap();
    let p = wait_for(&second, "a", "running again", settled_running).await;
    assert_eq!(p.last_error, None);
    let saved = Store::open(&dir.path().join("data"))
        .unwrap()
        .load("a")
        .unwrap()
        .unwrap()
        .record;
    assert_eq!(saved.crashes, None, "Retry forgets the history on disk too");
}

/// An app restored in the middle of a crash backoff waits out what is left of it
/// (`restarting`), then starts; a history of another manifest is not restored.
#[actix_web::test]
async fn a_backoff_in_progress_is_waited_out_after_a_restart() {
    for (same_manifest, held) in [(true, true), (false, false)] {
        let (dir, fake) = catalog_of(&[("a", ALWAYS)]);
        let restart_at = std::time::SystemTime::now() + Duration::from_millis(800);
        let actor = app_actor(dir.path(), &fake, |app| crate::store::AppRecord {
            crashes: Some(crate::store::CrashRecord {
                quick_crashes: 2,
                given_up: false,
                started_at: None,
                restart_at: Some(restart_at),
                manifest: Some(match same_manifest {
                    true => app::manifest_digest(&app.manifest),
                    false => "another".into(),
                }),
            }),
            ..installed_record()
        });
        let began = Instant::now();
        actor
            .send(Observe {
                container: None,
                deps: Deps::Ready,
                listed_at: std::time::Instant::now(),
            })
            .await
            .unwrap();
        if held {
            let p = actor.send(app::Snapshot).await.unwrap();
            assert_eq!(p.state, AppState::Restarting);
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(starts(&fake), 0, "started before the backoff ended");
        }
        app_state(&actor, AppState::Running).await;
        let waited = began.elapsed();
        assert_eq!(
            waited >= Duration::from_millis(700),
            held,
            "same manifest {same_manifest}: running after {waited:?}"
        );
    }
}

/// Operation ids never repeat across supervisor restarts, even when the new process
/// has the old one's pid (here: the same process): an actor made again, as at a
/// restart, does not hand out its predecessor's ids.
#[actix_web::test]
async fn operation_ids_are_unique_across_restarts() {
    let (dir, fake) = catalog_of(&[("a", "")]);
    let stop = || app::Command {
        kind: OperationKind::Stop,
        params: OpParams::default(),
    };
    let mut ids = vec![];
    for _boot in 0..2 {
        let actor = app_actor(dir.path(), &fake, |_| crate::store::AppRecord {
            desired: Desired::Stopped,
            ..installed_record()
        });
        let op = actor.send(stop()).await.unwrap().unwrap();
        assert_eq!(app::app_of_operation(&op.id), Some("a"), "{}", op.id);
        ids.push(op.id);
    }
    assert_ne!(ids[0], ids[1], "the same id after a restart");
}

/// `package.stop` while an app waits out a crash backoff (`restarting`) is accepted
/// and stops the restart: the app ends `stopped` and is not started again.
#[actix_web::test]
async fn stop_during_a_crash_backoff_is_accepted_and_cancels_the_restart() {
    let policy = CrashPolicy {
        initial_backoff: Duration::from_millis(1500),
        ..three_crashes()
    };
    let (_dir, fake, sup) = node(&[("a", ALWAYS)], DEFAULT_A, policy);
    // The first crash restarts at once, the second waits 1.5 s.
    crash_times(&sup, &fake, 2).await;
    wait_for(&sup, "a", "restarting", |p| p.state == AppState::Restarting).await;
    let before = starts(&fake);

    let op = run(&sup, "a", OperationKind::Stop).await.unwrap();

    assert_eq!(op.kind, OperationKind::Stop);
    let p = wait_for(&sup, "a", "stopped", |p| {
        p.state == AppState::Stopped
            && p.operation
                .as_ref()
                .is_some_and(|o| o.status != OperationStatus::Running)
    })
    .await;
    assert_eq!(p.desired, Desired::Stopped);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(starts(&fake), before, "restarted after the stop");
    assert_eq!(package(&sup, "a").await.state, AppState::Stopped);
}

/// A health check that a catalog reload adds to a running app is probed: the app
/// turns `healthy` (instead of `starting` for ever, which held its dependants back).
#[actix_web::test]
async fn a_health_check_added_by_a_reload_is_probed() {
    let (dir, fake, sup) = one_running_app("").await;
    let apps = dir.path().join("apps");
    assert_eq!(package(&sup, "a").await.health, Health::None);

    write_app(
        &apps,
        "a",
        "  health:\n    exec: [\"true\"]\n    interval: 50ms\n",
    );
    sup.send(ReloadCatalog).await.unwrap().unwrap();

    wait_for(&sup, "a", "healthy", |p| p.health == Health::Healthy).await;
    assert!(fake.calls().iter().any(|c| matches!(
        c,
        crate::engine::fake::Call::Exec(_, cmd) if cmd == &["true".to_string()]
    )));
}

/// `${secret:…}` in a `post_create` hook and in an exec health check reach the
/// engine rendered, as in env and command.
#[actix_web::test]
async fn hook_and_health_exec_commands_render_secrets() {
    let (dir, fake, _sup) = one_running_app(concat!(
        "  health:\n    exec: [\"check\", \"--token=${secret:token}\"]\n    interval: 50ms\n",
        "hooks:\n  post_create:\n    - exec: [\"init\", \"${secret:token}\"]\n",
        "secrets:\n  token: {kind: hex, bytes: 8}\n",
    ))
    .await;
    // At least one probe after the start.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let token = std::fs::read_to_string(dir.path().join("data/secrets/a/token")).unwrap();
    let execs: Vec<Vec<String>> = fake
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            crate::engine::fake::Call::Exec(_, cmd) => Some(cmd),
            _ => None,
        })
        .collect();
    let hook = vec!["init".to_string(), token.clone()];
    let probe = vec!["check".to_string(), format!("--token={token}")];
    assert!(execs.contains(&hook), "{execs:?}");
    assert!(execs.contains(&probe), "{execs:?}");
    assert!(
        !execs.iter().flatten().any(|arg| arg.contains("${secret:")),
        "{execs:?}"
    );
}

/// A catalog edit that adds a secret (and uses it) to a running app generates the
/// secret and recreates the container with it; it never takes the app for one that
/// is not installed and force-removes its container.
#[actix_web::test]
async fn a_catalog_edit_adding_a_secret_generates_it_and_keeps_the_app() {
    let (dir, fake, sup) = one_running_app("").await;
    write_app(
        &dir.path().join("apps"),
        "a",
        "  env:\n    TOKEN: \"${secret:token}\"\nsecrets:\n  token: {kind: hex, bytes: 8}\n",
    );
    sup.send(ReloadCatalog).await.unwrap().unwrap();

    let token_file = dir.path().join("data/secrets/a/token");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = fake.container("archipelago-a");
        let token = std::fs::read_to_string(&token_file).ok();
        let has_token = |c: &crate::engine::fake::FakeContainer| {
            token
                .as_ref()
                .is_some_and(|t| c.spec.env.get("TOKEN") == Some(t))
        };
        if c.as_ref()
            .is_some_and(|c| c.state.is_running() && has_token(c))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never recreated with the token: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let p = wait_for(&sup, "a", "running", settled_running).await;
    assert_eq!(p.last_error, None);
    assert_eq!(p.desired, Desired::Running);
}

/// An installed app whose wanted spec cannot be computed (a dependency's secret is
/// missing) keeps its running container: it is not an orphan.
#[actix_web::test]
async fn an_installed_app_without_a_wanted_spec_keeps_its_container() {
    let dir = tempfile::tempdir().unwrap();
    let apps = dir.path().join("apps");
    write_app(&apps, "z", "secrets:\n  tok: {kind: hex, bytes: 8}\n");
    write_app(
        &apps,
        "a",
        "  env:\n    TOK: \"${secret:z/tok}\"\ndependencies: [z]\n",
    );
    let fake = Arc::new(FakeRuntime::new());
    // A's container runs with z's secret, which then goes missing.
    let store = Store::open(&dir.path().join("data")).unwrap();
    let secret = store.secrets_dir("z").join("tok");
    std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
    std::fs::write(&secret, "abcd").unwrap();
    let (catalog, _) = Catalog::load(&apps);
    let a = catalog
        .get(&AppId::try_from("a".to_string()).unwrap())
        .unwrap();
    let spec = crate::spec::container_spec(a, &store, "none").unwrap();
    fake.set_images(["img:1"]);
    fake.create(&spec).await.unwrap();
    fake.start("archipelago-a").await.unwrap();
    std::fs::remove_file(&secret).unwrap();

    let actor = app_actor(dir.path(), &fake, |_| installed_record());
    let container = fake.list().await.unwrap().pop();
    actor
        .send(Observe {
            container,
            deps: Deps::Ready,
            listed_at: std::time::Instant::now(),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    assert_eq!(
        calls_of(&fake, CallKind::Remove),
        0,
        "the container was removed as an orphan"
    );
    assert!(fake.container("archipelago-a").unwrap().state.is_running());
    let p = actor.send(app::Snapshot).await.unwrap();
    assert_eq!(p.state, AppState::Running);
    let error = p.last_error.unwrap_or_default();
    assert!(error.contains("z/tok"), "{error}");
}

/// Uninstalling every app does not make the next boot a first boot: the default
/// apps are installed once in the node's life, not again.
#[actix_web::test]
async fn a_node_with_every_app_uninstalled_is_not_booted_as_new() {
    let (dir, _fake, first) = one_running_app("").await;
    run(&first, "a", OperationKind::Uninstall).await.unwrap();
    wait_for(&first, "a", "uninstalled", |p| {
        p.state == AppState::NotInstalled
    })
    .await;
    let state = dir.path().join("data/state");
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0);

    // The next boot, on an engine of its own so the first supervisor cannot interfere.
    let engine = Arc::new(FakeRuntime::new());
    let second = start(dir.path(), &engine, DEFAULT_A, CrashPolicy::default());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let p = package(&second, "a").await;
    assert_eq!(p.state, AppState::NotInstalled, "{p:?}");
    assert_eq!(p.desired, Desired::NotInstalled);
    assert!(engine.container("archipelago-a").is_none());
}

/// A container that exits while its start waits for health fails the start and
/// counts as one crash, not two (once as a failed start, once as an exit).
#[actix_web::test]
async fn an_exit_during_a_start_counts_as_one_crash() {
    let (dir, fake) = catalog_of(&[(
        "a",
        "  restart: always\n  health:\n    exec: [\"check\"]\n    interval: 50ms\n    start_period: 30s\n",
    )]);
    fake.set_exec_result(
        "archipelago-a",
        crate::engine::ExecOutput {
            exit_code: 1,
            output: String::new(),
        },
    );
    let policy = CrashPolicy {
        max_quick_crashes: 2,
        ..three_crashes()
    };
    let sup = start(dir.path(), &fake, DEFAULT_A, policy);
    // Waiting for health: the container runs, the start has not ended.
    until("started", || {
        fake.container("archipelago-a")
            .is_some_and(|c| c.state.is_running())
    })
    .await;
    assert!(fake.crash("a", 1));

    // One crash of two allowed: restarted, not given up.
    let deadline = Instant::now() + Duration::from_secs(5);
    while starts(&fake) < 2 {
        let p = package(&sup, "a").await;
        assert_ne!(p.state, AppState::Failed, "{p:?}");
        assert!(Instant::now() < deadline, "never restarted: {p:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Three quick crashes (the policy's limit) end in `failed`; Retry (start) clears it.
#[actix_web::test]
async fn a_crash_loop_ends_failed_and_retry_clears_it() {
    let (_dir, fake, sup) = node(&[("a", ALWAYS)], DEFAULT_A, three_crashes());
    crash_times(&sup, &fake, 3).await;
    let p = wait_for(&sup, "a", "failed", |p| p.state == AppState::Failed).await;
    let error = p.last_error.unwrap_or_default();
    assert!(error.contains("crashed 3 times"), "{error}");
    // Given up: no restart comes, however many ticks pass.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = fake.container("archipelago-a").unwrap();
    assert!(!c.state.is_running());
    assert_eq!(package(&sup, "a").await.state, AppState::Failed);

    let op = run(&sup, "a", OperationKind::Start).await.unwrap();
    assert_eq!(op.kind, OperationKind::Start);
    let p = wait_for(&sup, "a", "running again", settled_running).await;
    assert_eq!(p.last_error, None);
    assert!(fake.container("archipelago-a").unwrap().state.is_running());
}

/// An app whose folder leaves `apps_dir` loses its actor when it is not installed,
/// and stays (on its last manifest, no update offered) when it is; both are noticed
/// on disk without `catalog.reload`.
#[actix_web::test]
async fn apps_leaving_the_catalog_are_retired_unless_installed() {
    let (dir, fake, sup) = node(&[("a", ""), ("b", "")], DEFAULT_A, CrashPolicy::default());
    let apps = dir.path().join("apps");
    wait_for(&sup, "a", "running", settled_running).await;
    // An update is offered, then both folders go away.
    std::fs::write(
        apps.join("a/manifest.yml"),
        "id: a\nname: a\nversion: \"2\"\ncontainer:\n  image: img:2\n  network: none\n  memory_limit: 64MiB\n",
    )
    .unwrap();
    wait_for(&sup, "a", "offering 2", |p| p.update_available).await;
    std::fs::remove_dir_all(apps.join("a")).unwrap();
    std::fs::remove_dir_all(apps.join("b")).unwrap();

    let deadline = Instant::now() + Duration::from_secs(5);
    while sup
        .send(ListPackages)
        .await
        .unwrap()
        .iter()
        .any(|p| p.id == "b")
    {
        assert!(Instant::now() < deadline, "b never retired");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let err = sup
        .send(GetPackage { id: "b".into() })
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err, AppError::UnknownApp { id: "b".into() });
    let a = wait_for(&sup, "a", "without an update", |p| !p.update_available).await;
    assert_eq!(a.state, AppState::Running);
    assert_eq!(a.installed_version.as_deref(), Some("1"));
    assert!(fake.container("archipelago-a").unwrap().state.is_running());
    // `b` comes back with its folder.
    write_app(&apps, "b", "");
    wait_for(&sup, "b", "back", |p| p.state == AppState::NotInstalled).await;
}
