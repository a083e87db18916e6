//! The ReplicaSet controller and the kubelets, as far as a Deployment can tell: the pods of
//! each ReplicaSet a Deployment owns, kept in memory as one instant per pod (when it becomes
//! ready), and the ReplicaSet's `status` written from them.
//!
//! A ReplicaSet scaled up gets its pods at once (`status.replicas` follows `spec.replicas`);
//! each becomes ready `rollout_delay` after it was created and available `minReadySeconds`
//! later, except pods of a template running one of [`Pace::unready_images`], which never do.
//! Scaling down removes the pods that would be ready last first, as the ReplicaSet
//! controller deletes not-ready pods before ready ones (`getPodsToDelete`). A ReplicaSet
//! seen for the first time (after a restart) is taken at its status: its available pods
//! stay available, the others start over.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::objects::{counts, int, name_of, obj_at};
use super::{Key, Pace};
use crate::resources::ResourceDef;
use crate::store::{Store, meta_str};
use crate::writes::Part;

#[derive(Default)]
pub struct Pods {
    /// Per Deployment, per ReplicaSet name: when each of its pods is (or will be) ready.
    ready_at: HashMap<Key, HashMap<String, Vec<Instant>>>,
}

impl Pods {
    /// Keep only the ReplicaSets of Deployment `dep` that still exist (`alive`).
    pub fn retain(&mut self, dep: &Key, alive: &[Value]) {
        if let Some(m) = self.ready_at.get_mut(dep) {
            m.retain(|rs, _| alive.iter().any(|a| name_of(a) == *rs));
        }
    }

    /// Forget a deleted Deployment.
    pub fn forget(&mut self, dep: &Key) {
        self.ready_at.remove(dep);
    }

    /// Bring one ReplicaSet's pods to its `spec.replicas` and write its status; returns
    /// how long until the next of its pods becomes available, if one is waiting to.
    pub fn sync(
        &mut self,
        store: &Store,
        rsdef: &ResourceDef,
        dep: &Key,
        rs: &Value,
        pace: &Pace,
    ) -> Result<Option<Duration>, String> {
        let ns = meta_str(rs, "namespace").unwrap_or("default").to_string();
        let want = int(rs, "/spec/replicas").max(0) as usize;
        let never = pace.never_ready(rs);
        let min_ready = Duration::from_secs(int(rs, "/spec/minReadySeconds").max(0) as u64);
        let now = Instant::now();
        let pods = self
            .ready_at
            .entry(dep.clone())
            .or_default()
            .entry(name_of(rs))
            .or_insert_with(|| {
                let available = (int(rs, "/status/availableReplicas").max(0) as usize).min(want);
                let already = now.checked_sub(min_ready).unwrap_or(now);
                let mut p = vec![already; available];
                p.resize(want, now + pace.rollout_delay);
                p
            });
        pods.sort();
        pods.resize(want, now + pace.rollout_delay);
        let (ready, available) = if never {
            (0, 0)
        } else {
            (
                pods.iter().filter(|t| **t <= now).count(),
                pods.iter().filter(|t| **t + min_ready <= now).count(),
            )
        };
        let next = if never {
            None
        } else {
            pods.iter()
                .map(|t| *t + min_ready)
                .filter(|t| *t > now)
                .min()
                .map(|t| t - now)
        };
        let want = want as i64;
        store
            .modify(rsdef, Some(&ns), &name_of(rs), Part::Status, false, |cur| {
                let mut n = cur.clone();
                let mut st = counts(&[
                    ("replicas", want),
                    ("fullyLabeledReplicas", want),
                    ("readyReplicas", ready as i64),
                    ("availableReplicas", available as i64),
                ]);
                st.insert(
                    "observedGeneration".into(),
                    json!(int(cur, "/metadata/generation")),
                );
                let status = obj_at(&mut n, "status");
                status.clear();
                status.extend(st);
                Ok(n)
            })
            .map_err(|e| e.to_string())?;
        Ok(next)
    }
}
