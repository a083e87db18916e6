//! GitOps (Argo CD) end to end. A test task plays Argo CD: while the Application's
//! `spec.syncPolicy.automated.selfHeal` is true it puts the template of the Application's live
//! revision back on the Deployment within ~100ms of any drift; when the Application gets an
//! `operation.sync.revision` it applies that revision's template, records it in
//! `status.history` and clears `operation`. Each mode must end with the good version staying
//! live (`suspend-and-undo`, `sync-to-previous`) or with nothing changed and on-call told
//! (`notify`); without an Application, the undo is as before.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

const ALERT: &[(&str, &str)] = &[
    ("alertname", "HighErrorRate"),
    ("namespace", "default"),
    ("deployment", "web"),
];

/// Git revision → the image its manifests deploy.
fn revisions() -> BTreeMap<&'static str, &'static str> {
    [("r1", "nginx:1.0"), ("r2", "nginx:2.0")].into()
}

fn applications(env: &Env) -> Api<DynamicObject> {
    Api::namespaced_with(
        env.client.clone(),
        "argocd",
        &rollbackd::k8s::applications(),
    )
}

/// The simulated Argo CD controller; stops when the flag is set.
fn play_argo_cd(env: &Env, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let apps = applications(env);
    let deployments = env.api.clone();
    tokio::spawn(async move {
        let images = revisions();
        // Bounded: the tests end well within this.
        for _ in 0..600 {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let Ok(app) = apps.get("web").await else {
                continue;
            };
            let history = app
                .data
                .pointer("/status/history")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if let Some(rev) = app
                .data
                .pointer("/operation/sync/revision")
                .and_then(Value::as_str)
                .map(str::to_string)
            {
                let Some(image) = images.get(rev.as_str()) else {
                    continue;
                };
                let _ = scenario::set_image(&deployments, "web", image).await;
                let mut history = history.clone();
                let id = history.len() as i64 + 1;
                history.push(
                    json!({"id": id, "revision": rev, "deployedAt": Timestamp::now().to_string()}),
                );
                let patch = json!({
                    "metadata": {"resourceVersion": app.metadata.resource_version},
                    "operation": null,
                    "status": {
                        "history": history,
                        "sync": {"status": "Synced", "revision": rev},
                        "operationState": {
                            "phase": "Succeeded",
                            "operation": {"sync": {"revision": rev}},
                            "syncResult": {"revision": rev}
                        }
                    }
                });
                let _ = apps
                    .patch("web", &PatchParams::default(), &Patch::Merge(patch))
                    .await;
                continue;
            }
            let self_heal = app
                .data
                .pointer("/spec/syncPolicy/automated/selfHeal")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let live_rev = history
                .last()
                .and_then(|h| h.get("revision"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let Some(want) = images.get(live_rev) else {
                continue;
            };
            if self_heal
                && let Ok(d) = deployments.get("web").await
                && image_of(&d) != *want
            {
                let _ = scenario::set_image(&deployments, "web", want).await;
            }
        }
    })
}

/// Posts the alert and returns the settled incident's outcome and reason.
async fn alert_and_settle(running: &rollbackd::daemon::Running) -> (String, String) {
    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(ALERT, Timestamp::now()),
    )
    .await;
    let incident = settled_incident(running).await;
    (incident.outcome, incident.reason)
}

async fn image_now(env: &Env) -> String {
    image_of(&env.api.get("web").await.expect("deployment"))
}

/// Checks the image stays `want` for a second (ten self-heal rounds).
async fn stays(env: &Env, want: &str) {
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            image_now(env).await,
            want,
            "the good version must stay live"
        );
    }
}

fn suspended(app: &DynamicObject) -> Option<Value> {
    let text = app
        .metadata
        .annotations
        .as_ref()?
        .get("rollbackd.io/suspended-sync-policy")?;
    serde_json::from_str(text).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_changes_nothing_and_names_the_application_and_the_last_good_revision() {
    let env = sandbox_env().await;
    argo_cd_web(&env, true).await;
    let stop = Arc::new(AtomicBool::new(false));
    let argo = play_argo_cd(&env, stop.clone());
    let running = env.daemon("").await;
    env.sandbox.clear_requests();

    let (outcome, reason) = alert_and_settle(&running).await;
    assert_eq!(outcome, "gitops-notify", "{reason}");
    assert!(
        reason.contains("Argo CD Application argocd/web"),
        "{reason}"
    );
    assert!(
        reason.contains("Last good revision in its history: r1 (history id 1"),
        "{reason}"
    );
    assert!(reason.contains("argocd app rollback web 1"), "{reason}");
    assert!(env.json_patches("web").is_empty(), "rollbackd patched web");
    let app_patches = env
        .sandbox
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path_only().contains("/applications/"))
        .count();
    assert_eq!(app_patches, 0, "rollbackd patched the Application");
    assert_eq!(image_now(&env).await, "nginx:2.0");
    // What a plain undo would meet: self-heal puts the bad version back.
    scenario::set_image(&env.api, "web", "nginx:1.0")
        .await
        .expect("drift");
    wait_until("self-heal", Duration::from_secs(5), || async {
        image_now(&env).await == "nginx:2.0"
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    argo.await.expect("argo task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_and_undo_suspends_self_heal_and_the_undo_stays() {
    let env = sandbox_env().await;
    argo_cd_web(&env, true).await;
    let stop = Arc::new(AtomicBool::new(false));
    let argo = play_argo_cd(&env, stop.clone());
    let running = env.daemon("[gitops]\nmode = \"suspend-and-undo\"\n").await;

    let (outcome, reason) = alert_and_settle(&running).await;
    assert_eq!(outcome, "gitops-suspended", "{reason}");
    assert!(reason.contains("automated sync suspended"), "{reason}");
    assert!(reason.contains("to resume"), "{reason}");
    assert_eq!(image_now(&env).await, "nginx:1.0");
    stays(&env, "nginx:1.0").await;
    let app = applications(&env).get("web").await.expect("application");
    assert_eq!(
        app.data.pointer("/spec/syncPolicy/automated"),
        None,
        "automated sync is off"
    );
    assert_eq!(
        suspended(&app),
        Some(json!({"prune": true, "selfHeal": true})),
        "the previous policy is kept"
    );
    stop.store(true, Ordering::SeqCst);
    argo.await.expect("argo task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_to_previous_has_argo_cd_sync_the_revision_before_the_bad_one() {
    let env = sandbox_env().await;
    argo_cd_web(&env, true).await;
    let stop = Arc::new(AtomicBool::new(false));
    let argo = play_argo_cd(&env, stop.clone());
    let running = env.daemon("[gitops]\nmode = \"sync-to-previous\"\n").await;
    env.sandbox.clear_requests();

    let (outcome, reason) = alert_and_settle(&running).await;
    assert_eq!(outcome, "gitops-synced", "{reason}");
    assert!(reason.contains("revision r1"), "{reason}");
    assert!(
        env.json_patches("web").is_empty(),
        "the Deployment is changed by Argo CD's sync, not by an undo"
    );
    let ours: Vec<Value> = env
        .sandbox
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path_only().ends_with("/applications/web"))
        .filter_map(|r| serde_json::from_str::<Value>(&r.body).ok())
        .filter(|b| b.get("operation").is_some_and(|o| !o.is_null()))
        .collect();
    assert_eq!(ours.len(), 1, "one sync requested: {ours:#?}");
    assert_eq!(
        ours[0]["operation"],
        json!({"sync": {"revision": "r1"}, "initiatedBy": {"username": "rollbackd"}})
    );
    wait_until("Argo CD synced r1", Duration::from_secs(10), || async {
        image_now(&env).await == "nginx:1.0"
    })
    .await;
    stays(&env, "nginx:1.0").await;
    let app = applications(&env).get("web").await.expect("application");
    assert_eq!(app.data.pointer("/spec/syncPolicy/automated"), None);
    assert!(suspended(&app).is_some());
    assert!(app.data.get("operation").is_none_or(Value::is_null));
    stop.store(true, Ordering::SeqCst);
    argo.await.expect("argo task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_application_the_undo_is_as_before() {
    let env = sandbox_env().await;
    // The instance label alone (Helm sets it too) does not make a workload GitOps-managed.
    argo_cd_web(&env, false).await;
    let running = env.daemon("[gitops]\nmode = \"sync-to-previous\"\n").await;

    let (outcome, reason) = alert_and_settle(&running).await;
    assert_eq!(outcome, "rolled-back", "{reason}");
    assert_eq!(env.json_patches("web").len(), 1);
    assert_eq!(image_now(&env).await, "nginx:1.0");
}
