//! Decisions for workloads: a Deployment (undo) and an Argo Rollout (abort or undo).

use super::{
    AbortRollout, Command, Context, Decision, Outcome, RolloutRef, UndoDeployment, UndoRollout,
    WorkloadRef, describe,
};
use crate::core::rollout::{RolloutState, RolloutUndoPlan, plan_rollout_undo};
use crate::core::undo::{RevisionRef, UndoPlan, plan_undo};
use crate::core::workload::{CurrentRollout, DeploymentState};

/// Records the current ReplicaSet as the rollout blamed and runs the common blame checks;
/// `None` when they refused (the decision then says why).
fn blame_current(
    ctx: &Context<'_>,
    decision: &mut Decision,
    workload: &WorkloadRef,
    current: &CurrentRollout<'_>,
) -> Option<(RevisionRef, String)> {
    let blamed = RevisionRef::of(current.replica_set);
    decision.rollout = Some(RolloutRef {
        revision: blamed.clone(),
        since: current.since,
    });
    let blame = ctx.blame(workload, &describe(&blamed), current.since, &blamed.uid);
    decision
        .unless_refused(blame)
        .map(|sentence| (blamed, sentence))
}

pub(super) fn decide_deployment(ctx: &Context<'_>, deployment: &DeploymentState) -> Decision {
    let workload = WorkloadRef {
        kind: "Deployment".into(),
        namespace: deployment.namespace.clone(),
        name: deployment.name.clone(),
        uid: deployment.uid.clone(),
    };
    let mut decision = Decision::skip(Outcome::NoRecentRollout, String::new());
    decision.workload = Some(workload.clone());
    let Some(current) = ctx.index.current_rollout(deployment) else {
        decision.reason = format!(
            "{workload} (matched by {}) has no ReplicaSet with its current template yet, so there is no rollout to blame",
            ctx.via
        );
        return decision;
    };
    let Some((blamed, blame)) = blame_current(ctx, &mut decision, &workload, &current) else {
        return decision;
    };
    match plan_undo(deployment, ctx.index.owned_replica_sets(deployment), None) {
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
        // The index keeps templates by digest: the executor writes the patch from its reads.
        UndoPlan::Patch { target, .. } | UndoPlan::Unread { target } => {
            decision.outcome = ctx.acting();
            decision.reason = format!("{blame}: roll back to {}", describe(&target));
            decision.command = Some(Command::UndoDeployment(UndoDeployment {
                namespace: workload.namespace.clone(),
                name: workload.name.clone(),
                uid: workload.uid.clone(),
                blamed,
                planned_target: target,
                selector: deployment.selector.clone(),
                dry_run: ctx.dry_run(),
            }));
        }
    }
    decision
}

pub(super) fn decide_rollout(ctx: &Context<'_>, rollout: &RolloutState) -> Decision {
    let workload = WorkloadRef {
        kind: "Rollout".into(),
        namespace: rollout.namespace.clone(),
        name: rollout.name.clone(),
        uid: rollout.uid.clone(),
    };
    let mut decision = Decision::skip(Outcome::StatusNotObserved, String::new());
    decision.workload = Some(workload.clone());
    if !rollout.status_trusted() {
        decision.reason = format!(
            "{workload}'s status describes generation {} but the spec is at generation {}; rollbackd does not act on a status the controller has not caught up with",
            rollout.observed_generation.as_deref().unwrap_or("(none)"),
            rollout.generation
        );
        return decision;
    }
    let Some(current) = ctx.index.current_of_rollout(rollout) else {
        decision.outcome = Outcome::NoRecentRollout;
        decision.reason = format!(
            "{workload} (matched by {}) has no ReplicaSet for its current pod hash yet, so there is no rollout to blame",
            ctx.via
        );
        return decision;
    };
    let Some((blamed, blame)) = blame_current(ctx, &mut decision, &workload, &current) else {
        return decision;
    };
    if rollout.mid_update() {
        if rollout.aborted {
            decision.outcome = Outcome::AlreadyRolledBack;
            decision.reason = format!("{blame}, but the update is already aborted");
            return decision;
        }
        let stable_hash = rollout.stable_rs.as_deref().unwrap_or_default();
        let Some(stable) = ctx
            .index
            .replica_sets_owned_by(&rollout.namespace, &rollout.uid)
            .find(|rs| rs.pod_hash.as_deref() == Some(stable_hash))
        else {
            decision.outcome = Outcome::NoHistory;
            decision.reason = format!(
                "{blame}, but its stable ReplicaSet ({stable_hash}) is not known; not aborting blind"
            );
            return decision;
        };
        let stable = RevisionRef::of(stable);
        decision.outcome = if ctx.dry_run() {
            Outcome::WouldRollBack
        } else {
            Outcome::Aborted
        };
        decision.reason = format!(
            "{blame}, while the update is in progress: abort it, sending traffic back to stable {}",
            describe(&stable)
        );
        decision.command = Some(Command::AbortRollout(AbortRollout {
            namespace: rollout.namespace.clone(),
            name: rollout.name.clone(),
            uid: rollout.uid.clone(),
            blamed,
            stable,
            dry_run: ctx.dry_run(),
        }));
        return decision;
    }
    // Promoted: nothing is in progress, so an abort would do harm (argo-rollouts#1292); undo.
    let Some(live) = ctx.index.rollout_template(rollout) else {
        decision.outcome = Outcome::NoWorkload;
        decision.reason = format!(
            "{blame}, but its workloadRef deployment {} is not known",
            rollout.workload_ref.as_deref().unwrap_or("?")
        );
        return decision;
    };
    let owned = ctx
        .index
        .replica_sets_owned_by(&rollout.namespace, &rollout.uid);
    match plan_rollout_undo(live, &rollout.resource_version, owned) {
        RolloutUndoPlan::NoHistory => {
            decision.outcome = Outcome::NoHistory;
            decision.reason =
                format!("{blame}, but {workload} has no earlier revision to roll back to");
        }
        RolloutUndoPlan::AlreadyAtTarget { target } => {
            decision.outcome = Outcome::AlreadyAtTarget;
            decision.reason = format!(
                "{blame}, but its template already matches {}: nothing to roll back",
                describe(&target)
            );
        }
        RolloutUndoPlan::Patch { target, .. } | RolloutUndoPlan::Unread { target } => {
            decision.outcome = ctx.acting();
            decision.reason = format!(
                "{blame}, and it is fully promoted: roll back to {}",
                describe(&target)
            );
            decision.command = Some(Command::UndoRollout(UndoRollout {
                namespace: rollout.namespace.clone(),
                name: rollout.name.clone(),
                uid: rollout.uid.clone(),
                workload_ref: rollout.workload_ref.clone(),
                blamed,
                planned_target: target,
                dry_run: ctx.dry_run(),
            }));
        }
    }
    decision
}
