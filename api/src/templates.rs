//! Templates: a name and append-only versions (title and Markdown body). Each version lists
//! the variables it uses; a preview renders a version for one member.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use pidgr_store::{StoreError, TemplateVersion};
use pidgr_workflows::template;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::OrNotFound;
use crate::input::{Body, LongText, Name, Page, Text, Variables};
use crate::message::{self, Reader};
use crate::{ApiError, AppState, Caller};

/// The variables a title and body use, sorted.
fn variables(title: &str, body: &str) -> Vec<String> {
    let mut names = template::placeholders(title);
    names.extend(template::placeholders(body));
    names.into_iter().collect()
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let templates = state
        .store
        .list_templates(&caller.org_id, page.after(), page.limit())
        .await?;
    Ok(page.respond(templates, |t| t.id.clone()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTemplate {
    name: Name,
    title: Name,
    body: LongText,
}

/// POST /v1/templates: the template with its version 1.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(new): Body<NewTemplate>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (template, version) = state
        .store
        .create_template(
            &caller.org_id,
            new.name.as_str(),
            new.title.as_str(),
            new.body.as_str(),
            &variables(new.title.as_str(), new.body.as_str()),
        )
        .await?;
    let mut body = json!(template);
    body["latest"] = json!(version);
    Ok((StatusCode::CREATED, Json(body)))
}

/// GET /v1/templates/{id}: the template with its latest version.
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(template_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let template = state
        .store
        .get_template(&caller.org_id, &template_id)
        .await
        .or_not_found("template")?;
    let latest = state
        .store
        .get_template_version(&caller.org_id, &template_id, template.latest_version)
        .await?;
    let mut body = json!(template);
    body["latest"] = json!(latest);
    Ok(Json(body))
}

pub async fn list_versions(
    State(state): State<AppState>,
    caller: Caller,
    Path(template_id): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let versions = state
        .store
        .list_template_versions(
            &caller.org_id,
            &template_id,
            page.after_number()?,
            page.limit(),
        )
        .await
        .or_not_found("template")?;
    Ok(page.respond(versions, |v| v.version.to_string()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewVersion {
    title: Name,
    body: LongText,
}

/// POST /v1/templates/{id}/versions: an edit. It appends a version; campaigns that pinned an
/// earlier one keep it.
pub async fn append_version(
    State(state): State<AppState>,
    caller: Caller,
    Path(template_id): Path<String>,
    Body(new): Body<NewVersion>,
) -> Result<(StatusCode, Json<TemplateVersion>), ApiError> {
    let version = state
        .store
        .append_template_version(
            &caller.org_id,
            &template_id,
            new.title.as_str(),
            new.body.as_str(),
            &variables(new.title.as_str(), new.body.as_str()),
        )
        .await
        .or_not_found("template")?;
    Ok((StatusCode::CREATED, Json(version)))
}

pub async fn read_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((template_id, version)): Path<(String, i64)>,
) -> Result<Json<TemplateVersion>, ApiError> {
    Ok(Json(
        state
            .store
            .get_template_version(&caller.org_id, &template_id, version)
            .await
            .or_not_found("template version")?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// Render for this member (their name, e-mail and attributes).
    #[serde(default)]
    member_id: Option<Name>,
    /// Extra variables, as a campaign's audience or steps would give them.
    #[serde(default)]
    variables: Variables,
    #[serde(default)]
    campaign_title: Option<Name>,
}

/// POST /v1/templates/{id}/versions/{version}/preview: the version rendered for one member;
/// `unresolved` lists the variables that would have no value.
pub async fn preview(
    State(state): State<AppState>,
    caller: Caller,
    Path((template_id, version)): Path<(String, i64)>,
    Body(request): Body<PreviewRequest>,
) -> Result<Json<Value>, ApiError> {
    let version = state
        .store
        .get_template_version(&caller.org_id, &template_id, version)
        .await
        .or_not_found("template version")?;
    let member = match &request.member_id {
        Some(id) => match state.store.get_member(&caller.org_id, id.as_str()).await {
            Err(StoreError::NotFound) => {
                return Err(ApiError::invalid("/member_id", "no member has this id"));
            }
            other => Some(other?),
        },
        None => None,
    };
    let mut own: BTreeMap<String, String> = member
        .as_ref()
        .map(|m| m.attributes.clone())
        .unwrap_or_default();
    own.extend(request.variables.0);
    let (name, email) = member
        .as_ref()
        .map_or(("", ""), |m| (m.display_name.as_str(), m.email.as_str()));
    let campaign_title = request
        .campaign_title
        .as_ref()
        .map_or(version.title.as_str(), Text::as_str);
    let unresolved: Vec<&String> = version
        .variables
        .iter()
        .filter(|v| {
            !own.contains_key(*v)
                && match v.as_str() {
                    "name" | "email" => member.is_none(),
                    "title" => false,
                    _ => true,
                }
        })
        .collect();
    let rendered = message::render(
        &version.title,
        &version.body,
        campaign_title,
        &BTreeMap::new(),
        &Reader {
            name,
            email,
            variables: &own,
        },
    )
    .map_err(message::too_large)?;
    Ok(Json(json!({
        "template_id": version.template_id,
        "version": version.version,
        "rendered": rendered,
        "unresolved": unresolved,
    })))
}
