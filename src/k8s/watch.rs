//! Watches of Deployments and ReplicaSets that only update the [`WorkloadIndex`].
//!
//! kube-runtime's watcher lists, then watches, and relists on its own when the API server says
//! a resourceVersion is too old (410 Gone). Each (re)list arrives as `Init`, `InitApply`*,
//! `InitDone`; the list is buffered and swapped into the index at once, so a half-listed
//! namespace is never seen. Readiness turns true once every watch has completed a list.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tracing::{info, warn};

use super::{deployment_state, deployments, replica_set_state, replica_sets};
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

    fn synced_once(&self) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Deployments,
    ReplicaSets,
}

impl Kind {
    fn resource(self) -> ApiResource {
        match self {
            Kind::Deployments => deployments(),
            Kind::ReplicaSets => replica_sets(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Deployments => "deployments",
            Kind::ReplicaSets => "replicasets",
        }
    }
}

/// The watches for `namespaces` (empty: all), as futures that run until the stream ends.
pub fn watches(
    client: &kube::Client,
    namespaces: &[String],
    index: &SharedIndex,
) -> (Readiness, Vec<futures::future::BoxFuture<'static, ()>>) {
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().cloned().map(Some).collect()
    };
    let readiness = Readiness::new(scopes.len() * 2);
    let mut tasks = Vec::new();
    for scope in scopes {
        for kind in [Kind::Deployments, Kind::ReplicaSets] {
            tasks.push(Box::pin(watch(
                client.clone(),
                kind,
                scope.clone(),
                index.clone(),
                readiness.clone(),
            )) as futures::future::BoxFuture<'static, ()>);
        }
    }
    (readiness, tasks)
}

async fn watch(
    client: kube::Client,
    kind: Kind,
    scope: Option<String>,
    index: SharedIndex,
    readiness: Readiness,
) {
    let ar = kind.resource();
    let api: Api<DynamicObject> = match &scope {
        Some(ns) => Api::namespaced_with(client, ns, &ar),
        None => Api::all_with(client, &ar),
    };
    let where_ = scope.as_deref().unwrap_or("all namespaces");
    let mut stream = watcher::watcher(api, watcher::Config::default())
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
        let now = Timestamp::now();
        let list_done = matches!(event, Event::InitDone);
        apply_event(&index, kind, scope.as_deref(), event, &mut buffer, now);
        if list_done && !synced {
            synced = true;
            readiness.synced_once();
            info!(kind = kind.name(), scope = where_, "initial list synced");
        }
    }
    warn!(kind = kind.name(), scope = where_, "watch stream ended");
}

fn apply_event(
    index: &SharedIndex,
    kind: Kind,
    scope: Option<&str>,
    event: Event<DynamicObject>,
    buffer: &mut Vec<DynamicObject>,
    now: Timestamp,
) {
    let mut index = match index.write() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    match (kind, event) {
        (_, Event::Init) => buffer.clear(),
        (_, Event::InitApply(obj)) => buffer.push(obj),
        (Kind::Deployments, Event::InitDone) => {
            let all = buffer
                .drain(..)
                .filter_map(|o| deployment_state(&o))
                .collect();
            index.reset_deployments(scope, all, now);
        }
        (Kind::ReplicaSets, Event::InitDone) => {
            let all = buffer
                .drain(..)
                .filter_map(|o| replica_set_state(&o))
                .collect();
            index.reset_replica_sets(scope, all, now);
        }
        (Kind::Deployments, Event::Apply(obj)) => {
            if let Some(d) = deployment_state(&obj) {
                index.apply_deployment(d, now);
            }
        }
        (Kind::ReplicaSets, Event::Apply(obj)) => {
            if let Some(rs) = replica_set_state(&obj) {
                index.apply_replica_set(rs, now);
            }
        }
        (Kind::Deployments, Event::Delete(obj)) => {
            if let (Some(ns), Some(name)) = (&obj.metadata.namespace, &obj.metadata.name) {
                index.delete_deployment(ns, name);
            }
        }
        (Kind::ReplicaSets, Event::Delete(obj)) => {
            if let (Some(ns), Some(name)) = (&obj.metadata.namespace, &obj.metadata.name) {
                index.delete_replica_set(ns, name);
            }
        }
    }
}
