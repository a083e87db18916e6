//! GitOps awareness: a workload managed by an Argo CD Application with automated self-heal is
//! not reverted underneath it (Argo CD would put the bad version back within seconds, and the
//! alert would then be recorded `already-rolled-back` while the bad version runs). What
//! happens instead is the configured [`GitopsMode`]. Pure.
//!
//! Only undos are affected: they change a spec that Argo CD compares with Git. An abort of an
//! Argo Rollout sets `status.abort`, which Argo CD does not heal, and traffic switches are
//! outside this check. A workload managed without self-heal, or not managed at all, is
//! reverted as before.

use super::{
    ApplicationRef, Command, Context, Decision, Mode, Outcome, SuspendAndRevert, SyncToPrevious,
    WorkloadRef,
};
use crate::core::gitops::{
    ApplicationState, GitopsMode, HistoryEntry, Management, SUSPENDED_ANNOTATION, TrackedObject,
    resume_hint,
};

/// Applies the GitOps mode to `decision`; a decision that does not act passes unchanged.
pub(super) fn apply(ctx: &Context<'_>, mut decision: Decision) -> Decision {
    let Some(command) = &decision.command else {
        return decision;
    };
    let namespace = &ctx.policy.gitops.argocd_namespace;
    let management = match command {
        Command::UndoDeployment(c) => ctx.index.deployment(&c.namespace, &c.name).map(|d| {
            ctx.index.managing_application(
                TrackedObject {
                    group: "apps",
                    kind: "Deployment",
                    namespace: &d.namespace,
                    name: &d.name,
                    labels: &d.labels,
                    annotations: &d.annotations,
                },
                namespace,
            )
        }),
        Command::UndoRollout(c) => ctx.index.rollout(&c.namespace, &c.name).map(|r| {
            let own = ctx.index.managing_application(
                TrackedObject {
                    group: "argoproj.io",
                    kind: "Rollout",
                    namespace: &r.namespace,
                    name: &r.name,
                    labels: &r.labels,
                    annotations: &r.annotations,
                },
                namespace,
            );
            // With a workloadRef the Deployment is what the undo patches.
            let referenced = r
                .workload_ref
                .as_deref()
                .and_then(|name| ctx.index.deployment(&r.namespace, name));
            match (own, referenced) {
                (Management::Unmanaged, Some(d)) => ctx.index.managing_application(
                    TrackedObject {
                        group: "apps",
                        kind: "Deployment",
                        namespace: &d.namespace,
                        name: &d.name,
                        labels: &d.labels,
                        annotations: &d.annotations,
                    },
                    namespace,
                ),
                (own, _) => own,
            }
        }),
        _ => None,
    };
    let app = match management {
        None | Some(Management::Unmanaged) => return decision,
        Some(Management::UnknownApplication { namespace, name }) => {
            decision.reason = format!(
                "{} (its Argo CD tracking id names Application {namespace}/{name}, which rollbackd does not see; if it syncs automatically with self-heal, it will put the bad version back)",
                decision.reason
            );
            return decision;
        }
        Some(Management::Application(app)) => app,
    };
    let workload = decision
        .workload
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    if !app.self_heal() {
        decision.reason = format!(
            "{} ({workload} is managed by Argo CD Application {}/{} without self-heal: the revert stays until its next sync)",
            decision.reason, app.namespace, app.name
        );
        return decision;
    }
    let (live, good) = app.last_good();
    let managed = format!(
        "{workload} is managed by Argo CD Application {}/{} with automated sync and self-heal, which would put the bad version back within seconds",
        app.namespace, app.name
    );
    match ctx.policy.gitops.mode {
        GitopsMode::Notify => notify(decision, app, &managed, live, good),
        GitopsMode::SuspendAndUndo => {
            let Some(revert) = decision.command.take() else {
                return decision;
            };
            decision.outcome = acting(ctx, Outcome::GitopsSuspended);
            decision.reason = format!(
                "{}; {managed}, so its automated sync is suspended first (the previous policy is kept in annotation {SUSPENDED_ANNOTATION}); {}",
                decision.reason,
                resume_hint(app)
            );
            decision.command = Some(Command::SuspendAndRevert(SuspendAndRevert {
                app: app_ref(app),
                revert: Box::new(revert),
            }));
            decision
        }
        GitopsMode::SyncToPrevious => {
            let (Some(live), Some(good)) = (live, good) else {
                return notify(decision, app, &managed, live, good);
            };
            let Some(sync) = sync_command(decision.workload.as_ref(), command, app, live, good)
            else {
                return decision;
            };
            decision.outcome = acting(ctx, Outcome::GitopsSynced);
            decision.reason = format!(
                "{}; {managed}, so instead Argo CD syncs it to revision {} (history id {}, the one before the live {}), with automated sync suspended (the previous policy is kept in annotation {SUSPENDED_ANNOTATION}); {}",
                decision.reason,
                good.revision,
                good.id,
                live.revision,
                resume_hint(app)
            );
            decision.command = Some(Command::SyncToPrevious(sync));
            decision
        }
    }
}

fn acting(ctx: &Context<'_>, outcome: Outcome) -> Outcome {
    if ctx.policy.mode == Mode::DryRun {
        Outcome::WouldRollBack
    } else {
        outcome
    }
}

fn app_ref(app: &ApplicationState) -> ApplicationRef {
    ApplicationRef {
        namespace: app.namespace.clone(),
        name: app.name.clone(),
        uid: app.uid.clone(),
    }
}

/// Nothing is done; the sentence says which revision was last good and what to run.
fn notify(
    mut decision: Decision,
    app: &ApplicationState,
    managed: &str,
    live: Option<&HistoryEntry>,
    good: Option<&HistoryEntry>,
) -> Decision {
    let name = app.cli_name();
    let advice = match (live, good) {
        (Some(live), Some(good)) => format!(
            "Last good revision in its history: {} (history id {}{}); live now: {} (history id {}). To roll back: argocd app set {name} --sync-policy none && argocd app rollback {name} {}, then revert {} in Git and turn automated sync back on (argocd app set {name} --sync-policy automated --self-heal)",
            good.revision,
            good.id,
            good.deployed_at
                .as_deref()
                .map(|at| format!(", deployed {at}"))
                .unwrap_or_default(),
            live.revision,
            live.id,
            good.id,
            live.revision
        ),
        (Some(live), None) => format!(
            "Its history has no revision before the live {} (history id {}): revert the change in Git, or suspend sync (argocd app set {name} --sync-policy none) and roll back by hand",
            live.revision, live.id
        ),
        _ => format!(
            "Its status has no sync history: revert the change in Git, or suspend sync (argocd app set {name} --sync-policy none) and roll back by hand"
        ),
    };
    decision.outcome = Outcome::GitopsNotify;
    decision.command = None;
    decision.reason = format!(
        "{}; not done: {managed}. rollbackd changed nothing (gitops.mode = \"notify\"). {advice}",
        decision.reason
    );
    decision
}

fn sync_command(
    workload: Option<&WorkloadRef>,
    command: &Command,
    app: &ApplicationState,
    live: &HistoryEntry,
    good: &HistoryEntry,
) -> Option<SyncToPrevious> {
    let (blamed, planned_target, dry_run) = match command {
        Command::UndoDeployment(c) => (&c.blamed, &c.planned_target, c.dry_run),
        Command::UndoRollout(c) => (&c.blamed, &c.planned_target, c.dry_run),
        _ => return None,
    };
    let workload = workload?;
    Some(SyncToPrevious {
        app: app_ref(app),
        workload_kind: workload.kind.clone(),
        namespace: workload.namespace.clone(),
        name: workload.name.clone(),
        uid: workload.uid.clone(),
        blamed: blamed.clone(),
        planned_target: planned_target.clone(),
        revision: good.revision.clone(),
        bad_revision: live.revision.clone(),
        dry_run,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{WEB, mk_alert, mk_index, mk_policy};
    use super::*;
    use crate::core::gitops::tests::mk_app;
    use crate::core::gitops::{GitopsPolicy, INSTANCE_LABEL};
    use crate::core::workload::tests::ts;

    fn managed_index(self_heal: bool) -> crate::core::workload::WorkloadIndex {
        let mut index = mk_index();
        let mut d = index.deployment("default", "web").expect("web").clone();
        d.labels.insert(INSTANCE_LABEL.into(), "web".into());
        index.apply_deployment(d, ts(1000));
        index.apply_application(mk_app("web", self_heal, &["aaa", "bbb"]));
        index
    }

    fn policy(mode: GitopsMode) -> super::super::Policy {
        let mut p = mk_policy(Mode::Enforce);
        p.gitops = GitopsPolicy {
            mode,
            ..GitopsPolicy::default()
        };
        p
    }

    fn decide(index: &crate::core::workload::WorkloadIndex, mode: GitopsMode) -> Decision {
        super::super::decide_at(
            &mk_alert(WEB, ts(1120)),
            index,
            &policy(mode),
            &[],
            ts(1130),
        )
    }

    #[test]
    fn notify_changes_nothing_and_names_the_app_and_the_last_good_revision() {
        let d = decide(&managed_index(true), GitopsMode::Notify);
        assert_eq!(d.outcome, Outcome::GitopsNotify, "{}", d.reason);
        assert!(d.command.is_none());
        assert!(d.reason.contains("argocd/web"), "{}", d.reason);
        assert!(
            d.reason
                .contains("Last good revision in its history: aaa (history id 0")
        );
        assert!(
            d.reason.contains("argocd app rollback web 0"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn suspend_and_undo_wraps_the_undo() {
        let d = decide(&managed_index(true), GitopsMode::SuspendAndUndo);
        assert_eq!(d.outcome, Outcome::GitopsSuspended, "{}", d.reason);
        let Some(Command::SuspendAndRevert(c)) = &d.command else {
            panic!("expected a suspend-and-revert: {:?}", d.command);
        };
        assert!(matches!(*c.revert, Command::UndoDeployment(_)));
        assert_eq!(
            d.command.as_ref().map(|c| c.intent().kind),
            Some("gitops-suspend-undo-deployment")
        );
    }

    #[test]
    fn sync_to_previous_targets_the_revision_before_the_live_one() {
        let d = decide(&managed_index(true), GitopsMode::SyncToPrevious);
        assert_eq!(d.outcome, Outcome::GitopsSynced, "{}", d.reason);
        let Some(Command::SyncToPrevious(c)) = &d.command else {
            panic!("expected a sync: {:?}", d.command);
        };
        assert_eq!(
            (c.revision.as_str(), c.bad_revision.as_str()),
            ("aaa", "bbb")
        );
        assert_eq!(c.blamed.name, "web-c");
        assert_eq!(c.planned_target.name, "web-b");
    }

    #[test]
    fn without_self_heal_or_without_an_application_the_undo_is_unchanged() {
        let d = decide(&managed_index(false), GitopsMode::SyncToPrevious);
        assert_eq!(d.outcome, Outcome::RolledBack, "{}", d.reason);
        assert!(matches!(d.command, Some(Command::UndoDeployment(_))));
        assert!(d.reason.contains("without self-heal"), "{}", d.reason);
        let d = decide(&mk_index(), GitopsMode::SuspendAndUndo);
        assert_eq!(d.outcome, Outcome::RolledBack, "{}", d.reason);
    }
}
