//! Stored workflow definitions: reusable, validated, append-only versions. A campaign copies
//! the exact definition it runs, so a later version never changes a running campaign.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use pidgr_store::DefinitionVersion;
use pidgr_workflows::definition::{Problem, Validated, parse_value};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::OrNotFound;
use crate::input::{Body, Name, Page};
use crate::{ApiError, AppState, Caller};

/// Validates a definition given at `pointer` of a request: every problem, each pointing into
/// the request body.
pub(crate) fn validate_at(
    state: &AppState,
    pointer: &str,
    definition: &Value,
) -> Result<Validated, Vec<Problem>> {
    parse_value(definition, &state.settings.url_policy).map_err(|problems| {
        problems
            .into_iter()
            .map(|p| Problem {
                pointer: format!("{pointer}{}", p.pointer),
                message: p.message,
            })
            .collect()
    })
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let definitions = state
        .store
        .list_definitions(&caller.org_id, page.after(), page.limit())
        .await?;
    Ok(page.respond(definitions, |d| d.id.clone()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDefinition {
    name: Name,
    definition: Value,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(new): Body<NewDefinition>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let validated =
        validate_at(&state, "/definition", &new.definition).map_err(ApiError::Invalid)?;
    let (stored, version) = state
        .store
        .create_definition(
            &caller.org_id,
            new.name.as_str(),
            &validated.definition.to_json(),
        )
        .await?;
    let mut body = json!(stored);
    body["latest"] = json!(version);
    body["warnings"] = json!(validated.warnings);
    Ok((StatusCode::CREATED, Json(body)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionOnly {
    definition: Value,
}

/// POST /v1/workflow-definitions/validate: checks a definition without storing it. Always 200
/// for a well-formed request: `valid`, every problem and every warning.
pub async fn validate(
    State(state): State<AppState>,
    Body(request): Body<DefinitionOnly>,
) -> Json<Value> {
    Json(match validate_at(&state, "", &request.definition) {
        Ok(validated) => json!({
            "valid": true,
            "problems": [],
            "warnings": validated.warnings,
            "definition": serde_json::from_str::<Value>(&validated.definition.to_json()).ok(),
        }),
        Err(problems) => json!({ "valid": false, "problems": problems, "warnings": [] }),
    })
}

pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(definition_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let stored = state
        .store
        .get_definition(&caller.org_id, &definition_id)
        .await
        .or_not_found("workflow definition")?;
    let latest = state
        .store
        .get_definition_version(&caller.org_id, &definition_id, stored.latest_version)
        .await?;
    let mut body = json!(stored);
    body["latest"] = json!(latest);
    Ok(Json(body))
}

pub async fn list_versions(
    State(state): State<AppState>,
    caller: Caller,
    Path(definition_id): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let versions = state
        .store
        .list_definition_versions(
            &caller.org_id,
            &definition_id,
            page.after_number()?,
            page.limit(),
        )
        .await
        .or_not_found("workflow definition")?;
    Ok(page.respond(versions, |v| v.version.to_string()))
}

pub async fn append_version(
    State(state): State<AppState>,
    caller: Caller,
    Path(definition_id): Path<String>,
    Body(request): Body<DefinitionOnly>,
) -> Result<(StatusCode, Json<DefinitionVersion>), ApiError> {
    let validated =
        validate_at(&state, "/definition", &request.definition).map_err(ApiError::Invalid)?;
    let version = state
        .store
        .append_definition_version(
            &caller.org_id,
            &definition_id,
            &validated.definition.to_json(),
        )
        .await
        .or_not_found("workflow definition")?;
    Ok((StatusCode::CREATED, Json(version)))
}

pub async fn read_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((definition_id, version)): Path<(String, i64)>,
) -> Result<Json<DefinitionVersion>, ApiError> {
    Ok(Json(
        state
            .store
            .get_definition_version(&caller.org_id, &definition_id, version)
            .await
            .or_not_found("workflow definition version")?,
    ))
}
