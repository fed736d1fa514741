//! The HTTP API: thin axum handlers over the store and the Temporal client.
//!
//! Writes go to the database first; Temporal is told afterwards (start, cancel, signal), and
//! every Temporal call is idempotent so a retried request converges. Errors are
//! `application/problem+json` ([`ApiError`]).
//!
//! May import: `workflows` (validation, typed workflow start/signal), `store`, the Temporal
//! client. Never `activities`. Reads no environment variables: the binary passes [`ApiSettings`].

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use pidgr_store::Store;
use pidgr_workflows::EngineSettings;
use pidgr_workflows::definition::UrlPolicy;
use serde_json::json;
use temporalio_client::Client;

mod auth;
mod campaigns;
mod deliveries;
mod error;

pub use auth::Caller;
pub use error::ApiError;

#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// Task queue campaign workflows are started on.
    pub task_queue: String,
    /// SSRF rules for webhook URLs in definitions.
    pub url_policy: UrlPolicy,
    /// Engine knobs each new campaign workflow starts with.
    pub engine: EngineSettings,
    /// At most one progress signal per campaign per interval (the last ACK always signals).
    pub signal_interval: Duration,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            task_queue: pidgr_workflows::DEFAULT_TASK_QUEUE.to_owned(),
            url_policy: UrlPolicy::STRICT,
            engine: EngineSettings::default(),
            signal_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub temporal: Client,
    pub settings: ApiSettings,
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(ready))
        .nest("/v1", campaigns::router().merge(deliveries::router()))
        .with_state(state)
}

/// Ready when the database answers.
async fn ready(State(state): State<AppState>) -> Result<axum::Json<serde_json::Value>, ApiError> {
    state.store.ping().await?;
    Ok(axum::Json(json!({ "status": "ready" })))
}

/// Reads a JSON request body, turning a malformed one into a 400 problem.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return serde_json::from_slice(b"{}").map_err(|e| ApiError::BadRequest(e.to_string()));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// Cursor paging: `?after=<cursor>&limit=<n>` (limit 1..=500, default 100).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Page {
    #[serde(default)]
    after: i64,
    limit: Option<i64>,
}

impl Page {
    fn limit(&self) -> i64 {
        self.limit.unwrap_or(100).clamp(1, 500)
    }

    /// `{items, next_cursor}` from `(cursor, item)` rows: a full page says where the next starts.
    fn respond<T: serde::Serialize>(&self, rows: Vec<(i64, T)>) -> axum::Json<serde_json::Value> {
        let next = (rows.len() as i64 == self.limit())
            .then(|| rows.last().map(|(cursor, _)| *cursor))
            .flatten();
        let items: Vec<T> = rows.into_iter().map(|(_, item)| item).collect();
        axum::Json(json!({ "items": items, "next_cursor": next }))
    }
}
