//! The storm benchmark: `cargo bench --bench storm` (`STORM_POSTS=N` for another size).
//!
//! Measured side by side in one run, over loopback at 32 concurrent connections:
//! - the *floor*: a bare axum endpoint built here that parses the same JSON with rollbackd's
//!   own parser (`http::webhook::parse`) and answers 200;
//! - the *undo floor*: the same endpoint, which also starts rollbackd's own executor on each
//!   Deployment's first alert, with a command planned before the storm: the same reads and
//!   PATCH as the daemon's undo, with nothing recorded and nothing decided. It is the least
//!   any daemon could take from alert to undo on this machine and this sandbox, in B1 and in
//!   the storm;
//! - the release binary with group commit (the default), and the same binary with
//!   `ROLLBACKD_GROUP_COMMIT=off` (a transaction per delivery, as before group commit).
//!
//! Each storm is `STORM_POSTS` single-alert POSTs (default 20,000): three in four are distinct
//! alerts over 200 Deployments rolled out a moment before, one in four repeats an earlier one.
//! Each daemon watches its own namespace with its own 200 Deployments. Reported: accepted
//! alerts/s and the ratio to the floor, non-2xx answers, each Deployment's first alert → its
//! undo, the storm's first alert → the last undo, undos per Deployment (must be exactly one),
//! and the daemon's RSS at ready and at its peak.
//!
//! `STORM_POSTS=0` runs B1 (one alert at a time, against `kubectl rollout undo`) alone;
//! `STORM_DAEMON_LOG` sets the daemons' `ROLLBACKD_LOG` (default `error`); `STORM_BASELINE`
//! names another rollbackd binary, an earlier build, whose daemon takes turns with this
//! build's: alert for alert in B1, storm for storm in B2.
//!
//! `STORM_SCALE=2000,5000,10000 cargo bench --bench storm` measures scale instead: one namespace
//! grown to each size in turn, Deployments with three ReplicaSets each; at each size a fresh
//! daemon's time to ready, its RSS at ready, and alert → undo for 20 Deployments.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use common::{
    Daemon, cpu_seconds, histogram_mean_ms, histogram_mean_ms_between, mib, percentile,
    series_total,
};
use futures::StreamExt;
use jiff::Timestamp;
use kube::api::DynamicObject;
use kube_sandbox::{Sandbox, SandboxOptions};
use rollbackd::core::engine::{Command as Revert, UndoDeployment};
use rollbackd::core::undo::RevisionRef;
use rollbackd::k8s::executor::Executor;

const CONNECTIONS: usize = 32;
const DEPLOYMENTS: usize = 200;

/// The storm's bodies, in posting order, and the Deployment each names.
fn storm(namespace: &str, posts: usize) -> Vec<(usize, Bytes)> {
    let starts = Timestamp::now();
    let alert = |i: usize| {
        let deployment = i % DEPLOYMENTS;
        let payload = scenario::alertmanager_payload(
            &[
                ("alertname", "HighErrorRate"),
                ("namespace", namespace),
                ("deployment", &format!("d-{deployment}")),
                ("instance", &format!("pod-{i}")),
            ],
            starts,
        );
        (deployment, Bytes::from(payload.to_string()))
    };
    let (mut distinct, mut repeats) = (0, 0);
    (0..posts)
        .map(|k| {
            if k % 4 == 3 {
                repeats += 1;
                alert(repeats - 1)
            } else {
                distinct += 1;
                alert(distinct - 1)
            }
        })
        .collect()
}

struct Storm {
    secs: f64,
    accepted: usize,
    refused: usize,
    /// When the first alert about each Deployment was sent.
    first_sent: BTreeMap<usize, Instant>,
    started: Instant,
}

/// Posts every body at `CONNECTIONS` concurrent connections.
async fn post_all(url: &str, bodies: Vec<(usize, Bytes)>) -> Storm {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .expect("client");
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let first_sent = Arc::new(Mutex::new(BTreeMap::new()));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        let (http, bodies, next, first_sent) = (
            http.clone(),
            bodies.clone(),
            next.clone(),
            first_sent.clone(),
        );
        let url = url.to_string();
        workers.spawn(async move {
            let (mut accepted, mut refused) = (0, 0);
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some((deployment, body)) = bodies.get(k) else {
                    break;
                };
                if let Ok(mut sent) = first_sent.lock() {
                    sent.entry(*deployment).or_insert_with(Instant::now);
                }
                let answer = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                match answer {
                    Ok(a) if a.status().is_success() => accepted += 1,
                    _ => refused += 1,
                }
            }
            (accepted, refused)
        });
    }
    let (mut accepted, mut refused) = (0, 0);
    while let Some(counts) = workers.join_next().await {
        let (a, r) = counts.expect("worker");
        accepted += a;
        refused += r;
    }
    let secs = started.elapsed().as_secs_f64();
    let first_sent = first_sent.lock().map(|s| s.clone()).unwrap_or_default();
    Storm {
        secs,
        accepted,
        refused,
        first_sent,
        started,
    }
}

/// What the undo floor carries out: rollbackd's own executor, and for each Deployment the
/// command the engine would plan, built before the storm.
struct Undoer {
    executor: Executor,
    commands: HashMap<String, Revert>,
    started: Mutex<HashSet<String>>,
}

impl Undoer {
    /// Plans an undo of every Deployment of `namespace` from one read of its Deployments and
    /// ReplicaSets: the newest ReplicaSet is blamed, the one before it is the target.
    async fn new(client: &kube::Client, namespace: &str) -> Arc<Undoer> {
        let read = |resource| {
            let api: kube::Api<DynamicObject> =
                kube::Api::namespaced_with(client.clone(), namespace, &resource);
            async move { api.list(&Default::default()).await.expect("list").items }
        };
        let (deployments, replica_sets) = tokio::join!(
            read(rollbackd::k8s::deployments()),
            read(rollbackd::k8s::replica_sets())
        );
        let replica_sets: Vec<_> = replica_sets
            .iter()
            .filter_map(rollbackd::k8s::replica_set_state)
            .collect();
        let commands = deployments
            .iter()
            .filter_map(|obj| {
                let d = rollbackd::k8s::deployment_state(obj)?;
                let mut owned: Vec<_> = replica_sets
                    .iter()
                    .filter(|rs| rs.owner_uid.as_deref() == Some(d.uid.as_str()))
                    .collect();
                owned.sort_by_key(|rs| std::cmp::Reverse(rs.revision));
                let [blamed, target, ..] = owned[..] else {
                    return None;
                };
                let undo = UndoDeployment {
                    namespace: namespace.to_string(),
                    name: d.name.clone(),
                    uid: d.uid.clone(),
                    blamed: RevisionRef::of(blamed),
                    planned_target: RevisionRef::of(target),
                    selector: obj
                        .data
                        .pointer("/spec/selector")
                        .and_then(rollbackd::k8s::selector_string)
                        .unwrap_or_default(),
                    dry_run: false,
                };
                Some((d.name, Revert::UndoDeployment(undo)))
            })
            .collect();
        Arc::new(Undoer {
            executor: Executor::new(client.clone()),
            commands,
            started: Mutex::default(),
        })
    }

    /// Starts the undo of each Deployment `alerts` name for the first time; never waits.
    fn first_alerts(self: &Arc<Self>, alerts: &[rollbackd::core::alert::Alert]) {
        for alert in alerts {
            let Some(name) = alert.labels.get("deployment") else {
                continue;
            };
            let first = self
                .started
                .lock()
                .is_ok_and(|mut started| started.insert(name.clone()));
            if first && let Some(command) = self.commands.get(name) {
                let (undoer, command) = (self.clone(), command.clone());
                tokio::spawn(async move { undoer.executor.execute(&command).await });
            }
        }
    }
}

/// The floor: rollbackd's own parser behind a bare axum route that answers 200. With an
/// [`Undoer`], the floor of rollback latency too: each Deployment's first alert starts its
/// undo at once, with nothing recorded and nothing decided.
async fn floor(undo: Option<Arc<Undoer>>) -> String {
    let app = axum::Router::new().route(
        "/api/v1/alerts",
        axum::routing::post(|body: Bytes| async move {
            match rollbackd::http::webhook::parse(&body) {
                Ok((_, alerts)) => {
                    if let Some(undo) = &undo {
                        undo.first_alerts(&alerts);
                    }
                    StatusCode::OK
                }
                Err(_) => StatusCode::BAD_REQUEST,
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/api/v1/alerts")
}

/// Undo patches seen so far, by Deployment of `namespace`.
fn undos(sandbox: &Sandbox, namespace: &str) -> BTreeMap<usize, usize> {
    let prefix = format!("/apis/apps/v1/namespaces/{namespace}/deployments/d-");
    let mut out = BTreeMap::new();
    for r in sandbox.requests() {
        if r.method == "PATCH"
            && r.status == 200
            && r.content_type.as_deref() == Some("application/json-patch+json")
            && let Some(n) = r.path_only().strip_prefix(&prefix)
            && let Ok(n) = n.parse::<usize>()
        {
            *out.entry(n).or_insert(0) += 1;
        }
    }
    out
}

/// Creates `namespace` in the sandbox.
async fn create_namespace(client: &kube::Client, namespace: &str) {
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(client.clone());
    let manifest = serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}}))
        .expect("namespace");
    namespaces
        .create(&kube::api::PostParams::default(), &manifest)
        .await
        .expect("namespace created");
}

/// `count` Deployments of a new `namespace` with the given revisions, 32 at a time.
async fn deploy_many(client: &kube::Client, namespace: &str, count: usize, images: &[&str]) {
    create_namespace(client, namespace).await;
    deploy_range(client, namespace, 0..count, images).await;
}

/// Deployments `d-N` for each N of `which` in `namespace`, with the given revisions, each
/// rolled out and waited for, 32 at a time.
async fn deploy_range(
    client: &kube::Client,
    namespace: &str,
    which: std::ops::Range<usize>,
    images: &[&str],
) {
    let api = scenario::deployments_api(client.clone(), namespace);
    futures::stream::iter(which)
        .map(|i| {
            let api = api.clone();
            async move {
                scenario::deploy_revisions(&api, namespace, &format!("d-{i}"), images)
                    .await
                    .expect("revisions")
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

/// A new rollout of each of `count` Deployments to `image`, waited for.
async fn reroll(client: &kube::Client, namespace: &str, count: usize, image: &str) {
    let api = scenario::deployments_api(client.clone(), namespace);
    futures::stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            async move {
                let name = format!("d-{i}");
                let before = api.get(&name).await.expect("deployment");
                scenario::set_image(&api, &name, image)
                    .await
                    .expect("image set");
                let next = scenario::revision(&before)
                    .and_then(|r| r.parse::<i64>().ok())
                    .map_or(String::new(), |r| (r + 1).to_string());
                scenario::wait_rolled_out(&api, &name, &next, Duration::from_secs(60))
                    .await
                    .expect("rolled out");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

/// B3, at scale: for each of `sizes` (ascending), the namespace grown to that many
/// Deployments × 3 ReplicaSets, then a fresh daemon's time to ready, its RSS at ready, and
/// alert → undo for 20 of the Deployments, one at a time.
async fn scale(
    sandbox: &Sandbox,
    dir: &std::path::Path,
    kubeconfig: &std::path::Path,
    client: &kube::Client,
    sizes: &[usize],
) {
    const ALERTS: usize = 20;
    create_namespace(client, "scale").await;
    let mut seeded = 0;
    for &count in sizes {
        let started = Instant::now();
        deploy_range(client, "scale", seeded..count, &["app:1", "app:2", "app:3"]).await;
        println!(
            "{:<40} {:.1}s",
            format!("seeded {} more Deployments x 3 ReplicaSets", count - seeded),
            started.elapsed().as_secs_f64()
        );
        sandbox.clear_requests();
        // Each size's daemon starts from an empty store.
        for suffix in ["", "-journal"] {
            let _ = std::fs::remove_file(dir.join(format!("scale.db{suffix}")));
        }
        // The API server's share of the daemon's start: every ReplicaSet of the namespace
        // read in pages of 500, as the daemon's list reads them, the items left unparsed.
        let started = Instant::now();
        let pages = list_pages(client, "/apis/apps/v1/namespaces/scale/replicasets").await;
        println!(
            "{:<40} {pages} pages in {:.1}s",
            "  the sandbox alone: list all ReplicaSets",
            started.elapsed().as_secs_f64()
        );
        let started = Instant::now();
        let (daemon, url) = start_daemon(dir, kubeconfig, "scale", true, None).await;
        let ready = started.elapsed().as_secs_f64();
        let pid = daemon.0.id();
        let (rss, hwm, anon, file) = (
            mib(pid, "VmRSS"),
            mib(pid, "VmHWM"),
            mib(pid, "RssAnon"),
            mib(pid, "RssFile"),
        );
        println!(
            "{:<40} ready in {ready:.1}s, RSS at ready {rss:.0} MiB (peak {hwm:.0} MiB), {:.1} kB per Deployment",
            format!("daemon over {count} Deployments"),
            rss * 1024.0 / count as f64
        );
        println!(
            "{:<40} anonymous {anon:.0} MiB, file-backed (the binary's pages) {file:.0} MiB",
            "  of which",
        );
        let first = seeded.max(count - ALERTS.min(count));
        let (mut sent, _) = one_by_one(sandbox, &url, "scale", first..count).await;
        sent.sort_by(f64::total_cmp);
        latency_row("  alert -> undo applied, one at a time", &sent);
        // The same undo by kubectl, on Deployments the daemon was not told about.
        let before = first.saturating_sub(ALERTS).max(seeded);
        if before < first {
            let mut theirs = kubectl_undos(
                kubeconfig,
                &dir.join("kubectl-cache"),
                "scale",
                before..first,
            );
            theirs.sort_by(f64::total_cmp);
            latency_row("  kubectl rollout undo, same namespace", &theirs);
        }
        // The API server's share: the reads both undos make, timed alone.
        let (deployments, replica_sets) = (
            scenario::deployments_api(client.clone(), "scale"),
            kube::Api::<k8s_openapi::api::apps::v1::ReplicaSet>::namespaced(
                client.clone(),
                "scale",
            ),
        );
        let (mut gets, mut lists) = (Vec::new(), Vec::new());
        for i in first..count {
            let started = Instant::now();
            deployments.get(&format!("d-{i}")).await.expect("get");
            gets.push(started.elapsed().as_secs_f64() * 1000.0);
            let started = Instant::now();
            let params = kube::api::ListParams::default().labels(&format!("app=d-{i}"));
            replica_sets.list(&params).await.expect("list");
            lists.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        gets.sort_by(f64::total_cmp);
        lists.sort_by(f64::total_cmp);
        println!(
            "{:<40} GET Deployment p50={:.1}ms, LIST its ReplicaSets by label p50={:.1}ms",
            "  the sandbox alone",
            percentile(&gets, 0.5),
            percentile(&lists, 0.5)
        );
        let metrics = scrape(&url.replace("/api/v1/alerts", "/metrics")).await;
        println!(
            "{:<40} alert -> decision {:.1}ms, decision -> action {:.1}ms (the daemon's histograms)",
            "  of which, on average",
            histogram_mean_ms(&metrics, "rollbackd_alert_to_decision_seconds"),
            histogram_mean_ms(&metrics, "rollbackd_decision_to_action_seconds"),
        );
        // A profiler writes its report at exit: stop the daemon with SIGTERM, not SIGKILL.
        if std::env::var("STORM_DAEMON_WRAPPER").is_ok() {
            let mut daemon = daemon;
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            let _ = daemon.0.wait();
        }
        seeded = count;
    }
}

/// Starts a daemon over `namespace`: this build's, or the binary at `binary`.
async fn start_daemon(
    dir: &std::path::Path,
    kubeconfig: &std::path::Path,
    namespace: &str,
    group_commit: bool,
    binary: Option<&std::path::Path>,
) -> (Daemon, String) {
    let binary = binary.unwrap_or(std::path::Path::new(env!("CARGO_BIN_EXE_rollbackd")));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let config = dir.join(format!("{namespace}.toml"));
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[kubernetes]\nkubeconfig = {:?}\nnamespaces = [{namespace:?}]\n[store]\nurl = {:?}\n[policy]\nbreaker_max_actions = 0\ncooldown = \"0s\"\n",
            kubeconfig.display().to_string(),
            format!("sqlite://{}", dir.join(format!("{namespace}.db")).display())
        ),
    )
    .expect("config");
    // STORM_DAEMON_WRAPPER runs the daemon under a profiler, e.g. "valgrind --tool=massif".
    let wrapper = std::env::var("STORM_DAEMON_WRAPPER").unwrap_or_default();
    let mut command = match wrapper.split_whitespace().collect::<Vec<_>>().split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    let daemon = Daemon(
        command
            .process_group(0)
            .args(["serve", "--config"])
            .arg(&config)
            .env(
                "ROLLBACKD_LOG",
                std::env::var("STORM_DAEMON_LOG").unwrap_or_else(|_| "error".into()),
            )
            .env(
                "ROLLBACKD_GROUP_COMMIT",
                if group_commit { "on" } else { "off" },
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("rollbackd starts"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    while !matches!(http.get(format!("{base}/readyz")).send().await, Ok(r) if r.status().is_success())
    {
        assert!(started.elapsed() < Duration::from_secs(300), "not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (daemon, format!("{base}/api/v1/alerts"))
}

/// How long B1 waits after each undo before it posts the next alert.
const REST_MS: u64 = 100;

/// Alerts about Deployments `which` of `namespace`, one at a time, each waited for until its
/// undo is applied: the times from each POST sent and from its answer to the undo, in ms.
async fn one_by_one(
    sandbox: &Sandbox,
    url: &str,
    namespace: &str,
    which: std::ops::Range<usize>,
) -> (Vec<f64>, Vec<f64>) {
    let http = reqwest::Client::new();
    let (mut sent, mut answered) = (Vec::new(), Vec::new());
    for i in which {
        let body = scenario::alertmanager_payload(
            &[
                ("alertname", "HighErrorRate"),
                ("namespace", namespace),
                ("deployment", &format!("d-{i}")),
            ],
            Timestamp::now(),
        );
        // At rest: the previous alert's result is recorded and its notices sent before this
        // alert is posted, so that it does not wait behind them.
        tokio::time::sleep(Duration::from_millis(REST_MS)).await;
        // A short log, so that looking for the undo costs little beside what is measured.
        sandbox.clear_requests();
        let started = Instant::now();
        let answer = http.post(url).json(&body).send().await.expect("posted");
        assert!(answer.status().is_success());
        let answered_at = Instant::now();
        while !undos(sandbox, namespace).contains_key(&i) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no undo of d-{i}"
            );
            // tokio's timer counts whole milliseconds: a thread's sleep looks 10 times as often.
            tokio::task::block_in_place(|| std::thread::sleep(Duration::from_micros(100)));
        }
        sent.push(started.elapsed().as_secs_f64() * 1000.0);
        answered.push(answered_at.elapsed().as_secs_f64() * 1000.0);
    }
    (sent, answered)
}

/// Prints `label`, then the count, p50, p99 and max of `sorted` (ms, ascending).
fn latency_row(label: &str, sorted: &[f64]) {
    println!(
        "{label:<40} n={} p50={:.1}ms p99={:.1}ms max={:.1}ms",
        sorted.len(),
        percentile(sorted, 0.5),
        percentile(sorted, 0.99),
        sorted[sorted.len() - 1]
    );
}

/// Reads every page of the list at `path` (500 items a page) without parsing the items;
/// returns how many pages there were.
async fn list_pages(client: &kube::Client, path: &str) -> usize {
    #[derive(serde::Deserialize)]
    struct Page {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta,
    }
    let mut token: Option<String> = None;
    for pages in 1.. {
        let uri = match &token {
            Some(t) => format!("{path}?limit=500&continue={t}"),
            None => format!("{path}?limit=500"),
        };
        let request = http::Request::get(uri).body(Vec::new()).expect("request");
        let text = client.request_text(request).await.expect("page");
        let page: Page = serde_json::from_str(&text).expect("a list");
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return pages;
        }
    }
    unreachable!()
}

/// `kubectl rollout undo` of Deployments `which` of `namespace`, each as a whole process
/// (discovery cache warm after the first): the time of each, in ms.
fn kubectl_undos(
    kubeconfig: &std::path::Path,
    cache: &std::path::Path,
    namespace: &str,
    which: std::ops::Range<usize>,
) -> Vec<f64> {
    which
        .map(|i| {
            let started = Instant::now();
            let out = Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .arg("--cache-dir")
                .arg(cache)
                .args([
                    "-n",
                    namespace,
                    "rollout",
                    "undo",
                    &format!("deployment/d-{i}"),
                ])
                .output()
                .expect("kubectl runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}

/// B1, at rest: one alert at a time, alert → undo applied, against `kubectl rollout undo` as a
/// whole process on equivalent Deployments of the same sandbox (discovery cache warm). With
/// `STORM_BASELINE` naming another rollbackd binary (an earlier build), that binary's daemon
/// gets the same alerts about Deployments of its own, each turn right after this build's.
async fn at_rest(
    sandbox: &Arc<Sandbox>,
    dir: &std::path::Path,
    kubeconfig: &std::path::Path,
    client: &kube::Client,
    baseline: Option<&std::path::Path>,
) {
    const N: usize = 50;
    deploy_many(client, "rest", N, &["app:1", "app:2"]).await;
    deploy_many(client, "kubectl", N, &["app:1", "app:2"]).await;
    let (_daemon, url) = start_daemon(dir, kubeconfig, "rest", true, None).await;
    let base = match baseline {
        Some(binary) => {
            deploy_many(client, "base", N, &["app:1", "app:2"]).await;
            Some(start_daemon(dir, kubeconfig, "base", true, Some(binary)).await)
        }
        None => None,
    };
    // The floor: the same alerts to a bare endpoint that starts the executor's undo at once.
    deploy_many(client, "floor-rest", N, &["app:1", "app:2"]).await;
    let floor_url = floor(Some(Undoer::new(client, "floor-rest").await)).await;
    let (mut ours, mut after_answer) = (Vec::new(), Vec::new());
    let (mut base_sent, mut base_answered) = (Vec::new(), Vec::new());
    let (mut floor_sent, mut floor_answered) = (Vec::new(), Vec::new());
    for i in 0..N {
        let (sent, answered) = one_by_one(sandbox, &url, "rest", i..i + 1).await;
        ours.extend(sent);
        after_answer.extend(answered);
        let (sent, answered) = one_by_one(sandbox, &floor_url, "floor-rest", i..i + 1).await;
        floor_sent.extend(sent);
        floor_answered.extend(answered);
        if let Some((_, base_url)) = &base {
            let (sent, answered) = one_by_one(sandbox, base_url, "base", i..i + 1).await;
            base_sent.extend(sent);
            base_answered.extend(answered);
        }
    }
    let mut theirs = kubectl_undos(kubeconfig, &dir.join("kubectl-cache"), "kubectl", 0..N);
    for v in [
        &mut ours,
        &mut after_answer,
        &mut theirs,
        &mut base_sent,
        &mut base_answered,
        &mut floor_sent,
        &mut floor_answered,
    ] {
        v.sort_by(f64::total_cmp);
    }
    latency_row("B1 rollbackd: POST sent -> undo applied", &ours);
    latency_row("B1 rollbackd: POST answered -> undo", &after_answer);
    if base.is_some() {
        latency_row("B1 baseline: POST sent -> undo applied", &base_sent);
        latency_row("B1 baseline: POST answered -> undo", &base_answered);
    }
    latency_row("B1 floor: POST sent -> undo applied", &floor_sent);
    latency_row("B1 floor: POST answered -> undo", &floor_answered);
    latency_row("B1 kubectl rollout undo (whole process)", &theirs);
    println!(
        "{:<40} {:.1}x",
        "B1 ratio of medians, kubectl / rollbackd",
        percentile(&theirs, 0.5) / percentile(&ours, 0.5)
    );
    println!(
        "{:<40} {:.1}x",
        "B1 ratio of medians, kubectl / floor",
        percentile(&theirs, 0.5) / percentile(&floor_sent, 0.5)
    );
    if base.is_some() {
        println!(
            "{:<40} {:.2}x",
            "B1 ratio of medians, baseline / rollbackd",
            percentile(&base_sent, 0.5) / percentile(&ours, 0.5)
        );
    }
    println!();
}

/// Each Deployment of `namespace` undone so far, with when the undo was first seen.
type Seen = Arc<Mutex<BTreeMap<usize, Instant>>>;

/// Looks for the undos of `namespace` every 5 ms until each Deployment has one (or 10 minutes
/// pass).
fn watch_undos(sandbox: &Arc<Sandbox>, namespace: &str) -> (tokio::task::JoinHandle<()>, Seen) {
    let seen: Seen = Arc::default();
    let (sandbox, found, namespace) = (sandbox.clone(), seen.clone(), namespace.to_string());
    let watching = tokio::spawn(async move {
        let started = Instant::now();
        loop {
            let now = Instant::now();
            let done = undos(&sandbox, &namespace);
            if let Ok(mut found) = found.lock() {
                for n in done.keys() {
                    found.entry(*n).or_insert(now);
                }
                if found.len() == DEPLOYMENTS {
                    return;
                }
            }
            if started.elapsed() > Duration::from_secs(600) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    (watching, seen)
}

/// What came of a storm's alerts: each Deployment's first alert → its undo (ms, ascending),
/// the storm's start → the last undo (s), and the undos per Deployment.
struct Undone {
    latency: Vec<f64>,
    last: f64,
    counts: BTreeMap<usize, usize>,
}

impl Undone {
    /// Reads what `seen` found once the watch ended, and counts the undos a little later:
    /// late duplicates would show as a second undo.
    async fn of(sandbox: &Sandbox, namespace: &str, storm: &Storm, seen: &Seen) -> Undone {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let counts = undos(sandbox, namespace);
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        let mut latency: Vec<f64> = seen
            .iter()
            .filter_map(|(n, at)| {
                let sent = storm.first_sent.get(n)?;
                Some(at.saturating_duration_since(*sent).as_secs_f64() * 1000.0)
            })
            .collect();
        latency.sort_by(f64::total_cmp);
        let last = seen
            .values()
            .max()
            .map(|at| at.duration_since(storm.started).as_secs_f64())
            .unwrap_or(f64::NAN);
        Undone {
            latency,
            last,
            counts,
        }
    }

    fn exactly_one(&self) -> bool {
        self.counts.len() == DEPLOYMENTS && self.counts.values().all(|c| *c == 1)
    }

    /// Prints the latency row, if any Deployment was undone.
    fn print_latency(&self) {
        if let Some(max) = self.latency.last() {
            println!(
                "{:<40} p50={:.1}ms p99={:.1}ms max={max:.1}ms; last undo {:.2}s after the first alert",
                "  first alert -> undo, per Deployment",
                percentile(&self.latency, 0.5),
                percentile(&self.latency, 0.99),
                self.last
            );
        }
    }

    fn print_counts(&self) {
        println!(
            "{:<40} {} of {DEPLOYMENTS} undone, exactly one each: {}",
            "  undos",
            self.counts.len(),
            self.exactly_one()
        );
    }
}

/// The first `BURST` bodies of a storm hold the first alert about every Deployment (and a
/// few repeats): a burst of first alerts with hardly a storm around it.
const BURST: usize = DEPLOYMENTS * 4 / 3 + 1;

/// The undo floor's storm: `posts` bodies against a bare endpoint that starts each
/// Deployment's undo on its first alert, over fresh Deployments of `namespace`. Prints its
/// rows.
async fn floor_storm(
    label: &str,
    sandbox: &Arc<Sandbox>,
    client: &kube::Client,
    namespace: &str,
    posts: usize,
    rate: f64,
) {
    deploy_many(client, namespace, DEPLOYMENTS, &["app:1", "app:2"]).await;
    let url = floor(Some(Undoer::new(client, namespace).await)).await;
    sandbox.clear_requests();
    let (watching, seen) = watch_undos(sandbox, namespace);
    let storm = post_all(&url, storm(namespace, posts)).await;
    watching.await.expect("watcher");
    let undone = Undone::of(sandbox, namespace, &storm, &seen).await;
    let with_undo = storm.accepted as f64 / storm.secs;
    println!(
        "{label:<40} {with_undo:>8.0} alerts/s ({:.0}% of the bare floor), {} refused",
        100.0 * with_undo / rate,
        storm.refused
    );
    undone.print_latency();
    undone.print_counts();
}

/// One storm against a daemon: prints its rows and returns accepted alerts/s.
async fn daemon_storm(
    label: &str,
    sandbox: &Arc<Sandbox>,
    daemon: &Daemon,
    url: &str,
    namespace: &str,
    posts: usize,
    floor_rate: f64,
) -> f64 {
    let pid = daemon.0.id();
    let rss_ready = mib(pid, "VmRSS");
    let bodies = storm(namespace, posts);
    let (watching, seen) = watch_undos(sandbox, namespace);
    let metrics_url = url.replace("/api/v1/alerts", "/metrics");
    let metrics_before = scrape(&metrics_url).await;
    let cpu_before = cpu_seconds(pid);
    let storm = post_all(url, bodies).await;
    let cpu = cpu_seconds(pid) - cpu_before;
    watching.await.expect("watcher");
    let metrics_after = scrape(&metrics_url).await;
    let undone = Undone::of(sandbox, namespace, &storm, &seen).await;
    let rate = storm.accepted as f64 / storm.secs;
    println!(
        "{label:<40} {rate:>8.0} alerts/s ({:.1}% of the floor), {} refused, storm {:.1}s",
        100.0 * rate / floor_rate,
        storm.refused,
        storm.secs
    );
    undone.print_latency();
    println!(
        "{:<40} alert recorded -> undo {:.1}ms, decision -> undo {:.1}ms (the daemon's histograms)",
        "  of which, on average",
        histogram_mean_ms_between(
            &metrics_before,
            &metrics_after,
            "rollbackd_alert_to_action_seconds"
        ),
        histogram_mean_ms_between(
            &metrics_before,
            &metrics_after,
            "rollbackd_decision_to_action_seconds"
        ),
    );
    println!(
        "{:<40} {cpu:.2} s of CPU in {:.2} s of storm ({:.0}% of one core; the machine has 2), {:.2} ms per alert",
        "  daemon CPU while the storm ran",
        storm.secs,
        100.0 * cpu / storm.secs,
        1000.0 * cpu / posts as f64
    );
    undone.print_counts();
    // "After" is once the storm's backlog is decided: the worker gives memory back only then.
    let ended = storm.started + Duration::from_secs_f64(storm.secs);
    let mut pending = f64::NAN;
    for _ in 0..600 {
        pending = series_total(&scrape(&metrics_url).await, "rollbackd_pending_alerts")
            .unwrap_or(f64::NAN);
        if pending == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "{:<40} {:.1}s after the storm ended ({pending} still pending)",
        "  backlog empty by",
        ended.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "{:<40} at ready {rss_ready:.0} MiB, peak {:.0} MiB, after {:.0} MiB",
        "  daemon RSS",
        mib(pid, "VmHWM"),
        mib(pid, "VmRSS")
    );
    rate
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let posts: usize = std::env::var("STORM_POSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let sandbox = Sandbox::start(SandboxOptions {
        rollout_delay: Duration::from_millis(20),
        ..SandboxOptions::default()
    })
    .await
    .map(Arc::new)
    .expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    sandbox.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let client = rollbackd::k8s::client(Some(&kubeconfig), None)
        .await
        .expect("client");

    if let Ok(sizes) = std::env::var("STORM_SCALE") {
        let mut sizes: Vec<usize> = sizes
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("STORM_SCALE: sizes such as 2000,5000,10000")
            })
            .collect();
        sizes.sort_unstable();
        scale(&sandbox, dir.path(), &kubeconfig, &client, &sizes).await;
        return;
    }
    println!(
        "rollbackd storm benchmark: {posts} single-alert POSTs at {CONNECTIONS} connections, \
         {DEPLOYMENTS} Deployments (2-core shared machine; compare rows of one run)\n"
    );
    let baseline = std::env::var_os("STORM_BASELINE").map(std::path::PathBuf::from);
    at_rest(
        &sandbox,
        dir.path(),
        &kubeconfig,
        &client,
        baseline.as_deref(),
    )
    .await;
    if posts == 0 {
        return;
    }
    let floor_url = floor(None).await;
    let floor = post_all(&floor_url, storm("floor", posts)).await;
    let floor_rate = floor.accepted as f64 / floor.secs;
    println!(
        "{:<40} {floor_rate:>8.0} alerts/s, {} refused",
        "floor: bare axum + parse", floor.refused
    );
    floor_storm(
        "floor: bare axum + parse + undo",
        &sandbox,
        &client,
        "floor-undo",
        posts,
        floor_rate,
    )
    .await;
    // How much of an undo's time in a storm is the storm's: the first alerts alone, to the
    // undo floor and to a daemon.
    floor_storm(
        &format!("floor + undo, first alerts alone ({BURST})"),
        &sandbox,
        &client,
        "floor-burst",
        BURST,
        floor_rate,
    )
    .await;
    deploy_many(&client, "burst", DEPLOYMENTS, &["app:1", "app:2"]).await;
    let (daemon, url) = start_daemon(dir.path(), &kubeconfig, "burst", true, None).await;
    daemon_storm(
        &format!("rollbackd, first alerts alone ({BURST})"),
        &sandbox,
        &daemon,
        &url,
        "burst",
        BURST,
        floor_rate,
    )
    .await;
    drop(daemon);

    // Three storms on one group-commit daemon, every Deployment rolled out afresh before
    // each: does its memory come back? With STORM_BASELINE, an earlier build's daemon takes
    // the same storms over Deployments of its own, storm for storm after this build's.
    let mut wanted = vec![("rollbackd, group commit", "grouped", None)];
    if let Some(binary) = baseline.as_deref() {
        wanted.push(("baseline, group commit", "base-grouped", Some(binary)));
    }
    let mut daemons = Vec::new();
    for (label, namespace, binary) in wanted {
        deploy_many(&client, namespace, DEPLOYMENTS, &["app:1", "app:2"]).await;
        let (daemon, url) = start_daemon(dir.path(), &kubeconfig, namespace, true, binary).await;
        daemons.push((label, namespace, daemon, url));
    }
    for round in 1..=3 {
        for (label, namespace, daemon, url) in &daemons {
            let label = if round == 1 {
                label.to_string()
            } else {
                reroll(
                    &client,
                    namespace,
                    DEPLOYMENTS,
                    &format!("app:{}", round + 1),
                )
                .await;
                format!("{label}, storm {round} of 3")
            };
            sandbox.clear_requests();
            daemon_storm(&label, &sandbox, daemon, url, namespace, posts, floor_rate).await;
        }
    }
    drop(daemons);
    let namespace = "single";
    deploy_many(&client, namespace, DEPLOYMENTS, &["app:1", "app:2"]).await;
    let (daemon, url) = start_daemon(dir.path(), &kubeconfig, namespace, false, None).await;
    daemon_storm(
        "rollbackd, a transaction per delivery",
        &sandbox,
        &daemon,
        &url,
        namespace,
        posts,
        floor_rate,
    )
    .await;
}

/// The daemon's metrics, as Prometheus would scrape them.
async fn scrape(url: &str) -> String {
    reqwest::get(url)
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics read")
}
