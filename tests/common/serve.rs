//! `archipelago serve` as a child process, for tests that kill it (SIGKILL) and start it
//! again, and `archipelago ctl` to talk to it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::node::Node;

/// A running `archipelago serve`; killed (SIGKILL) and reaped when dropped.
pub struct Serve(pub Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Serve {
    /// SIGKILL: the supervisor gets no chance to clean anything up.
    pub fn kill_9(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

/// Starts `archipelago serve --config CONFIG`.
pub fn serve(config: &Path) -> Serve {
    Serve(
        Command::new(env!("CARGO_BIN_EXE_archipelago"))
            .args(["serve", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// A loopback port free now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
        std::fs::write(node.dir.path().join("password"), "secret\n").unwrap();
        let password = node.dir.path().join("ctl-password");
        std::fs::write(&password, "secret\n").unwrap();
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
