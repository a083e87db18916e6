//! A real PostgreSQL for tests: one server per test binary, started on first use on 127.0.0.1
//! on a free port, and one fresh database per test.
//!
//! The server is Debian's (`postgresql`, which `scripts/test` installs): `initdb` into a
//! temporary directory, then `postgres` in the foreground of a small shell that waits on its
//! standard input. The pipe to that input is held for the life of the test binary; when the
//! binary exits, however it exits, the pipe closes, the shell stops the server and deletes the
//! directory. PostgreSQL refuses to run as root (CI runs as root), so as root the shell runs as
//! the `postgres` user that the Debian package creates.
//!
//! Used by the store's unit tests (through `#[path]`) and by the integration tests; it needs
//! nothing but std and sqlx.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sqlx::Connection;

/// How long the server may take to start (initdb included) before the tests give up.
const START_LIMIT: Duration = Duration::from_secs(60);

/// The shell that runs the server: `$1` the binaries' directory, `$2` the port. It prints the
/// directory it made, then the server runs until standard input closes.
const SCRIPT: &str = r#"
set -eu
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
echo "$dir"
"$1/initdb" -D "$dir/data" -U postgres -A trust --locale=C -E UTF8 --no-sync >"$dir/initdb.log" 2>&1
"$1/postgres" -D "$dir/data" -p "$2" -h 127.0.0.1 -k "$dir" -c fsync=off \
    -c max_connections=300 >"$dir/server.log" 2>&1 &
pg=$!
read -r _ || true
kill -INT "$pg" 2>/dev/null || true
wait "$pg" || true
"#;

/// The running server of this test binary.
pub struct PgServer {
    port: u16,
    /// Where the server logs, for a failure message.
    dir: PathBuf,
    /// Closing this stops the server; held until the process ends.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

/// The server of this test binary, started on first use.
pub fn server() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(start)
}

/// A fresh, empty database on the shared server; returns its URL.
pub async fn fresh_database() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let server = server();
    let name = format!(
        "test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = server.connect("postgres").await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create a test database");
    admin.close().await.ok();
    server.url(&name)
}

/// Runs `sql` on the server as its superuser, outside any test database (to make a database
/// unreachable and reachable again, for instance).
pub async fn admin(sql: &str) {
    let mut admin = server().connect("postgres").await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    admin.close().await.ok();
}

/// The database name at the end of a URL from [`fresh_database`].
pub fn database_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or_default()
}

impl PgServer {
    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Connects to database `name`, waiting (bounded) while the server is still starting up:
    /// it listens before it accepts.
    async fn connect(&self, name: &str) -> sqlx::PgConnection {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            match sqlx::PgConnection::connect(&self.url(name)).await {
                Ok(conn) => return conn,
                Err(e) if Instant::now() < deadline && e.to_string().contains("starting up") => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot connect to the test PostgreSQL: {e}\n{}", self.log()),
            }
        }
    }

    /// The server's log, for a failure message.
    pub fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        format!(
            "initdb:\n{}\nserver:\n{}",
            read("initdb.log"),
            read("server.log")
        )
    }
}

fn start() -> PgServer {
    let bin = bin_dir();
    let port = free_port();
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "sh"]);
        c
    } else {
        Command::new("sh")
    };
    let mut child = command
        .args(["-c", SCRIPT, "sh"])
        .arg(&bin)
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start PostgreSQL from {}: {e}", bin.display()));
    let stdin = child.stdin.take().expect("piped stdin");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("read the server's directory");
    let server = PgServer {
        port,
        dir: PathBuf::from(line.trim()),
        _stdin: Mutex::new(stdin),
        _child: Mutex::new(child),
    };
    let deadline = Instant::now() + START_LIMIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "PostgreSQL did not listen on 127.0.0.1:{port} within {START_LIMIT:?}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// The directory of Debian's PostgreSQL binaries (the newest installed version).
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres); \
             scripts/test installs Debian's postgresql"
        ),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
