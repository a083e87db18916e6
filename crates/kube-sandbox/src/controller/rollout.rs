//! The simulated Argo Rollouts controller (argoproj.io/v1alpha1 Rollout), after
//! argo-rollouts' `rollout/controller.go` (`syncHandler`, `newRolloutContext`) and
//! `rollout/sync.go`.
//!
//! Per Rollout (key = namespace/name) a reconcile:
//! 1. skips Rollouts labelled `argo-rollouts.argoproj.io/controller-instance-id` (the real
//!    controller without `--instance-id` only takes unlabelled ones), records
//!    `RolloutAddedToInformer` for a Rollout it has not seen yet, skips Rollouts being deleted;
//! 2. resolves `spec.workloadRef` (an apps/v1 Deployment: its template, its selector if the
//!    Rollout has none, and the `rollout.argoproj.io/workload-generation` annotation);
//! 3. validates (an `InvalidSpec` condition and phase Degraded on failure), defaults
//!    `spec.replicas` to 1 by an update, as the real controller does;
//! 4. finds its ReplicaSets and the new one, creating `<rollout>-<hash>` if none matches,
//!    syncs revisions (`rollout.argoproj.io/revision` on the RS and the Rollout);
//! 5. updates the Paused / Progressing conditions on pause, resume and retry
//!    (`checkPausedConditions`), then runs the canary (`rollout_canary.rs`,
//!    `rollout_replicas.rs`) or blue-green (`rollout_bluegreen.rs`) strategy, which ends by
//!    publishing the status (`rollout_status.rs`, `rollout_conditions.rs`).
//!
//! Steps 2-4 are `rollout_prepare.rs` and `rollout_validate.rs`; reading the spec is
//! `rollout_spec.rs`; ReplicaSet writes, Events and the simulated pods are `rollout_rs.rs`;
//! Services are `rollout_svc.rs`.
//!
//! It is re-run on changes to the Rollout, its ReplicaSets, the Deployment it references and
//! the Services it names, and on timers (pods becoming ready after `rollout_delay`, timed
//! pauses, scale-down deadlines, progress deadlines).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::objects::{name_of, obj_at};
use super::rollout_conditions as conditions;
use super::rollout_prepare::{
    create_new_rs, invalid, referenced_services, resolve_workload, sync_revision,
};
use super::rollout_rs::{self as rs, Pods, hash_of, rollout_owner_uid};
use super::rollout_spec::{self as spec, INSTANCE_ID, text};
use super::rollout_status::{self as status, PauseCtx};
use super::rollout_validate::validate;
use super::{Controller, Key, Pace, Requeue, rollout_bluegreen, rollout_canary};
use crate::resources::ResourceDef;
use crate::store::{Event, Store, meta_str};
use crate::writes::Part;

/// Everything one reconcile of one Rollout works with (the real `rolloutContext`).
pub struct Ctx<'a> {
    pub store: &'a Store,
    pub rodef: ResourceDef,
    pub rsdef: ResourceDef,
    /// The Rollout as read, its template and selector resolved from a workloadRef, its
    /// status the stored one (plus conditions set earlier in this reconcile).
    pub ro: Value,
    /// The status as last stored: what the final write is diffed against.
    pub stored: Value,
    pub new_rs: Option<Value>,
    pub stable_rs: Option<Value>,
    /// All owned ReplicaSets, oldest first.
    pub all: Vec<Value>,
    /// Those neither new nor stable.
    pub others: Vec<Value>,
    pub pause: PauseCtx,
    /// `status.canary.weights` being computed.
    pub weights: Option<Value>,
    pub requeue: Option<Duration>,
    pods: &'a mut Pods,
    pace: &'a Pace,
}

impl Ctx<'_> {
    /// Ask to be reconciled again after `d` (capped at an hour; a slightly late wake-up
    /// avoids waking just before a second-granular deadline).
    pub fn wake_in(&mut self, d: Duration) {
        let d = d.min(Duration::from_secs(3600)) + Duration::from_millis(5);
        self.requeue = Some(self.requeue.map_or(d, |r| r.min(d)));
    }

    pub fn ns(&self) -> String {
        meta_str(&self.ro, "namespace")
            .unwrap_or("default")
            .to_string()
    }

    pub fn service_def(&self) -> Option<ResourceDef> {
        self.store.registry.find("", "v1", "services").cloned()
    }

    /// Re-read the owned ReplicaSets (after scaling them), let their simulated pods
    /// progress, and sort them into new / stable / others again.
    pub fn refresh(&mut self) -> Result<(), String> {
        let uid = meta_str(&self.ro, "uid").unwrap_or_default().to_string();
        let ns = self.ns();
        let mut all = rs::owned(self.store, &self.rsdef, &ns, &uid);
        for r in all.iter_mut() {
            if let Some(left) = self.pods.sync(self.store, &self.rsdef, r, self.pace)? {
                self.wake_in(left);
            }
            if let Ok(fresh) = self.store.get(&self.rsdef, Some(&ns), &name_of(r)) {
                *r = fresh;
            }
        }
        let new_name = self.new_rs.as_ref().map(name_of);
        self.new_rs = all.iter().find(|r| Some(name_of(r)) == new_name).cloned();
        self.classify(all);
        Ok(())
    }

    fn classify(&mut self, all: Vec<Value>) {
        let stable_hash = text(&self.ro, "/status/stableRS").to_string();
        let new_name = self.new_rs.as_ref().map(name_of);
        self.stable_rs = if stable_hash.is_empty() {
            None
        } else if self
            .new_rs
            .as_ref()
            .is_some_and(|r| hash_of(r) == stable_hash)
        {
            self.new_rs.clone()
        } else {
            all.iter().find(|r| hash_of(r) == stable_hash).cloned()
        };
        let stable_name = self.stable_rs.as_ref().map(name_of);
        self.others = all
            .iter()
            .filter(|r| {
                let n = Some(name_of(r));
                n != new_name && n != stable_name
            })
            .cloned()
            .collect();
        self.all = all;
    }

    /// The Rollout's conditions as this reconcile sees them.
    pub fn set_condition(&mut self, c: Value) {
        let mut conds = conditions::conditions_of(self.ro.get("status").unwrap_or(&Value::Null));
        conditions::set_condition(&mut conds, c);
        if !self.ro.get("status").is_some_and(Value::is_object) {
            self.ro["status"] = json!({});
        }
        self.ro["status"]["conditions"] = json!(conds);
    }
}

pub struct RolloutController {
    /// How the simulated pods behave (ready after a delay, or never for some images).
    pace: Pace,
    pods: Pods,
    /// The Rollouts this controller has seen (its informer's content), by key, with their
    /// uid: a Rollout not in it yet gets the `RolloutAddedToInformer` Event.
    known: HashMap<Key, String>,
}

impl RolloutController {
    pub fn new(pace: Pace) -> Self {
        Self {
            pace,
            pods: Pods::default(),
            known: HashMap::new(),
        }
    }

    /// The informer's `AddFunc` (`rollout/controller.go`, `NewController`): a Normal Event
    /// `RolloutAddedToInformer` "Rollout resource added to informer: <ns>/<name>", once per
    /// Rollout the controller's informer takes in: on its creation, or for every Rollout
    /// when the controller starts, or when a Rollout loses the instance-id label that kept
    /// it out of the informer.
    fn added_to_informer(&mut self, store: &Store, key: &Key, ro: &Value) {
        let uid = meta_str(ro, "uid").unwrap_or_default().to_string();
        if self.known.get(key) == Some(&uid) {
            return;
        }
        self.known.insert(key.clone(), uid);
        let msg = format!("Rollout resource added to informer: {}/{}", key.0, key.1);
        rs::event(store, ro, "Normal", "RolloutAddedToInformer", &msg);
    }

    /// The informer's `DeleteFunc`: a Normal Event `RolloutDeleted` "Rollout <name>/<namespace>
    /// is deleted." (upstream's arguments in that order) when a Rollout it had leaves it:
    /// deleted, or labelled with an instance id.
    fn removed_from_informer(&mut self, store: &Store, key: &Key) {
        let Some(uid) = self.known.remove(key) else {
            return;
        };
        let ro = json!({"metadata": {"name": key.1, "namespace": key.0, "uid": uid}});
        let msg = format!("Rollout {}/{} is deleted.", key.1, key.0);
        rs::event(store, &ro, "Normal", "RolloutDeleted", &msg);
    }
}

fn rollout_def(store: &Store) -> Option<&ResourceDef> {
    store.registry.find("argoproj.io", "v1alpha1", "rollouts")
}

/// Rollouts in `ns` matching `f`, as keys.
fn rollouts_where(store: &Store, ns: &str, f: impl Fn(&Value) -> bool) -> Vec<Key> {
    let Some(def) = rollout_def(store) else {
        return vec![];
    };
    let (ros, _) = store.list(def, Some(ns), f);
    ros.iter().map(|r| (ns.to_string(), name_of(r))).collect()
}

impl Controller for RolloutController {
    fn name(&self) -> &'static str {
        "rollout"
    }

    fn keys_for(&self, store: &Store, ev: &Event) -> Vec<Key> {
        let ns = ev.namespace.as_str();
        let name = name_of(&ev.object);
        match ev.key.as_str() {
            "argoproj.io/rollouts" => vec![(ev.namespace.clone(), name)],
            "apps/replicasets" => {
                let Some(uid) = rollout_owner_uid(&ev.object)
                    .or_else(|| ev.old.as_ref().and_then(rollout_owner_uid))
                else {
                    return vec![];
                };
                rollouts_where(store, ns, |r| meta_str(r, "uid") == Some(uid))
            }
            "apps/deployments" => rollouts_where(store, ns, |r| {
                text(r, "/spec/workloadRef/kind") == "Deployment"
                    && text(r, "/spec/workloadRef/name") == name
            }),
            "/services" => rollouts_where(store, ns, |r| {
                ["activeService", "previewService"]
                    .iter()
                    .any(|f| text(r, &format!("/spec/strategy/blueGreen/{f}")) == name)
                    || ["canaryService", "stableService"]
                        .iter()
                        .any(|f| text(r, &format!("/spec/strategy/canary/{f}")) == name)
            }),
            _ => vec![],
        }
    }

    fn all_keys(&self, store: &Store) -> Vec<Key> {
        let Some(def) = rollout_def(store) else {
            return vec![];
        };
        let (ros, _) = store.list(def, None, |_| true);
        ros.iter()
            .map(|r| {
                (
                    meta_str(r, "namespace").unwrap_or_default().to_string(),
                    name_of(r),
                )
            })
            .collect()
    }

    fn reconcile(&mut self, store: &Store, key: &Key) -> Requeue {
        let (Some(rodef), Some(rsdef)) = (
            rollout_def(store).cloned(),
            store.registry.find("apps", "v1", "replicasets").cloned(),
        ) else {
            return Requeue::Done;
        };
        let Ok(ro) = store.get(&rodef, Some(&key.0), &key.1) else {
            self.removed_from_informer(store, key);
            return Requeue::Done;
        };
        let labelled = ro
            .pointer("/metadata/labels")
            .is_some_and(|l| l.get(INSTANCE_ID).is_some());
        if labelled {
            // Outside the informer (its list options select unlabelled Rollouts only).
            self.removed_from_informer(store, key);
            return Requeue::Done;
        }
        self.added_to_informer(store, key, &ro);
        if ro.pointer("/metadata/deletionTimestamp").is_some() {
            return Requeue::Done;
        }
        let stored = ro.get("status").cloned().unwrap_or(json!({}));
        let mut ctx = Ctx {
            store,
            rodef,
            rsdef,
            ro,
            stored,
            new_rs: None,
            stable_rs: None,
            all: vec![],
            others: vec![],
            pause: PauseCtx::default(),
            weights: None,
            requeue: None,
            pods: &mut self.pods,
            pace: &self.pace,
        };
        match sync(&mut ctx) {
            Ok(()) => ctx.requeue.map_or(Requeue::Done, Requeue::After),
            Err(e) => {
                tracing::debug!(rollout = %key.1, error = %e, "rollout sync retry");
                Requeue::After(Duration::from_millis(50))
            }
        }
    }
}

fn sync(ctx: &mut Ctx) -> Result<(), String> {
    if !ctx.ro.get("spec").is_some_and(Value::is_object) {
        return invalid(ctx, "spec: Required value");
    }
    if let Err(e) = resolve_workload(ctx)? {
        return invalid(ctx, &e);
    }
    let template = ctx
        .ro
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(json!({}));
    let selector = ctx.ro.pointer("/spec/selector").cloned();
    if let Err(e) = validate(&ctx.ro, &template, selector.as_ref()) {
        return invalid(ctx, &e);
    }
    if let Err(e) = referenced_services(ctx) {
        return invalid(ctx, &e);
    }
    if ctx
        .ro
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .is_none()
    {
        let (ns, name) = (ctx.ns(), name_of(&ctx.ro));
        ctx.store
            .modify(&ctx.rodef, Some(&ns), &name, Part::Main, false, |cur| {
                let mut n = cur.clone();
                obj_at(&mut n, "spec").insert("replicas".into(), json!(1));
                Ok(n)
            })
            .map_err(|e| e.to_string())?;
        return Ok(());
    }
    // A valid spec clears an earlier InvalidSpec condition.
    if let Some(c) = ctx
        .ro
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    {
        c.retain(|c| text(c, "/type") != "InvalidSpec");
    }
    let selector = selector.unwrap_or(json!({}));
    let uid = meta_str(&ctx.ro, "uid").unwrap_or_default().to_string();
    let all = rs::owned(ctx.store, &ctx.rsdef, &ctx.ns(), &uid);
    let collisions = ctx
        .ro
        .pointer("/status/collisionCount")
        .and_then(Value::as_i64);
    let hash = spec::pod_template_hash(&template, collisions);
    ctx.new_rs = rs::find_new(&all, &template, &hash).map(|i| all[i].clone());
    ctx.classify(all);
    if ctx.new_rs.is_none() && !create_new_rs(ctx, &template, &selector, &hash, collisions)? {
        return Ok(());
    }
    ctx.refresh()?;
    if spec::flag(&ctx.ro, "/status/abort")
        && text(&ctx.ro, "/status/stableRS") == text(&ctx.ro, "/status/currentPodHash")
    {
        // "Removing abort condition from fully promoted rollout".
        ctx.pause.remove_abort = true;
    }
    ctx.weights = ctx.ro.pointer("/status/canary/weights").cloned();
    if status::check_paused(ctx)? {
        return Ok(());
    }
    sync_revision(ctx)?;
    if spec::is_blue_green(&ctx.ro) {
        rollout_bluegreen::sync(ctx)
    } else {
        rollout_canary::sync(ctx)
    }
}
