//! Where an app's image comes from: a registry reference or a build in the app's folder.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::id::AppId;
use super::model::ContainerConfig;
use super::yaml::scalar_map;

/// Build the image from source in the app's folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSpec {
    /// Build context, relative to the app's folder; may not escape it.
    #[serde(default = "default_context")]
    pub context: PathBuf,
    /// Dockerfile, relative to the context.
    #[serde(default = "default_dockerfile")]
    pub dockerfile: String,
    /// Build arguments. Scalars are read as text.
    #[serde(default, deserialize_with = "scalar_map")]
    pub args: BTreeMap<String, String>,
}

pub(super) fn default_context() -> PathBuf {
    PathBuf::from(".")
}

pub(super) fn default_dockerfile() -> String {
    "Dockerfile".to_string()
}

/// Where an app's image comes from, with paths resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolvedSource {
    /// Pull this image reference.
    Pull { image: String },
    /// Build from an absolute context folder and tag the result.
    Build {
        context: PathBuf,
        dockerfile: String,
        args: BTreeMap<String, String>,
        tag: String,
    },
}

/// Why [`ContainerConfig::resolve`] could not say where the image comes from.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Neither `image` nor `build` is set.
    #[error("app {app}: container needs one of image and build")]
    NoSource { app: AppId },
    /// Both `image` and `build` are set.
    #[error("app {app}: container has both image and build; keep one")]
    BothSources { app: AppId },
    /// The build context leaves the app's folder.
    #[error("app {app}: build context {context} escapes the app folder {app_dir}")]
    ContextEscapes {
        app: AppId,
        context: PathBuf,
        app_dir: PathBuf,
    },
    /// A path could not be made absolute or canonical.
    #[error("app {app}: cannot resolve {path}: {source}")]
    Io {
        app: AppId,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ContainerConfig {
    /// Says where the image comes from: the `image` to pull, or the absolute build context
    /// (checked not to escape `app_dir`, following symlinks when it exists) and the tag
    /// `archipelago/<id>:<version>` to build.
    pub fn resolve(
        &self,
        app_dir: &Path,
        id: &AppId,
        version: &str,
    ) -> Result<ResolvedSource, ManifestError> {
        match (&self.image, &self.build) {
            (Some(_), Some(_)) => Err(ManifestError::BothSources { app: id.clone() }),
            (None, None) => Err(ManifestError::NoSource { app: id.clone() }),
            (Some(image), None) => Ok(ResolvedSource::Pull {
                image: image.clone(),
            }),
            (None, Some(build)) => {
                let escapes = || ManifestError::ContextEscapes {
                    app: id.clone(),
                    context: build.context.clone(),
                    app_dir: app_dir.to_path_buf(),
                };
                if escapes_folder(&build.context) {
                    return Err(escapes());
                }
                let io = |path: &Path| {
                    let path = path.to_path_buf();
                    let app = id.clone();
                    move |source| ManifestError::Io { app, path, source }
                };
                let app_dir_abs = std::path::absolute(app_dir).map_err(io(app_dir))?;
                let context = app_dir_abs.join(&build.context);
                let context = if context.exists() {
                    let real_dir = app_dir_abs.canonicalize().map_err(io(app_dir))?;
                    let real = context.canonicalize().map_err(io(&context))?;
                    if !real.starts_with(&real_dir) {
                        return Err(escapes());
                    }
                    real
                } else {
                    normalize(&context)
                };
                Ok(ResolvedSource::Build {
                    context,
                    dockerfile: build.dockerfile.clone(),
                    args: build.args.clone(),
                    tag: build_tag(id, version),
                })
            }
        }
    }

    /// The image reference the container runs: `image`, or `archipelago/<id>:<version>`
    /// for an app built from source.
    pub fn image_ref(&self, id: &AppId, version: &str) -> String {
        match &self.image {
            Some(image) => image.clone(),
            None => build_tag(id, version),
        }
    }
}

pub(super) fn build_tag(id: &AppId, version: &str) -> String {
    format!("archipelago/{id}:{version}")
}

/// True when a relative path is absolute or climbs out of its base with `..`.
pub(super) fn escapes_folder(path: &Path) -> bool {
    let mut depth: i64 = 0;
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => return true,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            Component::Normal(_) => depth += 1,
        }
    }
    false
}

/// Removes `.` and resolvable `..` components without touching the file system.
pub(super) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::fixtures::*;
    use crate::manifest::*;

    #[test]
    fn resolves_image_sources() {
        let dir = tempfile::tempdir().expect("temp dir");
        let app_dir = dir.path().join("lnd");
        std::fs::create_dir_all(app_dir.join("src")).expect("create app dir");
        let id: AppId = "lnd".parse().expect("valid id");
        let base = parse(MINIMAL).expect("minimal parses").container;

        assert_eq!(base.image_ref(&id, "1"), "busybox");
        assert_eq!(
            base.resolve(&app_dir, &id, "1").expect("pull resolves"),
            ResolvedSource::Pull {
                image: "busybox".into()
            }
        );

        let mut built = base.clone();
        built.image = None;
        built.build = Some(BuildSpec {
            context: "src/../src".into(),
            dockerfile: "Dockerfile".into(),
            args: BTreeMap::from([("A".into(), "1".into())]),
        });
        assert_eq!(built.image_ref(&id, "0.1"), "archipelago/lnd:0.1");
        let real = app_dir.join("src").canonicalize().expect("src exists");
        assert_eq!(
            built.resolve(&app_dir, &id, "0.1").expect("build resolves"),
            ResolvedSource::Build {
                context: real,
                dockerfile: "Dockerfile".into(),
                args: BTreeMap::from([("A".into(), "1".into())]),
                tag: "archipelago/lnd:0.1".into(),
            }
        );

        std::os::unix::fs::symlink(dir.path(), app_dir.join("out")).expect("symlink");
        let mut escaping = built.clone();
        escaping.build.as_mut().expect("build is set").context = "out".into();
        let err = escaping
            .resolve(&app_dir, &id, "0.1")
            .expect_err("symlink escapes");
        assert!(matches!(err, ManifestError::ContextEscapes { .. }), "{err}");
        escaping.build.as_mut().expect("build is set").context = "../x".into();
        let err = escaping
            .resolve(&app_dir, &id, "0.1")
            .expect_err(".. escapes");
        assert!(matches!(err, ManifestError::ContextEscapes { .. }), "{err}");

        let mut both = built.clone();
        both.image = Some("busybox".into());
        let err = both
            .resolve(&app_dir, &id, "0.1")
            .expect_err("both is an error");
        assert_eq!(
            err.to_string(),
            "app lnd: container has both image and build; keep one"
        );
    }
}
