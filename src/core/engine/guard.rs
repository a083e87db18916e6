//! Guard rails: what may hold back a decision to act, or change it, once the engine found a
//! cause to revert. Pure: it reads the context (policy, past actions, the index, the clock).
//!
//! Checked in this order, the first that refuses wins; each refusal keeps the blame sentence
//! and says why nothing was done, and is recorded and notified like any decision:
//! 1. scope: the namespace allow and deny lists (`out-of-scope`);
//! 2. opt-in and opt-out: `rollbackd.io/auto-rollback` on the workload, else on its namespace,
//!    else `policy.auto_rollback_default` (`out-of-scope`);
//! 3. the alert's labels against `policy.alert_matchers` (`out-of-scope`);
//! 4. the workload's `rollbackd.io/policy`: `notify-only` (`notify-only`), or `pause`, which
//!    turns the revert into pausing the Deployment or Rollout;
//! 5. freeze windows (`frozen`);
//! 6. one action in flight per workload (`in-flight`);
//! 7. the cooldown per workload after an action (`cooldown`);
//! 8. the global circuit breaker (`breaker-open`).

use std::time::Duration;

use jiff::SignedDuration;

use super::{Command, Context, Decision, Outcome, PauseWorkload, WorkloadRef};
use crate::core::alert::LabelSet;
use crate::core::guard::{AUTO_ROLLBACK_ANNOTATION, POLICY_ANNOTATION};

/// Applies the guard rails to `decision`; a decision that does not act passes unchanged.
pub(super) fn apply(ctx: &Context<'_>, mut decision: Decision) -> Decision {
    let (Some(command), Some(workload)) = (&decision.command, &decision.workload) else {
        return decision;
    };
    let workload = workload.clone();
    match check(ctx, &workload) {
        Verdict::Act => decision,
        Verdict::Pause => {
            let Some(blamed) = decision.rollout.as_ref().map(|r| r.revision.clone()) else {
                return decision;
            };
            let dry_run = command.dry_run();
            decision.outcome = if dry_run {
                Outcome::WouldRollBack
            } else {
                Outcome::PausedWorkload
            };
            decision.reason = format!(
                "{}; but {workload} has {POLICY_ANNOTATION}: pause, so rollbackd pauses it instead of reverting it (a release with a schema migration is rolled back by people)",
                decision.reason
            );
            decision.command = Some(Command::PauseWorkload(PauseWorkload {
                kind: workload.kind.clone(),
                namespace: workload.namespace.clone(),
                name: workload.name.clone(),
                uid: workload.uid.clone(),
                blamed,
                dry_run,
            }));
            decision
        }
        Verdict::Refuse(outcome, why) => {
            decision.outcome = outcome;
            decision.reason = format!("{}; but {why}, so nothing was done", decision.reason);
            decision.command = None;
            decision
        }
    }
}

enum Verdict {
    Act,
    Pause,
    Refuse(Outcome, String),
}

fn check(ctx: &Context<'_>, workload: &WorkloadRef) -> Verdict {
    let guard = &ctx.policy.guard;
    let ns = workload.namespace.as_str();
    if guard.namespaces_deny.iter().any(|n| n == ns) {
        return Verdict::Refuse(
            Outcome::OutOfScope,
            format!("namespace {ns} is in policy.namespaces_deny"),
        );
    }
    if !guard.namespaces_allow.is_empty() && !guard.namespaces_allow.iter().any(|n| n == ns) {
        return Verdict::Refuse(
            Outcome::OutOfScope,
            format!("namespace {ns} is not in policy.namespaces_allow"),
        );
    }
    let own = workload_annotations(ctx, workload);
    let of_namespace = ctx.index.namespace_annotations(ns);
    let opted = |a: Option<&LabelSet>| a.and_then(|a| a.get(AUTO_ROLLBACK_ANNOTATION)).cloned();
    let (opt_in, source) = match (opted(own), opted(of_namespace)) {
        (Some(v), _) => (v, format!("{workload}")),
        (None, Some(v)) => (v, format!("namespace {ns}")),
        (None, None) => (
            guard.auto_rollback_default.to_string(),
            "policy.auto_rollback_default".to_string(),
        ),
    };
    match opt_in.trim() {
        "true" => {}
        "false" => {
            return Verdict::Refuse(
                Outcome::OutOfScope,
                if source.starts_with("policy.") {
                    format!(
                        "{workload} is not opted in ({AUTO_ROLLBACK_ANNOTATION} is unset on it and on its namespace, and policy.auto_rollback_default is false)"
                    )
                } else {
                    format!("{source} has {AUTO_ROLLBACK_ANNOTATION}: \"false\"")
                },
            );
        }
        other => {
            return Verdict::Refuse(
                Outcome::OutOfScope,
                format!(
                    "{source} has {AUTO_ROLLBACK_ANNOTATION}: {other:?}, which is neither \"true\" nor \"false\"; rollbackd does not guess"
                ),
            );
        }
    }
    if let Some(m) = guard
        .alert_matchers
        .iter()
        .find(|m| !m.matches(&ctx.alert.labels))
    {
        return Verdict::Refuse(
            Outcome::OutOfScope,
            format!(
                "the alert does not match {m} (policy.alert_matchers), so it may not trigger an automatic action"
            ),
        );
    }
    let mut pause = false;
    match own.and_then(|a| a.get(POLICY_ANNOTATION)).map(|v| v.trim()) {
        None | Some("rollback") => {}
        Some("notify-only") => {
            return Verdict::Refuse(
                Outcome::NotifyOnly,
                format!("{workload} has {POLICY_ANNOTATION}: notify-only"),
            );
        }
        Some("pause") if matches!(workload.kind.as_str(), "Deployment" | "Rollout") => pause = true,
        Some(other) => {
            return Verdict::Refuse(
                Outcome::OutOfScope,
                format!(
                    "{workload} has {POLICY_ANNOTATION}: {other:?}, which is not rollback, notify-only or pause (for this kind); rollbackd does not guess"
                ),
            );
        }
    }
    if let Some(freeze) = guard.frozen(ctx.now) {
        return Verdict::Refuse(
            Outcome::Frozen,
            format!("a freeze is in force ({freeze}, policy.freeze)"),
        );
    }
    let on_workload = ctx.past.iter().filter(|p| p.workload_uid == workload.uid);
    if let Some(p) = on_workload.clone().find(|p| !p.settled) {
        return Verdict::Refuse(
            Outcome::InFlight,
            format!(
                "an action on {workload} started at {} (incident {}) has no known result yet; one action at a time per workload",
                p.at, p.incident_id
            ),
        );
    }
    let cooldown = signed(guard.cooldown);
    if let Some(p) = on_workload
        .filter(|p| p.at <= ctx.now && ctx.now.duration_since(p.at) < cooldown)
        .max_by_key(|p| p.at)
    {
        return Verdict::Refuse(
            Outcome::Cooldown,
            format!(
                "rollbackd acted on {workload} at {} (incident {}), less than policy.cooldown ({}) ago",
                p.at,
                p.incident_id,
                humantime::format_duration(guard.cooldown)
            ),
        );
    }
    if guard.breaker_open(ctx.past, ctx.now) {
        let n = guard.actions_in_window(ctx.past, ctx.now).count();
        return Verdict::Refuse(
            Outcome::BreakerOpen,
            format!(
                "the circuit breaker is open: {n} automatic actions in the last {} (at most {}); one shared cause is likelier than {} bad releases",
                humantime::format_duration(guard.breaker_window),
                guard.breaker_max,
                n + 1
            ),
        );
    }
    if pause { Verdict::Pause } else { Verdict::Act }
}

/// The annotations of the workload as the index has them (Services and VirtualServices: none).
fn workload_annotations<'a>(ctx: &'a Context<'_>, w: &WorkloadRef) -> Option<&'a LabelSet> {
    match w.kind.as_str() {
        "Deployment" => ctx
            .index
            .deployment(&w.namespace, &w.name)
            .map(|d| &d.annotations),
        "Rollout" => ctx
            .index
            .rollout(&w.namespace, &w.name)
            .map(|r| &r.annotations),
        _ => None,
    }
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}
