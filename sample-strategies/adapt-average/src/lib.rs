//! A port of VICIdial's ADAPT_AVERAGE (bin/AST_VDadapt.pl), for comparison.
//!
//! Every call (about once a second) samples ready agents and answered calls waiting. Every
//! 15 s of campaign time the dial level adapts to the averages of those samples:
//! `target = (avg_ready − avg_waiting) + DL_DIFF_TARGET`, `mul = target / avg_agents × INTENSITY`,
//! `level = level × (1 + mul)`, clamped to [1.0, MAX_LEVEL]. Over the drop limit (abandoned /
//! answered above the campaign's target) ADAPT_AVERAGE halves the level, then adapts up again.
//! Calls launched keep `agents × level` lines in use: `ceil((ready + talking) × level)` minus
//! the calls ringing, waiting and talking. The one-minute "> 50 % dropped" brake of the Perl
//! is the host's circuit breaker here.

use voxide_strategy::prelude::*;

const ADAPT_EVERY_MS: u64 = 15_000;
const MIN_LEVEL: f64 = 1.0;
const MAX_LEVEL: f64 = 3.0;
/// VICIdial's `adaptive_dl_diff_target`: surplus ready agents aimed for (0 = balanced).
const DL_DIFF_TARGET: f64 = 0.0;
/// VICIdial's `adaptive_intensity` of 0, as a multiplier.
const INTENSITY: f64 = 1.0;

struct AdaptAverage {
    level: f64,
    last_adapt_ms: u64,
    samples: u32,
    ready_sum: f64,
    waiting_sum: f64,
    agents_sum: f64,
    adaptations: u32,
}

impl Default for AdaptAverage {
    fn default() -> Self {
        AdaptAverage {
            level: MIN_LEVEL,
            last_adapt_ms: 0,
            samples: 0,
            ready_sum: 0.0,
            waiting_sum: 0.0,
            agents_sum: 0.0,
            adaptations: 0,
        }
    }
}

impl AdaptAverage {
    fn adapt(&mut self, now: &Snapshot) -> &'static str {
        let n = self.samples.max(1) as f64;
        let (avg_ready, avg_waiting, avg_agents) =
            (self.ready_sum / n, self.waiting_sum / n, self.agents_sum / n);
        self.samples = 0;
        self.ready_sum = 0.0;
        self.waiting_sum = 0.0;
        self.agents_sum = 0.0;
        self.adaptations += 1;
        if now.answered > 0 && now.abandon_rate() > now.abandon_target {
            self.level = (self.level / 2.0).max(MIN_LEVEL);
            return "over the drop limit: halved";
        }
        if avg_agents < 1.0 {
            return "no agents: unchanged";
        }
        let target = (avg_ready - avg_waiting) + DL_DIFF_TARGET;
        let mul = target / avg_agents * INTENSITY;
        self.level = (self.level * (1.0 + mul)).clamp(MIN_LEVEL, MAX_LEVEL);
        if mul > 0.0 {
            "agents idle: up"
        } else if mul < 0.0 {
            "calls waiting: down"
        } else {
            "balanced"
        }
    }
}

impl Strategy for AdaptAverage {
    fn pace(&mut self, now: &Snapshot) -> Decision {
        self.samples += 1;
        self.ready_sum += now.ready as f64;
        self.waiting_sum += now.waiting as f64;
        self.agents_sum += (now.ready + now.talking) as f64;
        let mut why = "sampling";
        if now.elapsed_ms.saturating_sub(self.last_adapt_ms) >= ADAPT_EVERY_MS {
            self.last_adapt_ms = now.elapsed_ms;
            why = self.adapt(now);
        }
        let agents = now.ready.saturating_add(now.talking);
        let lines = (agents as f64 * self.level).ceil() as u32;
        let in_use = now.ringing.saturating_add(now.waiting).saturating_add(now.talking);
        let launch = lines.saturating_sub(in_use);
        Decision::launch(launch)
            .level(self.level)
            .note(format!("level {:.2} after {} adaptations ({why})", self.level, self.adaptations))
    }
}

voxide_strategy::strategy!(AdaptAverage);
