//! Conformance of the sandbox with kubernetes' own kubectl command tests for Deployments:
//! a port of `run_deployment_tests` in kubernetes/kubernetes `test/cmd/apps.sh` (plus the
//! Deployment part of `run_rs_tests`: `kubectl scale deploy --all / -l`). The real `kubectl`
//! runs the same commands with the same fixtures (`hack/testdata/*.yaml`, transcribed below
//! with the images of `test/cmd/legacy-script.sh`), and each assertion of the script is one
//! named check. Assertions follow `hack/lib/test.sh`: `kube::test::get_object_assert` is
//! `kubectl get OBJECT -o go-template=T` compared with the expected text,
//! `wait_object_assert` the same retried for a while, `if_has_string` a substring test, and a
//! command the script runs under `set -o errexit` (or negated with `!`) is a check that it
//! succeeds (or fails).
//!
//! One Deployment-controller test that apps.sh lacks is added the same way: the first half of
//! `TestFailedDeployment` (kubernetes `test/integration/deployment/deployment_test.go`), a
//! rollout whose pods never become ready hitting `progressDeadlineSeconds`; its pods are an
//! image in `SandboxOptions::unready_images`. Its second half marks the pods ready by hand,
//! which the sandbox cannot do.
//!
//! Not ported, and why:
//! - `describe pods` (after `create deployment test-nginx-apps`): the sandbox runs no pods.
//! - `describe_resource_chunk_size_assert`: it inspects kubectl's own paging requests (`-v=6`
//!   logs); the sandbox ignores `limit`/`continue` anyway.
//! - `create -f hack/testdata/deployment-with-UnixUserID.yaml`: a validation test of
//!   `runAsUser`, not about rollouts, and the sandbox validates no pod security fields.
//! - "Auto scale deployment" (`kubectl autoscale`): HorizontalPodAutoscalers are not served.
//! - `run_rs_tests` other than `kubectl scale deploy`, and `run_daemonset_history_tests`:
//!   ReplicaSets managed by hand, pods and DaemonSets, not Deployment rollouts.
//!
//! Run with `cargo test -p kube-sandbox --test conformance_kubectl -- --nocapture` to see
//! every check and the tally.

mod common;

use std::time::{Duration, Instant};

use common::checks::Checks;
use common::{Env, Out, start};

/// Checks that fail because of a known difference between the sandbox and a real cluster.
/// Keep it exact: `Checks::finish` fails on a failure not listed here and on a listed check
/// that passes.
const KNOWN_DIVERGENCES: &[(&str, &str)] = &[(
    "rollback: the Deployment records kubectl-rollout as a field manager",
    "the sandbox keeps no metadata.managedFields (no server-side apply)",
)];

// Images of test/cmd/legacy-script.sh.
const IMAGE_DEPLOYMENT_R1: &str = "registry.k8s.io/nginx:test-cmd";
const IMAGE_DEPLOYMENT_R2: &str = "registry.k8s.io/nginx:1.7.9";
const IMAGE_PERL: &str = "registry.k8s.io/perl";

/// The image of test/integration/deployment (`fakeImage`), whose pods are never marked ready.
const FAKE_IMAGE: &str = "fakeimage";

// Field templates of test/cmd/legacy-script.sh (`runTests`).
const ID_FIELD: &str = ".metadata.name";
const CONTAINER_NAME_FIELD: &str = "(index .spec.template.spec.containers 0).name";
const IMAGE_FIELD0: &str = "(index .spec.template.spec.containers 0).image";
const IMAGE_FIELD1: &str = "(index .spec.template.spec.containers 1).image";
const RS_REPLICAS_FIELD: &str = ".spec.replicas";

/// hack/testdata/deployment-revision1.yaml (apps/v1).
const DEPLOYMENT_REVISION1: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx
  labels:
    name: nginx-undo
spec:
  replicas: 3
  selector:
    matchLabels:
      name: nginx-undo
  template:
    metadata:
      labels:
        name: nginx-undo
    spec:
      containers:
      - name: nginx
        image: registry.k8s.io/nginx:test-cmd
        ports:
        - containerPort: 80
";

/// hack/testdata/deployment-multicontainer.yaml (apps/v1).
const DEPLOYMENT_MULTICONTAINER: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-deployment
  labels:
    name: nginx-deployment
spec:
  replicas: 3
  selector:
    matchLabels:
      name: nginx
  template:
    metadata:
      labels:
        name: nginx
    spec:
      containers:
      - name: nginx
        image: registry.k8s.io/nginx:test-cmd
        ports:
        - containerPort: 80
      - name: perl
        image: registry.k8s.io/perl
";

/// test/fixtures/doc-yaml/user-guide/deployment.yaml.
const USER_GUIDE_DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-deployment
  labels:
    name: nginx-deployment
spec:
  replicas: 3
  selector:
    matchLabels:
      name: nginx
  template:
    metadata:
      labels:
        name: nginx
    spec:
      containers:
      - name: nginx
        image: nginx
        ports:
        - containerPort: 80
";

/// hack/testdata/configmap.yaml and secret.yaml.
const CONFIGMAP: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: test-set-env-config
data:
  key-1: value-1
  key-2: value-2
";
const SECRET: &str = "apiVersion: v1
kind: Secret
metadata:
  name: test-set-env-secret
type: Opaque
data:
  password: dmFsdWUtMg0K
  username: dmFsdWUtMQ0K
";

/// hack/testdata/scale-deploy-{1,2,3}.yaml: scale-1 and scale-2 labelled run=hello, scale-3
/// labelled foo=boo.
fn scale_deploy(name: &str, label: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  labels:
    {label}
  name: {name}
spec:
  replicas: 1
  selector:
    matchLabels:
      run: hello
  strategy:
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 1
    type: RollingUpdate
  template:
    metadata:
      labels:
        run: hello
    spec:
      containers:
      - image: aronchick/hello-node:2.0
        imagePullPolicy: IfNotPresent
        name: hello
"
    )
}

/// The script's vocabulary over one sandbox and one tally.
struct Script<'a> {
    env: &'a Env,
    checks: &'a Checks,
}

impl Script<'_> {
    /// Write a fixture into the test's temp dir; returns its path.
    fn file(&self, name: &str, text: &str) -> String {
        let path = self.env.dir.path().join(name);
        std::fs::write(&path, text).expect("fixture written");
        path.to_string_lossy().into_owned()
    }

    async fn run(&self, args: &[&str]) -> Out {
        self.env.kubectl(args).await
    }

    /// A command the script runs under `set -o errexit`: it must succeed.
    async fn ok(&self, name: &str, args: &[&str]) -> Out {
        let o = self.run(args).await;
        self.checks.check(name, o.ok, || {
            format!("kubectl {} failed: {}", args.join(" "), o.stderr.trim())
        });
        o
    }

    /// A command the script negates (`! kubectl ...`): it must fail.
    async fn fails(&self, name: &str, args: &[&str]) -> Out {
        let o = self.run(args).await;
        self.checks.check(name, !o.ok, || {
            format!("kubectl {} succeeded: {}", args.join(" "), o.stdout.trim())
        });
        o
    }

    /// A setup or clean-up command the script does not assert on; a failure is printed.
    async fn step(&self, args: &[&str]) -> Out {
        let o = self.run(args).await;
        if !o.ok {
            println!(
                "  (step kubectl {} failed: {})",
                args.join(" "),
                o.stderr.trim()
            );
        }
        o
    }

    async fn get(&self, object: &str, template: &str) -> String {
        let mut args: Vec<&str> = vec!["get"];
        args.extend(object.split_whitespace());
        let t = format!("go-template={template}");
        args.extend(["-o", t.as_str()]);
        let o = self.run(&args).await;
        if o.ok { o.stdout } else { o.stderr }
    }

    /// `kube::test::get_object_assert OBJECT TEMPLATE EXPECTED`.
    async fn get_assert(&self, name: &str, object: &str, template: &str, expected: &str) {
        let got = self.get(object, template).await;
        self.checks.eq(name, got.as_str(), expected);
    }

    /// `kube::test::wait_object_assert`: the same, retried for up to 8 s.
    async fn wait_assert(&self, name: &str, object: &str, template: &str, expected: &str) {
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut got = self.get(object, template).await;
        while got != expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            got = self.get(object, template).await;
        }
        self.checks.eq(name, got.as_str(), expected);
    }

    /// Wait (up to 10 s, no check) until the controller has caught up, where the script relies
    /// on a real cluster's controller being quicker than the next kubectl start.
    async fn settle(&self, object: &str, template: &str, expected: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.get(object, template).await != expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `kube::test::describe_resource_assert RESOURCE MATCH...`: one check for all matches.
    async fn describe_assert(&self, name: &str, resource: &str, matches: &[&str]) {
        let out = self.run(&["describe", resource]).await.stdout;
        let missing: Vec<&&str> = matches.iter().filter(|m| !out.contains(**m)).collect();
        self.checks.check(name, missing.is_empty(), || {
            format!("missing {missing:?} in:\n{out}")
        });
    }

    /// The NewReplicaSet named by `kubectl describe deployment NAME`. The script greps for
    /// `NewReplicaSet`, which on its test cluster (no pods ever become ready) matches only this
    /// line; once a rollout completes the `Progressing` condition's reason
    /// `NewReplicaSetAvailable` matches too, so take the `NewReplicaSet:` line itself.
    async fn new_rs(&self, deployment: &str) -> String {
        let out = self
            .run(&["describe", "deployment", deployment])
            .await
            .stdout;
        out.lines()
            .find(|l| l.trim_start().starts_with("NewReplicaSet:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_default()
            .to_string()
    }
}

fn items(field: &str) -> String {
    format!("{{{{range.items}}}}{{{{{field}}}}}:{{{{end}}}}")
}

fn one(field: &str) -> String {
    format!("{{{{{field}}}}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_kubectl_apps_sh() {
    common::bounded(body()).await;
}

async fn body() {
    let env = start(kube_sandbox::SandboxOptions {
        rollout_delay: Duration::from_millis(50),
        unready_images: vec![FAKE_IMAGE.to_string()],
        ..kube_sandbox::SandboxOptions::default()
    })
    .await;
    let checks = Checks::new("kubectl (test/cmd/apps.sh, TestFailedDeployment)");
    let s = Script {
        env: &env,
        checks: &checks,
    };
    // create_and_use_new_namespace
    s.step(&["create", "namespace", "namespace-apps"]).await;
    s.step(&[
        "config",
        "set-context",
        "--current",
        "--namespace=namespace-apps",
    ])
    .await;

    create_deployment(&s).await;
    cascading_deletion(&s).await;
    rollback(&s).await;
    set_image(&s).await;
    set_env(&s).await;
    rollout_history(&s).await;
    scale_deployments(&s).await;
    failed_deployment(&s).await;

    checks.finish(KNOWN_DIVERGENCES);
}

/// "Test kubectl create deployment" (old and new generator) and "with image and command".
async fn create_deployment(s: &Script<'_>) {
    let c = s.checks;
    s.ok(
        "create: kubectl create deployment test-nginx-extensions",
        &[
            "create",
            "deployment",
            "test-nginx-extensions",
            &format!("--image={IMAGE_DEPLOYMENT_R1}"),
        ],
    )
    .await;
    s.get_assert(
        "create: test-nginx-extensions container is named nginx",
        "deploy test-nginx-extensions",
        &one(CONTAINER_NAME_FIELD),
        "nginx",
    )
    .await;
    let out = s
        .run(&[
            "get",
            "deployment.apps/test-nginx-extensions",
            "-o",
            "jsonpath={.spec.revisionHistoryLimit}",
        ])
        .await
        .stdout;
    c.has_not(
        "create: test-nginx-extensions revisionHistoryLimit is not 2",
        &out,
        "2",
    );
    let out = s
        .run(&[
            "get",
            "deployment.apps",
            "-o=jsonpath={.items[0].apiVersion}",
        ])
        .await
        .stdout;
    c.has(
        "create: deployment.apps is served as apps/v1 (extensions)",
        &out,
        "apps/v1",
    );
    s.step(&["delete", "deployment", "test-nginx-extensions"])
        .await;

    s.ok(
        "create: kubectl create deployment test-nginx-apps",
        &[
            "create",
            "deployment",
            "test-nginx-apps",
            &format!("--image={IMAGE_DEPLOYMENT_R1}"),
        ],
    )
    .await;
    s.get_assert(
        "create: test-nginx-apps container is named nginx",
        "deploy test-nginx-apps",
        &one(CONTAINER_NAME_FIELD),
        "nginx",
    )
    .await;
    let out = s
        .run(&[
            "get",
            "deployment/test-nginx-apps",
            "-o",
            "jsonpath={.spec.revisionHistoryLimit}",
        ])
        .await
        .stdout;
    c.has("create: revisionHistoryLimit defaults to 10", &out, "10");
    let out = s
        .run(&[
            "get",
            "deployment.apps",
            "-o=jsonpath={.items[0].apiVersion}",
        ])
        .await
        .stdout;
    c.has(
        "create: deployment.apps is served as apps/v1",
        &out,
        "apps/v1",
    );
    // The ReplicaSet is the controller's: wait for it before describing it.
    s.settle("rs", &items(RS_REPLICAS_FIELD), "1:").await;
    s.describe_assert(
        "create: describe rs prints name, template, labels, selector, owner, replicas, pods, volumes",
        "rs",
        &["Name:", "Pod Template:", "Labels:", "Selector:", "Controlled By", "Replicas:", "Pods Status:", "Volumes:"],
    )
    .await;
    s.step(&["delete", "deployment", "test-nginx-apps"]).await;

    s.get_assert(
        "create: no deployment before create with command",
        "deployment",
        &items(ID_FIELD),
        "",
    )
    .await;
    let image = format!("--image={IMAGE_DEPLOYMENT_R1}");
    s.ok(
        "create: create deployment --dry-run=client with a command",
        &[
            "create",
            "deployment",
            "nginx-with-command",
            "--dry-run=client",
            &image,
            "--",
            "/bin/sleep",
            "infinity",
        ],
    )
    .await;
    s.ok(
        "create: create deployment --dry-run=server with a command",
        &[
            "create",
            "deployment",
            "nginx-with-command",
            "--dry-run=server",
            &image,
            "--",
            "/bin/sleep",
            "infinity",
        ],
    )
    .await;
    s.get_assert(
        "create: dry runs create nothing",
        "deployment",
        &items(ID_FIELD),
        "",
    )
    .await;
    s.ok(
        "create: create deployment with a command",
        &[
            "create",
            "deployment",
            "nginx-with-command",
            &image,
            "--",
            "/bin/sleep",
            "infinity",
        ],
    )
    .await;
    s.get_assert(
        "create: nginx-with-command container is named nginx",
        "deploy nginx-with-command",
        &one(CONTAINER_NAME_FIELD),
        "nginx",
    )
    .await;
    s.step(&["delete", "deployment", "nginx-with-command"])
        .await;
}

/// "Test cascading deletion": background deletion takes the ReplicaSet, orphan keeps it.
async fn cascading_deletion(s: &Script<'_>) {
    let user_guide = s.file("user-guide-deployment.yaml", USER_GUIDE_DEPLOYMENT);
    s.get_assert(
        "cascade: no deployment at start",
        "deployment",
        &items(ID_FIELD),
        "",
    )
    .await;
    s.ok(
        "cascade: create -f user-guide/deployment.yaml",
        &["create", "-f", &user_guide],
    )
    .await;
    s.wait_assert(
        "cascade: its ReplicaSet comes up with 3 replicas",
        "rs",
        &items(RS_REPLICAS_FIELD),
        "3:",
    )
    .await;
    s.ok(
        "cascade: delete deployment --cascade",
        &["delete", "deployment", "nginx-deployment", "--cascade"],
    )
    .await;
    s.wait_assert(
        "cascade: the ReplicaSet is deleted with it",
        "rs",
        &items(ID_FIELD),
        "",
    )
    .await;

    s.get_assert(
        "cascade: no deployment before orphan test",
        "deployment",
        &items(ID_FIELD),
        "",
    )
    .await;
    s.get_assert(
        "cascade: no rs before orphan test",
        "rs",
        &items(ID_FIELD),
        "",
    )
    .await;
    s.ok(
        "cascade: create deployment nginx-deployment",
        &[
            "create",
            "deployment",
            "nginx-deployment",
            &format!("--image={IMAGE_DEPLOYMENT_R1}"),
        ],
    )
    .await;
    s.wait_assert(
        "cascade: its ReplicaSet comes up with 1 replica",
        "rs",
        &items(RS_REPLICAS_FIELD),
        "1:",
    )
    .await;
    s.ok(
        "cascade: delete deployment --cascade=orphan",
        &[
            "delete",
            "deployment",
            "nginx-deployment",
            "--cascade=orphan",
        ],
    )
    .await;
    s.wait_assert(
        "cascade: the orphaning delete removes the deployment",
        "deployment",
        &items(ID_FIELD),
        "",
    )
    .await;
    s.get_assert(
        "cascade: the orphaned ReplicaSet stays with 1 replica",
        "rs",
        &items(RS_REPLICAS_FIELD),
        "1:",
    )
    .await;
    let rs = s
        .get("rs", "{{range.items}}{{.metadata.name}}{{end}}")
        .await;
    s.step(&["delete", "rs", rs.trim()]).await;
}

/// "Rollback a deployment": undo to a revision, dry runs, a missing revision, pause/resume,
/// the revision-history annotation, `rollout status --revision`, `rollout restart`.
async fn rollback(s: &Script<'_>) {
    let c = s.checks;
    let rev1 = s.file("deployment-revision1.yaml", DEPLOYMENT_REVISION1);
    let rev2 = s.file(
        "deployment-revision2.yaml",
        &DEPLOYMENT_REVISION1.replace(IMAGE_DEPLOYMENT_R1, IMAGE_DEPLOYMENT_R2),
    );
    let image0 = items(IMAGE_FIELD0);
    let r1 = format!("{IMAGE_DEPLOYMENT_R1}:");
    let r2 = format!("{IMAGE_DEPLOYMENT_R2}:");
    s.get_assert(
        "rollback: no deployment at start",
        "deployment",
        &items(ID_FIELD),
        "",
    )
    .await;
    s.ok(
        "rollback: create -f deployment-revision1.yaml",
        &["create", "-f", &rev1],
    )
    .await;
    s.get_assert(
        "rollback: deployment nginx exists",
        "deployment",
        &items(ID_FIELD),
        "nginx:",
    )
    .await;
    s.get_assert(
        "rollback: revision 1 runs image R1",
        "deployment",
        &image0,
        &r1,
    )
    .await;
    // The controller must have written revision 1 before kubectl can find it.
    s.settle(
        "deployment nginx",
        "{{index .metadata.annotations \"deployment.kubernetes.io/revision\"}}",
        "1",
    )
    .await;
    s.ok(
        "rollback: undo --to-revision=1 on revision 1 is a no-op that succeeds",
        &["rollout", "undo", "deployment", "nginx", "--to-revision=1"],
    )
    .await;
    s.get_assert(
        "rollback: still image R1 after the no-op undo",
        "deployment",
        &image0,
        &r1,
    )
    .await;
    s.ok(
        "rollback: apply -f deployment-revision2.yaml",
        &["apply", "-f", &rev2],
    )
    .await;
    s.get_assert(
        "rollback: revision 2 runs image R2",
        "deployment.apps",
        &image0,
        &r2,
    )
    .await;
    s.settle(
        "deployment nginx",
        "{{index .metadata.annotations \"deployment.kubernetes.io/revision\"}}",
        "2",
    )
    .await;
    let o = s
        .ok(
            "rollback: undo --dry-run=client succeeds",
            &["rollout", "undo", "deployment", "nginx", "--dry-run=client"],
        )
        .await;
    c.has(
        "rollback: undo --dry-run=client prints revision 1's template",
        &o.stdout,
        "test-cmd",
    );
    s.ok(
        "rollback: undo --dry-run=server succeeds",
        &["rollout", "undo", "deployment", "nginx", "--dry-run=server"],
    )
    .await;
    s.get_assert(
        "rollback: dry-run undos change nothing",
        "deployment.apps",
        &image0,
        &r2,
    )
    .await;
    s.ok(
        "rollback: undo --to-revision=1",
        &["rollout", "undo", "deployment", "nginx", "--to-revision=1"],
    )
    .await;
    s.get_assert(
        "rollback: undo --to-revision=1 brings back image R1",
        "deployment",
        &image0,
        &r1,
    )
    .await;
    s.fails(
        "rollback: undo --to-revision=1000000 fails",
        &[
            "rollout",
            "undo",
            "deployment",
            "nginx",
            "--to-revision=1000000",
        ],
    )
    .await;
    s.get_assert(
        "rollback: the failed undo changes nothing",
        "deployment",
        &image0,
        &r1,
    )
    .await;
    s.settle(
        "deployment nginx",
        "{{index .metadata.annotations \"deployment.kubernetes.io/revision\"}}",
        "3",
    )
    .await;
    s.ok(
        "rollback: undo to the last revision",
        &["rollout", "undo", "deployment", "nginx"],
    )
    .await;
    s.get_assert(
        "rollback: undo to the last revision brings back image R2",
        "deployment",
        &image0,
        &r2,
    )
    .await;
    s.settle(
        "deployment nginx",
        "{{index .metadata.annotations \"deployment.kubernetes.io/revision\"}}",
        "4",
    )
    .await;
    s.ok(
        "rollback: rollout pause",
        &["rollout", "pause", "deployment", "nginx"],
    )
    .await;
    s.fails(
        "rollback: a paused deployment cannot be rolled back",
        &["rollout", "undo", "deployment", "nginx"],
    )
    .await;
    s.fails(
        "rollback: a paused deployment cannot be restarted",
        &["rollout", "restart", "deployment", "nginx"],
    )
    .await;
    s.ok(
        "rollback: rollout resume",
        &["rollout", "resume", "deployment", "nginx"],
    )
    .await;
    s.ok(
        "rollback: the resumed deployment can be rolled back",
        &["rollout", "undo", "deployment", "nginx"],
    )
    .await;
    // The new ReplicaSet (revision 1's, reused a second time) lists both old numbers.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut rs_yaml = String::new();
    while Instant::now() < deadline {
        let newrs = s.new_rs("nginx").await;
        if !newrs.is_empty() {
            rs_yaml = s.run(&["get", "rs", &newrs, "-o", "yaml"]).await.stdout;
            if rs_yaml.contains("deployment.kubernetes.io/revision-history: 1,3") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.has(
        "rollback: the new ReplicaSet has revision-history 1,3",
        &rs_yaml,
        "deployment.kubernetes.io/revision-history: 1,3",
    );
    s.fails(
        "rollback: rollout status --revision=3 of a superseded revision fails",
        &["rollout", "status", "deployment/nginx", "--revision=3"],
    )
    .await;
    s.ok(
        "rollback: rollout restart",
        &["rollout", "restart", "deployment/nginx"],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut rs_yaml = String::new();
    while Instant::now() < deadline {
        let newrs = s.new_rs("nginx").await;
        if !newrs.is_empty() {
            rs_yaml = s.run(&["get", "rs", &newrs, "-o", "yaml"]).await.stdout;
            if rs_yaml.contains("deployment.kubernetes.io/revision: \"6\"") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.has(
        "rollback: rollout restart creates a ReplicaSet with revision 6",
        &rs_yaml,
        "deployment.kubernetes.io/revision: \"6\"",
    );
    let out = s
        .run(&[
            "get",
            "deployment",
            "nginx",
            "--show-managed-fields",
            "-o=jsonpath={.metadata.managedFields[*].manager}",
        ])
        .await;
    c.has(
        "rollback: the Deployment records kubectl-rollout as a field manager",
        &(out.stdout + &out.stderr),
        "kubectl-rollout",
    );
    let nginx2 = s.file(
        "deployment-nginx2.yaml",
        &DEPLOYMENT_REVISION1.replace("  name: nginx\n", "  name: nginx2\n"),
    );
    s.ok(
        "rollback: create a second deployment",
        &["create", "-f", &nginx2],
    )
    .await;
    s.ok(
        "rollback: deleting the second deployment is not blocked",
        &["delete", "deployment", "nginx2"],
    )
    .await;
    s.step(&["delete", "deployment", "nginx"]).await;
}

/// "Set image of a deployment".
async fn set_image(s: &Script<'_>) {
    let file = s.file("deployment-multicontainer.yaml", DEPLOYMENT_MULTICONTAINER);
    let (image0, image1) = (items(IMAGE_FIELD0), items(IMAGE_FIELD1));
    let (r1, r2, perl) = (
        format!("{IMAGE_DEPLOYMENT_R1}:"),
        format!("{IMAGE_DEPLOYMENT_R2}:"),
        format!("{IMAGE_PERL}:"),
    );
    let nginx_r1 = format!("nginx={IMAGE_DEPLOYMENT_R1}");
    let nginx_r2 = format!("nginx={IMAGE_DEPLOYMENT_R2}");
    let all_r1 = format!("*={IMAGE_DEPLOYMENT_R1}");
    s.get_assert(
        "set image: no deployment at start",
        "deployment",
        &items(ID_FIELD),
        "",
    )
    .await;
    s.ok(
        "set image: create -f deployment-multicontainer.yaml",
        &["create", "-f", &file],
    )
    .await;
    s.get_assert(
        "set image: deployment exists",
        "deployment",
        &items(ID_FIELD),
        "nginx-deployment:",
    )
    .await;
    s.get_assert("set image: container 0 runs R1", "deployment", &image0, &r1)
        .await;
    s.get_assert(
        "set image: container 1 runs perl",
        "deployment",
        &image1,
        &perl,
    )
    .await;
    let dep = ["set", "image", "deployment", "nginx-deployment"];
    s.ok(
        "set image: --dry-run=client succeeds",
        &[&dep[..], &[nginx_r2.as_str(), "--dry-run=client"]].concat(),
    )
    .await;
    s.ok(
        "set image: --dry-run=server succeeds",
        &[&dep[..], &[nginx_r2.as_str(), "--dry-run=server"]].concat(),
    )
    .await;
    s.get_assert(
        "set image: dry runs leave container 0 at R1",
        "deployment",
        &image0,
        &r1,
    )
    .await;
    s.get_assert(
        "set image: dry runs leave container 1 at perl",
        "deployment",
        &image1,
        &perl,
    )
    .await;
    s.ok(
        "set image: nginx=R2",
        &[&dep[..], &[nginx_r2.as_str()]].concat(),
    )
    .await;
    s.get_assert(
        "set image: container 0 now runs R2",
        "deployment",
        &image0,
        &r2,
    )
    .await;
    s.get_assert(
        "set image: container 1 still runs perl",
        "deployment",
        &image1,
        &perl,
    )
    .await;
    s.fails(
        "set image: a container that does not exist fails",
        &[&dep[..], &["redis=redis"]].concat(),
    )
    .await;
    s.ok(
        "set image: deployments --all",
        &["set", "image", "deployments", "--all", &nginx_r1],
    )
    .await;
    s.get_assert(
        "set image: --all sets container 0 to R1",
        "deployment",
        &image0,
        &r1,
    )
    .await;
    s.get_assert(
        "set image: --all leaves container 1 at perl",
        "deployment",
        &image1,
        &perl,
    )
    .await;
    s.ok(
        "set image: -f FILE",
        &["set", "image", "-f", &file, &nginx_r2],
    )
    .await;
    s.get_assert(
        "set image: -f sets container 0 to R2",
        "deployment",
        &image0,
        &r2,
    )
    .await;
    s.get_assert(
        "set image: -f leaves container 1 at perl",
        "deployment",
        &image1,
        &perl,
    )
    .await;
    s.ok(
        "set image: --local -o yaml",
        &[
            "set", "image", "-f", &file, &nginx_r1, "--local", "-o", "yaml",
        ],
    )
    .await;
    s.get_assert(
        "set image: --local leaves container 0 at R2",
        "deployment",
        &image0,
        &r2,
    )
    .await;
    s.get_assert(
        "set image: --local leaves container 1 at perl",
        "deployment",
        &image1,
        &perl,
    )
    .await;
    s.ok("set image: *=R1", &[&dep[..], &[all_r1.as_str()]].concat())
        .await;
    s.get_assert(
        "set image: * sets container 0 to R1",
        "deployment",
        &image0,
        &r1,
    )
    .await;
    s.get_assert(
        "set image: * sets container 1 to R1",
        "deployment",
        &image1,
        &r1,
    )
    .await;
    s.ok(
        "set image: *=R1 again",
        &[&dep[..], &[all_r1.as_str()]].concat(),
    )
    .await;
    s.get_assert(
        "set image: unchanged container 0",
        "deployment",
        &image0,
        &r1,
    )
    .await;
    s.get_assert(
        "set image: unchanged container 1",
        "deployment",
        &image1,
        &r1,
    )
    .await;
    s.step(&["delete", "deployment", "nginx-deployment"]).await;
}

/// "Set env of a deployment".
async fn set_env(s: &Script<'_>) {
    let c = s.checks;
    let file = s.file("deployment-multicontainer.yaml", DEPLOYMENT_MULTICONTAINER);
    let cm = s.file("configmap.yaml", CONFIGMAP);
    let secret = s.file("secret.yaml", SECRET);
    let env_len = "{{ len (index .spec.template.spec.containers 0).env }}";
    s.get_assert(
        "set env: no deployment at start",
        "deployment",
        &items(ID_FIELD),
        "",
    )
    .await;
    s.ok("set env: create the deployment", &["create", "-f", &file])
        .await;
    s.ok("set env: create the configmap", &["create", "-f", &cm])
        .await;
    s.ok("set env: create the secret", &["create", "-f", &secret])
        .await;
    s.get_assert(
        "set env: deployment exists",
        "deployment",
        &items(ID_FIELD),
        "nginx-deployment:",
    )
    .await;
    s.get_assert(
        "set env: configmap exists",
        "configmaps/test-set-env-config",
        &one(ID_FIELD),
        "test-set-env-config",
    )
    .await;
    s.get_assert(
        "set env: secret exists",
        "secret",
        &items(ID_FIELD),
        "test-set-env-secret:",
    )
    .await;
    let dep = ["set", "env", "deployment", "nginx-deployment"];
    s.ok(
        "set env: --keys=key-2 --from=configmap",
        &[
            &dep[..],
            &["--keys=key-2", "--from=configmap/test-set-env-config"],
        ]
        .concat(),
    )
    .await;
    s.get_assert(
        "set env: the key becomes KEY_2",
        "deploy nginx-deployment",
        "{{ (index (index .spec.template.spec.containers 0).env 0).name}}",
        "KEY_2",
    )
    .await;
    s.get_assert(
        "set env: one variable",
        "deploy nginx-deployment",
        env_len,
        "1",
    )
    .await;
    s.ok(
        "set env: --dry-run=client --from=configmap",
        &[
            &dep[..],
            &["--dry-run=client", "--from=configmap/test-set-env-config"],
        ]
        .concat(),
    )
    .await;
    s.ok(
        "set env: --dry-run=server --from=configmap",
        &[
            &dep[..],
            &["--dry-run=server", "--from=configmap/test-set-env-config"],
        ]
        .concat(),
    )
    .await;
    s.get_assert(
        "set env: dry runs add nothing",
        "deploy nginx-deployment",
        env_len,
        "1",
    )
    .await;
    s.ok(
        "set env: --from=configmap",
        &[&dep[..], &["--from=configmap/test-set-env-config"]].concat(),
    )
    .await;
    s.get_assert(
        "set env: both configmap keys",
        "deploy nginx-deployment",
        env_len,
        "2",
    )
    .await;
    s.ok(
        "set env: env=prod on all containers",
        &[&dep[..], &["env=prod"]].concat(),
    )
    .await;
    s.ok(
        "set env: superenv=superprod on container nginx",
        &[&dep[..], &["superenv=superprod", "-c=nginx"]].concat(),
    )
    .await;
    s.ok(
        "set env: --keys=username --from=secret",
        &[
            &dep[..],
            &["--keys=username", "--from=secret/test-set-env-secret"],
        ]
        .concat(),
    )
    .await;
    s.ok(
        "set env: --from=secret",
        &[&dep[..], &["--from=secret/test-set-env-secret"]].concat(),
    )
    .await;
    s.ok("set env: remove env-", &[&dep[..], &["env-"]].concat())
        .await;
    let o = s
        .env
        .kubectl_stdin(
            &["set", "env", "-f", "-", "-"],
            Some("SOME_ENV_VAR_KEY=SOME_ENV_VAR_VAL\n".into()),
        )
        .await;
    c.has(
        "set env: standard input cannot be both resource and variables",
        &(o.stdout + &o.stderr),
        "standard input cannot be used for multiple arguments",
    );
    s.step(&["delete", "deployment", "nginx-deployment"]).await;
    s.step(&["delete", "configmap", "test-set-env-config"])
        .await;
    s.step(&["delete", "secret", "test-set-env-secret"]).await;
}

/// "Get rollout history".
async fn rollout_history(s: &Script<'_>) {
    let c = s.checks;
    let file = s.file("deployment-multicontainer.yaml", DEPLOYMENT_MULTICONTAINER);
    let (image0, image1) = (items(IMAGE_FIELD0), items(IMAGE_FIELD1));
    s.get_assert(
        "history: no deployment at start",
        "deployment",
        &items(ID_FIELD),
        "",
    )
    .await;
    s.ok("history: create the deployment", &["create", "-f", &file])
        .await;
    s.get_assert(
        "history: deployment exists",
        "deployment",
        &items(ID_FIELD),
        "nginx-deployment:",
    )
    .await;
    s.get_assert(
        "history: container 0 runs R1",
        "deployment",
        &image0,
        &format!("{IMAGE_DEPLOYMENT_R1}:"),
    )
    .await;
    s.get_assert(
        "history: container 1 runs perl",
        "deployment",
        &image1,
        &format!("{IMAGE_PERL}:"),
    )
    .await;
    s.ok(
        "history: set image nginx=R2",
        &[
            "set",
            "image",
            "deployment",
            "nginx-deployment",
            &format!("nginx={IMAGE_DEPLOYMENT_R2}"),
        ],
    )
    .await;
    s.get_assert(
        "history: container 0 runs R2",
        "deployment",
        &image0,
        &format!("{IMAGE_DEPLOYMENT_R2}:"),
    )
    .await;
    s.get_assert(
        "history: container 1 still runs perl",
        "deployment",
        &image1,
        &format!("{IMAGE_PERL}:"),
    )
    .await;
    s.settle(
        "deployment nginx-deployment",
        "{{index .metadata.annotations \"deployment.kubernetes.io/revision\"}}",
        "2",
    )
    .await;
    let out = s
        .run(&["rollout", "history", "deployment", "nginx-deployment"])
        .await
        .stdout;
    c.has(
        "history: names deployment.apps/nginx-deployment",
        &out,
        "deployment.apps/nginx-deployment",
    );
    c.has(
        "history: has the REVISION CHANGE-CAUSE header",
        &out,
        "REVISION  CHANGE-CAUSE",
    );
    c.has("history: lists revision 1", &out, "1         <none>");
    c.has("history: lists revision 2", &out, "2         <none>");
    c.has_not("history: lists no revision 3", &out, "3         <none>");
    for (rev, image) in [("1", IMAGE_DEPLOYMENT_R1), ("2", IMAGE_DEPLOYMENT_R2)] {
        let out = s
            .run(&[
                "rollout",
                "history",
                "deployment",
                "nginx-deployment",
                &format!("--revision={rev}"),
            ])
            .await
            .stdout;
        c.has(
            &format!("history: --revision={rev} names the revision"),
            &out,
            &format!("deployment.apps/nginx-deployment with revision #{rev}"),
        );
        c.has(
            &format!("history: --revision={rev} prints the pod template"),
            &out,
            "Pod Template:",
        );
        c.has(
            &format!("history: --revision={rev} shows the nginx image"),
            &out,
            image,
        );
        c.has(
            &format!("history: --revision={rev} shows the perl image"),
            &out,
            IMAGE_PERL,
        );
    }
    s.step(&["delete", "deployment", "nginx-deployment"]).await;
}

/// From `run_rs_tests`: `kubectl scale deploy` with `--all`, `-l` and dry runs.
async fn scale_deployments(s: &Script<'_>) {
    for (name, label) in [
        ("scale-1", "run: hello"),
        ("scale-2", "run: hello"),
        ("scale-3", "foo: boo"),
    ] {
        let f = s.file(&format!("{name}.yaml"), &scale_deploy(name, label));
        s.ok(&format!("scale: create {name}"), &["create", "-f", &f])
            .await;
    }
    let expect = |step: &'static str, want: [&'static str; 3]| async move {
        for (i, n) in want.iter().enumerate() {
            s.get_assert(
                &format!("scale: {step}: scale-{} has {n} replicas", i + 1),
                &format!("deploy scale-{}", i + 1),
                "{{.spec.replicas}}",
                n,
            )
            .await;
        }
    };
    expect("created", ["1", "1", "1"]).await;
    s.ok(
        "scale: --all --dry-run=client succeeds",
        &[
            "scale",
            "deploy",
            "--replicas=3",
            "--all",
            "--dry-run=client",
        ],
    )
    .await;
    s.ok(
        "scale: --all --dry-run=server succeeds",
        &[
            "scale",
            "deploy",
            "--replicas=3",
            "--all",
            "--dry-run=server",
        ],
    )
    .await;
    expect("after dry runs", ["1", "1", "1"]).await;
    s.ok(
        "scale: -l run=hello",
        &["scale", "deploy", "--replicas=2", "-l", "run=hello"],
    )
    .await;
    expect("after -l run=hello", ["2", "2", "1"]).await;
    s.ok(
        "scale: --all",
        &["scale", "deploy", "--replicas=3", "--all"],
    )
    .await;
    expect("after --all", ["3", "3", "3"]).await;
    s.step(&["delete", "deploy", "scale-1", "scale-2", "scale-3"])
        .await;
}

/// `TestFailedDeployment` (test/integration/deployment/deployment_test.go), first half: one
/// replica that never becomes ready, `progressDeadlineSeconds: 3`; the controller must report
/// `Progressing` with reason `ProgressDeadlineExceeded` (`deploymentutil.TimedOutReason`).
async fn failed_deployment(s: &Script<'_>) {
    let manifest = format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: progress-check
spec:
  replicas: 1
  progressDeadlineSeconds: 3
  selector:
    matchLabels:
      name: test
  template:
    metadata:
      labels:
        name: test
    spec:
      containers:
      - name: fake-name
        image: {FAKE_IMAGE}
"
    );
    let file = s.file("progress-check.yaml", &manifest);
    s.ok(
        "TestFailedDeployment: create the deployment",
        &["create", "-f", &file],
    )
    .await;
    s.wait_assert(
        "TestFailedDeployment: the new ReplicaSet gets its replica (updatedReplicas 1)",
        "deployment progress-check",
        "{{.status.updatedReplicas}}",
        "1",
    )
    .await;
    s.wait_assert(
        "TestFailedDeployment: Progressing times out with ProgressDeadlineExceeded",
        "deployment progress-check",
        "{{range .status.conditions}}{{if eq .type \"Progressing\"}}{{.reason}}{{end}}{{end}}",
        "ProgressDeadlineExceeded",
    )
    .await;
    s.step(&["delete", "deployment", "progress-check"]).await;
}
