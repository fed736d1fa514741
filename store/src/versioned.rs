//! What templates and workflow definitions share: a named head row per organisation that
//! counts its versions, and append-only version rows numbered 1, 2, 3, ... Only the version
//! payload columns differ, so each aggregate describes its tables with a [`Versioned`] and maps
//! its own rows.

use crate::{Result, Store, StoreError, from_millis, new_id, time, to_millis};
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

/// The tables of one versioned aggregate. Every name here is a constant of ours, never input,
/// which is what makes formatting them into SQL safe.
pub(crate) struct Versioned {
    /// The head table: id, org_id, name, latest_version, created_at, updated_at.
    pub heads: &'static str,
    /// The version table: `parent`, version, org_id, created_at and the payload columns.
    pub versions: &'static str,
    /// The version table's column naming the head.
    pub parent: &'static str,
    /// What a user calls one ("template"), for messages.
    pub noun: &'static str,
    /// The payload columns, in the order values are given.
    pub payload: &'static [&'static str],
}

/// A head row, before the aggregate gives it its own type.
pub(crate) struct Head {
    pub id: String,
    pub name: String,
    pub latest_version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const HEAD_COLUMNS: &str = "id, name, latest_version, created_at, updated_at";

fn head(row: &AnyRow) -> Result<Head> {
    Ok(Head {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        latest_version: row.try_get("latest_version")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

/// Whether a write failed on a UNIQUE constraint (a duplicate name, a key already present).
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

/// Now, at the millisecond precision the database keeps, so what a write returns equals what a
/// later read returns.
pub(crate) fn now() -> (i64, DateTime<Utc>) {
    let millis = to_millis(Utc::now());
    (
        millis,
        from_millis(millis).expect("the current time is in range"),
    )
}

impl Versioned {
    fn version_columns(&self) -> String {
        format!(
            "{} AS parent_id, version, created_at, {}",
            self.parent,
            self.payload.join(", ")
        )
    }

    fn insert_version_sql(&self) -> String {
        let placeholders: Vec<String> = (5..5 + self.payload.len())
            .map(|n| format!("${n}"))
            .collect();
        format!(
            // RETURNING gives the caller the same row shape for writes as for reads.
            "INSERT INTO {} ({}, version, org_id, created_at, {}) VALUES ($1, $2, $3, $4, {})
             RETURNING {}",
            self.versions,
            self.parent,
            self.payload.join(", "),
            placeholders.join(", "),
            self.version_columns()
        )
    }
}

impl Store {
    /// Creates a head named `name` with version 1 holding `payload`, in one transaction.
    /// Returns the head and the version row as read back.
    pub(crate) async fn create_versioned(
        &self,
        kind: &Versioned,
        org_id: &str,
        name: &str,
        payload: &[String],
    ) -> Result<(Head, AnyRow)> {
        let mut tx = self.write_tx().await?;
        let created = create_versioned_in(&mut tx, kind, &new_id(), org_id, name, payload).await?;
        tx.commit().await?;
        Ok(created)
    }

    /// Appends the next version to head `id`, in one transaction (see [`append_versioned_in`]).
    pub(crate) async fn append_versioned(
        &self,
        kind: &Versioned,
        org_id: &str,
        id: &str,
        payload: &[String],
    ) -> Result<AnyRow> {
        let mut tx = self.write_tx().await?;
        let row = append_versioned_in(&mut tx, kind, org_id, id, payload).await?;
        tx.commit().await?;
        Ok(row)
    }

    pub(crate) async fn get_head(&self, kind: &Versioned, org_id: &str, id: &str) -> Result<Head> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {HEAD_COLUMNS} FROM {} WHERE id = $1 AND org_id = $2",
            kind.heads
        )))
        .bind(id)
        .bind(org_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        head(&row)
    }

    /// Heads with an id after `after` ("" = from the start), oldest first.
    pub(crate) async fn list_heads(
        &self,
        kind: &Versioned,
        org_id: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<Head>> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {HEAD_COLUMNS} FROM {} WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            kind.heads
        )))
        .bind(org_id)
        .bind(after)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(head)
        .collect()
    }

    pub(crate) async fn get_version_row(
        &self,
        kind: &Versioned,
        org_id: &str,
        id: &str,
        version: i64,
    ) -> Result<AnyRow> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {} FROM {} WHERE {} = $1 AND org_id = $2 AND version = $3",
            kind.version_columns(),
            kind.versions,
            kind.parent
        )))
        .bind(id)
        .bind(org_id)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)
    }

    /// Versions numbered above `after` (0 = from the first), in order. `NotFound` when the head
    /// is not this organisation's, so an empty list always means "no more versions".
    pub(crate) async fn list_version_rows(
        &self,
        kind: &Versioned,
        org_id: &str,
        id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<AnyRow>> {
        self.get_head(kind, org_id, id).await?;
        Ok(sqlx::query(AssertSqlSafe(format!(
            "SELECT {} FROM {} WHERE {} = $1 AND org_id = $2 AND version > $3
             ORDER BY version LIMIT $4",
            kind.version_columns(),
            kind.versions,
            kind.parent
        )))
        .bind(id)
        .bind(org_id)
        .bind(after)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?)
    }
}

/// Creates head `id` named `name` with version 1 holding `payload`, inside `tx` (so the caller
/// can write what belongs with it in the same transaction). Returns the head and the version
/// row as read back.
pub(crate) async fn create_versioned_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    kind: &Versioned,
    id: &str,
    org_id: &str,
    name: &str,
    payload: &[String],
) -> Result<(Head, AnyRow)> {
    let (millis, at) = now();
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {} (id, org_id, name, latest_version, created_at, updated_at)
         VALUES ($1, $2, $3, 1, $4, $4)",
        kind.heads
    )))
    .bind(id)
    .bind(org_id)
    .bind(name)
    .bind(millis)
    .execute(&mut **tx)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Conflict(format!("a {} named {name:?} already exists", kind.noun))
        } else {
            e.into()
        }
    })?;
    let version = insert_version(tx, kind, org_id, id, 1, millis, payload).await?;
    let head = Head {
        id: id.to_owned(),
        name: name.to_owned(),
        latest_version: 1,
        created_at: at,
        updated_at: at,
    };
    Ok((head, version))
}

/// Appends the next version to head `id` inside `tx`. Bumping `latest_version` with one
/// guarded UPDATE inside the write transaction locks the head row (PostgreSQL) or the database
/// (SQLite), so concurrent appends queue up and never get the same number.
pub(crate) async fn append_versioned_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    kind: &Versioned,
    org_id: &str,
    id: &str,
    payload: &[String],
) -> Result<AnyRow> {
    let (millis, _) = now();
    let version: i64 = sqlx::query(AssertSqlSafe(format!(
        "UPDATE {} SET latest_version = latest_version + 1, updated_at = $1
         WHERE id = $2 AND org_id = $3 RETURNING latest_version",
        kind.heads
    )))
    .bind(millis)
    .bind(id)
    .bind(org_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound)?
    .try_get("latest_version")?;
    insert_version(tx, kind, org_id, id, version, millis, payload).await
}

async fn insert_version(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    kind: &Versioned,
    org_id: &str,
    id: &str,
    version: i64,
    millis: i64,
    payload: &[String],
) -> Result<AnyRow> {
    debug_assert_eq!(payload.len(), kind.payload.len());
    let sql = kind.insert_version_sql();
    let mut query = sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .bind(version)
        .bind(org_id)
        .bind(millis);
    for value in payload {
        query = query.bind(value);
    }
    Ok(query.fetch_one(&mut **tx).await?)
}
