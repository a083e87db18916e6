//! The incident store: alerts received, incidents, their append-only timeline, and actions.
//!
//! Data model (see `migrations/`): an *alert* row per distinct (fingerprint, startsAt); an
//! *incident* per (workload, rollout) gathering every alert that hit it; a *timeline* of
//! entries per incident that is never updated or deleted (enforced by triggers); an *action*
//! row written as an intent before the Kubernetes API is called and completed after; an
//! *outbox* row per notification, queued in the transaction that records what it reports; the
//! *leadership* epoch that fences actions when replicas share the store ([`fence`]).
//!
//! SQLite is the embedded default (one replica); PostgreSQL is for replicas sharing the store
//! (docs/ha.md). One code path serves both through sqlx's `Any` driver ([`open`]).
//!
//! The store fails safe (docs/store.md): any fault of the disk or the file makes writes fail,
//! which the webhook turns into a 503, and never crashes the daemon. So: a rollback journal
//! and no memory-mapped I/O at all (no SIGBUS to be had), no connection reused after a failed
//! transaction ([`tx`]), no write into a file that is no longer at the store's path
//! ([`file`]), no file held open while idle, and `/readyz` proves a write ([`Store::ping`]).

mod backup;
mod batch;
mod fence;
mod file;
mod group;
mod health;
mod intake;
mod open;
mod outbox;
mod quiet;
mod read;
mod review;
mod settle;
mod traffic;
mod tx;
mod verify;
mod write;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use sqlx::AnyPool;
use tracing::{info, warn};

use file::StoreFile;

pub use backup::BackupSummary;
pub use fence::{Fence, Term};
pub use group::MAX_BATCH_ALERTS;
pub use health::InconclusivePeriod;
pub use open::{Backend, redact_url};
use open::{open_postgres, open_sqlite};
pub use outbox::{AttemptEnd, Backlog, NewMessage, OutboxRow, OutboxStatus};
pub use read::{
    ActionRow, AlertRow, IncidentDetail, IncidentFilter, IncidentSummary, TimelineEntry, short_time,
};
pub use review::{AuditStamp, IncidentGraph};
pub use settle::{PendingAlert, UnsettledAction};
pub use verify::{Ack, Verifying};
pub use write::{ACTING, ActionOutcome, ActionResult, ActionStatus, Followup, Received, Recorded};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the incident store {url}")]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate the incident store")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("incident store query failed")]
    Query(#[from] sqlx::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{0} exists already; a backup never overwrites a file")]
    BackupExists(String),
    /// `VACUUM INTO` is SQLite's; a PostgreSQL store has the database's own tools.
    #[error(
        "a PostgreSQL store is backed up with pg_dump (or the database's snapshots), not with rollbackd"
    )]
    BackupUnsupported,
    #[error("the incident store file {path} is gone")]
    FileGone {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the incident store file {path} was replaced by another file")]
    FileReplaced { path: String },
    #[error("the incident store did not take a write within {0:?}")]
    Timeout(Duration),
    /// The transaction shared by a group of deliveries failed: every member gets this.
    #[error("the write shared by {members} deliveries failed")]
    Group {
        members: usize,
        #[source]
        source: Arc<StoreError>,
    },
    #[error("the group committer stopped before answering")]
    CommitterGone,
    /// An action intent from a replica that does not lead (docs/ha.md).
    #[error("this replica does not hold the lease: no action is recorded")]
    NotLeader,
    /// An action intent from a leader whose epoch is no longer the newest: another replica
    /// took over since (docs/ha.md).
    #[error("leader epoch {epoch} was superseded by epoch {newest}: no action is recorded")]
    Fenced { epoch: i64, newest: i64 },
}

/// Past actions as read, and the version of the table they were read at.
type PastRead = (i64, Arc<[crate::core::engine::PastAction]>);

/// A handle on the store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    /// Where write transactions get their connection: one of its own for a SQLite file
    /// (`open_sqlite`), the pool itself otherwise.
    writes: AnyPool,
    /// Which database holds the store: decides how a write transaction begins.
    backend: Backend,
    /// The file opened; `None` for a store in memory.
    file: Option<Arc<StoreFile>>,
    /// What the last [`Store::ping`] found, to log changes rather than every probe.
    writable: Arc<AtomicBool>,
    /// Write transactions of this process take turns here, first come first served, before
    /// they ask SQLite for its lock. SQLite's own busy handler polls with growing sleeps, so a
    /// writer that just committed wins again and again: the decision worker, deciding a
    /// backlog page after page, would starve the webhook's deliveries.
    write_turn: Arc<tokio::sync::Mutex<()>>,
    /// Whether action intents need the leader's epoch to be the newest (`fence`).
    fence: Arc<std::sync::Mutex<Fence>>,
    /// Where webhook deliveries queue for a group commit (`group`); `None` in the
    /// committer's own handle, and when group commit is off.
    committer: Option<tokio::sync::mpsc::Sender<group::Delivery>>,
    /// Written on every action recorded (see [`AuditStamp`]); `None` in tests.
    audit: Option<Arc<AuditStamp>>,
    /// The past actions last read, with the version of the table they were read at
    /// ([`Store::past_actions`]).
    past: Arc<std::sync::Mutex<Option<PastRead>>>,
}

/// Connections idle this long are closed, so an idle daemon holds no file of the store open:
/// the volume can be remounted or unmounted (Linux refuses a read-only remount while a file
/// is open for writing), and a connection opened during a fault does not outlive it.
const IDLE_CONNECTION: Duration = Duration::from_secs(1);

/// How long `/readyz` waits for its write.
const PING_TIMEOUT: Duration = Duration::from_secs(3);

impl Store {
    /// Opens (creating if needed) and migrates the store at `url`: `sqlite://FILE` (the
    /// default, one replica) or `postgres://…` (shared by replicas, docs/ha.md).
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let (backend, pool, writes, file) = match Backend::of(url) {
            Some(Backend::Postgres) => {
                let pool = open_postgres(url).await?;
                (Backend::Postgres, pool.clone(), pool, None)
            }
            _ => {
                let (pool, writes, file) = open_sqlite(url).await?;
                (Backend::Sqlite, pool, writes, file)
            }
        };
        // Not a migration: it holds nothing but the time of the last readiness probe.
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS heartbeat (id INTEGER PRIMARY KEY CHECK (id = 1), at TEXT NOT NULL)",
        )
        .execute(&pool)
        .await?;
        let mut store = Store {
            write_turn: Arc::new(tokio::sync::Mutex::new(())),
            pool,
            writes,
            backend,
            file,
            fence: Arc::new(std::sync::Mutex::new(Fence::Off)),
            writable: Arc::new(AtomicBool::new(true)),
            committer: None,
            audit: None,
            past: Arc::default(),
        };
        if group::enabled() {
            store.committer = Some(group::spawn(store.clone()));
        }
        Ok(store)
    }

    /// Which database holds the store.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Calls `wake` each time another connection commits new alerts (on PostgreSQL, whichever
    /// replica recorded them), so that the leader decides them at once rather than at its next
    /// sweep. Never returns; a lost connection is opened again, and what was announced
    /// meanwhile is found by the sweep. Returns at once for SQLite, where the recording
    /// process wakes its own worker.
    pub async fn listen_for_alerts(&self, url: &str, wake: impl Fn()) {
        if self.backend != Backend::Postgres {
            return std::future::pending().await;
        }
        loop {
            match sqlx::postgres::PgListener::connect(url).await {
                Ok(mut listener) => match listener.listen(write::ALERTS_CHANNEL).await {
                    Ok(()) => loop {
                        match listener.try_recv().await {
                            Ok(Some(_)) => wake(),
                            // Reconnected: something may have been missed.
                            Ok(None) => wake(),
                            Err(e) => {
                                warn!(error = %e, "lost the store's alert notifications; the sweep still finds new alerts");
                                break;
                            }
                        }
                    },
                    Err(e) => {
                        warn!(error = %e, "cannot listen for the store's alert notifications")
                    }
                },
                Err(e) => warn!(error = %e, "cannot listen for the store's alert notifications"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Closes the pools; later calls fail. Used at shutdown and to test store outages.
    pub async fn close(&self) {
        self.pool.close().await;
        self.writes.close().await;
    }

    /// Whether the store can take a write now, into the file it opened; used by `/readyz`.
    /// A one-row upsert in a write transaction: it takes the write lock, writes the journal
    /// and the file, and fsyncs both, as recording an alert does.
    pub async fn ping(&self) -> bool {
        let result = match tokio::time::timeout(PING_TIMEOUT, self.heartbeat()).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout(PING_TIMEOUT)),
        };
        let ok = result.is_ok();
        if self.writable.swap(ok, Ordering::Relaxed) != ok {
            match result {
                Ok(()) => info!("the incident store takes writes again"),
                Err(e) => {
                    let chain: Vec<String> =
                        std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                            .map(ToString::to_string)
                            .collect();
                    warn!(error = %chain.join(": "), "the incident store cannot take a write; not ready");
                }
            }
        }
        ok
    }

    async fn heartbeat(&self) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO heartbeat (id, at) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
        )
        .bind(ts_text(Timestamp::now()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }
}

/// Timestamps are stored as RFC 3339 UTC with nine fractional digits, so text order is time
/// order and the same instant always has the same text (alert identity depends on it).
pub fn ts_text(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

pub fn parse_ts(s: &str) -> Result<Timestamp> {
    s.parse()
        .map_err(|e| StoreError::Corrupt(format!("bad timestamp {s:?}: {e}")))
}

/// A JSON value stored as text.
fn json_text<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

#[cfg(test)]
mod batch_tests;
#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod group_tests;
#[cfg(test)]
mod review_tests;
#[cfg(test)]
mod test_db;
#[cfg(test)]
mod tests;
