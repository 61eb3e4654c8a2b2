//! Onion services: every app that declares `onion: {ports: [...]}` gets a v3 onion address,
//! served by the tor app (config `tor_app`).
//!
//! The supervisor writes the tor app's services file, `<tor data>/onion-services.torrc`
//! (`HiddenServiceDir` and `HiddenServicePort` lines, one service per installed app), and
//! has tor reload it (SIGHUP), which keeps the SOCKS port open for everyone else. Tor
//! itself makes each service's keys and writes its `hostname` file in
//! `<tor data>/onion/<app>/`: the address is tor's own, never made up here, and it lasts
//! as long as those keys (kept by tor at 0600, removed only when the app is purged).
//!
//! An app reads its own address as `${onion}` and a dependency's as `${onion:APP}` in env
//! and command. Everything here but [`render`]'s file read is pure text work.

use std::path::{Path, PathBuf};

use crate::manifest::OnionPort;
use crate::store::Store;

/// The services file the tor app's `-f` option names, in its `data` volume.
pub const SERVICES_FILE: &str = "onion-services.torrc";
/// The folder of each app's service keys, in the tor app's `data` volume.
pub const SERVICES_DIR: &str = "onion";

/// Why an onion address could not be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OnionError {
    #[error("no tor app is configured (config `tor_app`), so `{app}` has no onion address")]
    NoTorApp { app: String },
    #[error("tor has not written the onion address of `{app}` yet ({path})")]
    NotYet { app: String, path: String },
    #[error("{path}: not a v3 onion address: {found:?}")]
    Malformed { path: String, found: String },
    #[error("{text:?}: {reason}")]
    BadReference { text: String, reason: String },
}

/// Where tor keeps `app`'s service keys and hostname, on the host.
pub fn service_dir(store: &Store, app: &str) -> Option<PathBuf> {
    store.tor_data().map(|d| d.join(SERVICES_DIR).join(app))
}

/// True for a v3 onion address: 56 base32 characters and `.onion`.
pub fn is_v3_address(text: &str) -> bool {
    text.strip_suffix(".onion").is_some_and(|name| {
        name.len() == 56
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
    })
}

/// `app`'s address as tor wrote it; blocking (one small file read).
pub fn address(store: &Store, app: &str) -> Result<String, OnionError> {
    let dir = service_dir(store, app).ok_or_else(|| OnionError::NoTorApp { app: app.into() })?;
    let path = dir.join("hostname");
    let text = std::fs::read_to_string(&path).map_err(|_| OnionError::NotYet {
        app: app.into(),
        path: path.display().to_string(),
    })?;
    let address = text.trim().to_string();
    if is_v3_address(&address) {
        Ok(address)
    } else {
        Err(OnionError::Malformed {
            path: path.display().to_string(),
            found: address,
        })
    }
}

/// The apps whose address `text` refers to: `${onion}` is `app` itself, `${onion:X}` is X.
pub fn references(app: &str, text: &str) -> Result<Vec<String>, OnionError> {
    const OPEN: &str = "${onion";
    let mut found = vec![];
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let end = after.find('}').ok_or_else(|| OnionError::BadReference {
            text: text.into(),
            reason: "missing closing }".into(),
        })?;
        let inner = &after[..end];
        let target = match inner.strip_prefix(':') {
            None if inner.is_empty() => app.to_string(),
            Some(other) if !other.is_empty() => other.to_string(),
            _ => {
                return Err(OnionError::BadReference {
                    text: text.into(),
                    reason: "write ${onion} or ${onion:APP}".into(),
                })
            }
        };
        found.push(target);
        rest = &after[end + 1..];
    }
    Ok(found)
}

/// `text` with `${onion}` and `${onion:APP}` replaced by the addresses tor wrote.
pub fn render(store: &Store, app: &str, text: &str) -> Result<String, OnionError> {
    if !text.contains("${onion") {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    for target in references(app, text)? {
        let start = rest.find("${onion").unwrap_or(rest.len());
        let end = rest[start..]
            .find('}')
            .map_or(rest.len(), |e| start + e + 1);
        out.push_str(&rest[..start]);
        out.push_str(&address(store, &target)?);
        rest = &rest[end..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Waits (at most `within`) until tor has written the address of every app that `app`'s
/// env and command refer to, so its container can be made with them. Reads run on the
/// blocking pool.
pub async fn wait_for_addresses(
    store: &Store,
    manifest: &crate::manifest::AppManifest,
    within: std::time::Duration,
) -> Result<(), OnionError> {
    let mut targets = vec![];
    for (_, value) in manifest.onion_ref_sites() {
        targets.extend(references(manifest.id.as_str(), value)?);
    }
    if targets.is_empty() {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (store, targets) = (store.clone(), targets.clone());
        let missing = tokio::task::spawn_blocking(move || {
            targets.iter().find_map(|t| address(&store, t).err())
        })
        .await
        .unwrap_or(None);
        match missing {
            None => return Ok(()),
            Some(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Some(OnionError::NotYet { .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await
            }
            Some(e) => return Err(e),
        }
    }
}

/// One app's onion service as the tor app serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub app: String,
    pub ports: Vec<OnionPort>,
    /// Where tor sends the service's connections: the app's name on the app network
    /// while it runs, else tor's own loopback (nothing answers, and tor still loads the
    /// service, so its keys and address exist before the app first starts).
    pub target: String,
}

/// The services file for `services`, with `data_in_tor` the tor app's `data` volume as
/// mounted in its container. Sorted, so the same services always give the same text.
pub fn services_file(services: &[Service], data_in_tor: &str) -> String {
    let mut services = services.to_vec();
    services.sort_by(|a, b| a.app.cmp(&b.app));
    let mut out = String::from(
        "# Written by archipelago: one onion service per app that declares `onion`.\n# Edits are overwritten.\n",
    );
    for s in &services {
        out.push_str(&format!(
            "HiddenServiceDir {}/{SERVICES_DIR}/{}\n",
            data_in_tor.trim_end_matches('/'),
            s.app
        ));
        for p in &s.ports {
            out.push_str(&format!(
                "HiddenServicePort {} {}:{}\n",
                p.onion, s.target, p.target
            ));
        }
    }
    out
}

/// Writes the services file into the tor app's data volume when its content changed,
/// owned like that folder (tor's user) and private to it; answers whether it changed.
/// Blocking.
pub fn write_services_file(tor_data: &Path, text: &str) -> std::io::Result<bool> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let path = tor_data.join(SERVICES_FILE);
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    let owner = std::fs::metadata(tor_data)?;
    // Tor makes each service's folder, but not their parent.
    let services = tor_data.join(SERVICES_DIR);
    if !services.is_dir() {
        std::fs::create_dir(&services)?;
        std::fs::set_permissions(&services, std::fs::Permissions::from_mode(0o700))?;
        std::os::unix::fs::lchown(&services, Some(owner.uid()), Some(owner.gid()))?;
    }
    let tmp = tor_data.join(format!(".{SERVICES_FILE}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::os::unix::fs::lchown(&tmp, Some(owner.uid()), Some(owner.gid()))?;
    std::fs::rename(&tmp, &path)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDR: &str = "vww6ybal4bd7szmgncyruucpgfkqahzddi37ktceo3ah7ngmcopnpyyd.onion";

    #[test]
    fn references_and_rendering() {
        assert_eq!(
            references("a", "x ${onion} y ${onion:b}").unwrap(),
            vec!["a", "b"]
        );
        assert!(references("a", "${onion:}").is_err());
        assert!(references("a", "${onionx}").is_err());
        assert!(references("a", "${onion").is_err());
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap().with_tor_app("tor");
        let svc = service_dir(&store, "b").unwrap();
        std::fs::create_dir_all(&svc).unwrap();
        assert!(matches!(
            render(&store, "a", "${onion:b}"),
            Err(OnionError::NotYet { .. })
        ));
        std::fs::write(svc.join("hostname"), format!("{ADDR}\n")).unwrap();
        assert_eq!(
            render(&store, "a", "-externalip=${onion:b}:8333").unwrap(),
            format!("-externalip={ADDR}:8333")
        );
        assert_eq!(render(&store, "a", "plain").unwrap(), "plain");
        std::fs::write(svc.join("hostname"), "nope.onion\n").unwrap();
        assert!(matches!(
            address(&store, "b"),
            Err(OnionError::Malformed { .. })
        ));
        let bare = Store::open(dir.path()).unwrap();
        assert!(matches!(
            address(&bare, "b"),
            Err(OnionError::NoTorApp { .. })
        ));
        assert!(is_v3_address(ADDR) && !is_v3_address("abc.onion"));
    }

    #[test]
    fn the_services_file_is_stable_and_names_each_port() {
        let svc = |app: &str, target: &str| Service {
            app: app.into(),
            ports: vec![
                OnionPort {
                    onion: 80,
                    target: 3000,
                },
                OnionPort {
                    onion: 443,
                    target: 3001,
                },
            ],
            target: target.into(),
        };
        let text = services_file(
            &[svc("web", "web"), svc("api", "127.0.0.1")],
            "/var/lib/tor/",
        );
        assert_eq!(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>(),
            vec![
                "HiddenServiceDir /var/lib/tor/onion/api",
                "HiddenServicePort 80 127.0.0.1:3000",
                "HiddenServicePort 443 127.0.0.1:3001",
                "HiddenServiceDir /var/lib/tor/onion/web",
                "HiddenServicePort 80 web:3000",
                "HiddenServicePort 443 web:3001",
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        assert!(write_services_file(dir.path(), &text).unwrap());
        assert!(
            !write_services_file(dir.path(), &text).unwrap(),
            "unchanged: not written"
        );
    }
}
