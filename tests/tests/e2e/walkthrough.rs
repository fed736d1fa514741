//! The README's walkthrough is a script, `examples/walkthrough.sh`; this test runs that very
//! script against a system of its own, so the walkthrough cannot drift from the API. Pushes go
//! through the local FCM and APNs fakes, which the script is told about the way a developer
//! running `pidgr-push-fakes` would tell it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use pidgr_push_fakes::{FakeApns, FakeFcm, generate_apns_key, test_service_account_public_key};

use crate::harness::{Options, PushUrls, System};

/// The sample credentials the script saves name the project, account and key of the
/// `pidgr-push-fakes` binary; the fakes here verify the same.
const FCM_PROJECT: &str = "pidgr-bench";
const FCM_CLIENT_EMAIL: &str = "pidgr@pidgr-bench.iam.gserviceaccount.com";
const APNS_TEAM_ID: &str = "TEAM123456";
const APNS_KEY_ID: &str = "KEY1234567";

/// Far more than the script needs (its waits are seconds): only a hang reaches it.
const SCRIPT_PATIENCE: Duration = Duration::from_secs(300);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the workspace")
        .to_owned()
}

struct Run {
    stdout: String,
    took: Duration,
}

async fn run_walkthrough(
    system: &System,
    fcm: &FakeFcm,
    apns: &FakeApns,
    apns_key: &Path,
) -> Result<Run> {
    let started = Instant::now();
    let mut command = tokio::process::Command::new("bash");
    command
        .arg("examples/walkthrough.sh")
        .current_dir(workspace_root())
        .env("PIDGR_API", &system.api)
        .env("PIDGR_KEY", &system.key)
        .env("PIDGR_FAKE_FCM_URL", fcm.base_url())
        .env("PIDGR_FAKE_APNS_URL", apns.base_url())
        .env("PIDGR_FAKE_APNS_KEY", apns_key)
        .kill_on_drop(true);
    let output = tokio::time::timeout(SCRIPT_PATIENCE, command.output())
        .await
        .context("the walkthrough did not finish")??;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "the walkthrough failed ({}):\n{stdout}\n--- stderr ---\n{stderr}",
        output.status
    );
    eprintln!("{stdout}");
    Ok(Run {
        stdout,
        took: started.elapsed(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_script_runs_to_the_end_and_runs_again() -> Result<()> {
    let fcm = FakeFcm::start(
        FCM_PROJECT,
        FCM_CLIENT_EMAIL,
        &test_service_account_public_key(),
    )
    .await;
    let (p8, apns_public_key) = generate_apns_key();
    let apns = FakeApns::start(APNS_TEAM_ID, APNS_KEY_ID, &apns_public_key).await;
    let system = System::start(Options {
        in_process_worker: true,
        push_urls: Some(PushUrls {
            fcm: fcm.base_url(),
            fcm_token: fcm.token_url(),
            apns: apns.base_url(),
        }),
        ..Options::default()
    })
    .await?;
    let apns_key = std::env::temp_dir().join(format!(
        "pidgr-walkthrough-{}-AuthKey_{APNS_KEY_ID}.p8",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&apns_key, p8)?;

    // Twice on one organisation: the second run finds the webhook channel already there and
    // names everything afresh.
    for round in 1..=2 {
        let run = run_walkthrough(&system, &fcm, &apns, &apns_key).await?;
        eprintln!(
            "walkthrough run {round} took {:.1} s",
            run.took.as_secs_f64()
        );
        for marker in [
            "campaign created: ",
            "receiver verified event: user_id=e-101-",
            "campaign COMPLETED",
            "rotated: the receiver with the old secret refused the next event (401)",
            "rotated: receiver verified test event with the new secret",
            "walkthrough finished",
        ] {
            ensure!(
                run.stdout.contains(marker),
                "run {round}: no {marker:?} in its output"
            );
        }
        let campaign = run
            .stdout
            .lines()
            .find_map(|line| line.strip_prefix("campaign created: "))
            .context("the campaign's id")?
            .trim()
            .to_owned();

        let view = system.campaign(&campaign).await?;
        assert_eq!(view["status"], "COMPLETED", "{view}");
        assert_eq!(view["counts"]["acknowledged"], 1, "Ada: {view}");
        assert_eq!(view["counts"]["missed"], 1, "Alan: {view}");
        assert_eq!(view["counts"]["failed"], 0, "{view}");
        let statuses: Vec<(String, String)> = system
            .deliveries(&campaign)
            .await?
            .iter()
            .map(|d| {
                let user = d["user_id"].as_str().unwrap_or_default();
                let who = user.split('-').take(2).collect::<Vec<_>>().join("-");
                (who, d["status"].as_str().unwrap_or_default().to_owned())
            })
            .collect();
        assert_eq!(
            statuses,
            [
                ("e-100".to_owned(), "ACKNOWLEDGED".to_owned()),
                ("e-101".to_owned(), "MISSED".to_owned())
            ]
        );
        let kinds: Vec<String> = system
            .activity(&campaign)
            .await?
            .iter()
            .map(|e| {
                format!(
                    "{}:{}",
                    e["kind"].as_str().unwrap_or(""),
                    e["step_id"].as_str().unwrap_or("-")
                )
            })
            .collect();
        assert!(
            kinds
                .iter()
                .any(|k| k.starts_with("channel_event_attempt:remind")),
            "the reminder went through the webhook channel: {kinds:?}"
        );
    }

    // The pushes went to the fakes with the credentials the script saved: Ada's phone (FCM)
    // was notified in each run, Alan's (APNs) notified and reminded.
    let fcm_tokens: Vec<String> = fcm.received().into_iter().map(|r| r.token).collect();
    assert_eq!(fcm_tokens.len(), 2, "{fcm_tokens:?}");
    assert!(
        fcm_tokens.iter().all(|t| t.starts_with("ada-phone-")),
        "{fcm_tokens:?}"
    );
    let apns_tokens: Vec<String> = apns.received().into_iter().map(|r| r.token).collect();
    assert_eq!(apns_tokens.len(), 4, "{apns_tokens:?}");
    assert!(
        apns_tokens.iter().all(|t| t.starts_with("alan-phone-")),
        "{apns_tokens:?}"
    );
    let _ = std::fs::remove_file(&apns_key);
    system.shutdown().await;
    Ok(())
}
