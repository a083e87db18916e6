//! API semantics at the HTTP level: auth, optimistic concurrency, JSON-patch `test`,
//! dryRun, injected faults (in process and over the admin endpoints), the request log,
//! watch resume and 410 Expired, namespaces, generateName.

mod common;

use std::time::{Duration, Instant};

use common::{Env, eventually, fast, http, start};
use kube_sandbox::{Fault, FaultAction, SandboxOptions};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

struct Http<'a> {
    env: &'a Env,
    client: reqwest::Client,
}

impl Http<'_> {
    async fn call(
        &self,
        method: Method,
        path: &str,
        ct: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.env.sb.url()))
            .bearer_auth(self.env.sb.token());
        if let Some(ct) = ct {
            req = req.header("Content-Type", ct);
        }
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let text = resp.text().await.expect("body read");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None, None).await
    }
}

fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "img:1"}]}}
        }
    })
}

async fn setup(opts: SandboxOptions) -> (Env, reqwest::Client) {
    let env = start(opts).await;
    let client = http(&env.sb);
    (env, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_conflicts_patch_test_and_dry_run() {
    common::bounded(auth_conflicts_patch_test_and_dry_run_body()).await;
}

async fn auth_conflicts_patch_test_and_dry_run_body() {
    let (env, client) = setup(fast()).await;
    let h = Http {
        env: &env,
        client: client.clone(),
    };

    // No token, wrong token: 401 Status.
    let r = client
        .get(format!("{}/api/v1/namespaces", env.sb.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["kind"].as_str(), body["reason"].as_str()),
        (Some("Status"), Some("Unauthorized"))
    );
    let r = client
        .get(format!("{}/version", env.sb.url()))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let (s, created) = h
        .call(
            Method::POST,
            DEPLOYMENTS,
            Some("application/json"),
            Some(deployment("web")),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, again) = h
        .call(
            Method::POST,
            DEPLOYMENTS,
            Some("application/json"),
            Some(deployment("web")),
        )
        .await;
    assert_eq!(
        (s.as_u16(), again["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );

    // Wait for the controller to touch it, so `rv` is stale.
    eventually(5, "controller status", || async {
        let (_, d) = h.get(&format!("{DEPLOYMENTS}/web")).await;
        (d["metadata"]["resourceVersion"].as_str() != Some(rv.as_str())).then_some(())
    })
    .await;
    let mut stale = created.clone();
    stale["spec"]["replicas"] = json!(5);
    let (s, st) = h
        .call(
            Method::PUT,
            &format!("{DEPLOYMENTS}/web"),
            Some("application/json"),
            Some(stale),
        )
        .await;
    assert_eq!(s, 409, "{st}");
    assert_eq!(st["reason"], json!("Conflict"));
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("the object has been modified"),
        "{st}"
    );
    assert_eq!(
        st["details"],
        json!({"name": "web", "group": "apps", "kind": "deployments"})
    );

    // A JSON patch whose test op fails: 422 Invalid, nothing changed.
    let (_, before) = h.get(&format!("{DEPLOYMENTS}/web")).await;
    let patch = json!([
        {"op": "replace", "path": "/spec/replicas", "value": 4},
        {"op": "test", "path": "/spec/template/spec/containers/0/image", "value": "not-this"}
    ]);
    let (s, st) = h
        .call(
            Method::PATCH,
            &format!("{DEPLOYMENTS}/web"),
            Some("application/json-patch+json"),
            Some(patch),
        )
        .await;
    assert_eq!(s, 422, "{st}");
    assert_eq!(st["reason"], json!("Invalid"));
    assert_eq!(
        st["message"],
        json!("the server rejected our request due to an error in our request")
    );
    let (_, after) = h.get(&format!("{DEPLOYMENTS}/web")).await;
    assert_eq!(
        after["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );
    assert_eq!(after["spec"]["replicas"], json!(1));

    // Unsupported patch type and malformed bodies.
    let (s, st) = h
        .call(
            Method::PATCH,
            &format!("{DEPLOYMENTS}/web"),
            Some("text/plain"),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (s.as_u16(), st["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );
    let (s, _) = h
        .call(
            Method::PATCH,
            &format!("{DEPLOYMENTS}/web"),
            Some("application/json-patch+json"),
            Some(json!({"x": 1})),
        )
        .await;
    assert_eq!(s, 400);

    // dryRun=All: answered as if done, nothing stored, no resourceVersion spent.
    let rv_before = after["metadata"]["resourceVersion"].clone();
    let (s, d) = h
        .call(
            Method::POST,
            &format!("{DEPLOYMENTS}?dryRun=All"),
            Some("application/json"),
            Some(deployment("dry")),
        )
        .await;
    assert_eq!(s, 201, "{d}");
    assert_eq!(d["metadata"]["name"], json!("dry"));
    let (s, _) = h.get(&format!("{DEPLOYMENTS}/dry")).await;
    assert_eq!(s, 404);
    let merge = json!({"spec": {"replicas": 9}});
    let (s, d) = h
        .call(
            Method::PATCH,
            &format!("{DEPLOYMENTS}/web?dryRun=All"),
            Some("application/merge-patch+json"),
            Some(merge),
        )
        .await;
    assert_eq!((s.as_u16(), &d["spec"]["replicas"]), (200, &json!(9)));
    let (s, d) = h
        .call(
            Method::DELETE,
            &format!("{DEPLOYMENTS}/web?dryRun=All"),
            None,
            None,
        )
        .await;
    assert_eq!(s, 200, "{d}");
    let (_, now) = h.get(&format!("{DEPLOYMENTS}/web")).await;
    assert_eq!(
        (
            &now["spec"]["replicas"],
            &now["metadata"]["resourceVersion"]
        ),
        (&json!(1), &rv_before)
    );
    let (s, _) = h
        .call(
            Method::POST,
            &format!("{DEPLOYMENTS}?dryRun=Bogus"),
            Some("application/json"),
            Some(deployment("x")),
        )
        .await;
    assert_eq!(s, 400);

    // A PUT with the current resourceVersion succeeds and bumps generation.
    let mut fresh = now.clone();
    fresh["spec"]["replicas"] = json!(2);
    let (s, d) = h
        .call(
            Method::PUT,
            &format!("{DEPLOYMENTS}/web"),
            Some("application/json"),
            Some(fresh),
        )
        .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(
        d["metadata"]["generation"].as_i64(),
        now["metadata"]["generation"].as_i64().map(|g| g + 1)
    );

    // Creating in a namespace that does not exist: 404 for the namespace.
    let (s, st) = h
        .call(
            Method::POST,
            "/apis/apps/v1/namespaces/nope/deployments",
            Some("application/json"),
            Some(deployment("x")),
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(st["message"], json!("namespaces \"nope\" not found"));
    // generateName.
    let cm = json!({"metadata": {"generateName": "cfg-"}, "data": {"a": "b"}});
    let (s, d) = h
        .call(
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            Some("application/json"),
            Some(cm),
        )
        .await;
    assert_eq!(s, 201);
    let name = d["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("cfg-") && name.len() == 9, "{name}");
    // Validation: selector must match template labels.
    let mut bad = deployment("bad");
    bad["spec"]["selector"]["matchLabels"]["app"] = json!("other");
    let (s, st) = h
        .call(
            Method::POST,
            DEPLOYMENTS,
            Some("application/json"),
            Some(bad),
        )
        .await;
    assert_eq!(
        (s.as_u16(), st["reason"].as_str()),
        (422, Some("Invalid")),
        "{st}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_and_request_log() {
    common::bounded(faults_and_request_log_body()).await;
}

async fn faults_and_request_log_body() {
    let (env, client) = setup(fast()).await;
    let h = Http {
        env: &env,
        client: client.clone(),
    };
    h.call(
        Method::POST,
        DEPLOYMENTS,
        Some("application/json"),
        Some(deployment("web")),
    )
    .await;

    env.sb.clear_requests();
    env.sb.inject_fault(Fault {
        verb: Some("patch".into()),
        resource: Some("deployments".into()),
        count: 1,
        action: FaultAction::Status(500),
    });
    let merge = json!({"metadata": {"labels": {"x": "1"}}});
    let (s, st) = h
        .call(
            Method::PATCH,
            &format!("{DEPLOYMENTS}/web"),
            Some("application/merge-patch+json"),
            Some(merge.clone()),
        )
        .await;
    assert_eq!(
        (s.as_u16(), st["kind"].as_str(), st["reason"].as_str()),
        (500, Some("Status"), Some("InternalError"))
    );
    assert!(
        env.sb
            .get_object("apps/v1", "deployments", Some("default"), "web")
            .unwrap()["metadata"]
            .get("labels")
            .is_none()
    );
    let (s, _) = h
        .call(
            Method::PATCH,
            &format!("{DEPLOYMENTS}/web"),
            Some("application/merge-patch+json"),
            Some(merge),
        )
        .await;
    assert_eq!(s, 200, "a fault fires only `count` times");

    // Over the admin endpoint: a delay on gets of deployments/status only.
    let fault = json!({"verb": "get", "resource": "deployments/status", "count": 1, "action": {"delay": "1s"}});
    let r = client
        .post(format!("{}/sandbox/faults", env.sb.url()))
        .bearer_auth(env.sb.token())
        .json(&fault)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let t = Instant::now();
    let (s, _) = h.get(&format!("{DEPLOYMENTS}/web")).await;
    assert!(
        s == 200 && t.elapsed() < Duration::from_millis(900),
        "the main resource is not delayed"
    );
    let t = Instant::now();
    let (s, _) = h.get(&format!("{DEPLOYMENTS}/web/status")).await;
    assert!(
        s == 200 && t.elapsed() >= Duration::from_millis(1000),
        "status get delayed"
    );
    // Admin endpoints need the token too.
    let r = client
        .post(format!("{}/sandbox/faults", env.sb.url()))
        .json(&fault)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let log = env.sb.requests();
    let methods: Vec<(&str, &str, u16)> = log
        .iter()
        .map(|r| (r.method.as_str(), r.path_only(), r.status))
        .collect();
    assert_eq!(
        methods,
        [
            (
                "PATCH",
                "/apis/apps/v1/namespaces/default/deployments/web",
                500
            ),
            (
                "PATCH",
                "/apis/apps/v1/namespaces/default/deployments/web",
                200
            ),
            (
                "GET",
                "/apis/apps/v1/namespaces/default/deployments/web",
                200
            ),
            (
                "GET",
                "/apis/apps/v1/namespaces/default/deployments/web/status",
                200
            ),
        ]
    );
    assert_eq!(
        log[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(log[0].body, r#"{"metadata":{"labels":{"x":"1"}}}"#);
    let r = client
        .get(format!("{}/sandbox/requests", env.sb.url()))
        .bearer_auth(env.sb.token())
        .send()
        .await
        .unwrap();
    let over_http: Value = r.json().await.unwrap();
    assert_eq!(over_http.as_array().unwrap().len(), 4);
    assert_eq!(over_http[0]["status"], json!(500));
    let r = client
        .delete(format!("{}/sandbox/requests", env.sb.url()))
        .bearer_auth(env.sb.token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(env.sb.requests().is_empty());
}

/// Read watch lines until `n` arrived or the stream ended.
async fn watch_lines(resp: reqwest::Response, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut stream = resp;
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
            .await
            .expect("watch event in time")
            .expect("chunk");
        let Some(chunk) = chunk else { break };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = buf.find('\n') {
            let line: String = buf.drain(..=i).collect();
            out.push(serde_json::from_str(line.trim()).expect("a JSON event per line"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resume_selectors_and_expiry() {
    common::bounded(watch_resume_selectors_and_expiry_body()).await;
}

async fn watch_resume_selectors_and_expiry_body() {
    let (env, client) = setup(SandboxOptions {
        watch_history: 8,
        ..fast()
    })
    .await;
    let h = Http {
        env: &env,
        client: client.clone(),
    };
    let cms = "/api/v1/namespaces/default/configmaps";
    let (_, a) = h
        .call(
            Method::POST,
            cms,
            Some("application/json"),
            Some(json!({"metadata": {"name": "a", "labels": {"tier": "x"}}})),
        )
        .await;
    let rv_a = a["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    h.call(
        Method::POST,
        cms,
        Some("application/json"),
        Some(json!({"metadata": {"name": "b"}})),
    )
    .await;

    let watch = |q: String| {
        let client = client.clone();
        let url = format!("{}{cms}?watch=true&{q}", env.sb.url());
        let token = env.sb.token().to_string();
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .unwrap()
        }
    };
    // From "0": synthetic ADDED for what exists, filtered by the selector.
    let resp = watch("resourceVersion=0&labelSelector=tier%3Dx".into()).await;
    assert_eq!(resp.status(), 200);
    let ev = watch_lines(resp, 1).await;
    assert_eq!(
        (
            ev[0]["type"].as_str(),
            ev[0]["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("a"))
    );

    // From a resourceVersion: the later events replayed; a label change leaving the
    // selection reads as DELETED; timeoutSeconds ends the stream.
    let merge = json!({"metadata": {"labels": {"tier": "y"}}});
    h.call(
        Method::PATCH,
        &format!("{cms}/a"),
        Some("application/merge-patch+json"),
        Some(merge),
    )
    .await;
    let resp = watch(format!(
        "resourceVersion={rv_a}&timeoutSeconds=1&labelSelector=tier%3Dx"
    ))
    .await;
    let t = Instant::now();
    let ev = watch_lines(resp, 10).await;
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "timeoutSeconds honoured"
    );
    let types: Vec<&str> = ev.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ["DELETED"], "{ev:?}");

    // Too old: more changes than the history keeps, then a watch from the first rv.
    for i in 0..10 {
        h.call(
            Method::POST,
            cms,
            Some("application/json"),
            Some(json!({"metadata": {"name": format!("n{i}")}})),
        )
        .await;
    }
    let resp = watch(format!("resourceVersion={rv_a}")).await;
    assert_eq!(resp.status(), 200);
    let ev = watch_lines(resp, 2).await;
    assert_eq!(ev.len(), 1, "the stream ends after the error: {ev:?}");
    assert_eq!(ev[0]["type"], json!("ERROR"));
    assert_eq!(
        (
            ev[0]["object"]["code"].as_u64(),
            ev[0]["object"]["reason"].as_str()
        ),
        (Some(410), Some("Expired"))
    );

    // Bookmarks at the end of the initial events when asked for.
    let resp = watch("resourceVersion=&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan".into()).await;
    let ev = watch_lines(resp, 13).await;
    let last = ev.last().unwrap();
    assert_eq!(last["type"], json!("BOOKMARK"));
    assert_eq!(
        last["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        json!("true")
    );

    // Namespace deletion removes what it holds.
    let (s, _) = h
        .call(
            Method::POST,
            "/api/v1/namespaces",
            Some("application/json"),
            Some(json!({"metadata": {"name": "tmp"}})),
        )
        .await;
    assert_eq!(s, 201);
    h.call(
        Method::POST,
        "/api/v1/namespaces/tmp/configmaps",
        Some("application/json"),
        Some(json!({"metadata": {"name": "c"}})),
    )
    .await;
    let (s, _) = h
        .call(Method::DELETE, "/api/v1/namespaces/tmp", None, None)
        .await;
    assert_eq!(s, 200);
    let (s, _) = h.get("/api/v1/namespaces/tmp/configmaps/c").await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_in_chunks_with_limit_and_continue() {
    common::bounded(lists_in_chunks_with_limit_and_continue_body()).await;
}

async fn lists_in_chunks_with_limit_and_continue_body() {
    let (env, client) = setup(fast()).await;
    let h = Http { env: &env, client };
    let cms = "/api/v1/namespaces/default/configmaps";
    for (i, tier) in ["x", "y", "x", "y", "x"].iter().enumerate() {
        let (s, _) = h
            .call(
                Method::POST,
                cms,
                Some("application/json"),
                Some(json!({"metadata": {"name": format!("m{i}"), "labels": {"tier": tier}}})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };

    let (s, first) = h.get(&format!("{cms}?limit=2")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(names(&first), ["m0", "m1"]);
    assert_eq!(first["metadata"]["remainingItemCount"], json!(3));
    let rv = first["metadata"]["resourceVersion"].clone();
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();

    // A change between chunks: the next chunk shows it, at the first chunk's resourceVersion.
    h.call(
        Method::PATCH,
        &format!("{cms}/m2"),
        Some("application/merge-patch+json"),
        Some(json!({"data": {"k": "v"}})),
    )
    .await;
    let (_, second) = h.get(&format!("{cms}?limit=2&continue={token}")).await;
    assert_eq!(names(&second), ["m2", "m3"]);
    assert_eq!(second["items"][0]["data"]["k"], json!("v"));
    assert_eq!(second["metadata"]["resourceVersion"], rv);
    let token = second["metadata"]["continue"].as_str().unwrap().to_string();
    let (_, last) = h.get(&format!("{cms}?limit=2&continue={token}")).await;
    assert_eq!(names(&last), ["m4"]);
    assert!(last["metadata"].get("continue").is_none(), "{last}");
    assert!(
        last["metadata"].get("remainingItemCount").is_none(),
        "{last}"
    );

    // A watch from the list's resourceVersion delivers the change made between chunks, so
    // an informer that lists in chunks and then watches ends where the store is.
    let watch = h
        .client
        .get(format!(
            "{}{cms}?watch=true&resourceVersion={}",
            env.sb.url(),
            rv.as_str().unwrap()
        ))
        .bearer_auth(env.sb.token())
        .send()
        .await
        .expect("watch");
    let events = watch_lines(watch, 1).await;
    assert_eq!(events[0]["type"], json!("MODIFIED"), "{events:?}");
    assert_eq!(events[0]["object"]["metadata"]["name"], json!("m2"));
    assert_eq!(events[0]["object"]["data"]["k"], json!("v"));

    // With a selector the remaining count is not known, as from etcd.
    let (_, picked) = h
        .get(&format!("{cms}?limit=2&labelSelector=tier%3Dx"))
        .await;
    assert_eq!(names(&picked), ["m0", "m2"]);
    assert!(picked["metadata"]["continue"].is_string());
    assert!(picked["metadata"].get("remainingItemCount").is_none());

    // resourceVersion=0 is served whole from the watch cache, whatever the limit.
    let (_, cached) = h.get(&format!("{cms}?limit=2&resourceVersion=0")).await;
    assert_eq!(names(&cached).len(), 5);
    assert!(cached["metadata"].get("continue").is_none());

    // Bad input: a clear 400, nothing listed.
    for (query, says) in [
        ("continue=bm90IGEgdG9rZW4%3D", "continue key is not valid"),
        ("continue=%21%21", "continue key is not valid"),
        (
            &*format!("continue={token}&resourceVersion=3"),
            "not allowed when using continue",
        ),
        ("limit=two", "limit"),
    ] {
        let (s, body) = h.get(&format!("{cms}?{query}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(says),
            "{query}: {body}"
        );
    }
}
