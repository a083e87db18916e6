//! Wiring: builds the store, client, watches, pipeline and HTTP server from a [`Config`] and
//! supervises them. Any critical task ending stops the daemon with an error, so a supervisor
//! (systemd, the kubelet) restarts it rather than leaving half a daemon running.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
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
use crate::poller::{IndexView, Poller, PollerSettings, PromAuth, PromClient, RolloutView};
use crate::store::{Backend, Store};

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
        .with_context(|| {
            format!(
                "opening store {}",
                crate::store::redact_url(&config.store.url)
            )
        })?
        .with_audit(crate::audit::stamp(&config));
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
    let pipeline = match &config.prometheus {
        Some(prom) => pipeline.with_graphs(crate::graph::GraphSource {
            client: PromClient::new(
                &prom.url,
                prom_auth(&config.prometheus_auth),
                prom.query_timeout,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?,
            after: prom.graph_after,
        }),
        None => pipeline,
    };
    let election = Election::start(&config, &store, &client, &metrics);
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
    // What the poller knows of recent rollouts, for the rules' post-rollout forms.
    let rollouts: Arc<dyn RolloutView> = Arc::new(IndexView::new(
        pipeline.index.clone(),
        pipeline.policy.labels.clone(),
    ));
    // Built once here so that a bad rule file stops the start; each term builds its own.
    if let Some(prom) = &config.prometheus {
        build_poller(prom, &config.prometheus_auth, &metrics, rollouts.clone())?;
    }

    let retention = retire_old_incidents(pipeline.store.clone(), config.store.retention);
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
        let prometheus = config
            .prometheus
            .clone()
            .map(|prom| (prom, config.prometheus_auth.clone()));
        // What only the leader runs: deciding and acting, notifying, polling Prometheus.
        let term = |note: Option<String>| -> anyhow::Result<Term> {
            let pipeline = match note {
                Some(note) => pipeline.clone().with_start_note(note),
                None => pipeline.clone(),
            };
            let poller = match &prometheus {
                Some((prom, auth)) => {
                    let poller = build_poller(prom, auth, &metrics, rollouts.clone())?;
                    info!(
                        rules = ?poller.rule_names(),
                        post_rollout = ?poller.post_rollout_rules(),
                        window = ?prom.post_rollout_window,
                        url = %prom.url,
                        "polling Prometheus"
                    );
                    Some(poller)
                }
                None => None,
            };
            let delivery = delivery.clone();
            Ok(Box::pin(async move {
                // Aborted when the term or the daemon ends, so that no worker outlives its
                // leadership, and a restarted daemon in the same process does not share the
                // store with a leftover worker.
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
                    _ = polling => anyhow::anyhow!("the PromQL poller stopped"),
                    r = &mut worker.0 => anyhow::anyhow!("the decision worker stopped: {r:?}"),
                    _ = delivery.run() => anyhow::anyhow!("the notification delivery worker stopped"),
                }
            }))
        };
        let listening = {
            let pipeline = pipeline.clone();
            let url = config.store.url.clone();
            async move {
                let store = pipeline.store.clone();
                store.listen_for_alerts(&url, || pipeline.wake()).await
            }
        };
        let mut election = election;
        let ended = tokio::select! {
            () = listening => Err(anyhow::anyhow!("the store's alert notifications stopped")),
            _ = persist_changes => Err(anyhow::anyhow!("the traffic change recorder stopped")),
            () = retention => Err(anyhow::anyhow!("the retention sweep stopped")),
            () = server => Err(anyhow::anyhow!("the HTTP server stopped")),
            _ = watching => Err(anyhow::anyhow!("a Kubernetes watch ended")),
            e = election.lead(term) => Err(e),
            _ = stopped => {
                info!("shutting down");
                Ok(())
            }
        };
        // The work of the term was dropped with the select: give the Lease up.
        election.stop().await;
        ended
    });
    Ok(Running {
        addr,
        state,
        stop,
        task,
    })
}

/// The leader-only work of one term; it ends only by failing.
type Term = std::pin::Pin<Box<dyn Future<Output = anyhow::Error> + Send>>;

/// Whether this replica leads: always with SQLite (one replica), by a Lease with PostgreSQL.
struct Election {
    leading: watch::Receiver<bool>,
    /// Keeps the constant "leading" of a single replica from reading as a stopped election.
    _always: Option<watch::Sender<bool>>,
    /// The Lease election, with PostgreSQL; its receiver is `leading`.
    lease: Option<(crate::k8s::lease::Election, std::time::Duration)>,
    /// This replica's identity in the election; `None` without one.
    identity: Option<String>,
    store: Store,
    metrics: Metrics,
}

impl Election {
    fn start(config: &Config, store: &Store, client: &kube::Client, metrics: &Metrics) -> Election {
        match store.backend() {
            Backend::Sqlite => {
                let (always, leading) = watch::channel(true);
                Election {
                    leading,
                    _always: Some(always),
                    lease: None,
                    identity: None,
                    store: store.clone(),
                    metrics: metrics.clone(),
                }
            }
            Backend::Postgres => {
                let settings = config.leader_election.settings(client.default_namespace());
                info!(
                    lease = %settings.name,
                    namespace = %settings.namespace,
                    identity = %settings.identity,
                    "the store is PostgreSQL: leader election is on; only the leader decides, acts, notifies and polls"
                );
                // No intent is recorded until this replica leads.
                store.lose_leadership();
                let identity = settings.identity.clone();
                let give_up_within = settings.retry_period;
                let api = kube::Api::namespaced(client.clone(), &settings.namespace);
                let election = crate::k8s::lease::elect(api, settings);
                Election {
                    leading: election.leading.clone(),
                    lease: Some((election, give_up_within)),
                    _always: None,
                    identity: Some(identity),
                    store: store.clone(),
                    metrics: metrics.clone(),
                }
            }
        }
    }

    /// Runs `term`'s work for as long as each term of leadership lasts, and stops it at once
    /// when the term ends. Returns only when something failed for good.
    async fn lead(
        &mut self,
        term: impl Fn(Option<String>) -> anyhow::Result<Term>,
    ) -> anyhow::Error {
        loop {
            if self.leading.wait_for(|leading| *leading).await.is_err() {
                return anyhow::anyhow!("the leader election stopped");
            }
            let note = match &self.identity {
                None => None,
                Some(identity) => {
                    match self
                        .store
                        .take_leadership(identity, jiff::Timestamp::now())
                        .await
                    {
                        Ok(taken) => {
                            info!(epoch = taken.epoch, previous = ?taken.previous, "leading: deciding, acting, notifying and polling");
                            Some(format!(
                                "replica {identity} took over as leader (epoch {}{})",
                                taken.epoch,
                                taken
                                    .previous
                                    .map(|p| format!(", after {p}"))
                                    .unwrap_or_default()
                            ))
                        }
                        Err(e) => {
                            error!(error = %error_chain(&e), "leading, but the store did not record the new epoch; trying again");
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                            continue;
                        }
                    }
                }
            };
            let work = match term(note) {
                Ok(work) => work,
                Err(e) => return e,
            };
            self.metrics.set_leader(true);
            tokio::select! {
                e = work => return e,
                // Any change ends the term: losing the Lease, and also losing it and taking it
                // back between two looks (then another replica may have taken an epoch
                // meanwhile, so this one takes a new epoch rather than go on under the old).
                ended = self.leading.changed() => {
                    // Intents are refused first; then the work of the term is dropped.
                    self.store.lose_leadership();
                    self.metrics.set_leader(false);
                    if ended.is_err() {
                        return anyhow::anyhow!("the leader election stopped");
                    }
                    info!("no longer leading: stopped deciding, acting, notifying and polling");
                }
            }
        }
    }
}

impl Election {
    /// Leaves the election at shutdown: nothing of a term runs any more, so a leader gives
    /// the Lease up and another replica takes over at once.
    async fn stop(self) {
        self.store.lose_leadership();
        self.metrics.set_leader(false);
        drop(self.leading);
        if let Some((lease, limit)) = self.lease {
            lease.stop(limit).await;
        }
    }
}

/// How often incidents past `store.retention` are looked for.
const RETENTION_SWEEP: std::time::Duration = std::time::Duration::from_secs(3600);

/// Deletes incidents past `store.retention` (each whole), at start and every hour; never ends.
/// A failure is logged and tried again at the next sweep.
async fn retire_old_incidents(store: Store, retention: Option<std::time::Duration>) {
    let Some(retention) = retention else {
        return std::future::pending().await;
    };
    loop {
        let cutoff = jiff::SignedDuration::try_from(retention)
            .ok()
            .and_then(|d| jiff::Timestamp::now().checked_sub(d).ok());
        if let Some(cutoff) = cutoff {
            match store.retire_before(cutoff).await {
                Ok(ids) if ids.is_empty() => {}
                Ok(ids) => {
                    info!(count = ids.len(), ?ids, %cutoff, "deleted incidents past store.retention")
                }
                Err(e) => {
                    error!(error = %error_chain(&e), "could not delete incidents past store.retention")
                }
            }
        }
        tokio::time::sleep(RETENTION_SWEEP).await;
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn prom_auth(auth: &PrometheusAuth) -> PromAuth {
    match auth {
        PrometheusAuth::None => PromAuth::None,
        PrometheusAuth::Bearer(token) => PromAuth::Bearer(token.expose().to_string()),
        PrometheusAuth::Basic { user, password } => PromAuth::Basic {
            user: user.clone(),
            password: password.expose().to_string(),
        },
    }
}

fn build_poller(
    prom: &PrometheusConfig,
    auth: &PrometheusAuth,
    metrics: &Metrics,
    rollouts: Arc<dyn RolloutView>,
) -> anyhow::Result<Poller> {
    let auth = prom_auth(auth);
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
