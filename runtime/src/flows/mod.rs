//! The flow engine: compiles flow components once, then runs one sandboxed instance per call.
//! The worlds `voxide:flow@0.1.0` and `@0.2.0` on the shared [`crate::sandbox`].
//!
//! Lifecycle: [`FlowEngine::load`] validates a component (is it a component, does it export
//! `voxide:flow/handler@0.1.0`, are all its imports ones we provide), compiles it with Cranelift
//! or loads the precompiled artifact cached on disk by sha256 digest, and pre-links it
//! ([`InstancePre`](wasmtime::component::InstancePre)). [`FlowEngine::run`] then gives each call
//! its own store with a memory cap, a guest-CPU budget enforced by epoch interruption, and a
//! WASI context that grants nothing (no files, env, sockets; stdout/stderr captured). A trap,
//! deadline or panic ends only that call and is reported as a [`FlowOutcome`].

mod host;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};
use wasmtime_wasi::{WasiCtxView, WasiView};

pub use host::HANDLER_EXPORT;

use crate::call::{CallControl, CallId, CallInfo};
use crate::kv::KvNamespace;
use crate::sandbox::{
    Compiled, Guest, GuestState, InstanceLimits, Loader, Sandbox, SandboxConfig, World,
    describe_trap, stdio,
};
pub use crate::sandbox::{LoadError, LoadSource};

/// Per-call sandbox limits.
#[derive(Debug, Clone)]
pub struct FlowLimits {
    /// Guest CPU time allowed between two call actions (epoch-based, 10 ms granularity).
    pub cpu_budget: Duration,
    /// Linear memory cap per call instance.
    pub memory_bytes: usize,
    /// Cap on elements of each core table.
    pub table_elements: usize,
    /// Cap on host resources (WASI streams, pollables) a call's instance may hold at once.
    pub max_resources: usize,
    /// Longest a flow may run for one call, waiting included; then the call is ended.
    pub max_call_duration: Duration,
}

impl Default for FlowLimits {
    fn default() -> Self {
        FlowLimits {
            cpu_budget: Duration::from_secs(2),
            memory_bytes: 64 << 20,
            table_elements: 20_000,
            max_resources: 1000,
            max_call_duration: Duration::from_secs(4 * 3600),
        }
    }
}

/// Engine-wide configuration.
#[derive(Debug, Clone)]
pub struct FlowEngineConfig {
    pub limits: FlowLimits,
    /// Most calls that can run a flow at the same time (the pooling allocator's slots).
    pub max_concurrent_calls: u32,
    /// Where compiled artifacts are cached; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// How long a loaded flow that nothing holds (no route, no running call) stays compiled
    /// in memory after it was last loaded or looked up (a route build, an upload); then it is
    /// freed (and loaded again, from `cache_dir` if set, when next needed).
    pub keep_unused: Duration,
}

impl Default for FlowEngineConfig {
    fn default() -> Self {
        FlowEngineConfig {
            limits: FlowLimits::default(),
            max_concurrent_calls: 1000,
            cache_dir: None,
            keep_unused: Duration::from_secs(300),
        }
    }
}

/// A compiled, validated, pre-linked flow. Cheap to clone; shared by all calls running it.
/// Its compiled code lives as long as a clone does (routes and running calls hold them).
#[derive(Clone)]
pub struct Flow(Arc<Compiled<FlowPre>>);

type FlowPre = host::bindings_v2::FlowPre<FlowState>;

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow").field("digest", &self.0.digest).finish()
    }
}

impl Flow {
    /// `sha256:<hex>` of the component bytes.
    pub fn digest(&self) -> &str {
        &self.0.digest
    }
}

/// How a call's flow ended. Every call gets exactly one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowOutcome {
    /// `handle` returned `ok` with the caller still there.
    Completed,
    /// The caller hung up before the flow finished.
    CallerHungUp,
    /// `handle` returned `err(message)`.
    FlowError(String),
    /// The flow used more guest CPU between two call actions than its budget.
    DeadlineExceeded { budget: Duration },
    /// The flow tried to grow its memory past the cap.
    MemoryExceeded { limit_bytes: usize },
    /// The call ran longer than the engine's maximum call duration.
    DurationExceeded { limit: Duration },
    /// The flow trapped: a panic, stack overflow or other fault. The message names it.
    Trapped(String),
    /// The instance could not be created (e.g. all sandbox slots busy).
    InstantiateFailed(String),
}

impl FlowOutcome {
    /// Short machine name: `completed`, `hung-up`, `flow-error`, `deadline-exceeded`,
    /// `memory-exceeded`, `duration-exceeded`, `trapped`, `instantiate-failed`.
    pub fn kind(&self) -> &'static str {
        match self {
            FlowOutcome::Completed => "completed",
            FlowOutcome::CallerHungUp => "hung-up",
            FlowOutcome::FlowError(_) => "flow-error",
            FlowOutcome::DeadlineExceeded { .. } => "deadline-exceeded",
            FlowOutcome::MemoryExceeded { .. } => "memory-exceeded",
            FlowOutcome::DurationExceeded { .. } => "duration-exceeded",
            FlowOutcome::Trapped(_) => "trapped",
            FlowOutcome::InstantiateFailed(_) => "instantiate-failed",
        }
    }

    /// True for outcomes caused by the flow misbehaving rather than by the call.
    pub fn is_fault(&self) -> bool {
        !matches!(self, FlowOutcome::Completed | FlowOutcome::CallerHungUp)
    }
}

impl std::fmt::Display for FlowOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlowOutcome::Completed => f.write_str("completed"),
            FlowOutcome::CallerHungUp => f.write_str("caller hung up"),
            FlowOutcome::FlowError(m) => write!(f, "flow error: {m}"),
            FlowOutcome::DeadlineExceeded { budget } => {
                write!(
                    f,
                    "deadline exceeded: more than {budget:?} of guest CPU without a call action"
                )
            }
            FlowOutcome::MemoryExceeded { limit_bytes } => {
                write!(f, "memory exceeded: the flow tried to grow past {} MiB", limit_bytes >> 20)
            }
            FlowOutcome::DurationExceeded { limit } => {
                write!(f, "duration exceeded: the call ran longer than {limit:?}")
            }
            FlowOutcome::Trapped(m) => write!(f, "trapped: {m}"),
            FlowOutcome::InstantiateFailed(m) => write!(f, "instantiate failed: {m}"),
        }
    }
}

/// The CDR-like record of one flow run.
pub struct FlowReport {
    pub call_id: CallId,
    pub digest: String,
    pub outcome: FlowOutcome,
    /// Call actions the flow performed.
    pub actions: u64,
    /// Wall-clock time from instantiation to the end of the flow.
    pub elapsed: Duration,
    /// The tail of what the guest wrote to stderr (e.g. its panic message).
    pub stderr: String,
    /// The call, handed back so the caller can inspect or finish it.
    pub call: Box<dyn CallControl>,
}

impl std::fmt::Debug for FlowReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowReport")
            .field("call_id", &self.call_id)
            .field("digest", &self.digest)
            .field("outcome", &self.outcome)
            .field("actions", &self.actions)
            .field("elapsed", &self.elapsed)
            .finish_non_exhaustive()
    }
}

/// Store data of one call's instance.
pub(crate) struct FlowState {
    call_id: CallId,
    call: Box<dyn CallControl>,
    kv: KvNamespace,
    guest: GuestState,
    actions: u64,
    /// The flow has been told the call is over (`err(hangup)`) or ended it itself.
    call_over: bool,
}

impl WasiView for FlowState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.guest.wasi()
    }
}

impl Guest for FlowState {
    fn guest(&mut self) -> &mut GuestState {
        &mut self.guest
    }
}

/// `voxide:flow@0.1.0` and `@0.2.0`: exports the (0.1.0) handler, imports the call, KV,
/// events, log, 0.2.0's speech and WASI. One linker and one `FlowPre` serve both versions: a
/// 0.1.0 flow simply imports less.
struct FlowWorld;

impl World for FlowWorld {
    type State = FlowState;
    type Pre = FlowPre;
    const EXPORT: &'static str = HANDLER_EXPORT;
    const IMPORTS: &'static str =
        "flows may import only voxide:flow@0.1.0, voxide:flow/speech@0.2.0 and wasi:* 0.2";

    fn provides(import: &str) -> bool {
        import.starts_with("wasi:")
            || (import.starts_with("voxide:flow/") && import.ends_with("@0.1.0"))
            || import == "voxide:flow/speech@0.2.0"
    }

    fn link(linker: &mut Linker<FlowState>) -> anyhow::Result<()> {
        wasmtime_wasi::p2::add_to_linker_async(linker)
            .map_err(|e| anyhow::anyhow!("linking WASI: {e:#}"))?;
        host::bindings_v2::Flow::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
            .map_err(|e| anyhow::anyhow!("linking voxide:flow: {e:#}"))
    }

    fn pre(pre: InstancePre<FlowState>) -> wasmtime::Result<FlowPre> {
        FlowPre::new(pre)
    }
}

/// Compiles and runs flows. Clone to share; all clones use one wasmtime engine and cache.
#[derive(Clone)]
pub struct FlowEngine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FlowEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowEngine").field("config", &self.inner.config).finish()
    }
}

struct Inner {
    flows: Loader<FlowWorld>,
    config: FlowEngineConfig,
}

impl FlowEngine {
    /// Builds the shared sandbox (wasmtime engine with a pooling allocator sized for
    /// `max_concurrent_calls`, epoch interruption) and the flow world's linker.
    pub fn new(config: FlowEngineConfig) -> anyhow::Result<Self> {
        let sandbox = Sandbox::new(SandboxConfig {
            instances: config.max_concurrent_calls,
            max_memory_bytes: config.limits.memory_bytes,
            max_table_elements: config.limits.table_elements,
            cache_dir: config.cache_dir.clone(),
            keep_unused: config.keep_unused,
        })?;
        Ok(FlowEngine { inner: Arc::new(Inner { flows: Loader::new(&sandbox)?, config }) })
    }

    /// The sandbox this engine runs flows in; other worlds (pacing strategies) share it.
    pub fn sandbox(&self) -> &Sandbox {
        self.inner.flows.sandbox()
    }

    /// The configuration this engine was built with.
    pub fn config(&self) -> &FlowEngineConfig {
        &self.inner.config
    }

    /// Validates, compiles (or loads from cache) and pre-links a flow component.
    pub fn load(&self, bytes: &[u8]) -> Result<Flow, LoadError> {
        self.load_with_source(bytes).map(|(flow, _)| flow)
    }

    /// [`load`](Self::load), also telling where the compiled code came from.
    pub fn load_with_source(&self, bytes: &[u8]) -> Result<(Flow, LoadSource), LoadError> {
        self.inner.flows.load(bytes).map(|(compiled, source)| (Flow(compiled), source))
    }

    /// Forgets in-memory compiled flows (the disk cache stays). Used by benchmarks.
    pub fn clear_memory_cache(&self) {
        self.inner.flows.clear();
    }

    /// A flow this engine has loaded and not yet freed, by its `sha256:` digest (no bytes
    /// needed).
    pub fn loaded_flow(&self, digest: &str) -> Option<Flow> {
        self.inner.flows.get(digest).map(Flow)
    }

    /// Frees the flows nothing holds that have gone unused for `keep_unused` (lookups do it
    /// too, at most every `keep_unused` / 4); returns how many stay compiled in memory.
    pub fn free_unused(&self) -> usize {
        self.inner.flows.free_unused()
    }

    /// One call's store: its own WASI context granting nothing, the memory/table limiter, and
    /// the epoch callback that enforces the guest-CPU budget between call actions.
    fn new_store(
        &self,
        call_id: CallId,
        call: Box<dyn CallControl>,
        kv: KvNamespace,
        stderr: stdio::TailBuffer,
    ) -> Store<FlowState> {
        let limits = &self.inner.config.limits;
        let limits = InstanceLimits {
            cpu_budget: limits.cpu_budget,
            memory_bytes: limits.memory_bytes,
            table_elements: limits.table_elements,
            max_resources: limits.max_resources,
        };
        let state = FlowState {
            call_id,
            call,
            kv,
            guest: GuestState::new(&limits, stderr),
            actions: 0,
            call_over: false,
        };
        self.sandbox().store(state)
    }

    /// Measures the fixed cost of a call without running the flow: returns (time to
    /// instantiate, time for store creation + instantiation + drop). For benchmarks.
    #[doc(hidden)]
    pub async fn probe_instantiate(
        &self,
        flow: &Flow,
        call: Box<dyn CallControl>,
    ) -> anyhow::Result<(Duration, Duration)> {
        let started = Instant::now();
        let mut store = self.new_store(
            CallId::default(),
            call,
            KvNamespace::isolated(),
            stdio::TailBuffer::new(0),
        );
        let before = Instant::now();
        let instance = flow.0.pre.instantiate_async(&mut store).await;
        let instantiate = before.elapsed();
        instance.map_err(|e| anyhow::anyhow!("instantiate: {e:#}"))?;
        drop(store);
        Ok((instantiate, started.elapsed()))
    }

    /// Runs `flow` for one call to completion and reports how it ended. Never panics and
    /// never returns early on a guest fault: the fault becomes the outcome.
    pub async fn run(
        &self,
        flow: &Flow,
        info: CallInfo,
        call: Box<dyn CallControl>,
        kv: KvNamespace,
    ) -> FlowReport {
        let started = Instant::now();
        let limits = &self.inner.config.limits;
        let stderr = stdio::TailBuffer::new(2048);
        let mut store = self.new_store(info.id.clone(), call, kv, stderr.clone());

        let wit_info = (&info).into();
        let execution = async {
            match flow.0.pre.instantiate_async(&mut store).await {
                Err(e) => Err(Fault::Instantiate(e)),
                Ok(bindings) => {
                    match bindings
                        .voxide_flow0_1_0_handler()
                        .call_handle(&mut store, &wit_info)
                        .await
                    {
                        Ok(r) => Ok(r),
                        Err(e) => Err(Fault::Trap(e)),
                    }
                }
            }
        };
        // The wall-clock cap also bounds waits the CPU budget cannot see (a guest sleeping on
        // a WASI clock, an endless series of zero-length pauses).
        let result = tokio::time::timeout(limits.max_call_duration, execution)
            .await
            .unwrap_or(Err(Fault::TooLong));

        let mut state = store.into_data();
        let stderr = stderr.contents();
        let outcome = classify(result, &state, limits, &stderr);
        if outcome.is_fault() {
            tracing::warn!(call = %info.id, flow = %flow.0.digest, "flow ended: {outcome}");
        } else {
            tracing::debug!(call = %info.id, flow = %flow.0.digest, "flow ended: {outcome}");
        }
        // Whatever happened inside the sandbox, the call itself is ended cleanly.
        state.call.end(outcome.is_fault()).await;
        FlowReport {
            call_id: info.id,
            digest: flow.0.digest.clone(),
            outcome,
            actions: state.actions,
            elapsed: started.elapsed(),
            stderr,
            call: state.call,
        }
    }
}

enum Fault {
    Instantiate(wasmtime::Error),
    Trap(wasmtime::Error),
    TooLong,
}

fn classify(
    result: Result<Result<(), String>, Fault>,
    state: &FlowState,
    limits: &FlowLimits,
    stderr: &str,
) -> FlowOutcome {
    let hung_up = state.call.caller_hung_up();
    match result {
        Ok(Ok(())) if hung_up => FlowOutcome::CallerHungUp,
        Ok(Ok(())) => FlowOutcome::Completed,
        // An error returned after the flow was told the call is over is the flow passing the
        // hang-up on (as it should), not a fault. Errors before that are recorded as such.
        Ok(Err(_)) if state.call_over && hung_up => FlowOutcome::CallerHungUp,
        Ok(Err(_)) if state.call_over => FlowOutcome::Completed,
        Ok(Err(message)) => FlowOutcome::FlowError(message),
        Err(Fault::TooLong) => FlowOutcome::DurationExceeded { limit: limits.max_call_duration },
        Err(Fault::Instantiate(e)) => FlowOutcome::InstantiateFailed(format!("{e:#}")),
        Err(Fault::Trap(_)) if state.guest.memory_exceeded() => {
            FlowOutcome::MemoryExceeded { limit_bytes: limits.memory_bytes }
        }
        Err(Fault::Trap(_)) if state.guest.deadline_hit() => {
            FlowOutcome::DeadlineExceeded { budget: limits.cpu_budget }
        }
        Err(Fault::Trap(e)) => FlowOutcome::Trapped(describe_trap(&e, "flow", stderr)),
    }
}
