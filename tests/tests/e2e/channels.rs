//! Delivery channels end to end: the generic webhook channel's signed events and their retry
//! schedule (1 s, 5 s, 30 s), the SSRF rules when a URL is saved and when it is used, and push through
//! local fakes that speak FCM HTTP v1 and APNs.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, ensure};
use axum::http::StatusCode;
use hmac::{Hmac, Mac};
use pidgr_outbound::{NameResolver, ResolveFuture};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::harness::{Options, PushUrls, Received, Receiver, System, until};

/// The channel's receiver check (the Node.js one in docs/webhooks.md), line for line: HMAC-SHA256 of the raw body with the secret, hex
/// digest, both sides decoded from hex, equal lengths and a constant-time comparison.
fn verify_pidgr_signature(raw_body: &[u8], signature_header: Option<&str>, secret: &str) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key size");
    mac.update(raw_body);
    let expected = hex::encode(mac.finalize().into_bytes());
    // Buffer.from(x, "hex") stops at the first byte that is not hex; an invalid header yields
    // a shorter buffer, which the length check then refuses.
    let a = hex::decode(&expected).unwrap_or_default();
    let b = hex::decode(signature_header.unwrap_or("")).unwrap_or_default();
    a.len() == b.len() && timing_safe_equal(&a, &b)
}

/// `crypto.timingSafeEqual`: looks at every byte whatever it finds.
fn timing_safe_equal(a: &[u8], b: &[u8]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn signature(request: &Received) -> Option<&str> {
    request
        .headers
        .get("x-pidgr-signature")
        .and_then(|v| v.to_str().ok())
}

/// Notifies through the webhook channel only, then ends.
fn webhook_only() -> Value {
    json!({
        "version": 1,
        "steps": [
            { "id": "notify", "type": "SEND_NOTIFICATION",
              "config": { "channels": ["webhook"], "variables": { "deadline": "Friday" } },
              "transitions": {} }
        ]
    })
}

async fn configure_channel(system: &System, url: &str) -> Result<String> {
    let (status, channel) = system
        .call(
            Method::PUT,
            "/v1/webhook-channel",
            Some(json!({ "url": url })),
        )
        .await?;
    ensure!(status == StatusCode::CREATED, "{status}: {channel}");
    Ok(channel["secret"].as_str().context("secret")?.to_owned())
}

fn channel_attempts(activity: &[Value]) -> Vec<&Value> {
    activity
        .iter()
        .filter(|e| e["kind"] == "channel_event_attempt")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_events_verify_with_the_published_check_and_rotation_signs_the_next_send()
-> Result<()> {
    let mut receiver = Receiver::start(Some(0)).await?;
    let system = System::start(Options::default()).await?;
    let first_secret = configure_channel(&system, &receiver.url).await?;
    let users = ["ada", "bob", "cy"];
    let campaign = system.start_campaign(&users, webhook_only()).await?;
    system.until_status(&campaign, "COMPLETED").await?;

    let mut seen = BTreeMap::new();
    for _ in users {
        let request = receiver.next().await?;
        ensure!(
            verify_pidgr_signature(&request.raw, signature(&request), &first_secret),
            "the published check accepts {}",
            request.body
        );
        // One byte changed anywhere in the body: refused.
        let mut altered = request.raw.to_vec();
        let last = altered.len() - 2;
        altered[last] ^= 0x01;
        ensure!(!verify_pidgr_signature(
            &altered,
            signature(&request),
            &first_secret
        ));
        ensure!(!verify_pidgr_signature(&request.raw, None, &first_secret));
        // Exactly the four fields of the contract; no content leaves the system.
        let fields: Vec<&str> = request
            .body
            .as_object()
            .context("an object")?
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            ["campaign_id", "deeplink_url", "occurred_at", "user_id"]
        );
        assert_eq!(request.body["campaign_id"], campaign.as_str());
        let occurred = request.body["occurred_at"]
            .as_str()
            .context("occurred_at")?;
        chrono::DateTime::parse_from_rfc3339(occurred)?;
        // The deeplink resolves through the API to this recipient's delivery.
        let link = request.body["deeplink_url"].as_str().context("deeplink")?;
        let code = link.rsplit('/').next().context("code")?;
        let resolved = system.get(&format!("/c/{code}")).await?;
        assert_eq!(resolved["campaign"]["id"], campaign.as_str(), "{resolved}");
        assert_eq!(resolved["delivery"]["user_id"], request.body["user_id"]);
        seen.insert(
            request.body["user_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            request.raw.len(),
        );
    }
    assert_eq!(seen.keys().map(String::as_str).collect::<Vec<_>>(), users);
    let deliveries = system.deliveries(&campaign).await?;
    assert!(
        deliveries
            .iter()
            .all(|d| d["status"] == "MISSED" && d["sent_at"].is_string()),
        "reached by the channel, then unacknowledged at the end: {deliveries:?}"
    );
    let activity = system.activity(&campaign).await?;
    let attempts = channel_attempts(&activity);
    assert_eq!(attempts.len(), 3, "{activity:?}");
    for attempt in &attempts {
        assert_eq!(attempt["details"]["status"], 200, "{attempt}");
        assert_eq!(attempt["details"]["attempt"], 1);
        assert!(attempt["details"]["duration_ms"].is_u64(), "{attempt}");
    }

    // Rotation: the next campaign's events verify with the new secret only.
    let (status, rotated) = system
        .call(Method::POST, "/v1/webhook-channel/rotate-secret", None)
        .await?;
    ensure!(status == StatusCode::OK, "{rotated}");
    let second_secret = rotated["secret"].as_str().context("secret")?.to_owned();
    let campaign = system.start_campaign(&["ada"], webhook_only()).await?;
    system.until_status(&campaign, "COMPLETED").await?;
    let request = receiver.next().await?;
    assert!(verify_pidgr_signature(
        &request.raw,
        signature(&request),
        &second_secret
    ));
    assert!(!verify_pidgr_signature(
        &request.raw,
        signature(&request),
        &first_secret
    ));

    // The test event: sent once, signed with the current secret, answered with the outcome.
    let (status, test) = system
        .call(Method::POST, "/v1/webhook-channel/test-event", None)
        .await?;
    ensure!(status == StatusCode::OK, "{test}");
    assert_eq!(test["delivered"], true, "{test}");
    assert_eq!(test["status"], 200);
    let request = receiver.next().await?;
    assert!(verify_pidgr_signature(
        &request.raw,
        signature(&request),
        &second_secret
    ));
    assert_eq!(request.body, test["event"]);
    assert_eq!(request.body["campaign_id"], "test");
    system.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_the_same_body_after_1s_and_5s_across_a_worker_restart()
-> Result<()> {
    let mut receiver = Receiver::start(Some(2)).await?;
    let system = System::start(Options {
        in_process_worker: false,
        ..Options::default()
    })
    .await?;
    let mut worker = system.spawn_worker_process()?;
    let secret = configure_channel(&system, &receiver.url).await?;
    let campaign = system.start_campaign(&["ada"], webhook_only()).await?;

    let first = receiver.next().await?;
    let second = receiver.next().await?;
    // Kill the worker while Temporal holds the event's third attempt (due 5 s after the
    // second): the activity's retry is scheduled and not yet started.
    let handle = system
        .client
        .get_workflow_handle::<pidgr_workflows::CampaignWorkflow>(pidgr_workflows::workflow_id(
            &campaign,
        ));
    until("the third attempt to be scheduled", || async {
        let description = handle
            .describe(temporalio_client::WorkflowDescribeOptions::default())
            .await?;
        Ok(description
            .raw_description
            .pending_activities
            .iter()
            .any(|pending| {
                pending.activity_type.as_ref().map(|t| t.name.as_str()) == Some("WEBHOOK_CHANNEL")
                    && pending.attempt == 3
                    && pending.state()
                        == temporalio_common::protos::temporal::api::enums::v1::PendingActivityState::Scheduled
            })
            .then_some(()))
    })
    .await?;
    worker.kill().await?; // SIGKILL: no graceful shutdown
    let mut replacement = system.spawn_worker_process()?;
    let third = receiver.next().await?;
    system.until_status(&campaign, "COMPLETED").await?;

    for request in [&first, &second, &third] {
        assert_eq!(
            request.raw, first.raw,
            "every retry re-sends the identical body"
        );
        assert!(verify_pidgr_signature(
            &request.raw,
            signature(request),
            &secret
        ));
    }
    assert!(
        receiver.requests.try_recv().is_err(),
        "nothing after the 2xx"
    );
    let (gap_1, gap_2) = (second.at - first.at, third.at - second.at);
    println!("gaps between attempts: {gap_1:?}, {gap_2:?} (schedule: 1 s, 5 s)");
    // Lower bounds only: a retry may never come before its delay (Temporal holds the timer).
    assert!(gap_1.as_millis() >= 1000, "{gap_1:?}");
    assert!(gap_2.as_millis() >= 5000, "{gap_2:?}");

    let activity = system.activity(&campaign).await?;
    let attempts = channel_attempts(&activity);
    let statuses: Vec<&Value> = attempts.iter().map(|a| &a["details"]["status"]).collect();
    assert_eq!(
        statuses,
        [&json!(500), &json!(500), &json!(200)],
        "{activity:?}"
    );
    assert!(
        attempts[0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("retry in 1 s"),
        "{}",
        attempts[0]
    );
    let finished = activity
        .iter()
        .find(|e| e["kind"] == "step_finished" && e["details"]["delivered"] == 1)
        .context("the channel step's summary")?;
    assert_eq!(finished["details"]["failed"], 0);
    replacement.kill().await?;
    system.shutdown().await;
    Ok(())
}

/// Answers each lookup with the next answer of a list (the last one repeats), and counts.
struct Rebinding {
    answers: Vec<Vec<IpAddr>>,
    lookups: Arc<AtomicUsize>,
}

impl NameResolver for Rebinding {
    fn resolve(&self, host: &str, port: u16) -> ResolveFuture {
        let n = self.lookups.fetch_add(1, Ordering::SeqCst);
        let answer = match host {
            "rebind.example.com" => self.answers[n.min(self.answers.len() - 1)]
                .iter()
                .map(|ip| std::net::SocketAddr::new(*ip, port))
                .collect(),
            _ => Vec::new(),
        };
        Box::pin(std::future::ready(Ok(answer)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_urls_are_refused_when_saved_and_a_rebound_name_when_used() -> Result<()> {
    let lookups = Arc::new(AtomicUsize::new(0));
    let resolver = Rebinding {
        answers: vec![
            vec!["93.184.215.14".parse()?],
            vec!["169.254.169.254".parse()?],
        ],
        lookups: lookups.clone(),
    };
    let system = System::start(Options {
        strict_urls: true,
        resolver: Some(pidgr::Resolver(Arc::new(resolver))),
        ..Options::default()
    })
    .await?;

    // Saved: the webhook channel and a CALL_WEBHOOK step refuse every form of the table.
    let table: Vec<&str> = include_str!("../../../outbound/tests/ssrf-rejected-urls.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    ensure!(table.len() >= 40);
    let mut failures = Vec::new();
    for url in &table {
        let (status, answer) = system
            .call(
                Method::PUT,
                "/v1/webhook-channel",
                Some(json!({ "url": url })),
            )
            .await?;
        if status != StatusCode::UNPROCESSABLE_ENTITY || answer["errors"][0]["pointer"] != "/url" {
            failures.push(format!("webhook channel {url}: {status} {answer}"));
        }
        let definition = json!({ "version": 1, "steps": [
            { "id": "report", "type": "CALL_WEBHOOK",
              "config": { "name": "r", "url": url }, "transitions": {} }
        ]});
        let (_, validated) = system
            .call(
                Method::POST,
                "/v1/workflow-definitions/validate",
                Some(json!({ "definition": definition })),
            )
            .await?;
        let pointers: Vec<&Value> = validated["problems"]
            .as_array()
            .map(|e| e.iter().map(|e| &e["pointer"]).collect())
            .unwrap_or_default();
        if validated["valid"] != false || !pointers.contains(&&json!("/steps/0/config/url")) {
            failures.push(format!("definition {url}: {validated}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let (status, _) = system
        .call(Method::GET, "/v1/webhook-channel", None)
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was saved");
    assert_eq!(
        lookups.load(Ordering::SeqCst),
        0,
        "refused before any lookup"
    );

    // DNS rebinding: public when saved, the metadata address when used.
    configure_channel(&system, "https://rebind.example.com/pidgr").await?;
    assert_eq!(lookups.load(Ordering::SeqCst), 1);
    let campaign = system.start_campaign(&["ada"], webhook_only()).await?;
    system.until_status(&campaign, "COMPLETED").await?;
    let activity = system.activity(&campaign).await?;
    let attempts = channel_attempts(&activity);
    assert_eq!(
        attempts.len(),
        1,
        "a blocked address is not retried: {activity:?}"
    );
    let message = attempts[0]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("failed for good")
            && message.contains(
                "rebind.example.com is not allowed: it resolves to a private or reserved address"
            )
            && !message.contains("169.254"),
        "{message}"
    );
    assert_eq!(attempts[0]["details"]["status"], Value::Null);
    system.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_reaches_good_tokens_removes_gone_ones_and_retries_quota_errors() -> Result<()> {
    use pidgr_push_fakes::{ApnsBehaviour, FakeApns, FakeFcm, FcmBehaviour};

    let (project, email) = ("acme-app", "pidgr@acme-app.iam.gserviceaccount.com");
    let service_account = pidgr_push_fakes::test_service_account_json(email, project);
    let fcm = FakeFcm::start(
        project,
        email,
        &pidgr_push_fakes::test_service_account_public_key(),
    )
    .await;
    let (p8, public_key) = pidgr_push_fakes::generate_apns_key();
    let apns = FakeApns::start("TEAM123456", "KEY1234567", &public_key).await;
    let system = System::start(Options {
        auto_devices: false,
        push_urls: Some(PushUrls {
            fcm: fcm.base_url(),
            fcm_token: fcm.token_url(),
            apns: apns.base_url(),
        }),
        ..Options::default()
    })
    .await?;
    let service_account: Value = serde_json::from_str(&service_account)?;
    let (status, saved) = system
        .call(
            Method::PUT,
            "/v1/integrations/push/fcm",
            Some(json!({ "service_account": service_account })),
        )
        .await?;
    ensure!(status == StatusCode::OK, "{saved}");
    assert_eq!(saved["summary"]["project_id"], project);
    assert!(!saved.to_string().contains("PRIVATE KEY"), "{saved}");
    let (status, saved) = system
        .call(
            Method::PUT,
            "/v1/integrations/push/apns",
            Some(json!({ "team_id": "TEAM123456", "key_id": "KEY1234567",
                         "bundle_id": "com.acme.app", "environment": "production",
                         "private_key": p8 })),
        )
        .await?;
    ensure!(status == StatusCode::OK, "{saved}");

    // ada: one good FCM token. bob: a good APNs token and an unregistered FCM one. cy: only an
    // unregistered APNs token. dan: no device. eve: FCM over quota once, then accepted. fay:
    // FCM unavailable through all of the client's attempts, so the step itself is retried.
    let members = system
        .members(&["ada", "bob", "cy", "dan", "eve", "fay"])
        .await?;
    let devices = [
        (0, "fcm", "ada-fcm"),
        (1, "apns", "bob-apns"),
        (1, "fcm", "bob-old-fcm"),
        (2, "apns", "cy-apns"),
        (4, "fcm", "eve-fcm"),
        (5, "fcm", "fay-fcm"),
    ];
    for (member, platform, token) in devices {
        let (status, device) = system
            .call(
                Method::POST,
                &format!("/v1/members/{}/devices", members[member].id),
                Some(json!({ "platform": platform, "token": token })),
            )
            .await?;
        ensure!(status == StatusCode::CREATED, "{device}");
    }
    fcm.script("bob-old-fcm", vec![FcmBehaviour::Unregistered]);
    fcm.script(
        "eve-fcm",
        vec![FcmBehaviour::QuotaExceeded {
            retry_after: Some(1),
        }],
    );
    apns.script("cy-apns", vec![ApnsBehaviour::Unregistered]);
    fcm.script("fay-fcm", vec![FcmBehaviour::Unavailable; 3]);

    let definition = json!({ "version": 1, "steps": [
        { "id": "notify", "type": "SEND_NOTIFICATION",
          "config": { "variables": { "deadline": "Friday" } }, "transitions": {} }
    ]});
    let group = system
        .store
        .create_set(&system.org_id, pidgr_store::SetKind::Group, "push")
        .await?;
    for member in &members {
        system
            .store
            .add_set_member(
                &system.org_id,
                pidgr_store::SetKind::Group,
                &group.id,
                &member.id,
            )
            .await?;
    }
    let campaign = system.start_campaign_for(&group.id, definition).await?;
    system.until_status(&campaign, "COMPLETED").await?;

    let deliveries = system.deliveries(&campaign).await?;
    let delivery = |user: &str| {
        deliveries
            .iter()
            .find(|d| d["user_id"] == user)
            .expect("a delivery")
    };
    // The campaign has ended, so a sent delivery is MISSED now (nobody acknowledged); what
    // shows it was sent is its sent_at.
    for user in ["ada", "bob", "eve", "fay"] {
        let d = delivery(user);
        assert!(d["sent_at"].is_string() && d["status"] == "MISSED", "{d}");
    }
    for user in ["cy", "dan"] {
        let d = delivery(user);
        assert_eq!(d["status"], "FAILED", "{d}");
        assert_eq!(d["failure_reason"], "no registered device", "{d}");
    }

    // One request per message; eve's twice (the quota answer, then the send); fay's three
    // times inline, then once more when Temporal retried the step — which resumed with fay:
    // the recipients recorded before were not pushed again.
    let fcm_tokens: Vec<String> = fcm.received().iter().map(|r| r.token.clone()).collect();
    let count = |token: &str| fcm_tokens.iter().filter(|t| *t == token).count();
    assert_eq!(
        (
            count("ada-fcm"),
            count("bob-old-fcm"),
            count("eve-fcm"),
            count("fay-fcm")
        ),
        (1, 1, 2, 4),
        "{fcm_tokens:?}"
    );
    assert_eq!(
        fcm.token_requests(),
        1,
        "one access token serves every send"
    );
    let ada = fcm
        .received()
        .into_iter()
        .find(|r| r.token == "ada-fcm")
        .context("ada's push")?;
    let message = &ada.body["message"];
    assert_eq!(
        message["notification"]["title"],
        "Security update for User ada"
    );
    let body = message["notification"]["body"].as_str().unwrap_or_default();
    assert!(
        body.contains("Please read and acknowledge") && !body.contains("**"),
        "{body}"
    );
    assert!(
        message["data"]["deeplink"]
            .as_str()
            .is_some_and(|link| link.contains("/c/")),
        "{message}"
    );
    let apns_requests = apns.received();
    let bob = apns_requests
        .iter()
        .find(|r| r.token == "bob-apns")
        .context("bob's push")?;
    assert_eq!(bob.headers["apns-topic"], "com.acme.app");
    assert_eq!(bob.version, pidgr_push_fakes::Version::HTTP_2);
    assert_eq!(
        bob.body["aps"]["alert"]["title"],
        "Security update for User bob"
    );

    // Gone tokens are removed; the good ones stay.
    assert_eq!(device_tokens(&system, &members[1].id).await?, ["bob-apns"]);
    assert!(device_tokens(&system, &members[2].id).await?.is_empty());
    assert_eq!(device_tokens(&system, &members[0].id).await?, ["ada-fcm"]);
    let activity = system.activity(&campaign).await?;
    let removed = activity
        .iter()
        .filter(|e| e["kind"] == "device_removed")
        .count();
    assert_eq!(removed, 2, "{activity:?}");
    let log = serde_json::to_string(&activity)?;
    ensure!(
        !log.contains("bob-old-fcm") && !log.contains("cy-apns"),
        "the activity log masks removed tokens: {log}"
    );
    system.shutdown().await;
    Ok(())
}

async fn device_tokens(system: &System, member_id: &str) -> Result<Vec<String>> {
    let list = system
        .get(&format!("/v1/members/{member_id}/devices"))
        .await?;
    Ok(list["items"]
        .as_array()
        .map(|devices| {
            devices
                .iter()
                .filter_map(|d| d["token"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}
