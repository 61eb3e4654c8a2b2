//! The data plan of an import: each host folder an imported app used goes to its volume
//! folder `<data_dir>/apps/<id>/<volume>`. A rename when both are on one file system
//! (instant, even for a blockchain), else a copy with its size and the free space there.
//! `--move` carries out the renames, leaving a symbolic link at the old path so that a
//! running container's bind and the owner's scripts still find the data. Copies are never
//! done here: they need the container stopped first.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::mounts::PlannedFolder;

/// What to do with one folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Same file system: `rename(source, target)`.
    Rename,
    /// Another file system (or an engine's volume): copy after stopping the container.
    Copy { bytes: u64, free: Option<u64> },
    /// Done by `--move`: renamed, and the source is now a link to the target.
    Moved,
    /// The source already links to the target: moved by an earlier run.
    AlreadyMoved,
    /// The target exists: nothing is touched.
    TargetExists,
    /// The source does not exist: the app starts with an empty volume.
    SourceMissing,
    /// `--move` tried the rename and failed.
    Failed(String),
}

/// One folder's entry of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub folder: PlannedFolder,
    pub target: PathBuf,
    pub step: Step,
}

/// How many files a size estimate walks at most (the figure is then a floor).
const WALK_LIMIT: usize = 10_000_000;

/// The first existing folder at or above `path`.
fn existing_ancestor(path: &Path) -> Option<&Path> {
    path.ancestors().find(|p| p.exists())
}

/// Decides the step for `folder` into `target`; `apps_root` is `<data_dir>/apps`.
pub fn decide(folder: &PlannedFolder, target: &Path, apps_root: &Path) -> Step {
    let source = &folder.source;
    if target.exists() || target.is_symlink() {
        let same = match (source.canonicalize(), target.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        return if same {
            Step::AlreadyMoved
        } else {
            Step::TargetExists
        };
    }
    let Ok(meta) = std::fs::symlink_metadata(source) else {
        return Step::SourceMissing;
    };
    let root = existing_ancestor(apps_root).unwrap_or(Path::new("/"));
    let same_fs = std::fs::metadata(root).is_ok_and(|r| r.dev() == meta.dev());
    if same_fs && folder.engine_volume.is_none() && meta.is_dir() {
        Step::Rename
    } else {
        Step::Copy {
            bytes: crate::usage::dir_size(source, WALK_LIMIT),
            free: crate::usage::disk_status(root).map(|d| d.free_bytes),
        }
    }
}

/// The plan for every folder, targets under `data_dir`.
pub fn plan(folders: &[PlannedFolder], data_dir: &Path) -> Vec<Entry> {
    let apps_root = data_dir.join("apps");
    folders
        .iter()
        .map(|f| {
            let target = apps_root.join(&f.app).join(&f.volume);
            let step = decide(f, &target, &apps_root);
            Entry {
                folder: f.clone(),
                target,
                step,
            }
        })
        .collect()
}

/// Carries out one rename: parents of the target made, `rename(source, target)`, then a
/// symbolic link at the source pointing to the target.
pub fn carry_out(entry: &mut Entry) {
    if entry.step != Step::Rename {
        return;
    }
    let source = &entry.folder.source;
    let target = &entry.target;
    let result = (|| -> std::io::Result<()> {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(source, target)?;
        std::os::unix::fs::symlink(target, source)
    })();
    entry.step = match result {
        Ok(()) => Step::Moved,
        Err(e) => Step::Failed(e.to_string()),
    };
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (src, dst) = (self.folder.source.display(), self.target.display());
        write!(f, "plan: {}: {}: ", self.folder.app, self.folder.volume)?;
        match &self.step {
            Step::Rename => write!(
                f,
                "rename {src} -> {dst} (same file system; run with --move to do it)"
            )?,
            Step::Copy { bytes, free } => {
                let free = free.map_or("unknown".to_string(), |b| format!("{b} bytes"));
                let parent = self
                    .target
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                let what = match &self.folder.engine_volume {
                    Some(v) => format!("engine volume {v} "),
                    None => String::new(),
                };
                write!(
                    f,
                    "copy {what}{src} -> {dst}: {bytes} bytes, {free} free there; after stopping the container run: mkdir -p {parent} && cp -a --reflink=auto {src} {dst}"
                )?
            }
            Step::Moved => write!(f, "moved {src} -> {dst}; {src} now links to it")?,
            Step::AlreadyMoved => write!(f, "{src} already links to {dst}; nothing to do")?,
            Step::TargetExists => write!(f, "target {dst} exists; nothing touched")?,
            Step::SourceMissing => write!(
                f,
                "{src} does not exist; the app starts with an empty {dst}"
            )?,
            Step::Failed(e) => write!(f, "rename {src} -> {dst} failed: {e}; nothing moved")?,
        }
        if !self.folder.shared_with.is_empty() {
            write!(f, " (also used by {})", self.folder.shared_with.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(source: PathBuf) -> PlannedFolder {
        PlannedFolder {
            app: "bitcoind".into(),
            volume: "bitcoin".into(),
            source,
            engine_volume: None,
            shared_with: Vec::new(),
        }
    }

    #[test]
    fn rename_then_link_then_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("old/bitcoin");
        std::fs::create_dir_all(&source).unwrap();
        std::fs::write(source.join("blk0.dat"), b"chain").unwrap();
        let data_dir = dir.path().join("data");
        let mut entries = plan(&[folder(source.clone())], &data_dir);
        assert_eq!(entries[0].step, Step::Rename);
        carry_out(&mut entries[0]);
        assert_eq!(entries[0].step, Step::Moved);
        let target = data_dir.join("apps/bitcoind/bitcoin");
        assert_eq!(std::fs::read(target.join("blk0.dat")).unwrap(), b"chain");
        assert_eq!(std::fs::read_link(&source).unwrap(), target);
        let again = plan(&[folder(source.clone())], &data_dir);
        assert_eq!(again[0].step, Step::AlreadyMoved);

        let other = dir.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        assert_eq!(
            plan(&[folder(other)], &data_dir)[0].step,
            Step::TargetExists
        );
        let gone = plan(
            &[PlannedFolder {
                app: "x".into(),
                ..folder(dir.path().join("gone"))
            }],
            &data_dir,
        );
        assert_eq!(gone[0].step, Step::SourceMissing);
    }

    #[test]
    fn engine_volumes_are_copied() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("vol");
        std::fs::create_dir_all(&source).unwrap();
        std::fs::write(source.join("f"), vec![7u8; 10_000]).unwrap();
        let mut f = folder(source);
        f.engine_volume = Some("node_data".into());
        let entry = &plan(&[f], &dir.path().join("data"))[0];
        match entry.step {
            Step::Copy { bytes, free } => assert!(bytes >= 10_000 && free.is_some()),
            ref other => panic!("expected a copy, got {other:?}"),
        }
        assert!(
            entry.to_string().contains("cp -a --reflink=auto"),
            "{entry}"
        );
    }
}
