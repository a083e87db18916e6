//! Which optional kinds the cluster serves: Argo Rollouts (`argoproj.io/v1alpha1` rollouts)
//! and Istio VirtualServices (`networking.istio.io` v1, else v1beta1), Argo CD Applications
//! (`argoproj.io/v1alpha1` applications).
//!
//! A kind is "not installed" only when the API server said so: its group version answered
//! 404, or answered without the resource. Any other outcome (refused, timed out, an error
//! status) is retried with backoff, and readiness says discovery is failing meanwhile, so an
//! API outage at start no longer leaves Rollouts unwatched until a restart.

use tracing::{info, warn};

use super::health::Readiness;
use super::timing::{Backoff, Timings};
use super::{Kind, describe};

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("discovery of {group_version} failed: {}", describe(.source))]
    Failed {
        group_version: String,
        #[source]
        source: kube::Error,
    },
    #[error("discovery of {group_version} got no answer within {}", humantime::format_duration(*.after))]
    TimedOut {
        group_version: String,
        after: std::time::Duration,
    },
}

/// Deployments, ReplicaSets and Services always; Rollouts and VirtualServices when served.
/// Returns only once the API server has answered every question.
pub async fn kinds_served(
    client: &kube::Client,
    readiness: &Readiness,
    timings: Timings,
) -> Vec<Kind> {
    let mut kinds = vec![Kind::Deployments, Kind::ReplicaSets, Kind::Services];
    // One question for both Argo projects' kinds in argoproj.io/v1alpha1.
    let argo = served(client, "argoproj.io/v1alpha1", readiness, timings).await;
    if argo.iter().any(|r| r == "rollouts") {
        kinds.push(Kind::Rollouts);
    } else {
        info!(
            "Argo Rollouts (argoproj.io/v1alpha1 rollouts) is not installed; Rollouts are not watched"
        );
    }
    if argo.iter().any(|r| r == "applications") {
        kinds.push(Kind::Applications);
    } else {
        info!(
            "Argo CD (argoproj.io/v1alpha1 applications) is not installed; Applications are not watched and no workload is treated as GitOps-managed"
        );
    }
    let mut istio = None;
    for version in ["v1", "v1beta1"] {
        let group_version = format!("networking.istio.io/{version}");
        if served(client, &group_version, readiness, timings)
            .await
            .iter()
            .any(|r| r == "virtualservices")
        {
            istio = Some(version);
            break;
        }
    }
    match istio {
        Some(version) => kinds.push(Kind::VirtualServices(version.to_string())),
        None => info!(
            "Istio (networking.istio.io virtualservices) is not installed; VirtualServices are not watched"
        ),
    }
    kinds
}

/// The resources `group_version` serves (none when it is not served), asked until the API
/// server answers.
async fn served(
    client: &kube::Client,
    group_version: &str,
    readiness: &Readiness,
    timings: Timings,
) -> Vec<String> {
    let mut backoff = Backoff::new(timings.backoff_max);
    let mut failing = false;
    loop {
        match ask(client, group_version, timings).await {
            Ok(served) => {
                if failing {
                    info!(group_version, "discovery answered again");
                }
                return served;
            }
            Err(error) => {
                if !failing {
                    warn!(%error, "discovery failed; retrying with backoff (not deciding meanwhile)");
                    failing = true;
                }
                readiness.discovery_failed(error.to_string());
                tokio::time::sleep(backoff.next_pause()).await;
            }
        }
    }
}

async fn ask(
    client: &kube::Client,
    group_version: &str,
    timings: Timings,
) -> Result<Vec<String>, DiscoveryError> {
    let answer = tokio::time::timeout(timings.call, client.list_api_group_resources(group_version))
        .await
        .map_err(|_| DiscoveryError::TimedOut {
            group_version: group_version.to_string(),
            after: timings.call,
        })?;
    match answer {
        Ok(list) => Ok(list.resources.into_iter().map(|r| r.name).collect()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Vec::new()),
        Err(source) => Err(DiscoveryError::Failed {
            group_version: group_version.to_string(),
            source,
        }),
    }
}
