//! Deployment-controller helpers that do not touch the store: the pod-template hash,
//! template equality ignoring `pod-template-hash`, revision annotations and the
//! max-surge / max-unavailable arithmetic, following the real controller's rules (see the README).

use serde_json::{Map, Value, json};

pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Annotations the controller never copies from a Deployment to its ReplicaSets.
pub const SKIP_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// The real controller's hash alphabet (no vowels, no confusable characters).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn fnv1a32(data: &[u8], mut h: u32) -> u32 {
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// JSON with object keys sorted, so the hash does not depend on a client's key order.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            out.push('{');
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                canonical(&m[*k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(e, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// `pod-template-hash`: FNV-32a of the template (canonical JSON here, where the real
/// controller hashes a dump of the Go struct), then of the collision count as 4
/// little-endian bytes if set, and the decimal digits of the sum mapped onto [`ALPHANUMS`].
pub fn pod_template_hash(template: &Value, collision_count: Option<u32>) -> String {
    let mut s = String::new();
    canonical(template, &mut s);
    let mut h = fnv1a32(s.as_bytes(), 0x811c_9dc5);
    if let Some(c) = collision_count {
        h = fnv1a32(&c.to_le_bytes(), h);
    }
    h.to_string()
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// FNV-32a of the canonical JSON of `v`, then of `extra`, with the decimal digits mapped
/// onto [`ALPHANUMS`] (`rand.SafeEncodeString`): the Argo Rollouts controller's pod-template
/// and step hashes are computed this way.
pub fn safe_hash(v: &Value, extra: &[u8]) -> String {
    let mut s = String::new();
    canonical(v, &mut s);
    let h = fnv1a32(extra, fnv1a32(s.as_bytes(), 0x811c_9dc5));
    h.to_string()
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

fn without_hash(t: &Value) -> Value {
    let mut t = t.clone();
    if let Some(l) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove(HASH_LABEL);
        if l.is_empty()
            && let Some(md) = t.pointer_mut("/metadata").and_then(Value::as_object_mut)
        {
            md.remove("labels");
        }
    }
    t
}

/// Templates equal ignoring the `pod-template-hash` label (the controller's
/// `EqualIgnoreHash`, also what `kubectl rollout undo` compares).
pub fn equal_ignore_hash(a: &Value, b: &Value) -> bool {
    without_hash(a) == without_hash(b)
}

pub fn revision_of(o: &Value) -> i64 {
    o.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Copy the Deployment's annotations (minus the skip list) onto a ReplicaSet's.
pub fn copy_annotations(dep: &Value, rs_ann: &mut Map<String, Value>) {
    if let Some(a) = dep
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        for (k, v) in a {
            if !SKIP_ANNOTATIONS.contains(&k.as_str()) {
                rs_ann.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Give a reused ReplicaSet `new_rev` if its revision is lower, remembering the old number
/// in `revision-history` (comma-separated, capped at `limit_chars` like the controller's
/// default of 2000).
pub fn bump_revision(ann: &mut Map<String, Value>, new_rev: i64) {
    let limit_chars = 2000;
    let old = ann
        .get(REVISION)
        .and_then(Value::as_str)
        .map(str::to_string);
    let old_n: i64 = old.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0);
    if old_n >= new_rev {
        return;
    }
    ann.insert(REVISION.into(), json!(new_rev.to_string()));
    let Some(old) = old else { return };
    let hist = ann
        .get(REVISION_HISTORY)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if hist.is_empty() {
        ann.insert(REVISION_HISTORY.into(), json!(old));
        return;
    }
    let mut parts: Vec<&str> = hist.split(',').collect();
    let mut total = hist.len() + old.len() + 1;
    while total > limit_chars && !parts.is_empty() {
        total -= parts[0].len() + 1;
        parts.remove(0);
    }
    if total <= limit_chars {
        parts.push(&old);
        ann.insert(REVISION_HISTORY.into(), json!(parts.join(",")));
    }
}

/// An int-or-string (`3`, `"3"`, `"25%"`) scaled against `total`, percentages rounded up or
/// down (`intstr.GetScaledValueFromIntOrPercent`).
fn scaled(v: Option<&Value>, total: i64, round_up: bool) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(p) if round_up => (total * p + 99) / 100,
            Some(p) => total * p / 100,
            None => s.parse().unwrap_or(0),
        },
        _ => 0,
    }
}

/// `(maxSurge, maxUnavailable)` of a RollingUpdate Deployment for `replicas`: surge rounds
/// up, unavailability down, and when both come to 0 unavailability is 1
/// (`deploymentutil.ResolveFenceposts`). Fields left out default to 25% as the API does.
pub fn fenceposts(dep: &Value, replicas: i64) -> (i64, i64) {
    let ru = dep.pointer("/spec/strategy/rollingUpdate");
    let quarter = json!("25%");
    let surge = scaled(
        Some(ru.and_then(|r| r.get("maxSurge")).unwrap_or(&quarter)),
        replicas,
        true,
    );
    let unavailable = scaled(
        Some(ru.and_then(|r| r.get("maxUnavailable")).unwrap_or(&quarter)),
        replicas,
        false,
    );
    if surge == 0 && unavailable == 0 {
        return (0, 1);
    }
    (surge, unavailable)
}

fn recreate(dep: &Value) -> bool {
    dep.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("Recreate")
}

/// `maxSurge` of a Deployment for `replicas` (`deploymentutil.MaxSurge`; Recreate: 0).
pub fn max_surge(dep: &Value, replicas: i64) -> i64 {
    if recreate(dep) {
        return 0;
    }
    fenceposts(dep, replicas).0
}

/// `maxUnavailable` of a Deployment for `replicas`, at most `replicas`
/// (`deploymentutil.MaxUnavailable`; Recreate or no replicas: 0).
pub fn max_unavailable(dep: &Value, replicas: i64) -> i64 {
    if recreate(dep) || replicas == 0 {
        return 0;
    }
    fenceposts(dep, replicas).1.min(replicas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_uses_the_alphabet() {
        let t = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "n", "image": "i"}]}});
        let reordered = json!({"spec": {"containers": [{"image": "i", "name": "n"}]}, "metadata": {"labels": {"app": "web"}}});
        let h = pod_template_hash(&t, None);
        assert_eq!(h, pod_template_hash(&reordered, None));
        assert_ne!(h, pod_template_hash(&t, Some(1)));
        assert!(h.bytes().all(|b| ALPHANUMS.contains(&b)));
        assert!(!h.is_empty() && h.len() <= 10);
    }

    #[test]
    fn revision_history_appends() {
        let mut a = Map::new();
        a.insert(REVISION.into(), json!("2"));
        bump_revision(&mut a, 4);
        assert_eq!(a[REVISION], json!("4"));
        assert_eq!(a[REVISION_HISTORY], json!("2"));
        bump_revision(&mut a, 6);
        assert_eq!(a[REVISION_HISTORY], json!("2,4"));
        bump_revision(&mut a, 5);
        assert_eq!(a[REVISION], json!("6"));
    }

    #[test]
    fn surge() {
        let d = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}}}});
        assert_eq!(max_surge(&d, 1), 1);
        assert_eq!(max_surge(&d, 4), 1);
        assert_eq!(max_surge(&d, 5), 2);
    }

    #[test]
    fn fenceposts_round_and_never_both_zero() {
        let d = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}}});
        assert_eq!(fenceposts(&d, 1), (1, 0));
        assert_eq!(fenceposts(&d, 4), (1, 1));
        assert_eq!(max_unavailable(&d, 7), 1);
        let z = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "10%"}}}});
        assert_eq!(fenceposts(&z, 3), (0, 1));
        let r = json!({"spec": {"strategy": {"type": "Recreate"}}});
        assert_eq!((max_surge(&r, 3), max_unavailable(&r, 3)), (0, 0));
    }
}
