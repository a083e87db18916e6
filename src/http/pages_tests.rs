//! The incident pages through `oneshot`: filters and pages of the list, bad input, verdicts
//! that look different, and everything from a peer escaped.

use axum::http::StatusCode;
use jiff::Timestamp;

use super::tests::{get, get_with, mk_state};
use super::*;
use crate::core::alert::{Alert, AlertSource, AlertStatus, Fingerprint, LabelSet};
use crate::core::engine::{Decision, Outcome, WorkloadRef};

fn alert(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Alert {
    let to_set = |pairs: &[(&str, &str)]| -> LabelSet {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let labels = to_set(labels);
    Alert {
        source: AlertSource::Alertmanager,
        status: AlertStatus::Firing,
        fingerprint: Fingerprint::of(&labels),
        labels,
        annotations: to_set(annotations),
        starts_at: Timestamp::now(),
        ends_at: None,
        generator_url: "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0".into(),
        external_url: None,
    }
}

/// Records `alert` decided with `outcome` about `workload` (none: no workload); its incident.
async fn incident(
    state: &AppState,
    a: &Alert,
    outcome: Outcome,
    workload: Option<(&str, &str)>,
) -> i64 {
    let store = &state.pipeline.store;
    let id = store
        .record_alerts(std::slice::from_ref(a), Timestamp::now())
        .await
        .expect("record")[0]
        .alert_id;
    let decision = Decision {
        outcome,
        reason: format!("{} because <b>reasons</b>", outcome.code()),
        workload: workload.map(|(ns, name)| WorkloadRef {
            kind: "Deployment".into(),
            namespace: ns.into(),
            name: name.into(),
            uid: format!("uid-{ns}-{name}"),
        }),
        rollout: None,
        command: None,
    };
    store
        .record_decision(id, a, &decision, Timestamp::now())
        .await
        .expect("decide")
        .expect("new")
        .incident_id
}

#[tokio::test]
async fn the_list_filters_and_pages_newest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = mk_state(&dir, None).await;
    for i in 0..55 {
        let name = format!("app{i}");
        let ns = if i % 5 == 0 { "payments" } else { "shop" };
        let a = alert(
            &[("alertname", "X"), ("namespace", ns), ("deployment", &name)],
            &[],
        );
        let outcome = if i == 54 {
            Outcome::NoWorkload
        } else {
            Outcome::NoRecentRollout
        };
        incident(&state, &a, outcome, Some((ns, &name))).await;
    }
    let (status, page1) = get(&state, "/").await;
    assert_eq!(status, StatusCode::OK, "{page1}");
    assert_eq!(page1.matches("<tr><td><a href=\"/incidents/").count(), 50);
    let first = page1
        .find("href=\"/incidents/55\"")
        .expect("newest on page 1");
    assert!(
        first < page1.find("href=\"/incidents/54\"").expect("next"),
        "newest first"
    );
    assert!(page1.contains("rel=\"next\" href=\"/?page=2\""), "{page1}");
    assert!(page1.contains("just now"), "relative times");
    assert!(page1.contains("<time title=\"20"), "exact UTC on hover");
    let (_, page2) = get(&state, "/?page=2").await;
    assert_eq!(page2.matches("<tr><td><a href=\"/incidents/").count(), 5);
    assert!(page2.contains("rel=\"prev\""));
    assert!(!page2.contains("rel=\"next\""));

    let (_, payments) = get(&state, "/?namespace=payments&since=1h").await;
    assert_eq!(
        payments.matches("<tr><td><a href=\"/incidents/").count(),
        11
    );
    assert!(!payments.contains("deployment shop/"));
    let (_, one) = get(&state, "/?workload=app7").await;
    assert_eq!(one.matches("<tr><td><a href=\"/incidents/").count(), 1);
    assert!(one.contains("deployment shop/app7"));
    let (_, unmatched) = get(&state, "/?outcome=no-workload").await;
    assert_eq!(
        unmatched.matches("<tr><td><a href=\"/incidents/").count(),
        1
    );
    assert!(
        unmatched.contains("<option selected>no-workload</option>"),
        "{unmatched}"
    );
    let (_, none) = get(&state, "/?until=2000-01-01T00:00:00Z").await;
    assert!(none.contains("No incidents match these filters"));

    let (_, json) = get(
        &state,
        "/api/v1/incidents?outcome=no-workload&namespace=payments",
    )
    .await;
    let listed: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{json}");
    let (_, json) = get(&state, "/api/v1/incidents?workload=app7").await;
    let listed: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(listed[0]["workload_name"], "app7", "{json}");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{json}");

    for bad in ["/?since=soonish", "/?page=0", "/?page=two", "/?until=later"] {
        let (status, body) = get(&state, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body.contains("error"), "{body}");
    }
}

#[tokio::test]
async fn the_incident_page_escapes_what_peers_sent_and_shows_the_alert() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = mk_state(&dir, None).await;
    let a = alert(
        &[
            ("alertname", "HighErrorRate"),
            ("namespace", "default"),
            ("deployment", "web"),
            ("team", "<script>alert(1)</script>"),
        ],
        &[
            ("summary", "web answers 30% <i>5xx</i>"),
            ("description", "More than 5% \" failed"),
            ("runbook_url", "https://runbooks.example/high-error-rate"),
            ("dashboard_url", "javascript:alert(2)"),
        ],
    );
    let id = incident(
        &state,
        &a,
        Outcome::NoRecentRollout,
        Some(("default", "web")),
    )
    .await;
    let (status, page) = get(&state, &format!("/incidents/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(!page.contains("<i>5xx"), "{page}");
    assert!(!page.contains("<b>reasons"), "{page}");
    assert!(
        page.contains("&#60;script&#62;") || page.contains("&lt;script&gt;"),
        "{page}"
    );
    assert!(page.contains("class=\"summary\""), "{page}");
    assert!(page.contains("class=\"description\""), "{page}");
    assert!(
        page.contains("<span class=\"chip\"><b>deployment</b>=web</span>"),
        "{page}"
    );
    assert!(
        page.contains("<a href=\"https://runbooks.example/high-error-rate\">runbook_url</a>"),
        "{page}"
    );
    assert!(
        !page.to_ascii_lowercase().contains("href=\"javascript"),
        "{page}"
    );
    assert!(
        page.contains("dashboard_url: <code>javascript:alert(2)</code>"),
        "{page}"
    );
    assert!(
        page.contains("No graph: rollbackd fetches one only after it acted."),
        "{page}"
    );
    assert!(
        !regex::Regex::new(r"\d{2}:\d{2}:\d{2}\.\d{3,}")
            .expect("regex")
            .is_match(&page),
        "no sub-second digits"
    );
}

#[tokio::test]
async fn an_unmatched_alert_and_a_refused_rollback_look_different() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = mk_state(&dir, None).await;
    let lost = alert(&[("alertname", "X"), ("namespace", "default")], &[]);
    let unmatched = incident(&state, &lost, Outcome::NoWorkload, None).await;
    let frozen_alert = alert(
        &[
            ("alertname", "Y"),
            ("namespace", "default"),
            ("deployment", "web"),
        ],
        &[],
    );
    let frozen = incident(
        &state,
        &frozen_alert,
        Outcome::Frozen,
        Some(("default", "web")),
    )
    .await;
    let (_, a) = get(&state, &format!("/incidents/{unmatched}")).await;
    let (_, b) = get(&state, &format!("/incidents/{frozen}")).await;
    assert!(a.contains("class=\"verdict unmatched\""), "{a}");
    assert!(a.contains("No workload matched the alert"), "{a}");
    assert!(b.contains("class=\"verdict refused\""), "{b}");
    assert!(b.contains("Not rolled back: frozen"), "{b}");
}

#[tokio::test]
async fn pages_need_the_read_token_when_one_is_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = mk_state(&dir, Some("t0ken-for-tests")).await;
    let (status, _, _) = get_with(&state, "/", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = get_with(&state, "/?namespace=x", Some("Bearer read-0nly-t0ken")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
