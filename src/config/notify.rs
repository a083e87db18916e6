//! `[notify]`, `[notify.slack]` and `[notify.email]`: where notifications go and how they are
//! retried.
//!
//! The raw sections deserialize into [`NotifyConfig`], [`SlackConfig`] and [`EmailConfig`];
//! validation resolves them into [`SlackSettings`] and [`EmailSettings`], with the secrets read
//! from their files. No problem message quotes a secret: the webhook URL is never echoed, and an
//! SMTP URL holding a password is refused without being repeated.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::{ConfigProblem, Secret, read_secret_file, section_at};

/// `[notify]`: retry policy shared by every channel.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// A message not delivered this long after it was queued is given up (status `failed`).
    #[serde(with = "humantime_serde")]
    pub retry_deadline: Duration,
    /// The first retry waits about this long; each next one twice as long, with jitter.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// No wait between two attempts is longer than this (Slack's `Retry-After` excepted).
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// One attempt (HTTP request, SMTP session) is abandoned after this long.
    #[serde(with = "humantime_serde")]
    pub attempt_timeout: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            retry_deadline: Duration::from_secs(3600),
            retry_initial: Duration::from_secs(2),
            retry_max: Duration::from_secs(300),
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

/// A routing rule: a message whose alert labels (plus the workload's namespace as
/// `namespace`) carry every pair in `match` goes to this rule's target. The first rule that
/// matches wins; without one, the section's default target is used.
pub type Matchers = BTreeMap<String, String>;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlackRoute {
    #[serde(rename = "match")]
    pub matchers: Matchers,
    pub channel: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmailRoute {
    #[serde(rename = "match")]
    pub matchers: Matchers,
    pub to: Vec<String>,
}

/// `[notify.slack]` as written.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SlackConfig {
    pub webhook_url_file: Option<PathBuf>,
    /// Prefer `webhook_url_file`; this exists for `ROLLBACKD__NOTIFY__SLACK__WEBHOOK_URL`.
    pub webhook_url: Option<Secret>,
    pub bot_token_file: Option<PathBuf>,
    /// Prefer `bot_token_file`; this exists for `ROLLBACKD__NOTIFY__SLACK__BOT_TOKEN`.
    pub bot_token: Option<Secret>,
    /// Bot mode: the default channel (a name such as `#oncall`, or an ID such as `C0123`).
    pub channel: Option<String>,
    /// Base URL of Slack's Web API (bot mode).
    pub api_url: String,
    pub routes: Vec<SlackRoute>,
}

impl Default for SlackConfig {
    fn default() -> Self {
        SlackConfig {
            webhook_url_file: None,
            webhook_url: None,
            bot_token_file: None,
            bot_token: None,
            channel: None,
            api_url: "https://slack.com/api".into(),
            routes: Vec::new(),
        }
    }
}

/// `[notify.email]` as written.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EmailConfig {
    /// `smtp://[USER@]HOST[:PORT][?tls=required|opportunistic|none]` or `smtps://…`.
    pub smtp_url: String,
    pub password_file: Option<PathBuf>,
    /// Prefer `password_file`; this exists for `ROLLBACKD__NOTIFY__EMAIL__PASSWORD`.
    pub password: Option<Secret>,
    pub from: String,
    pub to: Vec<String>,
    pub routes: Vec<EmailRoute>,
}

/// How rollbackd talks to Slack.
#[derive(Clone, Debug, PartialEq)]
pub enum SlackMode {
    /// An incoming webhook: one fixed channel, no threads (Slack answers `ok`, not a `ts`).
    Webhook { url: Secret },
    /// A bot token and `chat.postMessage`: routing to channels and thread replies.
    Bot { token: Secret, channel: String },
}

/// `[notify.slack]`, validated, with its secret read.
#[derive(Clone, Debug, PartialEq)]
pub struct SlackSettings {
    pub mode: SlackMode,
    pub api_url: String,
    pub routes: Vec<SlackRoute>,
    /// Where the secret came from, for `check` ("webhook URL from /etc/…").
    pub secret_source: String,
}

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    /// STARTTLS, and fail if the server does not offer it.
    Required,
    /// STARTTLS when offered, plain text otherwise.
    Opportunistic,
    /// Plain text.
    None,
    /// TLS from the first byte (`smtps://`).
    Implicit,
}

impl SmtpTls {
    pub fn as_str(self) -> &'static str {
        match self {
            SmtpTls::Required => "STARTTLS required",
            SmtpTls::Opportunistic => "STARTTLS when offered",
            SmtpTls::None => "no TLS",
            SmtpTls::Implicit => "implicit TLS",
        }
    }
}

/// `[notify.email]`, validated, with its password read.
#[derive(Clone, Debug, PartialEq)]
pub struct EmailSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub from: String,
    pub to: Vec<String>,
    pub routes: Vec<EmailRoute>,
    /// Where the password came from, for `check`.
    pub password_source: Option<String>,
}

impl EmailSettings {
    /// The server as `check` shows it: no password, ever.
    pub fn server(&self) -> String {
        let user = self
            .user
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        format!("{user}{}:{} ({})", self.host, self.port, self.tls.as_str())
    }
}

/// Parses the `[notify]` table and its two sub-tables, reporting problems by dotted key.
pub(super) fn parse(
    raw: &Value,
    problems: &mut Vec<ConfigProblem>,
) -> (NotifyConfig, Option<SlackConfig>, Option<EmailConfig>) {
    let table = raw.get("notify");
    let notify: NotifyConfig = section_at(table, "notify", problems);
    let slack = table
        .and_then(|t| t.get("slack"))
        .map(|v| section_at::<SlackConfig>(Some(v), "notify.slack", problems));
    let email = table
        .and_then(|t| t.get("email"))
        .map(|v| section_at::<EmailConfig>(Some(v), "notify.email", problems));
    (notify, slack, email)
}

type Problem<'a> = &'a mut dyn FnMut(&str, String);

pub(super) fn validate_notify(n: &NotifyConfig, problem: Problem<'_>) {
    for (key, value) in [
        ("notify.retry_deadline", n.retry_deadline),
        ("notify.retry_initial", n.retry_initial),
        ("notify.attempt_timeout", n.attempt_timeout),
    ] {
        if value.is_zero() {
            problem(key, "must be longer than 0s".into());
        }
    }
    if n.retry_max < n.retry_initial {
        problem(
            "notify.retry_max",
            "must not be shorter than notify.retry_initial".into(),
        );
    }
}

/// One of two ways to give a secret: a file, or the plain key (meant for the environment).
fn secret(
    file_key: &str,
    file: &Option<PathBuf>,
    plain_key: &str,
    plain: &Option<Secret>,
    problem: Problem<'_>,
) -> Option<(Secret, String)> {
    match (file, plain) {
        (Some(_), Some(_)) => {
            problem(
                file_key,
                format!("set either {file_key} or {plain_key}, not both"),
            );
            None
        }
        (Some(path), None) => match read_secret_file(path) {
            Ok(s) => Some((s, format!("from {}", path.display()))),
            Err(message) => {
                problem(file_key, message);
                None
            }
        },
        (None, Some(s)) if s.expose().trim().is_empty() => {
            problem(plain_key, "is empty".into());
            None
        }
        (None, Some(s)) => Some((Secret::new(s.expose().trim()), format!("from {plain_key}"))),
        (None, None) => None,
    }
}

fn is_http_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

fn check_matchers(key: &str, m: &Matchers, problem: Problem<'_>) {
    if m.is_empty() {
        problem(key, "match must name at least one label".into());
    }
}

pub(super) fn validate_slack(c: &SlackConfig, problem: Problem<'_>) -> Option<SlackSettings> {
    let webhook = secret(
        "notify.slack.webhook_url_file",
        &c.webhook_url_file,
        "notify.slack.webhook_url",
        &c.webhook_url,
        problem,
    );
    let token = secret(
        "notify.slack.bot_token_file",
        &c.bot_token_file,
        "notify.slack.bot_token",
        &c.bot_token,
        problem,
    );
    if !is_http_url(&c.api_url) {
        problem(
            "notify.slack.api_url",
            format!("{:?} is not an http(s) URL", c.api_url),
        );
    }
    for (i, route) in c.routes.iter().enumerate() {
        let key = format!("notify.slack.routes[{i}]");
        check_matchers(&key, &route.matchers, problem);
        if !is_channel(&route.channel) {
            problem(
                &key,
                format!("channel {:?} is not a channel", route.channel),
            );
        }
    }
    let given = c.webhook_url_file.is_some() || c.webhook_url.is_some();
    let bot_given = c.bot_token_file.is_some() || c.bot_token.is_some();
    let mode = match (webhook, token) {
        _ if given && bot_given => {
            problem(
                "notify.slack",
                "set a webhook URL or a bot token, not both".into(),
            );
            return None;
        }
        (Some((url, source)), None) => {
            // The URL is the secret: say what is wrong with it without repeating it.
            if !is_http_url(url.expose()) {
                problem(
                    "notify.slack.webhook_url",
                    "is not an http(s) URL (value not shown: it is a secret)".into(),
                );
            }
            if !c.routes.is_empty() {
                problem(
                    "notify.slack.routes",
                    "routing needs bot mode (bot_token_file and channel); a webhook posts to one fixed channel".into(),
                );
            }
            if c.channel.is_some() {
                problem(
                    "notify.slack.channel",
                    "is for bot mode; a webhook posts to the channel it was created for".into(),
                );
            }
            (SlackMode::Webhook { url }, format!("webhook URL {source}"))
        }
        (None, Some((token, source))) => {
            let channel = match &c.channel {
                Some(ch) if is_channel(ch) => ch.clone(),
                Some(ch) => {
                    problem("notify.slack.channel", format!("{ch:?} is not a channel"));
                    return None;
                }
                None => {
                    problem(
                        "notify.slack.channel",
                        "bot mode needs a default channel".into(),
                    );
                    return None;
                }
            };
            (
                SlackMode::Bot { token, channel },
                format!("bot token {source}"),
            )
        }
        (None, None) if !given && !bot_given => {
            problem(
                "notify.slack",
                "set webhook_url_file (webhook mode) or bot_token_file and channel (bot mode)"
                    .into(),
            );
            return None;
        }
        _ => return None, // the secret's own problem is already reported
    };
    let (mode, secret_source) = mode;
    Some(SlackSettings {
        mode,
        api_url: c.api_url.trim_end_matches('/').to_string(),
        routes: c.routes.clone(),
        secret_source,
    })
}

/// `#name`, a bare name, or an ID: no spaces, not empty.
fn is_channel(s: &str) -> bool {
    !s.is_empty() && s.len() <= 80 && !s.chars().any(char::is_whitespace)
}

pub(super) fn validate_email(c: &EmailConfig, problem: Problem<'_>) -> Option<EmailSettings> {
    let password = secret(
        "notify.email.password_file",
        &c.password_file,
        "notify.email.password",
        &c.password,
        problem,
    );
    let endpoint = parse_smtp_url(&c.smtp_url).map_err(|m| problem("notify.email.smtp_url", m));
    if c.from.trim().is_empty() {
        problem("notify.email.from", "is required".into());
    } else if let Err(m) = check_mailbox(&c.from) {
        problem("notify.email.from", m);
    }
    check_recipients("notify.email.to", &c.to, problem);
    for (i, route) in c.routes.iter().enumerate() {
        let key = format!("notify.email.routes[{i}]");
        check_matchers(&key, &route.matchers, problem);
        check_recipients(&key, &route.to, problem);
    }
    let (host, port, tls, user) = endpoint.ok()?;
    if password.is_some() {
        if user.is_none() {
            problem(
                "notify.email.smtp_url",
                "a password needs a user: smtp://USER@HOST".into(),
            );
        }
        let loopback = matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]" | "::1");
        if matches!(tls, SmtpTls::None | SmtpTls::Opportunistic) && !loopback {
            problem(
                "notify.email.smtp_url",
                "would send the password without TLS: use ?tls=required or smtps://".into(),
            );
        }
    }
    let (password, password_source) = match password {
        Some((p, s)) => (Some(p), Some(s)),
        None => (None, None),
    };
    Some(EmailSettings {
        host,
        port,
        tls,
        user,
        password,
        from: c.from.clone(),
        to: c.to.clone(),
        routes: c.routes.clone(),
        password_source,
    })
}

fn check_recipients(key: &str, to: &[String], problem: Problem<'_>) {
    if to.is_empty() {
        problem(key, "needs at least one recipient (to)".into());
    }
    for address in to {
        if let Err(m) = check_mailbox(address) {
            problem(key, m);
        }
    }
}

fn check_mailbox(s: &str) -> Result<(), String> {
    lettre::message::Mailbox::from_str(s)
        .map(drop)
        .map_err(|e| format!("{s:?} is not an email address: {e}"))
}

/// Splits an SMTP URL into host, port, TLS mode and user. The messages never repeat the URL:
/// it may hold a password.
fn parse_smtp_url(s: &str) -> Result<(String, u16, SmtpTls, Option<String>), String> {
    if s.is_empty() {
        return Err("is required (smtp://HOST:587?tls=required, or smtps://HOST)".into());
    }
    let url = url::Url::parse(s).map_err(|e| format!("is not a URL: {e}"))?;
    if url.password().is_some() {
        return Err(
            "must not contain a password: put it in notify.email.password_file \
             (or ROLLBACKD__NOTIFY__EMAIL__PASSWORD)"
                .into(),
        );
    }
    let host = match url.host_str() {
        Some(h) if !h.is_empty() => h.to_string(),
        _ => return Err("names no host".into()),
    };
    if !matches!(url.path(), "" | "/") || url.fragment().is_some() {
        return Err("must be scheme://[USER@]HOST[:PORT][?tls=…] with nothing else".into());
    }
    let mut tls_param = None;
    for (k, v) in url.query_pairs() {
        if k != "tls" || tls_param.is_some() {
            return Err(format!(
                "unknown query parameter {k:?} (only tls=required|opportunistic|none)"
            ));
        }
        tls_param = Some(v.into_owned());
    }
    let tls = match (url.scheme(), tls_param.as_deref()) {
        ("smtps", None) => SmtpTls::Implicit,
        ("smtps", Some(_)) => {
            return Err("smtps:// is always TLS; ?tls= is for smtp://".into());
        }
        ("smtp", None | Some("required")) => SmtpTls::Required,
        ("smtp", Some("opportunistic")) => SmtpTls::Opportunistic,
        ("smtp", Some("none")) => SmtpTls::None,
        ("smtp", Some(other)) => {
            return Err(format!(
                "tls={other:?} is not one of required, opportunistic, none"
            ));
        }
        (scheme, _) => return Err(format!("scheme {scheme:?} is not smtp or smtps")),
    };
    let port = url.port().unwrap_or(match tls {
        SmtpTls::Implicit => 465,
        SmtpTls::None => 25,
        SmtpTls::Required | SmtpTls::Opportunistic => 587,
    });
    let user = match url.username() {
        "" => None,
        u => Some(
            percent_decode(u)
                .ok_or_else(|| "the user is not valid percent-encoded UTF-8".to_string())?,
        ),
    };
    Ok((host, port, tls, user))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_default_to_required_tls_and_the_usual_ports() {
        let p = parse_smtp_url;
        assert_eq!(
            p("smtp://mail.example.com"),
            Ok(("mail.example.com".into(), 587, SmtpTls::Required, None))
        );
        assert_eq!(
            p("smtp://al%40ice@127.0.0.1:2525?tls=none"),
            Ok((
                "127.0.0.1".into(),
                2525,
                SmtpTls::None,
                Some("al@ice".into())
            ))
        );
        assert_eq!(
            p("smtp://h?tls=opportunistic").map(|x| (x.1, x.2)),
            Ok((587, SmtpTls::Opportunistic))
        );
        assert_eq!(
            p("smtps://h").map(|x| (x.1, x.2)),
            Ok((465, SmtpTls::Implicit))
        );
        assert_eq!(p("smtp://h?tls=none").map(|x| x.1), Ok(25));
    }

    use std::path::Path;

    use crate::config::Config;

    fn load(dir: &Path, text: &str, env: &[(&str, &str)]) -> Result<Config, Vec<(String, String)>> {
        let path = dir.join("c.toml");
        std::fs::write(&path, text).expect("write");
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load_with_env(&path, env)
            .map_err(|e| e.problems.into_iter().map(|p| (p.key, p.message)).collect())
    }

    #[test]
    fn bot_mode_with_routes_and_email_load_with_their_secrets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("token");
        std::fs::write(&token, "xoxb-1\n").expect("token");
        let text = format!(
            r##"[notify]
retry_deadline = "30m"
[notify.slack]
bot_token_file = {:?}
channel = "#oncall"
[[notify.slack.routes]]
match = {{ namespace = "payments" }}
channel = "#payments-oncall"
[notify.email]
smtp_url = "smtps://alerts@smtp.example.com"
from = "rollbackd <rollbackd@example.com>"
to = ["oncall@example.com"]
[[notify.email.routes]]
match = {{ team = "pay" }}
to = ["pay@example.com"]
"##,
            token.display().to_string()
        );
        // A numeric password from the environment stays as written.
        let cfg = load(
            dir.path(),
            &text,
            &[("ROLLBACKD__NOTIFY__EMAIL__PASSWORD", "007")],
        )
        .expect("valid");
        assert_eq!(cfg.notify.retry_deadline, Duration::from_secs(1800));
        let slack = cfg.slack.as_ref().expect("slack");
        assert_eq!(
            slack.mode,
            SlackMode::Bot {
                token: Secret::new("xoxb-1"),
                channel: "#oncall".into()
            }
        );
        assert_eq!(slack.routes[0].channel, "#payments-oncall");
        let email = cfg.email.as_ref().expect("email");
        assert_eq!(email.password.as_ref().map(Secret::expose), Some("007"));
        assert_eq!((email.port, email.tls), (465, SmtpTls::Implicit));
        assert_eq!(email.server(), "alerts@smtp.example.com:465 (implicit TLS)");
        assert!(!format!("{cfg:?}").contains("xoxb-1"));
        assert!(!format!("{cfg:?}").contains("007\""));
    }

    #[test]
    fn notify_problems_are_named_by_their_dotted_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let problems = load(
            dir.path(),
            r##"[notify]
retry_initial = "0s"
colour = 1
[notify.slack]
webhook_url = "https://hooks.example/T/B/x"
channel = "#x"
routes = [{ match = {}, channel = "#y" }]
shade = 2
[notify.email]
smtp_url = "smtp://u@mail.example.com?tls=none"
password = "pw"
from = "not an address"
to = []
"##,
            &[],
        )
        .expect_err("invalid");
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        for expected in [
            "notify.colour",
            "notify.slack.shade",
            "notify.retry_initial",
            "notify.slack.channel",
            "notify.slack.routes[0]",
            "notify.slack.routes",
            "notify.email.from",
            "notify.email.to",
            "notify.email.smtp_url",
        ] {
            assert!(
                keys.contains(&expected),
                "{expected} missing from {problems:#?}"
            );
        }
        let all = format!("{problems:?}");
        assert!(
            !all.contains("hooks.example"),
            "the webhook URL is a secret: {all}"
        );
        assert!(all.contains("would send the password without TLS"), "{all}");

        let problems =
            load(dir.path(), "[notify.slack]\nchannel = \"#x\"\n", &[]).expect_err("no secret");
        assert_eq!(problems[0].0, "notify.slack", "{problems:?}");
    }

    #[test]
    fn a_password_in_the_smtp_url_is_refused_without_repeating_it() {
        let err = parse_smtp_url("smtp://u:hunter2@h").expect_err("password");
        assert!(!err.contains("hunter2"), "{err}");
        for bad in [
            "http://h",
            "smtp://h?tls=maybe",
            "smtps://h?tls=none",
            "smtp://h/x",
            "",
        ] {
            assert!(parse_smtp_url(bad).is_err(), "{bad}");
        }
    }
}
