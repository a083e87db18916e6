//! A simulated Kubernetes API server, faithful enough that the real `kubectl` works against it.
//!
//! [`Sandbox::start`] binds an HTTPS listener on loopback (a CA made at start; kubectl sends
//! no bearer token over plain http), serves discovery and a generic JSON object store for
//! the resources declared in `kinds.rs`, and runs simulated controllers (the Deployment
//! controller, the Argo Rollouts controller) as tasks reacting to store events. Every request needs the bearer token;
//! every API request is recorded; faults can be injected. With a state directory it keeps
//! its certificates, token and objects across restarts (`state`). See the crate's README
//! for what is and is not simulated.
//!
//! Layout: `tls` (certificates, accept loop), `server` (HTTP entry, auth, admin endpoints,
//! routing), `api` (resource verbs), `watch`, `discovery` + `aggregated` + `openapi`,
//! `table` (server-side printing), `scale`, `patch` + `smp`, `protobuf` +
//! `protobuf_schema` (request decoding), `selectors`, `store` + `writes` + `gc` (storage
//! and write semantics), `state` (the state directory), `resources` + `kinds` (the table of
//! kinds), `defaults` (defaulting, validation), `status` (error bodies), `admin` (request
//! log, faults), `controller`.

mod admin;
mod aggregated;
mod api;
mod controller;
mod defaults;
mod discovery;
mod gc;
mod kinds;
mod openapi;
mod paging;
mod patch;
mod protobuf;
mod protobuf_schema;
mod resources;
mod scale;
mod selectors;
mod server;
mod smp;
mod state;
mod status;
mod store;
mod table;
mod tls;
mod watch;
mod writes;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch as tokio_watch;
use tokio::task::JoinHandle;

pub use admin::{Fault, FaultAction, RecordedRequest};
pub use state::StateError;

/// How to run a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Where to listen; `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    /// Bearer token required on every request (401 Status otherwise); None: the one kept in
    /// `state_dir`, else a random one. One given that differs from the kept one is an error.
    pub token: Option<String>,
    /// How long a simulated pod takes to become ready after its ReplicaSet is scaled up (a
    /// rolling update takes a few of these).
    pub rollout_delay: Duration,
    /// How many past events are kept for watch resume; an older resourceVersion gets 410.
    pub watch_history: usize,
    /// Serve argoproj.io and networking.istio.io (false simulates "CRD not installed").
    pub argo_and_istio: bool,
    /// How often a watch with `allowWatchBookmarks` gets a BOOKMARK (tests of staleness
    /// shorten it).
    pub bookmark_interval: Duration,
    /// Images whose simulated pods never become ready, as an image that cannot be pulled:
    /// a rollout to one of them stalls until its progress deadline.
    pub unready_images: Vec<String>,
    /// Where to keep the certificates, token, objects and resourceVersion counter, so that a
    /// sandbox started again on the same directory (and port) is the same cluster to its
    /// clients. Saved after every write. None: nothing is kept.
    pub state_dir: Option<PathBuf>,
}

/// Open a state directory, waiting a moment if it is locked: the lock of a sandbox just
/// stopped (or killed) can outlive it briefly, as a process forked meanwhile holds a copy
/// of its descriptor until it execs.
async fn open_state(dir: &Path, token: Option<&str>) -> Result<state::Opened, StateError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        match state::open(dir, token) {
            Err(StateError::InUse { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// A random bearer token.
pub(crate) fn random_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: None,
            rollout_delay: Duration::from_millis(200),
            watch_history: 1000,
            argo_and_istio: true,
            bookmark_interval: Duration::from_secs(30),
            unready_images: Vec::new(),
            state_dir: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot make the sandbox's TLS certificate: {0}")]
    Tls(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot write the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A running sandbox. Dropping it (or [`Sandbox::shutdown`]) stops the server and controllers.
pub struct Sandbox {
    addr: SocketAddr,
    token: String,
    ca_pem: String,
    shared: Arc<server::Shared>,
    stop: tokio_watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Sandbox {
    pub async fn start(opts: SandboxOptions) -> Result<Sandbox, SandboxError> {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|source| SandboxError::Bind {
                addr: opts.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SandboxError::Bind {
            addr: opts.listen,
            source,
        })?;
        let (pems, token, persister, restored) = match &opts.state_dir {
            Some(dir) => {
                let o = open_state(dir, opts.token.as_deref()).await?;
                (o.pems, o.token, Some(o.persister), o.restored)
            }
            None => (
                tls::generate().map_err(SandboxError::Tls)?,
                opts.token.clone().unwrap_or_else(random_token),
                None,
                None,
            ),
        };
        let identity = tls::identity(&pems).map_err(SandboxError::Tls)?;
        let registry = resources::Registry::new(opts.argo_and_istio);
        let store = Arc::new(store::Store::open(
            registry,
            opts.watch_history,
            persister,
            restored,
        ));
        let (stop, stop_rx) = tokio_watch::channel(false);
        let shared = Arc::new(server::Shared {
            store: store.clone(),
            admin: admin::Admin::default(),
            token: token.clone(),
            shutdown: stop_rx.clone(),
            bookmark_every: opts.bookmark_interval.max(Duration::from_millis(10)),
        });
        let app = axum::Router::new()
            .fallback(server::handle)
            .with_state(shared.clone());
        let server = tokio::spawn(tls::serve(
            listener,
            identity.config.clone(),
            app,
            stop_rx.clone(),
        ));
        let mut tasks = vec![server];
        tasks.extend(controller::spawn_all(
            store,
            controller::Pace {
                rollout_delay: opts.rollout_delay,
                unready_images: opts.unready_images.into(),
            },
            stop_rx,
        ));
        Ok(Sandbox {
            addr,
            token,
            ca_pem: identity.ca_pem,
            shared,
            stop,
            tasks,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// PEM of the CA that signed the server certificate (also in the kubeconfig).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// A kubeconfig with one cluster, one user (the bearer token) and one current context.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: sandbox\n  user:\n    token: {token}\ncontexts:\n- name: sandbox\n  context:\n    cluster: sandbox\n    user: sandbox\n    namespace: default\ncurrent-context: sandbox\npreferences: {{}}\n",
            url = self.url(),
            ca = tls::base64(self.ca_pem.as_bytes()),
            token = self.token
        )
    }

    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }

    /// Every API request so far, in arrival order (admin requests are not recorded).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.admin.requests()
    }

    pub fn clear_requests(&self) {
        self.shared.admin.clear_requests()
    }

    pub fn inject_fault(&self, fault: Fault) {
        self.shared.admin.inject(fault)
    }

    /// Disarms every fault not yet used up.
    pub fn clear_faults(&self) {
        self.shared.admin.clear_faults()
    }

    /// The stored object, as a GET on that apiVersion would answer it.
    pub fn get_object(
        &self,
        api_version: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<serde_json::Value> {
        let store = &self.shared.store;
        let def = store.registry.find_api(api_version, plural)?;
        store
            .get(def, namespace, name)
            .ok()
            .map(|o| api::present(def, o))
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.shared.store.close();
        for t in self.tasks.drain(..) {
            // Give the server a moment to close connections gracefully, then stop it.
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.shared.store.close();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// For a command line (`kube-sandbox`, `rollbackd sandbox`): start, write the kubeconfig, say
/// where, serve until Ctrl-C.
pub async fn serve_forever(
    opts: SandboxOptions,
    kubeconfig_out: &Path,
) -> Result<(), SandboxError> {
    let sb = Sandbox::start(opts).await?;
    sb.write_kubeconfig(kubeconfig_out)
        .map_err(|source| SandboxError::Kubeconfig {
            path: kubeconfig_out.to_path_buf(),
            source,
        })?;
    tracing::info!(url = %sb.url(), kubeconfig = %kubeconfig_out.display(), "sandbox API server listening");
    eprintln!(
        "sandbox listening on {}; kubeconfig written to {}",
        sb.url(),
        kubeconfig_out.display()
    );
    // A failed signal handler means no Ctrl-C can arrive; stop now rather than never.
    let _ = tokio::signal::ctrl_c().await;
    sb.shutdown().await;
    Ok(())
}
