//! Housekeeping that keeps query cost flat as the data grows: fresh planner statistics on both
//! backends, and a SQLite write-ahead log that does not grow without bound.
//!
//! Neither runs by itself: the binary calls both every few minutes, [`Store::migrate`] calls
//! [`Store::optimize`] once, and whoever writes many rows at once (a campaign's deliveries) may
//! call [`Store::optimize`] when done, so the planner sees the new sizes before the next page.

use crate::{Backend, Result, Store};
use sqlx::Row;

/// Rows SQLite's ANALYZE samples per index: approximate statistics at a bounded cost (a few
/// milliseconds whatever the table's size), enough to choose between our indexes.
const SQLITE_ANALYSIS_LIMIT: i64 = 1000;

/// How long a WAL checkpoint may wait for the writer lock or for readers to move on. Writers
/// queue behind a waiting TRUNCATE checkpoint, so it must give up quickly; the next one
/// retries.
const CHECKPOINT_BUSY_TIMEOUT_MS: i64 = 1000;

/// The tables the hot queries read (ACK intake, fan-out pages, progress counts,
/// authentication): the ones PostgreSQL's [`Store::optimize`] analyses.
const HOT_TABLES: &str = "deliveries, campaigns, devices, members, member_set_members, \
     api_keys, roles, actions, webhook_events";

impl Store {
    /// Refreshes the query planner's statistics where they are missing or stale.
    ///
    /// SQLite: the first time (no statistics at all) a full `ANALYZE`, then `PRAGMA optimize`,
    /// which re-analyses only tables never analysed or whose size changed about 25-fold since,
    /// and is nearly free otherwise. Both sample at most [`SQLITE_ANALYSIS_LIMIT`] rows per index.
    /// PostgreSQL: `ANALYZE` of the hot tables, which samples a bounded number of rows per table
    /// (autovacuum does the same, but only once it notices; a campaign's deliveries written in a
    /// burst should be seen at once).
    ///
    /// Safe to call from several processes at once, and cheap enough to call every few minutes
    /// and after writing many deliveries.
    pub async fn optimize(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        match self.backend {
            Backend::Sqlite => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "PRAGMA analysis_limit = {SQLITE_ANALYSIS_LIMIT}"
                )))
                .execute(&mut *conn)
                .await?;
                // sqlite_stat1 exists once ANALYZE ran, and stays empty while every table is.
                let analysed = sqlx::query(
                    "SELECT 1 AS one FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'",
                )
                .fetch_optional(&mut *conn)
                .await?
                .is_some()
                    && sqlx::query("SELECT 1 AS one FROM sqlite_stat1 LIMIT 1")
                        .fetch_optional(&mut *conn)
                        .await?
                        .is_some();
                // 0x10002: analyse what may benefit (0x02), looking at every table rather than
                // only those this pooled connection happened to query (0x10000).
                let sql = if analysed {
                    "PRAGMA optimize = 0x10002"
                } else {
                    "ANALYZE"
                };
                sqlx::query(sql).execute(&mut *conn).await?;
            }
            Backend::Postgres => {
                sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE {HOT_TABLES}")))
                    .execute(&mut *conn)
                    .await?;
            }
        }
        Ok(())
    }

    /// Copies SQLite's write-ahead log into the database and truncates it to nothing
    /// (`PRAGMA wal_checkpoint(TRUNCATE)`). The automatic checkpoints keep the log short only
    /// while they find a moment without readers; under a steady stream of requests they may
    /// not, and the log then grows until one does (`journal_size_limit` shrinks it back after
    /// the next reset). Answers whether the log was reset; false when readers or a writer held
    /// on for longer than a second, so the call never stalls writers for long — the next call
    /// tries again. Always true on PostgreSQL, which has nothing to do here.
    pub async fn checkpoint_wal(&self) -> Result<bool> {
        if self.backend != Backend::Sqlite {
            return Ok(true);
        }
        // A connection taken out of the pool and closed afterwards: the short timeout must
        // never reach a pooled connection, not even when this future is dropped halfway.
        let mut conn = self.pool.acquire().await?.detach();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA busy_timeout = {CHECKPOINT_BUSY_TIMEOUT_MS}"
        )))
        .execute(&mut conn)
        .await?;
        let checkpoint = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut conn)
            .await;
        let _ = sqlx::Connection::close(conn).await;
        // One row: busy (1 when it could not finish), pages in the log, pages checkpointed.
        let busy: i64 = checkpoint?.try_get(0)?;
        Ok(busy == 0)
    }
}
