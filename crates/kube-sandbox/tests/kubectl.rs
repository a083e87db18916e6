//! The real kubectl against the sandbox: rollouts, history, undo, apply, scale, annotate,
//! delete with garbage collection, and `get --watch` seeing another client's change.

mod common;

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use common::{fast, image, kube_client, revision, start};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rollout_history_and_undo() {
    common::bounded(kubectl_rollout_history_and_undo_body()).await;
}

async fn kubectl_rollout_history_and_undo_body() {
    let env = start(fast()).await;
    env.ok(&["create", "deployment", "web", "--image=nginx:1.0"])
        .await;
    env.ok(&["rollout", "status", "deployment/web", "--timeout=30s"])
        .await;
    for v in ["2.0", "3.0"] {
        env.ok(&[
            "set",
            "image",
            "deployment/web",
            &format!("nginx=nginx:{v}"),
        ])
        .await;
        let out = env
            .ok(&["rollout", "status", "deployment/web", "--timeout=30s"])
            .await;
        assert!(out.contains("successfully rolled out"), "{out}");
    }

    let history = env.ok(&["rollout", "history", "deployment/web"]).await;
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revisions, ["1", "2", "3"], "{history}");

    // Undo: back to revision 2's template; its ReplicaSet becomes revision 4.
    let rs_before = env.json(&["get", "rs"]).await;
    let rs2_name = rs_before["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|rs| revision(rs) == "2")
        .unwrap()["metadata"]["name"]
        .clone();
    env.ok(&["rollout", "undo", "deployment/web"]).await;
    env.ok(&["rollout", "status", "deployment/web", "--timeout=30s"])
        .await;
    let dep = env.json(&["get", "deployment", "web"]).await;
    assert_eq!(image(&dep), "nginx:2.0");
    assert_eq!(revision(&dep), "4");
    let rs2 = env.json(&["get", "rs", rs2_name.as_str().unwrap()]).await;
    assert_eq!(revision(&rs2), "4");
    assert_eq!(
        rs2.pointer("/metadata/annotations/deployment.kubernetes.io~1revision-history"),
        Some(&json!("2"))
    );
    assert_eq!(rs2["spec"]["replicas"], json!(1));
    let all = env.json(&["get", "rs"]).await;
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        3,
        "a rollback reuses the old ReplicaSet"
    );

    env.ok(&["rollout", "undo", "deployment/web", "--to-revision=1"])
        .await;
    env.ok(&["rollout", "status", "deployment/web", "--timeout=30s"])
        .await;
    let dep = env.json(&["get", "deployment", "web"]).await;
    assert_eq!(image(&dep), "nginx:1.0");
    assert_eq!(revision(&dep), "5");
    assert_eq!(
        dep["status"]["observedGeneration"],
        dep["metadata"]["generation"]
    );

    // Owner references, as kubectl rollout undo relies on them.
    let uid = dep["metadata"]["uid"].clone();
    let all = env.json(&["get", "rs"]).await;
    for rs in all["items"].as_array().unwrap() {
        let owner = &rs["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], json!("Deployment"));
        assert_eq!(owner["name"], json!("web"));
        assert_eq!(owner["uid"], uid);
        assert_eq!(owner["controller"], json!(true));
        assert_eq!(owner["blockOwnerDeletion"], json!(true));
        let hash = rs["metadata"]["labels"]["pod-template-hash"]
            .as_str()
            .unwrap();
        assert!(rs["metadata"]["name"].as_str().unwrap().ends_with(hash));
    }
    // Only the revision-1 ReplicaSet has replicas now.
    let active: Vec<&Value> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|rs| rs["spec"]["replicas"] != json!(0))
        .collect();
    assert_eq!(active.len(), 1);
    assert_eq!(image(active[0]), "nginx:1.0");

    // The table kubectl prints comes from the server.
    let table = env.ok(&["get", "deployments"]).await;
    assert!(table.contains("READY") && table.contains("1/1"), "{table}");
}

const MANIFEST: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  labels: {app: api}
spec:
  replicas: 2
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: api}
    spec:
      containers:
      - name: api
        image: api:1.0
        ports:
        - containerPort: 8080
        env:
        - {name: MODE, value: blue}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_scale_annotate_delete() {
    common::bounded(kubectl_apply_scale_annotate_delete_body()).await;
}

async fn kubectl_apply_scale_annotate_delete_body() {
    let env = start(fast()).await;
    let out = env
        .kubectl_stdin(&["apply", "-f", "-"], Some(MANIFEST.to_string()))
        .await;
    assert!(
        out.ok && out.stdout.contains("created"),
        "{} {}",
        out.stdout,
        out.stderr
    );
    let changed = MANIFEST
        .replace("api:1.0", "api:1.1")
        .replace("blue", "green");
    let out = env
        .kubectl_stdin(&["apply", "-f", "-"], Some(changed))
        .await;
    assert!(
        out.ok && out.stdout.contains("configured"),
        "{} {}",
        out.stdout,
        out.stderr
    );
    env.ok(&["rollout", "status", "deployment/api", "--timeout=30s"])
        .await;
    let dep = env.json(&["get", "deployment", "api"]).await;
    assert_eq!(image(&dep), "api:1.1");
    assert_eq!(
        dep.pointer("/spec/template/spec/containers/0/env/0/value"),
        Some(&json!("green"))
    );
    assert_eq!(
        dep.pointer("/spec/template/spec/containers/0/ports/0/containerPort"),
        Some(&json!(8080))
    );
    assert!(
        dep.pointer("/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration")
            .is_some()
    );

    env.ok(&["scale", "deployment/api", "--replicas=3"]).await;
    env.ok(&["annotate", "deployment/api", "team=core"]).await;
    env.ok(&["rollout", "status", "deployment/api", "--timeout=30s"])
        .await;
    let dep = env.json(&["get", "deployment", "api"]).await;
    assert_eq!(dep["spec"]["replicas"], json!(3));
    assert_eq!(dep["status"]["availableReplicas"], json!(3));
    assert_eq!(dep["metadata"]["annotations"]["team"], json!("core"));
    // Annotations are copied to the current ReplicaSet, never the skip-listed ones.
    let rs = env.json(&["get", "rs", "-l", "app=api"]).await;
    let items = rs["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let current = items
        .iter()
        .find(|r| r["spec"]["replicas"] == json!(3))
        .unwrap();
    assert_eq!(current["metadata"]["annotations"]["team"], json!("core"));
    assert!(
        current
            .pointer("/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration")
            .is_none()
    );

    let out = env.ok(&["delete", "deployment", "api"]).await;
    assert!(out.contains("deleted"), "{out}");
    let rs = env.json(&["get", "rs", "-l", "app=api"]).await;
    assert_eq!(
        rs["items"],
        json!([]),
        "owned ReplicaSets are garbage-collected"
    );
    let out = env.kubectl(&["get", "deployment", "api"]).await;
    assert!(!out.ok && out.stderr.contains("NotFound"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_watch_streams_another_clients_change() {
    common::bounded(kubectl_get_watch_streams_another_clients_change_body()).await;
}

async fn kubectl_get_watch_streams_another_clients_change_body() {
    let env = start(fast()).await;
    env.ok(&["create", "deployment", "web", "--image=nginx:1.0"])
        .await;
    env.ok(&["rollout", "status", "deployment/web", "--timeout=30s"])
        .await;

    let mut child = env
        .kubectl_cmd(&["get", "deployments", "--watch", "--request-timeout=20s"])
        .spawn()
        .expect("kubectl watch");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let wait_for = |pred: &dyn Fn(&str) -> bool, lines: &mut Vec<String>| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
                let hit = pred(&l);
                lines.push(l);
                if hit {
                    return true;
                }
            }
        }
        false
    };
    assert!(
        wait_for(&|l| l.starts_with("web") && l.contains("1/1"), &mut lines),
        "initial row: {lines:?}"
    );

    // Another client (kube-rs) scales the Deployment; the watching kubectl prints the change.
    let client = kube_client(&env.sb).await;
    let api: Api<Deployment> = Api::namespaced(client, "default");
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 2}})),
    )
    .await
    .unwrap();
    let seen = wait_for(&|l| l.starts_with("web") && l.contains("2/2"), &mut lines);
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    assert!(seen, "kubectl get --watch printed: {lines:?}");
    assert!(lines[0].starts_with("NAME"), "header first: {lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_pause_history_limit_and_events() {
    common::bounded(kubectl_pause_history_limit_and_events_body()).await;
}

async fn kubectl_pause_history_limit_and_events_body() {
    let env = start(fast()).await;
    env.ok(&["create", "deployment", "web", "--image=nginx:1.0"])
        .await;
    env.ok(&["rollout", "status", "deployment/web", "--timeout=30s"])
        .await;
    env.ok(&[
        "patch",
        "deployment/web",
        "-p",
        r#"{"spec":{"revisionHistoryLimit":1}}"#,
    ])
    .await;

    // Paused: a template change makes no ReplicaSet; undo is refused as on a cluster.
    env.ok(&["rollout", "pause", "deployment/web"]).await;
    env.ok(&["set", "image", "deployment/web", "nginx=nginx:2.0"])
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        env.json(&["get", "rs"]).await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let out = env.kubectl(&["rollout", "undo", "deployment/web"]).await;
    assert!(
        !out.ok,
        "undo of a paused deployment with one revision fails: {}",
        out.stdout
    );
    env.ok(&["rollout", "resume", "deployment/web"]).await;
    env.ok(&["rollout", "status", "deployment/web", "--timeout=30s"])
        .await;
    env.ok(&["set", "image", "deployment/web", "nginx=nginx:3.0"])
        .await;
    env.ok(&["rollout", "status", "deployment/web", "--timeout=30s"])
        .await;

    // revisionHistoryLimit 1: the current ReplicaSet and one old one remain.
    let rs = env.json(&["get", "rs"]).await;
    let mut revs: Vec<&str> = rs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(revision)
        .collect();
    revs.sort();
    assert_eq!(revs, ["2", "3"]);

    // Going back to the current template is a no-op for kubectl.
    let out = env
        .ok(&["rollout", "undo", "deployment/web", "--to-revision=3"])
        .await;
    assert!(out.contains("skipped rollback"), "{out}");

    // The controller's scaling shows up in describe, like on a cluster.
    let described = env.ok(&["describe", "deployment", "web"]).await;
    assert!(
        described.contains("ScalingReplicaSet") && described.contains("Scaled down replica set"),
        "{described}"
    );
    assert!(described.contains("NewReplicaSetAvailable"), "{described}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_reads_a_list_in_chunks() {
    common::bounded(kubectl_get_reads_a_list_in_chunks_body()).await;
}

/// `kubectl get` asks for 500 at a time (`--chunk-size`) and follows `continue`: with a chunk
/// of 2, seven ConfigMaps in two namespaces take four requests and come out once each, in
/// order, under one header.
async fn kubectl_get_reads_a_list_in_chunks_body() {
    let env = start(fast()).await;
    env.ok(&["create", "namespace", "a-b"]).await;
    for (ns, name) in [
        ("default", "c0"),
        ("default", "c1"),
        ("default", "c2"),
        ("a-b", "c3"),
        ("a-b", "c4"),
        ("a-b", "c5"),
        ("a-b", "c6"),
    ] {
        env.ok(&["create", "configmap", name, "-n", ns]).await;
    }
    env.sb.clear_requests();
    let out = env
        .ok(&["get", "configmaps", "-A", "--chunk-size=2", "--no-headers"])
        .await;
    let names: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|n| n.starts_with('c') && n.len() == 2)
        .collect();
    assert_eq!(names, ["c3", "c4", "c5", "c6", "c0", "c1", "c2"], "{out}");
    let lists: Vec<String> = env
        .sb
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path_only() == "/api/v1/configmaps")
        .map(|r| r.path)
        .collect();
    let all = out.lines().count();
    assert_eq!(lists.len(), all.div_ceil(2), "{lists:#?}");
    assert!(lists.iter().all(|p| p.contains("limit=2")), "{lists:#?}");
    assert!(
        lists.iter().skip(1).all(|p| p.contains("continue=")),
        "{lists:#?}"
    );

    let out = env
        .ok(&["get", "configmaps", "-A", "--chunk-size=2", "-o", "name"])
        .await;
    assert_eq!(out.lines().count(), all, "{out}");
}
