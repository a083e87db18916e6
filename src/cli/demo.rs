//! `rollbackd demo`: the whole story on one machine.
//!
//! A sandbox API server runs a `checkout` Deployment at a good revision; rollbackd starts and
//! syncs; a bad rollout follows; rollbackd undoes it; the incident timeline is printed.
//!
//! When the Debian packages `prometheus` and `prometheus-alertmanager` are installed, the alert
//! travels the real way: a sample app that fails 30% of its requests while the bad image runs is
//! scraped by a real Prometheus evaluating the shipped rules (with seconds-long `for:`), which
//! sends to a real Alertmanager, which posts to rollbackd's webhook. Without them, the demo posts
//! an Alertmanager-format alert itself and says how to get the real path. Every wait is bounded
//! and checked, so the demo exits non-zero if the story does not happen as told.
//!
//! With `--keep` the demo then leaves everything up until Ctrl-C: the sandbox, the store and the
//! incident pages, with the URL of the incident page and the `incidents show` command to try.
//! On the real path it first waits for the rollback to be verified and stores the incident's
//! metric graph from its Prometheus, as the daemon does when `[prometheus]` is configured.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use jiff::Timestamp;
use kube::api::{Api, DynamicObject};

use crate::config::{Config, ConfigErrors, ConfigProblem};
use crate::daemon::{self, Running};
use crate::store::{ACTING, IncidentFilter};
use kube_sandbox::{Sandbox, SandboxOptions};
use scenario::lab::{self, PrometheusLab};
use scenario::{self, SampleApp};

const GOOD: &str = "registry.example/checkout:1.4.2";
const BAD: &str = "registry.example/checkout:1.5.0";
const WAIT: Duration = Duration::from_secs(20);
/// Scrape, evaluation, `for: 2s`, a 10s rate window, group_wait: well under this.
const DETECTION_LIMIT: Duration = Duration::from_secs(90);

pub async fn run(keep: bool) -> anyhow::Result<()> {
    let real = lab::available();
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    println!("[1] starting the sandbox: a simulated Kubernetes API server on 127.0.0.1");
    let sandbox = Sandbox::start(SandboxOptions {
        rollout_delay: Duration::from_millis(300),
        ..SandboxOptions::default()
    })
    .await?;
    let kubeconfig = dir.path().join("kubeconfig");
    sandbox.write_kubeconfig(&kubeconfig)?;
    println!(
        "    API server {}; try `kubectl --kubeconfig {} get deploy,rs` while it runs",
        sandbox.url(),
        kubeconfig.display()
    );

    let client = crate::k8s::client(Some(&kubeconfig), None).await?;
    let api = scenario::deployments_api(client, "default");
    scenario::create(
        &api,
        scenario::deployment_manifest("default", "checkout", GOOD, 3),
    )
    .await?;
    scenario::wait_rolled_out(&api, "checkout", "1", WAIT).await?;
    println!("[2] deployment default/checkout runs revision 1 ({GOOD})");

    let config = demo_config(dir.path(), &kubeconfig).map_err(|e| anyhow::anyhow!("{e}"))?;
    let daemon = daemon::start(config).await?;
    wait_ready(&daemon).await?;
    println!(
        "[3] rollbackd is serving on http://{} and has synced its watches",
        daemon.addr
    );

    let incident = if real {
        through_prometheus(&api, &daemon, dir.path(), keep).await?
    } else {
        println!(
            "    note: Prometheus and Alertmanager are not installed, so this demo posts the alert itself.\n    \
             For the real path (sample app -> Prometheus -> Alertmanager -> rollbackd):\n    \
             sudo apt-get install -y prometheus prometheus-alertmanager"
        );
        posted_alert(&api, &daemon).await?
    };

    let image = scenario::image(&api.get("checkout").await?);
    ensure!(
        image.as_deref() == Some(GOOD),
        "after the rollback the image is {image:?}, not {GOOD}"
    );
    let detail = daemon
        .state
        .pipeline
        .store
        .incident(incident)
        .await?
        .context("incident vanished")?;
    println!(
        "[6] rolled back: deployment default/checkout runs {GOOD} again. Incident {incident}:\n"
    );
    println!("{}", crate::cli::render_text(&detail));
    let patches = sandbox
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "PATCH" && r.content_type.as_deref() == Some("application/json-patch+json")
        })
        .count();
    let path = if real {
        "a real Prometheus scraping the sample app, its HighErrorRate rule, a real Alertmanager posting to the webhook"
    } else {
        "an Alertmanager-format alert posted over HTTP"
    };
    println!(
        "The demo showed: a bad rollout; {path}; exactly {patches} JSON patch (the undo, as `kubectl rollout undo` sends it); and the incident recorded with its reasons."
    );
    if keep {
        println!(
            "\nKept up until Ctrl-C:\n    incident page   http://{addr}/incidents/{incident}\n    all incidents   http://{addr}/\n    on the command line\n        rollbackd incidents show {incident} --config {config}\n        kubectl --kubeconfig {kubeconfig} describe deployment checkout\nEverything is deleted when the demo exits.",
            addr = daemon.addr,
            config = dir.path().join("rollbackd.toml").display(),
            kubeconfig = kubeconfig.display(),
        );
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        println!("stopping");
    }
    daemon.stop().await?;
    sandbox.shutdown().await;
    Ok(())
}

async fn through_prometheus(
    api: &Api<DynamicObject>,
    daemon: &Running,
    dir: &Path,
    keep: bool,
) -> anyhow::Result<i64> {
    let app = SampleApp::start(api.clone(), "checkout", &[BAD], 30).await?;
    let rules = dir.join("rules.yml");
    std::fs::write(&rules, lab::fast_rules(lab::SHIPPED_RULES, "2s", "10s"))?;
    let am = lab::start_alertmanager(&format!("http://{}/api/v1/alerts", daemon.addr))?;
    am.wait_ready(WAIT).await?;
    let prom = lab::start_prometheus(&PrometheusLab {
        target: app.addr,
        target_labels: &[("namespace", "default"), ("app", "checkout")],
        rule_files: std::slice::from_ref(&rules),
        alertmanager: Some(&am.url),
    })?;
    prom.wait_ready(WAIT).await?;
    println!(
        "    sample app on http://{}/metrics; Prometheus {} (scrape and evaluate every 1s, the shipped rules with for: 2s and 10s rate windows); Alertmanager {}",
        app.addr, prom.url, am.url
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    scenario::set_image(api, "checkout", BAD).await?;
    scenario::wait_rolled_out(api, "checkout", "2", WAIT).await?;
    println!("[4] a bad rollout: revision 2 ({BAD}) is live and fails 30% of its requests");
    println!("[5] waiting for Prometheus to fire HighErrorRate and Alertmanager to deliver it");
    let started = tokio::time::Instant::now();
    let mut last_report = started;
    loop {
        if let Some(id) = settled(daemon).await? {
            println!(
                "    rollbackd acted {}s after the bad rollout went live",
                started.elapsed().as_secs()
            );
            if keep {
                keep_graph(daemon, id, &prom.url).await?;
            }
            return Ok(id);
        }
        if started.elapsed() > DETECTION_LIMIT {
            bail!(
                "no rollback within {DETECTION_LIMIT:?}; Prometheus log:\n{}\nAlertmanager log:\n{}",
                prom.log(),
                am.log()
            );
        }
        if last_report.elapsed() >= Duration::from_secs(3) {
            last_report = tokio::time::Instant::now();
            println!(
                "    {}s: error rate {}",
                started.elapsed().as_secs(),
                error_rate(&prom.url).await
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (bounded) for the rollback to be verified, then stores the incident's graph from
/// this Prometheus, so that the page kept up shows it.
async fn keep_graph(daemon: &Running, id: i64, prom: &str) -> anyhow::Result<()> {
    println!("    waiting for the alert to resolve and the rollback to be verified");
    let store = &daemon.state.pipeline.store;
    let started = tokio::time::Instant::now();
    loop {
        let detail = store.incident(id).await?.context("incident vanished")?;
        if detail
            .timeline
            .iter()
            .any(|e| e.kind == "verify" && e.outcome.is_some())
        {
            break;
        }
        if started.elapsed() > DETECTION_LIMIT {
            println!("    not verified within {DETECTION_LIMIT:?}; the graph stops here");
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let source = crate::graph::GraphSource {
        client: crate::poller::PromClient::new(
            prom,
            crate::poller::PromAuth::None,
            Duration::from_secs(10),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?,
        after: Duration::ZERO,
    };
    if source.capture(store, id).await? {
        println!("    stored the HighErrorRate graph with the incident");
    } else {
        println!("    Prometheus had no series for the alert; the page shows no graph");
    }
    Ok(())
}

/// The 5xx share Prometheus sees over the last 10s, for progress lines.
async fn error_rate(prom: &str) -> String {
    let query =
        "sum(rate(http_requests_total{code=~\"5..\"}[10s])) / sum(rate(http_requests_total[10s]))";
    let answer = reqwest::Client::new()
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", query)])
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    let value = match answer {
        Ok(r) => r.json::<serde_json::Value>().await.ok(),
        Err(_) => None,
    };
    value
        .as_ref()
        .and_then(|v| v.pointer("/data/result/0/value/1"))
        .and_then(serde_json::Value::as_str)
        .and_then(|v| v.parse::<f64>().ok())
        .map_or_else(
            || "not known yet".to_string(),
            |r| format!("{:.0}%", r * 100.0),
        )
}

async fn posted_alert(api: &Api<DynamicObject>, daemon: &Running) -> anyhow::Result<i64> {
    scenario::set_image(api, "checkout", BAD).await?;
    scenario::wait_rolled_out(api, "checkout", "2", WAIT).await?;
    println!("[4] a bad rollout: revision 2 ({BAD}) is live; its error rate climbs");
    let payload = scenario::alertmanager_payload(
        &[
            ("alertname", "HighErrorRate"),
            ("namespace", "default"),
            ("deployment", "checkout"),
            ("severity", "page"),
        ],
        Timestamp::now(),
    );
    let answer = reqwest::Client::new()
        .post(format!("http://{}/api/v1/alerts", daemon.addr))
        .json(&payload)
        .send()
        .await
        .context("posting the alert")?;
    ensure!(
        answer.status().is_success(),
        "the webhook answered {}",
        answer.status()
    );
    println!(
        "[5] Alertmanager-format alert HighErrorRate{{namespace=\"default\", deployment=\"checkout\"}} posted: 200 OK"
    );
    for _ in 0..100 {
        if let Some(id) = settled(daemon).await? {
            return Ok(id);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("no rollback recorded within 10s")
}

/// The first incident with a final outcome; an error if that outcome is not a rollback.
async fn settled(daemon: &Running) -> anyhow::Result<Option<i64>> {
    let list = daemon
        .state
        .pipeline
        .store
        .list_incidents(&IncidentFilter::default())
        .await?;
    match list.iter().find(|i| i.outcome != ACTING) {
        Some(i) if i.outcome == "rolled-back" => Ok(Some(i.id)),
        Some(i) => bail!(
            "rollbackd decided {} instead of rolling back: {}",
            i.outcome,
            i.reason
        ),
        None => Ok(None),
    }
}

fn demo_config(dir: &Path, kubeconfig: &Path) -> Result<Config, ConfigErrors> {
    let path = dir.join("rollbackd.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[kubernetes]\nkubeconfig = {:?}\n[store]\nurl = {:?}\n",
        kubeconfig.display().to_string(),
        format!("sqlite://{}", dir.join("rollbackd.db").display()),
    );
    std::fs::write(&path, text).map_err(|e| ConfigErrors {
        file: path.clone(),
        problems: vec![ConfigProblem::new("", e.to_string())],
    })?;
    Config::load_with_env(&path, Vec::new())
}

async fn wait_ready(daemon: &Running) -> anyhow::Result<()> {
    for _ in 0..100 {
        if daemon.state.readiness.is_ready() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("rollbackd's watches did not sync within 10s")
}
