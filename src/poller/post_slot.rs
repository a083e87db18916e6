//! Running a rule's post-rollout form: the queries per recent rollout, the verdicts, and the two
//! alert state machines they feed.
//!
//! Data model: a [`PostSlot`] holds the rule's [`PostRollout`] spec and two [`RuleState`]s, one
//! per verdict that becomes an alert (`regression`, `pre-existing`), each with the post-rollout
//! `for` and the rule's labels plus `rollbackd_post_rollout="<verdict>"`. Each evaluation
//! ([`PostSlot::measure`]) asks Prometheus, for every workload rolled out within the window:
//! the expression over the window since its rollout (at the evaluation time), the same
//! expression over the baseline window ending at the rollout (evaluated *at* the rollout time,
//! so the pod-owner join sees the pods of that time; asked once per rollout, then kept), and
//! the traffic since the rollout. Only
//! series that correlation resolves to that workload count. Any failed query makes the whole
//! evaluation inconclusive (nothing advances).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::post_rollout::{
    EVIDENCE_ANNOTATION, Measurement, PostRollout, VERDICT_LABEL, Verdict, elapsed, judge,
    with_window,
};
use super::prom::{PromClient, PromError, Sample};
use super::rollouts::RolloutView;
use super::rules::AlertingRule;
use super::state::{Observation, Outcome, RuleState};
use crate::core::alert::{Alert, LabelSet};
use crate::core::workload::{RecentRollout, WorkloadKey};

/// One series' value since the rollout and what it was judged.
#[derive(Clone, Debug, PartialEq)]
pub struct Judged {
    pub workload: WorkloadKey,
    pub sample: Sample,
    pub verdict: Verdict,
}

/// The post-rollout form of one rule and its alert states.
pub struct PostSlot {
    spec: PostRollout,
    regression: RuleState,
    pre_existing: RuleState,
    /// The baseline answer per rollout: it describes the past, so it is asked once.
    baselines: Mutex<HashMap<(WorkloadKey, Timestamp), Vec<Sample>>>,
}

impl PostSlot {
    /// `None` when the rule has no post-rollout form. `window` is the post-rollout window; the
    /// alerts' generator URL shows the expression over it, compared with the threshold.
    pub fn new(rule: &AlertingRule, prom_url: &str, window: Duration) -> Option<PostSlot> {
        let spec = rule.post_rollout.clone()?;
        let state = |verdict: &str| {
            let mut form = rule.clone();
            // The link shows the comparison too, as Prometheus's own alerts do, so that a
            // reader (and the incident's graph) sees the post-rollout threshold.
            form.expr = format!("({}) > {}", with_window(&spec.expr, window), spec.threshold);
            form.for_ = spec.for_;
            form.post_rollout = None;
            form.labels.insert(VERDICT_LABEL.into(), verdict.into());
            RuleState::new(form, prom_url)
        };
        Some(PostSlot {
            regression: state("regression"),
            pre_existing: state("pre-existing"),
            spec,
            baselines: Mutex::default(),
        })
    }

    /// Queries Prometheus for every rollout in `recent` and judges each workload's series.
    pub async fn measure(
        &self,
        client: &PromClient,
        view: &dyn RolloutView,
        recent: &[RecentRollout],
        at: Timestamp,
    ) -> Result<Vec<Judged>, PromError> {
        let spec = &self.spec;
        let known: HashMap<_, _> = {
            let mut cache = self.cache();
            cache.retain(|(workload, since), _| {
                recent
                    .iter()
                    .any(|r| r.workload == *workload && r.since == *since)
            });
            cache.clone()
        };
        let known = &known;
        let per_rollout = recent.iter().map(|r| async move {
            let window = elapsed(r.since, at);
            let current_expr = with_window(&spec.expr, window);
            let current = client.query(&current_expr, at);
            let baseline = async {
                if spec.baseline.is_zero() {
                    return Ok(Vec::new());
                }
                if let Some(samples) = known.get(&(r.workload.clone(), r.since)) {
                    return Ok(samples.clone());
                }
                let expr = with_window(&spec.expr, spec.baseline);
                let samples = client.query(&expr, r.since).await?.samples;
                self.cache()
                    .insert((r.workload.clone(), r.since), samples.clone());
                Ok(samples)
            };
            let traffic = async {
                match &spec.traffic {
                    Some(floor) => client
                        .query(&with_window(&floor.expr, window), at)
                        .await
                        .map(Some),
                    None => Ok(None),
                }
            };
            let (current, baseline, traffic) = tokio::join!(current, baseline, traffic);
            Ok::<_, PromError>((r, current?, baseline?, traffic?))
        });
        let mut judged = Vec::new();
        for answer in futures::future::join_all(per_rollout).await {
            let (rollout, current, baseline, traffic) = answer?;
            let of_workload = |samples: Vec<Sample>| -> Vec<Sample> {
                samples
                    .into_iter()
                    .filter(|s| view.workload_of(&s.metric).as_ref() == Some(&rollout.workload))
                    .collect()
            };
            let baseline = of_workload(baseline);
            let traffic = traffic.map(|t| of_workload(t.samples)).unwrap_or_default();
            for sample in of_workload(current.samples) {
                let m = Measurement {
                    since: rollout.since,
                    now: at,
                    current: sample.value,
                    baseline: matching(&baseline, &sample.metric),
                    traffic: matching(&traffic, &sample.metric),
                };
                judged.push(Judged {
                    workload: rollout.workload.clone(),
                    verdict: judge(spec, &m),
                    sample,
                });
            }
        }
        Ok(judged)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<(WorkloadKey, Timestamp), Vec<Sample>>> {
        self.baselines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Feeds one conclusive evaluation's verdicts to the two states; returns their alerts,
    /// each with the evaluation's sentence in `rollbackd_evidence`.
    pub fn observe(&mut self, now: Timestamp, judged: &[Judged]) -> Vec<Alert> {
        let mut alerts = Vec::new();
        for (name, state) in [
            ("regression", &mut self.regression),
            ("pre-existing", &mut self.pre_existing),
        ] {
            let mut samples = Vec::new();
            let mut evidence: BTreeMap<LabelSet, String> = BTreeMap::new();
            for j in judged {
                if let Some((verdict, sentence)) = j.verdict.alert()
                    && verdict == name
                {
                    evidence.insert(state.alert_labels(&j.sample), sentence.to_string());
                    samples.push(j.sample.clone());
                }
            }
            if let Outcome::Conclusive(step) = state.observe(now, Observation::Samples(&samples)) {
                for mut alert in step.firing.into_iter().chain(step.resolved) {
                    if let Some(sentence) = evidence.get(&alert.labels) {
                        alert
                            .annotations
                            .insert(EVIDENCE_ANNOTATION.into(), sentence.clone());
                    }
                    alerts.push(alert);
                }
            }
        }
        alerts
    }
}

/// The value of the series with the same labels, else the only series there is (a baseline
/// summed the same way but from other pods); `None` when that is not clear.
fn matching(samples: &[Sample], metric: &LabelSet) -> Option<f64> {
    let strip = |m: &LabelSet| {
        let mut m = m.clone();
        m.remove("__name__");
        m
    };
    let wanted = strip(metric);
    samples
        .iter()
        .find(|s| strip(&s.metric) == wanted)
        .or(match samples {
            [only] => Some(only),
            _ => None,
        })
        .map(|s| s.value)
}

/// The start of the window: workloads rolled out at or after `now - window` are judged.
pub fn window_start(now: Timestamp, window: Duration) -> Timestamp {
    now.checked_sub(SignedDuration::try_from(window).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poller::rules::parse_rules_str;
    use std::path::Path;

    const RULE: &str = r#"
groups:
  - name: http
    rules:
      - alert: HighErrorRate
        expr: error_ratio > 0.05
        for: 5m
        labels:
          severity: critical
        annotations:
          summary: "{{ $labels.deployment }} answers {{ $value | humanizePercentage }} with 5xx"
          rollbackd_post_rollout_expr: error_ratio_over($window)
          rollbackd_post_rollout_threshold: "0.01"
          rollbackd_post_rollout_for: 1m
"#;

    fn mk_post() -> PostSlot {
        let loaded = parse_rules_str(Path::new("rules.yml"), RULE).expect("valid");
        PostSlot::new(
            &loaded.groups[0].rules[0],
            "http://prometheus:9090",
            Duration::from_secs(900),
        )
        .expect("opted in")
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("valid test timestamp")
    }

    fn mk_judged(deployment: &str, value: f64, verdict: Verdict) -> Judged {
        Judged {
            workload: WorkloadKey::deployment("shop", deployment),
            sample: Sample {
                metric: [
                    ("namespace".to_string(), "shop".to_string()),
                    ("deployment".to_string(), deployment.to_string()),
                ]
                .into(),
                value,
            },
            verdict,
        }
    }

    #[test]
    fn each_verdict_fires_after_the_post_rollout_for_as_its_own_alert_with_its_evidence() {
        let mut post = mk_post();
        let judged = [
            mk_judged("web", 0.02, Verdict::Regression("2% against 0.1%".into())),
            mk_judged("cart", 0.02, Verdict::PreExisting("2% against 2%".into())),
            mk_judged("tiny", 0.33, Verdict::LowTraffic("3 requests".into())),
        ];
        for secs in [0, 15, 30, 45] {
            assert!(
                post.observe(t(secs), &judged).is_empty(),
                "pending at {secs}s"
            );
        }
        let mut alerts = post.observe(t(60), &judged);
        alerts.sort_by(|a, b| a.labels["deployment"].cmp(&b.labels["deployment"]));
        assert_eq!(alerts.len(), 2, "{alerts:?}");
        let (cart, web) = (&alerts[0], &alerts[1]);
        assert_eq!(web.labels["rollbackd_post_rollout"], "regression");
        assert_eq!(web.labels["severity"], "critical");
        assert_eq!(web.annotations["rollbackd_evidence"], "2% against 0.1%");
        assert_eq!(web.annotations["summary"], "web answers 2% with 5xx");
        assert!(!web.annotations.contains_key("rollbackd_post_rollout_expr"));
        assert_eq!(web.starts_at, t(60));
        assert!(
            web.generator_url
                .ends_with("/graph?g0.expr=%28error_ratio_over%28900s%29%29+%3E+0.01&g0.tab=1"),
            "{}",
            web.generator_url
        );
        assert_eq!(cart.labels["rollbackd_post_rollout"], "pre-existing");
        assert_eq!(cart.annotations["rollbackd_evidence"], "2% against 2%");
        // Out of the window (no verdicts): both resolve.
        let resolved = post.observe(t(75), &[]);
        assert_eq!(resolved.len(), 2);
        assert!(resolved.iter().all(|a| a.ends_at == Some(t(75))));
    }
}
