//! Deliveries (one campaign message to one recipient) and the actions recipients take on them.
//!
//! Status moves only forward: PENDING → SENT → READ → ACKNOWLEDGED, or MISSED / FAILED. The one
//! exception: a reminder that reaches a FAILED recipient makes them SENT. Every update below
//! names the statuses it may move from, so a concurrent ACK is never overwritten.

use crate::{
    Backend, Result, Store, StoreError, campaigns::CampaignStatus, new_id, opt_time, placeholders,
    to_millis,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryStatus {
    Pending,
    Sent,
    Read,
    Acknowledged,
    Missed,
    Failed,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 6] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Sent,
        DeliveryStatus::Read,
        DeliveryStatus::Acknowledged,
        DeliveryStatus::Missed,
        DeliveryStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "PENDING",
            DeliveryStatus::Sent => "SENT",
            DeliveryStatus::Read => "READ",
            DeliveryStatus::Acknowledged => "ACKNOWLEDGED",
            DeliveryStatus::Missed => "MISSED",
            DeliveryStatus::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| StoreError::Corrupt(format!("delivery status {s:?}")))
    }

    /// ACKNOWLEDGED, MISSED and FAILED are final outcomes for the campaign's progress.
    pub fn is_resolved(self) -> bool {
        matches!(
            self,
            DeliveryStatus::Acknowledged | DeliveryStatus::Missed | DeliveryStatus::Failed
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ActionKind {
    Read,
    Ack,
}

#[derive(Clone, Debug, Serialize)]
pub struct Delivery {
    pub id: String,
    pub campaign_id: String,
    pub member_id: Option<String>,
    pub user_id: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub status: DeliveryStatus,
    pub variables: BTreeMap<String, String>,
    pub deeplink_code: String,
    pub sent_at: Option<DateTime<Utc>>,
    pub read_at: Option<DateTime<Utc>>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub missed_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub failure_reason: Option<String>,
    pub reminder_count: i64,
}

/// Number of deliveries in each status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryCounts {
    pub pending: u64,
    pub sent: u64,
    pub read: u64,
    pub acknowledged: u64,
    pub missed: u64,
    pub failed: u64,
}

impl DeliveryCounts {
    pub fn total(&self) -> u64 {
        self.pending + self.sent + self.read + self.acknowledged + self.missed + self.failed
    }

    pub fn unresolved(&self) -> u64 {
        self.pending + self.sent + self.read
    }

    fn slot(&mut self, status: DeliveryStatus) -> &mut u64 {
        match status {
            DeliveryStatus::Pending => &mut self.pending,
            DeliveryStatus::Sent => &mut self.sent,
            DeliveryStatus::Read => &mut self.read,
            DeliveryStatus::Acknowledged => &mut self.acknowledged,
            DeliveryStatus::Missed => &mut self.missed,
            DeliveryStatus::Failed => &mut self.failed,
        }
    }
}

/// What a fan-out step needs to notify one recipient.
#[derive(Clone, Debug)]
pub struct NotifyTarget {
    pub delivery_id: String,
    pub seq: i64,
    pub user_id: String,
    /// `None` for deliveries written before members existed.
    pub member_id: Option<String>,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub variables: BTreeMap<String, String>,
    pub deeplink_code: String,
}

/// One line of the CALL_WEBHOOK payload.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeliveryReport {
    pub delivery_id: String,
    pub user_id: String,
    pub status: DeliveryStatus,
    pub sent_at: Option<DateTime<Utc>>,
    pub read_at: Option<DateTime<Utc>>,
    pub acknowledged_at: Option<DateTime<Utc>>,
}

/// The result of recording a READ or ACK.
#[derive(Debug)]
pub struct ActionOutcome {
    pub delivery: Delivery,
    /// False when the action repeated an earlier one and nothing was written.
    pub changed: bool,
    /// The campaign's status, read with the delivery: whoever signals the workflow need not
    /// read the campaign again.
    pub campaign_status: CampaignStatus,
    /// When an API process last claimed the campaign's signal slot, read with the delivery: a
    /// slot plainly still taken need not be claimed (a write that would change nothing).
    pub last_signal_at: Option<DateTime<Utc>>,
}

/// Who records a READ or ACK, and what they say the member was shown.
#[derive(Clone, Copy, Debug, Default)]
pub struct ActionAttestation<'a> {
    /// Where the action came from (`app`, `web`, ...).
    pub source: &'a str,
    /// The API key that recorded it.
    pub api_key_id: Option<&'a str>,
    /// The `content_sha256` the client was served and sends back: when given and not the
    /// content's hash, nothing is written.
    pub content_sha256: Option<&'a str>,
}

/// The campaign's message as stored, read with the delivery under the lock so the caller can
/// render what this member is shown without another query.
#[derive(Clone, Debug)]
pub struct ShownMessage {
    pub campaign_title: String,
    pub message_title: String,
    pub body: String,
    /// The workflow definition (JSON): its notification step's variables are part of the text.
    pub definition: String,
    pub template_id: Option<String>,
    pub template_version: Option<i64>,
}

/// What [`Store::record_attested_action`] did.
#[derive(Debug)]
pub enum AttestedAction {
    /// Recorded (or an idempotent repeat); `content_sha256` is the hash of the content this
    /// member is shown (`None` when it cannot be rendered).
    Recorded {
        outcome: Box<ActionOutcome>,
        content_sha256: Option<String>,
    },
    /// The client acknowledged other content than this member is shown: nothing was written.
    ContentMismatch { content_sha256: Option<String> },
}

/// What [`Store::record_notified`] changed: deliveries a first notification moved out of
/// PENDING.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NotifiedRows {
    pub sent: u64,
    pub failed: u64,
}

/// Ids per UPDATE when recording a fan-out page: well under both backends' bind limits.
const RECORD_BATCH: usize = 1_000;

const DELIVERY_COLUMNS: &str = "d.id, d.campaign_id, d.member_id, d.user_id, d.email, d.display_name, d.status, d.variables, \
     d.deeplink_code, d.sent_at, d.read_at, d.acknowledged_at, d.missed_at, d.failed_at, \
     d.failure_reason, d.reminder_count";

fn variables(row: &AnyRow) -> Result<BTreeMap<String, String>> {
    serde_json::from_str(&row.try_get::<String, _>("variables")?)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn delivery(row: &AnyRow) -> Result<Delivery> {
    Ok(Delivery {
        id: row.try_get("id")?,
        campaign_id: row.try_get("campaign_id")?,
        member_id: row.try_get("member_id")?,
        user_id: row.try_get("user_id")?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        status: DeliveryStatus::parse(&row.try_get::<String, _>("status")?)?,
        variables: variables(row)?,
        deeplink_code: row.try_get("deeplink_code")?,
        sent_at: opt_time(row, "sent_at")?,
        read_at: opt_time(row, "read_at")?,
        acknowledged_at: opt_time(row, "acknowledged_at")?,
        missed_at: opt_time(row, "missed_at")?,
        failed_at: opt_time(row, "failed_at")?,
        failure_reason: row.try_get("failure_reason")?,
        reminder_count: row.try_get("reminder_count")?,
    })
}

impl Store {
    pub async fn delivery_counts(&self, org_id: &str, campaign_id: &str) -> Result<DeliveryCounts> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM deliveries
             WHERE campaign_id = $1 AND org_id = $2 GROUP BY status",
        )
        .bind(campaign_id)
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?;
        let mut counts = DeliveryCounts::default();
        for row in rows {
            let status = DeliveryStatus::parse(&row.try_get::<String, _>("status")?)?;
            *counts.slot(status) = row.try_get::<i64, _>("n")? as u64;
        }
        Ok(counts)
    }

    /// The counts of several campaigns of one organisation in one query (a list page's):
    /// every campaign asked about has an entry, zeros when it has no deliveries yet.
    pub async fn delivery_counts_of(
        &self,
        org_id: &str,
        campaign_ids: &[&str],
    ) -> Result<BTreeMap<String, DeliveryCounts>> {
        let mut all: BTreeMap<String, DeliveryCounts> = campaign_ids
            .iter()
            .map(|id| ((*id).to_owned(), DeliveryCounts::default()))
            .collect();
        if campaign_ids.is_empty() {
            return Ok(all);
        }
        // Answered from `deliveries_progress` (campaign, organisation, status) alone.
        let sql = format!(
            "SELECT campaign_id, status, COUNT(*) AS n FROM deliveries
             WHERE org_id = $1 AND campaign_id IN ({})
             GROUP BY campaign_id, status",
            placeholders(2, campaign_ids.len())
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(org_id);
        for id in campaign_ids {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&self.pool).await? {
            let status = DeliveryStatus::parse(&row.try_get::<String, _>("status")?)?;
            let campaign_id: String = row.try_get("campaign_id")?;
            if let Some(counts) = all.get_mut(&campaign_id) {
                *counts.slot(status) = row.try_get::<i64, _>("n")? as u64;
            }
        }
        Ok(all)
    }

    /// Whether any of the campaign's deliveries is still unresolved (PENDING, SENT or READ).
    /// Stops at the first such delivery in the index, so it costs the same for ten recipients
    /// as for a million: what an ACK may afford to ask to spot the "nothing left" edge.
    ///
    /// One arm per status, each the first entry of `deliveries_progress` in seq order, rather
    /// than `status IN (…) LIMIT 1`: given statistics saying a third of a big campaign is
    /// unresolved, PostgreSQL plans that as a table scan expected to stop at once, which reads
    /// the whole table exactly when nothing is left. Ordered by seq, only the index answers
    /// cheaply, on both backends, with or without statistics.
    pub async fn has_unresolved_deliveries(&self, org_id: &str, campaign_id: &str) -> Result<bool> {
        const FIRST_OF_EACH: &str = "
            SELECT one FROM (SELECT 1 AS one FROM deliveries
                             WHERE campaign_id = $1 AND org_id = $2 AND status = 'SENT'
                             ORDER BY seq LIMIT 1) AS first_sent
            UNION ALL
            SELECT one FROM (SELECT 1 AS one FROM deliveries
                             WHERE campaign_id = $1 AND org_id = $2 AND status = 'READ'
                             ORDER BY seq LIMIT 1) AS first_read
            UNION ALL
            SELECT one FROM (SELECT 1 AS one FROM deliveries
                             WHERE campaign_id = $1 AND org_id = $2 AND status = 'PENDING'
                             ORDER BY seq LIMIT 1) AS first_pending
            LIMIT 1";
        Ok(sqlx::query(FIRST_OF_EACH)
            .bind(campaign_id)
            .bind(org_id)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    pub async fn get_delivery(&self, org_id: &str, delivery_id: &str) -> Result<Delivery> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.id = $1 AND d.org_id = $2"
        )))
        .bind(delivery_id)
        .bind(org_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        delivery(&row)
    }

    /// The delivery a deeplink code names.
    pub async fn get_delivery_by_code(&self, org_id: &str, code: &str) -> Result<Delivery> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.deeplink_code = $1 AND d.org_id = $2"
        )))
        .bind(code)
        .bind(org_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        delivery(&row)
    }

    /// A page of one member's deliveries, newest first, before the delivery id `before` ("" for
    /// the newest): the member's inbox.
    pub async fn list_member_deliveries(
        &self,
        org_id: &str,
        member_id: &str,
        before: &str,
        limit: i64,
    ) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d
             WHERE d.org_id = $1 AND d.member_id = $2 AND ($3 = '' OR d.id < $3)
             ORDER BY d.id DESC LIMIT $4"
        )))
        .bind(org_id)
        .bind(member_id)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery).collect()
    }

    /// A page of a campaign's deliveries in audience order, after position `after_seq`.
    pub async fn list_deliveries(
        &self,
        org_id: &str,
        campaign_id: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Delivery)>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT d.seq, {DELIVERY_COLUMNS} FROM deliveries d
             WHERE d.campaign_id = $1 AND d.org_id = $2 AND d.seq > $3 ORDER BY d.seq LIMIT $4"
        )))
        .bind(campaign_id)
        .bind(org_id)
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("seq")?, delivery(row)?)))
            .collect()
    }

    /// A page of a campaign's deliveries in one of `statuses`, in audience order, after
    /// position `after_seq` (every status when `statuses` is empty).
    ///
    /// One arm per status, each the next `limit` entries of `deliveries_progress` (campaign,
    /// organisation, status, seq) after the cursor, merged and cut to `limit`: a page reads at
    /// most `limit` index entries per status named, however large the campaign. A plain
    /// `status IN (…) ORDER BY seq` cannot walk that index in seq order across statuses, so it
    /// would read and sort every matching delivery after the cursor for every page.
    pub async fn list_deliveries_in(
        &self,
        org_id: &str,
        campaign_id: &str,
        statuses: &[DeliveryStatus],
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Delivery)>> {
        let mut wanted: Vec<DeliveryStatus> = Vec::new();
        for status in statuses {
            if !wanted.contains(status) {
                wanted.push(*status);
            }
        }
        if wanted.is_empty() || wanted.len() == DeliveryStatus::ALL.len() {
            return self
                .list_deliveries(org_id, campaign_id, after_seq, limit)
                .await;
        }
        // $1 campaign, $2 organisation, $3 cursor, $4 limit, then one status per arm.
        let arms = (0..wanted.len())
            .map(|i| {
                format!(
                    "SELECT * FROM (SELECT d.seq, {DELIVERY_COLUMNS} FROM deliveries d
                                    WHERE d.campaign_id = $1 AND d.org_id = $2 AND d.status = ${}
                                      AND d.seq > $3
                                    ORDER BY d.seq LIMIT $4) AS arm{i}",
                    5 + i
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let mut query = sqlx::query(AssertSqlSafe(format!(
            "SELECT * FROM ({arms}) AS picked ORDER BY seq LIMIT $4"
        )))
        .bind(campaign_id)
        .bind(org_id)
        .bind(after_seq)
        .bind(limit);
        for status in &wanted {
            query = query.bind(status.as_str());
        }
        query
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| Ok((row.try_get("seq")?, delivery(row)?)))
            .collect()
    }

    /// Records a recipient's READ or ACK: written before the workflow hears of it, idempotent,
    /// and refused with [`StoreError::Conflict`] when the state forbids it (ACK after MISSED or
    /// on a cancelled campaign). One write transaction, and no other statement: the delivery
    /// returned is the row read under the lock with the update applied.
    pub async fn record_action(
        &self,
        org_id: &str,
        delivery_id: &str,
        kind: ActionKind,
        source: &str,
    ) -> Result<ActionOutcome> {
        let attestation = ActionAttestation {
            source,
            ..ActionAttestation::default()
        };
        match self
            .record_attested_action(org_id, delivery_id, kind, attestation, |_, _| None)
            .await?
        {
            AttestedAction::Recorded { outcome, .. } => Ok(*outcome),
            // No hash was claimed, so none can differ.
            AttestedAction::ContentMismatch { .. } => Err(StoreError::Conflict(
                "the member acknowledged different content".into(),
            )),
        }
    }

    /// [`Store::record_action`] with its attestation: the action's row also keeps the API key,
    /// the campaign's template and version, and `content_sha256(delivery, message)` — the hash
    /// of what this member is shown, computed by the caller from the message read here with the
    /// delivery (one query, one extra column set; no extra write). When the attestation claims a
    /// hash and it differs, nothing is written, repeats included.
    pub async fn record_attested_action(
        &self,
        org_id: &str,
        delivery_id: &str,
        kind: ActionKind,
        attestation: ActionAttestation<'_>,
        content_sha256: impl FnOnce(&Delivery, &ShownMessage) -> Option<String>,
    ) -> Result<AttestedAction> {
        let mut tx = self.write_tx().await?;
        let lock = if self.backend == Backend::Postgres {
            " FOR UPDATE OF d"
        } else {
            ""
        };
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS}, c.status AS campaign_status, c.last_signal_at,
                    c.title AS campaign_title, c.message_title, c.body AS message_body,
                    c.definition, c.template_id, c.template_version
             FROM deliveries d
             JOIN campaigns c ON c.id = d.campaign_id
             WHERE d.id = $1 AND d.org_id = $2{lock}"
        )))
        .bind(delivery_id)
        .bind(org_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let current = delivery(&row)?;
        let campaign_status = CampaignStatus::parse(&row.try_get::<String, _>("campaign_status")?)?;
        let last_signal_at = opt_time(&row, "last_signal_at")?;
        let shown = ShownMessage {
            campaign_title: row.try_get("campaign_title")?,
            message_title: row.try_get("message_title")?,
            body: row.try_get("message_body")?,
            definition: row.try_get("definition")?,
            template_id: row.try_get("template_id")?,
            template_version: row.try_get("template_version")?,
        };
        let hash = content_sha256(&current, &shown);
        if let Some(claimed) = attestation.content_sha256
            && hash.as_deref() != Some(claimed)
        {
            tx.rollback().await?;
            return Ok(AttestedAction::ContentMismatch {
                content_sha256: hash,
            });
        }
        let now = to_millis(Utc::now());

        let update = match kind {
            ActionKind::Ack => {
                if current.status == DeliveryStatus::Acknowledged {
                    None
                } else if campaign_status == CampaignStatus::Cancelled {
                    return Err(StoreError::Conflict(
                        "the campaign was cancelled; acknowledgements are no longer accepted"
                            .into(),
                    ));
                } else if current.status == DeliveryStatus::Missed {
                    return Err(StoreError::Conflict(
                        "the deadline has passed and this delivery was marked missed".into(),
                    ));
                } else {
                    Some(
                        "UPDATE deliveries SET status = 'ACKNOWLEDGED', acknowledged_at = $1,
                                read_at = COALESCE(read_at, $1)
                         WHERE id = $2 AND status IN ('PENDING', 'SENT', 'READ', 'FAILED')",
                    )
                }
            }
            ActionKind::Read => match current.status {
                DeliveryStatus::Pending | DeliveryStatus::Sent => Some(
                    "UPDATE deliveries SET status = 'READ', read_at = $1
                     WHERE id = $2 AND status IN ('PENDING', 'SENT')",
                ),
                // Reading never moves a resolved delivery back; the first read time is kept.
                _ if current.read_at.is_none() => {
                    Some("UPDATE deliveries SET read_at = $1 WHERE id = $2 AND read_at IS NULL")
                }
                _ => None,
            },
        };
        let Some(update) = update else {
            tx.rollback().await?;
            return Ok(AttestedAction::Recorded {
                outcome: Box::new(ActionOutcome {
                    delivery: current,
                    changed: false,
                    campaign_status,
                    last_signal_at,
                }),
                content_sha256: hash,
            });
        };
        // The row as the UPDATE left it, so the answer needs no read-back and no second copy
        // of the rules above.
        let returning = DELIVERY_COLUMNS.replace("d.", "");
        let Some(row) = sqlx::query(AssertSqlSafe(format!("{update} RETURNING {returning}")))
            .bind(now)
            .bind(delivery_id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            // The row is locked (FOR UPDATE; SQLite's write lock), so the guard in the UPDATE
            // always matches what was read; should it ever not, say so rather than guess.
            return Err(StoreError::Conflict(
                "the delivery changed while the action was recorded; try again".into(),
            ));
        };
        let delivery = delivery(&row)?;
        sqlx::query(
            "INSERT INTO actions (id, org_id, campaign_id, delivery_id, kind, source, occurred_at,
                                  api_key_id, template_id, template_version, content_sha256,
                                  content_confirmed)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(new_id())
        .bind(org_id)
        .bind(&current.campaign_id)
        .bind(delivery_id)
        .bind(match kind {
            ActionKind::Read => "READ",
            ActionKind::Ack => "ACK",
        })
        .bind(attestation.source)
        .bind(now)
        .bind(attestation.api_key_id)
        .bind(&shown.template_id)
        .bind(shown.template_version)
        .bind(&hash)
        // A claimed hash that differs returned above: one claimed here matched.
        .bind(i64::from(attestation.content_sha256.is_some()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(AttestedAction::Recorded {
            outcome: Box::new(ActionOutcome {
                delivery,
                changed: true,
                campaign_status,
                last_signal_at,
            }),
            content_sha256: hash,
        })
    }

    /// The next page of recipients a fan-out step still has to notify, in audience order after
    /// `after_seq`. A notification goes to PENDING deliveries; a reminder to everyone not yet
    /// acknowledged or missed. Recipients this step already notified are skipped, so a retried
    /// step does not notify anyone twice.
    pub async fn notify_page(
        &self,
        org_id: &str,
        campaign_id: &str,
        step_id: &str,
        reminder: bool,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<NotifyTarget>> {
        self.notify_range_page(
            org_id,
            campaign_id,
            step_id,
            reminder,
            (after_seq, i64::MAX),
            limit,
        )
        .await
    }

    /// [`Store::notify_page`] within the audience positions `(after, last]`: one range of a
    /// fan-out that several activities share.
    pub async fn notify_range_page(
        &self,
        org_id: &str,
        campaign_id: &str,
        step_id: &str,
        reminder: bool,
        (after_seq, last_seq): (i64, i64),
        limit: i64,
    ) -> Result<Vec<NotifyTarget>> {
        let statuses = if reminder {
            "('SENT', 'READ', 'FAILED')"
        } else {
            "('PENDING')"
        };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, seq, user_id, member_id, email, display_name, variables, deeplink_code FROM deliveries
             WHERE campaign_id = $1 AND org_id = $2 AND seq > $3 AND seq <= $4 AND status IN {statuses}
               AND (last_notified_step IS NULL OR last_notified_step <> $5)
             ORDER BY seq LIMIT $6"
        )))
        .bind(campaign_id)
        .bind(org_id)
        .bind(after_seq)
        .bind(last_seq)
        .bind(step_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(NotifyTarget {
                    delivery_id: row.try_get("id")?,
                    seq: row.try_get("seq")?,
                    user_id: row.try_get("user_id")?,
                    member_id: row.try_get("member_id")?,
                    email: row.try_get("email")?,
                    display_name: row.try_get("display_name")?,
                    variables: variables(row)?,
                    deeplink_code: row.try_get("deeplink_code")?,
                })
            })
            .collect()
    }

    /// Records the outcome of notifying a page of recipients for `step_id`: `Ok` means the
    /// provider accepted the push, `Err(reason)` that it did not. One statement for the
    /// recipients reached and one per distinct failure reason, in one transaction: a page of a
    /// thousand costs a few statements, not a thousand. Returns how many deliveries a first
    /// notification moved to SENT and to FAILED (rows already recorded are not counted again);
    /// a reminder moves none of them out of PENDING and returns zeros.
    pub async fn record_notified(
        &self,
        org_id: &str,
        step_id: &str,
        reminder: bool,
        outcomes: &[(String, Result<(), String>)],
    ) -> Result<NotifiedRows> {
        let mut groups: BTreeMap<Option<&str>, Vec<&str>> = BTreeMap::new();
        for (delivery_id, outcome) in outcomes {
            let reason = outcome.as_ref().err().map(String::as_str);
            groups.entry(reason).or_default().push(delivery_id);
        }
        let mut tx = self.write_tx().await?;
        let now = to_millis(Utc::now());
        let mut rows = NotifiedRows::default();
        for (reason, ids) in &groups {
            for ids in ids.chunks(RECORD_BATCH) {
                // $1 time, $2 step, $3 org, $4 reason (failures only), then the ids.
                let first_id = if reason.is_some() { 5 } else { 4 };
                let set = match (reminder, reason) {
                    (false, None) => "status = 'SENT', sent_at = $1, last_notified_step = $2",
                    (false, Some(_)) => {
                        "status = 'FAILED', failed_at = $1, last_notified_step = $2, failure_reason = $4"
                    }
                    (true, None) => {
                        "reminder_count = reminder_count + 1, last_notified_step = $2,
                         sent_at = COALESCE(sent_at, $1),
                         failure_reason = CASE WHEN status = 'FAILED' THEN NULL ELSE failure_reason END,
                         failed_at = CASE WHEN status = 'FAILED' THEN NULL ELSE failed_at END,
                         status = CASE WHEN status = 'FAILED' THEN 'SENT' ELSE status END"
                    }
                    (true, Some(_)) => "last_notified_step = $2, failure_reason = $4",
                };
                let from = if reminder {
                    "('SENT', 'READ', 'FAILED')"
                } else {
                    "('PENDING')"
                };
                let sql = format!(
                    "UPDATE deliveries SET {set}
                     WHERE org_id = $3 AND status IN {from} AND id IN ({})",
                    placeholders(first_id, ids.len())
                );
                let mut query = sqlx::query(AssertSqlSafe(sql))
                    .bind(now)
                    .bind(step_id.to_owned())
                    .bind(org_id.to_owned());
                if let Some(reason) = reason {
                    query = query.bind((*reason).to_owned());
                }
                for id in ids {
                    query = query.bind((*id).to_owned());
                }
                let changed = query.execute(&mut *tx).await?.rows_affected();
                match (reminder, reason) {
                    (true, _) => {}
                    (false, None) => rows.sent += changed,
                    (false, Some(_)) => rows.failed += changed,
                }
            }
        }
        tx.commit().await?;
        Ok(rows)
    }

    /// Marks every unresolved delivery of the campaign MISSED; returns how many.
    pub async fn mark_missed(&self, org_id: &str, campaign_id: &str) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let missed =
            Self::mark_unresolved_missed(&mut tx, org_id, campaign_id, to_millis(Utc::now()))
                .await?;
        tx.commit().await?;
        Ok(missed)
    }

    pub(crate) async fn mark_unresolved_missed(
        tx: &mut Transaction<'static, Any>,
        org_id: &str,
        campaign_id: &str,
        now: i64,
    ) -> Result<u64> {
        Ok(sqlx::query(
            // Never on a cancelled campaign: a workflow that outlived its cancel must not
            // rewrite the outcome.
            "UPDATE deliveries SET status = 'MISSED', missed_at = $1
             WHERE campaign_id = $2 AND org_id = $3 AND status IN ('PENDING', 'SENT', 'READ')
               AND EXISTS (SELECT 1 FROM campaigns c
                           WHERE c.id = deliveries.campaign_id AND c.status IN ('ACTIVE', 'COMPLETED'))",
        )
        .bind(now)
        .bind(campaign_id)
        .bind(org_id)
        .execute(&mut **tx)
        .await?
        .rows_affected())
    }

    /// Every delivery's outcome, in audience order, for the CALL_WEBHOOK payload.
    pub async fn delivery_reports(
        &self,
        org_id: &str,
        campaign_id: &str,
    ) -> Result<Vec<DeliveryReport>> {
        let rows = sqlx::query(
            "SELECT id, user_id, status, sent_at, read_at, acknowledged_at FROM deliveries
             WHERE campaign_id = $1 AND org_id = $2 ORDER BY seq",
        )
        .bind(campaign_id)
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DeliveryReport {
                    delivery_id: row.try_get("id")?,
                    user_id: row.try_get("user_id")?,
                    status: DeliveryStatus::parse(&row.try_get::<String, _>("status")?)?,
                    sent_at: opt_time(row, "sent_at")?,
                    read_at: opt_time(row, "read_at")?,
                    acknowledged_at: opt_time(row, "acknowledged_at")?,
                })
            })
            .collect()
    }

    /// Up to `limit` deliveries' outcomes after audience position `after_seq` (0: from the
    /// start), in audience order, each with its position: the CALL_WEBHOOK payload read one part
    /// at a time, so a large campaign is never held in memory whole. The next page starts after
    /// the last position returned.
    pub async fn delivery_reports_page(
        &self,
        org_id: &str,
        campaign_id: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<(i64, DeliveryReport)>> {
        let rows = sqlx::query(
            "SELECT seq, id, user_id, status, sent_at, read_at, acknowledged_at FROM deliveries
             WHERE campaign_id = $1 AND org_id = $2 AND seq > $3 ORDER BY seq LIMIT $4",
        )
        .bind(campaign_id)
        .bind(org_id)
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("seq")?,
                    DeliveryReport {
                        delivery_id: row.try_get("id")?,
                        user_id: row.try_get("user_id")?,
                        status: DeliveryStatus::parse(&row.try_get::<String, _>("status")?)?,
                        sent_at: opt_time(row, "sent_at")?,
                        read_at: opt_time(row, "read_at")?,
                        acknowledged_at: opt_time(row, "acknowledged_at")?,
                    },
                ))
            })
            .collect()
    }
}
