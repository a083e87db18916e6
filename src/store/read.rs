//! Reads: what the pipeline resumes from, and what reviews (CLI, API, pages) show.

use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Result, Store, StoreError, parse_ts, ts_text};
use crate::core::alert::{Alert, AlertSource, AlertStatus, Fingerprint, LabelSet};

/// One incident as listed.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct IncidentSummary {
    pub id: i64,
    pub key: String,
    pub namespace: Option<String>,
    pub workload_kind: Option<String>,
    pub workload_name: Option<String>,
    pub rollout_name: Option<String>,
    pub rollout_revision: Option<i64>,
    pub rollout_image: Option<String>,
    pub rollout_since: Option<String>,
    pub opened_at: String,
    pub updated_at: String,
    pub status: String,
    pub outcome: String,
    pub reason: String,
    pub resolved_at: Option<String>,
    pub alert_count: i64,
}

impl IncidentSummary {
    /// The change blamed, for humans: "web-5d8f, revision 3 (nginx:3.0), current since
    /// 2026-11-22 01:54:22"; a traffic state (revision 0, no image) is shown by its name alone.
    pub fn rollout_text(&self) -> Option<String> {
        let name = self.rollout_name.as_ref()?;
        let since = self
            .rollout_since
            .as_deref()
            .map(short_time)
            .unwrap_or_else(|| "?".into());
        Some(match self.rollout_revision.filter(|r| *r > 0) {
            Some(revision) => format!(
                "{name}, revision {revision} ({}), current since {since}",
                self.rollout_image.as_deref().unwrap_or("?")
            ),
            None => format!("{name}, since {since}"),
        })
    }

    /// "deployment default/web", or "(no workload)".
    pub fn workload(&self) -> String {
        match (&self.workload_kind, &self.namespace, &self.workload_name) {
            (Some(kind), Some(ns), Some(name)) => format!("{} {ns}/{name}", kind.to_lowercase()),
            _ => "(no workload)".to_string(),
        }
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AlertRow {
    pub id: i64,
    pub alertname: String,
    pub fingerprint: String,
    pub source: String,
    pub status: String,
    pub starts_at: String,
    pub ends_at: Option<String>,
    pub labels: Value,
    pub annotations: Value,
    pub generator_url: String,
    pub external_url: Option<String>,
    pub received_at: String,
    pub deliveries: i64,
    pub outcome: Option<String>,
    pub reason: Option<String>,
    pub resolved_at: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TimelineEntry {
    pub at: String,
    pub kind: String,
    pub outcome: Option<String>,
    pub message: String,
    pub data: Option<Value>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ActionRow {
    pub id: i64,
    pub kind: String,
    pub target_name: Option<String>,
    pub dry_run: bool,
    pub status: String,
    pub intended_at: String,
    pub finished_at: Option<String>,
    pub detail: Option<String>,
    /// `recovered` or `not-recovered` once verification has judged the action.
    pub verify_result: Option<String>,
    pub verified_at: Option<String>,
    /// Who acted and under what authority (see [`super::AuditStamp`]).
    pub actor: Option<String>,
    pub version: Option<String>,
    pub config_hash: Option<String>,
    pub policy: Option<Value>,
}

/// An incident with everything a review needs.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct IncidentDetail {
    #[serde(flatten)]
    pub summary: IncidentSummary,
    pub alerts: Vec<AlertRow>,
    pub actions: Vec<ActionRow>,
    pub timeline: Vec<TimelineEntry>,
}

/// Which incidents to list. Every field narrows; the default lists all, newest first.
#[derive(Clone, Debug, Default)]
pub struct IncidentFilter {
    /// Updated at or after this time.
    pub since: Option<Timestamp>,
    /// Opened before this time.
    pub until: Option<Timestamp>,
    pub namespace: Option<String>,
    /// The workload's name (any kind).
    pub workload: Option<String>,
    /// The incident's outcome code, e.g. `rolled-back`.
    pub outcome: Option<String>,
    /// At most this many (after `offset`); `None`: all.
    pub limit: Option<i64>,
    pub offset: i64,
}

const SUMMARY_COLUMNS: &str = "i.id, i.incident_key, i.namespace, i.workload_kind, i.workload_name,
    i.rollout_name, i.rollout_revision, i.rollout_image, i.rollout_since, i.opened_at, i.updated_at,
    i.status, i.outcome, i.reason, i.resolved_at,
    (SELECT COUNT(*) FROM alerts a WHERE a.incident_id = i.id) AS alert_count";

impl Store {
    /// Alerts received but not yet decided, oldest first: what the pipeline works through,
    /// also after a restart.
    pub async fn undecided_alerts(&self) -> Result<Vec<(i64, Alert)>> {
        let rows = sqlx::query(
            "SELECT id, fingerprint, starts_at, source, status, labels, annotations,
                    generator_url, external_url, ends_at
             FROM alerts WHERE decided_at IS NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, alert_from_row(r)?)))
            .collect()
    }

    pub async fn list_incidents(&self, filter: &IncidentFilter) -> Result<Vec<IncidentSummary>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SUMMARY_COLUMNS} FROM incidents i
             WHERE ($1 IS NULL OR i.updated_at >= $1) AND ($2 IS NULL OR i.namespace = $2)
               AND ($3 IS NULL OR i.opened_at < $3) AND ($4 IS NULL OR i.workload_name = $4)
               AND ($5 IS NULL OR i.outcome = $5)
             ORDER BY i.id DESC
             LIMIT $6 OFFSET $7"
        )))
        .bind(filter.since.map(ts_text))
        .bind(&filter.namespace)
        .bind(filter.until.map(ts_text))
        .bind(&filter.workload)
        .bind(&filter.outcome)
        .bind(filter.limit.unwrap_or(i64::MAX))
        .bind(filter.offset.max(0))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(summary_from_row).collect()
    }

    pub async fn incident(&self, id: i64) -> Result<Option<IncidentDetail>> {
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SUMMARY_COLUMNS} FROM incidents i WHERE i.id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let summary = summary_from_row(&row)?;
        let alerts = sqlx::query(
            "SELECT id, alertname, fingerprint, source, status, starts_at, ends_at, labels,
                    annotations, generator_url, external_url, received_at, deliveries, outcome,
                    reason, resolved_at
             FROM alerts WHERE incident_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(AlertRow {
                id: r.try_get("id")?,
                alertname: r.try_get("alertname")?,
                fingerprint: r.try_get("fingerprint")?,
                source: r.try_get("source")?,
                status: r.try_get("status")?,
                starts_at: r.try_get("starts_at")?,
                ends_at: r.try_get("ends_at")?,
                labels: json_column(r, "labels")?,
                annotations: json_column(r, "annotations")?,
                generator_url: r.try_get("generator_url")?,
                external_url: r.try_get("external_url")?,
                received_at: r.try_get("received_at")?,
                deliveries: r.try_get("deliveries")?,
                outcome: r.try_get("outcome")?,
                reason: r.try_get("reason")?,
                resolved_at: r.try_get("resolved_at")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
        let actions = sqlx::query(
            "SELECT id, kind, target_name, dry_run, status, intended_at, finished_at, detail,
                    verify_result, verified_at, actor, version, config_hash, policy
             FROM actions WHERE incident_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(ActionRow {
                id: r.try_get("id")?,
                kind: r.try_get("kind")?,
                target_name: r.try_get("target_name")?,
                dry_run: r.try_get::<i64, _>("dry_run")? == 1,
                status: r.try_get("status")?,
                intended_at: r.try_get("intended_at")?,
                finished_at: r.try_get("finished_at")?,
                detail: r.try_get("detail")?,
                verify_result: r.try_get("verify_result")?,
                verified_at: r.try_get("verified_at")?,
                actor: r.try_get("actor")?,
                version: r.try_get("version")?,
                config_hash: r.try_get("config_hash")?,
                policy: r
                    .try_get::<Option<String>, _>("policy")?
                    .and_then(|p| serde_json::from_str(&p).ok()),
            })
        })
        .collect::<Result<Vec<_>>>()?;
        let timeline = sqlx::query(
            "SELECT at, kind, outcome, message, data FROM timeline WHERE incident_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            let data: Option<String> = r.try_get("data")?;
            Ok(TimelineEntry {
                at: r.try_get("at")?,
                kind: r.try_get("kind")?,
                outcome: r.try_get("outcome")?,
                message: r.try_get("message")?,
                data: data.and_then(|d| serde_json::from_str(&d).ok()),
            })
        })
        .collect::<Result<Vec<_>>>()?;
        Ok(Some(IncidentDetail {
            summary,
            alerts,
            actions,
            timeline,
        }))
    }

    /// Number of alert rows; a malformed delivery must leave this unchanged.
    pub async fn alert_count(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM alerts")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }
}

/// "2026-11-22T01:54:22.123456789Z" → "2026-11-22 01:54:22"
pub fn short_time(t: &str) -> String {
    t.get(..19)
        .map_or_else(|| t.to_string(), |s| s.replace('T', " "))
}

fn summary_from_row(r: &AnyRow) -> Result<IncidentSummary> {
    Ok(IncidentSummary {
        id: r.try_get("id")?,
        key: r.try_get("incident_key")?,
        namespace: r.try_get("namespace")?,
        workload_kind: r.try_get("workload_kind")?,
        workload_name: r.try_get("workload_name")?,
        rollout_name: r.try_get("rollout_name")?,
        rollout_revision: r.try_get("rollout_revision")?,
        rollout_image: r.try_get("rollout_image")?,
        rollout_since: r.try_get("rollout_since")?,
        opened_at: r.try_get("opened_at")?,
        updated_at: r.try_get("updated_at")?,
        status: r.try_get("status")?,
        outcome: r.try_get("outcome")?,
        reason: r.try_get("reason")?,
        resolved_at: r.try_get("resolved_at")?,
        alert_count: r.try_get("alert_count")?,
    })
}

fn json_column(r: &AnyRow, name: &str) -> Result<Value> {
    let text: String = r.try_get(name)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("{name}: {e}")))
}

pub(super) fn alert_from_row(r: &AnyRow) -> Result<Alert> {
    let labels: LabelSet = serde_json::from_value(json_column(r, "labels")?)
        .map_err(|e| StoreError::Corrupt(format!("labels: {e}")))?;
    let annotations: LabelSet = serde_json::from_value(json_column(r, "annotations")?)
        .map_err(|e| StoreError::Corrupt(format!("annotations: {e}")))?;
    let fp: String = r.try_get("fingerprint")?;
    let source = match r.try_get::<String, _>("source")?.as_str() {
        "prometheus" => AlertSource::Prometheus,
        _ => AlertSource::Alertmanager,
    };
    let status = match r.try_get::<String, _>("status")?.as_str() {
        "resolved" => AlertStatus::Resolved,
        _ => AlertStatus::Firing,
    };
    let ends_at: Option<String> = r.try_get("ends_at")?;
    Ok(Alert {
        source,
        status,
        fingerprint: Fingerprint::parse(&fp)
            .ok_or_else(|| StoreError::Corrupt(format!("fingerprint {fp:?}")))?,
        labels,
        annotations,
        starts_at: parse_ts(&r.try_get::<String, _>("starts_at")?)?,
        ends_at: ends_at.as_deref().map(parse_ts).transpose()?,
        generator_url: r.try_get("generator_url")?,
        external_url: r.try_get("external_url")?,
    })
}
