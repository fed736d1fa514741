//! Members' managers: each member may report to another member of the same organisation. The
//! rules, held on every path that sets one (create, update, the writes by external id and the
//! bulk import): the manager is a member of the organisation, not the member themself, and no
//! chain of managers comes back to where it started. Deleting a manager leaves their reports
//! without one.

use crate::members::{MEMBER_COLUMNS, Member, member};
use crate::{Backend, Result, Store, StoreError, placeholders, to_millis};
use chrono::Utc;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};
use std::collections::{BTreeSet, HashMap};

/// How a write by external id (the import, `PUT /v1/members/by-external-id/…`, the bulk route)
/// treats the member's manager.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ManagerRef {
    /// Leaves the manager as stored (none for a new member): the field or column was absent.
    #[default]
    Keep,
    /// No manager.
    Clear,
    /// The member with this id.
    Id(String),
    /// The member with this external id, who may be written by the same batch (before or after
    /// this row): references are resolved once the whole batch is in.
    ExternalId(String),
}

/// Why a member's manager is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManagerProblem {
    /// No member of the organisation has this id (or external id, by [`ManagerRef::ExternalId`]).
    /// A member of another organisation is unknown here like any other id.
    Unknown(String),
    /// A member cannot be their own manager.
    OwnManager,
    /// The chain of managers above the member would come back to them: the external ids
    /// around the loop, starting with the member's.
    Cycle(Vec<String>),
}

/// One refused manager: whose (the member's external id) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagerError {
    pub external_id: String,
    pub problem: ManagerProblem,
}

impl std::fmt::Display for ManagerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.problem {
            ManagerProblem::Unknown(reference) => write!(
                f,
                "no member of this organisation is {reference:?}, so it cannot be a manager"
            ),
            ManagerProblem::OwnManager => f.write_str("a member cannot be their own manager"),
            ManagerProblem::Cycle(chain) => f.write_str(&manager_loop_message(chain)),
        }
    }
}

/// The sentence for a loop of managers, `around` being the external ids from one member of
/// the loop round (the first not repeated): every way into the directory says it alike.
pub fn manager_loop_message(around: &[impl AsRef<str>]) -> String {
    let mut names: Vec<&str> = around.iter().map(AsRef::as_ref).collect();
    names.extend(names.first().copied());
    format!(
        "the chain of managers would loop (by external id: {})",
        names.join(" → ")
    )
}

/// Every refused manager of one write, in the order of the rows written.
pub(crate) fn refused(errors: Vec<ManagerError>) -> StoreError {
    StoreError::Manager(errors)
}

/// How far [`loop_from`] follows a chain to describe a loop already known to exist.
const MAX_CHAIN_SHOWN: usize = 64;

/// Serialises the writes that set managers within one organisation, so that two of them
/// cannot each pass the loop check and make a loop together (A under B beside B under A).
/// Every such transaction takes it first, before it locks or writes any row: one that updated
/// a member and then waited here could wait on a holder that waits for that member's row.
/// SQLite's write transaction already holds the database's one write lock.
pub(crate) async fn lock_managers(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    org_id: &str,
) -> Result<()> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("pidgr.members.managers:{org_id}"))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Which of `ids` are the organisation's members.
pub(crate) async fn existing_ids(
    tx: &mut Transaction<'static, Any>,
    org_id: &str,
    ids: &[&str],
) -> Result<BTreeSet<String>> {
    let mut found = BTreeSet::new();
    for chunk in ids.chunks(crate::members::IMPORT_ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT id FROM members WHERE org_id = $1 AND id IN ({})",
            placeholders(2, chunk.len())
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(org_id);
        for id in chunk {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&mut **tx).await? {
            found.insert(row.try_get("id")?);
        }
    }
    Ok(found)
}

/// The ids of the organisation's members with these external ids, by external id.
pub(crate) async fn ids_by_external_id(
    tx: &mut Transaction<'static, Any>,
    org_id: &str,
    external_ids: &[&str],
) -> Result<HashMap<String, String>> {
    let mut found = HashMap::new();
    for chunk in external_ids.chunks(crate::members::IMPORT_ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT id, external_id FROM members WHERE org_id = $1 AND external_id IN ({})",
            placeholders(2, chunk.len())
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(org_id);
        for id in chunk {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&mut **tx).await? {
            found.insert(row.try_get("external_id")?, row.try_get("id")?);
        }
    }
    Ok(found)
}

/// Sets the manager of each `(member id, manager id or None)` and bumps its `updated_at`; one
/// statement per [`crate::members::IMPORT_ROWS_PER_STATEMENT`] members.
pub(crate) async fn write_managers(
    tx: &mut Transaction<'static, Any>,
    org_id: &str,
    changes: &[(&str, Option<&str>)],
    now: i64,
) -> Result<()> {
    for chunk in changes.chunks(crate::members::IMPORT_ROWS_PER_STATEMENT) {
        // $1 organisation, $2 now, then (id, manager) pairs for the CASE, then the ids again.
        let arms: String = (0..chunk.len())
            .map(|i| format!(" WHEN ${} THEN ${}", 3 + 2 * i, 4 + 2 * i))
            .collect();
        let sql = format!(
            "UPDATE members SET manager_id = CASE id{arms} END, updated_at = $2
             WHERE org_id = $1 AND id IN ({})",
            placeholders(3 + 2 * chunk.len(), chunk.len())
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(org_id).bind(now);
        for (id, manager) in chunk {
            query = query.bind(*id).bind(*manager);
        }
        for (id, _) in chunk {
            query = query.bind(*id);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Of the members `starts` (whose managers were just written), those now on a loop of
/// managers, each with the loop's external ids from them round. Before the write there was no
/// loop, so any loop now passes through a member just written: looking up from each of them
/// finds every one. The recursive walk keeps distinct (start, member) pairs only, so it ends
/// even where a chain runs into a loop that does not include its start.
pub(crate) async fn loops_through(
    tx: &mut Transaction<'static, Any>,
    org_id: &str,
    starts: &[&str],
) -> Result<HashMap<String, Vec<String>>> {
    let mut looping = HashMap::new();
    for chunk in starts.chunks(crate::members::IMPORT_ROWS_PER_STATEMENT) {
        let sql = format!(
            "WITH RECURSIVE chain(start_id, id) AS (
                 SELECT id, manager_id FROM members
                 WHERE org_id = $1 AND manager_id IS NOT NULL AND id IN ({})
               UNION
                 SELECT chain.start_id, m.manager_id FROM chain
                 JOIN members m ON m.org_id = $1 AND m.id = chain.id
                 WHERE m.manager_id IS NOT NULL AND chain.id <> chain.start_id
             )
             SELECT start_id FROM chain WHERE id = start_id",
            placeholders(2, chunk.len())
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(org_id);
        for id in chunk {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&mut **tx).await? {
            let start: String = row.try_get("start_id")?;
            let around = loop_from(tx, org_id, &start).await?;
            looping.insert(start, around);
        }
    }
    Ok(looping)
}

/// The external ids around the loop through `start`, from `start` on (at most
/// [`MAX_CHAIN_SHOWN`] of them).
async fn loop_from(
    tx: &mut Transaction<'static, Any>,
    org_id: &str,
    start: &str,
) -> Result<Vec<String>> {
    let mut around = Vec::new();
    let mut at = start.to_owned();
    while around.len() < MAX_CHAIN_SHOWN {
        let row = sqlx::query(
            "SELECT external_id, manager_id FROM members WHERE org_id = $1 AND id = $2",
        )
        .bind(org_id)
        .bind(&at)
        .fetch_one(&mut **tx)
        .await?;
        around.push(row.try_get("external_id")?);
        match row.try_get::<Option<String>, _>("manager_id")? {
            Some(next) if next != start => at = next,
            _ => break,
        }
    }
    Ok(around)
}

/// Makes `member_id` report to `manager_id` (or to no one) inside `tx`, holding the rules;
/// `external_id` names the member in a refusal. With a manager, the caller took
/// [`lock_managers`] when `tx` began.
pub(crate) async fn set_manager(
    tx: &mut Transaction<'static, Any>,
    org_id: &str,
    member_id: &str,
    external_id: &str,
    manager_id: Option<&str>,
) -> Result<()> {
    let refuse = |problem| {
        refused(vec![ManagerError {
            external_id: external_id.to_owned(),
            problem,
        }])
    };
    if let Some(manager_id) = manager_id {
        if manager_id == member_id {
            return Err(refuse(ManagerProblem::OwnManager));
        }
        if existing_ids(tx, org_id, &[manager_id]).await?.is_empty() {
            return Err(refuse(ManagerProblem::Unknown(manager_id.to_owned())));
        }
    }
    let now = to_millis(Utc::now());
    write_managers(tx, org_id, &[(member_id, manager_id)], now).await?;
    if manager_id.is_some()
        && let Some(around) = loops_through(tx, org_id, &[member_id])
            .await?
            .remove(member_id)
    {
        return Err(refuse(ManagerProblem::Cycle(around)));
    }
    Ok(())
}

impl Store {
    /// A page of the members whose manager is `manager_id`, by id; NotFound unless the
    /// organisation has that member.
    pub async fn list_reports(
        &self,
        org_id: &str,
        manager_id: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<Member>> {
        sqlx::query("SELECT id FROM members WHERE org_id = $1 AND id = $2")
            .bind(org_id)
            .bind(manager_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {MEMBER_COLUMNS} FROM members
             WHERE org_id = $1 AND manager_id = $2 AND id > $3 ORDER BY id LIMIT $4"
        )))
        .bind(org_id)
        .bind(manager_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(member)
        .collect()
    }

    /// The manager of each of `member_ids` that has one, by the member's id (members unknown
    /// to the organisation, or without a manager, are left out).
    pub async fn managers_of(
        &self,
        org_id: &str,
        member_ids: &[&str],
    ) -> Result<HashMap<String, Member>> {
        let columns = MEMBER_COLUMNS
            .split(", ")
            .map(|column| format!("m.{column}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut found = HashMap::new();
        for chunk in member_ids.chunks(crate::members::IMPORT_ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT r.id AS report_id, {columns} FROM members r
                 JOIN members m ON m.org_id = r.org_id AND m.id = r.manager_id
                 WHERE r.org_id = $1 AND r.id IN ({})",
                placeholders(2, chunk.len())
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).bind(org_id);
            for id in chunk {
                query = query.bind(*id);
            }
            for row in query.fetch_all(&self.pool).await? {
                found.insert(row.try_get("report_id")?, member(&row)?);
            }
        }
        Ok(found)
    }

    /// Sets managers by external id, `(member's external id, manager's external id or None)`,
    /// in one transaction, all or nothing: the import's last step for the rows whose manager
    /// comes later in the file than the batch they were written in. Every member named must
    /// exist; the rules hold as on every other path ([`StoreError::Manager`] lists each refusal).
    pub async fn assign_managers(
        &self,
        org_id: &str,
        assignments: &[(String, Option<String>)],
    ) -> Result<()> {
        if assignments.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        lock_managers(&mut tx, self.backend, org_id).await?;
        let mut named: Vec<&str> = Vec::with_capacity(assignments.len() * 2);
        for (member, manager) in assignments {
            named.push(member);
            named.extend(manager.as_deref());
        }
        named.sort_unstable();
        named.dedup();
        let ids = ids_by_external_id(&mut tx, org_id, &named).await?;
        let mut errors = Vec::new();
        let mut changes = Vec::with_capacity(assignments.len());
        for (member, manager) in assignments {
            let problem = match (ids.get(member), manager) {
                (None, _) => Some(ManagerProblem::Unknown(member.clone())),
                (Some(_), Some(manager)) if manager == member => Some(ManagerProblem::OwnManager),
                (Some(_), Some(manager)) if !ids.contains_key(manager) => {
                    Some(ManagerProblem::Unknown(manager.clone()))
                }
                (Some(id), manager) => {
                    changes.push((id.as_str(), manager.as_ref().map(|m| ids[m].as_str())));
                    None
                }
            };
            if let Some(problem) = problem {
                errors.push(ManagerError {
                    external_id: member.clone(),
                    problem,
                });
            }
        }
        if !errors.is_empty() {
            return Err(refused(errors));
        }
        write_managers(&mut tx, org_id, &changes, to_millis(Utc::now())).await?;
        let external_ids: HashMap<&str, &str> = ids
            .iter()
            .map(|(external_id, id)| (id.as_str(), external_id.as_str()))
            .collect();
        check_loops(&mut tx, org_id, &changes, |id| {
            external_ids.get(id).copied().unwrap_or(id).to_owned()
        })
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Refuses the write when any of the members whose manager was set is now on a loop, naming
/// each (in the order of `changes`) by `external_id_of` its id.
pub(crate) async fn check_loops(
    tx: &mut Transaction<'static, Any>,
    org_id: &str,
    changes: &[(&str, Option<&str>)],
    external_id_of: impl Fn(&str) -> String,
) -> Result<()> {
    let starts: Vec<&str> = changes
        .iter()
        .filter(|(_, manager)| manager.is_some())
        .map(|(id, _)| *id)
        .collect();
    let mut looping = loops_through(tx, org_id, &starts).await?;
    if looping.is_empty() {
        return Ok(());
    }
    let errors = starts
        .iter()
        .filter_map(|id| {
            looping.remove(*id).map(|around| ManagerError {
                external_id: external_id_of(id),
                problem: ManagerProblem::Cycle(around),
            })
        })
        .collect();
    Err(refused(errors))
}
