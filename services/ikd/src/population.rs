//! What IKD asks the population service, over gRPC as across pods: a
//! resident's facts for eligibility, and how many residents an area has.

use tonic::Code;
use tonic::transport::Channel;

use adminduk_kit::{ApiError, upstream};
use adminduk_proto::convert;
use adminduk_proto::population::v1 as population;
use population::population_service_client::PopulationServiceClient;

use crate::domain::ResidentFacts;
use crate::refusal::internal;

/// A client of the population service.
#[derive(Debug, Clone)]
pub(crate) struct Population {
    client: PopulationServiceClient<Channel>,
}

impl Population {
    /// A client over a channel to the population service.
    pub(crate) fn new(channel: Channel) -> Self {
        Self {
            client: PopulationServiceClient::new(channel),
        }
    }

    /// The resident's facts for eligibility (`None` when there is no such
    /// resident, or no birth date on record) and the kecamatan of their address.
    pub(crate) async fn resident_facts(
        &self,
        nik: &str,
    ) -> Result<(Option<ResidentFacts>, String), ApiError> {
        let mut client = self.client.clone();
        let request = upstream::request(population::GetResidentRequest { nik: nik.to_owned() });
        match client.get_resident(request).await {
            Ok(response) => {
                let r = response.into_inner().resident.ok_or_else(internal)?;
                Ok(facts(r))
            }
            // No such resident is an answer: the resident is told NOT_ELIGIBLE, NOT_FOUND.
            Err(status) if status.code() == Code::NotFound => Ok((None, String::new())),
            Err(status) => Err(upstream::refusal("population", &status)),
        }
    }

    /// How many residents of the area (a regency or kecamatan code) are eligible.
    pub(crate) async fn eligible_in(&self, area_code: &str) -> Result<i64, ApiError> {
        let mut client = self.client.clone();
        let request = upstream::request(population::CountResidentsRequest {
            area_code: area_code.to_owned(),
        });
        let counts = client
            .count_residents(request)
            .await
            .map_err(|status| upstream::refusal("population", &status))?
            .into_inner();
        Ok(counts.eligible)
    }
}

fn facts(r: population::Resident) -> (Option<ResidentFacts>, String) {
    let Some(birth_date) = r.birth_date.as_ref().and_then(convert::to_naive) else {
        return (None, String::new());
    };
    let facts = ResidentFacts {
        alive: r.life_status == population::LifeStatus::Alive as i32,
        moved_out: r.life_status == population::LifeStatus::MovedOut as i32,
        birth_date,
        ever_married: r.marital_status != population::MaritalStatus::Single as i32,
        recorded: r.recording_status == population::RecordingStatus::Recorded as i32
            || r.recording_status == population::RecordingStatus::PrintReady as i32,
    };
    (
        Some(facts),
        r.address.map(|a| a.district_code).unwrap_or_default(),
    )
}
