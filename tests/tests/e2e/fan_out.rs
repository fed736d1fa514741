//! The partitioned fan-out: a step's audience split into ranges that run as parallel
//! activities, a run that continues as new between ranges when its history grows long, and a
//! worker killed in the middle of a fan-out, on SQLite and on PostgreSQL.

use std::collections::BTreeMap;

use anyhow::{Result, ensure};
use axum::http::StatusCode;
use pidgr_push_fakes::FakeFcm;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Options, PushUrls, System, postgres_configured, until};
use crate::pushed_users;

pub(crate) fn notify_then_missed() -> Value {
    json!({
        "version": 1,
        "steps": [
            { "id": "notify", "type": "SEND_NOTIFICATION", "config": { "variables": { "deadline": "soon" } },
              "transitions": { "next": "missed" } },
            { "id": "missed", "type": "MARK_MISSED" }
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_in_many_ranges_notifies_everyone_once_across_continued_runs() -> Result<()> {
    const RECIPIENTS: usize = 600;
    // 24 ranges of 25; a run may hold only about 100 events, so the fan-out must continue as
    // new between ranges, carrying the ranges done.
    let system = System::start(Options {
        fanout_range_size: 25,
        max_history_events: 100,
        ..Options::default()
    })
    .await?;
    let users: Vec<String> = (0..RECIPIENTS).map(|i| format!("user-{i:04}")).collect();
    let user_refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let campaign = system
        .start_campaign(&user_refs, notify_then_missed())
        .await?;
    let done = system.until_status(&campaign, "COMPLETED").await?;
    assert_eq!(done["counts"]["missed"], RECIPIENTS, "{done}");
    assert_eq!(
        pushed_users(&system, &campaign, "notify").await?,
        users,
        "everyone pushed exactly once, in no particular order"
    );
    let lengths = system.history_lengths(&campaign).await?;
    eprintln!("history events per run: {lengths:?}");
    ensure!(
        lengths.len() > 1,
        "the fan-out continued as new: {lengths:?}"
    );
    // The bound, plus what the ranges still running when it was reached add.
    ensure!(
        lengths.iter().all(|l| *l <= 200),
        "every run stays near the bound: {lengths:?}"
    );
    let activity = system
        .get(&format!("/v1/campaigns/{campaign}/activity?limit=100"))
        .await?;
    let finished: Vec<&Value> = activity["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "step_finished" && e["step_id"] == "notify")
        .collect();
    assert_eq!(finished.len(), 1, "one summary for the step: {activity}");
    assert_eq!(finished[0]["details"]["notified"], RECIPIENTS);
    system.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_who_lost_a_variable_after_creation_fails_with_the_reason() -> Result<()> {
    let system = System::start(Options::default()).await?;
    let group = system.group_of(&["ann", "bob"]).await?;
    // The template uses {{team}}, every member's attribute when the campaign is created.
    let campaign = system
        .create_campaign_for(&group, notify_then_missed())
        .await?;
    let bob = &system.members(&["bob"]).await?[0];
    system
        .store
        .update_member(
            &system.org_id,
            &bob.id,
            pidgr_store::MemberUpdate {
                email: None,
                display_name: None,
                attributes: Some(BTreeMap::new()),
                role_id: None,
                manager_id: None,
            },
        )
        .await?;
    system.start_draft(&campaign).await?;
    let done = system.until_status(&campaign, "COMPLETED").await?;
    assert_eq!(
        (
            done["counts"]["missed"].as_u64(),
            done["counts"]["failed"].as_u64()
        ),
        (Some(1), Some(1)),
        "{done}"
    );
    let deliveries = system.deliveries(&campaign).await?;
    let bob_delivery = deliveries
        .iter()
        .find(|d| d["user_id"] == "bob")
        .expect("bob's delivery");
    assert_eq!(
        bob_delivery["failure_reason"],
        "the message uses {{team}}, which has no value for this recipient"
    );
    assert_eq!(
        pushed_users(&system, &campaign, "notify").await?,
        ["ann"],
        "only the recipient whose message is whole is pushed"
    );
    // The activity log says who failed and why, counted per reason.
    let activity = system
        .get(&format!("/v1/campaigns/{campaign}/activity?limit=100"))
        .await?;
    let written = activity["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["kind"] == "step_finished" && e["step_id"].is_null())
        .expect("the entry of the written deliveries");
    assert_eq!(
        written["message"],
        "2 deliveries written from the audience; 1 recipient failed: the message uses {{team}}, \
         which has no value for this recipient (1: User bob)",
        "{written}"
    );
    system.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_fan_out_loses_nobody_on_sqlite() -> Result<()> {
    killed_worker_mid_fan_out(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_fan_out_loses_nobody_on_postgres() -> Result<()> {
    if !postgres_configured("a_worker_killed_mid_fan_out_loses_nobody_on_postgres") {
        return Ok(());
    }
    killed_worker_mid_fan_out(true).await
}

/// A `pidgr worker` process is SIGKILLed once part of the audience is SENT; a second one takes
/// the ranges over when their heartbeats time out. Everyone ends up notified, and the only
/// duplicates are pages that were in flight (at most one page per running range), each with
/// the collapse id of its first push so the phone shows it once.
async fn killed_worker_mid_fan_out(postgres: bool) -> Result<()> {
    const RECIPIENTS: usize = 400;
    const RANGE: usize = 25;
    const PARALLEL_RANGES: usize = 4;
    let (fcm, system) = with_fake_fcm(
        // Slow enough that a page is still in flight when the worker dies.
        std::time::Duration::from_millis(300),
        Options {
            in_process_worker: false,
            fanout_range_size: RANGE as u64,
            postgres,
            ..Options::default()
        },
    )
    .await?;

    let mut first = system.spawn_worker_process()?;
    let users: Vec<String> = (0..RECIPIENTS).map(|i| format!("user-{i:04}")).collect();
    let user_refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let campaign = system
        .start_campaign(&user_refs, notify_then_missed())
        .await?;
    until("part of the audience to be SENT", || async {
        let view = system.campaign(&campaign).await?;
        let sent = view["counts"]["sent"].as_u64().unwrap_or(0);
        Ok((sent >= 2 * RANGE as u64).then_some(()))
    })
    .await?;
    first.kill().await?;
    let sent_at_kill = system.campaign(&campaign).await?["counts"]["sent"]
        .as_u64()
        .unwrap_or(0);
    ensure!(
        sent_at_kill < RECIPIENTS as u64,
        "the worker died mid fan-out ({sent_at_kill} sent)"
    );
    let _second = system.spawn_worker_process()?;
    let done = system.until_status(&campaign, "COMPLETED").await?;
    assert_eq!(done["counts"]["missed"], RECIPIENTS, "nobody lost: {done}");

    let duplicates = everyone_pushed_once_or_collapsed(&fcm, &users)?;
    eprintln!("{sent_at_kill} SENT at the kill; {duplicates} pushes sent twice");
    ensure!(
        duplicates <= RANGE * PARALLEL_RANGES,
        "duplicates bounded by the pages in flight: {duplicates}"
    );
    system.shutdown().await;
    Ok(())
}

/// A system whose pushes go to a fake FCM answering after `latency`, with FCM credentials
/// saved; its members get FCM devices (`phone-<user>`).
pub(crate) async fn with_fake_fcm(
    latency: std::time::Duration,
    options: Options,
) -> Result<(FakeFcm, System)> {
    let (project, email) = ("acme-app", "pidgr@acme-app.iam.gserviceaccount.com");
    let fcm = FakeFcm::start(
        project,
        email,
        &pidgr_push_fakes::test_service_account_public_key(),
    )
    .await;
    fcm.set_latency(latency);
    let system = System::start(Options {
        push_urls: Some(PushUrls {
            fcm: fcm.base_url(),
            fcm_token: fcm.token_url(),
            apns: fcm.base_url(),
        }),
        ..options
    })
    .await?;
    let service_account: Value =
        serde_json::from_str(&pidgr_push_fakes::test_service_account_json(email, project))?;
    let (status, saved) = system
        .call(
            Method::PUT,
            "/v1/integrations/push/fcm",
            Some(json!({ "service_account": service_account })),
        )
        .await?;
    ensure!(status == StatusCode::OK, "{saved}");
    Ok((fcm, system))
}

/// Checks that every user's phone got a push and that each repeated push carried the collapse
/// id of the first (so the phone shows it once); answers how many pushes were repeats.
pub(crate) fn everyone_pushed_once_or_collapsed(fcm: &FakeFcm, users: &[String]) -> Result<usize> {
    let mut pushes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for received in fcm.received() {
        let collapse = received.body["message"]["android"]["collapse_key"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        pushes.entry(received.token).or_default().push(collapse);
    }
    let tokens: Vec<String> = users.iter().map(|u| format!("phone-{u}")).collect();
    ensure!(
        pushes.keys().cloned().collect::<Vec<_>>() == tokens,
        "every recipient was pushed ({} of {})",
        pushes.len(),
        tokens.len()
    );
    for (token, collapse_ids) in &pushes {
        ensure!(
            collapse_ids
                .iter()
                .all(|id| !id.is_empty() && *id == collapse_ids[0]),
            "{token}: a repeated push merges with the first: {collapse_ids:?}"
        );
    }
    Ok(pushes.values().map(|p| p.len() - 1).sum())
}
