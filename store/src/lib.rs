//! Persistence for Pidgr: one module per aggregate, SQLite and PostgreSQL behind one API.
//!
//! The backend is chosen by the URL scheme (`sqlite://…` or `postgres://…`) and reached through
//! sqlx's `Any` driver, so every query is written once. Both dialects share one schema, kept in
//! `migrations/sqlite` and `migrations/postgres`; only portable SQL is used here (`$n`
//! placeholders, `ON CONFLICT`, `RETURNING`), and columns hold only types both backends decode
//! the same way (TEXT, BIGINT): ids are UUID text, timestamps Unix epoch milliseconds.
//!
//! May import: sqlx, serde, chrono, uuid, hashing and signing crates — never another crate of ours.
//! Every query that reads or writes an organisation's data takes that organisation's id.

mod activity_log;
mod audiences;
pub mod audit_chain;
mod audit_events;
mod campaigns;
mod console_sessions;
mod definitions;
mod deliveries;
mod devices;
mod escalations;
mod header_secrets;
mod idempotency;
mod key_rotation;
mod maintenance;
mod managers;
mod member_sets;
mod members;
mod organisations;
mod push_credentials;
mod push_log;
mod roles;
mod secrets;
mod signing_keys;
mod templates;
mod versioned;
mod webhook_channels;
mod webhook_events;

pub use activity_log::{
    ActivityEntry, ActivityKind, FailureGroup, NewActivity, SAMPLE_NAMES, counted, sample_phrase,
};
pub use audiences::{Audience, AudienceMember, AudienceReader, MissingRef, ResolvedAudience};
pub use audit_events::{AuditEvent, AuditPage};
pub use campaigns::{Campaign, CampaignStatus, NewCampaign, Recipient, StartOutcome};
pub use console_sessions::{ConsoleSession, NewConsoleSession};
pub use definitions::{DefinitionVersion, StoredDefinition};
pub use deliveries::{
    ActionAttestation, ActionKind, ActionOutcome, AttestedAction, Delivery, DeliveryCounts,
    DeliveryReport, DeliveryStatus, NotifiedRows, NotifyTarget, ShownMessage,
};
pub use devices::{Device, Platform, masked_token};
pub use escalations::{EscalatedReport, Escalation, EscalationPlan};
pub use header_secrets::{
    HEADER_SECRET_PREFIX, PlainHeadersSealed, WebhookTarget, header_secret_id, mask_webhook_headers,
};
pub use idempotency::{
    ClaimToken, IDEMPOTENCY_CLAIM_TIMEOUT, IDEMPOTENCY_KEY_LIFETIME, IdempotencyClaim,
};
pub use key_rotation::{ROTATION_MAX_PASSES, RotatedTable, RotationReport};
pub use managers::{ManagerError, ManagerProblem, ManagerRef, manager_loop_message};
pub use member_sets::{MemberSet, SetKind};
pub use members::{ImportCounts, ImportedMember, Member, MemberUpdate, NewMember, UpsertOutcome};
pub use organisations::{ApiKey, Authenticated, GeneratedKey, LAST_USED_GRANULARITY, Organisation};
pub use push_credentials::PushCredentials;
pub use push_log::{NewPush, PushRecord};
pub use roles::{Permission, Role, SUPER_ADMIN, SYSTEM_ROLES, SystemRole};
pub use secrets::{Keyring, SecretKey};
pub use signing_keys::{OrganisationSigner, SigningKey};
pub use templates::{Template, TemplateVersion};
pub use webhook_channels::WebhookChannel;
pub use webhook_events::{WebhookAttemptOutcome, WebhookEvent, WebhookEventProgress};

use chrono::{DateTime, TimeZone, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::time::Duration;

/// Which database a [`Store`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::Config(
                "DATABASE_URL must start with sqlite:// or postgres://".into(),
            ))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// The request is well-formed but the current state refuses it (e.g. ACK after MISSED).
    #[error("{0}")]
    Conflict(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Members' managers that break the rules (see [`ManagerProblem`]), in the order written;
    /// nothing was written.
    #[error("{}", .0.iter().map(|e| format!("{}: {e}", e.external_id)).collect::<Vec<_>>().join("; "))]
    Manager(Vec<ManagerError>),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A migration this build carries: its version and file name (`0014_console_sessions`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownMigration {
    pub version: i64,
    pub name: String,
}

/// What [`Store::migration_status`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationStatus {
    /// Every migration this build carries, oldest first.
    pub known: Vec<KnownMigration>,
    /// The versions the database has applied successfully, oldest first.
    pub applied: Vec<i64>,
}

impl MigrationStatus {
    /// Known and not applied: what `pidgr migrate` would apply.
    pub fn pending(&self) -> Vec<&KnownMigration> {
        self.known
            .iter()
            .filter(|m| !self.applied.contains(&m.version))
            .collect()
    }

    /// Applied but unknown to this build: the database was migrated by a newer release.
    pub fn unknown_applied(&self) -> Vec<i64> {
        self.applied
            .iter()
            .copied()
            .filter(|v| !self.known.iter().any(|m| m.version == *v))
            .collect()
    }
}

/// A handle on the database; cheap to clone (it wraps a connection pool).
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The keys that seal secrets at rest; without them, storing or reading such a secret is a
    /// configuration error (everything else works).
    secrets: Option<std::sync::Arc<Keyring>>,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

impl Store {
    /// Connects to `url`. For SQLite the file is created when missing; WAL mode lets the API and
    /// the worker read while one of them writes. The log is checkpointed automatically every
    /// 1,000 pages (about 4 MB) and cut back to 64 MiB whenever it restarts, so a burst that
    /// outran the checkpoints does not leave a huge file behind; [`Store::checkpoint_wal`]
    /// empties it when called.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(30));
        let url = match backend {
            Backend::Sqlite => {
                options = options.max_connections(8).after_connect(|conn, _| {
                    Box::pin(async move {
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA busy_timeout = 30000",
                            "PRAGMA foreign_keys = ON",
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA wal_autocheckpoint = 1000",
                            "PRAGMA journal_size_limit = 67108864",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                        Ok(())
                    })
                });
                if url.contains('?') {
                    url.to_owned()
                } else {
                    format!("{url}?mode=rwc")
                }
            }
            Backend::Postgres => {
                options = options.max_connections(16);
                url.to_owned()
            }
        };
        let pool = options.connect(&url).await?;
        Ok(Store {
            pool,
            backend,
            secrets: None,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies every migration not yet applied, then refreshes the planner's statistics (see
    /// [`Store::optimize`]): a new index is only chosen well once they exist. Safe to run from
    /// several processes at once.
    pub async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        self.optimize().await
    }

    /// Which migrations this build knows and which the database has applied, read without
    /// changing anything (for `pidgr check` and the boot checks; [`Store::migrate`] applies).
    pub async fn migration_status(&self) -> Result<MigrationStatus> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        let known = migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .map(|m| KnownMigration {
                version: m.version,
                name: format!("{:04}_{}", m.version, m.description.replace(' ', "_")),
            })
            .collect();
        // A database never migrated has no bookkeeping table: nothing applied.
        let has_table: i64 = match self.backend {
            Backend::Sqlite => sqlx::query_scalar(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            ),
            Backend::Postgres => sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'",
            ),
        }
        .fetch_one(&self.pool)
        .await?;
        let applied = if has_table == 0 {
            Vec::new()
        } else {
            sqlx::query_scalar(
                "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
            )
            .fetch_all(&self.pool)
            .await?
        };
        Ok(MigrationStatus { known, applied })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Answers whether the database is reachable (readiness probe).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// This process's database connections: `(idle, in use)`, for its metrics.
    pub fn pool_connections(&self) -> (u64, u64) {
        let open = u64::from(self.pool.size());
        let idle = self.pool.num_idle() as u64;
        (idle, open.saturating_sub(idle))
    }

    /// How many campaigns are in each status, every organisation's together: the operator's
    /// gauge, which shows no organisation's data. Every status is listed, zeros included.
    pub async fn count_campaigns_by_status(&self) -> Result<Vec<(CampaignStatus, u64)>> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM campaigns GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        let mut counts: Vec<(CampaignStatus, u64)> = [
            CampaignStatus::Created,
            CampaignStatus::Active,
            CampaignStatus::Completed,
            CampaignStatus::Cancelled,
        ]
        .into_iter()
        .map(|status| (status, 0))
        .collect();
        for row in rows {
            let status = CampaignStatus::parse(&row.try_get::<String, _>("status")?)?;
            let n = row.try_get::<i64, _>("n")?;
            if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == status) {
                slot.1 = u64::try_from(n).unwrap_or(0);
            }
        }
        Ok(counts)
    }

    /// One of the organisation's rows of `table` by id, decoded; [`StoreError::NotFound`] when
    /// it has none with that id.
    async fn row_by_id<T>(
        &self,
        table: &str,
        columns: &str,
        org_id: &str,
        id: &str,
        decode: fn(&AnyRow) -> Result<T>,
    ) -> Result<T> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {columns} FROM {table} WHERE org_id = $1 AND id = $2"
        )))
        .bind(org_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        decode(&row)
    }

    /// A page of the organisation's rows of `table`, by id, after the id `after` ("" for the
    /// first page): UUID v7 ids sort by creation, so pages come oldest first.
    async fn page_by_id<T>(
        &self,
        table: &str,
        columns: &str,
        org_id: &str,
        after: &str,
        limit: i64,
        decode: fn(&AnyRow) -> Result<T>,
    ) -> Result<Vec<T>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {columns} FROM {table} WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        )))
        .bind(org_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(decode)
        .collect()
    }

    /// Starts a write transaction. On SQLite it takes the write lock up front (`BEGIN
    /// IMMEDIATE`): a deferred transaction that reads first and writes later can fail with
    /// SQLITE_BUSY instead of waiting when another process wrote in between.
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }
}

pub(crate) fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_millis(ms: i64) -> Result<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms} out of range")))
}

pub(crate) fn opt_time(row: &AnyRow, column: &str) -> Result<Option<DateTime<Utc>>> {
    row.try_get::<Option<i64>, _>(column)?
        .map(from_millis)
        .transpose()
}

pub(crate) fn time(row: &AnyRow, column: &str) -> Result<DateTime<Utc>> {
    from_millis(row.try_get::<i64, _>(column)?)
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Whether a write failed on a UNIQUE constraint, so the caller can answer with a sentence
/// naming the duplicate instead of a database error.
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

/// `NotFound` unless the statement changed a row: the answer of deletes and updates aimed at
/// one row of an organisation.
pub(crate) fn found(done: sqlx::any::AnyQueryResult) -> Result<()> {
    if done.rows_affected() == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

/// `(…), (…), …`: the placeholders of a multi-row INSERT of `rows` rows of `width` values,
/// bound in order. SQLite gets anonymous `?`: it looks a numbered parameter up by a linear
/// scan, and sqlx looks every one up, so `$n` costs time quadratic in the statement's size
/// (a 500-row insert of deliveries spent 56 ms on it, more than all its other work).
pub(crate) fn value_rows(backend: Backend, rows: usize, width: usize) -> String {
    let mut sql = String::with_capacity(rows * width * 7);
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ",(" });
        for column in 0..width {
            if column > 0 {
                sql.push(',');
            }
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => sql.push_str(&format!("${}", row * width + column + 1)),
            }
        }
        sql.push(')');
    }
    sql
}

/// `$first, $first+1, …` for `count` values: the placeholders of an `IN (…)` list.
pub(crate) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

#[cfg(feature = "testing")]
pub mod testing;
