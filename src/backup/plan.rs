//! What a backup takes: for each installed app, its state record, its secrets and the
//! volumes its policy names, minus its `exclude` globs and `never` paths. A function of
//! the manifests and the data folder's layout; no I/O besides asking which paths exist.

use std::path::Path;

use crate::manifest::{AppManifest, Consistency};

/// The paths (relative to `data_dir`) and restic exclude patterns of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupSet {
    pub paths: Vec<String>,
    pub excludes: Vec<String>,
    /// Apps stopped for the copy (consistency `stop`).
    pub stop: Vec<String>,
    /// Apps whose `pre.exec` runs first (consistency `exec`).
    pub exec: Vec<String>,
    /// Every app in the set.
    pub apps: Vec<String>,
}

/// The node-wide marker that the first boot is over: restored so a restored node does not
/// install its default apps on top of the restored ones.
pub const FIRST_BOOT_MARKER: &str = "first-boot-done";

/// The set for `apps` (the installed ones), with `exists` telling which relative paths
/// are there.
pub fn backup_set(
    data_dir: &Path,
    apps: &[&AppManifest],
    exists: impl Fn(&str) -> bool,
) -> BackupSet {
    let mut set = BackupSet::default();
    if exists(FIRST_BOOT_MARKER) {
        set.paths.push(FIRST_BOOT_MARKER.to_string());
    }
    for app in apps {
        let id = app.id.as_str();
        set.apps.push(id.to_string());
        let policy = &app.backup;
        let own = app.own_volume_names();
        let mut candidates = vec![format!("state/{id}.json"), format!("secrets/{id}")];
        let volumes = policy.volumes_in(&own);
        candidates.extend(volumes.iter().map(|v| format!("apps/{id}/{v}")));
        set.paths
            .extend(candidates.into_iter().filter(|p| exists(p.as_str())));
        let root = data_dir.join("apps").join(id);
        for glob in &policy.exclude {
            for v in &volumes {
                set.excludes
                    .push(root.join(v).join(glob).display().to_string());
            }
        }
        set.excludes.extend(
            policy
                .never
                .iter()
                .map(|p| root.join(p).display().to_string()),
        );
        match policy.consistency {
            Consistency::Stop => set.stop.push(id.to_string()),
            Consistency::Exec => set.exec.push(id.to_string()),
            Consistency::Live => {}
        }
    }
    set
}

/// restic exclude patterns for a restore: the `never` paths of `apps`, as stored in a
/// snapshot (relative to `data_dir`, with a leading `/`).
pub fn restore_excludes(apps: &[&AppManifest]) -> Vec<String> {
    apps.iter()
        .flat_map(|app| {
            app.backup
                .never
                .iter()
                .map(move |p| format!("/apps/{}/{p}", app.id))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(yaml: &str) -> AppManifest {
        serde_yaml::from_str(yaml).unwrap()
    }

    const LND: &str = "id: lnd\nname: LND\nversion: '1'\ncontainer:\n  image: x\n  memory_limit: 64Mi\n  volumes: ['data:/root/.lnd', 'bitcoind/data:/btc:ro']\nbackup:\n  consistency: stop\n  exclude: ['logs/**']\n  never: [data/**/channel.db]\n";
    const WEB: &str = "id: web\nname: Web\nversion: '1'\ncontainer:\n  image: x\n  memory_limit: 64Mi\n  volumes: ['data:/d', 'cache:/c']\nbackup:\n  volumes: [data]\n";

    #[test]
    fn takes_state_secrets_and_named_volumes_only() {
        let (lnd, web) = (manifest(LND), manifest(WEB));
        let set = backup_set(Path::new("/n"), &[&lnd, &web], |p| {
            p != "secrets/web" && p != FIRST_BOOT_MARKER
        });
        assert_eq!(
            set.paths,
            vec![
                "state/lnd.json",
                "secrets/lnd",
                "apps/lnd/data",
                "state/web.json",
                "apps/web/data"
            ]
        );
        assert_eq!(
            set.excludes,
            vec!["/n/apps/lnd/data/logs/**", "/n/apps/lnd/data/**/channel.db"]
        );
        assert_eq!(set.stop, vec!["lnd"]);
        assert!(set.exec.is_empty());
        assert_eq!(
            restore_excludes(&[&lnd, &web]),
            vec!["/apps/lnd/data/**/channel.db"]
        );
    }

    #[test]
    fn the_first_boot_marker_goes_in_when_present() {
        let set = backup_set(Path::new("/n"), &[], |_| true);
        assert_eq!(set.paths, vec![FIRST_BOOT_MARKER]);
    }
}
