//! What a teammate sees in the cluster after a rollback: an Event on the Deployment in the
//! events.k8s.io/v1 API naming the incident, and the annotation `rollbackd.io/last-action`,
//! which `kubectl describe` shows.
//!
//! On a real API server an events.k8s.io/v1 Event is also a core/v1 Event (one resource, two
//! versions), so `kubectl describe` lists it under Events; the sandbox serves the copy too.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use jiff::Timestamp;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_leaves_an_event_and_an_annotation_on_the_deployment() {
    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    let running = env.daemon("").await;
    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(
            &[
                ("alertname", "HighErrorRate"),
                ("namespace", "default"),
                ("deployment", "web"),
            ],
            Timestamp::now(),
        ),
    )
    .await;
    let incident = settled_incident(&running).await;
    assert_eq!(incident.outcome, "rolled-back", "{}", incident.reason);
    let metrics = running.state.metrics.render();
    for histogram in [
        "rollbackd_alert_to_action_seconds_count 1",
        "rollbackd_alert_to_decision_seconds_count 1",
        "rollbackd_decision_to_action_seconds_count 1",
    ] {
        assert!(metrics.contains(histogram), "{histogram}:\n{metrics}");
    }

    let events: Api<DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("events.k8s.io", "v1", "Event"),
            "events",
        ),
    );
    let mut found = None;
    for _ in 0..100 {
        let list = events.list(&ListParams::default()).await.expect("events");
        found = list.items.into_iter().find(|e| {
            e.data["regarding"]["name"] == "web" && e.data["reportingController"] == "rollbackd"
        });
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let event = found.expect("an Event from rollbackd on deployment web");
    assert_eq!(event.data["reason"], "RolledBack");
    assert_eq!(event.data["type"], "Normal");
    let note = event.data["note"].as_str().unwrap_or_default();
    assert!(
        note.starts_with(&format!("rollbackd incident {}: rolled back", incident.id)),
        "{note}"
    );

    let mut annotation = None;
    for _ in 0..100 {
        let web = env.api.get("web").await.expect("web");
        annotation = web
            .metadata
            .annotations
            .and_then(|a| a.get("rollbackd.io/last-action").cloned());
        if annotation.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let annotation = annotation.expect("the annotation");
    assert!(
        annotation.starts_with(&format!("incident {}: rolled-back at ", incident.id)),
        "{annotation}"
    );

    let out = Command::new("kubectl")
        .args(["--kubeconfig"])
        .arg(&env.kubeconfig)
        .args(["describe", "deployment", "web", "-n", "default"])
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl describe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "rollbackd.io/last-action: incident {}",
            incident.id
        )),
        "{text}"
    );
    let events = text.split("Events:").nth(1).unwrap_or_default();
    assert!(
        events.lines().any(|l| l.contains("RolledBack")
            && l.contains("rollbackd")
            && l.contains(&format!("incident {}", incident.id))),
        "kubectl describe lists rollbackd's Event: {text}"
    );
    running.stop().await.expect("clean stop");
}
