//! Admission against the memory budget: may this operation run, given what every app
//! holds? Pure, like the planner: the supervisor gathers the facts and acts on the answer.
//!
//! What an app holds is the larger of two things: its limit while it is wanted running
//! (as its package last said), and what an operation admitted for it reserved. The second
//! is written into the [`Ledger`] the moment the supervisor admits the operation, before
//! the app's actor has even seen it, so two installs asked for at once can never both pass
//! a budget that fits one; it is released when the app reports that operation ended.

use std::collections::BTreeMap;

use crate::api::{OperationKind, OperationStatus, Package};

/// Reservations of operations admitted and not yet ended, by app.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ledger {
    held: BTreeMap<String, Reservation>,
}

/// One admitted operation's hold on memory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reservation {
    bytes: u64,
    /// The operation's id once the app's actor answered with it; until then any
    /// report of the app may still predate the operation.
    operation: Option<String>,
}

/// Why an operation was refused: the figures the owner is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    pub needed: u64,
    pub reserved: u64,
    pub budget: u64,
}

impl Ledger {
    /// Memory held by every app but `except`: for each app the larger of its admitted
    /// reservation and its limit while its package says it is wanted running.
    pub fn reserved<'a>(&self, packages: impl Iterator<Item = &'a Package>, except: &str) -> u64 {
        let mut per_app: BTreeMap<&str, u64> = BTreeMap::new();
        for p in packages {
            if p.desired == crate::api::Desired::Running {
                per_app.insert(&p.id, p.memory_limit_bytes);
            }
        }
        for (id, r) in &self.held {
            let slot = per_app.entry(id).or_default();
            *slot = (*slot).max(r.bytes);
        }
        per_app
            .iter()
            .filter(|(id, _)| **id != except)
            .map(|(_, bytes)| bytes)
            .sum()
    }

    /// Reserves `bytes` for an operation of `app` that was just admitted.
    pub fn admit(&mut self, app: &str, bytes: u64) {
        self.held.insert(
            app.to_string(),
            Reservation {
                bytes,
                operation: None,
            },
        );
    }

    /// The app's actor answered: the operation is `operation` (its id), or it was refused
    /// (`None`), which releases the reservation at once.
    pub fn began(&mut self, app: &str, operation: Option<&str>) {
        match operation {
            Some(op) => {
                if let Some(r) = self.held.get_mut(app) {
                    r.operation = Some(op.to_string());
                }
            }
            None => {
                self.held.remove(app);
            }
        }
    }

    /// A new package of the app: once it shows the admitted operation ended, the package's
    /// own `desired` says what the app holds, and the reservation goes.
    pub fn reported(&mut self, package: &Package) {
        let Some(r) = self.held.get(&package.id) else {
            return;
        };
        let ended = match (&r.operation, &package.operation) {
            (Some(op), Some(now)) => now.id != *op || now.status != OperationStatus::Running,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if ended {
            self.held.remove(&package.id);
        }
    }
}

/// Whether an operation that would make the app hold `needed` fits, with `reserved` held
/// by the others. Without a budget everything fits.
pub fn check(budget: Option<u64>, reserved: u64, needed: u64) -> Result<(), OverBudget> {
    match budget {
        Some(budget) if reserved.saturating_add(needed) > budget => Err(OverBudget {
            needed,
            reserved,
            budget,
        }),
        _ => Ok(()),
    }
}

/// Whether `kind` must be checked against the budget for an app that `already_wanted`
/// running holding `current` bytes while the catalog asks `needed`. Installs, starts of an
/// app not wanted running, and any operation that would raise what the app holds
/// (an upgrade or rollback to a larger limit) are checked; a restart of an app already
/// wanted running at its limit is not (it holds nothing new).
pub fn needs_check(kind: OperationKind, already_wanted: bool, current: u64, needed: u64) -> bool {
    kind.starts() && (!already_wanted || needed > current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AppState, Desired, Health, Operation};

    fn pkg(id: &str, desired: Desired, limit: u64, op: Option<(&str, OperationStatus)>) -> Package {
        Package {
            id: id.into(),
            name: id.into(),
            version: "1".into(),
            installed_version: None,
            state: AppState::Stopped,
            desired,
            health: Health::None,
            memory_limit_bytes: limit,
            image: None,
            container_id: None,
            update_available: false,
            dependencies: vec![],
            last_error: None,
            operation: op.map(|(id, status)| Operation {
                id: id.into(),
                package: String::new(),
                kind: OperationKind::Install,
                status,
                started_at: String::new(),
                finished_at: None,
                error: None,
                progress: Default::default(),
            }),
            onion_address: None,
            ui: None,
            usage: None,
            restarts: 0,
        }
    }

    #[test]
    fn two_installs_at_once_cannot_both_pass_a_budget_that_fits_one() {
        let mut ledger = Ledger::default();
        let packages = [
            pkg("a", Desired::NotInstalled, 60, None),
            pkg("b", Desired::NotInstalled, 60, None),
        ];
        let budget = Some(100);
        let r = ledger.reserved(packages.iter(), "a");
        assert_eq!(check(budget, r, 60), Ok(()));
        ledger.admit("a", 60);
        // b is asked before a's actor or package said anything.
        let r = ledger.reserved(packages.iter(), "b");
        assert_eq!(
            check(budget, r, 60),
            Err(OverBudget {
                needed: 60,
                reserved: 60,
                budget: 100
            })
        );
    }

    #[test]
    fn a_reservation_lasts_until_its_operation_is_seen_ended() {
        let mut ledger = Ledger::default();
        ledger.admit("a", 60);
        let total = |l: &Ledger, p: &Package| l.reserved(std::iter::once(p), "");
        // A report from before the operation began does not release it.
        let before = pkg("a", Desired::NotInstalled, 60, None);
        ledger.reported(&before);
        assert_eq!(total(&ledger, &before), 60);
        ledger.began("a", Some("op1"));
        let running = pkg(
            "a",
            Desired::Running,
            60,
            Some(("op1", OperationStatus::Running)),
        );
        ledger.reported(&running);
        assert_eq!(total(&ledger, &running), 60);
        // A failed install: the app wants nothing, the reservation is gone.
        let failed = pkg(
            "a",
            Desired::NotInstalled,
            60,
            Some(("op1", OperationStatus::Failed)),
        );
        ledger.reported(&failed);
        assert_eq!(total(&ledger, &failed), 0);
        // A refused command releases at once.
        ledger.admit("b", 10);
        ledger.began("b", None);
        assert_eq!(ledger, Ledger::default());
    }

    #[test]
    fn an_app_holds_the_larger_of_its_limit_and_its_reservation() {
        let mut ledger = Ledger::default();
        let running = [
            pkg("a", Desired::Running, 50, None),
            pkg("b", Desired::Running, 30, None),
        ];
        assert_eq!(ledger.reserved(running.iter(), ""), 80);
        assert_eq!(ledger.reserved(running.iter(), "a"), 30);
        ledger.admit("a", 70); // an upgrade to a larger limit
        assert_eq!(ledger.reserved(running.iter(), "b"), 70);
        ledger.admit("a", 20); // a rollback to a smaller one: the running limit still counts
        assert_eq!(ledger.reserved(running.iter(), "b"), 50);
    }

    #[test]
    fn which_operations_are_checked() {
        use OperationKind::*;
        let cases = [
            (Install, false, 0, 10, true),
            (Start, false, 10, 10, true),
            (Start, true, 10, 10, false),
            (Restart, true, 10, 10, false),
            (Upgrade, true, 10, 10, false),
            (Upgrade, true, 10, 20, true),
            (Rollback, true, 10, 20, true),
            (Stop, false, 10, 20, false),
            (Uninstall, true, 10, 20, false),
        ];
        for (kind, wanted, current, needed, want) in cases {
            assert_eq!(
                needs_check(kind, wanted, current, needed),
                want,
                "{kind:?} {wanted} {current}->{needed}"
            );
        }
        assert_eq!(check(None, u64::MAX, 1), Ok(()));
        assert_eq!(check(Some(10), 5, 5), Ok(()));
    }
}
