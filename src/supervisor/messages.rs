//! The messages the web layer sends the supervisor, one per RPC or stream, and how the
//! supervisor answers each: from what it keeps in memory, at once.

use super::*;

/// `package.list`: every catalog app, sorted by id.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Package>")]
pub struct ListPackages;

/// `package.get`.
#[derive(Debug, Message)]
#[rtype(result = "Result<Package, AppError>")]
pub struct GetPackage {
    pub id: String,
}

/// `package.install` / `start` / `stop` / `restart` / `upgrade` / `rollback` / `uninstall`.
/// Answers with the operation as soon as it has started (or at once `succeeded` when the
/// request is already satisfied).
#[derive(Debug, Message)]
#[rtype(result = "Result<Operation, AppError>")]
pub struct RunOperation {
    pub id: String,
    pub kind: OperationKind,
    /// Only for uninstall: also delete volumes and secrets.
    pub purge: bool,
}

/// `package.adopt`: takes over the running container `container`, which archipelago did
/// not create, as app `id`'s (docs/migrate.md). Checked and admitted like an install.
#[derive(Debug, Message)]
#[rtype(result = "Result<Operation, AppError>")]
pub struct Adopt {
    pub id: String,
    pub container: String,
}

/// `operation.get`.
#[derive(Debug, Message)]
#[rtype(result = "Result<Operation, AppError>")]
pub struct GetOperation {
    pub id: String,
}

/// `package.logs`: the last `tail` lines of the app's container.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<String>, AppError>")]
pub struct GetLogs {
    pub id: String,
    pub tail: usize,
}

/// `GET /api/logs/{id}`: the app's last `tail` log lines, then each new one as the
/// container writes it. The stream comes from the engine; the supervisor only checks the
/// app exists and names its container.
#[derive(Message)]
#[rtype(result = "Result<LogStream, AppError>")]
pub struct FollowLogs {
    pub id: String,
    pub tail: usize,
}

/// Log lines as the engine sends them; ends with the container.
pub type LogStream =
    futures_util::stream::BoxStream<'static, Result<String, crate::engine::EngineError>>;

/// `catalog.reload`: re-reads `apps_dir`; answers the number of apps.
#[derive(Debug, Message)]
#[rtype(result = "Result<usize, AppError>")]
pub struct ReloadCatalog;

/// `server.status`.
#[derive(Debug, Message)]
#[rtype(result = "ServerStatus")]
pub struct GetStatus;

/// Subscribes to package and operation changes, for `/api/events`.
#[derive(Debug, Message)]
#[rtype(result = "broadcast::Receiver<Event>")]
pub struct Subscribe;

impl Handler<ListPackages> for Supervisor {
    type Result = MessageResult<ListPackages>;
    fn handle(&mut self, _: ListPackages, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.packages.values().cloned().collect())
    }
}

impl Handler<GetPackage> for Supervisor {
    type Result = Result<Package, AppError>;
    fn handle(&mut self, msg: GetPackage, _: &mut Context<Self>) -> Self::Result {
        self.packages
            .get(&msg.id)
            .cloned()
            .ok_or(AppError::UnknownApp { id: msg.id })
    }
}

impl Handler<RunOperation> for Supervisor {
    type Result = ResponseActFuture<Self, Result<Operation, AppError>>;
    fn handle(&mut self, msg: RunOperation, _: &mut Context<Self>) -> Self::Result {
        let params = OpParams {
            purge: msg.purge,
            ..OpParams::default()
        };
        self.operation(msg.id, msg.kind, params)
    }
}

impl Handler<Adopt> for Supervisor {
    type Result = ResponseActFuture<Self, Result<Operation, AppError>>;
    fn handle(&mut self, msg: Adopt, _: &mut Context<Self>) -> Self::Result {
        let params = OpParams {
            container: Some(msg.container),
            ..OpParams::default()
        };
        self.operation(msg.id, OperationKind::Adopt, params)
    }
}

impl Supervisor {
    /// Checks dependencies and the memory budget, then hands the operation to the app.
    fn operation(
        &mut self,
        id: String,
        kind: OperationKind,
        mut params: OpParams,
    ) -> ResponseActFuture<Self, Result<Operation, AppError>> {
        let Some(addr) = self.actors.get(&id).cloned() else {
            return Box::pin(fut::ready(Err(AppError::UnknownApp { id })));
        };
        let starts = kind.starts();
        let pkg = self.packages.get(&id).cloned();
        let already_running = pkg.as_ref().is_some_and(|p| p.state == AppState::Running);
        let mut deps_ready = true;
        if starts && !already_running {
            if let Deps::Blocked { dependency, state } = self.deps_of(&id) {
                return Box::pin(fut::ready(Err(AppError::DependencyNotReady {
                    app: id,
                    dependency,
                    state,
                })));
            }
        } else {
            deps_ready = !matches!(self.deps_of(&id), Deps::Blocked { .. });
        }
        // The memory the app would hold: the catalog's limit (an upgrade moves to it).
        let needed = AppId::try_from(id.clone())
            .ok()
            .and_then(|app| self.catalog.get(&app))
            .map(|a| a.manifest.container.memory_limit.bytes())
            .or(pkg.as_ref().map(|p| p.memory_limit_bytes))
            .unwrap_or(0);
        let wanted = pkg
            .as_ref()
            .is_some_and(|p| p.desired == crate::api::Desired::Running);
        let current = pkg.as_ref().map_or(0, |p| p.memory_limit_bytes);
        let checked = admission::needs_check(kind, wanted, current, needed);
        if checked {
            let reserved = self.reserved_memory(&id);
            if let Err(over) = admission::check(self.memory_budget, reserved, needed) {
                return Box::pin(fut::ready(Err(AppError::MemoryBudget {
                    app: id,
                    needed_bytes: over.needed,
                    reserved_bytes: over.reserved,
                    budget_bytes: over.budget,
                })));
            }
            // Held from now, before the actor has seen the command.
            self.ledger.admit(&id, needed);
        }
        if kind == OperationKind::Uninstall && params.purge {
            self.onion.purging.insert(id.clone());
        }
        params.deps_ready = deps_ready;
        let command = addr.send(Command { kind, params });
        Box::pin(async move { command.await? }.into_actor(self).map(
            move |result: Result<Operation, AppError>, act, _| {
                if checked {
                    let began = result
                        .as_ref()
                        .ok()
                        .filter(|op| op.status == crate::api::OperationStatus::Running)
                        .map(|op| op.id.as_str());
                    act.ledger.began(&id, began);
                    // The operation may have ended before this answer was read.
                    if let Some(p) = act.packages.get(&id) {
                        act.ledger.reported(p);
                    }
                }
                result
            },
        ))
    }
}

impl Handler<GetOperation> for Supervisor {
    type Result = ResponseFuture<Result<Operation, AppError>>;
    fn handle(&mut self, msg: GetOperation, _: &mut Context<Self>) -> Self::Result {
        // An operation id names its app, so no table of operations is kept.
        let addr = app::app_of_operation(&msg.id)
            .and_then(|app| self.actors.get(app))
            .cloned();
        Box::pin(async move {
            let unknown = || AppError::UnknownOperation { id: msg.id.clone() };
            let addr = addr.ok_or_else(unknown)?;
            addr.send(FindOperation(msg.id.clone()))
                .await?
                .ok_or_else(unknown)
        })
    }
}

impl Handler<GetLogs> for Supervisor {
    type Result = ResponseFuture<Result<Vec<String>, AppError>>;
    fn handle(&mut self, msg: GetLogs, _: &mut Context<Self>) -> Self::Result {
        let known = self.actors.contains_key(&msg.id);
        let engine = self.shared.engine.clone();
        Box::pin(async move {
            if !known {
                return Err(AppError::UnknownApp { id: msg.id });
            }
            match engine
                .logs(&crate::engine::container_name(&msg.id), msg.tail)
                .await
            {
                Ok(lines) => Ok(lines),
                Err(e) if crate::ops::is_not_found(&e) => Ok(vec![]),
                Err(e) => Err(e.into()),
            }
        })
    }
}

impl Handler<GetStatus> for Supervisor {
    type Result = MessageResult<GetStatus>;
    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.status())
    }
}

impl Handler<FollowLogs> for Supervisor {
    type Result = Result<LogStream, AppError>;
    fn handle(&mut self, msg: FollowLogs, _: &mut Context<Self>) -> Self::Result {
        if !self.actors.contains_key(&msg.id) {
            return Err(AppError::UnknownApp { id: msg.id });
        }
        Ok(self
            .shared
            .engine
            .follow_logs(&crate::engine::container_name(&msg.id), msg.tail))
    }
}

impl Handler<Subscribe> for Supervisor {
    type Result = MessageResult<Subscribe>;
    fn handle(&mut self, _: Subscribe, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.shared.events.subscribe())
    }
}
