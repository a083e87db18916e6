//! Incident pages: the list at `/` and one incident with its timeline at `/incidents/{id}`.
//!
//! Plain server-rendered HTML with every stored string escaped; no scripts. A URL from a peer
//! (`generatorURL`, `externalURL`) is a link only when [`safe_link`] allows it, else text.

use std::fmt::Write;

use axum::extract::{Path, State};
use axum::response::Html;

use super::api::load_incident;
use super::{ApiError, AppState};
use crate::link::safe_link;
use crate::store::IncidentFilter;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#1d2433}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #dde;padding:.4rem;text-align:left;vertical-align:top}
.o{font-family:monospace;padding:.1rem .4rem;border-radius:.3rem;background:#eef}
.rolled-back{background:#d8f5d8}.failed{background:#fbd5d5}.would-roll-back{background:#fff1c2}
code{font-size:.9em}";

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        escape(title)
    ))
}

/// A link when [`safe_link`] allows it; otherwise the URL as escaped text, never an `href`.
pub fn url_cell(label: &str, url: &str) -> String {
    match safe_link(url) {
        Some(url) => format!("<a href=\"{}\">{}</a>", escape(url), escape(label)),
        None if url.is_empty() => String::new(),
        None => format!("{}: <code>{}</code>", escape(label), escape(url)),
    }
}

fn outcome(code: &str) -> String {
    format!("<span class=\"o {0}\">{0}</span>", escape(code))
}

pub async fn index(State(state): State<AppState>) -> Result<Html<String>, ApiError> {
    let list = state
        .pipeline
        .store
        .list_incidents(&IncidentFilter::default())
        .await
        .map_err(|_| ApiError::Unavailable("the incident store is unavailable".into()))?;
    let mut body = String::from("<h1>rollbackd incidents</h1>");
    if list.is_empty() {
        body.push_str("<p>No incidents recorded.</p>");
    } else {
        body.push_str("<table><tr><th>#</th><th>opened</th><th>workload</th><th>rollout</th><th>outcome</th><th>alerts</th><th>status</th><th>reason</th></tr>");
        for i in &list {
            let _ = write!(
                body,
                "<tr><td><a href=\"/incidents/{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&i.opened_at),
                escape(&i.workload()),
                escape(i.rollout_name.as_deref().unwrap_or("-")),
                outcome(&i.outcome),
                i.alert_count,
                escape(&i.status),
                escape(&i.reason),
                id = i.id,
            );
        }
        body.push_str("</table>");
    }
    Ok(page("rollbackd incidents", &body))
}

pub async fn incident(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Html<String>, ApiError> {
    let d = load_incident(&state, &id).await?;
    let s = &d.summary;
    let mut body = format!(
        "<p><a href=\"/\">all incidents</a></p><h1>Incident {} — {}</h1><p>{} · {}</p><p>{}</p>",
        s.id,
        escape(&s.workload()),
        outcome(&s.outcome),
        escape(&s.status),
        escape(&s.reason)
    );
    if let Some(rollout) = s.rollout_text() {
        let _ = write!(body, "<p>Rollout blamed: {}</p>", escape(&rollout));
    }
    body.push_str("<h2>Alerts</h2><table><tr><th>alert</th><th>status</th><th>started</th><th>deliveries</th><th>outcome</th><th>links</th></tr>");
    for a in &d.alerts {
        let mut link = url_cell("source", &a.generator_url);
        if let Some(am) = &a.external_url {
            if !link.is_empty() {
                link.push_str(" · ");
            }
            link.push_str(&url_cell("Alertmanager", am));
        }
        let _ = write!(
            body,
            "<tr><td>{} <code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{link}</td></tr>",
            escape(&a.alertname),
            escape(&a.labels.to_string()),
            escape(&a.status),
            escape(&a.starts_at),
            a.deliveries,
            outcome(a.outcome.as_deref().unwrap_or("-")),
        );
    }
    body.push_str("</table><h2>Timeline</h2><table><tr><th>at</th><th>step</th><th>outcome</th><th>what</th></tr>");
    for e in &d.timeline {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&e.at),
            escape(&e.kind),
            e.outcome.as_deref().map(outcome).unwrap_or_default(),
            escape(&e.message)
        );
    }
    body.push_str("</table>");
    Ok(page(&format!("rollbackd incident {}", s.id), &body))
}
