//! The web layer's contract (§6–§7) over real HTTP, in front of a stub supervisor: every
//! method, every error code, sessions, the login slow-down, batches, the body limit, the
//! event stream and the metrics.

mod web_stub;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use archipelago::api::{Event, Package};
use archipelago::ctl::{self, http_request, CtlArgs, CtlCommand, HttpResponse, RpcClient};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use web_stub::{Harness, Push, PASSWORD};

const T: Duration = Duration::from_secs(10);

fn harness() -> Harness {
    Harness::start(Duration::from_millis(300), |_| {})
}

async fn post(h: &Harness, body: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    http_request(
        "POST",
        &format!("{}/rpc/v1", h.base),
        &all,
        body.as_bytes(),
        T,
    )
    .await
    .expect("request")
}

fn json_of(res: &HttpResponse) -> Value {
    serde_json::from_slice(&res.body).unwrap_or_else(|e| {
        panic!(
            "HTTP {} body is not JSON ({e}): {}",
            res.status,
            String::from_utf8_lossy(&res.body)
        )
    })
}

async fn login(h: &Harness) -> String {
    let res = post(h, &json!({"jsonrpc": "2.0", "id": 1, "method": "auth.login", "params": {"password": PASSWORD}}).to_string(), &[]).await;
    assert_eq!(res.status, 200);
    json_of(&res)["result"]["token"]
        .as_str()
        .expect("token")
        .to_string()
}

/// One authenticated call; returns the HTTP status and the whole JSON-RPC response.
async fn call(h: &Harness, token: &str, method: &str, params: Value) -> (u16, Value) {
    let mut req = json!({"jsonrpc": "2.0", "id": 7, "method": method});
    if !params.is_null() {
        req["params"] = params;
    }
    let bearer = format!("Bearer {token}");
    let res = post(h, &req.to_string(), &[("Authorization", &bearer)]).await;
    (res.status, json_of(&res))
}

async fn result(h: &Harness, token: &str, method: &str, params: Value) -> Value {
    let (status, v) = call(h, token, method, params).await;
    assert_eq!(status, 200, "{method}: {v}");
    assert_eq!(v["jsonrpc"], "2.0");
    assert_eq!(v["id"], 7);
    assert!(v.get("error").is_none(), "{method}: {v}");
    v["result"].clone()
}

async fn error_code(h: &Harness, token: &str, method: &str, params: Value) -> (i64, String) {
    let (_, v) = call(h, token, method, params).await;
    let code = v["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("{method}: no error in {v}"));
    (
        code,
        v["error"]["message"].as_str().unwrap_or("").to_string(),
    )
}

/// Waits (bounded) until `id` reaches `state`.
async fn wait_state(h: &Harness, token: &str, id: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let p = result(h, token, "package.get", json!({"id": id})).await;
        if p["state"] == state {
            return;
        }
        assert!(Instant::now() < deadline, "{id} never reached {state}: {p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_package_shape(p: &Value) {
    for key in [
        "id",
        "name",
        "version",
        "installed_version",
        "state",
        "desired",
        "health",
        "memory_limit_bytes",
        "image",
        "container_id",
        "update_available",
        "dependencies",
        "last_error",
        "operation",
    ] {
        assert!(p.get(key).is_some(), "package lacks {key}: {p}");
    }
}

fn assert_operation_shape(op: &Value) {
    for key in [
        "id",
        "package",
        "kind",
        "status",
        "started_at",
        "finished_at",
        "error",
        "progress",
    ] {
        assert!(op.get(key).is_some(), "operation lacks {key}: {op}");
    }
    for key in ["message", "done", "total"] {
        assert!(
            op["progress"].get(key).is_some(),
            "progress lacks {key}: {op}"
        );
    }
}

#[actix_web::test]
async fn health_needs_no_session() {
    let h = harness();
    let res = http_request("GET", &format!("{}/healthz", h.base), &[], b"", T)
        .await
        .unwrap();
    assert_eq!(res.status, 200);
    let v = json_of(&res);
    assert_eq!(v["ok"], true);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let res = post(
        &h,
        r#"{"jsonrpc":"2.0","id":1,"method":"server.health"}"#,
        &[],
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(json_of(&res)["result"], v);
}

#[actix_web::test]
async fn the_token_authenticates_as_a_header_and_a_cookie_never_does() {
    let h = harness();
    let res = post(&h, &json!({"jsonrpc": "2.0", "id": 1, "method": "auth.login", "params": {"password": PASSWORD}}).to_string(), &[]).await;
    assert_eq!(res.status, 200);
    let token = json_of(&res)["result"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        token.len() >= 32 && token.chars().all(|c| c.is_ascii_hexdigit()),
        "{token}"
    );
    assert!(
        res.header("set-cookie").is_none(),
        "login sets no cookie: the page keeps the token in sessionStorage"
    );
    // The token as a cookie only (what an app UI on another port of the host would see
    // and replay): refused, on RPC and on the event stream.
    let cookie_header = format!("archipelago_session={token}");
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"package.list"}"#;
    let res = post(&h, list, &[("Cookie", &cookie_header)]).await;
    assert_eq!(res.status, 401, "{}", String::from_utf8_lossy(&res.body));
    assert_eq!(json_of(&res)["error"]["code"], -32001);
    let res = http_request(
        "GET",
        &format!("{}/api/events", h.base),
        &[("Cookie", &cookie_header)],
        b"",
        T,
    )
    .await
    .unwrap();
    assert_eq!(res.status, 401);
    assert_eq!(json_of(&res)["error"]["code"], -32001);
    // The same token as a header works.
    let bearer = format!("Bearer {token}");
    let res = post(&h, list, &[("Authorization", &bearer)]).await;
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    assert_eq!(json_of(&res)["result"].as_array().unwrap().len(), 5);
    // Logging out ends the session and clears any cookie an older version set, keeping
    // its flags.
    let res = post(
        &h,
        r#"{"jsonrpc":"2.0","id":3,"method":"auth.logout"}"#,
        &[("Authorization", &bearer)],
    )
    .await;
    let cleared = res.header("set-cookie").unwrap();
    println!("logout: Set-Cookie: {cleared}");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=0"] {
        assert!(
            cleared.split("; ").any(|f| f == flag),
            "{flag} missing in {cleared}"
        );
    }
    let res = post(&h, list, &[("Authorization", &bearer)]).await;
    assert_eq!(res.status, 401);
}

#[actix_web::test]
async fn without_a_session_every_other_method_is_refused_with_401() {
    let h = harness();
    let methods = [
        "server.status",
        "package.list",
        "package.get",
        "package.install",
        "package.start",
        "package.stop",
        "package.restart",
        "package.upgrade",
        "package.rollback",
        "package.uninstall",
        "package.logs",
        "operation.get",
        "catalog.reload",
    ];
    for method in methods {
        for headers in [
            vec![],
            vec![("Authorization", "Bearer 00ff")],
            vec![("Cookie", "archipelago_session=nope")],
        ] {
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": {"id": "a"}})
                .to_string();
            let res = post(&h, &body, &headers).await;
            assert_eq!(res.status, 401, "{method}");
            assert_eq!(json_of(&res)["error"]["code"], -32001, "{method}");
        }
    }
    let wrong =
        json!({"jsonrpc": "2.0", "id": 1, "method": "auth.login", "params": {"password": "wrong"}});
    let res = post(&h, &wrong.to_string(), &[]).await;
    assert_eq!(res.status, 401);
    assert_eq!(json_of(&res)["error"]["code"], -32001);
    assert!(res.header("set-cookie").is_none());
}

#[actix_web::test]
async fn every_method_answers_with_the_contract_shape() {
    let h = harness();
    let token = login(&h).await;
    let t = token.as_str();

    let status = result(&h, t, "server.status", Value::Null).await;
    assert_eq!(status["engine"]["reachable"], true);
    assert_eq!(status["last_reconcile"]["took_ms"], 42);
    assert!(status["memory"].get("budget_bytes").is_some());

    let list = result(&h, t, "package.list", Value::Null).await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b", "big", "c", "slow"]);
    list.as_array()
        .unwrap()
        .iter()
        .for_each(assert_package_shape);

    let a = result(&h, t, "package.get", json!({"id": "a"})).await;
    assert_package_shape(&a);
    assert_eq!(a["state"], "stopped");

    // A mutating call answers at once with the running operation.
    let started = Instant::now();
    let r = result(&h, t, "package.start", json!({"id": "a"})).await;
    let took = started.elapsed();
    println!("package.start answered in {took:?}");
    assert!(took < Duration::from_millis(250), "{took:?}");
    assert_operation_shape(&r["operation"]);
    assert_eq!(r["operation"]["kind"], "start");
    assert_eq!(r["operation"]["status"], "running");
    let op_id = r["operation"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        result(&h, t, "package.get", json!({"id": "a"})).await["state"],
        "starting"
    );
    let op = result(&h, t, "operation.get", json!({"id": op_id})).await;
    assert_operation_shape(&op);
    wait_state(&h, t, "a", "running").await;
    assert_eq!(
        result(&h, t, "operation.get", json!({"id": op_id})).await["status"],
        "succeeded"
    );

    // Already satisfied: an operation that has already succeeded.
    let r = result(&h, t, "package.start", json!({"id": "a"})).await;
    assert_eq!(r["operation"]["status"], "succeeded");

    for (method, id, settles_in) in [
        ("package.restart", "a", "running"),
        ("package.stop", "a", "stopped"),
        ("package.upgrade", "b", "running"),
        ("package.rollback", "b", "running"),
        ("package.uninstall", "b", "not-installed"),
        ("package.install", "b", "running"),
    ] {
        let r = result(&h, t, method, json!({"id": id})).await;
        assert_operation_shape(&r["operation"]);
        assert_eq!(r["operation"]["status"], "running", "{method}");
        assert_eq!(r["operation"]["package"], id);
        wait_state(&h, t, id, settles_in).await;
    }
    let r = result(
        &h,
        t,
        "package.uninstall",
        json!({"id": "a", "purge": true}),
    )
    .await;
    assert_eq!(r["operation"]["kind"], "uninstall");
    wait_state(&h, t, "a", "not-installed").await;

    let logs = result(&h, t, "package.logs", json!({"id": "b", "tail": 2})).await;
    assert_eq!(logs, json!({"lines": ["b line 1", "b line 2"]}));
    let logs = result(&h, t, "package.logs", json!({"id": "b"})).await;
    assert_eq!(logs["lines"].as_array().unwrap().len(), 3);

    assert_eq!(
        result(&h, t, "catalog.reload", Value::Null).await,
        json!({"apps": 5})
    );
}

#[actix_web::test]
async fn framing_errors_have_their_codes() {
    let h = harness();
    let token = login(&h).await;
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    let cases: &[(&str, i64)] = &[
        ("{not json", -32700),
        ("", -32700),
        ("[]", -32600),
        ("42", -32600),
        (
            r#"{"jsonrpc":"1.0","id":1,"method":"package.list"}"#,
            -32600,
        ),
        (r#"{"id":1,"method":"package.list"}"#, -32600),
        (r#"{"jsonrpc":"2.0","id":1}"#, -32600),
        (r#"{"jsonrpc":"2.0","id":1,"method":5}"#, -32600),
        (
            r#"{"jsonrpc":"2.0","id":{},"method":"package.list"}"#,
            -32600,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"package.explode"}"#,
            -32601,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"package.get","params":["a"]}"#,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"package.get","params":"a"}"#,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"package.get","params":{}}"#,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"package.get","params":{"id":7}}"#,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"package.start","params":{"id":"../etc"}}"#,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"package.start","params":{"id":"A"}}"#,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"package.start","params":{"id":"a","x":1}}"#,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"package.logs","params":{"id":"a","tail":-1}}"#,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"package.logs","params":{"id":"a","tail":100000}}"#,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"package.uninstall","params":{"id":"a","purge":"yes"}}"#,
            -32602,
        ),
    ];
    for (body, code) in cases {
        let res = post(&h, body, &auth).await;
        assert_eq!(res.status, 200, "{body}");
        let v = json_of(&res);
        assert_eq!(v["jsonrpc"], "2.0", "{body}");
        assert_eq!(v["error"]["code"], *code, "{body}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    // The id of a well-formed request comes back with its error.
    let v = json_of(&post(&h, r#"{"jsonrpc":"2.0","id":"x-9","method":"nope"}"#, &auth).await);
    assert_eq!(v["id"], "x-9");
}

#[actix_web::test]
async fn supervisor_errors_have_their_codes() {
    let h = Harness::start(Duration::from_millis(800), |cfg| {
        cfg.rpc_timeout = Duration::from_millis(400)
    });
    let token = login(&h).await;
    let t = token.as_str();
    result(&h, t, "package.start", json!({"id": "a"})).await;
    let cases: &[(&str, Value, i64, &str)] = &[
        ("package.get", json!({"id": "zzz"}), -32602, "unknown app"),
        (
            "operation.get",
            json!({"id": "op-999"}),
            -32602,
            "unknown operation",
        ),
        ("package.stop", json!({"id": "a"}), -32002, "still running"),
        (
            "package.rollback",
            json!({"id": "big"}),
            -32002,
            "cannot rollback",
        ),
        ("package.start", json!({"id": "c"}), -32003, "dependency a"),
        (
            "package.install",
            json!({"id": "big"}),
            -32004,
            "memory budget",
        ),
        (
            "package.logs",
            json!({"id": "c"}),
            -32000,
            "engine unreachable",
        ),
        (
            "package.get",
            json!({"id": "slow"}),
            -32000,
            "did not answer within",
        ),
    ];
    for (method, params, code, needle) in cases {
        let started = Instant::now();
        let (got, message) = error_code(&h, t, method, params.clone()).await;
        assert_eq!(got, *code, "{method} {params}: {message}");
        assert!(
            message.contains(needle),
            "{method}: {message:?} lacks {needle:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{method} took {:?}",
            started.elapsed()
        );
        println!("{method} {params} -> {got} {message}");
    }
}

#[actix_web::test]
async fn batches_and_notifications() {
    let h = harness();
    let token = login(&h).await;
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "server.health"},
        {"jsonrpc": "2.0", "method": "package.list"},
        {"jsonrpc": "2.0", "id": 2, "method": "package.get", "params": {"id": "b"}},
        {"jsonrpc": "2.0", "id": 3, "method": "nope"},
        7
    ]);
    let res = post(&h, &batch.to_string(), &auth).await;
    assert_eq!(res.status, 200);
    let answers = json_of(&res);
    let answers = answers.as_array().expect("array");
    assert_eq!(answers.len(), 4, "{answers:?}");
    assert_eq!(answers[0]["result"]["ok"], true);
    assert_eq!(answers[1]["result"]["id"], "b");
    assert_eq!(answers[2]["error"]["code"], -32601);
    assert_eq!(answers[3]["error"]["code"], -32600);

    // Only notifications: no body at all.
    let res = post(&h, r#"[{"jsonrpc":"2.0","method":"server.health"}]"#, &auth).await;
    assert_eq!(res.status, 204);
    assert!(res.body.is_empty());
    let res = post(
        &h,
        r#"{"jsonrpc":"2.0","method":"package.start","params":{"id":"a"}}"#,
        &auth,
    )
    .await;
    assert_eq!(res.status, 204);
    // …but the notification did run.
    wait_state(&h, &token, "a", "running").await;

    // A batch with an unauthenticated call is answered entry by entry, with HTTP 401.
    let res = post(&h, r#"[{"jsonrpc":"2.0","id":1,"method":"server.health"},{"jsonrpc":"2.0","id":2,"method":"package.list"}]"#, &[]).await;
    assert_eq!(res.status, 401);
    let v = json_of(&res);
    assert_eq!(v[0]["result"]["ok"], true);
    assert_eq!(v[1]["error"]["code"], -32001);
}

#[actix_web::test]
async fn oversized_bodies_are_refused() {
    let h = harness();
    let padding = "x".repeat(70 * 1024);
    let body =
        json!({"jsonrpc": "2.0", "id": 1, "method": "server.health", "params": {"pad": padding}});
    let res = post(&h, &body.to_string(), &[]).await;
    assert_eq!(res.status, 413);
    let v = json_of(&res);
    assert_eq!(v["error"]["code"], -32600);
    assert!(v["error"]["message"].as_str().unwrap().contains("65536"));
}

#[actix_web::test]
async fn cross_origin_posts_are_refused() {
    let h = harness();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "auth.login", "params": {"password": PASSWORD}}).to_string();
    let res = post(&h, &body, &[("Origin", "http://evil.example")]).await;
    assert_eq!(res.status, 403);
    let v = json_of(&res);
    assert_eq!(v["error"]["code"], -32001);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cross-origin"),
        "{v}"
    );
    assert!(res.header("set-cookie").is_none());
    let same = format!("http://{}", h.addr);
    let res = post(&h, &body, &[("Origin", &same)]).await;
    assert_eq!(res.status, 200);
}

/// A raw request from a chosen loopback source address.
async fn request_from(source: IpAddr, to: SocketAddr, body: &str) -> HttpResponse {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let mut stream = socket.connect(to).await.unwrap();
    let req = format!(
        "POST /rpc/v1 HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(T, stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    parse_response(&raw).unwrap()
}

#[actix_web::test]
async fn failed_logins_slow_down_that_client_only() {
    let h = Harness::start(Duration::from_millis(300), |cfg| {
        cfg.auth.free_attempts = 2;
        cfg.auth.base_delay = Duration::from_secs(30);
    });
    let bad: IpAddr = "127.0.0.1".parse().unwrap();
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let login_with = |p: &str| {
        json!({"jsonrpc": "2.0", "id": 1, "method": "auth.login", "params": {"password": p}})
            .to_string()
    };
    for _ in 0..3 {
        let v = json_of(&request_from(bad, h.addr, &login_with("guess")).await);
        assert_eq!(v["error"]["message"], "unauthorized: wrong password", "{v}");
    }
    let started = Instant::now();
    let res = request_from(bad, h.addr, &login_with(PASSWORD)).await;
    let took = started.elapsed();
    assert_eq!(res.status, 401);
    let v = json_of(&res);
    assert_eq!(v["error"]["code"], -32001);
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("unauthorized: too many attempts, retry in "),
        "{message}"
    );
    println!("locked-out client answered in {took:?}: {message}");
    assert!(
        took < Duration::from_secs(1),
        "the refusal must not sleep: {took:?}"
    );
    // Another client logs in at once.
    let res = request_from(other, h.addr, &login_with(PASSWORD)).await;
    assert_eq!(
        json_of(&res)["result"]["token"].as_str().map(str::len),
        Some(64)
    );
}

/// An open `/api/events` response, parsed frame by frame as bytes arrive.
struct EventReader {
    stream: TcpStream,
    raw: Vec<u8>,
    parsed_upto: usize,
    events: Vec<(String, Value)>,
}

impl EventReader {
    async fn open(h: &Harness, token: Option<&str>) -> EventReader {
        let mut stream = TcpStream::connect(h.addr).await.unwrap();
        let bearer = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "GET /api/events HTTP/1.1\r\nHost: {}\r\n{bearer}Accept: text/event-stream\r\n\r\n",
            h.addr
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        EventReader {
            stream,
            raw: Vec::new(),
            parsed_upto: 0,
            events: Vec::new(),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }

    /// Reads more bytes (bounded in time); false when the peer closed.
    async fn read_more(&mut self) -> bool {
        let mut chunk = vec![0u8; 1 << 16];
        let n = tokio::time::timeout(T, self.stream.read(&mut chunk))
            .await
            .expect("events in time")
            .unwrap();
        self.raw.extend_from_slice(&chunk[..n]);
        // Parse complete frames only; chunk-size lines between frames are skipped.
        if let Some(end) = self.raw[self.parsed_upto..]
            .windows(2)
            .rposition(|w| w == b"\n\n")
        {
            let end = self.parsed_upto + end + 2;
            let text = String::from_utf8_lossy(&self.raw[self.parsed_upto..end]).into_owned();
            let mut lines = text.lines().peekable();
            while let Some(line) = lines.next() {
                if let Some(name) = line.strip_prefix("event: ") {
                    if let Some(data) = lines.peek().and_then(|l| l.strip_prefix("data: ")) {
                        self.events.push((
                            name.to_string(),
                            serde_json::from_str(data).expect("event data is JSON"),
                        ));
                    }
                }
            }
            self.parsed_upto = end;
        }
        n > 0
    }

    /// Reads until `done` holds for the events so far (at most 10 s).
    async fn until(
        &mut self,
        mut done: impl FnMut(&[(String, Value)]) -> bool,
    ) -> Vec<(String, Value)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(&self.events) {
            assert!(
                Instant::now() < deadline,
                "event stream timed out; got {:?}",
                self.events.iter().map(|e| &e.0).collect::<Vec<_>>()
            );
            assert!(self.read_more().await, "event stream closed");
        }
        self.events.clone()
    }
}

fn packages_named<'a>(events: &'a [(String, Value)], id: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|(n, p)| n == "package" && p["id"] == id)
        .map(|(_, p)| p)
        .collect()
}

#[actix_web::test]
async fn the_event_stream_sends_a_snapshot_then_changes() {
    let h = Harness::start(Duration::from_millis(300), |cfg| {
        cfg.events_keepalive = Duration::from_millis(300)
    });
    let token = login(&h).await;

    let mut unauth = EventReader::open(&h, None).await;
    unauth.read_more().await;
    assert!(
        unauth.text().starts_with("HTTP/1.1 401"),
        "{}",
        unauth.text()
    );

    let mut s = EventReader::open(&h, Some(&token)).await;
    let events = s
        .until(|e| e.iter().filter(|(n, _)| n == "package").count() >= 5)
        .await;
    let head = s.text().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert_eq!(events[0].0, "status");
    assert_eq!(events[0].1["engine"]["reachable"], true);
    let ids: Vec<&str> = events
        .iter()
        .filter(|(n, _)| n == "package")
        .map(|(_, p)| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b", "big", "c", "slow"]);

    // An event pushed through the supervisor's broadcast arrives as it is.
    let mut pushed: Package = serde_json::from_value(events[1].1.clone()).unwrap();
    pushed.last_error = Some("pushed by the test".to_string());
    let started = Instant::now();
    h.stub
        .send(Push {
            event: Event::Package(Box::new(pushed)),
            count: 1,
        })
        .await
        .unwrap();
    s.until(|e| {
        e.iter()
            .any(|(_, p)| p["last_error"] == "pushed by the test")
    })
    .await;
    println!("pushed event delivered in {:?}", started.elapsed());

    // An operation moves the app through its states, each one an event.
    result(&h, &token, "package.start", json!({"id": "a"})).await;
    let events = s
        .until(|e| {
            packages_named(e, "a")
                .iter()
                .any(|p| p["state"] == "running")
        })
        .await;
    let a_states: Vec<&str> = packages_named(&events, "a")
        .iter()
        .map(|p| p["state"].as_str().unwrap())
        .collect();
    // Snapshot, the pushed copy, then the operation's two changes.
    assert_eq!(a_states, ["stopped", "stopped", "starting", "running"]);
    let op_statuses: Vec<&str> = events
        .iter()
        .filter(|(n, _)| n == "operation")
        .map(|(_, o)| o["status"].as_str().unwrap())
        .collect();
    assert_eq!(op_statuses, ["running", "succeeded"]);

    // Keep-alive comments, each with a fresh status.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !s.text().contains(": keep-alive") {
        assert!(Instant::now() < deadline, "no keep-alive in {}", s.text());
        s.read_more().await;
    }
}

#[actix_web::test]
async fn a_lagging_event_client_gets_the_full_list_again() {
    let h = harness();
    let token = login(&h).await;
    let mut s = EventReader::open(&h, Some(&token)).await;
    let before = s
        .until(|e| e.iter().filter(|(n, _)| n == "package").count() >= 5)
        .await
        .len();
    // Far more than the channel holds, each big enough to fill the socket while unread.
    let list = result(&h, &token, "package.list", Value::Null).await;
    let mut noisy: Package = serde_json::from_value(list[0].clone()).unwrap();
    noisy.id = "noise".to_string();
    noisy.last_error = Some("x".repeat(64 * 1024));
    h.stub
        .send(Push {
            event: Event::Package(Box::new(noisy)),
            count: 200,
        })
        .await
        .unwrap();
    // The list comes again: before, between or after the noise, depending on when the
    // stream noticed it had fallen behind.
    let resent = |e: &[(String, Value)]| -> Vec<String> {
        e[before..]
            .iter()
            .filter(|(n, p)| n == "package" && p["id"] != "noise")
            .map(|(_, p)| p["id"].as_str().unwrap().to_string())
            .collect()
    };
    let events = s.until(|e| resent(e).len() >= 5).await;
    // One read may bring more than one list when the stream lagged twice.
    assert_eq!(resent(&events)[..5], ["a", "b", "big", "c", "slow"]);
    let noise = packages_named(&events, "noise").len();
    println!("lagging client: {noise} of 200 pushed events delivered, and the list sent again");
    assert!(noise < 200, "expected the client to lag");
}

#[actix_web::test]
async fn metrics_count_rpc_calls_and_show_app_states() {
    let h = harness();
    let token = login(&h).await;
    for _ in 0..3 {
        result(&h, &token, "package.list", Value::Null).await;
    }
    error_code(&h, &token, "package.get", json!({"id": "zzz"})).await;
    let res = http_request("GET", &format!("{}/metrics", h.base), &[], b"", T)
        .await
        .unwrap();
    assert_eq!(res.status, 200);
    assert!(res
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(res.body).unwrap();
    for want in [
        "archipelago_rpc_requests_total{method=\"package.list\",outcome=\"ok\"} 3",
        "archipelago_rpc_requests_total{method=\"package.get\",outcome=\"error\"} 1",
        "archipelago_rpc_requests_total{method=\"auth.login\",outcome=\"ok\"} 1",
        "archipelago_rpc_request_duration_seconds_count{method=\"package.list\"} 3",
        "archipelago_app_state{app=\"a\",state=\"stopped\"} 1",
        "archipelago_app_state{app=\"a\",state=\"running\"} 0",
        "archipelago_app_state{app=\"b\",state=\"running\"} 1",
        "archipelago_reconcile_duration_seconds 0.042",
        "archipelago_engine_reachable 1",
        "# TYPE archipelago_rpc_request_duration_seconds histogram",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}

#[actix_web::test]
async fn the_dashboard_is_served_from_the_binary() {
    let h = harness();
    let res = http_request("GET", &format!("{}/", h.base), &[], b"", T)
        .await
        .unwrap();
    assert_eq!(res.status, 200);
    assert!(res.header("content-type").unwrap().starts_with("text/html"));
    assert!(res
        .header("content-security-policy")
        .unwrap()
        .contains("frame-ancestors 'none'"));
    let html = String::from_utf8(res.body).unwrap();
    // The event stream is read with fetch (EventSource cannot send the session header).
    assert!(html.contains("fetchStream(\"/api/events\""));
    assert!(html.contains("return fetch(url, {"));
    assert!(html.contains("sessionStorage"));
    for label in [
        "Installing…",
        "Starting…",
        "Stopping…",
        "Restarting…",
        "Updating…",
        "Rolling back…",
        "Removing…",
        "Retry",
    ] {
        assert!(html.contains(label), "{label}");
    }
}

#[actix_web::test]
async fn ctl_talks_to_the_same_rpc() {
    let h = harness();
    let mut client = RpcClient::new(&h.base, T);
    let err = client.call("package.list", Value::Null).await.unwrap_err();
    assert!(
        matches!(err, ctl::CtlError::Rpc { code: -32001, .. }),
        "{err}"
    );
    client.login(PASSWORD).await.unwrap();
    let list = client.call("package.list", Value::Null).await.unwrap();
    let table = ctl::package_table(&list);
    println!("{table}");
    assert!(table.lines().nth(1).unwrap().starts_with("a "), "{table}");

    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, PASSWORD).unwrap();
    let args = |command| CtlArgs {
        url: h.base.clone(),
        password_file: Some(pw.clone()),
        timeout: T,
        command,
    };
    let ok = ctl::run_async(args(CtlCommand::Start { id: "a".into() })).await;
    assert_eq!(
        format!("{ok:?}"),
        format!("{:?}", std::process::ExitCode::SUCCESS)
    );
    let failed = ctl::run_async(args(CtlCommand::Get { id: "zzz".into() })).await;
    assert_eq!(
        format!("{failed:?}"),
        format!("{:?}", std::process::ExitCode::FAILURE)
    );
}

#[actix_web::test]
async fn serve_runs_until_its_shutdown_future_completes() {
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, PASSWORD).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let stub = actix::Actor::start(web_stub::Stub::new(Duration::from_millis(100)));
    let cfg = archipelago::web::WebConfig::new(listen, password_file);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = actix_web::rt::spawn(archipelago::web::serve(
        cfg,
        archipelago::web::Backend::from_addr(&stub),
        async {
            let _ = stopped.await;
        },
    ));
    let url = format!("http://{listen}/healthz");
    let deadline = Instant::now() + Duration::from_secs(5);
    while http_request("GET", &url, &[], b"", T).await.is_err() {
        assert!(Instant::now() < deadline, "server never came up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), server).await;
    assert!(matches!(outcome, Ok(Ok(Ok(())))), "{outcome:?}");
    assert!(http_request("GET", &url, &[], b"", Duration::from_secs(1))
        .await
        .is_err());

    // A missing password file is refused at start, naming the file.
    let cfg = archipelago::web::WebConfig::new(listen, dir.path().join("missing"));
    let err = archipelago::web::serve(cfg, archipelago::web::Backend::from_addr(&stub), async {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

/// Sends `head` (and `body`) on a fresh connection and reads the answer until it ends.
async fn raw_exchange(to: SocketAddr, head: &str, body: &[u8]) -> HttpResponse {
    let mut stream = TcpStream::connect(to).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(T, stream.read_to_end(&mut raw))
        .await
        .expect("answer in time")
        .unwrap();
    parse_response(&raw).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&raw)))
}

#[actix_web::test]
async fn a_host_not_on_the_list_gets_403_on_every_route() {
    let h = Harness::start(Duration::from_millis(300), |cfg| {
        cfg.allowed_hosts = vec!["localhost".into(), "node.example".into()];
    });
    let token = login(&h).await;
    let port = h.addr.port();
    let login_body = json!({"jsonrpc": "2.0", "id": 1, "method": "auth.login", "params": {"password": PASSWORD}}).to_string();
    let routes = [
        ("GET", "/", ""),
        ("GET", "/healthz", ""),
        ("GET", "/metrics", ""),
        ("GET", "/api/events", ""),
        ("GET", "/no/such/route", ""),
        ("POST", "/rpc/v1", login_body.as_str()),
    ];
    for host in [
        format!("evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        "rebind.attacker.test".to_string(),
    ] {
        for (method, path, body) in routes {
            let head = format!(
                "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let res = raw_exchange(h.addr, &head, body.as_bytes()).await;
            assert_eq!(res.status, 403, "{method} {path} with Host: {host}");
            assert!(res.header("set-cookie").is_none());
        }
    }
    // No Host at all (HTTP/1.0) is refused too.
    let res = raw_exchange(h.addr, "GET /healthz HTTP/1.0\r\n\r\n", b"").await;
    assert_eq!(res.status, 403);
    // Allowed: listed names (any case, a trailing dot) and IP literals.
    for host in [
        format!("localhost:{port}"),
        format!("NODE.example.:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "192.168.1.20".to_string(),
    ] {
        let head = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let res = raw_exchange(h.addr, &head, b"").await;
        assert_eq!(res.status, 200, "Host: {host}");
    }
}

#[actix_web::test]
async fn rpc_requires_a_json_content_type() {
    let h = harness();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"server.health"}"#;
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut headers = vec![];
        if let Some(ct) = ct {
            headers.push(("Content-Type", ct));
        }
        let res = http_request(
            "POST",
            &format!("{}/rpc/v1", h.base),
            &headers,
            body.as_bytes(),
            T,
        )
        .await
        .unwrap();
        assert_eq!(res.status, 415, "{ct:?}");
        assert_eq!(json_of(&res)["error"]["code"], -32600, "{ct:?}");
    }
    let res = post(&h, body, &[]).await;
    assert_eq!(res.status, 200);
    let res = http_request(
        "POST",
        &format!("{}/rpc/v1", h.base),
        &[("Content-Type", "application/json; charset=utf-8")],
        body.as_bytes(),
        T,
    )
    .await
    .unwrap();
    assert_eq!(res.status, 200);
}

#[actix_web::test]
async fn a_trickled_body_is_cut_off_while_others_are_served() {
    // One worker: the slow client and everyone else share it.
    let limit = Duration::from_secs(1);
    let h = Harness::start(Duration::from_millis(300), |cfg| cfg.body_timeout = limit);
    let token = login(&h).await;
    let mut slow = TcpStream::connect(h.addr).await.unwrap();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"server.health"}"#;
    let head = format!(
        "POST /rpc/v1 HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        h.addr,
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    // One byte every 100 ms: the whole body would take 5 s.
    let trickle = async {
        let mut raw = Vec::new();
        let mut answered = None;
        for byte in body.bytes() {
            if slow.write_all(&[byte]).await.is_err() {
                break;
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => {
                    answered.get_or_insert_with(|| started.elapsed());
                    raw.extend_from_slice(&chunk[..n]);
                }
                Err(_) => {}
            }
        }
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(T, slow.read_to_end(&mut rest)).await;
        raw.extend_from_slice(&rest);
        let answered = answered.unwrap_or_else(|| started.elapsed());
        (raw, answered)
    };
    // Meanwhile others are answered at once.
    let others = async {
        let mut slowest = Duration::ZERO;
        for _ in 0..10 {
            let t = Instant::now();
            let v = result(&h, &token, "package.list", Value::Null).await;
            assert_eq!(v.as_array().unwrap().len(), 5);
            slowest = slowest.max(t.elapsed());
            tokio::time::sleep(Duration::from_millis(80)).await;
        }
        slowest
    };
    let ((raw, cut_after), slowest) = tokio::join!(trickle, others);
    let res =
        parse_response(&raw).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&raw)));
    println!(
        "trickled body cut off after {cut_after:?} with HTTP {}; slowest other call {slowest:?}",
        res.status
    );
    assert_eq!(res.status, 408);
    assert_eq!(json_of(&res)["error"]["code"], -32600);
    assert!(
        cut_after >= limit && cut_after < limit + Duration::from_millis(500),
        "cut off after {cut_after:?}"
    );
    assert!(
        slowest < Duration::from_millis(500),
        "others waited {slowest:?}"
    );
}

#[actix_web::test]
async fn a_stream_ends_within_one_keepalive_after_logout() {
    let keepalive = Duration::from_millis(400);
    let h = Harness::start(Duration::from_millis(300), |cfg| {
        cfg.events_keepalive = keepalive
    });
    let token = login(&h).await;
    let mut s = EventReader::open(&h, Some(&token)).await;
    s.until(|e| packages_named(e, "slow").len() == 1).await;
    let (_, out) = call(&h, &token, "auth.logout", Value::Null).await;
    assert_eq!(out["result"]["ok"], true, "{out}");
    let logged_out = Instant::now();
    // The response ends: the last chunk, then (Connection: keep-alive or not) no more events.
    loop {
        if s.text().contains("\r\n0\r\n\r\n") {
            break;
        }
        assert!(
            logged_out.elapsed() < keepalive * 3,
            "stream still open {:?} after logout",
            logged_out.elapsed()
        );
        if !s.read_more().await {
            break;
        }
    }
    let ended = logged_out.elapsed();
    println!("event stream ended {ended:?} after logout (keep-alive {keepalive:?})");
    assert!(
        ended <= keepalive + Duration::from_millis(150),
        "ended {ended:?} after logout"
    );
}

#[actix_web::test]
async fn a_session_holds_at_most_four_streams() {
    // A closed client is noticed at the next write: a short keep-alive frees slots soon.
    let h = Harness::start(Duration::from_millis(300), |cfg| {
        cfg.events_keepalive = Duration::from_millis(300)
    });
    let token = login(&h).await;
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut s = EventReader::open(&h, Some(&token)).await;
        s.until(|e| packages_named(e, "slow").len() == 1).await;
        open.push(s);
    }
    let res = http_request(
        "GET",
        &format!("{}/api/events", h.base),
        &[("Authorization", &format!("Bearer {token}"))],
        b"",
        T,
    )
    .await
    .unwrap();
    assert_eq!(res.status, 429);
    assert_eq!(json_of(&res)["error"]["code"], -32001);
    // Closing one frees its slot.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = EventReader::open(&h, Some(&token)).await;
        s.read_more().await;
        if s.text().starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "{}", s.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn metrics_are_for_loopback_or_the_scrape_token() {
    let h = Harness::start(Duration::from_millis(300), |cfg| {
        cfg.trusted_proxy = Some("127.0.0.1".parse().unwrap());
        cfg.metrics_token = Some("scrape-token".into());
    });
    let url = format!("{}/metrics", h.base);
    let get = |headers: Vec<(&'static str, &'static str)>| {
        let url = url.clone();
        async move { http_request("GET", &url, &headers, b"", T).await.unwrap() }
    };
    // Straight from loopback: served.
    assert_eq!(get(vec![]).await.status, 200);
    // From a LAN client through the trusted proxy: refused, unless it has the token.
    let lan = ("X-Forwarded-For", "203.0.113.9");
    assert_eq!(get(vec![lan]).await.status, 403);
    assert_eq!(
        get(vec![lan, ("Authorization", "Bearer wrong")])
            .await
            .status,
        403
    );
    let res = get(vec![lan, ("Authorization", "Bearer scrape-token")]).await;
    assert_eq!(res.status, 200);
    assert!(String::from_utf8_lossy(&res.body).contains("archipelago_rpc_requests_total"));
}

#[actix_web::test]
async fn login_failures_behind_a_trusted_proxy_count_per_forwarded_client() {
    let h = Harness::start(Duration::from_millis(300), |cfg| {
        cfg.trusted_proxy = Some("127.0.0.1".parse().unwrap());
        cfg.auth.free_attempts = 1;
        cfg.auth.base_delay = Duration::from_secs(30);
    });
    let login_as = |client: &'static str, password: &'static str| {
        let h = &h;
        async move {
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": "auth.login", "params": {"password": password}}).to_string();
            json_of(&post(h, &body, &[("X-Forwarded-For", client)]).await)
        }
    };
    for _ in 0..2 {
        login_as("198.51.100.1", "guess").await;
    }
    let v = login_as("198.51.100.1", PASSWORD).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("unauthorized: too many attempts"),
        "{v}"
    );
    // Another client behind the same proxy is not held back.
    let v = login_as("198.51.100.2", PASSWORD).await;
    assert_eq!(v["result"]["token"].as_str().map(str::len), Some(64), "{v}");
}

#[actix_web::test]
async fn archipelago_passwd_hashes_the_password_and_ends_every_session() {
    let h = Harness::start(Duration::from_millis(300), |cfg| {
        cfg.events_keepalive = Duration::from_millis(300)
    });
    let token = login(&h).await;
    let mut events = EventReader::open(&h, Some(&token)).await;
    events.until(|e| packages_named(e, "slow").len() == 1).await;
    // A config naming the harness's password file.
    let password_file = h.password_file.clone();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "apps_dir: apps\ndata_dir: data\nauth:\n  password_file: {}\n",
            password_file.display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_archipelago"))
        .args(["passwd", "--config"])
        .arg(&config)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"a brand new password\n").unwrap();
    }
    assert!(child.wait().unwrap().success());
    let line = std::fs::read_to_string(&password_file).unwrap();
    assert!(line.starts_with("$argon2id$"), "{line}");
    assert!(!line.contains("brand new"), "{line}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&password_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The old token is refused at once, the old password too; the new one works.
    let (status, v) = call(&h, &token, "package.list", Value::Null).await;
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (401, json!(-32001)),
        "{v}"
    );
    let old = json!({"jsonrpc": "2.0", "id": 1, "method": "auth.login", "params": {"password": PASSWORD}}).to_string();
    assert_eq!(post(&h, &old, &[]).await.status, 401);
    let new = json!({"jsonrpc": "2.0", "id": 1, "method": "auth.login", "params": {"password": "a brand new password"}}).to_string();
    assert_eq!(post(&h, &new, &[]).await.status, 200);
    // The open stream ends at its next keep-alive.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !events.text().contains("\r\n0\r\n\r\n") {
        assert!(
            Instant::now() < deadline,
            "the stream outlived the password change"
        );
        if !events.read_more().await {
            break;
        }
    }
}

/// A TLS client that trusts exactly the certificate whose SHA-256 is `sha256`.
#[derive(Debug)]
struct Pinned {
    sha256: Vec<u8>,
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use sha2::Digest;
        if sha2::Sha256::digest(end_entity.as_ref()).as_slice() == self.sha256 {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "certificate fingerprint mismatch".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// One HTTP/1.1 exchange over TLS, trusting only the certificate with fingerprint `pin`
/// (`AB:CD:…`).
async fn https_exchange(
    to: SocketAddr,
    pin: &str,
    head: &str,
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let sha256 = hex::decode(pin.replace(':', "")).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(Pinned { sha256, provider }))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(to).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio::time::timeout(T, connector.connect(name, tcp)).await??;
    tls.write_all(head.as_bytes()).await?;
    tls.write_all(body).await?;
    let mut raw = Vec::new();
    // A server closing without close_notify still leaves a whole response.
    let _ = tokio::time::timeout(T, tls.read_to_end(&mut raw)).await?;
    parse_response(&raw)
}

#[actix_web::test]
async fn https_serves_the_same_api_with_secure_cookies_and_a_pinnable_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let identity = archipelago::web::tls::TlsIdentity::load_or_create(
        None,
        None,
        certs.path(),
        &["localhost".to_string()],
    )
    .unwrap();
    let pin = identity.fingerprint_sha256.clone();
    let h = Harness::start(Duration::from_millis(300), |cfg| {
        cfg.tls = Some(archipelago::web::TlsListen {
            listen: "127.0.0.1:0".parse().unwrap(),
            identity,
        });
    });
    let https = h.https.expect("an HTTPS listener");
    let rpc = |body: String, bearer: Option<String>, host: String| {
        let pin = pin.clone();
        async move {
            let authz = bearer
                .map(|t| format!("Authorization: Bearer {t}\r\n"))
                .unwrap_or_default();
            let head = format!(
                "POST /rpc/v1 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\n{authz}Content-Length: {}\r\n\r\n",
                body.len()
            );
            https_exchange(https, &pin, &head, body.as_bytes())
                .await
                .expect("HTTPS exchange")
        }
    };
    let here = format!("localhost:{}", https.port());
    let login = json!({"jsonrpc": "2.0", "id": 1, "method": "auth.login", "params": {"password": PASSWORD}}).to_string();
    let res = rpc(login.clone(), None, here.clone()).await;
    assert_eq!(res.status, 200);
    let token = json_of(&res)["result"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(res.header("set-cookie").is_none());
    let status = json!({"jsonrpc": "2.0", "id": 2, "method": "server.status"}).to_string();
    let res = rpc(status, Some(token.clone()), here.clone()).await;
    let v = json_of(&res);
    assert_eq!(v["result"]["tls"]["fingerprint_sha256"], json!(pin), "{v}");
    assert_eq!(
        v["result"]["tls"]["listen"],
        json!(https.to_string()),
        "{v}"
    );
    // Over HTTPS the cookie logout clears carries Secure.
    let logout = json!({"jsonrpc": "2.0", "id": 3, "method": "auth.logout"}).to_string();
    let res = rpc(logout, Some(token), here.clone()).await;
    let cookie = res.header("set-cookie").unwrap().to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(
            cookie.split("; ").any(|f| f == flag),
            "{flag} missing: {cookie}"
        );
    }
    // The Host allow-list holds on HTTPS as well.
    let res = rpc(login, None, "evil.example".to_string()).await;
    assert_eq!(res.status, 403);
    // A client pinning another fingerprint does not get through the handshake.
    let wrong = pin.replace(&pin[..2], if &pin[..2] == "00" { "01" } else { "00" });
    let head = format!("GET /healthz HTTP/1.1\r\nHost: {here}\r\nConnection: close\r\n\r\n");
    let err = https_exchange(https, &wrong, &head, b"")
        .await
        .expect_err("a wrong pin fails");
    assert!(err.to_string().contains("fingerprint mismatch"), "{err}");
    // The plain listener is still there.
    let res = http_request("GET", &format!("{}/healthz", h.base), &[], b"", T)
        .await
        .unwrap();
    assert_eq!(res.status, 200);
}

/// A connection from `source` that sends `GET /healthz`; the status, or `None` when the
/// server closed it without an answer.
async fn healthz_from(source: IpAddr, to: SocketAddr) -> Option<u16> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let mut stream = socket.connect(to).await.ok()?;
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\r\n");
    // The server may have shut the connection already: a failed write is a refusal too.
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(T, stream.read_to_end(&mut raw))
        .await
        .expect("an answer or a close in time");
    parse_response(&raw).ok().map(|r| r.status)
}

#[actix_web::test]
async fn connections_are_capped_per_client_address() {
    let h = Harness::start(Duration::from_millis(300), |cfg| {
        cfg.per_client = archipelago::web::limits::ConnPolicy {
            max_open: 3,
            max_new: 8,
            window: Duration::from_secs(60),
        };
    });
    let greedy: IpAddr = "127.0.0.2".parse().unwrap();
    // Three idle connections held open: the fourth is closed without an answer.
    let mut held = Vec::new();
    for _ in 0..3 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(greedy, 0)).unwrap();
        held.push(socket.connect(h.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        healthz_from(greedy, h.addr).await,
        None,
        "a fourth open connection"
    );
    // Other addresses, and loopback's own (ctl), are served meanwhile.
    assert_eq!(
        healthz_from("127.0.0.3".parse().unwrap(), h.addr).await,
        Some(200)
    );
    assert_eq!(
        healthz_from("127.0.0.1".parse().unwrap(), h.addr).await,
        Some(200)
    );
    // Closing one frees its place.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    while healthz_from(greedy, h.addr).await != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the closed connection's place was not freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(held);
    // The rate: eight new connections per minute from one address, then none.
    let eager: IpAddr = "127.0.0.4".parse().unwrap();
    for i in 0..8 {
        assert_eq!(
            healthz_from(eager, h.addr).await,
            Some(200),
            "connection {i}"
        );
    }
    assert_eq!(
        healthz_from(eager, h.addr).await,
        None,
        "the ninth within a minute"
    );
    assert_eq!(
        healthz_from("127.0.0.1".parse().unwrap(), h.addr).await,
        Some(200)
    );
}

// A raw HTTP/1.1 response reader, for the exchanges above that send hand-made requests
// (bad heads, chosen source addresses, TLS): the product's client, hyper, never shows
// a malformed answer to its caller.

/// Parses a response head: status, headers, and where the body starts.
fn parse_head(raw: &[u8]) -> std::io::Result<(HttpResponse, usize)> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("incomplete response head"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("response head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let res = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    Ok((res, end + 4))
}

/// Parses a complete HTTP/1.1 response (plain, `Content-Length` or chunked body).
fn parse_response(raw: &[u8]) -> std::io::Result<HttpResponse> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let (mut res, start) = parse_head(raw)?;
    let rest = &raw[start..];
    res.body = if is_chunked(&res) {
        dechunk(rest).ok_or_else(|| bad("bad chunked body"))?
    } else if let Some(len) = res.header("content-length").and_then(|v| v.parse().ok()) {
        rest.get(..len)
            .ok_or_else(|| bad("body shorter than content-length"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(res)
}

fn is_chunked(res: &HttpResponse) -> bool {
    res.header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
}

/// Decodes a chunked body; `None` when it is malformed or cut short.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

#[test]
fn response_bodies() {
    let cases: [(&[u8], &[u8]); 3] = [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi", b"hi"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3;x=y\r\nllo\r\n0\r\n\r\n", b"hello"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
    ];
    for (raw, body) in cases {
        let res = parse_response(raw).unwrap();
        assert_eq!(res.body, body);
    }
    assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nhi").is_err());
    assert!(parse_response(b"garbage").is_err());
}
