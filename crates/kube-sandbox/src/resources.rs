//! What a resource is to the sandbox: the [`ResourceDef`] type (one row of the table in
//! `kinds.rs`) and the [`Registry`] of rows served under the current options.
//!
//! A row says where the resource lives (group, version, plural), how discovery describes it
//! (kind, singular, short names, scope, subresources), and which server-side semantics apply
//! (status subresource policy, scale subresource paths, generation policy, whether strategic
//! merge patch is accepted, which field selectors are allowed, defaulting, and the columns
//! of its server-side printed Table). Storage, discovery, routing and printing are generic
//! over rows, so serving a new resource means adding a row to `kinds.rs`, nothing else.
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

/// Checks an object after defaulting; `Err((field, detail))` is answered 422 Invalid.
pub type Validator = fn(&Value) -> Result<(), defaults::Invalid>;

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
    pub validate: Option<Validator>,
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

/// The rows served under the given options, in table order.
#[derive(Debug, Clone)]
pub struct Registry {
    pub defs: Vec<ResourceDef>,
}

impl Registry {
    pub fn new(argo_and_istio: bool) -> Self {
        let defs = super::kinds::table()
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
