//! What a watch does to the [`WorkloadIndex`]: a whole list swapped in at once, one object
//! applied, one deleted. Nothing else: no decision is taken here.
//!
//! A list replaces what the index holds for that kind and scope in one write, so a half-listed
//! namespace is never seen. Services and VirtualServices are few, and each is applied on its
//! own so that change detection (the traffic changes returned) stays in one place.

use jiff::Timestamp;
use kube::api::DynamicObject;
use kube::core::ApiResource;

use super::{Kind, SharedIndex};
use crate::core::alert::LabelSet;
use crate::core::gitops::ApplicationState;
use crate::core::rollout::RolloutState;
use crate::core::traffic::TrafficChange;
use crate::core::workload::{DeploymentState, ReplicaSetState, WorkloadIndex};
use crate::k8s::{
    application_state, deployment_state, namespace_state, replica_set_state, rollout_state,
    service_state, virtual_service_state,
};

/// One change read from the API server.
pub enum Change {
    /// A complete list of the kind in the watch's scope.
    Listed(Listed),
    /// Added or modified.
    Applied(DynamicObject),
    Deleted(DynamicObject),
}

/// A list being read page by page, each page turned into the index's compact states as it
/// arrives: a list of 10,000 objects never holds 10,000 API objects at once. Services and
/// VirtualServices stay objects (they are few, and applied one by one for change detection).
pub enum Listed {
    Deployments(Vec<DeploymentState>),
    ReplicaSets(Vec<ReplicaSetState>),
    Rollouts(Vec<RolloutState>),
    Applications(Vec<ApplicationState>),
    Namespaces(Vec<(String, LabelSet)>),
    Objects(Vec<DynamicObject>),
}

impl Listed {
    pub fn new(kind: &Kind) -> Listed {
        match kind {
            Kind::Deployments => Listed::Deployments(Vec::new()),
            Kind::ReplicaSets => Listed::ReplicaSets(Vec::new()),
            Kind::Rollouts => Listed::Rollouts(Vec::new()),
            Kind::Applications => Listed::Applications(Vec::new()),
            Kind::Namespaces => Listed::Namespaces(Vec::new()),
            Kind::Services | Kind::VirtualServices(_) => Listed::Objects(Vec::new()),
        }
    }

    /// Adds one page; the page's objects are dropped once converted.
    pub fn add_page(&mut self, page: Vec<DynamicObject>) {
        match self {
            Listed::Deployments(all) => all.extend(
                page.iter()
                    .filter_map(deployment_state)
                    .map(slim_deployment),
            ),
            Listed::ReplicaSets(all) => all.extend(
                page.iter()
                    .filter_map(replica_set_state)
                    .map(slim_replica_set),
            ),
            Listed::Rollouts(all) => {
                all.extend(page.iter().filter_map(rollout_state).map(slim_rollout))
            }
            Listed::Applications(all) => all.extend(page.iter().filter_map(application_state)),
            Listed::Namespaces(all) => all.extend(page.iter().filter_map(namespace_state)),
            Listed::Objects(all) => all.extend(page),
        }
    }
}

/// `kubectl apply` keeps a copy of the whole object in this annotation. No decision reads it
/// (an undo keeps the Deployment's own, and the executor reads the object fresh before it acts),
/// so the index does not hold it.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

// Pod templates are kept as summaries (digest, images, labels; see `PodTemplate`): decisions
// compare and describe them, and the executor reads the whole objects again before it acts.

fn slim_deployment(mut d: DeploymentState) -> DeploymentState {
    d.annotations.remove(LAST_APPLIED);
    d.template = d.template.summary();
    d
}

fn slim_replica_set(mut rs: ReplicaSetState) -> ReplicaSetState {
    rs.template = rs.template.summary();
    rs
}

fn slim_rollout(mut r: RolloutState) -> RolloutState {
    r.annotations.remove(LAST_APPLIED);
    r.template = r.template.summary();
    r
}

/// Applies one change to the index; returns the traffic changes it noted.
pub fn apply(
    index: &SharedIndex,
    kind: &Kind,
    ar: &ApiResource,
    scope: Option<&str>,
    change: Change,
    now: Timestamp,
) -> Vec<TrafficChange> {
    let mut index = match index.write() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    let mut noted = Vec::new();
    match change {
        Change::Listed(listed) => match listed {
            Listed::Deployments(all) => index.reset_deployments(scope, all, now),
            Listed::ReplicaSets(all) => index.reset_replica_sets(scope, all, now),
            Listed::Rollouts(all) => index.reset_rollouts(scope, all, now),
            Listed::Applications(all) => index.reset_applications(scope, all),
            Listed::Namespaces(all) => index.reset_namespaces(all),
            Listed::Objects(all) => {
                for obj in &all {
                    noted.extend(apply_one(&mut index, kind, ar, obj, now));
                }
            }
        },
        Change::Applied(obj) => noted.extend(apply_one(&mut index, kind, ar, &obj, now)),
        Change::Deleted(obj) => {
            if let (Kind::Namespaces, Some(name)) = (kind, &obj.metadata.name) {
                index.delete_namespace(name);
            } else if let (Some(ns), Some(name)) = (&obj.metadata.namespace, &obj.metadata.name) {
                match kind {
                    Kind::Deployments => index.delete_deployment(ns, name),
                    Kind::ReplicaSets => index.delete_replica_set(ns, name),
                    Kind::Rollouts => index.delete_rollout(ns, name),
                    Kind::Services => index.delete_service(ns, name),
                    Kind::VirtualServices(_) => index.delete_virtual_service(ns, name),
                    Kind::Namespaces => {}
                    Kind::Applications => index.delete_application(ns, name),
                }
            }
        }
    }
    noted
}

fn apply_one(
    index: &mut WorkloadIndex,
    kind: &Kind,
    ar: &ApiResource,
    obj: &DynamicObject,
    now: Timestamp,
) -> Option<TrafficChange> {
    match kind {
        Kind::Deployments => {
            index.apply_deployment(slim_deployment(deployment_state(obj)?), now);
            None
        }
        Kind::ReplicaSets => {
            index.apply_replica_set(slim_replica_set(replica_set_state(obj)?), now);
            None
        }
        Kind::Rollouts => {
            index.apply_rollout(slim_rollout(rollout_state(obj)?), now);
            None
        }
        Kind::Applications => {
            index.apply_application(application_state(obj)?);
            None
        }
        Kind::Services => index.apply_service(service_state(obj)?, now),
        Kind::Namespaces => {
            let (name, annotations) = namespace_state(obj)?;
            index.apply_namespace(name, annotations);
            None
        }
        Kind::VirtualServices(_) => {
            let mut vs = virtual_service_state(obj)?;
            if vs.api_version.is_empty() {
                vs.api_version = ar.api_version.clone();
            }
            index.apply_virtual_service(vs, now)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, RwLock};

    use serde_json::json;

    use super::*;

    fn deployment(name: &str) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                "resourceVersion": "7",
                "annotations": {
                    LAST_APPLIED: "{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\"}",
                    "rollbackd.io/auto-rollback": "false"
                }},
            "spec": {"template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}
        }))
        .expect("object")
    }

    #[test]
    fn a_list_read_in_pages_is_swapped_in_whole_without_the_last_applied_copy() {
        let index: SharedIndex = Arc::new(RwLock::new(WorkloadIndex::default()));
        let ar = crate::k8s::deployments();
        let mut listed = Listed::new(&Kind::Deployments);
        listed.add_page(vec![deployment("a"), deployment("b")]);
        listed.add_page(vec![deployment("c")]);
        apply(
            &index,
            &Kind::Deployments,
            &ar,
            None,
            Change::Listed(listed),
            Timestamp::now(),
        );
        apply(
            &index,
            &Kind::Deployments,
            &ar,
            None,
            Change::Applied(deployment("d")),
            Timestamp::now(),
        );
        let index = index.read().expect("index");
        for name in ["a", "b", "c", "d"] {
            let d = index.deployment("default", name).expect(name);
            assert!(!d.annotations.contains_key(LAST_APPLIED), "{name}");
            assert_eq!(
                d.annotations
                    .get("rollbackd.io/auto-rollback")
                    .map(String::as_str),
                Some("false"),
                "the annotations decisions read stay"
            );
        }
    }
}
