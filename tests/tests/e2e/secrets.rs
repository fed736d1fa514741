//! Secrets of a CALL_WEBHOOK: a header value reaches its receiver and nowhere else — not the
//! workflow's history, not an API answer, not the activity log — and the webhook URL's path
//! never shows in the activity log. A header secret the worker cannot open fails the step once,
//! visibly, instead of being retried.

use anyhow::{Context, Result, ensure};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Options, Receiver, System, example_definition};

/// What answers show in place of a header value.
const MASK: &str = "••••••";

/// The campaign's history as `temporal workflow show --output json` prints it (no codec server:
/// what any Web UI or CLI user of the namespace reads).
async fn workflow_show(system: &System, campaign: &str) -> Result<Value> {
    let shown = system
        .workflow_show(&pidgr_workflows::workflow_id(campaign), &[])
        .await?;
    Ok(serde_json::from_str(&shown)?)
}

/// Text that holds `needle` in clear, or base64-encoded as payload data is shown.
fn shows(haystack: &str, needle: &str) -> bool {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(needle);
    // A base64 text's alignment depends on what precedes it: look for a middle stretch.
    haystack.contains(needle) || haystack.contains(&encoded[4..encoded.len() - 4])
}

fn with_header(webhook_url: &str, authorization: &str) -> Value {
    let mut definition = example_definition("1s", "1s", webhook_url);
    definition["steps"][5]["config"]["headers"] = json!({ "Authorization": authorization });
    definition
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_header_secret_reaches_the_receiver_and_shows_nowhere_else() -> Result<()> {
    let token = format!("tok{}", uuid::Uuid::new_v4().simple());
    let authorization = format!("Bearer {token}");
    let mut receiver = Receiver::start(Some(0)).await?;
    let system = System::start(Options::default()).await?;
    let path = receiver
        .url
        .split_once("//")
        .unwrap()
        .1
        .split_once('/')
        .unwrap()
        .1;
    let path = format!("/{path}");

    // A stored definition: every answer shows the header's name, its value masked.
    let definition = with_header(&receiver.url, &authorization);
    let created = system
        .create(
            "/v1/workflow-definitions",
            json!({ "name": "Report", "definition": definition }),
        )
        .await?;
    let id = created["id"].as_str().context("definition id")?;
    assert_eq!(
        created["latest"]["definition"]["steps"][5]["config"]["headers"],
        json!({ "Authorization": MASK })
    );
    let mut answers = vec![created.clone()];
    for route in [
        format!("/v1/workflow-definitions/{id}"),
        format!("/v1/workflow-definitions/{id}/versions"),
        format!("/v1/workflow-definitions/{id}/versions/1"),
    ] {
        answers.push(system.get(&route).await?);
    }
    let (_, validated) = system
        .post(
            "/v1/workflow-definitions/validate",
            json!({ "definition": definition }),
        )
        .await?;
    answers.push(validated);
    // The mask sent back is refused, with a pointer, rather than taken for the stored value.
    let (status, refused) = system
        .post(
            &format!("/v1/workflow-definitions/{id}/versions"),
            json!({ "definition": with_header(&receiver.url, MASK) }),
        )
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(
        refused
            .to_string()
            .contains("/definition/steps/5/config/headers/Authorization"),
        "{refused}"
    );

    // A campaign with the header inline: the receiver gets the real value.
    let campaign = system.start_campaign(&["a"], definition).await?;
    system.until_status(&campaign, "COMPLETED").await?;
    let request = receiver.next().await?;
    assert_eq!(request.headers["authorization"], authorization.as_str());
    // The campaign's own answer shows the inline definition it runs, the value masked too.
    let shown = system.campaign(&campaign).await?;
    assert_eq!(
        shown["definition"]["steps"][5]["config"]["headers"],
        json!({ "Authorization": MASK })
    );
    assert!(!shown.to_string().contains(&token), "{shown}");

    // What the workflow was given (the stored definition it starts from) holds a reference.
    let stored = system.store.get_campaign(&system.org_id, &campaign).await?;
    assert!(!stored.definition.contains(&token), "{}", stored.definition);
    let stored_definition: Value = serde_json::from_str(&stored.definition)?;
    let reference = stored_definition["steps"][5]["config"]["headers"]["Authorization"]
        .as_str()
        .context("the header")?;
    assert!(
        pidgr_store::header_secret_id(reference).is_some(),
        "{reference}"
    );

    // Temporal's history, as any of its users reads it.
    let history = workflow_show(&system, &campaign).await?.to_string();
    assert!(
        history.contains("CALL_WEBHOOK"),
        "not the campaign's history"
    );
    assert!(!shows(&history, &token), "the secret is in the history");

    // Every API answer about the campaign.
    answers.push(system.campaign(&campaign).await?);
    answers.push(json!(system.deliveries(&campaign).await?));
    let activity = system.activity(&campaign).await?;
    answers.push(json!(activity));
    for answer in &answers {
        assert!(!answer.to_string().contains(&token), "{answer}");
    }

    // The activity log names the receiver by scheme, host and port only.
    let attempt = activity
        .iter()
        .find(|e| e["kind"] == "webhook_attempt")
        .context("a webhook attempt")?;
    let host = receiver.url.split_once(&path).unwrap().0;
    assert_eq!(attempt["details"]["url"], format!("{host}/…"));
    let log = json!(activity).to_string();
    assert!(!log.contains(&path), "{log}");
    system.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_secret_that_cannot_be_opened_fails_the_step_once_and_the_campaign_goes_on()
-> Result<()> {
    let mut receiver = Receiver::start(Some(0)).await?;
    let system = System::start(Options {
        webhook_max_attempts: 5,
        ..Options::default()
    })
    .await?;
    let group = system.group_of(&["a"]).await?;
    let campaign = system
        .create_campaign_for(&group, with_header(&receiver.url, "Bearer x"))
        .await?;
    // Every stored secret re-sealed under a key this system's worker does not hold, as when
    // a key was rotated and a worker still runs with the old one alone.
    let rotated = system.store.clone().with_keyring(pidgr_store::Keyring::new(
        pidgr_store::SecretKey::generate(),
        vec![pidgr_store::SecretKey::from_hex(
            system
                .config
                .secret_key
                .as_deref()
                .context("the system's key")?,
        )?],
    ));
    let report = rotated.rotate_secret_key(100).await?;
    assert!(report.tables.iter().any(|t| t.resealed > 0), "{report:?}");
    system.start_draft(&campaign).await?;

    let done = system.until_status(&campaign, "COMPLETED").await?;
    assert_eq!(done["status"], "COMPLETED");
    let activity = system.activity(&campaign).await?;
    let failed = activity
        .iter()
        .find(|e| e["kind"] == "webhook_failed")
        .context("a webhook_failed entry")?;
    assert_eq!(failed["step_id"], "report");
    assert!(
        failed["message"]
            .as_str()
            .unwrap_or("")
            .contains("server key"),
        "{failed}"
    );
    assert!(
        !activity.iter().any(|e| e["kind"] == "webhook_attempt"),
        "nothing was POSTed"
    );
    assert!(
        receiver.requests.try_recv().is_err(),
        "nothing was received"
    );

    // One attempt, not the five the policy allows: the failure was final.
    let history = workflow_show(&system, &campaign).await?;
    let events = history["events"].as_array().context("events")?;
    let scheduled = events
        .iter()
        .find(|e| {
            e["activityTaskScheduledEventAttributes"]["activityType"]["name"] == "CALL_WEBHOOK"
        })
        .context("the CALL_WEBHOOK activity")?;
    let scheduled_id = scheduled["eventId"].clone();
    let started = events
        .iter()
        .find(|e| e["activityTaskStartedEventAttributes"]["scheduledEventId"] == scheduled_id)
        .context("its start")?;
    assert_eq!(started["activityTaskStartedEventAttributes"]["attempt"], 1);
    assert!(
        events
            .iter()
            .any(|e| e["activityTaskFailedEventAttributes"]["scheduledEventId"] == scheduled_id),
        "the activity failed"
    );
    system.shutdown().await;
    Ok(())
}

/// Someone who may start workflows in the Temporal namespace (but not read the database) forges
/// a campaign workflow's input: a real campaign of the organisation, the reference of another
/// campaign's header secret, and a URL of their own. The CALL_WEBHOOK activity takes the step
/// from the campaign's stored definition instead, so the forged URL gets nothing and the
/// campaign's own receiver gets no secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_workflow_input_cannot_send_a_header_secret_to_another_address() -> Result<()> {
    use temporalio_client::{WorkflowGetResultOptions, WorkflowStartOptions};

    let token = format!("tok{}", uuid::Uuid::new_v4().simple());
    let holder_receiver = Receiver::start(Some(0)).await?;
    let mut vehicle_receiver = Receiver::start(Some(0)).await?;
    let mut attacker = Receiver::start(Some(0)).await?;
    let system = System::start(Options::default()).await?;
    let group = system.group_of(&["a"]).await?;

    // The campaign that holds the secret: a draft, never started.
    let holder = system
        .create_campaign_for(
            &group,
            with_header(&holder_receiver.url, &format!("Bearer {token}")),
        )
        .await?;
    let stored = system.store.get_campaign(&system.org_id, &holder).await?;
    let stored: Value = serde_json::from_str(&stored.definition)?;
    let reference = stored["steps"][5]["config"]["headers"]["Authorization"]
        .as_str()
        .context("the holder's header reference")?
        .to_owned();
    ensure!(pidgr_store::header_secret_id(&reference).is_some());

    // Another campaign of the organisation, run to its end: its webhook sends its own header.
    let vehicle = system
        .start_campaign_for(
            &group,
            example_definition("1s", "1s", &vehicle_receiver.url),
        )
        .await?;
    system.until_status(&vehicle, "COMPLETED").await?;
    let own = vehicle_receiver.next().await?;
    ensure!(own.headers["authorization"] == "Bearer s3cret");

    // The forged input: the vehicle campaign, the holder's secret, the attacker's URL.
    let input: pidgr_workflows::CampaignInput = serde_json::from_value(json!({
        "campaign": { "org_id": system.org_id, "campaign_id": vehicle },
        "name": "forged",
        "definition": {
            "version": 1, "start": "report",
            "steps": [{ "id": "report", "type": "CALL_WEBHOOK",
                        "config": { "name": "exfiltrate", "url": attacker.url,
                                    "headers": { "Authorization": reference } },
                        "transitions": {} }]
        },
    }))?;
    let workflow_id = format!("forged-{}", uuid::Uuid::new_v4().simple());
    let options =
        WorkflowStartOptions::new(system.config.task_queue.clone(), workflow_id.clone()).build();
    system
        .client
        .start_workflow(pidgr_workflows::CampaignWorkflow::run, input, options)
        .await?;
    let result = system
        .client
        .get_workflow_handle::<pidgr_workflows::CampaignWorkflow>(workflow_id)
        .get_result(WorkflowGetResultOptions::default())
        .await;

    // The step ran as the vehicle's stored definition has it: its own receiver, its own header.
    let sent = vehicle_receiver.next().await?;
    ensure!(
        sent.headers["authorization"] == "Bearer s3cret",
        "the vehicle's receiver got another header: {:?} (workflow: {result:?})",
        sent.headers
    );
    ensure!(!sent.raw.windows(token.len()).any(|w| w == token.as_bytes()));
    ensure!(
        sent.body["campaign_name"] != "forged",
        "the report names the campaign as stored, not as the forged input does: {}",
        sent.body
    );
    // The workflow has closed, so any POST to the forged URL would have arrived by now.
    ensure!(
        attacker.requests.try_recv().is_err(),
        "the forged URL received a request (workflow: {result:?})"
    );
    system.shutdown().await;
    Ok(())
}
