//! The RBAC rules in deploy/kubernetes against what the daemon really calls. One sandbox, one
//! daemon, and one alert for every kind of revert rollbackd does (a Deployment undo, an Argo
//! Rollout aborted and one undone, a blue/green Service and an Istio canary switched back, an
//! Argo CD Application's self-heal suspended); the sandbox's request log then holds every call
//! the daemon made. Every call must be granted by the shipped ClusterRoles, and every rule
//! they grant must have been used: a rule nobody uses is privilege to remove.

mod common;
mod deploy;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use deploy::{deploy_copy, kustomize, parse_yaml};
use jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use rollbackd::core::traffic::TrafficKind;
use rollbackd::store::IncidentFilter;
use serde_json::{Value, json};

/// (API group, resource[/subresource], verb), as RBAC names them.
type Grant = (String, String, String);

fn granted(docs: &[Value]) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for role in docs.iter().filter(|d| d["kind"] == "ClusterRole") {
        for rule in role["rules"].as_array().expect("rules") {
            let strings = |key: &str| -> Vec<String> {
                rule[key]
                    .as_array()
                    .expect(key)
                    .iter()
                    .map(|v| v.as_str().expect("a string").to_string())
                    .collect()
            };
            for group in strings("apiGroups") {
                for resource in strings("resources") {
                    for verb in strings("verbs") {
                        out.insert((group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
    }
    out
}

/// The RBAC triple of one request, or `None` for discovery and other non-resource paths.
fn grant_of(method: &str, path: &str) -> Option<Grant> {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => (group.to_string(), rest),
        _ => return None,
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] if !rest.is_empty() => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [] => return None,
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub] => (format!("{resource}/{sub}"), true),
        _ => return None,
    };
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (method, named, watch) {
        ("GET", _, true) => "watch",
        ("GET", false, false) => "list",
        ("GET", true, false) => "get",
        ("PATCH", ..) => "patch",
        ("POST", ..) => "create",
        ("PUT", ..) => "update",
        ("DELETE", ..) => "delete",
        _ => return None,
    };
    Some((group, resource, verb.to_string()))
}

/// Every kind of workload and traffic object rollbackd reverts, each freshly rolled out.
async fn setup(env: &Env) {
    // A Deployment, labelled as Argo CD's label tracking does, with an Application whose
    // self-heal would put the bad revision back.
    argo_cd_web(env, true).await;

    // An Argo Rollout paused mid-update (aborted), and one promoted (undone).
    let rollouts = Api::namespaced_with(env.client.clone(), "default", &rollbackd::k8s::rollouts());
    create_object(
        &rollouts,
        rollout_manifest(
            "canary",
            "web:1",
            2,
            json!([{"setWeight": 20}, {"pause": {}}]),
        ),
    )
    .await;
    create_object(
        &rollouts,
        rollout_manifest("promoted", "web:1", 2, json!([])),
    )
    .await;
    wait_rollout(&rollouts, "canary", "healthy at web:1", promoted).await;
    wait_rollout(&rollouts, "promoted", "healthy at web:1", promoted).await;
    set_rollout_image(&rollouts, "canary", "web:2").await;
    set_rollout_image(&rollouts, "promoted", "web:2").await;
    wait_rollout(&rollouts, "canary", "paused at 20%", |s| {
        s["phase"] == "Paused"
    })
    .await;
    wait_rollout(&rollouts, "promoted", "promoted web:2", |s| {
        promoted(s) && s["currentPodHash"].as_str().is_some()
    })
    .await;

    // A blue/green Service and an Istio VirtualService, each tracked by annotation.
    for color in ["blue", "green"] {
        let mut d = scenario::deployment_manifest(
            "default",
            &format!("bg-{color}"),
            &format!("bg:{color}"),
            1,
        );
        for path in [
            "/spec/selector/matchLabels",
            "/spec/template/metadata/labels",
        ] {
            let labels = d.pointer_mut(path).expect("labels");
            labels["app"] = json!("bg");
            labels["version"] = json!(color);
        }
        scenario::create(&env.api, d).await.expect("deployment");
    }
    let services = Api::namespaced_with(env.client.clone(), "default", &rollbackd::k8s::services());
    create_object(&services, json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "bg", "namespace": "default", "annotations": {"rollbackd.io/track-selector": "true"}},
        "spec": {"selector": {"app": "bg", "version": "blue"}, "ports": [{"port": 80}]}
    }))
    .await;
    let vs = Api::namespaced_with(
        env.client.clone(),
        "default",
        &rollbackd::k8s::virtual_services("v1beta1"),
    );
    create_object(&vs, json!({
        "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
        "metadata": {"name": "mesh", "namespace": "default", "annotations": {"rollbackd.io/track-weights": "true"}},
        "spec": {"hosts": ["mesh"], "http": [{"route": [
            {"destination": {"host": "mesh", "subset": "stable"}, "weight": 100},
            {"destination": {"host": "mesh", "subset": "canary"}, "weight": 0}
        ]}]}
    }))
    .await;
}

/// The traffic switches the daemon must see happen (it blames only changes it saw).
async fn switch_traffic(env: &Env) -> Vec<String> {
    let services: Api<DynamicObject> =
        Api::namespaced_with(env.client.clone(), "default", &rollbackd::k8s::services());
    let to_green = json!({"spec": {"selector": {"version": "green"}}});
    services
        .patch("bg", &PatchParams::default(), &Patch::Merge(&to_green))
        .await
        .expect("switched to green");
    let vs: Api<DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        "default",
        &rollbackd::k8s::virtual_services("v1beta1"),
    );
    let shift = json!([
        {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 90},
        {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 10}
    ]);
    let patch: json_patch::Patch = serde_json::from_value(shift.clone()).expect("patch");
    vs.patch("mesh", &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .expect("90/10");
    vec![to_green.to_string(), shift.to_string()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_granted_and_every_grant_is_used() {
    let docs = parse_yaml(&kustomize(deploy_copy().path()));
    let granted = granted(&docs);

    let env = sandbox_env().await;
    setup(&env).await;
    let mark = env.sandbox.requests().len();
    let running = env
        .daemon("[policy]\nbreaker_max_actions = 0\n[gitops]\nmode = \"suspend-and-undo\"\n")
        .await;
    let ours = switch_traffic(&env).await;
    let store = running.state.pipeline.store.clone();
    // The daemon must have seen both switches before it is told about them.
    for (kind, name) in [
        (TrafficKind::Service, "bg"),
        (TrafficKind::VirtualService, "mesh"),
    ] {
        wait_until(
            "the traffic change persisted",
            Duration::from_secs(10),
            || {
                let store = store.clone();
                async move {
                    store
                        .traffic_history(kind, "default", name, Timestamp::UNIX_EPOCH)
                        .await
                        .is_ok_and(|h| !h.is_empty())
                }
            },
        )
        .await;
    }

    let alerts: [&[(&str, &str)]; 5] = [
        &[
            ("alertname", "HighErrorRate"),
            ("namespace", "default"),
            ("deployment", "web"),
        ],
        &[
            ("alertname", "HighErrorRate"),
            ("namespace", "default"),
            ("rollout", "canary"),
        ],
        &[
            ("alertname", "HighErrorRate"),
            ("namespace", "default"),
            ("rollout", "promoted"),
        ],
        &[
            ("alertname", "HighErrorRate"),
            ("namespace", "default"),
            ("service", "bg"),
        ],
        &[
            ("alertname", "HighErrorRate"),
            ("namespace", "default"),
            ("virtualservice", "mesh"),
        ],
    ];
    for labels in alerts {
        let (status, _) = post_alert(
            &running.addr.to_string(),
            &scenario::alertmanager_payload(labels, Timestamp::now()),
        )
        .await;
        assert_eq!(status, 200);
    }
    wait_until("five settled incidents", Duration::from_secs(20), || {
        let store = store.clone();
        async move {
            let list = store
                .list_incidents(&IncidentFilter::default())
                .await
                .unwrap_or_default();
            list.len() == 5 && list.iter().all(|i| i.outcome != rollbackd::store::ACTING)
        }
    })
    .await;
    let list = store
        .list_incidents(&IncidentFilter::default())
        .await
        .expect("list");
    let outcomes: BTreeSet<&str> = list.iter().map(|i| i.outcome.as_str()).collect();
    assert_eq!(
        outcomes,
        BTreeSet::from(["aborted", "gitops-suspended", "rolled-back"]),
        "every revert was carried out: {list:#?}"
    );
    // The same refusal twice on one workload: the second Event is the first's series, patched.
    for _ in 0..2 {
        let labels = [
            ("alertname", "HighLatencyP95"),
            ("namespace", "default"),
            ("deployment", "web"),
        ];
        post_alert(
            &running.addr.to_string(),
            &scenario::alertmanager_payload(&labels, Timestamp::now()),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The Events and annotations are written in the background after each decision.
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.stop().await.expect("daemon stops");

    let daemons: Vec<_> = env.sandbox.requests()[mark..]
        .iter()
        .filter(|r| {
            !ours.iter().any(|body| {
                serde_json::from_str::<Value>(&r.body).ok()
                    == serde_json::from_str::<Value>(body).ok()
            })
        })
        .cloned()
        .collect();
    // Every write carries the query string kubectl would send: `?fieldManager=rollbackd`, not
    // kube-rs's `?&fieldManager=rollbackd` (the abort, the undo, the Service and Application
    // patches, the Event series and the annotation).
    let patches: Vec<&str> = daemons
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.path.as_str())
        .collect();
    assert!(
        patches
            .iter()
            .any(|p| p.ends_with("/status?fieldManager=rollbackd")),
        "an abort on the status subresource was sent: {patches:#?}"
    );
    let stray: Vec<&&str> = patches.iter().filter(|p| p.contains("?&")).collect();
    assert!(stray.is_empty(), "writes with a stray `?&`: {stray:#?}");
    let used: BTreeSet<Grant> = env.sandbox.requests()[mark..]
        .iter()
        .filter(|r| {
            !ours.iter().any(|body| {
                serde_json::from_str::<Value>(&r.body).ok()
                    == serde_json::from_str::<Value>(body).ok()
            })
        })
        .filter_map(|r| grant_of(&r.method, &r.path))
        .collect();
    let not_granted: Vec<&Grant> = used.difference(&granted).collect();
    let unused: Vec<&Grant> = granted.difference(&used).collect();
    assert!(
        not_granted.is_empty(),
        "the daemon calls what RBAC does not grant: {not_granted:?}"
    );
    assert!(
        unused.is_empty(),
        "RBAC grants what the daemon never used: {unused:?}\nused: {used:?}"
    );
}

#[test]
fn requests_map_to_rbac_verbs() {
    let g = |m, p| grant_of(m, p).map(|(g, r, v)| format!("{g}|{r}|{v}"));
    assert_eq!(
        g(
            "GET",
            "/apis/apps/v1/deployments?watch=true&resourceVersion=1"
        )
        .as_deref(),
        Some("apps|deployments|watch")
    );
    assert_eq!(
        g("GET", "/apis/apps/v1/namespaces/default/replicasets").as_deref(),
        Some("apps|replicasets|list")
    );
    assert_eq!(
        g(
            "PATCH",
            "/apis/argoproj.io/v1alpha1/namespaces/d/rollouts/web/status"
        )
        .as_deref(),
        Some("argoproj.io|rollouts/status|patch")
    );
    assert_eq!(
        g("GET", "/api/v1/namespaces").as_deref(),
        Some("|namespaces|list")
    );
    assert_eq!(
        g("GET", "/api/v1/namespaces/default").as_deref(),
        Some("|namespaces|get")
    );
    assert_eq!(
        g("POST", "/apis/events.k8s.io/v1/namespaces/default/events").as_deref(),
        Some("events.k8s.io|events|create")
    );
    assert_eq!(g("GET", "/apis/apps/v1"), None);
    assert_eq!(g("GET", "/version"), None);
}
