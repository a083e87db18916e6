//! Opening a store: which database a URL names ([`Backend`]), SQLite with its fail-safe
//! settings and the identity of its file, PostgreSQL with its own migrations.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteLockingMode, SqliteSynchronous};
use sqlx::{AnyConnection, AnyPool, ConnectOptions, Connection, Executor};

use super::file::{self, StoreFile};
use super::{IDLE_CONNECTION, Result, StoreError, tx};

/// The database behind a store. The SQL is the same for both (`$N` parameters, which
/// sqlx-sqlite binds by position too); what differs is how a write transaction begins
/// ([`tx`]), the migrations, and the fail-safe parts that only a file needs ([`file`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// One file, one replica: the embedded default.
    Sqlite,
    /// Shared by several replicas; leader election is on (docs/ha.md).
    Postgres,
}

impl Backend {
    /// The backend a store URL names, or `None` for a scheme the store does not know.
    pub fn of(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

/// Opens the SQLite store: its settings, the first connection (the only one that may create
/// the file), the pool, the write transactions' own connection, the migrations, and the
/// identity of the file opened.
pub(super) async fn open_sqlite(url: &str) -> Result<(AnyPool, AnyPool, Option<Arc<StoreFile>>)> {
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
    let pool_url = if in_memory {
        // Every pool connection parses its URL again: a name, not `:memory:`, so that all of
        // them see the one database.
        format!(
            "sqlite:file:rollbackd-memory-{}?mode=memory&cache=shared",
            uuid::Uuid::new_v4()
        )
    } else {
        file::pool_url(options.get_filename())
    };
    let options_of = |connections| {
        AnyPoolOptions::new()
            .max_connections(connections)
            .min_connections(0)
            // A store in memory lives only as long as a connection to it.
            .idle_timeout((!in_memory).then_some(IDLE_CONNECTION))
            .acquire_timeout(Duration::from_secs(10))
            // No ping on every acquire: a SQLite connection is a file handle in this process,
            // not a socket that can drop between uses, and the ping is a round trip to the
            // connection's worker thread (about 4% of the daemon's CPU in a storm of alerts).
            // The store checks its file itself (`file.rs`).
            .test_before_acquire(false)
            // The journal mode is the file's own (set above); these are each connection's.
            .after_connect(|conn, _meta| Box::pin(sqlite_settings(conn)))
            .after_release(tx::discard_if_mid_transaction)
    };
    let pool = options_of(4).connect(&pool_url).await.map_err(open_err)?;
    // Write transactions take turns anyway (`Store::write_turn`); on one connection of their
    // own they keep its page cache. SQLite drops a connection's cache whenever another one
    // has written, so writes spread over the pool each read their B-tree paths again, and more
    // of them the larger the file (BENCHMARKS.md). Idle, it is closed like the others; it is
    // opened by the first write, not here (the pool above has checked the URL).
    let writes = if in_memory {
        pool.clone()
    } else {
        options_of(1).connect_lazy(&pool_url).map_err(open_err)?
    };
    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .map_err(StoreError::Migrate)?;
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
    Ok((pool, writes, file))
}

/// The settings of each SQLite connection of the pool (see [`open_sqlite`]).
async fn sqlite_settings(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    conn.execute(
        "PRAGMA mmap_size = 0; PRAGMA locking_mode = NORMAL; PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
    )
    .await?;
    Ok(())
}

/// Opens the PostgreSQL store and migrates it (`migrations/postgres/`). sqlx's migrator
/// holds an advisory lock, so replicas starting together migrate once.
pub(super) async fn open_postgres(url: &str) -> Result<AnyPool> {
    let pool = AnyPoolOptions::new()
        .max_connections(8)
        .min_connections(0)
        .idle_timeout(Some(Duration::from_secs(60)))
        .acquire_timeout(Duration::from_secs(10))
        .after_release(tx::discard_if_mid_transaction)
        .connect(url)
        .await
        .map_err(|source| StoreError::Open {
            url: redact_url(url),
            source,
        })?;
    sqlx::migrate!("./migrations/postgres")
        .run(&pool)
        .await
        .map_err(StoreError::Migrate)?;
    Ok(pool)
}

/// A store URL fit for an error message: without its password.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}
