//! `archipelago serve` as a child process: [`TestNode`] (start, stop, kill, logs, a logged-in
//! RPC client), [`ServeNode`] (the catalog, data folder and password a node runs on) and
//! [`Served`] (a [`Node`]'s config for `serve`), with `archipelago ctl` to talk to it.

use std::io::{BufRead, BufReader};
use std::ops::Deref;
use std::path::Path;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use archipelago::ctl::RpcClient;
use serde_json::{json, Value};

use super::node::Node;
use super::{busybox_manifest, connect, docker_host, wait_until};

/// The dashboard password of every test server.
pub const PASSWORD: &str = "correct horse battery staple";

/// A free TCP port on loopback (bound and released; good enough for one test process).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A [`Node`] with a password file, for a `serve` process; its containers are removed on
/// drop. Derefs to the node (`dir`, `prefix`, `id`).
pub struct ServeNode(Node);

impl Deref for ServeNode {
    type Target = Node;

    fn deref(&self) -> &Node {
        &self.0
    }
}

impl ServeNode {
    pub fn new(tag: &str) -> ServeNode {
        let node = Node::new(tag);
        std::fs::create_dir_all(node.apps_dir()).unwrap();
        std::fs::write(node.dir.path().join("password"), format!("{PASSWORD}\n")).unwrap();
        ServeNode(node)
    }

    fn manifest_path(&self, id: &str) -> PathBuf {
        self.dir.path().join("apps").join(id).join("manifest.yml")
    }

    /// Writes a busybox app at `version`; `extra` is YAML under `container:`.
    pub fn app(&self, name: &str, version: &str, command: &str, extra: &str) -> String {
        let id = self.id(name);
        let path = self.manifest_path(&id);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let manifest = busybox_manifest(&id, name, version, command, "", extra);
        std::fs::write(path, manifest).unwrap();
        id
    }

    /// Changes the version an app's manifest names (the next `catalog.reload` sees it).
    pub fn set_version(&self, id: &str, version: &str) {
        let path = self.manifest_path(id);
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text
            .lines()
            .map(|l| {
                if l.starts_with("version:") {
                    format!("version: \"{version}\"")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(path, text + "\n").unwrap();
    }

    /// Starts `archipelago serve` on a fresh config for this node, on a free loopback
    /// port, talking to the engine at `engine_host`.
    pub fn serve(&self, engine_host: &str, default_apps: &[String]) -> TestNode {
        self.serve_on(engine_host, "none", default_apps)
    }

    /// Like [`ServeNode::serve`], with an HTTPS listener on a free loopback port and a
    /// self-signed certificate made on first start.
    pub fn serve_tls(&self, engine_host: &str, default_apps: &[String]) -> TestNode {
        TestNode::start(&self.config(
            engine_host,
            "none",
            default_apps,
            "tls:\n  listen: 127.0.0.1:0\n",
        ))
    }

    /// Like [`ServeNode::serve`], with apps on `network` by default.
    pub fn serve_on(&self, engine_host: &str, network: &str, default_apps: &[String]) -> TestNode {
        TestNode::start(&self.config(engine_host, network, default_apps, ""))
    }

    /// Writes this node's config (apps on `network` by default; `extra` YAML appended)
    /// and answers its path, for [`TestNode::start`].
    pub fn config(
        &self,
        engine_host: &str,
        network: &str,
        default_apps: &[String],
        extra: &str,
    ) -> PathBuf {
        let config = self.dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:0\napps_dir: apps\ndata_dir: data\nengine:\n  host: {engine_host}\n  default_network: {network}\nreconcile_interval: 200ms\ndefault_apps: [{}]\nauth:\n  password_file: password\n{extra}",
                default_apps.join(", ")
            ),
        )
        .unwrap();
        config
    }

    /// Writes an app's manifest as given (`{id}` stands for the app's id).
    pub fn manifest(&self, name: &str, text: &str) -> String {
        let id = self.id(name);
        let path = self.manifest_path(&id);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text.replace("{id}", &id)).unwrap();
        id
    }
}

/// A running `archipelago serve`; stopped with SIGTERM on drop. Its log (stderr) is kept
/// and printed when the test fails.
pub struct TestNode {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The HTTPS listener, when the config has one.
    pub https: Option<Https>,
    log: Arc<Mutex<Vec<String>>>,
}

/// The HTTPS listener as serve announced it in its log.
#[derive(Debug, Clone)]
pub struct Https {
    /// `https://127.0.0.1:<port>`.
    pub base: String,
    /// SHA-256 of the certificate, `AB:CD:…`.
    pub sha256: String,
    /// Base64 SHA-256 of the certificate's public key (Chromium's SPKI pin).
    pub spki: String,
}

impl Https {
    fn from_log_line(line: &str) -> Option<Https> {
        let rest = line.split("dashboard at https://").nth(1)?;
        let addr = rest.split('/').next()?;
        let sha256 = rest.split("fingerprint ").nth(1)?.split(' ').next()?;
        let spki = rest
            .split("public key SHA-256 ")
            .nth(1)?
            .trim_end_matches(')');
        Some(Https {
            base: format!("https://{addr}"),
            sha256: sha256.to_string(),
            spki: spki.to_string(),
        })
    }
}

impl TestNode {
    /// Starts `archipelago serve` on `config` and waits until it serves.
    pub fn start(config: &std::path::Path) -> TestNode {
        let mut child = Command::new(env!("CARGO_BIN_EXE_archipelago"))
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the archipelago binary starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("dashboard at http://").nth(1) {
                    let addr = rest.split('/').next().unwrap_or_default().to_string();
                    let _ = tx.send(addr);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let mut server = TestNode {
            child,
            base: String::new(),
            https: None,
            log,
        };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => {
                server.base = format!("http://{addr}");
                // serve logs the HTTPS line before the plain one.
                server.https = server.log().iter().find_map(|l| Https::from_log_line(l));
            }
            Err(_) => panic!(
                "archipelago serve did not come up in 20 s; its log:\n{}",
                server.log().join("\n")
            ),
        }
        server
    }

    /// SIGKILL, as a power cut or an OOM kill would: nothing is cleaned up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as systemd stops it, and waits (at most 10 s) until it has exited.
    pub fn stop(self) {
        drop(self);
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Log lines at WARN or ERROR level.
    pub fn warnings(&self) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect()
    }

    /// An RPC client, logged in.
    pub async fn client(&self) -> RpcClient {
        let mut c = RpcClient::new(&self.base, Duration::from_secs(10));
        c.login(PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("login to {}: {e}", self.base));
        c
    }
}

/// The name the web tests knew it by.
pub type Server = TestNode;

impl Drop for TestNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let from = log.len().saturating_sub(80);
            eprintln!(
                "---- archipelago serve log (last {} lines) ----",
                log.len() - from
            );
            for l in &log[from..] {
                eprintln!("{l}");
            }
        }
        // Already reaped (after `kill9`): its pid may belong to another process by now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // Graceful first (as systemd would), then by force; both by this child's own pid.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `package.get` over RPC.
pub async fn get(c: &mut RpcClient, id: &str) -> Value {
    c.call("package.get", json!({ "id": id }))
        .await
        .unwrap_or_else(|e| panic!("package.get {id}: {e}"))
}

/// Polls `package.get` until `id` reads `state`, or panics after `within`.
pub async fn wait_state(c: &mut RpcClient, id: &str, state: &str, within: Duration) -> Value {
    wait_until(&format!("{id} reaching {state}"), within, async || {
        let p = get(c, id).await;
        if p["state"] == state {
            Ok(p)
        } else {
            Err(p.to_string())
        }
    })
    .await
}

/// Fails naming the set-up command when the test engine is not there.
pub async fn require_engine() {
    connect(&docker_host()).await;
}

/// A node's config for `serve`: a fixed loopback port and a password file.
pub struct Served {
    pub config: PathBuf,
    pub port: u16,
    pub password: PathBuf,
}

impl Served {
    pub fn new(node: &Node, default_apps: &[String]) -> Served {
        let port = free_port();
        let config = node.config(default_apps, "");
        let text = std::fs::read_to_string(&config)
            .unwrap()
            .replace("listen: 127.0.0.1:0", &format!("listen: 127.0.0.1:{port}"));
        std::fs::write(&config, text).unwrap();
        // serve's own file (it replaces the password by its argon2 hash on start), and a
        // clear copy for `ctl --password-file`.
        std::fs::write(node.dir.path().join("password"), format!("{PASSWORD}\n")).unwrap();
        let password = node.dir.path().join("ctl-password");
        std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
        Served {
            config,
            port,
            password,
        }
    }

    /// One `ctl` call against this node's `serve`.
    pub fn ctl(&self, args: &[&str]) -> Option<serde_json::Value> {
        ctl(self.port, &self.password, args)
    }
}

/// One `archipelago ctl` call against a running `serve`; the JSON it printed, or `None`
/// when the call failed (e.g. the server is not up yet).
pub fn ctl(port: u16, password: &Path, args: &[&str]) -> Option<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_archipelago"))
        .args(["ctl", "--url", &format!("http://127.0.0.1:{port}")])
        .arg("--password-file")
        .arg(password)
        .args(args)
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}
