//! `vox serve`: answer SIP calls with flows.
//!
//! Reads routes from a config file (`--config`, else `./voxide.toml`, else built-in routes to
//! the sample flows of this checkout), builds flow directories as needed, listens for SIP on
//! UDP and TCP, and runs the matching flow for every inbound INVITE.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use voxide_api::ApiState;
use voxide_runtime::node::{Node, NodeConfig, Samples};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config file (default: ./voxide.toml if present, else routes to the sample flows).
    #[arg(long)]
    config: Option<PathBuf>,
    /// SIP listen address for UDP and TCP (overrides the config).
    #[arg(long, value_name = "ADDR")]
    sip: Option<SocketAddr>,
    /// Address put in Contact, Via and SDP (default: the listen IP, or 127.0.0.1 if unspecified).
    #[arg(long, value_name = "IP")]
    advertise: Option<IpAddr>,
    /// Where compiled flows are cached (default: ./voxide-data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// On SIGINT/SIGTERM, let calls in progress finish for this long before hanging them up
    /// (new calls get 503 meanwhile). Default 30.
    #[arg(long, value_name = "SECS")]
    drain_timeout: Option<u64>,
    /// The control API (`/api/v1`) and `GET /healthz`, `GET /metrics` on this address
    /// (default 0.0.0.0:8080; `off` to serve no HTTP).
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// The store: `sqlite://PATH` (default `<data-dir>/voxide.db`) or `postgres://…`.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

/// The sample flows deployed (and routed by their names) on the first start of a store
/// when no config file is given.
const SAMPLES: [&str; 6] =
    ["hello", "ivr-menu", "voicemail", "conference", "agent", "receptionist"];

fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("sample-flows")
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (mut config, base) = match &args.config {
        Some(path) => {
            (NodeConfig::read(path)?, path.parent().map(Path::to_owned).unwrap_or_default())
        }
        None if Path::new("voxide.toml").is_file() => {
            (NodeConfig::read(Path::new("voxide.toml"))?, PathBuf::from("."))
        }
        None => (NodeConfig::default(), PathBuf::from(".")),
    };
    // Without a config file, the sample flows are deployed into a fresh store.
    let deploy_samples = args.config.is_none() && !Path::new("voxide.toml").is_file();
    // Flags override the file.
    if let Some(sip) = args.sip {
        config.sip.listen = sip;
    }
    if let Some(ip) = args.advertise {
        config.sip.advertise = Some(ip);
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = Some(dir);
    }
    if let Some(secs) = args.drain_timeout {
        config.drain_timeout_secs = Some(secs);
    }
    if let Some(url) = args.database_url {
        config.database_url = Some(url);
    }
    let http_spec = args.http.or(config.http.clone()).unwrap_or_else(|| "0.0.0.0:8080".into());
    let strategies = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("sample-strategies");
    let mut builder =
        Node::builder(config, base).webhook_retries(retry_policy()?).strategies(strategies);
    if deploy_samples {
        builder = builder.samples(Samples {
            dir: samples_dir(),
            names: SAMPLES.iter().map(|s| (*s).to_owned()).collect(),
        });
    }
    let node = builder.start().await?;
    print_started(&node);

    let http = if http_spec == "off" {
        None
    } else {
        let addr: SocketAddr = http_spec
            .parse()
            .with_context(|| format!("--http {http_spec:?}: expected ADDR:PORT or off"))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding HTTP {addr} (choose another with --http ADDR)"))?;
        println!("HTTP listening on {} (control API under /api/v1)", listener.local_addr()?);
        Some(listener)
    };
    let (min, max) = node.started().rtp_ports;
    println!("RTP ports {min}-{max}, recordings in {}", node.recordings_dir().display());
    if let Some(listener) = http {
        let app = voxide_api::router(ApiState::for_node(&node))
            .merge(crate::http::routes(node.metrics()));
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("HTTP server stopped: {e}");
            }
        });
    }
    node.run_until(shutdown_signal()).await
}

/// What the start did, for the operator (tests read these lines too).
fn print_started(node: &Node) {
    let started = node.started();
    for warning in &started.warnings {
        eprintln!("warning: {warning}");
    }
    println!("store {}", started.store);
    if let Some(key) = &started.bootstrapped {
        println!(
            "admin API key for tenant {:?} (shown once; also in {}):\n  {}",
            key.tenant.name,
            key.file.display(),
            key.secret
        );
    }
    for (name, version, digest) in &started.deployed {
        println!(
            "deployed {name} v{version} ({}) as {name}@live, routed from {name:?}",
            &digest[..19]
        );
    }
    if let Some(key) = &started.config_tenant_created {
        println!(
            "created tenant {:?} for the config file's routes; its admin API key (shown once; \
             also in {}):\n  {}",
            key.tenant.name,
            key.file.display(),
            key.secret
        );
    }
    let router = node.router();
    for r in router.routes() {
        println!(
            "route {:<12} -> {} ({}, weight {})",
            r.pattern,
            r.label,
            &r.flow.digest()[..19],
            r.weight
        );
    }
    if router.routes().is_empty() {
        println!("no routes yet: add them with the API (POST /api/v1/routes) or `vox routes add`");
    }
    if let Some((users, realm)) = &started.registrar {
        println!("registrar: {users} user(s), realm {realm:?}");
    }
    if let Some(a) = node.udp_addr() {
        println!("SIP listening on udp {a}");
    }
    if let Some(a) = node.tcp_addr() {
        println!("SIP listening on tcp {a}");
    }
}

/// Webhook retries: the first after `VOX_WEBHOOK_RETRY_BASE_MS` (default 1000), doubling up
/// to `VOX_WEBHOOK_RETRY_MAX_MS` (default 10 min), 12 attempts; each attempt may take
/// `VOX_WEBHOOK_TIMEOUT_MS` (default 10 s).
fn retry_policy() -> anyhow::Result<voxide_api::RetryPolicy> {
    let mut policy = voxide_api::RetryPolicy::default();
    for (name, field) in [
        ("VOX_WEBHOOK_RETRY_BASE_MS", &mut policy.base),
        ("VOX_WEBHOOK_RETRY_MAX_MS", &mut policy.max_delay),
        ("VOX_WEBHOOK_TIMEOUT_MS", &mut policy.timeout),
    ] {
        if let Ok(ms) = std::env::var(name) {
            let ms: u64 = ms
                .parse()
                .with_context(|| format!("{name}={ms:?}: not a number of milliseconds"))?;
            *field = Duration::from_millis(ms.max(1));
        }
    }
    Ok(policy)
}

/// SIGINT (Ctrl-C) or SIGTERM (service managers).
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
