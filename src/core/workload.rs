//! The workload index: what rollbackd knows about Deployments and their ReplicaSets.
//!
//! Watches feed it through `apply_*`, `delete_*` and `reset_*` (kubert's
//! `IndexNamespacedResource` shape); it holds no business logic beyond answering "which
//! ReplicaSet is current" and "when did it become current". Objects are kept as plain domain
//! structs with their pod templates as JSON, so the engine and the undo plan need no kube types.
//!
//! Rollout time: a ReplicaSet becomes current either when it is created for a new template or
//! when a rollback reuses it. Kubernetes records no time for the second case, so the index notes
//! the moment it *sees* the current ReplicaSet of a Deployment change, and the rollout time is
//! the later of that moment and the ReplicaSet's creation. After a restart a reused ReplicaSet
//! therefore looks old, which errs towards not acting.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::alert::LabelSet;
use super::rollout::{ROLLOUT_HASH_LABEL, RolloutState};
use super::traffic::{ServiceState, TrafficChange, TrafficKind, VirtualServiceState};

/// The label the Deployment controller adds to pod templates and ReplicaSet selectors.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// The revision annotation on Deployments and their ReplicaSets.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

/// Namespace and name: how objects are addressed in the index.
pub type ObjectKey = (String, String);

#[derive(Clone, Debug, PartialEq)]
pub struct DeploymentState {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    pub paused: bool,
    /// `spec.template`.
    pub template: PodTemplate,
    pub annotations: LabelSet,
    /// `metadata.labels` (Argo CD's tracking label lives here).
    pub labels: LabelSet,
    /// `spec.selector` as a label selector (empty if missing or unusable). Immutable in
    /// apps/v1, so the executor lists ReplicaSets with it while it reads the Deployment again.
    pub selector: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaSetState {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// UID of the controller ownerReference (a Deployment or an Argo Rollout).
    pub owner_uid: Option<String>,
    /// Kind of that controller: `Deployment` or `Rollout`.
    pub owner_kind: Option<String>,
    /// The revision annotation of its controller kind (`deployment.kubernetes.io/revision` or
    /// `rollout.argoproj.io/revision`); missing counts as 0, unparsable as `None`.
    pub revision: Option<i64>,
    /// The pod-template-hash label (`pod-template-hash` or `rollouts-pod-template-hash`).
    pub pod_hash: Option<String>,
    pub template: PodTemplate,
    pub annotations: LabelSet,
    pub created_at: Timestamp,
}

impl ReplicaSetState {
    /// The first container image of the template, for humans reading a decision.
    pub fn image(&self) -> Option<&str> {
        self.template.first_image()
    }
}

/// A pod template as rollbackd keeps it.
///
/// The watches' index keeps only what decisions need: a digest of the whole template (without
/// the `pod-template-hash` and `rollouts-pod-template-hash` labels, as both the Deployment
/// controller and `kubectl rollout undo` compare templates), its images and its labels. The
/// executor reads the objects again before it acts and keeps the whole template as well, for
/// the undo's patch ([`PodTemplate::whole`]).
#[derive(Clone, Debug)]
pub struct PodTemplate {
    digest: [u8; 32],
    images: Box<[Box<str>]>,
    labels: Box<[(Box<str>, Box<str>)]>,
    whole: Option<Arc<Value>>,
}

impl PodTemplate {
    /// The template as read, whole (`Null` when the object has none).
    pub fn read(template: Value) -> PodTemplate {
        let mut unhashed = strip_label(&template, POD_TEMPLATE_HASH);
        unhashed = strip_label(&unhashed, ROLLOUT_HASH_LABEL);
        // serde_json's maps are sorted by key, so this text is canonical.
        let digest = Sha256::digest(unhashed.to_string().as_bytes()).into();
        let images = template
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("image").and_then(Value::as_str))
            .map(Box::from)
            .collect();
        let labels = template
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| v.as_str().map(|v| (Box::from(k.as_str()), Box::from(v))))
            .collect();
        PodTemplate {
            digest,
            images,
            labels,
            whole: Some(Arc::new(template)),
        }
    }

    /// The same template without its whole text: what the index keeps.
    pub fn summary(&self) -> PodTemplate {
        PodTemplate {
            whole: None,
            ..self.clone()
        }
    }

    /// The whole template, where it was kept (the executor's reads).
    pub fn whole(&self) -> Option<&Value> {
        self.whole.as_deref()
    }

    /// Whether two templates are equal once the pod-template-hash labels are ignored.
    pub fn same_as(&self, other: &PodTemplate) -> bool {
        self.digest == other.digest
    }

    /// The first container image, for humans reading a decision.
    pub fn first_image(&self) -> Option<&str> {
        self.images.first().map(|i| &**i)
    }

    /// A copy with `edit` applied to the whole template (tests build variants this way).
    #[cfg(test)]
    pub fn edited(&self, edit: impl FnOnce(&mut Value)) -> PodTemplate {
        let mut whole = self.whole().cloned().unwrap_or(Value::Null);
        edit(&mut whole);
        PodTemplate::read(whole)
    }

    /// The template's labels, where correlation by `app`-style labels looks.
    pub fn labels(&self) -> impl Iterator<Item = (&str, &str)> {
        self.labels.iter().map(|(k, v)| (&**k, &**v))
    }
}

impl Default for PodTemplate {
    fn default() -> Self {
        PodTemplate::read(Value::Null)
    }
}

/// Equal digests, images and labels: the whole text, kept or not, does not count.
impl PartialEq for PodTemplate {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest && self.images == other.images && self.labels == other.labels
    }
}

/// A copy of `template` without the given label (and without an empty `labels` map left behind).
pub fn strip_label(template: &Value, label: &str) -> Value {
    let mut out = template.clone();
    if let Some(metadata) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        let now_empty = match metadata.get_mut("labels").and_then(Value::as_object_mut) {
            Some(labels) => {
                labels.remove(label);
                labels.is_empty()
            }
            None => false,
        };
        if now_empty {
            metadata.remove("labels");
        }
    }
    out
}

/// The ReplicaSet a Deployment currently runs and since when.
#[derive(Clone, Debug, PartialEq)]
pub struct CurrentRollout<'a> {
    pub replica_set: &'a ReplicaSetState,
    /// When this ReplicaSet became the Deployment's current one, as well as can be known.
    pub since: Timestamp,
}

/// A workload by kind, namespace and name: `Deployment shop/web`, `Rollout shop/cart`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkloadKey(pub String);

impl WorkloadKey {
    pub fn deployment(namespace: &str, name: &str) -> WorkloadKey {
        WorkloadKey(format!("Deployment {namespace}/{name}"))
    }

    pub fn rollout(namespace: &str, name: &str) -> WorkloadKey {
        WorkloadKey(format!("Rollout {namespace}/{name}"))
    }
}

/// A workload whose current ReplicaSet became current at `since`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecentRollout {
    pub workload: WorkloadKey,
    pub since: Timestamp,
}

/// Deployments, Argo Rollouts, their ReplicaSets and the traffic objects rollbackd tracks, by
/// namespace and name, plus observed rollout transitions.
#[derive(Debug, Default)]
pub struct WorkloadIndex {
    deployments: BTreeMap<ObjectKey, DeploymentState>,
    replica_sets: BTreeMap<ObjectKey, ReplicaSetState>,
    pub(super) rollouts: BTreeMap<ObjectKey, RolloutState>,
    pub(super) services: BTreeMap<ObjectKey, ServiceState>,
    pub(super) virtual_services: BTreeMap<ObjectKey, VirtualServiceState>,
    /// The last traffic change of each tracked Service or VirtualService.
    pub(super) traffic_changes: BTreeMap<(TrafficKind, ObjectKey), TrafficChange>,
    /// Last known current ReplicaSet UID per Deployment or Rollout UID.
    current: HashMap<String, String>,
    /// When the index saw a workload's current ReplicaSet change: (ReplicaSet UID, time).
    transitions: HashMap<String, (String, Timestamp)>,
    /// Lookups by UID, kept in step with the maps above so that a watch event costs the size
    /// of one workload's history, not of the cluster.
    pub(super) deployment_keys: HashMap<String, ObjectKey>,
    pub(super) rollout_keys: HashMap<String, ObjectKey>,
    rs_by_owner: HashMap<String, BTreeSet<ObjectKey>>,
    /// Annotations of each Namespace, for namespace-wide opt-in and opt-out.
    namespaces: HashMap<String, LabelSet>,
    /// Argo CD Applications (see `core::gitops`).
    pub(super) applications: BTreeMap<ObjectKey, super::gitops::ApplicationState>,
}

impl WorkloadIndex {
    pub fn apply_namespace(&mut self, name: String, annotations: LabelSet) {
        self.namespaces.insert(name, annotations);
    }

    pub fn delete_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    /// Replaces every Namespace with a fresh list.
    pub fn reset_namespaces(&mut self, all: Vec<(String, LabelSet)>) {
        self.namespaces = all.into_iter().collect();
    }

    pub fn namespace_annotations(&self, name: &str) -> Option<&LabelSet> {
        self.namespaces.get(name)
    }

    pub fn apply_deployment(&mut self, deployment: DeploymentState, now: Timestamp) {
        let key = (deployment.namespace.clone(), deployment.name.clone());
        let uid = deployment.uid.clone();
        if let Some(old) = self.deployments.insert(key.clone(), deployment) {
            self.deployment_keys.remove(&old.uid);
        }
        self.deployment_keys.insert(uid.clone(), key);
        self.note_current(&uid, now);
    }

    pub fn delete_deployment(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        if let Some(d) = self.deployments.remove(&key) {
            self.deployment_keys.remove(&d.uid);
            self.current.remove(&d.uid);
            self.transitions.remove(&d.uid);
        }
    }

    /// Replaces the Deployments of one namespace (or all, with `None`), as after a (re)list;
    /// transitions seen before are kept.
    pub fn reset_deployments(
        &mut self,
        scope: Option<&str>,
        all: Vec<DeploymentState>,
        now: Timestamp,
    ) {
        self.deployments
            .retain(|(ns, _), _| scope.is_some_and(|s| s != ns));
        self.deployments.extend(
            all.into_iter()
                .map(|d| ((d.namespace.clone(), d.name.clone()), d)),
        );
        self.forget_gone_and_note(now);
    }

    pub fn apply_replica_set(&mut self, rs: ReplicaSetState, now: Timestamp) {
        let key = (rs.namespace.clone(), rs.name.clone());
        let owner = rs.owner_uid.clone();
        if let Some(old) = self.replica_sets.insert(key.clone(), rs) {
            self.unlink_owner(&old, &key);
        }
        if let Some(owner) = owner {
            self.rs_by_owner
                .entry(owner.clone())
                .or_default()
                .insert(key);
            self.note_current(&owner, now);
        }
    }

    pub fn delete_replica_set(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        if let Some(old) = self.replica_sets.remove(&key) {
            self.unlink_owner(&old, &key);
        }
    }

    fn unlink_owner(&mut self, rs: &ReplicaSetState, key: &ObjectKey) {
        if let Some(owner) = &rs.owner_uid
            && let Some(keys) = self.rs_by_owner.get_mut(owner)
        {
            keys.remove(key);
            if keys.is_empty() {
                self.rs_by_owner.remove(owner);
            }
        }
    }

    /// Rebuilds the UID lookups after a (re)list replaced a map wholesale.
    pub(super) fn reindex(&mut self) {
        self.deployment_keys = self
            .deployments
            .iter()
            .map(|(k, d)| (d.uid.clone(), k.clone()))
            .collect();
        self.rollout_keys = self
            .rollouts
            .iter()
            .map(|(k, r)| (r.uid.clone(), k.clone()))
            .collect();
        self.rs_by_owner.clear();
        for (key, rs) in &self.replica_sets {
            if let Some(owner) = &rs.owner_uid {
                self.rs_by_owner
                    .entry(owner.clone())
                    .or_default()
                    .insert(key.clone());
            }
        }
    }

    /// Replaces the ReplicaSets of one namespace (or all, with `None`).
    pub fn reset_replica_sets(
        &mut self,
        scope: Option<&str>,
        all: Vec<ReplicaSetState>,
        now: Timestamp,
    ) {
        self.replica_sets
            .retain(|(ns, _), _| scope.is_some_and(|s| s != ns));
        self.replica_sets.extend(
            all.into_iter()
                .map(|rs| ((rs.namespace.clone(), rs.name.clone()), rs)),
        );
        self.reindex();
        for uid in self.workload_uids() {
            self.note_current(&uid, now);
        }
    }

    fn workload_uids(&self) -> Vec<String> {
        let deployments = self.deployments.values().map(|d| d.uid.clone());
        deployments
            .chain(self.rollouts.values().map(|r| r.uid.clone()))
            .collect()
    }

    pub fn deployment(&self, namespace: &str, name: &str) -> Option<&DeploymentState> {
        self.deployments
            .get(&(namespace.to_string(), name.to_string()))
    }

    pub fn replica_set(&self, namespace: &str, name: &str) -> Option<&ReplicaSetState> {
        self.replica_sets
            .get(&(namespace.to_string(), name.to_string()))
    }

    pub fn deployments_in(&self, namespace: &str) -> impl Iterator<Item = &DeploymentState> + '_ {
        let namespace = namespace.to_string();
        self.deployments
            .values()
            .filter(move |d| d.namespace == namespace)
    }

    pub fn deployment_count(&self) -> usize {
        self.deployments.len()
    }

    /// The Deployment that controls a ReplicaSet, if the index has it.
    pub fn owner_of(&self, rs: &ReplicaSetState) -> Option<&DeploymentState> {
        let key = self.deployment_keys.get(rs.owner_uid.as_deref()?)?;
        self.deployments.get(key)
    }

    /// ReplicaSets whose controller is this Deployment (what `kubectl rollout undo` considers).
    pub fn owned_replica_sets(
        &self,
        deployment: &DeploymentState,
    ) -> impl Iterator<Item = &ReplicaSetState> + '_ {
        self.replica_sets_owned_by(&deployment.namespace, &deployment.uid)
    }

    /// The owned ReplicaSet whose template equals the Deployment's, and since when it is current.
    pub fn current_rollout(&self, deployment: &DeploymentState) -> Option<CurrentRollout<'_>> {
        let rs = current_replica_set(deployment, self.owned_replica_sets(deployment))?;
        Some(CurrentRollout {
            replica_set: rs,
            since: self.since(&deployment.uid, rs),
        })
    }

    /// Every Deployment and Argo Rollout whose current ReplicaSet became current at or after
    /// `after`, with that time. A Deployment that a Rollout references through `workloadRef`
    /// is listed as the Rollout, as correlation resolves it.
    pub fn rollouts_since(&self, after: Timestamp) -> Vec<RecentRollout> {
        let mut recent = Vec::new();
        for d in self.deployments.values() {
            if self.rollout_referencing(&d.namespace, &d.name).is_some() {
                continue;
            }
            if let Some(current) = self.current_rollout(d).filter(|c| c.since >= after) {
                recent.push(RecentRollout {
                    workload: WorkloadKey::deployment(&d.namespace, &d.name),
                    since: current.since,
                });
            }
        }
        for r in self.rollouts.values() {
            if let Some(current) = self.current_of_rollout(r).filter(|c| c.since >= after) {
                recent.push(RecentRollout {
                    workload: WorkloadKey::rollout(&r.namespace, &r.name),
                    since: current.since,
                });
            }
        }
        recent
    }

    /// After a relist: drops transitions of workloads that are gone, notes current ones.
    pub(super) fn forget_gone_and_note(&mut self, now: Timestamp) {
        self.reindex();
        let live = self.workload_uids();
        self.current.retain(|uid, _| live.contains(uid));
        self.transitions.retain(|uid, _| live.contains(uid));
        for uid in live {
            self.note_current(&uid, now);
        }
    }

    /// When the ReplicaSet `rs` became current for workload `owner_uid`, as well as known.
    pub(super) fn since(&self, owner_uid: &str, rs: &ReplicaSetState) -> Timestamp {
        let observed = self
            .transitions
            .get(owner_uid)
            .filter(|(rs_uid, _)| *rs_uid == rs.uid)
            .map(|(_, at)| *at);
        observed.map_or(rs.created_at, |at| at.max(rs.created_at))
    }

    pub(super) fn note_current(&mut self, owner_uid: &str, now: Timestamp) {
        let deployment = self
            .deployment_keys
            .get(owner_uid)
            .and_then(|k| self.deployments.get(k));
        let rollout = self
            .rollout_keys
            .get(owner_uid)
            .and_then(|k| self.rollouts.get(k));
        let current = if let Some(d) = deployment {
            current_replica_set(d, self.owned_replica_sets(d)).map(|rs| rs.uid.clone())
        } else if let Some(r) = rollout {
            self.rollout_current_rs(r).map(|rs| rs.uid.clone())
        } else {
            None
        };
        // Mid-rollout the new ReplicaSet may not exist yet: keep the last known one.
        let Some(rs_uid) = current else { return };
        match self.current.insert(owner_uid.to_string(), rs_uid.clone()) {
            Some(previous) if previous != rs_uid => {
                self.transitions
                    .insert(owner_uid.to_string(), (rs_uid, now));
            }
            _ => {}
        }
    }

    /// ReplicaSets controlled by the workload with this namespace and UID.
    pub fn replica_sets_owned_by(
        &self,
        namespace: &str,
        owner_uid: &str,
    ) -> impl Iterator<Item = &ReplicaSetState> + '_ {
        let namespace = namespace.to_string();
        self.rs_by_owner
            .get(owner_uid)
            .into_iter()
            .flatten()
            .filter_map(|key| self.replica_sets.get(key))
            .filter(move |rs| rs.namespace == namespace)
    }
}

/// Among `owned`, the ReplicaSet whose template matches the Deployment's (the controller's
/// "new ReplicaSet"); the highest revision wins if several match.
pub fn current_replica_set<'a>(
    deployment: &DeploymentState,
    owned: impl Iterator<Item = &'a ReplicaSetState>,
) -> Option<&'a ReplicaSetState> {
    owned
        .filter(|rs| rs.template.same_as(&deployment.template))
        .max_by_key(|rs| rs.revision.unwrap_or(0))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("valid test timestamp")
    }

    pub fn mk_template(image: &str, app: &str) -> Value {
        json!({
            "metadata": {"labels": {"app": app}},
            "spec": {"containers": [{"name": "app", "image": image}]}
        })
    }

    pub fn mk_deployment(name: &str, image: &str) -> DeploymentState {
        DeploymentState {
            namespace: "default".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            resource_version: "1".into(),
            paused: false,
            template: PodTemplate::read(mk_template(image, name)),
            annotations: LabelSet::new(),
            labels: LabelSet::new(),
            selector: format!("app={name}"),
        }
    }

    /// A promoted Argo Rollout with its own template, nothing in progress.
    pub fn mk_rollout(namespace: &str, name: &str) -> crate::core::rollout::RolloutState {
        crate::core::rollout::RolloutState {
            namespace: namespace.into(),
            name: name.into(),
            uid: format!("uid-ro-{name}"),
            resource_version: "1".into(),
            generation: 1,
            observed_generation: Some("1".into()),
            phase: Some("Healthy".into()),
            stable_rs: Some("abc".into()),
            current_pod_hash: Some("abc".into()),
            aborted: false,
            paused: false,
            rollback_window: None,
            template: PodTemplate::read(mk_template(&format!("{name}:1"), name)),
            workload_ref: None,
            labels: LabelSet::new(),
            annotations: LabelSet::new(),
        }
    }

    pub fn mk_rs(
        deploy: &str,
        hash: &str,
        image: &str,
        revision: i64,
        created: Timestamp,
    ) -> ReplicaSetState {
        let mut template = mk_template(image, deploy);
        template["metadata"]["labels"][POD_TEMPLATE_HASH] = json!(hash);
        ReplicaSetState {
            namespace: "default".into(),
            name: format!("{deploy}-{hash}"),
            uid: format!("uid-{deploy}-{hash}"),
            owner_uid: Some(format!("uid-{deploy}")),
            owner_kind: Some("Deployment".into()),
            revision: Some(revision),
            pod_hash: Some(hash.into()),
            template: PodTemplate::read(template),
            annotations: [(REVISION_ANNOTATION.to_string(), revision.to_string())].into(),
            created_at: created,
        }
    }

    #[test]
    fn current_rollout_is_the_rs_with_the_deployment_template() {
        let mut index = WorkloadIndex::default();
        index.apply_replica_set(mk_rs("web", "a", "nginx:1", 1, ts(0)), ts(0));
        index.apply_replica_set(mk_rs("web", "b", "nginx:2", 2, ts(100)), ts(100));
        index.apply_deployment(mk_deployment("web", "nginx:2"), ts(100));
        let d = index.deployment("default", "web").expect("indexed");
        let current = index.current_rollout(d).expect("current");
        assert_eq!(current.replica_set.name, "web-b");
        assert_eq!(current.since, ts(100));
    }

    #[test]
    fn a_reused_replica_set_counts_from_when_it_was_seen_becoming_current() {
        let mut index = WorkloadIndex::default();
        index.apply_replica_set(mk_rs("web", "a", "nginx:1", 1, ts(0)), ts(0));
        index.apply_replica_set(mk_rs("web", "b", "nginx:2", 2, ts(100)), ts(100));
        index.apply_deployment(mk_deployment("web", "nginx:2"), ts(100));
        // A rollback to nginx:1 reuses web-a, created long ago.
        index.apply_deployment(mk_deployment("web", "nginx:1"), ts(500));
        let d = index.deployment("default", "web").expect("indexed");
        let current = index.current_rollout(d).expect("current");
        assert_eq!(current.replica_set.name, "web-a");
        assert_eq!(current.since, ts(500));
    }

    #[test]
    fn first_sight_uses_creation_time_not_startup_time() {
        let mut index = WorkloadIndex::default();
        index.reset_deployments(None, vec![mk_deployment("web", "nginx:1")], ts(900));
        index.reset_replica_sets(None, vec![mk_rs("web", "a", "nginx:1", 1, ts(0))], ts(900));
        let d = index.deployment("default", "web").expect("indexed");
        assert_eq!(index.current_rollout(d).expect("current").since, ts(0));
    }

    #[test]
    fn a_namespaced_reset_leaves_other_namespaces_alone() {
        let mut index = WorkloadIndex::default();
        let mut other = mk_deployment("api", "api:1");
        other.namespace = "shop".into();
        index.apply_deployment(other, ts(0));
        index.apply_deployment(mk_deployment("web", "nginx:1"), ts(0));
        index.reset_deployments(Some("default"), vec![], ts(10));
        assert!(index.deployment("default", "web").is_none());
        assert!(index.deployment("shop", "api").is_some());
    }

    #[test]
    fn the_owner_lookup_follows_deletes_and_adoptions() {
        let mut index = WorkloadIndex::default();
        index.apply_deployment(mk_deployment("web", "nginx:1"), ts(0));
        index.apply_replica_set(mk_rs("web", "a", "nginx:1", 1, ts(0)), ts(0));
        index.apply_replica_set(mk_rs("web", "b", "nginx:2", 2, ts(1)), ts(1));
        let d = index.deployment("default", "web").expect("indexed").clone();
        assert_eq!(index.owned_replica_sets(&d).count(), 2);
        index.delete_replica_set("default", "web-a");
        assert_eq!(index.owned_replica_sets(&d).count(), 1);
        let mut orphan = mk_rs("web", "b", "nginx:2", 2, ts(1));
        orphan.owner_uid = None;
        index.apply_replica_set(orphan, ts(2));
        assert_eq!(index.owned_replica_sets(&d).count(), 0);
        // A relist rebuilds the lookups from scratch.
        index.reset_replica_sets(None, vec![mk_rs("web", "a", "nginx:1", 1, ts(0))], ts(3));
        assert_eq!(index.owned_replica_sets(&d).count(), 1);
        assert!(index.current_rollout(&d).is_some());
    }

    #[test]
    fn replica_sets_of_other_owners_are_ignored() {
        let mut index = WorkloadIndex::default();
        let mut foreign = mk_rs("web", "a", "nginx:1", 7, ts(0));
        foreign.owner_uid = Some("someone-else".into());
        index.apply_replica_set(foreign, ts(0));
        index.apply_deployment(mk_deployment("web", "nginx:1"), ts(0));
        let d = index.deployment("default", "web").expect("indexed");
        assert!(index.current_rollout(d).is_none());
        assert_eq!(index.owned_replica_sets(d).count(), 0);
    }

    #[test]
    fn templates_compare_without_their_hash_labels_kept_whole_or_not() {
        let a = mk_rs("web", "a", "nginx:1", 1, ts(0)).template;
        let b = PodTemplate::read(mk_template("nginx:1", "web"));
        assert!(a.same_as(&b));
        assert!(
            a.summary().same_as(&b),
            "the index's summary compares as the whole"
        );
        let mut argo = mk_template("nginx:1", "web");
        argo["metadata"]["labels"][ROLLOUT_HASH_LABEL] = json!("f00");
        assert!(PodTemplate::read(argo).same_as(&b));
        let c = PodTemplate::read(mk_template("nginx:2", "web"));
        assert!(!a.same_as(&c));
        // Any field counts, not only images and labels.
        let mut env = mk_template("nginx:1", "web");
        env["spec"]["containers"][0]["env"] = json!([{"name": "A", "value": "1"}]);
        let env = PodTemplate::read(env);
        assert!(!env.same_as(&b));
        assert_eq!(env.first_image(), Some("nginx:1"));
        assert_eq!(env.labels().collect::<Vec<_>>(), [("app", "web")]);
        assert!(env.summary().whole().is_none());
        assert!(env.whole().is_some());
    }
}
