//! The periodic health probe: armed while the container runs, re-armed when a catalog
//! change retimes the check; results go through `HealthTracker`.

use super::*;

impl AppActor {
    /// Runs the health probe every `interval` of the manifest's check, and not at all
    /// without one; a loop of another interval is replaced.
    pub(super) fn arm_probe(&mut self, ctx: &mut Context<Self>) {
        let want = self
            .app
            .manifest
            .container
            .health
            .as_ref()
            .map(|c| c.interval);
        if self.probe_loop.as_ref().map(|(every, _)| *every) == want {
            return;
        }
        if let Some((_, handle)) = self.probe_loop.take() {
            ctx.cancel_future(handle);
        }
        if let Some(every) = want {
            let handle = ctx.run_interval(every, |act, ctx| act.probe_health(ctx));
            self.probe_loop = Some((every, handle));
        }
    }

    pub(super) fn probe_health(&mut self, ctx: &mut Context<Self>) {
        if self.app.manifest.container.health.is_none() {
            return;
        }
        if self.probing || self.in_flight().is_some() || !self.running() {
            return;
        }
        // The check as the engine is to run it, secrets rendered.
        let Some(Wanted {
            spec,
            health: Some(check),
            ..
        }) = self.wanted_spec(ctx)
        else {
            return;
        };
        self.probing = true;
        let engine = self.shared.engine.clone();
        let fut = async move { health::probe(engine.as_ref(), &spec, &check).await };
        ctx.spawn(fut.into_actor(self).map(|res, act, _| {
            act.probing = false;
            let Some(check) = act.app.manifest.container.health.clone() else {
                return;
            };
            let since = act.running_since.map(|t| t.elapsed()).unwrap_or(check.start_period);
            let before = act.health.health();
            let after = act.health.record(res.is_ok(), since, &check);
            if before != after {
                tracing::info!(app = act.id(), health = ?after, reason = ?res.err(), "health changed");
            }
            act.publish();
        }));
    }
}
