//! Watches that only update the [`WorkloadIndex`]: Deployments and ReplicaSets always; Argo
//! Rollouts and Istio VirtualServices when their CRDs are served; Argo CD Applications, in
//! `gitops.argocd_namespace` only, when theirs is; Services (for the ones that
//! opt in to selector tracking). Fresh data or no decision: [`Readiness`] is true only while
//! every watch has listed, none is failing and each has heard from the API server within
//! `kubernetes.stale_after`.
//!
//! Layout: `discovery` (which optional kinds are served, retried until the API server
//! answers), `list_watch` (one list/watch loop per kind and scope), `apply` (what a loop does
//! to the index), `health` (each watch's health, readiness, the monitor that logs and exports
//! it), `timing` (every wait, derived from `stale_after`). Traffic changes the index notes are
//! handed to `changes` so the store can persist them.
//!
//! [`WorkloadIndex`]: crate::core::workload::WorkloadIndex

mod apply;
mod discovery;
mod health;
mod list_watch;
mod timing;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use tokio::sync::mpsc::UnboundedSender;

use super::{
    applications, deployments, namespaces, replica_sets, rollouts, services, virtual_services,
};
use crate::core::traffic::TrafficChange;
use crate::core::workload::WorkloadIndex;
use crate::metrics::Metrics;

pub use discovery::{DiscoveryError, kinds_served};
pub use health::{Readiness, Verdict, WatchName};
pub use list_watch::WatchError;
pub use timing::Timings;

/// The index shared between the watches (writers) and the pipeline (reader).
pub type SharedIndex = Arc<RwLock<WorkloadIndex>>;

/// What rollbackd watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Deployments,
    ReplicaSets,
    Rollouts,
    Services,
    /// At the given version of `networking.istio.io`.
    VirtualServices(String),
    /// Cluster-scoped: their annotations opt whole namespaces in or out.
    Namespaces,
    /// Argo CD Applications, watched in the Argo CD namespace only.
    Applications,
}

impl Kind {
    fn resource(&self) -> ApiResource {
        match self {
            Kind::Deployments => deployments(),
            Kind::ReplicaSets => replica_sets(),
            Kind::Rollouts => rollouts(),
            Kind::Services => services(),
            Kind::VirtualServices(version) => virtual_services(version),
            Kind::Namespaces => namespaces(),
            Kind::Applications => applications(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Kind::Deployments => "deployments",
            Kind::ReplicaSets => "replicasets",
            Kind::Rollouts => "rollouts",
            Kind::Services => "services",
            Kind::VirtualServices(_) => "virtualservices",
            Kind::Namespaces => "namespaces",
            Kind::Applications => "applications",
        }
    }
}

/// Where and how to watch, from `[kubernetes]`.
#[derive(Clone, Debug)]
pub struct WatchSettings {
    /// Empty: all namespaces.
    pub namespaces: Vec<String>,
    /// Readiness needs every watch to have heard from the API server within this.
    pub stale_after: Duration,
    /// The longest a single watch request lasts (shortened to a third of `stale_after`).
    pub watch_timeout: Duration,
    /// Where Argo CD Applications are watched (`gitops.argocd_namespace`).
    pub argocd_namespace: String,
}

/// Readiness, false until discovery and every first list are done, and the future that runs
/// discovery, then one list/watch loop per kind and scope, and the health monitor. The future
/// does not end on its own; it needs no API server to start.
pub fn watches(
    client: &kube::Client,
    settings: &WatchSettings,
    index: &SharedIndex,
    changes: UnboundedSender<TrafficChange>,
    metrics: Metrics,
) -> (Readiness, BoxFuture<'static, ()>) {
    let readiness = Readiness::new(settings.stale_after);
    let timings = Timings::new(settings.stale_after, settings.watch_timeout);
    let scopes: Vec<Option<String>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    };
    let monitor_every =
        (settings.stale_after / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let (client, index, ready) = (client.clone(), index.clone(), readiness.clone());
    let argocd_namespace = settings.argocd_namespace.clone();
    let run = async move {
        let kinds = kinds_served(&client, &ready, timings).await;
        let mut plan: Vec<(Kind, Option<String>)> = scopes
            .iter()
            .flat_map(|scope| {
                kinds
                    .iter()
                    .filter(|k| **k != Kind::Applications)
                    .map(|k| (k.clone(), scope.clone()))
            })
            .collect();
        // Namespaces are cluster-scoped: one watch, whichever namespaces are configured.
        plan.push((Kind::Namespaces, None));
        if kinds.contains(&Kind::Applications) {
            plan.push((Kind::Applications, Some(argocd_namespace)));
        }
        let names = plan
            .iter()
            .map(|(kind, scope)| WatchName {
                kind: kind.name(),
                scope: scope.clone(),
            })
            .collect();
        let handles = ready.discovered(names);
        let mut tasks: Vec<BoxFuture<'static, ()>> = vec![Box::pin(health::monitor(
            ready.clone(),
            metrics,
            monitor_every,
        ))];
        for ((kind, scope), health) in plan.into_iter().zip(handles) {
            let ar = kind.resource();
            let api: Api<DynamicObject> = match &scope {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
                None => Api::all_with(client.clone(), &ar),
            };
            let name = WatchName {
                kind: kind.name(),
                scope,
            };
            let watch = list_watch::ListWatch {
                api,
                kind,
                ar,
                name,
                index: index.clone(),
                changes: changes.clone(),
                health,
                timings,
            };
            tasks.push(Box::pin(watch.run()));
        }
        futures::future::select_all(tasks).await;
    };
    (readiness, Box::pin(run))
}

/// A kube error in one line: an API status as `code reason: message`, anything else with its
/// causes (each only once: some errors repeat their source in their own text).
fn describe(e: &kube::Error) -> String {
    if let kube::Error::Api(status) = e {
        return format!("{} {}: {}", status.code, status.reason, status.message);
    }
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
