//! CALL_WEBHOOK header values, sealed at rest. A header such as `Authorization: Bearer …` is a
//! credential: it must not travel in clear through Temporal (workflow and activity inputs are
//! visible to every Web UI user) nor come back in API answers. So when a definition enters the
//! store, each header value is sealed into `webhook_header_secrets` and the stored definition
//! keeps only a reference, `secret:<id>`; the activity resolves it just before the POST.
//!
//! A value that is not a reference is sent as it is: campaigns stored before sealing existed
//! keep their plain values, and their recorded histories still replay.

use std::collections::BTreeMap;

use serde_json::Value;

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

impl Store {
    /// Seals every CALL_WEBHOOK header value of `definition_json` for `org_id` and returns the
    /// definition with `secret:<id>` in their place. Every value is sealed, one that looks like
    /// a reference too (it is then sent as written), so a definition can never point at a
    /// secret its author did not give. A definition without headers comes back unchanged and
    /// needs no secret key.
    pub async fn seal_definition_headers(
        &self,
        org_id: &str,
        definition_json: &str,
    ) -> Result<String> {
        let mut definition: Value = serde_json::from_str(definition_json).map_err(|e| {
            StoreError::Conflict(format!("the workflow definition is not valid JSON: {e}"))
        })?;
        let mut values: Vec<&mut Value> = webhook_headers_mut(&mut definition)
            .into_iter()
            .flat_map(|headers| headers.values_mut())
            .collect();
        if values.is_empty() {
            return Ok(definition_json.to_owned());
        }
        let keyring = self.keyring()?;
        let (millis, _) = now();
        let mut tx = self.write_tx().await?;
        for value in values.iter_mut() {
            let Some(plain) = value.as_str() else {
                return Err(StoreError::Conflict(
                    "a CALL_WEBHOOK header value is not text".to_owned(),
                ));
            };
            let id = new_id();
            sqlx::query(
                "INSERT INTO webhook_header_secrets (id, org_id, sealed, created_at)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(&id)
            .bind(org_id)
            .bind(keyring.seal(org_id, WEBHOOK_HEADER_SECRET, plain)?)
            .bind(millis)
            .execute(&mut *tx)
            .await?;
            **value = Value::String(format!("{HEADER_SECRET_PREFIX}{id}"));
        }
        tx.commit().await?;
        serde_json::to_string(&definition)
            .map_err(|e| StoreError::Corrupt(format!("a sealed definition: {e}")))
    }

    /// The headers to send: each reference replaced by the value it seals (opened for
    /// `org_id` only), other values as they are. `Corrupt` when a reference names no secret of
    /// this organisation or does not open; `Config` when no key (or not the sealing key) is
    /// configured.
    pub async fn resolve_webhook_headers(
        &self,
        org_id: &str,
        headers: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>> {
        let mut resolved = BTreeMap::new();
        for (name, value) in headers {
            let value = match header_secret_id(value) {
                None => value.clone(),
                Some(id) => {
                    let sealed: String = sqlx::query_scalar(
                        "SELECT sealed FROM webhook_header_secrets WHERE org_id = $1 AND id = $2",
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
                    self.open(org_id, WEBHOOK_HEADER_SECRET, &sealed)?
                }
            };
            resolved.insert(name.clone(), value);
        }
        Ok(resolved)
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
