//! CALL_WEBHOOK in parts: a campaign with more deliveries than the part size is reported in
//! consecutive POSTs, each with the campaign's summary and its `part`, and a retried attempt
//! resumes at the part that failed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, ensure};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::harness::{Options, Received, System, example_definition};

/// A webhook receiver on loopback that answers requests with `plan` in order, then 200.
async fn scripted_receiver(
    plan: Vec<StatusCode>,
) -> Result<(String, mpsc::UnboundedReceiver<Received>)> {
    let (tx, requests) = mpsc::unbounded_channel();
    let plan = Arc::new(Mutex::new(VecDeque::from(plan)));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, raw: axum::body::Bytes| {
            let (tx, plan) = (tx.clone(), plan.clone());
            async move {
                let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
                let at = std::time::Instant::now();
                let _ = tx.send(Received {
                    headers,
                    body,
                    raw,
                    at,
                });
                let planned = plan.lock().expect("plan").pop_front();
                planned.unwrap_or(StatusCode::OK)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, requests))
}

async fn next(requests: &mut mpsc::UnboundedReceiver<Received>) -> Result<Received> {
    tokio::time::timeout(crate::harness::PATIENCE, requests.recv())
        .await
        .context("waiting for a webhook request")?
        .context("receiver closed")
}

/// Acknowledges every delivery that was sent (the FAILED ones cannot be).
async fn ack_sent(system: &System, campaign: &str) -> Result<()> {
    for delivery in system.deliveries(campaign).await? {
        if delivery["status"] == "FAILED" {
            continue;
        }
        let id = delivery["id"].as_str().context("delivery id")?;
        let (status, body) = system
            .post(
                &format!("/v1/deliveries/{id}/ack"),
                json!({ "source": "inbox" }),
            )
            .await?;
        ensure!(status == StatusCode::OK, "{status}: {body}");
    }
    Ok(())
}

fn delivery_ids(body: &Value) -> Vec<String> {
    body["deliveries"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|d| d["delivery_id"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_larger_than_the_part_size_is_posted_in_parts_resuming_at_the_failed_one()
-> Result<()> {
    // The second POST (part 1) fails once; everything else is accepted.
    let (url, mut requests) =
        scripted_receiver(vec![StatusCode::OK, StatusCode::INTERNAL_SERVER_ERROR]).await?;
    let (small_url, mut small_requests) = scripted_receiver(Vec::new()).await?;
    let system = System::start(Options {
        webhook_part_size: 4,
        webhook_max_attempts: 3,
        ..Options::default()
    })
    .await?;
    // Ten recipients, three of them without a device: their deliveries fail, so the summary
    // has more than one kind of outcome in it.
    let users: Vec<String> = (0..10).map(|n| format!("parts-{n:02}")).collect();
    for user in &users[..3] {
        system
            .store
            .create_member(
                &system.org_id,
                pidgr_store::NewMember {
                    external_id: user.clone(),
                    email: format!("{user}@example.com"),
                    display_name: format!("User {user}"),
                    attributes: [("team".to_owned(), "team-x".to_owned())].into(),
                    role_id: "member".into(),
                    manager_id: None,
                },
            )
            .await?;
    }
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let campaign = system
        .start_campaign(&names, example_definition("1h", "1h", &url))
        .await?;
    // Exactly the part size: one POST.
    let small = system
        .start_campaign(
            &["whole-1", "whole-2", "whole-3", "whole-4"],
            example_definition("1h", "1h", &small_url),
        )
        .await?;
    for id in [&campaign, &small] {
        system.until_waiting(id, "wait").await?;
        ack_sent(&system, id).await?;
        system.until_status(id, "COMPLETED").await?;
    }

    // Part 0, part 1 (refused), part 1 again, part 2 — and nothing more.
    let received = [
        next(&mut requests).await?,
        next(&mut requests).await?,
        next(&mut requests).await?,
        next(&mut requests).await?,
    ];
    assert!(requests.try_recv().is_err(), "no POST after the last part");
    let parts: Vec<&Value> = received.iter().map(|r| &r.body["part"]).collect();
    assert_eq!(
        parts,
        [
            &json!({ "index": 0, "count": 3 }),
            &json!({ "index": 1, "count": 3 }),
            &json!({ "index": 1, "count": 3 }),
            &json!({ "index": 2, "count": 3 }),
        ],
        "the retry resumed at the part that failed, not at the first"
    );
    assert_eq!(
        received[1].raw, received[2].raw,
        "the failed part is re-sent as it was"
    );
    let delivered = [&received[0].body, &received[2].body, &received[3].body];
    let sizes: Vec<usize> = delivered.iter().map(|b| delivery_ids(b).len()).collect();
    assert_eq!(sizes, [4, 4, 2]);
    let mut seen: Vec<String> = delivered.iter().flat_map(|b| delivery_ids(b)).collect();
    let every: BTreeSet<String> = system
        .deliveries(&campaign)
        .await?
        .iter()
        .map(|d| d["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(every.len(), 10);
    seen.sort();
    assert_eq!(
        seen,
        every.iter().cloned().collect::<Vec<_>>(),
        "every delivery exactly once"
    );
    for body in delivered {
        assert_eq!(body["campaign_id"], campaign.as_str());
        assert_eq!(body["campaign_name"], "Q1 Security Update");
        assert_eq!(
            body["summary"],
            json!({ "total": 10, "acknowledged": 7, "missed": 0, "failed": 3 }),
            "each part carries the whole campaign's summary"
        );
    }
    let statuses: BTreeMap<String, usize> = delivered
        .iter()
        .flat_map(|b| b["deliveries"].as_array().cloned().unwrap_or_default())
        .fold(BTreeMap::new(), |mut n, d| {
            *n.entry(d["status"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
            n
        });
    assert_eq!(
        statuses,
        BTreeMap::from([("ACKNOWLEDGED".to_owned(), 7), ("FAILED".to_owned(), 3)])
    );
    let activity = system.activity(&campaign).await?;
    let attempts: Vec<&str> = activity
        .iter()
        .filter(|e| e["kind"] == "webhook_attempt")
        .map(|e| e["message"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(attempts.len(), 4, "{attempts:?}");
    assert!(
        activity
            .iter()
            .any(|e| e["kind"] == "step_finished" && e["step_id"] == "report"),
        "{activity:?}"
    );

    // A campaign of exactly the part size: one POST in the published shape, without `part`.
    let whole = next(&mut small_requests).await?.body;
    assert!(small_requests.try_recv().is_err(), "a single POST");
    assert!(whole.get("part").is_none(), "{whole}");
    assert_eq!(delivery_ids(&whole).len(), 4);
    assert_eq!(
        whole["summary"],
        json!({ "total": 4, "acknowledged": 4, "missed": 0, "failed": 0 })
    );
    system.shutdown().await;
    Ok(())
}
