//! The outbound dialer. Pacing strategies are customer code: Wasm components of the world
//! `voxide:dialer@0.1.0` ([`pacer`]), run in the same [`crate::sandbox`] as flows. What the law
//! requires (calling hours, do-not-call lists, the abandon-rate limit) is the host's, and a
//! strategy's decision is clamped to it.

pub mod campaign;
pub mod compliance;
pub mod import;
pub mod leads;
pub mod pacer;
pub mod runner;
pub mod sim;
pub mod zones;
