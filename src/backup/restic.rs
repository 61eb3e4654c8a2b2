//! The repository, through the restic program: encrypted, deduplicated, incremental, in
//! restic's own format, so an owner can read it with restic alone.
//!
//! Every call runs restic as a child process on tokio (never on an actor's thread), with
//! the repository and the password file in its environment — the password itself never
//! appears on a command line or in a log. A child dies with the supervisor
//! (`PR_SET_PDEATHSIG`), as it would on a power cut; the repository stays readable and
//! the next run removes the dead run's lock (`restic unlock` removes stale locks only).
//!
//! Over 600 lines only with its unit tests (restic's JSON output, one table each); the
//! code is about 500.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

use super::config::{BackupConfig, Retention, Target};
use super::BackupError;

/// The host name written in every snapshot: a restore on a new machine finds the old
/// machine's snapshots whatever the new one is called.
pub const HOST: &str = "archipelago";
/// Tag of the scheduled (and requested) runs.
pub const TAG_NODE: &str = "node";
/// Tag of the channel-backup copies.
pub const TAG_CHANNEL: &str = "channel-backup";

/// restic's exit code for a snapshot made with some files unreadable.
const EXIT_PARTIAL: i32 = 3;
/// Longest stderr tail kept in an error.
const STDERR_TAIL: usize = 2000;

/// One repository, as restic reaches it.
#[derive(Debug, Clone)]
pub struct Restic {
    program: PathBuf,
    repository: String,
    password_file: PathBuf,
    /// Besides the repository and password: S3 credentials.
    env: Vec<(String, String)>,
    /// `-o sftp.command=…` for SFTP targets.
    options: Vec<String>,
    /// The password file and the repository were found or made: set once, under this lock,
    /// so a run and the channel watcher never both make them.
    prepared: std::sync::Arc<tokio::sync::Mutex<bool>>,
}

/// restic's `--json` summary of a backup.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Summary {
    pub snapshot_id: String,
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    /// Bytes the run added to the repository (after deduplication, before encryption
    /// overhead): what an incremental run moves.
    pub data_added: u64,
    pub total_files_processed: u64,
    pub total_bytes_processed: u64,
}

/// One snapshot, as `backup.list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub short_id: String,
    pub time: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
}

/// A line of `restic backup --json`.
#[derive(Debug, Deserialize)]
#[serde(tag = "message_type", rename_all = "lowercase")]
enum BackupLine {
    Status {
        #[serde(default)]
        bytes_done: u64,
        #[serde(default)]
        total_bytes: u64,
    },
    Summary(Summary),
    Error {
        #[serde(default)]
        error: serde_json::Value,
        #[serde(default)]
        item: String,
    },
    #[serde(other)]
    Other,
}

impl Restic {
    /// The repository of `config` (password file already resolved). Reads S3 credential
    /// files; makes no call yet.
    pub fn new(config: &BackupConfig) -> Result<Restic, BackupError> {
        let password_file = config
            .password_file
            .clone()
            .ok_or_else(|| BackupError::Config("backup.password_file is not set".into()))?;
        let mut env = Vec::new();
        let mut options = Vec::new();
        let repository = match &config.target {
            Target::Local(path) => path.display().to_string(),
            Target::Sftp(s) => {
                let mut ssh = format!(
                    "ssh -p {} -i {} -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes",
                    s.port,
                    s.key.display()
                );
                if let Some(known) = &s.known_hosts {
                    ssh.push_str(&format!(" -o UserKnownHostsFile={}", known.display()));
                }
                ssh.push_str(&format!(" {}@{} -s sftp", s.user, s.host));
                options.push("-o".to_string());
                options.push(format!("sftp.command={ssh}"));
                format!("sftp:{}@{}:{}", s.user, s.host, s.path)
            }
            Target::S3(s) => {
                let key = first_line(&s.access_key_file, "backup.target.s3.access_key_file")?;
                let secret = first_line(&s.secret_key_file, "backup.target.s3.secret_key_file")?;
                env.push(("AWS_ACCESS_KEY_ID".to_string(), key));
                env.push(("AWS_SECRET_ACCESS_KEY".to_string(), secret));
                if let Some(region) = &s.region {
                    env.push(("AWS_DEFAULT_REGION".to_string(), region.clone()));
                }
                let base = s.endpoint.trim_end_matches('/');
                match &s.prefix {
                    Some(p) => format!("s3:{base}/{}/{}", s.bucket, p.trim_matches('/')),
                    None => format!("s3:{base}/{}", s.bucket),
                }
            }
        };
        Ok(Restic {
            program: config.restic.clone(),
            repository,
            password_file,
            env,
            options,
            prepared: Default::default(),
        })
    }

    /// The repository as restic names it (no secret in it).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// Makes the password file (32 random bytes, hex, mode 0600) when it is missing.
    pub fn ensure_password(&self) -> Result<bool, BackupError> {
        let path = &self.password_file;
        if path.exists() {
            return Ok(false);
        }
        let io = |source| BackupError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| io(std::io::Error::other(e.to_string())))?;
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        writeln!(file, "{}", hex::encode(bytes)).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(true)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.options)
            .args(args)
            .env("RESTIC_REPOSITORY", &self.repository)
            .env("RESTIC_PASSWORD_FILE", &self.password_file)
            .env_remove("RESTIC_PASSWORD")
            .env_remove("RESTIC_PASSWORD_COMMAND")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: the closure runs in the child between fork and exec and only makes one
        // async-signal-safe system call (prctl).
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))
                .map_err(std::io::Error::from)
            });
        }
        cmd
    }

    /// Runs restic to its end and answers its stdout; a non-zero exit is an error with the
    /// tail of stderr.
    async fn run(&self, args: &[&str], cwd: Option<&Path>) -> Result<String, BackupError> {
        let mut cmd = self.command(args);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let out = cmd.output().await.map_err(|e| self.spawn_error(args, e))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(self.failed(args, out.status.code(), &out.stderr))
        }
    }

    fn spawn_error(&self, args: &[&str], e: std::io::Error) -> BackupError {
        BackupError::Restic {
            command: args.first().copied().unwrap_or_default().to_string(),
            reason: format!("cannot run {}: {e}", self.program.display()),
        }
    }

    fn failed(&self, args: &[&str], code: Option<i32>, stderr: &[u8]) -> BackupError {
        let text = String::from_utf8_lossy(stderr);
        let text = text.trim();
        let start = text.len().saturating_sub(STDERR_TAIL);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        BackupError::Restic {
            command: args.first().copied().unwrap_or_default().to_string(),
            reason: match code {
                Some(c) => format!("exit {c}: {}", &text[start..]),
                None => format!("killed by a signal: {}", &text[start..]),
            },
        }
    }

    /// Makes sure the password file and the repository exist (once per process; callers
    /// in parallel wait for the first). Answers whether the password file was made.
    pub async fn prepare(&self) -> Result<bool, BackupError> {
        let mut prepared = self.prepared.lock().await;
        if *prepared {
            return Ok(false);
        }
        let made = self.ensure_password()?;
        if self.ensure_repository().await? {
            tracing::info!(repository = %self.repository, "backup: repository created");
        }
        let cleared = self.clear_dead_locks().await?;
        if cleared > 0 {
            tracing::warn!(
                locks = cleared,
                "backup: removed the locks of runs that died with an earlier supervisor"
            );
        }
        *prepared = true;
        Ok(made)
    }

    /// Removes the locks left by restic processes of this machine that are gone, when
    /// every lock in the repository is such a one; answers how many. restic's own
    /// `unlock` takes a dead process's lock for live while its zombie is not reaped yet
    /// (a supervisor killed with its children, under an init that reaps late), and a
    /// stale exclusive-lock conflict would fail every later run's retention.
    async fn clear_dead_locks(&self) -> Result<usize, BackupError> {
        let out = self.run(&["list", "locks", "--no-lock"], None).await?;
        let ids: Vec<&str> = out.split_whitespace().collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        #[derive(Deserialize)]
        struct Lock {
            hostname: String,
            pid: u32,
        }
        for id in &ids {
            let text = self.run(&["cat", "lock", "--no-lock", id], None).await?;
            let lock: Lock = serde_json::from_str(&text).map_err(|e| BackupError::Restic {
                command: "cat".into(),
                reason: format!("lock {id}: {e}"),
            })?;
            if lock.hostname != host.trim() || process_alive(lock.pid) {
                return Ok(0); // someone else's, or a live run: restic's rules apply
            }
        }
        self.run(&["unlock", "--remove-all"], None).await?;
        Ok(ids.len())
    }

    /// Opens the repository, creating it when there is none. Answers true when created.
    pub async fn ensure_repository(&self) -> Result<bool, BackupError> {
        if self.run(&["cat", "config"], None).await.is_ok() {
            return Ok(false);
        }
        self.run(&["init"], None).await?;
        Ok(true)
    }

    /// Removes locks left by runs that died (restic's own rule: same host and the process
    /// is gone, or older than 30 minutes).
    pub async fn unlock(&self) -> Result<(), BackupError> {
        self.run(&["unlock"], None).await.map(|_| ())
    }

    /// Backs up `paths` (relative to `cwd`, stored so) with `tags`, leaving out `excludes`
    /// (restic patterns); `progress(done, total)` sees the bytes as they go. A snapshot
    /// made with unreadable files is an error: a partial backup is not a success.
    pub async fn backup(
        &self,
        cwd: &Path,
        paths: &[String],
        excludes: &[String],
        tags: &[&str],
        mut progress: impl FnMut(u64, u64),
    ) -> Result<Summary, BackupError> {
        let mut args: Vec<String> = vec![
            "backup".into(),
            "--json".into(),
            "--host".into(),
            HOST.into(),
        ];
        for tag in tags {
            args.push("--tag".into());
            args.push((*tag).to_string());
        }
        for ex in excludes {
            args.push("--exclude".into());
            args.push(ex.clone());
        }
        args.push("--".into());
        args.extend(paths.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = self
            .command(&refs)
            .current_dir(cwd)
            .spawn()
            .map_err(|e| self.spawn_error(&refs, e))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let err_task = tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf).await;
            buf
        });
        let mut lines = BufReader::new(stdout).lines();
        let mut summary = None;
        let mut errors = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<BackupLine>(&line) {
                Ok(BackupLine::Status {
                    bytes_done,
                    total_bytes,
                }) => progress(bytes_done, total_bytes),
                Ok(BackupLine::Summary(s)) => summary = Some(s),
                Ok(BackupLine::Error { error, item }) => errors.push(format!("{item}: {error}")),
                _ => {}
            }
        }
        let status = child.wait().await.map_err(|e| self.spawn_error(&refs, e))?;
        let stderr = err_task.await.unwrap_or_default();
        match (status.code(), summary) {
            (Some(0), Some(s)) => Ok(s),
            (Some(EXIT_PARTIAL), _) => Err(BackupError::Partial {
                unreadable: if errors.is_empty() {
                    String::from_utf8_lossy(&stderr).trim().to_string()
                } else {
                    errors.join("; ")
                },
            }),
            (Some(0), None) => Err(BackupError::Restic {
                command: "backup".into(),
                reason: "restic ended without a summary".into(),
            }),
            (code, _) => Err(self.failed(&refs, code, &stderr)),
        }
    }

    /// Drops the snapshots tagged `tag` that `keep` does not keep, and prunes their data.
    pub async fn forget(&self, tag: &str, keep: &Retention) -> Result<(), BackupError> {
        let (h, d, w) = (
            keep.hourly.to_string(),
            keep.daily.to_string(),
            keep.weekly.to_string(),
        );
        self.run(
            &[
                "forget",
                "--tag",
                tag,
                "--host",
                HOST,
                "--keep-hourly",
                &h,
                "--keep-daily",
                &d,
                "--keep-weekly",
                &w,
                "--prune",
            ],
            None,
        )
        .await
        .map(|_| ())
    }

    /// Keeps the last `n` snapshots tagged `tag` (per set of paths), without pruning.
    pub async fn forget_keep_last(&self, tag: &str, n: u32) -> Result<(), BackupError> {
        let n = n.max(1).to_string();
        self.run(
            &["forget", "--tag", tag, "--host", HOST, "--keep-last", &n],
            None,
        )
        .await
        .map(|_| ())
    }

    /// Checks the repository's structure and reads back `subset` of its data.
    pub async fn check(&self, subset: &str) -> Result<(), BackupError> {
        let arg = format!("--read-data-subset={subset}");
        self.run(&["check", &arg], None).await.map(|_| ())
    }

    /// Snapshots, oldest first; with `tag`, only those carrying it.
    pub async fn snapshots(&self, tag: Option<&str>) -> Result<Vec<Snapshot>, BackupError> {
        // Reading needs no lock: a listing never waits on a prune.
        let mut args = vec!["snapshots", "--no-lock", "--json"];
        if let Some(tag) = tag {
            args.extend(["--tag", tag]);
        }
        let out = self.run(&args, None).await?;
        serde_json::from_str(out.trim()).map_err(|e| BackupError::Restic {
            command: "snapshots".into(),
            reason: format!("unreadable answer: {e}"),
        })
    }

    /// Every path in a snapshot (as stored: relative to `data_dir`, with a leading `/`).
    pub async fn ls(&self, snapshot: &str) -> Result<Vec<String>, BackupError> {
        let out = self
            .run(&["ls", "--no-lock", "--json", snapshot], None)
            .await?;
        #[derive(Deserialize)]
        struct Node {
            path: Option<String>,
        }
        Ok(out
            .lines()
            .filter_map(|l| serde_json::from_str::<Node>(l).ok())
            .filter_map(|n| n.path)
            .collect())
    }

    /// Restores `snapshot` under `target`, leaving out `excludes`; with `include`, only
    /// those paths.
    pub async fn restore(
        &self,
        snapshot: &str,
        target: &Path,
        include: &[String],
        excludes: &[String],
    ) -> Result<(), BackupError> {
        let target = target.display().to_string();
        let mut args: Vec<String> =
            vec!["restore".into(), snapshot.into(), "--target".into(), target];
        for i in include {
            args.push("--include".into());
            args.push(i.clone());
        }
        for e in excludes {
            args.push("--exclude".into());
            args.push(e.clone());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&refs, None).await.map(|_| ())
    }
}

/// True when `pid` is a running process (a zombie is not).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses, which may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The first line of a credential file, trimmed.
fn first_line(path: &Path, field: &str) -> Result<String, BackupError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BackupError::Config(format!("{field}: {}: {e}", path.display())))?;
    let line = text.lines().next().unwrap_or_default().trim().to_string();
    if line.is_empty() {
        return Err(BackupError::Config(format!(
            "{field}: {}: the first line is empty",
            path.display()
        )));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_lines_parse() {
        let status = r#"{"message_type":"status","percent_done":0.5,"total_files":2,"bytes_done":10,"total_bytes":20}"#;
        assert!(matches!(
            serde_json::from_str::<BackupLine>(status).unwrap(),
            BackupLine::Status {
                bytes_done: 10,
                total_bytes: 20
            }
        ));
        let summary = r#"{"message_type":"summary","files_new":2,"files_changed":0,"files_unmodified":0,"dirs_new":4,"dirs_changed":0,"dirs_unmodified":0,"data_blobs":2,"tree_blobs":5,"data_added":2115,"total_files_processed":2,"total_bytes_processed":6,"total_duration":0.24,"snapshot_id":"9470ab25"}"#;
        match serde_json::from_str::<BackupLine>(summary).unwrap() {
            BackupLine::Summary(s) => {
                assert_eq!(s.snapshot_id, "9470ab25");
                assert_eq!(s.data_added, 2115);
                assert_eq!(s.total_bytes_processed, 6);
            }
            other => panic!("{other:?}"),
        }
        let error = r#"{"message_type":"error","error":{"Op":"open","Path":"x"},"during":"archival","item":"/d/x"}"#;
        assert!(matches!(
            serde_json::from_str::<BackupLine>(error).unwrap(),
            BackupLine::Error { .. }
        ));
        let verbose = r#"{"message_type":"verbose_status","action":"new","item":"/d/x"}"#;
        assert!(matches!(
            serde_json::from_str::<BackupLine>(verbose).unwrap(),
            BackupLine::Other
        ));
    }

    #[test]
    fn this_process_is_alive_and_a_free_pid_is_not() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(u32::MAX - 1));
    }

    fn config(yaml: &str) -> BackupConfig {
        let mut c: BackupConfig = serde_yaml::from_str(yaml).unwrap();
        c.resolve(
            Path::new("/etc/archipelago"),
            Path::new("/var/lib/archipelago"),
        );
        c
    }

    #[test]
    fn repositories_are_named_as_restic_wants_them() {
        let r = Restic::new(&config("target: {local: /mnt/usb/node}")).unwrap();
        assert_eq!(r.repository(), "/mnt/usb/node");
        assert_eq!(
            r.password_file,
            Path::new("/var/lib/archipelago/backup/password")
        );
        let r = Restic::new(&config(
            "target:\n  sftp: {host: h, port: 2222, user: u, path: /srv/b, key: k, known_hosts: kh}",
        ))
        .unwrap();
        assert_eq!(r.repository(), "sftp:u@h:/srv/b");
        assert_eq!(r.options[0], "-o");
        assert!(r.options[1].starts_with("sftp.command=ssh -p 2222 -i /etc/archipelago/k "));
        assert!(r.options[1].contains("-o UserKnownHostsFile=/etc/archipelago/kh"));
        assert!(r.options[1].ends_with(" u@h -s sftp"));
    }

    #[test]
    fn s3_credentials_come_from_their_files_and_missing_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "AKID\n").unwrap();
        std::fs::write(dir.path().join("s"), "SECRET\nignored\n").unwrap();
        let yaml = format!(
            "target:\n  s3: {{endpoint: 'http://127.0.0.1:9000/', bucket: b, prefix: /node/, access_key_file: {0}/a, secret_key_file: {0}/s}}",
            dir.path().display()
        );
        let r = Restic::new(&config(&yaml)).unwrap();
        assert_eq!(r.repository(), "s3:http://127.0.0.1:9000/b/node");
        assert!(r.env.contains(&("AWS_ACCESS_KEY_ID".into(), "AKID".into())));
        assert!(r
            .env
            .contains(&("AWS_SECRET_ACCESS_KEY".into(), "SECRET".into())));
        let missing = "target:\n  s3: {endpoint: 'http://h', bucket: b, access_key_file: /nope/a, secret_key_file: /nope/s}";
        let err = Restic::new(&config(missing)).unwrap_err().to_string();
        assert!(err.contains("backup.target.s3.access_key_file"), "{err}");
    }

    #[test]
    fn a_new_password_file_is_random_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "target: {{local: /x}}\npassword_file: {}/sub/pw",
            dir.path().display()
        );
        let r = Restic::new(&config(&yaml)).unwrap();
        assert!(r.ensure_password().unwrap());
        assert!(!r.ensure_password().unwrap(), "made twice");
        let path = dir.path().join("sub/pw");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
