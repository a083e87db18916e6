//! The alert state machine of one alerting rule, as Prometheus runs it; pure, no I/O.
//!
//! Data model: a [`RuleState`] holds the rule and, per alert instance, an [`Instance`] keyed
//! by the instance's label set (the series labels without `__name__`, plus the rule's labels
//! with templates expanded, plus `alertname`). Each conclusive evaluation at `now`:
//! - a series in the result with no instance becomes **pending** (`active_at = now`);
//! - a pending instance active for at least `for` becomes **firing** (`fired_at = now`); with
//!   `for: 0` that happens in the same evaluation;
//! - an instance whose series is missing: a pending one is dropped; a firing one keeps firing
//!   until it has been missing for `keep_firing_for` (the timer restarts whenever the series is
//!   back), then it is **resolved** at `now`, reported once and forgotten.
//!
//! An [`Observation::Inconclusive`] evaluation (query error, timeout) changes nothing at all,
//! and neither does a result with two series that map to one label set (Prometheus rejects
//! that evaluation too). A `NaN` sample is ignored for its series: the instance of that series,
//! if any, is neither created, advanced, kept firing nor resolved by this evaluation. `±Inf`
//! are ordinary values.
//!
//! Output ([`Step`]): every firing instance as a firing [`Alert`] (each evaluation; the pipeline
//! dedupes by fingerprint and `starts_at`) and the newly resolved ones once, with
//! `starts_at` = when it started firing (Prometheus sends `FiredAt` as `startsAt`).

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use super::prom::Sample;
use super::rules::AlertingRule;
use super::template;
use crate::core::alert::{Alert, AlertSource, AlertStatus, Fingerprint, LabelSet};

/// Where an instance is in its life; inactive instances are not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Firing,
}

/// One alert instance of the rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    pub phase: Phase,
    /// When its series first appeared (start of `for`).
    pub active_at: Timestamp,
    /// When it started firing.
    pub fired_at: Option<Timestamp>,
    /// Since when a firing instance's series has been missing (`keep_firing_for` timer).
    pub missing_since: Option<Timestamp>,
    /// Annotations expanded at the last evaluation that had its series.
    pub annotations: LabelSet,
}

/// What one evaluation gave.
#[derive(Clone, Copy, Debug)]
pub enum Observation<'a> {
    /// The query succeeded with these samples (possibly none).
    Samples(&'a [Sample]),
    /// The query failed, for this reason.
    Inconclusive(&'a str),
}

/// The alerts to hand on after a conclusive evaluation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Step {
    pub firing: Vec<Alert>,
    pub resolved: Vec<Alert>,
}

/// The result of applying an observation.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// State was updated; these are the alerts to send.
    Conclusive(Step),
    /// State was left exactly as it was.
    Inconclusive(String),
}

/// The state of one alerting rule.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleState {
    rule: AlertingRule,
    generator_url: String,
    instances: BTreeMap<LabelSet, Instance>,
}

impl RuleState {
    /// `prom_url` is the Prometheus base URL, for the alerts' generator URL.
    pub fn new(rule: AlertingRule, prom_url: &str) -> Self {
        let generator_url = generator_url(prom_url, &rule.expr);
        RuleState {
            rule,
            generator_url,
            instances: BTreeMap::new(),
        }
    }

    pub fn rule(&self) -> &AlertingRule {
        &self.rule
    }

    /// The live instances, by label set.
    pub fn instances(&self) -> &BTreeMap<LabelSet, Instance> {
        &self.instances
    }

    /// Applies one evaluation made at `now`.
    pub fn observe(&mut self, now: Timestamp, observation: Observation<'_>) -> Outcome {
        let samples = match observation {
            Observation::Samples(samples) => samples,
            Observation::Inconclusive(reason) => return Outcome::Inconclusive(reason.to_string()),
        };
        // Work out every series first, so that a bad result leaves the state untouched.
        let mut present: BTreeMap<LabelSet, LabelSet> = BTreeMap::new(); // labels -> annotations
        let mut frozen: BTreeSet<LabelSet> = BTreeSet::new(); // NaN: leave as is
        for sample in samples {
            let labels = self.alert_labels(sample);
            if present.contains_key(&labels) || frozen.contains(&labels) {
                return Outcome::Inconclusive(format!(
                    "the result has several series with the labels {labels:?} once the rule's labels are applied"
                ));
            }
            if sample.value.is_nan() {
                frozen.insert(labels);
                continue;
            }
            let annotations = self.expand_all(&self.rule.annotations, sample);
            present.insert(labels, annotations);
        }

        let mut step = Step::default();
        for (labels, annotations) in present.iter() {
            let instance = self
                .instances
                .entry(labels.clone())
                .or_insert_with(|| Instance {
                    phase: Phase::Pending,
                    active_at: now,
                    fired_at: None,
                    missing_since: None,
                    annotations: LabelSet::new(),
                });
            instance.annotations = annotations.clone();
            instance.missing_since = None;
            if instance.phase == Phase::Pending
                && elapsed(instance.active_at, now) >= self.rule.for_
            {
                instance.phase = Phase::Firing;
                instance.fired_at = Some(now);
            }
        }
        let keep_firing_for = self.rule.keep_firing_for;
        let mut gone = Vec::new();
        for (labels, instance) in self.instances.iter_mut() {
            if present.contains_key(labels) || frozen.contains(labels) {
                continue;
            }
            if instance.phase == Phase::Pending {
                gone.push((labels.clone(), None));
                continue;
            }
            let since = *instance.missing_since.get_or_insert(now);
            if elapsed(since, now) >= keep_firing_for {
                gone.push((labels.clone(), Some(now)));
            }
        }
        for (labels, resolved_at) in gone {
            if let (Some(instance), Some(at)) = (self.instances.remove(&labels), resolved_at) {
                step.resolved.push(self.alert(&labels, &instance, Some(at)));
            }
        }
        for (labels, instance) in &self.instances {
            if instance.phase == Phase::Firing {
                step.firing.push(self.alert(labels, instance, None));
            }
        }
        Outcome::Conclusive(step)
    }

    /// Series labels without `__name__`, then the rule's labels (expanded; an empty result
    /// removes the label, as in Prometheus), then `alertname`.
    pub fn alert_labels(&self, sample: &Sample) -> LabelSet {
        let mut labels = sample.metric.clone();
        labels.remove("__name__");
        for (name, value) in self.expand_all(&self.rule.labels, sample) {
            if value.is_empty() {
                labels.remove(&name);
            } else {
                labels.insert(name, value);
            }
        }
        labels.insert("alertname".into(), self.rule.alert.clone());
        labels
    }

    fn expand_all(&self, templates: &LabelSet, sample: &Sample) -> LabelSet {
        templates
            .iter()
            .map(|(k, v)| (k.clone(), template::expand(v, &sample.metric, sample.value)))
            .collect()
    }

    fn alert(
        &self,
        labels: &LabelSet,
        instance: &Instance,
        resolved_at: Option<Timestamp>,
    ) -> Alert {
        Alert {
            source: AlertSource::Prometheus,
            status: if resolved_at.is_some() {
                AlertStatus::Resolved
            } else {
                AlertStatus::Firing
            },
            labels: labels.clone(),
            annotations: instance.annotations.clone(),
            starts_at: instance.fired_at.unwrap_or(instance.active_at),
            ends_at: resolved_at,
            generator_url: self.generator_url.clone(),
            fingerprint: Fingerprint::of(labels),
            external_url: None,
        }
    }
}

/// Time from `from` to `to`, zero if `to` is earlier (a clock step back never fires early).
fn elapsed(from: Timestamp, to: Timestamp) -> std::time::Duration {
    let nanos = to.as_nanosecond() - from.as_nanosecond();
    u64::try_from(nanos).map_or(std::time::Duration::ZERO, std::time::Duration::from_nanos)
}

/// `<prom url>/graph?g0.expr=<expr>&g0.tab=1`, the link Prometheus puts in its alerts.
pub fn generator_url(prom_url: &str, expr: &str) -> String {
    format!(
        "{}/graph?g0.expr={}&g0.tab=1",
        prom_url.trim_end_matches('/'),
        query_escape(expr)
    )
}

/// Go's `url.QueryEscape`: unreserved bytes stay, space becomes `+`, the rest `%XX`.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
