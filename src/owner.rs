//! Who owns an app's volume folders: the user and group its container runs as.
//!
//! Non-root servers (tor as `debian-tor`, postgres, redis, bitcoind) must be able to write
//! their own data, and tor and postgres refuse a data folder they do not own. So every
//! folder of an app's own volumes belongs to the container's user: the manifest's `user`
//! (`UID[:GID]`, `NAME[:GROUP]`), or else the image's configured user. Names are resolved
//! from the image's own `/etc/passwd` and `/etc/group`, the way the engine resolves them
//! when it starts the container. On a rootless engine the ids are mapped to host ids
//! through its user namespace ([`IdMap`]).
//!
//! Resolving is pure ([`resolve`]); changing owners is blocking file work
//! ([`own_volumes`]), run off the actors' thread.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::engine::IdMap;

/// A numeric owner, as files carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    pub const ROOT: Owner = Owner { uid: 0, gid: 0 };

    /// The host ids of this container owner, or why the engine's namespace has none.
    pub fn on_host(self, map: &IdMap) -> Result<Owner, String> {
        let uid = map
            .host_uid(self.uid)
            .ok_or_else(|| format!("uid {} is outside the engine's user namespace", self.uid))?;
        let gid = map
            .host_gid(self.gid)
            .ok_or_else(|| format!("gid {} is outside the engine's user namespace", self.gid))?;
        Ok(Owner { uid, gid })
    }
}

/// True when the user string names a user or group that only the image's files can
/// turn into ids (so they must be read).
pub fn needs_image_files(user: &str) -> bool {
    let (u, g) = split(user.trim());
    if u.is_empty() {
        return false;
    }
    !is_id(u) || g.is_none_or(|g| !is_id(g))
}

fn split(user: &str) -> (&str, Option<&str>) {
    match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    }
}

fn is_id(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The ids a container started as `user` runs with, given the image's `/etc/passwd` and
/// `/etc/group` (`None` when the image has no such file). Follows the engine's rules: an
/// empty user is root; a numeric uid without a group takes its passwd entry's group, or
/// gid 0 when it has none.
pub fn resolve(user: &str, passwd: Option<&str>, group: Option<&str>) -> Result<Owner, String> {
    let user = user.trim();
    if user.is_empty() {
        return Ok(Owner::ROOT);
    }
    let (u, g) = split(user);
    let entry = |pred: &dyn Fn(&[&str]) -> bool| {
        passwd.and_then(|text| {
            text.lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 4 && pred(f))
                .map(|f| (f[2].parse::<u32>().ok(), f[3].parse::<u32>().ok()))
        })
    };
    let (uid, primary) = if is_id(u) {
        let uid = u
            .parse::<u32>()
            .map_err(|_| format!("user {u:?} is out of range"))?;
        let primary = entry(&|f| f[2] == u).and_then(|(_, gid)| gid);
        (uid, primary)
    } else {
        match entry(&|f| f[0] == u) {
            Some((Some(uid), gid)) => (uid, gid),
            Some((None, _)) => {
                return Err(format!(
                    "user `{u}` has a broken entry in the image's /etc/passwd"
                ))
            }
            None if passwd.is_none() => {
                return Err(format!(
                    "user `{u}` cannot be resolved: the image has no /etc/passwd"
                ))
            }
            None => return Err(format!("user `{u}` is not in the image's /etc/passwd")),
        }
    };
    let gid = match g {
        None => primary.unwrap_or(0),
        Some(g) if is_id(g) => g
            .parse::<u32>()
            .map_err(|_| format!("group {g:?} is out of range"))?,
        Some(g) => group
            .and_then(|text| {
                text.lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.len() >= 3 && f[0] == g)
                    .and_then(|f| f[2].parse::<u32>().ok())
            })
            .ok_or_else(|| format!("group `{g}` is not in the image's /etc/group"))?,
    };
    Ok(Owner { uid, gid })
}

/// Makes every folder in `dirs` belong to `owner` and unreadable by others (mode bits for
/// others cleared; the owner's and group's left as the app set them). A folder that had
/// another owner is re-owned with its content: whatever belonged to the old owner (uid or
/// gid) passes to the new one; files of other owners are left alone. Blocking.
pub fn own_volumes(dirs: &[PathBuf], owner: Owner) -> std::io::Result<()> {
    for dir in dirs {
        let meta = std::fs::symlink_metadata(dir)?;
        let old = Owner {
            uid: meta.uid(),
            gid: meta.gid(),
        };
        if old != owner {
            reown_tree(dir, old, owner)?;
        }
        let mode = meta.permissions().mode() & 0o7777;
        let wanted = (mode & !0o007) | 0o700;
        if wanted != mode {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(wanted))?;
        }
    }
    Ok(())
}

/// Passes what `old` owns under `root` (links themselves, never their targets) to `new`.
fn reown_tree(root: &Path, old: Owner, new: Owner) -> std::io::Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        let uid = (meta.uid() == old.uid).then_some(new.uid);
        let gid = (meta.gid() == old.gid).then_some(new.gid);
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::lchown(&path, uid, gid)?;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}

/// The group that owns a dependency's volume folder, for the dependant's supplementary
/// groups; `None` when the folder is missing or root's.
pub fn folder_group(dir: &Path) -> Option<u32> {
    std::fs::metadata(dir)
        .ok()
        .map(|m| m.gid())
        .filter(|g| *g != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        debian-tor:x:101:104::/var/lib/tor:/bin/false\n\
        postgres:x:102:105:PostgreSQL:/var/lib/postgresql:/bin/bash\n\
        broken:x:abc:1::/:/bin/false\n";
    const GROUP: &str = "root:x:0:\nssl-cert:x:103:postgres\ndebian-tor:x:104:\npostgres:x:105:\n";

    #[test]
    fn resolves_users_like_the_engine() {
        let ok = |uid, gid| Ok(Owner { uid, gid });
        let cases: &[(&str, Result<Owner, String>)] = &[
            ("", ok(0, 0)),
            ("root", ok(0, 0)),
            ("debian-tor", ok(101, 104)),
            ("postgres:ssl-cert", ok(102, 103)),
            ("postgres:7", ok(102, 7)),
            ("1000", ok(1000, 0)),
            ("102", ok(102, 105)),
            ("1000:1000", ok(1000, 1000)),
            ("101:postgres", ok(101, 105)),
            (
                "nobody",
                Err("user `nobody` is not in the image's /etc/passwd".into()),
            ),
            (
                "postgres:nogroup",
                Err("group `nogroup` is not in the image's /etc/group".into()),
            ),
            (
                "broken",
                Err("user `broken` has a broken entry in the image's /etc/passwd".into()),
            ),
            (
                "99999999999",
                Err("user \"99999999999\" is out of range".into()),
            ),
        ];
        for (user, want) in cases {
            assert_eq!(
                &resolve(user, Some(PASSWD), Some(GROUP)),
                want,
                "user {user:?}"
            );
        }
        assert_eq!(
            resolve("tor", None, None),
            Err("user `tor` cannot be resolved: the image has no /etc/passwd".into())
        );
        assert_eq!(resolve("5:6", None, None), ok(5, 6));
        assert!(needs_image_files("tor") && needs_image_files("5:tor") && needs_image_files("5"));
        assert!(!needs_image_files("5:6") && !needs_image_files(""));
    }

    #[test]
    fn rootless_owners_map_to_host_ids() {
        let map = IdMap::Rootless {
            uid: 1000,
            gid: 1000,
            subuid: vec![(100000, 65536)],
            subgid: vec![(100000, 65536)],
        };
        let tor = Owner { uid: 101, gid: 104 };
        assert_eq!(
            tor.on_host(&map),
            Ok(Owner {
                uid: 100100,
                gid: 100103
            })
        );
        assert_eq!(
            Owner::ROOT.on_host(&map),
            Ok(Owner {
                uid: 1000,
                gid: 1000
            })
        );
        assert!(Owner { uid: 70000, gid: 0 }.on_host(&map).is_err());
    }

    #[test]
    fn volumes_are_given_to_the_owner_with_what_the_old_owner_had() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("data");
        std::fs::create_dir(&vol).unwrap();
        std::fs::create_dir(vol.join("sub")).unwrap();
        std::fs::write(vol.join("sub/file"), b"x").unwrap();
        std::fs::write(vol.join("other"), b"y").unwrap();
        std::os::unix::fs::lchown(vol.join("other"), Some(4242), Some(4242)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", vol.join("link")).unwrap();
        let me = std::fs::metadata(&vol).unwrap();
        let new = Owner { uid: 101, gid: 104 };
        own_volumes(std::slice::from_ref(&vol), new).unwrap();
        let owner = |p: &str| {
            let m = std::fs::symlink_metadata(vol.join(p)).unwrap();
            (m.uid(), m.gid())
        };
        assert_eq!(owner(""), (101, 104));
        assert_eq!(owner("sub/file"), (101, 104));
        assert_eq!(owner("other"), (4242, 4242), "another owner's file stays");
        assert_eq!(
            owner("link"),
            (101, 104),
            "the link itself, not /etc/passwd"
        );
        assert_eq!(std::fs::metadata("/etc/passwd").unwrap().uid(), me.uid());
        let mode = std::fs::metadata(&vol).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o007, 0, "not readable by others: {mode:o}");
        // A changed user re-owns again.
        own_volumes(std::slice::from_ref(&vol), Owner { uid: 7, gid: 8 }).unwrap();
        assert_eq!(owner("sub/file"), (7, 8));
        assert_eq!(folder_group(&vol), Some(8));
    }
}
