//! The executor: carries out the engine's commands against the Kubernetes API.
//!
//! Every command re-reads what it changes, refuses when the state the alert blamed is no longer
//! the live one (`superseded`), and writes with a resourceVersion precondition. A 409, or a 422
//! from a failed `test` op, means the object changed underneath: read again and decide again,
//! at most [`MAX_ATTEMPTS`] times. Any other answer is a failure reported with the API's words;
//! nothing is retried blindly.

mod argo;
mod deployment;
mod traffic;

use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use tracing::warn;

use crate::core::engine::{Command, Outcome};
use crate::store::{ActionResult, ActionStatus};

pub const MAX_ATTEMPTS: usize = 3;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The field manager rollbackd's writes are recorded under.
pub const FIELD_MANAGER: &str = "rollbackd";

#[derive(Clone)]
pub struct Executor {
    client: kube::Client,
}

/// How one attempt ended.
enum Attempt {
    Done(ActionResult),
    /// The object changed between read and write; worth reading again.
    Conflict(String),
}

impl Executor {
    pub fn new(client: kube::Client) -> Executor {
        Executor { client }
    }

    pub async fn execute(&self, command: &Command) -> ActionResult {
        let intent = command.intent();
        let mut conflicts = Vec::new();
        for attempt in 1..=MAX_ATTEMPTS {
            let outcome = match command {
                Command::UndoDeployment(c) => self.undo_deployment_once(c).await,
                Command::AbortRollout(c) => self.abort_rollout_once(c).await,
                Command::UndoRollout(c) => self.undo_rollout_once(c).await,
                Command::SwitchSelector(c) => self.switch_selector_once(c).await,
                Command::ResetWeights(c) => self.reset_weights_once(c).await,
            };
            match outcome {
                Attempt::Done(mut result) => {
                    if !conflicts.is_empty() {
                        result.data["conflicts"] = json!(conflicts);
                    }
                    return result;
                }
                Attempt::Conflict(answer) => {
                    warn!(kind = intent.kind, namespace = %intent.namespace, name = %intent.name, attempt, %answer,
                        "the object changed while reverting it; reading it again");
                    conflicts.push(json!({"attempt": attempt, "answer": answer}));
                }
            }
        }
        ActionResult {
            status: ActionStatus::Failed,
            outcome: Outcome::Failed,
            message: format!(
                "{}/{} kept changing: {MAX_ATTEMPTS} attempts met a conflict; nothing was changed",
                intent.namespace, intent.name
            ),
            target: None,
            data: json!({"conflicts": conflicts}),
        }
    }
}

fn patch_params(dry_run: bool) -> PatchParams {
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    if dry_run { params.dry_run() } else { params }
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

/// What a successful write returns: `done` as said after a real change, `would` in dry-run.
fn succeeded(
    dry_run: bool,
    outcome: Outcome,
    done: String,
    would: String,
    data: Value,
) -> ActionResult {
    let (outcome, message) = if dry_run {
        (
            Outcome::WouldRollBack,
            format!("dry-run: the API server accepted {would}; nothing was changed"),
        )
    } else {
        (outcome, done)
    };
    ActionResult {
        status: ActionStatus::Succeeded,
        outcome,
        message,
        target: None,
        data,
    }
}

/// Maps a write's answer: conflicts are retried, other errors reported.
fn write_answer(
    result: Result<(), CallError>,
    what: &str,
    ok: impl FnOnce() -> ActionResult,
    patch: &Value,
) -> Attempt {
    match result {
        Ok(()) => Attempt::Done(ok()),
        Err(CallError::Api(e)) if e.code == 409 || e.code == 422 => {
            Attempt::Conflict(format!("{} {}: {}", e.code, e.reason, e.message))
        }
        Err(e) => Attempt::Done(ActionResult {
            data: json!({"patch": patch}),
            ..failed(format!("patching {what} failed: {e}; nothing was changed"))
        }),
    }
}

/// Sends a JSON patch built by the core to `name`, as a dry run when asked.
async fn send_json_patch(
    api: &Api<DynamicObject>,
    name: &str,
    patch: &Value,
    dry_run: bool,
) -> Result<(), CallError> {
    let patch: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| CallError::BadPatch(e.to_string()))?;
    timed(api.patch(name, &patch_params(dry_run), &Patch::Json::<()>(patch)))
        .await
        .map(drop)
}

#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("the API server answered {} {}: {}", .0.code, .0.reason, .0.message)]
    Api(Box<kube::core::Status>),
    #[error("{0}")]
    Client(kube::Error),
    #[error("no answer within {}s", CALL_TIMEOUT.as_secs())]
    Timeout,
    #[error("internal error building the patch: {0}")]
    BadPatch(String),
}

impl CallError {
    fn is_not_found(&self) -> bool {
        matches!(self, CallError::Api(s) if s.code == 404)
    }
}

async fn timed<T>(call: impl Future<Output = Result<T, kube::Error>>) -> Result<T, CallError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Err(_) => Err(CallError::Timeout),
        Ok(Ok(v)) => Ok(v),
        Ok(Err(kube::Error::Api(status))) => Err(CallError::Api(status)),
        Ok(Err(e)) => Err(CallError::Client(e)),
    }
}
