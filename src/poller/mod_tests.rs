//! Tests of the poller's event logic (health changes) and of secret redaction.

use std::time::Duration;

use super::*;
use crate::core::alert::LabelSet;
use prom::{QueryResult, Sample};

fn mk_slot(for_secs: u64) -> Slot {
    let rule = AlertingRule {
        alert: "ServiceDown".into(),
        expr: "up == 0".into(),
        for_: Duration::from_secs(for_secs),
        keep_firing_for: Duration::ZERO,
        labels: LabelSet::new(),
        annotations: LabelSet::new(),
        post_rollout: None,
    };
    Slot {
        name: "availability/ServiceDown".into(),
        interval: Duration::from_secs(30),
        query_offset: Duration::ZERO,
        next_due: None,
        state: RuleState::new(rule, "http://prometheus:9090"),
        post: None,
        health: Health::Unknown,
    }
}

fn mk_ok(n: usize) -> Result<QueryResult, PromError> {
    let samples = (0..n)
        .map(|i| Sample {
            metric: [("instance".to_string(), format!("10.0.0.{i}:8080"))].into(),
            value: 0.0,
        })
        .collect();
    Ok(QueryResult {
        samples,
        warnings: Vec::new(),
    })
}

fn mk_err() -> Result<QueryResult, PromError> {
    Err(PromError::Api {
        status: 503,
        error_type: "timeout".into(),
        error: "query timed out in expression evaluation".into(),
    })
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).expect("valid test timestamp")
}

#[test]
fn health_events_only_on_change() {
    let mut slot = mk_slot(0);
    // First success after start: no event (nothing changed for the pipeline).
    let (alerts, event) = apply(&mut slot, t(0), mk_ok(1));
    assert_eq!(alerts.len(), 1);
    assert_eq!(event, None);
    // First failure: one event naming the rule and the reason; then silence.
    let (alerts, event) = apply(&mut slot, t(30), mk_err());
    assert!(
        alerts.is_empty(),
        "an inconclusive evaluation sends no alert"
    );
    match event {
        Some(PollerEvent::Inconclusive { rule, reason }) => {
            assert_eq!(rule, "availability/ServiceDown");
            assert!(
                reason.contains("503") && reason.contains("timeout"),
                "{reason}"
            );
        }
        other => panic!("expected Inconclusive, got {other:?}"),
    }
    for secs in [60, 90, 120] {
        assert_eq!(apply(&mut slot, t(secs), mk_err()).1, None);
    }
    // Recovery: one Conclusive event, and the alert is still the same firing episode.
    let (alerts, event) = apply(&mut slot, t(150), mk_ok(1));
    assert_eq!(
        event,
        Some(PollerEvent::Conclusive {
            rule: "availability/ServiceDown".into()
        })
    );
    assert_eq!(alerts[0].starts_at, t(0));
    assert_eq!(apply(&mut slot, t(180), mk_ok(1)).1, None);
}

#[test]
fn failing_from_the_start_is_reported_once() {
    let mut slot = mk_slot(0);
    assert!(matches!(
        apply(&mut slot, t(0), mk_err()).1,
        Some(PollerEvent::Inconclusive { .. })
    ));
    assert_eq!(apply(&mut slot, t(30), mk_err()).1, None);
}

#[test]
fn settings_debug_hides_secrets() {
    let settings = PollerSettings {
        url: "https://admin:hunter2@prometheus.example:9090/prom".into(),
        rule_files: vec!["rules/*.yml".into()],
        poll_interval: Duration::from_secs(30),
        query_timeout: Duration::from_secs(10),
        auth: PromAuth::Basic {
            user: "rollbackd".into(),
            password: "s3cr3t-pw".into(),
        },
    };
    let shown = format!("{settings:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("s3cr3t-pw"),
        "{shown}"
    );
    assert!(
        shown.contains("https://<redacted>@prometheus.example:9090/prom"),
        "{shown}"
    );
    assert!(
        shown.contains("rollbackd"),
        "the user name is not a secret: {shown}"
    );
    let bearer = format!("{:?}", PromAuth::Bearer("tok-123".into()));
    assert!(!bearer.contains("tok-123"), "{bearer}");
}

#[test]
fn userinfo_redaction_leaves_plain_urls_alone() {
    assert_eq!(redact_userinfo("http://prom:9090"), "http://prom:9090");
    assert_eq!(
        redact_userinfo("http://prom:9090/a@b"),
        "http://prom:9090/a@b",
        "an @ in the path is not userinfo"
    );
    assert_eq!(redact_userinfo("http://u:p@h/x"), "http://<redacted>@h/x");
}

#[test]
fn zero_interval_is_rejected() {
    let settings = PollerSettings {
        url: "http://127.0.0.1:9".into(),
        rule_files: vec![],
        poll_interval: Duration::ZERO,
        query_timeout: Duration::from_secs(1),
        auth: PromAuth::None,
    };
    assert!(matches!(
        Poller::from_rules(settings, LoadedRules::default()),
        Err(PollerError::ZeroInterval)
    ));
}
