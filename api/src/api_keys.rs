//! API keys: created with a role (never one granting more than the creator holds), shown once,
//! stored hashed, revocable by whoever could have created them.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use pidgr_store::ApiKey;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::OrNotFound;
use crate::input::{Body, Name, Page};
use crate::roles::grantable_role;
use crate::{ApiError, AppState, Caller};

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let keys = state
        .store
        .list_api_keys(&caller.org_id, page.after(), page.limit())
        .await?;
    Ok(page.respond(keys, |k| k.id.clone()))
}

pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(key_id): Path<String>,
) -> Result<Json<ApiKey>, ApiError> {
    Ok(Json(
        state
            .store
            .get_api_key(&caller.org_id, &key_id)
            .await
            .or_not_found("API key")?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    name: Name,
    role_id: Name,
}

/// POST /v1/api-keys: the response carries the secret; it is never shown again.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(new): Body<NewKey>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let role = grantable_role(&state, &caller, "/role_id", new.role_id.as_str()).await?;
    let generated = state
        .store
        .create_api_key(&caller.org_id, new.name.as_str(), &role.id)
        .await?;
    let mut body = json!(generated.key);
    body["secret"] = json!(generated.secret);
    Ok((StatusCode::CREATED, Json(body)))
}

/// DELETE /v1/api-keys/{id}: revokes the key; requests made with it are refused from now on.
/// Only a caller who could have created the key may revoke it (its role's permissions are all
/// the caller's too): otherwise a role that only manages keys could lock out every Super Admin.
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(key_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let key = state
        .store
        .get_api_key(&caller.org_id, &key_id)
        .await
        .or_not_found("API key")?;
    match state.store.get_role(&caller.org_id, &key.role).await {
        Ok(role) => caller.may_grant(&role.permissions)?,
        // A key whose role never became a role (older than roles) may do nothing at all.
        Err(pidgr_store::StoreError::NotFound) => {}
        Err(error) => return Err(error.into()),
    }
    state
        .store
        .revoke_api_key(&caller.org_id, &key_id)
        .await
        .or_not_found("API key")?;
    Ok(StatusCode::NO_CONTENT)
}
