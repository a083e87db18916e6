//! Deletion and garbage collection.
//!
//! Delete honours preconditions (uid, resourceVersion), finalizers (the object is only
//! marked with deletionTimestamp until an update empties `metadata.finalizers`) and
//! propagationPolicy: dependents (objects whose ownerReferences name a deleted uid) are
//! deleted at once, recursively, for Background and Foreground, or released by dropping the
//! dangling reference for Orphan. The real server's collector is asynchronous; here it runs
//! inside the deleting request, so a client sees the dependents gone when the delete returns.
//! Deleting a namespace deletes everything in it.

use serde_json::{Value, json};

use super::resources::ResourceDef;
use super::status::ApiError;
use super::store::{Event, EventType, State, Store, meta_str, now_rfc3339, rv_of};
use super::writes::set_meta;

#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// "Background" (default), "Foreground" or "Orphan".
    pub propagation: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

impl Store {
    /// Delete one object. Returns the object as deleted (with the deletion's resourceVersion)
    /// and whether it is gone (false: it has finalizers and is now only marked).
    pub fn delete(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<(Value, bool), ApiError> {
        let ns = Store::write_namespace(def, ns);
        let mut st = self.lock();
        let key = (ns.to_string(), name.to_string());
        let old = Store::object_locked(&st, def, &key)?;
        if let Some(u) = opts
            .precondition_uid
            .as_deref()
            .filter(|u| Some(*u) != meta_str(&old, "uid"))
        {
            return Err(ApiError::conflict_msg(
                def,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {u}, UID in object meta: {}",
                    meta_str(&old, "uid").unwrap_or_default()
                ),
            ));
        }
        if let Some(r) = opts
            .precondition_rv
            .as_deref()
            .filter(|r| *r != rv_of(&old).to_string())
        {
            return Err(ApiError::conflict_msg(
                def,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {r}, ResourceVersion in object meta: {}",
                    rv_of(&old)
                ),
            ));
        }
        let has_finalizers = old
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        if opts.dry_run {
            return Ok((old, !has_finalizers));
        }
        if has_finalizers {
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok((old, false));
            }
            let mut marked = old.clone();
            set_meta(&mut marked, "deletionTimestamp", json!(now_rfc3339()));
            set_meta(&mut marked, "deletionGracePeriodSeconds", json!(0));
            let rv = Store::next_rv(&mut st);
            set_meta(&mut marked, "resourceVersion", json!(rv.to_string()));
            st.put(&def.storage_key(), ns, name, marked.clone());
            let ev = Event {
                rv,
                key: def.storage_key(),
                namespace: ns.into(),
                kind: EventType::Modified,
                object: marked.clone(),
                old: Some(old),
            };
            self.publish(&mut st, ev);
            return Ok((marked, false));
        }
        let policy = opts
            .propagation
            .clone()
            .unwrap_or_else(|| "Background".into());
        let deleted = self
            .remove_locked(&mut st, def.storage_key(), ns, name)
            .unwrap_or(old);
        if def.plural == "namespaces" {
            let keys: Vec<String> = st.objects.keys().cloned().collect();
            for k in keys {
                let names: Vec<String> = st
                    .objects
                    .get(&k)
                    .map(|m| {
                        m.keys()
                            .filter(|(n, _)| n == name)
                            .map(|(_, n)| n.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                for n in names {
                    self.remove_locked(&mut st, k.clone(), name, &n);
                }
            }
        }
        self.collect_garbage(&mut st, &policy);
        Ok((deleted, true))
    }

    /// Remove an object and publish DELETED. Returns the object as deleted.
    pub(crate) fn remove_locked(
        &self,
        st: &mut State,
        key: String,
        ns: &str,
        name: &str,
    ) -> Option<Value> {
        let mut obj = st.take(&key, ns, name)?;
        let old = obj.clone();
        let rv = Store::next_rv(st);
        set_meta(&mut obj, "resourceVersion", json!(rv.to_string()));
        let ev = Event {
            rv,
            key,
            namespace: ns.into(),
            kind: EventType::Deleted,
            object: obj.clone(),
            old: Some(old),
        };
        self.publish(st, ev);
        Some(obj)
    }

    /// The garbage collector, run to a fixed point: objects all of whose owners are gone are
    /// deleted (or, with "Orphan", released by dropping the dangling ownerReferences).
    pub(crate) fn collect_garbage(&self, st: &mut State, policy: &str) {
        loop {
            let uids: std::collections::HashSet<String> = st
                .objects
                .values()
                .flat_map(|m| m.values())
                .filter_map(|o| meta_str(o, "uid").map(str::to_string))
                .collect();
            let mut orphans: Vec<(String, String, String)> = Vec::new();
            for (key, m) in &st.objects {
                for ((ns, name), o) in m {
                    let Some(refs) = o
                        .pointer("/metadata/ownerReferences")
                        .and_then(Value::as_array)
                    else {
                        continue;
                    };
                    if refs.is_empty() {
                        continue;
                    }
                    let dangling = refs.iter().any(|r| {
                        r.get("uid")
                            .and_then(Value::as_str)
                            .is_none_or(|u| !uids.contains(u))
                    });
                    if dangling {
                        orphans.push((key.clone(), ns.clone(), name.clone()));
                    }
                }
            }
            if orphans.is_empty() {
                return;
            }
            for (key, ns, name) in orphans {
                let Some(o) = st
                    .objects
                    .get(&key)
                    .and_then(|m| m.get(&(ns.clone(), name.clone())))
                    .cloned()
                else {
                    continue;
                };
                let refs = o
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let live: Vec<Value> = refs
                    .into_iter()
                    .filter(|r| {
                        r.get("uid")
                            .and_then(Value::as_str)
                            .is_some_and(|u| uids.contains(u))
                    })
                    .collect();
                if live.is_empty() && policy != "Orphan" {
                    self.remove_locked(st, key, &ns, &name);
                } else {
                    let mut new = o.clone();
                    set_meta(
                        &mut new,
                        "ownerReferences",
                        if live.is_empty() {
                            Value::Null
                        } else {
                            Value::Array(live)
                        },
                    );
                    let rv = Store::next_rv(st);
                    set_meta(&mut new, "resourceVersion", json!(rv.to_string()));
                    st.put(&key, &ns, &name, new.clone());
                    let ev = Event {
                        rv,
                        key,
                        namespace: ns,
                        kind: EventType::Modified,
                        object: new,
                        old: Some(o),
                    };
                    self.publish(st, ev);
                }
            }
        }
    }
}
