//! Verification bookkeeping, against a real SQLite file and a real PostgreSQL.

use std::sync::Arc;

use super::*;
use crate::core::alert::AlertStatus;
use crate::core::engine::{Command, Decision, UndoDeployment};
use crate::store::test_db::{TestDb, alert_about, on_both, rev, t};
use crate::store::{ActionOutcome, ActionResult, ActionStatus, Followup};

fn mk_alert(status: AlertStatus) -> Alert {
    Alert {
        ends_at: (status == AlertStatus::Resolved).then(|| t(230)),
        generator_url: String::new(),
        ..alert_about("web", status)
    }
}

fn mk_decision(dry_run: bool) -> Decision {
    decision_on("web", dry_run)
}

/// An undo of Deployment `default/<name>` from `<name>-c` (revision 3) to `<name>-b`.
fn decision_on(name: &str, dry_run: bool) -> Decision {
    let uid = format!("uid-{name}");
    Decision {
        outcome: Outcome::RolledBack,
        reason: "because".into(),
        workload: Some(WorkloadRef {
            kind: "Deployment".into(),
            namespace: "default".into(),
            name: name.into(),
            uid: uid.clone(),
        }),
        rollout: Some(RolloutRef {
            revision: rev(&format!("{name}-c"), 3),
            since: t(50),
        }),
        command: Some(Command::UndoDeployment(UndoDeployment {
            namespace: "default".into(),
            name: name.into(),
            uid,
            blamed: rev(&format!("{name}-c"), 3),
            planned_target: rev(&format!("{name}-b"), 2),
            selector: String::new(),
            dry_run,
        })),
    }
}

/// A store with one alert whose undo was recorded with `status`; returns (action, incident).
async fn acted(db: &TestDb, status: ActionStatus, dry_run: bool) -> (Store, i64, i64) {
    let store = db.open().await;
    let (action_id, incident_id) = act_on(&store, "web", 0, status, dry_run).await;
    (store, action_id, incident_id)
}

/// Undoes Deployment `name` for a firing alert, with `joining` more alerts filed into its
/// incident, and records the undo's result with `status`; returns (action, incident).
async fn act_on(
    store: &Store,
    name: &str,
    joining: usize,
    status: ActionStatus,
    dry_run: bool,
) -> (i64, i64) {
    let mut first = None;
    for n in 0..=joining {
        let mut alert = Alert {
            generator_url: String::new(),
            ..alert_about(name, AlertStatus::Firing)
        };
        if n > 0 {
            alert.labels.insert("pod".into(), n.to_string());
            alert.fingerprint = crate::core::alert::Fingerprint::of(&alert.labels);
        }
        let alert_id = store
            .record_alerts(std::slice::from_ref(&alert), t(101))
            .await
            .expect("record")[0]
            .alert_id;
        let mut decision = decision_on(name, dry_run);
        if first.is_some() {
            decision.command = None;
            decision.outcome = Outcome::AlreadyRolledBack;
        }
        let recorded = store
            .record_decision(alert_id, &alert, &decision, t(102))
            .await
            .expect("decide")
            .expect("recorded");
        first.get_or_insert((alert_id, recorded));
    }
    let (alert_id, recorded) = first.expect("one alert at least");
    let action_id = recorded.action_id.expect("intent");
    let result = ActionResult {
        status,
        outcome: if dry_run {
            Outcome::WouldRollBack
        } else {
            Outcome::RolledBack
        },
        message: "done".into(),
        target: Some(rev(&format!("{name}-b"), 2)),
        data: Value::Null,
        transient: false,
    };
    // As the worker records a round's results: the verification's end with the result,
    // taken only by a real action recorded as succeeded.
    store
        .record_outcomes(
            &[ActionOutcome {
                action_id,
                incident_id: recorded.incident_id,
                alert_id,
                result: &result,
                followup: Followup::Done,
                messages: &[],
                verify_until: Some(t(710)),
            }],
            t(110),
        )
        .await
        .expect("result");
    (action_id, recorded.incident_id)
}

/// Records that the action did not recover its workload, which holds it.
async fn hold(store: &Store, action_id: i64, incident_id: i64) {
    store
        .record_verdict(
            action_id,
            incident_id,
            Outcome::NotRecovered,
            "not recovered",
            &Value::Null,
            &[],
            t(710),
        )
        .await
        .expect("verdict");
}

async fn an_applied_action_is_followed_until_its_verdict_and_a_resolution_is_seen(db: TestDb) {
    let (store, action_id, incident_id) = acted(&db, ActionStatus::Succeeded, false).await;
    assert!(
        store
            .verifications_due(t(200))
            .await
            .expect("due")
            .is_empty(),
        "an alert firing inside the window: only pending"
    );
    let due = store.verifications_due(t(710)).await.expect("due");
    assert_eq!(due.len(), 1);
    let v = &due[0];
    assert_eq!((v.action_id, v.incident_id), (action_id, incident_id));
    assert_eq!((v.acted_at, v.verify_until), (t(110), t(710)));
    assert_eq!(v.kind, "undo-deployment");
    assert_eq!(v.target_name, "web-b");
    assert_eq!(v.followed.len(), 1);
    assert_eq!(v.followed[0].resolved_at, None);
    assert_eq!(v.workload.as_ref().map(|w| w.name.as_str()), Some("web"));

    store
        .record_alerts(&[mk_alert(AlertStatus::Resolved)], t(240))
        .await
        .expect("resolved");
    let due = store.verifications_due(t(240)).await.expect("due");
    assert_eq!(
        due[0].followed[0].resolved_at,
        Some(t(230)),
        "endsAt is the resolution"
    );

    let data = json!({"action_id": action_id});
    let first = store
        .record_verdict(
            action_id,
            incident_id,
            Outcome::Recovered,
            "recovered: 2m",
            &data,
            &[],
            t(241),
        )
        .await
        .expect("verdict");
    assert!(first);
    let again = store
        .record_verdict(
            action_id,
            incident_id,
            Outcome::NotRecovered,
            "late",
            &data,
            &[],
            t(800),
        )
        .await
        .expect("verdict");
    assert!(!again, "one verdict per action");
    assert!(
        store
            .verifications_due(t(800))
            .await
            .expect("due")
            .is_empty()
    );
    let detail = store
        .incident(incident_id)
        .await
        .expect("read")
        .expect("incident");
    assert_eq!(detail.summary.outcome, "recovered");
    let verify: Vec<_> = detail
        .timeline
        .iter()
        .filter(|e| e.kind == "verify")
        .collect();
    assert_eq!(verify.len(), 1);
    assert_eq!(verify[0].outcome.as_deref(), Some("recovered"));
    assert!(!store.past_actions().await.expect("past")[0].held);
}

async fn not_recovered_holds_the_workload_until_acknowledged(db: TestDb) {
    let (store, action_id, incident_id) = acted(&db, ActionStatus::Succeeded, false).await;
    assert_eq!(
        store
            .ack(incident_id, "ana", None, t(200))
            .await
            .expect("ack"),
        Ack::NotHeld {
            outcome: "rolled-back".into()
        },
        "nothing is held before a verdict"
    );
    hold(&store, action_id, incident_id).await;
    let past = store.past_actions().await.expect("past");
    assert!(past[0].held, "{past:?}");
    assert_eq!(
        store
            .ack(incident_id + 1, "ana", None, t(720))
            .await
            .expect("ack"),
        Ack::UnknownIncident
    );
    assert_eq!(
        store
            .ack(
                incident_id,
                "ana",
                Some("bad config, fixed by hand"),
                t(720)
            )
            .await
            .expect("ack"),
        Ack::Released {
            workload: "deployment default/web".into()
        }
    );
    assert!(!store.past_actions().await.expect("past")[0].held);
    let detail = store
        .incident(incident_id)
        .await
        .expect("read")
        .expect("incident");
    assert_eq!(detail.summary.outcome, "not-recovered", "the verdict stays");
    let ack = detail
        .timeline
        .iter()
        .find(|e| e.kind == "ack")
        .expect("ack entry");
    assert!(
        ack.message
            .contains("acknowledged by ana (bad config, fixed by hand)"),
        "{}",
        ack.message
    );
    assert_eq!(
        store
            .ack(incident_id, "bo", None, t(730))
            .await
            .expect("ack"),
        Ack::NotHeld {
            outcome: "not-recovered".into()
        },
        "an acknowledgement is recorded once"
    );
}

async fn failed_and_dry_run_actions_are_not_followed(db: TestDb) {
    let (store, _, _) = acted(&db, ActionStatus::Failed, false).await;
    assert!(
        store
            .verifications_due(t(800))
            .await
            .expect("due")
            .is_empty()
    );
    let db = db.sibling().await;
    let (store, _, _) = acted(&db, ActionStatus::Succeeded, true).await;
    assert!(
        store
            .verifications_due(t(800))
            .await
            .expect("due")
            .is_empty()
    );
}

/// Each action follows the alerts of its own incident, however many are under verification.
async fn each_action_follows_its_own_incidents_alerts(db: TestDb) {
    let store = db.open().await;
    act_on(&store, "web", 2, ActionStatus::Succeeded, false).await;
    act_on(&store, "api", 0, ActionStatus::Succeeded, false).await;
    let due = store.verifications_due(t(710)).await.expect("due");
    let followed: Vec<(&str, usize)> = due
        .iter()
        .map(|v| (v.name.as_str(), v.followed.len()))
        .collect();
    assert_eq!(followed, [("web", 3), ("api", 1)]);
    assert_ne!(due[0].incident_id, due[1].incident_id);
}

/// The past actions are read again whenever an action or a hold changed, whoever changed it:
/// here another handle on the same store, as `rollbackd incidents ack` or another replica
/// would be, and a statement outside the store's code.
async fn past_actions_follow_changes_made_elsewhere(db: TestDb) {
    let (store, action_id, incident_id) = acted(&db, ActionStatus::Succeeded, false).await;
    let elsewhere = db.open().await;
    let past = store.past_actions().await.expect("past");
    assert_eq!((past.len(), past[0].held), (1, false));
    assert!(
        Arc::ptr_eq(&past, &store.past_actions().await.expect("past")),
        "nothing changed: the last read is kept"
    );

    hold(&elsewhere, action_id, incident_id).await;
    assert!(
        store.past_actions().await.expect("past")[0].held,
        "held elsewhere"
    );
    elsewhere
        .ack(incident_id, "ana", None, t(720))
        .await
        .expect("ack");
    assert!(
        !store.past_actions().await.expect("past")[0].held,
        "released elsewhere"
    );

    let alert = mk_alert(AlertStatus::Firing);
    let mut second = alert.clone();
    second.starts_at = t(300);
    let id = elsewhere
        .record_alerts(std::slice::from_ref(&second), t(301))
        .await
        .expect("record")[0]
        .alert_id;
    // Another cause: a later rollout of the same workload.
    let mut later = mk_decision(false);
    if let Some(Command::UndoDeployment(u)) = &mut later.command {
        u.blamed = rev("web-d", 4);
    }
    elsewhere
        .record_decision(id, &second, &later, t(302))
        .await
        .expect("decide")
        .expect("recorded");
    assert_eq!(
        store.past_actions().await.expect("past").len(),
        2,
        "an intent elsewhere"
    );

    sqlx::query("UPDATE actions SET status = 'failed' WHERE id = $1")
        .bind(action_id)
        .execute(&elsewhere.pool)
        .await
        .expect("update");
    assert_eq!(
        store.past_actions().await.expect("past").len(),
        1,
        "a failed action no longer counts"
    );
}

on_both!(
    past_actions_follow_changes_made_elsewhere,
    each_action_follows_its_own_incidents_alerts,
    an_applied_action_is_followed_until_its_verdict_and_a_resolution_is_seen,
    not_recovered_holds_the_workload_until_acknowledged,
    failed_and_dry_run_actions_are_not_followed,
);
