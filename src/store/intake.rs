//! A group commit's deliveries of firing alerts, recorded in a handful of statements.
//!
//! Recorded one delivery at a time (`write::record_in`), each alert is a read and an insert
//! or update, and each delivery two more statements for its savepoint: during a storm of
//! single-alert deliveries, four round trips to the database for every alert. Here a whole
//! group is one read of the alerts it names, one insert of the new ones and one update of the
//! ones already recorded (each split into statements of at most [`ROWS`] rows), with what one
//! at a time would record: the same rows, ids in the same order, the same answers.
//!
//! Only firing alerts take this path. A group with a resolved alert is recorded one delivery at
//! a time, as resolving can close incidents. So is a group this path fails on: the caller runs
//! it inside a savepoint and, on an error, rolls back to it and records each delivery in its
//! own (`group`).

use std::collections::HashMap;

use jiff::Timestamp;
use sqlx::Row;

use super::batch::{self, Placeholders, ROWS};
use super::write::{Received, announce, reopen};
use super::{Result, json_text, ts_text};
use crate::core::alert::{Alert, AlertStatus};

const _: () = assert!(batch::fits(18));

/// One delivery: its alerts, whether each is urgent, and when it arrived.
pub(super) struct Part<'d> {
    pub alerts: &'d [Alert],
    pub urgent: &'d [bool],
    pub now: Timestamp,
}

/// Whether [`record_in`] takes these deliveries: every alert is firing.
pub(super) fn applies(parts: &[Part<'_>]) -> bool {
    parts
        .iter()
        .all(|p| p.alerts.iter().all(|a| a.status == AlertStatus::Firing))
}

/// An alert first seen in this group, to insert.
struct New<'d> {
    alert: &'d Alert,
    fingerprint: String,
    starts_at: String,
    received_at: String,
    last_received_at: String,
    deliveries: i64,
    priority: i64,
}

/// An alert recorded before this group.
struct Known {
    id: i64,
    deliveries: i64,
    last_received_at: String,
    /// Its first delivery in the group reopened it (its retries were used up).
    reopened: bool,
}

enum Slot {
    New(usize),
    Known(usize),
}

/// Records the deliveries of firing alerts `parts` inside a write transaction: as recording
/// each in turn with `write::record_in`. Returns each delivery's answers.
pub(super) async fn record_in(
    tx: &mut sqlx::AnyConnection,
    parts: &[Part<'_>],
) -> Result<Vec<Vec<Received>>> {
    debug_assert!(
        applies(parts),
        "resolved alerts are recorded one delivery at a time"
    );
    let style = Placeholders::of(tx);
    let mut known = read_known(tx, parts, style).await?;

    // Walk the alerts in order, as one delivery after another would.
    let mut slots: HashMap<(String, String), Slot> = HashMap::new();
    let mut fresh: Vec<New<'_>> = Vec::new();
    let mut seen: Vec<Known> = Vec::new();
    // Per delivery, per alert: its slot and what the delivery is answered.
    let mut answers: Vec<Vec<(usize, Slot, bool, bool)>> = Vec::with_capacity(parts.len());
    for part in parts {
        let now_text = ts_text(part.now);
        let mut answer = Vec::with_capacity(part.alerts.len());
        for (i, alert) in part.alerts.iter().enumerate() {
            let key = (alert.fingerprint.to_string(), ts_text(alert.starts_at));
            match slots.get(&key) {
                None => match known.remove(&key) {
                    None => {
                        let n = fresh.len();
                        fresh.push(New {
                            alert,
                            fingerprint: key.0.clone(),
                            starts_at: key.1.clone(),
                            received_at: now_text.clone(),
                            last_received_at: now_text.clone(),
                            deliveries: 1,
                            priority: i64::from(part.urgent.get(i).copied().unwrap_or(true)),
                        });
                        answer.push((i, Slot::New(n), true, false));
                        slots.insert(key, Slot::New(n));
                    }
                    Some((id, retry_on_delivery)) => {
                        let n = seen.len();
                        // A transient failure whose retries were used up is decided again
                        // now that the alert is still being delivered as firing.
                        seen.push(Known {
                            id,
                            deliveries: 1,
                            last_received_at: now_text.clone(),
                            reopened: retry_on_delivery,
                        });
                        answer.push((i, Slot::Known(n), false, retry_on_delivery));
                        slots.insert(key, Slot::Known(n));
                    }
                },
                Some(Slot::New(n)) => {
                    let new = &mut fresh[*n];
                    new.deliveries += 1;
                    new.last_received_at = now_text.clone();
                    answer.push((i, Slot::New(*n), false, false));
                }
                Some(Slot::Known(n)) => {
                    let k = &mut seen[*n];
                    k.deliveries += 1;
                    k.last_received_at = now_text.clone();
                    // Reopened by its first delivery, if at all: a repeat finds it undecided.
                    answer.push((i, Slot::Known(*n), false, false));
                }
            }
        }
        answers.push(answer);
    }

    let fresh_ids = insert_fresh(tx, &fresh, style).await?;
    update_seen(tx, &seen, style).await?;

    let out: Vec<Vec<Received>> = parts
        .iter()
        .zip(answers)
        .map(|(part, answer)| {
            answer
                .into_iter()
                .map(|(i, slot, is_fresh, reopened)| Received {
                    alert_id: match slot {
                        Slot::New(n) => fresh_ids[n],
                        Slot::Known(n) => seen[n].id,
                    },
                    key: part.alerts[i].key(),
                    fresh: is_fresh,
                    resolved_now: false,
                    reopened,
                })
                .collect()
        })
        .collect();
    announce(tx, out.iter().flatten()).await?;
    Ok(out)
}

/// The alerts of `parts` recorded before, by fingerprint and start: their id and whether a
/// delivery reopens them.
async fn read_known(
    tx: &mut sqlx::AnyConnection,
    parts: &[Part<'_>],
    style: Placeholders,
) -> Result<HashMap<(String, String), (i64, bool)>> {
    let mut fingerprints: Vec<String> = parts
        .iter()
        .flat_map(|p| p.alerts.iter().map(|a| a.fingerprint.to_string()))
        .collect();
    fingerprints.sort_unstable();
    fingerprints.dedup();
    let mut known = HashMap::new();
    for chunk in fingerprints.chunks(ROWS) {
        let sql = format!(
            "SELECT id, fingerprint, starts_at, retry_on_delivery FROM alerts
             WHERE fingerprint IN ({})",
            style.list(1, chunk.len())
        );
        let mut query = batch::query(sql, chunk.len());
        for fp in chunk {
            query = query.bind(fp.as_str());
        }
        for row in query.fetch_all(&mut *tx).await? {
            known.insert(
                (row.try_get("fingerprint")?, row.try_get("starts_at")?),
                (
                    row.try_get("id")?,
                    row.try_get::<i64, _>("retry_on_delivery")? == 1,
                ),
            );
        }
    }
    Ok(known)
}

/// Inserts the alerts first seen in this group, in the order they arrived; returns their ids
/// in that order.
async fn insert_fresh(
    tx: &mut sqlx::AnyConnection,
    fresh: &[New<'_>],
    style: Placeholders,
) -> Result<Vec<i64>> {
    let mut out = Vec::with_capacity(fresh.len());
    for chunk in fresh.chunks(ROWS) {
        let sql = format!(
            "INSERT INTO alerts (fingerprint, starts_at, source, alertname, status, labels,
                annotations, generator_url, external_url, ends_at, received_at,
                last_received_at, outcome, reason, decided_at, resolved_at, priority, deliveries)
             VALUES {}
             RETURNING id, fingerprint, starts_at",
            style.rows(chunk.len(), 18)
        );
        let mut query = batch::query(sql, chunk.len());
        for new in chunk.iter() {
            let alert = new.alert;
            query = query
                .bind(new.fingerprint.as_str())
                .bind(new.starts_at.as_str())
                .bind(alert.source.as_str())
                .bind(alert.name())
                .bind(alert.status.as_str())
                .bind(json_text(&alert.labels))
                .bind(json_text(&alert.annotations))
                .bind(alert.generator_url.as_str())
                .bind(alert.external_url.as_deref())
                .bind(alert.ends_at.map(ts_text))
                .bind(new.received_at.as_str())
                .bind(new.last_received_at.as_str())
                .bind(None::<&str>)
                .bind(None::<&str>)
                .bind(None::<&str>)
                .bind(None::<&str>)
                .bind(new.priority)
                .bind(new.deliveries);
        }
        let mut ids: HashMap<(String, String), i64> = HashMap::with_capacity(chunk.len());
        for row in query.fetch_all(&mut *tx).await? {
            ids.insert(
                (row.try_get("fingerprint")?, row.try_get("starts_at")?),
                row.try_get("id")?,
            );
        }
        for new in chunk {
            let key = (new.fingerprint.clone(), new.starts_at.clone());
            // Every row inserted is returned; a missing one fails the group, which is then
            // recorded a delivery at a time.
            out.push(*ids.get(&key).ok_or(sqlx::Error::RowNotFound)?);
        }
    }
    Ok(out)
}

/// Counts the deliveries of alerts recorded before, and reopens those a delivery reopens.
async fn update_seen(
    tx: &mut sqlx::AnyConnection,
    seen: &[Known],
    style: Placeholders,
) -> Result<()> {
    for chunk in seen.chunks(ROWS) {
        let sql = format!(
            "UPDATE alerts SET deliveries = deliveries + v.column2, last_received_at = v.column3
             FROM (VALUES {}) AS v
             WHERE alerts.id = v.column1",
            style.rows(chunk.len(), 3)
        );
        let mut query = batch::query(sql, chunk.len());
        for k in chunk {
            query = query
                .bind(k.id)
                .bind(k.deliveries)
                .bind(k.last_received_at.as_str());
        }
        query.execute(&mut *tx).await?;
    }
    for k in seen.iter().filter(|k| k.reopened) {
        reopen(tx, k.id).await?;
    }
    Ok(())
}
