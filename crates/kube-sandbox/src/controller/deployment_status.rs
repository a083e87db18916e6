//! The Deployment status and its conditions, computed the way kube-controller-manager's
//! Deployment controller does (`pkg/controller/deployment/progress.go`, `sync.go`
//! `calculateStatus`, `util/deployment_util.go`). Pure functions of the Deployment, its
//! ReplicaSets and the current time: no store access.
//!
//! A condition is a JSON object `{type, status, lastUpdateTime, lastTransitionTime, reason,
//! message}`; conditions live in `status.conditions` in the order the controller last set
//! them (setting one moves it to the end, as `SetDeploymentCondition` does).

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::objects::{counts, int};
use super::revision as rev;

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

pub fn replicas(dep: &Value) -> i64 {
    dep.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

/// `util.HasProgressDeadline`: set and not MaxInt32.
pub fn progress_deadline(dep: &Value) -> Option<i64> {
    dep.pointer("/spec/progressDeadlineSeconds")
        .and_then(Value::as_i64)
        .filter(|s| *s != i64::from(i32::MAX))
}

/// `util.NewDeploymentCondition`: both times now.
pub fn new_condition(ty: &str, status: &str, reason: &str, message: &str, now: &str) -> Value {
    json!({"type": ty, "status": status, "lastUpdateTime": now, "lastTransitionTime": now,
           "reason": reason, "message": message})
}

/// `util.GetDeploymentCondition` on a status object.
pub fn condition<'a>(status: &'a Value, ty: &str) -> Option<&'a Value> {
    status
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| text(c, "type") == Some(ty))
}

fn conditions_mut(status: &mut Value) -> &mut Vec<Value> {
    if !status.is_object() {
        *status = json!({});
    }
    let st = status.as_object_mut().expect("made an object above");
    let e = st.entry("conditions").or_insert_with(|| json!([]));
    if !e.is_array() {
        *e = json!([]);
    }
    e.as_array_mut().expect("made an array above")
}

/// `util.RemoveDeploymentCondition`.
pub fn remove_condition(status: &mut Value, ty: &str) {
    conditions_mut(status).retain(|c| text(c, "type") != Some(ty));
    if conditions_mut(status).is_empty()
        && let Some(st) = status.as_object_mut()
    {
        st.remove("conditions");
    }
}

/// `util.SetDeploymentCondition`: nothing changes when the status and reason are the same
/// (even if the message differs); otherwise the condition is replaced and moved to the end,
/// keeping `lastTransitionTime` if its status did not change.
pub fn set_condition(status: &mut Value, mut cond: Value) {
    let ty = text(&cond, "type").unwrap_or_default().to_string();
    if let Some(cur) = condition(status, &ty) {
        if text(cur, "status") == text(&cond, "status")
            && text(cur, "reason") == text(&cond, "reason")
        {
            return;
        }
        if text(cur, "status") == text(&cond, "status") {
            cond["lastTransitionTime"] = cur["lastTransitionTime"].clone();
        }
    }
    let conds = conditions_mut(status);
    conds.retain(|c| text(c, "type") != Some(ty.as_str()));
    conds.push(cond);
}

/// `calculateStatus`: counts from the ReplicaSets, the conditions copied from the current
/// status, and `Available` set from `availableReplicas >= replicas - maxUnavailable`.
pub fn calculate(all: &[Value], new_rs: Option<&Value>, dep: &Value, now: &str) -> Value {
    let sum = |p: &str| all.iter().map(|rs| int(rs, p)).sum::<i64>();
    let available = sum("/status/availableReplicas");
    let total_spec = sum("/spec/replicas");
    let mut st = counts(&[
        ("replicas", sum("/status/replicas")),
        (
            "updatedReplicas",
            new_rs.map(|rs| int(rs, "/status/replicas")).unwrap_or(0),
        ),
        ("readyReplicas", sum("/status/readyReplicas")),
        ("availableReplicas", available),
        ("unavailableReplicas", (total_spec - available).max(0)),
    ]);
    st.insert(
        "observedGeneration".into(),
        json!(int(dep, "/metadata/generation")),
    );
    if let Some(c) = dep.pointer("/status/collisionCount") {
        st.insert("collisionCount".into(), c.clone());
    }
    if let Some(c) = dep.pointer("/status/conditions").filter(|c| c.is_array()) {
        st.insert("conditions".into(), c.clone());
    }
    let mut st = Value::Object(st);
    let want = replicas(dep);
    let cond = if available >= want - rev::max_unavailable(dep, want) {
        new_condition(
            AVAILABLE,
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            now,
        )
    } else {
        new_condition(
            AVAILABLE,
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            now,
        )
    };
    set_condition(&mut st, cond);
    st
}

/// `util.DeploymentComplete`.
pub fn complete(dep: &Value, st: &Value) -> bool {
    let want = replicas(dep);
    int(st, "/updatedReplicas") == want
        && int(st, "/replicas") == want
        && int(st, "/availableReplicas") == want
        && int(st, "/observedGeneration") >= int(dep, "/metadata/generation")
}

/// `util.DeploymentProgressing`: more updated, fewer old, more ready or more available
/// replicas than the Deployment's current status says.
pub fn progressing(dep: &Value, st: &Value) -> bool {
    let old = dep.get("status").cloned().unwrap_or(json!({}));
    let old_old = int(&old, "/replicas") - int(&old, "/updatedReplicas");
    let new_old = int(st, "/replicas") - int(st, "/updatedReplicas");
    int(st, "/updatedReplicas") > int(&old, "/updatedReplicas")
        || new_old < old_old
        || int(st, "/readyReplicas") > int(&old, "/readyReplicas")
        || int(st, "/availableReplicas") > int(&old, "/availableReplicas")
}

fn parse_time(c: &Value, key: &str) -> Option<jiff::Timestamp> {
    text(c, key)?.parse().ok()
}

/// `util.DeploymentTimedOut`: the `Progressing` condition of `st` was last updated more than
/// `progressDeadlineSeconds` ago (never once it says `NewReplicaSetAvailable`; always once it
/// says `ProgressDeadlineExceeded`).
pub fn timed_out(dep: &Value, st: &Value, now: jiff::Timestamp) -> bool {
    let Some(deadline) = progress_deadline(dep) else {
        return false;
    };
    let Some(c) = condition(st, PROGRESSING) else {
        return false;
    };
    match text(c, "reason") {
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => parse_time(c, "lastUpdateTime")
            .and_then(|from| {
                from.checked_add(jiff::SignedDuration::from_secs(deadline))
                    .ok()
            })
            .is_some_and(|end| end < now),
    }
}

/// `syncRolloutStatus` without the write: the new status, with `Progressing` following
/// the rules of a rollout in progress (complete, progressing, or timed out).
pub fn rollout_status(all: &[Value], new_rs: Option<&Value>, dep: &Value) -> Value {
    let now_ts = jiff::Timestamp::now();
    let now = now_ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mut st = calculate(all, new_rs, dep, &now);
    if progress_deadline(dep).is_none() {
        remove_condition(&mut st, PROGRESSING);
        return st;
    }
    let empty = json!({});
    let current = condition(dep.get("status").unwrap_or(&empty), PROGRESSING).cloned();
    let is_complete = int(&st, "/replicas") == int(&st, "/updatedReplicas")
        && current.as_ref().and_then(|c| text(c, "reason")) == Some(NEW_RS_AVAILABLE);
    if is_complete {
        return st;
    }
    let rs_name = new_rs.and_then(|rs| rs.pointer("/metadata/name").and_then(Value::as_str));
    let name = dep
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let subject = match rs_name {
        Some(n) => format!("ReplicaSet \"{n}\""),
        None => format!("Deployment \"{name}\""),
    };
    if complete(dep, &st) {
        let msg = format!("{subject} has successfully progressed.");
        set_condition(
            &mut st,
            new_condition(PROGRESSING, "True", NEW_RS_AVAILABLE, &msg, &now),
        );
    } else if progressing(dep, &st) {
        // Progress refreshes lastUpdateTime even when the reason stays the same.
        let msg = format!("{subject} is progressing.");
        let mut cond = new_condition(PROGRESSING, "True", RS_UPDATED, &msg, &now);
        if let Some(cur) = &current {
            if text(cur, "status") == Some("True") {
                cond["lastTransitionTime"] = cur["lastTransitionTime"].clone();
            }
            remove_condition(&mut st, PROGRESSING);
        }
        set_condition(&mut st, cond);
    } else if timed_out(dep, &st, now_ts) {
        let msg = format!("{subject} has timed out progressing.");
        set_condition(
            &mut st,
            new_condition(PROGRESSING, "False", TIMED_OUT, &msg, &now),
        );
    }
    st
}

/// `requeueStuckDeployment`: when to look again for a timeout, if the rollout is neither
/// complete nor timed out: one second after the deadline passes, as upstream adds. Within
/// the last second upstream requeues at once, rate-limited, until it passes; here the
/// check is simply made just after it.
pub fn stuck_requeue(dep: &Value, st: &Value) -> Option<Duration> {
    let deadline = progress_deadline(dep)?;
    let c = condition(dep.get("status")?, PROGRESSING)?;
    if complete(dep, st) || text(c, "reason") == Some(TIMED_OUT) {
        return None;
    }
    let from = parse_time(c, "lastUpdateTime")?;
    let end = from
        .checked_add(jiff::SignedDuration::from_secs(deadline))
        .ok()?;
    let after = end.duration_since(jiff::Timestamp::now());
    if after < jiff::SignedDuration::from_secs(1) {
        let left = Duration::try_from(after).unwrap_or_default();
        return Some(left + Duration::from_millis(10));
    }
    Some(Duration::try_from(after).ok()? + Duration::from_secs(1))
}

/// An empty status map, for Deployments that have none yet.
pub fn empty() -> Value {
    Value::Object(Map::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(status: Value) -> Value {
        json!({"metadata": {"name": "d", "generation": 2},
               "spec": {"replicas": 2, "progressDeadlineSeconds": 5},
               "status": status})
    }

    #[test]
    fn same_status_and_reason_keeps_the_condition_whole() {
        let mut st = json!({"conditions": [new_condition("Progressing", "True", "A", "m1", "t1")]});
        set_condition(
            &mut st,
            new_condition("Progressing", "True", "A", "m2", "t2"),
        );
        assert_eq!(st["conditions"][0]["message"], json!("m1"));
        set_condition(
            &mut st,
            new_condition("Progressing", "True", "B", "m3", "t3"),
        );
        assert_eq!(st["conditions"][0]["lastTransitionTime"], json!("t1"));
        assert_eq!(st["conditions"][0]["lastUpdateTime"], json!("t3"));
        set_condition(
            &mut st,
            new_condition("Progressing", "False", "C", "m4", "t4"),
        );
        assert_eq!(st["conditions"][0]["lastTransitionTime"], json!("t4"));
    }

    #[test]
    fn progress_is_more_updated_ready_or_available_or_fewer_old() {
        let d = dep(json!({"replicas": 2, "updatedReplicas": 1}));
        assert!(!progressing(
            &d,
            &json!({"replicas": 2, "updatedReplicas": 1})
        ));
        assert!(progressing(
            &d,
            &json!({"replicas": 1, "updatedReplicas": 1})
        ));
        assert!(progressing(
            &d,
            &json!({"replicas": 2, "updatedReplicas": 2})
        ));
        assert!(progressing(
            &d,
            &json!({"replicas": 2, "updatedReplicas": 1, "readyReplicas": 1})
        ));
    }

    #[test]
    fn times_out_after_the_deadline_from_the_last_update() {
        let now: jiff::Timestamp = "2026-01-01T00:00:10Z".parse().unwrap();
        let with = |reason: &str, at: &str| {
            json!({"conditions": [{"type": "Progressing", "status": "True", "reason": reason,
                                   "lastUpdateTime": at, "lastTransitionTime": at}]})
        };
        let d = dep(json!({}));
        assert!(timed_out(
            &d,
            &with(RS_UPDATED, "2026-01-01T00:00:04Z"),
            now
        ));
        assert!(!timed_out(
            &d,
            &with(RS_UPDATED, "2026-01-01T00:00:05Z"),
            now
        ));
        assert!(!timed_out(
            &d,
            &with(NEW_RS_AVAILABLE, "2026-01-01T00:00:00Z"),
            now
        ));
        assert!(timed_out(&d, &with(TIMED_OUT, "2026-01-01T00:00:09Z"), now));
    }
}
