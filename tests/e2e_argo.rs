//! Argo Rollouts end to end, with the sandbox's simulated Argo controller: a canary paused
//! mid-update is aborted (one status patch, nothing else); a promoted Rollout is undone to the
//! previous template (its workloadRef Deployment when it has one) and then fully promoted
//! (`promote --full`), so the good revision ends stable and Healthy, unless
//! `spec.rollbackWindow` fast-tracks it (no promote sent) or `policy.argo_promote_full_after_undo`
//! is off (paused at the first pause step, a human must promote); a failed promote is reported
//! with the command to run; a Rollout with nothing in progress is never aborted; an alert whose
//! `deployment` label names a Rollout (as kube-prometheus-stack's workload label does) reaches it.

mod common;

use std::time::Duration;

use common::*;
use jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use rollbackd::daemon::Running;
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
    rollout_manifest("web", image, 4, steps)
}

async fn create(api: &Api<DynamicObject>, manifest: Value) {
    create_object(api, manifest).await
}

/// Waits until Rollout `web`'s status satisfies `check` (and describes its generation).
async fn wait_status(
    api: &Api<DynamicObject>,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> DynamicObject {
    wait_rollout(api, "web", what, check).await
}

async fn set_image(api: &Api<DynamicObject>, image: &str) {
    set_rollout_image(api, "web", image).await
}

/// The PATCHes that change the Rollout's behaviour: all of them but rollbackd's note of the
/// incident on the object (`rollbackd.io/last-action`), sent in the background afterwards.
fn patches(env: &Env) -> Vec<kube_sandbox::RecordedRequest> {
    env.sandbox
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && !r.body.contains("rollbackd.io/last-action"))
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

/// kube-prometheus-stack's pod-owner recording rule names a Rollout's pods' workload after the
/// Rollout, so a rule summing by workload alerts with `deployment="<rollout>"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_naming_the_rollout_in_its_deployment_label_aborts_the_rollout() {
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

    let alert = [
        ("alertname", "HighErrorRate"),
        ("namespace", "default"),
        ("deployment", "web"),
    ];
    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(&alert, Timestamp::now()),
    )
    .await;
    let incident = settled_incident(&running).await;
    assert_eq!(incident.outcome, "aborted", "{}", incident.reason);
    assert_eq!(incident.workload_kind.as_deref(), Some("Rollout"));
    let detail = running
        .state
        .pipeline
        .store
        .incident(incident.id)
        .await
        .expect("read")
        .expect("incident");
    assert!(
        detail.timeline.iter().any(|e| e
            .message
            .contains("deployment=\"web\", no Deployment of that name but an Argo Rollout")),
        "{:#?}",
        detail.timeline
    );
    let ours = patches(&env);
    assert_eq!(ours.len(), 1, "{ours:#?}");
    assert_eq!(
        ours[0].path_only(),
        "/apis/argoproj.io/v1alpha1/namespaces/default/rollouts/web/status"
    );
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

/// `kubectl argo rollouts promote --full` on a Rollout mid-update (what the setup uses to get a
/// second revision promoted).
async fn promote_full(api: &Api<DynamicObject>) {
    api.patch_status(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"promoteFull": true}})),
    )
    .await
    .expect("promote --full");
}

/// A canary Rollout (`setWeight: 50`, `pause: {}`) with revision 1 and then revision 2 fully
/// promoted; returns their pod hashes. `window` sets `spec.rollbackWindow.revisions`.
async fn promoted_canary(api: &Api<DynamicObject>, window: Option<i64>) -> (String, String) {
    let mut manifest = rollout("web:1", json!([{"setWeight": 50}, {"pause": {}}]));
    if let Some(n) = window {
        manifest["spec"]["rollbackWindow"] = json!({"revisions": n});
    }
    create(api, manifest).await;
    let first = wait_status(api, "healthy at revision 1", promoted).await;
    let v1 = first.data["status"]["stableRS"]
        .as_str()
        .expect("hash")
        .to_string();
    // creationTimestamps have one-second resolution, and the rollback window only counts a
    // ReplicaSet created *before* the stable one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    set_image(api, "web:2").await;
    wait_status(api, "paused at the first pause step", |s| {
        s["phase"] == "Paused" && s["currentPodHash"] != v1.as_str()
    })
    .await;
    promote_full(api).await;
    let second = wait_status(api, "promoted revision 2", |s| {
        promoted(s) && s["stableRS"] != v1.as_str()
    })
    .await;
    let v2 = second.data["status"]["stableRS"]
        .as_str()
        .expect("hash")
        .to_string();
    (v1, v2)
}

fn promote_full_requests(env: &Env) -> Vec<kube_sandbox::RecordedRequest> {
    patches(env)
        .into_iter()
        .filter(|r| r.body.contains("promoteFull"))
        .collect()
}

/// The `data` of the incident's result entry.
async fn result_data(running: &Running, id: i64) -> Value {
    let detail = running
        .state
        .pipeline
        .store
        .incident(id)
        .await
        .expect("read")
        .expect("incident");
    detail
        .timeline
        .iter()
        .find(|e| e.kind == "result")
        .and_then(|e| e.data.clone())
        .expect("a result with data")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_canary_is_undone_then_fully_promoted_so_the_good_revision_is_stable() {
    let env = sandbox_env().await;
    let api = rollouts(&env);
    let (v1, _v2) = promoted_canary(&api, None).await;
    let running = env.daemon("").await;
    env.sandbox.clear_requests();

    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(ALERT, Timestamp::now()),
    )
    .await;
    let incident = settled_incident(&running).await;
    assert_eq!(incident.outcome, "rolled-back", "{}", incident.reason);
    assert!(
        incident.reason.contains("then fully promoted it"),
        "{}",
        incident.reason
    );
    // The undo first, then exactly what `promote --full` sends, on the status subresource.
    let ours = patches(&env);
    assert_eq!(ours.len(), 2, "{ours:#?}");
    assert_eq!(
        ours[0].content_type.as_deref(),
        Some("application/json-patch+json")
    );
    assert_eq!(
        ours[1].path_only(),
        "/apis/argoproj.io/v1alpha1/namespaces/default/rollouts/web/status"
    );
    assert_eq!(
        ours[1].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        serde_json::from_str::<Value>(&ours[1].body).expect("json"),
        json!({"status": {"promoteFull": true}})
    );
    let data = result_data(&running, incident.id).await;
    assert_eq!(data["patch"][1]["path"], "/spec/template", "{data}");
    assert_eq!(data["promote_full"]["status"], "sent", "{data}");
    assert_eq!(
        data["promote_full"]["requests"][0]["on"], "rollouts/status",
        "{data}"
    );

    // The good revision is stable, nothing is paused, and the Rollout ends Healthy.
    let ro = wait_status(&api, "revision 1's template stable and Healthy", |s| {
        promoted(s) && s["stableRS"] == v1.as_str()
    })
    .await;
    assert_ne!(ro.data["spec"]["paused"], json!(true));
    assert!(
        ro.data["status"]["pauseConditions"]
            .as_array()
            .is_none_or(Vec::is_empty)
    );
    assert_eq!(ro.data["status"]["currentStepIndex"], json!(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_the_rollback_window_no_promote_is_sent_and_the_good_revision_is_stable() {
    let env = sandbox_env().await;
    let api = rollouts(&env);
    let (v1, _v2) = promoted_canary(&api, Some(1)).await;
    let running = env.daemon("").await;
    env.sandbox.clear_requests();

    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(ALERT, Timestamp::now()),
    )
    .await;
    let incident = settled_incident(&running).await;
    assert_eq!(incident.outcome, "rolled-back", "{}", incident.reason);
    assert!(
        incident
            .reason
            .contains("spec.rollbackWindow (revisions: 1)"),
        "{}",
        incident.reason
    );
    let data = result_data(&running, incident.id).await;
    assert_eq!(data["promote_full"]["status"], "not-needed", "{data}");
    wait_status(&api, "revision 1's template stable and Healthy", |s| {
        promoted(s) && s["stableRS"] == v1.as_str()
    })
    .await;
    assert!(
        promote_full_requests(&env).is_empty(),
        "the controller fast-tracks it: no promote is sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_key_off_the_rollout_waits_at_its_first_pause_for_a_human() {
    let env = sandbox_env().await;
    let api = rollouts(&env);
    let (v1, v2) = promoted_canary(&api, None).await;
    let running = env
        .daemon("[policy]\nargo_promote_full_after_undo = false\n")
        .await;
    env.sandbox.clear_requests();

    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(ALERT, Timestamp::now()),
    )
    .await;
    let incident = settled_incident(&running).await;
    assert_eq!(incident.outcome, "rolled-back", "{}", incident.reason);
    assert!(
        incident.reason.contains(
            "until a human promotes it: kubectl argo rollouts promote --full web -n default"
        ),
        "{}",
        incident.reason
    );
    let ro = wait_status(&api, "paused at the first pause step", |s| {
        s["phase"] == "Paused" && s["currentPodHash"] == v1.as_str()
    })
    .await;
    assert_eq!(ro.data["status"]["stableRS"], json!(v2), "the bad one");
    assert_eq!(ro.data["status"]["currentStepIndex"], json!(1));
    assert!(promote_full_requests(&env).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_promote_after_the_undo_is_reported_with_what_to_run() {
    let env = sandbox_env().await;
    let api = rollouts(&env);
    let (v1, v2) = promoted_canary(&api, None).await;
    let running = env.daemon("").await;
    env.sandbox.clear_requests();
    env.sandbox.inject_fault(kube_sandbox::Fault {
        verb: Some("patch".into()),
        resource: Some("rollouts/status".into()),
        count: 1,
        action: kube_sandbox::FaultAction::Status(403),
    });

    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(ALERT, Timestamp::now()),
    )
    .await;
    let incident = settled_incident(&running).await;
    assert_eq!(
        incident.outcome, "rolled-back",
        "the undo stands: {}",
        incident.reason
    );
    assert!(
        incident.reason.contains("but the full promotion failed")
            && incident
                .reason
                .contains("on-call should run kubectl argo rollouts promote --full web -n default"),
        "{}",
        incident.reason
    );
    let data = result_data(&running, incident.id).await;
    assert_eq!(data["promote_full"]["status"], "failed", "{data}");
    let ro = wait_status(&api, "paused at the first pause step", |s| {
        s["phase"] == "Paused" && s["currentPodHash"] == v1.as_str()
    })
    .await;
    assert_eq!(ro.data["status"]["stableRS"], json!(v2));
}
