//! The objects the Deployment controller reads and writes: its owned ReplicaSets (found by
//! controller ownerReference), the ReplicaSet it creates for a template, and the store
//! writes that scale ReplicaSets, publish the Deployment status (through `/status`, with the
//! revision annotation) and delete old ReplicaSets beyond `revisionHistoryLimit`.

use serde_json::{Map, Value, json};

use super::revision::{self as rev, HASH_LABEL};
use crate::gc::DeleteOptions;
use crate::resources::ResourceDef;
use crate::store::{Store, meta_str, now_rfc3339};
use crate::writes::Part;

pub fn int(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

pub fn name_of(v: &Value) -> String {
    meta_str(v, "name").unwrap_or_default().to_string()
}

/// The uid of an object's controller ownerReference of kind Deployment.
pub fn controller_uid(o: &Value) -> Option<&str> {
    controller_ref(o).map(|(_, uid)| uid)
}

/// The name and uid of the controlling Deployment's ownerReference.
pub fn controller_ref(o: &Value) -> Option<(&str, &str)> {
    let r = o
        .pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| {
            r.get("controller").and_then(Value::as_bool) == Some(true)
                && r.get("kind").and_then(Value::as_str) == Some("Deployment")
        })?;
    Some((r.get("name")?.as_str()?, r.get("uid")?.as_str()?))
}

/// Drop zero counters like the real API's `omitempty`.
pub fn counts(pairs: &[(&str, i64)]) -> Map<String, Value> {
    pairs
        .iter()
        .filter(|(_, n)| *n != 0)
        .map(|(k, n)| (k.to_string(), json!(n)))
        .collect()
}

/// `scaleReplicaSet`: set a ReplicaSet's replicas and its desired/max replica annotations
/// (written when either differs), recording a `ScalingReplicaSet` Event on the Deployment
/// when the count changes. Returns the ReplicaSet as stored.
pub fn scale(
    store: &Store,
    rsdef: &ResourceDef,
    dep: &Value,
    rs: &Value,
    want: i64,
    desired: i64,
    surge: i64,
) -> Result<Value, String> {
    let ns = meta_str(dep, "namespace").unwrap_or("default");
    let mut from = None;
    let stored = store
        .modify(rsdef, Some(ns), &name_of(rs), Part::Main, false, |cur| {
            let mut n = cur.clone();
            let had = int(cur, "/spec/replicas");
            if had != want {
                from = Some(had);
                obj_at(&mut n, "spec").insert("replicas".into(), json!(want));
            }
            let ann = ensure_map(&mut n, "annotations");
            ann.insert(rev::DESIRED_REPLICAS.into(), json!(desired.to_string()));
            ann.insert(
                rev::MAX_REPLICAS.into(),
                json!((desired + surge).to_string()),
            );
            Ok(n)
        })
        .map_err(|e| e.to_string())?;
    if let Some(from) = from {
        scaling_event(store, dep, &name_of(rs), from, want);
    }
    Ok(stored)
}

/// A core/v1 Event like the real controller's EventRecorder writes.
pub fn scaling_event(store: &Store, dep: &Value, rs_name: &str, from: i64, to: i64) {
    let Some(def) = store.registry.find("", "v1", "events") else {
        return;
    };
    let ns = meta_str(dep, "namespace").unwrap_or("default");
    let name = meta_str(dep, "name").unwrap_or_default();
    let now = now_rfc3339();
    let nanos = jiff::Timestamp::now().as_nanosecond();
    let direction = if to > from { "up" } else { "down" };
    let ev = json!({
        "metadata": {"name": format!("{name}.{nanos:x}"), "namespace": ns},
        "involvedObject": {
            "kind": "Deployment", "namespace": ns, "name": name, "apiVersion": "apps/v1",
            "uid": meta_str(dep, "uid").unwrap_or_default(),
            "resourceVersion": meta_str(dep, "resourceVersion").unwrap_or_default(),
        },
        "reason": "ScalingReplicaSet",
        "message": format!("Scaled {direction} replica set {rs_name} from {from} to {to}"),
        "source": {"component": "deployment-controller"},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1, "type": "Normal",
        "reportingComponent": "deployment-controller", "reportingInstance": "",
    });
    if let Err(e) = store.create(def, Some(ns), ev, false) {
        tracing::debug!(error = %e, "event not recorded");
    }
}

/// `UpdateStatus` of a Deployment: its `status` and revision annotation as in `dep`
/// (through `/status`, so its generation does not move). Returns the Deployment as stored.
pub fn update_status(store: &Store, ddef: &ResourceDef, dep: &Value) -> Result<Value, String> {
    let ns = meta_str(dep, "namespace").unwrap_or("default");
    let revision = dep
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(rev::REVISION))
        .cloned();
    store
        .modify(ddef, Some(ns), &name_of(dep), Part::Status, false, |cur| {
            let mut n = cur.clone();
            if let Some(r) = &revision {
                ensure_map(&mut n, "annotations").insert(rev::REVISION.into(), r.clone());
            }
            let status = obj_at(&mut n, "status");
            status.clear();
            if let Some(m) = dep.get("status").and_then(Value::as_object) {
                status.extend(m.clone());
            }
            Ok(n)
        })
        .map_err(|e| e.to_string())
}

/// `cleanupDeployment`: delete the old ReplicaSets beyond `revisionHistoryLimit`, lowest
/// revision first, skipping any that still has replicas or is being deleted.
pub fn cleanup(store: &Store, rsdef: &ResourceDef, dep: &Value, old: &[Value]) {
    let Some(limit) = dep
        .pointer("/spec/revisionHistoryLimit")
        .and_then(Value::as_i64)
        .filter(|l| *l != i64::from(i32::MAX))
    else {
        return;
    };
    let ns = meta_str(dep, "namespace").unwrap_or("default");
    let mut alive: Vec<&Value> = old
        .iter()
        .filter(|rs| rs.pointer("/metadata/deletionTimestamp").is_none())
        .collect();
    let diff = alive.len() as i64 - limit.max(0);
    if diff <= 0 {
        return;
    }
    alive.sort_by(|a, b| {
        (
            rev::revision_of(a),
            meta_str(a, "creationTimestamp"),
            name_of(a),
        )
            .cmp(&(
                rev::revision_of(b),
                meta_str(b, "creationTimestamp"),
                name_of(b),
            ))
    });
    for rs in alive.into_iter().take(diff as usize) {
        if int(rs, "/status/replicas") != 0
            || int(rs, "/spec/replicas") != 0
            || int(rs, "/metadata/generation") > int(rs, "/status/observedGeneration")
        {
            continue;
        }
        let _ = store.delete(rsdef, Some(ns), &name_of(rs), &DeleteOptions::default());
    }
}

/// The map at `key` of `v`, made an object (replacing any other value) if it is not one.
pub fn obj_at<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    let Value::Object(m) = v else {
        unreachable!("made an object above")
    };
    let e = m
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !e.is_object() {
        *e = Value::Object(Map::new());
    }
    let Value::Object(inner) = e else {
        unreachable!("made an object above")
    };
    inner
}

/// `metadata.<field>` as a map.
pub fn ensure_map<'a>(o: &'a mut Value, field: &str) -> &'a mut Map<String, Value> {
    let md = obj_at(o, "metadata");
    let e = md
        .entry(field.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !e.is_object() {
        *e = Value::Object(Map::new());
    }
    let Value::Object(m) = e else {
        unreachable!("made an object above")
    };
    m
}

/// The ReplicaSet the controller creates for a template.
pub fn new_replicaset(
    dep: &Value,
    template: &Value,
    name: &str,
    hash: &str,
    revision: i64,
    replicas: i64,
    surge: i64,
) -> Value {
    let mut t = template.clone();
    if !t["metadata"].is_object() {
        t["metadata"] = json!({});
    }
    if !t["metadata"]["labels"].is_object() {
        t["metadata"]["labels"] = json!({});
    }
    t["metadata"]["labels"][HASH_LABEL] = json!(hash);
    let mut selector = dep.pointer("/spec/selector").cloned().unwrap_or(json!({}));
    if !selector["matchLabels"].is_object() {
        selector["matchLabels"] = json!({});
    }
    selector["matchLabels"][HASH_LABEL] = json!(hash);
    let mut ann = Map::new();
    rev::copy_annotations(dep, &mut ann);
    ann.insert(rev::REVISION.into(), json!(revision.to_string()));
    ann.insert(
        rev::DESIRED_REPLICAS.into(),
        json!(
            dep.pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1)
                .to_string()
        ),
    );
    let desired = dep
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    ann.insert(
        rev::MAX_REPLICAS.into(),
        json!((desired + surge).to_string()),
    );
    let mut spec = json!({"replicas": replicas, "selector": selector, "template": t});
    if let Some(m) = dep.pointer("/spec/minReadySeconds") {
        spec["minReadySeconds"] = m.clone();
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": meta_str(dep, "namespace").unwrap_or("default"),
            "labels": t["metadata"]["labels"].clone(),
            "annotations": ann,
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": meta_str(dep, "name").unwrap_or_default(),
                "uid": meta_str(dep, "uid").unwrap_or_default(),
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": spec,
    })
}
