//! The `log` push provider's record: every push it "sends" lands here (local development and
//! tests read it to see exactly who was notified, when, by which step).

use crate::{Result, Store, time, to_millis};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

#[derive(Clone, Debug)]
pub struct NewPush<'a> {
    pub org_id: &'a str,
    pub campaign_id: &'a str,
    pub delivery_id: &'a str,
    pub step_id: &'a str,
    pub provider: &'a str,
    pub title: &'a str,
    pub body: &'a str,
    pub deeplink: &'a str,
}

#[derive(Clone, Debug, Serialize)]
pub struct PushRecord {
    pub delivery_id: String,
    pub step_id: String,
    pub provider: String,
    pub title: String,
    pub body: String,
    pub deeplink: String,
    pub sent_at: DateTime<Utc>,
}

impl Store {
    pub async fn record_push(&self, push: NewPush<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO push_log (org_id, campaign_id, delivery_id, step_id, provider, title, body,
                                   deeplink, sent_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(push.org_id)
        .bind(push.campaign_id)
        .bind(push.delivery_id)
        .bind(push.step_id)
        .bind(push.provider)
        .bind(push.title)
        .bind(push.body)
        .bind(push.deeplink)
        .bind(to_millis(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every push recorded for a campaign, oldest first.
    pub async fn list_pushes(&self, org_id: &str, campaign_id: &str) -> Result<Vec<PushRecord>> {
        let rows = sqlx::query(
            "SELECT delivery_id, step_id, provider, title, body, deeplink, sent_at FROM push_log
             WHERE campaign_id = $1 AND org_id = $2 ORDER BY id",
        )
        .bind(campaign_id)
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PushRecord {
                    delivery_id: row.try_get("delivery_id")?,
                    step_id: row.try_get("step_id")?,
                    provider: row.try_get("provider")?,
                    title: row.try_get("title")?,
                    body: row.try_get("body")?,
                    deeplink: row.try_get("deeplink")?,
                    sent_at: time(row, "sent_at")?,
                })
            })
            .collect()
    }
}
