//! Who may call the RPC: the password check (argon2), session tokens carried in the
//! `Authorization` header, the per-client and global login slow-down, the same-origin rule
//! for POST requests, the Host allow-list and the client address behind a trusted proxy.
//!
//! It owns the session table, the failed-login tables and the count of event streams per
//! session; it does not read requests itself beyond the headers it is handed, and it never
//! logs a password or a token. A cookie never authorizes anything: browsers send cookies to
//! every port of a host, so every app UI on the node would see it.
//!
//! Over 600 lines: about 700 of code and 300 of unit tests. Sessions, the login budgets
//! and onboarding stay in one file because one login decision reads all three (a login is
//! refused while onboarding is open; a new password ends every session).

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sha2::{Digest, Sha256};

use crate::web::setup::{self, SetupCode};

/// Password checks (argon2) run at once; further logins wait for a slot.
const PASSWORD_CHECKS: usize = 2;

/// Name of the session cookie older versions set; logout still clears it.
pub const SESSION_COOKIE: &str = "archipelago_session";

/// Why a login or a request was refused; every variant but the file ones maps to -32001.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("unauthorized: log in with auth.login first and send Authorization: Bearer <token>")]
    Missing,
    #[error("unauthorized: session expired or unknown, log in again")]
    Expired,
    #[error("unauthorized: wrong password")]
    WrongPassword,
    #[error("unauthorized: too many attempts, retry in {retry_in_secs}s")]
    TooManyAttempts { retry_in_secs: u64 },
    #[error("unauthorized: too many event streams for this session (at most {max})")]
    TooManyStreams { max: usize },
    #[error("cannot read password file {path}: {reason}")]
    PasswordFile { path: PathBuf, reason: String },
    #[error("cross-origin request refused: origin {origin} does not match host {host}")]
    CrossOrigin { origin: String, host: String },
    #[error("unauthorized: no password is set yet: open the dashboard and choose one with the setup code shown on the node's console (auth.setup)")]
    SetupPending,
    #[error("unauthorized: a password is already set: log in with auth.login (auth.setup only works once)")]
    SetupDone,
    #[error(
        "unauthorized: wrong setup code ({left} attempts left); it is shown on the node's console"
    )]
    WrongSetupCode { left: u32 },
    #[error("unauthorized: too many wrong setup codes: restart archipelago (or the node) for a new code")]
    SetupLocked,
    #[error("unauthorized: another setup is in progress")]
    SetupBusy,
    #[error("invalid params: password: at least {min} characters")]
    PasswordTooShort { min: usize },
}

/// Rules for sessions and failed logins.
#[derive(Debug, Clone)]
pub struct AuthPolicy {
    /// A session unused for this long is forgotten.
    pub session_idle_timeout: Duration,
    /// Failed logins from one client that are answered without any delay.
    pub free_attempts: u32,
    /// Delay after the first failure past `free_attempts`; doubles with each further one.
    pub base_delay: Duration,
    /// Cap of that delay.
    pub max_delay: Duration,
    /// A client's failure count is forgotten after this long without a failure.
    pub failure_window: Duration,
    /// Failed logins from all clients together within `global_window` past which every
    /// login waits: a guesser spread over many addresses still gets few tries.
    pub global_budget: usize,
    /// The window of `global_budget`.
    pub global_window: Duration,
    /// Open `/api/events` streams allowed per session.
    pub max_streams_per_session: usize,
}

impl Default for AuthPolicy {
    fn default() -> Self {
        AuthPolicy {
            session_idle_timeout: Duration::from_secs(24 * 3600),
            free_attempts: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            failure_window: Duration::from_secs(15 * 60),
            global_budget: 100,
            global_window: Duration::from_secs(60),
            max_streams_per_session: 4,
        }
    }
}

/// Failed logins of one client address.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    next_allowed: Instant,
}

/// What identifies one version of the password file: a rewrite (rename) changes the inode,
/// an edit in place the size or the modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime: Option<SystemTime>,
}

/// The password file as last read.
#[derive(Debug)]
struct Secret {
    /// The first line: an argon2 PHC string, or a clear password in a hand-edited file.
    line: String,
    stamp: Stamp,
}

/// Open event streams per session token; shared with the [`StreamSlot`]s that hold them.
type StreamCounts = Arc<Mutex<HashMap<String, usize>>>;

/// The session table and the login limiter, shared by every worker.
#[derive(Debug)]
pub struct Auth {
    password_file: PathBuf,
    policy: AuthPolicy,
    /// The password as last read; re-read (ending every session) when the file changes.
    secret: Mutex<Option<Secret>>,
    /// Token → last use; a token absent here is not a session.
    sessions: Mutex<HashMap<String, Instant>>,
    /// Client address → its recent failed logins; a client never waits on another's entry.
    failures: Mutex<HashMap<IpAddr, Failures>>,
    /// Times of recent failed logins from anyone, for the global budget.
    global_failures: Mutex<VecDeque<Instant>>,
    /// Open event streams per session.
    streams: StreamCounts,
    /// Password checks allowed at once: each argon2 check takes 19 MiB and a core for a
    /// moment, so a burst of logins queues here instead of filling the blocking pool.
    checks: Arc<tokio::sync::Semaphore>,
    /// First-run onboarding (see [`crate::web::setup`]).
    onboarding: Mutex<Onboarding>,
}

/// Where first-run onboarding stands.
#[derive(Debug)]
enum Onboarding {
    /// A password is set (or onboarding never opened): `auth.setup` is refused.
    Closed,
    /// No password yet; the code (normalized) lets one `auth.setup` through.
    Open {
        code: String,
        file: PathBuf,
        failures: u32,
        /// A right code was given and its password is being written.
        busy: bool,
    },
    /// Too many wrong codes: closed until the next start, which makes a new code.
    Locked,
}

/// One open event stream of a session; the count goes down when it drops.
#[derive(Debug)]
pub struct StreamSlot {
    counts: StreamCounts,
    token: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        if let Some(n) = counts.get_mut(&self.token) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.token);
            }
        }
    }
}

/// A login that passed the rate limits and waits for its password check.
#[derive(Debug)]
pub struct PendingLogin {
    /// The stored password line to check against (off the server threads: see [`verify_password`]).
    pub stored: String,
}

impl Auth {
    /// A new, empty session table; the password file is read on first use and whenever
    /// it changes.
    pub fn new(password_file: PathBuf, policy: AuthPolicy) -> Self {
        Auth {
            password_file,
            policy,
            secret: Mutex::new(None),
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            global_failures: Mutex::new(VecDeque::new()),
            streams: Arc::new(Mutex::new(HashMap::new())),
            checks: Arc::new(tokio::sync::Semaphore::new(PASSWORD_CHECKS)),
            onboarding: Mutex::new(Onboarding::Closed),
        }
    }

    /// Opens first-run onboarding with this run's setup code (no password file yet).
    pub fn open_onboarding(&self, code: &SetupCode) {
        *lock(&self.onboarding) = Onboarding::Open {
            code: setup::normalize(&code.code),
            file: code.file.clone(),
            failures: 0,
            busy: false,
        };
    }

    /// Whether no password is set yet and the dashboard should offer onboarding.
    /// A password file written meanwhile by other means (`archipelago passwd`) closes it.
    pub fn onboarding_open(&self) -> bool {
        let mut state = lock(&self.onboarding);
        if let Onboarding::Open { file, busy, .. } = &*state {
            if !*busy && self.password_file.exists() {
                let _ = std::fs::remove_file(file);
                *state = Onboarding::Closed;
                tracing::info!("a password file appeared: onboarding closed");
            }
        }
        !matches!(*state, Onboarding::Closed)
    }

    /// `auth.setup`: checks the setup code (constant time, [`setup::CODE_ATTEMPTS`] wrong
    /// ones at most), writes the password's argon2 hash to the password file, deletes the
    /// code and opens a session, answering its token. Works once.
    pub async fn setup(&self, ip: IpAddr, code: &str, password: &str) -> Result<String, AuthError> {
        self.begin_setup(code, password)?;
        let (path, pw) = (self.password_file.clone(), password.to_string());
        let written =
            match tokio::task::spawn_blocking(move || write_password_file(&path, &pw)).await {
                Ok(r) => r,
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
        if let Err(e) = written {
            if let Onboarding::Open { busy, .. } = &mut *lock(&self.onboarding) {
                *busy = false;
            }
            return Err(AuthError::PasswordFile {
                path: self.password_file.clone(),
                reason: format!("cannot write: {e}"),
            });
        }
        let old = std::mem::replace(&mut *lock(&self.onboarding), Onboarding::Closed);
        if let Onboarding::Open { file, .. } = old {
            if let Err(e) = std::fs::remove_file(&file) {
                tracing::warn!(path = %file.display(), "cannot delete the setup code: {e}");
            }
        }
        tracing::info!(client = %ip, path = %self.password_file.display(), "onboarding done: password set");
        self.finish_login(ip, true, Instant::now())
    }

    /// The checks of `auth.setup` before anything is written; a right code marks the
    /// setup busy so that a second one cannot race it.
    fn begin_setup(&self, code: &str, password: &str) -> Result<(), AuthError> {
        let mut state = lock(&self.onboarding);
        let Onboarding::Open {
            code: want,
            file,
            failures,
            busy,
        } = &mut *state
        else {
            return Err(match *state {
                Onboarding::Locked => AuthError::SetupLocked,
                _ => AuthError::SetupDone,
            });
        };
        if *busy {
            return Err(AuthError::SetupBusy);
        }
        if password.chars().count() < setup::MIN_PASSWORD_CHARS {
            return Err(AuthError::PasswordTooShort {
                min: setup::MIN_PASSWORD_CHARS,
            });
        }
        if constant_time_eq(setup::normalize(code).as_bytes(), want.as_bytes()) {
            *busy = true;
            return Ok(());
        }
        *failures += 1;
        tracing::warn!(failures = *failures, "onboarding: wrong setup code");
        if *failures < setup::CODE_ATTEMPTS {
            return Err(AuthError::WrongSetupCode {
                left: setup::CODE_ATTEMPTS - *failures,
            });
        }
        let _ = std::fs::remove_file(&*file);
        *state = Onboarding::Locked;
        tracing::warn!(
            "onboarding locked after too many wrong setup codes: restart for a new code"
        );
        Err(AuthError::SetupLocked)
    }

    /// Waits for one of the few password-check slots.
    pub async fn check_slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        // The semaphore is never closed, so acquiring can only wait, not fail.
        self.checks
            .clone()
            .acquire_owned()
            .await
            .expect("the password-check semaphore is never closed")
    }

    /// Checks that the password file can be read and holds a non-empty first line.
    pub fn check_password_file(&self) -> Result<(), AuthError> {
        self.refresh().map(|_| ())
    }

    /// Re-reads the password file when it changed since last read; a change ends every
    /// session and every event stream (they re-check at their next keep-alive). Answers
    /// the stored line.
    fn refresh(&self) -> Result<String, AuthError> {
        let path = &self.password_file;
        let stamp = stamp_of(path)?;
        let mut secret = lock(&self.secret);
        if let Some(s) = secret.as_ref().filter(|s| s.stamp == stamp) {
            return Ok(s.line.clone());
        }
        let line = read_password(path)?;
        if secret.is_some() {
            let ended = {
                let mut sessions = lock(&self.sessions);
                let n = sessions.len();
                sessions.clear();
                n
            };
            tracing::info!(path = %path.display(), ended, "password file changed: every session ended");
        }
        *secret = Some(Secret {
            line: line.clone(),
            stamp,
        });
        Ok(line)
    }

    /// The rate-limit half of a login: refuses a client (or everyone) still waiting after
    /// failures, else answers what to check the password against.
    pub fn begin_login(&self, ip: IpAddr, now: Instant) -> Result<PendingLogin, AuthError> {
        if self.onboarding_open() {
            return Err(AuthError::SetupPending);
        }
        let retry = |wait: Duration| AuthError::TooManyAttempts {
            retry_in_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        };
        {
            let mut failures = lock(&self.failures);
            if let Some(f) = failures.get(&ip).copied() {
                if now.duration_since(f.last) > self.policy.failure_window {
                    failures.remove(&ip);
                } else if now < f.next_allowed {
                    return Err(retry(f.next_allowed - now));
                }
            }
        }
        {
            let mut global = lock(&self.global_failures);
            prune_global(&mut global, now, self.policy.global_window);
            if global.len() >= self.policy.global_budget {
                let oldest = global.front().copied().unwrap_or(now);
                return Err(retry(
                    (oldest + self.policy.global_window).saturating_duration_since(now),
                ));
            }
        }
        Ok(PendingLogin {
            stored: self.refresh()?,
        })
    }

    /// The bookkeeping half of a login, once the password was checked: a success opens a
    /// session and answers its token, a failure counts against the client and everyone.
    pub fn finish_login(&self, ip: IpAddr, ok: bool, now: Instant) -> Result<String, AuthError> {
        if !ok {
            let mut failures = lock(&self.failures);
            let window = self.policy.failure_window;
            failures.retain(|_, f| now.duration_since(f.last) <= window);
            let f = failures.entry(ip).or_insert(Failures {
                count: 0,
                last: now,
                next_allowed: now,
            });
            f.count += 1;
            f.last = now;
            f.next_allowed = now + self.delay_after(f.count);
            drop(failures);
            let mut global = lock(&self.global_failures);
            prune_global(&mut global, now, self.policy.global_window);
            global.push_back(now);
            return Err(AuthError::WrongPassword);
        }
        lock(&self.failures).remove(&ip);
        let token = new_token();
        let mut sessions = lock(&self.sessions);
        let idle = self.policy.session_idle_timeout;
        sessions.retain(|_, last| now.duration_since(*last) <= idle);
        sessions.insert(token.clone(), now);
        Ok(token)
    }

    /// Checks `password` for the client at `ip` on the calling thread (tests and tools; the
    /// server runs [`verify_password`] on a blocking thread between the two halves).
    pub fn login(&self, ip: IpAddr, password: &str, now: Instant) -> Result<String, AuthError> {
        let pending = self.begin_login(ip, now)?;
        let ok = verify_password(&pending.stored, password);
        self.finish_login(ip, ok, now)
    }

    /// The wait imposed after the `count`-th failure in a row.
    fn delay_after(&self, count: u32) -> Duration {
        if count <= self.policy.free_attempts {
            return Duration::ZERO;
        }
        let doublings = (count - self.policy.free_attempts - 1).min(20);
        (self.policy.base_delay * 2u32.pow(doublings)).min(self.policy.max_delay)
    }

    /// Checks a token taken from the request and marks the session as used.
    pub fn check(&self, token: Option<&str>, now: Instant) -> Result<(), AuthError> {
        let token = token.ok_or(AuthError::Missing)?;
        if let Err(e) = self.refresh() {
            tracing::warn!("{e}");
            return Err(AuthError::Expired);
        }
        let mut sessions = lock(&self.sessions);
        match sessions.get_mut(token) {
            Some(last) if now.duration_since(*last) <= self.policy.session_idle_timeout => {
                *last = now;
                Ok(())
            }
            Some(_) => {
                sessions.remove(token);
                Err(AuthError::Expired)
            }
            None => Err(AuthError::Expired),
        }
    }

    /// Whether the session still stands, without marking it used: event streams ask at
    /// each keep-alive and end when it is gone.
    pub fn is_live(&self, token: &str, now: Instant) -> bool {
        if self.refresh().is_err() {
            return false;
        }
        lock(&self.sessions)
            .get(token)
            .is_some_and(|last| now.duration_since(*last) <= self.policy.session_idle_timeout)
    }

    /// Takes one of the session's event-stream slots, or refuses when all are taken.
    pub fn open_stream(&self, token: &str) -> Result<StreamSlot, AuthError> {
        let max = self.policy.max_streams_per_session;
        let mut counts = lock(&self.streams);
        let n = counts.entry(token.to_string()).or_insert(0);
        if *n >= max {
            return Err(AuthError::TooManyStreams { max });
        }
        *n += 1;
        Ok(StreamSlot {
            counts: self.streams.clone(),
            token: token.to_string(),
        })
    }

    /// Ends a session; unknown tokens are ignored.
    pub fn logout(&self, token: &str) {
        lock(&self.sessions).remove(token);
    }

    /// The `Set-Cookie` value that removes the session cookie older versions set
    /// (`Secure` when the request came over HTTPS).
    pub fn clear_cookie(&self, secure: bool) -> String {
        let secure = if secure { "; Secure" } else { "" };
        format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}")
    }
}

fn prune_global(global: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while global
        .front()
        .is_some_and(|t| now.duration_since(*t) > window)
    {
        global.pop_front();
    }
}

fn stamp_of(path: &Path) -> Result<Stamp, AuthError> {
    let meta = std::fs::metadata(path).map_err(|e| AuthError::PasswordFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(Stamp {
        ino: meta.ino(),
        len: meta.len(),
        mtime: meta.modified().ok(),
    })
}

/// Whether a password-file line is an argon2 hash (PHC string) rather than a clear password.
pub fn is_hash(line: &str) -> bool {
    line.starts_with("$argon2") && PasswordHash::new(line).is_ok()
}

/// The argon2id hash (PHC string) of `password` with a fresh random salt. Slow on purpose:
/// call it off the actor and server threads.
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    // The OS random source failing leaves no safe way to make a salt; this cannot go on.
    getrandom::fill(&mut salt).expect("the OS random source is available");
    // Encoding 16 bytes as a salt cannot fail: the length is within argon2's bounds.
    let salt = SaltString::encode_b64(&salt).expect("16 bytes make a valid salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        // Hashing with default parameters and a valid salt cannot fail.
        .expect("argon2 hashes with its default parameters")
        .to_string()
}

/// Checks `given` against a stored line: an argon2 hash, or (a hand-edited file not yet
/// rewritten) a clear password compared in constant time. Slow on purpose: call it off the
/// actor and server threads.
pub fn verify_password(stored: &str, given: &str) -> bool {
    if stored.starts_with("$argon2") {
        return PasswordHash::new(stored).is_ok_and(|hash| {
            Argon2::default()
                .verify_password(given.as_bytes(), &hash)
                .is_ok()
        });
    }
    constant_time_eq(stored.as_bytes(), given.as_bytes())
}

/// Writes the argon2 hash of `password` as the password file, through [`write_private`],
/// so a reader never sees half a file and serve notices the new inode.
pub fn write_password_file(path: &Path, password: &str) -> std::io::Result<()> {
    write_private(path, format!("{}\n", hash_password(password)).as_bytes())
}

/// Replaces `path` whole with `contents`: a temp file (0600) beside it, synced, renamed
/// over it, and the folder synced.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into())
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Replaces a clear password in the password file by its argon2 hash; answers whether it
/// did. Blocking and slow: run it on a blocking thread.
pub fn upgrade_password_file(path: &Path) -> Result<bool, AuthError> {
    let line = read_password(path)?;
    if is_hash(&line) {
        return Ok(false);
    }
    write_password_file(path, &line).map_err(|e| AuthError::PasswordFile {
        path: path.to_path_buf(),
        reason: format!("cannot rewrite with a hash: {e}"),
    })?;
    Ok(true)
}

/// Locks a table; a poisoned lock still holds a consistent map (every update is one insert
/// or remove), so the guard is taken over rather than giving up.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The first line of the password file, without its line ending.
fn read_password(path: &Path) -> Result<String, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|e| AuthError::PasswordFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(AuthError::PasswordFile {
            path: path.to_path_buf(),
            reason: "first line is empty".to_string(),
        });
    }
    Ok(line.to_string())
}

/// Compares two secrets in time independent of where they differ: both are hashed first,
/// so their lengths do not show either.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (ha, hb) = (Sha256::digest(a), Sha256::digest(b));
    ha.iter()
        .zip(hb.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// A fresh 256-bit session token from the OS random source, hex encoded.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    // The OS random source failing leaves no safe way to make a token; this cannot go on.
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    hex::encode(bytes)
}

/// The session token carried by a request: `Authorization: Bearer` only. A cookie is
/// never a credential (every app UI on the same host would receive it).
pub fn token_from_headers(authorization: Option<&str>) -> Option<&str> {
    let token = authorization?.strip_prefix("Bearer ")?.trim();
    (!token.is_empty()).then_some(token)
}

/// Refuses a request whose `Origin` names another host than the one it was sent to.
/// A request without `Origin` (curl, ctl) passes: browsers always send it on cross-site POSTs.
pub fn check_origin(origin: Option<&str>, host: Option<&str>) -> Result<(), AuthError> {
    let Some(origin) = origin else {
        return Ok(());
    };
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("")
        .trim_end_matches('/');
    match host {
        Some(host) if !origin_host.is_empty() && origin_host.eq_ignore_ascii_case(host) => Ok(()),
        _ => Err(AuthError::CrossOrigin {
            origin: origin.to_string(),
            host: host.unwrap_or("").to_string(),
        }),
    }
}

/// Whether a `Host` header names this node: any IP literal (a DNS-rebinding page can
/// only reach the node under the attacker's own name, never under an address) or a name on
/// `allowed` (lowercase, without a trailing dot). A missing Host is refused.
pub fn host_allowed(host: Option<&str>, allowed: &[String]) -> bool {
    let Some(host) = host.map(str::trim).filter(|h| !h.is_empty()) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        // `[v6]` or `[v6]:port`.
        return rest
            .split(']')
            .next()
            .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok());
    } else {
        host.rsplit_once(':').map_or(host, |(name, _port)| name)
    };
    if name.parse::<IpAddr>().is_ok() {
        return true;
    }
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    allowed.contains(&name)
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the last
/// address of its `X-Forwarded-For` (the one that proxy appended; earlier ones are the
/// client's own claims).
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    forwarded_for
        .and_then(|v| v.rsplit(',').next())
        .and_then(|last| last.trim().parse().ok())
        .unwrap_or(peer)
}

/// The default Host allow-list: `localhost`, this machine's hostname and `<hostname>.local`
/// (IP literals always pass), plus the configured names.
pub fn default_allowed_hosts(extra: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_string()];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
        if !h.is_empty() {
            names.push(format!("{h}.local"));
            names.push(h);
        }
    }
    names.extend(
        extra
            .iter()
            .map(|n| n.trim().trim_end_matches('.').to_ascii_lowercase()),
    );
    names
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn auth_with(password: &str, policy: AuthPolicy) -> (tempfile::TempDir, Auth) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, format!("{password}\nignored second line\n")).unwrap();
        (dir, Auth::new(file, policy))
    }

    #[test]
    fn constant_time_eq_cases() {
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"secret", b"secret", true),
            (b"secret", b"secreT", false),
            (b"secret", b"secret2", false),
            (b"", b"", true),
        ];
        for (a, b, want) in cases {
            assert_eq!(constant_time_eq(a, b), *want, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn only_the_authorization_header_carries_a_token() {
        let cases = [
            (Some("Bearer abc"), Some("abc")),
            (Some("Basic zzz"), None),
            (Some("Bearer "), None),
            (None, None),
        ];
        for (authz, want) in cases {
            assert_eq!(token_from_headers(authz), want, "{authz:?}");
        }
    }

    #[test]
    fn host_allow_list_cases() {
        let allowed = vec!["localhost".to_string(), "node.local".to_string()];
        let cases = [
            (Some("localhost:8080"), true),
            (Some("LOCALHOST"), true),
            (Some("node.local."), true),
            (Some("127.0.0.1:8080"), true),
            (Some("192.168.1.20"), true),
            (Some("[::1]:8443"), true),
            (Some("evil.example"), false),
            (Some("localhost.evil.example:8080"), false),
            (Some(""), false),
            (None, false),
        ];
        for (host, ok) in cases {
            assert_eq!(host_allowed(host, &allowed), ok, "{host:?}");
        }
    }

    #[test]
    fn forwarded_for_is_believed_from_a_trusted_proxy_only() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.9".parse().unwrap();
        let trusted = [proxy];
        let xff = Some("1.2.3.4, 203.0.113.7");
        assert_eq!(
            client_ip(proxy, xff, &trusted),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(other, xff, &trusted), other);
        assert_eq!(client_ip(proxy, None, &trusted), proxy);
        assert_eq!(client_ip(proxy, Some("garbage"), &trusted), proxy);
    }

    #[test]
    fn passwords_are_hashed_and_verified() {
        let hash = hash_password("hunter2");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(is_hash(&hash));
        assert!(verify_password(&hash, "hunter2"));
        assert!(!verify_password(&hash, "hunter3"));
        assert!(verify_password("clear", "clear"));
        assert!(!is_hash("clear"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "clear\n").unwrap();
        assert_eq!(upgrade_password_file(&file), Ok(true));
        let line = std::fs::read_to_string(&file).unwrap();
        assert!(is_hash(line.trim_end()), "{line}");
        assert_eq!(upgrade_password_file(&file), Ok(false));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_changed_password_file_ends_every_session() {
        let (dir, auth) = auth_with("hunter2", AuthPolicy::default());
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let now = Instant::now();
        let token = auth.login(ip, "hunter2", now).unwrap();
        assert!(auth.is_live(&token, now));
        write_password_file(&dir.path().join("password"), "new one").unwrap();
        assert!(!auth.is_live(&token, now));
        assert_eq!(auth.check(Some(&token), now), Err(AuthError::Expired));
        assert_eq!(
            auth.login(ip, "hunter2", now),
            Err(AuthError::WrongPassword)
        );
        assert!(auth.login(ip, "new one", now).is_ok());
    }

    #[test]
    fn a_session_holds_a_few_streams_at_most() {
        let (_dir, auth) = auth_with("x", AuthPolicy::default());
        let slots: Vec<_> = (0..4).map(|_| auth.open_stream("t").unwrap()).collect();
        assert_eq!(
            auth.open_stream("t").unwrap_err(),
            AuthError::TooManyStreams { max: 4 }
        );
        assert!(auth.open_stream("other").is_ok());
        drop(slots);
        assert!(auth.open_stream("t").is_ok());
    }

    #[test]
    fn the_global_budget_stops_guessers_spread_over_many_addresses() {
        let policy = AuthPolicy {
            global_budget: 5,
            ..AuthPolicy::default()
        };
        let (_dir, auth) = auth_with("hunter2", policy);
        let t0 = Instant::now();
        for i in 0..5u8 {
            let ip = IpAddr::V4(Ipv4Addr::new(10, 1, 0, i));
            assert_eq!(auth.login(ip, "nope", t0), Err(AuthError::WrongPassword));
        }
        let fresh = IpAddr::V4(Ipv4Addr::new(10, 2, 0, 1));
        assert!(matches!(
            auth.login(fresh, "hunter2", t0),
            Err(AuthError::TooManyAttempts { .. })
        ));
        assert!(auth
            .login(fresh, "hunter2", t0 + Duration::from_secs(61))
            .is_ok());
    }

    #[test]
    fn origin_cases() {
        let cases = [
            (None, Some("127.0.0.1:8080"), true),
            (Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080"), true),
            (Some("http://evil.example"), Some("127.0.0.1:8080"), false),
            (Some("null"), Some("127.0.0.1:8080"), false),
            (Some("http://127.0.0.1:8080"), None, false),
        ];
        for (origin, host, ok) in cases {
            assert_eq!(
                check_origin(origin, host).is_ok(),
                ok,
                "{origin:?} {host:?}"
            );
        }
    }

    #[test]
    fn login_opens_a_session_that_expires_when_idle() {
        let policy = AuthPolicy {
            session_idle_timeout: Duration::from_secs(60),
            ..AuthPolicy::default()
        };
        let (_dir, auth) = auth_with("hunter2", policy);
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let t0 = Instant::now();
        let token = auth.login(ip, "hunter2", t0).unwrap();
        assert_eq!(token.len(), 64);
        assert_eq!(
            auth.check(Some(&token), t0 + Duration::from_secs(30)),
            Ok(())
        );
        // Use at 30 s pushed the idle deadline to 90 s.
        assert_eq!(
            auth.check(Some(&token), t0 + Duration::from_secs(85)),
            Ok(())
        );
        assert_eq!(
            auth.check(Some(&token), t0 + Duration::from_secs(200)),
            Err(AuthError::Expired)
        );
        assert_eq!(auth.check(None, t0), Err(AuthError::Missing));
    }

    #[test]
    fn failed_logins_slow_down_one_client_only() {
        let (_dir, auth) = auth_with("hunter2", AuthPolicy::default());
        let bad = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let other = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let t0 = Instant::now();
        for _ in 0..4 {
            assert_eq!(auth.login(bad, "nope", t0), Err(AuthError::WrongPassword));
        }
        // The fourth failure set a 1 s delay; even the right password waits.
        assert_eq!(
            auth.login(bad, "hunter2", t0),
            Err(AuthError::TooManyAttempts { retry_in_secs: 1 })
        );
        assert!(auth.login(other, "hunter2", t0).is_ok());
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(auth.login(bad, "nope", t1), Err(AuthError::WrongPassword));
        assert_eq!(
            auth.login(bad, "nope", t1),
            Err(AuthError::TooManyAttempts { retry_in_secs: 2 })
        );
        assert!(auth
            .login(bad, "hunter2", t1 + Duration::from_secs(2))
            .is_ok());
        // Success forgot the failures.
        assert_eq!(
            auth.login(bad, "nope", t1 + Duration::from_secs(2)),
            Err(AuthError::WrongPassword)
        );
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let (_dir, auth) = auth_with("x", AuthPolicy::default());
        let got: Vec<u64> = (1..=14).map(|n| auth.delay_after(n).as_secs()).collect();
        assert_eq!(got, [0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    }

    #[test]
    fn empty_or_missing_password_file_is_refused() {
        let (_dir, auth) = auth_with("", AuthPolicy::default());
        assert!(matches!(
            auth.check_password_file(),
            Err(AuthError::PasswordFile { .. })
        ));
        let missing = Auth::new(PathBuf::from("/nonexistent/pw"), AuthPolicy::default());
        assert!(matches!(
            missing.login(IpAddr::V4(Ipv4Addr::LOCALHOST), "", Instant::now()),
            Err(AuthError::PasswordFile { .. })
        ));
    }

    /// An Auth in onboarding: no password file yet, the code written to data_dir.
    fn onboarding() -> (tempfile::TempDir, Auth, SetupCode) {
        let dir = tempfile::tempdir().unwrap();
        let auth = Auth::new(dir.path().join("password"), AuthPolicy::default());
        let code = setup::open(dir.path()).unwrap();
        auth.open_onboarding(&code);
        (dir, auth, code)
    }

    #[actix_web::test]
    async fn setup_works_once_and_then_login_takes_over() {
        let (dir, auth, code) = onboarding();
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert!(auth.onboarding_open());
        assert_eq!(
            auth.login(ip, "whatever", Instant::now()),
            Err(AuthError::SetupPending)
        );
        assert_eq!(
            auth.setup(ip, &code.code, "short").await,
            Err(AuthError::PasswordTooShort { min: 10 })
        );
        let token = auth.setup(ip, &code.code, "long enough pw").await.unwrap();
        assert_eq!(auth.check(Some(&token), Instant::now()), Ok(()));
        assert!(!auth.onboarding_open());
        assert!(!code.file.exists());
        assert!(is_hash(
            read_password(&dir.path().join("password"))
                .unwrap()
                .as_str()
        ));
        assert_eq!(
            auth.setup(ip, &code.code, "long enough pw").await,
            Err(AuthError::SetupDone)
        );
        assert!(auth.login(ip, "long enough pw", Instant::now()).is_ok());
    }

    #[actix_web::test]
    async fn wrong_codes_count_down_then_lock() {
        let (_dir, auth, code) = onboarding();
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        for left in (1..setup::CODE_ATTEMPTS).rev() {
            assert_eq!(
                auth.setup(ip, "2222-2222-2222", "long enough pw").await,
                Err(AuthError::WrongSetupCode { left })
            );
        }
        assert_eq!(
            auth.setup(ip, "2222-2222-2222", "long enough pw").await,
            Err(AuthError::SetupLocked)
        );
        assert_eq!(
            auth.setup(ip, &code.code, "long enough pw").await,
            Err(AuthError::SetupLocked)
        );
        assert!(!code.file.exists());
        assert!(auth.onboarding_open(), "still no password: the page stays");
    }

    #[test]
    fn a_password_file_written_meanwhile_closes_onboarding() {
        let (dir, auth, code) = onboarding();
        write_password_file(&dir.path().join("password"), "set by passwd").unwrap();
        assert!(!auth.onboarding_open());
        assert!(!code.file.exists());
        assert!(auth
            .login(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                "set by passwd",
                Instant::now()
            )
            .is_ok());
    }
}
