//! Pausing a Deployment or an Argo Rollout instead of reverting it (`rollbackd.io/policy:
//! pause`): a merge patch of `spec.paused: true` carrying the resourceVersion read, so that a
//! change in between is a conflict, never overwritten. Nothing is sent when the revision the
//! alert blamed is no longer the current one.

use kube::api::{Api, DynamicObject, Patch};
use serde_json::json;

use super::{
    Attempt, Executor, api_answer, failed, patch_params, read_failed, skipped, succeeded,
    write_answer,
};
use crate::core::engine::{Outcome, PauseWorkload, describe};
use crate::core::workload::current_replica_set;
use crate::k8s::patch::send_patch;
use crate::k8s::{deployment_state, deployments, rollout_state, rollouts, selector_string};

impl Executor {
    pub(super) async fn pause_once(&self, c: &PauseWorkload) -> Attempt {
        let rollout = c.kind == "Rollout";
        let (ar, resource) = if rollout {
            (rollouts(), "rollouts.argoproj.io")
        } else {
            (deployments(), "deployments.apps")
        };
        let what = format!("{} {}/{}", c.kind.to_lowercase(), c.namespace, c.name);
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &c.namespace, &ar);
        let obj = match self.timed(api.get(&c.name)).await {
            Ok(obj) => obj,
            Err(e) => {
                return Attempt::Done(read_failed(&format!("reading {what}"), "get", resource, e));
            }
        };
        if obj.metadata.uid.as_deref() != Some(c.uid.as_str()) {
            return Attempt::Done(skipped(
                Outcome::Superseded,
                format!("{what} was deleted and recreated since the alert was correlated"),
            ));
        }
        let selector = obj.data.pointer("/spec/selector").and_then(selector_string);
        let owned = match self
            .owned_replica_sets(
                &c.namespace,
                &c.uid,
                selector.as_deref().filter(|_| !rollout),
            )
            .await
        {
            Ok(owned) => owned,
            Err(e) => {
                let doing = format!("listing ReplicaSets of {what}");
                return Attempt::Done(read_failed(&doing, "list", "replicasets.apps", e));
            }
        };
        let current = if rollout {
            let Some(state) = rollout_state(&obj) else {
                return Attempt::Done(failed(format!("{what} as read lacks metadata or spec")));
            };
            owned
                .iter()
                .find(|rs| rs.pod_hash == state.current_pod_hash)
                .map(|rs| rs.uid.clone())
        } else {
            let Some(state) = deployment_state(&obj) else {
                return Attempt::Done(failed(format!("{what} as read lacks metadata or spec")));
            };
            current_replica_set(&state, owned.iter()).map(|rs| rs.uid.clone())
        };
        if current.as_deref() != Some(c.blamed.uid.as_str()) {
            return Attempt::Done(skipped(
                Outcome::Superseded,
                format!(
                    "{what} no longer runs {}; not pausing someone else's change",
                    describe(&c.blamed)
                ),
            ));
        }
        let patch = json!({
            "metadata": {"resourceVersion": obj.metadata.resource_version},
            "spec": {"paused": true},
        });
        let written = self
            .timed(send_patch(
                &api,
                &c.name,
                None,
                &patch_params(c.dry_run),
                &Patch::Merge(&patch),
            ))
            .await
            .map(|obj| api_answer(&obj, c.dry_run));
        crate::fault::point(crate::fault::AFTER_PATCH).await;
        let blamed = describe(&c.blamed);
        write_answer(
            written,
            &what,
            resource,
            || {
                succeeded(
                    c.dry_run,
                    Outcome::PausedWorkload,
                    format!(
                        "paused {what} at {blamed} instead of reverting it (rollbackd.io/policy: pause); a human decides the rollback"
                    ),
                    format!("the pause of {what}"),
                    json!({"patch": patch}),
                )
            },
            &patch,
        )
    }
}
