//! The `rollbackd` binary with its store under real faults: a full disk, a disk remounted
//! read-only, the store deleted or replaced. Each time the daemon stays up, the webhook and
//! `/readyz` answer 503 and never 200 for an alert it did not record, and it takes writes again
//! by itself once the cause is gone. Every acknowledged alert is in the store afterwards.
//!
//! The disks are small tmpfs mounts, so these tests must run as root (CI does); they fail,
//! rather than skip, otherwise.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use jiff::Timestamp;

/// A tmpfs of `size` on a fresh directory; unmounted on drop, even after a failed assertion.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: PathBuf, size: &str) -> Tmpfs {
        assert!(
            std::fs::metadata("/proc/self").map(|m| m.uid()).ok() == Some(0),
            "tests/store_faults.rs mounts tmpfs and must run as root (CI does)"
        );
        std::fs::create_dir_all(&at).expect("mount point");
        run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            &at,
        );
        Tmpfs(at)
    }

    /// Remounts read-only. Linux refuses (EBUSY) while any file on it is open for writing, so
    /// this also proves the idle daemon holds none; retried for at most 20 s.
    fn remount_ro(&self) {
        for _ in 0..400 {
            let done = Command::new("mount")
                .args(["-o", "remount,ro"])
                .arg(&self.0)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if done {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("still busy after 20 s: the idle daemon keeps a store file open for writing");
    }

    fn remount_rw(&self) {
        run("mount", &["-o", "remount,rw"], &self.0);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn run(program: &str, args: &[&str], path: &Path) {
    let out = Command::new(program)
        .args(args)
        .arg(path)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{program} {args:?} {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The daemon as a child process, so that a SIGBUS or a panic shows in its exit status.
struct Daemon(Child);

impl Daemon {
    fn spawn(config: &Path) -> Daemon {
        let child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(config)
            .env("ROLLBACKD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("rollbackd starts");
        Daemon(child)
    }

    fn assert_alive(&mut self) {
        if let Some(status) = self.0.try_wait().expect("child status") {
            panic!(
                "rollbackd died: {status} (signal {:?}; 7 is SIGBUS)",
                status.signal()
            );
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A daemon against the sandbox with its store at `db`, and the alerts it acknowledged.
struct Harness {
    env: Env,
    addr: String,
    config: PathBuf,
    db: PathBuf,
    acknowledged: BTreeSet<u32>,
    next: u32,
}

impl Harness {
    /// The store will be `disk/s.db` in the sandbox's directory.
    async fn new() -> Harness {
        let env = sandbox_env().await;
        let db = env.dir.path().join("disk").join("s.db");
        let addr = format!("127.0.0.1:{}", free_port());
        let config = env.dir.path().join("faults.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = {addr:?}\n[kubernetes]\nkubeconfig = {:?}\n[store]\nurl = {:?}\n",
                env.kubeconfig.display().to_string(),
                format!("sqlite://{}", db.display()),
            ),
        )
        .expect("config written");
        Harness {
            env,
            addr,
            config,
            db,
            acknowledged: BTreeSet::new(),
            next: 0,
        }
    }

    async fn start(&self) -> Daemon {
        let mut daemon = Daemon::spawn(&self.config);
        self.wait_readyz(200, &mut daemon).await;
        daemon
    }

    /// Posts a new alert (or `retry`, one answered 503 before); returns the status.
    async fn alert(&mut self, daemon: &mut Daemon, retry: Option<u32>) -> (u32, u16) {
        let seq = retry.unwrap_or_else(|| {
            self.next += 1;
            self.next
        });
        let payload = scenario::alertmanager_payload(
            &[
                ("alertname", "StoreFault"),
                ("namespace", "default"),
                ("deployment", "nowhere"),
                ("seq", &seq.to_string()),
            ],
            Timestamp::from_second(1_800_000_000 + i64::from(seq)).expect("time"),
        );
        let (status, body) = post_alert(&self.addr, &payload).await;
        daemon.assert_alive();
        assert!(status == 200 || status == 503, "{status} {body}");
        if status == 200 {
            self.acknowledged.insert(seq);
        }
        (seq, status)
    }

    /// `n` new alerts, each refused with 503 (a 200 would acknowledge what may be lost);
    /// `before` runs before each.
    async fn refused(
        &mut self,
        daemon: &mut Daemon,
        n: usize,
        mut before: impl FnMut(),
    ) -> Vec<u32> {
        let mut refused = Vec::new();
        for _ in 0..n {
            before();
            let (seq, status) = self.alert(daemon, None).await;
            assert_eq!(status, 503, "alert {seq} acknowledged by a faulty store");
            refused.push(seq);
        }
        refused
    }

    /// New alerts until `n` are refused with 503, at most `4 * n` of them, `before` running
    /// before each. On a full disk a write that fits after the daemon freed a page (a journal
    /// deleted) is rightly acknowledged: it is recorded, and checked at the end like every
    /// other 200.
    async fn refused_mostly(
        &mut self,
        daemon: &mut Daemon,
        n: usize,
        mut before: impl FnMut(),
    ) -> Vec<u32> {
        let mut refused = Vec::new();
        for _ in 0..4 * n {
            before();
            let (seq, status) = self.alert(daemon, None).await;
            if status == 503 {
                refused.push(seq);
                if refused.len() == n {
                    return refused;
                }
            }
        }
        panic!(
            "only {} of {} alerts refused by a full disk",
            refused.len(),
            4 * n
        );
    }

    async fn readyz(&self) -> u16 {
        reqwest::Client::new()
            .get(format!("http://{}/readyz", self.addr))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// Waits (at most 20 s) until `/readyz` answers `want`.
    async fn wait_readyz(&self, want: u16, daemon: &mut Daemon) {
        for _ in 0..200 {
            daemon.assert_alive();
            if self.readyz().await == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("/readyz never answered {want} within 20 s");
    }

    /// Stops the daemon, reopens the store, and checks every acknowledged alert is there.
    async fn assert_nothing_acknowledged_was_lost(&self, daemon: Daemon) {
        drop(daemon);
        let url = format!("sqlite://{}", self.db.display());
        let store = rollbackd::store::Store::open(&url)
            .await
            .expect("store reopens");
        store.close().await;
        let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=ro"))
            .await
            .expect("read the store");
        let stored: BTreeSet<u32> = sqlx::query_scalar::<_, String>("SELECT labels FROM alerts")
            .fetch_all(&pool)
            .await
            .expect("labels")
            .iter()
            .filter_map(|text| {
                let labels: serde_json::Value = serde_json::from_str(text).ok()?;
                labels["seq"].as_str()?.parse().ok()
            })
            .collect();
        pool.close().await;
        let lost: Vec<_> = self.acknowledged.difference(&stored).collect();
        assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    }
}

/// A file that fills the file system it is on.
struct Filler(std::fs::File, PathBuf);

impl Filler {
    fn fill(dir: &Path) -> Filler {
        let path = dir.join("filler");
        let mut filler = Filler(std::fs::File::create(&path).expect("filler"), path);
        filler.top_up();
        filler
    }

    /// Writes until the disk is full again: the daemon may have freed a page or two since
    /// (a journal deleted by a transaction that was under way), and a write that fits is
    /// rightly acknowledged.
    fn top_up(&mut self) {
        let chunk = vec![0u8; 4096];
        for _ in 0..1024 {
            if self.0.write_all(&chunk).is_err() {
                return;
            }
        }
        panic!("the tmpfs never filled up");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_and_recovers_when_space_is_freed() {
    let mut h = Harness::new().await;
    let disk = Tmpfs::mount(h.env.dir.path().join("disk"), "2m");
    let mut daemon = h.start().await;
    for _ in 0..5 {
        assert_eq!(h.alert(&mut daemon, None).await.1, 200);
    }

    let mut filler = Filler::fill(&disk.0);
    let refused = h.refused_mostly(&mut daemon, 5, || filler.top_up()).await;
    h.wait_readyz(503, &mut daemon).await;
    // Still refused after the daemon's own sweeps and retries ran against the full disk.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let refused_later = h.refused_mostly(&mut daemon, 3, || filler.top_up()).await;
    filler.top_up();
    assert_eq!(h.readyz().await, 503);

    std::fs::remove_file(&filler.1).expect("space freed");
    drop(filler);
    h.wait_readyz(200, &mut daemon).await;
    for seq in refused.into_iter().chain(refused_later) {
        assert_eq!(
            h.alert(&mut daemon, Some(seq)).await.1,
            200,
            "retry of {seq}"
        );
    }
    for _ in 0..5 {
        assert_eq!(h.alert(&mut daemon, None).await.1, 200);
    }
    daemon.assert_alive();
    h.assert_nothing_acknowledged_was_lost(daemon).await;
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_remounted_read_only_answers_503_and_recovers_when_writable() {
    let mut h = Harness::new().await;
    let disk = Tmpfs::mount(h.env.dir.path().join("disk"), "4m");
    let mut daemon = h.start().await;
    for _ in 0..5 {
        assert_eq!(h.alert(&mut daemon, None).await.1, 200);
    }

    disk.remount_ro();
    let refused = h.refused(&mut daemon, 5, || ()).await;
    h.wait_readyz(503, &mut daemon).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let refused_later = h.refused(&mut daemon, 3, || ()).await;

    disk.remount_rw();
    h.wait_readyz(200, &mut daemon).await;
    for seq in refused.into_iter().chain(refused_later) {
        assert_eq!(
            h.alert(&mut daemon, Some(seq)).await.1,
            200,
            "retry of {seq}"
        );
    }
    for _ in 0..5 {
        assert_eq!(h.alert(&mut daemon, None).await.1, 200);
    }
    daemon.assert_alive();
    h.assert_nothing_acknowledged_was_lost(daemon).await;
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_or_replaced_store_is_never_acknowledged_into() {
    let mut h = Harness::new().await;
    let disk = Tmpfs::mount(h.env.dir.path().join("disk"), "4m");
    let mut daemon = h.start().await;
    for _ in 0..5 {
        assert_eq!(h.alert(&mut daemon, None).await.1, 200);
    }
    let backup = h.env.dir.path().join("backup.db");
    std::fs::copy(&h.db, &backup).expect("backup");

    for entry in std::fs::read_dir(&disk.0).expect("list") {
        std::fs::remove_file(entry.expect("entry").path()).expect("delete");
    }
    h.refused(&mut daemon, 5, || ()).await;
    h.wait_readyz(503, &mut daemon).await;
    // Past the idle timeout the pool opens new connections: they must not create a new,
    // empty store at the same path and write into it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    h.refused(&mut daemon, 3, || ()).await;
    assert_eq!(h.readyz().await, 503);
    assert!(!h.db.exists(), "a new store was created at the path");

    // A backup restored under the running daemon is another file: still not ready, until a
    // restart opens it.
    std::fs::copy(&backup, &h.db).expect("restore");
    h.refused(&mut daemon, 3, || ()).await;
    assert_eq!(h.readyz().await, 503);
    daemon.assert_alive();
    drop(daemon);
    let mut daemon = h.start().await;
    assert_eq!(h.alert(&mut daemon, None).await.1, 200);
    h.assert_nothing_acknowledged_was_lost(daemon).await;
    drop(disk);
}
