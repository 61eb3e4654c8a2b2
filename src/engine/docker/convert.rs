//! Translations between our types and the engine's: container bodies, states, image
//! references, pull progress, log frames and the tar of a file read from a container.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, ContainerSummaryStateEnum, EndpointSettings,
    HostConfig, NetworkingConfig, PortBinding as DockerPortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};

use super::ZERO_TIME_PREFIX;
use crate::engine::{ContainerSpec, RunState, LABEL_APP, LABEL_SPEC_HASH, LABEL_VERSION};

/// Splits an image reference into repository and tag or digest:
/// `localhost:5000/x:1` → (`localhost:5000/x`, `Some("1")`), `x@sha256:…` →
/// (`x`, `Some("sha256:…")`), `x` → (`x`, `None`).
pub fn split_image_ref(image: &str) -> (&str, Option<&str>) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo, Some(digest));
    }
    let after_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[after_slash..].rfind(':') {
        Some(i) => (
            &image[..after_slash + i],
            Some(&image[after_slash + i + 1..]),
        ),
        None => (image, None),
    }
}

pub(super) fn run_state(status: Option<ContainerStateStatusEnum>, running: bool) -> RunState {
    use ContainerStateStatusEnum as S;
    match status {
        Some(S::CREATED) => RunState::Created,
        Some(S::RUNNING) | Some(S::STOPPING) => RunState::Running,
        Some(S::PAUSED) => RunState::Paused,
        Some(S::RESTARTING) => RunState::Restarting,
        Some(S::REMOVING) => RunState::Removing,
        Some(S::EXITED) => RunState::Exited,
        Some(S::DEAD) => RunState::Dead,
        Some(S::EMPTY) | None if running => RunState::Running,
        Some(S::EMPTY) | None => RunState::Created,
    }
}

pub(super) fn summary_state(state: Option<ContainerSummaryStateEnum>) -> RunState {
    // The list's state enum has the same names on the wire as inspect's: one mapping.
    run_state(state.and_then(|s| s.as_ref().parse().ok()), false)
}

/// A container's name without the leading `/` the engine reports it with.
pub(super) fn bare_name(name: Option<&str>) -> String {
    name.unwrap_or_default().trim_start_matches('/').to_string()
}

/// `None` for Docker's zero time and for empty strings.
pub(super) fn real_time(t: Option<String>) -> Option<String> {
    t.filter(|t| !t.is_empty() && !t.starts_with(ZERO_TIME_PREFIX))
}

/// Whole seconds, rounded up, as the API wants them.
pub(super) fn secs_i32(d: Duration) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

pub(super) fn bytes_i64(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// The create body for `spec`, labelled with app, version and spec hash.
pub(super) fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let labels = HashMap::from([
        (LABEL_APP.to_string(), spec.app.clone()),
        (LABEL_VERSION.to_string(), spec.version.clone()),
        (LABEL_SPEC_HASH.to_string(), spec.hash()),
    ]);
    let env = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut port_bindings: HashMap<String, Option<Vec<DockerPortBinding>>> = HashMap::new();
    for p in &spec.ports {
        let key = format!("{}/{}", p.container, if p.udp { "udp" } else { "tcp" });
        // No HostIp: the engine's default, all interfaces, like `docker run -p`.
        port_bindings
            .entry(key)
            .or_default()
            .get_or_insert_with(Vec::new)
            .push(DockerPortBinding {
                host_ip: None,
                host_port: Some(p.host.to_string()),
            });
    }
    let mut exposed: Vec<String> = port_bindings.keys().cloned().collect();
    exposed.sort();
    let binds = spec
        .binds
        .iter()
        .map(|b| {
            let ro = if b.read_only { ":ro" } else { "" };
            format!("{}:{}{ro}", b.host.display(), b.container)
        })
        .collect::<Vec<_>>();
    let memory = (spec.memory_limit > 0).then(|| bytes_i64(spec.memory_limit));
    let list = |v: &[String]| (!v.is_empty()).then(|| v.to_vec());
    let host_config = HostConfig {
        cap_add: list(&spec.cap_add),
        cap_drop: list(&spec.cap_drop),
        security_opt: Some(vec!["no-new-privileges".to_string()]),
        pids_limit: Some(i64::from(spec.pids_limit)),
        group_add: (!spec.group_add.is_empty())
            .then(|| spec.group_add.iter().map(u32::to_string).collect()),
        binds: (!binds.is_empty()).then_some(binds),
        network_mode: (!spec.network.is_empty()).then(|| spec.network.clone()),
        // Swap equal to memory: the limit is the real ceiling, not memory plus as much swap.
        memory,
        memory_swap: memory,
        port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
        // The supervisor restarts crashed apps, with its own backoff; the engine must not.
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        env: Some(env),
        cmd: spec.command.clone(),
        entrypoint: spec.entrypoint.clone(),
        user: spec.user.clone(),
        labels: Some(labels),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        stop_timeout: Some(i64::from(secs_i32(spec.stop_timeout))),
        host_config: Some(host_config),
        networking_config: network_aliases(spec),
        ..Default::default()
    }
}

/// On a named network, the app id is an alias of the container, so `bitcoind:8332` works
/// beside `archipelago-bitcoind:8332`.
pub(super) fn network_aliases(spec: &ContainerSpec) -> Option<NetworkingConfig> {
    if crate::engine::is_builtin_network(&spec.network) || spec.network.is_empty() {
        return None;
    }
    let endpoint = EndpointSettings {
        aliases: Some(vec![spec.app.clone()]),
        ..Default::default()
    };
    Some(NetworkingConfig {
        endpoints_config: Some(HashMap::from([(spec.network.clone(), endpoint)])),
    })
}

/// The largest file [`ContainerRuntime::read_file`](crate::engine::ContainerRuntime::read_file) reads.
pub(super) const MAX_READ_FILE: usize = 1 << 20;

/// The content of the first regular file in a tar archive (the archive endpoint answers
/// one entry for a file); `Ok(None)` when the path was not a regular file.
pub(super) fn first_file_of_tar(tar: &[u8]) -> Result<Option<Vec<u8>>, String> {
    use std::io::Read;
    let mut archive = tar::Archive::new(tar);
    let mut entries = archive.entries().map_err(|e| format!("bad archive: {e}"))?;
    let Some(entry) = entries.next() else {
        return Ok(None);
    };
    let mut entry = entry.map_err(|e| format!("bad archive: {e}"))?;
    if !entry.header().entry_type().is_file() {
        return Ok(None);
    }
    let mut out = Vec::new();
    entry
        .by_ref()
        .take(MAX_READ_FILE as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("bad archive: {e}"))?;
    if out.len() > MAX_READ_FILE {
        return Err(format!("larger than {MAX_READ_FILE} bytes"));
    }
    Ok(Some(out))
}

/// Running byte totals of a pull, per layer.
#[derive(Default)]
pub(super) struct PullProgress {
    layers: BTreeMap<String, (u64, Option<u64>)>,
}

impl PullProgress {
    pub(super) fn update(
        &mut self,
        id: Option<&str>,
        status: &str,
        current: Option<i64>,
        total: Option<i64>,
    ) {
        let Some(id) = id else { return };
        let entry = self.layers.entry(id.to_string()).or_insert((0, None));
        if let Some(t) = total.filter(|t| *t > 0) {
            entry.1 = Some(t as u64);
        }
        // Bytes downloaded per layer, never going back: extraction reports a current of
        // its own, which would move the bar backwards, so only downloads count; a layer
        // downloaded (or already present) counts as whole.
        if let Some(c) = current.filter(|c| *c >= 0 && status.starts_with("Downloading")) {
            entry.0 = entry.0.max(c as u64);
        }
        let whole = [
            "Pull complete",
            "Download complete",
            "Already exists",
            "Extracting",
        ];
        if whole.iter().any(|w| status.starts_with(w)) {
            if let Some(t) = entry.1 {
                entry.0 = t;
            }
        }
    }

    /// (done, total) over layers whose size is known, or `None` before any is.
    pub(super) fn totals(&self) -> (Option<u64>, Option<u64>) {
        let sized: Vec<_> = self
            .layers
            .values()
            .filter_map(|(c, t)| t.map(|t| (*c.min(&t), t)))
            .collect();
        if sized.is_empty() {
            return (None, None);
        }
        let done = sized.iter().map(|(c, _)| c).sum();
        let total = sized.iter().map(|(_, t)| t).sum();
        (Some(done), Some(total))
    }
}

/// Collects log frames into whole lines.
pub(super) fn frames_to_lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_string)
        .collect()
}
