//! Retention, export, graphs and the audit stamp, on SQLite and on PostgreSQL.

use serde_json::json;
use sqlx::Row;

use super::test_db::{TestDb, alert_about, on_both, rev, t};
use super::*;
use crate::core::alert::AlertStatus;
use crate::core::engine::{Command, Decision, Outcome, RolloutRef, UndoDeployment, WorkloadRef};

fn undo(workload: &str) -> Decision {
    Decision {
        outcome: Outcome::RolledBack,
        reason: "because".into(),
        workload: Some(WorkloadRef {
            kind: "Deployment".into(),
            namespace: "default".into(),
            name: workload.into(),
            uid: format!("uid-{workload}"),
        }),
        rollout: Some(RolloutRef {
            revision: rev(&format!("{workload}-c"), 3),
            since: t(50),
        }),
        command: Some(Command::UndoDeployment(UndoDeployment {
            namespace: "default".into(),
            name: workload.into(),
            uid: format!("uid-{workload}"),
            blamed: rev(&format!("{workload}-c"), 3),
            planned_target: rev(&format!("{workload}-b"), 2),
            selector: String::new(),
            dry_run: false,
        })),
    }
}

fn rolled_back(workload: &str) -> ActionResult {
    ActionResult {
        status: ActionStatus::Succeeded,
        outcome: Outcome::RolledBack,
        message: "rolled back".into(),
        target: Some(rev(&format!("{workload}-b"), 2)),
        data: json!({"patch": [], "answer": {"status": "200 OK"}}),
        transient: false,
    }
}

fn stamp() -> AuditStamp {
    AuditStamp {
        actor: "serviceaccount rollbackd/rollbackd".into(),
        version: "rollbackd 0.1.0".into(),
        config_hash: "ab".repeat(32),
        policy: json!({"mode": "enforce", "policy": {"cooldown": "30m"}}),
    }
}

async fn open(db: &TestDb) -> Store {
    db.open().await.with_audit(stamp())
}

/// An incident about `workload` decided at `at`; with `finish`, its action's result too.
async fn incident(store: &Store, workload: &str, at: i64, finish: bool) -> i64 {
    let a = alert_about(workload, AlertStatus::Firing);
    let id = store
        .record_alerts(std::slice::from_ref(&a), t(at))
        .await
        .expect("record")[0]
        .alert_id;
    let recorded = store
        .record_decision(id, &a, &undo(workload), t(at + 1))
        .await
        .expect("decide")
        .expect("first");
    if finish {
        let action = recorded.action_id.expect("intent");
        store
            .record_result(action, &recorded, id, &rolled_back(workload), t(at + 2))
            .await
            .expect("result");
    }
    recorded.incident_id
}

async fn count(store: &Store, table: &str, incident: i64) -> i64 {
    let column = if table == "incidents" {
        "id"
    } else {
        "incident_id"
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) AS n FROM {table} WHERE {column} = $1"
    )))
    .bind(incident)
    .fetch_one(&store.pool)
    .await
    .expect("count")
    .try_get("n")
    .expect("n")
}

const TABLES: &[&str] = &[
    "incidents",
    "alerts",
    "actions",
    "timeline",
    "incident_graphs",
];

fn graph(fetched: i64) -> IncidentGraph {
    IncidentGraph {
        alertname: "HighErrorRate".into(),
        expr: "sum(rate(errors[5m])) / sum(rate(requests[5m]))".into(),
        comparison: Some(">".into()),
        threshold: Some(0.05),
        series: json!({"deployment": "web"}),
        step_seconds: 15.0,
        start_at: t(0),
        end_at: t(fetched),
        samples: vec![(1.0, 0.01), (2.0, f64::NAN), (3.0, 0.3)],
        fetched_at: t(fetched),
    }
}

async fn retention_deletes_old_incidents_whole_and_nothing_else(db: TestDb) {
    let store = open(&db).await;
    let old = incident(&store, "old", 100, true).await;
    let unsettled = incident(&store, "unsettled", 100, false).await;
    let recent = incident(&store, "recent", 10_000, true).await;
    store.save_graph(old, &graph(300)).await.expect("graph");
    store
        .save_graph(recent, &graph(10_300))
        .await
        .expect("graph");
    let before_recent: Vec<i64> =
        futures::future::join_all(TABLES.iter().map(|table| count(&store, table, recent))).await;

    let retired = store.retire_before(t(5_000)).await.expect("retire");
    assert_eq!(retired, vec![old], "an unsettled action keeps its incident");
    for table in TABLES {
        assert_eq!(
            count(&store, table, old).await,
            0,
            "{table} of the retired incident"
        );
    }
    let after_recent: Vec<i64> =
        futures::future::join_all(TABLES.iter().map(|table| count(&store, table, recent))).await;
    assert_eq!(
        before_recent, after_recent,
        "the recent incident is untouched"
    );
    assert!(count(&store, "timeline", unsettled).await > 0);
    assert!(store.incident(unsettled).await.expect("read").is_some());
    // Done again: nothing more to delete.
    assert_eq!(
        store.retire_before(t(5_000)).await.expect("retire"),
        Vec::<i64>::new()
    );
}

async fn an_incident_cannot_be_deleted_in_part(db: TestDb) {
    let store = open(&db).await;
    let id = incident(&store, "web", 100, true).await;
    let entries = count(&store, "timeline", id).await;
    for sql in [
        "DELETE FROM timeline WHERE incident_id = $1",
        "UPDATE timeline SET message = 'edited' WHERE incident_id = $1",
        "UPDATE timeline SET incident_id = 999 WHERE incident_id = $1",
        // The incident row alone: its timeline still refers to it.
        "DELETE FROM incidents WHERE id = $1",
    ] {
        assert!(
            sqlx::query(sql)
                .bind(id)
                .execute(&store.pool)
                .await
                .is_err(),
            "{sql} is refused"
        );
    }
    assert_eq!(count(&store, "timeline", id).await, entries);
    let detail = store
        .incident(id)
        .await
        .expect("read")
        .expect("still there");
    assert!(detail.timeline.iter().all(|e| e.message != "edited"));
    // Retiring it is the one way, and it takes everything.
    sqlx::query("UPDATE incidents SET retiring = 1 WHERE id = $1")
        .bind(id)
        .execute(&store.pool)
        .await
        .expect("retire");
    for table in TABLES {
        assert_eq!(count(&store, table, id).await, 0, "{table}");
    }
}

async fn export_writes_the_entries_since_with_who_acted(db: TestDb) {
    let store = open(&db).await;
    let id = incident(&store, "web", 100, true).await;
    let lines = store.export_since(t(0)).await.expect("export");
    let kinds: Vec<&str> = lines.iter().filter_map(|l| l["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        ["received", "correlated", "decision", "action", "result"]
    );
    for line in &lines {
        assert_eq!(line["incident"], id);
        assert_eq!(line["workload"], "web");
        assert_eq!(line["namespace"], "default");
    }
    let action = &lines[3];
    assert_eq!(
        action["audit"]["actor"],
        "serviceaccount rollbackd/rollbackd"
    );
    assert_eq!(action["audit"]["version"], "rollbackd 0.1.0");
    assert_eq!(action["audit"]["mode"], "enforce");
    assert_eq!(action["audit"]["config_hash"], "ab".repeat(32));
    assert_eq!(action["audit"]["policy"]["policy"]["cooldown"], "30m");
    assert_eq!(lines[4]["audit"]["action"], action["audit"]["action"]);
    assert_eq!(lines[4]["data"]["answer"]["status"], "200 OK");
    assert!(
        lines[0].get("audit").is_none(),
        "only actions carry the audit"
    );
    // Only what was recorded since.
    let later = store.export_since(t(102)).await.expect("export");
    assert_eq!(later.len(), 1);
    assert_eq!(later[0]["kind"], "result");
    assert!(
        store
            .export_since(t(1_000))
            .await
            .expect("export")
            .is_empty()
    );
    // The detail shows the same stamp.
    let detail = store.incident(id).await.expect("read").expect("incident");
    assert_eq!(
        detail.actions[0].actor.as_deref(),
        Some("serviceaccount rollbackd/rollbackd")
    );
}

async fn a_graph_is_kept_with_its_incident_and_replaced_when_fetched_again(db: TestDb) {
    let store = open(&db).await;
    let id = incident(&store, "web", 100, true).await;
    assert_eq!(store.graph(id).await.expect("read"), None);
    store.save_graph(id, &graph(300)).await.expect("save");
    let stored = store.graph(id).await.expect("read").expect("graph");
    assert_eq!(
        stored.samples,
        vec![(1.0, 0.01), (3.0, 0.3)],
        "NaN left out"
    );
    assert_eq!(stored.threshold, Some(0.05));
    store.save_graph(id, &graph(400)).await.expect("save again");
    assert_eq!(
        store
            .graph(id)
            .await
            .expect("read")
            .expect("graph")
            .fetched_at,
        t(400)
    );
    drop(store);
    let reopened = open(&db).await;
    assert!(reopened.graph(id).await.expect("read").is_some());
}

on_both!(
    retention_deletes_old_incidents_whole_and_nothing_else,
    an_incident_cannot_be_deleted_in_part,
    export_writes_the_entries_since_with_who_acted,
    a_graph_is_kept_with_its_incident_and_replaced_when_fetched_again,
);
