//! Organisations and their API keys. A key's secret is shown once at creation; only its
//! SHA-256 is stored (the secret has 256 bits of entropy, so a slow hash adds nothing).

use crate::roles::{Permission, insert_system_roles, lock_role, parse_permissions, unknown_role};
use crate::{Result, Store, StoreError, found, new_id, opt_time, time, to_millis};
use chrono::{DateTime, TimeDelta, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};
use std::collections::BTreeSet;

const SECRET_PREFIX: &str = "pidgr_";

#[derive(Clone, Debug, serde::Serialize)]
pub struct Organisation {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ApiKey {
    pub id: String,
    #[serde(skip_serializing)]
    pub org_id: String,
    pub name: String,
    /// The id of the key's role (see [`crate::Role`]).
    pub role: String,
    /// The first characters of the secret, enough to recognise a key in a list.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    /// When the key last authenticated, to within [`LAST_USED_GRANULARITY`].
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A freshly created key with its secret: the only time the secret exists outside the caller.
#[derive(Debug)]
pub struct GeneratedKey {
    pub key: ApiKey,
    pub secret: String,
}

/// A live key and what its role allows, as of this request.
#[derive(Clone, Debug)]
pub struct Authenticated {
    pub key: ApiKey,
    pub permissions: BTreeSet<Permission>,
}

/// How stale a key's `last_used_at` may be: authentication rewrites it only once it is older.
pub const LAST_USED_GRANULARITY: TimeDelta = TimeDelta::seconds(60);

const KEY_COLUMNS: &str = "id, org_id, name, role, prefix, created_at, last_used_at, revoked_at";

/// A key with its role's permissions; callers add the WHERE clause.
const LIVE_KEY_QUERY: &str = "SELECT k.id, k.org_id, k.name, k.role, k.prefix, k.created_at,
        k.last_used_at, k.revoked_at, r.permissions
     FROM api_keys k LEFT JOIN roles r ON r.org_id = k.org_id AND r.id = k.role";

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn api_key(row: &AnyRow) -> Result<ApiKey> {
    Ok(ApiKey {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        name: row.try_get("name")?,
        role: row.try_get("role")?,
        prefix: row.try_get("prefix")?,
        created_at: time(row, "created_at")?,
        last_used_at: opt_time(row, "last_used_at")?,
        revoked_at: opt_time(row, "revoked_at")?,
    })
}

impl Store {
    /// Creates an organisation together with its system roles, so it never exists without
    /// them.
    pub async fn create_organisation(&self, name: &str) -> Result<Organisation> {
        let now = to_millis(Utc::now());
        let org = Organisation {
            id: new_id(),
            name: name.to_owned(),
            created_at: crate::from_millis(now)?,
        };
        let mut tx = self.write_tx().await?;
        sqlx::query("INSERT INTO organisations (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&org.id)
            .bind(&org.name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        insert_system_roles(&mut tx, &org.id, now).await?;
        tx.commit().await?;
        Ok(org)
    }

    /// The oldest organisation with this name, if any (for `pidgr dev-key`).
    pub async fn find_organisation_by_name(&self, name: &str) -> Result<Option<Organisation>> {
        let row = sqlx::query(
            "SELECT id, name, created_at FROM organisations WHERE name = $1 ORDER BY created_at, id LIMIT 1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(Organisation {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                created_at: time(&row, "created_at")?,
            })
        })
        .transpose()
    }

    pub async fn get_organisation(&self, org_id: &str) -> Result<Organisation> {
        let row = sqlx::query("SELECT id, name, created_at FROM organisations WHERE id = $1")
            .bind(org_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(Organisation {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            created_at: time(&row, "created_at")?,
        })
    }

    /// Creates an API key for `org_id` carrying the role `role_id`, and returns its secret once.
    /// A role the organisation does not have is refused.
    pub async fn create_api_key(
        &self,
        org_id: &str,
        name: &str,
        role_id: &str,
    ) -> Result<GeneratedKey> {
        let mut random = [0u8; 32];
        rand::rng().fill_bytes(&mut random);
        let secret = format!("{SECRET_PREFIX}{}", hex::encode(random));
        let key = ApiKey {
            id: new_id(),
            org_id: org_id.to_owned(),
            name: name.to_owned(),
            role: role_id.to_owned(),
            prefix: secret[..SECRET_PREFIX.len() + 8].to_owned(),
            created_at: crate::from_millis(to_millis(Utc::now()))?,
            last_used_at: None,
            revoked_at: None,
        };
        let mut tx = self.write_tx().await?;
        if lock_role(&mut tx, self.backend, org_id, role_id, false)
            .await?
            .is_none()
        {
            return Err(unknown_role(role_id));
        }
        sqlx::query(
            "INSERT INTO api_keys (id, org_id, name, role, key_hash, prefix, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&key.id)
        .bind(&key.org_id)
        .bind(&key.name)
        .bind(&key.role)
        .bind(hash_secret(&secret))
        .bind(&key.prefix)
        .bind(to_millis(key.created_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(GeneratedKey { key, secret })
    }

    /// A page of the organisation's keys by id, revoked ones included (they show when).
    pub async fn list_api_keys(
        &self,
        org_id: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<ApiKey>> {
        self.page_by_id("api_keys", KEY_COLUMNS, org_id, after, limit, api_key)
            .await
    }

    pub async fn get_api_key(&self, org_id: &str, key_id: &str) -> Result<ApiKey> {
        self.row_by_id("api_keys", KEY_COLUMNS, org_id, key_id, api_key)
            .await
    }

    /// Finds the live (not revoked) key whose secret this is, notes that it was used, and reads
    /// what its role allows now (a role's permissions may change after the key is made).
    ///
    /// `last_used_at` is written at most once per [`LAST_USED_GRANULARITY`] per key, and only
    /// for a key that authenticated: a busy key costs one read per request, not a write, and
    /// the time shown stays correct to within that period.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Authenticated>> {
        self.authenticate_at(secret, Utc::now()).await
    }

    /// [`Store::authenticate`] as of `now`, for tests that move the clock rather than wait.
    pub async fn authenticate_at(
        &self,
        secret: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Authenticated>> {
        if !secret.starts_with(SECRET_PREFIX) {
            return Ok(None);
        }
        let row = sqlx::query(AssertSqlSafe(format!(
            "{LIVE_KEY_QUERY} WHERE k.key_hash = $1 AND k.revoked_at IS NULL"
        )))
        .bind(hash_secret(secret))
        .fetch_optional(&self.pool)
        .await?;
        self.authenticated(row, now).await
    }

    /// The live key `key_id` of the organisation and what its role allows now: how a console
    /// session, which holds a key's id and never its secret, acts as that key.
    pub async fn authenticate_key_id(
        &self,
        org_id: &str,
        key_id: &str,
    ) -> Result<Option<Authenticated>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "{LIVE_KEY_QUERY} WHERE k.id = $1 AND k.org_id = $2 AND k.revoked_at IS NULL"
        )))
        .bind(key_id)
        .bind(org_id)
        .fetch_optional(&self.pool)
        .await?;
        self.authenticated(row, Utc::now()).await
    }

    async fn authenticated(
        &self,
        row: Option<AnyRow>,
        now: DateTime<Utc>,
    ) -> Result<Option<Authenticated>> {
        let Some(row) = row else {
            return Ok(None);
        };
        let mut key = api_key(&row)?;
        let now = to_millis(now);
        let stale_before = now - LAST_USED_GRANULARITY.num_milliseconds();
        if key.last_used_at.is_none_or(|t| to_millis(t) < stale_before) {
            // Conditional, so of concurrent requests that all read a stale time one writes.
            let done = sqlx::query(
                "UPDATE api_keys SET last_used_at = $1
                 WHERE id = $2 AND revoked_at IS NULL
                   AND (last_used_at IS NULL OR last_used_at < $3)",
            )
            .bind(now)
            .bind(&key.id)
            .bind(stale_before)
            .execute(&self.pool)
            .await?;
            if done.rows_affected() == 1 {
                key.last_used_at = Some(crate::from_millis(now)?);
            }
        }
        // A live key's role cannot be deleted, so a missing role means a key older than roles
        // whose role name never became a role: it may authenticate but do nothing.
        let permissions = match row.try_get::<Option<String>, _>("permissions")? {
            Some(text) => parse_permissions(&text)?,
            None => BTreeSet::new(),
        };
        Ok(Some(Authenticated { key, permissions }))
    }

    /// Revokes a live key. A key already revoked (or another organisation's) is NotFound.
    pub async fn revoke_api_key(&self, org_id: &str, key_id: &str) -> Result<()> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND org_id = $3 AND revoked_at IS NULL",
        )
        .bind(to_millis(Utc::now()))
        .bind(key_id)
        .bind(org_id)
        .execute(&self.pool)
        .await?;
        found(done)
    }
}
