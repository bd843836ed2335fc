//! The dialer in virtual time: a campaign's real host code — its strategy component through
//! [`Pacing`], the compliance clamp and [`Ledger`], the lead state machine — against
//! simulated leads and agents, a simulated second per tick, as fast as the CPU allows.
//! Deterministic for a seed (strategies see frozen clocks). `vox dialer simulate` and
//! `bench/dialer-sim` run it.
//!
//! The model: a dial is answered by a human with `answer_rate` (after an exponential ring of
//! mean `ring_mean`, capped below the ring timeout), by a machine with `machine_rate`, is busy
//! with `busy_rate` (after 3 s), else rings out at the ring timeout (at least the rules' 15 s).
//! The detector misses nothing but calls `amd_false_positive` of humans machines — those
//! count as abandoned, as Ofcom counts them. A human answered goes to the longest-idle ready
//! agent; with none within 2 s the call is abandoned. Talk time is log-normal with mean `aht`
//! (σ = 0.5), then a fixed wrap-up.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

use jiff::Timestamp;

use super::compliance::{Floor, LeadFacts, Ledger, Rules};
use super::leads::{self, Outcome, Progress, RetryPlan};
use super::pacer::{Agent, AgentState, Lead, PacerEngine, Pacing, Snapshot, Strategy};
use super::zones::Place;
use crate::rng::SplitMix64;

/// The answer rate a campaign assumes before it has measured one.
pub const PRIOR_ANSWER_RATE: f64 = 0.3;

/// How agents get calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The strategy decides; answered calls go to whichever agent is free.
    Auto,
    /// Agents accept each lead after `preview_time` idle; its call is theirs.
    Preview,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub agents: u32,
    pub leads: u32,
    pub answer_rate: f64,
    pub machine_rate: f64,
    pub busy_rate: f64,
    pub amd_false_positive: f64,
    pub ring_mean: Duration,
    pub ring_timeout: Duration,
    pub aht: Duration,
    pub wrap: Duration,
    pub preview_time: Duration,
    pub day: Duration,
    /// The campaign's first second; 09:00 in New York by default, where the leads are.
    pub start: Timestamp,
    pub seed: u64,
    pub mode: Mode,
    pub rules: Rules,
    pub plan: RetryPlan,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            agents: 20,
            leads: 20_000,
            answer_rate: 0.3,
            machine_rate: 0.1,
            busy_rate: 0.1,
            amd_false_positive: 0.0,
            ring_mean: Duration::from_secs(8),
            ring_timeout: Duration::from_secs(25),
            aht: Duration::from_secs(180),
            wrap: Duration::from_secs(10),
            preview_time: Duration::from_secs(5),
            day: Duration::from_secs(8 * 3600),
            start: "2026-03-03T14:00:00Z".parse().expect("a timestamp"),
            seed: 1,
            mode: Mode::Auto,
            rules: Rules::default(),
            plan: RetryPlan::default(),
        }
    }
}

/// One minute of the simulated day.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub minute: u32,
    pub dial_level: f64,
    /// Abandoned over answered so far.
    pub abandon_rate: f64,
    pub ringing: u32,
}

#[derive(Debug, Clone, Default)]
pub struct SimReport {
    pub dialled: u64,
    /// Answered by a human (abandoned ones included).
    pub answered: u64,
    pub abandoned: u64,
    /// Connected to an agent.
    pub connected: u64,
    pub machines: u64,
    /// Agent talk seconds over logged-in seconds.
    pub utilisation: f64,
    pub calls_per_agent_hour: f64,
    /// Ticks where the strategy faulted and the progressive rule decided.
    pub faults: u64,
    /// Ticks where a compliance rule cut the strategy's launch count, by rule.
    pub clamped: HashMap<&'static str, u64>,
    /// Leads refused by a per-lead rule, by rule.
    pub refused: HashMap<&'static str, u64>,
    pub series: Vec<Sample>,
}

impl SimReport {
    pub fn abandon_rate(&self) -> f64 {
        if self.answered == 0 { 0.0 } else { self.abandoned as f64 / self.answered as f64 }
    }
}

/// The model's draws, on the shared seeded generator.
struct Rng(SplitMix64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0.unit()
    }
    fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.next()).ln()
    }
    fn lognormal(&mut self, mean: f64, sigma: f64) -> f64 {
        let z = (-2.0 * (1.0 - self.next()).ln()).sqrt()
            * (2.0 * std::f64::consts::PI * self.next()).cos();
        (mean.ln() - sigma * sigma / 2.0 + sigma * z).exp()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Busy {
    Ready,
    Reserved,
    Talking,
    Wrap,
}

struct SimAgent {
    state: Busy,
    since: u64,
    until: u64,
}

struct Call {
    lead: usize,
    resolves: u64,
    launched: u64,
    outcome: Outcome,
    agent: Option<usize>,
}

struct Waiting {
    lead: usize,
    answered: u64,
}

impl SimConfig {
    /// Rejects a model that cannot be simulated, saying which input is wrong.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("answer rate", self.answer_rate),
            ("machine rate", self.machine_rate),
            ("busy rate", self.busy_rate),
            ("AMD false-positive rate", self.amd_false_positive),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must be between 0 and 1 (got {v})"));
            }
        }
        if self.answer_rate + self.machine_rate + self.busy_rate > 1.0 {
            return Err("answer, machine and busy rates add up to more than 1".into());
        }
        if self.agents == 0 || self.leads == 0 {
            return Err("a campaign needs at least one agent and one lead".into());
        }
        if self.aht.is_zero() || self.day.is_zero() {
            return Err("talk time and day length must be more than zero".into());
        }
        if !(0.0..=1.0).contains(&self.rules.abandon_limit) {
            return Err("the abandon limit must be between 0 and 1".into());
        }
        Ok(())
    }
}

/// Runs one simulated day of `strategy`.
pub async fn simulate(engine: &PacerEngine, strategy: &Strategy, cfg: &SimConfig) -> SimReport {
    simulate_carrying(engine, strategy, cfg, None).await.0
}

/// [`simulate`], starting from `ledger` (the abandon ledger of the days before, for a campaign
/// simulated day after day as the law counts it: 30 days rolling in the US); returns the
/// ledger at the end of the day with the report.
pub async fn simulate_carrying(
    engine: &PacerEngine,
    strategy: &Strategy,
    cfg: &SimConfig,
    ledger: Option<Ledger>,
) -> (SimReport, Ledger) {
    let mut rng =
        Rng(SplitMix64(cfg.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xD1B5_4A32_D192_ED03));
    let mut pacing = Pacing::new(engine, strategy);
    let mut report = SimReport::default();
    let mut ledger = ledger.unwrap_or_else(|| Ledger::new(cfg.rules.jurisdiction.ledger_window()));
    let mut minute = Ledger::new(Duration::from_secs(60));
    let numbers: Vec<String> =
        (0..cfg.leads).map(|i| format!("+1212{:07}", i % 10_000_000)).collect();
    let mut progress: Vec<Progress> = vec![Progress::default(); cfg.leads as usize];
    let mut fresh: VecDeque<usize> = (0..cfg.leads as usize).collect();
    let mut retries: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut agents: Vec<SimAgent> =
        (0..cfg.agents).map(|_| SimAgent { state: Busy::Ready, since: 0, until: 0 }).collect();
    let mut calls: Vec<Call> = Vec::new();
    let mut waiting: VecDeque<Waiting> = VecDeque::new();
    let mut recent: VecDeque<(u64, bool)> = VecDeque::new();
    let (mut ring_sum, mut ring_n, mut handle_sum, mut handle_n) = (0.0, 0u64, 0.0, 0u64);
    let mut talk_secs = 0u64;
    let ring_timeout = cfg.rules.ring_timeout(cfg.ring_timeout).as_secs().max(1);
    let after_abandon = cfg.rules.after_abandon;
    let ts = |t: u64| cfg.start.checked_add(Duration::from_secs(t)).unwrap_or(Timestamp::MAX);

    for t in 0..cfg.day.as_secs() {
        let now = ts(t);
        // Agents finishing calls and wrap-ups.
        for a in agents.iter_mut() {
            match a.state {
                Busy::Talking if a.until <= t => {
                    (a.state, a.since, a.until) = (Busy::Wrap, t, t + cfg.wrap.as_secs());
                }
                Busy::Wrap if a.until <= t => (a.state, a.since) = (Busy::Ready, t),
                _ => {}
            }
            if a.state == Busy::Talking {
                talk_secs += 1;
            }
        }
        // Calls resolving.
        let mut i = 0;
        while i < calls.len() {
            if calls[i].resolves > t {
                i += 1;
                continue;
            }
            let call = calls.swap_remove(i);
            let human = call.outcome == Outcome::Human;
            recent.push_back((t, human));
            let mut outcome = call.outcome;
            if human {
                ring_sum += (t - call.launched) as f64;
                ring_n += 1;
                if rng.next() < cfg.amd_false_positive {
                    outcome = Outcome::Abandoned;
                } else if let Some(agent) = call.agent {
                    connect(&mut agents[agent], t, &mut rng, cfg, &mut handle_sum, &mut handle_n);
                    report.connected += 1;
                } else {
                    waiting.push_back(Waiting { lead: call.lead, answered: t });
                    continue;
                }
                report.answered += 1;
                let abandoned = outcome == Outcome::Abandoned;
                report.abandoned += u64::from(abandoned);
                ledger.record(now, abandoned);
                minute.record(now, abandoned);
            } else if let Some(agent) = call.agent {
                (agents[agent].state, agents[agent].since) = (Busy::Ready, t);
            }
            if outcome == Outcome::Machine {
                report.machines += 1;
            }
            finish(&mut progress, &mut retries, call.lead, outcome, now, t, cfg, after_abandon);
        }
        // Answered calls meet the longest-idle ready agents; those waiting over 2 s are lost.
        while let Some(w) = waiting.front() {
            let waited = Duration::from_secs(t - w.answered);
            if cfg.rules.is_abandoned(Some(waited)) {
                let w = waiting.pop_front().expect("front");
                report.answered += 1;
                report.abandoned += 1;
                ledger.record(now, true);
                minute.record(now, true);
                finish(
                    &mut progress,
                    &mut retries,
                    w.lead,
                    Outcome::Abandoned,
                    now,
                    t,
                    cfg,
                    after_abandon,
                );
                continue;
            }
            let idle = agents
                .iter()
                .enumerate()
                .filter(|(_, a)| a.state == Busy::Ready)
                .min_by_key(|(_, a)| a.since)
                .map(|(i, _)| i);
            let Some(agent) = idle else { break };
            let w = waiting.pop_front().expect("front");
            connect(&mut agents[agent], t, &mut rng, cfg, &mut handle_sum, &mut handle_n);
            report.connected += 1;
            report.answered += 1;
            ledger.record(now, false);
            minute.record(now, false);
            finish(&mut progress, &mut retries, w.lead, Outcome::Human, now, t, cfg, after_abandon);
        }
        ledger.expire(now);
        minute.expire(now);
        while recent.front().is_some_and(|(at, _)| t - at > 900) {
            recent.pop_front();
        }
        while let Some(&Reverse((at, lead))) = retries.peek() {
            if at > t {
                break;
            }
            retries.pop();
            fresh.push_back(lead);
        }

        // The strategy's decision, then the clamp.
        let count = |s: Busy| agents.iter().filter(|a| a.state == s).count() as u32;
        let (ready, reserved, talking, wrap) =
            (count(Busy::Ready), count(Busy::Reserved), count(Busy::Talking), count(Busy::Wrap));
        // In preview mode an agent idle for `preview_time` has accepted the lead shown to it.
        let has_accepted =
            |a: &SimAgent| a.state == Busy::Ready && t - a.since >= cfg.preview_time.as_secs();
        let accepted = match cfg.mode {
            Mode::Preview => agents.iter().filter(|a| has_accepted(a)).count() as u32,
            Mode::Auto => 0,
        };
        // The campaign's prior until 50 dials have resolved in the last 15 minutes.
        let answer_rate = if recent.len() < 50 {
            PRIOR_ANSWER_RATE
        } else {
            recent.iter().filter(|(_, h)| *h).count() as f64 / recent.len() as f64
        };
        let snapshot = Snapshot {
            elapsed_ms: t * 1000,
            agents: agents
                .iter()
                .map(|a| Agent {
                    state: match a.state {
                        Busy::Ready => AgentState::Ready,
                        Busy::Reserved | Busy::Talking => AgentState::Talking,
                        Busy::Wrap => AgentState::WrapUp,
                    },
                    in_state_ms: (t - a.since) * 1000,
                })
                .collect(),
            ready,
            talking: talking + reserved,
            wrap_up: wrap,
            ringing: calls.len() as u32,
            waiting: waiting.len() as u32,
            leads_available: fresh.len() as u32,
            next_leads: fresh
                .iter()
                .take(5)
                .map(|&i| Lead { id: i as u64, attempts: progress[i].attempts, due_ms: 0 })
                .collect(),
            previews_accepted: accepted,
            answer_rate,
            machine_rate: cfg.machine_rate,
            mean_ring_ms: if ring_n == 0 {
                8000
            } else {
                (ring_sum / ring_n as f64 * 1000.0) as u32
            },
            mean_handle_ms: if handle_n == 0 {
                cfg.aht.as_millis() as u32
            } else {
                (handle_sum / handle_n as f64 * 1000.0) as u32
            },
            mean_wrap_ms: cfg.wrap.as_millis() as u32,
            dialled: report.dialled,
            answered: ledger.answered,
            abandoned: ledger.abandoned,
            abandon_target: cfg.rules.abandon_limit,
            abandon_budget: ledger.budget(cfg.rules.abandon_limit).min(u64::from(u32::MAX)) as u32,
        };
        let paced = pacing.tick(&snapshot).await;
        if paced.fault.is_some() {
            report.faults += 1;
        }
        // Calls an agent already waits for (previews) need no other.
        let unreserved = calls.iter().filter(|c| c.agent.is_none()).count() as u32;
        let floor = Floor {
            staffed: cfg.agents,
            ready,
            talking: talking + reserved,
            ringing: unreserved,
            waiting: snapshot.waiting,
            leads: snapshot.leads_available,
            answer_rate,
        };
        let clamp = cfg.rules.clamp(paced.decision.launch, &floor, &ledger, &minute);
        if let Some(limit) = clamp.limit {
            *report.clamped.entry(limit.as_str()).or_default() += 1;
        }
        let mut launched = 0;
        while launched < clamp.launch {
            let Some(lead) = fresh.pop_front() else { break };
            let facts = LeadFacts {
                place: Place { number: &numbers[lead], ..Place::default() },
                ..LeadFacts::default()
            };
            if let Err(refused) = cfg.rules.may_dial(&facts, now) {
                *report.refused.entry(refused.refusal.rule()).or_default() += 1;
                continue;
            }
            launched += 1;
            report.dialled += 1;
            progress[lead] = leads::start_attempt(&progress[lead]);
            let agent = if cfg.mode == Mode::Preview {
                let pick = agents.iter().position(has_accepted);
                if let Some(a) = pick {
                    (agents[a].state, agents[a].since) = (Busy::Reserved, t);
                }
                pick
            } else {
                None
            };
            let u = rng.next();
            let ring =
                (rng.exp(cfg.ring_mean.as_secs_f64()).ceil() as u64).clamp(1, ring_timeout - 1);
            let (outcome, after) = if u < cfg.answer_rate {
                (Outcome::Human, ring)
            } else if u < cfg.answer_rate + cfg.machine_rate {
                (Outcome::Machine, ring)
            } else if u < cfg.answer_rate + cfg.machine_rate + cfg.busy_rate {
                (Outcome::Busy, 3)
            } else {
                (Outcome::NoAnswer, ring_timeout)
            };
            calls.push(Call { lead, resolves: t + after, launched: t, outcome, agent });
        }
        if t % 60 == 59 {
            report.series.push(Sample {
                minute: (t / 60) as u32,
                dial_level: paced.decision.dial_level,
                abandon_rate: report.abandon_rate(),
                ringing: calls.len() as u32,
            });
        }
    }
    let logged_in = f64::from(cfg.agents) * cfg.day.as_secs_f64();
    report.utilisation = if logged_in > 0.0 { talk_secs as f64 / logged_in } else { 0.0 };
    report.calls_per_agent_hour = report.connected as f64 / (logged_in / 3600.0).max(1e-9);
    (report, ledger)
}

fn connect(
    agent: &mut SimAgent,
    t: u64,
    rng: &mut Rng,
    cfg: &SimConfig,
    handle_sum: &mut f64,
    handle_n: &mut u64,
) {
    let handle = rng.lognormal(cfg.aht.as_secs_f64(), 0.5).max(5.0);
    *handle_sum += handle;
    *handle_n += 1;
    (agent.state, agent.since, agent.until) = (Busy::Talking, t, t + handle.round() as u64);
}

#[allow(clippy::too_many_arguments)]
fn finish(
    progress: &mut [Progress],
    retries: &mut BinaryHeap<Reverse<(u64, usize)>>,
    lead: usize,
    outcome: Outcome,
    now: Timestamp,
    t: u64,
    cfg: &SimConfig,
    after_abandon: Duration,
) {
    let (next, _) = leads::after_attempt(&progress[lead], outcome, now, &cfg.plan, after_abandon);
    if let Some(at) = next.next_attempt_at {
        let delay = at.duration_since(now).as_secs().max(0) as u64;
        retries.push(Reverse((t + delay, lead)));
    }
    progress[lead] = next;
}

/// An SVG chart of the day: dial level (left axis, 0–4) and abandon rate (right axis, 0–10 %).
pub fn svg(report: &SimReport, title: &str) -> String {
    let (w, h, pad) = (800.0, 300.0, 40.0);
    let n = report.series.len().max(2) as f64 - 1.0;
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / n;
    let y = |v: f64, max: f64| h - pad - (h - 2.0 * pad) * (v / max).clamp(0.0, 1.0);
    let line = |f: &dyn Fn(&Sample) -> f64, max: f64| {
        report
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{:.1},{:.1}", x(i), y(f(s), max)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let title = title.replace('&', "&amp;").replace('<', "&lt;");
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{pad}\" y=\"20\">{title}</text>\n\
         <line x1=\"{pad}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <text x=\"4\" y=\"{t}\">4.0</text><text x=\"{r2}\" y=\"{t}\">10 %</text>\n\
         <polyline fill=\"none\" stroke=\"steelblue\" stroke-width=\"1.5\" points=\"{level}\"/>\n\
         <polyline fill=\"none\" stroke=\"crimson\" stroke-width=\"1.5\" points=\"{abandon}\"/>\n\
         <text x=\"{pad}\" y=\"{l}\" fill=\"steelblue\">dial level</text>\n\
         <text x=\"160\" y=\"{l}\" fill=\"crimson\">abandon rate</text>\n</svg>\n",
        b = h - pad,
        r = w - pad,
        r2 = w - pad + 2.0,
        t = pad + 4.0,
        l = h - 12.0,
        level = line(&|s| s.dial_level, 4.0),
        abandon = line(&|s| s.abandon_rate, 0.10),
    )
}
