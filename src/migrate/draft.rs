//! What `import compose` and `import container` share: a service read from either source
//! ([`Service`]), turned into manifest drafts with their secrets taken out, their host
//! folders planned (see [`super::plan`]) and every field that could not be mapped reported
//! as a [`Finding`]. No I/O here but reading what the host folders are (file, folder,
//! socket); writing is the caller's.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use crate::manifest::{is_valid_secret_name, RestartPolicy};

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

/// A mount's data as one thing two services can share.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    Folder(PathBuf),
    Volume(String),
}

impl Place {
    fn depth(&self) -> usize {
        match self {
            Place::Folder(p) => p.components().count(),
            Place::Volume(_) => 0,
        }
    }

    /// True when this folder lies inside `outer` (volumes never nest).
    fn inside(&self, outer: &Place) -> bool {
        match (self, outer) {
            (Place::Folder(a), Place::Folder(b)) => a != b && a.starts_with(b),
            _ => false,
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Folder(p) => write!(f, "bind of {}", p.display()),
            Place::Volume(v) => write!(f, "engine volume {v}"),
        }
    }
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
fn sanitize_name(name: &str, fallback: &str) -> String {
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
fn unique(base: String, taken: &mut BTreeSet<String>) -> String {
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    taken.insert(name.clone());
    name
}

/// True for env keys that hold secrets: PASSWORD, PASSWD, PASS (as a word or suffix),
/// SECRET, TOKEN, APIKEY, API_KEY, PRIVATE_KEY, RPCAUTH, in any case.
pub fn is_secret_key(key: &str) -> bool {
    let upper = key.to_ascii_uppercase();
    const ANYWHERE: &[&str] = &[
        "PASSWORD",
        "PASSWD",
        "SECRET",
        "TOKEN",
        "APIKEY",
        "API_KEY",
        "PRIVATE_KEY",
        "RPCAUTH",
    ];
    ANYWHERE.iter().any(|w| upper.contains(w))
        || upper.ends_with("PASS")
        || upper
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| word == "PASS")
}

/// True for a bitcoind rpcauth line: `user:<32 hex>$<64 hex>`.
pub fn is_rpcauth(value: &str) -> bool {
    let Some((user, rest)) = value.split_once(':') else {
        return false;
    };
    let Some((salt, hash)) = rest.split_once('$') else {
        return false;
    };
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    !user.is_empty()
        && !user.starts_with('-')
        && !user.contains(|c: char| c.is_whitespace() || c == '=')
        && hex(salt, 32)
        && hex(hash, 64)
}

/// A secret taken out of a draft, with its value for the secret file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenSecret {
    pub app: String,
    pub name: String,
    pub value: String,
}

/// Secrets known so far: per app, value → name.
#[derive(Debug, Default)]
struct SecretBook {
    by_app: BTreeMap<String, BTreeMap<String, String>>,
    taken: Vec<TakenSecret>,
}

impl SecretBook {
    /// The reference for `value` in app `id` (with dependencies `deps`): a known one of the
    /// app or a dependency, else a new secret named from `hint` when `declare`.
    fn reference(
        &mut self,
        id: &str,
        deps: &[String],
        value: &str,
        hint: &str,
        declare: bool,
    ) -> Option<String> {
        if value.is_empty() {
            return None;
        }
        if let Some(name) = self.by_app.get(id).and_then(|m| m.get(value)) {
            return Some(format!("${{secret:{name}}}"));
        }
        for dep in deps {
            if let Some(name) = self.by_app.get(dep).and_then(|m| m.get(value)) {
                return Some(format!("${{secret:{dep}/{name}}}"));
            }
        }
        if !declare {
            return None;
        }
        let own = self.by_app.entry(id.to_string()).or_default();
        let mut names: BTreeSet<String> = own.values().cloned().collect();
        let base = if is_rpcauth(value) {
            "rpcauth".to_string()
        } else {
            sanitize_name(&hint.to_ascii_lowercase(), "secret")
        };
        let name = unique(base, &mut names);
        debug_assert!(is_valid_secret_name(&name));
        own.insert(value.to_string(), name.clone());
        self.taken.push(TakenSecret {
            app: id.to_string(),
            name: name.clone(),
            value: value.to_string(),
        });
        Some(format!("${{secret:{name}}}"))
    }

    /// An argument with its secret part replaced: a whole rpcauth line or known value, or
    /// the value of `-key=value` when the key or the value says it is a secret.
    fn argument(&mut self, id: &str, deps: &[String], arg: &str) -> String {
        if let Some(r) = self.reference(id, deps, arg, "rpcauth", is_rpcauth(arg)) {
            return r;
        }
        if let Some((key, value)) = arg.split_once('=') {
            let bare = key.trim_start_matches('-');
            if !bare.is_empty() && !bare.contains(char::is_whitespace) {
                let declare = is_rpcauth(value) || is_secret_key(bare);
                if let Some(r) = self.reference(id, deps, value, bare, declare) {
                    return format!("{key}={r}");
                }
            }
        }
        arg.to_string()
    }

    /// `text` with every known secret value of the app or its dependencies (8 characters
    /// or more, so that short common words are left alone) replaced by its reference:
    /// a password inside a URL does not reach the draft either.
    fn scrub(&self, id: &str, deps: &[String], text: &str) -> String {
        let mut known: Vec<(&String, String)> = Vec::new();
        if let Some(own) = self.by_app.get(id) {
            known.extend(own.iter().map(|(v, n)| (v, format!("${{secret:{n}}}"))));
        }
        for dep in deps {
            if let Some(theirs) = self.by_app.get(dep) {
                known.extend(
                    theirs
                        .iter()
                        .map(|(v, n)| (v, format!("${{secret:{dep}/{n}}}"))),
                );
            }
        }
        known.retain(|(v, _)| v.len() >= 8);
        known.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
        let mut out = text.to_string();
        for (value, reference) in known {
            out = out.replace(value.as_str(), &reference);
        }
        out
    }

    /// An argument as the draft writes it: [`SecretBook::argument`], then scrubbed.
    fn render_argument(&mut self, id: &str, deps: &[String], arg: &str) -> String {
        let replaced = self.argument(id, deps, arg);
        if replaced == arg {
            self.scrub(id, deps, arg)
        } else {
            replaced
        }
    }

    fn declared(&self, id: &str) -> Vec<&String> {
        self.by_app
            .get(id)
            .map(|m| m.values().collect())
            .unwrap_or_default()
    }
}

/// What becomes of one mount.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MountUse {
    /// An own volume (name given later).
    Own,
    /// The same folder as another service's own volume: `(service index, mount index)`.
    Shared(usize, usize),
    /// Left out of the draft (a finding says why).
    Dropped,
}

/// Host paths a container must not be given as an app volume.
const SYSTEM_PATHS: &[&str] = &["/var/run", "/run", "/dev", "/proc", "/sys", "/etc", "/boot"];

/// `path` without `.` and `..` components (no file system access).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// One planned move of a host folder into an app volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFolder {
    pub app: String,
    pub volume: String,
    pub source: PathBuf,
    /// Another service's engine volume or host folder (`true` for an engine volume's
    /// mount point, which is copied, never renamed).
    pub engine_volume: Option<String>,
    /// Other apps that use the same folder.
    pub shared_with: Vec<String>,
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
/// `data_dir` is where targets go (None: not known, nothing is planned beyond names).
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

    // Host folders: outer folders first, dependencies before dependants.
    let mut uses: Vec<Vec<MountUse>> = services
        .iter()
        .map(|s| vec![MountUse::Own; s.mounts.len()])
        .collect();
    let rank: BTreeMap<usize, usize> = order.iter().enumerate().map(|(r, i)| (*i, r)).collect();
    let mut binds: Vec<(usize, usize, Place)> = Vec::new();
    for (si, s) in services.iter_mut().enumerate() {
        for (mi, m) in s.mounts.iter().enumerate() {
            let path = match &m.source {
                MountSource::Host(path) => normalize(path),
                MountSource::Volume { name, .. } => {
                    binds.push((si, mi, Place::Volume(name.clone())));
                    continue;
                }
                MountSource::Anonymous => continue,
            };
            let refuse = |reason: String| Finding::new(&s.name, m.field.clone(), reason);
            if let Some(sys) = SYSTEM_PATHS.iter().find(|p| path.starts_with(p)) {
                s.findings.push(refuse(format!(
                    "bind of {} (under {sys}): a host system path cannot be an app volume; left out",
                    path.display()
                )));
                uses[si][mi] = MountUse::Dropped;
                continue;
            }
            match std::fs::metadata(&path) {
                Ok(meta) if !meta.is_dir() => {
                    let what = if meta.is_file() {
                        "a single file"
                    } else {
                        "a special file"
                    };
                    s.findings.push(refuse(format!(
                        "bind of {what} {}: a volume is a folder; put the file in one of the app's volumes (or build it into the image); left out",
                        path.display()
                    )));
                    uses[si][mi] = MountUse::Dropped;
                }
                _ => binds.push((si, mi, Place::Folder(path))),
            }
        }
    }
    binds.sort_by_key(|(si, mi, p)| (p.depth(), rank[si], *mi));
    let mut planned: Vec<(usize, usize, Place)> = Vec::new();
    for (si, mi, place) in binds {
        let name = services[si].name.clone();
        let field = services[si].mounts[mi].field.clone();
        if let Some((osi, omi, _)) = planned.iter().find(|(_, _, p)| *p == place) {
            let (osi, omi) = (*osi, *omi);
            let owner = &ids[osi];
            let ro = services[si].mounts[mi].read_only;
            if osi != si && deps[si].contains(owner) && ro {
                uses[si][mi] = MountUse::Shared(osi, omi);
            } else {
                let why = if osi == si {
                    "is mounted twice by this service".to_string()
                } else {
                    format!(
                        "is also {owner}'s volume: a folder belongs to one app; another may mount it read-only as {owner}/NAME when it depends on {owner}"
                    )
                };
                let reason = format!("{place} {why}; left out");
                services[si]
                    .findings
                    .push(Finding::new(&name, field, reason));
                uses[si][mi] = MountUse::Dropped;
            }
            continue;
        }
        if let Some((osi, _, outer)) = planned.iter().find(|(_, _, p)| place.inside(p)) {
            let Place::Folder(outer) = outer else {
                continue;
            };
            let reason = format!(
                "{place} lies inside {}, planned as a volume of {}: a volume is one whole folder; left out",
                outer.display(),
                ids[*osi]
            );
            services[si]
                .findings
                .push(Finding::new(&name, field, reason));
            uses[si][mi] = MountUse::Dropped;
            continue;
        }
        planned.push((si, mi, place));
    }

    // Volume names, per service in mount order.
    let mut volume_names: Vec<Vec<Option<String>>> = Vec::new();
    for (si, s) in services.iter().enumerate() {
        let mut taken = BTreeSet::new();
        let names = s
            .mounts
            .iter()
            .enumerate()
            .map(|(mi, m)| {
                if uses[si][mi] != MountUse::Own {
                    return None;
                }
                let base = match &m.name_hint {
                    Some(hint) => sanitize_name(hint, "data"),
                    None => sanitize_name(
                        m.target.rsplit('/').find(|c| !c.is_empty()).unwrap_or(""),
                        "data",
                    ),
                };
                Some(unique(base, &mut taken))
            })
            .collect();
        volume_names.push(names);
    }
    for (si, mi, place) in &planned {
        let Place::Folder(path) = place else {
            continue;
        };
        let shared_with = services
            .iter()
            .enumerate()
            .filter(|(oi, _)| uses[*oi].contains(&MountUse::Shared(*si, *mi)))
            .map(|(oi, _)| ids[oi].clone())
            .collect();
        out.folders.push(PlannedFolder {
            app: ids[*si].clone(),
            volume: volume_names[*si][*mi].clone().unwrap_or_default(),
            source: path.clone(),
            engine_volume: None,
            shared_with,
        });
    }

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

    #[test]
    fn secret_keys_and_rpcauth_lines() {
        for k in [
            "PASSWORD",
            "db_passwd",
            "RPCPASS",
            "BITCOIN_RPC_PASS",
            "PASS_FILE",
            "client_secret",
            "API_TOKEN",
            "apikey",
            "X_API_KEY",
            "PRIVATE_KEY",
            "RPCAUTH",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in ["PASSAGE", "COMPASS_HOST", "USER", "PATH", "KEYS"] {
            assert!(!is_secret_key(k), "{k}");
        }
        let line = format!("u:{}${}", "a1".repeat(16), "0f".repeat(32));
        assert!(is_rpcauth(&line));
        assert!(!is_rpcauth(&line[..line.len() - 1]));
        assert!(!is_rpcauth("user:pass"));
        assert!(!is_rpcauth(&format!("-rpcauth={line}")));
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
