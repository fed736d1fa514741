//! The mobile backend's surface: READ and ACK on a member's behalf, a member's inbox, and the
//! deeplink resolver. Also an admin's read of one delivery.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use pidgr_metrics::DeliveryEvent;
use pidgr_store::{
    ActionAttestation, ActionKind, AttestedAction, Campaign, CampaignStatus, Delivery,
};
use pidgr_workflows::contract::DeliveryCounts;
use pidgr_workflows::{CampaignWorkflow, workflow_id};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use temporalio_client::WorkflowSignalOptions;

use crate::error::OrNotFound;
use crate::input::{Body, Page, Text};
use crate::message;
use crate::{ApiError, AppState, Caller};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// Where the action came from (`inbox`, `push`, ...), kept with the action.
    #[serde(default)]
    source: Option<Text<64>>,
    /// The `content_sha256` the member's app was served with the message: when given, the
    /// action is recorded only if it is the hash of what this member is shown.
    #[serde(default)]
    content_sha256: Option<ContentHash>,
}

/// A SHA-256 as the inbox serves it: exactly 64 lowercase hexadecimal characters. Anything else
/// cannot be a hash the app was served, so it is refused (422) rather than compared.
#[derive(Debug)]
struct ContentHash(String);

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(ContentHash(text))
        } else {
            Err(serde::de::Error::custom(
                "must be 64 lowercase hexadecimal characters: the content_sha256 served with the message",
            ))
        }
    }
}

/// A delivery as the API answers it, with the hash of the content its member is shown
/// (`None` when the message cannot be rendered).
#[derive(Debug, Serialize)]
pub struct AttestedDelivery {
    #[serde(flatten)]
    delivery: Delivery,
    content_sha256: Option<String>,
}

pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<AttestedDelivery>, ApiError> {
    let delivery = state
        .store
        .get_delivery(&caller.org_id, &id)
        .await
        .or_not_found("delivery")?;
    let campaign = state
        .store
        .get_campaign(&caller.org_id, &delivery.campaign_id)
        .await?;
    let content_sha256 = message::for_delivery(&campaign, &delivery)
        .ok()
        .map(|rendered| rendered.content_sha256());
    Ok(Json(AttestedDelivery {
        delivery,
        content_sha256,
    }))
}

pub async fn mark_read(
    state: State<AppState>,
    caller: Caller,
    path: Path<String>,
    body: Body<ActionRequest>,
) -> Result<Json<AttestedDelivery>, ApiError> {
    act(state, caller, path, body, ActionKind::Read).await
}

pub async fn acknowledge(
    state: State<AppState>,
    caller: Caller,
    path: Path<String>,
    body: Body<ActionRequest>,
) -> Result<Json<AttestedDelivery>, ApiError> {
    act(state, caller, path, body, ActionKind::Ack).await
}

/// A delivery with its campaign's message rendered for the recipient.
fn inbox_item(settings: &crate::ApiSettings, campaign: &Campaign, delivery: &Delivery) -> Value {
    let pending = campaign.status == CampaignStatus::Active && !delivery.status.is_resolved();
    let rendered = message::for_delivery(campaign, delivery);
    json!({
        // What a READ or ACK sends back to attest that this is what the member read.
        "content_sha256": rendered.as_ref().ok().map(message::Rendered::content_sha256),
        "delivery": delivery,
        "campaign": {
            "id": campaign.id,
            "title": campaign.title,
            "status": campaign.status,
            "started_at": campaign.started_at,
        },
        "pending": pending,
        "deeplink_url": format!("{}{}", settings.deeplink_base, delivery.deeplink_code),
        // A message too large to render is named, not cut: the item stays in the inbox.
        "message": rendered.as_ref().ok(),
        "message_error": rendered.as_ref().err().map(ToString::to_string),
    })
}

/// The most rendered content (titles, Markdown and HTML bodies) one inbox page carries. A
/// message renders to at most 512 KiB of Markdown plus its HTML, so a page of 500 such items
/// would be about half a gigabyte: past this budget the page ends early and names the next.
pub const INBOX_PAGE_BUDGET_BYTES: usize = 8 * 1024 * 1024;

/// GET /v1/members/{id}/inbox: the member's campaigns, newest first, each with its rendered
/// message; `pending` says whether it still waits for their acknowledgement. A page holds up
/// to `limit` items and up to [`INBOX_PAGE_BUDGET_BYTES`] of rendered content (but always at
/// least one item); a page cut short by either names the next in `next_cursor`.
pub async fn inbox(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    state
        .store
        .get_member(&caller.org_id, &member_id)
        .await
        .or_not_found("member")?;
    let deliveries = state
        .store
        .list_member_deliveries(&caller.org_id, &member_id, page.after(), page.limit())
        .await?;
    let mut campaigns: BTreeMap<String, Campaign> = BTreeMap::new();
    let mut items = Vec::with_capacity(deliveries.len());
    let mut spent = 0;
    let mut cut_short = false;
    for delivery in &deliveries {
        if !campaigns.contains_key(&delivery.campaign_id) {
            let campaign = state
                .store
                .get_campaign(&caller.org_id, &delivery.campaign_id)
                .await?;
            campaigns.insert(campaign.id.clone(), campaign);
        }
        let item = inbox_item(&state.settings, &campaigns[&delivery.campaign_id], delivery);
        spent += rendered_bytes(&item);
        if spent > INBOX_PAGE_BUDGET_BYTES && !items.is_empty() {
            // This item starts the next page.
            cut_short = true;
            break;
        }
        items.push(item);
    }
    let full = cut_short || deliveries.len() as i64 == page.limit();
    let next_cursor = full
        .then(|| items.last())
        .flatten()
        .map(|item| item["delivery"]["id"].clone());
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })))
}

/// The size of an inbox item's rendered message: what can make an item large.
fn rendered_bytes(item: &Value) -> usize {
    let message = &item["message"];
    ["title", "body_markdown", "body_html"]
        .iter()
        .filter_map(|field| message[field].as_str())
        .map(str::len)
        .sum()
}

/// GET /c/{code}: what a recipient's deeplink points at — their delivery and message.
pub async fn deeplink(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let delivery = state
        .store
        .get_delivery_by_code(&caller.org_id, &code)
        .await
        .or_not_found("deeplink")?;
    let campaign = state
        .store
        .get_campaign(&caller.org_id, &delivery.campaign_id)
        .await?;
    Ok(Json(inbox_item(&state.settings, &campaign, &delivery)))
}

/// Records the action in the database (idempotent; refused after MISSED or on a cancelled
/// campaign), then signals the workflow with fresh counts. Signals are coalesced: at most one
/// per campaign per `signal_interval`, except that the action that leaves nothing unresolved
/// always signals, so a wait ends at once. A lost signal delays nothing else: waits re-count.
async fn act(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(request): Body<ActionRequest>,
    kind: ActionKind,
) -> Result<Json<AttestedDelivery>, ApiError> {
    let arrived = std::time::Instant::now();
    let attestation = ActionAttestation {
        source: request.source.as_ref().map_or("api", Text::as_str),
        api_key_id: Some(&caller.key_id),
        content_sha256: request.content_sha256.as_ref().map(|hash| hash.0.as_str()),
    };
    let recorded = state
        .store
        .record_attested_action(
            &caller.org_id,
            &id,
            kind,
            attestation,
            message::shown_sha256,
        )
        .await
        .or_not_found("delivery")?;
    let (outcome, content_sha256) = match recorded {
        AttestedAction::Recorded {
            outcome,
            content_sha256,
        } => (*outcome, content_sha256),
        AttestedAction::ContentMismatch { .. } => return Err(ApiError::ContentMismatch),
    };
    let delivery = outcome.delivery;
    if outcome.changed {
        state.metrics.deliveries(
            match kind {
                ActionKind::Ack => DeliveryEvent::Acknowledged,
                ActionKind::Read => DeliveryEvent::Read,
            },
            1,
        );
    }
    // Only an active campaign's workflow waits for progress.
    if outcome.changed && outcome.campaign_status == CampaignStatus::Active {
        // Best effort: the action is recorded, and the workflow re-counts at its deadline.
        match signal_progress(
            &state,
            &caller.org_id,
            &delivery.campaign_id,
            outcome.last_signal_at,
        )
        .await
        {
            Ok(true) if kind == ActionKind::Ack => state.metrics.ack_signalled(arrived.elapsed()),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(campaign_id = %delivery.campaign_id, %error, "could not signal the campaign workflow");
            }
        }
    }
    Ok(Json(AttestedDelivery {
        delivery,
        content_sha256,
    }))
}

/// Signals the campaign's workflow with fresh counts: at most once per `signal_interval`, but
/// always when nothing is left unresolved, so a wait ends at once. True when it signalled.
///
/// The per-ACK cost must not grow with the campaign, and counting does (it reads every
/// delivery's status). So the slot is claimed first and the campaign counted only by the one
/// action per interval that wins it; the others ask only whether anything is still unresolved,
/// which stops at the first such delivery. `last_signal_at` is the slot as the action read it:
/// while it is plainly taken, claiming it would be a write that changes nothing.
async fn signal_progress(
    state: &AppState,
    org_id: &str,
    campaign_id: &str,
    last_signal_at: Option<DateTime<Utc>>,
) -> Result<bool, String> {
    let interval = state.settings.signal_interval.as_millis() as i64;
    let slot_free =
        last_signal_at.is_none_or(|at| (Utc::now() - at).num_milliseconds() >= interval);
    let claimed = slot_free
        && state
            .store
            .claim_signal_slot(campaign_id, interval)
            .await
            .map_err(|e| e.to_string())?;
    if !claimed
        && state
            .store
            .has_unresolved_deliveries(org_id, campaign_id)
            .await
            .map_err(|e| e.to_string())?
    {
        return Ok(false);
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
    state
        .temporal
        .get_workflow_handle::<CampaignWorkflow>(workflow_id(campaign_id))
        .signal(
            CampaignWorkflow::deliveries_changed,
            counts,
            WorkflowSignalOptions::default(),
        )
        .await
        .map(|_| true)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::parse_json;

    #[test]
    fn content_sha256_is_64_lowercase_hex_characters_or_a_422_pointing_at_it() {
        let good = "0123456789abcdef".repeat(4);
        let request: ActionRequest =
            parse_json(json!({ "content_sha256": good }).to_string().as_bytes()).unwrap();
        assert_eq!(request.content_sha256.unwrap().0, good);
        for bad in [
            good.to_uppercase(),
            good[..63].to_owned(),
            format!("{good}0"),
            format!(" {}", &good[1..]),
            "g".repeat(64),
        ] {
            let error = parse_json::<ActionRequest>(
                json!({ "content_sha256": bad }).to_string().as_bytes(),
            )
            .unwrap_err();
            let problem = format!("{error:?}");
            assert!(problem.contains("/content_sha256"), "{bad}: {problem}");
            assert!(
                problem.contains("64 lowercase hexadecimal"),
                "{bad}: {problem}"
            );
        }
    }
}
