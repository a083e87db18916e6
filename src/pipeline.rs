//! The pipeline: recorded alerts → engine → executor → store → notifier.
//!
//! Intake ([`Pipeline::submit`]) durably records alerts and wakes the worker; nothing is
//! decided on the request path. One worker decides alerts strictly one after another, so two
//! alerts about the same rollout can never race into two rollbacks. It waits until every watch
//! has listed once — deciding from a half-filled index would be acting on missing data — and
//! resumes from the store after a restart, since undecided alerts stay marked as such.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

use crate::core::alert::Alert;
use crate::core::engine::{Decision, Policy, decide, describe};
use crate::k8s::executor::Executor;
use crate::k8s::watch::{Readiness, SharedIndex};
use crate::metrics::Metrics;
use crate::notify::{Notification, Notifier, is_notable};
use crate::poller::PollerEvent;
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
    wake: Arc<Notify>,
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
            wake: Arc::new(Notify::new()),
        }
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
        let Some(recorded) = self
            .store
            .record_decision(alert_id, alert, &decision, Timestamp::now())
            .await?
        else {
            return Ok(());
        };
        self.metrics.decision(decision.outcome);
        info!(alert = %alert.name(), incident = recorded.incident_id, outcome = decision.outcome.code(),
            "decision: {}", decision.reason);
        let (Some(command), Some(action_id)) = (&decision.command, recorded.action_id) else {
            if is_notable(decision.outcome) {
                self.notify(recorded.incident_id, alert, &decision, None);
            }
            return Ok(());
        };
        let result = self.executor.execute(command).await;
        self.metrics.action(result.status);
        if result.outcome != decision.outcome {
            self.metrics.decision(result.outcome);
        }
        self.store
            .record_result(action_id, &recorded, alert_id, &result, Timestamp::now())
            .await?;
        if is_notable(result.outcome) {
            self.notify(recorded.incident_id, alert, &decision, Some(&result));
        } else {
            warn!(
                incident = recorded.incident_id,
                outcome = result.outcome.code(),
                "{}",
                result.message
            );
        }
        Ok(())
    }

    /// Notifies in the background: a slow or failing channel never delays a rollback.
    fn notify(
        &self,
        incident_id: i64,
        alert: &Alert,
        decision: &Decision,
        result: Option<&ActionResult>,
    ) {
        let (outcome, reason) = match result {
            Some(r) => (r.outcome, r.message.clone()),
            None => (decision.outcome, decision.reason.clone()),
        };
        let to = match (&decision.command, result.and_then(|r| r.target.as_ref())) {
            (_, Some(target)) => Some(describe(target)),
            (Some(command), None) => Some(command.intent().target_name),
            _ => None,
        };
        let n = Notification {
            incident_id,
            outcome,
            reason,
            alerts: vec![alert.name().to_string()],
            workload: decision.workload.as_ref().map(ToString::to_string),
            from: decision.rollout.as_ref().map(|r| describe(&r.revision)),
            to,
            link: self
                .public_url
                .as_ref()
                .map(|base| format!("{}/incidents/{incident_id}", base.trim_end_matches('/'))),
        };
        let notifiers = self.notifiers.clone();
        tokio::spawn(async move {
            for notifier in notifiers.iter() {
                if let Err(e) = notifier.notify(&n).await {
                    warn!(channel = notifier.name(), error = %e, "notification failed");
                }
            }
        });
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
