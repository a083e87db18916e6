//! Argo Rollouts end to end, with the sandbox's simulated Argo controller: a canary paused
//! mid-update is aborted (one status patch, nothing else); a promoted Rollout is undone to the
//! previous template (its workloadRef Deployment when it has one); a Rollout with nothing in
//! progress is never aborted.

mod common;

use std::time::Duration;

use common::*;
use jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use rollbackd::scenario;
use serde_json::{Value, json};

const ALERT: &[(&str, &str)] = &[
    ("alertname", "HighErrorRate"),
    ("namespace", "default"),
    ("rollout", "web"),
];

fn rollouts(env: &Env) -> Api<DynamicObject> {
    Api::namespaced_with(env.client.clone(), "default", &rollbackd::k8s::rollouts())
}

fn rollout(image: &str, steps: Value) -> Value {
    json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "app", "image": image}]}},
            "strategy": {"canary": {"steps": steps}}
        }
    })
}

async fn create(api: &Api<DynamicObject>, manifest: Value) {
    let obj: DynamicObject = serde_json::from_value(manifest).expect("manifest");
    api.create(&PostParams::default(), &obj)
        .await
        .expect("created");
}

/// Waits until the Rollout's status satisfies `check` (and describes its generation).
async fn wait_status(
    api: &Api<DynamicObject>,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> DynamicObject {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = api.get("web").await.expect("rollout");
        let generation = r.metadata.generation.unwrap_or(0).to_string();
        let status = r.data.get("status").cloned().unwrap_or(Value::Null);
        if status["observedGeneration"].as_str() == Some(generation.as_str()) && check(&status) {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rollout never reached: {what}; status {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn promoted(s: &Value) -> bool {
    s["phase"] == "Healthy" && s["stableRS"].is_string() && s["stableRS"] == s["currentPodHash"]
}

async fn set_image(api: &Api<DynamicObject>, image: &str) {
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}});
    api.patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("image set");
}

fn patches(env: &Env) -> Vec<rollbackd::sandbox::RecordedRequest> {
    env.sandbox
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_paused_mid_update_is_aborted_and_nothing_else_is_patched() {
    let env = sandbox_env().await;
    let api = rollouts(&env);
    create(
        &api,
        rollout("web:1", json!([{"setWeight": 20}, {"pause": {}}])),
    )
    .await;
    wait_status(&api, "healthy at revision 1", promoted).await;
    set_image(&api, "web:2").await;
    wait_status(&api, "paused at 20%", |s| {
        s["phase"] == "Paused" && s["stableRS"] != s["currentPodHash"]
    })
    .await;
    let running = env.daemon("").await;
    env.sandbox.clear_requests();

    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(ALERT, Timestamp::now()),
    )
    .await;
    let incident = settled_incident(&running).await;
    assert_eq!(incident.outcome, "aborted", "{}", incident.reason);
    // The simulated controller writes through the store, not over HTTP: every PATCH in the
    // request log is rollbackd's.
    let ours = patches(&env);
    assert_eq!(
        ours.len(),
        1,
        "exactly one patch, and nothing else patched: {ours:#?}"
    );
    assert_eq!(
        ours[0].path_only(),
        "/apis/argoproj.io/v1alpha1/namespaces/default/rollouts/web/status"
    );
    assert_eq!(
        ours[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        serde_json::from_str::<Value>(&ours[0].body).expect("json"),
        json!({"status": {"abort": true}})
    );
    wait_status(&api, "aborted", |s| {
        s["phase"] == "Degraded"
            && s["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("RolloutAborted"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_rollout_is_undone_and_never_aborted() {
    let env = sandbox_env().await;
    let api = rollouts(&env);
    create(&api, rollout("web:1", json!([]))).await;
    let first = wait_status(&api, "healthy at revision 1", promoted).await;
    let template_1 = first.data["spec"]["template"].clone();
    set_image(&api, "web:2").await;
    wait_status(&api, "promoted revision 2", |s| {
        promoted(s) && s["stableRS"] != first.data["status"]["stableRS"]
    })
    .await;
    let running = env.daemon("").await;
    env.sandbox.clear_requests();

    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(ALERT, Timestamp::now()),
    )
    .await;
    let incident = settled_incident(&running).await;
    assert_eq!(incident.outcome, "rolled-back", "{}", incident.reason);
    let json_patches: Vec<_> = patches(&env)
        .into_iter()
        .filter(|r| r.content_type.as_deref() == Some("application/json-patch+json"))
        .collect();
    assert_eq!(json_patches.len(), 1);
    assert_eq!(
        json_patches[0].path_only(),
        "/apis/argoproj.io/v1alpha1/namespaces/default/rollouts/web"
    );
    let patch: Value = serde_json::from_str(&json_patches[0].body).expect("json");
    assert_eq!(patch[1]["path"], "/spec/template");
    let mut sent = patch[1]["value"].clone();
    let mut want = template_1;
    for t in [&mut sent, &mut want] {
        if let Some(labels) = t
            .pointer_mut("/metadata/labels")
            .and_then(Value::as_object_mut)
        {
            labels.remove("rollouts-pod-template-hash");
        }
    }
    assert_eq!(sent["spec"]["containers"][0]["image"], "web:1");
    assert_eq!(sent["metadata"]["labels"], want["metadata"]["labels"]);
    assert!(
        !patches(&env).iter().any(|r| r.body.contains("\"abort\"")),
        "a Rollout with nothing in progress is never aborted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_workload_ref_the_deployment_is_patched() {
    let env = sandbox_env().await;
    let mut deployment = scenario::deployment_manifest("default", "web-template", "web:1", 0);
    deployment["spec"]["template"]["metadata"]["labels"]["app"] = json!("web");
    deployment["spec"]["selector"]["matchLabels"]["app"] = json!("web");
    scenario::create(&env.api, deployment)
        .await
        .expect("deployment");
    let api = rollouts(&env);
    create(&api, json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web-template"},
            "strategy": {"canary": {"steps": []}}
        }
    }))
    .await;
    let first = wait_status(&api, "healthy at revision 1", promoted).await;
    scenario::set_image(&env.api, "web-template", "web:2")
        .await
        .expect("image");
    wait_status(&api, "promoted revision 2", |s| {
        promoted(s) && s["stableRS"] != first.data["status"]["stableRS"]
    })
    .await;
    let running = env.daemon("").await;
    env.sandbox.clear_requests();

    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(ALERT, Timestamp::now()),
    )
    .await;
    let incident = settled_incident(&running).await;
    assert_eq!(incident.outcome, "rolled-back", "{}", incident.reason);
    assert_eq!(
        env.json_patches("web-template").len(),
        1,
        "the workloadRef Deployment is patched"
    );
    assert!(
        !patches(&env)
            .iter()
            .any(|r| r.path_only().contains("/rollouts/web")
                && r.content_type.as_deref() == Some("application/json-patch+json"))
    );
    let d = env.api.get("web-template").await.expect("deployment");
    assert_eq!(image_of(&d), "web:1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_with_nothing_in_progress_and_no_history_is_left_alone() {
    let env = sandbox_env().await;
    let api = rollouts(&env);
    create(
        &api,
        rollout("web:1", json!([{"setWeight": 20}, {"pause": {}}])),
    )
    .await;
    wait_status(&api, "healthy at revision 1", promoted).await;
    let running = env.daemon("").await;
    env.sandbox.clear_requests();
    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(ALERT, Timestamp::now()),
    )
    .await;
    let incident = settled_incident(&running).await;
    assert_eq!(incident.outcome, "no-history", "{}", incident.reason);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !patches(&env)
            .iter()
            .any(|r| r.path_only().contains("/rollouts/web")),
        "never an abort (or anything) on a Rollout with nothing in progress"
    );
}
