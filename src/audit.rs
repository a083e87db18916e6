//! The audit stamp: who acts, with which build, and under which configuration.
//!
//! Every action row carries it (`store::AuditStamp`): the Kubernetes identity rollbackd acts as
//! (the user of the kubeconfig's current context, or the service account of its in-cluster
//! token), its version, a SHA-256 of the effective configuration (secrets are redacted by their
//! `Debug`, so the hash never depends on them) and the policy values that allowed the action.

use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::store::AuditStamp;

const TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The stamp for a daemon run with `config`.
pub fn stamp(config: &Config) -> AuditStamp {
    AuditStamp {
        actor: identity(config.kubernetes.kubeconfig.as_deref()),
        version: format!("rollbackd {}", env!("CARGO_PKG_VERSION")),
        config_hash: config_hash(config),
        policy: json!({
            "mode": config.policy.mode,
            "correlation_window": humantime::format_duration(config.kubernetes.correlation_window).to_string(),
            "policy": config.policy,
        }),
    }
}

/// SHA-256 of the configuration as loaded (defaults, file and environment), hex.
pub fn config_hash(config: &Config) -> String {
    let digest = Sha256::digest(format!("{config:?}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Who rollbackd acts as, as the kubeconfig or the in-cluster token says.
pub fn identity(kubeconfig: Option<&Path>) -> String {
    if let Some(path) = kubeconfig {
        return from_kubeconfig(path);
    }
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        && let Ok(token) = std::fs::read_to_string(TOKEN)
    {
        return token_subject(&token)
            .map(|s| {
                s.strip_prefix("system:serviceaccount:")
                    .map_or(s.clone(), |sa| {
                        format!("serviceaccount {}", sa.replace(':', "/"))
                    })
            })
            .unwrap_or_else(|| "in-cluster service account (token not readable)".into());
    }
    match std::env::var_os("KUBECONFIG") {
        Some(p) => from_kubeconfig(Path::new(&p)),
        None => match std::env::var_os("HOME") {
            Some(home) => from_kubeconfig(&Path::new(&home).join(".kube/config")),
            None => "unknown (no kubeconfig)".into(),
        },
    }
}

fn from_kubeconfig(path: &Path) -> String {
    let Ok(kc) = kube::config::Kubeconfig::read_from(path) else {
        return format!("unknown (kubeconfig {} not readable)", path.display());
    };
    let current = kc.current_context.clone().unwrap_or_default();
    let context = kc
        .contexts
        .iter()
        .find(|c| c.name == current)
        .and_then(|c| c.context.as_ref());
    match context {
        Some(c) => format!(
            "user {} (context {current}, cluster {})",
            c.user.as_deref().unwrap_or("?"),
            c.cluster
        ),
        None => format!("unknown (no current context in {})", path.display()),
    }
}

/// The `sub` claim of a JWT, read without verifying it (only the API server can).
fn token_subject(token: &str) -> Option<String> {
    let payload = token.trim().split('.').nth(1)?;
    let bytes = base64url(payload)?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("sub")?.as_str().map(str::to_string)
}

/// Unpadded base64url.
fn base64url(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_account_comes_from_the_token() {
        // {"sub":"system:serviceaccount:rollbackd:rollbackd"}
        let token = "e30.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6cm9sbGJhY2tkOnJvbGxiYWNrZCJ9.sig";
        assert_eq!(
            token_subject(token).as_deref(),
            Some("system:serviceaccount:rollbackd:rollbackd")
        );
        assert_eq!(token_subject("garbage"), None);
    }

    #[test]
    fn the_user_comes_from_the_current_context() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("kubeconfig");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\ncurrent-context: lab\ncontexts:\n- name: lab\n  context: {cluster: sandbox, user: admin}\nclusters: []\nusers: []\n",
        )
        .expect("write");
        assert_eq!(
            identity(Some(&path)),
            "user admin (context lab, cluster sandbox)"
        );
        assert!(identity(Some(&dir.path().join("missing"))).starts_with("unknown"));
    }
}
