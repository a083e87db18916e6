//! Server-side defaulting of built-in kinds, applied to every object a client writes.
//!
//! The real API server fills defaults when it decodes a request, so a Deployment created
//! with only an image comes back with `replicas: 1`, a RollingUpdate strategy, pod-spec
//! defaults and so on. These functions do the subset clients commonly read back; they only
//! fill fields that are absent, never overwrite.

use serde_json::{Map, Value, json};

/// Insert `v` at `key` unless present.
fn dflt(m: &mut Map<String, Value>, key: &str, v: Value) {
    if !m.contains_key(key) || m.get(key) == Some(&Value::Null) {
        m.insert(key.to_string(), v);
    }
}

/// The object map at `key`, created if absent. None if `key` holds a non-object.
fn obj<'a>(m: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    if !m.contains_key(key) || m.get(key) == Some(&Value::Null) {
        m.insert(key.to_string(), json!({}));
    }
    m.get_mut(key).and_then(Value::as_object_mut)
}

fn container(c: &mut Value) {
    let Some(c) = c.as_object_mut() else { return };
    dflt(c, "terminationMessagePath", json!("/dev/termination-log"));
    dflt(c, "terminationMessagePolicy", json!("File"));
    dflt(c, "resources", json!({}));
    let image = c
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    // imagePullPolicy: Always for ":latest" or an untagged image, IfNotPresent otherwise.
    let last = image.rsplit('/').next().unwrap_or_default();
    let tagged = !image.contains('@') && last.contains(':');
    let policy = if image.contains('@') || (tagged && !last.ends_with(":latest")) {
        "IfNotPresent"
    } else {
        "Always"
    };
    dflt(c, "imagePullPolicy", json!(policy));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            dflt(p, "protocol", json!("TCP"));
        }
    }
}

/// Defaults of a PodSpec.
pub fn pod_spec(spec: &mut Map<String, Value>) {
    dflt(spec, "restartPolicy", json!("Always"));
    dflt(spec, "terminationGracePeriodSeconds", json!(30));
    dflt(spec, "dnsPolicy", json!("ClusterFirst"));
    dflt(spec, "securityContext", json!({}));
    dflt(spec, "schedulerName", json!("default-scheduler"));
    for key in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(key).and_then(Value::as_array_mut) {
            cs.iter_mut().for_each(container);
        }
    }
}

fn template(spec: &mut Map<String, Value>) {
    if let Some(t) = obj(spec, "template")
        && let Some(ps) = obj(t, "spec")
    {
        pod_spec(ps);
    }
}

pub fn deployment(o: &mut Value) {
    let Some(spec) = o.as_object_mut().and_then(|m| obj(m, "spec")) else {
        return;
    };
    dflt(spec, "replicas", json!(1));
    dflt(spec, "revisionHistoryLimit", json!(10));
    dflt(spec, "progressDeadlineSeconds", json!(600));
    if let Some(strategy) = obj(spec, "strategy") {
        dflt(strategy, "type", json!("RollingUpdate"));
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate")
            && let Some(ru) = obj(strategy, "rollingUpdate")
        {
            dflt(ru, "maxUnavailable", json!("25%"));
            dflt(ru, "maxSurge", json!("25%"));
        }
    }
    template(spec);
}

pub fn replicaset(o: &mut Value) {
    let Some(spec) = o.as_object_mut().and_then(|m| obj(m, "spec")) else {
        return;
    };
    dflt(spec, "replicas", json!(1));
    template(spec);
}

pub fn pod(o: &mut Value) {
    let Some(spec) = o.as_object_mut().and_then(|m| obj(m, "spec")) else {
        return;
    };
    pod_spec(spec);
    dflt(spec, "enableServiceLinks", json!(true));
    if let Some(status) = o.as_object_mut().and_then(|m| obj(m, "status")) {
        dflt(status, "phase", json!("Pending"));
        dflt(status, "qosClass", json!("BestEffort"));
    }
}

pub fn service(o: &mut Value) {
    let Some(spec) = o.as_object_mut().and_then(|m| obj(m, "spec")) else {
        return;
    };
    dflt(spec, "type", json!("ClusterIP"));
    dflt(spec, "sessionAffinity", json!("None"));
    if spec.get("type").and_then(Value::as_str) != Some("ExternalName") {
        // A made-up address from the service CIDR; nothing routes to it.
        let b = uuid::Uuid::new_v4().into_bytes();
        let ip = spec
            .get("clusterIP")
            .cloned()
            .unwrap_or_else(|| json!(format!("10.96.{}.{}", b[0], b[1].max(1))));
        dflt(spec, "clusterIP", ip.clone());
        dflt(spec, "clusterIPs", json!([ip]));
        dflt(spec, "ipFamilies", json!(["IPv4"]));
        dflt(spec, "ipFamilyPolicy", json!("SingleStack"));
        dflt(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            dflt(p, "protocol", json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                dflt(p, "targetPort", port);
            }
        }
    }
}

pub fn namespace(o: &mut Value) {
    let Some(m) = o.as_object_mut() else { return };
    let name = m
        .get("metadata")
        .and_then(|md| md.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    if let (Some(name), Some(md)) = (name, obj(m, "metadata"))
        && let Some(labels) = obj(md, "labels")
    {
        labels.insert("kubernetes.io/metadata.name".into(), json!(name));
    }
    if let Some(spec) = obj(m, "spec") {
        dflt(spec, "finalizers", json!(["kubernetes"]));
    }
    if let Some(status) = obj(m, "status") {
        dflt(status, "phase", json!("Active"));
    }
}

/// A validation failure: (field path, detail), rendered as 422 Invalid.
pub type Invalid = (String, String);

fn labels_literal(m: &Map<String, Value>) -> String {
    let parts: Vec<String> = m.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("map[string]string{{{}}}", parts.join(", "))
}

/// Validation shared by Deployments and ReplicaSets: the shapes the controller relies on.
pub fn validate_workload(o: &Value) -> Result<(), Invalid> {
    let inv = |f: &str, d: &str| Err((f.to_string(), d.to_string()));
    let Some(spec) = o.get("spec").and_then(Value::as_object) else {
        return inv("spec", "Required value");
    };
    if let Some(r) = spec.get("replicas")
        && r.as_i64().is_none_or(|n| n < 0)
    {
        return inv(
            "spec.replicas",
            &format!("Invalid value: {r}: must be greater than or equal to 0"),
        );
    }
    let Some(sel) = spec.get("selector").and_then(Value::as_object) else {
        return inv("spec.selector", "Required value");
    };
    let Some(selector) = super::selectors::selector_from_object(&Value::Object(sel.clone())) else {
        return inv("spec.selector", "Invalid value: malformed label selector");
    };
    if selector.is_empty() {
        return inv(
            "spec.selector",
            "Invalid value: \"null\": empty selector is invalid for deployment",
        );
    }
    let Some(t) = spec.get("template").and_then(Value::as_object) else {
        return inv("spec.template", "Required value");
    };
    let md = t.get("metadata").cloned().unwrap_or(Value::Null);
    if !(md.is_null() || md.is_object()) {
        return inv("spec.template.metadata", "Invalid value: must be an object");
    }
    let labels = md.get("labels").cloned().unwrap_or(json!({}));
    let Some(lm) = labels
        .as_object()
        .filter(|m| m.values().all(Value::is_string))
    else {
        return inv(
            "spec.template.metadata.labels",
            "Invalid value: labels must be a map of strings",
        );
    };
    if !selector.matches(Some(&labels)) {
        return inv(
            "spec.template.metadata.labels",
            &format!(
                "Invalid value: {}: `selector` does not match template `labels`",
                labels_literal(lm)
            ),
        );
    }
    let containers = t
        .get("spec")
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array);
    let Some(cs) = containers.filter(|c| !c.is_empty()) else {
        return inv("spec.template.spec.containers", "Required value");
    };
    for (i, c) in cs.iter().enumerate() {
        for f in ["name", "image"] {
            if c.get(f)
                .and_then(Value::as_str)
                .is_none_or(|s| s.is_empty())
            {
                return inv(
                    &format!("spec.template.spec.containers[{i}].{f}"),
                    "Required value",
                );
            }
        }
    }
    Ok(())
}
