//! Re-sealing every stored secret with the current server key (`pidgr secrets rotate-key`),
//! so that a previous key can then be dropped from the configuration.
//!
//! Rows are read in batches by their key and each one is re-sealed on its own with a
//! compare-and-set (the update applies only if the row still holds what was read), so a crash
//! leaves every row either old or new, both of which open, and a secret rotated meanwhile by its
//! owner is never overwritten. A run skips what is already current: running it again is safe
//! and reports everything as current.

use serde::Serialize;
use sqlx::Row;

use crate::secrets::{
    PUSH_CREDENTIALS_SECRET, SecretSlot, WEBHOOK_CHANNEL_SECRET, WEBHOOK_HEADER_SECRET,
};
use crate::{Result, Store};

/// A table holding sealed values: its slot and the SQL expression that identifies a row.
struct SealedTable {
    slot: SecretSlot,
    row_key: &'static str,
}

const SEALED_TABLES: [SealedTable; 3] = [
    SealedTable {
        slot: WEBHOOK_CHANNEL_SECRET,
        row_key: "org_id",
    },
    SealedTable {
        slot: PUSH_CREDENTIALS_SECRET,
        row_key: "org_id || '|' || provider",
    },
    SealedTable {
        slot: WEBHOOK_HEADER_SECRET,
        row_key: "id",
    },
];

/// What a rotation did to one table's sealed column.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RotatedTable {
    pub table: &'static str,
    pub column: &'static str,
    /// Re-sealed with the current key by this run.
    pub resealed: u64,
    /// Already sealed with the current key in the current format.
    pub already_current: u64,
    /// Changed by someone else between this run's read and its write (already re-sealed by
    /// them with the current key): left as they were.
    pub changed_meanwhile: u64,
}

impl Store {
    /// Re-seals every sealed value of every table with the current key, `batch_size` rows per
    /// read. Stops at the first value that does not open (its error names the reason); what
    /// was re-sealed before stays so, and a second run resumes.
    pub async fn rotate_secret_key(&self, batch_size: i64) -> Result<Vec<RotatedTable>> {
        let keyring = self.keyring()?;
        let mut report = Vec::new();
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
                    "SELECT {key} AS row_key, org_id, {column} AS sealed FROM {name}
                     WHERE {key} > $1 ORDER BY {key} LIMIT $2",
                    key = table.row_key
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
                    let plain = keyring.open(&org_id, table.slot, &sealed)?;
                    let resealed = keyring.seal(&org_id, table.slot, &plain)?;
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
            report.push(done);
        }
        Ok(report)
    }
}
