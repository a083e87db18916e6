//! A sample HTTP service whose health follows a Deployment in the sandbox.
//!
//! It exposes `http_requests_total{code}` in the Prometheus text format. Every scrape counts a
//! batch of requests; while the Deployment's template runs one of the "bad" images, a share of
//! them fail with 500. So a real Prometheus scraping it sees the error rate rise after a bad
//! rollout and fall after the rollback, which is what the rules in `rules/` alert on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use kube::api::{Api, DynamicObject};
use tokio::task::JoinHandle;

/// Requests counted per scrape.
const BATCH: u64 = 100;

struct AppState {
    api: Api<DynamicObject>,
    deployment: String,
    bad_images: Vec<String>,
    /// Failing requests per batch while a bad image runs (30 = 30%).
    failures_per_batch: u64,
    ok: AtomicU64,
    errors: AtomicU64,
}

/// The running sample app; stops when dropped.
pub struct SampleApp {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for SampleApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SampleApp {
    /// Serves `/metrics` on 127.0.0.1 for Deployment `deployment` of `api`'s namespace.
    pub async fn start(
        api: Api<DynamicObject>,
        deployment: &str,
        bad_images: &[&str],
        failure_percent: u64,
    ) -> std::io::Result<SampleApp> {
        let state = Arc::new(AppState {
            api,
            deployment: deployment.to_string(),
            bad_images: bad_images.iter().map(|s| s.to_string()).collect(),
            failures_per_batch: failure_percent.min(BATCH),
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/metrics", get(metrics))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(SampleApp { addr, task })
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> String {
    // The image the pods would run now; an unreadable Deployment serves no traffic this scrape.
    if let Ok(d) = state.api.get(&state.deployment).await {
        let image = super::image(&d).unwrap_or_default();
        let failing = if state.bad_images.contains(&image) {
            state.failures_per_batch
        } else {
            0
        };
        state.ok.fetch_add(BATCH - failing, Ordering::SeqCst);
        state.errors.fetch_add(failing, Ordering::SeqCst);
    }
    format!(
        "# HELP http_requests_total Requests served, by status code.\n\
         # TYPE http_requests_total counter\n\
         http_requests_total{{code=\"200\"}} {}\n\
         http_requests_total{{code=\"500\"}} {}\n",
        state.ok.load(Ordering::SeqCst),
        state.errors.load(Ordering::SeqCst)
    )
}
