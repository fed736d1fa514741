//! The HTTP API: thin axum handlers over the store and the Temporal client.
//!
//! Every route is one line of the table in [`routes`], which declares the permission it needs;
//! the router, the permission checks, the OpenAPI coverage test and the permission-matrix test
//! all read that table. Writes go to the database first; Temporal is told afterwards (start,
//! cancel, signal), and every Temporal call is idempotent so a retried request converges.
//! Errors are `application/problem+json` ([`ApiError`]).
//!
//! May import: `workflows` (validation, templates, typed workflow start/signal), `store`, the
//! Temporal client. Never `activities`. Reads no environment variables: the binary passes
//! [`ApiSettings`].

use std::sync::Arc;
use std::time::Duration;

use pidgr_store::Store;
use pidgr_workflows::EngineSettings;
use pidgr_workflows::definition::UrlPolicy;
use temporalio_client::Client;

mod api_keys;
mod app_links;
mod audit;
mod auth;
mod campaigns;
mod codec;
mod deliveries;
mod directory;
mod error;
mod escalations;
mod idempotency;
mod input;
mod integrations;
mod limits;
mod managers;
mod markdown;
mod member_sets;
mod message;
pub mod observe;
pub mod reconcile;
mod roles;
mod routes;
mod server;
mod simulate;
mod templates;
mod webhook_channel;
mod workflow_definitions;

pub use app_links::AppLinks;
pub use auth::{Access, Caller, SessionKey};
pub use codec::CodecToken;
pub use deliveries::INBOX_PAGE_BUDGET_BYTES;
pub use error::ApiError;
pub use limits::{Limiters, Rate, ServerLimits};
pub use routes::{OPENAPI_JSON, RouteSpec, router, specs};
pub use server::serve;
pub use workflow_definitions::MASKED_HEADER_VALUE;

/// The API's field rules (bounded trimmed text, names, variables, e-mail addresses, a field
/// left out told from its `null`), for other ways into the directory (`pidgr members import`)
/// that must accept exactly what the API does.
pub use crate::{
    directory::Email,
    input::{Name, Text, Variables},
    managers::present,
};

/// The most recipients one campaign may have unless configured otherwise.
pub const DEFAULT_MAX_RECIPIENTS: u64 = 1_000_000;

#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// Task queue campaign workflows are started on.
    pub task_queue: String,
    /// SSRF rules for webhook URLs in definitions and the webhook channel.
    pub url_policy: UrlPolicy,
    /// Engine knobs each new campaign workflow starts with.
    pub engine: EngineSettings,
    /// At most one progress signal per campaign per interval (the last ACK always signals).
    pub signal_interval: Duration,
    /// What a deeplink code is appended to (the app's `/c/` address).
    pub deeplink_base: String,
    /// The most recipients one campaign may have, checked at creation and again at start.
    pub max_recipients: u64,
    /// Rate limits, concurrency, timeouts.
    pub limits: ServerLimits,
    /// The operator's token for the codec server; without one the codec routes are off.
    pub codec_token: Option<CodecToken>,
    /// The mobile apps that open deeplinks (app-link files, the landing page's button).
    pub app_links: AppLinks,
    /// How long after a webhook secret rotation the previous secret still signs
    /// `webhook-signature` beside the new one (the test event's too).
    pub webhook_secret_overlap: Duration,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            task_queue: pidgr_workflows::DEFAULT_TASK_QUEUE.to_owned(),
            url_policy: UrlPolicy::STRICT,
            engine: EngineSettings::default(),
            signal_interval: Duration::from_secs(1),
            deeplink_base: "https://app.pidgr.dev/c/".to_owned(),
            max_recipients: DEFAULT_MAX_RECIPIENTS,
            limits: ServerLimits::default(),
            codec_token: None,
            app_links: AppLinks::default(),
            webhook_secret_overlap: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub temporal: Client,
    pub settings: ApiSettings,
    /// The SSRF-safe client: checks webhook channel URLs when saved, sends test events.
    pub outbound: pidgr_outbound::OutboundClient,
    /// The rate limiters and request slots of `settings.limits`, shared by every request.
    pub limiters: Arc<Limiters>,
    /// What requests and deliveries are counted into (one registry no one scrapes unless
    /// [`AppState::with_metrics`] gives the process's own).
    pub metrics: pidgr_metrics::Metrics,
}

impl AppState {
    pub fn new(
        store: Store,
        temporal: Client,
        settings: ApiSettings,
        outbound: pidgr_outbound::OutboundClient,
    ) -> Self {
        let limiters = Arc::new(Limiters::new(&settings.limits));
        AppState {
            store,
            temporal,
            settings,
            outbound,
            limiters,
            metrics: pidgr_metrics::Metrics::default(),
        }
    }

    /// Counts into `metrics` (the registry the process exposes).
    pub fn with_metrics(mut self, metrics: pidgr_metrics::Metrics) -> Self {
        self.metrics = metrics;
        self
    }
}

/// The whole API: the [`router`] inside the server-wide bounds, a time limit per request and
/// the cap on requests in progress (so a refused request costs nothing more), all inside the
/// request log and HTTP metrics of [`observe`] (so refused requests are counted too).
pub fn app(state: AppState) -> axum::Router {
    app_with(state, axum::Router::new())
}

/// [`app`] with more routes inside the same bounds (the console's pages), which must not
/// declare a fallback of their own.
pub fn app_with(state: AppState, extra: axum::Router) -> axum::Router {
    let limiters = state.limiters.clone();
    let metrics = state.metrics.clone();
    router(state)
        .merge(extra)
        .layer(axum::middleware::from_fn_with_state(
            limiters.clone(),
            limits::limit_duration,
        ))
        .layer(axum::middleware::from_fn_with_state(
            limiters,
            limits::limit_concurrency,
        ))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            observe::observe,
        ))
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// Ready when the database answers.
async fn ready(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    state.store.ping().await?;
    Ok(axum::Json(serde_json::json!({ "status": "ready" })))
}

async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI_JSON,
    )
}
