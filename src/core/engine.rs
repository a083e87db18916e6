//! The decision engine: alert + workload index + clock → a [`Decision`] with a reason.
//!
//! It is a pure function. Every path, including "do nothing", returns an [`Outcome`] code and a
//! sentence a reviewer can read after the incident. When it decides to act it returns a
//! [`Command`]; the executor carries that out and reports the final outcome.

use std::fmt;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::alert::{Alert, AlertStatus, PostRolloutVerdict};
use super::correlate::{Correlation, CorrelationLabels, Target, correlate};
use super::gitops::GitopsPolicy;
use super::guard::GuardPolicy;
use super::undo::RevisionRef;
use super::workload::WorkloadIndex;

mod commands;
mod gitops;
mod guard;
mod traffic;
mod workloads;

pub use commands::{
    AbortRollout, ApplicationRef, Command, Intent, PauseWorkload, ResetWeights, SuspendAndRevert,
    SwitchSelector, SyncToPrevious, UndoDeployment, UndoRollout,
};

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
    /// The revision blamed is the one rollbackd itself rolled back to: going further back would
    /// cascade to older and older revisions. Notified, nothing done.
    WouldCascade,
    /// The Deployment moved on between decision and action; acting would revert someone else.
    Superseded,
    /// The alert was resolved before a decision was made.
    NotFiring,
    /// An Argo Rollout's update in progress was aborted; traffic is back on the stable pods.
    Aborted,
    /// An Argo Rollout's status describes an older generation; nothing is decided on it.
    StatusNotObserved,
    /// The Kubernetes data a decision needs is not fresh (a watch is failing or silent); the
    /// alert waited too long and is decided once the data is fresh again.
    StaleData,
    /// The revert was sent but its answer was lost (timeout, dropped connection, 5xx, crash);
    /// rollbackd re-reads the object until it knows whether it was applied.
    Unsettled,
    /// Guard rails: the workload, its namespace or the alert is outside automatic action
    /// (annotation, allow/deny list, alert label matchers). Recorded and notified only.
    OutOfScope,
    /// The workload's `rollbackd.io/policy` is `notify-only`.
    NotifyOnly,
    /// A freeze window is in force: recorded and notified only.
    Frozen,
    /// An action on this workload is under way or its result is not known yet.
    InFlight,
    /// The workload was acted on less than `policy.cooldown` ago.
    Cooldown,
    /// The circuit breaker is open: too many automatic actions in its window.
    BreakerOpen,
    /// The workload's `rollbackd.io/policy` is `pause`: it was paused instead of reverted.
    PausedWorkload,
    /// Verification: every alert the action was taken for resolved within the window.
    Recovered,
    /// Verification: the window ended with an alert still firing (or the Rollout not back on
    /// its target and Healthy); on-call is told and the workload is held.
    NotRecovered,
    /// An earlier action on this workload did not recover it and no human has acknowledged
    /// that yet: rollbackd takes no further automatic action on it.
    Held,
    /// An Argo CD Application with self-heal manages the workload: nothing was changed, and
    /// on-call is told which Application, which revision was last good, and what to run.
    GitopsNotify,
    /// The Application's automated sync was suspended, then the workload was reverted.
    GitopsSuspended,
    /// The Application's automated sync was suspended and a sync to the revision before the
    /// bad one was started.
    GitopsSynced,
}

impl Outcome {
    pub const ALL: [Outcome; 31] = [
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
        Outcome::WouldCascade,
        Outcome::Superseded,
        Outcome::NotFiring,
        Outcome::Aborted,
        Outcome::StatusNotObserved,
        Outcome::StaleData,
        Outcome::Unsettled,
        Outcome::OutOfScope,
        Outcome::NotifyOnly,
        Outcome::Frozen,
        Outcome::InFlight,
        Outcome::Cooldown,
        Outcome::BreakerOpen,
        Outcome::PausedWorkload,
        Outcome::Recovered,
        Outcome::NotRecovered,
        Outcome::Held,
        Outcome::GitopsNotify,
        Outcome::GitopsSuspended,
        Outcome::GitopsSynced,
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
            Outcome::WouldCascade => "would-cascade",
            Outcome::Superseded => "superseded",
            Outcome::NotFiring => "not-firing",
            Outcome::Aborted => "aborted",
            Outcome::StatusNotObserved => "status-not-observed",
            Outcome::StaleData => "stale-data",
            Outcome::Unsettled => "unsettled",
            Outcome::OutOfScope => "out-of-scope",
            Outcome::NotifyOnly => "notify-only",
            Outcome::Frozen => "frozen",
            Outcome::InFlight => "in-flight",
            Outcome::Cooldown => "cooldown",
            Outcome::BreakerOpen => "breaker-open",
            Outcome::PausedWorkload => "paused-workload",
            Outcome::Recovered => "recovered",
            Outcome::NotRecovered => "not-recovered",
            Outcome::Held => "held",
            Outcome::GitopsNotify => "gitops-notify",
            Outcome::GitopsSuspended => "gitops-suspended",
            Outcome::GitopsSynced => "gitops-synced",
        }
    }

    pub fn from_code(code: &str) -> Option<Outcome> {
        if code == "own-rollback" {
            // The name of `would-cascade` in stores written before the guard rails.
            return Some(Outcome::WouldCascade);
        }
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
    /// Scope, cooldown, circuit breaker, freezes.
    pub guard: GuardPolicy,
    /// `[gitops]`: what to do when an Argo CD Application would revert the revert.
    pub gitops: GitopsPolicy,
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

/// An earlier action on a workload, as the store remembers it.
#[derive(Clone, Debug, PartialEq)]
pub struct PastAction {
    pub incident_id: i64,
    pub workload_uid: String,
    pub blamed_uid: String,
    /// What the action reverted to, or may have: rollbackd's own state, never blamed.
    pub target_uid: Option<String>,
    pub at: Timestamp,
    /// Known applied; otherwise intended or unknown (its result not settled yet).
    pub settled: bool,
    /// It did not recover the workload (`not-recovered`) and no human has acknowledged its
    /// incident yet: nothing more is done to the workload automatically.
    pub held: bool,
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
    /// The blame sentence, or `None` after recording why blaming was refused.
    fn unless_refused(&mut self, blame: Result<String, (Outcome, String)>) -> Option<String> {
        match blame {
            Ok(sentence) => Some(sentence),
            Err((outcome, reason)) => {
                self.outcome = outcome;
                self.reason = reason;
                None
            }
        }
    }

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

/// Decides what to do about one alert, now.
pub fn decide(
    alert: &Alert,
    index: &WorkloadIndex,
    policy: &Policy,
    past: &[PastAction],
) -> Decision {
    decide_at(alert, index, policy, past, Timestamp::now())
}

/// Decides what to do about one alert at `now` (the injected clock of cooldowns, windows and
/// freezes).
pub fn decide_at(
    alert: &Alert,
    index: &WorkloadIndex,
    policy: &Policy,
    past: &[PastAction],
    now: Timestamp,
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
    let (target, via) = match correlate(&alert.labels, index, &policy.labels) {
        Correlation::Found { target, via } => (target, via),
        Correlation::NoWorkload(why) => {
            return Decision::skip(Outcome::NoWorkload, format!("no workload to blame: {why}"));
        }
        Correlation::Ambiguous { via, names } => {
            return Decision::skip(
                Outcome::Ambiguous,
                format!(
                    "{via} matches {} workloads ({}); rollbackd will not guess",
                    names.len(),
                    names.join(", ")
                ),
            );
        }
    };
    let ctx = Context {
        alert,
        index,
        policy,
        past,
        via: &via,
        now,
    };
    let decision = match target {
        Target::Deployment(d) => workloads::decide_deployment(&ctx, d),
        Target::Rollout(r) => workloads::decide_rollout(&ctx, r),
        Target::Service(svc, change) => traffic::decide_service(&ctx, svc, change),
        Target::VirtualService(vs, change) => traffic::decide_virtual_service(&ctx, vs, change),
    };
    // A decision to act passes the guard rails (scope, cooldown, breaker, freezes, the
    // workload's own policy), then the GitOps check: either may hold it back or change it.
    let decision = guard::apply(&ctx, decision);
    gitops::apply(&ctx, decision)
}

/// What every per-kind decision needs.
struct Context<'a> {
    alert: &'a Alert,
    index: &'a WorkloadIndex,
    policy: &'a Policy,
    past: &'a [PastAction],
    via: &'a str,
    /// The clock every time-dependent rule reads.
    now: Timestamp,
}

impl Context<'_> {
    fn dry_run(&self) -> bool {
        self.policy.mode == Mode::DryRun
    }

    fn acting(&self) -> Outcome {
        if self.dry_run() {
            Outcome::WouldRollBack
        } else {
            Outcome::RolledBack
        }
    }

    /// The checks every revert passes: not our own revert, not already reverted, the alert
    /// not older than the change, the change recent enough. `Ok` carries the blame sentence.
    fn blame(
        &self,
        workload: &WorkloadRef,
        change: &str,
        since: Timestamp,
        current_key: &str,
    ) -> Result<String, (Outcome, String)> {
        let alert = self.alert;
        if let Some(held) = self
            .past
            .iter()
            .find(|p| p.held && p.workload_uid == workload.uid)
        {
            return Err((
                Outcome::Held,
                format!(
                    "{workload} is held: rollbackd's action of {} (incident {}) did not recover it; {}",
                    held.at,
                    held.incident_id,
                    super::verify::hold_sentence(held.incident_id)
                ),
            ));
        }
        if let Some(own) = self
            .past
            .iter()
            .find(|p| p.target_uid.as_deref() == Some(current_key))
        {
            return Err((
                Outcome::WouldCascade,
                format!(
                    "{workload} runs {change}, which rollbackd itself reverted to at {} (incident {}); rollbackd never undoes its own rollback",
                    own.at, own.incident_id
                ),
            ));
        }
        if let Some(earlier) = self
            .past
            .iter()
            .find(|p| p.blamed_uid == current_key && !p.settled)
        {
            return Err((
                Outcome::AlreadyRolledBack,
                format!(
                    "a revert of {change} of {workload} was started at {} (incident {}) and its result is not known yet; nothing more is sent for this cause until it is settled",
                    earlier.at, earlier.incident_id
                ),
            ));
        }
        if let Some(earlier) = self.past.iter().find(|p| p.blamed_uid == current_key) {
            return Err((
                Outcome::AlreadyRolledBack,
                format!(
                    "{change} of {workload} was already reverted for an earlier alert at {} (incident {}); one cause gets one rollback",
                    earlier.at, earlier.incident_id
                ),
            ));
        }
        let post_rollout = alert.post_rollout();
        if let Some(PostRolloutVerdict::PreExisting(evidence)) = post_rollout {
            return Err((
                Outcome::PreExisting,
                format!(
                    "{} after {change} of {workload} (matched by {}) is not blamed on it: {evidence}",
                    alert.name(),
                    self.via
                ),
            ));
        }
        let lead = alert.starts_at.duration_since(since);
        let grace = signed(self.policy.grace);
        let window = signed(self.policy.correlation_window);
        if lead < -grace {
            return Err((
                Outcome::PreExisting,
                format!(
                    "{} started at {}, {} before {change} of {workload} at {since}; an alert older than the change is not caused by it",
                    alert.name(),
                    alert.starts_at,
                    human(-lead)
                ),
            ));
        }
        if lead > window {
            return Err((
                Outcome::NoRecentRollout,
                format!(
                    "{change} of {workload} happened at {since}, {} before {} started, outside the correlation window of {}",
                    human(lead),
                    alert.name(),
                    human(window)
                ),
            ));
        }
        let evidence = match post_rollout {
            Some(PostRolloutVerdict::Regression(evidence)) => {
                format!(", in its post-rollout form: {evidence}")
            }
            _ => String::new(),
        };
        Ok(format!(
            "{} started {} after {change} of {workload} (window {}, matched by {}){evidence}",
            alert.name(),
            human(lead.max(SignedDuration::ZERO)),
            human(window),
            self.via
        ))
    }
}

/// "revision 3 (web-5d8f, nginx:3.0)"; a traffic state is described by its name alone.
pub fn describe(r: &RevisionRef) -> String {
    if r.revision == 0 && r.image.is_none() && r.uid.contains(':') {
        return r.name.clone();
    }
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
mod guard_tests;
#[cfg(test)]
mod tests;
