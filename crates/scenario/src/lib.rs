//! Building blocks shared by the demo, the end-to-end tests and the benchmark: create a
//! Deployment, roll it out, wait until the (simulated) controller converged, and build the
//! Alertmanager payload a real Alertmanager would post. Every wait is bounded.

pub mod lab;
mod sample_app;

use std::time::Duration;

use anyhow::{Context, bail};
use jiff::Timestamp;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};

pub use sample_app::SampleApp;

/// The Deployments API of one namespace, as raw objects.
pub fn deployments_api(client: kube::Client, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apps", "v1", "Deployment"),
        "deployments",
    );
    Api::namespaced_with(client, namespace, &resource)
}

/// A Deployment manifest with one container named `app` and pod label `app: NAME`.
pub fn deployment_manifest(namespace: &str, name: &str, image: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]}
            }
        }
    })
}

pub async fn create(api: &Api<DynamicObject>, manifest: Value) -> anyhow::Result<DynamicObject> {
    let obj: DynamicObject = serde_json::from_value(manifest)?;
    api.create(&PostParams::default(), &obj)
        .await
        .context("creating deployment")
}

/// What `kubectl set image deployment/NAME app=IMAGE` sends: a strategic merge patch.
pub async fn set_image(api: &Api<DynamicObject>, name: &str, image: &str) -> anyhow::Result<()> {
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}});
    api.patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .with_context(|| format!("setting image of {name} to {image}"))?;
    Ok(())
}

/// The revision annotation of a Deployment.
pub fn revision(d: &DynamicObject) -> Option<String> {
    d.metadata
        .annotations
        .as_ref()?
        .get("deployment.kubernetes.io/revision")
        .cloned()
}

/// The first container image of a Deployment's template.
pub fn image(d: &DynamicObject) -> Option<String> {
    d.data
        .pointer("/spec/template/spec/containers/0/image")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Waits (at most `limit`) until the Deployment is at `revision` with all replicas updated and
/// available and no old replica left, as `kubectl rollout status` would.
pub async fn wait_rolled_out(
    api: &Api<DynamicObject>,
    name: &str,
    revision_wanted: &str,
    limit: Duration,
) -> anyhow::Result<DynamicObject> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let d = api.get(name).await?;
        let want = d
            .data
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let status = |field: &str| {
            d.data
                .pointer(&format!("/status/{field}"))
                .and_then(Value::as_i64)
        };
        let generation = d.metadata.generation.unwrap_or(0);
        if revision(&d).as_deref() == Some(revision_wanted)
            && status("observedGeneration") == Some(generation)
            && status("updatedReplicas") == Some(want)
            && status("replicas") == Some(want)
            && status("availableReplicas") == Some(want)
        {
            return Ok(d);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("deployment {name} did not roll out revision {revision_wanted} within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates `name` at `images[0]` and rolls out each following image, waiting for each.
pub async fn deploy_revisions(
    api: &Api<DynamicObject>,
    namespace: &str,
    name: &str,
    images: &[&str],
) -> anyhow::Result<DynamicObject> {
    let Some((first, rest)) = images.split_first() else {
        bail!("no images given");
    };
    create(api, deployment_manifest(namespace, name, first, 2)).await?;
    let mut d = wait_rolled_out(api, name, "1", Duration::from_secs(20)).await?;
    for (i, image) in rest.iter().enumerate() {
        set_image(api, name, image).await?;
        d = wait_rolled_out(api, name, &(i + 2).to_string(), Duration::from_secs(20)).await?;
    }
    Ok(d)
}

/// One firing alert in a version 4 Alertmanager payload, as Alertmanager would post it.
pub fn alertmanager_payload(labels: &[(&str, &str)], starts_at: Timestamp) -> Value {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let name = labels
        .get("alertname")
        .cloned()
        .unwrap_or(json!("HighErrorRate"));
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname={name}}}"),
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "rollbackd",
        "groupLabels": {"alertname": name},
        "commonLabels": labels,
        "commonAnnotations": {"summary": "error rate above 5%"},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [{
            "status": "firing",
            "labels": labels,
            "annotations": {"summary": "error rate above 5%"},
            "startsAt": starts_at.to_string(),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=up",
            "fingerprint": ""
        }]
    })
}
