//! Fencing of leaders: the epoch each leader takes, and the check that makes an action intent
//! from a deposed leader impossible to record.
//!
//! Data model: the one row of `leadership` (migration 0008) holds the newest epoch, who took
//! it and when. A replica that wins the Lease takes the next epoch ([`Store::take_leadership`]);
//! from then on its handle carries [`Fence::Holding`] with that epoch, and every action intent
//! it writes first checks, in the same transaction, that the epoch is still the newest. The
//! write transaction holds the store's write lock (an advisory lock on PostgreSQL), so no
//! other leader can take an epoch between the check and the commit. A store that never took
//! part in an election ([`Fence::Off`]: SQLite, one replica) writes without the check.

use jiff::Timestamp;
use sqlx::Row;

use super::{Result, Store, StoreError, ts_text};

/// What this handle may write, as far as leadership goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fence {
    /// No election: every intent is written (one replica).
    Off,
    /// This replica leads under this epoch: intents are written while it is the newest.
    Holding(i64),
    /// This replica took part in the election and does not lead now: no intent is written.
    Lost,
}

/// A term of leadership, as taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Term {
    pub epoch: i64,
    /// Who held the previous epoch, if anyone did (the handover shown on incidents).
    pub previous: Option<String>,
}

impl Store {
    /// Takes the next epoch for `holder`, which has just won the Lease, and arms this
    /// handle's fence with it. Every clone of this handle shares the fence.
    pub async fn take_leadership(&self, holder: &str, now: Timestamp) -> Result<Term> {
        let mut tx = self.write_tx().await?;
        let previous: Option<String> = sqlx::query("SELECT holder FROM leadership WHERE id = 1")
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get("holder"))
            .transpose()?;
        let epoch: i64 = sqlx::query(
            "INSERT INTO leadership (id, epoch, holder, since) VALUES (1, 1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET epoch = leadership.epoch + 1,
                holder = excluded.holder, since = excluded.since
             RETURNING epoch",
        )
        .bind(holder)
        .bind(ts_text(now))
        .fetch_one(&mut *tx)
        .await?
        .try_get("epoch")?;
        tx.commit().await?;
        self.set_fence(Fence::Holding(epoch));
        Ok(Term { epoch, previous })
    }

    /// Disarms this replica's intents: it no longer leads (or never did, yet).
    pub fn lose_leadership(&self) {
        self.set_fence(Fence::Lost);
    }

    /// What this handle may write.
    pub fn fence(&self) -> Fence {
        *self.fence.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_fence(&self, fence: Fence) {
        *self.fence.lock().unwrap_or_else(|p| p.into_inner()) = fence;
    }
}

/// Inside a write transaction: refuses unless `fence` allows an action intent now.
pub(super) async fn check(tx: &mut sqlx::AnyConnection, fence: Fence) -> Result<()> {
    let epoch = match fence {
        Fence::Off => return Ok(()),
        Fence::Lost => return Err(StoreError::NotLeader),
        Fence::Holding(epoch) => epoch,
    };
    let newest: Option<i64> = sqlx::query("SELECT epoch FROM leadership WHERE id = 1")
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get("epoch"))
        .transpose()?;
    match newest {
        Some(newest) if newest == epoch => Ok(()),
        newest => Err(StoreError::Fenced {
            epoch,
            newest: newest.unwrap_or(0),
        }),
    }
}
