//! What the end-to-end tests of the whole mesh share: an office's
//! application through the gateway.

use adminduk::mesh::Mesh;
use adminduk_proto::inventory::v1 as inventory;
use inventory::inventory_service_client::InventoryServiceClient;

/// `n` synthetic residents eligible for a card (print-ready).
pub(crate) async fn residents(mesh: &Mesh, n: i64) -> Vec<String> {
    let found = mesh
        .population
        .service()
        .eligible_niks(adminduk_kit::time::today_wib(), n)
        .await
        .expect("residents");
    assert_eq!(i64::try_from(found.len()).ok(), Some(n), "enough residents");
    found
}

/// An office's request through the gateway for a resident without a
/// smartphone (exempt from IKD first, as the counter says).
pub(crate) fn at_counter<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        adminduk_gateway::OVERRIDE_HEADER,
        "lansia tanpa ponsel pintar".parse().expect("header"),
    );
    request
}

/// The demo office's channel to the gateway (its client certificate).
pub(crate) fn office(mesh: &Mesh) -> tonic::transport::Channel {
    let c = &mesh.certs;
    adminduk::resident::gateway_channel(mesh, Some((&c.office_cert, &c.office_key))).expect("channel")
}

/// An office's `Reserve` for `nik` at `point` on `day`, for a resident
/// without a smartphone (exempt from IKD first, as the counter says).
pub(crate) async fn office_reserve(
    office: tonic::transport::Channel,
    nik: &str,
    point: &str,
    day: chrono::NaiveDate,
    key: &str,
) -> Result<inventory::Reservation, tonic::Status> {
    let request = at_counter(inventory::ReserveRequest {
        service_point_code: point.into(),
        date: Some(adminduk_proto::convert::date(day)),
        applicant_nik: nik.to_owned(),
        idempotency_key: key.to_owned(),
        ..Default::default()
    });
    let answer = InventoryServiceClient::new(office).reserve(request).await?;
    Ok(answer.into_inner().reservation.expect("a reservation"))
}
