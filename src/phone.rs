//! `adminduk phone` and `adminduk outbox`: what a person needs to walk the
//! IKD flow by hand with `buf curl` — a device key, signatures of challenges,
//! and the activation code mail the office sends.

use std::path::PathBuf;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{Ed25519KeyPair, KeyPair as _};

use adminduk_kit::config::DatabaseConfig;
use adminduk_kit::storage::Db;

/// Arguments of `adminduk phone`.
#[derive(Debug, clap::Args)]
pub(crate) struct PhoneArgs {
    #[command(subcommand)]
    command: PhoneCommand,
}

#[derive(Debug, clap::Subcommand)]
enum PhoneCommand {
    /// Makes a device key (Ed25519) and prints its public half, base64, for StartActivation.
    New {
        /// Where the private key is kept.
        #[arg(long, default_value = "phone.key")]
        key: PathBuf,
    },
    /// Signs a challenge (base64, as the service returned it) and prints the signature, base64.
    Sign {
        /// The device key.
        #[arg(long, default_value = "phone.key")]
        key: PathBuf,
        /// The challenge, base64.
        challenge: String,
    },
    /// Makes the proof a resident's change carries through the gateway (the
    /// `x-adminduk-proof` header): signed by the device key for one method and
    /// one session token, now, with a fresh one-time id.
    Proof {
        /// The device key.
        #[arg(long, default_value = "phone.key")]
        key: PathBuf,
        /// The method's path, e.g. `/adminduk.printing.v1.PrintingService/SubmitPrintJob`.
        #[arg(long)]
        method: String,
        /// The session token the request carries.
        #[arg(long)]
        token: String,
    },
}

/// Arguments of `adminduk outbox`.
#[derive(Debug, clap::Args)]
pub(crate) struct OutboxArgs {
    /// The data directory of `adminduk up` (its `ikd.db` is read).
    #[arg(long, default_value = "./adminduk-data")]
    data_dir: PathBuf,
    /// Or the IKD database itself (`sqlite:FILE` or `postgres://...`).
    #[arg(long)]
    database_url: Option<String>,
    /// How many of the newest mails to show.
    #[arg(long, default_value_t = 10)]
    limit: u32,
    /// Only mails to this address.
    #[arg(long)]
    to: Option<String>,
}

pub(crate) fn phone(args: PhoneArgs) -> anyhow::Result<()> {
    match args.command {
        PhoneCommand::New { key } => {
            // A phone keeps its key: asked again, it shows the key it has.
            if key.exists() {
                let pair = read_key(&key)?;
                eprintln!("{} exists already; a phone keeps its key", key.display());
                println!("{}", B64.encode(pair.public_key().as_ref()));
                return Ok(());
            }
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| anyhow::anyhow!("no randomness"))?;
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| anyhow::anyhow!("bad key"))?;
            write_private(&key, &B64.encode(pkcs8.as_ref()))?;
            println!("{}", B64.encode(pair.public_key().as_ref()));
        }
        PhoneCommand::Sign { key, challenge } => {
            let pair = read_key(&key)?;
            let challenge = B64
                .decode(challenge.trim())
                .context("the challenge must be base64")?;
            println!("{}", B64.encode(pair.sign(&challenge).as_ref()));
        }
        PhoneCommand::Proof { key, method, token } => {
            let pair = read_key(&key)?;
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .context("the clock is before 1970")?
                .as_millis();
            let mut id = [0u8; 16];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
                .map_err(|_| anyhow::anyhow!("no randomness"))?;
            let id = adminduk_kit::hex::encode(&id);
            let now_ms = i64::try_from(now_ms).context("the clock is too far ahead")?;
            println!(
                "{}",
                adminduk_kit::proof::sign(&pair, method.trim(), now_ms, &id, token.trim())
            );
        }
    }
    Ok(())
}

/// The phone's key pair from its key file.
fn read_key(key: &std::path::Path) -> anyhow::Result<Ed25519KeyPair> {
    let text = std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
    let pkcs8 = B64
        .decode(text.trim())
        .context("the key file is not a phone key")?;
    Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| anyhow::anyhow!("the key file is not a phone key"))
}

fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{text}")?;
    Ok(())
}

pub(crate) fn outbox(args: OutboxArgs) -> anyhow::Result<()> {
    let url = match args.database_url {
        Some(url) => url,
        None => {
            let file = args.data_dir.join("ikd.db");
            // Opening a missing SQLite file would create an empty one (or fail
            // three times over when the directory is missing): say what was looked for.
            if !file.is_file() {
                let shown = std::path::absolute(&file).unwrap_or(file);
                anyhow::bail!(
                    "no IKD database at {}: pass --data-dir with the directory `adminduk up` was started with \
                     (./adminduk-data in the directory it was started in), or --database-url",
                    shown.display()
                );
            }
            format!("sqlite:{}?mode=rw", file.display())
        }
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let config = DatabaseConfig {
            url: url.into(),
            max_connections: 1,
        };
        let db = Db::connect(&config, adminduk_ikd::SCHEMA, adminduk_ikd::MIGRATIONS)
            .await
            .context("opening the IKD database")?;
        let store = adminduk_ikd::Store::new(db.clone());
        let mut mails = store
            .recent_mail(args.to.as_deref(), i64::from(args.limit))
            .await?;
        if mails.is_empty() {
            println!("no mail yet");
        }
        // The newest last, nearest the prompt.
        mails.reverse();
        for m in mails {
            let state = match (m.sent_at, &m.last_error) {
                (Some(at), _) => format!("sent {}", at.to_rfc3339()),
                (None, Some(error)) => format!(
                    "waiting: {} failed attempt(s), next at {}; last: {error}",
                    m.attempts,
                    m.next_attempt_at.to_rfc3339()
                ),
                (None, None) => "waiting to be sent".to_owned(),
            };
            println!(
                "--- #{} to {} at {} ({state})",
                m.message.id,
                m.message.recipient,
                m.message.created_at.to_rfc3339()
            );
            println!("subject: {}", m.message.subject);
            println!("{}", m.message.body);
        }
        db.close().await;
        anyhow::Ok(())
    })
}
