//! The two alert paths against the real Prometheus and Alertmanager (Debian packages, started
//! per test on 127.0.0.1): a sample app whose error rate jumps to 30% after a bad rollout in the
//! sandbox is detected by (a) rollbackd's own poller and (b) Prometheus → Alertmanager → webhook,
//! and each leads to exactly one undo. A stopped Prometheus leads to no rollback and an
//! inconclusive record. Each test prints its detection-to-undo time for BENCHMARKS.md.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use jiff::Timestamp;
use rollbackd::daemon::Running;
use rollbackd::store::IncidentFilter;
use scenario::lab::{self, LabProcess, PrometheusLab};
use scenario::{self, SampleApp};

const GOOD: &str = "shop/web:1.0";
const BAD: &str = "shop/web:2.0";
const LIMIT: Duration = Duration::from_secs(90);

/// web at GOOD, a sample app following it, a lab copy of the rules (for: 2s, rate over 10s).
async fn setup(env: &Env) -> (SampleApp, PathBuf) {
    scenario::create(
        &env.api,
        scenario::deployment_manifest("default", "web", GOOD, 2),
    )
    .await
    .expect("web");
    scenario::wait_rolled_out(&env.api, "web", "1", Duration::from_secs(20))
        .await
        .expect("rolled out");
    let app = SampleApp::start(env.api.clone(), "web", &[BAD], 30)
        .await
        .expect("sample app");
    let rules = env.dir.path().join("rules.yml");
    std::fs::write(&rules, lab::fast_rules(lab::SHIPPED_RULES, "2s", "10s")).expect("lab rules");
    (app, rules)
}

fn prometheus(app: &SampleApp, rules: &[PathBuf], alertmanager: Option<&str>) -> LabProcess {
    lab::start_prometheus(&PrometheusLab {
        target: app.addr,
        target_labels: &[("namespace", "default"), ("app", "web")],
        rule_files: rules,
        alertmanager,
    })
    .expect("prometheus starts")
}

/// Waits until Prometheus has scraped the sample app at least twice.
async fn wait_scraped(prom: &LabProcess) {
    prom.wait_ready(Duration::from_secs(30))
        .await
        .expect("prometheus ready");
    let url = format!(
        "{}/api/v1/query?query=count_over_time(up%5B1m%5D)",
        prom.url
    );
    wait_until(
        "two scrapes of the sample app",
        Duration::from_secs(30),
        || {
            let url = url.clone();
            async move {
                let Ok(r) = reqwest::get(&url).await else {
                    return false;
                };
                let Ok(body) = r.json::<serde_json::Value>().await else {
                    return false;
                };
                body.pointer("/data/result/0/value/1")
                    .and_then(|v| v.as_str())
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|n| n >= 2.0)
            }
        },
    )
    .await;
}

/// Rolls out the bad image, waits for the single undo, and returns the alert's start time and
/// when the undo was seen.
async fn bad_rollout_until_undo(env: &Env, running: &Running) -> (Timestamp, Timestamp) {
    scenario::set_image(&env.api, "web", BAD)
        .await
        .expect("bad rollout");
    scenario::wait_rolled_out(&env.api, "web", "2", Duration::from_secs(20))
        .await
        .expect("bad live");
    let started = Instant::now();
    while env.json_patches("web").is_empty() {
        assert!(started.elapsed() < LIMIT, "no undo within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let undone_at = Timestamp::now();
    let incident = settled_incident(running).await;
    assert_eq!(incident.outcome, "rolled-back", "{}", incident.reason);
    let detail = running
        .state
        .pipeline
        .store
        .incident(incident.id)
        .await
        .expect("read")
        .expect("incident");
    let starts_at: Timestamp = detail.alerts[0].starts_at.parse().expect("timestamp");
    (starts_at, undone_at)
}

fn report(path: &str, starts_at: Timestamp, undone_at: Timestamp) {
    let ms = undone_at.duration_since(starts_at).as_millis();
    println!("BENCH {path} detection_to_undo_ms={ms}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poller_detects_a_bad_rollout_and_undoes_it_once() {
    let env = sandbox_env().await;
    let (app, rules) = setup(&env).await;
    let prom = prometheus(&app, &[], None);
    wait_scraped(&prom).await;
    let running = env
        .daemon(&format!(
            "[prometheus]\nurl = {:?}\nrules = [{:?}]\npoll_interval = \"1s\"\n",
            prom.url,
            rules.display().to_string()
        ))
        .await;
    env.sandbox.clear_requests();
    let (starts_at, undone_at) = bad_rollout_until_undo(&env, &running).await;
    report("poller", starts_at, undone_at);
    let web = scenario::wait_rolled_out(&env.api, "web", "3", Duration::from_secs(10))
        .await
        .expect("back");
    assert_eq!(image_of(&web), GOOD);
    // The alert keeps firing until the 10s rate window has passed: still one undo.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(env.json_patches("web").len(), 1, "exactly one undo");
    let list = running
        .state
        .pipeline
        .store
        .list_incidents(&IncidentFilter::default())
        .await
        .expect("list");
    let detail = running
        .state
        .pipeline
        .store
        .incident(list[0].id)
        .await
        .expect("read")
        .expect("incident");
    assert_eq!(detail.alerts[0].source, "prometheus");
    assert_eq!(detail.alerts[0].alertname, "HighErrorRate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_delivers_the_alert_and_its_resolution() {
    let env = sandbox_env().await;
    let (app, rules) = setup(&env).await;
    let running = env.daemon("").await;
    let am = lab::start_alertmanager(&format!("http://{}/api/v1/alerts", running.addr))
        .expect("alertmanager");
    am.wait_ready(Duration::from_secs(30))
        .await
        .expect("alertmanager ready");
    let prom = prometheus(&app, std::slice::from_ref(&rules), Some(&am.url));
    wait_scraped(&prom).await;
    env.sandbox.clear_requests();
    let (starts_at, undone_at) = bad_rollout_until_undo(&env, &running).await;
    report("alertmanager", starts_at, undone_at);

    // rollbackd computes the fingerprint Alertmanager computes (FNV-1a over sorted labels).
    let listed: serde_json::Value = reqwest::get(format!("{}/api/v2/alerts", am.url))
        .await
        .expect("alertmanager answers")
        .json()
        .await
        .expect("json");
    let theirs = listed[0]["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_string();
    let incident = settled_incident(&running).await;
    let detail = running
        .state
        .pipeline
        .store
        .incident(incident.id)
        .await
        .expect("read")
        .expect("incident");
    assert_eq!(detail.alerts[0].fingerprint, theirs);

    // Healthy again: the resolved notification closes the alert and the incident.
    let store = running.state.pipeline.store.clone();
    wait_until("the incident resolved by Alertmanager", LIMIT, || {
        let store = store.clone();
        async move {
            let list = store
                .list_incidents(&IncidentFilter::default())
                .await
                .unwrap_or_default();
            list.first().is_some_and(|i| i.status == "resolved")
        }
    })
    .await;
    let list = store
        .list_incidents(&IncidentFilter::default())
        .await
        .expect("list");
    let detail = store
        .incident(list[0].id)
        .await
        .expect("read")
        .expect("incident");
    assert_eq!(detail.alerts[0].status, "resolved");
    assert_eq!(detail.alerts[0].source, "alertmanager");
    assert!(
        detail.timeline.iter().any(|e| e.kind == "resolved"),
        "{:?}",
        detail.timeline
    );
    assert_eq!(env.json_patches("web").len(), 1, "exactly one undo");
    drop(prom);
    drop(am);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_prometheus_is_inconclusive_never_a_rollback() {
    let env = sandbox_env().await;
    let (app, rules) = setup(&env).await;
    let mut prom = prometheus(&app, &[], None);
    wait_scraped(&prom).await;
    let running = env
        .daemon(&format!(
            "[prometheus]\nurl = {:?}\nrules = [{:?}]\npoll_interval = \"1s\"\nquery_timeout = \"1s\"\n",
            prom.url,
            rules.display().to_string()
        ))
        .await;
    prom.stop();
    scenario::set_image(&env.api, "web", BAD)
        .await
        .expect("bad rollout");
    let store = running.state.pipeline.store.clone();
    wait_until(
        "an inconclusive period recorded",
        Duration::from_secs(20),
        || {
            let store = store.clone();
            async move {
                store
                    .inconclusive_periods()
                    .await
                    .unwrap_or_default()
                    .iter()
                    .any(|p| p.rule.ends_with("HighErrorRate") && p.ended_at.is_none())
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        env.json_patches("web").is_empty(),
        "no data is never a reason to roll back"
    );
    assert_eq!(store.alert_count().await.expect("count"), 0);
    let metrics = running.state.metrics.render();
    assert!(metrics.contains("result=\"inconclusive\""), "{metrics}");
    assert!(
        metrics.contains("rollbackd_poller_inconclusive_rules 4"),
        "{metrics}"
    );
}
