//! The HTTP surface: the Alertmanager webhook, the incident API and pages, health and metrics.
//!
//! [`router`] is a plain function of [`AppState`], so tests drive it with `oneshot` and no
//! socket. Every error is an [`ApiError`] rendered as `{"error": "..."}` with its status.

mod api;
mod pages;
pub mod webhook;

pub use api::filter_from as api_filter;

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
    pub token: Option<Arc<Secret>>,
    pub max_body_bytes: usize,
}

pub fn router(state: AppState) -> Router {
    let webhook = Router::new()
        .route("/api/v1/alerts", post(webhook::receive))
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            webhook::authorize,
        ));
    Router::new()
        .merge(webhook)
        .route("/api/v1/incidents", get(api::list_incidents))
        .route("/api/v1/incidents/{id}", get(api::show_incident))
        .route("/api/v1/inconclusive", get(api::inconclusive))
        .route("/", get(pages::index))
        .route("/incidents/{id}", get(pages::incident))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
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
    PayloadTooLarge(String),
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
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
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
mod tests;
