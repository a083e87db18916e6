//! What rollbackd leaves on the cluster for a teammate who looks there, not in rollbackd:
//! a Kubernetes Event (events.k8s.io/v1, through kube-runtime's recorder) on the workload for
//! every notable decision, and, on a workload rollbackd changed, the annotation
//! `rollbackd.io/last-action` naming the incident. `kubectl describe` then tells the story.
//!
//! Best effort and off the decision path: a failure is logged, never retried, and changes
//! nothing about the action or its record. The annotation is a merge patch of that one key,
//! without a precondition: it cannot overwrite anything but itself.

use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::json;
use tracing::warn;

use super::executor::FIELD_MANAGER;
use super::{deployments, rollouts, services, virtual_services};
use crate::core::engine::{Outcome, WorkloadRef};
use crate::k8s::patch::send_patch;

/// The annotation on a workload rollbackd changed: which incident, what, when.
pub const LAST_ACTION_ANNOTATION: &str = "rollbackd.io/last-action";

/// Publishes Events and annotations; cheap to clone.
#[derive(Clone)]
pub struct ClusterRecord {
    client: kube::Client,
    recorder: Recorder,
    timeout: Duration,
}

/// One notable decision or result, as the cluster is told about it.
#[derive(Clone, Debug)]
pub struct Report {
    pub workload: WorkloadRef,
    pub incident_id: i64,
    pub outcome: Outcome,
    pub sentence: String,
    pub link: Option<String>,
}

impl ClusterRecord {
    pub fn new(client: kube::Client, timeout: Duration) -> ClusterRecord {
        let instance = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .ok();
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "rollbackd".into(),
                instance,
            },
        );
        ClusterRecord {
            client,
            recorder,
            timeout,
        }
    }

    /// Publishes the Event (and the annotation when rollbackd changed the workload) in the
    /// background.
    pub fn report(&self, report: Report) {
        let this = self.clone();
        tokio::spawn(async move { this.publish(report).await });
    }

    async fn publish(&self, r: Report) {
        let Some(reference) = object_ref(&r.workload) else {
            return;
        };
        let changed = changed_it(r.outcome);
        let mut note = format!("rollbackd incident {}: {}", r.incident_id, r.sentence);
        if let Some(link) = &r.link {
            note = format!("{note} ({link})");
        }
        let event = Event {
            type_: if changed || r.outcome == Outcome::WouldRollBack {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: reason(r.outcome).into(),
            note: Some(truncate(&note, 1024)),
            action: "Rollback".into(),
            secondary: None,
        };
        let published =
            tokio::time::timeout(self.timeout, self.recorder.publish(&event, &reference));
        match published.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(workload = %r.workload, error = %e, "could not publish a Kubernetes Event")
            }
            Err(_) => warn!(workload = %r.workload, "publishing a Kubernetes Event timed out"),
        }
        if changed {
            self.annotate(&r).await;
        }
    }

    async fn annotate(&self, r: &Report) {
        let w = &r.workload;
        let ar = match w.kind.as_str() {
            "Deployment" => deployments(),
            "Rollout" => rollouts(),
            "Service" => services(),
            _ => return,
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &w.namespace, &ar);
        let value = format!(
            "incident {}: {} at {}",
            r.incident_id,
            r.outcome.code(),
            jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ")
        );
        let patch = json!({"metadata": {"annotations": {LAST_ACTION_ANNOTATION: value}}});
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let patch = Patch::Merge(&patch);
        let call = send_patch(&api, &w.name, None, &params, &patch);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(workload = %w, error = %e, "could not annotate the workload"),
            Err(_) => warn!(workload = %w, "annotating the workload timed out"),
        }
    }
}

/// Whether the outcome means rollbackd changed the workload.
fn changed_it(outcome: Outcome) -> bool {
    matches!(
        outcome,
        Outcome::RolledBack
            | Outcome::Aborted
            | Outcome::PausedWorkload
            | Outcome::GitopsSuspended
            | Outcome::GitopsSynced
    )
}

/// The Event's reason, in PascalCase as Kubernetes Events have it.
fn reason(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::RolledBack | Outcome::GitopsSuspended => "RolledBack",
        Outcome::Aborted => "Aborted",
        Outcome::PausedWorkload => "Paused",
        Outcome::GitopsSynced => "SyncedToPrevious",
        Outcome::WouldRollBack => "WouldRollBack",
        Outcome::Failed => "RollbackFailed",
        Outcome::NotRecovered => "NotRecovered",
        _ => "RollbackNotDone",
    }
}

fn object_ref(w: &WorkloadRef) -> Option<ObjectReference> {
    let api_version = match w.kind.as_str() {
        "Deployment" => deployments().api_version,
        "Rollout" => rollouts().api_version,
        "Service" => services().api_version,
        "VirtualService" => virtual_services("v1").api_version,
        _ => return None,
    };
    Some(ObjectReference {
        api_version: Some(api_version),
        kind: Some(w.kind.clone()),
        name: Some(w.name.clone()),
        namespace: Some(w.namespace.clone()),
        uid: Some(w.uid.clone()),
        ..ObjectReference::default()
    })
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(1);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
