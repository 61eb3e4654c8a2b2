//! The web layer: the dashboard, JSON-RPC at `/rpc/v1`, the `/api/events` stream,
//! `/metrics` and `/healthz` (contract §6–§8).
//!
//! It turns each request into one message to the supervisor through [`Backend`] and answers
//! with what the supervisor says, at once. It never talks to the engine and never awaits the
//! end of an operation. It owns sessions and RPC statistics, nothing else.

pub mod auth;
pub mod dashboard;
pub mod events;
pub mod metrics;
pub mod rpc;

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::dev::Server;
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures_util::StreamExt;
use serde_json::Value;

use crate::supervisor::{
    GetLogs, GetOperation, GetPackage, GetStatus, ListPackages, ReloadCatalog, RunOperation,
    Subscribe,
};
use crate::web::auth::{Auth, AuthPolicy};
use crate::web::metrics::Metrics;
use crate::web::rpc::{error_response, RpcContext, RpcError, INVALID_REQUEST};

/// Where and how the web server runs.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Address to bind (`listen` in the config file); port 0 picks a free port.
    pub listen: SocketAddr,
    /// File whose first line is the dashboard password (`auth.password_file`).
    pub password_file: PathBuf,
    /// Sessions and the failed-login slow-down.
    pub auth: AuthPolicy,
    /// Longest wait for the supervisor's answer before -32000.
    pub rpc_timeout: Duration,
    /// Largest accepted RPC body; larger ones get HTTP 413 and -32600.
    pub max_body_bytes: usize,
    /// Interval of the keep-alive comment on `/api/events`.
    pub events_keepalive: Duration,
    /// HTTP worker threads.
    pub workers: usize,
}

impl WebConfig {
    /// The defaults: 24 h idle sessions, 5 s RPC timeout, 64 KiB bodies, 15 s keep-alive.
    pub fn new(listen: SocketAddr, password_file: PathBuf) -> Self {
        WebConfig {
            listen,
            password_file,
            auth: AuthPolicy::default(),
            rpc_timeout: Duration::from_secs(5),
            max_body_bytes: 64 * 1024,
            events_keepalive: Duration::from_secs(15),
            workers: 2,
        }
    }
}

/// The supervisor as the web layer sees it: one recipient per message it sends.
/// Built from the real supervisor's address, or from a test stub's.
#[derive(Clone)]
pub struct Backend {
    /// `package.list`, `/metrics` and the event stream's snapshots.
    pub list_packages: Recipient<ListPackages>,
    /// `package.get`.
    pub get_package: Recipient<GetPackage>,
    /// Every mutating `package.*` method.
    pub run_operation: Recipient<RunOperation>,
    /// `operation.get`.
    pub get_operation: Recipient<GetOperation>,
    /// `package.logs`.
    pub get_logs: Recipient<GetLogs>,
    /// `catalog.reload`.
    pub reload_catalog: Recipient<ReloadCatalog>,
    /// `server.status`, `/metrics` and the event stream's `status` events.
    pub get_status: Recipient<GetStatus>,
    /// One subscription per `/api/events` client.
    pub subscribe: Recipient<Subscribe>,
}

impl Backend {
    /// Recipients for every message, all going to `addr`.
    pub fn from_addr<A>(addr: &Addr<A>) -> Backend
    where
        A: Actor<Context = Context<A>>
            + Handler<ListPackages>
            + Handler<GetPackage>
            + Handler<RunOperation>
            + Handler<GetOperation>
            + Handler<GetLogs>
            + Handler<ReloadCatalog>
            + Handler<GetStatus>
            + Handler<Subscribe>,
    {
        Backend {
            list_packages: addr.clone().recipient(),
            get_package: addr.clone().recipient(),
            run_operation: addr.clone().recipient(),
            get_operation: addr.clone().recipient(),
            get_logs: addr.clone().recipient(),
            reload_catalog: addr.clone().recipient(),
            get_status: addr.clone().recipient(),
            subscribe: addr.clone().recipient(),
        }
    }
}

/// What every worker shares.
struct State {
    backend: Backend,
    auth: Auth,
    metrics: Metrics,
    rpc_timeout: Duration,
    max_body_bytes: usize,
    events_keepalive: Duration,
}

/// Binds the server and returns it unstarted (await or spawn it) with the bound address.
/// Fails when the address cannot be bound or the password file cannot be read.
/// Signal handling is left to the caller: stop it with `server.handle().stop(true)`.
pub fn server(cfg: WebConfig, backend: Backend) -> io::Result<(Server, SocketAddr)> {
    let auth = Auth::new(cfg.password_file.clone(), cfg.auth.clone());
    auth.check_password_file()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let state = web::Data::new(State {
        backend,
        auth,
        metrics: Metrics::default(),
        rpc_timeout: cfg.rpc_timeout,
        max_body_bytes: cfg.max_body_bytes,
        events_keepalive: cfg.events_keepalive,
    });
    let http = HttpServer::new(move || App::new().app_data(state.clone()).configure(routes))
        .workers(cfg.workers.max(1))
        .disable_signals()
        .shutdown_timeout(5)
        .bind(cfg.listen)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", cfg.listen)))?;
    let addr = http.addrs().first().copied().unwrap_or(cfg.listen);
    Ok((http.run(), addr))
}

/// Runs the web server until `shutdown` completes, then stops it gracefully.
/// Must run inside an actix system (e.g. under `#[actix_web::main]`).
pub async fn serve(
    cfg: WebConfig,
    backend: Backend,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let (srv, addr) = server(cfg, backend)?;
    tracing::info!(%addr, "web server listening");
    let handle = srv.handle();
    let task = actix_web::rt::spawn(srv);
    shutdown.await;
    tracing::info!("web server stopping");
    handle.stop(true).await;
    task.await
        .map_err(|e| io::Error::other(format!("web server task: {e}")))?
}

/// Every route.
fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(dashboard::index))
        .route("/healthz", web::get().to(healthz))
        .route("/rpc/v1", web::post().to(rpc_endpoint))
        .route("/api/events", web::get().to(events_endpoint))
        .route("/metrics", web::get().to(metrics_endpoint));
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The session token of a request, owned.
fn request_token(req: &HttpRequest) -> Option<String> {
    let h = req.headers();
    auth::token_from_headers(
        header_str(h, header::AUTHORIZATION),
        header_str(h, header::COOKIE),
    )
    .map(str::to_string)
}

fn json_error(status: StatusCode, e: &RpcError) -> HttpResponse {
    HttpResponse::build(status).json(error_response(Value::Null, e))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(rpc::health())
}

async fn rpc_endpoint(
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<State>,
) -> HttpResponse {
    let h = req.headers();
    if let Err(e) = auth::check_origin(header_str(h, header::ORIGIN), header_str(h, header::HOST)) {
        tracing::warn!("{e}");
        return json_error(StatusCode::FORBIDDEN, &RpcError::from(e));
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let Ok(chunk) = chunk else {
            return json_error(
                StatusCode::BAD_REQUEST,
                &RpcError {
                    code: INVALID_REQUEST,
                    message: "invalid request: cannot read the body".to_string(),
                },
            );
        };
        if body.len() + chunk.len() > state.max_body_bytes {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &RpcError {
                    code: INVALID_REQUEST,
                    message: format!(
                        "invalid request: body larger than {} bytes",
                        state.max_body_bytes
                    ),
                },
            );
        }
        body.extend_from_slice(&chunk);
    }
    let ctx = RpcContext {
        backend: &state.backend,
        auth: &state.auth,
        metrics: &state.metrics,
        token: request_token(&req),
        ip: req
            .peer_addr()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip()),
        timeout: state.rpc_timeout,
    };
    let reply = rpc::handle_body(&ctx, &body).await;
    let status = if reply.unauthorized {
        StatusCode::UNAUTHORIZED
    } else if reply.body.is_none() {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::OK
    };
    let mut res = HttpResponse::build(status);
    res.insert_header((header::CACHE_CONTROL, "no-store"));
    if let Some(cookie) = reply.set_cookie {
        res.insert_header((header::SET_COOKIE, cookie));
    }
    match reply.body {
        Some(body) => res.json(body),
        None => res.finish(),
    }
}

async fn events_endpoint(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    if let Err(e) = state
        .auth
        .check(request_token(&req).as_deref(), Instant::now())
    {
        return json_error(StatusCode::UNAUTHORIZED, &RpcError::from(e));
    }
    match events::stream(
        state.backend.clone(),
        state.rpc_timeout,
        state.events_keepalive,
    )
    .await
    {
        Ok(stream) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "text/event-stream"))
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .insert_header(("X-Accel-Buffering", "no"))
            .streaming(stream),
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &RpcError::from(e)),
    }
}

/// `/metrics` needs no session: it holds app ids and states only, and scrapers carry none.
async fn metrics_endpoint(state: web::Data<State>) -> HttpResponse {
    let t = state.rpc_timeout;
    let packages = rpc::ask(&state.backend.list_packages, ListPackages, t)
        .await
        .ok();
    let status = rpc::ask(&state.backend.get_status, GetStatus, t).await.ok();
    let body = state.metrics.render(packages.as_deref(), status.as_ref());
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        ))
        .body(body)
}
