//! Deliveries: READ and ACK from the mobile backend.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use pidgr_store::{ActionKind, CampaignStatus, StoreError};
use pidgr_workflows::contract::DeliveryCounts;
use pidgr_workflows::{CampaignWorkflow, workflow_id};
use serde::Deserialize;
use serde_json::{Value, json};
use temporalio_client::WorkflowSignalOptions;

use crate::{ApiError, AppState, Caller, parse_body};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/deliveries/{id}", get(read))
        .route(
            "/deliveries/{id}/read",
            post(|s, c, p, b| act(s, c, p, b, ActionKind::Read)),
        )
        .route(
            "/deliveries/{id}/ack",
            post(|s, c, p, b| act(s, c, p, b, ActionKind::Ack)),
        )
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionRequest {
    /// Where the action came from (`inbox`, `push`, ...), kept with the action.
    #[serde(default)]
    source: Option<String>,
}

async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let delivery = state
        .store
        .get_delivery(&caller.org_id, &id)
        .await
        .map_err(not_found)?;
    Ok(Json(json!(delivery)))
}

/// Records the action in the database (idempotent; refused after MISSED or on a cancelled
/// campaign), then signals the workflow with fresh counts. Signals are coalesced: at most one
/// per campaign per `signal_interval`, except that the action that leaves nothing unresolved
/// always signals, so a wait ends at once. A lost signal delays nothing else: waits re-count.
async fn act(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
    kind: ActionKind,
) -> Result<Json<Value>, ApiError> {
    let request: ActionRequest = parse_body(&body)?;
    let source = request.source.as_deref().unwrap_or("api");
    if source.len() > 64 {
        return Err(ApiError::BadRequest(
            "source can be at most 64 characters".into(),
        ));
    }
    let outcome = state
        .store
        .record_action(&caller.org_id, &id, kind, source)
        .await
        .map_err(not_found)?;
    let delivery = outcome.delivery;
    if outcome.changed {
        // Best effort: the action is recorded, and the workflow re-counts at its deadline.
        if let Err(error) = signal_progress(&state, &caller.org_id, &delivery.campaign_id).await {
            tracing::warn!(campaign_id = %delivery.campaign_id, %error, "could not signal the campaign workflow");
        }
    }
    Ok(Json(json!(delivery)))
}

/// Signals the campaign's workflow with fresh counts: at most once per `signal_interval`, but
/// always when nothing is left unresolved, so a wait ends at once.
async fn signal_progress(state: &AppState, org_id: &str, campaign_id: &str) -> Result<(), String> {
    let campaign = state
        .store
        .get_campaign(org_id, campaign_id)
        .await
        .map_err(|e| e.to_string())?;
    if campaign.status != CampaignStatus::Active {
        return Ok(());
    }
    let c = state
        .store
        .delivery_counts(org_id, campaign_id)
        .await
        .map_err(|e| e.to_string())?;
    let counts = DeliveryCounts {
        pending: c.pending,
        sent: c.sent,
        read: c.read,
        acknowledged: c.acknowledged,
        missed: c.missed,
        failed: c.failed,
    };
    let interval = state.settings.signal_interval.as_millis() as i64;
    if counts.unresolved() > 0
        && !state
            .store
            .claim_signal_slot(campaign_id, interval)
            .await
            .map_err(|e| e.to_string())?
    {
        return Ok(());
    }
    state
        .temporal
        .get_workflow_handle::<CampaignWorkflow>(workflow_id(campaign_id))
        .signal(
            CampaignWorkflow::deliveries_changed,
            counts,
            WorkflowSignalOptions::default(),
        )
        .await
        .map_err(|e| e.to_string())
}

fn not_found(error: StoreError) -> ApiError {
    match error {
        StoreError::NotFound => ApiError::NotFound("delivery"),
        other => other.into(),
    }
}
