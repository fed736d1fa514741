//! Idempotency-Key support for creating endpoints: the first request with a key claims it, its
//! response is kept, and a retry with the same key and the same request gets that response
//! again instead of creating a second thing.

use crate::versioned::now;
use crate::{Result, Store, StoreError, found};
use sqlx::Row;
use std::fmt;

/// What [`Store::claim_idempotency_key`] found.
#[derive(Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// The key is now this request's: do the work, then complete (or release) the key.
    New,
    /// The same request already completed: answer with its response.
    Replay { status: u16, response: String },
    /// The same request is still being handled by someone else.
    InFlight,
    /// The key was used with a different request.
    Mismatch,
}

// By hand: a kept response can carry a secret shown once (an API key, a webhook secret), and
// Debug output ends up in logs.
impl fmt::Debug for IdempotencyClaim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdempotencyClaim::New => f.write_str("New"),
            IdempotencyClaim::Replay { status, response } => f
                .debug_struct("Replay")
                .field("status", status)
                .field("response", &format_args!("<{} bytes>", response.len()))
                .finish(),
            IdempotencyClaim::InFlight => f.write_str("InFlight"),
            IdempotencyClaim::Mismatch => f.write_str("Mismatch"),
        }
    }
}

impl Store {
    /// Claims `key` for a request whose method, path and body hash to `fingerprint`, or says
    /// what an earlier request with this key left.
    pub async fn claim_idempotency_key(
        &self,
        org_id: &str,
        key: &str,
        fingerprint: &str,
    ) -> Result<IdempotencyClaim> {
        // Two tries: an earlier claim released between our insert and our read leaves nothing
        // to read, and the second insert then wins.
        for _ in 0..2 {
            let (millis, _) = now();
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (org_id, idem_key, fingerprint, created_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (org_id, idem_key) DO NOTHING",
            )
            .bind(org_id)
            .bind(key)
            .bind(fingerprint)
            .bind(millis)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if inserted == 1 {
                return Ok(IdempotencyClaim::New);
            }
            let Some(row) = sqlx::query(
                "SELECT fingerprint, status, response FROM idempotency_keys
                 WHERE org_id = $1 AND idem_key = $2",
            )
            .bind(org_id)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            else {
                continue;
            };
            if row.try_get::<String, _>("fingerprint")? != fingerprint {
                return Ok(IdempotencyClaim::Mismatch);
            }
            let status: Option<i64> = row.try_get("status")?;
            let Some(status) = status else {
                return Ok(IdempotencyClaim::InFlight);
            };
            let status = u16::try_from(status)
                .map_err(|_| StoreError::Corrupt(format!("idempotent response status {status}")))?;
            let response: Option<String> = row.try_get("response")?;
            let response = response.ok_or_else(|| {
                StoreError::Corrupt("an idempotent response has a status but no body".to_owned())
            })?;
            return Ok(IdempotencyClaim::Replay { status, response });
        }
        Ok(IdempotencyClaim::InFlight)
    }

    /// Keeps the response to the request that claimed `key`. `NotFound` when there is no
    /// in-flight claim (it was released, or already completed).
    pub async fn complete_idempotency_key(
        &self,
        org_id: &str,
        key: &str,
        status: u16,
        response: &str,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE idempotency_keys SET status = $1, response = $2
             WHERE org_id = $3 AND idem_key = $4 AND status IS NULL",
        )
        .bind(i64::from(status))
        .bind(response)
        .bind(org_id)
        .bind(key)
        .execute(&self.pool)
        .await?;
        found(done)
    }

    /// Gives up an in-flight claim (the request failed), so a retry can claim the key afresh.
    /// A completed key is kept; releasing a key that is not claimed does nothing, since this
    /// runs on error paths that must not fail again.
    pub async fn release_idempotency_key(&self, org_id: &str, key: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE org_id = $1 AND idem_key = $2 AND status IS NULL",
        )
        .bind(org_id)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
