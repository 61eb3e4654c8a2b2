//! The types users see: app states, `Package`, `Operation` and server status (contract §5–§6).
//!
//! Every type here is serialized to JSON for the RPC, the event stream and the dashboard,
//! so each one is a promise to users; the inside of the supervisor uses its own types.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The state a user sees, derived from `desired`, what the engine reports and the
/// operation in flight. Never stored: see [`crate::app::AppActor::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AppState {
    NotInstalled,
    Installing,
    Stopped,
    Starting,
    Running,
    Stopping,
    Restarting,
    Upgrading,
    RollingBack,
    Uninstalling,
    Failed,
}

impl AppState {
    /// The kebab-case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            AppState::NotInstalled => "not-installed",
            AppState::Installing => "installing",
            AppState::Stopped => "stopped",
            AppState::Starting => "starting",
            AppState::Running => "running",
            AppState::Stopping => "stopping",
            AppState::Restarting => "restarting",
            AppState::Upgrading => "upgrading",
            AppState::RollingBack => "rolling-back",
            AppState::Uninstalling => "uninstalling",
            AppState::Failed => "failed",
        }
    }

    /// Every state, in the contract's order.
    pub const ALL: [AppState; 11] = [
        AppState::NotInstalled,
        AppState::Installing,
        AppState::Stopped,
        AppState::Starting,
        AppState::Running,
        AppState::Stopping,
        AppState::Restarting,
        AppState::Upgrading,
        AppState::RollingBack,
        AppState::Uninstalling,
        AppState::Failed,
    ];

    /// True for the states that belong to an operation in flight.
    pub fn is_transitional(self) -> bool {
        !matches!(
            self,
            AppState::NotInstalled | AppState::Stopped | AppState::Running | AppState::Failed
        )
    }
}

/// What the owner wants; persisted, survives restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Desired {
    Running,
    Stopped,
    NotInstalled,
}

/// Result of the app's health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    Healthy,
    Unhealthy,
    Starting,
    None,
}

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OperationKind {
    Install,
    Start,
    Stop,
    Restart,
    Upgrade,
    Rollback,
    Uninstall,
    /// Takes over a running container archipelago did not create (docs/migrate.md).
    Adopt,
}

impl OperationKind {
    /// Every kind, in the order of the enum.
    pub const ALL: [OperationKind; 8] = [
        OperationKind::Install,
        OperationKind::Start,
        OperationKind::Stop,
        OperationKind::Restart,
        OperationKind::Upgrade,
        OperationKind::Rollback,
        OperationKind::Uninstall,
        OperationKind::Adopt,
    ];

    /// True when the operation leaves the app running: it needs its dependencies ready
    /// and holds memory against the budget.
    pub fn starts(self) -> bool {
        matches!(
            self,
            OperationKind::Install
                | OperationKind::Start
                | OperationKind::Restart
                | OperationKind::Upgrade
                | OperationKind::Rollback
                | OperationKind::Adopt
        )
    }

    /// The state an app shows while an operation of this kind runs.
    pub fn state(self) -> AppState {
        match self {
            OperationKind::Install => AppState::Installing,
            OperationKind::Start => AppState::Starting,
            OperationKind::Stop => AppState::Stopping,
            OperationKind::Restart => AppState::Restarting,
            OperationKind::Upgrade => AppState::Upgrading,
            OperationKind::Rollback => AppState::RollingBack,
            OperationKind::Uninstall => AppState::Uninstalling,
            OperationKind::Adopt => AppState::Installing,
        }
    }
}

/// Where an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OperationStatus {
    Running,
    Succeeded,
    Failed,
}

/// How far an operation has got.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationProgress {
    pub message: String,
    pub done: Option<u64>,
    pub total: Option<u64>,
}

/// One operation on one app (contract §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub id: String,
    pub package: String,
    pub kind: OperationKind,
    pub status: OperationStatus,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    pub progress: OperationProgress,
}

/// One app as the API shows it (contract §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub id: String,
    pub name: String,
    pub version: String,
    pub installed_version: Option<String>,
    pub state: AppState,
    pub desired: Desired,
    pub health: Health,
    pub memory_limit_bytes: u64,
    pub image: Option<String>,
    pub container_id: Option<String>,
    pub update_available: bool,
    pub dependencies: Vec<String>,
    pub last_error: Option<String>,
    pub operation: Option<Operation>,
    /// The app's v3 onion address as its tor service wrote it; null when the app declares
    /// no onion ports, is not installed, or tor has not written it yet.
    #[serde(default)]
    pub onion_address: Option<String>,
    /// Where the app's own web page is, from the manifest's `ui`; null when it has none.
    #[serde(default)]
    pub ui: Option<UiAddress>,
    /// What the app's container uses, as the background sampler last measured it; null
    /// before the first sample and while the app has no container.
    #[serde(default)]
    pub usage: Option<Usage>,
    /// Restarts of the app's container since archipelago started: every start of it
    /// after the app had been seen running (a crash restart, a restart, a stop then a
    /// start, an upgrade's new container), whoever asked.
    #[serde(default)]
    pub restarts: u64,
}

/// An app's web page. The supervisor does not know the name the owner typed to reach the
/// node, so it gives the port and path and the dashboard puts them after the host the
/// browser used: `http://<host>:<port><path>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UiAddress {
    /// The host port the page is published on (a `ports` mapping of `ui.port`, or
    /// `ui.port` itself on the host network); null when the page is not reachable from
    /// the LAN.
    pub port: Option<u16>,
    /// The path of the page, e.g. `/`.
    pub path: String,
    /// The onion port that reaches `ui.port`, when the app declares one: the page is then
    /// at `http://<onion_address>:<onion_port><path>`.
    pub onion_port: Option<u16>,
}

/// A percentage (100 = one full CPU core), rounded to a tenth.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Percent(pub f64);

// Sampled percentages are finite (rounded from finite figures), so equality is total.
impl Eq for Percent {}

/// What an app's container uses, sampled in the background (see [`crate::usage`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Memory in use, page cache that can be dropped left out (as `docker stats` counts).
    pub memory_bytes: Option<u64>,
    /// CPU over the last sampling interval; 100 is one full core.
    pub cpu_percent: Option<Percent>,
    /// Bytes in the app's own volume folders, measured every few minutes.
    pub disk_bytes: Option<u64>,
    /// When memory and CPU were last measured (RFC 3339).
    pub sampled_at: String,
}

/// `server.status` engine part.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStatus {
    pub reachable: bool,
    pub version: Option<String>,
}

/// `server.status` reconcile part.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileStatus {
    pub at: Option<String>,
    pub took_ms: u64,
    pub actions: u64,
}

/// `server.status` memory part.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStatus {
    pub budget_bytes: Option<u64>,
    pub reserved_bytes: u64,
}

/// `server.status` disk part: the file system holding `data_dir`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStatus {
    pub free_bytes: u64,
    pub total_bytes: u64,
}

/// `server.status` (contract §6).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub version: String,
    pub engine: EngineStatus,
    pub last_reconcile: ReconcileStatus,
    pub memory: MemoryStatus,
    /// Free space where `data_dir` lives, as last measured; null before the first look.
    #[serde(default)]
    pub disk: Option<DiskStatus>,
}

/// A change pushed to `/api/events` subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Package(Box<Package>),
    Operation(Box<Operation>),
    /// The node summary changed (disk free, engine reachability, memory reserved).
    Status(Box<ServerStatus>),
}

/// RFC 3339 UTC timestamp with milliseconds, as used in every API time field.
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// The current time as [`timestamp`].
pub fn now() -> String {
    timestamp(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_serialize_as_the_contract_names() {
        for state in AppState::ALL {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
        }
    }

    #[test]
    fn every_operation_kind_has_a_transitional_state() {
        for kind in OperationKind::ALL {
            assert!(kind.state().is_transitional(), "{kind:?}");
        }
    }
}
