//! The gRPC face of the inventory: thin handlers that convert the request
//! (`convert`), call the inventory, and answer; refusals come from `error`
//! through `?`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use adminduk_inventory_core::engine::{Reservation, Suggestions};
use adminduk_inventory_core::state::{State, Transition};
use adminduk_kit::{ApiError, ErrorCode, ErrorReason, Violations};
use adminduk_proto::convert;
use adminduk_proto::inventory::v1 as pb;
use pb::inventory_service_server::InventoryService;

use crate::convert::{
    Handover, LedgerPage, ReserveAsk, Shipment, Spoilage, Transfer, Watch, entry_msg, policy_from,
    policy_msg, region_field, reservation_msg, stock_msg,
};
use crate::error::reserve_refusal;
use crate::service::{Inventory, ReserveFailure, TransitionFailure};
use crate::store::{Movement, NATIONAL};

/// Days searched for room when a date is full.
const SUGGESTION_DAYS: u32 = 14;
/// Suggestions offered of each kind.
const SUGGESTIONS: usize = 3;
/// How long a full date's suggestions are reused: refusals must stay cheap on the peak morning.
const SUGGESTION_TTL: Duration = Duration::from_secs(1);
/// Least time between two updates of one watch.
const WATCH_DEBOUNCE: Duration = Duration::from_millis(100);

/// Suggestions for a full (point, date), with when they were computed.
type SuggestionCache = papaya::HashMap<(String, NaiveDate), (Instant, Arc<Suggestions>)>;

/// The `InventoryService` implementation.
#[derive(Debug, Clone)]
pub struct InventoryApi {
    inventory: Arc<Inventory>,
    suggestions: Arc<SuggestionCache>,
}

impl InventoryApi {
    /// A service over an opened inventory.
    pub fn new(inventory: Arc<Inventory>) -> Self {
        Self {
            inventory,
            suggestions: Arc::new(papaya::HashMap::new()),
        }
    }

    fn suggestions_for(&self, point: &str, day: NaiveDate) -> Arc<Suggestions> {
        let key = (point.to_owned(), day);
        let cache = self.suggestions.pin();
        if let Some((at, cached)) = cache.get(&key)
            && at.elapsed() < SUGGESTION_TTL
        {
            return cached.clone();
        }
        let fresh = Arc::new(
            self.inventory
                .engine()
                .suggestions(point, day, SUGGESTION_DAYS, SUGGESTIONS),
        );
        cache.insert(key, (Instant::now(), fresh.clone()));
        fresh
    }

    /// A service point's commit or release of one of its holds.
    async fn hand_over(
        &self,
        handover: Handover,
        transition: Transition,
    ) -> Result<Arc<Reservation>, TransitionFailure> {
        self.inventory
            .transition(
                &handover.id,
                transition,
                Some(&handover.point),
                &handover.point,
                &handover.reason,
            )
            .await
    }
}

#[tonic::async_trait]
impl InventoryService for InventoryApi {
    async fn receive_shipment(
        &self,
        request: Request<pb::ReceiveShipmentRequest>,
    ) -> Result<Response<pb::ReceiveShipmentResponse>, Status> {
        let shipment = Shipment::try_from(request.into_inner())?;
        if shipment.region_code != NATIONAL && self.inventory.engine().policy(&shipment.region_code).is_none()
        {
            return Err(
                ApiError::invalid_field("region_code", "unknown region: set its quota policy first").into(),
            );
        }
        let entries = self
            .inventory
            .receive_shipment(
                &shipment.region_code,
                shipment.quantity,
                &shipment.reference,
                &shipment.received_by,
            )
            .await?;
        tracing::info!(region = %shipment.region_code, quantity = shipment.quantity, "shipment received");
        let stock = self
            .inventory
            .stock_level(&shipment.region_code, adminduk_kit::time::today_wib())
            .await?;
        Ok(Response::new(pb::ReceiveShipmentResponse {
            entries: entries.iter().map(entry_msg).collect(),
            stock: Some(stock_msg(&stock)),
        }))
    }

    async fn transfer_stock(
        &self,
        request: Request<pb::TransferStockRequest>,
    ) -> Result<Response<pb::TransferStockResponse>, Status> {
        let transfer = Transfer::try_from(request.into_inner())?;
        for (field, code) in [
            ("from_region_code", &transfer.from_region_code),
            ("to_region_code", &transfer.to_region_code),
        ] {
            if self.inventory.engine().policy(code).is_none() {
                return Err(
                    ApiError::invalid_field(field, "unknown region: set its quota policy first").into(),
                );
            }
        }
        let entries = self
            .inventory
            .move_out(&Movement {
                from: &transfer.from_region_code,
                to: Some(&transfer.to_region_code),
                quantity: transfer.quantity,
                reference: &transfer.reference,
                actor: &transfer.requested_by,
                reason: &transfer.reason,
            })
            .await?;
        tracing::info!(
            from = %transfer.from_region_code,
            to = %transfer.to_region_code,
            quantity = transfer.quantity,
            "stock transferred"
        );
        Ok(Response::new(pb::TransferStockResponse {
            entries: entries.iter().map(entry_msg).collect(),
        }))
    }

    async fn set_quota_policy(
        &self,
        request: Request<pb::SetQuotaPolicyRequest>,
    ) -> Result<Response<pb::SetQuotaPolicyResponse>, Status> {
        let policy = policy_from(request.into_inner())?;
        let installed = self.inventory.set_policy(policy).await?;
        tracing::info!(region = %installed.region_code, version = installed.version, "quota policy set");
        Ok(Response::new(pb::SetQuotaPolicyResponse {
            policy: Some(policy_msg(&installed)),
        }))
    }

    async fn get_stock(
        &self,
        request: Request<pb::GetStockRequest>,
    ) -> Result<Response<pb::GetStockResponse>, Status> {
        let pb::GetStockRequest { region_code } = request.into_inner();
        let mut v = Violations::new();
        region_field("region_code", &region_code, false, &mut v);
        v.into_result()?;
        let policy = self
            .inventory
            .engine()
            .policy(&region_code)
            .ok_or_else(|| ApiError::invalid_field("region_code", "unknown region"))?;
        let stock = self
            .inventory
            .stock_level(&region_code, adminduk_kit::time::today_wib())
            .await?;
        Ok(Response::new(pb::GetStockResponse {
            stock: Some(stock_msg(&stock)),
            policy: Some(policy_msg(&policy)),
        }))
    }

    async fn reserve(
        &self,
        request: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        let engine = self.inventory.engine();
        let ask = ReserveAsk::check(request.into_inner(), |code| engine.point(code).is_some())?;
        // The point is one the engine knows (checked above), so it may name the span.
        tracing::Span::current().record("adminduk.service_point", ask.point.as_str());
        let reserved = self.inventory.reserve(&ask.request(), Utc::now()).await;
        match &reserved {
            Err(ReserveFailure::Refused(err)) => crate::metrics::refused(err),
            Err(ReserveFailure::Unavailable(_)) => crate::metrics::unavailable(),
            Ok(_) => {}
        }
        let reservation = reserved.map_err(|failure| {
            reserve_refusal(failure, &ask.point, ask.day, || {
                self.suggestions_for(&ask.point, ask.day)
            })
        })?;
        Ok(Response::new(pb::ReserveResponse {
            reservation: Some(reservation_msg(&reservation)),
        }))
    }

    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let r = self
            .hand_over(request.into_inner().try_into()?, Transition::Commit)
            .await?;
        Ok(Response::new(pb::CommitResponse {
            reservation: Some(reservation_msg(&r)),
        }))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let r = self
            .hand_over(request.into_inner().try_into()?, Transition::Release)
            .await?;
        Ok(Response::new(pb::ReleaseResponse {
            reservation: Some(reservation_msg(&r)),
        }))
    }

    async fn record_spoilage(
        &self,
        request: Request<pb::RecordSpoilageRequest>,
    ) -> Result<Response<pb::RecordSpoilageResponse>, Status> {
        let spoilage = Spoilage::try_from(request.into_inner())?;
        let region = &spoilage.region_code;
        if self.inventory.engine().policy(region).is_none() {
            return Err(ApiError::invalid_field("region_code", "unknown region").into());
        }
        let entries = match &spoilage.reservation {
            None => {
                self.inventory
                    .move_out(&Movement {
                        from: region,
                        to: None,
                        quantity: spoilage.quantity,
                        reference: &spoilage.reference,
                        actor: &spoilage.reported_by,
                        reason: &spoilage.reason,
                    })
                    .await?
            }
            Some(id) => {
                let reservation = self.inventory.engine().reservation(id).ok_or_else(|| {
                    ApiError::not_found("reservation")
                        .with_violation("reservation_id", "no reservation has this id")
                })?;
                if reservation.path.point.region != *region || reservation.state() != State::Committed {
                    return Err(ApiError::new(
                        ErrorCode::FailedPrecondition,
                        "only a committed blank of this region can be counted as spoiled",
                    )
                    .with_reason(ErrorReason::ReservationNotCommitted, [])
                    .into());
                }
                self.inventory
                    .store()
                    .reclassify_spoilage(
                        region,
                        // The canonical text, as the commit recorded it: one blank, one write-off.
                        &id.to_string(),
                        &spoilage.reference,
                        &spoilage.reported_by,
                        &spoilage.reason,
                        Utc::now(),
                    )
                    .await?
            }
        };
        tracing::info!(region = %region, quantity = spoilage.quantity, "spoilage recorded");
        let stock = self
            .inventory
            .stock_level(region, adminduk_kit::time::today_wib())
            .await?;
        Ok(Response::new(pb::RecordSpoilageResponse {
            entry: entries.first().map(entry_msg),
            stock: Some(stock_msg(&stock)),
        }))
    }

    type WatchAvailabilityStream = ReceiverStream<Result<pb::WatchAvailabilityResponse, Status>>;

    async fn watch_availability(
        &self,
        request: Request<pb::WatchAvailabilityRequest>,
    ) -> Result<Response<Self::WatchAvailabilityStream>, Status> {
        let engine = self.inventory.engine();
        let Watch {
            points: service_point_codes,
            day,
        } = Watch::check(request.into_inner(), |code| engine.point(code).is_some())?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let inventory = self.inventory.clone();
        let mut changes = inventory.subscribe();
        let mut closing = inventory.closing();
        tokio::spawn(async move {
            let mut last: HashMap<String, i64> = HashMap::new();
            loop {
                let points: Vec<pb::PointAvailability> = service_point_codes
                    .iter()
                    .filter_map(|code| {
                        let point = inventory.engine().point(code)?;
                        let (remaining, quota) = inventory.engine().availability(code, day)?;
                        Some(pb::PointAvailability {
                            service_point_code: code.clone(),
                            pool_code: point.spec.pool_code.clone(),
                            date: Some(convert::date(day)),
                            remaining,
                            quota,
                        })
                    })
                    .collect();
                let now: HashMap<String, i64> = points
                    .iter()
                    .map(|p| (p.service_point_code.clone(), p.remaining))
                    .collect();
                if now != last {
                    let update = pb::WatchAvailabilityResponse {
                        points,
                        read_time: Some(convert::timestamp(Utc::now())),
                    };
                    if tx.send(Ok(update)).await.is_err() {
                        return;
                    }
                    last = now;
                }
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    _ = closing.wait_for(|closing| *closing) => return,
                    () = tx.closed() => return,
                }
                tokio::time::sleep(WATCH_DEBOUNCE).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_ledger(
        &self,
        request: Request<pb::ListLedgerRequest>,
    ) -> Result<Response<pb::ListLedgerResponse>, Status> {
        let page = LedgerPage::try_from(request.into_inner())?;
        let entries = self
            .inventory
            .store()
            .ledger(&page.holder_code, page.before, page.rows_to_read())
            .await?;
        Ok(Response::new(page.page(entries)))
    }
}
