//! `rollbackd incidents export --since …` (the real binary) writes one JSON object per line for
//! a log pipeline; a bad `--since` is a clear error that writes nothing.

mod common;

use std::process::Command;

use common::binary;
use jiff::Timestamp;
use rollbackd::core::alert::{Alert, AlertSource, AlertStatus, Fingerprint, LabelSet};
use rollbackd::core::engine::{Decision, Outcome, WorkloadRef};
use rollbackd::store::Store;

fn config(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("rollbackd.toml");
    std::fs::write(
        &path,
        format!(
            "[store]\nurl = {:?}\n",
            format!("sqlite://{}", dir.path().join("s.db").display())
        ),
    )
    .expect("config");
    path
}

async fn one_incident(dir: &tempfile::TempDir) {
    let store = Store::open(&format!("sqlite://{}", dir.path().join("s.db").display()))
        .await
        .expect("store");
    let labels: LabelSet = [("alertname", "HighErrorRate"), ("namespace", "shop")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let alert = Alert {
        source: AlertSource::Alertmanager,
        status: AlertStatus::Firing,
        fingerprint: Fingerprint::of(&labels),
        labels,
        annotations: LabelSet::new(),
        starts_at: Timestamp::now(),
        ends_at: None,
        generator_url: String::new(),
        external_url: None,
    };
    let id = store
        .record_alerts(std::slice::from_ref(&alert), Timestamp::now())
        .await
        .expect("record")[0]
        .alert_id;
    let decision = Decision {
        outcome: Outcome::NoRecentRollout,
        reason: "web has not rolled out within 30m".into(),
        workload: Some(WorkloadRef {
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: "web".into(),
            uid: "uid-web".into(),
        }),
        rollout: None,
        command: None,
    };
    store
        .record_decision(id, &alert, &decision, Timestamp::now())
        .await
        .expect("decide");
    store.close().await;
}

fn export(config: &std::path::Path, since: &str) -> std::process::Output {
    Command::new(binary())
        .args(["incidents", "export", "--since", since, "--config"])
        .arg(config)
        .output()
        .expect("binary runs")
}

#[tokio::test]
async fn export_writes_json_lines_since_a_time_or_a_duration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(&dir);
    one_incident(&dir).await;

    let out = export(&config, "1h");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
        .collect();
    let kinds: Vec<&str> = lines.iter().filter_map(|l| l["kind"].as_str()).collect();
    assert_eq!(kinds, ["received", "correlated", "decision"]);
    assert_eq!(lines[2]["outcome"], "no-recent-rollout");
    assert_eq!(lines[2]["namespace"], "shop");
    assert_eq!(lines[2]["workload"], "web");

    let future = (Timestamp::now() + jiff::SignedDuration::from_secs(3600)).to_string();
    let out = export(&config, &future);
    assert!(out.status.success());
    assert!(out.stdout.is_empty(), "nothing recorded after {future}");

    let out = export(&config, "yesterday-ish");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--since \"yesterday-ish\" is neither an RFC 3339 time"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}
