//! Health probes (http, tcp, exec) and the rules that turn their results into `healthy`,
//! `unhealthy` or `starting`, Docker's way: failures during the start period do not count,
//! `retries` failures in a row make an app unhealthy, one success makes it healthy.

use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{header, Request};
use tokio::net::TcpStream;

use crate::api::Health;
use crate::engine::{container_name, ContainerRuntime, ContainerSpec};
use crate::manifest::{HealthCheck, HealthProbe};
use crate::netns::{self, NetnsError};
use crate::spec::host_port;

/// Runs one probe. `Err` says why it failed.
pub async fn probe(
    engine: &dyn ContainerRuntime,
    spec: &ContainerSpec,
    check: &HealthCheck,
) -> Result<(), String> {
    let fut = async {
        match &check.probe {
            HealthProbe::Http { port, path } => {
                let stream = connect(engine, spec, *port, check.timeout).await?;
                http_get(stream, *port, path).await
            }
            HealthProbe::Tcp { port } => connect(engine, spec, *port, check.timeout)
                .await
                .map(|_| ()),
            HealthProbe::Exec(cmd) => {
                let out = engine
                    .exec(&container_name(&spec.app), cmd, check.timeout)
                    .await
                    .map_err(|e| e.to_string())?;
                if out.exit_code == 0 {
                    Ok(())
                } else {
                    Err(format!(
                        "exec exited {}: {}",
                        out.exit_code,
                        out.output.trim()
                    ))
                }
            }
        }
    };
    match tokio::time::timeout(check.timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "timed out after {}",
            humantime::format_duration(check.timeout)
        )),
    }
}

/// Connects to the app's `port` where its server listens: `127.0.0.1:port` inside the
/// container's own network namespace, so a server on a private network with no published
/// port is reached. Under host networking that namespace is the host's. Only when the
/// namespace cannot be entered (archipelago not running as root) does it fall back to a
/// published port on the host's loopback.
async fn connect(
    engine: &dyn ContainerRuntime,
    spec: &ContainerSpec,
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, String> {
    let name = container_name(&spec.app);
    if spec.network != "host" {
        let details = engine.inspect(&name).await.map_err(|e| e.to_string())?;
        let pid = details
            .pid
            .ok_or_else(|| format!("{name} is not running"))?;
        match netns::connect_loopback(pid, port, timeout).await {
            Ok(stream) => return Ok(stream),
            Err(NetnsError::Connect { source, .. }) => {
                return Err(format!("tcp {port} in {name}: {source}"))
            }
            Err(e) => {
                if host_port(spec, port).is_none() {
                    return Err(format!(
                        "{e}: run archipelago as root, or publish port {port} for the probe"
                    ));
                }
            }
        }
    }
    let host_port = host_port(spec, port).unwrap_or(port);
    TcpStream::connect(("127.0.0.1", host_port))
        .await
        .map_err(|e| format!("tcp 127.0.0.1:{host_port}: {e}"))
}

/// An HTTP/1.1 GET over `stream`; any 2xx or 3xx status is healthy. Only the response
/// head is read.
async fn http_get(stream: TcpStream, port: u16, path: &str) -> Result<(), String> {
    let request = Request::get(path)
        .header(header::HOST, format!("127.0.0.1:{port}"))
        .header(header::USER_AGENT, "archipelago-health")
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("http :{port}{path}: {e}"))?;
    let status = match crate::ctl::send(stream, request).await {
        Ok(res) => res.status().as_u16(),
        Err(e) if e.is_parse() => return Err(format!("http :{port}{path}: not an HTTP answer")),
        Err(e) => return Err(format!("http :{port}: {e}")),
    };
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("http :{port}{path}: status {status}"))
    }
}

/// Turns probe results into a health value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthTracker {
    health: Health,
    failures: u32,
    since_start: Duration,
}

impl HealthTracker {
    /// A freshly started container: `starting`.
    pub fn started() -> Self {
        HealthTracker {
            health: Health::Starting,
            failures: 0,
            since_start: Duration::ZERO,
        }
    }

    pub fn health(&self) -> Health {
        self.health
    }

    /// Records one probe result, `elapsed` after the container started.
    pub fn record(&mut self, ok: bool, elapsed: Duration, check: &HealthCheck) -> Health {
        self.since_start = elapsed;
        if ok {
            self.failures = 0;
            self.health = Health::Healthy;
        } else if elapsed >= check.start_period || self.health == Health::Healthy {
            self.failures += 1;
            if self.failures >= check.retries.max(1) {
                self.health = Health::Unhealthy;
            }
        }
        self.health
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn check(start_period: u64, retries: u32) -> HealthCheck {
        HealthCheck {
            probe: HealthProbe::Tcp { port: 1 },
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            retries,
            start_period: Duration::from_secs(start_period),
        }
    }

    #[test]
    fn failures_in_the_start_period_do_not_count() {
        let c = check(10, 2);
        let mut t = HealthTracker::started();
        for s in 0..10 {
            assert_eq!(
                t.record(false, Duration::from_secs(s), &c),
                Health::Starting
            );
        }
        assert_eq!(
            t.record(false, Duration::from_secs(10), &c),
            Health::Starting
        );
        assert_eq!(
            t.record(false, Duration::from_secs(11), &c),
            Health::Unhealthy
        );
        assert_eq!(t.record(true, Duration::from_secs(12), &c), Health::Healthy);
    }

    #[test]
    fn a_healthy_app_needs_retries_failures_to_turn_unhealthy() {
        let c = check(0, 3);
        let mut t = HealthTracker::started();
        assert_eq!(t.record(true, Duration::ZERO, &c), Health::Healthy);
        assert_eq!(t.record(false, Duration::from_secs(1), &c), Health::Healthy);
        assert_eq!(t.record(false, Duration::from_secs(2), &c), Health::Healthy);
        assert_eq!(
            t.record(false, Duration::from_secs(3), &c),
            Health::Unhealthy
        );
    }

    #[tokio::test]
    async fn http_probe_reads_the_status_line() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
            }
        });
        let connect = || TcpStream::connect(("127.0.0.1", port));
        assert_eq!(http_get(connect().await.unwrap(), port, "/").await, Ok(()));
        let err = http_get(connect().await.unwrap(), port, "/")
            .await
            .unwrap_err();
        assert!(err.contains("status 503"), "{err}");
        server.await.unwrap();
    }
}
