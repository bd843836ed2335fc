//! Routing: which flow a called number or Request-URI user reaches.
//!
//! A [`Router`] holds [`Route`]s in priority order; the first matching pattern wins, and
//! among the routes sharing that pattern (a canary) one is picked by weight. The patterns
//! are indexed once ([`RouteIndex`]: a hash map of whole patterns and a byte trie of
//! prefixes), so a lookup does not scan the routes.

use std::collections::HashMap;
use std::sync::Arc;

use crate::flows::Flow;
use crate::manifest::Manifest;

/// The store tenant that owns the config file's routes (and calls to its registered users)
/// unless the config's `tenant` names another: the one the first start creates.
pub const CONFIG_TENANT: &str = "default";

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
    /// The stored version that runs (None for a flow from the config file).
    pub version: Option<i64>,
    /// The store id of the tenant the route belongs to (the config file's tenant for its
    /// routes): its calls' CDRs and events are that tenant's.
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
///
/// Immutable once built: [`Router::new`] indexes the patterns ([`RouteIndex`]), so a lookup
/// costs the length of the user, not the number of routes.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
    index: RouteIndex,
}

impl Router {
    /// A router over `routes`, in priority order.
    pub fn new(routes: Vec<Route>) -> Router {
        let index = RouteIndex::new(routes.iter().map(|r| (r.pattern.as_str(), r.weight)));
        Router { routes, index }
    }

    /// The routes, in priority order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// A route whose pattern is exactly `user`.
    pub fn lookup_exact(&self, user: &str) -> Option<&Route> {
        self.pick(user, random_roll())
    }

    /// A route of the first pattern (in priority order) that `user` matches: equal to it, or a
    /// prefix of it (`+1555*`, `*`).
    pub fn lookup(&self, user: &str) -> Option<&Route> {
        self.routes.get(self.index.lookup(user, random_roll())?)
    }

    /// The route with `pattern` that `roll` lands on, weighting each by its share.
    pub fn pick(&self, pattern: &str, roll: u32) -> Option<&Route> {
        self.routes.get(self.index.pick(pattern, roll)?)
    }
}

/// Which routes each pattern has and which patterns a user matches, computed once from the
/// patterns (with their weights) in priority order. It answers with positions in that order,
/// so it knows nothing of flows and can be tested and measured on its own.
///
/// - Every distinct pattern is a *group*, numbered in order of its first route, so the lower
///   group is the pattern that comes first: "first matching pattern wins" is "lowest matching
///   group wins", however exact patterns, prefixes and `*` are interleaved.
/// - `by_pattern` finds a group by its whole pattern (`lookup_exact`, `pick`, and the exact
///   candidate of `lookup`).
/// - Prefix patterns live in a byte trie (`*` at the root): walking `user` through it visits
///   every prefix pattern that `user` starts with, so `lookup` is one hash of `user` plus at
///   most `user.len()` trie steps.
/// - A group's positions and weights are contiguous slices, so picking a canary target
///   allocates nothing.
#[derive(Clone)]
pub struct RouteIndex {
    by_pattern: HashMap<Box<str>, usize>,
    groups: Vec<Group>,
    /// Route positions, group by group, each group's in priority order.
    positions: Vec<usize>,
    /// `weights[i]` is the weight of the route at `positions[i]`.
    weights: Vec<u32>,
    /// Node 0 is the root (the empty prefix, pattern `*`).
    trie: Vec<TrieNode>,
}

/// A group's routes: `positions[start..end]`.
#[derive(Debug, Clone, Copy)]
struct Group {
    start: usize,
    end: usize,
}

#[derive(Debug, Clone, Default)]
struct TrieNode {
    /// Child nodes by next byte, sorted by byte.
    children: Vec<(u8, usize)>,
    /// The group of the prefix pattern that ends here.
    group: Option<usize>,
}

impl RouteIndex {
    /// Indexes `(pattern, weight)` pairs given in priority order; positions count from 0.
    pub fn new<'a>(routes: impl IntoIterator<Item = (&'a str, u32)>) -> RouteIndex {
        let mut by_pattern: HashMap<Box<str>, usize> = HashMap::new();
        let mut patterns: Vec<&str> = Vec::new();
        let mut members: Vec<Vec<(usize, u32)>> = Vec::new();
        for (position, (pattern, weight)) in routes.into_iter().enumerate() {
            let group = match by_pattern.get(pattern) {
                Some(group) => *group,
                None => {
                    by_pattern.insert(pattern.into(), members.len());
                    patterns.push(pattern);
                    members.push(Vec::new());
                    members.len() - 1
                }
            };
            members[group].push((position, weight));
        }

        let mut groups = Vec::with_capacity(members.len());
        let mut positions = Vec::new();
        let mut weights = Vec::new();
        for routes in &members {
            let start = positions.len();
            for (position, weight) in routes {
                positions.push(*position);
                weights.push(*weight);
            }
            groups.push(Group { start, end: positions.len() });
        }

        let mut trie = vec![TrieNode::default()];
        for (group, pattern) in patterns.iter().enumerate() {
            let Some(prefix) = pattern.strip_suffix('*') else { continue };
            let mut node = 0;
            for byte in prefix.bytes() {
                node = match trie[node].children.binary_search_by_key(&byte, |c| c.0) {
                    Ok(i) => trie[node].children[i].1,
                    Err(i) => {
                        let child = trie.len();
                        trie.push(TrieNode::default());
                        trie[node].children.insert(i, (byte, child));
                        child
                    }
                };
            }
            trie[node].group = Some(group);
        }

        RouteIndex { by_pattern, groups, positions, weights, trie }
    }

    /// How many routes were indexed.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// The position of the route whose pattern is exactly `user` that `roll` lands on.
    pub fn lookup_exact(&self, user: &str, roll: u32) -> Option<usize> {
        self.pick(user, roll)
    }

    /// The position `roll` lands on among the routes of the first pattern `user` matches.
    pub fn lookup(&self, user: &str, roll: u32) -> Option<usize> {
        self.pick_group(self.first_match(user)?, roll)
    }

    /// The position `roll` lands on among the routes with `pattern`, by weight.
    pub fn pick(&self, pattern: &str, roll: u32) -> Option<usize> {
        self.pick_group(*self.by_pattern.get(pattern)?, roll)
    }

    /// The lowest group `user` matches: its exact pattern or any prefix pattern. (A pattern
    /// equal to `user` that ends in `*` matches as a prefix too, as it does in a linear scan.)
    fn first_match(&self, user: &str) -> Option<usize> {
        let mut best = self.by_pattern.get(user).copied();
        let mut node = self.trie.first()?;
        let mut bytes = user.bytes();
        loop {
            if let Some(group) = node.group {
                best = Some(best.map_or(group, |b| b.min(group)));
            }
            let Some(byte) = bytes.next() else { break };
            let Ok(i) = node.children.binary_search_by_key(&byte, |c| c.0) else { break };
            node = &self.trie[node.children[i].1];
        }
        best
    }

    fn pick_group(&self, group: usize, roll: u32) -> Option<usize> {
        let Group { start, end } = *self.groups.get(group)?;
        let i = weighted_index(&self.weights[start..end], roll)?;
        self.positions.get(start + i).copied()
    }
}

impl Default for RouteIndex {
    fn default() -> RouteIndex {
        RouteIndex::new([])
    }
}

impl std::fmt::Debug for RouteIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteIndex")
            .field("routes", &self.positions.len())
            .field("patterns", &self.groups.len())
            .field("trie_nodes", &self.trie.len())
            .finish()
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
fn random_roll() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(0x0076_6f78);
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The router as it was before the index: a linear scan, then a filtered pick.
    fn naive_pick(routes: &[(String, u32)], pattern: &str, roll: u32) -> Option<usize> {
        let candidates: Vec<usize> =
            (0..routes.len()).filter(|i| routes[*i].0 == pattern).collect();
        let weights: Vec<u32> = candidates.iter().map(|i| routes[*i].1).collect();
        candidates.get(weighted_index(&weights, roll)?).copied()
    }

    fn naive_lookup(routes: &[(String, u32)], user: &str, roll: u32) -> Option<usize> {
        let (first, _) = routes.iter().find(|(pattern, _)| match pattern.strip_suffix('*') {
            Some(prefix) => user.starts_with(prefix),
            None => pattern == user,
        })?;
        naive_pick(routes, first, roll)
    }

    fn index(routes: &[(&str, u32)]) -> RouteIndex {
        RouteIndex::new(routes.iter().copied())
    }

    #[test]
    fn an_empty_index_matches_nothing() {
        for index in [RouteIndex::default(), index(&[])] {
            assert!(index.is_empty());
            assert_eq!(index.lookup("+15550100", 0), None);
            assert_eq!(index.lookup("", 0), None);
            assert_eq!(index.lookup_exact("*", 0), None);
            assert_eq!(index.pick("*", 0), None);
        }
        assert!(Router::default().routes().is_empty());
        assert!(Router::default().lookup("hello").is_none());
    }

    #[test]
    fn exact_prefix_and_catch_all_win_by_position() {
        // As the loader orders store routes: exact, then prefixes, then `*`.
        let loader = index(&[("+15550100", 1), ("+1555*", 1), ("*", 1)]);
        assert_eq!(loader.lookup("+15550100", 0), Some(0));
        assert_eq!(loader.lookup("+15550199", 0), Some(1));
        assert_eq!(loader.lookup("+1555", 0), Some(1), "a prefix matches the bare prefix too");
        assert_eq!(loader.lookup("+4420", 0), Some(2));
        assert_eq!(loader.lookup("", 0), Some(2));

        // Config-file routes come first in any order: position decides, not the kind.
        let config = index(&[("*", 1), ("+1555*", 1), ("+15550100", 1)]);
        assert_eq!(config.lookup("+15550100", 0), Some(0));
        assert_eq!(config.lookup("+15550199", 0), Some(0));
        let config = index(&[("+1555*", 1), ("+15550100", 1), ("*", 1)]);
        assert_eq!(config.lookup("+15550100", 0), Some(0));
        assert_eq!(config.lookup("hello", 0), Some(2));

        // An exact pattern matches only itself.
        let exact = index(&[("hello", 1)]);
        assert_eq!(exact.lookup("hello", 0), Some(0));
        assert_eq!(exact.lookup("hell", 0), None);
        assert_eq!(exact.lookup("hello2", 0), None);
    }

    #[test]
    fn the_earliest_matching_prefix_wins_not_the_longest() {
        let longest_first = index(&[("+15550*", 1), ("+1555*", 1), ("+1*", 1)]);
        assert_eq!(longest_first.lookup("+15550123", 0), Some(0));
        assert_eq!(longest_first.lookup("+15551234", 0), Some(1));
        assert_eq!(longest_first.lookup("+12125550100", 0), Some(2));
        assert_eq!(longest_first.lookup("+4420", 0), None);

        // A shorter prefix listed first (a config-file route, or a higher priority) wins.
        let shortest_first = index(&[("+1*", 1), ("+1555*", 1), ("+15550*", 1)]);
        assert_eq!(shortest_first.lookup("+15550123", 0), Some(0));
        let middle_first = index(&[("+1555*", 1), ("+15550*", 1), ("+1*", 1)]);
        assert_eq!(middle_first.lookup("+15550123", 0), Some(0));
        assert_eq!(middle_first.lookup("+1212", 0), Some(2));
    }

    #[test]
    fn lookup_exact_compares_whole_patterns() {
        let routes = index(&[("+1555*", 1), ("*", 1), ("hello", 1)]);
        assert_eq!(routes.lookup_exact("hello", 0), Some(2));
        assert_eq!(routes.lookup_exact("+15550100", 0), None, "prefixes are not exact");
        // A user that is literally a pattern (SIP users may contain `*`) names that pattern.
        assert_eq!(routes.lookup_exact("+1555*", 0), Some(0));
        assert_eq!(routes.lookup_exact("*", 0), Some(1));
        assert_eq!(routes.lookup("*", 0), Some(1));
    }

    #[test]
    fn canaries_split_by_weight_within_their_pattern() {
        // `hello` at positions 0 and 2 (90/10), with another pattern between them.
        let routes = index(&[("hello", 90), ("+1555*", 100), ("hello", 10), ("*", 100)]);
        let mut counts = [0u32; 4];
        for roll in 0..1000 {
            counts[routes.lookup("hello", roll).unwrap()] += 1;
            assert_eq!(routes.pick("hello", roll), routes.lookup("hello", roll));
            assert_eq!(routes.lookup_exact("hello", roll), routes.lookup("hello", roll));
        }
        assert_eq!(counts, [900, 0, 100, 0]);
        // A zero-weight target never gets a call; all zero: the first.
        let zero = index(&[("a", 0), ("a", 5), ("a", 5), ("b", 0), ("b", 0)]);
        assert!((0..1000).all(|roll| zero.pick("a", roll) != Some(0)));
        assert!((0..1000).all(|roll| zero.pick("b", roll) == Some(3)));
        assert_eq!(zero.pick("c", 0), None);
    }

    /// Deterministic test cases from the shared SplitMix64.
    struct Rng(crate::rng::SplitMix64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0.next_u64()
        }

        fn below(&mut self, n: u64) -> u64 {
            self.0.below(n)
        }

        /// A short user over a small alphabet, so patterns and users collide often.
        fn user(&mut self) -> String {
            let len = self.below(7);
            let mut s = String::from(if self.below(4) == 0 { "" } else { "+1" });
            for _ in 0..len {
                s.push(b"0123*"[self.below(5) as usize] as char);
            }
            s
        }
    }

    #[test]
    fn the_index_agrees_with_a_linear_scan() {
        let mut rng = Rng(crate::rng::SplitMix64(0x766f_7869_6465));
        for _ in 0..10 {
            let n = 1 + rng.below(3000) as usize;
            let mut routes: Vec<(String, u32)> = Vec::with_capacity(n);
            while routes.len() < n {
                let pattern = match rng.below(10) {
                    0 if rng.below(20) == 0 => "*".to_owned(),
                    0..=3 => rng.user() + "*",
                    // A canary: another target on a pattern already routed.
                    4 if !routes.is_empty() => {
                        routes[rng.below(routes.len() as u64) as usize].0.clone()
                    }
                    _ => rng.user(),
                };
                let weight = [0, 1, 10, 90, 100, u32::MAX][rng.below(6) as usize];
                routes.push((pattern, weight));
            }
            let index = RouteIndex::new(routes.iter().map(|(p, w)| (p.as_str(), *w)));
            assert_eq!(index.len(), n);
            for _ in 0..3000 {
                let user = if rng.below(4) == 0 {
                    routes[rng.below(n as u64) as usize].0.clone()
                } else {
                    rng.user()
                };
                let roll = rng.next() as u32;
                assert_eq!(
                    index.lookup(&user, roll),
                    naive_lookup(&routes, &user, roll),
                    "lookup {user:?}"
                );
                assert_eq!(
                    index.lookup_exact(&user, roll),
                    naive_pick(&routes, &user, roll),
                    "lookup_exact {user:?}"
                );
            }
        }
    }
}
