//! Traffic switches end to end against the sandbox: a blue/green Service switched to green is
//! switched back to blue; an Istio canary at 90/10 goes back to 100/0 with every other field
//! unchanged; without the Argo and Istio CRDs the daemon still works.

mod common;

use std::time::Duration;

use common::*;
use jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube_sandbox::SandboxOptions;
use rollbackd::core::traffic::TrafficKind;
use serde_json::{Value, json};

fn api(env: &Env, resource: &kube::core::ApiResource) -> Api<DynamicObject> {
    Api::namespaced_with(env.client.clone(), "default", resource)
}

/// Waits until the daemon has noted (and persisted) `n` changes of the object.
async fn changes_noted(
    running: &rollbackd::daemon::Running,
    kind: TrafficKind,
    name: &str,
    n: usize,
) {
    let store = running.state.pipeline.store.clone();
    let name = name.to_string();
    wait_until(
        "the traffic change persisted",
        Duration::from_secs(10),
        || {
            let (store, name) = (store.clone(), name.clone());
            async move {
                store
                    .traffic_history(kind, "default", &name, Timestamp::UNIX_EPOCH)
                    .await
                    .is_ok_and(|h| h.len() >= n)
            }
        },
    )
    .await;
}

fn json_patches_on(env: &Env, path: &str) -> usize {
    env.sandbox
        .requests()
        .iter()
        .filter(|r| {
            r.method == "PATCH"
                && r.path_only() == path
                && r.content_type.as_deref() == Some("application/json-patch+json")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blue_green_switch_is_switched_back() {
    let env = sandbox_env().await;
    for color in ["blue", "green"] {
        let mut d = scenario::deployment_manifest(
            "default",
            &format!("web-{color}"),
            &format!("web:{color}"),
            2,
        );
        for path in [
            "/spec/selector/matchLabels",
            "/spec/template/metadata/labels",
        ] {
            let labels = d.pointer_mut(path).expect("labels");
            labels["app"] = json!("web");
            labels["version"] = json!(color);
        }
        scenario::create(&env.api, d).await.expect("deployment");
    }
    let services = api(&env, &rollbackd::k8s::services());
    create_object(&services, json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default", "annotations": {"rollbackd.io/track-selector": "true"}},
        "spec": {"selector": {"app": "web", "version": "blue"}, "ports": [{"port": 80}]}
    }))
    .await;
    let running = env.daemon("").await;
    services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"selector": {"version": "green"}}})),
        )
        .await
        .expect("switched to green");
    changes_noted(&running, TrafficKind::Service, "web", 1).await;

    let alert = [
        ("alertname", "HighErrorRate"),
        ("namespace", "default"),
        ("service", "web"),
    ];
    let (status, _) = post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(&alert, Timestamp::now()),
    )
    .await;
    assert_eq!(status, 200);
    let incident = settled_incident(&running).await;
    assert_eq!(incident.outcome, "rolled-back", "{}", incident.reason);
    let svc = services.get("web").await.expect("service");
    assert_eq!(
        svc.data["spec"]["selector"],
        json!({"app": "web", "version": "blue"})
    );
    assert_eq!(
        json_patches_on(&env, "/api/v1/namespaces/default/services/web"),
        1
    );
    assert!(
        env.json_patches("web-green").is_empty(),
        "no Deployment is undone under a Service switch"
    );

    // The incident shows both switches: the one blamed and the one back.
    let detail = running
        .state
        .pipeline
        .store
        .incident(incident.id)
        .await
        .expect("read")
        .expect("incident");
    let decision = detail
        .timeline
        .iter()
        .find(|e| e.kind == "decision")
        .expect("decision");
    assert!(
        decision
            .message
            .contains(r#"from {"app":"web","version":"blue"} to {"app":"web","version":"green"}"#),
        "{}",
        decision.message
    );
    let result = detail
        .timeline
        .iter()
        .find(|e| e.kind == "result")
        .expect("result");
    assert!(
        result.message.contains("switched service default/web back"),
        "{}",
        result.message
    );
    changes_noted(&running, TrafficKind::Service, "web", 2).await;

    // Another alert now must not switch back to green: that would undo rollbackd's own revert.
    let other = [
        ("alertname", "HighLatencyP95"),
        ("namespace", "default"),
        ("service", "web"),
    ];
    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(&other, Timestamp::now()),
    )
    .await;
    let store = running.state.pipeline.store.clone();
    wait_until("the second alert decided", Duration::from_secs(10), || {
        let store = store.clone();
        async move {
            store.undecided_alerts().await.is_ok_and(|u| u.is_empty())
                && store.alert_count().await.unwrap_or(0) == 2
        }
    })
    .await;
    assert_eq!(
        json_patches_on(&env, "/api/v1/namespaces/default/services/web"),
        1
    );
    let list = store
        .list_incidents(&Default::default())
        .await
        .expect("list");
    assert!(
        list.iter().any(|i| i.outcome == "would-cascade"),
        "{list:#?}"
    );
}

fn virtual_service(stable: i64, canary: i64) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
        "metadata": {"name": "web", "namespace": "default", "annotations": {"rollbackd.io/track-weights": "true"}},
        "spec": {
            "hosts": ["web.default.svc.cluster.local"],
            "gateways": ["mesh"],
            "http": [
                {"name": "testers", "match": [{"headers": {"x-canary": {"exact": "yes"}}}],
                 "route": [{"destination": {"host": "web", "subset": "canary"}}]},
                {"name": "primary", "retries": {"attempts": 3},
                 "route": [
                    {"destination": {"host": "web", "subset": "stable"}, "weight": stable},
                    {"destination": {"host": "web", "subset": "canary"}, "weight": canary}
                 ]}
            ]
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_istio_canary_goes_back_to_all_stable() {
    let env = sandbox_env().await;
    let vs_api = api(&env, &rollbackd::k8s::virtual_services("v1beta1"));
    create_object(&vs_api, virtual_service(100, 0)).await;
    let running = env.daemon("").await;
    let shift = json!([
        {"op": "replace", "path": "/spec/http/1/route/0/weight", "value": 90},
        {"op": "replace", "path": "/spec/http/1/route/1/weight", "value": 10}
    ]);
    let shift: json_patch::Patch = serde_json::from_value(shift).expect("patch");
    vs_api
        .patch("web", &PatchParams::default(), &Patch::Json::<()>(shift))
        .await
        .expect("90/10");
    changes_noted(&running, TrafficKind::VirtualService, "web", 1).await;

    let alert = [
        ("alertname", "HighErrorRate"),
        ("namespace", "default"),
        ("service", "web"),
    ];
    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(&alert, Timestamp::now()),
    )
    .await;
    let incident = settled_incident(&running).await;
    assert_eq!(incident.outcome, "rolled-back", "{}", incident.reason);
    let vs = vs_api.get("web").await.expect("vs");
    assert_eq!(
        vs.data["spec"],
        virtual_service(100, 0)["spec"],
        "only the two weights change"
    );
    assert_eq!(
        json_patches_on(
            &env,
            "/apis/networking.istio.io/v1beta1/namespaces/default/virtualservices/web"
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_argo_and_istio_crds_the_daemon_still_rolls_back_deployments() {
    let env = sandbox_env_with(SandboxOptions {
        argo_and_istio: false,
        ..SandboxOptions::default()
    })
    .await;
    env.three_rollouts("web").await;
    let running = env.daemon("").await;
    let web = [
        ("alertname", "HighErrorRate"),
        ("namespace", "default"),
        ("deployment", "web"),
    ];
    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(&web, Timestamp::now()),
    )
    .await;
    let incident = settled_incident(&running).await;
    assert_eq!(incident.outcome, "rolled-back", "{}", incident.reason);
    assert!(
        !env.sandbox
            .requests()
            .iter()
            .any(|r| r.path_only().contains("/rollouts")
                || r.path_only().contains("/virtualservices")),
        "nothing is watched that the cluster does not serve"
    );
}
