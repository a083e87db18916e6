//! The `/scale` subresource: an `autoscaling/v1` Scale view of any row with a [`ScaleDef`].
//!
//! Reading builds the Scale from the object (spec replicas, status replicas, selector as
//! text); writing takes `spec.replicas` from a Scale (a PUT body or a patched Scale) and sets
//! it on the object, with the Scale's resourceVersion as precondition.

use serde_json::{Value, json};

use super::resources::ResourceDef;
use super::selectors::{dotted, format_selector_object};
use super::status::ApiError;

/// Set the value at a dotted path, creating objects on the way.
pub fn set_dotted(obj: &mut Value, path: &str, v: Value) {
    let mut cur = obj;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let Some(m) = cur.as_object_mut() else { return };
        if i == parts.len() - 1 {
            m.insert(p.to_string(), v);
            return;
        }
        cur = m.entry(p.to_string()).or_insert_with(|| json!({}));
    }
}

/// The Scale of an object.
pub fn of(def: &ResourceDef, obj: &Value) -> Value {
    let Some(sd) = def.scale else {
        return Value::Null;
    };
    let md = obj.get("metadata").cloned().unwrap_or(json!({}));
    let mut meta = json!({});
    for f in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = md.get(f) {
            meta[f] = v.clone();
        }
    }
    let selector = match dotted(obj, sd.selector) {
        Some(Value::String(s)) => s.clone(),
        Some(sel @ Value::Object(_)) => format_selector_object(sel),
        _ => String::new(),
    };
    let mut status =
        json!({"replicas": dotted(obj, sd.status_replicas).and_then(Value::as_i64).unwrap_or(0)});
    if !selector.is_empty() {
        status["selector"] = json!(selector);
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": meta,
        "spec": {"replicas": dotted(obj, sd.spec_replicas).and_then(Value::as_i64).unwrap_or(0)},
        "status": status,
    })
}

/// The object `cur` with the replicas of `scale` applied.
pub fn apply(def: &ResourceDef, cur: &Value, scale: &Value) -> Result<Value, ApiError> {
    let Some(sd) = def.scale else {
        return Err(ApiError::path_not_found());
    };
    let name = cur
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let replicas = match scale.pointer("/spec/replicas") {
        None | Some(Value::Null) => 0,
        Some(v) => match v.as_i64() {
            Some(n) if (0..=i64::from(i32::MAX)).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid(
                    def,
                    name,
                    "spec.replicas",
                    &format!("Invalid value: {v}: must be greater than or equal to 0"),
                ));
            }
        },
    };
    let mut new = cur.clone();
    if let Some(rv) = scale
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
    {
        set_dotted(&mut new, "metadata.resourceVersion", json!(rv));
    }
    set_dotted(&mut new, sd.spec_replicas, json!(replicas));
    Ok(new)
}
