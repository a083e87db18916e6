//! Traffic changes: the selector and weight history the cluster does not keep.

use jiff::Timestamp;
use sqlx::Row;

use super::{Result, Store, StoreError, parse_ts, ts_text};
use crate::core::traffic::{TrafficChange, TrafficKind};

impl Store {
    pub async fn record_traffic_change(&self, change: &TrafficChange) -> Result<()> {
        sqlx::query(
            "INSERT INTO traffic_changes (kind, namespace, name, uid, at, from_state, to_state)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(change.kind.as_str())
        .bind(&change.namespace)
        .bind(&change.name)
        .bind(&change.uid)
        .bind(ts_text(change.at))
        .bind(change.from.to_string())
        .bind(change.to.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The latest change of every object, to restore the index at start-up.
    pub async fn latest_traffic_changes(&self) -> Result<Vec<TrafficChange>> {
        let rows = sqlx::query(
            "SELECT kind, namespace, name, uid, at, from_state, to_state FROM traffic_changes t
             WHERE id = (SELECT MAX(id) FROM traffic_changes u
                         WHERE u.kind = t.kind AND u.namespace = t.namespace AND u.name = t.name)",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(change_from_row).collect()
    }

    /// Every recorded change of one object, oldest first, for incident reviews.
    pub async fn traffic_history(
        &self,
        kind: TrafficKind,
        namespace: &str,
        name: &str,
        since: Timestamp,
    ) -> Result<Vec<TrafficChange>> {
        let rows = sqlx::query(
            "SELECT kind, namespace, name, uid, at, from_state, to_state FROM traffic_changes
             WHERE kind = $1 AND namespace = $2 AND name = $3 AND at >= $4 ORDER BY id",
        )
        .bind(kind.as_str())
        .bind(namespace)
        .bind(name)
        .bind(ts_text(since))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(change_from_row).collect()
    }
}

fn change_from_row(r: &sqlx::any::AnyRow) -> Result<TrafficChange> {
    let kind: String = r.try_get("kind")?;
    let json = |col: &str| -> Result<serde_json::Value> {
        let text: String = r.try_get(col)?;
        serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
    };
    Ok(TrafficChange {
        kind: TrafficKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("traffic kind {kind:?}")))?,
        namespace: r.try_get("namespace")?,
        name: r.try_get("name")?,
        uid: r.try_get("uid")?,
        at: parse_ts(&r.try_get::<String, _>("at")?)?,
        from: json("from_state")?,
        to: json("to_state")?,
    })
}
