//! Containers archipelago did not create: read whole (the engine's inspect of one and of
//! its image as a [`ForeignContainer`], for `import container` and `adopt`), and taken
//! over live at adoption.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bollard::models::{
    ContainerInspectResponse, ContainerUpdateBody, HealthConfig, ImageInspect, RestartPolicy,
    RestartPolicyNameEnum,
};

use super::convert::{bare_name, real_time, run_state};
use super::errors::Target;
use super::DockerRuntime;
use crate::engine::{EngineError, ForeignContainer, ForeignHealth, ForeignMount, PortBinding};

/// Restart policy `no` and the pids limit, set on a running container without a restart.
/// Podman 4.3 updates only resources (through its own endpoint), so there the restart
/// policy is left as it is (see docs/migrate.md).
pub(super) async fn take_over(
    runtime: &DockerRuntime,
    container: &str,
    pids_limit: u32,
) -> Result<(), EngineError> {
    if runtime.podman {
        let body = serde_json::json!({ "pids": { "limit": pids_limit } });
        return runtime.podman_update(container, body).await;
    }
    let body = ContainerUpdateBody {
        pids_limit: Some(i64::from(pids_limit)),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        ..Default::default()
    };
    runtime
        .docker
        .update_container(container, body)
        .await
        .map_err(|e| runtime.err(Target::Container(container), e))
}

/// `KEY=value` lines as a map; a line without `=` is a key with an empty value.
fn env_map(lines: Option<Vec<String>>) -> BTreeMap<String, String> {
    lines
        .unwrap_or_default()
        .into_iter()
        .map(|line| match line.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (line, String::new()),
        })
        .collect()
}

/// A duration in nanoseconds as the engine stores it; 0 or less means "the default".
fn nanos(value: Option<i64>) -> Option<Duration> {
    value
        .and_then(|n| u64::try_from(n).ok())
        .filter(|n| *n > 0)
        .map(Duration::from_nanos)
}

fn health(config: Option<HealthConfig>) -> Option<ForeignHealth> {
    let config = config?;
    let test = config.test.unwrap_or_default();
    if test.is_empty() {
        return None;
    }
    Some(ForeignHealth {
        test,
        interval: nanos(config.interval),
        timeout: nanos(config.timeout),
        retries: config
            .retries
            .and_then(|r| u32::try_from(r).ok())
            .filter(|r| *r > 0),
        start_period: nanos(config.start_period),
    })
}

/// `9735/tcp` → (9735, false); anything else `None`.
fn container_port(key: &str) -> Option<(u16, bool)> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    Some((port.parse().ok()?, proto == "udp"))
}

/// The inspect of a container and of its image as one [`ForeignContainer`].
pub(super) fn foreign_container(
    info: ContainerInspectResponse,
    image: Option<ImageInspect>,
) -> ForeignContainer {
    let state = info.state.unwrap_or_default();
    let config = info.config.unwrap_or_default();
    let hc = info.host_config.unwrap_or_default();
    let image_config = image.and_then(|i| i.config).unwrap_or_default();
    let mut ports: Vec<PortBinding> = hc
        .port_bindings
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(key, bindings)| {
            let (container, udp) = container_port(&key)?;
            Some(
                bindings
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(move |b| {
                        let host = b.host_port?.parse().ok()?;
                        Some(PortBinding {
                            host,
                            container,
                            udp,
                        })
                    }),
            )
        })
        .flatten()
        .collect();
    ports.sort();
    ports.dedup();
    let mounts = info
        .mounts
        .unwrap_or_default()
        .into_iter()
        .map(|m| ForeignMount {
            kind: m.typ.unwrap_or_default(),
            source: PathBuf::from(m.source.unwrap_or_default()),
            name: m.name.unwrap_or_default(),
            destination: m.destination.unwrap_or_default(),
            read_only: !m.rw.unwrap_or(true),
        })
        .collect();
    ForeignContainer {
        id: info.id.unwrap_or_default(),
        name: bare_name(info.name.as_deref()),
        image: config.image.unwrap_or_default(),
        image_id: info.image.unwrap_or_default(),
        state: run_state(state.status, state.running.unwrap_or(false)),
        started_at: real_time(state.started_at),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        command: config.cmd.unwrap_or_default(),
        entrypoint: config.entrypoint.unwrap_or_default(),
        image_command: image_config.cmd.unwrap_or_default(),
        image_entrypoint: image_config.entrypoint.unwrap_or_default(),
        image_env: env_map(image_config.env),
        image_user: image_config.user.unwrap_or_default(),
        env: env_map(config.env),
        user: config.user.unwrap_or_default(),
        mounts,
        ports,
        network_mode: hc.network_mode.unwrap_or_default(),
        memory_limit: hc.memory.unwrap_or(0).max(0) as u64,
        restart_policy: hc
            .restart_policy
            .and_then(|p| p.name)
            .map(|n| n.to_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "no".to_string()),
        stop_timeout: config.stop_timeout.and_then(|s| u64::try_from(s).ok()),
        health: health(config.healthcheck),
        privileged: hc.privileged.unwrap_or(false),
        devices: hc
            .devices
            .unwrap_or_default()
            .into_iter()
            .map(|d| {
                format!(
                    "{}:{}",
                    d.path_on_host.unwrap_or_default(),
                    d.path_in_container.unwrap_or_default()
                )
            })
            .collect(),
        cap_add: hc.cap_add.unwrap_or_default(),
        cap_drop: hc.cap_drop.unwrap_or_default(),
        pids_limit: hc.pids_limit,
        security_opt: hc.security_opt.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inspect_reads_as_a_foreign_container() {
        let info: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
            "Id": "abc", "Name": "/old-db", "Image": "sha256:img",
            "State": {"Status": "running", "Running": true, "StartedAt": "2026-01-01T00:00:00Z"},
            "Config": {"Image": "db:1", "Cmd": ["serve"], "Env": ["PASSWORD=x", "PATH=/bin"],
                       "User": "999", "StopTimeout": 30,
                       "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 10000000000i64, "Retries": 3}},
            "HostConfig": {"Memory": 67108864, "NetworkMode": "node",
                           "RestartPolicy": {"Name": "unless-stopped"},
                           "PortBindings": {"5432/tcp": [{"HostPort": "15432"}], "53/udp": [{"HostPort": "53"}]},
                           "Devices": [{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda"}]},
            "Mounts": [{"Type": "bind", "Source": "/srv/db", "Destination": "/data", "RW": true},
                       {"Type": "volume", "Name": "logs", "Source": "/var/lib/docker/volumes/logs/_data",
                        "Destination": "/logs", "RW": false}]
        }))
        .unwrap();
        let image: ImageInspect = serde_json::from_value(serde_json::json!({
            "Config": {"Cmd": ["serve"], "Env": ["PATH=/bin"], "Entrypoint": ["/entry"]}
        }))
        .unwrap();
        let c = foreign_container(info, Some(image));
        assert_eq!(c.name, "old-db");
        assert_eq!(c.env.get("PASSWORD").map(String::as_str), Some("x"));
        assert_eq!(c.image_env.len(), 1);
        assert_eq!(c.image_entrypoint, ["/entry"]);
        assert_eq!(c.memory_limit, 64 << 20);
        assert_eq!(c.restart_policy, "unless-stopped");
        assert_eq!(c.stop_timeout, Some(30));
        assert_eq!(
            c.ports,
            [
                PortBinding {
                    host: 53,
                    container: 53,
                    udp: true
                },
                PortBinding {
                    host: 15432,
                    container: 5432,
                    udp: false
                },
            ]
        );
        assert_eq!(c.devices, ["/dev/sda:/dev/sda"]);
        assert_eq!(c.mounts[1].name, "logs");
        assert!(c.mounts[1].read_only && !c.mounts[0].read_only);
        let h = c.health.unwrap();
        assert_eq!(h.interval, Some(Duration::from_secs(10)));
        assert_eq!(h.retries, Some(3));
        assert_eq!(h.timeout, None);
    }
}
