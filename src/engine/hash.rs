//! The spec hash: a stable fingerprint of everything in a [`ContainerSpec`] whose change
//! needs the container recreated.
//!
//! The hash is stored in the [`LABEL_SPEC_HASH`](super::LABEL_SPEC_HASH) label, so a
//! supervisor restart can adopt a running container whose hash still matches. It must
//! therefore be the same on every machine and every run: the encoding below is explicit
//! (tagged, length-prefixed fields; sorted collections) and never relies on `Debug`,
//! `Hash` or map iteration order.
//!
//! Two fields are deliberately left out:
//! - `memory_limit`, which is changed live on the running container
//!   ([`ContainerRuntime::update_memory`](super::ContainerRuntime::update_memory));
//! - `version`, which is only a label: a version bump that resolves to the same image and
//!   the same settings runs the very same container, so recreating it would be a needless
//!   restart. A version bump that changes anything that matters changes the image tag or
//!   another hashed field, and so the hash.

use sha2::{Digest, Sha256};

use super::ContainerSpec;

/// Hex characters kept from the SHA-256 digest (128 bits).
const HASH_HEX_LEN: usize = 32;

/// Bumped whenever the encoding changes, so old and new hashes never collide by accident.
/// v2: capabilities, the pids limit and `no-new-privileges` (always on) joined the spec.
const ENCODING_VERSION: &[u8] = b"archipelago-spec-v2";

impl ContainerSpec {
    /// Stable hash of every field whose change needs a recreate: `app`, `image`, `env`,
    /// `command`, `entrypoint`, `user`, `ports`, `binds`, `network`, `stop_timeout`,
    /// `cap_add`, `cap_drop` and `pids_limit`. Neither `memory_limit` (changed live),
    /// `version` (a label only) nor `group_add` (derived from the binds) is part of it.
    pub fn hash(&self) -> String {
        let mut enc = Encoder::default();
        enc.bytes(ENCODING_VERSION);
        enc.field("app").str(&self.app);
        enc.field("image").str(&self.image);
        enc.field("env").count(self.env.len());
        // A BTreeMap iterates in key order, which is the canonical order.
        for (key, value) in &self.env {
            enc.str(key).str(value);
        }
        enc.field("command").opt_list(self.command.as_deref());
        enc.field("entrypoint").opt_list(self.entrypoint.as_deref());
        enc.field("user");
        match &self.user {
            None => enc.tag(0),
            Some(user) => enc.tag(1).str(user),
        };
        let mut ports = self.ports.clone();
        ports.sort();
        enc.field("ports").count(ports.len());
        for port in &ports {
            enc.u64(u64::from(port.host))
                .u64(u64::from(port.container))
                .tag(u8::from(port.udp));
        }
        let mut binds = self.binds.clone();
        binds.sort();
        enc.field("binds").count(binds.len());
        for bind in &binds {
            enc.bytes(bind.host.as_os_str().as_encoded_bytes())
                .str(&bind.container)
                .tag(u8::from(bind.read_only));
        }
        enc.field("network").str(&self.network);
        enc.field("stop_timeout")
            .u64(u64::try_from(self.stop_timeout.as_millis()).unwrap_or(u64::MAX));
        for (field, caps) in [("cap_add", &self.cap_add), ("cap_drop", &self.cap_drop)] {
            let mut caps = caps.clone();
            caps.sort();
            enc.field(field).count(caps.len());
            for cap in &caps {
                enc.str(cap);
            }
        }
        enc.field("pids_limit").u64(u64::from(self.pids_limit));
        let digest = Sha256::digest(&enc.buf);
        let mut hex = hex::encode(digest);
        hex.truncate(HASH_HEX_LEN);
        hex
    }
}

/// Unambiguous byte encoding: every variable-length item is length-prefixed, so no two
/// different specs can produce the same bytes.
#[derive(Default)]
struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    fn u64(&mut self, n: u64) -> &mut Self {
        self.buf.extend_from_slice(&n.to_be_bytes());
        self
    }

    fn count(&mut self, n: usize) -> &mut Self {
        self.u64(n as u64)
    }

    fn tag(&mut self, t: u8) -> &mut Self {
        self.buf.push(t);
        self
    }

    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.count(b.len());
        self.buf.extend_from_slice(b);
        self
    }

    fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    fn field(&mut self, name: &str) -> &mut Self {
        self.str(name)
    }

    fn opt_list(&mut self, list: Option<&[String]>) -> &mut Self {
        match list {
            None => self.tag(0),
            Some(items) => {
                self.tag(1).count(items.len());
                for item in items {
                    self.str(item);
                }
                self
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::engine::{Bind, PortBinding};

    fn spec() -> ContainerSpec {
        ContainerSpec {
            app: "bitcoind".into(),
            version: "27.1".into(),
            image: "archipelago/bitcoind:27.1".into(),
            env: BTreeMap::from([
                ("NETWORK".into(), "mainnet".into()),
                ("DBCACHE".into(), "450".into()),
            ]),
            command: Some(vec!["bitcoind".into(), "-printtoconsole".into()]),
            entrypoint: None,
            user: Some("1000:1000".into()),
            ports: vec![
                PortBinding {
                    host: 8333,
                    container: 8333,
                    udp: false,
                },
                PortBinding {
                    host: 8332,
                    container: 8332,
                    udp: false,
                },
            ],
            binds: vec![Bind {
                host: PathBuf::from("/var/lib/archipelago/apps/bitcoind/data"),
                container: "/data".into(),
                read_only: false,
            }],
            network: "host".into(),
            memory_limit: 2 << 30,
            stop_timeout: Duration::from_secs(600),
            cap_add: vec![],
            cap_drop: vec!["NET_RAW".into(), "MKNOD".into()],
            pids_limit: 4096,
            group_add: vec![],
        }
    }

    #[test]
    fn same_spec_same_hash_pinned() {
        let a = spec().hash();
        assert_eq!(a, spec().hash());
        assert_eq!(a.len(), HASH_HEX_LEN);
        // Pinned: a change here means every deployed container gets recreated on upgrade.
        assert_eq!(a, "afff4af8bd911ce2aefb30c7034f34cd");
    }

    #[test]
    fn order_of_ports_and_binds_does_not_matter() {
        let mut s = spec();
        s.ports.reverse();
        s.binds.push(Bind {
            host: PathBuf::from("/var/lib/archipelago/apps/bitcoind/conf"),
            container: "/conf".into(),
            read_only: true,
        });
        let mut t = s.clone();
        t.binds.reverse();
        assert_eq!(s.hash(), t.hash());
        assert_eq!(spec().hash(), {
            let mut u = spec();
            u.ports.reverse();
            u.hash()
        });
    }

    #[test]
    fn every_recreate_field_changes_the_hash() {
        type Edit = fn(&mut ContainerSpec);
        let cases: &[(&str, Edit)] = &[
            ("app", |s| s.app = "lnd".into()),
            ("image", |s| s.image = "archipelago/bitcoind:27.2".into()),
            ("env value", |s| {
                s.env.insert("DBCACHE".into(), "1000".into());
            }),
            ("env key added", |s| {
                s.env.insert("EXTRA".into(), String::new());
            }),
            ("env removed", |s| {
                s.env.remove("NETWORK");
            }),
            ("command", |s| s.command = Some(vec!["bitcoind".into()])),
            ("command none", |s| s.command = None),
            ("command empty", |s| s.command = Some(vec![])),
            ("entrypoint", |s| s.entrypoint = Some(vec!["/init".into()])),
            ("entrypoint empty", |s| s.entrypoint = Some(vec![])),
            ("user", |s| s.user = Some("0".into())),
            ("user none", |s| s.user = None),
            ("port host", |s| s.ports[0].host = 18333),
            ("port container", |s| s.ports[0].container = 18333),
            ("port udp", |s| s.ports[0].udp = true),
            ("port removed", |s| {
                s.ports.pop();
            }),
            ("bind host", |s| {
                s.binds[0].host = PathBuf::from("/var/lib/archipelago/apps/bitcoind/d2")
            }),
            ("bind container", |s| s.binds[0].container = "/data2".into()),
            ("bind read only", |s| s.binds[0].read_only = true),
            ("binds cleared", |s| s.binds.clear()),
            ("network", |s| s.network = "none".into()),
            ("stop timeout", |s| {
                s.stop_timeout = Duration::from_secs(601)
            }),
            ("cap added", |s| s.cap_add.push("NET_ADMIN".into())),
            ("cap no longer dropped", |s| {
                s.cap_drop.pop();
            }),
            ("pids limit", |s| s.pids_limit = 100),
        ];
        let base = spec().hash();
        for (name, edit) in cases {
            let mut s = spec();
            edit(&mut s);
            assert_ne!(s.hash(), base, "changing {name} must change the hash");
        }
    }

    #[test]
    fn fields_do_not_run_into_each_other() {
        // Moving text between adjacent fields must not give the same encoding.
        let mut a = spec();
        a.command = Some(vec!["ab".into(), "c".into()]);
        let mut b = spec();
        b.command = Some(vec!["a".into(), "bc".into()]);
        assert_ne!(a.hash(), b.hash());
        let mut c = spec();
        c.env = BTreeMap::from([("AB".into(), "C".into())]);
        let mut d = spec();
        d.env = BTreeMap::from([("A".into(), "BC".into())]);
        assert_ne!(c.hash(), d.hash());
    }

    #[test]
    fn memory_and_version_leave_the_hash_alone() {
        let base = spec().hash();
        let mut s = spec();
        s.memory_limit = 4 << 30;
        assert_eq!(s.hash(), base, "memory limit is changed live");
        s.version = "27.1-1".into();
        assert_eq!(s.hash(), base, "version is a label only");
        s.group_add = vec![105];
        assert_eq!(s.hash(), base, "groups follow from the binds");
    }
}
