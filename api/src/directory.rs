//! Members (the organisation's people, with profile attributes usable as template variables)
//! and their push devices.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use pidgr_store::{Device, Member, MemberUpdate, NewMember, Permission, Platform};
use serde::Deserialize;
use serde_json::Value;

use crate::error::OrNotFound;
use crate::input::{Body, Name, Page, Text, Variables};
use crate::roles::grantable_role;
use crate::{ApiError, AppState, Caller};

/// An e-mail address: 3 to 320 characters with an `@` that is neither first nor last.
#[derive(Clone, Debug)]
pub struct Email(pub String);

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Text::<320>::deserialize(deserializer)?.0;
        match text.split_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.is_empty() => Ok(Email(text)),
            _ => Err(serde::de::Error::custom("must be an e-mail address")),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberQuery {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    /// Finds the member with this external id (a list of zero or one).
    #[serde(default)]
    external_id: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<MemberQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = Page {
        after: query.after,
        limit: query.limit,
    };
    let members = match &query.external_id {
        Some(external_id) => state
            .store
            .find_member_by_external_id(&caller.org_id, external_id)
            .await?
            .into_iter()
            .collect(),
        None => {
            state
                .store
                .list_members(&caller.org_id, page.after(), page.limit())
                .await?
        }
    };
    Ok(page.respond(members, |m| m.id.clone()))
}

pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
) -> Result<Json<Member>, ApiError> {
    Ok(Json(
        state
            .store
            .get_member(&caller.org_id, &member_id)
            .await
            .or_not_found("member")?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateMember {
    external_id: Name,
    email: Email,
    display_name: Name,
    #[serde(default)]
    attributes: Variables,
    /// Defaults to the system role `member` (no admin permissions).
    #[serde(default)]
    role_id: Option<Name>,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(new): Body<CreateMember>,
) -> Result<(StatusCode, Json<Member>), ApiError> {
    let role_id = new.role_id.as_ref().map_or("member", Name::as_str);
    let role = grantable_role(&state, &caller, "/role_id", role_id).await?;
    let member = state
        .store
        .create_member(
            &caller.org_id,
            NewMember {
                external_id: new.external_id.0,
                email: new.email.0,
                display_name: new.display_name.0,
                attributes: new.attributes.0,
                role_id: role.id,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(member)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateMember {
    #[serde(default)]
    email: Option<Email>,
    #[serde(default)]
    display_name: Option<Name>,
    /// Replaces every attribute.
    #[serde(default)]
    attributes: Option<Variables>,
    #[serde(default)]
    role_id: Option<Name>,
}

pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
    Body(update): Body<UpdateMember>,
) -> Result<Json<Member>, ApiError> {
    let current = state
        .store
        .get_member(&caller.org_id, &member_id)
        .await
        .or_not_found("member")?;
    let role_id = match &update.role_id {
        Some(role_id) => {
            // Taking a role away is as much a grant decision as giving one.
            grantable_role(&state, &caller, "/role_id", &current.role_id).await?;
            Some(
                grantable_role(&state, &caller, "/role_id", role_id.as_str())
                    .await?
                    .id,
            )
        }
        None => None,
    };
    let member = state
        .store
        .update_member(
            &caller.org_id,
            &member_id,
            MemberUpdate {
                email: update.email.map(|e| e.0),
                display_name: update.display_name.map(|n| n.0),
                attributes: update.attributes.map(|a| a.0),
                role_id,
            },
        )
        .await
        .or_not_found("member")?;
    Ok(Json(member))
}

pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .store
        .delete_member(&caller.org_id, &member_id)
        .await
        .or_not_found("member")?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_devices(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let mut devices = state
        .store
        .list_devices(&caller.org_id, &member_id, page.after(), page.limit())
        .await
        .or_not_found("member")?;
    // A token is what it takes to push to someone's phone: shown whole only to the mobile
    // backend that registers them (`deliveries:write`), masked for everyone who merely reads
    // the directory.
    if !caller.permissions.contains(&Permission::DeliveriesWrite) {
        for device in &mut devices {
            device.token = pidgr_store::masked_token(&device.token);
        }
    }
    Ok(page.respond(devices, |d| d.id.clone()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterDevice {
    platform: Platform,
    token: Text<4096>,
}

/// POST /v1/members/{id}/devices: 201 for a new token, 200 when the token was known (it now
/// belongs to this member and its last-seen time is refreshed).
pub async fn register_device(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
    Body(device): Body<RegisterDevice>,
) -> Result<(StatusCode, Json<Device>), ApiError> {
    let (device, created) = state
        .store
        .register_device(
            &caller.org_id,
            &member_id,
            device.platform,
            device.token.as_str(),
        )
        .await
        .or_not_found("member")?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(device)))
}

pub async fn remove_device(
    State(state): State<AppState>,
    caller: Caller,
    Path((member_id, device_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state
        .store
        .remove_device(&caller.org_id, &member_id, &device_id)
        .await
        .or_not_found("device")?;
    Ok(StatusCode::NO_CONTENT)
}
