//! The sandbox holds: misbehaving flows end only their own call, with a typed outcome, while
//! other calls in the same process carry on.

mod common;

use std::time::{Duration, Instant};

use voxide_runtime::call::{CallId, CallInfo};
use voxide_runtime::flows::{FlowLimits, FlowOutcome, LoadError, LoadSource};
use voxide_runtime::kv::KvNamespace;
use voxide_runtime::sim::{self, Scenario};

fn limits(cpu_ms: u64, memory_mib: usize) -> FlowLimits {
    FlowLimits {
        cpu_budget: Duration::from_millis(cpu_ms),
        memory_bytes: memory_mib << 20,
        ..FlowLimits::default()
    }
}

fn call_to(to: &str) -> Scenario {
    common::scenario(&format!("[call]\nto = {to:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_flows_are_stopped_while_100_good_calls_complete() {
    let engine = common::engine(limits(300, 32), 128);
    let flow = engine.load(common::hostile()).expect("hostile flow loads");

    let started = Instant::now();
    let looping = {
        let (engine, flow) = (engine.clone(), flow.clone());
        tokio::spawn(async move { sim::run_scenario(&engine, &flow, &call_to("loop"), 0).await })
    };
    let bomb = {
        let (engine, flow) = (engine.clone(), flow.clone());
        tokio::spawn(
            async move { sim::run_scenario(&engine, &flow, &call_to("memory-bomb"), 1).await },
        )
    };
    let good: Vec<_> = (0..100)
        .map(|i| {
            let (engine, flow) = (engine.clone(), flow.clone());
            let digit = i % 10;
            let s = common::scenario(&format!(
                "[[caller]]\nat_ms = 500\ndtmf = \"{digit}\"\n\
                 [[expect]]\ngathered = \"{digit}\"\n\
                 [[expect]]\nsay = \"You pressed {digit}\"\n\
                 [[expect]]\noutcome = \"completed\""
            ));
            tokio::spawn(async move { sim::run_scenario(&engine, &flow, &s, 10 + i).await })
        })
        .collect();

    for (i, handle) in good.into_iter().enumerate() {
        let report = handle.await.expect("task");
        assert!(
            report.passed,
            "good call {i} failed: {:?}\n{:#?}",
            report.failure, report.transcript
        );
    }
    let looping = looping.await.expect("task");
    let loop_elapsed = started.elapsed();
    assert_eq!(
        looping.outcome,
        FlowOutcome::DeadlineExceeded { budget: Duration::from_millis(300) }.to_string()
    );
    assert!(
        loop_elapsed >= Duration::from_millis(300),
        "stopped before its budget: {loop_elapsed:?}"
    );
    assert!(loop_elapsed < Duration::from_secs(30), "never stopped: {loop_elapsed:?}");
    let bomb = bomb.await.expect("task");
    assert_eq!(bomb.outcome, FlowOutcome::MemoryExceeded { limit_bytes: 32 << 20 }.to_string());
}

async fn outcome_of(to: &str) -> FlowOutcome {
    let engine = common::engine(limits(500, 16), 4);
    let flow = engine.load(common::hostile()).expect("loads");
    let info = CallInfo { id: CallId(format!("t-{to}")), to: to.into(), ..CallInfo::default() };
    let sim_call = sim_call(to);
    engine.run(&flow, info, sim_call, KvNamespace::isolated()).await.outcome
}

fn sim_call(to: &str) -> Box<dyn voxide_runtime::call::CallControl> {
    // Run through the scenario runner's call type by way of a tiny scenario.
    Box::new(sim::SimCall::for_scenario(call_to(to), "t"))
}

#[tokio::test]
async fn guest_panic_is_a_flow_fault_with_its_message() {
    match outcome_of("panic").await {
        FlowOutcome::Trapped(m) => {
            assert!(m.starts_with("the flow panicked"), "{m}");
            assert!(
                m.contains("flow bug: unexpected menu state"),
                "panic message is reported: {m}"
            );
        }
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[tokio::test]
async fn deep_recursion_is_a_stack_overflow_not_a_host_crash() {
    match outcome_of("recursion").await {
        FlowOutcome::Trapped(m) => assert!(m.contains("stack overflow"), "{m}"),
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[tokio::test]
async fn flow_error_is_reported_with_its_message() {
    assert_eq!(
        outcome_of("error").await,
        FlowOutcome::FlowError("no agent configured for this number".into())
    );
}

#[tokio::test]
async fn cpu_budget_counts_guest_time_between_actions() {
    let engine = common::engine(limits(200, 16), 4);
    let flow = engine.load(common::hostile()).expect("loads");
    let report = sim::run_scenario(&engine, &flow, &call_to("loop-after-action"), 0).await;
    assert!(report.outcome.starts_with("deadline exceeded"), "{}", report.outcome);
    // The flow got to speak before it spun, and the call was ended for it.
    let steps: Vec<String> = report.transcript.iter().map(|e| e.step.to_string()).collect();
    assert!(steps.iter().any(|s| s.contains("one moment")), "{steps:#?}");
    assert!(steps.iter().any(|s| s == "hangup (host: flow ended)"), "{steps:#?}");
}

#[tokio::test]
async fn cpu_budget_resets_at_each_call_action_but_not_on_failing_ones() {
    let engine = common::engine(limits(500, 16), 4);
    let flow = engine.load(common::hostile()).expect("loads");
    let report = sim::run_scenario(&engine, &flow, &call_to("spin-between-actions"), 0).await;
    assert_eq!(report.outcome, "completed", "800 ms of CPU in 100 ms stretches is allowed");
    let report = sim::run_scenario(&engine, &flow, &call_to("spin-on-failing-actions"), 0).await;
    assert!(report.outcome.starts_with("deadline exceeded"), "{}", report.outcome);
}

#[tokio::test]
async fn the_engine_keeps_serving_after_faults() {
    let engine = common::engine(limits(200, 16), 8);
    let flow = engine.load(common::hostile()).expect("loads");
    for (to, outcome) in [
        ("panic", "trapped: the flow panicked"),
        ("memory-bomb", "memory exceeded"),
        ("recursion", "trapped: stack overflow"),
        ("loop", "deadline exceeded"),
    ] {
        let r = sim::run_scenario(&engine, &flow, &call_to(to), 0).await;
        assert!(r.outcome.starts_with(outcome), "{to}: {}", r.outcome);
    }
    let s = common::scenario(
        "[[caller]]\nat_ms = 100\ndtmf = \"5\"\n[[expect]]\nsay = \"You pressed 5\"\n[[expect]]\noutcome = \"completed\"",
    );
    let r = sim::run_scenario(&engine, &flow, &s, 1).await;
    assert!(r.passed, "{:?}", r.failure);
}

#[tokio::test]
async fn kv_writes_land_in_the_flow_namespace() {
    let engine = common::engine(limits(500, 16), 4);
    let flow = engine.load(common::hostile()).expect("loads");
    let kv = KvNamespace::isolated();
    let s = common::scenario("[[caller]]\nat_ms = 100\ndtmf = \"7\"");
    let info = CallInfo { id: CallId("kv".into()), to: "menu".into(), ..CallInfo::default() };
    let report =
        engine.run(&flow, info, Box::new(sim::SimCall::for_scenario(s, "kv")), kv.clone()).await;
    assert_eq!(report.outcome, FlowOutcome::Completed);
    assert_eq!(kv.get("last").as_deref(), Some("7"));
}

#[test]
fn components_that_are_not_flows_are_rejected_with_what_was_found() {
    let engine = common::engine(FlowLimits::default(), 4);
    match engine.load(common::not_a_flow()) {
        Err(e @ LoadError::WrongWorld { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("does not export voxide:flow/handler@0.1.0"), "{msg}");
            assert!(msg.contains("wasi:cli/run"), "names what it found: {msg}");
        }
        other => panic!("expected WrongWorld, got {other:?}"),
    }
}

#[test]
fn bad_bytes_are_rejected_before_compiling() {
    let engine = common::engine(FlowLimits::default(), 4);
    assert!(matches!(engine.load(b"MZ\x90\x00 definitely not wasm"), Err(LoadError::NotWasm)));
    assert!(matches!(engine.load(b"\0asm\x01\0\0\0"), Err(LoadError::CoreModule)));
    let bytes = common::hostile();
    let truncated = &bytes[..bytes.len() / 2];
    match engine.load(truncated) {
        Err(LoadError::Invalid(m)) => assert!(!m.is_empty()),
        other => panic!("expected Invalid for a truncated component, got {other:?}"),
    }
}

#[test]
fn compiled_flows_are_cached_on_disk_by_digest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || voxide_runtime::flows::FlowEngineConfig {
        cache_dir: Some(dir.path().to_owned()),
        max_concurrent_calls: 4,
        ..Default::default()
    };
    let first = voxide_runtime::flows::FlowEngine::new(config()).expect("engine");
    let (flow, source) = first.load_with_source(common::hostile()).expect("loads");
    assert_eq!(source, LoadSource::Compiled);
    assert!(flow.digest().starts_with("sha256:"));
    assert_eq!(first.load_with_source(common::hostile()).expect("loads").1, LoadSource::Memory);
    // A fresh engine (a restarted process) skips Cranelift.
    let second = voxide_runtime::flows::FlowEngine::new(config()).expect("engine");
    let (again, source) = second.load_with_source(common::hostile()).expect("loads");
    assert_eq!(source, LoadSource::DiskCache);
    assert_eq!(again.digest(), flow.digest());
}

/// A compiled flow stays in memory while a route or call holds it and for `keep_unused` after
/// its last use; then it is freed, so a server that sees many versions deployed keeps only
/// what it runs.
#[test]
fn a_flow_nothing_holds_is_freed_after_keep_unused() {
    let engine = |keep_unused| {
        voxide_runtime::flows::FlowEngine::new(voxide_runtime::flows::FlowEngineConfig {
            max_concurrent_calls: 4,
            keep_unused,
            ..Default::default()
        })
        .expect("engine")
    };
    let at_once = engine(Duration::ZERO);
    let route = at_once.load(common::hostile()).expect("loads");
    let digest = route.digest().to_owned();
    assert_eq!(at_once.free_unused(), 1, "held by a route");
    assert!(at_once.loaded_flow(&digest).is_some(), "found again without its bytes");
    drop(route);
    assert_eq!(at_once.free_unused(), 0, "freed once nothing holds it");
    assert!(at_once.loaded_flow(&digest).is_none());

    let kept = engine(Duration::from_secs(3600));
    let digest = kept.load(common::hostile()).expect("loads").digest().to_owned();
    assert_eq!(kept.free_unused(), 1, "kept after its last use");
    assert!(kept.loaded_flow(&digest).is_some());
}
