//! Write semantics of the store: create and update (PUT, PATCH, /status), the way
//! kube-apiserver's generic registry applies them (deletion is in `gc.rs`).
//!
//! Create fills uid, resourceVersion, creationTimestamp and generation, drops `status` for
//! resources with a status subresource, and refuses existing names (409) and missing
//! namespaces (404). Update checks the resourceVersion precondition (409 on a stale one),
//! keeps system metadata, applies the row's status policy and generation policy, and is a
//! no-op (no new resourceVersion, no event) when nothing changed. `dry_run` does everything
//! but the commit.

use serde_json::{Value, json};

use super::resources::{GenerationPolicy, ResourceDef, StatusPolicy};
use super::status::ApiError;
use super::store::{Event, EventType, Store, meta_str, now_rfc3339, rv_of};

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
}

const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Five random characters, like the real server's `generateName` suffix.
fn random_suffix() -> String {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5]
        .iter()
        .map(|b| NAME_ALPHABET[*b as usize % NAME_ALPHABET.len()] as char)
        .collect()
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Everything outside metadata/status/kind/apiVersion: what a "spec change" compares.
fn spec_part(o: &Value) -> Value {
    let mut o = o.clone();
    if let Some(m) = o.as_object_mut() {
        for k in ["metadata", "status", "kind", "apiVersion"] {
            m.remove(k);
        }
    }
    o
}

/// Drop `null` members recursively: the real server decodes into Go structs, where an
/// explicit null and an absent optional field are the same thing.
pub fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

pub(crate) fn set_meta(o: &mut Value, field: &str, v: Value) {
    if let Some(m) = o.as_object_mut() {
        let md = m.entry("metadata").or_insert_with(|| json!({}));
        if !md.is_object() {
            *md = json!({});
        }
        if let Some(md) = md.as_object_mut() {
            if v.is_null() {
                md.remove(field);
            } else {
                md.insert(field.to_string(), v);
            }
        }
    }
}

fn copy_meta(to: &mut Value, from: &Value, field: &str) {
    let v = from
        .get("metadata")
        .and_then(|m| m.get(field))
        .cloned()
        .unwrap_or(Value::Null);
    set_meta(to, field, v);
}

impl Store {
    pub fn create(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        mut obj: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        strip_nulls(&mut obj);
        self.check_type(def, &obj)?;
        let ns = Store::write_namespace(def, ns);
        if def.namespaced {
            if let Some(n) = meta_str(&obj, "namespace").filter(|n| !n.is_empty() && *n != ns) {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object does not match the namespace sent on the request ({n} != {ns})"
                )));
            }
            set_meta(&mut obj, "namespace", json!(ns));
        } else {
            set_meta(&mut obj, "namespace", Value::Null);
        }
        let name = match meta_str(&obj, "name").filter(|n| !n.is_empty()) {
            Some(n) => n.to_string(),
            None => match meta_str(&obj, "generateName").filter(|n| !n.is_empty()) {
                Some(g) => format!("{g}{}", random_suffix()),
                None => {
                    return Err(ApiError::invalid(
                        def,
                        "",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    ));
                }
            },
        };
        let name_ok = if def.plural == "namespaces" {
            is_dns_label(&name)
        } else {
            is_dns_subdomain(&name)
        };
        if !name_ok {
            return Err(ApiError::invalid(
                def,
                &name,
                "metadata.name",
                &format!(
                    "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                ),
            ));
        }
        if meta_str(&obj, "resourceVersion").is_some_and(|r| !r.is_empty()) {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        set_meta(&mut obj, "name", json!(name));
        set_meta(&mut obj, "uid", json!(uuid::Uuid::new_v4().to_string()));
        set_meta(&mut obj, "creationTimestamp", json!(now_rfc3339()));
        for f in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
        ] {
            set_meta(&mut obj, f, Value::Null);
        }
        if def.generation != GenerationPolicy::None {
            set_meta(&mut obj, "generation", json!(1));
        } else {
            set_meta(&mut obj, "generation", Value::Null);
        }
        if def.status.is_some()
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        if let Some(d) = def.defaulter {
            d(&mut obj);
        }
        if let Some(v) = def.validate {
            v(&obj).map_err(|(f, d)| ApiError::invalid(def, &name, &f, &d))?;
        }
        let mut st = self.lock();
        if def.namespaced && !Store::namespace_exists(&st, ns) {
            return Err(ApiError::namespace_not_found(ns));
        }
        let key = (ns.to_string(), name.clone());
        if st
            .objects
            .get(&def.storage_key())
            .is_some_and(|m| m.contains_key(&key))
        {
            return Err(ApiError::already_exists(def, &name));
        }
        if dry_run {
            return Ok(obj);
        }
        let rv = Store::next_rv(&mut st);
        set_meta(&mut obj, "resourceVersion", json!(rv.to_string()));
        st.put(&def.storage_key(), ns, &name, obj.clone());
        let ev = Event {
            rv,
            key: def.storage_key(),
            namespace: ns.into(),
            kind: EventType::Added,
            object: obj.clone(),
            old: None,
        };
        self.publish(&mut st, ev);
        Ok(obj)
    }

    /// kind/apiVersion in a body must name this resource; absent ones are filled in.
    fn check_type(&self, def: &ResourceDef, obj: &Value) -> Result<(), ApiError> {
        if let Some(av) = obj.get("apiVersion").and_then(Value::as_str)
            && av != def.api_version()
            && !(def.group.is_empty() && av.is_empty())
        {
            let same_group = super::resources::split_api_version(av).0 == def.group;
            if !same_group {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({})",
                    def.api_version()
                )));
            }
        }
        if let Some(k) = obj.get("kind").and_then(Value::as_str)
            && !k.is_empty()
            && k != def.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                def.kind
            )));
        }
        Ok(())
    }

    /// Read-modify-write of one object under the lock: `f` gets the stored object and returns
    /// the object the client wants (a PUT body, or a patched copy). Preconditions, status
    /// policy, generation and the no-op rule apply to the result.
    pub fn modify(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        part: Part,
        dry_run: bool,
        f: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let ns = Store::write_namespace(def, ns);
        let mut st = self.lock();
        let key = (ns.to_string(), name.to_string());
        let old = Store::object_locked(&st, def, &key)?;
        let mut new = f(&old)?;
        strip_nulls(&mut new);
        if !new.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        self.check_type(def, &new)?;
        if let Some(n) = meta_str(&new, "name").filter(|n| *n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        if def.namespaced
            && let Some(n) = meta_str(&new, "namespace").filter(|n| !n.is_empty() && *n != ns)
        {
            return Err(ApiError::bad_request(format!(
                "the namespace of the provided object does not match the namespace sent on the request ({n} != {ns})"
            )));
        }
        if let Some(rv) = meta_str(&new, "resourceVersion").filter(|r| !r.is_empty())
            && rv != rv_of(&old).to_string()
        {
            return Err(ApiError::conflict(def, name));
        }
        if let (Some(u), Some(o)) = (
            meta_str(&new, "uid").filter(|u| !u.is_empty()),
            meta_str(&old, "uid"),
        ) && u != o
        {
            return Err(ApiError::conflict_msg(
                def,
                name,
                &format!("Precondition failed: UID in precondition: {u}, UID in object meta: {o}"),
            ));
        }
        let mut result = match (part, def.status) {
            (Part::Status, Some(StatusPolicy::OnlyStatus)) | (Part::Status, None) => {
                let mut r = old.clone();
                if let Some(m) = r.as_object_mut() {
                    match new.get("status") {
                        Some(s) => m.insert("status".into(), s.clone()),
                        None => m.remove("status"),
                    };
                }
                r
            }
            (Part::Status, Some(StatusPolicy::KeepSpecAndLabels)) => {
                let mut r = new.clone();
                if let Some(m) = r.as_object_mut() {
                    match old.get("spec") {
                        Some(s) => m.insert("spec".into(), s.clone()),
                        None => m.remove("spec"),
                    };
                }
                copy_meta(&mut r, &old, "labels");
                r
            }
            (Part::Main, policy) => {
                let mut r = new.clone();
                if policy.is_some()
                    && let Some(m) = r.as_object_mut()
                {
                    match old.get("status") {
                        Some(s) => m.insert("status".into(), s.clone()),
                        None => m.remove("status"),
                    };
                }
                if let Some(d) = def.defaulter {
                    d(&mut r);
                }
                if let Some(v) = def.validate {
                    v(&r).map_err(|(f, d)| ApiError::invalid(def, name, &f, &d))?;
                }
                r
            }
        };
        for f in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
        ] {
            copy_meta(&mut result, &old, f);
        }
        for f in ["selfLink", "managedFields"] {
            set_meta(&mut result, f, Value::Null);
        }
        if let Some(m) = result.as_object_mut() {
            m.insert("apiVersion".into(), json!(def.api_version()));
            m.insert("kind".into(), json!(def.kind));
        }
        if part == Part::Main {
            let spec_changed = spec_part(&old) != spec_part(&result);
            let ann_changed =
                old.pointer("/metadata/annotations") != result.pointer("/metadata/annotations");
            let bump = match def.generation {
                GenerationPolicy::None => false,
                GenerationPolicy::Spec => spec_changed,
                GenerationPolicy::SpecAndAnnotations => spec_changed || ann_changed,
            };
            if bump {
                let g = old
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                set_meta(&mut result, "generation", json!(g + 1));
            }
        }
        let finalized = result.pointer("/metadata/deletionTimestamp").is_some()
            && result
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_none_or(|a| a.is_empty());
        if result == old || dry_run {
            return Ok(if dry_run { result } else { old });
        }
        if finalized {
            self.remove_locked(&mut st, def.storage_key(), ns, name);
            self.collect_garbage(&mut st, "Background");
            return Ok(result);
        }
        let rv = Store::next_rv(&mut st);
        set_meta(&mut result, "resourceVersion", json!(rv.to_string()));
        st.put(&def.storage_key(), ns, name, result.clone());
        let ev = Event {
            rv,
            key: def.storage_key(),
            namespace: ns.into(),
            kind: EventType::Modified,
            object: result.clone(),
            old: Some(old),
        };
        self.publish(&mut st, ev);
        Ok(result)
    }
}
