//! Fuzzes JSON-RPC decoding: any body goes through `handle_body` (framing, batches,
//! parameter checks, auth, dispatch) against the web tests' stub supervisor, never a panic.
//! The first input byte chooses whether the caller holds a session.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use actix::prelude::*;
use archipelago::web::auth::{Auth, AuthPolicy};
use archipelago::web::metrics::Metrics;
use archipelago::web::rpc::{handle_body, RpcContext};
use archipelago::web::Backend;
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/web_stub/mod.rs"]
mod web_stub;

struct World {
    system: actix::SystemRunner,
    backend: Backend,
    auth: Auth,
    metrics: Metrics,
    token: String,
    _dir: tempfile::TempDir,
}

fn world() -> World {
    let system = actix::System::new();
    let backend = system.block_on(async {
        let stub = web_stub::Stub::new(Duration::from_millis(1)).start();
        Backend::from_addr(&stub)
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, format!("{}\n", web_stub::PASSWORD)).expect("write password");
    let auth = Auth::new(password_file, AuthPolicy::default());
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let token = auth
        .login(ip, web_stub::PASSWORD, Instant::now())
        .expect("the stub's password logs in");
    World {
        system,
        backend,
        auth,
        metrics: Metrics::default(),
        token,
        _dir: dir,
    }
}

thread_local! {
    static WORLD: World = world();
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    WORLD.with(|w| {
        let ctx = RpcContext {
            backend: &w.backend,
            auth: &w.auth,
            metrics: &w.metrics,
            token: (first & 1 == 1).then(|| w.token.clone()),
            tls: None,
            secure: false,
            // Another client address per input, so the login slow-down does not stall.
            ip: IpAddr::V4(Ipv4Addr::new(127, 1, first, 1)),
            timeout: Duration::from_millis(20),
        };
        let reply = w.system.block_on(handle_body(&ctx, body));
        if let Some(body) = reply.body {
            assert!(body.is_object() || body.is_array(), "{body}");
        }
    });
});
