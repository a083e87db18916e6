//! The storm benchmark's quick mode (benches/storm.rs measures the full storm): correctness only,
//! never timings. 1,600 single-alert POSTs at 16 connections over 40 Deployments rolled out a
//! moment before, three in four distinct, one in four a repeat. Every POST is answered 200,
//! every distinct alert is recorded once and decided, every Deployment is undone exactly once,
//! and the alerts that arrive after its undo are refused as `would-cascade`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use jiff::Timestamp;
use rollbackd::store::IncidentFilter;

const DEPLOYMENTS: usize = 40;
const POSTS: usize = 1_600;
const CONNECTIONS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_loses_nothing_and_undoes_each_deployment_once() {
    let env = sandbox_env().await;
    futures::future::join_all((0..DEPLOYMENTS).map(|i| {
        let api = env.api.clone();
        async move {
            scenario::deploy_revisions(&api, "default", &format!("d-{i}"), &["app:1", "app:2"])
                .await
                .expect("two revisions")
        }
    }))
    .await;
    let running = env.daemon("[policy]\nbreaker_max_actions = 0\n").await;
    env.sandbox.clear_requests();

    let starts = Timestamp::now();
    let bodies: Arc<Vec<String>> = Arc::new(
        (0..POSTS)
            .map(|k| {
                // Three in four distinct; every fourth repeats the one posted k/4 places back.
                let i = if k % 4 == 3 { k / 4 } else { k - k / 4 };
                scenario::alertmanager_payload(
                    &[
                        ("alertname", "HighErrorRate"),
                        ("namespace", "default"),
                        ("deployment", &format!("d-{}", i % DEPLOYMENTS)),
                        ("instance", &format!("pod-{i}")),
                    ],
                    starts,
                )
                .to_string()
            })
            .collect(),
    );
    let distinct = POSTS - POSTS / 4;
    let next = Arc::new(AtomicUsize::new(0));
    let addr = running.addr.to_string();
    let http = reqwest::Client::new();
    let answers = futures::future::join_all((0..CONNECTIONS).map(|_| {
        let (bodies, next, http) = (bodies.clone(), next.clone(), http.clone());
        let url = format!("http://{addr}/api/v1/alerts");
        async move {
            let mut statuses = Vec::new();
            while let Some(body) = bodies.get(next.fetch_add(1, Ordering::Relaxed)) {
                let status = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                statuses.push(status);
            }
            statuses
        }
    }))
    .await;
    let statuses: Vec<u16> = answers.into_iter().flatten().collect();
    assert_eq!(statuses.len(), POSTS);
    assert!(
        statuses.iter().all(|s| *s == 200),
        "every delivery is recorded: {:?}",
        statuses
            .iter()
            .filter(|s| **s != 200)
            .take(10)
            .collect::<Vec<_>>()
    );

    let store = running.state.pipeline.store.clone();
    wait_until("every alert decided", Duration::from_secs(120), || {
        let store = store.clone();
        async move { store.pending_count().await.is_ok_and(|n| n == 0) }
    })
    .await;
    let incidents = store
        .list_incidents(&IncidentFilter::default())
        .await
        .expect("list");
    let recorded: i64 = incidents.iter().map(|i| i.alert_count).sum();
    assert_eq!(
        recorded, distinct as i64,
        "each distinct alert recorded once, repeats deduplicated"
    );
    // An alert that arrives after the undo is about the restored revision, which rollbackd
    // itself rolled out: a second incident per Deployment at most, never acted on.
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for i in &incidents {
        *outcomes.entry(i.outcome.clone()).or_default() += 1;
    }
    assert_eq!(
        outcomes.get("rolled-back"),
        Some(&DEPLOYMENTS),
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .keys()
            .all(|o| o == "rolled-back" || o == "would-cascade"),
        "{outcomes:?}"
    );
    // Late duplicates would show as a second undo.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..DEPLOYMENTS {
        assert_eq!(
            env.json_patches(&format!("d-{i}")).len(),
            1,
            "d-{i} undone exactly once"
        );
    }
}
