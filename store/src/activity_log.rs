//! The per-campaign activity log: append-only, what an admin reads to see what happened.
//!
//! An entry tells its part of the story in one sentence a person reads ("reminded 2 recipients:
//! Alan, Grace"); what it counts is aggregated (per step, per failure reason) with a bounded
//! sample of names, so a campaign of 100,000 recipients writes a handful of lines, not one per
//! recipient. The helpers below keep that wording (plurals, samples) in one place.

use crate::{Result, Store, StoreError, time, to_millis};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityKind {
    CampaignStarted,
    StepStarted,
    StepFinished,
    StepFailed,
    WebhookAttempt,
    WebhookFailed,
    /// One attempt to deliver a generic webhook channel event.
    ChannelEventAttempt,
    /// A push token the provider declared gone was removed from its member.
    DeviceRemoved,
    CampaignCompleted,
    CampaignCancelled,
}

impl ActivityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityKind::CampaignStarted => "campaign_started",
            ActivityKind::StepStarted => "step_started",
            ActivityKind::StepFinished => "step_finished",
            ActivityKind::StepFailed => "step_failed",
            ActivityKind::WebhookAttempt => "webhook_attempt",
            ActivityKind::WebhookFailed => "webhook_failed",
            ActivityKind::ChannelEventAttempt => "channel_event_attempt",
            ActivityKind::DeviceRemoved => "device_removed",
            ActivityKind::CampaignCompleted => "campaign_completed",
            ActivityKind::CampaignCancelled => "campaign_cancelled",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|_| StoreError::Corrupt(format!("activity kind {s:?}")))
    }
}

#[derive(Clone, Debug)]
pub struct NewActivity<'a> {
    pub org_id: &'a str,
    pub campaign_id: &'a str,
    pub step_id: Option<&'a str>,
    pub kind: ActivityKind,
    pub message: String,
    pub details: serde_json::Value,
}

#[derive(Clone, Debug, Serialize)]
pub struct ActivityEntry {
    pub id: i64,
    pub occurred_at: DateTime<Utc>,
    pub step_id: Option<String>,
    pub kind: ActivityKind,
    pub message: String,
    pub details: serde_json::Value,
}

/// Names an entry quotes at most, per list (recipients reminded, missed, failed for a reason).
pub const SAMPLE_NAMES: usize = 10;
/// Distinct failure reasons an entry reports at most (the most frequent first).
pub const FAILURE_REASONS_SHOWN: usize = 10;

/// "1 recipient", "2 recipients", "0 recipients".
pub fn counted(count: u64, singular: &str, plural: &str) -> String {
    if count == 1 {
        format!("1 {singular}")
    } else {
        format!("{count} {plural}")
    }
}

/// The names of a sample of `total` people: "Ada, Alan", or "Ada, Alan and 3 others" when the
/// sample is not all of them.
pub fn sample_phrase(names: &[String], total: u64) -> String {
    let shown = names.iter().take(SAMPLE_NAMES).cloned().collect::<Vec<_>>();
    let rest = total.saturating_sub(shown.len() as u64);
    match (shown.is_empty(), rest) {
        (true, _) => String::new(),
        (false, 0) => shown.join(", "),
        (false, rest) => format!(
            "{} and {}",
            shown.join(", "),
            counted(rest, "other", "others")
        ),
    }
}

/// Deliveries that failed for one reason: how many, and a sample of who.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FailureGroup {
    pub reason: String,
    pub count: u64,
    pub sample: Vec<String>,
}

impl FailureGroup {
    /// "no device registered (2: Ada, Alan)".
    pub fn phrase(&self) -> String {
        format!(
            "{} ({}: {})",
            self.reason,
            self.count,
            sample_phrase(&self.sample, self.count)
        )
    }
}

/// How a recipient is named in the log: their display name, else their user id.
const RECIPIENT_NAME: &str = "COALESCE(display_name, user_id)";

impl Store {
    /// Up to `limit` names of the recipients `step_id` reached (the last step to notify them,
    /// without a failure), in audience order.
    pub async fn sample_notified(
        &self,
        org_id: &str,
        campaign_id: &str,
        step_id: &str,
        limit: usize,
    ) -> Result<Vec<String>> {
        let sql = format!(
            "SELECT {RECIPIENT_NAME} AS name FROM deliveries
             WHERE campaign_id = $1 AND org_id = $2 AND last_notified_step = $3
               AND failure_reason IS NULL
             ORDER BY seq LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(campaign_id)
            .bind(org_id)
            .bind(step_id)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| Ok(row.try_get("name")?)).collect()
    }

    /// Up to `limit` names of the campaign's deliveries in `status` (e.g. `MISSED`).
    pub async fn sample_with_status(
        &self,
        org_id: &str,
        campaign_id: &str,
        status: &str,
        limit: usize,
    ) -> Result<Vec<String>> {
        let sql = format!(
            "SELECT {RECIPIENT_NAME} AS name FROM deliveries
             WHERE campaign_id = $1 AND org_id = $2 AND status = $3
             ORDER BY seq LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(campaign_id)
            .bind(org_id)
            .bind(status)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| Ok(row.try_get("name")?)).collect()
    }

    /// The recipients `step_id` could not reach, per reason (most frequent first, at most
    /// [`FAILURE_REASONS_SHOWN`] reasons), each with a sample of [`SAMPLE_NAMES`] names.
    pub async fn failures_of_step(
        &self,
        org_id: &str,
        campaign_id: &str,
        step_id: &str,
    ) -> Result<Vec<FailureGroup>> {
        let rows = sqlx::query(
            "SELECT failure_reason, COUNT(*) AS n FROM deliveries
             WHERE campaign_id = $1 AND org_id = $2 AND last_notified_step = $3
               AND failure_reason IS NOT NULL
             GROUP BY failure_reason ORDER BY n DESC, failure_reason LIMIT $4",
        )
        .bind(campaign_id)
        .bind(org_id)
        .bind(step_id)
        .bind(FAILURE_REASONS_SHOWN as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut groups = Vec::with_capacity(rows.len());
        for row in &rows {
            let reason: String = row.try_get("failure_reason")?;
            let count: i64 = row.try_get("n")?;
            let sql = format!(
                "SELECT {RECIPIENT_NAME} AS name FROM deliveries
                 WHERE campaign_id = $1 AND org_id = $2 AND last_notified_step = $3
                   AND failure_reason = $4
                 ORDER BY seq LIMIT $5"
            );
            let names = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(campaign_id)
                .bind(org_id)
                .bind(step_id)
                .bind(&reason)
                .bind(SAMPLE_NAMES as i64)
                .fetch_all(&self.pool)
                .await?;
            groups.push(FailureGroup {
                reason,
                count: count.max(0) as u64,
                sample: names
                    .iter()
                    .map(|row| row.try_get("name"))
                    .collect::<std::result::Result<_, _>>()?,
            });
        }
        Ok(groups)
    }

    pub async fn append_activity(&self, entry: NewActivity<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO activity_log (org_id, campaign_id, occurred_at, step_id, kind, message, details)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(entry.org_id)
        .bind(entry.campaign_id)
        .bind(to_millis(Utc::now()))
        .bind(entry.step_id)
        .bind(entry.kind.as_str())
        .bind(entry.message)
        .bind(entry.details.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The campaign's log, oldest first, after entry `after_id`.
    pub async fn list_activity(
        &self,
        org_id: &str,
        campaign_id: &str,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<ActivityEntry>> {
        let rows = sqlx::query(
            "SELECT id, occurred_at, step_id, kind, message, details FROM activity_log
             WHERE campaign_id = $1 AND org_id = $2 AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(campaign_id)
        .bind(org_id)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ActivityEntry {
                    id: row.try_get("id")?,
                    occurred_at: time(row, "occurred_at")?,
                    step_id: row.try_get("step_id")?,
                    kind: ActivityKind::parse(&row.try_get::<String, _>("kind")?)?,
                    message: row.try_get("message")?,
                    details: serde_json::from_str(&row.try_get::<String, _>("details")?)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod wording_tests {
    use super::*;

    #[test]
    fn one_is_singular_and_every_other_count_is_plural() {
        assert_eq!(counted(1, "recipient", "recipients"), "1 recipient");
        assert_eq!(counted(2, "recipient", "recipients"), "2 recipients");
        assert_eq!(counted(0, "recipient", "recipients"), "0 recipients");
    }

    #[test]
    fn a_sample_says_how_many_it_leaves_out() {
        let names = vec!["Ada".to_owned(), "Alan".to_owned()];
        assert_eq!(sample_phrase(&names, 2), "Ada, Alan");
        assert_eq!(sample_phrase(&names, 3), "Ada, Alan and 1 other");
        assert_eq!(sample_phrase(&names, 100_000), "Ada, Alan and 99998 others");
        assert_eq!(sample_phrase(&[], 5), "");
    }

    #[test]
    fn a_sample_never_quotes_more_than_its_bound() {
        let names: Vec<String> = (0..50).map(|i| format!("n{i}")).collect();
        let phrase = sample_phrase(&names, 50);
        assert_eq!(phrase.matches(", ").count(), SAMPLE_NAMES - 1, "{phrase}");
        assert!(phrase.ends_with("and 40 others"), "{phrase}");
    }
}
