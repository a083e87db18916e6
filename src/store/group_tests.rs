//! Group commit: deliveries queued together share one transaction, each gets its own answer,
//! and a failure of the shared transaction is answered to every member.

use std::time::Duration;

use sqlx::Row;

use super::test_db::{TestDb, on_both};
use super::*;
use crate::core::alert::{Alert, AlertSource, AlertStatus, Fingerprint, LabelSet};

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).expect("valid")
}

fn mk_alert(deployment: &str) -> Alert {
    let labels: LabelSet = [
        ("alertname", "HighErrorRate"),
        ("namespace", "default"),
        ("deployment", deployment),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Alert {
        source: AlertSource::Alertmanager,
        status: AlertStatus::Firing,
        fingerprint: Fingerprint::of(&labels),
        labels,
        annotations: LabelSet::new(),
        starts_at: t(100),
        ends_at: None,
        generator_url: "http://prom/graph".into(),
        external_url: None,
    }
}

fn path(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("s.db")
}

async fn open_sqlite(dir: &tempfile::TempDir) -> Store {
    Store::open(&format!("sqlite://{}", path(dir).display()))
        .await
        .expect("open")
}

/// Holds the write turn while `names` are submitted at once, so that they queue behind it
/// and form one batch; returns each delivery's answer, in the order of `names`.
async fn submit_together(store: &Store, names: &[String]) -> Vec<Result<Vec<Received>>> {
    let turn = store.write_turn().await;
    let tasks: Vec<_> = names
        .iter()
        .map(|name| {
            let store = store.clone();
            let alert = mk_alert(name);
            tokio::spawn(
                async move { store.record_alerts_grouped(&[alert], &[true], t(101)).await },
            )
        })
        .collect();
    let committer = store.committer.clone().expect("group commit is on");
    // All but the first wait in the queue; the committer holds the first, waiting for the turn.
    while committer.max_capacity() - committer.capacity() < names.len() - 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(turn);
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task"));
    }
    answers
}

async fn concurrent_deliveries_each_get_their_own_answer_and_are_durable(db: TestDb) {
    let store = db.open().await;
    // 30 distinct alerts, and 10 of them delivered twice within the same batch.
    let names: Vec<String> = (0..30).chain(0..10).map(|i| format!("web-{i}")).collect();
    let answers = submit_together(&store, &names).await;
    let mut by_name: std::collections::BTreeMap<&str, Vec<Received>> = Default::default();
    for (name, answer) in names.iter().zip(answers) {
        let received = answer.expect("recorded");
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].key, mk_alert(name).key());
        by_name.entry(name).or_default().push(received[0].clone());
    }
    for (name, received) in &by_name {
        let fresh = received.iter().filter(|r| r.fresh).count();
        assert_eq!(fresh, 1, "{name}: exactly one delivery is the first");
        assert!(received.iter().all(|r| r.alert_id == received[0].alert_id));
        assert!(received.iter().all(|r| !r.resolved_now && !r.reopened));
    }
    drop(store);

    let store = db.open().await;
    assert_eq!(store.alert_count().await.expect("count"), 30);
    for (name, received) in &by_name {
        let deliveries: i64 = sqlx::query("SELECT deliveries FROM alerts WHERE id = $1")
            .bind(received[0].alert_id)
            .fetch_one(&store.pool)
            .await
            .expect("row")
            .get("deliveries");
        assert_eq!(deliveries, received.len() as i64, "{name}");
    }
    assert_eq!(store.undecided_alerts().await.expect("undecided").len(), 30);
}

/// SQLite only: the shared failure here is the store file deleted under the batch.
#[tokio::test]
async fn a_failed_shared_commit_is_answered_to_every_member() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_sqlite(&dir).await;
    let names: Vec<String> = (0..8).map(|i| format!("web-{i}")).collect();
    std::fs::remove_file(path(&dir)).expect("delete the store file");
    let answers = submit_together(&store, &names).await;
    let mut shared = None;
    for answer in answers {
        match answer {
            Err(StoreError::Group { members, source }) => {
                assert_eq!(members, 8, "one batch");
                let first = shared.get_or_insert_with(|| source.clone());
                assert!(Arc::ptr_eq(first, &source), "the same failure");
                assert!(matches!(*source, StoreError::FileGone { .. }), "{source}");
            }
            other => panic!("acknowledged or failed alone: {other:?}"),
        }
    }
}

async fn a_delivery_whose_caller_went_away_is_not_recorded(db: TestDb) {
    let store = db.open().await;
    let turn = store.write_turn().await;
    let gone = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .record_alerts_grouped(&[mk_alert("gone")], &[true], t(101))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    gone.abort();
    let _ = gone.await;
    drop(turn);
    let kept = store
        .record_alerts_grouped(&[mk_alert("kept")], &[true], t(101))
        .await
        .expect("recorded");
    assert!(kept[0].fresh);
    assert_eq!(store.alert_count().await.expect("count"), 1);
}

/// A group that cannot be recorded together is recorded a delivery at a time, and nothing of
/// the failed attempt remains. Here a trigger refuses what only the group's statements write:
/// an alert inserted with more than one delivery (a repeat within the group).
async fn a_group_that_fails_together_is_recorded_a_delivery_at_a_time(db: TestDb) {
    let store = db.open().await;
    let refuse: &[&str] = match store.backend() {
        Backend::Sqlite => &[
            "CREATE TRIGGER refuse BEFORE INSERT ON alerts WHEN NEW.deliveries > 1
             BEGIN SELECT RAISE(ABORT, 'refused: inserted with repeats'); END",
        ],
        Backend::Postgres => &[
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                IF NEW.deliveries > 1 THEN RAISE EXCEPTION 'refused: inserted with repeats'; END IF;
                RETURN NEW;
             END $$",
            "CREATE TRIGGER refuse BEFORE INSERT ON alerts FOR EACH ROW EXECUTE FUNCTION refuse()",
        ],
    };
    for sql in refuse {
        sqlx::query(sqlx::AssertSqlSafe(*sql))
            .execute(&store.pool)
            .await
            .expect(sql);
    }
    let names: Vec<String> = (0..6).chain(0..3).map(|i| format!("web-{i}")).collect();
    let answers = submit_together(&store, &names).await;
    // The tasks queue in any order: per alert, one delivery is the first, and both get its id.
    let mut by_name: std::collections::BTreeMap<&str, Vec<Received>> = Default::default();
    for (name, answer) in names.iter().zip(&answers) {
        let received = answer.as_ref().expect("recorded");
        by_name.entry(name).or_default().push(received[0].clone());
    }
    for (name, received) in &by_name {
        assert_eq!(received.iter().filter(|r| r.fresh).count(), 1, "{name}");
        assert!(received.iter().all(|r| r.alert_id == received[0].alert_id));
    }
    assert_eq!(store.alert_count().await.expect("count"), 6);
    let deliveries: i64 = sqlx::query("SELECT CAST(SUM(deliveries) AS BIGINT) AS n FROM alerts")
        .fetch_one(&store.pool)
        .await
        .expect("sum")
        .get("n");
    assert_eq!(deliveries, 9);
}

on_both!(
    a_group_that_fails_together_is_recorded_a_delivery_at_a_time,
    concurrent_deliveries_each_get_their_own_answer_and_are_durable,
    a_delivery_whose_caller_went_away_is_not_recorded,
);
