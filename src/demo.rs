//! `rollbackd demo`: the whole story on one machine, with nothing but this binary.
//!
//! A sandbox API server runs a `checkout` Deployment at a good revision; a bad rollout follows;
//! an Alertmanager-format alert is posted to the daemon over HTTP; the daemon undoes the
//! rollout; the incident timeline is printed. Every step is bounded in time and checked, so the
//! demo exits non-zero if the story does not happen as told.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use jiff::Timestamp;

use crate::config::{Config, ConfigErrors};
use crate::daemon::{self, Running};
use crate::sandbox::{Sandbox, SandboxOptions};
use crate::scenario;
use crate::store::IncidentFilter;

const GOOD: &str = "registry.example/checkout:1.4.2";
const BAD: &str = "registry.example/checkout:1.5.0";
const WAIT: Duration = Duration::from_secs(20);

pub async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    step(
        1,
        "starting the sandbox: a simulated Kubernetes API server on 127.0.0.1",
    );
    let sandbox = Sandbox::start(SandboxOptions {
        rollout_delay: Duration::from_millis(300),
        ..SandboxOptions::default()
    })
    .await?;
    let kubeconfig = dir.path().join("kubeconfig");
    sandbox.write_kubeconfig(&kubeconfig)?;
    println!(
        "   API server {} (kubeconfig {})",
        sandbox.url(),
        kubeconfig.display()
    );

    let client = crate::k8s::client(Some(&kubeconfig)).await?;
    let api = scenario::deployments_api(client, "default");
    scenario::create(
        &api,
        scenario::deployment_manifest("default", "checkout", GOOD, 3),
    )
    .await?;
    scenario::wait_rolled_out(&api, "checkout", "1", WAIT).await?;
    step(
        2,
        &format!("deployment default/checkout runs revision 1 ({GOOD})"),
    );

    let config = demo_config(dir.path(), &kubeconfig).map_err(|e| anyhow::anyhow!("{e}"))?;
    let daemon = daemon::start(config).await?;
    wait_ready(&daemon).await?;
    step(
        3,
        &format!(
            "rollbackd is serving on http://{} and has synced its watches",
            daemon.addr
        ),
    );

    scenario::set_image(&api, "checkout", BAD).await?;
    scenario::wait_rolled_out(&api, "checkout", "2", WAIT).await?;
    step(
        4,
        &format!("a bad rollout: revision 2 ({BAD}) is live; its error rate climbs"),
    );

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
    step(
        5,
        "Alertmanager-format alert HighErrorRate{namespace=\"default\", deployment=\"checkout\"} posted: 200 OK",
    );

    let incident = wait_for_outcome(&daemon).await?;
    let image = scenario::image(&api.get("checkout").await?);
    ensure!(
        image.as_deref() == Some(GOOD),
        "after the rollback the image is {image:?}, not {GOOD}"
    );
    step(
        6,
        &format!(
            "rolled back: deployment default/checkout runs {GOOD} again. Incident {incident}:"
        ),
    );
    let detail = daemon
        .state
        .pipeline
        .store
        .incident(incident)
        .await?
        .context("incident vanished")?;
    println!("\n{}", crate::cli::render_text(&detail));
    let patches = sandbox
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "PATCH" && r.content_type.as_deref() == Some("application/json-patch+json")
        })
        .count();
    println!(
        "The demo showed: a bad rollout, an alert posted over HTTP, exactly {patches} JSON patch (the undo, as `kubectl rollout undo` sends it), and the incident recorded with its reasons."
    );
    daemon.stop().await?;
    sandbox.shutdown().await;
    Ok(())
}

fn step(n: u32, text: &str) {
    println!("[{n}/6] {text}");
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
        problems: vec![crate::config::ConfigProblem {
            key: String::new(),
            message: e.to_string(),
        }],
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

async fn wait_for_outcome(daemon: &Running) -> anyhow::Result<i64> {
    for _ in 0..100 {
        let list = daemon
            .state
            .pipeline
            .store
            .list_incidents(&IncidentFilter::default())
            .await?;
        if let Some(i) = list.iter().find(|i| i.outcome != crate::store::ACTING) {
            ensure!(
                i.outcome == "rolled-back",
                "rollbackd decided {} instead of rolling back: {}",
                i.outcome,
                i.reason
            );
            return Ok(i.id);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("no rollback recorded within 10s")
}
