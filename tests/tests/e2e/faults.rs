//! Fault injection with real processes and real kills: the Temporal dev server, the database,
//! a worker and an API process die or vanish in the middle of a campaign, and a webhook
//! receiver never answers. Each campaign must still complete, with nobody lost, the duplicates
//! bounded by what was in flight, and every ACK a client saw accepted in the database.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use crate::durability::notify_then_wait_an_hour;
use crate::fan_out::{everyone_pushed_once_or_collapsed, notify_then_missed, with_fake_fcm};
use crate::harness::{Options, System, TcpProxy, free_port, postgres_configured, until};
use crate::{ack_all, delivery_ids};

/// Users `user-0000` … in order (the order the fake's tokens sort in).
fn users(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("user-{i:04}")).collect()
}

async fn sent(system: &System, campaign: &str) -> Result<u64> {
    Ok(system.campaign(campaign).await?["counts"]["sent"]
        .as_u64()
        .unwrap_or(0))
}

async fn until_sent(system: &System, campaign: &str, at_least: u64) -> Result<()> {
    until(
        &format!("{at_least} deliveries of {campaign} SENT"),
        || async { Ok((sent(system, campaign).await? >= at_least).then_some(())) },
    )
    .await
}

// ---- the Temporal dev server killed and restarted ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporal_killed_mid_wait_and_mid_fan_out_then_restarted_on_sqlite() -> Result<()> {
    temporal_killed_and_restarted(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporal_killed_mid_wait_and_mid_fan_out_then_restarted_on_postgres() -> Result<()> {
    if !postgres_configured("temporal_killed_mid_wait_and_mid_fan_out_then_restarted_on_postgres") {
        return Ok(());
    }
    temporal_killed_and_restarted(true).await
}

/// One campaign waits in a DEADLINE_CHECK and another is in the middle of its fan-out when the
/// dev server is SIGKILLed; it comes back on the same database file. The waiting campaign ends
/// early when everyone acknowledges; the fan-out finishes, everyone pushed.
async fn temporal_killed_and_restarted(postgres: bool) -> Result<()> {
    const RECIPIENTS: usize = 600;
    let (fcm, mut system) = with_fake_fcm(
        Duration::from_millis(100),
        Options {
            restartable_temporal: true,
            postgres,
            ..Options::default()
        },
    )
    .await?;
    let waiting = system
        .start_campaign(&["ann", "bob"], notify_then_wait_an_hour())
        .await?;
    system.until_waiting(&waiting, "wait").await?;
    let audience = users(RECIPIENTS);
    let refs: Vec<&str> = audience.iter().map(String::as_str).collect();
    let fanning_out = system.start_campaign(&refs, notify_then_missed()).await?;
    until_sent(&system, &fanning_out, 50).await?;

    system.kill_temporal().await?;
    let sent_at_kill = sent(&system, &fanning_out).await?;
    system.restart_temporal().await?;

    ack_all(&system, delivery_ids(&system, &waiting).await?.values()).await?;
    let done = system.until_status(&waiting, "COMPLETED").await?;
    assert_eq!(done["counts"]["acknowledged"], 2, "ended early: {done}");
    let done = system.until_status(&fanning_out, "COMPLETED").await?;
    assert_eq!(done["counts"]["missed"], RECIPIENTS, "nobody lost: {done}");
    ensure!(
        sent_at_kill < RECIPIENTS as u64,
        "the server died mid fan-out ({sent_at_kill} sent)"
    );
    let mut everyone: Vec<String> = audience.clone();
    everyone.extend(["ann".to_owned(), "bob".to_owned()]);
    everyone.sort();
    let duplicates = everyone_pushed_once_or_collapsed(&fcm, &everyone)?;
    eprintln!("{sent_at_kill} SENT when the server died; {duplicates} pushes repeated");
    system.shutdown().await;
    Ok(())
}

// ---- the database unreachable ----

/// The worker reaches PostgreSQL through a proxy that drops every connection and refuses new
/// ones in the middle of a fan-out, until the worker has been refused 10 times. The campaign
/// completes, everyone pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_mid_fan_out() -> Result<()> {
    if !postgres_configured("postgres_unreachable_mid_fan_out") {
        return Ok(());
    }
    const RECIPIENTS: usize = 600;
    let (fcm, system) = with_fake_fcm(
        Duration::from_millis(100),
        Options {
            in_process_worker: false,
            postgres: true,
            ..Options::default()
        },
    )
    .await?;
    let mut database = reqwest::Url::parse(&system.config.database_url)?;
    let target: SocketAddr = format!(
        "{}:{}",
        database.host_str().context("database host")?,
        database.port().unwrap_or(5432)
    )
    .parse()?;
    let proxy = TcpProxy::start(target).await?;
    database
        .set_port(Some(proxy.port))
        .map_err(|()| anyhow::anyhow!("cannot set the port"))?;
    let _worker = system.spawn_worker_process_with(&[("DATABASE_URL", database.as_str())])?;

    let audience = users(RECIPIENTS);
    let refs: Vec<&str> = audience.iter().map(String::as_str).collect();
    let campaign = system.start_campaign(&refs, notify_then_missed()).await?;
    until_sent(&system, &campaign, 50).await?;
    proxy.set_down(true);
    let sent_when_cut = sent(&system, &campaign).await?;
    // The outage lasts until the worker has tried to reconnect, and been refused, several
    // times: its activities failed against the database and were retried.
    until(
        "the worker to be refused by the database 10 times",
        || async { Ok((proxy.refused() >= 10).then_some(())) },
    )
    .await?;
    let sent_after_outage = sent(&system, &campaign).await?;
    proxy.set_down(false);
    // The worker really was cut off: during the outage it could record at most the pages it
    // was finishing when the connections dropped.
    let in_flight =
        (system.config.fanout_parallel_ranges as i64 * system.config.fanout_page_size) as u64;
    ensure!(
        sent_after_outage - sent_when_cut <= in_flight,
        "{sent_when_cut} SENT at the cut, {sent_after_outage} at the end of the outage"
    );

    let done = system.until_status(&campaign, "COMPLETED").await?;
    assert_eq!(done["counts"]["missed"], RECIPIENTS, "nobody lost: {done}");
    ensure!(
        sent_when_cut < RECIPIENTS as u64,
        "the database vanished mid fan-out ({sent_when_cut} sent)"
    );
    let duplicates = everyone_pushed_once_or_collapsed(&fcm, &audience)?;
    eprintln!(
        "{sent_when_cut} SENT when the database vanished, {sent_after_outage} when it came back \
         ({} connections refused); {duplicates} pushes repeated",
        proxy.refused()
    );
    system.shutdown().await;
    Ok(())
}

// ---- workers killed at random moments ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_at_random_moments_lose_nobody_on_sqlite() -> Result<()> {
    workers_killed_at_random_moments(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_at_random_moments_lose_nobody_on_postgres() -> Result<()> {
    if !postgres_configured("workers_killed_at_random_moments_lose_nobody_on_postgres") {
        return Ok(());
    }
    workers_killed_at_random_moments(true).await
}

/// A fan-out of 2,000 recipients; three times, at a random point, the `pidgr worker` process
/// doing it is SIGKILLed (a fresh one is already waiting). Nobody is lost, and the pushes sent
/// twice are at most what was in flight: each kill repeats at most the page each running range
/// had not checkpointed, so the bound is kills × parallel ranges × page size (3 × 4 × 50).
async fn workers_killed_at_random_moments(postgres: bool) -> Result<()> {
    const RECIPIENTS: usize = 2_000;
    const RANGE: u64 = 100;
    const KILLS: usize = 3;
    let (fcm, system) = with_fake_fcm(
        Duration::from_millis(100),
        Options {
            in_process_worker: false,
            fanout_range_size: RANGE,
            postgres,
            ..Options::default()
        },
    )
    .await?;
    let bound = KILLS
        * system.config.fanout_parallel_ranges as usize
        * system.config.fanout_page_size as usize;
    // Random thresholds between 10 % and 80 % of the audience, printed so a failure can be
    // replayed with the same ones.
    let mut thresholds: Vec<u64> = (0..KILLS)
        .map(|_| {
            let random =
                u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap());
            RECIPIENTS as u64 / 10 + random % (RECIPIENTS as u64 * 7 / 10)
        })
        .collect();
    thresholds.sort_unstable();
    eprintln!("killing the worker at {thresholds:?} SENT");

    let mut worker = system.spawn_worker_process()?;
    let audience = users(RECIPIENTS);
    let refs: Vec<&str> = audience.iter().map(String::as_str).collect();
    let campaign = system.start_campaign(&refs, notify_then_missed()).await?;
    let mut sent_at_kills = Vec::new();
    for threshold in thresholds {
        until_sent(&system, &campaign, threshold).await?;
        let next = system.spawn_worker_process()?;
        worker.kill().await?;
        let sent_at_kill = sent(&system, &campaign).await?;
        ensure!(
            sent_at_kill < RECIPIENTS as u64,
            "the worker died mid fan-out ({sent_at_kill} sent)"
        );
        sent_at_kills.push(sent_at_kill);
        worker = next;
    }
    let done = system.until_status(&campaign, "COMPLETED").await?;
    assert_eq!(done["counts"]["missed"], RECIPIENTS, "nobody lost: {done}");
    let duplicates = everyone_pushed_once_or_collapsed(&fcm, &audience)?;
    eprintln!("SENT at the kills: {sent_at_kills:?}; {duplicates} pushes repeated (bound {bound})");
    ensure!(
        duplicates <= bound,
        "duplicates bounded by the pages in flight: {duplicates} > {bound}"
    );
    drop(worker);
    system.shutdown().await;
    Ok(())
}

// ---- the API killed during an ACK storm ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_killed_during_an_ack_storm_loses_no_accepted_ack_on_sqlite() -> Result<()> {
    api_killed_during_an_ack_storm(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_killed_during_an_ack_storm_loses_no_accepted_ack_on_postgres() -> Result<()> {
    if !postgres_configured("api_killed_during_an_ack_storm_loses_no_accepted_ack_on_postgres") {
        return Ok(());
    }
    api_killed_during_an_ack_storm(true).await
}

/// 32 clients acknowledge 2,000 deliveries through a `pidgr api` process, retrying whatever
/// fails; the process is SIGKILLed a third of the way through and started again on the same
/// port. Every delivery ends acknowledged, the database holds exactly the ACKs the clients saw
/// accepted, and the campaign ends early instead of waiting for its one-hour deadline.
async fn api_killed_during_an_ack_storm(postgres: bool) -> Result<()> {
    const RECIPIENTS: usize = 2_000;
    const CLIENTS: usize = 32;
    let system = System::start(Options {
        postgres,
        ..Options::default()
    })
    .await?;
    let audience = users(RECIPIENTS);
    let refs: Vec<&str> = audience.iter().map(String::as_str).collect();
    let campaign = system
        .start_campaign(&refs, notify_then_wait_an_hour())
        .await?;
    system.until_waiting(&campaign, "wait").await?;
    let deliveries: Vec<String> = delivery_ids(&system, &campaign)
        .await?
        .into_values()
        .collect();

    let listen = format!("127.0.0.1:{}", free_port());
    let api = format!("http://{listen}");
    let mut process = system.spawn_api_process(&listen)?;
    until_answers(&system, &api).await?;
    // Clients whose request failed wait for the restarted API to answer (true), then retry.
    let (restarted_tx, restarted) = tokio::sync::watch::channel(false);

    let queue = Arc::new(Mutex::new(deliveries));
    let accepted: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (queue, accepted) = (queue.clone(), accepted.clone());
        let (http, key, api) = (system.http.clone(), system.key.clone(), api.clone());
        let mut restarted = restarted.clone();
        clients.push(tokio::spawn(async move {
            loop {
                let Some(delivery) = queue.lock().expect("queue").pop() else {
                    return;
                };
                // Retried until the API says it is recorded, like the mobile backend would.
                loop {
                    let answer = http
                        .post(format!("{api}/v1/deliveries/{delivery}/ack"))
                        .bearer_auth(&key)
                        .json(&json!({ "source": "inbox" }))
                        .send()
                        .await;
                    if answer.is_ok_and(|r| r.status() == reqwest::StatusCode::OK) {
                        accepted.lock().expect("accepted").insert(delivery);
                        break;
                    }
                    // Only the killed API fails a request here: retry once it is back.
                    let _ = restarted.wait_for(|back| *back).await;
                }
            }
        }));
    }
    until("a third of the ACKs accepted", || async {
        Ok((accepted.lock().expect("accepted").len() >= RECIPIENTS / 3).then_some(()))
    })
    .await?;
    process.kill().await?;
    let accepted_at_kill = accepted.lock().expect("accepted").len();
    ensure!(
        accepted_at_kill < RECIPIENTS,
        "the API died mid storm ({accepted_at_kill} accepted)"
    );
    // Everything a client saw accepted before the kill is in the database already.
    let durable_at_kill = system
        .store
        .delivery_counts(&system.org_id, &campaign)
        .await?
        .acknowledged;
    ensure!(
        durable_at_kill as usize >= accepted_at_kill,
        "{durable_at_kill} ACKs in the database, {accepted_at_kill} accepted"
    );
    let _restarted = system.spawn_api_process(&listen)?;
    until_answers(&system, &api).await?;
    restarted_tx.send(true)?;
    for client in clients {
        client.await?;
    }

    let accepted = accepted.lock().expect("accepted").clone();
    assert_eq!(
        accepted.len(),
        RECIPIENTS,
        "every client's ACK was accepted in the end"
    );
    let counts = system
        .store
        .delivery_counts(&system.org_id, &campaign)
        .await?;
    assert_eq!(
        counts.acknowledged as usize,
        accepted.len(),
        "the database holds exactly the accepted ACKs: {counts:?}"
    );
    let done = system.until_status(&campaign, "COMPLETED").await?;
    assert_eq!(done["counts"]["acknowledged"], RECIPIENTS, "{done}");
    assert_eq!(
        done["counts"]["missed"], 0,
        "ended early, not at the deadline: {done}"
    );
    eprintln!("API killed after {accepted_at_kill} accepted ACKs of {RECIPIENTS}");
    system.shutdown().await;
    Ok(())
}

/// Waits until the API at `api` answers an authenticated request.
async fn until_answers(system: &System, api: &str) -> Result<()> {
    until(&format!("the API at {api} to answer"), || async {
        Ok(system
            .http
            .get(format!("{api}/v1/campaigns"))
            .bearer_auth(&system.key)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
            .then_some(()))
    })
    .await
}

// ---- a webhook receiver that never answers ----

/// The receiver accepts the connection, reads the request and never answers: the POST gives up
/// after its 30-second timeout, the failure is in the activity log, and the campaign completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_never_answers_times_out_and_the_campaign_completes() -> Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let connections = Arc::new(Mutex::new(Vec::new()));
    let held = connections.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            // Kept open and never written to.
            held.lock().expect("held").push(socket);
        }
    });
    let system = System::start(Options {
        webhook_max_attempts: 1,
        ..Options::default()
    })
    .await?;
    let definition: Value = json!({
        "version": 1,
        "steps": [
            { "id": "notify", "type": "SEND_NOTIFICATION", "config": { "variables": { "deadline": "soon" } },
              "transitions": { "next": "report" } },
            { "id": "report", "type": "CALL_WEBHOOK", "config": { "name": "Silent receiver", "url": url },
              "transitions": { "next": "missed" } },
            { "id": "missed", "type": "MARK_MISSED" }
        ]
    });
    let campaign = system.start_campaign(&["ann"], definition).await?;
    let done = system.until_status(&campaign, "COMPLETED").await?;
    assert_eq!(done["counts"]["missed"], 1, "{done}");
    let failure = system
        .activity(&campaign)
        .await?
        .into_iter()
        .find(|e| e["kind"] == "webhook_failed" && e["step_id"] == "report")
        .context("the webhook step's failure is in the activity log")?;
    let message = failure["message"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    ensure!(
        message.contains("did not answer within 30 s"),
        "the failure says the receiver timed out: {failure}"
    );
    assert_eq!(
        connections.lock().expect("held").len(),
        1,
        "one attempt, as configured"
    );
    system.shutdown().await;
    Ok(())
}
