//! The `rollbackd` binary: parse the command line, set up logging, run one command.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use rollbackd::cli::{Cli, Command, LogFormat, NotifyCommand};
use rollbackd::config::Config;

/// `default` is the filter when `ROLLBACKD_LOG` is unset.
fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROLLBACKD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // `message` and the event's fields at the top level, as log pipelines expect.
        LogFormat::Json => builder.json().flatten_event(true).init(),
        // Colour only for a terminal: a file or a pipe gets no escape codes.
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or_default(),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or_default();
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config: path } => {
            let config = Config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
            for warning in rollbackd::cli::serve_warnings(&path, &config) {
                tracing::warn!("{warning}");
            }
            rollbackd::daemon::serve(config, shutdown_signal()).await?;
        }
        Command::Check { config, offline } => match rollbackd::cli::check(&config, offline) {
            Ok(report) => print!("{report}"),
            Err(problems) => {
                eprint!("{problems}");
                return Ok(ExitCode::FAILURE);
            }
        },
        Command::Incidents { config, command } => {
            print!(
                "{}",
                rollbackd::cli::incidents(config.as_deref(), &command).await?
            );
        }
        Command::Notify {
            command: NotifyCommand::Test { config },
        } => match rollbackd::cli::notify_test(&config).await {
            Ok((report, all_ok)) => {
                print!("{report}");
                if !all_ok {
                    return Ok(ExitCode::FAILURE);
                }
            }
            Err(problems) => {
                eprint!("{problems}");
                return Ok(ExitCode::FAILURE);
            }
        },
        #[cfg(feature = "sandbox")]
        Command::Sandbox {
            listen,
            kubeconfig,
            rollout_delay,
            state_dir,
        } => {
            let options = kube_sandbox::SandboxOptions {
                listen,
                rollout_delay,
                state_dir,
                ..Default::default()
            };
            kube_sandbox::serve_forever(options, &kubeconfig).await?;
        }
        #[cfg(feature = "sandbox")]
        Command::Demo { keep } => rollbackd::cli::demo::run(keep).await?,
    }
    Ok(ExitCode::SUCCESS)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo tells its own story on stdout; the daemon's info lines would drown it.
    let default = match cli.command {
        #[cfg(feature = "sandbox")]
        Command::Demo { .. } => "warn",
        _ => "info,kube=warn,sqlx=warn",
    };
    let format = cli.log_format;
    init_logging(format, default);
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            match format {
                // One JSON line like every other, whatever ROLLBACKD_LOG filters.
                LogFormat::Json => eprintln!(
                    "{}",
                    serde_json::json!({
                        "timestamp": jiff::Timestamp::now().to_string(),
                        "level": "ERROR",
                        "message": format!("{e:#}"),
                        "target": "rollbackd",
                    })
                ),
                LogFormat::Text => eprintln!("rollbackd: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}
