//! Why a push or a set of credentials was refused.
//!
//! The variants of [`PushError`] are what the caller acts on (remove the token, retry later, or
//! report a failure), not which provider said it: FCM and APNs codes are mapped onto them in
//! `fcm.rs` and `apns.rs`.

use std::time::Duration;

/// Why a push was not delivered to the provider.
///
/// `Display` texts are plain sentences; they contain the provider's code and HTTP status but
/// never device tokens, keys or access tokens.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The device token is gone for good: the caller removes it. `reason` is the provider's
    /// code (FCM `UNREGISTERED`, `INVALID_ARGUMENT`, `SENDER_ID_MISMATCH`; APNs `Unregistered`,
    /// `BadDeviceToken`, `DeviceTokenNotForTopic`, `ExpiredToken`).
    #[error("the device token is no longer valid ({reason})")]
    InvalidToken { reason: String },
    /// Transient, still failing after `max_attempts` (or the provider asked for a wait longer
    /// than `max_retry_after`): the caller retries later, not before `retry_after` if given.
    #[error("the push provider is unavailable: {reason}{}", retry_suffix(.retry_after))]
    Unavailable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Refused for a reason that is neither the token's nor transient (bad credentials, a
    /// payload or topic the provider will not take, any unmapped code). Retrying the same
    /// message would get the same answer, so the caller reports a failure.
    #[error("the push provider refused the notification: {reason}")]
    Rejected { reason: String },
    /// The client could not be set up (TLS configuration, an endpoint that is not a URL).
    #[error("the push client could not be set up: {0}")]
    Setup(String),
}

impl PushError {
    /// Whether trying the same push again later could succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PushError::Unavailable { .. })
    }
}

fn retry_suffix(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(wait) => format!(" (retry after {} s)", wait.as_secs()),
        None => String::new(),
    }
}

/// Why credentials were refused. `Display` names the field and what is wrong with it in a plain
/// sentence, and never contains key material (not even a fragment of a malformed PEM).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    /// The service account file is not JSON, or a field has the wrong JSON type.
    #[error("the service account file is not valid JSON: {0}")]
    InvalidJson(String),
    /// The JSON's `type` is not `service_account` (for example a user's OAuth client file).
    #[error("the service account file has type {found:?}, but a \"service_account\" is needed")]
    NotServiceAccount { found: String },
    /// A required field is missing or empty.
    #[error("the field {0} is missing or empty")]
    MissingField(&'static str),
    /// A field has a value of the wrong shape (`field` and why; never the value when it is a
    /// secret).
    #[error("the field {field} is invalid: {reason}")]
    InvalidField { field: &'static str, reason: String },
    /// The private key could not be used; `reason` says why in words, without the key.
    #[error("the private key ({field}) cannot be used: {reason}")]
    InvalidKey { field: &'static str, reason: String },
}
