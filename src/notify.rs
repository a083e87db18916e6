//! Notifications to on-call. Slack and email implement [`Notifier`] later; for now
//! [`LogNotifier`] writes one log line per notable outcome.
//!
//! A [`Notification`] carries everything a message needs (what fired, what was done and why,
//! from which revision to which, where to read more), so that channels only format it.

use futures::future::BoxFuture;
use serde::Serialize;
use tracing::info;

use crate::core::engine::Outcome;

/// One message about an incident.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Notification {
    pub incident_id: i64,
    pub outcome: Outcome,
    pub reason: String,
    pub alerts: Vec<String>,
    pub workload: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// Link to the incident page, when `server.public_url` is set.
    pub link: Option<String>,
}

/// Whether an outcome is worth waking someone for.
pub fn is_notable(outcome: Outcome) -> bool {
    matches!(
        outcome,
        Outcome::RolledBack
            | Outcome::Aborted
            | Outcome::WouldRollBack
            | Outcome::Failed
            | Outcome::NoHistory
            | Outcome::AlreadyAtTarget
            | Outcome::Paused
            | Outcome::Superseded
    )
}

#[derive(Debug, thiserror::Error)]
#[error("{channel}: {message}")]
pub struct NotifyError {
    pub channel: String,
    pub message: String,
}

/// A channel to on-call.
pub trait Notifier: Send + Sync {
    fn name(&self) -> &str;
    fn notify<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), NotifyError>>;
}

/// Writes each notification as a structured log line.
pub struct LogNotifier;

impl Notifier for LogNotifier {
    fn name(&self) -> &str {
        "log"
    }

    fn notify<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            info!(
                incident = n.incident_id,
                outcome = n.outcome.code(),
                workload = n.workload.as_deref().unwrap_or("-"),
                from = n.from.as_deref().unwrap_or("-"),
                to = n.to.as_deref().unwrap_or("-"),
                alerts = %n.alerts.join(", "),
                link = n.link.as_deref().unwrap_or("-"),
                "notify: {}",
                n.reason
            );
            Ok(())
        })
    }
}
