//! `rollbackd notify test`: one test message through every configured channel and destination,
//! sent directly (no store, no retry), with a line per destination saying whether it worked.

use std::fmt::Write;
use std::path::Path;

use jiff::Timestamp;

use crate::config::Config;
use crate::notify::{Notification, Outgoing, channels};
use crate::pipeline::error_chain;

/// The report to print, and whether every destination worked. `Err` is a config problem.
pub async fn notify_test(path: &Path) -> Result<(String, bool), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let channels = channels(&config).map_err(|e| error_chain(&e))?;
    if channels.is_empty() {
        return Err(format!(
            "{}: no notification channel is configured ([notify.slack], [notify.email])\n",
            path.display()
        ));
    }
    let n = Notification::test_sample(config.server.public_url.as_deref(), Timestamp::now());
    let timeout = config.notify.attempt_timeout;
    let mut report = String::new();
    let mut all_ok = true;
    for channel in &channels {
        for destination in channel.all_destinations() {
            let key = format!("test.{}", Timestamp::now().as_millisecond());
            let out = Outgoing {
                notification: &n,
                destination: &destination,
                thread: None,
                key: &key,
            };
            let result = match tokio::time::timeout(timeout, channel.send(out)).await {
                Ok(result) => result,
                Err(_) => Err(crate::notify::NotifyError::Timeout(timeout)),
            };
            match result {
                Ok(_) => {
                    let _ = writeln!(report, "{} {destination}: ok", channel.name());
                }
                Err(e) => {
                    all_ok = false;
                    let _ = writeln!(
                        report,
                        "{} {destination}: FAILED: {}",
                        channel.name(),
                        error_chain(&e)
                    );
                }
            }
        }
    }
    Ok((report, all_ok))
}

/// The notification lines of `rollbackd check`: channels, destinations and where each secret
/// comes from, never a secret itself.
pub fn describe_notify(c: &Config) -> String {
    use crate::config::SlackMode;
    let mut out = String::new();
    let n = &c.notify;
    let _ = writeln!(
        out,
        "notify:      retried for {} ({} doubling up to {}; {} per attempt)",
        humantime::format_duration(n.retry_deadline),
        humantime::format_duration(n.retry_initial),
        humantime::format_duration(n.retry_max),
        humantime::format_duration(n.attempt_timeout),
    );
    match &c.slack {
        None => {
            let _ = writeln!(out, "slack:       not configured");
        }
        Some(s) => {
            let mode = match &s.mode {
                SlackMode::Webhook { .. } => "webhook mode".to_string(),
                SlackMode::Bot { channel, .. } => {
                    format!("bot mode via {}, default channel {channel}", s.api_url)
                }
            };
            let _ = writeln!(
                out,
                "slack:       {mode}; {}; {} route(s)",
                s.secret_source,
                s.routes.len()
            );
        }
    }
    match &c.email {
        None => {
            let _ = writeln!(out, "email:       not configured");
        }
        Some(e) => {
            let password = e
                .password_source
                .as_deref()
                .map_or("no password".to_string(), |s| format!("password {s}"));
            let _ = writeln!(
                out,
                "email:       {} ({password}); from {}; to {}; {} route(s)",
                e.server(),
                e.from,
                e.to.join(", "),
                e.routes.len()
            );
        }
    }
    out
}
