//! The gateway end to end: the whole mesh in this process on free ports
//! (`adminduk::mesh::start`, as `adminduk up` runs it), called over TLS as an
//! anonymous phone, a resident with a session token, an office device, an
//! agency and an administrator, each with their own client certificate. Every
//! refusal is checked on the client: its code and its ErrorInfo reason.

use std::path::Path;
use std::time::Duration;

use adminduk::mesh::{Mesh, MeshOptions};
use adminduk_kit::error::metadata_of;
use adminduk_proto::gateway::v1 as gateway;
use adminduk_proto::ikd::v1 as ikd;
use adminduk_proto::inventory::v1 as inventory;
use adminduk_proto::population::v1 as population;
use adminduk_proto::printing::v1 as printing;
use gateway::agency_service_client::AgencyServiceClient;
use gateway::broker_watch_service_client::BrokerWatchServiceClient;
use gateway::report_service_client::ReportServiceClient;
use ikd::ikd_service_client::IkdServiceClient;
use inventory::inventory_service_client::InventoryServiceClient;
use population::population_service_client::PopulationServiceClient;
use printing::printing_service_client::PrintingServiceClient;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

/// A NIK that no synthetic resident of Kota Bekasi has.
const STRANGER_NIK: &str = "3275014101900001";

struct Door {
    mesh: Mesh,
    dir: tempfile::TempDir,
}

impl Door {
    async fn open() -> Self {
        Self::open_with(None).await
    }

    /// The mesh with IKD and the gateway sharing `cache` (Redis), or an in-process one.
    async fn open_with(cache: Option<std::sync::Arc<dyn adminduk_kit::cache::SharedCache>>) -> Self {
        capture_logs();
        let dir = tempfile::tempdir().expect("tempdir");
        // On PostgreSQL when the tests have one (as in CI), each mesh in schemas of its own.
        let postgres = adminduk_kit::testing::postgres("gw").map(|db| {
            (
                secrecy::ExposeSecret::expose_secret(&db.config.url).to_owned(),
                db.schema,
            )
        });
        let mesh = adminduk::mesh::start(MeshOptions {
            cache,
            postgres,
            ..MeshOptions::on_free_ports(dir.path(), 300)
        })
        .await
        .expect("the mesh starts");
        Door { mesh, dir }
    }

    /// Stops the mesh (the gateway writes its last audit rows and signs the
    /// chain's head).
    async fn close(self) {
        self.close_keeping_records().await;
    }

    /// Stops the mesh, handing back its data directory (the audit's keys) and
    /// the gateway's database, to read what it recorded.
    async fn close_keeping_records(self) -> (tempfile::TempDir, adminduk_kit::storage::Db) {
        let db = self.mesh.gateway_db.clone();
        self.mesh.shutdown().await.expect("stops");
        assert_no_nik_logged();
        (self.dir, db)
    }

    /// A TLS channel to the gateway, with a client certificate or without.
    fn channel(&self, identity: Option<(&Path, &Path)>) -> Channel {
        adminduk::resident::gateway_channel(&self.mesh, identity).expect("a channel")
    }

    fn anonymous(&self) -> Channel {
        self.channel(None)
    }

    fn office(&self) -> Channel {
        let c = &self.mesh.certs;
        self.channel(Some((&c.office_cert, &c.office_key)))
    }

    fn agency(&self) -> Channel {
        let c = &self.mesh.certs;
        self.channel(Some((&c.agency_cert, &c.agency_key)))
    }

    fn admin(&self) -> Channel {
        let c = &self.mesh.certs;
        self.channel(Some((&c.admin_cert, &c.admin_key)))
    }

    /// A synthetic resident who can activate IKD and has not.
    async fn resident_without_ikd(&self, skip: usize) -> String {
        let people = self.mesh.population.service();
        let identities = self.mesh.ikd.service();
        let mut found = Vec::new();
        for nik in people
            .eligible_niks(adminduk_kit::time::today_wib(), 300)
            .await
            .expect("eligible")
        {
            if identities.identity(&nik).await.expect("identity").is_none() {
                found.push(nik);
            }
        }
        found
            .into_iter()
            .nth(skip)
            .expect("an eligible resident without IKD")
    }

    /// The `skip`-th eligible resident of another family than `nik`'s.
    async fn outside_the_family_of(&self, nik: &str, skip: usize) -> String {
        let mut office = PopulationServiceClient::new(self.office());
        let mut kk_of = async |nik: &str| {
            office
                .get_resident(population::GetResidentRequest { nik: nik.to_owned() })
                .await
                .expect("the office reads")
                .into_inner()
                .resident
                .expect("resident")
                .kk
        };
        let family = kk_of(nik).await;
        let mut found = Vec::new();
        for candidate in self
            .mesh
            .population
            .service()
            .eligible_niks(adminduk_kit::time::today_wib(), 300)
            .await
            .expect("eligible")
        {
            if kk_of(&candidate).await != family {
                found.push(candidate);
                if found.len() > skip {
                    break;
                }
            }
        }
        found.into_iter().nth(skip).expect("a resident of another family")
    }
}

/// Every log line and span of this test process, as text (debug level).
static LOGS: std::sync::OnceLock<std::sync::Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();

#[derive(Clone)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures the logs and spans (their fields, as each span opens) of every
/// test here, for [`assert_no_nik_logged`].
fn capture_logs() {
    let logs = LOGS.get_or_init(|| {
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = Captured(logs.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,h2=info,hyper=info,hyper_util=info,tower=info,sqlx=warn,rustls=info",
            ))
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::NEW)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        logs
    });
    let _ = logs;
}

/// No log line or span captured so far holds a whole NIK: every synthetic
/// resident and every NIK these tests name is of Kota Bekasi (3275...), so
/// any run of 16 digits beginning 3275 is one.
fn assert_no_nik_logged() {
    let Some(logs) = LOGS.get() else {
        return;
    };
    let text = String::from_utf8_lossy(&logs.lock().expect("logs")).into_owned();
    assert!(text.contains("listening"), "the logs are captured");
    for line in text.lines() {
        let mut run = String::new();
        for c in line.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_digit() {
                run.push(c);
                continue;
            }
            assert!(
                !(run.len() == 16 && run.starts_with("3275")),
                "a whole NIK in a log line: {}",
                line.replace(&run, &adminduk_kit::mask_nik(&run))
            );
            run.clear();
        }
    }
}

fn reason(status: &Status) -> String {
    adminduk_kit::error::reason_of(status)
}

#[track_caller]
fn refused<T: std::fmt::Debug>(answer: Result<T, Status>, code: Code, why: &str) -> Status {
    let status = answer.expect_err("refused");
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (code, why),
        "{}",
        status.message()
    );
    status
}

fn device_key() -> Ed25519KeyPair {
    adminduk::resident::device_key().expect("a key")
}

fn nonce_of(started: &ikd::StartActivationResponse) -> String {
    adminduk::resident::nonce_of(started)
}

/// A phone's activation through the gateway: started anonymously, checked face
/// to face by the office device, completed with the mailed code; then a token.
async fn activate(door: &Door, nik: &str, key: &Ed25519KeyPair) -> String {
    adminduk::resident::activate(&door.mesh, nik, key)
        .await
        .expect("activated")
}

/// A request carrying a resident's session token.
fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header value"),
    );
    request
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stranger_cannot_take_over_a_residents_ikd() {
    let door = Door::open().await;
    let victim = door.resident_without_ikd(0).await;
    let stranger_key = device_key();
    // Anyone may start an activation with any NIK: it is checked face to face next.
    let started = IkdServiceClient::new(door.anonymous())
        .start_activation(ikd::StartActivationRequest {
            nik: victim.clone(),
            email: "stranger@example.com".into(),
            phone: "081200000000".into(),
            device_public_key: stranger_key.public_key().as_ref().to_vec(),
        })
        .await
        .expect("started")
        .into_inner();
    let scan = || ikd::VerifyAtOfficeRequest {
        activation_id: started.activation_id.clone(),
        nonce: nonce_of(&started),
        officer_id: "petugas-palsu".into(),
        service_point_code: "3275-KEC-01".into(),
    };
    // The face check is an office's: without a certificate, or with another kind, no.
    refused(
        IkdServiceClient::new(door.anonymous())
            .verify_at_office(scan())
            .await,
        Code::Unauthenticated,
        "CREDENTIAL_REQUIRED",
    );
    refused(
        IkdServiceClient::new(door.agency())
            .verify_at_office(scan())
            .await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    refused(
        IkdServiceClient::new(door.admin()).verify_at_office(scan()).await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    // Nothing reached the IKD service: no code was mailed, and the victim has no identity.
    let outbox = door.mesh.ikd.service().outbox(10).await.expect("outbox");
    assert!(outbox.is_empty(), "no activation code was sent");
    let status = IkdServiceClient::new(door.office())
        .get_status(ikd::GetStatusRequest { nik: victim })
        .await
        .expect("the office reads the status")
        .into_inner();
    assert_eq!(status.status, ikd::IdentityStatus::Pending as i32);
    door.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resident_activates_then_reads_only_their_own_record_until_the_device_is_revoked() {
    let door = Door::open().await;
    let nik = door.resident_without_ikd(1).await;
    let other = door.resident_without_ikd(2).await;
    let mut anonymous = PopulationServiceClient::new(door.anonymous());
    refused(
        anonymous
            .get_resident(population::GetResidentRequest { nik: nik.clone() })
            .await,
        Code::Unauthenticated,
        "CREDENTIAL_REQUIRED",
    );
    let key = device_key();
    let token = activate(&door, &nik, &key).await;

    // The office's scan was recorded with the certificate's point and device.
    let pool = door.mesh.ikd.service().db().pool();
    let (officer, point): (String, String) =
        sqlx::query_as("SELECT officer_id, service_point_code FROM activations WHERE nik = $1")
            .bind(&nik)
            .fetch_one(pool)
            .await
            .expect("the activation");
    assert_eq!((officer.as_str(), point.as_str()), ("counter-01", "3275-KEC-01"));

    let mut people = PopulationServiceClient::new(door.anonymous());
    let own = people
        .get_resident(with_token(
            population::GetResidentRequest { nik: nik.clone() },
            &token,
        ))
        .await
        .expect("a resident reads their own record")
        .into_inner()
        .resident
        .expect("resident");
    assert_eq!(own.nik, nik);
    // Asked again: the cached token is still checked against revocations below.
    people
        .get_resident(with_token(
            population::GetResidentRequest { nik: nik.clone() },
            &token,
        ))
        .await
        .expect("again");
    let status = refused(
        people
            .get_resident(with_token(population::GetResidentRequest { nik: other }, &token))
            .await,
        Code::PermissionDenied,
        "OUT_OF_SCOPE",
    );
    assert_eq!(metadata_of(&status, "field").as_deref(), Some("nik"));
    people
        .get_family(with_token(
            population::GetFamilyRequest { kk: own.kk.clone() },
            &token,
        ))
        .await
        .expect("and their own family card");
    refused(
        people
            .search_residents(with_token(
                population::SearchResidentsRequest {
                    district_code: "327501".into(),
                    name_query: "an".into(),
                    page_size: 5,
                    page_token: String::new(),
                },
                &token,
            ))
            .await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    // Public facts: the stock.
    InventoryServiceClient::new(door.anonymous())
        .get_stock(with_token(
            inventory::GetStockRequest {
                region_code: "3275".into(),
            },
            &token,
        ))
        .await
        .expect("stock is public to a signed-in resident");

    // A forged or malformed token is refused before any backend.
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    let oversized = "x".repeat(5_000);
    for bad in [forged.as_str(), "not-a-token", "a.b.c", oversized.as_str()] {
        refused(
            people
                .get_resident(with_token(
                    population::GetResidentRequest { nik: nik.clone() },
                    bad,
                ))
                .await,
            Code::Unauthenticated,
            "TOKEN_INVALID",
        );
    }

    // Revoked at an office: the token ends at once, though it has not expired.
    IkdServiceClient::new(door.office())
        .revoke(ikd::RevokeRequest {
            nik: nik.clone(),
            reason: "ponsel hilang".into(),
            officer_id: String::new(),
            service_point_code: String::new(),
        })
        .await
        .expect("the office revokes");
    refused(
        people
            .get_resident(with_token(population::GetResidentRequest { nik }, &token))
            .await,
        Code::Unauthenticated,
        "DEVICE_REVOKED",
    );
    door.close().await;
}

const SUBMIT: &str = "/adminduk.printing.v1.PrintingService/SubmitPrintJob";

/// A request with a session token and a proof signed by `key` for `method`.
fn with_proof<T>(message: T, token: &str, key: &Ed25519KeyPair, method: &str, id: &str) -> tonic::Request<T> {
    let mut request = with_token(message, token);
    let proof = adminduk::resident::proof(key, method, id, token);
    request.metadata_mut().insert(
        adminduk_kit::proof::PROOF_HEADER,
        proof.parse().expect("header value"),
    );
    request
}

/// The phone's first-card application for `nik`, with `token` and a proof
/// signed by `key` for request `id`; returns the job.
async fn apply_with_proof(
    printing: &mut PrintingServiceClient<Channel>,
    nik: &str,
    token: &str,
    key: &Ed25519KeyPair,
    id: &str,
) -> Result<printing::PrintJob, Status> {
    printing
        .submit_print_job(with_proof(application(nik), token, key, SUBMIT, id))
        .await
        .map(|r| r.into_inner().job.expect("job"))
}

/// Asserts that `answer` is not a refusal as a suspected broker.
fn assert_not_broker_suspected<T: std::fmt::Debug>(answer: &Result<T, Status>) {
    assert!(
        answer
            .as_ref()
            .err()
            .is_none_or(|s| reason(s) != "BROKER_SUSPECTED"),
        "{answer:?}"
    );
}

fn application(nik: &str) -> printing::SubmitPrintJobRequest {
    printing::SubmitPrintJobRequest {
        nik: nik.to_owned(),
        reason: printing::PrintReason::FirstCard as i32,
        service_point_code: "3275-KEC-01".into(),
        date: Some(adminduk_proto::convert::date(
            adminduk_kit::time::today_wib() + chrono::Days::new(1),
        )),
        // Not believed: the gateway asks IKD.
        has_active_ikd: false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collected_token_applies_for_no_one_without_the_phones_key() {
    let door = Door::open().await;
    let nik = door.resident_without_ikd(4).await;
    let key = device_key();
    let token = activate(&door, &nik, &key).await;
    let mut printing = PrintingServiceClient::new(door.anonymous());

    // A broker holding the token alone: no proof, or one signed with his own key.
    refused(
        printing
            .submit_print_job(with_token(application(&nik), &token))
            .await,
        Code::Unauthenticated,
        "PROOF_REQUIRED",
    );
    let broker = device_key();
    refused(
        apply_with_proof(&mut printing, &nik, &token, &broker, "broker-1").await,
        Code::Unauthenticated,
        "PROOF_INVALID",
    );
    // A proof for another method is no proof for this one.
    refused(
        printing
            .submit_print_job(with_proof(
                application(&nik),
                &token,
                &key,
                "/adminduk.printing.v1.PrintingService/IssueSuket",
                "other-method-1",
            ))
            .await,
        Code::Unauthenticated,
        "PROOF_INVALID",
    );
    // Someone outside the family, even with a good proof: what a broker does.
    let stranger = door.outside_the_family_of(&nik, 0).await;
    let status = refused(
        apply_with_proof(&mut printing, &stranger, &token, &key, "stranger-1").await,
        Code::PermissionDenied,
        "BROKER_SUSPECTED",
    );
    assert_eq!(metadata_of(&status, "blocked").as_deref(), Some("false"));
    // The phone itself: applied, and IKD is active as the gateway found.
    let job = apply_with_proof(&mut printing, &nik, &token, &key, "own-1")
        .await
        .expect("the resident applies from the phone");
    assert_eq!(job.state, printing::JobState::Queued as i32);
    // The same proof again is a replay, refused before the printing service is asked.
    let mut replayed = with_token(application(&nik), &token);
    let first = with_proof(application(&nik), &token, &key, SUBMIT, "own-1");
    let header = first
        .metadata()
        .get(adminduk_kit::proof::PROOF_HEADER)
        .expect("proof")
        .clone();
    replayed
        .metadata_mut()
        .insert(adminduk_kit::proof::PROOF_HEADER, header);
    refused(
        printing.submit_print_job(replayed).await,
        Code::Unauthenticated,
        "PROOF_REPLAYED",
    );
    door.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_account_that_applies_for_strangers_is_blocked_from_applying() {
    brokers_are_blocked_and_cleared(Door::open().await).await;
}

/// The same with the counters in Redis, as every replica shares them (CI runs it).
#[tokio::test(flavor = "multi_thread")]
async fn an_account_that_applies_for_strangers_is_blocked_from_applying_with_redis() {
    let Some(url) = adminduk_kit::testing::redis_url() else {
        return;
    };
    let prefix = format!("gateway-test-{}", uuid_like());
    let cache = adminduk_kit::cache::from_url(Some(&url), &prefix)
        .await
        .expect("redis");
    brokers_are_blocked_and_cleared(Door::open_with(Some(cache)).await).await;
}

/// A key prefix no other run shares.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}-{nanos}", std::process::id())
}

async fn brokers_are_blocked_and_cleared(door: Door) {
    let nik = door.resident_without_ikd(8).await;
    let key = device_key();
    let token = activate(&door, &nik, &key).await;
    let mut printing = PrintingServiceClient::new(door.anonymous());
    for (k, blocked) in [(0, "false"), (1, "false"), (2, "true")] {
        let stranger = door.outside_the_family_of(&nik, k).await;
        let status = refused(
            apply_with_proof(&mut printing, &stranger, &token, &key, &format!("s-{k}")).await,
            Code::PermissionDenied,
            "BROKER_SUSPECTED",
        );
        assert_eq!(
            metadata_of(&status, "refusals").as_deref(),
            Some((k + 1).to_string().as_str())
        );
        assert_eq!(metadata_of(&status, "blocked").as_deref(), Some(blocked));
    }
    // Blocked: not even for the resident themselves, until the day has passed.
    let status = refused(
        apply_with_proof(&mut printing, &nik, &token, &key, "own-after").await,
        Code::PermissionDenied,
        "BROKER_SUSPECTED",
    );
    assert_eq!(metadata_of(&status, "blocked").as_deref(), Some("true"));
    // Reading their own record is not applying: still answered.
    PopulationServiceClient::new(door.anonymous())
        .get_resident(with_token(
            population::GetResidentRequest { nik: nik.clone() },
            &token,
        ))
        .await
        .expect("reads stay open");
    // Nothing reached printing for any of them.
    let backlog = PrintingServiceClient::new(door.office())
        .get_backlog(printing::GetBacklogRequest {
            region_code: "3275".into(),
        })
        .await
        .expect("backlog")
        .into_inner();
    let waiting: i64 = backlog.waiting.iter().map(|w| w.waiting).sum();
    assert_eq!(waiting, 0, "{backlog:?}");

    // An office sees the flag, masked, and clears it with a reason; the resident applies again.
    let mut watch = BrokerWatchServiceClient::new(door.office());
    let flagged = watch
        .list_flagged_accounts(gateway::ListFlaggedAccountsRequest { page_size: 0 })
        .await
        .expect("offices list flags")
        .into_inner()
        .accounts;
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    let account = flagged[0].account.clone();
    assert_eq!(flagged[0].nik_masked, adminduk_kit::mask_nik(&nik));
    assert_eq!(flagged[0].refusals, 3);
    refused(
        BrokerWatchServiceClient::new(door.agency())
            .list_flagged_accounts(gateway::ListFlaggedAccountsRequest { page_size: 0 })
            .await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    let clear = |reason: &str| gateway::ClearFlaggedAccountRequest {
        account: account.clone(),
        reason: reason.to_owned(),
    };
    refused(
        watch.clear_flagged_account(clear("ok")).await,
        Code::InvalidArgument,
        "",
    );
    let cleared = watch
        .clear_flagged_account(clear("came to the counter with the family card"))
        .await
        .expect("cleared")
        .into_inner();
    assert!(
        cleared.cleared_by.starts_with("adminduk://office/"),
        "{cleared:?}"
    );
    refused(
        watch
            .clear_flagged_account(clear("came to the counter with the family card"))
            .await,
        Code::NotFound,
        "ACCOUNT_NOT_FLAGGED",
    );
    let after = apply_with_proof(&mut printing, &nik, &token, &key, "own-cleared").await;
    assert_not_broker_suspected(&after);
    door.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agency_verifies_within_its_agreement_and_every_read_is_in_the_audit_chain() {
    let door = Door::open().await;
    let nik = door.resident_without_ikd(5).await;
    let mut admin = AgencyServiceClient::new(door.admin());
    let mut own = AgencyServiceClient::new(door.agency());
    let mut verify = PopulationServiceClient::new(door.agency());
    let agreement = |status: gateway::AgreementStatus| gateway::SetAgreementRequest {
        agency_code: "demo-bank".into(),
        name: "Bank Contoh".into(),
        allowed_fields: vec![gateway::VerificationField::FullName as i32],
        daily_quota: 2,
        status: status as i32,
        fee_exempt: false,
        reason: "PKS renewed for names only".into(),
    };
    admin
        .set_agreement(agreement(gateway::AgreementStatus::Active))
        .await
        .expect("an administrator writes agreements");
    let by_name = || population::VerifyIdentityRequest {
        nik: nik.clone(),
        full_name: Some("Nama Yang Salah".into()),
        ..Default::default()
    };
    let answer = verify
        .verify_identity(by_name())
        .await
        .expect("verified")
        .into_inner();
    assert_eq!(
        answer.full_name,
        population::FieldMatch::NoMatch as i32,
        "the stored name is never shown, only whether it matches"
    );
    let status = refused(
        verify
            .verify_identity(population::VerifyIdentityRequest {
                birth_date: Some(adminduk_proto::convert::date(
                    chrono::NaiveDate::from_ymd_opt(1990, 1, 1).expect("date"),
                )),
                ..by_name()
            })
            .await,
        Code::PermissionDenied,
        "FIELD_NOT_AGREED",
    );
    assert_eq!(metadata_of(&status, "fields").as_deref(), Some("birth_date"));
    // A request the population service refuses as malformed is no check: not
    // billed, not counted against the quota (the next is still the second of two).
    let malformed = verify
        .verify_identity(population::VerifyIdentityRequest {
            nik: "123".into(),
            ..by_name()
        })
        .await
        .expect_err("not a NIK");
    assert_eq!(malformed.code(), Code::InvalidArgument, "{malformed:?}");
    verify
        .verify_identity(by_name())
        .await
        .expect("the second of two");
    let status = refused(
        verify.verify_identity(by_name()).await,
        Code::ResourceExhausted,
        "AGENCY_QUOTA_EXHAUSTED",
    );
    assert!(status.get_details_retry_info().is_some(), "{status:?}");

    // The agency reads its own usage and statement, and no one else's.
    let usage = own
        .get_usage(gateway::GetUsageRequest::default())
        .await
        .expect("own usage")
        .into_inner();
    assert_eq!((usage.checks, usage.remaining, usage.daily_quota), (2, 0, 2));
    let today = adminduk_kit::time::today_wib();
    let statement = own
        .get_statement(gateway::GetStatementRequest {
            agency_code: String::new(),
            year: chrono::Datelike::year(&today),
            month: chrono::Datelike::month(&today) as i32,
        })
        .await
        .expect("own statement")
        .into_inner();
    assert_eq!(
        (
            statement.checks,
            statement.fee_per_check_rupiah,
            statement.amount_rupiah
        ),
        (
            2,
            adminduk_gateway::FEE_PER_CHECK_RUPIAH,
            2 * adminduk_gateway::FEE_PER_CHECK_RUPIAH
        )
    );
    refused(
        own.get_usage(gateway::GetUsageRequest {
            agency_code: "other-bank".into(),
        })
        .await,
        Code::PermissionDenied,
        "OUT_OF_SCOPE",
    );
    refused(
        own.set_agreement(agreement(gateway::AgreementStatus::Active))
            .await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    refused(
        AgencyServiceClient::new(door.office())
            .get_usage(gateway::GetUsageRequest::default())
            .await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    refused(
        admin
            .get_agreement(gateway::GetAgreementRequest {
                agency_code: "nobody".into(),
            })
            .await,
        Code::NotFound,
        "AGENCY_UNKNOWN",
    );

    // Suspended, then revoked for good.
    admin
        .set_agreement(agreement(gateway::AgreementStatus::Suspended))
        .await
        .expect("suspended");
    refused(
        verify.verify_identity(by_name()).await,
        Code::PermissionDenied,
        "AGENCY_SUSPENDED",
    );
    admin
        .set_agreement(agreement(gateway::AgreementStatus::Revoked))
        .await
        .expect("revoked");
    refused(
        verify.verify_identity(by_name()).await,
        Code::PermissionDenied,
        "AGENCY_REVOKED",
    );
    refused(
        admin
            .set_agreement(agreement(gateway::AgreementStatus::Active))
            .await,
        Code::FailedPrecondition,
        "AGREEMENT_REVOKED",
    );

    // Stopped, the gateway has written and signed every row: the chain is whole,
    // the resident's rows are found by the keyed reference, and none holds the NIK.
    let (dir, db) = door.close_keeping_records().await;
    let keys = adminduk::mesh::data_dir_audit_keys(dir.path()).expect("keys");
    let report =
        adminduk_gateway::audit::verify(&db, &keys, "gateway", Duration::from_secs(60), chrono::Utc::now())
            .await
            .expect("verify");
    assert_eq!(report.broken, None, "{report:?}");
    assert_eq!(
        report.signed_through, report.rows,
        "the head is signed at the stop"
    );
    let rows = adminduk_gateway::audit::search_nik(&db, &keys, &nik, 100)
        .await
        .expect("search");
    let verifications: Vec<&str> = rows
        .iter()
        .filter(|r| r.method.ends_with("/VerifyIdentity"))
        .map(|r| r.outcome.as_str())
        .collect();
    assert_eq!(
        verifications,
        [
            "OK",
            "PERMISSION_DENIED:FIELD_NOT_AGREED",
            "OK",
            "RESOURCE_EXHAUSTED:AGENCY_QUOTA_EXHAUSTED",
            "PERMISSION_DENIED:AGENCY_SUSPENDED",
            "PERMISSION_DENIED:AGENCY_REVOKED"
        ]
    );
    assert!(
        rows.iter()
            .all(|r| r.principal == "adminduk://agency/demo-bank" || r.method.contains("Population"))
    );
    let every = adminduk_gateway::audit::rows(&db, "gateway", 0, 10_000)
        .await
        .expect("rows");
    assert!(every.len() >= rows.len());
    for row in &every {
        assert!(!format!("{row:?}").contains(&nik), "{row:?}");
    }
    db.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_office_applies_at_its_own_point_and_an_agency_only_verifies() {
    let door = Door::open().await;
    let nik = door.resident_without_ikd(3).await;
    let tomorrow = adminduk_kit::time::today_wib() + chrono::Days::new(1);
    let at_counter = || printing::SubmitPrintJobRequest {
        nik: nik.clone(),
        reason: printing::PrintReason::FirstCard as i32,
        service_point_code: "3275-KEC-02".into(),
        date: Some(adminduk_proto::convert::date(tomorrow)),
        // Not believed: the gateway asks IKD.
        has_active_ikd: true,
    };
    let mut counter = PrintingServiceClient::new(door.office());
    // IKD first: the resident has none, so the office is told to activate it first.
    let status = refused(
        counter.submit_print_job(at_counter()).await,
        Code::FailedPrecondition,
        "IKD_ACTIVATION_REQUIRED",
    );
    assert!(metadata_of(&status, "how").is_some_and(|how| how.contains("VerifyAtOffice")));
    // An office may go on for a resident who cannot, saying why, in words.
    let overridden = |reason: &str| {
        let mut request = tonic::Request::new(at_counter());
        request
            .metadata_mut()
            .insert(adminduk_gateway::OVERRIDE_HEADER, reason.parse().expect("header"));
        request
    };
    let status = counter
        .submit_print_job(overridden("no"))
        .await
        .expect_err("a reason is words");
    assert_eq!(status.code(), Code::InvalidArgument);
    let job = counter
        .submit_print_job(overridden("lansia, tidak punya ponsel pintar"))
        .await
        .expect("the office applies for the resident, with its reason")
        .into_inner()
        .job
        .expect("job");
    assert_eq!(
        job.service_point_code, "3275-KEC-01",
        "the certificate's point, not the request's"
    );

    // A resident's own phone may not lease print jobs; an office may not set quotas.
    refused(
        PrintingServiceClient::new(door.agency())
            .lease_jobs(printing::LeaseJobsRequest {
                printer_id: "p".into(),
                max_jobs: 1,
                lease_seconds: 0,
            })
            .await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    refused(
        InventoryServiceClient::new(door.office())
            .set_quota_policy(inventory::SetQuotaPolicyRequest::default())
            .await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    refused(
        InventoryServiceClient::new(door.anonymous())
            .receive_shipment(inventory::ReceiveShipmentRequest::default())
            .await,
        Code::Unauthenticated,
        "CREDENTIAL_REQUIRED",
    );
    // An administrator reaches the inventory's administration; the backend judges the request.
    let status = InventoryServiceClient::new(door.admin())
        .set_quota_policy(inventory::SetQuotaPolicyRequest::default())
        .await
        .expect_err("an empty policy is not valid");
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    // Who wrote blanks off is the administrator the certificate names, not the request.
    let written = InventoryServiceClient::new(door.admin())
        .record_spoilage(inventory::RecordSpoilageRequest {
            region_code: "3275".into(),
            quantity: 1,
            reason: "dimakan rayap di gudang".into(),
            reference: format!("SP-{}", uuid_like()),
            reported_by: "kepala-dinas-lain".into(),
            reservation_id: String::new(),
        })
        .await
        .expect("written off")
        .into_inner();
    assert_eq!(written.entry.expect("its ledger row").actor, "admin-3275");

    let mut agency = PopulationServiceClient::new(door.agency());
    let verified = agency
        .verify_identity(population::VerifyIdentityRequest {
            nik: nik.clone(),
            ..Default::default()
        })
        .await;
    // Answered by the population service (whatever it makes of the empty fields), not refused at the door.
    if let Err(status) = &verified {
        assert!(
            !matches!(status.code(), Code::Unauthenticated | Code::PermissionDenied),
            "{status:?}"
        );
    }
    refused(
        agency.get_resident(population::GetResidentRequest { nik }).await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    door.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nik_gets_a_handful_of_anonymous_tries_then_waits() {
    let door = Door::open().await;
    let nik = door.resident_without_ikd(6).await;
    let mut phone = IkdServiceClient::new(door.anonymous());
    let challenge = || ikd::CreateTokenChallengeRequest { nik: nik.clone() };
    // The IKD service answers each of the first tries itself: no IKD yet.
    for _ in 0..5 {
        refused(
            phone.create_token_challenge(challenge()).await,
            Code::FailedPrecondition,
            "IKD_NOT_ACTIVE",
        );
    }
    let status = refused(
        phone.create_token_challenge(challenge()).await,
        Code::ResourceExhausted,
        "RATE_LIMITED",
    );
    assert_eq!(metadata_of(&status, "kind").as_deref(), Some("nik"));
    let retry = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("RetryInfo");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(6),
        "{retry:?}"
    );
    // Another NIK has its own tries.
    let other = door.resident_without_ikd(7).await;
    refused(
        phone
            .create_token_challenge(ikd::CreateTokenChallengeRequest { nik: other })
            .await,
        Code::FailedPrecondition,
        "IKD_NOT_ACTIVE",
    );
    door.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn internal_methods_bad_bodies_and_plaintext_are_not_served() {
    let door = Door::open().await;
    let status = refused(
        IkdServiceClient::new(door.admin())
            .resolve_subject(ikd::ResolveSubjectRequest {
                subject: "0".repeat(32),
            })
            .await,
        Code::Unimplemented,
        "METHOD_UNKNOWN",
    );
    assert!(status.message().contains("no such method"));
    refused(
        PopulationServiceClient::new(door.admin())
            .count_residents(population::CountResidentsRequest {
                area_code: "3275".into(),
            })
            .await,
        Code::Unimplemented,
        "METHOD_UNKNOWN",
    );
    // Anyone may parse a NIK; a malformed one is the population service's refusal.
    let mut anonymous = PopulationServiceClient::new(door.anonymous());
    let parsed = anonymous
        .parse_nik(population::ParseNikRequest {
            nik: STRANGER_NIK.into(),
        })
        .await
        .expect("parses")
        .into_inner();
    assert_eq!(parsed.district_name, "Bekasi Timur");
    let status = anonymous
        .parse_nik(population::ParseNikRequest { nik: "32750".into() })
        .await
        .expect_err("too short");
    assert_eq!(status.code(), Code::InvalidArgument);
    // An oversized request is refused at the door.
    let status = anonymous
        .parse_nik(population::ParseNikRequest {
            nik: "9".repeat(100_000),
        })
        .await
        .expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted, "{}", status.message());

    // The health service answers through the door, for each service it serves.
    let mut health = tonic_health::pb::health_client::HealthClient::new(door.anonymous());
    for service in [
        "adminduk.population.v1.PopulationService",
        "adminduk.ikd.v1.IkdService",
    ] {
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(
            answer.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
    // Plaintext is not spoken at the door.
    let plain = PopulationServiceClient::new(
        Endpoint::from_shared(format!("http://{}", door.mesh.gateway.local_addr()))
            .expect("endpoint")
            .timeout(Duration::from_secs(5))
            .connect_lazy(),
    )
    .parse_nik(population::ParseNikRequest {
        nik: STRANGER_NIK.into(),
    })
    .await;
    assert!(plain.is_err(), "no plaintext answer");
    door.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_run_apart_answers_only_the_mesh_and_the_gateway_reaches_it() {
    use adminduk_kit::config::{DatabaseConfig, ServerConfig, TlsConfig, UpstreamTlsConfig};

    let dir = tempfile::tempdir().expect("tempdir");
    let certs = adminduk::certs::generate(
        &dir.path().join("certs"),
        &adminduk::certs::CertOptions::default(),
    )
    .expect("certificates");
    let db = adminduk_kit::storage::Db::connect(
        &DatabaseConfig {
            url: format!("sqlite:{}", dir.path().join("population.db").display()).into(),
            max_connections: 2,
        },
        adminduk_population::SCHEMA,
        adminduk_population::MIGRATIONS,
    )
    .await
    .expect("database");
    let tls = |services_only: bool, optional: bool| TlsConfig {
        cert: certs.service_cert.clone(),
        key: certs.service_key.clone(),
        client_ca: Some(certs.ca_cert.clone()),
        client_certificate_optional: optional,
        services_only,
        check_client_chain_in_service: false,
    };
    let population = adminduk_population::start(
        ServerConfig {
            tls: Some(tls(true, false)),
            ..adminduk_kit::testing::server_config()
        },
        db,
    )
    .await
    .expect("population starts");
    let population_url = format!("https://localhost:{}", population.local_addr().port());
    let mesh_tls = UpstreamTlsConfig {
        ca: certs.ca_cert.clone(),
        cert: certs.service_cert.clone(),
        key: certs.service_key.clone(),
    };
    let channel = |url: &str| adminduk_kit::upstream::channel_to(url, Some(&mesh_tls)).expect("channel");
    // The other services are not needed for parsing a NIK.
    let nowhere = adminduk_kit::upstream::channel("http://127.0.0.1:9").expect("channel");
    // The inventory is down: a proxy that counts the gateway's attempts answers for it.
    let (dead_inventory, attempts) = counting_proxy("http://127.0.0.1:9").await;
    let gateway = adminduk_gateway::start(
        ServerConfig {
            tls: Some(TlsConfig {
                cert: certs.server_cert.clone(),
                key: certs.server_key.clone(),
                ..tls(false, true)
            }),
            ..adminduk_kit::testing::server_config()
        },
        adminduk_gateway::Upstreams {
            population: channel(&population_url),
            inventory: adminduk_kit::upstream::channel(&format!("http://{dead_inventory}")).expect("channel"),
            printing: nowhere.clone(),
            ikd: nowhere,
        },
        std::sync::Arc::new(adminduk_kit::cache::MemoryCache::new()),
        gateway_records(dir.path(), "gateway").await,
    )
    .await
    .expect("the gateway starts");

    let client_tls = |identity: Option<(&Path, &Path)>| {
        adminduk_kit::tls::client_tls(&certs.ca_cert, "localhost", identity).expect("TLS files")
    };
    let at = |url: String, identity: Option<(&Path, &Path)>| {
        PopulationServiceClient::new(
            Endpoint::from_shared(url)
                .expect("endpoint")
                .tls_config(client_tls(identity))
                .expect("TLS")
                .timeout(Duration::from_secs(10))
                .connect_lazy(),
        )
    };
    let parse = || population::ParseNikRequest {
        nik: STRANGER_NIK.into(),
    };
    // Through the gateway, over mTLS with the service certificate: answered.
    let gateway_url = format!("https://localhost:{}", gateway.local_addr().port());
    let parsed = at(gateway_url, None)
        .parse_nik(parse())
        .await
        .expect("through the gateway");
    assert_eq!(parsed.into_inner().district_name, "Bekasi Timur");
    // Straight to the service: an office's certificate is not the mesh's.
    let office = (certs.office_cert.as_path(), certs.office_key.as_path());
    let status = at(population_url.clone(), Some(office))
        .parse_nik(parse())
        .await
        .expect_err("an office is sent to the gateway");
    assert_eq!(status.code(), Code::PermissionDenied, "{}", status.message());
    // Without a certificate the handshake itself fails.
    assert!(at(population_url.clone(), None).parse_nik(parse()).await.is_err());
    // The mesh's own certificate is answered.
    let service = (certs.service_cert.as_path(), certs.service_key.as_path());
    at(population_url, Some(service))
        .parse_nik(parse())
        .await
        .expect("the mesh calls its services");
    // And the gateway refuses a service certificate as a client's.
    let gateway_url = format!("https://localhost:{}", gateway.local_addr().port());
    refused(
        at(gateway_url.clone(), Some(service)).parse_nik(parse()).await,
        Code::PermissionDenied,
        "CERTIFICATE_UNKNOWN",
    );
    // A backend that is down is UNAVAILABLE within the caller's deadline (a read
    // is tried once more first), not a hang.
    let admin = (certs.admin_cert.as_path(), certs.admin_key.as_path());
    let mut stock = InventoryServiceClient::new(
        Endpoint::from_shared(gateway_url)
            .expect("endpoint")
            .tls_config(client_tls(Some(admin)))
            .expect("TLS")
            .connect_lazy(),
    );
    let started = std::time::Instant::now();
    let mut request = tonic::Request::new(inventory::GetStockRequest {
        region_code: "3275".into(),
    });
    request.set_timeout(Duration::from_secs(2));
    let status = stock.get_stock(request).await.expect_err("the inventory is down");
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let tried = attempts
        .lock()
        .expect("calls")
        .get("/adminduk.inventory.v1.InventoryService/GetStock")
        .copied();
    assert_eq!(tried, Some(2), "a read is tried once more, and only once");
    gateway.shutdown().await.expect("stops");
    population.shutdown().await.expect("stops");
}

/// The records of a gateway started by a test itself: a SQLite file and audit
/// keys in `dir`, appending to `chain`.
async fn gateway_records(dir: &Path, chain: &str) -> adminduk_gateway::Records {
    adminduk_gateway::Records {
        db: adminduk_kit::storage::Db::connect(
            &adminduk_kit::config::DatabaseConfig {
                url: format!("sqlite:{}", dir.join("gateway.db").display()).into(),
                max_connections: 2,
            },
            adminduk_gateway::SCHEMA,
            adminduk_gateway::MIGRATIONS,
        )
        .await
        .expect("the gateway's database"),
        audit_keys: adminduk::mesh::data_dir_audit_keys(dir).expect("audit keys"),
        audit_chain: chain.to_owned(),
        sign_every: Duration::from_secs(60),
        allowances: Default::default(),
    }
}

/// One HTTP/1.1 exchange with the gateway over TLS, as a browser's fetch makes
/// it: the status code, the headers (names lowercased) and the body, de-chunked.
async fn http1(door: &Door, head: &str, body: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&door.mesh.certs.ca_cert).expect("CA file") {
        roots.add(cert.expect("CA")).expect("CA added");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(door.mesh.gateway.local_addr())
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    tls.write_all(head.as_bytes()).await.expect("write");
    tls.write_all(body).await.expect("write");
    let mut raw = Vec::new();
    // The server closes after answering (Connection: close); a TLS close without
    // close_notify is still the end of the answer.
    let _ = tls.read_to_end(&mut raw).await;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head and a body");
    let text = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = text.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut rest = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        let mut out = Vec::new();
        loop {
            let end = rest.windows(2).position(|w| w == b"\r\n").expect("a chunk size");
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&rest[..end]).trim(), 16).expect("hex size");
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[end + 2..end + 2 + size]);
            rest.drain(..end + 2 + size + 2);
        }
        rest = out;
    }
    (status, headers, rest)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_calls_the_gateway_with_grpc_web_and_reads_the_status() {
    use prost::Message as _;

    let door = Door::open().await;
    let path = "/adminduk.population.v1.PopulationService/ParseNik";
    // The preflight: the page's origin may POST with its headers and read the status.
    let (code, headers, _) = http1(
        &door,
        &format!(
            "OPTIONS {path} HTTP/1.1\r\nHost: localhost\r\nOrigin: https://stok.example\r\n\
             Access-Control-Request-Method: POST\r\n\
             Access-Control-Request-Headers: content-type,x-grpc-web,authorization\r\nConnection: close\r\n\r\n"
        ),
        b"",
    )
    .await;
    assert_eq!(code, 200, "{headers:?}");
    assert_eq!(header(&headers, "access-control-allow-origin"), Some("*"));
    assert!(
        header(&headers, "access-control-allow-headers").is_some_and(|h| h.contains("authorization")),
        "{headers:?}"
    );

    // The call: one gRPC-Web frame in, a message frame and a trailer frame out.
    let message = population::ParseNikRequest {
        nik: STRANGER_NIK.into(),
    }
    .encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let request = |path: &str, body: &[u8]| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nOrigin: https://stok.example\r\n\
             Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
    };
    let (code, headers, answer) = http1(&door, &request(path, &body), &body).await;
    assert_eq!(code, 200, "{headers:?}");
    let exposed = header(&headers, "access-control-expose-headers").unwrap_or_default();
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        assert!(exposed.contains(name), "{name} in {exposed:?}");
    }
    assert_eq!(answer[0], 0, "a message frame first");
    let length = u32::from_be_bytes([answer[1], answer[2], answer[3], answer[4]]) as usize;
    let parsed = population::ParseNikResponse::decode(&answer[5..5 + length]).expect("the answer");
    assert_eq!(parsed.district_code, "327501");
    assert_eq!(parsed.sex, adminduk_proto::common::v1::Sex::Female as i32);
    let trailers = &answer[5 + length..];
    assert_eq!(trailers[0], 0x80, "then the trailers");
    assert!(
        String::from_utf8_lossy(&trailers[5..]).contains("grpc-status:0"),
        "{:?}",
        String::from_utf8_lossy(trailers)
    );

    // A refusal reaches the page too: stock without a credential.
    let stock = inventory::GetStockRequest {
        region_code: "3275".into(),
    }
    .encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(stock.len() as u32).to_be_bytes());
    body.extend_from_slice(&stock);
    let path = "/adminduk.inventory.v1.InventoryService/GetStock";
    let (_, headers, answer) = http1(&door, &request(path, &body), &body).await;
    let all = format!("{headers:?} {}", String::from_utf8_lossy(&answer));
    assert!(
        all.contains("grpc-status") && all.contains("16"),
        "UNAUTHENTICATED: {all}"
    );
    assert!(
        header(&headers, "grpc-status-details-bin").is_some() || all.contains("grpc-status-details-bin"),
        "the details travel too: {all}"
    );
    door.close().await;
}

/// A proxy in front of a backend that counts the requests reaching it, by path.
#[derive(Clone)]
struct Counting {
    inner: Channel,
    calls: Calls,
}

impl tonic::server::NamedService for Counting {
    const NAME: &'static str = "adminduk.inventory.v1.InventoryService";
}

impl tower::Service<http::Request<tonic::body::Body>> for Counting {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        *self
            .calls
            .lock()
            .expect("calls")
            .entry(request.uri().path().to_owned())
            .or_default() += 1;
        let channel = self.inner.clone();
        Box::pin(async move {
            Ok(match tower::ServiceExt::oneshot(channel, request).await {
                Ok(response) => response,
                Err(err) => Status::unavailable(err.to_string()).into_http(),
            })
        })
    }
}

/// The requests reaching the inventory, by path.
type Calls = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>;

/// A [`Counting`] proxy on a free port in front of the inventory at `target`.
async fn counting_proxy(target: &str) -> (std::net::SocketAddr, Calls) {
    let calls: Calls = std::sync::Arc::default();
    let proxy = Counting {
        inner: adminduk_kit::upstream::channel(target).expect("channel"),
        calls: calls.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(proxy)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, calls)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_date_is_refused_at_the_edge_without_a_backend_call_until_a_blank_is_free() {
    use adminduk_kit::config::{ServerConfig, TlsConfig};

    let door = Door::open().await;
    let mesh = &door.mesh;
    // A second gateway whose calls to the inventory pass a counting proxy.
    let (proxy_addr, calls) = counting_proxy(&format!("http://{}", mesh.inventory.local_addr())).await;
    let to = |addr: std::net::SocketAddr| {
        adminduk_kit::upstream::channel(&format!("http://{addr}")).expect("channel")
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = adminduk_gateway::start(
        ServerConfig {
            tls: Some(TlsConfig {
                cert: mesh.certs.server_cert.clone(),
                key: mesh.certs.server_key.clone(),
                client_ca: Some(mesh.certs.ca_cert.clone()),
                client_certificate_optional: true,
                services_only: false,
                check_client_chain_in_service: false,
            }),
            ..adminduk_kit::testing::server_config()
        },
        adminduk_gateway::Upstreams {
            population: to(mesh.population.local_addr()),
            inventory: to(proxy_addr),
            printing: to(mesh.printing.local_addr()),
            ikd: to(mesh.ikd.local_addr()),
        },
        std::sync::Arc::new(adminduk_kit::cache::MemoryCache::new()),
        gateway_records(dir.path(), "edge").await,
    )
    .await
    .expect("the second gateway starts");
    let tls = adminduk_kit::tls::client_tls(
        &mesh.certs.ca_cert,
        "localhost",
        Some((&mesh.certs.office_cert, &mesh.certs.office_key)),
    )
    .expect("TLS");
    let office = Endpoint::from_shared(format!("https://localhost:{}", gateway.local_addr().port()))
        .expect("endpoint")
        .tls_config(tls)
        .expect("TLS")
        .connect_lazy();
    let mut counter = InventoryServiceClient::new(office);
    let reserve_calls = || {
        calls
            .lock()
            .expect("calls")
            .get("/adminduk.inventory.v1.InventoryService/Reserve")
            .copied()
            .unwrap_or(0)
    };

    let day = adminduk_kit::time::today_wib() + chrono::Days::new(3);
    let residents = mesh
        .population
        .service()
        .eligible_niks(adminduk_kit::time::today_wib(), 300)
        .await
        .expect("residents");
    let reserve = |nik: &str, key: &str| {
        let mut request = tonic::Request::new(inventory::ReserveRequest {
            service_point_code: "3275-KEC-01".into(),
            date: Some(adminduk_proto::convert::date(day)),
            applicant_nik: nik.to_owned(),
            idempotency_key: key.to_owned(),
            ..Default::default()
        });
        request.metadata_mut().insert(
            adminduk_gateway::OVERRIDE_HEADER,
            "lansia tanpa ponsel pintar".parse().expect("header"),
        );
        request
    };
    // The counter books the point's day until the inventory says it is full.
    let mut held = Vec::new();
    let mut next = residents.iter();
    let full = loop {
        let nik = next.next().expect("enough residents to fill a day");
        match counter.reserve(reserve(nik, &format!("fill-{nik}"))).await {
            Ok(answer) => held.push(answer.into_inner().reservation.expect("reservation").id),
            Err(status) => break status,
        }
    };
    assert_eq!(full.code(), Code::ResourceExhausted, "{full:?}");
    let reason_full = reason(&full);
    let suggested = metadata_of(&full, "next_dates_with_room");
    assert!(!held.is_empty());

    // Now the edge answers: the same refusal, its suggestions, and no call behind it.
    let before = reserve_calls();
    let started = std::time::Instant::now();
    let waiting: Vec<&String> = next.by_ref().take(40).collect();
    for nik in &waiting {
        let status = counter
            .reserve(reserve(nik, &format!("late-{nik}")))
            .await
            .expect_err("the day is full");
        assert_eq!(
            (status.code(), reason(&status)),
            (Code::ResourceExhausted, reason_full.clone())
        );
        assert_eq!(metadata_of(&status, "next_dates_with_room"), suggested);
    }
    let passed = reserve_calls() - before;
    let rechecks = 1 + started.elapsed().as_secs() / adminduk_gateway::edge::RECHECK.as_secs();
    assert!(
        passed as u64 <= rechecks,
        "{passed} of 40 reached the inventory (at most one per recheck, {rechecks})"
    );

    // A counter whose answer was lost retries with its key: it goes on, and gets its blank.
    let first = &residents[0];
    let again = counter
        .reserve(reserve(first, &format!("fill-{first}")))
        .await
        .expect("a retry is answered as the first time")
        .into_inner();
    assert_eq!(again.reservation.map(|r| r.id).as_deref(), Some(held[0].as_str()));

    // A blank given back: the stream says so, and the next applicant reaches the inventory and is granted.
    InventoryServiceClient::new(door.office())
        .release(inventory::ReleaseRequest {
            reservation_id: held[0].clone(),
            service_point_code: "3275-KEC-01".into(),
            reason: "the applicant did not come".into(),
        })
        .await
        .expect("released");
    let granted_to = residents.last().expect("a resident").clone();
    let mut granted = None;
    for attempt in 0..100 {
        match counter
            .reserve(reserve(&granted_to, &format!("after-{attempt}")))
            .await
        {
            Ok(answer) => {
                granted = Some(answer.into_inner());
                break;
            }
            Err(status) => assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(granted.is_some(), "the freed blank is granted within 5 s");
    gateway.shutdown().await.expect("stops");
    door.close().await;
}

/// A Redis server of the test's own, on a free port, to be stopped mid-test;
/// `None` where redis-server is not installed (a failure when services are required).
fn own_redis() -> Option<(std::process::Child, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match child {
        Ok(child) => {
            for _ in 0..100 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some((child, port));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            panic!("redis-server did not start on {port}");
        }
        Err(err) => {
            assert!(
                !adminduk_kit::testing::services_required(),
                "redis-server is required: {err}"
            );
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_redis_gone_the_gateway_keeps_serving_and_lets_no_broker_through() {
    let Some((mut redis, port)) = own_redis() else {
        return;
    };
    let cache = adminduk_kit::cache::from_url(Some(&format!("redis://127.0.0.1:{port}")), "fallback")
        .await
        .expect("redis");
    let door = Door::open_with(Some(cache)).await;
    let broker_nik = door.resident_without_ikd(10).await;
    let broker_key = device_key();
    let broker = activate(&door, &broker_nik, &broker_key).await;
    let other_nik = door.resident_without_ikd(11).await;
    let other_key = device_key();
    let other = activate(&door, &other_nik, &other_key).await;
    let mut printing = PrintingServiceClient::new(door.anonymous());
    for k in 0..3 {
        let stranger = door.outside_the_family_of(&broker_nik, k).await;
        refused(
            apply_with_proof(&mut printing, &stranger, &broker, &broker_key, &format!("b-{k}")).await,
            Code::PermissionDenied,
            "BROKER_SUSPECTED",
        );
    }

    // Redis goes away.
    redis.kill().expect("stop redis");
    redis.wait().expect("redis stopped");

    // Reads go on (rate limits fall back to this replica's, revocations to the IKD service).
    PopulationServiceClient::new(door.anonymous())
        .get_resident(with_token(
            population::GetResidentRequest {
                nik: other_nik.clone(),
            },
            &other,
        ))
        .await
        .expect("a resident still reads their record");
    // The flagged account stays blocked: its flag is on record.
    let status = refused(
        apply_with_proof(&mut printing, &broker_nik, &broker, &broker_key, "b-own").await,
        Code::PermissionDenied,
        "BROKER_SUSPECTED",
    );
    assert_eq!(metadata_of(&status, "blocked").as_deref(), Some("true"));
    // Another account naming a stranger is refused by the population service's word on its family.
    let stranger = door.outside_the_family_of(&other_nik, 0).await;
    refused(
        apply_with_proof(&mut printing, &stranger, &other, &other_key, "o-1").await,
        Code::PermissionDenied,
        "BROKER_SUSPECTED",
    );
    // A replayed proof is still refused (remembered on this replica).
    let first = apply_with_proof(&mut printing, &other_nik, &other, &other_key, "o-own").await;
    assert_not_broker_suspected(&first);
    refused(
        apply_with_proof(&mut printing, &other_nik, &other, &other_key, "o-own").await,
        Code::Unauthenticated,
        "PROOF_REPLAYED",
    );
    // A device revoked while Redis is down: its mark cannot be shared, so the
    // gateway asks the IKD service, and the token is refused.
    IkdServiceClient::new(door.office())
        .revoke(ikd::RevokeRequest {
            nik: other_nik.clone(),
            reason: "ponsel hilang".into(),
            ..Default::default()
        })
        .await
        .expect("revoked at the office");
    refused(
        PopulationServiceClient::new(door.anonymous())
            .get_resident(with_token(
                population::GetResidentRequest {
                    nik: other_nik.clone(),
                },
                &other,
            ))
            .await,
        Code::Unauthenticated,
        "DEVICE_REVOKED",
    );
    // Offices still see the flag.
    let flagged = BrokerWatchServiceClient::new(door.office())
        .list_flagged_accounts(gateway::ListFlaggedAccountsRequest { page_size: 10 })
        .await
        .expect("flags")
        .into_inner()
        .accounts;
    assert_eq!(flagged.len(), 1);
    door.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ikd_first_deflects_the_eligible_exempts_a_child_and_counts_the_activation_that_follows() {
    let door = Door::open().await;
    let mut counter = InventoryServiceClient::new(door.office());
    let day = adminduk_kit::time::today_wib() + chrono::Days::new(2);
    let reserve = |nik: &str, key: &str| inventory::ReserveRequest {
        service_point_code: "3275-KEC-01".into(),
        date: Some(adminduk_proto::convert::date(day)),
        applicant_nik: nik.to_owned(),
        idempotency_key: key.to_owned(),
        ..Default::default()
    };
    let mut reports = ReportServiceClient::new(door.office());
    let report = async |reports: &mut ReportServiceClient<Channel>| {
        reports
            .get_ikd_first_report(gateway::GetIkdFirstReportRequest {})
            .await
            .expect("report")
            .into_inner()
    };

    // Nothing is booked for someone who is no resident, not even with a reason.
    let mut stranger = tonic::Request::new(reserve(STRANGER_NIK, "stranger"));
    stranger.metadata_mut().insert(
        adminduk_gateway::OVERRIDE_HEADER,
        "lansia tanpa ponsel pintar".parse().expect("header"),
    );
    refused(
        counter.reserve(stranger).await,
        Code::NotFound,
        "RESIDENT_NOT_FOUND",
    );

    // An eligible resident without IKD is deflected, told how and where.
    let nik = door.resident_without_ikd(12).await;
    let status = refused(
        counter.reserve(reserve(&nik, "first")).await,
        Code::FailedPrecondition,
        "IKD_ACTIVATION_REQUIRED",
    );
    let nearest = metadata_of(&status, "nearest_offices").expect("the nearest offices");
    assert!(
        nearest.split(',').all(|code| code.starts_with("3275-")) && !nearest.is_empty(),
        "{nearest}"
    );
    let before = report(&mut reports).await;
    assert_eq!(
        (before.window_days, before.deflected, before.activated_after),
        (30, 1, 0)
    );

    // Activated on the phone, the resident books at the counter, and the activation is counted.
    let key = device_key();
    activate(&door, &nik, &key).await;
    let booked = counter.reserve(reserve(&nik, "second")).await;
    assert!(
        booked
            .as_ref()
            .err()
            .is_none_or(|s| reason(s) != "IKD_ACTIVATION_REQUIRED"),
        "{booked:?}"
    );
    let after = report(&mut reports).await;
    assert_eq!((after.deflected, after.activated_after), (1, 1));
    refused(
        ReportServiceClient::new(door.agency())
            .get_ikd_first_report(gateway::GetIkdFirstReportRequest {})
            .await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );

    // A child cannot activate IKD: not deflected, and the exemption is in the audit row.
    let mut search = PopulationServiceClient::new(door.office());
    let born_after = chrono::Datelike::year(&adminduk_kit::time::today_wib()) - 16;
    let mut child = None;
    for district in ["327501", "327502", "327503", "327504", "327505"] {
        let found = search
            .search_residents(population::SearchResidentsRequest {
                district_code: district.into(),
                name_query: "an".into(),
                page_size: 100,
                ..Default::default()
            })
            .await
            .expect("search")
            .into_inner()
            .residents;
        child = found.into_iter().find(|r| {
            r.birth_date.as_ref().is_some_and(|d| d.year > born_after)
                && r.marital_status == population::MaritalStatus::Single as i32
        });
        if child.is_some() {
            break;
        }
    }
    let child = child.expect("a child among the synthetic residents").nik;
    let answer = counter.reserve(reserve(&child, "child")).await;
    assert!(
        answer
            .as_ref()
            .err()
            .is_none_or(|s| reason(s) != "IKD_ACTIVATION_REQUIRED"),
        "{answer:?}"
    );
    assert_eq!(
        report(&mut reports).await.deflected,
        1,
        "an exemption is no deflection"
    );
    let (dir, db) = door.close_keeping_records().await;
    let keys = adminduk::mesh::data_dir_audit_keys(dir.path()).expect("keys");
    let rows = adminduk_gateway::audit::search_nik(&db, &keys, &child, 10)
        .await
        .expect("search");
    assert!(
        rows.iter()
            .any(|r| r.method.ends_with("/Reserve") && r.purpose.contains("ineligible: UNDER_17")),
        "{rows:?}"
    );
    db.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_of_another_ca_is_unauthenticated_before_any_backend() {
    let door = Door::open().await;
    // A whole other PKI, whose office certificate names a real service point.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let other = adminduk::certs::generate(elsewhere.path(), &adminduk::certs::CertOptions::default())
        .expect("another CA's certificates");
    let stranger = door.channel(Some((&other.office_cert, &other.office_key)));
    let status = refused(
        InventoryServiceClient::new(stranger)
            .get_stock(inventory::GetStockRequest {
                region_code: "3275".into(),
            })
            .await,
        Code::Unauthenticated,
        "CERTIFICATE_UNTRUSTED",
    );
    assert!(status.message().contains("CA"), "{}", status.message());
    // The CA's own certificate still names its office.
    InventoryServiceClient::new(door.office())
        .get_stock(inventory::GetStockRequest {
            region_code: "3275".into(),
        })
        .await
        .expect("the office reads the stock");
    door.close().await;
}
