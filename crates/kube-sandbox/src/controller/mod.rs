//! Simulated controllers: tasks that react to store events and write back through the store
//! like any client (so their writes bump resourceVersions and reach watchers).
//!
//! A [`Controller`] maps each store [`Event`] to the keys (namespace, name) it must
//! reconcile, and reconciles one key at a time, optionally asking to be called again after a
//! delay. [`run`] is the generic loop: a work set of dirty keys, a timer per key, a full
//! resync at start and whenever the event feed lags. Adding a controller means implementing
//! the trait and listing it in [`spawn_all`]: the Deployment controller (`deployment.rs`),
//! the Argo Rollouts controller (`rollout.rs`), and `events.rs`, which serves each
//! events.k8s.io/v1 Event at core/v1 too, as the API server's one Event resource does.

mod deployment;
mod deployment_pods;
mod deployment_scale;
mod deployment_status;
mod events;
mod objects;
mod revision;
mod rollout;
mod rollout_bluegreen;
mod rollout_canary;
mod rollout_conditions;
mod rollout_prepare;
mod rollout_replicas;
mod rollout_rs;
mod rollout_spec;
mod rollout_status;
mod rollout_svc;
mod rollout_validate;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::store::{Event, Store};

/// (namespace, name) of an object a controller owns.
pub type Key = (String, String);

/// How simulated pods behave: they become ready `rollout_delay` after their ReplicaSet is
/// scaled up, except pods running one of `unready_images`, which never do (as an image that
/// cannot be pulled, or a container that never passes its readiness probe).
#[derive(Debug, Clone, Default)]
pub struct Pace {
    pub rollout_delay: Duration,
    pub unready_images: Arc<[String]>,
}

impl Pace {
    /// Whether the pods of this object's template (a Deployment, ReplicaSet or Rollout)
    /// never become ready.
    pub fn never_ready(&self, obj: &serde_json::Value) -> bool {
        if self.unready_images.is_empty() {
            return false;
        }
        obj.pointer("/spec/template/spec/containers")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("image").and_then(serde_json::Value::as_str))
            .any(|image| self.unready_images.iter().any(|u| u == image))
    }
}

pub enum Requeue {
    Done,
    After(Duration),
}

pub trait Controller: Send + 'static {
    fn name(&self) -> &'static str;
    /// The keys to reconcile because of this event.
    fn keys_for(&self, store: &Store, ev: &Event) -> Vec<Key>;
    /// Every key (at start, and after the event feed lagged).
    fn all_keys(&self, store: &Store) -> Vec<Key>;
    fn reconcile(&mut self, store: &Store, key: &Key) -> Requeue;
}

/// Start every simulated controller.
pub fn spawn_all(
    store: Arc<Store>,
    pace: Pace,
    stop: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let mut handles = Vec::new();
    if store.registry.find("apps", "v1", "deployments").is_some() {
        handles.push(tokio::spawn(run(
            store.clone(),
            deployment::DeploymentController::new(pace.clone()),
            stop.clone(),
        )));
    }
    if store
        .registry
        .find("events.k8s.io", "v1", "events")
        .is_some()
    {
        handles.push(tokio::spawn(run(
            store.clone(),
            events::EventVersions,
            stop.clone(),
        )));
    }
    if store
        .registry
        .find("argoproj.io", "v1alpha1", "rollouts")
        .is_some()
    {
        handles.push(tokio::spawn(run(
            store.clone(),
            rollout::RolloutController::new(pace.clone()),
            stop.clone(),
        )));
    }
    handles
}

/// The generic controller loop.
pub async fn run(store: Arc<Store>, mut c: impl Controller, mut stop: watch::Receiver<bool>) {
    let mut rx = store.subscribe();
    let mut dirty: BTreeSet<Key> = c.all_keys(&store).into_iter().collect();
    let mut timers: BTreeMap<Key, Instant> = BTreeMap::new();
    loop {
        let now = Instant::now();
        let due: Vec<Key> = timers
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            timers.remove(&k);
            dirty.insert(k);
        }
        // A bounded number of passes per wake-up keeps a misbehaving reconcile from spinning.
        for key in std::mem::take(&mut dirty) {
            match c.reconcile(&store, &key) {
                Requeue::Done => {}
                Requeue::After(d) => {
                    let at = Instant::now() + d;
                    let t = timers.entry(key).or_insert(at);
                    *t = (*t).min(at);
                }
            }
        }
        let next = timers.values().min().copied();
        tokio::select! {
            _ = stop.changed() => return,
            ev = rx.recv() => match ev {
                Ok(ev) => dirty.extend(c.keys_for(&store, &ev)),
                Err(broadcast::error::RecvError::Lagged(_)) => dirty.extend(c.all_keys(&store)),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tokio::time::sleep_until(next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))) => {}
        }
        loop {
            match rx.try_recv() {
                Ok(ev) => dirty.extend(c.keys_for(&store, &ev)),
                Err(broadcast::error::TryRecvError::Lagged(_)) => dirty.extend(c.all_keys(&store)),
                Err(_) => break,
            }
        }
        if *stop.borrow() {
            tracing::debug!(controller = c.name(), "stopping");
            return;
        }
    }
}
