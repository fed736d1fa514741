//! Signing in and out, the session every page runs in, and the protections around it.
//!
//! - The cookie holds an opaque random id (`HttpOnly`, `SameSite=Strict`, `Path=/console`,
//!   `Secure` over HTTPS); the store keeps its hash and the key's id, never the key.
//! - Every state-changing request must come from the console's own origin (the browser's
//!   `Sec-Fetch-Site` / `Origin`), and carry the session's CSRF token (a form field `csrf` or
//!   the `X-CSRF-Token` header htmx sends), so another site can neither post a form nor script
//!   a request in the signed-in person's name.
//! - Each request re-reads the key, so a revoked key signs its sessions out, and a changed role
//!   shows at once.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use askama::Template;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use http_body_util::BodyExt;
use pidgr_api::{Access, SessionKey};
use serde::Deserialize;

use crate::api::Api;
use crate::error::ErrorShown;
use crate::pages::Layout;
use crate::{Console, ConsoleError};

const COOKIE: &str = "pidgr_console";
const CSRF_HEADER: &str = "x-csrf-token";
const CSRF_FIELD: &str = "csrf";
/// The largest form the console reads to find its CSRF token (a workflow definition fits).
const MAX_FORM_BYTES: usize = 2 * 1024 * 1024;

/// The signed-in person's session, for handlers (put there by [`require_session`]).
#[derive(Clone)]
pub struct Session {
    console: Console,
    pub key: SessionKey,
    pub csrf_token: String,
    pub org_name: String,
    pub permissions: BTreeSet<String>,
}

impl Session {
    /// The API as this session's key.
    pub fn api(&self) -> Api<'_> {
        Api::for_session(&self.console, self.key.clone())
    }

    pub fn console(&self) -> &Console {
        &self.console
    }

    /// Whether this session's role may call `method path` (as the route table writes the
    /// path): the API enforces it anyway; pages use it to hide what would be refused.
    pub fn can(&self, method: Method, path: &str) -> bool {
        match self.console.access(&method, path) {
            Some(Access::Public | Access::Authenticated) => true,
            Some(Access::Requires(permission) | Access::KeyOrPublicPage(permission)) => {
                self.permissions.contains(permission.as_str())
            }
            Some(Access::Operator) | None => false,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ConsoleError> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(ConsoleError::SignedOut)
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

#[derive(Deserialize)]
struct Identity {
    name: String,
    api_key: IdentityKey,
}

#[derive(Deserialize)]
struct IdentityKey {
    permissions: BTreeSet<String>,
}

/// Every signed-in page: resolves the cookie to a session, checks a write's CSRF token, and
/// reads who the key is now.
pub async fn require_session(
    State(console): State<Console>,
    request: Request,
    next: Next,
) -> Result<Response, ConsoleError> {
    let stored = match session_cookie(request.headers()) {
        Some(id) => console.store().console_session(&id).await?.map(|s| (id, s)),
        None => None,
    };
    let Some((id, stored)) = stored else {
        return Ok(sign_in_again(&request));
    };
    let mut request = request;
    if is_write(request.method()) {
        let (token, rebuilt) = csrf_token_of(request).await?;
        request = rebuilt;
        let matches = token.is_some_and(|t| same_bytes(t.as_bytes(), stored.csrf_token.as_bytes()));
        if !matches {
            return Err(ConsoleError::Api {
                status: StatusCode::FORBIDDEN,
                detail: "This form has expired or did not come from the console. Reload the page \
                         and try again."
                    .to_owned(),
            });
        }
    }
    let key = SessionKey {
        org_id: stored.org_id,
        key_id: stored.key_id,
    };
    let identity: Identity = match Api::for_session(&console, key.clone())
        .get("/v1/organisation")
        .await
    {
        Err(ConsoleError::Api { status, .. }) if status == StatusCode::UNAUTHORIZED => {
            console.store().end_console_session(&id).await?;
            return Err(ConsoleError::SignedOut);
        }
        other => other?,
    };
    let session = Session {
        console,
        key,
        csrf_token: stored.csrf_token,
        org_name: identity.name,
        permissions: identity.api_key.permissions,
    };
    request.extensions_mut().insert(session.clone());
    let response = next.run(request).await;
    // An error page for a signed-in person keeps the frame: the sections they may open and a
    // way to sign out (a role without any permission sees nothing else).
    if let Some(shown) = response.extensions().get::<ErrorShown>().cloned() {
        let page = ErrorInConsole {
            layout: Layout::new(&session, ""),
            status: shown.status,
            title: shown.title,
            detail: shown.detail,
        };
        let status = response.status();
        return Ok((status, Html(page.render()?)).into_response());
    }
    Ok(response)
}

#[derive(Template)]
#[template(path = "error_in_console.html")]
struct ErrorInConsole {
    layout: Layout,
    status: u16,
    title: &'static str,
    detail: String,
}

/// To the sign-in page; a page opened by a link (a plain GET) is where signing in returns to.
fn sign_in_again(request: &Request) -> Response {
    let is_htmx = request.headers().contains_key("hx-request");
    if request.method() != Method::GET || is_htmx {
        return ConsoleError::SignedOut.into_response();
    }
    let here = request
        .uri()
        .path_and_query()
        .map_or("/console/campaigns", |p| p.as_str());
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("next", here);
    Redirect::to(&format!("/console/sign-in?{}", query.finish())).into_response()
}

/// Compares without stopping at the first difference, so that the time taken says nothing
/// about how much of a guessed token was right.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The CSRF token a write carries: the header, or a urlencoded form's `csrf` field (the body is
/// read and put back).
async fn csrf_token_of(request: Request) -> Result<(Option<String>, Request), ConsoleError> {
    if let Some(token) = request
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        let token = token.to_owned();
        return Ok((Some(token), request));
    }
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Ok((None, request));
    }
    let (parts, body) = request.into_parts();
    let bytes: Bytes = http_body_util::Limited::new(body, MAX_FORM_BYTES)
        .collect()
        .await
        .map_err(|_| ConsoleError::BadRequest("the form is too large".to_owned()))?
        .to_bytes();
    let token = form_urlencoded::parse(&bytes)
        .find(|(name, _)| name == CSRF_FIELD)
        .map(|(_, value)| value.into_owned());
    Ok((token, Request::from_parts(parts, Body::from(bytes))))
}

/// Refuses a write that a browser says came from another site: `Sec-Fetch-Site` other than
/// `same-origin`, or an `Origin` whose host is not this request's `Host`. Applies to sign-in
/// too (which has no session yet, so no CSRF token).
pub async fn same_origin_writes(
    State(console): State<Console>,
    request: Request,
    next: Next,
) -> Response {
    let public_origin = console.settings().public_origin.as_deref();
    if is_write(request.method()) && !same_origin(request.headers(), public_origin) {
        return (
            StatusCode::FORBIDDEN,
            "cross-site requests are not accepted by the console",
        )
            .into_response();
    }
    next.run(request).await
}

/// `public_origin` (`https://pidgr.example.com`, from the public URL) is accepted besides the
/// request's own `Host`: behind a proxy that rewrites `Host`, the browser's origin is the public
/// one.
fn same_origin(headers: &HeaderMap, public_origin: Option<&str>) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(site) = text("sec-fetch-site")
        && site != "same-origin"
        && site != "none"
    {
        return false;
    }
    match (text("origin"), text("host")) {
        (Some(origin), _) if Some(origin) == public_origin => true,
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .map(|(_, rest)| rest)
            .is_some_and(|origin_host| origin_host == host),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// The headers every console response carries: scripts and styles only from the console's
/// own assets (no inline script, no inline style), no framing, no sniffing, no caching of
/// pages that show an organisation's data.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let is_asset = request.uri().path().starts_with("/console/assets/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !is_asset {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    next: String,
    problem: Option<String>,
}

#[derive(Deserialize)]
pub struct SignInQuery {
    next: Option<String>,
}

/// Only a console page may be the place sign-in returns to.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(next)
            if next.starts_with("/console/")
                && !next.starts_with("/console//")
                && !next.contains('\\') =>
        {
            next.to_owned()
        }
        _ => "/console/campaigns".to_owned(),
    }
}

pub async fn sign_in_page(Query(query): Query<SignInQuery>) -> Result<Html<String>, ConsoleError> {
    let page = SignInPage {
        next: safe_next(query.next.as_deref()),
        problem: None,
    };
    Ok(Html(page.render()?))
}

#[derive(Deserialize)]
pub struct SignInForm {
    key: String,
    next: Option<String>,
}

/// Exchanges a key for a session. The key is checked by the API itself (as a `Bearer` key on
/// `GET /v1/organisation`), so a wrong key costs the address what any failed authentication
/// costs, and is refused in the same words.
pub async fn sign_in(
    State(console): State<Console>,
    address: Option<Extension<ConnectInfo<SocketAddr>>>,
    Form(form): Form<SignInForm>,
) -> Result<Response, ConsoleError> {
    let next = safe_next(form.next.as_deref());
    let refuse = |status: StatusCode, problem: &str| -> Result<Response, ConsoleError> {
        let page = SignInPage {
            next: next.clone(),
            problem: Some(problem.to_owned()),
        };
        Ok((status, Html(page.render()?)).into_response())
    };
    let secret = form.key.trim().to_owned();
    if secret.is_empty() {
        return refuse(StatusCode::UNPROCESSABLE_ENTITY, "Enter an API key.");
    }
    let reply = Api::with_bearer(&console, secret, address.map(|Extension(a)| a))
        .send(Method::GET, "/v1/organisation", None)
        .await?;
    match reply.status {
        StatusCode::OK => {}
        StatusCode::UNAUTHORIZED => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "That key is not valid: it may be mistyped or revoked.",
            );
        }
        StatusCode::TOO_MANY_REQUESTS => {
            return refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts from this address; wait a minute and try again.",
            );
        }
        _ => return Err(ConsoleError::Internal(reply.problem())),
    }
    let org_id = reply.body["id"].as_str().unwrap_or_default();
    let key_id = reply.body["api_key"]["id"].as_str().unwrap_or_default();
    let lifetime = chrono::TimeDelta::from_std(console.settings().session_lifetime)
        .map_err(|e| ConsoleError::Internal(e.to_string()))?;
    let opened = console
        .store()
        .create_console_session(org_id, key_id, lifetime)
        .await?;
    let mut response = Redirect::to(&next).into_response();
    let cookie = format!(
        "{COOKIE}={}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{}",
        opened.id,
        console.settings().session_lifetime.as_secs(),
        if console.settings().secure_cookies {
            "; Secure"
        } else {
            ""
        }
    );
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| ConsoleError::Internal(e.to_string()))?,
    );
    Ok(response)
}

/// Ends the session and forgets the cookie.
pub async fn sign_out(
    State(console): State<Console>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    if let Some(id) = session_cookie(&headers) {
        console.store().end_console_session(&id).await?;
    }
    let mut response = Redirect::to("/console/sign-in").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "pidgr_console=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn same_origin_at(headers: &HeaderMap) -> bool {
        same_origin(headers, None)
    }

    #[test]
    fn behind_a_proxy_the_public_origin_is_the_consoles_own() {
        let proxied = headers(&[
            ("host", "10.0.0.7:8080"),
            ("origin", "https://pidgr.example.com"),
        ]);
        assert!(!same_origin(&proxied, None));
        assert!(same_origin(&proxied, Some("https://pidgr.example.com")));
        assert!(!same_origin(&proxied, Some("https://other.example.com")));
    }

    #[test]
    fn tokens_compare_equal_only_when_every_byte_does() {
        assert!(same_bytes(b"abc123", b"abc123"));
        assert!(!same_bytes(b"abc123", b"abc124"));
        assert!(!same_bytes(b"abc", b"abc123"));
        assert!(!same_bytes(b"", b"x"));
    }

    #[test]
    fn writes_from_another_site_are_told_apart_from_the_consoles_own() {
        assert!(same_origin_at(&headers(&[
            ("host", "pidgr.example:8080"),
            ("origin", "https://pidgr.example:8080"),
            ("sec-fetch-site", "same-origin"),
        ])));
        assert!(!same_origin_at(&headers(&[
            ("host", "pidgr.example"),
            ("origin", "https://evil.example"),
        ])));
        assert!(!same_origin_at(&headers(&[
            ("host", "pidgr.example"),
            ("sec-fetch-site", "cross-site"),
        ])));
        assert!(!same_origin_at(&headers(&[
            ("host", "pidgr.example"),
            ("origin", "null"),
        ])));
        // A client that is not a browser sends neither; the CSRF token still applies.
        assert!(same_origin_at(&headers(&[("host", "pidgr.example")])));
    }

    #[test]
    fn sign_in_returns_only_to_console_pages() {
        assert_eq!(
            safe_next(Some("/console/campaigns/1")),
            "/console/campaigns/1"
        );
        assert_eq!(
            safe_next(Some("https://evil.example/")),
            "/console/campaigns"
        );
        assert_eq!(
            safe_next(Some("//evil.example/console/")),
            "/console/campaigns"
        );
        assert_eq!(
            safe_next(Some("/console//evil.example")),
            "/console/campaigns"
        );
        assert_eq!(safe_next(None), "/console/campaigns");
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let map = headers(&[("cookie", "a=1; pidgr_console=abc; b=2")]);
        assert_eq!(session_cookie(&map).as_deref(), Some("abc"));
        assert_eq!(session_cookie(&headers(&[("cookie", "a=1")])), None);
    }
}
