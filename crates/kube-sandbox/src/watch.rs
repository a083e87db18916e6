//! Watch streams: `?watch=true` on a list path answers a chunked stream of newline-delimited
//! `{"type":...,"object":...}` events.
//!
//! From resourceVersion "" or "0" the stream starts with a synthetic ADDED per current object;
//! from a number it replays the retained events after it (older than the history: one ERROR
//! event carrying a 410 Expired Status, then the end). Selectors are applied the way the
//! real watch cache does: an object entering the selection is ADDED, leaving it is DELETED.
//! `timeoutSeconds` ends the stream (default 30 min), `allowWatchBookmarks` adds periodic
//! BOOKMARKs (every `SandboxOptions::bookmark_interval`, 30 s by default) and the
//! `k8s.io/initial-events-end` one after `sendInitialEvents`. A slow
//! consumer that falls behind the broadcast gets a 410 ERROR and the end, as on a real server.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::api::{QueryParams, present};
use super::resources::ResourceDef;
use super::selectors::{FieldSelector, LabelSelector};
use super::server::Shared;
use super::status::ApiError;
use super::store::{Event, EventType};
use super::table;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

struct Filter {
    def: ResourceDef,
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    /// Some(includeObject) when events carry Tables.
    table: Option<String>,
}

impl Filter {
    fn matches(&self, o: &Value) -> bool {
        self.labels.matches_object(o) && self.fields.matches(o)
    }

    fn line(&self, ty: &str, obj: &Value) -> Bytes {
        let obj = present(&self.def, obj.clone());
        let obj = match &self.table {
            Some(include) => table::table(&self.def, &[obj], None, include),
            None => obj,
        };
        let mut v = serde_json::to_vec(&json!({"type": ty, "object": obj})).unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    }

    /// The line this event produces for this watcher, if any.
    fn event_line(&self, ev: &Event) -> Option<Bytes> {
        if ev.key != self.def.storage_key() || self.ns.as_ref().is_some_and(|n| *n != ev.namespace)
        {
            return None;
        }
        let now = self.matches(&ev.object);
        let before = ev.old.as_ref().is_some_and(|o| self.matches(o));
        let ty = match ev.kind {
            EventType::Added if now => "ADDED",
            EventType::Modified if now && before => "MODIFIED",
            EventType::Modified if now => "ADDED",
            EventType::Modified if before => "DELETED",
            EventType::Deleted if before || now => "DELETED",
            _ => return None,
        };
        Some(self.line(ty, &ev.object))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj =
            json!({"kind": self.def.kind, "apiVersion": self.def.api_version(), "metadata": meta});
        let mut v =
            serde_json::to_vec(&json!({"type": "BOOKMARK", "object": obj})).unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    }
}

fn error_line(e: &ApiError) -> Bytes {
    let mut v =
        serde_json::to_vec(&json!({"type": "ERROR", "object": e.to_status()})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

pub fn serve(
    sh: Arc<Shared>,
    def: ResourceDef,
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    q: &QueryParams,
    table: Option<String>,
) -> Result<Response, ApiError> {
    let from = match q.get("resourceVersion").unwrap_or_default() {
        "" | "0" => None,
        s => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s}")))?,
        ),
    };
    let timeout = match q.get("timeoutSeconds") {
        Some(s) => Duration::from_secs(
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {s}")))?,
        ),
        None => DEFAULT_TIMEOUT,
    };
    let bookmarks = q.flag("allowWatchBookmarks");
    let initial_end_bookmark = bookmarks && q.flag("sendInitialEvents");
    let f = Filter {
        def,
        ns,
        labels,
        fields,
        table,
    };

    let mut first: Vec<Bytes> = Vec::new();
    let (mut last_rv, rx) = match from {
        None => {
            let (objs, rv, rx) = sh
                .store
                .snapshot_and_subscribe(&f.def, f.ns.as_deref(), |o| f.matches(o));
            first.extend(objs.iter().map(|o| f.line("ADDED", o)));
            if initial_end_bookmark {
                first.push(f.bookmark(rv, true));
            }
            (rv, Some(rx))
        }
        Some(rv) => match sh.store.events_since(rv) {
            Ok((past, rx)) => {
                let mut last = rv;
                for ev in past {
                    last = last.max(ev.rv);
                    first.extend(f.event_line(&ev));
                }
                (last, Some(rx))
            }
            Err(e) => {
                first.push(error_line(&e));
                (rv, None)
            }
        },
    };

    let (tx, out) = mpsc::channel::<Bytes>(256);
    let mut shutdown = sh.shutdown.clone();
    let bookmark_every = sh.bookmark_every;
    tokio::spawn(async move {
        for line in first {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let Some(mut rx) = rx else { return };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + bookmark_every, bookmark_every);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = shutdown.changed() => return,
                _ = tx.closed() => return,
                _ = tick.tick(), if bookmarks => {
                    if tx.send(f.bookmark(last_rv, false)).await.is_err() { return; }
                }
                ev = rx.recv() => match ev {
                    Ok(ev) => {
                        last_rv = last_rv.max(ev.rv);
                        if let Some(line) = f.event_line(&ev)
                            && tx.send(line).await.is_err() { return; }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.send(error_line(&ApiError::expired(last_rv, last_rv + 1))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    let stream = futures::stream::unfold(out, |mut out| async move {
        out.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), out))
    });
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::internal(e.to_string()))
}
