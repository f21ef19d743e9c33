//! IKD through gRPC on real sockets, with the population service running
//! beside it (in-process, as across pods), on SQLite and (when configured)
//! PostgreSQL: the whole flow with a real Ed25519 key, each refusal, replays,
//! forgeries, revocation and racing devices.

use std::sync::Arc;

use adminduk_ikd::grpc::revoked_device_key;
use adminduk_ikd::{MIGRATIONS, SERVICE_NAME, Store};
use adminduk_kit::cache::{MemoryCache, SharedCache};
use adminduk_kit::config::MailConfig;
use adminduk_kit::testing::{self, TestDatabase, day as d};
use adminduk_kit::token::{VerifyingKey, verify};
use adminduk_population::domain::nik::Sex;
use adminduk_proto::ikd::v1 as pb;
use adminduk_proto::population::v1 as population;
use chrono::{Datelike as _, NaiveDate};
use pb::ikd_service_client::IkdServiceClient;
use population::population_service_client::PopulationServiceClient;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

struct Mesh {
    ikd: IkdServiceClient<Channel>,
    people: PopulationServiceClient<Channel>,
    store: Store,
    cache: Arc<dyn SharedCache>,
    ikd_server: adminduk_ikd::Running,
    people_server: adminduk_population::Running,
    label: &'static str,
    _dbs: [TestDatabase; 2],
}

impl Mesh {
    async fn stop(self) {
        self.ikd_server.shutdown().await.expect("clean shutdown");
        self.people_server.shutdown().await.expect("clean shutdown");
    }
}

/// IKD on `db` and the population service it calls on `population_db`, both started and ready.
async fn mesh([db, population_db]: [TestDatabase; 2]) -> Mesh {
    let people_server = adminduk_population::start(
        testing::server_config(),
        population_db.connect(adminduk_population::MIGRATIONS).await,
    )
    .await
    .expect("population starts");
    let people_channel = testing::ready(people_server.local_addr(), adminduk_population::SERVICE_NAME).await;
    // Revocations go through the real Redis when one is configured (always in CI).
    let prefix = format!("test-{}", uuid::Uuid::now_v7());
    let cache: Arc<dyn SharedCache> = match testing::redis_url() {
        Some(url) => adminduk_kit::cache::from_url(Some(&url), &prefix)
            .await
            .expect("redis"),
        None => Arc::new(MemoryCache::new()),
    };
    let ikd_server = adminduk_ikd::start(
        testing::server_config(),
        db.connect(MIGRATIONS).await,
        people_channel.clone(),
        cache.clone(),
        &MailConfig::default(),
    )
    .await
    .expect("ikd starts");
    Mesh {
        ikd: IkdServiceClient::new(testing::ready(ikd_server.local_addr(), SERVICE_NAME).await),
        people: PopulationServiceClient::new(people_channel),
        store: ikd_server.service().clone(),
        cache,
        ikd_server,
        people_server,
        label: db.label,
        _dbs: [db, population_db],
    }
}

async fn each_backend(prefix: &str) -> Vec<Mesh> {
    let mut all = Vec::new();
    for dbs in testing::database_sets(prefix) {
        all.push(mesh(dbs).await);
    }
    all
}

/// Registers a head of family and returns the NIK.
async fn resident(
    m: &mut Mesh,
    serial: u16,
    birth: NaiveDate,
    marital: population::MaritalStatus,
    recording: population::RecordingStatus,
) -> String {
    member(m, serial, serial, birth, marital, recording).await
}

/// Registers a member of the KK numbered `kk_serial` (its head when the KK is
/// new) and returns the NIK.
async fn member(
    m: &mut Mesh,
    serial: u16,
    kk_serial: u16,
    birth: NaiveDate,
    marital: population::MaritalStatus,
    recording: population::RecordingStatus,
) -> String {
    let request = population::RegisterResidentRequest {
        marital_status: marital.into(),
        recording_status: recording.into(),
        ..testing::registration("3275011001", Sex::Male, birth, serial, kk_serial)
    };
    let nik = request.nik.clone();
    m.people
        .register_resident(request)
        .await
        .expect("resident registered");
    nik
}

async fn adult(m: &mut Mesh, serial: u16) -> String {
    resident(
        m,
        serial,
        d(1990, 5, 5),
        population::MaritalStatus::Married,
        population::RecordingStatus::PrintReady,
    )
    .await
}

fn device() -> Ed25519KeyPair {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("pair")
}

fn start(nik: &str, key: &Ed25519KeyPair) -> pb::StartActivationRequest {
    pb::StartActivationRequest {
        nik: nik.into(),
        email: "warga@example.co.id".into(),
        phone: "0812-3456-7890".into(),
        device_public_key: key.public_key().as_ref().to_vec(),
    }
}

fn reason(status: &Status) -> String {
    adminduk_kit::error::reason_of(status)
}

/// Asserts that `status` refuses with `code` and `expected_reason`; `context` says which call.
fn assert_refused(status: &Status, code: Code, expected_reason: &str, context: &str) {
    assert_eq!(
        (status.code(), reason(status)),
        (code, expected_reason.to_owned()),
        "{context}"
    );
}

fn meta(status: &Status, key: &str) -> String {
    adminduk_kit::error::metadata_of(status, key).unwrap_or_default()
}

/// An activation started on the phone: (activation id, QR nonce, challenge).
async fn begin(m: &mut Mesh, nik: &str, key: &Ed25519KeyPair) -> (String, String, Vec<u8>) {
    let started = m
        .ikd
        .start_activation(start(nik, key))
        .await
        .expect("start")
        .into_inner();
    let (id, nonce) = {
        let parts: Vec<&str> = started.qr_payload.split(':').collect();
        assert_eq!(parts.len(), 3, "IKD1:id:nonce");
        assert_eq!(parts[0], "IKD1");
        (parts[1].to_owned(), parts[2].to_owned())
    };
    assert_eq!(id, started.activation_id);
    (id, nonce, started.challenge)
}

/// The scan of an activation's QR code by officer petugas-7 at 3275-KEC-01
/// (override fields with `..` for another officer or point).
fn office_scan(id: &str, nonce: &str) -> pb::VerifyAtOfficeRequest {
    pb::VerifyAtOfficeRequest {
        activation_id: id.into(),
        nonce: nonce.into(),
        officer_id: "petugas-7".into(),
        service_point_code: "3275-KEC-01".into(),
    }
}

/// An officer scans the activation's QR code.
async fn scan(m: &mut Mesh, id: &str, nonce: &str) -> Result<pb::VerifyAtOfficeResponse, Status> {
    m.ikd
        .verify_at_office(office_scan(id, nonce))
        .await
        .map(tonic::Response::into_inner)
}

/// The revocation of `nik` for a lost phone by officer petugas-7 at
/// 3275-KEC-01 (override fields with `..` for another point).
fn revoke_lost_phone(nik: &str) -> pb::RevokeRequest {
    pb::RevokeRequest {
        nik: nik.into(),
        reason: "lost phone".into(),
        officer_id: "petugas-7".into(),
        service_point_code: "3275-KEC-01".into(),
    }
}

/// A fresh challenge for a session token of `nik`.
async fn token_challenge(m: &mut Mesh, nik: &str) -> Result<Vec<u8>, Status> {
    let response = m
        .ikd
        .create_token_challenge(pb::CreateTokenChallengeRequest { nik: nik.into() })
        .await?;
    Ok(response.into_inner().challenge)
}

/// Eight phones start an activation of `nik` at once; every refusal must be
/// ACTIVATION_PENDING. Returns how many starts went through.
async fn race_to_start(m: &Mesh, nik: &str) -> usize {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut client = m.ikd.clone();
        let request = start(nik, &device());
        tasks.push(tokio::spawn(
            async move { client.start_activation(request).await },
        ));
    }
    let mut started = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => started += 1,
            Err(err) => assert_refused(&err, Code::AlreadyExists, "ACTIVATION_PENDING", m.label),
        }
    }
    started
}

/// The phone answers with a code.
async fn complete(
    m: &mut Mesh,
    id: &str,
    code: &str,
    key: &Ed25519KeyPair,
    challenge: &[u8],
) -> Result<pb::CompleteActivationResponse, Status> {
    m.ikd
        .complete_activation(pb::CompleteActivationRequest {
            activation_id: id.into(),
            code: code.into(),
            signature: key.sign(challenge).as_ref().to_vec(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Makes an activation's code expire now.
async fn expire_code(m: &Mesh, id: &str) {
    sqlx::query("UPDATE activations SET code_expires_at = 0 WHERE id = $1")
        .bind(id)
        .execute(m.store.db().pool())
        .await
        .expect("expire the code");
}

/// Starts and verifies at an office; returns (activation id, challenge, code from the outbox).
async fn started_and_verified(m: &mut Mesh, nik: &str, key: &Ed25519KeyPair) -> (String, Vec<u8>, String) {
    let (id, nonce, challenge) = begin(m, nik, key).await;
    scan(m, &id, &nonce).await.expect("verified");
    (id, challenge, last_code(m).await)
}

/// The code in the newest message of the outbox.
async fn last_code(m: &Mesh) -> String {
    let outbox = m.store.outbox(100).await.expect("outbox");
    let body = &outbox.last().expect("a message was queued").body;
    let code: String = body
        .split(':')
        .nth(1)
        .expect("code")
        .trim()
        .chars()
        .take(6)
        .collect();
    assert_eq!(code.len(), 6, "{body}");
    code
}

async fn activate(m: &mut Mesh, nik: &str, key: &Ed25519KeyPair) -> String {
    let (id, challenge, code) = started_and_verified(m, nik, key).await;
    let done = m
        .ikd
        .complete_activation(pb::CompleteActivationRequest {
            activation_id: id,
            code,
            signature: key.sign(&challenge).as_ref().to_vec(),
        })
        .await
        .expect("completed")
        .into_inner();
    assert_eq!(done.status, pb::IdentityStatus::Active as i32);
    done.device_id
}

async fn token(
    m: &mut Mesh,
    nik: &str,
    key: &Ed25519KeyPair,
) -> Result<pb::IssueSessionTokenResponse, Status> {
    let challenge = token_challenge(m, nik).await?;
    m.ikd
        .issue_session_token(pb::IssueSessionTokenRequest {
            nik: nik.into(),
            signature: key.sign(&challenge).as_ref().to_vec(),
            challenge,
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn status(m: &mut Mesh, nik: &str) -> i32 {
    m.ikd
        .get_status(pb::GetStatusRequest { nik: nik.into() })
        .await
        .expect("status")
        .into_inner()
        .status
}

#[tokio::test]
async fn the_whole_flow_from_phone_to_token() {
    for mut m in each_backend("ikdflow").await {
        let label = m.label;
        let nik = adult(&mut m, 1).await;
        let phone = device();
        assert_eq!(
            status(&mut m, &nik).await,
            pb::IdentityStatus::NotActivated as i32
        );
        let (id, challenge, code) = started_and_verified(&mut m, &nik, &phone).await;
        assert_eq!(
            status(&mut m, &nik).await,
            pb::IdentityStatus::Pending as i32,
            "{label}"
        );
        let done = m
            .ikd
            .complete_activation(pb::CompleteActivationRequest {
                activation_id: id.clone(),
                code: code.clone(),
                signature: phone.sign(&challenge).as_ref().to_vec(),
            })
            .await
            .expect("completed")
            .into_inner();
        assert_eq!(
            status(&mut m, &nik).await,
            pb::IdentityStatus::Active as i32,
            "{label}"
        );

        // The code was stored only as a hash: no column of the activation holds it.
        let stored = m.store.activation(&id).await.expect("read").expect("activation");
        assert!(stored.code_hash.as_deref().is_some_and(|h| !h.contains(&code)));

        // A replayed code does nothing.
        let replay = m
            .ikd
            .complete_activation(pb::CompleteActivationRequest {
                activation_id: id,
                code,
                signature: phone.sign(&challenge).as_ref().to_vec(),
            })
            .await
            .expect_err("replayed");
        assert_eq!(reason(&replay), "ACTIVATION_COMPLETED", "{label}");

        let issued = token(&mut m, &nik, &phone).await.expect("token");
        let keys: Vec<VerifyingKey> = m
            .ikd
            .list_signing_keys(pb::ListSigningKeysRequest {})
            .await
            .expect("keys")
            .into_inner()
            .keys
            .into_iter()
            .map(VerifyingKey::from)
            .collect();
        let now = chrono::Utc::now().timestamp();
        let claims = verify(&issued.token, &keys, now, 0).expect("the token verifies offline");
        // The token names the resident by an opaque subject: its payload (only
        // base64) carries no NIK.
        assert_eq!(claims.dev, done.device_id);
        assert_ne!(claims.sub, nik);
        assert!(
            claims.sub.len() == 32 && claims.sub.bytes().all(|b| b.is_ascii_hexdigit()),
            "{}",
            claims.sub
        );
        let payload = issued.token.split('.').nth(1).expect("a JWS payload");
        let payload = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .expect("base64url");
        let payload = String::from_utf8(payload).expect("json");
        assert!(!payload.contains(&nik), "{payload}");
        assert!(claims.exp - now <= 15 * 60 && claims.exp > now);

        // A challenge is single use.
        let challenge = token_challenge(&mut m, &nik).await.expect("challenge");
        let sign = |c: &[u8]| phone.sign(c).as_ref().to_vec();
        let request = pb::IssueSessionTokenRequest {
            nik: nik.clone(),
            challenge: challenge.clone(),
            signature: sign(&challenge),
        };
        m.ikd
            .issue_session_token(request.clone())
            .await
            .expect("first use");
        let again = m.ikd.issue_session_token(request).await.expect_err("second use");
        assert_eq!(reason(&again), "CHALLENGE_INVALID", "{label}");

        // Every attempt is audited, with the NIK masked.
        let trail = m.store.audit_trail(50).await.expect("audit");
        assert!(
            trail
                .iter()
                .any(|(a, o, _)| a == "COMPLETE_ACTIVATION" && o == "OK")
        );
        assert!(
            trail
                .iter()
                .any(|(a, o, _)| a == "COMPLETE_ACTIVATION" && o == "ACTIVATION_COMPLETED")
        );
        assert!(trail.iter().all(|(_, _, n)| !n.contains(&nik[4..12])), "masked");
        m.stop().await;
    }
}

#[tokio::test]
async fn ineligible_residents_are_told_why() {
    for mut m in each_backend("ikdelig").await {
        let label = m.label;
        let today = adminduk_kit::time::today_wib();
        // A son of 16 in his father's KK, his biometrics recorded ahead of his 17th birthday.
        let sixteen = d(today.year() - 16, 1, 1);
        let father = d(1980, 2, 2);
        resident(
            &mut m,
            20,
            father,
            population::MaritalStatus::Married,
            population::RecordingStatus::PrintReady,
        )
        .await;
        let young = member(
            &mut m,
            2,
            20,
            sixteen,
            population::MaritalStatus::Single,
            population::RecordingStatus::Recorded,
        )
        .await;
        let unrecorded = resident(
            &mut m,
            3,
            d(1980, 1, 1),
            population::MaritalStatus::Married,
            population::RecordingStatus::NotRecorded,
        )
        .await;
        let dead = adult(&mut m, 4).await;
        testing::record_death(&mut m.people, &dead, d(2024, 1, 1)).await;
        let nobody = testing::nik_text("327501", d(1991, 1, 1), Sex::Female, 9);
        for (nik, why) in [
            (young, "UNDER_17"),
            (unrecorded, "NOT_RECORDED"),
            (dead, "DECEASED"),
            (nobody, "NOT_FOUND"),
        ] {
            let err = m
                .ikd
                .start_activation(start(&nik, &device()))
                .await
                .expect_err(why);
            assert_eq!(err.code(), Code::FailedPrecondition, "{label} {why}");
            assert_eq!(
                (reason(&err), meta(&err, "why")),
                ("NOT_ELIGIBLE".to_owned(), why.to_owned()),
                "{label}"
            );
        }
        let bad = m
            .ikd
            .start_activation(pb::StartActivationRequest {
                nik: "123".into(),
                email: "not-an-email".into(),
                phone: "12".into(),
                device_public_key: vec![1, 2, 3],
            })
            .await
            .expect_err("bad input");
        assert_eq!(bad.code(), Code::InvalidArgument);
        let fields: Vec<String> = bad
            .get_error_details()
            .bad_request()
            .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
            .unwrap_or_default();
        assert_eq!(fields, ["nik", "email", "phone", "device_public_key"]);
        m.stop().await;
    }
}

#[tokio::test]
async fn wrong_codes_forged_signatures_and_lapsed_codes_are_refused() {
    for mut m in each_backend("ikdcode").await {
        let label = m.label;
        let nik = adult(&mut m, 5).await;
        let phone = device();
        let (id, challenge, code) = started_and_verified(&mut m, &nik, &phone).await;
        let wrong = if code == "000000" { "111111" } else { "000000" };
        let attempt = |code: &str, signature: Vec<u8>| pb::CompleteActivationRequest {
            activation_id: id.clone(),
            code: code.into(),
            signature,
        };
        let signed = phone.sign(&challenge).as_ref().to_vec();

        // A forged signature (another key) is refused and costs no attempt.
        let forged = m
            .ikd
            .complete_activation(attempt(&code, device().sign(&challenge).as_ref().to_vec()))
            .await
            .expect_err("forged");
        assert_refused(&forged, Code::Unauthenticated, "SIGNATURE_INVALID", label);

        for left in (1..=4).rev() {
            let err = m
                .ikd
                .complete_activation(attempt(wrong, signed.clone()))
                .await
                .expect_err("wrong code");
            assert_eq!(reason(&err), "CODE_INVALID", "{label}");
            assert_eq!(meta(&err, "attempts_left"), left.to_string());
        }
        let locked = m
            .ikd
            .complete_activation(attempt(wrong, signed.clone()))
            .await
            .expect_err("fifth");
        assert_eq!(reason(&locked), "TOO_MANY_ATTEMPTS", "{label}");
        let after = m
            .ikd
            .complete_activation(attempt(&code, signed.clone()))
            .await
            .expect_err("locked for good");
        assert_eq!(reason(&after), "TOO_MANY_ATTEMPTS");
        assert_eq!(
            status(&mut m, &nik).await,
            pb::IdentityStatus::NotActivated as i32,
            "{label}: locked is not pending"
        );

        // A lapsed code: start again, verify, and let the code expire.
        let (id2, challenge2, code2) = started_and_verified(&mut m, &nik, &phone).await;
        expire_code(&m, &id2).await;
        let expired = m
            .ikd
            .complete_activation(pb::CompleteActivationRequest {
                activation_id: id2,
                code: code2,
                signature: phone.sign(&challenge2).as_ref().to_vec(),
            })
            .await
            .expect_err("expired");
        assert_eq!(reason(&expired), "CODE_EXPIRED", "{label}");

        let unknown_id = uuid::Uuid::now_v7().to_string();
        let missing = m
            .ikd
            .complete_activation(pb::CompleteActivationRequest {
                activation_id: unknown_id.clone(),
                code: "123456".into(),
                signature: signed,
            })
            .await
            .expect_err("unknown");
        assert_eq!(
            (missing.code(), reason(&missing)),
            (Code::NotFound, "ACTIVATION_NOT_FOUND".to_owned())
        );
        // Issue 10, item 16: the refusal names the activation it refers to.
        let resource = missing
            .get_error_details()
            .resource_info()
            .map(|r| (r.resource_type.clone(), r.resource_name.clone()));
        assert_eq!(
            resource,
            Some(("activation".to_owned(), unknown_id.clone())),
            "{label}"
        );
        m.stop().await;
    }
}

#[tokio::test]
async fn one_device_per_identity_and_revocation_ends_its_tokens() {
    for mut m in each_backend("ikddev").await {
        let label = m.label;
        let nik = adult(&mut m, 6).await;
        let phone = device();
        let device_id = activate(&mut m, &nik, &phone).await;

        let second = m
            .ikd
            .start_activation(start(&nik, &device()))
            .await
            .expect_err("second device");
        assert_refused(&second, Code::FailedPrecondition, "DEVICE_ALREADY_BOUND", label);

        // A token signed by another key is refused.
        let challenge = token_challenge(&mut m, &nik).await.expect("challenge");
        let forged = m
            .ikd
            .issue_session_token(pb::IssueSessionTokenRequest {
                nik: nik.clone(),
                signature: device().sign(&challenge).as_ref().to_vec(),
                challenge,
            })
            .await
            .expect_err("forged");
        assert_eq!(reason(&forged), "SIGNATURE_INVALID", "{label}");

        token(&mut m, &nik, &phone)
            .await
            .expect("a token before revocation");
        m.ikd.revoke(revoke_lost_phone(&nik)).await.expect("revoked");
        assert_eq!(status(&mut m, &nik).await, pb::IdentityStatus::Revoked as i32);
        // The same revocation again is answered as the first was.
        let again = m
            .ikd
            .revoke(revoke_lost_phone(&nik))
            .await
            .expect("a retried revocation")
            .into_inner();
        assert_eq!(again.status, pb::IdentityStatus::Revoked as i32);
        assert!(
            m.cache
                .exists(&revoked_device_key(&device_id))
                .await
                .expect("cache"),
            "gateways see the revocation"
        );
        let after = token(&mut m, &nik, &phone)
            .await
            .expect_err("no token after revocation");
        assert_eq!(reason(&after), "IKD_NOT_ACTIVE", "{label}");

        // Re-activation starts again, on a new phone.
        let new_phone = device();
        let new_device = activate(&mut m, &nik, &new_phone).await;
        assert_ne!(new_device, device_id);
        token(&mut m, &nik, &new_phone)
            .await
            .expect("the new phone gets tokens");
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_devices_racing_to_start_exactly_one_proceeds() {
    for mut m in each_backend("ikdrace").await {
        let label = m.label;
        let nik = adult(&mut m, 7).await;
        let ok = race_to_start(&m, &nik).await;
        assert_eq!(ok, 1, "{label}");
        m.stop().await;
    }
}

#[tokio::test]
async fn adoption_counts_active_identities_against_the_eligible() {
    for mut m in each_backend("ikdadopt").await {
        let label = m.label;
        let mut niks = Vec::new();
        for serial in 10..14 {
            niks.push(adult(&mut m, serial).await);
        }
        activate(&mut m, &niks[0], &device()).await;
        for area in ["327501", "3275"] {
            let a = m
                .ikd
                .get_adoption(pb::GetAdoptionRequest {
                    area_code: area.into(),
                })
                .await
                .expect("adoption")
                .into_inner();
            assert_eq!((a.eligible, a.active), (4, 1), "{label} {area}");
            assert!((a.share - 0.25).abs() < 1e-9);
            assert_eq!((a.gap_to_25_percent, a.gap_to_30_percent), (0, 1));
        }
        let bad = m
            .ikd
            .get_adoption(pb::GetAdoptionRequest {
                area_code: "12".into(),
            })
            .await
            .expect_err("bad");
        assert_eq!(bad.code(), Code::InvalidArgument);
        m.stop().await;
    }
}

/// Issue 10, item 9: once the code expired the resident was stuck until the
/// activation lapsed (three days): VerifyAtOffice answered
/// ACTIVATION_NOT_STARTED and StartActivation ACTIVATION_PENDING. The rule
/// now: an activation holds the NIK while its code works; once the code has
/// expired, a new scan of the same QR code sends a fresh one, or the phone
/// starts over.
#[tokio::test]
async fn an_expired_code_is_sent_afresh_at_the_office_or_the_phone_starts_over() {
    for mut m in each_backend("ikdagain").await {
        let label = m.label;
        let nik = adult(&mut m, 30).await;
        let phone = device();
        let (id, nonce, challenge) = begin(&mut m, &nik, &phone).await;
        scan(&mut m, &id, &nonce).await.expect("verified");
        let first = last_code(&m).await;
        let wrong = if first == "000000" { "111111" } else { "000000" };
        for left in ["4", "3"] {
            let err = complete(&mut m, &id, wrong, &phone, &challenge)
                .await
                .expect_err("wrong");
            assert_eq!(meta(&err, "attempts_left"), left, "{label}");
        }

        // While the code works it is not replaced, and the NIK stays held.
        let live = scan(&mut m, &id, &nonce).await.expect_err("a live code");
        assert_refused(&live, Code::FailedPrecondition, "CODE_ALREADY_SENT", label);
        assert!(!meta(&live, "code_expire_time").is_empty());
        let held = m
            .ikd
            .start_activation(start(&nik, &device()))
            .await
            .expect_err("held");
        assert_eq!(reason(&held), "ACTIVATION_PENDING", "{label}");

        expire_code(&m, &id).await;
        let expired = complete(&mut m, &id, &first, &phone, &challenge)
            .await
            .expect_err("expired");
        assert_refused(&expired, Code::FailedPrecondition, "CODE_EXPIRED", label);
        assert!(
            expired.message().contains("scan this activation's QR code again"),
            "{}",
            expired.message()
        );
        assert_eq!(
            status(&mut m, &nik).await,
            pb::IdentityStatus::Pending as i32,
            "{label}"
        );

        // The office scans the same QR code again: a fresh code, and fresh attempts.
        scan(&mut m, &id, &nonce).await.expect("a new code");
        let second = last_code(&m).await;
        let stale = if second == first { wrong } else { first.as_str() };
        let err = complete(&mut m, &id, stale, &phone, &challenge)
            .await
            .expect_err("the old code");
        assert_eq!(
            (reason(&err), meta(&err, "attempts_left")),
            ("CODE_INVALID".to_owned(), "4".to_owned()),
            "{label}"
        );
        let done = complete(&mut m, &id, &second, &phone, &challenge)
            .await
            .expect("the new code works");
        assert_eq!(done.status, pb::IdentityStatus::Active as i32, "{label}");

        // Or the phone starts over: the activation whose code expired closes.
        let other = adult(&mut m, 31).await;
        let (old_id, old_nonce, _) = begin(&mut m, &other, &phone).await;
        scan(&mut m, &old_id, &old_nonce).await.expect("verified");
        expire_code(&m, &old_id).await;
        let new_phone = device();
        let (new_id, new_nonce, new_challenge) = begin(&mut m, &other, &new_phone).await;
        assert_ne!(new_id, old_id);
        let replaced = scan(&mut m, &old_id, &old_nonce).await.expect_err("replaced");
        assert_eq!(reason(&replaced), "ACTIVATION_EXPIRED", "{label}");
        scan(&mut m, &new_id, &new_nonce).await.expect("verified");
        let code = last_code(&m).await;
        complete(&mut m, &new_id, &code, &new_phone, &new_challenge)
            .await
            .expect("the new activation completes");
        assert_eq!(
            status(&mut m, &other).await,
            pb::IdentityStatus::Active as i32,
            "{label}"
        );
        m.stop().await;
    }
}

/// Issue 10, items 11 and 14: IKD checked only a NIK's digit count (a NIK
/// with day 32 reached population and came back UNAVAILABLE), and free text
/// only for emptiness (a 10 KB officer id was "is required").
#[tokio::test]
async fn niks_and_text_are_checked_as_everywhere_else() {
    for mut m in each_backend("ikdinput").await {
        let label = m.label;
        let day_32 = "3275013201900001";
        let err = m
            .ikd
            .start_activation(start(day_32, &device()))
            .await
            .expect_err("day 32");
        assert_eq!(err.code(), Code::InvalidArgument, "{label}: {err:?}");
        assert_eq!(fields(&err), ["nik"], "{label}");
        assert!(!err.message().contains(day_32), "never the whole NIK");
        let err = m
            .ikd
            .get_status(pb::GetStatusRequest { nik: day_32.into() })
            .await
            .expect_err("day 32");
        assert_eq!(fields(&err), ["nik"], "{label}");
        let err = token_challenge(&mut m, "3275010501900000")
            .await
            .expect_err("serial 0000");
        assert_eq!(fields(&err), ["nik"], "{label}");
        let nik = adult(&mut m, 32).await;
        let err = m
            .ikd
            .revoke(pb::RevokeRequest {
                nik: "3275010501900000".into(),
                reason: "  ".into(),
                officer_id: "x".repeat(10_000),
                service_point_code: "3275\0KEC".into(),
            })
            .await
            .expect_err("four wrong fields");
        assert_eq!(
            fields(&err),
            ["nik", "reason", "officer_id", "service_point_code"],
            "{label}"
        );
        let descriptions: Vec<String> = err
            .get_error_details()
            .bad_request()
            .map(|b| b.field_violations.iter().map(|v| v.description.clone()).collect())
            .unwrap_or_default();
        assert_eq!(
            descriptions[1..],
            [
                "is required",
                "must be at most 64 characters",
                "must not contain control characters"
            ],
            "{label}"
        );

        let mut request = start(&nik, &device());
        request.email = format!("{}@example.co.id", "w".repeat(300));
        request.phone = "0812\n3456 7890".into();
        let err = m.ikd.start_activation(request).await.expect_err("long, broken");
        assert_eq!(fields(&err), ["email", "phone"], "{label}");
        assert!(
            err.message().contains("at most 254 characters"),
            "{}",
            err.message()
        );

        // An officer's id is trimmed, and the scan goes through.
        let phone = device();
        let (id, nonce, _) = begin(&mut m, &nik, &phone).await;
        let long = m
            .ikd
            .verify_at_office(pb::VerifyAtOfficeRequest {
                officer_id: "9".repeat(10_000),
                ..office_scan(&id, &nonce)
            })
            .await
            .expect_err("a 10 KB officer id");
        assert_eq!(fields(&long), ["officer_id"], "{label}");
        assert!(long.message().contains("at most 64 characters"), "{label}");
        m.ikd
            .verify_at_office(pb::VerifyAtOfficeRequest {
                officer_id: " petugas-7 ".into(),
                ..office_scan(&format!(" {id} "), &nonce)
            })
            .await
            .expect("trimmed");
        let err = scan(&mut m, "no-such-activation", "n")
            .await
            .expect_err("unknown");
        assert_eq!(
            err.get_error_details()
                .resource_info()
                .map(|r| (r.resource_type.clone(), r.resource_name.clone())),
            Some(("activation".to_owned(), "no-such-activation".to_owned())),
            "{label}"
        );
        m.stop().await;
    }
}

/// The BadRequest fields of a status, in order.
fn fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// A population service that answers every call with one refusal.
#[derive(Clone)]
struct Refusing(Arc<std::sync::Mutex<fn() -> Status>>);

impl Refusing {
    fn answer(&self) -> Status {
        let make = *self.0.lock().expect("lock");
        make()
    }
}

macro_rules! refuse_all {
    ($($method:ident($request:ident) -> $response:ident;)*) => {
        #[tonic::async_trait]
        impl population::population_service_server::PopulationService for Refusing {
            $(
                async fn $method(
                    &self,
                    _: tonic::Request<population::$request>,
                ) -> Result<tonic::Response<population::$response>, Status> {
                    Err(self.answer())
                }
            )*
        }
    };
}

refuse_all! {
    parse_nik(ParseNikRequest) -> ParseNikResponse;
    get_resident(GetResidentRequest) -> GetResidentResponse;
    get_family(GetFamilyRequest) -> GetFamilyResponse;
    search_residents(SearchResidentsRequest) -> SearchResidentsResponse;
    register_resident(RegisterResidentRequest) -> RegisterResidentResponse;
    update_resident(UpdateResidentRequest) -> UpdateResidentResponse;
    record_death(RecordDeathRequest) -> RecordDeathResponse;
    record_move(RecordMoveRequest) -> RecordMoveResponse;
    verify_identity(VerifyIdentityRequest) -> VerifyIdentityResponse;
    count_residents(CountResidentsRequest) -> CountResidentsResponse;
}

/// Issue 10, item 12: IKD turned every answer of population it did not
/// expect into UNAVAILABLE; what a client can act on now passes through with
/// its details, and only population's own failures are UNAVAILABLE.
#[tokio::test]
async fn population_refusals_pass_through_and_its_failures_are_unavailable() {
    let answer: Arc<std::sync::Mutex<fn() -> Status>> =
        Arc::new(std::sync::Mutex::new(|| Status::internal("unset")));
    // A stand-in for population (a stub, not the service), served by the kit's server as every server is.
    let people = adminduk_kit::server::GrpcServer::new(testing::server_config())
        .add_service(
            population::population_service_server::PopulationServiceServer::new(Refusing(answer.clone())),
        )
        .start()
        .await
        .expect("population starts");
    let db = testing::sqlite();
    let server = adminduk_ikd::start(
        testing::server_config(),
        db.connect(MIGRATIONS).await,
        testing::ready(people.local_addr(), adminduk_population::SERVICE_NAME).await,
        Arc::new(MemoryCache::new()),
        &MailConfig::default(),
    )
    .await
    .expect("ikd starts");
    let mut ikd = IkdServiceClient::new(testing::ready(server.local_addr(), SERVICE_NAME).await);
    let nik = testing::nik_text("327501", d(1990, 5, 5), Sex::Male, 40);

    type Case = (fn() -> Status, Code, &'static str);
    let cases: [Case; 4] = [
        (
            || {
                Status::with_error_details(
                    Code::InvalidArgument,
                    "nik: birth_day is not a valid day",
                    tonic_types::ErrorDetails::with_bad_request_violation(
                        "nik",
                        "birth_day is not a valid day",
                    ),
                )
            },
            Code::InvalidArgument,
            "nik: birth_day is not a valid day",
        ),
        (
            || {
                Status::with_error_details(
                    Code::FailedPrecondition,
                    "the resident is being merged",
                    tonic_types::ErrorDetails::with_error_info(
                        "RECORD_LOCKED",
                        "adminduk.go.id",
                        std::collections::HashMap::new(),
                    ),
                )
            },
            Code::FailedPrecondition,
            "the resident is being merged",
        ),
        (
            || Status::internal("SELECT nik FROM residents"),
            Code::Unavailable,
            "the population service cannot be reached",
        ),
        (
            || Status::unauthenticated("bad client certificate"),
            Code::Unavailable,
            "the population service cannot be reached",
        ),
    ];
    for (make, code, message) in cases {
        *answer.lock().expect("lock") = make;
        let err = ikd
            .start_activation(start(&nik, &device()))
            .await
            .expect_err("refused");
        assert_eq!((err.code(), err.message()), (code, message), "{err:?}");
        let details = err.get_error_details();
        match code {
            Code::InvalidArgument => assert_eq!(fields(&err), ["nik"]),
            Code::FailedPrecondition => assert_eq!(reason(&err), "RECORD_LOCKED"),
            _ => assert!(details.retry_info().is_some(), "a hint of when to retry"),
        }
        let err = ikd
            .get_adoption(pb::GetAdoptionRequest {
                area_code: "3275".into(),
            })
            .await
            .expect_err("refused");
        assert_eq!((err.code(), err.message()), (code, message), "{err:?}");
    }
    // An unknown area never reaches population.
    let err = ikd
        .get_adoption(pb::GetAdoptionRequest {
            area_code: "9999".into(),
        })
        .await
        .expect_err("unknown regency");
    assert_eq!(fields(&err), ["area_code"]);
    server.shutdown().await.expect("clean shutdown");
    people.shutdown().await.expect("clean shutdown");
}

/// Issue 10, item 9, under races: of officers scanning an activation whose
/// code expired, exactly one sends a new code; of phones starting over,
/// exactly one activation proceeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_racing_rescans_and_restarts_after_an_expired_code_exactly_one_proceeds() {
    for mut m in each_backend("ikdagainrace").await {
        let label = m.label;
        let nik = adult(&mut m, 33).await;
        let (id, nonce, _) = begin(&mut m, &nik, &device()).await;
        scan(&mut m, &id, &nonce).await.expect("verified");
        expire_code(&m, &id).await;
        let mails = m.store.outbox(1_000).await.expect("outbox").len();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let mut client = m.ikd.clone();
            let request = office_scan(&id, &nonce);
            tasks.push(tokio::spawn(
                async move { client.verify_at_office(request).await },
            ));
        }
        let mut sent = 0;
        for task in tasks {
            match task.await.expect("task") {
                Ok(_) => sent += 1,
                Err(err) => assert!(
                    matches!(
                        (err.code(), reason(&err).as_str()),
                        (Code::FailedPrecondition, "CODE_ALREADY_SENT")
                            | (Code::Aborted, "ACTIVATION_CHANGED")
                    ),
                    "{label}: {err:?}"
                ),
            }
        }
        assert_eq!(sent, 1, "{label}");
        assert_eq!(
            m.store.outbox(1_000).await.expect("outbox").len(),
            mails + 1,
            "{label}: one new code mailed"
        );

        expire_code(&m, &id).await;
        let started = race_to_start(&m, &nik).await;
        assert_eq!(started, 1, "{label}");
        let open: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM activations WHERE nik = $1 AND state IN ('STARTED', 'VERIFIED')",
        )
        .bind(&nik)
        .fetch_one(m.store.db().pool())
        .await
        .expect("count");
        assert_eq!(open, 1, "{label}");
        m.stop().await;
    }
}

/// R = the identity, S = 0: the constant "signature" that verifies every
/// message for a device key of small order.
fn constant_forgery() -> Vec<u8> {
    let mut signature = vec![0u8; 64];
    signature[0] = 1;
    signature
}

/// A tester's attack: StartActivation with the identity point as the device
/// key (`01 00..00`), then CompleteActivation and IssueSessionToken with the
/// constant signature R = identity, S = 0 went through with no private key;
/// `00..00` and `00..80` were taken as keys too. Now such keys are refused at
/// the start, and a weak key already stored verifies nothing.
#[tokio::test]
async fn device_keys_of_small_order_are_refused_and_verify_nothing_when_stored() {
    for mut m in each_backend("ikdweak").await {
        let label = m.label;
        let nik = adult(&mut m, 50).await;
        let mut identity = vec![0u8; 32];
        identity[0] = 1;
        let mut sign_bit = vec![0u8; 32];
        sign_bit[31] = 0x80;
        let mut not_canonical = vec![0xffu8; 32];
        not_canonical[31] = 0x7f;
        for key in [identity.clone(), vec![0u8; 32], sign_bit, not_canonical] {
            let mut request = start(&nik, &device());
            request.device_public_key = key.clone();
            let err = m.ikd.start_activation(request).await.expect_err("a weak key");
            assert_eq!(err.code(), Code::InvalidArgument, "{label} {key:02x?}: {err:?}");
            assert_eq!(fields(&err), ["device_public_key"], "{label} {key:02x?}");
        }
        assert_eq!(
            status(&mut m, &nik).await,
            pb::IdentityStatus::NotActivated as i32,
            "{label}: nothing was started"
        );

        // A weak key stored before the check: the office verifies the
        // activation, and the forgery still does not complete it.
        let phone = device();
        let (id, nonce, _) = begin(&mut m, &nik, &phone).await;
        sqlx::query("UPDATE activations SET device_public_key = $2 WHERE id = $1")
            .bind(&id)
            .bind(adminduk_kit::hex::encode(&identity))
            .execute(m.store.db().pool())
            .await
            .expect("a weak key stored");
        scan(&mut m, &id, &nonce).await.expect("verified at the office");
        let code = last_code(&m).await;
        let err = m
            .ikd
            .complete_activation(pb::CompleteActivationRequest {
                activation_id: id,
                code,
                signature: constant_forgery(),
            })
            .await
            .expect_err("forged");
        assert_refused(&err, Code::Unauthenticated, "SIGNATURE_INVALID", label);

        // An identity bound to a weak key gets no session token either.
        let other = adult(&mut m, 51).await;
        m.store
            .seed_identity(&other, &identity, "dev-weak", "327501", chrono::Utc::now())
            .await
            .expect("seeded");
        let challenge = token_challenge(&mut m, &other).await.expect("challenge");
        let err = m
            .ikd
            .issue_session_token(pb::IssueSessionTokenRequest {
                nik: other,
                challenge,
                signature: constant_forgery(),
            })
            .await
            .expect_err("forged");
        assert_refused(&err, Code::Unauthenticated, "SIGNATURE_INVALID", label);
        m.stop().await;
    }
}

/// A tester's finding: VerifyAtOffice with `service_point_code: "XYZ"`
/// answered OK and sent a code, and Revoke took any code. A service point's
/// code is now checked for the shape every point has: a regency of the
/// official region list, a hyphen, letters, digits and hyphens, at most 32
/// characters (which points are configured is the inventory's to know).
#[tokio::test]
async fn service_point_codes_must_have_the_shape_of_one() {
    for mut m in each_backend("ikdpoint").await {
        let label = m.label;
        let nik = adult(&mut m, 52).await;
        let phone = device();
        let (id, nonce, _) = begin(&mut m, &nik, &phone).await;
        let mails = m.store.outbox(1_000).await.expect("outbox").len();
        let long = format!("3275-{}", "K".repeat(28));
        for bad in ["XYZ", "9999-KEC-01", "3275-", "3275_KEC_01", long.as_str()] {
            let err = m
                .ikd
                .verify_at_office(pb::VerifyAtOfficeRequest {
                    service_point_code: bad.into(),
                    ..office_scan(&id, &nonce)
                })
                .await
                .expect_err("not a service point");
            assert_eq!(err.code(), Code::InvalidArgument, "{label} {bad}: {err:?}");
            assert_eq!(fields(&err), ["service_point_code"], "{label} {bad}");
        }
        assert_eq!(
            m.store.outbox(1_000).await.expect("outbox").len(),
            mails,
            "{label}: no code was sent"
        );
        scan(&mut m, &id, &nonce).await.expect("a real point verifies");
        let code = last_code(&m).await;
        let challenge = m
            .store
            .activation(&id)
            .await
            .expect("read")
            .expect("activation")
            .challenge;
        complete(&mut m, &id, &code, &phone, &challenge)
            .await
            .expect("active");

        for bad in ["XYZ", "9999-KEC-01", " ", "3275-KEC 01"] {
            let err = m
                .ikd
                .revoke(pb::RevokeRequest {
                    service_point_code: bad.into(),
                    ..revoke_lost_phone(&nik)
                })
                .await
                .expect_err("not a service point");
            assert_eq!(err.code(), Code::InvalidArgument, "{label} {bad:?}: {err:?}");
            assert_eq!(fields(&err), ["service_point_code"], "{label} {bad:?}");
        }
        assert_eq!(
            status(&mut m, &nik).await,
            pb::IdentityStatus::Active as i32,
            "{label}: nothing was revoked"
        );
        m.ikd
            .revoke(pb::RevokeRequest {
                service_point_code: " 3216-DISDUK ".into(),
                ..revoke_lost_phone(&nik)
            })
            .await
            .expect("a point of Kabupaten Bekasi, trimmed");
        assert_eq!(
            status(&mut m, &nik).await,
            pb::IdentityStatus::Revoked as i32,
            "{label}"
        );
        m.stop().await;
    }
}

/// Makes an activation look started `minutes` ago.
async fn started_ago(m: &Mesh, id: &str, minutes: i64) {
    sqlx::query("UPDATE activations SET created_at = created_at - $2 WHERE id = $1")
        .bind(id)
        .bind(minutes * 60_000)
        .execute(m.store.db().pool())
        .await
        .expect("age the activation");
}

/// The instant of an ACTIVATION_PENDING's `start_accepted_time`.
fn start_accepted_time(status: &Status) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(&meta(status, "start_accepted_time"))
        .expect("start_accepted_time")
        .to_utc()
}

/// A tester's finding: StartActivation needs only the NIK, and whoever knew
/// a resident's NIK blocked their activation for three days (the resident's
/// own start answered ACTIVATION_PENDING, with no time and no way out). Now
/// an activation no office has verified holds the NIK for two minutes only:
/// within them the answer says when a start will be accepted (with
/// RetryInfo), after them a new start replaces it, and the replaced one is
/// ACTIVATION_EXPIRED. One verified at an office is held while its code works.
#[tokio::test]
async fn a_start_by_whoever_knows_the_nik_blocks_the_resident_for_minutes_not_days() {
    for mut m in each_backend("ikdsquat").await {
        let label = m.label;
        let nik = adult(&mut m, 53).await;
        let squatter = device();
        let (squat_id, squat_nonce, squat_challenge) = begin(&mut m, &nik, &squatter).await;

        // At once: the resident is told to wait, and for how long.
        let resident = device();
        let before = chrono::Utc::now();
        let held = m
            .ikd
            .start_activation(start(&nik, &resident))
            .await
            .expect_err("held for a moment");
        assert_refused(&held, Code::AlreadyExists, "ACTIVATION_PENDING", label);
        let retry = held
            .get_error_details()
            .retry_info()
            .and_then(|r| r.retry_delay)
            .expect("RetryInfo");
        assert!(
            retry > std::time::Duration::ZERO && retry <= std::time::Duration::from_secs(121),
            "{label}: {retry:?}"
        );
        let accepted = start_accepted_time(&held);
        assert!(
            accepted > before && accepted <= before + chrono::Duration::seconds(121),
            "{label}: {accepted}"
        );
        assert!(held.message().contains("start again in"), "{}", held.message());
        assert!(
            !held.message().contains(&squat_id) && meta(&held, "activation_id").is_empty(),
            "{label}: the squatter's activation is not named"
        );

        // Two minutes later the resident's start replaces it.
        started_ago(&m, &squat_id, 3).await;
        let (id, nonce, challenge) = begin(&mut m, &nik, &resident).await;
        assert_ne!(id, squat_id);
        let replaced = scan(&mut m, &squat_id, &squat_nonce).await.expect_err("replaced");
        assert_refused(&replaced, Code::FailedPrecondition, "ACTIVATION_EXPIRED", label);
        let replaced = complete(&mut m, &squat_id, "123456", &squatter, &squat_challenge)
            .await
            .expect_err("replaced");
        assert_eq!(reason(&replaced), "ACTIVATION_EXPIRED", "{label}");

        // Verified at an office, it is held while its code works, however old.
        let verified = scan(&mut m, &id, &nonce).await.expect("verified");
        let code = last_code(&m).await;
        started_ago(&m, &id, 10).await;
        let held = m
            .ikd
            .start_activation(start(&nik, &device()))
            .await
            .expect_err("a live code holds the NIK");
        assert_refused(&held, Code::AlreadyExists, "ACTIVATION_PENDING", label);
        let code_expires = verified.code_expire_time.expect("code expiry");
        assert!(
            (start_accepted_time(&held).timestamp() - code_expires.seconds).abs() <= 1,
            "{label}: a start is accepted once the code expires"
        );
        assert!(
            held.message().contains("verified at an office"),
            "{}",
            held.message()
        );
        complete(&mut m, &id, &code, &resident, &challenge)
            .await
            .expect("the resident's activation completes");
        assert_eq!(
            status(&mut m, &nik).await,
            pb::IdentityStatus::Active as i32,
            "{label}"
        );
        m.stop().await;
    }
}
