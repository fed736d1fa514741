//! Stored workflow definitions: reusable, validated, append-only versions. A campaign copies
//! the exact definition it runs, so a later version never changes a running campaign.
//!
//! CALL_WEBHOOK header values are secrets: the store seals them, and every answer that shows a
//! definition shows header names with [`MASKED_HEADER_VALUE`] in place of each value.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use pidgr_store::{DefinitionVersion, mask_webhook_headers};
use pidgr_workflows::definition::{Problem, Validated, parse_value};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::OrNotFound;
use crate::input::{Body, Name, Page};
use crate::{ApiError, AppState, Caller};

/// What answers show in place of each CALL_WEBHOOK header value.
pub const MASKED_HEADER_VALUE: &str = "••••••";

/// Validates a definition given at `pointer` of a request: every problem, each pointing into
/// the request body.
pub(crate) fn validate_at(
    state: &AppState,
    pointer: &str,
    definition: &Value,
) -> Result<Validated, Vec<Problem>> {
    let masked = masked_values_sent_back(definition);
    match parse_value(definition, &state.settings.url_policy) {
        Ok(validated) if masked.is_empty() => Ok(validated),
        Ok(_) => Err(masked),
        Err(problems) => Err(problems.into_iter().chain(masked).collect()),
    }
    .map_err(|problems| {
        problems
            .into_iter()
            .map(|p| Problem {
                pointer: format!("{pointer}{}", p.pointer),
                message: p.message,
            })
            .collect()
    })
}

/// A header value sent back as the mask an answer showed. It is refused rather than taken to
/// mean "keep the stored value": keeping it would let anyone who may edit a definition send
/// a secret they never saw to an address of their choosing.
fn masked_values_sent_back(definition: &Value) -> Vec<Problem> {
    let Some(steps) = definition.get("steps").and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    for (index, step) in steps.iter().enumerate() {
        let Some(headers) = step.pointer("/config/headers").and_then(Value::as_object) else {
            continue;
        };
        for (name, value) in headers {
            if value.as_str() == Some(MASKED_HEADER_VALUE) {
                problems.push(Problem {
                    pointer: format!(
                        "/steps/{index}/config/headers/{}",
                        name.replace('~', "~0").replace('/', "~1")
                    ),
                    message: "header values are shown masked and are never kept from an \
                              earlier version: send the value itself"
                        .to_owned(),
                });
            }
        }
    }
    problems
}

/// A definition as answers show it: header values masked.
pub(crate) fn masked(mut definition: Value) -> Value {
    mask_webhook_headers(&mut definition, MASKED_HEADER_VALUE);
    definition
}

fn masked_version(mut version: DefinitionVersion) -> DefinitionVersion {
    version.definition = masked(version.definition);
    version
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
    body["latest"] = json!(masked_version(version));
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
            "definition": serde_json::from_str::<Value>(&validated.definition.to_json())
                .ok()
                .map(masked),
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
    body["latest"] = json!(masked_version(latest));
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
    let versions: Vec<DefinitionVersion> = versions.into_iter().map(masked_version).collect();
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
    Ok((StatusCode::CREATED, Json(masked_version(version))))
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
            .or_not_found("workflow definition version")
            .map(masked_version)?,
    ))
}
