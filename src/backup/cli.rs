//! `archipelago backup …`: `run`, `list` and `status` ask the running supervisor over
//! the RPC (as `ctl` does); `restore` runs on its own, before `serve`, onto an empty
//! data folder.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::config::Config;
use crate::ctl::{CtlArgs, CtlCommand};

/// How to reach the running supervisor.
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// Base URL of the supervisor's web server.
    #[arg(long, env = "ARCHIPELAGO_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// File whose first line is the password (else the ARCHIPELAGO_PASSWORD variable).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Longest wait for an answer.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// `archipelago backup` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum BackupCommand {
    /// Start a backup now (`backup.run`); prints the run.
    Run(Remote),
    /// List the repository's snapshots (`backup.list`).
    List(Remote),
    /// Show the run in flight, the last result and the channel-backup copies.
    Status(Remote),
    /// Put one installed app's volumes and secrets back from a snapshot, on the running
    /// node (`backup.restore`); the app is stopped meanwhile. Lightning apps are refused.
    RestoreApp {
        /// The app.
        id: String,
        /// A snapshot id (default: the newest node snapshot).
        #[arg(long)]
        snapshot: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Restore the newest (or a named) snapshot onto an empty data_dir, before `serve`.
    ///
    /// Every app comes back installed and wanted running with its data and secrets.
    /// Lightning apps come back from their channel backup, never an old channel database.
    Restore {
        /// The new node's config file; its `backup:` section names the target and the
        /// password file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// A snapshot id (default: the newest node snapshot).
        #[arg(long)]
        snapshot: Option<String>,
    },
}

/// Runs one `archipelago backup` command.
pub fn run(command: BackupCommand) -> ExitCode {
    let backup = |action: &str| CtlCommand::Backup {
        action: action.to_string(),
    };
    let (remote, command) = match command {
        BackupCommand::Restore { config, snapshot } => return restore(&config, snapshot),
        BackupCommand::Run(r) => (r, backup("run")),
        BackupCommand::List(r) => (r, backup("list")),
        BackupCommand::Status(r) => (r, backup("status")),
        BackupCommand::RestoreApp {
            id,
            snapshot,
            remote,
        } => (remote, CtlCommand::BackupRestore { id, snapshot }),
    };
    crate::ctl::run(CtlArgs {
        url: remote.url,
        password_file: remote.password_file,
        timeout: remote.timeout,
        command,
    })
}

fn restore(config_path: &std::path::Path, snapshot: Option<String>) -> ExitCode {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(super::restore::restore(&config, snapshot.as_deref())) {
        Ok(report) => {
            for w in &report.warnings {
                eprintln!("WARNING: {w}");
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
