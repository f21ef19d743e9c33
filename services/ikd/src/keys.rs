//! The keys that sign session tokens.

use chrono::Utc;

use adminduk_kit::storage::Corrupt;
use adminduk_kit::token::{SigningKey, VerifyingKey};

use crate::store::{Store, StoreError};

/// The keys that sign session tokens: the newest signs, all verify.
#[derive(Debug)]
pub struct KeyRing {
    keys: Vec<SigningKey>,
}

impl KeyRing {
    /// Loads the stored keys, making the first one when there is none.
    pub async fn load(store: &Store) -> Result<Self, StoreError> {
        let mut keys = Vec::new();
        for (kid, pkcs8, _retired) in store.signing_keys().await? {
            keys.push(SigningKey::from_pkcs8(kid, &pkcs8).map_err(|_| Corrupt::new("signing key"))?);
        }
        if keys.is_empty() {
            let kid = format!("ikd-{}", Utc::now().format("%Y%m%d%H%M%S"));
            let key = SigningKey::generate(kid).map_err(|_| Corrupt::new("key generation"))?;
            store
                .add_signing_key(key.kid(), key.pkcs8(), &key.public_key(), Utc::now())
                .await?;
            keys.push(key);
        }
        Ok(Self { keys })
    }

    /// The key that signs new tokens.
    pub(crate) fn current(&self) -> Option<&SigningKey> {
        self.keys.first()
    }

    /// Every key's public half, for offline verification.
    pub fn verifying_keys(&self) -> Vec<VerifyingKey> {
        self.keys
            .iter()
            .map(|k| VerifyingKey {
                kid: k.kid().to_owned(),
                public_key: k.public_key(),
            })
            .collect()
    }
}
