//! The build context sent to the engine: a tar of the app's folder, minus what its
//! `.dockerignore` leaves out.

use std::path::{Path, PathBuf};

/// A `.dockerignore` file: patterns matched against slash-separated paths relative to
/// the context; the last matching pattern wins, `!` re-includes. A pattern matches a path
/// or any folder above it, so `dir/` and `dir` both drop the whole folder. Supports `*`,
/// `?` and `**`; no character classes.
#[derive(Debug, Default, Clone)]
pub struct IgnoreMatcher {
    /// (negated, pattern), in file order: the last pattern that matches decides.
    patterns: Vec<(bool, globset::GlobMatcher)>,
}

impl IgnoreMatcher {
    /// Parses the text of a `.dockerignore` file. Patterns are Go's `filepath.Match`
    /// with `**` across folders, as Docker reads them: `*` and `?` never cross a `/`.
    /// A pattern that does not parse is left out, as Docker would fail the build on it.
    pub fn parse(text: &str) -> Self {
        let patterns = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| {
                let (negate, p) = match l.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, l),
                };
                let clean: Vec<&str> = p
                    .split('/')
                    .filter(|s| !s.is_empty() && *s != ".")
                    .collect();
                if clean.is_empty() {
                    return None;
                }
                let glob = globset::GlobBuilder::new(&clean.join("/"))
                    .literal_separator(true)
                    .build()
                    .ok()?;
                Some((negate, glob.compile_matcher()))
            })
            .collect();
        IgnoreMatcher { patterns }
    }

    /// True when `path` (relative, `/`-separated) is left out of the context: a pattern
    /// that matches the path or one of its parent folders.
    pub fn is_ignored(&self, path: &str) -> bool {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let prefixes: Vec<String> = (1..=segs.len()).map(|n| segs[..n].join("/")).collect();
        let mut ignored = false;
        for (negate, pattern) in &self.patterns {
            if prefixes.iter().any(|p| pattern.is_match(p)) {
                ignored = !negate;
            }
        }
        ignored
    }
}

/// Tars the build context, leaving out what `.dockerignore` says, but always keeping the
/// Dockerfile and `.dockerignore` themselves (as the docker CLI does).
pub fn tar_context(context: &Path, dockerfile: &str) -> std::io::Result<Vec<u8>> {
    let ignore = match std::fs::read_to_string(context.join(".dockerignore")) {
        Ok(text) => IgnoreMatcher::parse(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => IgnoreMatcher::default(),
        Err(e) => return Err(e),
    };
    let keep = |rel: &str| {
        rel == dockerfile.trim_start_matches("./")
            || rel == ".dockerignore"
            || !ignore.is_ignored(rel)
    };
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let mut entries =
            std::fs::read_dir(context.join(&rel_dir))?.collect::<Result<Vec<_>, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let rel = rel_dir.join(entry.file_name());
            let rel_str = rel.to_string_lossy().replace('\\', "/");
            let file_type = entry.file_type()?;
            if file_type.is_dir() {
                // Descend even into an ignored folder: a `!` pattern may re-include a file.
                if keep(&rel_str) {
                    builder.append_dir(&rel, entry.path())?;
                }
                stack.push(rel);
            } else if keep(&rel_str) {
                builder.append_path_with_name(entry.path(), &rel)?;
            }
        }
    }
    builder.into_inner()
}
