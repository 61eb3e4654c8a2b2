//! `import container`: a running (or stopped) container that archipelago did not create,
//! read with [`crate::engine::ContainerRuntime::inspect_foreign`], as a [`Service`]. What
//! equals the image's own defaults is left out of the draft.

use std::time::Duration;

use super::draft::{
    health_exec, restart_policy, Finding, Health, Mount, MountSource, Service,
    ENGINE_HEALTH_INTERVAL, ENGINE_HEALTH_RETRIES, ENGINE_HEALTH_TIMEOUT,
};
use crate::engine::ForeignContainer;
use crate::manifest::{capability_name, RestartPolicy};

/// Compose's labels on the containers it creates.
const SERVICE_LABEL: &str = "com.docker.compose.service";
const PROJECT_LABEL: &str = "com.docker.compose.project";
const DEPENDS_LABEL: &str = "com.docker.compose.depends_on";

/// The container as a service: named after its compose service when it has one.
pub fn service(c: &ForeignContainer) -> Service {
    let name = c
        .labels
        .get(SERVICE_LABEL)
        .cloned()
        .unwrap_or_else(|| c.name.clone());
    let origin = match c.labels.get(PROJECT_LABEL) {
        Some(project) => format!("container {} (compose project {project})", c.name),
        None => format!("container {}", c.name),
    };
    let mut s = Service {
        name: name.clone(),
        origin,
        image: Some(c.image.clone()),
        env_field: "env".to_string(),
        memory_field: "memory".to_string(),
        ..Service::default()
    };
    let mut find =
        |field: &str, reason: String| s.findings.push(Finding::new(&name, field, reason));
    if c.entrypoint != c.image_entrypoint {
        s.entrypoint = Some(c.entrypoint.clone());
    }
    // A run that replaces the entrypoint drops the image's command: say the command then.
    if c.command != c.image_command || s.entrypoint.is_some() {
        s.command = Some(c.command.clone());
    }
    if !c.user.is_empty() {
        s.user = Some(c.user.clone());
    }
    s.env = c
        .env
        .iter()
        .filter(|(k, v)| c.image_env.get(*k) != Some(*v))
        .filter(|(k, _)| !super::ENGINE_ENV.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    s.ports = c
        .ports
        .iter()
        .map(|p| {
            format!(
                "{}:{}/{}",
                p.host,
                p.container,
                if p.udp { "udp" } else { "tcp" }
            )
        })
        .collect();
    for (i, m) in c.mounts.iter().enumerate() {
        let field = format!("mounts[{i}]");
        let source = match m.kind.as_str() {
            "bind" => MountSource::Host(m.source.clone()),
            "volume" => MountSource::Volume {
                name: m.name.clone(),
                mountpoint: Some(m.source.clone()),
            },
            other => {
                find(
                    &field,
                    format!(
                        "{other} mount at {}: not supported; left out",
                        m.destination
                    ),
                );
                continue;
            }
        };
        s.mounts.push(Mount {
            field,
            source,
            target: m.destination.clone(),
            read_only: m.read_only,
            name_hint: (!m.name.is_empty()).then(|| m.name.clone()),
        });
    }
    if let Some(deps) = c.labels.get(DEPENDS_LABEL) {
        // `service:condition:restart` entries, comma separated.
        s.depends_on = deps
            .split(',')
            .filter_map(|d| d.split(':').next())
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .collect();
    }
    s.memory = (c.memory_limit > 0).then_some(c.memory_limit);
    if let Some(h) = &c.health {
        if let Some(exec) = health_exec(&h.test) {
            s.health = Some(Health {
                exec,
                interval: h.interval.unwrap_or(ENGINE_HEALTH_INTERVAL),
                timeout: h.timeout.unwrap_or(ENGINE_HEALTH_TIMEOUT),
                retries: h.retries.unwrap_or(ENGINE_HEALTH_RETRIES),
                start_period: h.start_period.unwrap_or(Duration::ZERO),
            });
        }
    }
    s.stop_timeout = c.stop_timeout.map(Duration::from_secs);
    s.restart = restart_policy(&c.restart_policy).unwrap_or_else(|| {
        find(
            "restart_policy",
            format!(
                "{:?} is not a restart policy; the draft says never",
                c.restart_policy
            ),
        );
        RestartPolicy::Never
    });
    if c.network_mode.contains(':') {
        find(
            "network_mode",
            format!(
                "{:?}: sharing another container's network is not supported; the draft uses the default network",
                c.network_mode
            ),
        );
    } else if c.network_mode == "default" {
        s.network = Some("bridge".to_string());
    } else if !c.network_mode.is_empty() {
        s.network = Some(c.network_mode.clone());
    }
    if c.privileged {
        find(
            "privileged",
            "privileged containers are not supported; left out".to_string(),
        );
    }
    for d in &c.devices {
        find(
            "devices",
            format!("{d}: host devices cannot be given to an app; left out"),
        );
    }
    for (field, list, slot) in [
        ("cap_add", &c.cap_add, &mut s.cap_add),
        ("cap_drop", &c.cap_drop, &mut s.cap_drop),
    ] {
        for cap in list {
            match capability_name(cap) {
                Ok(cap) => slot.push(cap),
                Err(reason) => {
                    s.findings
                        .push(Finding::new(&name, field, format!("{reason}; left out")))
                }
            }
        }
    }
    for opt in &c.security_opt {
        if opt != "no-new-privileges" && opt != "no-new-privileges:true" {
            s.findings.push(Finding::new(
                &name,
                "security_opt",
                format!("{opt:?} is not mapped"),
            ));
        }
    }
    s
}
