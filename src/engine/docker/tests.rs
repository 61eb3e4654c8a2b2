use std::collections::BTreeMap;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{EventMessage, RestartPolicyNameEnum};

use super::convert::{create_body, frames_to_lines, real_time, secs_i32, PullProgress};
use super::errors::{lower_first, map_error, Target};
use super::events::map_event;
use super::network::{plan_network_repair, NetworkFacts};
use super::podman::libpod_uri;
use super::*;
use crate::engine::{
    Adopted, Bind, ContainerSpec, EngineErrorKind, PortBinding, LABEL_APP, LABEL_SPEC_HASH,
    LABEL_VERSION,
};

#[test]
fn duplicate_networks_keep_the_one_in_use() {
    let net = |id: &str, containers, ours| NetworkFacts {
        id: id.to_string(),
        containers,
        ours,
        created: id.to_string(),
    };
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    type Case<'a> = (&'a [NetworkFacts], Result<Vec<String>, usize>);
    let cases: &[Case] = &[
        (
            &[net("a", 0, true), net("b", 0, true), net("c", 0, true)],
            Ok(ids(&["b", "c"])),
        ),
        (
            &[net("a", 0, true), net("b", 2, true), net("c", 0, true)],
            Ok(ids(&["a", "c"])),
        ),
        (&[net("a", 1, true), net("b", 2, true)], Err(2)),
        (&[net("a", 0, false), net("b", 0, true)], Ok(ids(&["b"]))),
        (&[net("a", 3, true), net("b", 0, false)], Err(2)),
    ];
    for (found, want) in cases {
        let got = plan_network_repair(found).map_err(|stay| stay.len());
        assert_eq!(&got, want, "{found:?}");
    }
}

#[test]
fn split_refs() {
    let cases = [
        ("busybox", ("busybox", None)),
        ("busybox:1", ("busybox", Some("1"))),
        (
            "archipelago/lnd:0.18.3",
            ("archipelago/lnd", Some("0.18.3")),
        ),
        ("localhost:5000/x:1", ("localhost:5000/x", Some("1"))),
        ("localhost:5000/x", ("localhost:5000/x", None)),
        ("localhost:5000/a/b:c", ("localhost:5000/a/b", Some("c"))),
        ("x@sha256:abcd", ("x", Some("sha256:abcd"))),
    ];
    for (input, want) in cases {
        assert_eq!(split_image_ref(input), want, "{input}");
    }
}

#[test]
fn dockerignore_patterns() {
    let m = IgnoreMatcher::parse(
        "# comment\nsecret.txt\n*.log\nbuild/\n!build/keep.txt\ndocs/**/*.md\n/abs\n[ab].key\n",
    );
    let cases = [
        ("secret.txt", true),
        ("a/secret.txt", false),
        ("x.log", true),
        ("sub/x.log", false),
        ("build", true),
        ("build/out.o", true),
        ("build/keep.txt", false),
        ("docs/a.md", true),
        ("docs/x/y/a.md", true),
        ("docs/a.txt", false),
        ("abs", true),
        ("Dockerfile", false),
        ("copied.txt", false),
        ("a.key", true),
        ("c.key", false),
    ];
    for (path, want) in cases {
        assert_eq!(m.is_ignored(path), want, "{path}");
    }
    assert!(!IgnoreMatcher::default().is_ignored("anything"));
}

#[test]
fn tar_honours_dockerignore() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(d.join("Dockerfile"), "FROM scratch\n").expect("write");
    std::fs::write(d.join(".dockerignore"), "ignored.txt\nsub/\n!sub/keep\n").expect("write");
    std::fs::write(d.join("copied.txt"), "yes").expect("write");
    std::fs::write(d.join("ignored.txt"), "no").expect("write");
    std::fs::create_dir(d.join("sub")).expect("mkdir");
    std::fs::write(d.join("sub/keep"), "k").expect("write");
    std::fs::write(d.join("sub/drop"), "d").expect("write");
    let bytes = tar_context(d, "Dockerfile").expect("tar");
    let mut archive = tar::Archive::new(bytes.as_slice());
    let mut names: Vec<String> = archive
        .entries()
        .expect("entries")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![".dockerignore", "Dockerfile", "copied.txt", "sub/keep"]
    );
}

#[test]
fn create_body_fields() {
    let spec = ContainerSpec {
        app: "demo".into(),
        version: "1.2".into(),
        image: "archipelago/demo:1.2".into(),
        env: BTreeMap::from([("A".into(), "1".into())]),
        command: Some(vec!["sh".into(), "-c".into(), "sleep 1".into()]),
        entrypoint: None,
        user: Some("1000".into()),
        ports: vec![
            PortBinding {
                host: 8080,
                container: 80,
                udp: false,
            },
            PortBinding {
                host: 5353,
                container: 53,
                udp: true,
            },
        ],
        binds: vec![Bind {
            host: "/srv/apps/demo/data".into(),
            container: "/data".into(),
            read_only: true,
        }],
        network: "host".into(),
        memory_limit: 64 << 20,
        stop_timeout: Duration::from_millis(1500),
        cap_add: vec![],
        cap_drop: vec![],
        pids_limit: 4096,
        group_add: vec![],
    };
    let body = create_body(&spec);
    let hc = body.host_config.clone().expect("host config");
    assert_eq!(hc.memory, Some(64 << 20));
    assert_eq!(hc.memory_swap, Some(64 << 20));
    assert_eq!(
        hc.binds,
        Some(vec!["/srv/apps/demo/data:/data:ro".to_string()])
    );
    assert_eq!(hc.network_mode.as_deref(), Some("host"));
    assert_eq!(
        hc.restart_policy.and_then(|r| r.name),
        Some(RestartPolicyNameEnum::NO)
    );
    let pb = hc.port_bindings.expect("ports");
    let tcp = pb["80/tcp"].clone().expect("80");
    assert_eq!(tcp[0].host_port.as_deref(), Some("8080"));
    assert_eq!(tcp[0].host_ip, None);
    assert!(pb.contains_key("53/udp"));
    assert_eq!(
        body.exposed_ports,
        Some(vec!["53/udp".to_string(), "80/tcp".to_string()])
    );
    assert_eq!(body.stop_timeout, Some(2));
    assert_eq!(body.env, Some(vec!["A=1".to_string()]));
    assert_eq!(body.user.as_deref(), Some("1000"));
    let labels = body.labels.expect("labels");
    assert_eq!(labels[LABEL_APP], "demo");
    assert_eq!(labels[LABEL_VERSION], "1.2");
    assert_eq!(labels[LABEL_SPEC_HASH], spec.hash());
}

#[test]
fn error_mapping() {
    use EngineErrorKind as K;
    let server = |status_code: u16, message: &str| BollardError::DockerResponseServerError {
        status_code,
        message: message.to_string(),
    };
    let create = Target::Create {
        container: "archipelago-x",
        image: "img:1",
    };
    let stream = |error: &str| BollardError::DockerStreamError {
        error: error.to_string(),
    };
    let (c, i) = (Target::Container("c"), Target::Image("i"));
    let (pull, build, engine) = (Target::Pull("i"), Target::Build("t"), Target::Engine);
    let no_name = "no container with name or ID \"c\" found: no such container";
    let pull_404 = "initializing source: reading manifest 1: manifest unknown";
    let no_image = "No such image: img:1";
    let conflict = "Conflict. The container name is already in use";
    let in_use = "the container name \"x\" is already in use by abc";
    let socket = BollardError::SocketNotFoundError("/x".into());
    let reset = BollardError::IOError {
        err: std::io::Error::other("reset"),
    };
    let cases: Vec<(Target<'_>, BollardError, EngineErrorKind)> = vec![
        (c, server(404, "no such container"), K::ContainerNotFound),
        (c, server(500, no_name), K::ContainerNotFound),
        (i, server(404, "no such image"), K::ImageNotFound),
        (create, server(404, no_image), K::ImageNotFound),
        (create, server(409, conflict), K::NameConflict),
        (create, server(500, in_use), K::NameConflict),
        (pull, server(404, "manifest unknown"), K::ImageNotFound),
        (pull, server(500, pull_404), K::ImageNotFound),
        (pull, server(500, "connection refused"), K::PullFailed),
        (pull, stream("x: not found"), K::ImageNotFound),
        (pull, stream("unauthorized"), K::PullFailed),
        (build, stream("step failed"), K::BuildFailed),
        (engine, socket, K::Unreachable),
        (engine, reset, K::Unreachable),
        (c, server(409, "is not running"), K::Other),
        (engine, BollardError::RequestTimeoutError, K::Timeout),
    ];
    for (target, err, want) in cases {
        let desc = format!("{target:?} {err}");
        let got = map_error("unix:///x.sock", target, err);
        assert_eq!(got.kind(), want, "{desc} -> {got}");
    }
    let e = map_error(
        "unix:///x.sock",
        Target::Engine,
        BollardError::SocketNotFoundError("/x.sock".into()),
    );
    assert!(e.to_string().contains("unix:///x.sock"), "{e}");
    let e = map_error("h", Target::Pull("img:9"), server(500, "boom"));
    assert!(e.to_string().contains("img:9"), "{e}");
}

#[test]
fn pull_progress_sums_layers() {
    let mut p = PullProgress::default();
    assert_eq!(p.totals(), (None, None));
    p.update(Some("a"), "Downloading", Some(10), Some(100));
    p.update(Some("b"), "Downloading", Some(5), Some(50));
    assert_eq!(p.totals(), (Some(15), Some(150)));
    p.update(Some("a"), "Pull complete", None, None);
    assert_eq!(p.totals(), (Some(105), Some(150)));
    p.update(None, "Digest: sha256:x", None, None);
    assert_eq!(p.totals(), (Some(105), Some(150)));
    // Extraction of b reports its own smaller current: the bar does not go back.
    p.update(Some("b"), "Downloading", Some(30), Some(50));
    p.update(Some("b"), "Extracting", Some(2), Some(50));
    assert_eq!(p.totals(), (Some(150), Some(150)));
}

#[test]
fn events_map_podman_and_docker() {
    use bollard::models::EventActor;
    let ev = |action: &str, attrs: &[(&str, &str)]| EventMessage {
        action: Some(action.to_string()),
        actor: Some(EventActor {
            id: Some("abc".into()),
            attributes: Some(
                attrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        }),
        ..Default::default()
    };
    let none = Adoptions::default();
    let e = map_event(
        ev("die", &[(LABEL_APP, "demo"), ("exitCode", "137")]),
        &none,
    )
    .expect("ours");
    assert_eq!(
        (e.action.as_str(), e.exit_code, e.app.as_str()),
        ("die", Some(137), "demo")
    );
    let e = map_event(
        ev("died", &[(LABEL_APP, "demo"), ("containerExitCode", "3")]),
        &none,
    )
    .expect("ours");
    assert_eq!((e.action.as_str(), e.exit_code), ("die", Some(3)));
    let e = map_event(
        ev("exec_start: sh -c secret", &[(LABEL_APP, "demo")]),
        &none,
    )
    .expect("ours");
    assert_eq!(e.action, "exec_start");
    assert!(
        map_event(ev("die", &[("exitCode", "1")]), &none).is_none(),
        "not ours"
    );
    // An adopted container carries no label: the table names its app.
    let adopted = Adoptions::default();
    adopted.insert(Adopted {
        container_id: "abc".into(),
        app: "old".into(),
        spec_hash: "h".into(),
        version: "1".into(),
    });
    let e = map_event(ev("die", &[("exitCode", "1")]), &adopted).expect("adopted");
    assert_eq!((e.app.as_str(), e.exit_code), ("old", Some(1)));
}

#[test]
fn libpod_uris() {
    let cases = [
        (
            "unix://2f746d70/containers/x/update",
            Some("unix://2f746d70/v4.0.0/libpod/containers/x/update"),
        ),
        (
            "http://127.0.0.1:2375/v1.41/containers/x/update",
            Some("http://127.0.0.1:2375/v4.0.0/libpod/containers/x/update"),
        ),
        ("unix://2f746d70/images/x/json", None),
    ];
    for (input, want) in cases {
        assert_eq!(libpod_uri(input).as_deref(), want, "{input}");
    }
}

#[test]
fn misc_helpers() {
    assert_eq!(secs_i32(Duration::from_millis(1500)), 2);
    assert_eq!(secs_i32(Duration::from_secs(2)), 2);
    assert_eq!(real_time(Some("0001-01-01T00:00:00Z".into())), None);
    assert_eq!(
        real_time(Some("2024-01-01T00:00:00Z".into())).as_deref(),
        Some("2024-01-01T00:00:00Z")
    );
    assert_eq!(frames_to_lines(b"a\nb\r\nc"), vec!["a", "b", "c"]);
    assert_eq!(lower_first("Socket not found"), "socket not found");
}

#[tokio::test]
async fn connect_to_nothing_is_unreachable() {
    let err = DockerRuntime::connect("unix:///nonexistent/archipelago.sock")
        .await
        .expect_err("no socket");
    assert_eq!(err.kind(), EngineErrorKind::Unreachable);
    assert!(
        err.to_string()
            .contains("unix:///nonexistent/archipelago.sock"),
        "{err}"
    );
    let err = DockerRuntime::connect("ftp://x").await.expect_err("scheme");
    assert_eq!(err.kind(), EngineErrorKind::Unreachable);
}
