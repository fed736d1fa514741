//! End-to-end: campaigns run on a real Temporal dev server, against a real database, with
//! webhooks POSTed to a real receiver on loopback. Each test starts its own system.

mod api;
mod audit;
mod bounds;
mod channels;
mod codec;
mod console;
mod console_support;
mod directory_bulk;
mod durability;
mod escalation;
mod fan_out;
mod faults;
mod harness;
mod limits;
mod observability;
mod operations;
mod secrets;
mod simulation;
mod standard_webhooks;
mod tracing;
mod walkthrough;
mod webhook_parts;

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use axum::http::StatusCode;
use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::StreamExt;
use harness::{Options, Receiver, System, example_definition, until};
use pidgr_workflows::{CampaignWorkflow, Progress, workflow_id};
use serde_json::{Value, json};
use temporalio_client::{WorkflowGetResultOptions, WorkflowQueryOptions};
use temporalio_common::data_converters::DataConverter;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

/// Recorded with `PIDGR_RECORD_HISTORY=1 cargo test -p pidgr-tests --test e2e some_recipients_ack`.
const RECORDED_HISTORY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/example-campaign-history.json"
);

/// user id → delivery id
async fn delivery_ids(system: &System, campaign: &str) -> Result<BTreeMap<String, String>> {
    Ok(system
        .deliveries(campaign)
        .await?
        .into_iter()
        .map(|d| {
            (
                d["user_id"].as_str().unwrap_or_default().to_owned(),
                d["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

async fn act(system: &System, delivery: &str, action: &str) -> Result<(StatusCode, Value)> {
    system
        .post(
            &format!("/v1/deliveries/{delivery}/{action}"),
            json!({ "source": "inbox" }),
        )
        .await
}

async fn ack_all(system: &System, ids: impl IntoIterator<Item = &String>) -> Result<()> {
    for id in ids {
        let (status, body) = act(system, id, "ack").await?;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    Ok(())
}

/// Users notified by `step`, from the `log` push provider's record.
async fn pushed_users(system: &System, campaign: &str, step: &str) -> Result<Vec<String>> {
    let by_delivery: BTreeMap<String, String> = system
        .deliveries(campaign)
        .await?
        .into_iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap_or_default().to_owned(),
                d["user_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let mut users: Vec<String> = system
        .store
        .list_pushes(&system.org_id, campaign)
        .await?
        .into_iter()
        .filter(|p| p.step_id == step)
        .map(|p| by_delivery[&p.delivery_id].clone())
        .collect();
    users.sort();
    Ok(users)
}

fn kinds(activity: &[Value]) -> Vec<String> {
    activity
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["kind"].as_str().unwrap_or(""),
                e["step_id"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

/// An API timestamp as the webhook payload writes it: RFC 3339, whole seconds, `Z`.
fn to_seconds(value: &Value) -> Option<String> {
    let at: DateTime<Utc> = value.as_str()?.parse().ok()?;
    Some(at.to_rfc3339_opts(SecondsFormat::Secs, true))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn some_recipients_ack_so_only_the_others_are_reminded_and_missed() -> Result<()> {
    let mut receiver = Receiver::start(Some(0)).await?;
    let system = System::start(Options::default()).await?;
    // The first wait is long enough for the ACKs below to land before its deadline.
    let campaign = system
        .start_campaign(
            &["u1", "u2", "u3", "u4"],
            example_definition("10s", "1s", &receiver.url),
        )
        .await?;
    system.until_waiting(&campaign, "wait").await?;

    // The `progress` query answers while the workflow waits (what the Web UI shows).
    let handle = system
        .client
        .get_workflow_handle::<CampaignWorkflow>(workflow_id(&campaign));
    let progress: Progress = handle
        .query(
            CampaignWorkflow::progress,
            (),
            WorkflowQueryOptions::default(),
        )
        .await?;
    assert_eq!(progress.current_step.as_deref(), Some("wait"));
    assert_eq!(progress.step_type.as_deref(), Some("DEADLINE_CHECK"));
    assert_eq!(progress.counts.total(), 4);
    // Runs are findable by campaign id in the Web UI.
    let query = format!("PidgrCampaignId = '{campaign}' AND PidgrCampaignStatus = 'ACTIVE'");
    until("the run to be listed by its search attributes", || async {
        let found = system
            .client
            .list_workflows(query.clone(), Default::default())
            .collect::<Vec<_>>()
            .await;
        Ok((found.len() == 1).then_some(()))
    })
    .await?;

    let ids = delivery_ids(&system, &campaign).await?;
    ack_all(&system, [&ids["u1"], &ids["u2"]]).await?;
    let (status, _) = act(&system, &ids["u3"], "read").await?;
    assert_eq!(status, StatusCode::OK);

    let done = system.until_status(&campaign, "COMPLETED").await?;
    assert_eq!(
        done["counts"],
        json!({ "pending": 0, "sent": 0, "read": 0, "acknowledged": 2, "missed": 2, "failed": 0 })
    );
    // The Web UI's "current details" of the finished run say how it ended, not its last step.
    until("the run to be closed", || async {
        let description = handle.describe(Default::default()).await?;
        Ok(description
            .raw_description
            .workflow_execution_info
            .as_ref()
            .and_then(|i| i.close_time.as_ref())
            .map(|_| ()))
    })
    .await?;
    let metadata = handle
        .query(
            temporalio_client::UntypedQuery::<
                <CampaignWorkflow as temporalio_common::HasWorkflowDefinition>::Run,
            >::new("__temporal_workflow_metadata"),
            temporalio_common::data_converters::RawValue::empty(),
            WorkflowQueryOptions::default(),
        )
        .await?;
    let metadata: Value = serde_json::from_slice(&metadata.payloads[0].data)?;
    assert_eq!(
        metadata["currentDetails"], "completed: 2 of 4 acknowledged, 2 missed, 0 failed",
        "{metadata}"
    );
    assert_eq!(
        pushed_users(&system, &campaign, "notify").await?,
        ["u1", "u2", "u3", "u4"]
    );
    assert_eq!(
        pushed_users(&system, &campaign, "remind").await?,
        ["u3", "u4"]
    );

    // The push text is rendered per recipient: built-ins, step and recipient variables.
    let pushes = system.store.list_pushes(&system.org_id, &campaign).await?;
    let u3 = pushes
        .iter()
        .find(|p| p.delivery_id == ids["u3"] && p.step_id == "notify")
        .context("u3's push")?;
    assert_eq!(u3.title, "Security update for User u3");
    assert_eq!(u3.body, "Please read and acknowledge by Friday, team-u3.");

    // The webhook body matches the published outcome payload field by field.
    let request = receiver.next().await?;
    assert!(
        receiver.requests.try_recv().is_err(),
        "the webhook was called once"
    );
    assert_eq!(request.headers["authorization"], "Bearer s3cret");
    assert_eq!(request.headers["x-custom-header"], "custom-value");
    assert_eq!(request.headers["content-type"], "application/json");
    let body = request.body;
    assert_eq!(body["campaign_id"], campaign.as_str());
    assert_eq!(body["campaign_name"], "Q1 Security Update");
    assert_eq!(
        body["summary"],
        json!({ "total": 4, "acknowledged": 2, "missed": 2, "failed": 0 })
    );
    let deliveries = system.deliveries(&campaign).await?;
    let lines = body["deliveries"].as_array().context("deliveries")?;
    assert_eq!(lines.len(), 4);
    for (line, delivery) in lines.iter().zip(&deliveries) {
        let mut expected = json!({
            "delivery_id": delivery["id"],
            "user_id": delivery["user_id"],
            "status": delivery["status"],
            "sent_at": to_seconds(&delivery["sent_at"]),
        });
        for key in ["read_at", "acknowledged_at"] {
            if let Some(at) = to_seconds(&delivery[key]) {
                expected[key] = json!(at);
            }
        }
        assert_eq!(line, &expected);
    }
    let statuses: Vec<_> = lines
        .iter()
        .map(|l| {
            (
                l["user_id"].as_str().unwrap(),
                l["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("u1", "ACKNOWLEDGED"),
            ("u2", "ACKNOWLEDGED"),
            ("u3", "MISSED"),
            ("u4", "MISSED")
        ]
    );
    assert!(lines[2].get("read_at").is_some() && lines[3].get("read_at").is_none());

    let log = kinds(&system.activity(&campaign).await?);
    for expected in [
        "step_started:notify",
        "step_started:wait",
        "step_started:remind",
        "step_started:last-call",
        "step_started:missed",
        "webhook_attempt:report",
        "campaign_completed:-",
    ] {
        assert!(
            log.contains(&expected.to_owned()),
            "{expected} missing from {log:?}"
        );
    }

    // The log tells the story in sentences: who started the campaign, when and why each wait
    // ended, who was reminded and who missed, with the right plurals.
    let said: Vec<String> = system
        .activity(&campaign)
        .await?
        .iter()
        .map(|e| {
            format!(
                "{}:{}: {}",
                e["kind"].as_str().unwrap_or(""),
                e["step_id"].as_str().unwrap_or("-"),
                e["message"].as_str().unwrap_or("")
            )
        })
        .collect();
    for expected in [
        "campaign_started:-: campaign started by API key",
        "step_finished:notify: notified 4 recipients: User u1, User u2, User u3, User u4",
        "step_finished:wait: wait ended at its deadline: 2 recipients have not acknowledged",
        "step_finished:remind: reminded 2 recipients: User u3, User u4",
        "step_finished:missed: marked 2 recipients missed: User u3, User u4",
    ] {
        assert!(
            said.iter().any(|line| line.starts_with(expected)),
            "{expected:?} missing from {said:#?}"
        );
    }
    assert!(
        said.iter()
            .any(|line| line.starts_with("campaign_started:-") && line.ends_with(": 4 recipients")),
        "{said:#?}"
    );

    // The history of this run (its payloads encrypted) replays against the current workflow
    // code, with the system's data converter.
    let history = handle.fetch_history(Default::default()).to_json().await?;
    replay(&history, pidgr::data_converter(&system.config)?).await?;
    if std::env::var_os("PIDGR_RECORD_HISTORY").is_some() {
        // Recorded decrypted: this run's key dies with it, and plain payloads replay under any
        // key (the codec passes through what it did not encode).
        let history = codec::decrypt_history(&history, &pidgr::payload_cipher(&system.config)?)?;
        std::fs::create_dir_all(std::path::Path::new(RECORDED_HISTORY).parent().unwrap())?;
        std::fs::write(RECORDED_HISTORY, &history)?;
    }
    system.shutdown().await;
    Ok(())
}

async fn replay(history: &[u8], data_converter: DataConverter) -> Result<()> {
    let replayer = WorkflowReplayer::new(
        WorkflowReplayerOptions::new()
            .register_workflow::<CampaignWorkflow>()?
            .data_converter(data_converter)
            .build(),
    )?;
    let history = temporalio_client::WorkflowHistory::from_json(history)?;
    replayer
        .replay_workflow(history)
        .await
        .context("replaying the history")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_history_of_the_example_campaign_replays() -> Result<()> {
    let history =
        std::fs::read(RECORDED_HISTORY).with_context(|| format!("reading {RECORDED_HISTORY}"))?;
    // The fixture's payloads are plain (recorded before the payload codec, or decrypted when
    // recorded); it replays with the codec every process now runs, which passes through
    // payloads it did not encode.
    let cipher = pidgr::cipher_for(&pidgr_store::SecretKey::generate(), &[]);
    replay(&history, pidgr::encrypting_data_converter(cipher)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everyone_acks_before_the_deadline_so_the_wait_ends_at_once() -> Result<()> {
    let mut receiver = Receiver::start(Some(0)).await?;
    let system = System::start(Options::default()).await?;
    // An hour-long wait: only the early exit can complete this campaign within the test.
    let campaign = system
        .start_campaign(
            &["a", "b", "c"],
            example_definition("1h", "1h", &receiver.url),
        )
        .await?;
    system.until_waiting(&campaign, "wait").await?;
    let ids = delivery_ids(&system, &campaign).await?;
    ack_all(&system, ids.values()).await?;
    // ACK is idempotent.
    let (status, _) = act(&system, &ids["a"], "ack").await?;
    assert_eq!(status, StatusCode::OK);

    let done = system.until_status(&campaign, "COMPLETED").await?;
    assert_eq!(done["counts"]["acknowledged"], 3);
    assert!(pushed_users(&system, &campaign, "remind").await?.is_empty());
    let body = receiver.next().await?.body;
    assert_eq!(
        body["summary"],
        json!({ "total": 3, "acknowledged": 3, "missed": 0, "failed": 0 })
    );
    let activity = system.activity(&campaign).await?;
    let log = kinds(&activity);
    assert!(!log.iter().any(|k| k.ends_with(":remind")), "{log:?}");
    let ended = activity
        .iter()
        .find(|e| e["kind"] == "step_finished" && e["step_id"] == "wait")
        .context("the wait's end in the activity log")?;
    assert_eq!(
        ended["message"], "wait ended before its deadline: everyone acknowledged",
        "{ended}"
    );
    assert_eq!(ended["details"]["outcome"], "all_acknowledged");
    system.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_a_wait_stops_the_campaign_and_refuses_later_acks() -> Result<()> {
    let mut receiver = Receiver::start(Some(0)).await?;
    let system = System::start(Options::default()).await?;
    let campaign = system
        .start_campaign(&["a", "b"], example_definition("1h", "1h", &receiver.url))
        .await?;
    system.until_waiting(&campaign, "wait").await?;

    let (status, view) = system
        .post(&format!("/v1/campaigns/{campaign}/cancel"), json!({}))
        .await?;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["status"], "CANCELLED");
    let handle = system
        .client
        .get_workflow_handle::<CampaignWorkflow>(workflow_id(&campaign));
    let result = handle.get_result(WorkflowGetResultOptions::default()).await;
    assert!(
        result.is_err(),
        "the workflow ended cancelled, not with a result: {result:?}"
    );

    let ids = delivery_ids(&system, &campaign).await?;
    let (status, problem) = act(&system, &ids["a"], "ack").await?;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["type"], "https://pidgr.dev/problems/conflict");
    until("the cancellation in the activity log", || async {
        Ok(kinds(&system.activity(&campaign).await?)
            .contains(&"campaign_cancelled:-".to_owned())
            .then_some(()))
    })
    .await?;
    assert_eq!(system.campaign(&campaign).await?["status"], "CANCELLED");
    let activity = system.activity(&campaign).await?;
    let cancelled = activity
        .iter()
        .find(|e| e["kind"] == "campaign_cancelled")
        .context("the cancellation")?;
    // Who cancelled: the API key, by name and id.
    let message = cancelled["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("campaign cancelled through the API by API key \""),
        "{message}"
    );
    assert!(
        message.contains(cancelled["details"]["key_id"].as_str().unwrap_or("?")),
        "{cancelled}"
    );
    assert!(
        receiver.requests.try_recv().is_err(),
        "no webhook after a cancel"
    );
    system.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_fails_twice_is_retried_and_delivered_once() -> Result<()> {
    let mut receiver = Receiver::start(Some(2)).await?;
    let system = System::start(Options {
        webhook_max_attempts: 5,
        ..Options::default()
    })
    .await?;
    let campaign = system
        .start_campaign(&["a"], example_definition("1h", "1h", &receiver.url))
        .await?;
    system.until_waiting(&campaign, "wait").await?;
    ack_all(&system, delivery_ids(&system, &campaign).await?.values()).await?;
    system.until_status(&campaign, "COMPLETED").await?;

    let bodies: Vec<Value> = [
        receiver.next().await?,
        receiver.next().await?,
        receiver.next().await?,
    ]
    .into_iter()
    .map(|r| r.body)
    .collect();
    assert!(
        receiver.requests.try_recv().is_err(),
        "no call after the successful one"
    );
    assert!(
        bodies.iter().all(|b| b == &bodies[0]),
        "each retry re-sends the same body"
    );
    let log = kinds(&system.activity(&campaign).await?);
    assert_eq!(
        log.iter()
            .filter(|k| *k == "webhook_attempt:report")
            .count(),
        3,
        "{log:?}"
    );
    assert!(log.contains(&"step_finished:report".to_owned()), "{log:?}");
    assert!(
        !log.contains(&"webhook_failed:report".to_owned()),
        "{log:?}"
    );
    system.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_always_fails_is_logged_and_the_campaign_still_completes() -> Result<()> {
    let mut receiver = Receiver::start(None).await?;
    let system = System::start(Options {
        webhook_max_attempts: 3,
        ..Options::default()
    })
    .await?;
    let campaign = system
        .start_campaign(&["a", "b"], example_definition("1h", "1h", &receiver.url))
        .await?;
    system.until_waiting(&campaign, "wait").await?;
    ack_all(&system, delivery_ids(&system, &campaign).await?.values()).await?;
    system.until_status(&campaign, "COMPLETED").await?;

    for _ in 0..3 {
        receiver.next().await?;
    }
    assert!(
        receiver.requests.try_recv().is_err(),
        "exactly the configured number of attempts"
    );
    let activity = system.activity(&campaign).await?;
    let failed = activity
        .iter()
        .find(|e| e["kind"] == "webhook_failed")
        .context("a webhook_failed entry")?;
    assert_eq!(failed["step_id"], "report");
    assert!(
        failed["message"].as_str().unwrap_or("").contains("503"),
        "{failed}"
    );
    system.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_during_a_wait_is_replaced_and_the_campaign_completes() -> Result<()> {
    let mut receiver = Receiver::start(Some(0)).await?;
    let system = System::start(Options {
        in_process_worker: false,
        ..Options::default()
    })
    .await?;
    let mut worker = system.spawn_worker_process()?;
    let campaign = system
        .start_campaign(&["a", "b"], example_definition("15s", "1s", &receiver.url))
        .await?;
    system.until_waiting(&campaign, "wait").await?;

    worker.kill().await?; // SIGKILL: no graceful shutdown
    let mut replacement = system.spawn_worker_process()?;
    // The durable timer fires with nobody having acknowledged: reminder, last call, missed.
    let done = system.until_status(&campaign, "COMPLETED").await?;
    assert_eq!(done["counts"]["missed"], 2);
    assert_eq!(
        pushed_users(&system, &campaign, "notify").await?,
        ["a", "b"],
        "nobody notified twice"
    );
    assert_eq!(
        pushed_users(&system, &campaign, "remind").await?,
        ["a", "b"]
    );
    assert_eq!(receiver.next().await?.body["summary"]["missed"], 2);
    replacement.kill().await?;
    system.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_acks_keep_every_history_small() -> Result<()> {
    const RECIPIENTS: usize = 2000;
    const MAX_SIGNALS_PER_RUN: u32 = 200;
    // Every ACK signals (no coalescing), so only continue-as-new bounds the history.
    let system = System::start(Options {
        signal_interval_ms: 0,
        max_signals_per_run: MAX_SIGNALS_PER_RUN,
        // Two fan-out ranges: this test is about the signals of a wait.
        fanout_range_size: 1_000,
        ..Options::default()
    })
    .await?;
    let users: Vec<String> = (0..RECIPIENTS).map(|i| format!("user-{i:04}")).collect();
    let user_refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let definition = json!({
        "version": 1,
        "steps": [
            { "id": "notify", "type": "SEND_NOTIFICATION", "config": { "variables": { "deadline": "soon" } },
              "transitions": { "next": "wait" } },
            { "id": "wait", "type": "DEADLINE_CHECK", "config": { "duration": "1h" }, "transitions": { "deadline": "missed" } },
            { "id": "missed", "type": "MARK_MISSED" }
        ]
    });
    let campaign = system.start_campaign(&user_refs, definition).await?;
    system.until_waiting(&campaign, "wait").await?;
    let ids: Vec<String> = delivery_ids(&system, &campaign)
        .await?
        .into_values()
        .collect();
    assert_eq!(ids.len(), RECIPIENTS);
    let statuses: Vec<StatusCode> = futures_util::stream::iter(
        ids.iter()
            .map(|id| async { act(&system, id, "ack").await.map(|(s, _)| s) }),
    )
    .buffer_unordered(8)
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .collect::<Result<_>>()?;
    assert!(statuses.iter().all(|s| *s == StatusCode::OK));

    let done = system.until_status(&campaign, "COMPLETED").await?;
    assert_eq!(done["counts"]["acknowledged"], RECIPIENTS);
    // The last run knows how many runs came before it; wait until visibility lists them all.
    let handle = system
        .client
        .get_workflow_handle::<CampaignWorkflow>(workflow_id(&campaign));
    let last: Progress = handle
        .query(
            CampaignWorkflow::progress,
            (),
            WorkflowQueryOptions::default(),
        )
        .await?;
    let runs = last.continued_runs as usize + 1;
    let lengths = until("every run to be listed", || async {
        let lengths = system.history_lengths(&campaign).await?;
        Ok((lengths.len() == runs && lengths.iter().all(|l| *l > 0)).then_some(lengths))
    })
    .await?;
    eprintln!(
        "history events per run for {RECIPIENTS} ACKs, {MAX_SIGNALS_PER_RUN} signals per run: {lengths:?}"
    );
    assert!(
        lengths.len() > 1,
        "the workflow continued as new: {lengths:?}"
    );
    // Each run holds at most about one run's worth of signals plus a fixed overhead, far below
    // Temporal's 51,200-event limit whatever the number of ACKs.
    let bound = 3 * MAX_SIGNALS_PER_RUN as i64 + 100;
    assert!(
        lengths.iter().all(|l| *l <= bound),
        "a run exceeded {bound} events: {lengths:?}"
    );
    system.shutdown().await;
    Ok(())
}
