//! Deterministic code only: the workflow definition language and the campaign workflow.
//!
//! - [`definition`] parses and validates the JSON DAG a campaign runs (pure: std, serde).
//! - [`contract`] declares the activities the workflow calls and the data they exchange; the
//!   `pidgr-activities` crate implements them.
//! - [`engine`] is the interpreter: which step runs, where each outcome leads, when a wait ends.
//! - [`campaign`] is the workflow itself: it drives the interpreter with activities and timers.
//! - [`simulate`] drives the same interpreter on a simulated clock, for dry runs.
//!
//! May import: the Temporal SDK, serde. Never sqlx, reqwest, `tokio::spawn`, `tokio::time`,
//! `rand`, `SystemTime::now` or iteration over a `HashMap`: replay must be deterministic.

pub mod campaign;
pub mod contract;
pub mod definition;
pub mod engine;
pub mod simulate;
pub mod template;

pub use campaign::{CampaignInput, CampaignOutcome, CampaignWorkflow, EngineSettings, Progress};

/// The workflow id of a campaign, `campaign-<campaign id>`: one workflow per campaign, ever.
pub fn workflow_id(campaign_id: &str) -> String {
    format!("campaign-{campaign_id}")
}

/// The task queue campaign workflows and their activities run on unless configured otherwise.
pub const DEFAULT_TASK_QUEUE: &str = "pidgr-campaigns";

/// Custom search attributes that make runs findable in the Web UI. The dev server registers them
/// at start (`make dev`, the tests); a production namespace needs them created once
/// (`temporal operator search-attribute create`, see the README).
pub mod search_attributes {
    use temporalio_common::search_attributes::SearchAttributeKey;

    pub const CAMPAIGN_ID: SearchAttributeKey<String> =
        SearchAttributeKey::keyword("PidgrCampaignId");
    pub const ORGANISATION_ID: SearchAttributeKey<String> =
        SearchAttributeKey::keyword("PidgrOrganisationId");
    pub const STATUS: SearchAttributeKey<String> =
        SearchAttributeKey::keyword("PidgrCampaignStatus");
    /// The campaign's internal name, so the Web UI's list can be filtered by it.
    pub const NAME: SearchAttributeKey<String> = SearchAttributeKey::keyword("PidgrCampaignName");

    /// Name and type of each, as `temporal server start-dev --search-attribute` takes them.
    pub const ALL: [(&str, &str); 4] = [
        ("PidgrCampaignId", "Keyword"),
        ("PidgrOrganisationId", "Keyword"),
        ("PidgrCampaignStatus", "Keyword"),
        ("PidgrCampaignName", "Keyword"),
    ];
}
