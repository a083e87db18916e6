//! The shipped rule files and Alertmanager config pass Prometheus's own tools: `promtool check
//! rules`, `promtool test rules` and `amtool check-config`. A missing tool fails the test (CI
//! installs the Debian packages `prometheus` and `prometheus-alertmanager`); nothing is skipped.
//! The Prometheus Operator objects in `deploy/` say the same as the plain files: the
//! `PrometheusRule` holds exactly the groups of `rules/rollbackd.yml`, and the
//! `AlertmanagerConfig` routes like `alertmanager.yml`, grouping by labels the rules emit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use saphyr::{LoadableYamlNode, YamlOwned};

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
    let config = repo().join("deploy/alertmanager/alertmanager.yml");
    let out = run("amtool", &["check-config"], &[config]);
    assert_success(
        "amtool check-config deploy/alertmanager/alertmanager.yml",
        &out,
    );
}

/// The one YAML document in `rel` (relative to the repository).
fn load_yaml(rel: &str) -> YamlOwned {
    let text = std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let mut docs = YamlOwned::load_from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
    assert_eq!(docs.len(), 1, "{rel} holds one document");
    docs.remove(0)
}

fn strings(node: &YamlOwned) -> Vec<String> {
    node.as_vec()
        .unwrap_or_else(|| panic!("not a list: {node:?}"))
        .iter()
        .map(|v| v.as_str().expect("a string").to_string())
        .collect()
}

#[test]
fn the_prometheusrule_object_holds_exactly_the_shipped_rules() {
    let rules = load_yaml("rules/rollbackd.yml");
    let object = load_yaml("deploy/prometheus/prometheusrule.yaml");
    assert_eq!(
        object["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    assert_eq!(object["kind"].as_str(), Some("PrometheusRule"));
    let groups = &rules["groups"];
    assert_eq!(groups.as_vec().map(Vec::len), Some(3), "{groups:?}");
    assert!(
        object["spec"]["groups"] == *groups,
        "deploy/prometheus/prometheusrule.yaml differs from rules/rollbackd.yml: \
         run scripts/gen-prometheusrule"
    );
}

#[test]
fn the_alertmanagerconfig_routes_like_the_plain_config_by_labels_the_rules_emit() {
    let plain = load_yaml("deploy/alertmanager/alertmanager.yml");
    let object = load_yaml("deploy/kubernetes/components/monitoring/alertmanagerconfig.yaml");
    assert_eq!(object["kind"].as_str(), Some("AlertmanagerConfig"));
    let route = plain["route"]["routes"]
        .as_vec()
        .and_then(|r| {
            r.iter()
                .find(|r| r["receiver"].as_str() == Some("rollbackd"))
        })
        .expect("a rollbackd route in alertmanager.yml");
    let group_by = strings(&route["group_by"]);
    assert_eq!(strings(&object["spec"]["route"]["groupBy"]), group_by);
    for (plain_key, object_key) in [
        ("group_wait", "groupWait"),
        ("group_interval", "groupInterval"),
        ("repeat_interval", "repeatInterval"),
    ] {
        assert_eq!(
            route[plain_key].as_str(),
            object["spec"]["route"][object_key].as_str(),
            "{plain_key}"
        );
    }
    let url = "http://rollbackd.rollbackd.svc:9095/api/v1/alerts";
    let plain_url = plain["receivers"]
        .as_vec()
        .and_then(|r| r.iter().find(|r| r["name"].as_str() == Some("rollbackd")))
        .map(|r| r["webhook_configs"][0]["url"].as_str().map(str::to_string));
    assert_eq!(plain_url, Some(Some(url.to_string())));
    assert_eq!(
        object["spec"]["receivers"][0]["webhookConfigs"][0]["url"].as_str(),
        Some(url)
    );
    // Every grouping label is one that some rule's alert carries in the unit tests.
    let tests: String = yaml_files("rules/tests")
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read test file"))
        .collect();
    for label in group_by.iter().filter(|l| *l != "alertname") {
        assert!(
            tests.contains(&format!("              {label}: ")),
            "no rule emits `{label}` in rules/tests"
        );
    }
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

/// The shipped rules' post-rollout forms (read by rollbackd's own loader from the
/// `rollbackd_post_rollout_*` annotations) compute, on kube-prometheus-stack-shaped series, the
/// share of 5xx and the traffic of each Deployment, and what ServiceMonitor-less `app` targets
/// give: checked by promtool as recording rules with `$window` set to 5 minutes.
#[test]
fn the_post_rollout_expressions_compute_the_share_and_traffic_per_workload() {
    use rollbackd::poller::post_rollout::with_window;
    use rollbackd::poller::rules::parse_rules_str;
    let text = std::fs::read_to_string(repo().join("rules/rollbackd.yml")).expect("read rules");
    let loaded = parse_rules_str(Path::new("rules/rollbackd.yml"), &text).expect("rules load");
    let rule = loaded
        .groups
        .iter()
        .flat_map(|g| &g.rules)
        .find(|r| r.alert == "HighErrorRate")
        .expect("HighErrorRate is shipped");
    let post = rule
        .post_rollout
        .as_ref()
        .expect("HighErrorRate opts in to the post-rollout form");
    assert_eq!(post.threshold, 0.01);
    assert_eq!(post.for_, std::time::Duration::from_secs(45));
    let traffic = post.traffic.as_ref().expect("a traffic floor");
    assert_eq!(traffic.min, 100.0);
    let five = std::time::Duration::from_secs(300);
    let indent = |expr: &str| expr.replace('\n', "\n          ");
    let dir = tempfile::tempdir().expect("temp dir");
    let rules_file = dir.path().join("post_rollout.yml");
    std::fs::write(
        &rules_file,
        format!(
            "groups:\n  - name: post-rollout\n    rules:\n      - record: post_rollout_value\n        expr: |\n          {}\n      - record: post_rollout_traffic\n        expr: |\n          {}\n",
            indent(&with_window(&post.expr, five)),
            indent(&with_window(&traffic.expr, five)),
        ),
    )
    .expect("write rules");
    let fixture = repo().join("rules/tests/fixtures/kube-prometheus-stack.yml");
    let target = |pod: &str, code: &str| {
        format!(
            "http_requests_total{{namespace=\"shop\", pod=\"{pod}\", service=\"checkout\", job=\"checkout\", container=\"checkout\", endpoint=\"http\", instance=\"10.244.1.7:8080\", code=\"{code}\"}}"
        )
    };
    let ksm = "job=\"kube-state-metrics\", service=\"prometheus-kube-state-metrics\", container=\"kube-state-metrics\", endpoint=\"http\", instance=\"10.244.0.5:8080\"";
    let series = [
        // Two pods of Deployment checkout: 1000 requests a minute, 2% of them 5xx.
        (target("checkout-7d9f8c6b5-abcde", "200"), "0+490x20"),
        (target("checkout-7d9f8c6b5-fghij", "200"), "0+490x20"),
        (target("checkout-7d9f8c6b5-abcde", "500"), "0+15x20"),
        (target("checkout-7d9f8c6b5-fghij", "503"), "0+5x20"),
        (
            format!("kube_pod_owner{{namespace=\"shop\", pod=\"checkout-7d9f8c6b5-abcde\", uid=\"1\", owner_kind=\"ReplicaSet\", owner_name=\"checkout-7d9f8c6b5\", owner_is_controller=\"true\", {ksm}}}"),
            "1x20",
        ),
        (
            format!("kube_pod_owner{{namespace=\"shop\", pod=\"checkout-7d9f8c6b5-fghij\", uid=\"2\", owner_kind=\"ReplicaSet\", owner_name=\"checkout-7d9f8c6b5\", owner_is_controller=\"true\", {ksm}}}"),
            "1x20",
        ),
        (
            format!("kube_replicaset_owner{{namespace=\"shop\", replicaset=\"checkout-7d9f8c6b5\", owner_kind=\"Deployment\", owner_name=\"checkout\", owner_is_controller=\"true\", {ksm}}}"),
            "1x20",
        ),
        // A static target relabelled with app: 100 requests a minute, 10% 5xx.
        (
            "http_requests_total{namespace=\"shop\", app=\"cart\", instance=\"10.0.0.9:8080\", job=\"cart\", code=\"200\"}".to_string(),
            "0+90x20",
        ),
        (
            "http_requests_total{namespace=\"shop\", app=\"cart\", instance=\"10.0.0.9:8080\", job=\"cart\", code=\"500\"}".to_string(),
            "0+10x20",
        ),
    ];
    let mut test = format!(
        "rule_files:\n  - {:?}\n  - {:?}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n",
        rules_file.display().to_string(),
        fixture.display().to_string()
    );
    for (s, values) in &series {
        test.push_str(&format!(
            "      - series: '{s}'\n        values: {values:?}\n"
        ));
    }
    test.push_str(
        "    promql_expr_test:\n\
         \x20     - expr: round(post_rollout_value, 0.0001)\n        eval_time: 10m\n        exp_samples:\n\
         \x20         - labels: '{namespace=\"shop\", deployment=\"checkout\"}'\n            value: 0.02\n\
         \x20         - labels: '{namespace=\"shop\", app=\"cart\"}'\n            value: 0.1\n\
         \x20     - expr: round(post_rollout_traffic)\n        eval_time: 10m\n        exp_samples:\n\
         \x20         - labels: '{namespace=\"shop\", deployment=\"checkout\"}'\n            value: 5000\n\
         \x20         - labels: '{namespace=\"shop\", app=\"cart\"}'\n            value: 500\n",
    );
    let test_file = dir.path().join("post_rollout_test.yml");
    std::fs::write(&test_file, &test).expect("write test");
    let out = run("promtool", &["test", "rules"], &[test_file]);
    assert_success(
        &format!("promtool test rules of the post-rollout form:\n{test}"),
        &out,
    );
}
