//! `GET /api/logs/{id}?tail=N`: an app's log as Server-Sent Events: the last `tail` lines,
//! then each new line as the container writes it.
//!
//! Each line is an event `line` whose data is the line as a JSON string. The stream ends
//! with an event `end` when the container stops (or `error` with the reason when the
//! engine fails), when the client goes, or when the session ends (checked at each
//! keep-alive, as for `/api/events`). It counts against the session's stream limit. The
//! lines come from the engine through the supervisor ([`crate::supervisor::FollowLogs`]);
//! nothing is kept here but the stream.

use std::time::Duration;

use actix_web::web::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::time::{interval_at, Instant, MissedTickBehavior};

use crate::supervisor::{FollowLogs, LogStream};
use crate::web::events::{frame, Session};
use crate::web::rpc::ask;
use crate::web::Backend;

/// Lines sent before the new ones when the request names no `tail`.
pub const DEFAULT_TAIL: usize = 200;
/// Largest `tail` (the page keeps at most 2000 lines).
pub const MAX_TAIL: usize = 5_000;

/// What the stream does next.
enum Next {
    Lines(LogStream),
    Done,
}

/// Opens the follow stream of app `id` (already validated).
pub async fn stream(
    backend: &Backend,
    id: String,
    tail: usize,
    timeout: Duration,
    keepalive: Duration,
    session: Session,
) -> Result<impl Stream<Item = Result<Bytes, actix_web::Error>>, crate::error::AppError> {
    let lines = ask(&backend.follow_logs, FollowLogs { id, tail }, timeout).await??;
    let mut tick = interval_at(Instant::now() + keepalive, keepalive);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let start = futures_util::stream::once(async { Ok(Bytes::from_static(b"retry: 5000\n\n")) });
    let rest = futures_util::stream::unfold(
        (Next::Lines(lines), tick, session),
        |(next, mut tick, session)| async move {
            let Next::Lines(mut lines) = next else {
                return None;
            };
            tokio::select! {
                line = lines.next() => match line {
                    Some(Ok(line)) => Some((Ok(frame("line", &line)), (Next::Lines(lines), tick, session))),
                    Some(Err(e)) => Some((Ok(frame("error", &e.to_string())), (Next::Done, tick, session))),
                    None => Some((Ok(frame("end", &"the container stopped")), (Next::Done, tick, session))),
                },
                _ = tick.tick() => {
                    if !(session.alive)() {
                        tracing::debug!("session gone: log stream ended");
                        return None;
                    }
                    Some((Ok(Bytes::from_static(b": keep-alive\n\n")), (Next::Lines(lines), tick, session)))
                }
            }
        },
    );
    Ok(start.chain(rest))
}
