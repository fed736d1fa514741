//! The client: two HTTP clients (FCM over whatever the server offers, APNs over HTTP/2 with
//! prior knowledge), the auth-token caches, and the inline retry loop both providers share.

use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, Url};

use crate::apns::ProviderTokens;
use crate::error::PushError;
use crate::fcm::AccessTokens;
use crate::{
    ApnsCredentials, ApnsEnvironment, Clock, FcmCredentials, Notification, PushSettings, Sent,
    SystemClock, TokenTail, apns, fcm, payload,
};

/// Apple's bounds for reusing a provider token.
const MIN_APNS_TOKEN_LIFETIME: Duration = Duration::from_secs(20 * 60);
const MAX_APNS_TOKEN_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// The most of an answer that is read: providers answer in a few hundred bytes, and an endpoint
/// gone wrong should not make us buffer megabytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Sends pushes. Cheap to clone: clones share the HTTP connections and the token caches.
#[derive(Clone)]
pub struct PushClient {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) settings: PushSettings,
    pub(crate) clock: Arc<dyn Clock>,
    fcm_send_url_base: String,
    pub(crate) fcm_token_url: Url,
    apns_production: String,
    apns_sandbox: String,
    pub(crate) fcm_http: reqwest::Client,
    apns_http: reqwest::Client,
    pub(crate) access_tokens: AccessTokens,
    provider_tokens: ProviderTokens,
}

impl std::fmt::Debug for PushClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushClient")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl PushClient {
    /// A client on the system clock.
    pub fn new(settings: PushSettings) -> Result<Self, PushError> {
        Self::with_clock(settings, Arc::new(SystemClock))
    }

    /// A client on the given clock (tests use a manual one).
    ///
    /// Fails when an endpoint is not an `http(s)` URL or the TLS configuration cannot be built:
    /// better at start-up than at the first push. `max_attempts` below 1 is taken as 1, and
    /// `apns_token_lifetime` is clamped to 20..=60 minutes.
    pub fn with_clock(
        mut settings: PushSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, PushError> {
        settings.max_attempts = settings.max_attempts.max(1);
        settings.apns_token_lifetime = settings
            .apns_token_lifetime
            .clamp(MIN_APNS_TOKEN_LIFETIME, MAX_APNS_TOKEN_LIFETIME);
        let endpoints = &settings.endpoints;
        let fcm_send_url_base = base_url("fcm_base_url", &endpoints.fcm_base_url)?;
        let apns_production = base_url("apns_production_url", &endpoints.apns_production_url)?;
        let apns_sandbox = base_url("apns_sandbox_url", &endpoints.apns_sandbox_url)?;
        let fcm_token_url = http_url("fcm_token_url", &endpoints.fcm_token_url)?;

        let tls =
            pidgr_outbound::tls_config().map_err(|error| PushError::Setup(error.to_string()))?;
        let builder = |tls: rustls::ClientConfig| {
            reqwest::Client::builder()
                .tls_backend_preconfigured(tls)
                // Providers do not redirect; following one would send our bearer token along.
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .timeout(settings.request_timeout)
                .user_agent(concat!("pidgr-push/", env!("CARGO_PKG_VERSION")))
        };
        let setup = |error: reqwest::Error| {
            PushError::Setup(format!("the HTTP client could not be built: {error}"))
        };
        let fcm_http = builder(tls.clone()).build().map_err(setup)?;
        let apns_http = builder(tls)
            .http2_prior_knowledge()
            .build()
            .map_err(setup)?;

        Ok(PushClient {
            inner: Arc::new(Inner {
                clock,
                fcm_send_url_base,
                fcm_token_url,
                apns_production,
                apns_sandbox,
                fcm_http,
                apns_http,
                access_tokens: AccessTokens::default(),
                provider_tokens: ProviderTokens::default(),
                settings,
            }),
        })
    }

    /// Sends `n` to one FCM registration token.
    pub async fn send_fcm(
        &self,
        credentials: &FcmCredentials,
        token: &str,
        n: &Notification<'_>,
    ) -> Result<Sent, PushError> {
        let inner = &*self.inner;
        if token.trim().is_empty() {
            return Err(PushError::InvalidToken {
                reason: "the device token is empty".into(),
            });
        }
        let body = payload::fcm_body(token, n)?;
        let url = format!(
            "{}/v1/projects/{}/messages:send",
            inner.fcm_send_url_base, credentials.project_id
        );
        let mut attempts = Attempts::default();
        let mut refused_access_token: Option<String> = None;
        loop {
            attempts.made += 1;
            tracing::debug!(
                provider = "fcm",
                project = %credentials.project_id,
                token = %TokenTail(token),
                attempt = attempts.made,
                "sending a push"
            );
            let outcome = match inner
                .access_tokens
                .get(inner, credentials, refused_access_token.take())
                .await
            {
                Err(failure) => Err(failure),
                Ok(access_token) => {
                    let request = inner
                        .fcm_http
                        .post(&url)
                        .bearer_auth(&access_token)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.clone());
                    match inner.exchange(request).await {
                        Err(failure) => Err(failure),
                        Ok(answer) => {
                            fcm::outcome(&answer, token, inner.now()).map_err(|failure| {
                                if matches!(failure, Failure::AuthExpired(_)) {
                                    refused_access_token = Some(access_token);
                                }
                                failure
                            })
                        }
                    }
                }
            };
            match outcome {
                Ok(id) => {
                    return Ok(Sent {
                        attempts: attempts.made,
                        id,
                    });
                }
                Err(failure) => attempts.after(failure, inner).await?,
            }
        }
    }

    /// Sends `n` to one APNs device token, on the host for the credentials' environment.
    pub async fn send_apns(
        &self,
        credentials: &ApnsCredentials,
        token: &str,
        n: &Notification<'_>,
    ) -> Result<Sent, PushError> {
        let inner = &*self.inner;
        // The token becomes a path segment: anything but URL-safe characters cannot be an APNs
        // token (they are hex), and must not be allowed to change the path.
        if token.is_empty()
            || !token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
        {
            return Err(PushError::InvalidToken {
                reason: "BadDeviceToken (not sent: the token is empty or not URL-safe)".into(),
            });
        }
        let body = payload::apns_body(n)?;
        let base = match credentials.environment {
            ApnsEnvironment::Production => &inner.apns_production,
            ApnsEnvironment::Sandbox => &inner.apns_sandbox,
        };
        let url = format!("{base}/3/device/{token}");
        let mut attempts = Attempts::default();
        let mut refused_provider_token: Option<String> = None;
        loop {
            attempts.made += 1;
            tracing::debug!(
                provider = "apns",
                topic = %credentials.topic,
                token = %TokenTail(token),
                attempt = attempts.made,
                "sending a push"
            );
            let provider_token =
                inner
                    .provider_tokens
                    .get(inner, credentials, refused_provider_token.take())?;
            let mut request = inner
                .apns_http
                .post(&url)
                .header("authorization", format!("bearer {provider_token}"))
                .header("apns-topic", &credentials.topic)
                .header("apns-push-type", "alert")
                .header("apns-priority", "10")
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(id) = n.collapse_id {
                request = request.header("apns-collapse-id", id);
            }
            let outcome = match inner.exchange(request).await {
                Err(failure) => Err(failure),
                Ok(answer) => apns::outcome(&answer, inner.now()),
            };
            match outcome {
                Ok(id) => {
                    return Ok(Sent {
                        attempts: attempts.made,
                        id,
                    });
                }
                Err(failure) => {
                    if matches!(failure, Failure::AuthExpired(_)) {
                        refused_provider_token = Some(provider_token);
                    }
                    attempts.after(failure, inner).await?
                }
            }
        }
    }
}

impl Inner {
    pub(crate) fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Sends one request and reads the answer (at most [`MAX_ANSWER_BYTES`]). Every transport
    /// failure is transient: connections reset, providers restart, timeouts pass.
    pub(crate) async fn exchange(&self, request: RequestBuilder) -> Result<Answer, Failure> {
        let transient = |error: reqwest::Error| Failure::Transient {
            reason: describe(error, self.settings.request_timeout),
            retry_after: None,
        };
        let mut response = request.send().await.map_err(transient)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transient)? {
            let room = MAX_ANSWER_BYTES.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if room <= chunk.len() {
                break;
            }
        }
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

/// A provider's answer, read.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// `Retry-After` as seconds or an HTTP date (relative to `now`); unreadable values are
    /// ignored rather than trusted.
    pub(crate) fn retry_after(&self, now: SystemTime) -> Option<Duration> {
        let value = self.headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
        if let Ok(seconds) = value.parse::<u64>() {
            return Some(Duration::from_secs(seconds));
        }
        let at = httpdate::parse_http_date(value).ok()?;
        Some(at.duration_since(now).unwrap_or(Duration::ZERO))
    }
}

/// Why one attempt failed, as far as the retry loop cares.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The provider refused our auth token as expired or unknown: renew it and try once more.
    /// The reason is what is reported if the renewed token is refused too.
    AuthExpired(String),
    /// Worth another attempt, after `retry_after` if the provider said so.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help.
    Final(PushError),
}

impl From<PushError> for Failure {
    fn from(error: PushError) -> Self {
        Failure::Final(error)
    }
}

/// The retry bookkeeping of one message.
#[derive(Default)]
struct Attempts {
    /// Requests made so far.
    made: u32,
    /// Whether the one auth renewal has been used.
    renewed_auth: bool,
}

impl Attempts {
    /// Decides after a failed attempt: `Ok` to go again (after waiting, for a transient
    /// failure), or the error for the caller.
    async fn after(&mut self, failure: Failure, inner: &Inner) -> Result<(), PushError> {
        match failure {
            Failure::Final(error) => Err(error),
            Failure::AuthExpired(reason) => {
                if self.renewed_auth {
                    return Err(PushError::Rejected { reason });
                }
                self.renewed_auth = true;
                tracing::debug!(%reason, "renewing the auth token and trying once more");
                Ok(())
            }
            Failure::Transient {
                reason,
                retry_after,
            } => {
                let settings = &inner.settings;
                if retry_after.is_some_and(|wait| wait > settings.max_retry_after) {
                    return Err(PushError::Unavailable {
                        reason,
                        retry_after,
                    });
                }
                // The renewal attempt is not a transient failure's attempt.
                let transient_attempts = self.made - u32::from(self.renewed_auth);
                if transient_attempts >= settings.max_attempts {
                    return Err(PushError::Unavailable {
                        reason,
                        retry_after,
                    });
                }
                let wait = retry_after.unwrap_or_else(|| backoff(transient_attempts));
                tracing::debug!(%reason, wait_ms = wait.as_millis() as u64, "transient failure, retrying");
                inner.clock.sleep(wait).await;
                Ok(())
            }
        }
    }
}

/// 1 s, 2 s, 4 s… after the first, second, third failed attempt.
fn backoff(failed_attempts: u32) -> Duration {
    Duration::from_secs(1 << failed_attempts.saturating_sub(1).min(10))
}

/// A transport error in words, without the URL (an APNs URL holds the device token).
fn describe(error: reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("no answer within {} ms", timeout.as_millis());
    }
    let kind = if error.is_connect() {
        "could not connect"
    } else {
        "the connection failed"
    };
    let error = error.without_url();
    let mut text = format!("{kind}: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A base URL without its trailing slashes, checked to be `http(s)`.
fn base_url(field: &str, url: &str) -> Result<String, PushError> {
    http_url(field, url)?;
    Ok(url.trim_end_matches('/').to_owned())
}

fn http_url(field: &str, url: &str) -> Result<Url, PushError> {
    let parsed = Url::parse(url)
        .map_err(|error| PushError::Setup(format!("{field} is not a valid URL: {error}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(PushError::Setup(format!(
            "{field} must be an http:// or https:// URL with a host"
        )));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_retry_after(value: &str) -> Answer {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, value.parse().unwrap());
        Answer {
            status: 429,
            headers,
            body: Vec::new(),
        }
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_as_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            with_retry_after("7").retry_after(now),
            Some(Duration::from_secs(7))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            with_retry_after(&later).retry_after(now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(
            with_retry_after(&earlier).retry_after(now),
            Some(Duration::ZERO)
        );
        assert_eq!(with_retry_after("soon").retry_after(now), None);
    }

    #[test]
    fn backoff_doubles_from_one_second() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(4));
    }
}
