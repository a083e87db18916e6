//! The `rollbackd` binary against the sandbox: one alert, one undo equal to kubectl's; the same
//! alert five more times, still one; a killed and restarted daemon keeps its incidents and does
//! not roll back again.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use jiff::Timestamp;

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(config: &std::path::Path) -> Daemon {
    let child = Command::new(binary())
        .args(["serve", "--config"])
        .arg(config)
        .env("ROLLBACKD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("rollbackd starts");
    Daemon(child)
}

async fn wait_ready(addr: &str) {
    let url = format!("http://{addr}/readyz");
    wait_until("rollbackd /readyz", Duration::from_secs(20), || {
        let url = url.clone();
        async move { matches!(reqwest::get(&url).await, Ok(r) if r.status().is_success()) }
    })
    .await;
}

fn incidents(config: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(binary())
        .arg("incidents")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("rollbackd incidents runs");
    assert!(
        out.status.success(),
        "incidents {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_alert_one_undo_duplicates_and_restart() {
    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    let addr = format!("127.0.0.1:{}", free_port());
    let config = env.config_file(&addr, "");
    let daemon = spawn(&config);
    wait_ready(&addr).await;
    env.sandbox.clear_requests();

    let payload = scenario::alertmanager_payload(
        &[
            ("alertname", "HighErrorRate"),
            ("namespace", "default"),
            ("deployment", "web"),
        ],
        Timestamp::now(),
    );
    let (status, body) = post_alert(&addr, &payload).await;
    assert_eq!(status, 200, "{body}");

    // Within 2 s: exactly one JSON patch on deployments/web, and the template is revision 2's.
    wait_until(
        "one JSON patch on deployments/web",
        Duration::from_secs(2),
        || {
            let n = env.json_patches("web").len();
            async move { n == 1 }
        },
    )
    .await;
    let patch: serde_json::Value =
        serde_json::from_str(&env.json_patches("web")[0].body).expect("patch is JSON");
    assert_eq!(
        patch[0]["op"], "test",
        "the undo carries a resourceVersion precondition"
    );
    assert_eq!(patch[1]["path"], "/spec/template");
    assert_eq!(patch[2]["path"], "/metadata/annotations");
    let web = scenario::wait_rolled_out(&env.api, "web", "4", Duration::from_secs(10))
        .await
        .expect("rolled back to revision 2's template, now revision 4");
    assert_eq!(image_of(&web), "nginx:2.0");

    // The same payload five more times: still exactly one patch.
    for _ in 0..5 {
        let (status, body) = post_alert(&addr, &payload).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["duplicates"], 1);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        env.json_patches("web").len(),
        1,
        "duplicates must not cause a second undo"
    );

    let list = incidents(&config, &["list", "--format", "json"]);
    let list: serde_json::Value = serde_json::from_str(&list).expect("json list");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["outcome"], "rolled-back");
    let id = list[0]["id"].as_i64().expect("id").to_string();
    let shown = incidents(&config, &["show", &id]);
    for expected in [
        "received",
        "correlated",
        "decision",
        "action",
        "result",
        "rolled back deployment default/web",
    ] {
        assert!(
            shown.contains(expected),
            "timeline lacks {expected:?}:\n{shown}"
        );
    }
    let md = incidents(&config, &["show", &id, "--format", "md"]);
    assert!(md.starts_with(&format!("# Incident {id}")), "{md}");

    // An online backup while the daemon runs: checked, readable, and never over a file.
    let copy = env.dir.path().join("backup.db");
    let copy_arg = copy.display().to_string();
    let said = incidents(&config, &["backup", "--to", &copy_arg]);
    assert!(
        said.contains("1 incidents") && said.contains("integrity ok"),
        "{said}"
    );
    let copy_config = env.dir.path().join("backup.toml");
    std::fs::write(
        &copy_config,
        format!("[store]\nurl = \"sqlite://{}\"\n", copy.display()),
    )
    .expect("config written");
    let restored = incidents(&copy_config, &["show", &id]);
    assert_eq!(restored, shown, "the copy holds the same incident");
    let before = std::fs::read(&copy).expect("copy");
    let again = Command::new(binary())
        .args(["incidents", "backup", "--to", &copy_arg, "--config"])
        .arg(&config)
        .output()
        .expect("runs");
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("exists already"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        std::fs::read(&copy).expect("copy"),
        before,
        "left untouched"
    );

    // Kill it and restart on the same SQLite file.
    drop(daemon);
    let _daemon = spawn(&config);
    wait_ready(&addr).await;
    let again = incidents(&config, &["list", "--format", "json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&again).expect("json"),
        list
    );
    let (status, body) = post_alert(&addr, &payload).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["duplicates"], 1,
        "the restarted daemon remembers the alert"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        env.json_patches("web").len(),
        1,
        "no second undo after a restart"
    );
}

#[test]
fn check_reports_every_problem_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"nowhere\"\nshiny = true\n[policy]\nmode = \"maybe\"\n",
    )
    .expect("write");
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["server.listen", "server.shiny", "policy.mode"] {
        assert!(err.contains(key), "{key} missing from:\n{err}");
    }

    let token = dir.path().join("token");
    std::fs::write(&token, "very-secret-token").expect("write");
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!("[server]\ntoken_file = {:?}\n", token.display().to_string()),
    )
    .expect("write");
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("deployments and replicasets in all namespaces"),
        "{report}"
    );
    for kind in ["rollout", "service", "virtualservice"] {
        assert!(
            report.contains(&format!("             {kind} from [")),
            "check lists the {kind} labels: {report}"
        );
    }
    assert!(
        !report.contains("very-secret-token"),
        "check must not print secrets"
    );

    // With the shipped rules, check shows HighErrorRate's post-rollout form.
    let polling = dir.path().join("polling.toml");
    std::fs::write(
        &polling,
        format!(
            "[prometheus]\nurl = \"http://127.0.0.1:9090\"\nrules = [{:?}]\n",
            concat!(env!("CARGO_MANIFEST_DIR"), "/rules/*.yml")
        ),
    )
    .expect("write");
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(&polling)
        .output()
        .expect("runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("rollbackd-http/HighErrorRate (for 5m)")
            && report.contains("    post-rollout form (for 15m after a rollout): above 0.01 for 45s, more than 2x the 1h before, at least 100 traffic"),
        "{report}"
    );

    // The shipped in-cluster config is valid (its token files are mounted in the cluster).
    let read_token = dir.path().join("read-token");
    std::fs::write(&read_token, "another-secret-token").expect("write");
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/kubernetes/base/rollbackd.toml");
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(&shipped)
        .env("ROLLBACKD__SERVER__TOKEN_FILE", &token)
        .env("ROLLBACKD__SERVER__READ_TOKEN_FILE", &read_token)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("dry-run"));
}

#[test]
fn the_sandbox_command_serves_kubectl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    let _sandbox = Daemon(
        Command::new(binary())
            .args(["sandbox", "--listen", "127.0.0.1:0", "--kubeconfig"])
            .arg(&kubeconfig)
            .env("ROLLBACKD_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("rollbackd sandbox starts"),
    );
    let started = std::time::Instant::now();
    while !kubeconfig.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no kubeconfig written"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "get",
            "namespace",
            "default",
            "-o",
            "jsonpath={.metadata.name}",
        ])
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "default");
}

/// The command-line papercuts of issue 16: `incidents list` reads only the store, JSON logs put
/// `message` at the top level (the fatal error included), and a pipe gets no colour codes.
#[test]
fn logs_and_incidents_work_off_the_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("r.db");
    // A store exists; the kubeconfig (and a token file) exist only in the cluster.
    let config = dir.path().join("rollbackd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ntoken_file = \"/nonexistent/token\"\n[kubernetes]\nkubeconfig = \"/nonexistent/kubeconfig\"\n[store]\nurl = \"sqlite://{}?mode=rwc\"\n",
            db.display()
        ),
    )
    .expect("write");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        rollbackd::store::Store::open(&format!("sqlite://{}?mode=rwc", db.display()))
            .await
            .expect("store")
    });
    let out = Command::new(binary())
        .args(["incidents", "list", "--config"])
        .arg(&config)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // serve: warnings, then a fatal error (no kubeconfig), all one JSON object a line.
    let empty = dir.path().join("empty.toml");
    std::fs::write(
        &empty,
        format!(
            "# nothing but the store\n[store]\nurl = \"sqlite://{}?mode=rwc\"\n[kubernetes]\nkubeconfig = \"{}\"\n",
            db.display(),
            dir.path().join("kc").display()
        ),
    )
    .expect("write");
    std::fs::write(dir.path().join("kc"), "not: a kubeconfig\n").expect("write");
    let out = Command::new(binary())
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&empty)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.contains("has no token"))),
        "{stderr}"
    );
    let last = lines.last().expect("a line");
    assert_eq!(last["level"], "ERROR", "{stderr}");
    assert!(last["message"].as_str().is_some(), "{stderr}");

    let out = Command::new(binary())
        .args(["serve", "--config"])
        .arg(&empty)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has no token"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe: {stderr:?}"
    );
}
