//! The poller's rule loader: the shipped rules load as expected, and broken rule files are
//! reported completely, each error naming file, position, group and rule.

use std::path::Path;
use std::time::Duration;

use rollbackd::poller::rules::{RuleErrorKind, load_rule_files, parse_rules_str};

fn repo_path(rel: &str) -> String {
    format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn shipped_rules_load_with_their_durations_and_labels() {
    let loaded = load_rule_files(&[repo_path("rules/*.yml")]).expect("shipped rules load");
    assert!(loaded.notes.is_empty(), "{:?}", loaded.notes);
    let rules: Vec<_> = loaded.groups.iter().flat_map(|g| &g.rules).collect();
    let summary: Vec<(&str, Duration, &str)> = rules
        .iter()
        .map(|r| (r.alert.as_str(), r.for_, r.labels["severity"].as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("ServiceDown", Duration::from_secs(60), "critical"),
            ("HighErrorRate", Duration::from_secs(300), "critical"),
            ("HighLatencyP95", Duration::from_secs(600), "warning"),
            ("HighMemoryUsage", Duration::from_secs(300), "warning"),
        ]
    );
    // HighErrorRate opts in to the post-rollout form; its annotations configure rollbackd and
    // are no alert text.
    for rule in &rules {
        let opted_in = rule.alert == "HighErrorRate";
        assert_eq!(rule.post_rollout.is_some(), opted_in, "{}", rule.alert);
        assert!(
            !rule
                .annotations
                .keys()
                .any(|k| k.starts_with("rollbackd_post_rollout_")),
            "{}",
            rule.alert
        );
    }
    for rule in rules {
        assert!(rule.annotations.contains_key("summary"), "{}", rule.alert);
        assert!(
            rule.annotations.contains_key("description"),
            "{}",
            rule.alert
        );
        assert!(!rule.expr.trim().is_empty());
    }
}

const GOOD: &str = r#"
groups:
  - name: web
    interval: 30s
    labels:
      team: payments
      severity: info
    rules:
      - record: job:http_errors:rate5m
        expr: sum by (job) (rate(http_requests_total{code=~"5.."}[5m]))
      - alert: Errors
        expr: job:http_errors:rate5m > 1
        for: 1h30m
        keep_firing_for: 90s
        labels:
          severity: "1.10"
        annotations:
          summary: "{{ $labels.job }} errs"
      - alert: Instant
        expr: vector(1)
"#;

#[test]
fn parses_fields_merges_group_labels_and_skips_recording_rules() {
    let loaded = parse_rules_str(Path::new("good.yml"), GOOD).expect("valid file");
    let group = &loaded.groups[0];
    assert_eq!(group.name, "web");
    assert_eq!(group.interval, Some(Duration::from_secs(30)));
    assert_eq!(group.rules.len(), 2, "the recording rule is skipped");
    assert_eq!(loaded.notes.len(), 1);
    assert!(
        loaded.notes[0].contains("job:http_errors:rate5m"),
        "{:?}",
        loaded.notes
    );
    let errors = &group.rules[0];
    assert_eq!(errors.for_, Duration::from_secs(5400));
    assert_eq!(errors.keep_firing_for, Duration::from_secs(90));
    assert_eq!(
        errors.labels["severity"], "1.10",
        "scalars stay as written; rule wins"
    );
    assert_eq!(
        errors.labels["team"], "payments",
        "group labels are merged in"
    );
    assert_eq!(errors.annotations["summary"], "{{ $labels.job }} errs");
    let instant = &group.rules[1];
    assert_eq!(instant.for_, Duration::ZERO);
    assert_eq!(instant.keep_firing_for, Duration::ZERO);
}

#[test]
fn empty_file_and_null_groups_are_fine() {
    for text in ["", "# nothing\n", "groups:\n", "groups: []\n"] {
        let loaded = parse_rules_str(Path::new("empty.yml"), text).expect(text);
        assert!(loaded.groups.is_empty());
    }
}

const BROKEN: &str = r#"groups:
  - name: web
    rules:
      - alert: NoExpr
        for: 5m
      - expr: up == 0
      - alert: BadFor
        expr: up == 0
        for: 5x
        severity: critical
      - alert: BadLabel
        expr: up == 0
        labels:
          bad-name: x
  - name: web
    rules: []
  - name: ""
    intervall: 1m
"#;

#[test]
fn reports_every_error_with_file_group_rule_and_position() {
    let errors = parse_rules_str(Path::new("rules/broken.yml"), BROKEN)
        .expect_err("broken file")
        .0;
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let expect = [
        r#"rules/broken.yml:4:9: group "web", rule 1 "NoExpr", field "expr" must be set"#,
        r#"rules/broken.yml:6:9: group "web", rule 2 "", one of 'record' or 'alert' must be set"#,
        r#"rules/broken.yml:9:14: group "web", rule 3 "BadFor", invalid duration in "for""#,
        r#"rules/broken.yml:10:9: group "web", rule 3 "BadFor", field "severity" not found in rule"#,
        r#"rules/broken.yml:14:11: group "web", rule 4 "BadLabel", invalid label name: "bad-name""#,
        r#"rules/broken.yml:15:5: group "web", group name is repeated in the same file (first at line 2)"#,
        r#"rules/broken.yml:17:5: group "", group name must not be empty"#,
        r#"rules/broken.yml:18:5: group "", field "intervall" not found in rule group"#,
    ];
    assert_eq!(
        shown, expect,
        "all errors, in file order, each fully located"
    );
    // The duration error keeps its cause as the source.
    let bad_for = errors
        .iter()
        .find(|e| matches!(e.kind, RuleErrorKind::BadDuration { .. }))
        .expect("a duration error");
    let source = std::error::Error::source(&bad_for.kind).map(ToString::to_string);
    assert_eq!(
        source.as_deref(),
        Some(r#"not a valid duration string: "5x""#)
    );
}

#[test]
fn bad_yaml_is_reported_with_its_line() {
    let text = "groups:\n  - name: web\n    rules:\n      - alert: X\n        expr: [unclosed\n";
    let errors = parse_rules_str(Path::new("bad.yml"), text)
        .expect_err("bad YAML")
        .0;
    assert_eq!(errors.len(), 1);
    let shown = errors[0].to_string();
    assert!(shown.starts_with("bad.yml:6:"), "{shown}");
    assert!(shown.contains("invalid YAML"), "{shown}");
    let dup = "groups:\n  - name: a\n    name: b\n";
    let shown = parse_rules_str(Path::new("dup.yml"), dup)
        .expect_err("dup key")
        .to_string();
    assert!(
        shown.starts_with("dup.yml:3:") && shown.contains("duplicated key"),
        "{shown}"
    );
}

#[test]
fn wrong_shapes_are_reported_not_panicked_on() {
    for (text, needle) in [
        ("- just a list\n", "must be a mapping"),
        ("groups: web\n", "must be a list"),
        (
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x\n        labels: [a]\n",
            "mapping of names",
        ),
        (
            "groups:\n  - name: g\n    rules:\n      - alert: [A]\n        expr: x\n",
            "must be a string",
        ),
        (
            "groups:\n  - name: g\n    limit: lots\n    rules: []\n",
            "non-negative integer",
        ),
        ("a: 1\n---\nb: 2\n", "2 YAML documents"),
        (
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x\n        annotations:\n          s: \"{{ $value\"\n",
            "unterminated",
        ),
    ] {
        let shown = parse_rules_str(Path::new("x.yml"), text)
            .expect_err(text)
            .to_string();
        assert!(shown.contains(needle), "{text:?} gave {shown}");
    }
}

#[test]
fn errors_from_several_files_come_back_together() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("a.yml"),
        "groups:\n  - name: a\n    rules:\n      - alert: A\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("b.yml"),
        "groups:\n  - name: b\n    rules:\n      - alert: B\n        expr: up\n        for: 1x\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("c.yml"), GOOD).expect("write");
    let pattern = format!("{}/*.yml", dir.path().display());
    let missing = format!("{}/nope/*.yml", dir.path().display());
    let errors = load_rule_files(&[pattern.clone(), missing.clone(), pattern])
        .expect_err("two broken files and a pattern matching nothing")
        .0;
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 3, "{shown:#?}");
    assert!(
        shown[0].contains("matches no file") && shown[0].contains("nope"),
        "{}",
        shown[0]
    );
    assert!(shown[1].contains("a.yml:4:9") && shown[1].contains(r#"field "expr" must be set"#));
    assert!(shown[2].contains("b.yml:6:14") && shown[2].contains("invalid duration"));
}

#[test]
fn a_bad_post_rollout_form_is_reported_with_the_rule_and_each_annotation() {
    let text = r#"groups:
  - name: web
    rules:
      - alert: HighErrorRate
        expr: error_ratio > 0.05
        annotations:
          rollbackd_post_rollout_expr: error_ratio
          rollbackd_post_rollout_threshold: lots
"#;
    let errors = parse_rules_str(Path::new("rules/x.yml"), text)
        .expect_err("invalid post-rollout form")
        .0;
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            r#"rules/x.yml:4:9: group "web", rule 1 "HighErrorRate", post-rollout form: rollbackd_post_rollout_threshold must be a non-negative number, not "lots""#,
            r#"rules/x.yml:4:9: group "web", rule 1 "HighErrorRate", post-rollout form: rollbackd_post_rollout_expr must use $window as its range (e.g. rate(x[$window]))"#,
        ]
    );
}
