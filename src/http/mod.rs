//! The HTTP surface: the Alertmanager webhook, the incident API and pages, health and metrics.
//!
//! [`router`] is a plain function of [`AppState`], so tests drive it with `oneshot` and no
//! socket. Every error is an [`ApiError`] rendered as `{"error": "..."}` with its status. Who may
//! call which route is decided in `auth`; [`serve`] runs the router on a socket with the
//! server's timeouts and connection limit.

mod api;
mod auth;
mod pages;
pub mod serve;
pub mod webhook;

pub use api::filter_from as api_filter;
pub use serve::{ServerLimits, serve};

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::config::Secret;
use crate::k8s::watch::Readiness;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub pipeline: Pipeline,
    pub metrics: Metrics,
    pub readiness: Readiness,
    /// The full token: every endpoint, the webhook included.
    pub token: Option<Arc<Secret>>,
    /// The read token: pages, read API and metrics, never the webhook.
    pub read_token: Option<Arc<Secret>>,
    /// Whether `/metrics` needs a token when one is configured.
    pub metrics_auth: bool,
    pub max_body_bytes: usize,
}

/// Every route, each behind the access it needs (see `auth`). The handlers and layers share
/// one `AppState` behind an `Arc`: axum hands each of them its own copy of the state for every
/// request, and copying the state itself costs dozens of reference counts each time.
pub fn router(state: AppState) -> Router {
    use middleware::from_fn_with_state as layer;
    let state = Arc::new(state);
    let webhook = Router::new()
        .route("/api/v1/alerts", post(webhook::receive))
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .route_layer(layer(state.clone(), webhook::require_json))
        .route_layer(layer(state.clone(), auth::require_full))
        .route_layer(layer(state.clone(), webhook::timed));
    let reads = Router::new()
        .route("/api/v1/incidents", get(api::list_incidents))
        .route("/api/v1/incidents/{id}", get(api::show_incident))
        .route("/api/v1/inconclusive", get(api::inconclusive))
        .route("/", get(pages::index))
        .route("/incidents/{id}", get(pages::incident))
        .route_layer(layer(state.clone(), auth::require_read));
    let metrics = Router::new()
        .route("/metrics", get(api::metrics))
        .route_layer(layer(state.clone(), auth::require_metrics));
    Router::new()
        .merge(webhook)
        .merge(reads)
        .merge(metrics)
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .with_state(state)
}

/// Every error the HTTP layer returns.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, axum::Json(json!({"error": self.to_string()}))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod pages_tests;
#[cfg(test)]
mod tests;
