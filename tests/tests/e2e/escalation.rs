//! ESCALATE end to end: after a deadline, each manager of recipients who have not
//! acknowledged gets one signed webhook channel event with their count and a link that lists
//! exactly those reports, and one push rendered from the step's template; recipients without a
//! manager are skipped and counted.

use std::collections::BTreeMap;

use anyhow::{Context, Result, ensure};
use axum::http::StatusCode;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::harness::{Options, Receiver, System, postgres_configured};

/// A member written straight to the store, with a device for the `log` push provider.
async fn member(system: &System, external_id: &str, manager: Option<&str>) -> Result<String> {
    let member = system
        .store
        .create_member(
            &system.org_id,
            pidgr_store::NewMember {
                external_id: external_id.to_owned(),
                email: format!("{external_id}@example.com"),
                display_name: format!("User {external_id}"),
                attributes: [("team".to_owned(), format!("team-{external_id}"))].into(),
                role_id: "member".into(),
                manager_id: manager.map(str::to_owned),
            },
        )
        .await?;
    system
        .store
        .register_device(
            &system.org_id,
            &member.id,
            pidgr_store::Platform::Fcm,
            &format!("phone-{external_id}"),
        )
        .await?;
    Ok(member.id)
}

fn definition(template_id: &Value, template_version: i64) -> Value {
    json!({
        "version": 1,
        "steps": [
            { "id": "notify", "type": "SEND_NOTIFICATION",
              "config": { "variables": { "deadline": "Friday" } },
              "transitions": { "next": "wait" } },
            { "id": "wait", "type": "DEADLINE_CHECK", "config": { "duration": "10s" },
              "transitions": { "deadline": "escalate" } },
            { "id": "escalate", "type": "ESCALATE",
              "config": { "channels": ["webhook", "push"], "template_id": template_id,
                          "template_version": template_version,
                          "variables": { "deadline": "Friday" } } }
        ]
    })
}

fn signed_with(secret: &str, raw: &[u8], header: Option<&str>) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key size");
    mac.update(raw);
    header == Some(hex::encode(mac.finalize().into_bytes()).as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managers_of_unacknowledged_reports_are_told_once_with_a_link_to_them() -> Result<()> {
    escalation_on(Options::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managers_are_told_once_on_postgres() -> Result<()> {
    if !postgres_configured("managers_are_told_once_on_postgres") {
        return Ok(());
    }
    escalation_on(Options {
        postgres: true,
        ..Options::default()
    })
    .await
}

async fn escalation_on(options: Options) -> Result<()> {
    let mut receiver = Receiver::start(Some(0)).await?;
    let system = System::start(options).await?;
    let (status, channel) = system
        .call(
            Method::PUT,
            "/v1/webhook-channel",
            Some(json!({ "url": receiver.url })),
        )
        .await?;
    ensure!(status == StatusCode::CREATED, "{status}: {channel}");
    let secret = channel["secret"].as_str().context("secret")?.to_owned();

    // ada manages a1 and a2, bob manages b1; lone has no manager. The managers are not in
    // the audience.
    let ada = member(&system, "ada", None).await?;
    let bob = member(&system, "bob", None).await?;
    member(&system, "a1", Some(&ada)).await?;
    member(&system, "a2", Some(&ada)).await?;
    member(&system, "b1", Some(&bob)).await?;
    member(&system, "lone", None).await?;
    let group = system.group_of(&["a1", "a2", "b1", "lone"]).await?;
    let template = system
        .create(
            "/v1/templates",
            json!({
                "name": "escalation",
                "title": "{{unacknowledged_count}} of your reports have not acknowledged",
                "body": "Hi {{name}}, see who by {{deadline}}: {{deeplink}}",
            }),
        )
        .await?;

    let message = system
        .create(
            "/v1/templates",
            json!({ "name": "message", "title": "Please read", "body": "By {{deadline}}." }),
        )
        .await?;

    // A template or version the organisation lacks is refused, pointing into the step.
    for (id, version, pointer) in [
        (json!("no-such-template"), 1, "template_id"),
        (template["id"].clone(), 2, "template_version"),
    ] {
        let (status, problem) = system
            .post(
                "/v1/campaigns",
                json!({
                    "name": "Escalation", "title": "Escalation", "template_id": message["id"],
                    "audience": { "groups": [group] },
                    "definition": definition(&id, version),
                }),
            )
            .await?;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        let pointers: Vec<&str> = problem["errors"]
            .as_array()
            .context("the problems")?
            .iter()
            .filter_map(|p| p["pointer"].as_str())
            .collect();
        assert_eq!(
            pointers,
            [format!("/definition/steps/2/config/{pointer}")],
            "{problem}"
        );
    }

    let campaign = system
        .start_campaign_for(&group, definition(&template["id"], 1))
        .await?;
    system.until_waiting(&campaign, "wait").await?;
    let deliveries: BTreeMap<String, String> = system
        .deliveries(&campaign)
        .await?
        .into_iter()
        .map(|d| {
            (
                d["user_id"].as_str().unwrap_or_default().to_owned(),
                d["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let (status, acked) = system
        .post(
            &format!("/v1/deliveries/{}/ack", deliveries["a1"]),
            json!({}),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{acked}");
    system.until_status(&campaign, "COMPLETED").await?;

    // One signed event per manager, with their count; the link lists exactly their reports
    // that have not acknowledged.
    let mut told = BTreeMap::new();
    for _ in 0..2 {
        let request = receiver.next().await?;
        let header = request
            .headers
            .get("x-pidgr-signature")
            .and_then(|v| v.to_str().ok());
        ensure!(
            signed_with(&secret, &request.raw, header),
            "signed: {}",
            request.body
        );
        assert!(request.headers.contains_key("webhook-signature"));
        let body = &request.body;
        assert_eq!(body["type"], "escalation", "{body}");
        assert_eq!(body["campaign_id"], campaign.as_str());
        let fields: Vec<&str> = body
            .as_object()
            .context("an object")?
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            [
                "campaign_id",
                "deeplink_url",
                "occurred_at",
                "type",
                "unacknowledged_count",
                "user_id"
            ]
        );
        let link = body["deeplink_url"].as_str().context("deeplink")?;
        assert!(link.contains("/v1/escalations/"), "{link}");
        let code = link.rsplit('/').next().context("code")?;
        let listed = system.get(&format!("/v1/escalations/{code}")).await?;
        let reports: Vec<&str> = listed["unacknowledged"]
            .as_array()
            .context("unacknowledged")?
            .iter()
            .filter_map(|r| r["user_id"].as_str())
            .collect();
        assert_eq!(listed["campaign"]["id"], campaign.as_str(), "{listed}");
        assert_eq!(listed["escalation"]["manager_user_id"], body["user_id"]);
        told.insert(
            body["user_id"].as_str().unwrap_or_default().to_owned(),
            (body["unacknowledged_count"].as_u64(), reports.join(",")),
        );
    }
    assert_eq!(
        told,
        BTreeMap::from([
            ("ada".to_owned(), (Some(1), "a2".to_owned())),
            ("bob".to_owned(), (Some(1), "b1".to_owned())),
        ])
    );
    assert!(
        receiver.requests.try_recv().is_err(),
        "each manager was told once"
    );
    // The push is the escalation template rendered for the manager, with the count, the
    // step's variables and the same link.
    let mut pushed: Vec<(String, String)> = system
        .store
        .list_pushes(&system.org_id, &campaign)
        .await?
        .into_iter()
        .filter(|p| p.step_id == "escalate")
        .map(|p| {
            assert!(
                p.body.ends_with(&p.deeplink) && p.deeplink.contains("/v1/escalations/"),
                "{p:?}"
            );
            (p.title, p.body.replace(&p.deeplink, "<link>"))
        })
        .collect();
    pushed.sort();
    assert_eq!(
        pushed,
        [
            (
                "1 of your reports have not acknowledged".to_owned(),
                "Hi User ada, see who by Friday: <link>".to_owned()
            ),
            (
                "1 of your reports have not acknowledged".to_owned(),
                "Hi User bob, see who by Friday: <link>".to_owned()
            ),
        ]
    );
    // A made-up code is no escalation.
    let (status, _) = system
        .call(Method::GET, "/v1/escalations/0000", None)
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let activity = system.activity(&campaign).await?;
    let escalated = activity
        .iter()
        .find(|e| e["kind"] == "step_finished" && e["step_id"] == "escalate")
        .context("the escalation in the activity log")?;
    assert_eq!(
        escalated["message"],
        "Escalated to 2 managers for 2 unresolved deliveries; 1 without a manager skipped",
        "{escalated}"
    );
    assert_eq!(escalated["details"]["without_manager"], 1);
    system.shutdown().await;
    Ok(())
}
