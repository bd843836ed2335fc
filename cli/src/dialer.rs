//! `vox dialer simulate`: a campaign's pacing in virtual time (runtime's `dialer::sim`), the
//! same host code and strategy component as a live campaign.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use voxide_runtime::builder::{self, BuildOptions};
use voxide_runtime::dialer::campaign::sample_strategy;
use voxide_runtime::dialer::pacer::{PacerEngine, PacerLimits};
use voxide_runtime::dialer::sim::{Mode, SimConfig, SimReport, simulate_carrying, svg};
use voxide_runtime::flows::{FlowEngine, FlowEngineConfig};

#[derive(clap::Subcommand, Debug)]
pub enum DialerAction {
    /// Run a pacing strategy against simulated leads and agents, in virtual time.
    Simulate(SimulateArgs),
}

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// `preview`, `progressive`, `predictive`, `adapt` (the samples, built from source), a
    /// strategy crate directory, or a built `.wasm` component.
    pub strategy: String,
    #[arg(long, default_value_t = 20)]
    pub agents: u32,
    #[arg(long, default_value_t = 20_000)]
    pub leads: u32,
    /// Share of dials a human answers.
    #[arg(long, default_value_t = 0.3)]
    pub answer_rate: f64,
    /// Share of dials a machine answers.
    #[arg(long, default_value_t = 0.1)]
    pub machine_rate: f64,
    /// Share of humans the machine detector wrongly hangs up on (counted as abandoned).
    #[arg(long, default_value_t = 0.0)]
    pub amd_false_positive: f64,
    /// Mean talk time (log-normal): 180s, 3m.
    #[arg(long, default_value = "180s", value_parser = parse_duration)]
    pub aht: Duration,
    /// Wrap-up after each call.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub wrap: Duration,
    /// Length of a simulated day.
    #[arg(long, default_value = "8h", value_parser = parse_duration)]
    pub day: Duration,
    /// Days to simulate, each with its own seed (seed, seed + 1, …).
    #[arg(long, default_value_t = 1)]
    pub days: u32,
    /// The days are one campaign: each starts a day after the one before and the abandon
    /// ledger carries over (30 days rolling for the US, 24 h for the UK), as the law counts
    /// it. Without it every day starts with an empty ledger.
    #[arg(long)]
    pub one_campaign: bool,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Campaign abandon limit (abandoned / answered).
    #[arg(long, default_value_t = 0.03)]
    pub abandon_limit: f64,
    /// Write a chart of the (first) day's dial level and abandon rate here.
    #[arg(long, value_name = "FILE.svg")]
    pub svg: Option<PathBuf>,
}

/// `1.5`, `180s`, `3m`, `8h` → a duration (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 =
        num.trim().parse().map_err(|_| format!("{s:?} is not a duration (e.g. 180s, 3m, 8h)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?} (use ms, s, m or h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn strategy_bytes(strategy: &str) -> anyhow::Result<(Vec<u8>, Mode)> {
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("sample-strategies");
    let (path, mode) = match sample_strategy(strategy) {
        Some("preview") => (samples.join("preview"), Mode::Preview),
        Some(sample) => (samples.join(sample), Mode::Auto),
        None => (PathBuf::from(strategy), Mode::Auto),
    };
    if !path.exists() {
        anyhow::bail!(
            "unknown strategy {strategy:?}: not a sample (preview, progressive, predictive, \
             adapt), a strategy crate directory or a .wasm file"
        );
    }
    let wasm = if path.extension().is_some_and(|e| e == "wasm") {
        path
    } else {
        eprintln!("building {} ...", path.display());
        builder::build_flow(&path, &BuildOptions { target_dir: None, quiet: true })
            .with_context(|| format!("building strategy {}", path.display()))?
    };
    let bytes = std::fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
    Ok((bytes, mode))
}

pub async fn simulate_cmd(args: SimulateArgs) -> anyhow::Result<()> {
    let mut base = SimConfig {
        agents: args.agents,
        leads: args.leads,
        answer_rate: args.answer_rate,
        machine_rate: args.machine_rate,
        amd_false_positive: args.amd_false_positive,
        aht: args.aht,
        wrap: args.wrap,
        day: args.day,
        ..SimConfig::default()
    };
    base.rules.abandon_limit = args.abandon_limit;
    base.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let (bytes, mode) = strategy_bytes(&args.strategy)?;
    let flows =
        FlowEngine::new(FlowEngineConfig { max_concurrent_calls: 4, ..Default::default() })?;
    let engine = PacerEngine::new(flows.sandbox(), PacerLimits::default())?;
    let strategy = engine.load(&bytes).with_context(|| format!("loading {}", args.strategy))?;
    base.mode = mode;
    println!(
        "{} · {} agents · {} leads · answer {:.0} % · AHT {:?} · {:.1} h days{}",
        args.strategy,
        args.agents,
        args.leads,
        args.answer_rate * 100.0,
        args.aht,
        args.day.as_secs_f64() / 3600.0,
        if args.one_campaign { " · one campaign (ledger carried)" } else { "" }
    );
    let mut reports: Vec<SimReport> = Vec::new();
    let mut ledger = None;
    for day in 0..args.days.max(1) {
        let started = Instant::now();
        let mut cfg = SimConfig { seed: args.seed + u64::from(day), ..base.clone() };
        if args.one_campaign {
            let offset = std::time::Duration::from_secs(86_400 * u64::from(day));
            cfg.start = base.start.checked_add(offset).unwrap_or(base.start);
        }
        let (r, carried) = simulate_carrying(&engine, &strategy, &cfg, ledger.take()).await;
        if args.one_campaign {
            ledger = Some(carried);
        }
        if args.days > 1 {
            println!(
                "day {:2}: abandon {:4.1} %  utilisation {:4.1} %  ({:.1} s)",
                day + 1,
                r.abandon_rate() * 100.0,
                r.utilisation * 100.0,
                started.elapsed().as_secs_f64()
            );
        }
        if day == 0
            && let Some(path) = &args.svg
        {
            std::fs::write(path, svg(&r, &format!("{} — day 1", args.strategy)))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        reports.push(r);
    }
    let sum = |f: fn(&SimReport) -> u64| reports.iter().map(f).sum::<u64>();
    let (answered, abandoned) = (sum(|r| r.answered), sum(|r| r.abandoned));
    let n = reports.len() as f64;
    let within = reports.iter().filter(|r| r.abandon_rate() <= args.abandon_limit).count();
    println!("dialled: {}", sum(|r| r.dialled));
    println!("answered by a human: {answered} (machines: {})", sum(|r| r.machines));
    println!(
        "abandon rate: {:.1} %",
        if answered == 0 { 0.0 } else { abandoned as f64 / answered as f64 * 100.0 }
    );
    println!(
        "agent utilisation: {:.1} %",
        reports.iter().map(|r| r.utilisation).sum::<f64>() / n * 100.0
    );
    println!(
        "calls/hour per agent: {:.1}",
        reports.iter().map(|r| r.calls_per_agent_hour).sum::<f64>() / n
    );
    println!(
        "days within the {:.1} % limit: {within} of {}",
        args.abandon_limit * 100.0,
        reports.len()
    );
    let mut clamped: Vec<(&str, u64)> = Vec::new();
    for r in &reports {
        for (rule, n) in &r.clamped {
            match clamped.iter_mut().find(|(k, _)| k == rule) {
                Some((_, total)) => *total += n,
                None => clamped.push((rule, *n)),
            }
        }
    }
    if !clamped.is_empty() {
        clamped.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        let list: Vec<String> = clamped.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!("ticks cut by compliance: {}", list.join(", "));
    }
    let faults = sum(|r| r.faults);
    if faults > 0 {
        println!("strategy faults (progressive rule used): {faults}");
    }
    if let Some(path) = &args.svg {
        println!("chart: {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("180s"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("8h"), Ok(Duration::from_secs(8 * 3600)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("3 fortnights").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
