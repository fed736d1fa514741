//! The per-campaign activity log: append-only, what an admin reads to see what happened.

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

impl Store {
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
