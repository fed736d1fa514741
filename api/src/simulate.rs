//! POST /v1/workflow-definitions/simulate: a dry run of a definition on a simulated clock,
//! for an audience (a size, or recipients with their managers) and a scenario of reads and
//! acknowledgements. Nothing is stored, sent or started; the answer is the timeline the
//! campaign workflow's own interpreter produces.

use axum::Json;
use axum::extract::State;
use pidgr_workflows::simulate::{SimulationRequest, Timeline, simulate};

use crate::input::Body;
use crate::workflow_definitions::validate_at;
use crate::{ApiError, AppState};

pub async fn run(
    State(state): State<AppState>,
    Body(request): Body<SimulationRequest>,
) -> Result<Json<Timeline>, ApiError> {
    let validated =
        validate_at(&state, "/definition", &request.definition).map_err(ApiError::Invalid)?;
    simulate(&validated.definition, &request.audience, &request.scenario)
        .map(Json)
        .map_err(ApiError::Invalid)
}
