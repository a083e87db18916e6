//! The resource table: every kind the sandbox serves is one [`ResourceDef`] row.
//!
//! A row says where the resource lives (group, version, plural), how discovery describes it
//! (kind, singular, short names, scope, subresources), and which server-side semantics apply
//! (status subresource policy, scale subresource paths, generation policy, whether strategic
//! merge patch is accepted, which field selectors are allowed, defaulting, and the columns
//! of its server-side printed Table). Storage, discovery, routing and printing are generic
//! over rows, so serving a new resource means adding a row here, nothing else.
//! Rows that share `group` and `plural` but differ in `version` share one storage (as the
//! versions of one resource do on a real server); responses carry the requested version.

use serde_json::Value;

use super::defaults;

/// How a write to `/status` differs from a write to the main resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusPolicy {
    /// Custom-resource rule: a status write changes `status` only, a main write never does.
    OnlyStatus,
    /// apps/v1 rule: a status write keeps `spec` and `metadata.labels` from the stored object
    /// but may change other metadata (the Deployment controller writes annotations this way).
    KeepSpecAndLabels,
}

/// When `metadata.generation` is bumped on update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenerationPolicy {
    /// The resource has no generation (pods, services, ...).
    None,
    /// Bumped when anything outside `metadata` and `status` changes.
    Spec,
    /// Bumped on spec changes and on annotation changes (apps/v1 Deployment).
    SpecAndAnnotations,
}

/// Where the `/scale` subresource reads and writes (dotted paths into the object).
#[derive(Debug, Clone, Copy)]
pub struct ScaleDef {
    pub spec_replicas: &'static str,
    pub status_replicas: &'static str,
    /// A label selector object (`spec.selector`) formatted into `status.selector`.
    pub selector: &'static str,
}

/// How one Table cell is computed from the object.
#[derive(Debug, Clone, Copy)]
pub enum Cell {
    /// A dotted path; missing values print as `<none>` (strings) or 0 (integers).
    Path(&'static str),
    /// `a/b` of two integer paths, missing as 0.
    Ratio(&'static str, &'static str),
    /// Comma-joined `field` of every element of the list at `path`.
    Each(&'static str, &'static str),
    /// A label selector object formatted as `k=v,...`.
    Selector(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    /// OpenAPI type of the column: "string" or "integer".
    pub ty: &'static str,
    pub cell: Cell,
    /// 0 is always shown, 1 only with `-o wide`.
    pub priority: u8,
}

/// Which serving option gates a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Always,
    /// Served only with `SandboxOptions::argo_and_istio` (simulates installed CRDs).
    ArgoAndIstio,
}

#[derive(Debug, Clone)]
pub struct ResourceDef {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub status: Option<StatusPolicy>,
    pub scale: Option<ScaleDef>,
    pub generation: GenerationPolicy,
    /// Built-in types accept strategic merge patch; custom resources answer 415.
    pub strategic_merge: bool,
    /// Field-selector labels beyond metadata.name and metadata.namespace.
    pub field_labels: &'static [&'static str],
    pub defaulter: Option<fn(&mut Value)>,
    pub columns: &'static [Column],
    pub gate: Gate,
    /// Validation after defaulting, on create and on every main-resource write.
    pub validate: Option<fn(&Value) -> Result<(), defaults::Invalid>>,
    /// An immediate delete answers with the object (pods, services) rather than a Status.
    pub return_deleted: bool,
}

impl ResourceDef {
    /// `deployments.apps`, or `pods` for the core group: the name used in error messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Deployment.apps`, or `Pod`: the name used in Invalid messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// `apps/v1`, or `v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage key shared by all versions of this resource.
    pub fn storage_key(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }
}

const NAME_AGE: &[Column] = &[];

const DEPLOYMENT_COLUMNS: &[Column] = &[
    Column {
        name: "Ready",
        ty: "string",
        cell: Cell::Ratio("status.readyReplicas", "spec.replicas"),
        priority: 0,
    },
    Column {
        name: "Up-to-date",
        ty: "integer",
        cell: Cell::Path("status.updatedReplicas"),
        priority: 0,
    },
    Column {
        name: "Available",
        ty: "integer",
        cell: Cell::Path("status.availableReplicas"),
        priority: 0,
    },
    Column {
        name: "Containers",
        ty: "string",
        cell: Cell::Each("spec.template.spec.containers", "name"),
        priority: 1,
    },
    Column {
        name: "Images",
        ty: "string",
        cell: Cell::Each("spec.template.spec.containers", "image"),
        priority: 1,
    },
    Column {
        name: "Selector",
        ty: "string",
        cell: Cell::Selector("spec.selector"),
        priority: 1,
    },
];

const REPLICASET_COLUMNS: &[Column] = &[
    Column {
        name: "Desired",
        ty: "integer",
        cell: Cell::Path("spec.replicas"),
        priority: 0,
    },
    Column {
        name: "Current",
        ty: "integer",
        cell: Cell::Path("status.replicas"),
        priority: 0,
    },
    Column {
        name: "Ready",
        ty: "integer",
        cell: Cell::Path("status.readyReplicas"),
        priority: 0,
    },
    Column {
        name: "Containers",
        ty: "string",
        cell: Cell::Each("spec.template.spec.containers", "name"),
        priority: 1,
    },
    Column {
        name: "Images",
        ty: "string",
        cell: Cell::Each("spec.template.spec.containers", "image"),
        priority: 1,
    },
    Column {
        name: "Selector",
        ty: "string",
        cell: Cell::Selector("spec.selector"),
        priority: 1,
    },
];

const POD_COLUMNS: &[Column] = &[
    Column {
        name: "Status",
        ty: "string",
        cell: Cell::Path("status.phase"),
        priority: 0,
    },
    Column {
        name: "Node",
        ty: "string",
        cell: Cell::Path("spec.nodeName"),
        priority: 1,
    },
];

const NAMESPACE_COLUMNS: &[Column] = &[Column {
    name: "Status",
    ty: "string",
    cell: Cell::Path("status.phase"),
    priority: 0,
}];

const SERVICE_COLUMNS: &[Column] = &[
    Column {
        name: "Type",
        ty: "string",
        cell: Cell::Path("spec.type"),
        priority: 0,
    },
    Column {
        name: "Cluster-IP",
        ty: "string",
        cell: Cell::Path("spec.clusterIP"),
        priority: 0,
    },
];

const LEASE_COLUMNS: &[Column] = &[Column {
    name: "Holder",
    ty: "string",
    cell: Cell::Path("spec.holderIdentity"),
    priority: 0,
}];

const EVENT_COLUMNS: &[Column] = &[
    Column {
        name: "Type",
        ty: "string",
        cell: Cell::Path("type"),
        priority: 0,
    },
    Column {
        name: "Reason",
        ty: "string",
        cell: Cell::Path("reason"),
        priority: 0,
    },
    Column {
        name: "Message",
        ty: "string",
        cell: Cell::Path("message"),
        priority: 0,
    },
];

const ROLLOUT_COLUMNS: &[Column] = &[
    Column {
        name: "Desired",
        ty: "integer",
        cell: Cell::Path("spec.replicas"),
        priority: 0,
    },
    Column {
        name: "Current",
        ty: "integer",
        cell: Cell::Path("status.replicas"),
        priority: 0,
    },
    Column {
        name: "Up-to-date",
        ty: "integer",
        cell: Cell::Path("status.updatedReplicas"),
        priority: 0,
    },
    Column {
        name: "Available",
        ty: "integer",
        cell: Cell::Path("status.availableReplicas"),
        priority: 0,
    },
];

const VS_COLUMNS: &[Column] = &[
    Column {
        name: "Gateways",
        ty: "string",
        cell: Cell::Path("spec.gateways"),
        priority: 0,
    },
    Column {
        name: "Hosts",
        ty: "string",
        cell: Cell::Path("spec.hosts"),
        priority: 0,
    },
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
            categories: &["all", "argoproj"],
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
            categories: &["all", "argoproj"],
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
            categories: &["all", "argoproj"],
            ..custom(
                "argoproj.io",
                "v1alpha1",
                "AnalysisTemplate",
                "analysistemplates",
                "analysistemplate",
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

/// The rows served under the given options, in table order.
#[derive(Debug, Clone)]
pub struct Registry {
    pub defs: Vec<ResourceDef>,
}

impl Registry {
    pub fn new(argo_and_istio: bool) -> Self {
        let defs = table()
            .into_iter()
            .filter(|d| d.gate == Gate::Always || argo_and_istio)
            .collect();
        Self { defs }
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceDef> {
        self.defs
            .iter()
            .find(|d| d.group == group && d.version == version && d.plural == plural)
    }

    /// Find by apiVersion string (`apps/v1`, `v1`) and plural.
    pub fn find_api(&self, api_version: &str, plural: &str) -> Option<&ResourceDef> {
        let (g, v) = split_api_version(api_version);
        self.find(g, v, plural)
    }

    /// Groups in discovery order, each with its versions in table order (first = preferred).
    pub fn groups(&self) -> Vec<(&'static str, Vec<&'static str>)> {
        let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
        for d in &self.defs {
            match out.iter_mut().find(|(g, _)| *g == d.group) {
                Some((_, vs)) => {
                    if !vs.contains(&d.version) {
                        vs.push(d.version);
                    }
                }
                None => out.push((d.group, vec![d.version])),
            }
        }
        out
    }

    pub fn in_group_version<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a ResourceDef> + 'a {
        self.defs
            .iter()
            .filter(move |d| d.group == group && d.version == version)
    }
}

pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}
