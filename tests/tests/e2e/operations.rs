//! What an operator runs: `pidgr check` and `pidgr temporal setup` against a live system, the
//! boot checks that keep a misconfigured process from starting, and a deployment of several
//! `pidgr api` and `pidgr worker` processes on PostgreSQL that loses a worker mid-campaign.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures_util::StreamExt;
use serde_json::json;
use temporalio_common::protos::temporal::api::enums::v1::{
    PendingActivityState, TaskQueueKind, TaskQueueType,
};
use temporalio_common::protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_common::protos::temporal::api::workflowservice::v1::DescribeTaskQueueRequest;

use crate::durability::notify_then_wait_an_hour;
use crate::fan_out::{everyone_pushed_once_or_collapsed, with_fake_fcm};
use crate::harness::{Options, System, free_port, postgres_configured, until};

/// `pidgr <args>` with the system's settings and `env` on top: its exit status and output.
async fn pidgr(
    system: &System,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<(bool, String, String)> {
    let mut command = system.pidgr_command(args[0])?;
    command.args(&args[1..]).envs(env.iter().copied());
    let output = command.output().await?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

const ITEMS: [&str; 8] = [
    "secret key",
    "public URL",
    "settings",
    "database",
    "migrations",
    "Temporal",
    "namespace",
    "search attributes",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_against_a_live_system_says_ok_for_every_item() -> Result<()> {
    let system = System::start(Options::default()).await?;
    let (passed, report, errors) = pidgr(&system, &["check"], &[]).await?;
    ensure!(passed, "{report}{errors}");
    for item in ITEMS {
        ensure!(
            report.contains(&format!("ok      {item}: ")),
            "{item} ok in:\n{report}"
        );
    }
    ensure!(report.contains("current: "), "{report}");
    ensure!(report.contains("every check passed"), "{report}");
    system.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_fix_for_a_wrong_database_and_a_production_setting_and_the_processes_refuse_to_start()
-> Result<()> {
    let system = System::start(Options::default()).await?;

    // A database that is not there: named, not created.
    let missing = std::env::temp_dir().join(format!("pidgr-no-such-{}", uuid::Uuid::new_v4()));
    let url = format!("sqlite://{}/pidgr.db", missing.display());
    let (passed, report, _) = pidgr(&system, &["check"], &[("DATABASE_URL", &url)]).await?;
    ensure!(!passed, "{report}");
    ensure!(
        report.contains("FAILED  database: the SQLite database") && report.contains("DATABASE_URL"),
        "{report}"
    );
    ensure!(
        report.contains("skipped migrations: the database could not be opened"),
        "{report}"
    );
    ensure!(!missing.exists(), "the check created the database");

    // A PostgreSQL database that does not exist: its password never printed.
    if let Ok(base) = std::env::var(pidgr_store::testing::POSTGRES_URL_VAR) {
        let mut wrong = reqwest::Url::parse(&base)?;
        wrong.set_path("/pidgr_no_such_database");
        wrong
            .set_password(Some("hunter2-secret"))
            .map_err(|()| anyhow::anyhow!("cannot set a password"))?;
        let (passed, report, _) =
            pidgr(&system, &["check"], &[("DATABASE_URL", wrong.as_str())]).await?;
        ensure!(!passed, "{report}");
        ensure!(
            report.contains("FAILED  database: cannot open the database at postgres://…@"),
            "{report}"
        );
        ensure!(!report.contains("hunter2-secret"), "{report}");
    }

    // Production without PIDGR_PUBLIC_URL (the development allowances off, as production
    // requires): exactly that item fails, with its fix.
    let production = [
        ("PIDGR_ENVIRONMENT", "production"),
        ("PIDGR_PUSH_LOG", "false"),
        ("PIDGR_ALLOW_INSECURE_WEBHOOKS", "false"),
    ];
    let (passed, report, _) = pidgr(&system, &["check"], &production).await?;
    ensure!(!passed, "{report}");
    let failed: Vec<&str> = report.lines().filter(|l| l.starts_with("FAILED")).collect();
    ensure!(
        failed.len() == 1 && failed[0].contains("PIDGR_PUBLIC_URL is required in production"),
        "{report}"
    );
    // Every process runs the same checks at boot and refuses to start with the same message.
    for process in ["api", "worker", "serve"] {
        let (started, _, errors) = pidgr(&system, &[process], &production).await?;
        ensure!(!started, "{process} started");
        ensure!(
            errors.contains(failed[0]) && errors.contains("refusing to start"),
            "{process}: {errors}"
        );
    }
    // With the setting, production passes.
    let with_url = [
        production.as_slice(),
        &[("PIDGR_PUBLIC_URL", "https://pidgr.example.com")],
    ]
    .concat();
    let (passed, report, _) = pidgr(&system, &["check"], &with_url).await?;
    ensure!(passed, "{report}");
    system.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporal_setup_registers_the_search_attributes_a_new_namespace_lacks() -> Result<()> {
    let system = System::start(Options::default()).await?;
    let namespace = format!("pidgr-ops-{}", uuid::Uuid::new_v4().simple());
    let cli = std::env::var("PIDGR_TEMPORAL_CLI").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../.tools/py/bin/temporal").to_owned()
    });
    let created = tokio::process::Command::new(&cli)
        .args(["operator", "namespace", "create", "--namespace", &namespace])
        .args(["--address", &system.temporal_address])
        .output()
        .await
        .with_context(|| format!("running {cli}"))?;
    ensure!(created.status.success(), "{created:?}");
    let env = [("TEMPORAL_NAMESPACE", namespace.as_str())];

    // The namespace is there (once the server has it), its search attributes are not.
    let report = until("the check to find the new namespace", || async {
        let (_, report, _) = pidgr(&system, &["check"], &env).await?;
        Ok(report
            .contains(&format!("ok      namespace: {namespace}"))
            .then_some(report))
    })
    .await?;
    ensure!(
        report.contains("FAILED  search attributes: PidgrCampaignId (Keyword), PidgrOrganisationId (Keyword), PidgrCampaignStatus (Keyword), PidgrCampaignName (Keyword) not registered")
            && report.contains("run `pidgr temporal setup`"),
        "{report}"
    );
    let (passed, _, _) = pidgr(&system, &["check"], &env).await?;
    ensure!(!passed);
    // A worker on that namespace refuses to start, saying the same.
    let (started, _, errors) = pidgr(&system, &["worker"], &env).await?;
    ensure!(
        !started && errors.contains("`pidgr temporal setup`"),
        "{errors}"
    );

    let (set_up, output, errors) = pidgr(&system, &["temporal", "setup"], &env).await?;
    ensure!(set_up, "{output}{errors}");
    ensure!(
        output.matches(": registered on namespace").count() == 4,
        "{output}"
    );
    until("the check to pass after the setup", || async {
        let (passed, report, _) = pidgr(&system, &["check"], &env).await?;
        Ok((passed && report.contains("ok      search attributes: PidgrCampaignId")).then_some(()))
    })
    .await?;
    // Again: nothing to do, and it says so.
    let (again, output, errors) = pidgr(&system, &["temporal", "setup"], &env).await?;
    ensure!(again, "{output}{errors}");
    ensure!(
        output.matches(": already registered on namespace").count() == 4,
        "{output}"
    );

    // A namespace that does not exist: the fix says how to create one.
    let (passed, report, _) = pidgr(
        &system,
        &["check"],
        &[("TEMPORAL_NAMESPACE", "pidgr-no-such-namespace")],
    )
    .await?;
    ensure!(
        !passed
            && report.contains(
                "FAILED  namespace: the namespace \"pidgr-no-such-namespace\" does not exist"
            )
            && report.contains("skipped search attributes"),
        "{report}"
    );
    system.shutdown().await;
    Ok(())
}

/// Two `pidgr api` and two `pidgr worker` processes on one PostgreSQL database and one dev
/// server. A campaign's fan-out runs in many ranges across both workers; one worker is SIGKILLed
/// once a range of its own has started. Everyone is still pushed (once, or again only with the
/// first push's collapse id: at most the pages in flight), and ACKs sent half to each API all
/// count and end the campaign early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apis_and_two_workers_on_postgres_survive_losing_a_worker_mid_campaign() -> Result<()> {
    if !postgres_configured(
        "two_apis_and_two_workers_on_postgres_survive_losing_a_worker_mid_campaign",
    ) {
        return Ok(());
    }
    const RECIPIENTS: usize = 400;
    const RANGE: usize = 25;
    let (fcm, system) = with_fake_fcm(
        // Slow enough that ranges are still running when a worker dies.
        Duration::from_millis(300),
        Options {
            postgres: true,
            in_process_worker: false,
            fanout_range_size: RANGE as u64,
            ..Options::default()
        },
    )
    .await?;
    let apis: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut api_processes = Vec::new();
    for listen in &apis {
        api_processes.push(system.spawn_api_process(listen)?);
    }
    for listen in &apis {
        until(&format!("the API at {listen} to answer"), || async {
            Ok(system
                .http
                .get(format!("http://{listen}/v1/campaigns"))
                .bearer_auth(&system.key)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
                .then_some(()))
        })
        .await?;
    }
    let mut workers = [
        system.spawn_worker_process()?,
        system.spawn_worker_process()?,
    ];
    let pids: Vec<u32> = workers
        .iter()
        .map(|w| w.id().context("a running worker"))
        .collect::<Result<_>>()?;

    // Both workers polling for activities before the campaign starts: otherwise the first one
    // up could take every range before the second has connected.
    until("both workers to poll the task queue", || async {
        let described = system
            .client
            .connection()
            .workflow_service()
            .describe_task_queue(temporalio_client::tonic::Request::new(
                DescribeTaskQueueRequest {
                    namespace: "default".into(),
                    task_queue: Some(TaskQueue {
                        name: system.config.task_queue.clone(),
                        kind: TaskQueueKind::Normal as i32,
                        ..Default::default()
                    }),
                    task_queue_type: TaskQueueType::Activity as i32,
                    ..Default::default()
                },
            ))
            .await?
            .into_inner();
        Ok(pids
            .iter()
            .all(|pid| {
                described
                    .pollers
                    .iter()
                    .any(|poller| poller.identity.starts_with(&format!("{pid}@")))
            })
            .then_some(()))
    })
    .await?;

    let users: Vec<String> = (0..RECIPIENTS).map(|i| format!("user-{i:04}")).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let group = system.group_of(&refs).await?;
    let campaign = system
        .create_campaign_for(&group, notify_then_wait_an_hour())
        .await?;
    // Started through the first API process.
    let started = system
        .http
        .post(format!("http://{}/v1/campaigns/{campaign}/start", apis[0]))
        .bearer_auth(&system.key)
        .json(&json!({}))
        .send()
        .await?;
    ensure!(
        started.status() == reqwest::StatusCode::ACCEPTED,
        "{started:?}"
    );

    // The fan-out is split: both workers are seen running ranges of it. Then the one running a
    // range at that moment is killed, in the middle of it.
    let handle = system
        .client
        .get_workflow_handle::<pidgr_workflows::CampaignWorkflow>(pidgr_workflows::workflow_id(
            &campaign,
        ));
    let seen: std::sync::Mutex<BTreeSet<usize>> = Default::default();
    let victim = until("both workers to run fan-out ranges", || async {
        let description = handle
            .describe(temporalio_client::WorkflowDescribeOptions::default())
            .await?;
        let running: Vec<usize> = description
            .raw_description
            .pending_activities
            .iter()
            .filter(|pending| {
                pending.activity_type.as_ref().map(|t| t.name.as_str()) == Some("SEND_NOTIFICATION")
                    && pending.state() == PendingActivityState::Started
            })
            .filter_map(|pending| {
                pids.iter()
                    .position(|pid| pending.last_worker_identity.starts_with(&format!("{pid}@")))
            })
            .collect();
        let workers_seen = {
            let mut seen = seen.lock().expect("seen");
            seen.extend(running.iter().copied());
            seen.len()
        };
        if workers_seen < 2 {
            let sent = system.campaign(&campaign).await?["counts"]["sent"]
                .as_u64()
                .unwrap_or(0);
            ensure!(
                sent < RECIPIENTS as u64,
                "the fan-out ended before both workers ran a range of it"
            );
            return Ok(None);
        }
        Ok(running.first().copied())
    })
    .await?;
    workers[victim].kill().await?;
    let sent_at_kill = system.campaign(&campaign).await?["counts"]["sent"]
        .as_u64()
        .unwrap_or(0);
    ensure!(
        sent_at_kill < RECIPIENTS as u64,
        "the worker died mid fan-out ({sent_at_kill} sent): the other one does the rest"
    );

    // Everyone notified by the survivor; then half the ACKs through each API.
    system.until_waiting(&campaign, "wait").await?;
    let deliveries: Vec<String> = system
        .deliveries(&campaign)
        .await?
        .iter()
        .map(|d| d["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    ensure!(deliveries.len() == RECIPIENTS);
    let acks = deliveries.iter().enumerate().map(|(i, delivery)| {
        let api = &apis[i % 2];
        let (http, key) = (&system.http, &system.key);
        async move {
            let answer = http
                .post(format!("http://{api}/v1/deliveries/{delivery}/ack"))
                .bearer_auth(key)
                .json(&json!({ "source": "inbox" }))
                .send()
                .await?;
            ensure!(
                answer.status() == reqwest::StatusCode::OK,
                "ACK through {api}: {}",
                answer.status()
            );
            Ok(api.clone())
        }
    });
    let through: Vec<String> = futures_util::stream::iter(acks)
        .buffer_unordered(16)
        .collect::<Vec<Result<String>>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let by_api: BTreeSet<usize> = apis
        .iter()
        .map(|api| through.iter().filter(|t| *t == api).count())
        .collect();
    ensure!(by_api == BTreeSet::from([RECIPIENTS / 2]), "{by_api:?}");

    // Every ACK counted, whichever API took it: the campaign ends without its hour's wait.
    let done = system.until_status(&campaign, "COMPLETED").await?;
    ensure!(done["counts"]["acknowledged"] == RECIPIENTS, "{done}");
    let duplicates = everyone_pushed_once_or_collapsed(&fcm, &users)?;
    let in_flight = RANGE * system.config.fanout_parallel_ranges as usize;
    eprintln!(
        "worker {} killed with {sent_at_kill} SENT; {duplicates} pushes sent twice",
        pids[victim]
    );
    ensure!(
        duplicates <= in_flight,
        "duplicates bounded by the pages in flight ({in_flight}): {duplicates}"
    );
    drop(api_processes);
    system.shutdown().await;
    Ok(())
}
