//! FCM HTTP v1: the OAuth2 access token (a service-account JWT exchanged at Google's token
//! endpoint, cached) and what each answer of `messages:send` means.
//!
//! # Error codes
//!
//! The code is `details[].errorCode` of the `google.firebase.fcm.v1.FcmError` detail when
//! present, else `error.status`.
//!
//! - [`PushError::InvalidToken`]: `UNREGISTERED`, `SENDER_ID_MISMATCH`, and `INVALID_ARGUMENT`
//!   when it comes as an FcmError code (FCM's "the registration token is not valid") and no
//!   `google.rpc.BadRequest` field violation names another field than `message.token`. A bare
//!   `INVALID_ARGUMENT` status without an FcmError code, or one whose violation names another
//!   field (message too big, bad data key), is a request problem and becomes `Rejected`, unless
//!   a violation names `message.token`: removing a good token because of our own bug would be
//!   the worse mistake.
//! - Transient (retried inline, then [`PushError::Unavailable`]): `QUOTA_EXCEEDED`,
//!   `UNAVAILABLE`, `INTERNAL`, and the statuses `RESOURCE_EXHAUSTED`, `DEADLINE_EXCEEDED`.
//! - Renew the access token and retry once: HTTP 401 / `UNAUTHENTICATED` (our access token
//!   expired or was revoked). A second refusal is `Rejected`.
//! - [`PushError::Rejected`]: `THIRD_PARTY_AUTH_ERROR` and its older name `APNS_AUTH_ERROR`
//!   (the APNs key or certificate uploaded to Firebase is wrong, a 401 that a new access token
//!   does not fix), `PERMISSION_DENIED`, `NOT_FOUND` without an FcmError code (an unknown
//!   project, not a token).
//! - Deliberately unmapped, so `Rejected` unless the HTTP status is 429 or 5xx (then transient):
//!   `UNSPECIFIED_ERROR` (FCM gives no meaning for it) and any code FCM adds later.
//!
//! The token endpoint: 400/401 (`invalid_grant`, `invalid_client`, `unauthorized_client`) is
//! `Rejected` (the service account is wrong or disabled); 429 and 5xx are transient.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::json;

use crate::client::{Answer, Failure, Inner};
use crate::error::PushError;
use crate::{FcmCredentials, TokenTail, jwt};

/// The OAuth2 scope for sending through FCM.
pub(crate) const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// Google's access tokens live an hour; one is replaced this long before it expires, so a token
/// does not expire between taking it from the cache and FCM checking it.
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// The lifetime asked for in the assertion: the most Google allows.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);

/// The access-token cache, one entry per credentials (client email + key). Each entry has its
/// own async lock, held across the exchange, so concurrent sends for one organisation share a
/// single exchange instead of stampeding the token endpoint, while other organisations are not
/// held up.
#[derive(Default)]
pub(crate) struct AccessTokens {
    entries: Mutex<HashMap<[u8; 32], Slot>>,
}

/// One credentials' cached token; empty until the first exchange or after a 401.
type Slot = Arc<tokio::sync::Mutex<Option<AccessToken>>>;

#[derive(Clone)]
struct AccessToken {
    value: String,
    /// When this token stops being handed out.
    refresh_at: SystemTime,
}

impl AccessTokens {
    /// A valid access token for `credentials`. `refused` is a token FCM just answered 401 to:
    /// it is dropped if it is still the cached one (another send may have replaced it already).
    pub(crate) async fn get(
        &self,
        inner: &Inner,
        credentials: &FcmCredentials,
        refused: Option<String>,
    ) -> Result<String, Failure> {
        let entry = {
            let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            if !entries.contains_key(&credentials.cache_key) {
                // New credentials (or a replaced key): forget the tokens no send is using and
                // none could use any more, so the map does not grow with every key rotation.
                let now = inner.now();
                entries.retain(|_, slot| {
                    Arc::strong_count(slot) > 1
                        || slot.try_lock().map_or(true, |token| {
                            token.as_ref().is_some_and(|token| now < token.refresh_at)
                        })
                });
            }
            Arc::clone(entries.entry(credentials.cache_key).or_default())
        };
        let mut slot = entry.lock().await;
        if let Some(refused) = refused
            && slot.as_ref().is_some_and(|token| token.value == refused)
        {
            *slot = None;
        }
        let now = inner.now();
        if let Some(token) = slot.as_ref()
            && now < token.refresh_at
        {
            return Ok(token.value.clone());
        }
        let token = exchange(inner, credentials, now).await?;
        *slot = Some(token.clone());
        Ok(token.value)
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct TokenError {
    error: Option<String>,
    error_description: Option<String>,
}

/// Signs an assertion for `credentials` and exchanges it for an access token.
async fn exchange(
    inner: &Inner,
    credentials: &FcmCredentials,
    now: SystemTime,
) -> Result<AccessToken, Failure> {
    let iat = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let mut header = json!({ "alg": "RS256", "typ": "JWT" });
    if let Some(kid) = &credentials.private_key_id {
        header["kid"] = json!(kid);
    }
    let claims = json!({
        "iss": credentials.client_email,
        "scope": SCOPE,
        "aud": inner.fcm_token_url.as_str(),
        "iat": iat,
        "exp": iat + ASSERTION_LIFETIME.as_secs(),
    });
    let assertion = jwt::sign_rs256(&credentials.key, &header, &claims)?;
    tracing::debug!(account = %credentials.client_email, "exchanging a service-account assertion for an access token");
    let request = inner.fcm_http.post(inner.fcm_token_url.clone()).form(&[
        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
        ("assertion", assertion.as_str()),
    ]);
    let answer = inner
        .exchange(request)
        .await
        .map_err(|failure| match failure {
            Failure::Transient {
                reason,
                retry_after,
            } => Failure::Transient {
                reason: format!("the token endpoint: {reason}"),
                retry_after,
            },
            other => other,
        })?;
    if (200..300).contains(&answer.status) {
        let parsed: TokenAnswer = serde_json::from_slice(&answer.body).map_err(|_| {
            Failure::Final(PushError::Rejected {
                reason: "the token endpoint's answer is not the expected JSON".into(),
            })
        })?;
        let (Some(value), Some(expires_in)) = (parsed.access_token, parsed.expires_in) else {
            return Err(Failure::Final(PushError::Rejected {
                reason: "the token endpoint's answer has no access_token or expires_in".into(),
            }));
        };
        let lifetime = Duration::from_secs(expires_in).saturating_sub(REFRESH_MARGIN);
        return Ok(AccessToken {
            value,
            refresh_at: now + lifetime,
        });
    }
    let described: Option<TokenError> = serde_json::from_slice(&answer.body).ok();
    let (code, description) = described
        .map(|error| {
            (
                error.error.unwrap_or_default(),
                error.error_description.unwrap_or_default(),
            )
        })
        .unwrap_or_default();
    let reason = format!(
        "the token endpoint refused the service account {}: {} (HTTP {}){}",
        credentials.client_email,
        if code.is_empty() {
            "no error code"
        } else {
            &code
        },
        answer.status,
        excerpt_suffix(&description, None),
    );
    if is_transient_status(answer.status) {
        Err(Failure::Transient {
            reason,
            retry_after: answer.retry_after(now),
        })
    } else {
        Err(Failure::Final(PushError::Rejected { reason }))
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorObject,
}

#[derive(Deserialize)]
struct ErrorObject {
    status: Option<String>,
    message: Option<String>,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(rename = "@type", default)]
    kind: String,
    #[serde(rename = "errorCode")]
    error_code: Option<String>,
    #[serde(rename = "fieldViolations", default)]
    field_violations: Vec<FieldViolation>,
}

#[derive(Deserialize)]
struct FieldViolation {
    #[serde(default)]
    field: String,
}

/// What a `messages:send` answer means: the message name on success, else a [`Failure`].
pub(crate) fn outcome(
    answer: &Answer,
    token: &str,
    now: SystemTime,
) -> Result<Option<String>, Failure> {
    if (200..300).contains(&answer.status) {
        let name = serde_json::from_slice::<serde_json::Value>(&answer.body)
            .ok()
            .and_then(|value| value.get("name")?.as_str().map(str::to_owned));
        return Ok(name);
    }
    let parsed: Option<ErrorObject> = serde_json::from_slice::<ErrorBody>(&answer.body)
        .ok()
        .map(|body| body.error);
    let fcm_code = parsed.as_ref().and_then(|error| {
        error
            .details
            .iter()
            .find(|detail| detail.kind.ends_with("google.firebase.fcm.v1.FcmError"))
            .and_then(|detail| detail.error_code.clone())
    });
    let status_code = parsed.as_ref().and_then(|error| error.status.clone());
    let violations: Vec<&str> = parsed
        .iter()
        .flat_map(|error| &error.details)
        .flat_map(|detail| &detail.field_violations)
        .map(|violation| violation.field.as_str())
        .collect();
    let token_violation = violations.contains(&"message.token");
    // FCM also answers INVALID_ARGUMENT (with the same FcmError code) for a message that is too
    // big or has a bad field; a violation naming another field means the token is not to blame.
    let other_violation = violations.iter().any(|field| *field != "message.token");
    let code = fcm_code
        .clone()
        .or(status_code)
        .unwrap_or_else(|| "no error code".to_owned());
    let message = parsed.and_then(|error| error.message).unwrap_or_default();
    let reason = format!(
        "{code} (HTTP {}){}",
        answer.status,
        excerpt_suffix(&message, Some(token))
    );
    let invalid_token = || {
        Failure::Final(PushError::InvalidToken {
            reason: code.clone(),
        })
    };
    let transient = |reason: String| Failure::Transient {
        reason,
        retry_after: answer.retry_after(now),
    };
    let rejected = |reason: String| Failure::Final(PushError::Rejected { reason });
    let failure = match code.as_str() {
        "UNREGISTERED" | "SENDER_ID_MISMATCH" => invalid_token(),
        "INVALID_ARGUMENT" if token_violation || (fcm_code.is_some() && !other_violation) => {
            invalid_token()
        }
        "INVALID_ARGUMENT" => rejected(reason),
        "QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL" | "RESOURCE_EXHAUSTED"
        | "DEADLINE_EXCEEDED" => transient(reason),
        "THIRD_PARTY_AUTH_ERROR" | "APNS_AUTH_ERROR" | "PERMISSION_DENIED" | "NOT_FOUND" => {
            rejected(reason)
        }
        "UNAUTHENTICATED" => Failure::AuthExpired(reason),
        _ if answer.status == 401 => Failure::AuthExpired(reason),
        _ if is_transient_status(answer.status) => transient(reason),
        _ => rejected(reason),
    };
    tracing::debug!(token = %TokenTail(token), status = answer.status, %code, "FCM refused a push");
    Err(failure)
}

pub(crate) fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

/// `": <first 200 characters>"` of a provider's message, with the device token (should a
/// provider ever quote it) replaced by its tail.
pub(crate) fn excerpt_suffix(message: &str, token: Option<&str>) -> String {
    let message = message.trim();
    if message.is_empty() {
        return String::new();
    }
    let message = match token {
        Some(token) if !token.is_empty() => message.replace(token, &TokenTail(token).to_string()),
        _ => message.to_owned(),
    };
    let excerpt: String = message.chars().take(200).collect();
    format!(": {excerpt}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: serde_json::Value) -> Answer {
        Answer {
            status,
            headers: Default::default(),
            body: body.to_string().into_bytes(),
        }
    }

    fn fcm_error(status: u16, grpc: &str, code: Option<&str>) -> Answer {
        let details = match code {
            Some(code) => json!([{
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": code,
            }]),
            None => json!([]),
        };
        answer(
            status,
            json!({"error": {"code": status, "message": "m", "status": grpc, "details": details}}),
        )
    }

    fn classify(answer: &Answer) -> Failure {
        outcome(answer, "device-token-123456", SystemTime::UNIX_EPOCH).unwrap_err()
    }

    #[test]
    fn fcm_codes_map_onto_what_the_caller_does() {
        use Failure::*;
        let cases: &[(u16, &str, Option<&str>, &str)] = &[
            (404, "NOT_FOUND", Some("UNREGISTERED"), "token"),
            (400, "INVALID_ARGUMENT", Some("INVALID_ARGUMENT"), "token"),
            (
                403,
                "PERMISSION_DENIED",
                Some("SENDER_ID_MISMATCH"),
                "token",
            ),
            (
                429,
                "RESOURCE_EXHAUSTED",
                Some("QUOTA_EXCEEDED"),
                "transient",
            ),
            (503, "UNAVAILABLE", Some("UNAVAILABLE"), "transient"),
            (500, "INTERNAL", Some("INTERNAL"), "transient"),
            (
                401,
                "UNAUTHENTICATED",
                Some("THIRD_PARTY_AUTH_ERROR"),
                "rejected",
            ),
            (401, "UNAUTHENTICATED", None, "auth"),
            (400, "INVALID_ARGUMENT", None, "rejected"),
            (404, "NOT_FOUND", None, "rejected"),
            (403, "PERMISSION_DENIED", None, "rejected"),
            (
                400,
                "FAILED_PRECONDITION",
                Some("UNSPECIFIED_ERROR"),
                "rejected",
            ),
            (502, "SOMETHING_NEW", None, "transient"),
        ];
        for (status, grpc, code, expected) in cases {
            let failure = classify(&fcm_error(*status, grpc, *code));
            let got = match failure {
                Final(PushError::InvalidToken { .. }) => "token",
                Final(PushError::Rejected { .. }) => "rejected",
                Transient { .. } => "transient",
                AuthExpired(_) => "auth",
                Final(_) => "other",
            };
            assert_eq!(got, *expected, "{status} {grpc} {code:?}");
        }
    }

    #[test]
    fn a_bad_request_naming_the_token_field_is_the_tokens_fault() {
        let body = json!({"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "bad",
            "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                         "fieldViolations": [{"field": "message.token", "description": "x"}]}]}});
        assert!(matches!(
            classify(&answer(400, body)),
            Failure::Final(PushError::InvalidToken { .. })
        ));
    }

    #[test]
    fn an_invalid_argument_naming_another_field_keeps_the_token() {
        let body = json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
            "message": "Message is too big",
            "details": [
                {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                 "errorCode": "INVALID_ARGUMENT"},
                {"@type": "type.googleapis.com/google.rpc.BadRequest",
                 "fieldViolations": [{"field": "message.data", "description": "too big"}]}]}});
        assert!(matches!(
            classify(&answer(400, body)),
            Failure::Final(PushError::Rejected { .. })
        ));
    }

    #[test]
    fn an_unreadable_error_body_falls_back_to_the_status() {
        let html = Answer {
            status: 502,
            headers: Default::default(),
            body: b"<html>bad gateway</html>".to_vec(),
        };
        assert!(matches!(classify(&html), Failure::Transient { .. }));
    }

    #[test]
    fn a_quoted_device_token_is_shortened_in_the_reason() {
        let body = json!({"error": {"code": 500, "status": "INTERNAL",
            "message": "failed for device-token-123456"}});
        let Failure::Transient { reason, .. } = classify(&answer(500, body)) else {
            panic!("expected a transient failure");
        };
        assert!(!reason.contains("device-token-123456"), "{reason}");
        assert!(reason.contains("…123456"), "{reason}");
    }
}
