//! Reads and writes of the worker's own bookkeeping: the backlog of undecided alerts, read a
//! page at a time in priority order, and the actions left without a known result.

use jiff::Timestamp;
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::read::alert_from_row;
use super::write::append;
use super::{Result, Store, parse_ts, ts_text};
use crate::core::alert::Alert;
use crate::core::engine::{RolloutRef, WorkloadRef};
use crate::core::undo::RevisionRef;

/// An alert waiting for a decision.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingAlert {
    pub alert_id: i64,
    pub alert: Alert,
    pub received_at: Timestamp,
    /// The last outcome recorded for it: `stale-data` while it waits for fresh data, or the
    /// failure it is being decided again after.
    pub outcome: Option<String>,
    /// Decisions made about it so far (a transient failure is decided again).
    pub attempts: i64,
}

/// An action whose result is not known: its intent was recorded and then nothing (a crash), or
/// its answer was lost and the object could not be read again.
#[derive(Clone, Debug, PartialEq)]
pub struct UnsettledAction {
    pub action_id: i64,
    pub incident_id: i64,
    pub alert_id: i64,
    /// `intended` or `unknown`.
    pub status: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub workload_uid: String,
    pub blamed_key: String,
    pub blamed_name: String,
    pub target_key: String,
    pub target_name: String,
    pub intended_at: Timestamp,
    pub alert: Alert,
    pub attempts: i64,
    pub workload: Option<WorkloadRef>,
    pub rollout: Option<RolloutRef>,
}

impl Store {
    /// Up to `limit` alerts due for a decision: urgent ones first, then in arrival order. A
    /// backlog of any size is read a page at a time.
    pub async fn undecided_page(&self, limit: usize, now: Timestamp) -> Result<Vec<PendingAlert>> {
        let rows = sqlx::query(
            "SELECT id, fingerprint, starts_at, source, status, labels, annotations,
                    generator_url, external_url, ends_at, received_at, outcome, attempts
             FROM alerts WHERE decided_at IS NULL AND (retry_at IS NULL OR retry_at <= $1)
             ORDER BY priority DESC, id LIMIT $2",
        )
        .bind(ts_text(now))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(pending_from_row).collect()
    }

    /// Up to `limit` undecided alerts received before `received_before` and not yet recorded
    /// `stale-data`: those that waited too long for fresh data, however long the backlog.
    pub async fn overdue_page(
        &self,
        limit: usize,
        received_before: Timestamp,
    ) -> Result<Vec<PendingAlert>> {
        let rows = sqlx::query(
            "SELECT id, fingerprint, starts_at, source, status, labels, annotations,
                    generator_url, external_url, ends_at, received_at, outcome, attempts
             FROM alerts WHERE decided_at IS NULL AND received_at < $1
                AND (outcome IS NULL OR outcome <> 'stale-data')
             ORDER BY priority DESC, id LIMIT $2",
        )
        .bind(ts_text(received_before))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(pending_from_row).collect()
    }

    /// How many alerts wait for a decision (including those waiting to be decided again).
    pub async fn pending_count(&self) -> Result<i64> {
        Ok(
            sqlx::query("SELECT COUNT(*) AS n FROM alerts WHERE decided_at IS NULL")
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?,
        )
    }

    /// Actions without a known result, oldest first.
    pub async fn unsettled_actions(&self) -> Result<Vec<UnsettledAction>> {
        let rows = sqlx::query(
            "SELECT ac.id AS action_id, ac.incident_id, ac.alert_id, ac.status AS action_status,
                    ac.kind, ac.namespace AS a_namespace, ac.workload_name, ac.workload_uid AS a_uid,
                    ac.blamed_uid, ac.blamed_name, ac.target_uid, ac.target_name, ac.intended_at,
                    al.fingerprint, al.starts_at, al.source, al.status, al.labels, al.annotations,
                    al.generator_url, al.external_url, al.ends_at, al.attempts,
                    i.workload_kind, i.rollout_name, i.rollout_uid, i.rollout_revision,
                    i.rollout_image, i.rollout_since
             FROM actions ac
             JOIN alerts al ON al.id = ac.alert_id
             JOIN incidents i ON i.id = ac.incident_id
             WHERE ac.status IN ('intended', 'unknown') ORDER BY ac.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let (workload, rollout) = refs_from_row(r)?;
                Ok(UnsettledAction {
                    action_id: r.try_get("action_id")?,
                    incident_id: r.try_get("incident_id")?,
                    alert_id: r.try_get("alert_id")?,
                    status: r.try_get("action_status")?,
                    kind: r.try_get("kind")?,
                    namespace: r.try_get("a_namespace")?,
                    name: r.try_get("workload_name")?,
                    workload_uid: r.try_get("a_uid")?,
                    blamed_key: r.try_get("blamed_uid")?,
                    blamed_name: r.try_get("blamed_name")?,
                    target_key: r
                        .try_get::<Option<String>, _>("target_uid")?
                        .unwrap_or_default(),
                    target_name: r
                        .try_get::<Option<String>, _>("target_name")?
                        .unwrap_or_default(),
                    intended_at: parse_ts(&r.try_get::<String, _>("intended_at")?)?,
                    alert: alert_from_row(r)?,
                    attempts: r.try_get("attempts")?,
                    workload,
                    rollout,
                })
            })
            .collect()
    }

    /// Appends a note to an incident's timeline on its own (a daemon start that settles it).
    pub async fn record_note(
        &self,
        incident_id: i64,
        kind: &str,
        message: &str,
        data: &Value,
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        append(&mut tx, incident_id, now, kind, None, message, data).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// An undecided alert, from the columns both backlog queries select.
fn pending_from_row(r: &AnyRow) -> Result<PendingAlert> {
    Ok(PendingAlert {
        alert_id: r.try_get("id")?,
        alert: alert_from_row(r)?,
        received_at: parse_ts(&r.try_get::<String, _>("received_at")?)?,
        outcome: r.try_get("outcome")?,
        attempts: r.try_get("attempts")?,
    })
}

/// The workload and the rollout blamed, from the incident's columns.
pub(super) fn refs_from_row(r: &AnyRow) -> Result<(Option<WorkloadRef>, Option<RolloutRef>)> {
    let namespace: String = r.try_get("a_namespace")?;
    let name: String = r.try_get("workload_name")?;
    let uid: String = r.try_get("a_uid")?;
    let workload = r
        .try_get::<Option<String>, _>("workload_kind")?
        .map(|kind| WorkloadRef {
            kind,
            namespace,
            name,
            uid,
        });
    let rollout = match (
        r.try_get::<Option<String>, _>("rollout_uid")?,
        r.try_get::<Option<String>, _>("rollout_since")?,
    ) {
        (Some(uid), Some(since)) => Some(RolloutRef {
            revision: RevisionRef {
                name: r
                    .try_get::<Option<String>, _>("rollout_name")?
                    .unwrap_or_default(),
                uid,
                revision: r
                    .try_get::<Option<i64>, _>("rollout_revision")?
                    .unwrap_or(0),
                image: r.try_get("rollout_image")?,
            },
            since: parse_ts(&since)?,
        }),
        _ => None,
    };
    Ok((workload, rollout))
}
