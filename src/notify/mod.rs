//! Notifications to on-call: what a message says, where it goes, and how it gets there.
//!
//! Data flow: the pipeline builds a [`Notification`] (everything a message shows) for every
//! notable decision and action result, asks each channel ([`Notifier`]) for its destinations,
//! and queues one outbox row per destination in the same transaction that records the decision
//! or the result (`store::outbox`). The [`outbox::DeliveryWorker`] sends due rows and retries
//! with backoff until their deadline; the rollback path never waits on a channel.
//!
//! Channels: [`slack::SlackNotifier`] (incoming webhook, or a bot token with routing and thread
//! replies), [`email::EmailNotifier`] (SMTP through lettre), and [`LogNotifier`] (a log line;
//! for tests). Content is in [`message`] and [`blocks`]; routing in [`route`].
//!
//! Delivery is at least once: a crash after a channel accepted a message but before the store
//! recorded it sends that message again after the restart.

pub mod blocks;
pub mod email;
pub mod message;
pub mod outbox;
pub mod route;
pub mod slack;

use std::time::Duration;

use futures::future::BoxFuture;
use tracing::info;

use crate::config::Config;
use crate::core::engine::Outcome;

pub use message::{ActionInfo, AlertInfo, MessageKind, Notification, RevisionInfo, incident_link};

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
            | Outcome::StaleData
            | Outcome::Unsettled
            | Outcome::WouldCascade
            | Outcome::OutOfScope
            | Outcome::NotifyOnly
            | Outcome::Frozen
            | Outcome::InFlight
            | Outcome::Cooldown
            | Outcome::BreakerOpen
            | Outcome::PausedWorkload
            | Outcome::NotRecovered
            | Outcome::Held
            | Outcome::GitopsNotify
            | Outcome::GitopsSuspended
            | Outcome::GitopsSynced
    )
}

/// Where an earlier message about the same incident landed; later messages follow it (a Slack
/// thread reply, an email `In-Reply-To`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadRef {
    /// Slack: the channel ID the first message was posted to.
    pub channel: Option<String>,
    /// Slack: the message's `ts`; email: its `Message-ID`.
    pub id: String,
}

/// One message to send.
#[derive(Clone, Copy, Debug)]
pub struct Outgoing<'a> {
    pub notification: &'a Notification,
    /// One of the channel's own destinations, as [`Notifier::destinations`] gave it.
    pub destination: &'a str,
    /// The first message about this incident to this destination, when there was one.
    pub thread: Option<&'a ThreadRef>,
    /// A stable identity for this message, the same on every attempt (email `Message-ID`).
    pub key: &'a str,
}

/// What a channel reports after accepting a message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// Where the message landed, for later messages to follow.
    pub thread: Option<ThreadRef>,
}

/// Whether and when a failed attempt is worth repeating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// The channel refused the message for a reason a retry cannot fix.
    Never,
    /// Try again: after the channel's own hint (`Retry-After`) when given, else after backoff.
    After(Option<Duration>),
}

/// Why a message was not delivered. The `Display` of each variant names the boundary; the
/// source says what went wrong. No variant carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("Slack")]
    Slack(#[from] slack::SlackError),
    #[error("email")]
    Email(#[from] email::EmailError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("destination {0:?} is not one of this channel's")]
    UnknownDestination(String),
}

impl NotifyError {
    pub fn retry(&self) -> Retry {
        match self {
            NotifyError::Slack(e) => e.retry(),
            NotifyError::Email(e) => e.retry(),
            NotifyError::Timeout(_) => Retry::After(None),
            NotifyError::UnknownDestination(_) => Retry::Never,
        }
    }
}

/// A channel to on-call.
pub trait Notifier: Send + Sync {
    /// The channel's name as stored in the outbox (`slack`, `email`).
    fn name(&self) -> &str;
    /// Where a notification goes within this channel (routing); pure, no I/O.
    fn destinations(&self, n: &Notification) -> Vec<String>;
    /// Every destination this channel can send to (`rollbackd notify test`).
    fn all_destinations(&self) -> Vec<String>;
    /// One attempt to send one message.
    fn send<'a>(&'a self, out: Outgoing<'a>) -> BoxFuture<'a, Result<Sent, NotifyError>>;
}

/// The configured channels, in a stable order (Slack, then email).
pub fn channels(config: &Config) -> Result<Vec<Box<dyn Notifier>>, NotifyError> {
    let timeout = config.notify.attempt_timeout;
    let mut out: Vec<Box<dyn Notifier>> = Vec::new();
    if let Some(slack) = &config.slack {
        out.push(Box::new(slack::SlackNotifier::new(slack, timeout)?));
    }
    if let Some(email) = &config.email {
        out.push(Box::new(email::EmailNotifier::new(email, timeout)?));
    }
    Ok(out)
}

/// Writes each notification as a structured log line; a channel that cannot fail, for tests of
/// the pipeline that need no network.
pub struct LogNotifier;

impl Notifier for LogNotifier {
    fn name(&self) -> &str {
        "log"
    }

    fn destinations(&self, _: &Notification) -> Vec<String> {
        vec!["log".into()]
    }

    fn all_destinations(&self) -> Vec<String> {
        vec!["log".into()]
    }

    fn send<'a>(&'a self, out: Outgoing<'a>) -> BoxFuture<'a, Result<Sent, NotifyError>> {
        Box::pin(async move {
            let n = out.notification;
            info!(
                incident = n.incident_id,
                outcome = n.outcome.code(),
                link = n.link.as_deref().unwrap_or("-"),
                "notify: {} — {}",
                n.subject(),
                n.why()
            );
            Ok(Sent::default())
        })
    }
}

/// Installs rustls's ring provider as the process default when none is installed yet (reqwest
/// is built without one).
pub(crate) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: some provider is then installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
