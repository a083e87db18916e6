//! The ReplicaSets of an Argo Rollout, written through the store like the real controller's
//! client: finding the owned ones (controller ownerReference kind Rollout) and the "new" one
//! (`FindNewReplicaSet`: hash label, else template equality after defaulting), creating
//! `<rollout>-<hash>` (`createDesiredReplicaSet`), syncing the revision annotations of a
//! reused one (`SetNewReplicaSetAnnotations`, with `revision-history`), scaling with a
//! `ScalingReplicaSet` Event, the `scale-down-deadline` annotation, revision-history
//! cleanup, and Events on the Rollout (component `rollouts-controller`).
//!
//! No pods exist, so this file also plays the ReplicaSet controller for Rollout-owned
//! ReplicaSets: [`Pods::sync`] reports scale-ups as created at once and ready/available
//! after the sandbox's `rollout_delay` (never, for a template with one of the sandbox's
//! `unready_images`), scale-downs at once.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::Pace;
use super::objects::{ensure_map, name_of, obj_at};
use super::rollout_spec::{
    DESIRED_REPLICAS, HASH_LABEL, REVISION, REVISION_HISTORY, SCALE_DOWN_DEADLINE,
    SKIP_ANNOTATIONS, int, replicas, template_equal, text,
};
use crate::gc::DeleteOptions;
use crate::resources::ResourceDef;
use crate::store::{Store, meta_str, now_rfc3339};
use crate::writes::Part;

pub fn revision_of(o: &Value) -> i64 {
    o.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

pub fn hash_of(rs: &Value) -> &str {
    rs.pointer("/metadata/labels")
        .and_then(|l| l.get(HASH_LABEL))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The uid of an object's controller ownerReference of kind Rollout.
pub fn rollout_owner_uid(o: &Value) -> Option<&str> {
    o.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| {
            r.get("controller").and_then(Value::as_bool) == Some(true)
                && r.get("kind").and_then(Value::as_str) == Some("Rollout")
                && r.get("apiVersion")
                    .and_then(Value::as_str)
                    .is_some_and(|a| a.starts_with("argoproj.io/"))
        })?
        .get("uid")?
        .as_str()
}

/// Owned ReplicaSets, oldest first (`ReplicaSetsByCreationTimestamp`).
pub fn owned(store: &Store, rsdef: &ResourceDef, ns: &str, uid: &str) -> Vec<Value> {
    let mut rss = store.owned_by(rsdef, ns, uid);
    rss.retain(|rs| {
        rollout_owner_uid(rs) == Some(uid) && rs.pointer("/metadata/deletionTimestamp").is_none()
    });
    rss.sort_by(|a, b| {
        (meta_str(a, "creationTimestamp"), revision_of(a))
            .cmp(&(meta_str(b, "creationTimestamp"), revision_of(b)))
    });
    rss
}

/// `FindNewReplicaSet`: by hash label first, then by template equality.
pub fn find_new(rss: &[Value], template: &Value, hash: &str) -> Option<usize> {
    rss.iter().position(|rs| hash_of(rs) == hash).or_else(|| {
        rss.iter().position(|rs| {
            rs.pointer("/spec/template")
                .is_some_and(|t| template_equal(t, template))
        })
    })
}

fn copy_annotations(ro: &Value, ann: &mut Map<String, Value>) -> bool {
    let mut changed = false;
    if let Some(a) = ro
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        for (k, v) in a {
            if !SKIP_ANNOTATIONS.contains(&k.as_str()) && ann.get(k) != Some(v) {
                ann.insert(k.clone(), v.clone());
                changed = true;
            }
        }
    }
    changed
}

/// The ReplicaSet `createDesiredReplicaSet` posts: 0 replicas, the hash label on the
/// template, labels and selector, a controller ownerReference, the revision.
pub fn desired(ro: &Value, template: &Value, selector: &Value, hash: &str, revision: i64) -> Value {
    let mut t = template.clone();
    if !t["metadata"].is_object() {
        t["metadata"] = json!({});
    }
    if !t["metadata"]["labels"].is_object() {
        t["metadata"]["labels"] = json!({});
    }
    t["metadata"]["labels"][HASH_LABEL] = json!(hash);
    let mut sel = selector.clone();
    if !sel["matchLabels"].is_object() {
        sel["matchLabels"] = json!({});
    }
    sel["matchLabels"][HASH_LABEL] = json!(hash);
    let mut ann = Map::new();
    copy_annotations(ro, &mut ann);
    ann.insert(REVISION.into(), json!(revision.to_string()));
    ann.insert(DESIRED_REPLICAS.into(), json!(replicas(ro).to_string()));
    let mut spec = json!({"replicas": 0, "selector": sel, "template": t});
    if let Some(m) = ro
        .pointer("/spec/minReadySeconds")
        .filter(|m| m.as_i64() != Some(0))
    {
        spec["minReadySeconds"] = m.clone();
    }
    let ns = meta_str(ro, "namespace").unwrap_or("default");
    let name = meta_str(ro, "name").unwrap_or_default();
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{name}-{hash}"),
            "namespace": ns,
            "labels": t["metadata"]["labels"].clone(),
            "annotations": ann,
            "ownerReferences": [{
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "Rollout",
                "name": name,
                "uid": meta_str(ro, "uid").unwrap_or_default(),
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": spec,
    })
}

/// `SetNewReplicaSetAnnotations` on an existing new ReplicaSet: copy the Rollout's
/// annotations, raise its revision to `new_rev` if lower (remembering the old number in
/// `revision-history`). Returns the stored ReplicaSet.
pub fn sync_revision(
    store: &Store,
    rsdef: &ResourceDef,
    ro: &Value,
    rs: &Value,
    new_rev: i64,
) -> Result<Value, String> {
    let ns = meta_str(rs, "namespace").unwrap_or("default");
    store
        .modify(rsdef, Some(ns), &name_of(rs), Part::Main, false, |cur| {
            let mut n = cur.clone();
            let ann = ensure_map(&mut n, "annotations");
            let mut changed = copy_annotations(ro, ann);
            let old = ann
                .get(REVISION)
                .and_then(Value::as_str)
                .map(str::to_string);
            let old_n: i64 = old.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0);
            if old_n < new_rev {
                ann.insert(REVISION.into(), json!(new_rev.to_string()));
                changed = true;
            }
            if let Some(old) = old.filter(|_| changed) {
                let hist = ann
                    .get(REVISION_HISTORY)
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let joined = if hist.is_empty() {
                    old
                } else {
                    format!("{hist},{old}")
                };
                ann.insert(REVISION_HISTORY.into(), json!(joined));
            }
            if let Some(m) = ro.pointer("/spec/minReadySeconds").and_then(Value::as_i64) {
                obj_at(&mut n, "spec").insert("minReadySeconds".into(), json!(m));
            }
            Ok(n)
        })
        .map_err(|e| e.to_string())
}

/// `scaleReplicaSetAndRecordEvent`: set replicas and the desired-replicas annotation
/// (dropping a scale-down deadline when scaling to 0). Returns whether the size changed.
pub fn scale(
    store: &Store,
    rsdef: &ResourceDef,
    ro: &Value,
    rs: &Value,
    want: i64,
    keep_deadline: bool,
) -> Result<bool, String> {
    let desired = replicas(ro).to_string();
    let had = int(rs, "/spec/replicas");
    let ann_ok = rs
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(DESIRED_REPLICAS))
        .and_then(Value::as_str)
        == Some(desired.as_str());
    let deadline = !text(rs, &format!("/metadata/annotations/{SCALE_DOWN_DEADLINE}")).is_empty();
    if had == want && ann_ok && !(want == 0 && deadline) {
        return Ok(false);
    }
    let ns = meta_str(rs, "namespace").unwrap_or("default");
    store
        .modify(rsdef, Some(ns), &name_of(rs), Part::Main, false, |cur| {
            let mut n = cur.clone();
            obj_at(&mut n, "spec").insert("replicas".into(), json!(want));
            let ann = ensure_map(&mut n, "annotations");
            ann.insert(DESIRED_REPLICAS.into(), json!(desired));
            if want == 0 && !keep_deadline {
                ann.remove(SCALE_DOWN_DEADLINE);
            }
            Ok(n)
        })
        .map_err(|e| e.to_string())?;
    if had != want {
        let dir = if want > had { "up" } else { "down" };
        let msg = format!(
            "Scaled {dir} ReplicaSet {} (revision {}) from {had} to {want}",
            name_of(rs),
            revision_of(rs)
        );
        event(store, ro, "Normal", "ScalingReplicaSet", &msg);
    }
    Ok(had != want)
}

/// Add (or with `None` remove) the `scale-down-deadline` annotation.
pub fn set_deadline(
    store: &Store,
    rsdef: &ResourceDef,
    rs: &Value,
    after: Option<Duration>,
) -> Result<(), String> {
    let ns = meta_str(rs, "namespace").unwrap_or("default");
    let at = after.map(|d| {
        let secs = jiff::SignedDuration::from_secs(d.as_secs().min(i32::MAX as u64) as i64);
        let now = jiff::Timestamp::now();
        let ts = now.checked_add(secs).unwrap_or(now);
        ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    });
    store
        .modify(rsdef, Some(ns), &name_of(rs), Part::Main, false, |cur| {
            let mut n = cur.clone();
            let ann = ensure_map(&mut n, "annotations");
            match &at {
                Some(t) => ann.insert(SCALE_DOWN_DEADLINE.into(), json!(t)),
                None => ann.remove(SCALE_DOWN_DEADLINE),
            };
            Ok(n)
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Time left before a ReplicaSet's `scale-down-deadline`: None without one, Some(ZERO)
/// once it has passed (an unparsable deadline counts as passed).
pub fn deadline_remaining(rs: &Value) -> Option<Duration> {
    let s = text(rs, &format!("/metadata/annotations/{SCALE_DOWN_DEADLINE}"));
    if s.is_empty() {
        return None;
    }
    let Ok(at) = s.parse::<jiff::Timestamp>() else {
        return Some(Duration::ZERO);
    };
    let left = at.as_millisecond() - jiff::Timestamp::now().as_millisecond();
    Some(Duration::from_millis(left.max(0) as u64))
}

/// `reconcileRevisionHistoryLimit`: delete the oldest of `others` beyond the limit, if
/// scaled to 0.
pub fn cleanup(store: &Store, rsdef: &ResourceDef, ro: &Value, others: &[Value]) {
    let limit = ro
        .pointer("/spec/revisionHistoryLimit")
        .and_then(Value::as_i64)
        .unwrap_or(10)
        .max(0) as usize;
    if others.len() <= limit {
        return;
    }
    for rs in &others[..others.len() - limit] {
        let idle = int(rs, "/spec/replicas") == 0 && int(rs, "/status/replicas") == 0;
        if idle {
            let ns = meta_str(rs, "namespace").unwrap_or("default");
            let _ = store.delete(rsdef, Some(ns), &name_of(rs), &DeleteOptions::default());
        }
    }
}

/// A core/v1 Event on the Rollout, as the controller's recorder writes it.
pub fn event(store: &Store, ro: &Value, ty: &str, reason: &str, message: &str) {
    let Some(def) = store.registry.find("", "v1", "events") else {
        return;
    };
    let ns = meta_str(ro, "namespace").unwrap_or("default");
    let name = meta_str(ro, "name").unwrap_or_default();
    let now = now_rfc3339();
    let nanos = jiff::Timestamp::now().as_nanosecond();
    let ev = json!({
        "metadata": {"name": format!("{name}.{nanos:x}"), "namespace": ns},
        "involvedObject": {
            "kind": "Rollout", "namespace": ns, "name": name,
            "apiVersion": "argoproj.io/v1alpha1",
            "uid": meta_str(ro, "uid").unwrap_or_default(),
            "resourceVersion": meta_str(ro, "resourceVersion").unwrap_or_default(),
        },
        "reason": reason,
        "message": message,
        "source": {"component": "rollouts-controller"},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1, "type": ty,
        "reportingComponent": "rollouts-controller", "reportingInstance": "",
    });
    if let Err(e) = store.create(def, Some(ns), ev, false) {
        tracing::debug!(error = %e, "rollout event not recorded");
    }
}

/// The simulated pods of Rollout-owned ReplicaSets.
#[derive(Default)]
pub struct Pods {
    /// Per ReplicaSet (namespace, name): the replica count it was last scaled up to, and when.
    scaled_up: HashMap<(String, String), (i64, Instant)>,
}

impl Pods {
    /// Bring one ReplicaSet's status towards its spec; returns how long until its pods are
    /// ready if they are not yet. Pods of a template that never becomes ready (see
    /// [`Pace::never_ready`]) are created (`status.replicas`) but never counted ready or
    /// available.
    pub fn sync(
        &mut self,
        store: &Store,
        rsdef: &ResourceDef,
        rs: &Value,
        pace: &Pace,
    ) -> Result<Option<Duration>, String> {
        let delay = pace.rollout_delay;
        let ns = meta_str(rs, "namespace").unwrap_or("default").to_string();
        let key = (ns.clone(), name_of(rs));
        let want = int(rs, "/spec/replicas");
        let available = int(rs, "/status/availableReplicas");
        let (ready, left) = if pace.never_ready(rs) {
            self.scaled_up.remove(&key);
            (available.min(want), None)
        } else if want <= available {
            self.scaled_up.remove(&key);
            (want, None)
        } else {
            let at = match self.scaled_up.get(&key) {
                Some((w, at)) if *w == want => *at,
                _ => {
                    let now = Instant::now();
                    self.scaled_up.insert(key.clone(), (want, now));
                    now
                }
            };
            let elapsed = at.elapsed();
            if elapsed >= delay {
                self.scaled_up.remove(&key);
                (want, None)
            } else {
                (available, Some(delay - elapsed))
            }
        };
        let generation = int(rs, "/metadata/generation");
        store
            .modify(rsdef, Some(&ns), &key.1, Part::Status, false, |cur| {
                let mut n = cur.clone();
                let st = obj_at(&mut n, "status");
                st.clear();
                for (k, v) in [
                    ("replicas", want),
                    ("fullyLabeledReplicas", want),
                    ("readyReplicas", ready),
                    ("availableReplicas", ready),
                ] {
                    if v != 0 {
                        st.insert(k.into(), json!(v));
                    }
                }
                st.insert("observedGeneration".into(), json!(generation));
                Ok(n)
            })
            .map_err(|e| e.to_string())?;
        Ok(left)
    }
}
