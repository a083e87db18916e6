//! Probes: reading an object again to settle an action whose answer was lost.
//!
//! A [`Probe`] carries what an action's intent recorded (kind, object, workload UID, blamed and
//! target state keys), so the same probe works right after a lost answer and after a restart
//! from the store. It reads the live object and names its live state key; the pure
//! [`classify`] says applied, not applied, or neither.

use kube::api::{Api, DynamicObject, ListParams};
use serde_json::json;

use super::{CallError, Executor, live_text};
use crate::core::engine::Intent;
use crate::core::settle::{Settled, classify};
use crate::core::traffic::{TrafficKind, state_key};
use crate::core::workload::{ReplicaSetState, current_replica_set};
use crate::k8s::{
    deployment_state, deployments, replica_set_state, replica_sets, rollout_state, rollouts,
    selector_string, service_state, services, virtual_service_state, virtual_services,
};

/// What an action's intent recorded: enough to tell, from the live object, whether it applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// `undo-deployment`, `abort-rollout`, `undo-rollout`, `switch-selector`, `reset-weights`,
    /// or a GitOps kind (`gitops-suspend-undo-*`, `gitops-sync-*`), settled by its workload.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub workload_uid: String,
    pub blamed_key: String,
    pub target_key: String,
}

impl Probe {
    pub fn of(intent: &Intent) -> Probe {
        Probe {
            kind: intent.kind.to_string(),
            namespace: intent.namespace.clone(),
            name: intent.name.clone(),
            workload_uid: intent.workload_uid.clone(),
            blamed_key: intent.blamed_key.clone(),
            target_key: intent.target_key.clone(),
        }
    }
}

/// The live state: its key (as the intent would have recorded it) and a description.
type Live = (Option<String>, String);

impl Executor {
    /// Reads the object again and says whether the action applied, with the live state in words.
    /// An error means the object could not be read: the action stays unknown.
    pub async fn probe(&self, p: &Probe) -> Result<(Settled, String), CallError> {
        let replaced = |what: &str| {
            Ok((
                None,
                format!("{what} {}/{} was deleted or replaced", p.namespace, p.name),
            ))
        };
        let (key, live): Live = match p.kind.as_str() {
            // A GitOps action is applied once its workload runs the target, whether by the
            // undo after a suspension or by Argo CD's sync.
            "undo-deployment" | "gitops-suspend-undo-deployment" | "gitops-sync-deployment" => {
                self.live_deployment(p).await?
            }
            "undo-rollout" | "gitops-suspend-undo-rollout" | "gitops-sync-rollout" => {
                self.live_rollout_template(p).await?
            }
            "abort-rollout" => self.live_rollout_abort(p).await?,
            "switch-selector" => {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(self.client.clone(), &p.namespace, &services());
                match self
                    .timed(api.get_opt(&p.name))
                    .await?
                    .as_ref()
                    .and_then(service_state)
                {
                    Some(svc) if svc.uid == p.workload_uid => {
                        let selector = json!(svc.selector);
                        (
                            Some(state_key(TrafficKind::Service, &svc.uid, &selector)),
                            format!("selector {selector}"),
                        )
                    }
                    _ => replaced("service")?,
                }
            }
            "reset-weights" => {
                let mut found = None;
                for version in ["v1", "v1beta1"] {
                    let api: Api<DynamicObject> = Api::namespaced_with(
                        self.client.clone(),
                        &p.namespace,
                        &virtual_services(version),
                    );
                    match self.timed(api.get_opt(&p.name)).await {
                        Ok(obj) => {
                            found = obj.as_ref().and_then(virtual_service_state);
                            break;
                        }
                        // This version of the Istio API is not served; try the other.
                        Err(e) if e.is_not_found() => continue,
                        Err(e) => return Err(e),
                    }
                }
                match found {
                    Some(vs) if vs.uid == p.workload_uid => {
                        let weights = json!(vs.weights);
                        (
                            Some(state_key(TrafficKind::VirtualService, &vs.uid, &weights)),
                            format!("weights {weights}"),
                        )
                    }
                    _ => replaced("virtualservice")?,
                }
            }
            "pause-deployment" | "pause-rollout" => self.live_paused(p).await?,
            other => (None, format!("unknown action kind {other:?}")),
        };
        Ok((
            classify(&p.blamed_key, &p.target_key, key.as_deref(), &live),
            live,
        ))
    }

    async fn live_deployment(&self, p: &Probe) -> Result<Live, CallError> {
        let d_api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &p.namespace, &deployments());
        let obj = self.timed(d_api.get_opt(&p.name)).await?;
        let Some(deployment) = obj
            .as_ref()
            .and_then(deployment_state)
            .filter(|d| d.uid == p.workload_uid)
        else {
            return Ok((
                None,
                format!(
                    "deployment {}/{} was deleted or replaced",
                    p.namespace, p.name
                ),
            ));
        };
        let selector = obj
            .as_ref()
            .and_then(|o| o.data.pointer("/spec/selector"))
            .and_then(selector_string);
        let owned = self
            .owned_replica_sets(&p.namespace, &deployment.uid, selector.as_deref())
            .await?;
        let current = current_replica_set(&deployment, owned.iter());
        Ok((current.map(|rs| rs.uid.clone()), live_text(current)))
    }

    async fn live_rollout_template(&self, p: &Probe) -> Result<Live, CallError> {
        let Some(rollout) = self.read_rollout_opt(p).await? else {
            return Ok((
                None,
                format!("rollout {}/{} was deleted or replaced", p.namespace, p.name),
            ));
        };
        let template = match &rollout.workload_ref {
            Some(name) => {
                let d_api: Api<DynamicObject> =
                    Api::namespaced_with(self.client.clone(), &p.namespace, &deployments());
                match self
                    .timed(d_api.get_opt(name))
                    .await?
                    .as_ref()
                    .and_then(deployment_state)
                {
                    Some(d) => d.template,
                    None => {
                        return Ok((None, format!("its workloadRef deployment {name} is gone")));
                    }
                }
            }
            None => rollout.template.clone(),
        };
        let owned = self
            .owned_replica_sets(&p.namespace, &rollout.uid, None)
            .await?;
        let live = owned
            .iter()
            .filter(|rs| rs.template.same_as(&template))
            .max_by_key(|rs| rs.revision.unwrap_or(0));
        Ok((live.map(|rs| rs.uid.clone()), live_text(live)))
    }

    /// Paused is the pause's target; not paused is still the blamed state.
    async fn live_paused(&self, p: &Probe) -> Result<Live, CallError> {
        let ar = if p.kind == "pause-rollout" {
            rollouts()
        } else {
            deployments()
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &p.namespace, &ar);
        let obj = self.timed(api.get_opt(&p.name)).await?;
        let Some(obj) = obj.filter(|o| o.metadata.uid.as_deref() == Some(p.workload_uid.as_str()))
        else {
            return Ok((
                None,
                format!("{}/{} was deleted or replaced", p.namespace, p.name),
            ));
        };
        let paused = obj
            .data
            .pointer("/spec/paused")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        Ok(if paused {
            (Some(p.target_key.clone()), "paused".into())
        } else {
            (Some(p.blamed_key.clone()), "not paused".into())
        })
    }

    async fn live_rollout_abort(&self, p: &Probe) -> Result<Live, CallError> {
        let Some(rollout) = self.read_rollout_opt(p).await? else {
            return Ok((
                None,
                format!("rollout {}/{} was deleted or replaced", p.namespace, p.name),
            ));
        };
        if rollout.aborted {
            // An aborted update sends traffic back to stable: the abort's target.
            return Ok((Some(p.target_key.clone()), "the update is aborted".into()));
        }
        let owned = self
            .owned_replica_sets(&p.namespace, &rollout.uid, None)
            .await?;
        let updating = rollout
            .mid_update()
            .then(|| {
                owned
                    .iter()
                    .find(|rs| rs.pod_hash == rollout.current_pod_hash)
            })
            .flatten();
        let text = match updating {
            Some(_) => format!("not aborted; still updating: {}", live_text(updating)),
            None => "not aborted, and no update in progress".into(),
        };
        Ok((updating.map(|rs| rs.uid.clone()), text))
    }

    async fn read_rollout_opt(
        &self,
        p: &Probe,
    ) -> Result<Option<crate::core::rollout::RolloutState>, CallError> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &p.namespace, &rollouts());
        Ok(self
            .timed(api.get_opt(&p.name))
            .await?
            .as_ref()
            .and_then(rollout_state)
            .filter(|r| r.uid == p.workload_uid))
    }

    /// The ReplicaSets in `namespace` controlled by `owner_uid`.
    pub(super) async fn owned_replica_sets(
        &self,
        namespace: &str,
        owner_uid: &str,
        selector: Option<&str>,
    ) -> Result<Vec<ReplicaSetState>, CallError> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &replica_sets());
        let params = match selector {
            Some(s) if !s.is_empty() => ListParams::default().labels(s),
            _ => ListParams::default(),
        };
        let listed = self.timed(api.list(&params)).await?;
        Ok(listed
            .items
            .iter()
            .filter_map(replica_set_state)
            .filter(|rs| rs.owner_uid.as_deref() == Some(owner_uid))
            .collect())
    }
}
