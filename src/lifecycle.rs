//! The state a user sees, derived from facts, and the guards that say which operation
//! may start from which state (contract §5). Pure functions: no actor, no I/O.

use crate::api::{AppState, OperationKind};
use crate::error::AppError;

/// The facts a user-visible state is derived from. A scan or event only ever changes
/// `running` (what the engine said); it never writes a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateFacts {
    /// The app has an install record.
    pub installed: bool,
    /// The engine last reported its container as running.
    pub running: bool,
    /// The operation in flight, which owns the state until it ends.
    pub in_flight: Option<OperationKind>,
    /// The crash loop gave up, or the last start failed for good.
    pub failed: bool,
    /// A crash restart is waiting out its backoff.
    pub restart_pending: bool,
}

/// Derives the state a user sees (contract §5). An operation in flight always wins.
pub fn derive_state(f: StateFacts) -> AppState {
    if let Some(kind) = f.in_flight {
        return kind.state();
    }
    if !f.installed {
        return AppState::NotInstalled;
    }
    if f.running {
        return AppState::Running;
    }
    if f.failed {
        return AppState::Failed;
    }
    if f.restart_pending {
        return AppState::Restarting;
    }
    AppState::Stopped
}

/// What a guard decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Start the operation.
    Proceed,
    /// Nothing to do: answer with an operation that is already `succeeded`.
    AlreadySatisfied,
}

fn action_name(kind: OperationKind) -> &'static str {
    match kind {
        OperationKind::Install => "install",
        OperationKind::Start => "start",
        OperationKind::Stop => "stop",
        OperationKind::Restart => "restart",
        OperationKind::Upgrade => "upgrade",
        OperationKind::Rollback => "rollback",
        OperationKind::Uninstall => "uninstall",
        OperationKind::Adopt => "adopt",
    }
}

/// Facts the guards need beyond the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GuardFacts {
    pub update_available: bool,
    pub has_previous: bool,
}

/// Decides whether `kind` may start from `state`. A transitional state belongs to its
/// operation: anything asked meanwhile is a conflict, answered by the caller with the
/// operation's id. The caller asks only while no operation is in flight, so `restarting`
/// here is a crash backoff with no operation: the owner may start (at once), stop (the
/// restart is called off), restart or uninstall from it like from `failed`.
pub fn check(
    app: &str,
    state: AppState,
    kind: OperationKind,
    facts: GuardFacts,
) -> Result<Guard, AppError> {
    use AppState as S;
    use OperationKind as K;
    let illegal = || AppError::IllegalTransition {
        app: app.to_string(),
        action: action_name(kind),
        state: state.as_str(),
    };
    if state.is_transitional() && state != S::Restarting {
        // The caller turns this into a Conflict naming the running operation.
        return Err(illegal());
    }
    match (kind, state) {
        (K::Install, S::NotInstalled) => Ok(Guard::Proceed),
        (K::Adopt, S::NotInstalled) => Ok(Guard::Proceed),
        (K::Adopt, _) => Err(illegal()),
        (K::Install, _) => Ok(Guard::AlreadySatisfied),
        (_, S::NotInstalled) if kind == K::Uninstall => Ok(Guard::AlreadySatisfied),
        (_, S::NotInstalled) => Err(illegal()),
        (K::Start, S::Running) => Ok(Guard::AlreadySatisfied),
        (K::Start, _) => Ok(Guard::Proceed),
        (K::Stop, S::Stopped) => Ok(Guard::AlreadySatisfied),
        (K::Stop, _) => Ok(Guard::Proceed),
        (K::Restart, _) => Ok(Guard::Proceed),
        (K::Upgrade, _) if facts.update_available => Ok(Guard::Proceed),
        (K::Upgrade, _) => Ok(Guard::AlreadySatisfied),
        (K::Rollback, _) if facts.has_previous => Ok(Guard::Proceed),
        (K::Rollback, _) => Err(illegal()),
        (K::Uninstall, _) => Ok(Guard::Proceed),
    }
}

/// `can_start` and friends, as the style guide names them.
pub trait Guards {
    fn can_start(self) -> bool;
    fn can_stop(self) -> bool;
    fn can_upgrade(self) -> bool;
    fn can_uninstall(self) -> bool;
}

impl Guards for AppState {
    fn can_start(self) -> bool {
        matches!(
            self,
            AppState::Stopped | AppState::Failed | AppState::Restarting
        )
    }
    fn can_stop(self) -> bool {
        matches!(
            self,
            AppState::Running | AppState::Failed | AppState::Restarting
        )
    }
    fn can_upgrade(self) -> bool {
        matches!(
            self,
            AppState::Running | AppState::Stopped | AppState::Failed | AppState::Restarting
        )
    }
    fn can_uninstall(self) -> bool {
        matches!(
            self,
            AppState::Running | AppState::Stopped | AppState::Failed | AppState::Restarting
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AppState as S;
    use OperationKind as K;

    #[test]
    fn an_operation_in_flight_owns_the_state() {
        // The seed bug: the engine still says running while a stop is in flight.
        let facts = StateFacts {
            installed: true,
            running: true,
            in_flight: Some(K::Stop),
            failed: false,
            restart_pending: false,
        };
        assert_eq!(derive_state(facts), S::Stopping);
    }

    #[test]
    fn derived_states() {
        let base = StateFacts {
            installed: true,
            running: false,
            in_flight: None,
            failed: false,
            restart_pending: false,
        };
        let cases = [
            (
                StateFacts {
                    installed: false,
                    ..base
                },
                S::NotInstalled,
            ),
            (base, S::Stopped),
            (
                StateFacts {
                    running: true,
                    ..base
                },
                S::Running,
            ),
            (
                StateFacts {
                    failed: true,
                    ..base
                },
                S::Failed,
            ),
            (
                StateFacts {
                    restart_pending: true,
                    ..base
                },
                S::Restarting,
            ),
            (
                StateFacts {
                    running: true,
                    failed: true,
                    ..base
                },
                S::Running,
            ),
            (
                StateFacts {
                    in_flight: Some(K::Install),
                    installed: false,
                    ..base
                },
                S::Installing,
            ),
            (
                StateFacts {
                    in_flight: Some(K::Upgrade),
                    ..base
                },
                S::Upgrading,
            ),
            (
                StateFacts {
                    in_flight: Some(K::Rollback),
                    ..base
                },
                S::RollingBack,
            ),
            (
                StateFacts {
                    in_flight: Some(K::Uninstall),
                    ..base
                },
                S::Uninstalling,
            ),
        ];
        for (facts, want) in cases {
            assert_eq!(derive_state(facts), want, "{facts:?}");
        }
    }

    /// One row per state: what start, stop and uninstall do from it.
    #[test]
    fn guards_per_state() {
        let f = GuardFacts::default();
        let p = Ok(Guard::Proceed);
        let sat = Ok(Guard::AlreadySatisfied);
        type Row = (S, Result<Guard, ()>, Result<Guard, ()>, Result<Guard, ()>);
        let cases: [Row; 11] = [
            (S::NotInstalled, Err(()), Err(()), sat),
            (S::Installing, Err(()), Err(()), Err(())),
            (S::Stopped, p, sat, p),
            (S::Starting, Err(()), Err(()), Err(())),
            (S::Running, sat, p, p),
            (S::Stopping, Err(()), Err(()), Err(())),
            (S::Restarting, p, p, p),
            (S::Upgrading, Err(()), Err(()), Err(())),
            (S::RollingBack, Err(()), Err(()), Err(())),
            (S::Uninstalling, Err(()), Err(()), Err(())),
            (S::Failed, p, p, p),
        ];
        for (state, start, stop, uninstall) in cases {
            let got = |k| check("lnd", state, k, f).map_err(|_| ());
            assert_eq!(got(K::Start), start, "start from {state:?}");
            assert_eq!(got(K::Stop), stop, "stop from {state:?}");
            assert_eq!(got(K::Uninstall), uninstall, "uninstall from {state:?}");
        }
    }

    #[test]
    fn illegal_transition_names_app_action_and_state() {
        let err = check("lnd", S::Stopping, K::Start, GuardFacts::default()).unwrap_err();
        assert_eq!(err.to_string(), "lnd: cannot start while stopping");
        assert_eq!(err.rpc_code(), -32002);
    }

    #[test]
    fn upgrade_and_rollback_need_something_to_move_to() {
        let none = GuardFacts::default();
        assert_eq!(
            check("a", S::Running, K::Upgrade, none),
            Ok(Guard::AlreadySatisfied)
        );
        let upd = GuardFacts {
            update_available: true,
            has_previous: false,
        };
        assert_eq!(check("a", S::Running, K::Upgrade, upd), Ok(Guard::Proceed));
        assert!(check("a", S::Running, K::Rollback, none).is_err());
        let prev = GuardFacts {
            update_available: false,
            has_previous: true,
        };
        assert_eq!(
            check("a", S::Stopped, K::Rollback, prev),
            Ok(Guard::Proceed)
        );
    }

    #[test]
    fn can_methods_match_the_guard_table() {
        for state in AppState::ALL {
            let f = GuardFacts::default();
            assert_eq!(
                state.can_start(),
                check("a", state, K::Start, f) == Ok(Guard::Proceed),
                "{state:?}"
            );
            assert_eq!(
                state.can_stop(),
                check("a", state, K::Stop, f) == Ok(Guard::Proceed),
                "{state:?}"
            );
            assert_eq!(
                state.can_uninstall(),
                check("a", state, K::Uninstall, f) == Ok(Guard::Proceed),
                "{state:?}"
            );
        }
    }
}
