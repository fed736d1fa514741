//! What the engine does about work that was half done or a hint that never came: the recipient
//! cap checked again at start, a lost last signal, and an ACTIVE campaign whose workflow was
//! never started.

use anyhow::{Context, Result, ensure};
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
    // A history in which the re-count timer fired replays against the workflow code.
    replay_run(&system, &campaign).await?;
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

/// The organisation's push credentials are sealed under a key the worker does not hold (a key
/// rotated while a worker still runs with the old one alone): no retry can fix that. The
/// fan-out fails once, the activity log says why the campaign stopped, and the workflow ends
/// failed instead of retrying for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_no_retry_can_fix_stops_the_campaign_with_the_reason_in_the_activity_log()
-> Result<()> {
    let (_fcm, system) =
        crate::fan_out::with_fake_fcm(std::time::Duration::ZERO, Options::default()).await?;
    let group = system.group_of(&["ann"]).await?;
    let campaign = system
        .create_campaign_for(&group, notify_then_missed())
        .await?;
    let worker_key = pidgr_store::SecretKey::from_hex(
        system
            .config
            .secret_key
            .as_deref()
            .context("the system's key")?,
    )?;
    let rotated = system.store.clone().with_keyring(pidgr_store::Keyring::new(
        pidgr_store::SecretKey::generate(),
        vec![worker_key],
    ));
    rotated.rotate_secret_key(100).await?;
    system.start_draft(&campaign).await?;

    let stopped = until(
        "the campaign's fatal failure in the activity log",
        || async {
            Ok(system
                .activity(&campaign)
                .await?
                .into_iter()
                .find(|e| e["kind"] == "step_failed"))
        },
    )
    .await?;
    assert_eq!(stopped["step_id"], "notify", "{stopped}");
    let message = stopped["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains("no retry can fix it") && message.contains("server key"),
        "the entry says what stopped the campaign: {stopped}"
    );
    let handle = system
        .client
        .get_workflow_handle::<pidgr_workflows::CampaignWorkflow>(pidgr_workflows::workflow_id(
            &campaign,
        ));
    let result = handle
        .get_result(temporalio_client::WorkflowGetResultOptions::default())
        .await;
    ensure!(result.is_err(), "the workflow ended failed: {result:?}");
    // No campaign status says "failed": it stays ACTIVE, and the activity log says why. The
    // reconciler knows its workflow existed and leaves it alone; an admin who fixed the cause
    // starts it again.
    assert_eq!(system.campaign(&campaign).await?["status"], "ACTIVE");
    replay_run(&system, &campaign).await?;
    system.shutdown().await;
    Ok(())
}

/// Replays the campaign's (last run's) history against the current workflow code.
async fn replay_run(system: &System, campaign: &str) -> Result<()> {
    let history = system
        .client
        .get_workflow_handle::<pidgr_workflows::CampaignWorkflow>(pidgr_workflows::workflow_id(
            campaign,
        ))
        .fetch_history(Default::default())
        .to_json()
        .await?;
    crate::replay(&history, pidgr::data_converter(&system.config)?).await
}
