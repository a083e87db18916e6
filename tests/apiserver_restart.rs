//! An API-server restart under a running daemon: the sandbox keeps its state in a directory
//! and is stopped and started again on the same port while rollbackd watches it. The daemon
//! reconnects with the kubeconfig it already has (same CA, same token), resumes or relists
//! its watches (a resourceVersion from before the restart gets 410 Expired), and a bad
//! rollout made after the restart, with an alert starting after it, leads to exactly one
//! undo, to the image before it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use jiff::Timestamp;
use kube_sandbox::{Sandbox, SandboxOptions};

const WEB: &[(&str, &str)] = &[
    ("alertname", "HighErrorRate"),
    ("namespace", "default"),
    ("deployment", "web"),
];

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
    scenario::wait_rolled_out(&env.api, "web", "4", Duration::from_secs(10))
        .await
        .expect("rolled out");
    let (status, answer) = post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(WEB, Timestamp::now()),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let incident = settled_incident(&running).await;
    assert_eq!(incident.outcome, "rolled-back", "{}", incident.reason);
    let web = scenario::wait_rolled_out(&env.api, "web", "5", Duration::from_secs(10))
        .await
        .expect("rolled back");
    assert_eq!(
        image_of(&web),
        "nginx:3.0",
        "the rollout made after the restart is undone"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.json_patches("web").len(), 1, "rolled back exactly once");
    running.stop().await.expect("clean stop");
    env.sandbox.shutdown().await;
}
