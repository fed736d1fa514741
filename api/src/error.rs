//! The one error type at the HTTP edge: every failure becomes `application/problem+json`
//! (RFC 9457) with a stable `type`. Internal failures are logged once, here, and never leak.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pidgr_store::StoreError;
use pidgr_workflows::definition::Problem;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing, unknown or revoked API key; send `Authorization: Bearer <api key>`")]
    Unauthorized,
    #[error("this API key's role lacks the permission `{0}`")]
    Forbidden(String),
    /// The codec server takes the operator's token, never an API key.
    #[error(
        "missing or wrong codec token: the codec server takes the operator's PIDGR_CODEC_TOKEN \
         (no API key is accepted), as `Authorization: Bearer <token>` or in the path \
         `/codec/key/<token>/…`"
    )]
    BadCodecToken,
    /// No codec token is configured, so the codec server is not served.
    #[error("the codec server is off: the server's operator turns it on with PIDGR_CODEC_TOKEN")]
    CodecServerOff,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// A READ or ACK attested other content than the member is shown (`content_sha256`).
    #[error(
        "the member acknowledged different content: content_sha256 is not the hash of the message this delivery shows now; fetch the message again and show it before acknowledging"
    )]
    ContentMismatch,
    #[error("the request is not valid: {0}")]
    BadRequest(String),
    #[error("this route does not take the method {0}")]
    MethodNotAllowed(String),
    #[error("the request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// Input that parsed but broke the rules: every problem, each with its JSON pointer.
    #[error("the request has {} problem(s)", .0.len())]
    Invalid(Vec<Problem>),
    /// The workflow engine failed; the text is for the log only (it can carry addresses and
    /// internals of Temporal), the answer says only what the client should do.
    #[error("the workflow engine is unavailable: {0}")]
    Unavailable(String),
    /// A rate limit was reached; `scope` says whose ("API key", "client address").
    #[error("too many requests from this {scope}; retry in {retry_after_secs} s")]
    TooManyRequests {
        scope: &'static str,
        retry_after_secs: u64,
    },
    /// Every slot for concurrent requests is taken.
    #[error(
        "the server is handling as many requests as it is configured to; retry in {retry_after_secs} s"
    )]
    Overloaded { retry_after_secs: u64 },
    /// The request ran longer than the configured limit and was abandoned.
    #[error("the request took longer than {0} ms and was abandoned")]
    TimedOut(u128),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::Unauthorized | ApiError::BadCodecToken => {
                (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized")
            }
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            ApiError::NotFound(_) | ApiError::CodecServerOff => {
                (StatusCode::NOT_FOUND, "not-found", "Not found")
            }
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            ApiError::ContentMismatch => {
                (StatusCode::CONFLICT, "content-mismatch", "Content mismatch")
            }
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            ApiError::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            ApiError::PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            ),
            ApiError::Invalid(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Validation failed",
            ),
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            ApiError::TooManyRequests { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
            ),
            ApiError::Overloaded { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "overloaded", "Overloaded")
            }
            ApiError::TimedOut(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "Request timed out",
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }
}

impl ApiError {
    /// One validation problem at `pointer`.
    pub fn invalid(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid(vec![Problem {
            pointer: pointer.into(),
            message: message.into(),
        }])
    }
}

/// Turns the store's "not found" into a 404 that names the missing thing.
pub(crate) trait OrNotFound<T> {
    fn or_not_found(self, what: &'static str) -> Result<T, ApiError>;
}

impl<T> OrNotFound<T> for Result<T, StoreError> {
    fn or_not_found(self, what: &'static str) -> Result<T, ApiError> {
        self.map_err(|error| match error {
            StoreError::NotFound => ApiError::NotFound(what),
            other => other.into(),
        })
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => ApiError::NotFound("resource"),
            StoreError::Conflict(message) => ApiError::Conflict(message),
            // Handlers point at the field that named the manager; this is the fallback.
            StoreError::Manager(errors) => ApiError::Invalid(
                errors
                    .iter()
                    .map(|error| Problem {
                        pointer: "/manager_id".to_owned(),
                        message: crate::managers::detail(&error.problem),
                    })
                    .collect(),
            ),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, title) = self.parts();
        let detail = match &self {
            ApiError::Internal(message) => {
                tracing::error!(error = %message, "request failed");
                "something went wrong on our side; it has been logged".to_owned()
            }
            ApiError::Unavailable(message) => {
                tracing::error!(error = %message, "the workflow engine failed a request");
                // What was written stays written and every Temporal call is idempotent, so the
                // same request again converges.
                "the workflow engine is unavailable; what could be saved is saved, retry the same \
                 request shortly"
                    .to_owned()
            }
            other => other.to_string(),
        };
        let retry_after = match &self {
            ApiError::TooManyRequests {
                retry_after_secs, ..
            }
            | ApiError::Overloaded { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        };
        let mut body = json!({
            "type": format!("https://pidgr.dev/problems/{kind}"),
            "title": title,
            "status": status.as_u16(),
            "detail": detail,
        });
        if let ApiError::Invalid(problems) = &self {
            body["errors"] = json!(problems);
        }
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// axum's own rejections (a path segment that is not a number, a bad query string, a method
/// the route does not have) answer in plain text; this turns them into problem documents too,
/// so every error a client sees has the same shape.
pub(crate) async fn plain_errors_as_problems(
    method: axum::http::Method,
    response: Response,
) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let detail = if text.trim().is_empty() {
        status
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_owned()
    } else {
        text
    };
    let error = match status {
        StatusCode::NOT_FOUND => ApiError::NotFound("route"),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(crate::input::MAX_BODY_BYTES),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed(method.to_string()),
        s if s.is_server_error() => ApiError::Internal(detail),
        _ => ApiError::BadRequest(detail),
    };
    error.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_workflow_engine_failure_answers_without_its_details() {
        let error = ApiError::Unavailable(
            "could not start the campaign's workflow (status: Unavailable, message: \"tcp \
             connect error: 10.20.30.40:7233\"); retry the start"
                .into(),
        );
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = body_of(response).await;
        assert!(!body.contains("10.20.30.40"), "{body}");
        assert!(!body.contains("tcp connect"), "{body}");
        assert!(body.contains("retry the same request"), "{body}");
    }

    #[tokio::test]
    async fn limits_answer_problems_with_retry_after() {
        let response = ApiError::TooManyRequests {
            scope: "API key",
            retry_after_secs: 3,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let body: serde_json::Value = serde_json::from_str(&body_of(response).await).unwrap();
        assert_eq!(body["type"], "https://pidgr.dev/problems/rate-limited");
        assert_eq!(body["status"], 429);

        let response = ApiError::Overloaded {
            retry_after_secs: 1,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
