//! The executor: carries out the engine's commands against the Kubernetes API.
//!
//! Every command re-reads what it changes, refuses when the state the alert blamed is no longer
//! the live one (`superseded`), and writes with a resourceVersion precondition. A 409, or a 422
//! from the failed `test` of the resourceVersion, means the object changed underneath: read
//! again and decide again, at most [`MAX_ATTEMPTS`] times.
//!
//! A call ends one of three ways, and they are kept apart:
//! - **answered**: applied, or refused with a reason. 403 and 422 are final and name the RBAC
//!   verb or the field at fault.
//! - **transient**: refused before anything could change (429), or a read that failed (5xx,
//!   429, timeout, connection refused). Retried here a bounded number of times with backoff;
//!   still failing, the result says so (`transient`) and the pipeline decides again later.
//! - **lost**: a write whose answer never came (timeout, dropped connection, 5xx). It may have
//!   been applied. It is never sent again blind: the object is re-read at once
//!   ([`Executor::probe`]) and the result is what that shows. When even the re-read fails the
//!   result is `unknown`, and the pipeline settles it later, before anything else is done for
//!   that cause.

mod argo;
mod argo_promote;
mod deployment;
mod gitops;
mod pause;
mod settle;
mod traffic;

use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use tracing::warn;

use crate::core::engine::{Command, Outcome, describe};
use crate::core::settle::Settled;
use crate::core::undo::RevisionRef;
use crate::k8s::patch::send_patch;
use crate::store::{ActionResult, ActionStatus};

pub use settle::Probe;

pub const MAX_ATTEMPTS: usize = 3;
/// The field manager rollbackd's writes are recorded under.
pub const FIELD_MANAGER: &str = "rollbackd";

/// Bounds of the executor's calls and retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecutorSettings {
    /// Each API call is given up after this long (`kubernetes.call_timeout`).
    pub call_timeout: Duration,
    /// Tries of one command through transient failures, the first included.
    pub transient_tries: u32,
    /// The wait after the first transient failure; it doubles after each further one.
    pub backoff: Duration,
    /// `promote --full` after undoing a promoted Argo Rollout (`policy.argo_promote_full_after_undo`).
    pub argo_promote_full: bool,
    /// The wait for the Argo controller to see the undo before promoting (`policy.argo_promote_wait`).
    pub argo_promote_wait: Duration,
}

impl Default for ExecutorSettings {
    fn default() -> Self {
        ExecutorSettings {
            call_timeout: Duration::from_secs(10),
            transient_tries: 3,
            backoff: Duration::from_millis(500),
            argo_promote_full: true,
            argo_promote_wait: Duration::from_secs(30),
        }
    }
}

#[derive(Clone)]
pub struct Executor {
    client: kube::Client,
    settings: ExecutorSettings,
}

/// Whether a command may write yet: its intent must be durable first, so that a crash never
/// leaves a write nobody recorded. The pipeline records intents while the executor reads, and
/// the executor waits here before its first write.
pub struct Gate(GateState);

enum GateState {
    Open,
    Closed,
    Waiting(tokio::sync::oneshot::Receiver<bool>),
}

impl Gate {
    /// A gate already open: the intent is recorded.
    pub fn open() -> Gate {
        Gate(GateState::Open)
    }

    /// A gate that opens when `true` is sent; `false`, or the sender dropped, closes it.
    pub fn pending() -> (tokio::sync::oneshot::Sender<bool>, Gate) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (tx, Gate(GateState::Waiting(rx)))
    }

    /// Waits until the gate is decided; whether the command may write.
    async fn passes(&mut self) -> bool {
        if let GateState::Waiting(rx) = &mut self.0 {
            let open = rx.await.unwrap_or(false);
            self.0 = if open {
                GateState::Open
            } else {
                GateState::Closed
            };
        }
        matches!(self.0, GateState::Open)
    }
}

/// The result of a command whose gate closed: nothing was written.
fn not_recorded(what: &str) -> ActionResult {
    failed(format!(
        "{what}: nothing was written, because the intent could not be recorded"
    ))
}

/// How one attempt ended.
enum Attempt {
    Done(ActionResult),
    /// The object changed between read and write; worth reading again.
    Conflict(String),
    /// The write's answer was lost: it may or may not have been applied.
    Lost {
        answer: String,
        data: Value,
    },
}

impl Executor {
    pub fn new(client: kube::Client) -> Executor {
        Executor::with_settings(client, ExecutorSettings::default())
    }

    pub fn with_settings(client: kube::Client, settings: ExecutorSettings) -> Executor {
        Executor { client, settings }
    }

    /// Carries out `command`; its intent is already recorded.
    pub async fn execute(&self, command: &Command) -> ActionResult {
        self.execute_when(command, Gate::open()).await
    }

    /// Carries out `command`, writing nothing before `gate` opens. A Deployment's undo reads
    /// its objects meanwhile; every other command waits for the gate before it starts.
    pub async fn execute_when(&self, command: &Command, mut gate: Gate) -> ActionResult {
        let intent = command.intent();
        let what = format!("{} {}/{}", intent.kind, intent.namespace, intent.name);
        if !matches!(command, Command::UndoDeployment(_)) && !gate.passes().await {
            return not_recorded(&what);
        }
        let mut conflicts = Vec::new();
        let mut transients = Vec::new();
        loop {
            let attempt = match command {
                Command::UndoDeployment(c) => self.undo_deployment_once(c, &mut gate).await,
                Command::AbortRollout(c) => self.abort_rollout_once(c).await,
                Command::UndoRollout(c) => self.undo_rollout_once(c).await,
                Command::SwitchSelector(c) => self.switch_selector_once(c).await,
                Command::ResetWeights(c) => self.reset_weights_once(c).await,
                Command::PauseWorkload(c) => self.pause_once(c).await,
                Command::SuspendAndRevert(c) => self.suspend_and_revert_once(c).await,
                Command::SyncToPrevious(c) => self.sync_to_previous_once(c).await,
            };
            let result = match attempt {
                Attempt::Done(result) => result,
                Attempt::Conflict(answer) => {
                    warn!(kind = intent.kind, namespace = %intent.namespace, name = %intent.name, %answer,
                        "the object changed while reverting it; reading it again");
                    conflicts.push(json!({"attempt": conflicts.len() + 1, "answer": answer}));
                    if conflicts.len() < MAX_ATTEMPTS {
                        continue;
                    }
                    ActionResult {
                        data: json!({}),
                        ..failed(format!(
                            "{}/{} kept changing: {MAX_ATTEMPTS} attempts met a conflict; nothing was changed",
                            intent.namespace, intent.name
                        ))
                    }
                }
                Attempt::Lost { answer, data } => self.settle_lost(command, &answer, data).await,
            };
            if result.transient && (transients.len() as u32 + 1) < self.settings.transient_tries {
                warn!(kind = intent.kind, namespace = %intent.namespace, name = %intent.name,
                    "transient failure, trying again: {}", result.message);
                transients.push(json!({"attempt": transients.len() + 1, "answer": result.message}));
                tokio::time::sleep(self.backoff(transients.len())).await;
                continue;
            }
            return with_history(result, conflicts, transients, &what);
        }
    }

    fn backoff(&self, failures: usize) -> Duration {
        let factor = 1u32 << (failures.saturating_sub(1).min(8) as u32);
        self.settings.backoff.saturating_mul(factor)
    }

    /// A write whose answer was lost: re-read at once and report what that shows.
    async fn settle_lost(&self, command: &Command, answer: &str, data: Value) -> ActionResult {
        let intent = command.intent();
        let what = format!("{} {}/{}", intent.kind, intent.namespace, intent.name);
        if command.dry_run() {
            // A dry run changes nothing, whatever became of its answer.
            return ActionResult {
                data,
                transient: true,
                ..failed(format!(
                    "the dry-run {what} got no answer ({answer}); nothing was changed"
                ))
            };
        }
        let probe = Probe::of(&intent);
        match self.probe(&probe).await {
            Ok((Settled::Applied, live)) => ActionResult {
                status: ActionStatus::Succeeded,
                outcome: applied_outcome(command),
                message: format!(
                    "{}: the API server's answer was lost ({answer}), and reading the object again shows it applied ({live})",
                    intent.text
                ),
                target: Some(target_of(command)),
                data,
                transient: false,
            },
            Ok((Settled::NotApplied, live)) => ActionResult {
                data,
                transient: true,
                ..failed(format!(
                    "{what}: the API server's answer was lost ({answer}); reading the object again shows it was not applied ({live}); nothing was changed"
                ))
            },
            Ok((Settled::Elsewhere(live), _)) => ActionResult {
                data,
                ..skipped(
                    Outcome::Superseded,
                    format!(
                        "{what}: the API server's answer was lost ({answer}); reading the object again shows neither the blamed nor the target state but {live}; not acting further"
                    ),
                )
            },
            Err(e) => unknown(
                format!(
                    "{what}: the API server's answer was lost ({answer}) and the object could not be read again ({e}); whether the revert applied is not known yet, and nothing more is sent for this cause until it is"
                ),
                data,
            ),
        }
    }
}

/// The outcome a command reports once applied.
fn applied_outcome(command: &Command) -> Outcome {
    match command {
        Command::AbortRollout(_) => Outcome::Aborted,
        Command::PauseWorkload(_) => Outcome::PausedWorkload,
        Command::SuspendAndRevert(_) => Outcome::GitopsSuspended,
        Command::SyncToPrevious(_) => Outcome::GitopsSynced,
        _ => Outcome::RolledBack,
    }
}

/// What a command reverts to, as the store records an action target.
fn target_of(command: &Command) -> RevisionRef {
    match command {
        Command::UndoDeployment(c) => c.planned_target.clone(),
        Command::UndoRollout(c) => c.planned_target.clone(),
        Command::AbortRollout(c) => c.stable.clone(),
        Command::SuspendAndRevert(c) => target_of(&c.revert),
        Command::SyncToPrevious(c) => c.planned_target.clone(),
        Command::SwitchSelector(c) => {
            traffic::traffic_ref(format!("selector {}", c.back_to), &c.target_key)
        }
        Command::ResetWeights(c) => {
            traffic::traffic_ref(format!("{} at 100%", c.stable), &c.target_key)
        }
        Command::PauseWorkload(c) => traffic::traffic_ref(
            "paused".into(),
            &crate::core::engine::PauseWorkload::paused_key(&c.uid),
        ),
    }
}

/// Adds the conflicts and transient failures met on the way to the result's details.
fn with_history(
    mut result: ActionResult,
    conflicts: Vec<Value>,
    transients: Vec<Value>,
    what: &str,
) -> ActionResult {
    if !result.data.is_object() {
        result.data = if result.data.is_null() {
            json!({})
        } else {
            json!({"detail": result.data})
        };
    }
    if !conflicts.is_empty() {
        result.data["conflicts"] = json!(conflicts);
    }
    if !transients.is_empty() {
        result.data["transient_failures"] = json!(transients);
        if result.status == ActionStatus::Failed {
            result.message = format!(
                "{} (after {} tries of {what})",
                result.message,
                transients.len() + 1
            );
        }
    }
    if result.data.as_object().is_some_and(|o| o.is_empty()) {
        result.data = Value::Null;
    }
    result
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
        transient: false,
    }
}

fn unknown(message: String, data: Value) -> ActionResult {
    ActionResult {
        status: ActionStatus::Unknown,
        outcome: Outcome::Unsettled,
        message,
        target: None,
        data,
        transient: false,
    }
}

/// A read that failed: transient or not, with the RBAC verb when it was refused.
fn read_failed(doing: &str, verb: &str, resource: &str, e: CallError) -> ActionResult {
    let transient = e.is_transient();
    ActionResult {
        transient,
        ..failed(format!("{doing} failed: {}", e.explain(verb, resource)))
    }
}

fn skipped(outcome: Outcome, message: String) -> ActionResult {
    ActionResult {
        status: ActionStatus::Skipped,
        outcome,
        message,
        target: None,
        data: Value::Null,
        transient: false,
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
        transient: false,
    }
}

/// Maps a write's answer: conflicts are retried, a lost answer is settled, other errors are
/// reported (429 as transient: the server refused before doing anything).
fn write_answer(
    result: Result<Value, CallError>,
    what: &str,
    resource: &str,
    ok: impl FnOnce() -> ActionResult,
    patch: &Value,
) -> Attempt {
    match result {
        Ok(answer) => {
            let mut result = ok();
            if let Some(data) = result.data.as_object_mut() {
                data.insert("answer".into(), answer);
            }
            Attempt::Done(result)
        }
        Err(e) if e.is_conflict() => Attempt::Conflict(e.to_string()),
        Err(e) if e.may_have_applied() => Attempt::Lost {
            answer: e.to_string(),
            data: json!({"patch": patch}),
        },
        Err(e) => Attempt::Done(ActionResult {
            data: json!({"patch": patch}),
            transient: e.is_transient(),
            ..failed(format!(
                "patching {what} failed: {}; nothing was changed",
                e.explain("patch", resource)
            ))
        }),
    }
}

impl Executor {
    /// Sends a JSON patch built by the core to `name`, as a dry run when asked.
    async fn send_json_patch(
        &self,
        api: &Api<DynamicObject>,
        name: &str,
        patch: &Value,
        dry_run: bool,
    ) -> Result<Value, CallError> {
        let patch: json_patch::Patch = serde_json::from_value(patch.clone())
            .map_err(|e| CallError::BadPatch(e.to_string()))?;
        let answer = self
            .timed(send_patch(
                api,
                name,
                None,
                &patch_params(dry_run),
                &Patch::Json::<()>(patch),
            ))
            .await
            .map(|obj| api_answer(&obj, dry_run));
        crate::fault::point(crate::fault::AFTER_PATCH).await;
        answer
    }

    async fn timed<T>(
        &self,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, CallError> {
        let limit = self.settings.call_timeout;
        match tokio::time::timeout(limit, call).await {
            Err(_) => Err(CallError::Timeout(limit)),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(kube::Error::Api(status))) => Err(CallError::Api(status)),
            Ok(Err(e)) => Err(CallError::Client(e)),
        }
    }
}

/// What the API server answered to an accepted write, for the incident page: the object's
/// new `resourceVersion` and `generation` (a dry run changes neither).
fn api_answer(obj: &DynamicObject, dry_run: bool) -> Value {
    json!({
        "status": if dry_run { "200 OK (dry run: nothing stored)" } else { "200 OK" },
        "kind": obj.types.as_ref().map(|t| t.kind.as_str()),
        "name": obj.metadata.name,
        "resource_version": obj.metadata.resource_version,
        "generation": obj.metadata.generation,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the API server answered {} {}: {}", .0.code, .0.reason, .0.message)]
    Api(Box<kube::core::Status>),
    #[error("{0}")]
    Client(kube::Error),
    #[error("no answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("internal error building the patch: {0}")]
    BadPatch(String),
}

impl CallError {
    fn is_not_found(&self) -> bool {
        matches!(self, CallError::Api(s) if s.code == 404)
    }

    /// The object changed underneath: a 409, or the 422 of a JSON patch that did not apply
    /// (kube-apiserver words a failed `test` generically and names no field). A 422 that names
    /// fields is a validation error: final.
    fn is_conflict(&self) -> bool {
        match self {
            CallError::Api(s) => {
                s.code == 409
                    || (s.code == 422
                        && s.details.as_ref().is_none_or(|d| d.causes.is_empty())
                        && !s.message.contains(" is invalid: "))
            }
            _ => false,
        }
    }

    /// Worth trying again: the server was overloaded or unreachable, or did not answer.
    fn is_transient(&self) -> bool {
        match self {
            CallError::Api(s) => matches!(s.code, 429 | 500 | 502 | 503 | 504),
            CallError::Timeout(_) => true,
            CallError::Client(e) => !matches!(
                e,
                kube::Error::SerdeError(_) | kube::Error::BuildRequest(_) | kube::Error::Auth(_)
            ),
            CallError::BadPatch(_) => false,
        }
    }

    /// A write that ended this way may have been applied: the answer, not the request, was
    /// lost. A 429 is refused before anything is done (API priority and fairness).
    fn may_have_applied(&self) -> bool {
        self.is_transient() && !matches!(self, CallError::Api(s) if s.code == 429)
    }

    /// The error with what to do about it: the RBAC verb a 403 lacks, the fields a 422 names.
    fn explain(&self, verb: &str, resource: &str) -> String {
        match self {
            CallError::Api(s) if s.code == 403 => format!(
                "{self}; rollbackd's service account needs the RBAC verb \"{verb}\" on {resource} (see deploy/kubernetes/base/rbac.yaml)"
            ),
            CallError::Api(s) if s.code == 422 => {
                let fields: Vec<String> = s
                    .details
                    .iter()
                    .flat_map(|d| d.causes.iter())
                    .map(|c| format!("{}: {}", c.field, c.message))
                    .collect();
                if fields.is_empty() {
                    self.to_string()
                } else {
                    format!("{self} (fields at fault: {})", fields.join("; "))
                }
            }
            _ => self.to_string(),
        }
    }
}

/// "revision 3 (web-5d8f, nginx:3.0)" for a live ReplicaSet.
fn live_text(rs: Option<&crate::core::workload::ReplicaSetState>) -> String {
    match rs {
        Some(rs) => format!("now at {}", describe(&RevisionRef::of(rs))),
        None => "no ReplicaSet has the live template".into(),
    }
}
