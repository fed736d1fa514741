//! `pidgr audit verify`: checks an audit export offline — its hash chain from the first record
//! to the trailer, and the trailer's signature with the organisation's public key. The checking
//! itself is `pidgr_store::audit_chain`, the same definition the API writes exports with.

use std::path::Path;

use anyhow::{Context, bail};
use pidgr_store::audit_chain::{self, PublicKey, Verified, VerifyError};
use serde_json::Value;

/// Where the public key comes from: given inline (base64), or a file holding the answer of
/// `GET /v1/organisation/signing-keys`, one of its keys, or a base64 key alone.
pub enum KeySource<'a> {
    Inline(&'a str),
    File(&'a Path),
}

/// Reads and checks `file` (and, given `campaign`, that it is that campaign's export):
/// `Ok(Err(..))` is a file that does not verify (the first bad record and why); `Err` is a file
/// or key that could not be read at all.
pub fn verify_file(
    file: &Path,
    key: KeySource,
    campaign: Option<&str>,
) -> anyhow::Result<Result<Verified, VerifyError>> {
    let keys = match key {
        KeySource::Inline(text) => vec![inline_key(text)?],
        KeySource::File(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            keys_from_file(&text)
                .with_context(|| format!("reading a key from {}", path.display()))?
        }
    };
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    Ok(
        audit_chain::parse(&text)
            .and_then(|records| audit_chain::verify(&records, &keys, campaign)),
    )
}

fn inline_key(text: &str) -> anyhow::Result<PublicKey> {
    let bytes = audit_chain::base64_decode(text)
        .filter(|bytes| bytes.len() == 32)
        .context(
            "a public key is 32 bytes in standard base64 (the signing-keys route's public_key)",
        )?;
    Ok(PublicKey {
        key_id: None,
        bytes,
    })
}

/// The signing-keys answer (`{"items": [...]}`), one key object, or a base64 key alone.
fn keys_from_file(text: &str) -> anyhow::Result<Vec<PublicKey>> {
    let Ok(json) = serde_json::from_str::<Value>(text) else {
        return Ok(vec![inline_key(text)?]);
    };
    let objects = match &json {
        Value::Object(map) if map.contains_key("items") => {
            json["items"].as_array().cloned().unwrap_or_default()
        }
        Value::Object(_) => vec![json.clone()],
        Value::Array(items) => items.clone(),
        _ => bail!("expected the signing-keys answer, a key object or a base64 key"),
    };
    if objects.is_empty() {
        bail!("the file lists no keys");
    }
    objects
        .iter()
        .map(|object| {
            let mut key = inline_key(object["public_key"].as_str().unwrap_or_default())?;
            key.key_id = object["key_id"].as_str().map(str::to_owned);
            Ok(key)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

    #[test]
    fn a_key_file_may_be_the_routes_answer_one_key_or_base64() {
        let answer = format!(
            r#"{{"items": [{{"key_id": "k1", "algorithm": "Ed25519", "public_key": "{KEY}", "created_at": "2026-01-01T00:00:00Z"}}]}}"#
        );
        let keys = keys_from_file(&answer).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].key_id.as_deref(), Some("k1"));
        assert_eq!(keys[0].bytes.len(), 32);
        let one = keys_from_file(&format!(r#"{{"key_id": "k2", "public_key": "{KEY}"}}"#)).unwrap();
        assert_eq!(one[0].key_id.as_deref(), Some("k2"));
        let bare = keys_from_file(&format!("{KEY}\n")).unwrap();
        assert_eq!(bare[0].key_id, None);
        assert!(keys_from_file(r#"{"items": []}"#).is_err());
        assert!(keys_from_file("c2hvcnQ=").is_err(), "not 32 bytes");
    }
}
