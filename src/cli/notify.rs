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
