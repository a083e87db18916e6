//! Watches that only update the [`WorkloadIndex`]: Deployments and ReplicaSets always; Argo
//! Rollouts and Istio VirtualServices when their CRDs are served; Services (for the ones that
//! opt in to selector tracking).
//!
//! kube-runtime's watcher lists, then watches, and relists on its own when the API server says
//! a resourceVersion is too old (410 Gone). Each (re)list arrives as `Init`, `InitApply`*,
//! `InitDone`; the list is buffered and swapped into the index at once, so a half-listed
//! namespace is never seen. Readiness turns true once every watch has completed a list.
//! Traffic changes the index notes are handed to `changes` so the store can persist them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use futures::future::BoxFuture;
use jiff::Timestamp;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{info, warn};

use super::{
    deployment_state, deployments, replica_set_state, replica_sets, rollout_state, rollouts,
    service_state, services, virtual_service_state, virtual_services,
};
use crate::core::traffic::TrafficChange;
use crate::core::workload::WorkloadIndex;

/// The index shared between the watches (writers) and the pipeline (reader).
pub type SharedIndex = Arc<RwLock<WorkloadIndex>>;

/// Counts watches that have not yet completed their first list.
#[derive(Clone, Debug)]
pub struct Readiness {
    pending: Arc<AtomicUsize>,
}

impl Readiness {
    pub fn new(watches: usize) -> Readiness {
        Readiness {
            pending: Arc::new(AtomicUsize::new(watches)),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0
    }

    /// Why decisions wait, or `None` when the data is fresh.
    pub fn why_not_ready(&self) -> Option<String> {
        let pending = self.pending.load(Ordering::Acquire);
        (pending > 0).then(|| format!("{pending} Kubernetes watches have not listed yet"))
    }

    fn synced_once(&self) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What rollbackd watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Deployments,
    ReplicaSets,
    Rollouts,
    Services,
    /// At the given version of `networking.istio.io`.
    VirtualServices(String),
}

impl Kind {
    fn resource(&self) -> ApiResource {
        match self {
            Kind::Deployments => deployments(),
            Kind::ReplicaSets => replica_sets(),
            Kind::Rollouts => rollouts(),
            Kind::Services => services(),
            Kind::VirtualServices(version) => virtual_services(version),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Kind::Deployments => "deployments",
            Kind::ReplicaSets => "replicasets",
            Kind::Rollouts => "rollouts",
            Kind::Services => "services",
            Kind::VirtualServices(_) => "virtualservices",
        }
    }
}

/// Which kinds the cluster serves: the optional CRDs are looked up once; a missing one is
/// reported once and skipped (the daemon works without it).
pub async fn kinds_served(client: &kube::Client) -> Vec<Kind> {
    let mut kinds = vec![Kind::Deployments, Kind::ReplicaSets, Kind::Services];
    let serves =
        |list: Result<
            k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList,
            kube::Error,
        >,
         plural: &str| { list.is_ok_and(|l| l.resources.iter().any(|r| r.name == plural)) };
    if serves(
        client
            .list_api_group_resources("argoproj.io/v1alpha1")
            .await,
        "rollouts",
    ) {
        kinds.push(Kind::Rollouts);
    } else {
        info!(
            "Argo Rollouts (argoproj.io/v1alpha1 rollouts) is not installed; Rollouts are not watched"
        );
    }
    let mut istio = None;
    for version in ["v1", "v1beta1"] {
        if serves(
            client
                .list_api_group_resources(&format!("networking.istio.io/{version}"))
                .await,
            "virtualservices",
        ) {
            istio = Some(version);
            break;
        }
    }
    match istio {
        Some(version) => kinds.push(Kind::VirtualServices(version.to_string())),
        None => info!(
            "Istio (networking.istio.io virtualservices) is not installed; VirtualServices are not watched"
        ),
    }
    kinds
}

/// The watches of `kinds` in `namespaces` (empty: all), as futures that run until they end.
pub fn watches(
    client: &kube::Client,
    namespaces: &[String],
    watch_timeout: std::time::Duration,
    kinds: &[Kind],
    index: &SharedIndex,
    changes: UnboundedSender<TrafficChange>,
) -> (Readiness, Vec<BoxFuture<'static, ()>>) {
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().cloned().map(Some).collect()
    };
    let readiness = Readiness::new(scopes.len() * kinds.len());
    let mut tasks: Vec<BoxFuture<'static, ()>> = Vec::new();
    for scope in scopes {
        for kind in kinds {
            tasks.push(Box::pin(watch(
                client.clone(),
                watch_timeout,
                kind.clone(),
                scope.clone(),
                index.clone(),
                readiness.clone(),
                changes.clone(),
            )));
        }
    }
    (readiness, tasks)
}

async fn watch(
    client: kube::Client,
    watch_timeout: std::time::Duration,
    kind: Kind,
    scope: Option<String>,
    index: SharedIndex,
    readiness: Readiness,
    changes: UnboundedSender<TrafficChange>,
) {
    let ar = kind.resource();
    let api: Api<DynamicObject> = match &scope {
        Some(ns) => Api::namespaced_with(client, ns, &ar),
        None => Api::all_with(client, &ar),
    };
    let where_ = scope.as_deref().unwrap_or("all namespaces");
    let timeout = u32::try_from(watch_timeout.as_secs()).unwrap_or(290).max(1);
    let mut stream = watcher::watcher(api, watcher::Config::default().timeout(timeout))
        .default_backoff()
        .boxed();
    let mut buffer: Vec<DynamicObject> = Vec::new();
    let mut synced = false;
    let mut failing = false;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                if !failing {
                    warn!(kind = kind.name(), scope = where_, %error, "watch failed; retrying with backoff");
                    failing = true;
                }
                continue;
            }
        };
        if failing {
            info!(kind = kind.name(), scope = where_, "watch recovered");
            failing = false;
        }
        let list_done = matches!(event, Event::InitDone);
        let noted = apply_event(
            &index,
            &kind,
            &ar,
            scope.as_deref(),
            event,
            &mut buffer,
            Timestamp::now(),
        );
        for change in noted {
            info!(kind = change.kind.as_str(), namespace = %change.namespace, name = %change.name,
                from = %change.from, to = %change.to, "traffic change noted");
            // The receiver lives as long as the daemon; a send after shutdown is moot.
            let _ = changes.send(change);
        }
        if list_done && !synced {
            synced = true;
            readiness.synced_once();
            info!(kind = kind.name(), scope = where_, "initial list synced");
        }
    }
    warn!(kind = kind.name(), scope = where_, "watch stream ended");
}

/// Applies one event to the index; returns the traffic changes it noted.
fn apply_event(
    index: &SharedIndex,
    kind: &Kind,
    ar: &ApiResource,
    scope: Option<&str>,
    event: Event<DynamicObject>,
    buffer: &mut Vec<DynamicObject>,
    now: Timestamp,
) -> Vec<TrafficChange> {
    let mut index = match index.write() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    let mut noted = Vec::new();
    match event {
        Event::Init => buffer.clear(),
        Event::InitApply(obj) => buffer.push(obj),
        Event::InitDone => {
            let all = std::mem::take(buffer);
            match kind {
                Kind::Deployments => index.reset_deployments(
                    scope,
                    all.iter().filter_map(deployment_state).collect(),
                    now,
                ),
                Kind::ReplicaSets => index.reset_replica_sets(
                    scope,
                    all.iter().filter_map(replica_set_state).collect(),
                    now,
                ),
                Kind::Rollouts => {
                    index.reset_rollouts(scope, all.iter().filter_map(rollout_state).collect(), now)
                }
                // Traffic objects are few; applying each keeps change detection in one place.
                Kind::Services | Kind::VirtualServices(_) => {
                    for obj in &all {
                        noted.extend(apply_one(&mut index, kind, ar, obj, now));
                    }
                }
            }
        }
        Event::Apply(obj) => noted.extend(apply_one(&mut index, kind, ar, &obj, now)),
        Event::Delete(obj) => {
            if let (Some(ns), Some(name)) = (&obj.metadata.namespace, &obj.metadata.name) {
                match kind {
                    Kind::Deployments => index.delete_deployment(ns, name),
                    Kind::ReplicaSets => index.delete_replica_set(ns, name),
                    Kind::Rollouts => index.delete_rollout(ns, name),
                    Kind::Services => index.delete_service(ns, name),
                    Kind::VirtualServices(_) => index.delete_virtual_service(ns, name),
                }
            }
        }
    }
    noted
}

fn apply_one(
    index: &mut WorkloadIndex,
    kind: &Kind,
    ar: &ApiResource,
    obj: &DynamicObject,
    now: Timestamp,
) -> Option<TrafficChange> {
    match kind {
        Kind::Deployments => {
            index.apply_deployment(deployment_state(obj)?, now);
            None
        }
        Kind::ReplicaSets => {
            index.apply_replica_set(replica_set_state(obj)?, now);
            None
        }
        Kind::Rollouts => {
            index.apply_rollout(rollout_state(obj)?, now);
            None
        }
        Kind::Services => index.apply_service(service_state(obj)?, now),
        Kind::VirtualServices(_) => {
            let mut vs = virtual_service_state(obj)?;
            if vs.api_version.is_empty() {
                vs.api_version = ar.api_version.clone();
            }
            index.apply_virtual_service(vs, now)
        }
    }
}
