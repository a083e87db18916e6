//! Shared setup for the end-to-end tests: a sandbox API server, a kube client, a daemon config,
//! and bounded waits. Everything listens on 127.0.0.1.

#![allow(dead_code)]

pub mod proxy;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube_sandbox::{RecordedRequest, Sandbox, SandboxOptions};
use rollbackd::config::Config;
use rollbackd::daemon::{self, Running};
use rollbackd::store::{IncidentFilter, IncidentSummary};
use serde_json::{Value, json};

pub struct Env {
    pub sandbox: Sandbox,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub client: kube::Client,
    pub api: Api<DynamicObject>,
}

pub async fn sandbox_env() -> Env {
    sandbox_env_with(SandboxOptions::default()).await
}

/// As [`sandbox_env`], with other sandbox options (the rollout delay is always short).
pub async fn sandbox_env_with(options: SandboxOptions) -> Env {
    let sandbox = Sandbox::start(SandboxOptions {
        rollout_delay: Duration::from_millis(50),
        ..options
    })
    .await
    .expect("sandbox starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    sandbox
        .write_kubeconfig(&kubeconfig)
        .expect("kubeconfig written");
    let client = rollbackd::k8s::client(Some(&kubeconfig), None)
        .await
        .expect("client");
    let api = scenario::deployments_api(client.clone(), "default");
    Env {
        sandbox,
        dir,
        kubeconfig,
        client,
        api,
    }
}

impl Env {
    /// Deployment `name` rolled out three times: nginx:1.0, 2.0, 3.0.
    pub async fn three_rollouts(&self, name: &str) {
        scenario::deploy_revisions(
            &self.api,
            "default",
            name,
            &["nginx:1.0", "nginx:2.0", "nginx:3.0"],
        )
        .await
        .expect("three rollouts");
    }

    /// A config file for a daemon against this sandbox; `extra` is appended TOML.
    pub fn config_file(&self, listen: &str, extra: &str) -> PathBuf {
        let path = self.dir.path().join("rollbackd.toml");
        let text = format!(
            "[server]\nlisten = \"{listen}\"\n[kubernetes]\nkubeconfig = {:?}\n[store]\nurl = {:?}\n{extra}",
            self.kubeconfig.display().to_string(),
            format!(
                "sqlite://{}",
                self.dir.path().join("rollbackd.db").display()
            ),
        );
        std::fs::write(&path, text).expect("config written");
        path
    }

    /// Starts the daemon in-process and waits for its watches to sync.
    pub async fn daemon(&self, extra: &str) -> Running {
        self.daemon_with_env(extra, &[]).await
    }

    /// As [`Env::daemon`], with `ROLLBACKD__…` overrides.
    pub async fn daemon_with_env(&self, extra: &str, env: &[(&str, &str)]) -> Running {
        let path = self.config_file("127.0.0.1:0", extra);
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let config = Config::load_with_env(&path, env).expect("valid config");
        let running = daemon::start(config).await.expect("daemon starts");
        let state = running.state.clone();
        wait_until("watches synced", Duration::from_secs(10), || {
            let ready = state.readiness.is_ready();
            async move { ready }
        })
        .await;
        running
    }

    /// JSON patches the sandbox received for deployments/NAME, in order.
    pub fn json_patches(&self, name: &str) -> Vec<RecordedRequest> {
        json_patches(&self.sandbox, name)
    }
}

pub fn json_patches(sandbox: &Sandbox, name: &str) -> Vec<RecordedRequest> {
    let path = format!("/apis/apps/v1/namespaces/default/deployments/{name}");
    sandbox
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "PATCH"
                && r.path_only() == path
                && r.content_type.as_deref() == Some("application/json-patch+json")
        })
        .collect()
}

pub async fn post_alert(addr: &str, payload: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/alerts"))
        .json(payload)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("webhook answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls `check` every 50 ms until it is true; panics after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until an incident with a final outcome (not "acting") exists, and returns it.
pub async fn settled_incident(running: &Running) -> IncidentSummary {
    let store = running.state.pipeline.store.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let list = store
            .list_incidents(&IncidentFilter::default())
            .await
            .expect("list");
        if let Some(i) = list
            .into_iter()
            .find(|i| i.outcome != rollbackd::store::ACTING)
        {
            return i;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no settled incident within 10s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn image_of(d: &DynamicObject) -> String {
    scenario::image(d).unwrap_or_default()
}

pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rollbackd"))
}

/// `web` at nginx:1.0 (revision r1), then nginx:2.0 (r2, the bad one), labelled as Argo CD's
/// label tracking does; with `app`, the Application `argocd/web` with self-heal on.
pub async fn argo_cd_web(env: &Env, app: bool) {
    let namespaces: Api<DynamicObject> = Api::all_with(
        env.client.clone(),
        &kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("", "v1", "Namespace"),
            "namespaces",
        ),
    );
    let ns: DynamicObject = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "argocd"}}),
    )
    .expect("namespace");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace argocd");
    scenario::deploy_revisions(&env.api, "default", "web", &["nginx:1.0", "nginx:2.0"])
        .await
        .expect("two rollouts");
    env.api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app.kubernetes.io/instance": "web"}}})),
        )
        .await
        .expect("labelled");
    if !app {
        return;
    }
    let application: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {"name": "web", "namespace": "argocd"},
        "spec": {
            "project": "default",
            "source": {"repoURL": "https://git.example/web.git", "path": "deploy", "targetRevision": "main"},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "default"},
            "syncPolicy": {"automated": {"prune": true, "selfHeal": true}}
        },
        "status": {
            "sync": {"status": "Synced", "revision": "r2"},
            "history": [
                {"id": 1, "revision": "r1", "deployedAt": "2026-01-01T10:00:00Z",
                 "source": {"repoURL": "https://git.example/web.git", "path": "deploy"}},
                {"id": 2, "revision": "r2", "deployedAt": "2026-01-01T11:00:00Z",
                 "source": {"repoURL": "https://git.example/web.git", "path": "deploy"}}
            ]
        }
    }))
    .expect("application");
    let applications: Api<DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        "argocd",
        &rollbackd::k8s::applications(),
    );
    applications
        .create(&PostParams::default(), &application)
        .await
        .expect("application created");
}

/// Creates `manifest` through `api`.
pub async fn create_object(api: &Api<DynamicObject>, manifest: Value) {
    let obj: DynamicObject = serde_json::from_value(manifest).expect("manifest");
    api.create(&PostParams::default(), &obj)
        .await
        .expect("created");
}

/// An Argo canary Rollout `default/<name>` running `image` with these steps.
pub fn rollout_manifest(name: &str, image: &str, replicas: i64, steps: Value) -> Value {
    json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "app", "image": image}]}},
            "strategy": {"canary": {"steps": steps}}
        }
    })
}

/// Waits (20 s at most) until Rollout `name`'s status satisfies `check` and describes its
/// generation; `what` names the wait in the failure.
pub async fn wait_rollout(
    api: &Api<DynamicObject>,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> DynamicObject {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = api.get(name).await.expect("rollout");
        let generation = r.metadata.generation.unwrap_or(0).to_string();
        let status = r.data.get("status").cloned().unwrap_or(Value::Null);
        if status["observedGeneration"].as_str() == Some(generation.as_str()) && check(&status) {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rollout {name} never reached: {what}; status {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Rollout at rest: healthy, its stable ReplicaSet the current one.
pub fn promoted(s: &Value) -> bool {
    s["phase"] == "Healthy" && s["stableRS"].is_string() && s["stableRS"] == s["currentPodHash"]
}

/// A new template image for Rollout `name` (its container `app`).
pub async fn set_rollout_image(api: &Api<DynamicObject>, name: &str, image: &str) {
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("image set");
}

/// The labels of an alert about the Deployment `web` in `default`.
pub const WEB: &[(&str, &str)] = &[
    ("alertname", "HighErrorRate"),
    ("namespace", "default"),
    ("deployment", "web"),
];

/// Waits until `web` rolled out to revision 4, then posts an alert about it that starts now
/// (after the rollout) and asserts the webhook recorded it.
pub async fn alert_after_rollout(api: &Api<DynamicObject>, running: &Running) {
    scenario::wait_rolled_out(api, "web", "4", Duration::from_secs(10))
        .await
        .expect("rolled out");
    let (status, answer) = post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(WEB, jiff::Timestamp::now()),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
}

/// The incident settles `rolled-back`, `web`'s rollout to nginx:4.0 (revision 4) is undone to
/// nginx:3.0 as revision 5, and with exactly one patch, also half a second later.
pub async fn fourth_rollout_undone_once(env: &Env, running: &Running) {
    let incident = settled_incident(running).await;
    assert_eq!(incident.outcome, "rolled-back", "{}", incident.reason);
    let web = scenario::wait_rolled_out(&env.api, "web", "5", Duration::from_secs(10))
        .await
        .expect("rolled back");
    assert_eq!(
        image_of(&web),
        "nginx:3.0",
        "the rollout to nginx:4.0 is the one undone"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.json_patches("web").len(), 1, "rolled back exactly once");
}
