//! What a route change costs with many routes: the store is the source of truth, so every
//! change (on any node) is followed by reading the routing snapshot and resolving every
//! target. Prints the snapshot read and resolve times with N routes (default 10,000) in
//! SQLite — and in Postgres when `VOXIDE_BENCH_POSTGRES` names a server.
//!
//! `cargo bench -p voxide-store --bench routing` (`ROUTES=N`, `ROUNDS=N`).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use voxide_store::{NewRoute, NewVersion, RouteTarget, Store};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn bench(label: &str, store: Store, routes: usize, rounds: usize) {
    let tenant = store.create_tenant("bench").await.unwrap();
    for flow in ["ivr", "sales"] {
        let bytes = flow.as_bytes().repeat(100);
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        let new = NewVersion {
            digest,
            world: "voxide:flow/handler@0.1.0".into(),
            manifest: String::new(),
            bytes,
        };
        store.create_version(&tenant.id, flow, new).await.unwrap();
        store.set_alias(&tenant.id, flow, "live", 1).await.unwrap();
    }
    let started = Instant::now();
    for i in 0..routes {
        // Mostly exact numbers; every tenth a prefix; every hundredth a canary.
        let pattern = if i % 10 == 9 { format!("+1{i:06}*") } else { format!("+1555{i:07}") };
        let target = |flow: &str, weight| RouteTarget {
            flow: flow.into(),
            alias: Some("live".into()),
            version: None,
            weight,
        };
        let targets = if i % 100 == 0 {
            vec![target("ivr", 90), target("sales", 10)]
        } else {
            vec![target(if i % 2 == 0 { "ivr" } else { "sales" }, 100)]
        };
        let new = NewRoute { pattern, priority: 0, targets, vars: Default::default() };
        store.add_route(&tenant.id, new).await.unwrap();
    }
    let loading = started.elapsed();
    let mut reads = Vec::new();
    let mut resolves = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let snapshot = store.routing_snapshot().await.unwrap();
        reads.push(t.elapsed());
        let t = Instant::now();
        let mut resolved = 0;
        for r in &snapshot.routes {
            for target in &r.targets {
                snapshot.resolve(&r.tenant_id, target).unwrap();
                resolved += 1;
            }
        }
        resolves.push(t.elapsed());
        assert!(resolved >= routes);
    }
    let generation = Instant::now();
    for _ in 0..100 {
        store.routing_generation().await.unwrap();
    }
    let poll = generation.elapsed() / 100;
    reads.sort();
    resolves.sort();
    let median = |v: &[Duration]| v[v.len() / 2];
    println!(
        "{label}: {routes} routes (added in {:.1} s); snapshot read median {:.1} ms (min {:.1}, max {:.1}), \
         resolving every target {:.2} ms; the 5 s poll (routing generation) {:.3} ms",
        loading.as_secs_f64(),
        ms(median(&reads)),
        ms(reads[0]),
        ms(reads[reads.len() - 1]),
        ms(median(&resolves)),
        ms(poll),
    );
}

#[tokio::main]
async fn main() {
    let (routes, rounds) = (env("ROUTES", 10_000), env("ROUNDS", 10));
    println!(
        "machine: {} CPUs (shared, noisy); {} build",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    bench("SQLite", Store::open(&url).await.unwrap(), routes, rounds).await;
    if let Ok(admin) = std::env::var("VOXIDE_BENCH_POSTGRES") {
        let url = voxide_store::create_postgres_database(&admin, "voxide_bench").await.unwrap();
        bench("Postgres", Store::open(&url).await.unwrap(), routes, rounds).await;
    }
}
