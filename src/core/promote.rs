//! What follows rollbackd's undo of a fully promoted Argo Rollout: a full promotion, as
//! `kubectl argo rollouts undo` followed by `kubectl argo rollouts promote --full` would do,
//! unless the Rollout's `spec.rollbackWindow` already fast-tracks the revision.
//!
//! Without it an undo is an ordinary update to an old template: the controller runs the canary
//! steps (or the blue-green pause) again, so the good revision sits as a canary and the bad one
//! stays `status.stableRS` until someone promotes.
//!
//! Facts relied on (argo-rollouts, `pkg/kubectl-argo-rollouts/cmd/promote/promote.go`,
//! `getPatches` with `full`): `{"spec":{"paused":false}}` on the main resource when
//! `spec.paused`; `{"status":{"promoteFull":true}}` on the `status` subresource when
//! `status.currentPodHash != status.stableRS` (nothing otherwise); on a 404 from the status
//! subresource, `{"spec":{"paused":false},"status":{"promoteFull":true}}` on the main resource.
//! Pause conditions are not touched: the controller clears them (`rollout/canary.go`
//! `syncRolloutStatusCanary`, `reconcileCanaryPause` skip pauses while `promoteFull`).
//!
//! `promoteFull` only sticks once the controller has seen the new template: the reconcile that
//! notices a template change calls `resetRolloutStatus` (`rollout/sync.go`), which sets
//! `PromoteFull = false`. So the executor waits until `status.currentPodHash` is the target's
//! hash before sending it, as a human running the two commands one after the other does.
//!
//! `spec.rollbackWindow.revisions: N` (`isRollbackWithinWindow`, `rollout/sync.go`): a
//! rollback to a ReplicaSet created before the stable one, with fewer than N owned ReplicaSets
//! (those of Experiments, annotated `experiment.argoproj.io/name`, not counted) created
//! strictly between the two, is promoted without steps or analysis ("Rollback within
//! window", `shouldFullPromote`). `creationTimestamp`s have one-second resolution and are
//! compared with `Before`, so equal times do not count as earlier.

use serde_json::{Value, json};

use super::rollout::RolloutState;
use super::workload::ReplicaSetState;

/// Annotation on the ReplicaSets of an Argo Experiment; the rollback window ignores them.
pub const EXPERIMENT_NAME_ANNOTATION: &str = "experiment.argoproj.io/name";

/// What rollbackd does after its undo of a promoted Rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterUndo {
    /// Send `promote --full` once the controller has seen the undo.
    PromoteFull,
    /// `spec.rollbackWindow` covers the target: the controller promotes it without steps.
    WindowFastTracks { revisions: i64 },
    /// `policy.argo_promote_full_after_undo` is off: a human promotes.
    Disabled,
}

impl AfterUndo {
    /// How the timeline names the plan.
    pub fn as_str(&self) -> &'static str {
        match self {
            AfterUndo::PromoteFull => "promote-full",
            AfterUndo::WindowFastTracks { .. } => "rollback-window",
            AfterUndo::Disabled => "none: policy.argo_promote_full_after_undo is off",
        }
    }
}

/// Decides before the undo is sent; `stable` is the Rollout's stable (and current) ReplicaSet.
pub fn plan_after_undo(
    enabled: bool,
    rollout: &RolloutState,
    target: &ReplicaSetState,
    stable: &ReplicaSetState,
    owned: &[ReplicaSetState],
) -> AfterUndo {
    if let Some(revisions) = rollout.rollback_window
        && rollback_window_covers(revisions, target, stable, owned)
    {
        return AfterUndo::WindowFastTracks { revisions };
    }
    if enabled {
        AfterUndo::PromoteFull
    } else {
        AfterUndo::Disabled
    }
}

/// `isRollbackWithinWindow`: `target` is older than `stable` and fewer than `revisions` owned,
/// non-Experiment ReplicaSets were created strictly between them.
pub fn rollback_window_covers(
    revisions: i64,
    target: &ReplicaSetState,
    stable: &ReplicaSetState,
    owned: &[ReplicaSetState],
) -> bool {
    if revisions <= 0 || target.created_at >= stable.created_at {
        return false;
    }
    let between = owned
        .iter()
        .filter(|rs| !rs.annotations.contains_key(EXPERIMENT_NAME_ANNOTATION))
        .filter(|rs| target.created_at < rs.created_at && rs.created_at < stable.created_at)
        .count() as i64;
    between < revisions
}

/// Where the controller stands with the undo, read from the Rollout after it was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UndoSeen {
    /// Its status still describes the template before the undo.
    NotYet,
    /// The target is current and not stable yet: the moment for `promote --full`.
    Progressing,
    /// The target is already stable (a fast rollback): nothing to promote.
    Promoted,
    /// Another template is current: someone changed the Rollout since.
    Elsewhere(String),
}

pub fn undo_seen(rollout: &RolloutState, blamed_hash: &str, target_hash: &str) -> UndoSeen {
    let current = rollout.current_pod_hash.as_deref().unwrap_or_default();
    if !rollout.status_trusted() || current == blamed_hash {
        return UndoSeen::NotYet;
    }
    if current != target_hash {
        return UndoSeen::Elsewhere(current.to_string());
    }
    if rollout.stable_rs.as_deref() == Some(target_hash) {
        UndoSeen::Promoted
    } else {
        UndoSeen::Progressing
    }
}

/// The requests of `promote --full`, in the order the plugin sends them.
#[derive(Clone, Debug, PartialEq)]
pub struct PromoteFullPatches {
    /// Merge patch on the `status` subresource, when an update is in progress.
    pub status: Option<Value>,
    /// Merge patch on the main resource, when `spec.paused`.
    pub spec: Option<Value>,
    /// What replaces both when the status subresource answers 404.
    pub unified: Value,
}

/// `getPatches(rollout, full=true)`.
pub fn promote_full_patches(rollout: &RolloutState) -> PromoteFullPatches {
    PromoteFullPatches {
        status: rollout
            .mid_update()
            .then(|| json!({"status": {"promoteFull": true}})),
        spec: rollout.paused.then(|| json!({"spec": {"paused": false}})),
        unified: json!({"spec": {"paused": false}, "status": {"promoteFull": true}}),
    }
}

/// The command on-call runs when rollbackd did not (or could not) promote.
pub fn promote_command(namespace: &str, name: &str) -> String {
    format!("kubectl argo rollouts promote --full {name} -n {namespace}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::workload::tests::{mk_rs, mk_template, ts};

    fn mk_rollout(stable: &str, current: &str, window: Option<i64>) -> RolloutState {
        RolloutState {
            namespace: "default".into(),
            name: "web".into(),
            uid: "uid-ro".into(),
            resource_version: "9".into(),
            generation: 3,
            observed_generation: Some("3".into()),
            phase: Some("Healthy".into()),
            stable_rs: Some(stable.into()),
            current_pod_hash: Some(current.into()),
            aborted: false,
            paused: false,
            rollback_window: window,
            template: crate::core::workload::PodTemplate::read(mk_template("web:x", "web")),
            workload_ref: None,
            annotations: Default::default(),
            labels: Default::default(),
        }
    }

    /// Revisions 1..=n, one a minute, like `rollback_window_test.go`'s updates.
    fn history(n: i64) -> Vec<ReplicaSetState> {
        (1..=n)
            .map(|r| mk_rs("web", &format!("h{r}"), &format!("web:{r}"), r, ts(60 * r)))
            .collect()
    }

    #[test]
    fn the_window_counts_the_replica_sets_between_target_and_stable() {
        // rollback_window_test.go, revisions: 2: from 4 back to 2 is within (3 between is
        // one), from 5 back to 2 is not (3 and 4 are two).
        let rs = history(5);
        assert!(rollback_window_covers(2, &rs[1], &rs[3], &rs[..4]));
        assert!(!rollback_window_covers(2, &rs[1], &rs[4], &rs));
        // The previous revision is always within a window of 1 (nothing between).
        assert!(rollback_window_covers(1, &rs[3], &rs[4], &rs));
        assert!(!rollback_window_covers(0, &rs[3], &rs[4], &rs));
    }

    #[test]
    fn the_window_needs_an_older_target_and_skips_experiments() {
        let mut rs = history(3);
        // Same second: not `Before`, so not a rollback within the window.
        let mut same = rs[2].clone();
        same.created_at = rs[1].created_at;
        assert!(!rollback_window_covers(5, &rs[1], &same, &rs));
        assert!(!rollback_window_covers(5, &rs[2], &rs[1], &rs));
        rs[1]
            .annotations
            .insert(EXPERIMENT_NAME_ANNOTATION.into(), "exp".into());
        assert!(rollback_window_covers(1, &rs[0], &rs[2], &rs));
    }

    #[test]
    fn plan_prefers_the_window_then_the_policy() {
        let rs = history(2);
        let ro = mk_rollout("h2", "h2", Some(1));
        assert_eq!(
            plan_after_undo(true, &ro, &rs[0], &rs[1], &rs),
            AfterUndo::WindowFastTracks { revisions: 1 }
        );
        let ro = mk_rollout("h2", "h2", None);
        assert_eq!(
            plan_after_undo(true, &ro, &rs[0], &rs[1], &rs),
            AfterUndo::PromoteFull
        );
        assert_eq!(
            plan_after_undo(false, &ro, &rs[0], &rs[1], &rs),
            AfterUndo::Disabled
        );
    }

    #[test]
    fn the_undo_is_seen_once_the_target_is_current_in_a_trusted_status() {
        assert_eq!(
            undo_seen(&mk_rollout("h2", "h2", None), "h2", "h1"),
            UndoSeen::NotYet
        );
        let mut stale = mk_rollout("h2", "h1", None);
        stale.generation = 4;
        assert_eq!(undo_seen(&stale, "h2", "h1"), UndoSeen::NotYet);
        assert_eq!(
            undo_seen(&mk_rollout("h2", "h1", None), "h2", "h1"),
            UndoSeen::Progressing
        );
        assert_eq!(
            undo_seen(&mk_rollout("h1", "h1", None), "h2", "h1"),
            UndoSeen::Promoted
        );
        assert_eq!(
            undo_seen(&mk_rollout("h2", "h9", None), "h2", "h1"),
            UndoSeen::Elsewhere("h9".into())
        );
    }

    #[test]
    fn promote_full_sends_what_the_plugin_sends() {
        let mut ro = mk_rollout("h2", "h1", None);
        let p = promote_full_patches(&ro);
        assert_eq!(p.status, Some(json!({"status": {"promoteFull": true}})));
        assert_eq!(p.spec, None);
        ro.paused = true;
        ro.stable_rs = Some("h1".into());
        let p = promote_full_patches(&ro);
        assert_eq!(p.status, None);
        assert_eq!(p.spec, Some(json!({"spec": {"paused": false}})));
        assert_eq!(
            p.unified,
            json!({"spec": {"paused": false}, "status": {"promoteFull": true}})
        );
    }
}
