//! The gRPC face of the population service: thin handlers that convert the
//! request (`convert`), call the store, and answer; refusals come from
//! `error` through `?`.

use chrono::Utc;
use tonic::{Request, Response, Status};

use adminduk_kit::mask::log_nik;
use adminduk_proto::population::v1 as pb;
use pb::population_service_server::PopulationService;

use crate::convert::{
    Death, Relocation, Search, Update, Verification, parsed_nik, require_kk, require_nik, today,
};
use crate::domain::resident::NewResident;
use crate::error::{change_error, family_not_found, resident_not_found};
use crate::store::Store;

/// The `PopulationService` implementation.
#[derive(Debug, Clone)]
pub struct PopulationApi {
    store: Store,
}

impl PopulationApi {
    /// A service over a store.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl PopulationService for PopulationApi {
    async fn parse_nik(
        &self,
        request: Request<pb::ParseNikRequest>,
    ) -> Result<Response<pb::ParseNikResponse>, Status> {
        let pb::ParseNikRequest { nik } = request.into_inner();
        let nik = require_nik(&nik)?;
        Ok(Response::new(parsed_nik(&nik)))
    }

    async fn get_resident(
        &self,
        request: Request<pb::GetResidentRequest>,
    ) -> Result<Response<pb::GetResidentResponse>, Status> {
        let pb::GetResidentRequest { nik } = request.into_inner();
        let nik = require_nik(&nik)?;
        let resident = self.store.resident(&nik).await?;
        let resident = resident.ok_or_else(|| resident_not_found(&nik))?;
        Ok(Response::new(pb::GetResidentResponse {
            resident: Some((&resident).into()),
        }))
    }

    async fn get_family(
        &self,
        request: Request<pb::GetFamilyRequest>,
    ) -> Result<Response<pb::GetFamilyResponse>, Status> {
        let pb::GetFamilyRequest { kk } = request.into_inner();
        let kk = require_kk(&kk)?;
        let family = self.store.family(&kk).await?;
        let family = family.ok_or_else(|| family_not_found(&kk))?;
        Ok(Response::new(pb::GetFamilyResponse {
            family: Some((&family).into()),
        }))
    }

    async fn search_residents(
        &self,
        request: Request<pb::SearchResidentsRequest>,
    ) -> Result<Response<pb::SearchResidentsResponse>, Status> {
        let search = Search::try_from(request.into_inner())?;
        let rows = self
            .store
            .search(
                &search.district_code,
                &search.query,
                search.cursor.as_ref(),
                search.rows_to_read(),
            )
            .await?;
        Ok(Response::new(search.page(rows)))
    }

    async fn register_resident(
        &self,
        request: Request<pb::RegisterResidentRequest>,
    ) -> Result<Response<pb::RegisterResidentResponse>, Status> {
        let new = NewResident::try_from(request.into_inner())?;
        let resident = self.store.register(&new, Utc::now()).await?;
        tracing::info!(nik = %log_nik(resident.nik.as_str()), kk = %resident.kk.masked(), "resident registered");
        Ok(Response::new(pb::RegisterResidentResponse {
            resident: Some((&resident).into()),
        }))
    }

    async fn update_resident(
        &self,
        request: Request<pb::UpdateResidentRequest>,
    ) -> Result<Response<pb::UpdateResidentResponse>, Status> {
        let update = Update::try_from(request.into_inner())?;
        let updated = self
            .store
            .update(&update.nik, update.expected_version, &update.changes, Utc::now())
            .await
            .map_err(change_error(&update.nik, None))?;
        tracing::info!(nik = %log_nik(update.nik.as_str()), fields = ?update.paths, version = updated.version, "resident updated");
        Ok(Response::new(pb::UpdateResidentResponse {
            resident: Some((&updated).into()),
        }))
    }

    async fn record_death(
        &self,
        request: Request<pb::RecordDeathRequest>,
    ) -> Result<Response<pb::RecordDeathResponse>, Status> {
        let death = Death::try_from(request.into_inner())?;
        let updated = self
            .store
            .record_death(&death.nik, death.expected_version, death.date, Utc::now())
            .await
            .map_err(change_error(&death.nik, None))?;
        tracing::info!(nik = %log_nik(death.nik.as_str()), "death recorded");
        Ok(Response::new(pb::RecordDeathResponse {
            resident: Some((&updated).into()),
        }))
    }

    async fn record_move(
        &self,
        request: Request<pb::RecordMoveRequest>,
    ) -> Result<Response<pb::RecordMoveResponse>, Status> {
        let relocation = Relocation::try_from(request.into_inner())?;
        let updated = self
            .store
            .record_move(
                &relocation.nik,
                relocation.expected_version,
                &relocation.change,
                Utc::now(),
            )
            .await
            .map_err(change_error(&relocation.nik, relocation.new_kk()))?;
        tracing::info!(
            nik = %log_nik(relocation.nik.as_str()),
            out_of_area = matches!(relocation.change, crate::store::Move::OutOfArea),
            "move recorded"
        );
        Ok(Response::new(pb::RecordMoveResponse {
            resident: Some((&updated).into()),
        }))
    }

    async fn verify_identity(
        &self,
        request: Request<pb::VerifyIdentityRequest>,
    ) -> Result<Response<pb::VerifyIdentityResponse>, Status> {
        let Verification { nik, claim } = request.into_inner().try_into()?;
        let record = self.store.resident(&nik).await?;
        let record = record.ok_or_else(|| resident_not_found(&nik))?;
        let verdict = claim.verify(&record);
        tracing::info!(nik = %log_nik(nik.as_str()), "identity verified");
        Ok(Response::new(verdict.into()))
    }

    async fn count_residents(
        &self,
        request: Request<pb::CountResidentsRequest>,
    ) -> Result<Response<pb::CountResidentsResponse>, Status> {
        let pb::CountResidentsRequest { area_code } = request.into_inner();
        adminduk_kit::codes::area_code("area_code", &area_code)?;
        let (alive, eligible) = self.store.count_area(&area_code, today()).await?;
        Ok(Response::new(pb::CountResidentsResponse {
            area_code,
            alive,
            eligible,
        }))
    }
}
