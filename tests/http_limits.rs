//! The server's limits against a real socket on 127.0.0.1: a slow header, a stalled body and an
//! idle keep-alive connection are closed after their timeouts, and connections over the limit
//! wait. Timeouts are a few hundred milliseconds and every wait is bounded.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::routing::{get, post};
use rollbackd::http::{ServerLimits, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const SHORT: Duration = Duration::from_millis(300);
const LONG: Duration = Duration::from_secs(10);
/// The most any wait in these tests may take.
const BOUND: Duration = Duration::from_secs(5);

fn limits(header: Duration, body: Duration, idle: Duration, max: usize) -> ServerLimits {
    ServerLimits {
        header_timeout: header,
        body_timeout: body,
        idle_timeout: idle,
        max_connections: max,
    }
}

/// `GET /hello` answers at once; `POST /echo` reads its body and answers its length, or 408
/// with the error when the body did not arrive whole.
fn app() -> Router {
    Router::new().route("/hello", get(|| async { "hi" })).route(
        "/echo",
        post(|body: Result<Bytes, BytesRejection>| async move {
            match body {
                Ok(b) => (StatusCode::OK, b.len().to_string()),
                Err(e) => (StatusCode::REQUEST_TIMEOUT, e.body_text()),
            }
        }),
    )
}

struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn start(limits: ServerLimits) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, app(), limits, async {
        let _ = stopped.await;
    }));
    Server { addr, stop, task }
}

const HELLO: &[u8] = b"GET /hello HTTP/1.1\r\nHost: test\r\n\r\n";

/// Reads until `needle` has arrived; panics after [`BOUND`].
async fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&got).contains(needle) {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "closed before {needle:?}: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(BOUND, read)
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} within {BOUND:?}"));
    String::from_utf8_lossy(&got).into_owned()
}

/// Reads until the server closes the connection and returns what came first; `None` if it
/// was still open after `limit`.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read).await.ok()?;
    Some(String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test]
async fn half_a_header_is_cut_off_after_the_header_timeout() {
    let server = start(limits(SHORT, LONG, LONG, 16)).await;
    let mut client = TcpStream::connect(server.addr).await.expect("connect");
    client
        .write_all(b"GET /hello HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        .await
        .expect("write");
    let started = Instant::now();
    let answer = read_to_close(&mut client, BOUND).await;
    let waited = started.elapsed();
    assert!(answer.is_some(), "still open after {BOUND:?}");
    assert!(
        waited >= SHORT - Duration::from_millis(50),
        "closed too early: {waited:?}"
    );
    assert!(
        !answer.unwrap_or_default().contains(" 200 "),
        "the request was served"
    );
}

#[tokio::test]
async fn a_stalled_body_is_cut_off_after_the_body_timeout() {
    let server = start(limits(LONG, SHORT, LONG, 16)).await;
    let mut client = TcpStream::connect(server.addr).await.expect("connect");
    client
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"version\"",
        )
        .await
        .expect("write");
    let started = Instant::now();
    let answer = read_to_close(&mut client, BOUND).await;
    let waited = started.elapsed();
    let answer = answer.unwrap_or_else(|| panic!("still open after {BOUND:?}"));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 300ms"), "{answer}");
    assert!(
        waited >= SHORT - Duration::from_millis(50),
        "cut off too early: {waited:?}"
    );
}

#[tokio::test]
async fn a_body_that_arrives_in_time_is_served() {
    let server = start(limits(SHORT, SHORT, SHORT, 16)).await;
    let mut client = TcpStream::connect(server.addr).await.expect("connect");
    client
        .write_all(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\n\r\nab")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.write_all(b"cd").await.expect("write");
    let answer = read_until(&mut client, "\r\n\r\n4").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let idle = Duration::from_millis(900);
    let server = start(limits(SHORT, SHORT, idle, 16)).await;
    let mut client = TcpStream::connect(server.addr).await.expect("connect");
    client.write_all(HELLO).await.expect("write");
    read_until(&mut client, "\r\n\r\nhi").await;
    // Longer than the header timeout: waiting between requests is idle, not a slow header.
    tokio::time::sleep(Duration::from_millis(500)).await;
    client.write_all(HELLO).await.expect("write");
    read_until(&mut client, "\r\n\r\nhi").await;
    let started = Instant::now();
    let rest = read_to_close(&mut client, BOUND).await;
    let waited = started.elapsed();
    assert_eq!(rest.as_deref(), Some(""), "closed without another answer");
    assert!(
        waited >= idle - Duration::from_millis(100),
        "closed after {waited:?}, before the idle timeout"
    );
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() {
    let server = start(limits(SHORT, SHORT, SHORT, 16)).await;
    let mut client = TcpStream::connect(server.addr).await.expect("connect");
    assert_eq!(read_to_close(&mut client, BOUND).await.as_deref(), Some(""));
}

#[tokio::test]
async fn connections_over_the_limit_wait_for_a_free_one() {
    let server = start(limits(LONG, LONG, LONG, 1)).await;
    let mut first = TcpStream::connect(server.addr).await.expect("connect");
    first.write_all(HELLO).await.expect("write");
    read_until(&mut first, "\r\n\r\nhi").await;

    let mut second = TcpStream::connect(server.addr).await.expect("connect");
    second.write_all(HELLO).await.expect("write");
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(500), second.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "served while the only slot was taken: {early:?}"
    );

    drop(first);
    let answer = read_until(&mut second, "\r\n\r\nhi").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_returns() {
    let server = start(limits(LONG, LONG, LONG, 16)).await;
    let mut client = TcpStream::connect(server.addr).await.expect("connect");
    client.write_all(HELLO).await.expect("write");
    read_until(&mut client, "\r\n\r\nhi").await;
    let _ = server.stop.send(());
    tokio::time::timeout(BOUND, server.task)
        .await
        .expect("serve returns")
        .expect("no panic");
    assert_eq!(read_to_close(&mut client, BOUND).await.as_deref(), Some(""));
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "still accepting"
    );
}
