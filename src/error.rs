//! The errors an RPC can answer with, and their JSON-RPC codes (contract §6), in one place.

use crate::engine::EngineError;

/// A request the supervisor refused or could not carry out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    #[error("unknown app: {id}")]
    UnknownApp { id: String },
    #[error("invalid params: {reason}")]
    InvalidParams { reason: String },
    #[error("{app}: operation {operation} ({kind}) is still running")]
    Conflict {
        app: String,
        operation: String,
        kind: String,
    },
    #[error("{app}: cannot {action} while {state}")]
    IllegalTransition {
        app: String,
        action: &'static str,
        state: &'static str,
    },
    #[error("{app}: dependency {dependency} is not running and healthy ({state})")]
    DependencyNotReady {
        app: String,
        dependency: String,
        state: String,
    },
    #[error(
        "{app}: memory budget exceeded: {reserved_bytes} bytes reserved + {needed_bytes} needed > {budget_bytes} budget"
    )]
    MemoryBudget {
        app: String,
        needed_bytes: u64,
        reserved_bytes: u64,
        budget_bytes: u64,
    },
    #[error("unknown operation: {id}")]
    UnknownOperation { id: String },
    #[error("{0}")]
    Engine(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    /// The JSON-RPC error code for this error (contract §6).
    pub fn rpc_code(&self) -> i64 {
        match self {
            AppError::UnknownApp { .. }
            | AppError::InvalidParams { .. }
            | AppError::UnknownOperation { .. } => -32602,
            AppError::Conflict { .. } | AppError::IllegalTransition { .. } => -32002,
            AppError::DependencyNotReady { .. } => -32003,
            AppError::MemoryBudget { .. } => -32004,
            AppError::Engine(_) | AppError::Internal(_) => -32000,
        }
    }
}

impl From<EngineError> for AppError {
    fn from(e: EngineError) -> Self {
        AppError::Engine(e.to_string())
    }
}

impl From<actix::MailboxError> for AppError {
    fn from(e: actix::MailboxError) -> Self {
        AppError::Internal(format!("actor mailbox: {e}"))
    }
}
