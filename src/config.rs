//! The supervisor's config file (YAML): where the catalog and data live, the engine
//! socket, timings, the first-boot apps, the memory budget and the password file.
//!
//! Relative paths resolve against the folder of the config file. Unknown fields are
//! errors. This module only reads and checks the file on its own: whether `default_apps`
//! exist is the catalog's business.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::manifest::{parse_yaml, serde_duration, AppId};
use crate::memory::MemoryLimit;

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Dashboard and RPC address (default `127.0.0.1:8080`, loopback only).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The catalog: one folder per app.
    pub apps_dir: PathBuf,
    /// State file, secrets and app volumes.
    pub data_dir: PathBuf,
    /// The container engine.
    #[serde(default)]
    pub engine: EngineConfig,
    /// Period of the full relist that backs up the engine's event stream (default 30s).
    #[serde(default = "default_reconcile_interval", with = "serde_duration")]
    pub reconcile_interval: Duration,
    /// Apps installed and started at first boot (no state in `data_dir` yet).
    #[serde(default)]
    pub default_apps: Vec<AppId>,
    /// When set, apps whose limits would exceed it together are refused.
    #[serde(default)]
    pub memory_budget: Option<MemoryLimit>,
    /// Dashboard and RPC login.
    pub auth: AuthConfig,
    /// The app that runs Tor and serves every app's onion services (default `tor`).
    #[serde(default = "default_tor_app")]
    pub tor_app: AppId,
    /// HTTPS for the dashboard and RPC; absent: plain HTTP on `listen` only.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Host names the dashboard answers to besides `localhost`, the hostname,
    /// `<hostname>.local` and IP literals; any other `Host` gets 403.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// A reverse proxy whose `X-Forwarded-For` is believed (login limits, `/metrics`).
    #[serde(default)]
    pub trusted_proxy: Option<IpAddr>,
    /// Bearer token with which a scraper off loopback may read `/metrics`.
    #[serde(default)]
    pub metrics_token: Option<String>,
    /// Scheduled, encrypted backups off the node (see docs/backups.md); absent: none.
    #[serde(default)]
    pub backup: Option<crate::backup::BackupConfig>,
}

/// The HTTPS listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Address of the HTTPS listener, e.g. `0.0.0.0:8443`.
    pub listen: SocketAddr,
    /// PEM certificate chain; with `key`. Both absent: a self-signed pair made on first
    /// start in `<data_dir>/tls/`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
}

fn default_tor_app() -> AppId {
    // A literal that passes the id rules.
    "tor".parse().expect("`tor` is a valid app id")
}

/// Where the engine is and how containers are networked by default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Docker or Podman API socket (default `unix:///var/run/docker.sock`).
    #[serde(default = "default_engine_host")]
    pub host: String,
    /// Network of apps without `container.network` (default `bridge`).
    #[serde(default = "default_network")]
    pub default_network: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            host: default_engine_host(),
            default_network: default_network(),
        }
    }
}

/// Login settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// File whose first line is the password.
    pub password_file: PathBuf,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_engine_host() -> String {
    "unix:///var/run/docker.sock".to_string()
}

fn default_network() -> String {
    "bridge".to_string()
}

fn default_reconcile_interval() -> Duration {
    Duration::from_secs(30)
}

/// Why a config file was refused. One line naming the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A field is missing, unknown or has a bad value.
    #[error("{}: {field}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        reason: String,
    },
}

impl Config {
    /// Reads and checks the config at `path`, resolving relative paths against its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_yaml(path, &text)
    }

    /// Parses config text as if read from `path` (relative paths resolve against its folder).
    pub fn from_yaml(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let invalid = |field: &str, reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field: field.to_string(),
            reason,
        };
        let mut config: Config = parse_yaml(path, text).map_err(|p| invalid(&p.field, p.reason))?;
        if config.reconcile_interval.is_zero() {
            return Err(invalid(
                "reconcile_interval",
                "must be above 0s".to_string(),
            ));
        }
        for (field, value) in [
            ("apps_dir", &config.apps_dir),
            ("data_dir", &config.data_dir),
            ("auth.password_file", &config.auth.password_file),
        ] {
            if value.as_os_str().is_empty() {
                return Err(invalid(field, "is empty".to_string()));
            }
        }
        if config.engine.host.trim().is_empty() {
            return Err(invalid("engine.host", "is empty".to_string()));
        }
        if config.engine.default_network.trim().is_empty() {
            return Err(invalid("engine.default_network", "is empty".to_string()));
        }
        let base = path.parent().unwrap_or(Path::new(""));
        config.apps_dir = base.join(&config.apps_dir);
        config.data_dir = base.join(&config.data_dir);
        config.auth.password_file = base.join(&config.auth.password_file);
        if let Some(backup) = &mut config.backup {
            backup
                .check()
                .map_err(|(field, reason)| invalid(&field, reason))?;
            backup.resolve(base, &config.data_dir);
        }
        if let Some(tls) = &mut config.tls {
            if tls.cert.is_some() != tls.key.is_some() {
                let field = if tls.cert.is_some() {
                    "tls.key"
                } else {
                    "tls.cert"
                };
                return Err(invalid(
                    field,
                    "set both tls.cert and tls.key, or neither for a self-signed pair".to_string(),
                ));
            }
            tls.cert = tls.cert.as_ref().map(|p| base.join(p));
            tls.key = tls.key.as_ref().map(|p| base.join(p));
        }
        if config
            .metrics_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(invalid("metrics_token", "is empty".to_string()));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "listen: 127.0.0.1:9090
apps_dir: ../apps
data_dir: /var/lib/archipelago
engine:
  host: unix:///tmp/docker.sock
  default_network: host
reconcile_interval: 5m
default_apps: [tor, bitcoind, lnd]
memory_budget: 6GiB
auth:
  password_file: password
tls:
  listen: 0.0.0.0:8443
  cert: tls/cert.pem
  key: tls/key.pem
allowed_hosts: [node.example]
trusted_proxy: 127.0.0.1
metrics_token: scrape-me
";

    const MINIMAL: &str = "apps_dir: apps\ndata_dir: data\nauth: {password_file: /etc/pw}\n";

    #[test]
    fn reads_every_field_and_resolves_paths() {
        let config = Config::from_yaml(Path::new("config/demo.yml"), FULL).expect("example parses");
        assert_eq!(
            config.listen,
            "127.0.0.1:9090".parse().expect("valid address")
        );
        assert_eq!(config.apps_dir, PathBuf::from("config/../apps"));
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/archipelago"));
        assert_eq!(config.engine.host, "unix:///tmp/docker.sock");
        assert_eq!(config.engine.default_network, "host");
        assert_eq!(config.reconcile_interval, Duration::from_secs(300));
        let ids: Vec<&str> = config.default_apps.iter().map(AppId::as_str).collect();
        assert_eq!(ids, ["tor", "bitcoind", "lnd"]);
        assert_eq!(config.memory_budget.map(MemoryLimit::bytes), Some(6 << 30));
        assert_eq!(config.auth.password_file, PathBuf::from("config/password"));
        let tls = config.tls.expect("tls");
        assert_eq!(tls.listen, "0.0.0.0:8443".parse().expect("valid address"));
        assert_eq!(tls.cert, Some(PathBuf::from("config/tls/cert.pem")));
        assert_eq!(config.allowed_hosts, ["node.example"]);
        assert_eq!(config.trusted_proxy, Some([127, 0, 0, 1].into()));
        assert_eq!(config.metrics_token.as_deref(), Some("scrape-me"));
    }

    #[test]
    fn fills_defaults() {
        let config = Config::from_yaml(Path::new("demo.yml"), MINIMAL).expect("minimal parses");
        assert_eq!(config.listen, default_listen());
        assert_eq!(config.apps_dir, PathBuf::from("apps"));
        assert_eq!(config.engine, EngineConfig::default());
        assert_eq!(config.engine.host, "unix:///var/run/docker.sock");
        assert_eq!(config.engine.default_network, "bridge");
        assert_eq!(config.reconcile_interval, Duration::from_secs(30));
        assert!(config.default_apps.is_empty());
        assert_eq!(config.memory_budget, None);
        assert_eq!(config.auth.password_file, PathBuf::from("/etc/pw"));
        assert_eq!(config.tls, None);
        assert!(config.allowed_hosts.is_empty());
        assert_eq!(config.trusted_proxy, None);
        assert_eq!(config.metrics_token, None);
    }

    #[test]
    fn refuses_bad_fields_in_one_line() {
        let cases = [
            ("reconcile_interval: 5m", "reconcile_interval: 5x", "reconcile_interval: line 7: invalid duration \"5x\": unknown time unit \"x\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)"),
            ("reconcile_interval: 5m", "reconcile_interval: 0s", "reconcile_interval: must be above 0s"),
            ("memory_budget: 6GiB", "memory_budget: 6g", "memory_budget: line 9: \"6g\" is ambiguous: write 6Gi for powers of 1024 or 6G for powers of 1000"),
            ("listen: 127.0.0.1:9090", "listen: localhost", "listen: line 1: invalid socket address syntax"),
            ("[tor, bitcoind, lnd]", "[tor, ../x]", "default_apps[1]: line 8: invalid app id \"../x\": use 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit"),
            ("  host: unix:///tmp/docker.sock\n", "  host: unix:///tmp/docker.sock\n  tls: true\n", "engine.tls: line 6: unknown field `tls`, expected `host` or `default_network`"),
            ("  default_network: host\n", "  default_network: ''\n", "engine.default_network: is empty"),
            ("data_dir: /var/lib/archipelago\n", "", "data_dir: line 1: is required"),
            ("  password_file: password\n", "  password_file: password\n  user: admin\n", "auth.user: line 12: unknown field `user`, expected `password_file`"),
            ("  key: tls/key.pem\n", "", "tls.key: set both tls.cert and tls.key, or neither for a self-signed pair"),
            ("metrics_token: scrape-me", "metrics_token: ' '", "metrics_token: is empty"),
        ];
        for (from, to, want) in cases {
            assert!(FULL.contains(from), "{from:?} is not in the example");
            let err = Config::from_yaml(Path::new("config/demo.yml"), &FULL.replacen(from, to, 1))
                .expect_err("invalid config");
            assert_eq!(
                err.to_string(),
                format!("config/demo.yml: {want}"),
                "{to:?}"
            );
        }
    }

    #[test]
    fn loads_from_disk() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("archipelago.yml");
        std::fs::write(&path, MINIMAL).expect("write config");
        let config = Config::load(&path).expect("config loads");
        assert_eq!(config.apps_dir, dir.path().join("apps"));
        assert_eq!(config.data_dir, dir.path().join("data"));

        let missing = dir.path().join("missing.yml");
        let err = Config::load(&missing).expect_err("missing file");
        assert_eq!(
            err.to_string(),
            format!(
                "{}: cannot read: No such file or directory (os error 2)",
                missing.display()
            )
        );
    }
}
