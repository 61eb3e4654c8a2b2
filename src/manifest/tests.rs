use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

/// The contract's example manifest, with a build-free image source.
const FULL: &str = r#"id: lnd
name: LND
version: "0.18.3"
description: Lightning Network Daemon
dependencies: [bitcoind]
container:
  image: lightninglabs/lnd:v0.18.3-beta
  command: ["--bitcoin.mainnet"]
  entrypoint: ["lnd"]
  user: "1000:1000"
  env:
    RPCPASS: "${secret:bitcoind/rpc_password}"
    MACAROON: "${secret:macaroon_key}"
    PORT: 8080
  ports: ["9735:9735", "10009:10009/tcp", "53:53/udp"]
  volumes: ["data:/root/.lnd", "conf:/etc/lnd:ro", "logs:/var/log:rw"]
  network: host
  memory_limit: 1GiB
  stop_timeout: 5m
  restart: always
  health:
    http: {port: 8080, path: /}
    interval: 10s
    timeout: 3s
    retries: 3
    start_period: 60s
hooks:
  post_create:
    - exec: ["lncli", "create"]
      timeout: 2m
secrets:
  rpc_password: {kind: password, length: 32}
  macaroon_key: {kind: hex}
  rpcauth: {kind: rpcauth, user: archipelago, password: rpc_password}
ui: {port: 8080, path: /}
"#;

const MINIMAL: &str =
    "id: lnd\nname: LND\nversion: '1'\ncontainer:\n  image: busybox\n  memory_limit: 64Mi\n";

fn parse(text: &str) -> Result<AppManifest, Vec<Problem>> {
    AppManifest::from_yaml(Path::new("apps/lnd/manifest.yml"), text)
}

fn lines(problems: &[Problem]) -> Vec<String> {
    problems.iter().map(ToString::to_string).collect()
}

#[test]
fn parses_the_full_example() {
    let m = parse(FULL).expect("the contract example parses");
    assert_eq!(m.id.as_str(), "lnd");
    assert_eq!(m.dependencies, vec!["bitcoind".parse::<AppId>().unwrap()]);
    let c = &m.container;
    assert_eq!(c.image.as_deref(), Some("lightninglabs/lnd:v0.18.3-beta"));
    assert_eq!(c.env["PORT"], "8080");
    assert_eq!(
        c.ports,
        vec![
            PortMapping {
                host: 9735,
                container: 9735,
                protocol: Protocol::Tcp
            },
            PortMapping {
                host: 10009,
                container: 10009,
                protocol: Protocol::Tcp
            },
            PortMapping {
                host: 53,
                container: 53,
                protocol: Protocol::Udp
            },
        ]
    );
    assert_eq!(
        c.volumes[1],
        VolumeMount {
            app: None,
            name: "conf".into(),
            path: "/etc/lnd".into(),
            read_only: true,
            snapshot: SnapshotPolicy::Copy,
        }
    );
    assert!(!c.volumes[2].read_only);
    assert_eq!(c.memory_limit.bytes(), 1 << 30);
    assert_eq!(c.stop_timeout, Duration::from_secs(300));
    assert_eq!(c.restart, RestartPolicy::Always);
    let health = c.health.as_ref().expect("health is set");
    assert_eq!(
        health.probe,
        HealthProbe::Http {
            port: 8080,
            path: "/".into()
        }
    );
    assert_eq!(health.start_period, Duration::from_secs(60));
    assert_eq!(m.hooks.post_create[0].timeout, Duration::from_secs(120));
    assert_eq!(m.secrets["macaroon_key"], SecretSpec::Hex { bytes: 32 });
    assert_eq!(
        m.secrets["rpcauth"],
        SecretSpec::Rpcauth {
            user: "archipelago".into(),
            password: "rpc_password".into()
        }
    );
    assert_eq!(
        m.ui,
        Some(UiSpec {
            port: 8080,
            path: "/".into()
        })
    );
    assert_eq!(
        m.validate(Path::new("apps/lnd/manifest.yml"), Path::new("apps/lnd")),
        vec![]
    );
}

#[test]
fn fills_defaults() {
    let m = parse(MINIMAL).expect("minimal manifest parses");
    let c = &m.container;
    assert_eq!(c.stop_timeout, Duration::from_secs(10));
    assert_eq!(c.restart, RestartPolicy::OnFailure);
    assert_eq!(
        (c.network.clone(), c.health.clone(), m.ui.clone()),
        (None, None, None)
    );
    assert!(m.dependencies.is_empty() && m.secrets.is_empty() && m.hooks.post_create.is_empty());

    let extra = "  health: {tcp: {port: 9735}}\nhooks: {post_create: [{exec: [x]}]}\n\
                 secrets: {a: {kind: password}}\nui: {port: 80}\n";
    let m = parse(&format!("{MINIMAL}{extra}")).expect("defaults parse");
    let health = m.container.health.expect("health is set");
    assert_eq!(health.probe, HealthProbe::Tcp { port: 9735 });
    let timings = (
        health.interval,
        health.timeout,
        health.retries,
        health.start_period,
    );
    assert_eq!(
        timings,
        (
            Duration::from_secs(10),
            Duration::from_secs(3),
            3,
            Duration::ZERO
        )
    );
    assert_eq!(m.hooks.post_create[0].timeout, Duration::from_secs(60));
    assert_eq!(m.secrets["a"], SecretSpec::Password { length: 32 });
    assert_eq!(m.ui.expect("ui is set").path, "/");

    let build = "id: lnd\nname: LND\nversion: '1'\ncontainer:\n  build: {}\n  memory_limit: 64Mi\n";
    let spec = parse(build)
        .expect("build parses")
        .container
        .build
        .expect("build is set");
    assert_eq!(spec.context, PathBuf::from("."));
    assert_eq!(spec.dockerfile, "Dockerfile");
}

#[test]
fn serializes_and_parses_back() {
    let m = parse(FULL).expect("the contract example parses");
    let text = serde_yaml::to_string(&m).expect("manifests serialize");
    assert_eq!(parse(&text), Ok(m));
}

#[test]
fn reports_parse_errors_with_field_and_line() {
    let cases: &[(&str, &str, &str)] = &[
        ("1GiB", "512m", "container.memory_limit: line 18: \"512m\" is ambiguous: write 512Mi for powers of 1024 or 512M for powers of 1000"),
        ("1GiB", "5Mi", "container.memory_limit: line 18: \"5Mi\" is 5242880 bytes, below the minimum of 6 MiB (6291456 bytes)"),
        ("  network: host\n", "  network: host\n  privileged: true\n", "container.privileged: line 18: unknown field `privileged`: privileged containers are not supported"),
        ("  network: host\n", "  netwrok: host\n", "container.netwrok: line 17: unknown field `netwrok`, expected one of `image`, `build`, `command`, `entrypoint`, `user`, `env`, `ports`, `volumes`, `cap_add`, `cap_drop`, `pids_limit`, `network`, `memory_limit`, `stop_timeout`, `restart`, `health`"),
        ("ui: {port", "color: red\nui: {port", "color: line 35: unknown field `color`, expected one of `id`, `name`, `version`, `description`, `dependencies`, `container`, `hooks`, `secrets`, `ui`, `onion`"),
        ("  memory_limit: 1GiB\n", "", "container.memory_limit: line 7: is required"),
        ("name: LND\n", "", "name: line 1: is required"),
        ("stop_timeout: 5m", "stop_timeout: 5x", "container.stop_timeout: line 19: invalid duration \"5x\": unknown time unit \"x\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)"),
        ("stop_timeout: 5m", "stop_timeout: 5", "container.stop_timeout: line 19: duration 5 has no unit: write e.g. 5s"),
        ("\"10009:10009/tcp\"", "\"10009:10009/sctp\"", "container.ports[1]: line 15: invalid port mapping \"10009:10009/sctp\": unknown protocol \"sctp\", expected tcp or udp"),
        ("\"conf:/etc/lnd:ro\"", "\"conf\"", "container.volumes[1]: line 16: invalid volume \"conf\": expected NAME:PATH[:ro], e.g. data:/data"),
        ("{kind: hex}", "{kind: hex, length: 3}", "secrets.macaroon_key.length: line 33: unknown field `length`, expected `bytes`"),
        ("{kind: hex}", "{kind: rsa}", "secrets.macaroon_key.kind: line 33: unknown variant `rsa`, expected one of `password`, `hex`, `rpcauth`"),
        ("user: archipelago, ", "", "secrets.rpcauth.user: line 34: is required"),
        ("    http: {port: 8080, path: /}\n", "", "container.health: line 22: needs one probe: http, tcp or exec"),
        ("    http: {port: 8080, path: /}\n", "    http: {port: 8080, path: /}\n    tcp: {port: 1}\n", "container.health: line 22: has more than one probe: keep one of http, tcp and exec"),
        ("    retries: 3\n", "    retries: -1\n", "container.health.retries: line 25: invalid type: integer `-1`, expected u32"),
        ("id: lnd", "id: LND", "id: line 1: invalid app id \"LND\": use 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit"),
        ("[bitcoind]", "[../etc]", "dependencies[0]: line 5: invalid app id \"../etc\": use 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit"),
        ("restart: always", "restart: sometimes", "container.restart: line 20: unknown variant `sometimes`, expected one of `always`, `on-failure`, `never`"),
        ("    PORT: 8080\n", "    PORT:\n", "container.env.PORT: line 14: value is empty: write \"\" for an empty string"),
        ("id: lnd\n", "id: 'lnd\n", "id: line 36: found unexpected end of stream, while scanning a quoted scalar"),
    ];
    for (from, to, want) in cases {
        assert!(FULL.contains(from), "{from:?} is not in the example");
        let text = FULL.replacen(from, to, 1);
        let got = parse(&text).map(|_| ()).map_err(|p| lines(&p));
        assert_eq!(
            got,
            Err(vec![format!("apps/lnd/manifest.yml: {want}")]),
            "{from:?} -> {to:?}"
        );
    }
}

#[test]
fn validates_single_app_rules() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("id: lnd", "id: lnd2", &["id: \"lnd2\" does not match the folder name \"lnd\""]),
        ("name: LND", "name: ' '", &["name: is empty"]),
        ("\"0.18.3\"", "\"0.18 beta\"", &["version: \"0.18 beta\" is not usable as an image tag: use 1 to 128 characters of A-Z a-z 0-9 _ . -, not starting with . or -"]),
        ("[bitcoind]", "[bitcoind, lnd, bitcoind]", &[
            "dependencies[1]: an app cannot depend on itself",
            "dependencies[2]: `bitcoind` is listed twice",
        ]),
        ("  image: lightninglabs/lnd:v0.18.3-beta\n", "  image: lightninglabs/lnd:v0.18.3-beta\n  build: {context: .}\n", &["container: has both image and build: keep exactly one"]),
        ("  image: lightninglabs/lnd:v0.18.3-beta\n", "", &["container: needs one of image and build"]),
        ("  image: lightninglabs/lnd:v0.18.3-beta\n", "  build: {context: ../bitcoind}\n", &["container.build.context: \"../bitcoind\" escapes the app folder: use a path inside it"]),
        ("  image: lightninglabs/lnd:v0.18.3-beta\n", "  build: {context: /srv}\n", &["container.build.context: \"/srv\" escapes the app folder: use a path inside it"]),
        ("  image: lightninglabs/lnd:v0.18.3-beta\n", "  build: {context: src, dockerfile: ../../Dockerfile}\n", &["container.build.dockerfile: \"../../Dockerfile\" must be a path inside the build context"]),
        ("  image: lightninglabs/lnd:v0.18.3-beta\n", "  image: 'a b'\n", &["container.image: \"a b\" is not an image reference"]),
        ("\"53:53/udp\"", "\"9735:9999\"", &["container.ports[2]: host port 9735/tcp is already published by ports[0]"]),
        ("\"data:/root/.lnd\"", "\"/srv/lnd:/root/.lnd\"", &["container.volumes[0]: \"/srv/lnd\" is a host path: absolute host paths are refused, use a volume name such as data"]),
        ("\"data:/root/.lnd\"", "\"../data:/root/.lnd\"", &["container.volumes[0]: volume name \"../data\" may not contain '/' or '..'"]),
        ("\"data:/root/.lnd\"", "\"a..b:/root/.lnd\"", &["container.volumes[0]: volume name \"a..b\" may not contain '/' or '..'"]),
        ("\"data:/root/.lnd\"", "\"da ta:/root/.lnd\"", &["container.volumes[0]: volume name \"da ta\" is invalid: use A-Z a-z 0-9 _ . -"]),
        ("\"data:/root/.lnd\"", "\"data:root\"", &["container.volumes[0]: container path \"root\" must be absolute"]),
        ("\"data:/root/.lnd\"", "\"data:/etc/lnd\"", &["container.volumes[1]: container path \"/etc/lnd\" is mounted twice"]),
        ("\"data:/root/.lnd\"", "\"bitcoind/data:/bitcoin\"", &["container.volumes[0]: a dependency's volume is mounted read-only only: write \"bitcoind/data:/bitcoin:ro\""]),
        ("\"data:/root/.lnd\"", "\"tor/data:/tor:ro\"", &["container.volumes[0]: volume \"tor/data\" belongs to `tor`, which is not a dependency of this app"]),
        ("network: host", "network: 'container:bitcoind'", &["container.network: \"container:bitcoind\": container: networks are refused; use host, none or a network name"]),
        ("network: host", "network: 'ns:/proc/1/ns/net'", &["container.network: \"ns:/proc/1/ns/net\": ns: networks are refused; use host, none or a network name"]),
        ("network: host", "network: '-x'", &["container.network: \"-x\" is not a network name: use A-Z a-z 0-9 _ . -, starting with a letter or digit"]),
        ("network: host\n", "network: host\n  cap_add: [net_admin, CAP_SYS_TIME, BOGUS]\n  cap_drop: [ALL]\n  pids_limit: 0\n", &[
            "container.cap_add[2]: \"BOGUS\" is not a Linux capability",
            "container.cap_drop[0]: \"ALL\": ALL is refused; name each capability the app needs",
            "container.pids_limit: must be above 0: leave it out for the default",
        ]),
        ("ui: {port: 8080, path: /}", "ui: {port: 8080, path: /}\nonion: {ports: [\"80:8080\", \"80:9000\"]}", &["onion.ports[1]: onion port 80 is listed twice"]),
        ("ui: {port: 8080, path: /}", "ui: {port: 8080, path: /}\nonion: {ports: []}", &["onion.ports: is empty: list at least one ONION:TARGET"]),
        ("    PORT: 8080", "    PORT: \"${onion}\"", &["container.env.PORT: ${onion} needs this app's own `onion` ports"]),
        ("    PORT: 8080", "    PORT: \"${onion:tor}\"", &["container.env.PORT: ${onion:tor} refers to `tor`, which is not a dependency of this app"]),
        ("\"10009:10009/tcp\"", "\"8080:80\"", &["container.health.http.port: 8080 is the host side of the published port 8080:80/tcp: probes connect inside the container, so name the port it listens on (80)"]),
        ("http: {port: 8080, path: /}", "http: {port: 0, path: health}", &[
            "container.health.http.path: \"health\" must start with '/'",
            "container.health.http.port: port 0 is not allowed",
        ]),
        ("interval: 10s", "interval: 0s", &["container.health.interval: must be above 0s"]),
        ("[\"lncli\", \"create\"]", "[]", &["hooks.post_create[0].exec: is empty"]),
        ("{kind: password, length: 32}", "{kind: password, length: 4}", &["secrets.rpc_password.length: 4 is out of range 8-4096"]),
        ("password: rpc_password}", "password: nope}", &["secrets.rpcauth.password: names no secret of this app: \"nope\""]),
        ("password: rpc_password}", "password: rpcauth}", &["secrets.rpcauth.password: \"rpcauth\" is an rpcauth secret; name a password or hex secret"]),
        ("user: archipelago", "user: 'a:b'", &["secrets.rpcauth.user: \"a:b\" is not a valid rpc user name"]),
        ("macaroon_key: {kind: hex}", "'.key': {kind: hex}", &[
            "container.env.MACAROON: ${secret:macaroon_key} names no secret of this app",
            "secrets..key: \".key\" is not a valid secret name: use A-Z a-z 0-9 _ . -, starting with a letter, digit or _",
        ]),
        ("${secret:bitcoind/rpc_password}", "${secret:tor/rpc_password}", &["container.env.RPCPASS: ${secret:tor/rpc_password} refers to `tor`, which is not a dependency of this app"]),
        ("${secret:bitcoind/rpc_password}", "${secret:lnd/nope}", &["container.env.RPCPASS: ${secret:lnd/nope} names no secret of this app"]),
        ("${secret:bitcoind/rpc_password}", "${secret:bitcoind/rpc", &["container.env.RPCPASS: unterminated secret reference in \"${secret:bitcoind/rpc\": missing '}'"]),
        ("[\"--bitcoin.mainnet\"]", "[\"--pw=${secret:nope}\"]", &["container.command[0]: ${secret:nope} names no secret of this app"]),
        ("ui: {port: 8080, path: /}", "ui: {port: 8080, path: x}", &["ui.path: \"x\" must start with '/'"]),
    ];
    for (from, to, want) in cases {
        assert!(FULL.contains(from), "{from:?} is not in the example");
        let text = FULL.replacen(from, to, 1);
        let m = parse(&text).unwrap_or_else(|p| panic!("{to:?} parses: {p:?}"));
        let mut got = lines(&m.validate(Path::new("apps/lnd/manifest.yml"), Path::new("apps/lnd")));
        got.sort();
        let want: Vec<String> = want
            .iter()
            .map(|w| format!("apps/lnd/manifest.yml: {w}"))
            .collect();
        assert_eq!(got, want, "{from:?} -> {to:?}");
    }
}

type PortCase<'a> = (&'a str, Result<(u16, u16, Protocol), &'a str>);
type VolumeCase<'a> = (&'a str, Result<(&'a str, &'a str, bool), &'a str>);

#[test]
fn parses_ports_and_volumes() {
    let ports: &[PortCase] = &[
        ("80:8080", Ok((80, 8080, Protocol::Tcp))),
        ("53:53/udp", Ok((53, 53, Protocol::Udp))),
        ("1:65535/tcp", Ok((1, 65535, Protocol::Tcp))),
        ("8080", Err("expected HOST:CONTAINER")),
        ("0:80", Err("port 0 is not allowed")),
        ("65536:80", Err("\"65536\" is not a port number")),
        ("+80:80", Err("\"+80\" is not a port number")),
        ("127.0.0.1:80:80", Err("\"127.0.0.1\" is not a port number")),
        ("80:80/sctp", Err("unknown protocol \"sctp\"")),
    ];
    for (input, want) in ports {
        let got = input.parse::<PortMapping>();
        match (got, want) {
            (Ok(p), Ok((h, c, proto))) => {
                assert_eq!((p.host, p.container, p.protocol), (*h, *c, *proto))
            }
            (Err(e), Err(text)) => assert!(e.contains(text), "{input}: {e}"),
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }
    let volumes: &[VolumeCase] = &[
        ("data:/data", Ok(("data", "/data", false))),
        ("conf:/etc/app:ro", Ok(("conf", "/etc/app", true))),
        ("conf:/etc/app:rw", Ok(("conf", "/etc/app", false))),
        ("conf:/etc/app:z", Err("unknown mode \"z\"")),
        ("data", Err("expected NAME:PATH[:ro]")),
        ("a:b:c:d", Err("expected NAME:PATH[:ro]")),
        ("lnd/data:/lnd:ro", Ok(("data", "/lnd", true))),
    ];
    for (input, want) in volumes {
        let got = input.parse::<VolumeMount>();
        match (got, want) {
            (Ok(v), Ok((n, p, ro))) => assert_eq!(
                (v.name.as_str(), v.path.as_str(), v.read_only),
                (*n, *p, *ro)
            ),
            (Err(e), Err(text)) => assert!(e.contains(text), "{input}: {e}"),
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn volumes_of_dependencies_and_the_long_form() {
    let parse = |yaml: &str| serde_yaml::from_str::<VolumeMount>(yaml);
    let dep = parse("\"lnd/data:/lnd:ro\"").unwrap();
    assert_eq!(dep.app.as_ref().map(AppId::as_str), Some("lnd"));
    assert_eq!(dep.source(), "lnd/data");
    assert_eq!(dep.to_string(), "lnd/data:/lnd:ro");
    let not_an_app = parse("\"../data:/x\"").unwrap();
    assert_eq!(
        (not_an_app.app, not_an_app.name.as_str()),
        (None, "../data")
    );
    let long = parse("{name: chain, path: /data, snapshot: none}").unwrap();
    assert_eq!(long.snapshot, SnapshotPolicy::None);
    assert!(long.is_own() && !long.read_only);
    let round = serde_yaml::to_string(&long).unwrap();
    assert_eq!(parse(&round).unwrap(), long);
    let err = parse("{name: chain, path: /data, snapshot: maybe}").unwrap_err();
    assert!(err.to_string().contains("unknown variant `maybe`"), "{err}");
    let err = parse("{name: chain, path: /data, mode: ro}").unwrap_err();
    assert!(err.to_string().contains("unknown field `mode`"), "{err}");
}

#[test]
fn finds_secret_references() {
    let r = |app: Option<&str>, name: &str| SecretRef {
        app: app.map(|a| a.parse().expect("valid id")),
        name: name.to_string(),
    };
    let cases: Vec<(&str, Result<Vec<SecretRef>, &str>)> = vec![
        ("plain", Ok(vec![])),
        ("${HOME}/x", Ok(vec![])),
        ("${secret:pw}", Ok(vec![r(None, "pw")])),
        (
            "u:${secret:bitcoind/rpc_password}@${secret:a.b-c_d}",
            Ok(vec![
                r(Some("bitcoind"), "rpc_password"),
                r(None, "a.b-c_d"),
            ]),
        ),
        ("${secret:pw", Err("unterminated secret reference")),
        ("${secret:}", Err("invalid secret name \"\"")),
        ("${secret:Bad/x}", Err("invalid app id \"Bad\"")),
        ("${secret:a/b/c}", Err("invalid secret name \"b/c\"")),
        ("${secret:../x}", Err("invalid app id \"..\"")),
    ];
    for (input, want) in cases {
        match (secret_refs(input), want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{input}"),
            (Err(e), Err(text)) => assert!(e.contains(text), "{input}: {e}"),
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn validates_app_ids() {
    let long = "a".repeat(63);
    let too_long = "a".repeat(64);
    let cases = [
        ("lnd", true),
        ("0x", true),
        ("a-b-1", true),
        (long.as_str(), true),
        (too_long.as_str(), false),
        ("", false),
        ("-a", false),
        ("A", false),
        ("a_b", false),
        ("a/b", false),
        ("..", false),
        ("a.b", false),
    ];
    for (id, ok) in cases {
        assert_eq!(id.parse::<AppId>().is_ok(), ok, "{id:?}");
    }
    let id: AppId = serde_yaml::from_str("lnd").expect("valid id");
    assert_eq!((id.as_str(), id.to_string()), ("lnd", "lnd".to_string()));
    assert_eq!(serde_yaml::to_string(&id).expect("ids serialize"), "lnd\n");
}

#[test]
fn resolves_image_sources() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app_dir = dir.path().join("lnd");
    std::fs::create_dir_all(app_dir.join("src")).expect("create app dir");
    let id: AppId = "lnd".parse().expect("valid id");
    let base = parse(MINIMAL).expect("minimal parses").container;

    assert_eq!(base.image_ref(&id, "1"), "busybox");
    assert_eq!(
        base.resolve(&app_dir, &id, "1").expect("pull resolves"),
        ResolvedSource::Pull {
            image: "busybox".into()
        }
    );

    let mut built = base.clone();
    built.image = None;
    built.build = Some(BuildSpec {
        context: "src/../src".into(),
        dockerfile: "Dockerfile".into(),
        args: BTreeMap::from([("A".into(), "1".into())]),
    });
    assert_eq!(built.image_ref(&id, "0.1"), "archipelago/lnd:0.1");
    let real = app_dir.join("src").canonicalize().expect("src exists");
    assert_eq!(
        built.resolve(&app_dir, &id, "0.1").expect("build resolves"),
        ResolvedSource::Build {
            context: real,
            dockerfile: "Dockerfile".into(),
            args: BTreeMap::from([("A".into(), "1".into())]),
            tag: "archipelago/lnd:0.1".into(),
        }
    );

    std::os::unix::fs::symlink(dir.path(), app_dir.join("out")).expect("symlink");
    let mut escaping = built.clone();
    escaping.build.as_mut().expect("build is set").context = "out".into();
    let err = escaping
        .resolve(&app_dir, &id, "0.1")
        .expect_err("symlink escapes");
    assert!(matches!(err, ManifestError::ContextEscapes { .. }), "{err}");
    escaping.build.as_mut().expect("build is set").context = "../x".into();
    let err = escaping
        .resolve(&app_dir, &id, "0.1")
        .expect_err(".. escapes");
    assert!(matches!(err, ManifestError::ContextEscapes { .. }), "{err}");

    let mut both = built.clone();
    both.image = Some("busybox".into());
    let err = both
        .resolve(&app_dir, &id, "0.1")
        .expect_err("both is an error");
    assert_eq!(
        err.to_string(),
        "app lnd: container has both image and build; keep one"
    );
}
