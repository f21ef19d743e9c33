//! The `adminduk` binary as a user runs it: `up` on an empty directory,
//! `serve` with bad configuration, `certs`, `seed`.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use adminduk_proto::population::v1 as pb;
use pb::population_service_client::PopulationServiceClient;

fn adminduk() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_adminduk"));
    // The tests' own settings must not leak into the binary's configuration.
    cmd.env_remove("DATABASE_URL").env("RUST_LOG", "warn");
    cmd
}

/// Sends SIGINT, as Ctrl-C does, and waits for the exit status.
fn interrupt(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    let sent = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    for _ in 0..100 {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("adminduk did not stop within 10 s of SIGINT");
}

/// Starts `adminduk up` with 300 residents on `data`, every service on a free
/// port, its stdout piped (the banner) and its stderr dropped.
fn up_on_free_ports(data: &std::path::Path) -> Child {
    adminduk()
        .args(["up", "--residents", "300"])
        .args(["--gateway-addr", "127.0.0.1:0"])
        .args(["--population-addr", "127.0.0.1:0"])
        .args(["--inventory-addr", "127.0.0.1:0"])
        .args(["--printing-addr", "127.0.0.1:0"])
        .args(["--ikd-addr", "127.0.0.1:0"])
        .args(["--admin-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("adminduk up starts")
}

/// Reads `child`'s stdout on a thread, line by line, until `found` returns
/// something (the readiness signal, no sleeping); returns it. Keeps reading to
/// the end, so the child never writes into a closed pipe. Panics with `what`
/// if the output ends first, or after a minute.
async fn read_banner<T: Send + 'static>(
    child: &mut Child,
    what: &str,
    mut found: impl FnMut(&str) -> Option<T> + Send + 'static,
) -> T {
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.is_some()
                && let Some(value) = found(&line)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(value);
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(60), rx)
        .await
        .expect("up is ready within a minute")
        .expect(what)
}

/// `adminduk serve population` with `extra` arguments in `dir`, logging at
/// info to a piped stdout and listening on a free port.
fn serve_population(dir: &std::path::Path, extra: &[&str]) -> Command {
    let mut cmd = adminduk();
    cmd.args(["serve", "population"])
        .args(extra)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .env("ADMINDUK_SERVER__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn up_starts_on_an_empty_directory_answers_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut child = up_on_free_ports(&data);
    // Read the printed addresses.
    let mut found: Vec<String> = Vec::new();
    let what = "up prints the population, inventory and admin addresses";
    let addrs = read_banner(&mut child, what, move |line| {
        for prefix in [
            "population  grpc://",
            "inventory   grpc://",
            "admin       http://",
        ] {
            if let Some(rest) = line.trim().strip_prefix(prefix) {
                found.extend(rest.split_whitespace().next().map(str::to_owned));
            }
        }
        (found.len() == 3).then(|| found.clone())
    })
    .await;
    let (addr, inventory) = (addrs[0].clone(), addrs[1].clone());
    // The admin port answers Prometheus with every service's metrics.
    let admin = addrs[2].trim_end_matches("/metrics").to_owned();
    let metrics = {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut tcp = tokio::net::TcpStream::connect(&admin).await.expect("admin port");
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut raw = String::new();
        tcp.read_to_string(&mut raw).await.expect("read");
        raw
    };
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    for service in ["population", "inventory", "printing", "ikd", "gateway"] {
        assert!(
            metrics.contains(&format!("adminduk_build_info{{service=\"{service}\"")),
            "{service} in {metrics}"
        );
    }

    let mut client = PopulationServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");
    let ok = client
        .parse_nik(pb::ParseNikRequest {
            nik: "3275014101900001".into(),
        })
        .await
        .expect("a valid NIK parses")
        .into_inner();
    assert_eq!(ok.district_name, "Bekasi Timur");
    let err = client
        .parse_nik(pb::ParseNikRequest {
            nik: "3275013002900001".into(),
        })
        .await
        .expect_err("30 February");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // The demo residents are there: a name search in Bekasi Timur finds someone.
    let found = client
        .search_residents(pb::SearchResidentsRequest {
            district_code: "327501".into(),
            name_query: "an".into(),
            page_size: 5,
            page_token: String::new(),
        })
        .await
        .expect("search")
        .into_inner();
    assert!(!found.residents.is_empty(), "synthetic residents were loaded");

    // A storm through gRPC against `up`: one kecamatan grants exactly its 30, to
    // applicants with valid NIKs. A second storm is new applicants (fresh keys),
    // not retries of the first: it gets nothing, and the books still agree. The
    // first run repeated (`--run N`) is answered as it was: its 30 grants again,
    // nothing new held.
    let mut first_run = None::<String>;
    for (expected, again) in [(30, 0), (0, 0), (30, 30)] {
        let inventory = inventory.clone();
        let repeat = if again > 0 { first_run.clone() } else { None };
        let storm = tokio::task::spawn_blocking(move || {
            let mut command = adminduk();
            command
                .args([
                    "peak-morning",
                    "--point",
                    "3275-KEC-07",
                    "--applicants",
                    "2000",
                    "--concurrency",
                    "32",
                ])
                .args(["--inventory", &format!("http://{inventory}")]);
            if let Some(run) = repeat {
                command.args(["--run", &run]);
            }
            command.output().expect("peak-morning runs")
        })
        .await
        .expect("join");
        let report = String::from_utf8_lossy(&storm.stdout);
        assert!(
            storm.status.success(),
            "{report}{}",
            String::from_utf8_lossy(&storm.stderr)
        );
        let granted = report
            .lines()
            .find_map(|l| l.trim().strip_prefix("granted"))
            .and_then(|n| n.split_whitespace().next()?.parse::<u64>().ok());
        assert_eq!(granted, Some(expected), "{report}");
        assert!(report.contains(&format!("{again} answered again")), "{report}");
        assert!(report.contains("books agree  yes"), "{report}");
        if first_run.is_none() {
            first_run = report
                .lines()
                .next()
                .and_then(|l| l.rsplit_once("(run ")?.1.strip_suffix(')').map(str::to_owned));
        }
        assert!(
            !report.contains("InvalidArgument"),
            "every NIK is valid: {report}"
        );
    }

    let status = interrupt(&mut child);
    assert!(status.success(), "clean exit on SIGINT: {status:?}");
    for file in [
        "population.db",
        "certs/ca.crt",
        "certs/server.crt",
        "certs/office.crt",
        "certs/agency.key",
    ] {
        assert!(data.join(file).is_file(), "{file} written");
    }
}

#[test]
fn bad_configuration_exits_with_64_and_names_the_key() {
    let cases = [
        ("ADMINDUK_SERVER__LISTEN", "not-an-address", "server.listen"),
        (
            "ADMINDUK_SERVER__MAX_MESSAGE_BYTES",
            "10",
            "server.max_message_bytes",
        ),
        ("DATABASE_URL", "mysql://localhost/x", "database.url"),
    ];
    for (key, value, named) in cases {
        let out = adminduk()
            .args(["serve", "population"])
            .env(key, value)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(64), "{key}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(named), "{key}: stderr {stderr:?} names {named}");
    }
}

#[test]
fn certs_writes_a_development_pki() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = adminduk()
        .args(["certs", "--out"])
        .arg(dir.path())
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for file in [
        "ca.crt",
        "server.crt",
        "server.key",
        "office.crt",
        "office.key",
        "agency.crt",
        "agency.key",
    ] {
        let text = std::fs::read_to_string(dir.path().join(file)).expect(file);
        assert!(text.starts_with("-----BEGIN"), "{file} is PEM");
    }
    let bad = adminduk()
        .args(["certs", "--service-point", "bad point!", "--out"])
        .arg(dir.path().join("other"))
        .output()
        .expect("runs");
    assert!(!bad.status.success());
}

#[test]
fn seed_loads_residents_and_a_rerun_adds_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite:{}", dir.path().join("seed.db").display());
    let run = || {
        adminduk()
            .args(["seed", "--residents", "200", "--database-url", &url])
            .output()
            .expect("runs")
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let written: u64 = String::from_utf8_lossy(&first.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("prints a count");
    assert!(written >= 200, "{written}");
    let second = run();
    assert!(second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stdout).starts_with("0 residents"),
        "the same seed adds nothing twice"
    );
    let unknown = adminduk()
        .args([
            "seed",
            "--residents",
            "5",
            "--regency",
            "9999",
            "--database-url",
            &url,
        ])
        .output()
        .expect("runs");
    assert!(!unknown.status.success(), "an unknown regency is refused");
}

#[test]
fn the_stand_in_phone_signs_what_it_is_given() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("phone.key");
    let new = adminduk()
        .args(["phone", "new", "--key"])
        .arg(&key)
        .output()
        .expect("runs");
    assert!(new.status.success(), "{}", String::from_utf8_lossy(&new.stderr));
    let b64 = base64::engine::general_purpose::STANDARD;
    let public = b64
        .decode(String::from_utf8_lossy(&new.stdout).trim())
        .expect("base64 public key");
    assert_eq!(public.len(), 32);
    let again = adminduk()
        .args(["phone", "new", "--key"])
        .arg(&key)
        .output()
        .expect("runs");
    // An existing key is never overwritten: asked again, the phone shows the key it has.
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(again.stdout, new.stdout, "the same public key");

    let challenge = b64.encode(b"adminduk.ikd.v1.token:0123456789abcdef0123456789abcdef");
    let sign = adminduk()
        .args(["phone", "sign", "--key"])
        .arg(&key)
        .arg(&challenge)
        .output()
        .expect("runs");
    assert!(sign.status.success(), "{}", String::from_utf8_lossy(&sign.stderr));
    let signature = b64
        .decode(String::from_utf8_lossy(&sign.stdout).trim())
        .expect("base64 signature");
    let message = b64.decode(&challenge).expect("challenge");
    assert!(adminduk_kit::token::verify_device_signature(
        &public, &message, &signature
    ));
}

/// Reads `child`'s stdout until a line contains `until`, then stops the child;
/// returns everything read. Panics after `secs` seconds without that line.
fn read_until(mut child: Child, until: &'static str, secs: u64) -> String {
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(until) {
                let _ = tx.send(seen.clone());
            }
        }
        let _ = tx.send(seen);
    });
    let seen = rx.recv_timeout(Duration::from_secs(secs));
    let status = interrupt(&mut child);
    let seen = seen.unwrap_or_else(|_| panic!("no line with {until:?} within {secs} s"));
    assert!(seen.contains(until), "{seen}");
    assert!(status.success(), "clean exit: {status:?}\n{seen}");
    seen
}

#[test]
fn serve_names_its_address_and_its_database_and_writes_no_colour_into_a_pipe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let child = serve_population(dir.path(), &[])
        .env_remove("NO_COLOR")
        .spawn()
        .expect("serve starts");
    let log = read_until(child, "listening", 60);
    assert!(!log.contains('\u{1b}'), "no ANSI codes in a pipe: {log:?}");
    let db = dir.path().canonicalize().expect("dir").join("population.db");
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("no database configured"))
        .unwrap_or_else(|| panic!("a warning names the default database: {log}"));
    assert!(warning.contains(&db.display().to_string()), "{warning}");
    assert!(db.is_file(), "the named file is the one used");
    let listening = log.lines().find(|l| l.contains("listening")).expect("a line");
    assert!(listening.contains("addr=127.0.0.1:"), "{listening}");
    assert!(!listening.contains("addr=127.0.0.1:0 "), "{listening}");
}

#[test]
fn outbox_outside_the_data_directory_says_which_file_it_looked_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = adminduk()
        .arg("outbox")
        .current_dir(dir.path())
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = dir
        .path()
        .canonicalize()
        .expect("dir")
        .join("adminduk-data")
        .join("ikd.db");
    assert!(
        stderr.contains(&format!("no IKD database at {}", expected.display())),
        "{stderr}"
    );
    assert!(stderr.contains("--data-dir"), "{stderr}");
    assert!(!stderr.contains("unable to open"), "{stderr}");
    assert!(!dir.path().join("adminduk-data").exists(), "nothing is created");
}

#[tokio::test(flavor = "multi_thread")]
async fn up_delivers_the_activation_code_to_its_mailbox_and_outbox_shows_it_sent() {
    use adminduk_proto::ikd::v1 as ikd;
    use ring::signature::KeyPair as _;

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut child = up_on_free_ports(&data);
    let (mut ikd, mut mailbox, mut nik) = (None, None, None);
    let (ikd_addr, mailbox, nik) = read_banner(&mut child, "up printed its banner", move |line| {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("ikd         grpc://") {
            ikd = rest.split_whitespace().next().map(str::to_owned);
        } else if let Some(rest) = line.strip_prefix("mailbox") {
            mailbox = rest.split_whitespace().next().map(str::to_owned);
        } else if let Some((_, n)) = line.rsplit_once("NIK ") {
            nik = Some(n.trim().to_owned());
        } else if line.starts_with("Ctrl-C") {
            return Some((ikd.clone(), mailbox.clone(), nik.clone()));
        }
        None
    })
    .await;
    let ikd_addr = ikd_addr.expect("up prints the IKD address");
    let mailbox = std::path::PathBuf::from(mailbox.expect("up prints where the mailbox is"));
    let nik = nik.expect("up prints a resident who can activate IKD");
    assert!(
        mailbox.starts_with(data.canonicalize().expect("data dir")),
        "{}",
        mailbox.display()
    );

    let mut client = ikd::ikd_service_client::IkdServiceClient::connect(format!("http://{ikd_addr}"))
        .await
        .expect("connects");
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("a key");
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("a key");
    let started = client
        .start_activation(ikd::StartActivationRequest {
            nik: nik.clone(),
            email: "warga@example.com".into(),
            phone: "081234567890".into(),
            device_public_key: pair.public_key().as_ref().to_vec(),
        })
        .await
        .expect("activation starts")
        .into_inner();
    let nonce = started
        .qr_payload
        .rsplit(':')
        .next()
        .expect("IKD1:<id>:<nonce>")
        .to_owned();
    client
        .verify_at_office(ikd::VerifyAtOfficeRequest {
            activation_id: started.activation_id.clone(),
            nonce,
            officer_id: "petugas-1".into(),
            service_point_code: "3275-KEC-01".into(),
        })
        .await
        .expect("verified at the office");

    // The sender writes the mail into the mailbox shortly after.
    let mut mail = None;
    for _ in 0..100 {
        let files: Vec<_> = std::fs::read_dir(&mailbox)
            .expect("the mailbox exists")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        if let Some(file) = files.first() {
            mail = Some(std::fs::read_to_string(file).expect("readable"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mail = mail.expect("a mail in the mailbox within 10 s");
    assert!(mail.contains("To: warga@example.com"), "{mail}");
    let code: String = mail
        .split("Kode aktivasi IKD Anda: ")
        .nth(1)
        .expect("the code")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert_eq!(code.len(), 6, "{mail}");
    assert!(!mail.contains(&nik), "the mail never carries the NIK");
    assert!(
        mail.contains("termasuk petugas"),
        "the mailbox file reads as written, without soft line breaks: {mail}"
    );

    let outbox = adminduk()
        .args(["outbox", "--data-dir"])
        .arg(&data)
        .output()
        .expect("outbox runs");
    let shown = String::from_utf8_lossy(&outbox.stdout);
    assert!(
        outbox.status.success(),
        "{shown}{}",
        String::from_utf8_lossy(&outbox.stderr)
    );
    assert!(shown.contains(&code), "{shown}");
    assert!(shown.contains("(sent "), "marked sent: {shown}");

    let status = interrupt(&mut child);
    assert!(status.success(), "clean exit on SIGINT: {status:?}");
}

/// The README, as a user reads it.
fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md")
}

#[test]
fn the_readme_s_date_is_tomorrow_in_wib() {
    let readme = readme();
    let line = readme
        .lines()
        .find(|l| l.starts_with("DATE=$("))
        .expect("the README sets DATE");
    let out = Command::new("bash")
        .args(["-c", &format!("{line}\nprintf '%s' \"$DATE\"")])
        .output()
        .expect("bash runs");
    let date = String::from_utf8_lossy(&out.stdout).into_owned();
    // Checked against the clock on both sides of the command, so a run across midnight WIB still agrees.
    let tomorrow = || {
        use chrono::Datelike as _;
        let day = adminduk_kit::time::today_wib() + chrono::Days::new(1);
        format!(
            r#"{{"year":{},"month":{},"day":{}}}"#,
            day.year(),
            day.month(),
            day.day()
        )
    };
    let before = tomorrow();
    assert!(
        date == before || date == tomorrow(),
        "README's DATE gives {date:?}, tomorrow in WIB is {before}"
    );
}

#[test]
fn the_readme_s_tls_example_names_the_files_certs_writes() {
    let readme = readme();
    let block: String = readme
        .lines()
        .skip_while(|l| !l.starts_with("[server.tls]"))
        .take_while(|l| !l.trim().is_empty())
        .map(|l| format!("{}\n", l.split('#').next().unwrap_or_default().trim_end()))
        .collect();
    assert!(
        block.contains("cert ="),
        "the README has a [server.tls] example: {block}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = adminduk()
        .args(["certs", "--out", "certs"])
        .current_dir(dir.path())
        .output()
        .expect("certs runs");
    assert!(
        certs.status.success(),
        "{}",
        String::from_utf8_lossy(&certs.stderr)
    );
    std::fs::write(dir.path().join("adminduk.toml"), &block).expect("config written");
    // The example as written starts a TLS server from what `adminduk certs` wrote.
    let child = serve_population(dir.path(), &["--config", "adminduk.toml"])
        .spawn()
        .expect("serve starts");
    read_until(child, "listening", 60);
}
