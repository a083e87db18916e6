//! Decisions for traffic switches: a blue/green Service selector and Istio canary weights.

use serde_json::json;

use super::commands::weights_text;
use super::{
    Command, Context, Decision, Outcome, ResetWeights, RolloutRef, SwitchSelector, WorkloadRef,
};
use crate::core::traffic::{
    ServiceState, TrafficChange, TrafficKind, VirtualServiceState, reverted_weights,
    stable_and_canary, state_key,
};
use crate::core::undo::RevisionRef;

/// The change blamed, as a rollout-like reference for the incident record.
fn change_ref(name: String, key: String, change: &TrafficChange) -> RolloutRef {
    RolloutRef {
        revision: RevisionRef {
            name,
            uid: key,
            revision: 0,
            image: None,
        },
        since: change.at,
    }
}

pub(super) fn decide_service(
    ctx: &Context<'_>,
    svc: &ServiceState,
    change: &TrafficChange,
) -> Decision {
    let workload = WorkloadRef {
        kind: "Service".into(),
        namespace: svc.namespace.clone(),
        name: svc.name.clone(),
        uid: svc.uid.clone(),
    };
    let live = json!(svc.selector);
    let blamed_key = state_key(TrafficKind::Service, &svc.uid, &live);
    let what = format!(
        "the switch of its selector from {} to {}",
        change.from, change.to
    );
    let mut decision = Decision::skip(Outcome::NoRecentRollout, String::new());
    decision.workload = Some(workload.clone());
    decision.rollout = Some(change_ref(
        format!("selector {live}"),
        blamed_key.clone(),
        change,
    ));
    let Some(blame) = decision.unless_refused(ctx.blame(&workload, &what, change.at, &blamed_key))
    else {
        return decision;
    };
    decision.outcome = ctx.acting();
    decision.reason = format!("{blame}: switch the selector back to {}", change.from);
    decision.command = Some(Command::SwitchSelector(SwitchSelector {
        namespace: svc.namespace.clone(),
        name: svc.name.clone(),
        uid: svc.uid.clone(),
        blamed: live,
        back_to: change.from.clone(),
        blamed_key,
        target_key: state_key(TrafficKind::Service, &svc.uid, &change.from),
        dry_run: ctx.dry_run(),
    }));
    decision
}

pub(super) fn decide_virtual_service(
    ctx: &Context<'_>,
    vs: &VirtualServiceState,
    change: &TrafficChange,
) -> Decision {
    let workload = WorkloadRef {
        kind: "VirtualService".into(),
        namespace: vs.namespace.clone(),
        name: vs.name.clone(),
        uid: vs.uid.clone(),
    };
    let live = json!(vs.weights);
    let blamed_key = state_key(TrafficKind::VirtualService, &vs.uid, &live);
    let what = format!("the weight change to {}", weights_text(&vs.weights));
    let mut decision = Decision::skip(Outcome::NoRecentRollout, String::new());
    decision.workload = Some(workload.clone());
    decision.rollout = Some(change_ref(
        format!("weights {}", weights_text(&vs.weights)),
        blamed_key.clone(),
        change,
    ));
    let Some(blame) = decision.unless_refused(ctx.blame(&workload, &what, change.at, &blamed_key))
    else {
        return decision;
    };
    let Some((stable, canary)) = stable_and_canary(vs, change) else {
        decision.outcome = Outcome::NoHistory;
        decision.reason = format!(
            "{blame}, but rollbackd cannot tell the stable destination from the canary; set the rollbackd.io/stable and rollbackd.io/canary annotations"
        );
        return decision;
    };
    let target = reverted_weights(&vs.weights, &stable, &canary);
    if target == vs.weights {
        decision.outcome = Outcome::AlreadyAtTarget;
        decision.reason = format!("{blame}, but {stable} already has all the weight");
        return decision;
    }
    decision.outcome = ctx.acting();
    decision.reason = format!("{blame}: send 100% to stable {stable} and 0% to canary {canary}");
    decision.command = Some(Command::ResetWeights(ResetWeights {
        namespace: vs.namespace.clone(),
        name: vs.name.clone(),
        uid: vs.uid.clone(),
        api_version: vs.api_version.clone(),
        stable,
        canary,
        target_key: state_key(TrafficKind::VirtualService, &vs.uid, &json!(target)),
        blamed: vs.weights.clone(),
        target,
        blamed_key,
        dry_run: ctx.dry_run(),
    }));
    decision
}
