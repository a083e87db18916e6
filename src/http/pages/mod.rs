//! Incident pages: the list at `/` and one incident at `/incidents/{id}`.
//!
//! Rendered on the server with askama: templates in `templates/`, checked when the crate is
//! compiled, and escaping every value they print. Readable without JavaScript and on a phone.
//! The views in [`view`] turn stored rows into what a reviewer reads (a verdict, relative
//! times, label chips, a template diff, the graph as SVG from [`svg`]). A URL from a peer
//! (`generatorURL`, `externalURL`, a `runbook_url`) is a link only when `link::safe_link` allows
//! it, else text. The only markup not written by a template is the SVG graph, whose code
//! escapes every text it draws.

mod diff;
mod svg;
mod time;
mod view;

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Html;
use jiff::Timestamp;

use super::api::load_incident;
use super::{ApiError, AppState};

pub use view::ListQuery;

/// Escapes text for HTML content and attribute values (used where markup is built in code).
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

fn unavailable<E>(_: E) -> ApiError {
    ApiError::Unavailable("the incident store is unavailable".into())
}

fn render(page: &impl Template) -> Result<Html<String>, ApiError> {
    page.render()
        .map(Html)
        .map_err(|e| ApiError::Unavailable(format!("the page could not be rendered: {e}")))
}

pub async fn index(
    State(state): State<Arc<AppState>>,
    Query(q): Query<ListQuery>,
) -> Result<Html<String>, ApiError> {
    let now = Timestamp::now();
    let filter = q.filter(now).map_err(ApiError::BadRequest)?;
    let mut list = state
        .pipeline
        .store
        .list_incidents(&filter)
        .await
        .map_err(unavailable)?;
    let more = list.len() > view::PAGE_SIZE;
    list.truncate(view::PAGE_SIZE);
    render(&view::list_page(&q, &list, more, now))
}

pub async fn incident(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Html<String>, ApiError> {
    let detail = load_incident(&state, &id).await?;
    let store = &state.pipeline.store;
    let outbox = store
        .incident_outbox(detail.summary.id)
        .await
        .map_err(unavailable)?;
    let graph = store.graph(detail.summary.id).await.map_err(unavailable)?;
    render(&view::incident_page(
        &detail,
        &outbox,
        graph.as_ref(),
        Timestamp::now(),
    ))
}
