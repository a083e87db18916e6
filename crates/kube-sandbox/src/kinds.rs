//! The table of kinds the sandbox serves: one [`ResourceDef`] row each.
//!
//! Serving another resource is adding a row here (with its Table columns if it has any);
//! discovery, storage, routing, watch, printing and OpenAPI pick it up. Rows gated by
//! [`Gate::ArgoAndIstio`] simulate CRDs that may or may not be installed.

use super::defaults;
use super::resources::{Cell, Column, Gate, GenerationPolicy, ResourceDef, ScaleDef, StatusPolicy};

const fn col(name: &'static str, ty: &'static str, cell: Cell, priority: u8) -> Column {
    Column {
        name,
        ty,
        cell,
        priority,
    }
}

const NAME_AGE: &[Column] = &[];

const DEPLOYMENT_COLUMNS: &[Column] = &[
    col(
        "Ready",
        "string",
        Cell::Ratio("status.readyReplicas", "spec.replicas"),
        0,
    ),
    col(
        "Up-to-date",
        "integer",
        Cell::Path("status.updatedReplicas"),
        0,
    ),
    col(
        "Available",
        "integer",
        Cell::Path("status.availableReplicas"),
        0,
    ),
    col(
        "Containers",
        "string",
        Cell::Each("spec.template.spec.containers", "name"),
        1,
    ),
    col(
        "Images",
        "string",
        Cell::Each("spec.template.spec.containers", "image"),
        1,
    ),
    col("Selector", "string", Cell::Selector("spec.selector"), 1),
];

const REPLICASET_COLUMNS: &[Column] = &[
    col("Desired", "integer", Cell::Path("spec.replicas"), 0),
    col("Current", "integer", Cell::Path("status.replicas"), 0),
    col("Ready", "integer", Cell::Path("status.readyReplicas"), 0),
    col(
        "Containers",
        "string",
        Cell::Each("spec.template.spec.containers", "name"),
        1,
    ),
    col(
        "Images",
        "string",
        Cell::Each("spec.template.spec.containers", "image"),
        1,
    ),
    col("Selector", "string", Cell::Selector("spec.selector"), 1),
];

const POD_COLUMNS: &[Column] = &[
    col("Status", "string", Cell::Path("status.phase"), 0),
    col("Node", "string", Cell::Path("spec.nodeName"), 1),
];

const NAMESPACE_COLUMNS: &[Column] = &[col("Status", "string", Cell::Path("status.phase"), 0)];

const SERVICE_COLUMNS: &[Column] = &[
    col("Type", "string", Cell::Path("spec.type"), 0),
    col("Cluster-IP", "string", Cell::Path("spec.clusterIP"), 0),
];

const LEASE_COLUMNS: &[Column] = &[col(
    "Holder",
    "string",
    Cell::Path("spec.holderIdentity"),
    0,
)];

const EVENT_COLUMNS: &[Column] = &[
    col("Type", "string", Cell::Path("type"), 0),
    col("Reason", "string", Cell::Path("reason"), 0),
    col("Message", "string", Cell::Path("message"), 0),
];

const ROLLOUT_COLUMNS: &[Column] = &[
    col("Desired", "integer", Cell::Path("spec.replicas"), 0),
    col("Current", "integer", Cell::Path("status.replicas"), 0),
    col(
        "Up-to-date",
        "integer",
        Cell::Path("status.updatedReplicas"),
        0,
    ),
    col(
        "Available",
        "integer",
        Cell::Path("status.availableReplicas"),
        0,
    ),
];

const VS_COLUMNS: &[Column] = &[
    col("Gateways", "string", Cell::Path("spec.gateways"), 0),
    col("Hosts", "string", Cell::Path("spec.hosts"), 0),
];

/// A row with the common defaults: namespaced, no subresources, no generation, built-in.
const fn row(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
) -> ResourceDef {
    ResourceDef {
        group,
        version,
        kind,
        plural,
        singular,
        namespaced: true,
        short_names: &[],
        categories: &[],
        status: None,
        scale: None,
        generation: GenerationPolicy::None,
        strategic_merge: true,
        field_labels: &[],
        defaulter: None,
        columns: NAME_AGE,
        gate: Gate::Always,
        return_deleted: false,
        validate: None,
    }
}

/// A custom resource (served from a CRD on a real cluster): generation on spec changes,
/// status subresource with the custom-resource rule, no strategic merge patch.
const fn custom(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
) -> ResourceDef {
    let mut r = row(group, version, kind, plural, singular);
    r.status = Some(StatusPolicy::OnlyStatus);
    r.generation = GenerationPolicy::Spec;
    r.strategic_merge = false;
    r.gate = Gate::ArgoAndIstio;
    r
}

/// The table. Order is the discovery order within a group version.
pub fn table() -> Vec<ResourceDef> {
    vec![
        ResourceDef {
            namespaced: false,
            short_names: &["ns"],
            status: Some(StatusPolicy::OnlyStatus),
            defaulter: Some(defaults::namespace),
            columns: NAMESPACE_COLUMNS,
            field_labels: &["status.phase"],
            ..row("", "v1", "Namespace", "namespaces", "namespace")
        },
        ResourceDef {
            short_names: &["po"],
            categories: &["all"],
            status: Some(StatusPolicy::OnlyStatus),
            field_labels: &[
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            ],
            defaulter: Some(defaults::pod),
            columns: POD_COLUMNS,
            return_deleted: true,
            ..row("", "v1", "Pod", "pods", "pod")
        },
        ResourceDef {
            short_names: &["svc"],
            categories: &["all"],
            status: Some(StatusPolicy::OnlyStatus),
            defaulter: Some(defaults::service),
            columns: SERVICE_COLUMNS,
            return_deleted: true,
            ..row("", "v1", "Service", "services", "service")
        },
        ResourceDef {
            short_names: &["cm"],
            ..row("", "v1", "ConfigMap", "configmaps", "configmap")
        },
        row("", "v1", "Secret", "secrets", "secret"),
        ResourceDef {
            short_names: &["sa"],
            ..row(
                "",
                "v1",
                "ServiceAccount",
                "serviceaccounts",
                "serviceaccount",
            )
        },
        ResourceDef {
            short_names: &["ev"],
            field_labels: &[
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ],
            columns: EVENT_COLUMNS,
            ..row("", "v1", "Event", "events", "event")
        },
        ResourceDef {
            short_names: &["deploy"],
            categories: &["all"],
            status: Some(StatusPolicy::KeepSpecAndLabels),
            scale: Some(ScaleDef {
                spec_replicas: "spec.replicas",
                status_replicas: "status.replicas",
                selector: "spec.selector",
            }),
            generation: GenerationPolicy::SpecAndAnnotations,
            defaulter: Some(defaults::deployment),
            validate: Some(defaults::validate_workload),
            columns: DEPLOYMENT_COLUMNS,
            ..row("apps", "v1", "Deployment", "deployments", "deployment")
        },
        ResourceDef {
            short_names: &["rs"],
            categories: &["all"],
            status: Some(StatusPolicy::KeepSpecAndLabels),
            scale: Some(ScaleDef {
                spec_replicas: "spec.replicas",
                status_replicas: "status.replicas",
                selector: "spec.selector",
            }),
            generation: GenerationPolicy::Spec,
            field_labels: &["status.replicas"],
            defaulter: Some(defaults::replicaset),
            validate: Some(defaults::validate_workload),
            columns: REPLICASET_COLUMNS,
            ..row("apps", "v1", "ReplicaSet", "replicasets", "replicaset")
        },
        ResourceDef {
            columns: LEASE_COLUMNS,
            ..row("coordination.k8s.io", "v1", "Lease", "leases", "lease")
        },
        ResourceDef {
            short_names: &["ev"],
            field_labels: &[
                "regarding.kind",
                "regarding.namespace",
                "regarding.name",
                "regarding.uid",
                "reason",
                "reportingController",
                "type",
            ],
            ..row("events.k8s.io", "v1", "Event", "events", "event")
        },
        ResourceDef {
            short_names: &["ro"],
            scale: Some(ScaleDef {
                spec_replicas: "spec.replicas",
                status_replicas: "status.HPAReplicas",
                selector: "status.selector",
            }),
            columns: ROLLOUT_COLUMNS,
            ..custom("argoproj.io", "v1alpha1", "Rollout", "rollouts", "rollout")
        },
        ResourceDef {
            short_names: &["ar"],
            ..custom(
                "argoproj.io",
                "v1alpha1",
                "AnalysisRun",
                "analysisruns",
                "analysisrun",
            )
        },
        ResourceDef {
            short_names: &["at"],
            ..custom(
                "argoproj.io",
                "v1alpha1",
                "AnalysisTemplate",
                "analysistemplates",
                "analysistemplate",
            )
        },
        // Argo CD's Application CRD has no status subresource: the controller writes status
        // with the rest of the object, and a user's patch may set `operation`.
        ResourceDef {
            short_names: &["app", "apps"],
            status: None,
            ..custom(
                "argoproj.io",
                "v1alpha1",
                "Application",
                "applications",
                "application",
            )
        },
        ResourceDef {
            short_names: &["vs"],
            categories: &["istio-io", "networking-istio-io"],
            columns: VS_COLUMNS,
            ..custom(
                "networking.istio.io",
                "v1",
                "VirtualService",
                "virtualservices",
                "virtualservice",
            )
        },
        ResourceDef {
            short_names: &["dr"],
            categories: &["istio-io", "networking-istio-io"],
            ..custom(
                "networking.istio.io",
                "v1",
                "DestinationRule",
                "destinationrules",
                "destinationrule",
            )
        },
        ResourceDef {
            short_names: &["vs"],
            categories: &["istio-io", "networking-istio-io"],
            columns: VS_COLUMNS,
            ..custom(
                "networking.istio.io",
                "v1beta1",
                "VirtualService",
                "virtualservices",
                "virtualservice",
            )
        },
        ResourceDef {
            short_names: &["dr"],
            categories: &["istio-io", "networking-istio-io"],
            ..custom(
                "networking.istio.io",
                "v1beta1",
                "DestinationRule",
                "destinationrules",
                "destinationrule",
            )
        },
    ]
}
