//! Members' devices: push tokens. A token identifies one phone, so registering a token again
//! (for anyone in the organisation) moves it rather than duplicating it.

use crate::{Result, Store, StoreError, new_id, placeholders, time, to_millis};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Executor, Row, Transaction};
use std::collections::HashMap;

/// The push service a token belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Fcm,
    Apns,
}

impl Platform {
    pub const ALL: [Platform; 2] = [Platform::Fcm, Platform::Apns];

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Fcm => "fcm",
            Platform::Apns => "apns",
        }
    }

    pub fn parse(s: &str) -> Option<Platform> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Device {
    pub id: String,
    pub member_id: String,
    pub platform: Platform,
    pub token: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

const DEVICE_COLUMNS: &str = "id, member_id, platform, token, created_at, last_seen_at";

fn device(row: &AnyRow) -> Result<Device> {
    let platform: String = row.try_get("platform")?;
    Ok(Device {
        id: row.try_get("id")?,
        member_id: row.try_get("member_id")?,
        platform: Platform::parse(&platform)
            .ok_or_else(|| StoreError::Corrupt(format!("device platform {platform:?}")))?,
        token: row.try_get("token")?,
        created_at: time(row, "created_at")?,
        last_seen_at: time(row, "last_seen_at")?,
    })
}

/// NotFound unless the member belongs to the organisation.
async fn ensure_member<'e, E: Executor<'e, Database = Any>>(
    executor: E,
    org_id: &str,
    member_id: &str,
) -> Result<()> {
    sqlx::query("SELECT id FROM members WHERE org_id = $1 AND id = $2")
        .bind(org_id)
        .bind(member_id)
        .fetch_optional(executor)
        .await?
        .map(|_| ())
        .ok_or(StoreError::NotFound)
}

impl Store {
    /// Registers `token` for the member. A token already known in the organisation moves to
    /// this member (the phone changed hands or its user signed in again) and its last_seen_at
    /// is refreshed; the flag says whether a new device was created.
    pub async fn register_device(
        &self,
        org_id: &str,
        member_id: &str,
        platform: Platform,
        token: &str,
    ) -> Result<(Device, bool)> {
        let mut tx = self.write_tx().await?;
        ensure_member(&mut *tx, org_id, member_id).await?;
        let id = new_id();
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO devices (id, org_id, member_id, platform, token, created_at, last_seen_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6)
             ON CONFLICT (org_id, platform, token)
             DO UPDATE SET member_id = excluded.member_id, last_seen_at = excluded.last_seen_at
             RETURNING {DEVICE_COLUMNS}"
        )))
        .bind(&id)
        .bind(org_id)
        .bind(member_id)
        .bind(platform.as_str())
        .bind(token)
        .bind(to_millis(Utc::now()))
        .fetch_one(&mut *tx)
        .await?;
        let device = device(&row)?;
        tx.commit().await?;
        // An existing row keeps its id, so a fresh id back means the insert happened.
        let created = device.id == id;
        Ok((device, created))
    }

    /// A page of the member's devices by id; NotFound when the member is not the
    /// organisation's.
    pub async fn list_devices(
        &self,
        org_id: &str,
        member_id: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<Device>> {
        ensure_member(&self.pool, org_id, member_id).await?;
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {DEVICE_COLUMNS} FROM devices
             WHERE org_id = $1 AND member_id = $2 AND id > $3 ORDER BY id LIMIT $4"
        )))
        .bind(org_id)
        .bind(member_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(device)
        .collect()
    }

    /// Removes one of the member's devices; NotFound unless it is that member's.
    pub async fn remove_device(
        &self,
        org_id: &str,
        member_id: &str,
        device_id: &str,
    ) -> Result<()> {
        let removed =
            sqlx::query("DELETE FROM devices WHERE org_id = $1 AND member_id = $2 AND id = $3")
                .bind(org_id)
                .bind(member_id)
                .bind(device_id)
                .execute(&self.pool)
                .await?
                .rows_affected();
        if removed == 0 {
            Err(StoreError::NotFound)
        } else {
            Ok(())
        }
    }

    /// Forgets a token a push provider reported as dead, whoever it belonged to. Returns
    /// whether there was one.
    pub async fn remove_device_token(
        &self,
        org_id: &str,
        platform: Platform,
        token: &str,
    ) -> Result<bool> {
        let removed =
            sqlx::query("DELETE FROM devices WHERE org_id = $1 AND platform = $2 AND token = $3")
                .bind(org_id)
                .bind(platform.as_str())
                .bind(token)
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(removed > 0)
    }

    /// Every device of the member, for a push fan-out (empty for an unknown member: there is
    /// nobody to notify).
    pub async fn member_devices(&self, org_id: &str, member_id: &str) -> Result<Vec<Device>> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE org_id = $1 AND member_id = $2 ORDER BY id"
        )))
        .bind(org_id)
        .bind(member_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(device)
        .collect()
    }

    /// The devices of several members at once (one fan-out page), grouped by member.
    pub async fn devices_of_members(
        &self,
        org_id: &str,
        member_ids: &[&str],
    ) -> Result<HashMap<String, Vec<Device>>> {
        let mut by_member: HashMap<String, Vec<Device>> = HashMap::new();
        if member_ids.is_empty() {
            return Ok(by_member);
        }
        let sql = format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE org_id = $1 AND member_id IN ({})
             ORDER BY id",
            placeholders(2, member_ids.len())
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(org_id);
        for member_id in member_ids {
            query = query.bind(*member_id);
        }
        for row in query.fetch_all(&self.pool).await? {
            let device = device(&row)?;
            by_member
                .entry(device.member_id.clone())
                .or_default()
                .push(device);
        }
        Ok(by_member)
    }
}

/// A bulk import's devices, `(member id, platform, token)`, in multi-row statements inside the
/// import's transaction. A token the organisation already knows moves to the member, as in
/// [`Store::register_device`]; one already theirs is left alone. Answers how many were added
/// or moved. Tokens must be unique within `devices` (PostgreSQL refuses to touch one row twice
/// in a statement).
pub(crate) async fn import_devices(
    tx: &mut Transaction<'static, Any>,
    org_id: &str,
    devices: &[(&str, Platform, &str)],
    now: i64,
) -> Result<u64> {
    let mut changed = 0;
    for chunk in devices.chunks(crate::members::IMPORT_ROWS_PER_STATEMENT) {
        // $1 organisation, $2 now; then four per device.
        let values = (0..chunk.len())
            .map(|i| {
                let n = 3 + i * 4;
                format!("(${n}, $1, ${}, ${}, ${}, $2, $2)", n + 1, n + 2, n + 3)
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO devices (id, org_id, member_id, platform, token, created_at, last_seen_at)
             VALUES {values}
             ON CONFLICT (org_id, platform, token) DO UPDATE
             SET member_id = excluded.member_id, last_seen_at = excluded.last_seen_at
             WHERE devices.member_id <> excluded.member_id"
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(org_id).bind(now);
        for (member_id, platform, token) in chunk {
            query = query
                .bind(new_id())
                .bind(*member_id)
                .bind(platform.as_str())
                .bind(*token);
        }
        changed += query.execute(&mut **tx).await?.rows_affected();
    }
    Ok(changed)
}

/// Tokens shorter than this are masked whole: their first and last 4 characters would be most
/// of them.
const MIN_PARTLY_SHOWN_TOKEN: usize = 16;

/// `token` with all but its first and last 4 characters replaced by `…`, enough to tell devices
/// apart; a short token is `…` alone.
pub fn masked_token(token: &str) -> String {
    let chars: Vec<char> = token.chars().collect();
    if chars.len() < MIN_PARTLY_SHOWN_TOKEN {
        return "…".to_owned();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::masked_token;

    #[test]
    fn tokens_show_only_their_ends() {
        let fcm = "dQw4w9WgXcQ:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx";
        assert_eq!(masked_token(fcm), "dQw4…RYqx");
        assert_eq!(masked_token("ada-phone"), "…");
        assert_eq!(masked_token(&"ü".repeat(16)), "üüüü…üüüü");
        assert!(!masked_token(fcm).contains("APA91b"));
    }
}
