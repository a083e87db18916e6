//! A TCP proxy on 127.0.0.1 in front of the sandbox, to break the path between the daemon and
//! the API server the ways networks break. TLS passes through untouched (the sandbox's
//! certificate covers 127.0.0.1, so a kubeconfig pointing at the proxy works).
//!
//! Modes: [`Mode::Forward`] copies bytes both ways. [`Mode::Refuse`] stops listening and
//! drops every connection (with a reset), so new connects get ECONNREFUSED; back to forward,
//! it listens again on the same port. [`Mode::Blackhole`] keeps connections open and accepts
//! new ones but forwards nothing either way (a half-open path); back to forward, the
//! connections it held are reset, as a server that forgot them long ago would.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Forward,
    Refuse,
    Blackhole,
}

pub struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// A proxy to `upstream`, forwarding, on a free port of 127.0.0.1.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)));
        let addr = listener.local_addr().expect("proxy address");
        let (mode, rx) = watch::channel(Mode::Forward);
        let task = tokio::spawn(serve(listener, addr, upstream, rx));
        Proxy { addr, mode, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// `kubeconfig` (as the sandbox writes it) with its server pointed at this proxy.
    pub fn kubeconfig(&self, kubeconfig: &str, upstream: SocketAddr) -> String {
        let (from, to) = (
            format!("server: https://{upstream}"),
            format!("server: https://{}", self.addr),
        );
        assert!(kubeconfig.contains(&from), "no {from:?} in the kubeconfig");
        kubeconfig.replace(&from, &to)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds with SO_REUSEADDR, so that the port can be listened on again after `Refuse`.
fn bind(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind(addr).expect("proxy binds");
    socket.listen(128).expect("proxy listens")
}

async fn serve(
    first: TcpListener,
    addr: SocketAddr,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Mode>,
) {
    let for_connections = mode.clone();
    let mut listener = Some(first);
    loop {
        let Some(l) = &listener else {
            if mode.wait_for(|m| *m != Mode::Refuse).await.is_err() {
                return;
            }
            listener = Some(bind(addr));
            continue;
        };
        tokio::select! {
            accepted = l.accept() => {
                if let Ok((client, _)) = accepted {
                    tokio::spawn(connection(client, upstream, for_connections.clone()));
                }
            }
            changed = mode.wait_for(|m| *m == Mode::Refuse) => {
                if changed.is_err() {
                    return;
                }
                listener = None;
            }
        }
    }
}

async fn connection(mut client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let current = *mode.borrow();
    if current == Mode::Forward {
        let Ok(mut server) = TcpStream::connect(upstream).await else {
            return reset(client);
        };
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
            _ = mode.wait_for(|m| *m != Mode::Forward) => {}
        }
        reset(server);
    }
    // Blackhole: hold the connection, forwarding nothing, until the mode changes.
    if *mode.borrow() == Mode::Blackhole {
        let _ = mode.wait_for(|m| *m != Mode::Blackhole).await;
    }
    reset(client);
}

/// Closes with a reset (SO_LINGER 0) rather than an orderly FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Waits until a TCP connect to `addr` is refused (or `limit` passes).
pub async fn refused(addr: SocketAddr, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
