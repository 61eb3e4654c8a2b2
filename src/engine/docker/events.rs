//! Engine events turned into ours: Docker's and Podman's names and attributes made one.

use std::collections::HashMap;

use bollard::models::EventMessage;

use crate::engine::{Adoptions, EngineEvent, LABEL_APP};

/// Reads the exit code out of an event's attributes: Docker says `exitCode`, Podman
/// `containerExitCode`.
pub(super) fn event_exit_code(attrs: &HashMap<String, String>) -> Option<i64> {
    ["exitCode", "containerExitCode"]
        .iter()
        .find_map(|k| attrs.get(*k))
        .and_then(|v| v.trim().parse().ok())
}

/// Turns an engine event into ours; `None` for events that are not about one of our
/// containers (labelled, or adopted). Podman's `died` becomes Docker's `die`; an exec's command line is dropped
/// from the action (it can hold secrets).
pub(super) fn map_event(ev: EventMessage, adopted: &Adoptions) -> Option<EngineEvent> {
    let actor = ev.actor?;
    let attrs = actor.attributes.unwrap_or_default();
    let app = match attrs.get(LABEL_APP) {
        Some(app) => app.clone(),
        None => adopted.get(actor.id.as_deref()?)?.app,
    };
    let raw = ev.action.unwrap_or_default();
    let action = if raw.starts_with("exec_") {
        raw.split(':').next().unwrap_or_default().trim().to_string()
    } else if raw == "died" {
        "die".to_string()
    } else {
        raw
    };
    let exit_code = if action == "die" {
        event_exit_code(&attrs)
    } else {
        None
    };
    Some(EngineEvent {
        container_id: actor.id.unwrap_or_default(),
        app,
        action,
        exit_code,
    })
}
