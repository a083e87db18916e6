//! Conformance of the simulated Argo Rollouts controller with argo-rollouts' own end-to-end
//! tests: a port of tests from argoproj/argo-rollouts `test/e2e/canary_test.go`,
//! `functional_test.go` and `rollback_window_test.go`, with their fixtures
//! (`test/e2e/functional/*.yaml`, transcribed below). Each `Then()` expectation and each wait
//! of the Go test is one named check; the steps are what the e2e fixtures (`test/fixtures/
//! when.go`) send: `kubectl apply` of the manifests, a merge patch of the Rollout for
//! `UpdateSpec`/`PatchSpec`/`ScaleRollout`, and for promote, abort and retry the patches of the
//! kubectl-argo-rollouts plugin (`pkg/kubectl-argo-rollouts/cmd/*`).
//!
//! Stand-ins, as the sandbox runs no pods: a ReplicaSet's pod count
//! (`ExpectRevisionPodCount`, `ExpectCanaryStablePodCount`) is its `status.replicas`;
//! `MarkPodsReady` is not needed (pods are declared ready after the rollout delay).
//! `WaitForRolloutStatus` uses `GetRolloutPhase` (utils/rollout/rolloututil.go) on the
//! Rollout as the last patch returned it and on each watch event after that patch (upstream
//! watches from a read made after the patch, which the quicker sandbox could outrun).
//!
//! Not ported, and why: ephemeral metadata, `dynamicStableScale`, `TestRolloutRestart` and
//! `TestRolloutPDBRestart` (`restartAt` evicts pods), progress-deadline tests that need pods
//! to become ready late or to crash (only `TestBlueGreenExceedProgressDeadlineAbort` is
//! ported: its image does not exist, an `unready_images` entry here), Experiments, traffic-router tests (ALB, SMI, Istio, APISIX,
//! AppMesh objects are never changed), `TestCanaryScaleReportingHPAReplicas` (no HPA), and the
//! analysis suite (AnalysisRuns are not run). Ingress objects of the fixtures are not applied:
//! `networking.k8s.io` is not served, and the sandbox does not read traffic routers' objects.
//!
//! Run with `cargo test -p kube-sandbox --test conformance_argo -- --nocapture` to see every
//! check and the tally.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::checks::Checks;
use common::{Env, kube_client, start};
use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Namespace, Service};
use kube::api::{
    Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};

/// Checks that fail because of a known difference between the sandbox and the real
/// controller. Keep it exact: `Checks::finish` fails on a failure not listed here and on a
/// listed check that passes.
const KNOWN_DIVERGENCES: &[(&str, &str)] = &[
    (
        "TestBlueGreenScaleDownOnAbort: revision 2 runs previewReplicaCount (1) pods",
        "previewReplicaCount is not simulated: the preview gets all replicas",
    ),
    (
        "TestRolloutAbortRetryPromote: records the other events in order",
        "upstream's rolloutCanary (rollout/canary.go), on PodTemplateOrStepsChanged, first \
         writes the status without creating the ReplicaSet (RolloutNotCompleted, 'started \
         update to revision 0', also on the first deploy) and creates it on the next sync; the \
         sandbox creates it at once and records RolloutNotCompleted after \
         NewReplicaSetCreated, and not on the first deploy (upstream's blue-green order)",
    ),
    (
        "TestCanaryPromoteFull: at the analysis step (currentStepIndex 1) 2 s after promote",
        ANALYSIS,
    ),
    (
        "TestCanaryPromoteFull: Progressing while the 24h analysis runs",
        ANALYSIS,
    ),
    (
        "TestCanaryPromoteFull: one AnalysisRun for the analysis step",
        ANALYSIS,
    ),
    (
        "TestCanaryPromoteFull: Paused at the pause step after promoting past the analysis",
        "the analysis steps completed at once, so the second promote finished the update",
    ),
    (
        "TestCanaryPromoteFull: no new AnalysisRun after promote --full",
        ANALYSIS,
    ),
    ("TestRollbackAnalysis: revision 2: 1 AnalysisRuns", ANALYSIS),
    ("TestRollbackAnalysis: revision 3: 2 AnalysisRuns", ANALYSIS),
    ("TestRollbackAnalysis: revision 4: 3 AnalysisRuns", ANALYSIS),
    ("TestRollbackAnalysis: revision 5: 3 AnalysisRuns", ANALYSIS),
    ("TestRollbackAnalysis: revision 6: 4 AnalysisRuns", ANALYSIS),
    ("TestRollbackAnalysis: revision 7: 5 AnalysisRuns", ANALYSIS),
];
const ANALYSIS: &str = "the sandbox creates no AnalysisRuns: analysis steps complete at once";

const HASH: &str = "rollouts-pod-template-hash";
const REVISION: &str = "rollout.argoproj.io/revision";
const SCALE_DOWN_DEADLINE: &str = "scale-down-deadline";
/// How long a wait may take (upstream's `E2EWaitTimeout` is minutes on a real cluster).
const WAIT: Duration = Duration::from_secs(8);
/// The image `TestBlueGreenExceedProgressDeadlineAbort` rolls out, which does not exist: its
/// pods never become ready (`SandboxOptions::unready_images`).
const ERROR_IMAGE: &str = "nginx:1.19-alpine-argo-error";

fn rollout_api(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout"),
        "rollouts",
    );
    Api::namespaced_with(client.clone(), ns, &ar)
}

fn analysis_run_api(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "AnalysisRun"),
        "analysisruns",
    );
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// `rolloututil.GetRolloutPhase`: Progressing until the generation is observed and while
/// unpausing, else the controller's `status.phase`.
fn phase(ro: &Value) -> String {
    let st = &ro["status"];
    let generation = ro["metadata"]["generation"].as_i64().unwrap_or(0);
    // isGenerationObserved: an unparsable observedGeneration counts as observed.
    if let Some(observed) = st["observedGeneration"]
        .as_str()
        .and_then(|s| s.parse::<i64>().ok())
        && observed < generation
    {
        return "Progressing".into();
    }
    // IsUnpausing
    let no_pause_conditions = st["pauseConditions"]
        .as_array()
        .is_none_or(|a| a.is_empty());
    if st["controllerPause"] == json!(true) && no_pause_conditions {
        return "Progressing".into();
    }
    st["phase"].as_str().unwrap_or_default().to_string()
}

/// A Service as the fixtures write them (`newService`, and the `-canary`/`-stable`/`-root`
/// Services of the YAML files): port 80 to the app's pods.
fn service(name: &str, app: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "ports": [{"port": 80, "targetPort": "http", "protocol": "TCP", "name": "http"}],
            "selector": {"app": app}
        }
    })
}

/// A Rollout of one container with the fixtures' usual resources.
fn rollout(name: &str, app: &str, replicas: Option<i64>, strategy: Value) -> Value {
    let mut ro = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"containers": [{
                    "name": app, "image": "nginx:1.19-alpine",
                    "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                    "resources": {"requests": {"memory": "16Mi", "cpu": "1m"}}
                }]}
            },
            "strategy": strategy
        }
    });
    if let Some(n) = replicas {
        ro["spec"]["replicas"] = json!(n);
    }
    ro
}

/// test/e2e/functional/analysistemplate-sleep-job.yaml (the suites' SetupSuite applies it).
fn sleep_job_template() -> Value {
    json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": "sleep-job"},
        "spec": {
            "args": [
                {"name": "duration", "value": "1"}, {"name": "exit-code", "value": "0"},
                {"name": "count", "value": "1"}, {"name": "rev", "value": "notset"}
            ],
            "metrics": [{
                "name": "sleep-job", "count": "{{args.count}}",
                "provider": {"job": {"spec": {
                    "template": {
                        "metadata": {"labels": {"rev": "{{ args.rev }}"}},
                        "spec": {
                            "containers": [{
                                "name": "sleep-job", "image": "nginx:1.19-alpine",
                                "command": ["sh", "-c", "-x"],
                                "args": ["sleep {{args.duration}} && exit {{args.exit-code}}"]
                            }],
                            "restartPolicy": "Never"
                        }
                    },
                    "backoffLimit": 0
                }}}
            }]
        }
    })
}

/// One ported Go test: its own namespace, its Rollout, and its checks named `Test...: what`.
struct Case<'a> {
    test: &'static str,
    env: &'a Env,
    client: kube::Client,
    checks: &'a Checks,
    ns: String,
    name: String,
    /// The Rollout as the last patch returned it: waits start from there, so a state the
    /// controller passes through right after the patch is not missed.
    last_write: std::sync::Mutex<Option<Value>>,
}

impl<'a> Case<'a> {
    async fn new(
        test: &'static str,
        env: &'a Env,
        checks: &'a Checks,
        rollout_name: &str,
    ) -> Case<'a> {
        let client = kube_client(&env.sb).await;
        let ns = test.to_lowercase();
        let nss: Api<Namespace> = Api::all(client.clone());
        let n = serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace");
        nss.create(&PostParams::default(), &n)
            .await
            .expect("namespace created");
        Case {
            test,
            env,
            client,
            checks,
            ns,
            name: rollout_name.to_string(),
            last_write: std::sync::Mutex::new(None),
        }
    }

    fn check(&self, what: &str, ok: bool, detail: impl FnOnce() -> String) -> bool {
        self.checks
            .check(&format!("{}: {what}", self.test), ok, detail)
    }

    fn eq<T: PartialEq + std::fmt::Debug>(&self, what: &str, actual: T, expected: T) -> bool {
        self.checks
            .eq(&format!("{}: {what}", self.test), actual, expected)
    }

    fn rollouts(&self) -> Api<DynamicObject> {
        rollout_api(&self.client, &self.ns)
    }

    /// `ApplyManifests`: `kubectl apply -f -` of the objects (upstream runs one kubectl per
    /// object; one stream of JSON objects here).
    async fn apply(&self, what: &str, objects: Vec<Value>) {
        let docs: Vec<String> = objects.iter().map(Value::to_string).collect();
        let o = self
            .env
            .kubectl_stdin(&["apply", "-n", &self.ns, "-f", "-"], Some(docs.join("\n")))
            .await;
        self.check(what, o.ok, || o.stderr.clone());
    }

    async fn get(&self) -> Value {
        match self.rollouts().get(&self.name).await {
            Ok(ro) => serde_json::to_value(ro).expect("json"),
            Err(e) => json!({"error": e.to_string()}),
        }
    }

    /// `WaitForRolloutCondition`: the Rollout as the last patch left it (else as read now),
    /// then each change after that, until `test` holds.
    async fn wait(&self, what: &str, test: impl Fn(&Value) -> bool) -> bool {
        let written = self.last_write.lock().expect("lock").clone();
        let ro = match written {
            Some(ro) => ro,
            None => self.get().await,
        };
        let mut last = ro.clone();
        let mut ok = test(&ro);
        if !ok {
            let rv = ro["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("0")
                .to_string();
            let wp = WatchParams::default()
                .fields(&format!("metadata.name={}", self.name))
                .timeout(WAIT.as_secs() as u32);
            let found = tokio::time::timeout(WAIT, async {
                let Ok(stream) = self.rollouts().watch(&wp, &rv).await else {
                    return false;
                };
                let mut stream = stream.boxed();
                while let Ok(Some(ev)) = stream.try_next().await {
                    if let WatchEvent::Added(o) | WatchEvent::Modified(o) = ev {
                        last = serde_json::to_value(o).expect("json");
                        if test(&last) {
                            return true;
                        }
                    }
                }
                false
            })
            .await;
            ok = found.unwrap_or(false);
        }
        self.check(what, ok, || {
            format!(
                "timed out; phase {:?}, status {}",
                phase(&last),
                last["status"]
            )
        })
    }

    /// `WaitForActiveRevision`: `status.blueGreen.activeSelector` is the hash of the
    /// ReplicaSet of that revision (looked up first, as upstream does, once it exists).
    async fn wait_active_revision(&self, what: &str, revision: &str) -> bool {
        let mut hash = None;
        for _ in 0..100 {
            hash = self.hash_of_revision(revision).await;
            if hash.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.wait(what, |ro| {
            hash.is_some()
                && ro["status"]["blueGreen"]["activeSelector"].as_str() == hash.as_deref()
        })
        .await
    }

    /// `WaitForRolloutStatus`.
    async fn wait_status(&self, what: &str, status: &str) -> bool {
        self.wait(what, |ro| phase(ro) == status).await
    }

    /// `WaitForRolloutCanaryStepIndex`: at a pause step, also wait for Paused.
    async fn wait_step(&self, what: &str, index: i64) -> bool {
        self.wait(what, |ro| {
            if ro["status"]["currentStepIndex"] != json!(index) {
                return false;
            }
            let step = &ro["spec"]["strategy"]["canary"]["steps"][index as usize];
            step.get("pause").is_none() || phase(ro) == "Paused"
        })
        .await
    }

    /// `UpdateSpec()` without text: a new pod template annotation, so a new revision.
    async fn update_spec(&self) {
        let now = jiff::Timestamp::now().to_string();
        self.merge_patch(
            json!({"spec": {"template": {"metadata": {"annotations": {"update": now}}}}}),
        )
        .await;
    }

    /// `UpdateSpec(text)`, `PatchSpec(text)` (a client-side strategic merge then an update
    /// upstream; a merge patch here, the same for the maps these tests patch) and
    /// `ScaleRollout(n)`.
    async fn merge_patch(&self, patch: Value) {
        let res = self
            .rollouts()
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(patch))
            .await;
        self.written(res);
    }

    fn written(&self, res: kube::Result<DynamicObject>) {
        match res {
            Ok(ro) => {
                *self.last_write.lock().expect("lock") =
                    Some(serde_json::to_value(ro).expect("json"));
            }
            Err(e) => println!("  ({}: patch failed: {e})", self.test),
        }
    }

    async fn status_patch(&self, patch: Value) {
        let res = self
            .rollouts()
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(patch))
            .await;
        self.written(res);
    }

    /// `kubectl argo rollouts promote [--full]` (`promote.go`, `getPatches`).
    async fn promote(&self, full: bool) {
        let ro = self.get().await;
        let st = &ro["status"];
        if full {
            if st["currentPodHash"] != st["stableRS"] {
                self.status_patch(json!({"status": {"promoteFull": true}}))
                    .await;
            }
        } else if st["pauseConditions"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            self.status_patch(json!({"status": {"pauseConditions": null}}))
                .await;
        } else if let Some(steps) = ro["spec"]["strategy"]["canary"]["steps"].as_array() {
            let idx = st["currentStepIndex"].as_i64().unwrap_or(0);
            let next = (idx + 1).min(steps.len() as i64);
            self.status_patch(
                json!({"status": {"pauseConditions": null, "currentStepIndex": next}}),
            )
            .await;
        }
        if ro["spec"]["paused"] == json!(true) {
            self.merge_patch(json!({"spec": {"paused": false}})).await;
        }
    }

    /// `kubectl argo rollouts abort` / `retry rollout`.
    async fn abort(&self, abort: bool) {
        self.status_patch(json!({"status": {"abort": abort}})).await;
    }

    async fn replicasets(&self) -> Vec<ReplicaSet> {
        let rss: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &self.ns);
        rss.list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }

    /// `GetReplicaSetByRevision`.
    async fn rs_by_revision(&self, revision: &str) -> Option<ReplicaSet> {
        self.replicasets().await.into_iter().find(|rs| {
            rs.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION))
                .map(String::as_str)
                == Some(revision)
        })
    }

    async fn hash_of_revision(&self, revision: &str) -> Option<String> {
        self.rs_by_revision(revision)
            .await
            .and_then(|rs| label(&rs, HASH).map(str::to_string))
    }

    /// Pods of the ReplicaSets with this pod-template hash (their `status.replicas`).
    async fn pods_with_hash(&self, hash: &str) -> i32 {
        self.replicasets()
            .await
            .iter()
            .filter(|rs| label(rs, HASH) == Some(hash))
            .map(|rs| rs.status.as_ref().map_or(0, |s| s.replicas))
            .sum()
    }

    /// `ExpectRevisionPodCount`.
    async fn expect_revision_pods(&self, what: &str, revision: &str, count: i32) {
        let hash = match self.rs_by_revision(revision).await {
            Some(rs) => label(&rs, HASH).unwrap_or_default().to_string(),
            None => String::new(),
        };
        let n = if hash.is_empty() {
            -1
        } else {
            self.pods_with_hash(&hash).await
        };
        self.eq(what, n, count);
    }

    /// `ExpectCanaryStablePodCount`: pods of `currentPodHash` and of `stableRS`.
    async fn expect_canary_stable(&self, what: &str, canary: i32, stable: i32) {
        let ro = self.get().await;
        let c = self
            .pods_with_hash(ro["status"]["currentPodHash"].as_str().unwrap_or("-"))
            .await;
        let s = self
            .pods_with_hash(ro["status"]["stableRS"].as_str().unwrap_or("-"))
            .await;
        self.eq(what, (c, s), (canary, stable));
    }

    /// `ExpectReplicaCounts(desired, current, updated, ready, available)`.
    async fn expect_replica_counts(&self, what: &str, want: [i64; 5]) {
        let ro = self.get().await;
        let st = &ro["status"];
        let n = |v: &Value| v.as_i64().unwrap_or(0);
        let got = [
            ro["spec"]["replicas"].as_i64().unwrap_or(1),
            n(&st["replicas"]),
            n(&st["updatedReplicas"]),
            n(&st["readyReplicas"]),
            n(&st["availableReplicas"]),
        ];
        self.eq(what, got, want);
    }

    async fn service_selector(&self, name: &str) -> BTreeMap<String, String> {
        let svcs: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
        svcs.get(name)
            .await
            .ok()
            .and_then(|s| s.spec)
            .and_then(|s| s.selector)
            .unwrap_or_default()
    }

    /// `ExpectAnalysisRunCount`.
    async fn expect_analysis_runs(&self, what: &str, count: usize) {
        let n = analysis_run_api(&self.client, &self.ns)
            .list(&ListParams::default())
            .await
            .map_or(0, |l| l.items.len());
        self.eq(what, n, count);
    }

    /// `GetRolloutEventReasons`: the Rollout's Events in the order they were recorded (the
    /// upstream test collects them from a watch; here, by resourceVersion).
    async fn event_reasons(&self) -> Vec<String> {
        let uid = self.get().await["metadata"]["uid"].clone();
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let mut evs: Vec<Event> = events
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.involved_object.uid.as_deref() == uid.as_str())
            .collect();
        evs.sort_by_key(|e| {
            e.metadata
                .resource_version
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        });
        evs.into_iter().filter_map(|e| e.reason).collect()
    }

    /// `ExpectRolloutEvents(reasons)`, as two checks: the informer event upstream records
    /// first, and the rest in order.
    async fn expect_events(&self, reasons: &[&str]) {
        // The last Events may be written just after the status the wait saw: allow 2 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let mut got = self.event_reasons().await;
        while got.len() < reasons.len() - 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            got = self.event_reasons().await;
        }
        let first = got.first().map(String::as_str);
        self.eq(
            "records RolloutAddedToInformer first",
            first,
            Some(reasons[0]),
        );
        let rest: Vec<&str> = got
            .iter()
            .map(String::as_str)
            .filter(|r| *r != "RolloutAddedToInformer")
            .collect();
        self.eq(
            "records the other events in order",
            rest,
            reasons[1..].to_vec(),
        );
    }
}

fn label<'r>(rs: &'r ReplicaSet, key: &str) -> Option<&'r str> {
    rs.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

fn annotation(rs: &ReplicaSet, key: &str) -> Option<String> {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_argo_rollouts_e2e() {
    common::bounded(body()).await;
}

async fn body() {
    let env = start(kube_sandbox::SandboxOptions {
        rollout_delay: Duration::from_millis(100),
        // Waits replay the watch from the last patch; keep enough history for all cases.
        watch_history: 100_000,
        unready_images: vec![ERROR_IMAGE.to_string()],
        ..kube_sandbox::SandboxOptions::default()
    })
    .await;
    let checks = Checks::new("argo (test/e2e)");
    let (e, c) = (&env, &checks);
    // The Go suites run their tests in parallel on one cluster; so do these, one namespace each.
    futures::future::join_all([
        canary_set_canary_scale(e, c).boxed_local(),
        rollout_scaling_when_paused(e, c).boxed_local(),
        canary_scale_down_on_abort(e, c, true).boxed_local(),
        canary_scale_down_on_abort(e, c, false).boxed_local(),
        canary_unscale_down_on_abort(e, c).boxed_local(),
        canary_with_paused_rollout(e, c).boxed_local(),
        rollout_abort_retry_promote(e, c).boxed_local(),
        canary_promote_full(e, c).boxed_local(),
        blue_green_update(e, c).boxed_local(),
        blue_green_promote_full(e, c).boxed_local(),
        blue_green_scale_down_on_abort(e, c).boxed_local(),
        blue_green_scale_down_delay(e, c).boxed_local(),
        blue_green_exceed_progress_deadline_abort(e, c).boxed_local(),
        kubectl_wait_for_paused(e, c).boxed_local(),
        rollback_analysis(e, c).boxed_local(),
    ])
    .await;
    checks.finish(KNOWN_DIVERGENCES);
}

/// canary_test.go `TestCanarySetCanaryScale` (fixture functional/nginx-template.yaml).
async fn canary_set_canary_scale(env: &Env, checks: &Checks) {
    let c = Case::new("TestCanarySetCanaryScale", env, checks, "set-canary-scale").await;
    let app = "set-canary-scale";
    let strategy = json!({"canary": {
        "canaryService": "set-canary-scale-canary",
        "stableService": "set-canary-scale-stable",
        "trafficRouting": {"nginx": {"stableIngress": "set-canary-scale-ingress"}},
        "steps": [
            {"pause": {}},
            {"setCanaryScale": {"weight": 25}},
            {"pause": {"duration": "100s"}},
            {"setWeight": 50},
            {"pause": {"duration": "10s"}},
            {"setCanaryScale": {"replicas": 3}},
            {"pause": {}},
            {"setCanaryScale": {"matchTrafficWeight": true}},
            {"pause": {"duration": "5s"}}
        ]
    }});
    c.apply(
        "applies its manifests",
        vec![
            service("set-canary-scale-canary", app),
            service("set-canary-scale-stable", app),
            rollout(app, app, Some(4), strategy),
        ],
    )
    .await;
    c.wait_status("Healthy after create", "Healthy").await;
    c.update_spec().await;
    c.wait_status("Paused at step 0 after the update", "Paused")
        .await;
    c.expect_canary_stable("step 0: 0 canary and 4 stable pods", 0, 4)
        .await;
    for (step, canary) in [(2, 1), (4, 1), (6, 3), (8, 2)] {
        c.promote(false).await;
        c.wait_step(&format!("promoted to step {step}"), step).await;
        c.expect_canary_stable(
            &format!("step {step}: {canary} canary and 4 stable pods"),
            canary,
            4,
        )
        .await;
    }
    c.promote(false).await;
    c.wait_status("Healthy after the last promotion", "Healthy")
        .await;
    c.expect_canary_stable("promoted: 4 canary and 4 stable pods", 4, 4)
        .await;
}

/// canary_test.go `TestRolloutScalingWhenPaused` (fixture functional/rollout-basic.yaml).
async fn rollout_scaling_when_paused(env: &Env, checks: &Checks) {
    let c = Case::new("TestRolloutScalingWhenPaused", env, checks, "basic").await;
    let mut ro = rollout(
        "basic",
        "basic",
        None,
        json!({"canary": {"steps": [{"setWeight": 25}, {"pause": {}}]}}),
    );
    ro["spec"]["template"]["spec"]["containers"][0]["image"] = json!("argoproj/rollouts-demo:blue");
    c.apply("applies its manifests", vec![ro]).await;
    c.wait_status("Healthy after create", "Healthy").await;
    c.update_spec().await;
    c.wait_status("Paused after the update", "Paused").await;
    c.expect_canary_stable("1 canary and 1 stable pod", 1, 1)
        .await;
    for (replicas, canary, stable) in [(8, 2, 6), (4, 1, 3)] {
        c.merge_patch(json!({"spec": {"replicas": replicas}})).await;
        c.wait(
            &format!("{replicas} available replicas after scaling"),
            |ro| ro["status"]["availableReplicas"] == json!(replicas),
        )
        .await;
        c.expect_canary_stable(
            &format!("scaled to {replicas}: {canary} canary and {stable} stable pods"),
            canary,
            stable,
        )
        .await;
    }
}

/// canary_test.go `TestCanaryScaleDownOnAbort` (functional/canary-scaledownonabort.yaml, an
/// ALB-routed canary) and `TestCanaryScaleDownOnAbortNoTrafficRouting`
/// (functional/canary-scaledownonabortnotrafficrouting.yaml).
async fn canary_scale_down_on_abort(env: &Env, checks: &Checks, traffic_routing: bool) {
    let test = if traffic_routing {
        "TestCanaryScaleDownOnAbort"
    } else {
        "TestCanaryScaleDownOnAbortNoTrafficRouting"
    };
    let c = Case::new(test, env, checks, "canary-scaledownd-on-abort").await;
    let app = "canary-scaledowndelay";
    let strategy = if traffic_routing {
        json!({"canary": {
            "abortScaleDownDelaySeconds": 1,
            "scaleDownDelayRevisionLimit": 1,
            "canaryService": "canary-scaledowndelay-canary",
            "stableService": "canary-scaledowndelay-stable",
            "steps": [{"setCanaryScale": {"replicas": 1}}, {"pause": {}}],
            "trafficRouting": {"alb": {
                "ingress": "canary-scaledowndelay-ingress",
                "rootService": "canary-scaledowndelay-root",
                "servicePort": 80
            }}
        }})
    } else {
        json!({"canary": {
            "canaryService": "canary-scaledowndelay-canary",
            "stableService": "canary-scaledowndelay-stable",
            "steps": [{"setWeight": 50}, {"pause": {}}]
        }})
    };
    let mut ro = rollout("canary-scaledownd-on-abort", app, None, strategy);
    ro["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("5m");
    c.apply(
        "applies its manifests",
        vec![
            service("canary-scaledowndelay-root", app),
            service("canary-scaledowndelay-canary", app),
            service("canary-scaledowndelay-stable", app),
            ro,
        ],
    )
    .await;
    c.wait_status("Healthy after create", "Healthy").await;
    c.update_spec().await;
    c.wait_status("Paused after the update", "Paused").await;
    c.abort(true).await;
    c.wait_status("Degraded after abort", "Degraded").await;
    let stable = c.get().await["status"]["stableRS"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let want: BTreeMap<String, String> = [
        ("app".to_string(), app.to_string()),
        (HASH.to_string(), stable),
    ]
    .into();
    c.eq(
        "the canary Service selects the stable pods after abort",
        c.service_selector("canary-scaledowndelay-canary").await,
        want,
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.expect_revision_pods("revision 2 has no pods 3 s after abort", "2", 0)
        .await;
}

/// canary_test.go `TestCanaryUnScaleDownOnAbort` (functional/canary-unscaledownonabort.yaml:
/// `abortScaleDownDelaySeconds: 0` leaves the canary up).
async fn canary_unscale_down_on_abort(env: &Env, checks: &Checks) {
    let c = Case::new(
        "TestCanaryUnScaleDownOnAbort",
        env,
        checks,
        "canary-scaledownd-on-abort",
    )
    .await;
    let app = "canary-scaledowndelay";
    let strategy = json!({"canary": {
        "abortScaleDownDelaySeconds": 0,
        "scaleDownDelayRevisionLimit": 1,
        "canaryService": "canary-scaledowndelay-canary",
        "stableService": "canary-scaledowndelay-stable",
        "steps": [{"setCanaryScale": {"replicas": 1}}, {"pause": {}}],
        "trafficRouting": {"alb": {
            "ingress": "canary-scaledowndelay-ingress",
            "rootService": "canary-scaledowndelay-root",
            "servicePort": 80
        }}
    }});
    c.apply(
        "applies its manifests",
        vec![
            service("canary-scaledowndelay-root", app),
            service("canary-scaledowndelay-canary", app),
            service("canary-scaledowndelay-stable", app),
            rollout("canary-scaledownd-on-abort", app, None, strategy),
        ],
    )
    .await;
    c.wait_status("Healthy after create", "Healthy").await;
    c.update_spec().await;
    c.wait_status("Paused after the update", "Paused").await;
    c.abort(true).await;
    c.wait_status("Degraded after abort", "Degraded").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.expect_revision_pods("revision 2 keeps its pod 3 s after abort", "2", 1)
        .await;
    let deadline = match c.rs_by_revision("2").await {
        Some(rs) => annotation(&rs, SCALE_DOWN_DEADLINE),
        None => Some("no revision 2".into()),
    };
    c.eq("revision 2 is not marked for scale-down", deadline, None);
}

/// canary_test.go `TestCanaryWithPausedRollout` (functional/rollout-canary-with-pause.yaml).
async fn canary_with_paused_rollout(env: &Env, checks: &Checks) {
    let c = Case::new(
        "TestCanaryWithPausedRollout",
        env,
        checks,
        "rollout-canary-with-pause",
    )
    .await;
    let app = "rollout-canary-with-pause";
    let mut ro = rollout(
        app,
        app,
        Some(3),
        json!({"canary": {
            "canaryService": "rollout-canary-with-pause-canary",
            "stableService": "rollout-canary-with-pause-stable",
            "steps": [{"setWeight": 20}, {"pause": {}}]
        }}),
    );
    ro["spec"]["revisionHistoryLimit"] = json!(3);
    ro["spec"]["progressDeadlineSeconds"] = json!(5);
    ro["spec"]["template"]["spec"]["containers"][0] = json!({
        "name": "rollouts-demo", "image": "nginx:1.19-alpine",
        "ports": [{"containerPort": 80}],
        "readinessProbe": {"initialDelaySeconds": 10, "httpGet": {"path": "/", "port": 80}, "periodSeconds": 30}
    });
    c.apply(
        "applies its manifests",
        vec![
            service("rollout-canary-with-pause-root", app),
            service("rollout-canary-with-pause-canary", app),
            service("rollout-canary-with-pause-stable", app),
            ro,
        ],
    )
    .await;
    c.wait_status("Healthy after create", "Healthy").await;
    c.update_spec().await;
    c.wait_status("Paused after update to revision 2", "Paused")
        .await;
    c.update_spec().await;
    c.wait_status("Paused after update to revision 3", "Paused")
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.expect_revision_pods("revision 1 keeps 3 pods", "1", 3)
        .await;
    c.expect_revision_pods("revision 2 is scaled to 0", "2", 0)
        .await;
    c.expect_revision_pods("revision 3 has 1 pod", "3", 1).await;
}

/// functional_test.go `TestRolloutAbortRetryPromote`.
async fn rollout_abort_retry_promote(env: &Env, checks: &Checks) {
    let c = Case::new(
        "TestRolloutAbortRetryPromote",
        env,
        checks,
        "abort-retry-promote",
    )
    .await;
    let app = "abort-retry-promote";
    c.apply(
        "applies its manifests",
        vec![rollout(
            app,
            app,
            None,
            json!({"canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "3s"}}]}}),
        )],
    )
    .await;
    c.wait_status("Healthy after create", "Healthy").await;
    c.update_spec().await;
    c.wait_status("Paused after the update", "Paused").await;
    c.expect_revision_pods("paused: revision 1 has 1 pod", "1", 1)
        .await;
    c.expect_revision_pods("paused: revision 2 has 1 pod", "2", 1)
        .await;
    c.abort(true).await;
    c.wait_status("Degraded after abort", "Degraded").await;
    c.abort(false).await;
    c.wait_status("Paused again after retry", "Paused").await;
    c.expect_revision_pods("retried: revision 1 has 1 pod", "1", 1)
        .await;
    c.expect_revision_pods("retried: revision 2 has 1 pod", "2", 1)
        .await;
    c.wait_status("Healthy once the 3 s pause is over", "Healthy")
        .await;
    c.expect_revision_pods("promoted: revision 1 has no pods", "1", 0)
        .await;
    c.expect_revision_pods("promoted: revision 2 has 1 pod", "2", 1)
        .await;
    c.expect_events(&[
        "RolloutAddedToInformer",
        "RolloutNotCompleted",
        "RolloutUpdated",
        "NewReplicaSetCreated",
        "ScalingReplicaSet",
        "RolloutCompleted",
        "RolloutNotCompleted",
        "RolloutUpdated",
        "NewReplicaSetCreated",
        "ScalingReplicaSet",
        "RolloutStepCompleted",
        "RolloutPaused",
        "ScalingReplicaSet",
        "RolloutAborted",
        "ScalingReplicaSet",
        "RolloutStepCompleted",
        "RolloutPaused",
        "RolloutStepCompleted",
        "RolloutResumed",
        "ScalingReplicaSet",
        "RolloutCompleted",
    ])
    .await;
}

/// functional_test.go `TestCanaryPromoteFull`: promote at a timed pause, in the middle of an
/// analysis step, and fully after an abort.
async fn canary_promote_full(env: &Env, checks: &Checks) {
    let c = Case::new("TestCanaryPromoteFull", env, checks, "canary-promote-full").await;
    let app = "canary-promote-full";
    let strategy = json!({"canary": {
        "analysis": {"templates": [{"templateName": "sleep-job"}], "startingStep": 4},
        "steps": [
            {"pause": {"duration": "24h"}},
            {"analysis": {
                "templates": [{"templateName": "sleep-job"}],
                "args": [{"name": "duration", "value": "24h"}]
            }},
            {"pause": {}},
            {"analysis": {"templates": [{"templateName": "sleep-job"}]}}
        ]
    }});
    c.apply(
        "applies its manifests",
        vec![sleep_job_template(), rollout(app, app, None, strategy)],
    )
    .await;
    c.wait_status("Healthy after create", "Healthy").await;
    c.update_spec().await;
    c.wait_status("Paused at the 24h pause", "Paused").await;
    c.promote(false).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ro = c.get().await;
    c.eq(
        "at the analysis step (currentStepIndex 1) 2 s after promote",
        ro["status"]["currentStepIndex"].clone(),
        json!(1),
    );
    c.eq(
        "Progressing while the 24h analysis runs",
        phase(&ro),
        "Progressing".to_string(),
    );
    c.expect_analysis_runs("one AnalysisRun for the analysis step", 1)
        .await;
    c.promote(false).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.wait_status(
        "Paused at the pause step after promoting past the analysis",
        "Paused",
    )
    .await;
    c.abort(true).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.promote(true).await;
    c.wait_status(
        "Healthy after promote --full of the aborted update",
        "Healthy",
    )
    .await;
    c.expect_analysis_runs("no new AnalysisRun after promote --full", 1)
        .await;
}

/// functional_test.go `TestBlueGreenUpdate` (functional/rollout-bluegreen.yaml).
async fn blue_green_update(env: &Env, checks: &Checks) {
    let c = Case::new("TestBlueGreenUpdate", env, checks, "bluegreen").await;
    let mut ro = rollout(
        "bluegreen",
        "bluegreen",
        Some(3),
        json!({"blueGreen": {"activeService": "bluegreen", "scaleDownDelaySeconds": 10}}),
    );
    ro["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .expect("container")
        .remove("ports");
    c.apply(
        "applies its manifests",
        vec![service("bluegreen", "bluegreen"), ro],
    )
    .await;
    c.wait_status("Healthy after create", "Healthy").await;
    c.expect_replica_counts("created: replica counts 3 3 3 3 3", [3, 3, 3, 3, 3])
        .await;
    c.update_spec().await;
    c.wait_status("Progressing after the update", "Progressing")
        .await;
    c.wait_active_revision("the active selector moves to revision 2", "2")
        .await;
    c.expect_replica_counts("switched: replica counts 3 6 3 3 3", [3, 6, 3, 3, 3])
        .await;
    c.wait_status("Healthy after the switch", "Healthy").await;
    c.expect_replica_counts("healthy: replica counts 3 6 3 3 3", [3, 6, 3, 3, 3])
        .await;
    c.expect_events(&[
        "RolloutAddedToInformer",
        "RolloutUpdated",
        "NewReplicaSetCreated",
        "ScalingReplicaSet",
        "RolloutCompleted",
        "SwitchService",
        "RolloutUpdated",
        "NewReplicaSetCreated",
        "RolloutNotCompleted",
        "ScalingReplicaSet",
        "SwitchService",
        "RolloutCompleted",
    ])
    .await;
}

/// functional_test.go `TestBlueGreenPromoteFull`: `promote --full` skips the paused preview
/// and the pre- and post-promotion analyses.
async fn blue_green_promote_full(env: &Env, checks: &Checks) {
    let c = Case::new(
        "TestBlueGreenPromoteFull",
        env,
        checks,
        "bluegreen-promote-full",
    )
    .await;
    let app = "bluegreen-promote-full";
    let strategy = json!({"blueGreen": {
        "activeService": "bluegreen-promote-full-active",
        "autoPromotionEnabled": false,
        "prePromotionAnalysis": {"templates": [{"templateName": "sleep-job"}]},
        "postPromotionAnalysis": {"templates": [{"templateName": "sleep-job"}]}
    }});
    c.apply(
        "applies its manifests",
        vec![
            sleep_job_template(),
            service("bluegreen-promote-full-active", app),
            rollout(app, app, Some(3), strategy),
        ],
    )
    .await;
    c.wait_status("Healthy after create", "Healthy").await;
    c.update_spec().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.promote(true).await;
    c.wait_status("Healthy after promote --full", "Healthy")
        .await;
    c.expect_analysis_runs("no AnalysisRun after promote --full", 0)
        .await;
}

/// functional_test.go `TestBlueGreenScaleDownOnAbort`.
async fn blue_green_scale_down_on_abort(env: &Env, checks: &Checks) {
    let c = Case::new(
        "TestBlueGreenScaleDownOnAbort",
        env,
        checks,
        "bluegreen-scaledown-on-abort",
    )
    .await;
    let app = "bluegreen-preview-replicas";
    let strategy = json!({"blueGreen": {
        "abortScaleDownDelaySeconds": 1,
        "activeService": "bluegreen-preview-replicas-active",
        "previewService": "bluegreen-preview-replicas-preview",
        "previewReplicaCount": 1,
        "scaleDownDelaySeconds": 5,
        "autoPromotionEnabled": false
    }});
    c.apply(
        "applies its manifests",
        vec![
            service("bluegreen-preview-replicas-active", app),
            service("bluegreen-preview-replicas-preview", app),
            rollout("bluegreen-scaledown-on-abort", app, Some(2), strategy),
        ],
    )
    .await;
    c.wait_status("Healthy after create", "Healthy").await;
    c.update_spec().await;
    c.wait_status("Paused after the update", "Paused").await;
    c.expect_revision_pods("revision 2 runs previewReplicaCount (1) pods", "2", 1)
        .await;
    c.expect_revision_pods("revision 1 keeps 2 pods", "1", 2)
        .await;
    c.abort(true).await;
    c.wait_status("Degraded after abort", "Degraded").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.expect_revision_pods("revision 2 has no pods 3 s after abort", "2", 0)
        .await;
}

/// functional_test.go `TestBlueGreenScaleDownDelay`: old ReplicaSets stay up for
/// `scaleDownDelaySeconds`, at most `scaleDownDelayRevisionLimit` of them.
async fn blue_green_scale_down_delay(env: &Env, checks: &Checks) {
    let c = Case::new(
        "TestBlueGreenScaleDownDelay",
        env,
        checks,
        "bluegreen-scaledowndelay",
    )
    .await;
    let app = "bluegreen-scaledowndelay";
    let strategy = json!({"blueGreen": {
        "activeService": "bluegreen-scaledowndelay-active",
        "scaleDownDelaySeconds": 86400,
        "scaleDownDelayRevisionLimit": 2
    }});
    c.apply(
        "applies its manifests",
        vec![
            service("bluegreen-scaledowndelay-active", app),
            rollout(app, app, Some(1), strategy),
        ],
    )
    .await;
    c.wait_status("Healthy after create", "Healthy").await;
    for rev in 2..=4 {
        c.update_spec().await;
        c.wait_status(
            &format!("Progressing after update to revision {rev}"),
            "Progressing",
        )
        .await;
        c.wait_status(&format!("Healthy at revision {rev}"), "Healthy")
            .await;
        if rev == 2 {
            c.expect_revision_pods("revision 2 has 1 pod", "2", 1).await;
            c.expect_revision_pods("revision 1 still has 1 pod", "1", 1)
                .await;
            c.expect_replica_counts("revision 2: replica counts 1 2 1 1 1", [1, 2, 1, 1, 1])
                .await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (rev, n) in [("4", 1), ("3", 1), ("2", 1), ("1", 0)] {
        c.expect_revision_pods(&format!("limit 2: revision {rev} has {n} pods"), rev, n)
            .await;
    }
    c.expect_replica_counts("limit 2: replica counts 1 3 1 1 1", [1, 3, 1, 1, 1])
        .await;
    c.merge_patch(json!({"spec": {"strategy": {"blueGreen": {"scaleDownDelayRevisionLimit": 1}}}}))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (rev, n) in [("4", 1), ("3", 1), ("2", 0), ("1", 0)] {
        c.expect_revision_pods(&format!("limit 1: revision {rev} has {n} pods"), rev, n)
            .await;
    }
    c.expect_replica_counts("limit 1: replica counts 1 2 1 1 1", [1, 2, 1, 1, 1])
        .await;
}

/// functional_test.go `TestKubectlWaitForPaused`: `kubectl wait --for=condition=Paused`.
async fn kubectl_wait_for_paused(env: &Env, checks: &Checks) {
    let c = Case::new(
        "TestKubectlWaitForPaused",
        env,
        checks,
        "kubectl-wait-paused",
    )
    .await;
    let app = "kubectl-wait-paused";
    let mut ro = rollout(
        app,
        app,
        Some(1),
        json!({"blueGreen": {"activeService": app, "autoPromotionEnabled": false}}),
    );
    ro["spec"]["template"]["spec"]["containers"][0] = json!({
        "name": app, "image": "nginx:1.19-alpine", "imagePullPolicy": "Always",
        "ports": [{"containerPort": 80}]
    });
    let mut svc = service(app, app);
    svc["spec"]["ports"] = json!([{"protocol": "TCP", "port": 80, "targetPort": 80}]);
    c.apply("applies its manifests", vec![svc, ro]).await;
    c.wait_status("Healthy after create", "Healthy").await;
    c.update_spec().await;
    let target = format!("rollout/{app}");
    let met = format!("rollout.argoproj.io/{app} condition met");
    let o = env
        .kubectl(&[
            "wait",
            "-n",
            &c.ns,
            "--for=condition=Paused",
            &target,
            "--timeout=15s",
        ])
        .await;
    c.check(
        "kubectl wait --for=condition=Paused",
        o.ok && o.stdout.contains(&met),
        || format!("{} {}", o.stdout, o.stderr),
    );
    c.eq("Paused", phase(&c.get().await), "Paused".to_string());
    c.eq(
        "the active selector stays on revision 1",
        c.get().await["status"]["blueGreen"]["activeSelector"]
            .as_str()
            .map(str::to_string),
        c.hash_of_revision("1").await,
    );
    c.promote(false).await;
    let o = env
        .kubectl(&[
            "wait",
            "-n",
            &c.ns,
            "--for=condition=Paused=False",
            &target,
            "--timeout=15s",
        ])
        .await;
    c.check(
        "kubectl wait --for=condition=Paused=False",
        o.ok && o.stdout.contains(&met),
        || format!("{} {}", o.stdout, o.stderr),
    );
    c.eq("Healthy", phase(&c.get().await), "Healthy".to_string());
    // ExpectActiveRevision retries for 3 s: the switch lags behind the promotion.
    c.wait_active_revision("the active selector moves to revision 2", "2")
        .await;
    let want = c.hash_of_revision("2").await;
    let svc_hash = c.service_selector(app).await.get(HASH).cloned();
    c.eq("the active Service selects revision 2", svc_hash, want);
}

/// rollback_window_test.go `TestRollbackAnalysis` (functional/rollout-rollback-window.yaml):
/// a rollback within `rollbackWindow.revisions` is fast-tracked without analysis.
async fn rollback_analysis(env: &Env, checks: &Checks) {
    let c = Case::new("TestRollbackAnalysis", env, checks, "window").await;
    let mut ro = rollout(
        "window",
        "window",
        Some(2),
        json!({"canary": {"steps": [
            {"setWeight": 50},
            {"analysis": {
                "templates": [{"templateName": "sleep-job"}],
                "args": [{"name": "rev", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['rev']"}}}]
            }}
        ]}}),
    );
    ro["spec"]["rollbackWindow"] = json!({"revisions": 2});
    ro["spec"]["template"]["metadata"]["labels"]["rev"] = json!("initial");
    ro["spec"]["template"]["spec"]["containers"][0] = json!({
        "name": "basic", "image": "nginx:1.19-alpine",
        "resources": {"requests": {"memory": "16Mi", "cpu": "1m"}}
    });
    c.apply("applies its manifests", vec![sleep_job_template(), ro])
        .await;
    c.wait_status("Healthy after create", "Healthy").await;
    for (rev, label, runs, note) in [
        (2, "two", 1, "update"),
        (3, "three", 2, "update"),
        (4, "four", 3, "update"),
        (5, "three", 3, "rollback within the window, no analysis"),
        (6, "six", 4, "update"),
        (7, "two", 5, "rollback outside the window, analysed"),
    ] {
        // Creation times have one-second resolution; the window counts strictly older ones.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        c.merge_patch(json!({"spec": {"template": {"metadata": {"annotations": {"rev": label}}}}}))
            .await;
        c.wait_status(&format!("Healthy at revision {rev} ({note})"), "Healthy")
            .await;
        c.expect_analysis_runs(&format!("revision {rev}: {runs} AnalysisRuns"), runs)
            .await;
    }
}

/// functional_test.go `TestBlueGreenExceedProgressDeadlineAbort`: an update whose pods never
/// become ready goes Degraded after `progressDeadlineSeconds`, and is aborted (preview scaled
/// down) only with `progressDeadlineAbort`.
async fn blue_green_exceed_progress_deadline_abort(env: &Env, checks: &Checks) {
    let c = Case::new(
        "TestBlueGreenExceedProgressDeadlineAbort",
        env,
        checks,
        "bluegreen-scaledowndelay",
    )
    .await;
    let app = "bluegreen-scaledowndelay";
    let ro = rollout(
        app,
        app,
        Some(1),
        json!({"blueGreen": {
            "activeService": "bluegreen-scaledowndelay-active",
            "abortScaleDownDelaySeconds": 2
        }}),
    );
    // PatchSpec is a strategic merge: the container named bad2good is added next to the
    // existing one (containers merge by name).
    let mut containers = ro["spec"]["template"]["spec"]["containers"].clone();
    containers
        .as_array_mut()
        .expect("containers")
        .push(json!({"name": "bad2good", "image": ERROR_IMAGE}));
    c.apply(
        "applies its manifests",
        vec![service("bluegreen-scaledowndelay-active", app), ro],
    )
    .await;
    c.wait_status("Healthy after create", "Healthy").await;
    c.merge_patch(json!({"spec": {
        "progressDeadlineAbort": false,
        "progressDeadlineSeconds": 1,
        "template": {"spec": {"containers": containers}}
    }}))
    .await;
    c.wait_status("Degraded once the progress deadline passes", "Degraded")
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.expect_revision_pods(
        "revision 2 keeps its pod without progressDeadlineAbort",
        "2",
        1,
    )
    .await;
    c.eq(
        "status.abort stays false",
        c.get().await["status"]["abort"].as_bool().unwrap_or(false),
        false,
    );
    c.merge_patch(json!({"spec": {"progressDeadlineAbort": true, "progressDeadlineSeconds": 1}}))
        .await;
    c.wait_status("Degraded again with progressDeadlineAbort", "Degraded")
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.expect_revision_pods("the aborted revision 2 has no pods", "2", 0)
        .await;
    let ro = c.get().await;
    let conditions = ro["status"]["conditions"].as_array().map_or(0, Vec::len);
    c.eq(
        "status.abort is set, with 4 conditions",
        (ro["status"]["abort"].as_bool().unwrap_or(false), conditions),
        (true, 4),
    );
}
