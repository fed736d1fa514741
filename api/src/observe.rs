//! What the API tells its operators about each request: one log line (method, route template,
//! status, duration, the API key's id when one authenticated) and the HTTP metrics of
//! [`pidgr_metrics::Metrics`]. Never the key itself, a body, or a path with ids in it (only a
//! request that matched no route is logged with its raw path).
//!
//! [`observe`] wraps everything else (it is the outermost layer of [`crate::app`]), so requests
//! refused for load or time are counted too. It runs each request inside a span carrying a
//! request id (and the campaign's id on a campaign's routes), so every line a handler logs
//! can be tied to its request; [`note_caller`], a route layer inside authentication, adds the
//! organisation to that span and tells [`observe`] which key called.

use std::time::Instant;

use axum::RequestExt;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use pidgr_metrics::Metrics;
use tracing::Instrument;

use crate::auth::Caller;
use crate::limits::is_probe;

/// The route label of requests that matched no route: raw paths would make a series per
/// scanner probe.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Who called, passed from [`note_caller`] to [`observe`] in the response's extensions (which
/// never reach the client).
#[derive(Clone, Debug)]
struct CallerIds {
    org_id: String,
    key_id: String,
}

/// Logs and counts every request. Probes (`/healthz`, `/readyz`) are logged at debug only:
/// load balancers call them every few seconds.
pub async fn observe(State(metrics): State<Metrics>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method()).to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|matched| matched.as_str().to_owned());
    let path = request.uri().path().to_owned();
    // The campaign a route is about, so that everything logged about it can be found by id.
    let campaign_id = request
        .extract_parts::<RawPathParams>()
        .await
        .ok()
        .and_then(|params| {
            params
                .iter()
                .find(|(name, _)| *name == "campaign_id")
                .map(|(_, value)| value.to_owned())
        });
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %method,
        route = route.as_deref().unwrap_or(UNMATCHED_ROUTE),
        org_id = tracing::field::Empty,
        campaign_id = campaign_id.as_deref(),
    );
    let response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics.http_request(
        &method,
        route.as_deref().unwrap_or(UNMATCHED_ROUTE),
        status,
        elapsed,
    );
    let caller = response.extensions().get::<CallerIds>();
    let key_id = caller.map(|c| c.key_id.as_str());
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    // A request that matched no route is logged with its path, cut short: what was asked for
    // is the only clue to a wrong URL.
    let route = route.unwrap_or_else(|| {
        let mut shown: String = path.chars().take(200).collect();
        if shown.len() < path.len() {
            shown.push('…');
        }
        shown
    });
    span.in_scope(|| {
        if is_probe(&path) {
            tracing::debug!(method, route, status, duration_ms, "request");
        } else {
            tracing::info!(method, route, status, duration_ms, key_id, "request");
        }
    });
    response
}

/// Inside authentication (a route layer): puts the caller's organisation on the request's
/// span and its key id on the response, for [`observe`].
pub async fn note_caller(request: Request, next: Next) -> Response {
    let caller = request
        .extensions()
        .get::<Caller>()
        .map(|caller| CallerIds {
            org_id: caller.org_id.clone(),
            key_id: caller.key_id.clone(),
        });
    if let Some(caller) = &caller {
        tracing::Span::current().record("org_id", caller.org_id.as_str());
    }
    let mut response = next.run(request).await;
    if let Some(caller) = caller {
        response.extensions_mut().insert(caller);
    }
    response
}

/// The W3C `traceparent` of `span` when traces are exported (`None` otherwise): how a trace
/// crosses into the workflow's activities, which run in another process.
pub(crate) fn traceparent(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = span.context();
    let parent = context.span().span_context().clone();
    parent.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            parent.trace_id(),
            parent.span_id(),
            parent.trace_flags().to_u8()
        )
    })
}

/// The method as labelled: the standard ones by name, any other as `OTHER` (a client may send
/// any token as a method, and each would be a series of its own).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}
