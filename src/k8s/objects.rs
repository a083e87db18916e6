//! Conversion from API objects to the core's workload and traffic types.

use kube::api::DynamicObject;
use serde_json::Value;

use super::selector_string;
use crate::core::alert::LabelSet;
use crate::core::gitops::{
    ApplicationState, HistoryEntry, ManagedResource, SUSPENDED_ANNOTATION, automated_of,
};
use crate::core::rollout::{ROLLOUT_HASH_LABEL, ROLLOUT_REVISION_ANNOTATION, RolloutState};
use crate::core::traffic::{
    CANARY_ANNOTATION, STABLE_ANNOTATION, ServiceState, TRACK_SELECTOR_ANNOTATION,
    TRACK_WEIGHTS_ANNOTATION, VirtualServiceState, route_weights,
};
use crate::core::workload::{
    DeploymentState, POD_TEMPLATE_HASH, PodTemplate, REVISION_ANNOTATION, ReplicaSetState,
};

fn annotations(obj: &DynamicObject) -> LabelSet {
    obj.metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect()
}

fn labels(obj: &DynamicObject) -> LabelSet {
    obj.metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect()
}

fn annotated_true(obj: &DynamicObject, key: &str) -> bool {
    obj.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .is_some_and(|v| v == "true")
}

/// `None` when the object lacks what every Deployment from an API server has.
pub fn deployment_state(obj: &DynamicObject) -> Option<DeploymentState> {
    let spec = obj.data.get("spec")?;
    Some(DeploymentState {
        namespace: obj.metadata.namespace.clone()?,
        name: obj.metadata.name.clone()?,
        uid: obj.metadata.uid.clone()?,
        resource_version: obj.metadata.resource_version.clone().unwrap_or_default(),
        paused: spec.get("paused").and_then(Value::as_bool).unwrap_or(false),
        template: PodTemplate::read(spec.get("template").cloned().unwrap_or(Value::Null)),
        annotations: annotations(obj),
        labels: labels(obj),
        selector: spec
            .get("selector")
            .and_then(selector_string)
            .unwrap_or_default(),
    })
}

pub fn replica_set_state(obj: &DynamicObject) -> Option<ReplicaSetState> {
    let owner =
        obj.metadata.owner_references.iter().flatten().find(|o| {
            o.controller == Some(true) && (o.kind == "Deployment" || o.kind == "Rollout")
        });
    let owner_kind = owner.map(|o| o.kind.clone());
    let (revision_key, hash_label) = match owner_kind.as_deref() {
        Some("Rollout") => (ROLLOUT_REVISION_ANNOTATION, ROLLOUT_HASH_LABEL),
        _ => (REVISION_ANNOTATION, POD_TEMPLATE_HASH),
    };
    let annotations = annotations(obj);
    // kubectl: a missing revision annotation is revision 0; an unparsable one is skipped.
    let revision = match annotations.get(revision_key) {
        None => Some(0),
        Some(v) => v.parse().ok(),
    };
    Some(ReplicaSetState {
        namespace: obj.metadata.namespace.clone()?,
        name: obj.metadata.name.clone()?,
        uid: obj.metadata.uid.clone()?,
        owner_uid: owner.map(|o| o.uid.clone()),
        owner_kind,
        revision,
        pod_hash: obj
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(hash_label))
            .cloned(),
        template: PodTemplate::read(
            obj.data
                .pointer("/spec/template")
                .cloned()
                .unwrap_or(Value::Null),
        ),
        annotations,
        created_at: obj.metadata.creation_timestamp.as_ref()?.0,
    })
}

pub fn rollout_state(obj: &DynamicObject) -> Option<RolloutState> {
    let spec = obj.data.get("spec")?;
    let status = obj.data.get("status");
    let text = |ptr: &str| {
        status
            .and_then(|s| s.pointer(ptr))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let workload_ref = spec
        .get("workloadRef")
        .filter(|r| r.get("kind").and_then(Value::as_str) == Some("Deployment"))
        .and_then(|r| r.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Some(RolloutState {
        namespace: obj.metadata.namespace.clone()?,
        name: obj.metadata.name.clone()?,
        uid: obj.metadata.uid.clone()?,
        resource_version: obj.metadata.resource_version.clone().unwrap_or_default(),
        generation: obj.metadata.generation.unwrap_or(0),
        observed_generation: status.and_then(|s| s.get("observedGeneration")).and_then(
            |v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            },
        ),
        phase: text("/phase"),
        stable_rs: text("/stableRS"),
        current_pod_hash: text("/currentPodHash"),
        aborted: status
            .and_then(|s| s.get("abort"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
        paused: spec.get("paused").and_then(Value::as_bool).unwrap_or(false),
        rollback_window: spec
            .pointer("/rollbackWindow/revisions")
            .and_then(Value::as_i64),
        template: PodTemplate::read(spec.get("template").cloned().unwrap_or(Value::Null)),
        workload_ref,
        labels: labels(obj),
        annotations: annotations(obj),
    })
}

/// A Namespace's name and annotations (`rollbackd.io/auto-rollback` is read from them).
pub fn namespace_state(obj: &DynamicObject) -> Option<(String, LabelSet)> {
    Some((obj.metadata.name.clone()?, annotations(obj)))
}

pub fn service_state(obj: &DynamicObject) -> Option<ServiceState> {
    let selector = obj
        .data
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Some(ServiceState {
        namespace: obj.metadata.namespace.clone()?,
        name: obj.metadata.name.clone()?,
        uid: obj.metadata.uid.clone()?,
        resource_version: obj.metadata.resource_version.clone().unwrap_or_default(),
        selector,
        tracked: annotated_true(obj, TRACK_SELECTOR_ANNOTATION),
    })
}

pub fn virtual_service_state(obj: &DynamicObject) -> Option<VirtualServiceState> {
    let annotation = |key: &str| {
        obj.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .cloned()
    };
    Some(VirtualServiceState {
        namespace: obj.metadata.namespace.clone()?,
        name: obj.metadata.name.clone()?,
        uid: obj.metadata.uid.clone()?,
        api_version: obj
            .types
            .as_ref()
            .map(|t| t.api_version.clone())
            .unwrap_or_default(),
        resource_version: obj.metadata.resource_version.clone().unwrap_or_default(),
        weights: obj.data.get("spec").map(route_weights).unwrap_or_default(),
        tracked: annotated_true(obj, TRACK_WEIGHTS_ANNOTATION),
        stable: annotation(STABLE_ANNOTATION),
        canary: annotation(CANARY_ANNOTATION),
    })
}

/// An Argo CD Application: its automated sync policy, sync history and managed resources.
pub fn application_state(obj: &DynamicObject) -> Option<ApplicationState> {
    let spec = obj.data.get("spec")?;
    let status = obj.data.get("status");
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    let mut history: Vec<HistoryEntry> = status
        .and_then(|s| s.get("history"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|h| {
            Some(HistoryEntry {
                id: h.get("id").and_then(Value::as_i64)?,
                // Multi-source Applications record `revisions` instead: not handled.
                revision: text(h, "revision")?,
                deployed_at: text(h, "deployedAt"),
            })
        })
        .collect();
    history.sort_by_key(|h| h.id);
    let resources = status
        .and_then(|s| s.get("resources"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some(ManagedResource {
                group: text(r, "group").unwrap_or_default(),
                kind: text(r, "kind")?,
                namespace: text(r, "namespace").unwrap_or_default(),
                name: text(r, "name")?,
            })
        })
        .collect();
    Some(ApplicationState {
        namespace: obj.metadata.namespace.clone()?,
        name: obj.metadata.name.clone()?,
        uid: obj.metadata.uid.clone()?,
        resource_version: obj.metadata.resource_version.clone().unwrap_or_default(),
        automated: automated_of(spec),
        history,
        resources,
        suspended: annotations(obj).get(SUSPENDED_ANNOTATION).cloned(),
        operation: obj.data.get("operation").filter(|o| !o.is_null()).cloned(),
    })
}
