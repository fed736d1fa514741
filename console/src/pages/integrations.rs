//! Integrations: the organisation's webhook channel (its URL, its signing secret shown once,
//! a test event) and its push credentials (FCM, APNs), of which only the API's non-secret
//! summaries are ever shown.
//!
//! A one-time secret is in the answer to the request that made it, so saving a new channel
//! and rotating the secret answer the page itself (with the secret) rather than redirect: the
//! API never gives the secret again, and neither does the console.

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::http::{Method, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::templates::{Refusal, form_fields};
use super::{Layout, render};
use crate::session::Session;
use crate::views::{text, when};
use crate::{Console, ConsoleError};

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/console/integrations", get(page))
        .route("/console/integrations/webhook", post(save_webhook))
        .route("/console/integrations/webhook/rotate", post(rotate_secret))
        .route("/console/integrations/webhook/delete", post(remove_webhook))
        .route("/console/integrations/webhook/test", post(test_event))
        .route("/console/integrations/push/fcm", post(save_fcm))
        .route("/console/integrations/push/apns", post(save_apns))
        .route(
            "/console/integrations/push/{platform}/delete",
            post(remove_push),
        )
}

struct Channel {
    url: String,
    timeout_ms: i64,
    updated: String,
    secret_rotated: String,
}

/// One platform's stored credentials, as the API summarises them.
struct PushSummary {
    platform: String,
    label: &'static str,
    fields: Vec<(String, String)>,
    updated: String,
}

/// What the APNs form held when it was refused (never the private key).
#[derive(Default)]
struct ApnsDraft {
    team_id: String,
    key_id: String,
    bundle_id: String,
    environment: String,
}

/// The actions this role may take (each the route's own permission).
struct Can {
    save_webhook: bool,
    rotate: bool,
    remove_webhook: bool,
    test: bool,
    save_fcm: bool,
    save_apns: bool,
    remove_fcm: bool,
    remove_apns: bool,
}

impl Can {
    fn of(session: &Session) -> Self {
        Can {
            save_webhook: session.can(Method::PUT, "/v1/webhook-channel"),
            rotate: session.can(Method::POST, "/v1/webhook-channel/rotate-secret"),
            remove_webhook: session.can(Method::DELETE, "/v1/webhook-channel"),
            test: session.can(Method::POST, "/v1/webhook-channel/test-event"),
            save_fcm: session.can(Method::PUT, "/v1/integrations/push/fcm"),
            save_apns: session.can(Method::PUT, "/v1/integrations/push/apns"),
            remove_fcm: session.can(Method::DELETE, "/v1/integrations/push/fcm"),
            remove_apns: session.can(Method::DELETE, "/v1/integrations/push/apns"),
        }
    }
}

#[derive(Template)]
#[template(path = "integrations.html")]
struct Page {
    layout: Layout,
    can: Can,
    can_webhook: bool,
    can_push: bool,
    channel: Option<Channel>,
    /// The URL in the form (the stored one, or what a refused save tried).
    webhook_url: String,
    /// A secret just made: shown now, never again.
    secret: Option<String>,
    webhook_refusal: Option<Refusal>,
    push: Vec<PushSummary>,
    fcm_refusal: Option<Refusal>,
    apns_refusal: Option<Refusal>,
    apns: ApnsDraft,
}

#[derive(Default)]
struct Outcome {
    secret: Option<String>,
    webhook_url: Option<String>,
    webhook_refusal: Option<Refusal>,
    fcm_refusal: Option<Refusal>,
    apns_refusal: Option<Refusal>,
    apns: ApnsDraft,
}

async fn build(session: &Session, outcome: Outcome) -> Result<Page, ConsoleError> {
    let can_webhook = session.can(Method::GET, "/v1/webhook-channel");
    let can_push = session.can(Method::GET, "/v1/integrations/push");
    let mut channel = None;
    if can_webhook {
        let reply = session
            .api()
            .send(Method::GET, "/v1/webhook-channel", None)
            .await?;
        match reply.status {
            StatusCode::OK => {
                channel = Some(Channel {
                    url: text(&reply.body["url"]),
                    timeout_ms: reply.body["timeout_ms"].as_i64().unwrap_or_default(),
                    updated: when(&reply.body["updated_at"]),
                    secret_rotated: when(&reply.body["secret_rotated_at"]),
                })
            }
            StatusCode::NOT_FOUND => {}
            _ => reply.into_result::<Value>().map(drop)?,
        }
    }
    let mut push = Vec::new();
    if can_push {
        let listing: Value = session.api().get("/v1/integrations/push").await?;
        push = listing["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(summary_of)
            .collect();
    }
    Ok(Page {
        layout: Layout::new(session, "Integrations"),
        can: Can::of(session),
        can_webhook,
        can_push,
        webhook_url: outcome
            .webhook_url
            .or_else(|| channel.as_ref().map(|c| c.url.clone()))
            .unwrap_or_default(),
        channel,
        secret: outcome.secret,
        webhook_refusal: outcome.webhook_refusal,
        push,
        fcm_refusal: outcome.fcm_refusal,
        apns_refusal: outcome.apns_refusal,
        apns: outcome.apns,
    })
}

/// The summary's fields in the order people read them; the API keeps secrets out of it.
fn summary_of(item: &Value) -> PushSummary {
    let platform = text(&item["platform"]);
    let (title, order): (&'static str, &[&str]) = match platform.as_str() {
        "fcm" => (
            "Firebase Cloud Messaging",
            &["project_id", "client_email", "private_key_id"],
        ),
        "apns" => (
            "Apple Push Notification service",
            &["bundle_id", "team_id", "key_id", "environment"],
        ),
        _ => ("Push", &[]),
    };
    let summary = item["summary"].as_object().cloned().unwrap_or_default();
    let mut fields: Vec<(String, String)> = order
        .iter()
        .filter_map(|k| summary.get(*k).map(|v| (label(k), shown(v))))
        .collect();
    fields.extend(
        summary
            .iter()
            .filter(|(k, _)| !order.contains(&k.as_str()))
            .map(|(k, v)| (label(k), shown(v))),
    );
    PushSummary {
        platform,
        label: title,
        fields,
        updated: when(&item["updated_at"]),
    }
}

/// A summary field's name as people read it.
fn label(field: &str) -> String {
    match field {
        "project_id" => "Project".to_owned(),
        "client_email" => "Service account".to_owned(),
        "private_key_id" => "Key id".to_owned(),
        "bundle_id" => "Bundle id".to_owned(),
        "team_id" => "Team ID".to_owned(),
        "key_id" => "Key ID".to_owned(),
        "environment" => "Environment".to_owned(),
        other => other.replace('_', " "),
    }
}

fn shown(value: &Value) -> String {
    value
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| value.to_string())
}

async fn page(session: Session) -> Result<Html<String>, ConsoleError> {
    render(build(&session, Outcome::default()).await?)
}

/// The page again, answering a form (a refusal keeps the form's status).
async fn answer(
    session: &Session,
    status: StatusCode,
    outcome: Outcome,
) -> Result<Response, ConsoleError> {
    Ok((status, render(build(session, outcome).await?)?).into_response())
}

fn back() -> Response {
    Redirect::to("/console/integrations").into_response()
}

/// POST /console/integrations/webhook: saves the URL; a new channel's secret is shown once.
async fn save_webhook(session: Session, body: Bytes) -> Result<Response, ConsoleError> {
    let url = form_fields(&body).remove("url").unwrap_or_default();
    let reply = session
        .api()
        .send(
            Method::PUT,
            "/v1/webhook-channel",
            Some(&json!({ "url": url.trim() })),
        )
        .await?;
    if !reply.is_success() {
        let outcome = Outcome {
            webhook_url: Some(url),
            webhook_refusal: Some(Refusal::of(&reply)),
            ..Outcome::default()
        };
        return answer(&session, reply.status, outcome).await;
    }
    match reply.body["secret"].as_str() {
        Some(secret) => {
            let outcome = Outcome {
                secret: Some(secret.to_owned()),
                ..Outcome::default()
            };
            answer(&session, StatusCode::OK, outcome).await
        }
        None => Ok(back()),
    }
}

async fn rotate_secret(session: Session) -> Result<Response, ConsoleError> {
    let reply = session
        .api()
        .send(Method::POST, "/v1/webhook-channel/rotate-secret", None)
        .await?;
    let outcome = if reply.is_success() {
        Outcome {
            secret: reply.body["secret"].as_str().map(str::to_owned),
            ..Outcome::default()
        }
    } else {
        Outcome {
            webhook_refusal: Some(Refusal::of(&reply)),
            ..Outcome::default()
        }
    };
    let status = if reply.is_success() {
        StatusCode::OK
    } else {
        reply.status
    };
    answer(&session, status, outcome).await
}

async fn remove_webhook(session: Session) -> Result<Response, ConsoleError> {
    let reply = session
        .api()
        .send(Method::DELETE, "/v1/webhook-channel", None)
        .await?;
    if reply.is_success() || reply.status == StatusCode::NOT_FOUND {
        return Ok(back());
    }
    let outcome = Outcome {
        webhook_refusal: Some(Refusal::of(&reply)),
        ..Outcome::default()
    };
    answer(&session, reply.status, outcome).await
}

#[derive(Template)]
#[template(path = "integrations_test_result.html")]
struct TestResult {
    delivered: bool,
    /// The receiver's HTTP status, when it answered.
    status: Option<u64>,
    /// When the event was sent, as the API stamped it.
    at: String,
    duration_ms: Option<u64>,
    error: String,
    refusal: Option<Refusal>,
}

/// An API time with seconds ("27 Nov 2026, 16:40:05 UTC"): a test event is about now.
fn moment(value: &Value) -> String {
    value
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| {
            t.with_timezone(&Utc)
                .format("%-d %b %Y, %H:%M:%S UTC")
                .to_string()
        })
        .unwrap_or_default()
}

/// POST /console/integrations/webhook/test (htmx): the receiver's answer to a test event.
async fn test_event(session: Session) -> Result<Html<String>, ConsoleError> {
    let reply = session
        .api()
        .send(Method::POST, "/v1/webhook-channel/test-event", None)
        .await?;
    if reply.status == StatusCode::UNAUTHORIZED {
        return Err(ConsoleError::SignedOut);
    }
    let result = if reply.is_success() {
        TestResult {
            delivered: reply.body["delivered"].as_bool().unwrap_or(false),
            status: reply.body["status"].as_u64(),
            at: moment(&reply.body["event"]["occurred_at"]),
            duration_ms: reply.body["duration_ms"].as_u64(),
            error: text(&reply.body["error"]),
            refusal: None,
        }
    } else {
        TestResult {
            delivered: false,
            status: None,
            at: String::new(),
            duration_ms: None,
            error: String::new(),
            refusal: Some(Refusal::of(&reply)),
        }
    };
    render(result)
}

/// POST /console/integrations/push/fcm: the service-account JSON, checked by the API.
async fn save_fcm(session: Session, body: Bytes) -> Result<Response, ConsoleError> {
    let text = form_fields(&body)
        .remove("service_account")
        .unwrap_or_default();
    let service_account: Value = match serde_json::from_str(&text) {
        Ok(value) => value,
        Err(error) => {
            let outcome = Outcome {
                fcm_refusal: Some(Refusal::says(format!(
                    "Paste the whole key file Google gave you: it is JSON, and this is not \
                     ({error})."
                ))),
                ..Outcome::default()
            };
            return answer(&session, StatusCode::UNPROCESSABLE_ENTITY, outcome).await;
        }
    };
    let reply = session
        .api()
        .send(
            Method::PUT,
            "/v1/integrations/push/fcm",
            Some(&json!({ "service_account": service_account })),
        )
        .await?;
    if reply.is_success() {
        return Ok(back());
    }
    let outcome = Outcome {
        fcm_refusal: Some(Refusal::of(&reply)),
        ..Outcome::default()
    };
    answer(&session, reply.status, outcome).await
}

/// POST /console/integrations/push/apns: the .p8 key and what identifies it.
async fn save_apns(session: Session, body: Bytes) -> Result<Response, ConsoleError> {
    let mut form = form_fields(&body);
    let mut take = |name: &str| form.remove(name).unwrap_or_default();
    let draft = ApnsDraft {
        team_id: take("team_id").trim().to_owned(),
        key_id: take("key_id").trim().to_owned(),
        bundle_id: take("bundle_id").trim().to_owned(),
        environment: take("environment"),
    };
    let private_key = take("private_key");
    let reply = session
        .api()
        .send(
            Method::PUT,
            "/v1/integrations/push/apns",
            Some(&json!({
                "team_id": draft.team_id,
                "key_id": draft.key_id,
                "bundle_id": draft.bundle_id,
                "environment": draft.environment,
                "private_key": private_key,
            })),
        )
        .await?;
    if reply.is_success() {
        return Ok(back());
    }
    let outcome = Outcome {
        apns_refusal: Some(Refusal::of(&reply)),
        apns: draft,
        ..Outcome::default()
    };
    answer(&session, reply.status, outcome).await
}

async fn remove_push(
    session: Session,
    axum::extract::Path(platform): axum::extract::Path<String>,
) -> Result<Response, ConsoleError> {
    let path = match platform.as_str() {
        "fcm" => "/v1/integrations/push/fcm",
        "apns" => "/v1/integrations/push/apns",
        _ => return Err(ConsoleError::BadRequest("no such push platform".to_owned())),
    };
    let reply = session.api().send(Method::DELETE, path, None).await?;
    if reply.is_success() || reply.status == StatusCode::NOT_FOUND {
        return Ok(back());
    }
    let refusal = Some(Refusal::of(&reply));
    let outcome = if platform == "fcm" {
        Outcome {
            fcm_refusal: refusal,
            ..Outcome::default()
        }
    } else {
        Outcome {
            apns_refusal: refusal,
            ..Outcome::default()
        }
    };
    answer(&session, reply.status, outcome).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_summary_lists_known_fields_first_and_keeps_unknown_ones() {
        let summary = summary_of(&json!({
            "platform": "apns",
            "summary": { "key_id": "K", "team_id": "T", "bundle_id": "app", "environment": "sandbox", "extra": 1 },
            "updated_at": "2026-11-27T16:40:05Z",
        }));
        let names: Vec<&str> = summary.fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            ["Bundle id", "Team ID", "Key ID", "Environment", "extra"]
        );
        assert_eq!(summary.fields[4].1, "1");
        assert_eq!(summary.updated, "27 Nov 2026, 16:40 UTC");
    }

    #[test]
    fn a_test_events_time_keeps_its_seconds() {
        assert_eq!(
            moment(&json!("2026-11-27T16:40:05.123Z")),
            "27 Nov 2026, 16:40:05 UTC"
        );
        assert_eq!(moment(&Value::Null), "");
    }
}
