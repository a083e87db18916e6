//! Real Prometheus and Alertmanager processes for the demo and the end-to-end tests.
//!
//! Each runs as a child process on 127.0.0.1 with a free port and a temporary directory for its
//! data and log, and is killed when its handle is dropped. [`fast_rules`] turns the shipped
//! rules into a lab copy whose `for:` and rate windows are seconds instead of minutes.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

pub const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";
pub const ALERTMANAGER_BIN: &str = "/usr/bin/prometheus-alertmanager";

/// Whether both Debian packages are installed.
pub fn available() -> bool {
    Path::new(PROMETHEUS_BIN).exists() && Path::new(ALERTMANAGER_BIN).exists()
}

/// A child server process, killed on drop.
pub struct LabProcess {
    name: &'static str,
    child: Child,
    pub url: String,
    dir: tempfile::TempDir,
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

impl LabProcess {
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the process wrote to stderr, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Waits for `/-/ready` to answer 200.
    pub async fn wait_ready(&self, limit: Duration) -> anyhow::Result<()> {
        let url = format!("{}/-/ready", self.url);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Ok(r) = client.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{} not ready within {limit:?}; its log:\n{}",
                    self.name,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn spawn(
    name: &'static str,
    bin: &str,
    dir: tempfile::TempDir,
    args: Vec<String>,
    port: u16,
) -> anyhow::Result<LabProcess> {
    if !Path::new(bin).exists() {
        bail!(
            "{bin} is missing: install the Debian package with `apt-get install -y prometheus prometheus-alertmanager`"
        );
    }
    let log = std::fs::File::create(dir.path().join("log"))?;
    let child = Command::new(bin)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {bin}"))?;
    Ok(LabProcess {
        name,
        child,
        url: format!("http://127.0.0.1:{port}"),
        dir,
    })
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// What Prometheus scrapes and where it sends alerts.
pub struct PrometheusLab<'a> {
    pub target: SocketAddr,
    /// Labels added to every scraped series (`namespace`, `app`).
    pub target_labels: &'a [(&'a str, &'a str)],
    pub rule_files: &'a [PathBuf],
    /// Alertmanager base URL, if Prometheus should send alerts.
    pub alertmanager: Option<&'a str>,
}

/// Starts Prometheus scraping and evaluating every second.
pub fn start_prometheus(lab: &PrometheusLab<'_>) -> anyhow::Result<LabProcess> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let mut config = String::from("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n");
    if !lab.rule_files.is_empty() {
        config.push_str("rule_files:\n");
        for f in lab.rule_files {
            let _ = writeln!(config, "  - {:?}", f.display().to_string());
        }
    }
    if let Some(am) = lab.alertmanager {
        let host = am.trim_start_matches("http://");
        let _ = write!(
            config,
            "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [{host:?}]\n"
        );
    }
    let labels: Vec<String> = lab
        .target_labels
        .iter()
        .map(|(k, v)| format!("{k}: {v:?}"))
        .collect();
    let _ = write!(
        config,
        "scrape_configs:\n  - job_name: sample-app\n    static_configs:\n      - targets: [\"{}\"]\n        labels: {{{}}}\n",
        lab.target,
        labels.join(", ")
    );
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config)?;
    let args = vec![
        format!("--config.file={}", config_path.display()),
        format!("--storage.tsdb.path={}", dir.path().join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--rules.alert.resend-delay=1s".into(),
    ];
    spawn("prometheus", PROMETHEUS_BIN, dir, args, port)
}

/// Starts Prometheus with the given `prometheus.yml` text (rule file paths in it must be
/// absolute), for labs whose scrape setup the fixed one above does not fit.
pub fn start_prometheus_with_config(config: &str) -> anyhow::Result<LabProcess> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config)?;
    let args = vec![
        format!("--config.file={}", config_path.display()),
        format!("--storage.tsdb.path={}", dir.path().join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
    ];
    spawn("prometheus", PROMETHEUS_BIN, dir, args, port)
}

/// Starts Alertmanager routing every alert to `webhook_url` with second-scale timings.
pub fn start_alertmanager(webhook_url: &str) -> anyhow::Result<LabProcess> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let config = format!(
        "route:\n  receiver: rollbackd\n  group_by: [alertname, namespace, app]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1m\n\
         receivers:\n  - name: rollbackd\n    webhook_configs:\n      - url: {webhook_url:?}\n        send_resolved: true\n"
    );
    let config_path = dir.path().join("alertmanager.yml");
    std::fs::write(&config_path, config)?;
    let args = vec![
        format!("--config.file={}", config_path.display()),
        format!("--storage.path={}", dir.path().join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--cluster.listen-address=".into(),
    ];
    spawn("alertmanager", ALERTMANAGER_BIN, dir, args, port)
}

/// The rules shipped in `rules/`, built into the binary for the demo.
pub const SHIPPED_RULES: &str = include_str!("../../../rules/rollbackd.yml");

/// A lab copy of rule-file text: every `for:` becomes `for_` and every `[5m]` range becomes
/// `range`, so that a rule fires within seconds against a 1s scrape interval.
pub fn fast_rules(text: &str, for_: &str, range: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("for:") {
            let indent = &line[..line.len() - trimmed.len()];
            let _ = writeln!(out, "{indent}for: {for_}");
        } else {
            let _ = writeln!(out, "{}", line.replace("[5m]", &format!("[{range}]")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lab_copy_shortens_for_and_ranges_only() {
        let fast = fast_rules(SHIPPED_RULES, "2s", "10s");
        assert!(fast.contains("for: 2s"));
        assert!(!fast.contains("for: 5m"));
        assert!(fast.contains("[10s]"));
        assert!(!fast.contains("[5m]"));
        assert_eq!(fast.lines().count(), SHIPPED_RULES.lines().count());
    }
}
