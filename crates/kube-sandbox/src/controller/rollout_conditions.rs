//! The conditions and phase of an Argo Rollout: `SetRolloutCondition` and friends
//! (`utils/conditions`, with its reasons and messages), `calculateRolloutConditions`
//! (`rollout/sync.go`: Healthy, Progressing, Available, Completed) and
//! `CalculateRolloutPhase` (`utils/rollout/rolloututil.go`: Healthy / Degraded /
//! Progressing / Paused and the message, e.g. `RolloutAborted: Rollout aborted update to
//! revision 2` or `CanaryPauseStep`).
//!
//! The progress deadline too: `Progressing` keeps the time of the last progress in its
//! `lastUpdateTime`; `spec.progressDeadlineSeconds` (default 600) later, with no progress,
//! no pause and no step that may take indefinitely, it becomes False with reason
//! `ProgressDeadlineExceeded` (`RolloutTimedOut`), and the phase Degraded. With
//! `spec.progressDeadlineAbort` the update is aborted instead (`evaluateProgressDeadlineAbort`).
//! A stuck Rollout is reconciled again when its deadline passes (`requeueStuckRollout`).

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::rollout::Ctx;
use super::rollout_rs::{event, hash_of, revision_of};
use super::rollout_spec::{
    SCALE_DOWN_DEADLINE, current_step, flag, int, is_blue_green, is_canary, replicas, step_count,
    text, traffic_routed,
};
use super::rollout_status::put;
use crate::store::{meta_str, now_rfc3339};

pub fn get_condition<'a>(conds: &'a [Value], ty: &str) -> Option<&'a Value> {
    conds.iter().find(|c| text(c, "/type") == ty)
}

pub fn conditions_of(st: &Value) -> Vec<Value> {
    st.get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

pub fn new_condition(ty: &str, status: &str, reason: &str, message: &str) -> Value {
    let now = now_rfc3339();
    json!({"type": ty, "status": status, "lastUpdateTime": now, "lastTransitionTime": now, "reason": reason, "message": message})
}

/// `SetRolloutCondition`: no change when status and reason are the same; keeps
/// `lastTransitionTime` when only the reason changes. Returns whether it changed.
pub fn set_condition(conds: &mut Vec<Value>, mut c: Value) -> bool {
    let ty = text(&c, "/type").to_string();
    if let Some(cur) = get_condition(conds, &ty) {
        if text(cur, "/status") == text(&c, "/status")
            && text(cur, "/reason") == text(&c, "/reason")
        {
            return false;
        }
        if text(cur, "/status") == text(&c, "/status") {
            c["lastTransitionTime"] = cur["lastTransitionTime"].clone();
        }
    }
    conds.retain(|x| text(x, "/type") != ty);
    conds.push(c);
    true
}

pub fn remove_condition(conds: &mut Vec<Value>, ty: &str) {
    conds.retain(|x| text(x, "/type") != ty);
}

/// `CalculateRolloutPhase`.
pub fn phase(ro: &Value, st: &Value) -> (&'static str, String) {
    for c in conditions_of(st) {
        if text(&c, "/type") == "InvalidSpec" {
            return ("Degraded", format!("InvalidSpec: {}", text(&c, "/message")));
        }
        let reason = text(&c, "/reason");
        if reason == "RolloutAborted" || reason == "ProgressDeadlineExceeded" {
            return ("Degraded", format!("{reason}: {}", text(&c, "/message")));
        }
    }
    if flag(ro, "/spec/paused") {
        return ("Paused", "manually paused".into());
    }
    if let Some(p) = st
        .get("pauseConditions")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    {
        return ("Paused", text(p, "/reason").to_string());
    }
    let updated = int(st, "/updatedReplicas");
    if updated < replicas(ro) {
        return ("Progressing", "more replicas need to be updated".into());
    }
    if int(st, "/availableReplicas") < updated {
        return (
            "Progressing",
            "updated replicas are still becoming available".into(),
        );
    }
    let stable = text(st, "/stableRS");
    let promoted = !stable.is_empty() && stable == text(st, "/currentPodHash");
    if is_blue_green(ro) {
        let active = text(st, "/blueGreen/activeSelector");
        if active.is_empty() || active != text(st, "/currentPodHash") {
            return ("Progressing", "active service cutover pending".into());
        }
        if !promoted {
            return (
                "Progressing",
                "waiting for post-promotion verification to complete".into(),
            );
        }
    } else if is_canary(ro) {
        if !traffic_routed(ro) && int(st, "/replicas") > updated {
            return ("Progressing", "old replicas are pending termination".into());
        }
        if !promoted {
            return ("Progressing", "waiting for all steps to complete".into());
        }
    }
    ("Healthy", String::new())
}

/// `conditions.RolloutHealthy`.
fn healthy(ro: &Value, st: &Value) -> bool {
    let n = replicas(ro);
    let mut done = true;
    if is_blue_green(ro) {
        let cur = text(st, "/currentPodHash");
        let preview = text(ro, "/spec/strategy/blueGreen/previewService").is_empty()
            || text(st, "/blueGreen/previewSelector") == cur;
        done = text(st, "/blueGreen/activeSelector") == cur && preview;
    }
    if is_canary(ro) {
        let steps_done = step_count(ro) == 0
            || st.get("currentStepIndex").is_none()
            || int(st, "/currentStepIndex") == step_count(ro);
        let stable = text(st, "/stableRS");
        done = steps_done
            && !stable.is_empty()
            && stable == text(st, "/currentPodHash")
            && int(st, "/replicas") == n;
    }
    int(st, "/updatedReplicas") == n
        && int(st, "/availableReplicas") == n
        && text(ro, "/status/observedGeneration") == int(ro, "/metadata/generation").to_string()
        && done
}

/// `conditions.RolloutProgressing`: did anything move since the stored status?
fn progressing(ro: &Value, st: &Value) -> bool {
    let old = ro.get("status").cloned().unwrap_or(json!({}));
    let mut strategy = false;
    if is_blue_green(ro) {
        strategy = text(&old, "/blueGreen/activeSelector") != text(st, "/blueGreen/activeSelector")
            || text(&old, "/blueGreen/previewSelector") != text(st, "/blueGreen/previewSelector");
    }
    if is_canary(ro) {
        let step_moved = old.get("currentStepIndex").is_some()
            && st.get("currentStepIndex").is_some()
            && int(&old, "/currentStepIndex") != int(st, "/currentStepIndex");
        strategy = text(&old, "/stableRS") != text(st, "/stableRS")
            || step_moved
            || text(&old, "/currentStepHash") != text(st, "/currentStepHash");
    }
    let old_old = int(&old, "/replicas") - int(&old, "/updatedReplicas");
    let new_old = int(st, "/replicas") - int(st, "/updatedReplicas");
    int(st, "/updatedReplicas") != int(&old, "/updatedReplicas")
        || new_old < old_old
        || int(st, "/readyReplicas") > int(&old, "/readyReplicas")
        || int(st, "/availableReplicas") > int(&old, "/availableReplicas")
        || strategy
}

/// `TimedOutReason`.
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";

/// `GetProgressDeadlineSecondsOrDefault`.
fn progress_deadline(ro: &Value) -> Duration {
    let secs = ro
        .pointer("/spec/progressDeadlineSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(600);
    Duration::from_secs(secs.clamp(0, i64::from(i32::MAX)) as u64)
}

/// `isIndefiniteStep`: at an experiment, analysis or pause step, or with the `Paused`
/// condition True (a blue-green pause): lack of progress does not count then.
fn indefinite_step(ro: &Value) -> bool {
    let (step, _) = current_step(ro);
    if step.is_some_and(|s| {
        ["experiment", "analysis", "pause"]
            .iter()
            .any(|k| s.get(k).is_some())
    }) {
        return true;
    }
    let conds = conditions_of(ro.get("status").unwrap_or(&Value::Null));
    get_condition(&conds, "Paused").is_some_and(|c| text(c, "/status") == "True")
}

/// `isWaitingForReplicaSetScaleDown`: an old ReplicaSet still waits for its
/// `scale-down-deadline`.
fn waiting_for_scale_down(ctx: &Ctx) -> bool {
    ctx.others
        .iter()
        .any(|rs| !text(rs, &format!("/metadata/annotations/{SCALE_DOWN_DEADLINE}")).is_empty())
}

/// Time left before the `Progressing` condition of `st` is `progressDeadlineSeconds` old
/// (zero once it is), None when there is no condition to count from (none, or one of
/// reason `RolloutAborted` or `RolloutPaused`).
fn deadline_left(ro: &Value, st: &Value) -> Option<Duration> {
    let conds = conditions_of(st);
    let c = get_condition(&conds, "Progressing")?;
    let reason = text(c, "/reason");
    if reason == "RolloutAborted" || reason == "RolloutPaused" {
        return None;
    }
    if reason == TIMED_OUT {
        return Some(Duration::ZERO);
    }
    let from = text(c, "/lastUpdateTime").parse::<jiff::Timestamp>().ok()?;
    let end = from.as_millisecond() + progress_deadline(ro).as_millis() as i64;
    let left = end - jiff::Timestamp::now().as_millisecond();
    Some(Duration::from_millis(left.max(0) as u64))
}

/// `RolloutTimedOut`: the `Progressing` condition of `st` already says so, or its
/// `lastUpdateTime` is more than `progressDeadlineSeconds` ago.
fn timed_out(ro: &Value, st: &Value) -> bool {
    deadline_left(ro, st).is_some_and(|left| left.is_zero())
}

/// `RolloutTimeOutMessage` / `ReplicaSetTimeOutMessage`.
fn timeout_message(ctx: &Ctx) -> String {
    match ctx.new_rs.as_ref().and_then(|rs| meta_str(rs, "name")) {
        Some(rs) => format!("ReplicaSet \"{rs}\" has timed out progressing."),
        None => format!(
            "Rollout \"{}\" has timed out progressing.",
            meta_str(&ctx.ro, "name").unwrap_or_default()
        ),
    }
}

/// `evaluateProgressDeadlineAbort`: with `spec.progressDeadlineAbort`, an update in flight
/// that made no progress in this reconcile and whose stored `Progressing` condition has
/// timed out is aborted (through the pause context, so this very status write carries
/// `abort: true`), with a `RolloutAborted` Warning naming the timeout.
pub fn evaluate_deadline_abort(ctx: &mut Ctx, st: &Map<String, Value>) {
    let ro = &ctx.ro;
    if !flag(ro, "/spec/progressDeadlineAbort") || ctx.pause.is_aborted(ro) {
        return;
    }
    let view = Value::Object(st.clone());
    let stable = text(&view, "/stableRS");
    if !stable.is_empty() && stable == text(&view, "/currentPodHash") {
        return;
    }
    if progressing(ro, &view) || indefinite_step(ro) || waiting_for_scale_down(ctx) {
        return;
    }
    if !timed_out(ro, &ctx.stored) {
        return;
    }
    let msg = timeout_message(ctx);
    event(ctx.store, ro, "Warning", "RolloutAborted", &msg);
    ctx.pause.add_abort = true;
    ctx.pause.abort_message = Some(msg);
}

/// `requeueStuckRollout`: reconcile again when the progress deadline passes, unless the
/// Rollout is healthy, paused, aborted, at an indefinite step or already timed out.
pub fn requeue_stuck(ctx: &mut Ctx, st: &Map<String, Value>) {
    let ro = &ctx.ro;
    let view = Value::Object(st.clone());
    let paused = view.get("pauseConditions").is_some() || flag(ro, "/spec/paused");
    let conds = conditions_of(&view);
    let timed_out_already =
        get_condition(&conds, "Progressing").is_some_and(|c| text(c, "/reason") == TIMED_OUT);
    if healthy(ro, &view)
        || timed_out_already
        || paused
        || flag(&view, "/abort")
        || indefinite_step(ro)
    {
        return;
    }
    let Some(left) = deadline_left(ro, &view) else {
        return;
    };
    // Upstream adds a second against clock skew, or requeues at once under a second.
    let second = Duration::from_secs(1);
    ctx.wake_in(if left < second { left } else { left + second });
}

/// `calculateRolloutConditions`.
pub fn calculate_conditions(ctx: &Ctx, st: &mut Map<String, Value>) {
    let ro = &ctx.ro;
    let view = Value::Object(st.clone());
    let paused = st.get("pauseConditions").is_some() || flag(ro, "/spec/paused");
    let aborted = ctx.pause.is_aborted(ro);
    let mut conds = conditions_of(&view);
    let stored_conds = conditions_of(ro.get("status").unwrap_or(&Value::Null));
    let mut became_unhealthy = false;
    if !paused && healthy(ro, &view) {
        set_condition(
            &mut conds,
            new_condition("Healthy", "True", "RolloutHealthy", "Rollout is healthy"),
        );
    } else if get_condition(&stored_conds, "Healthy").is_some() {
        became_unhealthy = set_condition(
            &mut conds,
            new_condition(
                "Healthy",
                "False",
                "RolloutHealthy",
                "Rollout is not healthy",
            ),
        );
    }
    let rs_name = ctx
        .new_rs
        .as_ref()
        .and_then(|rs| meta_str(rs, "name"))
        .unwrap_or_default()
        .to_string();
    if aborted {
        let mut msg = format!("Rollout aborted update to revision {}", revision_of(ro));
        if let Some(why) = &ctx.pause.abort_message {
            msg = format!("{msg}: {why}");
        }
        if set_condition(
            &mut conds,
            new_condition("Progressing", "False", "RolloutAborted", &msg),
        ) {
            event(ctx.store, ro, "Warning", "RolloutAborted", &msg);
        }
    } else if healthy(ro, &view) {
        let msg = format!("ReplicaSet \"{rs_name}\" has successfully progressed.");
        set_condition(
            &mut conds,
            new_condition("Progressing", "True", "NewReplicaSetAvailable", &msg),
        );
    } else if progressing(ro, &view) || became_unhealthy {
        let promoted = text(&view, "/stableRS") == text(&view, "/currentPodHash");
        let (reason, msg) = if promoted && became_unhealthy {
            (
                "ReplicaSetNotAvailable",
                "Rollout does not have minimum availability".to_string(),
            )
        } else {
            (
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{rs_name}\" is progressing."),
            )
        };
        let mut c = new_condition("Progressing", "True", reason, &msg);
        if let Some(cur) = get_condition(&stored_conds, "Progressing") {
            if text(cur, "/status") == "True" {
                c["lastTransitionTime"] = cur["lastTransitionTime"].clone();
            }
            remove_condition(&mut conds, "Progressing");
        }
        set_condition(&mut conds, c);
    } else if !indefinite_step(ro)
        && !waiting_for_scale_down(ctx)
        && timed_out(ro, &json!({"conditions": conds}))
    {
        let msg = timeout_message(ctx);
        set_condition(
            &mut conds,
            new_condition("Progressing", "False", TIMED_OUT, &msg),
        );
    }
    let n = replicas(ro);
    let available = if is_blue_green(ro) {
        let active = text(&view, "/blueGreen/activeSelector");
        ctx.all.iter().any(|rs| {
            !active.is_empty()
                && hash_of(rs) == active
                && int(rs, "/spec/replicas") == n
                && int(rs, "/status/availableReplicas") == n
        })
    } else {
        ctx.all
            .iter()
            .map(|rs| int(rs, "/status/availableReplicas"))
            .sum::<i64>()
            >= n
    };
    let c = if available {
        new_condition(
            "Available",
            "True",
            "AvailableReason",
            "Rollout has minimum availability",
        )
    } else {
        new_condition(
            "Available",
            "False",
            "AvailableReason",
            "Rollout does not have minimum availability",
        )
    };
    set_condition(&mut conds, c);
    let stable = text(&view, "/stableRS");
    let completed = !stable.is_empty() && stable == text(&view, "/currentPodHash");
    let status = if completed { "True" } else { "False" };
    let c = new_condition("Completed", status, "RolloutCompleted", "RolloutCompleted");
    if set_condition(&mut conds, c) && !completed {
        let msg = format!(
            "Rollout not completed, started update to revision {} ({})",
            revision_of(ro),
            text(&view, "/currentPodHash")
        );
        event(ctx.store, ro, "Normal", "RolloutNotCompleted", &msg);
    }
    put(st, "conditions", json!(conds));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aborted_phase_and_message() {
        let ro = json!({"spec": {"replicas": 1, "strategy": {"canary": {}}}});
        let st = json!({"conditions": [{"type": "Progressing", "status": "False", "reason": "RolloutAborted", "message": "Rollout aborted update to revision 2"}]});
        assert_eq!(
            phase(&ro, &st),
            (
                "Degraded",
                "RolloutAborted: Rollout aborted update to revision 2".to_string()
            )
        );
        let st = json!({"pauseConditions": [{"reason": "CanaryPauseStep", "startTime": "x"}]});
        assert_eq!(phase(&ro, &st), ("Paused", "CanaryPauseStep".to_string()));
        let st = json!({"updatedReplicas": 1, "availableReplicas": 1, "replicas": 1, "stableRS": "a", "currentPodHash": "a"});
        assert_eq!(phase(&ro, &st), ("Healthy", String::new()));
    }

    #[test]
    fn the_deadline_counts_from_the_last_progress() {
        let ro = json!({"spec": {"progressDeadlineSeconds": 5}});
        let ago = |secs: i64| {
            let t = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(secs);
            t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
        };
        let st = |reason: &str, at: String| json!({"conditions": [{"type": "Progressing", "status": "True", "reason": reason, "lastUpdateTime": at}]});
        assert!(timed_out(&ro, &st("ReplicaSetUpdated", ago(10))));
        assert!(!timed_out(&ro, &st("ReplicaSetUpdated", ago(1))));
        assert!(!timed_out(&ro, &st("RolloutPaused", ago(10))));
        assert!(!timed_out(&ro, &st("RolloutAborted", ago(10))));
        assert!(timed_out(&ro, &st(TIMED_OUT, ago(0))));
        assert!(
            !timed_out(&ro, &json!({})),
            "no condition, no base to count from"
        );
        let default = json!({"spec": {}});
        assert!(!timed_out(&default, &st("ReplicaSetUpdated", ago(599))));
        assert!(timed_out(&default, &st("ReplicaSetUpdated", ago(602))));
    }
}
