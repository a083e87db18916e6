//! Guard-rail tests: builders in, decisions out, the clock injected.

use std::time::Duration;

use super::*;
use crate::core::alert::{AlertSource, Fingerprint, LabelSet};
use crate::core::guard::{Freeze, GuardPolicy, Matcher};
use crate::core::workload::tests::{mk_deployment, mk_rs, ts};

fn mk_policy(guard: GuardPolicy) -> Policy {
    Policy {
        mode: Mode::Enforce,
        correlation_window: Duration::from_secs(30 * 60),
        grace: Duration::from_secs(30),
        labels: CorrelationLabels::default(),
        guard,
        gitops: Default::default(),
    }
}

fn mk_alert(extra: &[(&str, &str)], starts_at: Timestamp) -> Alert {
    let labels: LabelSet = [("namespace", "default"), ("deployment", "web")]
        .iter()
        .chain(extra)
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

/// web rolled out three times; revision 3 became current at ts(1000). `annotations` go on
/// the Deployment, `ns` on its namespace.
fn mk_index(annotations: &[(&str, &str)], ns: &[(&str, &str)]) -> WorkloadIndex {
    let mut index = WorkloadIndex::default();
    index.apply_replica_set(mk_rs("web", "a", "nginx:1", 1, ts(0)), ts(0));
    index.apply_replica_set(mk_rs("web", "b", "nginx:2", 2, ts(500)), ts(500));
    index.apply_replica_set(mk_rs("web", "c", "nginx:3", 3, ts(1000)), ts(1000));
    let mut d = mk_deployment("web", "nginx:3");
    d.annotations = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    index.apply_deployment(d, ts(1000));
    index.apply_namespace(
        "default".into(),
        ns.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    index
}

/// An applied action on another rollout of `workload_uid` at `at`.
fn acted(workload_uid: &str, at: Timestamp) -> PastAction {
    PastAction {
        incident_id: 1,
        workload_uid: workload_uid.into(),
        blamed_uid: format!("{workload_uid}-old"),
        target_uid: Some(format!("{workload_uid}-older")),
        at,
        settled: true,
        held: false,
    }
}

fn decide_now(
    guard: GuardPolicy,
    index: &WorkloadIndex,
    past: &[PastAction],
    now: i64,
) -> Decision {
    decide_at(
        &mk_alert(&[], ts(1100)),
        index,
        &mk_policy(guard),
        past,
        ts(now),
    )
}

#[test]
fn no_guard_rails_act_as_before() {
    let d = decide_now(GuardPolicy::default(), &mk_index(&[], &[]), &[], 1150);
    assert_eq!(d.outcome, Outcome::RolledBack, "{}", d.reason);
    assert!(d.command.is_some());
}

#[test]
fn cooldown_holds_until_it_has_passed() {
    let guard = GuardPolicy {
        cooldown: Duration::from_secs(600),
        ..GuardPolicy::default()
    };
    let past = [acted("uid-web", ts(900))];
    let index = mk_index(&[], &[]);
    let d = decide_now(guard.clone(), &index, &past, 1150);
    assert_eq!(d.outcome, Outcome::Cooldown, "{}", d.reason);
    assert!(d.command.is_none());
    assert!(d.reason.contains("policy.cooldown (10m)"), "{}", d.reason);
    // Another workload's action does not count; the cooldown ends at 900 + 600.
    let other = [acted("uid-api", ts(900))];
    assert_eq!(
        decide_now(guard.clone(), &index, &other, 1150).outcome,
        Outcome::RolledBack
    );
    assert_eq!(
        decide_now(guard, &index, &past, 1500).outcome,
        Outcome::RolledBack
    );
}

#[test]
fn one_action_in_flight_per_workload() {
    let mut pending = acted("uid-web", ts(1140));
    pending.settled = false;
    let d = decide_now(
        GuardPolicy::default(),
        &mk_index(&[], &[]),
        &[pending],
        1150,
    );
    assert_eq!(d.outcome, Outcome::InFlight, "{}", d.reason);
    assert!(d.command.is_none());
}

#[test]
fn the_breaker_opens_at_its_limit_and_closes_after_its_window() {
    let guard = GuardPolicy {
        breaker_max: 3,
        breaker_window: Duration::from_secs(600),
        ..GuardPolicy::default()
    };
    let index = mk_index(&[], &[]);
    let two = [acted("uid-a", ts(1000)), acted("uid-b", ts(1050))];
    assert_eq!(
        decide_now(guard.clone(), &index, &two, 1150).outcome,
        Outcome::RolledBack
    );
    let three = [
        acted("uid-a", ts(1000)),
        acted("uid-b", ts(1050)),
        acted("uid-c", ts(1100)),
    ];
    let d = decide_now(guard.clone(), &index, &three, 1150);
    assert_eq!(d.outcome, Outcome::BreakerOpen, "{}", d.reason);
    assert!(d.command.is_none());
    assert!(guard.breaker_open(&three, ts(1150)));
    // At 1600 the first action left the window: two remain, the breaker is closed.
    assert!(!guard.breaker_open(&three, ts(1600)));
    let d = decide_at(
        &mk_alert(&[], ts(1590)),
        &index,
        &mk_policy(guard),
        &three,
        ts(1600),
    );
    assert_eq!(d.outcome, Outcome::RolledBack, "{}", d.reason);
}

#[test]
fn freeze_windows_record_and_notify_only() {
    // ts(0) is 2027-01-15T08:00:00Z, a Friday.
    let guard = GuardPolicy {
        freezes: vec![Freeze::parse("fri 08:00-09:00").expect("valid")],
        ..GuardPolicy::default()
    };
    let index = mk_index(&[], &[]);
    let d = decide_now(guard.clone(), &index, &[], 1150);
    assert_eq!(d.outcome, Outcome::Frozen, "{}", d.reason);
    assert!(d.command.is_none());
    assert!(d.reason.contains("fri 08:00-09:00 UTC"), "{}", d.reason);
    let d = decide_at(
        &mk_alert(&[], ts(3700)),
        &index,
        &mk_policy(guard),
        &[],
        ts(3700),
    );
    assert_ne!(d.outcome, Outcome::Frozen, "after the window: {}", d.reason);
}

#[test]
fn opt_in_and_opt_out_on_the_workload_win_over_its_namespace_and_the_default() {
    let off = GuardPolicy {
        auto_rollback_default: false,
        ..GuardPolicy::default()
    };
    let on = GuardPolicy::default();
    let yes = [("rollbackd.io/auto-rollback", "true")];
    let no = [("rollbackd.io/auto-rollback", "false")];
    type Annotations<'a> = &'a [(&'a str, &'a str)];
    let cases: [(&GuardPolicy, Annotations, Annotations, Outcome); 6] = [
        (&off, &[], &[], Outcome::OutOfScope),
        (&off, &[], &yes, Outcome::RolledBack),
        (&off, &yes, &no, Outcome::RolledBack),
        (&on, &[], &no, Outcome::OutOfScope),
        (&on, &no, &yes, Outcome::OutOfScope),
        (
            &on,
            &[("rollbackd.io/auto-rollback", "maybe")],
            &[],
            Outcome::OutOfScope,
        ),
    ];
    for (guard, workload, namespace, want) in cases {
        let d = decide_now(guard.clone(), &mk_index(workload, namespace), &[], 1150);
        assert_eq!(d.outcome, want, "{workload:?} {namespace:?}: {}", d.reason);
        assert_eq!(d.command.is_some(), want == Outcome::RolledBack);
    }
}

#[test]
fn namespace_lists_and_alert_matchers_scope_automatic_action() {
    let index = mk_index(&[], &[]);
    let deny = GuardPolicy {
        namespaces_deny: vec!["default".into()],
        ..GuardPolicy::default()
    };
    assert_eq!(
        decide_now(deny, &index, &[], 1150).outcome,
        Outcome::OutOfScope
    );
    let allow = GuardPolicy {
        namespaces_allow: vec!["payments".into()],
        ..GuardPolicy::default()
    };
    assert_eq!(
        decide_now(allow, &index, &[], 1150).outcome,
        Outcome::OutOfScope
    );
    let matchers = GuardPolicy {
        alert_matchers: vec![Matcher::parse(r#"severity=~"critical|page""#).expect("valid")],
        ..GuardPolicy::default()
    };
    let policy = mk_policy(matchers);
    let d = decide_at(
        &mk_alert(&[("severity", "warning")], ts(1100)),
        &index,
        &policy,
        &[],
        ts(1150),
    );
    assert_eq!(d.outcome, Outcome::OutOfScope, "{}", d.reason);
    assert!(d.reason.contains("policy.alert_matchers"), "{}", d.reason);
    let d = decide_at(
        &mk_alert(&[("severity", "page")], ts(1100)),
        &index,
        &policy,
        &[],
        ts(1150),
    );
    assert_eq!(d.outcome, Outcome::RolledBack, "{}", d.reason);
}

#[test]
fn notify_only_and_pause_per_workload() {
    let d = decide_now(
        GuardPolicy::default(),
        &mk_index(&[("rollbackd.io/policy", "notify-only")], &[]),
        &[],
        1150,
    );
    assert_eq!(d.outcome, Outcome::NotifyOnly, "{}", d.reason);
    assert!(d.command.is_none());
    let d = decide_now(
        GuardPolicy::default(),
        &mk_index(&[("rollbackd.io/policy", "pause")], &[]),
        &[],
        1150,
    );
    assert_eq!(d.outcome, Outcome::PausedWorkload, "{}", d.reason);
    let Some(Command::PauseWorkload(p)) = &d.command else {
        panic!("expected a pause: {:?}", d.command);
    };
    assert_eq!((p.kind.as_str(), p.name.as_str()), ("Deployment", "web"));
    assert_eq!(p.blamed.name, "web-c");
    let intent = d.command.as_ref().map(Command::intent).expect("intent");
    assert_eq!(intent.target_key, "paused:uid-web");
    // A pause still passes the other guard rails.
    let frozen = GuardPolicy {
        freezes: vec![Freeze::parse("fri 00:00-24:00").expect("valid")],
        ..GuardPolicy::default()
    };
    let d = decide_now(
        frozen,
        &mk_index(&[("rollbackd.io/policy", "pause")], &[]),
        &[],
        1150,
    );
    assert_eq!(d.outcome, Outcome::Frozen, "{}", d.reason);
}

#[test]
fn the_revision_rolled_back_to_is_never_blamed_in_turn() {
    // rollbackd moved web back to web-b; an alert now blames web-b: stop, do not cascade.
    let mut index = mk_index(&[], &[]);
    index.apply_deployment(mk_deployment("web", "nginx:2"), ts(1200));
    let ours = PastAction {
        incident_id: 7,
        workload_uid: "uid-web".into(),
        blamed_uid: "uid-web-c".into(),
        target_uid: Some("uid-web-b".into()),
        at: ts(1150),
        settled: true,
        held: false,
    };
    let d = decide_at(
        &mk_alert(&[], ts(1300)),
        &index,
        &mk_policy(GuardPolicy::default()),
        &[ours],
        ts(1300),
    );
    assert_eq!(d.outcome, Outcome::WouldCascade, "{}", d.reason);
    assert!(d.command.is_none());
}
