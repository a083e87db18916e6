//! An API-server restart under a running daemon: the sandbox keeps its state in a directory
//! and is stopped and started again on the same port while rollbackd watches it. The daemon
//! reconnects with the kubeconfig it already has (same CA, same token), resumes or relists
//! its watches (a resourceVersion from before the restart gets 410 Expired), and a bad
//! rollout made after the restart, with an alert starting after it, leads to exactly one
//! undo, to the image before it. Once with the sandbox in-process, stopped and started
//! again; once as `rollbackd sandbox --state-dir` killed with SIGKILL and started again.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use kube_sandbox::{Sandbox, SandboxOptions};
use rollbackd::config::Config;
use serde_json::Value;

fn options(state: &Path) -> SandboxOptions {
    SandboxOptions {
        state_dir: Some(state.to_path_buf()),
        bookmark_interval: Duration::from_millis(500),
        ..SandboxOptions::default()
    }
}

/// Stop the sandbox and start another on the same address and state directory; the
/// kubeconfig file, client and API handle of `env` are kept as they are.
async fn restart(env: Env, state: &Path) -> Env {
    let Env {
        sandbox,
        dir,
        kubeconfig,
        client,
        api,
    } = env;
    let addr = sandbox.addr();
    sandbox.shutdown().await;
    let sandbox = Sandbox::start(SandboxOptions {
        listen: addr,
        rollout_delay: Duration::from_millis(50),
        ..options(state)
    })
    .await
    .expect("the sandbox starts again on its state");
    assert_eq!(
        sandbox.kubeconfig_yaml(),
        std::fs::read_to_string(&kubeconfig).expect("kubeconfig"),
        "the kubeconfig written before the restart still fits"
    );
    Env {
        sandbox,
        dir,
        kubeconfig,
        client,
        api,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_api_server_restart_a_bad_rollout_is_undone_once() {
    let state = tempfile::tempdir().expect("state dir");
    let env = sandbox_env_with(options(state.path())).await;
    env.three_rollouts("web").await;
    let running = env.daemon("").await;

    let env = restart(env, state.path()).await;
    // The test's own client may first try a pooled connection the old server closed, as
    // any client of a restarted API server may: it asks again.
    let mut web = None;
    for _ in 0..50 {
        match env.api.get("web").await {
            Ok(w) => {
                web = Some(w);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let web = web.expect("web kept");
    assert_eq!(scenario::revision(&web).as_deref(), Some("3"));
    // The daemon is back on the new server: a watch of Deployments reached it, and it is
    // ready (its watches are fresh again).
    wait_until(
        "the daemon's Deployment watch on the restarted server",
        Duration::from_secs(20),
        || {
            let watching = env.sandbox.requests().iter().any(|r| {
                r.method == "GET" && r.path.contains("/deployments?") && r.path.contains("watch=")
            });
            async move { watching }
        },
    )
    .await;
    let state = running.state.clone();
    wait_until("ready again", Duration::from_secs(20), || {
        let ready = state.readiness.is_ready();
        async move { ready }
    })
    .await;

    // A bad rollout after the restart, then an alert starting after it.
    scenario::set_image(&env.api, "web", "nginx:4.0")
        .await
        .expect("rollout");
    alert_after_rollout(&env.api, &running).await;
    // The rollout made after the restart is the one undone.
    fourth_rollout_undone_once(&env, &running).await;
    running.stop().await.expect("clean stop");
    env.sandbox.shutdown().await;
}

/// `rollbackd sandbox` as a process, killed when dropped.
struct SandboxProcess(Child);

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `rollbackd sandbox` on `port` with `state`; returns once it has written `kubeconfig`.
async fn sandbox_process(port: u16, state: &Path, kubeconfig: &Path) -> SandboxProcess {
    let _ = std::fs::remove_file(kubeconfig);
    let child = Command::new(binary())
        .args(["sandbox", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--state-dir")
        .arg(state)
        .args(["--rollout-delay", "50ms"])
        .env("ROLLBACKD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("rollbackd sandbox starts");
    let process = SandboxProcess(child);
    wait_until("the sandbox's kubeconfig", Duration::from_secs(20), || {
        let whole = std::fs::read_to_string(kubeconfig)
            .is_ok_and(|t| t.contains("current-context") && t.ends_with('\n'));
        async move { whole }
    })
    .await;
    process
}

/// The sandbox's admin request log, read over HTTPS with what the state directory keeps.
async fn requests(port: u16, state: &Path) -> Vec<Value> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = std::fs::read(state.join("ca.crt")).expect("ca.crt kept");
    let token = std::fs::read_to_string(state.join("token")).expect("token kept");
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).expect("CA")])
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let Ok(answer) = http
        .get(format!("https://127.0.0.1:{port}/sandbox/requests"))
        .bearer_auth(token.trim())
        .send()
        .await
    else {
        return Vec::new();
    };
    answer.json::<Vec<Value>>().await.unwrap_or_default()
}

fn is_web_undo(r: &Value) -> bool {
    r["method"] == "PATCH"
        && r["path"].as_str().and_then(|p| p.split('?').next())
            == Some("/apis/apps/v1/namespaces/default/deployments/web")
        && r["content_type"] == "application/json-patch+json"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_sandbox_process_is_killed_and_restarted_a_bad_rollout_is_undone_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let kubeconfig = dir.path().join("kubeconfig");
    let port = free_port();
    let sandbox = sandbox_process(port, &state, &kubeconfig).await;
    let client = rollbackd::k8s::client(Some(&kubeconfig), None)
        .await
        .expect("client");
    let api = scenario::deployments_api(client, "default");
    scenario::deploy_revisions(
        &api,
        "default",
        "web",
        &["nginx:1.0", "nginx:2.0", "nginx:3.0"],
    )
    .await
    .expect("three rollouts");

    let config_path: PathBuf = dir.path().join("rollbackd.toml");
    std::fs::write(
        &config_path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[kubernetes]\nkubeconfig = {:?}\n[store]\nurl = {:?}\n",
            kubeconfig.display().to_string(),
            format!("sqlite://{}", dir.path().join("rollbackd.db").display()),
        ),
    )
    .expect("config written");
    let config =
        Config::load_with_env(&config_path, Vec::<(String, String)>::new()).expect("valid config");
    let running = rollbackd::daemon::start(config)
        .await
        .expect("daemon starts");
    let daemon_state = running.state.clone();
    wait_until("watches synced", Duration::from_secs(10), || {
        let ready = daemon_state.readiness.is_ready();
        async move { ready }
    })
    .await;

    let kubeconfig_before = std::fs::read_to_string(&kubeconfig).expect("kubeconfig");
    drop(sandbox); // SIGKILL
    let _sandbox = sandbox_process(port, &state, &kubeconfig).await;
    assert_eq!(
        std::fs::read_to_string(&kubeconfig).expect("kubeconfig"),
        kubeconfig_before,
        "same address, CA and token after the restart"
    );
    wait_until(
        "the daemon's Deployment watch on the restarted process",
        Duration::from_secs(20),
        || {
            let state = state.clone();
            async move {
                requests(port, &state).await.iter().any(|r| {
                    r["method"] == "GET"
                        && r["path"]
                            .as_str()
                            .is_some_and(|p| p.contains("/deployments?") && p.contains("watch="))
                })
            }
        },
    )
    .await;
    wait_until("ready again", Duration::from_secs(20), || {
        let ready = daemon_state.readiness.is_ready();
        async move { ready }
    })
    .await;

    // The test's client asks again if its first request meets a connection the kill closed.
    wait_until(
        "a rollout after the restart",
        Duration::from_secs(10),
        || {
            let api = api.clone();
            async move { scenario::set_image(&api, "web", "nginx:4.0").await.is_ok() }
        },
    )
    .await;
    alert_after_rollout(&api, &running).await;
    let incident = settled_incident(&running).await;
    assert_eq!(incident.outcome, "rolled-back", "{}", incident.reason);
    let web = scenario::wait_rolled_out(&api, "web", "5", Duration::from_secs(10))
        .await
        .expect("rolled back");
    assert_eq!(image_of(&web), "nginx:3.0");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let undos = requests(port, &state)
        .await
        .iter()
        .filter(|r| is_web_undo(r))
        .count();
    assert_eq!(undos, 1, "rolled back exactly once");
    running.stop().await.expect("clean stop");
}
