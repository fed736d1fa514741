//! The codec server: Temporal's `/encode` and `/decode` protocol over the payload codec every
//! process of ours runs, so that an operator whose Web UI or `temporal` CLI points here reads
//! payloads in clear, and nobody else does.
//!
//! The codec key is the server's, derived from `PIDGR_SECRET_KEY`: it opens every
//! organisation's payloads, and `/encode` seals anything under it. That is a power over the
//! whole server, so no API key carries it, whatever its role: the routes take the operator's
//! codec token (`PIDGR_CODEC_TOKEN`, see [`CodecToken`]) and are off (404) when none is set.
//!
//! - `POST /codec/decode` and `POST /codec/encode` take and answer `{"payloads": [...]}`
//!   (proto3 JSON, see [`pidgr_codec::wire`]), the token sent as `Authorization: Bearer
//!   <token>` (the CLI's `--codec-auth`).
//! - `/codec/key/{token}/decode|encode` take the token in the path instead, for the Web UI,
//!   which can send no header of ours.
//! - A missing or wrong token is a 401 and counts against the client address's rate limit,
//!   like any failed authentication; the operator's requests count against one bucket of
//!   their own.
//! - Any origin may call them from a browser (CORS, preflight included): the token is never
//!   ambient (no cookie), so a page can only use a token it already has.
//!
//! Decoding uses the Temporal client's own codec, so what the codec server decodes is exactly
//! what the API and the worker encrypt. A payload of a key this server does not hold comes back
//! unchanged (still `binary/encrypted`, naming its key id); a corrupt one fails the request
//! with a 400 that says which.

use std::fmt;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody, PathRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use pidgr_codec::wire::PayloadsBody;
use pidgr_codec::{CodecError, codec_error};
use sha2::{Digest, Sha256};
use temporalio_client::NamespacedClient;
use temporalio_common::data_converters::{SerializationContextData, WorkflowSerializationContext};

use crate::auth::Access;
use crate::routes::RouteSpec;
use crate::{ApiError, AppState};

/// The codec routes take larger bodies than the rest of the API: a history's payloads (up to
/// Temporal's 2 MB each) come in batches.
pub const CODEC_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The rate-limit bucket of the operator's requests (API key ids never look like this).
const OPERATOR_BUCKET: &str = "codec operator token";

/// The operator's codec token, kept only as its SHA-256 digest: a presented token is hashed
/// and the digests compared in constant time, so neither the comparison's timing nor a memory
/// dump gives the token away. Its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct CodecToken {
    digest: [u8; 32],
}

impl CodecToken {
    /// The shortest token accepted: 32 characters of `openssl rand -hex 32` are 128 bits.
    pub const MIN_CHARS: usize = 32;

    /// A token of at least [`Self::MIN_CHARS`] characters, each a letter, digit, `-`, `.`,
    /// `_` or `~`, so that it goes into the Web UI's codec URL as it is.
    pub fn new(token: &str) -> Result<Self, String> {
        if token.chars().count() < Self::MIN_CHARS {
            return Err(format!(
                "the codec token must be at least {} characters long (e.g. `openssl rand -hex 32`)",
                Self::MIN_CHARS
            ));
        }
        if !token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~'))
        {
            return Err(
                "the codec token may hold only letters, digits, `-`, `.`, `_` and `~` (it goes \
                 into a URL as it is)"
                    .to_owned(),
            );
        }
        Ok(CodecToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        })
    }

    fn matches(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        presented
            .iter()
            .zip(&self.digest)
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
    }
}

impl fmt::Debug for CodecToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodecToken(..)")
    }
}

/// Every codec route, for the route table's documentation and tests.
pub fn specs() -> Vec<RouteSpec> {
    [
        "/codec/decode",
        "/codec/encode",
        "/codec/key/{token}/decode",
        "/codec/key/{token}/encode",
    ]
    .into_iter()
    .map(|path| RouteSpec {
        method: Method::POST,
        path,
        access: Access::Operator,
        idempotent: false,
    })
    .collect()
}

#[derive(Clone, Copy)]
enum Direction {
    Encode,
    Decode,
}

pub fn router(state: AppState) -> Router<AppState> {
    let route = |direction: Direction| -> MethodRouter<AppState> {
        post(move |state: State<AppState>, request: Request| convert(state, direction, request))
            .route_layer(DefaultBodyLimit::max(CODEC_MAX_BODY_BYTES))
    };
    let in_header = |direction| {
        route(direction).route_layer(from_fn_with_state(state.clone(), token_in_header))
    };
    let in_path =
        |direction| route(direction).route_layer(from_fn_with_state(state.clone(), token_in_path));
    Router::new()
        .route("/codec/decode", in_header(Direction::Decode))
        .route("/codec/encode", in_header(Direction::Encode))
        .route("/codec/key/{token}/decode", in_path(Direction::Decode))
        .route("/codec/key/{token}/encode", in_path(Direction::Encode))
        .layer(from_fn(cors))
}

/// `Authorization: Bearer <token>`, as the `temporal` CLI's `--codec-auth` sends it.
async fn token_in_header(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    admit(&state, presented, &request)?;
    Ok(next.run(request).await)
}

/// `/codec/key/{token}/…`, for the Web UI. A path that does not even decode is a wrong token.
async fn token_in_path(
    State(state): State<AppState>,
    token: Result<Path<String>, PathRejection>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = token.ok().map(|Path(token)| token);
    admit(&state, presented.as_deref(), &request)?;
    Ok(next.run(request).await)
}

/// Lets the operator's token through; anything else is a 401 charged to the client address
/// (404 when the server has no token: the codec server is off).
fn admit(state: &AppState, presented: Option<&str>, request: &Request) -> Result<(), ApiError> {
    let address = request.extensions().get::<ConnectInfo<SocketAddr>>();
    let Some(token) = &state.settings.codec_token else {
        state.limiters.charge_address(address)?;
        return Err(ApiError::CodecServerOff);
    };
    match presented {
        Some(presented) if token.matches(presented) => state.limiters.charge_key(OPERATOR_BUCKET),
        _ => {
            state.limiters.charge_address(address)?;
            Err(ApiError::BadCodecToken)
        }
    }
}

/// The whole body, up to the route's limit: over it is a 413, a body that could not be read
/// (the client went away, a broken chunked encoding) a 400.
async fn read_body(request: Request) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, &())
        .await
        .map_err(|rejection| match rejection {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                ApiError::PayloadTooLarge(CODEC_MAX_BODY_BYTES)
            }
            other => ApiError::BadRequest(other.body_text()),
        })
}

/// Runs the payloads through the Temporal client's codec.
async fn convert(
    State(state): State<AppState>,
    direction: Direction,
    request: Request,
) -> Result<Response, ApiError> {
    let bytes = read_body(request).await?;
    let body: PayloadsBody = crate::input::parse_json(&bytes)?;
    let payloads = body
        .to_payloads()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let codec = state.temporal.data_converter().codec();
    let context = SerializationContextData::Workflow(WorkflowSerializationContext::new());
    let mut answer = Vec::with_capacity(payloads.len());
    // One at a time, so that a payload of an unknown key is answered as it came while the
    // others are decoded.
    for (index, payload) in payloads.into_iter().enumerate() {
        let converted = match direction {
            Direction::Encode => codec.encode(&context, vec![payload]).await,
            Direction::Decode => match codec.decode(&context, vec![payload.clone()]).await {
                Err(error) if matches!(codec_error(&error), Some(CodecError::UnknownKey(_))) => {
                    tracing::info!(%error, "codec server: payload {index} answered unchanged");
                    Ok(vec![payload])
                }
                other => other,
            },
        };
        match converted {
            Ok(converted) => answer.extend(converted),
            Err(error) => {
                return Err(match codec_error(&error) {
                    Some(CodecError::Corrupt(why)) => ApiError::BadRequest(format!(
                        "/payloads/{index} could not be decoded: it is marked as encrypted but {why}"
                    )),
                    _ => ApiError::Internal(format!("payload codec on /payloads/{index}: {error}")),
                });
            }
        }
    }
    Ok(axum::Json(PayloadsBody::from_payloads(&answer)).into_response())
}

/// Lets the Web UI (any origin) call the codec routes: answers preflights itself, before the
/// permission check (browsers send them without credentials), and marks every answer as
/// readable cross-origin. Credentials mode is not allowed: nothing here rides on cookies.
async fn cors(request: Request, next: Next) -> Response {
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, x-namespace"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        response
    } else {
        next.run(request).await
    };
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower_service::Service;

    #[test]
    fn the_codec_token_is_long_url_safe_and_compared_whole() {
        assert!(CodecToken::new(&"a".repeat(CodecToken::MIN_CHARS - 1)).is_err());
        assert!(CodecToken::new(&format!("{}/x", "a".repeat(32))).is_err());
        assert!(CodecToken::new(&format!("{} x", "a".repeat(32))).is_err());
        let token = "0123456789abcdef".repeat(4);
        let codec = CodecToken::new(&token).unwrap();
        assert!(codec.matches(&token));
        assert!(!codec.matches(&token[..63]));
        assert!(!codec.matches(&format!("{token}0")));
        assert!(!codec.matches(""));
        assert_eq!(format!("{codec:?}"), "CodecToken(..)");
    }

    /// What reading `body` answers under a 16-byte limit.
    async fn reading(body: Body) -> StatusCode {
        let mut app: Router = Router::new()
            .route(
                "/",
                post(|request: Request| async { read_body(request).await.map(|_| StatusCode::OK) }),
            )
            .layer(DefaultBodyLimit::max(16));
        let request = Request::post("/").body(body).expect("a request");
        app.call(request).await.expect("an answer").status()
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_413_and_one_that_breaks_off_is_400() {
        assert_eq!(reading(Body::from("{}")).await, StatusCode::OK);
        assert_eq!(
            reading(Body::from("x".repeat(17))).await,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let broken = futures_util::stream::iter([
            Ok(Bytes::from_static(b"{\"payl")),
            Err(std::io::Error::other("the client went away")),
        ]);
        assert_eq!(
            reading(Body::from_stream(broken)).await,
            StatusCode::BAD_REQUEST
        );
    }
}
