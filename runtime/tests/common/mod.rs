//! Guest fixtures compiled from source (tests/guests) for wasm32-wasip2, once per test binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use voxide_runtime::builder::{BuildOptions, build_flow};
use voxide_runtime::flows::{FlowEngine, FlowEngineConfig, FlowLimits};
use voxide_runtime::sim::Scenario;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn build(dir: &str) -> Vec<u8> {
    let opts = BuildOptions { target_dir: Some(root().join("target").join("guests")), quiet: true };
    let wasm = build_flow(&Path::new(env!("CARGO_MANIFEST_DIR")).join(dir), &opts)
        .unwrap_or_else(|e| panic!("building guest {dir}: {e}"));
    std::fs::read(&wasm).unwrap_or_else(|e| panic!("reading {}: {e}", wasm.display()))
}

/// The hostile flow: misbehaves according to the called number.
pub fn hostile() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| build("tests/guests/hostile"))
}

/// A valid component that is a WASI command, not a flow.
pub fn not_a_flow() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| build("tests/guests/not-a-flow"))
}

pub fn engine(limits: FlowLimits, calls: u32) -> FlowEngine {
    FlowEngine::new(FlowEngineConfig { limits, max_concurrent_calls: calls, ..Default::default() })
        .expect("engine")
}

pub fn scenario(toml: &str) -> Scenario {
    Scenario::parse(toml, Path::new("inline.toml")).expect("valid scenario")
}

/// The benchmark guest: `n` host calls of kind `to` (`sync` or `async`).
pub fn calls() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| build("tests/guests/calls"))
}

/// A sample flow from `sample-flows/`, built from source.
pub fn sample(name: &str) -> Vec<u8> {
    build(&format!("../sample-flows/{name}"))
}

/// The hostile pacing strategy: misbehaves according to the snapshot's `ready` count.
pub fn hostile_strategy() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| build("tests/guests/hostile-strategy"))
}

/// A sample pacing strategy from `sample-strategies/`, built from source.
pub fn sample_strategy(name: &str) -> Vec<u8> {
    build(&format!("../sample-strategies/{name}"))
}
