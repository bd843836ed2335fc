//! `vox`: the Voxide command line — scaffold, build and test flows, serve them, and drive a
//! server's control API (deploy, aliases, routes).

mod campaigns;
mod dialer;
mod http;
mod kb;
mod live;
mod new;
mod remote;
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
    /// Check a server URL and API key, and save them for the commands below.
    Login {
        #[arg(long, value_name = "URL")]
        server: String,
        #[arg(long, value_name = "KEY")]
        key: String,
    },
    /// Build a flow, upload it as a new version (with its flow.toml), optionally move an alias.
    Deploy {
        /// Flow crate directory.
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Point this alias (e.g. live) at the new version.
        #[arg(long)]
        alias: Option<String>,
        /// Flow name on the server (default: the directory's name).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// List the flows on the server, their versions and aliases.
    Flows {
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// List a flow's versions.
    Versions {
        name: String,
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// Point a flow's alias at a version: `vox alias ivr-menu live 3`.
    Alias {
        name: String,
        alias: String,
        /// Version number (3 or v3).
        version: String,
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// Route called numbers to flows: `vox routes add +15550100 ivr-menu@live`.
    Routes {
        #[command(subcommand)]
        action: RoutesAction,
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// Calls in progress: list, show, hang up, redirect, play or say into one.
    Calls {
        #[command(subcommand)]
        action: CallsAction,
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// The outbound dialer: `vox dialer simulate predictive --agents 20`.
    Dialer {
        #[command(subcommand)]
        action: dialer::DialerAction,
    },
    /// Place an outbound call that runs a flow when answered: `vox call sip:bob@host --flow hello`.
    Call {
        /// A registered user or a SIP URI.
        to: String,
        /// The flow: NAME (its `live` alias), NAME@ALIAS or NAME@VERSION.
        #[arg(long)]
        flow: String,
        /// Caller ID presented.
        #[arg(long)]
        from: Option<String>,
        /// A call variable for the flow, KEY=VALUE (repeatable).
        #[arg(long = "var", value_name = "KEY=VALUE")]
        vars: Vec<String>,
        /// Seconds to ring before giving up.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// Records of ended calls (CDRs), newest first.
    Cdrs {
        /// Started since: Unix ms or an age (15m, 2h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Started before: Unix ms or an age.
        #[arg(long)]
        until: Option<String>,
        /// The caller or the called number.
        #[arg(long)]
        number: Option<String>,
        #[arg(long)]
        flow: Option<String>,
        /// completed, hung-up, trapped, deadline-exceeded, busy, no-answer, …
        #[arg(long)]
        outcome: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// Call events: the stored ones, or (--follow) a live stream.
    Events {
        /// Keep streaming new events (reconnects and resumes where it left off).
        #[arg(long, short)]
        follow: bool,
        /// Start after this event seq (default: the oldest kept; with --follow, now).
        #[arg(long)]
        after: Option<i64>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// Outbound campaigns: create, ls, show [--follow], start, pause, stop, attempts.
    Campaigns {
        #[command(subcommand)]
        action: campaigns::CampaignsAction,
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// A campaign's leads: import FILE.csv --campaign NAME, ls.
    Leads {
        #[command(subcommand)]
        action: campaigns::LeadsAction,
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// The knowledge base flows answer from: add, ls, search, rm.
    Kb {
        #[command(subcommand)]
        action: kb::KbAction,
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// Do-not-call lists: add, import, ls, rm.
    Dnc {
        #[command(subcommand)]
        action: campaigns::DncAction,
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// Webhooks that receive the tenant's events (signed, retried).
    Webhooks {
        #[command(subcommand)]
        action: WebhooksAction,
        #[command(flatten)]
        remote: remote::Remote,
    },
}

#[derive(Subcommand, Debug)]
enum CallsAction {
    /// List calls in progress.
    Ls,
    /// Show one call: state, legs, flow version, timings.
    Show { id: String },
    /// End a call.
    Hangup { id: String },
    /// Run another flow on the call: NAME, NAME@ALIAS or NAME@VERSION.
    Redirect {
        id: String,
        flow: String,
        #[arg(long = "var", value_name = "KEY=VALUE")]
        vars: Vec<String>,
    },
    /// Play a prompt (or an allowed URL) into the call.
    Play { id: String, media: String },
    /// Speak text into the call.
    Say {
        id: String,
        text: String,
        #[arg(long)]
        voice: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum WebhooksAction {
    /// Register URL for the tenant's events; prints the signing secret once.
    Add {
        url: String,
        /// Use this secret (at least 16 bytes) instead of a generated one.
        #[arg(long)]
        secret: Option<String>,
    },
    /// List webhooks.
    Ls,
    /// Remove a webhook.
    Rm { id: String },
    /// Delivery status of a webhook's events.
    Deliveries {
        id: String,
        /// pending, delivered or failed.
        #[arg(long)]
        status: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum RoutesAction {
    /// Add a route: PATTERN (a number, user, prefix* or *) to TARGET... (FLOW@ALIAS or
    /// FLOW@VERSION, each optionally =WEIGHT for a canary split).
    Add {
        pattern: String,
        #[arg(required = true)]
        targets: Vec<String>,
        /// Among prefix routes, higher first.
        #[arg(long, default_value_t = 0)]
        priority: i64,
        /// A route variable for the flow, KEY=VALUE (repeatable).
        #[arg(long = "var", value_name = "KEY=VALUE")]
        vars: Vec<String>,
    },
    /// List routes.
    Ls,
    /// Remove a route by id.
    Rm { id: String },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VOX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: logs redirected to files stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
        Command::Dialer { action: dialer::DialerAction::Simulate(args) } => {
            block_on(dialer::simulate_cmd(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Login { server, key } => {
            block_on(remote::login(&server, &key))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Deploy { path, alias, name, remote } => {
            let client = remote.client()?;
            block_on(remote::deploy(&client, &path, name, alias))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Flows { remote } => {
            block_on(remote::flows(&remote.client()?))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Versions { name, remote } => {
            block_on(remote::versions(&remote.client()?, &name))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Alias { name, alias, version, remote } => {
            let number = version
                .trim_start_matches('v')
                .parse::<i64>()
                .with_context(|| format!("version {version:?}: expected a number like 3"))?;
            block_on(remote::alias(&remote.client()?, &name, &alias, number))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Routes { action, remote } => {
            let client = remote.client()?;
            block_on(async {
                match action {
                    RoutesAction::Add { pattern, targets, priority, vars } => {
                        remote::routes_add(&client, &pattern, &targets, priority, &vars).await
                    }
                    RoutesAction::Ls => remote::routes_ls(&client).await,
                    RoutesAction::Rm { id } => remote::routes_rm(&client, &id).await,
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Calls { action, remote } => {
            let client = remote.client()?;
            block_on(async {
                match action {
                    CallsAction::Ls => live::calls_ls(&client).await,
                    CallsAction::Show { id } => live::calls_show(&client, &id).await,
                    CallsAction::Hangup { id } => {
                        let done = format!("hung up {id}");
                        live::call_action(&client, &id, "hangup", serde_json::json!({}), &done)
                            .await
                    }
                    CallsAction::Redirect { id, flow, vars } => {
                        live::redirect(&client, &id, &flow, &vars).await
                    }
                    CallsAction::Play { id, media } => {
                        let body = serde_json::json!({ "media": media });
                        live::call_action(&client, &id, "play", body, "playing").await
                    }
                    CallsAction::Say { id, text, voice } => {
                        let body = serde_json::json!({ "text": text, "voice": voice });
                        live::call_action(&client, &id, "say", body, "saying").await
                    }
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Call { to, flow, from, vars, timeout, remote } => {
            let client = remote.client()?;
            block_on(live::originate(&client, &to, &flow, from.as_deref(), &vars, timeout))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cdrs { since, until, number, flow, outcome, limit, remote } => {
            let query = live::CdrQuery { since, until, number, flow, outcome, limit };
            block_on(live::cdrs(&remote.client()?, &query))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Events { follow, after, limit, remote } => {
            block_on(live::events(&remote.client()?, after, follow, limit))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Campaigns { action, remote } => {
            block_on(campaigns::campaigns(&remote.client()?, action))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Leads { action, remote } => {
            block_on(campaigns::leads(&remote.client()?, action))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Kb { action, remote } => {
            block_on(kb::kb(&remote.client()?, action))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dnc { action, remote } => {
            block_on(campaigns::dnc(&remote.client()?, action))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Webhooks { action, remote } => {
            let client = remote.client()?;
            block_on(async {
                match action {
                    WebhooksAction::Add { url, secret } => {
                        live::webhooks_add(&client, &url, secret.as_deref()).await
                    }
                    WebhooksAction::Ls => live::webhooks_ls(&client).await,
                    WebhooksAction::Rm { id } => live::webhooks_rm(&client, &id).await,
                    WebhooksAction::Deliveries { id, status } => {
                        live::deliveries(&client, &id, status.as_deref()).await
                    }
                }
            })?;
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

/// Runs a remote command on a small runtime of its own.
fn block_on<T>(future: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(future)
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
    FlowEngine::new(FlowEngineConfig {
        cache_dir,
        max_concurrent_calls: 64,
        limits,
        ..Default::default()
    })
}
