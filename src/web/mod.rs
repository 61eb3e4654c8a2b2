//! The web layer: the dashboard, JSON-RPC at `/rpc/v1`, the `/api/events` stream,
//! `/metrics` and `/healthz` (contract §6–§8).
//!
//! It turns each request into one message to the supervisor through [`Backend`] and answers
//! with what the supervisor says, at once. It never talks to the engine and never awaits the
//! end of an operation. It owns sessions and RPC statistics, nothing else.

pub mod auth;
pub mod dashboard;
pub mod events;
pub mod limits;
pub mod logs;
pub mod metrics;
pub mod rpc;
pub mod setup;
pub mod tls;

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::Server;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::StatusCode;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures_util::StreamExt;
use serde_json::Value;

use crate::supervisor::{
    Adopt, FollowLogs, GetLogs, GetOperation, GetPackage, GetStatus, ListPackages, ReloadCatalog,
    RunOperation, Subscribe,
};
use crate::web::auth::{Auth, AuthPolicy};
use crate::web::metrics::Metrics;
use crate::web::rpc::{error_response, RpcContext, RpcError, INVALID_REQUEST};
use crate::web::tls::TlsIdentity;

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
    /// The HTTPS listener, when configured.
    pub tls: Option<TlsListen>,
    /// Host names accepted in the `Host` header besides IP literals (see
    /// [`auth::host_allowed`]); anything else gets 403 on every route.
    pub allowed_hosts: Vec<String>,
    /// A reverse proxy whose `X-Forwarded-For` names the client.
    pub trusted_proxy: Option<IpAddr>,
    /// Bearer token that lets a scraper off loopback read `/metrics`.
    pub metrics_token: Option<String>,
    /// Longest time to receive a request's head (actix's client request timeout).
    pub head_timeout: Duration,
    /// Longest time to receive a request's body: a slower client gets 408 and is cut off.
    pub body_timeout: Duration,
    /// Open connections per worker past which new ones wait in the backlog.
    pub max_connections: usize,
    /// TLS handshakes in progress per worker (the connection-rate bound of HTTPS).
    pub max_connection_rate: usize,
    /// Open and new connections per client address.
    pub per_client: limits::ConnPolicy,
    /// First-run onboarding: no password file yet, this run's setup code.
    pub setup: Option<setup::SetupCode>,
}

/// The HTTPS listener: where, and with which certificate.
#[derive(Debug, Clone)]
pub struct TlsListen {
    /// Address to bind; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Certificate and key.
    pub identity: TlsIdentity,
}

/// Where the server listens, once bound.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// The plain HTTP listener (loopback by default).
    pub http: SocketAddr,
    /// The HTTPS listener, when configured.
    pub https: Option<SocketAddr>,
}

impl WebConfig {
    /// The defaults: 24 h idle sessions, 5 s RPC timeout, 64 KiB bodies read within 10 s,
    /// 15 s keep-alive, 256 connections per worker, no HTTPS.
    pub fn new(listen: SocketAddr, password_file: PathBuf) -> Self {
        WebConfig {
            listen,
            password_file,
            auth: AuthPolicy::default(),
            rpc_timeout: Duration::from_secs(5),
            max_body_bytes: 64 * 1024,
            events_keepalive: Duration::from_secs(15),
            workers: 2,
            tls: None,
            allowed_hosts: auth::default_allowed_hosts(&[]),
            trusted_proxy: None,
            metrics_token: None,
            head_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(10),
            max_connections: 256,
            max_connection_rate: 64,
            per_client: limits::ConnPolicy::default(),
            setup: None,
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
    /// `package.adopt`.
    pub adopt: Recipient<Adopt>,
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
    /// One log stream per `/api/logs/{id}` client.
    pub follow_logs: Recipient<FollowLogs>,
    /// `backup.*`; `None` when the config has no `backup:` section.
    pub backup: Option<Recipient<crate::backup::BackupRequest>>,
}

impl Backend {
    /// Recipients for every message, all going to `addr`.
    pub fn from_addr<A>(addr: &Addr<A>) -> Backend
    where
        A: Actor<Context = Context<A>>
            + Handler<ListPackages>
            + Handler<GetPackage>
            + Handler<RunOperation>
            + Handler<Adopt>
            + Handler<GetOperation>
            + Handler<GetLogs>
            + Handler<ReloadCatalog>
            + Handler<GetStatus>
            + Handler<Subscribe>
            + Handler<FollowLogs>,
    {
        Backend {
            list_packages: addr.clone().recipient(),
            get_package: addr.clone().recipient(),
            run_operation: addr.clone().recipient(),
            adopt: addr.clone().recipient(),
            get_operation: addr.clone().recipient(),
            get_logs: addr.clone().recipient(),
            reload_catalog: addr.clone().recipient(),
            get_status: addr.clone().recipient(),
            subscribe: addr.clone().recipient(),
            follow_logs: addr.clone().recipient(),
            backup: None,
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
    /// A body not received within this is cut off (408): a trickling client cannot hold a
    /// connection and a worker's attention indefinitely.
    body_timeout: Duration,
    /// Names accepted in `Host`, besides IP literals (DNS rebinding).
    allowed_hosts: Vec<String>,
    /// The proxy whose `X-Forwarded-For` names the client.
    trusted_proxy: Option<IpAddr>,
    /// Lets a scraper off loopback read `/metrics`.
    metrics_token: Option<String>,
    /// What `server.status` says about HTTPS.
    tls: Option<Value>,
}

/// Binds the server and returns it unstarted (await or spawn it) with the plain address.
/// Fails when the address cannot be bound or the password file cannot be read.
/// Signal handling is left to the caller: stop it with `server.handle().stop(true)`.
pub fn server(cfg: WebConfig, backend: Backend) -> io::Result<(Server, SocketAddr)> {
    server_bound(cfg, backend).map(|(srv, bound)| (srv, bound.http))
}

/// Like [`server`], answering the HTTPS address too.
pub fn server_bound(cfg: WebConfig, backend: Backend) -> io::Result<(Server, Bound)> {
    let auth = Auth::new(cfg.password_file.clone(), cfg.auth.clone());
    match &cfg.setup {
        Some(code) => auth.open_onboarding(code),
        None => auth
            .check_password_file()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?,
    }
    // The HTTPS socket is bound first so `server.status` can name its address.
    let tls = match &cfg.tls {
        Some(t) => {
            let listener = std::net::TcpListener::bind(t.listen).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on {}: {e}", t.listen))
            })?;
            let addr = listener.local_addr()?;
            let config = t
                .identity
                .server_config()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            Some((listener, addr, config, &t.identity))
        }
        None => None,
    };
    let tls_info = tls.as_ref().map(|(_, addr, _, id)| {
        serde_json::json!({
            "listen": addr.to_string(),
            "fingerprint_sha256": id.fingerprint_sha256,
            "spki_sha256_base64": id.spki_sha256_base64,
        })
    });
    let state = web::Data::new(State {
        backend,
        auth,
        metrics: Metrics::default(),
        rpc_timeout: cfg.rpc_timeout,
        max_body_bytes: cfg.max_body_bytes,
        events_keepalive: cfg.events_keepalive,
        body_timeout: cfg.body_timeout,
        allowed_hosts: cfg.allowed_hosts.clone(),
        trusted_proxy: cfg.trusted_proxy,
        metrics_token: cfg.metrics_token.clone().filter(|t| !t.is_empty()),
        tls: tls_info,
    });
    let exempt: Vec<IpAddr> = cfg.trusted_proxy.into_iter().collect();
    let conn_limits = std::sync::Arc::new(limits::ConnLimits::new(cfg.per_client.clone(), &exempt));
    let mut http = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(from_fn(check_host))
            .configure(routes)
    })
    .workers(cfg.workers.max(1))
    .disable_signals()
    .shutdown_timeout(5)
    .client_request_timeout(cfg.head_timeout)
    .on_connect(move |conn, ext| limit_connection(&conn_limits, conn, ext))
    .max_connections(cfg.max_connections.max(1))
    .max_connection_rate(cfg.max_connection_rate.max(1))
    .bind(cfg.listen)
    .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", cfg.listen)))?;
    let http_addr = http.addrs().first().copied().unwrap_or(cfg.listen);
    let mut https = None;
    if let Some((listener, addr, config, _)) = tls {
        http = http.listen_rustls_0_23(listener, config)?;
        https = Some(addr);
    }
    Ok((
        http.run(),
        Bound {
            http: http_addr,
            https,
        },
    ))
}

/// Admits a new connection or shuts it down at once when its address is over a limit.
fn limit_connection(
    limits: &limits::ConnLimits,
    conn: &dyn std::any::Any,
    ext: &mut actix_web::dev::Extensions,
) {
    use actix_web::rt::net::TcpStream;
    let tcp = conn.downcast_ref::<TcpStream>().or_else(|| {
        conn.downcast_ref::<actix_tls::accept::rustls_0_23::TlsStream<TcpStream>>()
            .map(|tls| tls.get_ref().0)
    });
    let Some(tcp) = tcp else {
        return;
    };
    let Ok(peer) = tcp.peer_addr() else {
        return;
    };
    match limits.admit(peer.ip(), Instant::now()) {
        Ok(limits::Admission::Counted(guard)) => {
            ext.insert(guard);
        }
        Ok(limits::Admission::Exempt) => {}
        Err(e) => {
            tracing::debug!(client = %peer.ip(), "connection closed: {e}");
            let _ = rustix::net::shutdown(tcp, rustix::net::Shutdown::Both);
        }
    }
}

/// Refuses, on every route, a request whose `Host` is not this node (DNS rebinding).
async fn check_host(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let allowed = req.app_data::<web::Data<State>>().is_some_and(|s| {
        auth::host_allowed(header_str(req.headers(), header::HOST), &s.allowed_hosts)
    });
    if !allowed {
        let host = header_str(req.headers(), header::HOST)
            .unwrap_or("")
            .to_string();
        tracing::warn!(host, "request for a host not on the allow-list refused");
        let res = HttpResponse::Forbidden()
            .insert_header((header::CONTENT_TYPE, "text/plain; charset=utf-8"))
            .body("forbidden: unknown host (add it to allowed_hosts)\n");
        return Ok(req.into_response(res));
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_boxed_body)
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
        .route("/api/logs/{id}", web::get().to(logs::endpoint))
        .route("/metrics", web::get().to(metrics_endpoint));
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The session token of a request (the `Authorization` header only), owned.
fn request_token(req: &HttpRequest) -> Option<String> {
    auth::token_from_headers(header_str(req.headers(), header::AUTHORIZATION)).map(str::to_string)
}

/// The client's address: the peer's, or the one a trusted proxy forwarded.
fn client_ip(req: &HttpRequest, state: &State) -> IpAddr {
    let peer = req
        .peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    let trusted: &[IpAddr] = match &state.trusted_proxy {
        Some(p) => std::slice::from_ref(p),
        None => &[],
    };
    auth::client_ip(
        peer,
        header_str(
            req.headers(),
            header::HeaderName::from_static("x-forwarded-for"),
        ),
        trusted,
    )
}

/// An RPC framing error with an HTTP status.
fn invalid(status: StatusCode, message: String) -> HttpResponse {
    json_error(
        status,
        &RpcError {
            code: INVALID_REQUEST,
            message,
        },
    )
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
    let json = header_str(h, header::CONTENT_TYPE).is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    if !json {
        return invalid(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid request: Content-Type must be application/json".to_string(),
        );
    }
    let max = state.max_body_bytes;
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let Ok(chunk) = chunk else {
                return Err(invalid(
                    StatusCode::BAD_REQUEST,
                    "invalid request: cannot read the body".to_string(),
                ));
            };
            if body.len() + chunk.len() > max {
                return Err(invalid(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("invalid request: body larger than {max} bytes"),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    let body = match tokio::time::timeout(state.body_timeout, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(res)) => return res,
        Err(_) => {
            tracing::info!(client = %client_ip(&req, &state), "request body too slow: cut off");
            let mut res = invalid(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "invalid request: body not received within {}",
                    humantime::format_duration(state.body_timeout)
                ),
            );
            res.head_mut()
                .set_connection_type(actix_web::http::ConnectionType::Close);
            return res;
        }
    };
    let ctx = RpcContext {
        backend: &state.backend,
        auth: &state.auth,
        metrics: &state.metrics,
        token: request_token(&req),
        tls: state.tls.as_ref(),
        secure: req.app_config().secure(),
        ip: client_ip(&req, &state),
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
    let session = match stream_session(&req, &state) {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
    match events::stream(
        state.backend.clone(),
        state.rpc_timeout,
        state.events_keepalive,
        session,
    )
    .await
    {
        Ok(stream) => event_stream_response(stream),
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &RpcError::from(e)),
    }
}

/// The session of a stream request (`/api/events`, `/api/logs`): 401 without a live
/// token, 429 past the session's stream limit; the stream ends when the token does.
fn stream_session(
    req: &HttpRequest,
    state: &web::Data<State>,
) -> Result<events::Session, Box<HttpResponse>> {
    let token = request_token(req);
    if let Err(e) = state.auth.check(token.as_deref(), Instant::now()) {
        return Err(Box::new(json_error(
            StatusCode::UNAUTHORIZED,
            &RpcError::from(e),
        )));
    }
    let token = token.unwrap_or_default();
    let slot = state.auth.open_stream(&token).map_err(|e| {
        Box::new(json_error(
            StatusCode::TOO_MANY_REQUESTS,
            &RpcError::from(e),
        ))
    })?;
    let live_state = state.clone();
    let alive = move || live_state.auth.is_live(&token, std::time::Instant::now());
    Ok(events::Session {
        alive: Box::new(alive),
        _slot: slot,
    })
}

/// A Server-Sent Events answer, unbuffered by proxies.
fn event_stream_response<S>(stream: S) -> HttpResponse
where
    S: futures_util::Stream<Item = Result<actix_web::web::Bytes, actix_web::Error>> + 'static,
{
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream)
}

/// `/metrics` needs no session (scrapers carry none) but is served only to loopback
/// clients, or to whoever sends the configured scrape token as a bearer token.
async fn metrics_endpoint(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    let local = client_ip(&req, &state).is_loopback();
    let token_ok = state.metrics_token.as_deref().is_some_and(|want| {
        auth::token_from_headers(header_str(req.headers(), header::AUTHORIZATION))
            .is_some_and(|got| auth::constant_time_eq(got.as_bytes(), want.as_bytes()))
    });
    if !local && !token_ok {
        return HttpResponse::Forbidden()
            .insert_header((header::CONTENT_TYPE, "text/plain; charset=utf-8"))
            .body("forbidden: /metrics is served on loopback or with the metrics token\n");
    }
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
