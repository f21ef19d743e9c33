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
        let dir = tempfile::tempdir().expect("tempdir");
        let mesh = adminduk::mesh::start(MeshOptions::on_free_ports(dir.path(), 300))
            .await
            .expect("the mesh starts");
        Door { mesh, dir }
    }

    /// Stops the mesh (the gateway writes its last audit rows and signs the
    /// chain's head) and hands back its data directory.
    async fn close(self) -> tempfile::TempDir {
        self.mesh.shutdown().await.expect("stops");
        self.dir
    }

    /// A TLS channel to the gateway, with a client certificate or without.
    fn channel(&self, identity: Option<(&Path, &Path)>) -> Channel {
        let certs = &self.mesh.certs;
        let tls = adminduk_kit::tls::client_tls(&certs.ca_cert, "localhost", identity).expect("TLS files");
        Endpoint::from_shared(format!(
            "https://localhost:{}",
            self.mesh.gateway.local_addr().port()
        ))
        .expect("endpoint")
        .tls_config(tls)
        .expect("TLS config")
        .timeout(Duration::from_secs(10))
        .connect_lazy()
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
        let people = self.mesh.population.store();
        let identities = self.mesh.ikd.store();
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
            .store()
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

    /// The code of the newest mail in the IKD outbox.
    async fn last_code(&self) -> String {
        let outbox = self.mesh.ikd.store().outbox(100).await.expect("outbox");
        let body = &outbox.last().expect("a code was mailed").body;
        let code: String = body
            .split("Kode aktivasi IKD Anda: ")
            .nth(1)
            .expect("the code")
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        assert_eq!(code.len(), 6, "{body}");
        code
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
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("a key");
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("a key")
}

fn nonce_of(started: &ikd::StartActivationResponse) -> String {
    started
        .qr_payload
        .rsplit(':')
        .next()
        .expect("IKD1:<id>:<nonce>")
        .to_owned()
}

/// A phone's activation through the gateway: started anonymously, checked face
/// to face by the office device, completed with the mailed code; then a token.
async fn activate(door: &Door, nik: &str, key: &Ed25519KeyPair) -> String {
    let mut phone = IkdServiceClient::new(door.anonymous());
    let started = phone
        .start_activation(ikd::StartActivationRequest {
            nik: nik.to_owned(),
            email: "warga@example.com".into(),
            phone: "081234567890".into(),
            device_public_key: key.public_key().as_ref().to_vec(),
        })
        .await
        .expect("anyone may start an activation")
        .into_inner();
    IkdServiceClient::new(door.office())
        .verify_at_office(ikd::VerifyAtOfficeRequest {
            activation_id: started.activation_id.clone(),
            nonce: nonce_of(&started),
            // What the request says of the officer and the point is not believed.
            officer_id: "made-up".into(),
            service_point_code: "3275-KEC-99".into(),
        })
        .await
        .expect("the office verifies");
    let code = door.last_code().await;
    let done = phone
        .complete_activation(ikd::CompleteActivationRequest {
            activation_id: started.activation_id,
            code,
            signature: key.sign(&started.challenge).as_ref().to_vec(),
        })
        .await
        .expect("completed")
        .into_inner();
    assert_eq!(done.status, ikd::IdentityStatus::Active as i32);
    let challenge = phone
        .create_token_challenge(ikd::CreateTokenChallengeRequest { nik: nik.to_owned() })
        .await
        .expect("challenge")
        .into_inner()
        .challenge;
    phone
        .issue_session_token(ikd::IssueSessionTokenRequest {
            nik: nik.to_owned(),
            signature: key.sign(&challenge).as_ref().to_vec(),
            challenge,
        })
        .await
        .expect("token")
        .into_inner()
        .token
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
    let outbox = door.mesh.ikd.store().outbox(10).await.expect("outbox");
    assert!(outbox.is_empty(), "no activation code was sent");
    let status = IkdServiceClient::new(door.office())
        .get_status(ikd::GetStatusRequest { nik: victim })
        .await
        .expect("the office reads the status")
        .into_inner();
    assert_eq!(status.status, ikd::IdentityStatus::Pending as i32);
    door.mesh.shutdown().await.expect("stops");
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
    let pool = door.mesh.ikd.store().db().pool();
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
    for bad in [forged.as_str(), "not-a-token", "a.b.c"] {
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
    door.mesh.shutdown().await.expect("stops");
}

const SUBMIT: &str = "/adminduk.printing.v1.PrintingService/SubmitPrintJob";

/// A request with a session token and a proof signed by `key` for `method`.
fn with_proof<T>(message: T, token: &str, key: &Ed25519KeyPair, method: &str, id: &str) -> tonic::Request<T> {
    let mut request = with_token(message, token);
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms");
    let proof = adminduk_kit::proof::sign(key, method, now_ms, id, token);
    request.metadata_mut().insert(
        adminduk_kit::proof::PROOF_HEADER,
        proof.parse().expect("header value"),
    );
    request
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
        printing
            .submit_print_job(with_proof(application(&nik), &token, &broker, SUBMIT, "broker-1"))
            .await,
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
        printing
            .submit_print_job(with_proof(
                application(&stranger),
                &token,
                &key,
                SUBMIT,
                "stranger-1",
            ))
            .await,
        Code::PermissionDenied,
        "BROKER_SUSPECTED",
    );
    assert_eq!(metadata_of(&status, "blocked").as_deref(), Some("false"));
    // The phone itself: applied, and IKD is active as the gateway found.
    let job = printing
        .submit_print_job(with_proof(application(&nik), &token, &key, SUBMIT, "own-1"))
        .await
        .expect("the resident applies from the phone")
        .into_inner()
        .job
        .expect("job");
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
    door.mesh.shutdown().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_account_that_applies_for_strangers_is_blocked_from_applying() {
    let door = Door::open().await;
    let nik = door.resident_without_ikd(8).await;
    let key = device_key();
    let token = activate(&door, &nik, &key).await;
    let mut printing = PrintingServiceClient::new(door.anonymous());
    for (k, blocked) in [(0, "false"), (1, "false"), (2, "true")] {
        let stranger = door.outside_the_family_of(&nik, k).await;
        let status = refused(
            printing
                .submit_print_job(with_proof(
                    application(&stranger),
                    &token,
                    &key,
                    SUBMIT,
                    &format!("s-{k}"),
                ))
                .await,
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
        printing
            .submit_print_job(with_proof(application(&nik), &token, &key, SUBMIT, "own-after"))
            .await,
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
    let after = printing
        .submit_print_job(with_proof(application(&nik), &token, &key, SUBMIT, "own-cleared"))
        .await;
    assert!(
        after
            .as_ref()
            .err()
            .is_none_or(|s| reason(s) != "BROKER_SUSPECTED"),
        "{after:?}"
    );
    door.mesh.shutdown().await.expect("stops");
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
    let dir = door.close().await;
    let db = adminduk_kit::storage::Db::connect(
        &adminduk_kit::config::DatabaseConfig {
            url: format!("sqlite:{}", dir.path().join("gateway.db").display()).into(),
            max_connections: 1,
        },
        adminduk_gateway::SCHEMA,
        adminduk_gateway::MIGRATIONS,
    )
    .await
    .expect("the gateway's database");
    let keys = adminduk::mesh::data_dir_audit_keys(dir.path()).expect("keys");
    let report = adminduk_gateway::audit::verify(&db, &keys, "gateway")
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
    door.mesh.shutdown().await.expect("stops");
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
    door.mesh.shutdown().await.expect("stops");
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
    door.mesh.shutdown().await.expect("stops");
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
            inventory: nowhere.clone(),
            printing: nowhere.clone(),
            ikd: nowhere,
        },
        std::sync::Arc::new(adminduk_kit::cache::MemoryCache::new()),
        adminduk_gateway::Records {
            db: adminduk_kit::storage::Db::connect(
                &DatabaseConfig {
                    url: format!("sqlite:{}", dir.path().join("gateway.db").display()).into(),
                    max_connections: 2,
                },
                adminduk_gateway::SCHEMA,
                adminduk_gateway::MIGRATIONS,
            )
            .await
            .expect("the gateway's database"),
            audit_keys: adminduk::mesh::data_dir_audit_keys(dir.path()).expect("audit keys"),
            audit_chain: "gateway".to_owned(),
            sign_every: Duration::from_secs(60),
        },
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
        at(gateway_url, Some(service)).parse_nik(parse()).await,
        Code::PermissionDenied,
        "CERTIFICATE_UNKNOWN",
    );
    gateway.shutdown().await.expect("stops");
    population.shutdown().await.expect("stops");
}
