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
use crate::core::traffic::TrafficChange;
use crate::core::workload::WorkloadIndex;
use crate::k8s::{
    application_state, deployment_state, namespace_state, replica_set_state, rollout_state,
    service_state, virtual_service_state,
};

/// One change read from the API server.
pub enum Change {
    /// A complete list of the kind in the watch's scope.
    Listed(Vec<DynamicObject>),
    /// Added or modified.
    Applied(DynamicObject),
    Deleted(DynamicObject),
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
        Change::Listed(all) => match kind {
            Kind::Deployments => index.reset_deployments(
                scope,
                all.iter().filter_map(deployment_state).collect(),
                now,
            ),
            Kind::ReplicaSets => index.reset_replica_sets(
                scope,
                all.iter().filter_map(replica_set_state).collect(),
                now,
            ),
            Kind::Rollouts => {
                index.reset_rollouts(scope, all.iter().filter_map(rollout_state).collect(), now)
            }
            Kind::Applications => {
                index.reset_applications(scope, all.iter().filter_map(application_state).collect())
            }
            Kind::Services | Kind::VirtualServices(_) => {
                for obj in &all {
                    noted.extend(apply_one(&mut index, kind, ar, obj, now));
                }
            }
            Kind::Namespaces => {
                index.reset_namespaces(all.iter().filter_map(namespace_state).collect())
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
            index.apply_deployment(deployment_state(obj)?, now);
            None
        }
        Kind::ReplicaSets => {
            index.apply_replica_set(replica_set_state(obj)?, now);
            None
        }
        Kind::Rollouts => {
            index.apply_rollout(rollout_state(obj)?, now);
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
