//! Strategic merge patch (`application/strategic-merge-patch+json`) for built-in kinds.
//!
//! The real server reads patch strategies from Go struct tags; the sandbox has no schema, so
//! [`list_strategy`] knows the merge keys of the lists kubectl's patches touch, by field name
//! and parent field (containers/initContainers/ephemeralContainers by `name`, env by `name`,
//! container ports by `containerPort`, Service ports by `port`, volumes by `name`,
//! volumeMounts by `mountPath`, ownerReferences by `uid`, conditions by `type`, ...);
//! `metadata.finalizers` merges as a set; every other list is replaced whole.
//! Maps merge recursively and `null` deletes. Directives handled: `$patch: replace|delete|merge`
//! (in maps and list elements), `$retainKeys`, `$setElementOrder/<field>`,
//! `$deleteFromPrimitiveList/<field>`. Unknown `$` keys are dropped, never stored.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
enum ListStrategy {
    MergeKey(&'static str),
    PrimitiveSet,
    Replace,
}

fn list_strategy(path: &[String]) -> ListStrategy {
    let last = path.last().map(String::as_str).unwrap_or_default();
    let parent = if path.len() >= 2 {
        path[path.len() - 2].as_str()
    } else {
        ""
    };
    let in_container = matches!(
        parent,
        "containers" | "initContainers" | "ephemeralContainers"
    );
    match last {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => ListStrategy::MergeKey("name"),
        "env" if in_container => ListStrategy::MergeKey("name"),
        "volumeMounts" if in_container => ListStrategy::MergeKey("mountPath"),
        "volumeDevices" if in_container => ListStrategy::MergeKey("devicePath"),
        "resizePolicy" if in_container => ListStrategy::MergeKey("resourceName"),
        "ports" if in_container => ListStrategy::MergeKey("containerPort"),
        "ports" if path.len() == 2 && parent == "spec" => ListStrategy::MergeKey("port"),
        "hostAliases" => ListStrategy::MergeKey("ip"),
        "topologySpreadConstraints" => ListStrategy::MergeKey("topologyKey"),
        "readinessGates" => ListStrategy::MergeKey("conditionType"),
        "conditions" if parent == "status" => ListStrategy::MergeKey("type"),
        "ownerReferences" if parent == "metadata" => ListStrategy::MergeKey("uid"),
        "finalizers" if parent == "metadata" => ListStrategy::PrimitiveSet,
        _ => ListStrategy::Replace,
    }
}

/// Apply a strategic merge patch to `original`.
pub fn apply(original: &Value, patch: &Value) -> Result<Value, String> {
    let mut out = original.clone();
    let Some(p) = patch.as_object() else {
        return Err("patch must be a JSON object".into());
    };
    if !merge_map(&mut out, p, &mut Vec::new())? {
        return Err("the patch deletes the whole object".into());
    }
    Ok(out)
}

/// Drop directive keys from a value being inserted as-is.
fn strip(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|e| e.get("$patch").is_none())
                .map(strip)
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Merge patch map `p` into `orig`. Returns false if the map is to be deleted.
fn merge_map(
    orig: &mut Value,
    p: &Map<String, Value>,
    path: &mut Vec<String>,
) -> Result<bool, String> {
    match p.get("$patch").and_then(Value::as_str) {
        Some("delete") => return Ok(false),
        Some("replace") => {
            *orig = strip(&Value::Object(p.clone()));
            return Ok(true);
        }
        Some("merge") | None => {}
        Some(other) => return Err(format!("Unknown patch type: {other} in map: {p:?}")),
    }
    if !orig.is_object() {
        *orig = Value::Object(Map::new());
    }
    let mut orders: Vec<(String, Vec<Value>)> = Vec::new();
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            if let Some(a) = v.as_array() {
                orders.push((field.to_string(), a.clone()));
            }
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let dels = v.as_array().cloned().unwrap_or_default();
            if let Some(list) = orig.get_mut(field).and_then(Value::as_array_mut) {
                list.retain(|e| !dels.contains(e));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        let Some(o) = orig.as_object_mut() else {
            continue;
        };
        match v {
            Value::Null => {
                o.remove(k);
            }
            Value::Object(pm) => {
                path.push(k.clone());
                let keep = match o.get_mut(k) {
                    Some(cur) if cur.is_object() => merge_map(cur, pm, path)?,
                    _ => {
                        let mut fresh = Value::Object(Map::new());
                        let keep = merge_map(&mut fresh, pm, path)?;
                        o.insert(k.clone(), fresh);
                        keep
                    }
                };
                path.pop();
                if !keep {
                    o.remove(k);
                }
            }
            Value::Array(pa) => {
                path.push(k.clone());
                let merged = merge_list(o.get(k), pa, path)?;
                path.pop();
                o.insert(k.clone(), merged);
            }
            scalar => {
                o.insert(k.clone(), scalar.clone());
            }
        }
    }
    if let Some(keys) = p.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
        if let Some(o) = orig.as_object_mut() {
            o.retain(|k, _| keep.contains(&k.as_str()));
        }
    }
    for (field, order) in orders {
        path.push(field.clone());
        let strategy = list_strategy(path);
        path.pop();
        if let Some(list) = orig.get_mut(&field).and_then(Value::as_array_mut) {
            reorder(list, &order, &strategy);
        }
    }
    Ok(true)
}

fn key_of<'a>(e: &'a Value, strategy: &ListStrategy) -> Option<&'a Value> {
    match strategy {
        ListStrategy::MergeKey(k) => e.get(*k),
        _ => Some(e),
    }
}

fn reorder(list: &mut Vec<Value>, order: &[Value], strategy: &ListStrategy) {
    let pos = |e: &Value| {
        let k = key_of(e, strategy);
        order
            .iter()
            .position(|o| k.is_some() && key_of(o, strategy) == k)
    };
    let (mut known, rest): (Vec<Value>, Vec<Value>) =
        list.drain(..).partition(|e| pos(e).is_some());
    known.sort_by_key(|e| pos(e).unwrap_or(usize::MAX));
    known.extend(rest);
    *list = known;
}

fn merge_list(
    orig: Option<&Value>,
    patch: &[Value],
    path: &mut Vec<String>,
) -> Result<Value, String> {
    let strategy = list_strategy(path);
    let replace = patch
        .iter()
        .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"));
    let cur: Vec<Value> = orig.and_then(Value::as_array).cloned().unwrap_or_default();
    if replace || strategy == ListStrategy::Replace {
        return Ok(strip(&Value::Array(patch.to_vec())));
    }
    let mut out = cur;
    match strategy {
        ListStrategy::PrimitiveSet => {
            for e in patch {
                if !out.contains(e) {
                    out.push(e.clone());
                }
            }
        }
        ListStrategy::MergeKey(k) => {
            for pe in patch {
                let Some(pm) = pe.as_object() else {
                    return Err(format!(
                        "the list at {} is merged by key {k}; its elements must be objects",
                        path.join(".")
                    ));
                };
                let Some(kv) = pm.get(k) else {
                    return Err(format!(
                        "map: {pm:?} does not contain declared merge key: {k}"
                    ));
                };
                if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                    out.retain(|e| e.get(k) != Some(kv));
                    continue;
                }
                match out.iter_mut().find(|e| e.get(k) == Some(kv)) {
                    Some(existing) => {
                        if !merge_map(existing, pm, path)? {
                            out.retain(|e| e.get(k) != Some(kv));
                        }
                    }
                    None => {
                        let mut fresh = Value::Object(Map::new());
                        if merge_map(&mut fresh, pm, path)? {
                            out.push(fresh);
                        }
                    }
                }
            }
        }
        ListStrategy::Replace => {}
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_image_merges_containers_by_name() {
        let orig = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "nginx", "image": "nginx:1.0", "ports": [{"containerPort": 80}]},
            {"name": "side", "image": "side:1"}]}}}});
        let p = json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:2.0"}]}}}});
        let out = apply(&orig, &p).unwrap();
        assert_eq!(
            out.pointer("/spec/template/spec/containers/0/image"),
            Some(&json!("nginx:2.0"))
        );
        assert_eq!(
            out.pointer("/spec/template/spec/containers/0/ports/0/containerPort"),
            Some(&json!(80))
        );
        assert_eq!(
            out.pointer("/spec/template/spec/containers/1/image"),
            Some(&json!("side:1"))
        );
    }

    #[test]
    fn directives() {
        let orig = json!({"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let p = json!({
            "metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "labels": {"y": null}},
            "spec": {
                "$setElementOrder/containers": [{"name": "c"}, {"name": "b"}],
                "containers": [{"name": "a", "$patch": "delete"}, {"name": "c", "image": "c"}],
                "strategy": {"$retainKeys": ["type"], "type": "Recreate"}
            }
        });
        let out = apply(&orig, &p).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(out["metadata"]["labels"], json!({"x": "1"}));
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "c", "image": "c"}, {"name": "b"}])
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn replace_directives() {
        let orig = json!({"spec": {"selector": {"a": "1"}, "ports": [{"port": 80}, {"port": 81}]}});
        let p = json!({"spec": {"selector": {"$patch": "replace", "b": "2"}, "ports": [{"$patch": "replace"}, {"port": 90}]}});
        let out = apply(&orig, &p).unwrap();
        assert_eq!(out["spec"]["selector"], json!({"b": "2"}));
        assert_eq!(out["spec"]["ports"], json!([{"port": 90}]));
    }
}
