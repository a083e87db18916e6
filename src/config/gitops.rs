//! `[gitops]`: what rollbackd does when a workload it would revert is managed by an Argo CD
//! Application with automated self-heal (which would put the bad version back within seconds).
//!
//! ```toml
//! [gitops]
//! mode = "notify"               # or "suspend-and-undo", "sync-to-previous"
//! argocd_namespace = "argocd"   # where the Applications live
//! ```

use serde::Deserialize;

use crate::core::gitops::{GitopsMode, GitopsPolicy};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GitopsConfig {
    pub mode: GitopsMode,
    pub argocd_namespace: String,
}

impl Default for GitopsConfig {
    fn default() -> Self {
        let policy = GitopsPolicy::default();
        GitopsConfig {
            mode: policy.mode,
            argocd_namespace: policy.argocd_namespace,
        }
    }
}

impl GitopsConfig {
    /// The engine's view of this section.
    pub fn policy(&self) -> GitopsPolicy {
        GitopsPolicy {
            mode: self.mode,
            argocd_namespace: self.argocd_namespace.clone(),
        }
    }

    pub(super) fn validate(&self, problem: &mut impl FnMut(&str, String)) {
        if !super::is_dns_label(&self.argocd_namespace) {
            problem(
                "gitops.argocd_namespace",
                format!("{:?} is not a valid namespace name", self.argocd_namespace),
            );
        }
    }
}
