//! `GET /api/logs/{id}` against the web tests' stub supervisor: the session it needs, the
//! ids and `tail` values it refuses, and the frames it sends (each line an SSE `line`
//! event with a JSON string, then `end`). The stream from a real engine is in
//! `tests/browser.rs` (the log viewer shows a line printed after it opened).

mod web_stub;

use std::time::Duration;

use archipelago::ctl::http_request;
use serde_json::Value;
use web_stub::{Harness, PASSWORD};

const T: Duration = Duration::from_secs(10);

async fn token(h: &Harness) -> String {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"auth.login","params":{{"password":"{PASSWORD}"}}}}"#
    );
    let res = http_request(
        "POST",
        &format!("{}/rpc/v1", h.base),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
        T,
    )
    .await
    .unwrap();
    let v: Value = serde_json::from_slice(&res.body).unwrap();
    v["result"]["token"].as_str().unwrap().to_string()
}

#[actix_web::test]
async fn the_log_stream_needs_a_session_and_sends_lines_then_the_end() {
    let h = Harness::start(Duration::from_millis(10), |_| {});
    let get = |path: &str, bearer: Option<String>| {
        let url = format!("{}{path}", h.base);
        async move {
            let auth = bearer.map(|t| format!("Bearer {t}"));
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("Authorization", a)])
                .unwrap_or_default();
            http_request("GET", &url, &headers, b"", T).await.unwrap()
        }
    };
    assert_eq!(get("/api/logs/a", None).await.status, 401);
    let t = token(&h).await;
    let cases = [
        ("/api/logs/a", 200),
        ("/api/logs/a?tail=0", 200),
        ("/api/logs/a?tail=5000", 200),
        ("/api/logs/nope", 404),
        ("/api/logs/Bad", 400),
        ("/api/logs/a?tail=5001", 400),
        ("/api/logs/a?tail=many", 400),
    ];
    for (path, status) in cases {
        let res = get(path, Some(t.clone())).await;
        assert_eq!(
            res.status,
            status,
            "{path}: {}",
            String::from_utf8_lossy(&res.body)
        );
    }
    let res = get("/api/logs/a", Some(t.clone())).await;
    assert_eq!(res.header("content-type"), Some("text/event-stream"));
    let text = String::from_utf8(res.body.clone()).unwrap();
    assert!(
        text.contains("event: line\ndata: \"a line 1\"\n\n"),
        "{text}"
    );
    assert!(
        text.ends_with("event: end\ndata: \"the container stopped\"\n\n"),
        "{text}"
    );
    h.handle.stop(true).await;
}
