//! The generic webhook channel's event (a contract receivers rely on; docs/webhooks.md): the
//! JSON body `{user_id, campaign_id, deeplink_url, occurred_at}` and the `X-Pidgr-Signature`
//! header, the lowercase hex HMAC-SHA256 of the exact body bytes keyed with the organisation's
//! secret. The campaign's content never goes into an event: only ids and the deeplink.
//!
//! Every event (and every CALL_WEBHOOK POST, see [`StandardSignature`]) also carries the
//! Standard Webhooks headers: `webhook-id` (the same on every retry of one event),
//! `webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature`
//! (`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one per secret, space-separated).
//! Their key is what every Standard Webhooks library makes of a `whsec_` secret: the standard
//! base64 decoding of what follows `whsec_`. Pidgr's secrets are `whsec_` and 64 hex digits,
//! which read as base64 give 48 bytes; `X-Pidgr-Signature` keeps using the whole string's
//! UTF-8 bytes, as it always has.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{OutboundClient, OutboundError, OutboundResponse};

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "X-Pidgr-Signature";
/// Standard Webhooks: the message id, stable across retries of one message.
pub const WEBHOOK_ID_HEADER: &str = "webhook-id";
/// Standard Webhooks: when this attempt was sent, in Unix seconds.
pub const WEBHOOK_TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Standard Webhooks: `v1,<signature>` per secret, space-separated.
pub const WEBHOOK_SIGNATURE_HEADER: &str = "webhook-signature";
/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// Standard base64 as the Standard Webhooks libraries read a secret: padding optional.
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// The Standard Webhooks headers of one message: its id and the secrets that sign it, newest
/// first (two during a rotation's overlap, none when there is no secret).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StandardSignature {
    pub webhook_id: String,
    pub secrets: Vec<String>,
}

impl StandardSignature {
    /// The three headers for `body` sent at `sent_at`; `webhook-signature` is left out when no
    /// secret can sign (no secret at all, or none a Standard Webhooks library could read).
    pub fn headers(&self, body: &[u8], sent_at: DateTime<Utc>) -> BTreeMap<String, String> {
        let timestamp = sent_at.timestamp();
        let mut headers = BTreeMap::from([
            (WEBHOOK_ID_HEADER.to_owned(), self.webhook_id.clone()),
            (WEBHOOK_TIMESTAMP_HEADER.to_owned(), timestamp.to_string()),
        ]);
        let signatures: Vec<String> = self
            .secrets
            .iter()
            .filter_map(|secret| standard_key(secret))
            .map(|key| {
                format!(
                    "v1,{}",
                    sign_standard(&key, &self.webhook_id, timestamp, body)
                )
            })
            .collect();
        if !signatures.is_empty() {
            headers.insert(WEBHOOK_SIGNATURE_HEADER.to_owned(), signatures.join(" "));
        }
        headers
    }
}

/// The key a Standard Webhooks library derives from `secret`: the base64 decoding of what
/// follows `whsec_`. `None` for a secret without the prefix or not in base64.
pub fn standard_key(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.strip_prefix(SECRET_PREFIX)?;
    SECRET_BASE64
        .decode(encoded)
        .ok()
        .filter(|key| !key.is_empty())
}

/// The base64 HMAC-SHA256 of `"{id}.{timestamp}.{body}"` keyed with `key`.
pub fn sign_standard(key: &[u8], webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any size");
    mac.update(webhook_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The CALL_WEBHOOK message id: derived from the campaign, the step and the part (0 for a
/// campaign sent in one POST), so every retry of one POST carries the same id.
pub fn call_webhook_id(campaign_id: &str, step_id: &str, part: u64) -> String {
    use sha2::Digest;
    let digest = Sha256::digest(format!("{campaign_id}\n{step_id}\n{part}").as_bytes());
    format!("msg_{}", hex::encode(&digest[..16]))
}

/// `headers` with the Standard Webhooks ones added, replacing any configured header of the
/// same name (whatever its case): those names are Pidgr's to set.
pub fn with_standard_headers(
    headers: &BTreeMap<String, String>,
    standard: &StandardSignature,
    body: &[u8],
    sent_at: DateTime<Utc>,
) -> BTreeMap<String, String> {
    let ours = standard.headers(body, sent_at);
    let mut merged: BTreeMap<String, String> = headers
        .iter()
        .filter(|(name, _)| !ours.contains_key(&name.to_ascii_lowercase()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    merged.extend(ours);
    merged
}

/// The event body, serialised once: retries re-send these exact bytes. `occurred_at` keeps
/// milliseconds, so that two events for the same recipient and campaign never share the
/// deduplication key `(user_id, campaign_id, occurred_at)`.
pub fn event_body(
    user_id: &str,
    campaign_id: &str,
    deeplink_url: &str,
    occurred_at: DateTime<Utc>,
) -> String {
    serde_json::json!({
        "user_id": user_id,
        "campaign_id": campaign_id,
        "deeplink_url": deeplink_url,
        "occurred_at": occurred_at.to_rfc3339_opts(SecondsFormat::Millis, true),
    })
    .to_string()
}

/// An ESCALATE step's event for one manager, serialised once like [`event_body`] and signed the
/// same way: the manager's `user_id`, `"type": "escalation"`, the number of their reports'
/// deliveries still unacknowledged and the link that lists those reports. Like every event it
/// carries no content: the message and the names stay in Pidgr, behind the link.
pub fn escalation_event_body(
    manager_user_id: &str,
    campaign_id: &str,
    deeplink_url: &str,
    unacknowledged_count: u64,
    occurred_at: DateTime<Utc>,
) -> String {
    serde_json::json!({
        "type": "escalation",
        "user_id": manager_user_id,
        "campaign_id": campaign_id,
        "deeplink_url": deeplink_url,
        "unacknowledged_count": unacknowledged_count,
        "occurred_at": occurred_at.to_rfc3339_opts(SecondsFormat::Millis, true),
    })
    .to_string()
}

/// The lowercase hex HMAC-SHA256 of `body`, keyed with `secret` (its UTF-8 bytes, as the
/// receiver checks in docs/webhooks.md use the secret string).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any size");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

impl OutboundClient {
    /// POSTs one signed channel event to `url` through the SSRF-safe path. The signatures are
    /// computed at send time, so a rotated secret signs from the next send on:
    /// `X-Pidgr-Signature` with `standard.secrets[0]` (the current secret) alone, and
    /// `webhook-signature` with every secret of `standard` (the previous one too during a
    /// rotation's overlap).
    pub async fn post_channel_event(
        &self,
        url: &str,
        standard: &StandardSignature,
        body: &str,
        timeout: Duration,
    ) -> Result<OutboundResponse, OutboundError> {
        let mut headers = standard.headers(body.as_bytes(), Utc::now());
        if let Some(current) = standard.secrets.first() {
            headers.insert(SIGNATURE_HEADER.to_owned(), sign(current, body.as_bytes()));
        }
        self.post_json(url, &headers, body.as_bytes().to_vec(), timeout)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn body_has_exactly_the_contract_fields() {
        let at = Utc.timestamp_millis_opt(1_781_272_800_123).unwrap();
        let body = event_body("user-1", "campaign-1", "https://links.example/c/abc", at);
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "user_id": "user-1",
                "campaign_id": "campaign-1",
                "deeplink_url": "https://links.example/c/abc",
                "occurred_at": "2026-06-12T14:00:00.123Z",
            })
        );
    }

    #[test]
    fn an_escalation_body_names_the_manager_the_count_and_the_link_only() {
        let at = Utc.timestamp_millis_opt(1_781_272_800_123).unwrap();
        let body = escalation_event_body(
            "manager-1",
            "campaign-1",
            "https://pidgr.example/v1/escalations/abc",
            2,
            at,
        );
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "type": "escalation",
                "user_id": "manager-1",
                "campaign_id": "campaign-1",
                "deeplink_url": "https://pidgr.example/v1/escalations/abc",
                "unacknowledged_count": 2,
                "occurred_at": "2026-06-12T14:00:00.123Z",
            })
        );
    }

    #[test]
    fn the_standard_key_is_the_base64_reading_of_what_follows_whsec() {
        // Pidgr's form: 64 hex digits, which are base64 too (48 bytes).
        let secret = format!("whsec_{}", "ab".repeat(32));
        let key = standard_key(&secret).unwrap();
        assert_eq!(key.len(), 48);
        assert_eq!(
            key,
            base64::engine::general_purpose::STANDARD
                .decode("ab".repeat(32))
                .unwrap()
        );
        // The Standard Webhooks form, padded or not.
        assert_eq!(
            standard_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .unwrap()
                .len(),
            24
        );
        assert_eq!(standard_key("whsec_AQI=").unwrap(), [1, 2]);
        assert_eq!(standard_key("whsec_AQI").unwrap(), [1, 2]);
        assert_eq!(standard_key("no-prefix"), None);
        assert_eq!(standard_key("whsec_not base64!"), None);
        assert_eq!(standard_key("whsec_"), None);
    }

    #[test]
    fn the_standard_signature_matches_the_specifications_example() {
        // The example of the Standard Webhooks specification and its reference libraries.
        let key = standard_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            sign_standard(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn the_test_vector_of_docs_webhooks_md_holds() {
        let secret = format!("whsec_{}", "8f3b".repeat(16));
        let body = r#"{"campaign_id":"0193f7c2-5b1e-7c39-9d0e-2f6c1a9e4b21","deeplink_url":"https://pidgr.example.com/c/5f0e8a3b9c2d4e6f8a1b3c5d7e9f0a2b","occurred_at":"2026-06-12T14:00:00.123Z","user_id":"e-100"}"#;
        assert_eq!(
            sign(&secret, body.as_bytes()),
            "3862a5fb3c639216ab3220d211b13afb11c4e2eb714c971dabe0d0366c7847b5"
        );
        let standard = StandardSignature {
            webhook_id: "0193f7c2-6a11-7d02-9c3e-5b8a0f1d2e44".into(),
            secrets: vec![secret],
        };
        let at = Utc.timestamp_opt(1_781_272_800, 0).unwrap();
        assert_eq!(
            standard.headers(body.as_bytes(), at)["webhook-signature"],
            "v1,fGhCi2DohXMxu/bOvqg6XibEEPW4Sd1VDMNjYvyzRD4="
        );
    }

    #[test]
    fn the_headers_carry_one_signature_per_secret_newest_first() {
        let at = Utc.timestamp_opt(1_781_272_800, 0).unwrap();
        let (new, old) = (
            format!("whsec_{}", "11".repeat(32)),
            format!("whsec_{}", "22".repeat(32)),
        );
        let standard = StandardSignature {
            webhook_id: "evt-1".into(),
            secrets: vec![new.clone(), old.clone()],
        };
        let headers = standard.headers(b"{}", at);
        assert_eq!(headers["webhook-id"], "evt-1");
        assert_eq!(headers["webhook-timestamp"], "1781272800");
        let expected = |secret: &str| {
            format!(
                "v1,{}",
                sign_standard(
                    &standard_key(secret).unwrap(),
                    "evt-1",
                    1_781_272_800,
                    b"{}"
                )
            )
        };
        assert_eq!(
            headers["webhook-signature"],
            format!("{} {}", expected(&new), expected(&old))
        );
        let unsigned = StandardSignature {
            webhook_id: "evt-2".into(),
            secrets: Vec::new(),
        };
        assert!(
            !unsigned
                .headers(b"{}", at)
                .contains_key("webhook-signature")
        );
    }

    #[test]
    fn call_webhook_ids_are_stable_per_part_and_configured_look_alikes_are_replaced() {
        let id = call_webhook_id("c-1", "report", 0);
        assert_eq!(id, call_webhook_id("c-1", "report", 0));
        assert!(id.starts_with("msg_") && id.len() == 36, "{id}");
        for other in [
            call_webhook_id("c-1", "report", 1),
            call_webhook_id("c-1", "other", 0),
            call_webhook_id("c-2", "report", 0),
        ] {
            assert_ne!(id, other);
        }
        let configured = BTreeMap::from([
            ("Authorization".to_owned(), "Bearer t".to_owned()),
            ("Webhook-Id".to_owned(), "forged".to_owned()),
        ]);
        let standard = StandardSignature {
            webhook_id: id.clone(),
            secrets: Vec::new(),
        };
        let merged = with_standard_headers(&configured, &standard, b"{}", Utc::now());
        assert_eq!(
            merged.keys().map(String::as_str).collect::<Vec<_>>(),
            ["Authorization", "webhook-id", "webhook-timestamp"]
        );
        assert_eq!(merged["webhook-id"], id);
    }

    #[test]
    fn signature_is_lowercase_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
