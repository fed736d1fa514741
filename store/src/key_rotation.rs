//! Re-sealing every stored secret with the current server key (`pidgr secrets rotate-key`),
//! so that a previous key can then be dropped from the configuration.
//!
//! Rows are read in batches by their key and each one is re-sealed on its own with a
//! compare-and-set (the update applies only if the row still holds what was read), so a crash
//! leaves every row either old or new, both of which open, and a secret rotated meanwhile by its
//! owner is never overwritten. Values are re-sealed into the current format, bound to their row
//! as well as to organisation, table and column. The same run seals the CALL_WEBHOOK header
//! values still stored in clear (definitions and drafts written before sealing existed).
//!
//! A process still running with the previous key as its current one would go on writing under
//! it while the rotation runs, so one pass is not enough to say "everything is current": passes
//! repeat until one finds nothing to change, and a rotation that does not settle within a
//! bounded number of passes is an error that says why. Running it again is safe and reports
//! everything as current.

use std::future::Future;

use serde::Serialize;
use sqlx::Row;

use crate::header_secrets::PlainHeadersSealed;
use crate::secrets::{
    PUSH_CREDENTIALS_SECRET, SIGNING_KEY_SECRET, SecretSlot, WEBHOOK_CHANNEL_PREVIOUS_SECRET,
    WEBHOOK_CHANNEL_SECRET, WEBHOOK_HEADER_SECRET,
};
use crate::{Result, Store, StoreError};

/// Passes a rotation makes before it gives up on rows that keep changing.
pub const ROTATION_MAX_PASSES: u32 = 5;

/// A table holding sealed values: its slot, the SQL expression that identifies a row, and the
/// one that gives the row's part of the associated data.
struct SealedTable {
    slot: SecretSlot,
    row_key: &'static str,
    bound_row: &'static str,
}

const SEALED_TABLES: [SealedTable; 5] = [
    SealedTable {
        slot: WEBHOOK_CHANNEL_SECRET,
        row_key: "org_id",
        bound_row: "org_id",
    },
    SealedTable {
        slot: WEBHOOK_CHANNEL_PREVIOUS_SECRET,
        row_key: "org_id",
        bound_row: "org_id",
    },
    SealedTable {
        slot: PUSH_CREDENTIALS_SECRET,
        row_key: "org_id || '|' || provider",
        bound_row: "provider",
    },
    SealedTable {
        slot: WEBHOOK_HEADER_SECRET,
        row_key: "id",
        bound_row: "id || '|' || COALESCE(owner_id, '')",
    },
    SealedTable {
        slot: SIGNING_KEY_SECRET,
        row_key: "id",
        bound_row: "id",
    },
];

/// What a rotation did to one table's sealed column, over all its passes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RotatedTable {
    pub table: &'static str,
    pub column: &'static str,
    /// Re-sealed with the current key by this run.
    pub resealed: u64,
    /// Already sealed with the current key in the current format when the first pass read
    /// them (before this run changed anything).
    pub already_current: u64,
    /// Changed by someone else between a pass's read and its write: left as they were and
    /// looked at again by the next pass.
    pub changed_meanwhile: u64,
}

/// What `pidgr secrets rotate-key` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RotationReport {
    pub tables: Vec<RotatedTable>,
    /// Plain CALL_WEBHOOK header values sealed, over all passes.
    pub plain_headers: PlainHeadersSealed,
    /// Passes made; the last one found nothing to change.
    pub passes: u32,
}

/// What one pass changed.
struct Pass {
    tables: Vec<RotatedTable>,
    plain_headers: PlainHeadersSealed,
}

impl Pass {
    fn changed_anything(&self) -> bool {
        self.plain_headers.changed_anything()
            || self
                .tables
                .iter()
                .any(|t| t.resealed > 0 || t.changed_meanwhile > 0)
    }
}

impl Store {
    /// Re-seals every sealed value of every table with the current key and seals plain header
    /// values, `batch_size` rows per read, pass after pass until one finds nothing to change
    /// (at most [`ROTATION_MAX_PASSES`]). Stops at the first value that does not open (its
    /// error names the reason); what was re-sealed before stays so, and a second run resumes.
    pub async fn rotate_secret_key(&self, batch_size: i64) -> Result<RotationReport> {
        self.rotate_secret_key_observed(batch_size, ROTATION_MAX_PASSES, |_| async {})
            .await
    }

    /// [`Store::rotate_secret_key`] with `after_pass` awaited after each pass that changed
    /// something (given the pass number, from 1), so a test can write between passes as a
    /// process still on the old key would. `Conflict` when the pass numbered `max_passes` still
    /// changed something.
    pub async fn rotate_secret_key_observed<F, Fut>(
        &self,
        batch_size: i64,
        max_passes: u32,
        mut after_pass: F,
    ) -> Result<RotationReport>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut report = RotationReport::default();
        for number in 1..=max_passes.max(1) {
            let pass = self.rotation_pass(batch_size).await?;
            let changed = pass.changed_anything();
            report.passes = number;
            report.plain_headers.definition_versions += pass.plain_headers.definition_versions;
            report.plain_headers.campaigns += pass.plain_headers.campaigns;
            report.plain_headers.values += pass.plain_headers.values;
            report.plain_headers.changed_meanwhile += pass.plain_headers.changed_meanwhile;
            if report.tables.is_empty() {
                report.tables = pass.tables;
            } else {
                for (total, this) in report.tables.iter_mut().zip(pass.tables) {
                    total.resealed += this.resealed;
                    total.changed_meanwhile += this.changed_meanwhile;
                }
            }
            if !changed {
                return Ok(report);
            }
            after_pass(number).await;
        }
        Err(StoreError::Conflict(format!(
            "stored secrets were still being written under another key after {} passes: a \
             process (API or worker) is probably still running with the previous key as \
             PIDGR_SECRET_KEY; restart every process with the new key and run the rotation again",
            report.passes
        )))
    }

    /// One read of every sealed table and every place plain header values may be stored.
    async fn rotation_pass(&self, batch_size: i64) -> Result<Pass> {
        let keyring = self.keyring()?;
        let mut tables = Vec::new();
        for table in &SEALED_TABLES {
            let SecretSlot {
                table: name,
                column,
            } = table.slot;
            let mut done = RotatedTable {
                table: name,
                column,
                ..RotatedTable::default()
            };
            let mut after = String::new();
            loop {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {key} AS row_key, {bound} AS bound_row, org_id, {column} AS sealed
                     FROM {name} WHERE {key} > $1 AND {column} IS NOT NULL
                     ORDER BY {key} LIMIT $2",
                    key = table.row_key,
                    bound = table.bound_row,
                )))
                .bind(&after)
                .bind(batch_size.max(1))
                .fetch_all(&self.pool)
                .await?;
                let Some(last) = rows.last() else { break };
                after = last.try_get("row_key")?;
                for row in &rows {
                    let sealed: String = row.try_get("sealed")?;
                    if keyring.is_current(&sealed) {
                        done.already_current += 1;
                        continue;
                    }
                    let org_id: String = row.try_get("org_id")?;
                    let row_key: String = row.try_get("row_key")?;
                    let bound_row: String = row.try_get("bound_row")?;
                    let plain = keyring.open(&org_id, table.slot, &bound_row, &sealed)?;
                    let resealed = keyring.seal(&org_id, table.slot, &bound_row, &plain)?;
                    let updated = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE {name} SET {column} = $1 WHERE {key} = $2 AND {column} = $3",
                        key = table.row_key
                    )))
                    .bind(resealed)
                    .bind(&row_key)
                    .bind(&sealed)
                    .execute(&self.pool)
                    .await?;
                    if updated.rows_affected() == 1 {
                        done.resealed += 1;
                    } else {
                        done.changed_meanwhile += 1;
                    }
                }
            }
            tables.push(done);
        }
        let plain_headers = self.seal_plain_stored_headers(batch_size).await?;
        Ok(Pass {
            tables,
            plain_headers,
        })
    }
}
