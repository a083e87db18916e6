//! rollbackd's self-monitoring: the alert rules pass promtool and its unit tests, the
//! PrometheusRule carries the same groups, and every metric the rules and the Grafana dashboard
//! name is one rollbackd exposes.

mod deploy;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use deploy::{parse_yaml, repo};
use rollbackd::core::alert::AlertSource;
use rollbackd::core::engine::Outcome;
use rollbackd::metrics::{Format, Metrics};
use rollbackd::store::ActionStatus;
use serde_json::Value;

fn promtool(args: &[&str], dir: &str) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo().join(dir))
        .output()
        .expect("promtool is installed");
    assert!(
        out.status.success(),
        "promtool {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn self_rules_pass_promtool_check_and_tests() {
    promtool(
        &["check", "rules", "rollbackd-self.yml"],
        "deploy/prometheus",
    );
    promtool(
        &["test", "rules", "rollbackd-self_test.yml"],
        "deploy/prometheus/tests",
    );
}

#[test]
fn the_prometheus_rule_carries_the_tested_groups() {
    let file = &parse_yaml(&read("deploy/prometheus/rollbackd-self.yml"))[0];
    let cr = &parse_yaml(&read(
        "deploy/kubernetes/components/monitoring/prometheusrule.yaml",
    ))[0];
    assert_eq!(cr["kind"], "PrometheusRule");
    assert_eq!(cr["spec"]["groups"], file["groups"]);
}

/// Metric names in a PromQL expression: rollbackd's own and the process ones.
fn names_in(expr: &str, into: &mut BTreeSet<String>) {
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &expr[i..];
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts_word && (rest.starts_with("rollbackd_") || rest.starts_with("process_")) {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            into.insert(rest[..end].to_string());
            i += end;
        } else {
            i += 1;
        }
    }
}

/// Every sample name a scrape can carry: from the TYPE lines, with a histogram's series. A
/// labelled family shows only once it has a sample, so each is given one first.
fn exposed() -> BTreeSet<String> {
    let m = Metrics::new();
    let took = Duration::from_millis(5);
    m.alert_received(AlertSource::Alertmanager, true);
    m.decision(Outcome::RolledBack);
    m.action(ActionStatus::Succeeded);
    m.verification(Outcome::RolledBack);
    m.webhook_rejected("unauthorized");
    m.notification_attempt("slack", "failed");
    m.outbox_backlog("slack", 1, Some(jiff::Timestamp::UNIX_EPOCH));
    m.watch_health("deployments", "*", true);
    m.webhook_request(200, took);
    m.kubernetes_request("GET", took);
    m.evaluation("http/HighErrorRate", true, took);
    let text = m.render_as(Format::Text);
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        } else {
            names.insert(name.to_string());
        }
    }
    names
}

#[test]
fn every_metric_the_rules_and_the_dashboard_name_exists() {
    let mut named = BTreeSet::new();
    let rules = &parse_yaml(&read("deploy/prometheus/rollbackd-self.yml"))[0];
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            names_in(rule["expr"].as_str().unwrap(), &mut named);
        }
    }
    let dashboard: Value =
        serde_json::from_str(&read("deploy/grafana/rollbackd.json")).expect("dashboard JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    for panel in panels {
        for target in panel["targets"].as_array().expect("targets") {
            names_in(target["expr"].as_str().expect("expr"), &mut named);
        }
    }
    let exposed = exposed();
    let missing: Vec<&String> = named.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "named but not exposed: {missing:?}; exposed: {exposed:?}"
    );
    for core in [
        "rollbackd_watch_healthy",
        "rollbackd_circuit_breaker_open",
        "rollbackd_pending_alerts",
        "rollbackd_notification_attempts_total",
        "rollbackd_outbox_pending",
        "rollbackd_outbox_oldest_pending_timestamp_seconds",
    ] {
        assert!(named.contains(core), "{core} is watched");
    }
}
