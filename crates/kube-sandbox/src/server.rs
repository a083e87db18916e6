//! The HTTP front door: one axum fallback handler that records the request, checks the
//! bearer token, serves the admin endpoints, discovery, and hands resource paths to `api.rs`.
//!
//! Data model: [`Shared`] is what every request sees: the store, the request log and fault
//! queue, the token, and a shutdown signal that ends watch streams.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use super::admin::{Admin, Fault, FaultAction, RecordedRequest};
use super::status::ApiError;
use super::store::Store;
use super::{aggregated, discovery, openapi};

/// The largest request body accepted (the real server's limit is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

pub struct Shared {
    pub store: Arc<Store>,
    pub admin: Admin,
    pub token: String,
    pub shutdown: watch::Receiver<bool>,
    /// The BOOKMARK interval of watches that allow them.
    pub bookmark_every: std::time::Duration,
}

pub fn json_response(code: u16, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_default()
}

pub fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.to_status())
}

fn authorized(sh: &Shared, headers: &HeaderMap) -> bool {
    let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(tok) = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
    else {
        return false;
    };
    bool::from(tok.trim().as_bytes().ct_eq(sh.token.as_bytes()))
}

/// The fallback handler: everything comes through here.
pub async fn handle(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return error_response(&ApiError::new(
                413,
                "RequestEntityTooLarge",
                "Request entity too large: limit is 3145728",
            ));
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| parts.uri.path().to_string());
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);

    if parts.uri.path().starts_with("/sandbox/") {
        if !authorized(&sh, &parts.headers) {
            return error_response(&ApiError::unauthorized());
        }
        return admin(&sh, &parts.method, parts.uri.path(), &body);
    }

    let idx = sh.admin.begin(RecordedRequest {
        method: parts.method.to_string(),
        path: path.clone(),
        content_type: content_type.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
        status: 0,
    });
    let resp = if authorized(&sh, &parts.headers) {
        route(
            &sh,
            &parts.method,
            &parts.uri,
            &parts.headers,
            content_type.as_deref(),
            body,
        )
        .await
    } else {
        error_response(&ApiError::unauthorized())
    };
    sh.admin.finish(idx, resp.status().as_u16());
    resp
}

fn admin(sh: &Shared, method: &Method, path: &str, body: &Bytes) -> Response {
    match (method.as_str(), path) {
        ("GET", "/sandbox/requests") => json_response(200, &json!(sh.admin.requests())),
        ("DELETE", "/sandbox/requests") => {
            sh.admin.clear_requests();
            json_response(200, &json!({"cleared": true}))
        }
        ("POST", "/sandbox/faults") => match serde_json::from_slice::<Fault>(body) {
            Ok(f) => {
                sh.admin.inject(f.clone());
                json_response(201, &json!(f))
            }
            Err(e) => error_response(&ApiError::bad_request(format!("invalid fault: {e}"))),
        },
        (_, "/sandbox/requests" | "/sandbox/faults") => {
            error_response(&ApiError::method_not_allowed())
        }
        _ => error_response(&ApiError::path_not_found()),
    }
}

async fn route(
    sh: &Arc<Shared>,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    content_type: Option<&str>,
    body: Bytes,
) -> Response {
    let path = uri.path().trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let reg = &sh.store.registry;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let is_get = method == Method::GET;
    let resource_path = matches!(segs.as_slice(), ["api", _, _, ..] | ["apis", _, _, _, ..]);
    if is_get && !resource_path {
        match sh.admin.take_discovery_fault(path) {
            Some(FaultAction::Status(code)) => return error_response(&ApiError::from_code(code)),
            // A discovery read changes nothing: holding its answer is a delay.
            Some(FaultAction::Delay(d) | FaultAction::HoldAnswer(d)) => tokio::time::sleep(d).await,
            None => {}
        }
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if let (true, ["api"] | ["apis"], Some(v)) =
        (is_get, segs.as_slice(), aggregated::negotiate(accept))
    {
        let doc = aggregated::list(reg, segs == ["api"], v);
        let mut resp = json_response(200, &doc);
        if let Ok(ct) = header::HeaderValue::from_str(&aggregated::content_type(v)) {
            resp.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        return resp;
    }
    let doc = match segs.as_slice() {
        ["version"] if is_get => Some(discovery::version()),
        ["healthz" | "livez" | "readyz"] if is_get => {
            return Response::builder()
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from("ok"))
                .unwrap_or_default();
        }
        ["api"] if is_get => Some(discovery::core_versions(host)),
        ["apis"] if is_get => Some(discovery::group_list(reg)),
        ["api", v] if is_get => discovery::resource_list(reg, "", v),
        ["apis", g] if is_get => discovery::group(reg, g),
        ["apis", g, v] if is_get => discovery::resource_list(reg, g, v),
        ["openapi", "v3"] if is_get => Some(openapi::index(reg)),
        ["openapi", "v3", "api", v] if is_get => openapi::group_version(reg, "", v),
        ["openapi", "v3", "apis", g, v] if is_get => openapi::group_version(reg, g, v),
        ["api", ..] | ["apis", _, _, ..] => {
            return super::api::serve(sh, method, uri, headers, content_type, body).await;
        }
        _ => None,
    };
    match doc {
        Some(d) => json_response(200, &d),
        None => error_response(&ApiError::path_not_found()),
    }
}
