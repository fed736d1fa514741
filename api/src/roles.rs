//! The caller's organisation, and roles: the four system roles (read-only) and custom ones.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use pidgr_store::{Permission, Role};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::OrNotFound;
use crate::input::{Body, Name, Page};
use crate::{ApiError, AppState, Caller};

/// GET /v1/organisation: who the key belongs to and what it may do.
pub async fn organisation(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let org = state
        .store
        .get_organisation(&caller.org_id)
        .await
        .or_not_found("organisation")?;
    Ok(Json(json!({
        "id": org.id,
        "name": org.name,
        "created_at": org.created_at,
        "api_key": { "id": caller.key_id, "role_id": caller.role_id, "permissions": caller.permissions },
    })))
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let roles = state
        .store
        .list_roles(&caller.org_id, page.after(), page.limit())
        .await?;
    Ok(page.respond(roles, |r| r.id.clone()))
}

pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(role_id): Path<String>,
) -> Result<Json<Role>, ApiError> {
    Ok(Json(
        state
            .store
            .get_role(&caller.org_id, &role_id)
            .await
            .or_not_found("role")?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRole {
    name: Name,
    permissions: BTreeSet<Permission>,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(new): Body<NewRole>,
) -> Result<(StatusCode, Json<Role>), ApiError> {
    caller.may_grant(&new.permissions)?;
    let role = state
        .store
        .create_role(&caller.org_id, new.name.as_str(), &new.permissions)
        .await?;
    Ok((StatusCode::CREATED, Json(role)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleUpdate {
    #[serde(default)]
    name: Option<Name>,
    #[serde(default)]
    permissions: Option<BTreeSet<Permission>>,
}

pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(role_id): Path<String>,
    Body(update): Body<RoleUpdate>,
) -> Result<Json<Role>, ApiError> {
    let current = state
        .store
        .get_role(&caller.org_id, &role_id)
        .await
        .or_not_found("role")?;
    // Changing a role changes every key that carries it: the caller must hold both what the
    // role grants now and what it will grant.
    caller.may_grant(&current.permissions)?;
    if let Some(permissions) = &update.permissions {
        caller.may_grant(permissions)?;
    }
    let role = state
        .store
        .update_role(
            &caller.org_id,
            &role_id,
            update.name.as_ref().map(Name::as_str),
            update.permissions.as_ref(),
        )
        .await
        .or_not_found("role")?;
    Ok(Json(role))
}

pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(role_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .store
        .delete_role(&caller.org_id, &role_id)
        .await
        .or_not_found("role")?;
    Ok(StatusCode::NO_CONTENT)
}

/// The role `role_id` names, which the caller must be allowed to hand out (a key or member
/// given it carries its permissions); an unknown id is a validation problem at `pointer`.
pub(crate) async fn grantable_role(
    state: &AppState,
    caller: &Caller,
    pointer: &str,
    role_id: &str,
) -> Result<Role, ApiError> {
    let role = match state.store.get_role(&caller.org_id, role_id).await {
        Err(pidgr_store::StoreError::NotFound) => {
            return Err(ApiError::invalid(pointer, "no role has this id"));
        }
        other => other?,
    };
    caller.may_grant(&role.permissions)?;
    Ok(role)
}
