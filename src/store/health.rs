//! Inconclusive periods of the poller: when a rule could not be evaluated, and why.

use jiff::Timestamp;
use serde::Serialize;
use sqlx::Row;

use super::{Result, Store, ts_text};

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct InconclusivePeriod {
    pub rule: String,
    pub reason: String,
    pub started_at: String,
    pub ended_at: Option<String>,
}

impl Store {
    /// Opens an inconclusive period for `rule` (one per health change, not per poll).
    pub async fn record_inconclusive(
        &self,
        rule: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<()> {
        sqlx::query("INSERT INTO inconclusive (rule, reason, started_at) VALUES ($1, $2, $3)")
            .bind(rule)
            .bind(reason)
            .bind(ts_text(now))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Closes the open inconclusive period of `rule`, if any.
    pub async fn record_conclusive(&self, rule: &str, now: Timestamp) -> Result<()> {
        sqlx::query("UPDATE inconclusive SET ended_at = $1 WHERE rule = $2 AND ended_at IS NULL")
            .bind(ts_text(now))
            .bind(rule)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn inconclusive_periods(&self) -> Result<Vec<InconclusivePeriod>> {
        let rows = sqlx::query(
            "SELECT rule, reason, started_at, ended_at FROM inconclusive ORDER BY id DESC LIMIT 500",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(InconclusivePeriod {
                    rule: r.try_get("rule")?,
                    reason: r.try_get("reason")?,
                    started_at: r.try_get("started_at")?,
                    ended_at: r.try_get("ended_at")?,
                })
            })
            .collect()
    }
}
