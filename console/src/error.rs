//! The console's one error type, shown as a page (or, for a lost session, a way back to the
//! sign-in page). Internal failures are logged once here and never shown.

use askama::Template;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No session, an expired one, or its key was revoked.
    #[error("sign in again")]
    SignedOut,
    /// The API refused what the page asked for (its status and the problem's detail).
    #[error("{detail}")]
    Api { status: StatusCode, detail: String },
    /// A form or link the console never produces.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Internal(String),
}

impl From<askama::Error> for ConsoleError {
    fn from(error: askama::Error) -> Self {
        ConsoleError::Internal(format!("a page could not be rendered: {error}"))
    }
}

impl From<pidgr_store::StoreError> for ConsoleError {
    fn from(error: pidgr_store::StoreError) -> Self {
        ConsoleError::Internal(format!("the database: {error}"))
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    title: &'static str,
    detail: String,
}

/// What an error page said, left on the response so that the session middleware can show it
/// again inside the console's frame (sections, sign-out) when someone is signed in.
#[derive(Clone, Debug)]
pub struct ErrorShown {
    pub status: u16,
    pub title: &'static str,
    pub detail: String,
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, detail) = match self {
            ConsoleError::SignedOut => {
                let mut response = Redirect::to("/console/sign-in").into_response();
                // An htmx request follows the redirect inside the page; tell it to go there.
                response
                    .headers_mut()
                    .insert("HX-Redirect", HeaderValue::from_static("/console/sign-in"));
                return response;
            }
            ConsoleError::Api { status, .. } if status == StatusCode::UNAUTHORIZED => {
                return ConsoleError::SignedOut.into_response();
            }
            ConsoleError::Api { status, detail } => (status, detail),
            ConsoleError::BadRequest(detail) => (StatusCode::BAD_REQUEST, detail),
            ConsoleError::Internal(detail) => {
                tracing::error!(error = %detail, "console request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong on our side; it has been logged.".to_owned(),
                )
            }
        };
        let title = match status {
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::TOO_MANY_REQUESTS => "Too many requests",
            s if s.is_server_error() => "Server error",
            _ => "Cannot do that",
        };
        let shown = ErrorShown {
            status: status.as_u16(),
            title,
            detail: detail.clone(),
        };
        let page = ErrorPage {
            status: status.as_u16(),
            title,
            detail,
        };
        let mut response = match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => status.into_response(),
        };
        response.extensions_mut().insert(shown);
        response
    }
}
