//! What is recorded a batch at a time is exactly what recording one at a time records: the
//! same alerts, incidents, timeline and outbox, in the same order. For decisions that act on
//! nothing (`quiet`) and for a group commit's deliveries of firing alerts (`intake`).

use sqlx::Row;

use super::test_db::{TestDb, alert_about, on_both, rev, t};
use super::*;
use crate::core::alert::{Alert, AlertStatus, Fingerprint};
use crate::core::engine::{Decision, Outcome, RolloutRef, WorkloadRef};

/// Alert `n` about Deployment `workload`: its own fingerprint.
fn numbered(workload: &str, n: usize) -> Alert {
    let mut alert = alert_about(workload, AlertStatus::Firing);
    alert.labels.insert("pod".into(), format!("{workload}-{n}"));
    alert.fingerprint = Fingerprint::of(&alert.labels);
    alert
}

fn about(workload: Option<&str>, rollout: Option<i64>, outcome: Outcome, reason: &str) -> Decision {
    Decision {
        outcome,
        reason: reason.into(),
        workload: workload.map(|w| WorkloadRef {
            kind: "Deployment".into(),
            namespace: "default".into(),
            name: w.into(),
            uid: format!("uid-{w}"),
        }),
        rollout: rollout.map(|r| RolloutRef {
            revision: rev(&format!("{}-{r}", workload.unwrap_or("x")), r),
            since: t(50),
        }),
        command: None,
    }
}

/// The batch: enough alerts to need several statements of each kind, over incidents old and
/// new, with outcomes that an incident keeps and ones it does not.
fn batch() -> Vec<(Alert, Decision)> {
    let mut out = Vec::new();
    for n in 0..450 {
        let (alert, decision) = match n % 9 {
            0 | 1 => (
                numbered("web", n),
                about(
                    Some("web"),
                    Some(3),
                    Outcome::AlreadyRolledBack,
                    "web was rolled back",
                ),
            ),
            2 => (
                numbered("api", n),
                about(
                    Some("api"),
                    Some(2),
                    Outcome::NoRecentRollout,
                    &format!("quiet {n}"),
                ),
            ),
            // Significant: the api incident keeps the first one from here on.
            3 => (
                numbered("api", n),
                about(
                    Some("api"),
                    Some(2),
                    Outcome::Unsettled,
                    &format!("unsettled {n}"),
                ),
            ),
            4 => (
                numbered("db", n),
                about(Some("db"), None, Outcome::PreExisting, "no rollout blamed"),
            ),
            5 => (
                numbered("ghost", n),
                about(None, None, Outcome::NoWorkload, "nothing matches"),
            ),
            // Notable: messages queued in the same transaction.
            6 => (
                numbered("cache", n),
                about(
                    Some("cache"),
                    Some(7),
                    Outcome::StaleData,
                    &format!("stale {n}"),
                ),
            ),
            7 => (
                numbered(&format!("w{}", n % 50), n),
                about(
                    Some(&format!("w{}", n % 50)),
                    Some(1),
                    Outcome::Cooldown,
                    "cooling",
                ),
            ),
            _ => (
                numbered("web", n),
                about(Some("web"), Some(3), Outcome::NotifyOnly, "notify only"),
            ),
        };
        out.push((alert, decision));
    }
    out
}

fn messages(outcome: Outcome, n: usize) -> Vec<NewMessage> {
    if outcome != Outcome::StaleData {
        return Vec::new();
    }
    ["#oncall", "#payments"]
        .iter()
        .map(|d| NewMessage {
            channel: "slack".into(),
            destination: d.to_string(),
            event: format!("decision:{n}"),
            payload: serde_json::json!({"n": n}),
            deadline: t(1000),
        })
        .collect()
}

/// The same history before the batch: every alert recorded; `web`'s incident already acting
/// (an earlier decision with an intent); one alert already decided; one decided once before
/// and undecided again (a second attempt); one provisionally decided (stale-data).
async fn prepare(store: &Store, alerts: &[Alert]) -> Vec<i64> {
    let ids: Vec<i64> = store
        .record_alerts(alerts, t(101))
        .await
        .expect("record")
        .iter()
        .map(|r| r.alert_id)
        .collect();
    let mut acting = about(Some("web"), Some(3), Outcome::RolledBack, "the first alert");
    acting.command = Some(crate::core::engine::Command::UndoDeployment(
        crate::core::engine::UndoDeployment {
            namespace: "default".into(),
            name: "web".into(),
            uid: "uid-web".into(),
            blamed: rev("web-3", 3),
            planned_target: rev("web-2", 2),
            selector: String::new(),
            dry_run: false,
        },
    ));
    let extra = numbered("web", 10_000);
    let extra_id = store
        .record_alerts(std::slice::from_ref(&extra), t(101))
        .await
        .expect("record")[0]
        .alert_id;
    store
        .record_decision(extra_id, &extra, &acting, t(102))
        .await
        .expect("decide")
        .expect("recorded");
    let quiet = about(Some("db"), None, Outcome::PreExisting, "decided before");
    for at in [13, 22] {
        store
            .record_decision(ids[at], &alerts[at], &quiet, t(102))
            .await
            .expect("decide")
            .expect("recorded");
    }
    sqlx::query("UPDATE alerts SET decided_at = NULL WHERE id = $1")
        .bind(ids[22])
        .execute(&store.pool)
        .await
        .expect("undecide");
    let stale = about(Some("cache"), Some(7), Outcome::StaleData, "waited");
    store
        .record_decision(ids[15], &alerts[15], &stale, t(102))
        .await
        .expect("decide")
        .expect("recorded");
    ids
}

/// Every row that recording writes, with incidents named by key rather than id (identity
/// columns on PostgreSQL skip numbers on conflicts).
async fn dump(store: &Store) -> Vec<String> {
    let mut out = Vec::new();
    for sql in [
        "SELECT a.id, i.incident_key, a.fingerprint, a.starts_at, a.source, a.alertname,
                a.status, a.labels, a.annotations, a.generator_url, a.external_url, a.ends_at,
                a.received_at, a.last_received_at, a.deliveries, a.outcome, a.reason,
                a.decided_at, a.resolved_at, a.priority, a.attempts, a.retry_at,
                a.retry_on_delivery
         FROM alerts a LEFT JOIN incidents i ON i.id = a.incident_id ORDER BY a.id",
        "SELECT incident_key, namespace, workload_kind, workload_name, workload_uid,
                rollout_name, rollout_uid, rollout_revision, rollout_image, rollout_since,
                opened_at, updated_at, status, outcome, reason, resolved_at
         FROM incidents ORDER BY id",
        "SELECT i.incident_key, t.at, t.kind, t.outcome, t.message, t.data
         FROM timeline t JOIN incidents i ON i.id = t.incident_id ORDER BY t.id",
        "SELECT i.incident_key, o.channel, o.destination, o.event, o.payload, o.status
         FROM outbox o JOIN incidents i ON i.id = o.incident_id ORDER BY o.id",
    ] {
        for row in sqlx::query(sql).fetch_all(&store.pool).await.expect(sql) {
            let cells: Vec<String> = (0..row.columns().len())
                .map(|i| match row.try_get::<Option<i64>, _>(i) {
                    Ok(v) => format!("{v:?}"),
                    Err(_) => format!("{:?}", row.try_get::<Option<String>, _>(i).expect("text")),
                })
                .collect();
            out.push(cells.join(" | "));
        }
    }
    out
}

async fn a_batch_records_what_one_at_a_time_records(db: TestDb) {
    let batch = batch();
    let alerts: Vec<Alert> = batch.iter().map(|(a, _)| a.clone()).collect();
    let now = t(110);

    let one_at_a_time = db.open().await;
    let ids = prepare(&one_at_a_time, &alerts).await;
    let mut expected = Vec::new();
    for (n, ((alert, decision), id)) in batch.iter().zip(&ids).enumerate() {
        let recorded = one_at_a_time
            .record_decision_and_notify(*id, alert, decision, now, |_| {
                messages(decision.outcome, n)
            })
            .await
            .expect("decide");
        expected.push(recorded.is_some());
    }

    let other = db.sibling().await;
    let batched = other.open().await;
    assert_eq!(prepare(&batched, &alerts).await, ids);
    let items: Vec<(i64, &Alert, &Decision)> = batch
        .iter()
        .zip(&ids)
        .map(|((a, d), id)| (*id, a, d))
        .collect();
    let recorded = batched
        .record_decisions(&items, now, |n, _| messages(batch[n].1.outcome, n))
        .await
        .expect("decide");
    let got: Vec<bool> = recorded.iter().map(Option::is_some).collect();
    assert_eq!(got, expected);
    // The alert decided before the batch is left alone; the one undecided again is not.
    assert!(!got[13] && got[22] && got[15]);

    let (want, have) = (dump(&one_at_a_time).await, dump(&batched).await);
    assert!(want.len() > 1500, "the batch wrote {} rows", want.len());
    for (n, (w, h)) in want.iter().zip(&have).enumerate() {
        assert_eq!(h, w, "row {n} differs");
    }
    assert_eq!(have.len(), want.len());
    // The incident an earlier action made significant keeps showing it.
    assert!(
        have.iter().any(
            |r| r.starts_with("Some(\"deployment/default/web@uid-web-3\")") && r.contains("acting")
        ),
        "web's incident still shows its action"
    );
}

/// Deliveries of a group: new alerts, repeats within the group and within a delivery, alerts
/// recorded before, one that a delivery reopens, a new start of a known fingerprint, urgency
/// given and missing, and more alerts than one statement takes.
fn deliveries() -> Vec<(Vec<Alert>, Vec<bool>, Timestamp)> {
    let known = |n| numbered("web", n);
    let new = |n| numbered("api", n);
    let mut restarted = known(1);
    restarted.starts_at = t(150);
    let many: Vec<Alert> = (0..250).map(|n| numbered("many", n)).collect();
    let many_urgent: Vec<bool> = (0..250).map(|n| n % 3 == 0).collect();
    vec![
        (vec![new(1), known(1)], vec![false, true], t(110)),
        (vec![new(1), new(2)], vec![true, false], t(111)),
        (vec![known(2)], vec![], t(112)),
        (vec![known(2), new(3), new(3)], vec![true], t(113)),
        (many, many_urgent, t(114)),
        (
            vec![known(3), new(2), restarted],
            vec![false, false, false],
            t(115),
        ),
    ]
}

/// Alerts recorded before the group: `web` 1 to 3, 2 decided with its retries used up (a
/// delivery reopens it).
async fn prepare_intake(store: &Store) {
    let known: Vec<Alert> = (1..=3).map(|n| numbered("web", n)).collect();
    let ids: Vec<i64> = store
        .record_alerts(&known, t(101))
        .await
        .expect("record")
        .iter()
        .map(|r| r.alert_id)
        .collect();
    sqlx::query(
        "UPDATE alerts SET decided_at = $1, outcome = 'failed', retry_on_delivery = 1,
            attempts = 3 WHERE id = $2",
    )
    .bind(ts_text(t(105)))
    .bind(ids[1])
    .execute(&store.pool)
    .await
    .expect("used up");
}

async fn a_group_of_deliveries_records_what_one_at_a_time_records(db: TestDb) {
    let deliveries = deliveries();
    let one_at_a_time = db.open().await;
    prepare_intake(&one_at_a_time).await;
    let mut expected = Vec::new();
    for (alerts, urgent, now) in &deliveries {
        expected.push(
            one_at_a_time
                .record_alerts_ranked(alerts, urgent, *now)
                .await
                .expect("record"),
        );
    }

    let other = db.sibling().await;
    let together = other.open().await;
    prepare_intake(&together).await;
    let parts: Vec<intake::Part<'_>> = deliveries
        .iter()
        .map(|(alerts, urgent, now)| intake::Part {
            alerts,
            urgent,
            now: *now,
        })
        .collect();
    assert!(intake::applies(&parts));
    let mut tx = together.write_tx().await.expect("begin");
    let answers = intake::record_in(&mut tx, &parts).await.expect("record");
    tx.commit().await.expect("commit");

    assert_eq!(answers, expected);
    assert!(
        answers[2][0].reopened && !answers[3][0].reopened,
        "reopened once"
    );
    assert!(answers[1][0].alert_id == answers[0][0].alert_id && !answers[1][0].fresh);
    let (want, have) = (dump(&one_at_a_time).await, dump(&together).await);
    assert!(want.len() > 255, "{} rows", want.len());
    assert_eq!(have, want);
}

#[test]
fn a_group_with_a_resolved_alert_is_recorded_a_delivery_at_a_time() {
    let firing = numbered("web", 1);
    let mut resolved = firing.clone();
    resolved.status = AlertStatus::Resolved;
    let part = |alerts| intake::Part {
        alerts,
        urgent: &[],
        now: t(110),
    };
    assert!(intake::applies(&[part(std::slice::from_ref(&firing))]));
    assert!(!intake::applies(&[
        part(std::slice::from_ref(&firing)),
        part(std::slice::from_ref(&resolved))
    ]));
}

on_both!(
    a_batch_records_what_one_at_a_time_records,
    a_group_of_deliveries_records_what_one_at_a_time_records
);
