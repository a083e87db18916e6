//! The object store: every object of every resource, as JSON, behind one lock.
//!
//! Data model: `objects[storage_key][(namespace, name)] = object`, where the storage key is
//! `group/plural` (shared by the versions of one resource) and the namespace is "" for
//! cluster-scoped objects. One global counter issues resourceVersions (decimal strings on
//! the wire). Every committed change becomes an [`Event`] (ADDED / MODIFIED / DELETED, with
//! the previous object for MODIFIED and DELETED), appended to a bounded history (the last
//! `watch_history` events; a watch from before it gets 410 Expired) and broadcast to live
//! watchers and controllers. Write semantics (metadata, status rules, generation,
//! garbage collection) live in `writes.rs`; this file only holds and publishes.
//!
//! A write is a transaction under [`Store::lock`]: the events it commits are held in
//! `State::pending` and leave when the lock is released ([`Locked`]'s drop): first the whole
//! state is saved if the sandbox has a state directory (`state.rs`), then the events are
//! broadcast, still under the lock and in order. A store restored from a state directory
//! starts with an empty history at the saved resourceVersion, like the watch cache of a
//! restarted kube-apiserver, which is filled by one list: a watch from an older
//! resourceVersion gets 410 Expired, one from the current resourceVersion goes on.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::resources::{Registry, ResourceDef};
use super::state::{Persister, Restored};
use super::status::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One committed change.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub key: String,
    pub namespace: String,
    pub kind: EventType,
    pub object: Value,
    /// The object before the change (MODIFIED, DELETED).
    pub old: Option<Value>,
}

pub type EventReceiver = broadcast::Receiver<Arc<Event>>;

pub(crate) type Objects = BTreeMap<(String, String), Value>;

/// Where an object is stored: its storage key, namespace and name.
type Place = (String, String, String);

pub(crate) struct State {
    pub rv: u64,
    /// Every object. Read it freely; change it only through [`State::put`] and
    /// [`State::take`], which keep `owned` in step.
    pub objects: HashMap<String, Objects>,
    /// For each owner uid, the objects whose ownerReferences name it: how a controller finds
    /// its ReplicaSets without reading every ReplicaSet of the namespace (kube-controller-
    /// manager's informers keep the same index).
    owned: HashMap<String, BTreeSet<Place>>,
    history: VecDeque<Arc<Event>>,
    /// Highest resourceVersion whose event has been dropped from the history (or, after a
    /// restore, the resourceVersion the history starts after).
    pub evicted_upto: u64,
    /// Events committed under the current lock, broadcast when it is released.
    pending: Vec<Arc<Event>>,
    /// Where committed changes are saved; None without a state directory, and after
    /// [`Store::close`].
    persister: Option<Persister>,
}

/// The store's lock, held by one transaction. Dropping it saves and publishes what the
/// transaction committed.
pub(crate) struct Locked<'a> {
    store: &'a Store,
    st: MutexGuard<'a, State>,
}

impl Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.st
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.st
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let st = &mut *self.st;
        if st.pending.is_empty() {
            return;
        }
        // Saved before anyone hears of it: a resourceVersion a client has seen is on disk.
        if let Some(p) = st.persister.as_mut()
            && let Err(e) = p.save(st.rv, &st.objects)
        {
            tracing::error!(error = %e, rv = st.rv, "cannot save the sandbox state");
        }
        for ev in st.pending.drain(..) {
            let _ = self.store.tx.send(ev);
        }
    }
}

/// The uids an object's ownerReferences name.
fn owner_uids(obj: &Value) -> impl Iterator<Item = &str> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("uid").and_then(Value::as_str))
}

impl State {
    /// A state at `rv` holding `objects`, with no history before `evicted_upto`.
    fn new(
        rv: u64,
        objects: HashMap<String, Objects>,
        evicted_upto: u64,
        persister: Option<Persister>,
    ) -> Self {
        let mut owned: HashMap<String, BTreeSet<Place>> = HashMap::new();
        for (key, m) in &objects {
            for ((ns, name), obj) in m {
                for uid in owner_uids(obj) {
                    owned.entry(uid.to_string()).or_default().insert((
                        key.clone(),
                        ns.clone(),
                        name.clone(),
                    ));
                }
            }
        }
        Self {
            rv,
            objects,
            owned,
            history: VecDeque::new(),
            evicted_upto,
            pending: Vec::new(),
            persister,
        }
    }

    /// Stores `obj` at `key` (storage key) and `(ns, name)`; returns what it replaced.
    pub(crate) fn put(&mut self, key: &str, ns: &str, name: &str, obj: Value) -> Option<Value> {
        let place = (key.to_string(), ns.to_string(), name.to_string());
        let owners: BTreeSet<String> = owner_uids(&obj).map(str::to_string).collect();
        let old = self
            .objects
            .entry(place.0.clone())
            .or_default()
            .insert((place.1.clone(), place.2.clone()), obj);
        if let Some(old) = &old {
            self.unindex(old, &place, &owners);
        }
        for uid in owners {
            self.owned.entry(uid).or_default().insert(place.clone());
        }
        old
    }

    /// Removes the object at `key` and `(ns, name)`, if there is one.
    pub(crate) fn take(&mut self, key: &str, ns: &str, name: &str) -> Option<Value> {
        let old = self
            .objects
            .get_mut(key)?
            .remove(&(ns.to_string(), name.to_string()))?;
        let place = (key.to_string(), ns.to_string(), name.to_string());
        self.unindex(&old, &place, &BTreeSet::new());
        Some(old)
    }

    /// Drops `place` from the index of each owner `old` named and `kept` does not.
    fn unindex(&mut self, old: &Value, place: &Place, kept: &BTreeSet<String>) {
        for uid in owner_uids(old).filter(|uid| !kept.contains(*uid)) {
            if let Some(set) = self.owned.get_mut(uid) {
                set.remove(place);
                if set.is_empty() {
                    self.owned.remove(uid);
                }
            }
        }
    }

    /// The objects of storage key `key` in namespace `ns` whose ownerReferences name `uid`.
    fn owned_by(&self, key: &str, ns: &str, uid: &str) -> Vec<Value> {
        self.owned
            .get(uid)
            .into_iter()
            .flatten()
            .filter(|(k, n, _)| k == key && n == ns)
            .filter_map(|(k, n, name)| self.objects.get(k)?.get(&(n.clone(), name.clone())))
            .cloned()
            .collect()
    }
}

pub struct Store {
    pub registry: Registry,
    state: Mutex<State>,
    tx: broadcast::Sender<Arc<Event>>,
    history_limit: usize,
}

/// The rv of an object, 0 if absent or malformed.
pub fn rv_of(obj: &Value) -> u64 {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
}

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

impl Store {
    /// A fresh cluster, kept only in memory.
    #[allow(dead_code)] // the sandbox opens its store with `open`; kept for unit tests
    pub fn new(registry: Registry, history_limit: usize) -> Self {
        Self::open(registry, history_limit, None, None)
    }

    /// A store saving to `persister` if given, starting from `restored` if given (else a
    /// fresh cluster).
    pub(crate) fn open(
        registry: Registry,
        history_limit: usize,
        persister: Option<Persister>,
        restored: Option<Restored>,
    ) -> Self {
        let (tx, _) = broadcast::channel(8192);
        let fresh = restored.is_none();
        let state = match restored {
            // Nothing before the restored revision can be replayed.
            Some(r) => State::new(r.rv, r.objects, r.rv, persister),
            None => State::new(1, HashMap::new(), 0, persister),
        };
        let store = Self {
            registry,
            state: Mutex::new(state),
            tx,
            history_limit,
        };
        // The namespaces a fresh cluster has.
        if fresh && let Some(ns) = store.registry.find("", "v1", "namespaces").cloned() {
            for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                let _ = store.create(&ns, None, json!({"metadata": {"name": name}}), false);
            }
        }
        // A first start saves at once, so the directory holds a cluster before anything is
        // served.
        if fresh {
            let mut st = store.lock();
            let st = &mut *st;
            if let Some(p) = st.persister.as_mut()
                && let Err(e) = p.save(st.rv, &st.objects)
            {
                tracing::error!(error = %e, "cannot save the sandbox state");
            }
        }
        store
    }

    /// Stop saving (the sandbox is stopping): a write still in flight from a task not yet
    /// stopped changes memory only, never the state directory a new sandbox may already
    /// use. Releases the directory's lock.
    pub(crate) fn close(&self) {
        self.lock().persister = None;
    }

    pub(crate) fn lock(&self) -> Locked<'_> {
        Locked {
            store: self,
            st: self.state.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    pub fn get(&self, def: &ResourceDef, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let st = self.lock();
        Self::object_locked(
            &st,
            def,
            &(ns.unwrap_or_default().to_string(), name.to_string()),
        )
    }

    /// The stored object at `key` (namespace, name), under a lock the caller holds.
    pub(crate) fn object_locked(
        st: &State,
        def: &ResourceDef,
        key: &(String, String),
    ) -> Result<Value, ApiError> {
        st.objects
            .get(&def.storage_key())
            .and_then(|m| m.get(key))
            .cloned()
            .ok_or_else(|| ApiError::not_found(def, &key.1))
    }

    /// The namespace a write to `def` is stored under: the request's (default `default`) for
    /// namespaced resources, none for cluster-scoped ones.
    pub(crate) fn write_namespace<'a>(def: &ResourceDef, ns: Option<&'a str>) -> &'a str {
        if def.namespaced {
            ns.unwrap_or("default")
        } else {
            ""
        }
    }

    /// The objects of `def` in namespace `ns` whose ownerReferences name `uid`, in no
    /// particular order: what a controller owns, found through the owner index.
    pub fn owned_by(&self, def: &ResourceDef, ns: &str, uid: &str) -> Vec<Value> {
        self.lock().owned_by(&def.storage_key(), ns, uid)
    }

    /// All objects of a resource (in one namespace, or all), sorted by namespace and name,
    /// with the resourceVersion the list is consistent at.
    pub fn list(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        filter: impl Fn(&Value) -> bool,
    ) -> (Vec<Value>, u64) {
        let st = self.lock();
        (Self::list_locked(&st, def, ns, filter), st.rv)
    }

    /// At most `limit` objects of a resource (in one namespace, or all) that `filter` keeps,
    /// in the order of [`Store::list`], after the object at `after` if given; with the
    /// resourceVersion they are current at and how many kept objects follow them (with
    /// `count_rest`; else 1 if any does, 0 if none). Reads from `after` on and clones only
    /// what it returns, so that a list read in chunks clones each object once.
    pub fn list_chunk(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        after: Option<&(String, String)>,
        limit: usize,
        count_rest: bool,
        filter: impl Fn(&Value) -> bool,
    ) -> (Vec<Value>, u64, usize) {
        use std::ops::Bound;
        let st = self.lock();
        let Some(m) = st.objects.get(&def.storage_key()) else {
            return (Vec::new(), st.rv, 0);
        };
        let start = match (after, ns) {
            (Some(a), _) => Bound::Excluded(a.clone()),
            (None, Some(ns)) => Bound::Included((ns.to_string(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        let mut kept = m
            .range((start, Bound::Unbounded))
            .take_while(|((n, _), _)| ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v)
            .filter(|v| filter(v));
        let items: Vec<Value> = kept.by_ref().take(limit).cloned().collect();
        let rest = if count_rest {
            kept.count()
        } else {
            usize::from(kept.next().is_some())
        };
        (items, st.rv, rest)
    }

    pub(crate) fn list_locked(
        st: &State,
        def: &ResourceDef,
        ns: Option<&str>,
        filter: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        st.objects
            .get(&def.storage_key())
            .map(|m| {
                m.iter()
                    .filter(|((n, _), _)| ns.is_none_or(|ns| ns == n))
                    .map(|(_, v)| v)
                    .filter(|v| filter(v))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// For a watch: the retained events after `from` and a receiver for what follows, taken
    /// atomically so nothing falls between them. `from` older than the history: 410.
    pub fn events_since(&self, from: u64) -> Result<(Vec<Arc<Event>>, EventReceiver), ApiError> {
        let st = self.lock();
        if from < st.evicted_upto {
            // As `getAllEventsSinceLocked` in the watch cache: "too old resource version: RV
            // (OLDEST-1)", OLDEST being the first revision it can replay.
            return Err(ApiError::expired(from, st.evicted_upto));
        }
        let rx = self.tx.subscribe();
        let past = st.history.iter().filter(|e| e.rv > from).cloned().collect();
        Ok((past, rx))
    }

    /// For a watch from "now" with synthetic ADDED events: the matching objects, the rv they
    /// are current at, and a receiver for what follows.
    pub fn snapshot_and_subscribe(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        filter: impl Fn(&Value) -> bool,
    ) -> (Vec<Value>, u64, broadcast::Receiver<Arc<Event>>) {
        let st = self.lock();
        let rx = self.tx.subscribe();
        (Self::list_locked(&st, def, ns, filter), st.rv, rx)
    }

    /// Commit a change already applied by the caller to `st`: record it; it is saved and
    /// broadcast when the caller releases the lock.
    pub(crate) fn publish(&self, st: &mut State, ev: Event) {
        let ev = Arc::new(ev);
        st.history.push_back(ev.clone());
        while st.history.len() > self.history_limit.max(1) {
            if let Some(old) = st.history.pop_front() {
                st.evicted_upto = st.evicted_upto.max(old.rv);
            }
        }
        st.pending.push(ev);
    }

    /// Issue the next resourceVersion.
    pub(crate) fn next_rv(st: &mut State) -> u64 {
        st.rv += 1;
        st.rv
    }

    /// Does a namespace exist?
    pub(crate) fn namespace_exists(st: &State, ns: &str) -> bool {
        st.objects
            .get("/namespaces")
            .is_some_and(|m| m.contains_key(&(String::new(), ns.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(name: &str, owners: &[&str]) -> Value {
        let refs: Vec<Value> = owners.iter().map(|u| json!({"uid": u})).collect();
        json!({"metadata": {"name": name, "ownerReferences": refs}})
    }

    fn names(st: &State, ns: &str, uid: &str) -> Vec<String> {
        let mut out: Vec<String> = st
            .owned_by("apps/replicasets", ns, uid)
            .iter()
            .filter_map(|o| meta_str(o, "name").map(str::to_string))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn the_owner_index_follows_every_put_and_take() {
        let mut st = State::new(1, HashMap::new(), 0, None);
        st.put("apps/replicasets", "a", "r1", rs("r1", &["d1"]));
        st.put("apps/replicasets", "a", "r2", rs("r2", &["d1", "d2"]));
        st.put("apps/replicasets", "b", "r1", rs("r1", &["d1"]));
        st.put("apps/deployments", "a", "x", rs("x", &["d1"]));
        assert_eq!(names(&st, "a", "d1"), ["r1", "r2"]);
        assert_eq!(names(&st, "b", "d1"), ["r1"]);
        assert_eq!(names(&st, "a", "d2"), ["r2"]);

        // An ownerReference dropped (the garbage collector orphaning), one kept.
        st.put("apps/replicasets", "a", "r2", rs("r2", &["d2"]));
        assert_eq!(names(&st, "a", "d1"), ["r1"]);
        assert_eq!(names(&st, "a", "d2"), ["r2"]);

        st.take("apps/replicasets", "a", "r1");
        st.take("apps/replicasets", "a", "r2");
        st.take("apps/replicasets", "a", "never");
        assert!(names(&st, "a", "d1").is_empty());
        assert!(
            !st.owned.contains_key("d2"),
            "an owner with nothing left is dropped"
        );

        // A restored state indexes what it was given.
        let again = State::new(9, st.objects.clone(), 9, None);
        assert_eq!(names(&again, "b", "d1"), ["r1"]);
        assert_eq!(again.owned.len(), st.owned.len());
    }
}
