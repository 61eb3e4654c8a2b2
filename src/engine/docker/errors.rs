//! The one place a bollard error becomes an [`EngineError`], naming what the call was about.

use std::time::Duration;

use bollard::errors::Error as BollardError;

use super::CLIENT_TIMEOUT_SECS;
use crate::engine::EngineError;

/// What a failing call was about, so [`map_error`] can name it and read a 404 or 409 right.
#[derive(Debug, Clone, Copy)]
pub(super) enum Target<'a> {
    /// The engine itself (version, list, events).
    Engine,
    Container(&'a str),
    Image(&'a str),
    Create {
        container: &'a str,
        image: &'a str,
    },
    Pull(&'a str),
    Build(&'a str),
    Network(&'a str),
}

impl Target<'_> {
    fn name(&self) -> String {
        match self {
            Target::Engine => "engine".to_string(),
            Target::Container(c) | Target::Create { container: c, .. } => c.to_string(),
            Target::Image(i) | Target::Pull(i) => i.to_string(),
            Target::Build(t) => t.to_string(),
            Target::Network(n) => format!("network {n}"),
        }
    }
}

/// True when an engine or registry message means "no such image". Docker says `not
/// found` or `manifest unknown`; Podman says `image not known` or `no such image`.
pub(super) fn says_image_missing(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "not found",
        "manifest unknown",
        "no such image",
        "image not known",
        "name unknown",
        "does not exist",
    ]
    .iter()
    .any(|s| m.contains(s))
}

/// The one place where bollard errors become [`EngineError`]s.
pub(super) fn map_error(host: &str, target: Target<'_>, err: BollardError) -> EngineError {
    use BollardError as B;
    let other = |reason: String| EngineError::Other {
        target: target.name(),
        reason,
    };
    match err {
        B::DockerResponseServerError {
            status_code,
            message,
        } => match (status_code, target) {
            (_, Target::Pull(image)) => {
                if status_code == 404 || says_image_missing(&message) {
                    EngineError::ImageNotFound {
                        image: image.to_string(),
                    }
                } else {
                    EngineError::PullFailed {
                        image: image.to_string(),
                        reason: message,
                    }
                }
            }
            (_, Target::Build(tag)) => EngineError::BuildFailed {
                tag: tag.to_string(),
                reason: message,
            },
            (404, Target::Container(c)) => EngineError::ContainerNotFound {
                container: c.to_string(),
            },
            (404, Target::Image(i)) => EngineError::ImageNotFound {
                image: i.to_string(),
            },
            (_, Target::Create { image, .. })
                if status_code == 404 || (status_code >= 500 && says_image_missing(&message)) =>
            {
                EngineError::ImageNotFound {
                    image: image.to_string(),
                }
            }
            (_, Target::Create { container, .. })
                if status_code == 409 || message.contains("already in use") =>
            {
                EngineError::NameConflict {
                    container: container.to_string(),
                }
            }
            // Podman answers some lookups of a missing container with a 500.
            (500, Target::Container(c)) if message.contains("no such container") => {
                EngineError::ContainerNotFound {
                    container: c.to_string(),
                }
            }
            (304, Target::Container(c)) => EngineError::NotModified {
                container: c.to_string(),
                what: "in that state".to_string(),
            },
            _ => other(format!("status {status_code}: {message}")),
        },
        B::DockerStreamError { error } => match target {
            Target::Pull(image) if says_image_missing(&error) => EngineError::ImageNotFound {
                image: image.to_string(),
            },
            Target::Pull(image) => EngineError::PullFailed {
                image: image.to_string(),
                reason: error,
            },
            Target::Build(tag) => EngineError::BuildFailed {
                tag: tag.to_string(),
                reason: error,
            },
            _ => other(error),
        },
        B::RequestTimeoutError => EngineError::Timeout {
            what: format!("engine request about {}", target.name()),
            after: Duration::from_secs(CLIENT_TIMEOUT_SECS),
        },
        e @ (B::HyperLegacyError { .. }
        | B::HyperResponseError { .. }
        | B::IOError { .. }
        | B::SocketNotFoundError(_)
        | B::UnsupportedURISchemeError { .. }) => EngineError::Unreachable {
            host: host.to_string(),
            reason: lower_first(&e.to_string()),
        },
        e => other(lower_first(&e.to_string())),
    }
}

/// Our messages are lowercase; bollard's start with a capital.
pub(super) fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
