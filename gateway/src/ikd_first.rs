//! IKD first: a request made for a resident (a card application, a booking
//! at a counter) goes on only when that resident's IKD is active, so the
//! digital identity serves instead of a physical blank wherever it can.
//!
//! - An active IKD goes on. A resident who cannot activate yet (under 17 and
//!   unmarried, no recorded KTP-el, ...; as the IKD service says) is exempt and
//!   goes on too, and so does an office that writes why it goes on for someone
//!   (the seeds' child in hospital): both exemptions are in the audit row.
//! - Anyone else is deflected: FAILED_PRECONDITION, `IKD_ACTIVATION_REQUIRED`,
//!   with how to activate and the nearest service points that verify it.
//! - Nothing is done for someone who is no resident here (no such NIK, or
//!   deceased, or moved out): NOT_FOUND `RESIDENT_NOT_FOUND`, or
//!   FAILED_PRECONDITION `RESIDENT_NOT_ACTIVE`, override or not.
//! - The status is read from the IKD service and kept in the shared cache
//!   (60 s for an answer, 15 s for "not active"), which the IKD service clears
//!   whenever the resident's status changes.
//! - Deflections are counted, and so are the activations that follow one
//!   within 30 days (`ReportService.GetIkdFirstReport`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;

use adminduk_kit::cache::SharedCache;
use adminduk_kit::{ApiError, ErrorCode, ErrorReason, upstream};
use adminduk_proto::gateway::v1 as pb;
use adminduk_proto::ikd::v1 as ikd;
use adminduk_proto::inventory::v1 as inventory;
use ikd::ikd_service_client::IkdServiceClient;
use inventory::inventory_service_client::InventoryServiceClient;
use tonic::transport::Channel;

use crate::agency::store_failed;
use crate::store::Store;

/// How long an IKD status read is kept (the IKD service clears it on change).
const STATUS_LIFE: Duration = Duration::from_secs(60);
/// How long "not active" is kept: a resident activating at the counter is seen within it.
const INACTIVE_LIFE: Duration = Duration::from_secs(15);
/// How long a region's service points are kept for the nearest-office hint.
const OFFICES_LIFE: Duration = Duration::from_secs(600);
/// How many service points a deflection names.
const NEAREST: usize = 3;
/// A deflection is followed by an activation when it comes within this window.
pub(crate) const CONVERSION_WINDOW: chrono::Duration = chrono::Duration::days(30);

/// Where a resident stands for IKD first.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Standing {
    /// IKD is active.
    Active,
    /// The resident cannot activate yet (under 17 and unmarried, no recorded
    /// KTP-el): why, as the IKD service says.
    Exempt(String),
    /// No resident here to act for: not found, deceased or moved out.
    NotResident(String),
    /// The resident could activate and has not.
    Inactive,
    /// The NIK is not one (the service the call is for refuses it in its own words).
    Malformed,
}

impl Standing {
    fn encode(&self) -> Option<Vec<u8>> {
        match self {
            Standing::Active => Some(b"A".to_vec()),
            Standing::Exempt(why) => Some(format!("E{why}").into_bytes()),
            Standing::NotResident(why) => Some(format!("N{why}").into_bytes()),
            Standing::Inactive => Some(b"I".to_vec()),
            Standing::Malformed => None,
        }
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        match bytes.split_first()? {
            (b'A', []) => Some(Standing::Active),
            (b'I', []) => Some(Standing::Inactive),
            (b'E', why) if !why.is_empty() => {
                Some(Standing::Exempt(String::from_utf8_lossy(why).into_owned()))
            }
            (b'N', why) if !why.is_empty() => {
                Some(Standing::NotResident(String::from_utf8_lossy(why).into_owned()))
            }
            _ => None,
        }
    }
}

/// How IKD first let a request on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Passed {
    /// Whether the resident's IKD is active (the fact the gateway writes).
    pub(crate) active: bool,
    /// Why it went on without one, for the audit row: `ineligible: UNDER_17`
    /// or `office override: <reason>`.
    pub(crate) exemption: Option<String>,
}

/// A service point, for the nearest-office hint.
#[derive(Debug, Clone)]
struct Office {
    code: String,
    district: String,
}

/// Each region's service points, and when they were read.
type OfficesByRegion = HashMap<String, (Instant, Vec<Office>)>;

/// IKD first's reads and counts.
#[derive(Debug, Clone)]
pub(crate) struct IkdFirst {
    ikd: IkdServiceClient<Channel>,
    inventory: InventoryServiceClient<Channel>,
    cache: Arc<dyn SharedCache>,
    store: Store,
    offices: Arc<Mutex<OfficesByRegion>>,
}

impl IkdFirst {
    pub(crate) fn new(ikd: Channel, inventory: Channel, cache: Arc<dyn SharedCache>, store: Store) -> Self {
        Self {
            ikd: IkdServiceClient::new(ikd),
            inventory: InventoryServiceClient::new(inventory),
            cache,
            store,
            offices: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Decides IKD first for the resident of `nik` (`reference` is their keyed
    /// reference for the counts). An office may go on for a resident without
    /// IKD when it writes why (`override_reason`, checked by the caller).
    pub(crate) async fn check(
        &self,
        nik: &str,
        reference: &str,
        override_reason: Option<&str>,
    ) -> Result<Passed, ApiError> {
        let (standing, fresh) = self.standing(nik).await?;
        match standing {
            Standing::Active => {
                if fresh {
                    self.count_activation(reference).await;
                }
                Ok(Passed {
                    active: true,
                    exemption: None,
                })
            }
            Standing::Exempt(why) => Ok(Passed {
                active: false,
                exemption: Some(format!("ineligible: {why}")),
            }),
            Standing::Malformed => Ok(Passed {
                active: false,
                exemption: None,
            }),
            // Nothing is done for a resident who is not one here, override or not.
            Standing::NotResident(why) if why == "NOT_FOUND" => Err(ApiError::not_found("resident")
                .with_reason(ErrorReason::ResidentNotFound, [])
                .with_resource("resident", adminduk_kit::mask_nik(nik))),
            Standing::NotResident(why) => Err(ApiError::new(
                ErrorCode::FailedPrecondition,
                "the resident is not living here (deceased or moved out): nothing is done for them here",
            )
            .with_reason(ErrorReason::ResidentNotActive, [("why".to_owned(), why)])),
            Standing::Inactive => match override_reason {
                Some(reason) => Ok(Passed {
                    active: false,
                    exemption: Some(format!("office override: {reason}")),
                }),
                None => {
                    if let Err(err) = self.store.deflect(reference, Utc::now(), CONVERSION_WINDOW).await {
                        tracing::warn!(error = %err, "a deflection not counted");
                    }
                    Err(self.deflection(nik).await)
                }
            },
        }
    }

    /// Where the resident stands, and whether it was read from the IKD service just now.
    async fn standing(&self, nik: &str) -> Result<(Standing, bool), ApiError> {
        let key = adminduk_kit::token::ikd_status_key(nik);
        if let Ok(Some(bytes)) = self.cache.get(&key).await
            && let Some(standing) = Standing::decode(&bytes)
        {
            return Ok((standing, false));
        }
        let mut client = self.ikd.clone();
        let answer = client
            .get_status(upstream::request(ikd::GetStatusRequest { nik: nik.to_owned() }))
            .await;
        let standing = match answer {
            Ok(status) => {
                let status = status.into_inner();
                if status.status == ikd::IdentityStatus::Active as i32 {
                    Standing::Active
                } else {
                    match status.ineligible.as_str() {
                        // Unknown eligibility deflects: it is the IKD service's to say who is exempt.
                        "" | "UNKNOWN" => Standing::Inactive,
                        "NOT_FOUND" | "DECEASED" | "MOVED_OUT" => Standing::NotResident(status.ineligible),
                        _ => Standing::Exempt(status.ineligible),
                    }
                }
            }
            Err(status) if status.code() == tonic::Code::InvalidArgument => Standing::Malformed,
            Err(status) => return Err(upstream::refusal("ikd", &status)),
        };
        if let Some(bytes) = standing.encode() {
            // "Not active" and "no resident" change without the IKD service
            // knowing (an activation under way, a resident just registered).
            let life = match standing {
                Standing::Inactive | Standing::NotResident(_) => INACTIVE_LIFE,
                _ => STATUS_LIFE,
            };
            if let Err(err) = self.cache.set(&key, &bytes, life).await {
                tracing::debug!(error = %err, "IKD status not kept");
            }
        }
        Ok((standing, true))
    }

    /// Whether the resident of `nik` has an active IKD (the fact a request's
    /// `has_active_ikd` is written with).
    pub(crate) async fn is_active(&self, nik: &str) -> Result<bool, ApiError> {
        Ok(self.standing(nik).await?.0 == Standing::Active)
    }

    async fn count_activation(&self, reference: &str) {
        if let Err(err) = self
            .store
            .activated_after_deflection(reference, Utc::now(), CONVERSION_WINDOW)
            .await
        {
            tracing::warn!(error = %err, "an activation after a deflection not counted");
        }
    }

    /// The refusal of IKD first, with how to activate and where.
    async fn deflection(&self, nik: &str) -> ApiError {
        let m = adminduk_kit::metrics::get();
        adminduk_kit::metrics::Metrics::count(&m.ikd_deflections, "gateway");
        let nearest = self.nearest_offices(nik).await;
        let mut metadata = vec![(
            "how".to_owned(),
            "StartActivation on the resident's phone, then VerifyAtOffice at any service point".to_owned(),
        )];
        if !nearest.is_empty() {
            metadata.push(("nearest_offices".to_owned(), nearest.join(",")));
        }
        ApiError::new(
            ErrorCode::FailedPrecondition,
            "IKD first: the resident activates IKD before anything else (StartActivation on the phone, then VerifyAtOffice at any service point)",
        )
        .with_reason(ErrorReason::IkdActivationRequired, metadata)
        .with_precondition("IKD", "nik", "the resident's IKD must be active")
    }

    /// The service points nearest the resident: those of the kecamatan their
    /// NIK was issued in first, then the rest of the regency; empty when the
    /// inventory cannot say.
    async fn nearest_offices(&self, nik: &str) -> Vec<String> {
        let (Some(region), Some(district)) = (nik.get(..4), nik.get(..6)) else {
            return Vec::new();
        };
        let known = {
            let offices = self.offices.lock().unwrap_or_else(PoisonError::into_inner);
            offices
                .get(region)
                .filter(|(at, _)| at.elapsed() < OFFICES_LIFE)
                .map(|(_, list)| list.clone())
        };
        let list = match known {
            Some(list) => list,
            None => {
                let mut client = self.inventory.clone();
                let answer = client
                    .get_stock(upstream::request(inventory::GetStockRequest {
                        region_code: region.to_owned(),
                    }))
                    .await;
                let Ok(answer) = answer else {
                    return Vec::new();
                };
                let list: Vec<Office> = answer
                    .into_inner()
                    .policy
                    .map(|p| p.service_points)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| Office {
                        code: p.code,
                        district: p.district_code,
                    })
                    .collect();
                self.offices
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(region.to_owned(), (Instant::now(), list.clone()));
                list
            }
        };
        let mut ordered: Vec<&Office> = list.iter().collect();
        ordered.sort_by_key(|o| (o.district != district, o.code.clone()));
        ordered
            .into_iter()
            .take(NEAREST)
            .map(|o| o.code.clone())
            .collect()
    }

    /// The counts of the last 30 days: residents deflected, and of them those
    /// who activated after.
    pub(crate) async fn report(&self) -> Result<(i64, i64), ApiError> {
        self.store
            .deflections_since(Utc::now() - CONVERSION_WINDOW)
            .await
            .map_err(store_failed)
    }
}

/// `adminduk.gateway.v1.ReportService`, reached only through the door (offices and administrators).
#[derive(Debug, Clone)]
pub(crate) struct ReportApi {
    ikd_first: IkdFirst,
}

impl ReportApi {
    pub(crate) fn new(ikd_first: IkdFirst) -> Self {
        Self { ikd_first }
    }
}

#[tonic::async_trait]
impl pb::report_service_server::ReportService for ReportApi {
    async fn get_ikd_first_report(
        &self,
        _request: tonic::Request<pb::GetIkdFirstReportRequest>,
    ) -> Result<tonic::Response<pb::GetIkdFirstReportResponse>, tonic::Status> {
        let (deflected, activated_after) = self.ikd_first.report().await?;
        Ok(tonic::Response::new(pb::GetIkdFirstReportResponse {
            window_days: i32::try_from(CONVERSION_WINDOW.num_days()).unwrap_or(30),
            deflected,
            activated_after,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standing_round_trips_through_the_cache_and_garbage_is_no_standing() {
        for standing in [
            Standing::Active,
            Standing::Inactive,
            Standing::Exempt("UNDER_17".into()),
            Standing::NotResident("DECEASED".into()),
        ] {
            let bytes = standing.encode().expect("kept");
            assert_eq!(Standing::decode(&bytes), Some(standing));
        }
        assert_eq!(Standing::Malformed.encode(), None);
        for garbage in [&b""[..], b"E", b"X", b"AA"] {
            assert_eq!(Standing::decode(garbage), None, "{garbage:?}");
        }
    }
}
