//! The admin console: server-rendered pages under `/console/`, served by the same process as
//! the API.
//!
//! The console has no rules of its own. Every page reads and every action writes through the
//! API's own router, called in-process ([`api::Api`]) as the signed-in key: the route table's
//! permission checks, the validation, the idempotency and the organisation scoping are the
//! API's, applied to the console exactly as to any other client. The console only decides
//! what to show, and hides the actions the session's role lacks by asking the same route table
//! ([`session::Session::can`]).
//!
//! Sign-in exchanges an API key for a server-side session ([`session`]): the browser holds an
//! opaque id in an `HttpOnly`, `SameSite=Strict` cookie, never the key. State-changing requests
//! carry the session's CSRF token and must come from the console's own origin. Pages run under
//! a strict Content-Security-Policy: scripts and styles only from `/console/assets/`, which are
//! embedded in the binary ([`assets`]); partial updates use the vendored htmx.
//!
//! May import: `api` (its router, route table and session key), `store` (sessions only),
//! `workflows` (the definition types, to draw graphs). Reads no environment variables.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::Method;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::Redirect;
use axum::routing::get;
use pidgr_api::{Access, AppState};

pub mod api;
mod assets;
mod error;
mod pages;
mod session;

mod views;

pub use error::ConsoleError;

/// What the console needs to know that the API does not.
#[derive(Clone, Debug)]
pub struct ConsoleSettings {
    /// The Temporal Web UI's base address (`http://localhost:8233`), for links to a campaign's
    /// run; no links without one.
    pub temporal_ui_url: Option<String>,
    /// The Temporal namespace campaigns run in (part of those links).
    pub temporal_namespace: String,
    /// How long a sign-in lasts.
    pub session_lifetime: Duration,
    /// Whether the console is served over HTTPS, so its cookie is marked `Secure`.
    pub secure_cookies: bool,
    /// The origin people reach the console at (`https://pidgr.example.com`), accepted for
    /// writes besides the request's own `Host` (a proxy may rewrite it).
    pub public_origin: Option<String>,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            temporal_ui_url: None,
            temporal_namespace: "default".to_owned(),
            session_lifetime: Duration::from_secs(8 * 3600),
            secure_cookies: false,
            public_origin: None,
        }
    }
}

/// The console's shared state: the API router it calls, and the route table's access rules.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    api: Router,
    state: AppState,
    access: HashMap<(Method, &'static str), Access>,
    settings: ConsoleSettings,
}

impl Console {
    pub fn new(state: AppState, settings: ConsoleSettings) -> Self {
        let access = pidgr_api::specs()
            .into_iter()
            .map(|spec| ((spec.method, spec.path), spec.access))
            .collect();
        Console {
            inner: Arc::new(Inner {
                api: pidgr_api::router(state.clone()),
                state,
                access,
                settings,
            }),
        }
    }

    pub fn settings(&self) -> &ConsoleSettings {
        &self.inner.settings
    }

    fn store(&self) -> &pidgr_store::Store {
        &self.inner.state.store
    }

    /// What the route table says `method path` requires (`path` as the table writes it, e.g.
    /// `/v1/campaigns/{campaign_id}/start`). A route the table lacks is denied.
    fn access(&self, method: &Method, path: &str) -> Option<Access> {
        self.inner
            .access
            .iter()
            .find(|((m, p), _)| m == method && *p == path)
            .map(|(_, access)| *access)
    }
}

/// Every console route under `/console/`, with its session check, CSRF protection and
/// security headers. Merged into the API's router by the binary.
pub fn router(console: Console) -> Router {
    let signed_in = pages::routes()
        .route_layer(from_fn_with_state(
            console.clone(),
            session::require_session,
        ))
        .with_state(console.clone());
    let open = Router::new()
        .route(
            "/console/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/console/assets/{name}", get(assets::serve))
        .route(
            "/console",
            get(|| async { Redirect::to("/console/campaigns") }),
        )
        .route(
            "/console/",
            get(|| async { Redirect::to("/console/campaigns") }),
        )
        .with_state(console.clone());
    signed_in
        .merge(open)
        .layer(from_fn_with_state(console, session::same_origin_writes))
        .layer(from_fn(session::security_headers))
}
