//! Volume snapshots for upgrades and rollbacks: what is copied, how, and whether it fits.
//!
//! Only the volumes whose manifest says `snapshot: copy` (the default) are copied, into
//! `snapshots/<id>/<op-id>/<volume>/`; `snapshot: none` volumes (a blockchain, lnd's
//! channel database) are never copied nor put back. A copy clones each file (`FICLONE`,
//! a reflink) where the filesystem can, and copies bytes elsewhere. Before a copy that
//! cannot clone, the free space is checked and an upgrade that would not fit is refused
//! with the figures, before anything is touched.
//!
//! Every function here is blocking file work: callers run it on tokio's blocking pool,
//! never on the actors' thread.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bytes done and in total, reported while a copy runs.
pub type CopyProgress<'a> = &'a (dyn Fn(u64, u64) + Send + Sync);

/// How often, at most, a copy reports progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Why a snapshot could not be taken or put back.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The copy would not fit: nothing was copied.
    #[error(
        "not enough free space for the snapshot of {volumes}: it needs {needed} and {free} is free on {path}"
    )]
    NoSpace {
        volumes: String,
        needed: Size,
        free: Size,
        path: PathBuf,
    },
}

/// A byte count shown in the largest binary unit (`3.2 GiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit < UNITS.len() - 1 {
            value /= 1024.0;
            unit += 1;
        }
        if unit == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{value:.1} {}", UNITS[unit])
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a copy of `folders` would take: the bytes of their regular files.
pub fn measure(folders: &[PathBuf]) -> Result<u64, SnapshotError> {
    let mut total = 0;
    for folder in folders {
        walk(folder, &mut |_, meta| {
            if meta.is_file() {
                total += meta.len();
            }
        })?;
    }
    Ok(total)
}

/// Visits every entry under `root` (itself included, links not followed); a missing root
/// is empty.
fn walk(
    root: &Path,
    visit: &mut dyn FnMut(&Path, &std::fs::Metadata),
) -> Result<(), SnapshotError> {
    let meta = match std::fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(root)(e)),
    };
    visit(root, &meta);
    if meta.is_dir() {
        for entry in std::fs::read_dir(root).map_err(io(root))? {
            let entry = entry.map_err(io(root))?;
            walk(&entry.path(), visit)?;
        }
    }
    Ok(())
}

/// Bytes free for an unprivileged writer on the filesystem of `path` (or of its nearest
/// existing parent).
pub fn free_space(path: &Path) -> Result<u64, SnapshotError> {
    let mut at = path;
    while !at.exists() {
        at = at.parent().unwrap_or(Path::new("/"));
    }
    let st = rustix::fs::statvfs(at).map_err(|e| io(at)(e.into()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// True when a file in folder `from` can be cloned into folder `to` (`FICLONE`): then a
/// copy takes next to no space and time. Tried on a scratch file, left nowhere.
pub fn can_clone(from: &Path, to: &Path) -> bool {
    let probe = || -> std::io::Result<bool> {
        let src_path = from.join(".archipelago-clone-probe");
        let dst_path = to.join(".archipelago-clone-probe");
        let result = (|| {
            let mut src = File::create(&src_path)?;
            src.write_all(b"probe")?;
            let dst = File::create(&dst_path)?;
            Ok(rustix::fs::ioctl_ficlone(&dst, &src).is_ok())
        })();
        let _ = std::fs::remove_file(&src_path);
        let _ = std::fs::remove_file(&dst_path);
        result
    };
    probe().unwrap_or(false)
}

/// Refuses a copy of `bytes` into `dest` that would not fit, leaving 1 % of the
/// filesystem (at least 64 MiB) for everything else. A cloning copy always fits.
pub fn check_space(
    volumes: &[String],
    source: &Path,
    dest: &Path,
    bytes: u64,
) -> Result<(), SnapshotError> {
    if bytes == 0 || can_clone(source, dest) {
        return Ok(());
    }
    let free = free_space(dest)?;
    let reserve = (free / 100).max(64 << 20);
    if bytes.saturating_add(reserve) > free {
        return Err(SnapshotError::NoSpace {
            volumes: volumes.join(", "),
            needed: Size(bytes),
            free: Size(free),
            path: dest.to_path_buf(),
        });
    }
    Ok(())
}

/// What a copy did, for the operation's message and the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    pub bytes: u64,
    pub files: u64,
    /// Files cloned rather than copied.
    pub cloned: u64,
    /// FIFOs, sockets and device nodes, which are never opened nor copied.
    pub skipped: u64,
}

/// Copies the tree at `from` to `to` (which must not exist): folders, regular files and
/// symlinks, with their owners and modes; setuid and setgid bits of files are dropped;
/// FIFOs, sockets and devices are skipped, never opened. Each file is cloned where the
/// filesystem can, copied otherwise. `progress` gets (bytes done, `total`).
pub fn copy_tree(
    from: &Path,
    to: &Path,
    total: u64,
    progress: CopyProgress<'_>,
) -> Result<CopyStats, SnapshotError> {
    let mut stats = CopyStats::default();
    let mut last = Instant::now();
    copy_entry(from, to, total, progress, &mut stats, &mut last)?;
    progress(stats.bytes, total.max(stats.bytes));
    Ok(stats)
}

fn copy_entry(
    from: &Path,
    to: &Path,
    total: u64,
    progress: CopyProgress<'_>,
    stats: &mut CopyStats,
    last: &mut Instant,
) -> Result<(), SnapshotError> {
    let meta = std::fs::symlink_metadata(from).map_err(io(from))?;
    let kind = meta.file_type();
    if kind.is_dir() {
        std::fs::create_dir(to).map_err(io(to))?;
        for entry in std::fs::read_dir(from).map_err(io(from))? {
            let entry = entry.map_err(io(from))?;
            copy_entry(
                &entry.path(),
                &to.join(entry.file_name()),
                total,
                progress,
                stats,
                last,
            )?;
        }
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(io(to))?;
    } else if kind.is_symlink() {
        let target = std::fs::read_link(from).map_err(io(from))?;
        std::os::unix::fs::symlink(target, to).map_err(io(to))?;
    } else if kind.is_file() {
        copy_file(from, to, &meta, stats)?;
        if last.elapsed() >= PROGRESS_EVERY {
            *last = Instant::now();
            progress(stats.bytes, total.max(stats.bytes));
        }
    } else {
        stats.skipped += 1;
        tracing::warn!(path = %from.display(), "not a file, folder or link: left out of the snapshot");
        return Ok(());
    }
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid())).map_err(io(to))
}

fn copy_file(
    from: &Path,
    to: &Path,
    meta: &std::fs::Metadata,
    stats: &mut CopyStats,
) -> Result<(), SnapshotError> {
    // Never setuid or setgid in a copy; the bits are set after the owner, as chown clears
    // them anyway.
    let mode = meta.mode() & 0o777;
    let mut src = File::open(from).map_err(io(from))?;
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(io(to))?;
    if rustix::fs::ioctl_ficlone(&dst, &src).is_ok() {
        stats.cloned += 1;
    } else {
        // `std::io::copy` between files uses copy_file_range where it can.
        std::io::copy(&mut src, &mut dst).map_err(io(to))?;
    }
    dst.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io(to))?;
    stats.files += 1;
    stats.bytes += meta.len();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_files_folders_links_with_owners_and_without_setuid() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        std::fs::create_dir_all(from.join("sub")).unwrap();
        std::fs::write(from.join("a"), vec![7u8; 300_000]).unwrap();
        std::fs::write(from.join("sub/b"), b"bee").unwrap();
        std::fs::set_permissions(from.join("a"), std::fs::Permissions::from_mode(0o4755)).unwrap();
        std::os::unix::fs::lchown(from.join("sub/b"), Some(4321), Some(4322)).unwrap();
        std::os::unix::fs::symlink("sub/b", from.join("link")).unwrap();
        let fifo = from.join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let total = measure(std::slice::from_ref(&from)).unwrap();
        assert_eq!(total, 300_003);
        let seen = std::sync::Mutex::new(vec![]);
        let to = dir.path().join("to");
        let stats = copy_tree(&from, &to, total, &|done, total| {
            seen.lock().unwrap().push((done, total))
        })
        .unwrap();
        assert_eq!((stats.files, stats.bytes, stats.skipped), (2, 300_003, 1));
        assert_eq!(std::fs::read(to.join("a")).unwrap(), vec![7u8; 300_000]);
        let a = std::fs::metadata(to.join("a")).unwrap();
        assert_eq!(a.mode() & 0o7777, 0o755, "setuid dropped, the rest kept");
        let b = std::fs::metadata(to.join("sub/b")).unwrap();
        assert_eq!((b.uid(), b.gid()), (4321, 4322), "owner kept");
        assert_eq!(
            std::fs::read_link(to.join("link")).unwrap(),
            Path::new("sub/b")
        );
        assert!(
            !to.join("fifo").exists(),
            "a FIFO is never opened nor copied"
        );
        assert_eq!(seen.lock().unwrap().last(), Some(&(300_003, 300_003)));
    }

    #[test]
    fn a_copy_that_would_not_fit_is_refused_with_figures() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_space(dir.path()).unwrap();
        assert!(free > 0);
        let cloning = can_clone(dir.path(), dir.path());
        let err = check_space(&["data".into()], dir.path(), dir.path(), free + 1);
        if cloning {
            // A filesystem with reflinks copies in place: any size fits.
            assert!(err.is_ok());
        } else {
            let text = err.unwrap_err().to_string();
            assert!(
                text.starts_with("not enough free space for the snapshot of data: it needs"),
                "{text}"
            );
            assert!(text.contains(" is free on "), "{text}");
        }
        assert!(check_space(&["data".into()], dir.path(), dir.path(), 1024).is_ok());
        assert!(check_space(&[], dir.path(), dir.path(), 0).is_ok());
    }

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(Size(512).to_string(), "512 B");
        assert_eq!(Size(3 << 30).to_string(), "3.0 GiB");
        assert_eq!(Size(1536 << 10).to_string(), "1.5 MiB");
    }
}
