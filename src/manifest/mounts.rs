//! Published ports and volumes: their compact string forms and the long volume form.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::id::AppId;

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A published port, written `host:container[/tcp|/udp]` (default tcp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortMapping {
    pub host: u16,
    pub container: u16,
    pub protocol: Protocol,
}

impl FromStr for PortMapping {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shape = || {
            format!(
                "invalid port mapping {s:?}: expected HOST:CONTAINER[/tcp|/udp], e.g. 9735:9735"
            )
        };
        let (ports, protocol) = match s.split_once('/') {
            None => (s, Protocol::Tcp),
            Some((ports, "tcp")) => (ports, Protocol::Tcp),
            Some((ports, "udp")) => (ports, Protocol::Udp),
            Some((_, other)) => {
                return Err(format!(
                    "invalid port mapping {s:?}: unknown protocol {other:?}, expected tcp or udp"
                ))
            }
        };
        let (host, container) = ports.split_once(':').ok_or_else(shape)?;
        let port = |p: &str| -> Result<u16, String> {
            match p.parse::<u16>() {
                Ok(0) => Err(format!("invalid port mapping {s:?}: port 0 is not allowed")),
                Ok(n) if p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
                _ => Err(format!(
                    "invalid port mapping {s:?}: {p:?} is not a port number (1-65535)"
                )),
            }
        };
        Ok(PortMapping {
            host: port(host)?,
            container: port(container)?,
            protocol,
        })
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.host, self.container, self.protocol)
    }
}

/// What an upgrade does with a volume before it swaps the container.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotPolicy {
    /// Copied before the swap and put back if the new version fails (reflink where the
    /// filesystem can).
    #[default]
    Copy,
    /// Never copied nor put back: a rollback runs the old image on the data as it is. For
    /// data that is huge and re-derivable (a blockchain), or dangerous to restore (lnd's
    /// channel database: an old channel state can lose funds to a penalty transaction).
    None,
}

/// A volume: `NAME:PATH[:ro|:rw]`, a folder under `<data_dir>/apps/<id>/`, or
/// `APP/NAME:PATH:ro`, volume NAME of the dependency APP mounted read-only.
/// [`AppManifest::validate`](super::AppManifest::validate) refuses names with `/` or `..` and writable dependency volumes.
///
/// The long form `{name, path, read_only, snapshot}` also sets the [`SnapshotPolicy`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VolumeMount {
    /// The dependency that owns the volume; `None` for the app's own.
    pub app: Option<AppId>,
    pub name: String,
    /// Absolute path inside the container.
    pub path: String,
    pub read_only: bool,
    pub snapshot: SnapshotPolicy,
}

impl VolumeMount {
    /// `NAME` or `APP/NAME`, as written in the manifest.
    pub fn source(&self) -> String {
        match &self.app {
            Some(app) => format!("{app}/{}", self.name),
            None => self.name.clone(),
        }
    }

    /// True for the app's own volumes (not a dependency's).
    pub fn is_own(&self) -> bool {
        self.app.is_none()
    }

    /// Splits `APP/NAME` into the dependency and the name; anything else stays a plain
    /// name, for `check_volume_name` (`rules.rs`) to judge (so `../data` is still reported as such).
    fn split_source(source: &str) -> (Option<AppId>, String) {
        if let Some((app, name)) = source.split_once('/') {
            if let Ok(app) = app.parse::<AppId>() {
                if !name.contains('/') {
                    return (Some(app), name.to_string());
                }
            }
        }
        (None, source.to_string())
    }
}

impl FromStr for VolumeMount {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        let (source, path, read_only) = match parts.as_slice() {
            [name, path] => (*name, *path, false),
            [name, path, "ro"] => (*name, *path, true),
            [name, path, "rw"] => (*name, *path, false),
            [_, _, mode] => {
                return Err(format!(
                    "invalid volume {s:?}: unknown mode {mode:?}, expected ro or rw"
                ))
            }
            _ => {
                return Err(format!(
                    "invalid volume {s:?}: expected NAME:PATH[:ro], e.g. data:/data"
                ))
            }
        };
        let (app, name) = VolumeMount::split_source(source);
        Ok(VolumeMount {
            app,
            name,
            path: path.to_string(),
            read_only,
            snapshot: SnapshotPolicy::Copy,
        })
    }
}

impl fmt::Display for VolumeMount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source(), self.path)?;
        if self.read_only {
            f.write_str(":ro")?;
        }
        Ok(())
    }
}

/// The long YAML form of [`VolumeMount`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVolume {
    name: String,
    path: String,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    snapshot: SnapshotPolicy,
}

impl Serialize for VolumeMount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.snapshot == SnapshotPolicy::Copy {
            serializer.collect_str(self)
        } else {
            RawVolume {
                name: self.source(),
                path: self.path.clone(),
                read_only: self.read_only,
                snapshot: self.snapshot,
            }
            .serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for VolumeMount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct VolumeVisitor;

        impl<'de> Visitor<'de> for VolumeVisitor {
            type Value = VolumeMount;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a volume such as \"data:/data\" or {name: data, path: /data, snapshot: none}",
                )
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<VolumeMount, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<VolumeMount, A::Error> {
                let raw = RawVolume::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let (app, name) = VolumeMount::split_source(&raw.name);
                Ok(VolumeMount {
                    app,
                    name,
                    path: raw.path,
                    read_only: raw.read_only,
                    snapshot: raw.snapshot,
                })
            }
        }

        deserializer.deserialize_any(VolumeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use crate::manifest::*;

    type PortCase<'a> = (&'a str, Result<(u16, u16, Protocol), &'a str>);
    type VolumeCase<'a> = (&'a str, Result<(&'a str, &'a str, bool), &'a str>);

    #[test]
    fn parses_ports_and_volumes() {
        let ports: &[PortCase] = &[
            ("80:8080", Ok((80, 8080, Protocol::Tcp))),
            ("53:53/udp", Ok((53, 53, Protocol::Udp))),
            ("1:65535/tcp", Ok((1, 65535, Protocol::Tcp))),
            ("8080", Err("expected HOST:CONTAINER")),
            ("0:80", Err("port 0 is not allowed")),
            ("65536:80", Err("\"65536\" is not a port number")),
            ("+80:80", Err("\"+80\" is not a port number")),
            ("127.0.0.1:80:80", Err("\"127.0.0.1\" is not a port number")),
            ("80:80/sctp", Err("unknown protocol \"sctp\"")),
        ];
        for (input, want) in ports {
            let got = input.parse::<PortMapping>();
            match (got, want) {
                (Ok(p), Ok((h, c, proto))) => {
                    assert_eq!((p.host, p.container, p.protocol), (*h, *c, *proto))
                }
                (Err(e), Err(text)) => assert!(e.contains(text), "{input}: {e}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
        let volumes: &[VolumeCase] = &[
            ("data:/data", Ok(("data", "/data", false))),
            ("conf:/etc/app:ro", Ok(("conf", "/etc/app", true))),
            ("conf:/etc/app:rw", Ok(("conf", "/etc/app", false))),
            ("conf:/etc/app:z", Err("unknown mode \"z\"")),
            ("data", Err("expected NAME:PATH[:ro]")),
            ("a:b:c:d", Err("expected NAME:PATH[:ro]")),
            ("lnd/data:/lnd:ro", Ok(("data", "/lnd", true))),
        ];
        for (input, want) in volumes {
            let got = input.parse::<VolumeMount>();
            match (got, want) {
                (Ok(v), Ok((n, p, ro))) => assert_eq!(
                    (v.name.as_str(), v.path.as_str(), v.read_only),
                    (*n, *p, *ro)
                ),
                (Err(e), Err(text)) => assert!(e.contains(text), "{input}: {e}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn volumes_of_dependencies_and_the_long_form() {
        let parse = |yaml: &str| serde_yaml::from_str::<VolumeMount>(yaml);
        let dep = parse("\"lnd/data:/lnd:ro\"").unwrap();
        assert_eq!(dep.app.as_ref().map(AppId::as_str), Some("lnd"));
        assert_eq!(dep.source(), "lnd/data");
        assert_eq!(dep.to_string(), "lnd/data:/lnd:ro");
        let not_an_app = parse("\"../data:/x\"").unwrap();
        assert_eq!(
            (not_an_app.app, not_an_app.name.as_str()),
            (None, "../data")
        );
        let long = parse("{name: chain, path: /data, snapshot: none}").unwrap();
        assert_eq!(long.snapshot, SnapshotPolicy::None);
        assert!(long.is_own() && !long.read_only);
        let round = serde_yaml::to_string(&long).unwrap();
        assert_eq!(parse(&round).unwrap(), long);
        let err = parse("{name: chain, path: /data, snapshot: maybe}").unwrap_err();
        assert!(err.to_string().contains("unknown variant `maybe`"), "{err}");
        let err = parse("{name: chain, path: /data, mode: ro}").unwrap_err();
        assert!(err.to_string().contains("unknown field `mode`"), "{err}");
    }
}
