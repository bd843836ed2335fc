//! Voxide's host runtime.
//!
//! - [`ai`]: AI providers' wire protocols (OpenAI-compatible streamed chat completions).
//! - [`call`]: the seam between a flow and its call — the [`call::CallControl`] trait that the
//!   simulator and (later) the SIP/RTP call implement.
//! - [`sandbox`]: the wasmtime engine, pool, compile cache and per-instance limits every
//!   kind of guest (every *world*) shares.
//! - [`flows`]: the `voxide:flow` world — load flow components and run one per call.
//! - [`dialer`]: the outbound dialer; its pacing strategies are the `voxide:dialer` world.
//! - [`sim`]: the simulated caller and scenario runner behind `vox test`.
//! - [`kv`]: per-flow key-value state.
//! - [`manifest`]: what a flow declares it may do (`flow.toml`), checked on every call.
//! - [`builder`]: builds flow crates into components.
//! - [`routing`]: route patterns and the router that picks a flow for a called user.
//! - [`calls`]: routes SIP calls to flows and runs them against real SIP dialogs.
//! - [`node`]: a whole node (store, routes, SIP, media, calls, the outbox) started in one
//!   place: what `vox serve`, tests and benchmarks run.
//! - [`hub`]: the live calls of this node for the control API (list, hang up, redirect,
//!   play), and what they report (events, recordings, CDRs).
//!
//! Only `calls` composes these parts: `flows` knows nothing of SIP or the simulator,
//! and the simulator knows nothing of wasmtime.

pub mod admission;
pub mod ai;
pub mod builder;
pub mod call;
pub mod calls;
pub mod dialer;
pub mod flows;
pub mod hub;
pub mod kv;
pub mod manifest;
pub mod node;
pub mod prompts;
pub mod rng;
pub mod routing;
pub mod sandbox;
pub mod sim;
pub mod speech;
