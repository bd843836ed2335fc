//! A lead's life as pure functions: new → dialing → an outcome → retry at a time, or done.
//!
//! [`after_attempt`] applies the campaign's [`RetryPlan`] to an attempt's [`Outcome`]: each
//! retryable outcome has a delay and a cap on attempts that ended that way, the plan caps
//! attempts per lead, and an abandoned call is never retried before the compliance rules'
//! 72 h. [`recycle`] puts finished leads of chosen dispositions back in play (a new pass over
//! a list). Compliance (calling hours, DNC, the per-number cap) is checked separately, when a
//! due lead is picked, so a lead's schedule never has to guess the calling window.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// A human answered and was connected to an agent in time.
    Human,
    /// The detector called it an answering machine.
    Machine,
    Busy,
    /// Rang out (at least the minimum ring time).
    NoAnswer,
    /// The call could not be placed (network error, rejected, invalid number).
    Failed,
    /// A human answered and no agent was connected within 2 s.
    Abandoned,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Human => "human",
            Outcome::Machine => "machine",
            Outcome::Busy => "busy",
            Outcome::NoAnswer => "no-answer",
            Outcome::Failed => "failed",
            Outcome::Abandoned => "abandoned",
        }
    }
}

/// Where a lead is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    New,
    Dialing,
    /// Waiting for `next_attempt_at`.
    Retry,
    Done,
}

/// Why a lead is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Disposition {
    /// Reached a human (an agent took it from here).
    Contacted,
    /// The last attempt's outcome was final under the plan, or its cap was reached.
    Final(Outcome),
    /// The plan's attempts per lead are used up.
    MaxAttempts,
}

/// One retryable outcome's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryRule {
    /// Wait after such an attempt before the next.
    #[serde(with = "secs")]
    pub delay: Duration,
    /// Attempts that ended this way after which the lead is done.
    pub max: u32,
}

/// A campaign's retry plan. An outcome without a rule is final.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPlan {
    pub busy: Option<RetryRule>,
    pub no_answer: Option<RetryRule>,
    pub failed: Option<RetryRule>,
    pub machine: Option<RetryRule>,
    pub abandoned: Option<RetryRule>,
    /// Attempts per lead, whatever their outcomes.
    pub max_attempts: u32,
    /// Dispositions [`recycle`] puts back in play.
    pub recycle: Vec<Outcome>,
}

impl Default for RetryPlan {
    /// VoIPbin's outplan shape with dialer-typical delays: busy after 10 min, no answer after
    /// 1 h, failures after 30 min, machines after 4 h, abandoned calls after 72 h.
    fn default() -> Self {
        let rule = |mins: u64, max| Some(RetryRule { delay: Duration::from_secs(mins * 60), max });
        RetryPlan {
            busy: rule(10, 5),
            no_answer: rule(60, 4),
            failed: rule(30, 3),
            machine: rule(240, 2),
            abandoned: rule(72 * 60, 2),
            max_attempts: 8,
            recycle: Vec::new(),
        }
    }
}

impl RetryPlan {
    fn rule(&self, outcome: Outcome) -> Option<RetryRule> {
        match outcome {
            Outcome::Human => None,
            Outcome::Machine => self.machine,
            Outcome::Busy => self.busy,
            Outcome::NoAnswer => self.no_answer,
            Outcome::Failed => self.failed,
            Outcome::Abandoned => self.abandoned,
        }
    }
}

/// A lead's dialling state, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub status: Status,
    pub attempts: u32,
    /// Attempts by outcome, for the per-outcome caps.
    pub outcomes: Vec<(Outcome, u32)>,
    pub disposition: Option<Disposition>,
    pub next_attempt_at: Option<Timestamp>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            status: Status::New,
            attempts: 0,
            outcomes: Vec::new(),
            disposition: None,
            next_attempt_at: None,
        }
    }
}

impl Progress {
    fn count(&self, outcome: Outcome) -> u32 {
        self.outcomes.iter().find(|(o, _)| *o == outcome).map_or(0, |(_, n)| *n)
    }

    /// Due for an attempt at `now` (new, or its retry time has come).
    pub fn is_due(&self, now: Timestamp) -> bool {
        match self.status {
            Status::New => true,
            Status::Retry => self.next_attempt_at.is_none_or(|at| at <= now),
            Status::Dialing | Status::Done => false,
        }
    }
}

/// A lead is being dialled.
pub fn start_attempt(progress: &Progress) -> Progress {
    Progress { status: Status::Dialing, ..progress.clone() }
}

/// The lead after an attempt ended with `outcome` at `at`, and the rule that decided it (for
/// the audit). `min_after_abandon` is the compliance rules' no-redial time.
pub fn after_attempt(
    progress: &Progress,
    outcome: Outcome,
    at: Timestamp,
    plan: &RetryPlan,
    min_after_abandon: Duration,
) -> (Progress, String) {
    let mut next = progress.clone();
    next.attempts += 1;
    match next.outcomes.iter_mut().find(|(o, _)| *o == outcome) {
        Some((_, n)) => *n += 1,
        None => next.outcomes.push((outcome, 1)),
    }
    let done = |mut p: Progress, d: Disposition, why: String| {
        p.status = Status::Done;
        p.disposition = Some(d);
        p.next_attempt_at = None;
        (p, why)
    };
    if outcome == Outcome::Human {
        return done(next, Disposition::Contacted, "contacted".into());
    }
    let Some(rule) = plan.rule(outcome) else {
        return done(next, Disposition::Final(outcome), format!("{}: final", outcome.as_str()));
    };
    if next.count(outcome) >= rule.max {
        let why = format!("{}: {} of {} attempts", outcome.as_str(), next.count(outcome), rule.max);
        return done(next, Disposition::Final(outcome), why);
    }
    if next.attempts >= plan.max_attempts {
        let why = format!("{} attempts per lead", plan.max_attempts);
        return done(next, Disposition::MaxAttempts, why);
    }
    let mut delay = rule.delay;
    let mut why = format!("{}: retry in {}", outcome.as_str(), human(delay));
    if outcome == Outcome::Abandoned && delay < min_after_abandon {
        delay = min_after_abandon;
        why = format!("abandoned: retry in {} (no redial within it)", human(delay));
    }
    next.status = Status::Retry;
    next.disposition = None;
    next.next_attempt_at = Some(at.checked_add(delay).unwrap_or(Timestamp::MAX));
    (next, why)
}

/// A finished lead back in play for a new pass, if its disposition is one the plan recycles.
pub fn recycle(progress: &Progress, plan: &RetryPlan) -> Option<Progress> {
    let recyclable = match progress.disposition? {
        Disposition::Final(o) => plan.recycle.contains(&o),
        Disposition::MaxAttempts => progress.outcomes.iter().any(|(o, _)| plan.recycle.contains(o)),
        Disposition::Contacted => false,
    };
    (progress.status == Status::Done && recyclable).then(Progress::default)
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(3600) {
        format!("{} h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H72: Duration = Duration::from_secs(72 * 3600);

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn busy_retries_until_its_cap_then_is_final() {
        let plan = RetryPlan::default();
        let mut p = Progress::default();
        let t = at("2026-03-03T15:00:00Z");
        for n in 1..5 {
            let why;
            (p, why) = after_attempt(&start_attempt(&p), Outcome::Busy, t, &plan, H72);
            assert_eq!((p.status, p.attempts), (Status::Retry, n), "{why}");
            assert_eq!(p.next_attempt_at, Some(at("2026-03-03T15:10:00Z")));
            assert!(!p.is_due(t) && p.is_due(at("2026-03-03T15:10:00Z")));
        }
        let (p, why) = after_attempt(&p, Outcome::Busy, t, &plan, H72);
        assert_eq!(
            (p.status, p.disposition),
            (Status::Done, Some(Disposition::Final(Outcome::Busy)))
        );
        assert_eq!(why, "busy: 5 of 5 attempts");
    }

    #[test]
    fn outcomes_mix_up_to_the_lead_cap_and_a_human_ends_it() {
        let plan = RetryPlan { max_attempts: 3, ..RetryPlan::default() };
        let t = at("2026-03-03T15:00:00Z");
        let (p, _) = after_attempt(&Progress::default(), Outcome::NoAnswer, t, &plan, H72);
        let (p, _) = after_attempt(&p, Outcome::Busy, t, &plan, H72);
        let (done, why) = after_attempt(&p, Outcome::Failed, t, &plan, H72);
        assert_eq!(
            (done.disposition, why.as_str()),
            (Some(Disposition::MaxAttempts), "3 attempts per lead")
        );
        let (human, _) = after_attempt(&p, Outcome::Human, t, &plan, H72);
        assert_eq!(human.disposition, Some(Disposition::Contacted));
    }

    #[test]
    fn an_abandoned_lead_waits_at_least_72_hours_whatever_the_plan() {
        let plan = RetryPlan {
            abandoned: Some(RetryRule { delay: Duration::from_secs(60), max: 3 }),
            ..RetryPlan::default()
        };
        let t = at("2026-03-03T15:00:00Z");
        let (p, why) = after_attempt(&Progress::default(), Outcome::Abandoned, t, &plan, H72);
        assert_eq!(p.next_attempt_at, Some(at("2026-03-06T15:00:00Z")));
        assert!(why.contains("72 h"), "{why}");
    }

    #[test]
    fn recycling_puts_chosen_dispositions_back() {
        let plan =
            RetryPlan { no_answer: None, recycle: vec![Outcome::NoAnswer], ..RetryPlan::default() };
        let t = at("2026-03-03T15:00:00Z");
        let (p, _) = after_attempt(&Progress::default(), Outcome::NoAnswer, t, &plan, H72);
        assert_eq!(p.disposition, Some(Disposition::Final(Outcome::NoAnswer)));
        assert_eq!(recycle(&p, &plan), Some(Progress::default()));
        let (human, _) = after_attempt(&Progress::default(), Outcome::Human, t, &plan, H72);
        assert_eq!(recycle(&human, &plan), None);
    }
}
