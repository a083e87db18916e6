//! The shipped rules' post-rollout form against a real Prometheus (Debian package) scraping and
//! evaluating every 15s, through rollbackd's poller configured with nothing but `[prometheus]
//! url` and `rules = ["rules/rollbackd.yml"]`.
//!
//! A sample app served by the test on 127.0.0.1 plays three Deployments of the sandbox. It
//! serves what kube-prometheus-stack would scrape: `http_requests_total` per pod with a
//! ServiceMonitor target's labels (`namespace`, `pod`, `service`, `job`, `container`,
//! `endpoint`, `instance`), and kube-state-metrics' `kube_pod_owner` / `kube_replicaset_owner`
//! for the pods of each Deployment's live ReplicaSets (scraped with `honor_labels`, as the stack
//! scrapes kube-state-metrics). Prometheus evaluates the stack's pod-owner recording rule
//! (`rules/tests/fixtures/kube-prometheus-stack.yml`), which the shipped rules join on.
//! The three Deployments roll out a new version at the same moment:
//! - `web` goes from 0.1% to 2% of 5xx: rolled back through the poller within 2 minutes of the
//!   rollout, with both numbers in the decision;
//! - `flaky` is at 2% before and after: recorded `pre-existing`, with both numbers, not undone;
//! - `quiet` serves three requests after the rollout, one of them failing: not undone.
//!
//! It prints the rollout-to-undo and detection-to-undo times for BENCHMARKS.md.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use common::*;
use jiff::Timestamp;
use kube::api::{Api, DynamicObject, ListParams};
use rollbackd::store::{IncidentFilter, IncidentSummary};
use scenario::{self, lab};
use serde_json::Value;

const NS: &str = "default";
/// The budget, from the bad version going live to the undo: the test's deadline.
const BUDGET: Duration = Duration::from_secs(120);

/// How one Deployment's pods serve traffic, per pod and per scrape.
#[derive(Clone, Copy)]
enum Traffic {
    /// `requests` per scrape, of which `good_errors` fail on the good image, `bad_errors` on
    /// the bad one.
    Steady {
        requests: u64,
        good_errors: u64,
        bad_errors: u64,
    },
    /// Nothing on the good image; on the bad one, the first pod serves three requests at its
    /// second scrape, one of them failing, and then nothing.
    Trickle,
}

struct Workload {
    traffic: Traffic,
    bad_image: &'static str,
}

#[derive(Default)]
struct PodCounters {
    scrapes: u64,
    ok: u64,
    errors: u64,
}

struct AppState {
    replica_sets: Api<DynamicObject>,
    workloads: BTreeMap<&'static str, Workload>,
    pods: Mutex<BTreeMap<String, PodCounters>>,
}

/// The sample app; stops when dropped.
struct KubeApp {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KubeApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl KubeApp {
    async fn start(client: kube::Client, workloads: BTreeMap<&'static str, Workload>) -> KubeApp {
        let state = Arc::new(AppState {
            replica_sets: Api::namespaced_with(client, NS, &rollbackd::k8s::replica_sets()),
            workloads,
            pods: Mutex::new(BTreeMap::new()),
        });
        let app = Router::new()
            .route("/metrics", get(metrics))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the sample app");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        KubeApp { addr, task }
    }
}

/// The Deployment that controls a ReplicaSet.
fn owner(rs: &Value) -> Option<&str> {
    rs.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o["controller"] == true && o["kind"] == "Deployment")?["name"]
        .as_str()
}

async fn metrics(State(state): State<Arc<AppState>>) -> String {
    let Ok(list) = state.replica_sets.list(&ListParams::default()).await else {
        return String::new(); // an unreadable cluster serves no metrics this scrape
    };
    let ksm = "job=\"kube-state-metrics\",service=\"prometheus-kube-state-metrics\",container=\"kube-state-metrics\",endpoint=\"http\",instance=\"10.244.0.5:8080\"";
    let mut requests = String::from("# TYPE http_requests_total counter\n");
    let mut owners = String::from("# TYPE kube_pod_owner gauge\n");
    let mut rs_owners = String::from("# TYPE kube_replicaset_owner gauge\n");
    let mut pods = state.pods.lock().expect("pods lock");
    for rs in list.items {
        let rs = serde_json::to_value(&rs).expect("json");
        let (Some(deployment), Some(rs_name)) = (owner(&rs), rs["metadata"]["name"].as_str())
        else {
            continue;
        };
        let Some(workload) = state.workloads.get(deployment) else {
            continue;
        };
        rs_owners.push_str(&format!(
            "kube_replicaset_owner{{namespace=\"{NS}\",replicaset=\"{rs_name}\",owner_kind=\"Deployment\",owner_name=\"{deployment}\",owner_is_controller=\"true\",{ksm}}} 1\n"
        ));
        let bad = rs
            .pointer("/spec/template/spec/containers/0/image")
            .and_then(Value::as_str)
            == Some(workload.bad_image);
        let replicas = rs.pointer("/spec/replicas").and_then(Value::as_i64);
        for (i, suffix) in ["x7k2p", "q9m4t"]
            .iter()
            .take(replicas.unwrap_or(0).max(0) as usize)
            .enumerate()
        {
            let pod = format!("{rs_name}-{suffix}");
            let c = pods.entry(pod.clone()).or_default();
            c.scrapes += 1;
            let (ok, errors) = match workload.traffic {
                Traffic::Steady {
                    requests,
                    good_errors,
                    bad_errors,
                } => {
                    let errors = if bad { bad_errors } else { good_errors };
                    // A pod's first scrape shows zero, as a fresh process's counters do.
                    if c.scrapes == 1 {
                        (0, 0)
                    } else {
                        (requests - errors, errors)
                    }
                }
                Traffic::Trickle if bad && i == 0 && c.scrapes == 2 => (2, 1),
                Traffic::Trickle => (0, 0),
            };
            c.ok += ok;
            c.errors += errors;
            let target = format!(
                "namespace=\"{NS}\",pod=\"{pod}\",service=\"{deployment}\",job=\"{deployment}\",container=\"app\",endpoint=\"http\",instance=\"10.244.1.{}:8080\"",
                i + 10
            );
            requests.push_str(&format!(
                "http_requests_total{{{target},code=\"200\"}} {}\nhttp_requests_total{{{target},code=\"500\"}} {}\n",
                c.ok, c.errors
            ));
            owners.push_str(&format!(
                "kube_pod_owner{{namespace=\"{NS}\",pod=\"{pod}\",uid=\"uid-{pod}\",owner_kind=\"ReplicaSet\",owner_name=\"{rs_name}\",owner_is_controller=\"true\",{ksm}}} 1\n"
            ));
        }
    }
    format!("{requests}{owners}{rs_owners}")
}

fn repo(rel: &str) -> String {
    format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"))
}

/// Evaluates `expr` now; the value per `deployment` label.
async fn query(prom: &str, expr: &str) -> BTreeMap<String, f64> {
    let Ok(response) = reqwest::Client::new()
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
    else {
        return BTreeMap::new();
    };
    let body: Value = response.json().await.unwrap_or(Value::Null);
    body.pointer("/data/result")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let name = s.pointer("/metric/deployment")?.as_str()?.to_string();
            let value = s.pointer("/value/1")?.as_str()?.parse().ok()?;
            Some((name, value))
        })
        .collect()
}

/// The shipped HighErrorRate's post-rollout form, with `$window` set.
fn post_rollout_expr(window: Duration) -> String {
    let text = std::fs::read_to_string(repo("rules/rollbackd.yml")).expect("read rules");
    let loaded = rollbackd::poller::rules::parse_rules_str(
        std::path::Path::new("rules/rollbackd.yml"),
        &text,
    )
    .expect("rules load");
    let post = loaded
        .groups
        .iter()
        .flat_map(|g| &g.rules)
        .find_map(|r| r.post_rollout.clone())
        .expect("a rule with a post-rollout form");
    rollbackd::poller::post_rollout::with_window(&post.expr, window)
}

async fn incidents(running: &rollbackd::daemon::Running) -> Vec<IncidentSummary> {
    running
        .state
        .pipeline
        .store
        .list_incidents(&IncidentFilter::default())
        .await
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_percent_regression_is_undone_within_two_minutes_and_old_or_thin_errors_are_not() {
    let env = sandbox_env().await;
    let workloads = [
        (
            "web",
            Workload {
                traffic: Traffic::Steady {
                    requests: 1000,
                    good_errors: 1,
                    bad_errors: 20,
                },
                bad_image: "shop/web:2.0",
            },
        ),
        (
            "flaky",
            Workload {
                traffic: Traffic::Steady {
                    requests: 1000,
                    good_errors: 20,
                    bad_errors: 20,
                },
                bad_image: "shop/flaky:2.0",
            },
        ),
        (
            "quiet",
            Workload {
                traffic: Traffic::Trickle,
                bad_image: "shop/quiet:2.0",
            },
        ),
    ];
    for (name, _) in &workloads {
        scenario::create(
            &env.api,
            scenario::deployment_manifest(NS, name, &format!("shop/{name}:1.0"), 2),
        )
        .await
        .expect("deployment");
        scenario::wait_rolled_out(&env.api, name, "1", Duration::from_secs(20))
            .await
            .expect("rolled out");
    }
    let app = KubeApp::start(env.client.clone(), workloads.into_iter().collect()).await;
    let prom = lab::start_prometheus_with_config(&format!(
        "global:\n  scrape_interval: 15s\n  evaluation_interval: 15s\n\
         rule_files:\n  - {:?}\n\
         scrape_configs:\n  - job_name: sample-app\n    honor_labels: true\n    static_configs:\n      - targets: [\"{}\"]\n",
        repo("rules/tests/fixtures/kube-prometheus-stack.yml"),
        app.addr
    ))
    .expect("prometheus starts");
    prom.wait_ready(Duration::from_secs(30))
        .await
        .expect("prometheus ready");

    // Before the rollout: web at 0.1% and flaky at 2% over what Prometheus has seen so far.
    let baseline = post_rollout_expr(Duration::from_secs(3600));
    let started = Instant::now();
    loop {
        let values = query(&prom.url, &baseline).await;
        if values.contains_key("web") && values.contains_key("flaky") {
            assert!((values["web"] - 0.001).abs() < 1e-9, "{values:?}");
            assert!((values["flaky"] - 0.02).abs() < 1e-9, "{values:?}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no baseline from Prometheus within 90s: {values:?}\n{}",
            prom.log()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let running = env
        .daemon(&format!(
            "[policy]\nbreaker_max_actions = 0\n[prometheus]\nurl = {:?}\nrules = [{:?}]\n",
            prom.url,
            repo("rules/rollbackd.yml")
        ))
        .await;
    env.sandbox.clear_requests();

    let rolled_out = Instant::now();
    let rolled_out_at = Timestamp::now();
    for (name, _) in [("web", ()), ("flaky", ()), ("quiet", ())] {
        scenario::set_image(&env.api, name, &format!("shop/{name}:2.0"))
            .await
            .expect("new version");
    }
    for name in ["web", "flaky", "quiet"] {
        scenario::wait_rolled_out(&env.api, name, "2", Duration::from_secs(20))
            .await
            .expect("new version live");
    }

    // (a) web is undone through the poller within the budget.
    while env.json_patches("web").is_empty() {
        assert!(
            rolled_out.elapsed() < BUDGET,
            "web not undone within {BUDGET:?} of its rollout; incidents: {:?}",
            incidents(&running).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rollout_to_undo = rolled_out.elapsed();
    let undone_at = Timestamp::now();
    let store = running.state.pipeline.store.clone();
    let web = incidents(&running)
        .await
        .into_iter()
        .find(|i| i.workload_name.as_deref() == Some("web"))
        .expect("an incident about web");
    let detail = store
        .incident(web.id)
        .await
        .expect("read")
        .expect("incident");
    assert_eq!(detail.alerts[0].source, "prometheus");
    assert_eq!(detail.alerts[0].alertname, "HighErrorRate");
    assert_eq!(
        detail.alerts[0].labels["rollbackd_post_rollout"],
        "regression"
    );
    assert_eq!(detail.alerts[0].labels["deployment"], "web");
    let evidence = detail.alerts[0].annotations["rollbackd_evidence"]
        .as_str()
        .expect("evidence")
        .to_string();
    assert!(evidence.starts_with("2% errors in the "), "{evidence}");
    assert!(
        evidence.contains("against 0.1% in the 1h before it: above the post-rollout threshold of 1% and more than 2× the baseline"),
        "{evidence}"
    );
    let starts_at: Timestamp = detail.alerts[0].starts_at.parse().expect("timestamp");
    let web = scenario::wait_rolled_out(&env.api, "web", "3", Duration::from_secs(10))
        .await
        .expect("web back");
    assert_eq!(image_of(&web), "shop/web:1.0");
    let decided = settled(&running, "web").await;
    assert_eq!(decided.outcome, "rolled-back", "{}", decided.reason);
    let detail = store
        .incident(decided.id)
        .await
        .expect("read")
        .expect("incident");
    let decision = detail
        .timeline
        .iter()
        .find(|e| e.message.contains("in its post-rollout form: "))
        .unwrap_or_else(|| panic!("no decision with the evidence: {:?}", detail.timeline));
    assert!(
        decision.message.contains(&evidence)
            && decision.message.contains("roll back to revision 1"),
        "{}",
        decision.message
    );

    // (b) flaky: the same alert, judged pre-existing with both numbers, and nothing sent.
    let flaky = settled(&running, "flaky").await;
    assert_eq!(flaky.outcome, "pre-existing", "{}", flaky.reason);
    assert!(
        flaky.reason.contains("2% errors in the ")
            && flaky.reason.contains("against 2% in the 1h before it")
            && flaky.reason.contains("not more than 2× the baseline"),
        "{}",
        flaky.reason
    );

    // (c) quiet: one error in three requests since the rollout (33%, far above 1%), but the
    // form was due to fire by now (it fired for flaky, rolled out at the same moment) and
    // did not for too little traffic.
    let share = query(&prom.url, &post_rollout_expr(rolled_out.elapsed())).await;
    assert!(
        share
            .get("quiet")
            .is_some_and(|v| (v - 1.0 / 3.0).abs() < 1e-9),
        "quiet's share of 5xx since the rollout: {share:?}"
    );
    tokio::time::sleep(Duration::from_secs(16)).await; // one more poll
    assert!(
        !incidents(&running)
            .await
            .iter()
            .any(|i| i.workload_name.as_deref() == Some("quiet")),
        "{:?}",
        incidents(&running).await
    );
    for name in ["flaky", "quiet"] {
        assert!(env.json_patches(name).is_empty(), "{name} was patched");
    }
    // Back on the good version web's own post-rollout window starts again, clean: the
    // regression alert resolves through the poller.
    let started = Instant::now();
    loop {
        let detail = store
            .incident(decided.id)
            .await
            .expect("read")
            .expect("incident");
        if detail.alerts.iter().all(|a| a.status == "resolved") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "web's alert still firing after the undo: {:?}",
            detail.alerts
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(env.json_patches("web").len(), 1, "exactly one undo of web");

    println!("web: {}", decision.message);
    println!("flaky: {}", flaky.reason);
    println!(
        "BENCH post_rollout rollout_to_undo_ms={} detection_to_undo_ms={} (rollout at {rolled_out_at}, alert at {starts_at}, undo at {undone_at})",
        rollout_to_undo.as_millis(),
        undone_at.duration_since(starts_at).as_millis()
    );
}

/// Waits (bounded) until the incident about `name` has a final outcome.
async fn settled(running: &rollbackd::daemon::Running, name: &str) -> IncidentSummary {
    let started = Instant::now();
    loop {
        if let Some(i) = incidents(running).await.into_iter().find(|i| {
            i.workload_name.as_deref() == Some(name) && i.outcome != rollbackd::store::ACTING
        }) {
            return i;
        }
        assert!(
            started.elapsed() < BUDGET,
            "no settled incident about {name} within {BUDGET:?}: {:?}",
            incidents(running).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
