//! Aggregated discovery (`apidiscovery.k8s.io/v2`, and `v2beta1` for older clients): all
//! groups, versions and resources in one `APIGroupDiscoveryList`, answered at `/api` and
//! `/apis` when the Accept header asks for `as=APIGroupDiscoveryList`.
//!
//! kubectl 1.32 asks for it first and uses it when offered (one request instead of one per
//! group version); kube-rs 5's `Discovery::run_aggregated` requires it. The response
//! Content-Type names the chosen version, which is how clients tell it from the legacy
//! documents (`discovery.rs`).

use serde_json::{Value, json};

use super::discovery::VERBS;
use super::resources::Registry;

const SUB_VERBS: &[&str] = &["get", "patch", "update"];

/// The aggregated-discovery version the Accept header asks for, if any, most preferred first.
pub fn negotiate(accept: &str) -> Option<&'static str> {
    for media in accept.split(',') {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        let has = |p: &str| params.contains(&p);
        if has("g=apidiscovery.k8s.io") && has("as=APIGroupDiscoveryList") {
            if has("v=v2") {
                return Some("v2");
            }
            if has("v=v2beta1") {
                return Some("v2beta1");
            }
        }
    }
    None
}

pub fn content_type(version: &str) -> String {
    format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList")
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

fn group_doc(reg: &Registry, group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| {
            let resources: Vec<Value> = reg
                .in_group_version(group, v)
                .map(|d| {
                    let mut subs = Vec::new();
                    if d.scale.is_some() {
                        subs.push(json!({"subresource": "scale", "responseKind": gvk("autoscaling", "v1", "Scale"), "verbs": SUB_VERBS}));
                    }
                    if d.status.is_some() {
                        subs.push(json!({"subresource": "status", "responseKind": gvk(d.group, d.version, d.kind), "verbs": SUB_VERBS}));
                    }
                    let mut r = json!({
                        "resource": d.plural,
                        "responseKind": gvk(d.group, d.version, d.kind),
                        "scope": if d.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": d.singular,
                        "verbs": VERBS,
                    });
                    if !d.short_names.is_empty() {
                        r["shortNames"] = json!(d.short_names);
                    }
                    if !d.categories.is_empty() {
                        r["categories"] = json!(d.categories);
                    }
                    if !subs.is_empty() {
                        r["subresources"] = json!(subs);
                    }
                    r
                })
                .collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    let mut meta = json!({"creationTimestamp": null});
    if !group.is_empty() {
        meta["name"] = json!(group);
    }
    json!({"metadata": meta, "versions": versions})
}

/// `/api` (core = true) or `/apis` as an APIGroupDiscoveryList of `version`.
pub fn list(reg: &Registry, core: bool, version: &str) -> Value {
    let items: Vec<Value> = reg
        .groups()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, vs)| group_doc(reg, g, &vs))
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::negotiate;

    #[test]
    fn negotiation_follows_kubectls_accept_header() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(negotiate(kubectl), Some("v2"));
        assert_eq!(
            negotiate("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"),
            Some("v2beta1")
        );
        assert_eq!(negotiate("application/json, */*"), None);
    }
}
