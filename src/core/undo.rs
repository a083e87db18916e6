//! The plan of a Deployment undo, computed exactly as `kubectl rollout undo` computes it.
//!
//! kubectl (`pkg/polymorphichelpers/rollback.go`) refuses a paused Deployment, picks the owned
//! ReplicaSet with the second-highest revision (or the one asked for), skips when that template
//! already matches, and otherwise sends one JSON patch replacing `/spec/template` (without the
//! `pod-template-hash` label) and `/metadata/annotations` (the ReplicaSet's, minus a skip list,
//! plus the Deployment's own values for the skip-list keys). rollbackd adds a `test` of the
//! resourceVersion in front, so a Deployment that changed since it was read is not overwritten.

use serde_json::{Value, json};

use super::alert::LabelSet;
use super::workload::{DeploymentState, POD_TEMPLATE_HASH, ReplicaSetState, strip_label};

/// Annotations the Deployment keeps as they are when rolling back (kubectl `annotationsToSkip`).
pub const ANNOTATIONS_TO_SKIP: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

/// What an undo of a Deployment would do, decided without touching the cluster.
#[derive(Clone, Debug, PartialEq)]
pub enum UndoPlan {
    /// Send `patch` (a JSON patch) to move the Deployment to `target`.
    Patch { target: RevisionRef, patch: Value },
    /// The target's template is already the Deployment's: nothing to do.
    AlreadyAtTarget { target: RevisionRef },
    /// kubectl refuses to roll back a paused Deployment.
    Paused,
    /// No second revision to go back to.
    NoHistory,
    /// `--to-revision` named a revision that is not in the history.
    RevisionNotFound { revision: i64 },
    /// The target's template is known by its digest only (the index's summary), so no patch
    /// can be written: plans are made from objects read whole.
    Unread { target: RevisionRef },
}

/// A ReplicaSet named as a rollback target: name, uid, revision and image for humans.
#[derive(Clone, Debug, PartialEq)]
pub struct RevisionRef {
    pub name: String,
    pub uid: String,
    pub revision: i64,
    pub image: Option<String>,
}

impl RevisionRef {
    pub fn of(rs: &ReplicaSetState) -> RevisionRef {
        RevisionRef {
            name: rs.name.clone(),
            uid: rs.uid.clone(),
            revision: rs.revision.unwrap_or(0),
            image: rs.image().map(str::to_string),
        }
    }
}

/// Plans `kubectl rollout undo deployment/NAME [--to-revision=N]` over the ReplicaSets the
/// Deployment controls. `owned` must already be filtered by controller ownerReference.
pub fn plan_undo<'a>(
    deployment: &DeploymentState,
    owned: impl IntoIterator<Item = &'a ReplicaSetState>,
    to_revision: Option<i64>,
) -> UndoPlan {
    if deployment.paused {
        return UndoPlan::Paused;
    }
    let target = match select_target(owned, to_revision) {
        Ok(rs) => rs,
        Err(plan) => return plan,
    };
    let target_ref = RevisionRef::of(target);
    if target.template.same_as(&deployment.template) {
        return UndoPlan::AlreadyAtTarget { target: target_ref };
    }
    let Some(whole) = target.template.whole() else {
        return UndoPlan::Unread { target: target_ref };
    };
    let template = strip_label(whole, POD_TEMPLATE_HASH);
    let annotations = rollback_annotations(&deployment.annotations, &target.annotations);
    let patch = json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": deployment.resource_version},
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    ]);
    UndoPlan::Patch {
        target: target_ref,
        patch,
    }
}

/// kubectl's `deploymentRevision`: the named revision, or the second-highest one.
fn select_target<'a>(
    owned: impl IntoIterator<Item = &'a ReplicaSetState>,
    to_revision: Option<i64>,
) -> Result<&'a ReplicaSetState, UndoPlan> {
    let mut latest: Option<(i64, &ReplicaSetState)> = None;
    let mut previous: Option<(i64, &ReplicaSetState)> = None;
    for rs in owned {
        // An unparsable revision is skipped, as kubectl skips it.
        let Some(revision) = rs.revision else {
            continue;
        };
        if let Some(wanted) = to_revision {
            if wanted == revision {
                return Ok(rs);
            }
            continue;
        }
        if latest.is_none_or(|(v, _)| v < revision) {
            previous = latest;
            latest = Some((revision, rs));
        } else if previous.is_none_or(|(v, _)| v < revision) {
            previous = Some((revision, rs));
        }
    }
    if let Some(revision) = to_revision {
        return Err(UndoPlan::RevisionNotFound { revision });
    }
    previous.map(|(_, rs)| rs).ok_or(UndoPlan::NoHistory)
}

/// The annotations kubectl writes back: the target's, except the skip list, for which the
/// Deployment's own values are kept.
fn rollback_annotations(deployment: &LabelSet, target: &LabelSet) -> LabelSet {
    let mut out = LabelSet::new();
    for key in ANNOTATIONS_TO_SKIP {
        if let Some(v) = deployment.get(key) {
            out.insert(key.to_string(), v.clone());
        }
    }
    for (k, v) in target {
        if !ANNOTATIONS_TO_SKIP.contains(&k.as_str()) {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::workload::tests::{mk_deployment, mk_rs, ts};

    fn three_revisions() -> (DeploymentState, Vec<ReplicaSetState>) {
        let mut d = mk_deployment("web", "nginx:3");
        d.resource_version = "42".into();
        d.annotations
            .insert("deployment.kubernetes.io/revision".into(), "3".into());
        d.annotations.insert("team".into(), "payments".into());
        let mut rs2 = mk_rs("web", "b", "nginx:2", 2, ts(100));
        rs2.annotations
            .insert("kubernetes.io/change-cause".into(), "v2".into());
        rs2.annotations.insert(
            "deployment.kubernetes.io/desired-replicas".into(),
            "3".into(),
        );
        let rss = vec![
            mk_rs("web", "a", "nginx:1", 1, ts(0)),
            rs2,
            mk_rs("web", "c", "nginx:3", 3, ts(200)),
        ];
        (d, rss)
    }

    #[test]
    fn undo_targets_the_second_highest_revision_with_kubectls_patch() {
        let (d, rss) = three_revisions();
        let UndoPlan::Patch { target, patch } = plan_undo(&d, &rss, None) else {
            panic!("expected a patch");
        };
        assert_eq!(target.revision, 2);
        assert_eq!(target.name, "web-b");
        assert_eq!(
            patch[0],
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": "42"})
        );
        assert_eq!(patch[1]["path"], "/spec/template");
        assert_eq!(
            patch[1]["value"]["spec"]["containers"][0]["image"],
            "nginx:2"
        );
        assert!(
            patch[1]["value"]["metadata"]["labels"]
                .get(POD_TEMPLATE_HASH)
                .is_none()
        );
        assert_eq!(patch[1]["value"]["metadata"]["labels"]["app"], "web");
        // RS annotations minus the skip list, plus the Deployment's own skip-list values; the
        // Deployment's other annotations ("team") are replaced, as kubectl does.
        assert_eq!(
            patch[2]["value"],
            json!({"deployment.kubernetes.io/revision": "3", "kubernetes.io/change-cause": "v2"})
        );
    }

    #[test]
    fn undo_to_a_named_revision() {
        let (d, rss) = three_revisions();
        let UndoPlan::Patch { target, .. } = plan_undo(&d, &rss, Some(1)) else {
            panic!("expected a patch");
        };
        assert_eq!(target.name, "web-a");
        assert_eq!(
            plan_undo(&d, &rss, Some(9)),
            UndoPlan::RevisionNotFound { revision: 9 }
        );
    }

    #[test]
    fn paused_no_history_and_already_at_target() {
        let (mut d, rss) = three_revisions();
        assert_eq!(plan_undo(&d, &rss[2..], None), UndoPlan::NoHistory);
        d.template = rss[1].template.clone();
        assert!(
            matches!(plan_undo(&d, &rss, None), UndoPlan::AlreadyAtTarget { target } if target.revision == 2)
        );
        d.paused = true;
        assert_eq!(plan_undo(&d, &rss, None), UndoPlan::Paused);
    }

    #[test]
    fn replica_sets_without_a_parsable_revision_are_skipped() {
        let (d, mut rss) = three_revisions();
        rss[1].revision = None;
        let UndoPlan::Patch { target, .. } = plan_undo(&d, &rss, None) else {
            panic!("expected a patch");
        };
        assert_eq!(target.revision, 1);
    }
}
