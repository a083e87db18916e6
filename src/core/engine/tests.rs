//! Engine tests: builders in, decisions out, no mocks.

use std::time::Duration;

use super::*;
use crate::core::alert::{AlertSource, Fingerprint, LabelSet};
use crate::core::workload::tests::{mk_deployment, mk_rs, ts};

pub(super) fn mk_policy(mode: Mode) -> Policy {
    Policy {
        mode,
        correlation_window: Duration::from_secs(30 * 60),
        grace: Duration::from_secs(30),
        labels: CorrelationLabels::default(),
        guard: Default::default(),
        gitops: Default::default(),
    }
}

pub(super) fn mk_alert(pairs: &[(&str, &str)], starts_at: Timestamp) -> Alert {
    let labels: LabelSet = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([("alertname".to_string(), "HighErrorRate".to_string())])
        .collect();
    Alert {
        source: AlertSource::Alertmanager,
        status: AlertStatus::Firing,
        fingerprint: Fingerprint::of(&labels),
        labels,
        annotations: LabelSet::new(),
        starts_at,
        ends_at: None,
        generator_url: String::new(),
        external_url: None,
    }
}

/// web rolled out three times: revision 3 (nginx:3) became current at ts(1000).
pub(super) fn mk_index() -> WorkloadIndex {
    let mut index = WorkloadIndex::default();
    index.apply_replica_set(mk_rs("web", "a", "nginx:1", 1, ts(0)), ts(0));
    index.apply_replica_set(mk_rs("web", "b", "nginx:2", 2, ts(500)), ts(500));
    index.apply_replica_set(mk_rs("web", "c", "nginx:3", 3, ts(1000)), ts(1000));
    index.apply_deployment(mk_deployment("web", "nginx:3"), ts(1000));
    index
}

pub(super) const WEB: &[(&str, &str)] = &[("namespace", "default"), ("deployment", "web")];

#[test]
fn a_fresh_alert_after_a_rollout_rolls_back_to_the_previous_revision() {
    let d = decide(
        &mk_alert(WEB, ts(1120)),
        &mk_index(),
        &mk_policy(Mode::Enforce),
        &[],
    );
    assert_eq!(d.outcome, Outcome::RolledBack, "{}", d.reason);
    let Some(Command::UndoDeployment(undo)) = d.command else {
        panic!("expected an undo");
    };
    assert_eq!(undo.blamed.name, "web-c");
    assert_eq!(undo.planned_target.name, "web-b");
    assert!(!undo.dry_run);
    assert!(
        d.reason.contains("revision 2 (web-b, nginx:2)"),
        "{}",
        d.reason
    );
    assert_eq!(d.rollout.expect("rollout").since, ts(1000));
}

fn mk_post_rollout_alert(verdict: &str, evidence: &str) -> Alert {
    let mut alert = mk_alert(WEB, ts(1080));
    alert.source = AlertSource::Prometheus;
    alert
        .labels
        .insert("rollbackd_post_rollout".into(), verdict.into());
    alert
        .annotations
        .insert("rollbackd_evidence".into(), evidence.into());
    alert.fingerprint = Fingerprint::of(&alert.labels);
    alert
}

#[test]
fn a_post_rollout_regression_rolls_back_with_its_numbers_in_the_reason() {
    let evidence = "1.8% errors in the 1m 20s since the rollout, against 0.1% in the 1h before it";
    let d = decide(
        &mk_post_rollout_alert("regression", evidence),
        &mk_index(),
        &mk_policy(Mode::Enforce),
        &[],
    );
    assert_eq!(d.outcome, Outcome::RolledBack, "{}", d.reason);
    assert!(
        d.reason
            .contains(&format!("in its post-rollout form: {evidence}")),
        "{}",
        d.reason
    );
}

#[test]
fn a_post_rollout_pre_existing_verdict_is_recorded_never_acted_on() {
    let evidence = "2% errors in the 1m 20s since the rollout, against 2% in the 1h before it";
    let d = decide(
        &mk_post_rollout_alert("pre-existing", evidence),
        &mk_index(),
        &mk_policy(Mode::Enforce),
        &[],
    );
    assert_eq!(d.outcome, Outcome::PreExisting, "{}", d.reason);
    assert!(d.command.is_none());
    assert!(d.reason.ends_with(evidence), "{}", d.reason);
    assert!(
        d.reason
            .contains("revision 3 (web-c, nginx:3) of deployment default/web"),
        "{}",
        d.reason
    );
}

#[test]
fn dry_run_decides_the_same_but_marks_the_command() {
    let d = decide(
        &mk_alert(WEB, ts(1120)),
        &mk_index(),
        &mk_policy(Mode::DryRun),
        &[],
    );
    assert_eq!(d.outcome, Outcome::WouldRollBack);
    assert!(matches!(d.command, Some(Command::UndoDeployment(u)) if u.dry_run));
}

#[test]
fn an_alert_older_than_the_rollout_is_pre_existing() {
    let d = decide(
        &mk_alert(WEB, ts(900)),
        &mk_index(),
        &mk_policy(Mode::Enforce),
        &[],
    );
    assert_eq!(d.outcome, Outcome::PreExisting, "{}", d.reason);
    assert!(d.command.is_none());
}

#[test]
fn an_alert_just_inside_the_grace_is_still_blamed() {
    let d = decide(
        &mk_alert(WEB, ts(980)),
        &mk_index(),
        &mk_policy(Mode::Enforce),
        &[],
    );
    assert_eq!(d.outcome, Outcome::RolledBack, "{}", d.reason);
}

#[test]
fn an_old_rollout_is_not_blamed() {
    let d = decide(
        &mk_alert(WEB, ts(1000 + 31 * 60)),
        &mk_index(),
        &mk_policy(Mode::Enforce),
        &[],
    );
    assert_eq!(d.outcome, Outcome::NoRecentRollout, "{}", d.reason);
    assert!(
        d.reason.contains("outside the correlation window"),
        "{}",
        d.reason
    );
}

#[test]
fn unknown_and_ambiguous_workloads_do_nothing() {
    let index = mk_index();
    let policy = mk_policy(Mode::Enforce);
    let d = decide(
        &mk_alert(
            &[("namespace", "default"), ("deployment", "nope")],
            ts(1100),
        ),
        &index,
        &policy,
        &[],
    );
    assert_eq!(d.outcome, Outcome::NoWorkload);
    assert!(d.reason.contains("default/nope"), "{}", d.reason);

    let mut index = mk_index();
    let mut twin = mk_deployment("web2", "nginx:3");
    twin.template = twin
        .template
        .edited(|t| t["metadata"]["labels"]["app"] = "web".into());
    index.apply_deployment(twin, ts(1000));
    let d = decide(
        &mk_alert(&[("namespace", "default"), ("app", "web")], ts(1100)),
        &index,
        &policy,
        &[],
    );
    assert_eq!(d.outcome, Outcome::Ambiguous);
    assert!(d.command.is_none());
}

#[test]
fn paused_and_no_history_are_reported_not_acted_on() {
    let policy = mk_policy(Mode::Enforce);
    let mut index = mk_index();
    let mut paused = mk_deployment("web", "nginx:3");
    paused.paused = true;
    index.apply_deployment(paused, ts(1000));
    let d = decide(&mk_alert(WEB, ts(1100)), &index, &policy, &[]);
    assert_eq!(d.outcome, Outcome::Paused);
    assert!(d.command.is_none());

    let mut index = WorkloadIndex::default();
    index.apply_replica_set(mk_rs("web", "c", "nginx:3", 1, ts(1000)), ts(1000));
    index.apply_deployment(mk_deployment("web", "nginx:3"), ts(1000));
    let d = decide(&mk_alert(WEB, ts(1100)), &index, &policy, &[]);
    assert_eq!(d.outcome, Outcome::NoHistory);
}

#[test]
fn one_cause_gets_one_rollback_and_an_undo_is_never_undone() {
    let policy = mk_policy(Mode::Enforce);
    let index = mk_index();
    let earlier = PastAction {
        incident_id: 7,
        workload_uid: "uid-web".into(),
        blamed_uid: "uid-web-c".into(),
        target_uid: None,
        at: ts(1100),
        settled: true,
        held: false,
    };
    let d = decide(
        &mk_alert(WEB, ts(1150)),
        &index,
        &policy,
        std::slice::from_ref(&earlier),
    );
    assert_eq!(d.outcome, Outcome::AlreadyRolledBack);
    assert!(d.command.is_none());

    // After rollbackd moved web back to web-b, a new alert must not undo that.
    let mut index = mk_index();
    index.apply_deployment(mk_deployment("web", "nginx:2"), ts(1200));
    let done = PastAction {
        target_uid: Some("uid-web-b".into()),
        ..earlier
    };
    let d = decide(&mk_alert(WEB, ts(1300)), &index, &policy, &[done]);
    assert_eq!(d.outcome, Outcome::WouldCascade, "{}", d.reason);
    assert!(d.command.is_none());
}

#[test]
fn an_action_whose_result_is_unknown_guards_like_an_applied_one() {
    let policy = mk_policy(Mode::Enforce);
    // Intended (or unknown) undo of web-c towards web-b: a second alert sends nothing more.
    let pending = PastAction {
        incident_id: 9,
        workload_uid: "uid-web".into(),
        blamed_uid: "uid-web-c".into(),
        target_uid: Some("uid-web-b".into()),
        at: ts(1100),
        settled: false,
        held: false,
    };
    let d = decide(
        &mk_alert(WEB, ts(1150)),
        &mk_index(),
        &policy,
        std::slice::from_ref(&pending),
    );
    assert_eq!(d.outcome, Outcome::AlreadyRolledBack);
    assert!(d.reason.contains("not known yet"), "{}", d.reason);
    assert!(d.command.is_none());

    // The patch landed but its result was never recorded: web now runs web-b, the target.
    // A different alert must not blame web-b and roll the bad release back in.
    let mut index = mk_index();
    index.apply_deployment(mk_deployment("web", "nginx:2"), ts(1200));
    let d = decide(&mk_alert(WEB, ts(1300)), &index, &policy, &[pending]);
    assert_eq!(d.outcome, Outcome::WouldCascade, "{}", d.reason);
    assert!(d.command.is_none());
}

#[test]
fn a_resolved_alert_is_not_acted_on() {
    let mut alert = mk_alert(WEB, ts(1100));
    alert.status = AlertStatus::Resolved;
    let d = decide(&alert, &mk_index(), &mk_policy(Mode::Enforce), &[]);
    assert_eq!(d.outcome, Outcome::NotFiring);
}

#[test]
fn outcome_codes_round_trip() {
    for o in Outcome::ALL {
        assert_eq!(Outcome::from_code(o.code()), Some(o));
    }
}

/// An earlier undo of web (web-b back to web-a) that did not recover it.
fn mk_held(held: bool, workload_uid: &str) -> PastAction {
    PastAction {
        incident_id: 7,
        workload_uid: workload_uid.into(),
        blamed_uid: "uid-web-b".into(),
        target_uid: Some("uid-web-a".into()),
        at: ts(600),
        settled: true,
        held,
    }
}

#[test]
fn a_held_workload_gets_no_automatic_action_even_for_a_fresh_rollout() {
    // web-c is a fresh rollout, recent and never acted on: without the hold it is undone.
    let d = decide_at(
        &mk_alert(WEB, ts(1120)),
        &mk_index(),
        &mk_policy(Mode::Enforce),
        &[mk_held(true, "uid-web")],
        ts(1121),
    );
    assert_eq!(d.outcome, Outcome::Held, "{}", d.reason);
    assert!(d.command.is_none());
    assert!(d.reason.contains("incident 7"), "{}", d.reason);
    assert!(
        d.reason.contains("`rollbackd incidents ack 7`"),
        "{}",
        d.reason
    );
    assert!(
        d.workload.is_some(),
        "the decision still names the workload"
    );
}

#[test]
fn a_hold_is_checked_before_everything_else_and_in_dry_run_too() {
    // The alert is older than the rollout: pre-existing otherwise, held first.
    let d = decide(
        &mk_alert(WEB, ts(900)),
        &mk_index(),
        &mk_policy(Mode::DryRun),
        &[mk_held(true, "uid-web")],
    );
    assert_eq!(d.outcome, Outcome::Held, "{}", d.reason);
    assert!(d.command.is_none());
}

#[test]
fn an_acknowledged_hold_or_one_on_another_workload_changes_nothing() {
    for past in [mk_held(false, "uid-web"), mk_held(true, "uid-other")] {
        let d = decide(
            &mk_alert(WEB, ts(1120)),
            &mk_index(),
            &mk_policy(Mode::Enforce),
            &[past],
        );
        assert_eq!(d.outcome, Outcome::RolledBack, "{}", d.reason);
        assert!(d.command.is_some());
    }
}

mod rollouts {
    use super::*;
    use crate::core::rollout::{ROLLOUT_HASH_LABEL, RolloutState};
    use crate::core::workload::tests::mk_template;

    fn mk_rollout(stable: &str, current: &str) -> RolloutState {
        RolloutState {
            namespace: "default".into(),
            name: "web".into(),
            uid: "uid-ro".into(),
            resource_version: "9".into(),
            generation: 2,
            observed_generation: Some("2".into()),
            phase: Some("Paused".into()),
            stable_rs: Some(stable.into()),
            current_pod_hash: Some(current.into()),
            aborted: false,
            paused: false,
            rollback_window: None,
            template: crate::core::workload::PodTemplate::read(mk_template(
                &format!("web:{current}"),
                "web",
            )),
            workload_ref: None,
            labels: LabelSet::new(),
            annotations: LabelSet::new(),
        }
    }

    fn mk_ro_rs(
        hash: &str,
        revision: i64,
        created: Timestamp,
    ) -> crate::core::workload::ReplicaSetState {
        let mut rs = mk_rs("web", hash, &format!("web:{hash}"), revision, created);
        rs.owner_uid = Some("uid-ro".into());
        rs.owner_kind = Some("Rollout".into());
        rs.template = rs.template.edited(|t| {
            t["metadata"]["labels"]
                .as_object_mut()
                .map(|l| l.remove("pod-template-hash"));
            t["metadata"]["labels"][ROLLOUT_HASH_LABEL] = hash.into();
        });
        rs
    }

    fn mk_index(rollout: RolloutState) -> WorkloadIndex {
        let mut index = WorkloadIndex::default();
        index.apply_replica_set(mk_ro_rs("a", 1, ts(0)), ts(0));
        index.apply_replica_set(mk_ro_rs("b", 2, ts(1000)), ts(1000));
        index.apply_rollout(rollout, ts(1000));
        index
    }

    const RO: &[(&str, &str)] = &[("namespace", "default"), ("rollout", "web")];

    #[test]
    fn mid_update_is_aborted_back_to_stable() {
        let index = mk_index(mk_rollout("a", "b"));
        let d = decide(
            &mk_alert(RO, ts(1100)),
            &index,
            &mk_policy(Mode::Enforce),
            &[],
        );
        assert_eq!(d.outcome, Outcome::Aborted, "{}", d.reason);
        let Some(Command::AbortRollout(abort)) = d.command else {
            panic!("expected an abort");
        };
        assert_eq!(abort.blamed.name, "web-b");
        assert_eq!(abort.stable.name, "web-a");
    }

    #[test]
    fn a_deployment_label_naming_the_rollout_aborts_it_and_says_how_it_was_matched() {
        // kube-prometheus-stack's workload label names a Rollout's pods after the Rollout.
        let index = mk_index(mk_rollout("a", "b"));
        let d = decide(
            &mk_alert(&[("namespace", "default"), ("deployment", "web")], ts(1100)),
            &index,
            &mk_policy(Mode::Enforce),
            &[],
        );
        assert_eq!(d.outcome, Outcome::Aborted, "{}", d.reason);
        assert!(matches!(d.command, Some(Command::AbortRollout(_))));
        assert!(
            d.reason
                .contains("no Deployment of that name but an Argo Rollout"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn an_aborted_update_is_not_aborted_again() {
        let mut rollout = mk_rollout("a", "b");
        rollout.aborted = true;
        let d = decide(
            &mk_alert(RO, ts(1100)),
            &mk_index(rollout),
            &mk_policy(Mode::Enforce),
            &[],
        );
        assert_eq!(d.outcome, Outcome::AlreadyRolledBack);
        assert!(d.command.is_none());
    }

    #[test]
    fn a_status_behind_the_spec_is_not_trusted() {
        let mut rollout = mk_rollout("a", "b");
        rollout.generation = 3;
        let d = decide(
            &mk_alert(RO, ts(1100)),
            &mk_index(rollout),
            &mk_policy(Mode::Enforce),
            &[],
        );
        assert_eq!(d.outcome, Outcome::StatusNotObserved, "{}", d.reason);
        assert!(d.command.is_none());
    }

    #[test]
    fn a_promoted_rollout_is_undone_never_aborted() {
        let d = decide(
            &mk_alert(RO, ts(1100)),
            &mk_index(mk_rollout("b", "b")),
            &mk_policy(Mode::Enforce),
            &[],
        );
        assert_eq!(d.outcome, Outcome::RolledBack, "{}", d.reason);
        let Some(Command::UndoRollout(undo)) = d.command else {
            panic!("expected an undo, never an abort");
        };
        assert_eq!(undo.planned_target.name, "web-a");
        assert_eq!(undo.workload_ref, None);
    }

    #[test]
    fn a_deployment_label_of_a_workload_ref_leads_to_the_rollout() {
        let mut rollout = mk_rollout("b", "b");
        rollout.workload_ref = Some("web-template".into());
        rollout.template = crate::core::workload::PodTemplate::default();
        let mut index = mk_index(rollout);
        let mut template = mk_deployment("web-template", "web:b");
        template.uid = "uid-template".into();
        index.apply_deployment(template, ts(1000));
        let labels = [("namespace", "default"), ("deployment", "web-template")];
        let d = decide(
            &mk_alert(&labels, ts(1100)),
            &index,
            &mk_policy(Mode::Enforce),
            &[],
        );
        let Some(Command::UndoRollout(undo)) = d.command else {
            panic!(
                "expected the Rollout's undo, got {:?}: {}",
                d.outcome, d.reason
            );
        };
        assert_eq!(undo.workload_ref.as_deref(), Some("web-template"));
    }
}
