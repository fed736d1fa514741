//! CALL_WEBHOOK header values, sealed at rest. A header such as `Authorization: Bearer …` is a
//! credential: it must not travel in clear through Temporal (workflow and activity inputs are
//! visible to every Web UI user) nor come back in API answers. So when a definition enters the
//! store, each header value is sealed into `webhook_header_secrets`, in the same transaction as
//! the definition or campaign that holds it, and the stored definition keeps only a reference,
//! `secret:<id>`.
//!
//! Each secret belongs to an owner: the stored definition (its id) or the inline campaign (its
//! id) it was sealed for. The owner is recorded in the row and bound into the sealed value, and
//! the activity opens a reference only when it reads it from the campaign's own stored
//! definition and the campaign is, or was created from, the owner: whatever a workflow's input
//! says, a secret goes only where the definition that holds it sends it.
//!
//! A value that is not a reference is sent as it is: campaigns stored before sealing existed
//! keep their plain values (until `pidgr secrets rotate-key` seals them), and their recorded
//! histories still replay.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use crate::secrets::WEBHOOK_HEADER_SECRET;
use crate::versioned::now;
use crate::{Result, Store, StoreError, new_id};

/// What a sealed header value is replaced with in a stored definition, before the row's id.
pub const HEADER_SECRET_PREFIX: &str = "secret:";

/// The id a header value refers to, when it is a reference (`secret:` and a UUID).
pub fn header_secret_id(value: &str) -> Option<&str> {
    value
        .strip_prefix(HEADER_SECRET_PREFIX)
        .filter(|id| uuid::Uuid::parse_str(id).is_ok())
}

/// Every CALL_WEBHOOK step's `config.headers` object in a definition's JSON.
fn webhook_headers_mut(definition: &mut Value) -> Vec<&mut serde_json::Map<String, Value>> {
    let Some(steps) = definition.get_mut("steps").and_then(Value::as_array_mut) else {
        return Vec::new();
    };
    steps
        .iter_mut()
        .filter(|step| step.get("type").and_then(Value::as_str) == Some("CALL_WEBHOOK"))
        .filter_map(|step| step.pointer_mut("/config/headers")?.as_object_mut())
        .collect()
}

/// Replaces every CALL_WEBHOOK header value of a definition's JSON by `mask` (names stay), for
/// answers that show a definition: neither a value nor a reference is ever shown.
pub fn mask_webhook_headers(definition: &mut Value, mask: &str) {
    for headers in webhook_headers_mut(definition) {
        for value in headers.values_mut() {
            *value = Value::String(mask.to_owned());
        }
    }
}

/// The associated-data row of a header secret: its id and its owner ("" when none was
/// recorded).
fn header_secret_row(id: &str, owner_id: Option<&str>) -> String {
    format!("{id}|{}", owner_id.unwrap_or(""))
}

/// Which header values a sealing pass replaces.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sealing {
    /// Every value, one shaped like a reference too (it is then sent as written), so a
    /// definition can never point at a secret its author did not give: what new definitions get.
    Every,
    /// Only values that are not references yet: what `rotate-key` does to rows stored before
    /// sealing existed.
    PlainOnly,
}

/// A CALL_WEBHOOK step as its campaign's stored definition has it, header values opened.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    /// The campaign's internal name, as stored (the payload names the campaign with it).
    pub campaign_name: String,
    pub url: String,
    pub headers: BTreeMap<String, String>,
}

impl std::fmt::Debug for WebhookTarget {
    // Header values are secrets: only their names are ever printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("campaign_name", &self.campaign_name)
            .field("url", &"..")
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What sealing the plain header values of stored rows did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PlainHeadersSealed {
    /// Definition versions whose plain header values were sealed.
    pub definition_versions: u64,
    /// Campaigns not yet started (CREATED) whose plain header values were sealed.
    pub campaigns: u64,
    /// Header values sealed, over all of them.
    pub values: u64,
    /// Rows changed by someone else between this pass's read and its write: left as they
    /// were, for the next pass.
    pub changed_meanwhile: u64,
}

impl PlainHeadersSealed {
    pub fn changed_anything(&self) -> bool {
        self.values > 0 || self.changed_meanwhile > 0
    }
}

impl Store {
    /// Seals the CALL_WEBHOOK header values of `definition_json` chosen by `which` for
    /// `org_id`, owned by `owner_id`, inside `tx`, and returns the definition with
    /// `secret:<id>` in their place and how many values were sealed. A definition with nothing
    /// to seal comes back unchanged and needs no secret key.
    pub(crate) async fn seal_definition_headers_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        org_id: &str,
        owner_id: &str,
        definition_json: &str,
        which: Sealing,
    ) -> Result<(String, u64)> {
        let mut definition: Value = serde_json::from_str(definition_json).map_err(|e| {
            StoreError::Conflict(format!("the workflow definition is not valid JSON: {e}"))
        })?;
        let mut values: Vec<&mut Value> = webhook_headers_mut(&mut definition)
            .into_iter()
            .flat_map(|headers| headers.values_mut())
            .filter(|value| {
                which == Sealing::Every
                    || value
                        .as_str()
                        .is_some_and(|v| header_secret_id(v).is_none())
            })
            .collect();
        if values.is_empty() {
            return Ok((definition_json.to_owned(), 0));
        }
        let keyring = self.keyring()?;
        let (millis, _) = now();
        for value in values.iter_mut() {
            let Some(plain) = value.as_str() else {
                return Err(StoreError::Conflict(
                    "a CALL_WEBHOOK header value is not text".to_owned(),
                ));
            };
            let id = new_id();
            let row = header_secret_row(&id, Some(owner_id));
            sqlx::query(
                "INSERT INTO webhook_header_secrets (id, org_id, owner_id, sealed, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&id)
            .bind(org_id)
            .bind(owner_id)
            .bind(keyring.seal(org_id, WEBHOOK_HEADER_SECRET, &row, plain)?)
            .bind(millis)
            .execute(&mut **tx)
            .await?;
            **value = Value::String(format!("{HEADER_SECRET_PREFIX}{id}"));
        }
        let sealed = values.len() as u64;
        let text = serde_json::to_string(&definition)
            .map_err(|e| StoreError::Corrupt(format!("a sealed definition: {e}")))?;
        Ok((text, sealed))
    }

    /// The headers to send: each reference replaced by the value it seals, other values as
    /// they are. A reference opens only for `org_id` and, when its secret has a recorded
    /// owner, for one of `owners` (the campaign's id and the stored definition it was created
    /// from). `Corrupt` when a reference names no such secret or does not open; `Config` when
    /// no key (or not the sealing key) is configured.
    pub async fn resolve_webhook_headers(
        &self,
        org_id: &str,
        owners: &[&str],
        headers: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>> {
        let mut resolved = BTreeMap::new();
        for (name, value) in headers {
            let value = match header_secret_id(value) {
                None => value.clone(),
                Some(id) => {
                    let row = sqlx::query(
                        "SELECT sealed, owner_id FROM webhook_header_secrets
                         WHERE org_id = $1 AND id = $2",
                    )
                    .bind(org_id)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "the value of the webhook header {name:?} refers to a secret this \
                             organisation does not have"
                        ))
                    })?;
                    let sealed: String = row.try_get("sealed")?;
                    let owner: Option<String> = row.try_get("owner_id")?;
                    if owner
                        .as_deref()
                        .is_some_and(|owner| !owners.contains(&owner))
                    {
                        return Err(StoreError::Corrupt(format!(
                            "the value of the webhook header {name:?} refers to a secret of \
                             another definition or campaign"
                        )));
                    }
                    self.open(
                        org_id,
                        WEBHOOK_HEADER_SECRET,
                        &header_secret_row(id, owner.as_deref()),
                        &sealed,
                    )?
                }
            };
            resolved.insert(name.clone(), value);
        }
        Ok(resolved)
    }

    /// The URL and opened headers of the CALL_WEBHOOK step `step_id` as the campaign's stored
    /// definition has them: what the activity sends, whatever its input says. `NotFound` when
    /// the organisation has no such campaign; `Corrupt` when its definition has no such step or
    /// the step is not a CALL_WEBHOOK.
    pub async fn campaign_webhook_target(
        &self,
        org_id: &str,
        campaign_id: &str,
        step_id: &str,
    ) -> Result<WebhookTarget> {
        let campaign = self.get_campaign(org_id, campaign_id).await?;
        let definition: Value = serde_json::from_str(&campaign.definition)
            .map_err(|e| StoreError::Corrupt(format!("a campaign's stored definition: {e}")))?;
        let step = definition
            .get("steps")
            .and_then(Value::as_array)
            .and_then(|steps| {
                steps
                    .iter()
                    .find(|step| step.get("id").and_then(Value::as_str) == Some(step_id))
            })
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "the campaign's stored definition has no step {step_id:?}"
                ))
            })?;
        if step.get("type").and_then(Value::as_str) != Some("CALL_WEBHOOK") {
            return Err(StoreError::Corrupt(format!(
                "the step {step_id:?} of the campaign's stored definition is not a CALL_WEBHOOK"
            )));
        }
        let url = step
            .pointer("/config/url")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                StoreError::Corrupt(format!("the CALL_WEBHOOK step {step_id:?} has no URL"))
            })?
            .to_owned();
        let headers: BTreeMap<String, String> = match step.pointer("/config/headers") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(headers) => serde_json::from_value(headers.clone()).map_err(|_| {
                StoreError::Corrupt(format!(
                    "the CALL_WEBHOOK step {step_id:?} has header values that are not text"
                ))
            })?,
        };
        let mut owners = vec![campaign.id.as_str()];
        owners.extend(campaign.definition_id.as_deref());
        let headers = self
            .resolve_webhook_headers(org_id, &owners, &headers)
            .await?;
        Ok(WebhookTarget {
            campaign_name: campaign.name.clone(),
            url,
            headers,
        })
    }

    /// Seals the plain header values still stored in definition versions and in campaigns not
    /// yet started (rows written before sealing existed), `batch_size` rows per read; each row
    /// is rewritten with a compare-and-set in the transaction that seals its values, so a row
    /// changed meanwhile is left for the next pass and nothing is ever half-written.
    pub(crate) async fn seal_plain_stored_headers(
        &self,
        batch_size: i64,
    ) -> Result<PlainHeadersSealed> {
        let mut done = PlainHeadersSealed::default();
        for source in [PlainSource::DefinitionVersions, PlainSource::Campaigns] {
            let mut after = String::new();
            loop {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {key} AS row_key, org_id, {owner} AS owner_id, definition FROM {table}
                     WHERE {key} > $1 AND {filter} ORDER BY {key} LIMIT $2",
                    key = source.row_key(),
                    owner = source.owner(),
                    table = source.table(),
                    filter = source.filter(),
                )))
                .bind(&after)
                .bind(batch_size.max(1))
                .fetch_all(&self.pool)
                .await?;
                let Some(last) = rows.last() else { break };
                after = last.try_get("row_key")?;
                for row in &rows {
                    let row_key: String = row.try_get("row_key")?;
                    let org_id: String = row.try_get("org_id")?;
                    let owner_id: String = row.try_get("owner_id")?;
                    let definition: String = row.try_get("definition")?;
                    let mut tx = self.write_tx().await?;
                    let (sealed, count) = self
                        .seal_definition_headers_in(
                            &mut tx,
                            &org_id,
                            &owner_id,
                            &definition,
                            Sealing::PlainOnly,
                        )
                        .await?;
                    if count == 0 {
                        tx.rollback().await?;
                        continue;
                    }
                    let updated = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE {table} SET definition = $1
                         WHERE {key} = $2 AND definition = $3 AND {filter}",
                        key = source.row_key(),
                        table = source.table(),
                        filter = source.filter(),
                    )))
                    .bind(&sealed)
                    .bind(&row_key)
                    .bind(&definition)
                    .execute(&mut *tx)
                    .await?;
                    if updated.rows_affected() == 1 {
                        tx.commit().await?;
                        done.values += count;
                        match source {
                            PlainSource::DefinitionVersions => done.definition_versions += 1,
                            PlainSource::Campaigns => done.campaigns += 1,
                        }
                    } else {
                        tx.rollback().await?;
                        done.changed_meanwhile += 1;
                    }
                }
            }
        }
        Ok(done)
    }
}

/// Where plain header values may still be stored. Every name here is a constant of ours.
#[derive(Clone, Copy)]
enum PlainSource {
    DefinitionVersions,
    Campaigns,
}

impl PlainSource {
    fn table(self) -> &'static str {
        match self {
            PlainSource::DefinitionVersions => "workflow_definition_versions",
            PlainSource::Campaigns => "campaigns",
        }
    }

    /// A text key that orders and identifies a row, for paging and the compare-and-set.
    fn row_key(self) -> &'static str {
        match self {
            PlainSource::DefinitionVersions => "definition_id || '|' || CAST(version AS TEXT)",
            PlainSource::Campaigns => "id",
        }
    }

    /// The owner of the secrets sealed for a row: the definition, or the campaign itself.
    fn owner(self) -> &'static str {
        match self {
            PlainSource::DefinitionVersions => "definition_id",
            PlainSource::Campaigns => "id",
        }
    }

    /// Started campaigns keep what they ran with; only drafts are rewritten. Rows without a
    /// CALL_WEBHOOK step are not read at all.
    fn filter(self) -> &'static str {
        match self {
            PlainSource::DefinitionVersions => "definition LIKE '%CALL_WEBHOOK%'",
            PlainSource::Campaigns => "status = 'CREATED' AND definition LIKE '%CALL_WEBHOOK%'",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_secret_and_a_uuid_is_a_reference() {
        let id = uuid::Uuid::now_v7().to_string();
        assert_eq!(header_secret_id(&format!("secret:{id}")), Some(id.as_str()));
        for plain in ["Bearer x", "secret:", "secret:abc", &id, "Secret:x"] {
            assert_eq!(header_secret_id(plain), None, "{plain}");
        }
    }

    #[test]
    fn masking_touches_only_webhook_header_values() {
        let mut definition = json!({"steps": [
            {"id": "a", "type": "CALL_WEBHOOK",
             "config": {"name": "n", "url": "https://h/p", "headers": {"Authorization": "Bearer x", "X-B": "secret:1"}}},
            {"id": "b", "type": "SEND_NOTIFICATION", "config": {"headers": {"k": "v"}}},
            {"id": "c", "type": "CALL_WEBHOOK", "config": {"name": "m", "url": "https://h/q"}}
        ]});
        mask_webhook_headers(&mut definition, "***");
        assert_eq!(
            definition["steps"][0]["config"]["headers"],
            json!({"Authorization": "***", "X-B": "***"})
        );
        assert_eq!(definition["steps"][0]["config"]["url"], "https://h/p");
        assert_eq!(definition["steps"][1]["config"]["headers"]["k"], "v");
    }
}
