//! The `archipelago` binary: command-line entry point.
//!
//! Parses the command line, sets up logging and hands over to the library. Exit codes:
//! 0 success, 1 `validate` or `import` found problems, 2 unusable config, input or
//! command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use archipelago::catalog::Catalog;
use archipelago::config::Config;
use archipelago::ctl::CtlArgs;

/// Supervisor of a self-hosted Bitcoin & Lightning node.
#[derive(Debug, Parser)]
#[command(name = "archipelago", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the supervisor: app actors, reconcile ticks, web server.
    Serve {
        /// The config file (YAML).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Load and validate every app manifest and the rules between apps.
    ///
    /// Prints one line per problem as `PATH: FIELD: reason` and exits 1 if there is any.
    /// The apps folder is DIR, --apps-dir, the config's apps_dir, or `apps`.
    Validate {
        /// Also check the config file, and that its default_apps are in the catalog.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The apps folder (overrides the config's apps_dir).
        #[arg(long, value_name = "DIR", conflicts_with = "dir")]
        apps_dir: Option<PathBuf>,
        /// The apps folder, as a positional argument.
        #[arg(value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Also apply the catalog lint (digests and their sources, probes that reach a
        /// listening port, known volume owners, dependency files that something makes);
        /// see docs/manifest.md, "Strict validation".
        #[arg(long)]
        strict: bool,
    },
    /// A thin client of the supervisor's RPC, for people at a terminal.
    Ctl(CtlArgs),
    /// Take over a running container archipelago did not create as an app's container,
    /// without restarting it (docs/migrate.md). The same as `ctl adopt`.
    Adopt {
        /// The container, by name or id.
        container: String,
        /// The app whose container it becomes (its manifest must be in the catalog).
        #[arg(long = "app", value_name = "ID")]
        app: String,
        /// Base URL of the supervisor's web server.
        #[arg(long, env = "ARCHIPELAGO_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// File whose first line is the password (else the ARCHIPELAGO_PASSWORD variable).
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Backups: run, list and status through the RPC; restore onto a new node.
    #[command(subcommand)]
    Backup(archipelago::backup::cli::BackupCommand),
    /// Turn compose services or running containers into manifest drafts, with a report of
    /// what could not be mapped, their secrets and a plan for their data (docs/migrate.md).
    #[command(subcommand)]
    Import(archipelago::migrate::cli::ImportCommand),
    /// Set the dashboard password: reads it from the first line of stdin and writes its
    /// argon2 hash to the config's auth.password_file. A running serve notices and ends
    /// every session.
    Passwd {
        /// The config file (YAML) naming the password file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

/// Exit code when `validate` found problems.
const EXIT_PROBLEMS: u8 = 1;
/// Exit code for an unusable config.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Serve { config } => serve(&config),
        Command::Validate {
            config,
            apps_dir,
            dir,
            strict,
        } => validate(config.as_deref(), apps_dir.or(dir), strict),
        Command::Ctl(args) => archipelago::ctl::run(args),
        Command::Adopt {
            container,
            app,
            url,
            password_file,
        } => archipelago::ctl::run(CtlArgs {
            url,
            password_file,
            timeout: std::time::Duration::from_secs(10),
            command: archipelago::ctl::CtlCommand::Adopt { container, app },
        }),
        Command::Backup(command) => archipelago::backup::cli::run(command),
        Command::Import(command) => archipelago::migrate::cli::run(command),
        Command::Passwd { config } => passwd(&config),
    }
}

fn passwd(config_path: &Path) -> ExitCode {
    let config = match load_config(config_path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("cannot read the new password from stdin: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("the new password is empty: give it on the first line of stdin");
        return ExitCode::from(EXIT_CONFIG);
    }
    let path = &config.auth.password_file;
    match archipelago::web::auth::write_password_file(path, password) {
        Ok(()) => {
            eprintln!(
                "{}: new password set (argon2); every dashboard session ends",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: auth.password_file: {e}", path.display());
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Loads the config or prints its one-line error.
fn load_config(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|err| {
        eprintln!("{err}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn serve(config_path: &Path) -> ExitCode {
    let config = match load_config(config_path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let system = actix::System::new();
    match system.block_on(archipelago::serve::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{err}");
            // Actors made before the failure (a port in use) have not run yet; dropping
            // the runtime would start them with no reactor left and panic. Nothing of
            // theirs needs undoing, so the runtime is left to the process exit.
            std::mem::forget(system);
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn validate(config_path: Option<&Path>, apps_dir: Option<PathBuf>, strict: bool) -> ExitCode {
    let config = match config_path.map(load_config).transpose() {
        Ok(config) => config,
        Err(code) => return code,
    };
    let apps_dir = apps_dir
        .or_else(|| config.as_ref().map(|c| c.apps_dir.clone()))
        .unwrap_or_else(|| PathBuf::from("apps"));
    let (mut catalog, mut problems) = Catalog::load(&apps_dir);
    if let (Some(config), Some(path)) = (&config, config_path) {
        problems.extend(catalog.check_listed(path, "default_apps", &config.default_apps));
    }
    if strict {
        let lint = archipelago::catalog_lint::lint(&catalog);
        // An app with a lint problem does not count as passed in the summary.
        for problem in &lint {
            catalog.apps.retain(|_, app| app.path != problem.path);
        }
        problems.extend(lint);
        problems.sort_by(|a, b| a.path.cmp(&b.path));
    }
    for problem in &problems {
        println!("{problem}");
    }
    let apps = catalog.apps.len();
    eprintln!(
        "{apps} app{}, {} problem{}",
        plural(apps),
        problems.len(),
        plural(problems.len())
    );
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PROBLEMS)
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
