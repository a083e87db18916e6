//! What the engine asks the executor to do, one variant per kind of revert.
//!
//! Every command names what it blames (so the executor can refuse when that is no longer what
//! runs) and what it reverts to, and carries `dry_run`. [`Command::intent`] is the row the store
//! writes before the executor calls the API.

use serde_json::Value;

use super::describe;
use crate::core::traffic::RouteWeight;
use crate::core::undo::RevisionRef;

#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    UndoDeployment(UndoDeployment),
    AbortRollout(AbortRollout),
    UndoRollout(UndoRollout),
    SwitchSelector(SwitchSelector),
    ResetWeights(ResetWeights),
    PauseWorkload(PauseWorkload),
    /// GitOps `suspend-and-undo`: an undo preceded by suspending the Application's sync.
    SuspendAndRevert(SuspendAndRevert),
    /// GitOps `sync-to-previous`: an Argo CD sync to the revision before the bad one.
    SyncToPrevious(SyncToPrevious),
}

/// The Argo CD Application that manages a workload.
#[derive(Clone, Debug, PartialEq)]
pub struct ApplicationRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// Suspend the Application's automated sync (its previous value kept in an annotation), then
/// carry out `revert` (an [`UndoDeployment`] or an [`UndoRollout`]) as usual.
#[derive(Clone, Debug, PartialEq)]
pub struct SuspendAndRevert {
    pub app: ApplicationRef,
    pub revert: Box<Command>,
}

/// Suspend the Application's automated sync and start a sync of it to `revision`, the one
/// before `bad_revision` in its history. The workload, blamed and target ReplicaSets are the
/// undo's, so that the store's "one cause, one rollback" and settling work as for an undo.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncToPrevious {
    pub app: ApplicationRef,
    /// `Deployment` or `Rollout`.
    pub workload_kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub blamed: RevisionRef,
    pub planned_target: RevisionRef,
    pub revision: String,
    pub bad_revision: String,
    pub dry_run: bool,
}

/// Pause a Deployment or an Argo Rollout instead of reverting it (`rollbackd.io/policy:
/// pause`): the bad revision stops rolling further, and a human rolls back (a release with a
/// schema migration cannot be reverted blindly).
#[derive(Clone, Debug, PartialEq)]
pub struct PauseWorkload {
    /// `Deployment` or `Rollout`.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The revision blamed; nothing is done if it is no longer the current one.
    pub blamed: RevisionRef,
    pub dry_run: bool,
}

impl PauseWorkload {
    /// The state key of "paused": the action's target, compared when settling it.
    pub fn paused_key(uid: &str) -> String {
        format!("paused:{uid}")
    }
}

/// `kubectl rollout undo` of one Deployment, away from the blamed ReplicaSet.
#[derive(Clone, Debug, PartialEq)]
pub struct UndoDeployment {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The ReplicaSet blamed; if it is no longer current at action time, nothing is done.
    pub blamed: RevisionRef,
    /// The target as planned from the index; the executor re-plans from fresh reads.
    pub planned_target: RevisionRef,
    /// `spec.selector` as the index saw it (empty if unknown).
    pub selector: String,
    pub dry_run: bool,
}

/// `kubectl argo rollouts abort`: only while the blamed update is in progress.
#[derive(Clone, Debug, PartialEq)]
pub struct AbortRollout {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The in-progress ReplicaSet (its pod hash is `status.currentPodHash`).
    pub blamed: RevisionRef,
    /// The stable ReplicaSet traffic goes back to.
    pub stable: RevisionRef,
    pub dry_run: bool,
}

/// `kubectl argo rollouts undo` of a promoted Rollout (patching its `workloadRef` Deployment
/// when it has one).
#[derive(Clone, Debug, PartialEq)]
pub struct UndoRollout {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub workload_ref: Option<String>,
    pub blamed: RevisionRef,
    pub planned_target: RevisionRef,
    pub dry_run: bool,
}

/// Switch a blue/green Service's selector back to the one before the blamed switch.
#[derive(Clone, Debug, PartialEq)]
pub struct SwitchSelector {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The live selector the alert blamed, and the one to go back to.
    pub blamed: Value,
    pub back_to: Value,
    pub blamed_key: String,
    pub target_key: String,
    pub dry_run: bool,
}

/// Send all weight back to the stable destination of an Istio VirtualService.
#[derive(Clone, Debug, PartialEq)]
pub struct ResetWeights {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub api_version: String,
    pub stable: String,
    pub canary: String,
    /// The live weights the alert blamed, and the weights to set.
    pub blamed: Vec<RouteWeight>,
    pub target: Vec<RouteWeight>,
    pub blamed_key: String,
    pub target_key: String,
    pub dry_run: bool,
}

/// What the store records as an action's intent, before the API is called.
#[derive(Clone, Debug, PartialEq)]
pub struct Intent {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub workload_uid: String,
    /// State keys (a ReplicaSet UID, or a traffic state key) of what is blamed and the target.
    pub blamed_key: String,
    pub blamed_name: String,
    pub target_key: String,
    pub target_name: String,
    pub dry_run: bool,
    /// One sentence: "undo of deployment default/web from revision 3 (…) to revision 2 (…)".
    pub text: String,
}

impl Command {
    pub fn dry_run(&self) -> bool {
        match self {
            Command::UndoDeployment(c) => c.dry_run,
            Command::AbortRollout(c) => c.dry_run,
            Command::UndoRollout(c) => c.dry_run,
            Command::SwitchSelector(c) => c.dry_run,
            Command::ResetWeights(c) => c.dry_run,
            Command::PauseWorkload(c) => c.dry_run,
            Command::SuspendAndRevert(c) => c.revert.dry_run(),
            Command::SyncToPrevious(c) => c.dry_run,
        }
    }

    pub fn intent(&self) -> Intent {
        let verb = |v: &str| {
            if self.dry_run() {
                format!("dry-run {v}")
            } else {
                v.to_string()
            }
        };
        match self {
            Command::UndoDeployment(c) => Intent {
                kind: "undo-deployment",
                namespace: c.namespace.clone(),
                name: c.name.clone(),
                workload_uid: c.uid.clone(),
                blamed_key: c.blamed.uid.clone(),
                blamed_name: c.blamed.name.clone(),
                target_key: c.planned_target.uid.clone(),
                target_name: c.planned_target.name.clone(),
                dry_run: c.dry_run,
                text: format!(
                    "{} of deployment {}/{} from {} to {}",
                    verb("undo"),
                    c.namespace,
                    c.name,
                    describe(&c.blamed),
                    describe(&c.planned_target)
                ),
            },
            Command::AbortRollout(c) => Intent {
                kind: "abort-rollout",
                namespace: c.namespace.clone(),
                name: c.name.clone(),
                workload_uid: c.uid.clone(),
                blamed_key: c.blamed.uid.clone(),
                blamed_name: c.blamed.name.clone(),
                target_key: c.stable.uid.clone(),
                target_name: c.stable.name.clone(),
                dry_run: c.dry_run,
                text: format!(
                    "{} of rollout {}/{}: the update to {} stops; traffic returns to stable {}",
                    verb("abort"),
                    c.namespace,
                    c.name,
                    describe(&c.blamed),
                    describe(&c.stable)
                ),
            },
            Command::UndoRollout(c) => Intent {
                kind: "undo-rollout",
                namespace: c.namespace.clone(),
                name: c.name.clone(),
                workload_uid: c.uid.clone(),
                blamed_key: c.blamed.uid.clone(),
                blamed_name: c.blamed.name.clone(),
                target_key: c.planned_target.uid.clone(),
                target_name: c.planned_target.name.clone(),
                dry_run: c.dry_run,
                text: format!(
                    "{} of rollout {}/{}{} from {} to {}",
                    verb("undo"),
                    c.namespace,
                    c.name,
                    c.workload_ref
                        .as_ref()
                        .map(|d| format!(" (patching its workloadRef deployment {d})"))
                        .unwrap_or_default(),
                    describe(&c.blamed),
                    describe(&c.planned_target)
                ),
            },
            Command::SwitchSelector(c) => Intent {
                kind: "switch-selector",
                namespace: c.namespace.clone(),
                name: c.name.clone(),
                workload_uid: c.uid.clone(),
                blamed_key: c.blamed_key.clone(),
                blamed_name: format!("selector {}", c.blamed),
                target_key: c.target_key.clone(),
                target_name: format!("selector {}", c.back_to),
                dry_run: c.dry_run,
                text: format!(
                    "{} of service {}/{} from selector {} back to {}",
                    verb("switch"),
                    c.namespace,
                    c.name,
                    c.blamed,
                    c.back_to
                ),
            },
            Command::PauseWorkload(c) => Intent {
                kind: if c.kind == "Rollout" {
                    "pause-rollout"
                } else {
                    "pause-deployment"
                },
                namespace: c.namespace.clone(),
                name: c.name.clone(),
                workload_uid: c.uid.clone(),
                blamed_key: c.blamed.uid.clone(),
                blamed_name: c.blamed.name.clone(),
                target_key: PauseWorkload::paused_key(&c.uid),
                target_name: "paused".into(),
                dry_run: c.dry_run,
                text: format!(
                    "{} of {} {}/{} at {} (rollbackd.io/policy: pause)",
                    verb("pause"),
                    c.kind.to_lowercase(),
                    c.namespace,
                    c.name,
                    describe(&c.blamed)
                ),
            },
            Command::ResetWeights(c) => Intent {
                kind: "reset-weights",
                namespace: c.namespace.clone(),
                name: c.name.clone(),
                workload_uid: c.uid.clone(),
                blamed_key: c.blamed_key.clone(),
                blamed_name: format!("weights {}", weights_text(&c.blamed)),
                target_key: c.target_key.clone(),
                target_name: format!("weights {}", weights_text(&c.target)),
                dry_run: c.dry_run,
                text: format!(
                    "{} of virtualservice {}/{}: {} to 100%, {} to 0% (from {})",
                    verb("reset"),
                    c.namespace,
                    c.name,
                    c.stable,
                    c.canary,
                    weights_text(&c.blamed)
                ),
            },
            Command::SuspendAndRevert(c) => {
                let inner = c.revert.intent();
                Intent {
                    kind: match inner.kind {
                        "undo-rollout" => "gitops-suspend-undo-rollout",
                        _ => "gitops-suspend-undo-deployment",
                    },
                    text: format!(
                        "{} of Argo CD Application {}/{}'s automated sync, then {}",
                        verb("suspension"),
                        c.app.namespace,
                        c.app.name,
                        inner.text
                    ),
                    ..inner
                }
            }
            Command::SyncToPrevious(c) => Intent {
                kind: if c.workload_kind == "Rollout" {
                    "gitops-sync-rollout"
                } else {
                    "gitops-sync-deployment"
                },
                namespace: c.namespace.clone(),
                name: c.name.clone(),
                workload_uid: c.uid.clone(),
                blamed_key: c.blamed.uid.clone(),
                blamed_name: c.blamed.name.clone(),
                target_key: c.planned_target.uid.clone(),
                target_name: c.planned_target.name.clone(),
                dry_run: c.dry_run,
                text: format!(
                    "{} of Argo CD Application {}/{} to revision {} (from {}), automated sync suspended, so that {} {}/{} goes from {} to {}",
                    verb("sync"),
                    c.app.namespace,
                    c.app.name,
                    c.revision,
                    c.bad_revision,
                    c.workload_kind.to_lowercase(),
                    c.namespace,
                    c.name,
                    describe(&c.blamed),
                    describe(&c.planned_target)
                ),
            },
        }
    }
}

/// "web/v1=90 web/v2=10" for the weighted routes.
pub fn weights_text(weights: &[RouteWeight]) -> String {
    weights
        .iter()
        .map(|w| format!("{}={}", w.key, w.weight))
        .collect::<Vec<_>>()
        .join(" ")
}
