//! Verdict tests: alerts, a Rollout and an injected clock in, a verdict out.

use super::*;
use crate::core::workload::tests::{mk_rs, mk_template, ts};

const WHAT: &str = "undo-deployment of deployment default/web";

fn firing(name: &str) -> FollowedAlert {
    FollowedAlert {
        name: name.into(),
        resolved_at: None,
    }
}

fn resolved(name: &str, at: Timestamp) -> FollowedAlert {
    FollowedAlert {
        name: name.into(),
        resolved_at: Some(at),
    }
}

#[test]
fn all_alerts_resolved_is_recovered_with_the_time_to_the_last_resolution() {
    let alerts = [
        resolved("HighErrorRate", ts(130)),
        resolved("HighLatencyP95", ts(165)),
    ];
    let v = judge(WHAT, ts(100), ts(700), &alerts, None, ts(170));
    let Verdict::Recovered { after, reason } = v else {
        panic!("expected recovered, got {v:?}");
    };
    assert_eq!(after, SignedDuration::from_secs(65));
    assert!(
        reason.contains("recovered: 1m 5s after the undo-deployment"),
        "{reason}"
    );
    assert!(reason.contains("all 2 alerts resolved"), "{reason}");
}

#[test]
fn an_alert_still_firing_is_pending_inside_the_window() {
    let alerts = [resolved("A", ts(120)), firing("B")];
    assert_eq!(
        judge(WHAT, ts(100), ts(700), &alerts, None, ts(699)),
        Verdict::Pending
    );
}

#[test]
fn an_alert_still_firing_at_the_end_of_the_window_is_not_recovered_and_named() {
    let alerts = [resolved("A", ts(120)), firing("HighErrorRate")];
    let v = judge(WHAT, ts(100), ts(700), &alerts, None, ts(700));
    let Verdict::NotRecovered { reason } = v else {
        panic!("expected not-recovered, got {v:?}");
    };
    assert!(reason.contains("not recovered within 10m"), "{reason}");
    assert!(
        reason.contains("1 of 2 alerts still firing (HighErrorRate)"),
        "{reason}"
    );
}

#[test]
fn a_resolution_before_the_action_counts_as_zero_time() {
    let v = judge(
        WHAT,
        ts(100),
        ts(700),
        &[resolved("A", ts(90))],
        None,
        ts(101),
    );
    assert!(
        matches!(v, Verdict::Recovered { after, .. } if after == SignedDuration::ZERO),
        "{v:?}"
    );
}

fn mk_index(stable: &str, phase: &str, observed: &str) -> WorkloadIndex {
    let mut index = WorkloadIndex::default();
    for (hash, revision) in [("a", 1), ("b", 2)] {
        let mut rs = mk_rs("web", hash, &format!("web:{hash}"), revision, ts(0));
        rs.owner_uid = Some("uid-ro".into());
        rs.owner_kind = Some("Rollout".into());
        index.apply_replica_set(rs, ts(0));
    }
    index.apply_rollout(
        RolloutState {
            namespace: "default".into(),
            name: "web".into(),
            uid: "uid-ro".into(),
            resource_version: "9".into(),
            generation: 3,
            observed_generation: Some(observed.into()),
            phase: Some(phase.into()),
            stable_rs: Some(stable.into()),
            current_pod_hash: Some(stable.into()),
            aborted: false,
            template: crate::core::workload::PodTemplate::read(mk_template("web:a", "web")),
            workload_ref: None,
            annotations: Default::default(),
            labels: Default::default(),
            paused: false,
            rollback_window: None,
        },
        ts(0),
    );
    index
}

fn check(index: &WorkloadIndex) -> RolloutCheck {
    RolloutCheck::read(index, "default", "web", "uid-ro", "uid-web-a", "web-a")
}

#[test]
fn a_rollout_back_on_the_target_and_healthy_is_recovered() {
    let c = check(&mk_index("a", "Healthy", "3"));
    assert!(c.target_stable && c.trusted, "{c:?}");
    let v = judge(
        WHAT,
        ts(100),
        ts(700),
        &[resolved("A", ts(110))],
        Some(&c),
        ts(111),
    );
    let Verdict::Recovered { reason, .. } = v else {
        panic!("expected recovered, got {v:?}");
    };
    assert!(
        reason.contains("rollout default/web is Healthy"),
        "{reason}"
    );
}

#[test]
fn a_rollout_not_on_the_target_is_not_recovered_even_with_the_alerts_resolved() {
    let c = check(&mk_index("b", "Healthy", "3"));
    let alerts = [resolved("A", ts(110))];
    assert_eq!(
        judge(WHAT, ts(100), ts(700), &alerts, Some(&c), ts(600)),
        Verdict::Pending
    );
    let v = judge(WHAT, ts(100), ts(700), &alerts, Some(&c), ts(700));
    let Verdict::NotRecovered { reason } = v else {
        panic!("expected not-recovered, got {v:?}");
    };
    assert!(
        reason.contains("web-a is not the stable ReplicaSet of rollout default/web"),
        "{reason}"
    );
    assert!(!reason.contains("still firing"), "{reason}");
}

#[test]
fn an_aborted_rollout_on_its_stable_replicaset_counts_as_back() {
    let mut index = mk_index("a", "Degraded", "3");
    let mut ro = index.rollout("default", "web").cloned().expect("rollout");
    ro.aborted = true;
    index.apply_rollout(ro, ts(0));
    let c = check(&index);
    assert!(c.aborted && c.target_stable, "{c:?}");
    let v = judge(
        WHAT,
        ts(100),
        ts(700),
        &[resolved("A", ts(110))],
        Some(&c),
        ts(111),
    );
    assert!(matches!(v, Verdict::Recovered { .. }), "{v:?}");
    // Aborted but not on the target: still missing.
    let mut index = mk_index("b", "Degraded", "3");
    let mut ro = index.rollout("default", "web").cloned().expect("rollout");
    ro.aborted = true;
    index.apply_rollout(ro, ts(0));
    let v = judge(
        WHAT,
        ts(100),
        ts(700),
        &[resolved("A", ts(110))],
        Some(&check(&index)),
        ts(700),
    );
    assert!(matches!(v, Verdict::NotRecovered { .. }), "{v:?}");
}

#[test]
fn a_degraded_or_unobserved_rollout_says_which_part_is_missing() {
    let c = check(&mk_index("a", "Degraded", "2"));
    let v = judge(WHAT, ts(100), ts(700), &[firing("A")], Some(&c), ts(800));
    let Verdict::NotRecovered { reason } = v else {
        panic!("expected not-recovered, got {v:?}");
    };
    assert!(reason.contains("1 of 1 alert still firing (A)"), "{reason}");
    assert!(
        reason.contains("does not describe its current spec"),
        "{reason}"
    );
    assert!(reason.contains("is Degraded, not Healthy"), "{reason}");
    assert!(!reason.contains("not the stable"), "{reason}");
}

#[test]
fn a_rollout_gone_from_the_index_is_not_recovered() {
    let c = RolloutCheck::read(
        &WorkloadIndex::default(),
        "default",
        "web",
        "uid-ro",
        "uid-web-a",
        "web-a",
    );
    let v = judge(
        WHAT,
        ts(100),
        ts(700),
        &[resolved("A", ts(110))],
        Some(&c),
        ts(700),
    );
    assert!(
        matches!(&v, Verdict::NotRecovered { reason } if reason.contains("gone from the index")),
        "{v:?}"
    );
}
