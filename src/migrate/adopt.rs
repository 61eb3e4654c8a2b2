//! Adoption: a running container archipelago did not create becomes an app's container
//! without a restart, when it matches what the app's manifest would create.
//!
//! This is the pure half: [`compare`] puts a [`ForeignContainer`] beside the manifest and
//! says, field by field, what differs, which secret values the container holds (an
//! `${secret:NAME}` of the manifest read back out of the container's env and command),
//! what adoption changes live and what only the next recreate brings. The operation that
//! acts on it is `ops::adopt`. Over 600 lines only with its table tests, one row a field.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use super::ENGINE_ENV;
use crate::engine::{ContainerSpec, ForeignContainer};

/// One field in which the container is not what the manifest would create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub field: String,
    pub reason: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// What the manifest would create, as adoption compares it: the env, command and
/// entrypoint as written (with their `${secret:…}` references), and the rest as a spec.
pub struct Wanted<'a> {
    pub env: &'a BTreeMap<String, String>,
    pub command: Option<&'a [String]>,
    pub entrypoint: Option<&'a [String]>,
    /// The spec made from the manifest without env, command and entrypoint.
    pub spec: &'a ContainerSpec,
    /// The id of the manifest's image on the engine; `None` when it is not there.
    pub image_id: Option<&'a str>,
}

/// How the manifest's references are read while comparing.
pub struct Lookup<'a> {
    /// Renders every reference that is not one of the app's own secrets (a dependency's
    /// secret, an onion address) in a piece of text.
    pub render: &'a dyn Fn(&str) -> Result<String, String>,
    /// The app's own secret `NAME`, when its file exists already.
    pub stored: &'a dyn Fn(&str) -> Option<String>,
    /// A host path with every link followed; the path itself when that fails.
    pub canonical: &'a dyn Fn(&Path) -> PathBuf,
}

/// The outcome of [`compare`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Empty when the container may be adopted.
    pub mismatches: Vec<Mismatch>,
    /// The app's own secrets as the container holds them, by name.
    pub secrets: BTreeMap<String, String>,
    /// What adoption changes on the running container (no restart).
    pub live: Vec<String>,
    /// What differs but only the next recreate of the container changes.
    pub later: Vec<String>,
}

/// Puts the container beside what the manifest would create.
pub fn compare(c: &ForeignContainer, w: &Wanted<'_>, look: &Lookup<'_>) -> Comparison {
    let mut cmp = Comparison::default();
    let mut found = Found::default();
    compare_image(c, w, &mut cmp);
    compare_args(
        "entrypoint",
        &c.entrypoint,
        w.entrypoint,
        &c.image_entrypoint,
        look,
        &mut found,
        &mut cmp,
    );
    // Docker drops the image's Cmd when a run names its own entrypoint.
    let default_command: &[String] = if w.entrypoint.is_some() {
        &[]
    } else {
        &c.image_command
    };
    compare_args(
        "command",
        &c.command,
        w.command,
        default_command,
        look,
        &mut found,
        &mut cmp,
    );
    compare_env(c, w, look, &mut found, &mut cmp);
    let user = w.spec.user.clone().unwrap_or_else(|| c.image_user.clone());
    if c.user != user {
        cmp.mismatch(
            "user",
            format!(
                "the container runs as {:?}, the manifest as {user:?}",
                c.user
            ),
        );
    }
    compare_mounts(c, w.spec, look, &mut cmp);
    let ports: BTreeSet<_> = c.ports.iter().collect();
    let wanted_ports: BTreeSet<_> = w.spec.ports.iter().collect();
    if ports != wanted_ports {
        let show = |p: &BTreeSet<_>| -> String {
            let list: Vec<String> = p
                .iter()
                .map(|p: &&crate::engine::PortBinding| {
                    format!(
                        "{}:{}{}",
                        p.host,
                        p.container,
                        if p.udp { "/udp" } else { "" }
                    )
                })
                .collect();
            format!("[{}]", list.join(", "))
        };
        cmp.mismatch(
            "ports",
            format!(
                "the container publishes {}, the manifest {}",
                show(&ports),
                show(&wanted_ports)
            ),
        );
    }
    let network = |n: &str| {
        if n == "default" {
            "bridge".to_string()
        } else {
            n.to_string()
        }
    };
    if network(&c.network_mode) != network(&w.spec.network) {
        cmp.mismatch(
            "network",
            format!(
                "the container is on {:?}, the manifest on {:?}",
                c.network_mode, w.spec.network
            ),
        );
    }
    if c.memory_limit != w.spec.memory_limit {
        let limit = |b: u64| {
            if b == 0 {
                "no limit".to_string()
            } else {
                format!("{b} bytes")
            }
        };
        cmp.mismatch(
            "memory_limit",
            format!(
                "the container has {}, the manifest {} (`docker update --memory` changes a running container)",
                limit(c.memory_limit),
                limit(w.spec.memory_limit)
            ),
        );
    }
    if c.privileged {
        cmp.mismatch(
            "privileged",
            "the container is privileged; an app never is".into(),
        );
    }
    if !c.devices.is_empty() {
        cmp.mismatch(
            "devices",
            format!(
                "the container has host devices {:?}; an app has none",
                c.devices
            ),
        );
    }
    found.check(look, &mut cmp);
    if c.restart_policy != "no" {
        cmp.live.push(format!(
            "restart policy {} → no (archipelago restarts the app itself)",
            c.restart_policy
        ));
    }
    if c.pids_limit.filter(|p| *p > 0) != Some(i64::from(w.spec.pids_limit)) {
        cmp.live.push(format!("pids limit → {}", w.spec.pids_limit));
    }
    if !c
        .security_opt
        .iter()
        .any(|o| o.starts_with("no-new-privileges"))
    {
        cmp.later.push("no-new-privileges".into());
    }
    let dropped: BTreeSet<_> = c
        .cap_drop
        .iter()
        .map(|s| s.trim_start_matches("CAP_"))
        .collect();
    let missing: Vec<_> = w
        .spec
        .cap_drop
        .iter()
        .map(|s| s.trim_start_matches("CAP_"))
        .filter(|cap| !dropped.contains(cap) && !dropped.contains("ALL"))
        .collect();
    if !missing.is_empty() {
        cmp.later
            .push(format!("capabilities dropped: {}", missing.join(", ")));
    }
    let added: BTreeSet<_> = c
        .cap_add
        .iter()
        .map(|s| s.trim_start_matches("CAP_"))
        .collect();
    let wanted_added: BTreeSet<_> = w
        .spec
        .cap_add
        .iter()
        .map(|s| s.trim_start_matches("CAP_"))
        .collect();
    if added != wanted_added {
        cmp.later.push(format!(
            "capabilities added: {:?} → {:?}",
            added.into_iter().collect::<Vec<_>>(),
            wanted_added.into_iter().collect::<Vec<_>>()
        ));
    }
    cmp
}

impl Comparison {
    fn mismatch(&mut self, field: impl Into<String>, reason: String) {
        self.mismatches.push(Mismatch {
            field: field.into(),
            reason,
        });
    }
}

fn short(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

fn compare_image(c: &ForeignContainer, w: &Wanted<'_>, cmp: &mut Comparison) {
    match w.image_id {
        Some(id) if id == c.image_id => {}
        Some(id) => cmp.mismatch(
            "image",
            format!(
                "the container runs {} ({}), the manifest's {} is {}",
                c.image,
                short(&c.image_id),
                w.spec.image,
                short(id)
            ),
        ),
        None => cmp.mismatch(
            "image",
            format!(
                "the container runs {} ({}); the manifest's {} is not on the engine",
                c.image,
                short(&c.image_id),
                w.spec.image
            ),
        ),
    }
}

/// Secret values read out of the container, and where they were read.
#[derive(Default)]
struct Found {
    values: BTreeMap<String, (String, String)>,
    conflicts: BTreeSet<String>,
}

impl Found {
    fn add(&mut self, name: &str, value: String, field: &str) {
        match self.values.get(name) {
            Some((v, _)) if *v != value => {
                self.conflicts.insert(name.to_string());
            }
            Some(_) => {}
            None => {
                self.values
                    .insert(name.to_string(), (value, field.to_string()));
            }
        }
    }

    /// Two fields holding different values for one secret, or a value that is not the
    /// stored one, are mismatches; the rest are the secrets adoption writes.
    fn check(self, look: &Lookup<'_>, cmp: &mut Comparison) {
        for name in &self.conflicts {
            cmp.mismatch(
                format!("secrets.{name}"),
                "the container holds two different values for it".into(),
            );
        }
        for (name, (value, field)) in self.values {
            if self.conflicts.contains(&name) {
                continue;
            }
            match (look.stored)(&name) {
                Some(stored) if stored != value => cmp.mismatch(
                    format!("secrets.{name}"),
                    format!("{field} holds another value than the stored secret"),
                ),
                _ => {
                    cmp.secrets.insert(name, value);
                }
            }
        }
    }
}

/// Matches `actual` against a manifest `template`: its own `${secret:NAME}` references
/// are holes whose values are collected, everything else is rendered and must be equal.
/// `false` when it does not match. Values are never put in a message.
fn matches(
    template: &str,
    actual: &str,
    field: &str,
    look: &Lookup<'_>,
    found: &mut Found,
) -> Result<bool, String> {
    const OPEN: &str = "${secret:";
    // Literal pieces around the app's own references.
    let mut literals = Vec::new();
    let mut names = Vec::new();
    let mut rest = template;
    let mut literal = String::new();
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let Some(end) = after.find('}') else { break };
        let reference = &after[..end];
        literal.push_str(&rest[..start]);
        if reference.contains('/') {
            // A dependency's secret: rendered like any text.
            literal.push_str(&rest[start..start + OPEN.len() + end + 1]);
        } else {
            literals.push(std::mem::take(&mut literal));
            names.push(reference.to_string());
        }
        rest = &after[end + 1..];
    }
    literal.push_str(rest);
    literals.push(literal);
    let literals: Vec<String> = literals
        .iter()
        .map(|l| (look.render)(l))
        .collect::<Result<_, _>>()?;
    let Some(mut tail) = actual.strip_prefix(literals[0].as_str()) else {
        return Ok(false);
    };
    let mut values = Vec::new();
    for (i, _) in names.iter().enumerate() {
        let next = &literals[i + 1];
        let last = i + 1 == names.len();
        let cut = if last {
            if !tail.ends_with(next.as_str()) {
                return Ok(false);
            }
            tail.len() - next.len()
        } else if next.is_empty() {
            return Err("two references next to each other cannot be told apart".into());
        } else {
            match tail.find(next.as_str()) {
                Some(at) => at,
                None => return Ok(false),
            }
        };
        values.push(tail[..cut].to_string());
        tail = &tail[cut + next.len()..];
    }
    if names.is_empty() && !tail.is_empty() {
        return Ok(false);
    }
    for (name, value) in names.iter().zip(values) {
        found.add(name, value, field);
    }
    Ok(true)
}

fn compare_args(
    field: &str,
    actual: &[String],
    wanted: Option<&[String]>,
    image_default: &[String],
    look: &Lookup<'_>,
    found: &mut Found,
    cmp: &mut Comparison,
) {
    let Some(wanted) = wanted else {
        if actual != image_default {
            cmp.mismatch(
                field,
                format!("the container's {actual:?} is not the image's {image_default:?}, and the manifest names none"),
            );
        }
        return;
    };
    if actual.len() != wanted.len() {
        cmp.mismatch(
            field,
            format!(
                "the container has {} arguments, the manifest {}",
                actual.len(),
                wanted.len()
            ),
        );
        return;
    }
    for (i, (a, t)) in actual.iter().zip(wanted).enumerate() {
        let at = format!("{field}[{i}]");
        match matches(t, a, &at, look, found) {
            Ok(true) => {}
            Ok(false) => cmp.mismatch(
                at,
                format!("the container's argument differs from the manifest's {t:?}"),
            ),
            Err(reason) => cmp.mismatch(at, reason),
        }
    }
}

fn compare_env(
    c: &ForeignContainer,
    w: &Wanted<'_>,
    look: &Lookup<'_>,
    found: &mut Found,
    cmp: &mut Comparison,
) {
    for (key, template) in w.env {
        let field = format!("env.{key}");
        match c.env.get(key) {
            None => cmp.mismatch(field, "the manifest sets it, the container does not".into()),
            Some(actual) => match matches(template, actual, &field, look, found) {
                Ok(true) => {}
                Ok(false) => cmp.mismatch(
                    field,
                    "the container's value differs from the manifest's".into(),
                ),
                Err(reason) => cmp.mismatch(field, reason),
            },
        }
    }
    for (key, value) in &c.env {
        if w.env.contains_key(key)
            || c.image_env.get(key) == Some(value)
            || ENGINE_ENV.contains(&key.as_str())
        {
            continue;
        }
        cmp.mismatch(
            format!("env.{key}"),
            "the container sets it, the manifest does not".into(),
        );
    }
}

fn compare_mounts(
    c: &ForeignContainer,
    spec: &ContainerSpec,
    look: &Lookup<'_>,
    cmp: &mut Comparison,
) {
    // An anonymous volume (the image's VOLUME) comes with every container of the image,
    // ours too: it is not the owner's data.
    let anonymous = |name: &str| name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
    let mut actual = BTreeMap::new();
    for m in &c.mounts {
        match m.kind.as_str() {
            "volume" if anonymous(&m.name) => {}
            "bind" | "volume" => {
                actual.insert(
                    m.destination.clone(),
                    ((look.canonical)(&m.source), m.read_only, m.source.clone()),
                );
            }
            other => cmp.mismatch(
                format!("mount {}", m.destination),
                format!("a {other} mount has no place in a manifest"),
            ),
        }
    }
    for bind in &spec.binds {
        let field = format!("volume {}", bind.container);
        let wanted = (look.canonical)(&bind.host);
        match actual.remove(&bind.container) {
            None => cmp.mismatch(
                field,
                format!(
                    "the manifest binds {}, the container has no mount there",
                    bind.host.display()
                ),
            ),
            Some((source, read_only, raw)) => {
                if source != wanted {
                    cmp.mismatch(
                        field,
                        format!(
                            "the container binds {}, the manifest {} (move the data with `archipelago import … --move`)",
                            raw.display(),
                            bind.host.display()
                        ),
                    );
                } else if read_only != bind.read_only {
                    cmp.mismatch(
                        field,
                        format!(
                            "read-only {read_only} on the container, {} in the manifest",
                            bind.read_only
                        ),
                    );
                }
            }
        }
    }
    for (destination, (_, _, raw)) in actual {
        cmp.mismatch(
            format!("mount {destination}"),
            format!(
                "the container binds {}, the manifest has no volume there",
                raw.display()
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Bind, ForeignMount, PortBinding, RunState};
    use std::time::Duration;

    fn container() -> ForeignContainer {
        ForeignContainer {
            id: "c1".into(),
            name: "old-bitcoind".into(),
            image: "bitcoind:27".into(),
            image_id: "sha256:aaa".into(),
            state: RunState::Running,
            started_at: Some("2026-01-01T00:00:00Z".into()),
            labels: BTreeMap::new(),
            command: vec!["-server".into(), "-rpcauth=node:salt$hash".into()],
            entrypoint: vec!["bitcoind".into()],
            image_command: vec![],
            image_entrypoint: vec!["bitcoind".into()],
            image_env: BTreeMap::from([("PATH".into(), "/bin".into())]),
            image_user: "bitcoin".into(),
            env: BTreeMap::from([
                ("PATH".into(), "/bin".into()),
                ("RPC_URL".into(), "http://node:s3cret@bitcoind:8332".into()),
                ("HOSTNAME".into(), "abc".into()),
            ]),
            user: "bitcoin".into(),
            mounts: vec![ForeignMount {
                kind: "bind".into(),
                source: "/srv/old/bitcoin".into(),
                name: String::new(),
                destination: "/data".into(),
                read_only: false,
            }],
            ports: vec![PortBinding {
                host: 8333,
                container: 8333,
                udp: false,
            }],
            network_mode: "node_default".into(),
            memory_limit: 1 << 30,
            restart_policy: "unless-stopped".into(),
            stop_timeout: None,
            health: None,
            privileged: false,
            devices: vec![],
            cap_add: vec![],
            cap_drop: vec![],
            pids_limit: None,
            security_opt: vec![],
        }
    }

    fn spec() -> ContainerSpec {
        ContainerSpec {
            app: "bitcoind".into(),
            version: "27".into(),
            image: "bitcoind:27".into(),
            env: BTreeMap::new(),
            command: None,
            entrypoint: None,
            user: None,
            ports: vec![PortBinding {
                host: 8333,
                container: 8333,
                udp: false,
            }],
            binds: vec![Bind {
                host: "/var/lib/archipelago/apps/bitcoind/data".into(),
                container: "/data".into(),
                read_only: false,
            }],
            network: "node_default".into(),
            memory_limit: 1 << 30,
            stop_timeout: Duration::from_secs(10),
            cap_add: vec![],
            cap_drop: vec!["MKNOD".into(), "NET_RAW".into()],
            pids_limit: 4096,
            group_add: vec![],
        }
    }

    /// The old folder was renamed into the app's volume, a link left behind.
    fn canonical(p: &Path) -> PathBuf {
        if p == Path::new("/srv/old/bitcoin") {
            "/var/lib/archipelago/apps/bitcoind/data".into()
        } else {
            p.to_path_buf()
        }
    }

    fn run(c: &ForeignContainer, spec: &ContainerSpec, stored: Option<&str>) -> Comparison {
        let env = BTreeMap::from([(
            "RPC_URL".to_string(),
            "http://node:${secret:rpc_password}@bitcoind:8332".to_string(),
        )]);
        let command = vec![
            "-server".to_string(),
            "-rpcauth=${secret:rpcauth}".to_string(),
        ];
        let wanted = Wanted {
            env: &env,
            command: Some(&command),
            entrypoint: None,
            spec,
            image_id: Some("sha256:aaa"),
        };
        let render = |t: &str| Ok(t.to_string());
        let stored_value = stored.map(str::to_string);
        let stored = move |name: &str| {
            (name == "rpc_password")
                .then(|| stored_value.clone())
                .flatten()
        };
        let look = Lookup {
            render: &render,
            stored: &stored,
            canonical: &canonical,
        };
        compare(c, &wanted, &look)
    }

    #[test]
    fn a_matching_container_gives_its_secrets_and_the_live_changes() {
        let cmp = run(&container(), &spec(), None);
        assert_eq!(cmp.mismatches, vec![]);
        assert_eq!(
            cmp.secrets,
            BTreeMap::from([
                ("rpc_password".to_string(), "s3cret".to_string()),
                ("rpcauth".to_string(), "node:salt$hash".to_string()),
            ])
        );
        assert_eq!(
            cmp.live,
            [
                "restart policy unless-stopped → no (archipelago restarts the app itself)",
                "pids limit → 4096"
            ]
        );
        assert_eq!(
            cmp.later,
            ["no-new-privileges", "capabilities dropped: MKNOD, NET_RAW"]
        );
        // The same value already stored is fine.
        assert_eq!(
            run(&container(), &spec(), Some("s3cret")).mismatches,
            vec![]
        );
    }

    type Change = dyn Fn(&mut ForeignContainer, &mut ContainerSpec);

    #[test]
    fn every_difference_is_listed_by_field_without_values() {
        let cases: Vec<(&str, Box<Change>)> = vec![
            ("image", Box::new(|c, _| c.image_id = "sha256:bbb".into())),
            (
                "entrypoint",
                Box::new(|c, _| c.entrypoint = vec!["sh".into()]),
            ),
            (
                "command",
                Box::new(|c, _| c.command.push("-txindex".into())),
            ),
            (
                "command[1]",
                Box::new(|c, _| c.command[1] = "-rpcuser=x".into()),
            ),
            (
                "env.RPC_URL",
                Box::new(|c, _| {
                    c.env
                        .insert("RPC_URL".into(), "http://other:s3cret@bitcoind:8332".into());
                }),
            ),
            (
                "env.RPC_URL",
                Box::new(|c, _| {
                    c.env.remove("RPC_URL");
                }),
            ),
            (
                "env.EXTRA",
                Box::new(|c, _| {
                    c.env.insert("EXTRA".into(), "1".into());
                }),
            ),
            ("user", Box::new(|_, s| s.user = Some("1000".into()))),
            (
                "volume /data",
                Box::new(|c, _| c.mounts[0].source = "/srv/elsewhere".into()),
            ),
            (
                "volume /data",
                Box::new(|c, _| c.mounts[0].read_only = true),
            ),
            (
                "mount /logs",
                Box::new(|c, _| {
                    c.mounts.push(ForeignMount {
                        kind: "bind".into(),
                        source: "/var/log".into(),
                        name: String::new(),
                        destination: "/logs".into(),
                        read_only: true,
                    });
                }),
            ),
            (
                "mount /tmp",
                Box::new(|c, _| {
                    c.mounts.push(ForeignMount {
                        kind: "tmpfs".into(),
                        source: "".into(),
                        name: String::new(),
                        destination: "/tmp".into(),
                        read_only: false,
                    });
                }),
            ),
            ("ports", Box::new(|c, _| c.ports.clear())),
            ("network", Box::new(|c, _| c.network_mode = "host".into())),
            ("memory_limit", Box::new(|c, _| c.memory_limit = 0)),
            ("privileged", Box::new(|c, _| c.privileged = true)),
            (
                "devices",
                Box::new(|c, _| c.devices = vec!["/dev/sda:/dev/sda".into()]),
            ),
        ];
        for (field, change) in cases {
            let (mut c, mut s) = (container(), spec());
            change(&mut c, &mut s);
            let cmp = run(&c, &s, None);
            let fields: Vec<&str> = cmp.mismatches.iter().map(|m| m.field.as_str()).collect();
            assert_eq!(fields, [field], "{:?}", cmp.mismatches);
            for m in &cmp.mismatches {
                assert!(!m.to_string().contains("s3cret"), "{m}");
            }
        }
        // An anonymous volume (the image's VOLUME) is not the owner's data.
        let mut c = container();
        c.mounts.push(ForeignMount {
            kind: "volume".into(),
            source: "/var/lib/docker/volumes/x/_data".into(),
            name: "a".repeat(64),
            destination: "/cache".into(),
            read_only: false,
        });
        assert_eq!(run(&c, &spec(), None).mismatches, vec![]);
    }

    #[test]
    fn a_secret_that_is_not_the_stored_one_or_held_twice_differently_is_refused() {
        let cmp = run(&container(), &spec(), Some("other"));
        assert_eq!(cmp.mismatches.len(), 1);
        assert_eq!(cmp.mismatches[0].field, "secrets.rpc_password");
        assert!(!cmp.secrets.contains_key("rpc_password"));

        let env = BTreeMap::from([
            ("A".to_string(), "${secret:pw}".to_string()),
            ("B".to_string(), "x${secret:pw}".to_string()),
        ]);
        let mut c = container();
        c.env = BTreeMap::from([("A".into(), "one".into()), ("B".into(), "xtwo".into())]);
        c.command = vec![];
        let s = spec();
        let wanted = Wanted {
            env: &env,
            command: None,
            entrypoint: None,
            spec: &s,
            image_id: Some("sha256:aaa"),
        };
        let render = |t: &str| Ok(t.to_string());
        let stored = |_: &str| None;
        let look = Lookup {
            render: &render,
            stored: &stored,
            canonical: &canonical,
        };
        let cmp = compare(&c, &wanted, &look);
        let fields: Vec<&str> = cmp.mismatches.iter().map(|m| m.field.as_str()).collect();
        assert_eq!(fields, ["secrets.pw"]);
    }
}
