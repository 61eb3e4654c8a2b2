//! `GET /api/logs/{id}?tail=N`: an app's log as Server-Sent Events: the last `tail` lines,
//! then each new line as the container writes it.
//!
//! Each line is an event `line` whose data is the line as a JSON string. The stream ends
//! with an event `end` when the container stops (or `error` with the reason when the
//! engine fails), when the client goes, or when the session ends (checked at each
//! keep-alive, as for `/api/events`). It counts against the session's stream limit. The
//! lines come from the engine through the supervisor ([`crate::supervisor::FollowLogs`]);
//! nothing is kept here but the stream.

use std::collections::HashMap;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::{Stream, StreamExt};
use tokio::time::{interval_at, Instant, MissedTickBehavior};

use super::{event_stream_response, invalid, json_error, stream_session, State};
use crate::error::AppError;
use crate::supervisor::{FollowLogs, LogStream};
use crate::web::events::{frame, Session};
use crate::web::rpc::{ask, AppId, RpcError};
use crate::web::Backend;

/// Lines sent before the new ones when the request names no `tail`.
pub const DEFAULT_TAIL: usize = 200;
/// Largest `tail` (the page keeps at most 2000 lines).
pub const MAX_TAIL: usize = 5_000;

/// `GET /api/logs/{id}?tail=N`: bearer auth and the per-session stream limit as for
/// `/api/events`; 400 for a bad id or `tail`, 404 for an app not in the catalog.
pub(super) async fn endpoint(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<State>,
) -> HttpResponse {
    let session = match stream_session(&req, &state) {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
    let id = match AppId::parse(&path.into_inner()) {
        Ok(id) => id.into_string(),
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &RpcError::from(e)),
    };
    let tail = match web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.get("tail").cloned())
    {
        None => DEFAULT_TAIL,
        Some(t) => match t.parse::<usize>() {
            Ok(n) if n <= MAX_TAIL => n,
            _ => {
                return invalid(
                    StatusCode::BAD_REQUEST,
                    format!("invalid tail {t:?}: a number up to {MAX_TAIL}"),
                )
            }
        },
    };
    match stream(
        &state.backend,
        id,
        tail,
        state.rpc_timeout,
        state.events_keepalive,
        session,
    )
    .await
    {
        Ok(stream) => event_stream_response(stream),
        Err(e @ AppError::UnknownApp { .. }) => {
            json_error(StatusCode::NOT_FOUND, &RpcError::from(e))
        }
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &RpcError::from(e)),
    }
}

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
) -> Result<impl Stream<Item = Result<Bytes, actix_web::Error>>, AppError> {
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
