//! `Poller::run` and `poll_once` against a scripted stand-in for Prometheus's query API on
//! 127.0.0.1: events only on health changes, credentials and parameters sent, group intervals
//! honoured, and `run` ending when its receiver goes away. Every wait is bounded.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use jiff::Timestamp;
use rollbackd::core::alert::AlertStatus;
use rollbackd::poller::rules::parse_rules_str;
use rollbackd::poller::{EvalRecord, Poller, PollerEvent, PollerSettings, PromAuth};
use tokio::sync::mpsc;

const BOUND: Duration = Duration::from_secs(20);
const RULES: &str = "groups:\n  - name: g\n    rules:\n      - alert: Down\n        expr: up == 0\n        labels:\n          severity: critical\n        annotations:\n          summary: \"{{ $labels.app }} is down ({{ $value }})\"\n";

/// What the stand-in answers: failing (503 timeout) or one `up == 0` sample.
#[derive(Default)]
struct Script {
    failing: AtomicBool,
    requests: Mutex<Vec<BTreeMap<String, String>>>,
    auth_headers: Mutex<Vec<String>>,
}

async fn api(
    State(script): State<Arc<Script>>,
    headers: HeaderMap,
    Query(params): Query<BTreeMap<String, String>>,
) -> (StatusCode, String) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    script.auth_headers.lock().expect("lock").push(auth);
    script.requests.lock().expect("lock").push(params);
    if script.failing.load(Ordering::SeqCst) {
        let body = r#"{"status":"error","errorType":"timeout","error":"query timed out"}"#;
        return (StatusCode::SERVICE_UNAVAILABLE, body.into());
    }
    let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","namespace":"shop","app":"checkout"},"value":[1700000000,"0"]}]}}"#;
    (StatusCode::OK, body.into())
}

async fn start_api(script: Arc<Script>) -> String {
    let app = axum::Router::new()
        .route("/prom/api/v1/query", axum::routing::get(api))
        .with_state(script);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/prom/")
}

fn settings(url: &str, auth: PromAuth) -> PollerSettings {
    PollerSettings {
        url: url.to_string(),
        rule_files: Vec::new(),
        poll_interval: Duration::from_millis(100),
        query_timeout: Duration::from_secs(2),
        auth,
    }
}

fn poller(url: &str, auth: PromAuth, yaml: &str) -> Poller {
    let loaded = parse_rules_str(Path::new("test.yml"), yaml).expect("rules");
    Poller::from_rules(settings(url, auth), loaded).expect("poller")
}

/// Collects events for `span`.
async fn collect(rx: &mut mpsc::Receiver<PollerEvent>, span: Duration) -> Vec<PollerEvent> {
    let mut events = Vec::new();
    let until = tokio::time::Instant::now() + span;
    while let Ok(Some(e)) = tokio::time::timeout_at(until, rx.recv()).await {
        events.push(e);
    }
    events
}

#[tokio::test]
async fn run_reports_health_changes_once_and_stops_with_its_receiver() {
    let script = Arc::new(Script::default());
    script.failing.store(true, Ordering::SeqCst);
    let url = start_api(script.clone()).await;
    let auth = PromAuth::Bearer("tok-123".into());
    let (tx, mut rx) = mpsc::channel(64);
    let task = tokio::spawn(poller(&url, auth, RULES).run(tx));

    // About ten failing polls: one Inconclusive event, no alert.
    let events = collect(&mut rx, Duration::from_millis(1000)).await;
    assert!(
        script.requests.lock().expect("lock").len() >= 5,
        "polled repeatedly"
    );
    match events.as_slice() {
        [PollerEvent::Inconclusive { rule, reason }] => {
            assert_eq!(rule, "g/Down");
            assert!(
                reason.contains("503") && reason.contains("timeout"),
                "{reason}"
            );
        }
        other => panic!("expected one Inconclusive event, got {other:?}"),
    }

    // Recovery: one Conclusive event, then the firing alert on every poll.
    script.failing.store(false, Ordering::SeqCst);
    let events = collect(&mut rx, Duration::from_millis(1000)).await;
    let conclusive = events
        .iter()
        .filter(|e| matches!(e, PollerEvent::Conclusive { rule } if rule == "g/Down"))
        .count();
    assert_eq!(conclusive, 1, "{events:?}");
    let alerts: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            PollerEvent::Alerts(a) => Some(a),
            _ => None,
        })
        .collect();
    assert!(
        alerts.len() >= 3,
        "firing alerts are re-sent each poll: {events:?}"
    );
    let alert = &alerts[0][0];
    assert_eq!(alert.status, AlertStatus::Firing);
    assert_eq!(alert.annotations["summary"], "checkout is down (0)");
    assert!(
        alerts.iter().all(|a| a[0].key() == alert.key()),
        "one episode"
    );
    assert!(
        alert
            .generator_url
            .starts_with(&format!("{url}graph?g0.expr=up+%3D%3D+0")),
        "{}",
        alert.generator_url
    );

    // Credentials and parameters.
    assert!(
        script
            .auth_headers
            .lock()
            .expect("lock")
            .iter()
            .all(|h| h == "Bearer tok-123")
    );
    let first = script.requests.lock().expect("lock")[0].clone();
    assert_eq!(first.get("query").map(String::as_str), Some("up == 0"));
    assert_eq!(first.get("timeout").map(String::as_str), Some("2.000"));
    let time: f64 = first["time"].parse().expect("time is unix seconds");
    assert!((time - Timestamp::now().as_second() as f64).abs() < 60.0);

    drop(rx);
    tokio::time::timeout(BOUND, task)
        .await
        .expect("run returns once the receiver is gone")
        .expect("run did not panic");
}

#[tokio::test]
async fn basic_auth_is_sent() {
    let script = Arc::new(Script::default());
    let url = start_api(script.clone()).await;
    let auth = PromAuth::Basic {
        user: "rollbackd".into(),
        password: "pw".into(),
    };
    let mut p = poller(&url, auth, RULES);
    let events = tokio::time::timeout(BOUND, p.poll_once(Timestamp::now()))
        .await
        .expect("bounded");
    assert!(
        matches!(events.as_slice(), [PollerEvent::Alerts(_)]),
        "{events:?}"
    );
    // base64("rollbackd:pw")
    let headers = script.auth_headers.lock().expect("lock").clone();
    assert_eq!(headers, ["Basic cm9sbGJhY2tkOnB3"]);
}

#[tokio::test]
async fn group_interval_is_honoured_and_the_hook_counts_evaluations() {
    // A closed port: every query fails fast with "connection refused".
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let yaml = "groups:\n  - name: fast\n    rules:\n      - alert: A\n        expr: vector(1)\n  - name: slow\n    interval: 2s\n    rules:\n      - alert: B\n        expr: vector(1)\n";
    let counts: Arc<Mutex<BTreeMap<String, (usize, usize)>>> = Arc::default();
    let seen = counts.clone();
    let calls = Arc::new(AtomicUsize::new(0));
    let calls2 = calls.clone();
    let mut p = poller(&format!("http://127.0.0.1:{port}"), PromAuth::None, yaml).with_eval_hook(
        move |r: &EvalRecord<'_>| {
            calls2.fetch_add(1, Ordering::SeqCst);
            let mut m = seen.lock().expect("lock");
            let e = m.entry(r.rule.to_string()).or_default();
            if r.conclusive {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        },
    );
    // Settings use a 100ms poll interval; tick by hand at 0, 0.5s, … 2s.
    let start = Timestamp::now();
    let mut inconclusive_events = 0;
    for ms in (0..=2000).step_by(500) {
        let now = start + jiff::SignedDuration::from_millis(ms);
        let events = tokio::time::timeout(BOUND, p.poll_once(now))
            .await
            .expect("bounded");
        inconclusive_events += events
            .iter()
            .filter(|e| matches!(e, PollerEvent::Inconclusive { .. }))
            .count();
    }
    let counts = counts.lock().expect("lock").clone();
    assert_eq!(
        counts["fast/A"],
        (0, 5),
        "evaluated at every tick, all inconclusive"
    );
    assert_eq!(counts["slow/B"], (0, 2), "evaluated at 0s and 2s only");
    assert_eq!(calls.load(Ordering::SeqCst), 7);
    assert_eq!(inconclusive_events, 2, "one per rule, not one per poll");
}
