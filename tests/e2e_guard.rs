//! Guard rails end to end against the sandbox: a namespace opted out by its annotation and a
//! Deployment opted back in; `rollbackd.io/policy: pause` pausing instead of reverting; the
//! circuit breaker opening, recorded and exposed as a metric, also for reverts carried out
//! together.

mod common;

use std::time::Duration;

use common::*;
use jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::json;

fn alert(name: &str) -> serde_json::Value {
    scenario::alertmanager_payload(
        &[
            ("alertname", "HighErrorRate"),
            ("namespace", "default"),
            ("deployment", name),
        ],
        Timestamp::now(),
    )
}

async fn annotate(api: &Api<DynamicObject>, name: &str, key: &str, value: &str) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
    )
    .await
    .expect("annotated");
}

/// Waits until `name` has an incident whose outcome is final; returns it.
async fn outcome_of(running: &rollbackd::daemon::Running, name: &str) -> (String, String) {
    let store = running.state.pipeline.store.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let list = store
            .list_incidents(&Default::default())
            .await
            .expect("list");
        if let Some(i) = list.iter().find(|i| {
            i.workload_name.as_deref() == Some(name) && i.outcome != rollbackd::store::ACTING
        }) {
            return (i.outcome.clone(), i.reason.clone());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no incident for {name}: {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_opted_out_is_left_alone_and_a_workload_can_opt_back_in() {
    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    env.three_rollouts("api").await;
    let namespaces =
        Api::<DynamicObject>::all_with(env.client.clone(), &rollbackd::k8s::namespaces());
    annotate(
        &namespaces,
        "default",
        "rollbackd.io/auto-rollback",
        "false",
    )
    .await;
    annotate(&env.api, "api", "rollbackd.io/auto-rollback", "true").await;
    let running = env.daemon("").await;
    let addr = running.addr.to_string();
    post_alert(&addr, &alert("web")).await;
    let (outcome, reason) = outcome_of(&running, "web").await;
    assert_eq!(outcome, "out-of-scope", "{reason}");
    assert!(
        reason.contains("namespace default has rollbackd.io/auto-rollback: \"false\""),
        "{reason}"
    );
    post_alert(&addr, &alert("api")).await;
    let (outcome, reason) = outcome_of(&running, "api").await;
    assert_eq!(outcome, "rolled-back", "{reason}");
    assert!(env.json_patches("web").is_empty(), "web was left alone");
    assert_eq!(env.json_patches("api").len(), 1);
    running.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_policy_pauses_the_deployment_instead_of_reverting_it() {
    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    annotate(&env.api, "web", "rollbackd.io/policy", "pause").await;
    let running = env.daemon("").await;
    post_alert(&running.addr.to_string(), &alert("web")).await;
    let (outcome, reason) = outcome_of(&running, "web").await;
    assert_eq!(outcome, "paused-workload", "{reason}");
    let web = env.api.get("web").await.expect("web");
    assert_eq!(web.data["spec"]["paused"], json!(true), "paused");
    assert_eq!(image_of(&web), "nginx:3.0", "not reverted: a human decides");
    assert!(env.json_patches("web").is_empty(), "no undo was sent");
    running.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_breaker_opens_after_its_limit() {
    let env = sandbox_env().await;
    for name in ["one", "two", "three"] {
        env.three_rollouts(name).await;
    }
    let running = env
        .daemon_with_env(
            "",
            &[
                ("ROLLBACKD__POLICY__BREAKER_MAX_ACTIONS", "2"),
                ("ROLLBACKD__POLICY__BREAKER_WINDOW", "10m"),
            ],
        )
        .await;
    let addr = running.addr.to_string();
    for name in ["one", "two"] {
        post_alert(&addr, &alert(name)).await;
        let (outcome, reason) = outcome_of(&running, name).await;
        assert_eq!(outcome, "rolled-back", "{name}: {reason}");
    }
    post_alert(&addr, &alert("three")).await;
    let (outcome, reason) = outcome_of(&running, "three").await;
    assert_eq!(outcome, "breaker-open", "{reason}");
    assert!(
        reason.contains("2 automatic actions in the last 10m"),
        "{reason}"
    );
    assert!(env.json_patches("three").is_empty());
    let metrics = running.state.metrics.render();
    assert!(
        metrics.contains("rollbackd_circuit_breaker_open 1"),
        "{metrics}"
    );
    running.stop().await.expect("clean stop");
}

/// Reverts on different workloads are carried out together, a round at a time; the breaker
/// still counts each one. Four alerts in one delivery reach the worker in one page: two are
/// rolled back, the other two find the breaker open, and no workload gets a second PATCH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_counts_reverts_carried_out_together() {
    let env = sandbox_env().await;
    let names = ["w1", "w2", "w3", "w4"];
    for name in names {
        env.three_rollouts(name).await;
    }
    let running = env
        .daemon_with_env(
            "",
            &[
                ("ROLLBACKD__POLICY__BREAKER_MAX_ACTIONS", "2"),
                ("ROLLBACKD__POLICY__BREAKER_WINDOW", "10m"),
            ],
        )
        .await;
    let mut payload = alert(names[0]);
    let alerts: Vec<serde_json::Value> = names
        .iter()
        .map(|name| alert(name)["alerts"][0].clone())
        .collect();
    payload["alerts"] = serde_json::Value::Array(alerts);
    let (status, _) = post_alert(&running.addr.to_string(), &payload).await;
    assert_eq!(status, 200);
    let mut outcomes = Vec::new();
    for name in names {
        let (outcome, reason) = outcome_of(&running, name).await;
        outcomes.push(outcome.clone());
        if outcome == "rolled-back" {
            assert_eq!(env.json_patches(name).len(), 1, "{name}: {reason}");
        } else {
            assert_eq!(outcome, "breaker-open", "{name}: {reason}");
            assert!(env.json_patches(name).is_empty(), "{name}: {reason}");
        }
    }
    outcomes.sort();
    assert_eq!(
        outcomes,
        ["breaker-open", "breaker-open", "rolled-back", "rolled-back"],
    );
    running.stop().await.expect("clean stop");
}
