//! Notifications from the daemon's own pipeline (in-process, against the sandbox): the rollback
//! is not held up by channels that never answer; dry-run says what it would have done; outcomes
//! that are not notable queue nothing; messages are queued in the transaction of the result.

mod common;
mod support;

use std::time::Duration;

use common::*;
use jiff::Timestamp;
use rollbackd::store::OutboxStatus;
use support::{Reply, SlackSink};

const WEB: &[(&str, &str)] = &[
    ("alertname", "HighErrorRate"),
    ("namespace", "default"),
    ("deployment", "web"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollback_does_not_wait_for_channels_that_never_answer() {
    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    // Slack takes requests and never answers; the SMTP server accepts connections and never
    // greets. Both only time out after a minute.
    let slack = SlackSink::start(Reply::Hang).await;
    let smtp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let smtp_port = smtp.local_addr().expect("addr").port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = smtp.accept().await {
            open.push(conn);
        }
    });
    let running = env
        .daemon(&format!(
            "[notify]\nattempt_timeout = \"60s\"\n[notify.slack]\napi_url = \"{}/api\"\nchannel = \"#oncall\"\nbot_token = \"xoxb-never\"\n\
             [notify.email]\nsmtp_url = \"smtp://127.0.0.1:{smtp_port}?tls=none\"\nfrom = \"rollbackd@example.com\"\nto = [\"oncall@example.com\"]\n",
            slack.url()
        ))
        .await;
    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(WEB, Timestamp::now()),
    )
    .await;
    // The same bound as every other end-to-end rollback test.
    let incident = settled_incident(&running).await;
    assert_eq!(incident.outcome, "rolled-back", "{}", incident.reason);
    let web = scenario::wait_rolled_out(&env.api, "web", "4", Duration::from_secs(10))
        .await
        .expect("rolled back");
    assert_eq!(image_of(&web), "nginx:2.0");

    // Both messages are queued and under way, neither delivered.
    let store = running.state.pipeline.store.clone();
    wait_until("both attempts under way", Duration::from_secs(10), || {
        let store = store.clone();
        async move {
            let rows = store.outbox().await.expect("outbox");
            rows.len() == 2
                && rows
                    .iter()
                    .all(|r| r.status == OutboxStatus::Pending && r.sending_since.is_some())
        }
    })
    .await;
    // Queued in the transaction of the result: the entries follow it directly.
    let detail = store
        .incident(incident.id)
        .await
        .expect("read")
        .expect("incident");
    let kinds: Vec<&str> = detail.timeline.iter().map(|e| e.kind.as_str()).collect();
    let result = kinds.iter().position(|k| *k == "result").expect("result");
    assert_eq!(
        &kinds[result..result + 3],
        &["result", "notify", "notify"],
        "{kinds:?}"
    );
    running.stop().await.expect("clean stop");
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_says_what_it_would_have_done_and_quiet_outcomes_queue_nothing() {
    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    let slack = SlackSink::start(Reply::Status(200, "ok".into(), None)).await;
    let hook = env.dir.path().join("hook");
    std::fs::write(&hook, format!("{}/services/T/B/x", slack.url())).expect("hook");
    let running = env
        .daemon_with_env(
            &format!(
                "[policy]\nmode = \"dry-run\"\n[notify.slack]\nwebhook_url_file = {:?}\n",
                hook.display().to_string()
            ),
            &[(
                "ROLLBACKD__SERVER__PUBLIC_URL",
                "https://rollbackd.example/",
            )],
        )
        .await;
    let addr = running.addr.to_string();
    // An alert naming no workload: recorded, not notable, no message.
    post_alert(
        &addr,
        &scenario::alertmanager_payload(
            &[
                ("alertname", "Noise"),
                ("namespace", "default"),
                ("deployment", "nope"),
            ],
            Timestamp::now(),
        ),
    )
    .await;
    let posted = post_alert(
        &addr,
        &scenario::alertmanager_payload(WEB, Timestamp::now()),
    )
    .await;
    let store = running.state.pipeline.store.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while slack.received().is_empty() {
        if std::time::Instant::now() > deadline {
            let incidents = store.list_incidents(&Default::default()).await;
            let outbox = store.outbox().await;
            let undecided = store.undecided_alerts().await;
            let ready = running.state.readiness.is_ready();
            panic!(
                "no Slack request within 20s\nposted: {posted:?}\nready: {ready}\nundecided: {undecided:#?}\nincidents: {incidents:#?}\noutbox: {outbox:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = slack.received();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        slack.received().len(),
        1,
        "only the notable outcome is sent"
    );
    let body = &got[0].body;
    support::check_block_kit(body).expect("valid Block Kit");
    assert_eq!(
        body["blocks"][0]["text"]["text"],
        "WOULD ROLL BACK (dry-run) default/web"
    );
    let summary = body["blocks"][1]["text"]["text"].as_str().expect("summary");
    assert!(
        summary.starts_with(
            "*Dry-run: would have rolled back deployment default/web from revision 3 (web-"
        ) && summary.contains(", nginx:3.0) to revision 2 (web-")
            && summary.contains(", nginx:2.0). Nothing was changed.*"),
        "{summary}"
    );
    assert!(
        summary.contains("\n*Why* (`would-roll-back`): HighErrorRate started "),
        "the decision's sentence explains an undo: {summary}"
    );
    let fields = body["blocks"][2]["fields"].to_string();
    assert!(
        fields.contains("*Action*\\nundo-deployment (dry-run): succeeded"),
        "{fields}"
    );
    assert!(
        fields.contains("*Would roll back to*\\nrevision 2"),
        "{fields}"
    );
    assert!(
        got[0].raw.contains("https://rollbackd.example/incidents/"),
        "links use server.public_url"
    );
    let rows = store.outbox().await.expect("outbox");
    assert_eq!(rows.len(), 1);
    assert!(rows[0].event.starts_with("result:"), "{}", rows[0].event);
    running.stop().await.expect("clean stop");
}
