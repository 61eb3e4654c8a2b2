//! `archipelago import compose|container`: drafts written, secrets stored, the data plan
//! shown (and its renames done with `--move`), and the report on stdout. Exit 0 when
//! nothing needs the owner's attention, 1 with findings (the drafts are written all the
//! same), 2 when the input cannot be used.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::draft::{assemble, Drafts, Finding, Service};
use super::plan::{self, Step};
use crate::catalog::{Catalog, CatalogApp, MANIFEST_FILE};
use crate::config::Config;
use crate::engine::{ContainerRuntime, DockerRuntime};
use crate::manifest::{AppId, AppManifest};
use crate::secrets::{self, Imported};
use crate::store::Store;

/// The config file `import container` reads the engine from when none is given.
pub const DEFAULT_CONFIG: &str = "/etc/archipelago/config.yml";

/// Where drafts, secrets and data go.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Folder of the drafts, one `<id>/manifest.yml` each (default: the config's
    /// apps_dir with --config, else ./imported).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The node's config: secrets are stored in its data_dir, the data plan targets it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Carry out the plan's renames (same file system), leaving a link at each old path.
    /// Copies are never done: they need the container stopped.
    #[arg(long = "move", requires = "config")]
    pub move_data: bool,
}

/// `archipelago import` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum ImportCommand {
    /// One manifest draft per service of a compose file.
    Compose {
        /// The compose file (its `.env` beside it is read).
        file: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// One manifest draft per container, read from the engine.
    Container {
        /// Container names or ids.
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
}

const EXIT_FINDINGS: u8 = 1;
const EXIT_UNUSABLE: u8 = 2;

fn unusable(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(EXIT_UNUSABLE)
}

/// Runs one `archipelago import` command.
pub fn run(command: ImportCommand) -> ExitCode {
    let target = match &command {
        ImportCommand::Compose { target, .. } | ImportCommand::Container { target, .. } => {
            target.clone()
        }
    };
    let config = match target.config.as_deref().map(Config::load).transpose() {
        Ok(c) => c,
        Err(e) => return unusable(e),
    };
    let (services, findings) = match command {
        ImportCommand::Compose { file, .. } => {
            match super::compose::read(&file, std::env::vars().collect()) {
                Ok(c) => (c.services, c.findings),
                Err(e) => return unusable(e),
            }
        }
        ImportCommand::Container { names, .. } => {
            let host = match &config {
                Some(c) => c.engine.host.clone(),
                None if Path::new(DEFAULT_CONFIG).exists() => {
                    match Config::load(Path::new(DEFAULT_CONFIG)) {
                        Ok(c) => c.engine.host,
                        Err(e) => return unusable(e),
                    }
                }
                None => crate::config::EngineConfig::default().host,
            };
            match read_containers(&host, &names) {
                Ok(services) => (services, Vec::new()),
                Err(e) => return unusable(e),
            }
        }
    };
    let out = target
        .out
        .clone()
        .or_else(|| config.as_ref().map(|c| c.apps_dir.clone()))
        .unwrap_or_else(|| PathBuf::from("imported"));
    let out = std::path::absolute(&out).unwrap_or(out);
    let report = import(services, findings, &out, config.as_ref(), target.move_data);
    for line in &report.lines {
        println!("{line}");
    }
    if report.findings == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FINDINGS)
    }
}

/// Reads each container from the engine at `host`.
fn read_containers(host: &str, names: &[String]) -> Result<Vec<Service>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async {
        let engine = DockerRuntime::connect(host)
            .await
            .map_err(|e| e.to_string())?;
        let mut services = Vec::new();
        for name in names {
            let c = engine
                .inspect_foreign(name)
                .await
                .map_err(|e| e.to_string())?;
            services.push(super::container::service(&c));
        }
        Ok(services)
    })
}

/// The report of one import.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<String>,
    pub findings: usize,
}

/// Drafts, checks, writes and plans; returns the report's lines.
fn import(
    services: Vec<Service>,
    mut findings: Vec<Finding>,
    out: &Path,
    config: Option<&Config>,
    move_data: bool,
) -> Report {
    let drafts = assemble(services, out);
    findings.extend(drafts.findings.iter().cloned());
    check(&drafts, out, &mut findings);
    let mut plan_lines = Vec::new();
    let mut secret_lines = Vec::new();
    let mut draft_lines = Vec::new();
    let store = match config.map(|c| Store::open(&c.data_dir)).transpose() {
        Ok(s) => s,
        Err(e) => {
            findings.push(Finding::new("config", "data_dir", e.to_string()));
            None
        }
    };
    match (&store, config) {
        (Some(_), Some(config)) => {
            let mut entries = plan::plan(&drafts.folders, &config.data_dir);
            for e in &mut entries {
                if move_data {
                    plan::carry_out(e);
                }
                if let Step::Failed(reason) = &e.step {
                    findings.push(Finding::new(
                        &e.folder.app,
                        format!("volumes.{}", e.folder.volume),
                        format!("moving {}: {reason}", e.folder.source.display()),
                    ));
                }
                plan_lines.push(e.to_string());
            }
        }
        _ => {
            for f in &drafts.folders {
                let also = if f.shared_with.is_empty() {
                    String::new()
                } else {
                    format!(" (also used by {})", f.shared_with.join(", "))
                };
                plan_lines.push(format!(
                    "plan: {}: {}: {} -> <data_dir>/apps/{}/{} (give --config to plan it){also}",
                    f.app,
                    f.volume,
                    f.source.display(),
                    f.app,
                    f.volume
                ));
            }
        }
    }
    for (app, volume, name) in &drafts.engine_volumes {
        let target = match config {
            Some(c) => c.data_dir.join("apps").join(app).join(volume),
            None => PathBuf::from(format!("<data_dir>/apps/{app}/{volume}")),
        };
        plan_lines.push(format!(
            "plan: {app}: {volume}: its data lives in the engine's volume {name}; after stopping the container run: mkdir -p {t} && cp -a --reflink=auto \"$(docker volume inspect -f '{{{{.Mountpoint}}}}' {name})/.\" {t}",
            t = target.display()
        ));
    }
    for s in &drafts.secrets {
        let line = match &store {
            Some(store) => {
                let path = store.secrets_dir(&s.app).join(&s.name);
                match secrets::write_imported(store, &s.app, &s.name, &s.value) {
                    Ok(Imported::Written) => format!("stored in {}", path.display()),
                    Ok(Imported::AlreadySame) => format!("already stored in {}", path.display()),
                    Ok(Imported::Conflict) => {
                        findings.push(Finding::new(
                            &s.app,
                            format!("secrets.{}", s.name),
                            format!("{} holds another value; left as it is", path.display()),
                        ));
                        "not stored: another value is there".to_string()
                    }
                    Err(e) => {
                        findings.push(Finding::new(
                            &s.app,
                            format!("secrets.{}", s.name),
                            e.to_string(),
                        ));
                        "not stored".to_string()
                    }
                }
            }
            None => "not stored (give --config to store it)".to_string(),
        };
        secret_lines.push(format!("secret: {}/{}: {line}", s.app, s.name));
    }
    for (id, text) in &drafts.manifests {
        let path = out.join(id).join(MANIFEST_FILE);
        if path.exists() {
            findings.push(Finding::new(
                id,
                MANIFEST_FILE,
                format!("{} exists; left as it is", path.display()),
            ));
            continue;
        }
        let written =
            std::fs::create_dir_all(out.join(id)).and_then(|()| std::fs::write(&path, text));
        match written {
            Ok(()) => draft_lines.push(format!("draft: {id}: {}", path.display())),
            Err(e) => findings.push(Finding::new(
                id,
                MANIFEST_FILE,
                format!("cannot write {}: {e}", path.display()),
            )),
        }
    }
    let mut lines: Vec<String> = findings.iter().map(ToString::to_string).collect();
    let count = lines.len();
    lines.extend(plan_lines);
    lines.extend(secret_lines);
    lines.extend(draft_lines);
    Report {
        lines,
        findings: count,
    }
}

/// Every draft must load and the drafts together must pass the catalog's rules: a
/// problem here is a bug of the import, reported as a finding so it is never silent.
fn check(drafts: &Drafts, out: &Path, findings: &mut Vec<Finding>) {
    let mut apps = Vec::new();
    let mut present = BTreeSet::new();
    for (id, text) in &drafts.manifests {
        let dir = out.join(id);
        let path = dir.join(MANIFEST_FILE);
        match AppManifest::from_yaml(&path, text) {
            Ok(manifest) => {
                if let Ok(id) = id.parse::<AppId>() {
                    present.insert(id);
                }
                apps.push(CatalogApp {
                    manifest,
                    dir,
                    path,
                });
            }
            Err(problems) => findings.extend(
                problems
                    .into_iter()
                    .map(|p| Finding::new(id, format!("draft.{}", p.field), p.reason)),
            ),
        }
    }
    let (_, problems) = Catalog::from_apps(apps, &present);
    for p in problems {
        let id = p
            .path
            .parent()
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        findings.push(Finding::new(&id, format!("draft.{}", p.field), p.reason));
    }
}
