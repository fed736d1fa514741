use super::*;
use crate::definition::{UrlPolicy, parse};
use serde_json::json;

fn definition(value: serde_json::Value) -> Definition {
    parse(&value.to_string(), &UrlPolicy::STRICT)
        .expect("a valid definition")
        .definition
}

/// Notify, wait 72 hours, remind, wait a day, mark missed.
fn seventy_two_hours() -> Definition {
    definition(json!({"version": 1, "steps": [
        {"id": "send", "type": "SEND_NOTIFICATION", "transitions": {"next": "wait"}},
        {"id": "wait", "type": "DEADLINE_CHECK", "config": {"duration": "72h"},
         "transitions": {"deadline": "remind"}},
        {"id": "remind", "type": "SEND_REMINDER", "transitions": {"next": "last_call"}},
        {"id": "last_call", "type": "DEADLINE_CHECK", "config": {"duration": "1d"},
         "transitions": {"deadline": "miss"}},
        {"id": "miss", "type": "MARK_MISSED"}
    ]}))
}

fn members(ids: &[&str]) -> Audience {
    Audience {
        members: Some(
            ids.iter()
                .map(|id| SimulatedMember {
                    id: (*id).to_owned(),
                    manager: None,
                })
                .collect(),
        ),
        ..Audience::default()
    }
}

fn size(size: usize) -> Audience {
    Audience {
        size: Some(size),
        members: None,
    }
}

fn scenario(value: serde_json::Value) -> Vec<ScenarioAction> {
    serde_json::from_value(value).expect("a scenario")
}

fn status_of(timeline: &Timeline, recipient: &str) -> Status {
    timeline
        .deliveries
        .iter()
        .find(|d| d.recipient == recipient)
        .expect("a delivery")
        .status
}

const HOUR: u64 = 3_600_000;

#[test]
fn reminds_and_marks_missed_who_has_not_acknowledged() {
    let timeline = simulate(
        &seventy_two_hours(),
        &members(&["ann", "bob", "cem", "dee"]),
        &scenario(json!([
            {"recipient": "ann", "action": "ACK", "at": "1h"},
            {"recipient": "bob", "action": "READ", "at": "2h"},
            {"recipient": "cem", "action": "ACK", "at": "80h"},
        ])),
    )
    .expect("simulated");
    let steps: Vec<_> = timeline
        .steps
        .iter()
        .map(|s| {
            (
                s.step_id.as_str(),
                s.started_at_ms,
                s.ended_at_ms,
                s.outcome,
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("send", 0, 0, Outcome::Next),
            ("wait", 0, 72 * HOUR, Outcome::Deadline),
            ("remind", 72 * HOUR, 72 * HOUR, Outcome::Next),
            ("last_call", 72 * HOUR, 96 * HOUR, Outcome::Deadline),
            ("miss", 96 * HOUR, 96 * HOUR, Outcome::Next),
        ]
    );
    assert_eq!(timeline.steps[0].notified, ["ann", "bob", "cem", "dee"]);
    assert_eq!(timeline.steps[2].reminded, ["bob", "cem", "dee"]);
    assert_eq!(timeline.steps[4].missed, ["bob", "dee"]);
    assert_eq!(timeline.steps[2].started_at, "3d");
    assert_eq!(timeline.ended_at, "4d");
    assert_eq!(status_of(&timeline, "ann"), Status::Acknowledged);
    assert_eq!(status_of(&timeline, "bob"), Status::Missed);
    assert_eq!(status_of(&timeline, "cem"), Status::Acknowledged);
    assert_eq!(status_of(&timeline, "dee"), Status::Missed);
    assert_eq!(
        (timeline.counts.acknowledged, timeline.counts.missed),
        (2, 2)
    );
    let cem = &timeline.deliveries[2];
    assert_eq!(
        (cem.reminders, cem.acknowledged_at_ms),
        (1, Some(80 * HOUR))
    );
    assert_eq!(
        timeline.actions[2].during_step.as_deref(),
        Some("last_call")
    );
}

#[test]
fn a_wait_ends_early_once_everyone_has_acknowledged() {
    let timeline = simulate(
        &seventy_two_hours(),
        &size(3),
        &scenario(json!([
            {"recipients": ["1", "2"], "action": "ACK", "at": "1h"},
            {"recipient": "3", "action": "ACK", "at": "5h 30m"},
        ])),
    )
    .expect("simulated");
    // No transition on all_acknowledged: the campaign ends with the last acknowledgement.
    assert_eq!(timeline.steps.len(), 2);
    assert_eq!(timeline.steps[1].outcome, Outcome::AllAcknowledged);
    assert_eq!(timeline.ended_at_ms, 5 * HOUR + 30 * 60_000);
    assert_eq!(timeline.ended_at, "5h 30m");
    assert_eq!(timeline.counts.acknowledged, 3);
}

#[test]
fn an_ack_after_missed_is_refused_and_one_at_the_deadline_counts() {
    let timeline = simulate(
        &seventy_two_hours(),
        &size(2),
        &scenario(json!([
            {"recipient": "1", "action": "ACK", "at": "96h"},
            {"recipient": "2", "action": "ACK", "at": "97h"},
            {"recipient": "1", "action": "READ", "at": 96 * HOUR + 1},
        ])),
    )
    .expect("simulated");
    assert_eq!(status_of(&timeline, "1"), Status::Acknowledged);
    assert_eq!(status_of(&timeline, "2"), Status::Missed);
    let effects: Vec<_> = timeline
        .actions
        .iter()
        .map(|a| (a.recipient.as_str(), a.during_step.as_deref(), a.effect))
        .collect();
    assert_eq!(
        effects,
        [
            ("1", Some("last_call"), Effect::Changed),
            ("1", None, Effect::Unchanged),
            ("2", None, Effect::Refused),
        ]
    );
}

#[test]
fn actions_at_one_moment_keep_their_written_order() {
    let run = |first: &str, second: &str| {
        simulate(
            &seventy_two_hours(),
            &size(1),
            &scenario(json!([
                {"recipient": "1", "action": first, "at": "1h"},
                {"recipient": "1", "action": second, "at": "1h"},
            ])),
        )
        .expect("simulated")
        .actions
        .into_iter()
        .map(|a| a.effect)
        .collect::<Vec<_>>()
    };
    assert_eq!(run("READ", "ACK"), [Effect::Changed, Effect::Changed]);
    assert_eq!(run("ACK", "READ"), [Effect::Changed, Effect::Unchanged]);
}

#[test]
fn bad_input_is_reported_with_pointers() {
    let audience = Audience {
        size: None,
        members: Some(vec![
            SimulatedMember {
                id: "ann".into(),
                manager: Some("ann".into()),
            },
            SimulatedMember {
                id: "ann".into(),
                manager: None,
            },
        ]),
    };
    let problems = simulate(&seventy_two_hours(), &audience, &[]).unwrap_err();
    let pointers: Vec<_> = problems.iter().map(|p| p.pointer.as_str()).collect();
    assert_eq!(
        pointers,
        ["/audience/members/0/manager", "/audience/members/1/id"]
    );
    let problems = simulate(
        &seventy_two_hours(),
        &members(&["ann"]),
        &scenario(json!([
            {"recipient": "zed", "action": "ACK", "at": "1h"},
            {"recipients": ["ann", "zed"], "action": "ACK", "at": "soon"},
            {"recipient": "ann", "first": 1, "action": "ACK", "at": "1h"},
            {"first": 2, "action": "READ", "at": "1h"},
        ])),
    )
    .unwrap_err();
    let pointers: Vec<_> = problems.iter().map(|p| p.pointer.as_str()).collect();
    assert_eq!(
        pointers,
        [
            "/scenario/0/recipient",
            "/scenario/1/at",
            "/scenario/1/recipients/1",
            "/scenario/2",
            "/scenario/3/first",
        ]
    );
    let empty = simulate(&seventy_two_hours(), &size(0), &[]).unwrap_err();
    assert_eq!(empty[0].pointer, "/audience/size");
    let huge = simulate(&seventy_two_hours(), &size(MAX_AUDIENCE + 1), &[]).unwrap_err();
    assert_eq!(huge[0].pointer, "/audience/size");
    let neither = simulate(&seventy_two_hours(), &Audience::default(), &[]).unwrap_err();
    assert_eq!(neither[0].pointer, "/audience");
}

#[test]
fn human_durations() {
    assert_eq!(human(0), "0s");
    assert_eq!(human(90_000), "1m 30s");
    assert_eq!(human(86_400_000 + 1), "1d 1ms");
}

#[test]
fn escalation_notifies_each_manager_once_with_their_unresolved_reports() {
    let definition = definition(json!({"version": 1, "steps": [
        {"id": "send", "type": "SEND_NOTIFICATION", "transitions": {"next": "wait"}},
        {"id": "wait", "type": "DEADLINE_CHECK", "config": {"duration": "24h"},
         "transitions": {"deadline": "escalate"}},
        {"id": "escalate", "type": "ESCALATE",
         "config": {"template_id": "t", "template_version": 1}}
    ]}));
    let member = |id: &str, manager: Option<&str>| SimulatedMember {
        id: id.into(),
        manager: manager.map(Into::into),
    };
    let audience = Audience {
        size: None,
        members: Some(vec![
            member("ann", Some("mia")),
            member("bob", Some("mia")),
            member("cem", Some("noah")),
            member("dee", None),
            member("eve", Some("mia")),
        ]),
    };
    let timeline = simulate(
        &definition,
        &audience,
        &scenario(json!([{"recipient": "bob", "action": "ACK", "at": "1h"}])),
    )
    .expect("simulated");
    let escalate = &timeline.steps[2];
    assert_eq!(escalate.started_at_ms, 24 * HOUR);
    assert_eq!(
        escalate.escalated,
        [
            Escalation {
                manager: "mia".into(),
                reports: vec!["ann".into(), "eve".into()],
            },
            Escalation {
                manager: "noah".into(),
                reports: vec!["cem".into()],
            },
        ]
    );
    assert_eq!(escalate.skipped_without_manager, ["dee"]);
}
