//! `POST /rpc/v1`: JSON-RPC 2.0 framing (single, batch, notifications), parameter checks,
//! authentication of each call, and the translation of each method into one supervisor
//! message (contract §6).
//!
//! It never awaits an operation's end: mutating methods answer with the operation the
//! supervisor reports as started. Errors become JSON-RPC codes through
//! [`AppError::rpc_code`] only, plus the framing codes that belong to this layer.
//!
//! Over 600 lines only with its unit tests; the code is under 600.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::OperationKind;
use crate::backup::BackupRequest;
use crate::error::AppError;
use crate::supervisor::{
    Adopt, GetLogs, GetOperation, GetPackage, GetStatus, ListPackages, ReloadCatalog, RunOperation,
};
use crate::web::auth::{Auth, AuthError};
use crate::web::metrics::Metrics;
use crate::web::Backend;

/// JSON-RPC: the body is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: not a valid request object (or an empty batch, or too large a body).
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC: no such method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC: bad params; the same code [`AppError::rpc_code`] gives unknown apps.
pub const INVALID_PARAMS: i64 = -32602;
/// Not logged in, wrong password, too many attempts, or a cross-origin request.
pub const UNAUTHORIZED: i64 = -32001;
/// Default `tail` of `package.logs`.
pub const DEFAULT_TAIL: usize = 100;
/// Largest `tail` of `package.logs`.
pub const MAX_TAIL: usize = 10_000;

/// One JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// The JSON-RPC error code.
    pub code: i64,
    /// Lowercase, for people.
    pub message: String,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
        }
    }
}

impl From<AppError> for RpcError {
    fn from(e: AppError) -> Self {
        RpcError::new(e.rpc_code(), e.to_string())
    }
}

impl From<AuthError> for RpcError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::PasswordFile { .. } => AppError::Internal(e.to_string()).into(),
            AuthError::PasswordTooShort { .. } => RpcError::new(INVALID_PARAMS, e.to_string()),
            _ => RpcError::new(UNAUTHORIZED, e.to_string()),
        }
    }
}

/// Every method this endpoint knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    AuthLogin,
    AuthLogout,
    AuthSetup,
    ServerHealth,
    ServerStatus,
    PackageList,
    PackageGet,
    PackageOperation(OperationKind),
    PackageLogs,
    OperationGet,
    CatalogReload,
    BackupRun,
    BackupList,
    BackupStatus,
    BackupRestore,
}

impl Method {
    /// Every method, for tests and the docs.
    pub const ALL: [Method; 22] = [
        Method::AuthLogin,
        Method::AuthLogout,
        Method::AuthSetup,
        Method::ServerHealth,
        Method::ServerStatus,
        Method::PackageList,
        Method::PackageGet,
        Method::PackageOperation(OperationKind::Install),
        Method::PackageOperation(OperationKind::Start),
        Method::PackageOperation(OperationKind::Stop),
        Method::PackageOperation(OperationKind::Restart),
        Method::PackageOperation(OperationKind::Upgrade),
        Method::PackageOperation(OperationKind::Rollback),
        Method::PackageOperation(OperationKind::Uninstall),
        Method::PackageOperation(OperationKind::Adopt),
        Method::PackageLogs,
        Method::OperationGet,
        Method::CatalogReload,
        Method::BackupRun,
        Method::BackupList,
        Method::BackupStatus,
        Method::BackupRestore,
    ];

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Method::AuthLogin => "auth.login",
            Method::AuthLogout => "auth.logout",
            Method::AuthSetup => "auth.setup",
            Method::ServerHealth => "server.health",
            Method::ServerStatus => "server.status",
            Method::PackageList => "package.list",
            Method::PackageGet => "package.get",
            Method::PackageOperation(kind) => match kind {
                OperationKind::Install => "package.install",
                OperationKind::Start => "package.start",
                OperationKind::Stop => "package.stop",
                OperationKind::Restart => "package.restart",
                OperationKind::Upgrade => "package.upgrade",
                OperationKind::Rollback => "package.rollback",
                OperationKind::Uninstall => "package.uninstall",
                OperationKind::Adopt => "package.adopt",
            },
            Method::PackageLogs => "package.logs",
            Method::OperationGet => "operation.get",
            Method::CatalogReload => "catalog.reload",
            Method::BackupRun => "backup.run",
            Method::BackupList => "backup.list",
            Method::BackupStatus => "backup.status",
            Method::BackupRestore => "backup.restore",
        }
    }

    /// The method called `name`, if any.
    pub fn parse(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether the caller must hold a session.
    fn needs_session(self) -> bool {
        !matches!(
            self,
            Method::AuthLogin | Method::AuthLogout | Method::AuthSetup | Method::ServerHealth
        )
    }
}

/// An app id as the catalog allows it (`^[a-z0-9][a-z0-9-]{0,62}$`), checked before any
/// message leaves this layer so that ids like `../etc` never reach the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppId(String);

impl AppId {
    /// Validates `id`.
    pub fn parse(id: &str) -> Result<AppId, AppError> {
        let bytes = id.as_bytes();
        let ok = !bytes.is_empty()
            && bytes.len() <= 63
            && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
        if ok {
            Ok(AppId(id.to_string()))
        } else {
            Err(AppError::InvalidParams {
                reason: format!("invalid app id {id:?}: must match ^[a-z0-9][a-z0-9-]{{0,62}}$"),
            })
        }
    }

    /// The id as a string.
    pub fn into_string(self) -> String {
        self.0
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdParams {
    id: String,
}

/// `backup.restore` params.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreParams {
    id: String,
    #[serde(default)]
    snapshot: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UninstallParams {
    id: String,
    #[serde(default)]
    purge: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdoptParams {
    id: String,
    container: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsParams {
    id: String,
    tail: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginParams {
    password: String,
}

/// What one request brings besides its body.
pub struct RpcContext<'a> {
    /// Where calls are forwarded.
    pub backend: &'a Backend,
    /// Sessions and the login slow-down.
    pub auth: &'a Auth,
    /// Where each call is counted.
    pub metrics: &'a Metrics,
    /// Session token from the `Authorization: Bearer` header (a cookie never counts).
    pub token: Option<String>,
    /// `{listen, fingerprint_sha256, spki_sha256_base64}` of the HTTPS listener, for
    /// `server.status`.
    pub tls: Option<&'a Value>,
    /// The request came over HTTPS: a cookie set in the answer is `Secure`.
    pub secure: bool,
    /// Client address, for the login slow-down.
    pub ip: IpAddr,
    /// How long to wait for the supervisor's answer.
    pub timeout: Duration,
}

/// The HTTP answer to one body.
#[derive(Debug, Default)]
pub struct RpcReply {
    /// `None` when every call was a notification (HTTP 204).
    pub body: Option<Value>,
    /// Some call was refused for want of a session: HTTP 401.
    pub unauthorized: bool,
    /// `Set-Cookie` value from `auth.login` / `auth.logout`.
    pub set_cookie: Option<String>,
}

/// Side effects of one call that concern the HTTP response.
#[derive(Default)]
struct CallEffects {
    unauthorized: bool,
    set_cookie: Option<String>,
}

/// Handles one request body (single request or batch).
pub async fn handle_body(ctx: &RpcContext<'_>, body: &[u8]) -> RpcReply {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return RpcReply {
                body: Some(error_response(
                    Value::Null,
                    &RpcError::new(PARSE_ERROR, format!("parse error: {e}")),
                )),
                ..RpcReply::default()
            }
        }
    };
    match value {
        Value::Array(items) if items.is_empty() => RpcReply {
            body: Some(error_response(
                Value::Null,
                &RpcError::new(INVALID_REQUEST, "invalid request: empty batch"),
            )),
            ..RpcReply::default()
        },
        Value::Array(items) => {
            let mut reply = RpcReply::default();
            let mut answers = Vec::new();
            for item in items {
                let mut effects = CallEffects::default();
                if let Some(answer) = handle_one(ctx, item, &mut effects).await {
                    answers.push(answer);
                }
                reply.unauthorized |= effects.unauthorized;
                if effects.set_cookie.is_some() {
                    reply.set_cookie = effects.set_cookie;
                }
            }
            reply.body = (!answers.is_empty()).then_some(Value::Array(answers));
            reply
        }
        single => {
            let mut effects = CallEffects::default();
            let body = handle_one(ctx, single, &mut effects).await;
            RpcReply {
                body,
                unauthorized: effects.unauthorized,
                set_cookie: effects.set_cookie,
            }
        }
    }
}

/// A JSON-RPC error response.
pub fn error_response(id: Value, e: &RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": e.code, "message": e.message}})
}

/// Handles one request object; `None` for a notification.
async fn handle_one(ctx: &RpcContext<'_>, item: Value, effects: &mut CallEffects) -> Option<Value> {
    let Value::Object(mut obj) = item else {
        return Some(error_response(
            Value::Null,
            &RpcError::new(INVALID_REQUEST, "invalid request: not an object"),
        ));
    };
    let is_notification = !obj.contains_key("id");
    let id = obj.remove("id").unwrap_or(Value::Null);
    if !matches!(id, Value::Null | Value::String(_) | Value::Number(_)) {
        return Some(error_response(
            Value::Null,
            &RpcError::new(
                INVALID_REQUEST,
                "invalid request: id must be a string, a number or null",
            ),
        ));
    }
    if obj.get("jsonrpc") != Some(&Value::String("2.0".to_string())) {
        return Some(error_response(
            id,
            &RpcError::new(INVALID_REQUEST, "invalid request: jsonrpc must be \"2.0\""),
        ));
    }
    let Some(Value::String(method_name)) = obj.remove("method") else {
        return Some(error_response(
            id,
            &RpcError::new(INVALID_REQUEST, "invalid request: method must be a string"),
        ));
    };
    let params = obj.remove("params");
    let started = Instant::now();
    let method = Method::parse(&method_name);
    let outcome = match method {
        None => Err(RpcError::new(
            METHOD_NOT_FOUND,
            format!("method not found: {method_name}"),
        )),
        Some(method) => call(ctx, method, params, effects).await,
    };
    if let Err(e) = &outcome {
        effects.unauthorized |= e.code == UNAUTHORIZED;
    }
    ctx.metrics.record(
        method.map_or("unknown", Method::name),
        outcome.is_ok(),
        started.elapsed(),
    );
    if is_notification {
        return None;
    }
    Some(match outcome {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(e) => error_response(id, &e),
    })
}

/// Decodes `params` (absent or null count as `{}`); anything but an object is -32602.
fn params<T: DeserializeOwned>(params: Option<Value>) -> Result<T, RpcError> {
    let value = match params {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(v @ Value::Object(_)) => v,
        Some(_) => {
            return Err(RpcError::new(
                INVALID_PARAMS,
                "invalid params: params must be an object",
            ))
        }
    };
    serde_json::from_value(value)
        .map_err(|e| RpcError::new(INVALID_PARAMS, format!("invalid params: {e}")))
}

/// Params of a method that takes none: absent, null or an object (ignored).
fn no_params(params: Option<Value>) -> Result<(), RpcError> {
    match params {
        None | Some(Value::Null) | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(RpcError::new(
            INVALID_PARAMS,
            "invalid params: params must be an object",
        )),
    }
}

fn app_id(id: &str) -> Result<String, RpcError> {
    Ok(AppId::parse(id)?.into_string())
}

fn to_value<T: serde::Serialize>(v: T) -> Result<Value, RpcError> {
    serde_json::to_value(v)
        .map_err(|e| AppError::Internal(format!("encoding the result: {e}")).into())
}

/// Runs one known method.
async fn call(
    ctx: &RpcContext<'_>,
    method: Method,
    raw: Option<Value>,
    effects: &mut CallEffects,
) -> Result<Value, RpcError> {
    if method.needs_session() {
        ctx.auth.check(ctx.token.as_deref(), Instant::now())?;
    }
    let b = ctx.backend;
    let t = ctx.timeout;
    match method {
        Method::AuthLogin => {
            let p: LoginParams = params(raw)?;
            let refused = |e: AuthError| {
                tracing::info!(client = %ctx.ip, "login refused: {e}");
                RpcError::from(e)
            };
            let pending = ctx
                .auth
                .begin_login(ctx.ip, Instant::now())
                .map_err(refused)?;
            // argon2 is slow on purpose: checked on a blocking thread, not a server worker,
            // and only a few at a time.
            let slot = ctx.auth.check_slot().await;
            let ok = actix_web::web::block(move || {
                let _slot = slot;
                crate::web::auth::verify_password(&pending.stored, &p.password)
            })
            .await
            .map_err(|e| RpcError::from(AppError::Internal(format!("password check: {e}"))))?;
            let token = ctx
                .auth
                .finish_login(ctx.ip, ok, Instant::now())
                .map_err(refused)?;
            tracing::info!(client = %ctx.ip, "login");
            // No cookie: the page keeps the token in sessionStorage and sends it as a header.
            Ok(json!({ "token": token }))
        }
        Method::AuthSetup => {
            let p: crate::web::setup::SetupParams = params(raw)?;
            let token = ctx.auth.setup(ctx.ip, &p.code, &p.password).await?;
            Ok(json!({ "token": token }))
        }
        Method::AuthLogout => {
            no_params(raw)?;
            if let Some(token) = &ctx.token {
                ctx.auth.logout(token);
            }
            effects.set_cookie = Some(ctx.auth.clear_cookie(ctx.secure));
            Ok(json!({ "ok": true }))
        }
        Method::ServerHealth => {
            no_params(raw)?;
            Ok(health())
        }
        Method::ServerStatus => {
            no_params(raw)?;
            let mut status = to_value(ask(&b.get_status, GetStatus, t).await?)?;
            // The web layer's own facts: the HTTPS listener and its certificate.
            status["tls"] = ctx.tls.cloned().unwrap_or(Value::Null);
            Ok(status)
        }
        Method::PackageList => {
            no_params(raw)?;
            to_value(ask(&b.list_packages, ListPackages, t).await?)
        }
        Method::PackageGet => {
            let p: IdParams = params(raw)?;
            let id = app_id(&p.id)?;
            to_value(ask(&b.get_package, GetPackage { id }, t).await??)
        }
        Method::PackageOperation(OperationKind::Adopt) => {
            let p: AdoptParams = params(raw)?;
            let id = app_id(&p.id)?;
            if p.container.is_empty() || p.container.len() > 256 {
                return Err(RpcError::new(
                    INVALID_PARAMS,
                    "invalid params: container must be 1 to 256 characters",
                ));
            }
            let adopt = Adopt {
                id,
                container: p.container,
            };
            let op = ask(&b.adopt, adopt, t).await??;
            Ok(json!({ "operation": to_value(op)? }))
        }
        Method::PackageOperation(kind) => {
            let (id, purge) = if kind == OperationKind::Uninstall {
                let p: UninstallParams = params(raw)?;
                (p.id, p.purge)
            } else {
                let p: IdParams = params(raw)?;
                (p.id, false)
            };
            let id = app_id(&id)?;
            let op = ask(&b.run_operation, RunOperation { id, kind, purge }, t).await??;
            Ok(json!({ "operation": to_value(op)? }))
        }
        Method::PackageLogs => {
            let p: LogsParams = params(raw)?;
            let id = app_id(&p.id)?;
            let tail = p.tail.unwrap_or(DEFAULT_TAIL);
            if tail > MAX_TAIL {
                return Err(RpcError::new(
                    INVALID_PARAMS,
                    format!("invalid params: tail {tail} is more than {MAX_TAIL}"),
                ));
            }
            let lines = ask(&b.get_logs, GetLogs { id, tail }, t).await??;
            Ok(json!({ "lines": lines }))
        }
        Method::OperationGet => {
            let p: IdParams = params(raw)?;
            if p.id.is_empty() || p.id.len() > 128 {
                return Err(RpcError::new(
                    INVALID_PARAMS,
                    "invalid params: operation id must be 1 to 128 characters",
                ));
            }
            to_value(ask(&b.get_operation, GetOperation { id: p.id }, t).await??)
        }
        Method::CatalogReload => {
            no_params(raw)?;
            let apps = ask(&b.reload_catalog, ReloadCatalog, t).await??;
            Ok(json!({ "apps": apps }))
        }
        Method::BackupRun | Method::BackupList | Method::BackupStatus | Method::BackupRestore => {
            let request = match method {
                Method::BackupRestore => {
                    let p: RestoreParams = params(raw)?;
                    BackupRequest::Restore {
                        app: app_id(&p.id)?,
                        snapshot: p.snapshot,
                    }
                }
                Method::BackupRun => {
                    no_params(raw)?;
                    BackupRequest::Run
                }
                Method::BackupList => {
                    no_params(raw)?;
                    BackupRequest::List
                }
                _ => {
                    no_params(raw)?;
                    BackupRequest::Status
                }
            };
            match &b.backup {
                Some(to) => Ok(ask(to, request, t).await??),
                None if matches!(request, BackupRequest::Status) => {
                    Ok(crate::backup::unconfigured_status())
                }
                None => Err(AppError::InvalidParams {
                    reason: "backup is not configured: add a `backup:` section to the config"
                        .to_string(),
                }
                .into()),
            }
        }
    }
}

/// The `server.health` / `GET /healthz` answer.
pub fn health() -> Value {
    json!({"ok": true, "version": env!("CARGO_PKG_VERSION")})
}

/// Sends `msg` and waits at most `timeout` for the answer; a silent or stopped supervisor is
/// an internal error (-32000), never a hung request.
pub async fn ask<M>(to: &Recipient<M>, msg: M, timeout: Duration) -> Result<M::Result, AppError>
where
    M: Message + Send + 'static,
    M::Result: Send,
{
    match tokio::time::timeout(timeout, to.send(msg)).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(AppError::Internal(format!(
            "supervisor did not answer within {}",
            humantime::format_duration(timeout)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_id_cases() {
        let cases = [
            ("lnd", true),
            ("bitcoind", true),
            ("0-a", true),
            ("a", true),
            (&*"a".repeat(63), true),
            (&*"a".repeat(64), false),
            ("", false),
            ("-a", false),
            ("A", false),
            ("../etc", false),
            ("a/b", false),
            ("a_b", false),
            ("a b", false),
            ("é", false),
        ];
        for (id, ok) in cases {
            let got = AppId::parse(id);
            assert_eq!(got.is_ok(), ok, "{id:?}");
            if let Err(e) = got {
                assert_eq!(e.rpc_code(), INVALID_PARAMS);
            }
        }
    }

    #[test]
    fn method_names_round_trip() {
        for m in Method::ALL {
            assert_eq!(Method::parse(m.name()), Some(m));
        }
        assert_eq!(Method::parse("package.explode"), None);
    }

    #[test]
    fn params_cases() {
        let ok: Result<IdParams, _> = params(Some(json!({"id": "a"})));
        assert_eq!(ok.map(|p| p.id), Ok("a".to_string()));
        let cases = [
            Some(json!(["a"])),
            Some(json!("a")),
            Some(json!({})),
            Some(json!({"id": 5})),
            Some(json!({"id": "a", "extra": 1})),
            None,
        ];
        for raw in cases {
            let got: Result<IdParams, RpcError> = params(raw.clone());
            assert_eq!(got.err().map(|e| e.code), Some(INVALID_PARAMS), "{raw:?}");
        }
    }
}
