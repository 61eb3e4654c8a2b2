//! A headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`),
//! for the browser tests: one `Browser` per test, its own driver, port and profile folder,
//! ended (session, then driver) when dropped.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use archipelago::ctl::http_request;
use base64::Engine as _;
use serde_json::{json, Value};

use super::SETUP_COMMAND;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C WebDriver key under which an element reference comes back.
pub const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
const T: Duration = Duration::from_secs(30);

/// A chromedriver process and one browser session; both end on drop.
pub struct Browser {
    driver: Child,
    url: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium session that trusts
    /// a certificate whose public key hashes to `spki_pin` (base64 SHA-256), if given.
    pub async fn start(spki_pin: Option<&str>) -> Browser {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: run `{SETUP_COMMAND}`, which installs chromium and chromedriver"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER} ({e}): run `{SETUP_COMMAND}`"));
        let url = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            driver,
            url,
            session: String::new(),
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(res) =
                http_request("GET", &format!("{}/status", browser.url), &[], b"", T).await
            {
                if serde_json::from_slice::<Value>(&res.body)
                    .is_ok_and(|v| v["value"]["ready"] == true)
                {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not come up on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let pin = spki_pin
            .map(|p| format!("--ignore-certificate-errors-spki-list={p}"))
            .unwrap_or_else(|| "--disable-extensions".to_string());
        let args = [
            pin.as_str(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            &format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args}
        }}});
        let v = browser.raw("POST", "/session", Some(caps)).await;
        browser.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        browser
    }

    /// One WebDriver command; returns its `value`, failing on a WebDriver error.
    pub async fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let res = http_request(
            method,
            &format!("{}{path}", self.url),
            &[("Content-Type", "application/json")],
            body.as_bytes(),
            T,
        )
        .await
        .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        let v: Value = serde_json::from_slice(&res.body).expect("webdriver answers JSON");
        assert!(
            res.status < 300,
            "webdriver {method} {path}: HTTP {}: {v}",
            res.status
        );
        v["value"].clone()
    }

    pub async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.raw(method, &format!("/session/{}{path}", self.session), body)
            .await
    }

    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await;
    }

    pub async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    pub async fn click(&self, element: &str) {
        self.cmd(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    pub async fn type_into(&self, element: &str, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Types `text` into the element `css` selects.
    pub async fn type_in(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        self.type_into(&field, text).await;
    }

    /// Clicks the element `css` selects.
    pub async fn click_on(&self, css: &str) {
        let element = self.find(css).await;
        self.click(&element).await;
    }

    /// Submits the dashboard's login form with `password`, then waits up to `limit`
    /// (naming `what`) for the JS expression `then` to hold.
    pub async fn submit_login(&self, password: &str, what: &str, then: &str, limit: Duration) {
        self.type_in("#password", password).await;
        self.click_on("#login-button").await;
        self.wait_for(what, then, limit).await;
    }

    pub async fn exec(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    pub async fn screenshot(&self, path: &Path) {
        let v = self.cmd("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 screenshot"))
            .expect("valid base64");
        std::fs::write(path, png).unwrap();
    }

    /// Polls `script` (a JS expression) until it is truthy; panics naming `what` after `limit`.
    pub async fn wait_for(&self, what: &str, script: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.exec(&format!("return ({script});")).await;
            if !(v.is_null() || v == false || v == "") {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session first (chromedriver then closes the browser it started; killing
        // the driver alone would orphan it), then the driver, by its own handle. Blocking
        // std I/O because drop cannot await; bounded by the timeouts.
        if !self.session.is_empty() {
            let addr = self.url.trim_start_matches("http://").to_string();
            if let Ok(mut stream) = std::net::TcpStream::connect(&addr) {
                use std::io::{Read, Write};
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let req = format!(
                    "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
                    self.session
                );
                if stream.write_all(req.as_bytes()).is_ok() {
                    let mut answer = [0u8; 1024];
                    let _ = stream.read(&mut answer);
                }
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
