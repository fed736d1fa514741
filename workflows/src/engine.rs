//! The interpreter of a definition: which step runs, where each outcome leads, and when a
//! `DEADLINE_CHECK` wait is over. Pure and synchronous, so that the campaign workflow (on
//! Temporal's clock, with activities doing the work) and the simulator (on a simulated clock,
//! with deliveries held in memory) run the very same rules: one interpreter, two drivers.
//!
//! A driver asks [`Interpreter::current`] for the step to run, runs it, and reports how it
//! ended with [`Interpreter::step_ended`], which moves to the next step or ends the run. A wait
//! asks [`wait_outcome`] (or, knowing which of the two happened, [`early_outcome`] and
//! [`outcome_at_deadline`]) whenever it learns something: a count, a fired timer.

use crate::definition::{Definition, Outcome, Step};

/// A run of a definition, one step at a time.
#[derive(Clone, Debug)]
pub struct Interpreter<'a> {
    definition: &'a Definition,
    current: Option<&'a Step>,
}

/// A run resumed at a step the definition does not have (a corrupt continue-as-new input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownStep(pub String);

impl std::fmt::Display for UnknownStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "resume names step {:?}, which the definition does not have",
            self.0
        )
    }
}

impl<'a> Interpreter<'a> {
    /// A run at the definition's entry step.
    pub fn start(definition: &'a Definition) -> Self {
        Interpreter {
            definition,
            current: Some(definition.entry()),
        }
    }

    /// A run that picks up at `step_id` (a run continued as new).
    pub fn resume(definition: &'a Definition, step_id: &str) -> Result<Self, UnknownStep> {
        let step = definition
            .step(step_id)
            .ok_or_else(|| UnknownStep(step_id.to_owned()))?;
        Ok(Interpreter {
            definition,
            current: Some(step),
        })
    }

    /// The step to run now; `None` once the run has reached an end.
    pub fn current(&self) -> Option<&'a Step> {
        self.current
    }

    /// The current step ended: a `DEADLINE_CHECK` with the outcome its wait decided, any other
    /// type (`None`) with `next`. Moves to the step that outcome leads to and returns it; `None`
    /// when no transition is given for it, which ends the run.
    pub fn step_ended(&mut self, waited: Option<Outcome>) -> Option<&'a Step> {
        let outcome = waited.unwrap_or(Outcome::Next);
        self.current = self
            .current
            .and_then(|step| self.definition.next_step(&step.id, outcome));
        self.current
    }
}

/// A wait learnt something before its deadline: it is over only once nothing is unresolved.
pub fn early_outcome(unresolved: u64) -> Option<Outcome> {
    (unresolved == 0).then_some(Outcome::AllAcknowledged)
}

/// A wait's deadline has come: `all_acknowledged` if nothing is unresolved after all (the
/// last acknowledgement may have come with the deadline), `deadline` otherwise.
pub fn outcome_at_deadline(unresolved: u64) -> Outcome {
    early_outcome(unresolved).unwrap_or(Outcome::Deadline)
}

/// Whether a `DEADLINE_CHECK` wait is over, given how many deliveries are still unresolved
/// and the time, both as last learnt; `None` while it must go on waiting.
pub fn wait_outcome(unresolved: u64, now_ms: u64, deadline_ms: u64) -> Option<Outcome> {
    if now_ms >= deadline_ms {
        Some(outcome_at_deadline(unresolved))
    } else {
        early_outcome(unresolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::{UrlPolicy, parse};

    fn definition() -> Definition {
        parse(
            r#"{"version":1,"steps":[
                {"id":"send","type":"SEND_NOTIFICATION","transitions":{"next":"wait"}},
                {"id":"wait","type":"DEADLINE_CHECK","config":{"duration":"1h"},
                 "transitions":{"deadline":"miss"}},
                {"id":"miss","type":"MARK_MISSED"}]}"#,
            &UrlPolicy::STRICT,
        )
        .expect("valid")
        .definition
    }

    #[test]
    fn follows_the_outcomes_to_an_end() {
        let definition = definition();
        let mut run = Interpreter::start(&definition);
        assert_eq!(run.current().map(|s| s.id.as_str()), Some("send"));
        assert_eq!(run.step_ended(None).map(|s| s.id.as_str()), Some("wait"));
        assert_eq!(
            run.step_ended(Some(Outcome::Deadline))
                .map(|s| s.id.as_str()),
            Some("miss")
        );
        assert!(run.step_ended(None).is_none());
        assert!(run.current().is_none());
        // An outcome without a transition ends the run.
        let mut run = Interpreter::resume(&definition, "wait").expect("known step");
        assert!(run.step_ended(Some(Outcome::AllAcknowledged)).is_none());
        assert_eq!(
            Interpreter::resume(&definition, "gone").unwrap_err(),
            UnknownStep("gone".into())
        );
    }

    #[test]
    fn a_wait_ends_when_nothing_is_unresolved_or_at_its_deadline() {
        assert_eq!(wait_outcome(3, 10, 20), None);
        assert_eq!(wait_outcome(3, 20, 20), Some(Outcome::Deadline));
        assert_eq!(wait_outcome(0, 10, 20), Some(Outcome::AllAcknowledged));
        assert_eq!(wait_outcome(0, 20, 20), Some(Outcome::AllAcknowledged));
        assert_eq!(early_outcome(1), None);
        assert_eq!(outcome_at_deadline(1), Outcome::Deadline);
        assert_eq!(outcome_at_deadline(0), Outcome::AllAcknowledged);
    }
}
