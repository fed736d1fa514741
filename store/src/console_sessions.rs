//! Console sign-in sessions. A session acts as one API key, named by id: the browser holds an
//! opaque random id (only its SHA-256 is stored, as for API keys), and the key's secret is
//! never kept. Revoking the key ends its sessions at their next request, because every request
//! re-reads the key ([`Store::authenticate_key_id`]).

use chrono::{DateTime, TimeDelta, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::{Result, Store, time, to_millis};

/// A live session as its id resolves now.
#[derive(Clone, Debug)]
pub struct ConsoleSession {
    pub org_id: String,
    pub key_id: String,
    /// The token every state-changing console request must carry besides the cookie.
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// A new session: `id` goes into the cookie and exists nowhere else.
#[derive(Debug)]
pub struct NewConsoleSession {
    pub id: String,
    pub session: ConsoleSession,
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn hash_id(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

impl Store {
    /// Opens a session for the key `key_id` that lasts `lifetime`; expired sessions of every
    /// organisation are deleted on the way (the expiry index makes that cheap).
    pub async fn create_console_session(
        &self,
        org_id: &str,
        key_id: &str,
        lifetime: TimeDelta,
    ) -> Result<NewConsoleSession> {
        let now = Utc::now();
        let session = ConsoleSession {
            org_id: org_id.to_owned(),
            key_id: key_id.to_owned(),
            csrf_token: random_hex(),
            expires_at: crate::from_millis(to_millis(now + lifetime))?,
        };
        let id = random_hex();
        sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1")
            .bind(to_millis(now))
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO console_sessions (id_hash, org_id, key_id, csrf_token, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(hash_id(&id))
        .bind(org_id)
        .bind(key_id)
        .bind(&session.csrf_token)
        .bind(to_millis(now))
        .bind(to_millis(session.expires_at))
        .execute(&self.pool)
        .await?;
        Ok(NewConsoleSession { id, session })
    }

    /// The session whose id this is, unless it has expired or never existed.
    pub async fn console_session(&self, id: &str) -> Result<Option<ConsoleSession>> {
        let row = sqlx::query(
            "SELECT org_id, key_id, csrf_token, expires_at FROM console_sessions
             WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(hash_id(id))
        .bind(to_millis(Utc::now()))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(ConsoleSession {
                org_id: row.try_get("org_id")?,
                key_id: row.try_get("key_id")?,
                csrf_token: row.try_get("csrf_token")?,
                expires_at: time(&row, "expires_at")?,
            })
        })
        .transpose()
    }

    /// Ends a session (signing out). Ending one that does not exist is not an error.
    pub async fn end_console_session(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(hash_id(id))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
