//! `vox`: the Voxide command line — scaffold, build and test flows.
//!
//! `vox deploy` and the call-control commands arrive with the control-plane work.

mod http;
mod new;
mod serve;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use voxide_runtime::builder::{self, BuildOptions};
use voxide_runtime::flows::{FlowEngine, FlowEngineConfig, FlowLimits};

#[derive(Parser, Debug)]
#[command(name = "vox", version, about = "Build, test and run Voxide call flows")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Answer SIP calls (UDP and TCP) with the flows routed in the config.
    Serve(serve::Args),
    /// Create a new flow crate from a template.
    New {
        /// Crate name (lowercase letters, digits, '-' or '_'); also the directory name.
        name: String,
        /// Which sample to start from.
        #[arg(long, value_enum, default_value_t = new::Template::Hello)]
        template: new::Template,
        /// Directory to create (default: ./NAME).
        #[arg(long)]
        path: Option<PathBuf>,
    },
    /// Build a flow crate into a component and check that it loads.
    Build {
        /// Flow crate directory.
        #[arg(default_value = ".")]
        path: PathBuf,
    },
    /// Build flows and run their scenarios (PATH/tests/*.toml) against a simulated caller.
    Test {
        /// Flow crate directories.
        #[arg(default_value = ".")]
        paths: Vec<PathBuf>,
        /// Print one JSON document instead of transcripts.
        #[arg(long)]
        json: bool,
        /// Only print PASS/FAIL lines (transcripts of failures are still shown).
        #[arg(long, short)]
        quiet: bool,
        /// Only run scenarios whose file name or title contains this.
        #[arg(long)]
        filter: Option<String>,
        /// Take scenarios from this directory instead of PATH/tests.
        #[arg(long, value_name = "DIR")]
        scenarios: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VOX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(serve::run(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::New { name, template, path } => {
            let dir = path.unwrap_or_else(|| PathBuf::from(&name));
            new::scaffold(&name, template, &dir)?;
            println!("created flow {name:?} in {} from the {template} template", dir.display());
            println!("next: cd {} && vox test", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Build { path } => {
            let wasm = builder::build_flow(&path, &BuildOptions::default())?;
            let bytes =
                std::fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
            let engine = flow_engine()?;
            let (flow, _) = engine
                .load_with_source(&bytes)
                .with_context(|| format!("loading {}", wasm.display()))?;
            println!("{}", wasm.display());
            println!("{} KiB, {}", bytes.len() / 1024, flow.digest());
            Ok(ExitCode::SUCCESS)
        }
        Command::Test { paths, json, quiet, filter, scenarios } => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let opts = test::Options { json, quiet, filter, scenarios };
            let all_passed = runtime.block_on(test::run(&paths, &opts))?;
            Ok(if all_passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

/// The engine `vox` uses locally: compiled flows cached under the user's cache directory.
fn flow_engine() -> anyhow::Result<FlowEngine> {
    let cache_dir = std::env::var_os("VOXIDE_CACHE_DIR").map(PathBuf::from).or_else(|| {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|c| c.join("voxide").join("flows"))
    });
    // Simulated calls finish in milliseconds of real time; a flow that blocks on a WASI
    // clock must not hang the test run for the production limit of hours.
    let limits = FlowLimits { max_call_duration: Duration::from_secs(60), ..FlowLimits::default() };
    FlowEngine::new(FlowEngineConfig { cache_dir, max_concurrent_calls: 64, limits })
}
