//! Store tests, each against a real SQLite file and a real PostgreSQL ([`on_both!`]).

use super::test_db::{TestDb, alert_about, on_both, rev, t};
use super::*;
use crate::core::alert::{Alert, AlertStatus, Fingerprint};
use crate::core::engine::{Command, Decision, Outcome, RolloutRef, UndoDeployment, WorkloadRef};

fn mk_alert(status: AlertStatus) -> Alert {
    alert_about("web", status)
}

fn mk_decision() -> Decision {
    Decision {
        outcome: Outcome::RolledBack,
        reason: "because".into(),
        workload: Some(WorkloadRef {
            kind: "Deployment".into(),
            namespace: "default".into(),
            name: "web".into(),
            uid: "uid-web".into(),
        }),
        rollout: Some(RolloutRef {
            revision: rev("web-c", 3),
            since: t(50),
        }),
        command: Some(Command::UndoDeployment(UndoDeployment {
            namespace: "default".into(),
            name: "web".into(),
            uid: "uid-web".into(),
            blamed: rev("web-c", 3),
            planned_target: rev("web-b", 2),
            selector: String::new(),
            dry_run: false,
        })),
    }
}

#[test]
fn timestamps_have_a_fixed_width() {
    assert_eq!(ts_text(t(0)), "2027-01-15T08:00:00.000000000Z");
    assert_eq!(parse_ts(&ts_text(t(5))).expect("parse"), t(5));
}

async fn duplicates_are_counted_not_recorded_twice(db: TestDb) {
    let store = db.open().await;
    let alert = mk_alert(AlertStatus::Firing);
    let first = store
        .record_alerts(std::slice::from_ref(&alert), t(101))
        .await
        .expect("record");
    assert!(first[0].fresh);
    let again = store.record_alerts(&[alert], t(102)).await.expect("record");
    assert!(!again[0].fresh);
    assert_eq!(again[0].alert_id, first[0].alert_id);
    assert_eq!(store.alert_count().await.expect("count"), 1);
    assert_eq!(store.undecided_alerts().await.expect("undecided").len(), 1);
}

async fn a_decision_and_its_result_build_the_timeline_and_survive_reopening(db: TestDb) {
    let store = db.open().await;
    let alert = mk_alert(AlertStatus::Firing);
    let id = store
        .record_alerts(std::slice::from_ref(&alert), t(101))
        .await
        .expect("record")[0]
        .alert_id;
    let recorded = store
        .record_decision(id, &alert, &mk_decision(), t(102))
        .await
        .expect("decide")
        .expect("first");
    let action = recorded.action_id.expect("intent written");
    assert!(
        store
            .record_decision(id, &alert, &mk_decision(), t(103))
            .await
            .expect("decide")
            .is_none()
    );
    let past = store.past_actions().await.expect("past");
    assert_eq!(past.len(), 1);
    assert_eq!(
        past[0].target_uid.as_deref(),
        Some(rev("web-b", 2).uid.as_str()),
        "an intent's planned target is already rollbackd's own: it may have been applied"
    );
    assert!(!past[0].settled, "an intent is not settled");
    let result = ActionResult {
        status: ActionStatus::Succeeded,
        outcome: Outcome::RolledBack,
        message: "rolled back".into(),
        target: Some(rev("web-b", 2)),
        data: serde_json::json!({"patch": []}),
        transient: false,
    };
    store
        .record_result(action, &recorded, id, &result, t(104))
        .await
        .expect("result");
    store
        .record_alerts(&[mk_alert(AlertStatus::Resolved)], t(300))
        .await
        .expect("resolve");
    drop(store);

    let store = db.open().await;
    let detail = store
        .incident(recorded.incident_id)
        .await
        .expect("read")
        .expect("exists");
    let kinds: Vec<&str> = detail.timeline.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "received",
            "correlated",
            "decision",
            "action",
            "result",
            "resolved",
            "resolved"
        ]
    );
    assert_eq!(detail.summary.outcome, "rolled-back");
    assert_eq!(
        detail.summary.rollout_text().as_deref(),
        Some("web-c, revision 3 (nginx:3), current since 2027-01-15 08:00:50")
    );
    let mut traffic = detail.summary.clone();
    traffic.rollout_name = Some("selector {\"version\":\"green\"}".into());
    traffic.rollout_revision = Some(0);
    traffic.rollout_image = None;
    assert_eq!(
        traffic.rollout_text().as_deref(),
        Some("selector {\"version\":\"green\"}, since 2027-01-15 08:00:50"),
        "a traffic change has no revision to show"
    );
    assert_eq!(detail.summary.status, "resolved");
    assert_eq!(detail.alerts[0].status, "resolved");
    assert_eq!(
        store.past_actions().await.expect("past")[0]
            .target_uid
            .as_deref(),
        Some("uid-web-b")
    );
}

async fn the_timeline_refuses_updates_and_deletes(db: TestDb) {
    let store = db.open().await;
    let alert = mk_alert(AlertStatus::Firing);
    let id = store
        .record_alerts(std::slice::from_ref(&alert), t(101))
        .await
        .expect("record")[0]
        .alert_id;
    store
        .record_decision(id, &alert, &mk_decision(), t(102))
        .await
        .expect("decide");
    assert!(
        sqlx::query("UPDATE timeline SET message = 'x'")
            .execute(&store.pool)
            .await
            .is_err()
    );
    assert!(
        sqlx::query("DELETE FROM timeline")
            .execute(&store.pool)
            .await
            .is_err()
    );
    if store.backend() == Backend::Postgres {
        assert!(
            sqlx::query("TRUNCATE timeline")
                .execute(&store.pool)
                .await
                .is_err()
        );
    }
}

async fn a_second_live_action_for_the_same_cause_is_refused(db: TestDb) {
    let store = db.open().await;
    let mut other = mk_alert(AlertStatus::Firing);
    other
        .labels
        .insert("alertname".into(), "HighLatencyP95".into());
    other.fingerprint = Fingerprint::of(&other.labels);
    let alerts = [mk_alert(AlertStatus::Firing), other];
    let received = store.record_alerts(&alerts, t(101)).await.expect("record");
    store
        .record_decision(received[0].alert_id, &alerts[0], &mk_decision(), t(102))
        .await
        .expect("first");
    let second = store
        .record_decision(received[1].alert_id, &alerts[1], &mk_decision(), t(103))
        .await;
    assert!(
        second.is_err(),
        "the unique index must refuse a second undo of web-c"
    );
    assert_eq!(
        store.undecided_alerts().await.expect("undecided").len(),
        1,
        "the refused decision left no trace"
    );
}

async fn concurrent_writers_never_see_a_locked_database(db: TestDb) {
    // The webhook records alerts while the worker records decisions: a read-then-write
    // transaction must not fail with SQLITE_BUSY when another commits first.
    let store = db.open().await;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..4 {
        let store = store.clone();
        tasks.spawn(async move {
            for i in 0..25 {
                let mut alert = mk_alert(AlertStatus::Firing);
                alert.labels.insert("i".into(), format!("{worker}-{i}"));
                alert.fingerprint = Fingerprint::of(&alert.labels);
                let id = store
                    .record_alerts(std::slice::from_ref(&alert), t(101))
                    .await?[0]
                    .alert_id;
                let mut decision = mk_decision();
                decision.command = None;
                decision.outcome = Outcome::NoRecentRollout;
                store.record_decision(id, &alert, &decision, t(102)).await?;
            }
            Ok::<_, StoreError>(())
        });
    }
    for result in tasks.join_all().await {
        result.expect("no writer may fail");
    }
    assert_eq!(store.alert_count().await.expect("count"), 100);
}

fn failed_transiently() -> ActionResult {
    ActionResult {
        status: ActionStatus::Failed,
        outcome: Outcome::Failed,
        message: "the API server answered 503".into(),
        target: None,
        data: serde_json::Value::Null,
        transient: true,
    }
}

async fn received_is_stamped_when_the_alert_arrived_not_when_it_was_decided(db: TestDb) {
    let store = db.open().await;
    let alert = mk_alert(AlertStatus::Firing);
    let id = store
        .record_alerts(std::slice::from_ref(&alert), t(101))
        .await
        .expect("record")[0]
        .alert_id;
    let recorded = store
        .record_decision(id, &alert, &mk_decision(), t(190))
        .await
        .expect("decide")
        .expect("first");
    let detail = store
        .incident(recorded.incident_id)
        .await
        .expect("read")
        .expect("incident");
    let at = |kind: &str| {
        detail
            .timeline
            .iter()
            .find(|e| e.kind == kind)
            .map(|e| e.at.clone())
            .expect(kind)
    };
    assert_eq!(at("received"), ts_text(t(101)));
    assert_eq!(at("decision"), ts_text(t(190)));
}

async fn a_transient_failure_is_decided_again_then_on_delivery_and_counts_attempts(db: TestDb) {
    let store = db.open().await;
    let alert = mk_alert(AlertStatus::Firing);
    let id = store
        .record_alerts(std::slice::from_ref(&alert), t(101))
        .await
        .expect("record")[0]
        .alert_id;
    let recorded = store
        .record_decision(id, &alert, &mk_decision(), t(102))
        .await
        .expect("decide")
        .expect("first");
    let action = recorded.action_id.expect("intent");
    store
        .record_outcome(
            action,
            recorded.incident_id,
            id,
            &failed_transiently(),
            Followup::RetryAt(t(110)),
            &[],
            t(103),
        )
        .await
        .expect("result");
    assert!(
        store
            .undecided_page(10, t(105))
            .await
            .expect("page")
            .is_empty(),
        "not before its retry time"
    );
    let due = store.undecided_page(10, t(110)).await.expect("page");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].attempts, 1);
    assert!(
        store.past_actions().await.expect("past").is_empty(),
        "a failed action guards nothing"
    );

    // The second attempt is recorded in the same incident, and its last failure leaves the
    // alert to a later delivery.
    let again = store
        .record_decision(id, &alert, &mk_decision(), t(111))
        .await
        .expect("decide")
        .expect("second attempt");
    assert_eq!(again.incident_id, recorded.incident_id);
    store
        .record_outcome(
            again.action_id.expect("intent"),
            again.incident_id,
            id,
            &failed_transiently(),
            Followup::RetryOnDelivery,
            &[],
            t(112),
        )
        .await
        .expect("result");
    assert!(
        store
            .undecided_page(10, t(999))
            .await
            .expect("page")
            .is_empty()
    );
    let received = store
        .record_alerts(std::slice::from_ref(&alert), t(300))
        .await
        .expect("redelivery");
    assert!(received[0].reopened && !received[0].fresh);
    let due = store.undecided_page(10, t(300)).await.expect("page");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].attempts, 2);
    let detail = store
        .incident(recorded.incident_id)
        .await
        .expect("read")
        .expect("incident");
    let decisions: Vec<&str> = detail
        .timeline
        .iter()
        .filter(|e| e.kind == "decision")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    assert!(decisions[1].starts_with("attempt 2: "), "{decisions:?}");
    let received_entries = detail
        .timeline
        .iter()
        .filter(|e| e.kind == "received")
        .count();
    assert_eq!(received_entries, 1, "an alert is received once");
}

async fn urgent_alerts_come_first_and_the_backlog_is_read_a_page_at_a_time(db: TestDb) {
    let store = db.open().await;
    let quiet: Vec<Alert> = (0..5)
        .map(|i| {
            let mut a = mk_alert(AlertStatus::Firing);
            a.labels.insert("deployment".into(), format!("quiet-{i}"));
            a.fingerprint = Fingerprint::of(&a.labels);
            a
        })
        .collect();
    store
        .record_alerts_ranked(&quiet, &[false; 5], t(101))
        .await
        .expect("quiet");
    let urgent = mk_alert(AlertStatus::Firing);
    let id = store
        .record_alerts_ranked(std::slice::from_ref(&urgent), &[true], t(102))
        .await
        .expect("urgent")[0]
        .alert_id;
    let page = store.undecided_page(3, t(103)).await.expect("page");
    assert_eq!(page.len(), 3, "one page, not the whole backlog");
    assert_eq!(
        page[0].alert_id, id,
        "the urgent alert first, though it came last"
    );
    assert_eq!(store.pending_count().await.expect("count"), 6);
}

async fn unsettled_actions_carry_what_settling_needs(db: TestDb) {
    let store = db.open().await;
    let alert = mk_alert(AlertStatus::Firing);
    let id = store
        .record_alerts(std::slice::from_ref(&alert), t(101))
        .await
        .expect("record")[0]
        .alert_id;
    let recorded = store
        .record_decision(id, &alert, &mk_decision(), t(102))
        .await
        .expect("decide")
        .expect("first");
    let unsettled = store.unsettled_actions().await.expect("unsettled");
    assert_eq!(unsettled.len(), 1);
    let a = &unsettled[0];
    assert_eq!(a.status, "intended");
    assert_eq!(a.kind, "undo-deployment");
    assert_eq!(
        (a.blamed_key.as_str(), a.target_key.as_str()),
        ("uid-web-c", "uid-web-b")
    );
    assert_eq!(a.incident_id, recorded.incident_id);
    assert_eq!(a.alert, alert);
    assert_eq!(
        a.rollout.as_ref().map(|r| r.revision.uid.as_str()),
        Some("uid-web-c")
    );
}

async fn overdue_alerts_are_those_received_before_the_cutoff_and_not_yet_noted_stale(db: TestDb) {
    let store = db.open().await;
    let alerts: Vec<Alert> = (0..3)
        .map(|i| {
            let mut a = mk_alert(AlertStatus::Firing);
            a.labels.insert("deployment".into(), format!("w-{i}"));
            a.fingerprint = Fingerprint::of(&a.labels);
            a
        })
        .collect();
    let ids: Vec<i64> = store
        .record_alerts(&alerts[..2], t(100))
        .await
        .expect("early")
        .iter()
        .map(|r| r.alert_id)
        .collect();
    store
        .record_alerts(&alerts[2..], t(200))
        .await
        .expect("late");
    let mut stale = mk_decision();
    stale.outcome = Outcome::StaleData;
    stale.command = None;
    store
        .record_decision(ids[0], &alerts[0], &stale, t(150))
        .await
        .expect("noted")
        .expect("recorded");
    let overdue = store.overdue_page(10, t(180)).await.expect("overdue");
    let got: Vec<i64> = overdue.iter().map(|p| p.alert_id).collect();
    assert_eq!(
        got,
        vec![ids[1]],
        "noted once, and the late one is not overdue yet"
    );
    assert_eq!(
        store.pending_count().await.expect("count"),
        3,
        "stale-data stays undecided"
    );
}

/// Two replicas on one store: the one whose epoch was superseded cannot record an intent,
/// however late its decision comes; one that lost the lease cannot either.
async fn an_intent_from_a_superseded_leader_is_refused(db: TestDb) {
    let a = db.open().await;
    let b = db.open().await;
    let mut other = mk_alert(AlertStatus::Firing);
    other
        .labels
        .insert("alertname".into(), "HighLatencyP95".into());
    other.fingerprint = Fingerprint::of(&other.labels);
    let alerts = [mk_alert(AlertStatus::Firing), other];
    let received = a.record_alerts(&alerts, t(101)).await.expect("record");
    let first = a
        .take_leadership("replica-a", t(101))
        .await
        .expect("a leads");
    assert_eq!(
        first,
        Term {
            epoch: 1,
            previous: None
        }
    );
    let second = b
        .take_leadership("replica-b", t(102))
        .await
        .expect("b leads");
    assert_eq!(
        second,
        Term {
            epoch: 2,
            previous: Some("replica-a".into())
        }
    );
    let refused = a
        .record_decision(received[0].alert_id, &alerts[0], &mk_decision(), t(103))
        .await;
    assert!(
        matches!(
            refused,
            Err(StoreError::Fenced {
                epoch: 1,
                newest: 2
            })
        ),
        "{refused:?}"
    );
    a.lose_leadership();
    let refused = a
        .record_decision(received[0].alert_id, &alerts[0], &mk_decision(), t(103))
        .await;
    assert!(matches!(refused, Err(StoreError::NotLeader)), "{refused:?}");
    assert!(
        a.past_actions().await.expect("past").is_empty(),
        "nothing was recorded"
    );
    // The newest leader records the same decision, intent included.
    let recorded = b
        .record_decision(received[0].alert_id, &alerts[0], &mk_decision(), t(104))
        .await
        .expect("the newest leader records")
        .expect("undecided");
    assert!(recorded.action_id.is_some());
}

on_both!(
    duplicates_are_counted_not_recorded_twice,
    a_decision_and_its_result_build_the_timeline_and_survive_reopening,
    the_timeline_refuses_updates_and_deletes,
    a_second_live_action_for_the_same_cause_is_refused,
    concurrent_writers_never_see_a_locked_database,
    an_intent_from_a_superseded_leader_is_refused,
    received_is_stamped_when_the_alert_arrived_not_when_it_was_decided,
    a_transient_failure_is_decided_again_then_on_delivery_and_counts_attempts,
    urgent_alerts_come_first_and_the_backlog_is_read_a_page_at_a_time,
    unsettled_actions_carry_what_settling_needs,
    overdue_alerts_are_those_received_before_the_cutoff_and_not_yet_noted_stale,
);

/// `VACUUM INTO` is SQLite's: a PostgreSQL store says how it is backed up instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_refuses_a_backup_and_names_its_tools() {
    let db = TestDb::postgres().await;
    let store = db.open().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let to = dir.path().join("copy.db");
    let err = store.backup_to(&to).await.expect_err("refused");
    assert!(matches!(err, StoreError::BackupUnsupported), "{err:?}");
    assert!(err.to_string().contains("pg_dump"), "{err}");
    assert!(!to.exists(), "nothing written");
}
