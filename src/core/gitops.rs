//! Argo CD Applications (`argoproj.io/v1alpha1` `applications`) as the engine sees them: which
//! Application manages a workload, whether it heals drift on its own, and its sync history.
//!
//! Detection follows Argo CD's resource tracking: the annotation
//! `argocd.argoproj.io/tracking-id` (`<app>:<group>/<kind>:<namespace>/<name>`, where `<app>`
//! may be `<app-namespace>_<app>`) when present, else the label `app.kubernetes.io/instance`
//! (the Application's name). The Application itself must be in the index (watched in
//! `gitops.argocd_namespace`); when its `status.resources` lists resources, the workload must be
//! among them. An Application with `spec.syncPolicy.automated.selfHeal` puts any change made
//! outside Git back within seconds, so a plain `kubectl rollout undo` does not stick.
//!
//! Suspending: rollbackd removes `spec.syncPolicy.automated` with a merge patch that keeps the
//! previous value, as JSON, in the annotation [`SUSPENDED_ANNOTATION`]; resuming puts it back.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::alert::LabelSet;
use super::workload::{ObjectKey, WorkloadIndex};

/// Argo CD's tracking annotation (tracking method `annotation` or `annotation+label`).
pub const TRACKING_ID_ANNOTATION: &str = "argocd.argoproj.io/tracking-id";
/// Argo CD's tracking label (tracking method `label`, the default before Argo CD 3.0).
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// Where rollbackd keeps an Application's `spec.syncPolicy.automated` while it is suspended.
pub const SUSPENDED_ANNOTATION: &str = "rollbackd.io/suspended-sync-policy";
/// The user name an Argo CD sync started by rollbackd is recorded under.
pub const SYNC_INITIATOR: &str = "rollbackd";

/// What rollbackd does about a workload whose Application would revert a rollback.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GitopsMode {
    /// Change nothing; tell on-call which Application and revision, and the command to run.
    #[default]
    Notify,
    /// Suspend the Application's automated sync, then revert as usual.
    SuspendAndUndo,
    /// Suspend automated sync and start an Argo CD sync to the revision before the bad one.
    SyncToPrevious,
}

/// `[gitops]` as the engine needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitopsPolicy {
    pub mode: GitopsMode,
    /// The namespace Argo CD Applications are read from.
    pub argocd_namespace: String,
}

impl Default for GitopsPolicy {
    fn default() -> Self {
        GitopsPolicy {
            mode: GitopsMode::Notify,
            argocd_namespace: "argocd".into(),
        }
    }
}

/// One entry of an Application's `status.history`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    pub id: i64,
    pub revision: String,
    pub deployed_at: Option<String>,
}

/// A resource listed in an Application's `status.resources`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedResource {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ApplicationState {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    /// `spec.syncPolicy.automated`; `None` when automated sync is off (or `enabled: false`).
    pub automated: Option<Value>,
    /// `status.history`, oldest first (by id).
    pub history: Vec<HistoryEntry>,
    /// `status.resources`; empty when the status does not list them.
    pub resources: Vec<ManagedResource>,
    /// The annotation [`SUSPENDED_ANNOTATION`], when rollbackd suspended automated sync.
    pub suspended: Option<String>,
    /// `operation`: a sync requested and not yet picked up by Argo CD.
    pub operation: Option<Value>,
}

impl ApplicationState {
    /// Whether Argo CD puts live drift back on its own: automated sync with `selfHeal`.
    pub fn self_heal(&self) -> bool {
        self.automated
            .as_ref()
            .and_then(|a| a.get("selfHeal"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// The live (latest) history entry and the latest earlier one with another revision: the
    /// bad one and the last good one.
    pub fn last_good(&self) -> (Option<&HistoryEntry>, Option<&HistoryEntry>) {
        let Some(live) = self.history.last() else {
            return (None, None);
        };
        let good = self
            .history
            .iter()
            .rev()
            .find(|e| e.revision != live.revision);
        (Some(live), good)
    }

    /// `argocd app …` takes the name alone for Applications in the control-plane namespace.
    pub fn cli_name(&self) -> &str {
        &self.name
    }

    fn lists(&self, group: &str, kind: &str, namespace: &str, name: &str) -> bool {
        self.resources.is_empty()
            || self.resources.iter().any(|r| {
                r.group == group && r.kind == kind && r.namespace == namespace && r.name == name
            })
    }
}

/// `spec.syncPolicy.automated` from an Application's spec: `None` when off.
pub fn automated_of(spec: &Value) -> Option<Value> {
    let automated = spec.pointer("/syncPolicy/automated")?;
    if automated.is_null() || automated.get("enabled").and_then(Value::as_bool) == Some(false) {
        return None;
    }
    Some(automated.clone())
}

/// Parses `<app>:<group>/<kind>:<namespace>/<name>` into (app namespace, app name, group, kind,
/// namespace, name); the app namespace is `None` unless given as `<ns>_<app>`.
pub fn parse_tracking_id(id: &str) -> Option<TrackingId> {
    let (app, rest) = id.split_once(':')?;
    let (group_kind, ns_name) = rest.split_once(':')?;
    let (group, kind) = group_kind.split_once('/')?;
    let (namespace, name) = ns_name.split_once('/')?;
    let (app_namespace, app) = match app.split_once('_') {
        Some((ns, app)) => (Some(ns.to_string()), app),
        None => (None, app),
    };
    if app.is_empty() || kind.is_empty() || name.is_empty() {
        return None;
    }
    Some(TrackingId {
        app_namespace,
        app: app.to_string(),
        group: group.to_string(),
        kind: kind.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackingId {
    pub app_namespace: Option<String>,
    pub app: String,
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// A workload as the GitOps check looks at it.
#[derive(Clone, Copy, Debug)]
pub struct TrackedObject<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub labels: &'a LabelSet,
    pub annotations: &'a LabelSet,
}

/// Who manages a workload, as far as the index knows.
#[derive(Clone, Debug, PartialEq)]
pub enum Management<'a> {
    /// No tracking annotation or label points at an Application.
    Unmanaged,
    /// The tracking annotation names an Application the index does not hold.
    UnknownApplication {
        namespace: String,
        name: String,
    },
    Application(&'a ApplicationState),
}

impl WorkloadIndex {
    pub fn apply_application(&mut self, app: ApplicationState) {
        self.applications
            .insert((app.namespace.clone(), app.name.clone()), app);
    }

    pub fn delete_application(&mut self, namespace: &str, name: &str) {
        self.applications
            .remove(&(namespace.to_string(), name.to_string()));
    }

    pub fn reset_applications(&mut self, scope: Option<&str>, all: Vec<ApplicationState>) {
        self.applications
            .retain(|(ns, _), _| scope.is_some_and(|s| s != ns));
        self.applications.extend(
            all.into_iter()
                .map(|a| ((a.namespace.clone(), a.name.clone()), a)),
        );
    }

    pub fn application(&self, namespace: &str, name: &str) -> Option<&ApplicationState> {
        let key: ObjectKey = (namespace.to_string(), name.to_string());
        self.applications.get(&key)
    }

    /// The Argo CD Application that manages `obj`, looked up in `argocd_namespace`.
    pub fn managing_application(
        &self,
        obj: TrackedObject<'_>,
        argocd_namespace: &str,
    ) -> Management<'_> {
        let (app_namespace, app, by_annotation) = match obj.annotations.get(TRACKING_ID_ANNOTATION)
        {
            Some(id) => match parse_tracking_id(id) {
                // A tracking id copied from another object does not make it managed.
                Some(t)
                    if t.kind == obj.kind
                        && t.group == obj.group
                        && t.name == obj.name
                        && (t.namespace.is_empty() || t.namespace == obj.namespace) =>
                {
                    let ns = t.app_namespace.unwrap_or_else(|| argocd_namespace.into());
                    (ns, t.app, true)
                }
                _ => return Management::Unmanaged,
            },
            None => match obj.labels.get(INSTANCE_LABEL) {
                Some(app) => (argocd_namespace.to_string(), app.clone(), false),
                None => return Management::Unmanaged,
            },
        };
        match self.application(&app_namespace, &app) {
            Some(a) if a.lists(obj.group, obj.kind, obj.namespace, obj.name) => {
                Management::Application(a)
            }
            // The instance label is also Helm's release label: without the Application it
            // says nothing about Argo CD.
            Some(_) => Management::Unmanaged,
            None if by_annotation => Management::UnknownApplication {
                namespace: app_namespace,
                name: app,
            },
            None => Management::Unmanaged,
        }
    }
}

/// The merge patch that suspends `app`'s automated sync (keeping the previous policy in
/// [`SUSPENDED_ANNOTATION`]) and, with `revision`, starts a sync to it. `None` when there is
/// nothing to change. The resourceVersion makes the API server refuse it if the Application
/// changed since it was read.
pub fn suspend_patch(app: &ApplicationState, revision: Option<&str>) -> Option<Value> {
    let mut patch = json!({"metadata": {"resourceVersion": app.resource_version}});
    let mut changed = false;
    if let Some(automated) = &app.automated {
        patch["metadata"]["annotations"] = json!({SUSPENDED_ANNOTATION: automated.to_string()});
        patch["spec"] = json!({"syncPolicy": {"automated": null}});
        changed = true;
    }
    if let Some(revision) = revision {
        patch["operation"] = json!({
            "sync": {"revision": revision},
            "initiatedBy": {"username": SYNC_INITIATOR},
        });
        changed = true;
    }
    changed.then_some(patch)
}

/// How on-call turns automated sync back on after rollbackd suspended it.
pub fn resume_hint(app: &ApplicationState) -> String {
    let previous = app
        .automated
        .as_ref()
        .map(Value::to_string)
        .or_else(|| app.suspended.clone())
        .unwrap_or_else(|| r#"{"selfHeal":true}"#.into());
    format!(
        "to resume, once Git holds a good version: kubectl -n {} patch application {} --type merge -p '{{\"spec\":{{\"syncPolicy\":{{\"automated\":{previous}}}}},\"metadata\":{{\"annotations\":{{\"{SUSPENDED_ANNOTATION}\":null}}}}}}'",
        app.namespace, app.name
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn mk_app(name: &str, self_heal: bool, revisions: &[&str]) -> ApplicationState {
        ApplicationState {
            namespace: "argocd".into(),
            name: name.into(),
            uid: format!("uid-app-{name}"),
            resource_version: "7".into(),
            automated: Some(json!({"prune": true, "selfHeal": self_heal})),
            history: revisions
                .iter()
                .enumerate()
                .map(|(i, r)| HistoryEntry {
                    id: i as i64,
                    revision: r.to_string(),
                    deployed_at: None,
                })
                .collect(),
            resources: vec![],
            suspended: None,
            operation: None,
        }
    }

    #[test]
    fn tracking_ids_parse_with_and_without_an_app_namespace() {
        let t = parse_tracking_id("web:apps/Deployment:default/web").expect("parses");
        assert_eq!((t.app.as_str(), t.kind.as_str()), ("web", "Deployment"));
        assert_eq!(t.app_namespace, None);
        let t = parse_tracking_id("team_web:argoproj.io/Rollout:shop/web").expect("parses");
        assert_eq!(t.app_namespace.as_deref(), Some("team"));
        assert_eq!(t.group, "argoproj.io");
        assert!(parse_tracking_id("web").is_none());
    }

    #[test]
    fn the_last_good_revision_skips_repeats_of_the_live_one() {
        let app = mk_app("web", true, &["aaa", "bbb", "ccc", "ccc"]);
        let (live, good) = app.last_good();
        assert_eq!(live.map(|e| e.revision.as_str()), Some("ccc"));
        assert_eq!(good.map(|e| (e.id, e.revision.as_str())), Some((1, "bbb")));
        assert_eq!(mk_app("web", true, &["aaa"]).last_good().1, None);
    }

    #[test]
    fn the_suspend_patch_keeps_the_previous_policy_and_may_start_a_sync() {
        let app = mk_app("web", true, &["aaa", "bbb"]);
        let patch = suspend_patch(&app, Some("aaa")).expect("a patch");
        assert_eq!(patch["spec"]["syncPolicy"]["automated"], Value::Null);
        let kept: Value = serde_json::from_str(
            patch["metadata"]["annotations"][SUSPENDED_ANNOTATION]
                .as_str()
                .expect("annotation"),
        )
        .expect("json");
        assert_eq!(kept, json!({"prune": true, "selfHeal": true}));
        assert_eq!(patch["operation"]["sync"]["revision"], "aaa");
        let mut suspended = app.clone();
        suspended.automated = None;
        assert_eq!(suspend_patch(&suspended, None), None, "nothing to change");
    }

    #[test]
    fn the_instance_label_alone_needs_the_application() {
        let mut index = WorkloadIndex::default();
        let labels: LabelSet = [(INSTANCE_LABEL.to_string(), "web".to_string())].into();
        let none = LabelSet::new();
        let obj = TrackedObject {
            group: "apps",
            kind: "Deployment",
            namespace: "default",
            name: "web",
            labels: &labels,
            annotations: &none,
        };
        assert_eq!(
            index.managing_application(obj, "argocd"),
            Management::Unmanaged
        );
        index.apply_application(mk_app("web", true, &["aaa"]));
        assert!(matches!(
            index.managing_application(obj, "argocd"),
            Management::Application(a) if a.name == "web"
        ));
        let annotations: LabelSet = [(
            TRACKING_ID_ANNOTATION.to_string(),
            "other:apps/Deployment:default/web".to_string(),
        )]
        .into();
        let obj = TrackedObject {
            annotations: &annotations,
            ..obj
        };
        assert!(matches!(
            index.managing_application(obj, "argocd"),
            Management::UnknownApplication { name, .. } if name == "other"
        ));
    }
}
