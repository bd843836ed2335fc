//! The flow engine: compiles flow components once, then runs one sandboxed instance per call.
//!
//! Lifecycle: [`FlowEngine::load`] validates a component (is it a component, does it export
//! `voxide:flow/handler@0.1.0`, are all its imports ones we provide), compiles it with Cranelift
//! or loads the precompiled artifact cached on disk by sha256 digest, and pre-links it
//! ([`InstancePre`](wasmtime::component::InstancePre)). [`FlowEngine::run`] then gives each call
//! its own store with a memory cap, a guest-CPU budget enforced by epoch interruption, and a
//! WASI context that grants nothing (no files, env, sockets; stdout/stderr captured). A trap,
//! deadline or panic ends only that call and is reported as a [`FlowOutcome`].

mod cache;
mod host;
mod stdio;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, PoolingAllocationConfig, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use host::HANDLER_EXPORT;

use crate::call::{CallControl, CallId, CallInfo};
use crate::kv::KvNamespace;

/// How often the engine's epoch advances; the granularity of CPU budgets.
const EPOCH_TICK: Duration = Duration::from_millis(10);

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

/// Why a component could not be loaded as a flow. Messages say what was found and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("not a WebAssembly file (it does not start with the \\0asm magic)")]
    NotWasm,
    #[error(
        "this is a core WebAssembly module, not a component; build flows with \
         `cargo build --target wasm32-wasip2` (or `vox build`)"
    )]
    CoreModule,
    #[error("invalid component: {0}")]
    Invalid(String),
    #[error("component does not export {HANDLER_EXPORT} (found exports: {found})")]
    WrongWorld { found: String },
    #[error(
        "component imports {import}, which this host does not provide; flows may import only voxide:flow@0.1.0 and wasi:* 0.2 interfaces"
    )]
    UnknownImport { import: String },
    #[error("flow cache: {0}")]
    Cache(String),
}

/// A compiled, validated, pre-linked flow. Cheap to clone; shared by all calls running it.
/// Its compiled code lives as long as a clone does (routes and running calls hold them).
#[derive(Clone)]
pub struct Flow(Arc<Compiled>);

struct Compiled {
    digest: String,
    pre: host::bindings::FlowPre<FlowState>,
}

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

/// The flows an engine has loaded, by digest: found again without their bytes while anything
/// holds them, and kept for [`FlowEngineConfig::keep_unused`] after they were last loaded or
/// looked up even if nothing does (an upload is routed moments later). Then they are freed: a
/// long-running server that sees many versions deployed keeps only what it runs.
#[derive(Default)]
struct Loaded {
    flows: std::collections::HashMap<String, Held>,
    swept: Option<Instant>,
}

struct Held {
    flow: std::sync::Weak<Compiled>,
    /// Kept alive until `used` + keep_unused.
    pin: Option<Flow>,
    used: Instant,
}

impl Loaded {
    fn get(&mut self, digest: &str, keep: Duration) -> Option<Flow> {
        self.sweep(keep);
        let held = self.flows.get_mut(digest)?;
        let flow = Flow(held.flow.upgrade()?);
        held.used = Instant::now();
        held.pin = Some(flow.clone());
        Some(flow)
    }

    fn insert(&mut self, flow: &Flow) {
        let held =
            Held { flow: Arc::downgrade(&flow.0), pin: Some(flow.clone()), used: Instant::now() };
        self.flows.insert(flow.0.digest.clone(), held);
    }

    /// Unpins what has gone unused for `keep` and forgets what nothing holds any more; at
    /// most every `keep` / 4, so a lookup stays O(1) amortised.
    fn sweep(&mut self, keep: Duration) {
        let now = Instant::now();
        if self.swept.is_some_and(|at| now.duration_since(at) < keep / 4) {
            return;
        }
        self.swept = Some(now);
        self.flows.retain(|_, held| {
            if now.duration_since(held.used) >= keep {
                held.pin = None;
            }
            held.pin.is_some() || held.flow.strong_count() > 0
        });
    }
}

/// Where [`FlowEngine::load_with_source`] found the compiled code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadSource {
    /// Already loaded by this engine.
    Memory,
    /// Precompiled artifact from the on-disk cache; Cranelift skipped.
    DiskCache,
    /// Compiled now with Cranelift.
    Compiled,
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
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    /// Epoch ticks of guest CPU since the last call action.
    cpu_ticks: u32,
    cpu_budget_ticks: u32,
    deadline_hit: bool,
    actions: u64,
    /// The flow has been told the call is over (`err(hangup)`) or ended it itself.
    call_over: bool,
}

impl WasiView for FlowState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Memory and table caps; records which cap was hit so the outcome can name it. The memory
/// cap is per call: all linear memories of the instance count against one total.
struct Limiter {
    memory_bytes: usize,
    memory_total: usize,
    table_elements: usize,
    memory_exceeded: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("flow memory limit of {0} bytes exceeded")]
struct MemoryLimitExceeded(usize);

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.memory_total.saturating_add(desired.saturating_sub(current));
        if total > self.memory_bytes {
            self.memory_exceeded = true;
            // Trap rather than return -1 from memory.grow: a guest allocator that keeps
            // retrying would otherwise spin until its CPU budget.
            return Err(MemoryLimitExceeded(self.memory_bytes).into());
        }
        self.memory_total = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements)
    }

    fn instances(&self) -> usize {
        16
    }
    fn tables(&self) -> usize {
        16
    }
    fn memories(&self) -> usize {
        2
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
    engine: Engine,
    linker: Linker<FlowState>,
    config: FlowEngineConfig,
    loaded: Mutex<Loaded>,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl FlowEngine {
    /// Builds the wasmtime engine (pooling allocator sized for `max_concurrent_calls`,
    /// epoch interruption) and the linker with WASI and the `voxide:flow` imports.
    pub fn new(config: FlowEngineConfig) -> anyhow::Result<Self> {
        let n = config.max_concurrent_calls.max(1);
        let mut pool = PoolingAllocationConfig::new();
        // A Rust wasip2 flow is one component with ~3 core instances (main module plus the
        // shim and fixup modules wasm-component-ld adds), one memory and a few tables.
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(4))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(4))
            .total_stacks(n)
            .max_memory_size(config.limits.memory_bytes)
            .table_elements(config.limits.table_elements);

        let mut wasm = wasmtime::Config::new();
        wasm.epoch_interruption(true)
            .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool))
            // max_wasm_stack must stay below the async fiber stack.
            .max_wasm_stack(512 << 10)
            .async_stack_size(1 << 20);
        let engine = Engine::new(&wasm).map_err(|e| anyhow::anyhow!("wasmtime engine: {e:#}"))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking WASI: {e:#}"))?;
        host::bindings::Flow::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("linking voxide:flow: {e:#}"))?;

        let stop_ticker = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), stop_ticker.clone())?;

        Ok(FlowEngine {
            inner: Arc::new(Inner {
                engine,
                linker,
                config,
                loaded: Mutex::default(),
                stop_ticker,
            }),
        })
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
        check_header(bytes)?;
        let digest = cache::digest(bytes);
        if let Some(flow) = self.loaded_flow(&digest) {
            return Ok((flow, LoadSource::Memory));
        }
        let inner = &self.inner;
        let (component, source) = match &inner.config.cache_dir {
            Some(dir) => cache::compile_cached(&inner.engine, dir, &digest, bytes)?,
            None => (compile(&inner.engine, bytes)?, LoadSource::Compiled),
        };
        let flow = self.prepare(digest, &component)?;
        self.loaded().insert(&flow);
        Ok((flow, source))
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, Loaded> {
        self.inner.loaded.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Forgets in-memory compiled flows (the disk cache stays). Used by benchmarks.
    pub fn clear_memory_cache(&self) {
        self.loaded().flows.clear();
    }

    /// A flow this engine has loaded and not yet freed, by its `sha256:` digest (no bytes
    /// needed).
    pub fn loaded_flow(&self, digest: &str) -> Option<Flow> {
        self.loaded().get(digest, self.inner.config.keep_unused)
    }

    /// Frees the flows nothing holds that have gone unused for `keep_unused` (lookups do it
    /// too, at most every `keep_unused` / 4); returns how many stay compiled in memory.
    pub fn free_unused(&self) -> usize {
        let mut loaded = self.loaded();
        loaded.swept = None;
        loaded.sweep(self.inner.config.keep_unused);
        loaded.flows.len()
    }

    fn prepare(&self, digest: String, component: &Component) -> Result<Flow, LoadError> {
        let engine = &self.inner.engine;
        let ty = component.component_type();
        if ty.get_export(engine, HANDLER_EXPORT).is_none() {
            let found: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
            let found = if found.is_empty() { "none".to_owned() } else { found.join(", ") };
            return Err(LoadError::WrongWorld { found });
        }
        let instance_pre = self.inner.linker.instantiate_pre(component).map_err(|e| {
            // Name the first import we cannot satisfy; fall back to wasmtime's message.
            let missing = ty.imports(engine).map(|(name, _)| name.to_owned()).find(|name| {
                !(name.starts_with("wasi:")
                    || (name.starts_with("voxide:flow/") && name.ends_with("@0.1.0")))
            });
            match missing {
                Some(import) => LoadError::UnknownImport { import },
                None => LoadError::Invalid(format!("{e:#}")),
            }
        })?;
        let pre = host::bindings::FlowPre::new(instance_pre)
            .map_err(|e| LoadError::WrongWorld { found: format!("{e:#}") })?;
        Ok(Flow(Arc::new(Compiled { digest, pre })))
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
        let wasi = WasiCtx::builder().stdout(stdio::TailBuffer::new(0)).stderr(stderr).build();
        let budget_ticks = (limits.cpu_budget.as_millis() / EPOCH_TICK.as_millis()).max(1);
        let state = FlowState {
            call_id,
            call,
            kv,
            wasi,
            table: {
                // Without a cap a guest could pile up WASI handles in host memory within
                // its CPU budget; past it, the WASI call traps and ends the call.
                let mut table = ResourceTable::new();
                table.set_max_capacity(limits.max_resources);
                table
            },
            limiter: Limiter {
                memory_bytes: limits.memory_bytes,
                memory_total: 0,
                table_elements: limits.table_elements,
                memory_exceeded: false,
            },
            cpu_ticks: 0,
            cpu_budget_ticks: u32::try_from(budget_ticks).unwrap_or(u32::MAX),
            deadline_hit: false,
            actions: 0,
            call_over: false,
        };
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| {
            let s = ctx.data_mut();
            s.cpu_ticks += 1;
            if s.cpu_ticks > s.cpu_budget_ticks {
                s.deadline_hit = true;
                return Ok(UpdateDeadline::Interrupt);
            }
            // Yield through tokio so a busy guest shares its worker thread fairly; the plain
            // `Yield` variant starved tokio timers in our spike.
            Ok(UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now())))
        });
        store
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
                    match bindings.voxide_flow_handler().call_handle(&mut store, &wit_info).await {
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
        Err(Fault::Trap(_)) if state.limiter.memory_exceeded => {
            FlowOutcome::MemoryExceeded { limit_bytes: limits.memory_bytes }
        }
        Err(Fault::Trap(_)) if state.deadline_hit => {
            FlowOutcome::DeadlineExceeded { budget: limits.cpu_budget }
        }
        Err(Fault::Trap(e)) => {
            let what = match e.downcast_ref::<Trap>() {
                Some(Trap::UnreachableCodeReached) => "the flow panicked".to_owned(),
                Some(Trap::StackOverflow) => "stack overflow (recursion too deep)".to_owned(),
                Some(trap) => trap.to_string(),
                None => format!("{e:#}"),
            };
            match last_line(stderr) {
                Some(line) => FlowOutcome::Trapped(format!("{what}: {line}")),
                None => FlowOutcome::Trapped(what),
            }
        }
    }
}

/// The most useful line of captured stderr: a Rust panic prints `panicked at …:` then the
/// message on the next line, so prefer the line after "panicked at".
fn last_line(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if let Some(i) = lines.iter().position(|l| l.contains("panicked at")) {
        let mut msg = lines[i].to_owned();
        if let Some(next) = lines.get(i + 1).filter(|l| !l.starts_with("note:")) {
            msg = format!("{msg} {next}");
        }
        return Some(msg);
    }
    lines.last().map(|l| (*l).to_owned())
}

fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(LoadError::NotWasm);
    }
    // Core modules are version 1 with layer 0; components use layer 1.
    match bytes[4..8] {
        [1, 0, 0, 0] => Err(LoadError::CoreModule),
        [_, _, 1, 0] => Ok(()),
        _ => Err(LoadError::Invalid("unknown WebAssembly binary version".into())),
    }
}

fn compile(engine: &Engine, bytes: &[u8]) -> Result<Component, LoadError> {
    Component::new(engine, bytes).map_err(|e| LoadError::Invalid(format!("{e:#}")))
}

fn spawn_epoch_ticker(engine: Engine, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    std::thread::Builder::new().name("voxide-epoch".into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(EPOCH_TICK);
            engine.increment_epoch();
        }
    })?;
    Ok(())
}
