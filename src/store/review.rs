//! What a review keeps besides the timeline: the metric graph of an incident, the audit stamp
//! on every action, retention of whole incidents, and the export for log pipelines.
//!
//! Data model (`migrations/0007_review.sql`): one `incident_graphs` row per incident, replaced
//! when fetched again; four audit columns on `actions`; `incidents.retiring`, whose trigger
//! deletes an incident with everything that belongs to it in one statement.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row;

use super::{Result, Store, StoreError, json_text, parse_ts, ts_text};

/// Who acts and under what authority, written on every action row this process records.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AuditStamp {
    /// The Kubernetes identity rollbackd acts as: "user admin (context lab, kubeconfig …)"
    /// or "serviceaccount rollbackd/rollbackd".
    pub actor: String,
    /// rollbackd's version.
    pub version: String,
    /// SHA-256 of the effective configuration (secrets excluded), hex.
    pub config_hash: String,
    /// The policy values that allowed the action.
    pub policy: Value,
}

/// The triggering rule's expression over the incident, as stored with it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentGraph {
    pub alertname: String,
    /// The expression graphed: the rule's, without its comparison.
    pub expr: String,
    /// The comparison and threshold the rule applies, when it has one.
    pub comparison: Option<String>,
    pub threshold: Option<f64>,
    /// The labels of the series drawn.
    pub series: Value,
    pub step_seconds: f64,
    pub start_at: Timestamp,
    pub end_at: Timestamp,
    /// (unix seconds, value), in time order; NaN and infinities are left out.
    pub samples: Vec<(f64, f64)>,
    pub fetched_at: Timestamp,
}

impl Store {
    /// The stamp written on actions from now on.
    pub fn with_audit(mut self, stamp: AuditStamp) -> Store {
        self.audit = Some(std::sync::Arc::new(stamp));
        self
    }

    pub(super) fn audit_stamp(&self) -> Option<&AuditStamp> {
        self.audit.as_deref()
    }

    /// Stores (or replaces) the graph of an incident.
    pub async fn save_graph(&self, incident_id: i64, g: &IncidentGraph) -> Result<()> {
        let samples: Vec<[f64; 2]> = g
            .samples
            .iter()
            .filter(|(t, v)| t.is_finite() && v.is_finite())
            .map(|&(t, v)| [t, v])
            .collect();
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO incident_graphs (incident_id, alertname, expr, comparison, threshold,
                series, step_seconds, start_at, end_at, samples, fetched_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (incident_id) DO UPDATE SET alertname = excluded.alertname,
                expr = excluded.expr, comparison = excluded.comparison,
                threshold = excluded.threshold, series = excluded.series,
                step_seconds = excluded.step_seconds, start_at = excluded.start_at,
                end_at = excluded.end_at, samples = excluded.samples,
                fetched_at = excluded.fetched_at",
        )
        .bind(incident_id)
        .bind(&g.alertname)
        .bind(&g.expr)
        .bind(&g.comparison)
        .bind(g.threshold.filter(|t| t.is_finite()))
        .bind(json_text(&g.series))
        .bind(g.step_seconds)
        .bind(ts_text(g.start_at))
        .bind(ts_text(g.end_at))
        .bind(json_text(&samples))
        .bind(ts_text(g.fetched_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// The stored graph of an incident, if one was fetched.
    pub async fn graph(&self, incident_id: i64) -> Result<Option<IncidentGraph>> {
        let Some(r) = sqlx::query(
            "SELECT alertname, expr, comparison, threshold, series, step_seconds, start_at,
                    end_at, samples, fetched_at
             FROM incident_graphs WHERE incident_id = $1",
        )
        .bind(incident_id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let corrupt =
            |what: &str, e: serde_json::Error| StoreError::Corrupt(format!("{what}: {e}"));
        let samples: Vec<[f64; 2]> = serde_json::from_str(&r.try_get::<String, _>("samples")?)
            .map_err(|e| corrupt("samples", e))?;
        Ok(Some(IncidentGraph {
            alertname: r.try_get("alertname")?,
            expr: r.try_get("expr")?,
            comparison: r.try_get("comparison")?,
            threshold: r.try_get("threshold")?,
            series: serde_json::from_str(&r.try_get::<String, _>("series")?)
                .map_err(|e| corrupt("series", e))?,
            step_seconds: r.try_get("step_seconds")?,
            start_at: parse_ts(&r.try_get::<String, _>("start_at")?)?,
            end_at: parse_ts(&r.try_get::<String, _>("end_at")?)?,
            samples: samples.into_iter().map(|[t, v]| (t, v)).collect(),
            fetched_at: parse_ts(&r.try_get::<String, _>("fetched_at")?)?,
        }))
    }

    /// Deletes every incident last updated before `cutoff` that is over: resolved or not, but
    /// neither held, nor with an action unsettled or under verification, nor with a message
    /// still to send. Each goes whole (alerts, actions, timeline, messages, graph) in one
    /// statement; returns the ids deleted.
    pub async fn retire_before(&self, cutoff: Timestamp) -> Result<Vec<i64>> {
        let mut tx = self.write_tx().await?;
        let ids: Vec<i64> = sqlx::query(
            "SELECT i.id FROM incidents i
             WHERE i.updated_at < $1 AND i.held = 0
               AND NOT EXISTS (SELECT 1 FROM actions ac WHERE ac.incident_id = i.id
                    AND (ac.status IN ('intended', 'unknown')
                         OR (ac.verify_until IS NOT NULL AND ac.verified_at IS NULL)))
               AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.incident_id = i.id AND o.status = 'pending')
               AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.incident_id = i.id AND a.decided_at IS NULL)
             ORDER BY i.id",
        )
        .bind(ts_text(cutoff))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<std::result::Result<_, _>>()?;
        for id in &ids {
            sqlx::query("UPDATE incidents SET retiring = 1 WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Timeline entries recorded at or after `since`, oldest first, each as one JSON object
    /// with its incident's workload and, on `action` and `result` entries, the action's audit:
    /// what `rollbackd incidents export` writes, one per line.
    pub async fn export_since(&self, since: Timestamp) -> Result<Vec<Value>> {
        let rows = sqlx::query(
            "SELECT t.id, t.incident_id, t.at, t.kind, t.outcome, t.message, t.data,
                    i.namespace, i.workload_kind, i.workload_name, i.rollout_name,
                    i.outcome AS incident_outcome, i.status AS incident_status
             FROM timeline t JOIN incidents i ON i.id = t.incident_id
             WHERE t.at >= $1 ORDER BY t.id",
        )
        .bind(ts_text(since))
        .fetch_all(&self.pool)
        .await?;
        let actions = sqlx::query(
            "SELECT ac.id, ac.incident_id, ac.kind, ac.dry_run, ac.status, ac.actor, ac.version,
                    ac.config_hash, ac.policy
             FROM actions ac WHERE ac.incident_id IN
                (SELECT DISTINCT incident_id FROM timeline WHERE at >= $1)
             ORDER BY ac.id",
        )
        .bind(ts_text(since))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let incident_id: i64 = r.try_get("incident_id")?;
            let kind: String = r.try_get("kind")?;
            let data: Option<Value> = r
                .try_get::<Option<String>, _>("data")?
                .and_then(|d| serde_json::from_str(&d).ok());
            let mut line = json!({
                "at": r.try_get::<String, _>("at")?,
                "incident": incident_id,
                "entry": r.try_get::<i64, _>("id")?,
                "kind": kind,
                "outcome": r.try_get::<Option<String>, _>("outcome")?,
                "message": r.try_get::<String, _>("message")?,
                "namespace": r.try_get::<Option<String>, _>("namespace")?,
                "workload_kind": r.try_get::<Option<String>, _>("workload_kind")?,
                "workload": r.try_get::<Option<String>, _>("workload_name")?,
                "rollout": r.try_get::<Option<String>, _>("rollout_name")?,
                "incident_outcome": r.try_get::<String, _>("incident_outcome")?,
                "incident_status": r.try_get::<String, _>("incident_status")?,
                "data": data,
            });
            if kind == "action" || kind == "result" {
                // The entry names its action when it has one; else the incident's last.
                let wanted = data
                    .as_ref()
                    .and_then(|d| d.get("action_id"))
                    .and_then(Value::as_i64);
                let action = actions
                    .iter()
                    .filter(|a| a.try_get::<i64, _>("incident_id").ok() == Some(incident_id))
                    .rfind(|a| wanted.is_none() || a.try_get::<i64, _>("id").ok() == wanted);
                if let Some(a) = action {
                    line["audit"] = json!({
                        "action": a.try_get::<i64, _>("id")?,
                        "action_kind": a.try_get::<String, _>("kind")?,
                        "mode": if a.try_get::<i64, _>("dry_run")? == 1 { "dry-run" } else { "enforce" },
                        "actor": a.try_get::<Option<String>, _>("actor")?,
                        "version": a.try_get::<Option<String>, _>("version")?,
                        "config_hash": a.try_get::<Option<String>, _>("config_hash")?,
                        "policy": a.try_get::<Option<String>, _>("policy")?
                            .and_then(|p| serde_json::from_str::<Value>(&p).ok()),
                    });
                }
            }
            out.push(line);
        }
        Ok(out)
    }
}
