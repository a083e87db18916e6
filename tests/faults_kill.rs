//! `kill -9` at the fault points of the action path, then a restart of the real binary.
//!
//! For each point (after the intent is recorded, after the PATCH was answered, before the
//! result is recorded): the workload is rolled back exactly once, the incident is complete
//! (a note of the daemon's start, the settled result), on-call is notified, and a second,
//! different alert about the same rollout changes nothing.

mod common;
#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use jiff::Timestamp;
use serde_json::Value;
use support::{Reply, SlackSink};

const WEB: &[(&str, &str)] = &[
    ("alertname", "HighErrorRate"),
    ("namespace", "default"),
    ("deployment", "web"),
];
const WEB_LATENCY: &[(&str, &str)] = &[
    ("alertname", "HighLatencyP95"),
    ("namespace", "default"),
    ("deployment", "web"),
];

struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn spawn(config: &std::path::Path, fault: Option<&str>) -> Daemon {
        let mut command = Command::new(binary());
        command
            .args(["serve", "--config"])
            .arg(config)
            .env("ROLLBACKD_LOG", "warn")
            .env_remove(rollbackd::fault::ENV)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(point) = fault {
            command.env(rollbackd::fault::ENV, point);
        }
        let mut child = command.spawn().expect("rollbackd starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[rollbackd] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Daemon { child, lines }
    }

    /// Waits for a log line containing `needle`; panics after `limit`.
    fn wait_for_line(&self, needle: &str, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => {}
                Err(_) => panic!("no log line with {needle:?} within {limit:?}"),
            }
        }
    }

    /// `kill -9`: SIGKILL, no chance to clean up.
    fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL delivered");
        let status = self.child.wait().expect("reaped");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "killed by SIGKILL"
        );
    }
}

async fn wait_ready(addr: &str) {
    let url = format!("http://{addr}/readyz");
    wait_until("rollbackd /readyz", Duration::from_secs(20), || {
        let url = url.clone();
        async move { matches!(reqwest::get(&url).await, Ok(r) if r.status().is_success()) }
    })
    .await;
}

async fn incidents(addr: &str) -> Vec<Value> {
    let list: Value = reqwest::get(format!("http://{addr}/api/v1/incidents"))
        .await
        .expect("incidents answer")
        .json()
        .await
        .expect("incidents JSON");
    list.as_array().cloned().unwrap_or_default()
}

async fn incident(addr: &str, id: i64) -> Value {
    reqwest::get(format!("http://{addr}/api/v1/incidents/{id}"))
        .await
        .expect("incident answers")
        .json()
        .await
        .expect("incident JSON")
}

/// Waits until every incident has a final outcome and `n` exist; returns them.
async fn wait_incidents(addr: &str, n: usize, limit: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let list = incidents(addr).await;
        let settled = list.iter().all(|i| {
            !matches!(
                i["outcome"].as_str(),
                Some("acting") | Some("unsettled") | Some("failed")
            )
        });
        if list.len() >= n && settled {
            return list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "incidents not settled within {limit:?}: {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn killed_at(point: &str) {
    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    let slack = SlackSink::start(Reply::Status(200, "ok".into(), None)).await;
    let hook = env.dir.path().join("hook");
    std::fs::write(&hook, format!("{}/services/T/B/x", slack.url())).expect("hook");
    let addr = format!("127.0.0.1:{}", free_port());
    let config = env.config_file(
        &addr,
        &format!(
            "[notify.slack]\nwebhook_url_file = {:?}\n",
            hook.display().to_string()
        ),
    );

    // 1. The daemon reaches the fault point on its first rollback, and is killed there.
    let first = Daemon::spawn(&config, Some(point));
    wait_ready(&addr).await;
    let (status, _) = post_alert(
        &addr,
        &scenario::alertmanager_payload(WEB, Timestamp::now()),
    )
    .await;
    assert_eq!(status, 200);
    first.wait_for_line(
        &format!("fault point {point} reached"),
        Duration::from_secs(20),
    );
    first.kill_9();
    let applied_before_restart = env
        .json_patches("web")
        .iter()
        .filter(|p| p.status == 200)
        .count();
    let expected_before = if point == rollbackd::fault::AFTER_INTENT {
        0
    } else {
        1
    };
    assert_eq!(applied_before_restart, expected_before, "{point}");

    // 2. Restarted without the fault: the action is settled, the workload rolled back once.
    let second = Daemon::spawn(&config, None);
    wait_ready(&addr).await;
    let list = wait_incidents(&addr, 1, Duration::from_secs(30)).await;
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0]["outcome"], "rolled-back", "{point}: {:#}", list[0]);
    let web = scenario::wait_rolled_out(&env.api, "web", "4", Duration::from_secs(10))
        .await
        .expect("rolled back");
    assert_eq!(image_of(&web), "nginx:2.0", "{point}");
    let applied: Vec<_> = env
        .json_patches("web")
        .into_iter()
        .filter(|p| p.status == 200)
        .collect();
    assert_eq!(applied.len(), 1, "{point}: rolled back exactly once");

    // The incident is complete: the daemon's start, and the settled result, are recorded.
    let id = list[0]["id"].as_i64().expect("incident id");
    let detail = incident(&addr, id).await;
    let timeline = detail["timeline"].as_array().cloned().unwrap_or_default();
    let kinds: Vec<&str> = timeline.iter().filter_map(|e| e["kind"].as_str()).collect();
    for kind in [
        "received",
        "correlated",
        "decision",
        "action",
        "daemon",
        "result",
    ] {
        assert!(
            kinds.contains(&kind),
            "{point}: no {kind} entry in {kinds:?}"
        );
    }
    let started = timeline
        .iter()
        .find(|e| e["kind"] == "daemon")
        .and_then(|e| e["message"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(started.contains("started"), "{point}: {started}");

    // On-call hears that the workload was rolled back.
    let messages = slack.wait_for(1, Duration::from_secs(20)).await;
    assert!(
        messages
            .iter()
            .any(|m| m.raw.to_lowercase().contains("rolled back")),
        "{point}: {:#?}",
        messages.iter().map(|m| &m.raw).collect::<Vec<_>>()
    );

    // 3. A second, different alert about the same rollout changes nothing.
    let (status, _) = post_alert(
        &addr,
        &scenario::alertmanager_payload(WEB_LATENCY, Timestamp::now()),
    )
    .await;
    assert_eq!(status, 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let list = incidents(&addr).await;
        let decided = list
            .iter()
            .map(|i| i["alert_count"].as_i64().unwrap_or(0))
            .sum::<i64>();
        if decided >= 2 {
            let second_outcome = list
                .iter()
                .find(|i| i["id"].as_i64() != Some(id))
                .map(|i| i["outcome"].clone())
                .unwrap_or_else(|| list[0]["outcome"].clone());
            assert!(
                matches!(
                    second_outcome.as_str(),
                    Some("would-cascade") | Some("already-rolled-back") | Some("rolled-back")
                ),
                "{point}: {list:#?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{point}: the second alert was not decided: {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let applied = env
        .json_patches("web")
        .into_iter()
        .filter(|p| p.status == 200)
        .count();
    assert_eq!(applied, 1, "{point}: the second alert sent no patch");
    let web = env.api.get("web").await.expect("web");
    assert_eq!(
        image_of(&web),
        "nginx:2.0",
        "{point}: the bad release stays out"
    );
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_intent() {
    killed_at(rollbackd::fault::AFTER_INTENT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_patch() {
    killed_at(rollbackd::fault::AFTER_PATCH).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_before_the_result() {
    killed_at(rollbackd::fault::BEFORE_RESULT).await;
}
