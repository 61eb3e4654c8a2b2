//! `GET /api/events`: the Server-Sent Events stream of package and operation changes.
//!
//! On connect it sends the server status and every package, then forwards the supervisor's
//! broadcast. A client that falls behind gets the full package list again instead of the
//! events it missed. A keep-alive comment (and a fresh `status` event) goes out every
//! `keepalive`. At each keep-alive it asks whether the session still stands and ends the
//! stream when it does not (logout, expiry, a new password). It holds no state of its own
//! beyond one stream per client.

use std::collections::VecDeque;
use std::time::Duration;

use actix_web::web::Bytes;
use futures_util::Stream;
use serde::Serialize;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::{interval_at, Instant, Interval, MissedTickBehavior};

use crate::api::{Event, Package};
use crate::supervisor::{GetStatus, ListPackages};
use crate::web::rpc::ask;
use crate::web::Backend;

/// One SSE frame with an event name and a JSON payload.
pub fn frame<T: Serialize>(event: &str, data: &T) -> Bytes {
    match serde_json::to_string(data) {
        Ok(json) => Bytes::from(format!("event: {event}\ndata: {json}\n\n")),
        Err(e) => Bytes::from(format!(": cannot encode {event}: {e}\n\n")),
    }
}

/// The frame for one supervisor event.
pub fn event_frame(event: &Event) -> Bytes {
    match event {
        Event::Package(p) => frame("package", p),
        Event::Operation(o) => frame("operation", o),
        Event::Status(s) => frame("status", s),
    }
}

/// The session behind a stream.
pub struct Session {
    /// Whether the session still stands; asked at each keep-alive.
    pub alive: Box<dyn Fn() -> bool>,
    /// The session's stream slot, given back when the stream drops.
    pub _slot: crate::web::auth::StreamSlot,
}

/// State of one client's stream.
struct EventStream {
    session: Session,
    backend: Backend,
    rx: broadcast::Receiver<Event>,
    keepalive: Interval,
    timeout: Duration,
    /// Frames ready to go before anything new is read.
    pending: VecDeque<Bytes>,
}

impl EventStream {
    /// Frames of the server status and every package.
    async fn snapshot(&self) -> Vec<Bytes> {
        let mut frames = Vec::new();
        if let Ok(status) = ask(&self.backend.get_status, GetStatus, self.timeout).await {
            frames.push(frame("status", &status));
        }
        match ask(&self.backend.list_packages, ListPackages, self.timeout).await {
            Ok(packages) => frames.extend(packages.iter().map(|p: &Package| frame("package", p))),
            Err(e) => frames.push(Bytes::from(format!(": cannot list packages: {e}\n\n"))),
        }
        frames
    }
}

/// Opens the stream: subscribes first, then lists, so no change falls in between.
pub async fn stream(
    backend: Backend,
    timeout: Duration,
    keepalive: Duration,
    session: Session,
) -> Result<impl Stream<Item = Result<Bytes, actix_web::Error>>, crate::error::AppError> {
    let rx = ask(&backend.subscribe, crate::supervisor::Subscribe, timeout).await?;
    let mut tick = interval_at(Instant::now() + keepalive, keepalive);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut state = EventStream {
        session,
        backend,
        rx,
        keepalive: tick,
        timeout,
        pending: VecDeque::new(),
    };
    state
        .pending
        .push_back(Bytes::from_static(b"retry: 2000\n\n"));
    let snapshot = state.snapshot().await;
    state.pending.extend(snapshot);
    Ok(futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(frame) = s.pending.pop_front() {
                return Some((Ok(frame), s));
            }
            tokio::select! {
                received = s.rx.recv() => match received {
                    Ok(event) => return Some((Ok(event_frame(&event)), s)),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "event client lagged; sending the package list again");
                        let snapshot = s.snapshot().await;
                        s.pending.extend(snapshot);
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = s.keepalive.tick() => {
                    if !(s.session.alive)() {
                        tracing::debug!("session gone: event stream ended");
                        return None;
                    }
                    s.pending.push_back(Bytes::from_static(b": keep-alive\n\n"));
                    if let Ok(status) = ask(&s.backend.get_status, GetStatus, s.timeout).await {
                        s.pending.push_back(frame("status", &status));
                    }
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Operation, OperationKind, OperationProgress, OperationStatus};

    #[test]
    fn frames_name_the_event_and_carry_one_json_line() {
        let op = Operation {
            id: "op-1".into(),
            package: "a".into(),
            kind: OperationKind::Start,
            status: OperationStatus::Running,
            started_at: "2026-01-01T00:00:00.000Z".into(),
            finished_at: None,
            error: None,
            progress: OperationProgress {
                message: "two\nlines".into(),
                ..Default::default()
            },
        };
        let bytes = event_frame(&Event::Operation(Box::new(op)));
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with("event: operation\ndata: {"), "{text}");
        assert!(text.ends_with("}\n\n"), "{text}");
        assert_eq!(
            text.matches('\n').count(),
            3,
            "JSON newlines must be escaped: {text}"
        );
    }
}
