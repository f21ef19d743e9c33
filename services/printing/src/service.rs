//! Printing's workflows as plain functions over its store and its two peers:
//! an application with its blank (and what is undone when a step fails), a
//! lease, a print, a spoilage, a suket, dispatch and delivery. The gRPC
//! layer only converts messages and calls these.

use chrono::{DateTime, NaiveDate, Utc};

use adminduk_kit::{ApiError, ErrorCode, ErrorReason};
use adminduk_proto::convert as pbconvert;
use adminduk_proto::population::v1 as population;

use crate::convert::{
    Application, DeliveryReport, Dispatch, FunnelAsk, LeaseAsk, PrintedReport, Recall, SpoiledReport,
    SuketAsk, region_of,
};
use crate::domain::{
    CardState, DeliveryRefusal, Outcome, PrintReason, after_delivery, delivery_recorded, forecast_clear,
    priority, suket_valid_until,
};
use crate::error::{about_job, ends_report, job_not_found, no_live_lease, serial_taken};
use crate::peers::{self, Peers};
use crate::store::{Funnel, Job, JobState, NewJob, Report, Store, StoreError, WriteOff};

/// How long a stored job may wait for its blank before a new submission
/// takes it for the remains of one that died.
const ABANDONED_SUBMISSION: chrono::Duration = chrono::Duration::seconds(60);

/// Printing: its store and the services it calls (cheap to clone).
#[derive(Debug, Clone)]
pub struct Printing {
    store: Store,
    peers: Peers,
}

/// A suket issued: its id and last valid day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suket {
    /// The suket's id.
    pub id: String,
    /// Its last valid day.
    pub valid_until: NaiveDate,
}

/// Cards dispatched: how many, and how many of them went to the office
/// instead of by post (their village is recalled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dispatched {
    /// Cards sent out.
    pub sent: u64,
    /// Of those, sent to the office rather than by post.
    pub rerouted: u64,
}

/// A region's waiting work and how fast it clears.
#[derive(Debug, Clone, PartialEq)]
pub struct Backlog {
    /// Jobs waiting to print, by priority (1 first).
    pub waiting: Vec<(i64, i64)>,
    /// Residents holding a suket and no card yet.
    pub suket_holders: i64,
    /// Cards printed in the last 7 days.
    pub weekly_throughput: i64,
    /// When the backlog clears at that pace, if it does.
    pub forecast_clear: Option<NaiveDate>,
    /// Blanks left unspent by residents whose IKD is active (priority 5 waits).
    pub blanks_saved_by_ikd: i64,
}

/// A blank ruined in the printer, as reported.
#[derive(Debug)]
struct RuinedBlank<'a> {
    printer: &'a str,
    serial: &'a str,
    write_off: WriteOff<'a>,
}

impl Printing {
    /// Printing over its store and channels to population and the inventory.
    pub fn new(store: Store, peers: Peers) -> Self {
        Self { store, peers }
    }

    /// The store the workflows read and write.
    pub fn store(&self) -> &Store {
        &self.store
    }

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
            let Some(region) = region_of(&point).map(str::to_owned) else {
                continue;
            };
            let mut day = today + chrono::Days::new(1);
            for _ in 0..2 {
                let application = Application {
                    nik: nik.clone(),
                    reason: PrintReason::FirstCard,
                    region: region.clone(),
                    service_point: point.clone(),
                    day,
                    has_active_ikd: false,
                };
                match self.submit(application).await {
                    Ok(_) => {
                        converted += 1;
                        break;
                    }
                    // A full day names the next days with room: try the first once.
                    Err(err) if err.code() == ErrorCode::ResourceExhausted => {
                        let next = err
                            .details()
                            .error_info()
                            .and_then(|info| info.metadata.get("next_dates_with_room"))
                            .and_then(|dates| dates.split(',').next())
                            .and_then(|d| d.parse::<NaiveDate>().ok());
                        match next {
                            Some(next) => day = next,
                            None => break,
                        }
                    }
                    Err(err) => {
                        tracing::info!(code = ?err.code(), "suket not converted yet");
                        break;
                    }
                }
            }
        }
        Ok(converted)
    }

    /// Queues a card: everything that can refuse without changing anything
    /// is asked first, then the job is stored and its blank held. A refused
    /// application leaves no hold and no job behind.
    pub async fn submit(&self, app: Application) -> Result<Job, ApiError> {
        let now = Utc::now();
        // One active job per NIK: no card is printed twice.
        if let Some(first) = self.live_active_job(&app.nik, now).await? {
            return Err(self.duplicate(&first, &app.region).await);
        }
        if app.reason == PrintReason::FirstCard
            && let Some(printed) = self.store.printed_job_of(&app.nik).await?
        {
            return Err(ApiError::new(
                ErrorCode::FailedPrecondition,
                "the resident's first card was printed already; apply for a replacement (LOST, DAMAGED, DATA_CHANGE or DISASTER)",
            )
            .with_reason(ErrorReason::FirstCardIssued, [("job_id".to_owned(), printed.id.clone())])
            .with_precondition("FIRST_CARD", "reason", "a resident is given one first card"));
        }
        let resident = self.peers.resident(&app.nik).await?;
        peers::print_ready(&resident)?;
        let (job_id, has_suket) = self.store_job(&app, &resident, now).await?;
        self.hold_blank(&job_id, &app.service_point, app.day, &app.nik)
            .await?;
        if has_suket {
            self.store.convert_suket(&app.nik, &job_id).await?;
        }
        tracing::info!(job = %job_id, "print job queued");
        self.job_or_not_found(&job_id).await
    }

    /// Stores an application's job (without its blank yet) at its priority,
    /// and says whether the resident holds a suket. The job is stored before
    /// its blank is held, so a racing application for the same NIK is told
    /// at once which job won.
    async fn store_job(
        &self,
        app: &Application,
        resident: &population::Resident,
        now: DateTime<Utc>,
    ) -> Result<(String, bool), ApiError> {
        let today = adminduk_kit::time::today_wib();
        let birth = resident
            .birth_date
            .as_ref()
            .and_then(pbconvert::to_naive)
            .unwrap_or(today);
        let has_suket = self.store.has_suket(&app.nik, today).await?;
        let village = resident
            .address
            .as_ref()
            .map(|a| a.village_code.clone())
            .unwrap_or_default();
        let job_id = uuid::Uuid::now_v7().to_string();
        let new = NewJob {
            id: &job_id,
            nik: &app.nik,
            region_code: &app.region,
            village_code: &village,
            reason: app.reason,
            priority: priority(
                app.reason,
                adminduk_kit::time::age(birth, today),
                has_suket,
                app.has_active_ikd,
            ),
            service_point: &app.service_point,
            day: app.day,
        };
        match self.store.insert_job(&new, now).await {
            Ok(()) => {
                tracing::info!(nik = %adminduk_kit::mask::log_nik(&app.nik), job = %job_id, priority = new.priority, "print job stored; its blank is held next");
                Ok((job_id, has_suket))
            }
            Err(StoreError::ActiveJobExists) => match self.store.active_job(&app.nik).await? {
                Some(first) => Err(self.duplicate(&first, &app.region).await),
                None => Err(StoreError::ActiveJobExists.into()),
            },
            Err(err) => Err(err.into()),
        }
    }

    /// Leases up to `max_jobs` of the queue to a printer, after putting the
    /// jobs of printers that died back. A job whose resident died or moved
    /// away since is cancelled, not leased.
    pub async fn lease(&self, ask: LeaseAsk) -> Result<Vec<Job>, ApiError> {
        let now = Utc::now();
        let requeued = self.store.requeue_lapsed(now).await?;
        if requeued > 0 {
            tracing::warn!(requeued, "leases lapsed; jobs back in the queue");
        }
        let deadline = now + chrono::Duration::from_std(ask.lease).unwrap_or(chrono::Duration::minutes(5));
        let jobs = self
            .store
            .lease(&ask.printer_id, ask.max_jobs, deadline, now)
            .await?;
        // Each job's resident is asked about at once, not one after another: a
        // lease of 100 jobs waits for one population round trip, not 100.
        let mut checks = tokio::task::JoinSet::new();
        for (index, job) in jobs.into_iter().enumerate() {
            let printing = self.clone();
            checks.spawn(async move {
                let printable = printing.still_printable(&job).await;
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
        Ok(checked.into_iter().map(|(_, job)| job).collect())
    }

    /// Records a printed card: the serial and the job are claimed, the blank
    /// consumed, then the job marked printed. A retried report from the same
    /// printer with the same serial is answered the same.
    pub async fn report_printed(&self, report: PrintedReport) -> Result<Job, ApiError> {
        let PrintedReport {
            job_id,
            printer_id,
            card_serial,
        } = report;
        let job = self.job_or_not_found(&job_id).await?;
        if job.state == JobState::Printed {
            return printed_already(job, &printer_id, &card_serial);
        }
        let now = Utc::now();
        // The serial and the job are claimed before the blank is consumed: of two
        // reports racing with one serial, or for one job with two, one goes on.
        let claim = Report::Print {
            printer: &printer_id,
            serial: &card_serial,
        };
        match self.store.claim_report(&job.id, claim, now).await {
            Ok(()) => {}
            // The job changed since it was read: a racing report may have printed
            // it meanwhile, and is answered as if it had been read printed.
            Err(StoreError::WrongState) => {
                let now_is = self.job_or_not_found(&job_id).await?;
                if now_is.state == JobState::Printed {
                    return printed_already(now_is, &printer_id, &card_serial);
                }
                return Err(no_live_lease());
            }
            Err(other) => return Err(other.into()),
        }
        if let Err(err) = self.consume_blank(&job, now).await {
            // Refused: nothing was consumed, so the claim goes. Unreachable: the
            // blank may be consumed, so only this report, retried, can go on.
            if ends_report(&err) {
                self.store.release_report(&job.id, claim).await?;
            }
            return Err(err);
        }
        self.store
            .mark_printed(&job.id, &printer_id, &card_serial, now)
            .await
            .map_err(|err| about_job(err, &job.id))?;
        self.job_or_not_found(&job_id).await
    }

    /// Writes off a blank ruined in the printer (the job keeps its hold and
    /// prints again) or a printed card not yet sent out (the job is queued
    /// again with a fresh blank).
    pub async fn report_spoiled(&self, report: SpoiledReport) -> Result<Job, ApiError> {
        let write_off = WriteOff {
            reason: &report.reason,
            reported_by: &report.reported_by,
            approved_by: &report.approved_by,
        };
        let job = self.job_or_not_found(&report.job_id).await?;
        // A blank ruined in the printer names its printer or its serial; a
        // report without them is about a printed card. A retried report still
        // finds its blank after the card came out on another one.
        let in_printer = !report.printer_id.is_empty() || !report.card_serial.is_empty();
        let ruined_on = if report.card_serial.is_empty() {
            None
        } else {
            self.store.ruined_blank_job(&report.card_serial).await?
        };
        let retried = ruined_on.as_deref() == Some(job.id.as_str());
        if in_printer && (job.state == JobState::Leased || retried) {
            let mut v = adminduk_kit::Violations::new();
            if report.printer_id.is_empty() {
                v.add("printer_id", "is required for a blank ruined in the printer");
            }
            if report.card_serial.is_empty() {
                v.add("card_serial", "is required: the ruined blank's serial");
            }
            v.into_result()?;
            let ruined = RuinedBlank {
                printer: &report.printer_id,
                serial: &report.card_serial,
                write_off,
            };
            return self.spoil_in_printer(&job, &ruined, ruined_on.as_deref()).await;
        }
        self.spoil_card(&job, &report.card_serial, &write_off).await?;
        tracing::info!(job = %job.id, "card spoiled; reprint queued");
        self.job_or_not_found(&job.id).await
    }

    /// Writes off a printed card not yet sent out: the card is claimed, the
    /// reprint's blank held, the inventory told, then the job queued again.
    /// Each step that fails undoes the ones before it.
    async fn spoil_card(
        &self,
        job: &Job,
        card_serial: &str,
        write_off: &WriteOff<'_>,
    ) -> Result<(), ApiError> {
        spoilable(job, card_serial)?;
        // The card is claimed for this report first, so it cannot be sent out
        // (or reported again with other words) while the inventory hears of it.
        let serial = job.card_serial.clone().unwrap_or_default();
        let claim = Report::DamagedCard { serial: &serial };
        self.store
            .claim_report(&job.id, claim, Utc::now())
            .await
            .map_err(|err| about_job(err, &job.id))?;
        // The reprint's blank is held next: if the date has none, the damaged
        // card is not written off either, and nothing has moved.
        let day = job.day.max(adminduk_kit::time::today_wib());
        let key = format!("print-{}-{}", job.id, job.blanks_taken + 1);
        let reservation = match self.peers.reserve(&job.service_point, day, &job.nik, &key).await {
            Ok(reservation) => reservation,
            Err(err) => {
                if ends_report(&err) {
                    self.store.release_report(&job.id, claim).await?;
                }
                return Err(err);
            }
        };
        // The damaged card's blank was consumed when it was printed: the inventory now
        // counts it as spoiled.
        let reference = format!("spoiled-card-{serial}");
        let consumed = job.reservation_id.clone().unwrap_or_default();
        if let Err(err) = self
            .peers
            .record_spoilage(job, write_off, reference, consumed)
            .await
        {
            self.peers
                .release(&reservation, &job.service_point, "spoilage not recorded")
                .await;
            if ends_report(&err) {
                self.store.release_report(&job.id, claim).await?;
            }
            return Err(err);
        }
        if let Err(err) = self
            .store
            .spoil_card(job, write_off, &reservation, Utc::now())
            .await
        {
            // A second report of the same card got the same blank (same key) as the
            // first, which the re-queued job now holds: it must not be given back.
            let now_holds = self.store.job(&job.id).await?.and_then(|j| j.reservation_id);
            if now_holds.as_deref() != Some(reservation.as_str()) {
                self.peers
                    .release(&reservation, &job.service_point, "spoilage not recorded")
                    .await;
            }
            return Err(about_job(err, &job.id));
        }
        Ok(())
    }

    /// Issues a suket while the point's region has no blank: to a living
    /// resident of that regency whose biometrics are recorded.
    pub async fn issue_suket(&self, ask: SuketAsk) -> Result<Suket, ApiError> {
        let SuketAsk {
            nik,
            region,
            service_point,
        } = ask;
        // The 2022 rule: no suket while blanks are in stock.
        let stock = self.peers.point_stock(&region, &service_point).await?;
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
                service_point.clone(),
                "a suket is only issued while the point's region has no blank",
            ));
        }
        let resident = self.peers.resident(&nik).await?;
        if !peers::alive(&resident) {
            return Err(peers::not_alive());
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
            ));
        }
        if !peers::recorded(&resident) {
            return Err(ApiError::new(
                ErrorCode::FailedPrecondition,
                "a suket is only for residents whose biometrics are recorded",
            )
            .with_reason(ErrorReason::NotRecorded, []));
        }
        let id = uuid::Uuid::now_v7().to_string();
        let valid_until = suket_valid_until(adminduk_kit::time::today_wib());
        self.store
            .insert_suket(&id, &nik, &region, &service_point, valid_until, Utc::now())
            .await?;
        Ok(Suket { id, valid_until })
    }

    /// Sends printed cards out, all or none.
    pub async fn dispatch(&self, order: Dispatch) -> Result<Dispatched, ApiError> {
        let (sent, rerouted) = self
            .store
            .dispatch(&order.job_ids, order.post, &order.batch_reference, Utc::now())
            .await?;
        if rerouted > 0 {
            tracing::info!(
                rerouted,
                "cards of recalled villages sent to the office, not by post"
            );
        }
        Ok(Dispatched { sent, rerouted })
    }

    /// Records what happened at the door; the same report again is answered
    /// as the first was. Returns the card's state after it.
    pub async fn record_delivery(&self, report: DeliveryReport) -> Result<CardState, ApiError> {
        let DeliveryReport { job_id, outcome } = report;
        let job = self.job_or_not_found(&job_id).await?;
        let Some(from) = job.card_state else {
            return Err(
                ApiError::new(ErrorCode::FailedPrecondition, "the card was never printed").with_reason(
                    ErrorReason::NotDispatched,
                    [("job_id".to_owned(), job.id.clone())],
                ),
            );
        };
        // The same report again (a courier's retry) is answered as the first was.
        if delivery_recorded(from, job.return_reason.as_deref(), outcome) {
            return Ok(from);
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
            if let Ok(resident) = self.peers.lookup(&job.nik).await {
                let alive = resident.as_ref().is_some_and(peers::alive);
                tracing::info!(job = %job.id, recorded_alive = alive, "card returned: owner reported deceased; life status under review");
            }
        }
        Ok(to)
    }

    /// Sends a village's undelivered cards to the office instead of by post.
    pub async fn recall(&self, recall: Recall) -> Result<u64, ApiError> {
        let recalled = self
            .store
            .recall(&recall.village_code, &recall.reason, Utc::now())
            .await?;
        tracing::info!(village = %recall.village_code, recalled, reason = %recall.reason, "cards recalled to the office");
        Ok(recalled)
    }

    /// A region's funnel over a period.
    pub async fn funnel(&self, ask: FunnelAsk) -> Result<Funnel, ApiError> {
        Ok(self.store.funnel(&ask.region_code, ask.from, ask.to).await?)
    }

    /// A region's backlog and when it clears.
    pub async fn backlog(&self, region: &str) -> Result<Backlog, ApiError> {
        let today = adminduk_kit::time::today_wib();
        let waiting = self.store.waiting_by_priority(region).await?;
        let suket_holders = self.store.suket_holders(region, today).await?;
        let weekly_throughput = self
            .store
            .printed_since(region, Utc::now() - chrono::Duration::days(7))
            .await?;
        let total: i64 = waiting.iter().map(|(_, n)| n).sum::<i64>() + suket_holders;
        let blanks_saved_by_ikd = waiting.iter().filter(|(p, _)| *p == 5).map(|(_, n)| n).sum();
        Ok(Backlog {
            forecast_clear: forecast_clear(total, weekly_throughput, today),
            waiting,
            suket_holders,
            weekly_throughput,
            blanks_saved_by_ikd,
        })
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
    async fn live_active_job(&self, nik: &str, now: DateTime<Utc>) -> Result<Option<Job>, ApiError> {
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

    /// Holds the blank of a stored job; on any refusal the job is removed
    /// again, so a refused application leaves nothing behind.
    async fn hold_blank(
        &self,
        job_id: &str,
        point: &str,
        day: NaiveDate,
        nik: &str,
    ) -> Result<String, ApiError> {
        let held = self
            .peers
            .reserve(point, day, nik, &format!("print-{job_id}"))
            .await;
        let reservation = match held {
            Ok(reservation) => reservation,
            Err(err) => {
                self.store.discard_unheld(job_id).await?;
                return Err(self.explain_hold_refusal(nik, err).await);
            }
        };
        if let Err(err) = self.store.attach_reservation(job_id, &reservation).await {
            self.peers.release(&reservation, point, "job not stored").await;
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
        let claim = Report::Ruined {
            printer: ruined.printer,
            serial: ruined.serial,
        };
        if !retried {
            // The job is claimed for this report before the inventory hears of it:
            // a print racing it is told to wait, and its lease is checked there.
            self.store
                .claim_report(&job.id, claim, Utc::now())
                .await
                .map_err(|err| match err {
                    StoreError::WrongState => no_live_lease(),
                    other => other.into(),
                })?;
        }
        // The books of blanks first: if the job's row then cannot change (its
        // lease lapsed in between), the stock is still right.
        let reference = format!("ruined-blank-{}", ruined.serial);
        let recorded = self
            .peers
            .record_spoilage(job, &ruined.write_off, reference, String::new())
            .await;
        if let Err(err) = recorded {
            if !retried && ends_report(&err) {
                self.store.release_report(&job.id, claim).await?;
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

    async fn job_or_not_found(&self, id: &str) -> Result<Job, ApiError> {
        self.store.job(id).await?.ok_or_else(|| job_not_found(id))
    }

    /// Consumes the blank of a job whose print is claimed. A job that waited
    /// past its appointment day finds its hold lapsed: the card is printed
    /// now, so it takes a blank now, and that one is consumed.
    async fn consume_blank(&self, job: &Job, now: DateTime<Utc>) -> Result<(), ApiError> {
        let reservation = job.reservation_id.clone().unwrap_or_default();
        match self.peers.commit(&reservation, &job.service_point).await {
            Err(err) if err.code() == ErrorCode::FailedPrecondition => {
                let day = job.day.max(adminduk_kit::time::today_wib());
                let key = format!("print-{}-{}", job.id, job.blanks_taken + 1);
                let fresh = self
                    .peers
                    .reserve(&job.service_point, day, &job.nik, &key)
                    .await?;
                self.store.replace_reservation(&job.id, &fresh, now).await?;
                self.peers.commit(&fresh, &job.service_point).await
            }
            other => other,
        }
    }

    /// Whether a leased job's card may still be printed: its resident may have
    /// died or moved away since the application. Such a job is cancelled and
    /// its blank given back; when population cannot be asked, printing goes on
    /// (the card can still be recalled).
    async fn still_printable(&self, job: &Job) -> Result<bool, ApiError> {
        let alive = match self.peers.lookup(&job.nik).await {
            Ok(resident) => resident.as_ref().is_some_and(peers::alive),
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
                self.peers
                    .release(
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
}

/// Refuses a write-off of a card that is not a printed one not yet sent out,
/// or that names a serial other than the job's card's.
fn spoilable(job: &Job, card_serial: &str) -> Result<(), ApiError> {
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
        ));
    }
    if !card_serial.is_empty() && job.card_serial.as_deref() != Some(card_serial) {
        return Err(ApiError::invalid_field(
            "card_serial",
            "is not the serial of this job's card",
        ));
    }
    Ok(())
}

/// The answer to a report of a job already printed: the same print retried by
/// its printer gets the job; any other printer has no lease; another serial is
/// told the card was printed already.
fn printed_already(job: Job, printer_id: &str, card_serial: &str) -> Result<Job, ApiError> {
    if job.card_serial.as_deref() == Some(card_serial) {
        if job.printer_id.as_deref() == Some(printer_id) {
            return Ok(job);
        }
        return Err(no_live_lease());
    }
    Err(ApiError::new(
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
    ))
}
