//! The contract between the campaign workflow and its activities: the activity declarations
//! (implemented by the `pidgr-activities` crate, registered by the worker) and the values that
//! cross the boundary. Everything here is plain data, serialised as JSON in workflow history.

use crate::definition::{Channel, EscalateConfig, WebhookConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use temporalio_macros::activity_definitions;
use temporalio_sdk::activities::ActivityError;

/// Identifies a campaign and the organisation that owns it; every activity scopes its database
/// access to both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignRef {
    pub org_id: String,
    pub campaign_id: String,
    /// The W3C `traceparent` of the API's workflow start, when traces are exported: each
    /// activity's span is its child, so a campaign's start and its activities are one trace.
    /// The workflow only copies it (this value travels in every activity's input); absent in
    /// histories written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_parent: Option<String>,
}

/// Deliveries per status, as the workflow last heard them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryCounts {
    pub pending: u64,
    pub sent: u64,
    pub read: u64,
    pub acknowledged: u64,
    pub missed: u64,
    pub failed: u64,
}

impl DeliveryCounts {
    pub fn total(&self) -> u64 {
        self.pending + self.sent + self.read + self.acknowledged + self.missed + self.failed
    }

    /// Deliveries still waiting for an outcome (PENDING, SENT, READ).
    pub fn unresolved(&self) -> u64 {
        self.pending + self.sent + self.read
    }

    /// Statuses only move forward during a wait, so of two snapshots the one further along is
    /// the newer: this orders snapshots that signals may deliver out of order.
    pub fn progress_key(&self) -> (u64, u64) {
        (self.acknowledged + self.missed + self.failed, self.read)
    }
}

/// A fan-out step: SEND_NOTIFICATION or SEND_REMINDER.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FanOutInput {
    pub campaign: CampaignRef,
    pub step_id: String,
    pub channels: Vec<Channel>,
    pub variables: BTreeMap<String, String>,
    /// The part of the audience this activity notifies; `None` (workflows started before
    /// fan-out was partitioned) for the whole audience, with the step's start and finish logged.
    #[serde(default)]
    pub range: Option<SeqRange>,
    /// SEND_REMINDER rather than SEND_NOTIFICATION (for the activity log's wording).
    #[serde(default)]
    pub reminder: bool,
}

/// Audience positions `(after_seq, last_seq]`: one range of a partitioned fan-out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqRange {
    pub after_seq: i64,
    pub last_seq: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOutResult {
    /// Recipients this attempt notified (a retried attempt counts only its own work).
    pub notified: u64,
    pub failed: u64,
    /// Counted for a whole-audience fan-out only; ranges leave counting to the step's end.
    pub counts: DeliveryCounts,
    #[serde(default)]
    pub tokens_removed: u64,
}

/// What a partitioned fan-out splits: audience positions 1 to `last_seq`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOutPlan {
    pub last_seq: i64,
}

/// A partitioned fan-out's ranges are done: their sums, for the activity log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOutSummary {
    pub campaign: CampaignRef,
    pub step_id: String,
    pub notified: u64,
    pub failed: u64,
    pub tokens_removed: u64,
}

/// The campaign's deliveries are written: one per recipient of its audience.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedDeliveries {
    pub total: u64,
}

/// Input of the activities that only need to know the campaign and the step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepInput {
    pub campaign: CampaignRef,
    pub step_id: String,
}

/// A DEADLINE_CHECK wait begins: the step is recorded and the deliveries counted, so a wait
/// whose deliveries are all resolved already ends at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitInput {
    pub campaign: CampaignRef,
    pub step_id: String,
    /// The deadline, as text for the activity log (e.g. "72h").
    pub duration: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WebhookInput {
    pub campaign: CampaignRef,
    pub step_id: String,
    pub campaign_name: String,
    pub config: WebhookConfig,
    /// The retry policy's attempt limit, so each attempt's log line can say "attempt 2 of 5".
    pub max_attempts: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDelivered {
    pub status: u16,
    pub attempt: u32,
}

/// What became of a step's generic webhook channel events once their retries were done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelEventsDelivered {
    pub delivered: u64,
    pub failed: u64,
}

/// An ESCALATE step: the managers of recipients still unresolved get one message each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalateInput {
    pub campaign: CampaignRef,
    pub step_id: String,
    pub config: EscalateConfig,
}

/// What an ESCALATE step did, as its activity log line says it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationResult {
    /// Managers notified (each once per step).
    pub managers: u64,
    /// Unresolved deliveries of their reports.
    pub unresolved: u64,
    /// Unresolved recipients without a manager, skipped.
    pub without_manager: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepFailure {
    pub campaign: CampaignRef,
    pub step_id: String,
    pub step_type: String,
    pub error: String,
    /// The failure ends the campaign's workflow (no retry can fix it); otherwise the campaign
    /// carries on after the step.
    #[serde(default)]
    pub fatal: bool,
}

/// Activity declarations. Names are the step types the Web UI shows; each call also carries the
/// step id as its summary.
pub struct CampaignActivities;

#[rustfmt::skip]
#[activity_definitions]
impl CampaignActivities {
    #[activity(name = "SEND_NOTIFICATION")] pub fn send_notification(input: FanOutInput) -> Result<FanOutResult, ActivityError> { unimplemented!() }
    #[activity(name = "prepare_deliveries")] pub fn prepare_deliveries(input: CampaignRef) -> Result<PreparedDeliveries, ActivityError> { unimplemented!() }
    #[activity(name = "plan_fan_out")] pub fn plan_fan_out(input: FanOutInput) -> Result<FanOutPlan, ActivityError> { unimplemented!() }
    #[activity(name = "finish_fan_out")] pub fn finish_fan_out(input: FanOutSummary) -> Result<DeliveryCounts, ActivityError> { unimplemented!() }
    #[activity(name = "SEND_REMINDER")] pub fn send_reminder(input: FanOutInput) -> Result<FanOutResult, ActivityError> { unimplemented!() }
    #[activity(name = "DEADLINE_CHECK")] pub fn begin_wait(input: WaitInput) -> Result<DeliveryCounts, ActivityError> { unimplemented!() }
    #[activity(name = "MARK_MISSED")] pub fn mark_missed(input: StepInput) -> Result<DeliveryCounts, ActivityError> { unimplemented!() }
    #[activity(name = "CALL_WEBHOOK")] pub fn call_webhook(input: WebhookInput) -> Result<WebhookDelivered, ActivityError> { unimplemented!() }
    #[activity(name = "WEBHOOK_CHANNEL")] pub fn deliver_channel_events(input: StepInput) -> Result<ChannelEventsDelivered, ActivityError> { unimplemented!() }
    #[activity(name = "ESCALATE")] pub fn escalate(input: EscalateInput) -> Result<EscalationResult, ActivityError> { unimplemented!() }
    #[activity(name = "count_deliveries")] pub fn count_deliveries(input: CampaignRef) -> Result<DeliveryCounts, ActivityError> { unimplemented!() }
    #[activity(name = "record_step_failure")] pub fn record_step_failure(input: StepFailure) -> Result<(), ActivityError> { unimplemented!() }
    #[activity(name = "complete_campaign")] pub fn complete_campaign(input: CampaignRef) -> Result<DeliveryCounts, ActivityError> { unimplemented!() }
    #[activity(name = "record_cancellation")] pub fn record_cancellation(input: CampaignRef) -> Result<(), ActivityError> { unimplemented!() }
}

/// The activity types, for implementers (`#[activity(definition = activity_types::SendNotification)]`).
/// The macro keeps its own module private; these are its public names.
pub mod activity_types {
    pub use super::campaign_activities::*;
}
