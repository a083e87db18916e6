//! `POST /api/v1/alerts`: the Alertmanager webhook receiver (payload version 4).
//!
//! The payload is parsed strictly where it matters (version, status, labels, timestamps) and
//! leniently elsewhere: unknown fields, such as `notification_reason` or `routeLabels` from
//! newer Alertmanagers, are accepted. A 2xx answer means every alert is durably recorded;
//! a store failure answers 503 so that Alertmanager retries. Before the body is read the
//! request needs the full token (see `auth`) and `Content-Type: application/json` (else 415).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::warn;

use super::serve::BodyTimeout;
use super::{ApiError, AppState};
use crate::core::alert::{Alert, AlertSource, AlertStatus, Fingerprint, LabelSet};
use crate::pipeline::error_chain;

/// The Alertmanager webhook body, version 4.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPayload {
    pub version: String,
    pub group_key: String,
    #[serde(default)]
    pub truncated_alerts: u64,
    pub status: AlertStatus,
    pub receiver: String,
    #[serde(default)]
    pub group_labels: LabelSet,
    #[serde(default)]
    pub common_labels: LabelSet,
    #[serde(default)]
    pub common_annotations: LabelSet,
    #[serde(rename = "externalURL", default)]
    pub external_url: String,
    pub alerts: Vec<WebhookAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    pub status: AlertStatus,
    pub labels: LabelSet,
    #[serde(default)]
    pub annotations: LabelSet,
    pub starts_at: Timestamp,
    #[serde(default)]
    pub ends_at: Option<Timestamp>,
    #[serde(rename = "generatorURL", default)]
    pub generator_url: String,
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// Go's zero time, which Alertmanager sends as `endsAt` for an alert with no end yet.
fn is_go_zero_time(t: Timestamp) -> bool {
    t.as_second() == -62_135_596_800
}

/// Parses and checks a delivery; the error names the problem.
pub fn parse(body: &[u8]) -> Result<(WebhookPayload, Vec<Alert>), String> {
    let payload: WebhookPayload =
        serde_json::from_slice(body).map_err(|e| format!("invalid Alertmanager payload: {e}"))?;
    if payload.version != "4" {
        return Err(format!(
            "unsupported payload version {:?}: rollbackd accepts Alertmanager webhook version \"4\"",
            payload.version
        ));
    }
    let external = (!payload.external_url.is_empty()).then(|| payload.external_url.clone());
    let alerts = payload
        .alerts
        .iter()
        .map(|a| {
            let fingerprint = Fingerprint::of(&a.labels);
            Alert {
                source: AlertSource::Alertmanager,
                status: a.status,
                labels: a.labels.clone(),
                annotations: a.annotations.clone(),
                starts_at: a.starts_at,
                ends_at: a.ends_at.filter(|t| !is_go_zero_time(*t)),
                generator_url: a.generator_url.clone(),
                fingerprint,
                external_url: external.clone(),
            }
        })
        .collect();
    Ok((payload, alerts))
}

/// Only `application/json` (with any parameters, in any case), checked before the body is
/// read. A browser can post `text/plain` or a form to any origin without asking first; it
/// cannot post JSON without a CORS preflight, which rollbackd never grants.
pub async fn require_json(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let content_type = request.headers().get(header::CONTENT_TYPE);
    let media_type = content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    if !media_type.is_some_and(|m| m.eq_ignore_ascii_case("application/json")) {
        state.metrics.webhook_rejected("content-type");
        let got = match content_type {
            None => "no Content-Type".to_string(),
            Some(v) => format!(
                "Content-Type {:?}",
                String::from_utf8_lossy(v.as_bytes())
                    .chars()
                    .take(80)
                    .collect::<String>()
            ),
        };
        return Err(ApiError::UnsupportedMediaType(format!(
            "the webhook accepts Content-Type application/json only (got {got})"
        )));
    }
    Ok(next.run(request).await)
}

/// Times every webhook request, refused ones included, into
/// `rollbackd_webhook_request_duration_seconds`.
pub async fn timed(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .webhook_request(response.status().as_u16(), started.elapsed());
    response
}

/// Whether reading the body failed because it did not arrive in time (`server.body_timeout`).
fn timed_out(rejection: &BytesRejection) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(e) = source {
        if e.is::<BodyTimeout>() {
            return true;
        }
        source = e.source();
    }
    false
}

pub async fn receive(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            state.metrics.webhook_rejected("too-large");
            ApiError::PayloadTooLarge(format!(
                "payload larger than {} bytes (server.max_body_bytes)",
                state.max_body_bytes
            ))
        } else if timed_out(&rejection) {
            state.metrics.webhook_rejected("body-timeout");
            ApiError::RequestTimeout(format!(
                "the request body did not arrive in time: {rejection}"
            ))
        } else {
            state.metrics.webhook_rejected("unreadable");
            ApiError::BadRequest(format!("cannot read the request body: {rejection}"))
        }
    })?;
    let (payload, alerts) = parse(&body).map_err(|message| {
        state.metrics.webhook_rejected("malformed");
        ApiError::BadRequest(message)
    })?;
    if payload.truncated_alerts > 0 {
        warn!(group = %payload.group_key, truncated = payload.truncated_alerts,
            "Alertmanager truncated this group (max_alerts); rollbackd only sees the alerts sent");
    }
    let received = state.pipeline.submit(&alerts).await.map_err(|e| {
        warn!(error = %error_chain(&e), "could not record alerts; answering 503 so Alertmanager retries");
        ApiError::Unavailable("alerts could not be recorded; retry later".into())
    })?;
    let fresh = received.iter().filter(|r| r.fresh).count();
    Ok((
        StatusCode::OK,
        axum::Json(json!({
            "status": "success",
            "received": received.len(),
            "new": fresh,
            "duplicates": received.len() - fresh,
        })),
    ))
}
