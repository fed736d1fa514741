//! A campaign's delivery history for its audit export: SENT and MISSED from the deliveries' own
//! times, READ and ACKNOWLEDGED from the actions recorded with their attestations. Read a page of
//! deliveries at a time, so an export of any size never holds the campaign in memory.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Row};

use crate::{Result, Store, StoreError, from_millis, opt_time, placeholders};

/// One event of one delivery's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    pub delivery_id: String,
    pub user_id: String,
    pub member_id: Option<String>,
    /// `SENT`, `READ`, `ACKNOWLEDGED` or `MISSED`.
    pub event: &'static str,
    pub occurred_at: DateTime<Utc>,
    /// Of a READ or ACK: where it came from, the API key that recorded it, the campaign's
    /// template and version, the hash of the content the member was shown (recorded since
    /// attestation existed; older actions have none).
    pub source: Option<String>,
    pub api_key_id: Option<String>,
    pub template_id: Option<String>,
    pub template_version: Option<i64>,
    pub content_sha256: Option<String>,
    /// Of a READ or ACK: whether the request sent `content_sha256` back and it matched (the
    /// member's app attested the content), rather than the server alone computing it.
    pub content_confirmed: Option<bool>,
}

/// One page of a campaign's audit history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditPage {
    /// The audience position of the page's last delivery (`None`: no deliveries were left), so
    /// the next page starts after it.
    pub last_seq: Option<i64>,
    /// How many deliveries the page read (those never sent have no events).
    pub deliveries: i64,
    pub events: Vec<AuditEvent>,
}

/// The order of a delivery's events that happened in the same millisecond.
fn rank(event: &str) -> u8 {
    match event {
        "SENT" => 0,
        "READ" => 1,
        "ACKNOWLEDGED" => 2,
        _ => 3,
    }
}

impl Store {
    /// The history of up to `limit` deliveries after audience position `after_seq`: each
    /// delivery's events together, deliveries in audience order, a delivery's events by time
    /// (same millisecond: SENT, READ, ACKNOWLEDGED, MISSED; then by the action's id).
    pub async fn audit_events_page(
        &self,
        org_id: &str,
        campaign_id: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<AuditPage> {
        let deliveries = sqlx::query(
            "SELECT seq, id, user_id, member_id, sent_at, missed_at FROM deliveries
             WHERE campaign_id = $1 AND org_id = $2 AND seq > $3 ORDER BY seq LIMIT $4",
        )
        .bind(campaign_id)
        .bind(org_id)
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let Some(last) = deliveries.last() else {
            return Ok(AuditPage {
                last_seq: None,
                deliveries: 0,
                events: Vec::new(),
            });
        };
        let last_seq: i64 = last.try_get("seq")?;
        let ids: Vec<String> = deliveries
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<Result<_, _>>()?;
        let mut query = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, delivery_id, kind, source, occurred_at, api_key_id, template_id,
                    template_version, content_sha256, content_confirmed
             FROM actions WHERE org_id = $1 AND campaign_id = $2 AND delivery_id IN ({})",
            placeholders(3, ids.len())
        )))
        .bind(org_id)
        .bind(campaign_id);
        for id in &ids {
            query = query.bind(id);
        }
        let mut actions: std::collections::BTreeMap<String, Vec<(String, AuditEvent)>> =
            std::collections::BTreeMap::new();
        for row in query.fetch_all(&self.pool).await? {
            let delivery_id: String = row.try_get("delivery_id")?;
            let kind: String = row.try_get("kind")?;
            let event = match kind.as_str() {
                "READ" => "READ",
                "ACK" => "ACKNOWLEDGED",
                other => return Err(StoreError::Corrupt(format!("action kind {other:?}"))),
            };
            actions.entry(delivery_id.clone()).or_default().push((
                row.try_get("id")?,
                AuditEvent {
                    delivery_id,
                    user_id: String::new(),
                    member_id: None,
                    event,
                    occurred_at: from_millis(row.try_get("occurred_at")?)?,
                    source: row.try_get("source")?,
                    api_key_id: row.try_get("api_key_id")?,
                    template_id: row.try_get("template_id")?,
                    template_version: row.try_get("template_version")?,
                    content_sha256: row.try_get("content_sha256")?,
                    content_confirmed: Some(row.try_get::<i64, _>("content_confirmed")? != 0),
                },
            ));
        }
        let mut events = Vec::new();
        for row in &deliveries {
            let delivery_id: String = row.try_get("id")?;
            let user_id: String = row.try_get("user_id")?;
            let member_id: Option<String> = row.try_get("member_id")?;
            let own = |event: &'static str, at: DateTime<Utc>| {
                (
                    String::new(),
                    AuditEvent {
                        delivery_id: delivery_id.clone(),
                        user_id: String::new(),
                        member_id: None,
                        event,
                        occurred_at: at,
                        source: None,
                        api_key_id: None,
                        template_id: None,
                        template_version: None,
                        content_sha256: None,
                        content_confirmed: None,
                    },
                )
            };
            let mut history = actions.remove(&delivery_id).unwrap_or_default();
            if let Some(at) = opt_time(row, "sent_at")? {
                history.push(own("SENT", at));
            }
            if let Some(at) = opt_time(row, "missed_at")? {
                history.push(own("MISSED", at));
            }
            history.sort_by(|(a_id, a), (b_id, b)| {
                (a.occurred_at, rank(a.event), a_id).cmp(&(b.occurred_at, rank(b.event), b_id))
            });
            events.extend(history.into_iter().map(|(_, mut event)| {
                event.user_id.clone_from(&user_id);
                event.member_id.clone_from(&member_id);
                event
            }));
        }
        Ok(AuditPage {
            last_seq: Some(last_seq),
            deliveries: deliveries.len() as i64,
            events,
        })
    }
}
