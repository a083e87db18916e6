//! rollbackd's own PromQL poller: evaluates alerting rules against Prometheus and emits alerts.
//!
//! Data model: a [`Poller`] owns the [`PollerSettings`], a [`prom::PromClient`] and, for every
//! alerting rule loaded from the rule files ([`rules`]), a slot with the rule's
//! [`state::RuleState`] and its health (unknown, conclusive or inconclusive). [`Poller::run`]
//! ticks every `poll_interval`; each tick takes one evaluation time, queries every due rule
//! (concurrently), feeds the answers to the state machines and sends [`PollerEvent`]s:
//! - `Alerts`: the firing alerts of every rule, each tick (the pipeline dedupes), plus the
//!   newly resolved ones once; not sent when there are none;
//! - `Inconclusive`/`Conclusive`: only when a rule's health changes (first failure after
//!   success or start, first success after failure), logged once per change.
//!
//! A failed query never fires or resolves anything: see [`state`]. Counting is left to the
//! receiver of the events, plus an optional per-evaluation hook ([`Poller::with_eval_hook`]).

pub mod duration;
pub mod post_rollout;
mod post_slot;
pub mod prom;
pub mod rollouts;
pub mod rules;
pub mod state;
pub mod template;
mod yaml;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::mpsc;

use crate::core::alert::Alert;
use post_slot::{Judged, PostSlot, window_start};
pub use prom::{PromAuth, PromClient, PromError};
pub use rollouts::{IndexView, RolloutView};
pub use rules::{AlertingRule, LoadedRules, RuleError, RuleErrors, RuleGroup};
use state::{Observation, Outcome, RuleState};

/// What the poller needs from rollbackd's configuration. `Debug` hides the secrets.
#[derive(Clone)]
pub struct PollerSettings {
    /// Prometheus base URL, e.g. `http://prometheus:9090`.
    pub url: String,
    /// Glob patterns of rule files, e.g. `rules/*.yml`.
    pub rule_files: Vec<String>,
    /// How often rules are evaluated (a group's own `interval`, when longer, is honoured).
    pub poll_interval: Duration,
    /// Per-query timeout, passed to Prometheus and enforced locally.
    pub query_timeout: Duration,
    pub auth: PromAuth,
}

impl fmt::Debug for PollerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PollerSettings")
            .field("url", &redact_userinfo(&self.url))
            .field("rule_files", &self.rule_files)
            .field("poll_interval", &self.poll_interval)
            .field("query_timeout", &self.query_timeout)
            .field("auth", &self.auth)
            .finish()
    }
}

/// `http://user:secret@host` shown as `http://<redacted>@host`.
fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://<redacted>{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// What the poller tells the pipeline.
#[derive(Clone, Debug, PartialEq)]
pub enum PollerEvent {
    /// Firing alerts (every tick) and newly resolved alerts (once).
    Alerts(Vec<Alert>),
    /// The rule's evaluations started failing; no alert changes while this lasts.
    Inconclusive { rule: String, reason: String },
    /// The rule's evaluations succeed again.
    Conclusive { rule: String },
}

/// One evaluation, for the optional hook (metrics).
#[derive(Clone, Debug)]
pub struct EvalRecord<'a> {
    /// `group/alert`.
    pub rule: &'a str,
    pub conclusive: bool,
    pub took: Duration,
}

type EvalHook = Arc<dyn Fn(&EvalRecord<'_>) + Send + Sync>;

/// Why the poller could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PollerError {
    #[error("cannot load the poller's rule files")]
    Rules(#[source] RuleErrors),
    #[error("invalid Prometheus settings")]
    Client(#[source] PromError),
    #[error("poll_interval must be positive")]
    ZeroInterval,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Health {
    Unknown,
    Conclusive,
    Inconclusive,
}

struct Slot {
    name: String,
    interval: Duration,
    query_offset: Duration,
    next_due: Option<Timestamp>,
    state: RuleState,
    /// The rule's post-rollout form, when it has one.
    post: Option<PostSlot>,
    health: Health,
}

/// The PromQL poller.
pub struct Poller {
    settings: PollerSettings,
    client: PromClient,
    slots: Vec<Slot>,
    notes: Vec<String>,
    hook: Option<EvalHook>,
    /// Where rollouts come from, and how long after one the post-rollout form applies.
    rollouts: Option<(Arc<dyn RolloutView>, Duration)>,
}

impl fmt::Debug for Poller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Poller")
            .field("settings", &self.settings)
            .field("rules", &self.rule_names())
            .finish_non_exhaustive()
    }
}

impl Poller {
    /// Loads the rule files named in `settings` and prepares the client.
    pub fn new(settings: PollerSettings) -> Result<Self, PollerError> {
        let loaded = rules::load_rule_files(&settings.rule_files).map_err(PollerError::Rules)?;
        Self::from_rules(settings, loaded)
    }

    /// Builds a poller from rules loaded elsewhere (`rule_files` is then not read).
    pub fn from_rules(settings: PollerSettings, loaded: LoadedRules) -> Result<Self, PollerError> {
        if settings.poll_interval.is_zero() {
            return Err(PollerError::ZeroInterval);
        }
        let client = PromClient::new(&settings.url, settings.auth.clone(), settings.query_timeout)
            .map_err(PollerError::Client)?;
        let mut slots = Vec::new();
        for group in loaded.groups {
            let interval = group
                .interval
                .unwrap_or_default()
                .max(settings.poll_interval);
            for rule in group.rules {
                slots.push(Slot {
                    name: format!("{}/{}", group.name, rule.alert),
                    interval,
                    query_offset: group.query_offset.unwrap_or_default(),
                    next_due: None,
                    post: None,
                    state: RuleState::new(rule, client.base_url()),
                    health: Health::Unknown,
                });
            }
        }
        for note in &loaded.notes {
            tracing::info!(note = %note, "poller rule files");
        }
        Ok(Poller {
            settings,
            client,
            slots,
            notes: loaded.notes,
            hook: None,
            rollouts: None,
        })
    }

    /// Turns the post-rollout form on: rules that have one are also evaluated in it, for
    /// `window` after each rollout that `view` knows of. A zero window leaves it off.
    pub fn with_rollouts(mut self, view: Arc<dyn RolloutView>, window: Duration) -> Self {
        self.rollouts = (!window.is_zero()).then_some((view, window));
        let base = self.client.base_url().to_string();
        for slot in &mut self.slots {
            slot.post = self
                .rollouts
                .as_ref()
                .and_then(|_| PostSlot::new(slot.state.rule(), &base, window));
        }
        self
    }

    /// `group/alert` of every rule whose post-rollout form is evaluated.
    pub fn post_rollout_rules(&self) -> Vec<String> {
        self.slots
            .iter()
            .filter(|s| s.post.is_some())
            .map(|s| s.name.clone())
            .collect()
    }

    /// Calls `hook` after every evaluation (e.g. to count them by rule and result).
    pub fn with_eval_hook(
        mut self,
        hook: impl Fn(&EvalRecord<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// `group/alert` of every rule, in evaluation order.
    pub fn rule_names(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.name.clone()).collect()
    }

    /// What the loader skipped on purpose (recording rules, ignored fields).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Evaluates rules every `poll_interval` until `out` is closed.
    pub async fn run(mut self, out: mpsc::Sender<PollerEvent>) {
        let mut ticker = tokio::time::interval(self.settings.poll_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(rules = self.slots.len(), settings = ?self.settings, "poller started");
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = out.closed() => break,
            }
            for event in self.poll_once(Timestamp::now()).await {
                if out.send(event).await.is_err() {
                    tracing::info!("poller stopped: its receiver is gone");
                    return;
                }
            }
        }
        tracing::info!("poller stopped: its receiver is gone");
    }

    /// One tick at evaluation time `now`: queries every due rule and returns the events.
    pub async fn poll_once(&mut self, now: Timestamp) -> Vec<PollerEvent> {
        // Ticks come every poll_interval; a group with a longer interval is due on the first
        // tick within half a poll interval of its due time, so clock jitter never skips one.
        let slack = SignedDuration::try_from(self.settings.poll_interval / 2).unwrap_or_default();
        let due: Vec<usize> = (0..self.slots.len())
            .filter(|&i| {
                let ahead = now.checked_add(slack).unwrap_or(now);
                self.slots[i].next_due.is_none_or(|t| t <= ahead)
            })
            .collect();
        let rollouts = self.rollouts.as_ref();
        let recent = rollouts
            .map(|(view, window)| view.recent(window_start(now, *window)))
            .unwrap_or_default();
        let queries = due.iter().map(|&i| {
            let slot = &self.slots[i];
            let at = now
                .checked_sub(SignedDuration::try_from(slot.query_offset).unwrap_or_default())
                .unwrap_or(now);
            let client = &self.client;
            let expr = slot.state.rule().expr.clone();
            let recent = &recent;
            async move {
                let started = std::time::Instant::now();
                let default = client.query(&expr, at);
                let post = async {
                    match (&slot.post, rollouts) {
                        (Some(post), Some((view, _))) if !recent.is_empty() => post
                            .measure(client, view.as_ref(), recent, at)
                            .await
                            .map(Some),
                        _ => Ok(None),
                    }
                };
                let (default, post) = tokio::join!(default, post);
                // Either part failing makes the evaluation inconclusive: nothing advances.
                let result = match post {
                    Ok(judged) => default.map(|answer| (answer, judged)),
                    Err(e) => Err(e),
                };
                (result, started.elapsed())
            }
        });
        let results = futures::future::join_all(queries).await;
        let mut events = Vec::new();
        let mut alerts = Vec::new();
        for (i, (result, took)) in due.into_iter().zip(results) {
            let slot = &mut self.slots[i];
            if slot.interval > self.settings.poll_interval {
                let interval =
                    SignedDuration::try_from(slot.interval).unwrap_or(SignedDuration::MAX);
                slot.next_due = now.checked_add(interval).ok();
            }
            let (result, judged) = match result {
                Ok((answer, judged)) => (Ok(answer), judged),
                Err(e) => (Err(e), None),
            };
            let (mut step_alerts, event) = apply(slot, now, result);
            if slot.health == Health::Conclusive {
                step_alerts.extend(observe_post(slot, now, judged.as_deref().unwrap_or(&[])));
            }
            if let Some(hook) = &self.hook {
                let rule = &slot.name;
                hook(&EvalRecord {
                    rule,
                    conclusive: slot.health == Health::Conclusive,
                    took,
                });
            }
            alerts.extend(step_alerts);
            events.extend(event);
        }
        if !alerts.is_empty() {
            events.insert(0, PollerEvent::Alerts(alerts));
        }
        events
    }
}

/// Feeds one query result to a rule's state; returns its alerts and a health-change event.
fn apply(
    slot: &mut Slot,
    now: Timestamp,
    result: Result<prom::QueryResult, PromError>,
) -> (Vec<Alert>, Option<PollerEvent>) {
    let outcome = match &result {
        Ok(answer) => {
            for warning in &answer.warnings {
                tracing::debug!(rule = %slot.name, %warning, "Prometheus warning");
            }
            slot.state
                .observe(now, Observation::Samples(&answer.samples))
        }
        Err(e) => {
            let reason = error_chain(e);
            slot.state.observe(now, Observation::Inconclusive(&reason))
        }
    };
    match outcome {
        Outcome::Conclusive(step) => {
            let event = (slot.health == Health::Inconclusive).then(|| {
                tracing::info!(rule = %slot.name, "poller rule is conclusive again");
                PollerEvent::Conclusive {
                    rule: slot.name.clone(),
                }
            });
            slot.health = Health::Conclusive;
            for alert in &step.resolved {
                tracing::info!(rule = %slot.name, fingerprint = %alert.fingerprint, "alert resolved");
            }
            let mut alerts = step.firing;
            alerts.extend(step.resolved);
            (alerts, event)
        }
        Outcome::Inconclusive(reason) => {
            let event = (slot.health != Health::Inconclusive).then(|| {
                tracing::warn!(rule = %slot.name, %reason, "poller rule is inconclusive; its alerts are frozen");
                PollerEvent::Inconclusive {
                    rule: slot.name.clone(),
                    reason,
                }
            });
            slot.health = Health::Inconclusive;
            (Vec::new(), event)
        }
    }
}

/// Feeds a conclusive evaluation's post-rollout verdicts to the rule's post-rollout states
/// (none when no workload is in its window: firing post-rollout alerts then resolve).
fn observe_post(slot: &mut Slot, now: Timestamp, judged: &[Judged]) -> Vec<Alert> {
    let Some(post) = &mut slot.post else {
        return Vec::new();
    };
    for j in judged {
        if let post_rollout::Verdict::LowTraffic(why) = &j.verdict {
            tracing::debug!(rule = %slot.name, workload = %j.workload.0, %why, "post-rollout: not judged");
        }
    }
    post.observe(now, judged)
}

/// An error and its sources, `: `-joined, for one-line reasons.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
#[path = "mod_tests.rs"]
mod tests;
