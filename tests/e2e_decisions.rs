//! Decisions end to end, with the daemon in-process against the sandbox: each "do nothing"
//! leaves no patch and records its reason; dry-run changes nothing; API faults are reported and
//! change nothing; a conflict is read again; the undo equals `kubectl rollout undo`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use jiff::{SignedDuration, Timestamp};
use kube_sandbox::{Fault, FaultAction};

const WEB: &[(&str, &str)] = &[
    ("alertname", "HighErrorRate"),
    ("namespace", "default"),
    ("deployment", "web"),
];

async fn no_patch_and_reason(
    env: &Env,
    running: &rollbackd::daemon::Running,
    code: &str,
    words: &str,
) {
    let incident = settled_incident(running).await;
    assert_eq!(incident.outcome, code, "{}", incident.reason);
    assert!(
        incident.reason.contains(words),
        "reason {:?} lacks {words:?}",
        incident.reason
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(env.json_patches("web").is_empty(), "{code} must not patch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_workload_pre_existing_and_ambiguous_leave_no_patch() {
    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    let running = env.daemon("").await;
    let addr = running.addr.to_string();

    let nope = [
        ("alertname", "HighErrorRate"),
        ("namespace", "default"),
        ("deployment", "nope"),
    ];
    post_alert(
        &addr,
        &scenario::alertmanager_payload(&nope, Timestamp::now()),
    )
    .await;
    no_patch_and_reason(&env, &running, "no-workload", "default/nope").await;
    running.stop().await.expect("clean stop");

    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    let running = env.daemon("").await;
    let an_hour_ago = Timestamp::now() - SignedDuration::from_hours(1);
    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(WEB, an_hour_ago),
    )
    .await;
    no_patch_and_reason(&env, &running, "pre-existing", "before").await;
    running.stop().await.expect("clean stop");

    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    let mut twin = scenario::deployment_manifest("default", "web-canary", "nginx:3.0", 1);
    twin["spec"]["template"]["metadata"]["labels"]["app"] = "web".into();
    twin["spec"]["selector"]["matchLabels"]["app"] = "web".into();
    scenario::create(&env.api, twin).await.expect("twin");
    let running = env.daemon("").await;
    let by_app = [
        ("alertname", "HighErrorRate"),
        ("namespace", "default"),
        ("app", "web"),
    ];
    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(&by_app, Timestamp::now()),
    )
    .await;
    no_patch_and_reason(&env, &running, "ambiguous", "web, web-canary").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_rollout_is_not_blamed() {
    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    let running = env
        .daemon_with_env(
            "[correlation]\ngrace = \"1s\"\n",
            &[("ROLLBACKD__KUBERNETES__CORRELATION_WINDOW", "2s")],
        )
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(WEB, Timestamp::now()),
    )
    .await;
    no_patch_and_reason(
        &env,
        &running,
        "no-recent-rollout",
        "outside the correlation window",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_sends_a_dry_run_patch_and_changes_nothing() {
    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    let before = env.api.get("web").await.expect("web");
    let running = env.daemon("[policy]\nmode = \"dry-run\"\n").await;
    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(WEB, Timestamp::now()),
    )
    .await;
    let incident = settled_incident(&running).await;
    assert_eq!(incident.outcome, "would-roll-back", "{}", incident.reason);
    let patches = env.json_patches("web");
    assert_eq!(patches.len(), 1);
    assert!(
        patches[0].path.contains("dryRun=All"),
        "{}",
        patches[0].path
    );
    let after = env.api.get("web").await.expect("web");
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "dry-run changed the deployment"
    );
    assert_eq!(image_of(&after), "nginx:3.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_is_read_again_and_still_rolls_back_once() {
    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    let running = env.daemon("").await;
    env.sandbox.inject_fault(Fault {
        verb: Some("patch".into()),
        resource: Some("deployments".into()),
        count: 1,
        action: FaultAction::Status(409),
    });
    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(WEB, Timestamp::now()),
    )
    .await;
    let incident = settled_incident(&running).await;
    assert_eq!(incident.outcome, "rolled-back", "{}", incident.reason);
    let patches = env.json_patches("web");
    assert_eq!(
        patches.iter().map(|p| p.status).collect::<Vec<_>>(),
        vec![409, 200]
    );
    let web = scenario::wait_rolled_out(&env.api, "web", "4", Duration::from_secs(10))
        .await
        .expect("rolled back");
    assert_eq!(image_of(&web), "nginx:2.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_is_final_names_the_rbac_verb_and_changes_nothing() {
    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    let before = env.api.get("web").await.expect("web");
    let running = env.daemon("").await;
    env.sandbox.inject_fault(Fault {
        verb: Some("patch".into()),
        resource: Some("deployments".into()),
        count: 1,
        action: FaultAction::Status(403),
    });
    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(WEB, Timestamp::now()),
    )
    .await;
    let incident = settled_incident(&running).await;
    assert_eq!(incident.outcome, "failed", "{}", incident.reason);
    for needle in [
        "403",
        "nothing was changed",
        "\"patch\" on deployments.apps",
    ] {
        assert!(
            incident.reason.contains(needle),
            "{needle}: {}",
            incident.reason
        );
    }
    let after = env.api.get("web").await.expect("web");
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    assert_eq!(env.json_patches("web").len(), 1, "403 is not retried");
    running.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_is_settled_by_reading_again_then_retried_once() {
    for code in [500u16, 503, 429] {
        let env = sandbox_env().await;
        env.three_rollouts("web").await;
        let running = env.daemon("").await;
        env.sandbox.inject_fault(Fault {
            verb: Some("patch".into()),
            resource: Some("deployments".into()),
            count: 1,
            action: FaultAction::Status(code),
        });
        post_alert(
            &running.addr.to_string(),
            &scenario::alertmanager_payload(WEB, Timestamp::now()),
        )
        .await;
        let incident = settled_incident(&running).await;
        assert_eq!(
            incident.outcome, "rolled-back",
            "{code}: {}",
            incident.reason
        );
        let patches = env.json_patches("web");
        assert_eq!(
            patches.iter().map(|p| p.status).collect::<Vec<_>>(),
            vec![code, 200],
            "{code}: one failed patch, then one that applied"
        );
        let detail = running
            .state
            .pipeline
            .store
            .incident(incident.id)
            .await
            .expect("store")
            .expect("incident");
        let result = detail
            .timeline
            .iter()
            .rev()
            .find(|e| e.kind == "result")
            .expect("a result");
        let history = result
            .data
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_default();
        assert!(
            history.contains("transient_failures") && history.contains(&code.to_string()),
            "{code}: the result keeps the failed try: {history}"
        );
        let web = scenario::wait_rolled_out(&env.api, "web", "4", Duration::from_secs(10))
            .await
            .expect("rolled back");
        assert_eq!(image_of(&web), "nginx:2.0");
        // Counted once, when applied; the failed try is an action, not a decision.
        let metrics = running.state.metrics.render();
        assert!(
            metrics.contains("rollbackd_decisions_total{outcome=\"rolled-back\"} 1\n"),
            "{code}: {metrics}"
        );
        running.stop().await.expect("clean stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_undo_equals_kubectl_rollout_undo() {
    let daemon_side = sandbox_env().await;
    let kubectl_side = sandbox_env().await;
    daemon_side.three_rollouts("web").await;
    kubectl_side.three_rollouts("web").await;

    let running = daemon_side.daemon("").await;
    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(WEB, Timestamp::now()),
    )
    .await;
    let incident = settled_incident(&running).await;
    assert_eq!(incident.outcome, "rolled-back", "{}", incident.reason);

    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubectl_side.kubeconfig)
        .args(["rollout", "undo", "deployment/web"])
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl rollout undo: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let ours = scenario::wait_rolled_out(&daemon_side.api, "web", "4", Duration::from_secs(10))
        .await
        .expect("ours");
    let theirs = scenario::wait_rolled_out(&kubectl_side.api, "web", "4", Duration::from_secs(10))
        .await
        .expect("theirs");
    assert_eq!(
        ours.data["spec"]["template"],
        theirs.data["spec"]["template"]
    );
    // Equal but for rollbackd's own note of the incident (`rollbackd.io/last-action`), added
    // after the undo for `kubectl describe`.
    let without_ours = |d: &kube::api::DynamicObject| {
        let mut a = d.metadata.annotations.clone().unwrap_or_default();
        a.retain(|k, _| !k.starts_with("rollbackd.io/"));
        a
    };
    assert_eq!(without_ours(&ours), without_ours(&theirs));
    assert_eq!(image_of(&ours), "nginx:2.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_watch_relists_and_decisions_still_work() {
    let env = sandbox_env_with(kube_sandbox::SandboxOptions {
        watch_history: 5,
        ..Default::default()
    })
    .await;
    env.three_rollouts("web").await;
    let running = env
        .daemon_with_env("", &[("ROLLBACKD__KUBERNETES__WATCH_TIMEOUT", "1s")])
        .await;
    // Ten writes the Deployment watch does not see push its resourceVersion out of the
    // five-event history, so its next renewal is answered 410 Gone.
    let secrets: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        env.client.clone(),
        "default",
        &kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("", "v1", "Secret"),
            "secrets",
        ),
    );
    for i in 0..10 {
        let obj: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("filler-{i}")}, "data": {}
        }))
        .expect("secret");
        secrets
            .create(&Default::default(), &obj)
            .await
            .expect("created");
    }
    let lists = |s: &kube_sandbox::Sandbox| {
        s.requests()
            .iter()
            .filter(|r| {
                r.method == "GET"
                    && r.path_only() == "/apis/apps/v1/deployments"
                    && !r.path.contains("watch=")
            })
            .count()
    };
    wait_until(
        "a relist of deployments after 410",
        Duration::from_secs(15),
        || {
            let n = lists(&env.sandbox);
            async move { n >= 2 }
        },
    )
    .await;
    // Without the 410 a renewal only re-watches; the second LIST is the relist.
    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(WEB, Timestamp::now()),
    )
    .await;
    let incident = settled_incident(&running).await;
    assert_eq!(incident.outcome, "rolled-back", "{}", incident.reason);
}

/// The command that undoes `web` (three rollouts) from revision 3 to revision 2, as the engine
/// would give it with `selector` seen in the index; and that target.
async fn undo_of_web(
    env: &Env,
    selector: &str,
) -> (
    rollbackd::core::engine::Command,
    rollbackd::core::undo::RevisionRef,
) {
    use rollbackd::core::engine::{Command as Undo, UndoDeployment};
    use rollbackd::core::undo::RevisionRef;
    env.three_rollouts("web").await;
    let live = env.api.get("web").await.expect("web");
    let rs_api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        env.client.clone(),
        "default",
        &rollbackd::k8s::replica_sets(),
    );
    let all = rs_api
        .list(&kube::api::ListParams::default())
        .await
        .expect("replica sets");
    let by_revision = |rev: i64| {
        let rs = all
            .items
            .iter()
            .filter_map(rollbackd::k8s::replica_set_state)
            .find(|rs| rs.revision == Some(rev))
            .expect("revision");
        RevisionRef::of(&rs)
    };
    let target = by_revision(2);
    let undo = Undo::UndoDeployment(UndoDeployment {
        namespace: "default".into(),
        name: "web".into(),
        uid: live.metadata.uid.clone().expect("uid"),
        blamed: by_revision(3),
        planned_target: target.clone(),
        selector: selector.into(),
        dry_run: false,
    });
    (undo, target)
}

/// The executor lists the ReplicaSets with the selector the index saw while it reads the
/// Deployment; if the Deployment as read has another selector, it lists again with that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_undo_lists_with_the_live_selector_when_the_index_saw_another() {
    use rollbackd::k8s::executor::Executor;
    use rollbackd::store::ActionStatus;

    let env = sandbox_env().await;
    let (undo, target) = undo_of_web(&env, "app=not-web").await;
    let lists = |sandbox: &kube_sandbox::Sandbox| -> Vec<String> {
        sandbox
            .requests()
            .into_iter()
            .filter(|r| {
                r.method == "GET" && r.path_only() == "/apis/apps/v1/namespaces/default/replicasets"
            })
            .map(|r| r.path)
            .collect()
    };
    env.sandbox.clear_requests();
    let result = Executor::new(env.client.clone()).execute(&undo).await;
    assert_eq!(result.status, ActionStatus::Succeeded, "{}", result.message);
    assert_eq!(result.target.as_ref().map(|t| &t.uid), Some(&target.uid));
    let listed = lists(&env.sandbox);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed[0].contains("not-web"), "{listed:?}");
    assert!(
        listed[1].contains("web") && !listed[1].contains("not-web"),
        "{listed:?}"
    );
    let ours = scenario::wait_rolled_out(&env.api, "web", "4", Duration::from_secs(10))
        .await
        .expect("rolled back");
    assert_eq!(image_of(&ours), "nginx:2.0");
}

/// A revert reads while its intent is being recorded, and writes only once the gate opens;
/// a gate that closes leaves nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_undo_reads_before_its_intent_is_recorded_but_writes_only_after() {
    use rollbackd::k8s::executor::{Executor, Gate};
    use rollbackd::store::ActionStatus;

    let env = sandbox_env().await;
    let (undo, _) = undo_of_web(&env, "app=web").await;
    let executor = Executor::new(env.client.clone());
    let reads = |sandbox: &kube_sandbox::Sandbox| {
        sandbox
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path_only().starts_with("/apis/apps/v1/"))
            .count()
    };

    // A gate that closes: the reads are made, nothing is written.
    env.sandbox.clear_requests();
    let (gate, waiting) = Gate::pending();
    drop(gate);
    let result = executor.execute_when(&undo, waiting).await;
    assert_eq!(result.status, ActionStatus::Failed, "{}", result.message);
    assert!(
        result.message.contains("nothing was written"),
        "{}",
        result.message
    );
    assert_eq!(reads(&env.sandbox), 2);
    assert!(env.json_patches("web").is_empty());

    // A gate held: the reads are made and the write waits for it.
    env.sandbox.clear_requests();
    let (gate, waiting) = Gate::pending();
    let running = tokio::spawn({
        let (executor, undo) = (executor.clone(), undo.clone());
        async move { executor.execute_when(&undo, waiting).await }
    });
    let started = std::time::Instant::now();
    while reads(&env.sandbox) < 2 {
        assert!(started.elapsed() < Duration::from_secs(10), "no reads");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        env.json_patches("web").is_empty(),
        "written before the gate opened"
    );
    gate.send(true).expect("the undo waits");
    let result = running.await.expect("undo");
    assert_eq!(result.status, ActionStatus::Succeeded, "{}", result.message);
    assert_eq!(env.json_patches("web").len(), 1);
}
