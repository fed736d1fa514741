//! The simulator against the real thing: generated definitions and scenarios, each simulated
//! through the API and then run as a campaign on the dev server with the scenario's actions
//! applied in the steps the simulation put them in. The two must agree on the steps taken,
//! each wait's outcome, who was reminded, every delivery's final status and which late
//! acknowledgements were refused.
//!
//! Actions are applied when the real campaign reaches the wait the simulation put them in:
//! the steps a campaign takes depend only on what happened within each wait, not on when
//! within it, so the comparison needs no clock shared between the two.

use std::collections::BTreeMap;

use anyhow::{Context, Result, ensure};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Options, System, postgres_configured};
use crate::{act, delivery_ids};

/// A small deterministic generator, so a failing case names a seed that reproduces it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One generated case: a definition of 1–3 rounds (a wait, then maybe a reminder, a
/// MARK_MISSED or an ESCALATE), whose early ends lead on, skip a step or end the campaign; an
/// audience of 3–5, each with one of two managers or none; and one to two actions per
/// recipient on average, at times spread over the waits and beyond.
struct Case {
    seed: u64,
    users: Vec<String>,
    /// The manager of each user, if any (members outside the audience).
    managers: Vec<Option<String>>,
    definition: Value,
    scenario: Value,
}

/// `template` is the id of the managers' template (version 1) for ESCALATE steps.
fn generate(seed: u64, prefix: &str, template: &str) -> Case {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let rounds = 1 + rng.below(3) as usize;
    // The chain's ids in order: send, wait1, [after1], wait2, [after2], ...
    let mut chain: Vec<(String, Value)> = vec![(
        "send".into(),
        json!({"type": "SEND_NOTIFICATION", "config": {"variables": {"deadline": "Friday"}}}),
    )];
    let mut span_ms = 0;
    for round in 1..=rounds {
        let seconds = 6 + rng.below(3);
        span_ms += seconds * 1000;
        chain.push((
            format!("wait{round}"),
            json!({"type": "DEADLINE_CHECK", "config": {"duration": format!("{seconds}s")}}),
        ));
        match rng.below(4) {
            0 => chain.push((
                format!("remind{round}"),
                json!({"type": "SEND_REMINDER", "config": {"variables": {"deadline": "Friday"}}}),
            )),
            1 => chain.push((format!("miss{round}"), json!({"type": "MARK_MISSED"}))),
            2 => chain.push((
                format!("escalate{round}"),
                json!({"type": "ESCALATE",
                       "config": {"template_id": template, "template_version": 1}}),
            )),
            _ => {}
        }
    }
    let ids: Vec<String> = chain.iter().map(|(id, _)| id.clone()).collect();
    let steps: Vec<Value> = chain
        .into_iter()
        .enumerate()
        .map(|(index, (id, mut step))| {
            step["id"] = json!(id);
            let next = ids.get(index + 1);
            if step["type"] == "DEADLINE_CHECK" {
                let mut transitions = json!({});
                if let Some(next) = next {
                    transitions["deadline"] = json!(next);
                }
                // Early end: go on, skip one step, or end the campaign.
                match (rng.below(3), ids.get(index + 2)) {
                    (0, _) => {}
                    (1, Some(after)) => transitions["all_acknowledged"] = json!(after),
                    _ => {
                        if let Some(next) = next {
                            transitions["all_acknowledged"] = json!(next);
                        }
                    }
                }
                step["transitions"] = transitions;
            } else if let Some(next) = next {
                step["transitions"] = json!({"next": next});
            }
            step
        })
        .collect();
    let size = 3 + rng.below(3) as usize;
    let users: Vec<String> = (1..=size).map(|n| format!("{prefix}-{seed}-{n}")).collect();
    let managers = (0..size)
        .map(|_| match rng.below(3) {
            0 => None,
            n => Some(format!("{prefix}-{seed}-manager{n}")),
        })
        .collect();
    let mut scenario = Vec::new();
    let mut times = std::collections::BTreeSet::new();
    for _ in 0..size as u64 + rng.below(size as u64 + 1) {
        let user = &users[rng.below(size as u64) as usize];
        let action = if rng.below(10) < 4 { "READ" } else { "ACK" };
        // Anywhere after the start, up to a little past the last deadline; never two at one
        // moment, so an action that ends a wait is the last the simulation puts in it.
        let at = loop {
            let at = 1 + rng.below(span_ms + 3_000);
            if times.insert(at) {
                break at;
            }
        };
        scenario.push(json!({"recipient": user, "action": action, "at": at}));
    }
    Case {
        seed,
        users,
        managers,
        definition: json!({"version": 1, "steps": steps}),
        scenario: Value::Array(scenario),
    }
}

async fn simulate(system: &System, case: &Case) -> Result<Value> {
    let (status, timeline) = system
        .post(
            "/v1/workflow-definitions/simulate",
            json!({
                "definition": case.definition,
                "audience": {"members": case.users.iter().zip(&case.managers)
                    .map(|(u, m)| json!({"id": u, "manager": m})).collect::<Vec<_>>()},
                "scenario": case.scenario,
            }),
        )
        .await?;
    ensure!(
        status == StatusCode::OK,
        "simulate answered {status}: {timeline}"
    );
    Ok(timeline)
}

/// What a campaign did, in the terms both runs can show.
#[derive(Debug, PartialEq)]
struct Observed {
    /// Step ids in the order they ran, each wait with its outcome.
    steps: Vec<String>,
    /// Recipient → (final status, reminders).
    deliveries: BTreeMap<String, (String, u64)>,
    /// The late actions' answers: true where it was refused.
    refused: Vec<bool>,
}

fn simulated(timeline: &Value) -> Observed {
    let steps = timeline["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| match s["type"].as_str() {
            Some("DEADLINE_CHECK") => format!("{} {}", s["step_id"], s["outcome"]),
            Some("ESCALATE") => {
                let escalated = s["escalated"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        let reports = e["reports"].as_array().map_or(0, Vec::len);
                        (
                            e["manager"].as_str().unwrap_or_default().to_owned(),
                            reports as u64,
                        )
                    })
                    .collect();
                let skipped = s["skipped_without_manager"].as_array().map_or(0, Vec::len);
                escalation(&s["step_id"], escalated, skipped as u64)
            }
            _ => s["step_id"].to_string(),
        })
        .collect();
    let deliveries = timeline["deliveries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            (
                d["recipient"].as_str().unwrap_or_default().to_owned(),
                (
                    d["status"].as_str().unwrap_or_default().to_owned(),
                    d["reminders"].as_u64().unwrap_or_default(),
                ),
            )
        })
        .collect();
    let refused = late_actions(timeline)
        .iter()
        .map(|a| a["effect"] == "refused")
        .collect();
    Observed {
        steps,
        deliveries,
        refused,
    }
}

/// An ESCALATE step as both runs can show it: each manager with their unresolved reports'
/// count, and how many recipients were skipped for want of a manager.
fn escalation(step: &Value, mut escalated: Vec<(String, u64)>, skipped: u64) -> String {
    escalated.sort();
    format!("{step} escalated {escalated:?}, {skipped} without a manager")
}

/// The actions the simulation applied after the campaign ended.
fn late_actions(timeline: &Value) -> Vec<Value> {
    timeline["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["during_step"].is_null())
        .cloned()
        .collect()
}

/// Runs the case as a real campaign: each action applied once the campaign waits in the step
/// the simulation put it in, the late ones after it completed.
async fn run_for_real(system: &System, case: &Case, timeline: &Value) -> Result<Observed> {
    for (user, manager) in case.users.iter().zip(&case.managers) {
        let Some(manager) = manager else { continue };
        let members = system.members(&[user, manager]).await?;
        system
            .store
            .update_member(
                &system.org_id,
                &members[0].id,
                pidgr_store::MemberUpdate {
                    manager_id: Some(Some(members[1].id.clone())),
                    ..Default::default()
                },
            )
            .await?;
    }
    let campaign = system
        .start_campaign(
            &case.users.iter().map(String::as_str).collect::<Vec<_>>(),
            case.definition.clone(),
        )
        .await?;
    let deliveries = delivery_ids(system, &campaign).await?;
    let actions = timeline["actions"].as_array().context("actions")?;
    // A wait's actions go one after another as soon as the campaign waits there, well before
    // its deadline of several seconds.
    let mut waiting_in = None;
    for action in actions.iter().filter(|a| !a["during_step"].is_null()) {
        let step = action["during_step"].as_str().context("step")?;
        if waiting_in != Some(step) {
            system.until_waiting(&campaign, step).await?;
            waiting_in = Some(step);
        }
        let delivery = &deliveries[action["recipient"].as_str().context("recipient")?];
        let verb = if action["action"] == "ACK" {
            "ack"
        } else {
            "read"
        };
        let (status, body) = act(system, delivery, verb).await?;
        ensure!(
            status == StatusCode::OK,
            "{verb} during {step}: {status} {body}"
        );
    }
    system.until_status(&campaign, "COMPLETED").await?;
    let mut refused = Vec::new();
    for action in late_actions(timeline) {
        let delivery = &deliveries[action["recipient"].as_str().context("recipient")?];
        let verb = if action["action"] == "ACK" {
            "ack"
        } else {
            "read"
        };
        let (status, body) = act(system, delivery, verb).await?;
        ensure!(
            status == StatusCode::OK || status == StatusCode::CONFLICT,
            "late {verb}: {status} {body}"
        );
        refused.push(status == StatusCode::CONFLICT);
    }
    let activity = system.activity(&campaign).await?;
    let mut steps = Vec::new();
    for entry in &activity {
        let step = entry["step_id"].to_string();
        match entry["kind"].as_str() {
            Some("step_started") => steps.push(step),
            // A wait's end names its outcome; it follows the wait's start.
            Some("step_finished") if entry["details"]["outcome"].is_string() => {
                let last = steps.last_mut().context("a wait's end before its start")?;
                ensure!(*last == step, "{step} ended while {last} ran");
                *last = format!("{step} {}", entry["details"]["outcome"]);
            }
            // An escalation's end names each manager and the count of their reports.
            Some("step_finished") if entry["details"]["escalations"].is_array() => {
                let last = steps
                    .last_mut()
                    .context("an escalation's end before its start")?;
                ensure!(*last == step, "{step} ended while {last} ran");
                let details = &entry["details"];
                let escalated = details["escalations"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        (
                            e["manager_user_id"].as_str().unwrap_or_default().to_owned(),
                            e["unresolved_count"].as_u64().unwrap_or_default(),
                        )
                    })
                    .collect();
                let skipped = details["without_manager"].as_u64().unwrap_or_default();
                *last = escalation(&entry["step_id"], escalated, skipped);
            }
            _ => {}
        }
    }
    let deliveries = system
        .deliveries(&campaign)
        .await?
        .into_iter()
        .map(|d| {
            (
                d["user_id"].as_str().unwrap_or_default().to_owned(),
                (
                    d["status"].as_str().unwrap_or_default().to_owned(),
                    d["reminder_count"].as_u64().unwrap_or_default(),
                ),
            )
        })
        .collect();
    Ok(Observed {
        steps,
        deliveries,
        refused,
    })
}

/// Simulates and runs each case (concurrently), and compares.
async fn agree(system: &System, cases: Vec<Case>) -> Result<()> {
    let checks = cases.iter().map(|case| async move {
        let timeline = simulate(system, case).await?;
        let expected = simulated(&timeline);
        let real = run_for_real(system, case, &timeline)
            .await
            .with_context(|| format!("seed {}", case.seed))?;
        ensure!(
            real == expected,
            "seed {}: the simulation and the real run disagree\n definition: {}\n scenario: {}\n simulated: {expected:?}\n real: {real:?}",
            case.seed,
            case.definition,
            case.scenario
        );
        eprintln!(
            "seed {}: agreed on {} deliveries, {} late actions and the steps {}",
            case.seed,
            expected.deliveries.len(),
            expected.refused.len(),
            expected.steps.join(" → ")
        );
        Ok::<_, anyhow::Error>(())
    });
    for result in futures_util::future::join_all(checks).await {
        result?;
    }
    Ok(())
}

/// The template ESCALATE steps render the managers' message from.
async fn managers_template(system: &System) -> Result<String> {
    let template = system
        .create(
            "/v1/templates",
            json!({
                "name": "managers' digest",
                "title": "{{unacknowledged_count}} of your reports have not acknowledged",
                "body": "See who: {{deeplink}}",
            }),
        )
        .await?;
    Ok(template["id"].as_str().context("template id")?.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_agrees_with_real_runs_of_generated_cases() -> Result<()> {
    let system = System::start(Options::default()).await?;
    let template = managers_template(&system).await?;
    // Seeds from 1 upward until the cases between them exercise everything that can go
    // differently (and at least four of them): waits ended early and at their deadline,
    // reminders, MARK_MISSED, escalations with a recipient skipped for want of a manager, and
    // a refused late acknowledgement. Deterministic: the same seeds every run.
    let wanted = [
        "\"all_acknowledged\"",
        "\"deadline\"",
        "\"reminded\"",
        "\"MARK_MISSED\"",
        "\"escalated\"",
        "\"skipped_without_manager\"",
        "\"refused\"",
    ];
    let mut cases = Vec::new();
    let mut seen = String::new();
    for seed in 1..=30 {
        let case = generate(seed, "sim", &template);
        seen.push_str(&simulate(&system, &case).await?.to_string());
        cases.push(case);
        if cases.len() >= 4 && wanted.iter().all(|w| seen.contains(w)) {
            break;
        }
    }
    let missing: Vec<_> = wanted.iter().filter(|w| !seen.contains(*w)).collect();
    assert!(missing.is_empty(), "no generated case has {missing:?}");
    ensure!(
        cases.len() <= 8,
        "{} cases needed to cover everything",
        cases.len()
    );
    agree(&system, cases).await?;
    system.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_agrees_with_real_runs_on_postgres() -> Result<()> {
    if !postgres_configured("the_simulator_agrees_with_real_runs_on_postgres") {
        return Ok(());
    }
    let system = System::start(Options {
        postgres: true,
        ..Options::default()
    })
    .await?;
    let template = managers_template(&system).await?;
    let cases: Vec<Case> = (101..=103)
        .map(|seed| generate(seed, "simpg", &template))
        .collect();
    agree(&system, cases).await?;
    system.shutdown().await;
    Ok(())
}

/// The simulation answers bad input with pointers into the request, and nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_simulation_request_is_refused_with_pointers() -> Result<()> {
    let system = System::start(Options::default()).await?;
    let (status, body) = system
        .post(
            "/v1/workflow-definitions/simulate",
            json!({
                "definition": {"version": 1, "steps": [{"id": "w", "type": "DEADLINE_CHECK",
                    "config": {"duration": "forever"}}]},
                "audience": {"size": 2},
            }),
        )
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.to_string()
            .contains("/definition/steps/0/config/duration"),
        "{body}"
    );
    let (status, body) = system
        .post(
            "/v1/workflow-definitions/simulate",
            json!({
                "definition": generate(1, "bad", "no-template").definition,
                "audience": {"size": 2},
                "scenario": [{"recipient": "3", "action": "ACK", "at": "1s"}],
            }),
        )
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("/scenario/0/recipient"), "{body}");
    let (status, body) = system
        .post(
            "/v1/workflow-definitions/simulate",
            json!({"definition": generate(1, "bad", "no-template").definition, "audience": {"size": 2}, "extra": 1}),
        )
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("extra"), "{body}");
    system.shutdown().await;
    Ok(())
}

/// The example of the README: `pidgr simulate` prints its table offline, and `--json` prints
/// exactly what the API answers for the same file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_prints_the_apis_timeline_for_the_example() -> Result<()> {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/simulation.json");
    let simulate_file = |json: bool| async move {
        let mut command = tokio::process::Command::new(crate::harness::pidgr_binary()?);
        command
            .arg("simulate")
            .args(json.then_some("--json"))
            .arg(example)
            .env("PIDGR_ENVIRONMENT", "development");
        let output = command.output().await.context("running pidgr simulate")?;
        ensure!(output.status.success(), "pidgr simulate: {output:?}");
        Ok::<_, anyhow::Error>(String::from_utf8(output.stdout)?)
    };
    let table = simulate_file(false).await?;
    for line in [
        "remind          SEND_REMINDER                3d            3d  next              reminded 4: bob, cem, dee, eve",
        "escalate        ESCALATE                     4d            4d  next              escalated to 2: mia (1), noah (1); without a manager 1: dee",
        "mark_missed     MARK_MISSED                  5d            5d  next              missed 2: bob, dee",
        "completed at 5d: 3 of 5 acknowledged, 2 missed",
        "refused: dee's ACK at 6d (already missed)",
    ] {
        assert!(table.lines().any(|l| l == line), "{line:?} not in\n{table}");
    }
    let system = System::start(Options::default()).await?;
    let request: Value = serde_json::from_str(&std::fs::read_to_string(example)?)?;
    let (status, answer) = system
        .post("/v1/workflow-definitions/simulate", request)
        .await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let printed: Value = serde_json::from_str(&simulate_file(true).await?)?;
    assert_eq!(printed, answer);
    system.shutdown().await;
    Ok(())
}
