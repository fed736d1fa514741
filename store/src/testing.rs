//! Scratch databases for tests: each test gets a database of its own.

use crate::{Backend, Result, SecretKey, Store, StoreError};
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe, Connection, Row};
use std::collections::BTreeMap;

/// The environment variable naming a PostgreSQL server for tests (any database on it; each test
/// creates and uses a fresh one). Unset: PostgreSQL tests are skipped, and say so.
pub const POSTGRES_URL_VAR: &str = "PIDGR_TEST_POSTGRES_URL";

/// A migrated store on a fresh SQLite file in the system's temporary folder.
pub async fn sqlite() -> Result<Store> {
    let path = std::env::temp_dir().join(format!("pidgr-test-{}.db", uuid::Uuid::new_v4()));
    let store = Store::connect(&format!("sqlite://{}", path.display())).await?;
    store.migrate().await?;
    Ok(store)
}

/// A migrated store on a fresh PostgreSQL database, or `None` when no server is configured.
pub async fn postgres() -> Result<Option<Store>> {
    let Ok(base) = std::env::var(POSTGRES_URL_VAR) else {
        return Ok(None);
    };
    Ok(Some(postgres_at(&base).await?))
}

/// A migrated store on a fresh database created on the server `base_url` points at.
pub async fn postgres_at(base_url: &str) -> Result<Store> {
    let store = Store::connect(&fresh_postgres_database(base_url).await?).await?;
    store.migrate().await?;
    Ok(store)
}

/// Creates an empty database on the server `base_url` points at; returns its URL.
pub async fn fresh_postgres_database(base_url: &str) -> Result<String> {
    sqlx::any::install_default_drivers();
    let name = format!("pidgr_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = AnyConnection::connect(base_url).await?;
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    let (server, _database) = base_url
        .rsplit_once('/')
        .ok_or_else(|| StoreError::Config(format!("{POSTGRES_URL_VAR} has no database path")))?;
    Ok(format!("{server}/{name}"))
}

/// The number of rows in each of our tables (every table but sqlx's own bookkeeping), so a test
/// can show a refused request wrote nothing anywhere. Tables come from the catalogue, so a table
/// added by a later migration is counted without anyone remembering to list it.
pub async fn row_counts(store: &Store) -> Result<BTreeMap<String, i64>> {
    let catalogue = match store.backend {
        Backend::Sqlite => {
            "SELECT name FROM sqlite_master
             WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
               AND name <> '_sqlx_migrations'"
        }
        // information_schema names are of a domain type the Any driver cannot decode: cast.
        Backend::Postgres => {
            "SELECT CAST(table_name AS TEXT) AS name FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'
               AND table_name <> '_sqlx_migrations'"
        }
    };
    let mut counts = BTreeMap::new();
    for row in sqlx::query(catalogue).fetch_all(&store.pool).await? {
        let table: String = row.try_get("name")?;
        // Quoted as an identifier: the name comes from the catalogue, not from input, but a
        // quote inside it must still not end the identifier.
        let quoted = format!("\"{}\"", table.replace('"', "\"\""));
        let count: i64 = sqlx::query(AssertSqlSafe(format!("SELECT COUNT(*) AS n FROM {quoted}")))
            .fetch_one(&store.pool)
            .await?
            .try_get("n")?;
        counts.insert(table, count);
    }
    Ok(counts)
}

/// The store's connection pool, for tests that must look at or damage raw rows (that a secret
/// is not stored in clear, that a tampered one is refused).
pub fn pool(store: &Store) -> &AnyPool {
    &store.pool
}

/// `plaintext` sealed in the `v1` format older servers wrote (bound to the organisation only,
/// no key id), so a test can store such a row and show it still opens and gets rotated.
pub fn seal_v1(key: &SecretKey, org_id: &str, plaintext: &str) -> String {
    key.seal_v1(org_id, plaintext)
}

/// A transaction holding the lock every write of an organisation's managers takes first (a
/// PostgreSQL advisory lock; on SQLite, nothing), for tests of the order writes take locks in.
pub async fn hold_managers_lock(
    store: &Store,
    org_id: &str,
) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
    let mut tx = store.pool.begin().await?;
    crate::managers::lock_managers(&mut tx, store.backend, org_id).await?;
    Ok(tx)
}
