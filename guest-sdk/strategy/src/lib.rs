//! Write Voxide dialer pacing strategies in plain Rust.
//!
//! A strategy decides how many numbers an outbound campaign dials now. Voxide keeps one
//! instance per running campaign and asks it about once a second, with a [`Snapshot`] of the
//! campaign (agents and their states, calls ringing, answer rate, handle times, the abandon
//! budget left). Implement [`Strategy`] for a type that holds whatever state the strategy
//! needs between calls, and register it with [`strategy!`]:
//!
//! ```no_run
//! use voxide_strategy::prelude::*;
//!
//! /// One call per idle agent.
//! #[derive(Default)]
//! struct Progressive;
//!
//! impl Strategy for Progressive {
//!     fn pace(&mut self, now: &Snapshot) -> Decision {
//!         let idle = now.ready.saturating_sub(now.ringing + now.waiting);
//!         Decision::launch(idle).level(1.0).note(format!("{idle} idle agents"))
//!     }
//! }
//!
//! voxide_strategy::strategy!(Progressive);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release`. A strategy has no I/O (no
//! network, files or clocks: `now.elapsed_ms` is its clock) and a CPU budget per call (50 ms
//! by default). It cannot break the law: calling hours, do-not-call lists, the abandon-rate
//! limit and the rest are enforced by Voxide, which clamps every decision to them. Because
//! [`Strategy::pace`] is a plain function, strategies are unit-tested with `cargo test` on
//! the host.

// Lets the generated bindings name this crate by its public path, as strategy crates do.
extern crate self as voxide_strategy;

#[doc(hidden)]
#[allow(unsafe_code, missing_debug_implementations, clippy::all)]
pub mod bindings {
    // One bindgen site for the SDK; strategy crates reach it only through `strategy!`.
    wit_bindgen::generate!({
        path: "../../wit/dialer",
        world: "voxide:dialer/strategy@0.1.0",
        pub_export_macro: true,
        default_bindings_module: "::voxide_strategy::bindings",
        runtime_path: "::voxide_strategy::__wit_bindgen_rt::rt",
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen_rt;

pub use bindings::voxide::dialer::types::{Agent, AgentState, Decision, Lead, Snapshot};

/// Everything a strategy usually needs: `use voxide_strategy::prelude::*;`.
pub mod prelude {
    pub use crate::{Agent, AgentState, Decision, Lead, Snapshot, Strategy};
}

/// A pacing strategy. `Default` builds the instance's state when the campaign starts (and
/// again if Voxide had to restart a faulted instance).
pub trait Strategy: Default + 'static {
    /// How many calls to launch now, given the campaign's state.
    fn pace(&mut self, now: &Snapshot) -> Decision;
}

impl Decision {
    /// Launch `n` calls now (the host may launch fewer).
    pub fn launch(n: u32) -> Self {
        Decision { launch: n, prefer: Vec::new(), dial_level: 0.0, note: String::new() }
    }

    /// Launch nothing now.
    pub fn hold() -> Self {
        Self::launch(0)
    }

    /// The lines per agent this decision runs at, for the audit and metrics.
    pub fn level(mut self, dial_level: f64) -> Self {
        self.dial_level = dial_level;
        self
    }

    /// Why, for the pacing audit (the host keeps the first 200 bytes).
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    /// Lead ids from `now.next_leads` to dial first.
    pub fn prefer(mut self, ids: impl IntoIterator<Item = u64>) -> Self {
        self.prefer = ids.into_iter().collect();
        self
    }
}

impl Snapshot {
    /// Agents that could take a call now and are not already covered by one ringing or
    /// waiting: what a progressive dialer launches.
    pub fn uncovered_agents(&self) -> u32 {
        self.ready.saturating_sub(self.ringing.saturating_add(self.waiting))
    }

    /// Agents logged in to the campaign, whatever their state.
    pub fn staffed(&self) -> u32 {
        self.ready.saturating_add(self.talking).saturating_add(self.wrap_up)
    }

    /// `abandoned / answered` in the ledger's window (0 before anything was answered).
    pub fn abandon_rate(&self) -> f64 {
        if self.answered == 0 { 0.0 } else { self.abandoned as f64 / self.answered as f64 }
    }
}

/// Registers `$ty` (a [`Strategy`]) as the component's `voxide:dialer/pacer` export. Use once
/// per strategy crate.
#[macro_export]
macro_rules! strategy {
    ($ty:ty) => {
        const _: () = {
            ::std::thread_local! {
                static STATE: ::core::cell::RefCell<::core::option::Option<$ty>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }
            struct __VoxidePacer;
            impl $crate::bindings::exports::voxide::dialer::pacer::Guest for __VoxidePacer {
                fn pace(now: $crate::Snapshot) -> $crate::Decision {
                    STATE.with_borrow_mut(|state| {
                        let state =
                            state.get_or_insert_with(<$ty as ::core::default::Default>::default);
                        <$ty as $crate::Strategy>::pace(state, &now)
                    })
                }
            }
    $crate::bindings::export!(__VoxidePacer with_types_in $crate::bindings);
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncovered_agents_never_underflows() {
        let now = Snapshot {
            elapsed_ms: 0,
            agents: vec![],
            ready: 2,
            talking: 1,
            wrap_up: 0,
            ringing: 3,
            waiting: 1,
            leads_available: 10,
            next_leads: vec![],
            previews_accepted: 0,
            answer_rate: 0.3,
            machine_rate: 0.0,
            mean_ring_ms: 0,
            mean_handle_ms: 0,
            mean_wrap_ms: 0,
            dialled: 0,
            answered: 40,
            abandoned: 1,
            abandon_target: 0.03,
            abandon_budget: 0,
        };
        assert_eq!(now.uncovered_agents(), 0);
        assert_eq!(now.staffed(), 3);
        assert!((now.abandon_rate() - 0.025).abs() < 1e-9);
    }
}
