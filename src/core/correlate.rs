//! Correlation: from an alert's labels to the object whose change it should be blamed on.
//!
//! The alert must carry a namespace label. Traffic switches come first, because reverting a
//! Deployment underneath a blue/green Service or an Istio canary would be wrong: a tracked
//! Service named by the alert (or whose selector the alert's labels carry), or a tracked
//! VirtualService named by it, is the target when it has a recorded change. Then the first of
//! these present decides: an Argo Rollout name, a Deployment name, a ReplicaSet name, a pod name
//! (pod → ReplicaSet → owner), or an `app`-style label matched against pod-template labels.
//! A Deployment name that no Deployment has but an Argo Rollout does resolves to that Rollout:
//! kube-prometheus-stack's pod-owner recording rule names a Rollout's pods' workload after the
//! Rollout, so rules that sum by that workload emit `deployment="<rollout>"`.
//! A Deployment that an Argo Rollout references through `workloadRef` is handled as that Rollout.
//! Which alert labels play which part is configuration ([`CorrelationLabels`]).

use std::collections::BTreeMap;

use super::alert::LabelSet;
use super::rollout::RolloutState;
use super::traffic::{ServiceState, TrafficChange, TrafficKind, VirtualServiceState};
use super::workload::{DeploymentState, PodTemplate, ReplicaSetState, WorkloadIndex};

/// Which alert labels name the namespace and the workload.
#[derive(Clone, Debug, PartialEq)]
pub struct CorrelationLabels {
    pub namespace: Vec<String>,
    pub rollout: Vec<String>,
    pub deployment: Vec<String>,
    pub replica_set: Vec<String>,
    pub pod: Vec<String>,
    /// Labels naming a Service (blue/green by selector).
    pub service: Vec<String>,
    /// Labels naming an Istio VirtualService (or one of its destination hosts).
    pub virtual_service: Vec<String>,
    /// Alert label → pod-template label keys whose value it must equal.
    pub template: BTreeMap<String, Vec<String>>,
}

impl Default for CorrelationLabels {
    fn default() -> Self {
        let app_keys = || vec!["app".to_string(), "app.kubernetes.io/name".to_string()];
        CorrelationLabels {
            namespace: vec!["namespace".into()],
            rollout: vec!["rollout".into()],
            deployment: vec!["deployment".into()],
            replica_set: vec!["replicaset".into()],
            pod: vec!["pod".into()],
            service: vec!["service".into()],
            virtual_service: vec!["virtualservice".into(), "service".into()],
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

/// What an alert is blamed on.
#[derive(Debug, PartialEq)]
pub enum Target<'a> {
    Deployment(&'a DeploymentState),
    Rollout(&'a RolloutState),
    Service(&'a ServiceState, &'a TrafficChange),
    VirtualService(&'a VirtualServiceState, &'a TrafficChange),
}

/// The result of correlating one alert.
#[derive(Debug, PartialEq)]
pub enum Correlation<'a> {
    Found {
        target: Target<'a>,
        /// Which labels led there, for the reason sentence: `deployment="web"`.
        via: String,
    },
    /// Nothing matches; the sentence says what was looked for.
    NoWorkload(String),
    /// More than one workload matches; acting on a guess would be unsafe.
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
    let at = |label: &str, value: &str| format!("{ns_label}=\"{namespace}\", {label}=\"{value}\"");
    if let Some(found) = traffic_target(labels, index, rules, namespace, &at) {
        return found;
    }
    if let Some((label, name)) = first_label(labels, &rules.rollout) {
        let via = at(label, name);
        return match index.rollout(namespace, name) {
            Some(r) => Correlation::Found {
                target: Target::Rollout(r),
                via,
            },
            None => Correlation::NoWorkload(format!("no Rollout {namespace}/{name} ({via})")),
        };
    }
    if let Some((label, name)) = first_label(labels, &rules.deployment) {
        let via = at(label, name);
        return match index.deployment(namespace, name) {
            Some(d) => Correlation::Found {
                target: deployment_or_its_rollout(index, d),
                via,
            },
            // On kube-prometheus-stack a Rollout's pods are owned by ReplicaSets the Rollout
            // owns, so a rule summing by workload names the Rollout in `deployment`.
            None => match index.rollout(namespace, name) {
                Some(r) => Correlation::Found {
                    target: Target::Rollout(r),
                    via: format!(
                        "{via}, no Deployment of that name but an Argo Rollout, as kube-prometheus-stack's workload label names it"
                    ),
                },
                None => Correlation::NoWorkload(format!(
                    "no Deployment or Argo Rollout {namespace}/{name} ({via})"
                )),
            },
        };
    }
    if let Some((label, name)) = first_label(labels, &rules.replica_set) {
        return replica_set_owner(index, namespace, name, at(label, name));
    }
    if let Some((label, pod)) = first_label(labels, &rules.pod) {
        let via = at(label, pod);
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
        let via = at(alert_label, value);
        let has_label = |template: &PodTemplate| {
            template
                .labels()
                .any(|(k, v)| v == value && template_keys.iter().any(|t| t == k))
        };
        let mut matches: Vec<Target<'a>> = Vec::new();
        for d in index
            .deployments_in(namespace)
            .filter(|d| has_label(&d.template))
        {
            let target = deployment_or_its_rollout(index, d);
            if !matches.contains(&target) {
                matches.push(target);
            }
        }
        for r in index
            .rollouts_in(namespace)
            .filter(|r| r.workload_ref.is_none() && has_label(&r.template))
        {
            matches.push(Target::Rollout(r));
        }
        return match matches.len() {
            0 => Correlation::NoWorkload(format!(
                "no Deployment or Rollout in {namespace} has pod-template label {} = \"{value}\" ({via})",
                template_keys.join(" or ")
            )),
            1 => Correlation::Found {
                target: matches.remove(0),
                via,
            },
            _ => Correlation::Ambiguous {
                via,
                names: matches.iter().map(target_name).collect(),
            },
        };
    }
    Correlation::NoWorkload(format!(
        "the alert has {ns_label}=\"{namespace}\" but no workload label (rollout, deployment, replicaset, pod or one of {})",
        rules
            .template
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

fn target_name(t: &Target<'_>) -> String {
    match t {
        Target::Deployment(d) => d.name.clone(),
        Target::Rollout(r) => format!("rollout {}", r.name),
        Target::Service(s, _) => format!("service {}", s.name),
        Target::VirtualService(v, _) => format!("virtualservice {}", v.name),
    }
}

/// A tracked Service or VirtualService with a recorded change that the alert points at.
fn traffic_target<'a>(
    labels: &LabelSet,
    index: &'a WorkloadIndex,
    rules: &CorrelationLabels,
    namespace: &str,
    at: &dyn Fn(&str, &str) -> String,
) -> Option<Correlation<'a>> {
    for svc in index.services_in(namespace).filter(|s| s.tracked) {
        let Some(change) = index.last_traffic_change(TrafficKind::Service, namespace, &svc.name)
        else {
            continue;
        };
        if let Some((label, value)) = named(labels, &rules.service)
            .into_iter()
            .find(|(_, v)| *v == svc.name)
        {
            return Some(Correlation::Found {
                target: Target::Service(svc, change),
                via: at(label, value),
            });
        }
        let carries_selector =
            !svc.selector.is_empty() && svc.selector.iter().all(|(k, v)| labels.get(k) == Some(v));
        if carries_selector {
            let via = svc
                .selector
                .iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect::<Vec<_>>()
                .join(", ");
            return Some(Correlation::Found {
                target: Target::Service(svc, change),
                via: format!("the selector of service {namespace}/{} ({via})", svc.name),
            });
        }
    }
    for vs in index.virtual_services_in(namespace).filter(|v| v.tracked) {
        let Some(change) =
            index.last_traffic_change(TrafficKind::VirtualService, namespace, &vs.name)
        else {
            continue;
        };
        let names_it = |v: &str| {
            v == vs.name
                || vs.weights.iter().any(|w| {
                    let host = w.key.split('/').next().unwrap_or("");
                    host == v || host.split('.').next() == Some(v)
                })
        };
        if let Some((label, value)) = named(labels, &rules.virtual_service)
            .into_iter()
            .find(|(_, v)| names_it(v))
        {
            return Some(Correlation::Found {
                target: Target::VirtualService(vs, change),
                via: at(label, value),
            });
        }
    }
    None
}

/// The values of whichever of `names` the alert carries.
fn named<'l>(labels: &'l LabelSet, names: &'l [String]) -> Vec<(&'l str, &'l str)> {
    names
        .iter()
        .filter_map(|n| labels.get(n).map(|v| (n.as_str(), v.as_str())))
        .collect()
}

fn deployment_or_its_rollout<'a>(index: &'a WorkloadIndex, d: &'a DeploymentState) -> Target<'a> {
    match index.rollout_referencing(&d.namespace, &d.name) {
        Some(r) => Target::Rollout(r),
        None => Target::Deployment(d),
    }
}

fn replica_set_owner<'a>(
    index: &'a WorkloadIndex,
    namespace: &str,
    rs_name: &str,
    via: String,
) -> Correlation<'a> {
    let Some(rs): Option<&ReplicaSetState> = index.replica_set(namespace, rs_name) else {
        return Correlation::NoWorkload(format!("no ReplicaSet {namespace}/{rs_name} ({via})"));
    };
    if let Some(r) = index.rollout_owner_of(rs) {
        return Correlation::Found {
            target: Target::Rollout(r),
            via,
        };
    }
    match index.owner_of(rs) {
        Some(d) => Correlation::Found {
            target: deployment_or_its_rollout(index, d),
            via,
        },
        None => Correlation::NoWorkload(format!(
            "ReplicaSet {namespace}/{rs_name} is not controlled by a known Deployment or Rollout ({via})"
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
            Correlation::Found { target, .. } => target_name(&target),
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
            vec![("namespace", "default"), ("rollout", "web")],
        ] {
            let c = correlate(&labels(&pairs), &index, &rules);
            assert!(
                matches!(c, Correlation::NoWorkload(_)),
                "{pairs:?} gave {c:?}"
            );
        }
    }

    #[test]
    fn a_deployment_label_naming_an_argo_rollout_resolves_to_the_rollout() {
        let mut index = index();
        index.apply_rollout(
            crate::core::workload::tests::mk_rollout("shop", "cart"),
            ts(0),
        );
        let rules = CorrelationLabels::default();
        let c = correlate(
            &labels(&[("namespace", "shop"), ("deployment", "cart")]),
            &index,
            &rules,
        );
        let Correlation::Found { target, via } = c else {
            panic!("expected the rollout, got {c:?}");
        };
        assert_eq!(target_name(&target), "rollout cart");
        assert!(via.contains("deployment=\"cart\""), "{via}");
        assert!(
            via.contains("no Deployment of that name but an Argo Rollout"),
            "{via}"
        );
        // A Deployment of the name still wins, and neither gives a clear no-workload.
        let c = correlate(
            &labels(&[("namespace", "default"), ("deployment", "web")]),
            &index,
            &rules,
        );
        assert_eq!(found(c), "web");
        let c = correlate(
            &labels(&[("namespace", "shop"), ("deployment", "nope")]),
            &index,
            &rules,
        );
        let Correlation::NoWorkload(why) = c else {
            panic!("expected no workload, got {c:?}");
        };
        assert!(
            why.contains("no Deployment or Argo Rollout shop/nope"),
            "{why}"
        );
    }

    #[test]
    fn two_deployments_with_the_same_app_label_are_ambiguous() {
        let mut index = index();
        let mut twin = mk_deployment("web-canary", "nginx:2");
        twin.template = twin
            .template
            .edited(|t| t["metadata"]["labels"]["app"] = "web".into());
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
