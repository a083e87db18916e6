//! Kubernetes adapters: the client, watches that feed the workload index, and the executor.
//!
//! Deployments and ReplicaSets are read as `DynamicObject`s so that pod templates reach the
//! index, and any patch built from them, exactly as the API server sent them: no field is lost
//! to a typed model that predates it.

pub mod events;
pub mod executor;
pub mod lease;
mod objects;
pub mod patch;
mod selector;
mod timing;
pub mod watch;

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};

pub use objects::{
    application_state, deployment_state, namespace_state, replica_set_state, rollout_state,
    service_state, virtual_service_state,
};
pub use selector::selector_string;

/// `apps/v1` Deployments.
pub fn deployments() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apps", "v1", "Deployment"),
        "deployments",
    )
}

/// `apps/v1` ReplicaSets.
pub fn replica_sets() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apps", "v1", "ReplicaSet"),
        "replicasets",
    )
}

/// Argo Rollouts' `argoproj.io/v1alpha1` Rollouts.
pub fn rollouts() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout"),
        "rollouts",
    )
}

/// Core `v1` Namespaces.
pub fn namespaces() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Namespace"), "namespaces")
}

/// Argo CD's `argoproj.io/v1alpha1` Applications.
pub fn applications() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application"),
        "applications",
    )
}

/// Core `v1` Services.
pub fn services() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Service"), "services")
}

/// Istio VirtualServices at `version` (`v1beta1` or `v1`).
pub fn virtual_services(version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", version, "VirtualService"),
        "virtualservices",
    )
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read kubeconfig {path}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("cannot infer a Kubernetes configuration (in-cluster, $KUBECONFIG, ~/.kube/config)")]
    Infer(#[source] kube::config::InferConfigError),
    #[error("cannot build a Kubernetes client")]
    Build(#[source] kube::Error),
}

/// A client from an explicit kubeconfig, or inferred (in-cluster, then `$KUBECONFIG`, then
/// `~/.kube/config`) when none is given. With `metrics`, every call is timed.
pub async fn client(
    kubeconfig: Option<&Path>,
    metrics: Option<&crate::metrics::Metrics>,
) -> Result<kube::Client, ClientError> {
    let mut config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|source| ClientError::Kubeconfig {
                path: path.display().to_string(),
                source,
            })?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|source| ClientError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })?
        }
        None => kube::Config::infer().await.map_err(ClientError::Infer)?,
    };
    // kube-client would resend any request answered 429, 503 or 504, a PATCH included, and a
    // 504 may have been applied. rollbackd retries itself: a write whose answer was lost is
    // settled by reading the object again, never sent again blind.
    config.default_retry = false;
    let builder = kube::client::ClientBuilder::try_from(config).map_err(ClientError::Build)?;
    Ok(match metrics {
        Some(m) => builder.with_layer(&timing::TimingLayer(m.clone())).build(),
        None => builder.build(),
    })
}
