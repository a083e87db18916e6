//! The shipped rule files and Alertmanager config pass Prometheus's own tools: `promtool check
//! rules`, `promtool test rules` and `amtool check-config`. A missing tool fails the test (CI
//! installs the Debian packages `prometheus` and `prometheus-alertmanager`); nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The YAML files directly in `dir` (relative to the repository), sorted.
fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML files in {dir}");
    files
}

/// Runs `tool args…` in the repository; panics with install advice if the tool is missing.
fn run(tool: &str, args: &[&str], files: &[PathBuf]) -> Output {
    Command::new(tool)
        .args(args)
        .args(files)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{tool}` ({e}); install it with \
                 `apt-get install -y prometheus prometheus-alertmanager`"
            )
        })
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_check_rules_accepts_the_rule_files() {
    let out = run("promtool", &["check", "rules"], &yaml_files("rules"));
    assert_success("promtool check rules rules/*.yml", &out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SUCCESS: 4 rules found"), "{text}");
}

#[test]
fn promtool_unit_tests_of_the_rules_pass() {
    let out = run("promtool", &["test", "rules"], &yaml_files("rules/tests"));
    assert_success("promtool test rules rules/tests/*.yml", &out);
}

#[test]
fn amtool_accepts_the_alertmanager_config() {
    let out = run(
        "amtool",
        &["check-config"],
        &yaml_files("deploy/alertmanager"),
    );
    assert_success("amtool check-config deploy/alertmanager/*.yml", &out);
}

/// Proves the checks above can fail: promtool rejects a broken rule file.
#[test]
fn promtool_rejects_a_broken_rule_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broken = dir.path().join("broken.yml");
    let text = "groups:\n  - name: broken\n    rules:\n      - alert: Broken\n        expr: sum(rate(http_requests_total[5m]) > \n        for: 5x\n";
    std::fs::write(&broken, text).expect("write broken rule file");
    let out = run("promtool", &["check", "rules"], &[broken]);
    assert!(
        !out.status.success(),
        "promtool accepted a broken rule file"
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("FAILED"), "{text}");
}
