//! A fake of APNs' provider API: cleartext HTTP/2 with prior knowledge (HTTP/1.1 is refused,
//! as by real APNs), ES256 provider tokens, and Apple's status codes and reasons.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::body::Incoming;
use hyper::{HeaderMap, Method, Request, Version};
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use serde_json::{Value, json};

use crate::server::{self, Connection, Protocol, Reply, Server, b64, json_reply};

const MAX_PAYLOAD_BYTES: usize = 4096;
/// Apple refuses a longer `apns-collapse-id`.
const MAX_COLLAPSE_ID_BYTES: usize = 64;

/// Apple refuses provider tokens issued more than an hour ago.
const MAX_PROVIDER_TOKEN_AGE: Duration = Duration::from_secs(3600);

/// How the fake answers one push to a device token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApnsBehaviour {
    /// 200 with an `apns-id` header.
    Success,
    /// 400 `BadDeviceToken`.
    BadDeviceToken,
    /// 410 `Unregistered`, with the `timestamp` of when the token stopped being valid.
    Unregistered,
    /// 400 `DeviceTokenNotForTopic`.
    DeviceTokenNotForTopic,
    /// 429 `TooManyRequests`.
    TooManyRequests,
    /// 500 `InternalServerError`.
    InternalServerError,
    /// 503 `ServiceUnavailable`.
    ServiceUnavailable,
    /// 403 `ExpiredProviderToken`, whatever the token's age.
    ExpiredProviderToken,
    /// Success, after the server takes this long (for timeout tests).
    Slow(Duration),
    /// Closes the TCP connection (and every stream on it) with a reset, without an answer.
    ResetConnection,
}

/// One push as the fake received it (whether or not it was accepted).
#[derive(Clone, Debug)]
pub struct ApnsReceived {
    /// The device token from the path.
    pub token: String,
    /// The payload as JSON (`Null` if it was not JSON).
    pub body: Value,
    pub version: Version,
    pub at: SystemTime,
    /// The provider token (the JWT after `bearer `), if any.
    pub provider_token: Option<String>,
    /// The provider token's `iat` claim, if it could be read: a test sees renewal through it.
    pub jwt_iat: Option<u64>,
    /// Every request header, for assertions on `apns-topic`, `apns-push-type`, `apns-priority`.
    pub headers: HeaderMap,
    /// The `apns-collapse-id` header, if any.
    pub collapse_id: Option<String>,
}

/// The running fake; stops when dropped.
pub struct FakeApns {
    server: Server,
    state: Arc<State>,
}

struct State {
    team_id: String,
    key_id: String,
    public_key: Vec<u8>,
    next_id: AtomicU64,
    scripts: Mutex<HashMap<String, VecDeque<ApnsBehaviour>>>,
    received: Mutex<Vec<ApnsReceived>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FakeApns {
    /// Starts the fake for one team and key. `public_key` is the uncompressed P-256 point (see
    /// [`crate::generate_apns_key`]).
    pub async fn start(team_id: &str, key_id: &str, public_key: &[u8]) -> FakeApns {
        Self::start_on_port(0, team_id, key_id, public_key).await
    }

    /// [`FakeApns::start`] on `127.0.0.1:port` (0: any free port), for the fakes binary.
    pub async fn start_on_port(
        port: u16,
        team_id: &str,
        key_id: &str,
        public_key: &[u8],
    ) -> FakeApns {
        let bound = server::bind_port(port).await;
        let state = Arc::new(State {
            team_id: team_id.to_owned(),
            key_id: key_id.to_owned(),
            public_key: public_key.to_vec(),
            next_id: AtomicU64::new(1),
            scripts: Mutex::default(),
            received: Mutex::default(),
        });
        let handler_state = Arc::clone(&state);
        let server = bound.serve(
            Protocol::Http2,
            Arc::new(move |request, connection| {
                let state = Arc::clone(&handler_state);
                Box::pin(async move { state.handle(request, connection).await })
            }),
        );
        FakeApns { server, state }
    }

    /// The base URL for `PushEndpoints::apns_production_url` or `apns_sandbox_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// Every push is answered this much later, like the real APNs across the network; 0 (the
    /// default) answers at once. Streams of one HTTP/2 connection wait side by side.
    pub fn set_latency(&self, latency: Duration) {
        self.server.set_latency(latency);
    }

    /// Every push request since the last call, and forgets them: a long-running fake (the
    /// benchmark's) would otherwise keep every request it ever got.
    pub fn take_received(&self) -> Vec<ApnsReceived> {
        std::mem::take(&mut *lock(&self.state.received))
    }

    /// Queues behaviours for pushes to `token`, consumed one request at a time; once the queue
    /// is empty, pushes succeed.
    pub fn script(&self, token: &str, behaviours: Vec<ApnsBehaviour>) {
        lock(&self.state.scripts)
            .entry(token.to_owned())
            .or_default()
            .extend(behaviours);
    }

    /// Every push request so far, in arrival order.
    pub fn received(&self) -> Vec<ApnsReceived> {
        lock(&self.state.received).clone()
    }
}

impl State {
    async fn handle(&self, request: Request<Incoming>, connection: Connection) -> Reply {
        let Some(token) = request
            .uri()
            .path()
            .strip_prefix("/3/device/")
            .map(str::to_owned)
        else {
            return apns_error(404, "BadPath");
        };
        if request.method() != Method::POST {
            return apns_error(405, "MethodNotAllowed");
        }
        let version = request.version();
        let (parts, body) = server::read_body(request).await;
        let provider_token = parts
            .headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("bearer "))
            .map(str::to_owned);
        let claims = provider_token.as_deref().and_then(claims_of);
        lock(&self.received).push(ApnsReceived {
            token: token.clone(),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            version,
            at: SystemTime::now(),
            provider_token: provider_token.clone(),
            jwt_iat: claims.as_ref().and_then(|claims| claims["iat"].as_u64()),
            headers: parts.headers.clone(),
            collapse_id: parts
                .headers
                .get("apns-collapse-id")
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned()),
        });

        let Some(provider_token) = provider_token else {
            return apns_error(403, "MissingProviderToken");
        };
        if let Err(reason) = self.check_provider_token(&provider_token) {
            return apns_error(403, reason);
        }
        if token.is_empty() {
            return apns_error(400, "MissingDeviceToken");
        }
        if !parts.headers.contains_key("apns-topic") {
            return apns_error(400, "MissingTopic");
        }
        if !parts.headers.contains_key("apns-push-type") {
            return apns_error(400, "InvalidPushType");
        }
        if parts
            .headers
            .get("apns-collapse-id")
            .is_some_and(|id| id.len() > MAX_COLLAPSE_ID_BYTES)
        {
            return apns_error(400, "BadCollapseId");
        }
        if body.is_empty() {
            return apns_error(400, "PayloadEmpty");
        }
        if body.len() > MAX_PAYLOAD_BYTES {
            return apns_error(413, "PayloadTooLarge");
        }

        let behaviour = lock(&self.scripts)
            .get_mut(&token)
            .and_then(VecDeque::pop_front)
            .unwrap_or(ApnsBehaviour::Success);
        match behaviour {
            ApnsBehaviour::Success => self.success(),
            ApnsBehaviour::Slow(wait) => {
                // The server being slow, not the test waiting.
                tokio::time::sleep(wait).await;
                self.success()
            }
            ApnsBehaviour::ResetConnection => connection.reset().await,
            ApnsBehaviour::BadDeviceToken => apns_error(400, "BadDeviceToken"),
            ApnsBehaviour::DeviceTokenNotForTopic => apns_error(400, "DeviceTokenNotForTopic"),
            ApnsBehaviour::Unregistered => {
                let millis = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis() as u64;
                json_reply(410, &json!({"reason": "Unregistered", "timestamp": millis}))
            }
            ApnsBehaviour::TooManyRequests => apns_error(429, "TooManyRequests"),
            ApnsBehaviour::InternalServerError => apns_error(500, "InternalServerError"),
            ApnsBehaviour::ServiceUnavailable => apns_error(503, "ServiceUnavailable"),
            ApnsBehaviour::ExpiredProviderToken => apns_error(403, "ExpiredProviderToken"),
        }
    }

    /// Apple's checks, in Apple's words.
    fn check_provider_token(&self, jwt: &str) -> Result<(), &'static str> {
        let Some((signed, signature)) = jwt.rsplit_once('.') else {
            return Err("InvalidProviderToken");
        };
        let Some((header, _)) = signed.split_once('.') else {
            return Err("InvalidProviderToken");
        };
        let header: Value = b64(header)
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or("InvalidProviderToken")?;
        if header["alg"] != "ES256" || header["kid"] != self.key_id.as_str() {
            return Err("InvalidProviderToken");
        }
        let signature = b64(signature).ok_or("InvalidProviderToken")?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.public_key)
            .verify(signed.as_bytes(), &signature)
            .map_err(|_| "InvalidProviderToken")?;
        let claims = claims_of(jwt).ok_or("InvalidProviderToken")?;
        if claims["iss"] != self.team_id.as_str() {
            return Err("InvalidProviderToken");
        }
        let iat = claims["iat"].as_u64().ok_or("InvalidProviderToken")?;
        let issued = UNIX_EPOCH + Duration::from_secs(iat);
        let too_old = SystemTime::now()
            .duration_since(issued)
            .is_ok_and(|age| age > MAX_PROVIDER_TOKEN_AGE);
        if too_old {
            return Err("ExpiredProviderToken");
        }
        Ok(())
    }

    fn success(&self) -> Reply {
        let n = self.next_id.fetch_add(1, Ordering::SeqCst);
        let mut reply = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
        let id = format!("00000000-0000-4000-8000-{n:012X}");
        reply.headers_mut().insert(
            "apns-id",
            hyper::header::HeaderValue::from_str(&id).expect("a hex uuid is a header value"),
        );
        reply
    }
}

/// The (unverified) claims of a JWS, for recording.
fn claims_of(jwt: &str) -> Option<Value> {
    let claims = jwt.split('.').nth(1)?;
    serde_json::from_slice(&b64(claims)?).ok()
}

fn apns_error(status: u16, reason: &str) -> Reply {
    json_reply(status, &json!({ "reason": reason }))
}
