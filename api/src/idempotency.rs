//! `Idempotency-Key` on creating routes: the first successful response to a key is kept and
//! replayed for every retry of the same request, so a client that lost a response can retry
//! without creating twice. Keys belong to the caller's organisation; reusing one for a
//! different request is refused (422), and a retry while the first is still running gets 409.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use pidgr_store::IdempotencyClaim;
use sha2::{Digest, Sha256};

use crate::input::MAX_BODY_BYTES;
use crate::{ApiError, AppState, Caller};

pub const HEADER: &str = "idempotency-key";
const MAX_KEY_CHARS: usize = 255;

pub async fn idempotent(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(key) = request.headers().get(HEADER) else {
        return Ok(next.run(request).await);
    };
    let key = key
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_CHARS)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "the Idempotency-Key header must be 1 to {MAX_KEY_CHARS} visible ASCII characters"
            ))
        })?
        .to_owned();
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("idempotency needs an authenticated route".into()))?;
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(MAX_BODY_BYTES))?;
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str());
    hasher.update(b" ");
    hasher.update(parts.uri.path());
    hasher.update(b"\n");
    hasher.update(&bytes);
    let fingerprint = hex::encode(hasher.finalize());

    match state
        .store
        .claim_idempotency_key(&caller.org_id, &key, &fingerprint)
        .await?
    {
        IdempotencyClaim::New => {}
        IdempotencyClaim::Replay { status, response } => {
            let status = StatusCode::from_u16(status)
                .map_err(|e| ApiError::Internal(format!("stored status: {e}")))?;
            let mut replay = (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                response,
            )
                .into_response();
            replay
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return Ok(replay);
        }
        IdempotencyClaim::InFlight => {
            return Err(ApiError::Conflict(
                "a request with this Idempotency-Key is still being processed; retry shortly"
                    .into(),
            ));
        }
        IdempotencyClaim::Mismatch => {
            return Err(ApiError::invalid(
                "",
                "this Idempotency-Key was already used for a different request",
            ));
        }
    }

    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if !response.status().is_success() {
        // Failures are not kept: fixing the request and retrying with the same key must work.
        state
            .store
            .release_idempotency_key(&caller.org_id, &key)
            .await?;
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| ApiError::Internal(format!("reading a response: {e}")))?;
    let text = String::from_utf8_lossy(&bytes);
    state
        .store
        .complete_idempotency_key(&caller.org_id, &key, parts.status.as_u16(), &text)
        .await?;
    Ok(Response::from_parts(parts, Body::from(bytes)))
}
