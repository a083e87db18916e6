//! docs/quickstart.md, walked as a new user would, against the sandbox: create the tokens with
//! openssl, `check --offline` the shipped config, `kubectl apply -k` the layout and wait for
//! its rollout, then run the daemon on the shipped config (only the pod's paths replaced by
//! local files), read its dry-run decision through `incidents list/show` and the read API,
//! switch `mode` to `enforce` as the page says, and see the next alert roll back.

mod deploy;
#[path = "../crates/kube-sandbox/tests/common/mod.rs"]
mod sandbox_common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use deploy::{deploy_copy, kustomize, served_by_sandbox};
use sandbox_common::{bounded, eventually, fast};
use serde_json::{Value, json};

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rollbackd(args: &[&str], config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rollbackd"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("KUBECONFIG")
        .output()
        .expect("rollbackd runs")
}

fn stdout_of(args: &[&str], config: &Path) -> String {
    let out = rollbackd(args, config);
    assert!(
        out.status.success(),
        "rollbackd {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn serve(config: &Path) -> Daemon {
    let child = Command::new(env!("CARGO_BIN_EXE_rollbackd"))
        .args(["serve", "--config"])
        .arg(config)
        .env("ROLLBACKD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("rollbackd starts");
    Daemon(child)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `openssl rand -hex 32 > FILE`, as the quick start creates each token.
fn openssl_token(file: &Path) -> String {
    let out = Command::new("openssl")
        .args(["rand", "-hex", "32"])
        .output()
        .expect("openssl runs");
    assert!(out.status.success());
    std::fs::write(file, &out.stdout).expect("token written");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn alert(starts: &str) -> Value {
    json!({
        "version": "4", "status": "firing", "receiver": "rollbackd",
        "groupKey": "{}:{alertname=\"HighErrorRate\"}",
        "groupLabels": {"alertname": "HighErrorRate"}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093", "truncatedAlerts": 0,
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "HighErrorRate", "namespace": "default",
                       "deployment": "web", "severity": "critical"},
            "annotations": {"summary": "5xx above 5%"},
            "startsAt": starts, "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example:9090/graph", "fingerprint": "0123456789abcdef"
        }]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_from_dry_run_to_enforce() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    bounded(async {
        // 2. Install in dry-run: the tokens, the offline check, the apply, the rollout.
        let deploy = deploy_copy();
        let base = deploy.path().join("base");
        let webhook_token = openssl_token(&base.join("webhook-token"));
        let read_token = openssl_token(&base.join("read-token"));
        let shipped = base.join("rollbackd.toml");
        let report = stdout_of(&["check", "--offline"], &shipped);
        assert!(report.contains("policy:      dry-run"), "{report}");

        let env = sandbox_common::start(fast()).await;
        let rendered = kustomize(deploy.path());
        let served = served_by_sandbox(&rendered);
        let applied = env
            .kubectl_stdin(&["apply", "-f", "-"], Some(served.join("\n---\n")))
            .await;
        assert!(applied.ok, "{}{}", applied.stdout, applied.stderr);
        let status = env
            .ok(&[
                "-n",
                "rollbackd",
                "rollout",
                "status",
                "deployment/rollbackd",
                "--timeout=30s",
            ])
            .await;
        assert!(status.contains("successfully rolled out"), "{status}");
        // The Secret holds the token the file had, as the pod will read it.
        let secret = env.json(&["-n", "rollbackd", "get", "secrets"]).await;
        let names: Vec<&str> = secret["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["metadata"]["name"].as_str())
            .collect();
        assert!(
            names
                .iter()
                .any(|n| n.starts_with("rollbackd-webhook-token-")),
            "{names:?}"
        );

        // The shipped config, as the pod sees it, with the pod's paths replaced by local files.
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let local = env.dir.path().join("rollbackd.toml");
        let text = std::fs::read_to_string(&shipped)
            .unwrap()
            .replace("0.0.0.0:9095", &addr)
            .replace(
                "/etc/rollbackd/token",
                &base.join("webhook-token").display().to_string(),
            )
            .replace(
                "/etc/rollbackd/read-token",
                &base.join("read-token").display().to_string(),
            )
            .replace(
                "/var/lib/rollbackd/rollbackd.db",
                &env.dir.path().join("rollbackd.db").display().to_string(),
            )
            .replace(
                "[kubernetes]\n",
                &format!(
                    "[kubernetes]\nkubeconfig = {:?}\n",
                    env.kubeconfig.display().to_string()
                ),
            );
        std::fs::write(&local, &text).unwrap();
        stdout_of(&["check"], &local);

        // A workload with a bad rollout.
        env.ok(&["create", "deployment", "web", "--image=nginx:1.0"])
            .await;
        env.ok(&["rollout", "status", "deployment/web", "--timeout=30s"])
            .await;
        env.ok(&["set", "image", "deployment/web", "nginx=nginx:2.0"])
            .await;
        env.ok(&["rollout", "status", "deployment/web", "--timeout=30s"])
            .await;
        let image = || async {
            env.json(&["get", "deployment", "web"]).await["spec"]["template"]["spec"]["containers"]
                [0]["image"]
                .as_str()
                .unwrap()
                .to_string()
        };

        let http = reqwest::Client::new();
        let post = |token: &str, body: Value| {
            http.post(format!("http://{addr}/api/v1/alerts"))
                .bearer_auth(token)
                .json(&body)
                .timeout(Duration::from_secs(10))
                .send()
        };
        let ready = |daemon_addr: String| async move {
            eventually(20, "rollbackd /readyz", || {
                let url = format!("http://{daemon_addr}/readyz");
                async move {
                    match reqwest::get(&url).await {
                        Ok(r) if r.status().is_success() => Some(()),
                        _ => None,
                    }
                }
            })
            .await
        };

        // 4. Read the dry-run decisions.
        let daemon = serve(&local);
        ready(addr.clone()).await;
        assert_eq!(
            post(&read_token, alert(&jiff::Timestamp::now().to_string()))
                .await
                .unwrap()
                .status(),
            401,
            "the read token cannot post alerts"
        );
        assert_eq!(
            post(&webhook_token, alert(&jiff::Timestamp::now().to_string()))
                .await
                .unwrap()
                .status(),
            200
        );
        let list = eventually(20, "a dry-run decision", || async {
            let list = stdout_of(&["incidents", "list"], &local);
            list.contains("would-roll-back").then_some(list)
        })
        .await;
        assert!(list.contains("web"), "{list}");
        let show = stdout_of(&["incidents", "show", "1"], &local);
        assert!(show.contains("would-roll-back"), "{show}");
        let api: Value = http
            .get(format!("http://{addr}/api/v1/incidents?since=24h"))
            .bearer_auth(&read_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(api.to_string().contains("would-roll-back"), "{api}");
        assert_eq!(image().await, "nginx:2.0", "dry-run changes nothing");
        drop(daemon);

        // 5. Enforce: the mode line changed as the page says, the daemon restarted with it.
        let enforcing = text.replace("mode = \"dry-run\"", "mode = \"enforce\"");
        assert_ne!(
            enforcing, text,
            "the shipped config has the mode line the page names"
        );
        std::fs::write(&local, enforcing).unwrap();
        let _daemon = serve(&local);
        ready(addr.clone()).await;
        assert_eq!(
            post(&webhook_token, alert(&jiff::Timestamp::now().to_string()))
                .await
                .unwrap()
                .status(),
            200
        );
        eventually(20, "the undo", || async {
            (image().await == "nginx:1.0").then_some(())
        })
        .await;
        let list = stdout_of(&["incidents", "list"], &local);
        assert!(list.contains("rolled-back"), "{list}");
    })
    .await;
}
