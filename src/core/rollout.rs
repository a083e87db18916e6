//! Argo Rollouts (`argoproj.io/v1alpha1`) as the engine sees them, and how to revert one.
//!
//! A Rollout is *mid-update* while `status.stableRS != status.currentPodHash`: then the right
//! revert is an abort, which sends traffic back to the stable ReplicaSet. Once promoted
//! (stable == current), the right revert is an undo to the previous revision, like
//! `kubectl argo rollouts undo`: a JSON patch of `/spec/template` (of the Deployment named by
//! `spec.workloadRef`, when there is one). Status is only trusted when `observedGeneration`
//! (a string in Argo) equals `metadata.generation`. Aborting a Rollout with nothing in progress
//! is harmful (argo-rollouts#1292), so that is never planned.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::alert::LabelSet;
use super::undo::RevisionRef;
use super::workload::{
    CurrentRollout, ObjectKey, PodTemplate, ReplicaSetState, WorkloadIndex, strip_label,
};

/// The pod-template-hash label of Argo Rollouts' ReplicaSets.
pub const ROLLOUT_HASH_LABEL: &str = "rollouts-pod-template-hash";
/// The revision annotation on a Rollout's ReplicaSets.
pub const ROLLOUT_REVISION_ANNOTATION: &str = "rollout.argoproj.io/revision";

#[derive(Clone, Debug, PartialEq)]
pub struct RolloutState {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    pub generation: i64,
    /// `status.observedGeneration`, a string in Argo.
    pub observed_generation: Option<String>,
    pub phase: Option<String>,
    /// Pod hash of the stable ReplicaSet.
    pub stable_rs: Option<String>,
    /// Pod hash of the ReplicaSet of the current template.
    pub current_pod_hash: Option<String>,
    pub aborted: bool,
    /// `spec.paused`.
    pub paused: bool,
    /// `spec.rollbackWindow.revisions`: rollbacks this close are promoted without steps.
    pub rollback_window: Option<i64>,
    /// `spec.template`; that of `Null` when the template comes from `spec.workloadRef`.
    pub template: PodTemplate,
    /// The Deployment named by `spec.workloadRef`.
    pub workload_ref: Option<String>,
    /// `metadata.labels` and `metadata.annotations` (Argo CD's tracking lives there).
    pub labels: LabelSet,
    pub annotations: LabelSet,
}

impl RolloutState {
    /// Whether `status` describes the current spec.
    pub fn status_trusted(&self) -> bool {
        self.observed_generation.as_deref() == Some(self.generation.to_string().as_str())
    }

    /// An update is in progress: the current pod hash is not the stable one.
    pub fn mid_update(&self) -> bool {
        matches!((&self.stable_rs, &self.current_pod_hash), (Some(s), Some(c)) if s != c)
    }
}

impl WorkloadIndex {
    pub fn apply_rollout(&mut self, rollout: RolloutState, now: Timestamp) {
        let uid = rollout.uid.clone();
        let key = (rollout.namespace.clone(), rollout.name.clone());
        if let Some(old) = self.rollouts.insert(key.clone(), rollout) {
            self.rollout_keys.remove(&old.uid);
        }
        self.rollout_keys.insert(uid.clone(), key);
        self.note_current(&uid, now);
    }

    pub fn delete_rollout(&mut self, namespace: &str, name: &str) {
        if let Some(old) = self
            .rollouts
            .remove(&(namespace.to_string(), name.to_string()))
        {
            self.rollout_keys.remove(&old.uid);
        }
    }

    pub fn reset_rollouts(&mut self, scope: Option<&str>, all: Vec<RolloutState>, now: Timestamp) {
        self.rollouts
            .retain(|(ns, _), _| scope.is_some_and(|s| s != ns));
        self.rollouts.extend(
            all.into_iter()
                .map(|r| ((r.namespace.clone(), r.name.clone()), r)),
        );
        self.forget_gone_and_note(now);
    }

    pub fn rollout(&self, namespace: &str, name: &str) -> Option<&RolloutState> {
        self.rollouts
            .get(&(namespace.to_string(), name.to_string()))
    }

    pub fn rollouts_in(&self, namespace: &str) -> impl Iterator<Item = &RolloutState> + '_ {
        let namespace = namespace.to_string();
        self.rollouts
            .iter()
            .filter(move |((ns, _), _)| *ns == namespace)
            .map(|(_, r)| r)
    }

    /// The Rollout that controls a ReplicaSet, if any.
    pub fn rollout_owner_of(&self, rs: &ReplicaSetState) -> Option<&RolloutState> {
        let key = self.rollout_keys.get(rs.owner_uid.as_deref()?)?;
        self.rollouts.get(key)
    }

    /// The Rollout whose `workloadRef` names this Deployment.
    pub fn rollout_referencing(&self, namespace: &str, deployment: &str) -> Option<&RolloutState> {
        self.rollouts_in(namespace)
            .find(|r| r.workload_ref.as_deref() == Some(deployment))
    }

    /// The pod template a Rollout runs: its own, or its referenced Deployment's.
    pub fn rollout_template<'a>(&'a self, rollout: &'a RolloutState) -> Option<&'a PodTemplate> {
        match &rollout.workload_ref {
            Some(name) => self
                .deployment(&rollout.namespace, name)
                .map(|d| &d.template),
            None => Some(&rollout.template),
        }
    }

    pub(super) fn rollout_current_rs(&self, rollout: &RolloutState) -> Option<&ReplicaSetState> {
        let hash = rollout.current_pod_hash.as_deref()?;
        self.replica_sets_owned_by(&rollout.namespace, &rollout.uid)
            .find(|rs| rs.pod_hash.as_deref() == Some(hash))
    }

    /// The Rollout's current ReplicaSet and since when it is current.
    pub fn current_of_rollout(&self, rollout: &RolloutState) -> Option<CurrentRollout<'_>> {
        let rs = self.rollout_current_rs(rollout)?;
        Some(CurrentRollout {
            replica_set: rs,
            since: self.since(&rollout.uid, rs),
        })
    }

    pub fn rollout_key(rollout: &RolloutState) -> ObjectKey {
        (rollout.namespace.clone(), rollout.name.clone())
    }
}

/// What reverting a promoted Rollout would do.
#[derive(Clone, Debug, PartialEq)]
pub enum RolloutUndoPlan {
    Patch {
        target: RevisionRef,
        patch: Value,
    },
    AlreadyAtTarget {
        target: RevisionRef,
    },
    NoHistory,
    /// The target's template is known by its digest only (see `UndoPlan::Unread`).
    Unread {
        target: RevisionRef,
    },
}

/// `kubectl argo rollouts undo`: the owned ReplicaSet with the second-highest revision; skip
/// when its template (without `rollouts-pod-template-hash`) is already the live one; else a
/// JSON patch of `/spec/template`, guarded by a `test` of the patched object's resourceVersion.
pub fn plan_rollout_undo<'a>(
    live_template: &PodTemplate,
    resource_version: &str,
    owned: impl IntoIterator<Item = &'a ReplicaSetState>,
) -> RolloutUndoPlan {
    let mut by_revision: Vec<&ReplicaSetState> = owned
        .into_iter()
        .filter(|rs| rs.revision.is_some())
        .collect();
    by_revision.sort_by_key(|rs| std::cmp::Reverse(rs.revision.unwrap_or(0)));
    let Some(target) = by_revision.get(1) else {
        return RolloutUndoPlan::NoHistory;
    };
    let target_ref = RevisionRef::of(target);
    if target.template.same_as(live_template) {
        return RolloutUndoPlan::AlreadyAtTarget { target: target_ref };
    }
    let Some(whole) = target.template.whole() else {
        return RolloutUndoPlan::Unread { target: target_ref };
    };
    let template = strip_label(whole, ROLLOUT_HASH_LABEL);
    RolloutUndoPlan::Patch {
        target: target_ref,
        patch: json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
            {"op": "replace", "path": "/spec/template", "value": template},
        ]),
    }
}

/// The abort `kubectl argo rollouts abort` sends (a merge patch on the status subresource).
pub fn abort_patch() -> Value {
    json!({"status": {"abort": true}})
}
