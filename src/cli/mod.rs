//! The command line: `serve`, `check`, `incidents`, `notify`, `sandbox` and `demo`.

mod check;
mod incidents;
mod notify;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub use check::check;
pub use incidents::{incidents, render_text};
pub use notify::{describe_notify, notify_test};

#[derive(Debug, Parser)]
#[command(
    name = "rollbackd",
    version,
    about = "Alert-driven auto-rollback for Kubernetes"
)]
pub struct Cli {
    /// Log format: human-readable text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate the config and rule files and print what would be watched.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Review recorded incidents.
    Incidents {
        /// The config file naming the store to read.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: IncidentsCommand,
    },
    /// Notification channels.
    Notify {
        #[command(subcommand)]
        command: NotifyCommand,
    },
    /// Run the simulated Kubernetes API server alone.
    Sandbox {
        /// Address to listen on, e.g. 127.0.0.1:6443 (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Where to write a kubeconfig pointing at the sandbox.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// How long the simulated Deployment controller takes to converge a rollout.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        rollout_delay: std::time::Duration,
    },
    /// Show the whole story on one machine: sandbox, bad rollout, alert, undo, incident.
    Demo,
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send a test message through every configured channel and destination; exit 1 if any
    /// failed.
    Test {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum IncidentsCommand {
    /// List incidents, newest first.
    List {
        /// Only incidents updated within this long, e.g. 2h.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        namespace: Option<String>,
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Show one incident with its timeline.
    Show {
        id: i64,
        #[arg(long, value_enum, default_value_t = ShowFormat::Text)]
        format: ShowFormat,
    },
    /// Acknowledge a not-recovered incident: release the hold on its workload, so that
    /// rollbackd may act on it automatically again.
    Ack {
        id: i64,
        /// Who acknowledges (default: $USER).
        #[arg(long)]
        by: Option<String>,
        /// Why, for the timeline.
        #[arg(long)]
        note: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    Text,
    Json,
    Md,
}
