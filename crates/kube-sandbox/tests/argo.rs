//! The simulated Argo Rollouts controller against kube-rs and the real kubectl: a canary
//! through its steps (setWeight, pause, promote, timed pause), abort and retry, undo the way
//! `kubectl argo rollouts undo` does it, `promote --full` after an undo, `spec.rollbackWindow`
//! (after upstream's `test/e2e/rollback_window_test.go`), a Rollout referencing a Deployment,
//! blue-green, and invalid or foreign Rollouts. The kubectl-argo-rollouts plugin is not installed: the
//! helpers below send exactly what it sends (pkg/kubectl-argo-rollouts/cmd/*).

mod common;

use common::{Env, eventually, kube_client, phase, st, start, wait};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};

const HASH: &str = "rollouts-pod-template-hash";
const REVISION: &str = "rollout.argoproj.io/revision";

fn opts() -> kube_sandbox::SandboxOptions {
    kube_sandbox::SandboxOptions {
        rollout_delay: std::time::Duration::from_millis(100),
        ..kube_sandbox::SandboxOptions::default()
    }
}

fn rollouts(client: &kube::Client) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout"),
        "rollouts",
    );
    Api::namespaced_with(client.clone(), "default", &ar)
}

fn obj(v: Value) -> DynamicObject {
    serde_json::from_value(v).expect("object")
}

fn template(app: &str, image: &str) -> Value {
    json!({"metadata": {"labels": {"app": app}}, "spec": {"containers": [{"name": "web", "image": image}]}})
}

async fn service(client: &kube::Client, name: &str, app: &str) {
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"selector": {"app": app}, "ports": [{"port": 80}]}
    }))
    .expect("service");
    svcs.create(&PostParams::default(), &svc)
        .await
        .expect("service created");
}

async fn replicasets(client: &kube::Client, app: &str) -> Vec<ReplicaSet> {
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let lp = ListParams::default().labels(&format!("app={app},{HASH}"));
    rss.list(&lp).await.expect("list rs").items
}

fn rs_hash(rs: &ReplicaSet) -> String {
    rs.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HASH))
        .cloned()
        .unwrap_or_default()
}

fn ann(rs: &ReplicaSet, key: &str) -> String {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .cloned()
        .unwrap_or_default()
}

async fn rs_with_hash(client: &kube::Client, app: &str, hash: &str) -> ReplicaSet {
    replicasets(client, app)
        .await
        .into_iter()
        .find(|rs| rs_hash(rs) == hash)
        .expect("replicaset with that hash")
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(0)
}

/// `kubectl argo rollouts abort` / `retry rollout`: a merge patch of `status.abort`.
async fn set_abort(api: &Api<DynamicObject>, name: &str, abort: bool) {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"abort": abort}})),
    )
    .await
    .expect("abort patch");
}

/// `kubectl argo rollouts promote` without flags (`getPatches`, default case).
async fn promote(api: &Api<DynamicObject>, name: &str) {
    let ro = serde_json::to_value(api.get(name).await.expect("get")).expect("json");
    if ro["spec"]["paused"] == json!(true) {
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": false}})),
        )
        .await
        .expect("unpause");
    }
    let status_patch = if st(&ro, "pauseConditions")
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        json!({"status": {"pauseConditions": null}})
    } else {
        let steps = ro["spec"]["strategy"]["canary"]["steps"]
            .as_array()
            .map_or(0, Vec::len) as i64;
        let idx = st(&ro, "currentStepIndex").as_i64().unwrap_or(0);
        json!({"status": {"pauseConditions": null, "currentStepIndex": (idx + 1).min(steps)}})
    };
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(status_patch))
        .await
        .expect("promote patch");
}

/// `kubectl argo rollouts undo [--to-revision]` (`RunUndoRollout`): the owned ReplicaSet of
/// the wanted (default: second-highest) revision; skip if the template already equals it;
/// else a JSON patch replacing /spec/template (of the referenced Deployment with a
/// workloadRef) with its template minus the hash label.
async fn undo(client: &kube::Client, name: &str, to_revision: Option<i64>) -> String {
    let api = rollouts(client);
    let ro = serde_json::to_value(api.get(name).await.expect("get")).expect("json");
    let uid = ro["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let labels: Vec<String> = ro["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let all = rss
        .list(&ListParams::default().labels(&labels.join(",")))
        .await
        .expect("list")
        .items;
    let mut owned: Vec<(i64, ReplicaSet)> = all
        .into_iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .map(|rs| (ann(&rs, REVISION).parse().unwrap_or(0), rs))
        .collect();
    owned.sort_by_key(|(r, _)| *r);
    let target = match to_revision {
        Some(r) => owned
            .iter()
            .find(|(v, _)| *v == r)
            .map(|(_, rs)| rs.clone()),
        None => owned.iter().rev().nth(1).map(|(_, rs)| rs.clone()),
    }
    .expect("revision found");
    let mut t = serde_json::to_value(target.spec.template.expect("template")).expect("json");
    if let Some(l) = t["metadata"]["labels"].as_object_mut() {
        l.remove(HASH);
    }
    let mut current = ro["spec"]["template"].clone();
    if let Some(l) = current["metadata"]["labels"].as_object_mut() {
        l.remove(HASH);
    }
    if current == t {
        return "skipped".into();
    }
    let patch: json_patch::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/spec/template", "value": t}]))
            .expect("patch");
    if let Some(dep) = ro["spec"]["workloadRef"]["name"].as_str() {
        let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
        deps.patch(dep, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
            .expect("undo patch");
    } else {
        api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
            .expect("undo patch");
    }
    format!("rollout '{name}' undo")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_steps_abort_retry_promote_and_undo() {
    common::bounded(canary_body()).await;
}

async fn canary_body() {
    let env = start(opts()).await;
    let client = kube_client(&env.sb).await;
    service(&client, "web-stable", "web").await;
    service(&client, "web-canary", "web").await;
    let api = rollouts(&client);
    let ro = obj(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": template("web", "nginx:1.0"),
            "strategy": {"canary": {
                "canaryService": "web-canary", "stableService": "web-stable",
                "abortScaleDownDelaySeconds": 2, "scaleDownDelaySeconds": 1,
                "trafficRouting": {"istio": {"virtualService": {"name": "web", "routes": ["primary"]}}},
                "steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "1s"}}]
            }}
        }
    }));
    api.create(&PostParams::default(), &ro)
        .await
        .expect("created");

    // Initial deployment: the first ReplicaSet is stable at once, steps skipped.
    let ro = wait(&api, "web", "initial Healthy", |r| phase(r) == "Healthy").await;
    let v1 = st(&ro, "currentPodHash")
        .as_str()
        .expect("hash")
        .to_string();
    assert_eq!(st(&ro, "stableRS"), &json!(v1));
    assert_eq!(st(&ro, "currentStepIndex"), &json!(4));
    assert_eq!(ro["metadata"]["annotations"][REVISION], json!("1"));
    assert_eq!(
        st(&ro, "observedGeneration"),
        &json!("1"),
        "a string, as in Argo"
    );
    assert_eq!(st(&ro, "canary")["weights"]["stable"]["weight"], json!(100));
    let rs1 = rs_with_hash(&client, "web", &v1).await;
    assert_eq!(
        rs1.metadata.name.as_deref(),
        Some(format!("web-{v1}").as_str())
    );
    assert_eq!(ann(&rs1, REVISION), "1");
    let owner = &rs1.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.api_version.as_str()),
        ("Rollout", "argoproj.io/v1alpha1")
    );
    assert_eq!(
        (owner.controller, owner.block_owner_deletion),
        (Some(true), Some(true))
    );
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let stable_svc = svcs.get("web-stable").await.expect("svc");
    assert_eq!(
        stable_svc
            .spec
            .and_then(|s| s.selector)
            .and_then(|s| s.get(HASH).cloned()),
        Some(v1.clone())
    );

    // A new image: revision 2, paused at the pause step with 20% to the canary.
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"template": template("web", "nginx:2.0")}})),
    )
    .await
    .expect("image patched");
    let ro = wait(&api, "web", "paused at step 1", |r| phase(r) == "Paused").await;
    let v2 = st(&ro, "currentPodHash")
        .as_str()
        .expect("hash")
        .to_string();
    assert_ne!(v1, v2);
    assert_eq!(
        st(&ro, "stableRS"),
        &json!(v1),
        "mid-update: stableRS != currentPodHash"
    );
    assert_eq!(st(&ro, "currentStepIndex"), &json!(1));
    assert_eq!(st(&ro, "message"), &json!("CanaryPauseStep"));
    assert_eq!(st(&ro, "controllerPause"), &json!(true));
    assert_eq!(
        st(&ro, "pauseConditions")[0]["reason"],
        json!("CanaryPauseStep")
    );
    assert_eq!(st(&ro, "observedGeneration"), &json!("2"));
    let w = &st(&ro, "canary")["weights"];
    assert_eq!(
        (
            w["canary"]["weight"].clone(),
            w["canary"]["podTemplateHash"].clone()
        ),
        (json!(20), json!(v2))
    );
    assert_eq!(
        (
            w["stable"]["weight"].clone(),
            w["stable"]["podTemplateHash"].clone()
        ),
        (json!(80), json!(v1))
    );
    assert_eq!(ro["metadata"]["annotations"][REVISION], json!("2"));
    let rs2 = rs_with_hash(&client, "web", &v2).await;
    assert_eq!((ann(&rs2, REVISION).as_str(), replicas(&rs2)), ("2", 1));
    assert_eq!(
        replicas(&rs_with_hash(&client, "web", &v1).await),
        2,
        "traffic-routed: stable stays full"
    );

    // Abort: Degraded, stable unchanged, the canary keeps its pods until the delay is over.
    set_abort(&api, "web", true).await;
    let ro = wait(&api, "web", "aborted", |r| phase(r) == "Degraded").await;
    assert_eq!(
        st(&ro, "message"),
        &json!("RolloutAborted: Rollout aborted update to revision 2")
    );
    assert_eq!(st(&ro, "stableRS"), &json!(v1));
    assert_eq!(
        st(&ro, "currentPodHash"),
        &json!(v2),
        "the spec still names the new template"
    );
    assert!(st(&ro, "abortedAt").is_string());
    assert!(st(&ro, "pauseConditions").is_null());
    assert_eq!(st(&ro, "canary")["weights"]["canary"]["weight"], json!(0));
    let rs2 = rs_with_hash(&client, "web", &v2).await;
    assert_eq!(replicas(&rs2), 1, "abortScaleDownDelaySeconds not over yet");
    assert!(!ann(&rs2, "scale-down-deadline").is_empty());
    eventually(5, "canary scaled down", || async {
        (replicas(&rs_with_hash(&client, "web", &v2).await) == 0).then_some(())
    })
    .await;

    // Retry: back to step 0, paused again at the pause step; then promote to the end.
    set_abort(&api, "web", false).await;
    wait(&api, "web", "paused again", |r| {
        phase(r) == "Paused" && st(r, "currentStepIndex") == &json!(1) && st(r, "abort").is_null()
    })
    .await;
    promote(&api, "web").await;
    // The weights follow one reconcile after the promotion, as in Argo (traffic routing
    // looks at the stored status).
    let ro = wait(&api, "web", "promoted to Healthy", |r| {
        phase(r) == "Healthy"
            && st(r, "canary")["weights"]["stable"]["podTemplateHash"] == json!(v2)
    })
    .await;
    assert_eq!(st(&ro, "stableRS"), &json!(v2));
    assert_eq!(st(&ro, "currentPodHash"), &json!(v2));
    assert_eq!(
        st(&ro, "canary")["weights"]["stable"],
        json!({"weight": 100, "podTemplateHash": v2, "serviceName": "web-stable"})
    );
    eventually(
        5,
        "old stable scaled down after scaleDownDelaySeconds",
        || async { (replicas(&rs_with_hash(&client, "web", &v1).await) == 0).then_some(()) },
    )
    .await;

    // Undo as the plugin does: revision 1's template comes back, its ReplicaSet is reused.
    assert_eq!(undo(&client, "web", None).await, "rollout 'web' undo");
    let ro = wait(&api, "web", "undo observed", |r| {
        phase(r) == "Paused" && st(r, "currentPodHash") == &json!(v1)
    })
    .await;
    assert_eq!(ro["metadata"]["annotations"][REVISION], json!("3"));
    assert_eq!(
        st(&ro, "stableRS"),
        &json!(v2),
        "an undo after promotion runs the steps again"
    );
    let rs1 = rs_with_hash(&client, "web", &v1).await;
    assert_eq!(ann(&rs1, REVISION), "3");
    assert_eq!(ann(&rs1, "rollout.argoproj.io/revision-history"), "1");
    assert_eq!(
        replicasets(&client, "web").await.len(),
        2,
        "no new ReplicaSet"
    );
    assert_eq!(undo(&client, "web", Some(3)).await, "skipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_canary_replica_counts_abort_and_undo_mid_update() {
    common::bounded(basic_body()).await;
}

async fn basic_body() {
    let env = start(opts()).await;
    let client = kube_client(&env.sb).await;
    let api = rollouts(&client);
    let ro = obj(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "api"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "api"}},
            "template": template("api", "api:1"),
            "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}}
        }
    }));
    api.create(&PostParams::default(), &ro)
        .await
        .expect("created");
    let ro = wait(&api, "api", "Healthy", |r| phase(r) == "Healthy").await;
    let v1 = st(&ro, "currentPodHash")
        .as_str()
        .expect("hash")
        .to_string();
    assert!(
        st(&ro, "canary")["weights"].is_null(),
        "weights only with traffic routing"
    );
    // Converged: the controller writes nothing more.
    let rv = |o: &Value| o["metadata"]["resourceVersion"].clone();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before = env
        .sb
        .get_object("argoproj.io/v1alpha1", "rollouts", Some("default"), "api")
        .expect("ro");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let after = env
        .sb
        .get_object("argoproj.io/v1alpha1", "rollouts", Some("default"), "api")
        .expect("ro");
    assert_eq!(rv(&before), rv(&after), "no writes once converged");

    api.patch(
        "api",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"template": template("api", "api:2")}})),
    )
    .await
    .expect("patched");
    let ro = wait(&api, "api", "paused", |r| phase(r) == "Paused").await;
    let v2 = st(&ro, "currentPodHash")
        .as_str()
        .expect("hash")
        .to_string();
    // 20% of 4 with maxSurge 25%: one canary pod next to four stable ones.
    assert_eq!(replicas(&rs_with_hash(&client, "api", &v2).await), 1);
    assert_eq!(replicas(&rs_with_hash(&client, "api", &v1).await), 4);
    assert_eq!(
        (
            st(&ro, "replicas").clone(),
            st(&ro, "updatedReplicas").clone()
        ),
        (json!(5), json!(1))
    );

    // A basic canary ignores abortScaleDownDelaySeconds: the canary goes at once.
    set_abort(&api, "api", true).await;
    wait(&api, "api", "aborted", |r| phase(r) == "Degraded").await;
    assert_eq!(replicas(&rs_with_hash(&client, "api", &v2).await), 0);

    // Undo mid-update goes back to the stable ReplicaSet: steps skipped, abort cleared.
    undo(&client, "api", None).await;
    let ro = wait(&api, "api", "fast rollback", |r| {
        phase(r) == "Healthy" && st(r, "currentPodHash") == &json!(v1)
    })
    .await;
    assert_eq!(st(&ro, "stableRS"), &json!(v1));
    assert!(st(&ro, "abort").is_null());
    assert_eq!(ro["metadata"]["annotations"][REVISION], json!("3"));
    assert_eq!(ann(&rs_with_hash(&client, "api", &v1).await, REVISION), "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_ref_follows_the_deployment() {
    common::bounded(workload_body()).await;
}

async fn workload_body() {
    let env = start(opts()).await;
    let client = kube_client(&env.sb).await;
    env.ok(&[
        "create",
        "deployment",
        "shop",
        "--image=shop:1",
        "--replicas=0",
    ])
    .await;
    let api = rollouts(&client);
    let ro = obj(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "shop"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "shop"}},
            "workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "shop"},
            "strategy": {"canary": {}}
        }
    }));
    api.create(&PostParams::default(), &ro)
        .await
        .expect("created");
    let ro = wait(&api, "shop", "Healthy", |r| phase(r) == "Healthy").await;
    let v1 = st(&ro, "currentPodHash")
        .as_str()
        .expect("hash")
        .to_string();
    assert_eq!(
        ro["metadata"]["annotations"]["rollout.argoproj.io/workload-generation"],
        json!("1")
    );
    assert_eq!(st(&ro, "workloadObservedGeneration"), &json!("1"));

    // Changing the Deployment's template (with the real kubectl) rolls the Rollout.
    env.ok(&["set", "image", "deployment/shop", "shop=shop:2"])
        .await;
    let ro = wait(&api, "shop", "new revision", |r| {
        phase(r) == "Healthy" && st(r, "currentPodHash") != &json!(v1)
    })
    .await;
    let v2 = st(&ro, "currentPodHash")
        .as_str()
        .expect("hash")
        .to_string();
    assert_eq!(st(&ro, "workloadObservedGeneration"), &json!("2"));
    let rs2 = rs_with_hash(&client, "shop", &v2).await;
    assert_eq!((ann(&rs2, REVISION).as_str(), replicas(&rs2)), ("2", 2));
    let image =
        serde_json::to_value(&rs2.spec.template).expect("json")["spec"]["containers"][0]["image"]
            .clone();
    assert_eq!(image, json!("shop:2"));

    // Undo patches the Deployment; the Rollout reuses revision 1's ReplicaSet.
    undo(&client, "shop", None).await;
    let ro = wait(&api, "shop", "undone", |r| {
        phase(r) == "Healthy" && st(r, "currentPodHash") == &json!(v1)
    })
    .await;
    assert_eq!(ro["metadata"]["annotations"][REVISION], json!("3"));
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let dep = serde_json::to_value(deps.get("shop").await.expect("dep")).expect("json");
    assert_eq!(
        dep["spec"]["template"]["spec"]["containers"][0]["image"],
        json!("shop:1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_switches_the_active_service_after_promotion() {
    common::bounded(blue_green_body()).await;
}

async fn blue_green_body() {
    let env = start(opts()).await;
    let client = kube_client(&env.sb).await;
    service(&client, "bg-active", "bg").await;
    service(&client, "bg-preview", "bg").await;
    let api = rollouts(&client);
    let ro = obj(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "bg"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "bg"}},
            "template": template("bg", "bg:1"),
            "strategy": {"blueGreen": {
                "activeService": "bg-active", "previewService": "bg-preview",
                "autoPromotionEnabled": false, "scaleDownDelaySeconds": 1
            }}
        }
    }));
    api.create(&PostParams::default(), &ro)
        .await
        .expect("created");
    let ro = wait(&api, "bg", "Healthy", |r| phase(r) == "Healthy").await;
    let v1 = st(&ro, "currentPodHash")
        .as_str()
        .expect("hash")
        .to_string();
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let selector = |s: Service| {
        s.spec
            .and_then(|s| s.selector)
            .and_then(|s| s.get(HASH).cloned())
            .unwrap_or_default()
    };
    assert_eq!(selector(svcs.get("bg-active").await.expect("svc")), v1);
    assert_eq!(st(&ro, "blueGreen")["activeSelector"], json!(v1));

    api.patch(
        "bg",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"template": template("bg", "bg:2")}})),
    )
    .await
    .expect("patched");
    let ro = wait(&api, "bg", "paused before promotion", |r| {
        phase(r) == "Paused"
    })
    .await;
    let v2 = st(&ro, "currentPodHash")
        .as_str()
        .expect("hash")
        .to_string();
    assert_eq!(st(&ro, "message"), &json!("BlueGreenPause"));
    assert_eq!(selector(svcs.get("bg-preview").await.expect("svc")), v2);
    assert_eq!(selector(svcs.get("bg-active").await.expect("svc")), v1);

    promote(&api, "bg").await;
    let ro = wait(&api, "bg", "promoted", |r| {
        phase(r) == "Healthy" && st(r, "stableRS") == &json!(v2)
    })
    .await;
    assert_eq!(st(&ro, "blueGreen")["activeSelector"], json!(v2));
    assert_eq!(selector(svcs.get("bg-active").await.expect("svc")), v2);
    eventually(
        5,
        "old ReplicaSet scaled down after scaleDownDelaySeconds",
        || async { (replicas(&rs_with_hash(&client, "bg", &v1).await) == 0).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_foreign_and_kubectl_abort() {
    common::bounded(misc_body()).await;
}

async fn misc_body() {
    let env: Env = start(opts()).await;
    let client = kube_client(&env.sb).await;
    let api = rollouts(&client);
    // No selector: InvalidSpec, phase Degraded, nothing created.
    let bad = obj(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "bad"},
        "spec": {"replicas": 1, "template": template("bad", "bad:1"), "strategy": {"canary": {}}}
    }));
    api.create(&PostParams::default(), &bad)
        .await
        .expect("created");
    let ro = wait(&api, "bad", "InvalidSpec", |r| phase(r) == "Degraded").await;
    assert_eq!(
        st(&ro, "message"),
        &json!(
            "InvalidSpec: The Rollout \"bad\" is invalid: spec.selector: Required value: Rollout has missing field '.spec.selector'"
        )
    );
    assert!(replicasets(&client, "bad").await.is_empty());

    // A Rollout for another controller instance is left alone.
    let foreign = obj(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "other", "labels": {"argo-rollouts.argoproj.io/controller-instance-id": "x"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "other"}}, "template": template("other", "o:1"), "strategy": {"canary": {}}}
    }));
    api.create(&PostParams::default(), &foreign)
        .await
        .expect("created");

    // The real kubectl sees the Rollout and can abort it through the status subresource.
    let ok = obj(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "ok"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "ok"}}, "template": template("ok", "ok:1"),
                 "strategy": {"canary": {"steps": [{"pause": {}}]}}}
    }));
    api.create(&PostParams::default(), &ok)
        .await
        .expect("created");
    let ro = wait(&api, "ok", "Healthy", |r| phase(r) == "Healthy").await;
    let v1 = st(&ro, "currentPodHash")
        .as_str()
        .expect("hash")
        .to_string();
    // Abort with nothing in progress: current argo-rollouts drops it ("Removing abort
    // condition from fully promoted rollout"); the stable ReplicaSet keeps its pods.
    set_abort(&api, "ok", true).await;
    let ro = wait(&api, "ok", "abort dropped", |r| st(r, "abort").is_null()).await;
    assert_eq!(phase(&ro), "Healthy");
    assert_eq!(replicas(&rs_with_hash(&client, "ok", &v1).await), 1);
    env.ok(&[
        "patch",
        "rollout",
        "ok",
        "--type=merge",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"ok:2"}]}}}}"#,
    ])
    .await;
    wait(&api, "ok", "Paused", |r| phase(r) == "Paused").await;
    env.ok(&[
        "patch",
        "rollout",
        "ok",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"abort":true}}"#,
    ])
    .await;
    let out = env
        .ok(&[
            "get",
            "rollout",
            "ok",
            "-o",
            "jsonpath={.status.phase}/{.status.message}",
        ])
        .await;
    assert!(
        out == "Paused/CanaryPauseStep" || out.starts_with("Degraded/RolloutAborted"),
        "{out}"
    );
    wait(&api, "ok", "aborted", |r| phase(r) == "Degraded").await;
    let table = env.ok(&["get", "rollouts"]).await;
    assert!(table.contains("ok") && table.contains("DESIRED"), "{table}");

    let other = serde_json::to_value(api.get("other").await.expect("get")).expect("json");
    assert!(other.get("status").is_none(), "not ours: {other}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_rollouts_without_argo() {
    common::bounded(async {
        let env = start(kube_sandbox::SandboxOptions {
            argo_and_istio: false,
            ..opts()
        })
        .await;
        let client = kube_client(&env.sb).await;
        let err = rollouts(&client)
            .list(&ListParams::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, kube::Error::Api(ref s) if s.code == 404),
            "{err:?}"
        );
        let d = kube::Discovery::new(client)
            .run_aggregated()
            .await
            .expect("discovery");
        assert!(d.has_group("apps") && !d.has_group("argoproj.io"));
    })
    .await;
}

/// `kubectl argo rollouts promote --full` (`getPatches`, `full`): `{"spec":{"paused":false}}`
/// on the Rollout when `spec.paused`, `{"status":{"promoteFull":true}}` on its status when an
/// update is in progress (`currentPodHash != stableRS`), the status one first.
async fn promote_full(api: &Api<DynamicObject>, name: &str) {
    let ro = serde_json::to_value(api.get(name).await.expect("get")).expect("json");
    if st(&ro, "currentPodHash") != st(&ro, "stableRS") {
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"promoteFull": true}})),
        )
        .await
        .expect("promoteFull patch");
    }
    if ro["spec"]["paused"] == json!(true) {
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": false}})),
        )
        .await
        .expect("unpause");
    }
}

/// Messages of the Rollout's Events with this reason.
async fn events(client: &kube::Client, name: &str, reason: &str) -> Vec<String> {
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    api.list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.message)
        .collect()
}

/// A canary Rollout `name` (`setWeight: 50`, `pause: {}`, 2 replicas, no traffic routing) at
/// `images[0]`, then each further image rolled out and fully promoted; one second apart, as
/// creation times have one-second resolution. Returns the pod hashes in order.
async fn promoted_revisions(
    api: &Api<DynamicObject>,
    name: &str,
    window: Option<i64>,
    images: &[&str],
) -> Vec<String> {
    let mut spec = json!({
        "replicas": 2,
        "selector": {"matchLabels": {"app": name}},
        "template": template(name, images[0]),
        "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}
    });
    if let Some(n) = window {
        spec["rollbackWindow"] = json!({"revisions": n});
    }
    let ro = obj(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": name}, "spec": spec
    }));
    api.create(&PostParams::default(), &ro)
        .await
        .expect("created");
    let mut hashes = Vec::new();
    for (i, image) in images.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
            api.patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"template": template(name, image)}})),
            )
            .await
            .expect("image patched");
            wait(api, name, "paused at the pause step", |r| {
                phase(r) == "Paused" && st(r, "currentPodHash") != st(r, "stableRS")
            })
            .await;
            promote_full(api, name).await;
        }
        let ro = wait(api, name, "promoted", |r| {
            phase(r) == "Healthy"
                && st(r, "stableRS") == st(r, "currentPodHash")
                && hashes.iter().all(|h| st(r, "stableRS") != &json!(h))
        })
        .await;
        hashes.push(st(&ro, "stableRS").as_str().expect("hash").to_string());
    }
    hashes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_full_after_an_undo_makes_the_old_revision_stable_without_steps() {
    common::bounded(promote_full_body()).await;
}

async fn promote_full_body() {
    let env = start(opts()).await;
    let client = kube_client(&env.sb).await;
    let api = rollouts(&client);
    let h = promoted_revisions(&api, "full", None, &["full:1", "full:2"]).await;
    let completed = events(&client, "full", "RolloutCompleted").await;
    assert!(
        completed
            .iter()
            .any(|m| m.ends_with("Full promotion requested")),
        "{completed:?}"
    );

    // Undo after promotion: an ordinary update, paused at the pause step, the bad one stable.
    undo(&client, "full", None).await;
    let ro = wait(&api, "full", "undo paused at the pause step", |r| {
        phase(r) == "Paused" && st(r, "currentPodHash") == &json!(h[0])
    })
    .await;
    assert_eq!(st(&ro, "stableRS"), &json!(h[1]));
    assert_eq!(st(&ro, "currentStepIndex"), &json!(1));
    assert_eq!(
        replicas(&rs_with_hash(&client, "full", &h[0]).await),
        1,
        "the good revision is a 50% canary"
    );

    // `kubectl argo rollouts pause` on top, then `promote --full`: both patches, and the
    // controller skips the remaining steps, clears the pause and promotes.
    api.patch(
        "full",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"paused": true}})),
    )
    .await
    .expect("paused");
    wait(&api, "full", "manually paused", |r| {
        phase(r) == "Paused" && st(r, "message") == &json!("manually paused")
    })
    .await;
    promote_full(&api, "full").await;
    let ro = wait(&api, "full", "fully promoted", |r| {
        phase(r) == "Healthy" && st(r, "stableRS") == &json!(h[0])
    })
    .await;
    assert_eq!(st(&ro, "currentPodHash"), &json!(h[0]));
    assert_eq!(st(&ro, "currentStepIndex"), &json!(2));
    assert!(st(&ro, "promoteFull").is_null(), "cleared by promoteStable");
    assert!(st(&ro, "pauseConditions").is_null());
    assert_ne!(ro["spec"]["paused"], json!(true));
    assert_eq!(replicas(&rs_with_hash(&client, "full", &h[0]).await), 2);
    eventually(5, "the bad revision scaled down", || async {
        (replicas(&rs_with_hash(&client, "full", &h[1]).await) == 0).then_some(())
    })
    .await;

    // promoteFull on a Rollout with nothing in progress changes nothing and is dropped.
    api.patch_status(
        "full",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"promoteFull": true}})),
    )
    .await
    .expect("promoteFull");
    let ro = wait(&api, "full", "promoteFull dropped", |r| {
        st(r, "promoteFull").is_null()
    })
    .await;
    assert_eq!((st(&ro, "stableRS"), phase(&ro)), (&json!(h[0]), "Healthy"));
}

/// argo-rollouts `test/e2e/rollback_window_test.go` with `rollbackWindow.revisions: 2`
/// (pause steps instead of its analysis steps): back from revision 4 to 2 is within the window
/// (one ReplicaSet between) and is promoted without steps; back from 5 to 2 is not (two
/// between) and runs them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_within_the_window_skips_the_steps_and_one_outside_does_not() {
    common::bounded(window_body()).await;
}

async fn window_body() {
    let env = start(opts()).await;
    let client = kube_client(&env.sb).await;
    let api = rollouts(&client);
    let h = promoted_revisions(&api, "win", Some(2), &["w:1", "w:2", "w:3", "w:4"]).await;
    assert_eq!(undo(&client, "win", Some(2)).await, "rollout 'win' undo");
    let ro = wait(&api, "win", "revision 2 promoted without steps", |r| {
        phase(r) == "Healthy" && st(r, "stableRS") == &json!(h[1])
    })
    .await;
    assert_eq!(st(&ro, "currentStepIndex"), &json!(2));
    let completed = events(&client, "win", "RolloutCompleted").await;
    assert!(
        completed
            .iter()
            .any(|m| m.ends_with("Rollback within window")),
        "{completed:?}"
    );

    let env = start(opts()).await;
    let client = kube_client(&env.sb).await;
    let api = rollouts(&client);
    let h = promoted_revisions(&api, "win", Some(2), &["w:1", "w:2", "w:3", "w:4", "w:5"]).await;
    undo(&client, "win", Some(2)).await;
    let ro = wait(&api, "win", "revision 2 paused at the pause step", |r| {
        phase(r) == "Paused" && st(r, "currentPodHash") == &json!(h[1])
    })
    .await;
    assert_eq!(st(&ro, "stableRS"), &json!(h[4]), "outside the window");
    assert_eq!(st(&ro, "currentStepIndex"), &json!(1));
}
