//! The gRPC face of printing: each handler converts its request into a
//! checked command ([`crate::convert`]), runs the workflow
//! ([`crate::service`]) and converts the answer.

use tonic::{Request, Response, Status};

use adminduk_proto::convert;
use adminduk_proto::printing::v1 as pb;
use pb::printing_service_server::PrintingService;

use crate::service::{Backlog, Printing};
use crate::store::Funnel;

/// The `PrintingService` implementation.
#[derive(Debug, Clone)]
pub struct PrintingApi {
    printing: Printing,
}

impl PrintingApi {
    /// The gRPC service over printing's workflows.
    pub fn new(printing: Printing) -> Self {
        Self { printing }
    }
}

/// Counts as the contract's `int32`, saturating.
fn count(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[tonic::async_trait]
impl PrintingService for PrintingApi {
    async fn submit_print_job(
        &self,
        request: Request<pb::SubmitPrintJobRequest>,
    ) -> Result<Response<pb::SubmitPrintJobResponse>, Status> {
        let job = self.printing.submit(request.into_inner().try_into()?).await?;
        Ok(Response::new(pb::SubmitPrintJobResponse {
            job: Some((&job).into()),
        }))
    }

    async fn lease_jobs(
        &self,
        request: Request<pb::LeaseJobsRequest>,
    ) -> Result<Response<pb::LeaseJobsResponse>, Status> {
        let jobs = self.printing.lease(request.into_inner().try_into()?).await?;
        Ok(Response::new(pb::LeaseJobsResponse {
            jobs: jobs.iter().map(pb::PrintJob::from).collect(),
        }))
    }

    async fn report_printed(
        &self,
        request: Request<pb::ReportPrintedRequest>,
    ) -> Result<Response<pb::ReportPrintedResponse>, Status> {
        let job = self
            .printing
            .report_printed(request.into_inner().try_into()?)
            .await?;
        Ok(Response::new(pb::ReportPrintedResponse {
            job: Some((&job).into()),
        }))
    }

    async fn report_spoiled(
        &self,
        request: Request<pb::ReportSpoiledRequest>,
    ) -> Result<Response<pb::ReportSpoiledResponse>, Status> {
        let job = self
            .printing
            .report_spoiled(request.into_inner().try_into()?)
            .await?;
        Ok(Response::new(pb::ReportSpoiledResponse {
            job: Some((&job).into()),
        }))
    }

    async fn issue_suket(
        &self,
        request: Request<pb::IssueSuketRequest>,
    ) -> Result<Response<pb::IssueSuketResponse>, Status> {
        let suket = self
            .printing
            .issue_suket(request.into_inner().try_into()?)
            .await?;
        Ok(Response::new(pb::IssueSuketResponse {
            suket_id: suket.id,
            valid_until: Some(convert::date(suket.valid_until)),
        }))
    }

    async fn dispatch(
        &self,
        request: Request<pb::DispatchRequest>,
    ) -> Result<Response<pb::DispatchResponse>, Status> {
        let done = self.printing.dispatch(request.into_inner().try_into()?).await?;
        Ok(Response::new(pb::DispatchResponse {
            dispatched: count(done.sent),
            rerouted: count(done.rerouted),
        }))
    }

    async fn record_delivery(
        &self,
        request: Request<pb::RecordDeliveryRequest>,
    ) -> Result<Response<pb::RecordDeliveryResponse>, Status> {
        let state = self
            .printing
            .record_delivery(request.into_inner().try_into()?)
            .await?;
        Ok(Response::new(pb::RecordDeliveryResponse {
            card_state: pb::CardState::from(state).into(),
        }))
    }

    async fn recall(
        &self,
        request: Request<pb::RecallRequest>,
    ) -> Result<Response<pb::RecallResponse>, Status> {
        let recalled = self.printing.recall(request.into_inner().try_into()?).await?;
        Ok(Response::new(pb::RecallResponse {
            recalled: count(recalled),
        }))
    }

    async fn get_funnel(
        &self,
        request: Request<pb::GetFunnelRequest>,
    ) -> Result<Response<pb::GetFunnelResponse>, Status> {
        let funnel = self.printing.funnel(request.into_inner().try_into()?).await?;
        Ok(Response::new((&funnel).into()))
    }

    async fn get_backlog(
        &self,
        request: Request<pb::GetBacklogRequest>,
    ) -> Result<Response<pb::GetBacklogResponse>, Status> {
        let region = crate::convert::regency(request.into_inner())?;
        let backlog = self.printing.backlog(&region).await?;
        Ok(Response::new((&backlog).into()))
    }
}

impl From<&Funnel> for pb::GetFunnelResponse {
    fn from(f: &Funnel) -> Self {
        let &Funnel {
            printed,
            spoiled,
            duplicates_prevented,
            recalled,
            dispatched_pickup,
            dispatched_post,
            delivered,
            returned_deceased,
            returned_moved,
            returned_unclear_address,
            waiting_dispatch,
            in_transit,
            at_service_point,
            spoiled_in_printer,
        } = f;
        Self {
            printed,
            spoiled,
            duplicates_prevented,
            recalled,
            dispatched_pickup,
            dispatched_post,
            delivered,
            returned_deceased,
            returned_moved,
            returned_unclear_address,
            waiting_dispatch,
            in_transit,
            at_service_point,
            spoiled_in_printer,
            unaccounted: f.unaccounted(),
        }
    }
}

impl From<&Backlog> for pb::GetBacklogResponse {
    fn from(b: &Backlog) -> Self {
        let Backlog {
            waiting,
            suket_holders,
            weekly_throughput,
            forecast_clear,
            blanks_saved_by_ikd,
        } = b;
        Self {
            waiting: waiting
                .iter()
                .map(|&(priority, waiting)| pb::PriorityCount {
                    priority: i32::try_from(priority).unwrap_or(5),
                    waiting,
                })
                .collect(),
            suket_holders: *suket_holders,
            weekly_throughput: *weekly_throughput,
            forecast_clear_date: forecast_clear.map(convert::date),
            blanks_saved_by_ikd: *blanks_saved_by_ikd,
        }
    }
}
