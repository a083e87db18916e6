//! The pipeline: recorded alerts → engine → executor → store (→ notification outbox).
//!
//! Intake ([`Pipeline::submit`]) durably records alerts and wakes the worker; nothing is
//! decided on the request path. One worker decides alerts strictly one after another, so two
//! alerts about the same rollout can never race into two rollbacks. It waits until every watch
//! has listed once — deciding from a half-filled index would be acting on missing data — and
//! resumes from the store after a restart, since undecided alerts stay marked as such.
//!
//! Notifications are never sent from here: a notable decision or result queues its messages in
//! the transaction that records it, and the delivery worker (`notify::outbox`) sends them. A
//! slow or dead channel therefore changes nothing on the rollback path.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

use crate::core::alert::Alert;
use crate::core::engine::{Decision, Policy, decide};
use crate::k8s::executor::Executor;
use crate::k8s::watch::{Readiness, SharedIndex};
use crate::metrics::Metrics;
use crate::notify::{Notification, Notifier, is_notable};
use crate::poller::PollerEvent;
use crate::store::NewMessage;
use crate::store::{ActionResult, Received, Store, StoreError};

/// How often the worker looks for undecided alerts even without being woken.
const SWEEP: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Pipeline {
    pub store: Store,
    pub index: SharedIndex,
    pub readiness: Readiness,
    pub policy: Arc<Policy>,
    pub executor: Executor,
    pub notifiers: Arc<Vec<Box<dyn Notifier>>>,
    pub metrics: Metrics,
    pub public_url: Option<String>,
    /// How long a queued notification is retried (`notify.retry_deadline`).
    pub retry_deadline: Duration,
    wake: Arc<Notify>,
    outbox_wake: Arc<Notify>,
}

impl Pipeline {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        index: SharedIndex,
        readiness: Readiness,
        policy: Policy,
        executor: Executor,
        notifiers: Vec<Box<dyn Notifier>>,
        metrics: Metrics,
        public_url: Option<String>,
    ) -> Pipeline {
        Pipeline {
            store,
            index,
            readiness,
            policy: Arc::new(policy),
            executor,
            notifiers: Arc::new(notifiers),
            metrics,
            public_url,
            retry_deadline: crate::config::NotifyConfig::default().retry_deadline,
            wake: Arc::new(Notify::new()),
            outbox_wake: Arc::new(Notify::new()),
        }
    }

    /// Sets how long queued notifications are retried.
    pub fn with_retry_deadline(mut self, deadline: Duration) -> Pipeline {
        self.retry_deadline = deadline;
        self
    }

    /// Notified whenever notifications were queued: the delivery worker waits on it.
    pub fn outbox_wake(&self) -> Arc<Notify> {
        self.outbox_wake.clone()
    }

    /// Records alerts durably, then wakes the worker. An error means nothing may be assumed
    /// recorded: the webhook answers 503 so that Alertmanager retries.
    pub async fn submit(&self, alerts: &[Alert]) -> Result<Vec<Received>, StoreError> {
        let received = self.store.record_alerts(alerts, Timestamp::now()).await?;
        for (alert, r) in alerts.iter().zip(&received) {
            self.metrics.alert_received(alert.source, !r.fresh);
            if !r.fresh {
                debug!(alert = %alert.name(), key = %r.key, "duplicate delivery; already recorded");
            }
            if r.resolved_now {
                info!(alert = %alert.name(), key = %r.key, "alert resolved");
            }
        }
        if received.iter().any(|r| r.fresh) {
            self.wake.notify_one();
        }
        Ok(received)
    }

    /// Feeds the poller's events into the pipeline: alerts are submitted like webhook alerts;
    /// inconclusive periods are recorded, never acted on. Ends when the poller does.
    pub async fn consume_poller(self, mut events: tokio::sync::mpsc::Receiver<PollerEvent>) {
        while let Some(event) = events.recv().await {
            let now = Timestamp::now();
            let stored = match event {
                PollerEvent::Alerts(alerts) => self.submit(&alerts).await.map(drop),
                PollerEvent::Inconclusive { rule, reason } => {
                    self.metrics.rule_health_changed(true);
                    self.store.record_inconclusive(&rule, &reason, now).await
                }
                PollerEvent::Conclusive { rule } => {
                    self.metrics.rule_health_changed(false);
                    self.store.record_conclusive(&rule, now).await
                }
            };
            if let Err(e) = stored {
                // The poller re-sends firing alerts every poll, so a lost batch comes again.
                error!(error = %error_chain(&e), "could not record a poller event");
            }
        }
    }

    /// The worker: decides every undecided alert, then sleeps until woken or the next sweep.
    pub async fn run(self) {
        let mut announced = false;
        loop {
            if self.readiness.is_ready() {
                if let Err(e) = self.drain().await {
                    error!(error = %error_chain(&e), "incident store failed; will retry");
                }
            } else if !announced {
                info!("waiting for the Kubernetes watches to list before deciding anything");
                announced = true;
            }
            let wait = if self.readiness.is_ready() {
                SWEEP
            } else {
                Duration::from_millis(100)
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn drain(&self) -> Result<(), StoreError> {
        let pending = self.store.undecided_alerts().await?;
        self.metrics.set_pending(pending.len());
        let mut failed = 0;
        for (alert_id, alert) in &pending {
            // One alert that cannot be recorded must not hold up the others; it stays
            // undecided and is tried again at the next sweep.
            if let Err(e) = self.handle(*alert_id, alert).await {
                error!(alert = %alert.name(), alert_id, error = %error_chain(&e), "could not record a decision; will retry");
                failed += 1;
            }
        }
        self.metrics.set_pending(failed);
        Ok(())
    }

    async fn handle(&self, alert_id: i64, alert: &Alert) -> Result<(), StoreError> {
        let past = self.store.past_actions().await?;
        let decision = {
            let index = match self.index.read() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            decide(alert, &index, &self.policy, &past)
        };
        // A decision that acts is reported with its result; one that does not, now.
        let notable_skip = decision.command.is_none() && is_notable(decision.outcome);
        let now = Timestamp::now();
        let mut queued = 0;
        let Some(recorded) = self
            .store
            .record_decision_and_notify(alert_id, alert, &decision, now, |incident_id| {
                if !notable_skip {
                    return Vec::new();
                }
                let n = self.notification(incident_id, alert, &decision, None, now);
                let messages = self.messages(&n, format!("decision:{alert_id}"), now);
                queued = messages.len();
                messages
            })
            .await?
        else {
            return Ok(());
        };
        self.metrics.decision(decision.outcome);
        info!(alert = %alert.name(), incident = recorded.incident_id, outcome = decision.outcome.code(),
            "decision: {}", decision.reason);
        self.queued(recorded.incident_id, queued);
        let (Some(command), Some(action_id)) = (&decision.command, recorded.action_id) else {
            return Ok(());
        };
        let result = self.executor.execute(command).await;
        self.metrics.action(result.status);
        if result.outcome != decision.outcome {
            self.metrics.decision(result.outcome);
        }
        let now = Timestamp::now();
        let messages = if is_notable(result.outcome) {
            let n = self.notification(recorded.incident_id, alert, &decision, Some(&result), now);
            self.messages(&n, format!("result:{action_id}"), now)
        } else {
            warn!(
                incident = recorded.incident_id,
                outcome = result.outcome.code(),
                "{}",
                result.message
            );
            Vec::new()
        };
        self.store
            .record_result_and_notify(action_id, &recorded, alert_id, &result, &messages, now)
            .await?;
        self.queued(recorded.incident_id, messages.len());
        Ok(())
    }

    fn notification(
        &self,
        incident_id: i64,
        alert: &Alert,
        decision: &Decision,
        result: Option<&ActionResult>,
        now: Timestamp,
    ) -> Notification {
        Notification::about(
            incident_id,
            alert,
            decision,
            result,
            self.public_url.as_deref(),
            now,
        )
    }

    /// One outbox message per channel destination of `n`.
    fn messages(&self, n: &Notification, event: String, now: Timestamp) -> Vec<NewMessage> {
        if self.notifiers.is_empty() {
            info!(
                incident = n.incident_id,
                "notify: {} (no channel configured)",
                n.subject()
            );
            return Vec::new();
        }
        let payload = serde_json::to_value(n).unwrap_or(serde_json::Value::Null);
        let deadline = now
            + jiff::SignedDuration::try_from(self.retry_deadline)
                .unwrap_or(jiff::SignedDuration::from_hours(1));
        self.notifiers
            .iter()
            .flat_map(|channel| {
                channel
                    .destinations(n)
                    .into_iter()
                    .map(|destination| NewMessage {
                        channel: channel.name().to_string(),
                        destination,
                        event: event.clone(),
                        payload: payload.clone(),
                        deadline,
                    })
            })
            .collect()
    }

    /// Wakes the delivery worker once messages are committed.
    fn queued(&self, incident_id: i64, count: usize) {
        if count > 0 {
            debug!(incident = incident_id, count, "notifications queued");
            self.outbox_wake.notify_one();
        }
    }
}

/// An error and its sources on one line, for logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
