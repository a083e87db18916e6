//! Verification bookkeeping: which applied actions are being followed and until when, their
//! verdicts, the hold a `not-recovered` verdict puts on the workload, and its acknowledgement.
//!
//! Data model (`migrations/0006_verify.sql`): on `actions`, `verify_until` (set once the action
//! is recorded as applied), `verified_at` and `verify_result`; on `incidents`, `held` (1 while
//! not-recovered and not acknowledged), `acked_at` and `acked_by`. Every verdict and every
//! acknowledgement is also an append-only timeline entry (`verify`, `ack`).

use std::collections::HashMap;

use jiff::Timestamp;
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::batch::{self, Placeholders};
use super::outbox::{NewMessage, enqueue};
use super::read::alert_from_row;
use super::settle::refs_from_row;
use super::write::append;
use super::{Result, Store, parse_ts, ts_text};
use crate::core::alert::Alert;
use crate::core::engine::{Outcome, RolloutRef, WorkloadRef};
use crate::core::verify::FollowedAlert;

/// An applied action whose verification is under way.
#[derive(Clone, Debug, PartialEq)]
pub struct Verifying {
    pub action_id: i64,
    pub incident_id: i64,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub workload_uid: String,
    pub target_key: String,
    pub target_name: String,
    /// When its result was recorded as applied.
    pub acted_at: Timestamp,
    pub verify_until: Timestamp,
    /// The alert the action was taken for (for the notification).
    pub alert: Alert,
    /// Every alert of the incident, resolved or not.
    pub followed: Vec<FollowedAlert>,
    pub workload: Option<WorkloadRef>,
    pub rollout: Option<RolloutRef>,
}

/// What `rollbackd incidents ack` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ack {
    /// The hold is released; carries the workload it was on.
    Released {
        workload: String,
    },
    UnknownIncident,
    /// The incident exists but holds nothing (never not-recovered, or acknowledged already).
    NotHeld {
        outcome: String,
    },
}

impl Store {
    /// The actions being verified that may get their verdict at `now`, oldest first, with the
    /// alerts each follows: those whose window has ended, and those whose alerts are all
    /// resolved. An action with an alert still firing inside its window can only be pending,
    /// so it is left out (and its alerts unread): a pass comes every second, and after a
    /// storm hundreds of actions follow thousands of alerts.
    pub async fn verifications_due(&self, now: Timestamp) -> Result<Vec<Verifying>> {
        let rows = sqlx::query(
            "SELECT ac.id AS action_id, ac.incident_id, ac.kind, ac.namespace AS a_namespace,
                    ac.workload_name, ac.workload_uid AS a_uid, ac.target_uid, ac.target_name,
                    ac.finished_at, ac.intended_at, ac.verify_until,
                    al.fingerprint, al.starts_at, al.source, al.status, al.labels, al.annotations,
                    al.generator_url, al.external_url, al.ends_at,
                    i.workload_kind, i.rollout_name, i.rollout_uid, i.rollout_revision,
                    i.rollout_image, i.rollout_since
             FROM actions ac
             JOIN alerts al ON al.id = ac.alert_id
             JOIN incidents i ON i.id = ac.incident_id
             WHERE ac.verify_until IS NOT NULL AND ac.verified_at IS NULL
               AND (ac.verify_until <= $1
                    OR NOT EXISTS (SELECT 1 FROM alerts f
                                   WHERE f.incident_id = ac.incident_id AND f.status <> 'resolved'))
             ORDER BY ac.id",
        )
        .bind(ts_text(now))
        .fetch_all(&self.pool)
        .await?;
        // The alerts the incidents follow, all in one read.
        let mut followed_by: HashMap<i64, Vec<FollowedAlert>> = HashMap::new();
        if !rows.is_empty() {
            let incidents: Vec<i64> = rows
                .iter()
                .map(|r| r.try_get("incident_id"))
                .collect::<std::result::Result<_, _>>()?;
            for chunk in incidents.chunks(batch::ROWS) {
                let sql = format!(
                    "SELECT incident_id, alertname, status, ends_at, resolved_at FROM alerts
                     WHERE incident_id IN ({}) ORDER BY id",
                    Placeholders::Numbered.list(1, chunk.len())
                );
                let mut query = batch::query(sql, chunk.len());
                for id in chunk {
                    query = query.bind(*id);
                }
                for row in &query.fetch_all(&self.pool).await? {
                    followed_by
                        .entry(row.try_get("incident_id")?)
                        .or_default()
                        .push(followed_from_row(row)?);
                }
            }
        }
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let incident_id: i64 = r.try_get("incident_id")?;
            let followed = followed_by.get(&incident_id).cloned().unwrap_or_default();
            let acted: Option<String> = r.try_get("finished_at")?;
            let acted = match acted {
                Some(t) => t,
                None => r.try_get("intended_at")?,
            };
            let (workload, rollout) = refs_from_row(r)?;
            out.push(Verifying {
                action_id: r.try_get("action_id")?,
                incident_id,
                kind: r.try_get("kind")?,
                namespace: r.try_get("a_namespace")?,
                name: r.try_get("workload_name")?,
                workload_uid: r.try_get("a_uid")?,
                target_key: r
                    .try_get::<Option<String>, _>("target_uid")?
                    .unwrap_or_default(),
                target_name: r
                    .try_get::<Option<String>, _>("target_name")?
                    .unwrap_or_default(),
                acted_at: parse_ts(&acted)?,
                verify_until: parse_ts(&r.try_get::<String, _>("verify_until")?)?,
                alert: alert_from_row(r)?,
                followed,
                workload,
                rollout,
            });
        }
        Ok(out)
    }

    /// Records a verdict (`recovered` or `not-recovered`) for an action, on the incident and
    /// its timeline, with the messages reporting it, in one transaction. `not-recovered` holds
    /// the workload. Returns `false` (and writes nothing) if a verdict was already recorded.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_verdict(
        &self,
        action_id: i64,
        incident_id: i64,
        outcome: Outcome,
        reason: &str,
        data: &Value,
        messages: &[NewMessage],
        now: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let now_text = ts_text(now);
        let updated = sqlx::query(
            "UPDATE actions SET verified_at = $1, verify_result = $2
             WHERE id = $3 AND verified_at IS NULL",
        )
        .bind(&now_text)
        .bind(outcome.code())
        .bind(action_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        let held = outcome == Outcome::NotRecovered;
        sqlx::query(
            "UPDATE incidents SET outcome = $1, reason = $2, updated_at = $3,
                held = CASE WHEN $4 THEN 1 ELSE held END
             WHERE id = $5",
        )
        .bind(outcome.code())
        .bind(reason)
        .bind(&now_text)
        .bind(held)
        .bind(incident_id)
        .execute(&mut *tx)
        .await?;
        append(
            &mut tx,
            incident_id,
            now,
            "verify",
            Some(outcome),
            reason,
            data,
        )
        .await?;
        enqueue(&mut tx, incident_id, messages, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Acknowledges a not-recovered incident: records who and why on its timeline and
    /// releases the hold on its workload.
    pub async fn ack(
        &self,
        incident_id: i64,
        by: &str,
        note: Option<&str>,
        now: Timestamp,
    ) -> Result<Ack> {
        let mut tx = self.write_tx().await?;
        let Some(row) = sqlx::query(
            "SELECT held, outcome, workload_kind, namespace, workload_name FROM incidents WHERE id = $1",
        )
        .bind(incident_id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            tx.rollback().await?;
            return Ok(Ack::UnknownIncident);
        };
        if row.try_get::<i64, _>("held")? != 1 {
            let outcome = row.try_get("outcome")?;
            tx.rollback().await?;
            return Ok(Ack::NotHeld { outcome });
        }
        let workload = match (
            row.try_get::<Option<String>, _>("workload_kind")?,
            row.try_get::<Option<String>, _>("namespace")?,
            row.try_get::<Option<String>, _>("workload_name")?,
        ) {
            (Some(kind), Some(ns), Some(name)) => format!("{} {ns}/{name}", kind.to_lowercase()),
            _ => "its workload".to_string(),
        };
        let now_text = ts_text(now);
        sqlx::query(
            "UPDATE incidents SET held = 0, acked_at = $1, acked_by = $2, updated_at = $1 WHERE id = $3",
        )
        .bind(&now_text)
        .bind(by)
        .bind(incident_id)
        .execute(&mut *tx)
        .await?;
        let why = note.map(|n| format!(" ({n})")).unwrap_or_default();
        append(
            &mut tx,
            incident_id,
            now,
            "ack",
            None,
            &format!(
                "acknowledged by {by}{why}; rollbackd may act automatically on {workload} again"
            ),
            &json!({"by": by, "note": note}),
        )
        .await?;
        tx.commit().await?;
        Ok(Ack::Released { workload })
    }
}

fn followed_from_row(r: &AnyRow) -> Result<FollowedAlert> {
    let resolved = r.try_get::<String, _>("status")? == "resolved";
    let when = match r.try_get::<Option<String>, _>("ends_at")? {
        Some(ends) => Some(ends),
        None => r.try_get::<Option<String>, _>("resolved_at")?,
    };
    Ok(FollowedAlert {
        name: r.try_get("alertname")?,
        resolved_at: match (resolved, when) {
            (true, Some(t)) => Some(parse_ts(&t)?),
            _ => None,
        },
    })
}

#[cfg(test)]
mod tests;
