//! ESCALATE steps: which managers a step told about their reports' unresolved deliveries.
//!
//! A step records its escalations once — one per manager, unique per (campaign, step,
//! manager), each with the reports it escalated and an unguessable code for the manager's link —
//! so an activity retried after a crash finds them and counts nobody twice; each push is
//! claimed before it is sent, so none goes out twice. A recipient counts as a manager's report
//! through `members.manager_id` when the step runs.

use crate::deliveries::DeliveryStatus;
use crate::{Result, Store, StoreError, new_id, opt_time, time, to_millis};
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

/// One manager told by one ESCALATE step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Escalation {
    pub id: String,
    pub campaign_id: String,
    pub step_id: String,
    /// The manager, a member of the organisation (when the step ran).
    pub manager_id: String,
    /// The manager's external id when the step ran: what the webhook channel event names.
    pub manager_user_id: String,
    /// Their reports' deliveries that were unresolved when the step ran.
    pub unresolved_count: u64,
    /// One of those deliveries: the webhook channel event and the push are recorded against it.
    #[serde(skip)]
    pub anchor_delivery_id: String,
    /// The unguessable code of the manager's link.
    #[serde(skip)]
    pub code: String,
    /// An attempt of the step claimed the push (see [`Store::claim_escalation_push`]): no
    /// other pushes it.
    #[serde(skip)]
    pub pushed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// What a step escalates: its escalations, and the unresolved recipients without a manager.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EscalationPlan {
    /// By manager id.
    pub escalations: Vec<Escalation>,
    pub without_manager: u64,
}

/// A report an escalation named, with where their delivery stands now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EscalatedReport {
    pub delivery_id: String,
    pub member_id: Option<String>,
    pub user_id: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub status: DeliveryStatus,
}

const ESCALATION_COLUMNS: &str = "id, campaign_id, step_id, manager_id, manager_user_id, \
     unresolved_count, anchor_delivery_id, code, pushed_at, created_at";

/// The statuses a delivery waits in (not ACKNOWLEDGED, MISSED or FAILED).
const UNRESOLVED: &str = "('PENDING', 'SENT', 'READ')";

fn escalation(row: &AnyRow) -> Result<Escalation> {
    Ok(Escalation {
        id: row.try_get("id")?,
        campaign_id: row.try_get("campaign_id")?,
        step_id: row.try_get("step_id")?,
        manager_id: row.try_get("manager_id")?,
        manager_user_id: row.try_get("manager_user_id")?,
        unresolved_count: row.try_get::<i64, _>("unresolved_count")?.max(0) as u64,
        anchor_delivery_id: row.try_get("anchor_delivery_id")?,
        code: row.try_get("code")?,
        pushed_at: opt_time(row, "pushed_at")?,
        created_at: time(row, "created_at")?,
    })
}

/// An unguessable code for a manager's link (128 random bits).
fn escalation_code() -> String {
    let mut random = [0u8; 16];
    rand::rng().fill_bytes(&mut random);
    hex::encode(random)
}

impl Store {
    /// The step's escalations: on its first run, one per manager of recipients whose
    /// deliveries are unresolved, with those reports, written in one transaction; on a retry,
    /// those the first run wrote, as they were. Reports whose manager is gone count as without
    /// a manager; `without_manager` is counted now.
    pub async fn record_escalations(
        &self,
        org_id: &str,
        campaign_id: &str,
        step_id: &str,
    ) -> Result<EscalationPlan> {
        let select_step = format!(
            "SELECT {ESCALATION_COLUMNS} FROM escalations
             WHERE campaign_id = $1 AND org_id = $2 AND step_id = $3 ORDER BY manager_id"
        );
        let mut tx = self.write_tx().await?;
        let recorded = sqlx::query(sqlx::AssertSqlSafe(select_step.clone()))
            .bind(campaign_id)
            .bind(org_id)
            .bind(step_id)
            .fetch_all(&mut *tx)
            .await?;
        if recorded.is_empty() {
            let groups = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT m.manager_id AS manager_id, mgr.external_id AS manager_user_id,
                        MIN(d.id) AS anchor
                 FROM deliveries d
                 JOIN members m ON m.id = d.member_id AND m.org_id = d.org_id
                 JOIN members mgr ON mgr.id = m.manager_id AND mgr.org_id = d.org_id
                 WHERE d.campaign_id = $1 AND d.org_id = $2 AND d.status IN {UNRESOLVED}
                 GROUP BY m.manager_id, mgr.external_id
                 ORDER BY m.manager_id"
            )))
            .bind(campaign_id)
            .bind(org_id)
            .fetch_all(&mut *tx)
            .await?;
            let now = to_millis(Utc::now());
            for group in &groups {
                let manager_id: String = group.try_get("manager_id")?;
                let manager_user_id: String = group.try_get("manager_user_id")?;
                let anchor: String = group.try_get("anchor")?;
                let id = new_id();
                let added = sqlx::query(
                    "INSERT INTO escalations (id, org_id, campaign_id, step_id, manager_id,
                                              manager_user_id, unresolved_count,
                                              anchor_delivery_id, code, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9)
                     ON CONFLICT (campaign_id, step_id, manager_id) DO NOTHING",
                )
                .bind(&id)
                .bind(org_id)
                .bind(campaign_id)
                .bind(step_id)
                .bind(&manager_id)
                .bind(&manager_user_id)
                .bind(&anchor)
                .bind(escalation_code())
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if added == 0 {
                    // Another attempt of the step recorded this manager first.
                    continue;
                }
                // The reports as this transaction sees them; the count is theirs.
                let reports = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO escalation_reports (escalation_id, delivery_id)
                     SELECT $1, d.id FROM deliveries d
                     JOIN members m ON m.id = d.member_id AND m.org_id = d.org_id
                     WHERE d.campaign_id = $2 AND d.org_id = $3 AND d.status IN {UNRESOLVED}
                       AND m.manager_id = $4"
                )))
                .bind(&id)
                .bind(campaign_id)
                .bind(org_id)
                .bind(&manager_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                sqlx::query("UPDATE escalations SET unresolved_count = $1 WHERE id = $2")
                    .bind(reports as i64)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let escalations = sqlx::query(sqlx::AssertSqlSafe(select_step))
            .bind(campaign_id)
            .bind(org_id)
            .bind(step_id)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(escalation)
            .collect::<Result<Vec<_>>>()?;
        let without_manager: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) AS n FROM deliveries d
             LEFT JOIN members m ON m.id = d.member_id AND m.org_id = d.org_id
             LEFT JOIN members mgr ON mgr.id = m.manager_id AND mgr.org_id = d.org_id
             WHERE d.campaign_id = $1 AND d.org_id = $2 AND d.status IN {UNRESOLVED}
               AND mgr.id IS NULL"
        )))
        .bind(campaign_id)
        .bind(org_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        tx.commit().await?;
        Ok(EscalationPlan {
            escalations: escalations
                .into_iter()
                .filter(|e| e.unresolved_count > 0)
                .collect(),
            without_manager: without_manager.max(0) as u64,
        })
    }

    /// Claims the escalation's push for the attempt about to send it: true for the one caller
    /// that finds it unclaimed (and marks it pushed), false for any other, now or later — so
    /// two attempts of the step running at once, or a retry, never push a manager twice. The
    /// claim comes before the push: a crash between the two loses that push rather than
    /// repeating it.
    pub async fn claim_escalation_push(&self, org_id: &str, escalation_id: &str) -> Result<bool> {
        let claimed = sqlx::query(
            "UPDATE escalations SET pushed_at = $1
             WHERE id = $2 AND org_id = $3 AND pushed_at IS NULL",
        )
        .bind(to_millis(Utc::now()))
        .bind(escalation_id)
        .bind(org_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(claimed == 1)
    }

    /// Gives back a claim whose push reached no device because the providers were unavailable,
    /// so that the step's retry pushes the manager.
    pub async fn release_escalation_push(&self, org_id: &str, escalation_id: &str) -> Result<()> {
        sqlx::query("UPDATE escalations SET pushed_at = NULL WHERE id = $1 AND org_id = $2")
            .bind(escalation_id)
            .bind(org_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The escalation a manager's link names, within the organisation.
    pub async fn get_escalation_by_code(&self, org_id: &str, code: &str) -> Result<Escalation> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ESCALATION_COLUMNS} FROM escalations WHERE code = $1 AND org_id = $2"
        )))
        .bind(code)
        .bind(org_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(escalation)
        .transpose()?
        .ok_or(StoreError::NotFound)
    }

    /// The reports the escalation named whose delivery is not acknowledged (yet), by audience
    /// position.
    pub async fn unacknowledged_reports(
        &self,
        org_id: &str,
        escalation_id: &str,
    ) -> Result<Vec<EscalatedReport>> {
        let rows = sqlx::query(
            "SELECT d.id, d.member_id, d.user_id, d.display_name, d.email, d.status
             FROM escalation_reports r
             JOIN escalations e ON e.id = r.escalation_id
             JOIN deliveries d ON d.id = r.delivery_id AND d.org_id = e.org_id
             WHERE r.escalation_id = $1 AND e.org_id = $2 AND d.status <> 'ACKNOWLEDGED'
             ORDER BY d.seq",
        )
        .bind(escalation_id)
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(EscalatedReport {
                    delivery_id: row.try_get("id")?,
                    member_id: row.try_get("member_id")?,
                    user_id: row.try_get("user_id")?,
                    display_name: row.try_get("display_name")?,
                    email: row.try_get("email")?,
                    status: DeliveryStatus::parse(&row.try_get::<String, _>("status")?)?,
                })
            })
            .collect()
    }
}
