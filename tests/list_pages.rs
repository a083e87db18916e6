//! The daemon reads lists page by page (500 objects a page) and misses nothing: with 1,100
//! other ReplicaSets before them in the namespace, `web`'s ReplicaSets come on the third page
//! of the first list, and an alert about `web` still rolls it back to revision 2's image. A
//! daemon that read only the first page would know no earlier revision of `web`.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::discovery::ApiResource;
use serde_json::json;

const FILLERS: usize = 1_100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_past_the_first_page_are_indexed() {
    let env = sandbox_env().await;
    let replica_sets: Api<DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        "default",
        &ApiResource::erase::<k8s_openapi::api::apps::v1::ReplicaSet>(&()),
    );
    // Unowned ReplicaSets named to sort before web's: "a-0000" < "web-…".
    futures::stream::iter(0..FILLERS)
        .map(|i| {
            let api = replica_sets.clone();
            async move {
                let filler: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {"name": format!("a-{i:04}")},
                    "spec": {
                        "replicas": 0,
                        "selector": {"matchLabels": {"filler": format!("f{i}")}},
                        "template": {
                            "metadata": {"labels": {"filler": format!("f{i}")}},
                            "spec": {"containers": [{"name": "c", "image": "filler:1"}]}
                        }
                    }
                }))
                .expect("manifest");
                api.create(&PostParams::default(), &filler)
                    .await
                    .expect("filler created");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    env.three_rollouts("web").await;

    // The sandbox serves this list in pages, as the daemon will read it.
    let first = replica_sets
        .list(&ListParams::default().limit(500))
        .await
        .expect("first page");
    assert_eq!(first.items.len(), 500);
    assert!(first.metadata.continue_.is_some_and(|c| !c.is_empty()));
    assert!(
        first.items.iter().all(|rs| !rs
            .metadata
            .name
            .as_deref()
            .unwrap_or_default()
            .starts_with("web-")),
        "web's ReplicaSets are not on the first page"
    );

    let running = env.daemon("").await;
    env.sandbox.clear_requests();
    post_alert(
        &running.addr.to_string(),
        &scenario::alertmanager_payload(WEB, Timestamp::now()),
    )
    .await;
    let incident = settled_incident(&running).await;
    assert_eq!(incident.outcome, "rolled-back", "{}", incident.reason);
    assert_eq!(env.json_patches("web").len(), 1);
    scenario::wait_rolled_out(&env.api, "web", "4", Duration::from_secs(10))
        .await
        .expect("undone");
    assert_eq!(
        image_of(&env.api.get("web").await.expect("web")),
        "nginx:2.0"
    );
}
