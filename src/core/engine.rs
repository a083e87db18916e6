//! The decision engine: alert + workload index + clock → a [`Decision`] with a reason.
//!
//! It is a pure function. Every path, including "do nothing", returns an [`Outcome`] code and a
//! sentence a reviewer can read after the incident. When it decides to act it returns a
//! [`Command`]; the executor carries that out and reports the final outcome.

use std::fmt;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::alert::{Alert, AlertStatus};
use super::correlate::{Correlation, CorrelationLabels, correlate};
use super::undo::{RevisionRef, UndoPlan, plan_undo};
use super::workload::WorkloadIndex;

/// Every outcome rollbackd can record, with its stable code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    NoWorkload,
    Ambiguous,
    NoRecentRollout,
    PreExisting,
    RolledBack,
    WouldRollBack,
    AlreadyAtTarget,
    Paused,
    NoHistory,
    Failed,
    /// This rollout was already reverted (or a revert is under way) for an earlier alert.
    AlreadyRolledBack,
    /// The current ReplicaSet is the target of rollbackd's own rollback: never undo an undo.
    OwnRollback,
    /// The Deployment moved on between decision and action; acting would revert someone else.
    Superseded,
    /// The alert was resolved before a decision was made.
    NotFiring,
}

impl Outcome {
    pub const ALL: [Outcome; 14] = [
        Outcome::NoWorkload,
        Outcome::Ambiguous,
        Outcome::NoRecentRollout,
        Outcome::PreExisting,
        Outcome::RolledBack,
        Outcome::WouldRollBack,
        Outcome::AlreadyAtTarget,
        Outcome::Paused,
        Outcome::NoHistory,
        Outcome::Failed,
        Outcome::AlreadyRolledBack,
        Outcome::OwnRollback,
        Outcome::Superseded,
        Outcome::NotFiring,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Outcome::NoWorkload => "no-workload",
            Outcome::Ambiguous => "ambiguous",
            Outcome::NoRecentRollout => "no-recent-rollout",
            Outcome::PreExisting => "pre-existing",
            Outcome::RolledBack => "rolled-back",
            Outcome::WouldRollBack => "would-roll-back",
            Outcome::AlreadyAtTarget => "already-at-target",
            Outcome::Paused => "paused",
            Outcome::NoHistory => "no-history",
            Outcome::Failed => "failed",
            Outcome::AlreadyRolledBack => "already-rolled-back",
            Outcome::OwnRollback => "own-rollback",
            Outcome::Superseded => "superseded",
            Outcome::NotFiring => "not-firing",
        }
    }

    pub fn from_code(code: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.code() == code)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Whether rollbackd changes anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Enforce,
    DryRun,
}

/// The knobs the engine decides with.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub mode: Mode,
    /// How recent a rollout must be, before the alert started, to be blamed.
    pub correlation_window: Duration,
    /// An alert that started up to this long before the rollout is still blamed (clock skew).
    pub grace: Duration,
    pub labels: CorrelationLabels,
}

/// The workload an incident concerns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{}",
            self.kind.to_lowercase(),
            self.namespace,
            self.name
        )
    }
}

/// The rollout blamed: the ReplicaSet that became current, and when.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutRef {
    pub revision: RevisionRef,
    pub since: Timestamp,
}

/// What the executor is asked to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    UndoDeployment(UndoDeployment),
}

/// `kubectl rollout undo` of one Deployment, away from the blamed ReplicaSet.
#[derive(Clone, Debug, PartialEq)]
pub struct UndoDeployment {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The ReplicaSet blamed; if it is no longer current at action time, nothing is done.
    pub blamed: RevisionRef,
    /// The target as planned from the index; the executor re-plans from fresh reads.
    pub planned_target: RevisionRef,
    pub dry_run: bool,
}

/// An earlier action on a workload, as the store remembers it.
#[derive(Clone, Debug, PartialEq)]
pub struct PastAction {
    pub incident_id: i64,
    pub workload_uid: String,
    pub blamed_uid: String,
    /// Set once the action succeeded and what it moved to is known.
    pub target_uid: Option<String>,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub outcome: Outcome,
    pub reason: String,
    pub workload: Option<WorkloadRef>,
    pub rollout: Option<RolloutRef>,
    pub command: Option<Command>,
}

impl Decision {
    fn skip(outcome: Outcome, reason: String) -> Decision {
        Decision {
            outcome,
            reason,
            workload: None,
            rollout: None,
            command: None,
        }
    }
}

/// Decides what to do about one alert.
pub fn decide(
    alert: &Alert,
    index: &WorkloadIndex,
    policy: &Policy,
    past: &[PastAction],
) -> Decision {
    if alert.status == AlertStatus::Resolved {
        return Decision::skip(
            Outcome::NotFiring,
            format!(
                "{} was already resolved when rollbackd looked at it; nothing to do",
                alert.name()
            ),
        );
    }
    let (deployment, via) = match correlate(&alert.labels, index, &policy.labels) {
        Correlation::Found { deployment, via } => (deployment, via),
        Correlation::NoWorkload(why) => {
            return Decision::skip(Outcome::NoWorkload, format!("no workload to blame: {why}"));
        }
        Correlation::Ambiguous { via, names } => {
            return Decision::skip(
                Outcome::Ambiguous,
                format!(
                    "{via} matches {} Deployments ({}); rollbackd will not guess",
                    names.len(),
                    names.join(", ")
                ),
            );
        }
    };
    let workload = WorkloadRef {
        kind: "Deployment".into(),
        namespace: deployment.namespace.clone(),
        name: deployment.name.clone(),
        uid: deployment.uid.clone(),
    };
    let mut decision = Decision::skip(Outcome::NoRecentRollout, String::new());
    decision.workload = Some(workload.clone());
    let Some(current) = index.current_rollout(deployment) else {
        decision.reason = format!(
            "{workload} (matched by {via}) has no ReplicaSet with its current template yet, so there is no rollout to blame"
        );
        return decision;
    };
    let rs = current.replica_set;
    let blamed = RevisionRef::of(rs);
    let rollout_text = describe(&blamed);
    decision.rollout = Some(RolloutRef {
        revision: blamed.clone(),
        since: current.since,
    });

    if let Some(own) = past
        .iter()
        .find(|p| p.target_uid.as_deref() == Some(rs.uid.as_str()))
    {
        decision.outcome = Outcome::OwnRollback;
        decision.reason = format!(
            "{workload} runs {rollout_text}, which rollbackd itself rolled back to at {} (incident {}); rollbackd never undoes its own rollback",
            own.at, own.incident_id
        );
        return decision;
    }
    if let Some(earlier) = past.iter().find(|p| p.blamed_uid == rs.uid) {
        decision.outcome = Outcome::AlreadyRolledBack;
        decision.reason = format!(
            "{rollout_text} of {workload} was already rolled back for an earlier alert at {} (incident {}); one cause gets one rollback",
            earlier.at, earlier.incident_id
        );
        return decision;
    }

    let lead = alert.starts_at.duration_since(current.since);
    let grace = signed(policy.grace);
    let window = signed(policy.correlation_window);
    if lead < -grace {
        decision.outcome = Outcome::PreExisting;
        decision.reason = format!(
            "{} started at {}, {} before {rollout_text} of {workload} became current at {}; an alert older than the rollout is not caused by it",
            alert.name(),
            alert.starts_at,
            human(-lead),
            current.since
        );
        return decision;
    }
    if lead > window {
        decision.reason = format!(
            "{rollout_text} of {workload} became current at {}, {} before {} started, outside the correlation window of {}",
            current.since,
            human(lead),
            alert.name(),
            human(window)
        );
        return decision;
    }

    let blame = format!(
        "{} started {} after {rollout_text} of {workload} became current (window {}, matched by {via})",
        alert.name(),
        human(lead.max(SignedDuration::ZERO)),
        human(window)
    );
    match plan_undo(deployment, index.owned_replica_sets(deployment), None) {
        UndoPlan::Paused => {
            decision.outcome = Outcome::Paused;
            decision.reason = format!(
                "{blame}, but {workload} is paused and kubectl refuses to roll back a paused deployment"
            );
        }
        UndoPlan::NoHistory | UndoPlan::RevisionNotFound { .. } => {
            decision.outcome = Outcome::NoHistory;
            decision.reason =
                format!("{blame}, but {workload} has no earlier revision to roll back to");
        }
        UndoPlan::AlreadyAtTarget { target } => {
            decision.outcome = Outcome::AlreadyAtTarget;
            decision.reason = format!(
                "{blame}, but its template already matches {}: nothing to roll back",
                describe(&target)
            );
        }
        UndoPlan::Patch { target, .. } => {
            let dry_run = policy.mode == Mode::DryRun;
            decision.outcome = if dry_run {
                Outcome::WouldRollBack
            } else {
                Outcome::RolledBack
            };
            decision.reason = format!("{blame}: roll back to {}", describe(&target));
            decision.command = Some(Command::UndoDeployment(UndoDeployment {
                namespace: workload.namespace.clone(),
                name: workload.name.clone(),
                uid: workload.uid.clone(),
                blamed,
                planned_target: target,
                dry_run,
            }));
        }
    }
    decision
}

/// "revision 3 (web-5d8f, nginx:3.0)"
pub fn describe(r: &RevisionRef) -> String {
    match &r.image {
        Some(image) => format!("revision {} ({}, {image})", r.revision, r.name),
        None => format!("revision {} ({})", r.revision, r.name),
    }
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// Whole seconds in humantime form ("5m 3s"), for sentences.
fn human(d: SignedDuration) -> String {
    let secs = d.as_secs().unsigned_abs();
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

#[cfg(test)]
mod tests;
