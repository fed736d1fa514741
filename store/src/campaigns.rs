//! Campaigns: creation as a draft, start (audience → deliveries, exactly once), cancel,
//! completion, and the bits of workflow progress the API shows.

use crate::header_secrets::Sealing;
use crate::{
    Backend, Result, Store, StoreError, deliveries::DeliveryStatus, new_id, opt_time, time,
    to_millis,
};
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CampaignStatus {
    Created,
    Active,
    Completed,
    Cancelled,
}

impl CampaignStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignStatus::Created => "CREATED",
            CampaignStatus::Active => "ACTIVE",
            CampaignStatus::Completed => "COMPLETED",
            CampaignStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "CREATED" => CampaignStatus::Created,
            "ACTIVE" => CampaignStatus::Active,
            "COMPLETED" => CampaignStatus::Completed,
            "CANCELLED" => CampaignStatus::Cancelled,
            other => return Err(StoreError::Corrupt(format!("campaign status {other:?}"))),
        })
    }
}

/// One member of a campaign's audience, with the variables that personalise their message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recipient {
    /// The directory member this recipient was resolved from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
}

/// A draft campaign: its message is copied from the pinned template version, so later edits
/// of the template never reach it.
#[derive(Clone, Debug)]
pub struct NewCampaign {
    pub org_id: String,
    pub name: String,
    /// The campaign's title, shown to recipients and available to templates as `{{title}}`.
    pub title: String,
    pub template_id: String,
    pub template_version: i64,
    /// The pinned version's title and Markdown body.
    pub message_title: String,
    pub body: String,
    /// The audience as given (groups, teams, members with variables), as JSON.
    pub audience: serde_json::Value,
    /// The validated workflow definition, in its canonical JSON form.
    pub definition: String,
    /// The stored definition it came from, when it was not given inline.
    pub definition_ref: Option<(String, i64)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Campaign {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub title: String,
    pub template_id: Option<String>,
    pub template_version: Option<i64>,
    pub message_title: String,
    pub body: String,
    pub audience: serde_json::Value,
    pub definition: String,
    pub definition_id: Option<String>,
    pub definition_version: Option<i64>,
    pub status: CampaignStatus,
    pub workflow_id: Option<String>,
    pub current_step: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// How many recipients the audience had when the campaign started; the workflow writes
    /// their deliveries in pages, so until it has, fewer deliveries than this exist.
    pub recipient_count: Option<i64>,
}

/// What [`Store::start_campaign`] did.
#[derive(Debug)]
pub struct StartOutcome {
    pub campaign: Campaign,
    /// False when the campaign had already been started: nothing was written this time.
    pub newly_started: bool,
}

const CAMPAIGN_COLUMNS: &str = "id, org_id, name, title, template_id, template_version, \
     message_title, body, audience, definition, definition_id, definition_version, status, \
     workflow_id, current_step, created_at, started_at, finished_at, recipient_count";

/// Rows per multi-row INSERT: well under both backends' bind-parameter limits.
const INSERT_BATCH: usize = 500;

fn campaign(row: &AnyRow) -> Result<Campaign> {
    Ok(Campaign {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        name: row.try_get("name")?,
        title: row.try_get("title")?,
        template_id: row.try_get("template_id")?,
        template_version: row.try_get("template_version")?,
        message_title: row.try_get("message_title")?,
        body: row.try_get("body")?,
        audience: serde_json::from_str(&row.try_get::<String, _>("audience")?)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        definition: row.try_get("definition")?,
        definition_id: row.try_get("definition_id")?,
        definition_version: row.try_get("definition_version")?,
        status: CampaignStatus::parse(&row.try_get::<String, _>("status")?)?,
        workflow_id: row.try_get("workflow_id")?,
        current_step: row.try_get("current_step")?,
        created_at: time(row, "created_at")?,
        started_at: opt_time(row, "started_at")?,
        finished_at: opt_time(row, "finished_at")?,
        recipient_count: row.try_get("recipient_count")?,
    })
}

/// An unguessable code for the recipient's deeplink (128 random bits).
fn deeplink_code() -> String {
    let mut random = [0u8; 16];
    rand::rng().fill_bytes(&mut random);
    hex::encode(random)
}

impl Store {
    /// Stores a draft campaign. An inline definition's webhook header values are sealed for
    /// this campaign in the same transaction as its row, so a refused insert leaves no secret
    /// behind (one copied from a stored definition already holds references).
    pub async fn create_campaign(&self, new: NewCampaign) -> Result<Campaign> {
        let id = new_id();
        let mut tx = self.write_tx().await?;
        let definition = match new.definition_ref {
            Some(_) => new.definition.clone(),
            None => {
                self.seal_definition_headers_in(
                    &mut tx,
                    &new.org_id,
                    &id,
                    &new.definition,
                    Sealing::Every,
                )
                .await?
                .0
            }
        };
        let (definition_id, definition_version) = new.definition_ref.unzip();
        sqlx::query(
            "INSERT INTO campaigns (id, org_id, name, title, template_id, template_version,
                                    message_title, body, audience, definition, definition_id,
                                    definition_version, status, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&id)
        .bind(&new.org_id)
        .bind(&new.name)
        .bind(&new.title)
        .bind(&new.template_id)
        .bind(new.template_version)
        .bind(&new.message_title)
        .bind(&new.body)
        .bind(new.audience.to_string())
        .bind(&definition)
        .bind(definition_id)
        .bind(definition_version)
        .bind(CampaignStatus::Created.as_str())
        .bind(to_millis(Utc::now()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.get_campaign(&new.org_id, &id).await
    }

    /// A page of the organisation's campaigns, oldest first, after the campaign id `after`.
    pub async fn list_campaigns(
        &self,
        org_id: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<Campaign>> {
        self.page_by_id(
            "campaigns",
            CAMPAIGN_COLUMNS,
            org_id,
            after,
            limit,
            campaign,
        )
        .await
    }

    /// A page of the organisation's campaigns, by id: oldest first after the id `after`, or
    /// with `newest_first` newest first before it (ids grow with time); only those in `status`
    /// when given (the index `campaigns_org_status` answers that in either order).
    pub async fn list_campaigns_in(
        &self,
        org_id: &str,
        status: Option<CampaignStatus>,
        newest_first: bool,
        after: &str,
        limit: i64,
    ) -> Result<Vec<Campaign>> {
        // $1 organisation, $2 cursor, $3 limit, $4 status. The status is named only when given,
        // so that the planner sees the index prefix it can use.
        let beyond = match (newest_first, after.is_empty()) {
            (false, _) => "AND id > $2 ORDER BY id",
            (true, false) => "AND id < $2 ORDER BY id DESC",
            (true, true) => "AND $2 = '' ORDER BY id DESC",
        };
        let in_status = if status.is_some() {
            "AND status = $4"
        } else {
            ""
        };
        let mut query = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns
             WHERE org_id = $1 {in_status} {beyond} LIMIT $3"
        )))
        .bind(org_id)
        .bind(after)
        .bind(limit);
        if let Some(status) = status {
            query = query.bind(status.as_str());
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(campaign).collect()
    }

    /// How many campaigns the organisation has, in any status.
    pub async fn count_campaigns(&self, org_id: &str) -> Result<i64> {
        Ok(
            sqlx::query("SELECT COUNT(*) AS n FROM campaigns WHERE org_id = $1")
                .bind(org_id)
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?,
        )
    }

    pub async fn get_campaign(&self, org_id: &str, campaign_id: &str) -> Result<Campaign> {
        self.row_by_id("campaigns", CAMPAIGN_COLUMNS, org_id, campaign_id, campaign)
            .await
    }

    /// Moves a draft to ACTIVE and writes one PENDING delivery per recipient (the resolved
    /// audience), in one transaction. Starting an ACTIVE campaign again writes nothing and
    /// reports it, so a start that crashed after this step can be retried safely.
    pub async fn start_campaign(
        &self,
        org_id: &str,
        campaign_id: &str,
        workflow_id: &str,
        audience: &[Recipient],
    ) -> Result<StartOutcome> {
        let mut tx = self.write_tx().await?;
        let count = audience.len() as i64;
        if !Self::activate(&mut tx, org_id, campaign_id, workflow_id, count).await? {
            tx.rollback().await?;
            return self.already_started(org_id, campaign_id).await;
        }
        Self::insert_deliveries_tx(&mut tx, self.backend, org_id, campaign_id, 1, audience).await?;
        tx.commit().await?;
        Ok(StartOutcome {
            campaign: self.get_campaign(org_id, campaign_id).await?,
            newly_started: true,
        })
    }

    /// Moves a draft to ACTIVE with `recipient_count` recipients counted, writing no delivery:
    /// for audiences of any size the workflow writes them in pages
    /// ([`Store::insert_deliveries`]), so the start request stays short. Idempotent like
    /// [`Store::start_campaign`].
    pub async fn activate_campaign(
        &self,
        org_id: &str,
        campaign_id: &str,
        workflow_id: &str,
        recipient_count: u64,
    ) -> Result<StartOutcome> {
        let mut tx = self.write_tx().await?;
        let count = recipient_count as i64;
        if !Self::activate(&mut tx, org_id, campaign_id, workflow_id, count).await? {
            tx.rollback().await?;
            return self.already_started(org_id, campaign_id).await;
        }
        tx.commit().await?;
        Ok(StartOutcome {
            campaign: self.get_campaign(org_id, campaign_id).await?,
            newly_started: true,
        })
    }

    /// CREATED → ACTIVE; false when the campaign was not a draft.
    async fn activate(
        tx: &mut Transaction<'static, Any>,
        org_id: &str,
        campaign_id: &str,
        workflow_id: &str,
        recipient_count: i64,
    ) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE campaigns SET status = $1, started_at = $2, workflow_id = $3, recipient_count = $4
             WHERE id = $5 AND org_id = $6 AND status = $7",
        )
        .bind(CampaignStatus::Active.as_str())
        .bind(to_millis(Utc::now()))
        .bind(workflow_id)
        .bind(recipient_count)
        .bind(campaign_id)
        .bind(org_id)
        .bind(CampaignStatus::Created.as_str())
        .execute(&mut **tx)
        .await?
        .rows_affected()
            == 1)
    }

    /// The answer to starting a campaign that is no longer a draft: fine when it is ACTIVE.
    async fn already_started(&self, org_id: &str, campaign_id: &str) -> Result<StartOutcome> {
        let campaign = self.get_campaign(org_id, campaign_id).await?;
        match campaign.status {
            CampaignStatus::Active => Ok(StartOutcome {
                campaign,
                newly_started: false,
            }),
            other => Err(StoreError::Conflict(format!(
                "the campaign is {} and can no longer be started",
                other.as_str()
            ))),
        }
    }

    /// Writes PENDING deliveries for `recipients` at positions `first_seq`, `first_seq + 1`, …
    /// in one transaction. A recipient or position the campaign already has is skipped, so a
    /// page written again after a crash changes nothing. Returns how many rows were written.
    pub async fn insert_deliveries(
        &self,
        org_id: &str,
        campaign_id: &str,
        first_seq: i64,
        recipients: &[Recipient],
    ) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let written = Self::insert_deliveries_tx(
            &mut tx,
            self.backend,
            org_id,
            campaign_id,
            first_seq,
            recipients,
        )
        .await?;
        tx.commit().await?;
        Ok(written)
    }

    async fn insert_deliveries_tx(
        tx: &mut Transaction<'static, Any>,
        backend: Backend,
        org_id: &str,
        campaign_id: &str,
        first_seq: i64,
        recipients: &[Recipient],
    ) -> Result<u64> {
        const COLUMNS: usize = 11;
        let mut written = 0;
        for (batch_index, batch) in recipients.chunks(INSERT_BATCH).enumerate() {
            let mut sql = String::from(
                "INSERT INTO deliveries (id, org_id, campaign_id, seq, member_id, user_id, email,
                                         display_name, variables, status, deeplink_code) VALUES ",
            );
            sql.push_str(&crate::value_rows(backend, batch.len(), COLUMNS));
            sql.push_str(" ON CONFLICT DO NOTHING");
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for (i, recipient) in batch.iter().enumerate() {
                let variables = serde_json::to_string(&recipient.variables)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                query = query
                    .bind(new_id())
                    .bind(org_id.to_owned())
                    .bind(campaign_id.to_owned())
                    // 1-based: position 0 is "before the first recipient" for paging.
                    .bind(first_seq + (batch_index * INSERT_BATCH + i) as i64)
                    .bind(recipient.member_id.clone())
                    .bind(recipient.user_id.clone())
                    .bind(recipient.email.clone())
                    .bind(recipient.display_name.clone())
                    .bind(variables)
                    .bind(DeliveryStatus::Pending.as_str())
                    .bind(deeplink_code());
            }
            written += query.execute(&mut **tx).await?.rows_affected();
        }
        Ok(written)
    }

    /// Marks the PENDING deliveries of these recipients (by user id) FAILED with `reason`:
    /// recipients whose message cannot be written, found while the deliveries are. Idempotent.
    pub async fn fail_pending_recipients(
        &self,
        org_id: &str,
        campaign_id: &str,
        user_ids: &[&str],
        reason: &str,
    ) -> Result<u64> {
        if user_ids.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "UPDATE deliveries SET status = 'FAILED', failed_at = $1, failure_reason = $2
             WHERE campaign_id = $3 AND org_id = $4 AND status = 'PENDING' AND user_id IN ({})",
            crate::placeholders(5, user_ids.len())
        );
        let mut query = sqlx::query(AssertSqlSafe(sql))
            .bind(to_millis(Utc::now()))
            .bind(reason.to_owned())
            .bind(campaign_id.to_owned())
            .bind(org_id.to_owned());
        for user_id in user_ids {
            query = query.bind((*user_id).to_owned());
        }
        Ok(query.execute(&self.pool).await?.rows_affected())
    }

    /// The campaign's last delivery position and the member it went to: where writing the
    /// deliveries of a started campaign resumes (members are written in id order).
    pub async fn last_delivery(
        &self,
        org_id: &str,
        campaign_id: &str,
    ) -> Result<Option<(i64, Option<String>)>> {
        let row = sqlx::query(
            "SELECT seq, member_id FROM deliveries WHERE campaign_id = $1 AND org_id = $2
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(campaign_id)
        .bind(org_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| Ok((row.try_get("seq")?, row.try_get("member_id")?)))
            .transpose()
    }

    /// Marks a draft or active campaign CANCELLED. Cancelling twice is harmless; a completed
    /// campaign cannot be cancelled.
    pub async fn cancel_campaign(&self, org_id: &str, campaign_id: &str) -> Result<Campaign> {
        sqlx::query(
            "UPDATE campaigns SET status = $1, finished_at = $2, current_step = NULL
             WHERE id = $3 AND org_id = $4 AND status IN ($5, $6)",
        )
        .bind(CampaignStatus::Cancelled.as_str())
        .bind(to_millis(Utc::now()))
        .bind(campaign_id)
        .bind(org_id)
        .bind(CampaignStatus::Created.as_str())
        .bind(CampaignStatus::Active.as_str())
        .execute(&self.pool)
        .await?;
        let campaign = self.get_campaign(org_id, campaign_id).await?;
        match campaign.status {
            CampaignStatus::Cancelled => Ok(campaign),
            other => Err(StoreError::Conflict(format!(
                "the campaign is {} and cannot be cancelled",
                other.as_str()
            ))),
        }
    }

    /// Ends an active campaign: every delivery still unresolved becomes MISSED and the campaign
    /// COMPLETED, together, so COMPLETED always means every delivery is resolved. Returns how
    /// many deliveries were marked missed; a campaign no longer ACTIVE is left as it is.
    pub async fn complete_campaign(&self, org_id: &str, campaign_id: &str) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let now = to_millis(Utc::now());
        let completed = sqlx::query(
            "UPDATE campaigns SET status = $1, finished_at = $2, current_step = NULL
             WHERE id = $3 AND org_id = $4 AND status = $5",
        )
        .bind(CampaignStatus::Completed.as_str())
        .bind(now)
        .bind(campaign_id)
        .bind(org_id)
        .bind(CampaignStatus::Active.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if completed == 0 {
            tx.rollback().await?;
            return Ok(0);
        }
        let missed = Self::mark_unresolved_missed(&mut tx, org_id, campaign_id, now).await?;
        tx.commit().await?;
        Ok(missed)
    }

    pub async fn set_current_step(
        &self,
        org_id: &str,
        campaign_id: &str,
        step: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE campaigns SET current_step = $1 WHERE id = $2 AND org_id = $3 AND status = $4",
        )
        .bind(step)
        .bind(campaign_id)
        .bind(org_id)
        .bind(CampaignStatus::Active.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Claims the right to signal the campaign's workflow now: true for at most one caller per
    /// `min_interval_ms`, across every API process (the database arbitrates). This keeps the
    /// signal rate per workflow low whatever the ACK rate.
    pub async fn claim_signal_slot(&self, campaign_id: &str, min_interval_ms: i64) -> Result<bool> {
        let now = to_millis(Utc::now());
        let claimed = sqlx::query(
            "UPDATE campaigns SET last_signal_at = $1
             WHERE id = $2 AND (last_signal_at IS NULL OR last_signal_at <= $3)",
        )
        .bind(now)
        .bind(campaign_id)
        .bind(now - min_interval_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(claimed == 1)
    }

    /// A page of ACTIVE campaigns of every organisation, by id after `after`, that became
    /// ACTIVE at or before `started_before` and whose workflow is not known to exist: what the
    /// reconciler starts. The cut-off leaves alone starts whose request is still under way.
    pub async fn active_campaigns_without_workflow(
        &self,
        started_before: DateTime<Utc>,
        after: &str,
        limit: i64,
    ) -> Result<Vec<Campaign>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns
             WHERE status = $1 AND workflow_started_at IS NULL AND started_at <= $2 AND id > $3
             ORDER BY id LIMIT {limit}"
        )))
        .bind(CampaignStatus::Active.as_str())
        .bind(to_millis(started_before))
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(campaign).collect()
    }

    /// Records that the campaign's workflow exists (it was started, or found started): from
    /// then on the reconciler leaves the campaign alone. Idempotent.
    pub async fn mark_workflow_started(&self, org_id: &str, campaign_id: &str) -> Result<()> {
        sqlx::query(
            "UPDATE campaigns SET workflow_started_at = $1
             WHERE org_id = $2 AND id = $3 AND workflow_started_at IS NULL",
        )
        .bind(to_millis(Utc::now()))
        .bind(org_id)
        .bind(campaign_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
