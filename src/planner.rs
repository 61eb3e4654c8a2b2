//! Reconcile as a function: from what is wanted and what the engine reports to the
//! actions that close the gap. No I/O here, so every case is a table test.
//!
//! The app actor gathers the facts (its persisted record, the container the engine
//! listed, the operation in flight, its dependencies' readiness, its crash history),
//! calls [`plan`], and carries the actions out as operations.
//!
//! Over 600 lines only with its table tests; the planner itself is under 300.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::api::{Desired, OperationKind};
use crate::engine::RunState;
use crate::store::CrashRecord;

/// What the engine reported about the app's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub state: RunState,
    pub spec_hash: Option<String>,
}

/// Whether the app's dependencies allow it to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deps {
    Ready,
    /// The first dependency that is not running and healthy, and its state.
    Blocked {
        dependency: String,
        state: String,
    },
}

/// Everything [`plan`] decides from.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub installed: bool,
    pub desired: Desired,
    /// Spec hash of the container the manifest asks for now; `None` when it cannot be
    /// computed (e.g. a dependency's secret is missing): the app is still installed, so
    /// its container is left as it is rather than recreated or removed.
    pub wanted_hash: Option<&'a str>,
    pub wanted_memory: u64,
    /// The limit last applied to the container (persisted).
    pub applied_memory: Option<u64>,
    pub observed: Option<&'a Observed>,
    pub in_flight: Option<OperationKind>,
    pub deps: &'a Deps,
    /// Time left before a crashed app may be started again.
    pub backoff: Option<Duration>,
    /// The crash loop gave up: the app stays `failed` until the owner acts.
    pub given_up: bool,
}

/// How to get a container before starting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// The container exists with the right spec.
    Keep,
    /// There is none: create it.
    New,
    /// There is one with another spec: remove it and create anew.
    Replace,
}

/// One step of reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start the app (creating its container first as said).
    Start(Create),
    /// The container runs with a stale spec: stop, remove, create and start it.
    Recreate,
    Stop,
    /// Apply a new memory limit to the running container, live.
    UpdateMemory(u64),
    /// A container labelled for an app that is not installed: remove it.
    RemoveOrphan,
    /// Wait for a crash backoff before starting again.
    Backoff(Duration),
    /// Wait until this dependency is running and healthy.
    WaitForDependency {
        dependency: String,
    },
}

/// Decides what to do. An operation in flight owns the app: nothing is planned until it
/// ends, whatever the engine reports meanwhile.
pub fn plan(f: &Facts<'_>) -> Vec<Action> {
    if f.in_flight.is_some() {
        return vec![];
    }
    if !f.installed {
        return match f.observed {
            Some(_) => vec![Action::RemoveOrphan],
            None => vec![],
        };
    }
    let Some(wanted_hash) = f.wanted_hash else {
        // Installed, but what it should run is unknown: only a stop is safe.
        return match (f.desired, f.observed) {
            (Desired::Stopped, Some(o)) if o.state.is_running() => vec![Action::Stop],
            _ => vec![],
        };
    };
    let drifted = |o: &Observed| o.spec_hash.as_deref() != Some(wanted_hash);
    match f.desired {
        Desired::NotInstalled => vec![],
        Desired::Stopped => match f.observed {
            Some(o) if o.state.is_running() => vec![Action::Stop],
            _ => vec![],
        },
        Desired::Running => {
            if f.given_up {
                return vec![];
            }
            let create = match f.observed {
                Some(o) if o.state.is_running() => {
                    if drifted(o) {
                        return vec![Action::Recreate];
                    }
                    if f.applied_memory != Some(f.wanted_memory) {
                        return vec![Action::UpdateMemory(f.wanted_memory)];
                    }
                    // Adopted as it is: zero restarts.
                    return vec![];
                }
                Some(o) if drifted(o) => Create::Replace,
                Some(_) => Create::Keep,
                None => Create::New,
            };
            if let Some(wait) = f.backoff {
                return vec![Action::Backoff(wait)];
            }
            match f.deps {
                Deps::Ready => vec![Action::Start(create)],
                Deps::Blocked { dependency, .. } => vec![Action::WaitForDependency {
                    dependency: dependency.clone(),
                }],
            }
        }
    }
}

/// Crash-restart policy: backoff that grows to a cap and resets after a stable period;
/// too many quick crashes in a row and the app is `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A crash later than this after the start resets the count.
    pub stable_after: Duration,
    /// Quick crashes in a row before giving up.
    pub max_quick_crashes: u32,
}

impl Default for CrashPolicy {
    fn default() -> Self {
        CrashPolicy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            stable_after: Duration::from_secs(120),
            max_quick_crashes: 5,
        }
    }
}

/// An app's crash history. It lives in the app actor and is persisted with the app's
/// record ([`CrashTracker::to_record`]), so a restarted supervisor keeps a `failed` app
/// failed and waits out a backoff in progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrashTracker {
    quick_crashes: u32,
    started_at: Option<Instant>,
    restart_at: Option<Instant>,
    given_up: bool,
}

impl CrashTracker {
    /// The container was started (by us) at `now`.
    pub fn started(&mut self, now: Instant) {
        self.started_at = Some(now);
        self.restart_at = None;
    }

    /// The container died unasked at `now`. Returns the backoff before the next start,
    /// or `None` when the tracker gave up.
    pub fn crashed(&mut self, now: Instant, policy: &CrashPolicy) -> Option<Duration> {
        let quick = match self.started_at {
            Some(at) => now.saturating_duration_since(at) < policy.stable_after,
            None => true,
        };
        self.quick_crashes = if quick { self.quick_crashes + 1 } else { 1 };
        self.started_at = None;
        if self.quick_crashes >= policy.max_quick_crashes {
            self.given_up = true;
            self.restart_at = None;
            return None;
        }
        // The first crash in a row restarts at once (a one-off crash costs no wait);
        // from the second on the wait doubles from `initial_backoff` up to the cap.
        let wait = match self.quick_crashes {
            1 => Duration::ZERO,
            n => policy
                .initial_backoff
                .saturating_mul(1u32 << (n - 2).min(16))
                .min(policy.max_backoff),
        };
        self.restart_at = (!wait.is_zero()).then_some(now + wait);
        Some(wait)
    }

    /// Time left before the next start is allowed.
    pub fn backoff(&self, now: Instant) -> Option<Duration> {
        self.restart_at
            .map(|at| at.saturating_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// A restart is waiting (the state a user sees is `restarting`).
    pub fn restart_pending(&self) -> bool {
        self.restart_at.is_some()
    }

    pub fn given_up(&self) -> bool {
        self.given_up
    }

    /// The owner asked for a start or stop: forget the history.
    pub fn reset(&mut self) {
        *self = CrashTracker::default();
    }

    /// Quick crashes in a row so far.
    pub fn quick_crashes(&self) -> u32 {
        self.quick_crashes
    }

    /// The history to persist, in wall-clock time (`now` and `wall` are the same
    /// instant on both clocks); `None` when there is nothing to remember. `manifest`
    /// identifies the manifest the crashes happened with.
    pub fn to_record(&self, now: Instant, wall: SystemTime, manifest: &str) -> Option<CrashRecord> {
        if self.quick_crashes == 0 && !self.given_up {
            return None;
        }
        let to_wall = |at: Instant| match at.checked_duration_since(now) {
            Some(ahead) => wall + ahead,
            None => wall
                .checked_sub(now.saturating_duration_since(at))
                .unwrap_or(SystemTime::UNIX_EPOCH),
        };
        Some(CrashRecord {
            quick_crashes: self.quick_crashes,
            given_up: self.given_up,
            started_at: self.started_at.map(to_wall),
            restart_at: self.restart_at.map(to_wall),
            manifest: Some(manifest.to_string()),
        })
    }

    /// The tracker a persisted history stands for, `now` (and `wall` on the wall
    /// clock) at a supervisor's start. A history of another manifest is forgotten. A
    /// backoff resumes with the time it had left, never more than the policy's cap (a
    /// wall clock that jumped, as on a board without a real-time clock, cannot hold an
    /// app back for longer); one that ended while the supervisor was away restarts at
    /// once.
    pub fn from_record(
        record: &CrashRecord,
        manifest: &str,
        now: Instant,
        wall: SystemTime,
        policy: &CrashPolicy,
    ) -> CrashTracker {
        if record.manifest.as_deref() != Some(manifest) {
            return CrashTracker::default();
        }
        let restart_at = record.restart_at.map(|at| {
            let left = at.duration_since(wall).unwrap_or(Duration::ZERO);
            now + left.min(policy.max_backoff)
        });
        // A start further back than the monotonic clock reaches was surely longer ago
        // than the stable period: a crash from here on starts the count over, as if
        // the start were known.
        let since = record
            .started_at
            .map(|at| wall.duration_since(at).unwrap_or(Duration::ZERO));
        let started_at = since.and_then(|d| now.checked_sub(d));
        let stale = since.is_some() && started_at.is_none();
        CrashTracker {
            quick_crashes: if stale { 0 } else { record.quick_crashes },
            started_at,
            restart_at,
            given_up: record.given_up,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "abc";

    fn running(hash: &str) -> Observed {
        Observed {
            state: RunState::Running,
            spec_hash: Some(hash.into()),
        }
    }

    fn exited(hash: &str) -> Observed {
        Observed {
            state: RunState::Exited,
            spec_hash: Some(hash.into()),
        }
    }

    fn facts<'a>(observed: Option<&'a Observed>, deps: &'a Deps) -> Facts<'a> {
        Facts {
            installed: true,
            desired: Desired::Running,
            wanted_hash: Some(HASH),
            wanted_memory: 64,
            applied_memory: Some(64),
            observed,
            in_flight: None,
            deps,
            backoff: None,
            given_up: false,
        }
    }

    #[test]
    fn plan_table() {
        let ready = Deps::Ready;
        let blocked = Deps::Blocked {
            dependency: "bitcoind".into(),
            state: "stopped".into(),
        };
        let run_ok = running(HASH);
        let run_old = running("old");
        let ex_ok = exited(HASH);
        let ex_old = exited("old");
        let created = Observed {
            state: RunState::Created,
            spec_hash: Some(HASH.into()),
        };
        let unlabelled = Observed {
            state: RunState::Running,
            spec_hash: None,
        };
        let cases: Vec<(&str, Facts, Vec<Action>)> = vec![
            (
                "adopt running container with matching hash",
                facts(Some(&run_ok), &ready),
                vec![],
            ),
            (
                "create when absent",
                facts(None, &ready),
                vec![Action::Start(Create::New)],
            ),
            (
                "start an exited container",
                facts(Some(&ex_ok), &ready),
                vec![Action::Start(Create::Keep)],
            ),
            (
                "start a created container",
                facts(Some(&created), &ready),
                vec![Action::Start(Create::Keep)],
            ),
            (
                "recreate a running container on drift",
                facts(Some(&run_old), &ready),
                vec![Action::Recreate],
            ),
            (
                "recreate a container without hash",
                facts(Some(&unlabelled), &ready),
                vec![Action::Recreate],
            ),
            (
                "replace an exited container on drift",
                facts(Some(&ex_old), &ready),
                vec![Action::Start(Create::Replace)],
            ),
            (
                "memory change applied live",
                Facts {
                    wanted_memory: 128,
                    ..facts(Some(&run_ok), &ready)
                },
                vec![Action::UpdateMemory(128)],
            ),
            (
                "memory unknown after adoption is applied",
                Facts {
                    applied_memory: None,
                    ..facts(Some(&run_ok), &ready)
                },
                vec![Action::UpdateMemory(64)],
            ),
            (
                "drift wins over memory",
                Facts {
                    wanted_memory: 128,
                    ..facts(Some(&run_old), &ready)
                },
                vec![Action::Recreate],
            ),
            (
                "wait for a dependency",
                facts(None, &blocked),
                vec![Action::WaitForDependency {
                    dependency: "bitcoind".into(),
                }],
            ),
            (
                "a running app is not stopped when a dependency goes down",
                facts(Some(&run_ok), &blocked),
                vec![],
            ),
            (
                "crash backoff",
                Facts {
                    backoff: Some(Duration::from_secs(2)),
                    ..facts(Some(&ex_ok), &ready)
                },
                vec![Action::Backoff(Duration::from_secs(2))],
            ),
            (
                "gave up after a crash loop",
                Facts {
                    given_up: true,
                    ..facts(Some(&ex_ok), &ready)
                },
                vec![],
            ),
            (
                "stop when desired stopped",
                Facts {
                    desired: Desired::Stopped,
                    ..facts(Some(&run_ok), &ready)
                },
                vec![Action::Stop],
            ),
            (
                "nothing when stopped and desired stopped",
                Facts {
                    desired: Desired::Stopped,
                    ..facts(Some(&ex_ok), &ready)
                },
                vec![],
            ),
            (
                "orphan container of an app not installed",
                Facts {
                    installed: false,
                    desired: Desired::NotInstalled,
                    ..facts(Some(&ex_ok), &ready)
                },
                vec![Action::RemoveOrphan],
            ),
            (
                "an installed app whose wanted spec is unknown keeps its container",
                Facts {
                    wanted_hash: None,
                    ..facts(Some(&run_old), &ready)
                },
                vec![],
            ),
            (
                "nor is it started without a spec",
                Facts {
                    wanted_hash: None,
                    ..facts(Some(&ex_ok), &ready)
                },
                vec![],
            ),
            (
                "but it is stopped when the owner wants it stopped",
                Facts {
                    wanted_hash: None,
                    desired: Desired::Stopped,
                    ..facts(Some(&run_ok), &ready)
                },
                vec![Action::Stop],
            ),
            (
                "not installed and no container",
                Facts {
                    installed: false,
                    desired: Desired::NotInstalled,
                    ..facts(None, &ready)
                },
                vec![],
            ),
        ];
        for (name, f, want) in cases {
            assert_eq!(plan(&f), want, "{name}");
        }
    }

    /// The bug this design exists to prevent: a stop that takes minutes while ticks keep
    /// seeing the container running must not be planned over, in any observed state.
    #[test]
    fn seed_bug_a_transition_in_flight_is_never_planned_over() {
        let ready = Deps::Ready;
        let run_ok = running(HASH);
        let run_old = running("old");
        let ex_ok = exited(HASH);
        for kind in OperationKind::ALL {
            for observed in [Some(&run_ok), Some(&run_old), Some(&ex_ok), None] {
                for desired in [Desired::Running, Desired::Stopped, Desired::NotInstalled] {
                    let f = Facts {
                        in_flight: Some(kind),
                        desired,
                        wanted_memory: 999,
                        ..facts(observed, &ready)
                    };
                    assert_eq!(plan(&f), vec![], "{kind:?} {observed:?} {desired:?}");
                }
            }
        }
    }

    #[test]
    fn crash_backoff_grows_to_a_cap_and_gives_up() {
        let policy = CrashPolicy {
            max_quick_crashes: 10,
            max_backoff: Duration::from_secs(8),
            ..CrashPolicy::default()
        };
        let mut t = CrashTracker::default();
        let now = Instant::now();
        let mut waits = vec![];
        for _ in 0..9 {
            t.started(now);
            waits.push(t.crashed(now, &policy).unwrap().as_secs());
        }
        assert_eq!(waits, vec![0, 1, 2, 4, 8, 8, 8, 8, 8]);
        t.started(now);
        assert_eq!(t.crashed(now, &policy), None);
        assert!(t.given_up());
        t.reset();
        assert!(!t.given_up());
    }

    #[test]
    fn a_crash_after_a_stable_period_resets_the_count() {
        let policy = CrashPolicy::default();
        let mut t = CrashTracker::default();
        let start = Instant::now();
        for _ in 0..4 {
            t.started(start);
            t.crashed(start, &policy).unwrap();
        }
        assert_eq!(t.quick_crashes(), 4);
        t.started(start);
        let later = start + policy.stable_after + Duration::from_secs(1);
        assert_eq!(t.crashed(later, &policy), Some(Duration::ZERO));
        assert_eq!(t.quick_crashes(), 1);
        assert!(!t.given_up());
    }

    #[test]
    fn backoff_counts_down() {
        let mut t = CrashTracker::default();
        let now = Instant::now();
        t.started(now);
        assert_eq!(
            t.crashed(now, &CrashPolicy::default()),
            Some(Duration::ZERO)
        );
        assert!(!t.restart_pending(), "the first crash restarts at once");
        t.started(now);
        t.crashed(now, &CrashPolicy::default());
        assert!(t.restart_pending());
        assert_eq!(t.backoff(now), Some(Duration::from_secs(1)));
        assert_eq!(t.backoff(now + Duration::from_secs(2)), None);
    }

    /// A history survives a supervisor restart: saved at one instant, restored at a
    /// later one (both clocks moved alike), it keeps `failed`, the backoff left and the
    /// count; another manifest, a wall clock gone far ahead, or a start too far back
    /// are handled as the comments say.
    #[test]
    fn a_crash_history_survives_a_restart() {
        let policy = CrashPolicy::default();
        let now = Instant::now();
        // Whole milliseconds, as the state file keeps them.
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut t = CrashTracker::default();
        for _ in 0..3 {
            t.started(now);
            t.crashed(now, &policy);
        }
        assert_eq!(t.backoff(now), Some(Duration::from_secs(2)));
        assert_eq!(
            CrashTracker::default().to_record(now, wall, "m"),
            None,
            "nothing to remember"
        );
        let saved = t.to_record(now, wall, "m").unwrap();
        assert_eq!(saved.quick_crashes, 3);
        assert_eq!(saved.restart_at, Some(wall + Duration::from_secs(2)));
        // The record round-trips through its JSON form.
        let json = serde_json::to_string(&saved).unwrap();
        assert!(json.contains('Z'), "timestamps are RFC 3339: {json}");
        let saved: CrashRecord = serde_json::from_str(&json).unwrap();

        // Restarted 500 ms later: 1.5 s of backoff left, still counting.
        let (now2, wall2) = (
            now + Duration::from_millis(500),
            wall + Duration::from_millis(500),
        );
        let back = CrashTracker::from_record(&saved, "m", now2, wall2, &policy);
        assert_eq!(back.backoff(now2), Some(Duration::from_millis(1500)));
        assert!(back.restart_pending());
        assert_eq!(back.quick_crashes(), 3);
        assert!(!back.given_up());

        // Another manifest: forgotten.
        assert_eq!(
            CrashTracker::from_record(&saved, "other", now2, wall2, &policy),
            CrashTracker::default()
        );
        // Restarted after the backoff ended: restarting, at once.
        let late = wall + Duration::from_secs(10);
        let back = CrashTracker::from_record(&saved, "m", now2, late, &policy);
        assert!(back.restart_pending());
        assert_eq!(back.backoff(now2), None);
        // A wall clock that jumped back a year cannot hold the app for a year.
        let back = CrashTracker::from_record(
            &saved,
            "m",
            now2,
            wall - Duration::from_secs(365 * 86400),
            &policy,
        );
        assert_eq!(back.backoff(now2), Some(policy.max_backoff));

        // Given up: stays given up, with its count.
        let mut t = CrashTracker::default();
        for _ in 0..policy.max_quick_crashes {
            t.started(now);
            t.crashed(now, &policy);
        }
        assert!(t.given_up());
        let saved = t.to_record(now, wall, "m").unwrap();
        let back = CrashTracker::from_record(&saved, "m", now2, wall2, &policy);
        assert!(back.given_up());
        assert!(!back.restart_pending());
        assert_eq!(back.quick_crashes(), policy.max_quick_crashes);

        // A start the monotonic clock cannot reach back to was long ago: the next crash
        // counts as the first.
        let mut old = saved.clone();
        old.given_up = false;
        old.started_at = Some(SystemTime::UNIX_EPOCH);
        let mut back = CrashTracker::from_record(&old, "m", now2, wall2, &policy);
        assert_eq!(back.crashed(now2, &policy), Some(Duration::ZERO));
        assert_eq!(back.quick_crashes(), 1);
    }

    /// A state file written before crash histories were kept reads as none.
    #[test]
    fn an_old_record_without_crashes_reads_as_none() {
        let json = r#"{"desired":"running","installed":{"version":"1","image":"i"}}"#;
        let r: crate::store::AppRecord = serde_json::from_str(json).unwrap();
        assert_eq!(r.crashes, None);
        let partial: CrashRecord = serde_json::from_str(r#"{"given_up":true}"#).unwrap();
        assert!(partial.given_up);
        assert_eq!(partial.restart_at, None);
    }
}
