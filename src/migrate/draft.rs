//! What `import compose` and `import container` share: a service read from either source
//! ([`Service`]), turned into manifest drafts with their secrets taken out, their host
//! folders planned (see [`super::plan`]) and every field that could not be mapped reported
//! as a [`Finding`]. No I/O here but looking at what the host folders are (file, folder,
//! socket); writing is the caller's. Over 600 lines only with its table tests.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use super::mounts::{share_mounts, MountUse, PlannedFolder};
use super::secret_scan::{is_rpcauth, is_secret_key, SecretBook, TakenSecret};
use crate::manifest::RestartPolicy;

/// One field that could not be mapped, or was mapped with a loss: `SERVICE: FIELD: reason`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub service: String,
    pub field: String,
    pub reason: String,
}

impl Finding {
    pub fn new(service: &str, field: impl Into<String>, reason: impl Into<String>) -> Finding {
        Finding {
            service: service.to_string(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.service, self.field, self.reason)
    }
}

/// Where a mount's data is on the old node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A host path (absolute).
    Host(PathBuf),
    /// An engine volume by name; its mount point when the engine said it.
    Volume {
        name: String,
        mountpoint: Option<PathBuf>,
    },
    /// An anonymous volume: the engine made it, nothing names it.
    Anonymous,
}

/// One mount of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The source's field, for findings (`volumes[1]`, `mounts[0]`).
    pub field: String,
    pub source: MountSource,
    /// The path inside the container.
    pub target: String,
    pub read_only: bool,
    /// What the draft's volume is named after when not the target's last component
    /// (a compose volume's key).
    pub name_hint: Option<String>,
}

/// A health check as compose and the engine write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The command, as an exec list.
    pub exec: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

/// The engine's health defaults, which apply where compose or a run leaves a timing out.
pub const ENGINE_HEALTH_INTERVAL: Duration = Duration::from_secs(30);
pub const ENGINE_HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
pub const ENGINE_HEALTH_RETRIES: u32 = 3;

/// `CMD`/`CMD-SHELL`/`NONE` as an exec list; `None` for no check.
pub fn health_exec(test: &[String]) -> Option<Vec<String>> {
    match test.split_first() {
        Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => Some(rest.to_vec()),
        Some((kind, rest)) if kind == "CMD-SHELL" && !rest.is_empty() => Some(vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            rest.join(" "),
        ]),
        _ => None,
    }
}

/// Build from source: the context as an absolute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    pub context: PathBuf,
    pub dockerfile: String,
    pub args: BTreeMap<String, String>,
}

/// A compose service or a container, read into the manifest's terms.
#[derive(Debug, Clone, Default)]
pub struct Service {
    /// The compose service name or the container name: the draft's `name`.
    pub name: String,
    /// Where it came from, for the draft's description.
    pub origin: String,
    pub image: Option<String>,
    pub build: Option<Build>,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub user: Option<String>,
    pub env: BTreeMap<String, String>,
    /// `HOST:CONTAINER/PROTO`.
    pub ports: Vec<String>,
    pub mounts: Vec<Mount>,
    /// Names of services this one depends on.
    pub depends_on: Vec<String>,
    /// Bytes; `None` when unlimited.
    pub memory: Option<u64>,
    /// The field that would hold the memory limit, for the finding when there is none.
    pub memory_field: String,
    pub health: Option<Health>,
    pub stop_timeout: Option<Duration>,
    pub restart: RestartPolicy,
    pub network: Option<String>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// The env field's name in the source (`environment`, `env`), for findings.
    pub env_field: String,
    pub findings: Vec<Finding>,
}

/// The memory limit a draft gets when the source has none, so that it validates.
pub const DEFAULT_MEMORY: u64 = 1 << 30;
/// The engine's smallest memory limit (docs/manifest.md).
const MIN_MEMORY: u64 = 6 << 20;

/// Bytes in the largest IEC unit that divides them (`512Mi`, `1Gi`), else plain bytes.
pub fn iec(bytes: u64) -> String {
    for (unit, size) in [
        ("Ti", 1u64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if bytes >= size && bytes % size == 0 {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

/// An app id from a service name: lowercase, `[a-z0-9-]`, at most 63 characters.
pub fn sanitize_id(name: &str) -> String {
    let mut id: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    id = id.trim_start_matches('-').to_string();
    id.truncate(63);
    let id = id.trim_end_matches('-').to_string();
    if id.is_empty() {
        "app".to_string()
    } else {
        id
    }
}

/// A volume or secret name: `[A-Za-z0-9_.-]`, not starting with `.` or `-`.
pub(super) fn sanitize_name(name: &str, fallback: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    out = out.trim_start_matches(['.', '-']).to_string();
    out.truncate(64);
    if out.is_empty() || out.contains("..") {
        fallback.to_string()
    } else {
        out
    }
}

/// `base`, or `base-2`, `base-3`… whichever is not in `taken`; the result is taken.
pub(super) fn unique(base: String, taken: &mut BTreeSet<String>) -> String {
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    taken.insert(name.clone());
    name
}

/// The drafts of one import, before anything is written.
#[derive(Debug, Default)]
pub struct Drafts {
    /// `(id, manifest text)` in dependency order.
    pub manifests: Vec<(String, String)>,
    pub secrets: Vec<TakenSecret>,
    pub folders: Vec<PlannedFolder>,
    /// Engine volumes whose mount point is not known (compose): `(app, volume, name)`.
    pub engine_volumes: Vec<(String, String, String)>,
    pub findings: Vec<Finding>,
}

/// Services in dependency order (dependencies first, else as given); unknown dependencies
/// are dropped with a finding.
fn order(services: &mut [Service]) -> Vec<usize> {
    let names: BTreeSet<String> = services.iter().map(|s| s.name.clone()).collect();
    for s in services.iter_mut() {
        let (known, unknown): (Vec<String>, Vec<String>) = s
            .depends_on
            .iter()
            .cloned()
            .partition(|d| names.contains(d));
        for d in unknown {
            let reason = format!("{d:?} is not one of the imported services; dependency left out");
            s.findings.push(Finding::new(&s.name, "depends_on", reason));
        }
        s.depends_on = known;
    }
    let mut done: Vec<usize> = Vec::new();
    let mut placed = vec![false; services.len()];
    while done.len() < services.len() {
        let before = done.len();
        for (i, s) in services.iter().enumerate() {
            let ready = s.depends_on.iter().all(|d| {
                services
                    .iter()
                    .position(|o| &o.name == d)
                    .is_some_and(|j| placed[j])
            });
            if !placed[i] && ready {
                placed[i] = true;
                done.push(i);
            }
        }
        if done.len() == before {
            // A cycle: the rest in file order; validation reports the cycle.
            done.extend((0..services.len()).filter(|i| !placed[*i]));
            break;
        }
    }
    done
}

fn strings(list: &[String]) -> Value {
    Value::Sequence(list.iter().map(|s| Value::String(s.clone())).collect())
}

fn key(k: &str) -> Value {
    Value::String(k.to_string())
}

fn duration(d: Duration) -> Value {
    Value::String(humantime::format_duration(d).to_string())
}

/// Turns services into drafts: ids, secrets, volumes and the data plan's folders.
/// `draft_root` is the folder the drafts go to (`<draft_root>/<id>/manifest.yml`), against
/// which build contexts are made relative.
pub fn assemble(mut services: Vec<Service>, draft_root: &Path) -> Drafts {
    let mut out = Drafts::default();
    let order = order(&mut services);
    // Ids, unique.
    let mut taken = BTreeSet::new();
    let ids: Vec<String> = services
        .iter()
        .map(|s| unique(sanitize_id(&s.name), &mut taken))
        .collect();
    let id_of = |name: &str| -> String {
        services
            .iter()
            .position(|s| s.name == name)
            .map(|i| ids[i].clone())
            .unwrap_or_default()
    };
    let deps: Vec<Vec<String>> = services
        .iter()
        .map(|s| s.depends_on.iter().map(|d| id_of(d)).collect())
        .collect();

    let shares = share_mounts(&mut services, &ids, &deps, &order);
    out.folders = shares.folders;
    let (uses, volume_names) = (shares.uses, shares.names);

    let mut book = SecretBook::default();
    for &si in &order {
        let s = &services[si];
        let id = &ids[si];
        let mut findings = s.findings.clone();
        let mut container = Mapping::new();
        match (&s.image, &s.build) {
            (_, Some(build)) => {
                let dir = draft_root.join(id);
                let mut b = Mapping::new();
                let context = match build.context.strip_prefix(&dir) {
                    Ok(rel) if rel.as_os_str().is_empty() => PathBuf::from("."),
                    Ok(rel) => rel.to_path_buf(),
                    Err(_) => {
                        findings.push(Finding::new(
                            &s.name,
                            "build.context",
                            format!(
                                "{} is outside the draft folder {}: copy the build context into it; the draft says `.`",
                                build.context.display(),
                                dir.display()
                            ),
                        ));
                        PathBuf::from(".")
                    }
                };
                b.insert(key("context"), key(&context.to_string_lossy()));
                b.insert(key("dockerfile"), key(&build.dockerfile));
                let mut args = Mapping::new();
                for (k, v) in &build.args {
                    if is_secret_key(k) || is_rpcauth(v) {
                        findings.push(Finding::new(
                            &s.name,
                            format!("build.args.{k}"),
                            "looks like a secret, and build arguments stay in the image's history; left out",
                        ));
                    } else {
                        args.insert(key(k), key(v));
                    }
                }
                if !args.is_empty() {
                    b.insert(key("args"), Value::Mapping(args));
                }
                container.insert(key("build"), Value::Mapping(b));
            }
            (Some(image), None) => {
                container.insert(key("image"), key(image));
            }
            (None, None) => {
                findings.push(Finding::new(
                    &s.name,
                    "image",
                    "neither image nor build: the draft names image `busybox` to be replaced",
                ));
                container.insert(key("image"), key("busybox"));
            }
        }
        let d = &deps[si];
        // Every secret of the service is declared before any field is written, so that a
        // value inside another field (a URL) is replaced whatever the order.
        let args = s.command.iter().chain(&s.entrypoint).flatten();
        for a in args {
            book.argument(id, d, a);
        }
        for (k, v) in &s.env {
            book.reference(id, d, v, k, is_secret_key(k) || is_rpcauth(v));
        }
        if let Some(cmd) = &s.command {
            let args: Vec<String> = cmd.iter().map(|a| book.render_argument(id, d, a)).collect();
            container.insert(key("command"), strings(&args));
        }
        if let Some(ep) = &s.entrypoint {
            let args: Vec<String> = ep.iter().map(|a| book.render_argument(id, d, a)).collect();
            container.insert(key("entrypoint"), strings(&args));
        }
        if let Some(user) = &s.user {
            container.insert(key("user"), key(user));
        }
        if !s.env.is_empty() {
            let mut env = Mapping::new();
            for (k, v) in &s.env {
                let value = book
                    .reference(id, d, v, k, false)
                    .unwrap_or_else(|| book.scrub(id, d, v));
                env.insert(key(k), key(&value));
            }
            container.insert(key("env"), Value::Mapping(env));
        }
        if !s.ports.is_empty() {
            container.insert(key("ports"), strings(&s.ports));
        }
        let mut volumes = Vec::new();
        for (mi, m) in s.mounts.iter().enumerate() {
            let ro = if m.read_only { ":ro" } else { "" };
            match &uses[si][mi] {
                MountUse::Dropped => {}
                MountUse::Shared(osi, omi) => {
                    let owner = &ids[*osi];
                    let name = volume_names[*osi][*omi].clone().unwrap_or_default();
                    volumes.push(format!("{owner}/{name}:{}:ro", m.target));
                }
                MountUse::Own => {
                    let name = volume_names[si][mi].clone().unwrap_or_default();
                    volumes.push(format!("{name}:{}{ro}", m.target));
                    match &m.source {
                        MountSource::Volume {
                            name: vol,
                            mountpoint: Some(mp),
                        } => out.folders.push(PlannedFolder {
                            app: id.clone(),
                            volume: name,
                            source: mp.clone(),
                            engine_volume: Some(vol.clone()),
                            shared_with: Vec::new(),
                        }),
                        MountSource::Volume {
                            name: vol,
                            mountpoint: None,
                        } => out.engine_volumes.push((id.clone(), name, vol.clone())),
                        MountSource::Anonymous => findings.push(Finding::new(
                            &s.name,
                            m.field.clone(),
                            format!(
                                "anonymous volume at {}: the draft gets an empty volume {name}; what the engine's anonymous volume holds is not carried over",
                                m.target
                            ),
                        )),
                        MountSource::Host(_) => {}
                    }
                }
            }
        }
        if !volumes.is_empty() {
            container.insert(key("volumes"), strings(&volumes));
        }
        if !s.cap_add.is_empty() {
            container.insert(key("cap_add"), strings(&s.cap_add));
        }
        if !s.cap_drop.is_empty() {
            container.insert(key("cap_drop"), strings(&s.cap_drop));
        }
        if let Some(network) = &s.network {
            container.insert(key("network"), key(network));
        }
        let memory = match s.memory {
            Some(bytes) if bytes >= MIN_MEMORY => bytes,
            Some(bytes) => {
                findings.push(Finding::new(
                    &s.name,
                    s.memory_field.clone(),
                    format!(
                        "{bytes} bytes is below the engine's minimum of 6Mi; the draft says 6Mi"
                    ),
                ));
                MIN_MEMORY
            }
            None => {
                findings.push(Finding::new(
                    &s.name,
                    s.memory_field.clone(),
                    "no memory limit; the draft says 1Gi: set what the app needs",
                ));
                DEFAULT_MEMORY
            }
        };
        container.insert(key("memory_limit"), key(&iec(memory)));
        if let Some(t) = s.stop_timeout {
            container.insert(key("stop_timeout"), duration(t));
        }
        let restart = match s.restart {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        };
        container.insert(key("restart"), key(restart));
        if let Some(h) = &s.health {
            let exec: Vec<String> = h
                .exec
                .iter()
                .map(|a| book.render_argument(id, d, a))
                .collect();
            let mut health = Mapping::new();
            health.insert(key("exec"), strings(&exec));
            health.insert(key("interval"), duration(h.interval));
            health.insert(key("timeout"), duration(h.timeout));
            health.insert(key("retries"), Value::Number(h.retries.into()));
            health.insert(key("start_period"), duration(h.start_period));
            container.insert(key("health"), Value::Mapping(health));
        }

        let mut m = Mapping::new();
        m.insert(key("id"), key(id));
        m.insert(key("name"), key(&s.name));
        m.insert(key("version"), key(&version_of(s)));
        m.insert(
            key("description"),
            key(&format!("Imported from {}", s.origin)),
        );
        if !d.is_empty() {
            m.insert(key("dependencies"), strings(d));
        }
        m.insert(key("container"), Value::Mapping(container));
        let declared = book.declared(id);
        if !declared.is_empty() {
            let mut secrets = Mapping::new();
            let mut names: Vec<&String> = declared;
            names.sort();
            for name in names {
                let mut kind = Mapping::new();
                kind.insert(key("kind"), key("imported"));
                secrets.insert(key(name), Value::Mapping(kind));
            }
            m.insert(key("secrets"), Value::Mapping(secrets));
        }
        // Serializing a mapping of strings cannot fail.
        let yaml = serde_yaml::to_string(&Value::Mapping(m)).unwrap_or_default();
        let text = format!(
            "# Draft made by `archipelago import` from {}.\n# Check it, then move it into the catalog (docs/migrate.md).\n{yaml}",
            s.origin
        );
        out.manifests.push((id.clone(), text));
        out.findings.extend(findings);
    }
    out.secrets = book.taken;
    out
}

/// The image's tag when it is a valid version, else `imported`.
fn version_of(s: &Service) -> String {
    let Some(image) = &s.image else {
        return "imported".to_string();
    };
    let image = image.split('@').next().unwrap_or(image);
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag))
            if !tag.is_empty()
                && tag.len() <= 128
                && (tag.as_bytes()[0].is_ascii_alphanumeric() || tag.starts_with('_'))
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) =>
        {
            tag.to_string()
        }
        _ => "imported".to_string(),
    }
}

/// `no` → never, `always`/`unless-stopped` → always, `on-failure[:N]` → on-failure.
pub fn restart_policy(text: &str) -> Option<RestartPolicy> {
    match text.split(':').next().unwrap_or_default() {
        "no" | "" => Some(RestartPolicy::Never),
        "always" | "unless-stopped" => Some(RestartPolicy::Always),
        "on-failure" => Some(RestartPolicy::OnFailure),
        _ => None,
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::AppManifest;

    /// Awkward services still give drafts that load and validate.
    #[test]
    fn awkward_services_still_validate() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir_all(&shared).unwrap();
        let service = |name: &str| Service {
            name: name.into(),
            origin: "a test".into(),
            image: Some("x/y".into()),
            memory_field: "mem_limit".into(),
            ..Service::default()
        };
        let mut a = service("a_b");
        a.memory = Some(1 << 20);
        a.env.insert("Api-Token".into(), "value-one-long".into());
        a.mounts.push(Mount {
            field: "volumes[0]".into(),
            source: MountSource::Host(shared.clone()),
            target: "/".into(),
            read_only: false,
            name_hint: None,
        });
        let mut b = service("A-B");
        b.depends_on = vec!["a_b".into()];
        b.command = Some(vec!["--token=value-one-long".into(), "x".into()]);
        b.mounts.push(Mount {
            field: "volumes[0]".into(),
            source: MountSource::Host(shared),
            target: "/in".into(),
            read_only: true,
            name_hint: None,
        });
        b.health = Some(Health {
            exec: vec!["check".into()],
            interval: ENGINE_HEALTH_INTERVAL,
            timeout: ENGINE_HEALTH_TIMEOUT,
            retries: ENGINE_HEALTH_RETRIES,
            start_period: Duration::ZERO,
        });
        let drafts = assemble(vec![b, a], dir.path());
        let ids: Vec<&str> = drafts.manifests.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["a-b-2", "a-b"], "dependency first, ids unique");
        for (id, text) in &drafts.manifests {
            let path = dir.path().join(id).join("manifest.yml");
            let m = AppManifest::from_yaml(&path, text).expect("parses");
            assert_eq!(m.validate(&path, &dir.path().join(id)), vec![], "{text}");
            assert!(!text.contains("value-one-long"), "{text}");
        }
        let (_, b_text) = &drafts.manifests[1];
        assert!(
            b_text.contains("--token=${secret:a-b-2/api-token}"),
            "{b_text}"
        );
        assert!(b_text.contains("a-b-2/data:/in:ro"), "{b_text}");
        let lines: Vec<String> = drafts.findings.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "a_b: mem_limit: 1048576 bytes is below the engine's minimum of 6Mi; the draft says 6Mi",
                "A-B: mem_limit: no memory limit; the draft says 1Gi: set what the app needs",
            ]
        );
        assert_eq!(drafts.secrets.len(), 1);
    }

    #[test]
    fn names_and_sizes() {
        assert_eq!(sanitize_id("My_Service.1"), "my-service-1");
        assert_eq!(sanitize_id("__"), "app");
        assert_eq!(sanitize_name(".bitcoin", "data"), "bitcoin");
        assert_eq!(sanitize_name("", "data"), "data");
        assert_eq!(iec(512 << 20), "512Mi");
        assert_eq!(iec(1 << 30), "1Gi");
        assert_eq!(iec(1536 << 20), "1536Mi");
        assert_eq!(iec(1_000_000_000), "1000000000");
        let mut taken = BTreeSet::new();
        assert_eq!(unique("data".into(), &mut taken), "data");
        assert_eq!(unique("data".into(), &mut taken), "data-2");
        let s = |image: &str| Service {
            image: Some(image.into()),
            ..Service::default()
        };
        assert_eq!(version_of(&s("reg:5000/a/b:27.1")), "27.1");
        assert_eq!(version_of(&s("reg:5000/a/b")), "imported");
        assert_eq!(version_of(&s("b:1@sha256:00")), "1");
        assert_eq!(
            restart_policy("on-failure:3"),
            Some(RestartPolicy::OnFailure)
        );
        assert_eq!(
            restart_policy("unless-stopped"),
            Some(RestartPolicy::Always)
        );
        assert_eq!(
            health_exec(&["CMD-SHELL".into(), "true".into()]),
            Some(vec!["/bin/sh".into(), "-c".into(), "true".into()])
        );
        assert_eq!(health_exec(&["NONE".into()]), None);
    }
}
