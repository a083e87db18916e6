//! Conversion from API objects to the core's workload types.

use kube::api::DynamicObject;
use serde_json::Value;

use crate::core::alert::LabelSet;
use crate::core::workload::{DeploymentState, REVISION_ANNOTATION, ReplicaSetState};

fn annotations(obj: &DynamicObject) -> LabelSet {
    obj.metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect()
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
        template: spec.get("template").cloned().unwrap_or(Value::Null),
        annotations: annotations(obj),
    })
}

pub fn replica_set_state(obj: &DynamicObject) -> Option<ReplicaSetState> {
    let owner_uid = obj
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == "Deployment")
        .map(|o| o.uid.clone());
    let annotations = annotations(obj);
    // kubectl: a missing revision annotation is revision 0; an unparsable one is skipped.
    let revision = match annotations.get(REVISION_ANNOTATION) {
        None => Some(0),
        Some(v) => v.parse().ok(),
    };
    Some(ReplicaSetState {
        namespace: obj.metadata.namespace.clone()?,
        name: obj.metadata.name.clone()?,
        uid: obj.metadata.uid.clone()?,
        owner_uid,
        revision,
        template: obj
            .data
            .pointer("/spec/template")
            .cloned()
            .unwrap_or(Value::Null),
        annotations,
        created_at: obj.metadata.creation_timestamp.as_ref()?.0,
    })
}
