//! Config loading: defaults, overrides, and every problem named by its key.

use super::*;

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write test file");
    path
}

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

#[test]
fn an_empty_file_gives_the_documented_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Config::load_with_env(&write(&dir, "c.toml", ""), no_env()).expect("valid");
    assert_eq!(cfg.server.listen.to_string(), "127.0.0.1:9095");
    assert_eq!(cfg.kubernetes.correlation_window, Duration::from_secs(1800));
    assert_eq!(
        cfg.store.url,
        format!("sqlite://{}", dir.path().join("rollbackd.db").display()),
        "the default store lies beside the config file"
    );
    assert_eq!(cfg.policy.mode, Mode::Enforce);
    assert!(cfg.prometheus.is_none());
    assert!(cfg.webhook_token.is_none());
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        &dir,
        "c.toml",
        r#"
[server]
listen = "not an address"
colour = "blue"
[kubernetes]
correlation_window = "5 parsecs"
namespaces = ["Bad_NS"]
[policy]
mode = "yolo"
[alerting]
x = 1
"#,
    );
    let err = Config::load_with_env(&path, no_env()).expect_err("invalid");
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    for expected in [
        "server.listen",
        "server.colour",
        "kubernetes.correlation_window",
        "kubernetes.namespaces",
        "policy.mode",
        "alerting",
    ] {
        assert!(
            keys.contains(&expected),
            "{expected} missing from {keys:?}\n{err}"
        );
    }
}

#[test]
fn environment_overrides_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(&dir, "c.toml", "[policy]\nmode = \"enforce\"\n");
    let env = vec![
        ("ROLLBACKD__POLICY__MODE".to_string(), "dry-run".to_string()),
        (
            "ROLLBACKD__KUBERNETES__NAMESPACES".to_string(),
            "shop,pay".to_string(),
        ),
        (
            "ROLLBACKD__SERVER__LISTEN".to_string(),
            "127.0.0.1:9999".to_string(),
        ),
    ];
    let cfg = Config::load_with_env(&path, env).expect("valid");
    assert_eq!(cfg.policy.mode, Mode::DryRun);
    assert_eq!(cfg.kubernetes.namespaces, vec!["shop", "pay"]);
    assert_eq!(cfg.server.listen.port(), 9999);
}

#[test]
fn the_token_file_is_read_and_never_printed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = write(&dir, "token", "s3cr3t-value\n");
    let path = write(
        &dir,
        "c.toml",
        &format!("[server]\ntoken_file = {:?}\n", token.display().to_string()),
    );
    let cfg = Config::load_with_env(&path, no_env()).expect("valid");
    assert_eq!(
        cfg.webhook_token.as_ref().map(Secret::expose),
        Some("s3cr3t-value")
    );
    assert!(!format!("{cfg:?}").contains("s3cr3t-value"));

    let empty = write(&dir, "empty", "  \n");
    let path = write(
        &dir,
        "c2.toml",
        &format!("[server]\ntoken_file = {:?}\n", empty.display().to_string()),
    );
    let err = Config::load_with_env(&path, no_env()).expect_err("empty token");
    assert_eq!(err.problems[0].key, "server.token_file");
}

#[test]
fn a_missing_file_or_broken_toml_is_one_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = Config::load_with_env(&dir.path().join("nope.toml"), no_env()).expect_err("missing");
    assert_eq!(err.problems.len(), 1);
    let err =
        Config::load_with_env(&write(&dir, "c.toml", "[server\n"), no_env()).expect_err("broken");
    assert_eq!(err.problems.len(), 1);
}

#[test]
fn the_server_limits_have_production_defaults_and_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Config::load_with_env(&write(&dir, "c.toml", ""), no_env()).expect("valid");
    assert_eq!(cfg.server.header_timeout, Duration::from_secs(10));
    assert_eq!(cfg.server.body_timeout, Duration::from_secs(30));
    assert_eq!(cfg.server.idle_timeout, Duration::from_secs(60));
    assert_eq!(cfg.server.max_connections, 1024);
    assert!(cfg.server.metrics_auth);
    let path = write(
        &dir,
        "bad.toml",
        "[server]\nheader_timeout = \"0s\"\nbody_timeout = \"soon\"\nidle_timeout = \"2h\"\nmax_connections = 0\nmetrics_auth = \"maybe\"\n",
    );
    let err = Config::load_with_env(&path, no_env()).expect_err("invalid");
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    for expected in [
        "server.header_timeout",
        "server.body_timeout",
        "server.idle_timeout",
        "server.max_connections",
        "server.metrics_auth",
    ] {
        assert!(keys.contains(&expected), "{expected} missing from {err}");
    }
}

#[test]
fn the_read_token_comes_from_the_environment_verbatim_and_is_never_printed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(&dir, "c.toml", "[server]\ntoken = \"full-secret\"\n");
    let env = vec![(
        "ROLLBACKD__SERVER__READ_TOKEN".to_string(),
        "007".to_string(),
    )];
    let cfg = Config::load_with_env(&path, env).expect("valid");
    assert_eq!(cfg.read_token.as_ref().map(Secret::expose), Some("007"));
    let printed = format!("{cfg:?}");
    assert!(!printed.contains("full-secret"), "{printed}");
    assert!(!printed.contains("007"), "{printed}");
}

#[test]
fn a_read_token_needs_a_different_full_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let read = write(&dir, "read", "reader\n");
    let alone = write(
        &dir,
        "alone.toml",
        &format!(
            "[server]\nread_token_file = {:?}\n",
            read.display().to_string()
        ),
    );
    let err = Config::load_with_env(&alone, no_env()).expect_err("read token alone");
    assert_eq!(err.problems[0].key, "server.read_token_file", "{err}");
    let same = write(
        &dir,
        "same.toml",
        "[server]\ntoken = \"same\"\nread_token = \"same\"\n",
    );
    let err = Config::load_with_env(&same, no_env()).expect_err("same token");
    assert_eq!(err.problems[0].key, "server.read_token", "{err}");
    assert!(!err.to_string().contains("\"same\""), "{err}");
}

#[test]
fn stale_after_defaults_to_90s_and_is_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Config::load_with_env(&write(&dir, "c.toml", ""), no_env()).expect("valid");
    assert_eq!(cfg.kubernetes.stale_after, Duration::from_secs(90));
    let cfg = Config::load_with_env(
        &write(&dir, "c.toml", "[kubernetes]\nstale_after = \"3s\"\n"),
        no_env(),
    )
    .expect("valid");
    assert_eq!(cfg.kubernetes.stale_after, Duration::from_secs(3));
    for bad in ["1s", "2h", "soon"] {
        let path = write(
            &dir,
            "c.toml",
            &format!("[kubernetes]\nstale_after = \"{bad}\"\n"),
        );
        let err = Config::load_with_env(&path, no_env()).expect_err(bad);
        assert_eq!(err.problems[0].key, "kubernetes.stale_after", "{err}");
    }
}

#[test]
fn argo_promote_full_after_undo_is_on_by_default_and_its_wait_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Config::load_with_env(&write(&dir, "c.toml", ""), no_env()).expect("valid");
    let settings = cfg.executor_settings();
    assert!(settings.argo_promote_full);
    assert_eq!(settings.argo_promote_wait, Duration::from_secs(30));
    let path = write(
        &dir,
        "c.toml",
        "[policy]\nargo_promote_full_after_undo = false\nargo_promote_wait = \"5s\"\n",
    );
    let settings = Config::load_with_env(&path, no_env())
        .expect("valid")
        .executor_settings();
    assert!(!settings.argo_promote_full);
    assert_eq!(settings.argo_promote_wait, Duration::from_secs(5));
    for bad in ["0s", "10m"] {
        let path = write(
            &dir,
            "c.toml",
            &format!("[policy]\nargo_promote_wait = \"{bad}\"\n"),
        );
        let err = Config::load_with_env(&path, no_env()).expect_err(bad);
        assert_eq!(err.problems[0].key, "policy.argo_promote_wait", "{err}");
    }
}

#[test]
fn verify_window_defaults_to_10m_is_overridable_and_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(&dir, "c.toml", "");
    let cfg = Config::load_with_env(&path, no_env()).expect("valid");
    assert_eq!(cfg.policy.verify_window, Duration::from_secs(600));
    let env = vec![("ROLLBACKD__POLICY__VERIFY_WINDOW".into(), "2s".into())];
    let cfg = Config::load_with_env(&path, env).expect("valid");
    assert_eq!(cfg.policy.verify_window, Duration::from_secs(2));
    for bad in ["0s", "2days", "later"] {
        let path = write(
            &dir,
            "c.toml",
            &format!("[policy]\nverify_window = \"{bad}\"\n"),
        );
        let err = Config::load_with_env(&path, no_env()).expect_err(bad);
        assert_eq!(err.problems[0].key, "policy.verify_window", "{err}");
    }
}

#[test]
fn gitops_defaults_to_notify_and_its_keys_are_checked() {
    use crate::core::gitops::GitopsMode;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Config::load_with_env(&write(&dir, "c.toml", ""), no_env()).expect("valid");
    assert_eq!(cfg.gitops.mode, GitopsMode::Notify);
    assert_eq!(cfg.policy().gitops.argocd_namespace, "argocd");
    let path = write(
        &dir,
        "g.toml",
        "[gitops]\nmode = \"sync-to-previous\"\nargocd_namespace = \"gitops\"\n",
    );
    let cfg = Config::load_with_env(&path, no_env()).expect("valid");
    assert_eq!(cfg.gitops.mode, GitopsMode::SyncToPrevious);
    assert_eq!(cfg.gitops.argocd_namespace, "gitops");
    let env = vec![(
        "ROLLBACKD__GITOPS__MODE".to_string(),
        "suspend-and-undo".to_string(),
    )];
    let cfg = Config::load_with_env(&path, env).expect("valid");
    assert_eq!(cfg.gitops.mode, GitopsMode::SuspendAndUndo);
    let path = write(
        &dir,
        "bad.toml",
        "[gitops]\nmode = \"revert\"\nargocd_namespace = \"Argo_CD\"\nself_heal = false\n",
    );
    let err = Config::load_with_env(&path, no_env()).expect_err("invalid");
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    for key in ["gitops.mode", "gitops.argocd_namespace", "gitops.self_heal"] {
        assert!(keys.contains(&key), "{key} not reported: {err}");
    }
}

#[test]
fn a_bad_value_from_the_environment_is_blamed_on_its_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        &dir,
        "c.toml",
        "[policy]\nmode = \"dry-run\"\ncooldown = \"nonsense\"\n",
    );
    let env = vec![
        ("ROLLBACKD__POLICY__MODE".to_string(), "bogus".to_string()),
        (
            "ROLLBACKD__SERVER__MAX_BODY_BYTES".to_string(),
            "abc".to_string(),
        ),
        ("ROLLBACKD__NOTASECTION__X".to_string(), "1".to_string()),
        ("HOME".to_string(), "elsewhere".to_string()),
    ];
    let err = Config::load_with_env(&path, env).expect_err("invalid");
    let by_key = |key: &str| {
        err.problems
            .iter()
            .find(|p| p.key == key)
            .unwrap_or_else(|| panic!("no problem for {key}: {err}"))
    };
    assert_eq!(
        by_key("policy.mode").from_env.as_deref(),
        Some("ROLLBACKD__POLICY__MODE")
    );
    assert_eq!(
        by_key("server.max_body_bytes").from_env.as_deref(),
        Some("ROLLBACKD__SERVER__MAX_BODY_BYTES")
    );
    assert_eq!(
        by_key("notasection").from_env.as_deref(),
        Some("ROLLBACKD__NOTASECTION__X")
    );
    assert_eq!(
        by_key("policy.cooldown").from_env,
        None,
        "this one is the file's"
    );
    let text = err.to_string();
    assert!(text.contains("and its environment overrides"), "{text}");
    assert!(
        text.contains("policy.mode (set by ROLLBACKD__POLICY__MODE): unknown variant"),
        "{text}"
    );
    assert!(text.contains("  - policy.cooldown: "), "{text}");
}

#[test]
fn relative_paths_resolve_from_the_config_file_whatever_the_working_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("etc")).expect("mkdir");
    std::fs::write(dir.path().join("etc/token"), "full-token-0123456789").expect("token");
    std::fs::write(dir.path().join("etc/read"), "read-token-0123456789").expect("token");
    std::fs::write(dir.path().join("etc/kubeconfig"), "apiVersion: v1\n").expect("kubeconfig");
    let path = write(
        &dir,
        "c.toml",
        r#"
[server]
token_file = "etc/token"
[kubernetes]
kubeconfig = "etc/kubeconfig"
[store]
url = "sqlite://data/rollbackd.db"
"#,
    );
    let env = vec![(
        "ROLLBACKD__SERVER__READ_TOKEN_FILE".to_string(),
        "etc/read".to_string(),
    )];
    let cfg = Config::load_with_env(&path, env).expect("valid");
    assert_eq!(cfg.server.token_file, Some(dir.path().join("etc/token")));
    assert_eq!(
        cfg.server.read_token_file,
        Some(dir.path().join("etc/read"))
    );
    assert_eq!(
        cfg.kubernetes.kubeconfig,
        Some(dir.path().join("etc/kubeconfig"))
    );
    assert_eq!(
        cfg.store.url,
        format!(
            "sqlite://{}",
            dir.path().join("data/rollbackd.db").display()
        )
    );
    assert!(cfg.webhook_token.is_some() && cfg.read_token.is_some());
    let absolute = write(
        &dir,
        "abs.toml",
        "[store]\nurl = \"sqlite:///var/lib/x.db\"\n",
    );
    let cfg = Config::load_with_env(&absolute, no_env()).expect("valid");
    assert_eq!(
        cfg.store.url, "sqlite:///var/lib/x.db",
        "absolute paths stay"
    );
}

#[test]
fn offline_loading_lists_the_deployed_files_instead_of_reading_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        &dir,
        "c.toml",
        "[server]\ntoken_file = \"/nonexistent/token\"\n[policy]\nmode = \"dry-run\"\n",
    );
    assert!(
        Config::load_with_env(&path, no_env()).is_err(),
        "online, the file must be read"
    );
    let cfg = Config::load_offline(&path).expect("offline, it is only named");
    assert_eq!(
        cfg.deployed_files,
        vec![("server.token_file", PathBuf::from("/nonexistent/token"))]
    );
    let bad = write(
        &dir,
        "bad.toml",
        "[server]\ntoken_file = \"/nonexistent/token\"\n[policy]\nmode = \"x\"\n",
    );
    let err = Config::load_offline(&bad).expect_err("other problems still count");
    assert_eq!(err.problems.len(), 1, "{err}");
    assert_eq!(err.problems[0].key, "policy.mode");
}

#[test]
fn a_postgres_store_is_accepted_and_leader_election_needs_no_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        &dir,
        "c.toml",
        "[store]\nurl = \"postgres://rollbackd:hunter2@db:5432/rollbackd\"\n",
    );
    let cfg = Config::load_with_env(&path, no_env()).expect("valid");
    let le = &cfg.leader_election;
    assert_eq!(le.lease_name, "rollbackd");
    assert_eq!(le.lease_duration, Duration::from_secs(15));
    assert_eq!(le.renew_deadline, Duration::from_secs(10));
    assert_eq!(le.retry_period, Duration::from_secs(2));
    let settings = le.settings("team-a");
    assert_eq!(settings.namespace, "team-a");
    assert!(!settings.identity.is_empty());
    assert_ne!(
        settings.identity,
        le.settings("team-a").identity,
        "two replicas never share an identity"
    );
    assert!(
        !crate::store::redact_url(&cfg.store.url).contains("hunter2"),
        "the password is never shown"
    );
}

#[test]
fn leader_election_timings_must_let_a_leader_stop_before_its_lease_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        &dir,
        "c.toml",
        r#"
[store]
url = "mysql://db/rollbackd"
[leader_election]
lease_name = "Bad Name"
lease_duration = "1500ms"
renew_deadline = "20s"
retry_period = "30s"
holder = "x"
"#,
    );
    let err = Config::load_with_env(&path, no_env()).expect_err("invalid");
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    for expected in [
        "store.url",
        "leader_election.lease_name",
        "leader_election.lease_duration",
        "leader_election.renew_deadline",
        "leader_election.retry_period",
        "leader_election.holder",
    ] {
        assert!(
            keys.contains(&expected),
            "{expected} missing from {keys:?}\n{err}"
        );
    }
}

#[test]
fn retention_and_graph_timing_are_read_and_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Config::load_with_env(
        &write(
            &dir,
            "ok.toml",
            "[store]\nretention = \"90d\"\n[prometheus]\nurl = \"http://p:9090\"\nrules = [\"r.yml\"]\ngraph_after = \"30s\"\n",
        ),
        no_env(),
    )
    .expect("valid");
    assert_eq!(cfg.store.retention, Some(Duration::from_secs(90 * 86_400)));
    assert_eq!(
        cfg.prometheus.as_ref().map(|p| p.graph_after),
        Some(Duration::from_secs(30))
    );
    let defaults = Config::load_with_env(&write(&dir, "empty.toml", ""), no_env()).expect("valid");
    assert_eq!(defaults.store.retention, None, "kept forever unless set");

    let err = Config::load_with_env(
        &write(
            &dir,
            "bad.toml",
            "[store]\nretention = \"2h\"\nretension = \"90d\"\n",
        ),
        no_env(),
    )
    .expect_err("invalid");
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"store.retention"), "{err}");
    assert!(
        keys.contains(&"store.retension"),
        "a misspelt key is an error: {err}"
    );
}

#[test]
fn the_post_rollout_window_defaults_to_15m_with_only_url_and_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "[prometheus]\nurl = \"http://prometheus:9090\"\nrules = [\"rules/*.yml\"]\n";
    let path = write(&dir, "c.toml", text);
    let cfg = Config::load_with_env(&path, no_env()).expect("valid");
    let prom = cfg.prometheus.expect("prometheus configured");
    assert_eq!(prom.post_rollout_window, Duration::from_secs(15 * 60));
    let env = vec![(
        "ROLLBACKD__PROMETHEUS__POST_ROLLOUT_WINDOW".to_string(),
        "0s".to_string(),
    )];
    let cfg = Config::load_with_env(&path, env).expect("valid");
    let prom = cfg.prometheus.expect("prometheus configured");
    assert_eq!(prom.post_rollout_window, Duration::ZERO);
    let bad = write(
        &dir,
        "bad.toml",
        &format!("{text}post_rollout_window = \"soon\"\n"),
    );
    let err = Config::load_with_env(&bad, no_env())
        .expect_err("invalid")
        .to_string();
    assert!(err.contains("post_rollout_window"), "{err}");
}
