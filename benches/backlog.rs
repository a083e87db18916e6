//! The backlog benchmark: `cargo bench --bench backlog`.
//!
//! The release binary runs as its own process against the sandbox API server (in this
//! process), so that its memory is its own. Measured side by side in one run:
//! - alert → undo with nothing queued, one sample per fresh Deployment;
//! - the same after 90,000 alerts about Deployments that do not exist were queued in ten
//!   webhook deliveries of 9,000 (what a flapping rule across a big cluster sends;
//!   `BACKLOG_POSTS=20` queues twice as many);
//! - the daemon's resident memory before, at its peak, and once the backlog is decided, and
//!   how fast the backlog is decided.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, mib};
use jiff::Timestamp;
use kube_sandbox::{Sandbox, SandboxOptions};
use serde_json::{Value, json};

const AT_REST: usize = 5;
const PER_POST: usize = 9_000;

fn quiet_payload(post: usize) -> Value {
    let now = Timestamp::now().to_string();
    let alerts: Vec<Value> = (0..PER_POST)
        .map(|i| {
            json!({
                "status": "firing",
                "labels": {"alertname": "Noise", "namespace": "default",
                           "deployment": format!("quiet-{post}-{i}")},
                "annotations": {"summary": "a rule firing for a workload that is not there"},
                "startsAt": now, "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://127.0.0.1:9090/graph", "fingerprint": ""
            })
        })
        .collect();
    json!({
        "version": "4", "groupKey": "{}:{alertname=\"Noise\"}", "truncatedAlerts": 0,
        "status": "firing", "receiver": "rollbackd", "groupLabels": {}, "commonLabels": {},
        "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9093", "alerts": alerts
    })
}

fn patched(sandbox: &Sandbox, name: &str) -> bool {
    let path = format!("/apis/apps/v1/namespaces/default/deployments/{name}");
    sandbox
        .requests()
        .iter()
        .any(|r| r.method == "PATCH" && r.path_only() == path && r.status == 200)
}

/// Posts an alert about `name` and waits for its undo; returns milliseconds.
async fn alert_to_undo(http: &reqwest::Client, url: &str, sandbox: &Sandbox, name: &str) -> f64 {
    let payload = scenario::alertmanager_payload(
        &[
            ("alertname", "HighErrorRate"),
            ("namespace", "default"),
            ("deployment", name),
        ],
        Timestamp::now(),
    );
    let started = Instant::now();
    let answer = http.post(url).json(&payload).send().await.expect("webhook");
    assert!(answer.status().is_success(), "{}", answer.status());
    while !patched(sandbox, name) {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no undo of {name}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    started.elapsed().as_secs_f64() * 1000.0
}

async fn pending(http: &reqwest::Client, metrics: &str) -> f64 {
    let text = http
        .get(metrics)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("rollbackd_pending_alerts"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sandbox = Sandbox::start(SandboxOptions {
        rollout_delay: Duration::from_millis(20),
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    sandbox.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let client = rollbackd::k8s::client(Some(&kubeconfig), None)
        .await
        .expect("client");
    let api = scenario::deployments_api(client, "default");
    for i in 0..=AT_REST {
        scenario::deploy_revisions(&api, "default", &format!("web-{i}"), &["app:1", "app:2"])
            .await
            .expect("two revisions");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let config = dir.path().join("rollbackd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nmax_body_bytes = 8388608\n[kubernetes]\nkubeconfig = {:?}\n[store]\nurl = {:?}\n[policy]\nbreaker_max_actions = 0\n",
            kubeconfig.display().to_string(),
            format!("sqlite://{}", dir.path().join("rollbackd.db").display())
        ),
    )
    .expect("config");
    let daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_rollbackd"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("ROLLBACKD_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("rollbackd starts"),
    );
    let pid = daemon.0.id();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while !matches!(http.get(format!("{base}/readyz")).send().await, Ok(r) if r.status().is_success())
    {
        assert!(started.elapsed() < Duration::from_secs(30), "not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = format!("{base}/api/v1/alerts");
    let metrics = format!("{base}/metrics");

    println!("rollbackd backlog benchmark (2-core shared machine; compare rows of one run)\n");
    let mut rest = Vec::new();
    for i in 0..AT_REST {
        rest.push(alert_to_undo(&http, &url, &sandbox, &format!("web-{i}")).await);
    }
    rest.sort_by(f64::total_cmp);
    let rest_p50 = rest[rest.len() / 2];
    let rss_before = mib(pid, "VmRSS");

    // BACKLOG_POSTS=20 doubles the backlog, to see whether memory follows it.
    let posts: usize = std::env::var("BACKLOG_POSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let queued_at = Instant::now();
    let payloads: Vec<Value> = (0..posts).map(quiet_payload).collect();
    let mut peak_after_first = 0.0;
    for (i, payload) in payloads.iter().enumerate() {
        let answer = http.post(&url).json(payload).send().await.expect("webhook");
        assert!(answer.status().is_success(), "{}", answer.status());
        if i == 0 {
            peak_after_first = mib(pid, "VmHWM");
        }
    }
    drop(payloads);
    let queue_secs = queued_at.elapsed().as_secs_f64();
    let pending_before = pending(&http, &metrics).await;
    let urgent = alert_to_undo(&http, &url, &sandbox, &format!("web-{AT_REST}")).await;
    let pending_after = pending(&http, &metrics).await;
    let mut peak = mib(pid, "VmHWM");
    let drain_started = Instant::now();
    loop {
        let left = pending(&http, &metrics).await;
        peak = peak.max(mib(pid, "VmHWM"));
        if left == 0.0 {
            break;
        }
        assert!(
            drain_started.elapsed() < Duration::from_secs(900),
            "backlog not decided in 15 min"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drain_secs = drain_started.elapsed().as_secs_f64();
    let total = (posts * PER_POST) as f64;

    println!(
        "{:<52} n={AT_REST} p50={rest_p50:>8.1}ms max={:>8.1}ms",
        "alert -> undo, nothing queued",
        rest[rest.len() - 1]
    );
    println!(
        "{:<52} {urgent:>8.1}ms",
        format!("alert -> undo, {} quiet alerts queued", posts * PER_POST)
    );
    println!(
        "{:<52} {:.1}",
        "ratio, queued / nothing queued",
        urgent / rest_p50
    );
    println!(
        "{:<52} {pending_before:.0} before the urgent alert, {pending_after:.0} at its undo",
        "undecided quiet alerts"
    );
    println!(
        "{:<52} {queue_secs:.1}s ({:.0} alerts/s)",
        format!("queueing: {posts} deliveries of {PER_POST} recorded"),
        total / queue_secs
    );
    println!(
        "{:<52} {drain_secs:.1}s after the undo",
        "the rest of the backlog decided"
    );
    println!(
        "{:<52} before {rss_before:.0} MiB, peak {peak:.0} MiB, after {:.0} MiB",
        "daemon RSS",
        mib(pid, "VmRSS")
    );
    println!(
        "{:<52} {peak_after_first:.0} MiB after 1 delivery, {peak:.0} MiB after {posts} ({:.2}x)",
        "daemon peak RSS by backlog size",
        peak / peak_after_first
    );
}
