//! Undo of a Deployment, as `kubectl rollout undo` does it.
//!
//! The Deployment and its ReplicaSets are read again (as kubectl does, but both at once), the
//! rollout the alert blamed must still be the current one, the plan comes from the same pure
//! function the engine used, and one JSON patch guarded by a resourceVersion `test` is sent.

use kube::api::{Api, DynamicObject, ListParams};
use serde_json::json;
use tracing::info;

use super::{
    Attempt, Executor, Gate, failed, not_recorded, read_failed, skipped, succeeded, write_answer,
};
use crate::core::engine::{Outcome, UndoDeployment, describe};
use crate::core::undo::{RevisionRef, UndoPlan, plan_undo};
use crate::core::workload::{ReplicaSetState, current_replica_set};
use crate::k8s::{deployment_state, deployments, replica_set_state, replica_sets, selector_string};
use crate::store::ActionResult;

impl Executor {
    pub(super) async fn undo_deployment_once(
        &self,
        undo: &UndoDeployment,
        gate: &mut Gate,
    ) -> Attempt {
        let what = format!("deployment {}/{}", undo.namespace, undo.name);
        let d_api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &undo.namespace, &deployments());
        let rs_api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &undo.namespace, &replica_sets());

        let list = |selector: String| {
            let rs_api = rs_api.clone();
            async move {
                self.timed(rs_api.list(&ListParams::default().labels(&selector)))
                    .await
            }
        };
        // `spec.selector` is immutable in apps/v1: the ReplicaSets are listed with the one the
        // index saw while the Deployment is read, which saves a round trip before the patch.
        // They are listed again below if the Deployment as read has another.
        let (got, early) = if undo.selector.is_empty() {
            (self.timed(d_api.get(&undo.name)).await, None)
        } else {
            let (got, listed) = tokio::join!(
                self.timed(d_api.get(&undo.name)),
                list(undo.selector.clone())
            );
            (got, Some(listed))
        };
        let obj = match got {
            Ok(obj) => obj,
            Err(e) => {
                return Attempt::Done(read_failed(
                    &format!("reading {what}"),
                    "get",
                    "deployments.apps",
                    e,
                ));
            }
        };
        let Some(deployment) = deployment_state(&obj) else {
            return Attempt::Done(failed(format!("{what} as read lacks metadata or spec")));
        };
        if deployment.uid != undo.uid {
            return Attempt::Done(skipped(
                Outcome::Superseded,
                format!(
                    "{what} was deleted and recreated since the alert was correlated; not acting on a new object"
                ),
            ));
        }
        let selector = obj
            .data
            .pointer("/spec/selector")
            .and_then(selector_string)
            .unwrap_or_default();
        if selector.is_empty() {
            return Attempt::Done(failed(format!("{what} has no usable spec.selector")));
        }
        let listed = match early {
            Some(listed) if selector == undo.selector => listed,
            _ => list(selector).await,
        };
        let listed = match listed {
            Ok(list) => list,
            Err(e) => {
                return Attempt::Done(read_failed(
                    &format!("listing ReplicaSets of {what}"),
                    "list",
                    "replicasets.apps",
                    e,
                ));
            }
        };
        let owned: Vec<ReplicaSetState> = listed
            .items
            .iter()
            .filter_map(replica_set_state)
            .filter(|rs| rs.owner_uid.as_deref() == Some(deployment.uid.as_str()))
            .collect();
        match current_replica_set(&deployment, owned.iter()) {
            Some(current) if current.uid == undo.blamed.uid => {}
            Some(current) => {
                return Attempt::Done(skipped(
                    Outcome::Superseded,
                    format!(
                        "{what} moved on to {} since the alert blamed {}; rolling back now would revert someone else's change",
                        describe(&RevisionRef::of(current)),
                        describe(&undo.blamed)
                    ),
                ));
            }
            None => {
                return Attempt::Done(skipped(
                    Outcome::Superseded,
                    format!(
                        "{what} is mid-rollout to a template no ReplicaSet has yet; not acting"
                    ),
                ));
            }
        }
        let (target, patch) = match plan_undo(&deployment, &owned, None) {
            UndoPlan::Patch { target, patch } => (target, patch),
            UndoPlan::AlreadyAtTarget { target } => {
                return Attempt::Done(ActionResult {
                    target: Some(target.clone()),
                    ..skipped(
                        Outcome::AlreadyAtTarget,
                        format!(
                            "skipped rollback: {what} already matches {}",
                            describe(&target)
                        ),
                    )
                });
            }
            UndoPlan::Paused => {
                return Attempt::Done(skipped(
                    Outcome::Paused,
                    format!("{what} is paused; kubectl refuses to roll back a paused deployment"),
                ));
            }
            UndoPlan::Unread { .. } => {
                return Attempt::Done(failed(format!(
                    "{what}: the target ReplicaSet was not read whole; not acting"
                )));
            }
            UndoPlan::NoHistory | UndoPlan::RevisionNotFound { .. } => {
                return Attempt::Done(skipped(
                    Outcome::NoHistory,
                    format!("no rollout history found for {what}"),
                ));
            }
        };
        if !gate.passes().await {
            return Attempt::Done(not_recorded(&what));
        }
        let written = self
            .send_json_patch(&d_api, &undo.name, &patch, undo.dry_run)
            .await;
        let (from, to) = (describe(&undo.blamed), describe(&target));
        write_answer(
            written,
            &what,
            "deployments.apps",
            || {
                info!(deployment = %undo.name, namespace = %undo.namespace, dry_run = undo.dry_run, "undo of {what} from {from} to {to}");
                ActionResult {
                    target: Some(target.clone()),
                    ..succeeded(
                        undo.dry_run,
                        Outcome::RolledBack,
                        format!("rolled back {what} from {from} to {to}"),
                        format!("the undo of {what} from {from} to {to}"),
                        json!({"patch": patch, "resource_version": deployment.resource_version,
                            "from_template": deployment.template.whole()}),
                    )
                }
            },
            &patch,
        )
    }
}
