//! The incident store: alerts received, incidents, their append-only timeline, and actions.
//!
//! Data model (see `migrations/`): an *alert* row per distinct (fingerprint, startsAt); an
//! *incident* per (workload, rollout) gathering every alert that hit it; a *timeline* of
//! entries per incident that is never updated or deleted (enforced by triggers); an *action*
//! row written as an intent before the Kubernetes API is called and completed after; an
//! *outbox* row per notification, queued in the transaction that records what it reports. SQLite is
//! the embedded default; the SQL sticks to what PostgreSQL also accepts.

mod health;
mod outbox;
mod read;
mod settle;
mod traffic;
mod write;

use std::str::FromStr;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use health::InconclusivePeriod;
pub use outbox::{AttemptEnd, NewMessage, OutboxRow, OutboxStatus};
pub use read::{
    ActionRow, AlertRow, IncidentDetail, IncidentFilter, IncidentSummary, TimelineEntry, short_time,
};
pub use settle::{PendingAlert, UnsettledAction};
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
}

/// A handle on the store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) and migrates the store at `url` (`sqlite://FILE`).
    pub async fn open(url: &str) -> Result<Store> {
        let open_err = |source| StoreError::Open {
            url: url.to_string(),
            source,
        };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(open_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an alert acknowledged to Alertmanager survives a power cut, not just a crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(StoreError::Migrate)?;
        Ok(Store { pool })
    }

    /// Closes the pool; later calls fail. Used at shutdown and to test store outages.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A transaction that takes the write lock up front (`BEGIN IMMEDIATE`). A deferred
    /// transaction that reads and then writes fails at once with "database is locked" in WAL
    /// mode when another connection committed in between; waiting for the lock instead lets
    /// the busy timeout do its job.
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Whether the store answers; used by `/readyz`.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
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
mod tests;
