//! An online backup of the store: a consistent copy taken while the daemon runs.

use std::path::Path;

use sqlx::Row;

use super::{Result, Store, StoreError};

/// What a finished backup holds, read back from the copy itself.
#[derive(Debug, PartialEq, Eq)]
pub struct BackupSummary {
    pub incidents: i64,
    pub timeline_entries: i64,
}

impl Store {
    /// Writes a consistent copy of the store to `to`, which must not exist yet, with SQLite's
    /// `VACUUM INTO` (one read transaction: the daemon keeps recording meanwhile), then opens
    /// the copy and checks it before saying what it holds. A failed or corrupt copy is removed.
    pub async fn backup_to(&self, to: &Path) -> Result<BackupSummary> {
        if self.backend() == super::Backend::Postgres {
            return Err(StoreError::BackupUnsupported);
        }
        if to.exists() {
            return Err(StoreError::BackupExists(to.display().to_string()));
        }
        let target = to.display().to_string();
        let copied = sqlx::query("VACUUM INTO $1")
            .bind(&target)
            .execute(&self.pool)
            .await;
        let checked = match copied {
            Ok(_) => check_copy(&target).await,
            Err(e) => Err(e.into()),
        };
        if checked.is_err() {
            let _ = std::fs::remove_file(to);
        }
        checked
    }
}

/// Opens the copy read-only: it must pass `PRAGMA integrity_check` and be readable.
async fn check_copy(path: &str) -> Result<BackupSummary> {
    use sqlx::ConnectOptions;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true);
    let mut conn = options.connect().await?;
    let integrity: String = sqlx::query("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await?
        .try_get(0)?;
    if integrity != "ok" {
        return Err(StoreError::Corrupt(format!(
            "the copy at {path} fails its integrity check: {integrity}"
        )));
    }
    let count = |table: &'static str| {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
    };
    let incidents = count("incidents").fetch_one(&mut conn).await?;
    let timeline_entries = count("timeline").fetch_one(&mut conn).await?;
    use sqlx::Connection;
    conn.close().await?;
    Ok(BackupSummary {
        incidents,
        timeline_entries,
    })
}
