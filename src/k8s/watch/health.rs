//! The health of each watch, and the daemon's readiness derived from it: fresh data or no
//! decision.
//!
//! Data model: one table, written by the watch loops through a [`HealthHandle`] and read by
//! [`Readiness`]: whether discovery is done (and its current failure), and per watch (one
//! kind in one scope) whether its first list is done, when it last heard from the API server
//! (a list page, a watch opened, an event, a bookmark) and its current failure with the time
//! the failing began. Readiness is computed when asked, from the table and the clock, so a
//! watch that merely falls silent turns it false without anyone having to notice first.
//! [`monitor`] turns the same verdicts into one log line per transition and the
//! `rollbackd_watch_healthy` gauge.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jiff::{RoundMode, Timestamp, TimestampRound, Unit};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{info, warn};

use crate::metrics::Metrics;

/// One watch: a kind in one namespace, or in all of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchName {
    pub kind: &'static str,
    /// `None`: all namespaces.
    pub scope: Option<String>,
}

impl WatchName {
    /// The `scope` label of the metrics: the namespace, or `*` for all of them.
    pub fn scope_label(&self) -> &str {
        self.scope.as_deref().unwrap_or("*")
    }
}

impl fmt::Display for WatchName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scope {
            Some(ns) => write!(f, "watch {} in namespace {ns}", self.kind),
            None => write!(f, "watch {} in all namespaces", self.kind),
        }
    }
}

/// What went wrong most recently, and since when it has been going wrong.
#[derive(Clone, Debug, PartialEq)]
struct Failure {
    message: String,
    since: Timestamp,
}

impl Failure {
    /// To the second, truncated: never later than the failure began.
    fn since(&self) -> Timestamp {
        let second = TimestampRound::new()
            .smallest(Unit::Second)
            .mode(RoundMode::Trunc);
        self.since.round(second).unwrap_or(self.since)
    }
}

#[derive(Clone, Debug)]
struct WatchHealth {
    name: WatchName,
    listed: bool,
    heard: Option<Instant>,
    failure: Option<Failure>,
}

#[derive(Debug)]
enum Discovery {
    Pending(Option<Failure>),
    Done,
}

#[derive(Debug)]
struct Table {
    discovery: Discovery,
    watches: Vec<WatchHealth>,
}

#[derive(Debug)]
struct Shared {
    stale_after: Duration,
    table: Mutex<Table>,
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether rollbackd may decide: discovery is done, every watch has listed, none is failing,
/// and each has heard from the API server within `kubernetes.stale_after`. The decision
/// worker and `/readyz` ask; a decision on an index that may be stale is never taken.
#[derive(Clone, Debug)]
pub struct Readiness {
    shared: Arc<Shared>,
}

/// One watch's state at one moment.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Fresh,
    /// Its first list is not done yet.
    Listing,
    Failing {
        message: String,
        since: Timestamp,
    },
    /// It has heard nothing from the API server for this long.
    Stale(Duration),
}

impl Verdict {
    /// Why this watch keeps rollbackd from deciding, if it does.
    pub fn sentence(&self, name: &WatchName) -> Option<String> {
        match self {
            Verdict::Fresh => None,
            Verdict::Listing => Some(format!("{name} has not completed its first list")),
            Verdict::Failing { message, since } => {
                Some(format!("{name} failing since {since}: {message}"))
            }
            Verdict::Stale(silent) => Some(format!(
                "{name} has heard nothing from the API server for {}s",
                silent.as_secs()
            )),
        }
    }
}

impl Readiness {
    /// Not ready: discovery has not run yet and no watch exists.
    pub fn new(stale_after: Duration) -> Readiness {
        Readiness {
            shared: Arc::new(Shared {
                stale_after,
                table: Mutex::new(Table {
                    discovery: Discovery::Pending(None),
                    watches: Vec::new(),
                }),
            }),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.why_not_ready().is_none()
    }

    /// `None` when ready; otherwise one sentence saying why not (the first problem found, and
    /// how many more there are), e.g. "watch replicasets in all namespaces failing since
    /// 2026-01-01T12:00:01Z: …".
    pub fn why_not_ready(&self) -> Option<String> {
        self.why_not_ready_at(Instant::now())
    }

    fn why_not_ready_at(&self, now: Instant) -> Option<String> {
        let table = self.shared.table();
        if let Discovery::Pending(failure) = &table.discovery {
            return Some(match failure {
                None => "discovering which kinds the API server serves".to_string(),
                Some(f) => format!("discovery failing since {}: {}", f.since(), f.message),
            });
        }
        let mut reasons = table
            .watches
            .iter()
            .filter_map(|w| self.verdict(w, now).sentence(&w.name));
        let first = reasons.next()?;
        Some(match reasons.count() {
            0 => first,
            more => format!("{first} (and {more} more)"),
        })
    }

    /// Each watch with its verdict now, in the order they were registered.
    pub fn verdicts(&self) -> Vec<(WatchName, Verdict)> {
        self.verdicts_at(Instant::now())
    }

    fn verdicts_at(&self, now: Instant) -> Vec<(WatchName, Verdict)> {
        let table = self.shared.table();
        table
            .watches
            .iter()
            .map(|w| (w.name.clone(), self.verdict(w, now)))
            .collect()
    }

    fn verdict(&self, w: &WatchHealth, now: Instant) -> Verdict {
        if let Some(f) = &w.failure {
            return Verdict::Failing {
                message: f.message.clone(),
                since: f.since(),
            };
        }
        if !w.listed {
            return Verdict::Listing;
        }
        let silent = w.heard.map_or(Duration::MAX, |h| now.duration_since(h));
        if silent > self.shared.stale_after {
            Verdict::Stale(silent)
        } else {
            Verdict::Fresh
        }
    }

    /// Discovery could not get an answer; it is retried.
    pub(super) fn discovery_failed(&self, message: String) {
        if let Discovery::Pending(failure) = &mut self.shared.table().discovery {
            set_failure(failure, message);
        }
    }

    /// Discovery is done and these watches are starting; one handle each, in the same order.
    pub(super) fn discovered(&self, names: Vec<WatchName>) -> Vec<HealthHandle> {
        let mut table = self.shared.table();
        table.discovery = Discovery::Done;
        let first = table.watches.len();
        table
            .watches
            .extend(names.into_iter().map(|name| WatchHealth {
                name,
                listed: false,
                heard: None,
                failure: None,
            }));
        (first..table.watches.len())
            .map(|slot| HealthHandle {
                shared: self.shared.clone(),
                slot,
            })
            .collect()
    }
}

fn set_failure(failure: &mut Option<Failure>, message: String) {
    match failure {
        Some(f) => f.message = message,
        None => {
            *failure = Some(Failure {
                message,
                since: Timestamp::now(),
            })
        }
    }
}

/// How one watch loop reports what happened to it.
#[derive(Debug)]
pub struct HealthHandle {
    shared: Arc<Shared>,
    slot: usize,
}

impl HealthHandle {
    fn with(&self, f: impl FnOnce(&mut WatchHealth)) {
        if let Some(w) = self.shared.table().watches.get_mut(self.slot) {
            f(w)
        }
    }

    /// A complete list is in the index.
    pub fn listed(&self) {
        self.with(|w| {
            w.listed = true;
            w.heard = Some(Instant::now());
        })
    }

    /// A watch was opened after a complete list: no longer failing. (A list that works
    /// between watches that fail does not end the failure, so readiness does not flap.)
    pub fn watching(&self) {
        self.with(|w| {
            w.heard = Some(Instant::now());
            if w.listed {
                w.failure = None;
            }
        })
    }

    /// The API server answered (a list page, an event, a bookmark).
    pub fn heard(&self) {
        self.with(|w| w.heard = Some(Instant::now()))
    }

    /// The watch failed; it stays failing until it has listed and watches again.
    pub fn failed(&self, message: String) {
        self.with(|w| set_failure(&mut w.failure, message))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Listing,
    Healthy,
    Unhealthy,
}

/// Logs each watch's transitions once (a warning when it goes stale or failing, a line when
/// it recovers) and keeps `rollbackd_watch_healthy{kind,scope}` current. Runs forever.
pub async fn monitor(readiness: Readiness, metrics: Metrics, every: Duration) {
    let mut seen: Vec<Seen> = Vec::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let verdicts = readiness.verdicts();
        seen.resize(verdicts.len(), Seen::Listing);
        for ((name, verdict), was) in verdicts.iter().zip(seen.iter_mut()) {
            let now = match verdict {
                Verdict::Fresh => Seen::Healthy,
                Verdict::Listing => Seen::Listing,
                Verdict::Failing { .. } | Verdict::Stale(_) => Seen::Unhealthy,
            };
            match (*was, now, verdict.sentence(name)) {
                (Seen::Listing | Seen::Healthy, Seen::Unhealthy, Some(why)) => warn!(
                    kind = name.kind,
                    scope = name.scope_label(),
                    "{why}; no decision is taken until it recovers"
                ),
                (Seen::Unhealthy, Seen::Healthy, _) => info!(
                    kind = name.kind,
                    scope = name.scope_label(),
                    "{name} recovered: listed again and fresh"
                ),
                _ => {}
            }
            metrics.watch_health(name.kind, name.scope_label(), now == Seen::Healthy);
            *was = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_name(kind: &'static str, scope: Option<&str>) -> WatchName {
        WatchName {
            kind,
            scope: scope.map(str::to_string),
        }
    }

    #[test]
    fn ready_only_when_discovered_listed_fresh_and_not_failing() {
        let r = Readiness::new(Duration::from_secs(90));
        assert_eq!(
            r.why_not_ready().as_deref(),
            Some("discovering which kinds the API server serves")
        );
        r.discovery_failed("connection refused".into());
        let why = r.why_not_ready().unwrap_or_default();
        assert!(why.starts_with("discovery failing since "), "{why}");
        assert!(why.ends_with(": connection refused"), "{why}");

        let handles = r.discovered(vec![
            mk_name("deployments", None),
            mk_name("replicasets", Some("shop")),
        ]);
        assert_eq!(
            r.why_not_ready().as_deref(),
            Some(
                "watch deployments in all namespaces has not completed its first list (and 1 more)"
            )
        );
        handles[0].listed();
        handles[1].listed();
        assert_eq!(
            r.why_not_ready(),
            None,
            "ready as soon as every first list is done"
        );
        assert!(r.is_ready());

        let later = |secs| Instant::now() + Duration::from_secs(secs);
        assert_eq!(r.why_not_ready_at(later(89)), None);
        assert_eq!(
            r.why_not_ready_at(later(95)).as_deref(),
            Some(
                "watch deployments in all namespaces has heard nothing from the API server for 95s (and 1 more)"
            )
        );
        let verdicts = r.verdicts_at(later(95));
        assert!(
            matches!(verdicts[1].1, Verdict::Stale(d) if d >= Duration::from_secs(95)),
            "{verdicts:?}"
        );
        assert!(r.is_ready());

        handles[1].failed("connection refused".into());
        handles[1].failed("list timed out after 45s".into());
        let why = r.why_not_ready().unwrap_or_default();
        assert!(
            why.starts_with("watch replicasets in namespace shop failing since "),
            "{why}"
        );
        assert!(why.ends_with(": list timed out after 45s"), "{why}");
        // Hearing from the API server is not enough, nor is a list: a list and then a watch
        // opened end a failure.
        handles[1].heard();
        handles[1].listed();
        assert!(!r.is_ready());
        handles[1].watching();
        assert!(r.is_ready());
    }

    #[test]
    fn verdicts_name_their_watch() {
        let name = mk_name("rollouts", Some("shop"));
        assert_eq!(name.scope_label(), "shop");
        assert_eq!(mk_name("rollouts", None).scope_label(), "*");
        assert_eq!(Verdict::Fresh.sentence(&name), None);
        assert_eq!(
            Verdict::Stale(Duration::from_millis(95_400)).sentence(&name),
            Some(
                "watch rollouts in namespace shop has heard nothing from the API server for 95s"
                    .into()
            )
        );
    }
}
