//! A PATCH the API server applied but whose answer never came back in time: the daemon settles
//! it by reading the object again, never sends it again blind, and a second alert changes
//! nothing. When even the re-read fails, the action stays `unknown`, blocks its cause, and is
//! settled once the object can be read.

mod common;

use std::time::Duration;

use common::*;
use jiff::Timestamp;
use kube_sandbox::{Fault, FaultAction};

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

/// Patches the sandbox applied. One whose answer was held back until the client gave up has
/// no status logged (0): it was applied all the same.
fn applied_patches(env: &Env) -> usize {
    env.json_patches("web")
        .iter()
        .filter(|p| p.status < 400)
        .count()
}

async fn second_alert_changes_nothing(env: &Env, running: &rollbackd::daemon::Running) {
    let store = running.state.pipeline.store.clone();
    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(WEB_LATENCY, Timestamp::now()),
    )
    .await;
    wait_until(
        "the second alert is decided",
        Duration::from_secs(10),
        || {
            let store = store.clone();
            async move { store.pending_count().await.unwrap_or(1) == 0 }
        },
    )
    .await;
    assert_eq!(applied_patches(env), 1, "the second alert sent no patch");
    let web = env.api.get("web").await.expect("web");
    assert_eq!(image_of(&web), "nginx:2.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applied_patch_whose_answer_is_held_back_is_settled_as_applied() {
    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    let running = env
        .daemon_with_env("", &[("ROLLBACKD__KUBERNETES__CALL_TIMEOUT", "500ms")])
        .await;
    env.sandbox.inject_fault(Fault {
        verb: Some("patch".into()),
        resource: Some("deployments".into()),
        count: 1,
        action: FaultAction::HoldAnswer(Duration::from_secs(3)),
    });
    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(WEB, Timestamp::now()),
    )
    .await;
    let incident = settled_incident(&running).await;
    assert_eq!(incident.outcome, "rolled-back", "{}", incident.reason);
    assert!(
        incident.reason.contains("answer was lost") && incident.reason.contains("applied"),
        "{}",
        incident.reason
    );
    assert_eq!(env.json_patches("web").len(), 1, "never sent twice");
    let web = scenario::wait_rolled_out(&env.api, "web", "4", Duration::from_secs(10))
        .await
        .expect("rolled back");
    assert_eq!(image_of(&web), "nginx:2.0");
    second_alert_changes_nothing(&env, &running).await;
    running.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_that_cannot_be_read_again_stays_unknown_and_blocks_its_cause() {
    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    let running = env
        .daemon_with_env("", &[("ROLLBACKD__KUBERNETES__CALL_TIMEOUT", "500ms")])
        .await;
    let store = running.state.pipeline.store.clone();
    // The patch applies but its answer is late; every read after it fails for a while. The
    // executor's own read before the patch takes the first, harmless fault.
    env.sandbox.inject_fault(Fault {
        verb: Some("patch".into()),
        resource: Some("deployments".into()),
        count: 1,
        action: FaultAction::HoldAnswer(Duration::from_secs(2)),
    });
    env.sandbox.inject_fault(Fault {
        verb: Some("get".into()),
        resource: Some("deployments".into()),
        count: 1,
        action: FaultAction::Delay(Duration::ZERO),
    });
    env.sandbox.inject_fault(Fault {
        verb: Some("get".into()),
        resource: Some("deployments".into()),
        count: 1000,
        action: FaultAction::Status(503),
    });
    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(WEB, Timestamp::now()),
    )
    .await;
    wait_until("the action is unknown", Duration::from_secs(15), || {
        let store = store.clone();
        async move {
            store
                .list_incidents(&Default::default())
                .await
                .is_ok_and(|l| {
                    l.iter()
                        .any(|i| i.outcome == "unsettled" || i.outcome == "failed")
                })
        }
    })
    .await;
    let list = store
        .list_incidents(&Default::default())
        .await
        .expect("list");
    let first = list[0].clone();
    assert_eq!(first.outcome, "unsettled", "{}", first.reason);
    assert_eq!(applied_patches(&env), 1, "the patch was applied");

    // While unknown, a second alert about the same cause sends nothing.
    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(WEB_LATENCY, Timestamp::now()),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.json_patches("web").len(), 1, "nothing more is sent");

    // Reads work again: the next sweep settles it as applied.
    env.sandbox.clear_faults();
    wait_until("the action is settled", Duration::from_secs(20), || {
        let store = store.clone();
        let id = first.id;
        async move {
            store
                .incident(id)
                .await
                .ok()
                .flatten()
                .is_some_and(|i| i.summary.outcome == "rolled-back")
        }
    })
    .await;
    let detail = store
        .incident(first.id)
        .await
        .expect("store")
        .expect("incident");
    assert!(
        detail.summary.reason.starts_with("settled: "),
        "{}",
        detail.summary.reason
    );
    assert_eq!(env.json_patches("web").len(), 1, "settled, never resent");
    let web = env.api.get("web").await.expect("web");
    assert_eq!(image_of(&web), "nginx:2.0");
    running.stop().await.expect("clean stop");
}
