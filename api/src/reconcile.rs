//! The reconciler: starts the workflow of every ACTIVE campaign that has none.
//!
//! A start request commits ACTIVE in the database first and then starts the workflow; if the
//! workflow start fails (Temporal unreachable, the API process killed in between) and the
//! client never retries, the campaign would stay ACTIVE with nothing driving it. Every API
//! process runs this at boot and then periodically, over the ACTIVE campaigns whose workflow is
//! not yet known to exist (a successful start records it). Starting is idempotent across
//! processes: the workflow id is the campaign's, and a workflow that exists already — running,
//! or closed (completed, failed, terminated: an operator's decision stays visible) — is left
//! alone and recorded as existing, so it is never restarted, even after Temporal's retention
//! has forgotten it.

use std::time::Duration;

use chrono::Utc;
use pidgr_store::StoreError;
use temporalio_client::{WorkflowIdConflictPolicy, WorkflowIdReusePolicy};

use crate::AppState;
use crate::campaigns::{StartWorkflowError, start_workflow};

/// Campaigns checked per store query.
const PAGE: i64 = 200;

/// A campaign that turned ACTIVE this recently may still have its start request under way.
pub const START_GRACE: Duration = Duration::from_secs(30);

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// ACTIVE campaigns looked at.
    pub checked: u64,
    /// Workflows started because none existed.
    pub started: u64,
}

/// One pass over the ACTIVE campaigns that turned ACTIVE at least `grace` ago.
pub async fn start_missing_workflows(
    state: &AppState,
    grace: Duration,
) -> Result<Reconciled, StoreError> {
    let cutoff = Utc::now() - chrono::Duration::from_std(grace).unwrap_or_default();
    let mut done = Reconciled::default();
    let mut after = String::new();
    loop {
        let page = state
            .store
            .active_campaigns_without_workflow(cutoff, &after, PAGE)
            .await?;
        let Some(last) = page.last() else { break };
        after = last.id.clone();
        for campaign in &page {
            done.checked += 1;
            // Fail on conflict, reject any reuse: only a campaign with no workflow at all gets one.
            match start_workflow(
                state,
                campaign,
                WorkflowIdConflictPolicy::Fail,
                WorkflowIdReusePolicy::RejectDuplicate,
            )
            .await
            {
                Ok(()) => {
                    done.started += 1;
                    tracing::warn!(
                        campaign = %campaign.id,
                        org = %campaign.org_id,
                        "an ACTIVE campaign had no workflow; started it"
                    );
                    state
                        .store
                        .mark_workflow_started(&campaign.org_id, &campaign.id)
                        .await?;
                }
                Err(StartWorkflowError::Exists) => {
                    state
                        .store
                        .mark_workflow_started(&campaign.org_id, &campaign.id)
                        .await?;
                }
                Err(error) => {
                    tracing::warn!(campaign = %campaign.id, %error, "reconciler could not start a workflow");
                }
            }
        }
    }
    Ok(done)
}

/// Stops the task of [`spawn`] when dropped.
pub struct Reconciler {
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Runs [`start_missing_workflows`] now and then every `every`, until the handle is dropped.
/// Failures are logged: the next pass tries again.
pub fn spawn(state: AppState, every: Duration) -> Reconciler {
    let (stop_tx, mut stop) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            match start_missing_workflows(&state, START_GRACE.min(every)).await {
                Ok(done) if done.started > 0 => {
                    tracing::info!(
                        checked = done.checked,
                        started = done.started,
                        "reconciled ACTIVE campaigns"
                    );
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "could not list ACTIVE campaigns to reconcile")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = &mut stop => return,
            }
        }
    });
    Reconciler { _stop: stop_tx }
}
