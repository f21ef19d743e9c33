//! The accounts refused as suspected brokers (calo). The door counts an
//! account's refusals and its block in the shared cache, so every replica
//! sees them at once, and records each flag here, in the database, where
//! offices list them and clear one with a written reason
//! (`adminduk.gateway.v1.BrokerWatchService`). When the shared cache is away,
//! the recorded flags still keep a flagged account from applying.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tonic::{Request, Response, Status};

use adminduk_kit::cache::SharedCache;
use adminduk_kit::principal::Principal;
use adminduk_kit::{ApiError, ErrorCode, ErrorReason, Violations};
use adminduk_proto::convert;
use adminduk_proto::gateway::v1 as pb;

use crate::agency::{principal_of, store_failed};
use crate::store::{Flag, Store};

/// Refusals as a suspected broker after which an account may not apply...
pub(crate) const BROKER_REFUSALS: u64 = 3;
/// ...for this long, counted over the same window.
pub(crate) const BROKER_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The shared cache's count of an account's refusals in the window.
pub(crate) fn refusals_key(account: &str) -> String {
    format!("broker-refusals:{account}")
}

/// The shared cache's mark of a blocked account.
pub(crate) fn block_key(account: &str) -> String {
    format!("broker-blocked:{account}")
}

/// The refusal a suspected broker gets.
pub(crate) fn broker_suspected(refusals: u64, blocked: bool) -> ApiError {
    let m = adminduk_kit::metrics::get();
    adminduk_kit::metrics::Metrics::count(&m.broker_refusals, "gateway");
    let message = if blocked {
        "this account may not apply for 24 hours: it applied for people outside its family card"
    } else {
        "a resident's account applies only for the resident and the members of their family card (KK)"
    };
    ApiError::new(ErrorCode::PermissionDenied, message).with_reason(
        ErrorReason::BrokerSuspected,
        [
            ("refusals".to_owned(), refusals.to_string()),
            ("blocked".to_owned(), blocked.to_string()),
        ],
    )
}

/// The watch over broker-like accounts: the shared counters and the recorded flags.
#[derive(Debug, Clone)]
pub(crate) struct Brokers {
    store: Store,
    cache: Arc<dyn SharedCache>,
}

impl Brokers {
    pub(crate) fn new(store: Store, cache: Arc<dyn SharedCache>) -> Self {
        Self { store, cache }
    }

    /// Whether an account is blocked from applying, by the flags on record:
    /// what the door reads when the shared cache's block marks cannot be read.
    pub(crate) async fn is_flagged(&self, account: &str) -> Result<bool, ApiError> {
        self.store
            .is_flagged(account, Utc::now())
            .await
            .map_err(store_failed)
    }

    /// Counts a broker-like refusal of the account, flagging and blocking it at
    /// the third in 24 hours; the refusal to send.
    pub(crate) async fn refuse(&self, account: &str, nik: &str) -> ApiError {
        let count = match self
            .cache
            .incr_window(&refusals_key(account), BROKER_WINDOW)
            .await
        {
            Ok(count) => count,
            Err(err) => {
                tracing::warn!(error = %err, "broker refusal not counted");
                return broker_suspected(0, false);
            }
        };
        let blocked = count >= BROKER_REFUSALS;
        if blocked {
            if let Err(err) = self.cache.set(&block_key(account), b"1", BROKER_WINDOW).await {
                tracing::warn!(error = %err, "broker block not shared");
            }
            let now = Utc::now();
            let flag = Flag {
                account: account.to_owned(),
                nik_masked: adminduk_kit::mask_nik(nik),
                refusals: i64::try_from(count).unwrap_or(i64::MAX),
                flagged_at: now,
                blocked_until: now + chrono::Duration::from_std(BROKER_WINDOW).unwrap_or_default(),
            };
            match self.store.flag(&flag).await {
                Ok(_) => {
                    let m = adminduk_kit::metrics::get();
                    adminduk_kit::metrics::Metrics::count(&m.broker_flags, "gateway");
                }
                Err(err) => tracing::warn!(error = %err, "broker flag not recorded"),
            }
            tracing::warn!(account = %account, refusals = count, "account flagged and blocked from applying as a suspected broker");
        }
        broker_suspected(count, blocked)
    }
}

/// `adminduk.gateway.v1.BrokerWatchService`, reached only through the door.
#[derive(Debug, Clone)]
pub(crate) struct BrokerApi {
    brokers: Brokers,
}

impl BrokerApi {
    pub(crate) fn new(brokers: Brokers) -> Self {
        Self { brokers }
    }
}

fn staff(principal: &Principal) -> Result<(), ApiError> {
    match principal {
        Principal::Office { .. } | Principal::Admin { .. } => Ok(()),
        _ => Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "only offices and administrators watch flagged accounts",
        )
        .with_reason(ErrorReason::RoleNotAllowed, [])),
    }
}

#[tonic::async_trait]
impl pb::broker_watch_service_server::BrokerWatchService for BrokerApi {
    async fn list_flagged_accounts(
        &self,
        request: Request<pb::ListFlaggedAccountsRequest>,
    ) -> Result<Response<pb::ListFlaggedAccountsResponse>, Status> {
        staff(&principal_of(&request)?)?;
        let limit = match request.get_ref().page_size {
            0 => 100,
            n @ 1..=500 => n,
            _ => return Err(ApiError::invalid_field("page_size", "must be 0 to 500").into()),
        };
        let flags = self
            .brokers
            .store
            .open_flags(Utc::now(), i64::from(limit))
            .await
            .map_err(store_failed)?;
        Ok(Response::new(pb::ListFlaggedAccountsResponse {
            accounts: flags
                .into_iter()
                .map(|flag| pb::FlaggedAccount {
                    account: flag.account,
                    nik_masked: flag.nik_masked,
                    refusals: flag.refusals,
                    flagged_at: Some(convert::timestamp(flag.flagged_at)),
                    blocked_until: Some(convert::timestamp(flag.blocked_until)),
                })
                .collect(),
        }))
    }

    async fn clear_flagged_account(
        &self,
        request: Request<pb::ClearFlaggedAccountRequest>,
    ) -> Result<Response<pb::ClearFlaggedAccountResponse>, Status> {
        let principal = principal_of(&request)?;
        staff(&principal)?;
        let pb::ClearFlaggedAccountRequest { account, reason } = request.into_inner();
        let mut v = Violations::new();
        if !adminduk_kit::principal::is_identifier(&account) {
            v.add("account", "must be an account as ListFlaggedAccounts names it");
        }
        let reason = reason.trim();
        if !(10..=500).contains(&reason.chars().count()) {
            v.add("reason", "must be the reason written out, 10 to 500 characters");
        }
        v.into_result()?;
        let reason = adminduk_kit::mask::mask_digit_runs(reason);
        let by = principal.to_string();
        let now = Utc::now();
        let not_flagged = |account: String| {
            ApiError::new(ErrorCode::NotFound, "no open flag for this account")
                .with_reason(ErrorReason::AccountNotFlagged, [("account".to_owned(), account)])
        };
        let flagged = self
            .brokers
            .store
            .is_flagged(&account, now)
            .await
            .map_err(store_failed)?;
        if !flagged {
            return Err(not_flagged(account).into());
        }
        // The shared marks go first: if they cannot, nothing has changed and the office retries.
        for key in [block_key(&account), refusals_key(&account)] {
            self.brokers.cache.delete(&key).await.map_err(|err| {
                tracing::warn!(error = %err, "broker flag not cleared: shared cache away");
                ApiError::unavailable(
                    "the shared cache cannot be reached; try again",
                    Duration::from_secs(1),
                )
            })?;
        }
        let cleared = self
            .brokers
            .store
            .clear_flag(&account, now, &by, &reason)
            .await
            .map_err(store_failed)?;
        if !cleared {
            // Cleared by someone else, or ended, since it was read.
            return Err(not_flagged(account).into());
        }
        tracing::info!(account = %account, by = %by, reason = %reason, "broker flag cleared");
        Ok(Response::new(pb::ClearFlaggedAccountResponse {
            account,
            cleared_at: Some(convert::timestamp(now)),
            cleared_by: by,
        }))
    }
}
