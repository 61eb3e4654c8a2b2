//! Moving a node that archipelago did not build onto archipelago (docs/migrate.md).
//!
//! `import` turns compose services and running containers into manifest drafts, with a
//! report of what could not be mapped and a plan for their data; `adopt` takes over a
//! running container that matches its app's manifest without restarting it.
//!
//! `compose` and `container` read their source into `draft::Service`s; `draft` turns
//! those into manifests, with `secret_scan` taking the secrets out and `mounts` deciding
//! whose volume each folder becomes; `plan` moves host folders; `cli` is the command and
//! its report; `interpolate` is compose's `${VAR}` handling.

/// Variables the engine gives every container it creates, archipelago's too (Podman sets
/// all four, Docker `HOSTNAME` with a TTY): not the old node's settings, so a draft leaves
/// them out and adoption does not ask the manifest for them.
pub const ENGINE_ENV: [&str; 4] = ["HOME", "HOSTNAME", "TERM", "container"];

pub mod adopt;
pub mod cli;
pub mod compose;
pub mod container;
pub mod draft;
pub mod interpolate;
pub mod mounts;
pub mod plan;
pub mod secret_scan;
