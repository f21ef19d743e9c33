//! Agencies' agreements (PKS): which fields an agency may compare in
//! `VerifyIdentity`, how many verifications a day, whether it is active, and
//! whether it pays. The door meters each verification here before it is
//! forwarded; [`AgencyApi`] is the `AgencyService` an administrator writes
//! agreements with and an agency reads its own usage and statement from.

use chrono::{NaiveDate, Utc};
use tonic::{Request, Response, Status};

use adminduk_kit::principal::Principal;
use adminduk_kit::{ApiError, ErrorCode, ErrorReason, Violations};
use adminduk_proto::convert;
use adminduk_proto::gateway::v1::{self as pb, AgreementStatus, VerificationField};

use crate::store::{Agreement, Store, StoreError};
use crate::wire;

/// The published fee per NIK check, in rupiah, since 2023 (Dukcapil's tariff
/// for agencies; government bodies and BPJS pay nothing).
pub const FEE_PER_CHECK_RUPIAH: i64 = 1_000;

/// The most verifications a day an agreement may allow.
const MAX_DAILY_QUOTA: i64 = 10_000_000;

/// Which `VerifyIdentityRequest` field compares what (the NIK, field 1, is always given).
const COMPARED: [(u32, VerificationField); 5] = [
    (2, VerificationField::FullName),
    (3, VerificationField::BirthDate),
    (4, VerificationField::BirthPlace),
    (5, VerificationField::Sex),
    (6, VerificationField::VillageCode),
];

/// What one check costs an agency under its agreement, in rupiah.
fn fee_per_check(agreement: &Agreement) -> i64 {
    if agreement.fee_exempt {
        0
    } else {
        FEE_PER_CHECK_RUPIAH
    }
}

fn field_label(field: VerificationField) -> String {
    let name = field.as_str_name();
    name.strip_prefix("VERIFICATION_FIELD_")
        .unwrap_or(name)
        .to_lowercase()
}

/// A verification counted against an agency's quota, to be taken back if it
/// was not answered.
#[derive(Debug, Clone)]
pub(crate) struct Metered {
    agency_code: String,
    day: NaiveDate,
    fee_rupiah: i64,
}

pub(crate) fn store_failed(err: StoreError) -> ApiError {
    match err {
        StoreError::Revoked => ApiError::new(
            ErrorCode::FailedPrecondition,
            "a revoked agreement cannot be changed; a new agreement is a new agency code",
        )
        .with_reason(ErrorReason::AgreementRevoked, []),
        StoreError::Db(db) => ApiError::from(db),
        other => ApiError::internal(&other),
    }
}

fn agency_refusal(reason: ErrorReason, code: ErrorCode, message: &str, agency: &str) -> ApiError {
    ApiError::new(code, message).with_reason(reason, [("agency".to_owned(), agency.to_owned())])
}

/// Refuses an agreement that lets its agency verify nothing now.
fn refuse_inactive(agreement: &Agreement) -> Result<(), ApiError> {
    let code = &agreement.agency_code;
    match agreement.status {
        AgreementStatus::Active => Ok(()),
        AgreementStatus::Suspended => Err(agency_refusal(
            ErrorReason::AgencySuspended,
            ErrorCode::PermissionDenied,
            "the agency's agreement is suspended: it verifies nothing until it is made active again",
            code,
        )),
        AgreementStatus::Revoked | AgreementStatus::Unspecified => Err(agency_refusal(
            ErrorReason::AgencyRevoked,
            ErrorCode::PermissionDenied,
            "the agency's agreement is revoked",
            code,
        )),
    }
}

/// The agreements, read and metered.
#[derive(Debug, Clone)]
pub(crate) struct Agencies {
    store: Store,
}

impl Agencies {
    pub(crate) fn new(store: Store) -> Self {
        Self { store }
    }

    async fn agreement_of(&self, agency_code: &str, missing: ErrorCode) -> Result<Agreement, ApiError> {
        self.store
            .agreement(agency_code)
            .await
            .map_err(store_failed)?
            .ok_or_else(|| {
                agency_refusal(
                    ErrorReason::AgencyUnknown,
                    missing,
                    "no agreement (PKS) is on record for this agency",
                    agency_code,
                )
            })
    }

    /// Lets one verification by `agency_code` through, or says why not: an
    /// agreement that is active, fields it allows, and room in today's quota
    /// (counted now, in one statement, so racing verifications never pass it).
    pub(crate) async fn meter(&self, agency_code: &str, message: &[u8]) -> Result<Metered, ApiError> {
        let agreement = self
            .agreement_of(agency_code, ErrorCode::PermissionDenied)
            .await?;
        refuse_inactive(&agreement)?;
        let present = wire::present_fields(message).map_err(|err| {
            ApiError::new(ErrorCode::InvalidArgument, err.to_string())
                .with_reason(ErrorReason::MalformedMessage, [])
        })?;
        let refused: Vec<String> = COMPARED
            .iter()
            .filter(|(tag, field)| present.contains(tag) && !agreement.allowed_fields.contains(field))
            .map(|(_, field)| field_label(*field))
            .collect();
        if !refused.is_empty() {
            return Err(ApiError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "the agency's agreement does not allow comparing {}",
                    refused.join(", ")
                ),
            )
            .with_reason(
                ErrorReason::FieldNotAgreed,
                [("fields".to_owned(), refused.join(","))],
            ));
        }
        let day = adminduk_kit::time::today_wib();
        let fee_rupiah = fee_per_check(&agreement);
        let counted = self
            .store
            .count_check(agency_code, day, fee_rupiah, agreement.daily_quota)
            .await
            .map_err(store_failed)?;
        if counted.is_none() {
            let wait = (adminduk_kit::time::end_of_day_wib(day) - Utc::now())
                .to_std()
                .unwrap_or_default();
            return Err(ApiError::new(
                ErrorCode::ResourceExhausted,
                "the agency has used today's verification quota; it renews at midnight (WIB)",
            )
            .with_reason(
                ErrorReason::AgencyQuotaExhausted,
                [
                    ("agency".to_owned(), agency_code.to_owned()),
                    ("daily_quota".to_owned(), agreement.daily_quota.to_string()),
                ],
            )
            .with_retry_after(wait));
        }
        Ok(Metered {
            agency_code: agency_code.to_owned(),
            day,
            fee_rupiah,
        })
    }

    /// Takes back a metered verification the population service did not answer.
    pub(crate) async fn unmeter(&self, metered: Metered) {
        if let Err(err) = self
            .store
            .uncount_check(&metered.agency_code, metered.day, metered.fee_rupiah)
            .await
        {
            tracing::warn!(agency = %metered.agency_code, error = %err, "an unanswered verification stays counted");
        }
    }
}

/// `adminduk.gateway.v1.AgencyService`, reached only through the door (which
/// admits administrators and agencies and puts the caller's [`Principal`] in
/// the request's extensions).
#[derive(Debug, Clone)]
pub(crate) struct AgencyApi {
    agencies: Agencies,
}

impl AgencyApi {
    pub(crate) fn new(agencies: Agencies) -> Self {
        Self { agencies }
    }

    /// The agreement a request asks about: an administrator names the agency,
    /// an agency asks of itself (`named` empty or its own code).
    async fn asked<T>(&self, request: &Request<T>, named: &str) -> Result<Agreement, ApiError> {
        let principal = principal_of(request)?;
        let code = agency_named(&principal, named)?;
        self.agencies.agreement_of(&code, missing_code(&principal)).await
    }
}

/// The principal the door put on the request.
pub(crate) fn principal_of<T>(request: &Request<T>) -> Result<Principal, ApiError> {
    request.extensions().get::<Principal>().cloned().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthenticated,
            "this method needs a client certificate",
        )
        .with_reason(ErrorReason::CredentialRequired, [])
    })
}

/// The agency a request is about: an administrator names any; an agency only itself.
fn agency_named(principal: &Principal, named: &str) -> Result<String, ApiError> {
    match principal {
        Principal::Admin { .. } if !named.is_empty() => Ok(named.to_owned()),
        Principal::Admin { .. } => Err(ApiError::invalid_field("agency_code", "name the agency")),
        Principal::Agency { code } if named.is_empty() || named == code => Ok(code.clone()),
        Principal::Agency { .. } => Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "an agency reads only its own agreement and usage",
        )
        .with_reason(
            ErrorReason::OutOfScope,
            [("field".to_owned(), "agency_code".to_owned())],
        )),
        _ => Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "only administrators and agencies read agreements",
        )
        .with_reason(ErrorReason::RoleNotAllowed, [])),
    }
}

/// How an agency's own questions treat a missing agreement: it is the caller's own
/// standing (PERMISSION_DENIED) for an agency, a lookup (NOT_FOUND) for an administrator.
fn missing_code(principal: &Principal) -> ErrorCode {
    match principal {
        Principal::Agency { .. } => ErrorCode::PermissionDenied,
        _ => ErrorCode::NotFound,
    }
}

fn agreement_pb(agreement: Agreement) -> pb::Agreement {
    let Agreement {
        agency_code,
        name,
        allowed_fields,
        daily_quota,
        status,
        fee_exempt,
        reason,
        updated_at,
        updated_by,
    } = agreement;
    pb::Agreement {
        agency_code,
        name,
        allowed_fields: allowed_fields.into_iter().map(i32::from).collect(),
        daily_quota,
        status: status.into(),
        fee_exempt,
        reason,
        updated_at: Some(convert::timestamp(updated_at)),
        updated_by,
    }
}

/// A `SetAgreementRequest` checked, every violation at once.
fn agreement_of_request(request: pb::SetAgreementRequest, by: String) -> Result<Agreement, ApiError> {
    let pb::SetAgreementRequest {
        agency_code,
        name,
        allowed_fields,
        daily_quota,
        status,
        fee_exempt,
        reason,
    } = request;
    let mut v = Violations::new();
    if !adminduk_kit::principal::is_identifier(&agency_code) {
        v.add(
            "agency_code",
            "must be 1 to 32 letters, digits or hyphens, as the agency's certificate names it",
        );
    }
    let name = name.trim().to_owned();
    if !(1..=200).contains(&name.chars().count()) {
        v.add("name", "must be 1 to 200 characters");
    }
    let mut fields = Vec::new();
    for value in allowed_fields {
        match VerificationField::try_from(value) {
            Ok(VerificationField::Unspecified) | Err(_) => {
                v.add("allowed_fields", "must name known fields");
            }
            Ok(field) if !fields.contains(&field) => fields.push(field),
            Ok(_) => {}
        }
    }
    if fields.is_empty() {
        v.add("allowed_fields", "must allow at least one field besides the NIK");
    }
    fields.sort_by_key(|f| *f as i32);
    if !(1..=MAX_DAILY_QUOTA).contains(&daily_quota) {
        v.add("daily_quota", "must be 1 to 10,000,000");
    }
    let status = match AgreementStatus::try_from(status) {
        Ok(AgreementStatus::Unspecified) | Err(_) => {
            v.add("status", "must be ACTIVE, SUSPENDED or REVOKED");
            AgreementStatus::Unspecified
        }
        Ok(status) => status,
    };
    let reason = reason.trim().to_owned();
    if !(10..=500).contains(&reason.chars().count()) {
        v.add("reason", "must be the reason written out, 10 to 500 characters");
    }
    v.into_result()?;
    Ok(Agreement {
        agency_code,
        name,
        allowed_fields: fields,
        daily_quota,
        status,
        fee_exempt,
        reason: adminduk_kit::mask::mask_digit_runs(&reason),
        updated_at: Utc::now(),
        updated_by: by,
    })
}

#[tonic::async_trait]
impl pb::agency_service_server::AgencyService for AgencyApi {
    async fn set_agreement(
        &self,
        request: Request<pb::SetAgreementRequest>,
    ) -> Result<Response<pb::SetAgreementResponse>, Status> {
        let principal = principal_of(&request)?;
        if !matches!(principal, Principal::Admin { .. }) {
            return Err(ApiError::new(
                ErrorCode::PermissionDenied,
                "only administrators write agreements",
            )
            .with_reason(ErrorReason::RoleNotAllowed, [])
            .into());
        }
        let agreement = agreement_of_request(request.into_inner(), principal.to_string())?;
        self.agencies
            .store
            .put_agreement(&agreement)
            .await
            .map_err(store_failed)?;
        tracing::info!(
            agency = %agreement.agency_code,
            status = agreement.status.as_str_name(),
            by = %agreement.updated_by,
            "agreement written"
        );
        Ok(Response::new(pb::SetAgreementResponse {
            agreement: Some(agreement_pb(agreement)),
        }))
    }

    async fn get_agreement(
        &self,
        request: Request<pb::GetAgreementRequest>,
    ) -> Result<Response<pb::GetAgreementResponse>, Status> {
        let agreement = self.asked(&request, &request.get_ref().agency_code).await?;
        Ok(Response::new(pb::GetAgreementResponse {
            agreement: Some(agreement_pb(agreement)),
        }))
    }

    async fn get_usage(
        &self,
        request: Request<pb::GetUsageRequest>,
    ) -> Result<Response<pb::GetUsageResponse>, Status> {
        let agreement = self.asked(&request, &request.get_ref().agency_code).await?;
        let code = agreement.agency_code.clone();
        let day = adminduk_kit::time::today_wib();
        let checks = self
            .agencies
            .store
            .usage(&code, day, day)
            .await
            .map_err(store_failed)?
            .first()
            .map_or(0, |d| d.checks);
        Ok(Response::new(pb::GetUsageResponse {
            agency_code: code,
            day: Some(convert::date(day)),
            checks,
            daily_quota: agreement.daily_quota,
            remaining: (agreement.daily_quota - checks).max(0),
            status: agreement.status.into(),
        }))
    }

    async fn get_statement(
        &self,
        request: Request<pb::GetStatementRequest>,
    ) -> Result<Response<pb::GetStatementResponse>, Status> {
        let pb::GetStatementRequest {
            agency_code,
            year,
            month,
        } = request.get_ref().clone();
        let mut v = Violations::new();
        if !(2000..=2100).contains(&year) {
            v.add("year", "must be 2000 to 2100");
        }
        let first = u32::try_from(month)
            .ok()
            .and_then(|m| NaiveDate::from_ymd_opt(year, m, 1));
        if first.is_none() {
            v.add("month", "must be 1 to 12");
        }
        v.into_result()?;
        let Some(first) = first else {
            return Err(ApiError::invalid_field("month", "must be 1 to 12").into());
        };
        let last = first
            .checked_add_months(chrono::Months::new(1))
            .and_then(|next| next.pred_opt())
            .unwrap_or(first);
        let agreement = self.asked(&request, &agency_code).await?;
        let code = agreement.agency_code.clone();
        let days = self
            .agencies
            .store
            .usage(&code, first, last)
            .await
            .map_err(store_failed)?;
        Ok(Response::new(pb::GetStatementResponse {
            agency_code: code,
            year,
            month,
            checks: days.iter().map(|d| d.checks).sum(),
            fee_per_check_rupiah: fee_per_check(&agreement),
            amount_rupiah: days.iter().map(|d| d.amount_rupiah).sum(),
            days: days
                .into_iter()
                .map(|d| pb::StatementDay {
                    day: Some(convert::date(d.day)),
                    checks: d.checks,
                    amount_rupiah: d.amount_rupiah,
                })
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> pb::SetAgreementRequest {
        pb::SetAgreementRequest {
            agency_code: "demo-bank".into(),
            name: "Bank Contoh".into(),
            allowed_fields: vec![
                VerificationField::FullName as i32,
                VerificationField::BirthDate as i32,
            ],
            daily_quota: 1_000,
            status: AgreementStatus::Active as i32,
            fee_exempt: false,
            reason: "PKS signed on 1 December".into(),
        }
    }

    #[test]
    fn a_good_agreement_is_taken_and_a_bad_one_names_every_fault() {
        let agreement = agreement_of_request(request(), "adminduk://admin/ops".into()).expect("valid");
        assert_eq!(
            agreement.allowed_fields,
            [VerificationField::FullName, VerificationField::BirthDate]
        );
        let bad = pb::SetAgreementRequest {
            agency_code: "Bank Contoh!".into(),
            name: " ".into(),
            allowed_fields: vec![0, 99],
            daily_quota: 0,
            status: 0,
            fee_exempt: false,
            reason: "short".into(),
        };
        let err = agreement_of_request(bad, String::new()).expect_err("invalid");
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        let status = Status::from(err);
        let details = tonic_types::StatusExt::get_details_bad_request(&status).expect("bad request");
        let fields: Vec<&str> = details
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        for field in [
            "agency_code",
            "name",
            "allowed_fields",
            "daily_quota",
            "status",
            "reason",
        ] {
            assert!(fields.contains(&field), "{field} in {fields:?}");
        }
    }

    #[test]
    fn an_agency_reads_only_itself_and_an_admin_names_whom() {
        let agency = Principal::Agency {
            code: "demo-bank".into(),
        };
        assert_eq!(agency_named(&agency, "").expect("own"), "demo-bank");
        assert_eq!(agency_named(&agency, "demo-bank").expect("own"), "demo-bank");
        assert_eq!(
            agency_named(&agency, "other-bank").expect_err("other").reason(),
            Some("OUT_OF_SCOPE")
        );
        let admin = Principal::Admin { name: "ops".into() };
        assert_eq!(agency_named(&admin, "other-bank").expect("any"), "other-bank");
        assert_eq!(
            agency_named(&admin, "").expect_err("must name").code(),
            ErrorCode::InvalidArgument
        );
    }
}
