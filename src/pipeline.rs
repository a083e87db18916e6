//! The pipeline: recorded alerts → engine → executor → store (→ notification outbox).
//!
//! Intake ([`Pipeline::submit`]) durably records alerts and wakes the worker; nothing is
//! decided on the request path. Intake ranks each alert: *urgent* when it concerns a workload
//! with a rollout recent enough to blame that the actions last read do not already cover (or
//! when the index cannot tell yet), quiet otherwise.
//!
//! One worker decides alerts in order, so two alerts about the same rollout can never race
//! into two rollbacks. Reverts on different workloads are carried out together, a [`Round`] at a
//! time: each alert is decided against the actions recorded so far, and an alert the round
//! could change the decision for (about a workload the round acts on, or past the breaker's
//! room) closes the round and is decided again after its results are recorded. Its loop, each
//! time it wakes (or every few seconds):
//! 1. **Settle** every action left without a known result: intended before a crash, or whose
//!    answer was lost and could not be re-read. The object is read again; what it shows is
//!    recorded (with a note of the daemon's start, after a restart) and notified. A cause with
//!    an unsettled action gets nothing more sent until it is settled.
//!    Then **verify** (module `verify`, at most once a second): each applied action is judged
//!    against the alerts behind it until `policy.verify_window` ends: `recovered`, or `not-recovered` and the workload held.
//! 2. **Fresh data or no decision.** While any watch is failing or silent, nothing is decided;
//!    an alert that waited longer than `policy.max_decision_wait` is recorded `stale-data`,
//!    notified, and decided once the data is fresh.
//! 3. **Decide the backlog a page at a time**: urgent alerts first, then in arrival order.
//!    Decisions that act on nothing are recorded in one transaction per page, so a flood about
//!    quiet workloads costs little and never holds up a rollback. A round's intents are
//!    recorded in one transaction, its PATCHes sent at once, and its results recorded in one
//!    transaction. A revert whose failure was transient is decided again after a backoff, a
//!    bounded number of times.
//!
//! Notifications are never sent from here: a notable decision or result queues its messages in
//! the transaction that records it, and the delivery worker (`notify::outbox`) sends them. A
//! slow or dead channel therefore changes nothing on the rollback path.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

use crate::core::alert::Alert;
use crate::core::engine::{
    Command, Decision, Outcome, PastAction, Policy, WorkloadRef, decide, decide_at,
};
use crate::core::settle::RetryPolicy;
use crate::k8s::executor::{Executor, Gate};
use crate::k8s::watch::{Readiness, SharedIndex};
use crate::metrics::Metrics;
use crate::notify::{Notification, Notifier, is_notable};
use crate::poller::PollerEvent;
use crate::store::{
    ActionOutcome, ActionResult, ActionStatus, Followup, NewMessage, PendingAlert, Received,
    Recorded, Store, StoreError,
};

mod settle;
mod verify;

/// How often the worker looks for work even without being woken.
const SWEEP: Duration = Duration::from_secs(5);
/// How often, at most, the worker judges the actions under verification. Each pass reads
/// every one of them; a storm wakes the worker hundreds of times a second, and a verdict is
/// never needed sooner than this.
const VERIFY_EVERY: Duration = Duration::from_secs(1);
/// Alerts read from the backlog at once.
const PAGE: usize = 256;
/// At most this many reverts are carried out at once.
const ROUND: usize = 64;
/// Alerts decided before the worker gives unused memory back, once the backlog is empty.
const TRIM_AFTER: usize = 1_000;

#[derive(Clone)]
pub struct Pipeline {
    pub store: Store,
    pub index: SharedIndex,
    pub readiness: Readiness,
    pub policy: Arc<Policy>,
    pub executor: Executor,
    pub notifiers: Arc<Vec<Box<dyn Notifier>>>,
    pub metrics: Metrics,
    pub public_url: Option<String>,
    /// How long a queued notification is retried (`notify.retry_deadline`).
    pub retry_deadline: Duration,
    /// When a transient failure is decided again.
    pub retry: RetryPolicy,
    /// How long an alert may wait for fresh data before it is recorded `stale-data`.
    pub max_decision_wait: Duration,
    /// How long the alerts behind an applied action are followed (`policy.verify_window`).
    pub verify_window: Duration,
    /// Events and annotations on the cluster (none in tests that build a pipeline by hand).
    cluster: Option<crate::k8s::events::ClusterRecord>,
    /// Where incident graphs are read from (none without `[prometheus]`).
    graphs: Option<crate::graph::GraphSource>,
    wake: Arc<Notify>,
    outbox_wake: Arc<Notify>,
    /// How this worker came to run, for the note on incidents it finds unsettled at its start:
    /// a start of the daemon, or a replica taking over as leader (docs/ha.md).
    started_as: Option<Arc<str>>,
}

impl Pipeline {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        index: SharedIndex,
        readiness: Readiness,
        policy: Policy,
        executor: Executor,
        notifiers: Vec<Box<dyn Notifier>>,
        metrics: Metrics,
        public_url: Option<String>,
    ) -> Pipeline {
        let defaults = crate::config::PolicyConfig::default();
        Pipeline {
            store,
            index,
            readiness,
            policy: Arc::new(policy),
            executor,
            notifiers: Arc::new(notifiers),
            metrics,
            public_url,
            retry_deadline: crate::config::NotifyConfig::default().retry_deadline,
            retry: RetryPolicy::default(),
            max_decision_wait: defaults.max_decision_wait,
            verify_window: defaults.verify_window,
            cluster: None,
            graphs: None,
            wake: Arc::new(Notify::new()),
            outbox_wake: Arc::new(Notify::new()),
            started_as: None,
        }
    }

    /// Sets how long queued notifications are retried.
    pub fn with_retry_deadline(mut self, deadline: Duration) -> Pipeline {
        self.retry_deadline = deadline;
        self
    }

    /// Sets when transient failures are decided again and how long an alert waits for fresh
    /// data before it is recorded `stale-data`.
    pub fn with_retries(mut self, retry: RetryPolicy, max_decision_wait: Duration) -> Pipeline {
        self.retry = retry;
        self.max_decision_wait = max_decision_wait;
        self
    }

    /// Says how this worker came to run (a replica taking over as leader); the note on each
    /// incident found unsettled at its start tells it.
    pub fn with_start_note(mut self, note: impl Into<Arc<str>>) -> Pipeline {
        self.started_as = Some(note.into());
        self
    }

    /// Leaves a Kubernetes Event (and, on a workload it changed, an annotation) for every
    /// notable decision and result.
    pub fn with_cluster_record(mut self, cluster: crate::k8s::events::ClusterRecord) -> Pipeline {
        self.cluster = Some(cluster);
        self
    }

    /// Fetches each acted-on incident's metric graph from Prometheus and stores it with the
    /// incident, after the action and again once it is verified.
    pub fn with_graphs(mut self, graphs: crate::graph::GraphSource) -> Pipeline {
        self.graphs = Some(graphs);
        self
    }

    /// Schedules the incident's graph to be fetched `delay` from now (or `prometheus.graph_after`
    /// when `None`), in the background: it never holds up an action.
    fn graph_later(&self, incident_id: i64, delay: Option<Duration>) {
        if let Some(graphs) = &self.graphs {
            graphs.capture_later(
                self.store.clone(),
                incident_id,
                delay.unwrap_or(graphs.after),
            );
        }
    }

    /// Tells the cluster about a notable outcome, in the background; never fails.
    fn tell_cluster(
        &self,
        incident_id: i64,
        workload: Option<&crate::core::engine::WorkloadRef>,
        outcome: Outcome,
        sentence: &str,
    ) {
        let (Some(cluster), Some(workload)) = (&self.cluster, workload) else {
            return;
        };
        if !is_notable(outcome) {
            return;
        }
        cluster.report(crate::k8s::events::Report {
            workload: workload.clone(),
            incident_id,
            outcome,
            sentence: sentence.to_string(),
            link: self
                .public_url
                .as_deref()
                .map(|base| crate::notify::incident_link(base, incident_id)),
        });
    }

    /// Wakes the worker: alerts await a decision (recorded by another replica).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Notified whenever notifications were queued: the delivery worker waits on it.
    pub fn outbox_wake(&self) -> Arc<Notify> {
        self.outbox_wake.clone()
    }

    /// Records alerts durably, then wakes the worker. Concurrent deliveries share one
    /// transaction (a group commit). An error means nothing may be assumed recorded: the
    /// webhook answers 503 so that Alertmanager retries.
    pub async fn submit(&self, alerts: &[Alert]) -> Result<Vec<Received>, StoreError> {
        let urgent = self.rank(alerts);
        let received = self
            .store
            .record_alerts_grouped(alerts, &urgent, Timestamp::now())
            .await?;
        for (alert, r) in alerts.iter().zip(&received) {
            self.metrics.alert_received(alert.source, !r.fresh);
            if !r.fresh {
                debug!(alert = %alert.name(), key = %r.key, "duplicate delivery; already recorded");
            }
            if r.resolved_now {
                info!(alert = %alert.name(), key = %r.key, "alert resolved");
            }
            if r.reopened {
                info!(alert = %alert.name(), key = %r.key, "delivered again after a transient failure; deciding it again");
            }
        }
        let fresh = received.iter().filter(|r| r.awaits_decision()).count();
        if fresh > 0 {
            self.metrics.add_pending(fresh);
            self.wake.notify_one();
        }
        Ok(received)
    }

    /// Which alerts are urgent: those the engine would act on now, against the past actions
    /// the worker read last. An alert about a cause already reverted is therefore not urgent,
    /// and a flood of them after a revert does not hold up an alert about another rollout.
    /// Only an order: every alert is decided, against the actions recorded by then. Before the
    /// index is fresh, all are urgent.
    fn rank(&self, alerts: &[Alert]) -> Vec<bool> {
        if !self.readiness.is_ready() {
            return vec![true; alerts.len()];
        }
        let past = self.store.past_actions_last_read();
        let index = match self.index.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        alerts
            .iter()
            .map(|a| decide(a, &index, &self.policy, &past).command.is_some())
            .collect()
    }

    /// Feeds the poller's events into the pipeline: alerts are submitted like webhook alerts;
    /// inconclusive periods are recorded, never acted on. Ends when the poller does.
    pub async fn consume_poller(self, mut events: tokio::sync::mpsc::Receiver<PollerEvent>) {
        while let Some(event) = events.recv().await {
            let now = Timestamp::now();
            let stored = match event {
                PollerEvent::Alerts(alerts) => self.submit(&alerts).await.map(drop),
                PollerEvent::Inconclusive { rule, reason } => {
                    self.metrics.rule_health_changed(true);
                    self.store.record_inconclusive(&rule, &reason, now).await
                }
                PollerEvent::Conclusive { rule } => {
                    self.metrics.rule_health_changed(false);
                    self.store.record_conclusive(&rule, now).await
                }
            };
            if let Err(e) = stored {
                // The poller re-sends firing alerts every poll, so a lost batch comes again.
                error!(error = %error_chain(&e), "could not record a poller event");
            }
        }
    }

    /// The worker: settles, then decides what is due, then sleeps until woken or the next
    /// sweep. Never ends.
    pub async fn run(self) {
        let mut announced = false;
        let mut started = true;
        let mut verified: Option<tokio::time::Instant> = None;
        let mut since_trim = 0;
        loop {
            match self.settle_unsettled(started).await {
                Ok(()) => started = false,
                Err(e) => {
                    error!(error = %error_chain(&e), "incident store failed while settling; will retry")
                }
            }
            let verify_now = verified.is_none_or(|at| at.elapsed() >= VERIFY_EVERY);
            if verify_now {
                verified = Some(tokio::time::Instant::now());
                if let Err(e) = self.verify_due().await {
                    error!(error = %error_chain(&e), "incident store failed while verifying; will retry");
                }
            }
            let ready = self.readiness.is_ready();
            let work = if ready {
                announced = false;
                self.drain().await
            } else {
                if !announced {
                    info!("waiting for fresh Kubernetes data before deciding anything");
                    announced = true;
                }
                self.note_stale().await.map(|()| 0)
            };
            match work {
                Ok(read) => since_trim += read,
                Err(e) => error!(error = %error_chain(&e), "incident store failed; will retry"),
            }
            if let Ok(n) = self.store.pending_count().await {
                self.metrics.set_pending(usize::try_from(n).unwrap_or(0));
                // After a storm, the memory it took goes back to the system once the backlog is
                // decided; the allocator would otherwise keep it for the next one.
                if n == 0 && since_trim >= TRIM_AFTER {
                    since_trim = 0;
                    crate::memory::give_back().await;
                }
            }
            let wait = if ready {
                SWEEP
            } else {
                Duration::from_millis(200)
            };
            // A verification pass skipped for being too soon comes as soon as it is due.
            let wait = match verified {
                Some(at) if !verify_now => wait.min(VERIFY_EVERY.saturating_sub(at.elapsed())),
                _ => wait,
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Decides every alert that is due, a page at a time, while the data stays fresh. Returns
    /// how many alerts it read.
    async fn drain(&self) -> Result<usize, StoreError> {
        let mut read = 0;
        loop {
            let page = self.store.undecided_page(PAGE, Timestamp::now()).await?;
            if page.is_empty() {
                return Ok(read);
            }
            read += page.len();
            let full = page.len() == PAGE;
            let mut past = self.store.past_actions().await?;
            self.note_breaker(&past);
            let mut quiet: Vec<(PendingAlert, Decision)> = Vec::new();
            let mut round = Round::default();
            let mut page = page.into_iter();
            let mut next = page.next();
            while let Some(pending) = next.take() {
                if !self.readiness.is_ready() {
                    // Fresh data or no decision: the rest waits for the next round.
                    self.record_quiet(std::mem::take(&mut quiet)).await?;
                    self.act_round(std::mem::take(&mut round)).await?;
                    return Ok(read);
                }
                // Each alert is decided against the actions recorded so far. An alert the
                // round could change the decision for (about a workload the round acts on, or
                // once the round fills what the breaker allows) waits until the round is
                // recorded and carried out, then is decided again.
                let room = self
                    .policy
                    .guard
                    .breaker_room(&past, Timestamp::now())
                    .unwrap_or(usize::MAX);
                let decision = self.decide(&pending.alert, &past);
                let blocked = !round.is_empty()
                    && (round.len() >= room.min(ROUND)
                        || round.touches(decision.workload.as_ref()));
                if blocked {
                    self.record_quiet(std::mem::take(&mut quiet)).await?;
                    self.act_round(std::mem::take(&mut round)).await?;
                    past = self.store.past_actions().await?;
                    self.note_breaker(&past);
                    next = Some(pending);
                    continue;
                }
                match &decision.command {
                    None => quiet.push((pending, decision)),
                    Some(command) if Round::batches(command) => round.push(pending, decision),
                    Some(_) => {
                        // Traffic switches, pauses and GitOps actions are carried out alone.
                        self.record_quiet(std::mem::take(&mut quiet)).await?;
                        self.act_round(std::mem::take(&mut round)).await?;
                        let mut alone = Round::default();
                        alone.push(pending, decision);
                        self.act_round(alone).await?;
                        past = self.store.past_actions().await?;
                        self.note_breaker(&past);
                    }
                }
                next = page.next();
            }
            self.record_quiet(quiet).await?;
            self.act_round(round).await?;
            // The gauge follows the backlog page by page, not only once it is drained.
            let left = self.store.pending_count().await?;
            self.metrics.set_pending(usize::try_from(left).unwrap_or(0));
            if !full {
                return Ok(read);
            }
        }
    }

    /// Exposes the circuit breaker's state as a metric.
    fn note_breaker(&self, past: &[PastAction]) {
        self.metrics
            .set_breaker_open(self.policy.guard.breaker_open(past, Timestamp::now()));
    }

    fn decide(&self, alert: &Alert, past: &[PastAction]) -> Decision {
        let index = match self.index.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        decide_at(alert, &index, &self.policy, past, Timestamp::now())
    }

    /// Records decisions that act on nothing, all in one transaction.
    async fn record_quiet(&self, quiet: Vec<(PendingAlert, Decision)>) -> Result<(), StoreError> {
        if quiet.is_empty() {
            return Ok(());
        }
        let now = Timestamp::now();
        let batch: Vec<(i64, &Alert, &Decision)> = quiet
            .iter()
            .map(|(p, d)| (p.alert_id, &p.alert, d))
            .collect();
        let mut queued = Vec::new();
        let recorded = self
            .store
            .record_decisions(&batch, now, |i, incident_id| {
                let (p, d) = &quiet[i];
                if !is_notable(d.outcome) {
                    return Vec::new();
                }
                let n = self.notification(incident_id, &p.alert, d, None, now);
                let messages = self.messages(&n, format!("decision:{}", p.alert_id), now);
                queued.push((incident_id, messages.len()));
                messages
            })
            .await?;
        for ((p, d), r) in quiet.iter().zip(&recorded) {
            let Some(r) = r else { continue };
            if d.outcome != Outcome::StaleData {
                self.metrics.decision(d.outcome);
                self.metrics.decision_after_alert(since(p.received_at, now));
            }
            info!(alert = %p.alert.name(), incident = r.incident_id, outcome = d.outcome.code(),
                "decision: {}", d.reason);
            self.tell_cluster(r.incident_id, d.workload.as_ref(), d.outcome, &d.reason);
        }
        for (incident_id, n) in queued {
            self.queued(incident_id, n);
        }
        Ok(())
    }

    /// Records a round of acting decisions (their intents, in one transaction), carries them
    /// out at once, and records what came of them (in one transaction). The reverts read
    /// their objects while the intents are being recorded; none writes before they are.
    async fn act_round(&self, round: Round) -> Result<(), StoreError> {
        if round.is_empty() {
            return Ok(());
        }
        let now = Timestamp::now();
        let batch: Vec<(i64, &Alert, &Decision)> = round
            .items
            .iter()
            .map(|(p, d)| (p.alert_id, &p.alert, d))
            .collect();
        let (gates, waiting): (Vec<_>, Vec<_>) =
            round.items.iter().map(|_| Gate::pending()).unzip();
        let recording = async {
            let recorded = self.store.record_intents(&batch, now).await;
            let acting = |r: &Option<Recorded>| r.as_ref().is_some_and(|r| r.action_id.is_some());
            if let Ok(recorded) = &recorded {
                if recorded.iter().any(acting) {
                    crate::fault::point(crate::fault::AFTER_INTENT).await;
                }
                for (gate, r) in gates.into_iter().zip(recorded) {
                    // A revert that ended without a write (superseded, say) has dropped its
                    // gate already: nobody is left to tell.
                    let _ = gate.send(acting(r));
                }
            }
            // On an error the gates are dropped, which closes them.
            recorded
        };
        let executing = futures::future::join_all(round.items.iter().zip(waiting).map(
            |((_, decision), gate)| async move {
                match &decision.command {
                    Some(command) => Some(self.executor.execute_when(command, gate).await),
                    None => None,
                }
            },
        ));
        let (recorded, executed) = tokio::join!(recording, executing);
        let recorded = match recorded {
            Ok(recorded) => recorded,
            Err(e) => {
                // They stay undecided and are tried again; nothing was written.
                error!(alerts = round.len(), error = %error_chain(&e),
                    "could not record decisions; will retry");
                return Err(e);
            }
        };
        let mut acting = Vec::with_capacity(round.len());
        let mut results = Vec::with_capacity(round.len());
        for (((pending, decision), recorded), result) in
            round.items.iter().zip(recorded).zip(executed)
        {
            let Some(recorded) = recorded else { continue };
            info!(alert = %pending.alert.name(), incident = recorded.incident_id,
                outcome = decision.outcome.code(), "decision: {}", decision.reason);
            self.metrics
                .decision_after_alert(since(pending.received_at, now));
            let (Some(action_id), Some(command), Some(result)) =
                (recorded.action_id, &decision.command, result)
            else {
                continue;
            };
            acting.push((pending, decision, recorded.incident_id, action_id, command));
            results.push(result);
        }
        if acting.is_empty() {
            return Ok(());
        }
        crate::fault::point(crate::fault::BEFORE_RESULT).await;
        let decided = now;
        let now = Timestamp::now();
        let mut messages = Vec::with_capacity(acting.len());
        let mut followups = Vec::with_capacity(acting.len());
        for ((pending, decision, incident_id, action_id, _), result) in
            acting.iter().zip(results.iter_mut())
        {
            self.metrics.action(result.status);
            self.metrics.decision(result.outcome);
            let attempts = u32::try_from(pending.attempts + 1).unwrap_or(u32::MAX);
            let followup = self.followup(result, attempts, now);
            // A transient failure is told once, at the first attempt, and again when the
            // attempts are used up: not at every retry in between.
            let retry_in_between = attempts > 1 && matches!(followup, Followup::RetryAt(_));
            messages.push(if is_notable(result.outcome) && !retry_in_between {
                let n =
                    self.notification(*incident_id, &pending.alert, decision, Some(result), now);
                self.messages(&n, format!("result:{action_id}"), now)
            } else {
                warn!(
                    incident = incident_id,
                    outcome = result.outcome.code(),
                    "{}",
                    result.message
                );
                Vec::new()
            });
            followups.push(followup);
        }
        let outcomes: Vec<ActionOutcome<'_>> = acting
            .iter()
            .zip(&results)
            .zip(messages.iter().zip(&followups))
            .map(
                |(((pending, _, incident_id, action_id, _), result), (messages, followup))| {
                    ActionOutcome {
                        action_id: *action_id,
                        incident_id: *incident_id,
                        alert_id: pending.alert_id,
                        result,
                        followup: *followup,
                        messages,
                        verify_until: self.verify_until(result, now),
                    }
                },
            )
            .collect();
        self.store.record_outcomes(&outcomes, now).await?;
        for (((pending, decision, incident_id, _, _), result), messages) in
            acting.iter().zip(&results).zip(&messages)
        {
            self.queued(*incident_id, messages.len());
            self.metrics
                .action_after_alert(since(pending.received_at, now));
            self.metrics.action_after_decision(since(decided, now));
            self.tell_cluster(
                *incident_id,
                decision.workload.as_ref(),
                result.outcome,
                &result.message,
            );
            if result.status == ActionStatus::Succeeded {
                self.graph_later(*incident_id, None);
            }
        }
        // The ranking of alerts on receipt reads the past actions read last: read them now,
        // so that the alerts still coming about these causes are not urgent. Only an order:
        // a failure here is the next page's to see.
        if let Err(e) = self.store.past_actions().await {
            warn!(error = %error_chain(&e), "could not read the past actions after a round");
        }
        Ok(())
    }

    /// What becomes of the alert after `result`: a transient failure is decided again after a
    /// backoff while attempts remain, then again if the alert is delivered again. The result's
    /// sentence says which.
    fn followup(&self, result: &mut ActionResult, attempts: u32, now: Timestamp) -> Followup {
        if !(result.status == ActionStatus::Failed && result.transient) {
            return Followup::Done;
        }
        match self.retry.next(attempts, now) {
            Some(at) => {
                result.message = format!(
                    "{}; the failure looks transient, so rollbackd decides again at {at} (attempt {} of {})",
                    result.message,
                    attempts + 1,
                    self.retry.max_attempts
                );
                Followup::RetryAt(at)
            }
            None => {
                result.message = format!(
                    "{}; {attempts} attempts failed, so rollbackd decides again only if the alert is delivered again",
                    result.message
                );
                Followup::RetryOnDelivery
            }
        }
    }

    /// Records `stale-data` (once) for alerts that waited too long for fresh data. They stay
    /// undecided and are decided once the data is fresh.
    async fn note_stale(&self) -> Result<(), StoreError> {
        let now = Timestamp::now();
        let wait = SignedDuration::try_from(self.max_decision_wait).unwrap_or(SignedDuration::MAX);
        let cutoff = now.checked_sub(wait).unwrap_or(now);
        let page = self.store.overdue_page(PAGE, cutoff).await?;
        let past = self.store.past_actions().await?;
        let why = self
            .readiness
            .why_not_ready()
            .unwrap_or_else(|| "the Kubernetes watches are not fresh".into());
        let stale: Vec<(PendingAlert, Decision)> = page
            .into_iter()
            .map(|p| {
                // Correlated on the stale index only to file it under the right incident.
                let mut d = self.decide(&p.alert, &past);
                d.reason = format!(
                    "not decided yet: {why}; {} waited {}, longer than policy.max_decision_wait ({}); rollbackd decides it once the data is fresh again",
                    p.alert.name(),
                    humantime::format_duration(Duration::from_secs(
                        now.duration_since(p.received_at).as_secs().unsigned_abs()
                    )),
                    humantime::format_duration(self.max_decision_wait),
                );
                d.outcome = Outcome::StaleData;
                d.command = None;
                (p, d)
            })
            .collect();
        if !stale.is_empty() {
            warn!(
                alerts = stale.len(),
                "{why}; alerts waited too long and are recorded stale-data"
            );
        }
        self.record_quiet(stale).await
    }

    fn notification(
        &self,
        incident_id: i64,
        alert: &Alert,
        decision: &Decision,
        result: Option<&ActionResult>,
        now: Timestamp,
    ) -> Notification {
        Notification::about(
            incident_id,
            alert,
            decision,
            result,
            self.public_url.as_deref(),
            now,
        )
    }

    /// One outbox message per channel destination of `n`.
    fn messages(&self, n: &Notification, event: String, now: Timestamp) -> Vec<NewMessage> {
        if self.notifiers.is_empty() {
            info!(
                incident = n.incident_id,
                "notify: {} (no channel configured)",
                n.subject()
            );
            return Vec::new();
        }
        let payload = serde_json::to_value(n).unwrap_or(serde_json::Value::Null);
        let deadline = now
            + jiff::SignedDuration::try_from(self.retry_deadline)
                .unwrap_or(jiff::SignedDuration::from_hours(1));
        self.notifiers
            .iter()
            .flat_map(|channel| {
                channel
                    .destinations(n)
                    .into_iter()
                    .map(|destination| NewMessage {
                        channel: channel.name().to_string(),
                        destination,
                        event: event.clone(),
                        payload: payload.clone(),
                        deadline,
                    })
            })
            .collect()
    }

    /// Wakes the delivery worker once messages are committed.
    fn queued(&self, incident_id: i64, count: usize) {
        if count > 0 {
            debug!(incident = incident_id, count, "notifications queued");
            self.outbox_wake.notify_one();
        }
    }
}

/// Acting decisions carried out together: at most one per workload, each decided against
/// the actions recorded before the round, so none of them could have changed another.
#[derive(Default)]
struct Round {
    items: Vec<(PendingAlert, Decision)>,
}

impl Round {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn push(&mut self, pending: PendingAlert, decision: Decision) {
        self.items.push((pending, decision));
    }

    /// Whether the round acts on `workload`.
    fn touches(&self, workload: Option<&WorkloadRef>) -> bool {
        workload.is_some_and(|w| {
            self.items
                .iter()
                .any(|(_, d)| d.workload.as_ref().is_some_and(|o| o.uid == w.uid))
        })
    }

    /// The reverts that touch only their own workload: a Deployment's undo, a Rollout's abort
    /// or undo. Traffic switches, pauses and GitOps actions are carried out alone.
    fn batches(command: &Command) -> bool {
        matches!(
            command,
            Command::UndoDeployment(_) | Command::AbortRollout(_) | Command::UndoRollout(_)
        )
    }
}

/// The time from `from` to `to`, zero if the clock went back.
fn since(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or_default()
}

/// An error and its sources on one line, for logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
