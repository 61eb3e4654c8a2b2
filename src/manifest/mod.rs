//! The app manifest (`<apps_dir>/<id>/manifest.yml`): its model, parsing and single-app rules.
//!
//! One app is one container. This module turns one manifest file into an [`AppManifest`]
//! and checks the rules that need nothing but that app and its folder; it reports every
//! problem as a [`Problem`] naming file, field and reason. Rules that span apps
//! (dependencies exist, cycles, host ports, references to another app's secrets) live in
//! [`crate::catalog`]. Nothing here touches the engine or the data folder.
//!
//! One concern per file: `model` (the types a manifest parses into), `id`, `mounts` (ports
//! and volumes), `source` (where the image comes from), `secret_ref` (`${secret:…}`
//! references), `rules` (single-app validation) and `yaml` (parsing and its error text).
//! Each file's unit tests sit at its bottom; `fixtures` holds the manifests they share.

use std::fmt;
use std::path::{Path, PathBuf};

mod backup;
#[cfg(test)]
mod fixtures;
mod id;
mod model;
mod mounts;
mod rules;
mod secret_ref;
mod source;
mod yaml;

pub use backup::*;
pub use id::*;
pub use model::*;
pub use mounts::*;
pub use secret_ref::*;
pub use source::*;
pub(crate) use yaml::{parse_yaml, serde_duration};

/// One thing wrong with a manifest, a catalog or a config file.
///
/// Displays as `PATH: FIELD: reason`, the line `archipelago validate` prints.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// The file (or folder) at fault.
    pub path: PathBuf,
    /// Dotted path of the field at fault, e.g. `container.memory_limit` or `ports[1]`;
    /// `file` when the file itself cannot be read, `yaml` when it is not valid YAML.
    pub field: String,
    /// What is wrong, lowercase, prefixed with `line N: ` when the line is known.
    pub reason: String,
}

impl Problem {
    /// Builds a problem from anything printable.
    pub fn new(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        reason: impl fmt::Display,
    ) -> Self {
        Problem {
            path: path.into(),
            field: field.into(),
            reason: reason.to_string(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.path.display(),
            self.field,
            self.reason
        )
    }
}

impl AppManifest {
    /// Reads, parses and validates the manifest at `path` (its folder is the app folder).
    /// Every problem found is returned; parse errors stop at the first.
    pub fn load(path: &Path) -> Result<AppManifest, Vec<Problem>> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| vec![Problem::new(path, "file", format!("cannot read: {err}"))])?;
        let manifest = AppManifest::from_yaml(path, &text)?;
        let app_dir = path.parent().unwrap_or(Path::new("."));
        let problems = manifest.validate(path, app_dir);
        if problems.is_empty() {
            Ok(manifest)
        } else {
            Err(problems)
        }
    }

    /// Parses manifest text; `path` only names the file in problems. No validation beyond
    /// the types (see [`AppManifest::validate`]).
    pub fn from_yaml(path: &Path, text: &str) -> Result<AppManifest, Vec<Problem>> {
        parse_yaml(path, text).map_err(|problem| vec![problem])
    }
}
