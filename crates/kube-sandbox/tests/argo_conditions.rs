//! The simulated Argo Rollouts controller's Services on abort, its first Event and its
//! progress deadlines, against kube-rs and the real kubectl:
//! - an aborted traffic-routed canary points its canary Service back at the stable
//!   ReplicaSet and stays there (argo-rollouts' `TestCanaryScaleDownOnAbort`);
//! - `RolloutAddedToInformer` is a Rollout's first Event, once, `RolloutDeleted` its last
//!   (the informer handlers in `rollout/controller.go`);
//! - pods that never become ready (`SandboxOptions::unready_images`) stall a canary or a
//!   blue-green update until `spec.progressDeadlineSeconds`: `ProgressDeadlineExceeded` and
//!   phase Degraded, or with `spec.progressDeadlineAbort` an abort (`rollout/sync.go`,
//!   `calculateRolloutConditions`, `evaluateProgressDeadlineAbort`).
//!
//! The kubectl-argo-rollouts plugin is not installed: abort and promote are the patches it sends.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, kube_client, phase, st, start, wait};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Service};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};

const HASH: &str = "rollouts-pod-template-hash";
const BROKEN: &str = "nginx:does-not-start";

fn opts() -> kube_sandbox::SandboxOptions {
    kube_sandbox::SandboxOptions {
        rollout_delay: Duration::from_millis(100),
        unready_images: vec![BROKEN.to_string()],
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

fn template(app: &str, image: &str) -> Value {
    json!({"metadata": {"labels": {"app": app}}, "spec": {"containers": [{"name": "app", "image": image}]}})
}

async fn create(api: &Api<DynamicObject>, name: &str, spec: Value) {
    let ro = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": name}, "spec": spec
    });
    api.create(
        &PostParams::default(),
        &serde_json::from_value(ro).expect("rollout"),
    )
    .await
    .expect("rollout created");
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

/// The `rollouts-pod-template-hash` a Service selects.
async fn selects(client: &kube::Client, name: &str) -> String {
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc = svcs.get(name).await.expect("service");
    svc.spec
        .and_then(|s| s.selector)
        .and_then(|s| s.get(HASH).cloned())
        .unwrap_or_default()
}

async fn set_image(api: &Api<DynamicObject>, name: &str, app: &str, image: &str) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"template": template(app, image)}})),
    )
    .await
    .expect("image patched");
}

/// `kubectl argo rollouts abort` / `retry rollout`.
async fn set_abort(api: &Api<DynamicObject>, name: &str, abort: bool) {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"abort": abort}})),
    )
    .await
    .expect("abort patch");
}

fn condition<'a>(ro: &'a Value, ty: &str) -> &'a Value {
    st(ro, "conditions")
        .as_array()
        .and_then(|a| a.iter().find(|c| c["type"] == json!(ty)))
        .unwrap_or(&Value::Null)
}

fn hash(ro: &Value) -> String {
    st(ro, "currentPodHash")
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn rs_replicas(client: &kube::Client, app: &str, hash: &str) -> i32 {
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    rss.get(&format!("{app}-{hash}"))
        .await
        .expect("replicaset")
        .spec
        .replicas
        .unwrap_or(0)
}

/// The Events about `name`, oldest first, as (type, reason, message).
async fn events(client: &kube::Client, name: &str) -> Vec<(String, String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    let mut evs: Vec<Event> = api
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .collect();
    evs.sort_by_key(|e| {
        e.metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
    });
    evs.into_iter()
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default(),
            )
        })
        .collect()
}

fn count(evs: &[(String, String, String)], reason: &str) -> usize {
    evs.iter().filter(|(_, r, _)| r == reason).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_traffic_routed_canary_sends_its_canary_service_back_to_stable() {
    common::bounded(abort_services_body()).await;
}

async fn abort_services_body() {
    let env = start(opts()).await;
    let client = kube_client(&env.sb).await;
    service(&client, "web-stable", "web").await;
    service(&client, "web-canary", "web").await;
    let api = rollouts(&client);
    // As upstream's functional/canary-scaledownonabort.yaml, but the default 30 s
    // abortScaleDownDelaySeconds: the canary keeps an available pod all through the test.
    create(
        &api,
        "web",
        json!({
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": template("web", "nginx:1.0"),
            "strategy": {"canary": {
                "canaryService": "web-canary", "stableService": "web-stable",
                "trafficRouting": {"istio": {"virtualService": {"name": "web", "routes": ["primary"]}}},
                "steps": [{"setCanaryScale": {"replicas": 1}}, {"setWeight": 20}, {"pause": {}}]
            }}
        }),
    )
    .await;
    let v1 = hash(&wait(&api, "web", "Healthy", |r| phase(r) == "Healthy").await);
    set_image(&api, "web", "web", "nginx:2.0").await;
    let ro = wait(&api, "web", "paused at the pause step", |r| {
        phase(r) == "Paused"
    })
    .await;
    let v2 = hash(&ro);
    assert_eq!(selects(&client, "web-canary").await, v2);
    assert_eq!(selects(&client, "web-stable").await, v1);

    set_abort(&api, "web", true).await;
    let ro = wait(&api, "web", "aborted, canary Service back on stable", |r| {
        phase(r) == "Degraded" && st(r, "canary")["weights"]["canary"]["weight"] == json!(0)
    })
    .await;
    eventually(5, "the canary Service selects stable", || async {
        (selects(&client, "web-canary").await == v1).then_some(())
    })
    .await;
    assert_eq!(selects(&client, "web-stable").await, v1, "stable unchanged");
    assert_eq!(
        st(&ro, "canary")["weights"],
        json!({
            "canary": {"weight": 0, "podTemplateHash": v2, "serviceName": "web-canary"},
            "stable": {"weight": 100, "podTemplateHash": v1, "serviceName": "web-stable"}
        }),
        "the weights still name the canary's hash, at 0"
    );
    assert_eq!(
        rs_replicas(&client, "web", &v2).await,
        1,
        "the canary keeps its pod for abortScaleDownDelaySeconds"
    );
    // It stays there: upstream flaps between the two hashes here (argo-rollouts#3078).
    let switches = count(&events(&client, "web").await, "SwitchService");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(selects(&client, "web-canary").await, v1);
    assert_eq!(
        count(&events(&client, "web").await, "SwitchService"),
        switches,
        "no flapping"
    );

    // Retry: the canary Service follows the canary again (it still has an available pod).
    set_abort(&api, "web", false).await;
    wait(&api, "web", "paused again", |r| {
        phase(r) == "Paused" && st(r, "abort").is_null()
    })
    .await;
    eventually(5, "the canary Service selects the canary", || async {
        (selects(&client, "web-canary").await == v2).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_event_of_a_rollout_is_rollout_added_to_informer() {
    common::bounded(added_body()).await;
}

async fn added_body() {
    let env = start(opts()).await;
    let client = kube_client(&env.sb).await;
    let api = rollouts(&client);
    let spec = json!({
        "replicas": 1,
        "selector": {"matchLabels": {"app": "web"}},
        "template": template("web", "nginx:1.0"),
        "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "1s"}}]}}
    });
    create(&api, "web", spec.clone()).await;
    wait(&api, "web", "Healthy", |r| phase(r) == "Healthy").await;
    set_image(&api, "web", "web", "nginx:2.0").await;
    wait(&api, "web", "Healthy at 2.0", |r| {
        phase(r) == "Healthy"
            && st(r, "stableRS") == st(r, "currentPodHash")
            && r["metadata"]["annotations"]["rollout.argoproj.io/revision"] == json!("2")
    })
    .await;
    let evs = events(&client, "web").await;
    assert_eq!(
        evs[0],
        (
            "Normal".to_string(),
            "RolloutAddedToInformer".to_string(),
            "Rollout resource added to informer: default/web".to_string()
        ),
        "first of {evs:?}"
    );
    assert_eq!(count(&evs, "RolloutAddedToInformer"), 1, "once: {evs:?}");
    let describe = env.ok(&["describe", "rollout", "web"]).await;
    assert!(
        describe.contains("RolloutAddedToInformer")
            && describe.contains("Rollout resource added to informer: default/web"),
        "kubectl describe lists it:\n{describe}"
    );

    // A Rollout kept out of the informer by the instance-id label gets it when the label goes.
    let mut labelled = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "other", "labels": {"argo-rollouts.argoproj.io/controller-instance-id": "elsewhere"}},
        "spec": spec
    });
    labelled["spec"]["selector"]["matchLabels"]["app"] = json!("other");
    labelled["spec"]["template"] = template("other", "nginx:1.0");
    api.create(
        &PostParams::default(),
        &serde_json::from_value(labelled).expect("rollout"),
    )
    .await
    .expect("created");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(events(&client, "other").await.is_empty());
    api.patch(
        "other",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"argo-rollouts.argoproj.io/controller-instance-id": null}}})),
    )
    .await
    .expect("unlabelled");
    wait(&api, "other", "Healthy", |r| phase(r) == "Healthy").await;
    let evs = events(&client, "other").await;
    assert_eq!(evs[0].1, "RolloutAddedToInformer", "{evs:?}");
    assert_eq!(
        evs[0].2,
        "Rollout resource added to informer: default/other"
    );
    assert_eq!(count(&evs, "RolloutAddedToInformer"), 1);

    // Its last one, when it leaves the informer: `RolloutDeleted`, name before namespace.
    env.ok(&["delete", "rollout", "other"]).await;
    let evs = eventually(5, "RolloutDeleted", || async {
        let evs = events(&client, "other").await;
        (count(&evs, "RolloutDeleted") == 1).then_some(evs)
    })
    .await;
    let last = evs.last().expect("events");
    assert_eq!(
        (last.0.as_str(), last.2.as_str()),
        ("Normal", "Rollout other/default is deleted.")
    );
}

/// Wait for the `Progressing` condition to carry `reason`; returns the Rollout and how long
/// it took from `since`.
async fn wait_progressing(
    api: &Api<DynamicObject>,
    name: &str,
    reason: &str,
    since: Instant,
) -> (Value, Duration) {
    let ro = wait(api, name, reason, |r| {
        phase(r) == "Degraded" && condition(r, "Progressing")["reason"] == json!(reason)
    })
    .await;
    (ro, since.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_canary_exceeds_its_progress_deadline() {
    common::bounded(canary_deadline_body()).await;
}

async fn canary_deadline_body() {
    let env = start(opts()).await;
    let client = kube_client(&env.sb).await;
    let api = rollouts(&client);
    create(
        &api,
        "web",
        json!({
            "replicas": 4,
            "progressDeadlineSeconds": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": template("web", "nginx:1.0"),
            "strategy": {"canary": {"steps": [{"setWeight": 25}, {"pause": {}}]}}
        }),
    )
    .await;
    let v1 = hash(&wait(&api, "web", "Healthy", |r| phase(r) == "Healthy").await);

    // Waiting at a pause step is not a lack of progress.
    set_image(&api, "web", "web", "nginx:2.0").await;
    let v2 = hash(&wait(&api, "web", "paused", |r| phase(r) == "Paused").await);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let ro = wait(&api, "web", "still paused", |_| true).await;
    assert_eq!(phase(&ro), "Paused", "a pause step never times out");

    // Pods that never become ready: the canary stalls at its setWeight step.
    let since = Instant::now();
    set_image(&api, "web", "web", BROKEN).await;
    let ro = wait(&api, "web", "stalled on the new ReplicaSet", |r| {
        ![json!(v1), json!(v2)].contains(st(r, "currentPodHash"))
            && st(r, "updatedReplicas") == &json!(1)
            && phase(r) == "Progressing"
    })
    .await;
    assert_eq!(
        condition(&ro, "Progressing")["reason"],
        json!("ReplicaSetUpdated")
    );
    let v3 = hash(&ro);
    let (ro, took) = wait_progressing(&api, "web", "ProgressDeadlineExceeded", since).await;
    assert!(
        took >= Duration::from_secs(1),
        "not before the deadline: {took:?}"
    );
    let msg = format!("ReplicaSet \"web-{v3}\" has timed out progressing.");
    let cond = condition(&ro, "Progressing");
    assert_eq!(
        (&cond["status"], &cond["message"]),
        (&json!("False"), &json!(msg))
    );
    assert_eq!(
        st(&ro, "message"),
        &json!(format!("ProgressDeadlineExceeded: {msg}"))
    );
    assert!(
        st(&ro, "abort").is_null(),
        "no progressDeadlineAbort: not aborted"
    );
    assert_eq!(st(&ro, "stableRS"), &json!(v1));
    assert_eq!(
        rs_replicas(&client, "web", &v3).await,
        1,
        "the canary stays up"
    );
    assert_eq!(
        rs_replicas(&client, "web", &v1).await,
        3,
        "25% of 4 to the canary: the stable was scaled to 3 once revision 2 was available"
    );
    assert_eq!(rs_replicas(&client, "web", &v2).await, 0);

    // A fixed image makes progress again.
    set_image(&api, "web", "web", "nginx:3.0").await;
    let ro = wait(&api, "web", "paused at the pause step again", |r| {
        phase(r) == "Paused"
    })
    .await;
    assert_ne!(
        condition(&ro, "Progressing")["reason"],
        json!("ProgressDeadlineExceeded")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_canary_with_progress_deadline_abort_is_aborted() {
    common::bounded(canary_abort_body()).await;
}

async fn canary_abort_body() {
    let env = start(opts()).await;
    let client = kube_client(&env.sb).await;
    let api = rollouts(&client);
    create(
        &api,
        "api",
        json!({
            "replicas": 4,
            "progressDeadlineSeconds": 2,
            "progressDeadlineAbort": true,
            "selector": {"matchLabels": {"app": "api"}},
            "template": template("api", "nginx:1.0"),
            "strategy": {"canary": {"steps": [{"setWeight": 25}, {"pause": {}}]}}
        }),
    )
    .await;
    let v1 = hash(&wait(&api, "api", "Healthy", |r| phase(r) == "Healthy").await);
    set_image(&api, "api", "api", BROKEN).await;
    let since = Instant::now();
    let (ro, took) = wait_progressing(&api, "api", "RolloutAborted", since).await;
    assert!(
        took >= Duration::from_secs(1),
        "not before the deadline: {took:?}"
    );
    let v2 = hash(&ro);
    let why = format!("ReplicaSet \"api-{v2}\" has timed out progressing.");
    assert_eq!(st(&ro, "abort"), &json!(true));
    assert!(st(&ro, "abortedAt").is_string());
    assert_eq!(
        st(&ro, "message"),
        &json!(format!(
            "RolloutAborted: Rollout aborted update to revision 2: {why}"
        ))
    );
    assert_eq!(st(&ro, "stableRS"), &json!(v1));
    // A basic canary scales the canary down at once on abort.
    eventually(5, "canary scaled down", || async {
        (rs_replicas(&client, "api", &v2).await == 0).then_some(())
    })
    .await;
    assert_eq!(rs_replicas(&client, "api", &v1).await, 4);
    let evs = events(&client, "api").await;
    let aborted: Vec<_> = evs
        .iter()
        .filter(|(t, r, _)| t == "Warning" && r == "RolloutAborted")
        .map(|(_, _, m)| m.clone())
        .collect();
    assert_eq!(
        aborted,
        vec![
            why.clone(),
            format!("Rollout aborted update to revision 2: {why}")
        ]
    );
    // The message stays as it was on the next reconciles.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ro = wait(&api, "api", "still aborted", |r| phase(r) == "Degraded").await;
    assert_eq!(
        condition(&ro, "Progressing")["message"],
        json!(format!("Rollout aborted update to revision 2: {why}"))
    );
}

fn blue_green(app: &str, abort: bool) -> Value {
    json!({
        "replicas": 2,
        "progressDeadlineSeconds": 2,
        "progressDeadlineAbort": abort,
        "selector": {"matchLabels": {"app": app}},
        "template": template(app, "nginx:1.0"),
        "strategy": {"blueGreen": {
            "activeService": format!("{app}-active"), "previewService": format!("{app}-preview"),
            "autoPromotionEnabled": false, "abortScaleDownDelaySeconds": 1
        }}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_blue_green_exceeds_its_progress_deadline_or_aborts() {
    common::bounded(blue_green_body()).await;
}

async fn blue_green_body() {
    let env = start(opts()).await;
    let client = kube_client(&env.sb).await;
    let api = rollouts(&client);
    for app in ["bg", "bga"] {
        service(&client, &format!("{app}-active"), app).await;
        service(&client, &format!("{app}-preview"), app).await;
        create(&api, app, blue_green(app, app == "bga")).await;
    }
    let mut stable = Vec::new();
    for app in ["bg", "bga"] {
        let ro = wait(&api, app, "Healthy", |r| phase(r) == "Healthy").await;
        stable.push(hash(&ro));
    }
    let since = Instant::now();
    for app in ["bg", "bga"] {
        set_image(&api, app, app, BROKEN).await;
    }

    // Without progressDeadlineAbort: Degraded, the preview stays up, active unchanged.
    let (ro, took) = wait_progressing(&api, "bg", "ProgressDeadlineExceeded", since).await;
    assert!(
        took >= Duration::from_secs(1),
        "not before the deadline: {took:?}"
    );
    let preview = hash(&ro);
    let msg = format!("ReplicaSet \"bg-{preview}\" has timed out progressing.");
    assert_eq!(
        st(&ro, "message"),
        &json!(format!("ProgressDeadlineExceeded: {msg}"))
    );
    assert_eq!(selects(&client, "bg-active").await, stable[0]);
    assert_eq!(selects(&client, "bg-preview").await, preview);
    assert_eq!(rs_replicas(&client, "bg", &preview).await, 2);
    assert!(st(&ro, "abort").is_null());

    // With it: aborted, the preview scaled down after abortScaleDownDelaySeconds.
    let (ro, _) = wait_progressing(&api, "bga", "RolloutAborted", since).await;
    let preview = hash(&ro);
    let why = format!("ReplicaSet \"bga-{preview}\" has timed out progressing.");
    assert_eq!(
        st(&ro, "message"),
        &json!(format!(
            "RolloutAborted: Rollout aborted update to revision 2: {why}"
        ))
    );
    assert_eq!(selects(&client, "bga-active").await, stable[1]);
    eventually(5, "preview scaled down", || async {
        (rs_replicas(&client, "bga", &preview).await == 0).then_some(())
    })
    .await;
    assert_eq!(rs_replicas(&client, "bga", &stable[1]).await, 2);
}
