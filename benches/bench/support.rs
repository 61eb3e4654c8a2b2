//! The bench's pure helpers: the dependency graph of its apps, medians, and the request
//! counter of its engine proxy. Kept apart so `tests/bench_support.rs` tests them (a
//! `harness = false` bench runs no `#[test]`).

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Levels of the dependency graph: level 0 has no dependencies, each app of a later level
/// depends on two apps of the level before.
pub(crate) const LEVELS: usize = 3;

/// The median of `samples` (NaN when there are none).
pub(crate) fn median(samples: &[f64]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let mid = s.len() / 2;
    if s.len() % 2 == 1 {
        s[mid]
    } else {
        (s[mid - 1] + s[mid]) / 2.0
    }
}

/// App ids `<prefix>-a000…` and their dependencies: `LEVELS` levels of about n/LEVELS apps,
/// each app past level 0 depending on two neighbours of the level before.
pub(crate) fn dag(prefix: &str, n: usize) -> (Vec<String>, Vec<Vec<usize>>) {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-a{i:03}")).collect();
    let per = n / LEVELS;
    let first = n - per * (LEVELS - 1);
    let mut starts = vec![0];
    for l in 0..LEVELS {
        let size = if l == 0 { first } else { per };
        starts.push(starts[l] + size);
    }
    let mut deps = vec![Vec::new(); n];
    for l in 1..LEVELS {
        let (prev_start, prev_len) = (starts[l - 1], starts[l] - starts[l - 1]);
        if prev_len == 0 {
            continue;
        }
        for (j, i) in (starts[l]..starts[l + 1]).enumerate() {
            let mut d = vec![prev_start + j % prev_len];
            if prev_len > 1 {
                d.push(prev_start + (j + 1) % prev_len);
            }
            deps[i] = d;
        }
    }
    (ids, deps)
}

/// Engine API requests seen by the proxy, by method and path pattern.
#[derive(Debug, Default)]
pub(crate) struct Counts(Mutex<BTreeMap<String, u64>>);

impl Counts {
    pub(crate) fn add(&self, key: String) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(key).or_default() += 1;
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Finds HTTP request lines in a client's byte stream. It keeps the tail of the current
/// line only, so a request line that follows a body without a line break is still found.
#[derive(Debug, Default)]
pub(crate) struct Scanner {
    line: Vec<u8>,
}

/// Bytes of a line kept while scanning; request lines are far shorter.
pub(crate) const MAX_LINE: usize = 8192;
pub(crate) const METHODS: [&str; 5] = ["GET", "POST", "DELETE", "PUT", "HEAD"];

impl Scanner {
    pub(crate) fn feed(&mut self, bytes: &[u8], counts: &Counts) {
        for &b in bytes {
            if b == b'\n' {
                if let Some(key) = request_key(&String::from_utf8_lossy(&self.line)) {
                    counts.add(key);
                }
                self.line.clear();
            } else {
                self.line.push(b);
                if self.line.len() > 2 * MAX_LINE {
                    self.line.drain(..MAX_LINE);
                }
            }
        }
    }
}

/// `GET /containers/{id}/json` for a request line (version prefix, query and names cut).
pub(crate) fn request_key(line: &str) -> Option<String> {
    let line = line.trim_end_matches('\r');
    let head = line
        .strip_suffix(" HTTP/1.1")
        .or_else(|| line.strip_suffix(" HTTP/1.0"))?;
    let (pos, method) = METHODS
        .iter()
        .filter_map(|m| head.rfind(&format!("{m} /")).map(|p| (p, *m)))
        .max_by_key(|(p, _)| *p)?;
    let target = &head[pos + method.len() + 1..];
    let path = target.split('?').next().unwrap_or(target);
    let path = match path.strip_prefix("/v") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
            rest.find('/').map(|i| &rest[i..]).unwrap_or("/")
        }
        _ => path,
    };
    let mut segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if segs.first() == Some(&"containers")
        && segs.len() >= 2
        && !matches!(segs[1], "json" | "create" | "prune")
    {
        segs[1] = "{id}";
    }
    let path = if segs.first() == Some(&"images") && segs.last() == Some(&"json") && segs.len() > 2
    {
        "images/{name}/json".to_string()
    } else {
        segs.join("/")
    };
    Some(format!("{method} /{path}"))
}
