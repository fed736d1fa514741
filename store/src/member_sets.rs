//! Teams (organisational units) and groups (cross-functional) are both named sets of members,
//! kept in one table with a kind. Every query names the kind, so a team is never found, listed
//! or changed as a group and the other way round.

use crate::members::{MEMBER_COLUMNS, Member, member};
use crate::{Result, Store, StoreError, is_unique_violation, new_id, time, to_millis};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Executor, Row};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SetKind {
    Team,
    Group,
}

impl SetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SetKind::Team => "team",
            SetKind::Group => "group",
        }
    }

    /// The word for one set of this kind, for messages ("a team named …").
    pub fn noun(self) -> &'static str {
        self.as_str()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemberSet {
    pub id: String,
    pub kind: SetKind,
    pub name: String,
    pub member_count: i64,
    pub created_at: DateTime<Utc>,
}

const SET_COLUMNS: &str = "s.id, s.name, s.created_at, \
     (SELECT COUNT(*) FROM member_set_members m WHERE m.set_id = s.id) AS member_count";

fn member_set(kind: SetKind, row: &AnyRow) -> Result<MemberSet> {
    Ok(MemberSet {
        id: row.try_get("id")?,
        kind,
        name: row.try_get("name")?,
        member_count: row.try_get("member_count")?,
        created_at: time(row, "created_at")?,
    })
}

fn duplicate_name(kind: SetKind, name: &str) -> StoreError {
    StoreError::Conflict(format!("a {} named \"{name}\" already exists", kind.noun()))
}

/// NotFound unless the organisation has a set of this kind with this id.
async fn ensure_set<'e, E: Executor<'e, Database = Any>>(
    executor: E,
    org_id: &str,
    kind: SetKind,
    set_id: &str,
) -> Result<()> {
    sqlx::query("SELECT id FROM member_sets WHERE org_id = $1 AND kind = $2 AND id = $3")
        .bind(org_id)
        .bind(kind.as_str())
        .bind(set_id)
        .fetch_optional(executor)
        .await?
        .map(|_| ())
        .ok_or(StoreError::NotFound)
}

impl Store {
    /// Creates an empty team or group. Names are unique among the organisation's sets of the
    /// same kind (a team and a group may share one).
    pub async fn create_set(&self, org_id: &str, kind: SetKind, name: &str) -> Result<MemberSet> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO member_sets (id, org_id, kind, name, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(org_id)
        .bind(kind.as_str())
        .bind(name)
        .bind(to_millis(Utc::now()))
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                duplicate_name(kind, name)
            } else {
                e.into()
            }
        })?;
        self.get_set(org_id, kind, &id).await
    }

    pub async fn get_set(&self, org_id: &str, kind: SetKind, set_id: &str) -> Result<MemberSet> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SET_COLUMNS} FROM member_sets s
             WHERE s.org_id = $1 AND s.kind = $2 AND s.id = $3"
        )))
        .bind(org_id)
        .bind(kind.as_str())
        .bind(set_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        member_set(kind, &row)
    }

    /// A page of the organisation's teams or groups by id.
    pub async fn list_sets(
        &self,
        org_id: &str,
        kind: SetKind,
        after: &str,
        limit: i64,
    ) -> Result<Vec<MemberSet>> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {SET_COLUMNS} FROM member_sets s
             WHERE s.org_id = $1 AND s.kind = $2 AND s.id > $3 ORDER BY s.id LIMIT $4"
        )))
        .bind(org_id)
        .bind(kind.as_str())
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| member_set(kind, row))
        .collect()
    }

    pub async fn rename_set(
        &self,
        org_id: &str,
        kind: SetKind,
        set_id: &str,
        name: &str,
    ) -> Result<MemberSet> {
        let renamed = sqlx::query(
            "UPDATE member_sets SET name = $1 WHERE org_id = $2 AND kind = $3 AND id = $4",
        )
        .bind(name)
        .bind(org_id)
        .bind(kind.as_str())
        .bind(set_id)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                duplicate_name(kind, name)
            } else {
                e.into()
            }
        })?
        .rows_affected();
        if renamed == 0 {
            return Err(StoreError::NotFound);
        }
        self.get_set(org_id, kind, set_id).await
    }

    /// Deletes a team or group and its memberships (the members themselves stay).
    pub async fn delete_set(&self, org_id: &str, kind: SetKind, set_id: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        ensure_set(&mut *tx, org_id, kind, set_id).await?;
        sqlx::query("DELETE FROM member_set_members WHERE org_id = $1 AND set_id = $2")
            .bind(org_id)
            .bind(set_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM member_sets WHERE org_id = $1 AND kind = $2 AND id = $3")
            .bind(org_id)
            .bind(kind.as_str())
            .bind(set_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Adds a member to a team or group; false when they were in it already. NotFound when
    /// either the set (of this kind) or the member is not the organisation's.
    pub async fn add_set_member(
        &self,
        org_id: &str,
        kind: SetKind,
        set_id: &str,
        member_id: &str,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        ensure_set(&mut *tx, org_id, kind, set_id).await?;
        sqlx::query("SELECT id FROM members WHERE org_id = $1 AND id = $2")
            .bind(org_id)
            .bind(member_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let added = sqlx::query(
            "INSERT INTO member_set_members (set_id, member_id, org_id, added_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (set_id, member_id) DO NOTHING",
        )
        .bind(set_id)
        .bind(member_id)
        .bind(org_id)
        .bind(to_millis(Utc::now()))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(added == 1)
    }

    /// Takes a member out of a team or group; NotFound when they were not in it.
    pub async fn remove_set_member(
        &self,
        org_id: &str,
        kind: SetKind,
        set_id: &str,
        member_id: &str,
    ) -> Result<()> {
        let removed = sqlx::query(
            "DELETE FROM member_set_members
             WHERE org_id = $1 AND set_id = $2 AND member_id = $3
               AND set_id IN (SELECT id FROM member_sets WHERE org_id = $1 AND kind = $4)",
        )
        .bind(org_id)
        .bind(set_id)
        .bind(member_id)
        .bind(kind.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected();
        if removed == 0 {
            Err(StoreError::NotFound)
        } else {
            Ok(())
        }
    }

    /// A page of a team's or group's members by member id; NotFound when the set is not the
    /// organisation's.
    pub async fn list_set_members(
        &self,
        org_id: &str,
        kind: SetKind,
        set_id: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<Member>> {
        ensure_set(&self.pool, org_id, kind, set_id).await?;
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {MEMBER_COLUMNS} FROM members
             WHERE org_id = $1 AND id > $2
               AND id IN (SELECT member_id FROM member_set_members WHERE org_id = $1 AND set_id = $3)
             ORDER BY id LIMIT $4"
        )))
        .bind(org_id)
        .bind(after)
        .bind(set_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(member)
        .collect()
    }
}

impl Store {
    /// The ids of the organisation's teams with these names, creating the missing ones (for a
    /// bulk import, before its batches). Answers name → id for every name given.
    pub async fn ensure_teams(
        &self,
        org_id: &str,
        names: &[&str],
    ) -> Result<std::collections::HashMap<String, String>> {
        let mut ids = std::collections::HashMap::with_capacity(names.len());
        let now = to_millis(Utc::now());
        for chunk in names.chunks(crate::members::IMPORT_ROWS_PER_STATEMENT) {
            let mut tx = self.write_tx().await?;
            // $1 organisation, $2 kind, $3 now; then two per team.
            let values = (0..chunk.len())
                .map(|i| {
                    let n = 4 + i * 2;
                    format!("(${n}, $1, $2, ${}, $3)", n + 1)
                })
                .collect::<Vec<_>>()
                .join(", ");
            let mut insert = sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO member_sets (id, org_id, kind, name, created_at) VALUES {values}
                 ON CONFLICT (org_id, kind, name) DO NOTHING"
            )))
            .bind(org_id)
            .bind(SetKind::Team.as_str())
            .bind(now);
            for name in chunk {
                insert = insert.bind(new_id()).bind(*name);
            }
            insert.execute(&mut *tx).await?;
            let mut select = sqlx::query(AssertSqlSafe(format!(
                "SELECT id, name FROM member_sets WHERE org_id = $1 AND kind = $2 AND name IN ({})",
                crate::placeholders(3, chunk.len())
            )))
            .bind(org_id)
            .bind(SetKind::Team.as_str());
            for name in chunk {
                select = select.bind(*name);
            }
            for row in select.fetch_all(&mut *tx).await? {
                ids.insert(row.try_get("name")?, row.try_get("id")?);
            }
            tx.commit().await?;
        }
        Ok(ids)
    }
}

/// A bulk import's team memberships, `(set id, member id)`, in multi-row statements inside the
/// import's transaction; existing ones are kept. Answers how many were added.
pub(crate) async fn import_set_members(
    tx: &mut sqlx::Transaction<'static, Any>,
    org_id: &str,
    memberships: &[(&str, &str)],
    now: i64,
) -> Result<u64> {
    let mut added = 0;
    for chunk in memberships.chunks(crate::members::IMPORT_ROWS_PER_STATEMENT) {
        // $1 organisation, $2 now; then two per membership.
        let values = (0..chunk.len())
            .map(|i| {
                let n = 3 + i * 2;
                format!("(${n}, ${}, $1, $2)", n + 1)
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO member_set_members (set_id, member_id, org_id, added_at) VALUES {values}
             ON CONFLICT (set_id, member_id) DO NOTHING"
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(org_id).bind(now);
        for (set_id, member_id) in chunk {
            query = query.bind(*set_id).bind(*member_id);
        }
        added += query.execute(&mut **tx).await?.rows_affected();
    }
    Ok(added)
}
