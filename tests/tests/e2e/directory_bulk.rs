//! Writing the directory by the organisation's own ids: one member at a time
//! (`PUT /v1/members/by-external-id/{external_id}`) and up to a thousand at once
//! (`POST /v1/members/bulk`), which writes every row or, if any row is bad, none.

use anyhow::Result;
use axum::http::StatusCode;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Options, System, postgres_configured};

/// The member with this external id, if the directory has one.
async fn member(system: &System, external_id: &str) -> Result<Option<Value>> {
    let page = system
        .get(&format!("/v1/members?external_id={external_id}"))
        .await?;
    Ok(page["items"]
        .as_array()
        .and_then(|items| items.first().cloned()))
}

async fn upsert(system: &System, external_id: &str, body: Value) -> Result<(StatusCode, Value)> {
    system
        .call(
            Method::PUT,
            &format!("/v1/members/by-external-id/{external_id}"),
            Some(body),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_put_by_external_id_is_created_then_updated_and_keeps_their_role() -> Result<()> {
    let system = System::start(Options {
        in_process_worker: false,
        ..Options::default()
    })
    .await?;
    let body = json!({ "email": "ann@acme.test", "display_name": "Ann",
                       "attributes": { "department": "Ops" } });
    let (status, created) = upsert(&system, "hr-1", body.clone()).await?;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        (
            &created["external_id"],
            &created["role_id"],
            &created["attributes"]
        ),
        (
            &json!("hr-1"),
            &json!("member"),
            &json!({ "department": "Ops" })
        )
    );
    // The same again changes nothing, and answers 200 with the member.
    let (status, again) = upsert(&system, "hr-1", body).await?;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, created);
    // A new profile replaces the old one whole (attributes too); the id stays.
    let (status, updated) = upsert(
        &system,
        "hr-1",
        json!({ "external_id": "hr-1", "email": "ann@acme.test", "display_name": "Ann Smith",
                "role_id": "admin" }),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["id"], created["id"]);
    assert_eq!(updated["display_name"], "Ann Smith");
    assert_eq!(updated["attributes"], json!({}));
    assert_eq!(updated["role_id"], "admin");
    // Without a role the member keeps the one they have.
    let (status, kept) = upsert(
        &system,
        "hr-1",
        json!({ "email": "ann@acme.test", "display_name": "Ann" }),
    )
    .await?;
    assert_eq!(
        (status, &kept["role_id"]),
        (StatusCode::OK, &json!("admin"))
    );

    // The path's external id wins: another in the body is refused, and nothing is written.
    let (status, problem) = upsert(
        &system,
        "hr-2",
        json!({ "external_id": "hr-3", "email": "b@acme.test", "display_name": "B" }),
    )
    .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["errors"][0]["pointer"], "/external_id");
    let (status, problem) = upsert(
        &system,
        "hr-2",
        json!({ "email": "not-an-address", "display_name": "B" }),
    )
    .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["errors"][0]["pointer"], "/email");
    let (status, problem) = upsert(
        &system,
        "hr-2",
        json!({ "email": "b@acme.test", "display_name": "B", "role_id": "no-such-role" }),
    )
    .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["errors"][0]["pointer"], "/role_id");
    assert!(member(&system, "hr-2").await?.is_none());
    assert!(member(&system, "hr-3").await?.is_none());

    // Someone who may write the directory but not hand out `admin` cannot give it, nor take
    // it away from a member who has it.
    let writer = system
        .store
        .create_role(
            &system.org_id,
            "Directory writer",
            &[
                pidgr_store::Permission::MembersWrite,
                pidgr_store::Permission::MembersRead,
            ]
            .into_iter()
            .collect(),
        )
        .await?;
    let writer_key = system
        .store
        .create_api_key(&system.org_id, "hr sync", &writer.id)
        .await?
        .secret;
    for (external_id, role) in [("hr-4", "admin"), ("hr-1", "member")] {
        let (status, answer) = system
            .call_as(
                Some(&writer_key),
                Method::PUT,
                &format!("/v1/members/by-external-id/{external_id}"),
                Some(json!({ "email": "x@acme.test", "display_name": "X", "role_id": role })),
            )
            .await?;
        assert_eq!(status, StatusCode::FORBIDDEN, "{external_id}: {answer}");
    }
    assert_eq!(
        member(&system, "hr-1").await.unwrap().unwrap()["role_id"],
        "admin"
    );
    system.shutdown().await;
    Ok(())
}

/// The bulk write's contract, on whichever database `system` runs.
async fn bulk_writes_every_row_or_none(system: &System) -> Result<()> {
    let row = |id: &str, name: &str| json!({ "external_id": id, "email": format!("{id}@acme.test"), "display_name": name });
    let (status, counts) = system
        .post(
            "/v1/members/bulk",
            json!({ "members": [row("b-1", "One"), row("b-2", "Two"), row("b-3", "Three")] }),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{counts}");
    assert_eq!(
        counts,
        json!({ "created": 3, "updated": 0, "unchanged": 0 })
    );
    let (status, counts) = system
        .post(
            "/v1/members/bulk",
            json!({ "members": [
                row("b-1", "One again"),
                row("b-2", "Two"),
                { "external_id": "b-4", "email": "b-4@acme.test", "display_name": "Four",
                  "attributes": { "site": "Lyon" }, "role_id": "admin" },
            ] }),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{counts}");
    assert_eq!(
        counts,
        json!({ "created": 1, "updated": 1, "unchanged": 1 })
    );
    let four = member(system, "b-4").await?.expect("b-4 was created");
    assert_eq!(
        (&four["role_id"], &four["attributes"]["site"]),
        (&json!("admin"), &json!("Lyon"))
    );
    assert_eq!(
        member(system, "b-1").await?.expect("b-1")["display_name"],
        "One again"
    );

    // One request with good rows and bad ones: a report of every bad row, nothing written.
    let (status, problem) = system
        .post(
            "/v1/members/bulk",
            json!({ "members": [
                row("b-5", "Five"),
                { "external_id": "b-6", "email": "no-at-sign", "display_name": "Six" },
                row("b-5", "Five twice"),
                { "external_id": "b-7", "email": "b-7@acme.test", "display_name": "Seven",
                  "role_id": "no-such-role" },
                { "external_id": "b-8", "email": "b-8@acme.test" },
                row("b-1", "One changed"),
                { "external_id": "b-9", "email": "b-9@acme.test", "display_name": "Nine",
                  "colour": "blue" },
            ] }),
        )
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["type"], "https://pidgr.dev/problems/validation");
    let errors: Vec<(u64, &str)> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            assert!(e["detail"].as_str().is_some_and(|d| !d.is_empty()), "{e}");
            (e["row"].as_u64().unwrap(), e["pointer"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        errors,
        vec![
            (1, "/members/1/email"),
            (2, "/members/2/external_id"),
            (3, "/members/3/role_id"),
            (4, "/members/4/display_name"),
            (6, "/members/6/colour"),
        ]
    );
    for untouched in ["b-5", "b-6", "b-7", "b-8", "b-9"] {
        assert!(member(system, untouched).await?.is_none(), "{untouched}");
    }
    assert_eq!(
        member(system, "b-1").await?.expect("b-1")["display_name"],
        "One again"
    );

    // More than a thousand rows is refused whole.
    let rows: Vec<Value> = (0..1001).map(|i| row(&format!("many-{i}"), "M")).collect();
    let (status, problem) = system
        .post("/v1/members/bulk", json!({ "members": rows }))
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["errors"][0]["pointer"], "/members");
    assert!(member(system, "many-0").await?.is_none());
    // A thousand is fine, in one request, even with attributes that make it larger than the
    // other routes' bodies may be.
    let note = "n".repeat(300);
    let rows: Vec<Value> = (0..1000)
        .map(|i| {
            let mut row = row(&format!("many-{i}"), "M");
            row["attributes"] = json!({ "note": note });
            row
        })
        .collect();
    let body = json!({ "members": rows });
    assert!(body.to_string().len() > 256 * 1024);
    let (status, counts) = system.post("/v1/members/bulk", body).await?;
    assert_eq!(status, StatusCode::OK, "{counts}");
    assert_eq!(counts["created"], 1000);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_write_writes_every_row_or_none_and_names_each_bad_row() -> Result<()> {
    let system = System::start(Options {
        in_process_worker: false,
        ..Options::default()
    })
    .await?;
    bulk_writes_every_row_or_none(&system).await?;
    system.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_write_on_postgresql_writes_every_row_or_none() -> Result<()> {
    if !postgres_configured("a_bulk_write_on_postgresql_writes_every_row_or_none") {
        return Ok(());
    }
    let system = System::start(Options {
        in_process_worker: false,
        postgres: true,
        ..Options::default()
    })
    .await?;
    bulk_writes_every_row_or_none(&system).await?;
    system.shutdown().await;
    Ok(())
}

/// Managers through the API: named by id or by external id on every write, listed as a
/// manager's reports, and refused with a 422 pointing at the field (unknown, another
/// organisation's member, the member themself, a loop), nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_manager_is_set_by_either_id_and_every_bad_one_is_pointed_at() -> Result<()> {
    let system = System::start(Options {
        in_process_worker: false,
        ..Options::default()
    })
    .await?;
    managers_are_set_and_refused_with_pointers(&system).await?;
    system.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_manager_on_postgresql_is_set_and_refused_with_pointers() -> Result<()> {
    if !postgres_configured("a_members_manager_on_postgresql_is_set_and_refused_with_pointers") {
        return Ok(());
    }
    let system = System::start(Options {
        in_process_worker: false,
        postgres: true,
        ..Options::default()
    })
    .await?;
    managers_are_set_and_refused_with_pointers(&system).await?;
    system.shutdown().await;
    Ok(())
}

/// The managers' contract, on whichever database `system` runs.
async fn managers_are_set_and_refused_with_pointers(system: &System) -> Result<()> {
    let person = |id: &str| json!({ "external_id": id, "email": format!("{id}@acme.test"), "display_name": id });
    let boss = system.create("/v1/members", person("boss")).await?;
    assert_eq!(boss["manager_id"], Value::Null);
    let mut body = person("ann");
    body["manager_id"] = boss["id"].clone();
    let ann = system.create("/v1/members", body).await?;
    assert_eq!(ann["manager_id"], boss["id"]);
    let (status, bob) = upsert(
        system,
        "bob",
        json!({ "email": "bob@acme.test", "display_name": "Bob", "manager_external_id": "ann" }),
    )
    .await?;
    assert_eq!(status, StatusCode::CREATED, "{bob}");
    assert_eq!(bob["manager_id"], ann["id"]);
    // Left out, the manager stays; null removes it.
    let (status, kept) = upsert(
        system,
        "bob",
        json!({ "email": "bob@acme.test", "display_name": "Bobby" }),
    )
    .await?;
    assert_eq!((status, &kept["manager_id"]), (StatusCode::OK, &ann["id"]));

    let reports = system
        .get(&format!(
            "/v1/members/{}/reports",
            boss["id"].as_str().unwrap()
        ))
        .await?;
    assert_eq!(
        reports["items"].as_array().map(Vec::len),
        Some(1),
        "{reports}"
    );
    assert_eq!(reports["items"][0]["id"], ann["id"]);
    let (status, _) = system
        .call(Method::GET, "/v1/members/no-such-member/reports", None)
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Refusals, each a 422 at the field that named the manager.
    let other_org = system.store.create_organisation("Elsewhere").await?;
    let outsider = system
        .store
        .create_member(
            &other_org.id,
            pidgr_store::NewMember {
                external_id: "out".into(),
                email: "out@elsewhere.test".into(),
                display_name: "Out".into(),
                role_id: "member".into(),
                ..Default::default()
            },
        )
        .await?;
    let boss_path = format!("/v1/members/{}", boss["id"].as_str().unwrap());
    let refusals = [
        (
            Method::POST,
            "/v1/members".to_owned(),
            json!({ "external_id": "cy", "email": "cy@acme.test", "display_name": "Cy",
                    "manager_id": outsider.id }),
            "/manager_id",
            "no member of this organisation",
        ),
        (
            Method::POST,
            "/v1/members".to_owned(),
            json!({ "external_id": "cy", "email": "cy@acme.test", "display_name": "Cy",
                    "manager_external_id": "out" }),
            "/manager_external_id",
            "no member of this organisation",
        ),
        (
            Method::PATCH,
            boss_path.clone(),
            json!({ "manager_id": boss["id"] }),
            "/manager_id",
            "their own manager",
        ),
        (
            Method::PATCH,
            boss_path.clone(),
            json!({ "manager_external_id": "bob" }),
            "/manager_external_id",
            "loop (by external id: boss → bob → ann → boss)",
        ),
        (
            Method::PUT,
            "/v1/members/by-external-id/boss".to_owned(),
            json!({ "email": "boss@acme.test", "display_name": "boss", "manager_id": ann["id"] }),
            "/manager_id",
            "loop",
        ),
        (
            Method::PATCH,
            boss_path.clone(),
            json!({ "manager_id": ann["id"], "manager_external_id": "ann" }),
            "/manager_external_id",
            "not both",
        ),
    ];
    for (method, path, body, pointer, detail) in refusals {
        let (status, problem) = system.call(method.clone(), &path, Some(body)).await?;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{method} {path}: {problem}"
        );
        assert_eq!(problem["errors"][0]["pointer"], pointer, "{problem}");
        assert!(
            problem["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains(detail)),
            "{problem}"
        );
    }
    assert!(member(system, "cy").await?.is_none());
    assert_eq!(
        member(system, "boss").await?.expect("boss")["manager_id"],
        Value::Null
    );

    // In bulk, a manager may come in a later row; bad ones are reported by row.
    let row = |id: &str, manager: &str| json!({ "external_id": id, "email": format!("{id}@acme.test"), "display_name": id, "manager_external_id": manager });
    let (status, counts) = system
        .post(
            "/v1/members/bulk",
            json!({ "members": [row("dee", "eve"), row("eve", "boss")] }),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{counts}");
    let eve = member(system, "eve").await?.expect("eve");
    assert_eq!(
        member(system, "dee").await?.expect("dee")["manager_id"],
        eve["id"]
    );
    assert_eq!(eve["manager_id"], boss["id"]);
    let (status, problem) = system
        .post(
            "/v1/members/bulk",
            json!({ "members": [
                row("fay", "gus"),
                row("gus", "fay"),
                row("hal", "nobody"),
                row("ivy", "ivy"),
                { "external_id": "jo", "email": "jo@acme.test", "display_name": "Jo",
                  "manager_id": null, "manager_external_id": null },
            ] }),
        )
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let errors: Vec<(u64, &str)> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| (e["row"].as_u64().unwrap(), e["pointer"].as_str().unwrap()))
        .collect();
    // Rows are checked first; the managers of rows that pass are resolved once all are in.
    assert_eq!(errors, vec![(4, "/members/4/manager_external_id")]);
    let (status, problem) = system
        .post(
            "/v1/members/bulk",
            json!({ "members": [row("fay", "gus"), row("gus", "fay"), row("hal", "nobody"), row("ivy", "ivy")] }),
        )
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let errors: Vec<(u64, &str)> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| (e["row"].as_u64().unwrap(), e["pointer"].as_str().unwrap()))
        .collect();
    assert_eq!(
        errors,
        vec![
            (2, "/members/2/manager_external_id"),
            (3, "/members/3/manager_external_id")
        ]
    );
    let (status, problem) = system
        .post(
            "/v1/members/bulk",
            json!({ "members": [row("fay", "gus"), row("gus", "fay")] }),
        )
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(
        problem["errors"].as_array().map(Vec::len),
        Some(2),
        "{problem}"
    );
    assert!(
        problem["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("loop")
    );
    for untouched in ["fay", "gus", "hal", "ivy", "jo"] {
        assert!(member(system, untouched).await?.is_none(), "{untouched}");
    }
    Ok(())
}
