//! `deploy/kubernetes` renders with the real kubectl, meets the "restricted" Pod Security
//! Standard, creates everything its pod mounts, and the kinds the sandbox serves pass a
//! server-side dry run. The sandbox serves no RBAC, PVC, NetworkPolicy or PodDisruptionBudget,
//! so those are checked structurally here rather than by the API server.

mod deploy;
mod sandbox_common;

use deploy::{all, deploy_copy, find, kustomize, parse_yaml, repo};
use serde_json::{Value, json};

const SANDBOX_KINDS: &[&str] = &["Namespace", "ConfigMap", "Secret", "Service", "Deployment"];

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

    // One replica: a budget requiring it to stay up would block every drain.
    let pdb = find(docs, "PodDisruptionBudget", "rollbackd");
    assert_eq!(dep["spec"]["replicas"], 1);
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
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
    find(&docs, "PrometheusRule", "rollbackd");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_kinds_pass_a_server_dry_run_in_the_sandbox() {
    sandbox_common::bounded(async {
        let dir = deploy_copy();
        let rendered = kustomize(dir.path());
        let docs = parse_yaml(&rendered);
        let env = sandbox_common::start(sandbox_common::fast()).await;
        // The namespace first, for real: a dry run creates nothing to put the rest in.
        let ns = serde_json::to_string(find(&docs, "Namespace", "rollbackd")).unwrap();
        let out = env.kubectl_stdin(&["apply", "-f", "-"], Some(ns)).await;
        assert!(out.ok, "{}", out.stderr);
        // The rendered YAML itself, less the kinds the sandbox does not serve.
        let served: Vec<&str> = rendered
            .split("\n---\n")
            .filter(|doc| {
                let kind = parse_yaml(doc)[0]["kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                SANDBOX_KINDS.contains(&kind.as_str())
            })
            .collect();
        assert_eq!(
            served.len(),
            6,
            "namespace, config, two secrets, service, deployment"
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
    })
    .await;
}
