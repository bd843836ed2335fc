//! Predictive dialling, answer-rate based, with the abandon target as its brake.
//!
//! Agents expected free within one ring time are the ready ones plus those about to finish
//! (a talking agent finishes within the mean ring time with probability
//! 1 − e^(−ring / (handle + wrap)), an agent in wrap-up with 1 − e^(−ring / wrap)). Answered
//! calls waiting already claim some of them. To meet the rest, the dialler keeps
//! `needed / answer-rate` calls ringing — scaled down as the abandon rate nears the campaign's
//! target: at the target it dials one line per free agent (progressive), and with no abandon
//! budget left it dials nothing ahead of an agent. Below `MIN_AGENTS` staffed agents the
//! variance of a small pool makes prediction unsafe; it dials progressively.

use voxide_strategy::prelude::*;

/// Below this many staffed agents, dial progressively (vendors quote 6–12; the host refuses
/// predictive pacing below its own minimum too).
const MIN_AGENTS: u32 = 5;
/// The answer rate assumed before any call was answered, and its floor.
const PRIOR_ANSWER_RATE: f64 = 0.3;
const MIN_ANSWER_RATE: f64 = 0.05;

#[derive(Default)]
struct Predictive;

fn finish_within(window_ms: u32, mean_ms: u32) -> f64 {
    if mean_ms == 0 { 1.0 } else { 1.0 - (-(window_ms as f64) / mean_ms as f64).exp() }
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
        let ring = now.mean_ring_ms.max(1000);
        let free_soon = now.ready as f64
            + now.talking as f64
                * finish_within(ring, now.mean_handle_ms.saturating_add(now.mean_wrap_ms))
            + now.wrap_up as f64 * finish_within(ring, now.mean_wrap_ms);
        let needed = (free_soon - now.waiting as f64).max(0.0);
        let answer_rate = if now.answered == 0 && now.answer_rate == 0.0 {
            PRIOR_ANSWER_RATE
        } else {
            now.answer_rate.max(MIN_ANSWER_RATE)
        };
        // 1 far from the target, 0 at it: how much of the over-dial the budget allows.
        let headroom = if now.abandon_target <= 0.0 {
            0.0
        } else {
            (1.0 - now.abandon_rate() / now.abandon_target).clamp(0.0, 1.0)
        };
        let lines_per_agent = 1.0 + headroom * (1.0 / answer_rate - 1.0);
        let target_ringing = (needed * lines_per_agent).floor() as u32;
        let launch = target_ringing.saturating_sub(now.ringing);
        Decision::launch(launch).level(lines_per_agent).note(format!(
            "free soon {free_soon:.1}, answer {:.0}%, headroom {:.0}%, keep {target_ringing} ringing",
            answer_rate * 100.0,
            headroom * 100.0
        ))
    }
}

voxide_strategy::strategy!(Predictive);
