//! Dry runs on a simulated clock: what a definition would do to an audience under a scenario
//! of reads and acknowledgements, without Temporal, a database or a send.
//!
//! The steps are chosen by the same [`Interpreter`] and waits end by the same [`wait_outcome`]
//! as in the campaign workflow; only the drivers differ. Here each delivery lives in memory
//! and follows the rules the store applies to real ones:
//! - SEND_NOTIFICATION moves PENDING deliveries to SENT (every send is taken to succeed);
//! - SEND_REMINDER reminds SENT, READ and FAILED ones (a FAILED one becomes SENT again);
//! - MARK_MISSED, and the end of the campaign, make every unresolved delivery MISSED;
//! - a READ moves PENDING or SENT to READ; an ACK makes any delivery but a MISSED one
//!   ACKNOWLEDGED (an ACK after MISSED is refused, as the API refuses it);
//! - ESCALATE notifies each manager of recipients still unresolved once, with their count;
//!   recipients without a manager are skipped and counted;
//! - CALL_WEBHOOK is taken to succeed at once.
//!
//! Steps other than DEADLINE_CHECK take no simulated time. An action at the very moment a
//! deadline comes counts before it; one at `0s` happens before the first step (as an ACK can
//! reach the API before the push). Pure code, like the interpreter.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::contract::DeliveryCounts;
use crate::definition::{Definition, Outcome, Problem, StepKind, parse_duration};
use crate::engine::{Interpreter, wait_outcome};

/// The most recipients one simulation takes.
pub const MAX_AUDIENCE: usize = 10_000;
/// The most actions (after expanding `recipients` and `first`) one scenario takes.
pub const MAX_ACTIONS: usize = 50_000;
/// The most problems one answer lists: enough to fix a file by, bounded whatever the input.
pub const MAX_PROBLEMS: usize = 100;

/// A dry run's input, as the API and `pidgr simulate` take it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulationRequest {
    /// A workflow definition, validated by the caller (problems under `/definition`).
    pub definition: serde_json::Value,
    pub audience: Audience,
    #[serde(default)]
    pub scenario: Vec<ScenarioAction>,
}

/// Who the campaign would reach: exactly one of `size` and `members`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audience {
    /// `{"size": 500}`: recipients named `"1"` to `"500"`, none with a manager.
    #[serde(default)]
    pub size: Option<usize>,
    /// `{"members": [{"id": "alice", "manager": "carol"}, ...]}`.
    #[serde(default)]
    pub members: Option<Vec<SimulatedMember>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedMember {
    pub id: String,
    /// The id of this recipient's manager (who need not be in the audience).
    #[serde(default)]
    pub manager: Option<String>,
}

/// What recipients do, and when, counted from the start of the campaign.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioAction {
    /// `READ` or `ACK`.
    pub action: Action,
    /// One recipient ...
    #[serde(default)]
    pub recipient: Option<String>,
    /// ... or several ...
    #[serde(default)]
    pub recipients: Option<Vec<String>>,
    /// ... or the first `first` recipients of the audience, in its order.
    #[serde(default)]
    pub first: Option<usize>,
    /// A duration such as `"90m"` or `"0s"`, or a number of milliseconds.
    pub at: At,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    Read,
    Ack,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum At {
    Millis(u64),
    Text(String),
}

/// The answer: the steps in the order they would run, and where every delivery ends.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Timeline {
    pub steps: Vec<SimulatedStep>,
    /// When the campaign would complete, from its start.
    pub ended_at_ms: u64,
    pub ended_at: String,
    pub counts: DeliveryCounts,
    pub deliveries: Vec<SimulatedDelivery>,
    /// Every action of the scenario in the order applied, with what it did.
    pub actions: Vec<AppliedAction>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimulatedStep {
    pub step_id: String,
    #[serde(rename = "type")]
    pub step_type: &'static str,
    pub started_at_ms: u64,
    pub started_at: String,
    pub ended_at_ms: u64,
    pub ended_at: String,
    pub outcome: Outcome,
    /// SEND_NOTIFICATION: who was notified.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notified: Vec<String>,
    /// SEND_REMINDER: who was reminded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reminded: Vec<String>,
    /// MARK_MISSED: who was marked missed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missed: Vec<String>,
    /// ESCALATE: each manager notified, with the reports still unresolved.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub escalated: Vec<Escalation>,
    /// ESCALATE: unresolved recipients without a manager.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped_without_manager: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Escalation {
    pub manager: String,
    pub reports: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimulatedDelivery {
    pub recipient: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledged_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missed_at_ms: Option<u64>,
    pub reminders: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Pending,
    Sent,
    Read,
    Acknowledged,
    Missed,
    Failed,
}

impl Status {
    fn is_resolved(self) -> bool {
        matches!(self, Status::Acknowledged | Status::Missed | Status::Failed)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AppliedAction {
    pub recipient: String,
    pub action: Action,
    pub at_ms: u64,
    /// The step under way when it happened; `None` once the campaign had ended.
    pub during_step: Option<String>,
    pub effect: Effect,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// The delivery's status changed.
    Changed,
    /// Nothing to change (a second ACK, a READ after the ACK).
    Unchanged,
    /// Refused: the delivery was already MISSED.
    Refused,
}

/// Runs `definition` for `audience` under `scenario` on a simulated clock.
pub fn simulate(
    definition: &Definition,
    audience: &Audience,
    scenario: &[ScenarioAction],
) -> Result<Timeline, Vec<Problem>> {
    let mut sim = Simulation::new(audience)?;
    sim.schedule(scenario)?;
    let mut steps = Vec::new();
    let mut run = Interpreter::start(definition);
    let mut now = 0;
    while let Some(step) = run.current() {
        sim.apply_until(now, Some(&step.id));
        let mut record = SimulatedStep {
            step_id: step.id.clone(),
            step_type: step.kind.type_name(),
            started_at_ms: now,
            started_at: human(now),
            ended_at_ms: now,
            ended_at: String::new(),
            outcome: Outcome::Next,
            notified: Vec::new(),
            reminded: Vec::new(),
            missed: Vec::new(),
            escalated: Vec::new(),
            skipped_without_manager: Vec::new(),
        };
        let waited = match &step.kind {
            StepKind::SendNotification(_) => {
                record.notified = sim.notify();
                None
            }
            StepKind::SendReminder(_) => {
                record.reminded = sim.remind();
                None
            }
            StepKind::MarkMissed => {
                record.missed = sim.mark_missed(now);
                None
            }
            StepKind::CallWebhook(_) => None,
            StepKind::Escalate(_) => {
                (record.escalated, record.skipped_without_manager) = sim.escalate();
                None
            }
            StepKind::DeadlineCheck(config) => {
                let deadline = now.saturating_add(config.duration.as_millis() as u64);
                let outcome = loop {
                    if let Some(outcome) = wait_outcome(sim.unresolved, now, deadline) {
                        break outcome;
                    }
                    now = sim.next_action_at().map_or(deadline, |at| at.min(deadline));
                    sim.apply_until(now, Some(&step.id));
                };
                Some(outcome)
            }
        };
        record.ended_at_ms = now;
        record.ended_at = human(now);
        record.outcome = waited.unwrap_or(Outcome::Next);
        steps.push(record);
        run.step_ended(waited);
    }
    // The campaign completes: whatever is still unresolved is missed.
    sim.mark_missed(now);
    sim.apply_until(u64::MAX, None);
    Ok(Timeline {
        steps,
        ended_at_ms: now,
        ended_at: human(now),
        counts: sim.counts(),
        deliveries: sim.deliveries,
        actions: sim.applied,
    })
}

/// The deliveries and the actions still to come.
struct Simulation {
    deliveries: Vec<SimulatedDelivery>,
    managers: Vec<Option<String>>,
    /// Scheduled actions, latest first (popped from the end): (at, delivery index, action).
    scheduled: Vec<(u64, usize, Action)>,
    applied: Vec<AppliedAction>,
    /// Deliveries neither acknowledged, missed nor failed, kept as they change.
    unresolved: u64,
}

impl Simulation {
    fn new(audience: &Audience) -> Result<Self, Vec<Problem>> {
        let members: Vec<SimulatedMember> = match (audience.size, &audience.members) {
            (Some(size), None) if size > MAX_AUDIENCE => {
                return Err(vec![problem(
                    "/audience/size",
                    format!("a simulation takes at most {MAX_AUDIENCE} recipients"),
                )]);
            }
            (Some(size), None) => (1..=size)
                .map(|n| SimulatedMember {
                    id: n.to_string(),
                    manager: None,
                })
                .collect(),
            (None, Some(members)) => members.clone(),
            _ => {
                return Err(vec![problem(
                    "/audience",
                    "give exactly one of size and members",
                )]);
            }
        };
        let mut problems = Vec::new();
        if members.is_empty() {
            let pointer = match audience.size {
                Some(_) => "/audience/size",
                None => "/audience/members",
            };
            problems.push(problem(pointer, "the audience is empty"));
        }
        if members.len() > MAX_AUDIENCE {
            return Err(vec![problem(
                "/audience/members",
                format!("a simulation takes at most {MAX_AUDIENCE} recipients"),
            )]);
        }
        let mut seen = BTreeMap::new();
        for (index, member) in members.iter().enumerate() {
            if member.id.is_empty() {
                problems.push(problem(
                    format!("/audience/members/{index}/id"),
                    "a recipient needs an id",
                ));
            } else if seen.insert(member.id.as_str(), index).is_some() {
                problems.push(problem(
                    format!("/audience/members/{index}/id"),
                    format!("the recipient {:?} is listed twice", member.id),
                ));
            }
            if member.manager.as_deref() == Some("") {
                problems.push(problem(
                    format!("/audience/members/{index}/manager"),
                    "a manager needs an id (leave it out for none)",
                ));
            } else if member.manager.as_deref() == Some(member.id.as_str()) {
                problems.push(problem(
                    format!("/audience/members/{index}/manager"),
                    "a recipient cannot be their own manager",
                ));
            }
        }
        if !problems.is_empty() {
            problems.truncate(MAX_PROBLEMS);
            return Err(problems);
        }
        Ok(Simulation {
            deliveries: members
                .iter()
                .map(|m| SimulatedDelivery {
                    recipient: m.id.clone(),
                    status: Status::Pending,
                    read_at_ms: None,
                    acknowledged_at_ms: None,
                    missed_at_ms: None,
                    reminders: 0,
                })
                .collect(),
            unresolved: members.len() as u64,
            managers: members.into_iter().map(|m| m.manager).collect(),
            scheduled: Vec::new(),
            applied: Vec::new(),
        })
    }

    /// Checks and expands the scenario, in time order (ties in the order written).
    fn schedule(&mut self, scenario: &[ScenarioAction]) -> Result<(), Vec<Problem>> {
        let index: BTreeMap<&str, usize> = self
            .deliveries
            .iter()
            .enumerate()
            .map(|(i, d)| (d.recipient.as_str(), i))
            .collect();
        let mut problems = Vec::new();
        let mut scheduled = Vec::new();
        for (n, item) in scenario.iter().enumerate() {
            let at = match &item.at {
                At::Millis(ms) => Some(*ms),
                At::Text(text) if matches!(text.trim(), "0" | "0s") => Some(0),
                At::Text(text) => match parse_duration(text) {
                    Ok(duration) => Some(duration.as_millis() as u64),
                    Err(message) => {
                        problems.push(problem(format!("/scenario/{n}/at"), message));
                        None
                    }
                },
            };
            let targets: Vec<(String, Option<usize>)> =
                match (&item.recipient, &item.recipients, item.first) {
                    (Some(one), None, None) => {
                        vec![("recipient".into(), index.get(one.as_str()).copied())]
                    }
                    (None, Some(many), None) if many.is_empty() => {
                        problems.push(problem(
                            format!("/scenario/{n}/recipients"),
                            "list at least one recipient",
                        ));
                        continue;
                    }
                    (None, Some(many), None) => many
                        .iter()
                        .enumerate()
                        .map(|(k, id)| (format!("recipients/{k}"), index.get(id.as_str()).copied()))
                        .collect(),
                    (None, None, Some(first)) if first <= self.deliveries.len() => {
                        (0..first).map(|i| ("first".into(), Some(i))).collect()
                    }
                    (None, None, Some(_)) => {
                        problems.push(problem(
                            format!("/scenario/{n}/first"),
                            format!("the audience has only {} recipients", self.deliveries.len()),
                        ));
                        continue;
                    }
                    _ => {
                        problems.push(problem(
                            format!("/scenario/{n}"),
                            "give exactly one of recipient, recipients and first",
                        ));
                        continue;
                    }
                };
            for (pointer, target) in targets {
                match (target, at) {
                    (Some(delivery), Some(at)) => scheduled.push((at, delivery, item.action)),
                    (None, _) => problems.push(problem(
                        format!("/scenario/{n}/{pointer}"),
                        "no recipient of the audience has this id",
                    )),
                    (Some(_), None) => {}
                }
            }
            if problems.len() >= MAX_PROBLEMS {
                break;
            }
            if scheduled.len() > MAX_ACTIONS {
                problems.push(problem(
                    "/scenario",
                    format!("a scenario takes at most {MAX_ACTIONS} actions in all"),
                ));
                break;
            }
        }
        if !problems.is_empty() {
            problems.truncate(MAX_PROBLEMS);
            return Err(problems);
        }
        // Stable: actions at the same moment keep the order they were written in.
        scheduled.sort_by_key(|(at, _, _)| *at);
        scheduled.reverse();
        self.scheduled = scheduled;
        Ok(())
    }

    fn next_action_at(&self) -> Option<u64> {
        self.scheduled.last().map(|(at, _, _)| *at)
    }

    /// Applies every action due by `now`, as happening during `step` (`None`: after the end).
    fn apply_until(&mut self, now: u64, step: Option<&str>) {
        while let Some(&(at, index, action)) = self.scheduled.last() {
            if at > now {
                break;
            }
            self.scheduled.pop();
            let delivery = &mut self.deliveries[index];
            let was_resolved = delivery.status.is_resolved();
            let effect = match (action, delivery.status) {
                (Action::Ack, Status::Acknowledged) => Effect::Unchanged,
                (Action::Ack, Status::Missed) => Effect::Refused,
                (Action::Ack, _) => {
                    delivery.status = Status::Acknowledged;
                    delivery.acknowledged_at_ms = Some(at);
                    delivery.read_at_ms.get_or_insert(at);
                    Effect::Changed
                }
                (Action::Read, Status::Pending | Status::Sent) => {
                    delivery.status = Status::Read;
                    delivery.read_at_ms = Some(at);
                    Effect::Changed
                }
                (Action::Read, _) if delivery.read_at_ms.is_none() => {
                    delivery.read_at_ms = Some(at);
                    Effect::Changed
                }
                (Action::Read, _) => Effect::Unchanged,
            };
            if !was_resolved && delivery.status.is_resolved() {
                self.unresolved -= 1;
            }
            self.applied.push(AppliedAction {
                recipient: delivery.recipient.clone(),
                action,
                at_ms: at,
                during_step: step.map(str::to_owned),
                effect,
            });
        }
    }

    fn notify(&mut self) -> Vec<String> {
        self.change(|d| d.status == Status::Pending, |d| d.status = Status::Sent)
    }

    fn remind(&mut self) -> Vec<String> {
        self.change(
            |d| matches!(d.status, Status::Sent | Status::Read | Status::Failed),
            |d| {
                d.reminders += 1;
                if d.status == Status::Failed {
                    d.status = Status::Sent;
                }
            },
        )
    }

    fn mark_missed(&mut self, now: u64) -> Vec<String> {
        self.change(
            |d| !d.status.is_resolved(),
            |d| {
                d.status = Status::Missed;
                d.missed_at_ms = Some(now);
            },
        )
    }

    /// Applies `apply` to every delivery `which` selects; returns their recipients.
    fn change(
        &mut self,
        which: impl Fn(&SimulatedDelivery) -> bool,
        apply: impl Fn(&mut SimulatedDelivery),
    ) -> Vec<String> {
        let mut changed = Vec::new();
        for delivery in self.deliveries.iter_mut().filter(|d| which(d)) {
            let was_resolved = delivery.status.is_resolved();
            apply(delivery);
            match (was_resolved, delivery.status.is_resolved()) {
                (false, true) => self.unresolved -= 1,
                (true, false) => self.unresolved += 1,
                _ => {}
            }
            changed.push(delivery.recipient.clone());
        }
        changed
    }

    /// ESCALATE: the unresolved recipients grouped by manager (managers in id order), and
    /// those without one.
    fn escalate(&self) -> (Vec<Escalation>, Vec<String>) {
        let mut by_manager: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut skipped = Vec::new();
        for (delivery, manager) in self.deliveries.iter().zip(&self.managers) {
            if delivery.status.is_resolved() {
                continue;
            }
            match manager {
                Some(manager) => by_manager
                    .entry(manager)
                    .or_default()
                    .push(delivery.recipient.clone()),
                None => skipped.push(delivery.recipient.clone()),
            }
        }
        let escalated = by_manager
            .into_iter()
            .map(|(manager, reports)| Escalation {
                manager: manager.to_owned(),
                reports,
            })
            .collect();
        (escalated, skipped)
    }

    fn counts(&self) -> DeliveryCounts {
        let mut counts = DeliveryCounts::default();
        for delivery in &self.deliveries {
            *match delivery.status {
                Status::Pending => &mut counts.pending,
                Status::Sent => &mut counts.sent,
                Status::Read => &mut counts.read,
                Status::Acknowledged => &mut counts.acknowledged,
                Status::Missed => &mut counts.missed,
                Status::Failed => &mut counts.failed,
            } += 1;
        }
        counts
    }
}

fn problem(pointer: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        pointer: pointer.into(),
        message: message.into(),
    }
}

/// `5400000` → `"1h 30m"`; milliseconds only when there are some.
pub fn human(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut parts = Vec::new();
    let mut rest = ms;
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if rest >= size {
            parts.push(format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    if rest > 0 {
        parts.push(format!("{rest}ms"));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests;
