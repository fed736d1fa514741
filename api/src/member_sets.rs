//! Teams and groups: named sets of members. One set of handlers serves both; the route table
//! tells each route which kind it is about (and which permission it needs).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use pidgr_store::{MemberSet, SetKind};
use serde::Deserialize;
use serde_json::Value;

use crate::error::OrNotFound;
use crate::input::{Body, Name, Page};
use crate::{ApiError, AppState, Caller};

pub async fn list(
    State(state): State<AppState>,
    Extension(kind): Extension<SetKind>,
    caller: Caller,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let sets = state
        .store
        .list_sets(&caller.org_id, kind, page.after(), page.limit())
        .await?;
    Ok(page.respond(sets, |s| s.id.clone()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetName {
    name: Name,
}

pub async fn create(
    State(state): State<AppState>,
    Extension(kind): Extension<SetKind>,
    caller: Caller,
    Body(new): Body<SetName>,
) -> Result<(StatusCode, Json<MemberSet>), ApiError> {
    let set = state
        .store
        .create_set(&caller.org_id, kind, new.name.as_str())
        .await?;
    Ok((StatusCode::CREATED, Json(set)))
}

pub async fn read(
    State(state): State<AppState>,
    Extension(kind): Extension<SetKind>,
    caller: Caller,
    Path(set_id): Path<String>,
) -> Result<Json<MemberSet>, ApiError> {
    Ok(Json(
        state
            .store
            .get_set(&caller.org_id, kind, &set_id)
            .await
            .or_not_found(kind.noun())?,
    ))
}

pub async fn rename(
    State(state): State<AppState>,
    Extension(kind): Extension<SetKind>,
    caller: Caller,
    Path(set_id): Path<String>,
    Body(update): Body<SetName>,
) -> Result<Json<MemberSet>, ApiError> {
    Ok(Json(
        state
            .store
            .rename_set(&caller.org_id, kind, &set_id, update.name.as_str())
            .await
            .or_not_found(kind.noun())?,
    ))
}

pub async fn remove(
    State(state): State<AppState>,
    Extension(kind): Extension<SetKind>,
    caller: Caller,
    Path(set_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .store
        .delete_set(&caller.org_id, kind, &set_id)
        .await
        .or_not_found(kind.noun())?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_members(
    State(state): State<AppState>,
    Extension(kind): Extension<SetKind>,
    caller: Caller,
    Path(set_id): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let members = state
        .store
        .list_set_members(&caller.org_id, kind, &set_id, page.after(), page.limit())
        .await
        .or_not_found(kind.noun())?;
    Ok(page.respond(members, |m| m.id.clone()))
}

/// PUT /v1/{teams|groups}/{id}/members/{member_id}: 201 when added, 200 when already there.
pub async fn add_member(
    State(state): State<AppState>,
    Extension(kind): Extension<SetKind>,
    caller: Caller,
    Path((set_id, member_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let added = state
        .store
        .add_set_member(&caller.org_id, kind, &set_id, &member_id)
        .await
        .or_not_found("team, group or member")?;
    Ok(if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    })
}

pub async fn remove_member(
    State(state): State<AppState>,
    Extension(kind): Extension<SetKind>,
    caller: Caller,
    Path((set_id, member_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state
        .store
        .remove_set_member(&caller.org_id, kind, &set_id, &member_id)
        .await
        .or_not_found("membership")?;
    Ok(StatusCode::NO_CONTENT)
}
