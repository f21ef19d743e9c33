//! The contract's messages in printing's own terms, in one place: each
//! request becomes a checked command (every violation named at once), and
//! each record becomes its message with every field accounted for.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};

use adminduk_kit::region::Regions;
use adminduk_kit::{ApiError, Violations, mask_nik, text};
use adminduk_proto::convert;
use adminduk_proto::printing::v1 as pb;

use crate::domain::{CardState, Outcome, PrintReason};
use crate::store::{Job, JobState};

/// The most characters of a printer's id.
const MAX_PRINTER_ID: usize = 64;
/// The most characters of a person's name or id in a report.
const MAX_PERSON: usize = 128;
/// Lease length when the printer asks for none.
const DEFAULT_LEASE: Duration = Duration::from_secs(300);
/// The most violations of a list that an answer names one by one.
const NAMED_VIOLATIONS: usize = 10;
/// The most jobs one dispatch names.
const MAX_DISPATCH: usize = 1_000;

/// An application for a card, checked.
#[derive(Debug, Clone)]
pub struct Application {
    /// The resident.
    pub nik: String,
    /// Why a card is printed.
    pub reason: PrintReason,
    /// The regency of the service point.
    pub region: String,
    /// Where the card is collected.
    pub service_point: String,
    /// The appointment day.
    pub day: NaiveDate,
    /// The resident's own word that their IKD is active (it only raises priority).
    pub has_active_ikd: bool,
}

impl TryFrom<pb::SubmitPrintJobRequest> for Application {
    type Error = ApiError;

    fn try_from(request: pb::SubmitPrintJobRequest) -> Result<Self, ApiError> {
        let pb::SubmitPrintJobRequest {
            nik,
            reason,
            service_point_code,
            date,
            has_active_ikd,
        } = request;
        let mut v = Violations::new();
        adminduk_kit::nik::nik_field("nik", &nik, &mut v);
        let reason = reason_of(reason, &mut v);
        let region = point_field(&service_point_code, &mut v);
        let day = date.as_ref().and_then(convert::to_naive);
        if day.is_none() {
            v.add("date", "must be a real calendar date");
        }
        v.into_result()?;
        match (reason, region, day) {
            (Some(reason), Some(region), Some(day)) => Ok(Self {
                nik,
                reason,
                region,
                service_point: service_point_code,
                day,
                has_active_ikd,
            }),
            _ => Err(ApiError::invalid_field("request", "is not a valid application")),
        }
    }
}

/// A printer's request for work, checked.
#[derive(Debug, Clone)]
pub struct LeaseAsk {
    /// The printer.
    pub printer_id: String,
    /// How many jobs at most (1 to 100).
    pub max_jobs: i64,
    /// How long the lease lasts.
    pub lease: Duration,
}

impl TryFrom<pb::LeaseJobsRequest> for LeaseAsk {
    type Error = ApiError;

    fn try_from(request: pb::LeaseJobsRequest) -> Result<Self, ApiError> {
        let pb::LeaseJobsRequest {
            printer_id,
            max_jobs,
            lease_seconds,
        } = request;
        let mut v = Violations::new();
        let printer_id = text::required("printer_id", &printer_id, MAX_PRINTER_ID, &mut v);
        if !(1..=100).contains(&max_jobs) {
            v.add("max_jobs", "must be between 1 and 100");
        }
        let lease = match lease_seconds {
            0 => DEFAULT_LEASE,
            30..=3600 => Duration::from_secs(u64::try_from(lease_seconds).unwrap_or(300)),
            _ => {
                v.add("lease_seconds", "must be 0 or between 30 and 3600");
                DEFAULT_LEASE
            }
        };
        v.into_result()?;
        Ok(Self {
            printer_id,
            max_jobs: i64::from(max_jobs),
            lease,
        })
    }
}

/// A printer's report that a job's card came out, checked.
#[derive(Debug, Clone)]
pub struct PrintedReport {
    /// The job.
    pub job_id: String,
    /// The printer holding its lease.
    pub printer_id: String,
    /// The card's serial.
    pub card_serial: String,
}

impl TryFrom<pb::ReportPrintedRequest> for PrintedReport {
    type Error = ApiError;

    fn try_from(request: pb::ReportPrintedRequest) -> Result<Self, ApiError> {
        let pb::ReportPrintedRequest {
            job_id,
            printer_id,
            card_serial,
        } = request;
        let mut v = Violations::new();
        job_id_field("job_id", &job_id, &mut v);
        let card_serial = text::serial("card_serial", &card_serial, &mut v);
        let printer_id = text::required("printer_id", &printer_id, MAX_PRINTER_ID, &mut v);
        v.into_result()?;
        Ok(Self {
            job_id,
            printer_id,
            card_serial,
        })
    }
}

/// A report of a spoiled card or a blank ruined in the printer, checked.
#[derive(Debug, Clone)]
pub struct SpoiledReport {
    /// The job.
    pub job_id: String,
    /// What happened.
    pub reason: String,
    /// Who reports it.
    pub reported_by: String,
    /// A second person who approves the write-off.
    pub approved_by: String,
    /// The printer, for a blank ruined in it (else empty).
    pub printer_id: String,
    /// The ruined blank's or the card's serial (empty when not given).
    pub card_serial: String,
}

impl TryFrom<pb::ReportSpoiledRequest> for SpoiledReport {
    type Error = ApiError;

    fn try_from(request: pb::ReportSpoiledRequest) -> Result<Self, ApiError> {
        let pb::ReportSpoiledRequest {
            job_id,
            reason,
            reported_by,
            approved_by,
            printer_id,
            card_serial,
        } = request;
        let mut v = Violations::new();
        job_id_field("job_id", &job_id, &mut v);
        let reason = text::required("reason", &reason, 500, &mut v);
        let reported_by = text::person("reported_by", &reported_by, MAX_PERSON, &mut v);
        let approved_by = text::person("approved_by", &approved_by, MAX_PERSON, &mut v);
        if !approved_by.is_empty() && text::same_person(&approved_by, &reported_by) {
            v.add("approved_by", "must be a second person, not the reporter");
        }
        let printer_id = text::optional("printer_id", &printer_id, MAX_PRINTER_ID, &mut v);
        let card_serial = if card_serial.is_empty() {
            card_serial
        } else {
            text::serial("card_serial", &card_serial, &mut v)
        };
        v.into_result()?;
        Ok(Self {
            job_id,
            reason,
            reported_by,
            approved_by,
            printer_id,
            card_serial,
        })
    }
}

/// A request for a suket (a temporary certificate while blanks run out), checked.
#[derive(Debug, Clone)]
pub struct SuketAsk {
    /// The resident.
    pub nik: String,
    /// The regency of the service point.
    pub region: String,
    /// The service point issuing it.
    pub service_point: String,
}

impl TryFrom<pb::IssueSuketRequest> for SuketAsk {
    type Error = ApiError;

    fn try_from(request: pb::IssueSuketRequest) -> Result<Self, ApiError> {
        let pb::IssueSuketRequest {
            nik,
            service_point_code,
        } = request;
        let mut v = Violations::new();
        adminduk_kit::nik::nik_field("nik", &nik, &mut v);
        let region = point_field(&service_point_code, &mut v);
        v.into_result()?;
        let region = region.ok_or_else(|| ApiError::invalid_field("service_point_code", "has no region"))?;
        Ok(Self {
            nik,
            region,
            service_point: service_point_code,
        })
    }
}

/// Printed cards sent out together, checked.
#[derive(Debug, Clone)]
pub struct Dispatch {
    /// The jobs, each once.
    pub job_ids: Vec<String>,
    /// By post (true) or picked up at the office.
    pub post: bool,
    /// The post's batch reference (required by post).
    pub batch_reference: String,
}

impl TryFrom<pb::DispatchRequest> for Dispatch {
    type Error = ApiError;

    fn try_from(request: pb::DispatchRequest) -> Result<Self, ApiError> {
        let pb::DispatchRequest {
            job_ids,
            method,
            batch_reference,
        } = request;
        let mut v = Violations::new();
        if job_ids.is_empty() || job_ids.len() > MAX_DISPATCH {
            v.add("job_ids", "must name 1 to 1000 jobs");
        }
        // Every wrong id is counted, the first few named: an answer naming a
        // thousand ids would be too large for a client to read.
        let mut wrong = 0usize;
        for (i, id) in job_ids.iter().enumerate().take(MAX_DISPATCH) {
            let mut one = Violations::new();
            job_id_field(&format!("job_ids[{i}]"), id, &mut one);
            if one.is_empty() && job_ids[..i].contains(id) {
                one.add(format!("job_ids[{i}]"), "names a job listed before");
            }
            if !one.is_empty() {
                wrong += 1;
                if wrong <= NAMED_VIOLATIONS {
                    v.extend(one);
                }
            }
        }
        if wrong > NAMED_VIOLATIONS {
            v.add(
                "job_ids",
                format!(
                    "{} more ids are not job ids or are listed twice",
                    wrong - NAMED_VIOLATIONS
                ),
            );
        }
        let post = match pb::DispatchMethod::try_from(method) {
            Ok(pb::DispatchMethod::Pickup) => false,
            Ok(pb::DispatchMethod::Post) => true,
            _ => {
                v.add("method", "must be PICKUP or POST");
                false
            }
        };
        let batch_reference = if post {
            text::required("batch_reference", &batch_reference, 128, &mut v)
        } else {
            text::optional("batch_reference", &batch_reference, 128, &mut v)
        };
        v.into_result()?;
        Ok(Self {
            job_ids,
            post,
            batch_reference,
        })
    }
}

/// A courier's report of a delivery, checked.
#[derive(Debug, Clone)]
pub struct DeliveryReport {
    /// The job whose card it is.
    pub job_id: String,
    /// What happened at the door.
    pub outcome: Outcome,
}

impl TryFrom<pb::RecordDeliveryRequest> for DeliveryReport {
    type Error = ApiError;

    fn try_from(request: pb::RecordDeliveryRequest) -> Result<Self, ApiError> {
        let pb::RecordDeliveryRequest { job_id, outcome } = request;
        // A report without a known outcome is refused for that alone, as it always was.
        let outcome = match pb::DeliveryOutcome::try_from(outcome) {
            Ok(pb::DeliveryOutcome::Delivered) => Outcome::Delivered,
            Ok(pb::DeliveryOutcome::ReturnedDeceased) => Outcome::ReturnedDeceased,
            Ok(pb::DeliveryOutcome::ReturnedMoved) => Outcome::ReturnedMoved,
            Ok(pb::DeliveryOutcome::ReturnedUnclearAddress) => Outcome::ReturnedUnclearAddress,
            Ok(pb::DeliveryOutcome::Unspecified) | Err(_) => {
                return Err(ApiError::invalid_field("outcome", "must be a delivery outcome"));
            }
        };
        let mut v = Violations::new();
        job_id_field("job_id", &job_id, &mut v);
        v.into_result()?;
        Ok(Self { job_id, outcome })
    }
}

/// A recall of a village's cards to the office, checked.
#[derive(Debug, Clone)]
pub struct Recall {
    /// The kelurahan/desa.
    pub village_code: String,
    /// Why (a disaster, an unclear address).
    pub reason: String,
}

impl TryFrom<pb::RecallRequest> for Recall {
    type Error = ApiError;

    fn try_from(request: pb::RecallRequest) -> Result<Self, ApiError> {
        let pb::RecallRequest { village_code, reason } = request;
        let mut v = Violations::new();
        if !adminduk_kit::is_digits(&village_code, 10) {
            v.add("village_code", "must be a 10-digit kelurahan/desa code");
        } else if Regions::global().village(&village_code).is_none() {
            v.add(
                "village_code",
                "is not a kelurahan/desa in the official region list",
            );
        }
        let reason = text::required("reason", &reason, 500, &mut v);
        v.into_result()?;
        Ok(Self { village_code, reason })
    }
}

/// A region's funnel over a period of office days, checked.
#[derive(Debug, Clone)]
pub struct FunnelAsk {
    /// The regency.
    pub region_code: String,
    /// The first day's midnight (WIB), or the start of time.
    pub from: DateTime<Utc>,
    /// The last day's end (WIB), or now.
    pub to: DateTime<Utc>,
}

impl TryFrom<pb::GetFunnelRequest> for FunnelAsk {
    type Error = ApiError;

    fn try_from(request: pb::GetFunnelRequest) -> Result<Self, ApiError> {
        let pb::GetFunnelRequest {
            region_code,
            from_date,
            to_date,
        } = request;
        let mut v = Violations::new();
        adminduk_kit::codes::regency_field("region_code", &region_code, &mut v);
        let mut day_of = |field: &str, date: Option<&adminduk_proto::common::v1::Date>| match date {
            None => None,
            Some(d) => {
                let day = convert::to_naive(d);
                if day.is_none() {
                    v.add(field, "must be a real calendar date");
                }
                day
            }
        };
        let (from, to) = (
            day_of("from_date", from_date.as_ref()),
            day_of("to_date", to_date.as_ref()),
        );
        if let (Some(f), Some(t)) = (from, to)
            && f > t
        {
            v.add("from_date", "must not be after to_date");
        }
        v.into_result()?;
        // Days are the office's (WIB): a period runs from the first day's midnight to the last day's end.
        let wib = adminduk_kit::time::wib();
        let start_of = |day: NaiveDate| {
            day.and_hms_opt(0, 0, 0)
                .and_then(|t| t.and_local_timezone(wib).single())
                .map(|t| t.with_timezone(&Utc))
        };
        let from = from.and_then(start_of).unwrap_or(DateTime::UNIX_EPOCH);
        let to = to
            .and_then(|d| d.succ_opt())
            .and_then(start_of)
            .map_or_else(Utc::now, |t| t - chrono::Duration::milliseconds(1));
        Ok(Self {
            region_code,
            from,
            to,
        })
    }
}

/// A regency code of a request, checked.
pub fn regency(request: pb::GetBacklogRequest) -> Result<String, ApiError> {
    let pb::GetBacklogRequest { region_code } = request;
    let mut v = Violations::new();
    adminduk_kit::codes::regency_field("region_code", &region_code, &mut v);
    v.into_result()?;
    Ok(region_code)
}

/// A job id of a request: a UUID, as printing makes them (never echoed when it is not one).
fn job_id_field(field: &str, id: &str, out: &mut Violations) {
    if uuid::Uuid::try_parse(id).is_err() {
        out.add(field, "is not a print job id");
    }
}

/// The region of a service point field, or a violation.
fn point_field(point: &str, out: &mut Violations) -> Option<String> {
    let region = region_of(point).map(str::to_owned);
    if region.is_none() {
        out.add(
            "service_point_code",
            "must be a service point code such as 3275-KEC-01",
        );
    }
    region
}

/// The region of a service point: its code starts with the regency code (`3275-KEC-01`).
pub fn region_of(point: &str) -> Option<&str> {
    point
        .get(..4)
        .filter(|r| r.bytes().all(|b| b.is_ascii_digit()))
        .filter(|_| point.as_bytes().get(4) == Some(&b'-'))
}

fn reason_of(value: i32, out: &mut Violations) -> Option<PrintReason> {
    match pb::PrintReason::try_from(value) {
        Ok(pb::PrintReason::FirstCard) => Some(PrintReason::FirstCard),
        Ok(pb::PrintReason::Lost) => Some(PrintReason::Lost),
        Ok(pb::PrintReason::Damaged) => Some(PrintReason::Damaged),
        Ok(pb::PrintReason::DataChange) => Some(PrintReason::DataChange),
        Ok(pb::PrintReason::Disaster) => Some(PrintReason::Disaster),
        Ok(pb::PrintReason::Unspecified) | Err(_) => {
            out.add(
                "reason",
                "must be FIRST_CARD, LOST, DAMAGED, DATA_CHANGE or DISASTER",
            );
            None
        }
    }
}

impl From<PrintReason> for pb::PrintReason {
    fn from(reason: PrintReason) -> Self {
        match reason {
            PrintReason::FirstCard => Self::FirstCard,
            PrintReason::Lost => Self::Lost,
            PrintReason::Damaged => Self::Damaged,
            PrintReason::DataChange => Self::DataChange,
            PrintReason::Disaster => Self::Disaster,
        }
    }
}

impl From<CardState> for pb::CardState {
    fn from(state: CardState) -> Self {
        match state {
            CardState::Printed => Self::Printed,
            CardState::InTransit => Self::InTransit,
            CardState::AtServicePoint => Self::AtServicePoint,
            CardState::Delivered => Self::Delivered,
        }
    }
}

impl From<JobState> for pb::JobState {
    fn from(state: JobState) -> Self {
        match state {
            JobState::Queued => Self::Queued,
            JobState::Leased => Self::Leased,
            JobState::Printed => Self::Printed,
            JobState::Cancelled => Self::Cancelled,
        }
    }
}

impl From<&Job> for pb::PrintJob {
    fn from(job: &Job) -> Self {
        let Job {
            id,
            nik,
            region_code: _,
            village_code: _,
            reason,
            priority,
            service_point,
            day,
            state,
            reservation_id,
            printer_id: _,
            card_serial,
            card_state,
            return_reason: _,
            blanks_taken: _,
            printing_serial: _,
            lease_expires_at,
            created_at,
        } = job;
        Self {
            id: id.clone(),
            nik_masked: mask_nik(nik),
            reason: pb::PrintReason::from(*reason).into(),
            service_point_code: service_point.clone(),
            date: Some(convert::date(*day)),
            priority: i32::try_from(*priority).unwrap_or(5),
            state: pb::JobState::from(*state).into(),
            reservation_id: reservation_id.clone().unwrap_or_default(),
            card_serial: card_serial.clone().unwrap_or_default(),
            card_state: card_state
                .map_or(pb::CardState::Unspecified, pb::CardState::from)
                .into(),
            lease_expire_time: lease_expires_at.map(convert::timestamp),
            create_time: Some(convert::timestamp(*created_at)),
        }
    }
}
