//! The law, enforced by the host whatever a strategy asks. Pure functions over plain facts,
//! so the live dialer and the simulator apply the same rules.
//!
//! Per lead ([`Rules::may_dial`]): do-not-call lists; calling hours in the called party's
//! local time (default 08:00–21:00, shorter where a state says so; checked in every zone the
//! lead may be in, and a lead with no known zone is not dialled); no redial within 72 h of an
//! abandoned call; at most a few attempts per number per 24 h.
//!
//! Per tick ([`Rules::clamp`]): the pacer's launch count is cut to what the abandon ledger
//! allows. A campaign may only dial ahead of its ready agents (over-dial) with at least
//! [`Rules::min_agents_overdial`] agents, under its abandon limit, and only as far as the
//! abandon budget left covers the calls in flight that no ready agent waits for; it never
//! dials at all while the circuit breaker is open (more than half of the last minute's
//! answered calls abandoned), and never more than `max_lines_per_agent` lines per agent or
//! `max_launch_per_tick` calls a second.

use std::collections::VecDeque;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::Time;

use super::zones::{self, Place, ZoneError, Zones};

/// Which regulator's abandon window applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Jurisdiction {
    /// FTC 16 CFR 310.4(b)(4): abandoned ≤ 3 % of live-answered calls per 30 days.
    Us,
    /// Ofcom persistent-misuse policy: ≤ 3 % per 24 hours.
    Uk,
}

impl Jurisdiction {
    pub fn ledger_window(self) -> Duration {
        match self {
            Jurisdiction::Us => Duration::from_secs(30 * 86_400),
            Jurisdiction::Uk => Duration::from_secs(86_400),
        }
    }
}

/// A campaign's compliance rules. The defaults are the strictest common reading of the US
/// and UK rules; a campaign may tighten them.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Calling hours in the called party's local time, start inclusive, end exclusive.
    pub window: (Time, Time),
    /// Shorter windows by US state / Canadian province (Florida's and Oklahoma's 20:00).
    pub state_windows: Vec<(String, Time, Time)>,
    pub jurisdiction: Jurisdiction,
    /// Most `abandoned / answered` allowed in the ledger's window.
    pub abandon_limit: f64,
    /// An answered call with no agent within this is abandoned.
    pub agent_within: Duration,
    /// Shortest ring before a call is given up as not answered.
    pub min_ring: Duration,
    /// No redial of a number within this after an abandoned call to it.
    pub after_abandon: Duration,
    /// Attempts to one number in any 24 hours.
    pub max_per_number_24h: u32,
    /// Fewest staffed agents a campaign may over-dial with.
    pub min_agents_overdial: u32,
    /// The breaker opens when more than this share of the last minute's answered calls were
    /// abandoned, once at least `breaker_min_answered` were answered in it.
    pub breaker_share: f64,
    pub breaker_min_answered: u64,
    /// Lines per staffed agent at most (VICIdial's maximum dial level).
    pub max_lines_per_agent: f64,
    /// Calls launched per tick (about a second) at most.
    pub max_launch_per_tick: u32,
}

fn hm(h: i8, m: i8) -> Time {
    Time::constant(h, m, 0, 0)
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            window: (hm(8, 0), hm(21, 0)),
            state_windows: vec![
                ("FL".into(), hm(8, 0), hm(20, 0)),
                ("OK".into(), hm(8, 0), hm(20, 0)),
            ],
            jurisdiction: Jurisdiction::Us,
            abandon_limit: 0.03,
            agent_within: Duration::from_secs(2),
            min_ring: Duration::from_secs(15),
            after_abandon: Duration::from_secs(72 * 3600),
            max_per_number_24h: 3,
            min_agents_overdial: 5,
            breaker_share: 0.5,
            breaker_min_answered: 4,
            max_lines_per_agent: 3.0,
            max_launch_per_tick: 20,
        }
    }
}

/// What the host knows about a lead when it considers dialling it.
#[derive(Debug, Clone, Default)]
pub struct LeadFacts<'a> {
    pub place: Place<'a>,
    /// On the tenant's or the campaign's do-not-call list.
    pub on_dnc: bool,
    /// Attempts to this number (any lead) in the last 24 hours.
    pub dials_24h: u32,
    /// When the last of those was; with `dials_24h` at the cap, the next is 24 h after the
    /// oldest, which the caller passes here.
    pub oldest_dial_24h: Option<Timestamp>,
    /// The last abandoned call to this number.
    pub last_abandoned: Option<Timestamp>,
}

/// Why a lead may not be dialled now.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("on a do-not-call list")]
    Dnc,
    #[error("{0}")]
    NoZone(#[from] ZoneError),
    #[error("outside calling hours: {local} local")]
    OutsideHours { local: String },
    #[error("abandoned call within the last 72 h")]
    RecentAbandon,
    #[error("{0} attempts to this number in 24 h")]
    NumberCap(u32),
}

impl Refusal {
    /// Short machine name for the audit.
    pub fn rule(&self) -> &'static str {
        match self {
            Refusal::Dnc => "dnc",
            Refusal::NoZone(_) => "unknown-zone",
            Refusal::OutsideHours { .. } => "calling-hours",
            Refusal::RecentAbandon => "72h-after-abandon",
            Refusal::NumberCap(_) => "attempts-per-24h",
        }
    }
}

/// A lead that may be dialled now, with what the audit records.
#[derive(Debug, Clone)]
pub struct Cleared {
    pub zones: Zones,
    /// The called party's local time in each zone (`America/Chicago 14:05`).
    pub local: String,
}

/// A refusal and, when it is only "not now", the earliest time it could clear.
#[derive(Debug, Clone)]
pub struct Refused {
    pub refusal: Refusal,
    pub retry_at: Option<Timestamp>,
}

impl Rules {
    /// Whether `lead` may be dialled at `now`.
    pub fn may_dial(&self, lead: &LeadFacts<'_>, now: Timestamp) -> Result<Cleared, Refused> {
        let refuse = |refusal, retry_at| Err(Refused { refusal, retry_at });
        if lead.on_dnc {
            return refuse(Refusal::Dnc, None);
        }
        let zones = match zones::resolve(lead.place) {
            Ok(z) => z,
            Err(e) => return refuse(Refusal::NoZone(e), None),
        };
        if let Some(at) = lead.last_abandoned {
            let until = add(at, self.after_abandon);
            if now < until {
                return refuse(Refusal::RecentAbandon, Some(until));
            }
        }
        if lead.dials_24h >= self.max_per_number_24h {
            let until = lead.oldest_dial_24h.map(|at| add(at, Duration::from_secs(86_400)));
            return refuse(Refusal::NumberCap(lead.dials_24h), until);
        }
        let local = local_times(&zones, now);
        if !self.in_window(&zones, now) {
            let retry_at = self.next_open(&zones, now);
            return refuse(Refusal::OutsideHours { local }, retry_at);
        }
        Ok(Cleared { zones, local })
    }

    /// The calling window for a lead presumed in `states`: the shortest that applies.
    fn window_for(&self, states: &[String]) -> (Time, Time) {
        let mut window = self.window;
        for (state, start, end) in &self.state_windows {
            if states.iter().any(|s| s == state) {
                window = (window.0.max(*start), window.1.min(*end));
            }
        }
        window
    }

    /// True when `now` is inside the calling window in every one of the lead's zones.
    pub fn in_window(&self, zones: &Zones, now: Timestamp) -> bool {
        let (start, end) = self.window_for(&zones.states);
        zones.zones.iter().all(|(_, tz)| {
            let t = now.to_zoned(tz.clone()).time();
            start <= t && t < end
        })
    }

    /// The first time, in 5-minute steps over the next 8 days, the window opens in every zone.
    pub fn next_open(&self, zones: &Zones, from: Timestamp) -> Option<Timestamp> {
        const STEP: Duration = Duration::from_secs(300);
        let mut at = from;
        for _ in 0..(8 * 86_400 / 300) {
            at = add(at, STEP);
            if self.in_window(zones, at) {
                return Some(at);
            }
        }
        None
    }

    /// The ring timeout to dial with: at least [`Rules::min_ring`].
    pub fn ring_timeout(&self, requested: Duration) -> Duration {
        requested.max(self.min_ring)
    }

    /// Whether an answered call was abandoned: no agent connected within
    /// [`Rules::agent_within`] of the answer.
    pub fn is_abandoned(&self, answer_to_agent: Option<Duration>) -> bool {
        answer_to_agent.is_none_or(|d| d > self.agent_within)
    }

    /// Cuts `asked` (the pacer's launch count) to what the rules allow now.
    pub fn clamp(&self, asked: u32, now: &Floor, ledger: &Ledger, minute: &Ledger) -> Clamp {
        let mut clamp = Clamp { launch: asked, limit: None };
        if minute.answered >= self.breaker_min_answered
            && minute.abandoned as f64 > self.breaker_share * minute.answered as f64
        {
            clamp.cut(0, Limit::CircuitBreaker);
            return clamp;
        }
        let in_flight = now.ringing.saturating_add(now.waiting);
        let uncovered = now.ready.saturating_sub(in_flight);
        if now.staffed < self.min_agents_overdial {
            clamp.cut(uncovered, Limit::SmallPool);
        } else if ledger.rate() >= self.abandon_limit && ledger.answered > 0 {
            clamp.cut(uncovered, Limit::OverAbandonLimit);
        } else {
            // Calls in flight with no ready agent waiting for them, each answered with
            // `answer_rate` and then abandoned at worst: keep their expected abandons inside
            // the budget left.
            let budget = ledger.budget(self.abandon_limit) as f64;
            let exposure = (budget / now.answer_rate.max(0.05)).floor() as u32;
            let limit = now.ready.saturating_add(exposure).saturating_sub(in_flight);
            clamp.cut(
                limit,
                if budget < 1.0 { Limit::NoAbandonBudget } else { Limit::AbandonBudget },
            );
        }
        let lines = (self.max_lines_per_agent * f64::from(now.staffed)).floor() as u32;
        clamp
            .cut(lines.saturating_sub(in_flight.saturating_add(now.talking)), Limit::LinesPerAgent);
        clamp.cut(now.leads, Limit::Leads);
        clamp.cut(self.max_launch_per_tick, Limit::PerTick);
        clamp
    }
}

/// The campaign's floor at one tick, as the clamp needs it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Floor {
    /// Agents logged in (ready, talking or in wrap-up).
    pub staffed: u32,
    pub ready: u32,
    pub talking: u32,
    /// Calls launched and not yet answered or given up.
    pub ringing: u32,
    /// Answered calls waiting for an agent.
    pub waiting: u32,
    /// Leads that may be dialled now.
    pub leads: u32,
    /// Recent share of dials answered by a human.
    pub answer_rate: f64,
}

/// The launch count the rules allow, and the rule that cut it (if one did).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clamp {
    pub launch: u32,
    pub limit: Option<Limit>,
}

impl Clamp {
    fn cut(&mut self, max: u32, why: Limit) {
        if self.launch > max {
            self.launch = max;
            self.limit = Some(why);
        }
    }
}

/// A rule that cut a pacer's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    CircuitBreaker,
    SmallPool,
    OverAbandonLimit,
    NoAbandonBudget,
    AbandonBudget,
    LinesPerAgent,
    Leads,
    PerTick,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::CircuitBreaker => "circuit-breaker",
            Limit::SmallPool => "too-few-agents-to-overdial",
            Limit::OverAbandonLimit => "over-abandon-limit",
            Limit::NoAbandonBudget => "no-abandon-budget",
            Limit::AbandonBudget => "abandon-budget",
            Limit::LinesPerAgent => "lines-per-agent",
            Limit::Leads => "leads-available",
            Limit::PerTick => "launches-per-tick",
        }
    }
}

/// Answered and abandoned calls over a rolling window: the campaign's abandon ledger (30 days
/// or 24 h) and the breaker's last minute are two of these.
#[derive(Debug, Clone)]
pub struct Ledger {
    window: Duration,
    events: VecDeque<(Timestamp, bool)>,
    pub answered: u64,
    pub abandoned: u64,
}

impl Ledger {
    pub fn new(window: Duration) -> Self {
        Ledger { window, events: VecDeque::new(), answered: 0, abandoned: 0 }
    }

    /// A call answered by a human at `at`; `abandoned` if no agent took it in time (it is
    /// counted as answered too: the rate is abandoned over live-answered).
    pub fn record(&mut self, at: Timestamp, abandoned: bool) {
        self.expire(at);
        self.events.push_back((at, abandoned));
        self.answered += 1;
        self.abandoned += u64::from(abandoned);
    }

    /// Forgets what fell out of the window before `now`.
    pub fn expire(&mut self, now: Timestamp) {
        while let Some(&(at, abandoned)) = self.events.front() {
            if add(at, self.window) > now {
                break;
            }
            self.events.pop_front();
            self.answered -= 1;
            self.abandoned -= u64::from(abandoned);
        }
    }

    pub fn rate(&self) -> f64 {
        if self.answered == 0 { 0.0 } else { self.abandoned as f64 / self.answered as f64 }
    }

    /// Abandoned calls still allowed before `limit` is reached at today's answered count.
    pub fn budget(&self, limit: f64) -> u64 {
        ((limit * self.answered as f64).floor() as u64).saturating_sub(self.abandoned)
    }
}

fn add(at: Timestamp, d: Duration) -> Timestamp {
    at.checked_add(d).unwrap_or(Timestamp::MAX)
}

fn local_times(zones: &Zones, now: Timestamp) -> String {
    zones
        .zones
        .iter()
        .map(|(name, tz)| format!("{name} {}", now.to_zoned(tz.clone()).strftime("%H:%M")))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn lead(number: &str) -> LeadFacts<'_> {
        LeadFacts { place: Place { number, ..Place::default() }, ..LeadFacts::default() }
    }

    #[test]
    fn calling_hours_are_the_called_partys() {
        let rules = Rules::default();
        // 22:00 in New York is 19:00 in Los Angeles.
        let now = at("2026-03-03T03:00:00Z");
        let ny = rules.may_dial(&lead("+12125550100"), now).unwrap_err();
        assert_eq!(ny.refusal.rule(), "calling-hours");
        assert!(ny.refusal.to_string().contains("America/New_York 22:00"), "{}", ny.refusal);
        // The window opens at 08:00 New York time (13:00 UTC in March before DST).
        assert_eq!(ny.retry_at, Some(at("2026-03-03T13:00:00Z")));
        let la = rules.may_dial(&lead("+12135550100"), now).expect("19:00 in LA is fine");
        assert_eq!(la.local, "America/Los_Angeles 19:00");
    }

    #[test]
    fn state_windows_and_unknown_zones() {
        let rules = Rules::default();
        // 20:30 in Miami: inside 08–21 but outside Florida's 08–20.
        let now = at("2026-03-03T01:30:00Z");
        let miami = rules.may_dial(&lead("+13055550100"), now).unwrap_err();
        assert_eq!(miami.refusal.rule(), "calling-hours");
        assert!(rules.may_dial(&lead("+12125550100"), now).is_ok(), "NY is open until 21:00");
        let unknown = rules.may_dial(&lead("+999123456"), now).unwrap_err();
        assert_eq!((unknown.refusal.rule(), unknown.retry_at), ("unknown-zone", None));
    }

    #[test]
    fn dnc_72h_and_the_24h_cap() {
        let rules = Rules::default();
        let now = at("2026-03-03T15:00:00Z");
        let mut facts = lead("+12125550100");
        facts.on_dnc = true;
        assert_eq!(rules.may_dial(&facts, now).unwrap_err().refusal, Refusal::Dnc);
        let mut facts = lead("+12125550100");
        facts.last_abandoned = Some(at("2026-03-01T15:00:00Z"));
        let r = rules.may_dial(&facts, now).unwrap_err();
        assert_eq!(
            (r.refusal, r.retry_at),
            (Refusal::RecentAbandon, Some(at("2026-03-04T15:00:00Z")))
        );
        let mut facts = lead("+12125550100");
        (facts.dials_24h, facts.oldest_dial_24h) = (3, Some(at("2026-03-03T09:00:00Z")));
        let r = rules.may_dial(&facts, now).unwrap_err();
        assert_eq!(
            (r.refusal, r.retry_at),
            (Refusal::NumberCap(3), Some(at("2026-03-04T09:00:00Z")))
        );
    }

    fn floor(staffed: u32, ready: u32) -> Floor {
        Floor {
            staffed,
            ready,
            talking: staffed - ready,
            leads: 10_000,
            answer_rate: 0.3,
            ..Floor::default()
        }
    }

    fn ledger(answered: u64, abandoned: u64) -> Ledger {
        let mut l = Ledger::new(Duration::from_secs(30 * 86_400));
        for i in 0..answered {
            l.record(at("2026-03-03T15:00:00Z"), i < abandoned);
        }
        l
    }

    #[test]
    fn a_thousand_calls_are_cut_to_what_the_ledger_allows() {
        let rules = Rules::default();
        let quiet = Ledger::new(Duration::from_secs(60));
        // Nothing answered yet: no budget, one call per ready agent.
        let c = rules.clamp(1000, &floor(20, 8), &ledger(0, 0), &quiet);
        assert_eq!((c.launch, c.limit), (8, Some(Limit::NoAbandonBudget)));
        // 1,000 answered, 10 abandoned: 20 more abandons allowed → 66 calls beyond the ready.
        let c = rules.clamp(1000, &floor(20, 8), &ledger(1000, 10), &quiet);
        assert_eq!((c.launch, c.limit), (20, Some(Limit::PerTick)));
        let mut busy = floor(20, 8);
        busy.ringing = 60;
        let c = rules.clamp(1000, &busy, &ledger(1000, 10), &quiet);
        assert_eq!((c.launch, c.limit), (0, Some(Limit::LinesPerAgent)));
        // At the limit: progressive only.
        let c = rules.clamp(1000, &floor(20, 8), &ledger(100, 3), &quiet);
        assert_eq!((c.launch, c.limit), (8, Some(Limit::OverAbandonLimit)));
        // Four agents: never ahead of them.
        let c = rules.clamp(1000, &floor(4, 2), &ledger(1000, 0), &quiet);
        assert_eq!((c.launch, c.limit), (2, Some(Limit::SmallPool)));
        // A pacer asking for less is left alone.
        let c = rules.clamp(3, &floor(20, 8), &ledger(1000, 10), &quiet);
        assert_eq!((c.launch, c.limit), (3, None));
    }

    #[test]
    fn the_breaker_opens_on_a_bad_minute_and_the_ledger_rolls() {
        let rules = Rules::default();
        let mut minute = Ledger::new(Duration::from_secs(60));
        let t0 = at("2026-03-03T15:00:00Z");
        for i in 0..6 {
            minute.record(t0, i < 4);
        }
        let c = rules.clamp(10, &floor(20, 20), &ledger(1000, 0), &minute);
        assert_eq!((c.launch, c.limit), (0, Some(Limit::CircuitBreaker)));
        minute.expire(at("2026-03-03T15:01:00Z"));
        assert_eq!((minute.answered, minute.abandoned), (0, 0));
        assert!(rules.clamp(10, &floor(20, 20), &ledger(1000, 0), &minute).limit.is_none());
        assert!(rules.is_abandoned(None));
        assert!(rules.is_abandoned(Some(Duration::from_millis(2100))));
        assert!(!rules.is_abandoned(Some(Duration::from_millis(1900))));
        assert_eq!(rules.ring_timeout(Duration::from_secs(10)), Duration::from_secs(15));
    }
}
