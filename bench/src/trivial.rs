//! The baselines' own workflows, on the same dev server as pidgr's: a one-activity workflow
//! (what a tiny campaign is compared with) and a signal sink (what ACK intake is compared
//! with). They run in this process, on a worker of their own and a task queue of their own.

use std::time::Duration;

use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use temporalio_sdk::{
    ActivityOptions, SyncWorkflowContext, WorkflowContext, WorkflowContextView, WorkflowResult,
};

/// Runs one activity and ends: the least a durable workflow with a side effect costs.
#[workflow]
#[derive(Default)]
pub struct OneActivity;

#[workflow_methods]
impl OneActivity {
    #[run(name = "bench-one-activity")]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: String) -> WorkflowResult<String> {
        Ok(ctx
            .execute_activity(
                BenchActivities::echo,
                input,
                ActivityOptions::start_to_close_timeout(Duration::from_secs(30)),
            )
            .await?)
    }
}

/// Counts signals until it has `target` of them, then ends.
#[workflow]
#[derive(Default)]
pub struct SignalSink {
    received: u64,
}

#[workflow_methods]
impl SignalSink {
    #[run(name = "bench-signal-sink")]
    pub async fn run(ctx: &mut WorkflowContext<Self>, target: u64) -> WorkflowResult<u64> {
        ctx.wait_condition(|s| s.received >= target).await?;
        Ok(ctx.state(|s| s.received))
    }

    #[signal(name = "poke")]
    pub fn poke(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _n: u64) {
        self.received += 1;
    }

    #[query(name = "received")]
    pub fn received(&self, _ctx: &WorkflowContextView) -> u64 {
        self.received
    }
}

pub struct BenchActivities;

#[activities]
impl BenchActivities {
    #[activity(name = "bench-echo")]
    pub async fn echo(_ctx: ActivityContext, input: String) -> Result<String, ActivityError> {
        Ok(input)
    }
}
