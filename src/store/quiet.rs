//! Decisions that act on nothing, recorded a batch at a time.
//!
//! In a storm most alerts concern a cause already settled, and each still gets a decision
//! with its reason. Recorded one at a time, a decision is six statements, each a round trip
//! to the database (for SQLite, to its worker thread and back): during a storm that was most
//! of the daemon's CPU. Here a batch is a handful of statements whatever its size: one read
//! of the alerts, one upsert of the incidents they file into, one update of the alerts, one
//! insert of the timeline, each split into statements of at most [`ROWS`] rows. Messages to
//! queue are the exception: they are queued one decision at a time, as they are rare.
//!
//! What is recorded is exactly what recording the decisions one at a time records, in the
//! same order (the store's tests compare the two on both backends).

use std::collections::HashMap;

use jiff::Timestamp;
use sqlx::Row;

use super::batch::{self, Placeholders, ROWS, append_all};
use super::outbox::{NewMessage, enqueue};
use super::write::{
    Recorded, attempt_reason, decision_entries, incident_of, is_significant, significant_sql,
};
use super::{Result, ts_text};
use crate::core::alert::Alert;
use crate::core::engine::{Decision, Outcome, RolloutRef, WorkloadRef};

const _: () = assert!(batch::fits(15));

/// One decision to record: the alert undecided when the batch began.
struct Item<'b> {
    /// Its place in the batch.
    at: usize,
    alert_id: i64,
    alert: &'b Alert,
    decision: &'b Decision,
    key: String,
    workload: Option<&'b WorkloadRef>,
    rollout: Option<&'b RolloutRef>,
    earlier_attempts: i64,
    received_at: String,
    never_decided: bool,
}

impl Item<'_> {
    /// A decision to wait for fresh data is provisional: the alert stays undecided.
    fn provisional(&self) -> bool {
        self.decision.outcome == Outcome::StaleData
    }

    fn shown(&self) -> &'static str {
        self.decision.outcome.code()
    }
}

/// Records decisions that act on nothing inside a write transaction: as recording each with
/// `record_decision_in`, in a handful of statements. Returns, in order, where each was
/// recorded (`None` for an alert already decided, or repeated in the batch).
pub(super) async fn record_in(
    tx: &mut sqlx::AnyConnection,
    batch: &[(i64, &Alert, &Decision)],
    now: Timestamp,
    mut notify: impl FnMut(usize, i64) -> Vec<NewMessage>,
) -> Result<Vec<Option<Recorded>>> {
    let now_text = ts_text(now);
    let items = undecided(tx, batch).await?;
    let incidents = file_incidents(tx, &items, &now_text).await?;
    update_alerts(tx, &items, &incidents, &now_text).await?;

    let mut out: Vec<Option<Recorded>> = vec![None; batch.len()];
    let mut entries = Vec::with_capacity(3 * items.len());
    for item in &items {
        let incident_id = incident_of_key(&incidents, item)?;
        // An alert is received once; a later decision about it is another attempt.
        let received = item
            .never_decided
            .then(|| (item.alert_id, item.alert, item.received_at.clone()));
        entries.extend(decision_entries(
            incident_id,
            received,
            &now_text,
            item.workload,
            item.rollout,
            item.shown(),
            attempt_reason(
                item.earlier_attempts + 1,
                item.provisional(),
                &item.decision.reason,
            ),
        ));
        let messages = notify(item.at, incident_id);
        if !messages.is_empty() {
            // Queuing appends its own entries: those before it go first, as one at a time.
            append_all(tx, std::mem::take(&mut entries)).await?;
            enqueue(tx, incident_id, &messages, now).await?;
        }
        out[item.at] = Some(Recorded {
            incident_id,
            action_id: None,
        });
    }
    append_all(tx, entries).await?;
    Ok(out)
}

/// The batch's alerts still undecided, each once, with what their entries need.
async fn undecided<'b>(
    tx: &mut sqlx::AnyConnection,
    batch: &'b [(i64, &'b Alert, &'b Decision)],
) -> Result<Vec<Item<'b>>> {
    let mut rows: HashMap<i64, (i64, String, bool)> = HashMap::with_capacity(batch.len());
    for chunk in batch.chunks(ROWS) {
        let sql = format!(
            "SELECT id, attempts, received_at, outcome FROM alerts
             WHERE decided_at IS NULL AND id IN ({})",
            Placeholders::of(tx).list(1, chunk.len())
        );
        let mut query = batch::query(sql, chunk.len());
        for (id, _, _) in chunk {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&mut *tx).await? {
            rows.insert(
                row.try_get("id")?,
                (
                    row.try_get("attempts")?,
                    row.try_get("received_at")?,
                    row.try_get::<Option<String>, _>("outcome")?.is_none(),
                ),
            );
        }
    }
    let mut items = Vec::with_capacity(rows.len());
    for (at, (alert_id, alert, decision)) in batch.iter().enumerate() {
        // Removed once taken: an alert repeated in the batch is recorded once.
        let Some((earlier_attempts, received_at, never_decided)) = rows.remove(alert_id) else {
            continue;
        };
        let (key, workload, rollout) = incident_of(alert, decision);
        items.push(Item {
            at,
            alert_id: *alert_id,
            alert,
            decision,
            key,
            workload,
            rollout,
            earlier_attempts,
            received_at,
            never_decided,
        });
    }
    Ok(items)
}

/// Opens or joins the incident of every item: one row per incident key, in the order the keys
/// first appear. Each incident shows what recording the decisions one at a time would leave:
/// the first significant decision, or else the last. Returns each key's incident id.
async fn file_incidents(
    tx: &mut sqlx::AnyConnection,
    items: &[Item<'_>],
    now_text: &str,
) -> Result<HashMap<String, i64>> {
    // Per key, the item whose outcome and reason the incident shows.
    let mut order: Vec<usize> = Vec::new();
    let mut place: HashMap<&str, usize> = HashMap::new();
    for (n, item) in items.iter().enumerate() {
        match place.get(item.key.as_str()) {
            None => {
                place.insert(item.key.as_str(), order.len());
                order.push(n);
            }
            Some(&p) => {
                if !is_significant(items[order[p]].shown()) {
                    order[p] = n;
                }
            }
        }
    }
    let significant = significant_sql();
    let mut ids = HashMap::with_capacity(order.len());
    for chunk in order.chunks(ROWS) {
        let sql = format!(
            "INSERT INTO incidents (incident_key, namespace, workload_kind, workload_name,
                workload_uid, rollout_name, rollout_uid, rollout_revision, rollout_image,
                rollout_since, opened_at, updated_at, status, outcome, reason)
             VALUES {}
             ON CONFLICT (incident_key) DO UPDATE SET
                updated_at = excluded.updated_at, status = 'open', resolved_at = NULL,
                outcome = CASE WHEN incidents.outcome IN {significant} THEN incidents.outcome ELSE excluded.outcome END,
                reason = CASE WHEN incidents.outcome IN {significant} THEN incidents.reason ELSE excluded.reason END
             RETURNING id, incident_key",
            Placeholders::of(tx).rows(chunk.len(), 15)
        );
        let mut query = batch::query(sql, chunk.len());
        for &n in chunk {
            let item = &items[n];
            let (w, r) = (item.workload, item.rollout);
            query = query
                .bind(item.key.as_str())
                .bind(w.map(|w| w.namespace.as_str()))
                .bind(w.map(|w| w.kind.as_str()))
                .bind(w.map(|w| w.name.as_str()))
                .bind(w.map(|w| w.uid.as_str()))
                .bind(r.map(|r| r.revision.name.as_str()))
                .bind(r.map(|r| r.revision.uid.as_str()))
                .bind(r.map(|r| r.revision.revision))
                .bind(r.and_then(|r| r.revision.image.as_deref()))
                .bind(r.map(|r| ts_text(r.since)))
                .bind(now_text)
                .bind(now_text)
                .bind("open")
                .bind(item.shown())
                .bind(item.decision.reason.as_str());
        }
        for row in query.fetch_all(&mut *tx).await? {
            ids.insert(row.try_get("incident_key")?, row.try_get("id")?);
        }
    }
    Ok(ids)
}

/// Files each item's alert under its incident with the decision's outcome and reason.
async fn update_alerts(
    tx: &mut sqlx::AnyConnection,
    items: &[Item<'_>],
    incidents: &HashMap<String, i64>,
    now_text: &str,
) -> Result<()> {
    for chunk in items.chunks(ROWS) {
        let sql = format!(
            "UPDATE alerts SET incident_id = v.column2, outcome = v.column3, reason = v.column4,
                decided_at = v.column5, attempts = attempts + v.column6, retry_at = NULL,
                retry_on_delivery = 0
             FROM (VALUES {}) AS v
             WHERE alerts.id = v.column1",
            Placeholders::of(tx).rows(chunk.len(), 6)
        );
        let mut query = batch::query(sql, chunk.len());
        for item in chunk {
            let provisional = item.provisional();
            query = query
                .bind(item.alert_id)
                .bind(incident_of_key(incidents, item)?)
                .bind(item.shown())
                .bind(item.decision.reason.as_str())
                .bind((!provisional).then_some(now_text))
                .bind(i64::from(!provisional));
        }
        query.execute(&mut *tx).await?;
    }
    Ok(())
}

/// The incident an item was filed under. Every key upserted is returned by its statement, so a
/// missing one is an error of the database, answered as such rather than with a panic.
fn incident_of_key(incidents: &HashMap<String, i64>, item: &Item<'_>) -> Result<i64> {
    Ok(*incidents
        .get(item.key.as_str())
        .ok_or(sqlx::Error::RowNotFound)?)
}
