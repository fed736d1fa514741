//! The admin and mobile API as its clients see it: every route against every kind of caller,
//! bad input to every route that writes, and a campaign built only through the public API.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::http::StatusCode;
use pidgr_api::{Access, RouteSpec};
use pidgr_store::Permission;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Options, Receiver, System, until};

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A definition that notifies and then waits an hour; it ends early when everyone has
/// acknowledged.
fn notify_then_wait() -> Value {
    json!({
        "version": 1,
        "steps": [
            { "id": "notify", "type": "SEND_NOTIFICATION", "config": {}, "transitions": { "next": "wait" } },
            { "id": "wait", "type": "DEADLINE_CHECK", "config": { "duration": "1h" }, "transitions": {} }
        ]
    })
}

/// A request body that sets FCM credentials (the fakes' test service account).
fn fcm_credentials() -> Value {
    let file = pidgr_push_fakes::test_service_account_json(
        "pidgr@acme-app.iam.gserviceaccount.com",
        "acme-app",
    );
    json!({ "service_account": serde_json::from_str::<Value>(&file).expect("JSON") })
}

/// A request body that sets APNs credentials (a key made for the test).
fn apns_credentials() -> Value {
    let (p8, _) = pidgr_push_fakes::generate_apns_key();
    json!({ "team_id": "TEAM123456", "key_id": "KEY1234567", "bundle_id": "com.acme.app",
            "environment": "sandbox", "private_key": p8 })
}

/// Org A's resources every route can be pointed at, created through the API as Super Admin.
struct Fixture {
    member: String,
    other_member: String,
    team: String,
    group: String,
    role: String,
    key: String,
    template: String,
    definition: String,
    campaign: String,
    delivery: String,
    deeplink_code: String,
    /// The code of a manager's escalation link (bob manages ann).
    escalation_code: String,
    /// A loopback receiver that accepts every webhook channel event (the channel's URL).
    hook: Receiver,
}

impl Fixture {
    async fn build(system: &System) -> Result<Fixture> {
        let hook = Receiver::start(Some(0)).await?;
        let mut members = Vec::new();
        for name in ["ann", "bob"] {
            let member = system
                .create(
                    "/v1/members",
                    json!({ "external_id": name, "email": format!("{name}@acme.test"), "display_name": name }),
                )
                .await?;
            let id = member["id"].as_str().context("member id")?.to_owned();
            // A phone each, so the fixture campaign's deliveries are SENT and it waits its hour
            // (without one they would fail at once and the campaign would finish early).
            system
                .create(
                    &format!("/v1/members/{id}/devices"),
                    json!({ "platform": "fcm", "token": format!("phone-{name}") }),
                )
                .await?;
            members.push(id);
        }
        let team = system.create("/v1/teams", json!({ "name": "Ops" })).await?;
        let group = system
            .create("/v1/groups", json!({ "name": "All" }))
            .await?;
        for member in &members {
            for set in [&team, &group] {
                let kind = if set["kind"] == "team" {
                    "teams"
                } else {
                    "groups"
                };
                let (status, body) = system
                    .call(
                        Method::PUT,
                        &format!(
                            "/v1/{kind}/{}/members/{member}",
                            set["id"].as_str().unwrap()
                        ),
                        None,
                    )
                    .await?;
                if status != StatusCode::CREATED {
                    bail!("adding a member answered {status}: {body}");
                }
            }
        }
        let role = system
            .create(
                "/v1/roles",
                json!({ "name": "Fixture role", "permissions": ["campaigns:read"] }),
            )
            .await?;
        let key = system
            .create(
                "/v1/api-keys",
                json!({ "name": "fixture", "role_id": "member" }),
            )
            .await?;
        let template = system
            .create(
                "/v1/templates",
                json!({ "name": "Policy", "title": "Hello {{name}}", "body": "Read **this**." }),
            )
            .await?;
        let definition = system
            .create(
                "/v1/workflow-definitions",
                json!({ "name": "Notify and wait", "definition": notify_then_wait() }),
            )
            .await?;
        let (status, _) = system
            .call(
                Method::PUT,
                "/v1/webhook-channel",
                Some(json!({ "url": hook.url })),
            )
            .await?;
        if status != StatusCode::CREATED {
            bail!("configuring the webhook channel answered {status}");
        }
        let campaign = system
            .create(
                "/v1/campaigns",
                json!({
                    "name": "Fixture", "title": "Fixture",
                    "template_id": template["id"],
                    "audience": { "groups": [group["id"]] },
                    "definition_id": definition["id"],
                }),
            )
            .await?;
        let campaign = campaign["id"].as_str().context("campaign id")?.to_owned();
        let (status, body) = system
            .post(&format!("/v1/campaigns/{campaign}/start"), json!({}))
            .await?;
        if status != StatusCode::ACCEPTED {
            bail!("start answered {status}: {body}");
        }
        system.deliveries_written(&campaign).await?;
        let deliveries = system.deliveries(&campaign).await?;
        let first = deliveries.first().context("a delivery")?;
        // bob manages ann: an ESCALATE step's record of the campaign names bob, with a link.
        system
            .store
            .update_member(
                &system.org_id,
                &members[0],
                pidgr_store::MemberUpdate {
                    manager_id: Some(Some(members[1].clone())),
                    ..Default::default()
                },
            )
            .await?;
        let escalations = system
            .store
            .record_escalations(&system.org_id, &campaign, "escalate")
            .await?;
        let escalation_code = escalations
            .escalations
            .first()
            .context("an escalation")?
            .code
            .clone();
        Ok(Fixture {
            member: members[0].clone(),
            other_member: members[1].clone(),
            team: team["id"].as_str().unwrap().to_owned(),
            group: group["id"].as_str().unwrap().to_owned(),
            role: role["id"].as_str().unwrap().to_owned(),
            key: key["id"].as_str().unwrap().to_owned(),
            template: template["id"].as_str().unwrap().to_owned(),
            definition: definition["id"].as_str().unwrap().to_owned(),
            campaign,
            delivery: first["id"].as_str().unwrap().to_owned(),
            deeplink_code: first["deeplink_code"].as_str().unwrap().to_owned(),
            escalation_code,
            hook,
        })
    }

    /// Every id of org A that must never show up in another organisation's answers.
    fn ids(&self) -> Vec<&str> {
        vec![
            &self.member,
            &self.other_member,
            &self.team,
            &self.group,
            &self.role,
            &self.key,
            &self.template,
            &self.definition,
            &self.campaign,
            &self.delivery,
            &self.deeplink_code,
            &self.escalation_code,
        ]
    }
}

/// A request for `spec` that succeeds for a caller allowed to make it: the path's ids filled
/// in (with fresh resources where success consumes one) and a valid body.
async fn prepare(
    system: &System,
    fx: &Fixture,
    spec: &RouteSpec,
) -> Result<(String, Option<Value>)> {
    let method = &spec.method;
    let destructive = *method == Method::DELETE;
    let mut path = spec.path.to_owned();
    let fresh_set = |kind: &'static str| async move {
        let set = system
            .create(&format!("/v1/{kind}"), json!({ "name": unique(kind) }))
            .await?;
        anyhow::Ok(set["id"].as_str().unwrap().to_owned())
    };
    let kind = if path.starts_with("/v1/teams") {
        "teams"
    } else {
        "groups"
    };
    if path.contains("{set_id}") {
        let set = if destructive || path.ends_with("{member_id}") {
            fresh_set(kind).await?
        } else if kind == "teams" {
            fx.team.clone()
        } else {
            fx.group.clone()
        };
        if path.ends_with("/members/{member_id}") && destructive {
            let (status, _) = system
                .call(
                    Method::PUT,
                    &format!("/v1/{kind}/{set}/members/{}", fx.member),
                    None,
                )
                .await?;
            anyhow::ensure!(status == StatusCode::CREATED);
        }
        path = path
            .replace("{set_id}", &set)
            .replace("{member_id}", &fx.member);
    }
    if path.contains("{member_id}") {
        let member = if destructive && path == "/v1/members/{member_id}" {
            let m = system
                .create("/v1/members", json!({ "external_id": unique("m"), "email": "x@acme.test", "display_name": "X" }))
                .await?;
            m["id"].as_str().unwrap().to_owned()
        } else {
            fx.member.clone()
        };
        path = path.replace("{member_id}", &member);
    }
    if path.contains("{device_id}") {
        let (status, device) = system
            .post(
                &format!("/v1/members/{}/devices", fx.member),
                json!({ "platform": "fcm", "token": unique("token") }),
            )
            .await?;
        anyhow::ensure!(status == StatusCode::CREATED, "{device}");
        path = path.replace("{device_id}", device["id"].as_str().unwrap());
    }
    if path.contains("{role_id}") {
        let role = if *method == Method::GET {
            fx.role.clone()
        } else {
            let r = system
                .create(
                    "/v1/roles",
                    json!({ "name": unique("role"), "permissions": [] }),
                )
                .await?;
            r["id"].as_str().unwrap().to_owned()
        };
        path = path.replace("{role_id}", &role);
    }
    if path.contains("{key_id}") {
        let key = if destructive {
            let k = system
                .create(
                    "/v1/api-keys",
                    json!({ "name": unique("key"), "role_id": "member" }),
                )
                .await?;
            k["id"].as_str().unwrap().to_owned()
        } else {
            fx.key.clone()
        };
        path = path.replace("{key_id}", &key);
    }
    if path.contains("{campaign_id}") {
        let campaign = if path.ends_with("/start") || path.ends_with("/cancel") {
            let c = system
                .create(
                    "/v1/campaigns",
                    json!({ "name": unique("c"), "title": "T", "template_id": fx.template,
                            "audience": { "members": [{ "member_id": fx.member }] },
                            "definition": notify_then_wait() }),
                )
                .await?;
            c["id"].as_str().unwrap().to_owned()
        } else {
            fx.campaign.clone()
        };
        path = path.replace("{campaign_id}", &campaign);
    }
    if path == "/v1/webhook-channel" && destructive {
        // Something to delete (it is an organisation's single channel).
        system
            .call(
                Method::PUT,
                "/v1/webhook-channel",
                Some(json!({ "url": fx.hook.url })),
            )
            .await?;
    }
    if path.starts_with("/v1/integrations/push/") && destructive {
        // Something to delete: org A's credentials for the platform.
        let body = if path.ends_with("/fcm") {
            fcm_credentials()
        } else {
            apns_credentials()
        };
        system.call(Method::PUT, &path, Some(body)).await?;
    }
    // A fresh external id: the upsert creates (201) for every caller allowed to.
    path = path.replace("{external_id}", &unique("ext"));
    if spec.path.starts_with("/v1/escalations/") {
        path = path.replace("{code}", &fx.escalation_code);
    }
    path = path
        .replace("{template_id}", &fx.template)
        .replace("{definition_id}", &fx.definition)
        .replace("{version}", "1")
        .replace("{delivery_id}", &fx.delivery)
        .replace("{code}", &fx.deeplink_code);

    let body = match (method.as_str(), spec.path) {
        ("POST", "/v1/roles") => json!({ "name": unique("role"), "permissions": [] }),
        ("PATCH", "/v1/roles/{role_id}") => json!({ "name": unique("renamed") }),
        ("POST", "/v1/api-keys") => json!({ "name": unique("key"), "role_id": "member" }),
        ("POST", "/v1/members") => {
            json!({ "external_id": unique("m"), "email": "m@acme.test", "display_name": "M" })
        }
        ("PATCH", "/v1/members/{member_id}") => json!({ "display_name": "Ann" }),
        ("PUT", "/v1/members/by-external-id/{external_id}") => {
            json!({ "email": "u@acme.test", "display_name": "U" })
        }
        ("POST", "/v1/members/bulk") => json!({ "members": [
            { "external_id": unique("b"), "email": "b@acme.test", "display_name": "B" },
        ] }),
        ("POST", "/v1/members/{member_id}/devices") => {
            json!({ "platform": "apns", "token": unique("token") })
        }
        ("POST", "/v1/teams" | "/v1/groups") => json!({ "name": unique("set") }),
        ("PATCH", "/v1/teams/{set_id}" | "/v1/groups/{set_id}") => json!({ "name": unique("set") }),
        ("POST", "/v1/templates") => {
            json!({ "name": unique("t"), "title": "Hi {{name}}", "body": "Body" })
        }
        ("POST", "/v1/templates/{template_id}/versions") => {
            json!({ "title": "Hi {{name}}", "body": "Body v2" })
        }
        ("POST", "/v1/templates/{template_id}/versions/{version}/preview") => {
            json!({ "member_id": fx.member })
        }
        ("POST", "/v1/workflow-definitions") => {
            json!({ "name": unique("d"), "definition": notify_then_wait() })
        }
        ("POST", "/v1/workflow-definitions/validate")
        | ("POST", "/v1/workflow-definitions/{definition_id}/versions") => {
            json!({ "definition": notify_then_wait() })
        }
        ("POST", "/v1/workflow-definitions/simulate") => {
            json!({ "definition": notify_then_wait(), "audience": { "size": 2 } })
        }
        ("POST", "/v1/campaigns") => json!({
            "name": unique("c"), "title": "T", "template_id": fx.template,
            "audience": { "teams": [fx.team] }, "definition": notify_then_wait(),
        }),
        ("PUT", "/v1/webhook-channel") => json!({ "url": fx.hook.url }),
        ("PUT", "/v1/integrations/push/fcm") => fcm_credentials(),
        ("PUT", "/v1/integrations/push/apns") => apns_credentials(),
        ("POST", "/v1/webhook-channel/test-event") => Value::Null,
        ("POST", _) => json!({}),
        _ => Value::Null,
    };
    Ok((path, (!body.is_null()).then_some(body)))
}

/// What a browser gets at `path` (no key): the status, headers that matter and the body.
struct PublicPage {
    status: StatusCode,
    content_type: String,
    csp: String,
    body: String,
}

/// The audit export is JSON lines, not one JSON document: its status, and its problem document
/// when refused.
async fn audit_export(
    system: &System,
    key: Option<&str>,
    path: &str,
) -> Result<(StatusCode, Value)> {
    let mut request = system.http.get(format!("{}{path}", system.api));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await?;
    let status = StatusCode::from_u16(response.status().as_u16())?;
    let text = response.text().await?;
    let answer = if status.is_success() {
        Value::Null
    } else {
        serde_json::from_str(&text).with_context(|| text.clone())?
    };
    Ok((status, answer))
}

async fn public_page(api: &str, path: &str) -> Result<PublicPage> {
    let response = reqwest::get(format!("{api}{path}")).await?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    Ok(PublicPage {
        status: StatusCode::from_u16(response.status().as_u16())?,
        content_type: header("content-type"),
        csp: header("content-security-policy"),
        body: response.text().await?,
    })
}

/// What an allowed caller gets from `spec`.
fn success(spec: &RouteSpec) -> StatusCode {
    match (spec.method.as_str(), spec.path) {
        ("POST", "/v1/api-keys") => StatusCode::CREATED,
        _ if spec.idempotent => StatusCode::CREATED,
        ("DELETE", _) => StatusCode::NO_CONTENT,
        ("PUT", path) if path.ends_with("/members/{member_id}") => StatusCode::CREATED,
        ("PUT", "/v1/members/by-external-id/{external_id}") => StatusCode::CREATED,
        ("POST", path) if path.ends_with("/start") => StatusCode::ACCEPTED,
        _ => StatusCode::OK,
    }
}

/// What another organisation's Super Admin gets: its own organisation's answer, which for
/// anything of org A is "not found".
fn other_organisation(spec: &RouteSpec) -> StatusCode {
    match (spec.method.as_str(), spec.path) {
        _ if spec.access == Access::Operator => StatusCode::UNAUTHORIZED,
        ("GET" | "DELETE", "/v1/webhook-channel")
        | ("POST", "/v1/webhook-channel/rotate-secret" | "/v1/webhook-channel/test-event") => {
            StatusCode::NOT_FOUND
        }
        ("PUT", "/v1/webhook-channel") => StatusCode::CREATED,
        // An external id is the organisation's own: the same one is a new member elsewhere.
        ("PUT", "/v1/members/by-external-id/{external_id}") => StatusCode::CREATED,
        ("DELETE", "/v1/integrations/push/fcm" | "/v1/integrations/push/apns") => {
            StatusCode::NOT_FOUND
        }
        // Org A's template and team are unknown to it: a validation problem, nothing written.
        ("POST", "/v1/campaigns") => StatusCode::UNPROCESSABLE_ENTITY,
        (_, path) if path.contains('{') => StatusCode::NOT_FOUND,
        _ => success(spec),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_caller_exactly_as_its_role_allows() -> Result<()> {
    let system = System::start(Options::default()).await?;
    let fx = Fixture::build(&system).await?;
    let org = &system.org_id;
    let store = &system.store;
    let custom_permissions = [
        Permission::CampaignsRead,
        Permission::TemplatesRead,
        Permission::MembersRead,
        Permission::TeamsRead,
        Permission::DeliveriesWrite,
    ];
    let custom = store
        .create_role(org, "Reader", &custom_permissions.into_iter().collect())
        .await?;
    // (who, their key, what they hold — None when they are not authenticated at all)
    type Caller = (&'static str, Option<String>, Option<Vec<Permission>>);
    let mut callers: Vec<Caller> = Vec::new();
    for role in pidgr_store::SYSTEM_ROLES {
        let key = store.create_api_key(org, role.name, role.id).await?.secret;
        callers.push((role.name, Some(key), Some(role.permissions.to_vec())));
    }
    let custom_key = store
        .create_api_key(org, "custom", &custom.id)
        .await?
        .secret;
    callers.push((
        "custom role",
        Some(custom_key),
        Some(custom_permissions.to_vec()),
    ));
    let revoked = store
        .create_api_key(org, "revoked", pidgr_store::SUPER_ADMIN)
        .await?;
    store.revoke_api_key(org, &revoked.key.id).await?;
    callers.push(("revoked key", Some(revoked.secret), None));
    callers.push(("no key", None, None));

    let other_org = store.create_organisation("Other").await?;
    let other_key = store
        .create_api_key(&other_org.id, "other", pidgr_store::SUPER_ADMIN)
        .await?
        .secret;

    let specs = pidgr_api::specs();
    let mut failures = Vec::new();
    let mut checked = 0;
    for spec in &specs {
        let mut expectations: Vec<(&str, Option<&str>, StatusCode)> = callers
            .iter()
            .map(|(name, key, permissions)| {
                let expected = match (spec.access, permissions) {
                    (Access::Public, _) => success(spec),
                    // No key at all: a browser, which gets the public page.
                    (Access::KeyOrPublicPage(_), _) if key.is_none() => StatusCode::OK,
                    // The codec server takes the operator's token; no API key opens it.
                    (Access::Operator, _) => StatusCode::UNAUTHORIZED,
                    (_, None) => StatusCode::UNAUTHORIZED,
                    (Access::Authenticated, Some(_)) => success(spec),
                    (Access::Requires(p) | Access::KeyOrPublicPage(p), Some(held))
                        if held.contains(&p) =>
                    {
                        success(spec)
                    }
                    (Access::Requires(_) | Access::KeyOrPublicPage(_), Some(_)) => {
                        StatusCode::FORBIDDEN
                    }
                };
                (*name, key.as_deref(), expected)
            })
            .collect();
        expectations.push((
            "another organisation",
            Some(&other_key),
            other_organisation(spec),
        ));
        for (caller, key, expected) in expectations {
            if caller == "another organisation" {
                // Its own (single) channel and credentials start out unconfigured every call.
                let _ = store.delete_webhook_channel(&other_org.id).await;
                for platform in pidgr_store::Platform::ALL {
                    let _ = store.delete_push_credentials(&other_org.id, platform).await;
                }
            }
            let (path, body) = prepare(&system, &fx, spec).await?;
            let body_text = body.as_ref().map(Value::to_string).unwrap_or_default();
            let (status, answer) = if matches!(spec.access, Access::KeyOrPublicPage(_))
                && key.is_none()
            {
                // The public page is HTML, not JSON.
                let page = public_page(&system.api, &path).await?;
                if page.body.contains("Fixture") || page.content_type != "text/html; charset=utf-8"
                {
                    failures.push(format!("{path}: not the public page: {}", page.body));
                }
                (page.status, Value::Null)
            } else if spec.path.ends_with("/audit") {
                audit_export(&system, key, &path).await?
            } else {
                system
                    .call_as(key, spec.method.clone(), &path, body)
                    .await?
            };
            checked += 1;
            if status != expected {
                failures.push(format!(
                    "{} {path} as {caller}: expected {expected}, got {status}: {answer}",
                    spec.method
                ));
            }
            if !status.is_success() && !answer.is_null() {
                anyhow::ensure!(
                    answer["type"].is_string(),
                    "{path}: not a problem document: {answer}"
                );
            }
            if caller == "another organisation" {
                let text = answer.to_string();
                let asked = format!("{path} {body_text}");
                for id in fx.ids() {
                    // Naming back an id the caller sent (in "not found" messages) leaks nothing.
                    if text.contains(id) && !asked.contains(id) {
                        failures.push(format!(
                            "{} {path} showed another organisation the id {id}: {text}",
                            spec.method
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} requests answered wrongly:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= specs.len() * 8);

    // A delegated administrator can hand out only what it holds itself.
    let delegator = store
        .create_role(
            org,
            "Delegator",
            &[
                Permission::RolesWrite,
                Permission::ApiKeysManage,
                Permission::CampaignsRead,
            ]
            .into_iter()
            .collect(),
        )
        .await?;
    let delegator_key = store
        .create_api_key(org, "delegator", &delegator.id)
        .await?
        .secret;
    let as_delegator = |method: Method, path: &'static str, body: Value| {
        system.call_as(Some(&delegator_key), method, path, Some(body))
    };
    let (status, _) = as_delegator(
        Method::POST,
        "/v1/roles",
        json!({ "name": "Runner", "permissions": ["campaigns:read", "campaigns:run"] }),
    )
    .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = as_delegator(
        Method::POST,
        "/v1/api-keys",
        json!({ "name": "escalate", "role_id": pidgr_store::SUPER_ADMIN }),
    )
    .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, reader) = as_delegator(
        Method::POST,
        "/v1/roles",
        json!({ "name": "Campaign reader", "permissions": ["campaigns:read"] }),
    )
    .await?;
    assert_eq!(status, StatusCode::CREATED, "{reader}");
    let (status, _) = as_delegator(
        Method::POST,
        "/v1/api-keys",
        json!({ "name": "reader", "role_id": reader["id"] }),
    )
    .await?;
    assert_eq!(status, StatusCode::CREATED);
    system.shutdown().await;
    Ok(())
}

/// A creating or updating route with a body that works, and a text field to spoil.
struct Writer {
    method: Method,
    path: String,
    body: Value,
    /// A top-level text field, for the wrong-type and over-long cases.
    text_field: &'static str,
    /// Whether `{}` lacks a required field (false for updates, where every field is optional).
    has_required: bool,
}

/// An oversize body sent only up to the byte that crosses the route's limit (`body`, one byte
/// over it), under a `Content-Length` that declares twice as much. The server refuses at that
/// byte and closes; with nothing more sent, the close is clean and its answer arrives. Sending
/// the rest races that close: the answer can be lost to the connection's reset, which says
/// nothing about the server. Answers the status, the content type and the body as JSON.
async fn declared_oversize(
    system: &System,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Result<(StatusCode, Option<reqwest::header::HeaderValue>, Value)> {
    let length = body.len() * 2;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = system.api.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nIdempotency-Key: {}\r\n\
         Content-Length: {length}\r\nConnection: close\r\n\r\n",
        system.key,
        uuid::Uuid::new_v4()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .context("the server waited for more of the body instead of refusing it")??;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").context("no header end")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let content_type = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-type")
            .then(|| reqwest::header::HeaderValue::from_str(value.trim()).ok())
            .flatten()
    });
    Ok((
        StatusCode::from_u16(status)?,
        content_type,
        serde_json::from_str(body.trim()).unwrap_or(Value::Null),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_to_every_writing_route_is_refused_and_nothing_is_written() -> Result<()> {
    let system = System::start(Options::default()).await?;
    let fx = Fixture::build(&system).await?;
    let w = |method: Method, path: String, body: Value, text_field, has_required| Writer {
        method,
        path,
        body,
        text_field,
        has_required,
    };
    let writers = vec![
        w(
            Method::POST,
            "/v1/roles".into(),
            json!({ "name": "R", "permissions": [] }),
            "name",
            true,
        ),
        w(
            Method::PATCH,
            format!("/v1/roles/{}", fx.role),
            json!({ "name": "R2" }),
            "name",
            false,
        ),
        w(
            Method::POST,
            "/v1/api-keys".into(),
            json!({ "name": "k", "role_id": "member" }),
            "name",
            true,
        ),
        w(
            Method::POST,
            "/v1/members".into(),
            json!({ "external_id": "zed", "email": "z@acme.test", "display_name": "Zed" }),
            "external_id",
            true,
        ),
        w(
            Method::PUT,
            "/v1/members/by-external-id/zed".into(),
            json!({ "email": "z@acme.test", "display_name": "Zed" }),
            "display_name",
            true,
        ),
        w(
            Method::POST,
            "/v1/members/bulk".into(),
            json!({ "members": [{ "external_id": "zed", "email": "z@acme.test", "display_name": "Zed" }] }),
            "members",
            true,
        ),
        w(
            Method::PATCH,
            format!("/v1/members/{}", fx.member),
            json!({ "display_name": "Ann B" }),
            "display_name",
            false,
        ),
        w(
            Method::POST,
            format!("/v1/members/{}/devices", fx.member),
            json!({ "platform": "fcm", "token": "t-1" }),
            "token",
            true,
        ),
        w(
            Method::POST,
            "/v1/teams".into(),
            json!({ "name": "New team" }),
            "name",
            true,
        ),
        w(
            Method::PATCH,
            format!("/v1/teams/{}", fx.team),
            json!({ "name": "Ops 2" }),
            "name",
            true,
        ),
        w(
            Method::POST,
            "/v1/groups".into(),
            json!({ "name": "New group" }),
            "name",
            true,
        ),
        w(
            Method::PATCH,
            format!("/v1/groups/{}", fx.group),
            json!({ "name": "All 2" }),
            "name",
            true,
        ),
        w(
            Method::POST,
            "/v1/templates".into(),
            json!({ "name": "T2", "title": "Hi", "body": "B" }),
            "title",
            true,
        ),
        w(
            Method::POST,
            format!("/v1/templates/{}/versions", fx.template),
            json!({ "title": "Hi", "body": "B" }),
            "title",
            true,
        ),
        w(
            Method::POST,
            format!("/v1/templates/{}/versions/1/preview", fx.template),
            json!({ "member_id": fx.member }),
            "member_id",
            false,
        ),
        w(
            Method::POST,
            "/v1/workflow-definitions".into(),
            json!({ "name": "D2", "definition": notify_then_wait() }),
            "name",
            true,
        ),
        w(
            Method::POST,
            format!("/v1/workflow-definitions/{}/versions", fx.definition),
            json!({ "definition": notify_then_wait() }),
            "definition",
            true,
        ),
        w(
            Method::POST,
            "/v1/workflow-definitions/validate".into(),
            json!({ "definition": notify_then_wait() }),
            "definition",
            true,
        ),
        w(
            Method::POST,
            "/v1/workflow-definitions/simulate".into(),
            json!({ "definition": notify_then_wait(), "audience": { "size": 2 } }),
            "definition",
            true,
        ),
        w(
            Method::POST,
            "/v1/campaigns".into(),
            json!({ "name": "C", "title": "T", "template_id": fx.template, "audience": { "teams": [fx.team] }, "definition": notify_then_wait() }),
            "name",
            true,
        ),
        w(
            Method::POST,
            format!("/v1/deliveries/{}/read", fx.delivery),
            json!({ "source": "inbox" }),
            "source",
            false,
        ),
        w(
            Method::POST,
            format!("/v1/deliveries/{}/ack", fx.delivery),
            json!({ "source": "inbox" }),
            "source",
            false,
        ),
        w(
            Method::PUT,
            "/v1/webhook-channel".into(),
            json!({ "url": "https://hooks.example.com/x" }),
            "url",
            true,
        ),
        w(
            Method::PUT,
            "/v1/integrations/push/fcm".into(),
            fcm_credentials(),
            "service_account",
            true,
        ),
        w(
            Method::PUT,
            "/v1/integrations/push/apns".into(),
            apns_credentials(),
            "team_id",
            true,
        ),
    ];
    // Every route that reads a body is in the list above.
    let listed: Vec<(Method, &str)> = pidgr_api::specs()
        .into_iter()
        .filter(|s| matches!(s.method, Method::POST | Method::PUT | Method::PATCH))
        .filter(|s| {
            !s.path.ends_with("/start")
                && !s.path.ends_with("/cancel")
                && !s.path.ends_with("/rotate-secret")
                && !s.path.ends_with("/test-event")
                // The codec server writes nothing; codec.rs tests its bodies.
                && !s.path.starts_with("/codec/")
        })
        .filter(|s| !(s.method == Method::PUT && s.path.ends_with("/members/{member_id}")))
        .map(|s| (s.method, s.path))
        .collect();
    assert_eq!(listed.len(), writers.len(), "writing routes: {listed:?}");

    // The fixture campaign writes its log until it waits; after that only requests write.
    until("the fixture campaign to log its wait", || async {
        let activity = system.activity(&fx.campaign).await?;
        Ok(activity
            .iter()
            .any(|e| e["step_id"] == "wait")
            .then_some(()))
    })
    .await?;
    let before = pidgr_store::testing::row_counts(&system.store).await?;
    let long = "x".repeat(70_000);
    let mut failures = Vec::new();
    for writer in &writers {
        // The bulk route takes larger bodies than the others (4 MiB; the others 256 KiB).
        let limit = if writer.path.ends_with("/bulk") {
            4 * 1024 * 1024
        } else {
            256 * 1024
        };
        let mut cases: Vec<(&str, Vec<u8>, StatusCode)> = vec![
            (
                "malformed JSON",
                b"{\"name\": ".to_vec(),
                StatusCode::BAD_REQUEST,
            ),
            (
                "oversize body",
                vec![b' '; limit + 1],
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
        ];
        let mut unknown = writer.body.clone();
        unknown["unexpected"] = json!(1);
        cases.push((
            "unknown field",
            unknown.to_string().into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ));
        // The validate route checks any JSON as a definition and answers `valid: false`.
        if !writer.path.ends_with("/validate") {
            let mut wrong_type = writer.body.clone();
            wrong_type[writer.text_field] = json!(12345);
            cases.push((
                "wrong type",
                wrong_type.to_string().into_bytes(),
                StatusCode::UNPROCESSABLE_ENTITY,
            ));
        }
        if writer.text_field != "definition" {
            let mut over_long = writer.body.clone();
            over_long[writer.text_field] = json!(long);
            cases.push((
                "over-long string",
                over_long.to_string().into_bytes(),
                StatusCode::UNPROCESSABLE_ENTITY,
            ));
        }
        if writer.has_required {
            cases.push((
                "missing fields",
                b"{}".to_vec(),
                StatusCode::UNPROCESSABLE_ENTITY,
            ));
        }
        for (case, body, expected) in cases {
            let (status, content_type, problem) = if case == "oversize body" {
                declared_oversize(&system, &writer.method, &writer.path, &body).await?
            } else {
                let response = system
                    .http
                    .request(
                        writer.method.clone(),
                        format!("{}{}", system.api, writer.path),
                    )
                    .bearer_auth(&system.key)
                    .header("content-type", "application/json")
                    .header("idempotency-key", uuid::Uuid::new_v4().to_string())
                    .body(body)
                    .send()
                    .await?;
                let status = response.status();
                let content_type = response.headers().get("content-type").cloned();
                let problem: Value = response.json().await.unwrap_or(Value::Null);
                (status, content_type, problem)
            };
            if status.as_u16() != expected.as_u16()
                || content_type.as_ref().and_then(|v| v.to_str().ok())
                    != Some("application/problem+json")
            {
                failures.push(format!(
                    "{} {} with {case}: expected {expected} problem, got {status} {content_type:?} {problem}",
                    writer.method, writer.path
                ));
                continue;
            }
            if expected == StatusCode::UNPROCESSABLE_ENTITY {
                let pointer = problem["errors"][0]["pointer"].as_str().unwrap_or_default();
                let expected_pointer = match case {
                    "unknown field" => "/unexpected".to_owned(),
                    "missing fields" => String::new(),
                    _ => format!("/{}", writer.text_field),
                };
                if !pointer.starts_with(&expected_pointer) {
                    failures.push(format!(
                        "{} {} with {case}: pointer {pointer:?}, expected {expected_pointer:?}: {problem}",
                        writer.method, writer.path
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let after = pidgr_store::testing::row_counts(&system.store).await?;
    assert_eq!(before, after, "bad input changed the database");
    system.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_built_only_through_the_public_api_ends_acknowledged_in_the_inbox() -> Result<()>
{
    let system = System::start(Options::default()).await?;
    // The organisation and its first key come from the CLI, as an operator would make them.
    let output = tokio::process::Command::new(crate::harness::pidgr_binary()?)
        .args(["org", "create", "Acme Corp"])
        .env("PIDGR_ENVIRONMENT", "development")
        .env("DATABASE_URL", &system.config.database_url)
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let super_admin = String::from_utf8(output.stdout)?.trim().to_owned();
    let as_key = |key: String| {
        let system = &system;
        move |method: Method, path: String, body: Option<Value>| {
            let key = key.clone();
            async move { system.call_as(Some(&key), method, &path, body).await }
        }
    };
    let root = as_key(super_admin.clone());
    let (status, org) = root(Method::GET, "/v1/organisation".into(), None).await?;
    assert_eq!(
        (status, org["name"].as_str()),
        (StatusCode::OK, Some("Acme Corp"))
    );

    // An Admin key for the admin work, a Member-role key for the mobile backend... which
    // needs deliveries:write, so it gets a custom role holding just that.
    let (status, admin_key) = root(
        Method::POST,
        "/v1/api-keys".into(),
        Some(json!({ "name": "dashboard", "role_id": "admin" })),
    )
    .await?;
    assert_eq!(status, StatusCode::CREATED, "{admin_key}");
    let admin = as_key(admin_key["secret"].as_str().context("secret")?.to_owned());
    let (status, mobile_role) = root(
        Method::POST,
        "/v1/roles".into(),
        Some(json!({ "name": "Mobile backend", "permissions": ["deliveries:write"] })),
    )
    .await?;
    assert_eq!(status, StatusCode::CREATED, "{mobile_role}");
    let (_, mobile_key) = root(
        Method::POST,
        "/v1/api-keys".into(),
        Some(json!({ "name": "mobile", "role_id": mobile_role["id"] })),
    )
    .await?;
    let mobile = as_key(mobile_key["secret"].as_str().context("secret")?.to_owned());

    let mut members = BTreeMap::new();
    for (external, department) in [("e-1", "Ops"), ("e-2", "Ops"), ("e-3", "Sales")] {
        let (status, member) = admin(
            Method::POST,
            "/v1/members".into(),
            Some(
                json!({ "external_id": external, "email": format!("{external}@acme.test"),
                         "display_name": format!("Person {external}"),
                         "attributes": { "department": department } }),
            ),
        )
        .await?;
        assert_eq!(status, StatusCode::CREATED, "{member}");
        let member_id = member["id"].as_str().unwrap().to_owned();
        // Each has a phone; the system runs with the `log` provider, which records the pushes.
        let (status, device) = admin(
            Method::POST,
            format!("/v1/members/{member_id}/devices"),
            Some(json!({ "platform": "fcm", "token": format!("phone-{external}") })),
        )
        .await?;
        assert_eq!(status, StatusCode::CREATED, "{device}");
        members.insert(external, member_id);
    }
    let (_, team) = admin(
        Method::POST,
        "/v1/teams".into(),
        Some(json!({ "name": "Operations" })),
    )
    .await?;
    let (_, group) = admin(
        Method::POST,
        "/v1/groups".into(),
        Some(json!({ "name": "Fire wardens" })),
    )
    .await?;
    for (set, kind, who) in [
        (&team, "teams", ["e-1", "e-2"]),
        (&group, "groups", ["e-2", "e-3"]),
    ] {
        for external in who {
            let (status, _) = admin(
                Method::PUT,
                format!(
                    "/v1/{kind}/{}/members/{}",
                    set["id"].as_str().unwrap(),
                    members[external]
                ),
                None,
            )
            .await?;
            assert_eq!(status, StatusCode::CREATED);
        }
    }
    let (status, template) = admin(
        Method::POST,
        "/v1/templates".into(),
        Some(
            json!({ "name": "Evacuation drill", "title": "Drill for {{department}}",
                     "body": "Hello {{name}}, meet at **{{place}}**.<script>alert(1)</script>" }),
        ),
    )
    .await?;
    assert_eq!(status, StatusCode::CREATED, "{template}");
    assert_eq!(
        template["latest"]["variables"],
        json!(["department", "name", "place"])
    );
    let template_id = template["id"].as_str().unwrap().to_owned();
    let (status, v2) = admin(
        Method::POST,
        format!("/v1/templates/{template_id}/versions"),
        Some(json!({ "title": "CHANGED", "body": "Version two" })),
    )
    .await?;
    assert_eq!(
        (status, v2["version"].as_i64()),
        (StatusCode::CREATED, Some(2))
    );

    // A variable some recipients cannot resolve is refused, naming it and counting them.
    let (status, problem) = admin(
        Method::POST,
        "/v1/campaigns".into(),
        Some(json!({
            "name": "Drill Q4", "title": "Evacuation drill", "template_id": template_id,
            "template_version": 1,
            "audience": { "teams": [team["id"]], "groups": [group["id"]],
                          "members": [{ "member_id": members["e-1"], "variables": { "place": "the roof" } }] },
            "definition": notify_then_wait(),
        })),
    )
    .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let message = problem["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("{{place}}") && message.contains("2 of 3 recipients"),
        "{problem}"
    );

    let definition = json!({
        "version": 1,
        "steps": [
            { "id": "notify", "type": "SEND_NOTIFICATION",
              "config": { "variables": { "place": "the car park" } }, "transitions": { "next": "wait" } },
            { "id": "wait", "type": "DEADLINE_CHECK", "config": { "duration": "1h" }, "transitions": {} }
        ]
    });
    let create = json!({
        "name": "Drill Q4", "title": "Evacuation drill",
        "template_id": template_id, "template_version": 1,
        "audience": { "teams": [team["id"]], "groups": [group["id"]],
                      "members": [{ "member_id": members["e-1"], "variables": { "place": "the roof" } }] },
        "definition": definition,
    });
    // Creating with an Idempotency-Key: a retry answers the first campaign; reusing the key
    // for another request is refused.
    let idempotent = |body: &Value| {
        system
            .http
            .post(format!("{}/v1/campaigns", system.api))
            .bearer_auth(admin_key["secret"].as_str().unwrap())
            .header("idempotency-key", "drill-q4")
            .json(body)
    };
    let first = idempotent(&create).send().await?;
    assert_eq!(first.status().as_u16(), 201);
    let campaign: Value = first.json().await?;
    let retry = idempotent(&create).send().await?;
    assert_eq!(retry.status().as_u16(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.json::<Value>().await?["id"], campaign["id"]);
    let mut changed = create.clone();
    changed["name"] = json!("Another");
    assert_eq!(idempotent(&changed).send().await?.status().as_u16(), 422);
    let (_, listed) = admin(Method::GET, "/v1/campaigns".into(), None).await?;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "one campaign: {listed}"
    );
    assert_eq!(
        (
            campaign["recipients"].as_u64(),
            campaign["template_version"].as_i64()
        ),
        (Some(3), Some(1))
    );
    let campaign_id = campaign["id"].as_str().unwrap().to_owned();
    let (_, preview) = admin(
        Method::GET,
        format!("/v1/campaigns/{campaign_id}/preview"),
        None,
    )
    .await?;
    assert_eq!(preview["recipients"], 3, "{preview}");

    let (status, started) = admin(
        Method::POST,
        format!("/v1/campaigns/{campaign_id}/start"),
        None,
    )
    .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    // The workflow writes the deliveries after the start request has answered.
    until("the campaign's deliveries", || async {
        let (_, view) = admin(Method::GET, format!("/v1/campaigns/{campaign_id}"), None).await?;
        Ok((view["total"] == 3 && view["recipients"] == 3).then_some(()))
    })
    .await?;
    // Starting again changes nothing.
    let (status, _) = admin(
        Method::POST,
        format!("/v1/campaigns/{campaign_id}/start"),
        None,
    )
    .await?;
    assert_eq!(status, StatusCode::OK);

    // The mobile backend: inbox, READ, ACK for each member.
    for (external, member_id) in &members {
        let (status, inbox) =
            mobile(Method::GET, format!("/v1/members/{member_id}/inbox"), None).await?;
        assert_eq!(status, StatusCode::OK, "{inbox}");
        let item = &inbox["items"][0];
        assert_eq!(item["campaign"]["id"], campaign_id.as_str());
        assert_eq!(item["pending"], true);
        let department = if *external == "e-3" { "Sales" } else { "Ops" };
        assert_eq!(
            item["message"]["title"],
            format!("Drill for {department}"),
            "pinned to version 1"
        );
        let place = if *external == "e-1" {
            "the roof"
        } else {
            "the car park"
        };
        let html = item["message"]["body_html"].as_str().unwrap();
        assert!(
            html.contains(&format!("<strong>{place}</strong>")),
            "{html}"
        );
        assert!(!html.contains("<script"), "{html}");
        let code = item["delivery"]["deeplink_code"].as_str().unwrap();
        assert!(
            item["deeplink_url"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/c/{code}"))
        );
        let (status, resolved) = mobile(Method::GET, format!("/c/{code}"), None).await?;
        assert_eq!(
            (status, &resolved["delivery"]["id"]),
            (StatusCode::OK, &item["delivery"]["id"])
        );
        let delivery = item["delivery"]["id"].as_str().unwrap();
        for action in ["read", "ack", "ack"] {
            let (status, answer) = mobile(
                Method::POST,
                format!("/v1/deliveries/{delivery}/{action}"),
                Some(json!({ "source": "inbox" })),
            )
            .await?;
            assert_eq!(status, StatusCode::OK, "{action}: {answer}");
        }
    }
    let done = until("the campaign to complete", || async {
        let (_, campaign) =
            admin(Method::GET, format!("/v1/campaigns/{campaign_id}"), None).await?;
        Ok((campaign["status"] == "COMPLETED").then_some(campaign))
    })
    .await?;
    assert_eq!(done["counts"]["acknowledged"], 3);
    let (_, inbox) = mobile(
        Method::GET,
        format!("/v1/members/{}/inbox", members["e-2"]),
        None,
    )
    .await?;
    let item = &inbox["items"][0];
    assert_eq!(
        (&item["delivery"]["status"], &item["pending"]),
        (&json!("ACKNOWLEDGED"), &json!(false))
    );
    // The webhook channel's secret is shown when generated and on rotation, never on reads.
    let (status, channel) = admin(
        Method::PUT,
        "/v1/webhook-channel".into(),
        Some(json!({ "url": "https://hooks.example.com/pidgr", "timeout_ms": 3000 })),
    )
    .await?;
    assert_eq!(status, StatusCode::CREATED, "{channel}");
    let secret = channel["secret"].as_str().context("secret")?.to_owned();
    let (_, read) = admin(Method::GET, "/v1/webhook-channel".into(), None).await?;
    assert!(read.get("secret").is_none() && !read.to_string().contains(&secret));
    assert_eq!(read["timeout_ms"], 3000);
    let (_, rotated) = admin(
        Method::POST,
        "/v1/webhook-channel/rotate-secret".into(),
        None,
    )
    .await?;
    assert_ne!(rotated["secret"].as_str(), Some(secret.as_str()));

    // The mobile key can do its job and nothing else.
    let (status, _) = mobile(Method::GET, "/v1/campaigns".into(), None).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    system.shutdown().await;
    Ok(())
}

/// Every item of a list, following `next_cursor` with pages of `limit` (`path` has a query).
async fn every_page(system: &System, path: &str, limit: u32) -> Result<Vec<Value>> {
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let page = system
            .get(&format!("{path}&limit={limit}&after={after}"))
            .await?;
        all.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => after = next.to_owned(),
            None => return Ok(all),
        }
    }
}

/// A campaign for the group, through the API ("Hello {{name}}" / "Read **this**."), as a draft.
async fn draft_for(system: &System, group: &str, title: &str) -> Result<String> {
    let template = system
        .create(
            "/v1/templates",
            json!({ "name": unique("t"), "title": "Hello {{name}}", "body": "Read **this**." }),
        )
        .await?;
    let campaign = system
        .create(
            "/v1/campaigns",
            json!({ "name": title, "title": title, "template_id": template["id"],
                    "audience": { "groups": [group] }, "definition": notify_then_wait() }),
        )
        .await?;
    Ok(campaign["id"].as_str().context("campaign id")?.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_filter_by_status_page_by_page_and_the_campaign_list_carries_counts()
-> Result<()> {
    let system = System::start(Options::default()).await?;
    let users: Vec<String> = (0..7).map(|i| format!("f-{i}")).collect();
    let group = system
        .group_of(&users.iter().map(String::as_str).collect::<Vec<_>>())
        .await?;
    let active = draft_for(&system, &group, "Filtered").await?;
    system.start_draft(&active).await?;
    until("everyone notified", || async {
        let view = system.get(&format!("/v1/campaigns/{active}")).await?;
        Ok((view["counts"]["sent"] == 7).then_some(()))
    })
    .await?;
    let deliveries = system.deliveries(&active).await?;
    let id = |d: &Value| d["id"].as_str().unwrap_or_default().to_owned();
    for (index, action) in [(1, "ack"), (4, "ack"), (2, "read")] {
        let (status, answer) = system
            .post(
                &format!("/v1/deliveries/{}/{action}", id(&deliveries[index])),
                json!({}),
            )
            .await?;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let ids_of = |items: &[Value]| items.iter().map(id).collect::<Vec<_>>();
    let expect = |indexes: &[usize]| {
        indexes
            .iter()
            .map(|&i| id(&deliveries[i]))
            .collect::<Vec<_>>()
    };

    // "Not acknowledged", two a page: every one of them once, in audience order.
    let base = format!("/v1/campaigns/{active}/deliveries?");
    let waiting = every_page(&system, &format!("{base}status=PENDING,SENT,READ"), 2).await?;
    assert_eq!(ids_of(&waiting), expect(&[0, 2, 3, 5, 6]));
    assert!(waiting.iter().all(|d| d["status"] != "ACKNOWLEDGED"));
    let positions: Vec<i64> = waiting
        .iter()
        .map(|d| d["position"].as_i64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    let acknowledged = every_page(&system, &format!("{base}status=ACKNOWLEDGED"), 1).await?;
    assert_eq!(ids_of(&acknowledged), expect(&[1, 4]));
    // A status named twice counts once; several merge in audience order.
    let read_or_acked = every_page(
        &system,
        &format!("{base}status=ACKNOWLEDGED,READ,ACKNOWLEDGED"),
        500,
    )
    .await?;
    assert_eq!(ids_of(&read_or_acked), expect(&[1, 2, 4]));
    assert!(
        every_page(&system, &format!("{base}status=MISSED"), 10)
            .await?
            .is_empty()
    );
    for bad in ["SENT,DONE", "sent", ""] {
        let (status, problem) = system
            .call(Method::GET, &format!("{base}status={bad}"), None)
            .await?;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {problem}");
        let message = problem["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("status") && message.contains("ACKNOWLEDGED"),
            "{problem}"
        );
    }

    // The list: counts for every campaign, as the campaign itself shows them.
    let draft = draft_for(&system, &group, "Draft").await?;
    let listed = every_page(&system, "/v1/campaigns?", 1).await?;
    let find = |items: &[Value], id: &str| items.iter().find(|c| c["id"] == id).cloned();
    let active_item = find(&listed, &active).context("the active campaign is listed")?;
    let active_view = system.get(&format!("/v1/campaigns/{active}")).await?;
    assert_eq!(active_item["counts"], active_view["counts"]);
    assert_eq!(
        active_item["counts"],
        json!({ "pending": 0, "sent": 4, "read": 1, "acknowledged": 2, "missed": 0, "failed": 0 })
    );
    assert_eq!(active_item["total"], 7);
    let draft_item = find(&listed, &draft).context("the draft is listed")?;
    assert_eq!(draft_item["total"], 0);
    assert_eq!(draft_item["counts"]["pending"], 0);
    // Filtered by status.
    let drafts = every_page(&system, "/v1/campaigns?status=CREATED", 500).await?;
    assert!(find(&drafts, &draft).is_some() && find(&drafts, &active).is_none());
    assert!(drafts.iter().all(|c| c["status"] == "CREATED"));
    let running = every_page(&system, "/v1/campaigns?status=ACTIVE", 1).await?;
    assert_eq!(ids_of(&running), vec![active.clone()]);
    assert_eq!(running[0]["counts"]["acknowledged"], 2);
    // Newest first, page by page: the same campaigns the other way round.
    let newest = every_page(&system, "/v1/campaigns?order=newest", 1).await?;
    let mut oldest = ids_of(&listed);
    oldest.reverse();
    assert_eq!(ids_of(&newest), oldest);
    let newest_drafts = every_page(&system, "/v1/campaigns?order=newest&status=CREATED", 1).await?;
    assert_eq!(newest_drafts[0]["id"], draft.as_str());
    for bad in ["status=RUNNING", "order=sideways"] {
        let (status, problem) = system
            .call(Method::GET, &format!("/v1/campaigns?{bad}"), None)
            .await?;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {problem}");
    }
    // Newest first, a page of one at a time: exactly the oldest-first list backwards, with
    // and without a status filter.
    let newest = every_page(&system, "/v1/campaigns?order=newest", 1).await?;
    let mut oldest = ids_of(&listed);
    oldest.reverse();
    assert_eq!(ids_of(&newest), oldest);
    assert_eq!(ids_of(&newest)[0], draft);
    let newest_drafts = every_page(&system, "/v1/campaigns?order=newest&status=CREATED", 1).await?;
    let mut drafts_backwards = ids_of(&drafts);
    drafts_backwards.reverse();
    assert_eq!(ids_of(&newest_drafts), drafts_backwards);
    let (status, problem) = system
        .call(Method::GET, "/v1/campaigns?order=random", None)
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    system.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_at_a_deeplink_gets_one_bare_page_for_any_code_and_a_key_still_gets_json()
-> Result<()> {
    let system = System::start(Options::default()).await?;
    let group = system.group_of(&["deep-1"]).await?;
    let campaign = draft_for(&system, &group, "Secret drill").await?;
    system.start_draft(&campaign).await?;
    let delivery = system.deliveries(&campaign).await?.remove(0);
    let code = delivery["deeplink_code"]
        .as_str()
        .context("code")?
        .to_owned();

    // A browser: the landing page, which shows nothing of the campaign or the recipient.
    let real = public_page(&system.api, &format!("/c/{code}")).await?;
    assert_eq!(real.status, StatusCode::OK);
    assert_eq!(real.content_type, "text/html; charset=utf-8");
    assert!(real.csp.starts_with("default-src 'none'"), "{}", real.csp);
    assert!(real.body.contains("Pidgr") && real.body.contains("Open in the app"));
    for secret in ["Secret drill", "Read", "deep-1", "example.com", "Hello"] {
        assert!(!real.body.contains(secret), "{secret}: {}", real.body);
    }
    assert!(!real.body.contains("<script") && !real.body.contains("<style"));
    // The button is the deeplink itself (no URL scheme configured).
    assert!(
        real.body
            .contains(&format!("href=\"{}/c/{code}\"", system.api))
    );
    // A made-up code, and one that tries to be markup, get the very same page.
    for fake in ["0123456789abcdef0123456789abcdef", "x%22%3E%3Cscript%3E"] {
        let page = public_page(&system.api, &format!("/c/{fake}")).await?;
        assert_eq!(
            (page.status, &page.content_type, &page.csp),
            (real.status, &real.content_type, &real.csp)
        );
        // The code comes back only inside the button's link, percent-encoded.
        assert_eq!(
            page.body.replace(fake, "CODE"),
            real.body.replace(&code, "CODE"),
            "{fake}"
        );
        assert!(!page.body.contains("<script"));
    }

    // The mobile backend's key: the JSON it always had; a made-up code is a 404.
    let (status, item) = system
        .call(Method::GET, &format!("/c/{code}"), None)
        .await?;
    assert_eq!(status, StatusCode::OK, "{item}");
    assert_eq!(item["delivery"]["id"], delivery["id"]);
    assert_eq!(item["campaign"]["title"], "Secret drill");
    let (status, _) = system.call(Method::GET, "/c/nope", None).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A key that fails is refused, never shown the page.
    let (status, _) = system
        .call_as(
            Some("pidgr_made-up"),
            Method::GET,
            &format!("/c/{code}"),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let member_key = system
        .store
        .create_api_key(&system.org_id, "member", "member")
        .await?
        .secret;
    let (status, _) = system
        .call_as(Some(&member_key), Method::GET, &format!("/c/{code}"), None)
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The app-link files, as configured for every test system.
    let aasa = system
        .get("/.well-known/apple-app-site-association")
        .await?;
    let details = &aasa["applinks"]["details"][0];
    assert_eq!(details["appIDs"], json!([crate::harness::E2E_IOS_APP_ID]));
    assert_eq!(details["paths"], json!(["/c/*"]));
    let links = system.get("/.well-known/assetlinks.json").await?;
    assert_eq!(
        links[0]["relation"],
        json!(["delegate_permission/common.handle_all_urls"])
    );
    assert_eq!(
        links[0]["target"],
        json!({ "namespace": "android_app", "package_name": crate::harness::E2E_ANDROID_PACKAGE,
                "sha256_cert_fingerprints": [crate::harness::E2E_ANDROID_FINGERPRINT] })
    );

    // A server without apps configured has no files, and one with a URL scheme opens it;
    // its browsers are charged to their address (a burst of 3 here).
    let bare = system
        .api_server_with(|config| {
            config.ios_app_ids.clear();
            config.android_package = None;
            config.android_cert_fingerprints.clear();
            config.app_url_scheme = Some("acme-pidgr".into());
            config.rate_limit_per_address = 1;
            config.rate_limit_per_address_burst = 3;
        })
        .await?;
    // The key is seen once before the address is spent (a key the server has never seen is
    // charged to its address until it proves valid).
    let keyed = |url: String| {
        let key = system.key.clone();
        async move {
            let response = reqwest::Client::new()
                .get(url)
                .bearer_auth(key)
                .send()
                .await?;
            anyhow::Ok(response.status().as_u16())
        }
    };
    assert_eq!(keyed(format!("{bare}/c/{code}")).await?, 200);
    let page = public_page(&bare, &format!("/c/{code}")).await?;
    assert!(
        page.body
            .contains(&format!("href=\"acme-pidgr://c/{code}\"")),
        "{}",
        page.body
    );
    for file in ["apple-app-site-association", "assetlinks.json"] {
        let page = public_page(&bare, &format!("/.well-known/{file}")).await?;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{file}");
    }
    let mut limited = false;
    for _ in 0..20 {
        if public_page(&bare, "/c/whatever").await?.status == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
    }
    assert!(limited, "browsers at deeplinks count against their address");
    // The key's requests are its own, whatever its address has spent.
    assert_eq!(keyed(format!("{bare}/c/{code}")).await?, 200);
    system.shutdown().await;
    Ok(())
}
