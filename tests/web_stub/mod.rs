//! A small stand-in for the supervisor, for web-layer tests: an actor that answers the eight
//! messages the web layer sends, with canned apps and stateful operations that move through
//! their transitional state after a configurable delay and broadcast every change.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use actix::prelude::*;
use actix_web::dev::ServerHandle;
use archipelago::api::{
    self, AppState, Desired, EngineStatus, Event, Health, MemoryStatus, Operation, OperationKind,
    OperationProgress, OperationStatus, Package, ReconcileStatus, ServerStatus,
};
use archipelago::error::AppError;
use archipelago::supervisor::{
    Adopt, FollowLogs, GetLogs, GetOperation, GetPackage, GetStatus, ListPackages, ReloadCatalog,
    RunOperation, Subscribe,
};
use archipelago::web::{self, Backend, WebConfig};
use tokio::sync::broadcast;

/// The dashboard password the stub server uses.
pub const PASSWORD: &str = "correct horse battery staple";

const MIB: u64 = 1024 * 1024;

/// The stub supervisor.
pub struct Stub {
    packages: BTreeMap<String, Package>,
    operations: BTreeMap<String, Operation>,
    tx: broadcast::Sender<Event>,
    next_op: u64,
    /// How long an operation stays in its transitional state.
    pub op_delay: Duration,
    pub engine_reachable: bool,
}

fn package(id: &str, name: &str, state: AppState, memory: u64) -> Package {
    let installed = state != AppState::NotInstalled;
    Package {
        id: id.to_string(),
        name: name.to_string(),
        version: "1.0.0".to_string(),
        installed_version: installed.then(|| "1.0.0".to_string()),
        state,
        desired: match state {
            AppState::Running => Desired::Running,
            AppState::NotInstalled => Desired::NotInstalled,
            _ => Desired::Stopped,
        },
        health: if state == AppState::Running {
            Health::Healthy
        } else {
            Health::None
        },
        memory_limit_bytes: memory,
        image: installed.then(|| format!("example/{id}:1.0.0")),
        container_id: installed.then(|| format!("{id}0123456789")),
        update_available: false,
        dependencies: Vec::new(),
        last_error: None,
        operation: None,
        onion_address: None,
        ui: None,
        usage: None,
        restarts: 0,
    }
}

impl Stub {
    /// Apps: `a` stopped (512 MiB), `b` running with an update (1.5 GiB), `c` stopped and
    /// depending on `a`, `big` not installed and over the memory budget, `slow` whose
    /// `package.get` never answers in time.
    pub fn new(op_delay: Duration) -> Self {
        let mut b = package("b", "Bravo", AppState::Running, 1536 * MIB);
        b.update_available = true;
        b.version = "1.1.0".to_string();
        let mut c = package("c", "Charlie", AppState::Stopped, 256 * MIB);
        c.dependencies = vec!["a".to_string()];
        let mut packages = BTreeMap::new();
        for p in [
            package("a", "Alpha", AppState::Stopped, 512 * MIB),
            b,
            c,
            package("big", "Big", AppState::NotInstalled, 64 * 1024 * MIB),
            package("slow", "Slow", AppState::Stopped, 64 * MIB),
        ] {
            packages.insert(p.id.clone(), p);
        }
        let (tx, _) = broadcast::channel(16);
        Stub {
            packages,
            operations: BTreeMap::new(),
            tx,
            next_op: 1,
            op_delay,
            engine_reachable: true,
        }
    }

    fn publish(&self, id: &str) {
        if let Some(p) = self.packages.get(id) {
            let _ = self.tx.send(Event::Package(Box::new(p.clone())));
            if let Some(op) = &p.operation {
                let _ = self.tx.send(Event::Operation(Box::new(op.clone())));
            }
        }
    }

    fn new_operation(
        &mut self,
        id: &str,
        kind: OperationKind,
        status: OperationStatus,
    ) -> Operation {
        let op = Operation {
            id: format!("op-{}", self.next_op),
            package: id.to_string(),
            kind,
            status,
            started_at: api::now(),
            finished_at: (status != OperationStatus::Running).then(api::now),
            error: None,
            progress: OperationProgress {
                message: format!("{kind:?} requested").to_lowercase(),
                done: Some(0),
                total: Some(2),
            },
        };
        self.next_op += 1;
        self.operations.insert(op.id.clone(), op.clone());
        op
    }

    fn run(&mut self, msg: RunOperation, ctx: &mut Context<Self>) -> Result<Operation, AppError> {
        let p = self
            .packages
            .get(&msg.id)
            .ok_or_else(|| AppError::UnknownApp { id: msg.id.clone() })?;
        if let Some(op) = &p.operation {
            return Err(AppError::Conflict {
                app: msg.id.clone(),
                operation: op.id.clone(),
                kind: format!("{:?}", op.kind).to_lowercase(),
            });
        }
        let state = p.state;
        let satisfied = matches!(
            (msg.kind, state),
            (OperationKind::Start, AppState::Running)
                | (OperationKind::Stop, AppState::Stopped)
                | (
                    OperationKind::Install,
                    AppState::Running | AppState::Stopped
                )
        );
        if satisfied {
            return Ok(self.new_operation(&msg.id, msg.kind, OperationStatus::Succeeded));
        }
        let illegal = match msg.kind {
            OperationKind::Install => state != AppState::NotInstalled,
            OperationKind::Rollback | OperationKind::Upgrade | OperationKind::Uninstall => {
                state == AppState::NotInstalled
            }
            _ => state == AppState::NotInstalled,
        };
        if illegal {
            return Err(AppError::IllegalTransition {
                app: msg.id.clone(),
                action: action_name(msg.kind),
                state: state.as_str(),
            });
        }
        if matches!(msg.kind, OperationKind::Start | OperationKind::Restart) {
            for dep in &p.dependencies {
                let dep_state = self.packages.get(dep).map(|d| d.state);
                if dep_state != Some(AppState::Running) {
                    return Err(AppError::DependencyNotReady {
                        app: msg.id.clone(),
                        dependency: dep.clone(),
                        state: dep_state
                            .map_or("not-installed", AppState::as_str)
                            .to_string(),
                    });
                }
            }
        }
        if msg.kind == OperationKind::Install && p.memory_limit_bytes > 8 * 1024 * MIB {
            return Err(AppError::MemoryBudget {
                app: msg.id.clone(),
                needed_bytes: p.memory_limit_bytes,
                reserved_bytes: 2048 * MIB,
                budget_bytes: 8 * 1024 * MIB,
            });
        }
        let op = self.new_operation(&msg.id, msg.kind, OperationStatus::Running);
        let id = msg.id.clone();
        let p = self.packages.get_mut(&id).expect("checked above");
        p.state = msg.kind.state();
        p.operation = Some(op.clone());
        self.publish(&id);
        let (kind, op_id) = (msg.kind, op.id.clone());
        ctx.run_later(self.op_delay, move |act, _| act.finish(&id, &op_id, kind));
        Ok(op)
    }

    fn finish(&mut self, id: &str, op_id: &str, kind: OperationKind) {
        let Some(p) = self.packages.get_mut(id) else {
            return;
        };
        p.state = match kind {
            OperationKind::Stop => AppState::Stopped,
            OperationKind::Uninstall => AppState::NotInstalled,
            _ => AppState::Running,
        };
        p.health = if p.state == AppState::Running {
            Health::Healthy
        } else {
            Health::None
        };
        if kind == OperationKind::Upgrade {
            p.installed_version = Some(p.version.clone());
            p.update_available = false;
        }
        p.operation = None;
        if let Some(op) = self.operations.get_mut(op_id) {
            op.status = OperationStatus::Succeeded;
            op.finished_at = Some(api::now());
            op.progress.done = Some(2);
            let _ = self.tx.send(Event::Operation(Box::new(op.clone())));
        }
        let p = self.packages[id].clone();
        let _ = self.tx.send(Event::Package(Box::new(p)));
    }
}

fn action_name(kind: OperationKind) -> &'static str {
    match kind {
        OperationKind::Install => "install",
        OperationKind::Start => "start",
        OperationKind::Stop => "stop",
        OperationKind::Restart => "restart",
        OperationKind::Upgrade => "upgrade",
        OperationKind::Rollback => "rollback",
        OperationKind::Uninstall => "uninstall",
        OperationKind::Adopt => "adopt",
    }
}

impl Actor for Stub {
    type Context = Context<Self>;
}

impl Handler<ListPackages> for Stub {
    type Result = MessageResult<ListPackages>;
    fn handle(&mut self, _: ListPackages, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.packages.values().cloned().collect())
    }
}

impl Handler<GetPackage> for Stub {
    type Result = ResponseFuture<Result<Package, AppError>>;
    fn handle(&mut self, msg: GetPackage, _: &mut Context<Self>) -> Self::Result {
        let found = self.packages.get(&msg.id).cloned();
        Box::pin(async move {
            if msg.id == "slow" {
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            found.ok_or(AppError::UnknownApp { id: msg.id })
        })
    }
}

impl Handler<RunOperation> for Stub {
    type Result = Result<Operation, AppError>;
    fn handle(&mut self, msg: RunOperation, ctx: &mut Context<Self>) -> Self::Result {
        self.run(msg, ctx)
    }
}

impl Handler<Adopt> for Stub {
    type Result = Result<Operation, AppError>;
    fn handle(&mut self, msg: Adopt, ctx: &mut Context<Self>) -> Self::Result {
        let run = RunOperation {
            id: msg.id,
            kind: OperationKind::Adopt,
            purge: false,
        };
        self.run(run, ctx)
    }
}

impl Handler<GetOperation> for Stub {
    type Result = Result<Operation, AppError>;
    fn handle(&mut self, msg: GetOperation, _: &mut Context<Self>) -> Self::Result {
        self.operations
            .get(&msg.id)
            .cloned()
            .ok_or(AppError::UnknownOperation { id: msg.id })
    }
}

impl Handler<GetLogs> for Stub {
    type Result = Result<Vec<String>, AppError>;
    fn handle(&mut self, msg: GetLogs, _: &mut Context<Self>) -> Self::Result {
        let p = self
            .packages
            .get(&msg.id)
            .ok_or_else(|| AppError::UnknownApp { id: msg.id.clone() })?;
        if p.id == "c" {
            return Err(AppError::Engine(
                "engine unreachable: connection refused".into(),
            ));
        }
        Ok((1..=msg.tail.min(3))
            .map(|i| format!("{} line {i}", p.id))
            .collect())
    }
}

impl Handler<ReloadCatalog> for Stub {
    type Result = Result<usize, AppError>;
    fn handle(&mut self, _: ReloadCatalog, _: &mut Context<Self>) -> Self::Result {
        Ok(self.packages.len())
    }
}

impl Handler<GetStatus> for Stub {
    type Result = MessageResult<GetStatus>;
    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(ServerStatus {
            version: env!("CARGO_PKG_VERSION").to_string(),
            engine: EngineStatus {
                reachable: self.engine_reachable,
                version: self.engine_reachable.then(|| "27.0".to_string()),
            },
            last_reconcile: ReconcileStatus {
                at: Some(api::now()),
                took_ms: 42,
                actions: 1,
            },
            memory: MemoryStatus {
                budget_bytes: Some(8 * 1024 * MIB),
                reserved_bytes: 2048 * MIB,
            },
            disk: None,
        })
    }
}

/// The stub has no engine: a followed log is one line and its end.
impl Handler<FollowLogs> for Stub {
    type Result = Result<archipelago::supervisor::LogStream, AppError>;
    fn handle(&mut self, msg: FollowLogs, _: &mut Context<Self>) -> Self::Result {
        use futures_util::StreamExt;
        let p = self
            .packages
            .get(&msg.id)
            .ok_or_else(|| AppError::UnknownApp { id: msg.id.clone() })?;
        Ok(futures_util::stream::iter([Ok(format!("{} line 1", p.id))]).boxed())
    }
}

impl Handler<Subscribe> for Stub {
    type Result = MessageResult<Subscribe>;
    fn handle(&mut self, _: Subscribe, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.tx.subscribe())
    }
}

/// Test-only: broadcasts `count` copies of `event` at once.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Push {
    pub event: Event,
    pub count: usize,
}

impl Handler<Push> for Stub {
    type Result = ();
    fn handle(&mut self, msg: Push, _: &mut Context<Self>) {
        for _ in 0..msg.count {
            let _ = self.tx.send(msg.event.clone());
        }
    }
}

/// Test-only: sets whether `server.status` reports the engine reachable.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetEngineReachable(pub bool);

impl Handler<SetEngineReachable> for Stub {
    type Result = ();
    fn handle(&mut self, msg: SetEngineReachable, _: &mut Context<Self>) {
        self.engine_reachable = msg.0;
    }
}

/// A running web server in front of a stub.
pub struct Harness {
    pub base: String,
    pub addr: SocketAddr,
    /// The HTTPS listener, when the config asked for one.
    pub https: Option<SocketAddr>,
    pub stub: Addr<Stub>,
    pub handle: ServerHandle,
    /// The dashboard password file (clear until something rewrites it).
    pub password_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Starts a stub and a web server on 127.0.0.1:0; `tweak` adjusts the config.
    pub fn start(op_delay: Duration, tweak: impl FnOnce(&mut WebConfig)) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let password_file: PathBuf = dir.path().join("password");
        std::fs::write(&password_file, format!("{PASSWORD}\n")).expect("write password");
        let mut cfg = WebConfig::new(
            "127.0.0.1:0".parse().expect("literal"),
            password_file.clone(),
        );
        cfg.workers = 1;
        tweak(&mut cfg);
        let stub = Stub::new(op_delay).start();
        let (srv, bound) = web::server_bound(cfg, Backend::from_addr(&stub)).expect("server binds");
        let addr = bound.http;
        let handle = srv.handle();
        actix_web::rt::spawn(srv);
        Harness {
            base: format!("http://{addr}"),
            addr,
            https: bound.https,
            stub,
            handle,
            password_file,
            _dir: dir,
        }
    }
}
