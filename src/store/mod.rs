//! The incident store: alerts received, incidents, their append-only timeline, and actions.
//!
//! Data model (see `migrations/`): an *alert* row per distinct (fingerprint, startsAt); an
//! *incident* per (workload, rollout) gathering every alert that hit it; a *timeline* of
//! entries per incident that is never updated or deleted (enforced by triggers); an *action*
//! row written as an intent before the Kubernetes API is called and completed after; an
//! *outbox* row per notification, queued in the transaction that records what it reports. SQLite is
//! the embedded default; the SQL sticks to what PostgreSQL also accepts.
//!
//! The store fails safe (docs/store.md): any fault of the disk or the file makes writes fail,
//! which the webhook turns into a 503, and never crashes the daemon. So: a rollback journal
//! and no memory-mapped I/O at all (no SIGBUS to be had), no connection reused after a failed
//! transaction ([`tx`]), no write into a file that is no longer at the store's path
//! ([`file`]), no file held open while idle, and `/readyz` proves a write ([`Store::ping`]).

mod file;
mod group;
mod health;
mod outbox;
mod read;
mod review;
mod settle;
mod traffic;
mod tx;
mod verify;
mod write;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqliteLockingMode, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, SqlitePool};
use tracing::{info, warn};

use file::StoreFile;

pub use group::MAX_BATCH_ALERTS;
pub use health::InconclusivePeriod;
pub use outbox::{AttemptEnd, NewMessage, OutboxRow, OutboxStatus};
pub use read::{
    ActionRow, AlertRow, IncidentDetail, IncidentFilter, IncidentSummary, TimelineEntry, short_time,
};
pub use review::{AuditStamp, IncidentGraph};
pub use settle::{PendingAlert, UnsettledAction};
pub use verify::{Ack, Verifying};
pub use write::{ACTING, ActionResult, ActionStatus, Followup, Received, Recorded};

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
}

/// A handle on the store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    /// The file opened; `None` for a store in memory.
    file: Option<Arc<StoreFile>>,
    /// What the last [`Store::ping`] found, to log changes rather than every probe.
    writable: Arc<AtomicBool>,
    /// Write transactions of this process take turns here, first come first served, before
    /// they ask SQLite for its lock. SQLite's own busy handler polls with growing sleeps, so a
    /// writer that just committed wins again and again: the decision worker, deciding a
    /// backlog page after page, would starve the webhook's deliveries.
    write_turn: Arc<tokio::sync::Mutex<()>>,
    /// Where webhook deliveries queue for a group commit (`group`); `None` in the
    /// committer's own handle, and when group commit is off.
    committer: Option<tokio::sync::mpsc::Sender<group::Delivery>>,
    /// Written on every action recorded (see [`AuditStamp`]); `None` in tests.
    audit: Option<Arc<AuditStamp>>,
}

/// Connections idle this long are closed, so an idle daemon holds no file of the store open:
/// the volume can be remounted or unmounted (Linux refuses a read-only remount while a file
/// is open for writing), and a connection opened during a fault does not outlive it.
const IDLE_CONNECTION: Duration = Duration::from_secs(1);

/// How long `/readyz` waits for its write.
const PING_TIMEOUT: Duration = Duration::from_secs(3);

impl Store {
    /// Opens (creating if needed) and migrates the store at `url` (`sqlite://FILE`).
    pub async fn open(url: &str) -> Result<Store> {
        let open_err = |source| StoreError::Open {
            url: url.to_string(),
            source,
        };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(open_err)?
            // A rollback journal, not WAL: WAL maps its -shm index into memory, and a fault
            // under a mapped page is a SIGBUS, not an error (docs/store.md).
            .journal_mode(SqliteJournalMode::Delete)
            .pragma("mmap_size", "0")
            // NORMAL: the CLI reads the store while the daemon runs.
            .locking_mode(SqliteLockingMode::Normal)
            // FULL: an alert acknowledged to Alertmanager survives a power cut, not just a crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        // Only this first connection may create the file. The pool's must not: one opened
        // after the file was deleted would start an empty store at the same path.
        options
            .clone()
            .create_if_missing(true)
            .connect()
            .await
            .map_err(open_err)?
            .close()
            .await
            .map_err(open_err)?;
        let in_memory = file::in_memory(url);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            // A store in memory lives only as long as a connection to it.
            .idle_timeout((!in_memory).then_some(IDLE_CONNECTION))
            .acquire_timeout(Duration::from_secs(10))
            .after_release(tx::discard_if_mid_transaction)
            .connect_with(options.clone().create_if_missing(false))
            .await
            .map_err(open_err)?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(StoreError::Migrate)?;
        // Not a migration: it holds nothing but the time of the last readiness probe.
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS heartbeat (id INTEGER PRIMARY KEY CHECK (id = 1), at TEXT NOT NULL)",
        )
        .execute(&pool)
        .await?;
        let file = if in_memory {
            None
        } else {
            let path = options.get_filename();
            let file = StoreFile::identify(path).map_err(|source| StoreError::FileGone {
                path: path.display().to_string(),
                source,
            })?;
            Some(Arc::new(file))
        };
        let mut store = Store {
            write_turn: Arc::new(tokio::sync::Mutex::new(())),
            pool,
            file,
            writable: Arc::new(AtomicBool::new(true)),
            committer: None,
            audit: None,
        };
        if group::enabled() {
            store.committer = Some(group::spawn(store.clone()));
        }
        Ok(store)
    }

    /// Closes the pool; later calls fail. Used at shutdown and to test store outages.
    pub async fn close(&self) {
        self.pool.close().await;
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
mod fault_tests;
#[cfg(test)]
mod group_tests;
#[cfg(test)]
mod review_tests;
#[cfg(test)]
mod tests;
