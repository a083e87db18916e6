//! The metric graph of an incident: the triggering rule's expression from before the rollout
//! to after the action, read from Prometheus with `query_range` and stored with the incident,
//! so that its page still draws it after Prometheus has dropped the samples.
//!
//! The expression comes from the alert's `generatorURL` (`g0.expr`, which Prometheus and
//! rollbackd's poller both write). Its comparison with a constant (`… > 0.05`) is taken off, so
//! that the graph shows the value on both sides of the threshold, and the constant becomes the
//! threshold line. The series drawn is the one whose labels the alert carries.
//!
//! Fetching happens in the background after an action's result is recorded (and again once the
//! action is verified), never on the rollback's path; a failure is logged and changes nothing.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use tracing::{debug, warn};

use crate::core::alert::LabelSet;
use crate::poller::PromClient;
use crate::poller::prom::RangeSeries;
use crate::store::{IncidentDetail, IncidentGraph, Store};

/// Where graphs come from, and how long after an action they are read.
#[derive(Clone, Debug)]
pub struct GraphSource {
    pub client: PromClient,
    /// How long after the action's result the graph is fetched (`prometheus.graph_after`).
    pub after: Duration,
}

/// Points aimed for across the graph; the step follows from the span.
const POINTS: f64 = 240.0;
/// Time shown before the rollout: half the time since, within these bounds.
const LEAD_MIN: Duration = Duration::from_secs(30);
const LEAD_MAX: Duration = Duration::from_secs(30 * 60);

/// A rule expression split into what to graph and the threshold it compares with.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    pub value_expr: String,
    pub comparison: Option<String>,
    pub threshold: Option<f64>,
}

/// Takes every top-level comparison with a number off `expr` (`(a / b) > 0.05 or (c) > 0.05`
/// → `(a / b) or (c)`, threshold `> 0.05`, the first one's). Comparisons inside parentheses,
/// brackets, braces or strings stay as they are, and so does one between two expressions.
/// A guard is not the value: `(ratio > 0.05 and on (ns) traffic >= 100)` graphs `ratio`, the
/// left side of the first top-level `and` or `unless`, once brackets around the whole
/// expression are taken off; each side of a top-level `or` is read so, and they are joined
/// again as `(a) or (b)`.
pub fn split_threshold(expr: &str) -> Split {
    let whole = unwrap_brackets(expr);
    let mut branches = Vec::new();
    let mut rest = whole.as_str();
    while let Some(at) = top_level_keyword(rest, &["or"]) {
        branches.push(&rest[..at]);
        rest = &rest[at + 2..];
    }
    branches.push(rest);
    let mut splits = branches.iter().map(|branch| {
        let mut split = split_comparisons(&without_guard(branch));
        split.value_expr = unwrap_brackets(&split.value_expr);
        split
    });
    let first = splits.next().unwrap_or(Split {
        value_expr: String::new(),
        comparison: None,
        threshold: None,
    });
    let others: Vec<Split> = splits.collect();
    if others.is_empty() {
        return first;
    }
    let value_expr = std::iter::once(&first)
        .chain(&others)
        .map(|s| format!("({})", s.value_expr))
        .collect::<Vec<_>>()
        .join(" or ");
    let (comparison, threshold) = std::iter::once(&first)
        .chain(&others)
        .find(|s| s.threshold.is_some())
        .map_or((None, None), |s| (s.comparison.clone(), s.threshold));
    Split {
        value_expr,
        comparison,
        threshold,
    }
}

/// `expr` without brackets around all of it, and without a top-level `and …` or `unless …`.
fn without_guard(expr: &str) -> String {
    let mut e = unwrap_brackets(expr);
    if let Some(at) = top_level_keyword(&e, &["and", "unless"]) {
        e = unwrap_brackets(&e[..at]);
    }
    e
}

/// `expr` trimmed, with brackets that enclose all of it taken off (repeatedly).
fn unwrap_brackets(expr: &str) -> String {
    let mut e = expr.trim();
    while e.starts_with('(') && e.ends_with(')') {
        let mut depth = 0i32;
        let closes_at_end = scan_top_level(e, |i, c, d| {
            depth = d;
            // The bracket opened first closes before the end: the brackets do not enclose all.
            (c == b')' && depth == 0 && i + 1 < e.len()).then_some(())
        })
        .is_none();
        if !closes_at_end {
            break;
        }
        e = e[1..e.len() - 1].trim();
    }
    e.to_string()
}

/// Where the first of `keywords` stands at the top level of `expr`, as a whole word.
fn top_level_keyword(expr: &str, keywords: &[&str]) -> Option<usize> {
    let bytes = expr.as_bytes();
    scan_top_level(expr, |i, _c, depth| {
        if depth != 0 || (i > 0 && !matches!(bytes[i - 1], b' ' | b'\n' | b'\t' | b')')) {
            return None;
        }
        keywords.iter().find_map(|k| {
            let after = bytes.get(i + k.len()).copied();
            (expr[i..].starts_with(k) && matches!(after, Some(b' ' | b'\n' | b'\t' | b'(')))
                .then_some(i)
        })
    })
}

/// Calls `at(index, byte, depth after it)` for every byte outside strings and comments, until
/// it returns something.
fn scan_top_level<T>(expr: &str, mut at: impl FnMut(usize, u8, i32) -> Option<T>) -> Option<T> {
    let bytes = expr.as_bytes();
    let (mut depth, mut quote, mut i) = (0i32, None::<u8>, 0);
    while i < bytes.len() {
        let c = bytes[i];
        if let Some(q) = quote {
            if c == b'\\' {
                i += 2;
                continue;
            }
            if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        match c {
            b'"' | b'\'' | b'`' => quote = Some(c),
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            _ => {}
        }
        if let Some(found) = at(i, c, depth) {
            return Some(found);
        }
        i += 1;
    }
    None
}

fn split_comparisons(expr: &str) -> Split {
    let bytes = expr.as_bytes();
    // (start, end, operator, constant) of each top-level comparison with a number.
    let mut cuts = Vec::new();
    let mut next = 0;
    scan_top_level(expr, |i, _, depth| {
        if depth == 0
            && i >= next
            && let Some((op, len)) = operator_at(&bytes[i..])
        {
            next = i + len;
            if let Some((value, used)) = constant_after(&expr[i + len..]) {
                next += used;
                cuts.push((i, next, op, value));
            }
        }
        None::<()>
    });
    let mut out = String::with_capacity(expr.len());
    let mut copied = 0;
    for (start, end, ..) in &cuts {
        out.push_str(expr[copied..*start].trim_end());
        copied = *end;
    }
    out.push_str(&expr[copied..]);
    Split {
        value_expr: out.trim().to_string(),
        comparison: cuts.first().map(|c| c.2.to_string()),
        threshold: cuts.first().map(|c| c.3),
    }
}

fn operator_at(s: &[u8]) -> Option<(&'static str, usize)> {
    match s {
        [b'=', b'=', ..] => Some(("==", 2)),
        [b'!', b'=', ..] => Some(("!=", 2)),
        [b'>', b'=', ..] => Some((">=", 2)),
        [b'<', b'=', ..] => Some(("<=", 2)),
        [b'>', ..] => Some((">", 1)),
        [b'<', ..] => Some(("<", 1)),
        _ => None,
    }
}

/// A number (after an optional `bool`) at the start of `s`, and how many bytes it took,
/// provided that nothing but an operator keyword or the end follows it.
fn constant_after(s: &str) -> Option<(f64, usize)> {
    let trimmed = s.trim_start();
    let mut used = s.len() - trimmed.len();
    let mut rest = trimmed;
    if let Some(after) = rest.strip_prefix("bool")
        && after.starts_with(char::is_whitespace)
    {
        let t = after.trim_start();
        used += rest.len() - t.len();
        rest = t;
    }
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-')))
        .unwrap_or(rest.len());
    let token = &rest[..end];
    let value: f64 = match token.to_ascii_lowercase().as_str() {
        "inf" | "+inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        t => t.parse().ok()?,
    };
    let after = rest[end..].trim_start();
    let ends = after.is_empty()
        || after.starts_with(')')
        || ["or ", "or\n", "and ", "and\n", "unless "]
            .iter()
            .any(|k| after.starts_with(k));
    ends.then_some((value, used + end))
}

/// The expression in a `generatorURL` (`…/graph?g0.expr=…`), if it has one.
pub fn expr_of(generator_url: &str) -> Option<String> {
    let url = url::Url::parse(generator_url).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == "g0.expr")
        .map(|(_, v)| v.into_owned())
        .filter(|e| !e.trim().is_empty())
}

/// The series the alert is about: one whose every label the alert carries with the same value;
/// failing that, the only series there is.
pub fn pick_series<'a>(series: &'a [RangeSeries], alert: &LabelSet) -> Option<&'a RangeSeries> {
    series
        .iter()
        .find(|s| {
            s.metric
                .iter()
                .all(|(k, v)| k == "__name__" || alert.get(k) == Some(v))
        })
        .or_else(|| (series.len() == 1).then(|| &series[0]))
}

impl GraphSource {
    /// Fetches the graph of an incident and stores it, in the background.
    pub fn capture_later(&self, store: Store, incident_id: i64, delay: Duration) {
        let source = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Err(e) = source.capture(&store, incident_id).await {
                warn!(incident = incident_id, error = %e, "could not fetch the incident's graph");
            }
        });
    }

    /// Reads the incident, asks Prometheus for its first alert's expression from before the
    /// rollout until now, and stores the series the alert is about.
    pub async fn capture(&self, store: &Store, incident_id: i64) -> anyhow::Result<bool> {
        let Some(detail) = store.incident(incident_id).await? else {
            return Ok(false);
        };
        let Some(plan) = plan(&detail, Timestamp::now()) else {
            debug!(
                incident = incident_id,
                "no expression or no rollout time to graph"
            );
            return Ok(false);
        };
        let series = self
            .client
            .query_range(&plan.split.value_expr, plan.start, plan.end, plan.step)
            .await?;
        let Some(chosen) = pick_series(&series, &plan.labels) else {
            debug!(
                incident = incident_id,
                series = series.len(),
                "no series of the expression matches the alert"
            );
            return Ok(false);
        };
        let graph = IncidentGraph {
            alertname: plan.alertname,
            expr: plan.split.value_expr,
            comparison: plan.split.comparison,
            threshold: plan.split.threshold,
            series: json!(chosen.metric),
            step_seconds: plan.step.as_secs_f64(),
            start_at: plan.start,
            end_at: plan.end,
            samples: chosen.values.clone(),
            fetched_at: Timestamp::now(),
        };
        store.save_graph(incident_id, &graph).await?;
        Ok(true)
    }
}

/// What to ask Prometheus for an incident.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub alertname: String,
    pub labels: LabelSet,
    pub split: Split,
    pub start: Timestamp,
    pub end: Timestamp,
    pub step: Duration,
}

/// From a lead before the rollout (half the time since, 30 s to 30 min) to `now`.
pub fn plan(detail: &IncidentDetail, now: Timestamp) -> Option<Plan> {
    let alert = detail
        .alerts
        .iter()
        .find(|a| expr_of(&a.generator_url).is_some())?;
    let expr = expr_of(&alert.generator_url)?;
    let rollout: Timestamp = detail.summary.rollout_since.as_deref()?.parse().ok()?;
    let span = now
        .duration_since(rollout)
        .max(SignedDuration::from_secs(1));
    let lead = (span / 2)
        .max(SignedDuration::try_from(LEAD_MIN).ok()?)
        .min(SignedDuration::try_from(LEAD_MAX).ok()?);
    let start = rollout.checked_sub(lead).ok()?;
    let total = now.duration_since(start).as_secs_f64();
    let step = Duration::from_secs_f64((total / POINTS).max(1.0).round());
    let labels: LabelSet = serde_json::from_value(alert.labels.clone()).unwrap_or_default();
    Some(Plan {
        alertname: alert.alertname.clone(),
        labels,
        split: split_threshold(&expr),
        start,
        end: now,
        step,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comparison_with_a_constant_becomes_the_threshold() {
        let s = split_threshold("up == 0");
        assert_eq!(s.value_expr, "up");
        assert_eq!(s.comparison.as_deref(), Some("=="));
        assert_eq!(s.threshold, Some(0.0));
    }

    #[test]
    fn every_top_level_comparison_goes_and_the_first_is_kept() {
        let s = split_threshold(
            "(\n sum(rate(x{code=~\"5..\"}[5m])) / sum(rate(x[5m]))\n) > 0.05\nor\n(\n sum(a) / sum(b)\n) > 0.05\n",
        );
        assert_eq!(
            s.value_expr,
            "(sum(rate(x{code=~\"5..\"}[5m])) / sum(rate(x[5m]))) or (sum(a) / sum(b))"
        );
        assert_eq!(s.comparison.as_deref(), Some(">"));
        assert_eq!(s.threshold, Some(0.05));
    }

    #[test]
    fn comparisons_inside_brackets_strings_or_between_series_stay() {
        for expr in [
            "sum(x > 1)",
            "x{le=\">1\"}",
            "a > b",
            "a > on(instance) b",
            "histogram_quantile(0.95, rate(h[5m])) > 1 * scalar(y)",
        ] {
            let s = split_threshold(expr);
            assert_eq!(s.value_expr, expr, "{expr}");
            assert_eq!(s.threshold, None, "{expr}");
        }
    }

    #[test]
    fn a_guard_is_left_out_and_enclosing_brackets_taken_off() {
        let s = split_threshold(
            "(\n  (\n    sum by (ns) (rate(x{code=~\"5..\"}[5m])) / sum by (ns) (rate(x[5m]))\n  ) > 0.05\n  and on (ns)\n  sum by (ns) (increase(x[5m])) >= 100\n)\n",
        );
        assert_eq!(
            s.value_expr,
            "sum by (ns) (rate(x{code=~\"5..\"}[5m])) / sum by (ns) (rate(x[5m]))"
        );
        assert_eq!(s.comparison.as_deref(), Some(">"));
        assert_eq!(s.threshold, Some(0.05));
        let s = split_threshold("up == 0 unless on (job) maintenance == 1");
        assert_eq!(s.value_expr, "up");
        assert_eq!(s.threshold, Some(0.0));
        // Brackets that do not enclose all of it stay; `or` keeps both sides.
        let s = split_threshold("(a) / (b) > 1 or (c) > 1");
        assert_eq!(s.value_expr, "((a) / (b)) or (c)");
        let s = split_threshold("sum(land) > 2");
        assert_eq!(s.value_expr, "sum(land)");
    }

    #[test]
    fn bool_and_exponents_are_read() {
        let s = split_threshold("rate(x[1m]) >= bool 1e3");
        assert_eq!(s.value_expr, "rate(x[1m])");
        assert_eq!(s.comparison.as_deref(), Some(">="));
        assert_eq!(s.threshold, Some(1000.0));
    }

    #[test]
    fn the_expression_comes_from_the_generator_url() {
        let url = crate::poller::state::generator_url("http://p:9090", "up == 0");
        assert_eq!(expr_of(&url).as_deref(), Some("up == 0"));
        assert_eq!(expr_of("http://p:9090/graph"), None);
        assert_eq!(expr_of(""), None);
    }

    fn detail(rollout_since: Option<&str>, generator_url: &str) -> IncidentDetail {
        let summary = crate::store::IncidentSummary {
            id: 1,
            key: "deployment/default/web@uid".into(),
            namespace: Some("default".into()),
            workload_kind: Some("Deployment".into()),
            workload_name: Some("web".into()),
            rollout_name: Some("web-2".into()),
            rollout_revision: Some(2),
            rollout_image: Some("web:2".into()),
            rollout_since: rollout_since.map(str::to_string),
            opened_at: "2026-12-01T00:10:00Z".into(),
            updated_at: "2026-12-01T00:10:00Z".into(),
            status: "open".into(),
            outcome: "rolled-back".into(),
            reason: String::new(),
            resolved_at: None,
            alert_count: 1,
        };
        let alert = crate::store::AlertRow {
            id: 1,
            alertname: "HighErrorRate".into(),
            fingerprint: "0123456789abcdef".into(),
            source: "alertmanager".into(),
            status: "firing".into(),
            starts_at: "2026-12-01T00:05:00Z".into(),
            ends_at: None,
            labels: json!({"alertname": "HighErrorRate", "app": "web"}),
            annotations: json!({}),
            generator_url: generator_url.into(),
            external_url: None,
            received_at: "2026-12-01T00:05:01Z".into(),
            deliveries: 1,
            outcome: None,
            reason: None,
            resolved_at: None,
        };
        IncidentDetail {
            summary,
            alerts: vec![alert],
            actions: Vec::new(),
            timeline: Vec::new(),
        }
    }

    #[test]
    fn the_range_starts_before_the_rollout_and_ends_now() {
        let url = crate::poller::state::generator_url("http://p:9090", "errors > 0.05");
        let now: Timestamp = "2026-12-01T00:20:00Z".parse().unwrap();
        let p = plan(&detail(Some("2026-12-01T00:00:00Z"), &url), now).expect("a plan");
        assert_eq!(p.split.value_expr, "errors");
        assert_eq!(
            p.start.to_string(),
            "2026-11-30T23:50:00Z",
            "half the span before"
        );
        assert_eq!(p.end, now);
        assert_eq!(
            p.step,
            Duration::from_secs(8),
            "about 240 points over 30 minutes"
        );
        assert_eq!(p.labels.get("app").map(String::as_str), Some("web"));
        let short = plan(&detail(Some("2026-12-01T00:19:50Z"), &url), now).expect("a plan");
        assert_eq!(
            short.start.to_string(),
            "2026-12-01T00:19:20Z",
            "at least 30 s before"
        );
        assert_eq!(short.step, Duration::from_secs(1));
        assert!(plan(&detail(None, &url), now).is_none(), "no rollout time");
        assert!(
            plan(&detail(Some("2026-12-01T00:00:00Z"), "http://p/graph"), now).is_none(),
            "no expression"
        );
    }

    #[test]
    fn the_series_the_alert_carries_is_picked() {
        let mk = |app: &str| RangeSeries {
            metric: [("app".to_string(), app.to_string())].into(),
            values: vec![(1.0, 0.5)],
        };
        let series = [mk("a"), mk("b")];
        let alert: LabelSet = [
            ("app".to_string(), "b".to_string()),
            ("alertname".to_string(), "X".to_string()),
        ]
        .into();
        assert_eq!(pick_series(&series, &alert), Some(&series[1]));
        let other: LabelSet = [("app".to_string(), "c".to_string())].into();
        assert_eq!(pick_series(&series, &other), None);
    }
}
#[cfg(test)]
mod shipped_rule_tests {
    #[test]
    fn the_shipped_error_rule_gives_its_threshold() {
        let rules = include_str!("../rules/rollbackd.yml");
        let start = rules.find("alert: HighErrorRate").expect("rule");
        let expr_at = rules[start..].find("expr: |").expect("expr") + start + "expr: |".len();
        let body: Vec<&str> = rules[expr_at..]
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with("          "))
            .collect();
        let expr = body.join("\n");
        let s = super::split_threshold(&expr);
        assert_eq!(s.threshold, Some(0.05), "{expr}\n=> {s:?}");
    }
}
