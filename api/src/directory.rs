//! Members (the organisation's people, with profile attributes usable as template variables)
//! and their push devices.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use pidgr_store::{
    Device, ImportedMember, Member, MemberUpdate, NewMember, Permission, Platform, StoreError,
    UpsertOutcome,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::OrNotFound;
use crate::input::{Body, Name, Page, Text, Variables};
use crate::managers::{field_of, manager_ref, present, refused_at, resolve};
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
    /// The manager by id, or (next field) by external id; see [`crate::managers`].
    #[serde(default, deserialize_with = "present")]
    manager_id: Option<Option<Name>>,
    #[serde(default, deserialize_with = "present")]
    manager_external_id: Option<Option<Name>>,
}

/// A body that names its manager both ways, as a 422 at `/{field}` under `at`.
fn both_ways(at: &str) -> impl Fn((&'static str, String)) -> ApiError + '_ {
    move |(field, message)| ApiError::invalid(format!("{at}/{field}"), message)
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(new): Body<CreateMember>,
) -> Result<(StatusCode, Json<Member>), ApiError> {
    let role_id = new.role_id.as_ref().map_or("member", Name::as_str);
    let role = grantable_role(&state, &caller, "/role_id", role_id).await?;
    let manager = manager_ref(&new.manager_id, &new.manager_external_id).map_err(both_ways(""))?;
    let manager_id = resolve(&state, &caller, &manager).await?;
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
                manager_id,
            },
        )
        .await
        .map_err(|e| refused_at(e, &format!("/{}", field_of(&manager))))?;
    Ok((StatusCode::CREATED, Json(member)))
}

/// The body of `PUT /v1/members/by-external-id/{external_id}`: `POST /v1/members`'s, where
/// `external_id` may be left out (the path names it) and must match the path when given.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsertMember {
    #[serde(default)]
    external_id: Option<Name>,
    email: Email,
    display_name: Name,
    #[serde(default)]
    attributes: Variables,
    /// A new member gets `member` when left out; an existing member keeps their role.
    #[serde(default)]
    role_id: Option<Name>,
    /// Left out, an existing member keeps their manager; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    manager_id: Option<Option<Name>>,
    #[serde(default, deserialize_with = "present")]
    manager_external_id: Option<Option<Name>>,
}

impl CreateMember {
    /// The row for the store's writes by external id; `Err` (field, problem) when it names its
    /// manager both ways.
    fn imported(&self) -> Result<ImportedMember, (&'static str, String)> {
        Ok(ImportedMember {
            external_id: self.external_id.0.clone(),
            email: self.email.0.clone(),
            display_name: self.display_name.0.clone(),
            attributes: self.attributes.0.clone(),
            devices: Vec::new(),
            teams: Vec::new(),
            manager: manager_ref(&self.manager_id, &self.manager_external_id)?,
        })
    }
}

/// PUT /v1/members/by-external-id/{external_id}: creates the member with this external id
/// (201) or brings them to exactly this profile (200); attributes are replaced whole.
pub async fn upsert(
    State(state): State<AppState>,
    caller: Caller,
    Path(external_id): Path<String>,
    Body(body): Body<UpsertMember>,
) -> Result<(StatusCode, Json<Member>), ApiError> {
    // The path is held to the body's rule for the field.
    let external_id: Name = serde_json::from_value(Value::String(external_id))
        .map_err(|e| ApiError::invalid("/external_id", format!("the path's external id {e}")))?;
    if let Some(given) = &body.external_id
        && given != &external_id
    {
        return Err(ApiError::invalid(
            "/external_id",
            "differs from the external id in the path; leave it out or make them equal",
        ));
    }
    let row = CreateMember {
        external_id,
        email: body.email,
        display_name: body.display_name,
        attributes: body.attributes,
        role_id: body.role_id,
        manager_id: body.manager_id,
        manager_external_id: body.manager_external_id,
    };
    let imported = row.imported().map_err(both_ways(""))?;
    let existing = state
        .store
        .find_member_by_external_id(&caller.org_id, row.external_id.as_str())
        .await?;
    check_grants(&state, &caller, &[(&row, existing.as_ref())], |_| {
        "/role_id".to_owned()
    })
    .await
    .map_err(|refused| match refused {
        Refused::Forbidden(error) => error,
        Refused::Rows(_) => ApiError::invalid("/role_id", "no role has this id"),
    })?;
    let manager_field = format!("/{}", field_of(&imported.manager));
    let (_, written) = state
        .store
        .upsert_members(&caller.org_id, &[imported], &[row.role_id.map(|r| r.0)])
        .await
        .map_err(|e| refused_at(e, &manager_field))?;
    let (outcome, id) = written
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::Internal("an upsert of one member wrote no row".into()))?;
    let member = state
        .store
        .get_member(&caller.org_id, &id)
        .await
        .or_not_found("member")?;
    let status = match outcome {
        UpsertOutcome::Created => StatusCode::CREATED,
        UpsertOutcome::Updated | UpsertOutcome::Unchanged => StatusCode::OK,
    };
    Ok((status, Json(member)))
}

/// The most members one `POST /v1/members/bulk` takes.
pub const MAX_BULK_MEMBERS: usize = 1_000;

/// The largest body `POST /v1/members/bulk` takes: a thousand members with a few attributes
/// each do not fit in the 256 KiB of the other routes.
pub const MAX_BULK_BODY_BYTES: usize = 4 * 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkMembers {
    /// Each `POST /v1/members`'s body; parsed one by one, so that every bad row is reported.
    members: Vec<Value>,
}

/// Why a set of rows cannot be written: a role the caller may not grant refuses the whole
/// request (403, as `POST /v1/members` would); anything else is a row's problem.
enum Refused {
    Forbidden(ApiError),
    /// (row, pointer) of each role that does not exist.
    Rows(Vec<(usize, String)>),
}

/// The role checks of `POST /v1/members` and `PATCH /v1/members/{id}` for rows written by
/// external id: every role named must exist and be the caller's to grant; a member whose role
/// changes must have one the caller could grant (taking a role away is a grant decision too);
/// a new member without a role gets `member`, which the caller must be able to grant.
async fn check_grants(
    state: &AppState,
    caller: &Caller,
    rows: &[(&CreateMember, Option<&Member>)],
    pointer: impl Fn(usize) -> String,
) -> Result<(), Refused> {
    let mut roles: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut taken_away: BTreeSet<&str> = BTreeSet::new();
    for (index, (row, existing)) in rows.iter().enumerate() {
        match (&row.role_id, existing) {
            (Some(role), existing) => {
                roles.entry(role.as_str()).or_default().push(index);
                if let Some(member) = existing
                    && member.role_id != role.as_str()
                {
                    taken_away.insert(&member.role_id);
                }
            }
            (None, None) => roles.entry("member").or_default().push(index),
            (None, Some(_)) => {}
        }
    }
    let mut unknown = Vec::new();
    for (role_id, named_by) in roles {
        match state.store.get_role(&caller.org_id, role_id).await {
            Err(StoreError::NotFound) => {
                unknown.extend(named_by.into_iter().map(|index| (index, pointer(index))));
            }
            Err(other) => return Err(Refused::Forbidden(other.into())),
            Ok(role) => caller
                .may_grant(&role.permissions)
                .map_err(Refused::Forbidden)?,
        }
    }
    for role_id in taken_away {
        // A member's current role exists (roles in use cannot be deleted).
        let role = state
            .store
            .get_role(&caller.org_id, role_id)
            .await
            .map_err(|e| Refused::Forbidden(e.into()))?;
        caller
            .may_grant(&role.permissions)
            .map_err(Refused::Forbidden)?;
    }
    if unknown.is_empty() {
        Ok(())
    } else {
        unknown.sort();
        Err(Refused::Rows(unknown))
    }
}

/// POST /v1/members/bulk: creates or updates each member by external id, all or nothing. Every
/// row is held to `POST /v1/members`'s rules; if any breaks them, the answer is a 422 naming
/// every bad row (`errors: [{row, pointer, detail}]`) and nothing is written. Otherwise one
/// transaction writes them all: `{created, updated, unchanged}`.
pub async fn bulk(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<Response, ApiError> {
    // Read here rather than through `Body`, for the route's own limit (set in the route table).
    let bytes = Bytes::from_request(request, &())
        .await
        .map_err(|rejection| match rejection {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                ApiError::PayloadTooLarge(MAX_BULK_BODY_BYTES)
            }
            other => ApiError::BadRequest(other.body_text()),
        })?;
    let body: BulkMembers = crate::input::parse_json(&bytes)?;
    if body.members.len() > MAX_BULK_MEMBERS {
        return Err(ApiError::invalid(
            "/members",
            format!(
                "at most {MAX_BULK_MEMBERS} members per request, not {}; send them in several",
                body.members.len()
            ),
        ));
    }
    let mut problems: Vec<(usize, String, String)> = Vec::new();
    let mut rows: Vec<(usize, CreateMember)> = Vec::with_capacity(body.members.len());
    let mut first_row_of: HashMap<String, usize> = HashMap::new();
    for (index, value) in body.members.into_iter().enumerate() {
        let at = format!("/members/{index}");
        let bytes = serde_json::to_vec(&value).map_err(|e| ApiError::Internal(e.to_string()))?;
        match crate::input::parse_json::<CreateMember>(&bytes) {
            Ok(row) => {
                if let Err((field, message)) = row.imported() {
                    problems.push((index, format!("{at}/{field}"), message));
                } else if let Some(first) = first_row_of.get(row.external_id.as_str()) {
                    problems.push((
                        index,
                        format!("{at}/external_id"),
                        format!("the external id is also row {first}'s; each member once"),
                    ));
                } else {
                    first_row_of.insert(row.external_id.0.clone(), index);
                    rows.push((index, row));
                }
            }
            Err(ApiError::Invalid(found)) => problems.extend(
                found
                    .into_iter()
                    .map(|p| (index, format!("{at}{}", p.pointer), p.message)),
            ),
            // A row is JSON already, so nothing else can come back.
            Err(other) => problems.push((index, at, other.to_string())),
        }
    }
    let external_ids: Vec<&str> = rows.iter().map(|(_, r)| r.external_id.as_str()).collect();
    let existing = state
        .store
        .find_members_by_external_ids(&caller.org_id, &external_ids)
        .await?;
    let checked: Vec<(&CreateMember, Option<&Member>)> = rows
        .iter()
        .map(|(_, row)| (row, existing.get(row.external_id.as_str())))
        .collect();
    match check_grants(&state, &caller, &checked, |i| {
        format!("/members/{}/role_id", rows[i].0)
    })
    .await
    {
        Ok(()) => {}
        Err(Refused::Forbidden(error)) => return Err(error),
        Err(Refused::Rows(unknown)) => problems.extend(
            unknown
                .into_iter()
                .map(|(i, pointer)| (rows[i].0, pointer, "no role has this id".to_owned())),
        ),
    }
    if !problems.is_empty() {
        return Ok(bad_rows(problems));
    }
    let batch = rows
        .iter()
        .map(|(_, row)| row.imported())
        .collect::<Result<Vec<ImportedMember>, _>>()
        .map_err(|(_, message)| ApiError::Internal(message))?;
    let roles: Vec<Option<String>> = rows
        .iter()
        .map(|(_, row)| row.role_id.as_ref().map(|r| r.0.clone()))
        .collect();
    let counts = match state
        .store
        .upsert_members(&caller.org_id, &batch, &roles)
        .await
    {
        Ok((counts, _)) => counts,
        // Managers are checked once every row is in (one may name a manager a later row
        // writes): refused, they are reported by row like any other problem.
        Err(StoreError::Manager(errors)) => {
            let problems = errors
                .iter()
                .filter_map(|error| {
                    let position = batch
                        .iter()
                        .position(|row| row.external_id == error.external_id)?;
                    let field = field_of(&batch[position].manager);
                    let index = rows[position].0;
                    Some((
                        index,
                        format!("/members/{index}/{field}"),
                        crate::managers::detail(&error.problem),
                    ))
                })
                .collect();
            return Ok(bad_rows(problems));
        }
        Err(other) => return Err(other.into()),
    };
    Ok(Json(json!({
        "created": counts.created,
        "updated": counts.updated,
        "unchanged": counts.unchanged,
    }))
    .into_response())
}

/// The 422 of a bulk write: a problem document whose `errors` name each bad row, in row order.
fn bad_rows(mut problems: Vec<(usize, String, String)>) -> Response {
    problems.sort_by_key(|(row, _, _)| *row);
    let rows: BTreeSet<usize> = problems.iter().map(|(row, _, _)| *row).collect();
    let body = json!({
        "type": "https://pidgr.dev/problems/validation",
        "title": "Validation failed",
        "status": 422,
        "detail": format!(
            "{} row(s) break the rules of POST /v1/members; nothing was written",
            rows.len()
        ),
        "errors": problems
            .into_iter()
            .map(|(row, pointer, detail)| json!({ "row": row, "pointer": pointer, "detail": detail }))
            .collect::<Vec<_>>(),
    });
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
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
    /// Left out keeps the manager; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    manager_id: Option<Option<Name>>,
    #[serde(default, deserialize_with = "present")]
    manager_external_id: Option<Option<Name>>,
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
    let manager =
        manager_ref(&update.manager_id, &update.manager_external_id).map_err(both_ways(""))?;
    let manager_id = match &manager {
        pidgr_store::ManagerRef::Keep => None,
        other => Some(resolve(&state, &caller, other).await?),
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
                manager_id,
            },
        )
        .await
        .map_err(|e| refused_at(e, &format!("/{}", field_of(&manager))))?;
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
