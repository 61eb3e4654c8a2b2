//! archipelago: the supervisor of a self-hosted Bitcoin & Lightning node.
//!
//! See `docs/architecture.md` for the bird's-eye view and the code map.

pub mod api;
pub mod ctl;
pub mod engine;
pub mod error;
pub mod supervisor;
pub mod web;
