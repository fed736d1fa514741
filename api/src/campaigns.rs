//! Campaigns: create a draft, start, cancel, read with counts, list deliveries and activity.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use pidgr_store::{
    ActivityKind, Campaign, CampaignStatus, DeliveryCounts, NewActivity, NewCampaign, Recipient,
    StoreError,
};
use pidgr_workflows::contract::CampaignRef;
use pidgr_workflows::definition::{Definition, Problem, StepKind, parse_value};
use pidgr_workflows::{CampaignInput, CampaignWorkflow, search_attributes, template, workflow_id};
use serde::Deserialize;
use serde_json::{Value, json};
use temporalio_client::errors::WorkflowInteractionError;
use temporalio_client::{
    WorkflowCancelOptions, WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowStartOptions,
};
use temporalio_common::search_attributes::SearchAttributes;

use crate::{ApiError, AppState, Caller, Page, parse_body};

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_BODY_BYTES: usize = 64 * 1024;
pub const MAX_RECIPIENTS: usize = 100_000;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/campaigns", post(create))
        .route("/campaigns/{id}", get(read))
        .route("/campaigns/{id}/start", post(start))
        .route("/campaigns/{id}/cancel", post(cancel))
        .route("/campaigns/{id}/deliveries", get(deliveries))
        .route("/campaigns/{id}/activity", get(activity))
}

#[derive(Debug, Deserialize)]
struct CreateCampaign {
    #[serde(default)]
    name: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    recipients: Vec<Recipient>,
    #[serde(default)]
    definition: Value,
}

/// POST /v1/campaigns: validates everything, reports every problem at once, and writes nothing
/// unless all is well. An `Idempotency-Key` header makes a retried create return the first one.
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: CreateCampaign = parse_body(&body)?;
    let mut problems = Vec::new();
    let mut problem = |pointer: &str, message: String| {
        problems.push(Problem {
            pointer: pointer.to_owned(),
            message,
        })
    };
    for (pointer, value, what) in [
        ("/name", &request.name, "name"),
        ("/title", &request.title, "title"),
    ] {
        if value.trim().is_empty() {
            problem(pointer, format!("the campaign needs a {what}"));
        } else if value.chars().count() > MAX_NAME_CHARS {
            problem(
                pointer,
                format!("the {what} can be at most {MAX_NAME_CHARS} characters long"),
            );
        }
    }
    if request.body.trim().is_empty() {
        problem("/body", "the campaign needs a body".into());
    } else if request.body.len() > MAX_BODY_BYTES {
        problem(
            "/body",
            format!("the body can be at most {MAX_BODY_BYTES} bytes long"),
        );
    }
    if request.recipients.is_empty() {
        problem(
            "/recipients",
            "the campaign needs at least one recipient".into(),
        );
    } else if request.recipients.len() > MAX_RECIPIENTS {
        problem(
            "/recipients",
            format!("a campaign can have at most {MAX_RECIPIENTS} recipients"),
        );
    }
    let mut seen = BTreeSet::new();
    for (i, recipient) in request.recipients.iter().enumerate() {
        if recipient.user_id.trim().is_empty() || recipient.user_id.len() > MAX_NAME_CHARS {
            problem(
                &format!("/recipients/{i}/user_id"),
                format!("a user id must be 1 to {MAX_NAME_CHARS} characters"),
            );
        } else if !seen.insert(recipient.user_id.as_str()) {
            problem(
                &format!("/recipients/{i}/user_id"),
                format!("the user {:?} is listed twice", recipient.user_id),
            );
        }
    }
    let validated = if request.definition.is_null() {
        problem(
            "/definition",
            "the campaign needs a workflow definition".into(),
        );
        None
    } else {
        match parse_value(&request.definition, &state.settings.url_policy) {
            Ok(validated) => Some(validated),
            Err(found) => {
                problems.extend(found.into_iter().map(|p| Problem {
                    pointer: format!("/definition{}", p.pointer),
                    message: p.message,
                }));
                None
            }
        }
    };
    if let Some(validated) = &validated {
        problems.extend(unresolvable_variables(&request, &validated.definition));
    }
    let Some(validated) = validated.filter(|_| problems.is_empty()) else {
        return Err(ApiError::Invalid(problems));
    };
    let idempotency_key = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::BadRequest("the Idempotency-Key header must be text".into()))
        })
        .transpose()?;
    let (campaign, created) = state
        .store
        .create_campaign(NewCampaign {
            org_id: caller.org_id.clone(),
            name: request.name,
            title: request.title,
            body: request.body,
            audience: request.recipients,
            definition: validated.definition.to_json(),
            idempotency_key,
        })
        .await?;
    let mut view = campaign_view(&campaign, DeliveryCounts::default());
    view["warnings"] = json!(validated.warnings);
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(view),
    ))
}

/// Every `{{variable}}` in the title or body must have a value for every recipient: a built-in,
/// the recipient's own variable, or a variable that every notifying step defines.
fn unresolvable_variables(request: &CreateCampaign, definition: &Definition) -> Vec<Problem> {
    let notify_steps: Vec<&BTreeMap<String, String>> = definition
        .steps
        .iter()
        .filter_map(|s| match &s.kind {
            StepKind::SendNotification(c) | StepKind::SendReminder(c) => Some(&c.variables),
            _ => None,
        })
        .collect();
    let mut problems = Vec::new();
    for (pointer, text) in [("/title", &request.title), ("/body", &request.body)] {
        for name in template::placeholders(text) {
            if template::BUILT_INS.contains(&name.as_str())
                || (!notify_steps.is_empty() && notify_steps.iter().all(|v| v.contains_key(&name)))
            {
                continue;
            }
            let lacking = request
                .recipients
                .iter()
                .filter(|r| !r.variables.contains_key(&name))
                .count();
            if lacking > 0 {
                problems.push(Problem {
                    pointer: pointer.to_owned(),
                    message: format!(
                        "the variable {{{{{name}}}}} has no value for {lacking} of {} recipients; give it to each recipient or in every notification step's variables",
                        request.recipients.len()
                    ),
                });
            }
        }
    }
    problems
}

async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let campaign = state
        .store
        .get_campaign(&caller.org_id, &id)
        .await
        .map_err(not_found)?;
    let counts = state.store.delivery_counts(&caller.org_id, &id).await?;
    Ok(Json(campaign_view(&campaign, counts)))
}

/// POST /v1/campaigns/{id}/start: deliveries are written (once), then the workflow is started
/// with id `campaign-<id>`; a repeated or retried start reuses the running workflow.
async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let workflow_id = workflow_id(&id);
    let outcome = state
        .store
        .start_campaign(&caller.org_id, &id, &workflow_id)
        .await
        .map_err(not_found)?;
    let campaign = outcome.campaign;
    let definition: Definition = serde_json::from_str(&campaign.definition).map_err(|e| {
        ApiError::Internal(format!(
            "stored definition of campaign {id} does not parse: {e}"
        ))
    })?;
    let input = CampaignInput {
        campaign: CampaignRef {
            org_id: campaign.org_id.clone(),
            campaign_id: campaign.id.clone(),
        },
        name: campaign.name.clone(),
        definition,
        settings: state.settings.engine.clone(),
        resume: None,
    };
    let attributes = SearchAttributes::new([
        search_attributes::CAMPAIGN_ID.value_set(campaign.id.clone()),
        search_attributes::ORGANISATION_ID.value_set(campaign.org_id.clone()),
        search_attributes::STATUS.value_set("ACTIVE".into()),
    ]);
    let options = WorkflowStartOptions::new(state.settings.task_queue.clone(), workflow_id)
        .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
        .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicateFailedOnly)
        .search_attributes(attributes)
        .static_summary(campaign.name.clone())
        .build();
    if let Err(error) = state
        .temporal
        .start_workflow(CampaignWorkflow::run, input, options)
        .await
    {
        // The campaign is ACTIVE with its deliveries; repeating the start request finishes the job.
        return Err(ApiError::Unavailable(format!(
            "could not start the campaign's workflow ({error}); retry the start"
        )));
    }
    let counts = state.store.delivery_counts(&caller.org_id, &id).await?;
    let status = if outcome.newly_started {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(campaign_view(&campaign, counts))))
}

/// POST /v1/campaigns/{id}/cancel: CANCELLED in the database first (so ACKs are refused from
/// now on), then the workflow is cancelled, which stops its timers and activities.
async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let before = state
        .store
        .get_campaign(&caller.org_id, &id)
        .await
        .map_err(not_found)?;
    let campaign = state.store.cancel_campaign(&caller.org_id, &id).await?;
    if before.status != CampaignStatus::Cancelled {
        state
            .store
            .append_activity(NewActivity {
                org_id: &caller.org_id,
                campaign_id: &id,
                step_id: None,
                kind: ActivityKind::CampaignCancelled,
                message: "campaign cancelled through the API".into(),
                details: json!({ "was": before.status }),
            })
            .await?;
    }
    if let Some(workflow_id) = &campaign.workflow_id {
        let handle = state
            .temporal
            .get_workflow_handle::<CampaignWorkflow>(workflow_id.clone());
        let options = WorkflowCancelOptions::builder()
            .reason("cancelled through the API")
            .build();
        match handle.cancel(options).await {
            Ok(()) | Err(WorkflowInteractionError::NotFound(_)) => {}
            Err(error) => {
                return Err(ApiError::Unavailable(format!(
                    "the campaign is cancelled, but its workflow could not be told ({error}); retry the cancel"
                )));
            }
        }
    }
    let counts = state.store.delivery_counts(&caller.org_id, &id).await?;
    Ok(Json(campaign_view(&campaign, counts)))
}

async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    state
        .store
        .get_campaign(&caller.org_id, &id)
        .await
        .map_err(not_found)?;
    let rows = state
        .store
        .list_deliveries(&caller.org_id, &id, page.after, page.limit())
        .await?;
    Ok(page.respond(rows))
}

async fn activity(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    state
        .store
        .get_campaign(&caller.org_id, &id)
        .await
        .map_err(not_found)?;
    let entries = state
        .store
        .list_activity(&caller.org_id, &id, page.after, page.limit())
        .await?;
    Ok(page.respond(entries.into_iter().map(|e| (e.id, e)).collect()))
}

fn not_found(error: StoreError) -> ApiError {
    match error {
        StoreError::NotFound => ApiError::NotFound("campaign"),
        other => other.into(),
    }
}

fn campaign_view(campaign: &Campaign, counts: DeliveryCounts) -> Value {
    json!({
        "id": campaign.id,
        "name": campaign.name,
        "title": campaign.title,
        "status": campaign.status,
        "workflow_id": campaign.workflow_id,
        "current_step": if campaign.status == CampaignStatus::Active { campaign.current_step.clone() } else { None },
        "created_at": campaign.created_at,
        "started_at": campaign.started_at,
        "finished_at": campaign.finished_at,
        "counts": counts,
        "total": counts.total(),
    })
}
