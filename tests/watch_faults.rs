//! Fresh data or no decision: with the API server refusing connections, answering 500 and 429,
//! or reachable only over a half-open connection, `/readyz` goes 503 within the configured
//! staleness bound, an alert about a rollout made meanwhile is not decided, and once the API
//! server is back the alert is decided on fresh data and the Deployment rolled back once.
//! Discovery retries until the API server answers, without holding up the listener.

mod common;
#[path = "support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::time::Duration;

use common::proxy::{Mode, Proxy};
use common::*;
use jiff::Timestamp;
use kube_sandbox::{Fault, FaultAction, SandboxOptions};
use rollbackd::config::Config;
use rollbackd::daemon::{self, Running};
use serde_json::Value;

/// `kubernetes.stale_after` in these tests: watches renew every 1s, a silent connection is
/// dropped after 1.5s.
const STALE_AFTER: &str = "3s";
/// How long `/readyz` may take to notice an outage: the bound, plus scheduling slack.
const NOTICE: Duration = Duration::from_secs(6);
const RECOVER: Duration = Duration::from_secs(10);

async fn env() -> Env {
    sandbox_env_with(SandboxOptions {
        bookmark_interval: Duration::from_millis(500),
        ..SandboxOptions::default()
    })
    .await
}

/// A kubeconfig for the daemon that goes through `proxy`.
fn kubeconfig_via(env: &Env, proxy: &Proxy) -> PathBuf {
    let path = env.dir.path().join("kubeconfig-via-proxy");
    let text = proxy.kubeconfig(&env.sandbox.kubeconfig_yaml(), env.sandbox.addr());
    std::fs::write(&path, text).expect("kubeconfig written");
    path
}

/// The daemon's config: short staleness bound, and the proxy's kubeconfig when given.
fn config(env: &Env, kubeconfig: Option<&PathBuf>) -> Config {
    let path = env.config_file("127.0.0.1:0", "");
    let mut overrides = vec![(
        "ROLLBACKD__KUBERNETES__STALE_AFTER".to_string(),
        STALE_AFTER.to_string(),
    )];
    if let Some(kc) = kubeconfig {
        overrides.push((
            "ROLLBACKD__KUBERNETES__KUBECONFIG".to_string(),
            kc.display().to_string(),
        ));
    }
    Config::load_with_env(&path, overrides).expect("valid config")
}

async fn readyz(running: &Running) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("http://{}/readyz", running.addr))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("/readyz answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits until `/readyz` answers `want`; returns its body.
async fn wait_readyz(running: &Running, want: u16, limit: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (status, body) = readyz(running).await;
        if status == want {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz still {status} after {limit:?}, wanted {want}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// JSON and merge patches (the daemon's; the test's own `set image` is a strategic merge).
fn daemon_patches(env: &Env) -> usize {
    env.sandbox
        .requests()
        .iter()
        .filter(|r| {
            r.method == "PATCH"
                && r.content_type.as_deref() != Some("application/strategic-merge-patch+json")
                // rollbackd's note of the incident on the object, not a change of behaviour
                && !r.body.contains("rollbackd.io/last-action")
        })
        .count()
}

/// Deployment web at nginx:1.0, 2.0, 3.0, and the daemon watching it, ready.
async fn ready_daemon(env: &Env, kubeconfig: Option<&PathBuf>) -> Running {
    env.three_rollouts("web").await;
    let running = daemon::start(config(env, kubeconfig))
        .await
        .expect("daemon starts");
    wait_readyz(&running, 200, RECOVER).await;
    running
}

/// With the API server out of reach: `/readyz` says why within the bound; web rolls out
/// nginx:4.0 and an alert about it arrives; nothing is decided, nothing is patched.
async fn alert_during_outage(env: &Env, running: &Running) {
    let body = wait_readyz(running, 503, NOTICE).await;
    let reason = body["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.starts_with("watch "), "{body}");

    scenario::set_image(&env.api, "web", "nginx:4.0")
        .await
        .expect("rollout");
    alert_after_rollout(&env.api, running).await;
    // Several sweeps of the decision worker.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(readyz(running).await.0, 503, "the outage is still on");
    let undecided = running
        .state
        .pipeline
        .store
        .undecided_alerts()
        .await
        .expect("store");
    assert_eq!(undecided.len(), 1, "the alert waits for fresh data");
    assert_eq!(daemon_patches(env), 0, "nothing is patched on stale data");
}

/// Once the API server is back: ready again, the alert decided on fresh data (the rollout of
/// nginx:4.0 is undone, to nginx:3.0), with one patch.
async fn decided_after_recovery(env: &Env, running: &Running) {
    let body = wait_readyz(running, 200, RECOVER).await;
    assert_eq!(body["reason"], Value::Null, "{body}");
    // The fresh rollout is the one undone.
    fourth_rollout_undone_once(env, running).await;
    assert_eq!(daemon_patches(env), 1);
    assert!(
        running
            .state
            .pipeline
            .store
            .undecided_alerts()
            .await
            .expect("store")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_stop_decisions_until_the_api_server_is_back() {
    let env = env().await;
    let proxy = Proxy::start(env.sandbox.addr()).await;
    let running = ready_daemon(&env, Some(&kubeconfig_via(&env, &proxy))).await;

    proxy.set(Mode::Refuse);
    assert!(common::proxy::refused(proxy.addr(), Duration::from_secs(2)).await);
    alert_during_outage(&env, &running).await;
    let why = running.state.readiness.why_not_ready().unwrap_or_default();
    assert!(why.contains("failing since"), "{why}");

    proxy.set(Mode::Forward);
    decided_after_recovery(&env, &running).await;
    running.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_throttling_stop_decisions_until_they_end() {
    let env = env().await;
    let running = ready_daemon(&env, None).await;
    let fail = |verb: &str, code: u16| Fault {
        verb: Some(verb.into()),
        resource: None,
        count: u32::MAX,
        action: FaultAction::Status(code),
    };

    env.sandbox.inject_fault(fail("watch", 500));
    env.sandbox.inject_fault(fail("list", 429));
    let body = wait_readyz(&running, 503, NOTICE).await;
    assert!(
        body["reason"].as_str().is_some_and(|r| r.contains("500")),
        "{body}"
    );
    alert_during_outage(&env, &running).await;
    env.sandbox.clear_faults();
    env.sandbox.inject_fault(fail("watch", 429));
    env.sandbox.inject_fault(fail("list", 500));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(readyz(&running).await.0, 503);
    assert_eq!(daemon_patches(&env), 0);
    let statuses: Vec<u16> = env.sandbox.requests().iter().map(|r| r.status).collect();
    assert!(statuses.contains(&429) && statuses.contains(&500));

    env.sandbox.clear_faults();
    decided_after_recovery(&env, &running).await;
    running.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_connection_is_noticed_and_replaced() {
    let env = env().await;
    let proxy = Proxy::start(env.sandbox.addr()).await;
    let running = ready_daemon(&env, Some(&kubeconfig_via(&env, &proxy))).await;

    let silent_since = tokio::time::Instant::now();
    proxy.set(Mode::Blackhole);
    alert_during_outage(&env, &running).await;
    assert!(
        silent_since.elapsed() < NOTICE + Duration::from_secs(5),
        "noticed late"
    );

    proxy.set(Mode::Forward);
    decided_after_recovery(&env, &running).await;
    running.stop().await.expect("clean stop");
}

fn argo_discovery(env: &Env) -> Vec<u16> {
    env.sandbox
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path_only() == "/apis/argoproj.io/v1alpha1")
        .map(|r| r.status)
        .collect()
}

fn rollouts_listed(env: &Env) -> bool {
    env.sandbox.requests().iter().any(|r| {
        r.method == "GET"
            && r.path_only() == "/apis/argoproj.io/v1alpha1/rollouts"
            && r.status == 200
    })
}

fn watched_kinds(running: &Running) -> Vec<&'static str> {
    running
        .state
        .readiness
        .verdicts()
        .into_iter()
        .map(|(name, _)| name.kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_errors_are_retried_not_taken_for_not_installed() {
    let env = env().await;
    env.sandbox.inject_fault(Fault {
        verb: None,
        resource: Some("/apis/argoproj.io/v1alpha1".into()),
        count: 3,
        action: FaultAction::Status(500),
    });
    let running = daemon::start(config(&env, None))
        .await
        .expect("daemon starts");
    let readiness = running.state.readiness.clone();
    wait_until("discovery reported failing", NOTICE, || {
        let why = readiness.why_not_ready().unwrap_or_default();
        async move { why.starts_with("discovery failing since") && why.contains("500") }
    })
    .await;
    wait_readyz(&running, 200, RECOVER).await;
    assert_eq!(argo_discovery(&env), vec![500, 500, 500, 200]);
    assert!(rollouts_listed(&env), "Rollouts are watched");
    assert!(
        watched_kinds(&running).contains(&"rollouts"),
        "{:?}",
        watched_kinds(&running)
    );
    running.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_at_start_holds_up_readiness_not_the_listener() {
    let env = env().await;
    let proxy = Proxy::start(env.sandbox.addr()).await;
    proxy.set(Mode::Refuse);
    assert!(common::proxy::refused(proxy.addr(), Duration::from_secs(2)).await);
    let started = tokio::time::Instant::now();
    let running = daemon::start(config(&env, Some(&kubeconfig_via(&env, &proxy))))
        .await
        .expect("daemon starts without the API server");
    assert!(started.elapsed() < Duration::from_secs(2), "start waited");
    let body = wait_readyz(&running, 503, NOTICE).await;
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("discovering") || reason.starts_with("discovery failing"),
        "{body}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        argo_discovery(&env).is_empty(),
        "nothing reached the API server"
    );

    proxy.set(Mode::Forward);
    wait_readyz(&running, 200, RECOVER).await;
    assert_eq!(argo_discovery(&env), vec![200]);
    assert!(rollouts_listed(&env), "Rollouts are watched");
    assert!(watched_kinds(&running).contains(&"virtualservices"));
    running.stop().await.expect("clean stop");
}

/// An alert that waits for fresh data longer than `policy.max_decision_wait` is recorded
/// `stale-data` and on-call is told; once the data is fresh it is decided and acted on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_that_waits_too_long_is_recorded_stale_then_decided() {
    let env = env().await;
    let slack = support::SlackSink::start(support::Reply::Status(200, "ok".into(), None)).await;
    let hook = env.dir.path().join("hook");
    std::fs::write(&hook, format!("{}/services/T/B/x", slack.url())).expect("hook");
    let proxy = Proxy::start(env.sandbox.addr()).await;
    env.three_rollouts("web").await;
    let path = env.config_file(
        "127.0.0.1:0",
        &format!(
            "[policy]\nmax_decision_wait = \"1s\"\n[notify.slack]\nwebhook_url_file = {:?}\n",
            hook.display().to_string()
        ),
    );
    let overrides = vec![
        (
            "ROLLBACKD__KUBERNETES__STALE_AFTER".to_string(),
            STALE_AFTER.to_string(),
        ),
        (
            "ROLLBACKD__KUBERNETES__KUBECONFIG".to_string(),
            kubeconfig_via(&env, &proxy).display().to_string(),
        ),
    ];
    let config = Config::load_with_env(&path, overrides).expect("valid config");
    let running = daemon::start(config).await.expect("daemon starts");
    wait_readyz(&running, 200, RECOVER).await;

    proxy.set(Mode::Refuse);
    wait_readyz(&running, 503, NOTICE).await;
    let (status, _) = post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(WEB, Timestamp::now()),
    )
    .await;
    assert_eq!(status, 200);
    let store = running.state.pipeline.store.clone();
    wait_until("a stale-data record", Duration::from_secs(10), || {
        let store = store.clone();
        async move {
            store
                .list_incidents(&Default::default())
                .await
                .is_ok_and(|l| l.iter().any(|i| i.outcome == "stale-data"))
        }
    })
    .await;
    let stale = store
        .list_incidents(&Default::default())
        .await
        .expect("list");
    let stale = stale
        .iter()
        .find(|i| i.outcome == "stale-data")
        .expect("stale");
    assert!(stale.reason.contains("failing since"), "{}", stale.reason);
    assert!(
        stale.reason.contains("max_decision_wait"),
        "{}",
        stale.reason
    );
    let told = slack.wait_for(1, Duration::from_secs(10)).await;
    assert!(told[0].raw.contains("stale-data"), "{}", told[0].raw);
    assert_eq!(daemon_patches(&env), 0, "nothing is patched on stale data");
    assert_eq!(
        store.pending_count().await.expect("count"),
        1,
        "still to decide"
    );

    proxy.set(Mode::Forward);
    wait_readyz(&running, 200, RECOVER).await;
    wait_until("the alert is decided", Duration::from_secs(10), || {
        let store = store.clone();
        async move { store.pending_count().await.unwrap_or(1) == 0 }
    })
    .await;
    let web = scenario::wait_rolled_out(&env.api, "web", "4", Duration::from_secs(10))
        .await
        .expect("rolled back");
    assert_eq!(image_of(&web), "nginx:2.0");
    assert_eq!(env.json_patches("web").len(), 1, "rolled back exactly once");
    let list = store
        .list_incidents(&Default::default())
        .await
        .expect("list");
    assert!(list.iter().any(|i| i.outcome == "rolled-back"), "{list:#?}");
    running.stop().await.expect("clean stop");
}
