//! kube-rs against the sandbox: the same rollout scenario through `Api<Deployment>` and
//! `Api<ReplicaSet>` (get, list, create, JSON / merge / strategic patches, patch_status),
//! `kube::runtime::watcher`, and a custom resource (Argo Rollout) through DynamicObject.

mod common;

use common::{eventually, fast, kube_client, start};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::runtime::watcher;
use serde_json::{Value, json};

async fn rolled_out(api: &Api<Deployment>, name: &str) -> Deployment {
    eventually(10, "rollout", || async {
        let d = api.get(name).await.ok()?;
        let st = d.status.clone()?;
        let want = d.spec.replicas.unwrap_or(1);
        let done = st.observed_generation == d.metadata.generation
            && st.updated_replicas == Some(want)
            && st.replicas == Some(want)
            && st.available_replicas == Some(want);
        done.then_some(d)
    })
    .await
}

fn image(d: &Deployment) -> String {
    d.spec
        .template
        .spec
        .as_ref()
        .map(|p| p.containers[0].image.clone().unwrap_or_default())
        .unwrap_or_default()
}

fn rs_revision(rs: &ReplicaSet) -> String {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("deployment.kubernetes.io/revision"))
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_rollout_scenario_and_watcher() {
    common::bounded(kube_rs_rollout_scenario_and_watcher_body()).await;
}

async fn kube_rs_rollout_scenario_and_watcher_body() {
    let env = start(fast()).await;
    let client = kube_client(&env.sb).await;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");

    // A watcher started before anything exists sees every change.
    let mut events = watcher(deps.clone(), watcher::Config::default()).boxed();
    let seen = tokio::spawn(async move {
        let mut images = Vec::new();
        while let Some(ev) = events.next().await {
            if let Ok(watcher::Event::Apply(d)) = ev {
                let img = image(&d);
                if images.last() != Some(&img) {
                    images.push(img.clone());
                }
                if img == "nginx:3.0" {
                    break;
                }
            }
        }
        images
    });

    let dep: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "nginx", "image": "nginx:1.0"}]}}
        }
    }))
    .unwrap();
    let created = deps.create(&PostParams::default(), &dep).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(
        created.spec.replicas,
        Some(1),
        "defaulted like the real server"
    );
    rolled_out(&deps, "web").await;

    // Strategic merge patch (what kubectl set image sends).
    let smp = json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:2.0"}]}}}});
    deps.patch("web", &PatchParams::default(), &Patch::Strategic(smp))
        .await
        .unwrap();
    rolled_out(&deps, "web").await;
    // Merge patch of an annotation: copied to the ReplicaSet, generation bumped.
    let before = deps.get("web").await.unwrap().metadata.generation.unwrap();
    deps.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"team": "core"}}})),
    )
    .await
    .unwrap();
    let d = rolled_out(&deps, "web").await;
    assert_eq!(d.metadata.generation, Some(before + 1));
    // JSON patch with a passing test op.
    let jp: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/template/spec/containers/0/image", "value": "nginx:2.0"},
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "nginx:3.0"}
    ]))
    .unwrap();
    deps.patch("web", &PatchParams::default(), &Patch::<()>::Json(jp))
        .await
        .unwrap();
    let d = rolled_out(&deps, "web").await;
    assert_eq!(image(&d), "nginx:3.0");
    assert_eq!(
        d.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"],
        "3"
    );

    let images = tokio::time::timeout(std::time::Duration::from_secs(10), seen)
        .await
        .expect("watcher saw 3.0")
        .unwrap();
    assert_eq!(images, ["nginx:1.0", "nginx:2.0", "nginx:3.0"]);

    let list = rss
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    let mut revs: Vec<String> = list.items.iter().map(rs_revision).collect();
    revs.sort();
    assert_eq!(revs, ["1", "2", "3"]);
    let uid = d.metadata.uid.clone().unwrap();
    for rs in &list.items {
        let owner = &rs.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.uid.as_str(), owner.controller),
            (uid.as_str(), Some(true))
        );
    }
    let current = list.items.iter().find(|rs| rs_revision(rs) == "3").unwrap();
    assert_eq!(
        current.metadata.annotations.as_ref().unwrap()["team"],
        "core"
    );
    assert_eq!(current.status.as_ref().unwrap().ready_replicas, Some(1));

    // Label selectors with set operators.
    let n = |sel: &'static str| {
        let rss = rss.clone();
        async move {
            rss.list(&ListParams::default().labels(sel))
                .await
                .unwrap()
                .items
                .len()
        }
    };
    assert_eq!(n("app in (web,other)").await, 3);
    assert_eq!(n("app notin (web)").await, 0);
    assert_eq!(n("pod-template-hash").await, 3);
    assert_eq!(n("!pod-template-hash").await, 0);
    assert_eq!(n("app!=web").await, 0);

    // kubectl sees the very same object kube-rs does.
    let via_kubectl = env.json(&["get", "deployment", "web"]).await;
    let via_kube = serde_json::to_value(deps.get("web").await.unwrap()).unwrap();
    assert_eq!(
        via_kubectl["metadata"]["resourceVersion"],
        via_kube["metadata"]["resourceVersion"]
    );
    assert_eq!(via_kubectl["spec"], via_kube["spec"]);
    assert_eq!(via_kubectl["metadata"]["uid"], via_kube["metadata"]["uid"]);

    // patch_status on a Deployment changes status only: a spec change in it is ignored.
    let st = deps
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 7}, "status": {"collisionCount": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(st.spec.replicas, Some(1));
    assert_eq!(st.status.as_ref().unwrap().collision_count, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_custom_resources_and_missing_crds() {
    common::bounded(kube_rs_custom_resources_and_missing_crds_body()).await;
}

async fn kube_rs_custom_resources_and_missing_crds_body() {
    let env = start(fast()).await;
    let client = kube_client(&env.sb).await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout"),
        "rollouts",
    );
    let ros: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    // Labelled for another controller instance, so the sandbox's Rollout controller (like the
    // real one without --instance-id) leaves its status to this test.
    let ro: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web", "labels": {"argo-rollouts.argoproj.io/controller-instance-id": "elsewhere"}},
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "a", "image": "a:1"}]}}},
        "status": {"phase": "ignored on create"}
    }))
    .unwrap();
    let created = ros.create(&PostParams::default(), &ro).await.unwrap();
    assert!(
        created.data.get("status").is_none(),
        "status is dropped on create with a status subresource"
    );
    // Status only through /status, spec only through the main resource.
    let after = ros
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 9}, "status": {"phase": "Healthy"}})),
        )
        .await
        .unwrap();
    assert_eq!(after.data["status"]["phase"], json!("Healthy"));
    assert_eq!(after.data["spec"]["replicas"], json!(2));
    assert_eq!(after.metadata.generation, Some(1));
    let after = ros
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}, "status": {"phase": "Degraded"}})),
        )
        .await
        .unwrap();
    assert_eq!(after.data["status"]["phase"], json!("Healthy"));
    assert_eq!(after.metadata.generation, Some(2));
    // Custom resources take no strategic merge patch.
    let err = ros
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 415),
        "{err:?}"
    );
    assert_eq!(
        env.sb
            .get_object("argoproj.io/v1alpha1", "rollouts", Some("default"), "web")
            .unwrap()["spec"]["replicas"],
        json!(3)
    );

    // With argo_and_istio off, the group is not served: discovery and requests say 404.
    // Both discovery flavours of kube-rs see the same groups and resources.
    for aggregated in [false, true] {
        let d = kube::Discovery::new(client.clone());
        let d = if aggregated {
            d.run_aggregated().await
        } else {
            d.run().await
        }
        .unwrap();
        for (g, kind) in [
            ("apps", "Deployment"),
            ("argoproj.io", "Rollout"),
            ("networking.istio.io", "VirtualService"),
        ] {
            assert!(d.has_group(g), "aggregated={aggregated}: {g}");
            let group = d.get(g).unwrap();
            let (res, caps) = group.recommended_kind(kind).unwrap();
            assert!(caps.supports_operation(kube::discovery::verbs::WATCH));
            if kind == "VirtualService" {
                assert_eq!(res.version, "v1", "preferred version");
            }
            if kind != "VirtualService" {
                assert!(
                    caps.subresources
                        .iter()
                        .any(|(r, _)| r.plural.ends_with("status") || r.plural == "status"),
                    "{kind} has /status: {:?}",
                    caps.subresources
                );
            }
        }
        let core = d.get("").unwrap();
        let (ns, caps) = core.recommended_kind("Namespace").unwrap();
        assert_eq!(
            (ns.plural.as_str(), caps.scope.clone()),
            ("namespaces", kube::discovery::Scope::Cluster)
        );
    }

    let bare = start(kube_sandbox::SandboxOptions {
        argo_and_istio: false,
        ..fast()
    })
    .await;
    let client = kube_client(&bare.sb).await;
    for aggregated in [false, true] {
        let d = kube::Discovery::new(client.clone());
        let d = if aggregated {
            d.run_aggregated().await
        } else {
            d.run().await
        }
        .unwrap();
        assert!(
            d.has_group("apps")
                && !d.has_group("argoproj.io")
                && !d.has_group("networking.istio.io")
        );
    }
    let ros: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let err = ros.list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404),
        "{err:?}"
    );
    let groups: Value = serde_json::from_str(&bare.ok(&["get", "--raw", "/apis"]).await).unwrap();
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert!(
        names.contains(&"apps")
            && !names.contains(&"argoproj.io")
            && !names.contains(&"networking.istio.io"),
        "{names:?}"
    );
    let out = bare.kubectl(&["get", "rollouts"]).await;
    assert!(
        !out.ok
            && out
                .stderr
                .contains("the server doesn't have a resource type"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_delete_policies_and_finalizers() {
    common::bounded(delete_policies_body()).await;
}

async fn delete_policies_body() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::DeleteParams;

    let env = start(fast()).await;
    let client = kube_client(&env.sb).await;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let make = |name: &str| -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}
            }
        }))
        .unwrap()
    };
    let rs_of = |app: &'static str| {
        let rss = rss.clone();
        async move {
            rss.list(&ListParams::default().labels(&format!("app={app}")))
                .await
                .unwrap()
                .items
        }
    };

    // Orphan: the ReplicaSet stays, without its ownerReference.
    deps.create(&PostParams::default(), &make("keep"))
        .await
        .unwrap();
    rolled_out(&deps, "keep").await;
    let gone = deps.delete("keep", &DeleteParams::orphan()).await.unwrap();
    assert!(gone.is_right(), "an immediate delete answers a Status");
    let left = rs_of("keep").await;
    assert_eq!(left.len(), 1);
    assert!(
        left[0]
            .metadata
            .owner_references
            .as_ref()
            .is_none_or(|r| r.is_empty())
    );

    // Foreground and Background: dependents go.
    for (name, dp) in [
        ("fg", DeleteParams::foreground()),
        ("bg", DeleteParams::background()),
    ] {
        deps.create(&PostParams::default(), &make(name))
            .await
            .unwrap();
        rolled_out(&deps, name).await;
        deps.delete(name, &dp).await.unwrap();
        let app: &'static str = if name == "fg" { "fg" } else { "bg" };
        assert!(
            rs_of(app).await.is_empty(),
            "{name}: owned ReplicaSets deleted"
        );
    }

    // Finalizers hold an object, marked with deletionTimestamp, until they are removed.
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}),
    )
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let marked = cms.delete("held", &DeleteParams::default()).await.unwrap();
    let marked = marked.left().expect("the object, still there");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(cms.get("held").await.is_ok());
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let err = cms.get("held").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404),
        "{err:?}"
    );

    // deletecollection by label.
    for n in ["a", "b"] {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": n, "labels": {"batch": "x"}}}))
                .unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("batch=x"),
    )
    .await
    .unwrap();
    assert!(
        cms.list(&ListParams::default().labels("batch=x"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
}
