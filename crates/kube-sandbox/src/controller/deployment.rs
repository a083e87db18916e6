//! The simulated Deployment controller, following kube-controller-manager's
//! (`pkg/controller/deployment`) step by step.
//!
//! A reconcile of one Deployment (key = namespace/name):
//! 1. plays the ReplicaSet controller and kubelets for the ReplicaSets it owns (found by
//!    controller ownerReference): their pods and `status` (`deployment_pods.rs`);
//! 2. runs `syncDeployment` on fresh reads: the paused conditions (`checkPausedConditions`),
//!    then `sync` for a paused Deployment or a scaling event (proportional scaling,
//!    `deployment_scale.rs`), else `rolloutRolling` or `rolloutRecreate`;
//! 3. finds or creates the new ReplicaSet (`getNewReplicaSet`: the oldest whose template
//!    equals the Deployment's ignoring `pod-template-hash`; a reused one gets revision
//!    max(old) + 1 and `revision-history`), writes the revision annotation and the
//!    `NewReplicaSetCreated` / `FoundNewReplicaSet` conditions through `/status`;
//! 4. publishes the status with `Available` and `Progressing` per `syncRolloutStatus`
//!    (`deployment_status.rs`), including `ProgressDeadlineExceeded`, and asks to be called
//!    again when a pod becomes ready or the progress deadline may pass.
//!
//! The only memory kept between reconciles is the simulated pods; everything else is read
//! from the store. Every write goes through the store with the usual no-op rule, so a
//! converged Deployment produces no writes and the loop settles.

use std::time::Duration;

use serde_json::{Value, json};

use super::deployment_pods::Pods;
use super::deployment_status::{self as ds, PROGRESSING, progress_deadline, replicas};
use super::objects::{
    self, controller_ref, controller_uid, ensure_map, int, name_of, new_replicaset, obj_at,
};
use super::revision as rev;
use super::{Controller, Key, Pace, Requeue};
use crate::resources::ResourceDef;
use crate::store::{Event, Store, meta_str, now_rfc3339};
use crate::writes::Part;

pub struct DeploymentController {
    /// How simulated pods behave: their delay to readiness, and images never ready.
    pace: Pace,
    pods: Pods,
    deployments: Option<ResourceDef>,
    replicasets: Option<ResourceDef>,
}

impl DeploymentController {
    pub fn new(pace: Pace) -> Self {
        Self {
            pace,
            pods: Pods::default(),
            deployments: None,
            replicasets: None,
        }
    }

    fn defs(&mut self, store: &Store) -> Option<(ResourceDef, ResourceDef)> {
        if self.deployments.is_none() {
            self.deployments = store.registry.find("apps", "v1", "deployments").cloned();
            self.replicasets = store.registry.find("apps", "v1", "replicasets").cloned();
        }
        Some((self.deployments.clone()?, self.replicasets.clone()?))
    }
}

impl Controller for DeploymentController {
    fn name(&self) -> &'static str {
        "deployment"
    }

    fn keys_for(&self, store: &Store, ev: &Event) -> Vec<Key> {
        match ev.key.as_str() {
            "apps/deployments" => vec![(ev.namespace.clone(), name_of(&ev.object))],
            "apps/replicasets" => {
                // `resolveControllerRef`: the Deployment the controller reference names, if
                // its uid is the one referenced (a lookup by name, not a scan).
                let Some((name, uid)) =
                    controller_ref(&ev.object).or_else(|| ev.old.as_ref().and_then(controller_ref))
                else {
                    return vec![];
                };
                let Some(def) = store.registry.find("apps", "v1", "deployments") else {
                    return vec![];
                };
                match store.get(def, Some(&ev.namespace), name) {
                    Ok(d) if meta_str(&d, "uid") == Some(uid) => {
                        vec![(ev.namespace.clone(), name.to_string())]
                    }
                    _ => vec![],
                }
            }
            _ => vec![],
        }
    }

    fn all_keys(&self, store: &Store) -> Vec<Key> {
        let Some(def) = store.registry.find("apps", "v1", "deployments") else {
            return vec![];
        };
        let (deps, _) = store.list(def, None, |_| true);
        deps.iter()
            .map(|d| {
                (
                    meta_str(d, "namespace").unwrap_or_default().to_string(),
                    name_of(d),
                )
            })
            .collect()
    }

    fn reconcile(&mut self, store: &Store, key: &Key) -> Requeue {
        let Some((ddef, rsdef)) = self.defs(store) else {
            return Requeue::Done;
        };
        let (ns, name) = key;
        let Ok(dep) = store.get(&ddef, Some(ns), name) else {
            self.pods.forget(key);
            return Requeue::Done;
        };
        match self.sync(store, &ddef, &rsdef, key, dep) {
            Ok(Some(d)) => Requeue::After(d),
            Ok(None) => Requeue::Done,
            // A conflicting concurrent write or a name clash: look again shortly.
            Err(e) => {
                tracing::debug!(deployment = %name, error = %e, "deployment sync retry");
                Requeue::After(Duration::from_millis(20))
            }
        }
    }
}

fn sooner(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl DeploymentController {
    /// One reconcile; returns when to be called again, if a timer is needed.
    fn sync(
        &mut self,
        store: &Store,
        ddef: &ResourceDef,
        rsdef: &ResourceDef,
        key: &Key,
        dep: Value,
    ) -> Result<Option<Duration>, String> {
        let uid = meta_str(&dep, "uid").unwrap_or_default().to_string();
        let owned = || {
            let mut owned = store.owned_by(rsdef, &key.0, &uid);
            owned.retain(|rs| controller_uid(rs) == Some(uid.as_str()));
            owned.sort_by(|a, b| {
                (meta_str(a, "creationTimestamp"), name_of(a))
                    .cmp(&(meta_str(b, "creationTimestamp"), name_of(b)))
            });
            owned
        };
        let before = owned();
        self.pods.retain(key, &before);
        let mut next = None;
        for rs in before
            .iter()
            .filter(|rs| rs.pointer("/metadata/deletionTimestamp").is_none())
        {
            next = sooner(next, self.pods.sync(store, rsdef, key, rs, &self.pace)?);
        }
        let mut cx = Ctx {
            store,
            ddef,
            rsdef,
            dep,
            owned: owned(),
        };
        Ok(sooner(next, cx.sync_deployment()?))
    }
}

/// One `syncDeployment`: the Deployment as last read or written, and its ReplicaSets
/// (oldest first).
pub(super) struct Ctx<'a> {
    pub store: &'a Store,
    pub ddef: &'a ResourceDef,
    pub rsdef: &'a ResourceDef,
    pub dep: Value,
    pub owned: Vec<Value>,
}

pub(super) fn active(rss: &[Value]) -> Vec<Value> {
    rss.iter()
        .filter(|rs| int(rs, "/spec/replicas") > 0)
        .cloned()
        .collect()
}

impl Ctx<'_> {
    pub fn replicas(&self) -> i64 {
        replicas(&self.dep)
    }

    fn paused(&self) -> bool {
        self.dep.pointer("/spec/paused").and_then(Value::as_bool) == Some(true)
    }

    /// `syncDeployment`, returning `requeueStuckDeployment`'s delay if any.
    fn sync_deployment(&mut self) -> Result<Option<Duration>, String> {
        if self.dep.pointer("/metadata/deletionTimestamp").is_some() {
            // syncStatusOnly
            let (new_rs, old) = self.get_all(false)?;
            return self.sync_deployment_status(&all_of(&old, new_rs.as_ref()), new_rs.as_ref());
        }
        self.check_paused_conditions()?;
        if self.paused() || self.is_scaling_event()? {
            return self.sync_scale();
        }
        if self
            .dep
            .pointer("/spec/strategy/type")
            .and_then(Value::as_str)
            == Some("Recreate")
        {
            self.rollout_recreate()
        } else {
            self.rollout_rolling()
        }
    }

    /// `checkPausedConditions`: `Progressing` Unknown `DeploymentPaused` while paused,
    /// `DeploymentResumed` after, never over a `ProgressDeadlineExceeded`.
    fn check_paused_conditions(&mut self) -> Result<(), String> {
        if progress_deadline(&self.dep).is_none() {
            return Ok(());
        }
        let empty = ds::empty();
        let st = self.dep.get("status").unwrap_or(&empty);
        let reason = ds::condition(st, PROGRESSING)
            .and_then(|c| c.get("reason"))
            .and_then(Value::as_str);
        if reason == Some(ds::TIMED_OUT) {
            return Ok(());
        }
        let paused_exists = reason == Some(ds::PAUSED);
        let now = now_rfc3339();
        let cond = if self.paused() && !paused_exists {
            ds::new_condition(
                PROGRESSING,
                "Unknown",
                ds::PAUSED,
                "Deployment is paused",
                &now,
            )
        } else if !self.paused() && paused_exists {
            ds::new_condition(
                PROGRESSING,
                "Unknown",
                ds::RESUMED,
                "Deployment is resumed",
                &now,
            )
        } else {
            return Ok(());
        };
        ds::set_condition(status_of(&mut self.dep), cond);
        self.dep = objects::update_status(self.store, self.ddef, &self.dep)?;
        Ok(())
    }

    /// `isScalingEvent`: an active ReplicaSet's `desired-replicas` differs from the spec.
    fn is_scaling_event(&mut self) -> Result<bool, String> {
        let (new_rs, old) = self.get_all(false)?;
        let want = self.replicas();
        Ok(active(&all_of(&old, new_rs.as_ref())).iter().any(|rs| {
            rs.pointer("/metadata/annotations")
                .and_then(|a| a.get(rev::DESIRED_REPLICAS))
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<i64>().ok())
                .is_some_and(|d| d != want)
        }))
    }

    /// `sync`: scale (a paused Deployment, a scaling event) without creating a ReplicaSet.
    fn sync_scale(&mut self) -> Result<Option<Duration>, String> {
        let (new_rs, old) = self.get_all(false)?;
        self.scale(new_rs.as_ref(), &old)?;
        if self.paused() {
            objects::cleanup(self.store, self.rsdef, &self.dep, &old);
        }
        self.sync_deployment_status(&all_of(&old, new_rs.as_ref()), new_rs.as_ref())
    }

    /// `rolloutRolling`.
    fn rollout_rolling(&mut self) -> Result<Option<Duration>, String> {
        let (new_rs, old) = self.get_all(true)?;
        let new_rs = new_rs.ok_or("no new ReplicaSet")?;
        let all = all_of(&old, Some(&new_rs));
        if self.reconcile_new(&all, &new_rs)? {
            return self.sync_rollout_status(&all, Some(&new_rs));
        }
        if self.reconcile_old(&all, active(&old), &new_rs)? {
            return self.sync_rollout_status(&all, Some(&new_rs));
        }
        let st = self.dep.get("status").cloned().unwrap_or_default();
        if ds::complete(&self.dep, &st) {
            objects::cleanup(self.store, self.rsdef, &self.dep, &old);
        }
        self.sync_rollout_status(&all, Some(&new_rs))
    }

    /// `rolloutRecreate`: old ReplicaSets to 0, and once their pods are gone the new one
    /// (created then) to full size.
    fn rollout_recreate(&mut self) -> Result<Option<Duration>, String> {
        let (mut new_rs, mut old) = self.get_all(false)?;
        let mut all = all_of(&old, new_rs.as_ref());
        let mut scaled_down = false;
        for rs in active(&old) {
            scaled_down |= self.scale_and_record(&rs, 0)?.0;
        }
        let old_running = old.iter().any(|rs| int(rs, "/status/replicas") > 0);
        if scaled_down || old_running {
            return self.sync_rollout_status(&all, new_rs.as_ref());
        }
        if new_rs.is_none() {
            (new_rs, old) = self.get_all(true)?;
            all = all_of(&old, new_rs.as_ref());
        }
        if let Some(rs) = &new_rs {
            let want = self.replicas();
            self.scale_and_record(rs, want)?;
        }
        let st = self.dep.get("status").cloned().unwrap_or_default();
        if ds::complete(&self.dep, &st) {
            objects::cleanup(self.store, self.rsdef, &self.dep, &old);
        }
        self.sync_rollout_status(&all, new_rs.as_ref())
    }

    /// `syncRolloutStatus`: write the status if it changed, else say when to check the
    /// progress deadline (`requeueStuckDeployment`).
    fn sync_rollout_status(
        &mut self,
        all: &[Value],
        new_rs: Option<&Value>,
    ) -> Result<Option<Duration>, String> {
        let st = ds::rollout_status(all, new_rs, &self.dep);
        if self.dep.get("status") == Some(&st) {
            return Ok(ds::stuck_requeue(&self.dep, &st));
        }
        self.dep["status"] = st;
        self.dep = objects::update_status(self.store, self.ddef, &self.dep)?;
        Ok(None)
    }

    /// `syncDeploymentStatus`: counts and `Available`, no progress estimate.
    fn sync_deployment_status(
        &mut self,
        all: &[Value],
        new_rs: Option<&Value>,
    ) -> Result<Option<Duration>, String> {
        let st = ds::calculate(all, new_rs, &self.dep, &now_rfc3339());
        if self.dep.get("status") != Some(&st) {
            self.dep["status"] = st;
            self.dep = objects::update_status(self.store, self.ddef, &self.dep)?;
        }
        Ok(None)
    }

    /// The new ReplicaSet (if any) and the old ones, `getAllReplicaSetsAndSyncRevision`.
    fn get_all(&mut self, create: bool) -> Result<(Option<Value>, Vec<Value>), String> {
        let new_rs = self.get_new_rs(create)?;
        let new_name = new_rs.as_ref().map(name_of);
        let old = self
            .owned
            .iter()
            .filter(|rs| Some(name_of(rs)) != new_name)
            .cloned()
            .collect();
        Ok((new_rs, old))
    }

    /// `getNewReplicaSet`.
    fn get_new_rs(&mut self, create: bool) -> Result<Option<Value>, String> {
        let template = self
            .dep
            .pointer("/spec/template")
            .cloned()
            .unwrap_or(json!({}));
        let new_idx = self.owned.iter().position(|rs| {
            rs.pointer("/spec/template")
                .is_some_and(|t| rev::equal_ignore_hash(t, &template))
        });
        let max_old = self
            .owned
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != new_idx)
            .map(|(_, rs)| rev::revision_of(rs))
            .max()
            .unwrap_or(0);
        let new_revision = max_old + 1;
        let ns = meta_str(&self.dep, "namespace")
            .unwrap_or("default")
            .to_string();
        if let Some(i) = new_idx {
            let rs = self.owned[i].clone();
            let min_ready = self.dep.pointer("/spec/minReadySeconds").cloned();
            let mut want = rs.clone();
            let ann = ensure_map(&mut want, "annotations");
            rev::copy_annotations(&self.dep, ann);
            rev::bump_revision(ann, new_revision);
            match min_ready.filter(|m| m.as_i64() != Some(0)) {
                Some(m) => {
                    obj_at(&mut want, "spec").insert("minReadySeconds".into(), m);
                }
                None => {
                    obj_at(&mut want, "spec").remove("minReadySeconds");
                }
            }
            if want != rs {
                let stored = self
                    .store
                    .modify(
                        self.rsdef,
                        Some(&ns),
                        &name_of(&rs),
                        Part::Main,
                        false,
                        |cur| {
                            let mut n = cur.clone();
                            n["metadata"]["annotations"] = want["metadata"]["annotations"].clone();
                            n["spec"] = want["spec"].clone();
                            Ok(n)
                        },
                    )
                    .map_err(|e| e.to_string())?;
                self.owned[i] = stored.clone();
                return Ok(Some(stored));
            }
            let mut needs_update = set_revision(&mut self.dep, rev::revision_of(&rs));
            let empty = ds::empty();
            let has_cond =
                ds::condition(self.dep.get("status").unwrap_or(&empty), PROGRESSING).is_some();
            if progress_deadline(&self.dep).is_some() && !has_cond {
                let msg = format!("Found new replica set \"{}\"", name_of(&rs));
                let cond =
                    ds::new_condition(PROGRESSING, "True", ds::FOUND_NEW_RS, &msg, &now_rfc3339());
                ds::set_condition(status_of(&mut self.dep), cond);
                needs_update = true;
            }
            if needs_update {
                self.dep = objects::update_status(self.store, self.ddef, &self.dep)?;
            }
            return Ok(Some(rs));
        }
        if !create {
            return Ok(None);
        }
        let collisions = self
            .dep
            .pointer("/status/collisionCount")
            .and_then(Value::as_u64)
            .map(|c| c as u32);
        let hash = rev::pod_template_hash(&template, collisions);
        let rs_name = format!("{}-{hash}", name_of(&self.dep));
        let want = self.replicas();
        let surge = rev::max_surge(&self.dep, want);
        let count = new_rs_replicas(&self.dep, &self.owned, 0);
        let body = new_replicaset(
            &self.dep,
            &template,
            &rs_name,
            &hash,
            new_revision,
            count,
            surge,
        );
        let rs = match self.store.create(self.rsdef, Some(&ns), body, false) {
            Ok(rs) => rs,
            Err(e) if e.reason == "AlreadyExists" => {
                // Someone else's ReplicaSet has our name: bump the collision count.
                let c = collisions.unwrap_or(0) + 1;
                self.store
                    .modify(
                        self.ddef,
                        Some(&ns),
                        &name_of(&self.dep),
                        Part::Status,
                        false,
                        |cur| {
                            let mut n = cur.clone();
                            obj_at(&mut n, "status").insert("collisionCount".into(), json!(c));
                            Ok(n)
                        },
                    )
                    .map_err(|e| e.to_string())?;
                return Err(format!("replica set {rs_name} exists: collision count {c}"));
            }
            Err(e) => return Err(e.to_string()),
        };
        if count > 0 {
            objects::scaling_event(self.store, &self.dep, &rs_name, 0, count);
        }
        set_revision(&mut self.dep, new_revision);
        if progress_deadline(&self.dep).is_some() {
            let msg = format!("Created new replica set \"{rs_name}\"");
            let cond = ds::new_condition(
                PROGRESSING,
                "True",
                ds::NEW_RS_CREATED,
                &msg,
                &now_rfc3339(),
            );
            ds::set_condition(status_of(&mut self.dep), cond);
        }
        self.dep = objects::update_status(self.store, self.ddef, &self.dep)?;
        self.owned.push(rs.clone());
        Ok(Some(rs))
    }

    /// `scaleReplicaSetAndRecordEvent`: nothing when the size is already right.
    pub fn scale_and_record(&self, rs: &Value, to: i64) -> Result<(bool, Value), String> {
        if int(rs, "/spec/replicas") == to {
            return Ok((false, rs.clone()));
        }
        Ok((true, self.scale_rs(rs, to)?))
    }

    /// `scaleReplicaSet`.
    pub fn scale_rs(&self, rs: &Value, to: i64) -> Result<Value, String> {
        let want = self.replicas();
        let surge = rev::max_surge(&self.dep, want);
        objects::scale(self.store, self.rsdef, &self.dep, rs, to, want, surge)
    }
}

/// `NewRSNewReplicas`: how many replicas the new ReplicaSet may have now (RollingUpdate:
/// up to `replicas + maxSurge` pods in all; Recreate: all of them).
pub(super) fn new_rs_replicas(dep: &Value, all: &[Value], new_now: i64) -> i64 {
    let want = replicas(dep);
    if dep.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("Recreate") {
        return want;
    }
    let current: i64 = all.iter().map(|rs| int(rs, "/spec/replicas")).sum();
    let max_total = want + rev::max_surge(dep, want);
    if current >= max_total {
        return new_now;
    }
    new_now + (max_total - current).min(want - new_now)
}

fn all_of(old: &[Value], new_rs: Option<&Value>) -> Vec<Value> {
    old.iter().cloned().chain(new_rs.cloned()).collect()
}

fn status_of(dep: &mut Value) -> &mut Value {
    if !dep.get("status").is_some_and(Value::is_object) {
        dep["status"] = ds::empty();
    }
    &mut dep["status"]
}

/// `SetDeploymentRevision`: whether the annotation changed.
fn set_revision(dep: &mut Value, revision: i64) -> bool {
    let r = json!(revision.to_string());
    let ann = ensure_map(dep, "annotations");
    if ann.get(rev::REVISION) == Some(&r) {
        return false;
    }
    ann.insert(rev::REVISION.into(), r);
    true
}
