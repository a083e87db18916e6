//! Configuration: one TOML file read with the `config` crate, then `ROLLBACKD__SECTION__KEY`
//! environment overrides, then validation that reports every problem at once.
//!
//! Data model: [`Config`] holds one typed struct per section. Loading goes through a JSON value
//! so that unknown keys and bad values can each be named by their dotted key (`server.listen`)
//! instead of stopping at the first serde error. Secrets are held as [`Secret`], which never
//! prints its value.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

mod gitops;
mod leader;
mod notify;

pub use gitops::GitopsConfig;
pub use leader::LeaderElectionConfig;

pub use notify::{
    EmailConfig, EmailRoute, EmailSettings, Matchers, NotifyConfig, SlackConfig, SlackMode,
    SlackRoute, SlackSettings, SmtpTls,
};

use crate::core::correlate::CorrelationLabels;
use crate::core::engine::{Mode, Policy};

/// One problem found in the configuration, named by its dotted key.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigProblem {
    pub key: String,
    pub message: String,
    /// The environment variable that set the key, when the bad value came from there and not
    /// from the file.
    pub from_env: Option<String>,
}

impl ConfigProblem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> ConfigProblem {
        ConfigProblem {
            key: key.into(),
            message: message.into(),
            from_env: None,
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.key.is_empty(), &self.from_env) {
            (true, _) => write!(f, "{}", self.message),
            (false, None) => write!(f, "{}: {}", self.key, self.message),
            (false, Some(var)) => write!(f, "{} (set by {var}): {}", self.key, self.message),
        }
    }
}

/// Every problem found, so that `rollbackd check` can list them all.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let overrides = if self.problems.iter().any(|p| p.from_env.is_some()) {
            " and its environment overrides"
        } else {
            ""
        };
        writeln!(
            f,
            "{} problem(s) in {}{overrides}:",
            self.problems.len(),
            self.file.display()
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

/// A value that must never reach a log line, an error or `check` output.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Accepts any scalar (the environment may turn a numeric secret into a number) and never
/// quotes the value in an error.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string (value not shown: it is a secret)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom(
                    "must be a string (value not shown: it is a secret)",
                ))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
        }
        d.deserialize_any(Visit)
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub server: ServerConfig,
    pub kubernetes: KubernetesConfig,
    pub store: StoreConfig,
    pub policy: PolicyConfig,
    pub correlation: CorrelationConfig,
    pub prometheus: Option<PrometheusConfig>,
    /// `[gitops]`: Argo CD Applications with self-heal.
    pub gitops: GitopsConfig,
    /// `[leader_election]`: on whenever the store is PostgreSQL (docs/ha.md).
    pub leader_election: LeaderElectionConfig,
    /// The full bearer token (webhook and reads), from `server.token_file` or `server.token`.
    pub webhook_token: Option<Secret>,
    /// The read-only bearer token (pages, read API, metrics; never the webhook), from
    /// `server.read_token_file` or `server.read_token`.
    pub read_token: Option<Secret>,
    /// Credentials for Prometheus, read from `prometheus.*_file`.
    pub prometheus_auth: PrometheusAuth,
    /// `[notify]`: retry policy for notifications.
    pub notify: NotifyConfig,
    /// `[notify.slack]`, validated, its secret read; `None` when not configured.
    pub slack: Option<SlackSettings>,
    /// `[notify.email]`, validated, its password read; `None` when not configured.
    pub email: Option<EmailSettings>,
    /// The files named for secrets and cluster credentials, by key, resolved: what
    /// `check --offline` lists instead of reading.
    pub deployed_files: Vec<(&'static str, PathBuf)>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub token_file: Option<PathBuf>,
    /// Prefer `token_file`; this exists for `ROLLBACKD__SERVER__TOKEN`.
    pub token: Option<Secret>,
    /// A token for reading only: the pages, the read API and `/metrics`, never the webhook.
    pub read_token_file: Option<PathBuf>,
    /// Prefer `read_token_file`; this exists for `ROLLBACKD__SERVER__READ_TOKEN`.
    pub read_token: Option<Secret>,
    /// Whether `/metrics` needs a token when tokens are configured.
    pub metrics_auth: bool,
    /// Largest webhook body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Base URL of rollbackd's pages as on-call reaches them, for links in messages.
    pub public_url: Option<String>,
    /// How long a request head may take once its first byte arrived.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// How long a whole request body may take once its head arrived.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// How long a connection with no request in flight may stay silent.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9095)),
            token_file: None,
            token: None,
            read_token_file: None,
            read_token: None,
            metrics_auth: true,
            max_body_bytes: 1024 * 1024,
            public_url: None,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    pub kubeconfig: Option<PathBuf>,
    /// Empty: all namespaces.
    pub namespaces: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub correlation_window: Duration,
    /// How long one watch request lasts before it is renewed from its resourceVersion (a
    /// renewal that finds the version expired relists).
    #[serde(with = "humantime_serde")]
    pub watch_timeout: Duration,
    /// Each call the executor makes (a read, a patch) is given up after this long; a patch
    /// whose answer did not come in time is settled by reading the object again.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// No decision while any watch has heard nothing from the API server for this long (no
    /// list, event, bookmark or watch answer). A third of it also caps each watch request
    /// and half of it is how long a silent connection is kept, so the default notices a
    /// half-open connection within 45s.
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            kubeconfig: None,
            namespaces: Vec::new(),
            correlation_window: Duration::from_secs(30 * 60),
            watch_timeout: Duration::from_secs(290),
            call_timeout: Duration::from_secs(10),
            stale_after: Duration::from_secs(90),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub url: String,
    /// Incidents over and not updated for this long are deleted, each whole (alerts, actions,
    /// timeline, messages, graph); unset: kept forever. At least a day.
    #[serde(with = "humantime_serde")]
    pub retention: Option<Duration>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite://rollbackd.db".into(),
            retention: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    pub mode: Mode,
    /// Decisions made for one alert whose revert failed for a transient reason (API
    /// unreachable, 5xx, 429, timeout), the first included.
    pub retry_attempts: u32,
    /// The wait before deciding such an alert again; it doubles each time (at most 2m).
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// An alert that waited this long for fresh Kubernetes data is recorded `stale-data` and
    /// on-call is told; it is still decided once the data is fresh.
    #[serde(with = "humantime_serde")]
    pub max_decision_wait: Duration,
    /// No automatic action on a workload for this long after the last one.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// The circuit breaker: at most this many automatic actions per `breaker_window` (0: off).
    pub breaker_max_actions: usize,
    #[serde(with = "humantime_serde")]
    pub breaker_window: Duration,
    /// Whether a workload without `rollbackd.io/auto-rollback` (on itself or its namespace)
    /// may be acted on.
    pub auto_rollback_default: bool,
    /// Only these namespaces are acted on (empty: all).
    pub namespaces_allow: Vec<String>,
    /// These namespaces are never acted on.
    pub namespaces_deny: Vec<String>,
    /// Label matchers (`severity=~"critical|page"`) every alert must match to trigger action.
    pub alert_matchers: Vec<String>,
    /// Freeze windows: `START/END` (RFC 3339) or `DAYS HH:MM-HH:MM` (UTC, e.g. `sat,sun
    /// 00:00-24:00`). Record and notify only while one is in force.
    pub freeze: Vec<String>,
    /// After undoing a fully promoted Argo Rollout, promote it fully (`kubectl argo rollouts
    /// promote --full`) unless its `spec.rollbackWindow` does; off, it runs its steps again
    /// and the bad revision stays stable until a human promotes.
    pub argo_promote_full_after_undo: bool,
    /// How long to wait for the Argo controller to pick up the undo before promoting.
    #[serde(with = "humantime_serde")]
    pub argo_promote_wait: Duration,
    /// How long the alerts behind an applied action are followed: all resolved within it →
    /// `recovered`; otherwise `not-recovered`, on-call is told and the workload is held.
    #[serde(with = "humantime_serde")]
    pub verify_window: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            mode: Mode::Enforce,
            retry_attempts: 5,
            retry_backoff: Duration::from_secs(5),
            max_decision_wait: Duration::from_secs(120),
            cooldown: Duration::from_secs(30 * 60),
            breaker_max_actions: 3,
            breaker_window: Duration::from_secs(10 * 60),
            auto_rollback_default: true,
            namespaces_allow: Vec::new(),
            namespaces_deny: Vec::new(),
            alert_matchers: Vec::new(),
            freeze: Vec::new(),
            argo_promote_full_after_undo: true,
            argo_promote_wait: Duration::from_secs(30),
            verify_window: Duration::from_secs(600),
        }
    }
}

/// Which alert labels name the workload, and the clock-skew grace.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CorrelationConfig {
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    pub namespace_labels: Vec<String>,
    pub rollout_labels: Vec<String>,
    pub deployment_labels: Vec<String>,
    pub replicaset_labels: Vec<String>,
    pub pod_labels: Vec<String>,
    pub service_labels: Vec<String>,
    pub virtualservice_labels: Vec<String>,
    /// Alert label → pod-template label keys it is matched against.
    pub template_labels: BTreeMap<String, Vec<String>>,
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        let labels = CorrelationLabels::default();
        CorrelationConfig {
            grace: Duration::from_secs(30),
            namespace_labels: labels.namespace,
            rollout_labels: labels.rollout,
            deployment_labels: labels.deployment,
            replicaset_labels: labels.replica_set,
            pod_labels: labels.pod,
            service_labels: labels.service,
            virtualservice_labels: labels.virtual_service,
            template_labels: labels.template,
        }
    }
}

/// rollbackd's own PromQL polling. Relative rule paths are relative to the config file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PrometheusConfig {
    pub url: String,
    pub rules: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// How long after an action's result the incident's metric graph is read from Prometheus
    /// (and stored with the incident); it is read again once the action is verified.
    #[serde(with = "humantime_serde")]
    pub graph_after: Duration,
    /// How long after a workload's rollout the rules' post-rollout forms apply (0: never).
    #[serde(with = "humantime_serde")]
    pub post_rollout_window: Duration,
    pub bearer_token_file: Option<PathBuf>,
    pub basic_auth_user: Option<String>,
    pub basic_auth_password_file: Option<PathBuf>,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            url: "http://127.0.0.1:9090".into(),
            rules: vec!["rules/*.yml".into()],
            poll_interval: Duration::from_secs(15),
            query_timeout: Duration::from_secs(10),
            graph_after: Duration::from_secs(60),
            post_rollout_window: Duration::from_secs(15 * 60),
            bearer_token_file: None,
            basic_auth_user: None,
            basic_auth_password_file: None,
        }
    }
}

/// How rollbackd authenticates to Prometheus; the secrets come from files.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum PrometheusAuth {
    #[default]
    None,
    Bearer(Secret),
    Basic {
        user: String,
        password: Secret,
    },
}

impl Config {
    /// The executor's call timeout and retry bounds.
    pub fn executor_settings(&self) -> crate::k8s::executor::ExecutorSettings {
        crate::k8s::executor::ExecutorSettings {
            call_timeout: self.kubernetes.call_timeout,
            argo_promote_full: self.policy.argo_promote_full_after_undo,
            argo_promote_wait: self.policy.argo_promote_wait,
            ..Default::default()
        }
    }

    /// When an alert whose revert failed for a transient reason is decided again.
    pub fn retry_policy(&self) -> crate::core::settle::RetryPolicy {
        crate::core::settle::RetryPolicy {
            max_attempts: self.policy.retry_attempts,
            first_backoff: self.policy.retry_backoff,
            max_backoff: Duration::from_secs(120).max(self.policy.retry_backoff),
        }
    }

    /// The engine's policy, destructured from the configuration (validated: entries that do
    /// not parse were reported by `validate` and never reach a running daemon).
    pub fn policy(&self) -> Policy {
        let c = &self.correlation;
        let p = &self.policy;
        let guard = crate::core::guard::GuardPolicy {
            cooldown: p.cooldown,
            breaker_max: p.breaker_max_actions,
            breaker_window: p.breaker_window,
            auto_rollback_default: p.auto_rollback_default,
            namespaces_allow: p.namespaces_allow.clone(),
            namespaces_deny: p.namespaces_deny.clone(),
            alert_matchers: p
                .alert_matchers
                .iter()
                .filter_map(|m| crate::core::guard::Matcher::parse(m).ok())
                .collect(),
            freezes: p
                .freeze
                .iter()
                .filter_map(|f| crate::core::guard::Freeze::parse(f).ok())
                .collect(),
        };
        Policy {
            guard,
            mode: self.policy.mode,
            correlation_window: self.kubernetes.correlation_window,
            grace: c.grace,
            labels: CorrelationLabels {
                namespace: c.namespace_labels.clone(),
                rollout: c.rollout_labels.clone(),
                deployment: c.deployment_labels.clone(),
                replica_set: c.replicaset_labels.clone(),
                pod: c.pod_labels.clone(),
                service: c.service_labels.clone(),
                virtual_service: c.virtualservice_labels.clone(),
                template: c.template_labels.clone(),
            },
            gitops: self.gitops.policy(),
        }
    }

    /// Loads `path` plus environment overrides and validates the result.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::load_with_env(path, std::env::vars())
    }

    /// As [`Config::load`], with the environment given explicitly (tests).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigErrors> {
        Config::load_keeping(path, env, |_| true)
    }

    /// For commands that only read the incident store (`incidents`): a problem elsewhere, such
    /// as a kubeconfig or token file that exists only in the cluster, is no reason to refuse.
    pub fn load_for_store(path: &Path) -> Result<Config, ConfigErrors> {
        Config::load_keeping(path, std::env::vars(), |key| {
            key.is_empty() || key == "store" || key.starts_with("store.")
        })
    }

    /// For `check --offline`: everything but the files that exist only where rollbackd is
    /// deployed (`Config::deployed_files`), which are not read.
    pub fn load_offline(path: &Path) -> Result<Config, ConfigErrors> {
        Config::load_keeping(path, std::env::vars(), |key| {
            !DEPLOYED_FILE_KEYS.contains(&key)
        })
    }

    /// Loads and validates, failing only on the problems whose key `relevant` keeps.
    fn load_keeping(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
        relevant: impl Fn(&str) -> bool,
    ) -> Result<Config, ConfigErrors> {
        let fail = |problems| ConfigErrors {
            file: path.to_path_buf(),
            problems,
        };
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("ROLLBACKD__"))
            .collect();
        let overridden: Vec<&str> = env.iter().map(|(name, _)| name.as_str()).collect();
        let raw = read_raw(path, env.clone()).map_err(|message| {
            fail(vec![ConfigProblem {
                key: String::new(),
                message,
                from_env: None,
            }])
        })?;
        let mut problems = unknown_keys(&raw);
        let server: ServerConfig = section(&raw, "server", &mut problems);
        let kubernetes: KubernetesConfig = section(&raw, "kubernetes", &mut problems);
        let store: StoreConfig = section(&raw, "store", &mut problems);
        let policy: PolicyConfig = section(&raw, "policy", &mut problems);
        let correlation: CorrelationConfig = section(&raw, "correlation", &mut problems);
        let prometheus = raw
            .get("prometheus")
            .map(|_| section::<PrometheusConfig>(&raw, "prometheus", &mut problems));
        let gitops: GitopsConfig = section(&raw, "gitops", &mut problems);
        let leader_election: LeaderElectionConfig = section(&raw, "leader_election", &mut problems);
        let (notify, mut slack, mut email) = notify::parse(&raw, &mut problems);
        let dir = path.parent().unwrap_or(Path::new("."));
        if let Some(slack) = &mut slack {
            rebase(dir, &mut slack.webhook_url_file);
            rebase(dir, &mut slack.bot_token_file);
        }
        if let Some(email) = &mut email {
            rebase(dir, &mut email.password_file);
        }
        let mut config = Config {
            server,
            kubernetes,
            store,
            policy,
            correlation,
            prometheus,
            gitops,
            leader_election,
            webhook_token: None,
            read_token: None,
            prometheus_auth: PrometheusAuth::None,
            notify,
            slack: None,
            email: None,
            deployed_files: Vec::new(),
        };
        config.resolve_relative_to(dir);
        let named = |key, file: Option<&PathBuf>| file.map(|f| (key, f.clone()));
        let prom = config.prometheus.as_ref();
        config.deployed_files = [
            named("server.token_file", config.server.token_file.as_ref()),
            named(
                "server.read_token_file",
                config.server.read_token_file.as_ref(),
            ),
            named(
                "kubernetes.kubeconfig",
                config.kubernetes.kubeconfig.as_ref(),
            ),
            named(
                "prometheus.bearer_token_file",
                prom.and_then(|p| p.bearer_token_file.as_ref()),
            ),
            named(
                "prometheus.basic_auth_password_file",
                prom.and_then(|p| p.basic_auth_password_file.as_ref()),
            ),
            named(
                "notify.slack.webhook_url_file",
                slack.as_ref().and_then(|s| s.webhook_url_file.as_ref()),
            ),
            named(
                "notify.slack.bot_token_file",
                slack.as_ref().and_then(|s| s.bot_token_file.as_ref()),
            ),
            named(
                "notify.email.password_file",
                email.as_ref().and_then(|e| e.password_file.as_ref()),
            ),
        ]
        .into_iter()
        .flatten()
        .collect();
        config.validate(&mut problems);
        let mut problem = |key: &str, message: String| {
            problems.push(ConfigProblem {
                key: key.into(),
                message,
                from_env: None,
            })
        };
        config.gitops.validate(&mut problem);
        config.leader_election.validate(&mut problem);
        notify::validate_notify(&config.notify, &mut problem);
        config.slack = slack.and_then(|s| notify::validate_slack(&s, &mut problem));
        config.email = email.and_then(|e| notify::validate_email(&e, &mut problem));
        problems.retain(|p| relevant(&p.key));
        for p in &mut problems {
            p.from_env = env_var_for(&p.key, &overridden);
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(fail(problems))
        }
    }

    /// Every relative path in the config, from the file or an environment override, is
    /// relative to the config file's directory, as in Prometheus: rule globs, token and
    /// password files, the kubeconfig, and the SQLite file of `store.url`.
    fn resolve_relative_to(&mut self, dir: &Path) {
        rebase(dir, &mut self.server.token_file);
        rebase(dir, &mut self.server.read_token_file);
        rebase(dir, &mut self.kubernetes.kubeconfig);
        if let Some(file) = self.store.url.strip_prefix("sqlite://")
            && !file.is_empty()
            && !file.starts_with(':')
            && Path::new(file).is_relative()
        {
            self.store.url = format!("sqlite://{}", dir.join(file).display());
        }
        if let Some(prom) = &mut self.prometheus {
            for pattern in &mut prom.rules {
                if Path::new(pattern.as_str()).is_relative() {
                    *pattern = dir.join(pattern.as_str()).display().to_string();
                }
            }
            rebase(dir, &mut prom.bearer_token_file);
            rebase(dir, &mut prom.basic_auth_password_file);
        }
    }

    fn validate(&mut self, problems: &mut Vec<ConfigProblem>) {
        let mut problem = |key: &str, message: String| {
            problems.push(ConfigProblem {
                key: key.into(),
                message,
                from_env: None,
            })
        };
        let server = &self.server;
        self.webhook_token = secret_from(
            (&server.token_file, "server.token_file"),
            (&server.token, "server.token"),
            &mut problem,
        );
        self.read_token = secret_from(
            (&server.read_token_file, "server.read_token_file"),
            (&server.read_token, "server.read_token"),
            &mut problem,
        );
        let read_key = if server.read_token_file.is_some() {
            "server.read_token_file"
        } else {
            "server.read_token"
        };
        match (&self.webhook_token, &self.read_token) {
            (None, Some(_)) => problem(
                read_key,
                "needs server.token_file or server.token too: without a full token the webhook would be open".into(),
            ),
            (Some(full), Some(read)) if full == read => problem(
                read_key,
                "must differ from the full token, or it would be accepted by the webhook".into(),
            ),
            _ => {}
        }
        for (key, value) in [
            ("server.header_timeout", server.header_timeout),
            ("server.body_timeout", server.body_timeout),
            ("server.idle_timeout", server.idle_timeout),
        ] {
            if value < Duration::from_millis(100) || value > Duration::from_secs(3600) {
                problem(key, "must be between 100ms and 1h".into());
            }
        }
        if !(1..=65_536).contains(&server.max_connections) {
            problem(
                "server.max_connections",
                format!("{} is out of range (1 to 65536)", server.max_connections),
            );
        }
        if self.server.max_body_bytes < 1024 {
            problem(
                "server.max_body_bytes",
                format!(
                    "{} is too small (at least 1024)",
                    self.server.max_body_bytes
                ),
            );
        }
        if let Some(url) = &self.server.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            problem(
                "server.public_url",
                format!("{url:?} is not an http(s) URL"),
            );
        }
        if let Some(path) = &self.kubernetes.kubeconfig
            && !path.is_file()
        {
            problem(
                "kubernetes.kubeconfig",
                format!("{} does not exist or is not a file", path.display()),
            );
        }
        for ns in &self.kubernetes.namespaces {
            if !is_dns_label(ns) {
                problem(
                    "kubernetes.namespaces",
                    format!("{ns:?} is not a valid namespace name"),
                );
            }
        }
        if self.kubernetes.correlation_window.is_zero() {
            problem(
                "kubernetes.correlation_window",
                "must be longer than 0s".into(),
            );
        }
        let watch = self.kubernetes.watch_timeout;
        if watch < Duration::from_secs(1) || watch > Duration::from_secs(3600) {
            problem(
                "kubernetes.watch_timeout",
                "must be between 1s and 1h".into(),
            );
        }
        let call = self.kubernetes.call_timeout;
        if call < Duration::from_millis(100) || call > Duration::from_secs(300) {
            problem(
                "kubernetes.call_timeout",
                "must be between 100ms and 5m".into(),
            );
        }
        if self.policy.retry_attempts == 0 || self.policy.retry_attempts > 20 {
            problem("policy.retry_attempts", "must be between 1 and 20".into());
        }
        if self.policy.retry_backoff.is_zero() {
            problem("policy.retry_backoff", "must be longer than 0s".into());
        }
        for (i, m) in self.policy.alert_matchers.iter().enumerate() {
            if let Err(message) = crate::core::guard::Matcher::parse(m) {
                problem(&format!("policy.alert_matchers[{i}]"), message);
            }
        }
        for (i, f) in self.policy.freeze.iter().enumerate() {
            if let Err(message) = crate::core::guard::Freeze::parse(f) {
                problem(&format!("policy.freeze[{i}]"), message);
            }
        }
        if self.policy.breaker_max_actions > 0 && self.policy.breaker_window.is_zero() {
            problem(
                "policy.breaker_window",
                "must be longer than 0s while policy.breaker_max_actions is set".into(),
            );
        }
        if self.policy.max_decision_wait.is_zero() {
            problem("policy.max_decision_wait", "must be longer than 0s".into());
        }
        let wait = self.policy.argo_promote_wait;
        if wait < Duration::from_secs(1) || wait > Duration::from_secs(300) {
            problem(
                "policy.argo_promote_wait",
                "must be between 1s and 5m".into(),
            );
        }
        let verify = self.policy.verify_window;
        if verify < Duration::from_secs(1) || verify > Duration::from_secs(24 * 3600) {
            problem("policy.verify_window", "must be between 1s and 24h".into());
        }
        let stale = self.kubernetes.stale_after;
        if stale < Duration::from_secs(3) || stale > Duration::from_secs(3600) {
            problem("kubernetes.stale_after", "must be between 3s and 1h".into());
        }
        if self.correlation.grace >= self.kubernetes.correlation_window {
            problem(
                "correlation.grace",
                "must be shorter than kubernetes.correlation_window".into(),
            );
        }
        if self.correlation.namespace_labels.is_empty() {
            problem(
                "correlation.namespace_labels",
                "must name at least one label".into(),
            );
        }
        let url = &self.store.url;
        if crate::store::Backend::of(url).is_none() {
            problem(
                "store.url",
                format!(
                    "{:?} is neither a sqlite:// nor a postgres:// URL",
                    crate::store::redact_url(url)
                ),
            );
        }
        if let Some(retention) = self.store.retention
            && retention < Duration::from_secs(86_400)
        {
            problem(
                "store.retention",
                "must be at least 1d: an incident is evidence for its review".into(),
            );
        }
        if let Some(prom) = &self.prometheus {
            if !(prom.url.starts_with("http://") || prom.url.starts_with("https://")) {
                problem(
                    "prometheus.url",
                    format!("{:?} is not an http(s) URL", prom.url),
                );
            }
            if prom.poll_interval < Duration::from_secs(1) {
                problem("prometheus.poll_interval", "must be at least 1s".into());
            }
            if prom.rules.is_empty() {
                problem(
                    "prometheus.rules",
                    "must name at least one rule file".into(),
                );
            }
        }
    }
}

/// The keys each section accepts; anything else is an error, never silently ignored.
const SCHEMA: &[(&str, &[&str])] = &[
    (
        "server",
        &[
            "listen",
            "token_file",
            "token",
            "max_body_bytes",
            "public_url",
            "read_token_file",
            "read_token",
            "metrics_auth",
            "header_timeout",
            "body_timeout",
            "idle_timeout",
            "max_connections",
        ],
    ),
    (
        "kubernetes",
        &[
            "kubeconfig",
            "namespaces",
            "correlation_window",
            "watch_timeout",
            "call_timeout",
            "stale_after",
        ],
    ),
    ("store", &["url", "retention"]),
    (
        "policy",
        &[
            "mode",
            "retry_attempts",
            "retry_backoff",
            "max_decision_wait",
            "cooldown",
            "breaker_max_actions",
            "breaker_window",
            "auto_rollback_default",
            "namespaces_allow",
            "namespaces_deny",
            "alert_matchers",
            "freeze",
            "argo_promote_full_after_undo",
            "argo_promote_wait",
            "verify_window",
        ],
    ),
    (
        "correlation",
        &[
            "grace",
            "namespace_labels",
            "rollout_labels",
            "deployment_labels",
            "replicaset_labels",
            "pod_labels",
            "service_labels",
            "virtualservice_labels",
            "template_labels",
        ],
    ),
    (
        "prometheus",
        &[
            "url",
            "rules",
            "poll_interval",
            "query_timeout",
            "graph_after",
            "post_rollout_window",
            "bearer_token_file",
            "basic_auth_user",
            "basic_auth_password_file",
        ],
    ),
    ("gitops", &["mode", "argocd_namespace"]),
    (
        "leader_election",
        &[
            "lease_name",
            "lease_namespace",
            "identity",
            "lease_duration",
            "renew_deadline",
            "retry_period",
        ],
    ),
    (
        "notify",
        &[
            "retry_deadline",
            "retry_initial",
            "retry_max",
            "attempt_timeout",
            "slack",
            "email",
        ],
    ),
    (
        "notify.slack",
        &[
            "webhook_url_file",
            "webhook_url",
            "bot_token_file",
            "bot_token",
            "channel",
            "api_url",
            "routes",
        ],
    ),
    (
        "notify.email",
        &[
            "smtp_url",
            "password_file",
            "password",
            "from",
            "to",
            "routes",
        ],
    ),
];

/// Secrets that may come from the environment, taken verbatim: the `config` crate would parse
/// `007` as the number 7.
const VERBATIM_ENV: &[(&str, &[&str])] = &[
    ("ROLLBACKD__SERVER__TOKEN", &["server", "token"]),
    ("ROLLBACKD__SERVER__READ_TOKEN", &["server", "read_token"]),
    (
        "ROLLBACKD__NOTIFY__SLACK__WEBHOOK_URL",
        &["notify", "slack", "webhook_url"],
    ),
    (
        "ROLLBACKD__NOTIFY__SLACK__BOT_TOKEN",
        &["notify", "slack", "bot_token"],
    ),
    (
        "ROLLBACKD__NOTIFY__EMAIL__PASSWORD",
        &["notify", "email", "password"],
    ),
];

fn read_raw(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Value, String> {
    let env: config::Map<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("ROLLBACKD__"))
        .collect();
    let verbatim: Vec<(&[&str], String)> = VERBATIM_ENV
        .iter()
        .filter_map(|(name, path)| env.get(*name).map(|v| (*path, v.clone())))
        .collect();
    let built = config::Config::builder()
        .add_source(
            config::File::from(path)
                .format(config::FileFormat::Toml)
                .required(true),
        )
        .add_source(
            config::Environment::with_prefix("ROLLBACKD")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("kubernetes.namespaces")
                .with_list_parse_key("prometheus.rules")
                .with_list_parse_key("notify.email.to")
                .source(Some(env)),
        )
        .build()
        .map_err(|e| e.to_string())?;
    let mut raw = built
        .try_deserialize::<Value>()
        .map_err(|e| e.to_string())?;
    for (path, value) in verbatim {
        set_path(&mut raw, path, Value::String(value));
    }
    Ok(raw)
}

/// The keys naming files that exist only where rollbackd is deployed.
pub const DEPLOYED_FILE_KEYS: &[&str] = &[
    "server.token_file",
    "server.read_token_file",
    "kubernetes.kubeconfig",
    "prometheus.bearer_token_file",
    "prometheus.basic_auth_password_file",
    "notify.slack.webhook_url_file",
    "notify.slack.bot_token_file",
    "notify.email.password_file",
];

/// Makes a relative `path` relative to `dir` instead of the working directory.
fn rebase(dir: &Path, path: &mut Option<PathBuf>) {
    if let Some(p) = path
        && p.is_relative()
    {
        *p = dir.join(&*p);
    }
}

/// The environment variable among `vars` that set `key` (`policy.mode` is set by
/// `ROLLBACKD__POLICY__MODE`), or set a part of it, or the whole section it is in.
fn env_var_for(key: &str, vars: &[&str]) -> Option<String> {
    if key.is_empty() {
        return None;
    }
    vars.iter()
        .find(|var| {
            let Some(rest) = var.strip_prefix("ROLLBACKD__") else {
                return false;
            };
            let dotted = rest.to_ascii_lowercase().replace("__", ".");
            dotted == key
                || key.starts_with(&format!("{dotted}."))
                || dotted.starts_with(&format!("{key}."))
        })
        .map(|var| var.to_string())
}

/// Sets `raw[a][b]…` to `value`, creating tables on the way (and replacing non-tables).
fn set_path(raw: &mut Value, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = raw;
    for key in parents {
        if !at.is_object() {
            *at = Value::Object(serde_json::Map::new());
        }
        let Value::Object(map) = at else { return };
        at = map
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
    }
    if !at.is_object() {
        *at = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(map) = at {
        map.insert(last.to_string(), value);
    }
}

fn unknown_keys(raw: &Value) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    let Some(top) = raw.as_object() else {
        return problems;
    };
    for (name, value) in top {
        let Some((_, keys)) = SCHEMA.iter().find(|(s, _)| s == name && !s.contains('.')) else {
            problems.push(ConfigProblem {
                key: name.clone(),
                message: format!(
                    "unknown section (known: {})",
                    SCHEMA
                        .iter()
                        .map(|(s, _)| *s)
                        .filter(|s| !s.contains('.'))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                from_env: None,
            });
            continue;
        };
        unknown_in(name, keys, value, &mut problems);
    }
    problems
}

/// Unknown keys of one section, and of its sub-sections (`notify.slack`).
fn unknown_in(name: &str, keys: &[&str], value: &Value, problems: &mut Vec<ConfigProblem>) {
    let Some(table) = value.as_object() else {
        problems.push(ConfigProblem {
            key: name.to_string(),
            message: "must be a table".into(),
            from_env: None,
        });
        return;
    };
    for (key, value) in table {
        if !keys.contains(&key.as_str()) {
            problems.push(ConfigProblem {
                key: format!("{name}.{key}"),
                message: format!("unknown key (known in [{name}]: {})", keys.join(", ")),
                from_env: None,
            });
            continue;
        }
        let sub = format!("{name}.{key}");
        if let Some((_, sub_keys)) = SCHEMA.iter().find(|(s, _)| *s == sub) {
            unknown_in(&sub, sub_keys, value, problems);
        }
    }
}

/// Deserializes one section; each key is first tried alone so that a bad value is reported
/// under its own dotted name, and all bad keys are reported, not just the first.
fn section<T: DeserializeOwned + Default>(
    raw: &Value,
    name: &str,
    problems: &mut Vec<ConfigProblem>,
) -> T {
    section_at(raw.get(name), name, problems)
}

/// As [`section`], for the table `value` named `name` (dotted for a sub-section). Keys that
/// are sub-sections of their own are left to their own call.
fn section_at<T: DeserializeOwned + Default>(
    value: Option<&Value>,
    name: &str,
    problems: &mut Vec<ConfigProblem>,
) -> T {
    let Some(table) = value.and_then(Value::as_object) else {
        return T::default();
    };
    let known: &[&str] = SCHEMA
        .iter()
        .find(|(s, _)| *s == name)
        .map_or(&[], |(_, k)| k);
    let mut clean = serde_json::Map::new();
    for (key, value) in table {
        if !known.contains(&key.as_str()) {
            continue; // already reported by unknown_keys
        }
        let sub = format!("{name}.{key}");
        if SCHEMA.iter().any(|(s, _)| *s == sub) {
            continue;
        }
        let alone = Value::Object([(key.clone(), value.clone())].into_iter().collect());
        match serde_json::from_value::<T>(alone) {
            Ok(_) => {
                clean.insert(key.clone(), value.clone());
            }
            Err(e) => problems.push(ConfigProblem {
                key: format!("{name}.{key}"),
                message: e.to_string(),
                from_env: None,
            }),
        }
    }
    serde_json::from_value(Value::Object(clean)).unwrap_or_else(|e| {
        problems.push(ConfigProblem {
            key: name.into(),
            message: e.to_string(),
            from_env: None,
        });
        T::default()
    })
}

/// A secret given either as a file or inline (`(value, key)` pairs name each for problems).
fn secret_from(
    (file, file_key): (&Option<PathBuf>, &str),
    (inline, inline_key): (&Option<Secret>, &str),
    problem: &mut impl FnMut(&str, String),
) -> Option<Secret> {
    match (file, inline) {
        (Some(_), Some(_)) => {
            problem(
                file_key,
                format!("set either {file_key} or {inline_key}, not both"),
            );
            None
        }
        (Some(file), None) => read_secret_file(file)
            .map_err(|message| problem(file_key, message))
            .ok(),
        (None, Some(secret)) if secret.expose().trim().is_empty() => {
            problem(inline_key, "is empty".into());
            None
        }
        (None, Some(secret)) => Some(Secret::new(secret.expose().trim())),
        (None, None) => None,
    }
}

/// Reads a secret from a file: trimmed, non-empty. The error never contains the content.
pub fn read_secret_file(path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value = text.trim();
    if value.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Secret::new(value))
}

/// A DNS subdomain (RFC 1123): what most object names must be.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests;
