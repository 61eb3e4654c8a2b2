//! archipelago: the supervisor of a self-hosted Bitcoin & Lightning node.
//!
//! See `docs/architecture.md` for the bird's-eye view and the code map.

pub mod api;
pub mod engine;
pub mod error;
pub mod lifecycle;
pub mod planner;
pub mod store;
pub mod supervisor;
