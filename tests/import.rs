//! `archipelago import` as an owner runs it: the built binary on the compose files of
//! `tests/fixtures/import/` (copied into a temporary node), every draft validated, and the
//! container spec archipelago would create from each draft compared with what compose
//! says; then a container made on the test dockerd outside archipelago, imported.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use archipelago::catalog::Catalog;
use archipelago::engine::{Bind, ContainerSpec, PortBinding};
use archipelago::manifest::{AppManifest, HealthProbe, RestartPolicy};
use archipelago::store::Store;

const RPCAUTH: &str = "rt:93648e835a54c573682c2eb19f882535$7681e9c5b74bdd85e78166031d2058e1069b3ed7ed967c93fc63abba06f31144";
const RPC_PASS: &str = "hunter2-rpc-pass";

/// A temporary node: the fixtures copied to `src/`, a config whose apps_dir is `apps/`
/// and data_dir `data/`.
struct Node {
    dir: tempfile::TempDir,
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

impl Node {
    fn new() -> Node {
        Node::with_engine("unix:///var/run/docker.sock")
    }

    fn with_engine(host: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/import");
        copy_tree(&fixtures, &dir.path().join("src"));
        std::fs::write(dir.path().join("password"), "pw\n").unwrap();
        std::fs::write(
            dir.path().join("config.yml"),
            format!(
                "apps_dir: apps\ndata_dir: data\nengine: {{host: \"{host}\"}}\nauth: {{password_file: password}}\n"
            ),
        )
        .unwrap();
        Node { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn config(&self) -> String {
        self.path("config.yml").display().to_string()
    }

    /// Runs the binary in `src/` with `args`, with the test's variables removed and `env`
    /// set.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_archipelago"))
            .args(args)
            .current_dir(self.path("src"))
            .env_remove("RUST_LOG")
            .env_remove("BITCOIN_RPC_PASS")
            .env_remove("LND_TAG")
            .env_remove("APP_TOKEN")
            .env_remove("MODE")
            .env_remove("DEBUG")
            .envs(env.iter().copied())
            .output()
            .expect("the archipelago binary runs")
    }

    /// `import compose FILE --config CONFIG` plus `extra`: stdout lines and exit code.
    fn import(&self, file: &str, extra: &[&str], env: &[(&str, &str)]) -> (Vec<String>, i32) {
        let config = self.config();
        let mut args = vec!["import", "compose", file, "--config", &config];
        args.extend(extra);
        let out = self.run(&args, env);
        let stdout = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.replace(&self.dir.path().display().to_string(), "{dir}"))
            .collect();
        (stdout, out.status.code().unwrap_or(-1))
    }

    /// `archipelago validate --config CONFIG` passes.
    fn validates(&self) {
        let out = self.run(&["validate", "--config", &self.config()], &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "validate: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The spec archipelago would create for each draft, with its manifest.
    fn specs(&self) -> BTreeMap<String, (ContainerSpec, AppManifest)> {
        let (catalog, problems) = Catalog::load(&self.path("apps"));
        assert_eq!(problems, vec![], "the drafts form a valid catalog");
        let store = Store::open(&self.path("data")).unwrap();
        catalog
            .apps
            .values()
            .map(|app| {
                let spec = archipelago::spec::container_spec(app, &store, "bridge")
                    .unwrap_or_else(|e| panic!("spec of {}: {e}", app.manifest.id));
                (app.manifest.id.to_string(), (spec, app.manifest.clone()))
            })
            .collect()
    }

    /// Every draft's text, for the no-secret check.
    fn drafts_text(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(self.path("apps")).unwrap() {
            let path = entry.unwrap().path().join("manifest.yml");
            all.push_str(&std::fs::read_to_string(path).unwrap());
        }
        all
    }
}

/// What compose says a service's container is.
struct Want {
    image: &'static str,
    command: Option<Vec<&'static str>>,
    entrypoint: Option<Vec<&'static str>>,
    user: Option<&'static str>,
    env: Vec<(&'static str, String)>,
    ports: Vec<(u16, u16, bool)>,
    /// Host side relative to the data folder.
    binds: Vec<(&'static str, &'static str, bool)>,
    memory: u64,
    network: &'static str,
    stop: Duration,
    restart: RestartPolicy,
    /// exec, interval, timeout, retries, start period (seconds).
    health: Option<(Vec<&'static str>, u64, u64, u32, u64)>,
    cap_add: Vec<&'static str>,
}

fn want(image: &'static str, memory: u64, network: &'static str) -> Want {
    Want {
        image,
        command: None,
        entrypoint: None,
        user: None,
        env: Vec::new(),
        ports: Vec::new(),
        binds: Vec::new(),
        memory,
        network,
        stop: Duration::from_secs(10),
        restart: RestartPolicy::Never,
        health: None,
        cap_add: Vec::new(),
    }
}

fn check(node: &Node, id: &str, w: Want) {
    let specs = node.specs();
    let (spec, manifest) = specs.get(id).unwrap_or_else(|| panic!("a draft for {id}"));
    let strs = |v: &Option<Vec<&str>>| {
        v.as_ref()
            .map(|v| v.iter().map(|s| s.to_string()).collect())
    };
    assert_eq!(spec.image, w.image, "{id}: image");
    assert_eq!(spec.command, strs(&w.command), "{id}: command");
    assert_eq!(spec.entrypoint, strs(&w.entrypoint), "{id}: entrypoint");
    assert_eq!(spec.user.as_deref(), w.user, "{id}: user");
    let env: BTreeMap<String, String> =
        w.env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    assert_eq!(spec.env, env, "{id}: env");
    let ports: Vec<PortBinding> = w
        .ports
        .iter()
        .map(|&(host, container, udp)| PortBinding {
            host,
            container,
            udp,
        })
        .collect();
    assert_eq!(spec.ports, ports, "{id}: ports");
    let binds: Vec<Bind> = w
        .binds
        .iter()
        .map(|&(host, container, read_only)| Bind {
            host: node.path("data").join(host),
            container: container.to_string(),
            read_only,
        })
        .collect();
    assert_eq!(spec.binds, binds, "{id}: binds");
    assert_eq!(spec.memory_limit, w.memory, "{id}: memory");
    assert_eq!(spec.network, w.network, "{id}: network");
    assert_eq!(spec.stop_timeout, w.stop, "{id}: stop timeout");
    assert_eq!(spec.cap_add, w.cap_add, "{id}: cap_add");
    assert_eq!(manifest.container.restart, w.restart, "{id}: restart");
    let health = manifest.container.health.as_ref().map(|h| {
        let HealthProbe::Exec(exec) = &h.probe else {
            panic!("{id}: an exec probe")
        };
        (
            exec.clone(),
            h.interval.as_secs(),
            h.timeout.as_secs(),
            h.retries,
            h.start_period.as_secs(),
        )
    });
    let want_health = w.health.map(|(exec, i, t, r, s)| {
        (
            exec.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            i,
            t,
            r,
            s,
        )
    });
    assert_eq!(health, want_health, "{id}: health");
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn node_stack_round_trips_with_secrets_in_files_only() {
    let node = Node::new();
    let (lines, code) = node.import("node.yml", &[], &[]);
    let src = "{dir}/src";
    assert_eq!(
        lines,
        [
            format!("plan: bitcoind: bitcoin: rename {src}/bitcoin -> {{dir}}/data/apps/bitcoind/bitcoin (same file system; run with --move to do it) (also used by lnd)"),
            format!("plan: lnd: lnd: rename {src}/lnd -> {{dir}}/data/apps/lnd/lnd (same file system; run with --move to do it)"),
            "secret: bitcoind/rpcauth: stored in {dir}/data/secrets/bitcoind/rpcauth".to_string(),
            "secret: bitcoind/rpcpassword: stored in {dir}/data/secrets/bitcoind/rpcpassword".to_string(),
            "draft: bitcoind: {dir}/apps/bitcoind/manifest.yml".to_string(),
            "draft: lnd: {dir}/apps/lnd/manifest.yml".to_string(),
        ]
    );
    assert_eq!(code, 0);
    node.validates();

    let secret = |name: &str| node.path("data/secrets/bitcoind").join(name);
    assert_eq!(std::fs::read_to_string(secret("rpcauth")).unwrap(), RPCAUTH);
    assert_eq!(
        std::fs::read_to_string(secret("rpcpassword")).unwrap(),
        RPC_PASS
    );
    assert_eq!(mode(&secret("rpcauth")), 0o600);
    assert_eq!(mode(&node.path("data/secrets/bitcoind")), 0o700);
    let drafts = node.drafts_text();
    for value in [RPC_PASS, RPCAUTH, &RPCAUTH[3..35], &RPCAUTH[36..]] {
        assert!(!drafts.contains(value), "a draft holds a secret value");
        assert!(
            !lines.join("\n").contains(value),
            "the report holds a secret value"
        );
    }

    let mut bitcoind = want("lncm/bitcoind:v27.1", 2 << 30, "node_default");
    bitcoind.command = Some(vec![
        "-server=1",
        format!("-rpcauth={RPCAUTH}").leak(),
        "-datadir=/home/bitcoin/.bitcoin",
    ]);
    bitcoind.env = vec![
        ("NETWORK", "mainnet".into()),
        ("RPCAUTH", RPCAUTH.into()),
        ("RPCPASSWORD", RPC_PASS.into()),
    ];
    bitcoind.ports = vec![(8333, 8333, false)];
    bitcoind.binds = vec![("apps/bitcoind/bitcoin", "/home/bitcoin/.bitcoin", false)];
    bitcoind.stop = Duration::from_secs(300);
    bitcoind.restart = RestartPolicy::Always;
    bitcoind.health = Some((
        vec![
            "/bin/sh",
            "-c",
            "bitcoin-cli -rpcpassword=$RPCPASSWORD getblockchaininfo",
        ],
        30,
        10,
        5,
        60,
    ));
    check(&node, "bitcoind", bitcoind);

    let mut lnd = want("lightninglabs/lnd:v0.18.3-beta", 512 << 20, "node_default");
    lnd.command = Some(vec![
        "--bitcoind.rpchost=bitcoind",
        format!("--bitcoind.rpcpass={RPC_PASS}").leak(),
    ]);
    lnd.env = vec![("BITCOIND_PASS", RPC_PASS.into())];
    lnd.ports = vec![(9735, 9735, false), (10009, 10009, false)];
    lnd.binds = vec![
        ("apps/lnd/lnd", "/root/.lnd", false),
        ("apps/bitcoind/bitcoin", "/bitcoin", true),
    ];
    lnd.stop = Duration::from_secs(90);
    lnd.restart = RestartPolicy::OnFailure;
    check(&node, "lnd", lnd);
    let specs = node.specs();
    assert_eq!(specs["lnd"].1.dependencies[0].as_str(), "bitcoind");
    assert!(
        drafts.contains("${secret:bitcoind/rpcpassword}"),
        "{drafts}"
    );
}

#[test]
fn move_renames_the_folder_leaves_a_link_and_a_second_run_touches_nothing() {
    let node = Node::new();
    let (lines, code) = node.import("node.yml", &["--move"], &[]);
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(
        lines[..2],
        [
            "plan: bitcoind: bitcoin: moved {dir}/src/bitcoin -> {dir}/data/apps/bitcoind/bitcoin; {dir}/src/bitcoin now links to it (also used by lnd)",
            "plan: lnd: lnd: moved {dir}/src/lnd -> {dir}/data/apps/lnd/lnd; {dir}/src/lnd now links to it",
        ]
    );
    let target = node.path("data/apps/bitcoind/bitcoin");
    let block = target.join("blocks/blk00000.dat");
    assert_eq!(std::fs::read_to_string(&block).unwrap(), "chain\n");
    assert_eq!(
        std::fs::read_link(node.path("src/bitcoin")).unwrap(),
        target
    );
    assert_eq!(
        std::fs::read_to_string(node.path("src/bitcoin/blocks/blk00000.dat")).unwrap(),
        "chain\n",
        "the old path still reaches the data"
    );
    let before = std::fs::read_to_string(node.path("apps/bitcoind/manifest.yml")).unwrap();

    let (lines, code) = node.import("node.yml", &["--move"], &[]);
    assert_eq!(
        lines,
        [
            "bitcoind: manifest.yml: {dir}/apps/bitcoind/manifest.yml exists; left as it is",
            "lnd: manifest.yml: {dir}/apps/lnd/manifest.yml exists; left as it is",
            "plan: bitcoind: bitcoin: {dir}/src/bitcoin already links to {dir}/data/apps/bitcoind/bitcoin; nothing to do (also used by lnd)",
            "plan: lnd: lnd: {dir}/src/lnd already links to {dir}/data/apps/lnd/lnd; nothing to do",
            "secret: bitcoind/rpcauth: already stored in {dir}/data/secrets/bitcoind/rpcauth",
            "secret: bitcoind/rpcpassword: already stored in {dir}/data/secrets/bitcoind/rpcpassword",
        ]
    );
    assert_eq!(code, 1);
    assert_eq!(
        std::fs::read_link(node.path("src/bitcoin")).unwrap(),
        target
    );
    assert_eq!(std::fs::read_to_string(&block).unwrap(), "chain\n");
    assert_eq!(
        std::fs::read_to_string(node.path("apps/bitcoind/manifest.yml")).unwrap(),
        before
    );

    // A target that exists and is not where the source points: nothing is touched.
    let other = Node::new();
    std::fs::create_dir_all(other.path("data/apps/lnd/lnd")).unwrap();
    let (lines, _) = other.import("node.yml", &["--move"], &[]);
    assert!(
        lines.contains(
            &"plan: lnd: lnd: target {dir}/data/apps/lnd/lnd exists; nothing touched".to_string()
        ),
        "{lines:?}"
    );
    assert!(
        other.path("src/lnd/wallet.db").is_file(),
        "the source stays"
    );
}

#[test]
fn commands_environment_and_interpolation() {
    let node = Node::new();
    let (lines, code) = node.import(
        "commands.yml",
        &[],
        &[("MODE", "staging"), ("APP_TOKEN", "tok-from-env")],
    );
    assert_eq!(code, 0, "{lines:?}");
    node.validates();
    let mut web = want("registry.local:5000/web:2.1", 512 << 20, "src_default");
    web.command = Some(vec![
        "serve", "--name", "my node", "--path", "/a b", "fallback", "${HOME}",
    ]);
    web.entrypoint = Some(vec!["/bin/entry", "--flag"]);
    web.user = Some("1000");
    web.env = vec![
        ("FROM_FILE", "yes".into()),
        ("GREETING", "".into()),
        ("MODE", "staging".into()),
        ("PORT", "8080".into()),
        ("SHARED", "from-environment".into()),
    ];
    check(&node, "web", web);
    let mut worker = want("registry.local:5000/worker", 64 << 20, "src_default");
    worker.entrypoint = Some(vec!["/usr/bin/worker", "--once"]);
    worker.command = Some(vec!["--api-token=tok-from-env", "--level", "3"]);
    worker.user = Some("1000:1000");
    worker.env = vec![
        ("API_KEY", "key-abc".into()),
        ("COUNT", "3".into()),
        ("DATABASE_URL", "postgres://app:tok-from-env@db/app".into()),
        ("ENABLED", "true".into()),
        ("PLAIN", "v0.18.3-beta".into()),
        ("TOKEN_AGAIN", "tok-from-env".into()),
    ];
    check(&node, "worker", worker);
    let drafts = node.drafts_text();
    assert!(
        drafts.contains("postgres://app:${secret:api-token}@db/app"),
        "{drafts}"
    );
    assert!(
        !drafts.contains("tok-from-env") && !drafts.contains("key-abc"),
        "{drafts}"
    );
    assert_eq!(
        std::fs::read_to_string(node.path("data/secrets/worker/api-token")).unwrap(),
        "tok-from-env"
    );
}

#[test]
fn ports_in_both_syntaxes() {
    let node = Node::new();
    let (lines, code) = node.import("ports.yml", &[], &[]);
    assert_eq!((lines.len(), code), (1, 0), "{lines:?}");
    node.validates();
    let mut dns = want("example/dns:1", 64 << 20, "src_default");
    dns.ports = vec![
        (53, 53, true),
        (8053, 53, false),
        (9000, 9000, false),
        (8443, 443, false),
        (5353, 5353, true),
    ];
    check(&node, "dns", dns);
}

#[test]
fn volumes_binds_named_and_shared() {
    let node = Node::new();
    let (lines, code) = node.import("volumes.yml", &[], &[]);
    assert_eq!(
        lines[..4],
        [
            "plan: db: data: rename {dir}/src/db/data -> {dir}/data/apps/db/data (same file system; run with --move to do it) (also used by reader)",
            "plan: db: data-2: rename {dir}/src/db/conf -> {dir}/data/apps/db/data-2 (same file system; run with --move to do it)",
            "plan: db: dbcache: its data lives in the engine's volume vols_dbcache; after stopping the container run: mkdir -p {dir}/data/apps/db/dbcache && cp -a --reflink=auto \"$(docker volume inspect -f '{{.Mountpoint}}' vols_dbcache)/.\" {dir}/data/apps/db/dbcache",
            "plan: db: logs: its data lives in the engine's volume shared-logs; after stopping the container run: mkdir -p {dir}/data/apps/db/logs && cp -a --reflink=auto \"$(docker volume inspect -f '{{.Mountpoint}}' shared-logs)/.\" {dir}/data/apps/db/logs",
        ]
    );
    assert_eq!(code, 0);
    node.validates();
    let mut db = want("example/db:16", 1 << 30, "vols_default");
    db.binds = vec![
        ("apps/db/data", "/var/lib/db/data", false),
        ("apps/db/data-2", "/etc/db/data", true),
        ("apps/db/dbcache", "/cache", false),
        ("apps/db/logs", "/var/log/db", false),
    ];
    check(&node, "db", db);
    let mut reader = want("example/reader:1", 128 << 20, "vols_default");
    reader.binds = vec![
        ("apps/db/data", "/srv/db", true),
        ("apps/db/logs", "/logs", true),
    ];
    check(&node, "reader", reader);
}

#[test]
fn health_restart_stop_memory_and_capabilities() {
    let node = Node::new();
    let (lines, code) = node.import("runtime.yml", &[], &[]);
    assert_eq!((lines.len(), code), (4, 0), "{lines:?}");
    node.validates();
    let mut a = want("example/a:1", 1536 << 20, "src_default");
    a.health = Some((vec!["curl", "-f", "http://localhost/"], 10, 2, 4, 0));
    a.restart = RestartPolicy::Always;
    a.stop = Duration::from_secs(20);
    a.cap_add = vec!["NET_ADMIN"];
    check(&node, "a", a);
    let specs = node.specs();
    assert!(specs["a"].0.cap_drop.contains(&"CHOWN".to_string()));
    let mut b = want("example/b:1", 1 << 30, "src_default");
    b.health = Some((
        vec!["/bin/sh", "-c", "pg_isready -U postgres"],
        30,
        30,
        3,
        0,
    ));
    check(&node, "b", b);
    let mut c = want("example/c:1", 256 << 20, "src_default");
    c.restart = RestartPolicy::OnFailure;
    check(&node, "c", c);
    check(&node, "d", want("example/d:1", 100_000_000, "src_default"));
}

#[test]
fn network_modes_and_project_networks() {
    let node = Node::new();
    let (_, code) = node.import("networks.yml", &[], &[]);
    assert_eq!(code, 0);
    node.validates();
    for (id, network) in [
        ("h", "host"),
        ("n", "none"),
        ("br", "bridge"),
        ("dflt", "netproj_default"),
        ("named", "netproj_back"),
        ("renamed", "node-front"),
        ("outside", "ext"),
    ] {
        let image: &'static str = format!("example/{id}:1").leak();
        check(&node, id, want(image, 64 << 20, network));
    }
}

#[test]
fn build_contexts_inside_and_outside_the_draft_folder() {
    let node = Node::new();
    let out = node.path("src/apps").display().to_string();
    let (lines, code) = node.import("build.yml", &["--out", &out], &[]);
    assert_eq!(
        lines,
        [
            "tool: build.context: {dir}/src/tool is outside the draft folder {dir}/src/apps/tool: copy the build context into it; the draft says `.`",
            "draft: web: {dir}/src/apps/web/manifest.yml",
            "draft: tool: {dir}/src/apps/tool/manifest.yml",
        ]
    );
    assert_eq!(code, 1);
    let web = AppManifest::load(&node.path("src/apps/web/manifest.yml")).expect("loads");
    let build = web.container.build.expect("built from source");
    assert_eq!(build.context, PathBuf::from("."));
    assert_eq!(build.dockerfile, "Dockerfile.web");
    assert_eq!(build.args["VERSION"], "1.2");
    assert_eq!(web.version, "imported");
    AppManifest::load(&node.path("src/apps/tool/manifest.yml")).expect("loads");
}

#[test]
fn the_bench_compose_file_round_trips() {
    let node = Node::new();
    let (lines, code) = node.import("bench.yml", &[], &[]);
    assert_eq!((lines.len(), code), (3, 0), "{lines:?}");
    node.validates();
    for id in ["bench-a000", "bench-a001", "bench-a002"] {
        let mut w = want("archipelago-test/busybox:latest", 16 << 20, "none");
        w.command = Some(vec!["sleep", "86400"]);
        w.stop = Duration::from_secs(1);
        check(&node, id, w);
    }
    let specs = node.specs();
    let deps: Vec<&str> = specs["bench-a002"]
        .1
        .dependencies
        .iter()
        .map(|d| d.as_str())
        .collect();
    assert_eq!(deps, ["bench-a000", "bench-a001"]);
}

#[test]
fn findings_name_service_field_and_reason() {
    let node = Node::new();
    let (lines, code) = node.import("findings.yml", &[], &[]);
    assert_eq!(
        lines,
        [
            "odd: environment.MISSING: variable NOT_SET_ANYWHERE is not set; read as empty text",
            "odd: environment.REQUIRED: variable ALSO_NOT_SET is not set: give it; read as empty text",
            "odd: privileged: privileged containers are not supported; left out",
            "odd: devices: host devices cannot be given to an app; left out",
            "odd: labels: not mapped: a manifest has no such field",
            "odd: working_dir: not mapped: a manifest has no such field",
            "odd: ports[0]: 127.0.0.1:8080:80/tcp: publishing on one host address is not supported (archipelago publishes on all); left out",
            "odd: ports[1]: 7000-7001:7000-7001/tcp: port ranges are not supported; list each port; left out",
            "odd: ports[2]: 9999/tcp: no host port (the engine would pick one); apps on the app network reach it without publishing; left out",
            "odd: volumes[3]: tmpfs mounts are not supported; left out",
            "odd: networks: 2 networks: an app joins one; the draft uses \"odd_one\"",
            "odd: cap_add[0]: \"ALL\": ALL is refused; name each capability the app needs; left out",
            "odd: depends_on: \"ghost\" is not one of the imported services; dependency left out",
            "odd: volumes[0]: bind of a single file {dir}/src/odd.conf: a volume is a folder; put the file in one of the app's volumes (or build it into the image); left out",
            "odd: volumes[1]: bind of /var/run/docker.sock (under /var/run): a host system path cannot be an app volume; left out",
            "odd: volumes[2]: anonymous volume at /data: the draft gets an empty volume data; what the engine's anonymous volume holds is not carried over",
            "odd: mem_limit: no memory limit; the draft says 1Gi: set what the app needs",
            "builder: build.target: not mapped",
            "builder: healthcheck.start_interval: not mapped",
            "builder: build.context: {dir}/src/builder is outside the draft folder {dir}/apps/builder: copy the build context into it; the draft says `.`",
            "builder: build.args.GITHUB_TOKEN: looks like a secret, and build arguments stay in the image's history; left out",
            "init: restart: \"sometimes\" is not a restart policy",
            "sidecar: depends_on.init.condition: a dependency that runs once and exits has no manifest equivalent: archipelago waits for dependencies to run and be healthy",
            "sidecar: memswap_limit: archipelago gives containers no swap beyond their memory limit; left out",
            "sidecar: network_mode: \"service:odd\": sharing another container's network is not supported; the draft uses the default network",
            "sidecar: volumes[0]: bind of {dir}/src/shared is also init's volume: a folder belongs to one app; another may mount it read-only as init/NAME when it depends on init; left out",
            "sidecar: volumes[1]: bind of {dir}/src/shared/inner lies inside {dir}/src/shared, planned as a volume of init: a volume is one whole folder; left out",
            "plan: init: from-sidecar: rename {dir}/src/shared -> {dir}/data/apps/init/from-sidecar (same file system; run with --move to do it)",
            "draft: odd: {dir}/apps/odd/manifest.yml",
            "draft: builder: {dir}/apps/builder/manifest.yml",
            "draft: init: {dir}/apps/init/manifest.yml",
            "draft: sidecar: {dir}/apps/sidecar/manifest.yml",
        ]
    );
    assert_eq!(code, 1);
    node.validates();
    assert!(!node.drafts_text().contains("ghp-not-a-real-token"));
}

#[test]
fn unusable_input_exits_2_naming_it() {
    let node = Node::new();
    std::fs::write(node.path("src/broken.yml"), "services:\n  a: [\n").unwrap();
    for (args, want) in [
        (
            vec!["import", "compose", "nope.yml"],
            "nope.yml: cannot read",
        ),
        (
            vec!["import", "compose", "broken.yml"],
            "broken.yml: yaml: line ",
        ),
    ] {
        let out = node.run(&args, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let gone = Node::with_engine("unix:///nonexistent/engine.sock");
    let out = gone.run(
        &["import", "container", "x", "--config", &gone.config()],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("engine unreachable at unix:///nonexistent/engine.sock"),
        "{err}"
    );
}

/// Containers made through bollard as `docker run` (and compose) would, outside
/// archipelago, imported from the test dockerd: `db` with a bind folder, a password in env,
/// a memory limit, restart unless-stopped and compose's labels naming it and its dependency
/// `cache`, which has a named volume and no memory limit.
#[tokio::test]
async fn running_containers_are_imported_from_the_engine() {
    use bollard::models::{
        ContainerCreateBody, HostConfig, RestartPolicy as EnginePolicy, RestartPolicyNameEnum,
    };
    use bollard::query_parameters::{
        CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptions,
        StartContainerOptions,
    };

    let host = common::docker_host();
    let docker = common::connect(&host).await;
    let node = Node::with_engine(&host);
    let data = node.path("old/data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("state"), "old state").unwrap();
    let db = common::unique("import-db");
    let cache = common::unique("import-cache");
    let volume = common::unique("import-vol");
    let labels = |service: &str, depends: Option<&str>| {
        let mut l = std::collections::HashMap::new();
        l.insert(
            "com.docker.compose.service".to_string(),
            service.to_string(),
        );
        l.insert(
            "com.docker.compose.project".to_string(),
            "oldnode".to_string(),
        );
        if let Some(d) = depends {
            l.insert("com.docker.compose.depends_on".to_string(), d.to_string());
        }
        Some(l)
    };
    let bodies = [
        (
            &db,
            ContainerCreateBody {
                image: Some(common::BUSYBOX_IMAGE.to_string()),
                cmd: Some(vec!["sleep".into(), "3600".into()]),
                env: Some(vec!["DB_PASSWORD=s3cret-value".into(), "MODE=live".into()]),
                labels: labels("db", Some("cache:service_started:false")),
                host_config: Some(HostConfig {
                    binds: Some(vec![format!("{}:/data", data.display())]),
                    memory: Some(64 << 20),
                    restart_policy: Some(EnginePolicy {
                        name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                        maximum_retry_count: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
        (
            &cache,
            ContainerCreateBody {
                image: Some(common::BUSYBOX_IMAGE.to_string()),
                cmd: Some(vec!["sleep".into(), "3600".into()]),
                labels: labels("cache", None),
                host_config: Some(HostConfig {
                    binds: Some(vec![format!("{volume}:/cache")]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
    ];
    let result = std::panic::AssertUnwindSafe(async {
        for (name, body) in bodies {
            let opts = CreateContainerOptionsBuilder::new().name(name).build();
            docker
                .create_container(Some(opts), body)
                .await
                .expect("create");
            docker
                .start_container(name, None::<StartContainerOptions>)
                .await
                .expect("start");
        }
        let config = node.config();
        let out = node.run(
            &["import", "container", &db, &cache, "--config", &config],
            &[],
        );
        let stdout = String::from_utf8_lossy(&out.stdout)
            .replace(&node.dir.path().display().to_string(), "{dir}");
        let lines: Vec<&str> = stdout.lines().collect();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(lines.len(), 6, "{stdout}{stderr}");
        assert_eq!(
            lines[0],
            "cache: memory: no memory limit; the draft says 1Gi: set what the app needs"
        );
        assert_eq!(
            lines[1],
            "plan: db: data: rename {dir}/old/data -> {dir}/data/apps/db/data (same file system; run with --move to do it)"
        );
        let copy = format!("plan: cache: {volume}: copy engine volume {volume} /");
        assert!(lines[2].starts_with(&copy), "{}", lines[2]);
        assert!(
            lines[2].contains(&format!(" -> {{dir}}/data/apps/cache/{volume}: ")),
            "{}",
            lines[2]
        );
        assert!(lines[2].contains("cp -a --reflink=auto"), "{}", lines[2]);
        assert_eq!(
            lines[3..],
            [
                "secret: db/db_password: stored in {dir}/data/secrets/db/db_password",
                "draft: cache: {dir}/apps/cache/manifest.yml",
                "draft: db: {dir}/apps/db/manifest.yml",
            ]
        );
        assert_eq!(out.status.code(), Some(1), "a finding");
        node.validates();
        let secret = node.path("data/secrets/db/db_password");
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "s3cret-value");
        assert_eq!(mode(&secret), 0o600);
        assert!(!node.drafts_text().contains("s3cret-value"));
        let mut w = want(common::BUSYBOX_IMAGE, 64 << 20, "bridge");
        w.command = Some(vec!["sleep", "3600"]);
        w.env = vec![
            ("DB_PASSWORD", "s3cret-value".into()),
            ("MODE", "live".into()),
        ];
        w.binds = vec![("apps/db/data", "/data", false)];
        w.restart = RestartPolicy::Always;
        check(&node, "db", w);
        let mut w = want(common::BUSYBOX_IMAGE, 1 << 30, "bridge");
        w.command = Some(vec!["sleep", "3600"]);
        w.binds = vec![(format!("apps/cache/{volume}").leak(), "/cache", false)];
        check(&node, "cache", w);
        let specs = node.specs();
        let db_manifest = &specs["db"].1;
        assert_eq!(db_manifest.dependencies[0].as_str(), "cache");
        assert_eq!(db_manifest.name, "db");

        let out = node.run(
            &[
                "import",
                "container",
                "no-such-container-here",
                "--config",
                &config,
            ],
            &[],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("container not found: no-such-container-here"),
            "{err}"
        );
    });
    let outcome = futures_util::FutureExt::catch_unwind(result).await;
    for name in [&db, &cache] {
        let rm = RemoveContainerOptionsBuilder::new().force(true).build();
        let _ = docker.remove_container(name, Some(rm)).await;
    }
    docker
        .remove_volume(&volume, None::<RemoveVolumeOptions>)
        .await
        .expect("remove the volume");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
