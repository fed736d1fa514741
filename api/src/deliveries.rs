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
        let campaign = state
            .store
            .get_campaign(&caller.org_id, &delivery.campaign_id)
            .await?;
        if campaign.status == CampaignStatus::Active {
            let c = state
                .store
                .delivery_counts(&caller.org_id, &campaign.id)
                .await?;
            let counts = DeliveryCounts {
                pending: c.pending,
                sent: c.sent,
                read: c.read,
                acknowledged: c.acknowledged,
                missed: c.missed,
                failed: c.failed,
            };
            let interval = state.settings.signal_interval.as_millis() as i64;
            if counts.unresolved() == 0
                || state
                    .store
                    .claim_signal_slot(&campaign.id, interval)
                    .await?
            {
                let handle = state
                    .temporal
                    .get_workflow_handle::<CampaignWorkflow>(workflow_id(&campaign.id));
                if let Err(error) = handle
                    .signal(
                        CampaignWorkflow::deliveries_changed,
                        counts,
                        WorkflowSignalOptions::default(),
                    )
                    .await
                {
                    // The action is recorded; a lost signal only means the wait ends at its deadline.
                    tracing::warn!(campaign_id = %campaign.id, %error, "could not signal the campaign workflow");
                }
            }
        }
    }
    Ok(Json(json!(delivery)))
}

fn not_found(error: StoreError) -> ApiError {
    match error {
        StoreError::NotFound => ApiError::NotFound("delivery"),
        other => other.into(),
    }
}
