//! The identity's standing: its status (and whether the resident could
//! activate), revocation at an office, who a token's subject is, and how
//! many residents of an area are active.

use std::time::Duration;

use chrono::{DateTime, Utc};

use adminduk_kit::ApiError;
use adminduk_kit::nik::Nik;
use adminduk_kit::token::revoked_device_key;

use super::{Attempt, Ikd, Office};
use crate::domain::{TOKEN_TTL, check_eligibility};
use crate::refusal::{not_active, unknown_subject};
use crate::store::Identity;

/// A request naming a resident by NIK, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NikQuery {
    /// The NIK.
    pub nik: Nik,
}

/// Where an identity stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityState {
    /// Active on a device.
    Active,
    /// An activation is under way.
    Pending,
    /// Revoked, and no activation under way.
    Revoked,
    /// Never activated, and no activation under way.
    NotActivated,
}

/// What `GetStatus` reports of a resident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// Where the identity stands.
    pub state: IdentityState,
    /// The bound device, when active.
    pub device_id: String,
    /// When activated, when active.
    pub activated_at: Option<DateTime<Utc>>,
    /// When not active: why the resident could not activate (empty when they
    /// could, `UNKNOWN` when the population service did not answer).
    pub ineligible: String,
}

/// An office's revocation of an identity, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoke {
    /// The resident's NIK.
    pub nik: Nik,
    /// Why, as the officer gave it (checked, not stored).
    pub reason: String,
    /// The office and officer revoking it.
    pub office: Office,
}

/// An identity revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The device it was bound to.
    pub device_id: String,
}

/// A session token's subject to resolve, checked: 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectQuery {
    /// The subject.
    pub subject: String,
}

/// An area to count, checked: a known regency or kecamatan code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AreaQuery {
    /// The code.
    pub area_code: String,
}

/// IKD adoption in an area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adoption {
    /// The area.
    pub area_code: String,
    /// Residents eligible for a KTP-el, by the population service.
    pub eligible: i64,
    /// Active identities.
    pub active: i64,
}

impl Adoption {
    /// Active identities per eligible resident (0 where none is eligible).
    pub fn share(&self) -> f64 {
        if self.eligible > 0 {
            self.active as f64 / self.eligible as f64
        } else {
            0.0
        }
    }

    /// More identities needed to reach `target` (a share) of the eligible.
    pub fn gap_to(&self, target: f64) -> i64 {
        ((self.eligible as f64 * target).ceil() as i64 - self.active).max(0)
    }
}

impl Ikd {
    /// The resident's status; when not active, also whether they could activate.
    pub async fn status(&self, query: &NikQuery) -> Result<StatusReport, ApiError> {
        let nik = query.nik.as_str();
        let identity = self.store.identity(nik).await?;
        if let Some(identity) = identity.as_ref().filter(|i| i.active) {
            return Ok(StatusReport {
                state: IdentityState::Active,
                device_id: identity.device_id.clone(),
                activated_at: Some(identity.activated_at),
                ineligible: String::new(),
            });
        }
        let state = if self.store.has_open_activation(nik, Utc::now()).await? {
            IdentityState::Pending
        } else if identity.is_some() {
            IdentityState::Revoked
        } else {
            IdentityState::NotActivated
        };
        Ok(StatusReport {
            state,
            device_id: String::new(),
            activated_at: None,
            ineligible: self.ineligible(nik).await,
        })
    }

    /// Whether the resident could activate (IKD first exempts those who
    /// cannot): empty when they could, why not, or `UNKNOWN` when the
    /// population service did not answer.
    async fn ineligible(&self, nik: &str) -> String {
        match self.population.resident_facts(nik).await {
            Ok((facts, _)) => check_eligibility(facts, adminduk_kit::time::today_wib())
                .err()
                .map_or_else(String::new, |why| why.as_str().to_owned()),
            Err(err) => {
                tracing::warn!(error = %err.message(), "eligibility unknown: population unanswered");
                "UNKNOWN".to_owned()
            }
        }
    }

    /// Revokes an active identity at an office, and marks its device revoked
    /// for the gateways. A revoked one is answered as its revocation was, and
    /// its mark set again (a retry, or a second office). The attempt names
    /// the office.
    pub async fn revoke(&self, command: Revoke, attempt: &mut Attempt) -> Result<Revoked, ApiError> {
        let Revoke {
            nik,
            reason: _,
            office,
        } = command;
        attempt.at_office(&office);
        let nik = nik.as_str();
        let device = match self.store.revoke(nik, Utc::now()).await? {
            Some(device) => {
                crate::service::count_stage("revoked");
                device
            }
            None => match self.store.identity(nik).await? {
                Some(identity) if !identity.active => identity.device_id,
                _ => return Err(not_active()),
            },
        };
        // Tokens already out live at most TOKEN_TTL: the mark outlives them.
        let ttl = (TOKEN_TTL + chrono::Duration::minutes(1))
            .to_std()
            .unwrap_or(Duration::from_secs(960));
        if let Err(err) = self.cache.set(&revoked_device_key(&device), b"1", ttl).await {
            tracing::error!(error = %err, "revocation not shared; gateways fall back to asking the service");
        }
        self.forget_status(nik).await;
        tracing::info!(nik = %adminduk_kit::mask::log_nik(nik), device = %device, "identity revoked");
        Ok(Revoked { device_id: device })
    }

    /// The identity, active or revoked, that a session token's subject stands for.
    pub async fn resolve_subject(&self, query: &SubjectQuery) -> Result<Identity, ApiError> {
        self.store
            .identity_by_subject(&query.subject)
            .await?
            .ok_or_else(unknown_subject)
    }

    /// Active identities in the area against its eligible residents.
    pub async fn adoption(&self, query: AreaQuery) -> Result<Adoption, ApiError> {
        let AreaQuery { area_code } = query;
        let eligible = self.population.eligible_in(&area_code).await?;
        let active = self.store.count_active(&area_code).await?;
        Ok(Adoption {
            area_code,
            eligible,
            active,
        })
    }
}
