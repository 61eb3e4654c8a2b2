//! Which mounts of the imported services become whose volume: host folders and engine
//! volumes are planned once (outer folders first, dependencies before dependants); a
//! second service using the same one gets a dependency-volume reference or a finding, a
//! folder inside a planned one a finding, and every own volume a unique name.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};

use super::draft::{sanitize_name, unique, Finding, MountSource, Service};

/// A mount's data as one thing two services can share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Place {
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

/// What becomes of one mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountUse {
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
    /// The app and its volume the folder becomes.
    pub app: String,
    pub volume: String,
    /// The folder on the old node (absolute).
    pub source: PathBuf,
    /// The engine volume whose mount point `source` is: copied, never renamed out from
    /// under the engine.
    pub engine_volume: Option<String>,
    /// Other apps that use the same folder.
    pub shared_with: Vec<String>,
}

/// What [`share_mounts`] decided.
#[derive(Debug, Default)]
pub struct Shares {
    /// Per service and mount.
    pub uses: Vec<Vec<MountUse>>,
    /// Per service and mount: the own volume's name.
    pub names: Vec<Vec<Option<String>>>,
    /// Host folders to move.
    pub folders: Vec<PlannedFolder>,
}

/// Decides every mount's use and own volume names; findings go to the services.
/// `order` is the dependency order, `deps` each service's dependency ids.
pub fn share_mounts(
    services: &mut [Service],
    ids: &[String],
    deps: &[Vec<String>],
    order: &[usize],
) -> Shares {
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
    let mut folders = Vec::new();
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
        folders.push(PlannedFolder {
            app: ids[*si].clone(),
            volume: volume_names[*si][*mi].clone().unwrap_or_default(),
            source: path.clone(),
            engine_volume: None,
            shared_with,
        });
    }
    Shares {
        uses,
        names: volume_names,
        folders,
    }
}
