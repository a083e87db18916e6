//! `rollbackd check`: validate everything, report every problem, print what would be watched.

use std::fmt::Write;
use std::path::Path;

use crate::config::{Config, DEPLOYED_FILE_KEYS};
use crate::poller::rules::load_rule_files;

/// Returns the report to print, or every problem found. `offline` leaves unread the files
/// that exist only where rollbackd is deployed, and lists them instead.
pub fn check(path: &Path, offline: bool) -> Result<String, String> {
    let config = if offline {
        Config::load_offline(path)
    } else {
        Config::load(path)
    }
    .map_err(|e| {
        let deployed_only = e.problems.iter().any(|p| DEPLOYED_FILE_KEYS.contains(&p.key.as_str()));
        if deployed_only && !offline {
            format!("{e}(off the cluster, `rollbackd check --offline` lists those files instead of reading them)\n")
        } else {
            e.to_string()
        }
    })?;
    let mut report = describe(path, &config);
    if offline && !config.deployed_files.is_empty() {
        let _ = writeln!(
            report,
            "offline:     not read here (they must exist where rollbackd runs):"
        );
        for (key, file) in &config.deployed_files {
            let _ = writeln!(report, "               {key} = {}", file.display());
        }
    }
    if let Some(prom) = &config.prometheus {
        match load_rule_files(&prom.rules) {
            Ok(loaded) => {
                for group in &loaded.groups {
                    for rule in &group.rules {
                        let _ = writeln!(
                            report,
                            "  rule {}/{} (for {}) from {}",
                            group.name,
                            rule.alert,
                            humantime::format_duration(rule.for_),
                            group.file.display()
                        );
                        if let Some(post) = &rule.post_rollout {
                            let window = match prom.post_rollout_window.is_zero() {
                                true => "off: post_rollout_window is 0".to_string(),
                                false => format!(
                                    "for {} after a rollout",
                                    humantime::format_duration(prom.post_rollout_window)
                                ),
                            };
                            let traffic = post
                                .traffic
                                .as_ref()
                                .map(|t| format!(", at least {} traffic", t.min))
                                .unwrap_or_default();
                            let _ = writeln!(
                                report,
                                "    post-rollout form ({window}): above {} for {}, more than {}x the {} before{traffic}",
                                post.threshold,
                                humantime::format_duration(post.for_),
                                post.baseline_factor,
                                humantime::format_duration(post.baseline),
                            );
                        }
                    }
                }
                for note in &loaded.notes {
                    let _ = writeln!(report, "  note: {note}");
                }
            }
            Err(errors) => {
                let mut out = format!(
                    "{} problem(s) in the rule files of {}:\n",
                    errors.0.len(),
                    path.display()
                );
                for e in &errors.0 {
                    let _ = writeln!(out, "  - {e}");
                }
                return Err(out);
            }
        }
    }
    Ok(report)
}

fn describe(path: &Path, c: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}: OK", path.display());
    let auth = match (&c.server.token_file, &c.webhook_token) {
        (Some(file), _) => format!("bearer token from {}", file.display()),
        (None, Some(_)) => "bearer token from server.token".to_string(),
        _ => "none (any client may post alerts)".to_string(),
    };
    let _ = writeln!(
        out,
        "server:      listen {}; webhook auth: {auth}; max body {} bytes",
        c.server.listen, c.server.max_body_bytes
    );
    let scope = if c.kubernetes.namespaces.is_empty() {
        "all namespaces".to_string()
    } else {
        format!("namespaces {}", c.kubernetes.namespaces.join(", "))
    };
    let kubeconfig = c.kubernetes.kubeconfig.as_ref().map_or(
        "inferred (in-cluster, $KUBECONFIG, ~/.kube/config)".to_string(),
        |p| p.display().to_string(),
    );
    let _ = writeln!(out, "kubernetes:  kubeconfig {kubeconfig}");
    let _ = writeln!(
        out,
        "watching:    apps/v1 deployments and replicasets in {scope}"
    );
    let _ = writeln!(
        out,
        "             v1 services annotated rollbackd.io/track-selector; argoproj.io rollouts and networking.istio.io virtualservices (annotated rollbackd.io/track-weights) when the cluster serves them"
    );
    let _ = writeln!(
        out,
        "correlation: window {}, grace {}; namespace from {:?}",
        humantime::format_duration(c.kubernetes.correlation_window),
        humantime::format_duration(c.correlation.grace),
        c.correlation.namespace_labels,
    );
    let cc = &c.correlation;
    let by_kind = [
        ("deployment", &cc.deployment_labels),
        ("replicaset", &cc.replicaset_labels),
        ("pod", &cc.pod_labels),
        ("rollout", &cc.rollout_labels),
        ("service", &cc.service_labels),
        ("virtualservice", &cc.virtualservice_labels),
    ];
    for (kind, labels) in by_kind {
        let _ = writeln!(out, "             {kind} from {labels:?}");
    }
    if !cc.template_labels.is_empty() {
        let _ = writeln!(
            out,
            "             pod-template labels {:?}",
            cc.template_labels.keys().collect::<Vec<_>>()
        );
    }
    let mode = match c.policy.mode {
        crate::core::engine::Mode::Enforce => "enforce (rolls back)",
        crate::core::engine::Mode::DryRun => "dry-run (decides and records, changes nothing)",
    };
    let _ = writeln!(out, "policy:      {mode}");
    let gitops = match c.gitops.mode {
        crate::core::gitops::GitopsMode::Notify => "notify",
        crate::core::gitops::GitopsMode::SuspendAndUndo => "suspend-and-undo",
        crate::core::gitops::GitopsMode::SyncToPrevious => "sync-to-previous",
    };
    let _ = writeln!(
        out,
        "gitops:      mode {gitops}; argoproj.io applications in namespace {} when the cluster serves them",
        c.gitops.argocd_namespace
    );
    let _ = writeln!(
        out,
        "store:       {}",
        crate::store::redact_url(&c.store.url)
    );
    let le = &c.leader_election;
    let election = if crate::store::Backend::of(&c.store.url)
        == Some(crate::store::Backend::Postgres)
    {
        format!(
            "on (the store is PostgreSQL): Lease {} in {}, held {} after each renewal, given up {} without one, renewed every {}",
            le.lease_name,
            if le.lease_namespace.is_empty() {
                "the client's namespace"
            } else {
                le.lease_namespace.as_str()
            },
            humantime::format_duration(le.lease_duration),
            humantime::format_duration(le.renew_deadline),
            humantime::format_duration(le.retry_period),
        )
    } else {
        "off (one replica on SQLite)".to_string()
    };
    let _ = writeln!(out, "leader:      {election}");
    out.push_str(&crate::cli::describe_notify(c));
    match &c.prometheus {
        None => {
            let _ = writeln!(out, "prometheus:  not configured (webhook only)");
        }
        Some(p) => {
            let _ = writeln!(
                out,
                "prometheus:  {} every {}, rules {}",
                p.url,
                humantime::format_duration(p.poll_interval),
                p.rules.join(", ")
            );
        }
    }
    out
}
