//! `deploy/kubernetes` renders with the real kubectl, meets the "restricted" Pod Security
//! Standard, creates everything its pod mounts, and the kinds the sandbox serves pass a
//! server-side dry run. The sandbox serves no RBAC, PVC, NetworkPolicy or PodDisruptionBudget,
//! so those are checked structurally here rather than by the API server.

mod deploy;
#[path = "../crates/kube-sandbox/tests/common/mod.rs"]
mod sandbox_common;

use deploy::{all, deploy_copy, find, kustomize, parse_yaml, repo, served_by_sandbox, tool};
use serde_json::{Value, json};

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// What every overlay must hold: a pod that starts as shipped and meets "restricted".
fn check_common(docs: &[Value]) {
    let ns = find(docs, "Namespace", "rollbackd");
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );

    let dep = find(docs, "Deployment", "rollbackd");
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert!(pod["hostNetwork"].is_null() && pod["hostPID"].is_null());
    let containers = pod["containers"].as_array().expect("containers");
    for c in containers {
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{c}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{c}");
        assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{c}");
        assert!(sc["capabilities"]["add"].is_null(), "{c}");
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{c}");
        assert_ne!(sc["runAsUser"], 0, "{c}");
    }
    let c = &containers[0];
    assert_eq!(c["image"], "rollbackd:0.1.0");
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.contains("docker build -t rollbackd:0.1.0 ."));
    // What the build reads at compile time: the migrations (sqlx) and the page templates (askama).
    for dir in ["migrations", "templates"] {
        assert!(
            dockerfile.contains(&format!("COPY {dir} ./{dir}")),
            "the Dockerfile copies {dir}/ into the build"
        );
    }

    // Every volume is of a kind "restricted" allows, and every ConfigMap, Secret and claim it
    // names is part of the render, so the pod never waits in ContainerCreating.
    let volumes = pod["volumes"].as_array().expect("volumes");
    for v in volumes {
        if let Some(name) = v["secret"]["secretName"].as_str() {
            find(docs, "Secret", name);
        } else if let Some(name) = v["configMap"]["name"].as_str() {
            find(docs, "ConfigMap", name);
        } else if let Some(name) = v["persistentVolumeClaim"]["claimName"].as_str() {
            find(docs, "PersistentVolumeClaim", name);
        } else {
            assert!(v["emptyDir"].is_object(), "volume kind not allowed: {v}");
        }
    }
    let tmp = c["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["mountPath"] == "/tmp")
        .expect("a writable /tmp");
    let tmp_volume = volumes.iter().find(|v| v["name"] == tmp["name"]).unwrap();
    assert!(tmp_volume["emptyDir"].is_object());

    let np = find(docs, "NetworkPolicy", "rollbackd");
    assert_eq!(strings(&np["spec"]["policyTypes"]), ["Ingress"]);
    assert_eq!(
        np["spec"]["podSelector"]["matchLabels"],
        dep["spec"]["selector"]["matchLabels"]
    );
    let ingress = np["spec"]["ingress"].as_array().expect("ingress");
    for rule in ingress {
        assert_eq!(rule["ports"], json!([{"protocol": "TCP", "port": 9095}]));
        assert!(!rule["from"].as_array().unwrap().is_empty());
    }

    let pdb = find(docs, "PodDisruptionBudget", "rollbackd");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        dep["spec"]["selector"]["matchLabels"]
    );

    // Namespaces are watched cluster-wide whatever `kubernetes.namespaces` says.
    let ns_role = find(docs, "ClusterRole", "rollbackd-namespaces");
    assert_eq!(strings(&ns_role["rules"][0]["resources"]), ["namespaces"]);
    let binding = find(docs, "ClusterRoleBinding", "rollbackd-namespaces");
    assert_eq!(binding["roleRef"]["name"], "rollbackd-namespaces");
    assert_eq!(binding["subjects"][0]["namespace"], "rollbackd");
}

/// One replica on SQLite: Recreate (two pods never share the file), a volume for the store,
/// and a budget that lets a drain take it (one that kept it up would block every drain).
fn check_single_replica(docs: &[Value]) {
    let dep = find(docs, "Deployment", "rollbackd");
    assert_eq!(dep["spec"]["replicas"], 1);
    assert_eq!(dep["spec"]["strategy"]["type"], "Recreate");
    find(docs, "PersistentVolumeClaim", "rollbackd-data");
    let pdb = find(docs, "PodDisruptionBudget", "rollbackd");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(config_toml(docs).contains("url = \"sqlite://"));
}

/// The rendered rollbackd.toml.
fn config_toml(docs: &[Value]) -> String {
    let cm = all(docs, "ConfigMap")
        .find(|d| {
            d["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("rollbackd-config"))
        })
        .expect("config map");
    cm["data"]["rollbackd.toml"]
        .as_str()
        .expect("config")
        .to_string()
}

fn config_namespaces(docs: &[Value]) -> Vec<String> {
    let cm = all(docs, "ConfigMap")
        .find(|d| {
            d["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("rollbackd-config"))
        })
        .expect("config map");
    let toml = cm["data"]["rollbackd.toml"].as_str().expect("config");
    let line = toml
        .lines()
        .find(|l| l.starts_with("namespaces"))
        .expect("namespaces key");
    let list = line.split('#').next().unwrap();
    list.split(['[', ']', ',', '"', '='])
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "namespaces")
        .map(String::from)
        .collect()
}

#[test]
fn cluster_wide_render_starts_as_shipped() {
    let dir = deploy_copy();
    let docs = parse_yaml(&kustomize(dir.path()));
    check_common(&docs);
    check_single_replica(&docs);
    assert!(config_namespaces(&docs).is_empty());
    let binding = find(&docs, "ClusterRoleBinding", "rollbackd");
    assert_eq!(binding["roleRef"]["name"], "rollbackd");
    assert_eq!(all(&docs, "RoleBinding").count(), 0);
}

#[test]
fn namespaced_render_binds_each_listed_namespace_only() {
    let dir = deploy_copy();
    let docs = parse_yaml(&kustomize(&dir.path().join("overlays/namespaced")));
    check_common(&docs);
    check_single_replica(&docs);
    assert!(
        all(&docs, "ClusterRoleBinding").all(|b| b["roleRef"]["name"] != "rollbackd"),
        "the workload rules must not be granted cluster-wide"
    );
    let mut bound: Vec<String> = all(&docs, "RoleBinding")
        .filter(|b| b["roleRef"]["name"] == "rollbackd")
        .map(|b| b["metadata"]["namespace"].as_str().unwrap().to_string())
        .collect();
    bound.sort();
    let mut listed = config_namespaces(&docs);
    listed.sort();
    assert!(!listed.is_empty());
    assert_eq!(bound, listed, "one RoleBinding per namespace in the config");
}

/// The config each overlay ships passes `rollbackd check --offline` off the cluster, which
/// names the token files instead of reading them; a plain `check` here fails and says so.
#[test]
fn shipped_configs_pass_check_offline() {
    let dir = deploy_copy();
    for overlay in [
        dir.path().to_path_buf(),
        dir.path().join("overlays/namespaced"),
        dir.path().join("overlays/ha"),
    ] {
        let docs = parse_yaml(&kustomize(&overlay));
        let cm = all(&docs, "ConfigMap")
            .find(|d| {
                d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("rollbackd-config"))
            })
            .expect("config map");
        let out = tempfile::tempdir().unwrap();
        let file = out.path().join("rollbackd.toml");
        std::fs::write(&file, cm["data"]["rollbackd.toml"].as_str().unwrap()).unwrap();
        let run = |extra: &[&str]| {
            std::process::Command::new(env!("CARGO_BIN_EXE_rollbackd"))
                .arg("check")
                .args(extra)
                .arg("--config")
                .arg(&file)
                .env_remove("KUBECONFIG")
                .output()
                .unwrap()
        };
        let offline = run(&["--offline"]);
        let stdout = String::from_utf8_lossy(&offline.stdout);
        assert!(
            offline.status.success(),
            "{}: {stdout}{}",
            overlay.display(),
            String::from_utf8_lossy(&offline.stderr)
        );
        assert!(
            stdout.contains("server.token_file = /etc/rollbackd/token"),
            "{stdout}"
        );
        let online = run(&[]);
        let stderr = String::from_utf8_lossy(&online.stderr);
        assert!(
            !online.status.success(),
            "the token file is not here: {stderr}"
        );
        assert!(stderr.contains("check --offline"), "{stderr}");
    }
}

#[test]
fn ha_render_runs_two_replicas_on_postgres_with_the_lease_granted() {
    let dir = deploy_copy();
    let docs = parse_yaml(&kustomize(&dir.path().join("overlays/ha")));
    check_common(&docs);
    let dep = find(&docs, "Deployment", "rollbackd");
    assert_eq!(dep["spec"]["replicas"], 2);
    assert_eq!(dep["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
    // A drain may take one replica at a time, never both.
    let pdb = find(&docs, "PodDisruptionBudget", "rollbackd");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert!(pdb["spec"]["maxUnavailable"].is_null(), "{pdb}");
    // No volume: the store is PostgreSQL, its URL from a Secret that is part of the render.
    assert_eq!(all(&docs, "PersistentVolumeClaim").count(), 0);
    let pod = &dep["spec"]["template"]["spec"];
    assert!(
        pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .all(|v| v["persistentVolumeClaim"].is_null())
    );
    let env = pod["containers"][0]["env"].as_array().expect("env");
    let var = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {env:?}"))
    };
    let secret = var("ROLLBACKD__STORE__URL")["valueFrom"]["secretKeyRef"]["name"]
        .as_str()
        .expect("the store URL comes from a Secret");
    assert!(secret.starts_with("rollbackd-store"), "{secret}");
    find(&docs, "Secret", secret);
    assert_eq!(
        var("POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    let toml = config_toml(&docs);
    assert!(toml.contains("url = \"postgres://"), "{toml}");
    assert!(toml.contains("[leader_election]"), "{toml}");
    // The Lease the daemon uses (leader_election.lease_name, in its own namespace) is exactly
    // the one granted: created, read and renewed (the elector's create, get and update).
    let lease = configured_lease_name(&toml);
    let role = find(&docs, "Role", "rollbackd-leader-election");
    assert_eq!(role["metadata"]["namespace"], "rollbackd");
    let rules = role["rules"].as_array().expect("rules");
    let granted = |verb: &str| {
        rules.iter().any(|r| {
            strings(&r["apiGroups"]) == ["coordination.k8s.io"]
                && strings(&r["resources"]) == ["leases"]
                && strings(&r["verbs"]).contains(&verb)
                && (r["resourceNames"].is_null()
                    || strings(&r["resourceNames"]).contains(&lease.as_str()))
        })
    };
    for verb in ["create", "get", "update"] {
        assert!(granted(verb), "leases {verb} not granted: {rules:?}");
    }
    let binding = find(&docs, "RoleBinding", "rollbackd-leader-election");
    assert_eq!(binding["roleRef"]["name"], "rollbackd-leader-election");
    assert_eq!(binding["subjects"][0]["name"], "rollbackd");
    assert_eq!(binding["subjects"][0]["namespace"], "rollbackd");
    assert_eq!(pod["serviceAccountName"], "rollbackd");
}

/// `leader_election.lease_name` from the rendered config (its default when unset).
fn configured_lease_name(toml: &str) -> String {
    let mut in_section = false;
    for line in toml.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.starts_with('[') {
            in_section = line == "[leader_election]";
        } else if in_section && line.starts_with("lease_name") {
            return line
                .split('=')
                .nth(1)
                .unwrap_or_default()
                .trim()
                .trim_matches('"')
                .to_string();
        }
    }
    "rollbackd".into()
}

#[test]
fn monitoring_component_renders() {
    let dir = deploy_copy();
    let kustomization = dir.path().join("kustomization.yaml");
    let text = std::fs::read_to_string(&kustomization).unwrap();
    let enabled = text.replace(
        "# components:\n#   - components/monitoring",
        "components:\n  - components/monitoring",
    );
    assert_ne!(text, enabled, "kustomization.yaml names the component");
    std::fs::write(&kustomization, enabled).unwrap();
    let docs = parse_yaml(&kustomize(dir.path()));
    let sm = find(&docs, "ServiceMonitor", "rollbackd");
    assert_eq!(sm["metadata"]["namespace"], "rollbackd");
    let svc = find(&docs, "Service", "rollbackd");
    assert_eq!(
        sm["spec"]["selector"]["matchLabels"],
        svc["metadata"]["labels"]
    );
    let secret = sm["spec"]["endpoints"][0]["authorization"]["credentials"]["name"]
        .as_str()
        .expect("scrapes with a token");
    assert!(secret.starts_with("rollbackd-read-token"), "{secret}");
    find(&docs, "PrometheusRule", "rollbackd-self");
    let generated = |prefix: &str| {
        all(&docs, "Secret")
            .filter_map(|s| s["metadata"]["name"].as_str())
            .find(|n| n.starts_with(prefix))
            .unwrap_or_else(|| panic!("no Secret {prefix}"))
            .to_string()
    };
    assert_eq!(secret, generated("rollbackd-read-token"));
    let amc = find(&docs, "AlertmanagerConfig", "rollbackd");
    assert_eq!(amc["metadata"]["namespace"], "rollbackd");
    let credentials = &amc["spec"]["receivers"][0]["webhookConfigs"][0]["httpConfig"]["authorization"]
        ["credentials"];
    assert_eq!(
        credentials["name"].as_str(),
        Some(generated("rollbackd-webhook-token").as_str()),
        "the route must name the Secret as generated, hash suffix included"
    );
    assert_eq!(credentials["key"], "token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_kinds_pass_a_server_dry_run_in_the_sandbox() {
    sandbox_common::bounded(async {
        let dir = deploy_copy();
        let env = sandbox_common::start(sandbox_common::fast()).await;
        // Every layout: one replica on SQLite, and two on PostgreSQL (one more Secret).
        for (layout, served_docs) in [("", 6), ("overlays/ha", 7)] {
            dry_run(&env, &kustomize(&dir.path().join(layout)), served_docs).await;
        }
    })
    .await;
}

/// Applies the namespace for real, then the kinds the sandbox serves with a server dry run.
async fn dry_run(env: &sandbox_common::Env, rendered: &str, served_docs: usize) {
    let docs = parse_yaml(rendered);
    // The namespace first, for real: a dry run creates nothing to put the rest in.
    let ns = serde_json::to_string(find(&docs, "Namespace", "rollbackd")).unwrap();
    let out = env.kubectl_stdin(&["apply", "-f", "-"], Some(ns)).await;
    assert!(out.ok, "{}", out.stderr);
    // The rendered YAML itself, less the kinds the sandbox does not serve.
    let served = served_by_sandbox(rendered);
    assert_eq!(
        served.len(),
        served_docs,
        "namespace, config, the secrets, service, deployment"
    );
    let out = env
        .kubectl_stdin(
            &["apply", "--dry-run=server", "-f", "-"],
            Some(served.join("\n---\n")),
        )
        .await;
    assert!(out.ok, "stdout: {}\nstderr: {}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("deployment.apps/rollbackd created (server dry run)"),
        "{}",
        out.stdout
    );
    // A dry run leaves nothing behind.
    let deps = env.json(&["get", "deployments", "-n", "rollbackd"]).await;
    assert_eq!(deps["items"], json!([]));
}

/// Every overlay, with the monitoring component, is valid against the Kubernetes schemas
/// (strict: an unknown field fails). The operator's kinds have no schema there and are checked
/// structurally above.
#[test]
fn every_overlay_passes_the_kubernetes_schemas() {
    let dir = deploy_copy();
    let kustomization = dir.path().join("kustomization.yaml");
    let text = std::fs::read_to_string(&kustomization).unwrap();
    std::fs::write(
        &kustomization,
        text.replace(
            "# components:\n#   - components/monitoring",
            "components:\n  - components/monitoring",
        ),
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    for (name, overlay) in [
        ("cluster-wide", dir.path().to_path_buf()),
        ("namespaced", dir.path().join("overlays/namespaced")),
        ("ha", dir.path().join("overlays/ha")),
    ] {
        let file = out.path().join(format!("{name}.yaml"));
        std::fs::write(&file, kustomize(&overlay)).unwrap();
        let run = std::process::Command::new(tool("kubernetes-validate"))
            .args(["--kubernetes-version", "1.33.0", "--strict", "--no-warn"])
            .arg(&file)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&run.stdout).to_string()
            + &String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "{name}: {report}");
        for kind in [
            "deployment",
            "networkpolicy",
            "poddisruptionbudget",
            "service",
        ] {
            assert!(
                report.contains(&format!("passed for resource {kind}/rollbackd")),
                "{name}: {kind} was not validated: {report}"
            );
        }
    }
    // The validator does fail on a field the schema does not know.
    let bad = out.path().join("bad.yaml");
    let rendered = kustomize(dir.path());
    std::fs::write(&bad, rendered.replacen("strategy:", "strateggy:", 1)).unwrap();
    let run = std::process::Command::new(tool("kubernetes-validate"))
        .args(["--kubernetes-version", "1.33.0", "--strict", "--no-warn"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!run.status.success(), "a misspelt field must fail");
}

/// The Dockerfile passes hadolint, and its builder copies everything cargo reads: every bench
/// the manifest declares, and the migrations compiled into the binary.
#[test]
fn the_dockerfile_passes_hadolint_and_copies_what_cargo_reads() {
    let dockerfile = repo().join("Dockerfile");
    let run = std::process::Command::new(tool("hadolint"))
        .arg(&dockerfile)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    let builder = text
        .split("\nFROM ")
        .find(|stage| stage.contains("AS builder"))
        .expect("a builder stage");
    let copied: Vec<&str> = builder
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .flat_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words[..words.len() - 1].to_vec()
        })
        .collect();
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let mut needed = vec!["Cargo.toml", "Cargo.lock", "src", "migrations"];
    if manifest.contains("[[bench]]") {
        needed.push("benches");
    }
    for path in needed {
        assert!(
            copied.contains(&path),
            "the builder does not COPY {path}: {copied:?}"
        );
    }
    let build = builder.find("cargo build").expect("a cargo build");
    let last_copy = builder.rfind("\nCOPY ").expect("COPY lines");
    assert!(last_copy < build, "everything is copied before the build");
    assert!(
        builder.contains("--locked"),
        "the build uses Cargo.lock as it is"
    );
    assert!(
        builder.contains("--no-default-features"),
        "the image leaves out the sandbox and the demo"
    );
}
