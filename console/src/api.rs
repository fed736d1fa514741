//! The console's way to the API: requests handed to the API's own router in-process, as the
//! session's key. Nothing is re-implemented here; a page shows what the API answers.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use pidgr_api::SessionKey;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tower::ServiceExt;

use crate::{Console, ConsoleError};

/// The most of an API answer the console reads (a page of 500 deliveries is far below it).
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// A page of any API list: `{items, next_cursor}` (`next_cursor` is null on the last page).
#[derive(Debug, serde::Deserialize)]
pub struct Listing {
    pub items: Vec<Value>,
    pub next_cursor: Option<String>,
}

/// An API answer: its status and its JSON body (`Null` when it had none).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// The problem's `detail` (or title) for a refusal, to show beside a form.
    pub fn problem(&self) -> String {
        self.body["detail"]
            .as_str()
            .or(self.body["title"].as_str())
            .unwrap_or("the request was refused")
            .to_owned()
    }

    /// Field errors a 422 names (`errors: [{pointer, message}]`), as (pointer, message).
    pub fn field_errors(&self) -> Vec<(String, String)> {
        self.body["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["pointer"].as_str().unwrap_or("").to_owned(),
                    e["message"]
                        .as_str()
                        .or(e["detail"].as_str())
                        .unwrap_or("")
                        .to_owned(),
                )
            })
            .collect()
    }

    /// The body as `T` when the request succeeded, the refusal as an error otherwise.
    pub fn into_result<T: DeserializeOwned>(self) -> Result<T, ConsoleError> {
        if !self.is_success() {
            return Err(ConsoleError::Api {
                status: self.status,
                detail: self.problem(),
            });
        }
        serde_json::from_value(self.body)
            .map_err(|e| ConsoleError::Internal(format!("the API answered unexpectedly: {e}")))
    }
}

/// Requests as one key: a session's, or (at sign-in) the key being tried.
pub struct Api<'a> {
    console: &'a Console,
    caller: Caller,
}

enum Caller {
    Session(SessionKey),
    /// A key being tried, from the browser's address (charged for a failed attempt).
    Bearer(String, Option<ConnectInfo<SocketAddr>>),
}

impl<'a> Api<'a> {
    pub(crate) fn for_session(console: &'a Console, key: SessionKey) -> Self {
        Api {
            console,
            caller: Caller::Session(key),
        }
    }

    /// At sign-in: the key typed in, sent as any client would send it, so a wrong key is
    /// charged to the address like any failed authentication.
    pub(crate) fn with_bearer(
        console: &'a Console,
        secret: String,
        address: Option<ConnectInfo<SocketAddr>>,
    ) -> Self {
        Api {
            console,
            caller: Caller::Bearer(secret, address),
        }
    }

    /// `GET path` (with its query), the body as `T`; a refusal is an error page.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ConsoleError> {
        self.send(Method::GET, path, None).await?.into_result()
    }

    /// Any request; the caller looks at the reply's status.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, ConsoleError> {
        self.request(method, path, body, None).await
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Reply, ConsoleError> {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(key) = idempotency_key.filter(|k| !k.is_empty()) {
            request = request.header("idempotency-key", key);
        }
        if let Caller::Bearer(secret, _) = &self.caller {
            request = request.header(header::AUTHORIZATION, format!("Bearer {secret}"));
        }
        let body = match body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(json).expect("JSON values serialise"))
            }
            None => Body::empty(),
        };
        let mut request = request
            .body(body)
            .map_err(|e| ConsoleError::Internal(format!("a request could not be built: {e}")))?;
        match &self.caller {
            Caller::Session(key) => {
                request.extensions_mut().insert(key.clone());
            }
            Caller::Bearer(_, Some(address)) => {
                request.extensions_mut().insert(*address);
            }
            Caller::Bearer(_, None) => {}
        }
        let response = self
            .console
            .inner
            .api
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let bytes = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| ConsoleError::Internal(format!("the API's answer was not read: {e}")))?
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Ok(Reply { status, body })
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Reply, ConsoleError> {
        self.send(Method::POST, path, Some(body)).await
    }

    /// A creating POST with an `Idempotency-Key` (the API keeps the first success and replays
    /// it for the same key and body; an empty key sends none).
    pub async fn post_once(
        &self,
        path: &str,
        body: &Value,
        idempotency_key: &str,
    ) -> Result<Reply, ConsoleError> {
        self.request(Method::POST, path, Some(body), Some(idempotency_key))
            .await
    }
}

/// `path?name=value&…` with the values encoded; empty values are left out.
pub fn with_query(path: &str, pairs: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        query.append_pair(name, value);
    }
    let query = query.finish();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

/// One path segment, percent-encoded: an id taken from a console URL can never reach another
/// API route (`x/cancel`, `..`).
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    if out == "." || out == ".." {
        out = out.replace('.', "%2E");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_cannot_leave_its_place_in_the_path() {
        assert_eq!(segment("0193-ab_c.d~"), "0193-ab_c.d~");
        assert_eq!(segment("x/cancel"), "x%2Fcancel");
        assert_eq!(segment("a?b#c d"), "a%3Fb%23c%20d");
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(segment("é"), "%C3%A9");
    }

    #[test]
    fn a_query_leaves_out_empty_values_and_encodes_the_rest() {
        assert_eq!(with_query("/v1/x", &[("a", ""), ("b", "")]), "/v1/x");
        assert_eq!(
            with_query("/v1/x", &[("status", "PENDING,SENT"), ("after", "a&b")]),
            "/v1/x?status=PENDING%2CSENT&after=a%26b"
        );
    }
}
