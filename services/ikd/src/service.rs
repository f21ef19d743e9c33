//! IKD as one object: the workflows (activation, session tokens, the
//! identity's standing) as plain async methods over the store, the population
//! service, the shared cache and the signing keys. They answer domain values
//! or an [`ApiError`]; the gRPC layer only converts requests and responses.

mod activation;
mod identity;
mod session;

use std::sync::Arc;

use chrono::Utc;
use tonic::transport::Channel;

use adminduk_kit::cache::SharedCache;
use adminduk_kit::token::ikd_status_key;
use adminduk_kit::{ApiError, mask_nik};

use crate::keys::KeyRing;
use crate::population::Population;
use crate::store::{AuditEntry, Store};

pub use activation::{Activated, CodeSent, CompleteActivation, StartActivation, Started, VerifyAtOffice};
pub use identity::{
    Adoption, AreaQuery, IdentityState, NikQuery, Revoke, Revoked, StatusReport, SubjectQuery,
};
pub use session::{IssueSessionToken, SessionToken, TokenChallenge};

/// The IKD service's state.
#[derive(Debug, Clone)]
pub struct Ikd {
    store: Store,
    population: Population,
    cache: Arc<dyn SharedCache>,
    keys: Arc<KeyRing>,
}

impl Ikd {
    /// The service over its store, a channel to the population service, the
    /// shared cache (revocations, the gateway's view of a resident) and the keys.
    pub fn new(store: Store, population: Channel, cache: Arc<dyn SharedCache>, keys: Arc<KeyRing>) -> Self {
        Self {
            store,
            population: Population::new(population),
            cache,
            keys,
        }
    }

    /// The signing keys.
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Writes the attempt's audit row, its outcome "OK" or the refusal's
    /// reason (its code when it has none), and passes the result on. A row
    /// that cannot be written is logged, never a refusal.
    pub async fn audited<T>(&self, attempt: &Attempt, result: Result<T, ApiError>) -> Result<T, ApiError> {
        let outcome = match &result {
            Ok(_) => "OK".to_owned(),
            Err(err) => err
                .reason()
                .map_or_else(|| format!("{:?}", err.code()), str::to_owned),
        };
        let trace_id = adminduk_kit::telemetry::current_trace_id().unwrap_or_default();
        let entry = AuditEntry {
            nik_masked: &mask_nik(&attempt.nik),
            action: attempt.action.as_str(),
            outcome: &outcome,
            service_point_code: &attempt.point,
            officer_id: &attempt.officer,
            trace_id: &trace_id,
        };
        if let Err(err) = self.store.audit(&entry, Utc::now()).await {
            tracing::error!(error = %err, action = entry.action, "audit row not written");
        }
        result
    }

    /// Drops the gateway's cached IKD-first view of the resident; it expires
    /// by itself when the cache cannot be reached.
    async fn forget_status(&self, nik: &str) {
        if let Err(err) = self.cache.delete(&ikd_status_key(nik)).await {
            tracing::warn!(error = %err, "IKD status not refreshed at the gateway; it expires by itself");
        }
    }
}

/// An audited operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `StartActivation`.
    StartActivation,
    /// `VerifyAtOffice`.
    VerifyAtOffice,
    /// `CompleteActivation`.
    CompleteActivation,
    /// `IssueSessionToken`.
    IssueSessionToken,
    /// `Revoke`.
    Revoke,
}

impl Action {
    /// The audit row's `action`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StartActivation => "START_ACTIVATION",
            Self::VerifyAtOffice => "VERIFY_AT_OFFICE",
            Self::CompleteActivation => "COMPLETE_ACTIVATION",
            Self::IssueSessionToken => "ISSUE_SESSION_TOKEN",
            Self::Revoke => "REVOKE",
        }
    }
}

/// What the audit row of one attempt names: the operation, the NIK (as the
/// request gave it, or as the activation names it once read; masked when
/// written), and for office work the office and officer (only once the
/// request passed its checks: the audit never keeps text that failed them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    action: Action,
    nik: String,
    point: String,
    officer: String,
}

impl Attempt {
    /// An attempt at `action` about `nik` (empty while unknown).
    pub fn new(action: Action, nik: &str) -> Self {
        Self {
            action,
            nik: nik.to_owned(),
            point: String::new(),
            officer: String::new(),
        }
    }

    /// The NIK, once the workflow knows it.
    pub fn about(&mut self, nik: &str) {
        nik.clone_into(&mut self.nik);
    }

    /// The office and officer doing the work.
    pub fn at_office(&mut self, office: &Office) {
        office.service_point_code.clone_into(&mut self.point);
        office.officer_id.clone_into(&mut self.officer);
    }
}

/// Who does office work: the service point and the officer there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Office {
    /// The service point's code.
    pub service_point_code: String,
    /// The officer's id.
    pub officer_id: String,
}

/// Counts an activation reaching a stage: `started`, `completed` or `revoked`.
pub(crate) fn count_stage(stage: &'static str) {
    adminduk_kit::metrics::get()
        .ikd_activations
        .get_or_create(&adminduk_kit::metrics::StageLabels {
            service: "ikd",
            stage,
        })
        .inc();
}
