//! Reconcile as a function: from what is wanted and what the engine reports to the
//! actions that close the gap. No I/O here, so every case is a table test.
//!
//! The app actor gathers the facts (its persisted record, the container the engine
//! listed, the operation in flight, its dependencies' readiness, its crash history),
//! calls [`plan`], and carries the actions out as operations.

use std::time::Duration;

use tokio::time::Instant;

use crate::api::{Desired, OperationKind};
use crate::engine::RunState;

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
    /// Spec hash of the container the manifest asks for now.
    pub wanted_hash: &'a str,
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
    let drifted = |o: &Observed| o.spec_hash.as_deref() != Some(f.wanted_hash);
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

/// An app's crash history since the supervisor started.
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
            wanted_hash: HASH,
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
        for kind in [
            OperationKind::Install,
            OperationKind::Start,
            OperationKind::Stop,
            OperationKind::Restart,
            OperationKind::Upgrade,
            OperationKind::Rollback,
            OperationKind::Uninstall,
        ] {
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
}
