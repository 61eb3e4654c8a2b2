//! `import compose`: a compose file's services read into [`Service`]s, field by field, as
//! docker compose reads them (interpolation, `.env`, relative paths, the project's
//! networks and volumes). Whatever has no place in a manifest becomes a [`Finding`].
//!
//! Longer than 600 lines for one reason: compose has that many fields, most in a short and
//! a long form, and each is read here with the finding it can raise; splitting it by field
//! would scatter one reader of one file format.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml::Value;

use super::draft::{
    health_exec, restart_policy, Build, Finding, Health, Mount, MountSource, Service,
    ENGINE_HEALTH_INTERVAL, ENGINE_HEALTH_RETRIES, ENGINE_HEALTH_TIMEOUT,
};
use super::interpolate::{interpolate, parse_dotenv, Unresolved, Vars};
use crate::manifest::{capability_name, RestartPolicy};

/// Why a compose file cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("{path}: cannot read: {source}", path = path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: yaml: {reason}", path = path.display())]
    Yaml { path: PathBuf, reason: String },
}

/// A compose file read: its services and the findings outside any service.
#[derive(Debug)]
pub struct Compose {
    pub project: String,
    pub services: Vec<Service>,
    pub findings: Vec<Finding>,
}

/// Compose's project name rule: lowercase, `[a-z0-9_-]`, starting with a letter or digit.
fn project_name(name: &str) -> String {
    let name: String = name
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        .collect();
    name.trim_start_matches(['_', '-']).to_string()
}

/// A scalar as text (strings, numbers, booleans).
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Resolves variables in every string of `v`, reporting unresolved ones by field path.
fn resolve(v: &mut Value, path: &str, vars: &Vars, missing: &mut Vec<(String, Unresolved)>) {
    match v {
        Value::String(s) => {
            let mut found = Vec::new();
            *s = interpolate(s, vars, &mut found);
            missing.extend(found.into_iter().map(|u| (path.to_string(), u)));
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                resolve(item, &format!("{path}[{i}]"), vars, missing);
            }
        }
        Value::Mapping(map) => {
            for (k, item) in map.iter_mut() {
                let k = text(k).unwrap_or_default();
                let sub = if path.is_empty() {
                    k
                } else {
                    format!("{path}.{k}")
                };
                resolve(item, &sub, vars, missing);
            }
        }
        _ => {}
    }
}

/// A Go-style duration as compose writes them (`1m30s`, `500ms`, `10s`).
fn go_duration(text: &str) -> Option<Duration> {
    humantime::parse_duration(text.trim()).ok()
}

/// Compose's memory size: a number with an optional binary unit `b k m g` (any case,
/// optional trailing `b`), all powers of 1024.
pub fn compose_bytes(v: &Value) -> Option<u64> {
    if let Value::Number(n) = v {
        return n.as_u64();
    }
    let s = text(v)?.trim().to_ascii_lowercase();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return None,
    };
    Some((num * mult as f64) as u64)
}

/// A command or entrypoint: a list, or a string split as a shell would.
fn command(v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::Sequence(items) => items
            .iter()
            .map(|i| text(i).ok_or_else(|| "holds a value that is not text".to_string()))
            .collect(),
        other => {
            let s = text(other).ok_or("is neither a string nor a list")?;
            // The text is not echoed: it may hold a password.
            shlex::split(&s).ok_or_else(|| "has an unclosed quote; left out".to_string())
        }
    }
}

/// Fields read into the manifest, or deliberately dropped (`container_name`: archipelago
/// names its containers; `expose`: every app port is reachable on the app network).
const KNOWN: &[&str] = &[
    "image",
    "build",
    "command",
    "entrypoint",
    "user",
    "environment",
    "env_file",
    "ports",
    "volumes",
    "depends_on",
    "mem_limit",
    "memswap_limit",
    "deploy",
    "healthcheck",
    "stop_grace_period",
    "restart",
    "network_mode",
    "networks",
    "cap_add",
    "cap_drop",
    "container_name",
    "expose",
];

/// Reads a compose file. `env` is the process environment.
pub fn read(file: &Path, env: BTreeMap<String, String>) -> Result<Compose, ComposeError> {
    let src = std::fs::read_to_string(file).map_err(|source| ComposeError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let yaml_err = |reason: String| ComposeError::Yaml {
        path: file.to_path_buf(),
        reason,
    };
    let mut doc: Value = serde_yaml::from_str(&src).map_err(|e| {
        yaml_err(match e.location() {
            Some(at) => format!("line {}: {e}", at.line()),
            None => e.to_string(),
        })
    })?;
    let dir = std::path::absolute(file)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let dotenv = std::fs::read_to_string(dir.join(".env"))
        .map(|t| parse_dotenv(&t))
        .unwrap_or_default();
    let vars = Vars { env, dotenv };
    let mut missing = Vec::new();
    resolve(&mut doc, "", &vars, &mut missing);
    let file_name = file.display().to_string();
    let mut findings = Vec::new();
    let mut service_findings: BTreeMap<String, Vec<Finding>> = BTreeMap::new();
    for (path, u) in missing {
        let reason = format!("variable {} {}; read as empty text", u.var, u.reason);
        match path
            .strip_prefix("services.")
            .and_then(|p| p.split_once('.'))
        {
            Some((svc, field)) => service_findings
                .entry(svc.to_string())
                .or_default()
                .push(Finding::new(svc, field, reason)),
            None => findings.push(Finding::new(&file_name, path, reason)),
        }
    }
    let Value::Mapping(top) = doc else {
        return Err(yaml_err("not a mapping of compose fields".into()));
    };
    let project = top
        .get("name")
        .and_then(text)
        .map(|n| project_name(&n))
        .unwrap_or_else(|| {
            project_name(
                &dir.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            )
        });
    for (k, _) in &top {
        let k = text(k).unwrap_or_default();
        let known = ["version", "name", "services", "networks", "volumes"];
        if !known.contains(&k.as_str()) && !k.starts_with("x-") {
            findings.push(Finding::new(
                &file_name,
                k.clone(),
                "not mapped: a manifest has no such field",
            ));
        }
    }
    let networks = top.get("networks").cloned().unwrap_or(Value::Null);
    let volumes = top.get("volumes").cloned().unwrap_or(Value::Null);
    let ctx = Context {
        dir: &dir,
        project: &project,
        networks: &networks,
        volumes: &volumes,
        file: &file_name,
    };
    let mut services = Vec::new();
    if let Some(Value::Mapping(map)) = top.get("services") {
        for (name, def) in map {
            let name = text(name).unwrap_or_default();
            let mut s = service(&ctx, &name, def, &vars);
            let mut early = service_findings.remove(&name).unwrap_or_default();
            early.append(&mut s.findings);
            s.findings = early;
            services.push(s);
        }
    } else {
        return Err(yaml_err("no services".into()));
    }
    Ok(Compose {
        project,
        services,
        findings,
    })
}

/// What a service needs from the rest of the file.
struct Context<'a> {
    dir: &'a Path,
    project: &'a str,
    networks: &'a Value,
    volumes: &'a Value,
    file: &'a str,
}

impl Context<'_> {
    /// A host path of the file: `~` is the home folder, relative is against the file's folder.
    fn host_path(&self, p: &str) -> PathBuf {
        if let Some(rest) = p.strip_prefix("~/") {
            let home = std::env::var("HOME").unwrap_or_else(|_| "/root".to_string());
            return PathBuf::from(home).join(rest);
        }
        super::mounts::normalize(&self.dir.join(p))
    }

    /// The engine name of a top-level network or volume: its `name:`, the key itself when
    /// `external`, else `<project>_<key>`.
    fn engine_name(&self, section: &Value, key: &str) -> String {
        let def = section.get(key);
        if let Some(name) = def.and_then(|d| d.get("name")).and_then(text) {
            return name;
        }
        let external = def
            .and_then(|d| d.get("external"))
            .is_some_and(|e| matches!(e, Value::Bool(true)) || e.is_mapping());
        if external {
            key.to_string()
        } else {
            format!("{}_{key}", self.project)
        }
    }
}

fn service(ctx: &Context, name: &str, def: &Value, vars: &Vars) -> Service {
    let mut s = Service {
        name: name.to_string(),
        origin: format!("compose service {name} of {}", ctx.file),
        env_field: "environment".to_string(),
        memory_field: "mem_limit".to_string(),
        restart: RestartPolicy::Never,
        ..Service::default()
    };
    let mut find = |field: &str, reason: String| s.findings.push(Finding::new(name, field, reason));
    let Value::Mapping(def) = def else {
        find("", "is not a mapping".to_string());
        return s;
    };
    let get = |k: &str| def.get(k);
    for (k, _) in def {
        let k = text(k).unwrap_or_default();
        if !KNOWN.contains(&k.as_str()) && !k.starts_with("x-") {
            let reason = match k.as_str() {
                "privileged" => "privileged containers are not supported; left out",
                "devices" => "host devices cannot be given to an app; left out",
                _ => "not mapped: a manifest has no such field",
            };
            find(&k, reason.to_string());
        }
    }
    s.image = get("image").and_then(text);
    if let Some(b) = get("build") {
        let (context, dockerfile, args) = match b {
            Value::Mapping(m) => {
                for k in m.keys().filter_map(text) {
                    if !["context", "dockerfile", "args"].contains(&k.as_str()) {
                        s.findings
                            .push(Finding::new(name, format!("build.{k}"), "not mapped"));
                    }
                }
                let args = match m.get("args") {
                    Some(Value::Mapping(a)) => a
                        .iter()
                        .filter_map(|(k, v)| Some((text(k)?, text(v).unwrap_or_default())))
                        .collect(),
                    Some(Value::Sequence(list)) => list
                        .iter()
                        .filter_map(text)
                        .map(|l| match l.split_once('=') {
                            Some((k, v)) => (k.to_string(), v.to_string()),
                            None => (l, String::new()),
                        })
                        .collect(),
                    _ => BTreeMap::new(),
                };
                (
                    m.get("context")
                        .and_then(text)
                        .unwrap_or_else(|| ".".into()),
                    m.get("dockerfile")
                        .and_then(text)
                        .unwrap_or_else(|| "Dockerfile".into()),
                    args,
                )
            }
            other => (
                text(other).unwrap_or_else(|| ".".into()),
                "Dockerfile".into(),
                BTreeMap::new(),
            ),
        };
        s.build = Some(Build {
            context: ctx.host_path(&context),
            dockerfile,
            args,
        });
    }
    for (field, slot) in [
        ("command", &mut s.command),
        ("entrypoint", &mut s.entrypoint),
    ] {
        if let Some(v) = get(field) {
            match command(v) {
                Ok(list) => *slot = Some(list),
                Err(reason) => s.findings.push(Finding::new(name, field, reason)),
            }
        }
    }
    let mut find = |field: &str, reason: String| s.findings.push(Finding::new(name, field, reason));
    s.user = get("user").and_then(text);

    // Environment: env_file first, environment over it.
    let env_files: Vec<(String, bool)> = match get("env_file") {
        Some(Value::Sequence(list)) => list
            .iter()
            .filter_map(|e| match e {
                Value::Mapping(m) => Some((
                    m.get("path").and_then(text)?,
                    m.get("required").is_none_or(|r| r != &Value::Bool(false)),
                )),
                other => text(other).map(|p| (p, true)),
            })
            .collect(),
        Some(other) => text(other).map(|p| vec![(p, true)]).unwrap_or_default(),
        None => Vec::new(),
    };
    for (i, (path, required)) in env_files.iter().enumerate() {
        let full = ctx.host_path(path);
        match std::fs::read_to_string(&full) {
            Ok(t) => s.env.extend(parse_dotenv(&t)),
            Err(e) if *required => find(
                &format!("env_file[{i}]"),
                format!("cannot read {}: {e}", full.display()),
            ),
            Err(_) => {}
        }
    }
    let from_env = |k: &str| vars.env.get(k).cloned();
    match get("environment") {
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                let k = text(k).unwrap_or_default();
                match v {
                    Value::Null => {
                        if let Some(v) = from_env(&k) {
                            s.env.insert(k, v);
                        }
                    }
                    v => {
                        s.env.insert(k, text(v).unwrap_or_default());
                    }
                }
            }
        }
        Some(Value::Sequence(list)) => {
            for line in list.iter().filter_map(text) {
                match line.split_once('=') {
                    Some((k, v)) => {
                        s.env.insert(k.to_string(), v.to_string());
                    }
                    None => {
                        if let Some(v) = from_env(&line) {
                            s.env.insert(line, v);
                        }
                    }
                }
            }
        }
        _ => {}
    }

    if let Some(Value::Sequence(ports)) = get("ports") {
        for (i, p) in ports.iter().enumerate() {
            match port(p) {
                Ok(Some(p)) => s.ports.push(p),
                Ok(None) => {}
                Err(reason) => find(&format!("ports[{i}]"), reason),
            }
        }
    }
    if let Some(Value::Sequence(vols)) = get("volumes") {
        for (i, v) in vols.iter().enumerate() {
            let field = format!("volumes[{i}]");
            match mount(ctx, v, &field) {
                Ok(m) => s.mounts.push(m),
                Err(reason) => find(&field, reason),
            }
        }
    }
    match get("depends_on") {
        Some(Value::Sequence(list)) => s.depends_on = list.iter().filter_map(text).collect(),
        Some(Value::Mapping(m)) => {
            for (dep, cond) in m {
                let dep = text(dep).unwrap_or_default();
                let condition = cond.get("condition").and_then(text).unwrap_or_default();
                if condition == "service_completed_successfully" {
                    find(
                        &format!("depends_on.{dep}.condition"),
                        "a dependency that runs once and exits has no manifest equivalent: archipelago waits for dependencies to run and be healthy".to_string(),
                    );
                }
                s.depends_on.push(dep);
            }
        }
        _ => {}
    }

    // Memory: mem_limit, else deploy.resources.limits.memory.
    let deploy_memory = get("deploy")
        .and_then(|d| d.get("resources"))
        .and_then(|r| r.get("limits"))
        .and_then(|l| l.get("memory"));
    if let Some(v) = get("mem_limit") {
        s.memory = compose_bytes(v);
        if s.memory.is_none() {
            find("mem_limit", format!("{v:?} is not a memory size"));
        }
    } else if let Some(v) = deploy_memory {
        s.memory_field = "deploy.resources.limits.memory".to_string();
        s.memory = compose_bytes(v);
    }
    if let (Some(swap), Some(mem)) = (get("memswap_limit").and_then(compose_bytes), s.memory) {
        if swap != mem {
            find(
                "memswap_limit",
                "archipelago gives containers no swap beyond their memory limit; left out"
                    .to_string(),
            );
        }
    }
    if let Some(Value::Mapping(deploy)) = get("deploy") {
        for (k, v) in deploy {
            let k = text(k).unwrap_or_default();
            if k != "resources" {
                find(&format!("deploy.{k}"), "not mapped".to_string());
                continue;
            }
            for (rk, rv) in v.as_mapping().into_iter().flatten() {
                let rk = text(rk).unwrap_or_default();
                for (lk, _) in rv.as_mapping().into_iter().flatten() {
                    let lk = text(lk).unwrap_or_default();
                    if !(rk == "limits" && lk == "memory") {
                        find(
                            &format!("deploy.resources.{rk}.{lk}"),
                            "not mapped".to_string(),
                        );
                    }
                }
            }
        }
    }

    if let Some(h) = get("healthcheck") {
        let known = [
            "test",
            "interval",
            "timeout",
            "retries",
            "start_period",
            "disable",
        ];
        for k in h
            .as_mapping()
            .into_iter()
            .flat_map(|m| m.keys())
            .filter_map(text)
        {
            if !known.contains(&k.as_str()) {
                find(&format!("healthcheck.{k}"), "not mapped".to_string());
            }
        }
        let disabled = h.get("disable").is_some_and(|d| d == &Value::Bool(true));
        let test = match h.get("test") {
            Some(Value::Sequence(list)) => list.iter().filter_map(text).collect(),
            Some(other) => text(other)
                .map(|t| vec!["CMD-SHELL".to_string(), t])
                .unwrap_or_default(),
            None => Vec::new(),
        };
        if !disabled {
            // Zero means the engine's default, as compose passes it on.
            let dur = |k: &str, default: Duration| {
                h.get(k)
                    .and_then(text)
                    .and_then(|t| go_duration(&t))
                    .filter(|d| !d.is_zero())
                    .unwrap_or(default)
            };
            if let Some(exec) = health_exec(&test) {
                s.health = Some(Health {
                    exec,
                    interval: dur("interval", ENGINE_HEALTH_INTERVAL),
                    timeout: dur("timeout", ENGINE_HEALTH_TIMEOUT),
                    retries: h
                        .get("retries")
                        .and_then(Value::as_u64)
                        .and_then(|r| u32::try_from(r).ok())
                        .filter(|r| *r > 0)
                        .unwrap_or(ENGINE_HEALTH_RETRIES),
                    start_period: dur("start_period", Duration::ZERO),
                });
            } else if !test.is_empty() && test[0] != "NONE" {
                find(
                    "healthcheck.test",
                    format!("{:?} is not CMD, CMD-SHELL or NONE; left out", test[0]),
                );
            }
        }
    }
    if let Some(v) = get("stop_grace_period").and_then(text) {
        match go_duration(&v) {
            Some(d) => s.stop_timeout = Some(d),
            None => find("stop_grace_period", format!("{v:?} is not a duration")),
        }
    }
    if let Some(v) = get("restart").and_then(text) {
        match restart_policy(&v) {
            Some(p) => s.restart = p,
            None => find("restart", format!("{v:?} is not a restart policy")),
        }
    }
    let mode = get("network_mode").and_then(text);
    match mode.as_deref() {
        Some(m) if m.contains(':') => find(
            "network_mode",
            format!("{m:?}: sharing another container's network is not supported; the draft uses the default network"),
        ),
        Some(m) => s.network = Some(m.to_string()),
        None => {
            let names: Vec<String> = match get("networks") {
                Some(Value::Sequence(list)) => list.iter().filter_map(text).collect(),
                Some(Value::Mapping(m)) => {
                    for (k, v) in m {
                        let k = text(k).unwrap_or_default();
                        if !v.is_null() && v.as_mapping().is_none_or(|m| !m.is_empty()) {
                            find(
                                &format!("networks.{k}"),
                                "aliases and addresses are not mapped: each app is reachable by its id on its network".to_string(),
                            );
                        }
                    }
                    m.keys().filter_map(text).collect()
                }
                _ => vec!["default".to_string()],
            };
            if names.len() > 1 {
                find(
                    "networks",
                    format!(
                        "{} networks: an app joins one; the draft uses {:?}",
                        names.len(),
                        ctx.engine_name(ctx.networks, &names[0])
                    ),
                );
            }
            if let Some(first) = names.first() {
                s.network = Some(ctx.engine_name(ctx.networks, first));
            }
        }
    }
    for (field, slot) in [("cap_add", &mut s.cap_add), ("cap_drop", &mut s.cap_drop)] {
        if let Some(Value::Sequence(list)) = get(field) {
            for (i, c) in list.iter().filter_map(text).enumerate() {
                match capability_name(&c) {
                    Ok(c) => slot.push(c),
                    Err(reason) => s.findings.push(Finding::new(
                        name,
                        format!("{field}[{i}]"),
                        format!("{reason}; left out"),
                    )),
                }
            }
        }
    }
    s
}

/// One `ports` entry as `HOST:CONTAINER/PROTO`; `Ok(None)` never happens for a valid
/// entry, an `Err` says why it is not mapped.
fn port(v: &Value) -> Result<Option<String>, String> {
    let single = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0);
    let (host_ip, host, container, proto) = match v {
        Value::Mapping(m) => (
            m.get("host_ip").and_then(text),
            m.get("published").and_then(text),
            m.get("target").and_then(text).unwrap_or_default(),
            m.get("protocol")
                .and_then(text)
                .unwrap_or_else(|| "tcp".into()),
        ),
        other => {
            let s = text(other).ok_or("is not a port")?;
            let (s, proto) = match s.rsplit_once('/') {
                Some((s, p)) => (s.to_string(), p.to_string()),
                None => (s, "tcp".to_string()),
            };
            let parts: Vec<&str> = s.rsplitn(3, ':').collect();
            match parts.as_slice() {
                [c] => (None, None, c.to_string(), proto),
                [c, h] => (None, Some(h.to_string()), c.to_string(), proto),
                [c, h, ip] => (
                    Some(ip.to_string()),
                    Some(h.to_string()),
                    c.to_string(),
                    proto,
                ),
                _ => return Err("is not a port".into()),
            }
        }
    };
    let shown = match &host {
        Some(h) => format!("{h}:{container}/{proto}"),
        None => format!("{container}/{proto}"),
    };
    if let Some(ip) = host_ip.filter(|ip| !ip.is_empty() && ip != "0.0.0.0") {
        return Err(format!(
            "{ip}:{shown}: publishing on one host address is not supported (archipelago publishes on all); left out"
        ));
    }
    if container.contains('-') || host.as_deref().is_some_and(|h| h.contains('-')) {
        return Err(format!(
            "{shown}: port ranges are not supported; list each port; left out"
        ));
    }
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return Err(format!(
            "{shown}: no host port (the engine would pick one); apps on the app network reach it without publishing; left out"
        ));
    };
    match (single(&host), single(&container), proto.as_str()) {
        (Some(h), Some(c), "tcp" | "udp") => Ok(Some(format!("{h}:{c}/{proto}"))),
        _ => Err(format!("{shown} is not a port mapping")),
    }
}

/// One `volumes` entry.
fn mount(ctx: &Context, v: &Value, field: &str) -> Result<Mount, String> {
    let (kind, source, target, read_only) = match v {
        Value::Mapping(m) => {
            let kind = m
                .get("type")
                .and_then(text)
                .unwrap_or_else(|| "volume".into());
            (
                kind,
                m.get("source").and_then(text).unwrap_or_default(),
                m.get("target").and_then(text).unwrap_or_default(),
                m.get("read_only").is_some_and(|r| r == &Value::Bool(true)),
            )
        }
        other => {
            let s = text(other).ok_or("is not a volume")?;
            let parts: Vec<&str> = s.split(':').collect();
            let (source, target, mode) = match parts.as_slice() {
                [t] => ("", *t, ""),
                [s, t] => (*s, *t, ""),
                [s, t, m] => (*s, *t, *m),
                _ => return Err(format!("{s:?} is not a volume")),
            };
            let host = source.starts_with(['/', '.', '~']);
            let kind = if host { "bind" } else { "volume" };
            let ro = mode.split(',').any(|m| m == "ro");
            (kind.to_string(), source.to_string(), target.to_string(), ro)
        }
    };
    if !target.starts_with('/') {
        return Err(format!(
            "{target:?} is not an absolute path in the container"
        ));
    }
    let name_hint = (kind == "volume" && !source.is_empty()).then(|| source.clone());
    let source = match kind.as_str() {
        "bind" => MountSource::Host(ctx.host_path(&source)),
        "volume" if source.is_empty() => MountSource::Anonymous,
        "volume" => MountSource::Volume {
            name: ctx.engine_name(ctx.volumes, &source),
            mountpoint: None,
        },
        other => return Err(format!("{other} mounts are not supported; left out")),
    };
    Ok(Mount {
        field: field.to_string(),
        source,
        target,
        read_only,
        name_hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_durations_and_ports() {
        let v = |s: &str| Value::String(s.into());
        assert_eq!(compose_bytes(&v("512m")), Some(512 << 20));
        assert_eq!(compose_bytes(&v("1g")), Some(1 << 30));
        assert_eq!(compose_bytes(&v("1.5GB")), Some(1536 << 20));
        assert_eq!(
            compose_bytes(&Value::Number(67108864.into())),
            Some(64 << 20)
        );
        assert_eq!(compose_bytes(&v("lots")), None);
        assert_eq!(go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(go_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(port(&v("8080:80")), Ok(Some("8080:80/tcp".into())));
        assert_eq!(port(&v("53:53/udp")), Ok(Some("53:53/udp".into())));
        assert!(port(&v("127.0.0.1:80:80")).is_err());
        assert!(port(&v("8000-8001:8000-8001")).is_err());
        assert!(port(&v("80")).is_err());
        assert_eq!(project_name("My Node_1"), "mynode_1");
    }
}
