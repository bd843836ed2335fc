//! Flow-engine benchmark: `cargo bench -p voxide-runtime --bench flows`.
//!
//! Prints, for this machine:
//! 1. per-call instantiate latency (pooling allocator) and whole per-call overhead
//!    (store + instantiate + drop), p50/p99;
//! 2. one guest→host call round trip (a sync import and an async call action);
//! 3. cold Cranelift compile vs loading the precompiled artifact from the disk cache;
//! 4. resident memory per call with N simulated calls suspended in `gather` at once.
//!
//! Environment: `BENCH_SUSPENDED` (default 10000) sets N for 4.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Semaphore;
use voxide_runtime::call::*;
use voxide_runtime::flows::{FlowEngine, FlowEngineConfig, FlowLimits, FlowOutcome, LoadSource};
use voxide_runtime::kv::KvNamespace;

/// A caller that does everything instantly, except `gather`, which waits for `gate` (if any)
/// so the flow stays suspended inside a host call.
struct Idle {
    gate: Option<Arc<Semaphore>>,
    parked: Arc<AtomicUsize>,
}

impl Idle {
    fn boxed() -> Box<dyn CallControl> {
        Box::new(Idle { gate: None, parked: Arc::default() })
    }
}

#[async_trait]
impl CallControl for Idle {
    async fn answer(&mut self) -> CallResult<()> {
        Ok(())
    }
    async fn reject(&mut self, _: u16, _: Option<String>) -> CallResult<()> {
        Ok(())
    }
    async fn say(&mut self, _: String, _: SayOptions) -> CallResult<()> {
        Ok(())
    }
    async fn play(&mut self, _: String) -> CallResult<()> {
        Ok(())
    }
    async fn gather(&mut self, _: GatherOptions) -> CallResult<GatherResult> {
        if let Some(gate) = &self.gate {
            self.parked.fetch_add(1, Ordering::SeqCst);
            let _permit = gate.acquire().await.map_err(|_| CallError::Hangup)?;
        }
        Ok(GatherResult { digits: "1".into(), speech: None, timed_out: false })
    }
    async fn record(&mut self, _: RecordOptions) -> CallResult<Recording> {
        Ok(Recording { id: "r".into(), duration_ms: 0 })
    }
    async fn dial(&mut self, _: Vec<String>, _: DialOptions) -> CallResult<DialOutcome> {
        Ok(DialOutcome::Answered { talk_ms: 0 })
    }
    async fn enqueue(&mut self, _: String) -> CallResult<()> {
        Ok(())
    }
    async fn conference(&mut self, _: String) -> CallResult<()> {
        Ok(())
    }
    async fn transfer(&mut self, _: String) -> CallResult<()> {
        Ok(())
    }
    async fn send_dtmf(&mut self, _: String) -> CallResult<()> {
        Ok(())
    }
    async fn pause(&mut self, _: u32) -> CallResult<()> {
        Ok(())
    }
    fn set_var(&mut self, _: String, _: String) {}
    async fn hangup(&mut self) {}
    fn emit(&mut self, _: FlowEvent) {}
    fn caller_hung_up(&self) -> bool {
        false
    }

    fn manifest(&self) -> &voxide_runtime::manifest::Manifest {
        static NONE: std::sync::LazyLock<voxide_runtime::manifest::Manifest> =
            std::sync::LazyLock::new(Default::default);
        &NONE
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn engine(calls: u32, cache_dir: Option<std::path::PathBuf>) -> FlowEngine {
    FlowEngine::new(FlowEngineConfig {
        limits: FlowLimits::default(),
        max_concurrent_calls: calls,
        cache_dir,
        ..Default::default()
    })
    .expect("engine")
}

async fn instantiate(hello: &[u8]) {
    let engine = engine(64, None);
    let flow = engine.load(hello).expect("hello loads");
    let n = 5000;
    let (mut inst, mut whole) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n + 500 {
        let (a, b) = engine.probe_instantiate(&flow, Idle::boxed()).await.expect("instantiates");
        if i >= 500 {
            // The first 500 warm the pool's slots and the allocator.
            inst.push(a);
            whole.push(b);
        }
    }
    inst.sort();
    whole.sort();
    println!(
        "instantiate (pooling, hello flow, {n} calls)   p50 {:6.1} µs   p99 {:6.1} µs",
        us(percentile(&inst, 0.5)),
        us(percentile(&inst, 0.99))
    );
    println!(
        "store + instantiate + drop                   p50 {:6.1} µs   p99 {:6.1} µs",
        us(percentile(&whole, 0.5)),
        us(percentile(&whole, 0.99))
    );
    // A whole simulated call (answer, say, hangup) end to end, for context.
    let mut full = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let t = Instant::now();
        let info = CallInfo { id: CallId("b".into()), ..CallInfo::default() };
        let r = engine.run(&flow, info, Idle::boxed(), KvNamespace::isolated()).await;
        assert_eq!(r.outcome, FlowOutcome::Completed);
        full.push(t.elapsed());
    }
    full.sort();
    println!(
        "whole hello call (run: answer, say, hangup)  p50 {:6.1} µs   p99 {:6.1} µs",
        us(percentile(&full, 0.5)),
        us(percentile(&full, 0.99))
    );
}

async fn host_calls(calls: &[u8]) {
    let engine = engine(8, None);
    let flow = engine.load(calls).expect("calls guest loads");
    let time = |mode: &'static str, n: u32| {
        let (engine, flow) = (engine.clone(), flow.clone());
        async move {
            let mut best = Duration::MAX;
            for _ in 0..5 {
                let info = CallInfo {
                    id: CallId("b".into()),
                    to: mode.into(),
                    vars: vec![("n".into(), n.to_string())],
                    ..CallInfo::default()
                };
                let t = Instant::now();
                let r = engine.run(&flow, info, Idle::boxed(), KvNamespace::isolated()).await;
                assert_eq!(r.outcome, FlowOutcome::Completed, "{mode}");
                best = best.min(t.elapsed());
            }
            best
        }
    };
    let n = 200_000;
    for (mode, what) in
        [("sync", "sync import (set-var)"), ("async", "async call action (pause 0)")]
    {
        let base = time(mode, 0).await;
        let loaded = time(mode, n).await;
        let per = loaded.saturating_sub(base).as_secs_f64() * 1e9 / f64::from(n);
        println!("guest→host round trip, {what:<28} {per:6.0} ns");
    }
}

fn compile_vs_cache(bytes: &[u8], name: &str) {
    let mut cold = Vec::new();
    let mut cached = Vec::new();
    for _ in 0..5 {
        let dir = tempfile::tempdir().expect("tempdir");
        let e1 = engine(4, Some(dir.path().to_owned()));
        let t = Instant::now();
        let (_, src) = e1.load_with_source(bytes).expect("loads");
        cold.push(t.elapsed());
        assert_eq!(src, LoadSource::Compiled);
        let e2 = engine(4, Some(dir.path().to_owned()));
        let t = Instant::now();
        let (_, src) = e2.load_with_source(bytes).expect("loads");
        cached.push(t.elapsed());
        assert_eq!(src, LoadSource::DiskCache);
    }
    cold.sort();
    cached.sort();
    let (c, h) = (percentile(&cold, 0.5), percentile(&cached, 0.5));
    println!(
        "load {name} ({} KiB): cold compile {:7.1} ms, cached artifact {:5.2} ms  ({:.0}x faster)",
        bytes.len() / 1024,
        c.as_secs_f64() * 1e3,
        h.as_secs_f64() * 1e3,
        c.as_secs_f64() / h.as_secs_f64()
    );
}

async fn suspended(ivr: &[u8], n: usize) {
    let engine = engine(n as u32 + 16, None);
    let flow = engine.load(ivr).expect("ivr loads");
    // Warm up: one complete call so lazily initialised host state is not counted per call.
    let info = CallInfo { id: CallId("warm".into()), ..CallInfo::default() };
    engine.run(&flow, info, Idle::boxed(), KvNamespace::isolated()).await;

    let gate = Arc::new(Semaphore::new(0));
    let parked = Arc::new(AtomicUsize::new(0));
    let before = rss_bytes();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (engine, flow) = (engine.clone(), flow.clone());
        let call = Box::new(Idle { gate: Some(gate.clone()), parked: parked.clone() });
        tasks.push(tokio::spawn(async move {
            let info = CallInfo { id: CallId(format!("c{i}")), ..CallInfo::default() };
            engine.run(&flow, info, call, KvNamespace::isolated()).await.outcome
        }));
    }
    while parked.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let spawn_time = started.elapsed();
    let after = rss_bytes();
    let per_call = after.saturating_sub(before) as f64 / n as f64 / 1024.0;
    println!(
        "{n} calls suspended in gather: +{:.0} MiB RSS, {per_call:.1} KiB per call (all parked in {:.2} s)",
        after.saturating_sub(before) as f64 / (1 << 20) as f64,
        spawn_time.as_secs_f64()
    );
    gate.add_permits(n * 4);
    let mut completed = 0;
    for t in tasks {
        if t.await.expect("task") == FlowOutcome::Completed {
            completed += 1;
        }
    }
    println!("  released: {completed}/{n} completed");
}

fn main() {
    // `cargo bench` passes `--bench`; a `cargo test --benches` run passes nothing: stay quick.
    let full = std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("building guests (wasm32-wasip2)...");
    let hello = common::sample("hello");
    let ivr = common::sample("ivr-menu");
    let calls = common::calls();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {cpus} CPUs; figures are wall-clock and noisy on a shared host\n");
    runtime.block_on(async {
        instantiate(&hello).await;
        host_calls(calls).await;
    });
    compile_vs_cache(&ivr, "ivr-menu");
    compile_vs_cache(common::hostile(), "hostile");
    let n = if full {
        std::env::var("BENCH_SUSPENDED").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
    } else {
        200
    };
    runtime.block_on(suspended(&ivr, n));
}
