//! Members: the people of an organisation that campaigns reach, each with a role, profile
//! attributes (usable as template variables), devices and team/group memberships.

use crate::roles::{lock_role, unknown_role};
use crate::{
    Result, Store, StoreError, from_json, is_unique_violation, new_id, time, to_json, to_millis,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Member {
    pub id: String,
    /// The organisation's own identifier for the person (HR id, SSO subject, ...).
    pub external_id: String,
    pub email: String,
    pub display_name: String,
    pub attributes: BTreeMap<String, String>,
    pub role_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub struct NewMember {
    pub external_id: String,
    pub email: String,
    pub display_name: String,
    pub attributes: BTreeMap<String, String>,
    pub role_id: String,
}

/// The fields to change; `None` keeps the current value. `attributes` replaces them all.
#[derive(Clone, Debug, Default)]
pub struct MemberUpdate {
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub attributes: Option<BTreeMap<String, String>>,
    pub role_id: Option<String>,
}

pub(crate) const MEMBER_COLUMNS: &str =
    "id, external_id, email, display_name, attributes, role_id, created_at, updated_at";

pub(crate) fn member(row: &AnyRow) -> Result<Member> {
    Ok(Member {
        id: row.try_get("id")?,
        external_id: row.try_get("external_id")?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        attributes: from_json(
            "members.attributes",
            &row.try_get::<String, _>("attributes")?,
        )?,
        role_id: row.try_get("role_id")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

impl Store {
    /// Adds a member. The external id is unique within the organisation, and the role must be
    /// one of the organisation's.
    pub async fn create_member(&self, org_id: &str, new: NewMember) -> Result<Member> {
        let now = to_millis(Utc::now());
        let mut tx = self.write_tx().await?;
        if lock_role(&mut tx, self.backend, org_id, &new.role_id, false)
            .await?
            .is_none()
        {
            return Err(unknown_role(&new.role_id));
        }
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO members (id, org_id, external_id, email, display_name, attributes,
                                  role_id, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING {MEMBER_COLUMNS}"
        )))
        .bind(new_id())
        .bind(org_id)
        .bind(&new.external_id)
        .bind(&new.email)
        .bind(&new.display_name)
        .bind(to_json(&new.attributes)?)
        .bind(&new.role_id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict(format!(
                    "a member with external id \"{}\" already exists",
                    new.external_id
                ))
            } else {
                e.into()
            }
        })?;
        let created = member(&row)?;
        tx.commit().await?;
        Ok(created)
    }

    pub async fn get_member(&self, org_id: &str, member_id: &str) -> Result<Member> {
        self.row_by_id("members", MEMBER_COLUMNS, org_id, member_id, member)
            .await
    }

    pub async fn find_member_by_external_id(
        &self,
        org_id: &str,
        external_id: &str,
    ) -> Result<Option<Member>> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {MEMBER_COLUMNS} FROM members WHERE org_id = $1 AND external_id = $2"
        )))
        .bind(org_id)
        .bind(external_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(member)
        .transpose()
    }

    /// A page of the organisation's members by id.
    pub async fn list_members(&self, org_id: &str, after: &str, limit: i64) -> Result<Vec<Member>> {
        self.page_by_id("members", MEMBER_COLUMNS, org_id, after, limit, member)
            .await
    }

    pub async fn update_member(
        &self,
        org_id: &str,
        member_id: &str,
        update: MemberUpdate,
    ) -> Result<Member> {
        let mut tx = self.write_tx().await?;
        if let Some(role_id) = &update.role_id
            && lock_role(&mut tx, self.backend, org_id, role_id, false)
                .await?
                .is_none()
        {
            return Err(unknown_role(role_id));
        }
        let attributes = update.attributes.as_ref().map(to_json).transpose()?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE members SET email = COALESCE($1, email),
                                display_name = COALESCE($2, display_name),
                                attributes = COALESCE($3, attributes),
                                role_id = COALESCE($4, role_id),
                                updated_at = $5
             WHERE org_id = $6 AND id = $7 RETURNING {MEMBER_COLUMNS}"
        )))
        .bind(update.email)
        .bind(update.display_name)
        .bind(attributes)
        .bind(update.role_id)
        .bind(to_millis(Utc::now()))
        .bind(org_id)
        .bind(member_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let updated = member(&row)?;
        tx.commit().await?;
        Ok(updated)
    }

    /// Deletes a member with their devices and team/group memberships. Deliveries already
    /// written keep their copy of the recipient, so past campaigns still report on them.
    pub async fn delete_member(&self, org_id: &str, member_id: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        // The foreign keys cascade too; deleting explicitly keeps this true even on a SQLite
        // connection opened without `PRAGMA foreign_keys`.
        for sql in [
            "DELETE FROM devices WHERE org_id = $1 AND member_id = $2",
            "DELETE FROM member_set_members WHERE org_id = $1 AND member_id = $2",
        ] {
            sqlx::query(sql)
                .bind(org_id)
                .bind(member_id)
                .execute(&mut *tx)
                .await?;
        }
        let deleted = sqlx::query("DELETE FROM members WHERE org_id = $1 AND id = $2")
            .bind(org_id)
            .bind(member_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }
}
