//! What the app actor hears besides the owner's commands: the supervisor's ticks and
//! dependency changes, the engine's events for its container, catalog edits, signals and
//! snapshots of its package.

use super::*;

impl AppActor {
    /// The container seems to have exited (`code` if the event said): confirmed with the
    /// engine before it counts as a crash, so a late event from a stop that has already
    /// ended restarts nothing. Reconciles when the container is running after all.
    pub(super) fn confirm_exit(&mut self, ctx: &mut Context<Self>, code: Option<i64>) {
        let engine = self.shared.engine.clone();
        let name = container_name(self.id());
        let fut = async move { engine.inspect(&name).await };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            match res {
                Ok(d) if !d.state.is_running() => {
                    if let Some(o) = act.observed.as_mut() {
                        o.state = d.state;
                    }
                    let run = Some((d.id.clone(), d.started_at.clone()));
                    if act.exit_handled == run {
                        act.publish();
                        return;
                    }
                    // An exit seen while an operation owns the app is left to that
                    // operation's end, which looks again.
                    if act.in_flight().is_none() {
                        act.exit_handled = run;
                    }
                    act.on_exit(ctx, d.exit_code.or(code));
                    if act.in_flight().is_none() && act.record.desired != Desired::Running {
                        act.reconcile(ctx);
                    }
                }
                _ => {
                    act.reconcile(ctx);
                }
            }
            act.publish();
        }));
    }

    /// Re-reads the app's container from the engine and reconciles.
    pub(super) fn refresh(&mut self, ctx: &mut Context<Self>) {
        let engine = self.shared.engine.clone();
        let app = self.id().to_string();
        let fut = async move { ops::observe(engine.as_ref(), &app).await };
        ctx.spawn(fut.into_actor(self).map(|seen, act, ctx| {
            if let Some(seen) = seen {
                act.observed = seen;
            }
            act.reconcile(ctx);
        }));
    }
}

/// A reconcile tick: what the engine's list said about this app, and whether its
/// dependencies are ready. Answers how many actions were taken.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct Observe {
    pub container: Option<ContainerSummary>,
    pub deps: Deps,
    /// When the engine call that produced `container` was sent.
    pub listed_at: std::time::Instant,
}

impl Handler<Observe> for AppActor {
    type Result = usize;
    fn handle(&mut self, msg: Observe, ctx: &mut Context<Self>) -> usize {
        self.deps = msg.deps;
        if self.last_op_end.is_some_and(|end| msg.listed_at < end) {
            // Listed before the last operation ended: read the container afresh instead of
            // planning from what the operation already changed.
            self.refresh(ctx);
            return 0;
        }
        let was_running = self.running();
        self.observed = msg.container;
        if self.running() && !was_running && self.in_flight().is_none() {
            // Adopted (or started from outside): health starts over.
            self.running_since.get_or_insert_with(Instant::now);
        }
        self.reconcile(ctx)
    }
}

/// Dependencies changed readiness.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct DepsChanged(pub Deps);

impl Handler<DepsChanged> for AppActor {
    type Result = ();
    fn handle(&mut self, msg: DepsChanged, ctx: &mut Context<Self>) {
        if self.deps != msg.0 {
            self.deps = msg.0;
            // A dependency that went away and came back may have new secrets.
            self.wanted = None;
            self.reconcile(ctx);
        }
    }
}

/// An engine event about this app's container.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ContainerEvent(pub EngineEvent);

impl Handler<ContainerEvent> for AppActor {
    type Result = ();
    fn handle(&mut self, msg: ContainerEvent, ctx: &mut Context<Self>) {
        let ev = msg.0;
        match ev.action.as_str() {
            "die" | "oom" => self.confirm_exit(ctx, ev.exit_code),
            "start" | "destroy" | "create" | "rename" if self.in_flight().is_none() => {
                self.refresh(ctx);
            }
            _ => {}
        }
    }
}

/// The app's `Package` now.
#[derive(Debug, Message)]
#[rtype(result = "Package")]
pub struct Snapshot;

impl Handler<Snapshot> for AppActor {
    type Result = MessageResult<Snapshot>;
    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.package())
    }
}

/// Sends a signal to the app's running container (the tor app reloads its onion services
/// on SIGHUP). Nothing is sent while an operation runs or when nothing runs.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Signal(pub &'static str);

impl Handler<Signal> for AppActor {
    type Result = ();
    fn handle(&mut self, msg: Signal, _: &mut Context<Self>) {
        if self.in_flight().is_some() || !self.running() {
            return;
        }
        let engine = self.shared.engine.clone();
        let name = container_name(self.id());
        let app = self.id().to_string();
        actix::spawn(async move {
            if let Err(e) = engine.kill(&name, msg.0).await {
                tracing::warn!(%app, signal = msg.0, error = %e, "signal not delivered");
            }
        });
    }
}

/// The catalog changed this app's manifest.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CatalogUpdate(pub CatalogApp);

impl Handler<CatalogUpdate> for AppActor {
    type Result = ();
    fn handle(&mut self, msg: CatalogUpdate, ctx: &mut Context<Self>) {
        if msg.0.manifest != self.app.manifest {
            self.manifest_digest = manifest_digest(&msg.0.manifest);
            if self.crash != CrashTracker::default() {
                // A new manifest (a new version, another command) may fix the crash: a
                // `failed` app or one in backoff gets a fresh start.
                tracing::info!(
                    app = self.id(),
                    "manifest changed; crash history starts over"
                );
                self.crash.reset();
                self.remember_crashes(false);
            }
        }
        self.app = msg.0;
        self.in_catalog = true;
        self.wanted = None;
        self.arm_probe(ctx);
        self.reconcile(ctx);
    }
}

/// The app's folder left the catalog. An app with nothing on the node (not installed, no
/// container, no operation in flight, no journal) stops its actor and answers `true`.
/// Otherwise the actor stays, keeps the app on its last manifest, shows no update, and
/// answers `false`: an installed app is never dropped because its folder went away.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct LeaveCatalog;

impl Handler<LeaveCatalog> for AppActor {
    type Result = bool;
    fn handle(&mut self, _: LeaveCatalog, ctx: &mut Context<Self>) -> bool {
        let on_node = self.record.installed.is_some()
            || self.record.journal.is_some()
            || self.op.is_some()
            || self.observed.is_some();
        if on_node {
            tracing::warn!(
                app = self.id(),
                "app left the catalog but is on the node; keeping it on its last manifest"
            );
            self.in_catalog = false;
            self.publish();
            return false;
        }
        tracing::info!(app = self.id(), "app left the catalog; its actor stops");
        ctx.stop();
        true
    }
}
