//! The post-rollout form of an alerting rule: strict in the minutes after a workload's rollout,
//! compared with the workload's own baseline, and only with enough traffic. Pure, no I/O.
//!
//! Prometheus cannot do this: it does not know when a workload rolled out. rollbackd does, so a
//! rule opts in with annotations that Prometheus keeps as plain text and rollbackd reads
//! (annotation names must be label names, hence the underscores):
//!
//! | annotation | meaning | default |
//! |---|---|---|
//! | `rollbackd_post_rollout_expr` | the value per workload, with `$window` where the range goes; opts the rule in | — |
//! | `rollbackd_post_rollout_threshold` | a value above it is bad | required |
//! | `rollbackd_post_rollout_for` | how long it must stay bad | `1m` |
//! | `rollbackd_post_rollout_baseline` | the window before the rollout to compare with (`0` turns the comparison off) | `1h` |
//! | `rollbackd_post_rollout_baseline_factor` | bad only if above this many times the baseline | `2` |
//! | `rollbackd_post_rollout_traffic_expr` | the traffic per workload in `$window` | none |
//! | `rollbackd_post_rollout_min_traffic` | below it nothing is judged | required with the traffic expression |
//! | `rollbackd_post_rollout_format` | `humanize`, `humanizePercentage` or `humanizeDuration` for the numbers in sentences | `humanize` |
//! | `rollbackd_post_rollout_measure` | what the value measures, for sentences (`errors`) | empty |
//!
//! Data model: a [`PostRollout`] is that spec; [`judge`] turns one [`Measurement`] (the value
//! since the rollout, over the baseline before it, and the traffic) into a [`Verdict`] with a
//! sentence that carries every number.

use std::time::Duration;

use jiff::Timestamp;

use super::duration;
use super::template;
use crate::core::alert::LabelSet;

/// Every annotation of the post-rollout form starts with this.
pub const PREFIX: &str = "rollbackd_post_rollout_";
/// The placeholder for the range in the expressions: `rate(x[$window])`.
pub const WINDOW: &str = "$window";
/// The annotation a post-rollout alert carries with the sentence of its evaluation.
pub use crate::core::alert::EVIDENCE_ANNOTATION;
/// The label a post-rollout alert carries: `regression` or `pre-existing`. Each verdict is its
/// own alert (its own fingerprint), so a workload judged pre-existing that then gets worse
/// raises a new alert instead of repeating a recorded one.
pub use crate::core::alert::POST_ROLLOUT_LABEL as VERDICT_LABEL;

/// How the numbers of a sentence print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueFormat {
    Humanize,
    Percentage,
    Duration,
}

impl ValueFormat {
    fn pipe(self) -> &'static str {
        match self {
            ValueFormat::Humanize => "humanize",
            ValueFormat::Percentage => "humanizePercentage",
            ValueFormat::Duration => "humanizeDuration",
        }
    }

    pub fn show(self, v: f64) -> String {
        let text = format!("{{{{ $value | {} }}}}", self.pipe());
        template::expand(&text, &LabelSet::new(), v)
    }
}

/// The traffic floor: below `min` in the window since the rollout, nothing is judged.
#[derive(Clone, Debug, PartialEq)]
pub struct TrafficFloor {
    pub expr: String,
    pub min: f64,
}

/// The post-rollout form of one rule.
#[derive(Clone, Debug, PartialEq)]
pub struct PostRollout {
    /// The value per workload, `$window` standing for the range.
    pub expr: String,
    pub threshold: f64,
    pub for_: Duration,
    /// Zero: no comparison with the time before the rollout.
    pub baseline: Duration,
    pub baseline_factor: f64,
    pub traffic: Option<TrafficFloor>,
    pub format: ValueFormat,
    /// What the value measures (`errors`), or empty.
    pub measure: String,
}

const KEYS: &[&str] = &[
    "expr",
    "threshold",
    "for",
    "baseline",
    "baseline_factor",
    "traffic_expr",
    "min_traffic",
    "format",
    "measure",
];

impl PostRollout {
    /// Takes the `rollbackd_post_rollout_*` annotations out of `annotations` (they configure
    /// rollbackd; they are no alert text) and reads them. `Ok(None)`: the rule did not opt in.
    /// Every problem is returned, one sentence each, naming the annotation.
    pub fn take(annotations: &mut LabelSet) -> Result<Option<PostRollout>, Vec<String>> {
        let mine: LabelSet = annotations
            .iter()
            .filter(|(k, _)| k.starts_with(PREFIX))
            .map(|(k, v)| (k[PREFIX.len()..].to_string(), v.trim().to_string()))
            .collect();
        annotations.retain(|k, _| !k.starts_with(PREFIX));
        if mine.is_empty() {
            return Ok(None);
        }
        let mut problems = Vec::new();
        for key in mine.keys().filter(|k| !KEYS.contains(&k.as_str())) {
            problems.push(format!(
                "unknown annotation {PREFIX}{key} (known: {})",
                KEYS.iter()
                    .map(|k| format!("{PREFIX}{k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let get = |key: &str| mine.get(key).map(String::as_str);
        let need = |key: &str, problems: &mut Vec<String>| match get(key) {
            Some(v) if !v.is_empty() => Some(v.to_string()),
            _ => {
                problems.push(format!("{PREFIX}{key} must be set"));
                None
            }
        };
        let expr = need("expr", &mut problems);
        let threshold =
            need("threshold", &mut problems).and_then(|v| number(&v, "threshold", &mut problems));
        let dur = |key: &str, default: Duration, problems: &mut Vec<String>| match get(key) {
            None => Some(default),
            Some(v) => duration::parse(v)
                .map_err(|e| problems.push(format!("{PREFIX}{key}: {e}")))
                .ok(),
        };
        let for_ = dur("for", Duration::from_secs(60), &mut problems);
        let baseline = dur("baseline", Duration::from_secs(3600), &mut problems);
        let baseline_factor = match get("baseline_factor") {
            None => Some(2.0),
            Some(v) => number(v, "baseline_factor", &mut problems).and_then(|f| {
                if f >= 1.0 {
                    Some(f)
                } else {
                    problems.push(format!(
                        "{PREFIX}baseline_factor must be at least 1, not {v}"
                    ));
                    None
                }
            }),
        };
        let traffic = match (get("traffic_expr"), get("min_traffic")) {
            (None, None) => Some(None),
            (Some(expr), Some(min)) => {
                let min = number(min, "min_traffic", &mut problems);
                window_in(expr, "traffic_expr", &mut problems);
                min.map(|min| {
                    Some(TrafficFloor {
                        expr: expr.to_string(),
                        min,
                    })
                })
            }
            (Some(_), None) => {
                problems.push(format!("{PREFIX}traffic_expr needs {PREFIX}min_traffic"));
                None
            }
            (None, Some(_)) => {
                problems.push(format!("{PREFIX}min_traffic needs {PREFIX}traffic_expr"));
                None
            }
        };
        let format = match get("format") {
            None | Some("humanize") => Some(ValueFormat::Humanize),
            Some("humanizePercentage") => Some(ValueFormat::Percentage),
            Some("humanizeDuration") => Some(ValueFormat::Duration),
            Some(other) => {
                problems.push(format!(
                    "{PREFIX}format must be humanize, humanizePercentage or humanizeDuration, not {other:?}"
                ));
                None
            }
        };
        if let Some(expr) = &expr {
            window_in(expr, "expr", &mut problems);
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        // Every part is known once no problem was found.
        let spec = (|| {
            Some(PostRollout {
                expr: expr?,
                threshold: threshold?,
                for_: for_?,
                baseline: baseline?,
                baseline_factor: baseline_factor?,
                traffic: traffic?,
                format: format?,
                measure: get("measure").unwrap_or_default().to_string(),
            })
        })();
        spec.map(Some)
            .ok_or_else(|| vec![format!("{PREFIX}* could not be read")])
    }
}

fn number(text: &str, key: &str, problems: &mut Vec<String>) -> Option<f64> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Some(v),
        _ => {
            problems.push(format!(
                "{PREFIX}{key} must be a non-negative number, not {text:?}"
            ));
            None
        }
    }
}

fn window_in(expr: &str, key: &str, problems: &mut Vec<String>) {
    if !expr.contains(WINDOW) {
        problems.push(format!(
            "{PREFIX}{key} must use {WINDOW} as its range (e.g. rate(x[{WINDOW}]))"
        ));
    }
}

/// `expr` with `$window` replaced by a whole number of seconds (at least one).
pub fn with_window(expr: &str, window: Duration) -> String {
    expr.replace(WINDOW, &format!("{}s", window.as_secs().max(1)))
}

/// What one evaluation measured for one workload.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    /// When the workload's current ReplicaSet became current.
    pub since: Timestamp,
    /// The evaluation time; `now - since` is the window.
    pub now: Timestamp,
    pub current: f64,
    /// The same expression over the baseline window ending at `since`; `None` when Prometheus
    /// had no value for the workload then (a new workload, or not scraped yet).
    pub baseline: Option<f64>,
    /// The traffic in the window; `None` when there is no floor or no value (counted as 0).
    pub traffic: Option<f64>,
}

/// What the evaluation concluded for one workload.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// At or below the threshold.
    Healthy,
    /// Too little traffic to judge a ratio.
    LowTraffic(String),
    /// Above the threshold, but it was as bad before the rollout.
    PreExisting(String),
    /// Above the threshold and worse than before the rollout.
    Regression(String),
}

impl Verdict {
    /// The value of [`VERDICT_LABEL`] and the sentence, for verdicts that become alerts.
    pub fn alert(&self) -> Option<(&'static str, &str)> {
        match self {
            Verdict::PreExisting(s) => Some(("pre-existing", s)),
            Verdict::Regression(s) => Some(("regression", s)),
            Verdict::Healthy | Verdict::LowTraffic(_) => None,
        }
    }
}

/// Judges one workload's measurement against the post-rollout form.
pub fn judge(spec: &PostRollout, m: &Measurement) -> Verdict {
    if m.current.is_nan() || m.current <= spec.threshold {
        return Verdict::Healthy;
    }
    let show = |v: f64| spec.format.show(v);
    let window = human(elapsed(m.since, m.now));
    let measure = if spec.measure.is_empty() {
        String::new()
    } else {
        format!(" {}", spec.measure)
    };
    let head = format!(
        "{}{measure} in the {window} since the rollout at {}",
        show(m.current),
        m.since.round(jiff::Unit::Second).unwrap_or(m.since)
    );
    let traffic = spec.traffic.as_ref().map(|floor| {
        let seen = m.traffic.filter(|t| !t.is_nan()).unwrap_or(0.0);
        (seen, floor.min)
    });
    let traffic_note = traffic
        .map(|(seen, min)| {
            format!(
                "; traffic since the rollout {} (minimum {})",
                template::humanize(seen),
                template::humanize(min)
            )
        })
        .unwrap_or_default();
    if let Some((seen, min)) = traffic
        && seen < min
    {
        return Verdict::LowTraffic(format!(
            "{head}, but too little traffic to judge: {} in the window, below the minimum of {}",
            template::humanize(seen),
            template::humanize(min)
        ));
    }
    let threshold = show(spec.threshold);
    let baseline_window = human(spec.baseline);
    match m.baseline.filter(|b| !b.is_nan()) {
        _ if spec.baseline.is_zero() => Verdict::Regression(format!(
            "{head}, above the post-rollout threshold of {threshold}{traffic_note}"
        )),
        None => Verdict::Regression(format!(
            "{head}, above the post-rollout threshold of {threshold}, with no value in the {baseline_window} before the rollout to compare with{traffic_note}"
        )),
        Some(b) if m.current > b * spec.baseline_factor => Verdict::Regression(format!(
            "{head}, against {} in the {baseline_window} before it: above the post-rollout threshold of {threshold} and more than {}× the baseline{traffic_note}",
            show(b),
            template::humanize(spec.baseline_factor)
        )),
        Some(b) => Verdict::PreExisting(format!(
            "{head}, against {} in the {baseline_window} before it: above the post-rollout threshold of {threshold}, but not more than {}× the baseline, so it was already there before the rollout{traffic_note}",
            show(b),
            template::humanize(spec.baseline_factor)
        )),
    }
}

/// Time from `from` to `to`, zero if `to` is earlier.
pub fn elapsed(from: Timestamp, to: Timestamp) -> Duration {
    let nanos = to.as_nanosecond() - from.as_nanosecond();
    u64::try_from(nanos).map_or(Duration::ZERO, Duration::from_nanos)
}

/// Whole seconds in humantime form (`3m 5s`, `1h`).
fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

#[cfg(test)]
#[path = "post_rollout_tests.rs"]
mod tests;
