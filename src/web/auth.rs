//! Who may call the RPC: the password check, session tokens, the per-client login slow-down
//! and the same-origin rule for POST requests.
//!
//! It owns the session table and the failed-login table; it does not read requests itself
//! beyond the headers it is handed, and it never logs a password or a token.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Name of the session cookie set by `auth.login`.
pub const SESSION_COOKIE: &str = "archipelago_session";

/// Why a login or a request was refused; every variant maps to JSON-RPC -32001.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("unauthorized: log in with auth.login first")]
    Missing,
    #[error("unauthorized: session expired or unknown, log in again")]
    Expired,
    #[error("unauthorized: wrong password")]
    WrongPassword,
    #[error("unauthorized: too many attempts, retry in {retry_in_secs}s")]
    TooManyAttempts { retry_in_secs: u64 },
    #[error("cannot read password file {path}: {reason}")]
    PasswordFile { path: PathBuf, reason: String },
    #[error("cross-origin request refused: origin {origin} does not match host {host}")]
    CrossOrigin { origin: String, host: String },
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
}

impl Default for AuthPolicy {
    fn default() -> Self {
        AuthPolicy {
            session_idle_timeout: Duration::from_secs(24 * 3600),
            free_attempts: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            failure_window: Duration::from_secs(15 * 60),
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

/// The session table and the login limiter, shared by every worker.
#[derive(Debug)]
pub struct Auth {
    password_file: PathBuf,
    policy: AuthPolicy,
    /// Token → last use; a token absent here is not a session.
    sessions: Mutex<HashMap<String, Instant>>,
    /// Client address → its recent failed logins; a client never waits on another's entry.
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

impl Auth {
    /// A new, empty session table; the password file is read at each login.
    pub fn new(password_file: PathBuf, policy: AuthPolicy) -> Self {
        Auth {
            password_file,
            policy,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Checks that the password file can be read and holds a non-empty first line.
    pub fn check_password_file(&self) -> Result<(), AuthError> {
        read_password(&self.password_file).map(|_| ())
    }

    /// Checks `password` for the client at `ip`; on success opens a session and returns its token.
    pub fn login(&self, ip: IpAddr, password: &str, now: Instant) -> Result<String, AuthError> {
        {
            let mut failures = lock(&self.failures);
            if let Some(f) = failures.get(&ip).copied() {
                if now.duration_since(f.last) > self.policy.failure_window {
                    failures.remove(&ip);
                } else if now < f.next_allowed {
                    let wait = f.next_allowed - now;
                    return Err(AuthError::TooManyAttempts {
                        retry_in_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                    });
                }
            }
        }
        let expected = read_password(&self.password_file)?;
        if !constant_time_eq(expected.as_bytes(), password.as_bytes()) {
            let mut failures = lock(&self.failures);
            let f = failures.entry(ip).or_insert(Failures {
                count: 0,
                last: now,
                next_allowed: now,
            });
            f.count += 1;
            f.last = now;
            f.next_allowed = now + self.delay_after(f.count);
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

    /// Ends a session; unknown tokens are ignored.
    pub fn logout(&self, token: &str) {
        lock(&self.sessions).remove(token);
    }

    /// The `Set-Cookie` value that removes the session cookie.
    pub fn clear_cookie(&self) -> String {
        format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
    }

    /// The `Set-Cookie` value that carries `token`.
    pub fn cookie(&self, token: &str) -> String {
        format!(
            "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
            self.policy.session_idle_timeout.as_secs()
        )
    }
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

/// The session token carried by a request: `Authorization: Bearer` first, then the cookie.
pub fn token_from_headers<'a>(
    authorization: Option<&'a str>,
    cookie: Option<&'a str>,
) -> Option<&'a str> {
    if let Some(value) = authorization {
        if let Some(token) = value.strip_prefix("Bearer ") {
            let token = token.trim();
            if !token.is_empty() {
                return Some(token);
            }
        }
    }
    cookie?.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == SESSION_COOKIE && !value.is_empty()).then_some(value)
    })
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
    fn token_sources() {
        let cases = [
            (Some("Bearer abc"), None, Some("abc")),
            (None, Some("x=1; archipelago_session=def; y=2"), Some("def")),
            (
                Some("Basic zzz"),
                Some("archipelago_session=def"),
                Some("def"),
            ),
            (Some("Bearer "), None, None),
            (None, Some("archipelago_session="), None),
            (None, None, None),
        ];
        for (authz, cookie, want) in cases {
            assert_eq!(
                token_from_headers(authz, cookie),
                want,
                "{authz:?} {cookie:?}"
            );
        }
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
}
