//! Argo Rollouts: abort an update in progress, undo a promoted Rollout.
//!
//! Abort is what `kubectl argo rollouts abort` sends: a merge patch `{"status":{"abort":true}}`
//! on the status subresource, or on the main resource when the API has no status subresource
//! (404). It is only sent while the update the alert blamed is still in progress: an abort with
//! nothing in progress is harmful (argo-rollouts#1292). Undo is what
//! `kubectl argo rollouts undo` sends: a JSON patch of `/spec/template` of the Rollout, or of
//! the Deployment its `workloadRef` names. After the undo, `argo_promote.rs` fully promotes
//! the Rollout (`kubectl argo rollouts promote --full`) unless its `spec.rollbackWindow`
//! already fast-tracks the revision or `policy.argo_promote_full_after_undo` is off; the result
//! says both steps.

use kube::api::{Api, DynamicObject, ListParams, Patch};
use serde_json::json;
use tracing::info;

use super::argo_promote::UndoTarget;
use super::{
    Attempt, Executor, api_answer, failed, patch_params, read_failed, skipped, succeeded,
    write_answer,
};
use crate::core::engine::{AbortRollout, Outcome, UndoRollout, describe};
use crate::core::promote::{AfterUndo, plan_after_undo};
use crate::core::rollout::{RolloutState, RolloutUndoPlan, abort_patch, plan_rollout_undo};
use crate::core::workload::ReplicaSetState;
use crate::k8s::patch::send_patch;
use crate::k8s::{
    deployment_state, deployments, replica_set_state, replica_sets, rollout_state, rollouts,
};
use crate::store::ActionResult;

impl Executor {
    async fn read_rollout(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<RolloutState, ActionResult> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &rollouts());
        let what = format!("rollout {namespace}/{name}");
        let obj = self.timed(api.get(name)).await.map_err(|e| {
            read_failed(&format!("reading {what}"), "get", "rollouts.argoproj.io", e)
        })?;
        let rollout = rollout_state(&obj)
            .ok_or_else(|| failed(format!("{what} as read lacks metadata or spec")))?;
        if rollout.uid != uid {
            return Err(skipped(
                Outcome::Superseded,
                format!(
                    "{what} was deleted and recreated since the alert was correlated; not acting on a new object"
                ),
            ));
        }
        if !rollout.status_trusted() {
            return Err(skipped(
                Outcome::StatusNotObserved,
                format!("{what}'s status does not describe its current generation; not acting"),
            ));
        }
        Ok(rollout)
    }

    pub(super) async fn abort_rollout_once(&self, c: &AbortRollout) -> Attempt {
        let what = format!("rollout {}/{}", c.namespace, c.name);
        let rollout = match self.read_rollout(&c.namespace, &c.name, &c.uid).await {
            Ok(r) => r,
            Err(result) => return Attempt::Done(result),
        };
        let blamed_hash = self.pod_hash_of(&c.namespace, &c.blamed.name).await;
        if !rollout.mid_update() || rollout.current_pod_hash != blamed_hash {
            return Attempt::Done(skipped(
                Outcome::Superseded,
                format!(
                    "{what} is no longer updating to {}; an abort with nothing in progress would do harm, so none was sent",
                    describe(&c.blamed)
                ),
            ));
        }
        if rollout.aborted {
            return Attempt::Done(skipped(
                Outcome::AlreadyRolledBack,
                format!("{what} is already aborted"),
            ));
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &c.namespace, &rollouts());
        let params = patch_params(c.dry_run);
        let patch = abort_patch();
        let mut written = self
            .timed(send_patch(
                &api,
                &c.name,
                Some("status"),
                &params,
                &Patch::Merge(&patch),
            ))
            .await
            .map(|obj| api_answer(&obj, c.dry_run));
        let mut on = "rollouts/status";
        if written.as_ref().is_err_and(|e| e.is_not_found()) {
            written = self
                .timed(send_patch(
                    &api,
                    &c.name,
                    None,
                    &params,
                    &Patch::Merge(&patch),
                ))
                .await
                .map(|obj| api_answer(&obj, c.dry_run));
            on = "rollouts";
        }
        crate::fault::point(crate::fault::AFTER_PATCH).await;
        let (from, to) = (describe(&c.blamed), describe(&c.stable));
        write_answer(
            written,
            &what,
            "rollouts/status in argoproj.io",
            || {
                info!(rollout = %c.name, namespace = %c.namespace, dry_run = c.dry_run, "abort of {what}");
                ActionResult {
                    target: Some(c.stable.clone()),
                    ..succeeded(
                        c.dry_run,
                        Outcome::Aborted,
                        format!(
                            "aborted the update of {what} to {from}; traffic is back on stable {to}"
                        ),
                        format!("the abort of {what}'s update to {from}"),
                        json!({"patch": patch, "subresource": on}),
                    )
                }
            },
            &patch,
        )
    }

    async fn pod_hash_of(&self, namespace: &str, rs_name: &str) -> Option<String> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &replica_sets());
        let rs = self.timed(api.get(rs_name)).await.ok()?;
        replica_set_state(&rs)?.pod_hash
    }

    pub(super) async fn undo_rollout_once(&self, c: &UndoRollout) -> Attempt {
        let what = format!("rollout {}/{}", c.namespace, c.name);
        let rollout = match self.read_rollout(&c.namespace, &c.name, &c.uid).await {
            Ok(r) => r,
            Err(result) => return Attempt::Done(result),
        };
        if rollout.mid_update() {
            return Attempt::Done(skipped(
                Outcome::Superseded,
                format!(
                    "{what} is updating again since the alert was correlated; not undoing under it"
                ),
            ));
        }
        let rs_api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &c.namespace, &replica_sets());
        let listed = match self.timed(rs_api.list(&ListParams::default())).await {
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
            .filter(|rs| rs.owner_uid.as_deref() == Some(rollout.uid.as_str()))
            .collect();
        let current = owned
            .iter()
            .find(|rs| rs.pod_hash == rollout.current_pod_hash);
        if current.map(|rs| rs.uid.as_str()) != Some(c.blamed.uid.as_str()) {
            return Attempt::Done(skipped(
                Outcome::Superseded,
                format!(
                    "{what} no longer runs {}; not undoing someone else's change",
                    describe(&c.blamed)
                ),
            ));
        }
        // With workloadRef the template lives in (and is patched on) the Deployment.
        let d_api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &c.namespace, &deployments());
        let (live, resource_version) = match &c.workload_ref {
            Some(name) => match self.timed(d_api.get(name)).await {
                Ok(obj) => match deployment_state(&obj) {
                    Some(d) => (d.template, d.resource_version),
                    None => {
                        return Attempt::Done(failed(format!(
                            "the workloadRef deployment {name} of {what} as read lacks metadata or spec"
                        )));
                    }
                },
                Err(e) => {
                    return Attempt::Done(read_failed(
                        &format!("reading the workloadRef deployment {name} of {what}"),
                        "get",
                        "deployments.apps",
                        e,
                    ));
                }
            },
            None => (rollout.template.clone(), rollout.resource_version.clone()),
        };
        let (target, patch) = match plan_rollout_undo(&live, &resource_version, &owned) {
            RolloutUndoPlan::Patch { target, patch } => (target, patch),
            RolloutUndoPlan::AlreadyAtTarget { target } => {
                return Attempt::Done(skipped(
                    Outcome::AlreadyAtTarget,
                    format!(
                        "skipped rollback: {what} already matches {}",
                        describe(&target)
                    ),
                ));
            }
            RolloutUndoPlan::Unread { .. } => {
                return Attempt::Done(failed(format!(
                    "{what}: the target ReplicaSet was not read whole; not acting"
                )));
            }
            RolloutUndoPlan::NoHistory => {
                return Attempt::Done(skipped(
                    Outcome::NoHistory,
                    format!("no rollout history found for {what}"),
                ));
            }
        };
        let target_rs = owned.iter().find(|rs| rs.uid == target.uid);
        let after = match (target_rs, current) {
            (Some(t), Some(s)) => {
                plan_after_undo(self.settings.argo_promote_full, &rollout, t, s, &owned)
            }
            _ => AfterUndo::PromoteFull,
        };
        let written = match &c.workload_ref {
            Some(name) => self.send_json_patch(&d_api, name, &patch, c.dry_run).await,
            None => {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(self.client.clone(), &c.namespace, &rollouts());
                self.send_json_patch(&api, &c.name, &patch, c.dry_run).await
            }
        };
        let resource = if c.workload_ref.is_some() {
            "deployments.apps"
        } else {
            "rollouts.argoproj.io"
        };
        let (from, to) = (describe(&c.blamed), describe(&target));
        let patched = match &c.workload_ref {
            Some(d) => format!("deployment {}/{d}", c.namespace),
            None => what.clone(),
        };
        if written.is_ok() && !c.dry_run {
            // The undo stands; what follows it is the promotion (or why there is none).
            let hash = |rs: Option<&ReplicaSetState>| {
                rs.and_then(|rs| rs.pod_hash.clone()).unwrap_or_default()
            };
            let (blamed_hash, target_hash) = (hash(current), hash(target_rs));
            let t = UndoTarget {
                blamed_hash: &blamed_hash,
                target_hash: &target_hash,
                from: &from,
                to: &to,
            };
            let step = self.after_rollout_undo(c, &after, &t).await;
            info!(rollout = %c.name, namespace = %c.namespace, "undo of {what}; {}", step.clause);
            return Attempt::Done(ActionResult {
                target: Some(target.clone()),
                ..succeeded(
                    false,
                    Outcome::RolledBack,
                    format!(
                        "rolled back {what} from {from} to {to} (patched {patched}); {}",
                        step.clause
                    ),
                    String::new(),
                    json!({"patch": patch, "patched": patched, "promote_full": step.data,
                        "answer": written.as_ref().ok(), "from_template": live.whole()}),
                )
            });
        }
        write_answer(
            written,
            &patched,
            resource,
            || ActionResult {
                target: Some(target.clone()),
                ..succeeded(
                    c.dry_run,
                    Outcome::RolledBack,
                    format!("rolled back {what} from {from} to {to} (patched {patched})"),
                    format!("the undo of {what} from {from} to {to}"),
                    json!({"patch": patch, "patched": patched, "after_undo": after.as_str(),
                        "from_template": live.whole()}),
                )
            },
            &patch,
        )
    }
}
