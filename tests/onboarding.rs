//! First-run onboarding against a real `archipelago serve` started without a password file:
//! the `auth.setup` rules over RPC (wrong code, the attempt budget, a new code after a
//! restart, one setup only, the normal login afterwards), and the onboarding page in a real
//! headless Chromium over HTTPS (pinned by the certificate's public key), which sets the
//! password and lands on the dashboard, then the normal login.
//!
//! `on_the_node_image` drives the same page on a booted node image; it is run by
//! `image-recipe/smoke-test.sh` (which passes the node's URL, SPKI pin and setup code) and is
//! ignored otherwise.

mod common;
#[path = "web_stub/serve.rs"]
mod serve;

use std::path::{Path, PathBuf};
use std::time::Duration;

use archipelago::ctl::http_request;
use serde_json::{json, Value};

use common::browser::Browser;
use common::docker_host;
use serve::{require_engine, ServeNode, Server};

/// The W3C WebDriver key under which an element reference comes back.
const T: Duration = Duration::from_secs(30);
/// The password the tests choose (at least 10 characters).
const NEW_PASSWORD: &str = "correct horse battery";

/// A test node whose serve starts with no password file: onboarding is open.
fn node_without_password(tag: &str) -> ServeNode {
    let node = ServeNode::new(tag);
    std::fs::remove_file(node.dir.path().join("password")).unwrap();
    node
}

/// The setup code serve wrote to data_dir, after checking that its log shows it too.
fn setup_code(node: &ServeNode, server: &Server) -> String {
    let file = node.dir.path().join("data/setup-code");
    let code = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .trim()
        .to_string();
    assert!(
        server
            .log()
            .iter()
            .any(|l| l.contains(&format!("setup code {code}"))),
        "the log does not show the setup code {code}"
    );
    code
}

/// One JSON-RPC call over the plain loopback listener: `(HTTP status, answer)`.
async fn rpc(base: &str, method: &str, params: Value, token: Option<&str>) -> (u16, Value) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(b) = &bearer {
        headers.push(("Authorization", b.as_str()));
    }
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let res = http_request(
        "POST",
        &format!("{base}/rpc/v1"),
        &headers,
        body.to_string().as_bytes(),
        T,
    )
    .await
    .unwrap_or_else(|e| panic!("{method}: {e}"));
    let v: Value = serde_json::from_slice(&res.body).expect("JSON answer");
    (res.status, v)
}

/// `auth.setup` with `code` and `password`, without a session.
async fn setup(base: &str, code: &str, password: &str) -> (u16, Value) {
    let params = json!({"code": code, "password": password});
    rpc(base, "auth.setup", params, None).await
}

/// The error message of an answer, failing when it succeeded.
fn error(answer: &(u16, Value)) -> (u16, i64, String) {
    let e = &answer.1["error"];
    assert!(!e.is_null(), "expected an error: {}", answer.1);
    (
        answer.0,
        e["code"].as_i64().unwrap(),
        e["message"].as_str().unwrap().to_string(),
    )
}

async fn page(base: &str) -> String {
    let res = http_request("GET", &format!("{base}/"), &[], b"", T)
        .await
        .unwrap();
    assert_eq!(res.status, 200);
    String::from_utf8(res.body).unwrap()
}

#[actix_web::test]
async fn setup_rules_over_rpc() {
    require_engine().await;
    let node = node_without_password("onb");
    let server = node.serve_tls(&docker_host(), &[]);
    let base = server.base.clone();
    let code = setup_code(&node, &server);
    let code_file = node.dir.path().join("data/setup-code");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&code_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the setup code file is root-only");
    assert_eq!(code.len(), 14, "{code}");

    // While onboarding is open: "/" is the onboarding page and nobody can log in.
    assert!(page(&base).await.contains("id=\"setup\""));
    let (status, code_no, msg) =
        error(&rpc(&base, "auth.login", json!({"password": "x"}), None).await);
    assert_eq!((status, code_no), (401, -32001));
    assert!(msg.contains("no password is set yet"), "{msg}");

    // A short password is refused without spending an attempt, even with the right code.
    let (_, code_no, msg) = error(&setup(&base, &code, "short").await);
    assert_eq!(code_no, -32602, "{msg}");
    assert!(msg.contains("at least 10 characters"), "{msg}");

    // Wrong codes: refused, counting down, and then onboarding locks until a restart.
    for left in (1..10).rev() {
        let (status, code_no, msg) = error(&setup(&base, "AAAA-AAAA-AAAA", NEW_PASSWORD).await);
        assert_eq!((status, code_no), (401, -32001), "{msg}");
        assert!(
            msg.contains(&format!("wrong setup code ({left} attempts left)")),
            "{msg}"
        );
    }
    let (_, _, msg) = error(&setup(&base, "AAAA-AAAA-AAAA", NEW_PASSWORD).await);
    assert!(msg.contains("too many wrong setup codes"), "{msg}");
    let (_, _, msg) = error(&setup(&base, &code, NEW_PASSWORD).await);
    assert!(
        msg.contains("too many wrong setup codes"),
        "the right code after the budget: {msg}"
    );
    assert!(
        !code_file.exists(),
        "a locked onboarding leaves no code behind"
    );
    assert!(!node.dir.path().join("password").exists());
    drop(server);

    // A restart opens onboarding again with a new code.
    let server = node.serve_tls(&docker_host(), &[]);
    let base = server.base.clone();
    let new_code = setup_code(&node, &server);
    assert_ne!(new_code, code);
    let (_, _, msg) = error(&setup(&base, &code, NEW_PASSWORD).await);
    assert!(
        msg.contains("wrong setup code (9 attempts left)"),
        "the old code: {msg}"
    );
    // Case, spaces and dashes as typed do not matter.
    let typed = new_code.to_lowercase().replace('-', " ");
    let (status, answer) = setup(&base, &typed, NEW_PASSWORD).await;
    assert_eq!(status, 200, "{answer}");
    let token = answer["result"]["token"].as_str().expect("a session token");
    // The token is a session like auth.login's.
    let (status, answer) = rpc(&base, "server.status", json!({}), Some(token)).await;
    assert_eq!(status, 200, "{answer}");
    // The password file holds the argon2 hash, the code is gone, "/" is the dashboard.
    let stored = std::fs::read_to_string(node.dir.path().join("password")).unwrap();
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    assert!(!stored.contains(NEW_PASSWORD));
    assert!(!code_file.exists());
    assert!(page(&base).await.contains("id=\"login\""));

    // Setup works once; then the normal login.
    let (status, code_no, msg) = error(&setup(&base, &new_code, "another password").await);
    assert_eq!((status, code_no), (401, -32001));
    assert!(msg.contains("a password is already set"), "{msg}");
    let (_, code_no, _) = error(
        &rpc(
            &base,
            "auth.login",
            json!({"password": "another password"}),
            None,
        )
        .await,
    );
    assert_eq!(code_no, -32001);
    let (status, answer) = rpc(&base, "auth.login", json!({"password": NEW_PASSWORD}), None).await;
    assert_eq!(status, 200, "{answer}");
    drop(server);

    // After a restart with the password set, no onboarding and no new code.
    let server = node.serve_tls(&docker_host(), &[]);
    assert!(!code_file.exists());
    assert!(page(&server.base).await.contains("id=\"login\""));
    let (status, answer) = rpc(
        &server.base,
        "auth.login",
        json!({"password": NEW_PASSWORD}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
}

#[actix_web::test]
async fn onboarding_page_in_the_browser() {
    require_engine().await;
    let node = node_without_password("onbb");
    let server = node.serve_tls(&docker_host(), &[]);
    let https = server
        .https
        .clone()
        .unwrap_or_else(|| panic!("no HTTPS line in the log:\n{}", server.log().join("\n")));
    let code = setup_code(&node, &server);
    let b = Browser::start(Some(&https.spki)).await;

    // A wrong code shows the node's error and sets nothing.
    b.goto(&format!("{}/", https.base)).await;
    wait_form(&b).await;
    fill(&b, "ZZZZ-ZZZZ-ZZZZ", NEW_PASSWORD, NEW_PASSWORD).await;
    b.wait_for(
        "the wrong-code error",
        "document.getElementById('error').textContent.includes('wrong setup code')",
        T,
    )
    .await;
    // Two different passwords are caught on the page.
    fill(&b, &code, NEW_PASSWORD, "something else entirely").await;
    b.wait_for(
        "the mismatch error",
        "document.getElementById('error').textContent.includes('differ')",
        T,
    )
    .await;
    assert!(!node.dir.path().join("password").exists());

    let shot = common::target_dir().join("onboarding-local.png");
    onboard(&b, &https.base, &code, NEW_PASSWORD, Some(&shot)).await;
    let stored = std::fs::read_to_string(node.dir.path().join("password")).unwrap();
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    log_out_and_in(&b, NEW_PASSWORD).await;
}

/// The onboarding of a booted node image (see `image-recipe/smoke-test.sh`), from
/// ARCHIPELAGO_NODE_URL, ARCHIPELAGO_NODE_SPKI, ARCHIPELAGO_NODE_SETUP_CODE and
/// ARCHIPELAGO_NODE_PASSWORD; the screenshot of the filled-in page goes to
/// ARCHIPELAGO_NODE_SCREENSHOT.
#[actix_web::test]
#[ignore = "needs a booted node image: run image-recipe/smoke-test.sh"]
async fn on_the_node_image() {
    let var = |name: &str| {
        std::env::var(name)
            .unwrap_or_else(|_| panic!("{name} is not set: run image-recipe/smoke-test.sh"))
    };
    let (base, spki, code, password) = (
        var("ARCHIPELAGO_NODE_URL"),
        var("ARCHIPELAGO_NODE_SPKI"),
        var("ARCHIPELAGO_NODE_SETUP_CODE"),
        var("ARCHIPELAGO_NODE_PASSWORD"),
    );
    let shot = PathBuf::from(var("ARCHIPELAGO_NODE_SCREENSHOT"));
    let b = Browser::start(Some(&spki)).await;
    b.goto(&format!("{base}/")).await;
    onboard(&b, &base, &code, &password, Some(&shot)).await;
    println!("onboarding done on {base}: password set, dashboard shown");
    log_out_and_in(&b, &password).await;
    println!("logged out and in again with the new password on {base}");
}

// ---- Page-driving helpers: independent of the server behind `base`. ----

async fn wait_form(b: &Browser) {
    b.wait_for(
        "the onboarding form",
        "document.getElementById('setup') !== null && document.getElementById('code') !== null",
        T,
    )
    .await;
}

/// Types the code and the password twice into the onboarding form (clearing it first) and
/// submits it.
async fn fill(b: &Browser, code: &str, password: &str, again: &str) {
    for (id, text) in [("code", code), ("password", password), ("password2", again)] {
        b.exec(&format!(
            "document.getElementById('{id}').value = ''; return 1;"
        ))
        .await;
        let field = b.find(&format!("#{id}")).await;
        b.type_into(&field, text).await;
    }
    let button = b.find("#setup-button").await;
    b.click(&button).await;
}

/// Sets the password through the onboarding page at `base` and waits for the dashboard
/// that follows; screenshots the filled-in page to `shot` first.
async fn onboard(b: &Browser, base: &str, code: &str, password: &str, shot: Option<&Path>) {
    b.goto(&format!("{base}/")).await;
    wait_form(b).await;
    for (id, text) in [
        ("code", code),
        ("password", password),
        ("password2", password),
    ] {
        let field = b.find(&format!("#{id}")).await;
        b.type_into(&field, text).await;
    }
    if let Some(shot) = shot {
        b.screenshot(shot).await;
        println!("screenshot of the onboarding page: {}", shot.display());
    }
    let button = b.find("#setup-button").await;
    b.click(&button).await;
    b.wait_for(
        "the dashboard after onboarding",
        "document.getElementById('dashboard') !== null && !document.getElementById('dashboard').hidden \
         && sessionStorage.getItem('archipelago.token') !== null",
        T,
    )
    .await;
}

/// Logs out through the dashboard and back in through its login form.
async fn log_out_and_in(b: &Browser, password: &str) {
    let logout = b.find("#logout").await;
    b.click(&logout).await;
    b.wait_for(
        "the login form",
        "!document.getElementById('login').hidden && sessionStorage.getItem('archipelago.token') === null",
        T,
    )
    .await;
    b.submit_login(
        password,
        "the dashboard after login",
        "!document.getElementById('dashboard').hidden && sessionStorage.getItem('archipelago.token') !== null",
        T,
    )
    .await;
}
