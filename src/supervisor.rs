//! The supervisor actor: owns the app actors, schedules reconcile ticks, routes engine
//! events to the app they concern, and answers the web layer's questions.
//!
//! The messages below are the whole interface the web layer uses: each RPC becomes one of
//! them, and the answer comes back at once (an operation is answered when it starts, not
//! when it ends).

use actix::prelude::*;
use tokio::sync::broadcast;

use crate::api::{Event, Operation, OperationKind, Package, ServerStatus};
use crate::error::AppError;

/// `package.list`: every catalog app, sorted by id.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Package>")]
pub struct ListPackages;

/// `package.get`.
#[derive(Debug, Message)]
#[rtype(result = "Result<Package, AppError>")]
pub struct GetPackage {
    pub id: String,
}

/// `package.install` / `start` / `stop` / `restart` / `upgrade` / `rollback` / `uninstall`.
/// Answers with the operation as soon as it has started (or at once `succeeded` when the
/// request is already satisfied).
#[derive(Debug, Message)]
#[rtype(result = "Result<Operation, AppError>")]
pub struct RunOperation {
    pub id: String,
    pub kind: OperationKind,
    /// Only for uninstall: also delete volumes and secrets.
    pub purge: bool,
}

/// `operation.get`.
#[derive(Debug, Message)]
#[rtype(result = "Result<Operation, AppError>")]
pub struct GetOperation {
    pub id: String,
}

/// `package.logs`: the last `tail` lines of the app's container.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<String>, AppError>")]
pub struct GetLogs {
    pub id: String,
    pub tail: usize,
}

/// `catalog.reload`: re-reads `apps_dir`; answers the number of apps.
#[derive(Debug, Message)]
#[rtype(result = "Result<usize, AppError>")]
pub struct ReloadCatalog;

/// `server.status`.
#[derive(Debug, Message)]
#[rtype(result = "ServerStatus")]
pub struct GetStatus;

/// Subscribes to package and operation changes, for `/api/events`.
#[derive(Debug, Message)]
#[rtype(result = "broadcast::Receiver<Event>")]
pub struct Subscribe;
