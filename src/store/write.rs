//! Writes: recording alerts on receipt, decisions with their intent, and action results.
//!
//! Each method is one transaction, so an incident never shows a decision without the timeline
//! entries that explain it, and a notification about it is queued exactly when it is recorded.

use jiff::Timestamp;
use serde_json::{Value, json};
use sqlx::Row;

use super::outbox::{NewMessage, enqueue};
use super::{Result, Store, json_text, ts_text};
use crate::core::alert::{Alert, AlertKey, AlertStatus};
use crate::core::engine::{Decision, Outcome, PastAction, describe};
use crate::core::undo::RevisionRef;

/// What happened to one alert of a delivery.
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    pub alert_id: i64,
    pub key: AlertKey,
    /// First delivery of this (fingerprint, startsAt).
    pub fresh: bool,
    /// A resolved alert that closed an open alert with this delivery.
    pub resolved_now: bool,
}

/// Where a decision was recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    pub incident_id: i64,
    /// The intended action, written before the API is called.
    pub action_id: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionStatus {
    Succeeded,
    Skipped,
    Failed,
}

impl ActionStatus {
    fn as_str(self) -> &'static str {
        match self {
            ActionStatus::Succeeded => "succeeded",
            ActionStatus::Skipped => "skipped",
            ActionStatus::Failed => "failed",
        }
    }
}

/// The executor's report of one action.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionResult {
    pub status: ActionStatus,
    pub outcome: Outcome,
    pub message: String,
    pub target: Option<RevisionRef>,
    /// Details for the timeline: the patch sent, the API's answers.
    pub data: Value,
}

/// The outcome an incident and its alert show while an action is under way.
pub const ACTING: &str = "acting";

/// Outcomes that a later, lesser decision must not hide on the incident.
const SIGNIFICANT: &str = "('rolled-back', 'aborted', 'would-roll-back', 'failed', 'acting')";

impl Store {
    /// Records a delivery of alerts in one transaction. Duplicates only bump a counter; a
    /// resolved alert closes its firing twin and, with it, the incident once all are resolved.
    pub async fn record_alerts(&self, alerts: &[Alert], now: Timestamp) -> Result<Vec<Received>> {
        let mut tx = self.write_tx().await?;
        let now_text = ts_text(now);
        let mut out = Vec::with_capacity(alerts.len());
        for alert in alerts {
            let fp = alert.fingerprint.to_string();
            let starts = ts_text(alert.starts_at);
            let existing = sqlx::query(
                "SELECT id, status, incident_id FROM alerts WHERE fingerprint = $1 AND starts_at = $2",
            )
            .bind(&fp)
            .bind(&starts)
            .fetch_optional(&mut *tx)
            .await?;
            let resolved = alert.status == AlertStatus::Resolved;
            let ends = alert.ends_at.map(ts_text);
            let Some(row) = existing else {
                // A resolved alert never seen firing needs no decision: it is recorded as such.
                let (outcome, reason, decided) = if resolved {
                    (
                        Some(Outcome::NotFiring.code()),
                        Some("first seen already resolved; nothing to decide"),
                        Some(now_text.as_str()),
                    )
                } else {
                    (None, None, None)
                };
                let id: i64 = sqlx::query(
                    "INSERT INTO alerts (fingerprint, starts_at, source, alertname, status, labels,
                        annotations, generator_url, external_url, ends_at, received_at,
                        last_received_at, outcome, reason, decided_at, resolved_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13, $14, $15)
                     RETURNING id",
                )
                .bind(&fp)
                .bind(&starts)
                .bind(alert.source.as_str())
                .bind(alert.name())
                .bind(alert.status.as_str())
                .bind(json_text(&alert.labels))
                .bind(json_text(&alert.annotations))
                .bind(&alert.generator_url)
                .bind(&alert.external_url)
                .bind(&ends)
                .bind(&now_text)
                .bind(outcome)
                .bind(reason)
                .bind(decided)
                .bind(resolved.then_some(now_text.as_str()))
                .fetch_one(&mut *tx)
                .await?
                .try_get("id")?;
                out.push(Received {
                    alert_id: id,
                    key: alert.key(),
                    fresh: true,
                    resolved_now: false,
                });
                continue;
            };
            let id: i64 = row.try_get("id")?;
            let was_firing = row.try_get::<String, _>("status")? == "firing";
            let incident_id: Option<i64> = row.try_get("incident_id")?;
            sqlx::query(
                "UPDATE alerts SET deliveries = deliveries + 1, last_received_at = $1 WHERE id = $2",
            )
            .bind(&now_text)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            let resolved_now = resolved && was_firing;
            if resolved_now {
                sqlx::query(
                    "UPDATE alerts SET status = 'resolved', ends_at = $1, resolved_at = $2 WHERE id = $3",
                )
                .bind(&ends)
                .bind(&now_text)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                if let Some(incident_id) = incident_id {
                    let message = format!(
                        "{} resolved (ended {})",
                        alert.name(),
                        ends.as_deref().unwrap_or("now")
                    );
                    append(
                        &mut tx,
                        incident_id,
                        now,
                        "resolved",
                        None,
                        &message,
                        &json!({"alert_id": id}),
                    )
                    .await?;
                    let open: i64 = sqlx::query(
                        "SELECT COUNT(*) AS n FROM alerts WHERE incident_id = $1 AND status = 'firing'",
                    )
                    .bind(incident_id)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("n")?;
                    if open == 0 {
                        sqlx::query(
                            "UPDATE incidents SET status = 'resolved', resolved_at = $1, updated_at = $1 WHERE id = $2",
                        )
                        .bind(&now_text)
                        .bind(incident_id)
                        .execute(&mut *tx)
                        .await?;
                        append(
                            &mut tx,
                            incident_id,
                            now,
                            "resolved",
                            None,
                            "all alerts of this incident are resolved",
                            &Value::Null,
                        )
                        .await?;
                    }
                }
            }
            out.push(Received {
                alert_id: id,
                key: alert.key(),
                fresh: false,
                resolved_now,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Actions that count against acting again: intended or succeeded, not dry-run.
    pub async fn past_actions(&self) -> Result<Vec<PastAction>> {
        let rows = sqlx::query(
            "SELECT incident_id, workload_uid, blamed_uid, status, target_uid, intended_at
             FROM actions WHERE dry_run = 0 AND status IN ('intended', 'succeeded') ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let succeeded = r.try_get::<String, _>("status")? == "succeeded";
                Ok(PastAction {
                    incident_id: r.try_get("incident_id")?,
                    workload_uid: r.try_get("workload_uid")?,
                    blamed_uid: r.try_get("blamed_uid")?,
                    target_uid: if succeeded {
                        r.try_get("target_uid")?
                    } else {
                        None
                    },
                    at: super::parse_ts(&r.try_get::<String, _>("intended_at")?)?,
                })
            })
            .collect()
    }

    /// Records a decision for an alert: joins or opens its incident, appends the received,
    /// correlated and decision entries, and writes the intent of any action, all at once.
    /// Returns `None` if the alert was already decided (a duplicate that raced).
    pub async fn record_decision(
        &self,
        alert_id: i64,
        alert: &Alert,
        decision: &Decision,
        now: Timestamp,
    ) -> Result<Option<Recorded>> {
        self.record_decision_and_notify(alert_id, alert, decision, now, |_| Vec::new())
            .await
    }

    /// As [`Store::record_decision`], and queues the messages `notify` builds for the
    /// incident (given its id) in the same transaction: they exist if and only if the decision
    /// does.
    pub async fn record_decision_and_notify(
        &self,
        alert_id: i64,
        alert: &Alert,
        decision: &Decision,
        now: Timestamp,
        notify: impl FnOnce(i64) -> Vec<NewMessage>,
    ) -> Result<Option<Recorded>> {
        let mut tx = self.write_tx().await?;
        let now_text = ts_text(now);
        // Until the executor reports, an incident with an action under way says so.
        let shown = if decision.command.is_some() {
            ACTING
        } else {
            decision.outcome.code()
        };
        let (key, workload, rollout) = match (&decision.workload, &decision.rollout) {
            (Some(w), Some(r)) => (
                format!(
                    "{}/{}/{}@{}",
                    w.kind.to_lowercase(),
                    w.namespace,
                    w.name,
                    r.revision.uid
                ),
                Some(w),
                Some(r),
            ),
            (Some(w), None) => (
                format!("{}/{}/{}@-", w.kind.to_lowercase(), w.namespace, w.name),
                Some(w),
                None,
            ),
            _ => (format!("unmatched/{}", alert.fingerprint), None, None),
        };
        let incident_id: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO incidents (incident_key, namespace, workload_kind, workload_name, workload_uid,
                rollout_name, rollout_uid, rollout_revision, rollout_image, rollout_since,
                opened_at, updated_at, status, outcome, reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, 'open', $12, $13)
             ON CONFLICT (incident_key) DO UPDATE SET
                updated_at = excluded.updated_at, status = 'open', resolved_at = NULL,
                outcome = CASE WHEN incidents.outcome IN {SIGNIFICANT} THEN incidents.outcome ELSE excluded.outcome END,
                reason = CASE WHEN incidents.outcome IN {SIGNIFICANT} THEN incidents.reason ELSE excluded.reason END
             RETURNING id"
        )))
        .bind(&key)
        .bind(workload.map(|w| &w.namespace))
        .bind(workload.map(|w| &w.kind))
        .bind(workload.map(|w| &w.name))
        .bind(workload.map(|w| &w.uid))
        .bind(rollout.map(|r| &r.revision.name))
        .bind(rollout.map(|r| &r.revision.uid))
        .bind(rollout.map(|r| r.revision.revision))
        .bind(rollout.and_then(|r| r.revision.image.as_ref()))
        .bind(rollout.map(|r| ts_text(r.since)))
        .bind(&now_text)
        .bind(shown)
        .bind(&decision.reason)
        .fetch_one(&mut *tx)
        .await?
        .try_get("id")?;

        let claimed = sqlx::query(
            "UPDATE alerts SET incident_id = $1, outcome = $2, reason = $3, decided_at = $4
             WHERE id = $5 AND decided_at IS NULL",
        )
        .bind(incident_id)
        .bind(shown)
        .bind(&decision.reason)
        .bind(&now_text)
        .bind(alert_id)
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(None);
        }

        let labels: Vec<String> = alert
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        append(
            &mut tx,
            incident_id,
            now,
            "received",
            None,
            &format!(
                "{} {} from {} (started {}): {{{}}}",
                alert.name(),
                alert.status.as_str(),
                alert.source,
                alert.starts_at,
                labels.join(", ")
            ),
            &json!({"alert_id": alert_id, "fingerprint": alert.fingerprint.to_string(),
                    "generator_url": alert.generator_url, "annotations": alert.annotations}),
        )
        .await?;
        let correlated = match (workload, rollout) {
            (Some(w), Some(r)) => format!(
                "correlated with {w}, current {} since {}",
                describe(&r.revision),
                r.since
            ),
            (Some(w), None) => format!("correlated with {w}"),
            _ => "no workload found for this alert".to_string(),
        };
        append(
            &mut tx,
            incident_id,
            now,
            "correlated",
            None,
            &correlated,
            &Value::Null,
        )
        .await?;
        append(
            &mut tx,
            incident_id,
            now,
            "decision",
            Some(decision.outcome),
            &decision.reason,
            &Value::Null,
        )
        .await?;

        let mut action_id = None;
        if let Some(command) = &decision.command {
            let intent = command.intent();
            let id: i64 = sqlx::query(
                "INSERT INTO actions (incident_id, alert_id, kind, namespace, workload_name,
                    workload_uid, blamed_uid, blamed_name, target_uid, target_name, dry_run,
                    intended_at, status)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'intended')
                 RETURNING id",
            )
            .bind(incident_id)
            .bind(alert_id)
            .bind(intent.kind)
            .bind(&intent.namespace)
            .bind(&intent.name)
            .bind(&intent.workload_uid)
            .bind(&intent.blamed_key)
            .bind(&intent.blamed_name)
            .bind(&intent.target_key)
            .bind(&intent.target_name)
            .bind(intent.dry_run)
            .bind(&now_text)
            .fetch_one(&mut *tx)
            .await?
            .try_get("id")?;
            append(
                &mut tx,
                incident_id,
                now,
                "action",
                None,
                &format!("intent: {}", intent.text),
                &json!({"action_id": id}),
            )
            .await?;
            action_id = Some(id);
        }
        enqueue(&mut tx, incident_id, &notify(incident_id), now).await?;
        tx.commit().await?;
        Ok(Some(Recorded {
            incident_id,
            action_id,
        }))
    }

    /// Completes an action and records its final outcome on the alert and the incident.
    pub async fn record_result(
        &self,
        action_id: i64,
        recorded: &Recorded,
        alert_id: i64,
        result: &ActionResult,
        now: Timestamp,
    ) -> Result<()> {
        self.record_result_and_notify(action_id, recorded, alert_id, result, &[], now)
            .await
    }

    /// As [`Store::record_result`], and queues `messages` in the same transaction.
    pub async fn record_result_and_notify(
        &self,
        action_id: i64,
        recorded: &Recorded,
        alert_id: i64,
        result: &ActionResult,
        messages: &[NewMessage],
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let now_text = ts_text(now);
        sqlx::query(
            "UPDATE actions SET status = $1, finished_at = $2, target_uid = COALESCE($3, target_uid),
                target_name = COALESCE($4, target_name), detail = $5 WHERE id = $6",
        )
        .bind(result.status.as_str())
        .bind(&now_text)
        .bind(result.target.as_ref().map(|t| &t.uid))
        .bind(result.target.as_ref().map(|t| &t.name))
        .bind(&result.message)
        .bind(action_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE alerts SET outcome = $1, reason = $2 WHERE id = $3")
            .bind(result.outcome.code())
            .bind(&result.message)
            .bind(alert_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE incidents SET outcome = $1, reason = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(result.outcome.code())
        .bind(&result.message)
        .bind(&now_text)
        .bind(recorded.incident_id)
        .execute(&mut *tx)
        .await?;
        append(
            &mut tx,
            recorded.incident_id,
            now,
            "result",
            Some(result.outcome),
            &result.message,
            &result.data,
        )
        .await?;
        enqueue(&mut tx, recorded.incident_id, messages, now).await?;
        tx.commit().await?;
        Ok(())
    }
}

pub(super) async fn append(
    tx: &mut sqlx::SqliteConnection,
    incident_id: i64,
    at: Timestamp,
    kind: &str,
    outcome: Option<Outcome>,
    message: &str,
    data: &Value,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO timeline (incident_id, at, kind, outcome, message, data) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(incident_id)
    .bind(ts_text(at))
    .bind(kind)
    .bind(outcome.map(Outcome::code))
    .bind(message)
    .bind((!data.is_null()).then(|| data.to_string()))
    .execute(tx)
    .await?;
    Ok(())
}
