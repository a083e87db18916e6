//! The simulated Deployment controller.
//!
//! Per Deployment (key = namespace/name) it keeps only the instant the current rollout
//! started; everything else is read from the store each time. A reconcile:
//! 1. finds the ReplicaSets whose controller ownerReference is the Deployment's uid, and the
//!    "new" one: the oldest whose template equals the Deployment's ignoring
//!    `pod-template-hash`;
//! 2. unless paused, creates it if missing (`<name>-<hash>`, bumping `status.collisionCount`
//!    on a name clash) or, if reused (a rollback), gives it revision max(old)+1 and appends
//!    its previous number to `revision-history`; copies annotations; sets the Deployment's
//!    revision annotation through `/status` (as the real controller does, so generation is
//!    not bumped);
//! 3. while the rollout is younger than `rollout_delay`, publishes progressing status
//!    (new RS scaled up, its pods not ready yet); once it is older, scales old ReplicaSets to
//!    0, marks every replica ready and available, publishes the complete status
//!    (`NewReplicaSetAvailable`) and deletes old ReplicaSets beyond `revisionHistoryLimit`.
//!
//! Every write goes through the store with the usual no-op rule, so a converged Deployment
//! produces no writes and the loop settles.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::objects::{
    self, controller_uid, counts, ensure_map, int, max_unavailable, name_of, new_replicaset,
    obj_at, status,
};
use super::revision as rev;
use super::{Controller, Key, Pace, Requeue};
use crate::resources::ResourceDef;
use crate::store::{Event, Store, meta_str, now_rfc3339};
use crate::writes::Part;

pub struct DeploymentController {
    delay: Duration,
    /// Rollout start per Deployment, with the target it was started for.
    started: HashMap<Key, (String, Instant)>,
    /// Not read yet: pods that never become ready (see [`Pace`]).
    #[allow(dead_code)]
    pace: Pace,
    deployments: Option<ResourceDef>,
    replicasets: Option<ResourceDef>,
}

impl DeploymentController {
    pub fn new(pace: Pace) -> Self {
        Self {
            delay: pace.rollout_delay,
            pace,
            started: HashMap::new(),
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
                let Some(uid) =
                    controller_uid(&ev.object).or_else(|| ev.old.as_ref().and_then(controller_uid))
                else {
                    return vec![];
                };
                let Some(def) = store.registry.find("apps", "v1", "deployments") else {
                    return vec![];
                };
                let (deps, _) = store.list(def, Some(&ev.namespace), |d| {
                    meta_str(d, "uid") == Some(uid)
                });
                deps.iter()
                    .map(|d| (ev.namespace.clone(), name_of(d)))
                    .collect()
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
            self.started.remove(key);
            return Requeue::Done;
        };
        if dep.pointer("/metadata/deletionTimestamp").is_some() {
            return Requeue::Done;
        }
        match self.sync(store, &ddef, &rsdef, key, &dep) {
            Ok(r) => r,
            // A conflicting concurrent write or a name clash: look again shortly.
            Err(e) => {
                tracing::debug!(deployment = %name, error = %e, "deployment sync retry");
                Requeue::After(Duration::from_millis(20))
            }
        }
    }
}

impl DeploymentController {
    fn sync(
        &mut self,
        store: &Store,
        ddef: &ResourceDef,
        rsdef: &ResourceDef,
        key: &Key,
        dep: &Value,
    ) -> Result<Requeue, String> {
        let (ns, name) = key;
        let uid = meta_str(dep, "uid").unwrap_or_default().to_string();
        let template = dep.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let replicas = dep
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let generation = int(dep, "/metadata/generation");
        let paused = dep.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
        let now = now_rfc3339();
        let (mut owned, _) = store.list(rsdef, Some(ns), |rs| {
            controller_uid(rs) == Some(uid.as_str())
        });
        owned.sort_by(|a, b| {
            (meta_str(a, "creationTimestamp"), rev::revision_of(a))
                .cmp(&(meta_str(b, "creationTimestamp"), rev::revision_of(b)))
        });
        let new_idx = owned.iter().position(|rs| {
            rs.pointer("/spec/template")
                .is_some_and(|t| rev::equal_ignore_hash(t, &template))
        });
        let max_old = owned
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != new_idx)
            .map(|(_, rs)| rev::revision_of(rs))
            .max()
            .unwrap_or(0);
        let mut conds: Vec<Value> = dep
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();

        if paused && new_idx.is_none() {
            rev::set_condition(
                &mut conds,
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused",
                &now,
            );
            objects::write_status(
                store,
                ddef,
                ns,
                name,
                None,
                status(generation, &owned, None, &conds, dep),
            )?;
            return Ok(Requeue::Done);
        }

        // 1-2: the new ReplicaSet, created or reused.
        let surge = rev::max_surge(dep, replicas);
        let new_rs = match new_idx {
            Some(i) => {
                let rs = owned[i].clone();
                let new = store
                    .modify(rsdef, Some(ns), &name_of(&rs), Part::Main, false, |cur| {
                        let mut n = cur.clone();
                        let ann = ensure_map(&mut n, "annotations");
                        rev::copy_annotations(dep, ann);
                        rev::bump_revision(ann, max_old + 1);
                        Ok(n)
                    })
                    .map_err(|e| e.to_string())?;
                if !conds
                    .iter()
                    .any(|c| c.get("type").and_then(Value::as_str) == Some("Progressing"))
                {
                    let msg = format!("Found new replica set \"{}\"", name_of(&new));
                    rev::set_condition(
                        &mut conds,
                        "Progressing",
                        "True",
                        "FoundNewReplicaSet",
                        &msg,
                        &now,
                    );
                }
                owned[i] = new.clone();
                new
            }
            None => {
                let collisions = dep
                    .pointer("/status/collisionCount")
                    .and_then(Value::as_u64)
                    .map(|c| c as u32);
                let hash = rev::pod_template_hash(&template, collisions);
                let rs_name = format!("{name}-{hash}");
                let active_old = owned.iter().any(|rs| int(rs, "/spec/replicas") > 0);
                let body = new_replicaset(
                    dep,
                    &template,
                    &rs_name,
                    &hash,
                    max_old + 1,
                    if active_old { 0 } else { replicas },
                    surge,
                );
                match store.create(rsdef, Some(ns), body, false) {
                    Ok(rs) => {
                        let initial = int(&rs, "/spec/replicas");
                        if initial > 0 {
                            objects::scaling_event(store, dep, &rs_name, 0, initial);
                        }
                        let msg = format!("Created new replica set \"{rs_name}\"");
                        rev::set_condition(
                            &mut conds,
                            "Progressing",
                            "True",
                            "NewReplicaSetCreated",
                            &msg,
                            &now,
                        );
                        owned.push(rs.clone());
                        rs
                    }
                    Err(e) if e.reason == "AlreadyExists" => {
                        // Someone else's ReplicaSet has our name: bump the collision count.
                        let c = collisions.unwrap_or(0) + 1;
                        store
                            .modify(ddef, Some(ns), name, Part::Status, false, |cur| {
                                let mut n = cur.clone();
                                obj_at(&mut n, "status").insert("collisionCount".into(), json!(c));
                                Ok(n)
                            })
                            .map_err(|e| e.to_string())?;
                        return Ok(Requeue::After(Duration::ZERO));
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
        };
        let new_name = name_of(&new_rs);
        let new_rev = rev::revision_of(&new_rs);

        // 3: progress, or convergence after the delay.
        let target = format!("{new_name}/{replicas}/{generation}");
        let converged = owned.iter().all(|rs| {
            let want = if name_of(rs) == new_name { replicas } else { 0 };
            int(rs, "/spec/replicas") == want
                && int(rs, "/status/replicas") == want
                && int(rs, "/status/availableReplicas") == want
        });
        let started = match self.started.get(key) {
            Some((t, at)) if *t == target => *at,
            _ => {
                let at = Instant::now();
                self.started.insert(key.clone(), (target, at));
                at
            }
        };
        let elapsed = started.elapsed();
        if converged || elapsed >= self.delay {
            for rs in &owned {
                let want = if name_of(rs) == new_name { replicas } else { 0 };
                objects::scale(store, rsdef, dep, rs, want, replicas, surge)?;
                store
                    .modify(rsdef, Some(ns), &name_of(rs), Part::Status, false, |cur| {
                        let mut n = cur.clone();
                        let mut st = counts(&[
                            ("replicas", want),
                            ("fullyLabeledReplicas", want),
                            ("readyReplicas", want),
                            ("availableReplicas", want),
                        ]);
                        st.insert(
                            "observedGeneration".into(),
                            json!(int(cur, "/metadata/generation")),
                        );
                        obj_at(&mut n, "status").clear();
                        obj_at(&mut n, "status").extend(st);
                        Ok(n)
                    })
                    .map_err(|e| e.to_string())?;
            }
            let (owned_now, _) = store.list(rsdef, Some(ns), |rs| {
                controller_uid(rs) == Some(uid.as_str())
            });
            rev::set_condition(
                &mut conds,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
                &now,
            );
            let msg = format!("ReplicaSet \"{new_name}\" has successfully progressed.");
            rev::set_condition(
                &mut conds,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                &msg,
                &now,
            );
            objects::write_status(
                store,
                ddef,
                ns,
                name,
                Some(new_rev),
                status(generation, &owned_now, Some(&new_name), &conds, dep),
            )?;
            objects::cleanup(store, rsdef, ns, dep, &owned_now, &new_name)?;
            return Ok(Requeue::Done);
        }
        // In progress: the new ReplicaSet is scaled up, its pods are not ready yet.
        objects::scale(store, rsdef, dep, &new_rs, replicas, replicas, surge)?;
        let (owned_now, _) = store.list(rsdef, Some(ns), |rs| {
            controller_uid(rs) == Some(uid.as_str())
        });
        let available: i64 = owned_now
            .iter()
            .map(|rs| int(rs, "/status/availableReplicas"))
            .sum();
        let (st, reason, msg) =
            if available >= replicas - max_unavailable(dep, replicas) && available > 0 {
                (
                    "True",
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.",
                )
            } else {
                (
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.",
                )
            };
        rev::set_condition(&mut conds, "Available", st, reason, msg, &now);
        let progressing = conds
            .iter()
            .find(|c| c.get("type").and_then(Value::as_str) == Some("Progressing"));
        if progressing
            .and_then(|c| c.get("reason"))
            .and_then(Value::as_str)
            == Some("NewReplicaSetAvailable")
        {
            let msg = format!("ReplicaSet \"{new_name}\" is progressing.");
            rev::set_condition(
                &mut conds,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                &msg,
                &now,
            );
        }
        objects::write_status(
            store,
            ddef,
            ns,
            name,
            Some(new_rev),
            status(generation, &owned_now, Some(&new_name), &conds, dep),
        )?;
        Ok(Requeue::After(self.delay.saturating_sub(elapsed)))
    }
}
