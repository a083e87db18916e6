//! The second step of reverting a fully promoted Argo Rollout: `kubectl argo rollouts promote
//! --full` after the undo, so that the good revision becomes stable instead of sitting as a
//! canary at the first step (the facts it relies on are in [`crate::core::promote`]).
//!
//! It only runs after the undo was applied, never in a dry run. It waits, at most
//! `policy.argo_promote_wait`, for the controller to show the target as `status.currentPodHash`
//! (a `promoteFull` sent earlier would be reset with the rest of the status when the controller
//! notices the new template), then sends what the plugin sends. The undo stands whatever
//! happens here: the step reports what it did, or why not and what on-call should run.

use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::{CallError, Executor, patch_params};
use crate::core::engine::UndoRollout;
use crate::core::promote::{AfterUndo, UndoSeen, promote_command, promote_full_patches, undo_seen};
use crate::core::rollout::RolloutState;
use crate::k8s::patch::send_patch;
use crate::k8s::{rollout_state, rollouts};

/// How often the Rollout is read while waiting for the controller.
const POLL: Duration = Duration::from_millis(200);

/// What the step after the undo did: a clause for the result's sentence, and its details.
pub(super) struct AfterUndoStep {
    pub clause: String,
    pub data: Value,
}

impl AfterUndoStep {
    fn new(clause: String, status: &str, detail: Value) -> AfterUndoStep {
        let mut data = json!({"step": "promote-full", "status": status});
        if let (Some(d), Some(extra)) = (data.as_object_mut(), detail.as_object()) {
            d.extend(extra.clone());
        }
        AfterUndoStep { clause, data }
    }
}

/// The two hashes the wait tells apart, and the revisions in words.
pub(super) struct UndoTarget<'a> {
    pub blamed_hash: &'a str,
    pub target_hash: &'a str,
    pub from: &'a str,
    pub to: &'a str,
}

impl Executor {
    pub(super) async fn after_rollout_undo(
        &self,
        c: &UndoRollout,
        plan: &AfterUndo,
        t: &UndoTarget<'_>,
    ) -> AfterUndoStep {
        let run = promote_command(&c.namespace, &c.name);
        match plan {
            AfterUndo::Disabled => AfterUndoStep::new(
                format!(
                    "it was not promoted (policy.argo_promote_full_after_undo is off): {from} stays stable and {to} runs the steps again as a canary until a human promotes it: {run}",
                    from = t.from,
                    to = t.to
                ),
                "not-sent",
                json!({"reason": "policy.argo_promote_full_after_undo is off", "run": run}),
            ),
            AfterUndo::WindowFastTracks { revisions } => AfterUndoStep::new(
                format!(
                    "no promote was sent: its spec.rollbackWindow (revisions: {revisions}) covers {to}, so the Argo controller promotes it without running the steps",
                    to = t.to
                ),
                "not-needed",
                json!({"reason": format!("spec.rollbackWindow.revisions = {revisions} covers the target")}),
            ),
            AfterUndo::PromoteFull => self.promote_full(c, t, &run).await,
        }
    }

    async fn promote_full(&self, c: &UndoRollout, t: &UndoTarget<'_>, run: &str) -> AfterUndoStep {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &c.namespace, &rollouts());
        let waited = self.settings.argo_promote_wait;
        let rollout = match self.wait_for_undo(&api, c, t).await {
            Ok(r) => r,
            Err(Waited::Promoted) => {
                return AfterUndoStep::new(
                    format!(
                        "the Argo controller already made {} stable (a fast rollback), so no promote was needed",
                        t.to
                    ),
                    "not-needed",
                    json!({"reason": "the target was already stable"}),
                );
            }
            Err(Waited::Elsewhere(why)) => {
                return AfterUndoStep::new(
                    format!(
                        "it was not promoted: {why}; if {} should be stable, run {run}",
                        t.to
                    ),
                    "not-sent",
                    json!({"reason": why, "run": run}),
                );
            }
            Err(Waited::TimedOut(last)) => {
                let why = format!(
                    "the Argo controller had not picked up the undo within {}{last}",
                    humantime::format_duration(waited)
                );
                warn!(rollout = %c.name, namespace = %c.namespace, "{why}; promote --full not sent");
                return AfterUndoStep::new(
                    format!(
                        "it was not promoted ({why}): {} stays stable and {} runs the steps again; on-call should run {run}",
                        t.from, t.to
                    ),
                    "not-sent",
                    json!({"reason": why, "run": run}),
                );
            }
        };
        let patches = promote_full_patches(&rollout);
        let params = patch_params(false);
        let mut sent = Vec::new();
        let mut spec = patches.spec.clone();
        if let Some(status) = &patches.status {
            let mut answer = self
                .timed(send_patch(
                    &api,
                    &c.name,
                    Some("status"),
                    &params,
                    &Patch::Merge(status),
                ))
                .await
                .map(drop);
            let mut on = ("rollouts/status", status);
            if answer.as_ref().is_err_and(CallError::is_not_found) {
                // No status subresource (Argo Rollouts before v0.10): one patch of both.
                answer = self
                    .timed(send_patch(
                        &api,
                        &c.name,
                        None,
                        &params,
                        &Patch::Merge(&patches.unified),
                    ))
                    .await
                    .map(drop);
                on = ("rollouts", &patches.unified);
                spec = None;
            }
            if let Err(e) = answer {
                return self.promote_failed(c, t, run, e, on, sent);
            }
            sent.push(json!({"on": on.0, "patch": on.1}));
        }
        if let Some(spec) = &spec {
            let answer = self
                .timed(send_patch(
                    &api,
                    &c.name,
                    None,
                    &params,
                    &Patch::Merge(spec),
                ))
                .await
                .map(drop);
            if let Err(e) = answer {
                return self.promote_failed(c, t, run, e, ("rollouts", spec), sent);
            }
            sent.push(json!({"on": "rollouts", "patch": spec}));
        }
        info!(rollout = %c.name, namespace = %c.namespace, "promote --full after the undo");
        AfterUndoStep::new(
            format!(
                "then fully promoted it (kubectl argo rollouts promote --full): {} becomes stable without running the steps again",
                t.to
            ),
            "sent",
            json!({"requests": sent}),
        )
    }

    fn promote_failed(
        &self,
        c: &UndoRollout,
        t: &UndoTarget<'_>,
        run: &str,
        e: CallError,
        on: (&str, &Value),
        sent: Vec<Value>,
    ) -> AfterUndoStep {
        warn!(rollout = %c.name, namespace = %c.namespace, error = %e, "promote --full after the undo failed");
        let mut requests = sent;
        requests.push(json!({"on": on.0, "patch": on.1}));
        let (status, clause) = if e.may_have_applied() {
            (
                "unknown",
                format!(
                    "but the answer to the full promotion was lost ({e}); it may have applied: if {} is not stable, run {run}",
                    t.to
                ),
            )
        } else {
            (
                "failed",
                format!(
                    "but the full promotion failed ({}): {} stays stable and {} runs the steps again; on-call should run {run}",
                    e.explain("patch", "rollouts/status in argoproj.io"),
                    t.from,
                    t.to
                ),
            )
        };
        AfterUndoStep::new(
            clause,
            status,
            json!({"requests": requests, "error": e.to_string(), "run": run}),
        )
    }

    /// Reads the Rollout until its status shows the undo's target as current.
    async fn wait_for_undo(
        &self,
        api: &Api<DynamicObject>,
        c: &UndoRollout,
        t: &UndoTarget<'_>,
    ) -> Result<RolloutState, Waited> {
        let deadline = tokio::time::Instant::now() + self.settings.argo_promote_wait;
        let mut last = String::new();
        loop {
            match self.timed(api.get(&c.name)).await {
                Ok(obj) => match rollout_state(&obj) {
                    Some(r) if r.uid != c.uid => {
                        return Err(Waited::Elsewhere(
                            "the Rollout was deleted and recreated since the undo".into(),
                        ));
                    }
                    Some(r) => match undo_seen(&r, t.blamed_hash, t.target_hash) {
                        UndoSeen::Progressing => return Ok(r),
                        UndoSeen::Promoted => return Err(Waited::Promoted),
                        UndoSeen::Elsewhere(hash) => {
                            return Err(Waited::Elsewhere(format!(
                                "the Rollout changed again since the undo (its current pod hash is {hash})"
                            )));
                        }
                        UndoSeen::NotYet => last.clear(),
                    },
                    None => last = "; the Rollout as read lacks metadata or spec".into(),
                },
                Err(e) => last = format!("; the last read failed: {e}"),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Waited::TimedOut(last));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Why the wait for the controller ended without a Rollout to promote.
enum Waited {
    Promoted,
    Elsewhere(String),
    /// With the last read's problem, if any, as a clause.
    TimedOut(String),
}
