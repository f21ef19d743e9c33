//! The two services printing calls, as plain functions: population (is the
//! resident alive and print-ready?) and the inventory (a blank per job).
//! Every call goes through the kit's upstream client (deadline, trace
//! context) and every refusal comes back in the contract's terms.

use std::time::Duration;

use chrono::NaiveDate;
use tonic::transport::Channel;
use tonic::{Code, Status};

use adminduk_kit::{ApiError, ErrorCode, ErrorReason, upstream};
use adminduk_proto::convert;
use adminduk_proto::inventory::v1 as inventory;
use adminduk_proto::population::v1 as population;
use inventory::inventory_service_client::InventoryServiceClient;
use population::population_service_client::PopulationServiceClient;

use crate::error::{resident_not_found, unknown_point};
use crate::store::{Job, WriteOff};

/// Clients of population and the inventory (cheap to clone: one connection each).
#[derive(Debug, Clone)]
pub struct Peers {
    population: PopulationServiceClient<Channel>,
    inventory: InventoryServiceClient<Channel>,
}

/// The inventory's or population's answer to a failed call, as ours.
fn refused_by(service: &str) -> impl Fn(Status) -> ApiError + '_ {
    move |status| upstream::refusal(service, &status)
}

impl Peers {
    /// Clients over channels to population and the inventory.
    pub fn new(population: Channel, inventory: Channel) -> Self {
        Self {
            population: PopulationServiceClient::new(population),
            inventory: InventoryServiceClient::new(inventory),
        }
    }

    /// Population's answer about a NIK as it came: `None` when no such resident.
    pub async fn lookup(&self, nik: &str) -> Result<Option<population::Resident>, Status> {
        let mut people = self.population.clone();
        match people
            .get_resident(upstream::request(population::GetResidentRequest {
                nik: nik.to_owned(),
            }))
            .await
        {
            Ok(answer) => Ok(answer.into_inner().resident),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status),
        }
    }

    /// The resident as population knows them; its refusals pass through.
    pub async fn resident(&self, nik: &str) -> Result<population::Resident, ApiError> {
        let mut people = self.population.clone();
        people
            .get_resident(upstream::request(population::GetResidentRequest {
                nik: nik.to_owned(),
            }))
            .await
            .map_err(refused_by("population"))?
            .into_inner()
            .resident
            .ok_or_else(|| resident_not_found(nik))
    }

    /// The stock and policy of the region of a service point the inventory knows.
    pub async fn point_stock(&self, region: &str, point: &str) -> Result<inventory::StockLevel, ApiError> {
        let mut client = self.inventory.clone();
        let answer = client
            .get_stock(upstream::request(inventory::GetStockRequest {
                region_code: region.to_owned(),
            }))
            .await
            .map_err(|status| match status.code() {
                // The region has no policy: the point is not one the inventory serves.
                Code::InvalidArgument | Code::NotFound => unknown_point(),
                _ => upstream::refusal("inventory", &status),
            })?
            .into_inner();
        let known = answer
            .policy
            .as_ref()
            .is_some_and(|p| p.service_points.iter().any(|sp| sp.code == point));
        if !known {
            return Err(unknown_point());
        }
        Ok(answer.stock.unwrap_or_default())
    }

    /// Holds a blank for a job at a point and day; refusals from the inventory pass through.
    pub async fn reserve(
        &self,
        point: &str,
        day: NaiveDate,
        nik: &str,
        key: &str,
    ) -> Result<String, ApiError> {
        let mut client = self.inventory.clone();
        let reservation = client
            .reserve(upstream::request(inventory::ReserveRequest {
                service_point_code: point.to_owned(),
                date: Some(convert::date(day)),
                applicant_nik: nik.to_owned(),
                idempotency_key: key.to_owned(),
                purpose: inventory::BlankPurpose::KtpEl.into(),
            }))
            .await
            .map_err(|status| match status.code() {
                // The inventory is deciding the same blank for a twin of this request;
                // its advice (an idempotency key) is not this caller's to follow.
                Code::Aborted => ApiError::new(
                    ErrorCode::Aborted,
                    "a racing request for the same blank is being decided; read the job again or retry",
                )
                .with_reason(ErrorReason::RequestInFlight, [])
                .with_retry_after(Duration::from_millis(100)),
                _ => upstream::refusal("inventory", &status),
            })?
            .into_inner()
            .reservation
            .ok_or_else(|| ApiError::new(ErrorCode::Internal, "internal error"))?;
        Ok(reservation.id)
    }

    /// Consumes a job's blank; a refusal (the hold is not held) passes through.
    pub async fn commit(&self, reservation: &str, point: &str) -> Result<(), ApiError> {
        let mut client = self.inventory.clone();
        client
            .commit(upstream::request(inventory::CommitRequest {
                reservation_id: reservation.to_owned(),
                service_point_code: point.to_owned(),
            }))
            .await
            .map(drop)
            .map_err(refused_by("inventory"))
    }

    /// Gives a hold back. When the inventory cannot be told, the hold expires
    /// at the close of its day; nothing is lost.
    pub async fn release(&self, reservation: &str, point: &str, reason: &str) {
        let mut client = self.inventory.clone();
        let result = client
            .release(upstream::request(inventory::ReleaseRequest {
                reservation_id: reservation.to_owned(),
                service_point_code: point.to_owned(),
                reason: reason.to_owned(),
            }))
            .await;
        if let Err(status) = result {
            tracing::warn!(code = ?status.code(), "a blank could not be released; it will expire");
        }
    }

    /// Tells the inventory that one of `job`'s region's blanks is spoiled:
    /// `reservation` names its committed blank, or is empty for one from the
    /// stock. A retry finds its `reference` (or its blank) recorded, which is fine.
    pub async fn record_spoilage(
        &self,
        job: &Job,
        write_off: &WriteOff<'_>,
        reference: String,
        reservation: String,
    ) -> Result<(), ApiError> {
        let mut client = self.inventory.clone();
        let recorded = client
            .record_spoilage(upstream::request(inventory::RecordSpoilageRequest {
                region_code: job.region_code.clone(),
                quantity: 1,
                reason: write_off.reason.to_owned(),
                reference,
                reported_by: format!(
                    "{} (approved by {})",
                    write_off.reported_by, write_off.approved_by
                ),
                reservation_id: reservation,
            }))
            .await;
        match recorded {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => Ok(()),
            Err(status) => Err(upstream::refusal("inventory", &status)),
        }
    }
}

/// Whether population's record says the resident is alive and registered here.
pub fn alive(resident: &population::Resident) -> bool {
    resident.life_status == population::LifeStatus::Alive as i32
}

/// An application's refusal when the resident may not be given a card now.
pub fn print_ready(resident: &population::Resident) -> Result<(), ApiError> {
    if !alive(resident) {
        return Err(not_alive());
    }
    if resident.recording_status != population::RecordingStatus::PrintReady as i32 {
        return Err(ApiError::new(
            ErrorCode::FailedPrecondition,
            "the record is not print-ready (PRR)",
        )
        .with_reason(ErrorReason::NotPrintReady, [])
        .with_precondition("PRR", "nik", "the KTP-el record must be print-ready"));
    }
    Ok(())
}

/// The refusal for a resident who is not alive and registered here.
pub fn not_alive() -> ApiError {
    ApiError::new(
        ErrorCode::FailedPrecondition,
        "the resident is not alive and registered here",
    )
    .with_reason(ErrorReason::ResidentNotActive, [])
}

/// Whether the resident's biometrics are recorded (a suket needs them).
pub fn recorded(resident: &population::Resident) -> bool {
    [
        population::RecordingStatus::Recorded as i32,
        population::RecordingStatus::PrintReady as i32,
    ]
    .contains(&resident.recording_status)
}
