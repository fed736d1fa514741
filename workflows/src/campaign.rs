//! The campaign workflow: interprets a campaign's definition one step at a time.
//!
//! Campaign progression (which step, which timer) lives here; per-delivery state lives in the
//! database and is reached only through activities. A fan-out step runs as ranges of the
//! audience in parallel activities; DEADLINE_CHECK is a durable timer raced against "every
//! delivery is resolved"; the other step types are one activity each.
//!
//! Bounded history: the API writes each READ/ACK to the database first and signals this
//! workflow at most about once a second per campaign (plus whenever nothing is left
//! unresolved), with a snapshot of the counts. A run continues as new when Temporal suggests
//! it, when its history reaches `max_history_events`, or when it has taken
//! `max_signals_per_run` signals: in a wait (keeping its absolute deadline), between fan-out
//! ranges (carrying the ranges done) or at a step boundary. Signals are only hints: every wait
//! also asks the database when it begins and before it ends early.

use crate::contract::{
    CampaignActivities, CampaignRef, DeliveryCounts, EscalateInput, FanOutInput, FanOutResult,
    FanOutSummary, SeqRange, StepFailure, StepInput, WaitInput, WebhookInput,
};
use crate::definition::{
    Channel, DeadlineConfig, Definition, EscalateConfig, NotifyConfig, Outcome, Step, StepKind,
    WebhookConfig,
};
use crate::engine::{Interpreter, UnknownStep, early_outcome, outcome_at_deadline, wait_outcome};
use crate::search_attributes;
use serde::{Deserialize, Serialize};
use std::time::{Duration, UNIX_EPOCH};
use temporalio_common::RetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions, ContinueAsNewOptions, OutgoingWorkflowError,
    SyncWorkflowContext, TimerOptions, TimerResult, WorkflowCancellationToken, WorkflowContext,
    WorkflowContextView, WorkflowResult, WorkflowTermination,
};

/// Knobs the engine reads from the workflow input, so that every run of a campaign keeps the
/// values it started with. Defaults suit production; tests shorten them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineSettings {
    /// CALL_WEBHOOK attempts in all, first included.
    pub webhook_max_attempts: u32,
    /// Delay before the first webhook retry; each further retry doubles it (up to a minute).
    pub webhook_initial_retry_ms: u64,
    /// Signals one run takes before it continues as new.
    pub max_signals_per_run: u32,
    /// History events after which a run continues as new at the next chance: a step boundary,
    /// between fan-out ranges, or in a wait (Temporal's own suggestion counts too).
    pub max_history_events: u32,
    /// Audience positions per fan-out range: one activity that any worker may take.
    pub fan_out_range_size: u64,
    /// Fan-out ranges running at once for one step (across all workers).
    pub fan_out_parallel_ranges: u32,
    /// A fan-out range whose worker has not heartbeated for this long is handed to another.
    pub fan_out_heartbeat_timeout_ms: u64,
    /// A DEADLINE_CHECK wait re-counts from the database this often, so that a lost signal
    /// delays an early end by at most this long rather than until the deadline.
    pub wait_recount_interval_ms: u64,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            webhook_max_attempts: 5,
            webhook_initial_retry_ms: 1_000,
            max_signals_per_run: 500,
            max_history_events: 2_000,
            fan_out_range_size: 10_000,
            fan_out_parallel_ranges: 8,
            fan_out_heartbeat_timeout_ms: 30_000,
            wait_recount_interval_ms: 300_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CampaignInput {
    pub campaign: CampaignRef,
    /// The campaign's internal name, for the webhook payload.
    pub name: String,
    pub definition: Definition,
    #[serde(default)]
    pub settings: EngineSettings,
    /// Where a continued run picks up; `None` for the first run.
    #[serde(default)]
    pub resume: Option<Resume>,
}

/// Carried across continue-as-new: the step to resume at and how far it had got.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resume {
    pub step_id: String,
    /// A DEADLINE_CHECK wait in progress: its absolute deadline. `None` when the step has not
    /// begun (a run that continued as new at a step boundary).
    #[serde(default)]
    pub wait_deadline_ms: Option<u64>,
    /// A partitioned fan-out in progress: the ranges done so far.
    #[serde(default)]
    pub fan_out: Option<FanOutProgress>,
    pub counts: DeliveryCounts,
    pub continued_runs: u32,
}

/// How far a partitioned fan-out has got: ranges before `next_range` are done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOutProgress {
    pub last_seq: i64,
    pub next_range: u64,
    pub notified: u64,
    pub failed: u64,
    pub tokens_removed: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CampaignOutcome {
    pub counts: DeliveryCounts,
}

/// The answer to the `progress` query.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub current_step: Option<String>,
    pub step_type: Option<String>,
    /// End of the current DEADLINE_CHECK wait, in Unix milliseconds.
    pub waiting_until_ms: Option<u64>,
    pub counts: DeliveryCounts,
    pub continued_runs: u32,
    pub signals_this_run: u32,
}

#[workflow]
pub struct CampaignWorkflow {
    input: CampaignInput,
    current_step: Option<String>,
    waiting_until_ms: Option<u64>,
    counts: DeliveryCounts,
    /// A signal said nothing is left unresolved; the wait confirms with the database.
    all_resolved_hint: bool,
    signals_this_run: u32,
}

#[workflow_methods]
impl CampaignWorkflow {
    #[init]
    pub fn new(_ctx: &WorkflowContextView, input: CampaignInput) -> Self {
        let counts = input.resume.as_ref().map(|r| r.counts).unwrap_or_default();
        CampaignWorkflow {
            input,
            current_step: None,
            waiting_until_ms: None,
            counts,
            all_resolved_hint: false,
            signals_this_run: 0,
        }
    }

    #[run(name = "campaign")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<CampaignOutcome> {
        let input = ctx.state(|s| s.input.clone());
        match drive(ctx, &input).await {
            Err(WorkflowTermination::ContinueAsNew(next)) => {
                Err(WorkflowTermination::ContinueAsNew(next))
            }
            Err(_) if ctx.cancellation_token().is_cancelled() => {
                // The cleanup runs on a detached token: the workflow's own is already cancelled.
                ctx.execute_activity(
                    CampaignActivities::record_cancellation,
                    input.campaign.clone(),
                    {
                        let mut detached = options("cancel", Duration::from_secs(30));
                        detached.cancellation_token = Some(WorkflowCancellationToken::new());
                        detached
                    },
                )
                .await?;
                ctx.upsert_search_attributes([
                    search_attributes::STATUS.value_set("CANCELLED".into())
                ]);
                ctx.set_current_details("cancelled".to_owned());
                Err(WorkflowTermination::cancelled())
            }
            // A step failed in a way no retry can fix (a row gone, a secret that does not open,
            // missing configuration): the activity log says so before the workflow fails, so
            // the admin reading the campaign sees why it stopped. Best effort: the workflow
            // fails with the original error either way. Patched in, so failed histories from
            // before it still replay.
            Err(WorkflowTermination::Failed(error)) if ctx.patched(RECORD_FATAL_FAILURES) => {
                let step_id = ctx.state(|s| s.current_step.clone());
                let step = step_id.as_deref().and_then(|id| input.definition.step(id));
                let failure = StepFailure {
                    campaign: input.campaign.clone(),
                    step_id: step_id.clone().unwrap_or_else(|| "campaign".into()),
                    step_type: step.map_or("", |s| s.kind.type_name()).to_owned(),
                    error: match &error {
                        OutgoingWorkflowError::ActivityExecution(e) => failure_message(e),
                        other => other.to_string(),
                    },
                    fatal: true,
                };
                // A few attempts only: this must not stand between the failure and its report.
                let mut record = options("failure", Duration::from_secs(60));
                record.retry_policy = Some(RetryPolicy::builder().maximum_attempts(3).build());
                let _ = ctx
                    .execute_activity(CampaignActivities::record_step_failure, failure, record)
                    .await;
                Err(WorkflowTermination::Failed(error))
            }
            result => result,
        }
    }

    #[signal(name = "deliveries_changed")]
    pub fn deliveries_changed(
        &mut self,
        _ctx: &mut SyncWorkflowContext<Self>,
        counts: DeliveryCounts,
    ) {
        self.signals_this_run += 1;
        self.record_counts(counts);
        if counts.unresolved() == 0 {
            self.all_resolved_hint = true;
        }
    }

    #[query(name = "progress")]
    pub fn progress(&self, _ctx: &WorkflowContextView) -> Progress {
        let step = self
            .current_step
            .as_deref()
            .and_then(|id| self.input.definition.step(id));
        Progress {
            current_step: self.current_step.clone(),
            step_type: step.map(|s| s.kind.type_name().to_owned()),
            waiting_until_ms: self.waiting_until_ms,
            counts: self.counts,
            continued_runs: self.input.resume.as_ref().map_or(0, |r| r.continued_runs),
            signals_this_run: self.signals_this_run,
        }
    }
}

/// Patch id: a fired DEADLINE_CHECK timer re-counts before choosing `deadline`.
const RECOUNT_AT_DEADLINE: &str = "recount-at-deadline";
/// Patch id: a fan-out step with the `webhook` channel sends its queued channel events.
const WEBHOOK_CHANNEL_EVENTS: &str = "webhook-channel-events";
/// Patch id: the workflow writes the campaign's deliveries (the start request no longer does).
const DELIVERIES_IN_WORKFLOW: &str = "deliveries-in-workflow";
/// Patch id: a fan-out step runs as ranges in parallel activities.
const PARTITIONED_FAN_OUT: &str = "partitioned-fan-out";
/// Patch id: a run whose history grew long continues as new at a step boundary.
const CONTINUE_AT_STEP_BOUNDARIES: &str = "continue-at-step-boundaries";
/// Patch id: a DEADLINE_CHECK wait re-counts from the database periodically (and continues as
/// new when its history grows long), not only when a signal wakes it.
const RECOUNT_DURING_WAITS: &str = "recount-during-waits";
/// Patch id: a failure that ends the workflow is written to the activity log first.
const RECORD_FATAL_FAILURES: &str = "record-fatal-failures";

impl CampaignWorkflow {
    /// Keeps the newer of two snapshots: signals and counts can arrive out of order.
    fn record_counts(&mut self, counts: DeliveryCounts) {
        if counts.progress_key() >= self.counts.progress_key() {
            self.counts = counts;
        }
    }
}

/// Runs the definition from the entry step (or the resumed one) to an end, then completes the
/// campaign: whatever is still unresolved becomes MISSED.
async fn drive(
    ctx: &mut WorkflowContext<CampaignWorkflow>,
    input: &CampaignInput,
) -> WorkflowResult<CampaignOutcome> {
    let definition = &input.definition;
    let mut resume = input.resume.clone();
    let mut run = match &resume {
        Some(r) => Interpreter::resume(definition, &r.step_id).map_err(corrupt)?,
        None => Interpreter::start(definition),
    };
    if resume.is_none() && ctx.patched(DELIVERIES_IN_WORKFLOW) {
        prepare_deliveries(ctx, input).await?;
    }
    let mut first_step_of_run = true;
    while let Some(step) = run.current() {
        if !first_step_of_run
            && history_is_long(ctx, input)
            && ctx.patched(CONTINUE_AT_STEP_BOUNDARIES)
        {
            continue_as_new(ctx, input, step, None, None)?;
        }
        first_step_of_run = false;
        let resumed = resume.take();
        ctx.state_mut(|s| {
            s.current_step = Some(step.id.clone());
            s.waiting_until_ms = None;
        });
        ctx.set_current_details(format!("step `{}` ({})", step.id, step.kind.type_name()));
        // What a DEADLINE_CHECK's wait decided; the other step types do their work and go on.
        let waited = match &step.kind {
            StepKind::SendNotification(config) => {
                fan_out(ctx, input, step, config, false, resumed).await?;
                None
            }
            StepKind::SendReminder(config) => {
                fan_out(ctx, input, step, config, true, resumed).await?;
                None
            }
            StepKind::DeadlineCheck(config) => {
                let resumed_deadline = resumed.and_then(|r| r.wait_deadline_ms);
                Some(wait(ctx, input, step, config, resumed_deadline).await?)
            }
            StepKind::MarkMissed => {
                let counts = ctx
                    .execute_activity(
                        CampaignActivities::mark_missed,
                        StepInput {
                            campaign: input.campaign.clone(),
                            step_id: step.id.clone(),
                        },
                        options(&step.id, Duration::from_secs(300)),
                    )
                    .await?;
                ctx.state_mut(|s| s.counts = counts);
                None
            }
            StepKind::CallWebhook(config) => {
                call_webhook(ctx, input, step, config).await?;
                None
            }
            StepKind::Escalate(config) => {
                escalate(ctx, input, step, config).await?;
                None
            }
        };
        run.step_ended(waited);
    }
    ctx.state_mut(|s| s.current_step = None);
    let counts = ctx
        .execute_activity(
            CampaignActivities::complete_campaign,
            input.campaign.clone(),
            options("complete", Duration::from_secs(300)),
        )
        .await?;
    ctx.state_mut(|s| s.counts = counts);
    ctx.upsert_search_attributes([search_attributes::STATUS.value_set("COMPLETED".into())]);
    // The Web UI's "current details" of a finished run say how it ended, not its last step
    // (details are no command: replay is unaffected).
    ctx.set_current_details(format!(
        "completed: {} of {} acknowledged, {} missed, {} failed",
        counts.acknowledged,
        counts.total(),
        counts.missed,
        counts.failed
    ));
    Ok(CampaignOutcome { counts })
}

async fn fan_out(
    ctx: &mut WorkflowContext<CampaignWorkflow>,
    input: &CampaignInput,
    step: &Step,
    config: &NotifyConfig,
    reminder: bool,
    resumed: Option<Resume>,
) -> WorkflowResult<()> {
    let fan_out = FanOutInput {
        campaign: input.campaign.clone(),
        step_id: step.id.clone(),
        channels: config.channels.clone(),
        variables: config.variables.clone(),
        range: None,
        reminder,
    };
    let counts = if ctx.patched(PARTITIONED_FAN_OUT) {
        let progress = resumed.and_then(|r| r.fan_out);
        fan_out_ranges(ctx, input, step, fan_out, reminder, progress).await?
    } else {
        // Histories recorded before fan-out was partitioned: one activity for the audience,
        // paging through it and heartbeating its position.
        let mut options = options(&step.id, Duration::from_secs(3600));
        options.heartbeat_timeout = Some(Duration::from_secs(60));
        fan_out_activity(ctx, reminder, fan_out, options)
            .await?
            .counts
    };
    ctx.state_mut(|s| s.counts = counts);
    // Histories recorded before the webhook channel existed have no such activity here.
    if config.channels.contains(&Channel::Webhook) && ctx.patched(WEBHOOK_CHANNEL_EVENTS) {
        deliver_channel_events(ctx, input, step).await?;
    }
    Ok(())
}

/// A fan-out split into ranges of audience positions, each an activity that any worker may
/// take, at most `fan_out_parallel_ranges` at once. Each range checkpoints its own progress
/// (heartbeats) and skips recipients the step already notified, so a range handed to another
/// worker after a crash resends at most the page that was in flight. When the history grows
/// long, no further range starts: the running ones finish, and the run continues as new with
/// the ranges done so far.
async fn fan_out_ranges(
    ctx: &mut WorkflowContext<CampaignWorkflow>,
    input: &CampaignInput,
    step: &Step,
    fan_out: FanOutInput,
    reminder: bool,
    progress: Option<FanOutProgress>,
) -> WorkflowResult<DeliveryCounts> {
    let settings = &input.settings;
    let mut progress = match progress {
        Some(progress) => progress,
        None => {
            let plan = ctx
                .execute_activity(
                    CampaignActivities::plan_fan_out,
                    fan_out.clone(),
                    options(&step.id, Duration::from_secs(60)),
                )
                .await?;
            FanOutProgress {
                last_seq: plan.last_seq,
                ..Default::default()
            }
        }
    };
    let size = settings.fan_out_range_size.max(1) as i64;
    let ranges = (progress.last_seq.max(0) as u64).div_ceil(size as u64);
    let parallel = settings.fan_out_parallel_ranges.max(1) as usize;
    let mut range_options = options(&step.id, Duration::from_secs(24 * 3600));
    range_options.heartbeat_timeout = Some(Duration::from_millis(
        settings.fan_out_heartbeat_timeout_ms.max(1_000),
    ));
    // The futures borrow this clone, so `ctx` stays free for state and history checks.
    let activities = ctx.clone();
    let mut running: Vec<FanOutFuture<'_>> = Vec::new();
    let mut draining = false;
    loop {
        while !draining && running.len() < parallel && progress.next_range < ranges {
            let after_seq = progress.next_range as i64 * size;
            let range = SeqRange {
                after_seq,
                last_seq: (after_seq + size).min(progress.last_seq),
            };
            let mut options = range_options.clone();
            options.summary = Some(format!("{} {}–{}", step.id, after_seq + 1, range.last_seq));
            let input = FanOutInput {
                range: Some(range),
                ..fan_out.clone()
            };
            running.push(fan_out_activity(&activities, reminder, input, options));
            progress.next_range += 1;
        }
        if running.is_empty() {
            break;
        }
        let done = first_done(&mut running).await?;
        progress.notified += done.notified;
        progress.failed += done.failed;
        progress.tokens_removed += done.tokens_removed;
        draining = draining || history_is_long(ctx, input);
    }
    if progress.next_range < ranges {
        continue_as_new(ctx, input, step, None, Some(progress))?;
    }
    let summary = FanOutSummary {
        campaign: input.campaign.clone(),
        step_id: step.id.clone(),
        notified: progress.notified,
        failed: progress.failed,
        tokens_removed: progress.tokens_removed,
    };
    Ok(ctx
        .execute_activity(
            CampaignActivities::finish_fan_out,
            summary,
            options(&step.id, Duration::from_secs(300)),
        )
        .await?)
}

type FanOutFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<FanOutResult, ActivityExecutionError>> + 'a>,
>;

/// The step type's fan-out activity (SEND_REMINDER or SEND_NOTIFICATION) for `input`.
fn fan_out_activity<'a>(
    ctx: &'a WorkflowContext<CampaignWorkflow>,
    reminder: bool,
    input: FanOutInput,
    options: ActivityOptions,
) -> FanOutFuture<'a> {
    if reminder {
        Box::pin(ctx.execute_activity(CampaignActivities::send_reminder, input, options))
    } else {
        Box::pin(ctx.execute_activity(CampaignActivities::send_notification, input, options))
    }
}

/// Waits for the first of `running` to finish and removes it. The futures are polled in order,
/// so which one counts as first is the same on every replay.
async fn first_done(
    running: &mut Vec<FanOutFuture<'_>>,
) -> Result<FanOutResult, ActivityExecutionError> {
    std::future::poll_fn(|cx| {
        for index in 0..running.len() {
            if let std::task::Poll::Ready(value) = running[index].as_mut().poll(cx) {
                drop(running.remove(index));
                return std::task::Poll::Ready(value);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Writes the campaign's deliveries, a page at a time, from its audience: the start request
/// only counted them, so it answers at once whatever the audience's size.
async fn prepare_deliveries(
    ctx: &mut WorkflowContext<CampaignWorkflow>,
    input: &CampaignInput,
) -> WorkflowResult<()> {
    let mut options = options("deliveries", Duration::from_secs(24 * 3600));
    options.heartbeat_timeout = Some(Duration::from_millis(
        input.settings.fan_out_heartbeat_timeout_ms.max(1_000),
    ));
    let prepared = ctx
        .execute_activity(
            CampaignActivities::prepare_deliveries,
            input.campaign.clone(),
            options,
        )
        .await?;
    ctx.state_mut(|s| {
        s.counts = DeliveryCounts {
            pending: prepared.total,
            ..Default::default()
        }
    });
    Ok(())
}

/// Whether this run should continue as new at its next chance: Temporal suggests it, or the
/// history or the signals taken reached the configured bounds.
fn history_is_long(ctx: &WorkflowContext<CampaignWorkflow>, input: &CampaignInput) -> bool {
    ctx.continue_as_new_suggested()
        || ctx.history_length() >= input.settings.max_history_events
        || ctx.state(|s| s.signals_this_run) >= input.settings.max_signals_per_run
}

/// Ends this run and starts the next at `step`, carrying the wait's deadline or the fan-out's
/// progress when the step is under way.
fn continue_as_new(
    ctx: &WorkflowContext<CampaignWorkflow>,
    input: &CampaignInput,
    step: &Step,
    wait_deadline_ms: Option<u64>,
    fan_out: Option<FanOutProgress>,
) -> Result<std::convert::Infallible, WorkflowTermination> {
    let next = CampaignInput {
        resume: Some(Resume {
            step_id: step.id.clone(),
            wait_deadline_ms,
            fan_out,
            counts: ctx.state(|s| s.counts),
            continued_runs: input.resume.as_ref().map_or(0, |r| r.continued_runs) + 1,
        }),
        ..input.clone()
    };
    ctx.continue_as_new(next, ContinueAsNewOptions::default())
}

/// The fan-out queued one webhook channel event per recipient and sent each page's events as
/// it went; this sends what is left and follows the channel's retry schedule (1 s, 5 s, 30 s).
/// The activity sets each retry's delay itself, and Temporal keeps the timer, so the schedule
/// survives a worker restart. Events that fail for good are in the activity log; the campaign
/// goes on either way.
async fn deliver_channel_events(
    ctx: &mut WorkflowContext<CampaignWorkflow>,
    input: &CampaignInput,
    step: &Step,
) -> WorkflowResult<()> {
    let mut options = options(&step.id, Duration::from_secs(3600));
    options.heartbeat_timeout = Some(Duration::from_secs(60));
    ctx.execute_activity(
        CampaignActivities::deliver_channel_events,
        StepInput {
            campaign: input.campaign.clone(),
            step_id: step.id.clone(),
        },
        options,
    )
    .await?;
    Ok(())
}

/// DEADLINE_CHECK: a durable timer raced against "every delivery is resolved".
async fn wait(
    ctx: &mut WorkflowContext<CampaignWorkflow>,
    input: &CampaignInput,
    step: &Step,
    config: &DeadlineConfig,
    resumed_deadline_ms: Option<u64>,
) -> WorkflowResult<Outcome> {
    // Cleared before counting: a signal that arrives while the count runs sets it again.
    ctx.state_mut(|s| s.all_resolved_hint = false);
    let (deadline_ms, counts) = match resumed_deadline_ms {
        Some(deadline) => (deadline, count_deliveries(ctx, input, step).await?),
        None => {
            let deadline = now_ms(ctx) + config.duration.as_millis() as u64;
            let begin = WaitInput {
                campaign: input.campaign.clone(),
                step_id: step.id.clone(),
                duration: config.text.clone(),
            };
            let counts = ctx
                .execute_activity(
                    CampaignActivities::begin_wait,
                    begin,
                    options(&step.id, Duration::from_secs(60)),
                )
                .await?;
            (deadline, counts)
        }
    };
    ctx.state_mut(|s| {
        s.record_counts(counts);
        s.waiting_until_ms = Some(deadline_ms);
    });
    let now = now_ms(ctx);
    if let Some(outcome) = wait_outcome(counts.unresolved(), now, deadline_ms) {
        return Ok(outcome);
    }
    let max_signals = input.settings.max_signals_per_run;
    // One durable timer for the whole wait (a clone of the context owns it, so the loop can
    // still run activities); signals only wake the loop to re-count.
    let timer_ctx = ctx.clone();
    let mut timer = std::pin::pin!(
        timer_ctx.timer(
            TimerOptions::builder(Duration::from_millis(deadline_ms - now))
                .summary(format!("{} deadline", step.id))
                .build(),
        )
    );
    // Signals are hints and one may be lost (an API process killed between its write and its
    // signal): a second timer re-counts every `wait_recount_interval_ms`, a few events each
    // time, so a lost last signal delays the early end by that much instead of until the
    // deadline. Patched in after histories without it existed, so those still replay.
    let periodic = ctx.patched(RECOUNT_DURING_WAITS);
    let recount_ctx = ctx.clone();
    let recount_every = Duration::from_millis(input.settings.wait_recount_interval_ms.max(100));
    let recount_timer = || {
        Box::pin(
            recount_ctx.timer(
                TimerOptions::builder(recount_every)
                    .summary(format!("{} recount", step.id))
                    .build(),
            ),
        )
    };
    let mut recount = periodic.then(recount_timer);
    loop {
        let has_signals =
            |s: &CampaignWorkflow| s.all_resolved_hint || s.signals_this_run >= max_signals;
        let woke = if let Some(mut recount) = recount.as_mut() {
            temporalio_sdk::workflows::select! {
                fired = timer => Wake::Deadline(fired),
                condition = ctx.wait_condition(has_signals) => {
                    condition?;
                    Wake::Signal
                }
                fired = recount => Wake::Recount(fired),
            }
        } else {
            temporalio_sdk::workflows::select! {
                fired = timer => Wake::Deadline(fired),
                condition = ctx.wait_condition(has_signals) => {
                    condition?;
                    Wake::Signal
                }
            }
        };
        match woke {
            Wake::Deadline(TimerResult::Fired) => {
                // `deadline` means "fired with deliveries unresolved": ask the database, since
                // the signal of the last ACK may have been lost. Patched in after histories
                // without this count existed, so those still replay.
                if !ctx.patched(RECOUNT_AT_DEADLINE) {
                    return Ok(Outcome::Deadline);
                }
                ctx.state_mut(|s| s.all_resolved_hint = false);
                let counts = count_deliveries(ctx, input, step).await?;
                ctx.state_mut(|s| s.record_counts(counts));
                return Ok(outcome_at_deadline(counts.unresolved()));
            }
            Wake::Deadline(_) | Wake::Recount(TimerResult::Cancelled) => {
                return Err(WorkflowTermination::cancelled());
            }
            Wake::Recount(_) => recount = Some(recount_timer()),
            Wake::Signal => {}
        }
        if ctx.state(|s| s.signals_this_run >= max_signals)
            || (periodic && history_is_long(ctx, input))
        {
            continue_as_new(ctx, input, step, Some(deadline_ms), None)?;
        }
        ctx.state_mut(|s| s.all_resolved_hint = false);
        let counts = count_deliveries(ctx, input, step).await?;
        ctx.state_mut(|s| s.record_counts(counts));
        // Woken before the deadline fired: the deadline itself is the timer's to call.
        if let Some(outcome) = early_outcome(counts.unresolved()) {
            return Ok(outcome);
        }
    }
}

/// What ended one turn of a wait's loop.
enum Wake {
    /// The step's deadline timer.
    Deadline(TimerResult),
    /// A signal: counts changed, or the run has taken its share of signals.
    Signal,
    /// The periodic re-count's timer.
    Recount(TimerResult),
}

async fn count_deliveries(
    ctx: &mut WorkflowContext<CampaignWorkflow>,
    input: &CampaignInput,
    step: &Step,
) -> WorkflowResult<DeliveryCounts> {
    Ok(ctx
        .execute_activity(
            CampaignActivities::count_deliveries,
            input.campaign.clone(),
            options(&step.id, Duration::from_secs(60)),
        )
        .await?)
}

/// CALL_WEBHOOK: retried with exponential backoff by Temporal; when the retries are exhausted
/// the failure goes to the activity log and the campaign carries on.
async fn call_webhook(
    ctx: &mut WorkflowContext<CampaignWorkflow>,
    input: &CampaignInput,
    step: &Step,
    config: &WebhookConfig,
) -> WorkflowResult<()> {
    let settings = &input.settings;
    let retry = RetryPolicy::builder()
        .initial_interval(Duration::from_millis(settings.webhook_initial_retry_ms))
        .backoff_coefficient(2.0)
        .maximum_interval(Duration::from_secs(60))
        .maximum_attempts(settings.webhook_max_attempts)
        .build();
    let call = WebhookInput {
        campaign: input.campaign.clone(),
        step_id: step.id.clone(),
        campaign_name: input.name.clone(),
        config: config.clone(),
        max_attempts: settings.webhook_max_attempts,
    };
    // One attempt may POST many parts (30 s timeout each) and heartbeats after each: the
    // heartbeat, not the attempt's length, tells a stuck attempt from a long one.
    let mut attempt_options = options(&step.id, Duration::from_secs(3600));
    attempt_options.heartbeat_timeout = Some(Duration::from_secs(45));
    attempt_options.retry_policy = Some(retry);
    if let Err(error) = ctx
        .execute_activity(CampaignActivities::call_webhook, call, attempt_options)
        .await
    {
        if ctx.cancellation_token().is_cancelled() {
            return Err(WorkflowTermination::cancelled());
        }
        let failure = StepFailure {
            campaign: input.campaign.clone(),
            step_id: step.id.clone(),
            step_type: step.kind.type_name().to_owned(),
            error: failure_message(&error),
            fatal: false,
        };
        ctx.execute_activity(
            CampaignActivities::record_step_failure,
            failure,
            options(&step.id, Duration::from_secs(60)),
        )
        .await?;
    }
    Ok(())
}

/// Activity options named after the step, so the Web UI shows which step each activity serves.
/// Retries back off exponentially up to a minute and go on until the start-to-close budget of
/// the caller's choosing runs out per attempt; callers adjust the public fields they need.
fn options(step_id: &str, start_to_close: Duration) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(start_to_close)
        .summary(step_id.to_owned())
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(60))
                .build(),
        )
        .build()
}

/// The whole chain of an activity failure ("Activity task failed: ... 503 ..."): the top-level
/// message alone only says that the activity failed.
fn failure_message(error: &ActivityExecutionError) -> String {
    let mut messages = Vec::new();
    let mut failure = error.failure();
    while let Some(f) = failure {
        if !f.message.is_empty() {
            messages.push(f.message.as_str());
        }
        failure = f.cause.as_deref();
    }
    if messages.is_empty() {
        error.to_string()
    } else {
        messages.join(": ")
    }
}

fn now_ms(ctx: &WorkflowContext<CampaignWorkflow>) -> u64 {
    ctx.workflow_time()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

fn corrupt(unknown: UnknownStep) -> WorkflowTermination {
    WorkflowTermination::Failed(
        temporalio_sdk::ApplicationFailure::non_retryable(unknown.to_string()).into(),
    )
}

/// ESCALATE: one activity tells the managers of the recipients still unresolved (each manager
/// once per step, however often the activity is retried); with the webhook channel, the events
/// it queued then go out on the channel's retry schedule, as after a fan-out. Histories recorded
/// before ESCALATE existed never contain this step, so it needs no `patched` marker: no old
/// history can reach these commands.
async fn escalate(
    ctx: &mut WorkflowContext<CampaignWorkflow>,
    input: &CampaignInput,
    step: &Step,
    config: &EscalateConfig,
) -> WorkflowResult<()> {
    let escalation = EscalateInput {
        campaign: input.campaign.clone(),
        step_id: step.id.clone(),
        config: config.clone(),
    };
    let mut options = options(&step.id, Duration::from_secs(3600));
    options.heartbeat_timeout = Some(Duration::from_secs(60));
    ctx.execute_activity(CampaignActivities::escalate, escalation, options)
        .await?;
    if config.channels.contains(&Channel::Webhook) {
        deliver_channel_events(ctx, input, step).await?;
    }
    Ok(())
}
