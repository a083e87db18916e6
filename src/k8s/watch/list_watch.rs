//! One watch: rollbackd's own list/watch loop for one kind in one scope, so that it sees what
//! kube-runtime's watcher hides (bookmarks, silent re-watches, a connection gone quiet).
//!
//! The loop lists (paginated) and swaps the whole list into the index at once, then watches
//! from the list's resourceVersion with bookmarks on and a short `timeoutSeconds`. A stream
//! that ends is watched again from the last resourceVersion seen (an event's or a
//! bookmark's); a 410 Expired relists at once. Every other failure (refused, an error status,
//! a call that does not answer, a stream silent for longer than the server may stay silent)
//! marks the watch failing, waits a bounded exponential backoff and relists; the failure ends
//! when, after that list, a watch opens again, so the watch is fresh again only with a state
//! the API server served after the fault. Every answer from the API server is reported to
//! the watch's [`HealthHandle`].

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Api, DynamicObject, ListParams, WatchEvent, WatchParams};
use kube::core::ApiResource;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, info};

use super::apply::{Change, Listed, apply};
use super::health::{HealthHandle, WatchName};
use super::timing::{Backoff, Timings};
use super::{Kind, SharedIndex, describe};
use crate::core::traffic::TrafficChange;

/// Objects asked for per list page.
const PAGE: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("list failed: {}", describe(.0))]
    List(#[source] kube::Error),
    #[error("watch request failed: {}", describe(.0))]
    Watch(#[source] kube::Error),
    #[error("watch stream failed: {}", describe(.0))]
    Stream(#[source] kube::Error),
    #[error("the API server sent an error event: {code} {reason}: {message}")]
    Event {
        code: u16,
        reason: String,
        message: String,
    },
    #[error("{what} got no answer within {}", humantime::format_duration(*.after))]
    TimedOut { what: &'static str, after: Duration },
    #[error("no event or bookmark for {}; connection dropped", humantime::format_duration(*.0))]
    Silent(Duration),
}

/// Why a list or a watch stopped.
enum Interrupted {
    /// The resourceVersion is too old: relist.
    Expired,
    Failed(WatchError),
}

/// Everything one watch loop needs.
pub struct ListWatch {
    pub api: Api<DynamicObject>,
    pub kind: Kind,
    pub ar: ApiResource,
    pub name: WatchName,
    pub index: SharedIndex,
    pub changes: UnboundedSender<TrafficChange>,
    pub health: HealthHandle,
    pub timings: Timings,
}

impl ListWatch {
    /// Lists and watches forever.
    pub async fn run(self) {
        let mut resume: Option<String> = None;
        let mut backoff = Backoff::new(self.timings.backoff_max);
        let mut synced = false;
        let mut expired_in_a_row = 0u32;
        loop {
            let outcome = match resume.take() {
                None => self.list().await,
                Some(version) => self.watch_from(version).await,
            };
            match outcome {
                Ok(version) => {
                    if !synced {
                        synced = true;
                        info!(
                            kind = self.name.kind,
                            scope = self.name.scope_label(),
                            "initial list synced"
                        );
                    }
                    backoff.reset();
                    expired_in_a_row = 0;
                    resume = Some(version);
                }
                Err(Interrupted::Expired) => {
                    debug!(
                        kind = self.name.kind,
                        scope = self.name.scope_label(),
                        "resourceVersion expired; relisting"
                    );
                    // Once is routine; again right after a list is not, and must not spin.
                    expired_in_a_row += 1;
                    if expired_in_a_row > 1 {
                        tokio::time::sleep(backoff.next_pause()).await;
                    }
                }
                Err(Interrupted::Failed(error)) => {
                    debug!(kind = self.name.kind, scope = self.name.scope_label(), %error, "watch failed; retrying");
                    self.health.failed(error.to_string());
                    tokio::time::sleep(backoff.next_pause()).await;
                }
            }
        }
    }

    /// A call that must answer within `timings.call`.
    async fn call<T>(
        &self,
        what: &'static str,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<Result<T, kube::Error>, Interrupted> {
        let after = self.timings.call;
        tokio::time::timeout(after, request)
            .await
            .map_err(|_| Interrupted::Failed(WatchError::TimedOut { what, after }))
    }

    /// Lists every page, swaps the list into the index; returns its resourceVersion.
    async fn list(&self) -> Result<String, Interrupted> {
        let mut listed = Listed::new(&self.kind);
        let mut params = ListParams::default().limit(PAGE);
        loop {
            let page = self
                .call("list", self.api.list(&params))
                .await?
                .map_err(|e| Interrupted::Failed(WatchError::List(e)))?;
            self.health.heard();
            listed.add_page(page.items);
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => {
                    self.apply(Change::Listed(listed));
                    self.health.listed();
                    return Ok(page.metadata.resource_version.unwrap_or_default());
                }
            }
        }
    }

    /// Watches from `version` until the stream ends; returns the last resourceVersion seen.
    async fn watch_from(&self, mut version: String) -> Result<String, Interrupted> {
        let params = WatchParams::default().timeout(self.timings.watch_seconds);
        let stream = match self
            .call("watch request", self.api.watch(&params, &version))
            .await?
        {
            Ok(stream) => stream,
            Err(e) if is_expired(&e) => return Err(Interrupted::Expired),
            Err(e) => return Err(Interrupted::Failed(WatchError::Watch(e))),
        };
        self.health.watching();
        let mut stream = stream.boxed();
        let idle = self.timings.idle;
        loop {
            let event = match tokio::time::timeout(idle, stream.next()).await {
                Err(_) => return Err(Interrupted::Failed(WatchError::Silent(idle))),
                Ok(None) => return Ok(version),
                Ok(Some(Err(e))) if is_expired(&e) => return Err(Interrupted::Expired),
                Ok(Some(Err(e))) => return Err(Interrupted::Failed(WatchError::Stream(e))),
                Ok(Some(Ok(event))) => event,
            };
            self.health.heard();
            let change = match event {
                WatchEvent::Added(obj) | WatchEvent::Modified(obj) => {
                    version = obj.metadata.resource_version.clone().unwrap_or(version);
                    Change::Applied(obj)
                }
                WatchEvent::Deleted(obj) => {
                    version = obj.metadata.resource_version.clone().unwrap_or(version);
                    Change::Deleted(obj)
                }
                WatchEvent::Bookmark(bookmark) => {
                    version = bookmark.metadata.resource_version;
                    continue;
                }
                WatchEvent::Error(status) if status.code == 410 => {
                    return Err(Interrupted::Expired);
                }
                WatchEvent::Error(status) => {
                    return Err(Interrupted::Failed(WatchError::Event {
                        code: status.code,
                        reason: status.reason,
                        message: status.message,
                    }));
                }
            };
            self.apply(change);
        }
    }

    fn apply(&self, change: Change) {
        let scope = self.name.scope.as_deref();
        let noted = apply(
            &self.index,
            &self.kind,
            &self.ar,
            scope,
            change,
            Timestamp::now(),
        );
        for change in noted {
            info!(kind = change.kind.as_str(), namespace = %change.namespace, name = %change.name,
                from = %change.from, to = %change.to, "traffic change noted");
            // The receiver lives as long as the daemon; a send after shutdown is moot.
            let _ = self.changes.send(change);
        }
    }
}

fn is_expired(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 410)
}
