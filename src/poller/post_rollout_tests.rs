//! Tests of reading the post-rollout annotations and of the verdicts, with a fake clock.

use super::*;

fn mk_annotations(pairs: &[(&str, &str)]) -> LabelSet {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn mk_spec() -> PostRollout {
    let mut annotations = mk_annotations(&[
        ("summary", "errors"),
        (
            "rollbackd_post_rollout_expr",
            "sum by (deployment) (rate(errors[$window])) / sum by (deployment) (rate(requests[$window]))",
        ),
        ("rollbackd_post_rollout_threshold", "0.01"),
        (
            "rollbackd_post_rollout_traffic_expr",
            "sum by (deployment) (increase(requests[$window]))",
        ),
        ("rollbackd_post_rollout_min_traffic", "100"),
        ("rollbackd_post_rollout_format", "humanizePercentage"),
        ("rollbackd_post_rollout_measure", "errors"),
    ]);
    let spec = PostRollout::take(&mut annotations)
        .expect("valid")
        .expect("opted in");
    assert_eq!(annotations, mk_annotations(&[("summary", "errors")]));
    spec
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).expect("valid test timestamp")
}

fn mk_measure(current: f64, baseline: Option<f64>, traffic: Option<f64>) -> Measurement {
    Measurement {
        since: t(0),
        now: t(185),
        current,
        baseline,
        traffic,
    }
}

#[test]
fn defaults_apply_and_the_annotations_leave_the_alert_text() {
    let spec = mk_spec();
    assert_eq!(spec.threshold, 0.01);
    assert_eq!(spec.for_, Duration::from_secs(60));
    assert_eq!(spec.baseline, Duration::from_secs(3600));
    assert_eq!(spec.baseline_factor, 2.0);
    assert_eq!(spec.traffic.as_ref().map(|f| f.min), Some(100.0));
    assert_eq!(spec.format, ValueFormat::Percentage);
    let mut plain = mk_annotations(&[("summary", "x")]);
    assert_eq!(PostRollout::take(&mut plain), Ok(None));
}

#[test]
fn bad_annotations_are_all_reported_by_name() {
    let mut annotations = mk_annotations(&[
        ("rollbackd_post_rollout_expr", "rate(x[5m])"),
        ("rollbackd_post_rollout_threshold", "one percent"),
        ("rollbackd_post_rollout_for", "soon"),
        ("rollbackd_post_rollout_baseline_factor", "0.5"),
        (
            "rollbackd_post_rollout_traffic_expr",
            "increase(x[$window])",
        ),
        ("rollbackd_post_rollout_format", "percent"),
        ("rollbackd_post_rollout_treshold", "0.01"),
    ]);
    let problems = PostRollout::take(&mut annotations).expect_err("invalid");
    let all = problems.join("\n");
    for needle in [
        "unknown annotation rollbackd_post_rollout_treshold",
        "rollbackd_post_rollout_threshold must be a non-negative number, not \"one percent\"",
        "rollbackd_post_rollout_for: not a valid duration string: \"soon\"",
        "rollbackd_post_rollout_baseline_factor must be at least 1",
        "rollbackd_post_rollout_traffic_expr needs rollbackd_post_rollout_min_traffic",
        "rollbackd_post_rollout_format must be humanize, humanizePercentage or humanizeDuration",
        "rollbackd_post_rollout_expr must use $window",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
    let mut no_expr = mk_annotations(&[("rollbackd_post_rollout_threshold", "0.01")]);
    let problems = PostRollout::take(&mut no_expr).expect_err("invalid");
    assert_eq!(problems, vec!["rollbackd_post_rollout_expr must be set"]);
}

#[test]
fn the_window_is_whole_seconds_and_never_empty() {
    assert_eq!(
        with_window(
            "rate(x[$window]) / rate(y[$window])",
            Duration::from_millis(185_700)
        ),
        "rate(x[185s]) / rate(y[185s])"
    );
    assert_eq!(
        with_window("rate(x[$window])", Duration::ZERO),
        "rate(x[1s])"
    );
}

#[test]
fn a_regression_names_both_numbers_the_threshold_and_the_traffic() {
    let spec = mk_spec();
    let Verdict::Regression(why) = judge(&spec, &mk_measure(0.018, Some(0.001), Some(2400.0)))
    else {
        panic!("expected a regression");
    };
    assert_eq!(
        why,
        "1.8% errors in the 3m 5s since the rollout at 2027-01-15T08:00:00Z, against 0.1% in the 1h before it: above the post-rollout threshold of 1% and more than 2× the baseline; traffic since the rollout 2.4k (minimum 100)"
    );
}

#[test]
fn as_bad_before_the_rollout_is_pre_existing() {
    let spec = mk_spec();
    let Verdict::PreExisting(why) = judge(&spec, &mk_measure(0.02, Some(0.02), Some(2400.0)))
    else {
        panic!("expected pre-existing");
    };
    assert!(
        why.starts_with("2% errors in the 3m 5s since the rollout"),
        "{why}"
    );
    assert!(why.contains("against 2% in the 1h before it"), "{why}");
    assert!(why.contains("not more than 2× the baseline"), "{why}");
    // More than twice as bad as before is a regression even when it was bad already.
    assert!(matches!(
        judge(&spec, &mk_measure(0.05, Some(0.02), Some(2400.0))),
        Verdict::Regression(_)
    ));
}

#[test]
fn one_error_in_three_requests_is_too_little_traffic() {
    let spec = mk_spec();
    let Verdict::LowTraffic(why) = judge(&spec, &mk_measure(1.0 / 3.0, Some(0.0), Some(3.0)))
    else {
        panic!("expected low traffic");
    };
    assert!(why.contains("33.33% errors"), "{why}");
    assert!(
        why.contains("3 in the window, below the minimum of 100"),
        "{why}"
    );
    // No traffic value at all counts as none.
    assert!(matches!(
        judge(&spec, &mk_measure(0.5, None, None)),
        Verdict::LowTraffic(_)
    ));
}

#[test]
fn at_or_below_the_threshold_or_nan_is_healthy() {
    let spec = mk_spec();
    for current in [0.0, 0.01, f64::NAN] {
        assert_eq!(
            judge(&spec, &mk_measure(current, Some(0.0), Some(1e6))),
            Verdict::Healthy
        );
    }
}

#[test]
fn without_a_baseline_the_threshold_alone_decides_and_says_so() {
    let spec = mk_spec();
    let Verdict::Regression(why) = judge(&spec, &mk_measure(0.02, None, Some(500.0))) else {
        panic!("expected a regression");
    };
    assert!(
        why.contains("with no value in the 1h before the rollout to compare with"),
        "{why}"
    );
    let off = PostRollout {
        baseline: Duration::ZERO,
        ..spec
    };
    let Verdict::Regression(why) = judge(&off, &mk_measure(0.02, Some(0.02), Some(500.0))) else {
        panic!("expected a regression");
    };
    assert!(!why.contains("before"), "{why}");
}
