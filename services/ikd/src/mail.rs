//! The mail sender: drains the outbox (the activation codes VerifyAtOffice
//! queues in the same transaction as the verification) over SMTP to a relay,
//! or into a local mailbox directory for `adminduk up`; marks each message
//! sent, and retries a failed one with a doubling back-off.
//!
//! The outbox is the record: a message is marked sent only after the relay
//! accepted it, so a crash between the two sends it again (with the same
//! Message-ID, so a receiving system can tell). Several replicas may run a
//! sender on one database: each message is claimed for a while before it is
//! sent, so one of them sends it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use adminduk_kit::config::MailConfig;
use chrono::{DateTime, Utc};
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::store::{Mail, Store, StoreError};

/// Messages taken from the outbox at once.
const BATCH: i64 = 50;

/// The mail settings cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("bad configuration: {key}: {message}")]
pub struct MailConfigError {
    /// The dotted key.
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

/// Where sent mail goes.
#[derive(Debug, Clone)]
enum Transport {
    /// An SMTP relay, plain SMTP.
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        host: String,
        port: u16,
    },
    /// A directory a person reads: one `.eml` file per message.
    Mailbox(PathBuf),
}

/// Sends the outbox's messages.
#[derive(Debug, Clone)]
pub struct MailSender {
    store: Store,
    transport: Transport,
    from: Mailbox,
    config: MailConfig,
}

/// What one pass over the outbox did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Messages handed to the relay or written to the mailbox.
    pub sent: u64,
    /// Attempts that failed; those messages wait for their back-off.
    pub failed: u64,
}

/// Checks what the configuration's types cannot: that `mail.from` is an address
/// a message can carry. Call it before starting, with the other checks.
pub fn check(config: &MailConfig) -> Result<(), MailConfigError> {
    config
        .from
        .parse::<Mailbox>()
        .map(drop)
        .map_err(|err| MailConfigError {
            key: "mail.from",
            message: format!("{err}"),
        })
}

impl MailSender {
    /// A sender for `config`: SMTP when `mail.smtp_host` is set, else the mailbox
    /// directory when `mail.mailbox_dir` is; `None` when neither is (mail waits).
    pub fn new(store: Store, config: &MailConfig) -> Result<Option<Self>, MailConfigError> {
        let from: Mailbox = config.from.parse().map_err(|err| MailConfigError {
            key: "mail.from",
            message: format!("{err}"),
        })?;
        let transport = match (&config.smtp_host, &config.mailbox_dir) {
            (Some(host), _) => Transport::Smtp {
                transport: AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
                    .port(config.smtp_port)
                    .timeout(Some(Duration::from_millis(config.timeout_ms)))
                    .build(),
                host: host.clone(),
                port: config.smtp_port,
            },
            (None, Some(dir)) => {
                std::fs::create_dir_all(dir).map_err(|err| MailConfigError {
                    key: "mail.mailbox_dir",
                    message: format!("cannot create {}: {err}", dir.display()),
                })?;
                Transport::Mailbox(dir.clone())
            }
            (None, None) => return Ok(None),
        };
        Ok(Some(Self {
            store,
            transport,
            from,
            config: config.clone(),
        }))
    }

    /// Where mail goes, for a start-up line: `smtp://host:port` or the mailbox directory.
    pub fn destination(&self) -> String {
        match &self.transport {
            Transport::Smtp { host, port, .. } => format!("smtp://{host}:{port}"),
            Transport::Mailbox(dir) => dir.display().to_string(),
        }
    }

    /// Sends every message due now; a failed one is scheduled again.
    pub async fn drain(&self) -> Result<Drained, StoreError> {
        let mut done = Drained::default();
        loop {
            let now = Utc::now();
            let due = self.store.due_mail(now, BATCH).await?;
            let full = due.len() as i64 == BATCH;
            let mut progressed = false;
            for mail in due {
                let now = Utc::now();
                // In hand for one exchange and a margin; a sender that dies meanwhile
                // leaves the message to be tried again when the claim runs out.
                let until = now + chrono::Duration::milliseconds(2 * self.config.timeout_ms as i64 + 1_000);
                if !self.store.claim_mail(mail.message.id, now, until).await? {
                    continue;
                }
                progressed = true;
                match self.deliver(&mail).await {
                    Ok(()) => {
                        self.store.mark_mail_sent(mail.message.id, Utc::now()).await?;
                        done.sent += 1;
                        tracing::info!(mail = mail.message.id, to = %self.destination(), "mail sent");
                    }
                    Err(failure) => {
                        let failures = u32::try_from(mail.attempts + 1).unwrap_or(u32::MAX);
                        let wait = self.config.retry_after(failures);
                        let retry_at = Utc::now() + chrono::Duration::milliseconds(wait.as_millis() as i64);
                        let attempts = self
                            .store
                            .mark_mail_failed(mail.message.id, retry_at, &failure.detail)
                            .await?;
                        done.failed += 1;
                        // The detail may quote the address back; the log names the message only.
                        tracing::warn!(
                            mail = mail.message.id,
                            attempts,
                            retry_in_ms = wait.as_millis() as u64,
                            reason = failure.kind,
                            "mail not sent; will retry"
                        );
                    }
                }
            }
            if !full || !progressed {
                return Ok(done);
            }
        }
    }

    /// Drains the outbox every `mail.poll_interval_ms` until stopped.
    pub fn spawn(self) -> MailTask {
        let (stop, mut stopped) = watch::channel(false);
        let poll = self.config.poll_interval();
        let task = tokio::spawn(async move {
            loop {
                if let Err(err) = self.drain().await {
                    tracing::error!(error = %err, "cannot read the outbox");
                }
                tokio::select! {
                    () = tokio::time::sleep(poll) => {}
                    _ = stopped.wait_for(|stop| *stop) => return,
                }
            }
        });
        MailTask { stop, task }
    }

    async fn deliver(&self, mail: &Mail) -> Result<(), Failure> {
        let message = self.message(mail)?;
        match &self.transport {
            Transport::Smtp { transport, .. } => {
                transport.send(message).await.map(drop).map_err(|err| Failure {
                    kind: if err.is_permanent() {
                        "refused by the relay"
                    } else {
                        "relay unreachable or busy"
                    },
                    detail: err.to_string(),
                })
            }
            Transport::Mailbox(dir) => write_mailbox(dir, mail.message.id, &message.formatted())
                .await
                .map_err(|err| Failure {
                    kind: "mailbox not writable",
                    detail: err.to_string(),
                }),
        }
    }

    fn message(&self, mail: &Mail) -> Result<Message, Failure> {
        let to: Mailbox = mail.message.recipient.parse().map_err(|err| Failure {
            kind: "bad recipient address",
            detail: format!("{err}"),
        })?;
        let domain = self.from.email.domain().to_owned();
        let created: DateTime<Utc> = mail.message.created_at;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.message.subject.clone())
            .date(created.into())
            // One id per outbox row: a message sent again after a crash is recognisably the same.
            .message_id(Some(format!("<ikd-outbox-{}@{domain}>", mail.message.id)))
            .header(ContentType::TEXT_PLAIN)
            .body(self.body(&mail.message.body))
            .map_err(|err| Failure {
                kind: "message not built",
                detail: err.to_string(),
            })
    }
}

impl MailSender {
    /// The body as sent: lettre's choice of encoding for a relay (which may not
    /// take 8-bit text); unencoded for the mailbox, so a person reads the file as
    /// written, long lines and all.
    fn body(&self, text: &str) -> Body {
        match &self.transport {
            Transport::Mailbox(_) => {
                Body::new_with_encoding(text.to_owned(), ContentTransferEncoding::EightBit)
                    .unwrap_or_else(Body::new)
            }
            Transport::Smtp { .. } => Body::new(text.to_owned()),
        }
    }
}

/// Why one attempt failed: a fixed kind for the log, the detail for the outbox row.
#[derive(Debug)]
struct Failure {
    kind: &'static str,
    detail: String,
}

/// Writes one message into the mailbox directory as `<id>.eml`, whole or not at all.
async fn write_mailbox(dir: &Path, id: i64, bytes: &[u8]) -> std::io::Result<()> {
    let name = format!("{id:08}.eml");
    let partial = dir.join(format!(".{name}.partial"));
    tokio::fs::write(&partial, bytes).await?;
    tokio::fs::rename(&partial, dir.join(name)).await
}

/// A running sender; stop it with [`MailTask::shutdown`].
#[derive(Debug)]
pub struct MailTask {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl MailTask {
    /// Lets the pass in progress finish (an SMTP exchange at most), then stops.
    pub async fn shutdown(mut self, within: Duration) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(within, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}
