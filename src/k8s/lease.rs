//! Leader election on a coordination.k8s.io/v1 Lease, the way client-go's `leaderelection`
//! does it: the holder renews the Lease every `retry_period`; another replica takes it only
//! once the record it last saw has not changed for the Lease's duration, measured on its own
//! monotonic clock; every write carries the `resourceVersion` it was based on, so two replicas
//! racing for the Lease cannot both win (the API server answers 409 to the slower one).
//!
//! Data model: [`Observed`] is what this replica last saw of the Lease and when (its own
//! clock, never the timestamps in the record, so clock skew between nodes does not matter).
//! [`elect`] runs the loop and publishes `true` while this replica leads.
//!
//! A leader stops leading at `last successful renewal + renew_deadline`, counted from the
//! moment the renewal was *sent*: every other replica counts the Lease's duration from the
//! moment it *saw* that renewal, which is later. With `renew_deadline < lease_duration` the
//! leader has stopped before anyone may take the Lease, even when its renewals fail because
//! it is cut off from the API server. The store's fencing epoch (`store::fence`) covers what
//! timing cannot: a process paused past its deadline.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

/// Where the Lease is and how this replica takes part (`[leader_election]`).
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    /// This replica's `holderIdentity`.
    pub identity: String,
    /// How long a Lease stays held after its last renewal (whole seconds in the Lease).
    pub lease_duration: Duration,
    /// How long a leader keeps leading without a successful renewal; shorter than
    /// `lease_duration`.
    pub renew_deadline: Duration,
    /// How often the Lease is renewed or tried.
    pub retry_period: Duration,
}

/// What this replica last saw of the Lease, and when by its own clock.
#[derive(Clone, Debug)]
struct Observed {
    resource_version: String,
    holder: Option<String>,
    duration: Duration,
    at: Instant,
}

/// This replica's part in the election.
pub struct Election {
    /// `true` while this replica leads.
    pub leading: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Runs the election until [`Election::stop`], or until `leading` and its clones are all
/// dropped.
pub fn elect(api: Api<Lease>, settings: LeaseSettings) -> Election {
    let (leading, rx) = watch::channel(false);
    Election {
        leading: rx,
        task: tokio::spawn(run(api, settings, leading)),
    }
}

impl Election {
    /// Leaves the election: a leader gives the Lease up, so that another replica takes it at
    /// once rather than when it expires. Waits at most `limit` for that.
    pub async fn stop(self, limit: Duration) {
        drop(self.leading);
        let _ = tokio::time::timeout(limit, self.task).await;
    }
}

async fn run(api: Api<Lease>, settings: LeaseSettings, leading: watch::Sender<bool>) {
    let mut observed: Option<Observed> = None;
    // When the last successful renewal was sent, while leading.
    let mut renewed: Option<Instant> = None;
    let mut next_try = Instant::now();
    loop {
        let deadline = renewed.map(|at| at + settings.renew_deadline);
        let attempt = async {
            tokio::time::sleep_until(next_try).await;
            let sent = Instant::now();
            let result = tokio::time::timeout(
                settings.retry_period,
                try_acquire_or_renew(&api, &settings, &mut observed),
            )
            .await;
            (sent, result)
        };
        tokio::select! {
            () = leading.closed() => {
                if renewed.is_some() {
                    release(&api, &settings).await;
                }
                return;
            }
            () = sleep_until_some(deadline) => {
                warn!(
                    lease = %settings.name,
                    deadline = ?settings.renew_deadline,
                    "no renewal of the lease succeeded within the renew deadline; no longer leading"
                );
                renewed = None;
                leading.send_replace(false);
            }
            (sent, result) = attempt => {
                next_try = sent + settings.retry_period;
                match result {
                    Ok(Ok(true)) => {
                        renewed = Some(sent);
                        if !*leading.borrow() {
                            info!(lease = %settings.name, identity = %settings.identity, "took the lease; leading");
                            leading.send_replace(true);
                        }
                    }
                    Ok(Ok(false)) => {
                        if renewed.take().is_some() {
                            warn!(lease = %settings.name, holder = ?observed.as_ref().and_then(|o| o.holder.as_deref()), "another replica holds the lease; no longer leading");
                            leading.send_replace(false);
                        }
                    }
                    Ok(Err(e)) => {
                        warn!(lease = %settings.name, error = %e, "could not renew or take the lease");
                    }
                    Err(_) => {
                        warn!(lease = %settings.name, timeout = ?settings.retry_period, "renewing or taking the lease timed out");
                    }
                }
            }
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Gives the Lease up (no holder, renewed now): the next replica to try takes it at once.
/// Best effort, bounded by `retry_period`: if it fails, the Lease expires as after a crash.
async fn release(api: &Api<Lease>, settings: &LeaseSettings) {
    let attempt = async {
        let mut lease = api.get(&settings.name).await?;
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        api.replace(&settings.name, &PostParams::default(), &lease)
            .await
            .map(drop)
    };
    match tokio::time::timeout(settings.retry_period, attempt).await {
        Ok(Ok(())) => info!(lease = %settings.name, "gave the lease up"),
        Ok(Err(e)) => {
            warn!(lease = %settings.name, error = %e, "could not give the lease up; it expires instead")
        }
        Err(_) => {
            warn!(lease = %settings.name, "giving the lease up timed out; it expires instead")
        }
    }
}

/// One round: `true` if this replica holds the Lease after it (took or renewed it).
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    settings: &LeaseSettings,
    observed: &mut Option<Observed>,
) -> Result<bool, kube::Error> {
    let now = Instant::now();
    let Some(mut lease) = api.get_opt(&settings.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(settings.name.clone()),
                namespace: Some(settings.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(spec_for(settings, None)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(created) => {
                *observed = Some(observe(&created, now));
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        };
    };
    let seen = observe(&lease, now);
    // The clock starts when the record changes, not when it is read again.
    let unchanged_since = match observed {
        Some(o) if o.resource_version == seen.resource_version => o.at,
        _ => now,
    };
    *observed = Some(Observed {
        at: unchanged_since,
        ..seen.clone()
    });
    let mine = seen.holder.as_deref() == Some(settings.identity.as_str());
    if seen.holder.is_some() && !mine && now < unchanged_since + seen.duration {
        return Ok(false);
    }
    let previous = lease.spec.take();
    lease.spec = Some(spec_for(settings, previous.as_ref()));
    match api
        .replace(&settings.name, &PostParams::default(), &lease)
        .await
    {
        Ok(updated) => {
            *observed = Some(observe(&updated, now));
            Ok(true)
        }
        Err(e) if is_conflict(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The spec this replica writes: held by it, renewed now; the acquire time and the count of
/// transitions change only when the holder does.
fn spec_for(settings: &LeaseSettings, previous: Option<&LeaseSpec>) -> LeaseSpec {
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let held_by_me = previous
        .and_then(|p| p.holder_identity.as_deref())
        .is_some_and(|h| h == settings.identity);
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(settings.identity.clone()),
        lease_duration_seconds: Some(whole_seconds(settings.lease_duration)),
        acquire_time: if held_by_me {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(now.clone())
        },
        renew_time: Some(now),
        // A change of holder, from another replica or from none (a Lease given up).
        lease_transitions: Some(match previous {
            Some(_) if !held_by_me => transitions + 1,
            _ => transitions,
        }),
        ..LeaseSpec::default()
    }
}

fn observe(lease: &Lease, at: Instant) -> Observed {
    let spec = lease.spec.as_ref();
    Observed {
        resource_version: lease.metadata.resource_version.clone().unwrap_or_default(),
        holder: spec
            .and_then(|s| s.holder_identity.clone())
            .filter(|h| !h.is_empty()),
        duration: Duration::from_secs(
            spec.and_then(|s| s.lease_duration_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(0),
        ),
        at,
    }
}

/// A duration as the Lease's whole seconds, at least one.
fn whole_seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}
