//! The gRPC face of printing: thin handlers over the store, with the
//! population service (is the resident alive and print-ready?) and the
//! inventory (a blank per job) called over gRPC.

use std::time::Duration;

use chrono::{NaiveDate, Utc};
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use tonic_types::StatusExt as _;

use adminduk_kit::{ApiError, ErrorCode, Violations, mask_nik};
use adminduk_proto::convert;
use adminduk_proto::inventory::v1 as inventory;
use adminduk_proto::population::v1 as population;
use adminduk_proto::printing::v1 as pb;
use inventory::inventory_service_client::InventoryServiceClient;
use pb::printing_service_server::PrintingService;
use population::population_service_client::PopulationServiceClient;

use crate::domain::{
    CardState, Outcome, PrintReason, after_delivery, forecast_clear, priority, suket_valid_until,
};
use crate::store::{Job, JobState, NewJob, Store, StoreError, WriteOff};

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

fn upstream<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    adminduk_kit::telemetry::inject_context(request.metadata_mut());
    request.set_timeout(Duration::from_secs(5));
    request
}

fn unavailable(what: &str) -> ApiError {
    ApiError::unavailable(
        format!("the {what} service cannot be reached"),
        Duration::from_secs(1),
    )
}

fn store_error(err: StoreError) -> ApiError {
    match err {
        StoreError::ActiveJobExists => ApiError::new(
            ErrorCode::AlreadyExists,
            "the resident already has an active print job",
        )
        .with_reason("PRINT_JOB_EXISTS", []),
        StoreError::WrongState => ApiError::new(
            ErrorCode::FailedPrecondition,
            "the job is not in the state this needs",
        )
        .with_reason("JOB_STATE", []),
        StoreError::Corrupt(_) => ApiError::internal(&err),
        StoreError::Db(db) => ApiError::from(db),
    }
}

/// The answer to a report from a printer without a live lease on the job.
fn no_live_lease() -> ApiError {
    ApiError::new(
        ErrorCode::FailedPrecondition,
        "this printer holds no live lease on the job",
    )
    .with_reason("LEASE_EXPIRED", [])
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
        .with_reason("SERIAL_TAKEN", [])
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
        for (nik, point) in self.store.open_sukets(today, 100).await.map_err(store_error)? {
            if let Some(job) = self.store.active_job(&nik).await.map_err(store_error)? {
                self.store
                    .convert_suket(&nik, &job.id)
                    .await
                    .map_err(store_error)?;
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
                        let next = status
                            .get_error_details()
                            .error_info()
                            .and_then(|i| i.metadata.get("next_dates_with_room").cloned())
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
    async fn duplicate(&self, first: &Job, region: &str) -> Status {
        if let Err(err) = self.store.record_duplicate(&first.id, region, Utc::now()).await {
            tracing::warn!(error = %err, "a prevented duplicate was not counted");
        }
        ApiError::new(
            ErrorCode::AlreadyExists,
            "the resident already has an active print job",
        )
        .with_reason("PRINT_JOB_EXISTS", [("job_id".to_owned(), first.id.clone())])
        .into()
    }

    /// Writes off a blank ruined in the printer: the inventory's stock loses
    /// it (a spoilage of one, outside the job's hold), and the job, still
    /// leased, keeps its hold to print on another blank. A retried report
    /// finds its blank written off and is answered the same.
    /// `ruined_on` is the job on which a blank with this serial was written
    /// off before, if any.
    async fn spoil_in_printer(
        &self,
        job: &Job,
        ruined: &RuinedBlank<'_>,
        ruined_on: Option<&str>,
    ) -> Result<Job, Status> {
        let mut v = Violations::new();
        if ruined.printer.trim().is_empty() {
            v.add("printer_id", "is required for a blank ruined in the printer");
        }
        if ruined.serial.trim().is_empty() || ruined.serial.len() > 64 {
            v.add("card_serial", "is required: the ruined blank's serial");
        }
        v.into_result()?;
        let retried = match ruined_on {
            Some(on) if on == job.id => true,
            Some(_) => return Err(serial_taken().into()),
            None => false,
        };
        if !retried {
            let live = job.printer_id.as_deref() == Some(ruined.printer)
                && job.lease_expires_at.is_some_and(|t| t > Utc::now());
            if !live {
                return Err(no_live_lease().into());
            }
            if self
                .store
                .serial_taken(ruined.serial)
                .await
                .map_err(store_error)?
            {
                return Err(serial_taken().into());
            }
        }
        // The books of blanks first: if the job's row then cannot change (its
        // lease lapsed in between), the stock is still right.
        self.record_spoilage(
            job,
            &ruined.write_off,
            format!("ruined-blank-{}", ruined.serial),
            String::new(),
        )
        .await?;
        if !retried {
            self.store
                .spoil_blank(job, ruined.printer, ruined.serial, &ruined.write_off, Utc::now())
                .await
                .map_err(store_error)?;
            tracing::info!(job = %job.id, "blank ruined in the printer; written off");
        }
        Ok(self.job_or_not_found(&job.id).await?)
    }

    /// Tells the inventory that one of `job`'s region's blanks is spoiled:
    /// `reservation` names its committed blank, or is empty for one from the
    /// stock. A retry finds its `reference` recorded, which is fine.
    async fn record_spoilage(
        &self,
        job: &Job,
        write_off: &WriteOff<'_>,
        reference: String,
        reservation: String,
    ) -> Result<(), Status> {
        let mut client = self.inventory.clone();
        let recorded = client
            .record_spoilage(upstream(inventory::RecordSpoilageRequest {
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
            Err(status) if status.code() == Code::FailedPrecondition => Err(status),
            Err(_) => Err(unavailable("inventory").into()),
        }
    }

    async fn job_or_not_found(&self, id: &str) -> Result<Job, ApiError> {
        self.store
            .job(id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ApiError::not_found("print job"))
    }

    /// Holds a blank for a job at a point and day; refusals from the inventory pass through.
    async fn reserve(&self, point: &str, day: NaiveDate, nik: &str, key: &str) -> Result<String, Status> {
        let mut client = self.inventory.clone();
        let reservation = client
            .reserve(upstream(inventory::ReserveRequest {
                service_point_code: point.to_owned(),
                date: Some(convert::date(day)),
                applicant_nik: nik.to_owned(),
                idempotency_key: key.to_owned(),
                purpose: inventory::BlankPurpose::KtpEl.into(),
            }))
            .await
            .map_err(|status| match status.code() {
                // A full date or a bad point is the inventory's answer to give, details and all.
                Code::ResourceExhausted | Code::InvalidArgument | Code::AlreadyExists | Code::Aborted => {
                    status
                }
                _ => unavailable("inventory").into(),
            })?
            .into_inner()
            .reservation
            .ok_or_else(|| Status::internal("internal error"))?;
        Ok(reservation.id)
    }

    /// Consumes a job's blank; a refusal (the hold is not held) passes through.
    async fn commit(&self, reservation: &str, point: &str) -> Result<(), Status> {
        let mut client = self.inventory.clone();
        client
            .commit(upstream(inventory::CommitRequest {
                reservation_id: reservation.to_owned(),
                service_point_code: point.to_owned(),
            }))
            .await
            .map(drop)
            .map_err(|status| {
                if status.code() == Code::FailedPrecondition {
                    status
                } else {
                    unavailable("inventory").into()
                }
            })
    }

    async fn release(&self, reservation: &str, point: &str, reason: &str) {
        let mut client = self.inventory.clone();
        let result = client
            .release(upstream(inventory::ReleaseRequest {
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
        if nik.len() != 16 || !nik.bytes().all(|b| b.is_ascii_digit()) {
            v.add("nik", "must be 16 digits");
        }
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
        // One active job per NIK: no card is printed twice.
        if let Some(first) = self.store.active_job(&nik).await.map_err(store_error)? {
            return Err(self.duplicate(&first, &region).await);
        }
        // The inventory first: on the peak morning nearly every answer is "full", and it is cheap.
        let job_id = uuid::Uuid::now_v7().to_string();
        let reservation = match self
            .reserve(&service_point_code, day, &nik, &format!("print-{job_id}"))
            .await
        {
            Ok(reservation) => reservation,
            // A racing application for the same NIK won the blank (or is winning it):
            // name its job once it is stored. The winner stores it right after its own
            // checks; under load that can take a while, and only the race itself waits.
            Err(status) if matches!(status.code(), Code::AlreadyExists | Code::Aborted) => {
                let held = status
                    .get_error_details()
                    .error_info()
                    .and_then(|i| i.metadata.get("reservation_id").cloned());
                for _ in 0..500 {
                    let first = match &held {
                        Some(held) => self.store.job_with_reservation(held).await,
                        None => self.store.active_job(&nik).await,
                    }
                    .map_err(store_error)?;
                    if let Some(first) = first {
                        return Err(self.duplicate(&first, &region).await);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                return Err(status);
            }
            Err(status) => return Err(status),
        };
        let release = |why: &'static str| self.release(&reservation, &service_point_code, why);

        let mut people = self.population.clone();
        let resident = match people
            .get_resident(upstream(population::GetResidentRequest { nik: nik.clone() }))
            .await
        {
            Ok(r) => r.into_inner().resident,
            Err(status) if status.code() == Code::NotFound => {
                release("resident not found").await;
                return Err(ApiError::not_found("resident").into());
            }
            Err(_) => {
                release("population unavailable").await;
                return Err(unavailable("population").into());
            }
        };
        let Some(resident) = resident else {
            release("resident not found").await;
            return Err(ApiError::not_found("resident").into());
        };
        if resident.life_status != population::LifeStatus::Alive as i32 {
            release("resident not alive").await;
            return Err(ApiError::new(
                ErrorCode::FailedPrecondition,
                "the resident is not alive and registered here",
            )
            .with_reason("RESIDENT_NOT_ACTIVE", [])
            .into());
        }
        if resident.recording_status != population::RecordingStatus::PrintReady as i32 {
            release("not print-ready").await;
            return Err(ApiError::new(
                ErrorCode::FailedPrecondition,
                "the record is not print-ready (PRR)",
            )
            .with_reason("NOT_PRINT_READY", [])
            .with_precondition("PRR", "nik", "the KTP-el record must be print-ready")
            .into());
        }
        let today = adminduk_kit::time::today_wib();
        let birth = resident
            .birth_date
            .as_ref()
            .and_then(convert::to_naive)
            .unwrap_or(today);
        let has_suket = self.store.has_suket(&nik, today).await.map_err(store_error)?;
        let village = resident.address.map(|a| a.village_code).unwrap_or_default();
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
            reservation_id: &reservation,
        };
        if let Err(err) = self.store.insert_job(&new, now).await {
            release("job not stored").await;
            if let StoreError::ActiveJobExists = err
                && let Some(first) = self.store.active_job(&nik).await.map_err(store_error)?
            {
                return Err(self.duplicate(&first, &region).await);
            }
            return Err(store_error(err).into());
        }
        if has_suket {
            self.store
                .convert_suket(&nik, &job_id)
                .await
                .map_err(store_error)?;
        }
        tracing::info!(nik = %mask_nik(&nik), job = %job_id, priority = new.priority, "print job queued");
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
        if printer_id.trim().is_empty() || printer_id.len() > 64 {
            v.add("printer_id", "is required");
        }
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
        let requeued = self.store.requeue_lapsed(now).await.map_err(store_error)?;
        if requeued > 0 {
            tracing::warn!(requeued, "leases lapsed; jobs back in the queue");
        }
        let deadline = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::minutes(5));
        let jobs = self
            .store
            .lease(&printer_id, i64::from(max_jobs), deadline, now)
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::LeaseJobsResponse {
            jobs: jobs.iter().map(job_msg).collect(),
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
        if card_serial.trim().is_empty() || card_serial.len() > 64 {
            v.add("card_serial", "is required");
        }
        if printer_id.trim().is_empty() {
            v.add("printer_id", "is required");
        }
        v.into_result()?;
        let job = self.job_or_not_found(&job_id).await?;
        // A retried report of the same print, from the printer that printed it, is
        // answered the same; the card is printed once. Any other printer has no lease.
        if job.state == JobState::Printed
            && job.card_serial.as_deref() == Some(card_serial.as_str())
            && job.printer_id.as_deref() == Some(printer_id.as_str())
        {
            return Ok(Response::new(pb::ReportPrintedResponse {
                job: Some(job_msg(&job)),
            }));
        }
        let now = Utc::now();
        let live = job.state == JobState::Leased
            && job.printer_id.as_deref() == Some(printer_id.as_str())
            && job.lease_expires_at.is_some_and(|t| t > now);
        if !live {
            return Err(no_live_lease().into());
        }
        // A serial used before is a misread or a second card: refused before the blank is consumed.
        if self.store.serial_taken(&card_serial).await.map_err(store_error)? {
            return Err(serial_taken().into());
        }
        let reservation = job.reservation_id.clone().unwrap_or_default();
        match self.commit(&reservation, &job.service_point).await {
            Ok(()) => {}
            // The job waited past its appointment day and its hold lapsed: the card is
            // being printed now, so it takes a blank now, and that one is consumed.
            Err(status) if status.code() == Code::FailedPrecondition => {
                let day = job.day.max(adminduk_kit::time::today_wib());
                let key = format!("print-{}-{}", job.id, job.blanks_taken + 1);
                let fresh = self.reserve(&job.service_point, day, &job.nik, &key).await?;
                self.store
                    .replace_reservation(&job.id, &fresh, now)
                    .await
                    .map_err(store_error)?;
                self.commit(&fresh, &job.service_point).await?;
            }
            Err(status) => return Err(status),
        }
        self.store
            .mark_printed(&job.id, &printer_id, &card_serial, now)
            .await
            .map_err(store_error)?;
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
        for (field, value) in [
            ("reason", &reason),
            ("reported_by", &reported_by),
            ("approved_by", &approved_by),
        ] {
            if value.trim().is_empty() {
                v.add(field, "is required");
            }
        }
        if !approved_by.trim().is_empty() && approved_by.trim() == reported_by.trim() {
            v.add("approved_by", "must be a second person, not the reporter");
        }
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
            self.store
                .ruined_blank_job(&card_serial)
                .await
                .map_err(store_error)?
        };
        let retried = ruined_on.as_deref() == Some(job.id.as_str());
        if in_printer && (job.state == JobState::Leased || retried) {
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
            .with_reason("JOB_STATE", [])
            .into());
        }
        if !card_serial.is_empty() && job.card_serial.as_deref() != Some(card_serial.as_str()) {
            return Err(
                ApiError::invalid_field("card_serial", "is not the serial of this job's card").into(),
            );
        }
        // The damaged card's blank was consumed when it was printed: the inventory now
        // counts it as spoiled.
        let serial = job.card_serial.clone().unwrap_or_default();
        self.record_spoilage(
            &job,
            &write_off(),
            format!("spoiled-card-{serial}"),
            job.reservation_id.clone().unwrap_or_default(),
        )
        .await?;
        // The reprint takes a new blank.
        let today = adminduk_kit::time::today_wib();
        let day = job.day.max(today);
        let key = format!("print-{}-{}", job.id, job.blanks_taken + 1);
        let reservation = self.reserve(&job.service_point, day, &job.nik, &key).await?;
        if let Err(err) = self
            .store
            .spoil_card(&job, &write_off(), &reservation, Utc::now())
            .await
        {
            // A second report of the same card got the same blank (same key) as the
            // first, which the re-queued job now holds: it must not be given back.
            let now_holds = self
                .store
                .job(&job.id)
                .await
                .map_err(store_error)?
                .and_then(|j| j.reservation_id);
            if now_holds.as_deref() != Some(reservation.as_str()) {
                self.release(&reservation, &job.service_point, "spoilage not recorded")
                    .await;
            }
            return Err(store_error(err).into());
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
        if nik.len() != 16 || !nik.bytes().all(|b| b.is_ascii_digit()) {
            v.add("nik", "must be 16 digits");
        }
        let region = region_of(&service_point_code).map(str::to_owned);
        if region.is_none() {
            v.add(
                "service_point_code",
                "must be a service point code such as 3275-KEC-01",
            );
        }
        v.into_result()?;
        let region = region.unwrap_or_default();
        // The 2022 rule: no suket while blanks are in stock.
        let mut client = self.inventory.clone();
        let stock = client
            .get_stock(upstream(inventory::GetStockRequest {
                region_code: region.clone(),
            }))
            .await
            .map_err(|status| {
                if status.code() == Code::InvalidArgument {
                    status
                } else {
                    unavailable("inventory").into()
                }
            })?
            .into_inner()
            .stock
            .unwrap_or_default();
        if stock.available > 0 {
            return Err(ApiError::new(
                ErrorCode::FailedPrecondition,
                "blanks are in stock: a card is printed, not a suket",
            )
            .with_reason(
                "STOCK_AVAILABLE",
                [("available".to_owned(), stock.available.to_string())],
            )
            .with_precondition(
                "STOCK",
                "region",
                "a suket is only issued while the region has no blank",
            )
            .into());
        }
        let mut people = self.population.clone();
        let resident = people
            .get_resident(upstream(population::GetResidentRequest { nik: nik.clone() }))
            .await
            .map_err(|status| {
                if status.code() == Code::NotFound {
                    ApiError::not_found("resident").into()
                } else {
                    Status::from(unavailable("population"))
                }
            })?
            .into_inner()
            .resident
            .unwrap_or_default();
        let recorded = [
            population::RecordingStatus::Recorded as i32,
            population::RecordingStatus::PrintReady as i32,
        ];
        if resident.life_status != population::LifeStatus::Alive as i32
            || !recorded.contains(&resident.recording_status)
        {
            return Err(ApiError::new(
                ErrorCode::FailedPrecondition,
                "a suket is only for living residents whose biometrics are recorded",
            )
            .with_reason("NOT_RECORDED", [])
            .into());
        }
        let today = adminduk_kit::time::today_wib();
        let id = uuid::Uuid::now_v7().to_string();
        let valid_until = suket_valid_until(today);
        self.store
            .insert_suket(&id, &nik, &region, &service_point_code, valid_until, Utc::now())
            .await
            .map_err(|err| match err {
                StoreError::ActiveJobExists => {
                    ApiError::new(ErrorCode::AlreadyExists, "the resident already holds a suket")
                        .with_reason("SUKET_EXISTS", [])
                }
                other => store_error(other),
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
        let post = match pb::DispatchMethod::try_from(method) {
            Ok(pb::DispatchMethod::Pickup) => false,
            Ok(pb::DispatchMethod::Post) => {
                if batch_reference.trim().is_empty() {
                    v.add("batch_reference", "is required for the post");
                }
                true
            }
            _ => {
                v.add("method", "must be PICKUP or POST");
                false
            }
        };
        v.into_result()?;
        let (sent, rerouted) = self
            .store
            .dispatch(&job_ids, post, &batch_reference, Utc::now())
            .await
            .map_err(|err| match err {
                StoreError::WrongState => ApiError::new(
                    ErrorCode::FailedPrecondition,
                    "every job must be a printed card not yet sent out; nothing was dispatched",
                )
                .with_reason("NOT_DISPATCHABLE", []),
                other => store_error(other),
            })?;
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
        let job = self.job_or_not_found(&job_id).await?;
        let Some(from) = job.card_state else {
            return Err(
                ApiError::new(ErrorCode::FailedPrecondition, "the card was never printed")
                    .with_reason("NOT_DISPATCHED", [])
                    .into(),
            );
        };
        let to = after_delivery(from, outcome).map_err(|why| {
            ApiError::new(ErrorCode::FailedPrecondition, why).with_reason(
                "NOT_DISPATCHED",
                [("card_state".to_owned(), from.as_str().to_owned())],
            )
        })?;
        self.store
            .record_delivery(&job, from, to, outcome, Utc::now())
            .await
            .map_err(store_error)?;
        if outcome == Outcome::ReturnedDeceased {
            // The registry is asked to look: a review row is written, and the resident's record read now.
            let mut people = self.population.clone();
            if let Ok(r) = people
                .get_resident(upstream(population::GetResidentRequest { nik: job.nik.clone() }))
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
        if village_code.len() != 10 || !village_code.bytes().all(|b| b.is_ascii_digit()) {
            v.add("village_code", "must be a 10-digit kelurahan/desa code");
        }
        if reason.trim().is_empty() {
            v.add("reason", "is required");
        }
        v.into_result()?;
        let recalled = self
            .store
            .recall(&village_code, reason.trim(), Utc::now())
            .await
            .map_err(store_error)?;
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
        if region_code.len() != 4 || !region_code.bytes().all(|b| b.is_ascii_digit()) {
            v.add("region_code", "must be a 4-digit regency code");
        }
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
        let f = self
            .store
            .funnel(&region_code, from, to)
            .await
            .map_err(store_error)?;
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
        if region_code.len() != 4 || !region_code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::invalid_field("region_code", "must be a 4-digit regency code").into());
        }
        let today = adminduk_kit::time::today_wib();
        let waiting = self
            .store
            .waiting_by_priority(&region_code)
            .await
            .map_err(store_error)?;
        let sukets = self
            .store
            .suket_holders(&region_code, today)
            .await
            .map_err(store_error)?;
        let weekly = self
            .store
            .printed_since(&region_code, Utc::now() - chrono::Duration::days(7))
            .await
            .map_err(store_error)?;
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

/// Reads the ErrorInfo reason of a status (for logs and tests).
pub fn status_reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}
