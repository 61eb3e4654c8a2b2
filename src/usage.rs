//! What apps use: memory and CPU of a container read from its cgroup files (v1 or v2),
//! the disk its volume folders take, and the free space where `data_dir` lives.
//!
//! These are plain readers with no schedule of their own: the supervisor calls them on a
//! bounded schedule, on the blocking pool, never on the RPC path (see
//! `Supervisor::sample_usage`). When a container's cgroup is not visible to the
//! supervisor (another cgroup namespace, a rootless engine), the engine's one-shot stats
//! stand in ([`crate::engine::ContainerRuntime::stats`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::api::{DiskStatus, Percent, Usage};

/// How often memory and CPU are sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
/// How often the volume folders are walked for disk use, and `data_dir`'s free space read.
pub const DISK_INTERVAL: Duration = Duration::from_secs(180);
/// At most this many entries are counted per app and walk, so a folder of millions of
/// small files cannot hold the blocking thread for long; the figure is then a floor.
pub const DISK_WALK_LIMIT: usize = 200_000;

/// The cgroup files that say what one container uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupFiles {
    /// Memory in use: `memory.current` (v2) or `memory.usage_in_bytes` (v1).
    pub memory: PathBuf,
    /// `memory.stat`, for the inactive file cache left out of the figure.
    pub memory_stat: PathBuf,
    pub cpu: CpuFile,
}

/// Where the CPU time of a cgroup is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuFile {
    /// `cpu.stat`, line `usage_usec` (v2).
    V2(PathBuf),
    /// `cpuacct.usage`, nanoseconds (v1).
    V1(PathBuf),
}

/// One reading of a container's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub memory_bytes: u64,
    /// Total CPU time the container used, in nanoseconds.
    pub cpu_ns: u64,
}

/// The cgroup files of process `pid`, from `/proc/<pid>/cgroup`, under the cgroup mount
/// `root` (normally `/sys/fs/cgroup`). `None` when the files are not there to read.
pub fn cgroup_of(pid: u32, root: &Path) -> Option<CgroupFiles> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let unified = root.join("cgroup.controllers").exists();
    let files = parse_proc_cgroup(&text, root, unified)?;
    (files.memory.exists() && files.memory_stat.exists()).then_some(files)
}

/// The cgroup files named by the text of `/proc/<pid>/cgroup`. On a unified (v2) mount
/// the `0::` line names the group; otherwise the v1 `memory` and `cpuacct` lines do.
pub fn parse_proc_cgroup(text: &str, root: &Path, unified: bool) -> Option<CgroupFiles> {
    let path_of = |wanted: &dyn Fn(&str, &str) -> bool| {
        text.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            wanted(id, controllers).then(|| path.trim_start_matches('/').to_string())
        })
    };
    if unified {
        let dir = root.join(path_of(&|id, c| id == "0" && c.is_empty())?);
        return Some(CgroupFiles {
            memory: dir.join("memory.current"),
            memory_stat: dir.join("memory.stat"),
            cpu: CpuFile::V2(dir.join("cpu.stat")),
        });
    }
    let has = |c: &str, name: &str| c.split(',').any(|x| x == name);
    let memory = root.join("memory").join(path_of(&|_, c| has(c, "memory"))?);
    let cpuacct = root
        .join("cpuacct")
        .join(path_of(&|_, c| has(c, "cpuacct"))?);
    Some(CgroupFiles {
        memory: memory.join("memory.usage_in_bytes"),
        memory_stat: memory.join("memory.stat"),
        cpu: CpuFile::V1(cpuacct.join("cpuacct.usage")),
    })
}

/// Reads a container's memory and CPU counters: four small files.
pub fn read(files: &CgroupFiles) -> io::Result<Reading> {
    let number = |p: &Path| -> io::Result<u64> {
        let text = fs::read_to_string(p)?;
        text.trim().parse().map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", p.display()))
        })
    };
    let used = number(&files.memory)?;
    let stat = fs::read_to_string(&files.memory_stat)?;
    let inactive = stat_value(&stat, "total_inactive_file")
        .or_else(|| stat_value(&stat, "inactive_file"))
        .unwrap_or(0);
    let cpu_ns = match &files.cpu {
        CpuFile::V1(p) => number(p)?,
        CpuFile::V2(p) => {
            let text = fs::read_to_string(p)?;
            stat_value(&text, "usage_usec").unwrap_or(0) * 1000
        }
    };
    Ok(Reading {
        memory_bytes: used.saturating_sub(inactive),
        cpu_ns,
    })
}

/// The value of `key` in a `key value` per line file (`memory.stat`, `cpu.stat`).
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// CPU use between two readings, 100 being one full core, rounded to a tenth; `None` when
/// the counter went back (a new container) or no time passed.
pub fn cpu_percent(before: (Instant, u64), after: (Instant, u64)) -> Option<Percent> {
    let wall = after.0.checked_duration_since(before.0)?.as_nanos() as f64;
    let used = after.1.checked_sub(before.1)? as f64;
    (wall > 0.0).then(|| Percent((used / wall * 1000.0).round() / 10.0))
}

/// Bytes taken by the files below `dir` (allocated blocks, so sparse files count as what
/// they hold), not following symbolic links and counting at most `limit` entries.
/// A missing folder is 0.
pub fn dir_size(dir: &Path, limit: usize) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut seen = 0usize;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > limit {
                return total;
            }
            let Ok(meta) = entry.metadata() else { continue };
            total += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    total
}

/// Free and total space of the file system holding `path`.
pub fn disk_status(path: &Path) -> Option<DiskStatus> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(DiskStatus {
        free_bytes: st.f_bavail.saturating_mul(st.f_frsize),
        total_bytes: st.f_blocks.saturating_mul(st.f_frsize),
    })
}

/// Whether `new` differs enough from `old` to be worth an event: memory by 1 % of the
/// limit (at least 1 MiB), CPU by 2 points, disk by 1 MiB, or a figure appearing or
/// going. Small jitter is not sent, so 30 idle apps make no event storm.
pub fn changed(old: Option<&Usage>, new: &Usage, limit_bytes: u64) -> bool {
    let Some(old) = old else { return true };
    const MIB: u64 = 1024 * 1024;
    let memory_step = (limit_bytes / 100).max(MIB);
    let moved = |a: Option<u64>, b: Option<u64>, step: u64| match (a, b) {
        (Some(a), Some(b)) => a.abs_diff(b) >= step,
        (a, b) => a.is_some() != b.is_some(),
    };
    let cpu_moved = match (old.cpu_percent, new.cpu_percent) {
        (Some(a), Some(b)) => (a.0 - b.0).abs() >= 2.0,
        (a, b) => a.is_some() != b.is_some(),
    };
    moved(old.memory_bytes, new.memory_bytes, memory_step)
        || moved(old.disk_bytes, new.disk_bytes, MIB)
        || cpu_moved
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "e4a7f453915be98fb107f27bd368f19f70db4422bf2ac282bd7885ebd9f8a96c";

    #[test]
    fn cgroup_paths_follow_the_hierarchy_in_use() {
        let v1 = format!(
            "9:name=systemd:/docker/{ID}\n4:memory:/docker/{ID}\n2:cpu,cpuacct:/docker/{ID}\n0::/docker/{ID}\n"
        );
        let root = Path::new("/sys/fs/cgroup");
        let files = parse_proc_cgroup(&v1, root, false).unwrap();
        assert_eq!(
            files.memory,
            root.join(format!("memory/docker/{ID}/memory.usage_in_bytes"))
        );
        assert_eq!(
            files.cpu,
            CpuFile::V1(root.join(format!("cpuacct/docker/{ID}/cpuacct.usage")))
        );
        let v2 = format!("0::/system.slice/docker-{ID}.scope\n");
        let files = parse_proc_cgroup(&v2, root, true).unwrap();
        assert_eq!(
            files.memory,
            root.join(format!("system.slice/docker-{ID}.scope/memory.current"))
        );
        assert_eq!(parse_proc_cgroup(&v2, root, false), None);
        assert_eq!(parse_proc_cgroup("", root, true), None);
    }

    #[test]
    fn a_reading_leaves_out_inactive_file_cache() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        fs::write(p.join("memory.current"), "10485760\n").unwrap();
        fs::write(
            p.join("memory.stat"),
            "anon 5000\nfile 9000\ninactive_file 2097152\n",
        )
        .unwrap();
        fs::write(p.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").unwrap();
        let files = CgroupFiles {
            memory: p.join("memory.current"),
            memory_stat: p.join("memory.stat"),
            cpu: CpuFile::V2(p.join("cpu.stat")),
        };
        assert_eq!(
            read(&files).unwrap(),
            Reading {
                memory_bytes: 8 * 1024 * 1024,
                cpu_ns: 1_500_000
            }
        );
    }

    #[test]
    fn cpu_percent_is_per_core_and_rounded() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(
            cpu_percent((t0, 0), (t1, 2_500_000_000)),
            Some(Percent(50.0))
        );
        assert_eq!(cpu_percent((t0, 0), (t1, 12_345_678)), Some(Percent(0.2)));
        assert_eq!(cpu_percent((t0, 10), (t1, 5)), None, "a new container");
        assert_eq!(cpu_percent((t0, 0), (t0, 5)), None);
    }

    #[test]
    fn small_moves_are_not_events() {
        let mib = 1024 * 1024;
        let usage = |m: u64, cpu: f64, disk: Option<u64>| Usage {
            memory_bytes: Some(m * mib),
            cpu_percent: Some(Percent(cpu)),
            disk_bytes: disk,
            sampled_at: String::new(),
        };
        let old = usage(100, 1.0, Some(10 * mib));
        let limit = 512 * mib;
        assert!(changed(None, &old, limit));
        assert!(!changed(
            Some(&old),
            &usage(104, 2.5, Some(10 * mib)),
            limit
        ));
        assert!(changed(Some(&old), &usage(106, 1.0, Some(10 * mib)), limit));
        assert!(changed(Some(&old), &usage(100, 3.0, Some(10 * mib)), limit));
        assert!(changed(Some(&old), &usage(100, 1.0, Some(12 * mib)), limit));
        assert!(changed(Some(&old), &usage(100, 1.0, None), limit));
    }

    #[test]
    fn dir_size_counts_files_below_and_stops_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(dir.path().join("a/b/f"), vec![1u8; 64 * 1024]).unwrap();
        fs::write(dir.path().join("g"), vec![1u8; 64 * 1024]).unwrap();
        let all = dir_size(dir.path(), usize::MAX);
        assert!(all >= 128 * 1024, "{all}");
        assert!(dir_size(dir.path(), 1) < all);
        assert_eq!(dir_size(&dir.path().join("absent"), 10), 0);
    }
}
