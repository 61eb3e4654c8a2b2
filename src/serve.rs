//! `archipelago serve`: wires the supervisor, the engine and the web server together,
//! tells systemd when it is ready, and stops gracefully on the first SIGTERM or SIGINT
//! (a second one exits at once). Stopping never stops app containers.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use sd_notify::NotifyState;
use tokio::signal::unix::{signal, SignalKind};

use crate::catalog::Catalog;
use crate::config::Config;
use crate::engine::reconnect::ReconnectingRuntime;
use crate::engine::ContainerRuntime;
use crate::store::Store;
use crate::supervisor::{Heartbeat, Supervisor};
use crate::web::{self, Backend, WebConfig};

/// Why the supervisor could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Web(#[from] std::io::Error),
    #[error("{path}: auth.password_file: {reason}")]
    Password { path: String, reason: String },
    #[error("{0}")]
    Tls(#[from] crate::web::tls::TlsError),
    #[error("{0}")]
    Backup(#[from] crate::backup::BackupError),
}

/// Runs until SIGTERM or SIGINT. Must run inside an actix system.
pub async fn run(config: Config) -> Result<(), ServeError> {
    // Checked before anything starts: a supervisor nobody can log in to is no use.
    let password = &config.auth.password_file;
    let bad = |reason: String| ServeError::Password {
        path: password.display().to_string(),
        reason,
    };
    // No password file yet: first-run onboarding, guarded by a one-time setup code.
    let setup = web::setup::open_if_no_password(password, &config.data_dir)
        .map_err(|e| bad(format!("cannot open onboarding: {e}")))?;
    match std::fs::read_to_string(password) {
        _ if setup.is_some() => {}
        Ok(text) if text.lines().next().is_some_and(|l| !l.trim().is_empty()) => {}
        Ok(_) => return Err(bad("the first line is empty".into())),
        Err(e) => return Err(bad(e.to_string())),
    }
    // A clear password is replaced by its argon2 hash, on a blocking thread (slow on purpose).
    let path = password.clone();
    let upgrade = setup.is_none();
    match tokio::task::spawn_blocking(move || {
        if upgrade {
            crate::web::auth::upgrade_password_file(&path)
        } else {
            Ok(false)
        }
    })
    .await
    {
        Ok(Ok(true)) => {
            tracing::info!(path = %password.display(), "password file now holds an argon2 hash")
        }
        Ok(Ok(false)) => {}
        Ok(Err(e)) => return Err(bad(e.to_string())),
        Err(e) => return Err(bad(e.to_string())),
    }
    if !config.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %config.listen,
            "plain HTTP off loopback: the password and session tokens cross the network in clear; \
             keep `listen` on 127.0.0.1 and serve the LAN with `tls`"
        );
    }
    let allowed_hosts = web::auth::default_allowed_hosts(&config.allowed_hosts);
    let tls = match &config.tls {
        Some(t) => {
            let (cert, key, data, names) = (
                t.cert.clone(),
                t.key.clone(),
                config.data_dir.clone(),
                allowed_hosts.clone(),
            );
            let identity = tokio::task::spawn_blocking(move || {
                web::tls::TlsIdentity::load_or_create(
                    cert.as_deref(),
                    key.as_deref(),
                    &data,
                    &names,
                )
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
            Some(web::TlsListen {
                listen: t.listen,
                identity,
            })
        }
        None => None,
    };
    let (catalog, problems) = Catalog::load(&config.apps_dir);
    for p in &problems {
        tracing::warn!("catalog: {p}");
    }
    tracing::info!(
        apps = catalog.apps.len(),
        problems = problems.len(),
        apps_dir = %config.apps_dir.display(),
        "catalog loaded"
    );
    let store = Store::open(&config.data_dir)?;
    let engine: Arc<dyn ContainerRuntime> = Arc::new(ReconnectingRuntime::new(&config.engine.host));
    let supervisor = Supervisor::new(&config, catalog, engine.clone(), store)?.start();
    let backup = match &config.backup {
        Some(b) => Some(
            crate::backup::BackupActor::new(
                b.clone(),
                config.data_dir.clone(),
                config.apps_dir.clone(),
                crate::backup::SupervisorLink {
                    list: supervisor.clone().recipient(),
                    get: supervisor.clone().recipient(),
                    run: supervisor.clone().recipient(),
                },
                engine,
            )?
            .start(),
        ),
        None => None,
    };
    let mut web_config = WebConfig::new(config.listen, config.auth.password_file.clone());
    web_config.allowed_hosts = allowed_hosts;
    web_config.trusted_proxy = config.trusted_proxy;
    web_config.metrics_token = config.metrics_token.clone();
    web_config.setup = setup;
    let fingerprints = tls.as_ref().map(|t| {
        (
            t.identity.fingerprint_sha256.clone(),
            t.identity.spki_sha256_base64.clone().unwrap_or_default(),
        )
    });
    web_config.tls = tls;
    let mut backend = Backend::from_addr(&supervisor);
    backend.backup = backup.map(|b| b.recipient());
    let (server, bound) = web::server_bound(web_config, backend)?;
    let handle = server.handle();
    let task = actix_web::rt::spawn(server);
    let addr = bound.http;
    // HTTPS first: the plain line is the one scripts wait for, and by then both are known.
    if let (Some(https), Some((sha256, spki))) = (bound.https, fingerprints) {
        tracing::info!(
            "dashboard at https://{https}/ certificate SHA-256 fingerprint {sha256} (public key SHA-256 {spki})"
        );
    }
    tracing::info!(%addr, "dashboard at http://{addr}/");
    notify_systemd(NotifyState::Ready);
    if let Some(every) = watchdog_interval() {
        // Pinged only when the supervisor answered a heartbeat within the interval.
        let heart = supervisor.clone();
        actix_web::rt::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match tokio::time::timeout(every, heart.send(Heartbeat)).await {
                    Ok(Ok(())) => notify_systemd(NotifyState::Watchdog),
                    _ => tracing::error!(
                        "the supervisor did not answer its heartbeat: no watchdog ping"
                    ),
                }
            }
        });
    }
    wait_for_signal().await;
    notify_systemd(NotifyState::Stopping);
    tracing::info!("stopping; app containers keep running");
    actix_web::rt::spawn(async {
        wait_for_signal().await;
        tracing::warn!("second signal: exiting at once");
        std::process::exit(130);
    });
    handle.stop(true).await;
    let _ = task.await;
    System::current().stop();
    Ok(())
}

async fn wait_for_signal() {
    // Installing a handler fails only when the signal number is invalid.
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Tells systemd about a state change, when run as a `Type=notify` unit (a no-op without
/// `NOTIFY_SOCKET`).
fn notify_systemd(state: NotifyState<'_>) {
    let line = state.to_string();
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::warn!(error = %e, state = %line, "sd_notify failed");
    }
}

/// Half of systemd's `WATCHDOG_USEC`, when the unit has a watchdog for this process.
fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|usec| usec / 2)
}
