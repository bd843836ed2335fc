//! Predictive dialling, answer-rate based, with the abandon target as its brake.
//!
//! Agents expected free within half a ring time (answers come spread around the mean ring,
//! so the near ones matter) are the ready ones plus those about to finish:
//! from each agent's time in its state when the snapshot lists them (talk times taken as
//! log-normal around the campaign's mean, wrap-up as fixed), else from the counts (a talking
//! agent finishes within the ring with probability 1 − e^(−ring / (handle + wrap)), an agent in
//! wrap-up with 1 − e^(−ring / wrap)). Answered
//! calls waiting already claim some of them, and half an agent is held in reserve: a person
//! who answers when no agent is free is lost within 2 s, while an agent idle a moment costs
//! only that moment. To meet the rest, the dialler keeps
//! `needed / answer-rate` calls ringing — scaled down as the abandon rate nears the campaign's
//! target: at the target it dials one line per free agent (progressive, never fewer: a ready
//! agent with nothing ringing for it always gets a call), and with no abandon budget left it
//! dials nothing ahead of an agent. Below `MIN_AGENTS` staffed agents the
//! variance of a small pool makes prediction unsafe; it dials progressively.

use voxide_strategy::prelude::*;

/// Below this many staffed agents, dial progressively (vendors quote 6–12; the host refuses
/// predictive pacing below its own minimum too).
const MIN_AGENTS: u32 = 5;
/// The answer rate assumed before any call was answered, and its floor.
const PRIOR_ANSWER_RATE: f64 = 0.3;
const MIN_ANSWER_RATE: f64 = 0.05;
/// Agents kept out of the prediction, so an answer rarely finds none free.
const RESERVE_AGENTS: f64 = 0.5;
/// The look-ahead, as a share of the mean time to answer.
const HORIZON_RINGS: f64 = 0.5;
/// How sharply the brake bites near the abandon target: at 90 % of it, 57 % of the over-dial
/// is left; at 95 %, a third.
const BRAKE_POWER: i32 = 8;

#[derive(Default)]
struct Predictive;

fn finish_within(window_ms: u32, mean_ms: u32) -> f64 {
    if mean_ms == 0 { 1.0 } else { 1.0 - (-(window_ms as f64) / mean_ms as f64).exp() }
}

/// The chance `agent` is ready within `window_ms`: talk times taken as log-normal (σ = 0.5)
/// with the campaign's mean, conditioned on the time already talked; wrap-up as fixed.
fn free_within(agent: &Agent, window_ms: u32, now: &Snapshot) -> f64 {
    let window = f64::from(window_ms);
    match agent.state {
        AgentState::Ready => 1.0,
        AgentState::WrapUp => {
            let left = f64::from(now.mean_wrap_ms) - agent.in_state_ms as f64;
            if left <= window { 1.0 } else { 0.0 }
        }
        AgentState::Talking => {
            let horizon = window - f64::from(now.mean_wrap_ms);
            if horizon <= 0.0 || now.mean_handle_ms == 0 {
                return 0.0;
            }
            let e = agent.in_state_ms as f64;
            let survive = |x: f64| lognormal_survival(x, f64::from(now.mean_handle_ms), 0.5);
            let alive = survive(e);
            if alive <= 1e-9 {
                1.0
            } else {
                ((alive - survive(e + horizon)) / alive).clamp(0.0, 1.0)
            }
        }
    }
}

fn lognormal_survival(x: f64, mean: f64, sigma: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let mu = mean.ln() - sigma * sigma / 2.0;
    0.5 * erfc((x.ln() - mu) / (sigma * std::f64::consts::SQRT_2))
}

/// Abramowitz & Stegun 7.1.26 (error below 1.5e-7).
fn erfc(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erfc = poly * (-x * x).exp();
    if x >= 0.0 { erfc } else { 2.0 - erfc }
}

impl Strategy for Predictive {
    fn pace(&mut self, now: &Snapshot) -> Decision {
        let progressive = now.uncovered_agents();
        if now.staffed() < MIN_AGENTS {
            return Decision::launch(progressive)
                .level(1.0)
                .note(format!("{} agents: below {MIN_AGENTS}, progressive", now.staffed()));
        }
        if now.abandon_budget == 0 && now.answered > 0 {
            return Decision::launch(progressive).level(1.0).note("no abandon budget left");
        }
        let ring = (f64::from(now.mean_ring_ms.max(1000)) * HORIZON_RINGS) as u32;
        let free_soon = if now.agents.len() as u32 == now.staffed() && now.staffed() > 0 {
            // Per agent, from how long each has been in its state.
            now.agents.iter().map(|a| free_within(a, ring, now)).sum::<f64>()
        } else {
            now.ready as f64
                + now.talking as f64
                    * finish_within(ring, now.mean_handle_ms.saturating_add(now.mean_wrap_ms))
                + now.wrap_up as f64 * finish_within(ring, now.mean_wrap_ms)
        };
        let needed = (free_soon - now.waiting as f64 - RESERVE_AGENTS).max(0.0);
        let answer_rate = if now.answered == 0 && now.answer_rate == 0.0 {
            PRIOR_ANSWER_RATE
        } else {
            now.answer_rate.max(MIN_ANSWER_RATE)
        };
        // 1 far from the target, 0 at it: how much of the over-dial the budget allows.
        let headroom = if now.abandon_target <= 0.0 {
            0.0
        } else {
            (1.0 - (now.abandon_rate() / now.abandon_target).powi(BRAKE_POWER)).clamp(0.0, 1.0)
        };
        let lines_per_agent = 1.0 + headroom * (1.0 / answer_rate - 1.0);
        let target_ringing = (needed * lines_per_agent).floor() as u32;
        let launch = target_ringing.saturating_sub(now.ringing).max(progressive);
        Decision::launch(launch).level(lines_per_agent).note(format!(
            "free soon {free_soon:.1}, answer {:.0}%, headroom {:.0}%, keep {target_ringing} ringing",
            answer_rate * 100.0,
            headroom * 100.0
        ))
    }
}

voxide_strategy::strategy!(Predictive);
