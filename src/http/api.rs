//! JSON review API, health, readiness and metrics.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::store::{IncidentDetail, IncidentFilter, IncidentSummary};

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// A duration such as `2h`: only incidents updated since then.
    pub since: Option<String>,
    pub namespace: Option<String>,
    /// The workload's name.
    pub workload: Option<String>,
    /// The incident's outcome code.
    pub outcome: Option<String>,
}

pub fn filter_from(
    since: Option<&str>,
    namespace: Option<String>,
) -> Result<IncidentFilter, String> {
    let since = since
        .map(|s| {
            let d = humantime::parse_duration(s).map_err(|e| format!("bad duration {s:?}: {e}"))?;
            let d = jiff::SignedDuration::try_from(d).map_err(|e| e.to_string())?;
            jiff::Timestamp::now()
                .checked_sub(d)
                .map_err(|e| e.to_string())
        })
        .transpose()?;
    Ok(IncidentFilter {
        since,
        namespace,
        ..IncidentFilter::default()
    })
}

pub async fn list_incidents(
    State(state): State<Arc<AppState>>,
    Query(q): Query<ListQuery>,
) -> Result<axum::Json<Vec<IncidentSummary>>, ApiError> {
    let filter = IncidentFilter {
        workload: q.workload,
        outcome: q.outcome,
        ..filter_from(q.since.as_deref(), q.namespace).map_err(ApiError::BadRequest)?
    };
    let list = state
        .pipeline
        .store
        .list_incidents(&filter)
        .await
        .map_err(|_| ApiError::Unavailable("the incident store is unavailable".into()))?;
    Ok(axum::Json(list))
}

pub async fn load_incident(state: &AppState, id: &str) -> Result<IncidentDetail, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("incident id {id:?} is not a number")))?;
    state
        .pipeline
        .store
        .incident(id)
        .await
        .map_err(|_| ApiError::Unavailable("the incident store is unavailable".into()))?
        .ok_or_else(|| ApiError::NotFound(format!("no incident {id}")))
}

pub async fn show_incident(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<axum::Json<IncidentDetail>, ApiError> {
    Ok(axum::Json(load_incident(&state, &id).await?))
}

/// Periods during which polled rules could not be evaluated.
pub async fn inconclusive(
    State(state): State<Arc<AppState>>,
) -> Result<axum::Json<Vec<crate::store::InconclusivePeriod>>, ApiError> {
    let list = state
        .pipeline
        .store
        .inconclusive_periods()
        .await
        .map_err(|_| ApiError::Unavailable("the incident store is unavailable".into()))?;
    Ok(axum::Json(list))
}

pub async fn healthz() -> axum::Json<Value> {
    axum::Json(json!({"status": "ok"}))
}

/// Ready while the watches are fresh (discovery done; every watch listed, not failing and
/// heard from within `kubernetes.stale_after`) and the store answers; otherwise 503 with the
/// reason in one sentence.
pub async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, axum::Json<Value>) {
    let not_fresh = state.readiness.why_not_ready();
    let store = state.pipeline.store.ping().await;
    let reason = not_fresh
        .clone()
        .or_else(|| (!store).then(|| "the incident store does not answer".to_string()));
    let status = if reason.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({
            "watches_synced": not_fresh.is_none(),
            "store_open": store,
            "reason": reason,
        })),
    )
}

/// The text format 0.0.4, or OpenMetrics when the scraper's `Accept` asks for it.
pub async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = crate::metrics::Format::negotiate(accept);
    (
        [(header::CONTENT_TYPE, format.content_type())],
        state.metrics.render_as(format),
    )
}
