//! Tests of the alert state machine, with small `mk_*` builders and a fake clock in seconds.

use std::time::Duration;

use super::*;

const PROM: &str = "http://prometheus:9090";

fn mk_labels(pairs: &[(&str, &str)]) -> LabelSet {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn mk_rule(for_secs: u64, keep_firing_secs: u64) -> AlertingRule {
    AlertingRule {
        alert: "HighErrorRate".into(),
        expr: "error_ratio > 0.05".into(),
        for_: Duration::from_secs(for_secs),
        keep_firing_for: Duration::from_secs(keep_firing_secs),
        labels: mk_labels(&[("severity", "critical")]),
        annotations: mk_labels(&[(
            "summary",
            "{{ $labels.app }} in {{ $labels.namespace }}: {{ $value | humanizePercentage }}",
        )]),
        post_rollout: None,
    }
}

fn mk_state(for_secs: u64, keep_firing_secs: u64) -> RuleState {
    RuleState::new(mk_rule(for_secs, keep_firing_secs), PROM)
}

fn mk_sample(app: &str, value: f64) -> Sample {
    Sample {
        metric: mk_labels(&[
            ("__name__", "error_ratio"),
            ("namespace", "shop"),
            ("app", app),
        ]),
        value,
    }
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).expect("valid test timestamp")
}

/// Observes `samples` at `secs` and returns the step; panics if inconclusive.
fn eval(state: &mut RuleState, secs: i64, samples: &[Sample]) -> Step {
    match state.observe(t(secs), Observation::Samples(samples)) {
        Outcome::Conclusive(step) => step,
        Outcome::Inconclusive(why) => panic!("unexpected inconclusive at {secs}s: {why}"),
    }
}

fn firing_apps(step: &Step) -> Vec<String> {
    step.firing
        .iter()
        .map(|a| a.labels["app"].clone())
        .collect()
}

#[test]
fn pending_until_for_has_elapsed_then_firing() {
    let mut s = mk_state(300, 0);
    let bad = [mk_sample("checkout", 0.06)];
    assert!(eval(&mut s, 0, &bad).firing.is_empty());
    assert!(eval(&mut s, 299, &bad).firing.is_empty());
    let step = eval(&mut s, 300, &bad);
    assert_eq!(firing_apps(&step), ["checkout"]);
    let alert = &step.firing[0];
    assert_eq!(alert.status, AlertStatus::Firing);
    assert_eq!(alert.source, AlertSource::Prometheus);
    assert_eq!(
        alert.starts_at,
        t(300),
        "startsAt is when it fired, not when it went pending"
    );
    assert_eq!(alert.ends_at, None);
    // Firing alerts are handed on again at every evaluation, with the same identity.
    let again = eval(&mut s, 330, &bad);
    assert_eq!(again.firing[0].key(), alert.key());
}

#[test]
fn for_zero_fires_at_once() {
    let mut s = mk_state(0, 0);
    let step = eval(&mut s, 0, &[mk_sample("checkout", 0.06)]);
    assert_eq!(firing_apps(&step), ["checkout"]);
    assert_eq!(step.firing[0].starts_at, t(0));
}

#[test]
fn alert_carries_labels_annotations_fingerprint_and_link() {
    let mut s = mk_state(0, 0);
    let alert = eval(&mut s, 0, &[mk_sample("checkout", 0.06)])
        .firing
        .remove(0);
    let want = mk_labels(&[
        ("alertname", "HighErrorRate"),
        ("app", "checkout"),
        ("namespace", "shop"),
        ("severity", "critical"),
    ]);
    assert_eq!(
        alert.labels, want,
        "__name__ dropped, rule labels and alertname added"
    );
    assert_eq!(alert.fingerprint, Fingerprint::of(&want));
    assert_eq!(alert.annotations["summary"], "checkout in shop: 6%");
    assert_eq!(
        alert.generator_url,
        "http://prometheus:9090/graph?g0.expr=error_ratio+%3E+0.05&g0.tab=1"
    );
}

#[test]
fn pending_alert_that_goes_away_is_never_reported() {
    let mut s = mk_state(300, 0);
    eval(&mut s, 0, &[mk_sample("checkout", 0.06)]);
    let step = eval(&mut s, 60, &[]);
    assert_eq!(step, Step::default());
    assert!(s.instances().is_empty());
}

#[test]
fn resolved_is_reported_once_with_its_end_time() {
    let mut s = mk_state(0, 0);
    eval(&mut s, 0, &[mk_sample("checkout", 0.06)]);
    let step = eval(&mut s, 60, &[]);
    assert!(step.firing.is_empty());
    assert_eq!(step.resolved.len(), 1);
    let resolved = &step.resolved[0];
    assert_eq!(resolved.status, AlertStatus::Resolved);
    assert_eq!(resolved.starts_at, t(0));
    assert_eq!(resolved.ends_at, Some(t(60)));
    assert_eq!(
        eval(&mut s, 120, &[]),
        Step::default(),
        "reported once only"
    );
}

#[test]
fn keep_firing_for_holds_a_missing_series_then_resolves() {
    let mut s = mk_state(0, 120);
    let bad = [mk_sample("checkout", 0.06)];
    eval(&mut s, 0, &bad);
    assert_eq!(
        firing_apps(&eval(&mut s, 60, &[])),
        ["checkout"],
        "missing since 60s"
    );
    assert_eq!(firing_apps(&eval(&mut s, 179, &[])), ["checkout"]);
    let step = eval(&mut s, 180, &[]);
    assert!(step.firing.is_empty());
    assert_eq!(step.resolved[0].ends_at, Some(t(180)));
    assert_eq!(step.resolved[0].starts_at, t(0));
}

#[test]
fn keep_firing_for_timer_restarts_when_the_series_comes_back() {
    let mut s = mk_state(0, 120);
    let bad = [mk_sample("checkout", 0.06)];
    eval(&mut s, 0, &bad);
    eval(&mut s, 60, &[]); // missing since 60
    eval(&mut s, 150, &bad); // back: timer reset
    assert_eq!(firing_apps(&eval(&mut s, 200, &[])), ["checkout"]); // missing since 200
    assert_eq!(firing_apps(&eval(&mut s, 319, &[])), ["checkout"]);
    let step = eval(&mut s, 320, &[]);
    assert_eq!(step.resolved.len(), 1);
    assert_eq!(
        step.resolved[0].starts_at,
        t(0),
        "one firing episode throughout"
    );
}

#[test]
fn inconclusive_changes_nothing() {
    let mut s = mk_state(300, 0);
    let bad = [mk_sample("checkout", 0.06)];
    // Nothing is created.
    let before = s.clone();
    assert_eq!(
        s.observe(t(0), Observation::Inconclusive("timeout")),
        Outcome::Inconclusive("timeout".into())
    );
    assert_eq!(s, before);
    // Nothing advances: pending stays pending, with its original start.
    eval(&mut s, 0, &bad);
    let before = s.clone();
    s.observe(t(400), Observation::Inconclusive("connection refused"));
    assert_eq!(s, before);
    // The next conclusive evaluation decides on the real elapsed time.
    assert_eq!(eval(&mut s, 410, &bad).firing[0].starts_at, t(410));
    // Nothing resolves: an outage of the query is not the end of the alert.
    let before = s.clone();
    assert!(matches!(
        s.observe(t(500), Observation::Inconclusive("HTTP 503")),
        Outcome::Inconclusive(_)
    ));
    assert_eq!(s, before);
    assert_eq!(firing_apps(&eval(&mut s, 510, &bad)), ["checkout"]);
}

#[test]
fn duplicate_label_sets_are_inconclusive_and_change_nothing() {
    let mut s = mk_state(0, 0);
    eval(&mut s, 0, &[mk_sample("checkout", 0.06)]);
    let before = s.clone();
    // Two series that differ only in __name__ collapse into one alert label set.
    let mut other = mk_sample("checkout", 0.07);
    other.metric.insert("__name__".into(), "other_ratio".into());
    let out = s.observe(
        t(60),
        Observation::Samples(&[mk_sample("checkout", 0.06), other]),
    );
    assert!(matches!(out, Outcome::Inconclusive(ref why) if why.contains("several series")));
    assert_eq!(s, before);
}

#[test]
fn nan_sample_is_ignored_for_its_series_only() {
    let mut s = mk_state(60, 0);
    // A NaN creates nothing.
    assert_eq!(
        eval(&mut s, 0, &[mk_sample("checkout", f64::NAN)]),
        Step::default()
    );
    assert!(s.instances().is_empty());
    // Both pending from t=10; at t=70 cart is NaN: it neither advances nor goes away,
    // while checkout advances to firing.
    let both = [mk_sample("checkout", 0.06), mk_sample("cart", 0.09)];
    eval(&mut s, 10, &both);
    let step = eval(
        &mut s,
        70,
        &[mk_sample("checkout", 0.06), mk_sample("cart", f64::NAN)],
    );
    assert_eq!(firing_apps(&step), ["checkout"]);
    let cart = mk_labels(&[
        ("alertname", "HighErrorRate"),
        ("app", "cart"),
        ("namespace", "shop"),
        ("severity", "critical"),
    ]);
    assert_eq!(s.instances()[&cart].phase, Phase::Pending);
    assert_eq!(s.instances()[&cart].active_at, t(10));
    // A firing series that turns NaN is not resolved either.
    eval(&mut s, 80, &both);
    let step = eval(
        &mut s,
        90,
        &[mk_sample("checkout", f64::NAN), mk_sample("cart", 0.09)],
    );
    assert!(step.resolved.is_empty());
    assert_eq!(firing_apps(&step), ["cart", "checkout"]);
}

#[test]
fn infinite_values_are_ordinary_samples() {
    let mut s = mk_state(0, 0);
    let step = eval(&mut s, 0, &[mk_sample("checkout", f64::INFINITY)]);
    assert_eq!(
        step.firing[0].annotations["summary"],
        "checkout in shop: +Inf%"
    );
}

#[test]
fn flapping_series_starts_a_new_episode_each_time() {
    let mut s = mk_state(60, 0);
    let bad = [mk_sample("checkout", 0.06)];
    // Flaps faster than `for`: never fires.
    for secs in (0..600).step_by(60) {
        let samples: &[Sample] = if secs % 120 == 0 { &bad } else { &[] };
        assert_eq!(eval(&mut s, secs, samples), Step::default(), "at {secs}s");
    }
    // Fires, resolves, fires again: two episodes with different starts (two keys).
    eval(&mut s, 1000, &bad);
    let first = eval(&mut s, 1060, &bad).firing.remove(0);
    assert_eq!(eval(&mut s, 1120, &[]).resolved[0].key(), first.key());
    eval(&mut s, 1180, &bad);
    let second = eval(&mut s, 1240, &bad).firing.remove(0);
    assert_eq!(second.fingerprint, first.fingerprint);
    assert_ne!(second.key(), first.key());
    assert_eq!(second.starts_at, t(1240));
}

#[test]
fn rule_label_templates_are_expanded_and_empty_ones_dropped() {
    let mut rule = mk_rule(0, 0);
    rule.labels = mk_labels(&[("team", "{{ $labels.app }}-owners"), ("app", "")]);
    let mut s = RuleState::new(rule, PROM);
    let alert = eval(&mut s, 0, &[mk_sample("checkout", 1.0)])
        .firing
        .remove(0);
    assert_eq!(
        alert.labels.get("team").map(String::as_str),
        Some("checkout-owners")
    );
    assert_eq!(alert.labels.get("app"), None);
}

#[test]
fn query_escape_matches_go() {
    assert_eq!(query_escape("a b*c~d/e\"é"), "a+b%2Ac~d%2Fe%22%C3%A9");
}
