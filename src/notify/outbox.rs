//! The delivery worker: sends queued notifications, retries them, records every attempt.
//!
//! One task. Each pass reads the due outbox rows, sends them (rows of one channel one after
//! another, channels side by side, so a dead SMTP server does not hold up Slack), and records
//! how each attempt ended together with a `notify` timeline entry. A failed attempt is retried
//! after an exponential backoff with jitter (`retry_initial` doubling up to `retry_max`), or
//! after Slack's `Retry-After`, until the row's deadline; a permanent refusal ends it at once.
//!
//! Delivery is at least once. An attempt is marked as started in the store before the channel
//! is called; if the process dies before the end is recorded, the next pick notes on the
//! timeline that the attempt was interrupted and sends again. A channel that had accepted the
//! message then shows it twice; neither Slack nor SMTP offers a way to ask whether it had.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::Notify;
use tracing::{error, info, warn};

use super::{Notification, Notifier, Outgoing, Retry, ThreadRef};
use crate::config::NotifyConfig;
use crate::metrics::Metrics;
use crate::pipeline::error_chain;
use crate::store::{AttemptEnd, OutboxRow, Store, StoreError};

/// Rows read per pass.
const BATCH: i64 = 64;
/// The longest sleep between passes when nothing is due (a safety net; wake-ups do the work).
const IDLE: Duration = Duration::from_secs(5);
/// How much of an error the timeline keeps.
const MAX_ERROR_TEXT: usize = 500;

/// Backoff and timeouts, from `[notify]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeliverySettings {
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub attempt_timeout: Duration,
}

impl From<&NotifyConfig> for DeliverySettings {
    fn from(c: &NotifyConfig) -> Self {
        DeliverySettings {
            retry_initial: c.retry_initial,
            retry_max: c.retry_max,
            attempt_timeout: c.attempt_timeout,
        }
    }
}

/// The wait before attempt `attempt + 1`: `initial · 2^(attempt-1)`, at most `max`, with
/// "equal jitter" (a random point in its upper half) so that many retries do not align.
pub fn backoff(settings: &DeliverySettings, attempt: i64) -> Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let full = settings
        .retry_initial
        .saturating_mul(2u32.saturating_pow(exponent))
        .min(settings.retry_max);
    full.mul_f64(rand::random_range(0.5..=1.0))
}

/// Slack's `Retry-After`, never less, plus up to a tenth more.
fn after_hint(hint: Duration) -> Duration {
    hint + hint.mul_f64(rand::random_range(0.0..=0.1))
}

#[derive(Clone)]
pub struct DeliveryWorker {
    store: Store,
    channels: Arc<Vec<Box<dyn Notifier>>>,
    settings: DeliverySettings,
    wake: Arc<Notify>,
    metrics: Option<Metrics>,
}

impl DeliveryWorker {
    /// `wake` is notified by the pipeline when it queued messages.
    pub fn new(
        store: Store,
        channels: Arc<Vec<Box<dyn Notifier>>>,
        settings: DeliverySettings,
        wake: Arc<Notify>,
    ) -> DeliveryWorker {
        DeliveryWorker {
            store,
            channels,
            settings,
            wake,
            metrics: None,
        }
    }

    /// Counts every attempt in `rollbackd_notification_attempts_total{channel,result}`.
    pub fn with_metrics(mut self, metrics: Metrics) -> DeliveryWorker {
        self.metrics = Some(metrics);
        self
    }

    /// Runs until dropped: a pass, then sleep until the next row falls due or a wake-up.
    pub async fn run(self) {
        loop {
            let sent = match self.deliver_due().await {
                Ok(n) => n,
                Err(e) => {
                    error!(error = %error_chain(&e), "notification outbox failed; will retry");
                    0
                }
            };
            self.publish_backlog().await;
            if sent > 0 {
                continue; // follow-ups of what was just delivered may be due now
            }
            let wait = match self.store.next_message_due().await {
                Ok(Some(next)) => Timestamp::now()
                    .duration_until(next)
                    .try_into()
                    .unwrap_or(Duration::ZERO)
                    .clamp(Duration::from_millis(10), IDLE),
                Ok(None) | Err(_) => IDLE,
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// `rollbackd_outbox_pending` and `…_oldest_pending_timestamp_seconds` for every channel,
    /// zero for a channel with nothing waiting. Unchanged when the store cannot be read.
    async fn publish_backlog(&self) {
        let Some(metrics) = &self.metrics else { return };
        let Ok(backlog) = self.store.outbox_backlog().await else {
            return;
        };
        for channel in self.channels.iter().map(|c| c.name()) {
            let found = backlog.iter().find(|b| b.channel == channel);
            metrics.outbox_backlog(
                channel,
                found.map_or(0, |b| b.pending),
                found.map(|b| b.oldest),
            );
        }
    }

    /// One pass over the due rows; returns how many attempts were made.
    pub async fn deliver_due(&self) -> Result<usize, StoreError> {
        let due = self.store.due_messages(Timestamp::now(), BATCH).await?;
        let mut by_channel: BTreeMap<&str, Vec<&OutboxRow>> = BTreeMap::new();
        for row in &due {
            by_channel
                .entry(row.channel.as_str())
                .or_default()
                .push(row);
        }
        let passes = by_channel.into_values().map(|rows| async move {
            for row in rows {
                self.deliver(row).await?;
            }
            Ok::<_, StoreError>(())
        });
        for result in futures::future::join_all(passes).await {
            result?;
        }
        Ok(due.len())
    }

    async fn deliver(&self, row: &OutboxRow) -> Result<(), StoreError> {
        let target = row.target();
        let Some(channel) = self.channels.iter().find(|c| c.name() == row.channel) else {
            let error = format!("channel {} is no longer configured", row.channel);
            warn!(outbox = row.id, incident = row.incident_id, "{error}");
            let end = AttemptEnd::Failed { error };
            let message = format!("{target}: not delivered: {} is not configured", row.channel);
            return self
                .store
                .end_attempt(row, row.attempts, &end, &message, Timestamp::now())
                .await;
        };
        if row.sending_since.is_some() {
            let message = format!(
                "{target}: attempt {} was interrupted by a restart; the message may have been \
                 delivered, sending it again",
                row.attempts
            );
            warn!(outbox = row.id, incident = row.incident_id, "{message}");
            self.store
                .note_delivery(row, &message, Timestamp::now())
                .await?;
        }
        let notification: Notification = match serde_json::from_value(row.payload.clone()) {
            Ok(n) => n,
            Err(e) => {
                let end = AttemptEnd::Failed {
                    error: format!("unreadable payload: {e}"),
                };
                let message = format!("{target}: not delivered: its stored payload is unreadable");
                return self
                    .store
                    .end_attempt(row, row.attempts, &end, &message, Timestamp::now())
                    .await;
            }
        };
        let thread = self
            .store
            .thread_of(row)
            .await?
            .map(|(channel, id)| ThreadRef { channel, id });
        let attempt = self.store.begin_attempt(row.id, Timestamp::now()).await?;
        let key = format!(
            "{}.{}.{}",
            row.incident_id,
            row.id,
            row.created_at.as_millisecond()
        );
        let out = Outgoing {
            notification: &notification,
            destination: &row.destination,
            thread: thread.as_ref(),
            key: &key,
        };
        let timeout = self.settings.attempt_timeout;
        let result = match tokio::time::timeout(timeout, channel.send(out)).await {
            Ok(result) => result,
            Err(_) => Err(super::NotifyError::Timeout(timeout)),
        };
        let now = Timestamp::now();
        let (end, message) = match result {
            Ok(sent) => {
                let how = if thread.is_some() {
                    "delivered as a follow-up"
                } else {
                    "delivered"
                };
                info!(
                    outbox = row.id,
                    incident = row.incident_id,
                    attempt,
                    "{target}: {how}"
                );
                let (thread_channel, thread_ts) = match sent.thread {
                    Some(t) => (t.channel, Some(t.id)),
                    None => (None, None),
                };
                (
                    AttemptEnd::Delivered {
                        thread_channel,
                        thread_ts,
                    },
                    format!("{target}: {how} (attempt {attempt})"),
                )
            }
            Err(e) => {
                let error = super::message::truncate(&error_chain(&e), MAX_ERROR_TEXT);
                let delay = match e.retry() {
                    Retry::Never => None,
                    Retry::After(Some(hint)) => Some(after_hint(hint)),
                    Retry::After(None) => Some(backoff(&self.settings, attempt)),
                };
                let next =
                    delay.map(|d| now + SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX));
                match next {
                    Some(next) if next <= row.deadline => {
                        let wait = humantime::format_duration(Duration::from_millis(
                            delay.map_or(0, |d| d.as_millis().try_into().unwrap_or(u64::MAX)),
                        ));
                        warn!(outbox = row.id, incident = row.incident_id, attempt, %error,
                            "{target}: attempt failed; next in {wait}");
                        (
                            AttemptEnd::Retry {
                                error: error.clone(),
                                next_attempt_at: next,
                            },
                            format!("{target}: attempt {attempt} failed, next in {wait}: {error}"),
                        )
                    }
                    Some(_) => {
                        warn!(outbox = row.id, incident = row.incident_id, attempt, %error,
                            "{target}: giving up, the retry deadline has passed");
                        (
                            AttemptEnd::Failed {
                                error: error.clone(),
                            },
                            format!(
                                "{target}: not delivered after {attempt} attempt(s), the retry \
                                 deadline has passed: {error}"
                            ),
                        )
                    }
                    None => {
                        warn!(outbox = row.id, incident = row.incident_id, attempt, %error,
                            "{target}: refused; not retrying");
                        (
                            AttemptEnd::Failed {
                                error: error.clone(),
                            },
                            format!("{target}: not delivered, refused (no retry): {error}"),
                        )
                    }
                }
            }
        };
        if let Some(metrics) = &self.metrics {
            let result = match &end {
                AttemptEnd::Delivered { .. } => "delivered",
                AttemptEnd::Retry { .. } => "retry",
                AttemptEnd::Failed { .. } => "failed",
            };
            metrics.notification_attempt(&row.channel, result);
        }
        self.store
            .end_attempt(row, attempt, &end, &message, now)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let s = DeliverySettings {
            retry_initial: Duration::from_secs(2),
            retry_max: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(10),
        };
        for (attempt, full) in [(1, 2), (2, 4), (3, 8), (6, 60), (40, 60), (i64::MAX, 60)] {
            for _ in 0..50 {
                let d = backoff(&s, attempt);
                let full = Duration::from_secs(full);
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
            }
        }
        for _ in 0..50 {
            let d = after_hint(Duration::from_secs(10));
            assert!(d >= Duration::from_secs(10) && d <= Duration::from_secs(11));
        }
    }
}
