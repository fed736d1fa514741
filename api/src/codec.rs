//! The codec server: Temporal's `/encode` and `/decode` protocol over the payload codec every
//! process of ours runs, so that an operator whose Web UI or `temporal` CLI points here reads
//! payloads in clear, and nobody else does.
//!
//! - `POST /codec/decode` and `POST /codec/encode` take and answer `{"payloads": [...]}`
//!   (proto3 JSON, see [`pidgr_codec::wire`]) and need an API key whose role holds
//!   `codec:decode`, sent as `Authorization: Bearer <key>` (the CLI's `--codec-auth`).
//! - `/codec/key/{api_key}/decode|encode` take the key in the path instead, for the Web UI,
//!   which can send no header of ours; the same permission applies.
//! - Any origin may call them from a browser (CORS, preflight included): the key is never
//!   ambient (no cookie), so a page can only use a key it already has.
//!
//! Decoding uses the Temporal client's own codec, so what the codec server decodes is exactly
//! what the API and the worker encrypt. A payload of a key this server does not hold comes back
//! unchanged (still `binary/encrypted`, naming its key id); a corrupt one fails the request
//! with a 400 that says which.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use pidgr_codec::wire::PayloadsBody;
use pidgr_codec::{CodecError, codec_error};
use pidgr_store::Permission;
use temporalio_client::NamespacedClient;
use temporalio_common::data_converters::{SerializationContextData, WorkflowSerializationContext};

use crate::auth::{Access, authorize};
use crate::routes::RouteSpec;
use crate::{ApiError, AppState};

/// The codec routes take larger bodies than the rest of the API: a history's payloads (up to
/// Temporal's 2 MB each) come in batches.
pub const CODEC_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

const ACCESS: Access = Access::Requires(Permission::CodecDecode);

/// The routes with the key in the `Authorization` header, for the route table's documentation
/// and tests (the key-in-path forms are the same handlers behind the same permission).
pub fn specs() -> Vec<RouteSpec> {
    ["/codec/decode", "/codec/encode"]
        .into_iter()
        .map(|path| RouteSpec {
            method: Method::POST,
            path,
            access: ACCESS,
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
            .route_layer(from_fn_with_state(state.clone(), |state, request, next| {
                authorize(state, ACCESS, request, next)
            }))
    };
    Router::new()
        .route("/codec/decode", route(Direction::Decode))
        .route("/codec/encode", route(Direction::Encode))
        .route(
            "/codec/key/{api_key}/decode",
            route(Direction::Decode).route_layer(from_fn(key_from_path)),
        )
        .route(
            "/codec/key/{api_key}/encode",
            route(Direction::Encode).route_layer(from_fn(key_from_path)),
        )
        .layer(from_fn(cors))
}

/// Runs the payloads through the Temporal client's codec.
async fn convert(
    State(state): State<AppState>,
    direction: Direction,
    request: Request,
) -> Result<Response, ApiError> {
    let bytes = Bytes::from_request(request, &())
        .await
        .map_err(|rejection| match rejection {
            BytesRejection::FailedToBufferBody(_) => {
                ApiError::PayloadTooLarge(CODEC_MAX_BODY_BYTES)
            }
            other => ApiError::BadRequest(other.body_text()),
        })?;
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

/// Moves the key of `/codec/key/{api_key}/…` into the `Authorization` header the permission
/// check reads.
async fn key_from_path(
    Path(params): Path<Vec<(String, String)>>,
    mut request: Request,
    next: Next,
) -> Response {
    let key = params
        .into_iter()
        .find_map(|(name, value)| (name == "api_key").then_some(value))
        .unwrap_or_default();
    match HeaderValue::from_str(&format!("Bearer {key}")) {
        Ok(value) => {
            request.headers_mut().insert(header::AUTHORIZATION, value);
            next.run(request).await
        }
        Err(_) => ApiError::Unauthorized.into_response(),
    }
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
