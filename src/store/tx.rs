//! Write transactions that fail safe: [`WriteTx`], and the pool's check on returned connections.
//!
//! A failed COMMIT or ROLLBACK must not leave a connection behind that is (or that sqlx thinks
//! is) inside a transaction. sqlx 0.9 counts its transaction depth itself and lowers it only
//! when COMMIT or ROLLBACK *succeeds*; when SQLite already rolled back on its own (disk full,
//! I/O error), the ROLLBACK that follows fails with "no transaction is active", the count stays
//! at 1, the connection goes back to the pool, and every later `begin_with("BEGIN IMMEDIATE")`
//! on it fails with "attempted to call begin_with at non-zero transaction depth" until restart.
//!
//! So a write transaction here owns its pooled connection and issues `BEGIN IMMEDIATE`,
//! `COMMIT` and `ROLLBACK` itself. Unless a COMMIT or ROLLBACK succeeded, dropping it *closes*
//! the connection instead of returning it (closing rolls back whatever is open). A cancelled
//! future, a failed statement and a failed COMMIT therefore all cost one reconnect, never a
//! poisoned pool. [`discard_if_mid_transaction`] is the same rule for sqlx's own transactions
//! (the migrator's).
//!
//! On PostgreSQL, shared by replicas, a write transaction takes a transaction-scoped advisory
//! lock ([`WRITE_LOCK`]) right after `BEGIN`: writers take turns across every replica, as
//! `BEGIN IMMEDIATE` makes them on SQLite, so a read-then-write (is this alert new? is this
//! alert still undecided?) stands until the commit. The lock ends with the transaction, and
//! a connection lost mid-transaction releases it on the server.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use sqlx::pool::{PoolConnection, PoolConnectionMetadata};
use sqlx::{Any, AnyConnection, Connection};

use super::file::StoreFile;
use super::{Backend, Result, Store};

/// The key of the PostgreSQL advisory lock that write transactions take in turn: an
/// arbitrary constant of this program ("rbkd" in ASCII).
pub(super) const WRITE_LOCK: i64 = 0x7262_6b64;

/// A transaction holding the write lock; derefs to the connection, so `&mut *tx` and
/// `&mut tx` work where a `&mut AnyConnection` is expected.
#[derive(Debug)]
pub struct WriteTx {
    conn: PoolConnection<Any>,
    file: Option<Arc<StoreFile>>,
    /// Until COMMIT or ROLLBACK succeeded: close the connection on drop.
    open: bool,
    /// This process's turn to write, held until the transaction ends (dropped after `conn`).
    _turn: WriteTurn,
}

/// This process's turn to write: write transactions take turns first come, first served.
pub(super) type WriteTurn = tokio::sync::OwnedMutexGuard<()>;

impl Store {
    /// A transaction that takes the write lock up front (`BEGIN IMMEDIATE`). A deferred
    /// transaction that reads and then writes can fail at once with "database is locked" when
    /// another connection committed in between; waiting for the lock instead lets the busy
    /// timeout do its job. Refused when the file at the store's path is not the one opened.
    pub(super) async fn write_tx(&self) -> Result<WriteTx> {
        let turn = self.write_turn().await;
        self.begin_in_turn(turn).await
    }

    /// Waits for this process's turn to write. The group committer takes it first and then
    /// gathers every delivery that queued meanwhile (`group`).
    pub(super) async fn write_turn(&self) -> WriteTurn {
        self.write_turn.clone().lock_owned().await
    }

    /// Begins a write transaction in a turn already taken; see [`Store::write_tx`].
    pub(super) async fn begin_in_turn(&self, turn: WriteTurn) -> Result<WriteTx> {
        if let Some(file) = &self.file {
            file.check()?;
        }
        let mut tx = WriteTx {
            conn: self.writes.acquire().await?,
            file: self.file.clone(),
            open: true,
            _turn: turn,
        };
        // Built before BEGIN: if this future is dropped mid-BEGIN, the connection is closed.
        match self.backend {
            Backend::Sqlite => {
                sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut *tx.conn)
                    .await?;
            }
            Backend::Postgres => {
                sqlx::query("BEGIN").execute(&mut *tx.conn).await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(WRITE_LOCK)
                    .execute(&mut *tx.conn)
                    .await?;
            }
        }
        Ok(tx)
    }
}

impl WriteTx {
    /// Commits, then checks that the file committed to is still the store's: a commit into a
    /// deleted or replaced file is an error, so nothing is acknowledged that a restart loses.
    pub async fn commit(mut self) -> Result<()> {
        sqlx::query("COMMIT").execute(&mut *self.conn).await?;
        self.open = false;
        match &self.file {
            Some(file) => file.check(),
            None => Ok(()),
        }
    }

    pub async fn rollback(mut self) -> Result<()> {
        sqlx::query("ROLLBACK").execute(&mut *self.conn).await?;
        self.open = false;
        Ok(())
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if self.open {
            self.conn.close_on_drop();
        }
    }
}

impl Deref for WriteTx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}

/// The pool's `after_release` check: a connection that sqlx still counts as inside a
/// transaction once its queued rollback ran (the ping waits for it) is closed, not reused.
pub(super) fn discard_if_mid_transaction(
    conn: &mut AnyConnection,
    _meta: PoolConnectionMetadata,
) -> futures::future::BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        conn.ping().await?;
        Ok(!conn.is_in_transaction())
    })
}
