//! Not a test: `cargo test --test sandbox_manual -- --ignored` serves a sandbox on
//! 127.0.0.1:18443 for a minute, kubeconfig in $SANDBOX_KUBECONFIG (default
//! ./target/sandbox-kubeconfig), for poking at it with kubectl by hand.

use std::time::Duration;

use rollbackd::sandbox::{Sandbox, SandboxOptions};

#[tokio::test]
#[ignore]
async fn serve_for_a_minute() {
    let opts = SandboxOptions {
        listen: "127.0.0.1:18443".parse().unwrap(),
        token: "manual".into(),
        ..SandboxOptions::default()
    };
    let sb = Sandbox::start(opts).await.unwrap();
    let path =
        std::env::var("SANDBOX_KUBECONFIG").unwrap_or_else(|_| "target/sandbox-kubeconfig".into());
    sb.write_kubeconfig(std::path::Path::new(&path)).unwrap();
    let secs = std::env::var("SANDBOX_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    for r in sb.requests() {
        eprintln!("{} {} {:?} {}", r.method, r.path, r.content_type, r.status);
    }
}
