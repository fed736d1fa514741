//! APNs with token-based auth: the ES256 provider token (cached and renewed within Apple's
//! 20–60 minute window) and what each answer of `POST /3/device/{token}` means.
//!
//! # Reasons
//!
//! - [`PushError::InvalidToken`]: `BadDeviceToken` (400), `DeviceTokenNotForTopic` (400),
//!   `MissingDeviceToken` (400), `Unregistered` (410), `ExpiredToken` (410).
//! - Transient (retried inline, then [`PushError::Unavailable`]): `TooManyRequests` (429),
//!   `TooManyProviderTokenUpdates` (429), `InternalServerError` (500), `ServiceUnavailable`
//!   (503), `Shutdown` (503), `IdleTimeout` (400: the connection idled out; a new one works).
//! - Renew the provider token and retry once: `ExpiredProviderToken` (403). A second refusal is
//!   `Rejected`.
//! - [`PushError::Rejected`]: `InvalidProviderToken`, `MissingProviderToken`, `BadCertificate`,
//!   `BadCertificateEnvironment`, `Forbidden`, `UnrelatedKeyIdInToken`,
//!   `BadEnvironmentKeyInToken` (403, credentials); `PayloadTooLarge` (413); `TopicDisallowed`,
//!   `BadTopic`, `MissingTopic`, `BadCollapseId`, `BadExpirationDate`, `BadMessageId`,
//!   `BadPriority`, `DuplicateHeaders`, `InvalidPushType`, `PayloadEmpty`, `BadPath` (404),
//!   `MethodNotAllowed` (405) — request problems a retry would repeat.
//! - Deliberately unmapped: any reason Apple adds later; `Rejected` unless the status is 429 or
//!   5xx (then transient).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::json;

use crate::client::{Answer, Failure, Inner};
use crate::error::PushError;
use crate::fcm::{excerpt_suffix, is_transient_status};
use crate::{ApnsCredentials, jwt};

/// Provider tokens by credentials. Signing is local and takes microseconds, so a plain mutex
/// held while signing is enough to make concurrent sends share one token.
#[derive(Default)]
pub(crate) struct ProviderTokens {
    entries: Mutex<HashMap<[u8; 32], ProviderToken>>,
}

struct ProviderToken {
    value: String,
    issued_at: SystemTime,
}

impl ProviderTokens {
    /// The provider token for `credentials`, signed anew when the cached one is older than the
    /// lifetime (or dated in the future: the clock went back), or is `refused`.
    pub(crate) fn get(
        &self,
        inner: &Inner,
        credentials: &ApnsCredentials,
        refused: Option<String>,
    ) -> Result<String, PushError> {
        let now = inner.now();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(token) = entries.get(&credentials.cache_key) {
            let fresh = now
                .duration_since(token.issued_at)
                .is_ok_and(|age| age < inner.settings.apns_token_lifetime);
            if fresh && refused.as_deref() != Some(token.value.as_str()) {
                return Ok(token.value.clone());
            }
        }
        let iat = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let value = jwt::sign_es256(
            &credentials.key,
            &json!({ "alg": "ES256", "kid": credentials.key_id }),
            &json!({ "iss": credentials.team_id, "iat": iat }),
        )?;
        tracing::debug!(team = %credentials.team_id, key = %credentials.key_id, "signed a new APNs provider token");
        // Forget tokens too old to be used (a replaced key's), so the map stays small.
        let lifetime = inner.settings.apns_token_lifetime;
        entries.retain(|_, token| {
            now.duration_since(token.issued_at)
                .is_ok_and(|age| age < lifetime)
        });
        entries.insert(
            credentials.cache_key,
            ProviderToken {
                value: value.clone(),
                // The token says `iat` in whole seconds; age it from there.
                issued_at: UNIX_EPOCH + Duration::from_secs(iat),
            },
        );
        Ok(value)
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    reason: Option<String>,
}

/// What an APNs answer means: the `apns-id` on success, else a [`Failure`].
pub(crate) fn outcome(answer: &Answer, now: SystemTime) -> Result<Option<String>, Failure> {
    if answer.status == 200 {
        return Ok(answer.header("apns-id").map(str::to_owned));
    }
    let reason_code = serde_json::from_slice::<ErrorBody>(&answer.body)
        .ok()
        .and_then(|body| body.reason)
        .unwrap_or_else(|| "no reason given".to_owned());
    let reason = format!(
        "{} (HTTP {})",
        excerpt_suffix(&reason_code, None).trim_start_matches(": "),
        answer.status
    );
    let transient = |reason: String| Failure::Transient {
        reason,
        retry_after: answer.retry_after(now),
    };
    let failure = match reason_code.as_str() {
        "BadDeviceToken"
        | "DeviceTokenNotForTopic"
        | "MissingDeviceToken"
        | "Unregistered"
        | "ExpiredToken" => Failure::Final(PushError::InvalidToken {
            reason: reason_code.clone(),
        }),
        "TooManyRequests"
        | "TooManyProviderTokenUpdates"
        | "InternalServerError"
        | "ServiceUnavailable"
        | "Shutdown"
        | "IdleTimeout" => transient(reason),
        "ExpiredProviderToken" => Failure::AuthExpired(reason),
        "InvalidProviderToken"
        | "MissingProviderToken"
        | "BadCertificate"
        | "BadCertificateEnvironment"
        | "Forbidden"
        | "UnrelatedKeyIdInToken"
        | "BadEnvironmentKeyInToken"
        | "PayloadTooLarge"
        | "TopicDisallowed"
        | "BadTopic"
        | "MissingTopic"
        | "BadCollapseId"
        | "BadExpirationDate"
        | "BadMessageId"
        | "BadPriority"
        | "DuplicateHeaders"
        | "InvalidPushType"
        | "PayloadEmpty"
        | "BadPath"
        | "MethodNotAllowed" => Failure::Final(PushError::Rejected { reason }),
        _ if is_transient_status(answer.status) => transient(reason),
        _ => Failure::Final(PushError::Rejected { reason }),
    };
    tracing::debug!(status = answer.status, reason = %reason_code, "APNs refused a push");
    Err(failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(status: u16, reason: Option<&str>) -> &'static str {
        let body = match reason {
            Some(reason) => json!({ "reason": reason }).to_string().into_bytes(),
            None => Vec::new(),
        };
        let answer = Answer {
            status,
            headers: Default::default(),
            body,
        };
        match outcome(&answer, SystemTime::UNIX_EPOCH).unwrap_err() {
            Failure::Final(PushError::InvalidToken { .. }) => "token",
            Failure::Final(PushError::Rejected { .. }) => "rejected",
            Failure::Transient { .. } => "transient",
            Failure::AuthExpired(_) => "auth",
            Failure::Final(_) => "other",
        }
    }

    #[test]
    fn apns_reasons_map_onto_what_the_caller_does() {
        let cases = [
            (400, Some("BadDeviceToken"), "token"),
            (400, Some("DeviceTokenNotForTopic"), "token"),
            (410, Some("Unregistered"), "token"),
            (410, Some("ExpiredToken"), "token"),
            (429, Some("TooManyRequests"), "transient"),
            (500, Some("InternalServerError"), "transient"),
            (503, Some("ServiceUnavailable"), "transient"),
            (503, Some("Shutdown"), "transient"),
            (403, Some("ExpiredProviderToken"), "auth"),
            (403, Some("InvalidProviderToken"), "rejected"),
            (413, Some("PayloadTooLarge"), "rejected"),
            (400, Some("TopicDisallowed"), "rejected"),
            (400, Some("SomethingNew"), "rejected"),
            (502, None, "transient"),
            (400, None, "rejected"),
        ];
        for (status, reason, expected) in cases {
            assert_eq!(classify(status, reason), expected, "{status} {reason:?}");
        }
    }
}
