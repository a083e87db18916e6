//! Wiring: builds the store, client, watches, pipeline and HTTP server from a [`Config`] and
//! supervises them. Any critical task ending stops the daemon with an error, so a supervisor
//! (systemd, the kubelet) restarts it rather than leaving half a daemon running.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::config::{Config, PrometheusAuth, PrometheusConfig};
use crate::core::traffic::TrafficChange;
use crate::http::{AppState, ServerLimits, router};
use crate::k8s::executor::Executor;
use crate::k8s::watch::{SharedIndex, WatchSettings, watches};
use crate::metrics::Metrics;
use crate::notify::outbox::{DeliverySettings, DeliveryWorker};
use crate::pipeline::{Pipeline, error_chain};
use crate::poller::{IndexView, Poller, PollerSettings, PromAuth, RolloutView};
use crate::store::Store;

/// A daemon started in-process (tests, the demo): its address, state, and a way to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops the daemon and waits for it; returns how it ended.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await.context("daemon task panicked")?
    }
}

/// Starts every part and returns once the HTTP listener is bound.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let store = Store::open(&config.store.url)
        .await
        .with_context(|| format!("opening store {}", config.store.url))?;
    let index = SharedIndex::default();
    // The previous selector or weights live nowhere but the store: restore them first.
    for change in store.latest_traffic_changes().await? {
        match index.write() {
            Ok(mut guard) => guard.restore_traffic_change(change),
            Err(poisoned) => poisoned.into_inner().restore_traffic_change(change),
        }
    }
    let (changes_tx, mut changes_rx) = tokio::sync::mpsc::unbounded_channel::<TrafficChange>();
    let metrics = Metrics::new();
    let client =
        crate::k8s::client(config.kubernetes.kubeconfig.as_deref(), Some(&metrics)).await?;
    // Discovery and the lists run in the background (the listener binds without waiting for
    // the API server); readiness stays false until they are done and whenever data is stale.
    let watch_settings = WatchSettings {
        namespaces: config.kubernetes.namespaces.clone(),
        stale_after: config.kubernetes.stale_after,
        watch_timeout: config.kubernetes.watch_timeout,
        argocd_namespace: config.gitops.argocd_namespace.clone(),
    };
    let (readiness, watching) = watches(
        &client,
        &watch_settings,
        &index,
        changes_tx,
        metrics.clone(),
    );
    let channels = crate::notify::channels(&config)
        .map_err(|e| anyhow::anyhow!("{}", error_chain(&e)))
        .context("setting up notification channels")?;
    for channel in &channels {
        info!(channel = channel.name(), destinations = ?channel.all_destinations(), "notifying");
    }
    let change_store = store.clone();
    let persist_changes = async move {
        while let Some(change) = changes_rx.recv().await {
            if let Err(e) = change_store.record_traffic_change(&change).await {
                error!(error = %error_chain(&e), "could not persist a traffic change");
            }
        }
    };
    let pipeline = Pipeline::new(
        store.clone(),
        index,
        readiness.clone(),
        config.policy(),
        Executor::with_settings(client.clone(), config.executor_settings()),
        channels,
        metrics.clone(),
        config.server.public_url.clone(),
    )
    .with_retry_deadline(config.notify.retry_deadline)
    .with_retries(config.retry_policy(), config.policy.max_decision_wait)
    .with_verify_window(config.policy.verify_window)
    .with_cluster_record(crate::k8s::events::ClusterRecord::new(
        client.clone(),
        config.kubernetes.call_timeout,
    ));
    let delivery = DeliveryWorker::new(
        store,
        pipeline.notifiers.clone(),
        DeliverySettings::from(&config.notify),
        pipeline.outbox_wake(),
    )
    .with_metrics(metrics.clone());
    let state = AppState {
        pipeline: pipeline.clone(),
        metrics: metrics.clone(),
        readiness,
        token: config.webhook_token.clone().map(Arc::new),
        read_token: config.read_token.clone().map(Arc::new),
        metrics_auth: config.server.metrics_auth,
        max_body_bytes: config.server.max_body_bytes,
    };
    let poller = match &config.prometheus {
        Some(prom) => {
            let view = IndexView::new(pipeline.index.clone(), pipeline.policy.labels.clone());
            Some(build_poller(
                prom,
                &config.prometheus_auth,
                &metrics,
                Arc::new(view),
            )?)
        }
        None => None,
    };
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    info!(%addr, mode = ?config.policy.mode, "rollbackd listening");
    let app = router(state.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let limits = ServerLimits::from(&config.server);
        let server = crate::http::serve(listener, app, limits, std::future::pending());
        // Aborted when the daemon stops, so that a restarted daemon in the same process does
        // not share the store with a leftover worker.
        let mut worker = AbortOnDrop(tokio::spawn(pipeline.clone().run()));
        let polling = async move {
            match poller {
                Some(poller) => {
                    let (tx, rx) = tokio::sync::mpsc::channel(64);
                    tokio::join!(poller.run(tx), pipeline.consume_poller(rx));
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = persist_changes => bail!("the traffic change recorder stopped"),
            _ = polling => bail!("the PromQL poller stopped"),
            () = server => bail!("the HTTP server stopped"),
            _ = watching => bail!("a Kubernetes watch ended"),
            r = &mut worker.0 => bail!("the decision worker stopped: {r:?}"),
            _ = delivery.run() => bail!("the notification delivery worker stopped"),
            _ = stopped => info!("shutting down"),
        }
        Ok(())
    });
    Ok(Running {
        addr,
        state,
        stop,
        task,
    })
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn build_poller(
    prom: &PrometheusConfig,
    auth: &PrometheusAuth,
    metrics: &Metrics,
    rollouts: Arc<dyn RolloutView>,
) -> anyhow::Result<Poller> {
    let auth = match auth {
        PrometheusAuth::None => PromAuth::None,
        PrometheusAuth::Bearer(token) => PromAuth::Bearer(token.expose().to_string()),
        PrometheusAuth::Basic { user, password } => PromAuth::Basic {
            user: user.clone(),
            password: password.expose().to_string(),
        },
    };
    let settings = PollerSettings {
        url: prom.url.clone(),
        rule_files: prom.rules.clone(),
        poll_interval: prom.poll_interval,
        query_timeout: prom.query_timeout,
        auth,
    };
    let metrics = metrics.clone();
    let poller = Poller::new(settings)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_eval_hook(move |record| {
            metrics.evaluation(record.rule, record.conclusive, record.took)
        })
        .with_rollouts(rollouts, prom.post_rollout_window);
    info!(
        rules = ?poller.rule_names(),
        post_rollout = ?poller.post_rollout_rules(),
        window = ?prom.post_rollout_window,
        url = %prom.url,
        "polling Prometheus"
    );
    Ok(poller)
}

/// Runs until `shutdown` completes or a critical part fails.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let running = start(config).await?;
    tokio::pin!(shutdown);
    let Running { stop, mut task, .. } = running;
    tokio::select! {
        r = &mut task => r.context("daemon task panicked")?,
        _ = &mut shutdown => {
            let _ = stop.send(());
            task.await.context("daemon task panicked")?
        }
    }
}
