//! Slack: an incoming webhook, or a bot token with `chat.postMessage`.
//!
//! Webhook mode posts to the one channel the webhook belongs to; Slack answers `ok` and no
//! message `ts`, so a follow-up is a new message. Bot mode routes each message to a channel
//! (`[[notify.slack.routes]]`), and replies to the first message about an incident in its
//! thread (`thread_ts` from the first answer, kept in the outbox).
//!
//! Answers: 2xx with `ok: true` is delivered. HTTP 429 (and `ok: false` with `ratelimited`) is
//! retried after `Retry-After`. 5xx, timeouts and connection errors are retried with backoff.
//! Other 4xx and the other `ok: false` errors (`channel_not_found`, `invalid_auth`,
//! `not_in_channel`, …) are permanent: retrying cannot fix them.
//!
//! The webhook URL and the bot token are secrets: reqwest errors are stripped of their URL, and
//! no error, log line or `Debug` output here holds either.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use serde::Deserialize;

use super::{Notification, Notifier, NotifyError, Outgoing, Retry, Sent, ThreadRef, blocks, route};
use crate::config::{Secret, SlackMode, SlackRoute, SlackSettings};

/// Largest answer read from Slack; its answers are small.
const MAX_ANSWER: usize = 64 * 1024;
/// The destination a webhook-mode message is stored under.
pub const WEBHOOK_DESTINATION: &str = "webhook";

#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("the bot token is not a valid header value")]
    BadToken,
    #[error("request failed")]
    Transport(#[source] reqwest::Error),
    #[error("rate-limited (HTTP 429){}", retry_after.map(|d| format!(", retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("Slack answered ok:false, error {error:?}")]
    Api {
        error: String,
        retry_after: Option<Duration>,
    },
    #[error("unreadable answer (HTTP {status})")]
    Answer {
        status: u16,
        #[source]
        source: serde_json::Error,
    },
}

impl SlackError {
    pub fn retry(&self) -> Retry {
        match self {
            SlackError::Client(_) | SlackError::BadToken => Retry::Never,
            SlackError::Transport(_) => Retry::After(None),
            SlackError::RateLimited { retry_after } => Retry::After(*retry_after),
            SlackError::Status { status, .. } if *status >= 500 || *status == 408 => {
                Retry::After(None)
            }
            SlackError::Status { .. } => Retry::Never,
            SlackError::Api { error, retry_after } => match error.as_str() {
                "ratelimited" | "rate_limited" => Retry::After(*retry_after),
                "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout" => {
                    Retry::After(None)
                }
                _ => Retry::Never,
            },
            // A proxy's error page or a truncated answer: worth another try.
            SlackError::Answer { .. } => Retry::After(None),
        }
    }
}

/// The Slack channel.
pub struct SlackNotifier {
    http: reqwest::Client,
    mode: SlackMode,
    api_url: String,
    routes: Vec<SlackRoute>,
}

impl fmt::Debug for SlackNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match &self.mode {
            SlackMode::Webhook { .. } => "webhook".to_string(),
            SlackMode::Bot { channel, .. } => format!("bot, default channel {channel}"),
        };
        f.debug_struct("SlackNotifier")
            .field("mode", &mode)
            .field("api_url", &self.api_url)
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct ApiAnswer {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    ts: Option<String>,
}

impl SlackNotifier {
    /// `timeout` bounds each request (connect included).
    pub fn new(settings: &SlackSettings, timeout: Duration) -> Result<SlackNotifier, SlackError> {
        super::ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rollbackd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SlackError::Client(e.without_url()))?;
        Ok(SlackNotifier {
            http,
            mode: settings.mode.clone(),
            api_url: settings.api_url.clone(),
            routes: settings.routes.clone(),
        })
    }

    async fn post_webhook(&self, url: &Secret, n: &Notification) -> Result<Sent, SlackError> {
        let body = blocks::message(n);
        let response = self
            .http
            .post(url.expose())
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| SlackError::Transport(e.without_url()))?;
        let (status, retry_after, answer) = read(response).await?;
        if status == 429 {
            return Err(SlackError::RateLimited { retry_after });
        }
        if !(200..300).contains(&status) {
            return Err(SlackError::Status {
                status,
                body: printable(&answer),
            });
        }
        Ok(Sent::default())
    }

    async fn post_message(&self, token: &Secret, out: &Outgoing<'_>) -> Result<Sent, SlackError> {
        let mut body = blocks::message(out.notification);
        match out.thread {
            // A reply goes to the channel ID Slack answered the first message with.
            Some(ThreadRef { channel, id }) => {
                body["channel"] = channel.as_deref().unwrap_or(out.destination).into();
                body["thread_ts"] = id.as_str().into();
            }
            None => body["channel"] = out.destination.into(),
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| SlackError::BadToken)?;
        auth.set_sensitive(true);
        let response = self
            .http
            .post(format!("{}/chat.postMessage", self.api_url))
            .header(AUTHORIZATION, auth)
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| SlackError::Transport(e.without_url()))?;
        let (status, retry_after, answer) = read(response).await?;
        if status == 429 {
            return Err(SlackError::RateLimited { retry_after });
        }
        if !(200..300).contains(&status) {
            return Err(SlackError::Status {
                status,
                body: printable(&answer),
            });
        }
        let answer: ApiAnswer = serde_json::from_slice(&answer)
            .map_err(|source| SlackError::Answer { status, source })?;
        if !answer.ok {
            return Err(SlackError::Api {
                error: printable(answer.error.as_deref().unwrap_or("(none)").as_bytes()),
                retry_after,
            });
        }
        Ok(Sent {
            thread: answer.ts.map(|ts| ThreadRef {
                channel: answer.channel,
                id: ts,
            }),
        })
    }
}

/// Status, `Retry-After` (seconds) and at most [`MAX_ANSWER`] bytes of the body.
async fn read(
    mut response: reqwest::Response,
) -> Result<(u16, Option<Duration>, Vec<u8>), SlackError> {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| SlackError::Transport(e.without_url()))?
    {
        let room = MAX_ANSWER.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room < chunk.len() {
            break;
        }
    }
    Ok((status, retry_after, body))
}

/// A peer's answer as one short line, for errors and the timeline.
fn printable(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    super::message::truncate(&super::message::one_line(text.trim()), 200)
}

impl Notifier for SlackNotifier {
    fn name(&self) -> &str {
        "slack"
    }

    fn destinations(&self, n: &Notification) -> Vec<String> {
        match &self.mode {
            SlackMode::Webhook { .. } => vec![WEBHOOK_DESTINATION.into()],
            SlackMode::Bot { channel, .. } => {
                let rules = self.routes.iter().map(|r| (&r.matchers, &r.channel));
                vec![route::pick(rules, channel, n).clone()]
            }
        }
    }

    fn all_destinations(&self) -> Vec<String> {
        match &self.mode {
            SlackMode::Webhook { .. } => vec![WEBHOOK_DESTINATION.into()],
            SlackMode::Bot { channel, .. } => {
                let mut all = vec![channel.clone()];
                for r in &self.routes {
                    if !all.contains(&r.channel) {
                        all.push(r.channel.clone());
                    }
                }
                all
            }
        }
    }

    fn send<'a>(&'a self, out: Outgoing<'a>) -> BoxFuture<'a, Result<Sent, NotifyError>> {
        Box::pin(async move {
            let sent = match &self.mode {
                SlackMode::Webhook { url } => {
                    if out.destination != WEBHOOK_DESTINATION {
                        return Err(NotifyError::UnknownDestination(out.destination.into()));
                    }
                    self.post_webhook(url, out.notification).await?
                }
                SlackMode::Bot { token, .. } => self.post_message(token, &out).await?,
            };
            Ok(sent)
        })
    }
}
