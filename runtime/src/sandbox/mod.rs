//! The Wasm sandbox every kind of guest runs in, generic over *worlds*.
//!
//! A [`World`] is what differs between kinds of guest: the WIT package a component must
//! export, the host imports linked for it, and its per-instance state. Everything else is
//! shared here, once: one wasmtime [`Engine`] (pooling allocator, epoch interruption, one
//! epoch ticker thread), the content-addressed compile cache on disk, the in-memory set of
//! loaded components (freed when unused), and the per-instance [`Store`] with its memory and
//! table caps, a WASI context that grants nothing, and the guest-CPU budget. Spin calls the
//! same split "factors".
//!
//! Worlds today: `voxide:flow@0.1.0` ([`crate::flows`], one instance per call) and
//! `voxide:dialer@0.1.0` ([`crate::dialer::pacer`], one instance per running campaign).
//! A new world is a `World` impl and a bindgen site; it shares the engine, the pool and the
//! cache with the others.

mod cache;
pub(crate) mod stdio;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::{Engine, PoolingAllocationConfig, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView};

pub use cache::digest;

/// How often the engine's epoch advances; the granularity of CPU budgets.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// What the shared engine is sized for.
#[derive(Debug, Clone)]
pub(crate) struct SandboxConfig {
    /// Instances that can exist at once, all worlds together (the pooling allocator's slots).
    pub instances: u32,
    /// The largest linear memory any world allows an instance.
    pub max_memory_bytes: usize,
    /// The largest core table any world allows.
    pub max_table_elements: usize,
    /// Where compiled artifacts are cached; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// How long a loaded component nothing holds stays compiled after its last load or lookup.
    pub keep_unused: Duration,
}

/// One wasmtime engine and its epoch ticker, shared by every world. Cheap to clone.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<SandboxInner>,
}

struct SandboxInner {
    engine: Engine,
    config: SandboxConfig,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for SandboxInner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("config", &self.inner.config).finish()
    }
}

impl Sandbox {
    /// Builds the engine (pooling allocator sized for `config.instances`, epoch interruption)
    /// and starts the epoch ticker.
    pub(crate) fn new(config: SandboxConfig) -> anyhow::Result<Self> {
        let n = config.instances.max(1);
        let mut pool = PoolingAllocationConfig::new();
        // A Rust wasip2 component is ~3 core instances (main module plus the shim and fixup
        // modules wasm-component-ld adds), one memory and a few tables.
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(4))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(4))
            .total_stacks(n)
            .max_memory_size(config.max_memory_bytes)
            .table_elements(config.max_table_elements);

        let mut wasm = wasmtime::Config::new();
        wasm.epoch_interruption(true)
            .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool))
            // max_wasm_stack must stay below the async fiber stack.
            .max_wasm_stack(512 << 10)
            .async_stack_size(1 << 20);
        let engine = Engine::new(&wasm).map_err(|e| anyhow::anyhow!("wasmtime engine: {e:#}"))?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), stop_ticker.clone())?;
        Ok(Sandbox { inner: Arc::new(SandboxInner { engine, config, stop_ticker }) })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn config(&self) -> &SandboxConfig {
        &self.inner.config
    }

    /// A store for one instance: its limiter and the epoch callback that enforces the
    /// guest-CPU budget kept in its [`GuestState`].
    pub(crate) fn store<S: Guest>(&self, state: S) -> Store<S> {
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|s| &mut s.guest().limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| {
            let g = ctx.data_mut().guest();
            g.cpu_ticks += 1;
            if g.cpu_ticks > g.cpu_budget_ticks {
                g.deadline_hit = true;
                return Ok(UpdateDeadline::Interrupt);
            }
            // Yield through tokio so a busy guest shares its worker thread fairly; the plain
            // `Yield` variant starved tokio timers in our spike.
            Ok(UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now())))
        });
        store
    }
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

/// A kind of guest: what a component must export and what the host links for it.
pub(crate) trait World: 'static {
    /// Store data of one instance.
    type State: Guest;
    /// The typed, pre-linked bindings bindgen generates for the world (`FooPre<State>`).
    type Pre: Send + Sync + 'static;
    /// The interface every component of this world exports; named in load errors.
    const EXPORT: &'static str;
    /// Said after "which this host does not provide;" when a component imports more.
    const IMPORTS: &'static str;
    /// Whether the host provides `import` to this world (to name the one that is missing).
    fn provides(import: &str) -> bool;
    /// Adds the world's host imports (WASI included, if it has them) to `linker`.
    fn link(linker: &mut Linker<Self::State>) -> anyhow::Result<()>;
    /// Types a pre-instantiated component as the world.
    fn pre(pre: InstancePre<Self::State>) -> wasmtime::Result<Self::Pre>;
}

/// Per-instance sandbox state every world's store data holds.
pub(crate) trait Guest: Send + 'static {
    fn guest(&mut self) -> &mut GuestState;
}

/// Caps of one instance.
#[derive(Debug, Clone)]
pub(crate) struct InstanceLimits {
    /// Guest CPU allowed before the host resets the count (a flow's call action, a
    /// strategy's call); epoch-based, 10 ms granularity.
    pub cpu_budget: Duration,
    pub memory_bytes: usize,
    pub table_elements: usize,
    /// Host resources (WASI streams, pollables) an instance may hold at once.
    pub max_resources: usize,
}

/// The sandbox part of an instance's store data: WASI granting nothing but a captured
/// stderr, the resource table, the memory/table limiter and the CPU budget's bookkeeping.
pub(crate) struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    cpu_ticks: u32,
    cpu_budget_ticks: u32,
    deadline_hit: bool,
}

impl GuestState {
    /// WASI granting nothing: no files, env, args or sockets; stdout dropped, stderr captured.
    pub(crate) fn new(limits: &InstanceLimits, stderr: stdio::TailBuffer) -> Self {
        let wasi = WasiCtx::builder().stdout(stdio::TailBuffer::new(0)).stderr(stderr).build();
        Self::with_wasi(limits, wasi)
    }

    /// With a world's own WASI context (e.g. frozen clocks).
    pub(crate) fn with_wasi(limits: &InstanceLimits, wasi: WasiCtx) -> Self {
        let budget_ticks = (limits.cpu_budget.as_millis() / EPOCH_TICK.as_millis()).max(1);
        // Without a cap a guest could pile up WASI handles in host memory within its CPU
        // budget; past it, the WASI call traps.
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.max_resources);
        GuestState {
            wasi,
            table,
            limiter: Limiter {
                memory_bytes: limits.memory_bytes,
                memory_total: 0,
                table_elements: limits.table_elements,
                memory_exceeded: false,
            },
            cpu_ticks: 0,
            cpu_budget_ticks: u32::try_from(budget_ticks).unwrap_or(u32::MAX),
            deadline_hit: false,
        }
    }

    /// Starts a new stretch of the CPU budget (after a call action, before a strategy call).
    pub(crate) fn reset_cpu(&mut self) {
        self.cpu_ticks = 0;
    }

    /// The instance was interrupted for running past its CPU budget.
    pub(crate) fn deadline_hit(&self) -> bool {
        self.deadline_hit
    }

    /// The instance trapped trying to grow its memory past the cap.
    pub(crate) fn memory_exceeded(&self) -> bool {
        self.limiter.memory_exceeded
    }

    pub(crate) fn wasi(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Memory and table caps; records which cap was hit so the outcome can name it. The memory
/// cap is per instance: all linear memories of the instance count against one total.
struct Limiter {
    memory_bytes: usize,
    memory_total: usize,
    table_elements: usize,
    memory_exceeded: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("memory limit of {0} bytes exceeded")]
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

/// Why a component could not be loaded. Messages say what was found and what to do.
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
    #[error("component does not export {expected} (found exports: {found})")]
    WrongWorld { expected: &'static str, found: String },
    #[error("component imports {import}, which this host does not provide; {allowed}")]
    UnknownImport { import: String, allowed: &'static str },
    #[error("compile cache: {0}")]
    Cache(String),
}

/// Where a load found the compiled code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadSource {
    /// Already loaded by this engine.
    Memory,
    /// Precompiled artifact from the on-disk cache; Cranelift skipped.
    DiskCache,
    /// Compiled now with Cranelift.
    Compiled,
}

/// A loaded component of world `W`, shared by everything running it.
pub(crate) type Shared<W> = Arc<Compiled<<W as World>::Pre>>;

/// A validated, compiled, pre-linked component of one world.
pub(crate) struct Compiled<P> {
    pub digest: String,
    pub pre: P,
}

/// Loads components of world `W`: validates, compiles (or maps from the disk cache),
/// pre-links, and keeps what is loaded findable by digest while anything holds it, plus
/// [`SandboxConfig::keep_unused`] after its last load or lookup (an upload is routed moments
/// later). Then it is freed: a long-running server that sees many versions keeps only what it
/// runs.
pub(crate) struct Loader<W: World> {
    sandbox: Sandbox,
    linker: Linker<W::State>,
    loaded: Mutex<Loaded<W::Pre>>,
}

struct Loaded<P> {
    held: HashMap<String, Held<P>>,
    swept: Option<Instant>,
}

struct Held<P> {
    compiled: Weak<Compiled<P>>,
    /// Kept alive until `used` + keep_unused.
    pin: Option<Arc<Compiled<P>>>,
    used: Instant,
}

impl<W: World> Loader<W> {
    pub(crate) fn new(sandbox: &Sandbox) -> anyhow::Result<Self> {
        let mut linker = Linker::new(sandbox.engine());
        W::link(&mut linker)?;
        Ok(Loader {
            sandbox: sandbox.clone(),
            linker,
            loaded: Mutex::new(Loaded { held: HashMap::new(), swept: None }),
        })
    }

    pub(crate) fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    pub(crate) fn load(&self, bytes: &[u8]) -> Result<(Shared<W>, LoadSource), LoadError> {
        check_header(bytes)?;
        let digest = cache::digest(bytes);
        if let Some(compiled) = self.get(&digest) {
            return Ok((compiled, LoadSource::Memory));
        }
        let engine = self.sandbox.engine();
        let (component, source) = match &self.sandbox.config().cache_dir {
            Some(dir) => cache::compile_cached(engine, dir, &digest, bytes)?,
            None => (compile(engine, bytes)?, LoadSource::Compiled),
        };
        let compiled = Arc::new(Compiled { pre: self.prepare(&component)?, digest });
        let held = Held {
            compiled: Arc::downgrade(&compiled),
            pin: Some(compiled.clone()),
            used: Instant::now(),
        };
        self.loaded().held.insert(compiled.digest.clone(), held);
        Ok((compiled, source))
    }

    fn prepare(&self, component: &Component) -> Result<W::Pre, LoadError> {
        let engine = self.sandbox.engine();
        let ty = component.component_type();
        if ty.get_export(engine, W::EXPORT).is_none() {
            let found: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
            let found = if found.is_empty() { "none".to_owned() } else { found.join(", ") };
            return Err(LoadError::WrongWorld { expected: W::EXPORT, found });
        }
        let instance_pre = self.linker.instantiate_pre(component).map_err(|e| {
            // Name the first import we cannot satisfy; fall back to wasmtime's message.
            let missing =
                ty.imports(engine).map(|(name, _)| name.to_owned()).find(|name| !W::provides(name));
            match missing {
                Some(import) => LoadError::UnknownImport { import, allowed: W::IMPORTS },
                None => LoadError::Invalid(format!("{e:#}")),
            }
        })?;
        W::pre(instance_pre)
            .map_err(|e| LoadError::WrongWorld { expected: W::EXPORT, found: format!("{e:#}") })
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, Loaded<W::Pre>> {
        self.loaded.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A component this loader has loaded and not yet freed, by its `sha256:` digest.
    pub(crate) fn get(&self, digest: &str) -> Option<Shared<W>> {
        let keep = self.sandbox.config().keep_unused;
        let mut loaded = self.loaded();
        loaded.sweep(keep);
        let held = loaded.held.get_mut(digest)?;
        let compiled = held.compiled.upgrade()?;
        held.used = Instant::now();
        held.pin = Some(compiled.clone());
        Some(compiled)
    }

    /// Frees what nothing holds and has gone unused for `keep_unused`; returns how many
    /// components stay compiled in memory.
    pub(crate) fn free_unused(&self) -> usize {
        let keep = self.sandbox.config().keep_unused;
        let mut loaded = self.loaded();
        loaded.swept = None;
        loaded.sweep(keep);
        loaded.held.len()
    }

    /// Forgets every in-memory compiled component (the disk cache stays).
    pub(crate) fn clear(&self) {
        self.loaded().held.clear();
    }
}

impl<P> Loaded<P> {
    /// Unpins what has gone unused for `keep` and forgets what nothing holds any more; at
    /// most every `keep` / 4, so a lookup stays O(1) amortised.
    fn sweep(&mut self, keep: Duration) {
        let now = Instant::now();
        if self.swept.is_some_and(|at| now.duration_since(at) < keep / 4) {
            return;
        }
        self.swept = Some(now);
        self.held.retain(|_, held| {
            if now.duration_since(held.used) >= keep {
                held.pin = None;
            }
            held.pin.is_some() || held.compiled.strong_count() > 0
        });
    }
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

/// What a trap was, for an outcome or a log: "the flow panicked: <its message>", "stack
/// overflow …". `guest` names the kind of guest ("flow", "strategy"). The message comes from
/// the captured stderr: a Rust panic prints `panicked at …:` then the message on the next
/// line, so the line after "panicked at" is preferred, else the last line written.
pub(crate) fn describe_trap(e: &wasmtime::Error, guest: &str, stderr: &str) -> String {
    let what = match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::UnreachableCodeReached) => format!("the {guest} panicked"),
        Some(wasmtime::Trap::StackOverflow) => "stack overflow (recursion too deep)".to_owned(),
        Some(trap) => trap.to_string(),
        None => format!("{e:#}"),
    };
    match last_line(stderr) {
        Some(line) => format!("{what}: {line}"),
        None => what,
    }
}

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
