//! `bench`: measures `archipelago serve` on a real Docker engine with busybox apps — boot
//! convergence beside `docker-compose up -d` and the engine's own floor, hot swap, crash
//! detection, footprint per reconcile tick, and the same at a larger scale — then prints a
//! table and writes JSON (`target/bench/results.json`).
//!
//! It drives the release `archipelago` binary over HTTP RPC with throwaway configs, exactly
//! as a user would. Engine API calls per tick are counted by a small proxy on a unix
//! socket between the supervisor and dockerd that forwards bytes and counts HTTP request
//! lines. Every container it creates carries a name prefix unique to this run
//! (`bench<pid>…`) and is removed again; nothing else on the engine is touched.
//!
//! Usage: `scripts/test-env.sh up`, then `cargo bench --bench bench [-- --help]`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, StartContainerOptions,
};
use bollard::Docker;
use clap::Parser;
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use archipelago::ctl::RpcClient;

mod sampling;
mod support;
use support::*;

/// The test engine that `scripts/test-env.sh up` starts.
const DEFAULT_HOST: &str = "unix:///tmp/archipelago-test/docker.sock";
/// The tiny local image the test environment builds from /bin/busybox.
const DEFAULT_IMAGE: &str = "archipelago-test/busybox:latest";
/// Memory limit of every benchmark app (and of its compose and floor twins).
const APP_MEMORY: &str = "16MiB";
const APP_MEMORY_BYTES: i64 = 16 * 1024 * 1024;
/// Parallel requests the engine floor sends, as the issue asks.
const FLOOR_PARALLEL: usize = 8;

/// How often the bench polls `package.list` while it waits for convergence.
const POLL: Duration = Duration::from_millis(20);

/// Benchmarks of `archipelago serve` against a real engine.
#[derive(Debug, Clone, Parser)]
#[command(name = "bench", about, long_about = None)]
struct Args {
    /// Docker API socket (the test engine of `scripts/test-env.sh up`).
    #[arg(long, default_value = DEFAULT_HOST)]
    host: String,
    /// Image every app runs.
    #[arg(long, default_value = DEFAULT_IMAGE)]
    image: String,
    /// The `archipelago` binary (default: built with cargo, found next to this one).
    #[arg(long, value_name = "PATH")]
    archipelago: Option<PathBuf>,
    /// Apps in the base scenario.
    #[arg(long, default_value_t = 30)]
    apps: usize,
    /// Apps in the scale scenario (0 skips it).
    #[arg(long, default_value_t = 200)]
    scale_apps: usize,
    /// Boot runs (supervisor, compose and floor each) at the base size.
    #[arg(long, default_value_t = 3)]
    boot_runs: usize,
    /// Boot runs at the scale size.
    #[arg(long, default_value_t = 1)]
    scale_boot_runs: usize,
    /// Supervisor restarts per signal (SIGTERM, SIGKILL) at the base size.
    #[arg(long, default_value_t = 3)]
    swap_runs: usize,
    /// Supervisor restarts per signal at the scale size.
    #[arg(long, default_value_t = 1)]
    scale_swap_runs: usize,
    /// Containers killed from outside, each a different app (at most `--apps`).
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Reconcile ticks to run for the footprint at the base size.
    #[arg(long, default_value_t = 10_000)]
    ticks: u64,
    /// Reconcile ticks to run for the footprint at the scale size.
    #[arg(long, default_value_t = 2_000)]
    scale_ticks: u64,
    /// `reconcile_interval` of the footprint runs.
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    tick_interval: Duration,
    /// Longest a footprint run may last, whatever the tick count reached.
    #[arg(long, default_value = "200s", value_parser = humantime::parse_duration)]
    tick_timeout: Duration,
    /// Skip the docker-compose comparison.
    #[arg(long)]
    no_compose: bool,
    /// Where results.json goes (default: target/bench in the source tree).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Apps held in a slow stop while `package.list` is sampled (0 skips it).
    #[arg(long, default_value_t = 30)]
    stop_apps: usize,
    /// How long each of those stops takes.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    stop_time: Duration,
    /// GiB in the volume of the app upgraded while `package.list` is sampled (0 skips
    /// the upgrade runs).
    #[arg(long, default_value_t = 4)]
    upgrade_gib: u64,
    /// The loopback registry the upgraded app's images are pushed to.
    #[arg(long, default_value = "localhost:5000")]
    registry: String,
    /// Only the responsiveness runs (slow stops, upgrades); not boot, hot swap and the rest.
    #[arg(long)]
    responsiveness_only: bool,
    /// Only the usage sampling cost (`--apps` apps, see `sampling.rs`).
    #[arg(long)]
    sampling_only: bool,
    /// How long the supervisor's CPU is measured in the sampling run.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    sampling_window: Duration,
    /// `reconcile_interval` of the sampling run (the config's default).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    sampling_reconcile: Duration,
    /// Passed by `cargo bench` to every bench program; means nothing here.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Why the bench stopped.
#[derive(Debug, thiserror::Error)]
enum BenchError {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The engine refused or failed a call.
    #[error("engine: {what}: {source}")]
    Engine {
        what: String,
        source: bollard::errors::Error,
    },
    /// Something did not happen in time or went wrong otherwise.
    #[error("{0}")]
    Failed(String),
}

type Result<T, E = BenchError> = std::result::Result<T, E>;

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

fn engine_err(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Engine { what, source }
}

/// One measured figure: every sample, summarised by its median.
#[derive(Debug, Clone)]
struct Figure {
    section: &'static str,
    name: String,
    apps: usize,
    unit: &'static str,
    samples: Vec<f64>,
    target: Option<String>,
}

impl Figure {
    fn median(&self) -> f64 {
        median(&self.samples)
    }

    fn min(&self) -> f64 {
        self.samples.iter().copied().fold(f64::INFINITY, f64::min)
    }

    fn max(&self) -> f64 {
        self.samples
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
    }

    fn json(&self) -> Value {
        json!({
            "section": self.section,
            "name": self.name,
            "apps": self.apps,
            "unit": self.unit,
            "median": self.median(),
            "min": self.min(),
            "max": self.max(),
            "runs": self.samples.len(),
            "samples": self.samples,
            "target": self.target,
        })
    }
}

/// A value with its unit, the way the table shows it.
fn show(value: f64, unit: &str) -> String {
    if value.is_nan() {
        return "-".into();
    }
    match unit {
        "ms" if value >= 10_000.0 => format!("{:.1} s", value / 1000.0),
        "ms" => format!("{value:.0} ms"),
        "us" => format!("{value:.0} µs"),
        "MiB" => format!("{value:.1} MiB"),
        "count" => format!("{value:.0}"),
        "per tick" => format!("{value:.2}/tick"),
        _ => format!("{value:.2} {unit}"),
    }
}

/// A throwaway catalog, config and data folder for one scenario.
struct Node {
    dir: PathBuf,
    /// App ids in level order: level 0 first.
    ids: Vec<String>,
    /// Indexes into `ids` each app depends on.
    deps: Vec<Vec<usize>>,
    prefix: String,
    image: String,
}

impl Node {
    /// Writes `n` busybox apps in a `LEVELS`-deep dependency graph under `root/prefix`
    /// (with `flat`, no dependencies at all).
    fn write(root: &Path, prefix: &str, n: usize, image: &str, flat: bool) -> Result<Node> {
        let dir = root.join(prefix);
        let apps_dir = dir.join("apps");
        std::fs::create_dir_all(&apps_dir)
            .map_err(io_err(format!("mkdir {}", apps_dir.display())))?;
        let (ids, mut deps) = dag(prefix, n);
        if flat {
            deps.iter_mut().for_each(Vec::clear);
        }
        for (i, id) in ids.iter().enumerate() {
            let dependencies = deps[i]
                .iter()
                .map(|&d| ids[d].as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let manifest = format!(
                "id: {id}\nname: {id}\nversion: \"1\"\ndependencies: [{dependencies}]\ncontainer:\n  image: {image}\n  command: [\"sleep\", \"86400\"]\n  memory_limit: {APP_MEMORY}\n  stop_timeout: 1s\n"
            );
            let app_dir = apps_dir.join(id);
            std::fs::create_dir_all(&app_dir)
                .map_err(io_err(format!("mkdir {}", app_dir.display())))?;
            std::fs::write(app_dir.join("manifest.yml"), manifest)
                .map_err(io_err(format!("write manifest of {id}")))?;
        }
        std::fs::write(dir.join("password"), "bench-password\n")
            .map_err(io_err("write password"))?;
        Ok(Node {
            dir,
            ids,
            deps,
            prefix: prefix.to_string(),
            image: image.to_string(),
        })
    }

    /// Writes the config for the next start: engine address, listen port, tick interval.
    fn config(&self, host: &str, port: u16, interval: Duration) -> Result<PathBuf> {
        let path = self.dir.join("config.yml");
        let apps = self.ids.join(", ");
        let text = format!(
            "listen: 127.0.0.1:{port}\napps_dir: apps\ndata_dir: data\nengine:\n  host: {host}\n  default_network: none\nreconcile_interval: {}\ndefault_apps: [{apps}]\nauth:\n  password_file: password\n",
            humantime::format_duration(interval)
        );
        std::fs::write(&path, text).map_err(io_err(format!("write {}", path.display())))?;
        Ok(path)
    }

    fn container(&self, i: usize) -> String {
        format!("archipelago-{}", self.ids[i])
    }

    /// The same apps as a compose file (format 2.4, which has `mem_limit`).
    fn compose_file(&self) -> Result<PathBuf> {
        let mut text = String::from("version: \"2.4\"\nservices:\n");
        for (i, id) in self.ids.iter().enumerate() {
            // Writing to a String cannot fail.
            let _ = write!(
                text,
                "  {id}:\n    image: {image}\n    command: [\"sleep\", \"86400\"]\n    container_name: {prefix}-compose-{i:03}\n    network_mode: none\n    mem_limit: {APP_MEMORY_BYTES}\n    memswap_limit: {APP_MEMORY_BYTES}\n    stop_grace_period: 1s\n",
                image = self.image,
                prefix = self.prefix,
            );
            if !self.deps[i].is_empty() {
                let deps = self.deps[i]
                    .iter()
                    .map(|&d| self.ids[d].as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                let _ = writeln!(text, "    depends_on: [{deps}]");
            }
        }
        let path = self.dir.join("docker-compose.yml");
        std::fs::write(&path, text).map_err(io_err("write compose file"))?;
        Ok(path)
    }
}

/// A running `archipelago serve` child process. Killed when dropped.
struct Serve {
    child: Child,
    port: u16,
    spawned: Instant,
}

impl Serve {
    fn spawn(bin: &Path, node: &Node, host: &str, interval: Duration) -> Result<Serve> {
        Serve::spawn_with(bin, node, host, interval, &[])
    }

    /// Like [`Serve::spawn`], with extra environment (e.g. a systemd notify socket).
    fn spawn_with(
        bin: &Path,
        node: &Node,
        host: &str,
        interval: Duration,
        env: &[(&str, String)],
    ) -> Result<Serve> {
        let port = free_port()?;
        let config = node.config(host, port, interval)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("serve.log"))
            .map_err(io_err("open serve.log"))?;
        let spawned = Instant::now();
        let child = Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(io_err(format!("spawn {}", bin.display())))?;
        Ok(Serve {
            child,
            port,
            spawned,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Logs in, retrying until the web server answers (at most 30 s).
    async fn client(&mut self) -> Result<RpcClient> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut client = RpcClient::new(
                &format!("http://127.0.0.1:{}", self.port),
                Duration::from_secs(10),
            );
            match client.login("bench-password").await {
                Ok(()) => return Ok(client),
                Err(e) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        return Err(BenchError::Failed(format!(
                            "archipelago serve exited ({status}) before answering: {e}"
                        )));
                    }
                    if Instant::now() > deadline {
                        return Err(BenchError::Failed(format!(
                            "archipelago serve did not answer within 30s: {e}"
                        )));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Sends `signal` (e.g. `TERM`, `KILL`) and waits for the process to exit.
    async fn stop(&mut self, signal: &str) -> Result<Duration> {
        let sent = Instant::now();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .map_err(io_err("run kill"))?;
        if !status.success() {
            return Err(BenchError::Failed(format!(
                "kill -{signal} {} failed",
                self.pid()
            )));
        }
        let deadline = sent + Duration::from_secs(30);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Ok(sent.elapsed());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(BenchError::Failed(format!(
                    "archipelago serve did not exit within 30s of SIG{signal}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err("bind a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(io_err("free port address"))?
        .port())
}

/// Polls `package.list` until every app of `ids` reads `running`; the moment it did.
async fn wait_all_running(
    client: &mut RpcClient,
    ids: &[String],
    within: Duration,
) -> Result<Instant> {
    let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let deadline = Instant::now() + within;
    loop {
        let last = match client.call("package.list", Value::Null).await {
            Ok(list) => {
                let mut states: BTreeMap<String, usize> = BTreeMap::new();
                let mut running = 0;
                let mut example = None;
                for p in list.as_array().into_iter().flatten() {
                    let id = p["id"].as_str().unwrap_or_default();
                    if !wanted.contains(id) {
                        continue;
                    }
                    let state = p["state"].as_str().unwrap_or("?").to_string();
                    if state == "running" {
                        running += 1;
                    } else if example.is_none() && !p["last_error"].is_null() {
                        example = Some(format!("{id}: {}", p["last_error"]));
                    }
                    *states.entry(state).or_default() += 1;
                }
                if running == wanted.len() {
                    return Ok(Instant::now());
                }
                format!("{states:?} {}", example.unwrap_or_default())
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            return Err(BenchError::Failed(format!(
                "not all {} apps running within {within:?}: {last}",
                ids.len()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The state `package.get` reports for `id`.
async fn package_state(client: &mut RpcClient, id: &str) -> Option<String> {
    let p = client.call("package.get", json!({ "id": id })).await.ok()?;
    p["state"].as_str().map(str::to_string)
}

/// `VmRSS` of a process, in MiB.
fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(io_err("read /proc status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .ok_or_else(|| BenchError::Failed(format!("no VmRSS in /proc/{pid}/status")))?;
    Ok(kb / 1024.0)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(io_err("read /proc stat"))?;
    // The command name may hold spaces; the fields after it are fixed.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    match (field(11), field(12)) {
        (Some(u), Some(s)) => Ok(u + s),
        _ => Err(BenchError::Failed(format!("unreadable /proc/{pid}/stat"))),
    }
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Forwards connections on `listener` to `upstream`, counting request lines.
async fn proxy(listener: UnixListener, upstream: PathBuf, counts: Arc<Counts>) {
    while let Ok((client, _)) = listener.accept().await {
        let upstream = upstream.clone();
        let counts = counts.clone();
        tokio::spawn(async move {
            let Ok(server) = UnixStream::connect(&upstream).await else {
                return;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let up = async {
                let mut buf = vec![0u8; 16 * 1024];
                let mut scanner = Scanner::default();
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    scanner.feed(&buf[..n], &counts);
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            };
            let down = async {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            };
            // Either side closing ends the connection (the event stream never ends itself).
            tokio::select! {
                _ = up => {}
                _ = down => {}
            }
        });
    }
}

/// Everything the scenarios share.
struct Bench {
    args: Args,
    docker: Docker,
    bin: PathBuf,
    root: PathBuf,
    /// `bench<pid>`: every container of this run starts with it (or `archipelago-` + it).
    tag: String,
    figures: Vec<Figure>,
    notes: Vec<String>,
    clk_tck: f64,
}

impl Bench {
    fn record(
        &mut self,
        section: &'static str,
        name: &str,
        apps: usize,
        unit: &'static str,
        samples: Vec<f64>,
        target: Option<&str>,
    ) {
        let figure = Figure {
            section,
            name: name.to_string(),
            apps,
            unit,
            samples,
            target: target.map(str::to_string),
        };
        eprintln!(
            "bench:   {section} / {name} ({apps} apps): {} over {} run(s)",
            show(figure.median(), unit),
            figure.samples.len()
        );
        self.figures.push(figure);
    }

    fn note(&mut self, text: String) {
        eprintln!("bench:   note: {text}");
        self.notes.push(text);
    }

    /// Force-removes every container whose name starts with `prefix` or
    /// `archipelago-<prefix>`, 8 at a time.
    async fn remove_prefix(&self, prefix: &str) -> Result<usize> {
        let opts = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&HashMap::from([("name", vec![prefix])]))
            .build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(engine_err("list containers"))?;
        let ours = format!("archipelago-{prefix}");
        let names: Vec<String> = list
            .into_iter()
            .filter_map(|c| c.names.and_then(|n| n.into_iter().next()))
            .map(|n| n.trim_start_matches('/').to_string())
            .filter(|n| n.starts_with(prefix) || n.starts_with(&ours))
            .collect();
        let count = names.len();
        let docker = &self.docker;
        stream::iter(names)
            .map(|name| async move {
                let opts = RemoveContainerOptionsBuilder::new().force(true).build();
                let _ = docker.remove_container(&name, Some(opts)).await;
            })
            .buffer_unordered(FLOOR_PARALLEL)
            .collect::<Vec<_>>()
            .await;
        Ok(count)
    }

    /// (container id, StartedAt, running) of each named container.
    async fn inspect_all(&self, names: &[String]) -> Vec<Option<(String, String, bool)>> {
        let docker = &self.docker;
        stream::iter(names.iter())
            .map(|name| async move {
                let info = docker
                    .inspect_container(name, None::<InspectContainerOptions>)
                    .await
                    .ok()?;
                let state = info.state.unwrap_or_default();
                Some((
                    info.id.unwrap_or_default(),
                    state.started_at.unwrap_or_default(),
                    state.running.unwrap_or(false),
                ))
            })
            .buffered(FLOOR_PARALLEL)
            .collect()
            .await
    }

    /// Creates and starts one container per app straight through the API, 8 at a time.
    async fn floor(&self, node: &Node) -> Result<Duration> {
        let docker = &self.docker;
        let started = Instant::now();
        let results: Vec<Result<()>> = stream::iter(0..node.ids.len())
            .map(|i| async move {
                let name = format!("{}-floor-{i:03}", node.prefix);
                let body = ContainerCreateBody {
                    image: Some(node.image.clone()),
                    cmd: Some(vec!["sleep".into(), "86400".into()]),
                    host_config: Some(HostConfig {
                        network_mode: Some("none".into()),
                        memory: Some(APP_MEMORY_BYTES),
                        memory_swap: Some(APP_MEMORY_BYTES),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                let opts = CreateContainerOptionsBuilder::new().name(&name).build();
                docker
                    .create_container(Some(opts), body)
                    .await
                    .map_err(engine_err(format!("create {name}")))?;
                docker
                    .start_container(&name, None::<StartContainerOptions>)
                    .await
                    .map_err(engine_err(format!("start {name}")))
            })
            .buffer_unordered(FLOOR_PARALLEL)
            .collect()
            .await;
        let took = started.elapsed();
        results.into_iter().collect::<Result<Vec<_>>>()?;
        Ok(took)
    }

    /// `docker-compose up -d` of the same apps; the wall time of the command.
    async fn compose(&self, node: &Node) -> Result<Duration> {
        let file = node.compose_file()?;
        let started = Instant::now();
        let out = tokio::process::Command::new("docker-compose")
            .arg("--project-name")
            .arg(&node.prefix)
            .arg("--file")
            .arg(&file)
            .arg("up")
            .arg("--detach")
            .env("DOCKER_HOST", &self.args.host)
            .env("COMPOSE_HTTP_TIMEOUT", "120")
            .output()
            .await
            .map_err(io_err("run docker-compose"))?;
        let took = started.elapsed();
        if !out.status.success() {
            return Err(BenchError::Failed(format!(
                "docker-compose up failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or_default()
            )));
        }
        Ok(took)
    }

    /// Counts running containers named `<prefix>-<kind>-…`.
    async fn running_named(&self, prefix: &str) -> Result<usize> {
        let opts = ListContainersOptionsBuilder::new()
            .filters(&HashMap::from([("name", vec![prefix])]))
            .build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(engine_err("list containers"))?;
        Ok(list.len())
    }

    /// One first boot of `node` by the supervisor: (start to all running, start to the
    /// first RPC answer, RSS then). Its containers are removed afterwards.
    async fn supervisor_boot(&self, node: &Node) -> Result<(Duration, Duration, f64)> {
        let n = node.ids.len();
        let outcome = async {
            let mut serve =
                Serve::spawn(&self.bin, node, &self.args.host, Duration::from_secs(30))?;
            let mut client = serve.client().await?;
            let answered = serve.spawned.elapsed();
            let done = wait_all_running(&mut client, &node.ids, Duration::from_secs(60 + n as u64))
                .await?;
            let took = done - serve.spawned;
            let mem = rss_mib(serve.pid())?;
            serve.stop("TERM").await?;
            Ok::<_, BenchError>((took, answered, mem))
        }
        .await;
        self.remove_prefix(&node.prefix).await?;
        outcome
    }

    /// Boot convergence at `n` apps: supervisor, compose and engine floor, `runs` times;
    /// with `flat_too` also the supervisor on the same apps without dependencies.
    async fn boot(
        &mut self,
        n: usize,
        runs: usize,
        section: &'static str,
        flat_too: bool,
    ) -> Result<()> {
        let mut flat = Vec::new();
        let mut sup = Vec::new();
        let mut answer = Vec::new();
        let mut rss = Vec::new();
        let mut compose = Vec::new();
        let mut floor = Vec::new();
        for r in 0..runs {
            eprintln!("bench: boot {n} apps, run {}/{runs}", r + 1);
            let prefix = format!("{}b{n}r{r}", self.tag);
            let node = Node::write(&self.root, &prefix, n, &self.args.image, false)?;
            let (took, answered, mem) = self.supervisor_boot(&node).await?;
            sup.push(ms(took));
            answer.push(ms(answered));
            rss.push(mem);
            if flat_too {
                let flat_prefix = format!("{prefix}f");
                let flat_node = Node::write(&self.root, &flat_prefix, n, &self.args.image, true)?;
                let (took, _, _) = self.supervisor_boot(&flat_node).await?;
                flat.push(ms(took));
                let _ = std::fs::remove_dir_all(&flat_node.dir);
            }

            if !self.args.no_compose {
                let outcome = self.compose(&node).await;
                let up = self.running_named(&format!("{prefix}-compose-")).await;
                self.remove_prefix(&prefix).await?;
                let took = outcome?;
                if up? != n {
                    return Err(BenchError::Failed(
                        "docker-compose left apps not running".into(),
                    ));
                }
                compose.push(ms(took));
            }

            let outcome = self.floor(&node).await;
            let up = self.running_named(&format!("{prefix}-floor-")).await;
            self.remove_prefix(&prefix).await?;
            let took = outcome?;
            if up? != n {
                return Err(BenchError::Failed(
                    "engine floor left containers not running".into(),
                ));
            }
            floor.push(ms(took));
            let _ = std::fs::remove_dir_all(&node.dir);
        }
        let floor_median = median(&floor);
        self.record(
            section,
            "archipelago: start to all running",
            n,
            "ms",
            sup.clone(),
            Some("within 10% of the floor, below compose"),
        );
        self.record(
            section,
            "archipelago: start to first RPC answer",
            n,
            "ms",
            answer,
            None,
        );
        if !flat.is_empty() {
            self.record(
                section,
                "archipelago, no dependencies: start to all running",
                n,
                "ms",
                flat,
                None,
            );
        }
        if !compose.is_empty() {
            self.record(section, "docker-compose up -d", n, "ms", compose, None);
        }
        self.record(
            section,
            "engine floor (create+start, 8 at a time)",
            n,
            "ms",
            floor,
            None,
        );
        self.record(
            section,
            "archipelago / floor",
            n,
            "ratio",
            sup.iter().map(|s| s / floor_median).collect(),
            Some("≤ 1.10"),
        );
        self.record(section, "RSS after first boot", n, "MiB", rss, None);
        Ok(())
    }

    /// Boots `n` apps with the supervisor for the scenarios that need them running.
    async fn steady_node(&mut self, n: usize) -> Result<(Node, Serve)> {
        let prefix = format!("{}s{n}", self.tag);
        let node = Node::write(&self.root, &prefix, n, &self.args.image, false)?;
        let mut serve = Serve::spawn(&self.bin, &node, &self.args.host, Duration::from_secs(30))?;
        let mut client = serve.client().await?;
        wait_all_running(&mut client, &node.ids, Duration::from_secs(60 + n as u64)).await?;
        Ok((node, serve))
    }

    /// Hot swap: the supervisor stopped with `signal` and started again, `runs` times per
    /// signal. Returns the supervisor left running.
    async fn hot_swap(
        &mut self,
        node: &Node,
        mut serve: Serve,
        runs: usize,
        section: &'static str,
    ) -> Result<Serve> {
        let n = node.ids.len();
        let names: Vec<String> = (0..n).map(|i| node.container(i)).collect();
        if runs == 0 {
            return Ok(serve);
        }
        for signal in ["TERM", "KILL"] {
            let mut swap = Vec::new();
            let mut answer = Vec::new();
            let mut restarts = Vec::new();
            let mut exit = Vec::new();
            for r in 0..runs {
                eprintln!(
                    "bench: hot swap {n} apps, SIG{signal}, run {}/{runs}",
                    r + 1
                );
                let before = self.inspect_all(&names).await;
                exit.push(ms(serve.stop(signal).await?));
                serve = Serve::spawn(&self.bin, node, &self.args.host, Duration::from_secs(30))?;
                let mut client = serve.client().await?;
                answer.push(ms(serve.spawned.elapsed()));
                let done =
                    wait_all_running(&mut client, &node.ids, Duration::from_secs(60 + n as u64))
                        .await?;
                swap.push(ms(done - serve.spawned));
                // A restart planned by the first tick or an event would show by now.
                tokio::time::sleep(Duration::from_secs(2)).await;
                let after = self.inspect_all(&names).await;
                let changed = before.iter().zip(&after).filter(|(b, a)| b != a).count();
                restarts.push(changed as f64);
            }
            let label = format!("SIG{signal}");
            self.record(
                section,
                &format!("{label}: exit of the old supervisor"),
                n,
                "ms",
                exit,
                None,
            );
            self.record(
                section,
                &format!("{label}: restart to first RPC answer"),
                n,
                "ms",
                answer,
                None,
            );
            self.record(
                section,
                &format!("{label}: restart to all running"),
                n,
                "ms",
                swap,
                None,
            );
            self.record(
                section,
                &format!("{label}: container restarts"),
                n,
                "count",
                restarts,
                Some("0"),
            );
        }
        Ok(serve)
    }

    /// Kills containers from outside, one app each, and times the way back.
    async fn detection(&mut self, node: &Node, serve: &mut Serve) -> Result<()> {
        let n = node.ids.len();
        let kills = self.args.kills.min(n);
        let mut client = serve.client().await?;
        let mut seen = Vec::new();
        let mut back = Vec::new();
        let mut shown = Vec::new();
        // Leaves first: no other app waits on them.
        for k in 0..kills {
            let i = n - 1 - k;
            let id = &node.ids[i];
            let name = node.container(i);
            eprintln!("bench: detection, kill {}/{kills} ({name})", k + 1);
            let before = self.inspect_all(std::slice::from_ref(&name)).await;
            let before_started = before
                .first()
                .cloned()
                .flatten()
                .map(|b| b.1)
                .unwrap_or_default();
            let opts = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
            let killed = Instant::now();
            self.docker
                .kill_container(&name, Some(opts))
                .await
                .map_err(engine_err(format!("kill {name}")))?;
            let deadline = killed + Duration::from_secs(30);
            let mut t_seen = None;
            let mut t_back = None;
            let t_shown = loop {
                if t_seen.is_none()
                    && package_state(&mut client, id)
                        .await
                        .is_some_and(|s| s != "running")
                {
                    t_seen = Some(killed.elapsed());
                }
                if t_back.is_none() {
                    let now = self.inspect_all(std::slice::from_ref(&name)).await;
                    if let Some(Some((_, started, true))) = now.first() {
                        if *started != before_started {
                            t_back = Some(killed.elapsed());
                        }
                    }
                }
                if let Some(b) = t_back {
                    if package_state(&mut client, id).await.as_deref() == Some("running") {
                        break killed.elapsed().max(b);
                    }
                }
                if Instant::now() > deadline {
                    return Err(BenchError::Failed(format!(
                        "{name} not running again within 30s of the kill"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            // Unseen means it was running again before the first poll saw anything else.
            seen.push(ms(t_seen.unwrap_or(t_shown)));
            back.push(ms(t_back.unwrap_or(t_shown)));
            shown.push(ms(t_shown));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let section = "Detection";
        self.record(
            section,
            "kill to state no longer running (package.get)",
            n,
            "ms",
            seen,
            None,
        );
        self.record(
            section,
            "kill to running again (engine inspect)",
            n,
            "ms",
            back,
            Some("median < 1 s"),
        );
        self.record(
            section,
            "kill to running again (package.get)",
            n,
            "ms",
            shown,
            None,
        );
        Ok(())
    }

    /// Footprint: the supervisor restarted behind the counting proxy with a short
    /// `reconcile_interval`, run until `ticks` list calls went by (or the time limit).
    async fn footprint(
        &mut self,
        node: &Node,
        mut serve: Serve,
        ticks: u64,
        section: &'static str,
    ) -> Result<()> {
        serve.stop("TERM").await?;
        let sock = node.dir.join("engine.sock");
        let _ = std::fs::remove_file(&sock);
        let listener =
            UnixListener::bind(&sock).map_err(io_err(format!("bind {}", sock.display())))?;
        let upstream = PathBuf::from(
            self.args
                .host
                .strip_prefix("unix://")
                .unwrap_or(&self.args.host),
        );
        let counts = Arc::new(Counts::default());
        let task = tokio::spawn(proxy(listener, upstream, counts.clone()));
        let outcome = self
            .footprint_run(node, &sock, &counts, ticks, section)
            .await;
        task.abort();
        let _ = std::fs::remove_file(&sock);
        outcome
    }

    async fn footprint_run(
        &mut self,
        node: &Node,
        sock: &Path,
        counts: &Counts,
        ticks: u64,
        section: &'static str,
    ) -> Result<()> {
        let n = node.ids.len();
        let interval = self.args.tick_interval;
        let host = format!("unix://{}", sock.display());
        let names: Vec<String> = (0..n).map(|i| node.container(i)).collect();
        let before_containers = self.inspect_all(&names).await;
        let mut serve = Serve::spawn(&self.bin, node, &host, interval)?;
        let mut client = serve.client().await?;
        wait_all_running(&mut client, &node.ids, Duration::from_secs(60 + n as u64)).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let pid = serve.pid();
        let list_key = "GET /containers/json";
        let lists = |c: &BTreeMap<String, u64>| c.get(list_key).copied().unwrap_or(0);
        let rss0 = rss_mib(pid)?;
        let cpu0 = cpu_ticks(pid)?;
        let counts0 = counts.snapshot();
        let t0 = Instant::now();
        eprintln!(
            "bench: footprint {n} apps: {ticks} ticks at {interval:?} (at most {:?})",
            self.args.tick_timeout
        );
        let mut curve = vec![json!({"ticks": 0, "rss_mib": rss0})];
        let mut next_mark = ticks / 4;
        let (done_ticks, counts1) = loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = counts.snapshot();
            let done = lists(&now) - lists(&counts0);
            if done >= next_mark && next_mark > 0 {
                curve.push(json!({"ticks": done, "rss_mib": rss_mib(pid)?}));
                next_mark += ticks / 4;
            }
            if done >= ticks || t0.elapsed() > self.args.tick_timeout {
                break (done, now);
            }
        };
        let elapsed = t0.elapsed();
        let cpu1 = cpu_ticks(pid)?;
        let rss1 = rss_mib(pid)?;
        serve.stop("TERM").await?;
        let after_containers = self.inspect_all(&names).await;
        let restarted = before_containers
            .iter()
            .zip(&after_containers)
            .filter(|(b, a)| b != a)
            .count();
        if done_ticks == 0 {
            return Err(BenchError::Failed(
                "no reconcile tick reached the engine".into(),
            ));
        }
        let per_tick = |key: &str| {
            (counts1.get(key).copied().unwrap_or(0) - counts0.get(key).copied().unwrap_or(0)) as f64
                / done_ticks as f64
        };
        let total: u64 = counts1.values().sum::<u64>() - counts0.values().sum::<u64>();
        let cpu_us = (cpu1 - cpu0) as f64 / self.clk_tck * 1e6 / done_ticks as f64;
        let by_time = elapsed.as_secs_f64() / interval.as_secs_f64();
        self.record(
            section,
            "RSS after adopting (start of the tick run)",
            n,
            "MiB",
            vec![rss0],
            None,
        );
        self.record(
            section,
            &format!("RSS after {done_ticks} ticks"),
            n,
            "MiB",
            vec![rss1],
            Some("no growth"),
        );
        self.record(
            section,
            "reconcile ticks run (list calls seen)",
            n,
            "count",
            vec![done_ticks as f64],
            None,
        );
        self.record(
            section,
            "tick period achieved",
            n,
            "ms",
            vec![ms(elapsed) / done_ticks as f64],
            None,
        );
        self.record(section, "CPU time per tick", n, "us", vec![cpu_us], None);
        self.record(
            section,
            "engine API calls per tick (all)",
            n,
            "per tick",
            vec![total as f64 / done_ticks as f64],
            Some("1 list"),
        );
        let mut endpoints = Vec::new();
        for key in counts1.keys() {
            let v = per_tick(key);
            if v > 0.0 {
                endpoints.push((key.clone(), v));
            }
        }
        for (key, v) in &endpoints {
            self.record(section, &format!("  {key}"), n, "per tick", vec![*v], None);
        }
        self.record(
            section,
            "container restarts during the tick run",
            n,
            "count",
            vec![restarted as f64],
            Some("0"),
        );
        self.note(format!(
            "footprint {n} apps: {done_ticks} ticks in {:.1}s at reconcile_interval {interval:?} ({by_time:.0} intervals by the clock); RSS curve {}",
            elapsed.as_secs_f64(),
            Value::Array(curve)
        ));
        Ok(())
    }

    /// Boot, hot swap, (detection) and footprint at `n` apps.
    async fn scenario(
        &mut self,
        n: usize,
        boot_runs: usize,
        swap_runs: usize,
        ticks: u64,
        detect: bool,
    ) -> Result<()> {
        let scale = if detect { "" } else { " (scale)" };
        let boot_section: &'static str = if detect {
            "Boot convergence"
        } else {
            "Scale: boot convergence"
        };
        let swap_section: &'static str = if detect {
            "Hot swap"
        } else {
            "Scale: hot swap"
        };
        let foot_section: &'static str = if detect {
            "Footprint"
        } else {
            "Scale: footprint"
        };
        eprintln!("bench: === {n} apps{scale} ===");
        if boot_runs > 0 {
            self.boot(n, boot_runs, boot_section, detect).await?;
        }
        eprintln!("bench: booting {n} apps for hot swap, detection and footprint");
        let (node, serve) = self.steady_node(n).await?;
        let outcome = async {
            let mut serve = self.hot_swap(&node, serve, swap_runs, swap_section).await?;
            if detect && self.args.kills > 0 {
                self.detection(&node, &mut serve).await?;
            }
            if ticks > 0 {
                self.footprint(&node, serve, ticks, foot_section).await?;
            }
            Ok::<_, BenchError>(())
        }
        .await;
        self.remove_prefix(&node.prefix).await?;
        let _ = std::fs::remove_dir_all(&node.dir);
        outcome
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `archipelago` binary: `--archipelago`, or built by cargo next to this binary.
fn find_archipelago(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path);
    }
    if let Ok(cargo) = std::env::var("CARGO") {
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--bin", "archipelago"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let status = cmd.status().map_err(io_err("run cargo build"))?;
        if !status.success() {
            return Err(BenchError::Failed(
                "cargo build --bin archipelago failed".into(),
            ));
        }
    }
    let exe = std::env::current_exe().map_err(io_err("find this binary"))?;
    // cargo puts a bench in `target/<profile>/deps/`, the binary one folder up.
    let dir = exe.parent().unwrap_or(Path::new("."));
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    let path = dir.join("archipelago");
    if path.is_file() {
        Ok(path)
    } else {
        Err(BenchError::Failed(format!(
            "no archipelago binary at {}: run `cargo build --release` or pass --archipelago",
            path.display()
        )))
    }
}

fn read_first(path: &str, key: &str) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default()
}

fn command_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

async fn machine(docker: &Docker, bin: &Path) -> Value {
    let version = docker.version().await.ok();
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": read_first("/proc/cpuinfo", "model name"),
        "memory": read_first("/proc/meminfo", "MemTotal"),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "engine": version.as_ref().and_then(|v| v.version.clone()),
        "engine_api": version.as_ref().and_then(|v| v.api_version.clone()),
        "compose": command_line("docker-compose", &["version", "--short"]),
        "archipelago": command_line(&bin.display().to_string(), &["--version"]),
        "release_build": !cfg!(debug_assertions),
        "loadavg_at_start": loadavg(),
    })
}

fn table(figures: &[Figure]) -> String {
    let mut out = String::new();
    let header = [
        "section", "measure", "apps", "median", "min", "max", "runs", "target",
    ];
    let rows: Vec<[String; 8]> = figures
        .iter()
        .map(|f| {
            [
                f.section.to_string(),
                f.name.clone(),
                f.apps.to_string(),
                show(f.median(), f.unit),
                show(f.min(), f.unit),
                show(f.max(), f.unit),
                f.samples.len().to_string(),
                f.target.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::from("|");
        for (cell, w) in cells.iter().zip(widths) {
            let pad = w - cell.chars().count();
            let _ = write!(s, " {cell}{} |", " ".repeat(pad));
        }
        s.push('\n');
        s
    };
    out.push_str(&line(&header.map(String::from)));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&line(&rule));
    for row in &rows {
        out.push_str(&line(row));
    }
    out
}

/// How each figure grows from the base to the scale size.
fn growth(figures: &[Figure], base: usize, scale: usize) -> Vec<(String, f64)> {
    let strip = |s: &str| s.trim_start_matches("Scale: ").to_string();
    let mut out = Vec::new();
    for f in figures.iter().filter(|f| f.apps == base) {
        let twin = figures.iter().find(|g| {
            g.apps == scale
                && strip(g.section).eq_ignore_ascii_case(f.section)
                && same_measure(&g.name, &f.name)
        });
        if let Some(g) = twin {
            let (a, b) = (f.median(), g.median());
            if a > 0.0 && b.is_finite() {
                out.push((format!("{} / {}", f.section, f.name), b / a));
            }
        }
    }
    out
}

/// Names equal once tick counts are cut out (`RSS after 10000 ticks`).
fn same_measure(a: &str, b: &str) -> bool {
    let cut = |s: &str| {
        s.chars()
            .filter(|c| !c.is_ascii_digit())
            .collect::<String>()
    };
    cut(a) == cut(b)
}

async fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let path = args
        .host
        .strip_prefix("unix://")
        .unwrap_or(&args.host)
        .to_string();
    let docker = Docker::connect_with_unix(&path, 120, bollard::API_DEFAULT_VERSION)
        .map_err(engine_err(format!("connect {}", args.host)))?
        .negotiate_version()
        .await
        .map_err(|e| {
            BenchError::Failed(format!(
                "no engine at {} ({e}); start it with `scripts/test-env.sh up`",
                args.host
            ))
        })?;
    docker.inspect_image(&args.image).await.map_err(|e| {
        BenchError::Failed(format!(
            "image {} missing ({e}); `scripts/test-env.sh up` builds it",
            args.image
        ))
    })?;
    let bin = find_archipelago(args.archipelago.clone())?;
    let tag = format!("bench{}", std::process::id());
    let root = std::env::temp_dir().join(format!("archipelago-{tag}"));
    std::fs::create_dir_all(&root).map_err(io_err(format!("mkdir {}", root.display())))?;
    let machine = machine(&docker, &bin).await;
    eprintln!("bench: machine {machine}");
    if cfg!(debug_assertions) {
        eprintln!("bench: warning: a debug build; figures of record come from `cargo bench --bench bench`");
    }
    let mut bench = Bench {
        args: args.clone(),
        docker,
        bin,
        root: root.clone(),
        tag: tag.clone(),
        figures: Vec::new(),
        notes: Vec::new(),
        clk_tck: clock_ticks_per_second(),
    };
    let mut outcome = if args.sampling_only {
        bench.sampling(args.apps).await
    } else if args.responsiveness_only {
        Ok(())
    } else {
        bench
            .scenario(args.apps, args.boot_runs, args.swap_runs, args.ticks, true)
            .await
    };
    if outcome.is_ok() && !args.sampling_only {
        outcome = bench.responsiveness().await;
    }
    if outcome.is_ok() && args.scale_apps > 0 && !args.responsiveness_only && !args.sampling_only {
        outcome = bench
            .scenario(
                args.scale_apps,
                args.scale_boot_runs,
                args.scale_swap_runs,
                args.scale_ticks,
                false,
            )
            .await;
    }
    // Whatever happened, nothing of this run stays on the engine.
    let left = bench.remove_prefix(&tag).await.unwrap_or(0);
    if left > 0 {
        eprintln!("bench: removed {left} leftover container(s)");
    }
    let _ = std::fs::remove_dir_all(&root);

    let growth = if args.scale_apps > 0 {
        growth(&bench.figures, args.apps, args.scale_apps)
    } else {
        Vec::new()
    };
    println!("{}", table(&bench.figures));
    if !growth.is_empty() {
        println!(
            "growth from {} to {} apps (median ratio):",
            args.apps, args.scale_apps
        );
        for (name, ratio) in &growth {
            println!("  {name}: ×{ratio:.2}");
        }
    }
    for note in &bench.notes {
        println!("note: {note}");
    }
    let total = started.elapsed();
    println!(
        "total time: {:.0} s, load average at the end: {}",
        total.as_secs_f64(),
        loadavg()
    );

    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench"));
    std::fs::create_dir_all(&out_dir).map_err(io_err(format!("mkdir {}", out_dir.display())))?;
    let command: Vec<String> = std::env::args().skip(1).collect();
    let results = json!({
        "command": format!("cargo bench --bench bench{}{}", if command.is_empty() { "" } else { " -- " }, command.join(" ")),
        "machine": machine,
        "settings": {
            "apps": args.apps, "scale_apps": args.scale_apps, "boot_runs": args.boot_runs,
            "scale_boot_runs": args.scale_boot_runs, "swap_runs": args.swap_runs,
            "scale_swap_runs": args.scale_swap_runs, "kills": args.kills, "ticks": args.ticks,
            "scale_ticks": args.scale_ticks, "tick_interval_ms": ms(args.tick_interval),
            "compose": !args.no_compose, "image": args.image, "host": args.host,
        },
        "complete": outcome.is_ok(),
        "error": outcome.as_ref().err().map(ToString::to_string),
        "total_seconds": total.as_secs_f64(),
        "loadavg_at_end": loadavg(),
        "figures": bench.figures.iter().map(Figure::json).collect::<Vec<_>>(),
        "growth": growth.iter().map(|(k, v)| json!({"measure": k, "ratio": v})).collect::<Vec<_>>(),
        "notes": bench.notes,
    });
    let file = out_dir.join("results.json");
    let text = serde_json::to_string_pretty(&results)
        .map_err(|e| BenchError::Failed(format!("encode results: {e}")))?;
    std::fs::write(&file, text).map_err(io_err(format!("write {}", file.display())))?;
    println!("results: {}", file.display());
    outcome
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Latency of `package.list` over HTTP, sampled every [`POLL`] until `done` is set.
async fn sample_list(port: u16, done: Arc<std::sync::atomic::AtomicBool>) -> Result<Vec<f64>> {
    let mut client = RpcClient::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(10));
    client
        .login("bench-password")
        .await
        .map_err(|e| BenchError::Failed(format!("login for sampling: {e}")))?;
    let mut samples = vec![];
    let mut next = Instant::now();
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        let t = Instant::now();
        client
            .call("package.list", Value::Null)
            .await
            .map_err(|e| BenchError::Failed(format!("package.list while sampling: {e}")))?;
        samples.push(ms(t.elapsed()));
        next += POLL;
        tokio::time::sleep_until(next.max(Instant::now()).into()).await;
    }
    Ok(samples)
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Receives the `WATCHDOG=1` lines `archipelago serve` sends to its systemd notify
/// socket, with the time each arrived.
struct Watchdog {
    path: PathBuf,
    pings: Arc<Mutex<Vec<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watchdog {
    fn listen(path: PathBuf) -> Result<Watchdog> {
        let _ = std::fs::remove_file(&path);
        let socket =
            tokio::net::UnixDatagram::bind(&path).map_err(io_err("bind the notify socket"))?;
        let pings = Arc::new(Mutex::new(Vec::new()));
        let seen = pings.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok(n) = socket.recv(&mut buf).await {
                if String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1") {
                    seen.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Instant::now());
                }
            }
        });
        Ok(Watchdog { path, pings, task })
    }

    /// The longest time between two pings (or from `from` to the first, and from the last
    /// to `to`) within [`from`, `to`].
    fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        let pings = self.pings.lock().unwrap_or_else(|e| e.into_inner());
        let mut last = from;
        let mut gap = Duration::ZERO;
        for &p in pings.iter().filter(|p| **p >= from && **p <= to) {
            gap = gap.max(p - last);
            last = p;
        }
        gap.max(to.saturating_duration_since(last))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The watchdog interval `serve` is run with in the responsiveness runs; it pings at half.
const WATCHDOG_USEC: u64 = 2_000_000;

impl Bench {
    /// Slow stops and upgrades of a large volume while `package.list` is sampled.
    async fn responsiveness(&mut self) -> Result<()> {
        if self.args.stop_apps > 0 {
            eprintln!(
                "bench: === {} apps in {:?} stops ===",
                self.args.stop_apps, self.args.stop_time
            );
            self.slow_stops().await?;
        }
        if self.args.upgrade_gib > 0 {
            let gib = self.args.upgrade_gib;
            for (policy, size) in [("copy", gib), ("none", gib), ("none", 0)] {
                eprintln!("bench: === upgrade, {size} GiB volume, snapshot: {policy} ===");
                self.upgrade_run(policy, size).await?;
            }
        }
        Ok(())
    }

    async fn slow_stops(&mut self) -> Result<()> {
        let n = self.args.stop_apps;
        let prefix = format!("{}-stops", self.tag);
        let secs = self.args.stop_time.as_secs().max(1);
        let node = Node::write(&self.root, &prefix, n, &self.args.image, true)?;
        for id in &node.ids {
            let manifest = format!(
                "id: {id}\nname: {id}\nversion: \"1\"\ncontainer:\n  image: {image}\n  command: [\"sh\", \"-c\", \"trap 'sleep {secs}; exit 0' TERM; while true; do sleep 1 & wait $!; done\"]\n  network: none\n  memory_limit: {APP_MEMORY}\n  stop_timeout: {}s\n",
                secs * 3,
                image = self.args.image,
            );
            std::fs::write(
                node.dir.join("apps").join(id).join("manifest.yml"),
                manifest,
            )
            .map_err(io_err("write manifest"))?;
        }
        let outcome = async {
            let mut serve =
                Serve::spawn(&self.bin, &node, &self.args.host, Duration::from_secs(5))?;
            let mut client = serve.client().await?;
            wait_all_running(&mut client, &node.ids, Duration::from_secs(120)).await?;
            for id in &node.ids {
                client
                    .call("package.stop", json!({ "id": id }))
                    .await
                    .map_err(|e| BenchError::Failed(format!("stop {id}: {e}")))?;
            }
            let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let sampler = tokio::spawn(sample_list(serve.port, done.clone()));
            let began = Instant::now();
            loop {
                let list = client
                    .call("package.list", Value::Null)
                    .await
                    .map_err(|e| BenchError::Failed(format!("package.list: {e}")))?;
                let stopped = list
                    .as_array()
                    .map_or(0, |l| l.iter().filter(|p| p["state"] == "stopped").count());
                if stopped == n {
                    break;
                }
                if began.elapsed() > self.args.stop_time * 4 {
                    return Err(BenchError::Failed(format!(
                        "only {stopped} of {n} apps stopped"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let took = began.elapsed();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            let samples = sampler
                .await
                .map_err(|e| BenchError::Failed(format!("sampler: {e}")))??;
            self.record_latency(
                "Responsiveness",
                &format!("package.list during {n} stops of {secs} s"),
                n,
                &samples,
            );
            self.record(
                "Responsiveness",
                &format!("all {n} stops done"),
                n,
                "s",
                vec![took.as_secs_f64()],
                None,
            );
            let _ = serve.stop("TERM").await;
            Ok(())
        }
        .await;
        self.remove_prefix(&prefix).await?;
        let _ = std::fs::remove_dir_all(&node.dir);
        outcome
    }

    /// p50, p99 and max of `samples` (ms) as figures.
    fn record_latency(&mut self, section: &'static str, name: &str, apps: usize, samples: &[f64]) {
        let (p50, p99) = (percentile(samples, 0.5), percentile(samples, 0.99));
        let max = samples.iter().copied().fold(0.0, f64::max);
        self.record(
            section,
            &format!("{name}: p50"),
            apps,
            "ms",
            vec![p50],
            None,
        );
        self.record(
            section,
            &format!("{name}: p99"),
            apps,
            "ms",
            vec![p99],
            Some("< 5 ms"),
        );
        self.record(
            section,
            &format!("{name}: max"),
            apps,
            "ms",
            vec![max],
            Some("< 50 ms"),
        );
        self.note(format!("{name}: {} samples every {POLL:?}", samples.len()));
    }

    /// Pushes the busybox image as `<registry>/archipelago-bench/app:1` and `:2`.
    async fn push_versions(&self) -> Result<String> {
        let repo = format!("{}/archipelago-bench/app", self.args.registry);
        for tag in ["1", "2"] {
            let opts = bollard::query_parameters::TagImageOptionsBuilder::new()
                .repo(&repo)
                .tag(tag)
                .build();
            self.docker
                .tag_image(&self.args.image, Some(opts))
                .await
                .map_err(engine_err(format!("tag {repo}:{tag}")))?;
            let opts = bollard::query_parameters::PushImageOptionsBuilder::new()
                .tag(tag)
                .build();
            let mut push = self.docker.push_image(&repo, Some(opts), None);
            while let Some(item) = push.next().await {
                let info = item.map_err(engine_err(format!("push {repo}:{tag}")))?;
                if let Some(e) = info.error_detail {
                    return Err(BenchError::Failed(format!("push {repo}:{tag}: {e:?}")));
                }
            }
        }
        Ok(repo)
    }

    /// Upgrades an app whose volume holds `gib` GiB (`snapshot: policy`) while
    /// `package.list` is sampled and the watchdog pings are timed.
    async fn upgrade_run(&mut self, policy: &str, gib: u64) -> Result<()> {
        let repo = self.push_versions().await?;
        let prefix = format!("{}-up{policy}{gib}", self.tag);
        let node = Node::write(&self.root, &prefix, 1, &self.args.image, true)?;
        let id = node.ids[0].clone();
        let manifest = |version: &str| {
            format!(
                "id: {id}\nname: {id}\nversion: \"{version}\"\ncontainer:\n  image: {repo}:{version}\n  command: [\"sleep\", \"86400\"]\n  network: none\n  memory_limit: {APP_MEMORY}\n  stop_timeout: 1s\n  volumes: [{{name: data, path: /data, snapshot: {policy}}}]\n"
            )
        };
        let manifest_path = node.dir.join("apps").join(&id).join("manifest.yml");
        std::fs::write(&manifest_path, manifest("1")).map_err(io_err("write manifest"))?;
        // The volume's data, written before the install (which keeps what is there).
        let volume = node.dir.join("data/apps").join(&id).join("data");
        std::fs::create_dir_all(&volume).map_err(io_err("mkdir volume"))?;
        let blob = volume.join("blob");
        let wrote = Instant::now();
        {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&blob).map_err(io_err("create blob"))?;
            let chunk = vec![0x5a_u8; 8 << 20];
            for _ in 0..(gib << 30) / chunk.len() as u64 {
                f.write_all(&chunk).map_err(io_err("write blob"))?;
            }
            f.sync_all().map_err(io_err("sync blob"))?;
        }
        eprintln!(
            "bench:   wrote {gib} GiB in {:.1} s",
            wrote.elapsed().as_secs_f64()
        );
        let watchdog = Watchdog::listen(node.dir.join("notify.sock"))?;
        let env = [
            ("NOTIFY_SOCKET", watchdog.path.display().to_string()),
            ("WATCHDOG_USEC", WATCHDOG_USEC.to_string()),
        ];
        let outcome = async {
            let mut serve = Serve::spawn_with(
                &self.bin,
                &node,
                &self.args.host,
                Duration::from_secs(5),
                &env,
            )?;
            let mut client = serve.client().await?;
            wait_all_running(&mut client, &node.ids, Duration::from_secs(120)).await?;
            std::fs::write(&manifest_path, manifest("2")).map_err(io_err("write manifest"))?;
            client
                .call("catalog.reload", Value::Null)
                .await
                .map_err(|e| BenchError::Failed(format!("catalog.reload: {e}")))?;
            let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let sampler = tokio::spawn(sample_list(serve.port, done.clone()));
            let began = Instant::now();
            let op = client
                .call("package.upgrade", json!({ "id": &id }))
                .await
                .map_err(|e| BenchError::Failed(format!("package.upgrade: {e}")))?;
            let op_id = op["operation"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let mut last_progress = Value::Null;
            let status = loop {
                let op = client
                    .call("operation.get", json!({ "id": &op_id }))
                    .await
                    .map_err(|e| BenchError::Failed(format!("operation.get: {e}")))?;
                if op["progress"]["total"].is_number() {
                    last_progress = op["progress"].clone();
                }
                if op["status"] != "running" {
                    break op;
                }
                if began.elapsed() > Duration::from_secs(900) {
                    return Err(BenchError::Failed(
                        "the upgrade took over 15 minutes".into(),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let took = began.elapsed();
            let ended = Instant::now();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            let samples = sampler
                .await
                .map_err(|e| BenchError::Failed(format!("sampler: {e}")))??;
            if status["status"] != "succeeded" {
                return Err(BenchError::Failed(format!("the upgrade failed: {status}")));
            }
            let name = format!("upgrade, {gib} GiB volume, snapshot: {policy}");
            self.record(
                "Responsiveness",
                &format!("{name}: time"),
                1,
                "s",
                vec![took.as_secs_f64()],
                None,
            );
            self.record_latency(
                "Responsiveness",
                &format!("package.list during {name}"),
                1,
                &samples,
            );
            let gap = watchdog.longest_gap(began, ended);
            self.record(
                "Responsiveness",
                &format!("{name}: longest gap between watchdog pings"),
                1,
                "ms",
                vec![ms(gap)],
                Some("< 2000 ms (WATCHDOG_USEC)"),
            );
            if !last_progress.is_null() {
                self.note(format!("{name}: last progress seen {last_progress}"));
            }
            let _ = serve.stop("TERM").await;
            Ok(())
        }
        .await;
        drop(watchdog);
        self.remove_prefix(&prefix).await?;
        let _ = std::fs::remove_dir_all(&node.dir);
        outcome
    }
}
