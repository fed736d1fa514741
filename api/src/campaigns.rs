//! Campaigns: a draft built from a pinned template version, an audience and a workflow
//! definition; preview, start (audience → deliveries, exactly once), cancel, read with counts,
//! deliveries and activity.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use pidgr_store::{
    ActivityKind, Audience, AudienceMember, Campaign, CampaignStatus, Delivery, DeliveryCounts,
    DeliveryStatus, NewActivity, NewCampaign, StoreError,
};
use pidgr_workflows::contract::CampaignRef;
use pidgr_workflows::definition::{Definition, Problem};
use pidgr_workflows::{CampaignInput, CampaignWorkflow, search_attributes, workflow_id};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use temporalio_client::errors::{WorkflowInteractionError, WorkflowStartError};
use temporalio_client::{
    WorkflowCancelOptions, WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowStartOptions,
};
use temporalio_common::search_attributes::SearchAttributes;
use tracing::Instrument;

use crate::error::OrNotFound;
use crate::input::{Body, Name, Page, Variables};
use crate::message::{self, Reader};
use crate::workflow_definitions::validate_at;
use crate::{ApiError, AppState, Caller};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignQuery {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    /// Only campaigns in this status (CREATED, ACTIVE, COMPLETED or CANCELLED).
    #[serde(default)]
    status: Option<String>,
    /// `oldest` (the default) or `newest` first.
    #[serde(default)]
    order: Option<String>,
}

/// GET /v1/campaigns: a page of campaigns by id (oldest first, or `?order=newest`), each with
/// its delivery `counts` and `total` (as `GET /v1/campaigns/{id}` shows them), counted for the
/// whole page in one query; `?status=` keeps one status.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<CampaignQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = Page {
        after: query.after,
        limit: query.limit,
    };
    let status = query
        .status
        .as_deref()
        .map(|status| {
            CampaignStatus::parse(status).map_err(|_| {
                ApiError::invalid(
                    "/status",
                    format!(
                        "the query parameter status must be one of CREATED, ACTIVE, COMPLETED, CANCELLED, not {status:?}"
                    ),
                )
            })
        })
        .transpose()?;
    let newest_first = match query.order.as_deref() {
        None | Some("oldest") => false,
        Some("newest") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "/order",
                format!("the query parameter order must be oldest or newest, not {other:?}"),
            ));
        }
    };
    let campaigns = state
        .store
        .list_campaigns_in(
            &caller.org_id,
            status,
            newest_first,
            page.after(),
            page.limit(),
        )
        .await?;
    let ids: Vec<&str> = campaigns.iter().map(|c| c.id.as_str()).collect();
    let mut counts = state.store.delivery_counts_of(&caller.org_id, &ids).await?;
    let views: Vec<Value> = campaigns
        .iter()
        .map(|c| campaign_view(c, Some(counts.remove(&c.id).unwrap_or_default())))
        .collect();
    Ok(page.respond(views, |v| v["id"].as_str().unwrap_or_default().to_owned()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AudienceInput {
    #[serde(default)]
    groups: Vec<Name>,
    #[serde(default)]
    teams: Vec<Name>,
    #[serde(default)]
    members: Vec<AudienceMemberInput>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AudienceMemberInput {
    member_id: Name,
    /// Per-recipient variables; they win over the member's attributes and step variables.
    #[serde(default)]
    variables: Variables,
}

impl From<AudienceInput> for Audience {
    fn from(input: AudienceInput) -> Self {
        Audience {
            groups: input.groups.into_iter().map(|n| n.0).collect(),
            teams: input.teams.into_iter().map(|n| n.0).collect(),
            members: input
                .members
                .into_iter()
                .map(|m| AudienceMember {
                    member_id: m.member_id.0,
                    variables: m.variables.0,
                })
                .collect(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCampaign {
    /// Internal name.
    name: Name,
    /// Shown to recipients; templates use it as `{{title}}`.
    title: Name,
    template_id: Name,
    /// The template version to pin; the latest when left out.
    #[serde(default)]
    template_version: Option<i64>,
    audience: AudienceInput,
    /// The workflow definition, inline...
    #[serde(default)]
    definition: Option<Value>,
    /// ...or a stored one (its latest version unless `definition_version` says).
    #[serde(default)]
    definition_id: Option<Name>,
    #[serde(default)]
    definition_version: Option<i64>,
}

/// POST /v1/campaigns: checks everything — template version, definition, audience, and that
/// every variable the message uses resolves for every recipient — reports every problem at
/// once, and writes nothing unless all is well.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<CreateCampaign>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let org = caller.org_id.as_str();
    let mut problems = Vec::new();
    let mut problem = |pointer: &str, message: String| {
        problems.push(Problem {
            pointer: pointer.to_owned(),
            message,
        })
    };

    let version = match state
        .store
        .get_template(org, request.template_id.as_str())
        .await
    {
        Err(StoreError::NotFound) => {
            problem("/template_id", "no template has this id".into());
            None
        }
        Err(other) => return Err(other.into()),
        Ok(template) => {
            let number = request.template_version.unwrap_or(template.latest_version);
            match state
                .store
                .get_template_version(org, &template.id, number)
                .await
            {
                Err(StoreError::NotFound) => {
                    problem(
                        "/template_version",
                        format!("the template has versions 1 to {}", template.latest_version),
                    );
                    None
                }
                other => Some(other?),
            }
        }
    };

    let mut definition_ref = None;
    let definition_json = match (&request.definition, &request.definition_id) {
        (Some(inline), None) => Some((inline.clone(), "/definition")),
        (None, Some(id)) => match state.store.get_definition(org, id.as_str()).await {
            Err(StoreError::NotFound) => {
                problem(
                    "/definition_id",
                    "no workflow definition has this id".into(),
                );
                None
            }
            Err(other) => return Err(other.into()),
            Ok(stored) => {
                let number = request.definition_version.unwrap_or(stored.latest_version);
                match state
                    .store
                    .get_definition_version(org, &stored.id, number)
                    .await
                {
                    Err(StoreError::NotFound) => {
                        problem(
                            "/definition_version",
                            format!(
                                "the workflow definition has versions 1 to {}",
                                stored.latest_version
                            ),
                        );
                        None
                    }
                    Err(other) => return Err(other.into()),
                    Ok(version) => {
                        definition_ref = Some((stored.id, version.version));
                        Some((version.definition, "/definition_id"))
                    }
                }
            }
        },
        (Some(_), Some(_)) => {
            problem(
                "/definition",
                "give either an inline definition or a definition_id, not both".into(),
            );
            None
        }
        (None, None) => {
            problem(
                "/definition",
                "the campaign needs a workflow definition (inline, or a definition_id)".into(),
            );
            None
        }
    };
    let validated = match definition_json {
        Some((json, pointer)) => match validate_at(&state, pointer, &json) {
            Ok(validated) => {
                // ESCALATE steps name a template of the organisation: it must exist.
                problems.extend(
                    crate::escalations::missing_templates(
                        &state,
                        org,
                        pointer,
                        &validated.definition,
                    )
                    .await?,
                );
                Some(validated)
            }
            Err(found) => {
                problems.extend(found);
                None
            }
        },
        None => None,
    };

    let audience: Audience = request.audience.into();
    // Counted, and checked a page at a time: an audience of a million never sits in memory.
    let reader = state.store.audience_reader(org, &audience).await?;
    problems.extend(reader.missing.iter().map(|missing| Problem {
        pointer: format!("/audience{}", missing.pointer),
        message: format!("no {} has the id {:?}", missing.what, missing.id),
    }));
    let recipients = state
        .store
        .count_audience(&reader, state.settings.max_recipients)
        .await?;
    if recipients == 0 && reader.missing.is_empty() {
        problems.push(Problem {
            pointer: "/audience".into(),
            message:
                "the audience has no members: name at least one group, team or member with members"
                    .into(),
        });
    } else if recipients > state.settings.max_recipients {
        problems.push(Problem {
            pointer: "/audience".into(),
            message: too_many(state.settings.max_recipients),
        });
    } else if let (Some(version), Some(validated)) = (&version, &validated) {
        let mut lacking: BTreeMap<String, usize> = BTreeMap::new();
        let mut after = String::new();
        loop {
            let page = state
                .store
                .audience_page(&reader, &after, AUDIENCE_CHECK_PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.member_id.clone().unwrap_or_default();
            for (name, count) in
                message::unresolvable(&version.title, &version.body, &validated.definition, &page)
            {
                *lacking.entry(name).or_default() += count;
            }
        }
        for (name, count) in lacking {
            problems.push(Problem {
                pointer: "/audience".into(),
                message: message::unresolvable_message(&name, count, recipients as usize),
            });
        }
    }
    let (Some(version), Some(validated)) = (version, validated) else {
        return Err(ApiError::Invalid(problems));
    };
    if !problems.is_empty() {
        return Err(ApiError::Invalid(problems));
    }
    let campaign = state
        .store
        .create_campaign(NewCampaign {
            org_id: caller.org_id.clone(),
            name: request.name.0,
            title: request.title.0,
            template_id: version.template_id.clone(),
            template_version: version.version,
            message_title: version.title,
            body: version.body,
            audience: json!(audience),
            definition: validated.definition.to_json(),
            definition_ref,
        })
        .await?;
    let mut view = campaign_view(&campaign, Some(DeliveryCounts::default()));
    view["recipients"] = json!(recipients);
    view["warnings"] = json!(validated.warnings);
    Ok((StatusCode::CREATED, Json(view)))
}

/// How many recipients the campaign's audience has now, or why it cannot be used any more
/// (409). One count, whatever the audience's size: the workflow writes the deliveries.
async fn count_for_start(state: &AppState, campaign: &Campaign) -> Result<u64, ApiError> {
    let reader = state
        .store
        .audience_reader(&campaign.org_id, &stored_audience(campaign)?)
        .await?;
    if let Some(missing) = reader.missing.first() {
        return Err(ApiError::Conflict(format!(
            "the audience names the {} {:?}, which no longer exists; create a new campaign",
            missing.what, missing.id
        )));
    }
    // Checked again here: a group may have grown since the campaign was created.
    let count = state
        .store
        .count_audience(&reader, state.settings.max_recipients)
        .await?;
    if count == 0 {
        return Err(ApiError::Conflict(
            "the audience has no members any more".into(),
        ));
    }
    if count > state.settings.max_recipients {
        return Err(ApiError::Conflict(too_many(state.settings.max_recipients)));
    }
    Ok(count)
}

/// Recipients read per page while checking a new campaign's variables.
const AUDIENCE_CHECK_PAGE: usize = 5_000;

fn too_many(max: u64) -> String {
    format!("the audience has more than {max} members, the most a campaign can have")
}

fn stored_audience(campaign: &Campaign) -> Result<Audience, ApiError> {
    serde_json::from_value(campaign.audience.clone()).map_err(|e| {
        ApiError::Internal(format!("stored audience of campaign {}: {e}", campaign.id))
    })
}

fn stored_definition(campaign: &Campaign) -> Result<Definition, ApiError> {
    serde_json::from_str(&campaign.definition).map_err(|e| {
        ApiError::Internal(format!(
            "stored definition of campaign {} does not parse: {e}",
            campaign.id
        ))
    })
}

/// GET /v1/campaigns/{id}/preview: how many recipients the campaign reaches (each member
/// once) and the message as the first of them will see it.
pub async fn preview(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let campaign = campaign_of(&state, &caller, &id).await?;
    let definition = stored_definition(&campaign)?;
    let step_variables = message::notification_variables(&definition);
    let render = |reader: &Reader| {
        message::render(
            &campaign.message_title,
            &campaign.body,
            &campaign.title,
            &step_variables,
            reader,
        )
        .map_err(message::too_large)
    };
    let (recipients, sample) = if campaign.status == CampaignStatus::Created {
        let reader = state
            .store
            .audience_reader(&campaign.org_id, &stored_audience(&campaign)?)
            .await?;
        let first = state.store.audience_page(&reader, "", 1).await?;
        let sample = first
            .first()
            .map(|r| -> Result<Value, ApiError> {
                Ok(json!({ "member_id": r.member_id, "user_id": r.user_id, "message": render(&Reader::of_recipient(r))? }))
            })
            .transpose()?;
        let recipients = state
            .store
            .count_audience(&reader, state.settings.max_recipients)
            .await?;
        (recipients, sample)
    } else {
        let counts = state.store.delivery_counts(&caller.org_id, &id).await?;
        let first = state
            .store
            .list_deliveries(&caller.org_id, &id, 0, 1)
            .await?;
        let sample = first
            .first()
            .map(|(_, d)| -> Result<Value, ApiError> {
                Ok(json!({ "member_id": d.member_id, "user_id": d.user_id, "message": render(&Reader::of_delivery(d))? }))
            })
            .transpose()?;
        (counts.total(), sample)
    };
    Ok(Json(json!({ "recipients": recipients, "sample": sample })))
}

pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let campaign = campaign_of(&state, &caller, &id).await?;
    let counts = state.store.delivery_counts(&caller.org_id, &id).await?;
    let mut view = campaign_view(&campaign, Some(counts));
    // The definition it runs (header values masked), stored or inline alike.
    let definition = serde_json::from_str(&campaign.definition)
        .map_err(|e| ApiError::Internal(format!("a stored definition is not JSON: {e}")))?;
    view["definition"] = crate::workflow_definitions::masked(definition);
    Ok(Json(view))
}

/// POST /v1/campaigns/{id}/start: the audience is counted and the campaign made ACTIVE, then
/// the workflow is started with id `campaign-<id>` and writes the deliveries itself, so the
/// request answers at once whatever the audience's size. A repeated or retried start reuses
/// the running workflow.
pub async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let workflow_id = workflow_id(&id);
    let draft = campaign_of(&state, &caller, &id).await?;
    // Only a draft's audience is counted; a started campaign keeps the count it started with.
    let recipients = match draft.status {
        CampaignStatus::Created => count_for_start(&state, &draft).await?,
        _ => 0,
    };
    let outcome = state
        .store
        .activate_campaign(&caller.org_id, &id, &workflow_id, recipients)
        .await
        .or_not_found("campaign")?;
    let campaign = outcome.campaign;
    if outcome.newly_started {
        // Written once, by the request that made the campaign ACTIVE (a repeated start finds
        // it started), and before the workflow writes anything.
        let by = started_by(&state, &caller).await;
        state
            .store
            .append_activity(NewActivity {
                org_id: &caller.org_id,
                campaign_id: &id,
                step_id: None,
                kind: ActivityKind::CampaignStarted,
                message: format!(
                    "campaign started by {}: {}",
                    by.0,
                    pidgr_store::counted(recipients, "recipient", "recipients")
                ),
                details: json!({ "key_id": caller.key_id, "key_name": by.1, "recipients": recipients }),
            })
            .await?;
    }
    let started = start_workflow(
        &state,
        &campaign,
        WorkflowIdConflictPolicy::UseExisting,
        WorkflowIdReusePolicy::AllowDuplicateFailedOnly,
    )
    .await;
    if let Err(error) = started {
        // The campaign is ACTIVE; repeating the start request finishes the job, and so does the
        // reconciler if nobody does.
        tracing::warn!(campaign = %campaign.id, %error, "could not start a campaign's workflow");
        return Err(ApiError::Unavailable(
            "could not start the campaign's workflow; retry the start".into(),
        ));
    }
    state
        .store
        .mark_workflow_started(&campaign.org_id, &campaign.id)
        .await?;
    let counts = state.store.delivery_counts(&caller.org_id, &id).await?;
    let status = if outcome.newly_started {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(campaign_view(&campaign, Some(counts)))))
}

/// Starts the workflow of an ACTIVE campaign, with id `campaign-<id>`: for the start request
/// (which reuses a running one) and for the reconciler (which must not restart a closed one).
pub(crate) async fn start_workflow(
    state: &AppState,
    campaign: &Campaign,
    on_conflict: WorkflowIdConflictPolicy,
    on_reuse: WorkflowIdReusePolicy,
) -> Result<(), StartWorkflowError> {
    let definition = stored_definition(campaign).map_err(|_| StartWorkflowError::Corrupt)?;
    // The start is a span of its own (inside the request's, when a request starts it), and the
    // activities' spans are its children: the workflow hands them its trace context.
    let span = tracing::info_span!("start workflow", workflow_id = %workflow_id(&campaign.id));
    let input = CampaignInput {
        campaign: CampaignRef {
            org_id: campaign.org_id.clone(),
            campaign_id: campaign.id.clone(),
            trace_parent: crate::observe::traceparent(&span),
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
        search_attributes::NAME.value_set(campaign.name.clone()),
    ]);
    let options =
        WorkflowStartOptions::new(state.settings.task_queue.clone(), workflow_id(&campaign.id))
            .id_conflict_policy(on_conflict)
            .id_reuse_policy(on_reuse)
            .search_attributes(attributes)
            .static_summary(campaign.name.clone())
            .build();
    match state
        .temporal
        .start_workflow(CampaignWorkflow::run, input, options)
        .instrument(span)
        .await
    {
        Ok(_) => Ok(()),
        Err(WorkflowStartError::AlreadyStarted { .. }) => Err(StartWorkflowError::Exists),
        Err(error) => Err(StartWorkflowError::Temporal(error.to_string())),
    }
}

/// Who the caller is, as the activity log names them: `API key "ops" (<id>)`, and the key's
/// name. The name is a courtesy: a lookup that fails leaves the id alone.
async fn started_by(state: &AppState, caller: &Caller) -> (String, Option<String>) {
    match state
        .store
        .get_api_key(&caller.org_id, &caller.key_id)
        .await
    {
        Ok(key) => (
            format!("API key {:?} ({})", key.name, key.id),
            Some(key.name),
        ),
        Err(_) => (format!("API key {}", caller.key_id), None),
    }
}

/// Why [`start_workflow`] started nothing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartWorkflowError {
    #[error("the campaign's workflow exists already (running or closed)")]
    Exists,
    #[error("the campaign's stored definition does not parse")]
    Corrupt,
    #[error("Temporal refused the start: {0}")]
    Temporal(String),
}

/// POST /v1/campaigns/{id}/cancel: CANCELLED in the database first (so ACKs are refused from
/// now on), then the workflow is cancelled, which stops its timers and activities.
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let before = campaign_of(&state, &caller, &id).await?;
    let campaign = state.store.cancel_campaign(&caller.org_id, &id).await?;
    if before.status != CampaignStatus::Cancelled {
        state
            .store
            .append_activity(NewActivity {
                org_id: &caller.org_id,
                campaign_id: &id,
                step_id: None,
                kind: ActivityKind::CampaignCancelled,
                message: format!(
                    "campaign cancelled through the API by {}",
                    started_by(&state, &caller).await.0
                ),
                details: json!({ "was": before.status, "key_id": caller.key_id }),
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
    Ok(Json(campaign_view(&campaign, Some(counts))))
}

/// The caller's campaign `id`, or a 404.
async fn campaign_of(state: &AppState, caller: &Caller, id: &str) -> Result<Campaign, ApiError> {
    state
        .store
        .get_campaign(&caller.org_id, id)
        .await
        .or_not_found("campaign")
}

/// A delivery with its position in the audience (the list's cursor).
#[derive(Serialize)]
struct Positioned {
    position: i64,
    #[serde(flatten)]
    delivery: Delivery,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    /// Only deliveries in these statuses, comma-separated (`PENDING,SENT,READ`: everyone who
    /// has not acknowledged yet).
    #[serde(default)]
    status: Option<String>,
}

/// The statuses `?status=` names; every one named must be a delivery status.
fn delivery_statuses(list: Option<&str>) -> Result<Vec<DeliveryStatus>, ApiError> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    list.split(',')
        .map(str::trim)
        .map(|name| {
            DeliveryStatus::ALL
                .into_iter()
                .find(|status| status.as_str() == name)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "/status",
                        format!(
                            "the query parameter status is a comma-separated list of PENDING, SENT, READ, ACKNOWLEDGED, MISSED, FAILED; {name:?} is none of them"
                        ),
                    )
                })
        })
        .collect()
}

/// GET /v1/campaigns/{id}/deliveries: the campaign's deliveries in audience order, each with
/// its `position` (the cursor), optionally only those in the statuses `?status=` names.
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<DeliveryQuery>,
) -> Result<Json<Value>, ApiError> {
    let statuses = delivery_statuses(query.status.as_deref())?;
    let page = Page {
        after: query.after,
        limit: query.limit,
    };
    campaign_of(&state, &caller, &id).await?;
    let rows = state
        .store
        .list_deliveries_in(
            &caller.org_id,
            &id,
            &statuses,
            page.after_number()?,
            page.limit(),
        )
        .await?;
    let items = rows
        .into_iter()
        .map(|(position, delivery)| Positioned { position, delivery })
        .collect();
    Ok(page.respond(items, |p| p.position.to_string()))
}

pub async fn activity(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    campaign_of(&state, &caller, &id).await?;
    let entries = state
        .store
        .list_activity(&caller.org_id, &id, page.after_number()?, page.limit())
        .await?;
    Ok(page.respond(entries, |e| e.id.to_string()))
}

/// A campaign as the API shows it; `counts` when the caller looked them up.
fn campaign_view(campaign: &Campaign, counts: Option<DeliveryCounts>) -> Value {
    let mut view = json!({
        "id": campaign.id,
        "name": campaign.name,
        "title": campaign.title,
        "status": campaign.status,
        "template_id": campaign.template_id,
        "template_version": campaign.template_version,
        "definition_id": campaign.definition_id,
        "definition_version": campaign.definition_version,
        "audience": campaign.audience,
        "workflow_id": campaign.workflow_id,
        "current_step": if campaign.status == CampaignStatus::Active { campaign.current_step.clone() } else { None },
        "created_at": campaign.created_at,
        "started_at": campaign.started_at,
        "finished_at": campaign.finished_at,
        "recipients": campaign.recipient_count,
    });
    if let Some(counts) = counts {
        view["counts"] = json!(counts);
        view["total"] = json!(counts.total());
    }
    view
}
