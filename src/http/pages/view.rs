//! What the pages show, built from stored rows: pure functions, no I/O.

use askama::Template;
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use serde_json::Value;

use super::diff::{TemplateDiff, template_diff};
use super::svg::{self, Mark};
use super::time::{ago, offset, tidy, utc};
use crate::link::safe_link;
use crate::store::{IncidentDetail, IncidentFilter, IncidentGraph, IncidentSummary, OutboxRow};

/// Incidents per page of the list.
pub const PAGE_SIZE: usize = 50;

/// The list's filters, as the form sends them: empty fields are no filter.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ListQuery {
    /// Updated since: a duration back from now (`2h`, `7d`) or an RFC 3339 time.
    pub since: Option<String>,
    /// Opened before: a duration back from now or an RFC 3339 time.
    pub until: Option<String>,
    pub namespace: Option<String>,
    pub workload: Option<String>,
    pub outcome: Option<String>,
    /// 1-based.
    pub page: Option<String>,
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A duration back from `now` or an RFC 3339 time.
fn when(field: &str, text: &str, now: Timestamp) -> Result<Timestamp, String> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    let d = humantime::parse_duration(text).map_err(|_| {
        format!("{field} {text:?} is neither a duration (2h, 7d) nor an RFC 3339 time")
    })?;
    let d = SignedDuration::try_from(d).map_err(|e| format!("{field} {text:?}: {e}"))?;
    now.checked_sub(d)
        .map_err(|e| format!("{field} {text:?}: {e}"))
}

impl ListQuery {
    /// The store filter for this page (one more row than shown, to know whether more follow).
    pub fn filter(&self, now: Timestamp) -> Result<IncidentFilter, String> {
        let page = self.page_number()?;
        Ok(IncidentFilter {
            since: non_empty(&self.since)
                .map(|s| when("since", s, now))
                .transpose()?,
            until: non_empty(&self.until)
                .map(|s| when("until", s, now))
                .transpose()?,
            namespace: non_empty(&self.namespace).map(str::to_string),
            workload: non_empty(&self.workload).map(str::to_string),
            outcome: non_empty(&self.outcome).map(str::to_string),
            limit: Some(PAGE_SIZE as i64 + 1),
            offset: (page - 1) * PAGE_SIZE as i64,
        })
    }

    fn page_number(&self) -> Result<i64, String> {
        match non_empty(&self.page) {
            None => Ok(1),
            Some(p) => p
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=1_000_000).contains(n))
                .ok_or_else(|| format!("page {p:?} is not a page number")),
        }
    }

    /// The list URL with these filters and another page.
    fn href(&self, page: i64) -> String {
        let mut url = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("since", &self.since),
            ("until", &self.until),
            ("namespace", &self.namespace),
            ("workload", &self.workload),
            ("outcome", &self.outcome),
        ] {
            if let Some(v) = non_empty(v) {
                url.append_pair(k, v);
            }
        }
        if page > 1 {
            url.append_pair("page", &page.to_string());
        }
        let query = url.finish();
        if query.is_empty() {
            "/".into()
        } else {
            format!("/?{query}")
        }
    }
}

/// How an outcome reads at the top of a page, and its colour class.
pub struct Verdict {
    pub class: &'static str,
    pub headline: String,
}

pub fn verdict(outcome: &str) -> Verdict {
    let (class, headline) = match outcome {
        "rolled-back" => ("acted", "Rolled back".to_string()),
        "aborted" => ("acted", "Canary aborted: traffic is back on stable".into()),
        "paused-workload" => ("acted", "Paused for a human to roll back".into()),
        "gitops-suspended" => ("acted", "Argo CD sync suspended and rolled back".into()),
        "gitops-synced" => ("acted", "Synced back to the previous Git revision".into()),
        "recovered" => ("recovered", "Rolled back, and the alerts recovered".into()),
        "not-recovered" => (
            "failed",
            "Rolled back, but the alerts did not recover: workload held".into(),
        ),
        "would-roll-back" => ("dry-run", "Dry run: would have rolled back".into()),
        "failed" => ("failed", "Rollback failed".into()),
        "unsettled" => (
            "failed",
            "Result unknown until the object is read again".into(),
        ),
        "acting" => ("acting", "Acting now".into()),
        "no-workload" => (
            "unmatched",
            "No workload matched the alert: nothing done".into(),
        ),
        "ambiguous" => (
            "unmatched",
            "Several workloads matched: nothing done".into(),
        ),
        "no-recent-rollout" | "pre-existing" => (
            "unrelated",
            "No recent rollout to blame: nothing done".into(),
        ),
        other => ("refused", format!("Not rolled back: {other}")),
    };
    Verdict { class, headline }
}

#[derive(Template)]
#[template(path = "incidents.html")]
pub struct ListPage {
    pub q: ListQuery,
    pub rows: Vec<ListRow>,
    pub page: i64,
    pub prev: Option<String>,
    pub next: Option<String>,
    pub outcomes: Vec<&'static str>,
    pub filtered: bool,
}

pub struct ListRow {
    pub id: i64,
    pub ago: String,
    pub exact: String,
    pub workload: String,
    pub rollout: String,
    pub outcome: String,
    pub class: &'static str,
    pub alerts: i64,
    pub status: String,
    pub reason: String,
}

/// Outcomes offered in the list's filter.
const OUTCOMES: &[&str] = &[
    "rolled-back",
    "aborted",
    "recovered",
    "not-recovered",
    "would-roll-back",
    "failed",
    "unsettled",
    "no-workload",
    "no-recent-rollout",
    "out-of-scope",
    "cooldown",
    "breaker-open",
    "frozen",
    "notify-only",
    "no-history",
];

pub fn list_page(q: &ListQuery, list: &[IncidentSummary], more: bool, now: Timestamp) -> ListPage {
    let page = q.page_number().unwrap_or(1);
    ListPage {
        q: q.clone(),
        rows: list
            .iter()
            .map(|i| ListRow {
                id: i.id,
                ago: ago(&i.opened_at, now),
                exact: utc(&i.opened_at),
                workload: i.workload(),
                rollout: i.rollout_name.clone().unwrap_or_else(|| "-".into()),
                outcome: i.outcome.clone(),
                class: verdict(&i.outcome).class,
                alerts: i.alert_count,
                status: i.status.clone(),
                reason: tidy(&i.reason),
            })
            .collect(),
        page,
        prev: (page > 1).then(|| q.href(page - 1)),
        next: more.then(|| q.href(page + 1)),
        outcomes: OUTCOMES.to_vec(),
        filtered: [&q.since, &q.until, &q.namespace, &q.workload, &q.outcome]
            .iter()
            .any(|f| non_empty(f).is_some()),
    }
}

#[derive(Template)]
#[template(path = "incident.html")]
pub struct IncidentPage {
    pub id: i64,
    pub workload: String,
    pub verdict: Verdict,
    pub reason: String,
    pub status: String,
    pub opened: Moment,
    pub resolved: Option<Moment>,
    pub blamed: Option<String>,
    pub restored: Option<String>,
    pub graph: Option<GraphView>,
    pub graph_missing: String,
    pub alerts: Vec<AlertView>,
    pub diff: Option<TemplateDiff>,
    pub timeline: Vec<TimelineRow>,
    pub actions: Vec<ActionView>,
    pub notifications: Vec<NotificationRow>,
}

/// A time shown relative (to the rollout, or to now) with the exact UTC time on hover.
pub struct Moment {
    pub shown: String,
    pub exact: String,
}

pub struct GraphView {
    pub svg: String,
    /// "0.159 when rollbackd acted (threshold > 0.05)".
    pub at_action: Option<String>,
    pub expr: String,
    pub series: String,
    pub fetched: String,
}

pub struct Link {
    pub label: String,
    pub href: Option<String>,
    pub url: String,
}

pub struct AlertView {
    pub name: String,
    pub status: String,
    pub started: Moment,
    pub summary: Option<String>,
    pub description: Option<String>,
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
    pub links: Vec<Link>,
    pub deliveries: i64,
    pub outcome: String,
}

pub struct TimelineRow {
    pub at: Moment,
    pub kind: String,
    pub outcome: Option<String>,
    pub message: String,
}

pub struct ActionView {
    pub id: i64,
    pub kind: String,
    pub mode: &'static str,
    pub status: String,
    pub target: String,
    pub intended: Moment,
    pub detail: String,
    pub patch: Option<String>,
    pub answer: Option<String>,
    pub actor: String,
    pub version: String,
    pub config_hash: String,
    pub verification: Option<String>,
}

pub struct NotificationRow {
    pub channel: String,
    pub destination: String,
    pub event: String,
    pub status: String,
    pub attempts: i64,
    pub error: String,
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

fn string_map(v: &Value) -> Vec<(String, String)> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn link(label: &str, url: &str) -> Option<Link> {
    (!url.is_empty()).then(|| Link {
        label: label.to_string(),
        href: safe_link(url).map(str::to_string),
        url: url.to_string(),
    })
}

/// The value of the `replace /spec/template` operation of a JSON patch.
fn patched_template(patch: &Value) -> Option<&Value> {
    patch.as_array()?.iter().find_map(|op| {
        (op.get("op")?.as_str()? == "replace" && op.get("path")?.as_str()? == "/spec/template")
            .then(|| op.get("value"))
            .flatten()
    })
}

pub fn incident_page(
    d: &IncidentDetail,
    outbox: &[OutboxRow],
    graph: Option<&IncidentGraph>,
    now: Timestamp,
) -> IncidentPage {
    let s = &d.summary;
    let rollout: Option<Timestamp> = s.rollout_since.as_deref().and_then(|t| t.parse().ok());
    let opened: Option<Timestamp> = s.opened_at.parse().ok();
    let origin = rollout.or(opened);
    let moment = |t: &str| Moment {
        shown: if origin.is_some() {
            offset(t, origin)
        } else {
            ago(t, now)
        },
        exact: utc(t),
    };
    let results: Vec<_> = d.timeline.iter().filter(|e| e.kind == "result").collect();
    let acted = results
        .iter()
        .find(|e| e.data.as_ref().is_some_and(|d| d.get("patch").is_some()));
    let diff = acted.and_then(|e| {
        let data = e.data.as_ref()?;
        let from = data.get("from_template")?;
        let to = patched_template(data.get("patch")?)?;
        Some(template_diff(from, to))
    });
    let actions = d
        .actions
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let data = results.get(i).and_then(|e| e.data.as_ref());
            ActionView {
                id: a.id,
                kind: a.kind.clone(),
                mode: if a.dry_run { "dry-run" } else { "enforce" },
                status: a.status.clone(),
                target: a.target_name.clone().unwrap_or_else(|| "-".into()),
                intended: moment(&a.intended_at),
                detail: tidy(a.detail.as_deref().unwrap_or_default()),
                patch: data.and_then(|d| d.get("patch")).map(pretty),
                answer: data.and_then(|d| d.get("answer")).map(pretty),
                actor: a.actor.clone().unwrap_or_else(|| "(not recorded)".into()),
                version: a.version.clone().unwrap_or_else(|| "(not recorded)".into()),
                config_hash: a
                    .config_hash
                    .clone()
                    .unwrap_or_else(|| "(not recorded)".into()),
                verification: a.verify_result.as_ref().map(|r| {
                    format!(
                        "{r} at {}",
                        a.verified_at.as_deref().map(utc).unwrap_or_default()
                    )
                }),
            }
        })
        .collect();
    // The revision restored, with its images when the diff knows them.
    let restored = d
        .actions
        .iter()
        .rev()
        .find(|a| a.status == "succeeded")
        .and_then(|a| a.target_name.clone())
        .map(
            |name| match diff.as_ref().filter(|d| !d.images.is_empty()) {
                Some(d) => {
                    let images: Vec<&str> = d.images.iter().map(|i| i.to.as_str()).collect();
                    format!("{name} ({})", images.join(", "))
                }
                None => name,
            },
        );
    let graph_view = graph.map(|g| GraphView {
        at_action: value_at_action(g, &marks(d, rollout)),
        svg: svg::render(g, &marks(d, rollout), origin),
        expr: g.expr.clone(),
        series: g
            .series
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default(),
        fetched: utc(&g.fetched_at.to_string()),
    });
    IncidentPage {
        id: s.id,
        workload: s.workload(),
        verdict: verdict(&s.outcome),
        reason: tidy(&s.reason),
        status: s.status.clone(),
        opened: Moment {
            shown: ago(&s.opened_at, now),
            exact: utc(&s.opened_at),
        },
        resolved: s.resolved_at.as_deref().map(|t| Moment {
            shown: ago(t, now),
            exact: utc(t),
        }),
        blamed: s.rollout_text().map(|t| tidy(&t)),
        restored,
        graph: graph_view,
        graph_missing: if d.actions.iter().any(|a| a.status == "succeeded") {
            "No graph stored: Prometheus is not configured, or was not reachable after the action."
                .into()
        } else {
            "No graph: rollbackd fetches one only after it acted.".into()
        },
        alerts: d
            .alerts
            .iter()
            .map(|a| {
                let annotations = string_map(&a.annotations);
                let pick = |k: &str| {
                    annotations
                        .iter()
                        .find(|(key, _)| key == k)
                        .map(|(_, v)| v.clone())
                };
                let mut links: Vec<Link> = [
                    link("source", &a.generator_url),
                    a.external_url
                        .as_deref()
                        .and_then(|u| link("Alertmanager", u)),
                ]
                .into_iter()
                .flatten()
                .collect();
                for (k, v) in &annotations {
                    if k.ends_with("_url") {
                        links.extend(link(k, v));
                    }
                }
                AlertView {
                    name: a.alertname.clone(),
                    status: a.status.clone(),
                    started: moment(&a.starts_at),
                    summary: pick("summary"),
                    description: pick("description"),
                    labels: string_map(&a.labels)
                        .into_iter()
                        .filter(|(k, _)| k != "alertname")
                        .collect(),
                    annotations: annotations
                        .iter()
                        .filter(|(k, _)| {
                            k != "summary" && k != "description" && !k.ends_with("_url")
                        })
                        .cloned()
                        .collect(),
                    links,
                    deliveries: a.deliveries,
                    outcome: a.outcome.clone().unwrap_or_else(|| "-".into()),
                }
            })
            .collect(),
        diff,
        timeline: d
            .timeline
            .iter()
            .map(|e| TimelineRow {
                at: moment(&e.at),
                kind: e.kind.clone(),
                outcome: e.outcome.clone(),
                message: tidy(&e.message),
            })
            .collect(),
        actions,
        notifications: outbox
            .iter()
            .map(|o| NotificationRow {
                channel: o.channel.clone(),
                destination: o.destination.clone(),
                event: o.event.clone(),
                status: o.status.as_str().to_string(),
                attempts: o.attempts,
                error: o.last_error.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

/// The value of the last sample at or before the action, with the threshold it crossed.
fn value_at_action(g: &IncidentGraph, marks: &[Mark]) -> Option<String> {
    let action = marks.iter().find(|m| m.kind == "action")?;
    let at = action.at.as_millisecond() as f64 / 1000.0;
    let (_, value) = g.samples.iter().rev().find(|(t, _)| *t <= at)?;
    let threshold = match (&g.comparison, g.threshold) {
        (Some(c), Some(t)) => format!(" (threshold {c} {t})"),
        _ => String::new(),
    };
    Some(format!("{value:.4} when rollbackd acted{threshold}"))
}

/// The rollout, the first alert, the action and the recovery, where known.
fn marks(d: &IncidentDetail, rollout: Option<Timestamp>) -> Vec<Mark> {
    let mut marks = Vec::new();
    if let Some(at) = rollout {
        marks.push(Mark {
            kind: "rollout",
            at,
            label: "rollout".into(),
        });
    }
    if let Some(at) = d
        .alerts
        .iter()
        .filter_map(|a| a.starts_at.parse::<Timestamp>().ok())
        .min()
    {
        marks.push(Mark {
            kind: "alert",
            at,
            label: "alert".into(),
        });
    }
    let action = d
        .timeline
        .iter()
        .find(|e| e.kind == "result" && e.data.as_ref().is_some_and(|d| d.get("patch").is_some()));
    if let Some(at) = action.and_then(|e| e.at.parse::<Timestamp>().ok()) {
        marks.push(Mark {
            kind: "action",
            at,
            label: "action".into(),
        });
    }
    let recovered = d
        .timeline
        .iter()
        .find(|e| e.outcome.as_deref() == Some("recovered"))
        .map(|e| e.at.as_str())
        .or(d.summary.resolved_at.as_deref());
    if let Some(at) = recovered.and_then(|t| t.parse::<Timestamp>().ok()) {
        marks.push(Mark {
            kind: "recovery",
            at,
            label: "recovery".into(),
        });
    }
    marks
}
