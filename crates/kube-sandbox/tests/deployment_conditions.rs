//! The Deployment conditions through a rollout, an undo in the middle of one, a rollout
//! that stalls on pods that never become ready (`unready_images`) until its progress
//! deadline, and a paused Deployment, as kube-controller-manager reports them
//! (`pkg/controller/deployment/progress.go` `syncRolloutStatus`).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Env, eventually, kube_client, start};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube::runtime::watcher;
use kube_sandbox::SandboxOptions;
use serde_json::{Value, json};

fn condition(dep: &Value, ty: &str) -> Value {
    dep.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == json!(ty)).cloned())
        .unwrap_or(Value::Null)
}

fn reason(c: &Value) -> &str {
    c["reason"].as_str().unwrap_or_default()
}

/// The name of the ReplicaSet of deployment `app` running `image`.
async fn rs_named(env: &Env, app: &str, image: &str) -> String {
    let sel = format!("app={app}");
    let rs = env.json(&["get", "rs", "-l", &sel]).await;
    rs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r.pointer("/spec/template/spec/containers/0/image") == Some(&json!(image)))
        .unwrap_or_else(|| panic!("a ReplicaSet runs {image}: {rs}"))["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Every distinct (reason, message, lastTransitionTime) the `Progressing` condition of
/// Deployment `name` goes through, in order, as a watcher sees them.
fn record_progressing(
    api: Api<Deployment>,
    name: &str,
) -> Arc<Mutex<Vec<(String, String, String)>>> {
    let seen = Arc::new(Mutex::new(Vec::<(String, String, String)>::new()));
    let out = seen.clone();
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    tokio::spawn(async move {
        let mut events = watcher(api, cfg).boxed();
        // The first error ends the recording: without a backoff the watcher would retry
        // at once, forever, once the sandbox is gone.
        while let Some(Ok(ev)) = events.next().await {
            let watcher::Event::Apply(d) = ev else {
                continue;
            };
            let conds = d.status.and_then(|s| s.conditions).unwrap_or_default();
            let Some(c) = conds
                .into_iter()
                .find(|c| c.type_.as_deref() == Some("Progressing"))
            else {
                continue;
            };
            let entry = (
                c.reason.unwrap_or_default(),
                c.message.unwrap_or_default(),
                c.last_transition_time
                    .map(|t| t.0.to_string())
                    .unwrap_or_default(),
            );
            let mut v = out.lock().unwrap();
            if v.last() != Some(&entry) {
                v.push(entry);
            }
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_in_the_middle_of_a_rollout() {
    common::bounded(undo_in_the_middle_of_a_rollout_body()).await;
}

async fn undo_in_the_middle_of_a_rollout_body() {
    // Pods take 8 s to become ready: the undo lands while neither template has any.
    let env = start(SandboxOptions {
        rollout_delay: Duration::from_secs(8),
        ..SandboxOptions::default()
    })
    .await;
    let client = kube_client(&env.sb).await;
    let seen = record_progressing(Api::namespaced(client, "default"), "mid");
    env.ok(&["create", "deploy", "mid", "--image=img:a"]).await;
    env.ok(&["set", "image", "deploy/mid", "img=img:b"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.ok(&["rollout", "undo", "deploy/mid"]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (a, b) = (
        rs_named(&env, "mid", "img:a").await,
        rs_named(&env, "mid", "img:b").await,
    );

    let dep = env.json(&["get", "deploy", "mid"]).await;
    assert_eq!(
        dep["status"]["observedGeneration"],
        dep["metadata"]["generation"]
    );
    // Progress is measured by counts (DeploymentProgressing): the reused ReplicaSet already
    // had its one pod and nothing became ready, so nothing progressed since the abandoned
    // ReplicaSet got its pod, and the condition still names that one.
    let p = condition(&dep, "Progressing");
    assert_eq!(p["status"], json!("True"), "{p}");
    assert_eq!(reason(&p), "ReplicaSetUpdated", "{p}");
    assert_eq!(
        p["message"],
        json!(format!("ReplicaSet \"{b}\" is progressing."))
    );
    let av = condition(&dep, "Available");
    assert_eq!(
        (av["status"].clone(), reason(&av)),
        (json!("False"), "MinimumReplicasUnavailable")
    );
    assert_eq!(dep["status"]["replicas"], json!(2));
    assert_eq!(dep["status"]["updatedReplicas"], json!(1));
    assert_eq!(dep["status"]["unavailableReplicas"], json!(2));
    let rs_a = env.json(&["get", "rs", &a]).await;
    assert_eq!(
        rs_a.pointer("/metadata/annotations/deployment.kubernetes.io~1revision"),
        Some(&json!("3"))
    );

    // Once the reused ReplicaSet's pod is ready: progress, the old one goes, complete.
    env.ok(&["rollout", "status", "deploy/mid", "--timeout=30s"])
        .await;
    let dep = env.json(&["get", "deploy", "mid"]).await;
    let p = condition(&dep, "Progressing");
    assert_eq!(reason(&p), "NewReplicaSetAvailable", "{p}");
    assert_eq!(
        p["message"],
        json!(format!("ReplicaSet \"{a}\" has successfully progressed."))
    );
    assert_eq!(
        reason(&condition(&dep, "Available")),
        "MinimumReplicasAvailable"
    );
    // Set last: Available then Progressing, as on a cluster.
    let types: Vec<&Value> = dep["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["type"])
        .collect();
    assert_eq!(types, [&json!("Available"), &json!("Progressing")]);

    let seen = eventually(5, "the watcher sees completion", || {
        let seen = seen.clone();
        async move {
            let v = seen.lock().unwrap().clone();
            (v.last().map(|e| e.0.as_str()) == Some("NewReplicaSetAvailable")).then_some(v)
        }
    })
    .await;
    let steps: Vec<(&str, String)> = seen.iter().map(|e| (e.0.as_str(), e.1.clone())).collect();
    let tail = [
        (
            "NewReplicaSetCreated",
            format!("Created new replica set \"{b}\""),
        ),
        (
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{b}\" is progressing."),
        ),
        (
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{a}\" is progressing."),
        ),
        (
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{a}\" has successfully progressed."),
        ),
    ];
    assert!(steps.ends_with(&tail), "{steps:?}");
    assert_eq!(
        steps[0],
        (
            "NewReplicaSetCreated",
            format!("Created new replica set \"{a}\"")
        ),
        "{steps:?}"
    );
    // Progressing stayed True throughout: one transition time, the first one.
    assert!(seen.iter().all(|e| e.2 == seen[0].2), "{seen:?}");
    // lastUpdateTime moves with each change of reason or message.
    assert!(p["lastUpdateTime"].as_str() >= p["lastTransitionTime"].as_str());
}

const STALL: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: stall
spec:
  replicas: 4
  progressDeadlineSeconds: 2
  selector:
    matchLabels: {app: stall}
  template:
    metadata:
      labels: {app: stall}
    spec:
      containers:
      - name: app
        image: img:good
"#;

fn stalling() -> SandboxOptions {
    SandboxOptions {
        rollout_delay: Duration::from_millis(100),
        unready_images: vec!["img:bad".into()],
        ..SandboxOptions::default()
    }
}

/// Deploy `STALL`, wait for it, then roll out the image whose pods are never ready.
async fn stalled(env: &Env) {
    env.kubectl_stdin(&["apply", "-f", "-"], Some(STALL.into()))
        .await;
    env.ok(&["rollout", "status", "deploy/stall", "--timeout=30s"])
        .await;
    env.ok(&["set", "image", "deploy/stall", "app=img:bad"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_rollout_exceeds_its_progress_deadline() {
    common::bounded(stalled_rollout_exceeds_its_progress_deadline_body()).await;
}

async fn stalled_rollout_exceeds_its_progress_deadline_body() {
    let env = start(stalling()).await;
    stalled(&env).await;
    let out = env
        .kubectl(&["rollout", "status", "deploy/stall", "--timeout=30s"])
        .await;
    assert!(!out.ok, "{}", out.stdout);
    assert!(
        out.stderr
            .contains("error: deployment \"stall\" exceeded its progress deadline"),
        "{}",
        out.stderr
    );
    let (good, bad) = (
        rs_named(&env, "stall", "img:good").await,
        rs_named(&env, "stall", "img:bad").await,
    );
    let dep = env.json(&["get", "deploy", "stall"]).await;
    let p = condition(&dep, "Progressing");
    assert_eq!(p["status"], json!("False"), "{p}");
    assert_eq!(reason(&p), "ProgressDeadlineExceeded");
    assert_eq!(
        p["message"],
        json!(format!("ReplicaSet \"{bad}\" has timed out progressing."))
    );
    assert_eq!(p["lastUpdateTime"], p["lastTransitionTime"]);
    // maxSurge 1, maxUnavailable 1: one old pod went, two new ones never became ready.
    let av = condition(&dep, "Available");
    assert_eq!(
        (av["status"].clone(), reason(&av)),
        (json!("True"), "MinimumReplicasAvailable")
    );
    let st = &dep["status"];
    assert_eq!(
        (
            &st["replicas"],
            &st["updatedReplicas"],
            &st["availableReplicas"],
            &st["unavailableReplicas"]
        ),
        (&json!(5), &json!(2), &json!(3), &json!(2)),
        "{st}"
    );
    let rs_bad = env.json(&["get", "rs", &bad]).await;
    assert_eq!(rs_bad["spec"]["replicas"], json!(2));
    assert_eq!(rs_bad["status"]["replicas"], json!(2));
    assert!(rs_bad["status"].get("readyReplicas").is_none(), "{rs_bad}");
    let rs_good = env.json(&["get", "rs", &good]).await;
    assert_eq!(rs_good["spec"]["replicas"], json!(3));

    // Undo: progress again, then complete on the good ReplicaSet.
    env.ok(&["rollout", "undo", "deploy/stall"]).await;
    env.ok(&["rollout", "status", "deploy/stall", "--timeout=30s"])
        .await;
    let dep = env.json(&["get", "deploy", "stall"]).await;
    let p = condition(&dep, "Progressing");
    assert_eq!(p["status"], json!("True"), "{p}");
    assert_eq!(reason(&p), "NewReplicaSetAvailable");
    assert_eq!(
        p["message"],
        json!(format!(
            "ReplicaSet \"{good}\" has successfully progressed."
        ))
    );
    let rs_bad = env.json(&["get", "rs", &bad]).await;
    assert_eq!(rs_bad["spec"]["replicas"], json!(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_deployment_does_not_time_out() {
    common::bounded(paused_deployment_does_not_time_out_body()).await;
}

async fn paused_deployment_does_not_time_out_body() {
    let env = start(stalling()).await;
    stalled(&env).await;
    eventually(10, "the stalled rollout", || async {
        let dep = env.json(&["get", "deploy", "stall"]).await;
        (dep["status"]["updatedReplicas"] == json!(2)).then_some(())
    })
    .await;
    env.ok(&["rollout", "pause", "deploy/stall"]).await;
    let p = eventually(5, "the paused condition", || async {
        let dep = env.json(&["get", "deploy", "stall"]).await;
        let p = condition(&dep, "Progressing");
        (p["status"] == json!("Unknown")).then_some(p)
    })
    .await;
    assert_eq!(
        (p["status"].clone(), reason(&p), p["message"].clone()),
        (
            json!("Unknown"),
            "DeploymentPaused",
            json!("Deployment is paused")
        ),
        "{p}"
    );
    // Well past the 2 s deadline: still paused, not timed out.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let dep = env.json(&["get", "deploy", "stall"]).await;
    assert_eq!(reason(&condition(&dep, "Progressing")), "DeploymentPaused");

    // Resumed, the deadline counts from the resume, and then passes.
    env.ok(&["rollout", "resume", "deploy/stall"]).await;
    eventually(5, "the resumed condition", || async {
        let dep = env.json(&["get", "deploy", "stall"]).await;
        (reason(&condition(&dep, "Progressing")) != "DeploymentPaused").then_some(())
    })
    .await;
    let dep = env.json(&["get", "deploy", "stall"]).await;
    assert_eq!(reason(&condition(&dep, "Progressing")), "DeploymentResumed");
    let p = eventually(10, "the deadline after resume", || async {
        let dep = env.json(&["get", "deploy", "stall"]).await;
        let p = condition(&dep, "Progressing");
        (reason(&p) == "ProgressDeadlineExceeded").then_some(p)
    })
    .await;
    assert_eq!(p["status"], json!("False"));
}

/// The `ScalingReplicaSet` Event messages about Deployment `name`, oldest first.
async fn scaling_events(env: &Env, name: &str) -> Vec<String> {
    let sel = format!("involvedObject.name={name},reason=ScalingReplicaSet");
    let ev = env.json(&["get", "events", "--field-selector", &sel]).await;
    let mut items: Vec<(u64, String)> = ev["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap(),
                e["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    items.sort();
    items.into_iter().map(|(_, m)| m).collect()
}

fn deployment(name: &str, replicas: u32, strategy: &str, image: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  strategy: {{type: {strategy}}}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: app
        image: {image}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_within_surge_and_unavailability() {
    common::bounded(rolling_update_within_surge_and_unavailability_body()).await;
}

async fn rolling_update_within_surge_and_unavailability_body() {
    let env = start(SandboxOptions {
        rollout_delay: Duration::from_millis(300),
        ..SandboxOptions::default()
    })
    .await;
    let manifest = deployment("roll", 4, "RollingUpdate", "img:1");
    env.kubectl_stdin(&["apply", "-f", "-"], Some(manifest))
        .await;
    env.ok(&["rollout", "status", "deploy/roll", "--timeout=30s"])
        .await;
    let before = scaling_events(&env, "roll").await.len();
    env.ok(&["set", "image", "deploy/roll", "app=img:2"]).await;
    env.ok(&["rollout", "status", "deploy/roll", "--timeout=30s"])
        .await;
    let (old, new) = (
        rs_named(&env, "roll", "img:1").await,
        rs_named(&env, "roll", "img:2").await,
    );
    let events = scaling_events(&env, "roll").await.split_off(before);
    // maxSurge 1, maxUnavailable 1 of 4: one new pod, one old pod gone, a second new pod;
    // then an old pod goes for each new one available (rolling.go).
    assert_eq!(
        events[..3],
        [
            format!("Scaled up replica set {new} from 0 to 1"),
            format!("Scaled down replica set {old} from 4 to 3"),
            format!("Scaled up replica set {new} from 1 to 2"),
        ],
        "{events:?}"
    );
    let (mut o, mut n) = (4i64, 0i64);
    for e in &events {
        let to: i64 = e.rsplit(' ').next().unwrap().parse().unwrap();
        if e.contains(&new) {
            n = to;
        } else {
            o = to;
        }
        assert!(o + n <= 5, "over maxSurge: {events:?}");
    }
    assert_eq!((o, n), (0, 4), "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_scales_old_down_before_creating_new() {
    common::bounded(recreate_scales_old_down_before_creating_new_body()).await;
}

async fn recreate_scales_old_down_before_creating_new_body() {
    let env = start(SandboxOptions {
        rollout_delay: Duration::from_millis(200),
        ..SandboxOptions::default()
    })
    .await;
    let manifest = deployment("rec", 2, "Recreate", "img:1");
    env.kubectl_stdin(&["apply", "-f", "-"], Some(manifest))
        .await;
    env.ok(&["rollout", "status", "deploy/rec", "--timeout=30s"])
        .await;
    env.ok(&["set", "image", "deploy/rec", "app=img:2"]).await;
    env.ok(&["rollout", "status", "deploy/rec", "--timeout=30s"])
        .await;
    let (old, new) = (
        rs_named(&env, "rec", "img:1").await,
        rs_named(&env, "rec", "img:2").await,
    );
    assert_eq!(
        scaling_events(&env, "rec").await,
        [
            format!("Scaled up replica set {old} from 0 to 2"),
            format!("Scaled down replica set {old} from 2 to 0"),
            format!("Scaled up replica set {new} from 0 to 2"),
        ]
    );
    let dep = env.json(&["get", "deploy", "rec"]).await;
    assert_eq!(
        reason(&condition(&dep, "Progressing")),
        "NewReplicaSetAvailable"
    );
}
