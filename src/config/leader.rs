//! `[leader_election]`: how replicas sharing a PostgreSQL store elect the one that decides and
//! acts (docs/ha.md). Election is on whenever `store.url` is `postgres://…` and off with
//! SQLite; nothing here needs setting for it to work.
//!
//! ```toml
//! [leader_election]
//! lease_name = "rollbackd"      # the coordination.k8s.io/v1 Lease
//! lease_namespace = ""          # default: the client's namespace (the pod's, in a cluster)
//! identity = ""                 # default: $POD_NAME or the host name, plus a random suffix
//! lease_duration = "15s"        # how long a Lease stays held after its last renewal
//! renew_deadline = "10s"        # a leader stops leading this long after its last renewal
//! retry_period = "2s"           # how often the Lease is renewed or tried
//! ```
//!
//! The defaults are client-go's (Kubernetes controllers, Argo Rollouts): a crashed leader is
//! replaced within about 15 s, and a leader cut off from the API server stops at 10 s, 5 s
//! before anyone may take its Lease.

use std::time::Duration;

use serde::Deserialize;

use crate::k8s::lease::LeaseSettings;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LeaderElectionConfig {
    pub lease_name: String,
    pub lease_namespace: String,
    pub identity: String,
    #[serde(with = "humantime_serde")]
    pub lease_duration: Duration,
    #[serde(with = "humantime_serde")]
    pub renew_deadline: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_period: Duration,
}

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        LeaderElectionConfig {
            lease_name: "rollbackd".into(),
            lease_namespace: String::new(),
            identity: String::new(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl LeaderElectionConfig {
    /// The elector's settings; `default_namespace` is the client's when none is set.
    pub fn settings(&self, default_namespace: &str) -> LeaseSettings {
        LeaseSettings {
            name: self.lease_name.clone(),
            namespace: if self.lease_namespace.is_empty() {
                default_namespace.to_string()
            } else {
                self.lease_namespace.clone()
            },
            identity: if self.identity.is_empty() {
                default_identity()
            } else {
                self.identity.clone()
            },
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
        }
    }

    pub(super) fn validate(&self, problem: &mut impl FnMut(&str, String)) {
        let key = |k: &str| format!("leader_election.{k}");
        if !super::is_dns_subdomain(&self.lease_name) {
            problem(
                &key("lease_name"),
                format!("{:?} is not a valid object name", self.lease_name),
            );
        }
        if !self.lease_namespace.is_empty() && !super::is_dns_label(&self.lease_namespace) {
            problem(
                &key("lease_namespace"),
                format!("{:?} is not a valid namespace name", self.lease_namespace),
            );
        }
        if self.lease_duration < Duration::from_secs(1) || self.lease_duration.subsec_nanos() != 0 {
            problem(
                &key("lease_duration"),
                "must be a whole number of seconds, at least 1s (a Lease holds whole seconds)"
                    .into(),
            );
        }
        if self.renew_deadline >= self.lease_duration {
            problem(
                &key("renew_deadline"),
                "must be shorter than leader_election.lease_duration: a leader must stop before another may take the lease".into(),
            );
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            problem(
                &key("retry_period"),
                "must be above 0 and shorter than leader_election.renew_deadline".into(),
            );
        }
    }
}

/// `$POD_NAME` (the Downward API) or the host name, and a random suffix: two replicas never
/// share an identity, not even two processes on one machine.
fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "rollbackd".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}_{}", &suffix[..8])
}
