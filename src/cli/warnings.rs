//! What `serve` warns about at start: settings that are valid but rarely meant, such as an
//! empty config file (every default: enforce, no webhook token) or enforcing without auth.

use std::path::Path;

use crate::config::Config;
use crate::core::engine::Mode;

/// One sentence per risky setting, in the order they should be read.
pub fn serve_warnings(path: &Path, config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let sets_nothing = text
        .lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#'));
    if sets_nothing {
        out.push(format!(
            "{} sets nothing: every default applies (policy.mode = \"enforce\", no webhook token)",
            path.display()
        ));
    }
    if config.policy.mode == Mode::Enforce && config.webhook_token.is_none() {
        let reach = if config.server.listen.ip().is_loopback() {
            "any local process"
        } else {
            "any client that reaches it"
        };
        out.push(format!(
            "policy.mode is \"enforce\" and the webhook on {} has no token: {reach} can post an alert that rolls a workload back; set server.token_file",
            config.server.listen
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> (tempfile::TempDir, std::path::PathBuf, Config) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rollbackd.toml");
        std::fs::write(&path, text).expect("write");
        let config = Config::load(&path).expect("valid config");
        (dir, path, config)
    }

    #[test]
    fn an_empty_config_warns_of_enforce_without_auth() {
        let (_dir, path, config) = load("# nothing yet\n\n");
        let warnings = serve_warnings(&path, &config);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("sets nothing"), "{warnings:?}");
        assert!(warnings[1].contains("has no token"), "{warnings:?}");
    }

    #[test]
    fn dry_run_or_a_token_is_quiet() {
        let (_dir, path, config) = load("[policy]\nmode = \"dry-run\"\n");
        assert_eq!(serve_warnings(&path, &config), Vec::<String>::new());
        let (dir, _, _) = load("");
        let token = dir.path().join("token");
        std::fs::write(&token, "a-token").unwrap();
        let (_d, path, config) = load(&format!(
            "[server]\ntoken_file = {:?}\n",
            token.display().to_string()
        ));
        assert_eq!(serve_warnings(&path, &config), Vec::<String>::new());
    }
}
