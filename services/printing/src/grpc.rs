//! The gRPC face of printing: thin handlers over the store, with the
//! population service (is the resident alive and print-ready?) and the
//! inventory (a blank per job) called over gRPC.

use std::time::Duration;

use chrono::{NaiveDate, Utc};
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use adminduk_kit::region::Regions;
use adminduk_kit::{ApiError, ErrorCode, ErrorReason, Violations, mask_nik, text, upstream};
use adminduk_proto::convert;
use adminduk_proto::inventory::v1 as inventory;
use adminduk_proto::population::v1 as population;
use adminduk_proto::printing::v1 as pb;
use inventory::inventory_service_client::InventoryServiceClient;
use pb::printing_service_server::PrintingService;
use population::population_service_client::PopulationServiceClient;

use crate::domain::{
    CardState, DeliveryRefusal, Outcome, PrintReason, after_delivery, delivery_recorded, forecast_clear,
    priority, suket_valid_until,
};
use crate::store::{Job, JobState, NewJob, Report, Store, StoreError, WriteOff};

/// How long a stored job may wait for its blank before a new submission
/// takes it for the remains of one that died.
const ABANDONED_SUBMISSION: chrono::Duration = chrono::Duration::seconds(60);

/// The most characters of a printer's id.
const MAX_PRINTER_ID: usize = 64;
/// The most characters of a person's name or id in a report.
const MAX_PERSON: usize = 128;

/// Lease length when the printer asks for none.
const DEFAULT_LEASE: Duration = Duration::from_secs(300);

/// The `PrintingService` implementation.
#[derive(Debug, Clone)]
pub struct PrintingApi {
    store: Store,
    population: PopulationServiceClient<Channel>,
    inventory: InventoryServiceClient<Channel>,
}

/// A blank ruined in the printer, as reported.
#[derive(Debug)]
struct RuinedBlank<'a> {
    printer: &'a str,
    serial: &'a str,
    write_off: WriteOff<'a>,
}

impl PrintingApi {
    /// A service over its store and channels to the population and inventory services.
    pub fn new(store: Store, population: Channel, inventory: Channel) -> Self {
        Self {
            store,
            population: PopulationServiceClient::new(population),
            inventory: InventoryServiceClient::new(inventory),
        }
    }
}

/// The inventory's or population's answer to a failed call, as ours.
fn refused_by(service: &str) -> impl Fn(Status) -> ApiError + '_ {
    move |status| upstream::refusal(service, &status)
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::ActiveJobExists => ApiError::new(
                ErrorCode::AlreadyExists,
                "the resident already has an active print job",
            )
            .with_reason(ErrorReason::PrintJobExists, []),
            StoreError::WrongState => ApiError::new(
                ErrorCode::FailedPrecondition,
                "the job is not in the state this needs",
            )
            .with_reason(ErrorReason::JobState, []),
            StoreError::SerialTaken => serial_taken(),
            StoreError::PrintInProgress { serial } => ApiError::new(
                ErrorCode::Aborted,
                "another report of this job is being recorded; read the job again",
            )
            .with_reason(ErrorReason::PrintInProgress, [("card_serial".to_owned(), serial)])
            .with_retry_after(Duration::from_millis(200)),
            StoreError::NotDispatchable { job_id, state } => ApiError::new(
                ErrorCode::FailedPrecondition,
                "every job must be a printed card not yet sent out; nothing was dispatched",
            )
            .with_reason(
                ErrorReason::NotDispatchable,
                [
                    ("job_id".to_owned(), job_id.clone()),
                    ("state".to_owned(), state.clone()),
                ],
            )
            .with_precondition("CARD_STATE", job_id, format!("is {state}, not PRINTED")),
            StoreError::JobNotFound(id) => job_not_found(&id),
            StoreError::SuketExists(held) => {
                ApiError::new(ErrorCode::AlreadyExists, "the resident already holds a suket")
                    .with_reason(ErrorReason::SuketExists, [("suket_id".to_owned(), held)])
            }
            StoreError::Corrupt(_) => ApiError::internal(&err),
            StoreError::Db(db) => ApiError::from(db),
        }
    }
}

impl From<StoreError> for Status {
    fn from(err: StoreError) -> Self {
        ApiError::from(err).into()
    }
}

/// Whether a refusal from another service ends a report, so its claim on the
/// job goes. An unreachable service may have done the work, and an ABORTED
/// one is being done by a twin of this report: the claim stays for the
/// report's retry (or its twin) to finish.
fn ends_report(err: &ApiError) -> bool {
    !matches!(err.code(), ErrorCode::Unavailable | ErrorCode::Aborted)
}

/// The most violations of a list that an answer names one by one.
const NAMED_VIOLATIONS: usize = 10;

/// A job id of a request: a UUID, as printing makes them (never echoed when it is not one).
fn job_id_field(field: &str, id: &str, out: &mut Violations) {
    if uuid::Uuid::try_parse(id).is_err() {
        out.add(field, "is not a print job id");
    }
}

/// A store refusal about one job, naming it: a change that found the job
/// moved on (a racing request) says which job and where it is now.
fn about_job(err: StoreError, job: &str) -> ApiError {
    match err {
        StoreError::WrongState => ApiError::new(
            ErrorCode::FailedPrecondition,
            "the job is not in the state this needs; read it again",
        )
        .with_reason(ErrorReason::JobState, [("job_id".to_owned(), job.to_owned())]),
        other => other.into(),
    }
}

/// NOT_FOUND for a print job, naming it.
fn job_not_found(id: &str) -> ApiError {
    ApiError::not_found("print job")
        .with_resource("print job", id)
        .with_reason(ErrorReason::JobNotFound, [("job_id".to_owned(), id.to_owned())])
}

/// NOT_FOUND for a resident, named by the masked NIK only.
fn resident_not_found(nik: &str) -> ApiError {
    ApiError::not_found("resident").with_resource("resident", mask_nik(nik))
}

/// A service point the inventory does not know.
fn unknown_point() -> ApiError {
    ApiError::invalid_field(
        "service_point_code",
        "is not a service point of a region with a quota policy",
    )
}

/// The answer to a report from a printer without a live lease on the job.
fn no_live_lease() -> ApiError {
    ApiError::new(
        ErrorCode::FailedPrecondition,
        "this printer holds no live lease on the job",
    )
    .with_reason(ErrorReason::LeaseExpired, [])
    .with_precondition(
        "LEASE",
        "job_id",
        "the lease lapsed or belongs to another printer",
    )
}

/// The answer to a serial used before, on a card or a ruined blank.
fn serial_taken() -> ApiError {
    ApiError::new(ErrorCode::AlreadyExists, "this card serial was already used")
        .with_violation("card_serial", "already used on another card or blank")
        .with_reason(ErrorReason::SerialTaken, [])
}

/// The region of a service point: its code starts with the regency code (`3275-KEC-01`).
fn region_of(point: &str) -> Option<&str> {
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
        _ => {
            out.add(
                "reason",
                "must be FIRST_CARD, LOST, DAMAGED, DATA_CHANGE or DISASTER",
            );
            None
        }
    }
}

fn reason_msg(reason: PrintReason) -> pb::PrintReason {
    match reason {
        PrintReason::FirstCard => pb::PrintReason::FirstCard,
        PrintReason::Lost => pb::PrintReason::Lost,
        PrintReason::Damaged => pb::PrintReason::Damaged,
        PrintReason::DataChange => pb::PrintReason::DataChange,
        PrintReason::Disaster => pb::PrintReason::Disaster,
    }
}

fn card_msg(state: CardState) -> pb::CardState {
    match state {
        CardState::Printed => pb::CardState::Printed,
        CardState::InTransit => pb::CardState::InTransit,
        CardState::AtServicePoint => pb::CardState::AtServicePoint,
        CardState::Delivered => pb::CardState::Delivered,
    }
}

fn job_msg(job: &Job) -> pb::PrintJob {
    pb::PrintJob {
        id: job.id.clone(),
        nik_masked: mask_nik(&job.nik),
        reason: reason_msg(job.reason).into(),
        service_point_code: job.service_point.clone(),
        date: Some(convert::date(job.day)),
        priority: i32::try_from(job.priority).unwrap_or(5),
        state: match job.state {
            JobState::Queued => pb::JobState::Queued,
            JobState::Leased => pb::JobState::Leased,
            JobState::Printed => pb::JobState::Printed,
            JobState::Cancelled => pb::JobState::Cancelled,
        }
        .into(),
        reservation_id: job.reservation_id.clone().unwrap_or_default(),
        card_serial: job.card_serial.clone().unwrap_or_default(),
        card_state: job.card_state.map_or(pb::CardState::Unspecified, card_msg).into(),
        lease_expire_time: job.lease_expires_at.map(convert::timestamp),
        create_time: Some(convert::timestamp(job.created_at)),
    }
}

impl PrintingApi {
    /// Turns sukets into print jobs once blanks are back: each holder is
    /// queued (at priority 3) for the first day with room at their service
    /// point. Returns how many were converted; holders still without room
    /// keep their suket and are tried again later.
    pub async fn convert_sukets(&self) -> Result<u64, ApiError> {
        let today = adminduk_kit::time::today_wib();
        let mut converted = 0;
        for (nik, point) in self.store.open_sukets(today, 100).await? {
            if let Some(job) = self.store.active_job(&nik).await? {
                self.store.convert_suket(&nik, &job.id).await?;
                converted += 1;
                continue;
            }
            let mut day = today + chrono::Days::new(1);
            for _ in 0..2 {
                let request = pb::SubmitPrintJobRequest {
                    nik: nik.clone(),
                    reason: pb::PrintReason::FirstCard.into(),
                    service_point_code: point.clone(),
                    date: Some(convert::date(day)),
                    has_active_ikd: false,
                };
                match self.submit_print_job(Request::new(request)).await {
                    Ok(_) => {
                        converted += 1;
                        break;
                    }
                    // A full day names the next days with room: try the first once.
                    Err(status) if status.code() == Code::ResourceExhausted => {
                        let next = adminduk_kit::error::metadata_of(&status, "next_dates_with_room")
                            .and_then(|dates| {
                                dates.split(',').next().and_then(|d| d.parse::<NaiveDate>().ok())
                            });
                        match next {
                            Some(next) => day = next,
                            None => break,
                        }
                    }
                    Err(status) => {
                        tracing::info!(code = ?status.code(), "suket not converted yet");
                        break;
                    }
                }
            }
        }
        Ok(converted)
    }

    /// Refuses a second application, naming the first job, and counts it.
    async fn duplicate(&self, first: &Job, region: &str) -> ApiError {
        if let Err(err) = self.store.record_duplicate(&first.id, region, Utc::now()).await {
            tracing::warn!(error = %err, "a prevented duplicate was not counted");
        }
        ApiError::new(
            ErrorCode::AlreadyExists,
            "the resident already has an active print job",
        )
        .with_reason(
            ErrorReason::PrintJobExists,
            [("job_id".to_owned(), first.id.clone())],
        )
    }

    /// The NIK's active job, after discarding one that never got its blank
    /// because its submission died (stored, then neither held nor removed).
    async fn live_active_job(&self, nik: &str, now: chrono::DateTime<Utc>) -> Result<Option<Job>, ApiError> {
        let Some(job) = self.store.active_job(nik).await? else {
            return Ok(None);
        };
        if job.reservation_id.is_none() && now - job.created_at > ABANDONED_SUBMISSION {
            tracing::warn!(job = %job.id, "a submission that never got its blank is discarded");
            self.store.discard_unheld(&job.id).await?;
            return Ok(self.store.active_job(nik).await?);
        }
        Ok(Some(job))
    }

    /// The resident as population knows them, if they may be given a card now.
    async fn print_ready_resident(&self, nik: &str) -> Result<population::Resident, ApiError> {
        let mut people = self.population.clone();
        let resident = people
            .get_resident(upstream::request(population::GetResidentRequest {
                nik: nik.to_owned(),
            }))
            .await
            .map_err(refused_by("population"))?
            .into_inner()
            .resident
            .ok_or_else(|| resident_not_found(nik))?;
        if resident.life_status != population::LifeStatus::Alive as i32 {
            return Err(ApiError::new(
                ErrorCode::FailedPrecondition,
                "the resident is not alive and registered here",
            )
            .with_reason(ErrorReason::ResidentNotActive, []));
        }
        if resident.recording_status != population::RecordingStatus::PrintReady as i32 {
            return Err(ApiError::new(
                ErrorCode::FailedPrecondition,
                "the record is not print-ready (PRR)",
            )
            .with_reason(ErrorReason::NotPrintReady, [])
            .with_precondition("PRR", "nik", "the KTP-el record must be print-ready"));
        }
        Ok(resident)
    }

    /// Holds the blank of a stored job; on any refusal the job is removed
    /// again, so a refused application leaves nothing behind.
    async fn hold_blank(
        &self,
        job_id: &str,
        point: &str,
        day: NaiveDate,
        nik: &str,
    ) -> Result<String, ApiError> {
        let held = self.reserve(point, day, nik, &format!("print-{job_id}")).await;
        let reservation = match held {
            Ok(reservation) => reservation,
            Err(err) => {
                self.store.discard_unheld(job_id).await?;
                return Err(self.explain_hold_refusal(nik, err).await);
            }
        };
        if let Err(err) = self.store.attach_reservation(job_id, &reservation).await {
            self.release(&reservation, point, "job not stored").await;
            self.store.discard_unheld(job_id).await?;
            return Err(err.into());
        }
        Ok(reservation)
    }

    /// The inventory's refusal of a job's blank, in printing's words where it
    /// needs them: a hold the applicant already has is named, and is a job's
    /// only if a job holds it.
    async fn explain_hold_refusal(&self, nik: &str, err: ApiError) -> ApiError {
        let held = err
            .details()
            .error_info()
            .filter(|info| info.reason == adminduk_kit::error::reason_name(ErrorReason::ApplicantHasHold))
            .and_then(|info| info.metadata.get("reservation_id").cloned());
        let Some(held) = held else {
            return err;
        };
        match self.store.job_with_reservation(nik, &held).await {
            Ok(Some(first)) => {
                let region = first.region_code.clone();
                self.duplicate(&first, &region).await
            }
            Ok(None) => ApiError::new(
                ErrorCode::FailedPrecondition,
                "the applicant already holds a blank booked at a counter; print on that booking or release it first",
            )
            .with_reason(ErrorReason::ApplicantHasHold, [("reservation_id".to_owned(), held.clone())])
            .with_precondition("HOLD", held, "the applicant's one hold is not a print job's"),
            Err(store) => store.into(),
        }
    }

    /// Writes off a blank ruined in the printer: the serial is claimed first,
    /// then the inventory's stock loses the blank (a spoilage of one, outside
    /// the job's hold), and the job, still leased, keeps its hold to print on
    /// another blank. A retried report finds its blank written off and is
    /// answered the same. `ruined_on` is the job on which a blank with this
    /// serial was written off before, if any.
    async fn spoil_in_printer(
        &self,
        job: &Job,
        ruined: &RuinedBlank<'_>,
        ruined_on: Option<&str>,
    ) -> Result<Job, ApiError> {
        let retried = match ruined_on {
            Some(on) if on == job.id => true,
            Some(_) => return Err(serial_taken()),
            None => false,
        };
        let report = Report::Ruined {
            printer: ruined.printer,
            serial: ruined.serial,
        };
        if !retried {
            // The job is claimed for this report before the inventory hears of it:
            // a print racing it is told to wait, and its lease is checked there.
            self.store
                .claim_report(&job.id, report, Utc::now())
                .await
                .map_err(|err| match err {
                    StoreError::WrongState => no_live_lease(),
                    other => other.into(),
                })?;
        }
        // The books of blanks first: if the job's row then cannot change (its
        // lease lapsed in between), the stock is still right.
        let recorded = self
            .record_spoilage(
                job,
                &ruined.write_off,
                format!("ruined-blank-{}", ruined.serial),
                String::new(),
            )
            .await;
        if let Err(err) = recorded {
            if !retried && ends_report(&err) {
                self.store.release_report(&job.id, report).await?;
            }
            return Err(err);
        }
        if !retried {
            self.store
                .spoil_blank(job, ruined.printer, ruined.serial, &ruined.write_off, Utc::now())
                .await
                .map_err(|err| about_job(err, &job.id))?;
            tracing::info!(job = %job.id, "blank ruined in the printer; written off");
        }
        self.job_or_not_found(&job.id).await
    }

    /// Tells the inventory that one of `job`'s region's blanks is spoiled:
    /// `reservation` names its committed blank, or is empty for one from the
    /// stock. A retry finds its `reference` (or its blank) recorded, which is fine.
    async fn record_spoilage(
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

    async fn job_or_not_found(&self, id: &str) -> Result<Job, ApiError> {
        self.store.job(id).await?.ok_or_else(|| job_not_found(id))
    }

    /// Holds a blank for a job at a point and day; refusals from the inventory pass through.
    async fn reserve(&self, point: &str, day: NaiveDate, nik: &str, key: &str) -> Result<String, ApiError> {
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
                .with_retry_after(Duration::from_millis(100)),
                _ => upstream::refusal("inventory", &status),
            })?
            .into_inner()
            .reservation
            .ok_or_else(|| ApiError::new(ErrorCode::Internal, "internal error"))?;
        Ok(reservation.id)
    }

    /// Consumes a job's blank; a refusal (the hold is not held) passes through.
    async fn commit(&self, reservation: &str, point: &str) -> Result<(), ApiError> {
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

    /// Consumes the blank of a job whose print is claimed. A job that waited
    /// past its appointment day finds its hold lapsed: the card is printed
    /// now, so it takes a blank now, and that one is consumed.
    async fn consume_blank(&self, job: &Job, now: chrono::DateTime<Utc>) -> Result<(), ApiError> {
        let reservation = job.reservation_id.clone().unwrap_or_default();
        match self.commit(&reservation, &job.service_point).await {
            Err(err) if err.code() == ErrorCode::FailedPrecondition => {
                let day = job.day.max(adminduk_kit::time::today_wib());
                let key = format!("print-{}-{}", job.id, job.blanks_taken + 1);
                let fresh = self.reserve(&job.service_point, day, &job.nik, &key).await?;
                self.store.replace_reservation(&job.id, &fresh, now).await?;
                self.commit(&fresh, &job.service_point).await
            }
            other => other,
        }
    }

    async fn release(&self, reservation: &str, point: &str, reason: &str) {
        let mut client = self.inventory.clone();
        let result = client
            .release(upstream::request(inventory::ReleaseRequest {
                reservation_id: reservation.to_owned(),
                service_point_code: point.to_owned(),
                reason: reason.to_owned(),
            }))
            .await;
        if let Err(status) = result {
            // The hold then expires at the close of its day; nothing is lost.
            tracing::warn!(code = ?status.code(), "a blank could not be released; it will expire");
        }
    }

    /// Whether a leased job's card may still be printed: its resident may have
    /// died or moved away since the application. Such a job is cancelled and
    /// its blank given back; when population cannot be asked, printing goes on
    /// (the card can still be recalled).
    async fn still_printable(&self, job: &Job) -> Result<bool, ApiError> {
        let mut people = self.population.clone();
        let answer = people
            .get_resident(upstream::request(population::GetResidentRequest {
                nik: job.nik.clone(),
            }))
            .await;
        let alive = match answer {
            Ok(r) => r
                .into_inner()
                .resident
                .is_some_and(|r| r.life_status == population::LifeStatus::Alive as i32),
            Err(status) if status.code() == Code::NotFound => false,
            Err(status) => {
                tracing::warn!(code = ?status.code(), job = %job.id, "life status not checked before printing");
                return Ok(true);
            }
        };
        if alive {
            return Ok(true);
        }
        if self.store.cancel_leased(&job.id, Utc::now()).await? {
            if let Some(reservation) = &job.reservation_id {
                self.release(
                    reservation,
                    &job.service_point,
                    "resident no longer alive and registered here",
                )
                .await;
            }
            tracing::info!(job = %job.id, "job cancelled: the resident is no longer alive and registered here");
        }
        Ok(false)
    }

    /// The stock and policy of the region of a service point the inventory knows.
    async fn point_stock(&self, point: &str) -> Result<(String, inventory::StockLevel), ApiError> {
        let region = region_of(point).ok_or_else(unknown_point)?.to_owned();
        let mut client = self.inventory.clone();
        let answer = client
            .get_stock(upstream::request(inventory::GetStockRequest {
                region_code: region.clone(),
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
        Ok((region, answer.stock.unwrap_or_default()))
    }
}

#[tonic::async_trait]
impl PrintingService for PrintingApi {
    async fn submit_print_job(
        &self,
        request: Request<pb::SubmitPrintJobRequest>,
    ) -> Result<Response<pb::SubmitPrintJobResponse>, Status> {
        let pb::SubmitPrintJobRequest {
            nik,
            reason,
            service_point_code,
            date,
            has_active_ikd,
        } = request.into_inner();
        let mut v = Violations::new();
        adminduk_kit::nik::nik_field("nik", &nik, &mut v);
        let reason = reason_of(reason, &mut v);
        let region = region_of(&service_point_code).map(str::to_owned);
        if region.is_none() {
            v.add(
                "service_point_code",
                "must be a service point code such as 3275-KEC-01",
            );
        }
        let day = date.as_ref().and_then(convert::to_naive);
        if day.is_none() {
            v.add("date", "must be a real calendar date");
        }
        v.into_result()?;
        let (Some(reason), Some(region), Some(day)) = (reason, region, day) else {
            return Err(ApiError::new(ErrorCode::InvalidArgument, "invalid request").into());
        };
        let now = Utc::now();
        // Everything that can refuse without changing anything is asked first:
        // a refused application leaves no hold and no ledger row behind.
        // One active job per NIK: no card is printed twice.
        if let Some(first) = self.live_active_job(&nik, now).await? {
            return Err(self.duplicate(&first, &region).await.into());
        }
        if reason == PrintReason::FirstCard
            && let Some(printed) = self.store.printed_job_of(&nik).await?
        {
            return Err(ApiError::new(
                ErrorCode::FailedPrecondition,
                "the resident's first card was printed already; apply for a replacement (LOST, DAMAGED, DATA_CHANGE or DISASTER)",
            )
            .with_reason(ErrorReason::FirstCardIssued, [("job_id".to_owned(), printed.id.clone())])
            .with_precondition("FIRST_CARD", "reason", "a resident is given one first card")
            .into());
        }
        let resident = self.print_ready_resident(&nik).await?;
        let today = adminduk_kit::time::today_wib();
        let birth = resident
            .birth_date
            .as_ref()
            .and_then(convert::to_naive)
            .unwrap_or(today);
        let has_suket = self.store.has_suket(&nik, today).await?;
        let village = resident.address.map(|a| a.village_code).unwrap_or_default();
        let job_id = uuid::Uuid::now_v7().to_string();
        let new = NewJob {
            id: &job_id,
            nik: &nik,
            region_code: &region,
            village_code: &village,
            reason,
            priority: priority(
                reason,
                adminduk_kit::time::age(birth, today),
                has_suket,
                has_active_ikd,
            ),
            service_point: &service_point_code,
            day,
        };
        // The job is stored before its blank is held, so a racing application
        // for the same NIK is told at once which job won.
        match self.store.insert_job(&new, now).await {
            Ok(()) => {}
            Err(StoreError::ActiveJobExists) => {
                let first = self.store.active_job(&nik).await?;
                return Err(match first {
                    Some(first) => self.duplicate(&first, &region).await,
                    None => StoreError::ActiveJobExists.into(),
                }
                .into());
            }
            Err(err) => return Err(err.into()),
        }
        self.hold_blank(&job_id, &service_point_code, day, &nik).await?;
        if has_suket {
            self.store.convert_suket(&nik, &job_id).await?;
        }
        tracing::info!(nik = %adminduk_kit::mask::log_nik(&nik), job = %job_id, priority = new.priority, "print job queued");
        let job = self.job_or_not_found(&job_id).await?;
        Ok(Response::new(pb::SubmitPrintJobResponse {
            job: Some(job_msg(&job)),
        }))
    }

    async fn lease_jobs(
        &self,
        request: Request<pb::LeaseJobsRequest>,
    ) -> Result<Response<pb::LeaseJobsResponse>, Status> {
        let pb::LeaseJobsRequest {
            printer_id,
            max_jobs,
            lease_seconds,
        } = request.into_inner();
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
        let now = Utc::now();
        // Jobs of printers that died go back to the queue first.
        let requeued = self.store.requeue_lapsed(now).await?;
        if requeued > 0 {
            tracing::warn!(requeued, "leases lapsed; jobs back in the queue");
        }
        let deadline = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::minutes(5));
        let jobs = self
            .store
            .lease(&printer_id, i64::from(max_jobs), deadline, now)
            .await?;
        // Each job's resident is asked about at once, not one after another: a
        // lease of 100 jobs waits for one population round trip, not 100.
        let mut checks = tokio::task::JoinSet::new();
        for (index, job) in jobs.into_iter().enumerate() {
            let api = self.clone();
            checks.spawn(async move {
                let printable = api.still_printable(&job).await;
                (index, job, printable)
            });
        }
        let mut checked = Vec::with_capacity(checks.len());
        while let Some(done) = checks.join_next().await {
            let (index, job, printable) = done.map_err(|err| ApiError::internal(&err))?;
            if printable? {
                checked.push((index, job));
            }
        }
        checked.sort_unstable_by_key(|(index, _)| *index);
        let printable: Vec<Job> = checked.into_iter().map(|(_, job)| job).collect();
        Ok(Response::new(pb::LeaseJobsResponse {
            jobs: printable.iter().map(job_msg).collect(),
        }))
    }

    async fn report_printed(
        &self,
        request: Request<pb::ReportPrintedRequest>,
    ) -> Result<Response<pb::ReportPrintedResponse>, Status> {
        let pb::ReportPrintedRequest {
            job_id,
            printer_id,
            card_serial,
        } = request.into_inner();
        let mut v = Violations::new();
        job_id_field("job_id", &job_id, &mut v);
        let card_serial = text::serial("card_serial", &card_serial, &mut v);
        let printer_id = text::required("printer_id", &printer_id, MAX_PRINTER_ID, &mut v);
        v.into_result()?;
        let job = self.job_or_not_found(&job_id).await?;
        if job.state == JobState::Printed {
            // A retried report of the same print, from the printer that printed it, is
            // answered the same; the card is printed once. Any other printer has no lease.
            if job.card_serial.as_deref() == Some(card_serial.as_str()) {
                if job.printer_id.as_deref() == Some(printer_id.as_str()) {
                    return Ok(Response::new(pb::ReportPrintedResponse {
                        job: Some(job_msg(&job)),
                    }));
                }
                return Err(no_live_lease().into());
            }
            return Err(ApiError::new(
                ErrorCode::FailedPrecondition,
                "the job's card was printed already, with another serial",
            )
            .with_reason(
                ErrorReason::AlreadyPrinted,
                [
                    ("job_id".to_owned(), job.id.clone()),
                    (
                        "card_serial".to_owned(),
                        job.card_serial.clone().unwrap_or_default(),
                    ),
                ],
            )
            .into());
        }
        let now = Utc::now();
        // The serial and the job are claimed before the blank is consumed: of two
        // reports racing with one serial, or for one job with two, one goes on.
        let report = Report::Print {
            printer: &printer_id,
            serial: &card_serial,
        };
        self.store
            .claim_report(&job.id, report, now)
            .await
            .map_err(|err| match err {
                StoreError::WrongState => no_live_lease(),
                other => other.into(),
            })?;
        if let Err(err) = self.consume_blank(&job, now).await {
            // Refused: nothing was consumed, so the claim goes. Unreachable: the
            // blank may be consumed, so only this report, retried, can go on.
            if ends_report(&err) {
                self.store.release_report(&job.id, report).await?;
            }
            return Err(err.into());
        }
        self.store
            .mark_printed(&job.id, &printer_id, &card_serial, now)
            .await
            .map_err(|err| about_job(err, &job.id))?;
        let job = self.job_or_not_found(&job_id).await?;
        Ok(Response::new(pb::ReportPrintedResponse {
            job: Some(job_msg(&job)),
        }))
    }

    async fn report_spoiled(
        &self,
        request: Request<pb::ReportSpoiledRequest>,
    ) -> Result<Response<pb::ReportSpoiledResponse>, Status> {
        let pb::ReportSpoiledRequest {
            job_id,
            reason,
            reported_by,
            approved_by,
            printer_id,
            card_serial,
        } = request.into_inner();
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
        let write_off = || WriteOff {
            reason: &reason,
            reported_by: &reported_by,
            approved_by: &approved_by,
        };
        let job = self.job_or_not_found(&job_id).await?;
        // A blank ruined in the printer names its printer or its serial; a
        // report without them is about a printed card. A retried report still
        // finds its blank after the card came out on another one.
        let in_printer = !printer_id.is_empty() || !card_serial.is_empty();
        let ruined_on = if card_serial.is_empty() {
            None
        } else {
            self.store.ruined_blank_job(&card_serial).await?
        };
        let retried = ruined_on.as_deref() == Some(job.id.as_str());
        if in_printer && (job.state == JobState::Leased || retried) {
            let mut v = Violations::new();
            if printer_id.is_empty() {
                v.add("printer_id", "is required for a blank ruined in the printer");
            }
            if card_serial.is_empty() {
                v.add("card_serial", "is required: the ruined blank's serial");
            }
            v.into_result()?;
            let spoiled = RuinedBlank {
                printer: &printer_id,
                serial: &card_serial,
                write_off: write_off(),
            };
            let job = self
                .spoil_in_printer(&job, &spoiled, ruined_on.as_deref())
                .await?;
            return Ok(Response::new(pb::ReportSpoiledResponse {
                job: Some(job_msg(&job)),
            }));
        }
        if job.card_state != Some(CardState::Printed) {
            return Err(ApiError::new(
                ErrorCode::FailedPrecondition,
                "only a printed card not yet sent out, or a blank ruined in the printer, can be written off",
            )
            .with_reason(
                ErrorReason::JobState,
                [
                    ("job_id".to_owned(), job.id.clone()),
                    (
                        "card_state".to_owned(),
                        job.card_state.map_or("NOT_PRINTED", CardState::as_str).to_owned(),
                    ),
                ],
            )
            .into());
        }
        if !card_serial.is_empty() && job.card_serial.as_deref() != Some(card_serial.as_str()) {
            return Err(
                ApiError::invalid_field("card_serial", "is not the serial of this job's card").into(),
            );
        }
        // The card is claimed for this report first, so it cannot be sent out
        // (or reported again with other words) while the inventory hears of it.
        let serial = job.card_serial.clone().unwrap_or_default();
        let report = Report::DamagedCard { serial: &serial };
        self.store
            .claim_report(&job.id, report, Utc::now())
            .await
            .map_err(|err| about_job(err, &job.id))?;
        // The reprint's blank is held next: if the date has none, the damaged
        // card is not written off either, and nothing has moved.
        let today = adminduk_kit::time::today_wib();
        let day = job.day.max(today);
        let key = format!("print-{}-{}", job.id, job.blanks_taken + 1);
        let reservation = match self.reserve(&job.service_point, day, &job.nik, &key).await {
            Ok(reservation) => reservation,
            Err(err) => {
                if ends_report(&err) {
                    self.store.release_report(&job.id, report).await?;
                }
                return Err(err.into());
            }
        };
        // The damaged card's blank was consumed when it was printed: the inventory now
        // counts it as spoiled.
        if let Err(err) = self
            .record_spoilage(
                &job,
                &write_off(),
                format!("spoiled-card-{serial}"),
                job.reservation_id.clone().unwrap_or_default(),
            )
            .await
        {
            self.release(&reservation, &job.service_point, "spoilage not recorded")
                .await;
            if ends_report(&err) {
                self.store.release_report(&job.id, report).await?;
            }
            return Err(err.into());
        }
        if let Err(err) = self
            .store
            .spoil_card(&job, &write_off(), &reservation, Utc::now())
            .await
        {
            // A second report of the same card got the same blank (same key) as the
            // first, which the re-queued job now holds: it must not be given back.
            let now_holds = self.store.job(&job.id).await?.and_then(|j| j.reservation_id);
            if now_holds.as_deref() != Some(reservation.as_str()) {
                self.release(&reservation, &job.service_point, "spoilage not recorded")
                    .await;
            }
            return Err(about_job(err, &job.id).into());
        }
        tracing::info!(job = %job.id, "card spoiled; reprint queued");
        let job = self.job_or_not_found(&job_id).await?;
        Ok(Response::new(pb::ReportSpoiledResponse {
            job: Some(job_msg(&job)),
        }))
    }

    async fn issue_suket(
        &self,
        request: Request<pb::IssueSuketRequest>,
    ) -> Result<Response<pb::IssueSuketResponse>, Status> {
        let pb::IssueSuketRequest {
            nik,
            service_point_code,
        } = request.into_inner();
        let mut v = Violations::new();
        adminduk_kit::nik::nik_field("nik", &nik, &mut v);
        if region_of(&service_point_code).is_none() {
            v.add(
                "service_point_code",
                "must be a service point code such as 3275-KEC-01",
            );
        }
        v.into_result()?;
        // The 2022 rule: no suket while blanks are in stock.
        let (region, stock) = self.point_stock(&service_point_code).await?;
        if stock.available > 0 {
            return Err(ApiError::new(
                ErrorCode::FailedPrecondition,
                "blanks are in stock: a card is printed, not a suket",
            )
            .with_reason(
                ErrorReason::StockAvailable,
                [
                    ("available".to_owned(), stock.available.to_string()),
                    ("region_code".to_owned(), region.clone()),
                ],
            )
            .with_precondition(
                "STOCK",
                service_point_code.clone(),
                "a suket is only issued while the point's region has no blank",
            )
            .into());
        }
        let mut people = self.population.clone();
        let resident = people
            .get_resident(upstream::request(population::GetResidentRequest {
                nik: nik.clone(),
            }))
            .await
            .map_err(refused_by("population"))?
            .into_inner()
            .resident
            .ok_or_else(|| resident_not_found(&nik))?;
        if resident.life_status != population::LifeStatus::Alive as i32 {
            return Err(ApiError::new(
                ErrorCode::FailedPrecondition,
                "the resident is not alive and registered here",
            )
            .with_reason(ErrorReason::ResidentNotActive, [])
            .into());
        }
        // The suket stands in for a card of the resident's own regency, whose
        // stock is the one that ran out.
        let home = resident
            .address
            .as_ref()
            .and_then(|a| a.village_code.get(..4))
            .unwrap_or_default();
        if home != region {
            return Err(ApiError::invalid_field(
                "service_point_code",
                format!("is not a service point of the resident's regency ({home})"),
            )
            .into());
        }
        let recorded = [
            population::RecordingStatus::Recorded as i32,
            population::RecordingStatus::PrintReady as i32,
        ];
        if !recorded.contains(&resident.recording_status) {
            return Err(ApiError::new(
                ErrorCode::FailedPrecondition,
                "a suket is only for residents whose biometrics are recorded",
            )
            .with_reason(ErrorReason::NotRecorded, [])
            .into());
        }
        let today = adminduk_kit::time::today_wib();
        let id = uuid::Uuid::now_v7().to_string();
        let valid_until = suket_valid_until(today);
        self.store
            .insert_suket(&id, &nik, &region, &service_point_code, valid_until, Utc::now())
            .await
            .map_err(|err| match err {
                StoreError::SuketExists(held) => {
                    ApiError::new(ErrorCode::AlreadyExists, "the resident already holds a suket")
                        .with_reason(ErrorReason::SuketExists, [("suket_id".to_owned(), held)])
                }
                other => other.into(),
            })?;
        Ok(Response::new(pb::IssueSuketResponse {
            suket_id: id,
            valid_until: Some(convert::date(valid_until)),
        }))
    }

    async fn dispatch(
        &self,
        request: Request<pb::DispatchRequest>,
    ) -> Result<Response<pb::DispatchResponse>, Status> {
        let pb::DispatchRequest {
            job_ids,
            method,
            batch_reference,
        } = request.into_inner();
        let mut v = Violations::new();
        if job_ids.is_empty() || job_ids.len() > 1_000 {
            v.add("job_ids", "must name 1 to 1000 jobs");
        }
        // Every wrong id is counted, the first few named: an answer naming a
        // thousand ids would be too large for a client to read.
        let mut wrong = 0usize;
        for (i, id) in job_ids.iter().enumerate().take(1_000) {
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
        let (sent, rerouted) = self
            .store
            .dispatch(&job_ids, post, &batch_reference, Utc::now())
            .await?;
        if rerouted > 0 {
            tracing::info!(
                rerouted,
                "cards of recalled villages sent to the office, not by post"
            );
        }
        Ok(Response::new(pb::DispatchResponse {
            dispatched: i32::try_from(sent).unwrap_or(i32::MAX),
            rerouted: i32::try_from(rerouted).unwrap_or(i32::MAX),
        }))
    }

    async fn record_delivery(
        &self,
        request: Request<pb::RecordDeliveryRequest>,
    ) -> Result<Response<pb::RecordDeliveryResponse>, Status> {
        let pb::RecordDeliveryRequest { job_id, outcome } = request.into_inner();
        let outcome = match pb::DeliveryOutcome::try_from(outcome) {
            Ok(pb::DeliveryOutcome::Delivered) => Outcome::Delivered,
            Ok(pb::DeliveryOutcome::ReturnedDeceased) => Outcome::ReturnedDeceased,
            Ok(pb::DeliveryOutcome::ReturnedMoved) => Outcome::ReturnedMoved,
            Ok(pb::DeliveryOutcome::ReturnedUnclearAddress) => Outcome::ReturnedUnclearAddress,
            _ => return Err(ApiError::invalid_field("outcome", "must be a delivery outcome").into()),
        };
        let mut v = Violations::new();
        job_id_field("job_id", &job_id, &mut v);
        v.into_result()?;
        let job = self.job_or_not_found(&job_id).await?;
        let Some(from) = job.card_state else {
            return Err(
                ApiError::new(ErrorCode::FailedPrecondition, "the card was never printed")
                    .with_reason(
                        ErrorReason::NotDispatched,
                        [("job_id".to_owned(), job.id.clone())],
                    )
                    .into(),
            );
        };
        // The same report again (a courier's retry) is answered as the first was.
        if delivery_recorded(from, job.return_reason.as_deref(), outcome) {
            return Ok(Response::new(pb::RecordDeliveryResponse {
                card_state: card_msg(from).into(),
            }));
        }
        let to = after_delivery(from, outcome).map_err(|refusal| {
            ApiError::new(ErrorCode::FailedPrecondition, refusal.message()).with_reason(
                match refusal {
                    DeliveryRefusal::NotDispatched => ErrorReason::NotDispatched,
                    DeliveryRefusal::AlreadyDelivered => ErrorReason::AlreadyDelivered,
                    DeliveryRefusal::AtServicePoint => ErrorReason::AtServicePoint,
                },
                [
                    ("job_id".to_owned(), job.id.clone()),
                    ("card_state".to_owned(), from.as_str().to_owned()),
                ],
            )
        })?;
        self.store
            .record_delivery(&job, from, to, outcome, Utc::now())
            .await
            .map_err(|err| about_job(err, &job.id))?;
        if outcome == Outcome::ReturnedDeceased {
            // The registry is asked to look: a review row is written, and the resident's record read now.
            let mut people = self.population.clone();
            if let Ok(r) = people
                .get_resident(upstream::request(population::GetResidentRequest {
                    nik: job.nik.clone(),
                }))
                .await
            {
                let alive = r
                    .into_inner()
                    .resident
                    .is_some_and(|r| r.life_status == population::LifeStatus::Alive as i32);
                tracing::info!(job = %job.id, recorded_alive = alive, "card returned: owner reported deceased; life status under review");
            }
        }
        Ok(Response::new(pb::RecordDeliveryResponse {
            card_state: card_msg(to).into(),
        }))
    }

    async fn recall(
        &self,
        request: Request<pb::RecallRequest>,
    ) -> Result<Response<pb::RecallResponse>, Status> {
        let pb::RecallRequest { village_code, reason } = request.into_inner();
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
        let recalled = self.store.recall(&village_code, &reason, Utc::now()).await?;
        tracing::info!(village = %village_code, recalled, reason = %reason, "cards recalled to the office");
        Ok(Response::new(pb::RecallResponse {
            recalled: i32::try_from(recalled).unwrap_or(i32::MAX),
        }))
    }

    async fn get_funnel(
        &self,
        request: Request<pb::GetFunnelRequest>,
    ) -> Result<Response<pb::GetFunnelResponse>, Status> {
        let pb::GetFunnelRequest {
            region_code,
            from_date,
            to_date,
        } = request.into_inner();
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
        let from = from.and_then(start_of).unwrap_or(chrono::DateTime::UNIX_EPOCH);
        let to = to
            .and_then(|d| d.succ_opt())
            .and_then(start_of)
            .map_or_else(Utc::now, |t| t - chrono::Duration::milliseconds(1));
        let f = self.store.funnel(&region_code, from, to).await?;
        Ok(Response::new(pb::GetFunnelResponse {
            printed: f.printed,
            spoiled: f.spoiled,
            duplicates_prevented: f.duplicates_prevented,
            recalled: f.recalled,
            dispatched_pickup: f.dispatched_pickup,
            dispatched_post: f.dispatched_post,
            delivered: f.delivered,
            returned_deceased: f.returned_deceased,
            returned_moved: f.returned_moved,
            returned_unclear_address: f.returned_unclear_address,
            waiting_dispatch: f.waiting_dispatch,
            in_transit: f.in_transit,
            at_service_point: f.at_service_point,
            spoiled_in_printer: f.spoiled_in_printer,
            unaccounted: f.unaccounted(),
        }))
    }

    async fn get_backlog(
        &self,
        request: Request<pb::GetBacklogRequest>,
    ) -> Result<Response<pb::GetBacklogResponse>, Status> {
        let pb::GetBacklogRequest { region_code } = request.into_inner();
        let mut v = Violations::new();
        adminduk_kit::codes::regency_field("region_code", &region_code, &mut v);
        v.into_result()?;
        let today = adminduk_kit::time::today_wib();
        let waiting = self.store.waiting_by_priority(&region_code).await?;
        let sukets = self.store.suket_holders(&region_code, today).await?;
        let weekly = self
            .store
            .printed_since(&region_code, Utc::now() - chrono::Duration::days(7))
            .await?;
        let total: i64 = waiting.iter().map(|(_, n)| n).sum::<i64>() + sukets;
        let saved = waiting.iter().filter(|(p, _)| *p == 5).map(|(_, n)| n).sum();
        Ok(Response::new(pb::GetBacklogResponse {
            waiting: waiting
                .into_iter()
                .map(|(priority, waiting)| pb::PriorityCount {
                    priority: i32::try_from(priority).unwrap_or(5),
                    waiting,
                })
                .collect(),
            suket_holders: sukets,
            weekly_throughput: weekly,
            forecast_clear_date: forecast_clear(total, weekly, today).map(convert::date),
            blanks_saved_by_ikd: saved,
        }))
    }
}
