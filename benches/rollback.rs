//! rollbackd's benchmark: `cargo bench --bench rollback`.
//!
//! Everything runs on this machine: the sandbox API server and the daemon in-process, SQLite in
//! a temporary directory, and, when installed, real Prometheus and Alertmanager processes.
//! Results are ratios and distributions measured side by side in one run, because the machines
//! this runs on are shared and noisy. Figures go to BENCHMARKS.md with the command.

mod common;

use std::time::{Duration, Instant};

use common::percentile;
use jiff::Timestamp;
use kube_sandbox::{Sandbox, SandboxOptions};
use rollbackd::config::Config;
use rollbackd::daemon::{self, Running};
use scenario::lab::{self, PrometheusLab};
use scenario::{self, SampleApp};

const UNDO_SAMPLES: usize = 50;
const DUPLICATE_POSTS: usize = 2000;
const LAB_RUNS: usize = 3;

struct Bench {
    sandbox: Sandbox,
    dir: tempfile::TempDir,
    client: kube::Client,
}

impl Bench {
    async fn new() -> Bench {
        let sandbox = Sandbox::start(SandboxOptions {
            rollout_delay: Duration::from_millis(20),
            ..SandboxOptions::default()
        })
        .await
        .expect("sandbox");
        let dir = tempfile::tempdir().expect("tempdir");
        sandbox
            .write_kubeconfig(&dir.path().join("kubeconfig"))
            .expect("kubeconfig");
        let client = rollbackd::k8s::client(Some(&dir.path().join("kubeconfig")), None)
            .await
            .expect("client");
        Bench {
            sandbox,
            dir,
            client,
        }
    }

    async fn daemon(&self, name: &str, extra: &str) -> Running {
        let path = self.dir.path().join(format!("{name}.toml"));
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[kubernetes]\nkubeconfig = {:?}\n[store]\nurl = {:?}\n[policy]\nbreaker_max_actions = 0\n{extra}",
            self.dir.path().join("kubeconfig").display().to_string(),
            format!(
                "sqlite://{}",
                self.dir.path().join(format!("{name}.db")).display()
            ),
        );
        std::fs::write(&path, text).expect("config");
        let config = Config::load_with_env(&path, Vec::new()).expect("config");
        let running = daemon::start(config).await.expect("daemon");
        while !running.state.readiness.is_ready() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        running
    }

    /// Whether the undo (a JSON patch; rollouts use strategic merge) of `name` was applied.
    fn patched(&self, name: &str) -> bool {
        let path = format!("/apis/apps/v1/namespaces/default/deployments/{name}");
        self.sandbox.requests().iter().any(|r| {
            r.method == "PATCH"
                && r.path_only() == path
                && r.status == 200
                && r.content_type.as_deref() == Some("application/json-patch+json")
        })
    }
}

fn summary(label: &str, mut ms: Vec<f64>) -> f64 {
    ms.sort_by(f64::total_cmp);
    let p50 = percentile(&ms, 0.5);
    println!(
        "{label:<44} n={:<3} min={:>7.1}ms p50={:>7.1}ms p95={:>7.1}ms max={:>7.1}ms",
        ms.len(),
        ms[0],
        p50,
        percentile(&ms, 0.95),
        ms[ms.len() - 1]
    );
    p50
}

/// Alert posted → undo patch seen by the API server, for `UNDO_SAMPLES` fresh Deployments.
async fn alert_to_undo(bench: &Bench, prefix: &str, extra: &str) -> Vec<f64> {
    let api = scenario::deployments_api(bench.client.clone(), "default");
    for i in 0..UNDO_SAMPLES {
        scenario::deploy_revisions(
            &api,
            "default",
            &format!("{prefix}-{i}"),
            &["app:1", "app:2"],
        )
        .await
        .expect("two revisions");
    }
    let running = bench.daemon(prefix, extra).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/v1/alerts", running.addr);
    let mut samples = Vec::with_capacity(UNDO_SAMPLES);
    for i in 0..UNDO_SAMPLES {
        let name = format!("{prefix}-{i}");
        let payload = scenario::alertmanager_payload(
            &[
                ("alertname", "HighErrorRate"),
                ("namespace", "default"),
                ("deployment", &name),
            ],
            Timestamp::now(),
        );
        let started = Instant::now();
        let answer = http
            .post(&url)
            .json(&payload)
            .send()
            .await
            .expect("webhook");
        let status = answer.status();
        assert!(
            status.is_success(),
            "{status}: {}",
            answer.text().await.unwrap_or_default()
        );
        while !bench.patched(&name) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no undo of {name}"
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    running.stop().await.expect("stop");
    samples
}

/// Two loopback listeners that accept connections and never answer: Slack and SMTP "down" in
/// the worst way (a timeout, not a refusal). The returned tasks hold the sockets.
async fn black_holes() -> (
    std::net::SocketAddr,
    std::net::SocketAddr,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let mut addrs = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        addrs.push(listener.local_addr().expect("addr"));
        tasks.push(tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        }));
    }
    (addrs[0], addrs[1], tasks)
}

/// A stand-in for Slack's `chat.postMessage` that answers `ok` at once.
async fn answering_slack() -> std::net::SocketAddr {
    let app = axum::Router::new().route(
        "/api/chat.postMessage",
        axum::routing::post(|| async {
            axum::Json(serde_json::json!({"ok": true, "channel": "C0BENCH", "ts": "1.000100"}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// The watch hot path: a relist of a large cluster into the index, then single events.
fn index_scale(deployments: usize, per_deployment: usize) {
    use rollbackd::core::workload::{DeploymentState, PodTemplate, ReplicaSetState, WorkloadIndex};
    use serde_json::json;
    let at = Timestamp::now();
    let template = |name: &str, rev: usize| json!({"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": format!("{name}:{rev}")}]}});
    let all_d: Vec<DeploymentState> = (0..deployments)
        .map(|i| DeploymentState {
            namespace: format!("ns{}", i % 50),
            name: format!("d{i}"),
            uid: format!("d-uid-{i}"),
            resource_version: "1".into(),
            paused: false,
            template: PodTemplate::read(template(&format!("d{i}"), per_deployment)),
            annotations: Default::default(),
            labels: Default::default(),
            selector: format!("app=d{i}"),
        })
        .collect();
    let all_rs: Vec<ReplicaSetState> = (0..deployments)
        .flat_map(|i| {
            (1..=per_deployment).map(move |rev| ReplicaSetState {
                namespace: format!("ns{}", i % 50),
                name: format!("d{i}-{rev}"),
                uid: format!("rs-uid-{i}-{rev}"),
                owner_uid: Some(format!("d-uid-{i}")),
                owner_kind: Some("Deployment".into()),
                revision: Some(rev as i64),
                pod_hash: Some(format!("h{rev}")),
                template: PodTemplate::read(template(&format!("d{i}"), rev)),
                annotations: Default::default(),
                created_at: Timestamp::UNIX_EPOCH,
            })
        })
        .collect();
    let mut index = WorkloadIndex::default();
    let started = Instant::now();
    index.reset_deployments(None, all_d, at);
    index.reset_replica_sets(None, all_rs.clone(), at);
    let relist = started.elapsed();
    let events = 1000;
    let started = Instant::now();
    for rs in all_rs.iter().cycle().take(events) {
        index.apply_replica_set(rs.clone(), at);
    }
    let per_event = started.elapsed() / events as u32;
    println!(
        "{:<44} relist {:.1}ms, one ReplicaSet event {:.1}us",
        format!("index: {deployments} Deployments x {per_deployment} ReplicaSets"),
        relist.as_secs_f64() * 1000.0,
        per_event.as_secs_f64() * 1e6
    );
}

/// Throughput of a redelivered alert: the path Alertmanager's repeats take.
async fn duplicate_throughput(bench: &Bench) -> f64 {
    let running = bench.daemon("dups", "").await;
    let payload = scenario::alertmanager_payload(
        &[
            ("alertname", "HighErrorRate"),
            ("namespace", "default"),
            ("deployment", "nope"),
        ],
        Timestamp::now(),
    );
    let body = payload.to_string();
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/v1/alerts", running.addr);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        tasks.spawn(async move {
            for _ in (worker..DUPLICATE_POSTS).step_by(8) {
                let r = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("post");
                assert!(r.status().is_success());
            }
        });
    }
    tasks.join_all().await;
    let rate = DUPLICATE_POSTS as f64 / started.elapsed().as_secs_f64();
    running.stop().await.expect("stop");
    rate
}

/// Bad rollout → undo through real Prometheus (and Alertmanager), `LAB_RUNS` times per path.
async fn lab_runs(alertmanager: bool) -> (Vec<f64>, Vec<f64>) {
    let mut detect = Vec::new();
    let mut rollout = Vec::new();
    for run in 0..LAB_RUNS {
        let bench = Bench::new().await;
        let api = scenario::deployments_api(bench.client.clone(), "default");
        scenario::create(
            &api,
            scenario::deployment_manifest("default", "web", "web:good", 2),
        )
        .await
        .expect("web");
        scenario::wait_rolled_out(&api, "web", "1", Duration::from_secs(20))
            .await
            .expect("rolled out");
        let app = SampleApp::start(api.clone(), "web", &["web:bad"], 30)
            .await
            .expect("app");
        let rules = bench.dir.path().join("rules.yml");
        std::fs::write(&rules, lab::fast_rules(lab::SHIPPED_RULES, "2s", "10s")).expect("rules");
        let (running, _am, prom) = if alertmanager {
            let running = bench.daemon(&format!("am{run}"), "").await;
            let am = lab::start_alertmanager(&format!("http://{}/api/v1/alerts", running.addr))
                .expect("am");
            am.wait_ready(Duration::from_secs(30))
                .await
                .expect("am ready");
            let prom = lab::start_prometheus(&PrometheusLab {
                target: app.addr,
                target_labels: &[("namespace", "default"), ("app", "web")],
                rule_files: std::slice::from_ref(&rules),
                alertmanager: Some(&am.url),
            })
            .expect("prometheus");
            (running, Some(am), prom)
        } else {
            let prom = lab::start_prometheus(&PrometheusLab {
                target: app.addr,
                target_labels: &[("namespace", "default"), ("app", "web")],
                rule_files: &[],
                alertmanager: None,
            })
            .expect("prometheus");
            prom.wait_ready(Duration::from_secs(30))
                .await
                .expect("prometheus ready");
            let extra = format!(
                "[prometheus]\nurl = {:?}\nrules = [{:?}]\npoll_interval = \"1s\"\n",
                prom.url,
                rules.display().to_string()
            );
            (
                bench.daemon(&format!("poll{run}"), &extra).await,
                None,
                prom,
            )
        };
        prom.wait_ready(Duration::from_secs(30))
            .await
            .expect("prometheus ready");
        tokio::time::sleep(Duration::from_secs(3)).await;
        scenario::set_image(&api, "web", "web:bad")
            .await
            .expect("bad rollout");
        let rolled = Instant::now();
        while !bench.patched("web") {
            assert!(rolled.elapsed() < Duration::from_secs(90), "no undo");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let undone = Timestamp::now();
        rollout.push(rolled.elapsed().as_secs_f64() * 1000.0);
        let list = running
            .state
            .pipeline
            .store
            .list_incidents(&Default::default())
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
        let starts: Timestamp = detail.alerts[0].starts_at.parse().expect("ts");
        detect.push(undone.duration_since(starts).as_secs_f64() * 1000.0);
        running.stop().await.expect("stop");
    }
    (detect, rollout)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .init();
    println!(
        "rollbackd benchmark (2-core shared machine; compare rows of one run, not across runs)\n"
    );
    let bench = Bench::new().await;
    let quiet = summary(
        "alert -> undo, no notification channels",
        alert_to_undo(&bench, "base", "").await,
    );
    let (slack_dead, smtp_dead, _holders) = black_holes().await;
    let slack_up = answering_slack().await;
    let slack = |addr: std::net::SocketAddr| {
        format!(
            "[notify]\nattempt_timeout = \"60s\"\n[notify.slack]\napi_url = \"http://{addr}/api\"\nchannel = \"#oncall\"\nbot_token = \"xoxb-bench\"\n"
        )
    };
    let up = summary(
        "alert -> undo, Slack answering at once",
        alert_to_undo(&bench, "up", &slack(slack_up)).await,
    );
    let down = summary(
        "alert -> undo, Slack never answering",
        alert_to_undo(&bench, "down", &slack(slack_dead)).await,
    );
    let both = format!(
        "{}[notify.email]\nsmtp_url = \"smtp://{smtp_dead}?tls=none\"\nfrom = \"rollbackd@example.com\"\nto = [\"oncall@example.com\"]\n",
        slack(slack_dead)
    );
    let both_down = summary(
        "alert -> undo, Slack and SMTP never answering",
        alert_to_undo(&bench, "bothdown", &both).await,
    );
    println!(
        "{:<44} {:.2}",
        "ratio of p50s, Slack down / Slack up",
        down / up
    );
    println!(
        "{:<44} {:.2}",
        "ratio of p50s, both down / no channels",
        both_down / quiet
    );
    index_scale(500, 10);
    index_scale(2000, 10);
    let rate = duplicate_throughput(&bench).await;
    println!(
        "{:<44} {rate:.0} deliveries/s ({DUPLICATE_POSTS} posts, 8 concurrent)",
        "duplicate webhook deliveries recorded"
    );

    if lab::available() {
        println!();
        let (detect, rollout) = lab_runs(false).await;
        summary("poller: alert firing -> undo", detect);
        summary("poller: bad rollout live -> undo", rollout);
        let (detect, rollout) = lab_runs(true).await;
        summary("alertmanager: alert firing -> undo", detect);
        summary("alertmanager: bad rollout live -> undo", rollout);
    } else {
        println!("\n(prometheus and prometheus-alertmanager not installed: lab paths skipped)");
    }
}
