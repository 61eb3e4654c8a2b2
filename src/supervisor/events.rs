//! The engine's event stream as a stream of the supervisor actor: resubscribed with a
//! growing pause while it fails, each event routed to the app it concerns.

use super::*;

/// What the supervisor hears from the engine's event stream.
#[derive(Debug)]
pub(super) enum Heard {
    /// A (new) subscription began: it may have missed events, so relist at once.
    Subscribed,
    Event(crate::engine::EngineEvent),
}

/// The engine's events, resubscribed whenever the stream ends or fails: after a pause
/// that grows from 250 ms to 10 s while subscriptions bring nothing, and goes back to
/// 250 ms after an event.
pub(super) fn engine_events(
    engine: Arc<dyn ContainerRuntime>,
) -> futures_util::stream::BoxStream<'static, Heard> {
    use futures_util::stream::{self, BoxStream, StreamExt};
    type Events =
        BoxStream<'static, Result<crate::engine::EngineEvent, crate::engine::EngineError>>;
    struct Follow {
        engine: Arc<dyn ContainerRuntime>,
        current: Option<Events>,
        backoff: Duration,
        got_any: bool,
    }
    let start = Follow {
        engine,
        current: None,
        backoff: Duration::from_millis(250),
        got_any: false,
    };
    stream::unfold(start, |mut f| async move {
        loop {
            let Some(current) = f.current.as_mut() else {
                f.current = Some(f.engine.events());
                f.got_any = false;
                return Some((Heard::Subscribed, f));
            };
            match current.next().await {
                Some(Ok(ev)) => {
                    f.got_any = true;
                    f.backoff = Duration::from_millis(250);
                    return Some((Heard::Event(ev), f));
                }
                ended => {
                    if let Some(Err(e)) = ended {
                        tracing::debug!(error = %e, "engine event stream error");
                    }
                    f.current = None;
                    if !f.got_any {
                        f.backoff = (f.backoff * 2).min(Duration::from_secs(10));
                    }
                    tokio::time::sleep(f.backoff).await;
                }
            }
        }
    })
    .boxed()
}

impl StreamHandler<Heard> for Supervisor {
    fn handle(&mut self, heard: Heard, ctx: &mut Context<Self>) {
        match heard {
            Heard::Subscribed => self.tick(ctx),
            Heard::Event(ev) => {
                if ev.action == "start" && self.sampling.seen_running.contains(&ev.app) {
                    *self.sampling.restarts.entry(ev.app.clone()).or_default() += 1;
                }
                if let Some(addr) = self.actors.get(&ev.app) {
                    addr.do_send(app::ContainerEvent(ev));
                }
            }
        }
    }

    /// The stream never ends by itself; when the actor stops, it is dropped.
    fn finished(&mut self, _: &mut Context<Self>) {}
}
