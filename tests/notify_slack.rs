//! Slack delivery against a local stand-in for Slack's API (axum on 127.0.0.1): the exact
//! request of webhook mode and of bot mode, routing, thread replies, 429 with `Retry-After`,
//! 5xx retried until one message lands, permanent errors not retried.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rollbackd::config::{Secret, SlackMode, SlackRoute, SlackSettings};
use rollbackd::notify::Notifier;
use rollbackd::notify::outbox::{DeliverySettings, DeliveryWorker};
use rollbackd::notify::slack::SlackNotifier;
use rollbackd::store::OutboxStatus;
use serde_json::json;
use support::*;
use tokio::sync::Notify;

const WEBHOOK_PATH: &str = "/services/T0TEST/B0TEST/webhook-secret-path-4711";
const TOKEN: &str = "xoxb-test-token-0815";

fn fast() -> DeliverySettings {
    DeliverySettings {
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        attempt_timeout: Duration::from_secs(5),
    }
}

fn webhook(sink: &SlackSink) -> SlackNotifier {
    let settings = SlackSettings {
        mode: SlackMode::Webhook {
            url: Secret::new(format!("{}{WEBHOOK_PATH}", sink.url())),
        },
        api_url: "http://127.0.0.1:9".into(),
        routes: Vec::new(),
        secret_source: "test".into(),
    };
    SlackNotifier::new(&settings, Duration::from_secs(5)).expect("slack")
}

fn bot(sink: &SlackSink) -> SlackNotifier {
    let settings = SlackSettings {
        mode: SlackMode::Bot {
            token: Secret::new(TOKEN),
            channel: "#oncall".into(),
        },
        api_url: format!("{}/api", sink.url()),
        routes: vec![SlackRoute {
            matchers: BTreeMap::from([("namespace".to_string(), "payments".to_string())]),
            channel: "#payments-oncall".into(),
        }],
        secret_source: "test".into(),
    };
    SlackNotifier::new(&settings, Duration::from_secs(5)).expect("slack")
}

fn worker(store: &rollbackd::store::Store, channel: SlackNotifier) -> DeliveryWorker {
    let channels: Vec<Box<dyn Notifier>> = vec![Box::new(channel)];
    DeliveryWorker::new(
        store.clone(),
        Arc::new(channels),
        fast(),
        Arc::new(Notify::new()),
    )
}

const CHECKOUT: &[(&str, &str)] = &[
    ("alertname", "HighErrorRate"),
    ("namespace", "default"),
    ("deployment", "checkout"),
    ("severity", "page"),
];

#[tokio::test]
async fn webhook_mode_posts_exactly_this_block_kit_message() {
    let sink = SlackSink::start(Reply::Status(200, "ok".into(), None)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let alert = mk_alert(CHECKOUT, "2026-01-02T03:04:05Z");
    let incident = queue(
        &store,
        &alert,
        &paused_decision("default", "checkout"),
        "2026-01-02T03:05:00Z",
        &[("slack", "webhook")],
    )
    .await;
    let sent = worker(&store, webhook(&sink))
        .deliver_due()
        .await
        .expect("pass");
    assert_eq!(sent, 1);

    let got = sink.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, WEBHOOK_PATH);
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    assert_eq!(r.authorization, None, "a webhook carries no token");
    let expected = json!({
        "text": "NOT ROLLED BACK (paused) default/checkout: HighErrorRate. deployment default/checkout is paused; kubectl refuses to roll back a paused deployment",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "NOT ROLLED BACK (paused) default/checkout", "emoji": true}},
            {"type": "section", "text": {"type": "mrkdwn", "text": format!(
                "*Did not roll back deployment default/checkout: paused.*\n*Why* (`paused`): deployment default/checkout is paused; kubectl refuses to roll back a paused deployment")}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": "*Workload*\ndeployment default/checkout"},
                {"type": "mrkdwn", "text": "*Outcome*\npaused"},
                {"type": "mrkdwn", "text": "*Action*\nnone"},
                {"type": "mrkdwn", "text": format!("*Incident*\n<https://rollbackd.example/incidents/{incident}|#{incident}>")},
            ]},
            {"type": "section", "text": {"type": "mrkdwn", "text":
                ":rotating_light: *HighErrorRate* firing since 2026-01-02T03:04:05Z (via alertmanager)\n>summary: 5xx ratio 12% &gt; 5% &lt;for 2m&gt; &amp; rising\n`alertname=HighErrorRate` `deployment=checkout` `namespace=default` `severity=page`"}},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": format!("rollbackd · incident #{incident} · 2026-01-02T03:05:00Z")},
            ]},
            {"type": "actions", "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": format!("Incident #{incident}"), "emoji": true},
                 "url": format!("https://rollbackd.example/incidents/{incident}"), "action_id": "incident"},
                {"type": "button", "text": {"type": "plain_text", "text": "Source: HighErrorRate", "emoji": true},
                 "url": "http://prometheus.example:9090/graph?g0.expr=rate%28errors%5B5m%5D%29", "action_id": "source-1"},
                {"type": "button", "text": {"type": "plain_text", "text": "Alertmanager", "emoji": true},
                 "url": "http://alertmanager.example:9093", "action_id": "alertmanager"},
            ]},
        ],
        "unfurl_links": false,
        "unfurl_media": false,
    });
    assert_eq!(
        r.body,
        expected,
        "got:\n{}",
        serde_json::to_string_pretty(&r.body).unwrap_or_default()
    );
    check_block_kit(&r.body).expect("valid Block Kit");

    let rows = store.outbox().await.expect("outbox");
    assert_eq!(rows[0].status, OutboxStatus::Delivered);
    assert_eq!(rows[0].attempts, 1);
    assert_eq!(
        notify_entries(&store, incident).await,
        vec![
            "slack webhook: queued",
            "slack webhook: delivered (attempt 1)"
        ]
    );
}

#[tokio::test]
async fn bot_mode_routes_replies_in_the_thread_and_honours_retry_after() {
    let sink = SlackSink::start(Reply::PostOk).await;
    // The first call is rate-limited for one second.
    sink.script([Reply::Status(429, "".into(), Some(1))]);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let slack = bot(&sink);

    // Two alerts about one payments workload (one incident), one about a default workload.
    let pay1 = mk_alert(
        &[
            ("alertname", "HighErrorRate"),
            ("namespace", "payments"),
            ("deployment", "ledger"),
        ],
        "2026-01-02T03:04:05Z",
    );
    let pay2 = mk_alert(
        &[
            ("alertname", "HighLatency"),
            ("namespace", "payments"),
            ("deployment", "ledger"),
        ],
        "2026-01-02T03:04:06Z",
    );
    let web = mk_alert(CHECKOUT, "2026-01-02T03:04:07Z");
    let ledger = paused_decision("payments", "ledger");
    let n = |alert| {
        rollbackd::notify::Notification::about(
            1,
            alert,
            &ledger,
            None,
            None,
            ts("2026-01-02T03:05:00Z"),
        )
    };
    assert_eq!(slack.destinations(&n(&pay1)), vec!["#payments-oncall"]);
    let checkout = paused_decision("default", "checkout");
    let nweb = rollbackd::notify::Notification::about(
        1,
        &web,
        &checkout,
        None,
        None,
        ts("2026-01-02T03:05:00Z"),
    );
    assert_eq!(slack.destinations(&nweb), vec!["#oncall"]);

    let i1 = queue(
        &store,
        &pay1,
        &ledger,
        "2026-01-02T03:05:00Z",
        &[("slack", "#payments-oncall")],
    )
    .await;
    let i1b = queue(
        &store,
        &pay2,
        &ledger,
        "2026-01-02T03:05:01Z",
        &[("slack", "#payments-oncall")],
    )
    .await;
    assert_eq!(i1, i1b, "one incident");
    let i2 = queue(
        &store,
        &web,
        &checkout,
        "2026-01-02T03:05:02Z",
        &[("slack", "#oncall")],
    )
    .await;

    let task = tokio::spawn(worker(&store, slack).run());
    let rows = wait_settled(&store, Duration::from_secs(15)).await;
    task.abort();
    assert!(
        rows.iter().all(|r| r.status == OutboxStatus::Delivered),
        "{rows:#?}"
    );

    let got = sink.received();
    assert_eq!(got.len(), 4, "{got:#?}");
    for r in &got {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/api/chat.postMessage");
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(
            r.authorization.as_deref(),
            Some(&*format!("Bearer {TOKEN}"))
        );
        check_block_kit(&r.body).expect("valid Block Kit");
    }
    // The rate-limited first message was sent again, unchanged, no sooner than Retry-After.
    let first: Vec<_> = got
        .iter()
        .filter(|r| r.body["channel"] == "#payments-oncall")
        .collect();
    assert_eq!(first.len(), 2, "{got:#?}");
    assert_eq!(first[0].raw, first[1].raw);
    let waited = first[1].at.duration_since(first[0].at);
    assert!(
        waited >= Duration::from_secs(1),
        "Retry-After: 1 not honoured: {waited:?}"
    );
    assert!(first[0].body.get("thread_ts").is_none());

    // The second message about the payments incident is a reply in the first one's thread,
    // posted to the channel ID Slack answered with.
    let reply = got
        .iter()
        .find(|r| r.body["thread_ts"].is_string())
        .expect("a thread reply");
    assert_eq!(reply.body["channel"], "C0PAYMENTS");
    let root_ts = rows
        .iter()
        .filter(|r| r.incident_id == i1)
        .min_by_key(|r| r.id)
        .and_then(|r| r.thread_ts.clone())
        .expect("root ts");
    assert_eq!(reply.body["thread_ts"], root_ts.as_str());
    assert!(reply.raw.contains("HighLatency"));

    // The other incident went to the default channel, top level.
    let other = got
        .iter()
        .find(|r| r.body["channel"] == "#oncall")
        .expect("#oncall");
    assert!(other.body.get("thread_ts").is_none());
    assert!(other.raw.contains("default/checkout"));

    let entries = notify_entries(&store, i1).await;
    assert!(
        entries.iter().any(
            |e| e.starts_with("slack #payments-oncall: attempt 1 failed, next in")
                && e.contains("429")
        ),
        "{entries:#?}"
    );
    assert!(
        entries.contains(&"slack #payments-oncall: delivered (attempt 2)".to_string()),
        "{entries:#?}"
    );
    assert!(
        entries
            .contains(&"slack #payments-oncall: delivered as a follow-up (attempt 1)".to_string()),
        "{entries:#?}"
    );
    assert_eq!(
        notify_entries(&store, i2).await,
        vec![
            "slack #oncall: queued",
            "slack #oncall: delivered (attempt 1)"
        ]
    );
}

#[tokio::test]
async fn three_server_errors_then_one_message_lands_exactly_once() {
    let sink = SlackSink::start(Reply::Status(200, "ok".into(), None)).await;
    sink.script([
        Reply::Status(500, "rollup_error".into(), None),
        Reply::Status(502, "bad gateway".into(), None),
        Reply::Status(503, "".into(), None),
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let alert = mk_alert(CHECKOUT, "2026-01-02T03:04:05Z");
    let incident = queue(
        &store,
        &alert,
        &paused_decision("default", "checkout"),
        "2026-01-02T03:05:00Z",
        &[("slack", "webhook")],
    )
    .await;
    let metrics = rollbackd::metrics::Metrics::new();
    let task = tokio::spawn(
        worker(&store, webhook(&sink))
            .with_metrics(metrics.clone())
            .run(),
    );
    let rows = wait_settled(&store, Duration::from_secs(15)).await;
    // Nothing more arrives once delivered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    task.abort();

    let got = sink.received();
    assert_eq!(got.len(), 4, "three failures and one success");
    let text = metrics.render();
    for (result, n) in [("retry", 3), ("delivered", 1)] {
        let line = format!(
            "rollbackd_notification_attempts_total{{channel=\"slack\",result=\"{result}\"}} {n}"
        );
        assert!(text.contains(&line), "{line} missing from:\n{text}");
    }
    assert!(
        got.windows(2).all(|w| w[0].raw == w[1].raw),
        "the same message each time"
    );
    assert_eq!(rows[0].status, OutboxStatus::Delivered);
    assert_eq!(rows[0].attempts, 4);
    let entries = notify_entries(&store, incident).await;
    assert_eq!(entries.len(), 5, "{entries:#?}");
    assert!(
        entries[1].starts_with("slack webhook: attempt 1 failed, next in"),
        "{entries:#?}"
    );
    assert!(
        entries[1].ends_with("Slack: HTTP 500: rollup_error"),
        "{entries:#?}"
    );
    assert_eq!(entries[4], "slack webhook: delivered (attempt 4)");
}

#[tokio::test]
async fn permanent_refusals_are_not_retried() {
    let sink = SlackSink::start(Reply::ApiError("channel_not_found")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let alert = mk_alert(CHECKOUT, "2026-01-02T03:04:05Z");
    let incident = queue(
        &store,
        &alert,
        &paused_decision("default", "checkout"),
        "2026-01-02T03:05:00Z",
        &[("slack", "#oncall")],
    )
    .await;
    let task = tokio::spawn(worker(&store, bot(&sink)).run());
    let rows = wait_settled(&store, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    task.abort();
    assert_eq!(sink.received().len(), 1);
    assert_eq!(rows[0].status, OutboxStatus::Failed);
    assert_eq!(rows[0].attempts, 1);
    let entries = notify_entries(&store, incident).await;
    assert_eq!(
        entries[1],
        "slack #oncall: not delivered, refused (no retry): Slack: Slack answered ok:false, error \"channel_not_found\""
    );

    // A webhook's 404 (channel_not_found) is permanent too; a 400 as well.
    for (status, body) in [(404, "channel_not_found"), (400, "invalid_payload")] {
        let sink = SlackSink::start(Reply::Status(status, body.into(), None)).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_store(dir.path()).await;
        queue(
            &store,
            &alert,
            &paused_decision("default", "checkout"),
            "2026-01-02T03:05:00Z",
            &[("slack", "webhook")],
        )
        .await;
        worker(&store, webhook(&sink))
            .deliver_due()
            .await
            .expect("pass");
        let rows = store.outbox().await.expect("outbox");
        assert_eq!(rows[0].status, OutboxStatus::Failed, "{status}");
        assert_eq!(sink.received().len(), 1);
    }
}

/// `rollbackd_outbox_pending` and `rollbackd_outbox_oldest_pending_timestamp_seconds` show a
/// message Slack keeps refusing, and fall to zero once it is delivered.
#[tokio::test]
async fn the_backlog_gauges_follow_an_undelivered_message() {
    use rollbackd::metrics::{Format, Metrics};
    let sink = SlackSink::start(Reply::Status(500, "down".into(), None)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let alert = mk_alert(CHECKOUT, "2026-01-02T03:04:05Z");
    queue(
        &store,
        &alert,
        &paused_decision("default", "checkout"),
        "2026-01-02T03:05:00Z",
        &[("slack", "webhook")],
    )
    .await;
    let queued_at = store.outbox().await.expect("outbox")[0].created_at;
    let metrics = Metrics::new();
    let run = tokio::spawn(
        worker(&store, webhook(&sink))
            .with_metrics(metrics.clone())
            .run(),
    );
    let gauges = |text: &str| {
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}{{channel=\"slack\"}} ")))
                .map(|v| v.parse::<f64>().expect("a number"))
        };
        (
            value("rollbackd_outbox_pending"),
            value("rollbackd_outbox_oldest_pending_timestamp_seconds"),
        )
    };
    let until = |want: fn((Option<f64>, Option<f64>), f64) -> bool| {
        let metrics = metrics.clone();
        async move {
            for _ in 0..200 {
                let got = gauges(&metrics.render_as(Format::Text));
                if want(got, queued_at.as_millisecond() as f64 / 1000.0) {
                    return got;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("gauges never matched: {}", metrics.render_as(Format::Text));
        }
    };
    let failing = until(|(pending, oldest), queued| {
        pending == Some(1.0) && oldest.is_some_and(|o| (o - queued).abs() < 0.002)
    })
    .await;
    assert!(!sink.received().is_empty(), "it was tried: {failing:?}");
    sink.set_default(Reply::Status(200, "ok".into(), None));
    until(|(pending, oldest), _| pending == Some(0.0) && oldest == Some(0.0)).await;
    run.abort();
}
