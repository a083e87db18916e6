//! HTTP tests through `oneshot`: no socket, a real SQLite store, a client that is never called.

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
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
const READ_TOKEN: &str = "read-0nly-t0ken";

pub(super) async fn mk_state(dir: &tempfile::TempDir, token: Option<&str>) -> AppState {
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
        guard: Default::default(),
        gitops: Default::default(),
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
        read_token: token.map(|_| Arc::new(Secret::new(READ_TOKEN))),
        metrics_auth: true,
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

pub(super) async fn get(state: &AppState, uri: &str) -> (StatusCode, String) {
    let (status, _, body) = get_with(state, uri, None).await;
    (status, body)
}

/// A GET with `authorization` as the whole header value, if any.
pub(super) async fn get_with(
    state: &AppState,
    uri: &str,
    authorization: Option<&str>,
) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::get(uri);
    if let Some(value) = authorization {
        req = req.header(header::AUTHORIZATION, value);
    }
    let response = router(state.clone())
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// A webhook delivery with the given Content-Type header (or none) and body.
async fn post_typed(
    state: &AppState,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> (StatusCode, Value) {
    let mut req = Request::post("/api/v1/alerts");
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
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

/// Every endpoint that needs a token once one is configured.
const READ_ENDPOINTS: &[&str] = &[
    "/",
    "/incidents/1",
    "/api/v1/incidents",
    "/api/v1/incidents/1",
    "/api/v1/inconclusive",
    "/metrics",
];

#[tokio::test]
async fn with_a_token_every_endpoint_but_health_is_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = mk_state(&dir, Some(TOKEN)).await;
    let full = format!("Bearer {TOKEN}");
    let read = format!("Bearer {READ_TOKEN}");
    let lower = format!("bearer {READ_TOKEN}");
    let refused = [
        None,
        Some("Bearer wrong"),
        Some("Bearer t0ken-for-test"),
        Some("Bearer t0ken-for-tests2"),
        Some("Bearer "),
        Some(TOKEN),
        Some("Basic dDBrZW4tZm9yLXRlc3Rz"),
    ];
    for uri in READ_ENDPOINTS {
        for authorization in refused {
            let (status, headers, body) = get_with(&state, uri, authorization).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{uri} with {authorization:?}: {body}"
            );
            assert_eq!(
                headers.get(header::WWW_AUTHENTICATE).map(|v| v.as_bytes()),
                Some(&b"Bearer"[..]),
                "{uri}"
            );
        }
        for authorization in [&full, &read, &lower] {
            let (status, _, body) = get_with(&state, uri, Some(authorization)).await;
            assert!(
                status == StatusCode::OK || status == StatusCode::NOT_FOUND,
                "{uri} with {authorization}: {status} {body}"
            );
        }
    }
    assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
    assert_eq!(
        get(&state, "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE,
        "open, and honest that the watches have not listed"
    );
}

#[tokio::test]
async fn the_webhook_refuses_the_read_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = mk_state(&dir, Some(TOKEN)).await;
    let (status, _) = post(&state, mk_payload().to_string(), Some(READ_TOKEN)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(alerts_recorded(&state).await, 0);
    let metrics = state.metrics.render();
    assert!(
        metrics.contains("rollbackd_webhook_rejected_total{reason=\"unauthorized\"} 1"),
        "{metrics}"
    );
    let (status, _) = post(&state, mk_payload().to_string(), Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_can_be_left_open_for_a_scraper_without_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = mk_state(&dir, Some(TOKEN)).await;
    state.metrics_auth = false;
    let (status, body) = get(&state, "/metrics").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("# TYPE rollbackd_build_info gauge"), "{body}");
    for uri in READ_ENDPOINTS.iter().filter(|u| **u != "/metrics") {
        assert_eq!(get(&state, uri).await.0, StatusCode::UNAUTHORIZED, "{uri}");
    }
}

#[tokio::test]
async fn without_a_token_everything_is_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = mk_state(&dir, None).await;
    for uri in READ_ENDPOINTS {
        let (status, body) = get(&state, uri).await;
        assert!(
            status == StatusCode::OK || status == StatusCode::NOT_FOUND,
            "{uri}: {status} {body}"
        );
    }
}

#[tokio::test]
async fn the_webhook_accepts_json_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = mk_state(&dir, None).await;
    let refused = [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonp"),
        Some("application/json-patch+json"),
        Some(""),
        None,
    ];
    for content_type in refused {
        let (status, answer) = post_typed(&state, content_type, mk_payload().to_string()).await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}: {answer}"
        );
        let message = answer["error"].as_str().expect("message");
        assert!(message.contains("application/json"), "{message}");
    }
    assert_eq!(alerts_recorded(&state).await, 0);
    let metrics = state.metrics.render();
    assert!(
        metrics.contains(&format!(
            "rollbackd_webhook_rejected_total{{reason=\"content-type\"}} {}",
            refused.len()
        )),
        "{metrics}"
    );
    for content_type in ["application/json; charset=utf-8", "Application/JSON"] {
        let (status, answer) =
            post_typed(&state, Some(content_type), mk_payload().to_string()).await;
        assert_eq!(status, StatusCode::OK, "{content_type}: {answer}");
    }
}

#[tokio::test]
async fn the_token_is_checked_before_the_content_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = mk_state(&dir, Some(TOKEN)).await;
    let (status, _) = post_typed(&state, Some("text/plain"), mk_payload().to_string()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_a_408() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = mk_state(&dir, None).await;
    let stalled = futures::stream::iter([
        Ok(axum::body::Bytes::from_static(b"{\"version\"")),
        Err(serve::BodyTimeout(std::time::Duration::from_secs(30))),
    ]);
    let (status, answer) =
        post_typed(&state, Some("application/json"), Body::from_stream(stalled)).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{answer}");
    assert!(
        state
            .metrics
            .render()
            .contains("rollbackd_webhook_rejected_total{reason=\"body-timeout\"} 1")
    );
}

#[tokio::test]
async fn a_hostile_url_is_never_a_link_on_the_incident_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = mk_state(&dir, None).await;
    let mut payload = mk_payload();
    payload["alerts"][0]["generatorURL"] = json!("JaVaScRiPt:alert(document.cookie)");
    payload["externalURL"] = json!(" javascript:alert(1)");
    let (status, _) = post(&state, payload.to_string(), None).await;
    assert_eq!(status, StatusCode::OK);
    let store = &state.pipeline.store;
    let (alert_id, alert) = store
        .undecided_alerts()
        .await
        .expect("undecided")
        .pop()
        .expect("one alert");
    let decision = crate::core::engine::Decision {
        outcome: crate::core::engine::Outcome::NoRecentRollout,
        reason: "no rollout".into(),
        workload: Some(crate::core::engine::WorkloadRef {
            kind: "Deployment".into(),
            namespace: "default".into(),
            name: "web".into(),
            uid: "uid-web".into(),
        }),
        rollout: None,
        command: None,
    };
    let recorded = store
        .record_decision(alert_id, &alert, &decision, jiff::Timestamp::now())
        .await
        .expect("recorded")
        .expect("new decision");
    let (status, html) = get(&state, &format!("/incidents/{}", recorded.incident_id)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let lower = html.to_ascii_lowercase();
    assert!(!lower.contains("href=\"javascript"), "{html}");
    assert!(!lower.contains("href=\" javascript"), "{html}");
    assert!(
        html.contains("source: <code>JaVaScRiPt:alert(document.cookie)</code>"),
        "shown as text: {html}"
    );
    assert!(html.contains("Alertmanager: <code> javascript:alert(1)</code>"));
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

/// `promtool check metrics` reads the text format 0.0.4 that a plain scrape gets; a scraper
/// asking for OpenMetrics gets that instead.
#[tokio::test]
async fn metrics_negotiate_the_format_and_pass_promtool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = mk_state(&dir, None).await;
    let (status, _) = post(&state, mk_payload().to_string(), None).await;
    assert_eq!(status, StatusCode::OK);
    state
        .metrics
        .kubernetes_request("PATCH", std::time::Duration::from_millis(12));
    state.metrics.evaluation(
        "http/HighErrorRate",
        true,
        std::time::Duration::from_millis(30),
    );

    let (status, headers, text) = get_with(&state, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    for expected in [
        "# TYPE rollbackd_alerts_received_total counter",
        "rollbackd_build_info{version=\"",
        "rollbackd_webhook_request_duration_seconds_count{code=\"200\"} 1",
        "rollbackd_kubernetes_request_duration_seconds_count{verb=\"patch\"} 1",
        "rollbackd_poller_query_duration_seconds_count 1",
        "# TYPE process_cpu_seconds_total counter",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(text.contains(expected), "{expected} in {text}");
    }
    assert!(!text.contains("# EOF"), "{text}");
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed");
    {
        use std::io::Write;
        let mut stdin = promtool.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("written");
    }
    let out = promtool.wait_with_output().expect("promtool ran");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let response = router(state.clone())
        .oneshot(
            Request::get("/metrics")
                .header(
                    header::ACCEPT,
                    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
                )
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let om = String::from_utf8_lossy(&bytes);
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(
        om.contains("# TYPE rollbackd_alerts_received counter"),
        "{om}"
    );
}
