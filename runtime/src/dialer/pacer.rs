//! Pacing strategies: the world `voxide:dialer@0.1.0` on the shared [`crate::sandbox`].
//!
//! A running campaign keeps one [`Pacer`] (one instance of its strategy) and calls
//! [`Pacer::pace`] about once a second with a [`Snapshot`]; the strategy answers with a
//! [`Decision`]. The instance keeps its own state between calls (running averages, a dial
//! level), so a strategy such as VICIdial's ADAPT_AVERAGE ports as it is written.
//!
//! Each call gets a fresh guest-CPU budget ([`PacerLimits::cpu_budget`], 50 ms by default)
//! and a wall-clock cap; the instance has a small memory cap, WASI that grants nothing and
//! clocks frozen at zero, so a strategy is a pure function of the snapshots it has seen (the
//! dialer simulator replays it deterministically). A strategy that traps or overruns is
//! *faulted*: every later call says so until the campaign starts a fresh instance with
//! [`PacerEngine::start`]. Decisions are sanitized here (a long note cut, unknown lead ids
//! dropped, a NaN dial level zeroed); what may be launched is decided by compliance, not here.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::Store;
use wasmtime::component::{InstancePre, Linker};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtxView, WasiView};

use crate::sandbox::{
    Compiled, Guest, GuestState, InstanceLimits, Loader, Sandbox, World, describe_trap, stdio,
};
pub use crate::sandbox::{LoadError, LoadSource};

#[allow(unsafe_code, missing_debug_implementations, clippy::all)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/dialer",
        world: "voxide:dialer/strategy@0.1.0",
        exports: { default: async },
    });
}

pub use bindings::voxide::dialer::types::{Agent, AgentState, Decision, Lead, Snapshot};

/// The export every strategy must provide; named in load errors.
pub const PACER_EXPORT: &str = "voxide:dialer/pacer@0.1.0";

/// Bytes of a decision's note kept for the audit.
pub const MAX_NOTE: usize = 200;

/// Caps of one strategy instance.
#[derive(Debug, Clone)]
pub struct PacerLimits {
    /// Guest CPU one `pace` call may use (epoch-based, 10 ms granularity).
    pub cpu_budget: Duration,
    /// Linear memory cap (at most the sandbox's largest, the flows' cap).
    pub memory_bytes: usize,
    /// Longest one `pace` call may take, waiting included.
    pub timeout: Duration,
}

impl Default for PacerLimits {
    fn default() -> Self {
        PacerLimits {
            cpu_budget: Duration::from_millis(50),
            memory_bytes: 16 << 20,
            timeout: Duration::from_secs(1),
        }
    }
}

/// Why a strategy gave no decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PaceError {
    #[error("the strategy could not be started: {0}")]
    Instantiate(String),
    #[error("the strategy used more than {budget:?} of CPU in one pace call")]
    DeadlineExceeded { budget: Duration },
    #[error("the strategy tried to grow its memory past {} MiB", limit_bytes >> 20)]
    MemoryExceeded { limit_bytes: usize },
    #[error("the strategy took longer than {limit:?} to answer")]
    TimedOut { limit: Duration },
    #[error("the strategy trapped: {0}")]
    Trapped(String),
    #[error("the strategy faulted earlier ({0}); start a fresh instance")]
    Faulted(Box<PaceError>),
}

/// A compiled, validated, pre-linked strategy. Cheap to clone.
#[derive(Clone)]
pub struct Strategy(Arc<Compiled<StrategyPre>>);

type StrategyPre = bindings::StrategyPre<PacerState>;

impl std::fmt::Debug for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Strategy").field("digest", &self.0.digest).finish()
    }
}

impl Strategy {
    /// `sha256:<hex>` of the component bytes.
    pub fn digest(&self) -> &str {
        &self.0.digest
    }
}

/// Store data of one strategy instance: only the sandbox's part, a strategy has no imports.
pub(crate) struct PacerState {
    guest: GuestState,
}

impl WasiView for PacerState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.guest.wasi()
    }
}

impl Guest for PacerState {
    fn guest(&mut self) -> &mut GuestState {
        &mut self.guest
    }
}

/// `voxide:dialer@0.1.0`: exports the pacer, imports nothing but WASI (for the Rust standard
/// library), which grants nothing.
struct StrategyWorld;

impl World for StrategyWorld {
    type State = PacerState;
    type Pre = StrategyPre;
    const EXPORT: &'static str = PACER_EXPORT;
    const IMPORTS: &'static str =
        "strategies may import only voxide:dialer@0.1.0 types and wasi:* 0.2 interfaces";

    fn provides(import: &str) -> bool {
        import.starts_with("wasi:")
            || (import.starts_with("voxide:dialer/") && import.ends_with("@0.1.0"))
    }

    fn link(linker: &mut Linker<PacerState>) -> anyhow::Result<()> {
        wasmtime_wasi::p2::add_to_linker_async(linker)
            .map_err(|e| anyhow::anyhow!("linking WASI: {e:#}"))?;
        // The types-only interface the pacer uses; nothing to define in it.
        linker
            .instance("voxide:dialer/types@0.1.0")
            .map_err(|e| anyhow::anyhow!("linking voxide:dialer/types: {e:#}"))?;
        Ok(())
    }

    fn pre(pre: InstancePre<PacerState>) -> wasmtime::Result<StrategyPre> {
        StrategyPre::new(pre)
    }
}

/// Loads and starts pacing strategies. Clone to share.
#[derive(Clone)]
pub struct PacerEngine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    strategies: Loader<StrategyWorld>,
    limits: PacerLimits,
}

impl std::fmt::Debug for PacerEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacerEngine").field("limits", &self.inner.limits).finish()
    }
}

impl PacerEngine {
    /// A strategy loader on `sandbox` (the flow engine's: `FlowEngine::sandbox`).
    pub fn new(sandbox: &Sandbox, mut limits: PacerLimits) -> anyhow::Result<Self> {
        limits.memory_bytes = limits.memory_bytes.min(sandbox.config().max_memory_bytes);
        let strategies = Loader::new(sandbox)?;
        Ok(PacerEngine { inner: Arc::new(EngineInner { strategies, limits }) })
    }

    pub fn limits(&self) -> &PacerLimits {
        &self.inner.limits
    }

    /// Validates, compiles (or maps from the disk cache) and pre-links a strategy.
    pub fn load(&self, bytes: &[u8]) -> Result<Strategy, LoadError> {
        self.inner.strategies.load(bytes).map(|(compiled, _)| Strategy(compiled))
    }

    /// Frees the strategies nothing holds that have gone unused; returns how many stay.
    pub fn free_unused(&self) -> usize {
        self.inner.strategies.free_unused()
    }

    /// A fresh instance of `strategy` for one running campaign.
    pub async fn start(&self, strategy: &Strategy) -> Result<Pacer, PaceError> {
        let limits = &self.inner.limits;
        let stderr = stdio::TailBuffer::new(2048);
        let mut guest = GuestState::with_wasi(
            &InstanceLimits {
                cpu_budget: limits.cpu_budget,
                memory_bytes: limits.memory_bytes,
                table_elements: self.inner.strategies.sandbox().config().max_table_elements,
                max_resources: 100,
            },
            frozen_wasi(stderr.clone()),
        );
        guest.reset_cpu();
        let mut store = self.inner.strategies.sandbox().store(PacerState { guest });
        let instance =
            tokio::time::timeout(limits.timeout, strategy.0.pre.instantiate_async(&mut store))
                .await
                .map_err(|_| PaceError::TimedOut { limit: limits.timeout })?
                .map_err(|e| PaceError::Instantiate(format!("{e:#}")))?;
        Ok(Pacer {
            store,
            instance,
            strategy: strategy.clone(),
            limits: limits.clone(),
            stderr,
            faulted: None,
            calls: 0,
        })
    }
}

/// WASI for a strategy: no files, env, args or sockets (as for flows), stdout dropped,
/// stderr captured, and both clocks frozen at zero: the snapshot's `elapsed-ms` is the only
/// time a strategy sees.
fn frozen_wasi(stderr: stdio::TailBuffer) -> wasmtime_wasi::WasiCtx {
    wasmtime_wasi::WasiCtx::builder()
        .stdout(stdio::TailBuffer::new(0))
        .stderr(stderr)
        .wall_clock(FrozenClock)
        .monotonic_clock(FrozenClock)
        .build()
}

struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// One running instance of a strategy.
pub struct Pacer {
    store: Store<PacerState>,
    instance: bindings::Strategy,
    strategy: Strategy,
    limits: PacerLimits,
    stderr: stdio::TailBuffer,
    faulted: Option<PaceError>,
    calls: u64,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacer")
            .field("strategy", &self.strategy)
            .field("calls", &self.calls)
            .field("faulted", &self.faulted)
            .finish_non_exhaustive()
    }
}

impl Pacer {
    pub fn strategy(&self) -> &Strategy {
        &self.strategy
    }

    /// `pace` calls answered so far.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// The fault that stopped this instance, if one did.
    pub fn fault(&self) -> Option<&PaceError> {
        self.faulted.as_ref()
    }

    /// The tail of what the strategy wrote to stderr (its panic message, its debug prints).
    pub fn stderr(&self) -> String {
        self.stderr.contents()
    }

    /// Asks the strategy for a decision on `now`, within its CPU budget and wall-clock cap.
    /// After a fault the instance is not called again.
    pub async fn pace(&mut self, now: &Snapshot) -> Result<Decision, PaceError> {
        if let Some(fault) = &self.faulted {
            return Err(PaceError::Faulted(Box::new(fault.clone())));
        }
        self.store.data_mut().guest.reset_cpu();
        let call = self.instance.voxide_dialer_pacer().call_pace(&mut self.store, now);
        let result = match tokio::time::timeout(self.limits.timeout, call).await {
            Err(_) => Err(PaceError::TimedOut { limit: self.limits.timeout }),
            Ok(Ok(decision)) => Ok(sanitize(decision, now)),
            Ok(Err(e)) => Err(self.classify(&e)),
        };
        match result {
            Ok(decision) => {
                self.calls += 1;
                Ok(decision)
            }
            Err(fault) => {
                tracing::warn!(strategy = %self.strategy.digest(), "pacing strategy faulted: {fault}");
                self.faulted = Some(fault.clone());
                Err(fault)
            }
        }
    }

    fn classify(&mut self, e: &wasmtime::Error) -> PaceError {
        let guest = &self.store.data_mut().guest;
        if guest.memory_exceeded() {
            PaceError::MemoryExceeded { limit_bytes: self.limits.memory_bytes }
        } else if guest.deadline_hit() {
            PaceError::DeadlineExceeded { budget: self.limits.cpu_budget }
        } else {
            PaceError::Trapped(describe_trap(e, "strategy", &self.stderr.contents()))
        }
    }
}

/// A campaign's pacing: its strategy's instance, replaced when it faults. [`Pacing::tick`]
/// always yields a decision: the strategy's, or — for a tick where the strategy faulted or
/// could not start — the progressive rule (one call per ready agent not already covered),
/// with the fault reported so the campaign can raise an event. The next tick starts a fresh
/// instance.
#[derive(Debug)]
pub struct Pacing {
    engine: PacerEngine,
    strategy: Strategy,
    pacer: Option<Pacer>,
    /// Instances started after a fault.
    pub restarts: u64,
}

/// One tick's decision and, if the strategy failed it, why.
#[derive(Debug, Clone)]
pub struct Paced {
    pub decision: Decision,
    pub fault: Option<PaceError>,
}

impl Pacing {
    pub fn new(engine: &PacerEngine, strategy: &Strategy) -> Self {
        Pacing { engine: engine.clone(), strategy: strategy.clone(), pacer: None, restarts: 0 }
    }

    pub async fn tick(&mut self, now: &Snapshot) -> Paced {
        let pacer = match self.pacer.as_mut() {
            Some(p) => p,
            None => match self.engine.start(&self.strategy).await {
                Ok(p) => self.pacer.insert(p),
                Err(e) => return fallback(now, e),
            },
        };
        match pacer.pace(now).await {
            Ok(decision) => Paced { decision, fault: None },
            Err(fault) => {
                self.pacer = None;
                self.restarts += 1;
                fallback(now, fault)
            }
        }
    }
}

fn fallback(now: &Snapshot, fault: PaceError) -> Paced {
    let launch = now.ready.saturating_sub(now.ringing.saturating_add(now.waiting));
    let mut note = format!("progressive rule this tick: {fault}");
    cut_note(&mut note);
    Paced {
        decision: Decision { launch, prefer: Vec::new(), dial_level: 1.0, note },
        fault: Some(fault),
    }
}

/// A decision the host can use as it is: the note cut to [`MAX_NOTE`] bytes on a character
/// boundary, `prefer` reduced to the snapshot's `next-leads` ids (each once, in the
/// strategy's order), the dial level a finite number ≥ 0.
fn sanitize(mut decision: Decision, now: &Snapshot) -> Decision {
    cut_note(&mut decision.note);
    let mut seen = Vec::with_capacity(now.next_leads.len());
    decision.prefer.retain(|id| {
        let known = now.next_leads.iter().any(|lead| lead.id == *id) && !seen.contains(id);
        if known {
            seen.push(*id);
        }
        known
    });
    if !decision.dial_level.is_finite() || decision.dial_level < 0.0 {
        decision.dial_level = 0.0;
    }
    decision
}

/// Cuts `note` to [`MAX_NOTE`] bytes on a character boundary.
fn cut_note(note: &mut String) {
    if note.len() > MAX_NOTE {
        let mut end = MAX_NOTE;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(leads: &[u64]) -> Snapshot {
        Snapshot {
            elapsed_ms: 0,
            agents: vec![],
            ready: 0,
            talking: 0,
            wrap_up: 0,
            ringing: 0,
            waiting: 0,
            leads_available: leads.len() as u32,
            next_leads: leads.iter().map(|&id| Lead { id, attempts: 0, due_ms: 0 }).collect(),
            previews_accepted: 0,
            answer_rate: 0.0,
            machine_rate: 0.0,
            mean_ring_ms: 0,
            mean_handle_ms: 0,
            mean_wrap_ms: 0,
            dialled: 0,
            answered: 0,
            abandoned: 0,
            abandon_target: 0.03,
            abandon_budget: 0,
        }
    }

    #[test]
    fn sanitize_keeps_known_leads_once_and_cuts_the_note() {
        let decision = Decision {
            launch: 3,
            prefer: vec![7, 99, 5, 7],
            dial_level: f64::NAN,
            note: "é".repeat(150),
        };
        let clean = sanitize(decision, &snapshot(&[5, 6, 7]));
        assert_eq!(clean.prefer, vec![7, 5]);
        assert_eq!(clean.dial_level, 0.0);
        assert_eq!(clean.note.len(), MAX_NOTE);
        assert_eq!(clean.launch, 3, "how many may launch is compliance's call");
    }
}
