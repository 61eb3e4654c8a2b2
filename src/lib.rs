//! archipelago: the supervisor of a self-hosted Bitcoin & Lightning node.
//!
//! See `docs/architecture.md` for the bird's-eye view and the code map.

pub mod catalog;
pub mod config;
pub mod engine;
pub mod manifest;
pub mod memory;
