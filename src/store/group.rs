//! Group commit of deliveries: concurrent webhook deliveries share one durable transaction.
//!
//! With `synchronous = FULL` and a rollback journal, each commit costs about four fsyncs (about
//! 100 commits/s on a slow disk), so a delivery per transaction caps a storm of single-alert
//! deliveries at the disk's commit rate, and the decision worker queues behind every one of
//! them for the write turn. Here one task, the *committer*, owns the webhook's writes:
//!
//! 1. It waits for a delivery, then for the process's write turn (`Store::write_turn`, shared
//!    with the worker's transactions, first come first served).
//! 2. Holding the turn, it takes every delivery queued meanwhile, up to [`MAX_BATCH_ALERTS`]
//!    alerts (a delivery bigger than that goes alone), and records them in order in one
//!    transaction, each inside its own savepoint: exactly what recording them one after
//!    another would do ([`record_in`]: ranking, duplicates, resolution, reopening).
//! 3. It commits once, then answers each delivery. Nothing is answered before the commit and
//!    the file check after it, so "200 means recorded" holds. A delivery whose own statements
//!    failed is rolled back to its savepoint and answered with its error; a failure of the
//!    shared transaction (BEGIN, a savepoint, COMMIT, the file check) answers every member
//!    with the same [`StoreError::Group`].
//!
//! A delivery whose caller went away before its batch began (a cancelled request) is dropped
//! unrecorded, as if it had never arrived. The task ends when the last [`Store`] handle with
//! its sender is dropped; if it is gone, deliveries fall back to a transaction each.
//!
//! `ROLLBACKD_GROUP_COMMIT=off` turns batching off (a transaction per delivery, as before). It
//! exists for benchmarks that compare both in one run, not for production.

use std::sync::Arc;

use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::intake::{self, Part};
use super::tx::WriteTurn;
use super::write::record_in;
use super::{Received, Result, Store, StoreError};
use crate::core::alert::Alert;

/// At most this many alerts are gathered into one transaction, so that a batch stays short
/// and the decision worker's turn comes soon.
pub const MAX_BATCH_ALERTS: usize = 2048;

/// Deliveries that may wait for the committer before `submit` itself waits to queue.
const QUEUE: usize = 1024;

/// The variable that turns group commit off, for benchmarks.
pub const ENV: &str = "ROLLBACKD_GROUP_COMMIT";

/// One delivery waiting for its batch, and where to answer.
#[derive(Debug)]
pub(super) struct Delivery {
    alerts: Vec<Alert>,
    urgent: Vec<bool>,
    now: Timestamp,
    answer: oneshot::Sender<Result<Vec<Received>>>,
}

/// Whether group commit is on (it is unless `ROLLBACKD_GROUP_COMMIT=off`).
pub(super) fn enabled() -> bool {
    std::env::var(ENV).map_or(true, |v| v != "off")
}

/// Starts the committer for `store` (a handle without a committer of its own, so that the
/// task does not keep itself alive) and returns where to queue deliveries.
pub(super) fn spawn(store: Store) -> mpsc::Sender<Delivery> {
    let (queue, deliveries) = mpsc::channel(QUEUE);
    tokio::spawn(run(store, deliveries));
    queue
}

impl Store {
    /// As [`Store::record_alerts_ranked`], but deliveries that arrive together share one
    /// transaction and one sync. Answers only once this delivery's alerts are durable; an
    /// error means nothing may be assumed recorded.
    pub async fn record_alerts_grouped(
        &self,
        alerts: &[Alert],
        urgent: &[bool],
        now: Timestamp,
    ) -> Result<Vec<Received>> {
        let Some(committer) = &self.committer else {
            return self.record_alerts_ranked(alerts, urgent, now).await;
        };
        let (answer, answered) = oneshot::channel();
        let delivery = Delivery {
            alerts: alerts.to_vec(),
            urgent: urgent.to_vec(),
            now,
            answer,
        };
        if committer.send(delivery).await.is_err() {
            return self.record_alerts_ranked(alerts, urgent, now).await;
        }
        answered.await.unwrap_or(Err(StoreError::CommitterGone))
    }
}

async fn run(store: Store, mut deliveries: mpsc::Receiver<Delivery>) {
    let mut held_over = None;
    loop {
        let first = match held_over.take() {
            Some(delivery) => delivery,
            None => match deliveries.recv().await {
                Some(delivery) => delivery,
                None => return,
            },
        };
        let turn = store.write_turn().await;
        let mut alerts = first.alerts.len();
        let mut batch = vec![first];
        while alerts < MAX_BATCH_ALERTS {
            let Ok(next) = deliveries.try_recv() else {
                break;
            };
            if alerts + next.alerts.len() > MAX_BATCH_ALERTS {
                held_over = Some(next);
                break;
            }
            alerts += next.alerts.len();
            batch.push(next);
        }
        batch.retain(|d| !d.answer.is_closed());
        if !batch.is_empty() {
            commit(&store, turn, batch).await;
        }
    }
}

/// Records a batch in one transaction and answers each member.
async fn commit(store: &Store, turn: WriteTurn, batch: Vec<Delivery>) {
    let answers = match record_batch(store, turn, &batch).await {
        Ok(answers) => answers,
        Err(e) => {
            let shared = Arc::new(e);
            let members = batch.len();
            batch
                .iter()
                .map(|_| {
                    Err(StoreError::Group {
                        members,
                        source: shared.clone(),
                    })
                })
                .collect()
        }
    };
    for (delivery, answer) in batch.into_iter().zip(answers) {
        // The caller may have gone away meanwhile; its alerts are recorded all the same.
        let _ = delivery.answer.send(answer);
    }
}

/// Each member's own result, or the error that failed the shared transaction.
async fn record_batch(
    store: &Store,
    turn: WriteTurn,
    batch: &[Delivery],
) -> Result<Vec<Result<Vec<Received>>>> {
    let mut tx = store.begin_in_turn(turn).await?;
    let parts: Vec<Part<'_>> = batch
        .iter()
        .map(|d| Part {
            alerts: &d.alerts,
            urgent: &d.urgent,
            now: d.now,
        })
        .collect();
    if intake::applies(&parts) {
        sqlx::query("SAVEPOINT together").execute(&mut *tx).await?;
        match intake::record_in(&mut tx, &parts).await {
            Ok(answers) => {
                sqlx::query("RELEASE together").execute(&mut *tx).await?;
                tx.commit().await?;
                return Ok(answers.into_iter().map(Ok).collect());
            }
            Err(e) => {
                warn!(deliveries = batch.len(), error = %e,
                    "could not record deliveries together; recording each on its own");
                sqlx::query("ROLLBACK TO together")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("RELEASE together").execute(&mut *tx).await?;
            }
        }
    }
    let mut answers = Vec::with_capacity(batch.len());
    for d in batch {
        sqlx::query("SAVEPOINT delivery").execute(&mut *tx).await?;
        match record_in(&mut tx, &d.alerts, &d.urgent, d.now).await {
            Ok(received) => answers.push(Ok(received)),
            Err(e) => {
                sqlx::query("ROLLBACK TO delivery")
                    .execute(&mut *tx)
                    .await?;
                answers.push(Err(e));
            }
        }
        sqlx::query("RELEASE delivery").execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(answers)
}
