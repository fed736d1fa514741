//! Sends one notification to one device token through Firebase Cloud Messaging (HTTP v1) or
//! the Apple Push Notification service (token-based auth, HTTP/2).
//!
//! What lives here: provider credentials ([`FcmCredentials`], [`ApnsCredentials`]) parsed and
//! checked once; [`PushClient`], which builds each provider's request, signs and caches the auth
//! tokens (an OAuth2 access token per Google service account, an ES256 provider token per APNs
//! key), retries transient failures a few times inline and maps every provider answer onto
//! [`PushError`]: remove the token, retry later, or give up.
//!
//! Why a few inline retries when retries belong to Temporal: a push is one request of
//! milliseconds, and the providers' own guidance is to back off and resend at once on 429/5xx.
//! Anything longer than `max_retry_after` is handed back as [`PushError::Unavailable`] with its
//! `retry_after`, for the activity's retry policy.
//!
//! Imports: `pidgr-outbound` only for its TLS configuration. Provider endpoints are operator
//! configuration, never user input, so they do not go through the SSRF-checked client. Time comes
//! from an injected [`Clock`], so token expiry and `Retry-After` waits are testable instantly.
//! `pidgr-push-fakes` holds local fakes of both protocols for tests.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

mod apns;
mod client;
mod credentials;
mod error;
mod fcm;
mod jwt;
mod payload;

pub use client::PushClient;
pub use credentials::{ApnsCredentials, ApnsEnvironment, ApnsKeyFile, FcmCredentials};
pub use error::{CredentialError, PushError};

/// Both FCM and APNs limit the notification payload to 4 KiB.
pub const MAX_PAYLOAD_BYTES: usize = 4096;

/// Operator-set provider endpoints (never user input, so not SSRF-checked). Trailing slashes
/// on the base URLs are tolerated; the token URL is used exactly as given, because it is also
/// the `aud` of the signed assertion. `http://` URLs are allowed (the local fakes). APNs is always
/// spoken as HTTP/2 with prior knowledge: real APNs is HTTP/2-only, and over TLS this works too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushEndpoints {
    pub fcm_base_url: String,
    pub fcm_token_url: String,
    pub apns_production_url: String,
    pub apns_sandbox_url: String,
}

impl PushEndpoints {
    pub const FCM: &str = "https://fcm.googleapis.com";
    pub const FCM_TOKEN: &str = "https://oauth2.googleapis.com/token";
    pub const APNS_PRODUCTION: &str = "https://api.push.apple.com";
    pub const APNS_SANDBOX: &str = "https://api.sandbox.push.apple.com";
}

impl Default for PushEndpoints {
    /// The real providers.
    fn default() -> Self {
        PushEndpoints {
            fcm_base_url: Self::FCM.into(),
            fcm_token_url: Self::FCM_TOKEN.into(),
            apns_production_url: Self::APNS_PRODUCTION.into(),
            apns_sandbox_url: Self::APNS_SANDBOX.into(),
        }
    }
}

/// How the client behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushSettings {
    pub endpoints: PushEndpoints,
    /// The limit for one HTTP request, from connecting to the end of the answer.
    pub request_timeout: Duration,
    /// Attempts per message for transient errors (at least 1). A renewal after the provider
    /// refused an expired auth token is not counted against it.
    pub max_attempts: u32,
    /// A longer `Retry-After` is not waited inline: the error goes back to the caller.
    pub max_retry_after: Duration,
    /// How long an APNs provider token is reused. Apple refuses tokens older than an hour and
    /// throttles renewals more often than every 20 minutes, so the client clamps this to
    /// 20..=60 minutes.
    pub apns_token_lifetime: Duration,
}

impl Default for PushSettings {
    /// 10 s per request, 3 attempts, inline waits up to 60 s, provider tokens kept 40 minutes.
    fn default() -> Self {
        PushSettings {
            endpoints: PushEndpoints::default(),
            request_timeout: Duration::from_secs(10),
            max_attempts: 3,
            max_retry_after: Duration::from_secs(60),
            apns_token_lifetime: Duration::from_secs(40 * 60),
        }
    }
}

/// Injected time, so expiry and `Retry-After` are testable without waiting.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// The real clock: [`SystemTime::now`] and [`tokio::time::sleep`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// One notification, as the provider shows it plus the ids the app needs to open it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notification<'a> {
    pub title: &'a str,
    /// Plain text. Cut (at a char boundary, ending in "…") so the whole serialized payload
    /// stays within [`MAX_PAYLOAD_BYTES`]; the title is cut too if it alone is too long.
    pub body: &'a str,
    pub deeplink: &'a str,
    pub campaign_id: &'a str,
    pub delivery_id: &'a str,
    /// Sent as APNs' `apns-collapse-id` and FCM's collapse key (Android's `collapse_key`, and
    /// `apns-collapse-id` for iOS devices reached through FCM): a device that receives two
    /// pushes with the same id shows only the newest. See [`collapse_id`]. At most
    /// [`MAX_COLLAPSE_ID_BYTES`] bytes; `None` sends none.
    pub collapse_id: Option<&'a str>,
}

/// APNs refuses an `apns-collapse-id` longer than this (`BadCollapseId`).
pub const MAX_COLLAPSE_ID_BYTES: usize = 64;

/// The collapse id of a delivery's push from one step: the first 16 bytes of
/// SHA-256(`delivery_id` NUL `step_id`), 32 lowercase hex characters.
///
/// Deterministic, so a page pushed again after a worker crash carries the same id as the first
/// time and the device merges the two; per step, so a reminder never replaces the notification it
/// follows up on. Hashed rather than concatenated because ids are opaque text of any length and
/// APNs allows 64 bytes; the NUL keeps `("ab", "c")` and `("a", "bc")` apart.
pub fn collapse_id(delivery_id: &str, step_id: &str) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(delivery_id.as_bytes());
    context.update(&[0]);
    context.update(step_id.as_bytes());
    context.finish().as_ref()[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A push the provider accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// Attempts made for this message, the successful one included: each is one send request
    /// (preceded by a token exchange when FCM needed a new access token). A renewal after the
    /// provider refused an expired auth token counts as an attempt here.
    pub attempts: u32,
    /// The provider's message id: FCM's `name`, APNs' `apns-id`.
    pub id: Option<String>,
}

/// The last six characters of a device token: enough to match log lines, too little to use.
pub(crate) struct TokenTail<'a>(pub(crate) &'a str);

impl fmt::Display for TokenTail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.chars().count();
        let tail: String = self.0.chars().skip(count.saturating_sub(6)).collect();
        write!(f, "…{tail}")
    }
}
