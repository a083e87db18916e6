//! The `rollbackd` binary, killed (SIGKILL) while a notification is queued, and restarted on
//! the same store: the notification is delivered once. Killed while Slack holds the request
//! (Slack has it, the store does not know): it is sent again after the restart, which is why
//! delivery is documented as at least once.

mod common;
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Env, binary, post_alert, sandbox_env, wait_until};
use jiff::Timestamp;
use rollbackd::store::{OutboxRow, OutboxStatus, Store};
use support::{Reply, SlackSink};

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    /// SIGKILL: no shutdown code runs.
    fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(config: &Path) -> Daemon {
    let child = Command::new(binary())
        .args(["serve", "--config"])
        .arg(config)
        .env("ROLLBACKD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("rollbackd starts");
    Daemon(child)
}

async fn wait_ready(addr: &str) {
    let url = format!("http://{addr}/readyz");
    wait_until("rollbackd /readyz", Duration::from_secs(20), || {
        let url = url.clone();
        async move { matches!(reqwest::get(&url).await, Ok(r) if r.status().is_success()) }
    })
    .await;
}

/// A daemon config against the sandbox, notifying the stand-in's webhook, with short retries.
fn config(env: &Env, addr: &str, sink: &SlackSink) -> std::path::PathBuf {
    let webhook = env.dir.path().join("slack-webhook");
    std::fs::write(
        &webhook,
        format!("{}/services/T0/B0/restart-secret-99\n", sink.url()),
    )
    .expect("webhook file");
    env.config_file(
        addr,
        &format!(
            "[notify]\nretry_initial = \"100ms\"\nretry_max = \"300ms\"\nattempt_timeout = \"20s\"\n\
             [notify.slack]\nwebhook_url_file = {:?}\n",
            webhook.display().to_string()
        ),
    )
}

async fn store(env: &Env) -> Store {
    Store::open(&format!(
        "sqlite://{}",
        env.dir.path().join("rollbackd.db").display()
    ))
    .await
    .expect("store")
}

async fn outbox_until(
    store: &Store,
    what: &str,
    ok: impl Fn(&[OutboxRow]) -> bool,
) -> Vec<OutboxRow> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rows = store.outbox().await.expect("outbox");
        if ok(&rows) {
            return rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post_web_alert(addr: &str) {
    let payload = scenario::alertmanager_payload(
        &[
            ("alertname", "HighErrorRate"),
            ("namespace", "default"),
            ("deployment", "web"),
        ],
        Timestamp::now(),
    );
    let (status, body) = post_alert(addr, &payload).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_queued_at_a_kill_is_delivered_once_after_the_restart() {
    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    // Slack is failing: the message stays queued.
    let sink = SlackSink::start(Reply::Status(500, "rollup_error".into(), None)).await;
    let addr = format!("127.0.0.1:{}", common::free_port());
    let config = config(&env, &addr, &sink);
    let daemon = spawn(&config);
    wait_ready(&addr).await;
    post_web_alert(&addr).await;

    let store = store(&env).await;
    outbox_until(&store, "a failed attempt", |rows| {
        rows.len() == 1 && rows[0].attempts >= 1 && rows[0].status == OutboxStatus::Pending
    })
    .await;
    daemon.kill();
    assert_eq!(env.json_patches("web").len(), 1, "rolled back once");

    // Slack recovers; the restarted daemon delivers the queued message, once.
    let failed_before = sink.received().len();
    sink.set_default(Reply::Status(200, "ok".into(), None));
    let _daemon = spawn(&config);
    wait_ready(&addr).await;
    let rows = outbox_until(&store, "delivery", |rows| {
        rows.iter().all(|r| r.status == OutboxStatus::Delivered)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = sink.received();
    assert_eq!(
        received.len(),
        failed_before + 1,
        "exactly one more request: the delivery"
    );
    let delivered = &received[failed_before];
    assert!(
        delivered.raw.contains("ROLLED BACK default/web"),
        "{}",
        delivered.raw
    );
    assert!(delivered.raw.contains("nginx:3.0") && delivered.raw.contains("nginx:2.0"));
    assert_eq!(rows.len(), 1);
    assert_eq!(
        env.json_patches("web").len(),
        1,
        "no second rollback after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_while_slack_holds_the_request_sends_it_again_at_least_once() {
    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    // Slack takes the request and never answers it.
    let sink = SlackSink::start(Reply::Status(200, "ok".into(), None)).await;
    sink.script([Reply::Hang]);
    let addr = format!("127.0.0.1:{}", common::free_port());
    let config = config(&env, &addr, &sink);
    let daemon = spawn(&config);
    wait_ready(&addr).await;
    post_web_alert(&addr).await;
    sink.wait_for(1, Duration::from_secs(20)).await;
    let store = store(&env).await;
    let rows = store.outbox().await.expect("outbox");
    assert!(
        rows[0].sending_since.is_some(),
        "the attempt is marked as under way: {rows:#?}"
    );
    daemon.kill();

    let _daemon = spawn(&config);
    wait_ready(&addr).await;
    let rows = outbox_until(&store, "delivery", |rows| {
        rows.iter().all(|r| r.status == OutboxStatus::Delivered)
    })
    .await;
    let received = sink.received();
    assert_eq!(received.len(), 2, "sent again after the restart");
    assert_eq!(received[0].raw, received[1].raw);
    assert_eq!(rows[0].attempts, 2);
    let incident = store
        .incident(rows[0].incident_id)
        .await
        .expect("read")
        .expect("incident");
    let notes: Vec<&str> = incident
        .timeline
        .iter()
        .filter(|e| e.kind == "notify")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(
        notes,
        vec![
            "slack webhook: queued",
            "slack webhook: attempt 1 was interrupted by a restart; the message may have been delivered, sending it again",
            "slack webhook: delivered (attempt 2)",
        ]
    );
}
