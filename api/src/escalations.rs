//! ESCALATE steps on the API's side: a campaign's creation checks the templates its escalations
//! name, and a manager's link (`GET /v1/escalations/{code}`, resolved by the mobile backend with
//! its key, like `/c/{code}`) lists the reports the escalation named whose delivery is still
//! not acknowledged.

use axum::Json;
use axum::extract::{Path, State};
use pidgr_store::StoreError;
use pidgr_workflows::definition::{Definition, Problem, StepKind};
use serde_json::{Value, json};

use crate::error::OrNotFound;
use crate::{ApiError, AppState, Caller};

/// A problem for each ESCALATE step whose template or template version the organisation does
/// not have, pointing into the step's config under `pointer` (where the definition came from).
pub(crate) async fn missing_templates(
    state: &AppState,
    org_id: &str,
    pointer: &str,
    definition: &Definition,
) -> Result<Vec<Problem>, ApiError> {
    let mut problems = Vec::new();
    for (index, step) in definition.steps.iter().enumerate() {
        let StepKind::Escalate(config) = &step.kind else {
            continue;
        };
        let at = format!("{pointer}/steps/{index}/config");
        let template = match state.store.get_template(org_id, &config.template_id).await {
            Ok(template) => template,
            Err(StoreError::NotFound) => {
                problems.push(Problem {
                    pointer: format!("{at}/template_id"),
                    message: "the organisation has no template with this id".into(),
                });
                continue;
            }
            Err(other) => return Err(other.into()),
        };
        match state
            .store
            .get_template_version(org_id, &template.id, config.template_version)
            .await
        {
            Ok(_) => {}
            Err(StoreError::NotFound) => problems.push(Problem {
                pointer: format!("{at}/template_version"),
                message: format!("the template has versions 1 to {}", template.latest_version),
            }),
            Err(other) => return Err(other.into()),
        }
    }
    Ok(problems)
}

/// GET /v1/escalations/{code}: the escalation, its campaign, and the reports it named whose
/// delivery is not acknowledged now (in audience order).
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let org = caller.org_id.as_str();
    let escalation = state
        .store
        .get_escalation_by_code(org, &code)
        .await
        .or_not_found("escalation")?;
    let campaign = state
        .store
        .get_campaign(org, &escalation.campaign_id)
        .await?;
    let reports = state
        .store
        .unacknowledged_reports(org, &escalation.id)
        .await?;
    Ok(Json(json!({
        "escalation": escalation,
        "campaign": {
            "id": campaign.id,
            "title": campaign.title,
            "status": campaign.status,
        },
        "unacknowledged": reports,
    })))
}
