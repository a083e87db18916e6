//! GitOps commands: suspending an Argo CD Application's automated sync before an undo, and
//! starting a sync of it to the revision before the bad one.
//!
//! Both write one merge patch to the Application (`argoproj.io/v1alpha1` applications) that
//! carries `metadata.resourceVersion`, so a concurrent change is a 409 and is read again. The
//! suspension removes `spec.syncPolicy.automated` and keeps its previous value, as JSON, in
//! the annotation `rollbackd.io/suspended-sync-policy`; an Application already suspended is not
//! patched again. A sync sets `operation` (`sync.revision`, `initiatedBy.username`), which
//! Argo CD's controller picks up, applies and clears. A lost answer is settled here by reading
//! the Application again; after a restart the store's probe reads the workload instead.

use kube::api::{Api, DynamicObject, Patch};
use serde_json::{Value, json};
use tracing::info;

use super::{
    Attempt, CallError, Executor, Gate, failed, patch_params, read_failed, skipped, unknown,
};
use crate::core::engine::{ApplicationRef, Command, Outcome, SuspendAndRevert, SyncToPrevious};
use crate::core::gitops::{ApplicationState, resume_hint, suspend_patch};
use crate::k8s::patch::send_patch;
use crate::k8s::{application_state, applications};
use crate::store::{ActionResult, ActionStatus};

const RESOURCE: &str = "applications.argoproj.io";

impl Executor {
    fn applications_api(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &applications())
    }

    /// The Application as it is now, or the result that ends the attempt.
    async fn read_application(&self, app: &ApplicationRef) -> Result<ApplicationState, Attempt> {
        let what = format!("Argo CD Application {}/{}", app.namespace, app.name);
        let api = self.applications_api(&app.namespace);
        let obj = self.timed(api.get(&app.name)).await.map_err(|e| {
            Attempt::Done(read_failed(&format!("reading {what}"), "get", RESOURCE, e))
        })?;
        let state = application_state(&obj).ok_or_else(|| {
            Attempt::Done(failed(format!("{what} as read lacks metadata or spec")))
        })?;
        if state.uid != app.uid {
            return Err(Attempt::Done(skipped(
                Outcome::Superseded,
                format!(
                    "{what} was deleted and recreated since the decision; not acting on a new object"
                ),
            )));
        }
        Ok(state)
    }

    /// Sends `patch` to the Application; `Ok(false)` when its answer was lost.
    async fn patch_application(
        &self,
        app: &ApplicationRef,
        patch: &Value,
        dry_run: bool,
    ) -> Result<bool, Attempt> {
        let api = self.applications_api(&app.namespace);
        let answer = self
            .timed(send_patch(
                &api,
                &app.name,
                None,
                &patch_params(dry_run),
                &Patch::Merge(patch),
            ))
            .await
            .map(drop);
        crate::fault::point(crate::fault::AFTER_PATCH).await;
        match answer {
            Ok(()) => Ok(true),
            Err(e) if e.is_conflict() => Err(Attempt::Conflict(e.to_string())),
            Err(e) if e.may_have_applied() && !dry_run => Ok(false),
            Err(e) => Err(Attempt::Done(patch_failed(app, patch, e))),
        }
    }

    pub(super) async fn suspend_and_revert_once(&self, c: &SuspendAndRevert) -> Attempt {
        let dry_run = c.revert.dry_run();
        let app = match self.read_application(&c.app).await {
            Ok(app) => app,
            Err(attempt) => return attempt,
        };
        if let Some(patch) = suspend_patch(&app, None) {
            match self.patch_application(&c.app, &patch, dry_run).await {
                Ok(true) => {}
                Ok(false) => match self.read_application(&c.app).await {
                    Ok(again) if again.automated.is_none() => {}
                    // Nothing was reverted: deciding again is safe.
                    _ => {
                        return Attempt::Done(ActionResult {
                            transient: true,
                            data: json!({"patch": patch}),
                            ..failed(format!(
                                "suspending the automated sync of Argo CD Application {}/{} got no answer and could not be confirmed; nothing was reverted",
                                c.app.namespace, c.app.name
                            ))
                        });
                    }
                },
                Err(attempt) => return attempt,
            }
            info!(namespace = %c.app.namespace, name = %c.app.name, dry_run, "suspended the automated sync of an Argo CD Application");
        }
        let inner = match c.revert.as_ref() {
            // The gate of a suspension and revert was passed before it started.
            Command::UndoDeployment(u) => self.undo_deployment_once(u, &mut Gate::open()).await,
            Command::UndoRollout(u) => self.undo_rollout_once(u).await,
            other => {
                return Attempt::Done(failed(format!(
                    "internal error: {} cannot follow a suspension of sync",
                    other.intent().kind
                )));
            }
        };
        let note = format!(
            "Argo CD Application {}/{} has its automated sync suspended{}; {}",
            c.app.namespace,
            c.app.name,
            if dry_run { " (dry-run)" } else { "" },
            resume_hint(&app)
        );
        match inner {
            Attempt::Done(mut result) => {
                if result.status == ActionStatus::Succeeded && !dry_run {
                    result.outcome = Outcome::GitopsSuspended;
                }
                result.message = format!("{}. {note}", result.message);
                Attempt::Done(result)
            }
            other => other,
        }
    }

    pub(super) async fn sync_to_previous_once(&self, c: &SyncToPrevious) -> Attempt {
        let what = format!("Argo CD Application {}/{}", c.app.namespace, c.app.name);
        let app = match self.read_application(&c.app).await {
            Ok(app) => app,
            Err(attempt) => return attempt,
        };
        if let Some(op) = &app.operation {
            let outcome = if op.pointer("/sync/revision").and_then(Value::as_str)
                == Some(c.revision.as_str())
            {
                Outcome::AlreadyRolledBack
            } else {
                Outcome::Superseded
            };
            return Attempt::Done(skipped(
                outcome,
                format!("{what} already has an operation pending ({op}); not starting another"),
            ));
        }
        let live = app.history.last().map(|h| h.revision.as_str());
        if live != Some(c.bad_revision.as_str()) {
            return Attempt::Done(skipped(
                Outcome::Superseded,
                format!(
                    "{what} now runs revision {} rather than the blamed {}; not syncing",
                    live.unwrap_or("(none)"),
                    c.bad_revision
                ),
            ));
        }
        let Some(patch) = suspend_patch(&app, Some(&c.revision)) else {
            return Attempt::Done(failed(format!("internal error: no patch for {what}")));
        };
        let done = || {
            let message = format!(
                "started an Argo CD sync of {what} to revision {} (from {}); automated sync is suspended; {}",
                c.revision,
                c.bad_revision,
                resume_hint(&app)
            );
            let (outcome, message) = if c.dry_run {
                (
                    Outcome::WouldRollBack,
                    format!(
                        "dry-run: the API server accepted the sync of {what} to revision {}; nothing was changed",
                        c.revision
                    ),
                )
            } else {
                (Outcome::GitopsSynced, message)
            };
            ActionResult {
                status: ActionStatus::Succeeded,
                outcome,
                message,
                target: Some(c.planned_target.clone()),
                data: json!({"patch": patch}),
                transient: false,
            }
        };
        match self.patch_application(&c.app, &patch, c.dry_run).await {
            Ok(true) => Attempt::Done(done()),
            Ok(false) => {
                // The answer was lost: the sync was requested if the operation (or its result)
                // names the revision.
                let api = self.applications_api(&c.app.namespace);
                match self.timed(api.get(&c.app.name)).await {
                    Ok(obj) if requested(&obj.data, &c.revision) => Attempt::Done(done()),
                    Ok(_) => Attempt::Done(ActionResult {
                        transient: true,
                        data: json!({"patch": patch}),
                        ..failed(format!(
                            "the sync of {what} got no answer and reading it again shows it was not requested; nothing was changed"
                        ))
                    }),
                    Err(e) => Attempt::Done(unknown(
                        format!(
                            "the sync of {what} got no answer and it could not be read again ({e}); whether it was requested is not known yet"
                        ),
                        json!({"patch": patch}),
                    )),
                }
            }
            Err(attempt) => attempt,
        }
    }
}

/// Whether the Application shows a sync to `revision` requested, running or done.
fn requested(app: &Value, revision: &str) -> bool {
    [
        "/operation/sync/revision",
        "/status/operationState/operation/sync/revision",
        "/status/operationState/syncResult/revision",
    ]
    .iter()
    .any(|p| app.pointer(p).and_then(Value::as_str) == Some(revision))
}

fn patch_failed(app: &ApplicationRef, patch: &Value, e: CallError) -> ActionResult {
    ActionResult {
        data: json!({"patch": patch}),
        transient: e.is_transient(),
        ..failed(format!(
            "patching Argo CD Application {}/{} failed: {}; nothing was changed",
            app.namespace,
            app.name,
            e.explain("patch", RESOURCE)
        ))
    }
}
