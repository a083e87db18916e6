//! A flood of alerts about workloads with no recent rollout, or about a cause already reverted,
//! never holds up one about another rollout: the worker takes urgent alerts first and reads
//! the backlog a page at a time.

mod common;

use std::time::Duration;

use common::*;
use jiff::Timestamp;
use serde_json::{Value, json};

const QUIET_POSTS: usize = 8;
const QUIET_PER_POST: usize = 2500;

/// One webhook delivery of `n` alerts about Deployments that do not exist.
fn quiet_payload(post: usize, n: usize) -> Value {
    payload(
        n,
        |i| json!({"alertname": "Noise", "namespace": "default", "deployment": format!("quiet-{post}-{i}")}),
    )
}

/// One webhook delivery of `n` alerts, alert `i` with the labels `labels(i)`.
fn payload(n: usize, labels: impl Fn(usize) -> Value) -> Value {
    let alerts: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "status": "firing",
                "labels": labels(i),
                "annotations": {},
                "startsAt": Timestamp::now().to_string(),
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://127.0.0.1:9090/graph",
                "fingerprint": ""
            })
        })
        .collect();
    json!({
        "version": "4", "groupKey": "{}:{alertname=\"Noise\"}", "truncatedAlerts": 0,
        "status": "firing", "receiver": "rollbackd", "groupLabels": {}, "commonLabels": {},
        "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9093", "alerts": alerts
    })
}

/// How many alerts were still undecided when Deployment `name`'s undo was applied (looked at
/// every 20 ms, for at most a minute).
async fn undecided_at_undo(env: &Env, store: &rollbackd::store::Store, name: &str) -> i64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        let pending = store.pending_count().await.expect("count");
        if env.json_patches(name).iter().any(|p| p.status == 200) {
            return pending;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{name} was not undone within a minute");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_urgent_alert_overtakes_a_backlog_of_quiet_ones() {
    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    let running = env.daemon("").await;
    let addr = running.addr.to_string();
    let store = running.state.pipeline.store.clone();

    for post in 0..QUIET_POSTS {
        let (status, _) = post_alert(&addr, &quiet_payload(post, QUIET_PER_POST)).await;
        assert_eq!(status, 200);
    }
    let queued = QUIET_POSTS * QUIET_PER_POST;
    let pending_before = store.pending_count().await.expect("count");
    let (status, _) = post_alert(
        &addr,
        &scenario::alertmanager_payload(
            &[
                ("alertname", "HighErrorRate"),
                ("namespace", "default"),
                ("deployment", "web"),
            ],
            Timestamp::now(),
        ),
    )
    .await;
    assert_eq!(status, 200);

    // The undo lands while most of the backlog is still undecided.
    let pending = undecided_at_undo(&env, &store, "web").await;
    eprintln!(
        "quiet alerts undecided: {pending_before} when the urgent one came, {pending} at its undo"
    );
    // Arrival order would have decided every quiet alert first. Taken first, the urgent one
    // waits for the page in hand (256 alerts); the rest of the margin absorbs a slow poll.
    assert!(
        pending_before - pending < pending_before / 4,
        "the undo waited for the backlog: {pending_before} quiet alerts undecided before, {pending} at the undo"
    );

    // The backlog is then decided in full, every alert with a reason.
    wait_until("the backlog is decided", Duration::from_secs(120), || {
        let store = store.clone();
        async move { store.pending_count().await.unwrap_or(1) == 0 }
    })
    .await;
    assert_eq!(
        store.alert_count().await.expect("count") as usize,
        queued + 1
    );
    let web = env.api.get("web").await.expect("web");
    assert_eq!(image_of(&web), "nginx:2.0");
    running.stop().await.expect("clean stop");
}

/// After a revert, the alerts about its cause keep coming until Alertmanager sees them resolve.
/// They are ranked against the actions taken, so they are not urgent, and an alert about
/// another bad rollout is decided before them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_about_a_reverted_cause_does_not_hold_up_another_rollout() {
    const FLOOD_POSTS: usize = 12;
    const FLOOD_PER_POST: usize = 1000;
    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    env.three_rollouts("api").await;
    let running = env
        .daemon("[policy]\nbreaker_max_actions = 0\ncooldown = \"0s\"\n")
        .await;
    let addr = running.addr.to_string();
    let store = running.state.pipeline.store.clone();
    let error_rate = |deployment: &str, instance: String| {
        json!({"alertname": "HighErrorRate", "namespace": "default",
               "deployment": deployment, "instance": instance})
    };

    let (status, _) = post_alert(&addr, &payload(1, |_| error_rate("web", "first".into()))).await;
    assert_eq!(status, 200);
    wait_until("web undone", Duration::from_secs(30), || {
        let done = env.json_patches("web").iter().any(|p| p.status == 200);
        async move { done }
    })
    .await;
    // The worker's last read of the past actions, which ranking uses, has web's revert: it
    // reads them again once a round's results are recorded.
    wait_until(
        "the revert among the past actions",
        Duration::from_secs(30),
        || {
            let known = store.past_actions_last_read().iter().any(|p| p.settled);
            async move { known }
        },
    )
    .await;

    for post in 0..FLOOD_POSTS {
        let flood = payload(FLOOD_PER_POST, |i| {
            error_rate("web", format!("pod-{post}-{i}"))
        });
        let (status, _) = post_alert(&addr, &flood).await;
        assert_eq!(status, 200);
    }
    let pending_before = store.pending_count().await.expect("count");
    let (status, _) = post_alert(&addr, &payload(1, |_| error_rate("api", "first".into()))).await;
    assert_eq!(status, 200);

    let pending = undecided_at_undo(&env, &store, "api").await;
    eprintln!(
        "alerts about web undecided: {pending_before} when api's came, {pending} at its undo"
    );
    // Arrival order would have decided the whole flood first. Taken first, api's alert waits
    // for the page in hand and for its own recording, behind the worker's turns to write: a
    // few pages, while most of the flood is still undecided.
    assert!(
        pending > pending_before / 4,
        "api's undo waited for the flood about web: {pending_before} undecided before, {pending} at the undo"
    );

    wait_until("the flood is decided", Duration::from_secs(120), || {
        let store = store.clone();
        async move { store.pending_count().await.unwrap_or(1) == 0 }
    })
    .await;
    // Every alert of the flood was decided against web's revert: web was undone once.
    assert_eq!(
        env.json_patches("web")
            .iter()
            .filter(|p| p.status == 200)
            .count(),
        1
    );
    running.stop().await.expect("clean stop");
}
