//! archipelago: the supervisor of a self-hosted Bitcoin & Lightning node.
//!
//! See `docs/architecture.md` for the bird's-eye view and the code map.

pub mod admission;
pub mod api;
pub mod app;
pub mod backup;
pub mod catalog;
pub mod catalog_lint;
pub mod config;
pub mod ctl;
pub mod engine;
pub mod error;
pub mod health;
pub mod lifecycle;
pub mod manifest;
pub mod memory;
pub mod migrate;
pub mod netns;
pub mod onion;
pub mod ops;
pub mod owner;
pub mod planner;
pub mod secrets;
pub mod serve;
pub mod snapshot;
pub mod spec;
pub mod store;
pub mod supervisor;
pub mod usage;
pub mod web;
