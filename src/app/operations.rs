//! Operations: the owner's `Command` (guards, conflict, operation begun), the long work
//! spawned for it, its progress and its end, and `FindOperation` for `operation.get`.

use super::*;

impl AppActor {
    pub(super) fn env(&self, ctx: &mut Context<Self>, op_id: &str) -> OpEnv {
        let addr = ctx.address();
        let op_id = op_id.to_string();
        OpEnv {
            engine: self.shared.engine.clone(),
            store: self.shared.store.clone(),
            app: self.app.clone(),
            default_network: self.shared.default_network.clone(),
            start_slots: self.shared.start_slots.clone(),
            progress: Arc::new(move |p: OperationProgress| {
                addr.do_send(OpProgress {
                    op_id: op_id.clone(),
                    progress: p,
                })
            }),
        }
    }

    /// The id of this actor's `n`th operation.
    pub(super) fn op_id(&self, n: u64) -> String {
        operation_id(self.id(), &self.instance, &n.to_string())
    }

    /// Counts a new operation of `kind` under `id` and holds it as the one in flight,
    /// running from now.
    pub(super) fn hold_operation(
        &mut self,
        id: String,
        kind: OperationKind,
        progress: OperationProgress,
    ) -> Operation {
        self.op_counter += 1;
        let op = Operation {
            id,
            package: self.id().to_string(),
            kind,
            status: OperationStatus::Running,
            started_at: api::now(),
            finished_at: None,
            error: None,
            progress,
        };
        self.op = Some(op.clone());
        op
    }

    /// Starts an operation: the actor marks it in flight, the work runs as a future, and
    /// [`OpFinished`] comes back when it ends.
    pub(super) fn begin(
        &mut self,
        ctx: &mut Context<Self>,
        kind: OperationKind,
        params: OpParams,
    ) -> Operation {
        let id = self.op_id(self.op_counter + 1);
        let op = self.hold_operation(id, kind, OperationProgress::default());
        let env = self.env(ctx, &op.id);
        let record = self.record.clone();
        let op_id = op.id.clone();
        let addr = ctx.address();
        tracing::info!(app = self.id(), operation = %op.id, ?kind, "operation started");
        actix::spawn(async move {
            let end = ops::run(kind, env, record, op_id.clone(), params).await;
            addr.do_send(OpFinished {
                op_id,
                end: Box::new(end),
            });
        });
        self.publish_operation(&op);
        self.publish();
        op
    }

    /// An operation that is already satisfied: answered `succeeded` at once.
    pub(super) fn satisfied(&mut self, kind: OperationKind) -> Operation {
        self.op_counter += 1;
        let now = api::now();
        let op = Operation {
            id: self.op_id(self.op_counter),
            package: self.id().to_string(),
            kind,
            status: OperationStatus::Succeeded,
            started_at: now.clone(),
            finished_at: Some(now),
            error: None,
            progress: OperationProgress {
                message: "already done".into(),
                done: None,
                total: None,
            },
        };
        self.remember(op.clone());
        op
    }

    pub(super) fn remember(&mut self, op: Operation) {
        self.finished.push_back(op);
        while self.finished.len() > KEPT_OPERATIONS {
            self.finished.pop_front();
        }
    }
}

/// Progress of the operation in flight.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct OpProgress {
    op_id: String,
    progress: OperationProgress,
}

impl Handler<OpProgress> for AppActor {
    type Result = ();
    fn handle(&mut self, msg: OpProgress, _: &mut Context<Self>) {
        if let Some(op) = self.op.as_mut().filter(|o| o.id == msg.op_id) {
            // Keep the last known totals when a message carries none.
            let mut p = msg.progress;
            if p.total.is_none() {
                p.done = p.done.or(op.progress.done);
                p.total = op.progress.total;
            }
            op.progress = p;
            let op = op.clone();
            self.publish_operation(&op);
            self.publish();
        }
    }
}

/// The operation in flight ended.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct OpFinished {
    pub(super) op_id: String,
    pub(super) end: Box<OpEnd>,
}

impl Handler<OpFinished> for AppActor {
    type Result = ();
    fn handle(&mut self, msg: OpFinished, ctx: &mut Context<Self>) {
        let Some(mut op) = self.op.take().filter(|o| o.id == msg.op_id) else {
            return;
        };
        let end = *msg.end;
        // The crash history is the actor's: the operation worked on a copy taken when
        // it began, which may be older.
        let crashes = self.record.crashes.take();
        self.record = end.record;
        let crashes_stale = self.record.crashes != crashes;
        self.record.crashes = crashes;
        // An install may have made new secrets: compute the wanted spec afresh.
        self.wanted = None;
        self.last_op_end = Some(std::time::Instant::now());
        op.finished_at = Some(api::now());
        match &end.result {
            Ok(message) => {
                op.status = OperationStatus::Succeeded;
                op.progress.message = message.clone();
                tracing::info!(app = self.id(), operation = %op.id, %message, "operation succeeded");
            }
            Err(e) => {
                op.status = OperationStatus::Failed;
                op.error = Some(e.to_string());
                tracing::warn!(app = self.id(), operation = %op.id, error = %e, "operation failed");
            }
        }
        let crash_before = self.crash.clone();
        if end.started {
            self.crash.started(Instant::now());
            self.running_since = Some(Instant::now());
            self.health = HealthTracker::started();
            if let Some(h) = end.health {
                if h == Health::Healthy {
                    if let Some(check) = &self.app.manifest.container.health {
                        self.health.record(true, std::time::Duration::ZERO, check);
                    }
                }
            }
        }
        // The container this operation started has exited already (an app that fails at
        // once): its `die` came while the operation owned the app and was not counted.
        // It counts below, through the same path as a `die`, so it counts once.
        let exited = end.started && matches!(&end.observed, Some(Some(c)) if !c.state.is_running());
        if op.status == OperationStatus::Failed
            && matches!(op.kind, OperationKind::Start | OperationKind::Restart)
            && !exited
        {
            // A start that fails counts toward the crash loop, so it is retried with
            // backoff and ends `failed` instead of looping.
            self.crash
                .crashed(Instant::now(), &self.shared.crash_policy);
        }
        if crashes_stale || self.crash != crash_before {
            self.remember_crashes(crashes_stale);
        }
        self.publish_operation(&op);
        self.remember(op);
        // The package (installed version, container facts, last error) reflects the
        // operation's end before anyone can read the operation as ended.
        match end.observed {
            Some(seen) => {
                self.observed = seen;
                if exited {
                    // Counted now, or the app would be started again and again without
                    // ever ending `failed`.
                    self.confirm_exit(ctx, None);
                } else {
                    self.reconcile(ctx);
                }
            }
            None => self.refresh(ctx),
        }
        self.publish();
    }
}

/// An operation asked for by the owner. The supervisor has checked dependencies and the
/// memory budget.
#[derive(Debug, Message)]
#[rtype(result = "Result<Operation, AppError>")]
pub struct Command {
    pub kind: OperationKind,
    pub params: OpParams,
}

impl Handler<Command> for AppActor {
    type Result = Result<Operation, AppError>;
    fn handle(&mut self, msg: Command, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(op) = &self.op {
            return Err(AppError::Conflict {
                app: self.id().to_string(),
                operation: op.id.clone(),
                kind: format!("{:?}", op.kind).to_lowercase(),
            });
        }
        let facts = GuardFacts {
            update_available: self.update_available(),
            has_previous: self.record.previous.is_some(),
        };
        let kind = msg.kind;
        match lifecycle::check(self.id(), self.state(), kind, facts)? {
            Guard::AlreadySatisfied => {
                if kind == OperationKind::Install && self.record.desired != Desired::Running {
                    self.record.desired = Desired::Running;
                    self.save();
                    self.reconcile(ctx);
                }
                return Ok(self.satisfied(kind));
            }
            Guard::Proceed => {}
        }
        // The owner's wish is persisted before the work starts; a wish that cannot be
        // stored is refused, so a restart never brings back an older one.
        let before = self.record.clone();
        if matches!(kind, OperationKind::Install | OperationKind::Uninstall) {
            // Journaled before the answer: an accepted install or uninstall is finished
            // at the next boot even when power fails before its first step.
            self.record.journal = Some(JournalEntry {
                operation: self.op_id(self.op_counter + 1),
                kind,
                step: crate::store::JournalStep::Accepted,
                started_at: api::now(),
                from: None,
                to: None,
                snapshot: None,
                purge: msg.params.purge,
            });
        }
        match kind {
            OperationKind::Start | OperationKind::Restart => {
                self.record.desired = Desired::Running;
                self.record.last_error = None;
            }
            OperationKind::Stop => {
                self.record.desired = Desired::Stopped;
            }
            _ => {}
        }
        // The owner acted: whatever the crash loop decided is forgotten, on disk too.
        self.record.crashes = None;
        if let Err(e) = self.try_save() {
            self.record = before;
            return Err(AppError::Internal(format!("{}: {e}", self.id())));
        }
        self.crash.reset();
        Ok(self.begin(ctx, kind, msg.params))
    }
}

/// Looks up one of this app's operations.
#[derive(Debug, Message)]
#[rtype(result = "Option<Operation>")]
pub struct FindOperation(pub String);

impl Handler<FindOperation> for AppActor {
    type Result = Option<Operation>;
    fn handle(&mut self, msg: FindOperation, _: &mut Context<Self>) -> Self::Result {
        self.op
            .iter()
            .chain(self.finished.iter())
            .find(|o| o.id == msg.0)
            .cloned()
    }
}
