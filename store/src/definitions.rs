//! Reusable workflow definitions: named per organisation, with append-only versions holding
//! the validated canonical JSON, so a campaign can say exactly which version it runs. Header
//! values of CALL_WEBHOOK steps are sealed as the version is stored, in the same transaction
//! (see `header_secrets`): the stored JSON holds references, never the values, and a refused
//! write leaves no secret behind.

use crate::header_secrets::Sealing;
use crate::versioned::{Head, Versioned, append_versioned_in, create_versioned_in};
use crate::{Result, Store, StoreError, new_id, time};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

const DEFINITIONS: Versioned = Versioned {
    heads: "workflow_definitions",
    versions: "workflow_definition_versions",
    parent: "definition_id",
    noun: "workflow definition",
    payload: &["definition"],
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StoredDefinition {
    pub id: String,
    pub name: String,
    pub latest_version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DefinitionVersion {
    pub definition_id: String,
    pub version: i64,
    /// Parsed from the stored canonical text.
    pub definition: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

impl From<Head> for StoredDefinition {
    fn from(head: Head) -> Self {
        StoredDefinition {
            id: head.id,
            name: head.name,
            latest_version: head.latest_version,
            created_at: head.created_at,
            updated_at: head.updated_at,
        }
    }
}

fn definition_version(row: &AnyRow) -> Result<DefinitionVersion> {
    let text: String = row.try_get("definition")?;
    Ok(DefinitionVersion {
        definition_id: row.try_get("parent_id")?,
        version: row.try_get("version")?,
        definition: serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("stored workflow definition: {e}")))?,
        created_at: time(row, "created_at")?,
    })
}

impl Store {
    /// The payload of a version of definition `definition_id`, inside `tx`: JSON (refused
    /// otherwise, so every stored version can be read back) with its webhook header values
    /// sealed for that definition.
    async fn sealed_payload(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        org_id: &str,
        definition_id: &str,
        definition_json: &str,
    ) -> Result<Vec<String>> {
        let (sealed, _) = self
            .seal_definition_headers_in(tx, org_id, definition_id, definition_json, Sealing::Every)
            .await?;
        Ok(vec![sealed])
    }

    /// Creates a definition with its version 1 (`definition_json` is the validated canonical
    /// form). `Conflict` when the organisation already has a definition with this name.
    pub async fn create_definition(
        &self,
        org_id: &str,
        name: &str,
        definition_json: &str,
    ) -> Result<(StoredDefinition, DefinitionVersion)> {
        let id = new_id();
        let mut tx = self.write_tx().await?;
        let payload = self
            .sealed_payload(&mut tx, org_id, &id, definition_json)
            .await?;
        let (head, row) =
            create_versioned_in(&mut tx, &DEFINITIONS, &id, org_id, name, &payload).await?;
        tx.commit().await?;
        Ok((head.into(), definition_version(&row)?))
    }

    /// Adds the next version (latest + 1); earlier versions never change.
    pub async fn append_definition_version(
        &self,
        org_id: &str,
        definition_id: &str,
        definition_json: &str,
    ) -> Result<DefinitionVersion> {
        let mut tx = self.write_tx().await?;
        let payload = self
            .sealed_payload(&mut tx, org_id, definition_id, definition_json)
            .await?;
        let row =
            append_versioned_in(&mut tx, &DEFINITIONS, org_id, definition_id, &payload).await?;
        tx.commit().await?;
        definition_version(&row)
    }

    pub async fn get_definition(
        &self,
        org_id: &str,
        definition_id: &str,
    ) -> Result<StoredDefinition> {
        Ok(self
            .get_head(&DEFINITIONS, org_id, definition_id)
            .await?
            .into())
    }

    /// Definitions with an id after `after` ("" = from the start), oldest first.
    pub async fn list_definitions(
        &self,
        org_id: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<StoredDefinition>> {
        let heads = self.list_heads(&DEFINITIONS, org_id, after, limit).await?;
        Ok(heads.into_iter().map(StoredDefinition::from).collect())
    }

    pub async fn get_definition_version(
        &self,
        org_id: &str,
        definition_id: &str,
        version: i64,
    ) -> Result<DefinitionVersion> {
        let row = self
            .get_version_row(&DEFINITIONS, org_id, definition_id, version)
            .await?;
        definition_version(&row)
    }

    /// Versions numbered above `after` (0 = from the first), in order. `NotFound` when the
    /// definition is not this organisation's.
    pub async fn list_definition_versions(
        &self,
        org_id: &str,
        definition_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<DefinitionVersion>> {
        self.list_version_rows(&DEFINITIONS, org_id, definition_id, after, limit)
            .await?
            .iter()
            .map(definition_version)
            .collect()
    }
}
