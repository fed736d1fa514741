//! The generic webhook channel's events: one per recipient and notifying step, with
//! the exact body sent, so that every retry re-sends identical bytes. The retry schedule is the
//! caller's; this module records each attempt and when the next one is due.

use crate::versioned::now;
use crate::{Backend, Result, Store, from_millis, new_id, to_millis};
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Row};

/// An event whose next attempt is due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookEvent {
    pub id: String,
    pub delivery_id: String,
    /// The JSON body, byte for byte as the first attempt sent it.
    pub body: String,
    /// Attempts made so far.
    pub attempts: i64,
}

/// How one attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookAttemptOutcome {
    Delivered,
    /// Failed; try again at this time.
    RetryAt(DateTime<Utc>),
    /// Failed for good (the schedule is used up, or the answer was one no retry can change).
    Failed,
}

/// Where a step's events stand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WebhookEventProgress {
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
    /// When the earliest pending event can next be sent: its next attempt is due and no
    /// sender's lease holds it.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Queues one event per `(delivery id, body)` for `step_id`, due at once. An event that
    /// already exists for the delivery and step is kept as it is (a retried fan-out page must
    /// not change the `occurred_at` a receiver may already have seen). Returns how many were new.
    pub async fn enqueue_webhook_events(
        &self,
        org_id: &str,
        campaign_id: &str,
        step_id: &str,
        events: &[(String, String)],
    ) -> Result<u64> {
        let (millis, _) = now();
        let mut tx = self.write_tx().await?;
        let mut added = 0;
        for (delivery_id, body) in events {
            added += sqlx::query(
                "INSERT INTO webhook_events (id, org_id, campaign_id, step_id, delivery_id, body,
                                             status, attempts, next_attempt_at, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, 'PENDING', 0, $7, $7)
                 ON CONFLICT (campaign_id, step_id, delivery_id) DO NOTHING",
            )
            .bind(new_id())
            .bind(org_id)
            .bind(campaign_id)
            .bind(step_id)
            .bind(delivery_id)
            .bind(body)
            .bind(millis)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(added)
    }

    /// Up to `limit` pending events of the step that are due by `due_by`, after `after_id` in
    /// id order (ids grow with time, so older events go first).
    pub async fn due_webhook_events(
        &self,
        org_id: &str,
        campaign_id: &str,
        step_id: &str,
        due_by: DateTime<Utc>,
        after_id: &str,
        limit: i64,
    ) -> Result<Vec<WebhookEvent>> {
        let rows = sqlx::query(
            "SELECT id, delivery_id, body, attempts FROM webhook_events
             WHERE campaign_id = $1 AND org_id = $2 AND step_id = $3 AND status = 'PENDING'
               AND next_attempt_at <= $4 AND id > $5
             ORDER BY id LIMIT $6",
        )
        .bind(campaign_id)
        .bind(org_id)
        .bind(step_id)
        .bind(to_millis(due_by))
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(WebhookEvent {
                    id: row.try_get("id")?,
                    delivery_id: row.try_get("delivery_id")?,
                    body: row.try_get("body")?,
                    attempts: row.try_get("attempts")?,
                })
            })
            .collect()
    }

    /// Claims up to `limit` pending events of the step that are due by `now` and that no other
    /// sender holds, oldest first, leasing them to the caller until `lease_until`: until then
    /// no other claim returns them, so two senders never POST one event at once. Recording the
    /// attempt ends the lease; a sender that dies mid-send leaves the lease to run out.
    ///
    /// One statement selects and leases: on PostgreSQL rows another claim has locked are
    /// skipped, and the lease is checked again on the locked row; SQLite runs one writer at a
    /// time. The selection is materialised so that PostgreSQL runs it once: as a plain
    /// subquery its LIMIT may be applied more than once and lease more than `limit` rows.
    pub async fn claim_webhook_events(
        &self,
        org_id: &str,
        campaign_id: &str,
        step_id: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<WebhookEvent>> {
        // Only one of two fixed clauses is put into the SQL text; every value is bound.
        let skip_locked = match self.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "WITH picked AS MATERIALIZED (
                 SELECT id FROM webhook_events
                 WHERE campaign_id = $2 AND org_id = $3 AND step_id = $4
                   AND status = 'PENDING' AND next_attempt_at <= $5 AND leased_until <= $5
                 ORDER BY next_attempt_at, id LIMIT $6 {skip_locked})
             UPDATE webhook_events SET leased_until = $1
             WHERE id IN (SELECT id FROM picked) AND status = 'PENDING' AND leased_until <= $5
             RETURNING id, delivery_id, body, attempts"
        )))
        .bind(to_millis(lease_until))
        .bind(campaign_id)
        .bind(org_id)
        .bind(step_id)
        .bind(to_millis(now))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut events = rows
            .iter()
            .map(|row| {
                Ok(WebhookEvent {
                    id: row.try_get("id")?,
                    delivery_id: row.try_get("delivery_id")?,
                    body: row.try_get("body")?,
                    attempts: row.try_get("attempts")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // RETURNING keeps no order; older events go first.
        events.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(events)
    }

    /// Counts an attempt of a pending event, records how it ended and ends the sender's lease.
    /// `attempts_before` is the count the sender read: if another sender recorded an attempt
    /// meanwhile (or finished the event), nothing changes and the answer is `false`.
    pub async fn record_webhook_attempt(
        &self,
        org_id: &str,
        event_id: &str,
        attempts_before: i64,
        outcome: WebhookAttemptOutcome,
        error: Option<&str>,
    ) -> Result<bool> {
        let (status, next_at) = match outcome {
            WebhookAttemptOutcome::Delivered => ("DELIVERED", None),
            WebhookAttemptOutcome::RetryAt(at) => ("PENDING", Some(to_millis(at))),
            WebhookAttemptOutcome::Failed => ("FAILED", None),
        };
        let done = sqlx::query(
            "UPDATE webhook_events
             SET attempts = attempts + 1, status = $1,
                 next_attempt_at = COALESCE($2, next_attempt_at), last_error = $3,
                 leased_until = 0
             WHERE id = $4 AND org_id = $5 AND status = 'PENDING' AND attempts = $6",
        )
        .bind(status)
        .bind(next_at)
        .bind(error)
        .bind(event_id)
        .bind(org_id)
        .bind(attempts_before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends every pending event of the step (of the whole campaign when `step_id` is `None`) as
    /// FAILED with `reason`: the channel was removed, the campaign cancelled. Returns how many.
    pub async fn fail_pending_webhook_events(
        &self,
        org_id: &str,
        campaign_id: &str,
        step_id: Option<&str>,
        reason: &str,
    ) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE webhook_events SET status = 'FAILED', last_error = $1
             WHERE campaign_id = $2 AND org_id = $3 AND ($4 = '' OR step_id = $4)
               AND status = 'PENDING'",
        )
        .bind(reason)
        .bind(campaign_id)
        .bind(org_id)
        .bind(step_id.unwrap_or_default())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    pub async fn webhook_event_progress(
        &self,
        org_id: &str,
        campaign_id: &str,
        step_id: &str,
    ) -> Result<WebhookEventProgress> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n,
                    MIN(CASE WHEN leased_until > next_attempt_at THEN leased_until
                             ELSE next_attempt_at END) AS next_at
             FROM webhook_events
             WHERE campaign_id = $1 AND org_id = $2 AND step_id = $3
             GROUP BY status",
        )
        .bind(campaign_id)
        .bind(org_id)
        .bind(step_id)
        .fetch_all(&self.pool)
        .await?;
        let mut progress = WebhookEventProgress::default();
        for row in &rows {
            let n = row.try_get::<i64, _>("n")? as u64;
            match row.try_get::<String, _>("status")?.as_str() {
                "PENDING" => {
                    progress.pending = n;
                    progress.next_attempt_at = row
                        .try_get::<Option<i64>, _>("next_at")?
                        .map(from_millis)
                        .transpose()?;
                }
                "DELIVERED" => progress.delivered = n,
                _ => progress.failed += n,
            }
        }
        Ok(progress)
    }
}
