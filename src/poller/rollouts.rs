//! What the poller knows about rollouts: the daemon's Kubernetes index, seen through
//! [`RolloutView`] so that the poller's tests can use a fixed index.
//!
//! Data model: [`RolloutView::recent`] lists the workloads whose current ReplicaSet became
//! current in the window (by [`WorkloadKey`]); [`RolloutView::workload_of`] says which workload a
//! query result series is about, exactly as correlation resolves an alert with those labels,
//! so the post-rollout form judges a workload by the series its alert would be blamed on.

use std::sync::{Arc, RwLock};

use jiff::Timestamp;

use crate::core::alert::LabelSet;
use crate::core::correlate::{Correlation, CorrelationLabels, Target, correlate};
use crate::core::workload::{RecentRollout, WorkloadIndex, WorkloadKey};

/// Rollouts as the poller needs them.
pub trait RolloutView: Send + Sync {
    /// Workloads whose current ReplicaSet became current at or after `after`.
    fn recent(&self, after: Timestamp) -> Vec<RecentRollout>;
    /// The workload a series with these labels is about, if correlation finds one.
    fn workload_of(&self, labels: &LabelSet) -> Option<WorkloadKey>;
}

/// The daemon's shared index with its correlation labels.
pub struct IndexView {
    index: Arc<RwLock<WorkloadIndex>>,
    labels: CorrelationLabels,
}

impl IndexView {
    pub fn new(index: Arc<RwLock<WorkloadIndex>>, labels: CorrelationLabels) -> IndexView {
        IndexView { index, labels }
    }

    fn read<T>(&self, f: impl FnOnce(&WorkloadIndex) -> T) -> T {
        match self.index.read() {
            Ok(guard) => f(&guard),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }
}

impl RolloutView for IndexView {
    fn recent(&self, after: Timestamp) -> Vec<RecentRollout> {
        self.read(|index| index.rollouts_since(after))
    }

    fn workload_of(&self, labels: &LabelSet) -> Option<WorkloadKey> {
        self.read(|index| workload_key(labels, index, &self.labels))
    }
}

/// The workload correlation resolves `labels` to; traffic objects are not workloads.
pub fn workload_key(
    labels: &LabelSet,
    index: &WorkloadIndex,
    rules: &CorrelationLabels,
) -> Option<WorkloadKey> {
    match correlate(labels, index, rules) {
        Correlation::Found {
            target: Target::Deployment(d),
            ..
        } => Some(WorkloadKey::deployment(&d.namespace, &d.name)),
        Correlation::Found {
            target: Target::Rollout(r),
            ..
        } => Some(WorkloadKey::rollout(&r.namespace, &r.name)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::workload::tests::{mk_deployment, mk_rollout, mk_rs, ts};

    #[test]
    fn recent_lists_deployments_and_rollouts_by_the_time_they_became_current() {
        let mut index = WorkloadIndex::default();
        index.apply_deployment(mk_deployment("web", "nginx:2"), ts(0));
        index.apply_replica_set(mk_rs("web", "a1", "nginx:1", 1, ts(0)), ts(0));
        index.apply_replica_set(mk_rs("web", "b2", "nginx:2", 2, ts(600)), ts(600));
        index.apply_deployment(mk_deployment("old", "old:1"), ts(0));
        index.apply_replica_set(mk_rs("old", "c3", "old:1", 1, ts(0)), ts(0));
        let mut rollout = mk_rollout("default", "cart");
        rollout.uid = "uid-cart".into();
        index.apply_rollout(rollout, ts(0));
        let mut rs = mk_rs("cart", "abc", "cart:1", 1, ts(700));
        rs.owner_uid = Some("uid-cart".into());
        rs.pod_hash = Some("abc".into());
        index.apply_replica_set(rs, ts(700));
        let view = IndexView::new(Arc::new(RwLock::new(index)), CorrelationLabels::default());
        let mut recent = view.recent(ts(300));
        recent.sort_by(|a, b| a.workload.cmp(&b.workload));
        assert_eq!(
            recent,
            vec![
                RecentRollout {
                    workload: WorkloadKey::deployment("default", "web"),
                    since: ts(600),
                },
                RecentRollout {
                    workload: WorkloadKey::rollout("default", "cart"),
                    since: ts(700),
                },
            ]
        );
        let labels = |pairs: &[(&str, &str)]| -> LabelSet {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            view.workload_of(&labels(&[("namespace", "default"), ("deployment", "web")])),
            Some(WorkloadKey::deployment("default", "web"))
        );
        assert_eq!(
            view.workload_of(&labels(&[("namespace", "default"), ("deployment", "cart")])),
            Some(WorkloadKey::rollout("default", "cart"))
        );
        assert_eq!(
            view.workload_of(&labels(&[("namespace", "default"), ("deployment", "nope")])),
            None
        );
    }
}
