//! Per-client connection limits: how many connections one client address may hold open and
//! how many it may open per window. Checked when a connection is accepted (actix's
//! `on_connect`); a connection over a limit is shut down at once, before it costs a request.
//!
//! It owns the per-address table, pruned as it goes; loopback's usual addresses and the
//! trusted proxy are exempt (`ctl`, scripts, and a proxy that speaks for many clients).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The limits.
#[derive(Debug, Clone)]
pub struct ConnPolicy {
    /// Connections one address may hold open.
    pub max_open: usize,
    /// Connections one address may open per `window`.
    pub max_new: usize,
    /// The window of `max_new`.
    pub window: Duration,
}

impl Default for ConnPolicy {
    fn default() -> Self {
        ConnPolicy {
            max_open: 32,
            max_new: 100,
            window: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Default)]
struct Client {
    open: usize,
    recent: VecDeque<Instant>,
}

type Table = Arc<Mutex<HashMap<IpAddr, Client>>>;

/// What an admitted connection carries.
#[derive(Debug)]
pub enum Admission {
    /// Counted against its address until the guard drops.
    Counted(ConnGuard),
    /// From an exempt address: not counted.
    Exempt,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnRefused {
    #[error("too many open connections from this address")]
    TooManyOpen,
    #[error("too many new connections from this address")]
    TooManyNew,
}

/// The table of open and recent connections per address.
#[derive(Debug)]
pub struct ConnLimits {
    policy: ConnPolicy,
    exempt: Vec<IpAddr>,
    table: Table,
}

/// One admitted connection; the address's open count goes down when it drops (with the
/// connection's extensions).
#[derive(Debug)]
pub struct ConnGuard {
    table: Table,
    ip: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut table = lock(&self.table);
        if let Some(c) = table.get_mut(&self.ip) {
            c.open = c.open.saturating_sub(1);
        }
    }
}

impl ConnLimits {
    /// Limits with `exempt` addresses (besides 127.0.0.1 and ::1, always exempt).
    pub fn new(policy: ConnPolicy, exempt: &[IpAddr]) -> Self {
        let mut all = vec![
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ];
        all.extend_from_slice(exempt);
        ConnLimits {
            policy,
            exempt: all,
            table: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Admits a new connection from `ip`, or refuses it when its address is over a limit.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<Admission, ConnRefused> {
        if self.exempt.contains(&ip) {
            return Ok(Admission::Exempt);
        }
        let window = self.policy.window;
        let mut table = lock(&self.table);
        if table.len() > 4096 {
            table.retain(|_, c| {
                c.recent.retain(|t| now.duration_since(*t) <= window);
                c.open > 0 || !c.recent.is_empty()
            });
        }
        let c = table.entry(ip).or_default();
        while c
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            c.recent.pop_front();
        }
        if c.open >= self.policy.max_open {
            return Err(ConnRefused::TooManyOpen);
        }
        if c.recent.len() >= self.policy.max_new {
            return Err(ConnRefused::TooManyNew);
        }
        c.open += 1;
        c.recent.push_back(now);
        Ok(Admission::Counted(ConnGuard {
            table: self.table.clone(),
            ip,
        }))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update is a few field writes: a poisoned table is still consistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_and_new_connections_are_capped_per_address() {
        let limits = ConnLimits::new(
            ConnPolicy {
                max_open: 2,
                max_new: 3,
                window: Duration::from_secs(10),
            },
            &[],
        );
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        let g1 = limits.admit(a, t0).unwrap();
        let _g2 = limits.admit(a, t0).unwrap();
        assert_eq!(
            limits.admit(a, t0).unwrap_err(),
            ConnRefused::TooManyOpen,
            "two open at most"
        );
        assert!(
            limits.admit(b, t0).is_ok(),
            "another address is not held back"
        );
        drop(g1);
        let _g3 = limits.admit(a, t0).unwrap();
        drop(_g3);
        assert_eq!(
            limits.admit(a, t0).unwrap_err(),
            ConnRefused::TooManyNew,
            "three new per window at most"
        );
        assert!(limits.admit(a, t0 + Duration::from_secs(11)).is_ok());
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..10 {
            assert!(matches!(limits.admit(local, t0), Ok(Admission::Exempt)));
        }
    }
}
