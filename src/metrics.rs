//! Prometheus metrics of the daemon itself, exposed at `/metrics` in the Prometheus text format
//! 0.0.4, or in OpenMetrics text when the scraper asks for it ([`Format::negotiate`]).
//!
//! Counters are labelled by what a reviewer filters on: the alert source, the decision outcome
//! code, the action result, and why a webhook delivery was rejected. Histograms time what an
//! operator waits on: the webhook, Kubernetes calls and the poller's queries.

mod process;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::core::alert::AlertSource;
use crate::core::engine::Outcome;
use crate::store::ActionStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EvaluationLabels {
    rule: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    channel: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchLabels {
    kind: String,
    scope: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabel {
    verb: String,
}

/// 5 ms to about 20 s: a webhook answer, a Kubernetes call or a PromQL query.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

/// The exposition format of one scrape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`: what `promtool check metrics` and most scrapers read.
    Text,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics only when the `Accept` header names it; the text format otherwise.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(a)
                if a.to_ascii_lowercase()
                    .contains("application/openmetrics-text") =>
            {
                Format::OpenMetrics
            }
            _ => Format::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// All of rollbackd's metrics; clones share the same counters.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// The `process_*` metrics, which carry no `rollbackd_` prefix.
    process: Arc<Registry>,
    alerts_received: Family<SourceLabel, Counter>,
    alerts_duplicate: Family<SourceLabel, Counter>,
    decisions: Family<OutcomeLabel, Counter>,
    actions: Family<ResultLabel, Counter>,
    webhook_rejected: Family<ReasonLabel, Counter>,
    pending_alerts: Gauge,
    evaluations: Family<EvaluationLabels, Counter>,
    inconclusive_rules: Gauge,
    notification_attempts: Family<AttemptLabels, Counter>,
    outbox_pending: Family<ChannelLabel, Gauge>,
    outbox_oldest: Family<ChannelLabel, Gauge<f64, AtomicU64>>,
    watch_healthy: Family<WatchLabels, Gauge>,
    breaker_open: Gauge,
    leader: Gauge,
    verifications: Family<ResultLabel, Counter>,
    webhook_duration: Family<CodeLabel, Histogram>,
    kubernetes_duration: Family<VerbLabel, Histogram>,
    poller_query_duration: Histogram,
    alert_to_action: Histogram,
    alert_to_decision: Histogram,
    decision_to_action: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("rollbackd");
        let alerts_received = Family::<SourceLabel, Counter>::default();
        let alerts_duplicate = Family::<SourceLabel, Counter>::default();
        let decisions = Family::<OutcomeLabel, Counter>::default();
        let actions = Family::<ResultLabel, Counter>::default();
        let webhook_rejected = Family::<ReasonLabel, Counter>::default();
        let pending_alerts = Gauge::default();
        let evaluations = Family::<EvaluationLabels, Counter>::default();
        let inconclusive_rules = Gauge::default();
        let notification_attempts = Family::<AttemptLabels, Counter>::default();
        let outbox_pending = Family::<ChannelLabel, Gauge>::default();
        let outbox_oldest = Family::<ChannelLabel, Gauge<f64, AtomicU64>>::default();
        let watch_healthy = Family::<WatchLabels, Gauge>::default();
        let breaker_open = Gauge::default();
        registry.register(
            "circuit_breaker_open",
            "1 while the circuit breaker is open (policy.breaker_max_actions reached in policy.breaker_window): record and notify only",
            breaker_open.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica leads: decides, acts, notifies and polls (always 1 with a SQLite store; docs/ha.md)",
            leader.clone(),
        );
        let verifications = Family::<ResultLabel, Counter>::default();
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1, labelled with the version of the running binary",
            build_info,
        );
        let webhook_duration =
            Family::<CodeLabel, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "webhook_request_duration_seconds",
            "Time from a webhook request's arrival to its answer, by status code",
            webhook_duration.clone(),
        );
        let kubernetes_duration =
            Family::<VerbLabel, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "kubernetes_request_duration_seconds",
            "Time to the response headers of each Kubernetes API call, by HTTP method (a watch counts until it is established)",
            kubernetes_duration.clone(),
        );
        let poller_query_duration = latency_histogram();
        let alert_to_action = latency_histogram();
        registry.register(
            "alert_to_action_seconds",
            "From an alert's receipt to the recorded result of the action it caused",
            alert_to_action.clone(),
        );
        let alert_to_decision = latency_histogram();
        registry.register(
            "alert_to_decision_seconds",
            "From an alert's receipt to its recorded decision (acting or not)",
            alert_to_decision.clone(),
        );
        let decision_to_action = latency_histogram();
        registry.register(
            "decision_to_action_seconds",
            "From an acting decision's recorded intent to the recorded result of its action",
            decision_to_action.clone(),
        );
        registry.register(
            "poller_query_duration_seconds",
            "Time of each PromQL query the poller sends, failed ones included",
            poller_query_duration.clone(),
        );
        registry.register(
            "alerts_received",
            "Alerts received, by source (duplicates included)",
            alerts_received.clone(),
        );
        registry.register(
            "alerts_duplicate",
            "Alerts received again with a known fingerprint and startsAt",
            alerts_duplicate.clone(),
        );
        registry.register(
            "decisions",
            "Decisions made, by outcome code",
            decisions.clone(),
        );
        registry.register("actions", "Actions carried out, by result", actions.clone());
        registry.register(
            "webhook_rejected",
            "Webhook deliveries rejected, by reason",
            webhook_rejected.clone(),
        );
        registry.register(
            "pending_alerts",
            "Alerts recorded but not yet decided",
            pending_alerts.clone(),
        );
        registry.register(
            "poller_evaluations",
            "Rule evaluations by the poller, by rule and result (conclusive or inconclusive)",
            evaluations.clone(),
        );
        registry.register(
            "notification_attempts",
            "Notification delivery attempts, by channel and result (delivered, retry, failed)",
            notification_attempts.clone(),
        );
        registry.register(
            "outbox_pending",
            "Notifications queued and not yet delivered or given up, by channel",
            outbox_pending.clone(),
        );
        registry.register(
            "outbox_oldest_pending_timestamp_seconds",
            "When the oldest undelivered notification was queued, by channel (0: none)",
            outbox_oldest.clone(),
        );
        registry.register(
            "poller_inconclusive_rules",
            "Polled rules whose last evaluation was inconclusive",
            inconclusive_rules.clone(),
        );
        registry.register(
            "watch_healthy",
            "1 while a Kubernetes watch is listed, not failing and fresh, by kind and scope (* = all namespaces)",
            watch_healthy.clone(),
        );
        registry.register(
            "verifications",
            "Verifications of applied actions, by result (recovered, not-recovered)",
            verifications.clone(),
        );
        let mut process = Registry::default();
        process.register_collector(Box::new(process::ProcessCollector));
        Metrics {
            registry: Arc::new(registry),
            process: Arc::new(process),
            breaker_open,
            leader,
            alerts_received,
            alerts_duplicate,
            decisions,
            actions,
            webhook_rejected,
            pending_alerts,
            evaluations,
            inconclusive_rules,
            notification_attempts,
            outbox_pending,
            outbox_oldest,
            watch_healthy,
            verifications,
            webhook_duration,
            kubernetes_duration,
            poller_query_duration,
            alert_to_action,
            alert_to_decision,
            decision_to_action,
        }
    }

    /// One webhook request, answered with `status` after `took`.
    pub fn webhook_request(&self, status: u16, took: Duration) {
        self.webhook_duration
            .get_or_create(&CodeLabel {
                code: status.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// One Kubernetes API call with this HTTP method.
    pub fn kubernetes_request(&self, method: &str, took: Duration) {
        self.kubernetes_duration
            .get_or_create(&VerbLabel {
                verb: method.to_ascii_lowercase(),
            })
            .observe(took.as_secs_f64());
    }

    /// One verification verdict: `recovered` or `not-recovered`.
    pub fn verification(&self, outcome: Outcome) {
        self.verifications
            .get_or_create(&ResultLabel {
                result: outcome.code().into(),
            })
            .inc();
    }

    /// Whether one watch is healthy (listed, not failing, fresh).
    pub fn watch_health(&self, kind: &str, scope: &str, healthy: bool) {
        self.watch_healthy
            .get_or_create(&WatchLabels {
                kind: kind.into(),
                scope: scope.into(),
            })
            .set(i64::from(healthy));
    }

    /// One delivery attempt of a notification: `delivered`, `retry` or `failed`.
    pub fn notification_attempt(&self, channel: &str, result: &str) {
        self.notification_attempts
            .get_or_create(&AttemptLabels {
                channel: channel.into(),
                result: result.into(),
            })
            .inc();
    }

    /// A channel's undelivered notifications: how many, and when the oldest was queued.
    pub fn outbox_backlog(&self, channel: &str, pending: i64, oldest: Option<jiff::Timestamp>) {
        let label = ChannelLabel {
            channel: channel.into(),
        };
        self.outbox_pending.get_or_create(&label).set(pending);
        let at = oldest.map_or(0.0, |t| t.as_millisecond() as f64 / 1000.0);
        self.outbox_oldest.get_or_create(&label).set(at);
    }

    /// An action's result was recorded `took` after its alert was received.
    pub fn action_after_alert(&self, took: Duration) {
        self.alert_to_action.observe(took.as_secs_f64());
    }

    /// An alert's decision was recorded `took` after the alert was received.
    pub fn decision_after_alert(&self, took: Duration) {
        self.alert_to_decision.observe(took.as_secs_f64());
    }

    /// An action's result was recorded `took` after its intent.
    pub fn action_after_decision(&self, took: Duration) {
        self.decision_to_action.observe(took.as_secs_f64());
    }

    /// One poller evaluation: its result, and how long its query took.
    pub fn evaluation(&self, rule: &str, conclusive: bool, took: Duration) {
        self.poller_query_duration.observe(took.as_secs_f64());
        let result = if conclusive {
            "conclusive"
        } else {
            "inconclusive"
        };
        self.evaluations
            .get_or_create(&EvaluationLabels {
                rule: rule.into(),
                result: result.into(),
            })
            .inc();
    }

    /// Tracks how many rules are currently inconclusive (+1 on a failure, -1 on recovery).
    pub fn rule_health_changed(&self, inconclusive: bool) {
        if inconclusive {
            self.inconclusive_rules.inc();
        } else {
            self.inconclusive_rules.dec();
        }
    }

    pub fn alert_received(&self, source: AlertSource, duplicate: bool) {
        let label = SourceLabel {
            source: source.as_str().into(),
        };
        self.alerts_received.get_or_create(&label).inc();
        if duplicate {
            self.alerts_duplicate.get_or_create(&label).inc();
        }
    }

    pub fn decision(&self, outcome: Outcome) {
        self.decisions
            .get_or_create(&OutcomeLabel {
                outcome: outcome.code().into(),
            })
            .inc();
    }

    pub fn action(&self, status: ActionStatus) {
        let result = match status {
            ActionStatus::Succeeded => "succeeded",
            ActionStatus::Skipped => "skipped",
            ActionStatus::Failed => "failed",
            ActionStatus::Unknown => "unknown",
        };
        self.actions
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    pub fn webhook_rejected(&self, reason: &str) {
        self.webhook_rejected
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn set_breaker_open(&self, open: bool) {
        self.breaker_open.set(i64::from(open));
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub fn set_pending(&self, n: usize) {
        self.pending_alerts
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Alerts just recorded and not yet decided: counted at once, so the gauge never reads 0
    /// while a delivery waits for the worker.
    pub fn add_pending(&self, n: usize) {
        self.pending_alerts
            .inc_by(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &self.process);
        let _ = encode_eof(&mut out);
        out
    }

    /// The exposition in the format a scraper negotiated.
    pub fn render_as(&self, format: Format) -> String {
        match format {
            Format::OpenMetrics => self.render(),
            Format::Text => openmetrics_to_text(&self.render()),
        }
    }
}

/// The Prometheus text format 0.0.4 from OpenMetrics text, which differs in only a few
/// places for the metric types used here: a counter's HELP and TYPE name its samples'
/// `_total` name, and there are no `# UNIT` or `# EOF` lines.
fn openmetrics_to_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find(|p| line.starts_with(p));
        match meta {
            Some(prefix) => {
                let rest = &line[prefix.len()..];
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_with_their_labels() {
        let m = Metrics::new();
        m.alert_received(AlertSource::Alertmanager, false);
        m.decision(Outcome::RolledBack);
        m.action(ActionStatus::Failed);
        let text = m.render();
        assert!(
            text.contains("rollbackd_alerts_received_total{source=\"alertmanager\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("rollbackd_decisions_total{outcome=\"rolled-back\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("rollbackd_actions_total{result=\"failed\"} 1"),
            "{text}"
        );
        m.evaluation("http/HighErrorRate", false, Duration::from_millis(20));
        m.rule_health_changed(true);
        let text = m.render();
        assert!(
            text.contains(
                "rollbackd_poller_evaluations_total{rule=\"http/HighErrorRate\",result=\"inconclusive\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("rollbackd_poller_inconclusive_rules 1"),
            "{text}"
        );
        m.notification_attempt("slack", "retry");
        assert!(m.render().contains(
            "rollbackd_notification_attempts_total{channel=\"slack\",result=\"retry\"} 1"
        ));
        m.watch_health("deployments", "*", true);
        assert!(
            m.render()
                .contains("rollbackd_watch_healthy{kind=\"deployments\",scope=\"*\"} 1")
        );
    }
}
