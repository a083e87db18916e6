//! A minimal OpenAPI v3 discovery, generated from the resource table.
//!
//! `kubectl apply` (and `create -f`, `replace`) validate with `--validate=strict` by default:
//! kubectl asks `/openapi/v3` whether each kind's PATCH operation takes the `fieldValidation`
//! query parameter; if yes it leaves validation to the server, if no (or OpenAPI is missing)
//! it validates client-side against `/openapi/v2` and fails when that is missing too. So the
//! sandbox serves `/openapi/v3` (the group-version index) and `/openapi/v3/{api|apis/g}/v`
//! with one PATCH operation per resource carrying `x-kubernetes-group-version-kind` and the
//! `fieldValidation` parameter, and no schemas. Without a `requestBody`, kubectl's apply
//! computes strategic merge patches from its compiled-in types (custom resources: JSON
//! merge patch). `/openapi/v2` stays 404; `kubectl explain` therefore does not work.

use serde_json::{Map, Value, json};

use super::resources::Registry;

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `GET /openapi/v3`
pub fn index(reg: &Registry) -> Value {
    let mut paths = Map::new();
    for (g, vs) in reg.groups() {
        for v in vs {
            let p = gv_path(g, v);
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=sandbox")}),
            );
        }
    }
    json!({"paths": paths})
}

/// `GET /openapi/v3/api/v1` or `/openapi/v3/apis/{group}/{version}`
pub fn group_version(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut paths = Map::new();
    for d in reg.in_group_version(group, version) {
        let base = format!("/{}", gv_path(group, version));
        let path = if d.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", d.plural)
        } else {
            format!("{base}/{}/{{name}}", d.plural)
        };
        let op = json!({
            "x-kubernetes-group-version-kind": {"group": d.group, "version": d.version, "kind": d.kind},
            "x-kubernetes-action": "patch",
            "operationId": format!("patch{}", d.kind),
            "parameters": [
                {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}}
            ],
            "responses": {"200": {"description": "OK"}}
        });
        paths.insert(path, json!({"patch": op}));
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (rollbackd sandbox)", "version": "v1.32.4"},
        "paths": paths,
        "components": {"schemas": {}}
    }))
}
