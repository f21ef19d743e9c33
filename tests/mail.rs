//! The IKD mail sender against a real SMTP server (Python's aiosmtpd, started
//! here on a free port): the activation code arrives, each mail is marked sent
//! and sent once, a failed one is retried after its back-off, on both backends.
//!
//! Skipped when aiosmtpd cannot be imported (`pip install aiosmtpd`), unless
//! `ADMINDUK_REQUIRE_SERVICES=1`, when that fails the test instead.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use adminduk_ikd::MailSender;
use adminduk_ikd::store::Store;
use adminduk_kit::config::MailConfig;
use adminduk_kit::storage::Db;
use adminduk_kit::testing;
use base64::Engine as _;

/// Prints `ready` once listening, then one `mail <base64 of the message>` line per message received.
const SERVER: &str = r#"
import base64, sys
from aiosmtpd.controller import Controller

class Handler:
    async def handle_DATA(self, server, session, envelope):
        print("mail", base64.b64encode(envelope.original_content).decode(), flush=True)
        return "250 OK"

controller = Controller(Handler(), hostname="127.0.0.1", port=int(sys.argv[1]))
controller.start()
print("ready", flush=True)
sys.stdin.read()
controller.stop()
"#;

/// Whether aiosmtpd is there; panics when it is required and missing.
fn aiosmtpd_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            !testing::services_required(),
            "ADMINDUK_REQUIRE_SERVICES=1 but python3 cannot import aiosmtpd (pip install aiosmtpd)"
        );
        eprintln!("skipped: python3 cannot import aiosmtpd (pip install aiosmtpd)");
    }
    ok
}

/// A free TCP port on loopback (free when this returns; the server binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running aiosmtpd; stopped when dropped.
struct SmtpServer {
    child: Child,
    received: mpsc::Receiver<String>,
}

impl SmtpServer {
    fn start(port: u16) -> Self {
        let mut child = Command::new("python3")
            .args(["-c", SERVER, &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let stdout = child.stdout.take().expect("stdout");
        let (ready_tx, ready_rx) = mpsc::channel();
        let (tx, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "ready" {
                    let _ = ready_tx.send(());
                } else if let Some(b64) = line.strip_prefix("mail ") {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .expect("base64 from the server");
                    let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("aiosmtpd is ready within 20 s");
        Self { child, received }
    }

    /// The next message received, within `secs`.
    fn next(&self, secs: u64) -> String {
        self.received
            .recv_timeout(Duration::from_secs(secs))
            .expect("a message arrives")
    }

    /// Every message received so far (after a short quiet period).
    fn rest(&self) -> Vec<String> {
        let mut all = Vec::new();
        while let Ok(m) = self.received.recv_timeout(Duration::from_millis(300)) {
            all.push(m);
        }
        all
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.flush();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn smtp(port: u16) -> MailConfig {
    MailConfig {
        smtp_host: Some("127.0.0.1".to_owned()),
        smtp_port: port,
        from: "Disdukcapil Kota Bekasi <ikd@bekasi.example>".to_owned(),
        poll_interval_ms: 50,
        retry_initial_ms: 400,
        retry_max_ms: 5_000,
        timeout_ms: 3_000,
        ..MailConfig::default()
    }
}

/// A fresh IKD database on each backend; the `TestDatabase` keeps a SQLite file's directory alive.
async fn stores(prefix: &str) -> Vec<(&'static str, Store, Db, testing::TestDatabase)> {
    let mut out = Vec::new();
    for test_db in testing::databases(prefix) {
        let db = Db::connect(&test_db.config, &test_db.schema, adminduk_ikd::MIGRATIONS)
            .await
            .expect("the IKD database");
        out.push((test_db.label, Store::new(db.clone()), db, test_db));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_code_reaches_a_real_smtp_server_once_and_is_marked_sent() {
    if !aiosmtpd_available() {
        return;
    }
    let port = free_port();
    let server = SmtpServer::start(port);
    for (label, store, db, _keep) in stores("mail_sent").await {
        let now = chrono::Utc::now();
        let id = store
            .queue_mail(
                "warga@example.com",
                "Kode aktivasi IKD",
                "Kode aktivasi IKD Anda: 482913\nBerlaku sampai 10:15 WIB.",
                now,
            )
            .await
            .expect("queued");
        let sender = MailSender::new(store.clone(), &smtp(port))
            .expect("config")
            .expect("a sender");
        let drained = sender.drain().await.expect("drains");
        assert_eq!((drained.sent, drained.failed), (1, 0), "{label}");
        let message = server.next(10);
        assert!(message.contains("482913"), "{label}: {message}");
        assert!(message.contains("To: warga@example.com"), "{label}: {message}");
        assert!(
            message.contains("Subject: Kode aktivasi IKD"),
            "{label}: {message}"
        );
        assert!(
            message.contains(&format!("Message-ID: <ikd-outbox-{id}@bekasi.example>")),
            "{label}: {message}"
        );

        let recent = store.recent_mail(None, 10).await.expect("reads");
        assert_eq!(recent.len(), 1, "{label}");
        assert!(recent[0].sent_at.is_some(), "{label}: marked sent");
        assert_eq!(
            sender.drain().await.expect("drains"),
            Default::default(),
            "{label}: nothing twice"
        );

        // Two senders (two replicas) on one outbox: every mail goes out once.
        for n in 0..12 {
            store
                .queue_mail(
                    &format!("warga{n}@example.com"),
                    "Kode aktivasi IKD",
                    &format!("kode {n}"),
                    now,
                )
                .await
                .expect("queued");
        }
        let other = sender.clone();
        let (a, b) = tokio::join!(sender.drain(), other.drain());
        let sent = a.expect("drains").sent + b.expect("drains").sent;
        assert_eq!(sent, 12, "{label}");
        let mut arrived = server.rest();
        arrived.sort();
        arrived.dedup();
        assert_eq!(arrived.len(), 12, "{label}: each once");

        // The newest mails are what the outbox shows first, sent or not.
        let newest = store.recent_mail(None, 3).await.expect("reads");
        assert_eq!(newest[0].message.body, "kode 11", "{label}");
        let to_one = store
            .recent_mail(Some("warga3@example.com"), 10)
            .await
            .expect("reads");
        assert_eq!(to_one.len(), 1, "{label}");

        // The running sender picks up new mail by itself.
        let task = sender.clone().spawn();
        store
            .queue_mail(
                "warga@example.com",
                "Kode aktivasi IKD",
                "Kode aktivasi IKD Anda: 771204",
                chrono::Utc::now(),
            )
            .await
            .expect("queued");
        assert!(server.next(10).contains("771204"), "{label}");
        task.shutdown(Duration::from_secs(5)).await;
        db.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_the_relay_did_not_take_is_retried_after_its_back_off() {
    if !aiosmtpd_available() {
        return;
    }
    for (label, store, db, _keep) in stores("mail_retry").await {
        // Nothing listens on the port yet: the relay is down.
        let port = free_port();
        let config = smtp(port);
        let sender = MailSender::new(store.clone(), &config)
            .expect("config")
            .expect("a sender");
        let id = store
            .queue_mail(
                "warga@example.com",
                "Kode aktivasi IKD",
                "Kode aktivasi IKD Anda: 305117",
                chrono::Utc::now(),
            )
            .await
            .expect("queued");
        let drained = sender.drain().await.expect("drains");
        assert_eq!((drained.sent, drained.failed), (0, 1), "{label}");
        let waiting = store.recent_mail(None, 1).await.expect("reads").remove(0);
        assert_eq!(waiting.message.id, id);
        assert_eq!(waiting.attempts, 1, "{label}");
        assert!(
            waiting.sent_at.is_none() && waiting.last_error.is_some(),
            "{label}: {waiting:?}"
        );
        assert!(
            waiting.next_attempt_at > chrono::Utc::now(),
            "{label}: a back-off"
        );
        assert_eq!(
            sender.drain().await.expect("drains"),
            Default::default(),
            "{label}: not tried again before its time"
        );

        // The relay comes back; once the back-off has passed, the mail goes out.
        let server = SmtpServer::start(port);
        let wait = (waiting.next_attempt_at - chrono::Utc::now())
            .to_std()
            .unwrap_or_default();
        tokio::time::sleep(wait + Duration::from_millis(50)).await;
        let drained = sender.drain().await.expect("drains");
        assert_eq!((drained.sent, drained.failed), (1, 0), "{label}");
        assert!(server.next(10).contains("305117"), "{label}");
        let sent = store.recent_mail(None, 1).await.expect("reads").remove(0);
        assert!(
            sent.sent_at.is_some() && sent.last_error.is_none(),
            "{label}: {sent:?}"
        );
        db.close().await;
    }
}

#[test]
fn a_sender_with_a_bad_from_address_is_refused() {
    let config = MailConfig {
        from: "not an address@".to_owned(),
        ..MailConfig::default()
    };
    let err = adminduk_ikd::mail::check(&config).expect_err("refused");
    assert_eq!(err.key, "mail.from");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_ikd_sends_its_outbox_through_the_relay_its_mail_settings_name() {
    if !aiosmtpd_available() {
        return;
    }
    let port = free_port();
    let server = SmtpServer::start(port);
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite:{}", dir.path().join("ikd.db").display());
    let config = adminduk_kit::config::DatabaseConfig {
        url: url.clone().into(),
        max_connections: 2,
    };
    let db = Db::connect(&config, adminduk_ikd::SCHEMA, adminduk_ikd::MIGRATIONS)
        .await
        .expect("the IKD database");
    let store = Store::new(db.clone());
    store
        .queue_mail(
            "warga@example.com",
            "Kode aktivasi IKD",
            "Kode aktivasi IKD Anda: 918273",
            chrono::Utc::now(),
        )
        .await
        .expect("queued");

    let mut child = Command::new(env!("CARGO_BIN_EXE_adminduk"))
        .args(["serve", "ikd"])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .env("DATABASE_URL", &url)
        .env("ADMINDUK_SERVER__LISTEN", "127.0.0.1:0")
        .env("ADMINDUK_MAIL__SMTP_HOST", "127.0.0.1")
        .env("ADMINDUK_MAIL__SMTP_PORT", port.to_string())
        .env("ADMINDUK_MAIL__FROM", "ikd@bekasi.example")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve ikd starts");
    let received = server.received.recv_timeout(Duration::from_secs(30));
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = child.wait().expect("exits");
    let message = received.expect("the relay receives the outbox's mail within 30 s");
    assert!(message.contains("918273"), "{message}");
    assert!(message.contains("From: ikd@bekasi.example"), "{message}");
    assert!(status.success(), "{status:?}");
    let mail = store.recent_mail(None, 1).await.expect("reads").remove(0);
    assert!(mail.sent_at.is_some(), "marked sent: {mail:?}");
    db.close().await;
}
