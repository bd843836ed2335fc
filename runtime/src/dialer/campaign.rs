//! A campaign's settings as the API accepts and the store keeps them (JSON), checked once
//! when the campaign is created, and what the runner derives from them: the compliance
//! [`Rules`], the SIP URI a number is dialled at, lead progress to and from the store.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::Time;
use serde::{Deserialize, Serialize};

use super::compliance::{Jurisdiction, Rules};
use super::leads::{Disposition, Outcome, Progress, RetryPlan, Status};

/// The pacing strategies a node ships (`sample-strategies/`).
pub const SAMPLE_STRATEGIES: [&str; 4] = ["preview", "progressive", "predictive", "adapt-average"];

/// The sample crate a strategy name means (`adapt` is short for `adapt-average`).
pub fn sample_strategy(name: &str) -> Option<&'static str> {
    let name = if name == "adapt" { "adapt-average" } else { name };
    SAMPLE_STRATEGIES.into_iter().find(|s| *s == name)
}

/// Which strategy a campaign paces with: a sample by name, or a tenant's uploaded component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrategyRef<'a> {
    Sample(&'static str),
    /// `NAME@VERSION` (a version number, or an alias resolved to one when the campaign is
    /// created).
    Uploaded {
        name: &'a str,
        version: &'a str,
    },
}

impl<'a> StrategyRef<'a> {
    pub fn parse(s: &'a str) -> Result<StrategyRef<'a>, String> {
        if let Some(sample) = sample_strategy(s) {
            return Ok(StrategyRef::Sample(sample));
        }
        match s.split_once('@') {
            Some((name, version)) if !name.is_empty() && !version.is_empty() => {
                Ok(StrategyRef::Uploaded { name, version })
            }
            _ => Err(format!(
                "strategy {s:?}: use one of {}, or NAME@VERSION for an uploaded one",
                SAMPLE_STRATEGIES.join(", ")
            )),
        }
    }

    /// The uploaded version, once pinned to a number.
    pub fn pinned(&self) -> Option<(&'a str, i64)> {
        match self {
            StrategyRef::Uploaded { name, version } => Some((name, version.parse().ok()?)),
            StrategyRef::Sample(_) => None,
        }
    }
}

/// Where numbers are dialled: the longest matching prefix wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Trunk {
    /// E.164 prefix (`+1212`), or empty for every number.
    #[serde(default)]
    pub prefix: String,
    /// The SIP URI to call, with `{number}` for the lead's number
    /// (`sip:{number}@carrier.example.com:5060`).
    pub uri: String,
}

/// A campaign's settings. Everything but `agents` and `trunks` has a default; the law's
/// limits may be tightened here, never loosened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Registered SIP users who take the answered calls (logged in while registered).
    pub agents: Vec<String>,
    /// Or: the tenant's queue whose members take them — agents who called in to a flow
    /// waiting in `dial("queue:NAME")` (ready while it waits; their wrap-up is the flow's).
    pub agent_queue: Option<String>,
    /// Or: a flow the answered person is handed to instead of an agent (`NAME`, `NAME@ALIAS`,
    /// `NAME@VERSION`; pinned to a version when the campaign is created), with the lead's
    /// columns as its vars. For calls the callee agreed to (reminders, surveys): no agent is
    /// connected, so the abandon rules do not apply to them.
    pub flow: Option<String>,
    /// Calls a flow campaign keeps up at once (1–500).
    pub lines: u32,
    pub trunks: Vec<Trunk>,
    /// Caller ID presented (the From user).
    pub caller_id: Option<String>,
    /// Calling hours in the called party's local time, `HH:MM`; within 08:00–21:00.
    pub window_start: String,
    pub window_end: String,
    /// `us` (abandon ledger over 30 days) or `uk` (24 hours).
    #[schema(value_type = String)]
    pub jurisdiction: Jurisdiction,
    /// How long a lead's phone rings: at least 15 s.
    pub ring_timeout_secs: u64,
    /// An agent's wrap-up after each call.
    pub wrap_secs: u64,
    /// Attempts to one number in 24 hours (at most 3).
    pub max_per_number_24h: u32,
    /// Per outcome: retry delay (seconds) and attempts; attempts per lead.
    #[schema(value_type = Object)]
    pub retry: RetryPlan,
    /// Said to an answered call no agent could take, before hanging up.
    pub message: String,
    /// Answering-machine detection (off unless `detect` is set).
    pub answering_machine: MachineDetection,
}

/// What a machine gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnMachine {
    /// Hang up as soon as a machine is detected.
    #[default]
    Hangup,
    /// Wait for the greeting (and its beep) to end, say `machine_message`, hang up.
    LeaveMessage,
    /// Wait for the greeting to end and hand the call to `machine_flow`.
    Flow,
}

/// Answering-machine detection: the callee's first speech/silence pattern, classified before
/// an agent is connected. A person's greeting ends the detection early, and the law's 2 s to
/// connect an agent run from the end of the greeting; a silent answer is treated as a person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MachineDetection {
    pub detect: bool,
    pub on_machine: OnMachine,
    /// Left on machines with `on_machine: leave-message`.
    pub machine_message: Option<String>,
    /// Run on machines with `on_machine: flow` (pinned like the campaign's `flow`).
    pub machine_flow: Option<String>,
    /// No word within this: a silent answer (a person, the clock running from the answer).
    pub initial_silence_ms: u64,
    /// This much voice: a machine.
    pub greeting_ms: u64,
    /// Silence after a short greeting: a person.
    pub after_greeting_silence_ms: u64,
    /// More words than this: a machine.
    pub max_words: u32,
    /// Longest analysis; undecided by then counts as a person.
    pub total_ms: u64,
    /// Share of machine verdicts taken to be people misjudged (0–0.5, default 0.02): each
    /// machine adds it to the abandon ledger, as regulators want false positives estimated.
    /// Set it to the rate you measured.
    pub false_positive_estimate: f64,
}

impl Default for MachineDetection {
    fn default() -> Self {
        let d = voxide_media::amd::AmdSpec::default();
        let ms = |d: Duration| d.as_millis() as u64;
        MachineDetection {
            detect: false,
            on_machine: OnMachine::Hangup,
            machine_message: None,
            machine_flow: None,
            initial_silence_ms: ms(d.initial_silence),
            greeting_ms: ms(d.greeting),
            after_greeting_silence_ms: ms(d.after_greeting_silence),
            max_words: d.max_words,
            total_ms: ms(d.total),
            false_positive_estimate: 0.02,
        }
    }
}

impl MachineDetection {
    fn problems(&self, out: &mut Vec<String>) {
        let mut range = |what: &str, v: u64, lo: u64, hi: u64, why: &str| {
            if !(lo..=hi).contains(&v) {
                out.push(format!("answering_machine.{what} {v}: {lo} to {hi}{why}"));
            }
        };
        // A silent answer and a person's greeting are decided within the law's 2 s.
        range("initial_silence_ms", self.initial_silence_ms, 300, 1500, " (the 2 s rule)");
        range(
            "after_greeting_silence_ms",
            self.after_greeting_silence_ms,
            300,
            1500,
            " (the 2 s rule)",
        );
        range("greeting_ms", self.greeting_ms, 500, 5000, "");
        range("total_ms", self.total_ms, 1000, 5000, "");
        range("max_words", u64::from(self.max_words), 1, 10, "");
        if !(0.0..=0.5).contains(&self.false_positive_estimate) {
            out.push(format!(
                "answering_machine.false_positive_estimate {}: 0 to 0.5",
                self.false_positive_estimate
            ));
        }
        if self.on_machine == OnMachine::LeaveMessage
            && self.machine_message.as_deref().is_none_or(|m| m.trim().is_empty() || m.len() > 500)
        {
            out.push(
                "answering_machine.machine_message: 1 to 500 characters with leave-message".into(),
            );
        }
        if (self.on_machine == OnMachine::Flow) != self.machine_flow.is_some() {
            out.push(
                "answering_machine.machine_flow: give it with on_machine = \"flow\" (only)".into(),
            );
        }
    }

    /// The call-side plan, when detection is on.
    pub fn plan(&self) -> Option<crate::calls::MachinePlan> {
        self.detect.then(|| crate::calls::MachinePlan {
            spec: voxide_media::amd::AmdSpec {
                initial_silence: Duration::from_millis(self.initial_silence_ms),
                greeting: Duration::from_millis(self.greeting_ms),
                after_greeting_silence: Duration::from_millis(self.after_greeting_silence_ms),
                total: Duration::from_millis(self.total_ms),
                max_words: self.max_words,
                ..voxide_media::amd::AmdSpec::default()
            },
            message: match self.on_machine {
                OnMachine::LeaveMessage => self.machine_message.clone(),
                OnMachine::Hangup | OnMachine::Flow => None,
            },
            flow: None,
        })
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            agents: Vec::new(),
            agent_queue: None,
            flow: None,
            lines: 10,
            trunks: Vec::new(),
            caller_id: None,
            window_start: "08:00".into(),
            window_end: "21:00".into(),
            jurisdiction: Jurisdiction::Us,
            ring_timeout_secs: 25,
            wrap_secs: 10,
            max_per_number_24h: 3,
            retry: RetryPlan::default(),
            message: "Sorry, all our agents are busy. We will call you back. \
                      To stop these calls, reply to this number."
                .into(),
            answering_machine: MachineDetection::default(),
        }
    }
}

fn hhmm(s: &str, what: &str) -> Result<Time, String> {
    let bad = || format!("{what} {s:?}: use HH:MM");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let (h, m): (i8, i8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    Time::new(h, m, 0, 0).map_err(|_| bad())
}

impl Settings {
    /// Every problem with the settings, in words (empty: fine).
    pub fn problems(&self, strategy: &str, abandon_target: f64) -> Vec<String> {
        let mut out = Vec::new();
        let law = Rules::default();
        if let Err(e) = StrategyRef::parse(strategy) {
            out.push(e);
        }
        if strategy == "preview" {
            out.push(
                "strategy preview: agents accept each lead in a console, which live campaigns \
                 do not have yet; use progressive"
                    .into(),
            );
        }
        if !(0.0..=law.abandon_limit).contains(&abandon_target) {
            out.push(format!(
                "abandon_target {abandon_target}: between 0 and {} (the law's limit)",
                law.abandon_limit
            ));
        }
        let kinds = usize::from(!self.agents.is_empty())
            + usize::from(self.agent_queue.is_some())
            + usize::from(self.flow.is_some());
        if kinds == 0 {
            out.push(
                "agents: name at least one registered user (or an agent_queue, or a flow)".into(),
            );
        } else if kinds > 1 {
            out.push("agents, agent_queue and flow: give one of them".into());
        }
        if !(1..=500).contains(&self.lines) {
            out.push(format!("lines {}: 1 to 500", self.lines));
        }
        if let Some(q) = self.agent_queue.as_ref().filter(|q| q.is_empty() || q.len() > 128) {
            out.push(format!("agent_queue {q:?}: 1 to 128 characters"));
        }
        for agent in &self.agents {
            if agent.is_empty() || agent.contains([':', '@', ' ']) {
                out.push(format!("agents: {agent:?} is not a registered user's name"));
            }
        }
        if self.trunks.is_empty() {
            out.push("trunks: give at least one {prefix, uri}".into());
        }
        for t in &self.trunks {
            if !(t.uri.starts_with("sip:") && t.uri.contains("{number}")) {
                out.push(format!("trunks: {:?} must be a sip: URI with {{number}}", t.uri));
            }
            if !t.prefix.is_empty() && !t.prefix.starts_with('+') {
                out.push(format!("trunks: prefix {:?} must start with +", t.prefix));
            }
        }
        match (hhmm(&self.window_start, "window_start"), hhmm(&self.window_end, "window_end")) {
            (Ok(start), Ok(end)) => {
                if start < law.window.0 || end > law.window.1 || start >= end {
                    out.push(format!(
                        "calling window {}–{}: must lie within 08:00–21:00, start before end",
                        self.window_start, self.window_end
                    ));
                }
            }
            (a, b) => out.extend([a.err(), b.err()].into_iter().flatten()),
        }
        if self.ring_timeout_secs < law.min_ring.as_secs() || self.ring_timeout_secs > 120 {
            out.push(format!("ring_timeout_secs {}: 15 to 120", self.ring_timeout_secs));
        }
        if self.wrap_secs > 3600 {
            out.push(format!("wrap_secs {}: at most 3600", self.wrap_secs));
        }
        if !(1..=law.max_per_number_24h).contains(&self.max_per_number_24h) {
            out.push(format!(
                "max_per_number_24h {}: 1 to {}",
                self.max_per_number_24h, law.max_per_number_24h
            ));
        }
        if self.retry.max_attempts == 0 {
            out.push("retry.max_attempts: at least 1".into());
        }
        if self.message.trim().is_empty() || self.message.len() > 500 {
            out.push("message: 1 to 500 characters".into());
        }
        self.answering_machine.problems(&mut out);
        out
    }

    /// The compliance rules for this campaign: the law's, tightened by the settings.
    pub fn rules(&self, abandon_target: f64) -> Rules {
        let law = Rules::default();
        let start = hhmm(&self.window_start, "").unwrap_or(law.window.0).max(law.window.0);
        let end = hhmm(&self.window_end, "").unwrap_or(law.window.1).min(law.window.1);
        Rules {
            window: (start, end),
            jurisdiction: self.jurisdiction,
            abandon_limit: abandon_target.clamp(0.0, law.abandon_limit),
            max_per_number_24h: self.max_per_number_24h.clamp(1, law.max_per_number_24h),
            ..law
        }
    }

    pub fn ring_timeout(&self, rules: &Rules) -> Duration {
        rules.ring_timeout(Duration::from_secs(self.ring_timeout_secs))
    }

    /// The SIP URI `number` is dialled at: the trunk with the longest matching prefix.
    pub fn uri_for(&self, number: &str) -> Option<String> {
        self.trunks
            .iter()
            .filter(|t| number.starts_with(&t.prefix))
            .max_by_key(|t| t.prefix.len())
            .map(|t| t.uri.replace("{number}", number))
    }
}

/// A disposition as the store spells it.
pub fn disposition_name(d: Disposition) -> String {
    match d {
        Disposition::Contacted => "contacted".into(),
        Disposition::Final(o) => o.as_str().into(),
        Disposition::MaxAttempts => "max-attempts".into(),
    }
}

fn disposition_parse(s: &str) -> Option<Disposition> {
    match s {
        "contacted" => Some(Disposition::Contacted),
        "max-attempts" => Some(Disposition::MaxAttempts),
        other => outcome_parse(other).map(Disposition::Final),
    }
}

pub fn outcome_parse(s: &str) -> Option<Outcome> {
    [
        Outcome::Human,
        Outcome::Machine,
        Outcome::Busy,
        Outcome::NoAnswer,
        Outcome::Failed,
        Outcome::Abandoned,
    ]
    .into_iter()
    .find(|o| o.as_str() == s)
}

fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

/// A stored lead's progress as the state machine sees it.
pub fn progress_of(p: &voxide_store::LeadProgress) -> Progress {
    let status = match p.status.as_str() {
        "dialing" => Status::Dialing,
        "retry" => Status::Retry,
        "done" => Status::Done,
        _ => Status::New,
    };
    let outcomes: Vec<(String, u32)> =
        serde_json::from_value(p.outcomes.clone()).unwrap_or_default();
    Progress {
        status,
        attempts: p.attempts.clamp(0, i64::from(u32::MAX)) as u32,
        outcomes: outcomes.iter().filter_map(|(o, n)| Some((outcome_parse(o)?, *n))).collect(),
        disposition: p.disposition.as_deref().and_then(disposition_parse),
        next_attempt_at: p.next_attempt_at.and_then(|t| Timestamp::from_millisecond(t).ok()),
    }
}

/// The state machine's progress as the store keeps it, with the rule that decided.
pub fn stored(p: &Progress, note: String) -> voxide_store::LeadProgress {
    let outcomes: BTreeMap<&str, u32> = p.outcomes.iter().map(|(o, n)| (o.as_str(), *n)).collect();
    voxide_store::LeadProgress {
        status: match p.status {
            Status::New => "new",
            Status::Dialing => "dialing",
            Status::Retry => "retry",
            Status::Done => "done",
        }
        .into(),
        attempts: i64::from(p.attempts),
        outcomes: serde_json::json!(outcomes.into_iter().collect::<Vec<_>>()),
        disposition: p.disposition.map(disposition_name),
        next_attempt_at: p.next_attempt_at.map(ms),
        note,
        updated_at: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            agents: vec!["alice".into()],
            trunks: vec![
                Trunk { prefix: String::new(), uri: "sip:{number}@carrier.test".into() },
                Trunk { prefix: "+1212".into(), uri: "sip:{number}@nyc.test:5070".into() },
            ],
            ..Settings::default()
        }
    }

    #[test]
    fn settings_may_tighten_the_law_but_not_loosen_it() {
        assert!(settings().problems("progressive", 0.03).is_empty());
        let loose = Settings {
            window_start: "07:00".into(),
            ring_timeout_secs: 5,
            max_per_number_24h: 10,
            agents: Vec::new(),
            trunks: vec![Trunk { prefix: "1".into(), uri: "sip:x@y".into() }],
            ..settings()
        };
        let problems = loose.problems("greedy", 0.1).join("\n");
        for needle in [
            "strategy",
            "abandon_target",
            "agents",
            "{number}",
            "prefix",
            "08:00–21:00",
            "ring_timeout_secs",
            "max_per_number_24h",
        ] {
            assert!(problems.contains(needle), "{needle} missing in:\n{problems}");
        }
        let tight =
            Settings { window_start: "09:30".into(), window_end: "17:00".into(), ..settings() };
        let rules = tight.rules(0.02);
        assert_eq!(rules.window, (Time::constant(9, 30, 0, 0), Time::constant(17, 0, 0, 0)));
        assert_eq!(rules.abandon_limit, 0.02);
        assert_eq!(settings().rules(0.5).abandon_limit, 0.03, "never above the law");
    }

    #[test]
    fn the_longest_trunk_prefix_wins() {
        let s = settings();
        assert_eq!(s.uri_for("+12125550100").unwrap(), "sip:+12125550100@nyc.test:5070");
        assert_eq!(s.uri_for("+442079460000").unwrap(), "sip:+442079460000@carrier.test");
        let none = Settings {
            trunks: vec![Trunk { prefix: "+44".into(), uri: "sip:{number}@uk".into() }],
            ..s
        };
        assert_eq!(none.uri_for("+12125550100"), None);
    }

    #[test]
    fn progress_round_trips_through_the_store_shape() {
        let plan = RetryPlan::default();
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        let (p, why) = super::super::leads::after_attempt(
            &Progress::default(),
            Outcome::Busy,
            at,
            &plan,
            Duration::ZERO,
        );
        let row = stored(&p, why);
        assert_eq!((row.status.as_str(), row.note.as_str()), ("retry", "busy: retry in 10 min"));
        assert_eq!(progress_of(&row), p);
        let (done, _) =
            super::super::leads::after_attempt(&p, Outcome::Human, at, &plan, Duration::ZERO);
        assert_eq!(stored(&done, String::new()).disposition.as_deref(), Some("contacted"));
        assert_eq!(progress_of(&stored(&done, String::new())), done);
    }
}
