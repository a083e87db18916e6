//! An API-server restart: a sandbox with a state directory, stopped and started again on the
//! same port and directory, is the same cluster. The kubeconfig written before the restart
//! still works with kubectl (same CA, same token), objects keep their uids,
//! creationTimestamps and resourceVersions, new resourceVersions are higher, a kube-rs
//! watcher reconnects on its own, a watch from before the restart gets 410 Expired while one
//! from the restored resourceVersion goes on, a damaged state file is a clear error, and the
//! `kube-sandbox` binary killed with SIGKILL in the middle of writes comes back with every
//! write it acknowledged.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, eventually, fast, image, kube_client, revision};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube_sandbox::{Sandbox, SandboxOptions};
use serde_json::{Value, json};

fn rv(o: &Value) -> u64 {
    o.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .expect("a numeric resourceVersion")
}

fn opts(state: &Path) -> SandboxOptions {
    SandboxOptions {
        state_dir: Some(state.to_path_buf()),
        ..fast()
    }
}

/// Stop the sandbox and start a new one on the same address and state directory, keeping the
/// kubeconfig file written for the first one.
async fn restart(env: Env, state: &Path) -> Env {
    let Env {
        sb,
        dir,
        kubeconfig,
    } = env;
    let addr = sb.addr();
    sb.shutdown().await;
    let sb = Sandbox::start(SandboxOptions {
        listen: addr,
        ..opts(state)
    })
    .await
    .expect("sandbox starts again on its state");
    let written = std::fs::read_to_string(&kubeconfig).expect("kubeconfig");
    assert_eq!(
        sb.kubeconfig_yaml(),
        written,
        "same URL, CA and token after the restart"
    );
    Env {
        sb,
        dir,
        kubeconfig,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_keeps_working_across_a_restart() {
    common::bounded(kubectl_keeps_working_across_a_restart_body()).await;
}

async fn kubectl_keeps_working_across_a_restart_body() {
    let state = tempfile::tempdir().expect("state dir");
    let env = common::start(opts(state.path())).await;
    env.ok(&["create", "deployment", "web", "--image=nginx:1.0"])
        .await;
    env.ok(&["rollout", "status", "deployment/web", "--timeout=30s"])
        .await;
    env.ok(&["set", "image", "deployment/web", "nginx=nginx:2.0"])
        .await;
    env.ok(&["rollout", "status", "deployment/web", "--timeout=30s"])
        .await;
    env.ok(&["create", "configmap", "settings", "--from-literal=a=1"])
        .await;
    let before = env.json(&["get", "deployment", "web"]).await;
    let rs_before = env.json(&["get", "rs"]).await;
    let cm_before = env.json(&["get", "configmap", "settings"]).await;
    let ns_before = env.json(&["get", "namespace", "default"]).await;
    let raw_list = [
        "get",
        "--raw",
        "/apis/apps/v1/namespaces/default/replicasets",
    ];
    let list_rv_before = rv(&serde_json::from_str(&env.ok(&raw_list).await).expect("JSON"));

    let env = restart(env, state.path()).await;

    // The same objects, unchanged: uid, creationTimestamp, resourceVersion, annotations.
    let after = env.json(&["get", "deployment", "web"]).await;
    for field in ["uid", "creationTimestamp", "resourceVersion", "generation"] {
        assert_eq!(
            after["metadata"][field], before["metadata"][field],
            "deployment {field}"
        );
    }
    assert_eq!(after["status"], before["status"]);
    assert_eq!(revision(&after), "2");
    let cm_after = env.json(&["get", "configmap", "settings"]).await;
    assert_eq!(cm_after, cm_before);
    let ns_after = env.json(&["get", "namespace", "default"]).await;
    assert_eq!(ns_after["metadata"]["uid"], ns_before["metadata"]["uid"]);
    let rs_after = env.json(&["get", "rs"]).await;
    assert_eq!(rs_after["items"], rs_before["items"]);
    let list_rv_after = rv(&serde_json::from_str(&env.ok(&raw_list).await).expect("JSON"));
    assert!(
        list_rv_after >= list_rv_before,
        "the list resourceVersion does not go back"
    );

    // History and undo work on what was kept; new resourceVersions are higher than any old.
    let history = env.ok(&["rollout", "history", "deployment/web"]).await;
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
    env.ok(&["rollout", "undo", "deployment/web"]).await;
    env.ok(&["rollout", "status", "deployment/web", "--timeout=30s"])
        .await;
    let undone = env.json(&["get", "deployment", "web"]).await;
    assert_eq!(image(&undone), "nginx:1.0");
    assert_eq!(revision(&undone), "3");
    assert_eq!(undone["metadata"]["uid"], before["metadata"]["uid"]);
    let old_max = rs_before["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(rv)
        .chain([rv(&before), rv(&cm_before), list_rv_before])
        .max()
        .expect("some");
    assert!(
        rv(&undone) > old_max,
        "new resourceVersion {} above every old one ({old_max})",
        rv(&undone)
    );
    env.ok(&["create", "configmap", "later"]).await;
    let later = env.json(&["get", "configmap", "later"]).await;
    assert!(rv(&later) > rv(&undone));

    // A second restart keeps what the first sandbox's successor wrote.
    let env = restart(env, state.path()).await;
    let again = env.json(&["get", "deployment", "web"]).await;
    assert_eq!(revision(&again), "3");
    assert_eq!(image(&again), "nginx:1.0");
    env.ok(&["get", "configmap", "later"]).await;
    env.sb.shutdown().await;
}

/// Wait (at most 30 s) until the watcher has seen an object named `name`.
async fn wait_for(seen: &mut tokio::sync::mpsc::UnboundedReceiver<String>, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, seen.recv()).await {
            Ok(Some(n)) if n == name => return,
            Ok(Some(_)) => {}
            Ok(None) => panic!("watcher ended"),
            Err(_) => panic!("watcher did not see {name} within 30s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_across_a_restart() {
    common::bounded(watches_across_a_restart_body()).await;
}

async fn watches_across_a_restart_body() {
    let state = tempfile::tempdir().expect("state dir");
    let env = common::start(opts(state.path())).await;
    let client = kube_client(&env.sb).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let cm = |name: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("configmap")
    };

    // A kube-rs watcher started before the restart (with the backoff every watcher user
    // needs: without one it retries in a tight loop while the server is down).
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<String>();
    let watching = tokio::spawn({
        let cms = cms.clone();
        async move {
            let mut events = watcher(cms, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(ev) = events.next().await {
                if let Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) = ev
                    && seen_tx.send(o.metadata.name.unwrap_or_default()).is_err()
                {
                    return;
                }
            }
        }
    });
    let created = cms
        .create(&PostParams::default(), &cm("before"))
        .await
        .expect("created");
    let old_rv: u64 = created
        .metadata
        .resource_version
        .as_deref()
        .and_then(|s| s.parse().ok())
        .expect("rv");
    wait_for(&mut seen, "before").await;
    // A later change, so the watcher's last resourceVersion is behind the restored one.
    cms.create(&PostParams::default(), &cm("last-before"))
        .await
        .expect("created");
    wait_for(&mut seen, "last-before").await;

    let env = restart(env, state.path()).await;
    let http = common::http(&env.sb);
    let list: Value = http
        .get(format!(
            "{}/api/v1/namespaces/default/configmaps",
            env.sb.url()
        ))
        .bearer_auth(env.sb.token())
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("list JSON");
    let restored_rv = rv(&list);
    assert!(restored_rv > old_rv);

    // Raw watches: from before the restart, 410 as from a compacted revision; from the
    // restored revision, the events after it.
    let watch_line = |from: u64| {
        let http = http.clone();
        let url = format!(
            "{}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={from}&timeoutSeconds=5",
            env.sb.url()
        );
        let token = env.sb.token().to_string();
        async move {
            let mut resp = http
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("watch answers");
            assert_eq!(resp.status(), 200);
            let chunk = resp.chunk().await.expect("chunk").expect("a first event");
            serde_json::from_slice::<Value>(&chunk).expect("one JSON event")
        }
    };
    let expired = watch_line(old_rv).await;
    assert_eq!(expired["type"], json!("ERROR"), "{expired}");
    assert_eq!(expired["object"]["code"], json!(410));
    assert_eq!(expired["object"]["reason"], json!("Expired"));
    assert_eq!(
        expired["object"]["message"],
        json!(format!(
            "too old resource version: {old_rv} ({restored_rv})"
        ))
    );
    let current = tokio::spawn(watch_line(restored_rv));
    // The watcher reconnects (relisting after its 410) and sees a change made after the
    // restart; so does the raw watch from the restored revision.
    // The first request may go out on a pooled connection the old server closed, as to any
    // restarted API server: ask again (a create that did land answers 409 the next time).
    eventually(10, "a create after the restart", || {
        let cms = cms.clone();
        let after = cm("after");
        async move {
            match cms.create(&PostParams::default(), &after).await {
                Ok(_) => Some(()),
                Err(kube::Error::Api(s)) if s.code == 409 => Some(()),
                Err(_) => None,
            }
        }
    })
    .await;
    wait_for(&mut seen, "after").await;
    let ev = current.await.expect("raw watch");
    assert_eq!(ev["type"], json!("ADDED"), "{ev}");
    assert_eq!(ev["object"]["metadata"]["name"], json!("after"));
    assert!(rv(&ev["object"]) > restored_rv);
    watching.abort();
    env.sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_state_is_a_clear_error() {
    common::bounded(damaged_state_is_a_clear_error_body()).await;
}

async fn damaged_state_is_a_clear_error_body() {
    let state = tempfile::tempdir().expect("state dir");
    let env = common::start(opts(state.path())).await;
    env.ok(&["create", "configmap", "settings"]).await;

    // While it runs, the directory is locked.
    let err = Sandbox::start(opts(state.path()))
        .await
        .err()
        .expect("a second sandbox on the same directory is refused");
    assert!(err.to_string().contains("in use"), "{err}");
    env.sb.shutdown().await;

    // A token other than the kept one.
    let err = Sandbox::start(SandboxOptions {
        token: Some("another".into()),
        ..opts(state.path())
    })
    .await
    .err()
    .expect("a different token is refused");
    assert!(err.to_string().contains("token"), "{err}");

    // A truncated objects file: an error naming it, never an empty cluster.
    let file = state.path().join("objects.json");
    let text = std::fs::read(&file).expect("objects.json exists");
    std::fs::write(&file, &text[..text.len() / 2]).expect("truncated");
    let err = Sandbox::start(opts(state.path()))
        .await
        .err()
        .expect("a damaged state file is refused");
    let msg = err.to_string();
    assert!(
        msg.contains("objects.json") && msg.contains("unreadable"),
        "{msg}"
    );
    std::fs::write(&file, &text).expect("restored");
    let sb = Sandbox::start(opts(state.path()))
        .await
        .expect("starts again once the file is whole");
    assert!(
        sb.get_object("v1", "configmaps", Some("default"), "settings")
            .is_some()
    );
    sb.shutdown().await;
}

/// A `kube-sandbox` process.
struct Process {
    child: Child,
    kubeconfig: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_binary(port: u16, state: &Path, kubeconfig: &Path) -> Process {
    let _ = std::fs::remove_file(kubeconfig);
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-sandbox"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--state-dir")
        .arg(state)
        .args(["--rollout-delay", "100ms"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kube-sandbox runs");
    // It says so on stderr once the kubeconfig is written.
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let started = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.contains("kubeconfig written") => break,
            Ok(_) => {}
            Err(e) => panic!("kube-sandbox did not start: {e}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "start timed out"
        );
    }
    Process {
        child,
        kubeconfig: kubeconfig.to_path_buf(),
    }
}

/// Run kubectl with `kubeconfig` to completion (at most 60 s); returns stdout.
async fn kubectl_at(kubeconfig: &Path, cache: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let line = args.join(" ");
    tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().expect("kubectl runs");
        let started = Instant::now();
        while child.try_wait().expect("wait").is_none() {
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("kubectl {line} took over 60s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let o = child.wait_with_output().expect("output");
        assert!(
            o.status.success(),
            "kubectl {line} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    })
    .await
    .expect("kubectl thread")
}

/// An HTTPS client for the process, from what the state directory keeps.
fn client_from_state(state: &Path) -> (reqwest::Client, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = std::fs::read(state.join("ca.crt")).expect("ca.crt kept");
    let token = std::fs::read_to_string(state.join("token")).expect("token kept");
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).expect("CA parses")])
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    (http, token.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_keeps_acknowledged_writes_across_kill_9() {
    common::bounded(the_binary_keeps_acknowledged_writes_across_kill_9_body()).await;
}

async fn the_binary_keeps_acknowledged_writes_across_kill_9_body() {
    let state = tempfile::tempdir().expect("state dir");
    let work = tempfile::tempdir().expect("work dir");
    let kubeconfig = work.path().join("kubeconfig");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut process = spawn_binary(port, state.path(), &kubeconfig);
    let first_kubeconfig = std::fs::read_to_string(&process.kubeconfig).expect("kubeconfig");
    let (http, token) = client_from_state(state.path());
    let url = format!("https://127.0.0.1:{port}/api/v1/namespaces/default/configmaps");

    // Writes go on while the process is killed: every acknowledged one must survive.
    let writer = tokio::spawn({
        let (http, token, url) = (http.clone(), token.clone(), url.clone());
        async move {
            let mut acknowledged = Vec::new();
            for i in 0.. {
                let body =
                    json!({"metadata": {"name": format!("cm-{i}")}, "data": {"i": i.to_string()}});
                match http.post(&url).bearer_auth(&token).json(&body).send().await {
                    Ok(r) if r.status() == 201 => {
                        let o: Value = r.json().await.expect("created object");
                        acknowledged.push(o);
                    }
                    _ => return acknowledged,
                }
            }
            acknowledged
        }
    });
    eventually(30, "some acknowledged writes", || {
        let (http, token, url) = (http.clone(), token.clone(), url.clone());
        async move {
            let list: Value = http
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (list["items"].as_array()?.len() >= 20).then_some(())
        }
    })
    .await;
    process.child.kill().expect("SIGKILL");
    process.child.wait().expect("reaped");
    let acknowledged = tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .expect("the writer stops once the server is gone")
        .expect("writer");
    assert!(acknowledged.len() >= 20);
    drop(process);

    let process = spawn_binary(port, state.path(), &kubeconfig);
    assert_eq!(
        std::fs::read_to_string(&process.kubeconfig).expect("kubeconfig"),
        first_kubeconfig,
        "the same kubeconfig after the restart"
    );
    let list: Value = http
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("the old client reconnects")
        .json()
        .await
        .expect("a list");
    let items = list["items"].as_array().expect("items");
    for o in &acknowledged {
        let name = &o["metadata"]["name"];
        let kept = items
            .iter()
            .find(|i| i["metadata"]["name"] == *name)
            .unwrap_or_else(|| panic!("acknowledged {name} lost"));
        assert_eq!(kept, o, "kept as acknowledged");
    }
    let max_rv = items.iter().map(rv).max().expect("some");
    let created: Value = http
        .post(&url)
        .bearer_auth(&token)
        .json(&json!({"metadata": {"name": "after-restart"}}))
        .send()
        .await
        .expect("create after restart")
        .json()
        .await
        .expect("object");
    assert!(rv(&created) > max_rv, "resourceVersions are not reused");
    // kubectl with the kubeconfig written before the kill.
    let cache = work.path().join("cache");
    let out = kubectl_at(
        &kubeconfig,
        &cache,
        &["get", "configmap", "cm-0", "-o", "json"],
    )
    .await;
    let cm0: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(cm0, acknowledged[0]);
    drop(process);
}
