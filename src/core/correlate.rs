//! Correlation: from an alert's labels to the Deployment it concerns.
//!
//! The alert must carry a namespace label. Then the first of these that is present decides:
//! a Deployment name, a ReplicaSet name, a pod name (pod → ReplicaSet → Deployment), or an
//! `app`-style label matched against pod-template labels. Which alert labels play which part is
//! configuration ([`CorrelationLabels`]); the defaults follow Prometheus' Kubernetes conventions.

use std::collections::BTreeMap;

use super::alert::LabelSet;
use super::workload::{DeploymentState, WorkloadIndex, template_labels};

/// Which alert labels name the namespace and the workload.
#[derive(Clone, Debug, PartialEq)]
pub struct CorrelationLabels {
    pub namespace: Vec<String>,
    pub deployment: Vec<String>,
    pub replica_set: Vec<String>,
    pub pod: Vec<String>,
    /// Alert label → pod-template label keys whose value it must equal.
    pub template: BTreeMap<String, Vec<String>>,
}

impl Default for CorrelationLabels {
    fn default() -> Self {
        let app_keys = || vec!["app".to_string(), "app.kubernetes.io/name".to_string()];
        CorrelationLabels {
            namespace: vec!["namespace".into()],
            deployment: vec!["deployment".into()],
            replica_set: vec!["replicaset".into()],
            pod: vec!["pod".into()],
            template: [
                ("app".to_string(), app_keys()),
                (
                    "app_kubernetes_io_name".to_string(),
                    vec!["app.kubernetes.io/name".to_string()],
                ),
                ("service".to_string(), app_keys()),
                ("job".to_string(), app_keys()),
            ]
            .into(),
        }
    }
}

/// The result of correlating one alert.
#[derive(Debug, PartialEq)]
pub enum Correlation<'a> {
    Found {
        deployment: &'a DeploymentState,
        /// Which label led there, for the reason sentence: `deployment="web"`.
        via: String,
    },
    /// No Deployment matches; the sentence says what was looked for.
    NoWorkload(String),
    /// More than one Deployment matches; acting on a guess would be unsafe.
    Ambiguous { via: String, names: Vec<String> },
}

pub fn correlate<'a>(
    labels: &LabelSet,
    index: &'a WorkloadIndex,
    rules: &CorrelationLabels,
) -> Correlation<'a> {
    let Some((ns_label, namespace)) = first_label(labels, &rules.namespace) else {
        return Correlation::NoWorkload(format!(
            "the alert has no namespace label ({})",
            rules.namespace.join(", ")
        ));
    };
    if let Some((label, name)) = first_label(labels, &rules.deployment) {
        let via = format!("{ns_label}=\"{namespace}\", {label}=\"{name}\"");
        return match index.deployment(namespace, name) {
            Some(deployment) => Correlation::Found { deployment, via },
            None => Correlation::NoWorkload(format!("no Deployment {namespace}/{name} ({via})")),
        };
    }
    if let Some((label, name)) = first_label(labels, &rules.replica_set) {
        let via = format!("{ns_label}=\"{namespace}\", {label}=\"{name}\"");
        return replica_set_owner(index, namespace, name, via);
    }
    if let Some((label, pod)) = first_label(labels, &rules.pod) {
        let via = format!("{ns_label}=\"{namespace}\", {label}=\"{pod}\"");
        // Pods made by a ReplicaSet are named `<replicaset>-<5 random chars>`.
        let Some((rs_name, _)) = pod.rsplit_once('-') else {
            return Correlation::NoWorkload(format!(
                "pod {namespace}/{pod} is not named like a ReplicaSet's pod ({via})"
            ));
        };
        return replica_set_owner(index, namespace, rs_name, via);
    }
    for (alert_label, template_keys) in &rules.template {
        let Some(value) = labels.get(alert_label) else {
            continue;
        };
        let via = format!("{ns_label}=\"{namespace}\", {alert_label}=\"{value}\"");
        let matches: Vec<&DeploymentState> = index
            .deployments_in(namespace)
            .filter(|d| {
                template_labels(&d.template)
                    .any(|(k, v)| v == value && template_keys.iter().any(|t| t == k))
            })
            .collect();
        return match matches.as_slice() {
            [] => Correlation::NoWorkload(format!(
                "no Deployment in {namespace} has pod-template label {} = \"{value}\" ({via})",
                template_keys.join(" or ")
            )),
            [deployment] => Correlation::Found { deployment, via },
            many => Correlation::Ambiguous {
                via,
                names: many.iter().map(|d| d.name.clone()).collect(),
            },
        };
    }
    Correlation::NoWorkload(format!(
        "the alert has {ns_label}=\"{namespace}\" but no workload label (deployment, replicaset, pod or one of {})",
        rules
            .template
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

fn replica_set_owner<'a>(
    index: &'a WorkloadIndex,
    namespace: &str,
    rs_name: &str,
    via: String,
) -> Correlation<'a> {
    let Some(rs) = index.replica_set(namespace, rs_name) else {
        return Correlation::NoWorkload(format!("no ReplicaSet {namespace}/{rs_name} ({via})"));
    };
    match index.owner_of(rs) {
        Some(deployment) => Correlation::Found { deployment, via },
        None => Correlation::NoWorkload(format!(
            "ReplicaSet {namespace}/{rs_name} is not controlled by a known Deployment ({via})"
        )),
    }
}

fn first_label<'l>(labels: &'l LabelSet, names: &'l [String]) -> Option<(&'l str, &'l str)> {
    names.iter().find_map(|n| {
        labels
            .get(n)
            .filter(|v| !v.is_empty())
            .map(|v| (n.as_str(), v.as_str()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::workload::tests::{mk_deployment, mk_rs, ts};

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn index() -> WorkloadIndex {
        let mut index = WorkloadIndex::default();
        index.apply_deployment(mk_deployment("web", "nginx:1"), ts(0));
        index.apply_deployment(mk_deployment("api", "api:1"), ts(0));
        index.apply_replica_set(mk_rs("web", "7d9f8", "nginx:1", 1, ts(0)), ts(0));
        index
    }

    fn found(c: Correlation<'_>) -> String {
        match c {
            Correlation::Found { deployment, .. } => deployment.name.clone(),
            other => panic!("expected a match, got {other:?}"),
        }
    }

    #[test]
    fn each_label_kind_leads_to_the_deployment() {
        let index = index();
        let rules = CorrelationLabels::default();
        let by = |pairs: &[(&str, &str)]| found(correlate(&labels(pairs), &index, &rules));
        assert_eq!(
            by(&[("namespace", "default"), ("deployment", "web")]),
            "web"
        );
        assert_eq!(
            by(&[("namespace", "default"), ("replicaset", "web-7d9f8")]),
            "web"
        );
        assert_eq!(
            by(&[("namespace", "default"), ("pod", "web-7d9f8-x2kqz")]),
            "web"
        );
        assert_eq!(by(&[("namespace", "default"), ("app", "api")]), "api");
        assert_eq!(by(&[("namespace", "default"), ("job", "web")]), "web");
    }

    #[test]
    fn missing_namespace_or_unknown_names_are_no_workload() {
        let index = index();
        let rules = CorrelationLabels::default();
        for pairs in [
            vec![("deployment", "web")],
            vec![("namespace", "default"), ("deployment", "nope")],
            vec![("namespace", "prod"), ("deployment", "web")],
            vec![("namespace", "default"), ("pod", "nodash")],
            vec![("namespace", "default"), ("instance", "10.0.0.1:80")],
        ] {
            let c = correlate(&labels(&pairs), &index, &rules);
            assert!(
                matches!(c, Correlation::NoWorkload(_)),
                "{pairs:?} gave {c:?}"
            );
        }
    }

    #[test]
    fn two_deployments_with_the_same_app_label_are_ambiguous() {
        let mut index = index();
        let mut twin = mk_deployment("web-canary", "nginx:2");
        twin.template["metadata"]["labels"]["app"] = "web".into();
        index.apply_deployment(twin, ts(0));
        let c = correlate(
            &labels(&[("namespace", "default"), ("app", "web")]),
            &index,
            &CorrelationLabels::default(),
        );
        let Correlation::Ambiguous { names, .. } = c else {
            panic!("expected ambiguous, got {c:?}");
        };
        assert_eq!(names, vec!["web".to_string(), "web-canary".to_string()]);
    }
}
