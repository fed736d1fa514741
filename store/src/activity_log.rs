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
    /// [`FAILURE_REASONS_SHOWN`] reasons), each with a sample of [`SAMPLE_NAMES`] names. With no
    /// step: the recipients who failed before any step notified them (a message variable
    /// without a value for them).
    pub async fn failures_of_step(
        &self,
        org_id: &str,
        campaign_id: &str,
        step_id: Option<&str>,
    ) -> Result<Vec<FailureGroup>> {
        // $3 is the step, or unused (an always-true comparison keeps the numbering).
        let of_step = match step_id {
            Some(_) => "last_notified_step = $3 AND failure_reason IS NOT NULL",
            None => "last_notified_step IS NULL AND status = 'FAILED' AND $3 = $3",
        };
        let sql = format!(
            "SELECT failure_reason, COUNT(*) AS n FROM deliveries
             WHERE campaign_id = $1 AND org_id = $2 AND {of_step}
             GROUP BY failure_reason ORDER BY n DESC, failure_reason LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(campaign_id)
            .bind(org_id)
            .bind(step_id.unwrap_or(""))
            .bind(FAILURE_REASONS_SHOWN as i64)
            .fetch_all(&self.pool)
            .await?;
        let mut groups = Vec::with_capacity(rows.len());
        for row in &rows {
            let reason: Option<String> = row.try_get("failure_reason")?;
            let Some(reason) = reason else { continue };
            let count: i64 = row.try_get("n")?;
            let sql = format!(
                "SELECT {RECIPIENT_NAME} AS name FROM deliveries
                 WHERE campaign_id = $1 AND org_id = $2 AND {of_step}
                   AND failure_reason = $4
                 ORDER BY seq LIMIT $5"
            );
            let names = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(campaign_id)
                .bind(org_id)
                .bind(step_id.unwrap_or(""))
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

    /// How many entries of `kind` the campaign's log has for `step_id`: lines written one per
    /// event (a removed push token) stop at a bound, and the step's summary counts the rest.
    pub async fn count_activity(
        &self,
        org_id: &str,
        campaign_id: &str,
        step_id: &str,
        kind: ActivityKind,
    ) -> Result<u64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM activity_log
             WHERE campaign_id = $1 AND org_id = $2 AND step_id = $3 AND kind = $4",
        )
        .bind(campaign_id)
        .bind(org_id)
        .bind(step_id)
        .bind(kind.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(count.max(0) as u64)
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

/// The samples and per-reason counts, on each backend.
#[cfg(test)]
mod story_queries {
    use super::*;
    use crate::{NewCampaign, Recipient, testing};

    async fn campaign_with_outcomes(store: &Store) -> (String, String) {
        let org = store.create_organisation("Acme").await.unwrap().id;
        let (template, version) = store
            .create_template(&org, "notice", "Notice", "Please read.", &[])
            .await
            .unwrap();
        let campaign = store
            .create_campaign(NewCampaign {
                org_id: org.clone(),
                name: "Q1".into(),
                title: "Q1".into(),
                template_id: template.id,
                template_version: version.version,
                message_title: version.title,
                body: version.body,
                audience: serde_json::json!({}),
                definition: "{}".into(),
                definition_ref: None,
            })
            .await
            .unwrap()
            .id;
        store
            .activate_campaign(&org, &campaign, "campaign-q1", 5)
            .await
            .unwrap();
        let recipient = |user: &str, name: Option<&str>| Recipient {
            member_id: None,
            user_id: user.into(),
            email: None,
            display_name: name.map(str::to_owned),
            variables: Default::default(),
        };
        store
            .insert_deliveries(
                &org,
                &campaign,
                1,
                &[
                    recipient("ada", Some("Ada")),
                    recipient("alan", None),
                    recipient("bob", Some("Bob")),
                    recipient("cy", Some("Cy")),
                    recipient("dee", Some("Dee")),
                ],
            )
            .await
            .unwrap();
        // Dee fails before any step: a variable without a value.
        store
            .fail_pending_recipients(&org, &campaign, &["dee"], "no value for {{team}}")
            .await
            .unwrap();
        let ids: Vec<(String, String)> = store
            .list_deliveries(&org, &campaign, 0, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, d)| (d.user_id, d.id))
            .collect();
        let id = |user: &str| ids.iter().find(|(u, _)| u == user).unwrap().1.clone();
        let no_device = Err("no push device is registered".to_owned());
        store
            .record_notified(
                &org,
                "notify",
                false,
                &[
                    (id("ada"), Ok(())),
                    (id("alan"), Ok(())),
                    (id("bob"), no_device.clone()),
                    (id("cy"), no_device),
                ],
            )
            .await
            .unwrap();
        (org, campaign)
    }

    async fn tells_who_was_reached_and_who_failed_per_reason(store: Store) {
        let (org, campaign) = campaign_with_outcomes(&store).await;
        assert_eq!(
            store
                .sample_notified(&org, &campaign, "notify", 10)
                .await
                .unwrap(),
            ["Ada", "alan"],
            "named by display name, else user id"
        );
        assert_eq!(
            store
                .sample_notified(&org, &campaign, "notify", 1)
                .await
                .unwrap(),
            ["Ada"]
        );
        let failures = store
            .failures_of_step(&org, &campaign, Some("notify"))
            .await
            .unwrap();
        assert_eq!(
            failures,
            [FailureGroup {
                reason: "no push device is registered".into(),
                count: 2,
                sample: vec!["Bob".into(), "Cy".into()],
            }]
        );
        let before_any_step = store.failures_of_step(&org, &campaign, None).await.unwrap();
        assert_eq!(before_any_step.len(), 1);
        assert_eq!(before_any_step[0].sample, ["Dee"]);
        assert_eq!(
            store
                .sample_with_status(&org, &campaign, "FAILED", 10)
                .await
                .unwrap(),
            ["Bob", "Cy", "Dee"]
        );
        // Scoped by organisation: another one sees nothing.
        let other = store.create_organisation("Other").await.unwrap().id;
        assert!(
            store
                .failures_of_step(&other, &campaign, Some("notify"))
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn samples_and_failure_reasons_on_sqlite() {
        tells_who_was_reached_and_who_failed_per_reason(testing::sqlite().await.unwrap()).await;
    }

    #[tokio::test]
    async fn samples_and_failure_reasons_on_postgres() {
        match testing::postgres().await.unwrap() {
            Some(store) => tells_who_was_reached_and_who_failed_per_reason(store).await,
            None => eprintln!(
                "PostgreSQL SKIPPED ({} is not set)",
                testing::POSTGRES_URL_VAR
            ),
        }
    }
}
