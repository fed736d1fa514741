//! The generic webhook channel's event (a contract receivers rely on; docs/webhooks.md): the
//! JSON body `{user_id, campaign_id, deeplink_url, occurred_at}` and the `X-Pidgr-Signature`
//! header, the lowercase hex HMAC-SHA256 of the exact body bytes keyed with the organisation's
//! secret. The campaign's content never goes into an event: only ids and the deeplink.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{OutboundClient, OutboundError, OutboundResponse};

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "X-Pidgr-Signature";

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

/// The lowercase hex HMAC-SHA256 of `body`, keyed with `secret` (its UTF-8 bytes, as the
/// receiver checks in docs/webhooks.md use the secret string).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any size");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

impl OutboundClient {
    /// POSTs one signed channel event to `url` through the SSRF-safe path. The signature is
    /// computed at send time, so a rotated secret signs from the next send on.
    pub async fn post_channel_event(
        &self,
        url: &str,
        secret: &str,
        body: &str,
        timeout: Duration,
    ) -> Result<OutboundResponse, OutboundError> {
        let headers =
            BTreeMap::from([(SIGNATURE_HEADER.to_owned(), sign(secret, body.as_bytes()))]);
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
    fn signature_is_lowercase_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
