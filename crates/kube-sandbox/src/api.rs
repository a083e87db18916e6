//! Resource requests: `/api/v1/...` and `/apis/{group}/{version}/...` paths, parsed into a
//! [`Target`] (resource row, namespace, name, subresource), mapped to a Kubernetes verb,
//! checked against injected faults, then served: get, list, watch, create, update, patch,
//! delete, deletecollection, and the `/status` and `/scale` subresources.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Query;
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::admin::FaultAction;
use super::gc::DeleteOptions;
use super::patch::{self, PatchKind};
use super::resources::ResourceDef;
use super::selectors::{FieldSelector, LabelSelector};
use super::server::{Shared, error_response, json_response};
use super::status::{ApiError, delete_success};
use super::table;
use super::writes::Part;
use super::{paging, protobuf, scale, watch};

/// What a resource path names.
pub struct Target {
    pub def: ResourceDef,
    pub ns: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

/// The query string as ordered pairs.
pub struct QueryParams(pub Vec<(String, String)>);

impl QueryParams {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
}

fn parse_target(sh: &Shared, path: &str) -> Result<Target, ApiError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::path_not_found()),
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] if !matches!(*plural, "status" | "finalize") => {
            (Some(ns.to_string()), {
                let mut v = vec![*plural];
                v.extend_from_slice(tail);
                v
            })
        }
        other => (None, other.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(s.to_string())),
        _ => return Err(ApiError::path_not_found()),
    };
    let def = sh
        .store
        .registry
        .find(group, version, plural)
        .cloned()
        .ok_or_else(ApiError::path_not_found)?;
    if ns.is_some() && !def.namespaced {
        return Err(ApiError::path_not_found());
    }
    if ns.is_none() && def.namespaced && name.is_some() {
        return Err(ApiError::path_not_found());
    }
    match sub.as_deref() {
        None => {}
        Some("status") if def.status.is_some() => {}
        Some("scale") if def.scale.is_some() => {}
        Some(_) => return Err(ApiError::path_not_found()),
    }
    Ok(Target { def, ns, name, sub })
}

/// The object as answered for a request on `def`'s version.
pub fn present(def: &ResourceDef, mut obj: Value) -> Value {
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(def.api_version()));
        m.insert("kind".into(), json!(def.kind));
    }
    obj
}

fn dry_run(q: &QueryParams) -> Result<bool, ApiError> {
    match q.get("dryRun") {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(v) => Err(ApiError::bad_request(format!(
            "Invalid dryRun value: \"{v}\"; supported values: All"
        ))),
    }
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.starts_with(b"k8s\0") {
        return protobuf::decode(body).map_err(|e| {
            ApiError::unsupported_media_type(
                &format!("application/vnd.kubernetes.protobuf ({e})"),
                &["application/json", "application/yaml"],
            )
        });
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))
}

pub async fn serve(
    sh: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    ct: Option<&str>,
    body: Bytes,
) -> Response {
    let mut hold = None;
    let response = match serve_inner(sh, method, uri, headers, ct, body, &mut hold).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    // A request served (and applied) whose answer is held back: a lost answer, for clients.
    if let Some(d) = hold {
        tokio::time::sleep(d).await;
    }
    response
}

async fn serve_inner(
    sh: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    ct: Option<&str>,
    body: Bytes,
    hold: &mut Option<std::time::Duration>,
) -> Result<Response, ApiError> {
    let t = parse_target(sh, uri.path())?;
    let q = QueryParams(
        Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map(|q| q.0)
            .unwrap_or_default(),
    );
    let has_name = t.name.is_some();
    let verb = match (method.as_str(), has_name) {
        ("GET", true) => "get",
        ("GET", false) if q.flag("watch") => "watch",
        ("GET", false) => "list",
        ("POST", false) if t.ns.is_some() || !t.def.namespaced => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return Err(ApiError::method_not_allowed()),
    };
    if t.sub.is_some() && !matches!(verb, "get" | "update" | "patch") {
        return Err(ApiError::method_not_allowed());
    }
    let fault_resource = match &t.sub {
        Some(s) => format!("{}/{s}", t.def.plural),
        None => t.def.plural.to_string(),
    };
    match sh.admin.take_fault(verb, &fault_resource) {
        Some(FaultAction::Status(code)) => return Err(ApiError::from_code(code)),
        Some(FaultAction::Delay(d)) => tokio::time::sleep(d).await,
        Some(FaultAction::HoldAnswer(d)) => *hold = Some(d),
        None => {}
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let as_table = table::wants_table(accept);
    let include = q.get("includeObject").unwrap_or("Metadata").to_string();
    let store = &sh.store;
    let def = &t.def;
    let ns = t.ns.as_deref();
    let name = t.name.as_deref().unwrap_or_default();
    let part = if t.sub.as_deref() == Some("status") {
        Part::Status
    } else {
        Part::Main
    };
    let is_scale = t.sub.as_deref() == Some("scale");

    match verb {
        "get" => {
            let obj = present(def, store.get(def, ns, name)?);
            if is_scale {
                return Ok(json_response(200, &scale::of(def, &obj)));
            }
            if as_table {
                return Ok(json_response(
                    200,
                    &table::table(def, &[obj], None, &include),
                ));
            }
            Ok(json_response(200, &obj))
        }
        "list" => {
            let (labels, fields) = selectors(def, &q)?;
            let (limit, from) = chunking(&q)?;
            // As etcd's store: the remaining count only when no selector filtered the list.
            let unfiltered = labels.is_empty() && fields.is_empty();
            let chunk = paging::chunk(store, def, ns, limit, from.as_ref(), unfiltered, |o| {
                unfiltered || (labels.matches_object(o) && fields.matches(o))
            });
            let items: Vec<Value> = chunk.items.into_iter().map(|o| present(def, o)).collect();
            let mut meta = json!({"resourceVersion": chunk.rv.to_string()});
            if let Some((token, remaining)) = chunk.next {
                meta["continue"] = json!(token);
                if unfiltered {
                    meta["remainingItemCount"] = json!(remaining);
                }
            }
            if as_table {
                let mut t = table::table(def, &items, None, &include);
                t["metadata"] = meta;
                return Ok(json_response(200, &t));
            }
            Ok(json_response(
                200,
                &json!({
                    "kind": format!("{}List", def.kind),
                    "apiVersion": def.api_version(),
                    "metadata": meta,
                    "items": items,
                }),
            ))
        }
        "watch" => {
            let (labels, fields) = selectors(def, &q)?;
            watch::serve(
                sh.clone(),
                def.clone(),
                t.ns.clone(),
                labels,
                fields,
                &q,
                as_table.then_some(include),
            )
        }
        "create" => {
            let obj = parse_body(&body)?;
            let created = store.create(def, ns, obj, dry_run(&q)?)?;
            Ok(json_response(201, &present(def, created)))
        }
        "update" => {
            let obj = parse_body(&body)?;
            let dry = dry_run(&q)?;
            if is_scale {
                let updated = store.modify(def, ns, name, Part::Main, dry, |cur| {
                    scale::apply(def, cur, &obj)
                })?;
                return Ok(json_response(200, &scale::of(def, &present(def, updated))));
            }
            let updated = store.modify(def, ns, name, part, dry, |_| Ok(obj))?;
            Ok(json_response(200, &present(def, updated)))
        }
        "patch" => {
            let dry = dry_run(&q)?;
            if is_scale {
                let kind = PatchKind::from_content_type(ct, &scale_def(def))?;
                let updated = store.modify(def, ns, name, Part::Main, dry, |cur| {
                    let sc = scale::of(def, &present(def, cur.clone()));
                    let patched = patch::apply(kind, &sc, &body)?;
                    scale::apply(def, cur, &patched)
                })?;
                return Ok(json_response(200, &scale::of(def, &present(def, updated))));
            }
            let kind = PatchKind::from_content_type(ct, def)?;
            let updated = store.modify(def, ns, name, part, dry, |cur| {
                patch::apply(kind, &present(def, cur.clone()), &body)
            })?;
            Ok(json_response(200, &present(def, updated)))
        }
        "delete" => {
            let opts = delete_options(&q, &body)?;
            let (obj, gone) = store.delete(def, ns, name, &opts)?;
            if gone && !def.return_deleted {
                let uid = obj
                    .pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                return Ok(json_response(200, &delete_success(def, name, uid)));
            }
            Ok(json_response(200, &present(def, obj)))
        }
        "deletecollection" => {
            let (labels, fields) = selectors(def, &q)?;
            let opts = delete_options(&q, &body)?;
            let (items, _) = store.list(def, ns, |o| labels.matches_object(o) && fields.matches(o));
            let mut deleted = Vec::new();
            for o in items {
                let n = o
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let ons = o
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                if let Ok((d, _)) = store.delete(def, ons.as_deref(), &n, &opts) {
                    deleted.push(present(def, d));
                }
            }
            let rv = store.current_rv();
            Ok(json_response(
                200,
                &json!({"kind": format!("{}List", def.kind), "apiVersion": def.api_version(), "metadata": {"resourceVersion": rv.to_string()}, "items": deleted}),
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// Scale is a built-in type: strategic merge patch is accepted on `/scale` of any resource.
fn scale_def(def: &ResourceDef) -> ResourceDef {
    ResourceDef {
        strategic_merge: true,
        ..def.clone()
    }
}

/// `limit` and `continue` of a list. As kube-apiserver, a list at `resourceVersion=0` is served
/// whole from the watch cache, whatever its limit.
fn chunking(q: &QueryParams) -> Result<(Option<usize>, Option<paging::Continue>), ApiError> {
    let from = q
        .get("continue")
        .filter(|c| !c.is_empty())
        .map(paging::Continue::parse)
        .transpose()?;
    if from.is_some() && q.get("resourceVersion").is_some_and(|rv| !rv.is_empty()) {
        return Err(ApiError::bad_request(
            "specifying resource version is not allowed when using continue",
        ));
    }
    let limit = match q.get("limit").filter(|l| !l.is_empty()) {
        None => None,
        Some(l) => Some(l.parse::<usize>().map_err(|_| {
            ApiError::bad_request(format!("limit: Invalid value: \"{l}\": must be an integer"))
        })?),
    };
    let from_cache = q.get("resourceVersion") == Some("0");
    Ok((limit.filter(|_| !from_cache), from))
}

fn selectors(
    def: &ResourceDef,
    q: &QueryParams,
) -> Result<(LabelSelector, FieldSelector), ApiError> {
    Ok((
        LabelSelector::parse(q.get("labelSelector").unwrap_or_default())?,
        FieldSelector::parse(q.get("fieldSelector").unwrap_or_default(), def.field_labels)?,
    ))
}

/// DeleteOptions from the body (if any) and the query string.
fn delete_options(q: &QueryParams, body: &Bytes) -> Result<DeleteOptions, ApiError> {
    let mut o = DeleteOptions {
        dry_run: dry_run(q)?,
        propagation: q.get("propagationPolicy").map(str::to_string),
        ..Default::default()
    };
    if !body.iter().all(u8::is_ascii_whitespace) {
        let b = parse_body(body)?;
        if let Some(p) = b.get("propagationPolicy").and_then(Value::as_str) {
            o.propagation = Some(p.to_string());
        }
        if b.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
            o.propagation = Some("Orphan".into());
        }
        if let Some(dr) = b.get("dryRun").and_then(Value::as_array) {
            match dr
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .as_slice()
            {
                [] => {}
                ["All"] => o.dry_run = true,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "Invalid dryRun value: {other:?}; supported values: All"
                    )));
                }
            }
        }
        o.precondition_uid = b
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string);
        o.precondition_rv = b
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    if let Some(p) = o.propagation.as_deref()
        && !matches!(p, "Background" | "Foreground" | "Orphan")
    {
        return Err(ApiError::bad_request(format!(
            "propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
        )));
    }
    Ok(o)
}
