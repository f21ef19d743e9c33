//! A resident's phone against a running mesh, as the tests and the policy
//! bench play it: a device key, an activation through the gateway (started
//! anonymously, checked face to face by the demo office device, completed with
//! the mailed code), a session token, and the proof a change carries.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use tonic::transport::{Channel, Endpoint};

use adminduk_proto::ikd::v1 as ikd;
use ikd::ikd_service_client::IkdServiceClient;

use crate::mesh::Mesh;

/// A fresh Ed25519 device key, as a phone makes one.
pub fn device_key() -> anyhow::Result<Ed25519KeyPair> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 =
        Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| anyhow::anyhow!("no randomness for a key"))?;
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| anyhow::anyhow!("a key that does not read back"))
}

/// A TLS channel to the mesh's gateway, with a client certificate or without.
pub fn gateway_channel(mesh: &Mesh, identity: Option<(&Path, &Path)>) -> anyhow::Result<Channel> {
    let tls = adminduk_kit::tls::client_tls(&mesh.certs.ca_cert, "localhost", identity)?;
    Ok(
        Endpoint::from_shared(format!("https://localhost:{}", mesh.gateway.local_addr().port()))?
            .tls_config(tls)?
            .timeout(Duration::from_secs(10))
            .connect_lazy(),
    )
}

/// The activation code of the newest mail in the IKD outbox.
pub async fn last_code(mesh: &Mesh) -> anyhow::Result<String> {
    let outbox = mesh.ikd.service().outbox(100).await?;
    let body = &outbox.last().context("no code was mailed")?.body;
    let code: String = body
        .split("Kode aktivasi IKD Anda: ")
        .nth(1)
        .context("a mail without a code")?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    anyhow::ensure!(code.len() == 6, "a code of six digits, not {code:?}");
    Ok(code)
}

/// The nonce of an activation's QR payload (`IKD1:<id>:<nonce>`).
pub fn nonce_of(started: &ikd::StartActivationResponse) -> String {
    started
        .qr_payload
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Activates IKD for `nik` on the phone holding `key`, through the gateway,
/// and returns a session token. The office's part is the demo office device's.
pub async fn activate(mesh: &Mesh, nik: &str, key: &Ed25519KeyPair) -> anyhow::Result<String> {
    let mut phone = IkdServiceClient::new(gateway_channel(mesh, None)?);
    let started = phone
        .start_activation(ikd::StartActivationRequest {
            nik: nik.to_owned(),
            email: "warga@example.com".into(),
            phone: "081234567890".into(),
            device_public_key: key.public_key().as_ref().to_vec(),
        })
        .await?
        .into_inner();
    let office = gateway_channel(mesh, Some((&mesh.certs.office_cert, &mesh.certs.office_key)))?;
    IkdServiceClient::new(office)
        .verify_at_office(ikd::VerifyAtOfficeRequest {
            activation_id: started.activation_id.clone(),
            nonce: nonce_of(&started),
            // What the request says of the officer and the point is not believed.
            officer_id: "made-up".into(),
            service_point_code: "3275-KEC-99".into(),
        })
        .await?;
    let code = last_code(mesh).await?;
    let done = phone
        .complete_activation(ikd::CompleteActivationRequest {
            activation_id: started.activation_id,
            code,
            signature: key.sign(&started.challenge).as_ref().to_vec(),
        })
        .await?
        .into_inner();
    anyhow::ensure!(
        done.status == ikd::IdentityStatus::Active as i32,
        "the activation ended {:?}",
        done.status
    );
    let challenge = phone
        .create_token_challenge(ikd::CreateTokenChallengeRequest { nik: nik.to_owned() })
        .await?
        .into_inner()
        .challenge;
    Ok(phone
        .issue_session_token(ikd::IssueSessionTokenRequest {
            nik: nik.to_owned(),
            signature: key.sign(&challenge).as_ref().to_vec(),
            challenge,
        })
        .await?
        .into_inner()
        .token)
}

/// The proof header a resident's change carries: signed by the device key
/// over the method, the time, a one-time `id` and the token.
pub fn proof(key: &Ed25519KeyPair, method: &str, id: &str, token: &str) -> String {
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX);
    adminduk_kit::proof::sign(key, method, now_ms, id, token)
}
