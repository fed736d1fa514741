//! A fake of Google's OAuth2 token endpoint and FCM HTTP v1 `messages:send`, over HTTP/1.1.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use hyper::body::Incoming;
use hyper::{Method, Request, Version};
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use serde_json::{Value, json};

use crate::server::{self, Connection, Protocol, Reply, Server, b64, json_reply};

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const MAX_PAYLOAD_BYTES: usize = 4096;

/// How the fake answers one send to a device token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FcmBehaviour {
    /// 200 `{"name": "projects/{p}/messages/<n>"}`.
    Success,
    /// 404 `NOT_FOUND`, errorCode `UNREGISTERED`.
    Unregistered,
    /// 400 `INVALID_ARGUMENT`, errorCode `INVALID_ARGUMENT` (an invalid registration token).
    InvalidArgument,
    /// 403 `PERMISSION_DENIED`, errorCode `SENDER_ID_MISMATCH`.
    SenderIdMismatch,
    /// 401 `UNAUTHENTICATED`, errorCode `THIRD_PARTY_AUTH_ERROR` (the APNs credentials uploaded
    /// to Firebase are wrong: a 401 that a new access token does not fix).
    ThirdPartyAuthError,
    /// 429 `RESOURCE_EXHAUSTED`, errorCode `QUOTA_EXCEEDED`, with `Retry-After` if given.
    QuotaExceeded { retry_after: Option<u64> },
    /// 503 `UNAVAILABLE`.
    Unavailable,
    /// 500 `INTERNAL`.
    Internal,
    /// Success, after the server takes this long (for timeout tests).
    Slow(Duration),
    /// Closes the TCP connection with a reset, without an answer.
    ResetConnection,
}

/// One `messages:send` request as the fake received it.
#[derive(Clone, Debug)]
pub struct FcmReceived {
    /// `message.token` ("" when the body had none).
    pub token: String,
    /// The body as JSON (`Null` if it was not JSON).
    pub body: Value,
    /// The bearer token presented, if any.
    pub access_token: Option<String>,
    pub version: Version,
    pub at: SystemTime,
    /// `message.android.collapse_key`, if any.
    pub collapse_key: Option<String>,
    /// `message.apns.headers.apns-collapse-id` (what FCM hands APNs for iOS devices), if any.
    pub apns_collapse_id: Option<String>,
}

/// The running fake; stops when dropped.
pub struct FakeFcm {
    server: Server,
    state: Arc<State>,
}

struct State {
    project_id: String,
    client_email: String,
    public_key: Vec<u8>,
    token_url: String,
    issued: Mutex<HashSet<String>>,
    next_access: AtomicU64,
    next_message: AtomicU64,
    token_requests: AtomicUsize,
    scripts: Mutex<HashMap<String, VecDeque<FcmBehaviour>>>,
    received: Mutex<Vec<FcmReceived>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FakeFcm {
    /// Starts the fake for one project and service account. `service_account_public_key` is the
    /// DER `RSAPublicKey` assertions are verified with (see
    /// [`crate::test_service_account_public_key`]).
    pub async fn start(
        project_id: &str,
        client_email: &str,
        service_account_public_key: &[u8],
    ) -> FakeFcm {
        Self::start_on_port(0, project_id, client_email, service_account_public_key).await
    }

    /// [`FakeFcm::start`] on `127.0.0.1:port` (0: any free port), for the fakes binary.
    pub async fn start_on_port(
        port: u16,
        project_id: &str,
        client_email: &str,
        service_account_public_key: &[u8],
    ) -> FakeFcm {
        let bound = server::bind_port(port).await;
        let state = Arc::new(State {
            project_id: project_id.to_owned(),
            client_email: client_email.to_owned(),
            public_key: service_account_public_key.to_vec(),
            token_url: format!("http://{}/token", bound.addr()),
            issued: Mutex::default(),
            next_access: AtomicU64::new(1),
            next_message: AtomicU64::new(1),
            token_requests: AtomicUsize::new(0),
            scripts: Mutex::default(),
            received: Mutex::default(),
        });
        let handler_state = Arc::clone(&state);
        let server = bound.serve(
            Protocol::Http1,
            Arc::new(move |request, connection| {
                let state = Arc::clone(&handler_state);
                Box::pin(async move { state.handle(request, connection).await })
            }),
        );
        FakeFcm { server, state }
    }

    /// The base URL for `PushEndpoints::fcm_base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// Every request (token exchanges included) is answered this much later, like a real
    /// provider across the network; 0 (the default) answers at once.
    pub fn set_latency(&self, latency: Duration) {
        self.server.set_latency(latency);
    }

    /// Every `messages:send` request since the last call, and forgets them: a long-running
    /// fake (the benchmark's) would otherwise keep every request it ever got.
    pub fn take_received(&self) -> Vec<FcmReceived> {
        std::mem::take(&mut *lock(&self.state.received))
    }

    /// The token endpoint for `PushEndpoints::fcm_token_url` (also the assertion's `aud`).
    pub fn token_url(&self) -> String {
        self.state.token_url.clone()
    }

    /// Queues behaviours for sends to `token`, consumed one request at a time; once the queue
    /// is empty, sends succeed.
    pub fn script(&self, token: &str, behaviours: Vec<FcmBehaviour>) {
        lock(&self.state.scripts)
            .entry(token.to_owned())
            .or_default()
            .extend(behaviours);
    }

    /// Forgets every access token issued so far: the next send with one gets 401
    /// `UNAUTHENTICATED`, as after Google revoked it.
    pub fn revoke_access_tokens(&self) {
        lock(&self.state.issued).clear();
    }

    /// Every `messages:send` request so far, in arrival order.
    pub fn received(&self) -> Vec<FcmReceived> {
        lock(&self.state.received).clone()
    }

    /// How many requests reached the token endpoint.
    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }
}

impl State {
    async fn handle(&self, request: Request<Incoming>, connection: Connection) -> Reply {
        let path = request.uri().path().to_owned();
        if request.method() != Method::POST {
            return google_error(405, "METHOD_NOT_ALLOWED", "Only POST is supported.", None);
        }
        if path == "/token" {
            return self.token(request).await;
        }
        let send_path = format!("/v1/projects/{}/messages:send", self.project_id);
        if path != send_path {
            return google_error(404, "NOT_FOUND", "Requested entity was not found.", None);
        }
        self.send(request, connection).await
    }

    async fn token(&self, request: Request<Incoming>) -> Reply {
        self.token_requests.fetch_add(1, Ordering::SeqCst);
        let (_, body) = server::read_body(request).await;
        let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
        if form.get("grant_type").map(String::as_str) != Some(GRANT_TYPE) {
            return json_reply(
                400,
                &json!({"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}),
            );
        }
        let Some(assertion) = form.get("assertion") else {
            return invalid_grant("No assertion.");
        };
        if let Err(problem) = self.check_assertion(assertion) {
            return invalid_grant(problem);
        }
        let access = format!(
            "fake-access-{}",
            self.next_access.fetch_add(1, Ordering::SeqCst)
        );
        lock(&self.issued).insert(access.clone());
        json_reply(
            200,
            &json!({"access_token": access, "expires_in": 3600, "token_type": "Bearer"}),
        )
    }

    fn check_assertion(&self, assertion: &str) -> Result<(), &'static str> {
        let parts: Vec<&str> = assertion.split('.').collect();
        let [header, claims, signature] = parts[..] else {
            return Err("The assertion is not a JWS.");
        };
        let header: Value = b64(header)
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or("The assertion's header is not JSON.")?;
        if header["alg"] != "RS256" {
            return Err("The assertion is not signed with RS256.");
        }
        let signature = b64(signature).ok_or("The assertion's signature is not base64url.")?;
        let signed = &assertion[..header_len(assertion)];
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &self.public_key)
            .verify(signed.as_bytes(), &signature)
            .map_err(|_| "Invalid JWT Signature.")?;
        let claims: Value = b64(claims)
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or("The assertion's claims are not JSON.")?;
        if claims["iss"] != self.client_email.as_str() {
            return Err("Invalid issuer.");
        }
        if claims["aud"] != self.token_url.as_str() {
            return Err("Invalid audience.");
        }
        let scopes = claims["scope"].as_str().unwrap_or_default();
        if !scopes.split(' ').any(|scope| scope == SCOPE) {
            return Err("The firebase.messaging scope is missing.");
        }
        let (Some(iat), Some(exp)) = (claims["iat"].as_u64(), claims["exp"].as_u64()) else {
            return Err("iat and exp are required.");
        };
        if exp <= iat || exp - iat > 3600 {
            return Err("Invalid JWT: exp must be after iat and at most an hour later.");
        }
        Ok(())
    }

    async fn send(&self, request: Request<Incoming>, connection: Connection) -> Reply {
        let version = request.version();
        let access_token = request
            .headers()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::to_owned);
        let (_, body) = server::read_body(request).await;
        let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let token = parsed["message"]["token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        lock(&self.received).push(FcmReceived {
            token: token.clone(),
            body: parsed.clone(),
            access_token: access_token.clone(),
            version,
            at: SystemTime::now(),
            collapse_key: parsed["message"]["android"]["collapse_key"]
                .as_str()
                .map(str::to_owned),
            apns_collapse_id: parsed["message"]["apns"]["headers"]["apns-collapse-id"]
                .as_str()
                .map(str::to_owned),
        });

        let authorised = access_token.is_some_and(|access| lock(&self.issued).contains(&access));
        if !authorised {
            return google_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, \
                 login cookie or other valid authentication credential.",
                None,
            );
        }
        if let Err((field, problem)) = check_message(&parsed, body.len()) {
            return json_reply(
                400,
                &json!({"error": {
                    "code": 400,
                    "message": problem,
                    "status": "INVALID_ARGUMENT",
                    "details": [{
                        "@type": "type.googleapis.com/google.rpc.BadRequest",
                        "fieldViolations": [{"field": field, "description": problem}],
                    }],
                }}),
            );
        }

        let behaviour = lock(&self.scripts)
            .get_mut(&token)
            .and_then(VecDeque::pop_front)
            .unwrap_or(FcmBehaviour::Success);
        match behaviour {
            FcmBehaviour::Success => self.success(),
            FcmBehaviour::Slow(wait) => {
                // The server being slow, not the test waiting.
                tokio::time::sleep(wait).await;
                self.success()
            }
            FcmBehaviour::ResetConnection => connection.reset().await,
            FcmBehaviour::Unregistered => google_error(
                404,
                "NOT_FOUND",
                "Requested entity was not found.",
                Some("UNREGISTERED"),
            ),
            FcmBehaviour::InvalidArgument => google_error(
                400,
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                Some("INVALID_ARGUMENT"),
            ),
            FcmBehaviour::SenderIdMismatch => google_error(
                403,
                "PERMISSION_DENIED",
                "SenderId mismatch",
                Some("SENDER_ID_MISMATCH"),
            ),
            FcmBehaviour::ThirdPartyAuthError => google_error(
                401,
                "UNAUTHENTICATED",
                "Auth error from APNS or Web Push Service",
                Some("THIRD_PARTY_AUTH_ERROR"),
            ),
            FcmBehaviour::QuotaExceeded { retry_after } => {
                let mut reply = google_error(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "Quota exceeded for quota metric 'Send requests'.",
                    Some("QUOTA_EXCEEDED"),
                );
                if let Some(seconds) = retry_after {
                    reply
                        .headers_mut()
                        .insert("retry-after", hyper::header::HeaderValue::from(seconds));
                }
                reply
            }
            FcmBehaviour::Unavailable => google_error(
                503,
                "UNAVAILABLE",
                "The service is currently unavailable.",
                Some("UNAVAILABLE"),
            ),
            FcmBehaviour::Internal => google_error(
                500,
                "INTERNAL",
                "Internal error encountered.",
                Some("INTERNAL"),
            ),
        }
    }

    fn success(&self) -> Reply {
        let n = self.next_message.fetch_add(1, Ordering::SeqCst);
        json_reply(
            200,
            &json!({"name": format!("projects/{}/messages/{n}", self.project_id)}),
        )
    }
}

/// The length of `header.claims`, the signed part of a JWS.
fn header_len(jws: &str) -> usize {
    jws.rfind('.').unwrap_or(jws.len())
}

/// The v1 request checks the fake makes: the field at fault and why.
fn check_message(body: &Value, size: usize) -> Result<(), (&'static str, String)> {
    if size > MAX_PAYLOAD_BYTES {
        return Err((
            "message",
            format!("Message is too big: {size} bytes, the limit is {MAX_PAYLOAD_BYTES}."),
        ));
    }
    let message = body
        .get("message")
        .and_then(Value::as_object)
        .ok_or(("message", "The message is missing.".to_owned()))?;
    if message
        .get("token")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(("message.token", "The token is missing.".to_owned()));
    }
    for (name, object) in [
        ("message.notification", "notification"),
        ("message.data", "data"),
    ] {
        if let Some(value) = message.get(object) {
            let all_strings = value
                .as_object()
                .is_some_and(|fields| fields.values().all(Value::is_string));
            if !all_strings {
                return Err((name, format!("{name} must map names to strings.")));
            }
        }
    }
    Ok(())
}

fn google_error(status: u16, grpc: &str, message: &str, fcm_code: Option<&str>) -> Reply {
    let details = match fcm_code {
        Some(code) => json!([{
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": code,
        }]),
        None => json!([]),
    };
    json_reply(
        status,
        &json!({"error": {"code": status, "message": message, "status": grpc, "details": details}}),
    )
}

fn invalid_grant(description: &str) -> Reply {
    json_reply(
        400,
        &json!({"error": "invalid_grant", "error_description": description}),
    )
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ring::rand::SystemRandom;
    use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
    use rustls_pki_types::PrivatePkcs8KeyDer;
    use rustls_pki_types::pem::PemObject;

    use super::*;
    use crate::keys::{TEST_SERVICE_ACCOUNT_KEY_PEM, test_service_account_public_key};

    const EMAIL: &str = "push@example.iam.gserviceaccount.com";
    const TOKEN_URL: &str = "http://127.0.0.1:1/token";

    fn state() -> State {
        State {
            project_id: "p".into(),
            client_email: EMAIL.into(),
            public_key: test_service_account_public_key(),
            token_url: TOKEN_URL.into(),
            issued: Mutex::default(),
            next_access: AtomicU64::new(1),
            next_message: AtomicU64::new(1),
            token_requests: AtomicUsize::new(0),
            scripts: Mutex::default(),
            received: Mutex::default(),
        }
    }

    fn sign(claims: &Value) -> String {
        let der =
            PrivatePkcs8KeyDer::from_pem_slice(TEST_SERVICE_ACCOUNT_KEY_PEM.as_bytes()).unwrap();
        let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "typ": "JWT"}).to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; key.public().modulus_len()];
        key.sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            input.as_bytes(),
            &mut signature,
        )
        .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    fn claims() -> Value {
        json!({"iss": EMAIL, "scope": SCOPE, "aud": TOKEN_URL, "iat": 1000, "exp": 4600})
    }

    #[test]
    fn a_well_signed_assertion_is_accepted() {
        assert_eq!(state().check_assertion(&sign(&claims())), Ok(()));
    }

    #[test]
    fn a_tampered_assertion_fails_the_signature_check() {
        let signed = sign(&claims());
        let mut other = claims();
        other["iss"] = json!("attacker@example.com");
        let forged_claims = URL_SAFE_NO_PAD.encode(other.to_string());
        let parts: Vec<&str> = signed.split('.').collect();
        let forged = format!("{}.{forged_claims}.{}", parts[0], parts[2]);
        assert_eq!(
            state().check_assertion(&forged),
            Err("Invalid JWT Signature.")
        );
    }

    #[test]
    fn claims_are_checked() {
        for (field, value, problem) in [
            ("iss", json!("x@example.com"), "Invalid issuer."),
            (
                "aud",
                json!("https://oauth2.googleapis.com/token"),
                "Invalid audience.",
            ),
            (
                "scope",
                json!("https://www.googleapis.com/auth/cloud-platform"),
                "The firebase.messaging scope is missing.",
            ),
            (
                "exp",
                json!(4601),
                "Invalid JWT: exp must be after iat and at most an hour later.",
            ),
        ] {
            let mut claims = claims();
            claims[field] = value;
            assert_eq!(
                state().check_assertion(&sign(&claims)),
                Err(problem),
                "{field}"
            );
        }
    }
}
