//! Moving a node that archipelago did not build onto archipelago (docs/migrate.md).
//!
//! `import` turns compose services and running containers into manifest drafts, with a
//! report of what could not be mapped and a plan for their data; `adopt` takes over a
//! running container that matches its app's manifest without restarting it.

pub mod adopt;
