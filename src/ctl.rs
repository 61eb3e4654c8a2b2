//! `archipelago ctl`: a thin command-line client of the JSON-RPC endpoint, over hyper's
//! HTTP/1.1 client (plain HTTP to the local supervisor; no TLS, no pooling). The health
//! probes share `send`.
//!
//! It logs in with the password from `--password-file` or `ARCHIPELAGO_PASSWORD`, sends one
//! call, and prints a table for `list` and JSON otherwise. It keeps no state between runs.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{header, Request};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

/// Options of `archipelago ctl`.
#[derive(Debug, Clone, Args)]
pub struct CtlArgs {
    /// Base URL of the supervisor's web server.
    #[arg(long, env = "ARCHIPELAGO_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// File whose first line is the password (else the ARCHIPELAGO_PASSWORD variable).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Longest wait for an answer.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// One `ctl` action; each is one RPC call.
#[derive(Debug, Clone, Subcommand)]
pub enum CtlCommand {
    /// List every app as a table.
    List,
    /// Show one app.
    Get { id: String },
    /// Install an app.
    Install { id: String },
    /// Start an app.
    Start { id: String },
    /// Stop an app.
    Stop { id: String },
    /// Restart an app.
    Restart { id: String },
    /// Move an app to the version now in the catalog.
    Upgrade { id: String },
    /// Move an app back to its previous image and data snapshot.
    Rollback { id: String },
    /// Remove an app; its data is kept unless --purge.
    Uninstall {
        id: String,
        /// Also delete the app's volumes and secrets.
        #[arg(long)]
        purge: bool,
    },
    /// Print the last lines of an app's log.
    Logs {
        id: String,
        /// How many lines.
        #[arg(long)]
        tail: Option<usize>,
    },
    /// Take over a running container archipelago did not create as app ID's, without a
    /// restart (docs/migrate.md); waits for the outcome and lists any mismatch.
    Adopt {
        /// The container, by name or id.
        container: String,
        /// The app whose container it becomes (its manifest must be in the catalog).
        #[arg(long = "app", value_name = "ID")]
        app: String,
    },
    /// Show one operation.
    Operation { id: String },
    /// Re-read the app catalog.
    Reload,
    /// Show the server status (engine, last reconcile, memory).
    Status,
    /// Check that the server answers (no password needed).
    Health,
    /// `backup.run`, `backup.list` or `backup.status` (ACTION is `run`, `list` or `status`).
    Backup {
        #[arg(value_parser = ["run", "list", "status"])]
        action: String,
    },
    /// `backup.restore`: put one installed app's volumes and secrets back from a snapshot.
    BackupRestore {
        id: String,
        /// A snapshot id (default: the newest node snapshot).
        #[arg(long)]
        snapshot: Option<String>,
    },
}

impl CtlCommand {
    /// The RPC method and params of this command.
    fn request(&self) -> (&'static str, Value) {
        match self {
            CtlCommand::List => ("package.list", Value::Null),
            CtlCommand::Get { id } => ("package.get", json!({ "id": id })),
            CtlCommand::Install { id } => ("package.install", json!({ "id": id })),
            CtlCommand::Start { id } => ("package.start", json!({ "id": id })),
            CtlCommand::Stop { id } => ("package.stop", json!({ "id": id })),
            CtlCommand::Restart { id } => ("package.restart", json!({ "id": id })),
            CtlCommand::Upgrade { id } => ("package.upgrade", json!({ "id": id })),
            CtlCommand::Rollback { id } => ("package.rollback", json!({ "id": id })),
            CtlCommand::Uninstall { id, purge } => {
                ("package.uninstall", json!({ "id": id, "purge": purge }))
            }
            CtlCommand::Logs { id, tail } => match tail {
                Some(tail) => ("package.logs", json!({ "id": id, "tail": tail })),
                None => ("package.logs", json!({ "id": id })),
            },
            CtlCommand::Adopt { container, app } => (
                "package.adopt",
                json!({ "id": app, "container": container }),
            ),
            CtlCommand::Operation { id } => ("operation.get", json!({ "id": id })),
            CtlCommand::Reload => ("catalog.reload", Value::Null),
            CtlCommand::Status => ("server.status", Value::Null),
            CtlCommand::Health => ("server.health", Value::Null),
            CtlCommand::Backup { action } => match action.as_str() {
                "run" => ("backup.run", Value::Null),
                "list" => ("backup.list", Value::Null),
                _ => ("backup.status", Value::Null),
            },
            CtlCommand::BackupRestore { id, snapshot } => match snapshot {
                Some(s) => ("backup.restore", json!({ "id": id, "snapshot": s })),
                None => ("backup.restore", json!({ "id": id })),
            },
        }
    }
}

/// Why a `ctl` call failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    #[error("{message} (code {code})")]
    Rpc { code: i64, message: String },
    /// An operation the command waited for ended `failed`; its error, one problem a line.
    #[error("{0}")]
    OperationFailed(String),
    #[error("{url}: unexpected answer: {reason}")]
    BadResponse { url: String, reason: String },
    #[error("cannot read password file {path}: {reason}")]
    PasswordFile { path: PathBuf, reason: String },
}

/// Runs `ctl` on a runtime of its own. Call it outside any async runtime; from async code
/// use [`run_async`].
pub fn run(args: CtlArgs) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run_async(args)),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `ctl`: prints the result on stdout, or the error on stderr with a failing exit code.
pub async fn run_async(args: CtlArgs) -> ExitCode {
    match execute(&args).await {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs in when a password is at hand, sends the command, and formats the result.
async fn execute(args: &CtlArgs) -> Result<String, CtlError> {
    let mut client = RpcClient::new(&args.url, args.timeout);
    let (method, params) = args.command.request();
    if method != "server.health" {
        if let Some(password) = password(args.password_file.as_deref())? {
            client.login(&password).await?;
        }
    }
    let result = client.call(method, params).await?;
    if let CtlCommand::Adopt { .. } = &args.command {
        return wait_for_operation(&mut client, &result["operation"]).await;
    }
    Ok(match &args.command {
        CtlCommand::List => package_table(&result),
        CtlCommand::Logs { .. } => result["lines"]
            .as_array()
            .map(|lines| {
                lines
                    .iter()
                    .map(|l| l.as_str().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default(),
        _ => serde_json::to_string_pretty(&result).unwrap_or_else(|_| result.to_string()),
    })
}

/// How long `adopt` waits for its operation to end.
const OPERATION_WAIT: Duration = Duration::from_secs(300);

/// Polls an operation until it ends: its outcome when it succeeded, else an error whose
/// message lists each problem on a line of its own.
async fn wait_for_operation(client: &mut RpcClient, op: &Value) -> Result<String, CtlError> {
    let deadline = tokio::time::Instant::now() + OPERATION_WAIT;
    let mut op = op.clone();
    loop {
        match op["status"].as_str() {
            Some("succeeded") => {
                let outcome = op["progress"]["message"].as_str().unwrap_or("succeeded");
                return Ok(outcome.to_string());
            }
            Some("failed") => {
                let error = op["error"].as_str().unwrap_or("failed");
                // One line on the wire; one difference a line here.
                let message = error
                    .replacen("nothing was changed: ", "nothing was changed:\n  ", 1)
                    .replace("; ", "\n  ");
                return Err(CtlError::OperationFailed(message));
            }
            _ if tokio::time::Instant::now() > deadline => {
                return Err(CtlError::BadResponse {
                    url: client.url.clone(),
                    reason: format!(
                        "operation {} still running after {OPERATION_WAIT:?}",
                        op["id"]
                    ),
                });
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        let id = op["id"].as_str().unwrap_or_default().to_string();
        op = client.call("operation.get", json!({ "id": id })).await?;
    }
}

/// The password from the file, else from `ARCHIPELAGO_PASSWORD`, else none.
fn password(file: Option<&Path>) -> Result<Option<String>, CtlError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| CtlError::PasswordFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let line = text.lines().next().unwrap_or("").to_string();
        if line.starts_with("$argon2") {
            return Err(CtlError::PasswordFile {
                path: path.to_path_buf(),
                reason: "holds a password hash (serve's own file): give the password in a file \
                         of your own or in ARCHIPELAGO_PASSWORD"
                    .to_string(),
            });
        }
        return Ok(Some(line));
    }
    Ok(std::env::var("ARCHIPELAGO_PASSWORD").ok())
}

/// `package.list` as an aligned table.
pub fn package_table(list: &Value) -> String {
    let mut rows = vec![[
        "ID".to_string(),
        "NAME".to_string(),
        "VERSION".to_string(),
        "STATE".to_string(),
        "HEALTH".to_string(),
        "MEMORY".to_string(),
        "UPDATE".to_string(),
    ]];
    for p in list.as_array().map(Vec::as_slice).unwrap_or_default() {
        let s = |k: &str| p[k].as_str().unwrap_or("-").to_string();
        let version = match p["installed_version"].as_str() {
            Some(v) => v.to_string(),
            None => s("version"),
        };
        rows.push([
            s("id"),
            s("name"),
            version,
            s("state"),
            s("health"),
            memory(p["memory_limit_bytes"].as_u64().unwrap_or(0)),
            if p["update_available"].as_bool() == Some(true) {
                s("version")
            } else {
                "-".to_string()
            },
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Bytes as MiB or GiB, the way the dashboard shows them.
pub fn memory(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let mib = bytes as f64 / MIB;
    if mib >= 1024.0 {
        let gib = mib / 1024.0;
        if gib.fract() == 0.0 {
            format!("{gib:.0} GiB")
        } else {
            format!("{gib:.1} GiB")
        }
    } else {
        format!("{mib:.0} MiB")
    }
}

/// A JSON-RPC client holding one session token.
#[derive(Debug, Clone)]
pub struct RpcClient {
    url: String,
    timeout: Duration,
    token: Option<String>,
    next_id: u64,
}

impl RpcClient {
    /// A client of the server at `base_url` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base_url: &str, timeout: Duration) -> Self {
        RpcClient {
            url: format!("{}/rpc/v1", base_url.trim_end_matches('/')),
            timeout,
            token: None,
            next_id: 1,
        }
    }

    /// Logs in and keeps the token for later calls.
    pub async fn login(&mut self, password: &str) -> Result<(), CtlError> {
        let result = self
            .call("auth.login", json!({ "password": password }))
            .await?;
        self.token = result["token"].as_str().map(str::to_string);
        Ok(())
    }

    /// Calls `method` and returns its `result`, or its `error` as [`CtlError::Rpc`].
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, CtlError> {
        let mut request = json!({"jsonrpc": "2.0", "id": self.next_id, "method": method});
        self.next_id += 1;
        if !params.is_null() {
            request["params"] = params;
        }
        let bearer = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(b) = &bearer {
            headers.push(("Authorization", b.as_str()));
        }
        let body = request.to_string();
        let res = http_request("POST", &self.url, &headers, body.as_bytes(), self.timeout)
            .await
            .map_err(|e| CtlError::Http {
                url: self.url.clone(),
                reason: e.to_string(),
            })?;
        let bad = |reason: String| CtlError::BadResponse {
            url: self.url.clone(),
            reason,
        };
        let mut answer: Value = serde_json::from_slice(&res.body)
            .map_err(|e| bad(format!("HTTP {}: {e}", res.status)))?;
        if let Some(error) = answer.get("error") {
            return Err(CtlError::Rpc {
                code: error["code"].as_i64().unwrap_or(0),
                message: error["message"].as_str().unwrap_or("").to_string(),
            });
        }
        answer
            .get_mut("result")
            .map(Value::take)
            .ok_or_else(|| bad(format!("HTTP {}: no result", res.status)))
    }
}

/// One HTTP response, read to its end.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits `http://host:port/path` into the address and the path.
pub fn split_url(url: &str) -> io::Result<(String, String)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "only http:// URLs are supported",
        )
    })?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "URL without a host",
        ));
    }
    let host = if host.contains(':') && !host.ends_with(']') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    Ok((host, path.to_string()))
}

/// Sends one HTTP/1.1 request and reads the whole response, all within `timeout`.
pub async fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<HttpResponse> {
    let (host, path) = split_url(url)?;
    let exchange = async {
        let stream = TcpStream::connect(&host).await?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let res = send(stream, request).await.map_err(io::Error::other)?;
        let headers = res
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.map_err(io::Error::other)?;
        Ok(HttpResponse {
            status,
            headers,
            body: body.to_bytes().to_vec(),
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer in time"))?
}

/// Sends `request` over `stream`, an HTTP/1.1 connection of its own (hyper's client
/// handshake over a stream the caller connected), and answers the response head; the body
/// is read from the response. The connection is driven by a task that ends with it.
pub(crate) async fn send<S>(
    stream: S,
    request: Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "http connection ended");
        }
    });
    sender.send_request(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_cases() {
        let cases = [
            ("http://127.0.0.1:8080", Some(("127.0.0.1:8080", "/"))),
            (
                "http://127.0.0.1:8080/rpc/v1",
                Some(("127.0.0.1:8080", "/rpc/v1")),
            ),
            ("http://node.local/x", Some(("node.local:80", "/x"))),
            ("https://x", None),
            ("http:///x", None),
        ];
        for (url, want) in cases {
            let got = split_url(url).ok();
            let want = want.map(|(h, p)| (h.to_string(), p.to_string()));
            assert_eq!(got, want, "{url}");
        }
    }

    #[test]
    fn memory_cases() {
        let cases = [
            (512 * 1024 * 1024, "512 MiB"),
            (1024 * 1024 * 1024, "1 GiB"),
            (1536 * 1024 * 1024, "1.5 GiB"),
            (6 * 1024 * 1024, "6 MiB"),
        ];
        for (bytes, want) in cases {
            assert_eq!(memory(bytes), want);
        }
    }

    #[test]
    fn table_lists_each_package() {
        let list = json!([
            {"id": "bitcoind", "name": "Bitcoin Core", "version": "27.1", "installed_version": "27.0",
             "state": "running", "health": "healthy", "memory_limit_bytes": 2147483648u64, "update_available": true},
            {"id": "lnd", "name": "LND", "version": "0.18.3", "installed_version": null,
             "state": "not-installed", "health": "none", "memory_limit_bytes": 1073741824u64, "update_available": false}
        ]);
        let table = package_table(&list);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("ID "), "{table}");
        assert!(
            lines[1].contains("27.0") && lines[1].contains("2 GiB") && lines[1].ends_with("27.1"),
            "{table}"
        );
        assert!(
            lines[2].contains("not-installed") && lines[2].contains("0.18.3"),
            "{table}"
        );
    }
}
