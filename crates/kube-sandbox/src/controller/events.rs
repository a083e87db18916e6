//! One Event, two API versions. On a real API server an events.k8s.io/v1 Event and a core/v1
//! Event are the same stored object served at two versions, so an Event a controller writes
//! with the new API is what `kubectl describe` lists (it reads core/v1). The sandbox stores
//! kinds apart; this controller keeps a core/v1 copy of every events.k8s.io/v1 Event, converted
//! field by field as the API server's conversion does (`regarding` is `involvedObject`, `note`
//! is `message`, `reportingController` is `reportingComponent`, the `deprecated*` fields are
//! the old ones), and deletes it with its original. Only this direction is kept: rollbackd
//! writes events.k8s.io Events and kubectl reads core ones.

use serde_json::{Map, Value, json};

use super::objects::name_of;
use super::{Controller, Key, Requeue};
use crate::gc::DeleteOptions;
use crate::store::{Event, Store, meta_str};
use crate::writes::Part;

const NEW: &str = "events.k8s.io/events";

pub struct EventVersions;

impl Controller for EventVersions {
    fn name(&self) -> &'static str {
        "event-versions"
    }

    fn keys_for(&self, _store: &Store, ev: &Event) -> Vec<Key> {
        if ev.key == NEW {
            vec![(ev.namespace.clone(), name_of(&ev.object))]
        } else {
            vec![]
        }
    }

    fn all_keys(&self, store: &Store) -> Vec<Key> {
        let Some(def) = store.registry.find("events.k8s.io", "v1", "events") else {
            return vec![];
        };
        let (all, _) = store.list(def, None, |_| true);
        all.iter()
            .map(|e| {
                (
                    meta_str(e, "namespace").unwrap_or_default().to_string(),
                    name_of(e),
                )
            })
            .collect()
    }

    fn reconcile(&mut self, store: &Store, (ns, name): &Key) -> Requeue {
        let (Some(new_def), Some(core_def)) = (
            store.registry.find("events.k8s.io", "v1", "events"),
            store.registry.find("", "v1", "events"),
        ) else {
            return Requeue::Done;
        };
        match store.get(new_def, Some(ns), name) {
            Ok(event) => {
                let core = to_core(&event);
                let written = match store.get(core_def, Some(ns), name) {
                    Ok(_) => store
                        .modify(core_def, Some(ns), name, Part::Main, false, |current| {
                            let mut next = core.clone();
                            next["metadata"] = current["metadata"].clone();
                            Ok(next)
                        })
                        .map(|_| ()),
                    Err(_) => store.create(core_def, Some(ns), core, false).map(|_| ()),
                };
                if let Err(e) = written {
                    tracing::debug!(error = %e, "core/v1 copy of an event not written");
                }
            }
            Err(_) => {
                let _ = store.delete(core_def, Some(ns), name, &DeleteOptions::default());
            }
        }
        Requeue::Done
    }
}

/// The core/v1 form of an events.k8s.io/v1 Event.
pub fn to_core(event: &Value) -> Value {
    let mut core = Map::new();
    core.insert("apiVersion".into(), json!("v1"));
    core.insert("kind".into(), json!("Event"));
    let mut metadata = Map::new();
    for field in ["name", "namespace", "labels", "annotations"] {
        if let Some(v) = event.pointer(&format!("/metadata/{field}")) {
            metadata.insert(field.into(), v.clone());
        }
    }
    core.insert("metadata".into(), Value::Object(metadata));
    for (from, to) in [
        ("regarding", "involvedObject"),
        ("related", "related"),
        ("note", "message"),
        ("reason", "reason"),
        ("type", "type"),
        ("action", "action"),
        ("eventTime", "eventTime"),
        ("series", "series"),
        ("reportingController", "reportingComponent"),
        ("reportingInstance", "reportingInstance"),
        ("deprecatedSource", "source"),
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
        ("deprecatedCount", "count"),
    ] {
        if let Some(v) = event.get(from).filter(|v| !v.is_null()) {
            core.insert(to.into(), v.clone());
        }
    }
    if !core.contains_key("involvedObject") {
        core.insert("involvedObject".into(), json!({}));
    }
    Value::Object(core)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fields_are_renamed_as_the_api_server_converts_them() {
        let event = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "default", "uid": "u", "resourceVersion": "9"},
            "regarding": {"kind": "Deployment", "name": "web", "namespace": "default", "uid": "d"},
            "note": "incident 3: rolled back", "reason": "RolledBack", "type": "Normal",
            "action": "Rollback", "eventTime": "2026-12-01T00:00:00.000000Z",
            "reportingController": "rollbackd", "reportingInstance": "rollbackd-0",
            "series": {"count": 2, "lastObservedTime": "2026-12-01T00:00:05.000000Z"}
        });
        let core = to_core(&event);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["uid"], "d");
        assert_eq!(core["message"], "incident 3: rolled back");
        assert_eq!(core["reportingComponent"], "rollbackd");
        assert_eq!(core["series"]["count"], 2);
        assert_eq!(core["metadata"]["name"], "web.1");
        assert!(
            core["metadata"].get("uid").is_none(),
            "the store gives the copy its own"
        );
        assert!(core.get("note").is_none() && core.get("regarding").is_none());
    }
}
