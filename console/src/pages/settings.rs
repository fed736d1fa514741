//! Settings: API keys (created with a role, the secret shown once, revoked with a
//! confirmation) and roles (the system roles read-only, custom ones created, edited and
//! deleted). Which roles a key may get, and what a role may grant, is the API's to decide: a
//! refusal is shown beside the form.

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::http::{Method, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use pidgr_store::Permission;
use serde::Deserialize;
use serde_json::{Value, json};

use super::templates::{Refusal, form_fields};
use super::{Layout, render};
use crate::api::Listing;
use crate::api::{segment, with_query};
use crate::session::Session;
use crate::views::{text, when};
use crate::{Console, ConsoleError};

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/console/settings", get(page))
        .route("/console/settings/api-keys", post(create_key))
        .route(
            "/console/settings/api-keys/{key_id}/revoke",
            post(revoke_key),
        )
        .route("/console/settings/roles", post(create_role))
        .route("/console/settings/roles/{role_id}", post(update_role))
        .route(
            "/console/settings/roles/{role_id}/delete",
            post(delete_role),
        )
}

/// Every page the API gives of a list (keys and roles are few; this reads at most 20 pages).
async fn all_items(session: &Session, path: &str) -> Result<Vec<Value>, ConsoleError> {
    let mut items = Vec::new();
    let mut after = String::new();
    for _ in 0..20 {
        let page: Listing = session
            .api()
            .get(&with_query(path, &[("after", &after), ("limit", "500")]))
            .await?;
        items.extend(page.items);
        match page.next_cursor {
            Some(next) => after = next,
            None => break,
        }
    }
    Ok(items)
}

struct KeyRow {
    id: String,
    name: String,
    prefix: String,
    role: String,
    created: String,
    last_used: String,
    revoked: Option<String>,
    /// The key this console session acts as: revoking it signs the session out.
    own: bool,
}

struct RoleRow {
    id: String,
    name: String,
    permissions: Vec<String>,
    system: bool,
}

/// A permission's checkbox in the role form.
struct PermissionBox {
    name: &'static str,
    checked: bool,
}

/// The role form: a new role, or the custom role being edited.
struct RoleForm {
    /// The role being edited; a new one when absent.
    editing: Option<String>,
    name: String,
    permissions: Vec<PermissionBox>,
}

impl RoleForm {
    fn new(editing: Option<String>, name: String, checked: &[String]) -> Self {
        RoleForm {
            editing,
            name,
            permissions: Permission::ALL
                .iter()
                .map(|p| PermissionBox {
                    name: p.as_str(),
                    checked: checked.iter().any(|c| c == p.as_str()),
                })
                .collect(),
        }
    }
}

/// A key just created: its secret, shown once.
struct NewKey {
    name: String,
    secret: String,
}

struct Can {
    read_keys: bool,
    create_key: bool,
    revoke_key: bool,
    read_roles: bool,
    create_role: bool,
    update_role: bool,
    delete_role: bool,
}

#[derive(Template)]
#[template(path = "settings.html")]
struct Page {
    layout: Layout,
    can: Can,
    keys: Vec<KeyRow>,
    roles: Vec<RoleRow>,
    /// (id, name) of each role a key may be given; the API decides which the caller may grant.
    role_options: Vec<(String, String)>,
    new_key: Option<NewKey>,
    key_name: String,
    key_role: String,
    key_refusal: Option<Refusal>,
    role_form: RoleForm,
    role_refusal: Option<Refusal>,
}

#[derive(Default)]
struct Outcome {
    new_key: Option<NewKey>,
    key_name: String,
    key_role: String,
    key_refusal: Option<Refusal>,
    /// (editing, name, permissions) of a refused role form.
    role_draft: Option<(Option<String>, String, Vec<String>)>,
    /// The role to open in the form.
    edit_role: Option<String>,
    role_refusal: Option<Refusal>,
}

async fn build(session: &Session, outcome: Outcome) -> Result<Page, ConsoleError> {
    let can = Can {
        read_keys: session.can(Method::GET, "/v1/api-keys"),
        create_key: session.can(Method::POST, "/v1/api-keys"),
        revoke_key: session.can(Method::DELETE, "/v1/api-keys/{key_id}"),
        read_roles: session.can(Method::GET, "/v1/roles"),
        create_role: session.can(Method::POST, "/v1/roles"),
        update_role: session.can(Method::PATCH, "/v1/roles/{role_id}"),
        delete_role: session.can(Method::DELETE, "/v1/roles/{role_id}"),
    };
    let roles: Vec<RoleRow> = if can.read_roles {
        all_items(session, "/v1/roles")
            .await?
            .iter()
            .map(|r| RoleRow {
                id: text(&r["id"]),
                name: text(&r["name"]),
                permissions: r["permissions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(text)
                    .collect(),
                system: r["system"].as_bool().unwrap_or(false),
            })
            .collect()
    } else {
        Vec::new()
    };
    let role_name = |id: &str| {
        roles
            .iter()
            .find(|r| r.id == id)
            .map_or_else(|| id.to_owned(), |r| r.name.clone())
    };
    let keys = if can.read_keys {
        all_items(session, "/v1/api-keys")
            .await?
            .iter()
            .map(|k| KeyRow {
                id: text(&k["id"]),
                name: text(&k["name"]),
                prefix: text(&k["prefix"]),
                role: role_name(&text(&k["role"])),
                created: when(&k["created_at"]),
                last_used: when(&k["last_used_at"]),
                revoked: k["revoked_at"].as_str().map(|_| when(&k["revoked_at"])),
                own: k["id"].as_str() == Some(session.key.key_id.as_str()),
            })
            .collect()
    } else {
        Vec::new()
    };
    let role_form = match (outcome.role_draft, outcome.edit_role) {
        (Some((editing, name, permissions)), _) => RoleForm::new(editing, name, &permissions),
        (None, Some(id)) => match roles.iter().find(|r| r.id == id && !r.system) {
            Some(role) => {
                RoleForm::new(Some(role.id.clone()), role.name.clone(), &role.permissions)
            }
            None => RoleForm::new(None, String::new(), &[]),
        },
        (None, None) => RoleForm::new(None, String::new(), &[]),
    };
    let role_options = if roles.is_empty() {
        // A role that manages keys but cannot read roles still knows the system ones.
        pidgr_store::SYSTEM_ROLES
            .iter()
            .map(|r| (r.id.to_owned(), r.name.to_owned()))
            .collect()
    } else {
        roles
            .iter()
            .map(|r| (r.id.clone(), r.name.clone()))
            .collect()
    };
    Ok(Page {
        layout: Layout::new(session, "Settings"),
        can,
        keys,
        role_options,
        roles,
        new_key: outcome.new_key,
        key_name: outcome.key_name,
        key_role: outcome.key_role,
        key_refusal: outcome.key_refusal,
        role_form,
        role_refusal: outcome.role_refusal,
    })
}

#[derive(Deserialize)]
struct PageQuery {
    /// A custom role to edit in the role form.
    #[serde(default)]
    role: String,
}

async fn page(
    session: Session,
    Query(query): Query<PageQuery>,
) -> Result<Html<String>, ConsoleError> {
    let outcome = Outcome {
        edit_role: Some(query.role).filter(|r| !r.is_empty()),
        ..Outcome::default()
    };
    render(build(&session, outcome).await?)
}

async fn answer(
    session: &Session,
    status: StatusCode,
    outcome: Outcome,
) -> Result<Response, ConsoleError> {
    Ok((status, render(build(session, outcome).await?)?).into_response())
}

fn back() -> Response {
    Redirect::to("/console/settings").into_response()
}

/// POST /console/settings/api-keys: the key is created and its secret shown, this once.
async fn create_key(session: Session, body: Bytes) -> Result<Response, ConsoleError> {
    let form = form_fields(&body);
    let name = form.get("name").cloned().unwrap_or_default();
    let role = form.get("role_id").cloned().unwrap_or_default();
    let reply = session
        .api()
        .post("/v1/api-keys", &json!({ "name": name, "role_id": role }))
        .await?;
    if reply.is_success() {
        let outcome = Outcome {
            new_key: Some(NewKey {
                name: text(&reply.body["name"]),
                secret: text(&reply.body["secret"]),
            }),
            ..Outcome::default()
        };
        return answer(&session, StatusCode::OK, outcome).await;
    }
    let outcome = Outcome {
        key_name: name,
        key_role: role,
        key_refusal: Some(Refusal::of(&reply)),
        ..Outcome::default()
    };
    answer(&session, reply.status, outcome).await
}

async fn revoke_key(
    session: Session,
    Path(key_id): Path<String>,
) -> Result<Response, ConsoleError> {
    let reply = session
        .api()
        .send(
            Method::DELETE,
            &format!("/v1/api-keys/{}", segment(&key_id)),
            None,
        )
        .await?;
    if reply.is_success() {
        return Ok(back());
    }
    let outcome = Outcome {
        key_refusal: Some(Refusal::of(&reply)),
        ..Outcome::default()
    };
    answer(&session, reply.status, outcome).await
}

/// The role form's name and checked permissions (a field repeated once per box).
fn role_fields(body: &[u8]) -> (String, Vec<String>) {
    let mut name = String::new();
    let mut permissions = Vec::new();
    for (field, value) in form_urlencoded::parse(body) {
        match field.as_ref() {
            "name" => name = value.into_owned(),
            "permissions" => permissions.push(value.into_owned()),
            _ => {}
        }
    }
    (name, permissions)
}

async fn create_role(session: Session, body: Bytes) -> Result<Response, ConsoleError> {
    let (name, permissions) = role_fields(&body);
    let reply = session
        .api()
        .post(
            "/v1/roles",
            &json!({ "name": name, "permissions": permissions }),
        )
        .await?;
    if reply.is_success() {
        return Ok(back());
    }
    let outcome = Outcome {
        role_draft: Some((None, name, permissions)),
        role_refusal: Some(Refusal::of(&reply)),
        ..Outcome::default()
    };
    answer(&session, reply.status, outcome).await
}

async fn update_role(
    session: Session,
    Path(role_id): Path<String>,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let (name, permissions) = role_fields(&body);
    let reply = session
        .api()
        .send(
            Method::PATCH,
            &format!("/v1/roles/{}", segment(&role_id)),
            Some(&json!({ "name": name, "permissions": permissions })),
        )
        .await?;
    if reply.is_success() {
        return Ok(back());
    }
    let outcome = Outcome {
        role_draft: Some((Some(role_id), name, permissions)),
        role_refusal: Some(Refusal::of(&reply)),
        ..Outcome::default()
    };
    answer(&session, reply.status, outcome).await
}

async fn delete_role(
    session: Session,
    Path(role_id): Path<String>,
) -> Result<Response, ConsoleError> {
    let reply = session
        .api()
        .send(
            Method::DELETE,
            &format!("/v1/roles/{}", segment(&role_id)),
            None,
        )
        .await?;
    if reply.is_success() {
        return Ok(back());
    }
    let outcome = Outcome {
        role_refusal: Some(Refusal::of(&reply)),
        ..Outcome::default()
    };
    answer(&session, reply.status, outcome).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_form_gives_every_checked_permission() {
        let (name, permissions) = role_fields(
            b"csrf=t&name=Editors&permissions=templates%3Aread&permissions=templates%3Awrite",
        );
        assert_eq!(name, "Editors");
        assert_eq!(permissions, ["templates:read", "templates:write"]);
    }

    #[test]
    fn the_role_form_offers_every_permission_with_the_roles_own_checked() {
        let form = RoleForm::new(None, "R".into(), &["members:read".to_owned()]);
        assert_eq!(form.permissions.len(), Permission::ALL.len());
        let checked: Vec<&str> = form
            .permissions
            .iter()
            .filter(|p| p.checked)
            .map(|p| p.name)
            .collect();
        assert_eq!(checked, ["members:read"]);
    }
}
