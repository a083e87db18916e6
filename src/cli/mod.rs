//! The command line: `serve`, `check`, `incidents`, `notify`, `sandbox` and `demo`.

mod check;
#[cfg(feature = "sandbox")]
pub mod demo;
mod incidents;
mod notify;
mod warnings;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub use check::check;
pub use incidents::{incidents, render_text};
pub use notify::{describe_notify, notify_test};
pub use warnings::serve_warnings;

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
        /// The TOML config file (keys may be overridden by ROLLBACKD__SECTION__KEY).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate the config and rule files and print what would be watched.
    Check {
        /// The TOML config file to validate, with the rule files it names.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Validate off the cluster, e.g. the shipped config in a checkout: the files only the
        /// pod has (token and password files, the kubeconfig) are listed, not read.
        #[arg(long)]
        offline: bool,
    },
    /// Review recorded incidents.
    Incidents {
        /// The config file naming the store to read.
        #[arg(long, global = true, value_name = "FILE")]
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
    #[cfg(feature = "sandbox")]
    Sandbox {
        /// Address to listen on, e.g. 127.0.0.1:6443 (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Where to write a kubeconfig pointing at the sandbox.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// How long a simulated pod takes to become ready (a rolling update takes a few of these).
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        rollout_delay: std::time::Duration,
        /// Keep the certificates, token and objects in this directory (saved after every
        /// write) and start from them: restarted with the same --listen address, it is the
        /// same cluster and the kubeconfig written before still works.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Show the whole story on one machine: sandbox, bad rollout, alert, undo, incident.
    #[cfg(feature = "sandbox")]
    Demo {
        /// Keep the sandbox, the store and the pages up until Ctrl-C, to open the incident.
        #[arg(long)]
        keep: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send a test message through every configured channel and destination; exit 1 if any
    /// failed.
    Test {
        /// The config file whose `[notify]` channels are tried.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum IncidentsCommand {
    /// List incidents, newest first.
    List {
        /// Only incidents updated within this long, e.g. 2h.
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// Only incidents in this namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// A table for people, or JSON for scripts.
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Write every timeline entry recorded since a time as JSON lines (one object per line,
    /// oldest first) for a log pipeline; actions carry who acted, the mode and the config.
    Export {
        /// An RFC 3339 time (2026-12-01T00:00:00Z) or a duration back from now (24h).
        #[arg(long, value_name = "TIME|DURATION")]
        since: String,
    },
    /// Show one incident with its timeline.
    Show {
        /// The incident's id, as `incidents list` shows it.
        id: i64,
        /// Text, JSON, or a Markdown post-incident review draft.
        #[arg(long, value_enum, default_value_t = ShowFormat::Text)]
        format: ShowFormat,
    },
    /// Acknowledge a not-recovered incident: release the hold on its workload, so that
    /// rollbackd may act on it automatically again.
    Ack {
        /// The incident's id, as `incidents list` shows it.
        id: i64,
        /// Who acknowledges (default: $USER).
        #[arg(long)]
        by: Option<String>,
        /// Why, for the timeline.
        #[arg(long)]
        note: Option<String>,
    },
    /// Copy the incident store to a new file, consistently, while the daemon runs; the copy
    /// is checked before the command succeeds.
    Backup {
        /// Where to write the copy; it must not exist.
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// `--help` explains every flag and argument of every subcommand.
    #[test]
    fn every_argument_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "rollbackd", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }
}
