//! `Idempotency-Key` on creating routes: the first successful response to a key is kept and
//! replayed for every retry of the same request, so a client that lost a response can retry
//! without creating twice. Keys belong to the caller's organisation; reusing one for a
//! different request is refused (422), and a retry while the first is still running gets 409.
//!
//! A claim is settled however the request ends: completed with a successful answer, released
//! after a failure, and — when the request's future is dropped first (the request timeout
//! abandoned it, the client went away, the server shut down) — settled by [`Claim`]'s drop
//! from a task of its own. Otherwise the key would answer 409 until the claim timeout, and a
//! retry would then run the request again anyway.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use pidgr_store::{ClaimToken, IdempotencyClaim, Store};
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
    with_key(&state.store, request, next).await
}

async fn with_key(store: &Store, request: Request, next: Next) -> Result<Response, ApiError> {
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

    match store
        .claim_idempotency_key(&caller.org_id, &key, &fingerprint)
        .await?
    {
        IdempotencyClaim::New(token) => {
            let claim = Claim {
                store: store.clone(),
                org_id: caller.org_id,
                key,
                token,
                answer: None,
                settled: false,
            };
            run_claimed(claim, Request::from_parts(parts, Body::from(bytes)), next).await
        }
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
            Ok(replay)
        }
        IdempotencyClaim::InFlight => Err(ApiError::Conflict(
            "a request with this Idempotency-Key is still being processed; retry shortly".into(),
        )),
        IdempotencyClaim::Mismatch => Err(ApiError::invalid(
            "",
            "this Idempotency-Key was already used for a different request",
        )),
    }
}

/// Runs the request that holds `claim` and settles the claim with its answer.
async fn run_claimed(mut claim: Claim, request: Request, next: Next) -> Result<Response, ApiError> {
    let response = next.run(request).await;
    if !response.status().is_success() {
        // Failures are not kept: fixing the request and retrying with the same key must work.
        claim.release().await?;
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| ApiError::Internal(format!("reading a response: {e}")))?;
    // From here on the work is done: should this future be dropped now, the answer is still
    // kept rather than the claim released, so a retry replays it instead of doing it again.
    claim.answer = Some((
        parts.status.as_u16(),
        String::from_utf8_lossy(&bytes).into_owned(),
    ));
    claim.complete().await?;
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// An idempotency key claimed by the running request. Dropped before it was settled, it
/// settles itself on a spawned task: the answer is kept if there was one, else the claim is
/// released.
struct Claim {
    store: Store,
    org_id: String,
    key: String,
    token: ClaimToken,
    answer: Option<(u16, String)>,
    settled: bool,
}

impl Claim {
    async fn release(&mut self) -> Result<(), ApiError> {
        self.store
            .release_idempotency_key(&self.org_id, &self.key, &self.token)
            .await?;
        self.settled = true;
        Ok(())
    }

    async fn complete(&mut self) -> Result<(), ApiError> {
        let Some((status, text)) = &self.answer else {
            return self.release().await;
        };
        self.store
            .complete_idempotency_key(&self.org_id, &self.key, &self.token, *status, text)
            .await?;
        self.settled = true;
        Ok(())
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Outside a runtime (nothing here drops it there) the claim is left to the takeover.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut claim = Claim {
            store: self.store.clone(),
            org_id: std::mem::take(&mut self.org_id),
            key: std::mem::take(&mut self.key),
            token: self.token.clone(),
            answer: self.answer.take(),
            // The spawned task's own copy must not spawn again if it fails.
            settled: true,
        };
        runtime.spawn(async move {
            if let Err(error) = claim.complete().await {
                tracing::warn!(
                    %error,
                    "could not settle the Idempotency-Key of an abandoned request; it is taken over after the claim timeout"
                );
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::time::Duration;

    use axum::Router;
    use axum::middleware::from_fn_with_state;
    use axum::routing::post;
    use tower_service::Service;

    use super::*;
    use crate::ServerLimits;
    use crate::limits::{Limiters, limit_duration};

    const FINGERPRINT_OF_OTHER_REQUEST: &str = "another request";

    /// A creating route that answers at once (`/fast`) and one that never does (`/stuck`),
    /// behind the idempotency layer and a 50 ms request timeout, as the API stacks them.
    fn app(store: Store, org_id: String) -> Router {
        let caller = Caller {
            org_id,
            key_id: "key".into(),
            role_id: "super_admin".into(),
            permissions: BTreeSet::new(),
        };
        let limiters = Arc::new(Limiters::new(&ServerLimits {
            request_timeout: Duration::from_millis(50),
            ..ServerLimits::default()
        }));
        Router::new()
            .route(
                "/fast",
                post(|| async { (StatusCode::CREATED, "{\"id\":\"made\"}") }),
            )
            .route("/stuck", post(std::future::pending::<StatusCode>))
            .route_layer(from_fn_with_state(
                store,
                |State(store): State<Store>, request, next| async move {
                    with_key(&store, request, next).await
                },
            ))
            .route_layer(axum::middleware::from_fn(
                move |mut request: Request, next: Next| {
                    request.extensions_mut().insert(caller.clone());
                    next.run(request)
                },
            ))
            .layer(from_fn_with_state(limiters, limit_duration))
    }

    async fn post_with_key(app: &Router, path: &str, key: &str) -> StatusCode {
        let request = Request::post(path)
            .header(HEADER, key)
            .body(Body::from("{}"))
            .unwrap();
        app.clone().call(request).await.unwrap().status()
    }

    /// Claims `key` as another request would, until the store's answer is `expected`, for at
    /// most 10 seconds (the test's own bound: settling takes one query).
    async fn until_claim(
        store: &Store,
        org_id: &str,
        key: &str,
        expected: fn(&IdempotencyClaim) -> bool,
    ) {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let claim = store
                    .claim_idempotency_key(org_id, key, FINGERPRINT_OF_OTHER_REQUEST)
                    .await
                    .unwrap();
                if expected(&claim) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the abandoned claim was never settled");
    }

    #[tokio::test]
    async fn a_request_abandoned_by_the_timeout_releases_its_key() {
        let store = pidgr_store::testing::sqlite().await.unwrap();
        let org = store.create_organisation("Acme").await.unwrap().id;
        let app = app(store.clone(), org.clone());
        assert_eq!(
            post_with_key(&app, "/stuck", "k").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        // Released, not held for the claim timeout: the key is free for any request.
        until_claim(&store, &org, "k", |claim| {
            matches!(claim, IdempotencyClaim::New(_))
        })
        .await;
    }

    #[tokio::test]
    async fn a_claim_dropped_after_its_answer_keeps_the_answer() {
        let store = pidgr_store::testing::sqlite().await.unwrap();
        let org = store.create_organisation("Acme").await.unwrap().id;
        let IdempotencyClaim::New(token) = store
            .claim_idempotency_key(&org, "k", FINGERPRINT_OF_OTHER_REQUEST)
            .await
            .unwrap()
        else {
            panic!("a fresh key is new");
        };
        // The request had its answer when its future was dropped.
        drop(Claim {
            store: store.clone(),
            org_id: org.clone(),
            key: "k".into(),
            token,
            answer: Some((201, "{\"id\":\"made\"}".into())),
            settled: false,
        });
        until_claim(&store, &org, "k", |claim| {
            matches!(claim, IdempotencyClaim::Replay { status: 201, .. })
        })
        .await;
    }

    #[tokio::test]
    async fn an_answered_request_keeps_its_answer_for_the_retry() {
        let store = pidgr_store::testing::sqlite().await.unwrap();
        let org = store.create_organisation("Acme").await.unwrap().id;
        let app = app(store.clone(), org.clone());
        assert_eq!(post_with_key(&app, "/fast", "k").await, StatusCode::CREATED);
        let replay = app
            .clone()
            .call(
                Request::post("/fast")
                    .header(HEADER, "k")
                    .body(Body::from("{}"))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(replay.status(), StatusCode::CREATED);
        assert_eq!(replay.headers()["idempotent-replayed"], "true");
    }
}
