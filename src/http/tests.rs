//! HTTP tests through `oneshot`: no socket, a real SQLite store, a client that is never called.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::core::engine::{Mode, Policy};
use crate::k8s::executor::Executor;
use crate::k8s::watch::{Readiness, SharedIndex};
use crate::notify::LogNotifier;
use crate::store::Store;

const TOKEN: &str = "t0ken-for-tests";

async fn mk_state(dir: &tempfile::TempDir, token: Option<&str>) -> AppState {
    let store = Store::open(&format!("sqlite://{}", dir.path().join("s.db").display()))
        .await
        .expect("store");
    let client = kube::Client::try_from(kube::Config::new(
        "http://127.0.0.1:9".parse().expect("uri"),
    ))
    .expect("client");
    let readiness = Readiness::new(std::time::Duration::from_secs(90));
    let metrics = Metrics::new();
    let policy = Policy {
        mode: Mode::Enforce,
        correlation_window: std::time::Duration::from_secs(1800),
        grace: std::time::Duration::from_secs(30),
        labels: Default::default(),
    };
    let pipeline = Pipeline::new(
        store,
        SharedIndex::default(),
        readiness.clone(),
        policy,
        Executor::new(client),
        vec![Box::new(LogNotifier)],
        metrics.clone(),
        None,
    );
    AppState {
        pipeline,
        metrics,
        readiness,
        token: token.map(|t| Arc::new(Secret::new(t))),
        max_body_bytes: 64 * 1024,
    }
}

/// A delivery as Alertmanager 0.25+ sends it, with fields rollbackd does not use.
pub fn mk_payload() -> Value {
    json!({
        "receiver": "rollbackd",
        "status": "firing",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "HighErrorRate", "namespace": "default", "deployment": "web", "severity": "page"},
            "annotations": {"summary": "5xx above 5%"},
            "startsAt": "2026-11-22T01:54:22.123456789Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
            "fingerprint": "0123456789abcdef"
        }],
        "groupLabels": {"alertname": "HighErrorRate"},
        "commonLabels": {"alertname": "HighErrorRate"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": "{}:{alertname=\"HighErrorRate\"}",
        "truncatedAlerts": 0,
        "notification_reason": "new_alerts",
        "routeLabels": {"team": "web"}
    })
}

async fn post(state: &AppState, body: impl Into<Body>, token: Option<&str>) -> (StatusCode, Value) {
    let mut req = Request::post("/api/v1/alerts").header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let response = router(state.clone())
        .oneshot(req.body(body.into()).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn get(state: &AppState, uri: &str) -> (StatusCode, String) {
    let response = router(state.clone())
        .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn alerts_recorded(state: &AppState) -> i64 {
    state.pipeline.store.alert_count().await.expect("count")
}

#[tokio::test]
async fn a_valid_delivery_is_recorded_and_duplicates_are_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = mk_state(&dir, None).await;
    let (status, body) = post(&state, mk_payload().to_string(), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["new"], 1);
    let (status, body) = post(&state, mk_payload().to_string(), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["duplicates"], 1);
    assert_eq!(alerts_recorded(&state).await, 1);
    let (_, metrics) = get(&state, "/metrics").await;
    assert!(
        metrics.contains("rollbackd_alerts_received_total{source=\"alertmanager\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn bad_input_is_refused_with_a_clear_message_and_records_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = mk_state(&dir, None).await;
    let mut missing = mk_payload();
    missing.as_object_mut().expect("object").remove("alerts");
    let mut bad_time = mk_payload();
    bad_time["alerts"][0]["startsAt"] = json!("yesterday");
    let mut old_version = mk_payload();
    old_version["version"] = json!("3");
    let cases = [
        ("{not json".to_string(), "invalid Alertmanager payload"),
        (missing.to_string(), "missing field `alerts`"),
        (bad_time.to_string(), "invalid Alertmanager payload"),
        (old_version.to_string(), "unsupported payload version \"3\""),
    ];
    for (body, expected) in cases {
        let (status, answer) = post(&state, body, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        let message = answer["error"].as_str().expect("error message");
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
    }
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(70 * 1024));
    let (status, answer) = post(&state, big, None).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .expect("message")
            .contains("max_body_bytes")
    );
    assert_eq!(alerts_recorded(&state).await, 0);
    let (status, _) = get(&state, "/healthz").await;
    assert_eq!(status, StatusCode::OK, "the daemon keeps serving");
}

#[tokio::test]
async fn the_webhook_token_is_required_when_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = mk_state(&dir, Some(TOKEN)).await;
    for token in [None, Some("wrong"), Some("t0ken-for-test")] {
        let (status, answer) = post(&state, mk_payload().to_string(), token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}: {answer}");
    }
    assert_eq!(alerts_recorded(&state).await, 0);
    let (status, _) = post(&state, mk_payload().to_string(), Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_store_that_cannot_record_answers_503_so_alertmanager_retries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = mk_state(&dir, None).await;
    state.pipeline.store.close().await;
    let (status, answer) = post(&state, mk_payload().to_string(), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
}

#[tokio::test]
async fn readiness_waits_for_the_watches_and_lookups_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = mk_state(&dir, None).await;
    let (status, body) = get(&state, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("discovering which kinds"), "{body}");
    assert_eq!(
        get(&state, "/api/v1/incidents/abc").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&state, "/api/v1/incidents/999").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(&state, "/incidents/999").await.0, StatusCode::NOT_FOUND);
    let (status, list) = get(&state, "/api/v1/incidents?since=1h").await;
    assert_eq!((status, list.as_str()), (StatusCode::OK, "[]"));
    assert_eq!(
        get(&state, "/api/v1/incidents?since=soon").await.0,
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn parse_keeps_the_alert_as_sent() {
    let (payload, alerts) = webhook::parse(mk_payload().to_string().as_bytes()).expect("valid");
    assert_eq!(payload.receiver, "rollbackd");
    let a = &alerts[0];
    assert_eq!(a.ends_at, None, "Go's zero time means no end");
    assert_eq!(a.starts_at.to_string(), "2026-11-22T01:54:22.123456789Z");
    assert_eq!(a.external_url.as_deref(), Some("http://alertmanager:9093"));
    assert_eq!(
        a.fingerprint,
        crate::core::alert::Fingerprint::of(&a.labels)
    );
}

#[test]
fn pages_escape_what_they_show() {
    assert_eq!(
        pages::escape("<a href=\"x\">&'"),
        "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
    );
}
