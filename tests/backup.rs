//! Backups against the real engine, the real restic and real targets on loopback: a local
//! folder, a private OpenSSH server (SFTP) and an S3-compatible server (moto). Two apps
//! with data are backed up on schedule, a Lightning-like app's `channel.backup` reaches
//! the target within seconds of each rewrite, its `channel.db` is in no snapshot, a restore
//! onto an empty data folder reproduces every file and brings the apps back running, and a
//! backup cut off by killing the supervisor leaves a readable repository behind.
//!
//! Needs `scripts/test-env.sh up` (engines, restic, openssh-server, the moto venv).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use archipelago::ctl::RpcClient;
use common::browser::Browser;
use common::serve::{free_port, require_engine, wait_state, ServeNode, TestNode};
use common::{busybox_manifest, remove_containers, wait_until};
use serde_json::{json, Value};

/// The moto server installed by `scripts/test-env.sh up`.
const MOTO: &str = "/tmp/archipelago-test/moto/bin/moto_server";
const SSHD: &str = "/usr/sbin/sshd";

/// The app that stands in for lnd: stopped for its backup, never `channel.db` nor
/// `wtclient.db`, and it rewrites `chain/channel.backup` whenever `/data/trigger` appears.
fn lightning_app(node: &ServeNode) -> String {
    let command = "mkdir -p /data/chain; while true; do if [ -f /data/trigger ]; then date > /data/chain/channel.backup.tmp; cat /data/trigger >> /data/chain/channel.backup.tmp; mv /data/chain/channel.backup.tmp /data/chain/channel.backup; rm /data/trigger; fi; sleep 0.2; done";
    let top = "secrets:\n  seed: {kind: password, length: 32}\nbackup:\n  consistency: stop\n  never: [data/**/channel.db, data/**/wtclient.db]\n  channel_backup: {volume: data, path: chain/channel.backup}\n";
    let extra = "  volumes: [\"data:/data\"]\n  stop_timeout: 1s\n";
    node.manifest(
        "ln",
        &busybox_manifest("{id}", "LN", "1", command, top, extra),
    )
}

/// A plain app copied live (or as `consistency` says), its cache left out.
fn web_app(node: &ServeNode, consistency: &str) -> String {
    let top = format!("backup:\n  consistency: {consistency}\n  exclude: [\"cache/**\"]\n");
    let extra = "  volumes: [\"data:/data\", \"conf:/conf\"]\n  stop_timeout: 1s\n";
    node.manifest(
        "web",
        &busybox_manifest("{id}", "Web", "1", "sleep 100000", &top, extra),
    )
}

/// A child process killed (by its own pid) on drop.
struct Daemon(Child);

impl Daemon {
    /// Starts `program` with `args`, its output discarded, and waits until it listens on
    /// `port`; `what` names it in a failure. A missing program fails naming the set-up
    /// command.
    fn start(what: &str, program: &str, args: &[&str], port: u16) -> Daemon {
        assert!(
            Path::new(program).exists(),
            "{program} is missing; run `scripts/test-env.sh up`"
        );
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let daemon = Daemon(child);
        wait_port(port, what);
        daemon
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where a test node backs up to, with what it takes to run restic by hand.
struct Target {
    /// The `backup:` section's `target:` value (YAML, indented for `target:`).
    yaml: String,
    /// Environment for running restic directly against it (besides the password file).
    env: Vec<(String, String)>,
    /// `-o` options for restic (sftp.command).
    options: Vec<String>,
    repository: String,
    _daemon: Option<Daemon>,
    _dir: tempfile::TempDir,
}

fn local_target() -> Target {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    Target {
        yaml: format!("    local: {}\n", repo.display()),
        env: vec![],
        options: vec![],
        repository: repo.display().to_string(),
        _daemon: None,
        _dir: dir,
    }
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A private sshd on 127.0.0.1:<free port> with its own host key, config and authorized
/// key; the system's sshd is left alone.
fn sftp_target() -> Target {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // sshd refuses to start without its privilege separation folder.
    std::fs::create_dir_all("/run/sshd").unwrap();
    for key in ["host_key", "client_key"] {
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(d.join(key)),
        );
    }
    std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
    let port = free_port();
    let config = d.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {pid}\nAuthorizedKeysFile {ak}\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n",
            hk = d.join("host_key").display(),
            pid = d.join("sshd.pid").display(),
            ak = d.join("authorized_keys").display(),
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let daemon = Daemon::start("sshd", SSHD, &["-D", "-e", "-f", &config], port);
    let host_key = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
    let known = d.join("known_hosts");
    std::fs::write(&known, format!("[127.0.0.1]:{port} {host_key}")).unwrap();
    let user = run_ok(Command::new("id").arg("-un")).trim().to_string();
    let repo = d.join("repo");
    let ssh = format!(
        "ssh -p {port} -i {} -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} {user}@127.0.0.1 -s sftp",
        d.join("client_key").display(),
        known.display()
    );
    Target {
        yaml: format!(
            "    sftp:\n      host: 127.0.0.1\n      port: {port}\n      user: {user}\n      path: {}\n      key: {}\n      known_hosts: {}\n",
            repo.display(),
            d.join("client_key").display(),
            known.display()
        ),
        env: vec![],
        options: vec!["-o".into(), format!("sftp.command={ssh}")],
        repository: format!("sftp:{user}@127.0.0.1:{}", repo.display()),
        _daemon: Some(daemon),
        _dir: dir,
    }
}

/// moto's S3 server on 127.0.0.1:<free port>.
fn s3_target() -> Target {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let args = ["-H", "127.0.0.1", "-p", &port.to_string()];
    let daemon = Daemon::start("moto", MOTO, &args, port);
    let (key, secret) = (dir.path().join("access_key"), dir.path().join("secret_key"));
    std::fs::write(&key, "testing\n").unwrap();
    std::fs::write(&secret, "testing-secret\n").unwrap();
    let bucket = format!("archipelago-{}", std::process::id());
    Target {
        yaml: format!(
            "    s3:\n      endpoint: http://127.0.0.1:{port}\n      bucket: {bucket}\n      region: us-east-1\n      access_key_file: {}\n      secret_key_file: {}\n",
            key.display(),
            secret.display()
        ),
        env: vec![
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing-secret".into()),
            ("AWS_DEFAULT_REGION".into(), "us-east-1".into()),
        ],
        options: vec![],
        repository: format!("s3:http://127.0.0.1:{port}/{bucket}"),
        _daemon: Some(daemon),
        _dir: dir,
    }
}

impl Target {
    /// restic by hand against this target, with the node's password file.
    fn restic(&self, password: &Path, args: &[&str]) -> String {
        let mut cmd = Command::new("restic");
        cmd.args(&self.options)
            .args(args)
            .env("RESTIC_REPOSITORY", &self.repository)
            .env("RESTIC_PASSWORD_FILE", password)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        run_ok(&mut cmd)
    }

    fn snapshots(&self, password: &Path, tag: Option<&str>) -> Vec<Value> {
        let mut args = vec!["snapshots", "--no-lock", "--json"];
        if let Some(t) = tag {
            args.extend(["--tag", t]);
        }
        serde_json::from_str(self.restic(password, &args).trim()).unwrap()
    }
}

fn backup_section(target: &Target, schedule: &str) -> String {
    format!(
        "backup:\n  target:\n{}  schedule: {schedule}\n  check_subset: 100%\n",
        target.yaml
    )
}

async fn status(c: &mut RpcClient) -> Value {
    c.call("backup.status", json!({})).await.unwrap()
}

/// Waits for a finished run that started after `after` and answers it; a failed one
/// fails the test with its error.
async fn wait_run_after(c: &mut RpcClient, after: &str, within: Duration) -> Value {
    wait_until("a backup run to succeed", within, async || {
        let s = status(c).await;
        let last = &s["last"];
        match last["started_at"].as_str() {
            Some(at) if at > after => {
                assert_eq!(last["status"], "succeeded", "backup run failed: {last}");
                Ok(last.clone())
            }
            _ => Err(s.to_string()),
        }
    })
    .await
}

/// Every file under `root`, relative path → bytes.
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    // xorshift: incompressible enough for restic, reproducible, no extra crate.
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Writes the apps' data into their volumes on the host.
fn write_data(data: &Path, web: &str, ln: &str) {
    let w = data.join("apps").join(web);
    std::fs::create_dir_all(w.join("data/cache")).unwrap();
    std::fs::create_dir_all(w.join("data/blobs")).unwrap();
    std::fs::write(w.join("data/blobs/a.bin"), random_bytes(3 << 20, 7)).unwrap();
    std::fs::write(w.join("data/notes.txt"), "hello\n").unwrap();
    std::fs::write(w.join("data/cache/skip.tmp"), "scratch").unwrap();
    std::fs::write(w.join("conf/web.conf"), "port=1\n").unwrap();
    let l = data.join("apps").join(ln).join("data");
    std::fs::create_dir_all(l.join("chain/bitcoin")).unwrap();
    std::fs::write(l.join("wallet.db"), random_bytes(1 << 20, 11)).unwrap();
    std::fs::write(l.join("chain/bitcoin/channel.db"), "OLD CHANNEL STATE").unwrap();
    std::fs::write(l.join("chain/bitcoin/wtclient.db"), "OLD TOWER STATE").unwrap();
}

/// Asks the lightning app to rewrite its channel backup; answers the new file's content
/// and when the app wrote it.
async fn rewrite_channel_backup(data: &Path, ln: &str, marker: &str) -> (Vec<u8>, Instant) {
    let vol = data.join("apps").join(ln).join("data");
    std::fs::write(vol.join("trigger"), marker).unwrap();
    let file = vol.join("chain/channel.backup");
    wait_until(
        "the app rewriting channel.backup",
        Duration::from_secs(10),
        async || match std::fs::read(&file) {
            Ok(bytes) if String::from_utf8_lossy(&bytes).contains(marker) => {
                Ok((bytes, Instant::now()))
            }
            other => Err(format!("{other:?}")),
        },
    )
    .await
}

/// The whole story against one target.
async fn backup_and_restore(target: Target) {
    require_engine().await;
    let node = ServeNode::new("bk");
    let web = web_app(&node, "live");
    let ln = lightning_app(&node);
    let config = node.config(
        &common::docker_host(),
        "none",
        &[web.clone(), ln.clone()],
        &backup_section(&target, "3s"),
    );
    let data = node.dir.path().join("data");
    let password = data.join("backup/password");
    let server = TestNode::start(&config);
    let mut c = server.client().await;
    wait_state(&mut c, &web, "running", Duration::from_secs(60)).await;
    wait_state(&mut c, &ln, "running", Duration::from_secs(60)).await;

    // A scheduled run after the data is written takes both apps.
    write_data(&data, &web, &ln);
    let (first_cb, _) = rewrite_channel_backup(&data, &ln, "first").await;
    let after = archipelago::api::now();
    let run = wait_run_after(&mut c, &after, Duration::from_secs(90)).await;
    assert_eq!(run["kind"], "backup");
    assert_eq!(run["trigger"], "schedule");
    assert_eq!(run["checked"], true);
    let apps: Vec<&str> = run["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        apps.contains(&web.as_str()) && apps.contains(&ln.as_str()),
        "{run}"
    );
    assert!(
        run["progress"]["done"].as_u64().unwrap() >= 4 << 20,
        "{run}"
    );
    // The app stopped for its copy runs again.
    wait_state(&mut c, &ln, "running", Duration::from_secs(30)).await;

    // The channel backup reaches the target within 5 s of each rewrite.
    let (new_cb, written) = rewrite_channel_backup(&data, &ln, "second").await;
    assert_ne!(first_cb, new_cb);
    let file = format!("/apps/{ln}/data/chain/channel.backup");
    let tag = format!("channel-backup,app:{ln}");
    loop {
        let copies = target.snapshots(&password, Some(&tag));
        if let Some(latest) = copies.last() {
            let id = latest["id"].as_str().unwrap();
            let dumped = target.restic(&password, &["dump", "--no-lock", id, &file]);
            if dumped.as_bytes() == new_cb.as_slice() {
                eprintln!(
                    "channel backup on {} within {:?} of its rewrite",
                    target.repository,
                    written.elapsed()
                );
                break;
            }
        }
        assert!(
            written.elapsed() < Duration::from_secs(5),
            "channel.backup not on the target within 5 s of its rewrite"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status_now = status(&mut c).await;
    assert!(
        status_now["channel_backups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|cb| cb["app"] == ln.as_str()),
        "{status_now}"
    );

    // One more scheduled run after the last change; then the node is gone.
    let after = archipelago::api::now();
    wait_run_after(&mut c, &after, Duration::from_secs(60)).await;
    let listed = c.call("backup.list", json!({})).await.unwrap();
    assert!(listed.as_array().unwrap().len() >= 2, "{listed}");
    drop(c);
    drop(server);
    remove_containers(&node.prefix);

    // No snapshot holds a channel database, a tower database or the excluded cache.
    let snapshots = target.snapshots(&password, None);
    assert!(!snapshots.is_empty());
    for snap in &snapshots {
        let id = snap["id"].as_str().unwrap();
        let listing = target.restic(&password, &["ls", "--no-lock", id]);
        for bad in ["channel.db", "wtclient.db", "skip.tmp"] {
            assert!(!listing.contains(bad), "{bad} in snapshot {id}:\n{listing}");
        }
    }

    // A new machine: the same catalog, an empty data folder, the password put back.
    let fresh = ServeNode::new("rs");
    std::fs::remove_dir_all(fresh.apps_dir()).unwrap();
    copy_tree(&node.apps_dir(), &fresh.apps_dir());
    let new_config = fresh.config(
        &common::docker_host(),
        "none",
        &[],
        &backup_section(&target, "1h"),
    );
    let new_data = fresh.dir.path().join("data");
    std::fs::create_dir_all(new_data.join("backup")).unwrap();
    std::fs::copy(&password, new_data.join("backup/password")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_archipelago"))
        .args(["backup", "restore", "--config"])
        .arg(&new_config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "restore failed: {stderr}");
    assert!(
        stderr.contains("WARNING") && stderr.contains(&ln) && stderr.contains("force-closed"),
        "no channel warning: {stderr}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["apps"].as_array().unwrap().len(), 2, "{report}");

    // Byte for byte: every volume and secret, minus what must never come back.
    for sub in [
        format!("apps/{web}"),
        format!("apps/{ln}"),
        format!("secrets/{ln}"),
    ] {
        let mut want = files(&data.join(&sub));
        want.retain(|path, _| {
            !path.ends_with("channel.db")
                && !path.ends_with("wtclient.db")
                && !path.contains("cache/")
        });
        let got = files(&new_data.join(&sub));
        assert!(!want.is_empty(), "{sub} is empty");
        assert_eq!(
            want.keys().collect::<Vec<_>>(),
            got.keys().collect::<Vec<_>>(),
            "{sub}: files differ"
        );
        for (path, bytes) in &want {
            assert!(got[path] == *bytes, "{sub}/{path} differs after restore");
        }
    }
    assert!(!new_data
        .join(format!("apps/{ln}/data/chain/bitcoin/channel.db"))
        .exists());

    // And the apps come back running.
    let server = TestNode::start(&new_config);
    let mut c = server.client().await;
    wait_state(&mut c, &web, "running", Duration::from_secs(60)).await;
    wait_state(&mut c, &ln, "running", Duration::from_secs(60)).await;
    drop(c);
    drop(server);
    remove_containers(&fresh.prefix);
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest: PathBuf = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[actix_web::test]
async fn backup_to_a_local_folder_and_restore() {
    backup_and_restore(local_target()).await;
}

#[actix_web::test]
async fn backup_to_sftp_and_restore() {
    backup_and_restore(sftp_target()).await;
}

#[actix_web::test]
async fn backup_to_s3_and_restore() {
    backup_and_restore(s3_target()).await;
}

/// Killing the supervisor in the middle of a run leaves the repository readable, and the
/// next run completes.
#[actix_web::test]
async fn a_backup_cut_off_by_a_kill_leaves_a_readable_repository() {
    require_engine().await;
    let target = local_target();
    let node = ServeNode::new("bkk");
    let web = web_app(&node, "stop");
    let ln = lightning_app(&node); // in the catalog, not installed
    let config = node.config(
        &common::docker_host(),
        "none",
        std::slice::from_ref(&web),
        &format!("backup:\n  target:\n{}  check_subset: 100%\n", target.yaml),
    );
    let data = node.dir.path().join("data");
    let password = data.join("backup/password");
    let mut server = TestNode::start(&config);
    let mut c = server.client().await;
    wait_state(&mut c, &web, "running", Duration::from_secs(60)).await;
    // Enough data that the run is still copying when it is cut off.
    let blobs = data.join("apps").join(&web).join("data/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    for i in 0..8u64 {
        std::fs::write(
            blobs.join(format!("{i}.bin")),
            random_bytes(64 << 20, i + 1),
        )
        .unwrap();
    }
    let run = c.call("backup.run", json!({})).await.unwrap();
    assert_eq!(run["operation"]["status"], "running", "{run}");
    // A second request while one runs is a conflict.
    let again = c
        .call("backup.run", json!({}))
        .await
        .unwrap_err()
        .to_string();
    assert!(again.contains("still running"), "{again}");
    wait_until(
        "the run to copy bytes",
        Duration::from_secs(60),
        async || {
            let s = status(&mut c).await;
            match s["running"]["progress"]["done"].as_u64() {
                Some(done) if done > 0 => Ok(()),
                _ => Err(s.to_string()),
            }
        },
    )
    .await;
    server.kill9();
    drop(c);

    // restic died with the supervisor; the repository is readable and passes its check.
    let deadline = Instant::now() + Duration::from_secs(10);
    while restic_children_alive(&target.repository) {
        assert!(Instant::now() < deadline, "restic outlived the supervisor");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        target.snapshots(&password, Some("node")).is_empty(),
        "the run was not cut off: it finished before the kill"
    );
    target.restic(&password, &["cat", "config", "--no-lock"]);

    // The app the cut-off run had stopped runs again, and the next run completes.
    let server = TestNode::start(&config);
    let mut c = server.client().await;
    wait_state(&mut c, &web, "running", Duration::from_secs(60)).await;
    assert!(!data.join("backup/stopped-for-backup").exists());
    let run = c.call("backup.run", json!({})).await.unwrap();
    let started = run["operation"]["started_at"].as_str().unwrap().to_string();
    let before = (started.as_str()[..started.len() - 1]).to_string();
    let last = wait_run_after(&mut c, &before, Duration::from_secs(180)).await;
    assert_eq!(last["status"], "succeeded");
    assert!(target.snapshots(&password, Some("node")).len() == 1);
    target.restic(&password, &["check", "--read-data"]);

    // backup.restore puts one app's data back on the running node, byte for byte.
    let volume = data.join("apps").join(&web).join("data");
    let before = files(&volume);
    std::fs::write(volume.join("blobs/0.bin"), "overwritten").unwrap();
    std::fs::write(volume.join("added-later.txt"), "not in the snapshot").unwrap();
    let last = restore_one(&mut c, &web).await;
    assert_eq!(last["status"], "succeeded", "{last}");
    assert_eq!(files(&volume), before);
    wait_state(&mut c, &web, "running", Duration::from_secs(60)).await;
    // A Lightning app is never restored over a running node.
    let last = restore_one(&mut c, &ln).await;
    assert_eq!(last["status"], "failed", "{last}");
    assert!(
        last["error"]
            .as_str()
            .unwrap()
            .contains("archipelago backup restore"),
        "{last}"
    );
    drop(c);
    drop(server);
    remove_containers(&node.prefix);
}

/// `backup.restore` of one app; answers the finished run.
async fn restore_one(c: &mut RpcClient, id: &str) -> Value {
    let op = c.call("backup.restore", json!({ "id": id })).await.unwrap();
    let op_id = op["operation"]["id"].as_str().unwrap().to_string();
    assert_eq!(op["operation"]["kind"], "restore", "{op}");
    wait_until("the restore to end", Duration::from_secs(120), async || {
        let s = status(c).await;
        if s["last"]["id"] == op_id.as_str() {
            Ok(s["last"].clone())
        } else {
            Err(s.to_string())
        }
    })
    .await
}

/// True while a restic process works on `repository`.
fn restic_children_alive(repository: &str) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|p| {
        let stat = std::fs::read_to_string(p.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if zombie {
            return false;
        }
        let environ = std::fs::read(p.path().join("environ")).unwrap_or_default();
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        String::from_utf8_lossy(&cmdline).starts_with("restic")
            && String::from_utf8_lossy(&environ).contains(repository)
    })
}

/// The second run of a 1 GiB volume with 10 MiB rewritten adds about 10 MiB to the
/// repository (restic's `data_added`): deduplication, not timing, is asserted; the
/// figures are printed for docs/performance.md.
#[actix_web::test]
async fn an_incremental_run_moves_about_what_changed() {
    use archipelago::backup::restic::Restic;
    use archipelago::backup::BackupConfig;
    const MIB: usize = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let volume = data.join("apps/big/data");
    std::fs::create_dir_all(&volume).unwrap();
    let file = volume.join("blob.bin");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&file).unwrap();
        for i in 0..64u64 {
            f.write_all(&random_bytes(16 * MIB, 1000 + i)).unwrap();
        }
    }
    let mut config: BackupConfig = serde_yaml::from_str(&format!(
        "target: {{local: {}}}\npassword_file: {}",
        dir.path().join("repo").display(),
        dir.path().join("password").display()
    ))
    .unwrap();
    config.check().unwrap();
    config.resolve(dir.path(), &data);
    let restic = Restic::new(&config).unwrap();
    restic.prepare().await.unwrap();
    let paths = vec!["apps/big/data".to_string()];
    let started = Instant::now();
    let first = restic
        .backup(&data, &paths, &[], &["node"], |_, _| {})
        .await
        .unwrap();
    let first_took = started.elapsed();
    // Rewrite 10 MiB in the middle of the file.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.seek(SeekFrom::Start(500 * MIB as u64)).unwrap();
        f.write_all(&random_bytes(10 * MIB, 4242)).unwrap();
    }
    let started = Instant::now();
    let second = restic
        .backup(&data, &paths, &[], &["node"], |_, _| {})
        .await
        .unwrap();
    let second_took = started.elapsed();
    eprintln!(
        "incremental: first run {} bytes processed, {} added in {:?}; second run {} processed, {} added in {:?}",
        first.total_bytes_processed,
        first.data_added,
        first_took,
        second.total_bytes_processed,
        second.data_added,
        second_took
    );
    assert_eq!(first.total_bytes_processed, 1 << 30);
    assert!(first.data_added >= 1 << 30, "{first:?}");
    assert!(
        second.data_added >= (10 * MIB) as u64 && second.data_added <= (30 * MIB) as u64,
        "the second run added {} bytes for a 10 MiB change",
        second.data_added
    );
}

/// The dashboard's Backup section: "Back up now" runs a backup and the section shows its
/// success with the bytes added; a run that fails is shown as failed, with restic's error.
#[actix_web::test]
async fn the_dashboard_shows_the_last_backup_result() {
    require_engine().await;
    let target = local_target();
    let node = ServeNode::new("bkd");
    // Consistency `exec`: a pre-backup command dumps into the volume before the copy.
    let top = "backup:\n  consistency: exec\n  pre: {exec: [\"sh\", \"-c\", \"echo dumped > /data/dump.txt\"], timeout: 30s}\n";
    let extra = "  volumes: [\"data:/data\"]\n  stop_timeout: 1s\n";
    let web = node.manifest(
        "web",
        &busybox_manifest("{id}", "Web", "1", "sleep 100000", top, extra),
    );
    let config = node.config(
        &common::docker_host(),
        "none",
        std::slice::from_ref(&web),
        &format!("backup:\n  target:\n{}", target.yaml),
    );
    let data = node.dir.path().join("data");
    let server = TestNode::start(&config);
    let mut c = server.client().await;
    wait_state(&mut c, &web, "running", Duration::from_secs(60)).await;
    std::fs::write(data.join("apps").join(&web).join("data/page.txt"), "x").unwrap();
    let token = c
        .call("auth.login", json!({"password": common::serve::PASSWORD}))
        .await
        .unwrap();
    let page = Browser::start(None).await;
    page.goto(&format!("{}/", server.base)).await;
    page.exec(&format!(
        "sessionStorage.setItem('archipelago.token', {}); location.reload(); return true;",
        token["token"]
    ))
    .await;
    page.wait_for(
        "the Backup section",
        "!document.getElementById('backup').hidden",
        Duration::from_secs(20),
    )
    .await;
    let summary = page
        .exec("return document.getElementById('backup-summary').textContent;")
        .await;
    assert_eq!(summary, "no backup yet");
    page.exec("document.getElementById('backup-run').click(); return true;")
        .await;
    let text = page
        .wait_for(
            "a succeeded backup",
            "document.getElementById('backup-summary').textContent.includes('succeeded') && document.getElementById('backup-summary').textContent",
            Duration::from_secs(90),
        )
        .await;
    assert!(text.as_str().unwrap().contains("added"), "{text}");
    let dump = data.join("apps").join(&web).join("data/dump.txt");
    assert_eq!(std::fs::read_to_string(&dump).unwrap(), "dumped\n");
    let password = data.join("backup/password");
    let listing = target.restic(&password, &["ls", "--no-lock", "latest"]);
    assert!(listing.contains("/data/dump.txt"), "{listing}");
    // A wrong password makes the next run fail; the section says so.
    std::fs::write(data.join("backup/password"), "not the password\n").unwrap();
    page.exec("document.getElementById('backup-run').click(); return true;")
        .await;
    let text = page
        .wait_for(
            "a failed backup",
            "document.getElementById('backup-summary').textContent.includes('FAILED') && document.getElementById('backup-summary').textContent",
            Duration::from_secs(90),
        )
        .await;
    assert!(text.as_str().unwrap().contains("restic"), "{text}");
    let failed = page
        .exec("return document.getElementById('backup').classList.contains('failed');")
        .await;
    assert_eq!(failed, true);
    drop(page);
    drop(c);
    drop(server);
    remove_containers(&node.prefix);
}
