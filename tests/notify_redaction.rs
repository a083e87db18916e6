//! No secret (Slack webhook URL, bot token, SMTP password) appears in any log line, any command
//! output, any `Debug` output or anything stored. The daemon runs as the real binary at
//! `ROLLBACKD_LOG=trace` (every crate's logs), notifying Slack (bot mode, with failures) and
//! email (with AUTH); `check` and `notify test` run too; then everything is grepped.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Env, binary, post_alert, sandbox_env, wait_until};
use jiff::Timestamp;
use rollbackd::config::Config;
use rollbackd::store::{OutboxStatus, Store};
use support::{Reply, SlackSink, SmtpSink};

const WEBHOOK_SECRET: &str = "hook-secret-5f3a9c";
const BOT_TOKEN: &str = "xoxb-redact-7c1d2e";
const SMTP_PASSWORD: &str = "smtp-redact-9b8a7f";
const INLINE_PASSWORD: &str = "inline-pass-4242";
const SECRETS: &[&str] = &[WEBHOOK_SECRET, BOT_TOKEN, SMTP_PASSWORD, INLINE_PASSWORD];

fn assert_clean(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(
            !text.contains(secret),
            "{what} contains the secret {secret:?}:\n{text}"
        );
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// Runs the binary with trace logging; returns (exit code, stdout, stderr).
fn run(args: &[&str], config: &Path, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .env("ROLLBACKD_LOG", "trace")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("rollbackd runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn daemon_config(env: &Env, addr: &str, slack: &SlackSink, smtp_port: u16) -> PathBuf {
    let dir = env.dir.path();
    let password = write(dir, "smtp-password", &format!("{SMTP_PASSWORD}\n"));
    env.config_file(
        addr,
        &format!(
            r##"[notify]
retry_initial = "100ms"
retry_max = "200ms"
retry_deadline = "3s"
[notify.slack]
api_url = "{}/api"
channel = "#oncall"
[[notify.slack.routes]]
match = {{ team = "payments" }}
channel = "#payments-oncall"
[notify.email]
smtp_url = "smtp://rollbackd@127.0.0.1:{smtp_port}?tls=none"
password_file = {:?}
from = "rollbackd <rollbackd@example.com>"
to = ["oncall@example.com"]
"##,
            slack.url(),
            password.display().to_string()
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_log_line_an_output_or_the_store() {
    let env = sandbox_env().await;
    env.three_rollouts("web").await;
    let dir = env.dir.path().to_path_buf();
    let slack = SlackSink::start(Reply::PostOk).await;
    // Failures first, so that error paths are logged too.
    slack.script([
        Reply::Status(500, "rollup_error".into(), None),
        Reply::Status(429, "".into(), Some(1)),
        Reply::ApiError("not_in_channel"),
    ]);
    let smtp = SmtpSink::start(
        support::free_port(),
        &dir.join("mail"),
        Some(("rollbackd", SMTP_PASSWORD)),
    );
    let addr = format!("127.0.0.1:{}", common::free_port());
    let config = daemon_config(&env, &addr, &slack, smtp.port);
    let token_env = [("ROLLBACKD__NOTIFY__SLACK__BOT_TOKEN", BOT_TOKEN)];

    // The daemon, every crate logging at trace, as JSON lines into a file.
    let log_path = dir.join("daemon.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let child = Command::new(binary())
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&config)
        .env("ROLLBACKD_LOG", "trace")
        .envs(token_env)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("rollbackd starts");
    let mut daemon = scopeguard(child);
    let url = format!("http://{addr}/readyz");
    wait_until("rollbackd /readyz", Duration::from_secs(20), || {
        let url = url.clone();
        async move { matches!(reqwest::get(&url).await, Ok(r) if r.status().is_success()) }
    })
    .await;
    let labels = [
        ("alertname", "HighErrorRate"),
        ("namespace", "default"),
        ("deployment", "web"),
        ("team", "payments"),
    ];
    let (status, body) = post_alert(
        &addr,
        &scenario::alertmanager_payload(&labels, Timestamp::now()),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let store = Store::open(&format!("sqlite://{}", dir.join("rollbackd.db").display()))
        .await
        .expect("store");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let rows = store.outbox().await.expect("outbox");
        if rows.len() == 2 && rows.iter().all(|r| r.status != OutboxStatus::Pending) {
            break rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "outbox not settled: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = daemon.0.kill();
    let _ = daemon.0.wait();

    // The messages went where they should, with the token and the password in use.
    let slack_row = rows
        .iter()
        .find(|r| r.channel == "slack")
        .expect("slack row");
    assert_eq!(
        slack_row.destination, "#payments-oncall",
        "routed by the team label"
    );
    assert!(
        slack
            .received()
            .iter()
            .all(|r| r.authorization.as_deref() == Some(&*format!("Bearer {BOT_TOKEN}")))
    );
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1, "mail delivered with AUTH");
    assert_eq!(
        mails[0]["headers"]["Subject"],
        "[rollbackd] ROLLED BACK default/web: HighErrorRate (rev 3 → 2)"
    );

    let logs = std::fs::read_to_string(&log_path).expect("daemon log");
    assert!(
        logs.lines().count() > 50,
        "trace logging captured little:\n{logs}"
    );
    assert!(logs.contains("rollbackd::notify::outbox"), "{logs}");
    // The HTTP client's own trace logging was on while it talked to Slack.
    assert!(
        logs.contains("\"target\":\"reqwest") || logs.contains("\"target\":\"hyper"),
        "no HTTP client logs captured"
    );
    assert_clean("the daemon's log", &logs);

    let mut stored = String::new();
    for r in &rows {
        stored.push_str(&format!("{r:?}\n"));
    }
    for i in store
        .list_incidents(&Default::default())
        .await
        .expect("incidents")
    {
        let detail = store.incident(i.id).await.expect("read").expect("incident");
        stored.push_str(&serde_json::to_string(&detail).expect("json"));
    }
    assert!(stored.contains("slack #payments-oncall"), "{stored}");
    assert_clean("the store", &stored);

    // `check` and `notify test` on the same config.
    let (code, out, err) = run(&["check"], &config, &token_env);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_clean("check", &format!("{out}{err}"));
    let (code, out, err) = run(&["notify", "test"], &config, &token_env);
    assert_clean("notify test", &format!("{out}{err}"));
    assert!(out.contains("slack #oncall: ok"), "{out}{err}");
    assert!(out.contains("email oncall@example.com: ok"), "{out}{err}");
    assert_eq!(code, Some(0), "{out}{err}");

    // Webhook mode, failing: the URL is the secret, and reqwest errors carry URLs.
    let failing = SlackSink::start(Reply::Status(500, "rollup_error".into(), None)).await;
    let hook = write(
        &dir,
        "hook",
        &format!("{}/services/T0/B0/{WEBHOOK_SECRET}", failing.url()),
    );
    let webhook_config = write(
        &dir,
        "webhook.toml",
        &format!(
            "[notify.slack]\nwebhook_url_file = {:?}\n",
            hook.display().to_string()
        ),
    );
    let (code, out, err) = run(&["notify", "test"], &webhook_config, &[]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("slack webhook: FAILED: Slack: HTTP 500: rollup_error"),
        "{out}{err}"
    );
    assert_clean("notify test (webhook)", &format!("{out}{err}"));
    // Nothing listening at all: a connection error, whose reqwest error would name the URL.
    let closed = write(
        &dir,
        "closed-hook",
        &format!(
            "http://127.0.0.1:{}/services/T0/B0/{WEBHOOK_SECRET}",
            support::free_port()
        ),
    );
    let closed_config = write(
        &dir,
        "closed.toml",
        &format!(
            "[notify.slack]\nwebhook_url_file = {:?}\n",
            closed.display().to_string()
        ),
    );
    let (code, out, err) = run(&["notify", "test"], &closed_config, &[]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("slack webhook: FAILED: Slack: request failed"),
        "{out}{err}"
    );
    assert_clean("notify test (connection refused)", &format!("{out}{err}"));
    let (_, out, err) = run(&["check"], &webhook_config, &[]);
    assert_clean("check (webhook)", &format!("{out}{err}"));

    // Secrets given through the environment, and a password in the SMTP URL (refused).
    let env_config = write(
        &dir,
        "env.toml",
        &format!(
            "[notify.email]\nsmtp_url = \"smtp://u:{INLINE_PASSWORD}@mail.example.com\"\nfrom = \"a@example.com\"\nto = [\"b@example.com\"]\n"
        ),
    );
    let (code, out, err) = run(
        &["check"],
        &env_config,
        &[(
            "ROLLBACKD__NOTIFY__SLACK__WEBHOOK_URL",
            &format!("not a url {WEBHOOK_SECRET}"),
        )],
    );
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("notify.email.smtp_url: must not contain a password"),
        "{err}"
    );
    assert!(
        err.contains(
            "notify.slack.webhook_url (set by ROLLBACKD__NOTIFY__SLACK__WEBHOOK_URL): is not an http(s) URL"
        ),
        "{err}"
    );
    assert_clean("check (bad secrets)", &format!("{out}{err}"));

    // Debug output of a loaded config.
    let loaded = Config::load_with_env(
        &config,
        token_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .expect("valid");
    assert!(loaded.slack.is_some() && loaded.email.is_some());
    assert_clean("Debug of the config", &format!("{loaded:?}"));
    let described = rollbackd::cli::describe_notify(&loaded);
    assert!(
        described.contains("slack:       bot mode via"),
        "{described}"
    );
    assert!(
        described.contains("email:       rollbackd@127.0.0.1:"),
        "{described}"
    );
    assert_clean("describe_notify", &described);
    let channels = rollbackd::notify::channels(&loaded).expect("channels");
    assert_eq!(channels.len(), 2);
}

/// Kills the child if the test panics before it does.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scopeguard(child: std::process::Child) -> Guard {
    Guard(child)
}
