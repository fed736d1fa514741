//! Scratch databases for tests: each test gets a database of its own.

use crate::{Result, Store, StoreError};
use sqlx::{AnyConnection, AssertSqlSafe, Connection};

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
    let store = Store::connect(&format!("{server}/{name}")).await?;
    store.migrate().await?;
    Ok(store)
}
