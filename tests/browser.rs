//! The dashboard in a real headless Chromium, driven over WebDriver (chromedriver), against
//! a real `archipelago serve` and the test dockerd: log in through the form, press Start on
//! a stopped app whose start waits about 3 s for its health check, and watch the primary
//! button follow contract §8 from the event stream alone. A second test points the
//! supervisor at an engine socket that does not exist and checks the banner. A third walks
//! through what docs/dashboard.md shows (Open, memory bars, pull progress, the live log
//! viewer, confirmations, phone width) and takes its screenshots. The page-driving
//! helpers take any base URL.

mod common;
#[path = "web_stub/serve.rs"]
mod serve;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use archipelago::ctl::http_request;
use serde_json::{json, Value};

use common::docker_host;
use serve::{free_port, require_engine, wait_state, ServeNode, PASSWORD};

use common::browser::Browser;

const T: Duration = Duration::from_secs(30);

// ---- Page-driving helpers: independent of the backend behind `base`. ----

fn primary_selector(app: &str) -> String {
    format!("[data-app=\"{app}\"] [data-role=\"primary\"]")
}

/// Opens the dashboard and logs in through the form.
async fn log_in(b: &Browser, base: &str, password: &str) {
    b.goto(&format!("{base}/")).await;
    b.wait_for(
        "the login form",
        "!document.getElementById('login').hidden",
        Duration::from_secs(10),
    )
    .await;
    b.submit_login(
        password,
        "the app list",
        "document.querySelectorAll('[data-app]').length > 0",
        Duration::from_secs(10),
    )
    .await;
}

/// The label and enabled flag of an app's primary button.
async fn primary(b: &Browser, app: &str) -> (String, bool) {
    let v = b
        .exec(&format!(
            "const e = document.querySelector('{}'); return e ? [e.textContent, !e.disabled] : null;",
            primary_selector(app).replace('\'', "\\'")
        ))
        .await;
    (
        v[0].as_str().unwrap_or("").to_string(),
        v[1].as_bool().unwrap_or(false),
    )
}

/// Waits until the app's primary button reads `label` with the given enabled flag.
async fn wait_primary(b: &Browser, app: &str, label: &str, enabled: bool, limit: Duration) {
    let sel = primary_selector(app).replace('\'', "\\'");
    let script = format!(
        "(() => {{ const e = document.querySelector('{sel}'); return !!e && e.textContent === {label:?} && e.disabled === {}; }})()",
        !enabled
    );
    b.wait_for(
        &format!("{app} primary button to read {label:?}"),
        &script,
        limit,
    )
    .await;
}

/// Records, in page time, the click on the app's primary button and the first moment it
/// reads `label` and is disabled, so the latency is measured inside the browser.
async fn watch_primary(b: &Browser, app: &str, label: &str) {
    let sel = primary_selector(app).replace('\'', "\\'");
    b.exec(&format!(
        "window.__watch = {{}};
         document.addEventListener('click', (e) => {{
           if (!window.__watch.click && e.target.closest('{sel}')) window.__watch.click = performance.now();
         }}, true);
         const check = () => {{
           const e = document.querySelector('{sel}');
           if (e && e.disabled && !window.__watch.disabled) window.__watch.disabled = performance.now();
           if (e && e.textContent === {label:?} && e.disabled && !window.__watch.label) window.__watch.label = performance.now();
         }};
         new MutationObserver(check).observe(document.getElementById('apps'),
           {{subtree: true, childList: true, characterData: true, attributes: true}});
         return true;"
    ))
    .await;
}

/// Milliseconds from the click to the disabled button and to the expected label.
async fn watched_latency(b: &Browser) -> (f64, f64) {
    let v = b
        .wait_for(
            "the watched label",
            "window.__watch && window.__watch.label && window.__watch",
            Duration::from_secs(5),
        )
        .await;
    let click = v["click"].as_f64().expect("click recorded");
    (
        v["disabled"].as_f64().unwrap() - click,
        v["label"].as_f64().unwrap() - click,
    )
}

#[actix_web::test]
async fn start_button_follows_the_state_table() {
    require_engine().await;
    let node = ServeNode::new("br");
    let port = free_port();
    // Serves HTTP only after 3 s, so the real start (which waits for health) takes that
    // long; exits at once on SIGTERM so the stop below is quick.
    let web = node.app(
        "web",
        "1",
        &format!(
            "trap 'exit 0' TERM; sleep 3 & wait $!; mkdir -p /www; echo ok > /www/index.html; \
             httpd -f -p 127.0.0.1:{port} -h /www & wait $!"
        ),
        &format!(
            "  network: host\n  stop_timeout: 5s\n  health:\n    http: {{port: {port}, path: /}}\n    interval: 200ms\n    start_period: 10s\n"
        ),
    );
    let spare = node.app("spare", "1", "sleep 3600", "  network: none\n");
    let server = node.serve_tls(&docker_host(), &[]);
    let https = server
        .https
        .clone()
        .unwrap_or_else(|| panic!("no HTTPS line in the log:\n{}", server.log().join("\n")));
    println!(
        "HTTPS at {} certificate SHA-256 {} (SPKI {})",
        https.base, https.sha256, https.spki
    );
    // serve replaced the clear password it was given by an argon2 hash, and made its
    // certificate in data_dir with the key readable by its owner only.
    let stored = std::fs::read_to_string(node.dir.path().join("password")).unwrap();
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    assert!(!stored.contains(PASSWORD));
    use std::os::unix::fs::PermissionsExt;
    let key = node.dir.path().join("data/tls/key.pem");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", key.display());
    // `archipelago ctl status`, over the loopback HTTP listener, shows the fingerprint.
    let status = Command::new(env!("CARGO_BIN_EXE_archipelago"))
        .args(["ctl", "--url", &server.base, "status"])
        .env("ARCHIPELAGO_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        out.contains(&https.sha256),
        "ctl status lacks the fingerprint: {out}"
    );
    let mut c = server.client().await;

    // Installed and stopped: install (which starts it), then stop.
    let op = c
        .call("package.install", json!({ "id": web }))
        .await
        .unwrap();
    assert_eq!(op["operation"]["status"], "running", "{op}");
    wait_state(&mut c, &web, "running", Duration::from_secs(60)).await;
    c.call("package.stop", json!({ "id": web })).await.unwrap();
    wait_state(&mut c, &web, "stopped", Duration::from_secs(30)).await;

    // Over HTTPS, the self-signed certificate pinned by its public key's fingerprint.
    let b = Browser::start(Some(&https.spki)).await;
    log_in(&b, &https.base, PASSWORD).await;
    let page = b.exec("return [location.protocol, sessionStorage.getItem('archipelago.token') !== null, document.cookie]").await;
    assert_eq!(
        page,
        json!(["https:", true, ""]),
        "token in sessionStorage, no cookie"
    );
    wait_primary(&b, &web, "Start", true, Duration::from_secs(10)).await;
    wait_primary(&b, &spare, "Install", true, Duration::from_secs(10)).await;
    let memory = b
        .exec(&format!(
            "return document.querySelector('[data-app=\"{web}\"] [data-role=\"memory\"]').textContent"
        ))
        .await;
    assert_eq!(memory, "64 MiB");

    watch_primary(&b, &web, "Starting…").await;
    let button = b.find(&primary_selector(&web)).await;
    let clicked = Instant::now();
    b.click(&button).await;
    let click_call = clicked.elapsed();
    let (disabled_ms, label_ms) = watched_latency(&b).await;
    println!(
        "click → disabled {disabled_ms:.1} ms, click → \"Starting…\" {label_ms:.1} ms (page time); \
         WebDriver click call took {click_call:?}"
    );
    assert!(label_ms < 200.0, "\"Starting…\" took {label_ms:.1} ms");
    assert!(disabled_ms < 200.0, "disabling took {disabled_ms:.1} ms");
    assert_eq!(primary(&b, &web).await, ("Starting…".to_string(), false));
    let progress = b
        .exec(&format!(
            "return document.querySelector('[data-app=\"{web}\"] [data-role=\"progress\"]').hidden"
        ))
        .await;
    assert_eq!(progress, false, "progress shows while starting");

    wait_primary(&b, &web, "Stop", true, Duration::from_secs(30)).await;
    let took = clicked.elapsed();
    println!("\"Stop\" {took:?} after the click (the app serves after 3 s)");
    assert!(
        took >= Duration::from_millis(2500),
        "running after {took:?}: the start did not wait for health"
    );
    let p = serve::get(&mut c, &web).await;
    assert_eq!(
        (&p["state"], &p["health"]),
        (&json!("running"), &json!("healthy"))
    );
    // A request already satisfied is answered with an operation that already succeeded.
    let again = c.call("package.start", json!({ "id": web })).await.unwrap();
    assert_eq!(
        (
            &again["operation"]["status"],
            &again["operation"]["progress"]["message"]
        ),
        (&json!("succeeded"), &json!("already done")),
        "{again}"
    );
    let status = c.call("server.status", Value::Null).await.unwrap();
    assert_eq!(
        status["memory"]["reserved_bytes"],
        64 * 1024 * 1024,
        "{status}"
    );

    // A newer version in the catalog shows the Update button, from the event stream.
    node.set_version(&web, "2");
    c.call("catalog.reload", Value::Null).await.unwrap();
    b.wait_for(
        "the Update button",
        &format!("!document.querySelector('[data-app=\"{web}\"] [data-role=\"update\"]').hidden"),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(primary(&b, &web).await, ("Stop".to_string(), true));
    let reloads = b
        .exec("return performance.getEntriesByType('navigation').length")
        .await;
    assert_eq!(reloads, 1, "the page never reloads");

    let shot = common::target_dir().join("browser-screenshot.png");
    b.screenshot(&shot).await;
    println!("screenshot: {}", shot.display());
    for line in server.warnings() {
        println!("supervisor: {line}");
    }
}

/// With the engine socket missing, the real supervisor still serves the page, lists the
/// catalog and the page says the engine is unreachable.
#[actix_web::test]
async fn engine_banner_shows_when_the_engine_is_unreachable() {
    let node = ServeNode::new("down");
    let app = node.app("web", "1", "sleep 3600", "  network: none\n");
    let absent = format!("unix://{}/absent.sock", node.dir.path().display());
    let server = node.serve(&absent, &[]);
    let b = Browser::start(None).await;
    log_in(&b, &server.base, PASSWORD).await;
    b.wait_for(
        "the engine banner",
        "!document.getElementById('engine-banner').hidden",
        Duration::from_secs(10),
    )
    .await;
    let banner = b
        .exec("return document.getElementById('engine-banner').textContent")
        .await;
    assert!(
        banner
            .as_str()
            .unwrap()
            .starts_with("The container engine is unreachable"),
        "{banner}"
    );
    wait_primary(&b, &app, "Install", true, Duration::from_secs(10)).await;
    b.screenshot(&common::target_dir().join("browser-screenshot-engine-down.png"))
        .await;
    // Logging out forgets the token and shows the form again.
    let logout = b.find("#logout").await;
    b.click(&logout).await;
    b.wait_for(
        "the login form after logout",
        "!document.getElementById('login').hidden && sessionStorage.getItem('archipelago.token') === null",
        Duration::from_secs(10),
    )
    .await;

    // `archipelago passwd` on the running node: the file holds the new hash, the old
    // session is over at once, the old password no longer logs in, the new one does.
    let mut old = server.client().await;
    old.call("package.list", Value::Null).await.unwrap();
    let mut passwd = Command::new(env!("CARGO_BIN_EXE_archipelago"))
        .args(["passwd", "--config"])
        .arg(node.dir.path().join("config.yml"))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = passwd.stdin.take().unwrap();
        stdin.write_all(b"another password\n").unwrap();
    }
    assert!(passwd.wait().unwrap().success());
    let stored = std::fs::read_to_string(node.dir.path().join("password")).unwrap();
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    let err = old.call("package.list", Value::Null).await.unwrap_err();
    assert!(
        matches!(err, archipelago::ctl::CtlError::Rpc { code: -32001, .. }),
        "{err}"
    );
    let mut again = archipelago::ctl::RpcClient::new(&server.base, T);
    let err = again.login(PASSWORD).await.unwrap_err();
    assert!(
        matches!(err, archipelago::ctl::CtlError::Rpc { code: -32001, .. }),
        "{err}"
    );
    again.login("another password").await.unwrap();
    again.call("package.list", Value::Null).await.unwrap();
}

/// The card of an app with onion ports shows its address on a line of its own. Tor itself
/// is proven in `tests/tor.rs`; here a busybox stand-in holds the tor app's `data` volume
/// and the test writes the hostname file the way tor does, so the page is what is tested.
#[actix_web::test]
async fn the_card_shows_the_apps_onion_address() {
    require_engine().await;
    let node = ServeNode::new("onion");
    let tor = node.app(
        "tor",
        "1",
        "sleep 3600",
        "  network: none\n  volumes: [\"data:/data\"]\n",
    );
    let onion = "onion: {ports: [\"80:8080\"]}\n";
    let extra = "  network: none\n  stop_timeout: 1s\n";
    let web = node.manifest(
        "web",
        &common::busybox_manifest("{id}", "Web", "1", "sleep 3600", onion, extra),
    );
    let config = node.config(
        &docker_host(),
        "none",
        &[tor.clone(), web.clone()],
        &format!("tor_app: {tor}\n"),
    );
    let server = serve::Server::start(&config);
    let mut c = server.client().await;
    wait_state(&mut c, &web, "running", T).await;
    // What tor writes once it has made the service's keys.
    let address = "vww6ybal4bd7szmgncyruucpgfkqahzddi37ktceo3ah7ngmcopnpyyd.onion";
    let service = node
        .dir
        .path()
        .join("data/apps")
        .join(&tor)
        .join("data/onion")
        .join(&web);
    std::fs::create_dir_all(&service).unwrap();
    std::fs::write(service.join("hostname"), format!("{address}\n")).unwrap();

    let b = Browser::start(None).await;
    log_in(&b, &server.base, PASSWORD).await;
    let card = format!("document.querySelector('[data-app=\"{web}\"]')");
    b.wait_for(
        "the onion line on the card",
        &format!(
            "(c => !!c && !c.querySelector('[data-role=\"onion\"]').hidden \
             && c.querySelector('[data-role=\"onion-address\"]').textContent === '{address}')({card})"
        ),
        T,
    )
    .await;
    let other = b
        .exec(&format!(
            "return document.querySelector('[data-app=\"{tor}\"] [data-role=\"onion\"]').hidden"
        ))
        .await;
    assert_eq!(
        other,
        Value::Bool(true),
        "an app without onion ports shows no line"
    );
    b.screenshot(&common::target_dir().join("browser-screenshot-onion.png"))
        .await;
}

/// Builds `<registry>/<repo>:2`, three layers of 20 MB random bytes over busybox, pushes
/// it to the loopback registry and removes the local copy, so installing it is a real
/// multi-layer pull whose progress the dashboard shows.
async fn publish_layers(repo: &str) -> String {
    let mut dockerfile = format!("FROM {}\n", common::BUSYBOX_IMAGE);
    // Version 2 waits 4 s before it serves, so the update's health wait can be seen.
    dockerfile.push_str("RUN echo 4 > /delay\n");
    for layer in 1..=3 {
        dockerfile.push_str(&format!(
            "RUN head -c 20000000 /dev/urandom > /layer{layer}\n"
        ));
    }
    common::publish(repo, "2", &dockerfile).await
}

/// The manifest of the app with a web page: busybox httpd on loopback port `port` of the
/// host network, serving `marker`, healthy once it serves (after the seconds the image's
/// `/delay` says, none without it). Versions differ in version and image only.
fn web_manifest(version: &str, image: &str, port: u16, marker: &str) -> String {
    let cmd = format!(
        "trap 'exit 0' TERM; sleep $(cat /delay 2>/dev/null || echo 0) & wait $!; mkdir -p /www; \
         echo '<h1>{marker}</h1>' > /www/index.html; \
         httpd -f -p 127.0.0.1:{port} -h /www & wait $!"
    );
    format!(
        "id: {{id}}\nname: Web\nversion: \"{version}\"\ncontainer:\n  image: {image}\n  command: [\"sh\", \"-c\", {cmd:?}]\n  network: host\n  memory_limit: 64MiB\n  stop_timeout: 2s\n  volumes: [\"data:/data\"]\n  health:\n    http: {{port: {port}, path: /}}\n    interval: 200ms\n    start_period: 30s\nui: {{port: {port}, path: /}}\n"
    )
}

/// Saves a screenshot of the documentation in `target/screenshots`, or over the one in
/// `docs/img` (shown in docs/dashboard.md) when `ARCHIPELAGO_UPDATE_SCREENSHOTS=1`, so an
/// ordinary run leaves the tree as it was.
async fn doc_screenshot(b: &Browser, name: &str) {
    let dir = match std::env::var("ARCHIPELAGO_UPDATE_SCREENSHOTS").as_deref() {
        Ok("1") => Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img"),
        _ => common::target_dir().join("screenshots"),
    };
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    b.screenshot(&path).await;
    println!("screenshot: {}", path.display());
}

/// What a node owner sees, on the real supervisor and engine: the Open link of a running
/// app loads the app's own page; the memory bar of an app that allocates moves and stays
/// under its limit; an update pulled from the loopback registry shows a progress bar that
/// advances; the log viewer shows a line the app printed after it opened; and at phone
/// width the cards stand in one column. Screenshots: see `doc_screenshot`.
#[test]
fn the_dashboard_opens_apps_and_shows_usage_progress_and_logs() {
    // The walk-through is one long async function whose frames outgrow a test thread's
    // 2 MiB stack in a debug build: it runs on a thread of its own with a larger one.
    let walk = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(|| actix_web::rt::System::new().block_on(dashboard_walkthrough()))
        .unwrap();
    if let Err(panic) = walk.join() {
        std::panic::resume_unwind(panic);
    }
}

async fn dashboard_walkthrough() {
    require_engine().await;
    let node = ServeNode::new("dash");
    let port = free_port();
    let marker = format!("page of {}", node.prefix);
    let web = node.manifest(
        "web",
        &web_manifest("1", common::BUSYBOX_IMAGE, port, &marker),
    );
    // Grows by 4 MiB in /dev/shm (charged to its memory cgroup) every 3 s up to 48 MiB,
    // under its 128 MiB limit, and prints a numbered line every second; bounded to 10 min.
    let grow = node.manifest(
        "grow",
        &format!(
            "id: {{id}}\nname: Grow\nversion: \"1\"\ncontainer:\n  image: {}\n  command: [\"sh\", \"-c\", {:?}]\n  network: none\n  memory_limit: 128MiB\n  stop_timeout: 1s\n  volumes: [\"data:/data\"]\n",
            common::BUSYBOX_IMAGE,
            "trap 'exit 0' TERM; n=0; i=0; while [ $n -lt 600 ]; do n=$((n+1)); echo \"line $n\"; \
             if [ $i -lt 12 ] && [ $((n % 3)) -eq 0 ]; then dd if=/dev/zero of=/dev/shm/m$i bs=1M count=4 2>/dev/null; i=$((i+1)); fi; \
             sleep 1 & wait $!; done"
        ),
    );
    let image2 = publish_layers(&format!("archipelago-test/{web}")).await;
    let server = node.serve_tls(&docker_host(), &[]);
    let https = server
        .https
        .clone()
        .unwrap_or_else(|| panic!("no HTTPS line in the log:\n{}", server.log().join("\n")));
    let mut c = server.client().await;
    c.call("package.install", json!({ "id": web }))
        .await
        .unwrap();
    wait_state(&mut c, &web, "running", Duration::from_secs(60)).await;

    let b = Browser::start(Some(&https.spki)).await;
    log_in(&b, &https.base, PASSWORD).await;
    let card = |id: &str| format!("document.querySelector('[data-app=\"{id}\"]')");
    let role = |id: &str, role: &str| {
        format!("document.querySelector('[data-app=\"{id}\"] [data-role=\"{role}\"]')")
    };

    // Install through the confirmation, which says what the app needs.
    wait_primary(&b, &grow, "Install", true, T).await;
    let install = b.find(&primary_selector(&grow)).await;
    b.click(&install).await;
    b.wait_for(
        "the install dialog",
        "document.getElementById('confirm').open",
        T,
    )
    .await;
    let facts = b
        .exec("return document.getElementById('confirm-facts').textContent")
        .await;
    let facts = facts.as_str().unwrap().to_string();
    assert!(facts.contains("128 MiB"), "{facts}");
    assert!(facts.contains("Depends on no other app"), "{facts}");
    let ok = b.find("#confirm-ok").await;
    b.click(&ok).await;
    wait_primary(&b, &grow, "Stop", true, Duration::from_secs(60)).await;

    // Open: the link of the running app goes to its page on the host the browser used.
    let href = b
        .wait_for(
            "the Open link",
            &format!("(e => !e.hidden && e.href)({})", role(&web, "open")),
            T,
        )
        .await;
    assert_eq!(href, json!(format!("http://127.0.0.1:{port}/")));
    let main = b.cmd("GET", "/window", None).await;
    let open = b
        .find(&format!("[data-app=\"{web}\"] [data-role=\"open\"]"))
        .await;
    b.click(&open).await;
    let deadline = Instant::now() + T;
    let handles = loop {
        let handles = b.cmd("GET", "/window/handles", None).await;
        if handles.as_array().unwrap().len() == 2 {
            break handles;
        }
        assert!(Instant::now() < deadline, "Open made no new tab: {handles}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let tab = handles
        .as_array()
        .unwrap()
        .iter()
        .find(|h| **h != main)
        .unwrap()
        .clone();
    b.cmd("POST", "/window", Some(json!({ "handle": tab })))
        .await;
    b.wait_for(
        "the app's own page",
        &format!("document.body && document.body.textContent.includes('{marker}')"),
        T,
    )
    .await;
    b.cmd("DELETE", "/window", None).await;
    b.cmd("POST", "/window", Some(json!({ "handle": main })))
        .await;

    // The memory bar of the app that allocates: record what it shows for a while.
    let mut seen: Vec<u64> = vec![];
    let limit = 128 * 1024 * 1024u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let used = b
            .exec(&format!(
                "const e = {}; return e && !e.closest('[data-role=\"usage\"]').hidden ? e.dataset.used : null",
                role(&grow, "memory-bar")
            ))
            .await;
        if let Some(v) = used.as_str().and_then(|s| s.parse::<u64>().ok()) {
            if seen.last() != Some(&v) {
                seen.push(v);
            }
        }
        let grew = seen.len() >= 3 && seen.last().unwrap() - seen[0] >= 12 * 1024 * 1024;
        if grew {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("memory bar values: {seen:?}");
    assert!(seen.len() >= 3, "the memory bar did not move: {seen:?}");
    assert!(
        seen.last().unwrap() - seen[0] >= 12 * 1024 * 1024,
        "the memory bar did not grow: {seen:?}"
    );
    assert!(seen.iter().all(|v| *v < limit), "over the limit: {seen:?}");
    let width = b
        .exec(&format!(
            "return parseFloat({}.firstChild.style.width)",
            role(&grow, "memory-bar")
        ))
        .await;
    assert!(
        width.as_f64().is_some_and(|w| w > 0.0 && w < 100.0),
        "bar width {width}"
    );
    let text = b
        .exec(&format!(
            "return {}.textContent",
            role(&grow, "memory-text")
        ))
        .await;
    assert!(text.as_str().unwrap().ends_with("/ 128 MiB"), "{text}");
    let summary = b
        .wait_for(
            "the node summary with disk free",
            "(t => t.includes('free of') && t.includes('in use') && t)(document.getElementById('summary').textContent)",
            T,
        )
        .await;
    println!("summary: {summary}");
    doc_screenshot(&b, "dashboard-main.png").await;

    // The log viewer: the last lines at once, then a line printed after it opened.
    let logs = b
        .find(&format!("[data-app=\"{grow}\"] [data-role=\"logs\"]"))
        .await;
    b.click(&logs).await;
    let first = b
        .wait_for(
            "the last lines in the viewer",
            "(t => /line \\d+/.test(t) && t)(document.getElementById('logs-text').textContent)",
            T,
        )
        .await;
    let last_at_open = first
        .as_str()
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("line ")?.parse::<u32>().ok())
        .max()
        .unwrap();
    let later = last_at_open + 2;
    b.wait_for(
        &format!("line {later} in the viewer"),
        &format!(
            "document.getElementById('logs-text').textContent.split('\\n').includes('line {later}')"
        ),
        T,
    )
    .await;
    // Pause holds the view; Resume shows what came meanwhile.
    let pause = b.find("#logs-pause").await;
    b.click(&pause).await;
    b.wait_for(
        "lines held while paused",
        "/paused, \\d+ new lines/.test(document.getElementById('logs-status').textContent)",
        T,
    )
    .await;
    b.click(&pause).await;
    doc_screenshot(&b, "dashboard-logs.png").await;
    let close = b.find("#logs-close").await;
    b.click(&close).await;

    // Uninstall asks, keeping data by default and saying how much deleting would free.
    let uninstall = b
        .find(&format!("[data-app=\"{grow}\"] [data-role=\"uninstall\"]"))
        .await;
    b.click(&uninstall).await;
    b.wait_for(
        "the uninstall dialog",
        "document.getElementById('confirm').open",
        T,
    )
    .await;
    let choice = b
        .exec("return [document.querySelector('#confirm input[value=\"keep\"]').checked, document.getElementById('confirm-delete-label').textContent]")
        .await;
    assert_eq!(choice[0], true, "{choice}");
    assert!(
        choice[1].as_str().unwrap().starts_with("Delete data ("),
        "{choice}"
    );
    let cancel = b.find("#confirm-cancel").await;
    b.click(&cancel).await;
    b.wait_for(
        "the dialog closed",
        "!document.getElementById('confirm').open",
        T,
    )
    .await;
    assert_eq!(primary(&b, &grow).await, ("Stop".to_string(), true));

    // An update pulled from the loopback registry: its progress bar advances.
    node.manifest("web", &web_manifest("2", &image2, port, &marker));
    c.call("catalog.reload", Value::Null).await.unwrap();
    let update = b
        .find(&format!("[data-app=\"{web}\"] [data-role=\"update\"]"))
        .await;
    b.wait_for(
        "the Update button with the new version",
        &format!(
            "(e => !e.hidden && e.textContent === 'Update to 2')({})",
            role(&web, "update")
        ),
        T,
    )
    .await;
    b.exec(&format!(
        "window.__progress = [];
         const bar = {};
         new MutationObserver(() => window.__progress.push([bar.value, bar.max, bar.hasAttribute('value')]))
           .observe(bar, {{attributes: true}});
         return true;",
        role(&web, "progress-bar")
    ))
    .await;
    b.click(&update).await;
    b.wait_for(
        "the update dialog",
        "document.getElementById('confirm').open",
        T,
    )
    .await;
    let title = b
        .exec("return document.getElementById('confirm-title').textContent")
        .await;
    assert_eq!(title, json!("Update Web to 2?"));
    let ok = b.find("#confirm-ok").await;
    b.click(&ok).await;
    b.wait_for(
        "the health wait of the new version",
        &format!(
            "(c => c.dataset.state === 'upgrading' && !c.querySelector('[data-role=\"progress\"]').hidden \
             && c.querySelector('[data-role=\"progress-text\"]').textContent.includes('healthy'))({})",
            card(&web)
        ),
        Duration::from_secs(60),
    )
    .await;
    doc_screenshot(&b, "dashboard-upgrade.png").await;
    wait_primary(&b, &web, "Stop", true, Duration::from_secs(60)).await;
    let series = b.exec("return window.__progress").await;
    let values: Vec<(f64, f64)> = series
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v[2] == true && v[1].as_f64().unwrap_or(0.0) > 1.0)
        .map(|v| (v[0].as_f64().unwrap(), v[1].as_f64().unwrap()))
        .collect();
    println!("progress bar (value, max) during the pull: {values:?}");
    let mut distinct: Vec<f64> = values.iter().map(|(v, _)| *v).collect();
    distinct.dedup();
    assert!(
        distinct.len() >= 2,
        "the progress bar did not advance: {values:?}"
    );
    assert!(values.iter().all(|(v, m)| *v <= *m), "{values:?}");
    let fractions: Vec<f64> = values.iter().map(|(v, m)| v / m).collect();
    assert!(
        values
            .windows(2)
            .all(|w| w[1].0 >= w[0].0 || w[1].1 > w[0].1),
        "the progress bar went back: {values:?}"
    );
    assert!(
        fractions.iter().any(|f| *f < 0.9) && fractions.iter().any(|f| *f > 0.5),
        "no progress between start and end: {fractions:?}"
    );
    let p = serve::get(&mut c, &web).await;
    assert_eq!(p["installed_version"], "2", "{p}");
    // The new version's container is a restart of an app seen running; the install's
    // first start of the other app is not.
    assert_eq!(p["restarts"], 1, "{p}");
    assert_eq!(serve::get(&mut c, &grow).await["restarts"], 0);

    // Phone width: one column, and the primary buttons still there.
    b.cmd(
        "POST",
        "/window/rect",
        Some(json!({"width": 390, "height": 844})),
    )
    .await;
    b.wait_for(
        "a single column",
        "getComputedStyle(document.getElementById('apps')).gridTemplateColumns.split(' ').length === 1",
        T,
    )
    .await;
    let lefts = b
        .exec("return [...document.querySelectorAll('[data-app]')].map(e => e.getBoundingClientRect().left)")
        .await;
    let lefts: Vec<f64> = lefts
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(
        lefts.windows(2).all(|w| (w[0] - w[1]).abs() < 1.0),
        "cards side by side at phone width: {lefts:?}"
    );
    let overflow = b
        .exec("return document.documentElement.scrollWidth <= window.innerWidth")
        .await;
    assert_eq!(overflow, true, "the page scrolls sideways at phone width");
    doc_screenshot(&b, "dashboard-phone.png").await;

    // Prometheus has the same figures and a restart counter.
    let metrics = http_request("GET", &format!("{}/metrics", server.base), &[], b"", T)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    for want in [
        format!("archipelago_app_memory_bytes{{app=\"{grow}\"}}"),
        format!("archipelago_app_restarts_total{{app=\"{web}\"}}"),
        "archipelago_data_dir_free_bytes".to_string(),
    ] {
        assert!(text.contains(&want), "no {want} in /metrics:\n{text}");
    }
    // The log stream wants a session, like the event stream.
    let anonymous = http_request(
        "GET",
        &format!("{}/api/logs/{grow}", server.base),
        &[],
        b"",
        T,
    )
    .await
    .unwrap();
    assert_eq!(anonymous.status, 401);
    for line in server.warnings() {
        println!("supervisor: {line}");
    }
    // The pulled image goes once the node's containers are gone.
    drop(b);
    drop(server);
    drop(node);
    if let Ok(engine) = archipelago::engine::DockerRuntime::connect(&docker_host()).await {
        use archipelago::engine::ContainerRuntime;
        let _ = engine.image_remove(&image2).await;
    }
}
