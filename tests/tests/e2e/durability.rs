//! What the engine does about work that was half done or a hint that never came: the recipient
//! cap checked again at start, a lost last signal, and an ACTIVE campaign whose workflow was
//! never started.

use anyhow::{Result, ensure};
use axum::http::StatusCode;
use pidgr_store::ActionKind;
use serde_json::{Value, json};

use crate::delivery_ids;
use crate::fan_out::notify_then_missed;
use crate::harness::{Options, System, until};

/// Notify, then wait an hour for everyone to acknowledge; the webhook-free end keeps the test
/// about the wait alone.
pub(crate) fn notify_then_wait_an_hour() -> Value {
    json!({
        "version": 1,
        "steps": [
            { "id": "notify", "type": "SEND_NOTIFICATION", "config": { "variables": { "deadline": "soon" } },
              "transitions": { "next": "wait" } },
            { "id": "wait", "type": "DEADLINE_CHECK", "config": { "duration": "1h" },
              "transitions": { "deadline": "missed", "all_acknowledged": "done" } },
            { "id": "missed", "type": "MARK_MISSED", "transitions": { "next": "done" } },
            { "id": "done", "type": "MARK_MISSED" }
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_grew_past_the_cap_after_creation_cannot_start() -> Result<()> {
    let system = System::start(Options {
        max_recipients: 3,
        ..Options::default()
    })
    .await?;
    let group = system.group_of(&["ann", "bob", "cat"]).await?;
    let campaign = system
        .create_campaign_for(&group, notify_then_wait_an_hour())
        .await?;
    // Two more members join the group after the campaign was created.
    for member in system.members(&["dan", "eve"]).await? {
        system
            .store
            .add_set_member(
                &system.org_id,
                pidgr_store::SetKind::Group,
                &group,
                &member.id,
            )
            .await?;
    }
    let (status, body) = system
        .post(&format!("/v1/campaigns/{campaign}/start"), json!({}))
        .await?;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    ensure!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("more than 3")),
        "the answer names the cap: {body}"
    );
    assert_eq!(system.campaign(&campaign).await?["status"], "CREATED");
    assert!(
        system.deliveries(&campaign).await?.is_empty(),
        "nothing was written"
    );
    system.shutdown().await;
    Ok(())
}

/// The ACKs are written to the database without the API, so no signal ever tells the workflow:
/// only the wait's periodic re-count can see that everyone acknowledged, and the campaign must
/// end long before its one-hour deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_whose_last_signal_was_lost_ends_early_by_recounting() -> Result<()> {
    let system = System::start(Options {
        wait_recount_interval_ms: 1_000,
        ..Options::default()
    })
    .await?;
    let campaign = system
        .start_campaign(&["ann", "bob"], notify_then_wait_an_hour())
        .await?;
    system.until_waiting(&campaign, "wait").await?;
    for delivery in delivery_ids(&system, &campaign).await?.values() {
        system
            .store
            .record_action(&system.org_id, delivery, ActionKind::Ack, "test")
            .await?;
    }
    let done = system.until_status(&campaign, "COMPLETED").await?;
    assert_eq!(done["counts"]["acknowledged"], 2, "{done}");
    assert_eq!(
        done["counts"]["missed"], 0,
        "ended by all_acknowledged: {done}"
    );
    system.shutdown().await;
    Ok(())
}

/// A start that committed ACTIVE but whose workflow start never happened (the API process died
/// in between, or Temporal was down and the client gave up): the reconciler starts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_campaign_without_a_workflow_is_started_by_the_reconciler() -> Result<()> {
    let system = System::start(Options {
        reconcile_interval_ms: 500,
        ..Options::default()
    })
    .await?;
    let group = system.group_of(&["ann", "bob"]).await?;
    let campaign = system
        .create_campaign_for(&group, notify_then_missed())
        .await?;
    // What the start request commits before it asks Temporal.
    system
        .store
        .activate_campaign(
            &system.org_id,
            &campaign,
            &pidgr_workflows::workflow_id(&campaign),
            2,
        )
        .await?;
    let done = system.until_status(&campaign, "COMPLETED").await?;
    assert_eq!(
        done["counts"]["missed"], 2,
        "everyone was notified, then missed: {done}"
    );
    let notified = until("the deliveries to be written and notified", || async {
        let deliveries = system.deliveries(&campaign).await?;
        Ok((deliveries.len() == 2).then_some(deliveries))
    })
    .await?;
    ensure!(
        notified.iter().all(|d| d["status"] == "MISSED"),
        "{notified:?}"
    );
    system.shutdown().await;
    Ok(())
}
