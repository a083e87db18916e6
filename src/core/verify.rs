//! Verification: did an automatic action help? Pure: the alerts that triggered the action,
//! the workload index and the clock in, a [`Verdict`] with its sentence out.
//!
//! An action that changed something is followed for `policy.verify_window`. It *recovered*
//! once every alert it was taken for is resolved and, for an Argo Rollout, the ReplicaSet it
//! went back to is the Rollout's stable one and the Rollout reports `Healthy` (with a trusted
//! status). An aborted Rollout reports `Degraded` (reason `RolloutAborted`) until its spec is
//! changed, while its traffic is on the stable ReplicaSet: for it, aborted on the stable
//! ReplicaSet counts as back. Until the window ends the verdict is pending; at its end, whatever is still
//! missing makes it *not recovered*, and the sentence says what.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::rollout::RolloutState;
use super::workload::WorkloadIndex;

/// Action kinds that concern an Argo Rollout: their verification also reads the Rollout.
pub const ROLLOUT_KINDS: [&str; 2] = ["abort-rollout", "undo-rollout"];

/// One alert followed, as the store knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct FollowedAlert {
    pub name: String,
    /// When it resolved (its `endsAt`, else when rollbackd learned it); `None` while firing.
    pub resolved_at: Option<Timestamp>,
}

/// What the Rollout shows after an abort or undo, read from the workload index.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutCheck {
    /// `None` when the Rollout is no longer in the index.
    pub rollout: Option<String>,
    /// The ReplicaSet the action went back to.
    pub target: String,
    /// Its pod hash is `status.stableRS`.
    pub target_stable: bool,
    pub phase: Option<String>,
    /// `status.observedGeneration` matches `metadata.generation`.
    pub trusted: bool,
    /// `status.abort` is set: Argo reports `Degraded` while all traffic is on stable.
    pub aborted: bool,
}

impl RolloutCheck {
    /// Reads the Rollout of an action (its namespace, name, workload UID and target key, the
    /// target ReplicaSet's UID) from the index.
    pub fn read(
        index: &WorkloadIndex,
        namespace: &str,
        name: &str,
        workload_uid: &str,
        target_key: &str,
        target_name: &str,
    ) -> RolloutCheck {
        let rollout: Option<&RolloutState> = index
            .rollouts_in(namespace)
            .find(|r| r.uid == workload_uid)
            .or_else(|| index.rollout(namespace, name));
        let Some(r) = rollout else {
            return RolloutCheck {
                rollout: None,
                target: target_name.to_string(),
                target_stable: false,
                phase: None,
                trusted: false,
                aborted: false,
            };
        };
        let target_hash = index
            .replica_sets_owned_by(namespace, &r.uid)
            .find(|rs| rs.uid == target_key)
            .and_then(|rs| rs.pod_hash.clone());
        RolloutCheck {
            rollout: Some(format!("rollout {}/{}", r.namespace, r.name)),
            target: target_name.to_string(),
            target_stable: target_hash.is_some() && target_hash == r.stable_rs,
            phase: r.phase.clone(),
            trusted: r.status_trusted(),
            aborted: r.aborted,
        }
    }

    /// What is still missing for the Rollout to count as recovered; `None` when nothing is.
    fn missing(&self) -> Option<String> {
        let Some(rollout) = &self.rollout else {
            return Some(format!(
                "the Rollout is gone from the index, so {} cannot be seen stable",
                self.target
            ));
        };
        let mut missing = Vec::new();
        if !self.trusted {
            missing.push(format!(
                "the status of {rollout} does not describe its current spec yet"
            ));
        }
        if !self.target_stable {
            missing.push(format!(
                "{} is not the stable ReplicaSet of {rollout}",
                self.target
            ));
        }
        let aborted_on_stable = self.aborted && self.target_stable;
        if self.phase.as_deref() != Some("Healthy") && !aborted_on_stable {
            missing.push(format!(
                "{rollout} is {}, not Healthy",
                self.phase.as_deref().unwrap_or("without a phase")
            ));
        }
        (!missing.is_empty()).then(|| missing.join("; "))
    }
}

/// Where verification of one action stands.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Not all is well yet, and the window is still open.
    Pending,
    /// All is well; `after` is from the action to the last alert's resolution.
    Recovered {
        after: SignedDuration,
        reason: String,
    },
    /// The window ended with something still wrong; the sentence says what.
    NotRecovered { reason: String },
}

/// Judges an action applied at `acted_at` and followed until `until`, at `now`. `what` names
/// the action for the sentence ("undo-deployment of deployment default/web").
pub fn judge(
    what: &str,
    acted_at: Timestamp,
    until: Timestamp,
    alerts: &[FollowedAlert],
    rollout: Option<&RolloutCheck>,
    now: Timestamp,
) -> Verdict {
    let firing: Vec<&str> = alerts
        .iter()
        .filter(|a| a.resolved_at.is_none())
        .map(|a| a.name.as_str())
        .collect();
    let rollout_missing = rollout.and_then(RolloutCheck::missing);
    if firing.is_empty() && rollout_missing.is_none() {
        let last = alerts
            .iter()
            .filter_map(|a| a.resolved_at)
            .max()
            .unwrap_or(now);
        let after = last.duration_since(acted_at).max(SignedDuration::ZERO);
        let healthy = rollout
            .and_then(|r| r.rollout.as_ref())
            .map(|r| format!("; {r} is Healthy on its stable ReplicaSet"))
            .unwrap_or_default();
        return Verdict::Recovered {
            after,
            reason: format!(
                "recovered: {} after the {what}, {} resolved{healthy}",
                human(after),
                alert_list(alerts)
            ),
        };
    }
    if now < until {
        return Verdict::Pending;
    }
    let window = human(until.duration_since(acted_at));
    let mut missing = Vec::new();
    if !firing.is_empty() {
        missing.push(format!(
            "{} of {} alert{} still firing ({})",
            firing.len(),
            alerts.len(),
            if alerts.len() == 1 { "" } else { "s" },
            firing.join(", ")
        ));
    }
    if let Some(r) = rollout_missing {
        missing.push(r);
    }
    Verdict::NotRecovered {
        reason: format!(
            "not recovered within {window} of the {what}: {}",
            missing.join("; ")
        ),
    }
}

/// The sentence of a hold, for the engine and the notification.
pub fn hold_sentence(incident_id: i64) -> String {
    format!(
        "no further automatic action will be taken on this workload until a human runs `rollbackd incidents ack {incident_id}`"
    )
}

fn alert_list(alerts: &[FollowedAlert]) -> String {
    match alerts {
        [] => "no alert left".into(),
        [one] => one.name.clone(),
        many => format!("all {} alerts", many.len()),
    }
}

/// Whole seconds in humantime form ("1m 5s").
fn human(d: SignedDuration) -> String {
    let secs = d.as_secs().unsigned_abs();
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

#[cfg(test)]
mod tests;
