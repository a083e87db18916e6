//! The worker's settling step: actions left without a known result (intended before a crash,
//! or whose answer was lost and could not be re-read) are settled by reading their object
//! again. What it shows is recorded and notified; an action found not applied has its alert
//! decided again at once. After a start, each such incident first gets a note of the start.

use jiff::Timestamp;
use serde_json::json;
use tracing::{info, warn};

use super::Pipeline;
use crate::core::engine::{Decision, Outcome};
use crate::core::settle::Settled;
use crate::core::undo::RevisionRef;
use crate::k8s::executor::Probe;
use crate::notify::is_notable;
use crate::store::{
    ActionOutcome, ActionResult, ActionStatus, Followup, StoreError, UnsettledAction,
};

impl Pipeline {
    /// Settles every action left without a known result by reading its object again. After a
    /// start, each such incident first gets a note that the daemon started.
    pub(super) async fn settle_unsettled(&self, after_start: bool) -> Result<(), StoreError> {
        let actions = self.store.unsettled_actions().await?;
        for action in actions {
            let now = Timestamp::now();
            if after_start {
                self.store
                    .record_note(
                        action.incident_id,
                        "daemon",
                        &format!(
                            "{} and found action {} {}: its result was never recorded; settling it by reading {} {}/{} again",
                            self.started_as.as_deref().map_or_else(
                                || format!(
                                    "rollbackd {} started (pid {})",
                                    env!("CARGO_PKG_VERSION"),
                                    std::process::id()
                                ),
                                str::to_string
                            ),
                            action.action_id,
                            action.status,
                            action.kind,
                            action.namespace,
                            action.name
                        ),
                        &json!({"action_id": action.action_id}),
                        now,
                    )
                    .await?;
            }
            self.settle(&action, after_start).await?;
        }
        Ok(())
    }

    async fn settle(&self, a: &UnsettledAction, after_start: bool) -> Result<(), StoreError> {
        let what = format!("{} {}/{}", a.kind, a.namespace, a.name);
        let probe = Probe {
            kind: a.kind.clone(),
            namespace: a.namespace.clone(),
            name: a.name.clone(),
            workload_uid: a.workload_uid.clone(),
            blamed_key: a.blamed_key.clone(),
            target_key: a.target_key.clone(),
        };
        let target = RevisionRef {
            name: a.target_name.clone(),
            uid: a.target_key.clone(),
            revision: 0,
            image: None,
        };
        let now = Timestamp::now();
        let attempts = u32::try_from(a.attempts).unwrap_or(u32::MAX);
        let (mut result, followup) = match self.executor.probe(&probe).await {
            Ok((Settled::Applied, live)) => (
                ActionResult {
                    status: ActionStatus::Succeeded,
                    outcome: if a.kind == "abort-rollout" {
                        Outcome::Aborted
                    } else {
                        Outcome::RolledBack
                    },
                    message: format!(
                        "settled: the {what} was applied ({live}); its result had not been recorded"
                    ),
                    target: Some(target),
                    data: json!({"settled": "applied", "live": live}),
                    transient: false,
                },
                Followup::Done,
            ),
            Ok((Settled::NotApplied, live)) => (
                ActionResult {
                    status: ActionStatus::Failed,
                    outcome: Outcome::Failed,
                    message: format!(
                        "settled: the {what} was not applied ({live}); nothing was changed"
                    ),
                    target: None,
                    data: json!({"settled": "not-applied", "live": live}),
                    transient: true,
                },
                Followup::Done,
            ),
            Ok((Settled::Elsewhere(live), _)) => (
                ActionResult {
                    status: ActionStatus::Skipped,
                    outcome: Outcome::Superseded,
                    message: format!(
                        "settled: {what} shows neither the blamed nor the target state but {live}; not acting further"
                    ),
                    target: None,
                    data: json!({"settled": "elsewhere", "live": live}),
                    transient: false,
                },
                Followup::Done,
            ),
            Err(e) => {
                // Unreadable: it stays unsettled and blocks its cause. Say so once.
                warn!(action = a.action_id, error = %e, "cannot settle {what} yet");
                if a.status != "intended" || !after_start {
                    return Ok(());
                }
                (
                    ActionResult {
                        status: ActionStatus::Unknown,
                        outcome: Outcome::Unsettled,
                        message: format!(
                            "the {what} was left without a result and {what} cannot be read ({e}); whether it applied is not known yet, and nothing more is sent for this cause until it is"
                        ),
                        target: None,
                        data: json!({"settled": "unknown"}),
                        transient: false,
                    },
                    Followup::Done,
                )
            }
        };
        let followup = if result.transient {
            // Not applied: the cause is still there. Decide it again now, within its attempts.
            match self.retry.next(attempts, now) {
                Some(_) => {
                    result.message =
                        format!("{}; rollbackd decides the alert again now", result.message);
                    Followup::RetryAt(now)
                }
                None => self.followup(&mut result, attempts, now),
            }
        } else {
            followup
        };
        info!(
            action = a.action_id,
            incident = a.incident_id,
            "{}",
            result.message
        );
        self.metrics.action(result.status);
        if result.status != ActionStatus::Failed {
            self.metrics.decision(result.outcome);
        }
        let decision = Decision {
            outcome: result.outcome,
            reason: result.message.clone(),
            workload: a.workload.clone(),
            rollout: a.rollout.clone(),
            command: None,
        };
        // Not applied and decided again at once: the next decision reports; no message now.
        let messages = if is_notable(result.outcome) && !matches!(followup, Followup::RetryAt(_)) {
            let n = self.notification(a.incident_id, &a.alert, &decision, Some(&result), now);
            self.messages(&n, format!("settled:{}", a.action_id), now)
        } else {
            Vec::new()
        };
        let outcome = ActionOutcome {
            action_id: a.action_id,
            incident_id: a.incident_id,
            alert_id: a.alert_id,
            result: &result,
            followup,
            messages: &messages,
            verify_until: self.verify_until(&result, now),
        };
        self.store.record_outcomes(&[outcome], now).await?;
        self.queued(a.incident_id, messages.len());
        self.tell_cluster(
            a.incident_id,
            a.workload.as_ref(),
            result.outcome,
            &result.message,
        );
        if result.status == crate::store::ActionStatus::Succeeded {
            self.graph_later(a.incident_id, None);
        }
        if matches!(followup, Followup::RetryAt(_)) {
            self.wake.notify_one();
        }
        Ok(())
    }
}
