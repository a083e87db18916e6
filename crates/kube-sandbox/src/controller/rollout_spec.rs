//! Reading an Argo Rollout's spec (argoproj.io/v1alpha1), as the real controller interprets
//! it: defaults (`replicas` 1, `revisionHistoryLimit` 10, maxSurge/maxUnavailable 25%,
//! `abortScaleDownDelaySeconds` / `scaleDownDelaySeconds` 30 when they apply), the current
//! canary step and weight (`utils/replicaset/canary.go`), the pod-template and step hashes
//! (`utils/hash`, `conditions.ComputeStepHash`), pause durations (`RolloutPause.
//! DurationSeconds`) and template equality (`PodTemplateEqualIgnoreHash`). Nothing here
//! touches the store; validation is `rollout_validate.rs`.

use std::time::Duration;

use serde_json::{Value, json};

use super::revision as rev;
use crate::defaults;

pub const HASH_LABEL: &str = "rollouts-pod-template-hash";
pub const REVISION: &str = "rollout.argoproj.io/revision";
pub const REVISION_HISTORY: &str = "rollout.argoproj.io/revision-history";
pub const DESIRED_REPLICAS: &str = "rollout.argoproj.io/desired-replicas";
pub const WORKLOAD_GENERATION: &str = "rollout.argoproj.io/workload-generation";
pub const SCALE_DOWN_DEADLINE: &str = "scale-down-deadline";
pub const MANAGED_BY: &str = "argo-rollouts.argoproj.io/managed-by-rollouts";
pub const INSTANCE_ID: &str = "argo-rollouts.argoproj.io/controller-instance-id";
/// Rollout annotations never copied onto its ReplicaSets (`annotationsToSkip`).
pub const SKIP_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    "notified.notifications.argoproj.io",
];

pub fn int(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

pub fn text<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or_default()
}

pub fn flag(v: &Value, p: &str) -> bool {
    v.pointer(p).and_then(Value::as_bool) == Some(true)
}

/// `spec.replicas` (default 1), within int32 like the real field.
pub fn replicas(ro: &Value) -> i64 {
    ro.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .clamp(i64::from(i32::MIN), i64::from(i32::MAX))
}

pub fn is_canary(ro: &Value) -> bool {
    ro.pointer("/spec/strategy/canary")
        .is_some_and(Value::is_object)
}

pub fn is_blue_green(ro: &Value) -> bool {
    ro.pointer("/spec/strategy/blueGreen")
        .is_some_and(Value::is_object)
}

pub fn traffic_routed(ro: &Value) -> bool {
    ro.pointer("/spec/strategy/canary/trafficRouting")
        .is_some_and(Value::is_object)
}

pub fn steps(ro: &Value) -> &[Value] {
    ro.pointer("/spec/strategy/canary/steps")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

pub fn step_count(ro: &Value) -> i64 {
    steps(ro).len() as i64
}

/// `GetCurrentCanaryStep`: the step at `status.currentStepIndex` (0 if unset) and the index;
/// (None, None) without steps, (None, Some(i)) past the last step.
pub fn current_step(ro: &Value) -> (Option<&Value>, Option<i64>) {
    let st = steps(ro);
    if !is_canary(ro) || st.is_empty() {
        return (None, None);
    }
    let i = int(ro, "/status/currentStepIndex").max(0);
    (st.get(i as usize), Some(i))
}

pub fn max_weight(ro: &Value) -> i64 {
    ro.pointer("/spec/strategy/canary/trafficRouting/maxTrafficWeight")
        .and_then(Value::as_i64)
        .unwrap_or(100)
        .clamp(1, i64::from(i32::MAX))
}

/// `GetCurrentSetWeight`: 0 when aborted, the max past the last step, else the last
/// `setWeight` at or before the current step (0 if none).
pub fn current_set_weight(ro: &Value) -> i64 {
    if flag(ro, "/status/abort") {
        return 0;
    }
    let (step, idx) = current_step(ro);
    let (Some(_), Some(idx)) = (step, idx) else {
        return max_weight(ro);
    };
    steps(ro)[..=idx as usize]
        .iter()
        .rev()
        .find_map(|s| s.get("setWeight").and_then(Value::as_i64))
        .unwrap_or(0)
}

/// `UseSetCanaryScale`: the `setCanaryScale` in force (traffic-routed canaries only).
fn set_canary_scale(ro: &Value) -> Option<&Value> {
    if !traffic_routed(ro) || (flag(ro, "/status/abort") && abort_scale_down_delay(ro).is_some()) {
        return None;
    }
    let (_, Some(idx)) = current_step(ro) else {
        return None;
    };
    let idx = (idx as usize).min(steps(ro).len().saturating_sub(1));
    for s in steps(ro)[..=idx].iter().rev() {
        if let Some(scs) = s.get("setCanaryScale") {
            return (!flag(scs, "/matchTrafficWeight")).then_some(scs);
        }
    }
    None
}

/// `GetCanaryReplicasOrWeight`: an explicit canary replica count, or the desired weight.
pub fn canary_replicas_or_weight(ro: &Value) -> (Option<i64>, i64) {
    let stable = text(ro, "/status/stableRS");
    if flag(ro, "/status/promoteFull")
        || stable.is_empty()
        || text(ro, "/status/currentPodHash") == stable
    {
        return (None, max_weight(ro));
    }
    if let Some(scs) = set_canary_scale(ro) {
        if let Some(r) = scs.get("replicas").and_then(Value::as_i64) {
            return (Some(r), 0);
        }
        if let Some(w) = scs.get("weight").and_then(Value::as_i64) {
            return (None, w);
        }
    }
    (None, current_set_weight(ro))
}

/// `GetValueFromIntOrPercent` (the deprecated variant Argo uses: a string without `%` is
/// still read as a percentage).
fn int_or_percent(v: Option<&Value>, default: &str, total: i64, round_up: bool) -> i64 {
    match v {
        Some(Value::Number(n)) => n
            .as_i64()
            .unwrap_or(0)
            .clamp(0, total.max(0).saturating_mul(1000)),
        Some(Value::String(s)) => percent(s, total, round_up),
        _ => percent(default, total, round_up),
    }
}

fn percent(s: &str, total: i64, round_up: bool) -> i64 {
    let p: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
    let scaled = p.clamp(0, 100_000).saturating_mul(total);
    if round_up {
        scaled.saturating_add(99) / 100
    } else {
        scaled / 100
    }
}

/// `resolveFenceposts` for the canary strategy: (maxSurge, maxUnavailable).
pub fn surge_and_unavailable(ro: &Value) -> (i64, i64) {
    let n = replicas(ro);
    if n == 0 {
        return (0, 0);
    }
    let c = ro.pointer("/spec/strategy/canary");
    let surge = int_or_percent(c.and_then(|c| c.get("maxSurge")), "25", n, true);
    let unavailable = int_or_percent(c.and_then(|c| c.get("maxUnavailable")), "25", n, false);
    let unavailable = if surge == 0 && unavailable == 0 {
        1
    } else {
        unavailable
    };
    (surge, unavailable.min(n))
}

fn strategy_field(ro: &Value, field: &str) -> Option<i64> {
    let s = if is_blue_green(ro) {
        "blueGreen"
    } else {
        "canary"
    };
    ro.pointer(&format!("/spec/strategy/{s}/{field}"))
        .and_then(Value::as_i64)
}

/// `GetAbortScaleDownDelaySecondsOrDefault`: Some(delay) (30 s unless set; 0 for a basic
/// canary, which scales down at once), None when explicitly 0 ("leave it up").
pub fn abort_scale_down_delay(ro: &Value) -> Option<Duration> {
    if !is_blue_green(ro) && !traffic_routed(ro) {
        return Some(Duration::ZERO);
    }
    match strategy_field(ro, "abortScaleDownDelaySeconds") {
        Some(0) => None,
        Some(n) => Some(Duration::from_secs(n.clamp(0, i64::from(i32::MAX)) as u64)),
        None => Some(Duration::from_secs(30)),
    }
}

/// `GetScaleDownDelaySecondsOrDefault`: how long an old ReplicaSet stays up after a
/// blue-green switch or a traffic-routed promotion.
pub fn scale_down_delay(ro: &Value) -> Duration {
    if !is_blue_green(ro) && !traffic_routed(ro) {
        return Duration::ZERO;
    }
    let secs = strategy_field(ro, "scaleDownDelaySeconds").unwrap_or(30);
    Duration::from_secs(secs.clamp(0, i64::from(i32::MAX)) as u64)
}

/// `RolloutPause.DurationSeconds`: None without a duration; -1 if unparsable.
pub fn pause_seconds(step: &Value) -> Option<i64> {
    match step.pointer("/pause/duration")? {
        Value::Number(n) => Some(n.as_i64().unwrap_or(-1).clamp(-1, i64::from(i32::MAX))),
        Value::String(s) => Some(
            s.parse::<i64>()
                .ok()
                .or_else(|| go_duration(s).map(|d| d.as_secs().min(i32::MAX as u64) as i64))
                .unwrap_or(-1)
                .clamp(-1, i64::from(i32::MAX)),
        ),
        _ => Some(-1),
    }
}

/// Go's `time.ParseDuration` for the units Argo users write (`1h30m`, `10s`, `500ms`).
pub fn go_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += n * secs;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// `hash.ComputePodTemplateHash`: FNV-32a of the template as JSON, then of the collision
/// count as 8 little-endian bytes. The sandbox hashes canonical JSON, so names differ from a
/// real cluster's; like Go's `json.Marshal` it includes `metadata.creationTimestamp: null`,
/// which also keeps the hash apart from the Deployment controller's for the same template
/// (the real controllers hash differently, so a workloadRef Deployment's ReplicaSet and the
/// Rollout's do not collide).
pub fn pod_template_hash(template: &Value, collision_count: Option<i64>) -> String {
    let mut t = template.clone();
    if let Some(m) = t.as_object_mut() {
        let md = m.entry("metadata").or_insert_with(|| json!({}));
        if let Some(md) = md.as_object_mut() {
            md.entry("creationTimestamp").or_insert(Value::Null);
        }
    }
    match collision_count {
        Some(c) => {
            let mut b = [0u8; 8];
            b[..4].copy_from_slice(&(c as u32).to_le_bytes());
            rev::safe_hash(&t, &b)
        }
        None => rev::safe_hash(&t, &[]),
    }
}

/// `conditions.ComputeStepHash`: "" for blue-green, else a hash of the canary steps.
pub fn step_hash(ro: &Value) -> String {
    if !is_canary(ro) || is_blue_green(ro) {
        return String::new();
    }
    let st = ro
        .pointer("/spec/strategy/canary/steps")
        .cloned()
        .unwrap_or(Value::Null);
    rev::safe_hash(&st, &[])
}

/// Drop what Go's semantic equality treats as absent: nulls, empty maps, empty lists.
fn normalize(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Object(m) => {
            let m: serde_json::Map<String, Value> = m
                .iter()
                .filter_map(|(k, v)| normalize(v).map(|v| (k.clone(), v)))
                .collect();
            (!m.is_empty()).then_some(Value::Object(m))
        }
        Value::Array(a) if a.is_empty() => None,
        Value::Array(a) => Some(Value::Array(
            a.iter()
                .map(|e| normalize(e).unwrap_or(json!({})))
                .collect(),
        )),
        other => Some(other.clone()),
    }
}

fn comparable(t: &Value, default_pod_spec: bool) -> Value {
    let mut t = t.clone();
    if let Some(l) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove(HASH_LABEL);
    }
    if default_pod_spec && let Some(ps) = t.pointer_mut("/spec").and_then(Value::as_object_mut) {
        defaults::pod_spec(ps);
    }
    normalize(&t).unwrap_or(Value::Null)
}

/// `PodTemplateEqualIgnoreHash`: the live (ReplicaSet) template against the desired one,
/// ignoring the hash label, after pod defaulting of the desired one.
pub fn template_equal(live: &Value, desired: &Value) -> bool {
    comparable(live, false) == comparable(desired, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            pause_seconds(&json!({"pause": {"duration": "10s"}})),
            Some(10)
        );
        assert_eq!(
            pause_seconds(&json!({"pause": {"duration": "1h30m"}})),
            Some(5400)
        );
        assert_eq!(
            pause_seconds(&json!({"pause": {"duration": "20"}})),
            Some(20)
        );
        assert_eq!(pause_seconds(&json!({"pause": {"duration": 5}})), Some(5));
        assert_eq!(
            pause_seconds(&json!({"pause": {"duration": "x"}})),
            Some(-1)
        );
        assert_eq!(pause_seconds(&json!({"pause": {}})), None);
    }

    #[test]
    fn weights_follow_the_current_step() {
        let mut ro = json!({"spec": {"strategy": {"canary": {"steps": [
            {"setWeight": 20}, {"pause": {}}, {"setWeight": 50}
        ]}}}, "status": {"currentStepIndex": 1, "stableRS": "a", "currentPodHash": "b"}});
        assert_eq!(current_set_weight(&ro), 20);
        assert_eq!(canary_replicas_or_weight(&ro), (None, 20));
        ro["status"]["currentStepIndex"] = json!(3);
        assert_eq!(current_set_weight(&ro), 100);
        ro["status"]["abort"] = json!(true);
        assert_eq!(current_set_weight(&ro), 0);
        ro["status"]["stableRS"] = json!("b");
        assert_eq!(canary_replicas_or_weight(&ro), (None, 100));
    }

    #[test]
    fn fenceposts_default_to_25_percent() {
        let ro = json!({"spec": {"replicas": 4, "strategy": {"canary": {}}}});
        assert_eq!(surge_and_unavailable(&ro), (1, 1));
        let ro = json!({"spec": {"replicas": 1, "strategy": {"canary": {}}}});
        assert_eq!(surge_and_unavailable(&ro), (1, 0));
        let ro = json!({"spec": {"replicas": 3, "strategy": {"canary": {"maxSurge": 0, "maxUnavailable": 0}}}});
        assert_eq!(surge_and_unavailable(&ro), (0, 1));
    }

    #[test]
    fn templates_compare_after_defaulting() {
        let desired = json!({"metadata": {"labels": {"app": "w"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}});
        let mut live = desired.clone();
        live["metadata"]["labels"][HASH_LABEL] = json!("abc");
        defaults::pod_spec(live["spec"].as_object_mut().expect("object"));
        assert!(template_equal(&live, &desired));
        live["spec"]["containers"][0]["image"] = json!("i:2");
        assert!(!template_equal(&live, &desired));
    }
}
