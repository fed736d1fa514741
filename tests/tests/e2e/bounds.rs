//! Hostile but legitimate admins: a template that multiplies into gigabytes, inbox pages of
//! messages near the size cap, and directory readers who should not see push tokens whole.

use anyhow::{Context, Result, ensure};
use axum::http::StatusCode;
use pidgr_workflows::template::{MAX_RENDERED_BYTES, MAX_VARIABLE_VALUE_CHARS};
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Options, System};

/// The largest template body, nothing but placeholders: 13,107 × `{{a}}`.
fn amplifying_body() -> String {
    "{{a}}".repeat(65_536 / 5)
}

/// Notify with the step variable `a`, then mark the rest missed.
fn definition_with(a: &str) -> Value {
    json!({
        "version": 1,
        "steps": [
            { "id": "notify", "type": "SEND_NOTIFICATION",
              "config": { "variables": { "a": a } }, "transitions": { "next": "done" } },
            { "id": "done", "type": "MARK_MISSED" }
        ]
    })
}

fn assert_problem(status: StatusCode, body: &Value, pointer: &str, words: &str) {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let problems = body["errors"].as_array().cloned().unwrap_or_default();
    assert!(
        problems
            .iter()
            .any(|p| p["pointer"] == pointer && p["message"].as_str().unwrap_or("").contains(words)),
        "no problem at {pointer:?} saying {words:?}: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_amplification_is_refused_and_the_server_stays_up() -> Result<()> {
    let system = System::start(Options::default()).await?;
    let template = system
        .create(
            "/v1/templates",
            json!({ "name": "Amplifier", "title": "Hello {{name}}", "body": amplifying_body() }),
        )
        .await?;
    let group = system.group_of(&["amp-1", "amp-2"]).await?;

    // The attack as reported: a 250 KB step variable. Refused where definitions come in.
    let huge = "A".repeat(250_000);
    let (status, body) = system
        .post(
            "/v1/workflow-definitions",
            json!({ "name": "amplifier", "definition": definition_with(&huge) }),
        )
        .await?;
    assert_problem(
        status,
        &body,
        "/definition/steps/0/config/variables/a",
        "at most 2000 characters",
    );
    let (status, body) = system
        .post(
            "/v1/campaigns",
            json!({
                "name": "Amplified", "title": "Amplified", "template_id": template["id"],
                "audience": { "groups": [group] }, "definition": definition_with(&huge),
            }),
        )
        .await?;
    assert_problem(
        status,
        &body,
        "/definition/steps/0/config/variables/a",
        "at most 2000 characters",
    );

    // Within the variable limits the body still multiplies (13,107 × 2,000 bytes): the
    // campaign may exist, but its preview is refused instead of rendered.
    let longest = "A".repeat(MAX_VARIABLE_VALUE_CHARS);
    let campaign = system
        .create(
            "/v1/campaigns",
            json!({
                "name": "Amplified", "title": "Amplified", "template_id": template["id"],
                "audience": { "groups": [group] }, "definition": definition_with(&longest),
            }),
        )
        .await?;
    let campaign = campaign["id"].as_str().context("campaign id")?.to_owned();
    let preview = format!("/v1/campaigns/{campaign}/preview");
    for _ in 0..3 {
        let (status, body) = system.call(Method::GET, &preview, None).await?;
        assert_problem(
            status,
            &body,
            "",
            &format!("larger than {MAX_RENDERED_BYTES} bytes"),
        );
    }
    let (status, body) = system
        .post(
            &format!(
                "/v1/templates/{}/versions/1/preview",
                template["id"].as_str().unwrap()
            ),
            json!({ "variables": { "a": longest } }),
        )
        .await?;
    assert_problem(status, &body, "", "larger than");
    // The process is unharmed: the next requests are answered.
    system.get("/v1/organisation").await?;
    let (status, body) = system
        .post(
            &format!(
                "/v1/templates/{}/versions/1/preview",
                template["id"].as_str().unwrap()
            ),
            json!({ "variables": { "a": "short" } }),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Started, every recipient fails with the reason (no endless retries), and the campaign
    // runs to its end.
    system.start_draft(&campaign).await?;
    system.until_status(&campaign, "COMPLETED").await?;
    let deliveries = system.deliveries(&campaign).await?;
    assert_eq!(deliveries.len(), 2);
    for delivery in &deliveries {
        assert_eq!(delivery["status"], "FAILED", "{delivery}");
        let reason = delivery["failure_reason"].as_str().unwrap_or_default();
        assert!(reason.contains("larger than"), "{delivery}");
    }
    // The inbox lists the delivery and says why its message is missing.
    let member = system.members(&["amp-1"]).await?.remove(0);
    let inbox = system
        .get(&format!("/v1/members/{}/inbox", member.id))
        .await?;
    let item = &inbox["items"][0];
    assert_eq!(
        item["delivery"]["campaign_id"],
        campaign.as_str(),
        "{inbox}"
    );
    assert!(item["message"].is_null(), "{item}");
    assert!(
        item["message_error"]
            .as_str()
            .unwrap_or_default()
            .contains("larger than"),
        "{item}"
    );
    system.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_tokens_are_masked_unless_the_caller_registers_devices() -> Result<()> {
    let system = System::start(Options::default()).await?;
    let member = system
        .create(
            "/v1/members",
            json!({ "external_id": "tok-1", "email": "tok@example.com", "display_name": "Tok" }),
        )
        .await?;
    let token = "fcm-token-0123456789-abcdefghij-XYZW";
    let devices = format!("/v1/members/{}/devices", member["id"].as_str().unwrap());
    system
        .create(&devices, json!({ "platform": "fcm", "token": token }))
        .await?;

    let key_for = |permissions: Value| {
        let system = &system;
        async move {
            let role = system
                .create(
                    "/v1/roles",
                    json!({ "name": format!("role-{}", uuid::Uuid::new_v4()), "permissions": permissions }),
                )
                .await?;
            let key = system
                .create(
                    "/v1/api-keys",
                    json!({ "name": "directory", "role_id": role["id"] }),
                )
                .await?;
            anyhow::Ok(key["secret"].as_str().context("secret")?.to_owned())
        }
    };
    let listed_token = |key: String| {
        let system = &system;
        let devices = devices.clone();
        async move {
            let (status, page) = system
                .call_as(Some(&key), Method::GET, &devices, None)
                .await?;
            assert_eq!(status, StatusCode::OK, "{page}");
            anyhow::Ok(
                page["items"][0]["token"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        }
    };

    let reader = key_for(json!(["members:read"])).await?;
    assert_eq!(listed_token(reader).await?, "fcm-…XYZW");
    let backend = key_for(json!(["members:read", "deliveries:write"])).await?;
    assert_eq!(listed_token(backend).await?, token);
    system.shutdown().await;
    Ok(())
}

/// The rendered size of an inbox item's message, as the inbox counts it against its budget.
fn rendered_bytes(item: &Value) -> usize {
    ["title", "body_markdown", "body_html"]
        .iter()
        .filter_map(|field| item["message"][field].as_str())
        .map(str::len)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_page_of_large_messages_stops_at_its_byte_budget_and_the_next_page_goes_on()
-> Result<()> {
    let system = System::start(Options::default()).await?;
    let group = system.group_of(&["inbox-reader"]).await?;
    let member = &system.members(&["inbox-reader"]).await?[0];
    // Each message renders to about 500 KB of Markdown and as much HTML, under the 512 KiB cap:
    // ten of them are twice the page budget of 8 MiB.
    let body = "{{a}} ".repeat(250);
    let a = "x".repeat(MAX_VARIABLE_VALUE_CHARS);
    let campaigns = 10;
    let mut expected = Vec::new();
    for n in 0..campaigns {
        let template = system
            .create(
                "/v1/templates",
                json!({ "name": format!("long read {n}"), "title": "Long read", "body": body }),
            )
            .await?;
        let campaign = system
            .create(
                "/v1/campaigns",
                json!({ "name": format!("long read {n}"), "title": "Long read",
                        "template_id": template["id"], "audience": { "groups": [group] },
                        "definition": definition_with(&a) }),
            )
            .await?;
        let id = campaign["id"].as_str().context("campaign id")?.to_owned();
        system.start_draft(&id).await?;
        expected.push(id);
    }

    let inbox = format!("/v1/members/{}/inbox", member.id);
    let mut pages = Vec::new();
    let mut after = String::new();
    loop {
        let page = system.get(&format!("{inbox}?after={after}")).await?;
        let items = page["items"].as_array().context("items")?.clone();
        ensure!(!items.is_empty(), "an empty page: {}", page["next_cursor"]);
        ensure!(pages.len() < campaigns, "more pages than deliveries");
        pages.push(items.clone());
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                // The cursor is the last item listed: the next page starts after it.
                assert_eq!(cursor, items.last().unwrap()["delivery"]["id"]);
                after = cursor.to_owned();
            }
            None => break,
        }
    }

    let budget = pidgr_api::INBOX_PAGE_BUDGET_BYTES;
    let sizes: Vec<usize> = pages
        .iter()
        .map(|page| page.iter().map(rendered_bytes).sum())
        .collect();
    assert!(
        pages.len() >= 2 && pages[0].len() < campaigns,
        "one page of {} items ({} bytes): the budget did not cut it",
        pages[0].len(),
        sizes[0]
    );
    for (index, page) in pages.iter().enumerate() {
        assert!(
            sizes[index] <= budget,
            "page {index}: {} bytes",
            sizes[index]
        );
        for item in page {
            assert!(item["message"].is_object(), "not rendered: {item}");
            assert!(
                rendered_bytes(item) > 900_000,
                "a message smaller than meant"
            );
        }
        // A page ends only where the next item would have passed the budget.
        if let Some(next) = pages.get(index + 1) {
            assert!(sizes[index] + rendered_bytes(&next[0]) > budget);
        }
    }
    // Together the pages list every delivery exactly once.
    let mut listed: Vec<String> = pages
        .iter()
        .flatten()
        .map(|item| {
            item["campaign"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected);
    system.shutdown().await;
    Ok(())
}
