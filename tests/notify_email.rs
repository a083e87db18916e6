//! Email through a real SMTP server: Debian's aiosmtpd (`tests/support/smtp_sink.py`, run with
//! `/usr/bin/python3`) on 127.0.0.1, requiring AUTH. Headers and both MIME parts are checked as
//! Python's email package parses them; a follow-up threads with `In-Reply-To`; a server that is
//! down at first gets the mail once it is up.

mod support;

use std::sync::Arc;
use std::time::Duration;

use rollbackd::config::{EmailSettings, Secret, SmtpTls};
use rollbackd::notify::Notifier;
use rollbackd::notify::email::EmailNotifier;
use rollbackd::notify::outbox::{DeliverySettings, DeliveryWorker};
use rollbackd::store::{OutboxStatus, Store};
use support::*;
use tokio::sync::Notify;

const USER: &str = "rollbackd";
const PASSWORD: &str = "smtp-pass-2718";
const TO: &str = "Oncall Team <oncall@example.com>, sre@example.com";

fn email(port: u16) -> EmailNotifier {
    let settings = EmailSettings {
        host: "127.0.0.1".into(),
        port,
        tls: SmtpTls::None,
        user: Some(USER.into()),
        password: Some(Secret::new(PASSWORD)),
        from: "rollbackd <rollbackd@example.com>".into(),
        to: vec![
            "Oncall Team <oncall@example.com>".into(),
            "sre@example.com".into(),
        ],
        routes: Vec::new(),
        password_source: None,
    };
    EmailNotifier::new(&settings, Duration::from_secs(5)).expect("email")
}

fn worker(store: &Store, port: u16) -> DeliveryWorker {
    let channels: Vec<Box<dyn Notifier>> = vec![Box::new(email(port))];
    DeliveryWorker::new(
        store.clone(),
        Arc::new(channels),
        DeliverySettings {
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_millis(300),
            attempt_timeout: Duration::from_secs(5),
        },
        Arc::new(Notify::new()),
    )
}

const CHECKOUT: &[(&str, &str)] = &[
    ("alertname", "HighErrorRate"),
    ("namespace", "default"),
    ("deployment", "checkout"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_goes_through_a_real_smtp_server_with_both_parts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = SmtpSink::start(
        free_port(),
        &dir.path().join("mail"),
        Some((USER, PASSWORD)),
    );
    let store = open_store(dir.path()).await;
    assert_eq!(
        email(sink.port).destinations(&rollbackd::notify::Notification::test_sample(
            None,
            ts("2026-01-02T03:05:00Z")
        )),
        vec![TO]
    );

    let decision = paused_decision("default", "checkout");
    let first = mk_alert(CHECKOUT, "2026-01-02T03:04:05Z");
    let incident = queue(
        &store,
        &first,
        &decision,
        "2026-01-02T03:05:00Z",
        &[("email", TO)],
    )
    .await;
    let mut second_labels = CHECKOUT.to_vec();
    second_labels[0] = ("alertname", "HighLatency");
    let second = mk_alert(&second_labels, "2026-01-02T03:04:06Z");
    queue(
        &store,
        &second,
        &decision,
        "2026-01-02T03:05:01Z",
        &[("email", TO)],
    )
    .await;

    let task = tokio::spawn(worker(&store, sink.port).run());
    let rows = wait_settled(&store, Duration::from_secs(20)).await;
    task.abort();
    assert!(
        rows.iter().all(|r| r.status == OutboxStatus::Delivered),
        "{rows:#?}"
    );

    let mails = sink.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(mails.len(), 2);
    let m = &mails[0];
    assert_eq!(m["authenticated"], true);
    assert_eq!(m["mail_from"], "rollbackd@example.com");
    assert_eq!(
        m["rcpt_tos"],
        serde_json::json!(["oncall@example.com", "sre@example.com"])
    );
    let h = &m["headers"];
    assert_eq!(h["From"], "rollbackd <rollbackd@example.com>");
    assert_eq!(h["To"], "Oncall Team <oncall@example.com>, sre@example.com");
    assert_eq!(
        h["Subject"],
        "[rollbackd] NOT ROLLED BACK (paused) default/checkout: HighErrorRate"
    );
    let message_id = h["Message-ID"].as_str().expect("Message-ID");
    assert!(
        message_id.starts_with(&format!("<rollbackd.{incident}."))
            && message_id.ends_with("@example.com>"),
        "{message_id}"
    );
    assert_eq!(m["content_type"], "multipart/alternative");
    let parts = m["parts"].as_array().expect("parts");
    assert_eq!(parts.len(), 2, "{parts:#?}");
    assert_eq!(parts[0]["content_type"], "text/plain");
    assert_eq!(parts[1]["content_type"], "text/html");
    let text = parts[0]["text"].as_str().expect("text");
    let html = parts[1]["text"].as_str().expect("html");
    for needle in [
        "NOT ROLLED BACK (paused) default/checkout: HighErrorRate",
        "Did not roll back deployment default/checkout: paused.",
        "Why (paused): deployment default/checkout is paused",
        &format!("Incident: #{incident} https://rollbackd.example/incidents/{incident}"),
        "summary: 5xx ratio 12% > 5% <for 2m> & rising",
        "source: http://prometheus.example:9090/graph?g0.expr=rate%28errors%5B5m%5D%29",
        "Alertmanager: http://alertmanager.example:9093",
    ] {
        assert!(
            text.contains(needle),
            "{needle:?} not in the text part:\n{text}"
        );
    }
    assert!(
        html.contains("summary: 5xx ratio 12% &gt; 5% &lt;for 2m&gt; &amp; rising"),
        "{html}"
    );
    assert!(
        html.contains(&format!(
            "<a href=\"https://rollbackd.example/incidents/{incident}\">"
        )),
        "{html}"
    );
    assert!(
        !html.contains("<for 2m>"),
        "unescaped peer text in HTML:\n{html}"
    );

    // The follow-up about the same incident threads under the first message.
    let h2 = &mails[1]["headers"];
    assert_eq!(
        h2["Subject"],
        "[rollbackd] NOT ROLLED BACK (paused) default/checkout: HighLatency"
    );
    assert_eq!(h2["In-Reply-To"], message_id);
    assert_eq!(h2["References"], message_id);
    assert_ne!(h2["Message-ID"], message_id);
    assert_eq!(
        notify_entries(&store, incident).await,
        vec![
            format!("email {TO}: queued"),
            format!("email {TO}: queued"),
            format!("email {TO}: delivered (attempt 1)"),
            format!("email {TO}: delivered as a follow-up (attempt 1)"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_down_then_up_delivers_the_mail_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let port = free_port();
    let alert = mk_alert(CHECKOUT, "2026-01-02T03:04:05Z");
    let incident = queue(
        &store,
        &alert,
        &paused_decision("default", "checkout"),
        "2026-01-02T03:05:00Z",
        &[("email", TO)],
    )
    .await;
    let task = tokio::spawn(worker(&store, port).run());

    // Nothing listens: attempts fail and are retried.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let rows = store.outbox().await.expect("outbox");
        if rows[0].attempts >= 2 && rows[0].sending_since.is_none() {
            assert_eq!(rows[0].status, OutboxStatus::Pending);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no retries: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let sink = SmtpSink::start(port, &dir.path().join("mail"), Some((USER, PASSWORD)));
    let rows = wait_settled(&store, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    task.abort();
    assert_eq!(rows[0].status, OutboxStatus::Delivered, "{rows:#?}");
    assert_eq!(sink.messages().len(), 1, "delivered exactly once");
    let entries = notify_entries(&store, incident).await;
    assert!(
        entries[1].starts_with(&format!("email {TO}: attempt 1 failed, next in")),
        "{entries:#?}"
    );
    assert!(
        entries
            .last()
            .is_some_and(|e| e.starts_with(&format!("email {TO}: delivered (attempt "))),
        "{entries:#?}"
    );
}
