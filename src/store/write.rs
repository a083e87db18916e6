//! Writes: recording alerts on receipt, decisions with their intent, and action results.
//!
//! Each method is one transaction, so an incident never shows a decision without the timeline
//! entries that explain it, and a notification about it is queued exactly when it is recorded.

use std::sync::Arc;

use jiff::Timestamp;
use serde_json::{Value, json};
use sqlx::Row;

use super::batch::{Entry, append_all};
use super::outbox::{NewMessage, enqueue};
use super::{Result, Store, json_text, ts_text};
use crate::core::alert::{Alert, AlertKey, AlertStatus};
use crate::core::engine::{Decision, Outcome, PastAction, RolloutRef, WorkloadRef, describe};
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
    /// A firing alert whose earlier decision failed for a transient reason: decided again.
    pub reopened: bool,
}

impl Received {
    /// Whether the alert now awaits a decision: first delivered, or reopened.
    pub fn awaits_decision(&self) -> bool {
        self.fresh || self.reopened
    }
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
    /// The write's answer was lost and the object could not be read again: it may or may
    /// not have applied. Settled later by re-reading; until then it blocks the cause.
    Unknown,
}

impl ActionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionStatus::Succeeded => "succeeded",
            ActionStatus::Skipped => "skipped",
            ActionStatus::Failed => "failed",
            ActionStatus::Unknown => "unknown",
        }
    }
}

/// What becomes of an alert after its action's result is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Followup {
    /// Decided for good.
    Done,
    /// Decided again at this time (a transient failure, or an action settled as not applied).
    RetryAt(Timestamp),
    /// Attempts used up: decided again only if the alert is delivered again.
    RetryOnDelivery,
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
    /// Failed for a reason that may pass (5xx, 429, timeout, unreachable): worth deciding again.
    pub transient: bool,
}

/// The outcome an incident and its alert show while an action is under way.
pub const ACTING: &str = "acting";

/// Outcomes that a later, lesser decision must not hide on the incident.
const SIGNIFICANT: [&str; 8] = [
    "rolled-back",
    "aborted",
    "would-roll-back",
    "failed",
    ACTING,
    "unsettled",
    "recovered",
    "not-recovered",
];

/// Whether an incident showing `code` keeps it over a later, lesser decision.
pub(super) fn is_significant(code: &str) -> bool {
    SIGNIFICANT.contains(&code)
}

/// [`SIGNIFICANT`] as an SQL list, for `outcome IN …`.
pub(super) fn significant_sql() -> String {
    let quoted: Vec<String> = SIGNIFICANT.iter().map(|c| format!("'{c}'")).collect();
    format!("({})", quoted.join(", "))
}

/// The incident an alert's decision is filed under: its key (the workload and the rollout
/// blamed, or the alert alone when no workload matched), the workload and the rollout.
pub(super) fn incident_of<'d>(
    alert: &Alert,
    decision: &'d Decision,
) -> (String, Option<&'d WorkloadRef>, Option<&'d RolloutRef>) {
    match (&decision.workload, &decision.rollout) {
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
    }
}

/// The message and data of an alert's `received` timeline entry.
fn received_entry(alert_id: i64, alert: &Alert) -> (String, Value) {
    let labels: Vec<String> = alert
        .labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect();
    (
        format!(
            "{} {} from {} (started {}): {{{}}}",
            alert.name(),
            alert.status.as_str(),
            alert.source,
            alert.starts_at,
            labels.join(", ")
        ),
        json!({"alert_id": alert_id, "fingerprint": alert.fingerprint.to_string(),
                "generator_url": alert.generator_url, "annotations": alert.annotations}),
    )
}

/// The message of a decision's `correlated` timeline entry.
fn correlated_text(workload: Option<&WorkloadRef>, rollout: Option<&RolloutRef>) -> String {
    match (workload, rollout) {
        (Some(w), Some(r)) => format!(
            "correlated with {w}, current {} since {}",
            describe(&r.revision),
            r.since
        ),
        (Some(w), None) => format!("correlated with {w}"),
        _ => "no workload found for this alert".to_string(),
    }
}

/// A decision's timeline entries, in order: `received`, for the first decision about an
/// alert only (`received` gives its id, the alert and the time it was recorded, not the time
/// it was decided), then `correlated` and `decision` at `at`.
pub(super) fn decision_entries(
    incident_id: i64,
    received: Option<(i64, &Alert, String)>,
    at: &str,
    workload: Option<&WorkloadRef>,
    rollout: Option<&RolloutRef>,
    outcome: &'static str,
    reason: String,
) -> impl Iterator<Item = Entry> {
    let received = received.map(|(alert_id, alert, received_at)| {
        let (message, data) = received_entry(alert_id, alert);
        Entry {
            incident_id,
            at: received_at,
            kind: "received",
            outcome: None,
            message,
            data: Some(data.to_string()),
        }
    });
    let correlated = Entry {
        incident_id,
        at: at.to_string(),
        kind: "correlated",
        outcome: None,
        message: correlated_text(workload, rollout),
        data: None,
    };
    let decision = Entry {
        incident_id,
        at: at.to_string(),
        kind: "decision",
        outcome: Some(outcome),
        message: reason,
        data: None,
    };
    [received, Some(correlated), Some(decision)]
        .into_iter()
        .flatten()
}

/// The reason a decision's timeline entry gives: a later attempt says which it is.
pub(super) fn attempt_reason(attempt: i64, provisional: bool, reason: &str) -> String {
    if attempt > 1 && !provisional {
        format!("attempt {attempt}: {reason}")
    } else {
        reason.to_string()
    }
}

impl Store {
    /// Records a delivery of alerts in one transaction. Duplicates only bump a counter; a
    /// resolved alert closes its firing twin and, with it, the incident once all are resolved.
    pub async fn record_alerts(&self, alerts: &[Alert], now: Timestamp) -> Result<Vec<Received>> {
        self.record_alerts_ranked(alerts, &[], now).await
    }

    /// As [`Store::record_alerts`], with each alert's urgency (missing: urgent): the worker
    /// decides urgent alerts first.
    pub async fn record_alerts_ranked(
        &self,
        alerts: &[Alert],
        urgent: &[bool],
        now: Timestamp,
    ) -> Result<Vec<Received>> {
        let mut tx = self.write_tx().await?;
        let out = record_in(&mut tx, alerts, urgent, now).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Actions that count against acting again: every one not known to have failed or been
    /// skipped (intended, unknown, succeeded), not dry-run. The state each one reverted to (or
    /// may have) counts as rollbackd's own, whatever became of the action.
    ///
    /// Read again only when the table's version (kept by triggers on every change to an action
    /// or a hold, whoever makes it) moved since the last read; otherwise the last read is
    /// returned. The version is read first, so a change that lands during the read is seen
    /// by the next call.
    pub async fn past_actions(&self) -> Result<Arc<[PastAction]>> {
        let version: i64 = sqlx::query("SELECT version FROM actions_version WHERE id = 1")
            .fetch_one(&self.pool)
            .await?
            .try_get("version")?;
        if let Some((at, past)) = &*self.past.lock().unwrap_or_else(|p| p.into_inner())
            && *at == version
        {
            return Ok(past.clone());
        }
        let past: Arc<[PastAction]> = self.read_past_actions().await?.into();
        *self.past.lock().unwrap_or_else(|p| p.into_inner()) = Some((version, past.clone()));
        Ok(past)
    }

    /// The past actions as last read by [`Store::past_actions`] (none before the first read),
    /// without asking the database: for the ranking of alerts on receipt, which is only an
    /// order and must not add a query to every delivery.
    pub fn past_actions_last_read(&self) -> Arc<[PastAction]> {
        match &*self.past.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((_, past)) => past.clone(),
            None => Arc::from([]),
        }
    }

    async fn read_past_actions(&self) -> Result<Vec<PastAction>> {
        let rows = sqlx::query(
            "SELECT ac.incident_id, ac.workload_uid, ac.blamed_uid, ac.status, ac.target_uid,
                    ac.intended_at, i.held
             FROM actions ac JOIN incidents i ON i.id = ac.incident_id
             WHERE ac.dry_run = 0 AND ac.status IN ('intended', 'unknown', 'succeeded')
             ORDER BY ac.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PastAction {
                    incident_id: r.try_get("incident_id")?,
                    workload_uid: r.try_get("workload_uid")?,
                    blamed_uid: r.try_get("blamed_uid")?,
                    target_uid: r.try_get("target_uid")?,
                    at: super::parse_ts(&r.try_get::<String, _>("intended_at")?)?,
                    settled: r.try_get::<String, _>("status")? == "succeeded",
                    held: r.try_get::<i64, _>("held")? == 1,
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
        let audit = self.audit_stamp();
        let recorded = record_decision_in(
            &mut tx,
            self.fence(),
            alert_id,
            alert,
            decision,
            now,
            audit,
            notify,
        )
        .await?;
        if recorded.is_none() {
            tx.rollback().await?;
            return Ok(None);
        }
        tx.commit().await?;
        Ok(recorded)
    }

    /// Records acting decisions (with their intents and the audit stamp), several in one
    /// transaction: a round of reverts on different workloads costs one sync before the API
    /// is called. Returns, in order, where each was recorded (`None` for an alert already
    /// decided).
    pub async fn record_intents(
        &self,
        batch: &[(i64, &Alert, &Decision)],
        now: Timestamp,
    ) -> Result<Vec<Option<Recorded>>> {
        let fence = self.fence();
        let audit = self.audit_stamp();
        let mut tx = self.write_tx().await?;
        let mut out = Vec::with_capacity(batch.len());
        for (alert_id, alert, decision) in batch {
            let recorded = record_decision_in(
                &mut tx,
                fence,
                *alert_id,
                alert,
                decision,
                now,
                audit,
                |_| Vec::new(),
            )
            .await?;
            out.push(recorded);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Records decisions that act on nothing, several in one transaction and a handful of
    /// statements (`quiet`): a backlog of alerts about quiet workloads costs one sync per
    /// batch, not one per alert, and little CPU. Each decision gets the messages `notify`
    /// builds for it. Returns, in order, where each was recorded (`None` for an alert already
    /// decided).
    pub async fn record_decisions(
        &self,
        batch: &[(i64, &Alert, &Decision)],
        now: Timestamp,
        notify: impl FnMut(usize, i64) -> Vec<NewMessage>,
    ) -> Result<Vec<Option<Recorded>>> {
        debug_assert!(
            batch.iter().all(|(_, _, d)| d.command.is_none()),
            "acting decisions are recorded by record_intents"
        );
        let mut tx = self.write_tx().await?;
        let out = super::quiet::record_in(&mut tx, batch, now, notify).await?;
        tx.commit().await?;
        Ok(out)
    }
}

/// One decision inside a write transaction; `None` (and nothing written) if the alert was
/// already decided.
#[allow(clippy::too_many_arguments)]
async fn record_decision_in(
    tx: &mut sqlx::AnyConnection,
    fence: super::Fence,
    alert_id: i64,
    alert: &Alert,
    decision: &Decision,
    now: Timestamp,
    audit: Option<&super::AuditStamp>,
    notify: impl FnOnce(i64) -> Vec<NewMessage>,
) -> Result<Option<Recorded>> {
    {
        let now_text = ts_text(now);
        // The worker is the only decider and holds the write lock, so this check stands.
        let Some(row) = sqlx::query(
            "SELECT attempts, received_at, outcome FROM alerts WHERE id = $1 AND decided_at IS NULL",
        )
        .bind(alert_id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let earlier_attempts: i64 = row.try_get("attempts")?;
        let received_at: String = row.try_get("received_at")?;
        let never_decided = row.try_get::<Option<String>, _>("outcome")?.is_none();
        // A decision to wait for fresh data is provisional: the alert stays undecided.
        let provisional = decision.outcome == Outcome::StaleData;
        // Until the executor reports, an incident with an action under way says so.
        let shown = if decision.command.is_some() {
            ACTING
        } else {
            decision.outcome.code()
        };
        let (key, workload, rollout) = incident_of(alert, decision);
        let significant = significant_sql();
        let incident_id: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO incidents (incident_key, namespace, workload_kind, workload_name, workload_uid,
                rollout_name, rollout_uid, rollout_revision, rollout_image, rollout_since,
                opened_at, updated_at, status, outcome, reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, 'open', $12, $13)
             ON CONFLICT (incident_key) DO UPDATE SET
                updated_at = excluded.updated_at, status = 'open', resolved_at = NULL,
                outcome = CASE WHEN incidents.outcome IN {significant} THEN incidents.outcome ELSE excluded.outcome END,
                reason = CASE WHEN incidents.outcome IN {significant} THEN incidents.reason ELSE excluded.reason END
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

        sqlx::query(
            "UPDATE alerts SET incident_id = $1, outcome = $2, reason = $3, decided_at = $4,
                attempts = attempts + $5, retry_at = NULL, retry_on_delivery = 0
             WHERE id = $6",
        )
        .bind(incident_id)
        .bind(shown)
        .bind(&decision.reason)
        .bind((!provisional).then_some(now_text.as_str()))
        .bind(i64::from(!provisional))
        .bind(alert_id)
        .execute(&mut *tx)
        .await?;

        // An alert is received once; a later decision about it is another attempt. The
        // entries go in one statement.
        let received = if never_decided {
            Some((alert_id, alert, ts_text(super::parse_ts(&received_at)?)))
        } else {
            None
        };
        let entries = decision_entries(
            incident_id,
            received,
            &now_text,
            workload,
            rollout,
            decision.outcome.code(),
            attempt_reason(earlier_attempts + 1, provisional, &decision.reason),
        );
        append_all(&mut *tx, entries.collect()).await?;

        let mut action_id = None;
        if let Some(command) = &decision.command {
            super::fence::check(tx, fence).await?;
            let intent = command.intent();
            let id: i64 = sqlx::query(
                "INSERT INTO actions (incident_id, alert_id, kind, namespace, workload_name,
                    workload_uid, blamed_uid, blamed_name, target_uid, target_name, dry_run,
                    intended_at, status, actor, version, config_hash, policy)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'intended',
                    $13, $14, $15, $16)
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
            .bind(i64::from(intent.dry_run))
            .bind(&now_text)
            .bind(audit.map(|a| &a.actor))
            .bind(audit.map(|a| &a.version))
            .bind(audit.map(|a| &a.config_hash))
            .bind(audit.map(|a| json_text(&a.policy)))
            .fetch_one(&mut *tx)
            .await?
            .try_get("id")?;
            append(
                &mut *tx,
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
        enqueue(&mut *tx, incident_id, &notify(incident_id), now).await?;
        Ok(Some(Recorded {
            incident_id,
            action_id,
        }))
    }
}

impl Store {
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
        self.record_outcome(
            action_id,
            recorded.incident_id,
            alert_id,
            result,
            Followup::Done,
            messages,
            now,
        )
        .await
    }

    /// Records an action's result (also one found by settling), what becomes of its alert,
    /// and the messages reporting it, in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_outcome(
        &self,
        action_id: i64,
        incident_id: i64,
        alert_id: i64,
        result: &ActionResult,
        followup: Followup,
        messages: &[NewMessage],
        now: Timestamp,
    ) -> Result<()> {
        self.record_outcomes(
            &[ActionOutcome {
                action_id,
                incident_id,
                alert_id,
                result,
                followup,
                messages,
                verify_until: None,
            }],
            now,
        )
        .await
    }

    /// Records the results of a round of actions in one transaction: each one's result, what
    /// becomes of its alert, its messages and, for an applied revert, when its verification
    /// ends.
    pub async fn record_outcomes(
        &self,
        outcomes: &[ActionOutcome<'_>],
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        for o in outcomes {
            record_outcome_in(&mut tx, o, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// One action's result, for [`Store::record_outcomes`].
pub struct ActionOutcome<'a> {
    pub action_id: i64,
    pub incident_id: i64,
    pub alert_id: i64,
    pub result: &'a ActionResult,
    pub followup: Followup,
    pub messages: &'a [NewMessage],
    /// An applied revert is verified until then.
    pub verify_until: Option<Timestamp>,
}

async fn record_outcome_in(
    tx: &mut sqlx::AnyConnection,
    o: &ActionOutcome<'_>,
    now: Timestamp,
) -> Result<()> {
    let ActionOutcome {
        action_id,
        incident_id,
        alert_id,
        result,
        followup,
        messages,
        verify_until,
    } = *o;
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
    let (retry_at, on_delivery) = match followup {
        Followup::Done => (None, false),
        Followup::RetryAt(at) => (Some(ts_text(at)), false),
        Followup::RetryOnDelivery => (None, true),
    };
    sqlx::query(
        "UPDATE alerts SET outcome = $1, reason = $2, retry_at = $3, retry_on_delivery = $4,
            decided_at = CASE WHEN $3 IS NULL THEN decided_at ELSE NULL END
         WHERE id = $5",
    )
    .bind(result.outcome.code())
    .bind(&result.message)
    .bind(&retry_at)
    .bind(i64::from(on_delivery))
    .bind(alert_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE incidents SET outcome = $1, reason = $2, updated_at = $3 WHERE id = $4")
        .bind(result.outcome.code())
        .bind(&result.message)
        .bind(&now_text)
        .bind(incident_id)
        .execute(&mut *tx)
        .await?;
    append(
        tx,
        incident_id,
        now,
        "result",
        Some(result.outcome),
        &result.message,
        &result.data,
    )
    .await?;
    enqueue(tx, incident_id, messages, now).await?;
    if let Some(until) = verify_until {
        sqlx::query(
            "UPDATE actions SET verify_until = $1
             WHERE id = $2 AND dry_run = 0 AND status = 'succeeded' AND verified_at IS NULL",
        )
        .bind(ts_text(until))
        .bind(action_id)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

pub(super) async fn append(
    tx: &mut sqlx::AnyConnection,
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

/// Records one delivery inside a write transaction: the body of
/// [`Store::record_alerts_ranked`], shared with the group committer (`group`), which runs it
/// for each delivery of a batch in one transaction.
pub(super) async fn record_in(
    tx: &mut sqlx::AnyConnection,
    alerts: &[Alert],
    urgent: &[bool],
    now: Timestamp,
) -> Result<Vec<Received>> {
    let now_text = ts_text(now);
    let mut out = Vec::with_capacity(alerts.len());
    for (i, alert) in alerts.iter().enumerate() {
        let priority = i64::from(urgent.get(i).copied().unwrap_or(true));
        let fp = alert.fingerprint.to_string();
        let starts = ts_text(alert.starts_at);
        let existing = sqlx::query(
            "SELECT id, status, incident_id, retry_on_delivery FROM alerts
             WHERE fingerprint = $1 AND starts_at = $2",
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
                    last_received_at, outcome, reason, decided_at, resolved_at, priority)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13, $14, $15, $16)
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
            .bind(priority)
            .fetch_one(&mut *tx)
            .await?
            .try_get("id")?;
            out.push(Received {
                alert_id: id,
                key: alert.key(),
                fresh: true,
                resolved_now: false,
                reopened: false,
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
        // A transient failure whose retries were used up is decided again now that the
        // alert is still being delivered as firing.
        let reopened = !resolved && row.try_get::<i64, _>("retry_on_delivery")? == 1;
        if reopened {
            reopen(tx, id).await?;
        }
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
                    tx,
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
                        tx,
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
            reopened,
        });
    }
    announce(tx, &out).await?;
    Ok(out)
}

/// Makes an alert whose retries were used up undecided again, and urgent: it was delivered
/// again as firing.
pub(super) async fn reopen(tx: &mut sqlx::AnyConnection, alert_id: i64) -> Result<()> {
    sqlx::query(
        "UPDATE alerts SET decided_at = NULL, retry_at = NULL, retry_on_delivery = 0,
            priority = 1 WHERE id = $1",
    )
    .bind(alert_id)
    .execute(tx)
    .await?;
    Ok(())
}

/// Replicas share a PostgreSQL store: the leader is told at commit that alerts await a
/// decision (`Store::listen_for_alerts`), wherever they were received.
pub(super) async fn announce<'r>(
    tx: &mut sqlx::AnyConnection,
    received: impl IntoIterator<Item = &'r Received>,
) -> Result<()> {
    if tx.backend_name() == "PostgreSQL" && received.into_iter().any(Received::awaits_decision) {
        sqlx::query(sqlx::AssertSqlSafe(format!("NOTIFY {ALERTS_CHANNEL}")))
            .execute(tx)
            .await?;
    }
    Ok(())
}

/// The PostgreSQL notification channel on which a commit of new alerts is announced.
pub(super) const ALERTS_CHANNEL: &str = "rollbackd_alerts";
