//! High availability with the real binary: two replicas against one sandbox and one real
//! PostgreSQL (`tests/pg`). Exactly one holds the Lease and acts; after `kill -9` of the
//! leader the other takes over, settles what the leader left in flight, and every alert sent
//! to either replica during the switch leads to exactly one rollback.
//!
//! Lease settings are short here (2 s lease, 1 s renew deadline); production defaults are
//! 15 s and 10 s.

mod common;
#[path = "pg/mod.rs"]
mod pg;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::Value;

const LEASE_DURATION: Duration = Duration::from_secs(2);

fn alert(deployment: &str, name: &str) -> Value {
    scenario::alertmanager_payload(
        &[
            ("alertname", name),
            ("namespace", "default"),
            ("deployment", deployment),
        ],
        Timestamp::now(),
    )
}

/// One replica: the real binary, its address, and its log lines (echoed to the test's own).
struct Replica {
    child: Child,
    addr: String,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    fn spawn(env: &Env, store_url: &str, identity: &str, fault: Option<&str>) -> Replica {
        Replica::spawn_with(env, store_url, identity, fault, "")
    }

    /// As [`Replica::spawn`], with `extra` TOML appended to the config.
    fn spawn_with(
        env: &Env,
        store_url: &str,
        identity: &str,
        fault: Option<&str>,
        extra: &str,
    ) -> Replica {
        let addr = format!("127.0.0.1:{}", free_port());
        let config = write_config(env, store_url, identity, &addr, extra);
        let mut command = Command::new(binary());
        command
            .args(["serve", "--config"])
            .arg(&config)
            .env("ROLLBACKD_LOG", "info")
            .env_remove(rollbackd::fault::ENV)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(point) = fault {
            command.env(rollbackd::fault::ENV, point);
        }
        let mut child = command.spawn().expect("rollbackd starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, lines) = std::sync::mpsc::channel();
        let tag = identity.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{tag}] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Replica { child, addr, lines }
    }

    /// The log lines printed since the last look, without waiting.
    fn lines_so_far(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// Waits for a log line containing `needle`; panics after `limit`.
    fn wait_for_line(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => {}
                Err(_) => panic!("no log line with {needle:?} within {limit:?}"),
            }
        }
    }

    async fn wait_ready(&self) {
        let url = format!("http://{}/readyz", self.addr);
        wait_until("rollbackd /readyz", Duration::from_secs(30), || {
            let url = url.clone();
            async move { matches!(reqwest::get(&url).await, Ok(r) if r.status().is_success()) }
        })
        .await;
    }

    fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL delivered");
        let status = self.child.wait().expect("reaped");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "killed by SIGKILL"
        );
    }
}

fn write_config(env: &Env, store_url: &str, identity: &str, addr: &str, extra: &str) -> PathBuf {
    let path = env.dir.path().join(format!("{identity}.toml"));
    let text = format!(
        "[server]\nlisten = \"{addr}\"\n\
         [kubernetes]\nkubeconfig = {:?}\n\
         [store]\nurl = {store_url:?}\n\
         [policy]\nbreaker_max_actions = 0\n\
         [leader_election]\nidentity = {identity:?}\nlease_duration = \"2s\"\n\
         renew_deadline = \"1s\"\nretry_period = \"200ms\"\n{extra}",
        env.kubeconfig.display().to_string(),
    );
    std::fs::write(&path, text).expect("config written");
    path
}

async fn holder(api: &Api<Lease>) -> Option<String> {
    api.get_opt("rollbackd")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
}

async fn wait_holder(api: &Api<Lease>, identity: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    let want = identity.to_string();
    wait_until(&format!("{identity} holds the lease"), limit, || {
        let api = api.clone();
        let want = want.clone();
        async move { holder(&api).await.as_deref() == Some(want.as_str()) }
    })
    .await;
    started.elapsed()
}

async fn get_json(addr: &str, path: &str) -> Value {
    reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("answers")
        .json()
        .await
        .expect("JSON")
}

/// Waits until `n` incidents exist and none is still under way; returns them.
async fn wait_incidents(addr: &str, n: usize, limit: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let list = get_json(addr, "/api/v1/incidents").await;
        let list = list.as_array().cloned().unwrap_or_default();
        let settled = list.iter().all(|i| {
            !matches!(
                i["outcome"].as_str(),
                Some("acting") | Some("unsettled") | Some("failed")
            )
        });
        if list.len() >= n && settled {
            return list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "incidents not settled within {limit:?}: {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn applied_patches(env: &Env, deployment: &str) -> usize {
    env.json_patches(deployment)
        .iter()
        .filter(|p| p.status == 200)
        .count()
}

async fn assert_rolled_back_once(env: &Env, deployment: &str) {
    let d = scenario::wait_rolled_out(&env.api, deployment, "4", Duration::from_secs(15))
        .await
        .unwrap_or_else(|e| panic!("{deployment} rolled back: {e}"));
    assert_eq!(image_of(&d), "nginx:2.0", "{deployment}");
    assert_eq!(
        applied_patches(env, deployment),
        1,
        "{deployment}: rolled back exactly once"
    );
}

/// `rollbackd_leader` as a replica exposes it.
async fn leader_metric(addr: &str) -> i64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix("rollbackd_leader "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rollbackd_leader in {text}"))
}

fn lease_api(env: &Env) -> Api<Lease> {
    Api::namespaced(env.client.clone(), "default")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_takes_over_from_a_leader_killed_mid_action() {
    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    let store = pg::fresh_database().await;
    let leases = lease_api(&env);

    // Only the leader polls Prometheus (here one that is not there: every poll is
    // inconclusive, never a reason to act).
    let polling = format!(
        "[prometheus]\nurl = \"http://127.0.0.1:{}\"\nrules = [{:?}]\n",
        free_port(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/rules/*.yml")
    );
    // Replica a starts first and leads; it will stop for good right after its PATCH.
    let a = Replica::spawn_with(
        &env,
        &store,
        "replica-a",
        Some(rollbackd::fault::AFTER_PATCH),
        &polling,
    );
    a.wait_ready().await;
    wait_holder(&leases, "replica-a", Duration::from_secs(20)).await;
    a.wait_for_line("polling Prometheus", Duration::from_secs(10));
    let b = Replica::spawn_with(&env, &store, "replica-b", None, &polling);
    b.wait_ready().await;
    b.wait_for_line("leader election is on", Duration::from_secs(10));
    // Exactly one holds the Lease, through several renewals.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(holder(&leases).await.as_deref(), Some("replica-a"));
    }
    assert_eq!(leader_metric(&a.addr).await, 1);
    assert_eq!(leader_metric(&b.addr).await, 0);

    // The alert goes to the follower: it records it, and the leader acts on it.
    let (status, _) = post_alert(&b.addr, &alert("web", "HighErrorRate")).await;
    assert_eq!(status, 200);
    let follower_said = b.lines_so_far();
    assert!(
        !follower_said
            .iter()
            .any(|l| l.contains("polling Prometheus")),
        "the follower polls nothing: {follower_said:#?}"
    );
    a.wait_for_line(
        &format!("fault point {} reached", rollbackd::fault::AFTER_PATCH),
        Duration::from_secs(20),
    );
    assert_eq!(applied_patches(&env, "web"), 1, "the leader patched");
    a.kill_9();

    // b takes the Lease once it expires, settles the action a left without a result, and
    // sends nothing more.
    let took = wait_holder(&leases, "replica-b", LEASE_DURATION * 5).await;
    eprintln!(
        "replica-b took the lease {took:?} after the kill (lease duration {LEASE_DURATION:?})"
    );
    b.wait_for_line("polling Prometheus", Duration::from_secs(10));
    wait_until("replica-b reports leading", Duration::from_secs(10), || {
        let addr = b.addr.clone();
        async move { leader_metric(&addr).await == 1 }
    })
    .await;
    let list = wait_incidents(&b.addr, 1, Duration::from_secs(30)).await;
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0]["outcome"], "rolled-back", "{:#}", list[0]);
    assert_rolled_back_once(&env, "web").await;

    // The incident shows the handover.
    let id = list[0]["id"].as_i64().expect("id");
    let detail = get_json(&b.addr, &format!("/api/v1/incidents/{id}")).await;
    let timeline = detail["timeline"].as_array().cloned().unwrap_or_default();
    let handover = timeline
        .iter()
        .filter_map(|e| e["message"].as_str())
        .find(|m| m.contains("took over as leader"))
        .unwrap_or_else(|| panic!("no handover in {timeline:#?}"));
    assert!(
        handover.contains("replica-b") && handover.contains("after replica-a"),
        "{handover}"
    );
    let kinds: Vec<&str> = timeline.iter().filter_map(|e| e["kind"].as_str()).collect();
    for kind in ["received", "decision", "action", "result"] {
        assert!(kinds.contains(&kind), "no {kind} entry in {kinds:?}");
    }
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_sent_to_either_replica_during_the_switch_each_roll_back_once() {
    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    env.three_rollouts("api").await;
    let store = pg::fresh_database().await;
    let leases = lease_api(&env);
    let a = Replica::spawn(&env, &store, "replica-a", None);
    a.wait_ready().await;
    wait_holder(&leases, "replica-a", Duration::from_secs(20)).await;
    let b = Replica::spawn(&env, &store, "replica-b", None);
    b.wait_ready().await;

    // An alert to the leader, which is killed as soon as it has answered; then alerts to the
    // follower while nobody leads: a new one, and the first one again.
    let (status, _) = post_alert(&a.addr, &alert("web", "HighErrorRate")).await;
    assert_eq!(status, 200);
    a.kill_9();
    let (status, _) = post_alert(&b.addr, &alert("api", "HighErrorRate")).await;
    assert_eq!(status, 200, "the follower records while nobody leads");
    let (status, _) = post_alert(&b.addr, &alert("web", "HighLatencyP95")).await;
    assert_eq!(status, 200);

    wait_holder(&leases, "replica-b", LEASE_DURATION * 5).await;
    let list = wait_incidents(&b.addr, 2, Duration::from_secs(30)).await;
    for deployment in ["web", "api"] {
        assert_rolled_back_once(&env, deployment).await;
    }
    // Nothing more comes once everything is decided.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for deployment in ["web", "api"] {
        assert_eq!(
            applied_patches(&env, deployment),
            1,
            "{deployment}: {list:#?}"
        );
    }
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_store_is_unreachable_answers_503_and_records_once_it_is_back() {
    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    let store = pg::fresh_database().await;
    let db = pg::database_of(&store).to_string();
    let a = Replica::spawn(&env, &store, "replica-a", None);
    a.wait_ready().await;

    // The database refuses every connection, and those open are cut.
    pg::admin(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false")).await;
    pg::admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
    ))
    .await;
    let payload = alert("web", "HighErrorRate");
    let (status, body) = post_alert(&a.addr, &payload).await;
    assert_eq!(status, 503, "Alertmanager must retry: {body}");

    // Back: Alertmanager's retry is recorded, and acted on once.
    pg::admin(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true")).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = post_alert(&a.addr, &payload).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "only 503 until the store is back");
        assert!(
            Instant::now() < deadline,
            "the store did not take writes again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let list = wait_incidents(&a.addr, 1, Duration::from_secs(30)).await;
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_rolled_back_once(&env, "web").await;
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_by_sigterm_gives_the_lease_up_to_the_other() {
    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    let store = pg::fresh_database().await;
    let leases = lease_api(&env);
    let mut a = Replica::spawn(&env, &store, "replica-a", None);
    a.wait_ready().await;
    wait_holder(&leases, "replica-a", Duration::from_secs(20)).await;
    let b = Replica::spawn(&env, &store, "replica-b", None);
    b.wait_ready().await;
    b.wait_for_line("leader election is on", Duration::from_secs(10));

    // What the kubelet does to the old pod of a rolling update.
    let pid = a.child.id().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    a.wait_for_line("gave the lease up", Duration::from_secs(10));
    let status = a.child.wait().expect("replica-a exits");
    assert!(status.success(), "a clean exit: {status:?}");
    wait_holder(&leases, "replica-b", LEASE_DURATION * 5).await;

    // The new leader acts.
    let (status, _) = post_alert(&b.addr, &alert("web", "HighErrorRate")).await;
    assert_eq!(status, 200);
    wait_incidents(&b.addr, 1, Duration::from_secs(30)).await;
    assert_rolled_back_once(&env, "web").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_lease_stops_acting_and_records_alerts_only() {
    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    let store = pg::fresh_database().await;
    let leases = lease_api(&env);
    let a = Replica::spawn(&env, &store, "replica-a", None);
    a.wait_ready().await;
    wait_holder(&leases, "replica-a", Duration::from_secs(20)).await;
    a.wait_for_line("leading: deciding", Duration::from_secs(10));

    // Every Lease request fails from now on: the leader can no longer renew.
    env.sandbox.inject_fault(kube_sandbox::Fault {
        verb: None,
        resource: Some("leases".into()),
        count: 100_000,
        action: kube_sandbox::FaultAction::Status(503),
    });
    a.wait_for_line("no longer leading", Duration::from_secs(10));
    assert_eq!(leader_metric(&a.addr).await, 0);

    // An alert is recorded (200) but nobody acts on it while nobody leads.
    let (status, _) = post_alert(&a.addr, &alert("web", "HighErrorRate")).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        applied_patches(&env, "web"),
        0,
        "a replica that does not lead acts on nothing"
    );

    // The API server answers again: it leads under a new epoch and acts, once.
    env.sandbox.clear_faults();
    a.wait_for_line("leading: deciding", Duration::from_secs(10));
    wait_incidents(&a.addr, 1, Duration::from_secs(30)).await;
    assert_rolled_back_once(&env, "web").await;
}
