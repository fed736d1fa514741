//! Members: the people of an organisation that campaigns reach, each with a role, profile
//! attributes (usable as template variables), devices and team/group memberships.

use crate::devices::{Platform, import_devices};
use crate::managers::{
    ManagerError, ManagerProblem, ManagerRef, check_loops, existing_ids, ids_by_external_id,
    lock_managers, refused, set_manager, write_managers,
};
use crate::member_sets::import_set_members;
use crate::roles::{lock_role, unknown_role};
use crate::{
    Result, Store, StoreError, from_json, is_unique_violation, new_id, placeholders, time, to_json,
    to_millis,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Member {
    pub id: String,
    /// The organisation's own identifier for the person (HR id, SSO subject, ...).
    pub external_id: String,
    pub email: String,
    pub display_name: String,
    pub attributes: BTreeMap<String, String>,
    pub role_id: String,
    /// The member this one reports to (same organisation), if any.
    pub manager_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Default)]
pub struct NewMember {
    pub external_id: String,
    pub email: String,
    pub display_name: String,
    pub attributes: BTreeMap<String, String>,
    pub role_id: String,
    /// The id of the member's manager, one of the organisation's members.
    pub manager_id: Option<String>,
}

/// The fields to change; `None` keeps the current value. `attributes` replaces them all;
/// `manager_id: Some(None)` removes the manager.
#[derive(Clone, Debug, Default)]
pub struct MemberUpdate {
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub attributes: Option<BTreeMap<String, String>>,
    pub role_id: Option<String>,
    pub manager_id: Option<Option<String>>,
}

pub(crate) const MEMBER_COLUMNS: &str = "id, external_id, email, display_name, attributes, \
     role_id, manager_id, created_at, updated_at";

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
        manager_id: row.try_get("manager_id")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

impl Store {
    /// Adds a member. The external id is unique within the organisation, the role must be one
    /// of the organisation's, and so must the manager (a member) when one is given.
    pub async fn create_member(&self, org_id: &str, new: NewMember) -> Result<Member> {
        let now = to_millis(Utc::now());
        let mut tx = self.write_tx().await?;
        if new.manager_id.is_some() {
            // Before any row is locked: the order every write of managers takes them in.
            lock_managers(&mut tx, self.backend, org_id).await?;
        }
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
        let mut created = member(&row)?;
        if let Some(manager_id) = &new.manager_id {
            // A new member has no reports yet, so no loop can pass through them: only the
            // manager's existence is in question.
            if existing_ids(&mut tx, org_id, &[manager_id])
                .await?
                .is_empty()
            {
                return Err(refused(vec![ManagerError {
                    external_id: created.external_id,
                    problem: ManagerProblem::Unknown(manager_id.clone()),
                }]));
            }
            write_managers(&mut tx, org_id, &[(&created.id, Some(manager_id))], now).await?;
            created.manager_id = Some(manager_id.clone());
        }
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

    /// The members with these external ids (those that exist), by external id: one query per
    /// [`IMPORT_ROWS_PER_STATEMENT`] ids.
    pub async fn find_members_by_external_ids(
        &self,
        org_id: &str,
        external_ids: &[&str],
    ) -> Result<HashMap<String, Member>> {
        let mut found = HashMap::with_capacity(external_ids.len());
        for chunk in external_ids.chunks(IMPORT_ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT {MEMBER_COLUMNS} FROM members WHERE org_id = $1 AND external_id IN ({})",
                placeholders(2, chunk.len())
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).bind(org_id);
            for id in chunk {
                query = query.bind(*id);
            }
            for row in query.fetch_all(&self.pool).await? {
                let member = member(&row)?;
                found.insert(member.external_id.clone(), member);
            }
        }
        Ok(found)
    }

    /// A page of the organisation's members by id.
    pub async fn list_members(&self, org_id: &str, after: &str, limit: i64) -> Result<Vec<Member>> {
        self.page_by_id("members", MEMBER_COLUMNS, org_id, after, limit, member)
            .await
    }

    /// Changes a member; a manager given must be another of the organisation's members, and
    /// no chain of managers may come back to this one.
    pub async fn update_member(
        &self,
        org_id: &str,
        member_id: &str,
        update: MemberUpdate,
    ) -> Result<Member> {
        let mut tx = self.write_tx().await?;
        if let Some(Some(_)) = &update.manager_id {
            // Before the member's row is locked by the update below: a write of managers holds
            // this lock while it updates rows, so taking it after one would risk a deadlock.
            lock_managers(&mut tx, self.backend, org_id).await?;
        }
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
        .bind(update.email.clone())
        .bind(update.display_name.clone())
        .bind(attributes)
        .bind(update.role_id.clone())
        .bind(to_millis(Utc::now()))
        .bind(org_id)
        .bind(member_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let mut updated = member(&row)?;
        if let Some(manager_id) = &update.manager_id {
            set_manager(
                &mut tx,
                org_id,
                member_id,
                &updated.external_id,
                manager_id.as_deref(),
            )
            .await?;
            updated.manager_id = manager_id.clone();
        }
        tx.commit().await?;
        Ok(updated)
    }

    /// Deletes a member with their devices and team/group memberships; their reports are left
    /// without a manager. Deliveries already written keep their copy of the recipient, so past
    /// campaigns still report on them.
    pub async fn delete_member(&self, org_id: &str, member_id: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "UPDATE members SET manager_id = NULL, updated_at = $1
             WHERE org_id = $2 AND manager_id = $3",
        )
        .bind(to_millis(Utc::now()))
        .bind(org_id)
        .bind(member_id)
        .execute(&mut *tx)
        .await?;
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

/// One member of a bulk import (`pidgr members import`): the profile, the push tokens to
/// register for them and the names of the teams they belong to. Validated by the caller.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportedMember {
    pub external_id: String,
    pub email: String,
    pub display_name: String,
    pub attributes: BTreeMap<String, String>,
    pub devices: Vec<(Platform, String)>,
    pub teams: Vec<String>,
    /// The member's manager; by external id, the manager may come later in the same batch.
    pub manager: ManagerRef,
}

/// What one [`Store::import_members`] batch (or a whole import, summed) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportCounts {
    pub created: u64,
    pub updated: u64,
    /// Members whose profile was already exactly as imported.
    pub unchanged: u64,
    /// Devices registered, or moved to this member from someone else.
    pub devices: u64,
    /// Team memberships added (existing ones are kept, never duplicated).
    pub memberships: u64,
}

impl std::ops::AddAssign for ImportCounts {
    fn add_assign(&mut self, other: ImportCounts) {
        self.created += other.created;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.devices += other.devices;
        self.memberships += other.memberships;
    }
}

/// Rows per multi-row statement: well under SQLite's 32,766 bound parameters (5 a member) and
/// big enough that a million members take a few thousand statements.
pub(crate) const IMPORT_ROWS_PER_STATEMENT: usize = 500;

/// The role bulk-imported members get (a role is granted through the API, where the caller's
/// own permissions are checked; an import never grants more than the system role `member`).
const IMPORTED_ROLE: &str = "member";

/// What writing one member by external id did to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpsertOutcome {
    Created,
    Updated,
    /// Already exactly as written.
    Unchanged,
}

impl Store {
    /// Writes one batch of a bulk import in one transaction: members created or updated by
    /// external id (a re-import changes what changed and leaves the rest alone, never
    /// duplicating), their devices registered (a token known in the organisation moves, as in
    /// [`Store::register_device`]) and their team memberships added (neither is ever removed
    /// here: removals go through the API). `team_ids` maps every team name the batch uses to its
    /// id (see [`Store::ensure_teams`]). External ids and device tokens must be unique within
    /// the batch. Writes go in multi-row statements: this is the
    /// path for directories of a million members.
    pub async fn import_members(
        &self,
        org_id: &str,
        team_ids: &HashMap<String, String>,
        batch: &[ImportedMember],
    ) -> Result<ImportCounts> {
        let roles = vec![None; batch.len()];
        Ok(self.write_members(org_id, team_ids, batch, &roles).await?.0)
    }

    /// The API's writes by external id (`PUT /v1/members/by-external-id/…`,
    /// `POST /v1/members/bulk`): the import's path, in one transaction, so a batch is written
    /// whole or not at all. `roles[i]` is the role row `i` is given; `None` gives a new member
    /// the system role `member` and leaves an existing member's role as it is (the caller has
    /// checked that it may grant every role named). Answers the counts and each row's outcome
    /// and member id, in batch order. External ids must be unique within the batch.
    pub async fn upsert_members(
        &self,
        org_id: &str,
        batch: &[ImportedMember],
        roles: &[Option<String>],
    ) -> Result<(ImportCounts, Vec<(UpsertOutcome, String)>)> {
        if roles.len() != batch.len() {
            return Err(StoreError::Config(
                "upsert_members needs one role (or None) per member".into(),
            ));
        }
        self.write_members(org_id, &HashMap::new(), batch, roles)
            .await
    }

    async fn write_members(
        &self,
        org_id: &str,
        team_ids: &HashMap<String, String>,
        batch: &[ImportedMember],
        roles: &[Option<String>],
    ) -> Result<(ImportCounts, Vec<(UpsertOutcome, String)>)> {
        let mut counts = ImportCounts::default();
        if batch.is_empty() {
            return Ok((counts, Vec::new()));
        }
        let now = to_millis(Utc::now());
        let mut tx = self.write_tx().await?;
        let sets_managers = batch.iter().any(|new| new.manager != ManagerRef::Keep);
        if sets_managers {
            // Before any row is written: the order every write of managers takes them in.
            lock_managers(&mut tx, self.backend, org_id).await?;
        }
        // Every role given out is locked (shared) so none is deleted while it is given.
        let mut given: Vec<&str> = vec![IMPORTED_ROLE];
        for role in roles.iter().flatten() {
            if !given.contains(&role.as_str()) {
                given.push(role);
            }
        }
        for role in given {
            if lock_role(&mut tx, self.backend, org_id, role, false)
                .await?
                .is_none()
            {
                return Err(unknown_role(role));
            }
        }
        let mut ids: HashMap<&str, String> = HashMap::with_capacity(batch.len());
        let mut outcomes: HashMap<&str, UpsertOutcome> = HashMap::with_capacity(batch.len());
        // Existing members whose role changes: (member id, new role).
        let mut role_changes: Vec<(&str, &str)> = Vec::new();
        // The stored manager of each row that names one (or clears it), to tell a change.
        let mut stored_managers: HashMap<&str, Option<String>> = HashMap::new();
        let rows: Vec<(&ImportedMember, Option<&str>)> = batch
            .iter()
            .zip(roles.iter().map(Option::as_deref))
            .collect();
        for chunk in rows.chunks(IMPORT_ROWS_PER_STATEMENT) {
            // What is stored now, to tell created from updated from unchanged.
            let sql = format!(
                "SELECT id, external_id, email, display_name, attributes, role_id, manager_id
                 FROM members WHERE org_id = $1 AND external_id IN ({})",
                placeholders(2, chunk.len())
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).bind(org_id);
            for (new, _) in chunk {
                query = query.bind(&new.external_id);
            }
            let mut stored: HashMap<String, Stored> = HashMap::new();
            for row in query.fetch_all(&mut *tx).await? {
                stored.insert(
                    row.try_get("external_id")?,
                    Stored {
                        id: row.try_get("id")?,
                        email: row.try_get("email")?,
                        display_name: row.try_get("display_name")?,
                        attributes: row.try_get("attributes")?,
                        role_id: row.try_get("role_id")?,
                        manager_id: row.try_get("manager_id")?,
                    },
                );
            }
            let mut writes = Vec::with_capacity(chunk.len());
            for &(new, role) in chunk {
                let attributes = to_json(&new.attributes)?;
                let old = stored.remove(&new.external_id);
                if new.manager != ManagerRef::Keep {
                    stored_managers.insert(
                        &new.external_id,
                        old.as_ref().and_then(|old| old.manager_id.clone()),
                    );
                }
                match old {
                    Some(old)
                        if old.email == new.email
                            && old.display_name == new.display_name
                            && old.attributes == attributes
                            && role.is_none_or(|role| role == old.role_id) =>
                    {
                        counts.unchanged += 1;
                        outcomes.insert(&new.external_id, UpsertOutcome::Unchanged);
                        ids.insert(&new.external_id, old.id);
                    }
                    Some(old) => {
                        counts.updated += 1;
                        outcomes.insert(&new.external_id, UpsertOutcome::Updated);
                        if let Some(role) = role.filter(|role| *role != old.role_id) {
                            role_changes.push((&new.external_id, role));
                        }
                        writes.push((new, attributes, role.unwrap_or(IMPORTED_ROLE)));
                    }
                    None => {
                        counts.created += 1;
                        outcomes.insert(&new.external_id, UpsertOutcome::Created);
                        writes.push((new, attributes, role.unwrap_or(IMPORTED_ROLE)));
                    }
                }
            }
            if writes.is_empty() {
                continue;
            }
            // $1 organisation, $2 now; then six per member. The role is a new member's only:
            // an update keeps the stored role unless the caller named one (set below).
            let values = (0..writes.len())
                .map(|i| {
                    let n = 3 + i * 6;
                    format!(
                        "(${n}, $1, ${}, ${}, ${}, ${}, ${}, $2, $2)",
                        n + 1,
                        n + 2,
                        n + 3,
                        n + 4,
                        n + 5
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO members (id, org_id, external_id, email, display_name, attributes,
                                      role_id, created_at, updated_at)
                 VALUES {values}
                 ON CONFLICT (org_id, external_id) DO UPDATE SET
                     email = excluded.email, display_name = excluded.display_name,
                     attributes = excluded.attributes, updated_at = excluded.updated_at
                 RETURNING id, external_id"
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).bind(org_id).bind(now);
            for (new, attributes, role) in &writes {
                query = query
                    .bind(new_id())
                    .bind(&new.external_id)
                    .bind(&new.email)
                    .bind(&new.display_name)
                    .bind(attributes)
                    .bind(*role);
            }
            // The ids come back from the database, not from what we generated: a member created
            // by the API since the SELECT above keeps its own id.
            let mut returned: HashMap<String, String> = HashMap::with_capacity(writes.len());
            for row in query.fetch_all(&mut *tx).await? {
                returned.insert(row.try_get("external_id")?, row.try_get("id")?);
            }
            for (new, _, _) in &writes {
                let id = returned.remove(&new.external_id).ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "the import of member {:?} returned no row",
                        new.external_id
                    ))
                })?;
                ids.insert(&new.external_id, id);
            }
        }
        for (external_id, role) in role_changes {
            sqlx::query("UPDATE members SET role_id = $1 WHERE org_id = $2 AND external_id = $3")
                .bind(role)
                .bind(org_id)
                .bind(external_id)
                .execute(&mut *tx)
                .await?;
        }
        if sets_managers {
            // Once every row is in, so that a manager written by this batch is found whether
            // their row comes before or after their report's.
            let by_id: Vec<&str> = batch
                .iter()
                .filter_map(|new| match &new.manager {
                    ManagerRef::Id(id) => Some(id.as_str()),
                    _ => None,
                })
                .collect();
            let known_ids = existing_ids(&mut tx, org_id, &by_id).await?;
            let outside: Vec<&str> = batch
                .iter()
                .filter_map(|new| match &new.manager {
                    ManagerRef::ExternalId(external_id)
                        if !ids.contains_key(external_id.as_str()) =>
                    {
                        Some(external_id.as_str())
                    }
                    _ => None,
                })
                .collect();
            let outside_ids = ids_by_external_id(&mut tx, org_id, &outside).await?;
            let mut errors = Vec::new();
            let mut changes: Vec<(&str, Option<&str>)> = Vec::new();
            for new in batch {
                let Some(stored) = stored_managers.get(new.external_id.as_str()) else {
                    continue;
                };
                let id = ids[new.external_id.as_str()].as_str();
                let manager = match &new.manager {
                    ManagerRef::Keep => continue,
                    ManagerRef::Clear => Ok(None),
                    ManagerRef::Id(manager) if manager == id => Err(ManagerProblem::OwnManager),
                    ManagerRef::Id(manager) => known_ids
                        .get(manager)
                        .map(|m| Some(m.as_str()))
                        .ok_or_else(|| ManagerProblem::Unknown(manager.clone())),
                    ManagerRef::ExternalId(manager) if *manager == new.external_id => {
                        Err(ManagerProblem::OwnManager)
                    }
                    ManagerRef::ExternalId(manager) => ids
                        .get(manager.as_str())
                        .or_else(|| outside_ids.get(manager))
                        .map(|m| Some(m.as_str()))
                        .ok_or_else(|| ManagerProblem::Unknown(manager.clone())),
                };
                match manager {
                    Err(problem) => errors.push(ManagerError {
                        external_id: new.external_id.clone(),
                        problem,
                    }),
                    Ok(manager) if manager == stored.as_deref() => {}
                    Ok(manager) => {
                        changes.push((id, manager));
                        let outcome = outcomes
                            .get_mut(new.external_id.as_str())
                            .ok_or_else(|| StoreError::Corrupt("no outcome".into()))?;
                        if *outcome == UpsertOutcome::Unchanged {
                            *outcome = UpsertOutcome::Updated;
                            counts.unchanged -= 1;
                            counts.updated += 1;
                        }
                    }
                }
            }
            if !errors.is_empty() {
                return Err(refused(errors));
            }
            write_managers(&mut tx, org_id, &changes, now).await?;
            let external_ids: HashMap<&str, &str> = ids
                .iter()
                .map(|(external_id, id)| (id.as_str(), *external_id))
                .collect();
            check_loops(&mut tx, org_id, &changes, |id| {
                external_ids.get(id).copied().unwrap_or(id).to_owned()
            })
            .await?;
        }

        let member_id = |new: &ImportedMember| -> Result<&str> {
            ids.get(new.external_id.as_str())
                .map(String::as_str)
                .ok_or_else(|| StoreError::Corrupt(format!("no id for {:?}", new.external_id)))
        };
        let mut devices = Vec::new();
        let mut memberships = Vec::new();
        let mut written = Vec::with_capacity(batch.len());
        for new in batch {
            let id = member_id(new)?;
            written.push((outcomes[new.external_id.as_str()], id.to_owned()));
            for (platform, token) in &new.devices {
                devices.push((id, *platform, token.as_str()));
            }
            for team in &new.teams {
                let set_id = team_ids.get(team).ok_or_else(|| {
                    StoreError::Config(format!(
                        "the team {team:?} was not created before the import"
                    ))
                })?;
                memberships.push((set_id.as_str(), id));
            }
        }
        counts.devices = import_devices(&mut tx, org_id, &devices, now).await?;
        counts.memberships = import_set_members(&mut tx, org_id, &memberships, now).await?;
        tx.commit().await?;
        Ok((counts, written))
    }
}

/// A member as stored, to compare with what is written.
struct Stored {
    id: String,
    email: String,
    display_name: String,
    attributes: String,
    role_id: String,
    manager_id: Option<String>,
}
