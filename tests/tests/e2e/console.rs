//! The console in a real browser: headless Chromium over WebDriver against the real system (a
//! Temporal dev server, the database, the API and the console served in-process). Each test
//! signs in as a person would and checks what the pages show and what the API then holds.
//! Without Chromium and chromedriver on the machine the tests say so and pass.

use anyhow::{Context, Result, ensure};
use axum::http::StatusCode;
use reqwest::Method;
use reqwest::header::{COOKIE, LOCATION};
use serde_json::{Value, json};

use crate::console_support::{
    Browser, SESSION_COOKIE, csrf_in, plain_http, sign_in_with_reqwest, tools,
};
use crate::harness::{Options, Receiver, System, until};

/// Starts the system and a browser for `test`, runs `body`, and takes both down; `None` when
/// the machine has no browser (the test passes, having said so).
macro_rules! browser_test {
    ($test:expr, |$system:ident, $browser:ident| $body:block) => {{
        let test: &str = $test;
        let Some(tools) = tools(test) else {
            return Ok(());
        };
        let $system = System::start(Options::default()).await?;
        let $browser = Browser::start(test, &tools, &$system).await?;
        let outcome = $browser.check(async { $body }).await;
        $browser.close().await;
        $system.shutdown().await;
        match outcome {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_with_the_key_opens_the_campaigns_a_wrong_key_is_refused_and_signing_out_ends_the_session()
-> Result<()> {
    browser_test!(
        "signing_in_with_the_key_opens_the_campaigns_a_wrong_key_is_refused_and_signing_out_ends_the_session",
        |system, browser| {
            // A wrong key stays on the sign-in page, saying why.
            browser.sign_in("pidgr_not-a-key").await?;
            let problem = browser.text("#problem").await?;
            ensure!(problem.contains("not valid"), "{problem}");
            ensure!(browser.path().await?.starts_with("/console/sign-in"));
            ensure!(!browser.has("table#campaigns").await?);
            browser.picture("sign-in-refused").await?;

            // The system's key lands on the campaigns page.
            browser.sign_in(&system.key).await?;
            browser
                .until_path("the campaigns page", |p| p == "/console/campaigns")
                .await?;
            browser.element("a#new-campaign").await?;
            let cookie = browser
                .client
                .get_named_cookie(SESSION_COOKIE)
                .await
                .context("the session cookie")?;
            ensure!(cookie.http_only() == Some(true), "scripts cannot read it");
            ensure!(
                !cookie.value().contains(&system.key),
                "the browser holds a session id, not the key"
            );
            let old_session = cookie.value().to_owned();
            browser.picture("campaigns-empty").await?;

            // Signing out ends the session: the browser is sent to sign in again.
            browser.click("button#sign-out").await?;
            browser
                .until_path("the sign-in page", |p| p.starts_with("/console/sign-in"))
                .await?;
            browser.open("/console/campaigns").await?;
            browser
                .until_path("the sign-in page", |p| p.starts_with("/console/sign-in"))
                .await?;
            browser.element("input#key").await?;

            // The old cookie value, replayed outside the browser, opens nothing either.
            let replayed = plain_http()?
                .get(format!("{}/console/campaigns", browser.base))
                .header(COOKIE, format!("{SESSION_COOKIE}={old_session}"))
                .send()
                .await?;
            ensure!(
                replayed.status().is_redirection(),
                "the ended session answered {}",
                replayed.status()
            );
            let to = replayed
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            ensure!(to.starts_with("/console/sign-in"), "redirected to {to}");

            // A link to a page, opened while signed out, leads there once signed in.
            browser.open("/console/workflows/new").await?;
            browser
                .until_path("the sign-in page", |p| p.starts_with("/console/sign-in"))
                .await?;
            let input = browser.element("input#key").await?;
            input.send_keys(&system.key).await?;
            browser.click("button#sign-in").await?;
            browser
                .until_path("the page the link named", |p| p == "/console/workflows/new")
                .await?;
            Ok(())
        }
    )
}

// ---- what the tests set up through the API ----

/// Notifies by push (with the `deadline` the harness's template asks for), then waits a day:
/// the campaign stays ACTIVE for as long as a test needs.
fn notify_then_wait() -> Value {
    json!({
        "version": 1,
        "start": "notify",
        "steps": [
            { "id": "notify", "type": "SEND_NOTIFICATION",
              "config": { "channels": ["push"], "variables": { "deadline": "Friday" } },
              "transitions": { "next": "wait" } },
            { "id": "wait", "type": "DEADLINE_CHECK", "config": { "duration": "1d" },
              "transitions": { "next": "missed" } },
            { "id": "missed", "type": "MARK_MISSED", "config": {}, "transitions": {} }
        ]
    })
}

/// A template made through the API; answers its id.
async fn template(system: &System, name: &str) -> Result<String> {
    let created = system
        .create(
            "/v1/templates",
            json!({
                "name": name,
                "title": "Policy update for {{name}}",
                "body": "Please read the new **travel policy** and acknowledge it by Friday.",
            }),
        )
        .await?;
    Ok(created["id"].as_str().context("template id")?.to_owned())
}

/// A group of new members (each with a phone for the `log` push provider), all made through
/// the API; answers the group's id and the members' ids.
async fn group_through_api(system: &System, people: &[&str]) -> Result<(String, Vec<String>)> {
    let group = system
        .create("/v1/groups", json!({ "name": "Travel policy readers" }))
        .await?;
    let group = group["id"].as_str().context("group id")?.to_owned();
    let mut members = Vec::new();
    for person in people {
        let member = system
            .create(
                "/v1/members",
                json!({
                    "external_id": person,
                    "email": format!("{person}@example.com"),
                    "display_name": format!("{}{}", person[..1].to_uppercase(), &person[1..]),
                }),
            )
            .await?;
        let id = member["id"].as_str().context("member id")?.to_owned();
        let (status, device) = system
            .post(
                &format!("/v1/members/{id}/devices"),
                json!({ "platform": "fcm", "token": format!("phone-{person}") }),
            )
            .await?;
        ensure!(status.is_success(), "device: {status} {device}");
        let (status, added) = system
            .call(
                Method::PUT,
                &format!("/v1/groups/{group}/members/{id}"),
                None,
            )
            .await?;
        ensure!(status.is_success(), "group member: {status} {added}");
        members.push(id);
    }
    Ok((group, members))
}

/// An API key with `role_id`, made through the API; answers its secret.
async fn key_with_role(system: &System, name: &str, role_id: &str) -> Result<String> {
    let created = system
        .create("/v1/api-keys", json!({ "name": name, "role_id": role_id }))
        .await?;
    Ok(created["secret"].as_str().context("key secret")?.to_owned())
}

/// GETs a console page outside the browser with a session cookie; answers status and body.
async fn console_get(
    base: &str,
    cookie: &str,
    path: &str,
) -> Result<(reqwest::StatusCode, String)> {
    let response = plain_http()?
        .get(format!("{base}{path}"))
        .header(COOKIE, format!("{SESSION_COOKIE}={cookie}"))
        .send()
        .await?;
    Ok((response.status(), response.text().await?))
}

/// POSTs a console form outside the browser with a session cookie and CSRF token.
async fn console_post(
    base: &str,
    cookie: &str,
    csrf: &str,
    path: &str,
) -> Result<reqwest::StatusCode> {
    let response = plain_http()?
        .post(format!("{base}{path}"))
        .header(COOKIE, format!("{SESSION_COOKIE}={cookie}"))
        .form(&[("csrf", csrf)])
        .send()
        .await?;
    Ok(response.status())
}

/// The external ids of every member in the directory, through the API, sorted.
async fn external_ids(system: &System) -> Result<Vec<String>> {
    let listed = system.get("/v1/members?limit=100").await?;
    let mut ids: Vec<String> = listed["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["external_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    Ok(ids)
}

/// The `data-delivery` ids of the deliveries table's rows, sorted.
async fn listed_deliveries(browser: &Browser) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for row in browser
        .all("table#deliveries tbody tr[data-delivery]")
        .await?
    {
        ids.push(row.attr("data-delivery").await?.unwrap_or_default());
    }
    ids.sort();
    Ok(ids)
}

// ---- the tests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_is_made_started_followed_exported_and_cancelled_through_the_pages() -> Result<()>
{
    browser_test!(
        "a_campaign_is_made_started_followed_exported_and_cancelled_through_the_pages",
        |system, browser| {
            let template_id = template(&system, "Travel policy").await?;
            let (group, members) = group_through_api(&system, &["ada", "grace", "linus"]).await?;
            browser.sign_in(&system.key).await?;
            browser
                .until_path("the campaigns page", |p| p == "/console/campaigns")
                .await?;

            // A workflow written in the editor and saved.
            browser.open("/console/workflows/new").await?;
            browser
                .type_into("input#definition-name", "Notify, then wait a day")
                .await?;
            browser
                .fill(
                    "textarea#definition",
                    &serde_json::to_string_pretty(&notify_then_wait())?,
                )
                .await?;
            // The check runs after a pause in typing: until then the page shows the starter's.
            browser.until_count("svg#workflow-graph g.node", 3).await?;
            browser
                .until_text("div#problems", |t| t.contains("Valid"))
                .await?;
            browser.picture("workflow-editor").await?;
            browser.click("button#save").await?;
            let saved = browser
                .until_path("the saved workflow", |p| {
                    p.starts_with("/console/workflows/") && !p.starts_with("/console/workflows/new")
                })
                .await?;
            let definition_id = id_after(&saved, "/console/workflows/");
            let stored = system
                .get(&format!("/v1/workflow-definitions/{definition_id}"))
                .await?;
            ensure!(stored["name"] == "Notify, then wait a day", "{stored}");
            browser.open("/console/workflows").await?;
            browser.element("table#definitions").await?;
            browser.picture("workflows").await?;

            // The campaign, made on the new-campaign page for the group.
            browser.open("/console/campaigns/new").await?;
            browser
                .type_into("input#name", "Travel policy 2027")
                .await?;
            browser
                .type_into("input#title", "New travel policy")
                .await?;
            browser
                .element("select#template")
                .await?
                .select_by_value(&template_id)
                .await?;
            browser
                .element("select#groups")
                .await?
                .select_by_value(&group)
                .await?;
            browser
                .element("select#definition")
                .await?
                .select_by_value(&format!("{definition_id}:1"))
                .await?;
            browser.picture("new-campaign").await?;
            browser.click("button#create").await?;
            let page = browser
                .until_path("the new campaign's page", |p| {
                    p.starts_with("/console/campaigns/") && !p.starts_with("/console/campaigns/new")
                })
                .await?;
            let campaign = id_after(&page, "/console/campaigns/");
            let created = system.campaign(&campaign).await?;
            ensure!(created["status"] == "CREATED", "{created}");
            ensure!(created["name"] == "Travel policy 2027", "{created}");
            browser
                .until_text("span#campaign-status", |t| t == "CREATED")
                .await?;

            // Started on its page (the confirmation accepted); its deliveries appear.
            browser.click("button#start").await?;
            let question = browser.accept_confirm().await?;
            ensure!(question.contains("Start"), "{question}");
            system.deliveries_written(&campaign).await?;
            browser.until_text("#count-total", |t| t == "3").await?;
            browser
                .until_text("span#campaign-status", |t| t == "ACTIVE")
                .await?;
            browser.open(&page).await?;
            browser.until_text("#count-sent", |t| t == "3").await?;
            let deliveries = system.deliveries(&campaign).await?;
            let mut all: Vec<String> = deliveries
                .iter()
                .map(|d| d["id"].as_str().unwrap_or_default().to_owned())
                .collect();
            all.sort();
            ensure!(all.len() == 3 && members.len() == 3);
            ensure!(listed_deliveries(&browser).await? == all);
            ensure!(!browser.has("button#start").await?, "started once");
            browser.element("button#cancel").await?;

            // An acknowledgement through the API shows without reloading: the count and the bar.
            let bar_before = browser
                .element("div#live svg.progress")
                .await?
                .html(false)
                .await?;
            let acked = all[0].clone();
            let (status, body) = system
                .post(
                    &format!("/v1/deliveries/{acked}/ack"),
                    json!({ "source": "inbox" }),
                )
                .await?;
            ensure!(status == StatusCode::OK, "ack: {status} {body}");
            browser
                .until_text("#count-acknowledged", |t| t == "1")
                .await?;
            let bar_after = browser
                .element("div#live svg.progress")
                .await?
                .html(false)
                .await?;
            ensure!(
                bar_before != bar_after,
                "the progress bar moved: {bar_after}"
            );
            browser.picture("campaign").await?;

            // The unacknowledged filter lists exactly the other two.
            browser.click("a#filter-unacknowledged").await?;
            browser
                .until_path("the unacknowledged filter", |p| p.contains("status="))
                .await?;
            let others: Vec<String> = all.iter().filter(|id| **id != acked).cloned().collect();
            until_listed(&browser, &others).await?;
            for row in browser.all("table#deliveries tbody tr").await? {
                let status = row.attr("data-status").await?.unwrap_or_default();
                ensure!(status != "ACKNOWLEDGED", "{status}");
            }

            // The export: every delivery, with the browser's session.
            browser.click("a#filter-all").await?;
            until_listed(&browser, &all).await?;
            let href = browser
                .attr("a#export-csv", "href")
                .await?
                .context("export href")?;
            let cookie = browser.session_cookie().await?;
            let href = if href.starts_with("http") {
                href
            } else {
                format!("{}{href}", browser.base)
            };
            let export = plain_http()?
                .get(&href)
                .header(COOKIE, format!("{SESSION_COOKIE}={cookie}"))
                .send()
                .await?;
            ensure!(
                export.status() == reqwest::StatusCode::OK,
                "export: {}",
                export.status()
            );
            let csv = export.text().await?;
            let lines: Vec<&str> = csv.lines().collect();
            ensure!(lines.len() == 4, "a header and three rows: {csv}");
            let header: Vec<&str> = lines[0].split(',').collect();
            let column = |name: &str| header.iter().position(|c| *c == name);
            let (id_at, status_at) = (
                column("delivery_id").context("delivery_id column")?,
                column("status").context("status column")?,
            );
            let mut exported: Vec<(String, String)> = lines[1..]
                .iter()
                .map(|line| {
                    let cells: Vec<&str> = line.split(',').collect();
                    (cells[id_at].to_owned(), cells[status_at].to_owned())
                })
                .collect();
            exported.sort();
            let expected: Vec<(String, String)> = all
                .iter()
                .map(|id| {
                    let status = if *id == acked { "ACKNOWLEDGED" } else { "SENT" };
                    (id.clone(), status.to_owned())
                })
                .collect();
            ensure!(exported == expected, "{exported:?} != {expected:?}");

            // Cancelled on its page, the confirmation accepted.
            browser.click("button#cancel").await?;
            let question = browser.accept_confirm().await?;
            ensure!(question.contains("Cancel"), "{question}");
            browser
                .until_text("span#campaign-status", |t| t == "CANCELLED")
                .await?;
            system.until_status(&campaign, "CANCELLED").await?;
            ensure!(
                !browser.has("button#cancel").await?,
                "a cancelled campaign has no cancel"
            );

            browser.open("/console/templates").await?;
            browser.element("table#templates").await?;
            browser.picture("templates").await?;
            browser
                .open(&format!("/console/templates/{template_id}"))
                .await?;
            browser.element("textarea#markdown").await?;
            browser.picture("template").await?;
            browser.open("/console/campaigns").await?;
            browser.element("table#campaigns").await?;
            browser.picture("campaigns").await?;
            Ok(())
        }
    )
}

/// Waits until the deliveries table lists exactly `ids`.
async fn until_listed(browser: &Browser, ids: &[String]) -> Result<()> {
    let mut wanted = ids.to_vec();
    wanted.sort();
    until("the deliveries table to list the expected rows", || async {
        let listed = match listed_deliveries(browser).await {
            Ok(listed) => listed,
            // A row found before a navigation and read after it.
            Err(_) => return Ok(None),
        };
        Ok((listed == wanted).then_some(()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_editor_shows_a_cycle_and_a_plain_http_webhook_beside_their_steps() -> Result<()> {
    browser_test!(
        "the_editor_shows_a_cycle_and_a_plain_http_webhook_beside_their_steps",
        |system, browser| {
            browser.sign_in(&system.key).await?;
            browser
                .until_path("the campaigns page", |p| p == "/console/campaigns")
                .await?;
            browser.open("/console/workflows/new").await?;
            browser
                .type_into("input#definition-name", "Broken on purpose")
                .await?;
            // `remind` loops back to `wait`; `report` posts to a public host over plain HTTP.
            let broken = json!({
                "version": 1,
                "start": "notify",
                "steps": [
                    { "id": "notify", "type": "SEND_NOTIFICATION",
                      "config": { "channels": ["push"] }, "transitions": { "next": "wait" } },
                    { "id": "wait", "type": "DEADLINE_CHECK", "config": { "duration": "1h" },
                      "transitions": { "deadline": "remind", "all_acknowledged": "report" } },
                    { "id": "remind", "type": "SEND_REMINDER",
                      "config": { "channels": ["push"] }, "transitions": { "next": "wait" } },
                    { "id": "report", "type": "CALL_WEBHOOK",
                      "config": { "name": "Results", "url": "http://hooks.example.com/x" },
                      "transitions": {} }
                ]
            });
            browser
                .fill(
                    "textarea#definition",
                    &serde_json::to_string_pretty(&broken)?,
                )
                .await?;
            let cycle = browser
                .until_text(r#"div#problems li[data-step="remind"]"#, |t| {
                    t.contains("cycle")
                })
                .await?;
            ensure!(
                cycle.contains("remind"),
                "the problem names its step: {cycle}"
            );
            let url = browser
                .until_text(r#"div#problems li[data-step="report"]"#, |t| {
                    t.contains("https")
                })
                .await?;
            ensure!(url.contains("report"), "the problem names its step: {url}");
            for li in browser
                .all("div#problems ul.problems:not(.warnings) li")
                .await?
            {
                let step = li.attr("data-step").await?.unwrap_or_default();
                ensure!(
                    step == "remind" || step == "report",
                    "only the two broken steps have problems, not {step}"
                );
            }
            let nodes = browser.all("svg#workflow-graph g.node").await?;
            ensure!(nodes.len() == 4, "one node per step, not {}", nodes.len());
            let mut invalid = Vec::new();
            for node in browser.all("svg#workflow-graph g.node.invalid").await? {
                invalid.push(node.attr("data-step").await?.unwrap_or_default());
            }
            invalid.sort();
            ensure!(
                invalid == ["remind", "report"],
                "marked invalid: {invalid:?}"
            );
            browser.picture("workflow-editor-problems").await?;
            Ok(())
        }
    )
}

/// The receiver's check of a channel event: HMAC-SHA256 of the raw body with the secret, hex.
fn signed_with(raw: &[u8], signature: Option<&str>, secret: &str) -> bool {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key size");
    mac.update(raw);
    let Ok(signature) = hex::decode(signature.unwrap_or_default()) else {
        return false;
    };
    mac.verify_slice(&signature).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_channel_shows_its_secret_once_and_a_test_event_reaches_a_verifying_receiver()
-> Result<()> {
    browser_test!(
        "the_webhook_channel_shows_its_secret_once_and_a_test_event_reaches_a_verifying_receiver",
        |system, browser| {
            let mut receiver = Receiver::start(Some(0)).await?;
            browser.sign_in(&system.key).await?;
            browser
                .until_path("the campaigns page", |p| p == "/console/campaigns")
                .await?;
            browser.open("/console/integrations").await?;
            browser
                .type_into("input#webhook-url", &receiver.url)
                .await?;
            browser.click("button#save-webhook").await?;
            let secret = browser.text("code#webhook-secret").await?;
            ensure!(
                secret.len() >= 32,
                "a secret worth the name: {} characters",
                secret.len()
            );
            let channel = system.get("/v1/webhook-channel").await?;
            ensure!(channel["url"] == receiver.url.as_str(), "{channel}");
            ensure!(
                !channel.to_string().contains(&secret),
                "the API does not show the secret again"
            );
            browser.picture("integrations-secret").await?;

            // Once: the page opened again no longer holds it.
            browser.open("/console/integrations").await?;
            browser.element("input#webhook-url").await?;
            ensure!(
                !browser.has("code#webhook-secret").await?,
                "the secret is shown once"
            );
            ensure!(
                !browser.client.source().await?.contains(&secret),
                "nowhere on the page"
            );

            // The test event: signed with that secret, and the receiver's answer shown.
            browser.click("button#send-test-event").await?;
            let request = receiver.next().await?;
            let signature = request
                .headers
                .get("x-pidgr-signature")
                .and_then(|v| v.to_str().ok());
            ensure!(
                signed_with(&request.raw, signature, &secret),
                "the event verifies with the secret the page showed"
            );
            ensure!(!signed_with(&request.raw, signature, "another secret"));
            let result = browser
                .until_text("div#test-result", |t| t.contains("200"))
                .await?;
            ensure!(!result.contains(&secret), "{result}");
            browser.picture("integrations").await?;
            Ok(())
        }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_sees_no_admin_actions_and_neither_its_posts_nor_another_sites_form_change_anything()
-> Result<()> {
    browser_test!(
        "a_member_sees_no_admin_actions_and_neither_its_posts_nor_another_sites_form_change_anything",
        |system, browser| {
            let campaign = system
                .start_campaign(&["m1", "m2"], notify_then_wait())
                .await?;
            let member_key = key_with_role(&system, "a member", "member").await?;
            let role = system
            .create(
                "/v1/roles",
                json!({ "name": "Viewer", "permissions": ["campaigns:read", "templates:read"] }),
            )
            .await?;
            let viewer_key =
                key_with_role(&system, "a viewer", role["id"].as_str().context("role id")?).await?;
            let cancel = format!("/console/campaigns/{campaign}/cancel");
            let start = format!("/console/campaigns/{campaign}/start");

            // A Member may read nothing: no admin section, no action anywhere.
            browser.sign_in(&member_key).await?;
            browser
                .until_path("a console page", |p| !p.starts_with("/console/sign-in"))
                .await?;
            for page in [
                "/console/campaigns",
                &format!("/console/campaigns/{campaign}"),
            ] {
                browser.open(page).await?;
                browser.element("h1").await?;
                for admin in [
                    "a#new-campaign",
                    "button#start",
                    "button#cancel",
                    r#"a[href="/console/settings"]"#,
                    r#"a[href="/console/integrations"]"#,
                ] {
                    ensure!(
                        !browser.has(admin).await?,
                        "a member sees {admin} on {page}"
                    );
                }
            }
            browser.picture("member-campaigns").await?;
            let member_cookie = browser.session_cookie().await?;
            // Its own session, without a token (no page gives a Member one) or with a made-up one.
            for csrf in ["", "made-up"] {
                let status = console_post(&browser.base, &member_cookie, csrf, &cancel).await?;
                ensure!(
                    status == reqwest::StatusCode::FORBIDDEN,
                    "member cancel: {status}"
                );
            }
            browser.client.delete_all_cookies().await?;

            // A read-only role sees the campaign, and still no action.
            browser.sign_in(&viewer_key).await?;
            browser
                .until_path("the campaigns page", |p| p == "/console/campaigns")
                .await?;
            browser.element("table#campaigns").await?;
            ensure!(!browser.has("a#new-campaign").await?);
            ensure!(browser.has(r#"a[href="/console/campaigns"]"#).await?);
            ensure!(!browser.has(r#"a[href="/console/settings"]"#).await?);
            ensure!(!browser.has(r#"a[href="/console/integrations"]"#).await?);
            browser
                .open(&format!("/console/campaigns/{campaign}"))
                .await?;
            browser
                .until_text("span#campaign-status", |t| t == "ACTIVE")
                .await?;
            for action in [
                "form#start-form",
                "button#start",
                "form#cancel-form",
                "button#cancel",
            ] {
                ensure!(!browser.has(action).await?, "a viewer sees {action}");
            }
            browser.click("button#sign-out").await?;
            browser
                .until_path("the sign-in page", |p| p.starts_with("/console/sign-in"))
                .await?;

            // Its direct POSTs, with its own cookie and CSRF token, are refused by the API's rules.
            let viewer_cookie = sign_in_with_reqwest(&browser.base, &viewer_key).await?;
            let (status, html) = console_get(
                &browser.base,
                &viewer_cookie,
                &format!("/console/campaigns/{campaign}"),
            )
            .await?;
            ensure!(status == reqwest::StatusCode::OK, "{status}");
            let csrf = csrf_in(&html).context("the page's CSRF token")?;
            for path in [&cancel, &start] {
                let status = console_post(&browser.base, &viewer_cookie, &csrf, path).await?;
                ensure!(
                    status == reqwest::StatusCode::FORBIDDEN,
                    "viewer {path}: {status}"
                );
            }
            ensure!(system.campaign(&campaign).await?["status"] == "ACTIVE");

            // Another site's form, auto-submitted in a browser signed in as the Super Admin, with
            // the session's real CSRF token even: refused, and nothing changes.
            browser.sign_in(&system.key).await?;
            browser
                .until_path("the campaigns page", |p| p == "/console/campaigns")
                .await?;
            browser
                .open(&format!("/console/campaigns/{campaign}"))
                .await?;
            let admin_html = browser.client.source().await?;
            let admin_csrf = csrf_in(&admin_html).context("the admin page's CSRF token")?;
            ensure!(
                browser.has("button#cancel").await?,
                "the admin could cancel"
            );
            let other_site =
                OtherSite::start(&format!("{}{cancel}", browser.base), &admin_csrf).await?;
            browser.client.goto(&other_site.url).await?;
            browser
                .until_path("the console's answer to the other site", |p| p == cancel)
                .await?;
            let refused = browser.page_status().await?;
            ensure!(refused == 403, "the cross-site post answered {refused}");
            let text = browser.text("body").await?;
            ensure!(text.contains("cross-site"), "{text}");
            ensure!(system.campaign(&campaign).await?["status"] == "ACTIVE");
            browser
                .open(&format!("/console/campaigns/{campaign}"))
                .await?;
            browser
                .until_text("span#campaign-status", |t| t == "ACTIVE")
                .await?;

            browser.open("/console/settings").await?;
            browser.element("table#api-keys").await?;
            browser.picture("settings").await?;
            Ok(())
        }
    )
}

/// Another site on loopback (`http://localhost:<port>`, while the console is at `127.0.0.1`):
/// its page posts a form to `target` as soon as it loads.
struct OtherSite {
    url: String,
}

impl OtherSite {
    async fn start(target: &str, csrf: &str) -> Result<OtherSite> {
        let page = format!(
            "<!doctype html><html><body>\
             <form id=f method=post action=\"{target}\">\
             <input type=hidden name=csrf value=\"{csrf}\"></form>\
             <script>document.getElementById('f').submit()</script></body></html>"
        );
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(move || {
                let page = page.clone();
                async move { axum::response::Html(page) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://localhost:{}/", listener.local_addr()?.port());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(OtherSite { url })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_import_with_bad_rows_writes_nothing_and_lists_them_then_a_good_file_imports_every_row()
-> Result<()> {
    browser_test!(
        "a_csv_import_with_bad_rows_writes_nothing_and_lists_them_then_a_good_file_imports_every_row",
        |system, browser| {
            let dir = std::env::temp_dir()
                .join(format!("pidgr-import-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&dir)?;
            let mixed = dir.join("mixed.csv");
            std::fs::write(
                &mixed,
                "external_id,email,name,department\n\
             e-1,ada@example.com,Ada Lovelace,Research\n\
             e-2,not-an-address,Bob Bad,Sales\n\
             e-3,grace@example.com,Grace Hopper,Navy\n\
             e-4,dan@example.com,,Ops\n",
            )?;
            let good = dir.join("good.csv");
            std::fs::write(
                &good,
                "external_id,email,name,department,manager\n\
             e-1,ada@example.com,Ada Lovelace,Research,e-5\n\
             e-3,grace@example.com,Grace Hopper,Navy,e-1\n\
             e-5,linus@example.com,Linus Torvalds,Kernel,\n",
            )?;
            ensure!(external_ids(&system).await?.is_empty());

            browser.sign_in(&system.key).await?;
            browser
                .until_path("the campaigns page", |p| p == "/console/campaigns")
                .await?;
            browser.open("/console/directory/import").await?;
            browser
                .element("input#csv-file")
                .await?
                .send_keys(&mixed.display().to_string())
                .await?;
            browser.click("button#import").await?;
            browser
                .element("div#import-report ul#import-errors")
                .await?;
            let mut rejected = Vec::new();
            for li in browser.all("ul#import-errors li.rejected-row").await? {
                rejected.push(li.text().await?);
            }
            ensure!(rejected.len() == 2, "the two bad rows: {rejected:?}");
            ensure!(
                rejected[0].starts_with("row 3") && rejected[0].contains("email"),
                "{rejected:?}"
            );
            ensure!(
                rejected[1].starts_with("row 5") && rejected[1].contains("name"),
                "{rejected:?}"
            );
            let summary = browser.text("p#import-summary").await?;
            ensure!(summary.to_lowercase().contains("nothing"), "{summary}");
            ensure!(
                external_ids(&system).await?.is_empty(),
                "nothing was written"
            );
            browser.picture("import-refused").await?;

            browser.open("/console/directory/import").await?;
            browser
                .element("input#csv-file")
                .await?
                .send_keys(&good.display().to_string())
                .await?;
            browser.click("button#import").await?;
            let summary = browser
                .until_text("p#import-summary", |t| t.contains('3'))
                .await?;
            ensure!(!browser.has("li.rejected-row").await?, "{summary}");
            ensure!(external_ids(&system).await? == ["e-1", "e-3", "e-5"]);
            let grace = system.get("/v1/members?external_id=e-3").await?;
            let grace = &grace["items"][0];
            ensure!(grace["display_name"] == "Grace Hopper", "{grace}");
            ensure!(grace["attributes"]["department"] == "Navy", "{grace}");
            // The manager column names managers by external id, even one in a later row.
            let ada = system.get("/v1/members?external_id=e-1").await?;
            let ada = &ada["items"][0];
            ensure!(grace["manager_id"] == ada["id"], "{grace}");
            ensure!(grace["attributes"].get("manager").is_none(), "{grace}");
            ensure!(ada["manager_id"].is_string(), "{ada}");

            browser.open("/console/directory").await?;
            let table = browser.text("table#members").await?;
            ensure!(
                table.contains("Ada Lovelace (e-1)"),
                "the manager shown: {table}"
            );
            browser.picture("directory").await?;
            let _ = std::fs::remove_dir_all(&dir);
            Ok(())
        }
    )
}

/// The id a console path names after `prefix` (`/console/campaigns/<id>?…` → `<id>`).
fn id_after(path: &str, prefix: &str) -> String {
    path.trim_start_matches(prefix)
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The value of a page's hidden `idempotency_key` field.
fn idempotency_key_in(html: &str) -> Option<String> {
    let marker = "name=\"idempotency_key\" value=\"";
    let rest = &html[html.find(marker)? + marker.len()..];
    Some(rest[..rest.find('"')?].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_campaign_form_submitted_twice_creates_one_campaign() -> Result<()> {
    let system = System::start(Options::default()).await?;
    let template = template(&system, "Submitted twice").await?;
    let (group, _) = group_through_api(&system, &["ada", "alan"]).await?;
    let cookie = sign_in_with_reqwest(&system.api, &system.key).await?;
    let (status, html) = console_get(&system.api, &cookie, "/console/campaigns/new").await?;
    ensure!(status == StatusCode::OK, "the form answered {status}");
    let csrf = csrf_in(&html).context("the form's CSRF token")?;
    let key = idempotency_key_in(&html).context("the form's idempotency key")?;
    let definition = notify_then_wait().to_string();
    let form = [
        ("csrf", csrf.as_str()),
        ("idempotency_key", key.as_str()),
        ("name", "Submitted twice"),
        ("title", "Submitted twice"),
        ("template", template.as_str()),
        ("groups", group.as_str()),
        ("definition_json", definition.as_str()),
    ];
    // A double click: the same form, sent twice.
    let mut landed = Vec::new();
    for _ in 0..2 {
        let response = plain_http()?
            .post(format!("{}/console/campaigns/new", system.api))
            .header(COOKIE, format!("{SESSION_COOKIE}={cookie}"))
            .form(&form)
            .send()
            .await?;
        ensure!(
            response.status().is_redirection(),
            "the form answered {}",
            response.status()
        );
        let to = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        landed.push(to);
    }
    ensure!(landed[0].starts_with("/console/campaigns/"), "{landed:?}");
    ensure!(
        landed[0] == landed[1],
        "both submits land on one campaign: {landed:?}"
    );
    let listed = system.get("/v1/campaigns?limit=10").await?;
    let named: Vec<&Value> = listed["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter(|c| c["name"] == "Submitted twice")
        .collect();
    ensure!(named.len() == 1, "one campaign, not {}", named.len());
    // A new form is a new campaign: its key differs.
    let (_, again) = console_get(&system.api, &cookie, "/console/campaigns/new").await?;
    ensure!(idempotency_key_in(&again).as_deref() != Some(key.as_str()));
    system.shutdown().await;
    Ok(())
}
