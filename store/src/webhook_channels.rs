//! The generic webhook channel: one per organisation, with a signing secret the server needs
//! back in clear to sign requests, so it is sealed with the server's key (see `secrets`), not
//! hashed. The secret leaves the store only when created or rotated (shown once) and to the
//! sender that signs with it.
//!
//! A rotation keeps the secret it replaces, sealed in a column of its own, so that the Standard
//! Webhooks signature can carry both for an overlap after the rotation (the caller's setting);
//! a further rotation forgets it.

use crate::secrets::{WEBHOOK_CHANNEL_PREVIOUS_SECRET, WEBHOOK_CHANNEL_SECRET};
use crate::versioned::now;
use crate::{Result, Store, StoreError, found, time};
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

const SECRET_PREFIX: &str = "whsec_";

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WebhookChannel {
    pub url: String,
    pub timeout_ms: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub secret_rotated_at: DateTime<Utc>,
}

const CHANNEL_COLUMNS: &str = "url, timeout_ms, created_at, updated_at, secret_rotated_at";

fn channel(row: &AnyRow) -> Result<WebhookChannel> {
    Ok(WebhookChannel {
        url: row.try_get("url")?,
        timeout_ms: row.try_get("timeout_ms")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
        secret_rotated_at: time(row, "secret_rotated_at")?,
    })
}

/// "whsec_" + 64 hex characters: 256 random bits.
fn generate_secret() -> String {
    let mut random = [0u8; 32];
    rand::rng().fill_bytes(&mut random);
    format!("{SECRET_PREFIX}{}", hex::encode(random))
}

impl Store {
    /// Creates the organisation's webhook channel, returning its new signing secret (the only
    /// time it is shown), or changes the URL and timeout of the existing one, keeping its
    /// secret (`None` then).
    pub async fn configure_webhook_channel(
        &self,
        org_id: &str,
        url: &str,
        timeout_ms: i64,
    ) -> Result<(WebhookChannel, Option<String>)> {
        // Two tries: when two first configurations race on PostgreSQL, the loser's insert does
        // nothing and its second update then finds the winner's row.
        for _ in 0..2 {
            let (millis, _) = now();
            let updated = sqlx::query(
                "UPDATE webhook_channels SET url = $1, timeout_ms = $2, updated_at = $3
                 WHERE org_id = $4
                 RETURNING url, timeout_ms, created_at, updated_at, secret_rotated_at",
            )
            .bind(url)
            .bind(timeout_ms)
            .bind(millis)
            .bind(org_id)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = updated {
                return Ok((channel(&row)?, None));
            }
            let secret = generate_secret();
            let inserted = sqlx::query(
                "INSERT INTO webhook_channels
                     (org_id, url, secret_ciphertext, timeout_ms, created_at, updated_at,
                      secret_rotated_at)
                 VALUES ($1, $2, $3, $4, $5, $5, $5)
                 ON CONFLICT (org_id) DO NOTHING
                 RETURNING url, timeout_ms, created_at, updated_at, secret_rotated_at",
            )
            .bind(org_id)
            .bind(url)
            .bind(self.seal(org_id, WEBHOOK_CHANNEL_SECRET, org_id, &secret)?)
            .bind(timeout_ms)
            .bind(millis)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = inserted {
                return Ok((channel(&row)?, Some(secret)));
            }
        }
        Err(StoreError::Conflict(
            "the webhook channel is being configured by another request; try again".to_owned(),
        ))
    }

    /// Replaces the signing secret and returns the new one (shown once); the replaced one is
    /// kept as the previous secret. `NotFound` when the organisation has no webhook channel.
    pub async fn rotate_webhook_secret(&self, org_id: &str) -> Result<(WebhookChannel, String)> {
        // Compare-and-set on the sealed current secret, so that two rotations at once cannot
        // both keep the same "previous" secret: the loser reads again and keeps the winner's.
        for _ in 0..5 {
            let sealed: Option<String> = sqlx::query_scalar(
                "SELECT secret_ciphertext FROM webhook_channels WHERE org_id = $1",
            )
            .bind(org_id)
            .fetch_optional(&self.pool)
            .await?;
            let sealed = sealed.ok_or(StoreError::NotFound)?;
            let replaced = self.open(org_id, WEBHOOK_CHANNEL_SECRET, org_id, &sealed)?;
            let (millis, _) = now();
            let secret = generate_secret();
            let row = sqlx::query(
                "UPDATE webhook_channels
                 SET secret_ciphertext = $1, previous_secret_ciphertext = $2,
                     secret_rotated_at = $3, updated_at = $3
                 WHERE org_id = $4 AND secret_ciphertext = $5
                 RETURNING url, timeout_ms, created_at, updated_at, secret_rotated_at",
            )
            .bind(self.seal(org_id, WEBHOOK_CHANNEL_SECRET, org_id, &secret)?)
            .bind(self.seal(org_id, WEBHOOK_CHANNEL_PREVIOUS_SECRET, org_id, &replaced)?)
            .bind(millis)
            .bind(org_id)
            .bind(&sealed)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = row {
                return Ok((channel(&row)?, secret));
            }
        }
        Err(StoreError::Conflict(
            "the webhook secret is being rotated by another request; try again".to_owned(),
        ))
    }

    pub async fn get_webhook_channel(&self, org_id: &str) -> Result<Option<WebhookChannel>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CHANNEL_COLUMNS} FROM webhook_channels WHERE org_id = $1"
        )))
        .bind(org_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(channel)
        .transpose()
    }

    /// The channel with its signing secret in clear, for the sender that signs requests.
    pub async fn webhook_signing_secret(
        &self,
        org_id: &str,
    ) -> Result<Option<(WebhookChannel, String)>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CHANNEL_COLUMNS}, secret_ciphertext FROM webhook_channels WHERE org_id = $1"
        )))
        .bind(org_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let sealed: String = row.try_get("secret_ciphertext")?;
        Ok(Some((
            channel(&row)?,
            self.open(org_id, WEBHOOK_CHANNEL_SECRET, org_id, &sealed)?,
        )))
    }

    /// The channel with the secrets that sign its messages, in clear and newest first: the
    /// current one, then the previous one while the last rotation happened after
    /// `previous_valid_after` (the rotation's overlap).
    pub async fn webhook_signing_secrets(
        &self,
        org_id: &str,
        previous_valid_after: DateTime<Utc>,
    ) -> Result<Option<(WebhookChannel, Vec<String>)>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CHANNEL_COLUMNS}, secret_ciphertext, previous_secret_ciphertext
             FROM webhook_channels WHERE org_id = $1"
        )))
        .bind(org_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let channel = channel(&row)?;
        let sealed: String = row.try_get("secret_ciphertext")?;
        let mut secrets = vec![self.open(org_id, WEBHOOK_CHANNEL_SECRET, org_id, &sealed)?];
        let previous: Option<String> = row.try_get("previous_secret_ciphertext")?;
        if let Some(previous) = previous
            && channel.secret_rotated_at > previous_valid_after
        {
            secrets.push(self.open(org_id, WEBHOOK_CHANNEL_PREVIOUS_SECRET, org_id, &previous)?);
        }
        Ok(Some((channel, secrets)))
    }

    /// `NotFound` when the organisation has no webhook channel.
    pub async fn delete_webhook_channel(&self, org_id: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM webhook_channels WHERE org_id = $1")
            .bind(org_id)
            .execute(&self.pool)
            .await?;
        found(done)
    }
}
