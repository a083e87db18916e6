//! Leader election against the sandbox, in process: the sandbox refuses a Lease update based
//! on a stale resourceVersion (409), of several electors exactly one leads, and a leader
//! whose renewals fail (sandbox fault injection) stops leading before its Lease expires. A
//! leader that leaves gives the Lease up; one killed is replaced once it expires (tests/ha.rs).

mod common;

use std::time::Duration;

use common::{sandbox_env, wait_until};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{Api, PostParams};
use kube_sandbox::{Fault, FaultAction};
use rollbackd::k8s::lease::{Election, LeaseSettings, elect};

fn settings(identity: &str) -> LeaseSettings {
    LeaseSettings {
        name: "rollbackd".into(),
        namespace: "default".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1000),
        retry_period: Duration::from_millis(200),
    }
}

async fn holder(api: &Api<Lease>) -> Option<String> {
    api.get_opt("rollbackd")
        .await
        .expect("lease read")
        .and_then(|l| l.spec?.holder_identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_update_from_a_stale_resource_version_is_refused() {
    let env = sandbox_env().await;
    let api: Api<Lease> = Api::namespaced(env.client.clone(), "default");
    let mut lease = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some("l".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        }),
    };
    let created = api
        .create(&PostParams::default(), &lease)
        .await
        .expect("create");
    lease.metadata.resource_version = created.metadata.resource_version.clone();
    lease.spec.as_mut().expect("spec").holder_identity = Some("b".into());
    let updated = api
        .replace("l", &PostParams::default(), &lease)
        .await
        .expect("an update from the current resourceVersion succeeds");
    assert_ne!(
        updated.metadata.resource_version,
        created.metadata.resource_version
    );
    // The same update again: its resourceVersion is now stale.
    lease.spec.as_mut().expect("spec").holder_identity = Some("c".into());
    match api.replace("l", &PostParams::default(), &lease).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 409, "{status:?}"),
        other => panic!("a stale update must be a 409 Conflict: {other:?}"),
    }
    let now = api.get("l").await.expect("read");
    assert_eq!(
        now.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("b")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_three_electors_exactly_one_leads_and_another_takes_over_when_it_stops() {
    let env = sandbox_env().await;
    let api: Api<Lease> = Api::namespaced(env.client.clone(), "default");
    let mut electors: Vec<(String, Election)> = ["a", "b", "c"]
        .iter()
        .map(|id| (id.to_string(), elect(api.clone(), settings(id))))
        .collect();
    let leaders = |electors: &[(String, Election)]| -> Vec<String> {
        electors
            .iter()
            .filter(|(_, election)| *election.leading.borrow())
            .map(|(id, _)| id.clone())
            .collect()
    };
    wait_until("one leader", Duration::from_secs(10), || {
        let n = leaders(&electors).len();
        async move { n == 1 }
    })
    .await;
    // It stays one, through several renewals.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(leaders(&electors).len(), 1, "{:?}", leaders(&electors));
    }
    let first = leaders(&electors).remove(0);
    assert_eq!(holder(&api).await.as_deref(), Some(first.as_str()));

    // The leader leaves the election and gives the Lease up; another takes it, and the count
    // of transitions goes up by one for each change of holder (to none, then to it).
    let at = electors
        .iter()
        .position(|(id, _)| *id == first)
        .expect("leader");
    let (_, leaving) = electors.remove(at);
    leaving.stop(Duration::from_secs(5)).await;
    let after = api
        .get("rollbackd")
        .await
        .expect("lease")
        .spec
        .expect("spec");
    assert_ne!(
        after.holder_identity.as_deref(),
        Some(first.as_str()),
        "given up: {after:?}"
    );
    wait_until("another leader", Duration::from_secs(10), || {
        let n = leaders(&electors).len();
        async move { n == 1 }
    })
    .await;
    let second = leaders(&electors).remove(0);
    assert_ne!(second, first);
    let lease = api.get("rollbackd").await.expect("lease");
    let spec = lease.spec.expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some(second.as_str()));
    assert_eq!(spec.lease_transitions, Some(1), "{spec:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_renewals_fail_stops_before_its_lease_expires() {
    let env = sandbox_env().await;
    let api: Api<Lease> = Api::namespaced(env.client.clone(), "default");
    let s = settings("cut-off");
    let election = elect(api.clone(), s.clone());
    let mut leading = election.leading.clone();
    tokio::time::timeout(Duration::from_secs(10), leading.wait_for(|l| *l))
        .await
        .expect("leads within 10s")
        .expect("election runs");
    // The API server answers every Lease request with 503 from now on.
    env.sandbox.inject_fault(Fault {
        verb: None,
        resource: Some("leases".into()),
        count: 10_000,
        action: FaultAction::Status(503),
    });
    let cut_off = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), leading.wait_for(|l| !*l))
        .await
        .expect("stops leading within 10s")
        .expect("election runs");
    let stopped_at = jiff::Timestamp::now();
    let stopped_after = cut_off.elapsed();
    env.sandbox.clear_faults();
    // The Lease as last renewed: it is held until renewTime + leaseDurationSeconds. The leader
    // stopped before then, so no other replica could have taken it while it still led.
    let spec = api
        .get("rollbackd")
        .await
        .expect("lease")
        .spec
        .expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("cut-off"));
    let renewed = spec.renew_time.expect("renewTime").0;
    let expires = renewed
        + jiff::SignedDuration::from_secs(i64::from(
            spec.lease_duration_seconds.expect("duration"),
        ));
    assert!(
        stopped_at < expires,
        "stopped leading at {stopped_at}, after the lease expired at {expires}"
    );
    eprintln!("stopped leading {stopped_after:?} after the API server was cut off");
    // Once the API server answers again, it leads again.
    tokio::time::timeout(Duration::from_secs(10), leading.wait_for(|l| *l))
        .await
        .expect("leads again within 10s")
        .expect("election runs");
}
