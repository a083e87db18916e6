//! Who may call what: closed by default once a token is configured.
//!
//! With no token every endpoint is open, which suits the default loopback listener. Once
//! `server.token` (or `server.read_token`) is set, every endpoint but `/healthz` and `/readyz`
//! needs `Authorization: Bearer <token>`:
//!
//! | token presented | webhook | pages, read API | `/metrics` |
//! | --- | --- | --- | --- |
//! | full (`server.token`) | yes | yes | yes |
//! | read (`server.read_token`) | no | yes | yes |
//! | none or wrong | no | no | only with `server.metrics_auth = false` |
//!
//! A presented token is compared with both configured tokens, each in constant time.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::config::Secret;

/// What a request's bearer token allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    /// Nothing but the open endpoints.
    None,
    /// The pages, the read API and `/metrics`.
    Read,
    /// Everything, the webhook included.
    Full,
}

/// The token after `Bearer ` (scheme in any case), if the header has one.
fn presented(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn matches(presented: &str, token: Option<&Secret>) -> bool {
    token.is_some_and(|t| bool::from(presented.as_bytes().ct_eq(t.expose().as_bytes())))
}

/// With no token configured everything is allowed.
fn access(state: &AppState, headers: &HeaderMap) -> Access {
    if state.token.is_none() && state.read_token.is_none() {
        return Access::Full;
    }
    let presented = presented(headers).unwrap_or("");
    // Both comparisons always run, so the time taken does not say which token nearly matched.
    let full = matches(presented, state.token.as_deref());
    let read = matches(presented, state.read_token.as_deref());
    match (full, read) {
        (true, _) => Access::Full,
        (false, true) => Access::Read,
        (false, false) => Access::None,
    }
}

/// The webhook: the full token only. A refusal is counted as a rejected delivery.
pub async fn require_full(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if access(&state, request.headers()) != Access::Full {
        state.metrics.webhook_rejected("unauthorized");
        return Err(ApiError::Unauthorized);
    }
    Ok(next.run(request).await)
}

/// The pages and the read API: the full or the read token.
pub async fn require_read(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if access(&state, request.headers()) == Access::None {
        return Err(ApiError::Unauthorized);
    }
    Ok(next.run(request).await)
}

/// `/metrics`: as the read API, unless `server.metrics_auth = false`.
pub async fn require_metrics(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if state.metrics_auth && access(&state, request.headers()) == Access::None {
        return Err(ApiError::Unauthorized);
    }
    Ok(next.run(request).await)
}
