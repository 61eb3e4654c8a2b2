//! Why an operation failed: one typed error carrying its cause.
//!
//! Its text is what the owner reads as the operation's `error` and the app's `last_error`,
//! so each variant prints exactly the line the operation reports; the cause stays reachable
//! through [`std::error::Error::source`] for logs and for code that matches on it.

use std::path::PathBuf;
use std::time::Duration;

use crate::engine::EngineError;
use crate::manifest::ManifestError;
use crate::onion::OnionError;
use crate::secrets::SecretError;
use crate::snapshot::SnapshotError;
use crate::spec::SpecError;
use crate::store::StoreError;

/// An operation that did not reach its end.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// An engine call failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The app's state file could not be written or removed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A secret could not be made, read or removed.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The container spec could not be made from the manifest.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The manifest does not say where the image comes from.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// An onion address the app names is not there.
    #[error(transparent)]
    Onion(#[from] OnionError),
    /// Measuring the volumes or the free space for a snapshot failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The start slots were closed (the supervisor is going away).
    #[error(transparent)]
    StartSlots(#[from] tokio::sync::AcquireError),
    /// The container asked to be adopted cannot be (not running, already ours, its
    /// name taken).
    #[error("adopt {container}: {reason}")]
    AdoptRefused { container: String, reason: String },
    /// The container asked to be adopted is not what the manifest would create; nothing
    /// was changed.
    #[error("adopt {container}: it does not match the manifest, nothing was changed: {}", list_mismatches(.mismatches))]
    AdoptMismatch {
        container: String,
        mismatches: Vec<crate::migrate::adopt::Mismatch>,
    },
    /// A file or folder could not be made or removed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// File work on the blocking pool panicked.
    #[error("file work panicked: {0}")]
    Panicked(#[source] tokio::task::JoinError),
    /// The app's volume folders could not be made.
    #[error("volume folders: {0}")]
    VolumeFolders(#[source] std::io::Error),
    /// The user the container runs as cannot be resolved or mapped to the host.
    #[error("volume owner: {reason}")]
    VolumeOwner { reason: String },
    /// The volume folders could not be given to the container's user.
    #[error("volume owner: {0}")]
    VolumeChown(#[source] std::io::Error),
    /// Copying one volume into the snapshot failed.
    #[error("snapshot of {}: {source}", volume.display())]
    SnapshotCopy {
        volume: PathBuf,
        #[source]
        source: SnapshotError,
    },
    /// Putting a snapshot back failed while copying.
    #[error("restoring snapshot {}: {source}", snapshot.display())]
    Restore {
        snapshot: PathBuf,
        #[source]
        source: SnapshotError,
    },
    /// Putting a snapshot back failed while moving it in place.
    #[error("restoring snapshot {}: {source}", snapshot.display())]
    RestoreRename {
        snapshot: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A `post_create` hook's command could not be rendered (step counts from 1).
    #[error("post_create hook {step}: {source}")]
    HookSecret {
        step: usize,
        #[source]
        source: SecretError,
    },
    /// A `post_create` hook could not be run; `command` is as written, secrets unrendered.
    #[error("post_create hook {command}: {source}")]
    Hook {
        command: String,
        #[source]
        source: EngineError,
    },
    /// A `post_create` hook ran and exited non-zero.
    #[error("post_create hook {step} ({command}) exited {code}")]
    HookExit {
        step: usize,
        command: String,
        code: i64,
    },
    /// The health check's exec probe could not be rendered.
    #[error("health check: {0}")]
    HealthSecret(#[source] SecretError),
    /// The container exited before it became healthy.
    #[error("container exited with code {code} while starting")]
    ExitedWhileStarting { code: i64 },
    /// The health gate's time ran out; `last` is the last probe's failure.
    #[error("not healthy after {}: {last}", humantime::format_duration(*after))]
    NotHealthy { after: Duration, last: String },
    /// Start asked of an app with nothing installed.
    #[error("{app} is not installed")]
    NotInstalled { app: String },
    /// Upgrade or rollback asked of an app with nothing installed.
    #[error("not installed")]
    NothingToSwap,
    /// Rollback asked with no earlier version kept.
    #[error("no previous version to roll back to")]
    NoPrevious,
    /// An upgrade or rollback failed and was undone.
    #[error("{verb} to {to} failed: {error}; back on {from}")]
    SwapFailed {
        verb: &'static str,
        to: String,
        from: String,
        #[source]
        error: Box<OpError>,
    },
    /// A supervisor restart interrupted the swap; it was undone at the next boot.
    #[error("{verb} to {to} interrupted by a supervisor restart; back on {from}")]
    SwapInterrupted {
        verb: &'static str,
        to: String,
        from: String,
    },
    /// A supervisor restart interrupted an upgrade or rollback before its swap.
    #[error("{verb} to {to} interrupted by a supervisor restart before the swap; still on {from}")]
    InterruptedBeforeSwap {
        verb: &'static str,
        to: String,
        from: String,
    },
    /// The work was done, but the record saying so could not be saved.
    #[error("{outcome}, but could not persist state: {source}")]
    NotPersisted {
        outcome: String,
        #[source]
        source: Box<OpError>,
    },
    /// The operation failed, and the record could not be saved either.
    #[error("{error}; could not persist state: {source}")]
    FailedNotPersisted {
        error: Box<OpError>,
        #[source]
        source: Box<OpError>,
    },
}

fn list_mismatches(list: &[crate::migrate::adopt::Mismatch]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn prints_the_reported_line_and_keeps_the_cause() {
        let engine = EngineError::Other {
            target: "container archipelago-app".into(),
            reason: "injected".into(),
        };
        let failed = OpError::SwapFailed {
            verb: "upgrade",
            to: "2".into(),
            from: "1".into(),
            error: Box::new(OpError::Engine(engine.clone())),
        };
        assert_eq!(
            failed.to_string(),
            format!("upgrade to 2 failed: {engine}; back on 1")
        );
        let cause = failed.source().expect("a swap failure keeps its cause");
        assert_eq!(cause.to_string(), engine.to_string());
        let cases = [
            (
                OpError::NotHealthy {
                    after: Duration::from_secs(90),
                    last: "connection refused".into(),
                },
                "not healthy after 1m 30s: connection refused",
            ),
            (
                OpError::HookExit {
                    step: 1,
                    command: "lncli create".into(),
                    code: 2,
                },
                "post_create hook 1 (lncli create) exited 2",
            ),
            (
                OpError::NotPersisted {
                    outcome: "running".into(),
                    source: Box::new(OpError::NoPrevious),
                },
                "running, but could not persist state: no previous version to roll back to",
            ),
        ];
        for (error, want) in cases {
            assert_eq!(error.to_string(), want);
        }
    }
}
