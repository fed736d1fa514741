//! Push provider credentials, one set per organisation and platform. The private keys inside
//! are needed back in clear to sign provider tokens, so each set is sealed with the server's key
//! (see `secrets`), bound to its platform so one provider's set cannot stand in for another's;
//! only the non-secret summary (project, key id, bundle id…) is ever shown.

use crate::secrets::PUSH_CREDENTIALS_SECRET;
use crate::versioned::now;
use crate::{Platform, Result, Store, StoreError, found, from_json, time, to_json};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

/// What the API shows of a platform's credentials: never the key itself.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PushCredentials {
    pub platform: Platform,
    /// The non-secret fields, as the caller described them (e.g. `project_id`, `key_id`).
    pub summary: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "provider, summary, created_at, updated_at";

fn credentials(row: &AnyRow) -> Result<PushCredentials> {
    let provider: String = row.try_get("provider")?;
    Ok(PushCredentials {
        platform: Platform::parse(&provider)
            .ok_or_else(|| StoreError::Corrupt(format!("push provider {provider:?}")))?,
        summary: from_json("summary", &row.try_get::<String, _>("summary")?)?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

impl Store {
    /// Stores (or replaces) the organisation's credentials for `platform`: `secret` is sealed,
    /// `summary` kept in clear for display.
    pub async fn set_push_credentials(
        &self,
        org_id: &str,
        platform: Platform,
        summary: &serde_json::Value,
        secret: &str,
    ) -> Result<PushCredentials> {
        let (millis, _) = now();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO push_credentials (org_id, provider, summary, sealed, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $5)
             ON CONFLICT (org_id, provider)
             DO UPDATE SET summary = excluded.summary, sealed = excluded.sealed,
                           updated_at = excluded.updated_at
             RETURNING {COLUMNS}"
        )))
        .bind(org_id)
        .bind(platform.as_str())
        .bind(to_json(summary)?)
        .bind(self.seal(org_id, PUSH_CREDENTIALS_SECRET, platform.as_str(), secret)?)
        .bind(millis)
        .fetch_one(&self.pool)
        .await?;
        credentials(&row)
    }

    /// The organisation's configured platforms, FCM before APNs.
    pub async fn list_push_credentials(&self, org_id: &str) -> Result<Vec<PushCredentials>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM push_credentials WHERE org_id = $1 ORDER BY provider DESC"
        )))
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(credentials).collect()
    }

    /// The sealed secret of `platform`'s credentials in clear, for the sender that signs with
    /// it; `None` when the organisation has not configured that platform.
    pub async fn push_credentials_secret(
        &self,
        org_id: &str,
        platform: Platform,
    ) -> Result<Option<String>> {
        let sealed: Option<String> = sqlx::query_scalar(
            "SELECT sealed FROM push_credentials WHERE org_id = $1 AND provider = $2",
        )
        .bind(org_id)
        .bind(platform.as_str())
        .fetch_optional(&self.pool)
        .await?;
        sealed
            .map(|sealed| self.open(org_id, PUSH_CREDENTIALS_SECRET, platform.as_str(), &sealed))
            .transpose()
    }

    /// `NotFound` when the organisation has no credentials for `platform`.
    pub async fn delete_push_credentials(&self, org_id: &str, platform: Platform) -> Result<()> {
        let done = sqlx::query("DELETE FROM push_credentials WHERE org_id = $1 AND provider = $2")
            .bind(org_id)
            .bind(platform.as_str())
            .execute(&self.pool)
            .await?;
        found(done)
    }
}
