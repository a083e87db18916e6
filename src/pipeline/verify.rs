//! The worker's verification step: follows each applied action for `policy.verify_window`
//! and records its verdict (`core::verify` judges; this module reads and writes).
//!
//! An action recorded as applied (`rolled-back`, `aborted`; never dry-run) gets a deadline.
//! Each round, every action under verification is judged against the alerts of its incident
//! and, for an Argo Rollout, the Rollout in the workload index. `recovered` is recorded as soon
//! as it holds; `not-recovered` once the deadline passed, with a message to on-call, and from
//! then on the engine holds the workload (`held`) until the incident is acknowledged.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use tracing::{info, warn};

use super::Pipeline;
use crate::core::engine::{Decision, Outcome};
use crate::core::verify::{ROLLOUT_KINDS, RolloutCheck, Verdict, hold_sentence, judge};
use crate::notify::ActionInfo;
use crate::store::{ActionResult, ActionStatus, StoreError, Verifying};

impl Pipeline {
    /// Sets how long the alerts behind an applied action are followed.
    pub fn with_verify_window(mut self, window: Duration) -> Pipeline {
        self.verify_window = window;
        self
    }

    /// When an applied revert's verification ends (`None` for anything else).
    pub(super) fn verify_until(&self, result: &ActionResult, now: Timestamp) -> Option<Timestamp> {
        let applied = result.status == ActionStatus::Succeeded
            && matches!(result.outcome, Outcome::RolledBack | Outcome::Aborted);
        applied.then(|| {
            let window =
                SignedDuration::try_from(self.verify_window).unwrap_or(SignedDuration::MAX);
            now.checked_add(window).unwrap_or(Timestamp::MAX)
        })
    }

    /// Judges every action under verification and records the verdicts that are due.
    pub(super) async fn verify_due(&self) -> Result<(), StoreError> {
        for v in self.store.verifications_due(Timestamp::now()).await? {
            let argo = ROLLOUT_KINDS.contains(&v.kind.as_str());
            // A Rollout read from stale data could hold a workload for nothing: wait.
            if argo && !self.readiness.is_ready() {
                continue;
            }
            let check = argo.then(|| {
                let index = match self.index.read() {
                    Ok(guard) => guard,
                    Err(poisoned) => poisoned.into_inner(),
                };
                RolloutCheck::read(
                    &index,
                    &v.namespace,
                    &v.name,
                    &v.workload_uid,
                    &v.target_key,
                    &v.target_name,
                )
            });
            let what = format!("{} of {}/{}", v.kind, v.namespace, v.name);
            let now = Timestamp::now();
            match judge(
                &what,
                v.acted_at,
                v.verify_until,
                &v.followed,
                check.as_ref(),
                now,
            ) {
                Verdict::Pending => {}
                Verdict::Recovered { after, reason } => {
                    let data =
                        json!({"action_id": v.action_id, "recovered_after_secs": after.as_secs()});
                    if self
                        .store
                        .record_verdict(
                            v.action_id,
                            v.incident_id,
                            Outcome::Recovered,
                            &reason,
                            &data,
                            &[],
                            now,
                        )
                        .await?
                    {
                        self.metrics.verification(Outcome::Recovered);
                        self.graph_later(v.incident_id, Some(Duration::from_secs(2)));
                        info!(action = v.action_id, incident = v.incident_id, "{reason}");
                    }
                }
                Verdict::NotRecovered { reason } => self.not_recovered(&v, reason, now).await?,
            }
        }
        Ok(())
    }

    /// Records `not-recovered`, holds the workload, and escalates to on-call.
    async fn not_recovered(
        &self,
        v: &Verifying,
        reason: String,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let reason = format!("{reason}; {}", hold_sentence(v.incident_id));
        let decision = Decision {
            outcome: Outcome::NotRecovered,
            reason: reason.clone(),
            workload: v.workload.clone(),
            rollout: v.rollout.clone(),
            command: None,
        };
        let mut n = self.notification(v.incident_id, &v.alert, &decision, None, now);
        n.action = Some(ActionInfo {
            kind: v.kind.clone(),
            dry_run: false,
            status: "succeeded".into(),
        });
        let messages = self.messages(&n, format!("verify:{}", v.action_id), now);
        let data = json!({"action_id": v.action_id, "held": true});
        if self
            .store
            .record_verdict(
                v.action_id,
                v.incident_id,
                Outcome::NotRecovered,
                &reason,
                &data,
                &messages,
                now,
            )
            .await?
        {
            self.metrics.verification(Outcome::NotRecovered);
            self.graph_later(v.incident_id, Some(Duration::from_secs(2)));
            warn!(action = v.action_id, incident = v.incident_id, "{reason}");
            self.queued(v.incident_id, messages.len());
        }
        Ok(())
    }
}
