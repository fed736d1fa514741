//! Push provider credentials, per organisation: FCM (a Google service account) and APNs (a .p8
//! signing key). The credentials are checked before anything is stored (the key must parse and
//! suit its provider), sealed with the server's key, and never shown again: reads answer only the
//! non-secret summary.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use pidgr_push::{ApnsEnvironment, ApnsKeyFile, FcmCredentials};
use pidgr_store::{Platform, PushCredentials};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::OrNotFound;
use crate::input::{Body, Text};
use crate::{ApiError, AppState, Caller};

/// GET /v1/integrations/push: the configured platforms and their summaries.
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let items = state.store.list_push_credentials(&caller.org_id).await?;
    Ok(Json(json!({ "items": items })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigureFcm {
    /// The service-account key file Google issues, as a JSON object.
    service_account: Value,
}

/// PUT /v1/integrations/push/fcm
pub async fn configure_fcm(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<ConfigureFcm>,
) -> Result<Json<PushCredentials>, ApiError> {
    let json = request.service_account.to_string();
    let credentials = FcmCredentials::from_service_account_json(&json)
        .map_err(|error| ApiError::invalid("/service_account", error.to_string()))?;
    let summary = json!({
        "project_id": credentials.project_id,
        "client_email": credentials.client_email,
        "private_key_id": credentials.private_key_id,
    });
    let stored = state
        .store
        .set_push_credentials(&caller.org_id, Platform::Fcm, &summary, &json)
        .await?;
    Ok(Json(stored))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigureApns {
    team_id: Text<10>,
    key_id: Text<10>,
    /// The app's bundle id: the `apns-topic` of every push.
    bundle_id: Text<255>,
    environment: ApnsEnvironment,
    /// The .p8 file's content (PKCS#8 PEM).
    private_key: Text<4096>,
}

/// PUT /v1/integrations/push/apns
pub async fn configure_apns(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<ConfigureApns>,
) -> Result<Json<PushCredentials>, ApiError> {
    let file = ApnsKeyFile {
        team_id: request.team_id.0,
        key_id: request.key_id.0,
        topic: request.bundle_id.0,
        environment: request.environment,
        private_key: request.private_key.0,
    };
    file.credentials()
        .map_err(|error| ApiError::invalid(error.pointer(), error.to_string()))?;
    let summary = json!({
        "team_id": file.team_id,
        "key_id": file.key_id,
        "bundle_id": file.topic,
        "environment": file.environment,
    });
    let stored = state
        .store
        .set_push_credentials(&caller.org_id, Platform::Apns, &summary, &file.to_json())
        .await?;
    Ok(Json(stored))
}

/// DELETE /v1/integrations/push/fcm
pub async fn remove_fcm(state: State<AppState>, caller: Caller) -> Result<StatusCode, ApiError> {
    remove(state, caller, Platform::Fcm).await
}

/// DELETE /v1/integrations/push/apns
pub async fn remove_apns(state: State<AppState>, caller: Caller) -> Result<StatusCode, ApiError> {
    remove(state, caller, Platform::Apns).await
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    platform: Platform,
) -> Result<StatusCode, ApiError> {
    state
        .store
        .delete_push_credentials(&caller.org_id, platform)
        .await
        .or_not_found("push credentials")?;
    Ok(StatusCode::NO_CONTENT)
}
