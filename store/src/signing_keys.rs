//! Each organisation's Ed25519 key for signing its audit exports: made on first use, the private
//! half sealed at rest like every other secret (and re-sealed by a key rotation), the public half
//! served so that anyone holding an export can check it offline.

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::audit_chain::{ALGORITHM, base64_encode};
use crate::secrets::SIGNING_KEY_SECRET;
use crate::{Result, Store, StoreError, new_id, time, to_millis};
use chrono::{DateTime, Utc};

/// The public part of a signing key, as `GET /v1/organisation/signing-keys` serves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SigningKey {
    pub key_id: String,
    pub algorithm: String,
    /// The raw 32-byte public key, standard base64.
    pub public_key: String,
    pub created_at: DateTime<Utc>,
}

/// A signing key with its private half opened, for one export.
pub struct OrganisationSigner {
    pub key: SigningKey,
    pub pair: Ed25519KeyPair,
}

impl std::fmt::Debug for OrganisationSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrganisationSigner")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

fn signing_key(row: &AnyRow) -> Result<SigningKey> {
    Ok(SigningKey {
        key_id: row.try_get("id")?,
        algorithm: row.try_get("algorithm")?,
        public_key: row.try_get("public_key")?,
        created_at: time(row, "created_at")?,
    })
}

impl Store {
    /// The organisation's signing key with its private half, made (and its private half sealed)
    /// on first use. Two first uses at once make one key: the second insert does nothing and
    /// both read the key that won. `Config` when no secret key is configured to seal it with.
    pub async fn organisation_signer(&self, org_id: &str) -> Result<OrganisationSigner> {
        let keyring = self.keyring()?;
        if self.list_signing_keys(org_id).await?.is_empty() {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|_| StoreError::Config("no signing key could be generated".into()))?;
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
                .map_err(|_| StoreError::Config("no signing key could be generated".into()))?;
            let id = new_id();
            let sealed = keyring.seal(
                org_id,
                SIGNING_KEY_SECRET,
                &id,
                &hex::encode(pkcs8.as_ref()),
            )?;
            sqlx::query(
                "INSERT INTO signing_keys (id, org_id, algorithm, public_key, private_key_sealed, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (org_id) DO NOTHING",
            )
            .bind(&id)
            .bind(org_id)
            .bind(ALGORITHM)
            .bind(base64_encode(pair.public_key().as_ref()))
            .bind(sealed)
            .bind(to_millis(Utc::now()))
            .execute(&self.pool)
            .await?;
        }
        let row = sqlx::query(
            "SELECT id, algorithm, public_key, private_key_sealed, created_at FROM signing_keys
             WHERE org_id = $1",
        )
        .bind(org_id)
        .fetch_one(&self.pool)
        .await?;
        let key = signing_key(&row)?;
        let sealed: String = row.try_get("private_key_sealed")?;
        let pkcs8 = hex::decode(keyring.open(org_id, SIGNING_KEY_SECRET, &key.key_id, &sealed)?)
            .map_err(|_| StoreError::Corrupt("a signing key is not hexadecimal".into()))?;
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|_| StoreError::Corrupt("a signing key is not an Ed25519 key".into()))?;
        if base64_encode(pair.public_key().as_ref()) != key.public_key {
            return Err(StoreError::Corrupt(
                "a signing key's private half does not match its public half".into(),
            ));
        }
        Ok(OrganisationSigner { key, pair })
    }

    /// The organisation's signing keys (public halves), oldest first; empty until its first
    /// audit export.
    pub async fn list_signing_keys(&self, org_id: &str) -> Result<Vec<SigningKey>> {
        sqlx::query(
            "SELECT id, algorithm, public_key, created_at FROM signing_keys
             WHERE org_id = $1 ORDER BY created_at, id",
        )
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(signing_key)
        .collect()
    }
}
