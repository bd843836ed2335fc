//! Pacing strategies (`voxide:dialer@0.1.0`) built from source and run in the host's sandbox:
//! the sample strategies' decisions, state kept across calls, and a hostile strategy's faults
//! contained and reported.

mod common;

use std::time::Duration;

use voxide_runtime::dialer::compliance::{Floor, Ledger, Limit, Rules};
use voxide_runtime::dialer::pacer::{
    Decision, Lead, LoadError, MAX_NOTE, PaceError, PacerEngine, PacerLimits, Pacing, Snapshot,
};
use voxide_runtime::dialer::sim::{Mode, SimConfig, simulate};
use voxide_runtime::flows::FlowLimits;

fn pacers() -> PacerEngine {
    let flows = common::engine(FlowLimits::default(), 8);
    PacerEngine::new(flows.sandbox(), PacerLimits::default()).expect("pacer engine")
}

/// A campaign of `ready + talking` agents with nothing ringing and nothing answered yet.
fn snapshot(ready: u32, talking: u32) -> Snapshot {
    Snapshot {
        elapsed_ms: 0,
        agents: vec![],
        ready,
        talking,
        wrap_up: 0,
        ringing: 0,
        waiting: 0,
        leads_available: 1000,
        next_leads: (1..=3).map(|id| Lead { id, attempts: 0, due_ms: 0 }).collect(),
        previews_accepted: 0,
        answer_rate: 0.25,
        machine_rate: 0.0,
        mean_ring_ms: 8_000,
        mean_handle_ms: 180_000,
        mean_wrap_ms: 15_000,
        dialled: 0,
        answered: 0,
        abandoned: 0,
        abandon_target: 0.03,
        abandon_budget: 30,
    }
}

async fn decide(engine: &PacerEngine, name: &str, snapshots: &[Snapshot]) -> Vec<Decision> {
    let strategy = engine.load(&common::sample_strategy(name)).expect("loads");
    let mut pacer = engine.start(&strategy).await.expect("starts");
    let mut out = Vec::new();
    for now in snapshots {
        out.push(pacer.pace(now).await.unwrap_or_else(|e| panic!("{name}: {e}")));
    }
    out
}

#[tokio::test]
async fn progressive_launches_one_call_per_agent_not_already_covered() {
    let engine = pacers();
    let mut covered = snapshot(6, 2);
    covered.ringing = 2;
    covered.waiting = 1;
    let d = decide(&engine, "progressive", &[snapshot(6, 2), covered, snapshot(0, 8)]).await;
    let launched: Vec<u32> = d.iter().map(|d| d.launch).collect();
    assert_eq!(launched, [6, 3, 0]);
    assert!(d[1].note.contains("6 ready, 2 ringing, 1 waiting"), "{}", d[1].note);
}

#[tokio::test]
async fn preview_dials_only_what_agents_accepted() {
    let engine = pacers();
    let mut accepted = snapshot(4, 0);
    accepted.previews_accepted = 2;
    let d = decide(&engine, "preview", &[snapshot(4, 0), accepted]).await;
    assert_eq!((d[0].launch, d[1].launch), (0, 2));
}

#[tokio::test]
async fn predictive_overdials_by_the_answer_rate_and_brakes_at_the_abandon_target() {
    let engine = pacers();
    // 10 ready (half an agent held in reserve), a quarter of dials answered, nothing
    // abandoned: keep 9.5 × 4 = 38 ringing.
    let fresh = snapshot(10, 0);
    let mut ringing = fresh.clone();
    ringing.ringing = 25;
    // Abandoned calls at the target: back to one line per free agent.
    let mut at_target = fresh.clone();
    (at_target.answered, at_target.abandoned) = (100, 3);
    // Half-way to the target: most of the over-dial.
    let mut half = fresh.clone();
    (half.answered, half.abandoned) = (200, 3);
    // A small pool is dialled progressively whatever the rates.
    let small = snapshot(3, 1);
    // No budget left: nothing ahead of an agent.
    let mut spent = fresh.clone();
    (spent.answered, spent.abandoned, spent.abandon_budget) = (100, 2, 0);

    let d = decide(&engine, "predictive", &[fresh, ringing, at_target, half, small, spent]).await;
    let launched: Vec<u32> = d.iter().map(|d| d.launch).collect();
    assert_eq!(
        launched,
        [38, 13, 10, 37, 3, 10],
        "notes: {:?}",
        d.iter().map(|d| &d.note).collect::<Vec<_>>()
    );
    assert!((d[0].dial_level - 4.0).abs() < 1e-9);
    // Half-way to the target the brake keeps 1 − 0.5⁸ of the over-dial.
    assert!((d[3].dial_level - (1.0 + 3.0 * (1.0 - 0.5f64.powi(8)))).abs() < 1e-9);
}

#[tokio::test]
async fn predictive_counts_agents_about_to_finish() {
    let engine = pacers();
    // All 20 agents talking with 60 s calls and no wrap-up; 10 s rings, so a 5 s look-ahead:
    // each finishes within it with p = 1 − e^(−1/12) ≈ 0.08, so ~1.6 agents free soon, less
    // the half in reserve → 1.1 × 4 = 4 calls at 25 %.
    let mut busy = snapshot(0, 20);
    (busy.mean_ring_ms, busy.mean_handle_ms, busy.mean_wrap_ms) = (10_000, 60_000, 0);
    let d = decide(&engine, "predictive", &[busy]).await;
    assert_eq!(d[0].launch, 4, "{}", d[0].note);
}

#[tokio::test]
async fn adapt_average_raises_its_level_while_agents_idle_and_halves_it_over_the_drop_limit() {
    let engine = pacers();
    // Half of 10 agents idle, nothing waiting, for 45 s; then a drop rate over the limit.
    let mut snapshots = Vec::new();
    for second in 1..=60u64 {
        let mut now = snapshot(5, 5);
        now.elapsed_ms = second * 1000;
        now.talking = 5;
        if second > 45 {
            (now.answered, now.abandoned) = (100, 5);
        }
        snapshots.push(now);
    }
    let d = decide(&engine, "adapt-average", &snapshots).await;
    let level = |second: usize| d[second - 1].dial_level;
    // mul = (avg ready 5 − waiting 0) / avg agents 10 = 0.5 every 15 s: 1 → 1.5 → 2.25 → 3.0 (cap).
    assert!((level(14) - 1.0).abs() < 1e-9, "{}", d[13].note);
    assert!((level(15) - 1.5).abs() < 1e-9, "{}", d[14].note);
    assert!((level(30) - 2.25).abs() < 1e-9, "{}", d[29].note);
    assert!((level(45) - 3.0).abs() < 1e-9, "{}", d[44].note);
    assert!((level(60) - 1.5).abs() < 1e-9, "{}", d[59].note);
    assert!(d[59].note.contains("over the drop limit"), "{}", d[59].note);
    // Launches keep agents × level lines in use: 10 × 2.25 = 23 minus 5 talking.
    assert_eq!(d[29].launch, 18);
}

#[tokio::test]
async fn a_strategy_keeps_its_state_per_instance() {
    let engine = pacers();
    let strategy = engine.load(common::hostile_strategy()).expect("loads");
    let mut a = engine.start(&strategy).await.expect("starts");
    let mut b = engine.start(&strategy).await.expect("starts");
    let now = snapshot(1, 0);
    for _ in 0..3 {
        a.pace(&now).await.expect("paces");
    }
    assert_eq!(a.pace(&now).await.expect("paces").note, "4");
    assert_eq!(b.pace(&now).await.expect("paces").note, "1", "instances share no state");
    assert_eq!(a.calls(), 4);
}

#[tokio::test]
async fn a_runaway_strategy_is_stopped_reported_and_restartable() {
    let engine = pacers();
    let strategy = engine.load(common::hostile_strategy()).expect("loads");
    let mut pacer = engine.start(&strategy).await.expect("starts");
    assert_eq!(pacer.pace(&snapshot(1, 0)).await.expect("paces").note, "1");

    let err = pacer.pace(&snapshot(101, 0)).await.expect_err("a spinning strategy is stopped");
    assert_eq!(err, PaceError::DeadlineExceeded { budget: Duration::from_millis(50) });
    // The faulted instance is not called again…
    let again = pacer.pace(&snapshot(1, 0)).await.expect_err("stays faulted");
    assert!(matches!(again, PaceError::Faulted(ref inner) if **inner == err), "{again}");
    // …and a fresh one starts from a clean state.
    let mut fresh = engine.start(&strategy).await.expect("restarts");
    assert_eq!(fresh.pace(&snapshot(1, 0)).await.expect("paces").note, "1");
}

#[tokio::test]
async fn strategy_panics_and_memory_bombs_are_faults_with_their_cause() {
    let engine = pacers();
    let strategy = engine.load(common::hostile_strategy()).expect("loads");

    let mut pacer = engine.start(&strategy).await.expect("starts");
    match pacer.pace(&snapshot(102, 0)).await {
        Err(PaceError::Trapped(m)) => {
            assert!(m.contains("the strategy panicked"), "{m}");
            assert!(m.contains("no agents in the snapshot"), "{m}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }

    let mut pacer = engine.start(&strategy).await.expect("starts");
    let err = pacer.pace(&snapshot(103, 0)).await.expect_err("memory cap");
    assert_eq!(err, PaceError::MemoryExceeded { limit_bytes: 16 << 20 });
    assert!(err.to_string().contains("16 MiB"), "{err}");
}

#[tokio::test]
async fn decisions_are_sanitized_and_clocks_are_frozen() {
    let engine = pacers();
    let strategy = engine.load(common::hostile_strategy()).expect("loads");
    let mut pacer = engine.start(&strategy).await.expect("starts");
    let d = pacer.pace(&snapshot(104, 0)).await.expect("paces");
    assert_eq!(d.prefer, [1, 2], "unknown and repeated lead ids are dropped");
    assert_eq!(d.note.len(), MAX_NOTE);
    assert_eq!(d.dial_level, 0.0);
    assert_eq!(d.launch, u32::MAX, "the pacer does not clamp launches; compliance does");
    let d = pacer.pace(&snapshot(105, 0)).await.expect("paces");
    assert_eq!(d.note, "wall 0");
}

#[tokio::test]
async fn flows_and_strategies_are_not_interchangeable() {
    let flows = common::engine(FlowLimits::default(), 8);
    let pacers = PacerEngine::new(flows.sandbox(), PacerLimits::default()).expect("engine");
    match pacers.load(common::hostile()) {
        Err(LoadError::WrongWorld { expected, found }) => {
            assert_eq!(expected, "voxide:dialer/pacer@0.1.0");
            assert!(found.contains("voxide:flow/handler@0.1.0"), "{found}");
        }
        other => panic!("a flow loaded as a strategy: {other:?}"),
    }
    match flows.load(common::hostile_strategy()) {
        Err(LoadError::WrongWorld { expected, found }) => {
            assert_eq!(expected, "voxide:flow/handler@0.1.0");
            assert!(found.contains("voxide:dialer/pacer@0.1.0"), "{found}");
        }
        other => panic!("a strategy loaded as a flow: {other:?}"),
    }
}

#[tokio::test]
async fn a_faulting_strategy_gives_way_to_the_progressive_rule_for_that_tick() {
    let engine = pacers();
    let strategy = engine.load(common::hostile_strategy()).expect("loads");
    let mut pacing = Pacing::new(&engine, &strategy);
    assert_eq!(pacing.tick(&snapshot(1, 0)).await.decision.note, "1");
    // A loop: the tick still gets a decision, one call per uncovered ready agent.
    let mut spin = snapshot(101, 0);
    spin.ringing = 1;
    let paced = pacing.tick(&spin).await;
    assert_eq!(
        paced.fault,
        Some(PaceError::DeadlineExceeded { budget: Duration::from_millis(50) })
    );
    assert_eq!(paced.decision.launch, 100);
    assert!(
        paced.decision.note.starts_with("progressive rule this tick"),
        "{}",
        paced.decision.note
    );
    // The next tick runs a fresh instance (its state starts over).
    let paced = pacing.tick(&snapshot(1, 0)).await;
    assert_eq!((paced.fault, paced.decision.note.as_str(), pacing.restarts), (None, "1", 1));
}

#[tokio::test]
async fn a_strategy_asking_for_everything_gets_what_compliance_allows() {
    let engine = pacers();
    let strategy = engine.load(common::hostile_strategy()).expect("loads");
    let mut pacing = Pacing::new(&engine, &strategy);
    let asked = pacing.tick(&snapshot(104, 0)).await.decision.launch;
    assert_eq!(asked, u32::MAX);
    let rules = Rules::default();
    let minute = Ledger::new(Duration::from_secs(60));
    let floor = |ready, ringing| Floor {
        staffed: 20,
        ready,
        talking: 20 - ready,
        ringing,
        waiting: 0,
        leads: 5_000,
        answer_rate: 0.3,
    };
    // A fresh campaign: nothing answered, so no abandon budget — one call per ready agent.
    let fresh = Ledger::new(Duration::from_secs(30 * 86_400));
    let c = rules.clamp(asked, &floor(10, 0), &fresh, &minute);
    assert_eq!((c.launch, c.limit), (10, Some(Limit::NoAbandonBudget)));
    // Over the 3 % ceiling: still one per ready agent not already covered.
    let mut over = Ledger::new(Duration::from_secs(30 * 86_400));
    let t0: jiff::Timestamp = "2026-03-03T15:00:00Z".parse().unwrap();
    for i in 0..100 {
        over.record(t0, i < 4);
    }
    let c = rules.clamp(asked, &floor(10, 4), &over, &minute);
    assert_eq!((c.launch, c.limit), (6, Some(Limit::OverAbandonLimit)));
}

/// Two simulated hours per sample strategy, same seed: the abandon ceiling holds for all, and
/// predictive keeps agents busier than one line per agent does. (`bench/dialer-sim` runs
/// 30 whole days.)
#[tokio::test]
async fn simulated_hour_predictive_beats_progressive_within_the_abandon_ceiling() {
    let engine = pacers();
    let hours = SimConfig { day: Duration::from_secs(2 * 3600), seed: 7, ..SimConfig::default() };
    let mut util = std::collections::HashMap::new();
    for name in ["preview", "progressive", "predictive", "adapt-average"] {
        let strategy = engine.load(&common::sample_strategy(name)).expect("loads");
        let mode = if name == "preview" { Mode::Preview } else { Mode::Auto };
        let r = simulate(&engine, &strategy, &SimConfig { mode, ..hours.clone() }).await;
        eprintln!(
            "{name:14} dialled {:5} answered {:4} abandoned {:3} ({:.1} %) utilisation {:.1} % calls/agent-hour {:.1} clamped {:?} faults {}",
            r.dialled,
            r.answered,
            r.abandoned,
            r.abandon_rate() * 100.0,
            r.utilisation * 100.0,
            r.calls_per_agent_hour,
            r.clamped,
            r.faults
        );
        assert!(r.abandon_rate() <= 0.03, "{name}: abandon {:.3}", r.abandon_rate());
        assert_eq!(r.series.len(), 120);
        util.insert(name, r.utilisation);
    }
    assert!(util["predictive"] > util["progressive"], "{util:?}");
    assert!(util["progressive"] > util["preview"], "{util:?}");

    // The hostile strategy asks for every lead each second: the clamp holds the ceiling.
    let strategy = engine.load(common::hostile_strategy()).expect("loads");
    let greedy = SimConfig { agents: 104, ..hours.clone() };
    let r = simulate(&engine, &strategy, &greedy).await;
    assert!(r.abandon_rate() <= 0.03, "hostile: abandon {:.3}", r.abandon_rate());
    assert!(r.clamped.values().sum::<u64>() > 3000, "cut nearly every tick: {:?}", r.clamped);
    eprintln!(
        "hostile        dialled {:5} answered {:4} abandoned {:3} ({:.1} %) clamped {:?}",
        r.dialled,
        r.answered,
        r.abandoned,
        r.abandon_rate() * 100.0,
        r.clamped
    );
}
