//! The executor: carries out the engine's commands against the Kubernetes API.
//!
//! An undo re-reads the Deployment and its ReplicaSets (as kubectl does), checks that the
//! rollout the alert blamed is still the current one, plans with the same pure function the
//! engine used, and sends one JSON patch guarded by a resourceVersion `test`. A 409, or a 422
//! from a failed `test`, means the Deployment changed underneath: read again and decide again,
//! at most [`MAX_ATTEMPTS`] times. Any other answer is a failure reported with the API's words;
//! nothing is retried blindly.

use std::time::Duration;

use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::{deployment_state, deployments, replica_set_state, replica_sets, selector_string};
use crate::core::engine::{Command, Outcome, UndoDeployment, describe};
use crate::core::undo::{UndoPlan, plan_undo};
use crate::core::workload::{ReplicaSetState, current_replica_set};
use crate::store::{ActionResult, ActionStatus};

pub const MAX_ATTEMPTS: usize = 3;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The field manager rollbackd's writes are recorded under.
pub const FIELD_MANAGER: &str = "rollbackd";

#[derive(Clone)]
pub struct Executor {
    client: kube::Client,
}

/// Why one attempt did not finish the job.
enum Attempt {
    Done(ActionResult),
    /// The Deployment changed between read and write; worth reading again.
    Conflict(String),
}

impl Executor {
    pub fn new(client: kube::Client) -> Executor {
        Executor { client }
    }

    pub async fn execute(&self, command: &Command) -> ActionResult {
        match command {
            Command::UndoDeployment(undo) => self.undo_deployment(undo).await,
        }
    }

    async fn undo_deployment(&self, undo: &UndoDeployment) -> ActionResult {
        let mut conflicts = Vec::new();
        for attempt in 1..=MAX_ATTEMPTS {
            match self.undo_once(undo).await {
                Attempt::Done(mut result) => {
                    if !conflicts.is_empty() {
                        result.data["conflicts"] = json!(conflicts);
                    }
                    return result;
                }
                Attempt::Conflict(answer) => {
                    warn!(deployment = %undo.name, namespace = %undo.namespace, attempt, %answer,
                        "deployment changed while rolling back; reading it again");
                    conflicts.push(json!({"attempt": attempt, "answer": answer}));
                }
            }
        }
        ActionResult {
            status: ActionStatus::Failed,
            outcome: Outcome::Failed,
            message: format!(
                "deployment {}/{} kept changing: {MAX_ATTEMPTS} attempts met a conflict; nothing was changed",
                undo.namespace, undo.name
            ),
            target: None,
            data: json!({"conflicts": conflicts}),
        }
    }

    async fn undo_once(&self, undo: &UndoDeployment) -> Attempt {
        let what = format!("deployment {}/{}", undo.namespace, undo.name);
        let d_api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &undo.namespace, &deployments());
        let rs_api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &undo.namespace, &replica_sets());

        let obj = match timed(d_api.get(&undo.name)).await {
            Ok(obj) => obj,
            Err(e) => return Attempt::Done(failed(format!("reading {what} failed: {e}"))),
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
        let listed = match timed(rs_api.list(&ListParams::default().labels(&selector))).await {
            Ok(list) => list,
            Err(e) => {
                return Attempt::Done(failed(format!("listing ReplicaSets of {what} failed: {e}")));
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
                        describe(&crate::core::undo::RevisionRef::of(current)),
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
            UndoPlan::NoHistory | UndoPlan::RevisionNotFound { .. } => {
                return Attempt::Done(skipped(
                    Outcome::NoHistory,
                    format!("no rollout history found for {what}"),
                ));
            }
        };
        let json_patch: json_patch::Patch = match serde_json::from_value(patch.clone()) {
            Ok(p) => p,
            Err(e) => {
                return Attempt::Done(failed(format!("internal error building the patch: {e}")));
            }
        };
        let mut params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        if undo.dry_run {
            params = params.dry_run();
        }
        match timed(d_api.patch(&undo.name, &params, &Patch::Json::<()>(json_patch))).await {
            Ok(_) => {
                let (outcome, message) = if undo.dry_run {
                    (
                        Outcome::WouldRollBack,
                        format!(
                            "dry-run: the API server accepted the undo of {what} from {} to {}; nothing was changed",
                            describe(&undo.blamed),
                            describe(&target)
                        ),
                    )
                } else {
                    (
                        Outcome::RolledBack,
                        format!(
                            "rolled back {what} from {} to {}",
                            describe(&undo.blamed),
                            describe(&target)
                        ),
                    )
                };
                info!(deployment = %undo.name, namespace = %undo.namespace, dry_run = undo.dry_run, %message);
                Attempt::Done(ActionResult {
                    status: ActionStatus::Succeeded,
                    outcome,
                    message,
                    target: Some(target),
                    data: json!({"patch": patch, "resource_version": deployment.resource_version}),
                })
            }
            Err(CallError::Api(e)) if e.code == 409 || e.code == 422 => {
                Attempt::Conflict(format!("{} {}: {}", e.code, e.reason, e.message))
            }
            Err(e) => Attempt::Done(ActionResult {
                data: json!({"patch": patch}),
                ..failed(format!("patching {what} failed: {e}; nothing was changed"))
            }),
        }
    }
}

fn failed(message: String) -> ActionResult {
    ActionResult {
        status: ActionStatus::Failed,
        outcome: Outcome::Failed,
        message,
        target: None,
        data: Value::Null,
    }
}

fn skipped(outcome: Outcome, message: String) -> ActionResult {
    ActionResult {
        status: ActionStatus::Skipped,
        outcome,
        message,
        target: None,
        data: Value::Null,
    }
}

#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("the API server answered {} {}: {}", .0.code, .0.reason, .0.message)]
    Api(Box<kube::core::Status>),
    #[error("{0}")]
    Client(kube::Error),
    #[error("no answer within {}s", CALL_TIMEOUT.as_secs())]
    Timeout,
}

async fn timed<T>(call: impl Future<Output = Result<T, kube::Error>>) -> Result<T, CallError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Err(_) => Err(CallError::Timeout),
        Ok(Ok(v)) => Ok(v),
        Ok(Err(kube::Error::Api(status))) => Err(CallError::Api(status)),
        Ok(Err(e)) => Err(CallError::Client(e)),
    }
}
