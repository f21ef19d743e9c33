//! The gRPC face of IKD: thin handlers that convert the request into a
//! checked command, call the workflow (see [`crate::service`]), audit every
//! attempt at an audited operation, and convert the answer. Refusals are
//! mapped to reasons a phone can act on where they arise.

use std::sync::Arc;

use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use adminduk_kit::ApiError;
use adminduk_kit::cache::SharedCache;
use adminduk_proto::ikd::v1 as pb;
use pb::ikd_service_server::IkdService;

pub use crate::keys::KeyRing;
use crate::service::{Action, Attempt, Ikd, NikQuery};
use crate::store::Store;

pub use adminduk_kit::token::{ikd_status_key, revoked_device_key};

/// The `IkdService` implementation.
#[derive(Debug, Clone)]
pub struct IkdApi {
    ikd: Ikd,
}

impl IkdApi {
    /// A service over its store, a channel to the population service, and the shared cache.
    pub fn new(store: Store, population: Channel, cache: Arc<dyn SharedCache>, keys: Arc<KeyRing>) -> Self {
        Self {
            ikd: Ikd::new(store, population, cache, keys),
        }
    }

    /// Converts the request, runs the workflow on the command, and audits the
    /// attempt whatever its outcome (a request refused by its checks too);
    /// then converts the answer.
    async fn audited<R, C, T, M>(
        &self,
        mut attempt: Attempt,
        request: Request<R>,
        workflow: impl AsyncFnOnce(C, &mut Attempt) -> Result<T, ApiError>,
    ) -> Result<Response<M>, Status>
    where
        C: TryFrom<R, Error = ApiError>,
        M: for<'a> From<&'a T>,
    {
        let result = match C::try_from(request.into_inner()) {
            Ok(command) => workflow(command, &mut attempt).await,
            Err(err) => Err(err),
        };
        let answer = self.ikd.audited(&attempt, result).await?;
        Ok(Response::new(M::from(&answer)))
    }
}

#[tonic::async_trait]
impl IkdService for IkdApi {
    /// Starts an activation on the phone; audited under the NIK as given.
    async fn start_activation(
        &self,
        request: Request<pb::StartActivationRequest>,
    ) -> Result<Response<pb::StartActivationResponse>, Status> {
        let attempt = Attempt::new(Action::StartActivation, &request.get_ref().nik);
        self.audited(attempt, request, async |command, _| {
            self.ikd.start_activation(command).await
        })
        .await
    }

    /// An office's scan of the QR code; audited under the activation's NIK.
    async fn verify_at_office(
        &self,
        request: Request<pb::VerifyAtOfficeRequest>,
    ) -> Result<Response<pb::VerifyAtOfficeResponse>, Status> {
        let attempt = Attempt::new(Action::VerifyAtOffice, "");
        self.audited(attempt, request, async |command, attempt| {
            self.ikd.verify_at_office(command, attempt).await
        })
        .await
    }

    /// The code and the device's signature; audited under the activation's NIK.
    async fn complete_activation(
        &self,
        request: Request<pb::CompleteActivationRequest>,
    ) -> Result<Response<pb::CompleteActivationResponse>, Status> {
        let attempt = Attempt::new(Action::CompleteActivation, "");
        self.audited(attempt, request, async |command, attempt| {
            self.ikd.complete_activation(command, attempt).await
        })
        .await
    }

    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        let query: NikQuery = request.into_inner().try_into()?;
        let report = self.ikd.status(&query).await?;
        Ok(Response::new((&report).into()))
    }

    async fn create_token_challenge(
        &self,
        request: Request<pb::CreateTokenChallengeRequest>,
    ) -> Result<Response<pb::CreateTokenChallengeResponse>, Status> {
        let query: NikQuery = request.into_inner().try_into()?;
        let challenge = self.ikd.create_token_challenge(&query).await?;
        Ok(Response::new((&challenge).into()))
    }

    /// A session token for a signed challenge; audited under the NIK as given.
    async fn issue_session_token(
        &self,
        request: Request<pb::IssueSessionTokenRequest>,
    ) -> Result<Response<pb::IssueSessionTokenResponse>, Status> {
        let attempt = Attempt::new(Action::IssueSessionToken, &request.get_ref().nik);
        self.audited(attempt, request, async |command, _| {
            self.ikd.issue_session_token(&command).await
        })
        .await
    }

    async fn list_signing_keys(
        &self,
        _request: Request<pb::ListSigningKeysRequest>,
    ) -> Result<Response<pb::ListSigningKeysResponse>, Status> {
        Ok(Response::new(self.ikd.keys().into()))
    }

    /// Revocation at an office; audited under the NIK as given.
    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        let attempt = Attempt::new(Action::Revoke, &request.get_ref().nik);
        self.audited(attempt, request, async |command, attempt| {
            self.ikd.revoke(command, attempt).await
        })
        .await
    }

    async fn resolve_subject(
        &self,
        request: Request<pb::ResolveSubjectRequest>,
    ) -> Result<Response<pb::ResolveSubjectResponse>, Status> {
        let query = request.into_inner().try_into()?;
        let identity = self.ikd.resolve_subject(&query).await?;
        Ok(Response::new((&identity).into()))
    }

    async fn get_adoption(
        &self,
        request: Request<pb::GetAdoptionRequest>,
    ) -> Result<Response<pb::GetAdoptionResponse>, Status> {
        let query = request.into_inner().try_into()?;
        let adoption = self.ikd.adoption(query).await?;
        Ok(Response::new((&adoption).into()))
    }
}
