//! The store under faults that need no mount: a transaction SQLite ended on its own, a
//! dropped transaction, a deleted or replaced file. tests/store_faults.rs has the disk ones.

use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{ConnectOptions, Connection};

use super::*;

async fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(&format!("sqlite://{}", dir.path().join("s.db").display()))
        .await
        .expect("open")
}

async fn heartbeats(store: &Store) -> i64 {
    sqlx::query("SELECT count(*) AS n FROM heartbeat")
        .fetch_one(&store.pool)
        .await
        .expect("count")
        .get("n")
}

#[tokio::test]
async fn a_commit_after_sqlite_rolled_back_on_its_own_does_not_poison_the_pool() {
    // A disk-full COMMIT: SQLite has already rolled back, so COMMIT and the ROLLBACK after it
    // fail with "no transaction is active". More rounds than the pool has connections.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    for _ in 0..10 {
        let mut tx = store.write_tx().await.expect("begin");
        sqlx::query("ROLLBACK")
            .execute(&mut *tx)
            .await
            .expect("ended under the caller's feet");
        assert!(tx.commit().await.is_err(), "nothing left to commit");
    }
    for _ in 0..10 {
        assert!(store.ping().await, "every connection can begin again");
    }
}

#[tokio::test]
async fn an_sqlx_transaction_left_open_is_closed_not_pooled() {
    // The bug as sqlx 0.9 has it: its transaction depth stays at 1 when COMMIT and ROLLBACK
    // fail, and `begin_with` then fails on that connection for good. The pool's check on
    // release closes such a connection instead.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    for _ in 0..10 {
        let mut tx = store
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .expect("begin");
        sqlx::query("COMMIT")
            .execute(&mut *tx)
            .await
            .expect("ended");
        assert!(tx.commit().await.is_err());
    }
    for _ in 0..10 {
        let tx = store
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .expect("no connection at non-zero transaction depth");
        tx.rollback().await.expect("rollback");
    }
}

#[tokio::test]
async fn a_dropped_transaction_releases_the_write_lock_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    let mut tx = store.write_tx().await.expect("begin");
    sqlx::query("INSERT INTO heartbeat (id, at) VALUES (1, 'x')")
        .execute(&mut *tx)
        .await
        .expect("insert");
    drop(tx);
    // Well within the 5 s busy timeout: the lock went with the closed connection.
    let again = tokio::time::timeout(Duration::from_secs(2), store.write_tx())
        .await
        .expect("no wait for a lock")
        .expect("begin");
    again.rollback().await.expect("rollback");
    assert_eq!(heartbeats(&store).await, 0);
    assert!(store.ping().await);
    assert_eq!(heartbeats(&store).await, 1);
}

#[tokio::test]
async fn a_deleted_store_refuses_writes_and_is_not_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    assert!(store.ping().await);
    std::fs::remove_file(dir.path().join("s.db")).expect("delete");
    assert!(matches!(
        store.write_tx().await,
        Err(StoreError::FileGone { .. })
    ));
    assert!(!store.ping().await);
}

#[tokio::test]
async fn a_replaced_store_refuses_writes_and_is_not_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    // Another valid store moved over the path, as a careless restore would.
    let other = tempfile::tempdir().expect("tempdir");
    let _ = open(&other).await;
    std::fs::rename(other.path().join("s.db"), dir.path().join("s.db")).expect("replace");
    assert!(matches!(
        store.write_tx().await,
        Err(StoreError::FileReplaced { .. })
    ));
    assert!(!store.ping().await);
}

#[tokio::test]
async fn a_closed_store_is_not_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    store.close().await;
    assert!(!store.ping().await);
}

#[tokio::test]
async fn a_wal_store_is_opened_with_a_rollback_journal_and_no_mmap() {
    // A store written by an earlier version in WAL mode is switched over on open.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let old = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .connect()
        .await
        .expect("old store");
    old.close().await.expect("close");
    let store = open(&dir).await;
    let mut conn = store.pool.acquire().await.expect("conn");
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await
        .expect("journal_mode")
        .get(0);
    let mmap: i64 = sqlx::query("PRAGMA mmap_size")
        .fetch_one(&mut *conn)
        .await
        .expect("mmap_size")
        .get(0);
    let sync: i64 = sqlx::query("PRAGMA synchronous")
        .fetch_one(&mut *conn)
        .await
        .expect("synchronous")
        .get(0);
    assert_eq!((mode.as_str(), mmap, sync), ("delete", 0, 2));
    assert!(!dir.path().join("s.db-wal").exists());
    assert!(!dir.path().join("s.db-shm").exists());
}

#[tokio::test]
async fn an_idle_store_holds_no_file_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    assert!(store.ping().await);
    let path = std::fs::canonicalize(dir.path().join("s.db")).expect("path");
    let held = || {
        std::fs::read_dir("/proc/self/fd")
            .expect("fds")
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .any(|target| target == path)
    };
    assert!(held(), "open while in use");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while held() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still open 10 s after the last use"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_store_in_memory_has_no_file_to_check_and_takes_writes() {
    let store = Store::open("sqlite::memory:").await.expect("open");
    assert!(store.file.is_none());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(store.ping().await);
    assert_eq!(heartbeats(&store).await, 1);
}
