//! Email through SMTP (lettre): a multipart/alternative message with a text and an HTML part.
//!
//! The destination of a message is its recipient list, routed like Slack
//! (`[[notify.email.routes]]`). Each message has a stable `Message-ID` derived from its outbox
//! row, so a re-send after a crash carries the same id; follow-ups about an incident set
//! `In-Reply-To` and `References` to the first message, so mail clients thread them.
//!
//! SMTP answers: a 5xx (permanent) and a client-side refusal are not retried; 4xx (transient),
//! timeouts, connection and TLS errors are. The password is handed to lettre and appears in no
//! error, log line or `Debug` output here.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use lettre::message::header::{ContentType, To};
use lettre::message::{Mailbox, Mailboxes, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Notification, Notifier, NotifyError, Outgoing, Retry, Sent, ThreadRef, route};
use crate::config::{EmailRoute, EmailSettings, SmtpTls};

#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("{0:?} is not an email address")]
    Address(String, #[source] lettre::address::AddressError),
    #[error("cannot set up TLS for {host}")]
    Tls {
        host: String,
        #[source]
        source: lettre::transport::smtp::Error,
    },
    #[error("cannot build the message")]
    Build(#[source] lettre::error::Error),
    #[error("SMTP delivery to {server} failed")]
    Smtp {
        server: String,
        #[source]
        source: lettre::transport::smtp::Error,
    },
}

impl EmailError {
    pub fn retry(&self) -> Retry {
        match self {
            EmailError::Smtp { source, .. } if source.is_permanent() || source.is_client() => {
                Retry::Never
            }
            EmailError::Smtp { .. } => Retry::After(None),
            EmailError::Address(..) | EmailError::Tls { .. } | EmailError::Build(_) => Retry::Never,
        }
    }
}

/// The email channel.
pub struct EmailNotifier {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    server: String,
    from: Mailbox,
    to: Mailboxes,
    routes: Vec<(crate::config::Matchers, Mailboxes)>,
}

impl fmt::Debug for EmailNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailNotifier")
            .field("server", &self.server)
            .field("from", &self.from.to_string())
            .field("to", &self.to.to_string())
            .finish_non_exhaustive()
    }
}

fn mailbox(s: &str) -> Result<Mailbox, EmailError> {
    Mailbox::from_str(s).map_err(|e| EmailError::Address(s.to_string(), e))
}

fn mailboxes(list: &[String]) -> Result<Mailboxes, EmailError> {
    let mut out = Mailboxes::new();
    for s in list {
        out.push(mailbox(s)?);
    }
    Ok(out)
}

impl EmailNotifier {
    /// `timeout` bounds each SMTP command.
    pub fn new(settings: &EmailSettings, timeout: Duration) -> Result<EmailNotifier, EmailError> {
        let tls_params = || {
            super::ensure_crypto_provider();
            TlsParameters::new(settings.host.clone()).map_err(|source| EmailError::Tls {
                host: settings.host.clone(),
                source,
            })
        };
        let tls = match settings.tls {
            SmtpTls::Required => Tls::Required(tls_params()?),
            SmtpTls::Opportunistic => Tls::Opportunistic(tls_params()?),
            SmtpTls::Implicit => Tls::Wrapper(tls_params()?),
            SmtpTls::None => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            .port(settings.port)
            .tls(tls)
            .timeout(Some(timeout));
        if let (Some(user), Some(password)) = (&settings.user, &settings.password) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose().to_string(),
            ));
        }
        let routes = settings
            .routes
            .iter()
            .map(|EmailRoute { matchers, to }| Ok((matchers.clone(), mailboxes(to)?)))
            .collect::<Result<_, EmailError>>()?;
        Ok(EmailNotifier {
            transport: builder.build(),
            server: settings.server(),
            from: mailbox(&settings.from)?,
            to: mailboxes(&settings.to)?,
            routes,
        })
    }

    fn compose(&self, out: &Outgoing<'_>) -> Result<(Message, String), EmailError> {
        let n = out.notification;
        let to = Mailboxes::from_str(out.destination)
            .map_err(|e| EmailError::Address(out.destination.to_string(), e))?;
        let domain = self.from.email.domain().to_string();
        let message_id = format!("<rollbackd.{}@{domain}>", out.key);
        let mut builder = Message::builder()
            .from(self.from.clone())
            .mailbox(To::from(to))
            .subject(n.subject())
            .message_id(Some(message_id.clone()))
            .user_agent(concat!("rollbackd/", env!("CARGO_PKG_VERSION")).to_string())
            .date_now();
        if let Some(ThreadRef { id, .. }) = out.thread {
            builder = builder.in_reply_to(id.clone()).references(id.clone());
        }
        let body = MultiPart::alternative()
            .singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(n.plain_text()),
            )
            .singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_HTML)
                    .body(n.html()),
            );
        let message = builder.multipart(body).map_err(EmailError::Build)?;
        Ok((message, message_id))
    }
}

impl Notifier for EmailNotifier {
    fn name(&self) -> &str {
        "email"
    }

    fn destinations(&self, n: &Notification) -> Vec<String> {
        let rules = self.routes.iter().map(|(m, to)| (m, to));
        vec![route::pick(rules, &self.to, n).to_string()]
    }

    fn all_destinations(&self) -> Vec<String> {
        let mut all = vec![self.to.to_string()];
        for (_, to) in &self.routes {
            let to = to.to_string();
            if !all.contains(&to) {
                all.push(to);
            }
        }
        all
    }

    fn send<'a>(&'a self, out: Outgoing<'a>) -> BoxFuture<'a, Result<Sent, NotifyError>> {
        Box::pin(async move {
            let (message, message_id) = self.compose(&out)?;
            self.transport
                .send(message)
                .await
                .map_err(|source| EmailError::Smtp {
                    server: self.server.clone(),
                    source,
                })?;
            Ok(Sent {
                thread: Some(ThreadRef {
                    channel: None,
                    id: message_id,
                }),
            })
        })
    }
}
