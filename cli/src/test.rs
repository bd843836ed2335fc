//! `vox test`: build each flow, run its scenarios against the simulated caller, print
//! transcripts and a `N passed, M failed` summary (or one JSON document with `--json`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde_json::json;
use voxide_runtime::builder::{self, BuildOptions};
use voxide_runtime::flows::LoadSource;
use voxide_runtime::sim::{self, Scenario, ScenarioReport};

#[derive(Debug)]
pub struct Options {
    pub json: bool,
    pub quiet: bool,
    pub filter: Option<String>,
    pub scenarios: Option<PathBuf>,
}

/// One scenario file's result: a report, or why it could not run.
enum Ran {
    Report { file: PathBuf, report: Box<ScenarioReport>, real_ms: f64 },
    Broken { file: PathBuf, error: String },
}

/// Returns whether every scenario of every flow passed.
pub async fn run(paths: &[PathBuf], opts: &Options) -> anyhow::Result<bool> {
    let engine = crate::flow_engine()?;
    let (mut passed, mut failed) = (0usize, 0usize);
    let mut json_flows = Vec::new();
    for dir in paths {
        let (digest, results) = match test_flow(&engine, dir, opts).await {
            Ok(r) => r,
            Err(e) => {
                // A flow that does not build or load fails as a whole; other flows still run.
                failed += 1;
                if opts.json {
                    json_flows.push(json!({ "path": dir, "error": format!("{e:#}") }));
                } else {
                    println!("FAIL  {}: {e:#}", dir.display());
                }
                continue;
            }
        };
        let mut json_scenarios = Vec::new();
        for ran in &results {
            match ran {
                Ran::Report { report, .. } if report.passed => passed += 1,
                _ => failed += 1,
            }
            if opts.json {
                json_scenarios.push(match ran {
                    Ran::Report { file, report, real_ms } => {
                        json!({ "file": file, "real_ms": real_ms, "report": report })
                    }
                    Ran::Broken { file, error } => {
                        json!({ "file": file, "passed": false, "error": error })
                    }
                });
            } else {
                print_result(ran, opts.quiet);
            }
        }
        if opts.json {
            json_flows.push(json!({ "path": dir, "digest": digest, "scenarios": json_scenarios }));
        }
    }
    if opts.json {
        let doc = json!({ "flows": json_flows, "passed": passed, "failed": failed });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!();
        println!("{passed} passed, {failed} failed");
    }
    Ok(failed == 0)
}

async fn test_flow(
    engine: &voxide_runtime::flows::FlowEngine,
    dir: &Path,
    opts: &Options,
) -> anyhow::Result<(String, Vec<Ran>)> {
    let tests = opts.scenarios.clone().unwrap_or_else(|| dir.join("tests"));
    if !tests.is_dir() {
        anyhow::bail!(
            "no scenarios: {} does not exist; add tests/*.toml (format: docs/scenarios.md)",
            tests.display()
        );
    }
    let scenarios = Scenario::load_dir(&tests)?;
    if scenarios.is_empty() {
        anyhow::bail!("no scenarios in {}; add tests/*.toml", tests.display());
    }
    if !opts.json {
        eprintln!("building {} ...", dir.display());
    }
    let manifest = std::sync::Arc::new(voxide_runtime::manifest::Manifest::load(dir)?);
    let build = BuildOptions { quiet: opts.json, ..BuildOptions::default() };
    let wasm = builder::build_flow(dir, &build)?;
    let bytes = std::fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
    let started = Instant::now();
    let (flow, source) =
        engine.load_with_source(&bytes).with_context(|| format!("loading {}", wasm.display()))?;
    if !opts.json {
        let how = match source {
            LoadSource::Compiled => "compiled",
            LoadSource::DiskCache => "loaded from cache",
            LoadSource::Memory => "already loaded",
        };
        println!(
            "{}: {} KiB component {}, {how} in {:.0} ms, {} scenario(s)",
            dir.display(),
            bytes.len() / 1024,
            short_digest(flow.digest()),
            started.elapsed().as_secs_f64() * 1000.0,
            scenarios.len()
        );
    }
    let mut results = Vec::new();
    for (seq, (file, parsed)) in scenarios.into_iter().enumerate() {
        let scenario = match parsed {
            Ok(s) => s,
            Err(e) => {
                results.push(Ran::Broken { file, error: e.to_string() });
                continue;
            }
        };
        if let Some(f) = &opts.filter {
            let name =
                file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if !name.contains(f.as_str()) && !scenario.name.contains(f.as_str()) {
                continue;
            }
        }
        let started = Instant::now();
        let report =
            sim::run_scenario_with(engine, &flow, &manifest, &scenario, seq as u32 + 1).await;
        let real_ms = started.elapsed().as_secs_f64() * 1000.0;
        results.push(Ran::Report { file, report: Box::new(report), real_ms });
    }
    if results.is_empty() {
        anyhow::bail!("no scenario in {} matches --filter {:?}", tests.display(), opts.filter);
    }
    Ok((flow.digest().to_owned(), results))
}

fn short_digest(d: &str) -> &str {
    &d[..d.len().min("sha256:".len() + 12)]
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn print_result(ran: &Ran, quiet: bool) {
    match ran {
        Ran::Broken { file, error } => {
            println!("\nFAIL  {}: scenario file is invalid", file_name(file));
            println!("      {error}");
        }
        Ran::Report { file, report, real_ms } => {
            let status = if report.passed { "PASS" } else { "FAIL" };
            println!(
                "\n{status}  {}  {}  (virtual {:.1} s in {real_ms:.1} ms)",
                file_name(file),
                report.name,
                report.virtual_ms as f64 / 1000.0
            );
            match &report.failure {
                None if quiet => {}
                None => {
                    for entry in &report.transcript {
                        println!("      {entry}");
                    }
                }
                Some(m) => {
                    println!("      transcript up to the mismatch:");
                    for entry in &report.transcript[..m.matched_until] {
                        println!("        {entry}");
                    }
                    println!("      expectation #{} not met:", m.expectation);
                    println!("        expected: {}", m.expected);
                    println!("        but:      {}", m.reason);
                    let rest = &report.transcript[m.matched_until..];
                    if !rest.is_empty() {
                        println!("      what happened after that point:");
                        for entry in rest {
                            println!("        {entry}");
                        }
                    }
                }
            }
        }
    }
}
