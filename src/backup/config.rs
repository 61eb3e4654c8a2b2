//! The `backup:` section of the config file: the target, the repository password,
//! the schedule and the retention.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `backup:` in the config file. Absent: no backups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Where the repository lives.
    pub target: Target,
    /// The repository password, first line of this file (default
    /// `<data_dir>/backup/password`, made with 32 random bytes when missing). Keep a copy
    /// off the node: without it the backups cannot be read.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Time between scheduled runs (e.g. `1h`); absent: runs only on request.
    #[serde(default, with = "opt_duration")]
    pub schedule: Option<Duration>,
    /// Which snapshots are kept after each run.
    #[serde(default)]
    pub keep: Retention,
    /// Share of the repository's data read back by the check after each run, as restic's
    /// `--read-data-subset` takes it (default `5%`).
    #[serde(default = "default_check_subset")]
    pub check_subset: String,
    /// The restic program (default `restic`, found on `PATH`).
    #[serde(default = "default_restic")]
    pub restic: PathBuf,
}

/// Where the repository lives: exactly one of `local`, `sftp`, `s3`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "TargetFields")]
pub enum Target {
    /// A folder on this machine, e.g. a mounted USB disk.
    Local(PathBuf),
    /// A folder on an SSH server.
    Sftp(SftpTarget),
    /// A bucket of S3-compatible storage.
    S3(S3Target),
}

/// `target:` as written: a map with exactly one of its keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetFields {
    #[serde(default)]
    local: Option<PathBuf>,
    #[serde(default)]
    sftp: Option<SftpTarget>,
    #[serde(default)]
    s3: Option<S3Target>,
}

impl TryFrom<TargetFields> for Target {
    type Error = String;

    fn try_from(f: TargetFields) -> Result<Target, String> {
        match (f.local, f.sftp, f.s3) {
            (Some(p), None, None) => Ok(Target::Local(p)),
            (None, Some(s), None) => Ok(Target::Sftp(s)),
            (None, None, Some(s)) => Ok(Target::S3(s)),
            _ => Err("set exactly one of `local`, `sftp`, `s3`".to_string()),
        }
    }
}

/// `sftp: {host, port, user, path, key, known_hosts}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftpTarget {
    pub host: String,
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    pub user: String,
    /// The repository folder on the server.
    pub path: String,
    /// The private key ssh logs in with.
    pub key: PathBuf,
    /// Known host keys of the server (OpenSSH format); absent: ssh's own files. The
    /// server's key is always checked.
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
}

/// `s3: {endpoint, bucket, region, access_key_file, secret_key_file}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Target {
    /// e.g. `https://s3.eu-central-1.amazonaws.com` or `http://127.0.0.1:9000`.
    pub endpoint: String,
    pub bucket: String,
    /// A folder inside the bucket (default: the bucket's root).
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// File whose first line is the access key id.
    pub access_key_file: PathBuf,
    /// File whose first line is the secret access key.
    pub secret_key_file: PathBuf,
}

/// How many snapshots of each period are kept (restic `forget --keep-*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default = "default_hourly")]
    pub hourly: u32,
    #[serde(default = "default_daily")]
    pub daily: u32,
    #[serde(default = "default_weekly")]
    pub weekly: u32,
    /// Channel backups kept per app (default 100): each change of a channel is one.
    #[serde(default = "default_channel")]
    pub channel: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            hourly: default_hourly(),
            daily: default_daily(),
            weekly: default_weekly(),
            channel: default_channel(),
        }
    }
}

/// `Option<Duration>` as humantime text (`1h`).
mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

fn default_hourly() -> u32 {
    24
}
fn default_daily() -> u32 {
    7
}
fn default_weekly() -> u32 {
    4
}
fn default_channel() -> u32 {
    100
}
fn default_ssh_port() -> u16 {
    22
}
fn default_check_subset() -> String {
    "5%".to_string()
}
fn default_restic() -> PathBuf {
    PathBuf::from("restic")
}

impl BackupConfig {
    /// Checks the section; answers `(field, reason)` for the first problem.
    pub fn check(&self) -> Result<(), (String, String)> {
        let bad = |field: &str, reason: &str| Err((format!("backup.{field}"), reason.to_string()));
        if self.schedule.is_some_and(|s| s < Duration::from_secs(1)) {
            return bad("schedule", "must be at least 1s");
        }
        if self.keep.hourly + self.keep.daily + self.keep.weekly == 0 {
            return bad(
                "keep",
                "keeps nothing: set at least one of hourly, daily, weekly",
            );
        }
        let subset = self.check_subset.trim();
        let valid_subset = match subset.strip_suffix('%') {
            Some(pct) => pct.parse::<f64>().is_ok_and(|p| p > 0.0 && p <= 100.0),
            None => subset.split_once('/').is_some_and(|(n, m)| {
                matches!((n.parse::<u32>(), m.parse::<u32>()), (Ok(n), Ok(m)) if n >= 1 && n <= m)
            }),
        };
        if !valid_subset {
            return bad("check_subset", "must be a percentage (`5%`) or `n/m`");
        }
        match &self.target {
            Target::Local(path) if path.as_os_str().is_empty() => bad("target.local", "is empty"),
            Target::Sftp(s) if s.host.trim().is_empty() => bad("target.sftp.host", "is empty"),
            Target::Sftp(s) if s.user.trim().is_empty() => bad("target.sftp.user", "is empty"),
            Target::Sftp(s) if s.path.trim().is_empty() => bad("target.sftp.path", "is empty"),
            Target::Sftp(s) if s.host.contains(['@', ':', ' ']) => {
                bad("target.sftp.host", "must be a plain host name or address")
            }
            Target::S3(s)
                if !s.endpoint.starts_with("http://") && !s.endpoint.starts_with("https://") =>
            {
                bad("target.s3.endpoint", "must start with http:// or https://")
            }
            Target::S3(s) if s.bucket.trim().is_empty() => bad("target.s3.bucket", "is empty"),
            _ => Ok(()),
        }
    }

    /// Resolves relative paths against `base` (the config file's folder) and fills in the
    /// default password file under `data_dir` (already resolved).
    pub fn resolve(&mut self, base: &Path, data_dir: &Path) {
        let join = |p: &mut PathBuf| *p = base.join(&*p);
        match &mut self.target {
            Target::Local(path) => join(path),
            Target::Sftp(s) => {
                join(&mut s.key);
                if let Some(k) = &mut s.known_hosts {
                    join(k);
                }
            }
            Target::S3(s) => {
                join(&mut s.access_key_file);
                join(&mut s.secret_key_file);
            }
        }
        self.password_file = Some(match &self.password_file {
            Some(p) => base.join(p),
            None => data_dir.join("backup").join("password"),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> BackupConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn targets_parse() {
        let c = parse("target: {local: /mnt/usb/node}\nschedule: 1h");
        assert_eq!(c.target, Target::Local("/mnt/usb/node".into()));
        assert_eq!(c.schedule, Some(Duration::from_secs(3600)));
        assert_eq!(c.keep, Retention::default());
        let c = parse("target:\n  sftp: {host: h, user: u, path: /srv/b, key: k}");
        assert!(matches!(
            c.target,
            Target::Sftp(SftpTarget { port: 22, .. })
        ));
        let c = parse("target:\n  s3: {endpoint: 'http://127.0.0.1:9000', bucket: b, access_key_file: a, secret_key_file: s}");
        assert!(c.check().is_ok());
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases = [
            ("target: {local: x}\nschedule: 0s", "backup.schedule"),
            (
                "target: {local: x}\nkeep: {hourly: 0, daily: 0, weekly: 0}",
                "backup.keep",
            ),
            ("target: {local: x}\ncheck_subset: lots", "backup.check_subset"),
            (
                "target:\n  sftp: {host: 'a@b', user: u, path: p, key: k}",
                "backup.target.sftp.host",
            ),
            (
                "target:\n  s3: {endpoint: 'ftp://x', bucket: b, access_key_file: a, secret_key_file: s}",
                "backup.target.s3.endpoint",
            ),
        ];
        for (yaml, field) in cases {
            assert_eq!(parse(yaml).check().unwrap_err().0, field, "{yaml}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_yaml::from_str::<BackupConfig>("target: {local: x}\nscheduel: 1h").is_err());
        assert!(serde_yaml::from_str::<BackupConfig>("target: {usb: x}").is_err());
        let both = "target: {local: x, s3: {endpoint: 'http://h', bucket: b, access_key_file: a, secret_key_file: s}}";
        assert!(serde_yaml::from_str::<BackupConfig>(both).is_err());
    }
}

#[cfg(test)]
mod config_file_tests {
    use std::path::Path;

    use crate::config::Config;

    const BASE: &str = "apps_dir: apps\ndata_dir: data\nauth:\n  password_file: pw\n";

    #[test]
    fn the_section_resolves_against_the_config_folder() {
        let text = format!("{BASE}backup:\n  target:\n    sftp: {{host: h, user: u, path: /b, key: key}}\n  schedule: 1h\n");
        let c = Config::from_yaml(Path::new("/etc/archipelago/config.yml"), &text).unwrap();
        let b = c.backup.unwrap();
        assert_eq!(
            b.password_file.unwrap(),
            Path::new("/etc/archipelago/data/backup/password")
        );
        match b.target {
            super::Target::Sftp(s) => assert_eq!(s.key, Path::new("/etc/archipelago/key")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_bad_value_names_the_file_and_field() {
        let text = format!("{BASE}backup:\n  target: {{local: x}}\n  schedule: 0s\n");
        let err = Config::from_yaml(Path::new("/etc/a/config.yml"), &text)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "/etc/a/config.yml: backup.schedule: must be at least 1s"
        );
        let text = format!("{BASE}backup:\n  target: {{local: x}}\n  shedule: 1h\n");
        let err = Config::from_yaml(Path::new("/etc/a/config.yml"), &text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("backup.shedule") || err.contains("shedule"),
            "{err}"
        );
    }
}
