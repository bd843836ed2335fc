//! Route lookup benchmark: `cargo bench -p voxide-runtime --bench routes`.
//!
//! Builds 10,000 routes in the order `vox serve`'s loader produces (exact numbers, then
//! prefixes longest first, then `*`): 9,000 exact E.164 numbers, 994 prefixes of 2–8
//! characters, 5 patterns canaried over 2 targets, and the catch-all. Then times lookups of
//! a mix of users one by one — exact hits, prefix hits, and misses that fall through to `*` —
//! through the index (`RouteIndex`, what `Router::lookup` uses) and through the linear scan
//! the router did before, and prints count, p50, p99, p99.9 and max in µs.
//!
//! The index is measured directly with `(pattern, weight)` pairs: a `Route` needs a compiled
//! flow, and `Router::lookup` is this lookup plus a random roll and a slice access.
//!
//! Environment: `BENCH_LOOKUPS` (default 200000) sets the number of timed lookups.

use std::collections::HashSet;
use std::hint::black_box;
use std::time::Instant;

use voxide_runtime::rng::SplitMix64;
use voxide_runtime::routing::{RouteIndex, weighted_index};

/// Deterministic routes and users, run to run, from the runtime's SplitMix64.
struct Rng(SplitMix64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0.below(n as u64) as usize
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b'0' + self.below(10) as u8)).collect()
    }
}

const EXACT: usize = 9_000;
const PREFIXES: usize = 994;
const CANARIES: usize = 5;

/// Country codes the routes use; users starting `+9` match no prefix (they reach `*`).
const COUNTRIES: [&str; 8] = ["+1", "+33", "+44", "+49", "+61", "+7", "+81", "+86"];

fn routes(rng: &mut Rng) -> Vec<(String, u32)> {
    let mut seen = HashSet::new();
    let mut exact = Vec::new();
    while exact.len() < EXACT {
        let number = format!("{}{}", COUNTRIES[rng.below(COUNTRIES.len())], rng.digits(9));
        if seen.insert(number.clone()) {
            exact.push(number);
        }
    }
    let mut prefixes = Vec::new();
    while prefixes.len() < PREFIXES {
        let country = COUNTRIES[rng.below(COUNTRIES.len())];
        let len = rng.below(6);
        let prefix = format!("{country}{}*", rng.digits(len));
        if seen.insert(prefix.clone()) {
            prefixes.push(prefix);
        }
    }
    // As RouteLoader::build orders them (same priority): exact, then the longer prefix.
    prefixes.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let mut routes: Vec<(String, u32)> = Vec::new();
    for (i, number) in exact.iter().enumerate() {
        routes.push((number.clone(), 90));
        if i < 3 {
            routes.push((number.clone(), 10)); // a canary on an exact number
        }
    }
    for (i, prefix) in prefixes.iter().enumerate() {
        routes.push((prefix.clone(), 95));
        if i % 500 == 0 {
            routes.push((prefix.clone(), 5)); // a canary on a prefix (2 of them)
        }
    }
    routes.push(("*".into(), 100));
    assert_eq!(routes.len(), EXACT + CANARIES + PREFIXES + 1);
    routes
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exact,
    Prefix,
    Miss,
}

fn users(rng: &mut Rng, routes: &[(String, u32)], n: usize) -> Vec<(Kind, String, u32)> {
    let exact: Vec<&str> =
        routes.iter().map(|r| r.0.as_str()).filter(|p| !p.ends_with('*')).collect();
    let prefixes: Vec<&str> =
        routes.iter().filter_map(|r| r.0.strip_suffix('*')).filter(|p| !p.is_empty()).collect();
    (0..n)
        .map(|_| {
            let (kind, user) = match rng.below(3) {
                0 => (Kind::Exact, exact[rng.below(exact.len())].to_owned()),
                1 => {
                    let prefix = prefixes[rng.below(prefixes.len())];
                    let rest = 12usize.saturating_sub(prefix.len()).max(1);
                    (Kind::Prefix, format!("{prefix}{}", rng.digits(rest)))
                }
                _ => (Kind::Miss, format!("+9{}", rng.digits(10))),
            };
            (kind, user, rng.0.next_u64() as u32)
        })
        .collect()
}

/// The router before the index: the first matching route, then its pattern's routes
/// collected and picked by weight.
fn linear_lookup(routes: &[(String, u32)], user: &str, roll: u32) -> Option<usize> {
    let (first, _) = routes.iter().find(|(pattern, _)| match pattern.strip_suffix('*') {
        Some(prefix) => user.starts_with(prefix),
        None => pattern == user,
    })?;
    let candidates: Vec<usize> = (0..routes.len()).filter(|i| routes[*i].0 == *first).collect();
    let weights: Vec<u32> = candidates.iter().map(|i| routes[*i].1).collect();
    candidates.get(weighted_index(&weights, roll)?).copied()
}

/// Each lookup timed on its own, in nanoseconds, sorted; and what each returned.
fn time(
    users: &[(Kind, String, u32)],
    mut lookup: impl FnMut(&str, u32) -> Option<usize>,
) -> (Vec<(Kind, u64)>, Vec<Option<usize>>) {
    let mut samples = Vec::with_capacity(users.len());
    let mut found = Vec::with_capacity(users.len());
    for (kind, user, roll) in users {
        let start = Instant::now();
        let hit = black_box(lookup(black_box(user), *roll));
        samples.push((*kind, start.elapsed().as_nanos() as u64));
        found.push(hit);
    }
    (samples, found)
}

struct Stats {
    count: usize,
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

fn stats(samples: &[(Kind, u64)], kind: Option<Kind>) -> Stats {
    let mut ns: Vec<u64> =
        samples.iter().filter(|(k, _)| kind.is_none_or(|want| *k == want)).map(|s| s.1).collect();
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() as f64 * q) as usize).min(ns.len() - 1)] as f64 / 1000.0;
    Stats {
        count: ns.len(),
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        max: ns.last().copied().unwrap_or(0) as f64 / 1000.0,
    }
}

fn row(name: &str, s: &Stats) {
    println!(
        "  {name:<22} {:>8} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
        s.count, s.p50, s.p99, s.p999, s.max
    );
}

fn main() {
    let lookups: usize =
        std::env::var("BENCH_LOOKUPS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split_once(':').map(|(_, m)| m.trim().to_owned()).unwrap_or_default())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    println!("machine: {cpus} CPUs ({model}); shared and noisy (other builds may run), so tails");
    println!("         are indicative; each lookup is timed alone (Instant overhead included)\n");

    let mut rng = Rng(SplitMix64(0x0076_6f78_6964_6521));
    let routes = routes(&mut rng);
    let users = users(&mut rng, &routes, lookups);

    let built = Instant::now();
    let index = RouteIndex::new(routes.iter().map(|(p, w)| (p.as_str(), *w)));
    let build = built.elapsed();
    println!(
        "{} routes ({EXACT} exact, {PREFIXES} prefixes, {CANARIES} canaried patterns, `*`); \
         index built in {:.2} ms: {index:?}",
        routes.len(),
        build.as_secs_f64() * 1e3
    );

    // Warm caches and branch predictors, then measure.
    for (_, user, roll) in users.iter().take(20_000) {
        black_box(index.lookup(user, *roll));
    }
    let (indexed, by_index) = time(&users, |user, roll| index.lookup(user, roll));
    let (linear, by_scan) = time(&users, |user, roll| linear_lookup(&routes, user, roll));
    let (empty, _) = time(&users, |_, _| None);

    let wrong = by_index.iter().zip(&by_scan).filter(|(a, b)| a != b).count();
    assert_eq!(wrong, 0, "the index and the linear scan disagree on {wrong} lookups");
    let to_catch_all = by_index.iter().filter(|p| **p == Some(routes.len() - 1)).count();
    println!(
        "{lookups} lookups of a mix of users; both agree on every one ({to_catch_all} reach `*`)\n"
    );

    println!(
        "  {:<22} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "µs", "count", "p50", "p99", "p99.9", "max"
    );
    for (name, samples) in [("index", &indexed), ("linear scan", &linear)] {
        row(name, &stats(samples, None));
        for (kind, label) in
            [(Kind::Exact, "exact hit"), (Kind::Prefix, "prefix hit"), (Kind::Miss, "miss → `*`")]
        {
            row(&format!("  {label}"), &stats(samples, Some(kind)));
        }
    }
    row("timer alone", &stats(&empty, None));

    let (i, l) = (stats(&indexed, None), stats(&linear, None));
    println!(
        "\nlinear / index: p50 {:.0}×, p99 {:.0}×; index p99 {:.3} µs against a 50 µs target: {}",
        l.p50 / i.p50,
        l.p99 / i.p99,
        i.p99,
        if i.p99 <= 50.0 { "met" } else { "MISSED" }
    );
}
