//! The difference between the pod template that was blamed and the one restored, for the
//! incident page: images first (what changed for most bad rollouts), then every other field
//! that differs, as `path: before → after`. The `pod-template-hash` labels are left out: they
//! differ between any two revisions and say nothing.

use std::collections::BTreeMap;

use serde_json::Value;

/// One container whose image changed.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageChange {
    pub container: String,
    pub from: String,
    pub to: String,
}

/// One other field that differs; `None` where it is absent.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldChange {
    pub path: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TemplateDiff {
    pub images: Vec<ImageChange>,
    pub fields: Vec<FieldChange>,
}

const IGNORED: &[&str] = &[
    "metadata.labels.pod-template-hash",
    "metadata.labels.rollouts-pod-template-hash",
];

/// What differs from `from` (the blamed template) to `to` (the template restored).
pub fn template_diff(from: &Value, to: &Value) -> TemplateDiff {
    let (mut before, mut after) = (BTreeMap::new(), BTreeMap::new());
    flatten("", from, &mut before);
    flatten("", to, &mut after);
    let mut diff = TemplateDiff::default();
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        if IGNORED.contains(&key.as_str()) {
            continue;
        }
        let (b, a) = (before.get(key), after.get(key));
        if b == a {
            continue;
        }
        if let Some(container) = image_path(key) {
            diff.images.push(ImageChange {
                container,
                from: b.cloned().unwrap_or_else(|| "(none)".into()),
                to: a.cloned().unwrap_or_else(|| "(none)".into()),
            });
        } else {
            diff.fields.push(FieldChange {
                path: key.clone(),
                from: b.cloned(),
                to: a.cloned(),
            });
        }
    }
    diff
}

/// `spec.containers[web].image` → `web` (init containers are marked).
fn image_path(key: &str) -> Option<String> {
    let rest = key.strip_suffix("].image")?;
    if let Some(name) = rest.strip_prefix("spec.containers[") {
        return Some(name.to_string());
    }
    rest.strip_prefix("spec.initContainers[")
        .map(|name| format!("{name} (init)"))
}

/// Scalars by path; list items that have a `name` are addressed by it (`containers[web]`),
/// others by their index.
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&path, v, out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let key = item
                    .get("name")
                    .and_then(Value::as_str)
                    .map_or_else(|| i.to_string(), str::to_string);
                flatten(&format!("{prefix}[{key}]"), item, out);
            }
            if items.is_empty() {
                out.insert(prefix.to_string(), "[]".into());
            }
        }
        Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(image: &str, hash: &str, env: Option<&str>) -> Value {
        let mut c = json!({"name": "web", "image": image});
        if let Some(v) = env {
            c["env"] = json!([{"name": "MODE", "value": v}]);
        }
        json!({
            "metadata": {"labels": {"app": "web", "pod-template-hash": hash}},
            "spec": {"containers": [c, {"name": "proxy", "image": "envoy:1"}]},
        })
    }

    #[test]
    fn images_come_first_and_hashes_are_ignored() {
        let diff = template_diff(
            &template("web:2.0", "abc", Some("fast")),
            &template("web:1.0", "def", None),
        );
        assert_eq!(
            diff.images,
            vec![ImageChange {
                container: "web".into(),
                from: "web:2.0".into(),
                to: "web:1.0".into()
            }]
        );
        assert_eq!(
            diff.fields,
            vec![
                FieldChange {
                    path: "spec.containers[web].env[MODE].name".into(),
                    from: Some("MODE".into()),
                    to: None
                },
                FieldChange {
                    path: "spec.containers[web].env[MODE].value".into(),
                    from: Some("fast".into()),
                    to: None
                },
            ]
        );
    }

    #[test]
    fn equal_templates_have_no_diff() {
        let t = template("web:1.0", "abc", None);
        assert_eq!(template_diff(&t, &t), TemplateDiff::default());
    }
}
