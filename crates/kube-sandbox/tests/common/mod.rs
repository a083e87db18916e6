//! Helpers shared by the sandbox integration tests: start a sandbox with a temp kubeconfig
//! and run the real `kubectl` against it with a bounded time.

#![allow(dead_code)]

pub mod checks;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube_sandbox::{Sandbox, SandboxOptions};

pub struct Env {
    pub sb: Sandbox,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

pub async fn start(opts: SandboxOptions) -> Env {
    let sb = Sandbox::start(opts).await.expect("sandbox starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    sb.write_kubeconfig(&kubeconfig)
        .expect("kubeconfig written");
    Env {
        sb,
        dir,
        kubeconfig,
    }
}

pub fn fast() -> SandboxOptions {
    SandboxOptions {
        rollout_delay: Duration::from_millis(100),
        ..SandboxOptions::default()
    }
}

pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Env {
    /// The kubectl command line for this sandbox (own kubeconfig and discovery cache).
    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"));
        c.args(args);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Run kubectl to completion (at most 60 s) on a blocking thread.
    pub async fn kubectl(&self, args: &[&str]) -> Out {
        self.kubectl_stdin(args, None).await
    }

    pub async fn kubectl_stdin(&self, args: &[&str], stdin: Option<String>) -> Out {
        let mut cmd = self.kubectl_cmd(args);
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let line = args.join(" ");
        tokio::task::spawn_blocking(move || {
            let mut child = cmd.spawn().expect("kubectl runs");
            if let Some(input) = stdin {
                use std::io::Write;
                let mut si = child.stdin.take().expect("stdin");
                si.write_all(input.as_bytes()).expect("stdin written");
            }
            let started = Instant::now();
            loop {
                if child.try_wait().expect("wait").is_some() {
                    break;
                }
                if started.elapsed() > Duration::from_secs(60) {
                    let _ = child.kill();
                    panic!("kubectl {line} took over 60s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let o = child.wait_with_output().expect("output");
            Out {
                ok: o.status.success(),
                stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            }
        })
        .await
        .expect("kubectl thread")
    }

    /// Run kubectl and require success; returns stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let o = self.kubectl(args).await;
        assert!(
            o.ok,
            "kubectl {} failed:\nstdout: {}\nstderr: {}",
            args.join(" "),
            o.stdout,
            o.stderr
        );
        o.stdout
    }

    pub async fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a).await).expect("kubectl printed JSON")
    }
}

/// A kube-rs client configured from the sandbox's kubeconfig, as a user of the crate would.
pub async fn kube_client(sb: &Sandbox) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = kube::config::Kubeconfig::from_yaml(&sb.kubeconfig_yaml()).expect("kubeconfig parses");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("kube config");
    kube::Client::try_from(cfg).expect("kube client")
}

/// A raw HTTPS client trusting the sandbox CA (no token unless the caller adds one).
pub fn http(sb: &Sandbox) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(sb.ca_pem().as_bytes()).expect("CA parses");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// Poll `f` every 20 ms until it returns Some, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An Argo Rollout as JSON once `ok` holds for it (at most 20 s).
pub async fn wait(
    api: &kube::Api<kube::api::DynamicObject>,
    name: &str,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    eventually(20, what, || async {
        let ro = serde_json::to_value(api.get(name).await.ok()?).ok()?;
        ok(&ro).then_some(ro)
    })
    .await
}

/// A Deployment's `deployment.kubernetes.io/revision` annotation ("" when it has none).
pub fn revision(o: &serde_json::Value) -> &str {
    o.pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
}

/// The image of a workload's first container ("" when it has none).
pub fn image(o: &serde_json::Value) -> &str {
    o.pointer("/spec/template/spec/containers/0/image")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
}

/// A field of an object's `status`.
pub fn st<'a>(ro: &'a serde_json::Value, field: &str) -> &'a serde_json::Value {
    &ro["status"][field]
}

/// A Rollout's phase, trusted only once its generation has been observed (as rollbackd does).
pub fn phase(ro: &serde_json::Value) -> &str {
    let observed =
        st(ro, "observedGeneration").as_str() == Some(&ro["metadata"]["generation"].to_string());
    if observed {
        st(ro, "phase").as_str().unwrap_or_default()
    } else {
        ""
    }
}

/// Every sandbox test runs under this bound, so a hang fails instead of blocking CI.
pub async fn bounded(test: impl std::future::Future<Output = ()>) {
    if tokio::time::timeout(Duration::from_secs(90), test)
        .await
        .is_err()
    {
        panic!("test took over 90s");
    }
}
