//! `pidgr simulate FILE`: the dry run of `POST /v1/workflow-definitions/simulate`, offline.
//! FILE holds the same JSON as the request (`definition`, `audience`, `scenario`); the answer
//! is a table of the steps on the simulated clock, or the timeline's JSON with `--json`.

use std::fmt::Write as _;

use anyhow::Context;
use pidgr_workflows::definition::{Problem, UrlPolicy, parse_value};
use pidgr_workflows::simulate::{Effect, SimulationRequest, Timeline, human, simulate};

/// The timeline for the file's text, or every problem with it (pointers into the file).
pub fn run(text: &str, policy: &UrlPolicy) -> anyhow::Result<Result<Timeline, Vec<Problem>>> {
    let file: SimulationRequest = serde_json::from_str(text).context("reading the simulation")?;
    let definition = match parse_value(&file.definition, policy) {
        Ok(validated) => validated.definition,
        Err(problems) => {
            return Ok(Err(problems
                .into_iter()
                .map(|p| Problem {
                    pointer: format!("/definition{}", p.pointer),
                    message: p.message,
                })
                .collect()));
        }
    };
    Ok(simulate(&definition, &file.audience, &file.scenario))
}

/// The timeline as a table, one line per step, then how the campaign ends.
pub fn table(timeline: &Timeline) -> String {
    let mut out = String::new();
    let width = timeline
        .steps
        .iter()
        .map(|s| s.step_id.chars().count())
        .fold(4, usize::max);
    let _ = writeln!(
        out,
        "{:<width$}  {:<17}  {:>12}  {:>12}  {:<16}  WHO",
        "STEP", "TYPE", "START", "END", "OUTCOME"
    );
    for step in &timeline.steps {
        let mut who = Vec::new();
        let managers: Vec<String> = step
            .escalated
            .iter()
            .map(|e| format!("{} ({})", e.manager, e.reports.len()))
            .collect();
        for (verb, people) in [
            ("notified", &step.notified),
            ("reminded", &step.reminded),
            ("missed", &step.missed),
            ("escalated to", &managers),
            ("without a manager", &step.skipped_without_manager),
        ] {
            if !people.is_empty() {
                who.push(format!("{verb} {}", names(people)));
            }
        }
        let line = format!(
            "{:<width$}  {:<17}  {:>12}  {:>12}  {:<16}  {}",
            step.step_id,
            step.step_type,
            step.started_at,
            step.ended_at,
            step.outcome.as_str(),
            who.join("; ")
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let counts = &timeline.counts;
    let _ = writeln!(
        out,
        "\ncompleted at {}: {} of {} acknowledged, {} missed",
        timeline.ended_at,
        counts.acknowledged,
        counts.total(),
        counts.missed
    );
    let missed: Vec<String> = timeline
        .deliveries
        .iter()
        .filter(|d| d.missed_at_ms.is_some())
        .map(|d| d.recipient.clone())
        .collect();
    if !missed.is_empty() {
        let _ = writeln!(out, "missed {}", names(&missed));
    }
    for action in timeline
        .actions
        .iter()
        .filter(|a| a.effect == Effect::Refused)
    {
        let _ = writeln!(
            out,
            "refused: {}'s ACK at {} (already missed)",
            action.recipient,
            human(action.at_ms)
        );
    }
    out
}

/// Up to ten names, then how many more.
fn names(people: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut text = people
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if people.len() > SHOWN {
        let _ = write!(text, " and {} more", people.len() - SHOWN);
    }
    format!("{}: {text}", people.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_who_each_step_reached_and_how_it_ends() {
        let text = serde_json::json!({
            "definition": {"version": 1, "steps": [
                {"id": "send", "type": "SEND_NOTIFICATION", "transitions": {"next": "wait"}},
                {"id": "wait", "type": "DEADLINE_CHECK", "config": {"duration": "72h"},
                 "transitions": {"deadline": "miss"}},
                {"id": "miss", "type": "MARK_MISSED"}]},
            "audience": {"size": 12},
            "scenario": [{"first": 1, "action": "ACK", "at": "1h"},
                         {"recipient": "2", "action": "ACK", "at": "73h"}]
        })
        .to_string();
        let timeline = run(&text, &UrlPolicy::STRICT).unwrap().unwrap();
        let table = table(&timeline);
        assert!(table.contains("notified 12: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 2 more"));
        assert!(table.contains("missed 11: 2, 3,"), "{table}");
        assert!(table.contains("completed at 3d: 1 of 12 acknowledged, 11 missed"));
        assert!(table.contains("refused: 2's ACK at 3d 1h (already missed)"));
        let bad = serde_json::json!({
            "definition": {"version": 1, "steps": []}, "audience": {"size": 1}
        })
        .to_string();
        let problems = run(&bad, &UrlPolicy::STRICT).unwrap().unwrap_err();
        assert!(
            problems[0].pointer.starts_with("/definition"),
            "{problems:?}"
        );
    }
}
