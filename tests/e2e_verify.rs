//! Verification end to end, with the daemon in-process against the sandbox and a short
//! `policy.verify_window`: a rollback whose alert resolves is `recovered`; one whose alert keeps
//! firing is `not-recovered`, on-call is told, a fresh rollout of the same Deployment is then
//! refused `held` with no PATCH, and `rollbackd incidents ack` (the real binary) releases it.

mod common;
mod support;

use std::process::Command;
use std::time::Duration;

use common::*;
use jiff::Timestamp;
use rollbackd::daemon::Running;
use rollbackd::store::{IncidentDetail, IncidentFilter, IncidentSummary};
use serde_json::Value;
use support::{Reply, SlackSink};

const WEB: &[(&str, &str)] = &[
    ("alertname", "HighErrorRate"),
    ("namespace", "default"),
    ("deployment", "web"),
];

/// The same alert, resolved now (Alertmanager keeps `startsAt` and sets `endsAt`).
fn resolved(starts: Timestamp) -> Value {
    let mut payload = scenario::alertmanager_payload(WEB, starts);
    payload["status"] = "resolved".into();
    payload["alerts"][0]["status"] = "resolved".into();
    payload["alerts"][0]["endsAt"] = Timestamp::now().to_string().into();
    payload
}

async fn detail(running: &Running, id: i64) -> IncidentDetail {
    running
        .state
        .pipeline
        .store
        .incident(id)
        .await
        .expect("read")
        .expect("incident")
}

/// Waits until incident `id` shows `outcome`; panics after `limit`.
async fn wait_outcome(
    running: &Running,
    id: i64,
    outcome: &str,
    limit: Duration,
) -> IncidentDetail {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let d = detail(running, id).await;
        if d.summary.outcome == outcome {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "incident {id} not {outcome} within {limit:?}: {} ({})",
            d.summary.outcome,
            d.summary.reason
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until an incident other than `known` has a final outcome, and returns it.
async fn another_incident(running: &Running, known: &[i64]) -> IncidentSummary {
    let store = running.state.pipeline.store.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let list = store
            .list_incidents(&IncidentFilter::default())
            .await
            .expect("list");
        if let Some(i) = list
            .into_iter()
            .find(|i| !known.contains(&i.id) && i.outcome != rollbackd::store::ACTING)
        {
            return i;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new incident within 15s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ack(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .args(["incidents", "ack"])
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("rollbackd incidents ack runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_whose_alert_resolves_is_recovered() {
    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    let running = env
        .daemon_with_env("", &[("ROLLBACKD__POLICY__VERIFY_WINDOW", "30s")])
        .await;
    let addr = running.addr.to_string();
    let starts = Timestamp::now();
    post_alert(&addr, &scenario::alertmanager_payload(WEB, starts)).await;
    let incident = settled_incident(&running).await;
    assert_eq!(incident.outcome, "rolled-back", "{}", incident.reason);
    scenario::wait_rolled_out(&env.api, "web", "4", Duration::from_secs(10))
        .await
        .expect("rolled back");

    let (status, _) = post_alert(&addr, &resolved(starts)).await;
    assert_eq!(status, 200);
    // The worker looks at least every 5 seconds; recovery is recorded without waiting for
    // the window to end.
    let d = wait_outcome(&running, incident.id, "recovered", Duration::from_secs(15)).await;
    assert!(
        d.summary.reason.contains("recovered: ")
            && d.summary.reason.contains("HighErrorRate resolved"),
        "{}",
        d.summary.reason
    );
    let verify: Vec<_> = d.timeline.iter().filter(|e| e.kind == "verify").collect();
    assert_eq!(verify.len(), 1, "{:?}", d.timeline);
    assert_eq!(verify[0].outcome.as_deref(), Some("recovered"));
    let metrics = running.state.metrics.render();
    assert!(
        metrics.contains("rollbackd_verifications_total{result=\"recovered\"} 1"),
        "{metrics}"
    );
    running.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_that_does_not_help_holds_the_workload_until_acknowledged() {
    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    let slack = SlackSink::start(Reply::Status(200, "ok".into(), None)).await;
    let hook = env.dir.path().join("hook");
    std::fs::write(&hook, format!("{}/services/T/B/x", slack.url())).expect("hook");
    let running = env
        .daemon_with_env(
            &format!(
                "[notify.slack]\nwebhook_url_file = {:?}\n",
                hook.display().to_string()
            ),
            // No cooldown: after the acknowledgement, the next rollout is acted on at once.
            &[
                ("ROLLBACKD__POLICY__VERIFY_WINDOW", "2s"),
                ("ROLLBACKD__POLICY__COOLDOWN", "0s"),
            ],
        )
        .await;
    let config = env.dir.path().join("rollbackd.toml");
    let addr = running.addr.to_string();
    post_alert(
        &addr,
        &scenario::alertmanager_payload(WEB, Timestamp::now()),
    )
    .await;
    let incident = settled_incident(&running).await;
    assert_eq!(incident.outcome, "rolled-back", "{}", incident.reason);
    scenario::wait_rolled_out(&env.api, "web", "4", Duration::from_secs(10))
        .await
        .expect("rolled back");
    assert_eq!(env.json_patches("web").len(), 1);

    // Never resolved: not recovered once the window is over.
    let id = incident.id;
    let d = wait_outcome(&running, id, "not-recovered", Duration::from_secs(15)).await;
    let reason = &d.summary.reason;
    assert!(
        reason.contains("1 of 1 alert still firing (HighErrorRate)"),
        "{reason}"
    );
    assert!(
        reason.contains(&format!("`rollbackd incidents ack {id}`")),
        "{reason}"
    );
    // Escalated: a message queued for the verdict, and delivered.
    let action_id = d.actions[0].id;
    let store = running.state.pipeline.store.clone();
    let outbox = store.outbox().await.expect("outbox");
    let verdict = outbox
        .iter()
        .find(|r| r.event == format!("verify:{action_id}"))
        .unwrap_or_else(|| panic!("no verify message queued: {outbox:#?}"));
    assert_eq!(verdict.payload["outcome"], "not-recovered");
    let delivered = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let got = slack.received();
            if let Some(m) = got.iter().find(|r| r.raw.contains("NOT RECOVERED")) {
                break m.raw.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no NOT RECOVERED message on Slack within 15s: {} requests",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert!(delivered.contains("incidents ack"), "{delivered}");

    // A fresh rollout of the same Deployment, and an alert about it: held, nothing sent.
    scenario::set_image(&env.api, "web", "nginx:5.0")
        .await
        .expect("fresh rollout");
    scenario::wait_rolled_out(&env.api, "web", "5", Duration::from_secs(10))
        .await
        .expect("rev 5");
    tokio::time::sleep(Duration::from_millis(300)).await;
    post_alert(
        &addr,
        &scenario::alertmanager_payload(WEB, Timestamp::now()),
    )
    .await;
    let held = another_incident(&running, &[id]).await;
    assert_eq!(held.outcome, "held", "{}", held.reason);
    assert!(
        held.reason.contains(&format!("incident {id}"))
            && held
                .reason
                .contains(&format!("rollbackd incidents ack {id}")),
        "{}",
        held.reason
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.json_patches("web").len(), 1, "held must not patch");

    // The CLI: unknown and not-held incidents are refused with exit 1.
    let out = ack(&config, &["999"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no incident 999"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let held_id = held.id.to_string();
    let out = ack(&config, &[held_id.as_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not held"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id_text = id.to_string();
    let out = ack(
        &config,
        &[
            id_text.as_str(),
            "--by",
            "ana",
            "--note",
            "bad flag, fixed by hand",
        ],
    );
    assert!(
        out.status.success(),
        "ack failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("incident {id} acknowledged by ana")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let d = detail(&running, id).await;
    let entry = d
        .timeline
        .iter()
        .find(|e| e.kind == "ack")
        .expect("ack entry");
    assert!(
        entry.message.contains("bad flag, fixed by hand"),
        "{}",
        entry.message
    );

    // Released: the next alert about the fresh rollout (the held incident's) is acted on.
    post_alert(
        &addr,
        &scenario::alertmanager_payload(WEB, Timestamp::now()),
    )
    .await;
    wait_outcome(&running, held.id, "rolled-back", Duration::from_secs(15)).await;
    assert_eq!(env.json_patches("web").len(), 2);
    running.stop().await.expect("clean stop");
}
