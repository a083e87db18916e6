//! The notification outbox: messages queued with the decision or result they report, and the
//! record of their delivery.
//!
//! Data model (`migrations/0003_outbox.sql`): one row per (incident, channel, destination,
//! event). Rows are inserted by [`Store::record_decision_and_notify`] and
//! [`Store::record_result_and_notify`] inside their transactions. The delivery worker reads due
//! rows, marks an attempt as started before it calls the channel, and records the end of each
//! attempt together with a `notify` timeline entry, in one transaction. A row whose
//! `sending_since` is still set when it is picked again was interrupted by a crash.

use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::write::append;
use super::{Result, Store, parse_ts, ts_text};

/// A message to queue, built by the pipeline before the transaction that records it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewMessage {
    /// The channel's name (`slack`, `email`).
    pub channel: String,
    /// Where, within the channel (`#payments-oncall`, `webhook`, a list of addresses).
    pub destination: String,
    /// What the message reports; one message per event and destination.
    pub event: String,
    /// The notification as JSON.
    pub payload: Value,
    /// No retry is scheduled after this.
    pub deadline: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboxStatus {
    Pending,
    Delivered,
    Failed,
}

impl OutboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::Delivered => "delivered",
            OutboxStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<OutboxStatus> {
        match s {
            "pending" => Ok(OutboxStatus::Pending),
            "delivered" => Ok(OutboxStatus::Delivered),
            "failed" => Ok(OutboxStatus::Failed),
            other => Err(super::StoreError::Corrupt(format!(
                "unknown outbox status {other:?}"
            ))),
        }
    }
}

/// One queued message and its delivery state.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutboxRow {
    pub id: i64,
    pub incident_id: i64,
    pub channel: String,
    pub destination: String,
    pub event: String,
    pub payload: Value,
    pub status: OutboxStatus,
    pub attempts: i64,
    pub created_at: Timestamp,
    pub next_attempt_at: Timestamp,
    pub deadline: Timestamp,
    /// Set when an attempt started and never finished: the process died during it.
    pub sending_since: Option<Timestamp>,
    pub last_error: Option<String>,
    pub thread_channel: Option<String>,
    pub thread_ts: Option<String>,
}

impl OutboxRow {
    /// "slack #oncall", for log lines and timeline entries.
    pub fn target(&self) -> String {
        format!("{} {}", self.channel, self.destination)
    }
}

/// How one attempt ended, as the delivery worker records it.
#[derive(Clone, Debug, PartialEq)]
pub enum AttemptEnd {
    Delivered {
        thread_channel: Option<String>,
        thread_ts: Option<String>,
    },
    Retry {
        error: String,
        next_attempt_at: Timestamp,
    },
    Failed {
        error: String,
    },
}

const COLUMNS: &str = "id, incident_id, channel, destination, event, payload, status, attempts,
    created_at, next_attempt_at, deadline, sending_since, last_error, thread_channel, thread_ts";

/// Inserts queued messages inside the caller's transaction, with a `notify` timeline entry
/// each. A message already queued for the same event and destination is left as it is.
pub(super) async fn enqueue(
    tx: &mut sqlx::AnyConnection,
    incident_id: i64,
    messages: &[NewMessage],
    now: Timestamp,
) -> Result<()> {
    let now_text = ts_text(now);
    for m in messages {
        let inserted = sqlx::query(
            "INSERT INTO outbox (incident_id, channel, destination, event, payload, status,
                created_at, next_attempt_at, deadline)
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6, $7)
             ON CONFLICT (incident_id, channel, destination, event) DO NOTHING
             RETURNING id",
        )
        .bind(incident_id)
        .bind(&m.channel)
        .bind(&m.destination)
        .bind(&m.event)
        .bind(m.payload.to_string())
        .bind(&now_text)
        .bind(ts_text(m.deadline))
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = inserted {
            let id: i64 = row.try_get("id")?;
            append(
                tx,
                incident_id,
                now,
                "notify",
                None,
                &format!("{} {}: queued", m.channel, m.destination),
                &json!({"outbox_id": id, "event": m.event}),
            )
            .await?;
        }
    }
    Ok(())
}

/// One channel's undelivered messages.
#[derive(Clone, Debug, PartialEq)]
pub struct Backlog {
    pub channel: String,
    pub pending: i64,
    /// When the oldest of them was queued.
    pub oldest: Timestamp,
}

impl Store {
    /// Every message about one incident, oldest first, with its delivery state: the
    /// incident page shows where on-call was told and whether it arrived.
    pub async fn incident_outbox(&self, incident_id: i64) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM outbox WHERE incident_id = $1 ORDER BY id"
        )))
        .bind(incident_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_row).collect()
    }

    /// Pending messages that are due, oldest first. A message waits while an earlier message
    /// about the same incident to the same destination is still pending, so that follow-ups
    /// never overtake the message they reply to.
    pub async fn due_messages(&self, now: Timestamp, limit: i64) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM outbox o
             WHERE o.status = 'pending' AND o.next_attempt_at <= $1
               AND NOT EXISTS (
                 SELECT 1 FROM outbox e
                 WHERE e.incident_id = o.incident_id AND e.channel = o.channel
                   AND e.destination = o.destination AND e.id < o.id AND e.status = 'pending')
             ORDER BY o.id LIMIT $2"
        )))
        .bind(ts_text(now))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_row).collect()
    }

    /// When the next pending message falls due, if any is pending.
    pub async fn next_message_due(&self) -> Result<Option<Timestamp>> {
        let next: Option<String> =
            sqlx::query("SELECT MIN(next_attempt_at) AS next FROM outbox WHERE status = 'pending'")
                .fetch_one(&self.pool)
                .await?
                .try_get("next")?;
        next.as_deref().map(parse_ts).transpose()
    }

    /// The undelivered messages by channel: how many, and when the oldest was queued.
    pub async fn outbox_backlog(&self) -> Result<Vec<Backlog>> {
        let rows = sqlx::query(
            "SELECT channel, COUNT(*) AS pending, MIN(created_at) AS oldest FROM outbox
             WHERE status = 'pending' GROUP BY channel ORDER BY channel",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let oldest: String = r.try_get("oldest")?;
                Ok(Backlog {
                    channel: r.try_get("channel")?,
                    pending: r.try_get("pending")?,
                    oldest: parse_ts(&oldest)?,
                })
            })
            .collect()
    }

    /// Where the first delivered message about this incident to this destination landed:
    /// later messages reply to it.
    pub async fn thread_of(&self, row: &OutboxRow) -> Result<Option<(Option<String>, String)>> {
        let found = sqlx::query(
            "SELECT thread_channel, thread_ts FROM outbox
             WHERE incident_id = $1 AND channel = $2 AND destination = $3 AND id < $4
               AND status = 'delivered' AND thread_ts IS NOT NULL
             ORDER BY id LIMIT 1",
        )
        .bind(row.incident_id)
        .bind(&row.channel)
        .bind(&row.destination)
        .bind(row.id)
        .fetch_optional(&self.pool)
        .await?;
        found
            .map(|r| Ok((r.try_get("thread_channel")?, r.try_get("thread_ts")?)))
            .transpose()
    }

    /// Marks an attempt as started and counts it, before the channel is called. A crash
    /// during the call leaves `sending_since` set, which the next pick reports.
    pub async fn begin_attempt(&self, id: i64, now: Timestamp) -> Result<i64> {
        let attempts: i64 = sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, sending_since = $1 WHERE id = $2
             RETURNING attempts",
        )
        .bind(ts_text(now))
        .bind(id)
        .fetch_one(&self.pool)
        .await?
        .try_get("attempts")?;
        Ok(attempts)
    }

    /// Appends a `notify` timeline entry that changes no row (an interrupted attempt noticed).
    pub async fn note_delivery(
        &self,
        row: &OutboxRow,
        message: &str,
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        append(
            &mut tx,
            row.incident_id,
            now,
            "notify",
            None,
            message,
            &json!({"outbox_id": row.id, "event": row.event}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records how an attempt ended and appends its `notify` timeline entry, in one
    /// transaction.
    pub async fn end_attempt(
        &self,
        row: &OutboxRow,
        attempt: i64,
        end: &AttemptEnd,
        message: &str,
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let now_text = ts_text(now);
        let query = match end {
            AttemptEnd::Delivered {
                thread_channel,
                thread_ts,
            } => sqlx::query(
                "UPDATE outbox SET status = 'delivered', sending_since = NULL, finished_at = $1,
                    thread_channel = $2, thread_ts = $3 WHERE id = $4",
            )
            .bind(&now_text)
            .bind(thread_channel)
            .bind(thread_ts)
            .bind(row.id),
            AttemptEnd::Retry {
                error,
                next_attempt_at,
            } => sqlx::query(
                "UPDATE outbox SET sending_since = NULL, last_error = $1, next_attempt_at = $2
                 WHERE id = $3",
            )
            .bind(error)
            .bind(ts_text(*next_attempt_at))
            .bind(row.id),
            AttemptEnd::Failed { error } => sqlx::query(
                "UPDATE outbox SET status = 'failed', sending_since = NULL, last_error = $1,
                    finished_at = $2 WHERE id = $3",
            )
            .bind(error)
            .bind(&now_text)
            .bind(row.id),
        };
        query.execute(&mut *tx).await?;
        let status = match end {
            AttemptEnd::Delivered { .. } => OutboxStatus::Delivered,
            AttemptEnd::Retry { .. } => OutboxStatus::Pending,
            AttemptEnd::Failed { .. } => OutboxStatus::Failed,
        };
        append(
            &mut tx,
            row.incident_id,
            now,
            "notify",
            None,
            message,
            &json!({"outbox_id": row.id, "event": row.event, "attempt": attempt,
                    "status": status.as_str()}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every queued message, oldest first (reviews, tests).
    pub async fn outbox(&self) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM outbox ORDER BY id"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_row).collect()
    }
}

fn outbox_row(r: &AnyRow) -> Result<OutboxRow> {
    let ts = |name: &str| -> Result<Timestamp> { parse_ts(&r.try_get::<String, _>(name)?) };
    let payload: String = r.try_get("payload")?;
    Ok(OutboxRow {
        id: r.try_get("id")?,
        incident_id: r.try_get("incident_id")?,
        channel: r.try_get("channel")?,
        destination: r.try_get("destination")?,
        event: r.try_get("event")?,
        payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
        status: OutboxStatus::parse(&r.try_get::<String, _>("status")?)?,
        attempts: r.try_get("attempts")?,
        created_at: ts("created_at")?,
        next_attempt_at: ts("next_attempt_at")?,
        deadline: ts("deadline")?,
        sending_since: r
            .try_get::<Option<String>, _>("sending_since")?
            .as_deref()
            .map(parse_ts)
            .transpose()?,
        last_error: r.try_get("last_error")?,
        thread_channel: r.try_get("thread_channel")?,
        thread_ts: r.try_get("thread_ts")?,
    })
}

#[cfg(test)]
mod tests {
    use crate::core::alert::{Alert, AlertSource, AlertStatus, Fingerprint, LabelSet};
    use crate::core::engine::{Decision, Outcome};

    use super::*;
    use crate::store::test_db::{TestDb, on_both};

    fn alert(i: usize) -> Alert {
        let labels: LabelSet = [("alertname", format!("A{i}")), ("namespace", "x".into())]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        Alert {
            source: AlertSource::Alertmanager,
            status: AlertStatus::Firing,
            fingerprint: Fingerprint::of(&labels),
            labels,
            annotations: LabelSet::new(),
            starts_at: Timestamp::UNIX_EPOCH,
            ends_at: None,
            generator_url: String::new(),
            external_url: None,
        }
    }

    /// The delivery worker writes while the webhook records alerts: recording must wait for
    /// the write lock, never fail (a failure is a 503 to Alertmanager).
    async fn alerts_are_recorded_while_the_worker_writes(db: TestDb) {
        let store = db.open().await;
        let now = Timestamp::now();
        let first = alert(0);
        let received = store
            .record_alerts(std::slice::from_ref(&first), now)
            .await
            .expect("alert");
        let decision = Decision {
            outcome: Outcome::NoWorkload,
            reason: "none".into(),
            workload: None,
            rollout: None,
            command: None,
        };
        let message = NewMessage {
            channel: "log".into(),
            destination: "log".into(),
            event: "e".into(),
            payload: Value::Null,
            deadline: now,
        };
        store
            .record_decision_and_notify(received[0].alert_id, &first, &decision, now, |_| {
                vec![message]
            })
            .await
            .expect("decision")
            .expect("fresh");
        let row = store.outbox().await.expect("outbox").remove(0);
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..300 {
                    store
                        .note_delivery(&row, "write", Timestamp::now())
                        .await
                        .expect("worker write");
                }
            })
        };
        for i in 1..300 {
            // A read of the store between each delivery, as the webhook's client would.
            store.alert_count().await.expect("count");
            store
                .record_alerts(&[alert(i)], Timestamp::now())
                .await
                .unwrap_or_else(|e| panic!("alert {i} not recorded: {e:?}"));
        }
        writer.await.expect("writer");
    }

    on_both!(alerts_are_recorded_while_the_worker_writes);
}
