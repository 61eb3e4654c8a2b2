//! An app's backup policy (`backup:` in its manifest): which volumes go into the node's
//! backups, how a consistent copy is made, which files never leave the node, and where a
//! Lightning app keeps its channel backup. The backup itself lives in [`crate::backup`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::yaml::serde_duration;

/// `backup:` in a manifest. Absent: every own volume, copied live, nothing left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupPolicy {
    /// Own volumes (by `NAME`) that go in; absent: all of the app's own volumes.
    #[serde(default)]
    pub volumes: Option<Vec<String>>,
    /// Globs, relative to a volume's root (`cache/**`, `*.log`), left out of backups.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// How the copy is made consistent.
    #[serde(default)]
    pub consistency: Consistency,
    /// The command run in the container before its volumes are read (consistency `exec`).
    #[serde(default)]
    pub pre: Option<PreBackup>,
    /// Paths or globs (`VOLUME/PATH`) that are never backed up nor restored: a Lightning
    /// database restored from an old copy broadcasts old states and loses funds.
    #[serde(default)]
    pub never: Vec<String>,
    /// The file a Lightning app rewrites whenever its channels change; the supervisor
    /// copies it to the target within seconds of each change.
    #[serde(default)]
    pub channel_backup: Option<ChannelBackup>,
}

/// How a backup gets a consistent copy of an app's volumes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// The app is stopped (the normal stop operation), copied, then started again.
    Stop,
    /// `pre.exec` runs in the running container first (e.g. a database dump).
    Exec,
    /// Copied while running: for data that is safe to copy live.
    #[default]
    Live,
}

impl Consistency {
    /// The name used in manifests and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Stop => "stop",
            Consistency::Exec => "exec",
            Consistency::Live => "live",
        }
    }
}

/// `pre: {exec: [...], timeout: 5m}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreBackup {
    pub exec: Vec<String>,
    /// Longest the command may run (default 5m); a command that fails or overruns fails
    /// the backup.
    #[serde(default = "default_pre_timeout", with = "serde_duration")]
    pub timeout: Duration,
}

fn default_pre_timeout() -> Duration {
    Duration::from_secs(300)
}

/// `channel_backup: {volume: data, path: chain/bitcoin/mainnet/channel.backup}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelBackup {
    /// One of the app's own volumes.
    pub volume: String,
    /// The file, relative to the volume's root.
    pub path: String,
}

/// A relative path that stays inside its root: no `..`, not absolute, not empty.
pub(super) fn check_relative(path: &str) -> Result<(), String> {
    if path.trim().is_empty() {
        return Err("is empty".to_string());
    }
    if path.starts_with('/') {
        return Err(format!("{path:?} must be relative to the volume"));
    }
    if path.split('/').any(|part| part == "..") {
        return Err(format!("{path:?} may not contain `..`"));
    }
    Ok(())
}

impl super::AppManifest {
    /// Names of the app's own volumes (not a dependency's), in manifest order.
    pub fn own_volume_names(&self) -> Vec<&str> {
        self.container
            .volumes
            .iter()
            .filter(|v| v.app.is_none())
            .map(|v| v.name.as_str())
            .collect()
    }
}

impl BackupPolicy {
    /// The single-app rules of the policy, as `(field, reason)` pairs; `own` are the
    /// names of the app's own volumes.
    pub fn problems(&self, own: &[&str]) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut known = |field: String, name: &str| {
            if !own.contains(&name) {
                problems.push((
                    field,
                    format!("{name:?} is not one of the app's own volumes"),
                ));
            }
        };
        for (i, name) in self.volumes.iter().flatten().enumerate() {
            known(format!("backup.volumes[{i}]"), name);
        }
        if let Some(cb) = &self.channel_backup {
            known("backup.channel_backup.volume".to_string(), &cb.volume);
        }
        for (i, glob) in self.exclude.iter().enumerate() {
            if let Err(reason) = check_relative(glob) {
                problems.push((format!("backup.exclude[{i}]"), reason));
            }
        }
        for (i, path) in self.never.iter().enumerate() {
            let field = format!("backup.never[{i}]");
            match check_relative(path) {
                Err(reason) => problems.push((field, reason)),
                Ok(()) => {
                    let volume = path.split('/').next().unwrap_or_default();
                    if !own.contains(&volume) {
                        problems.push((
                            field,
                            format!("{path:?} must start with one of the app's own volumes"),
                        ));
                    }
                }
            }
        }
        if let Some(cb) = &self.channel_backup {
            if let Err(reason) = check_relative(&cb.path) {
                problems.push(("backup.channel_backup.path".to_string(), reason));
            }
        }
        match (&self.consistency, &self.pre) {
            (Consistency::Exec, None) => problems.push((
                "backup.pre".to_string(),
                "consistency `exec` needs `pre: {exec: [...]}`".to_string(),
            )),
            (Consistency::Exec, Some(pre)) if pre.exec.is_empty() => {
                problems.push(("backup.pre.exec".to_string(), "is empty".to_string()))
            }
            (Consistency::Stop | Consistency::Live, Some(_)) => problems.push((
                "backup.pre".to_string(),
                "is only used with consistency `exec`".to_string(),
            )),
            _ => {}
        }
        problems
    }

    /// The volumes that go in, from the app's own volume names.
    pub fn volumes_in<'a>(&'a self, own: &[&'a str]) -> Vec<&'a str> {
        match &self.volumes {
            Some(list) => list.iter().map(String::as_str).collect(),
            None => own.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> BackupPolicy {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn defaults_are_all_volumes_live() {
        let p = BackupPolicy::default();
        assert_eq!(p.consistency, Consistency::Live);
        assert_eq!(p.volumes_in(&["data", "conf"]), vec!["data", "conf"]);
        assert!(p.problems(&["data"]).is_empty());
    }

    #[test]
    fn problems_name_the_field() {
        let cases = [
            ("volumes: [nope]", "backup.volumes[0]"),
            ("never: [/data/x]", "backup.never[0]"),
            ("never: [other/x]", "backup.never[0]"),
            ("exclude: [../x]", "backup.exclude[0]"),
            ("consistency: exec", "backup.pre"),
            ("consistency: stop\npre: {exec: [true]}", "backup.pre"),
            (
                "channel_backup: {volume: nope, path: x}",
                "backup.channel_backup.volume",
            ),
            (
                "channel_backup: {volume: data, path: ../x}",
                "backup.channel_backup.path",
            ),
        ];
        for (yaml, field) in cases {
            let problems = policy(yaml).problems(&["data"]);
            assert_eq!(problems.len(), 1, "{yaml}: {problems:?}");
            assert_eq!(problems[0].0, field, "{yaml}");
        }
    }

    #[test]
    fn unknown_fields_and_consistencies_are_refused() {
        assert!(serde_yaml::from_str::<BackupPolicy>("volume: [data]").is_err());
        assert!(serde_yaml::from_str::<BackupPolicy>("consistency: snapshot").is_err());
    }

    #[test]
    fn a_lightning_policy_parses() {
        let p = policy(
            "consistency: stop\nnever: [data/**/channel.db, data/**/wtclient.db]\nchannel_backup: {volume: data, path: chain/bitcoin/mainnet/channel.backup}",
        );
        assert!(p.problems(&["data"]).is_empty());
        assert_eq!(p.channel_backup.unwrap().volume, "data");
    }
}
