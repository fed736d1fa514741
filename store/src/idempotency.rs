//! Idempotency-Key support for creating endpoints: the first request with a key claims it, its
//! response is kept, and a retry with the same key and the same request gets that response
//! again instead of creating a second thing.
//!
//! Nothing is kept for ever: a claim whose request never answered (the process died between
//! claim and answer) may be taken over after [`IDEMPOTENCY_CLAIM_TIMEOUT`], a kept answer
//! expires after [`IDEMPOTENCY_KEY_LIFETIME`] (a retry after that is a new request, as with
//! Stripe), and [`Store::purge_idempotency_keys`] deletes what has expired, response bodies
//! with their member data included.
//!
//! Each claim carries a random [`ClaimToken`], and only its holder may complete or release
//! it: a request that outlived its claim (taken over by a retry) can neither overwrite the
//! retry's answer nor free the retry's claim.

use crate::{Result, Store, StoreError, found, to_millis};
use chrono::{DateTime, TimeDelta, Utc};
use sqlx::Row;
use std::fmt;

/// How long a claim without an answer holds its key. Far longer than any request may run (the
/// API abandons requests long before), so a claim this old belongs to a request that died.
pub const IDEMPOTENCY_CLAIM_TIMEOUT: TimeDelta = TimeDelta::minutes(5);

/// How long a key and its kept answer live, counted from the claim.
pub const IDEMPOTENCY_KEY_LIFETIME: TimeDelta = TimeDelta::hours(24);

/// Proof that a claim is the holder's own: [`Store::complete_idempotency_key`] and
/// [`Store::release_idempotency_key`] act only on the claim made with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimToken(String);

impl ClaimToken {
    fn random() -> Self {
        ClaimToken(uuid::Uuid::new_v4().simple().to_string())
    }
}

/// What [`Store::claim_idempotency_key`] found.
#[derive(Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// The key is now this request's: do the work, then complete (or release) the key with
    /// this token.
    New(ClaimToken),
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
            IdempotencyClaim::New(token) => f.debug_tuple("New").field(token).finish(),
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
        self.claim_idempotency_key_at(org_id, key, fingerprint, Utc::now())
            .await
    }

    /// [`Store::claim_idempotency_key`] as of `now`, for tests that move the clock rather than
    /// wait.
    pub async fn claim_idempotency_key_at(
        &self,
        org_id: &str,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<IdempotencyClaim> {
        let millis = to_millis(now);
        let abandoned_before = to_millis(now - IDEMPOTENCY_CLAIM_TIMEOUT);
        let expired_before = to_millis(now - IDEMPOTENCY_KEY_LIFETIME);
        // Two tries: an earlier claim released between our insert and our read leaves nothing
        // to read, and the second insert then wins.
        let token = ClaimToken::random();
        for _ in 0..2 {
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (org_id, idem_key, fingerprint, created_at, claim_token)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (org_id, idem_key) DO NOTHING",
            )
            .bind(org_id)
            .bind(key)
            .bind(fingerprint)
            .bind(millis)
            .bind(&token.0)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if inserted == 1 {
                return Ok(IdempotencyClaim::New(token));
            }
            // A dead request's claim, or an expired answer: the key starts afresh. One UPDATE,
            // so of concurrent retries exactly one takes it over (the row is then current). The
            // new token shuts the dead request out, should it turn out to be alive after all.
            let taken_over = sqlx::query(
                "UPDATE idempotency_keys
                 SET fingerprint = $1, created_at = $2, status = NULL, response = NULL,
                     claim_token = $7
                 WHERE org_id = $3 AND idem_key = $4
                   AND ((status IS NULL AND created_at < $5) OR created_at < $6)",
            )
            .bind(fingerprint)
            .bind(millis)
            .bind(org_id)
            .bind(key)
            .bind(abandoned_before)
            .bind(expired_before)
            .bind(&token.0)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if taken_over == 1 {
                return Ok(IdempotencyClaim::New(token));
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

    /// Keeps the response to the request that claimed `key` with `token`. `NotFound` when that
    /// claim is not in flight (it was released, completed, or taken over by another request).
    pub async fn complete_idempotency_key(
        &self,
        org_id: &str,
        key: &str,
        token: &ClaimToken,
        status: u16,
        response: &str,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE idempotency_keys SET status = $1, response = $2
             WHERE org_id = $3 AND idem_key = $4 AND status IS NULL AND claim_token = $5",
        )
        .bind(i64::from(status))
        .bind(response)
        .bind(org_id)
        .bind(key)
        .bind(&token.0)
        .execute(&self.pool)
        .await?;
        found(done)
    }

    /// Gives up the in-flight claim made with `token` (the request failed or was abandoned), so
    /// a retry can claim the key afresh. A completed key is kept, and so is another request's
    /// claim; releasing what is not ours does nothing, since this runs on error paths that must
    /// not fail again.
    pub async fn release_idempotency_key(
        &self,
        org_id: &str,
        key: &str,
        token: &ClaimToken,
    ) -> Result<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys
             WHERE org_id = $1 AND idem_key = $2 AND status IS NULL AND claim_token = $3",
        )
        .bind(org_id)
        .bind(key)
        .bind(&token.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes every key claimed more than [`IDEMPOTENCY_KEY_LIFETIME`] ago (kept answers and
    /// dead claims alike) and says how many. The API and the worker run it periodically.
    pub async fn purge_idempotency_keys(&self) -> Result<u64> {
        self.purge_idempotency_keys_at(Utc::now()).await
    }

    /// [`Store::purge_idempotency_keys`] as of `now`.
    pub async fn purge_idempotency_keys_at(&self, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(to_millis(now - IDEMPOTENCY_KEY_LIFETIME))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
