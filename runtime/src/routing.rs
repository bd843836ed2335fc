//! Routing: which flow a called number or Request-URI user reaches.
//!
//! A [`Router`] holds [`Route`]s in priority order; the first matching pattern wins, and
//! among the routes sharing that pattern (a canary) one is picked by weight.

use std::sync::Arc;

use crate::flows::Flow;
use crate::manifest::Manifest;

/// One routing rule: a called number / Request-URI user to a flow. Several rules with the
/// same pattern split new calls between their flows by `weight` (a canary).
#[derive(Debug, Clone)]
pub struct Route {
    /// Exact user, or a prefix ending in `*` (`+1555*`), or `*` for everything.
    pub pattern: String,
    /// Name used for logs and the flow's KV namespace.
    pub name: String,
    /// Which version runs (`ivr-menu v3 via live`), for logs.
    pub label: String,
    /// The tenant the route belongs to ("local" for routes from the config file).
    pub tenant: String,
    /// The flow, loaded when the route was: a call started on it stays on it, whatever
    /// happens to aliases and routes meanwhile.
    pub flow: Flow,
    pub vars: Vec<(String, String)>,
    /// What the flow declared it may do (`flow.toml`).
    pub manifest: Arc<Manifest>,
    /// Share of new calls among the routes with the same pattern.
    pub weight: u32,
}

/// Routes in priority order: the first matching pattern wins; among routes with that
/// pattern, one is picked at random by weight.
#[derive(Debug, Clone, Default)]
pub struct Router {
    pub routes: Vec<Route>,
}

impl Router {
    /// A route whose pattern is exactly `user`.
    pub fn lookup_exact(&self, user: &str) -> Option<&Route> {
        let first = self.routes.iter().find(|r| r.pattern == user)?;
        self.pick(&first.pattern, random_u32())
    }

    pub fn lookup(&self, user: &str) -> Option<&Route> {
        let first = self.routes.iter().find(|r| match r.pattern.strip_suffix('*') {
            Some(prefix) => user.starts_with(prefix),
            None => r.pattern == user,
        })?;
        self.pick(&first.pattern, random_u32())
    }

    /// The route with `pattern` that `roll` lands on, weighting each by its share.
    pub fn pick(&self, pattern: &str, roll: u32) -> Option<&Route> {
        let candidates: Vec<&Route> = self.routes.iter().filter(|r| r.pattern == pattern).collect();
        let weights: Vec<u32> = candidates.iter().map(|r| r.weight).collect();
        candidates.get(weighted_index(&weights, roll)?).copied()
    }
}

/// The index `roll` lands on when each index owns a share of `weights` (all zero: the first).
pub fn weighted_index(weights: &[u32], roll: u32) -> Option<usize> {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    if weights.is_empty() {
        return None;
    }
    if total == 0 {
        return Some(0);
    }
    let mut at = u64::from(roll) % total;
    for (i, w) in weights.iter().enumerate() {
        if at < u64::from(*w) {
            return Some(i);
        }
        at -= u64::from(*w);
    }
    Some(weights.len() - 1)
}

/// A random number for canary splits (not for secrets).
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(0x0076_6f78);
    h.finish() as u32
}
