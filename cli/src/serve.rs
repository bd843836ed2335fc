//! `vox serve`: answer SIP calls with flows.
//!
//! Reads routes from a config file (`--config`, else `./voxide.toml`, else built-in routes to
//! the sample flows of this checkout), builds flow directories as needed, listens for SIP on
//! UDP and TCP, and runs the matching flow for every inbound INVITE.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use voxide_api::ApiState;
use voxide_api::calls::VersionRoute;
use voxide_media::session::{MediaConfig, MediaEngine};
use voxide_runtime::admission::OriginateLimits;
use voxide_runtime::builder::{self, BuildOptions};
use voxide_runtime::calls::{self, MediaServices, Route, Router};
use voxide_runtime::flows::{FlowEngine, FlowEngineConfig};
use voxide_runtime::hub::CallHub;
use voxide_runtime::kv::MemoryKv;
use voxide_runtime::manifest::Manifest;
use voxide_runtime::prompts::{Espeak, Prompts, Tts};
use voxide_runtime::routing::CONFIG_TENANT;
use voxide_sip::auth::Algorithm;
use voxide_sip::registrar::{Registrar, RegistrarConfig};
use voxide_sip::shell::{Command, Listen, SipHandle, SipServer};
use voxide_sip::transaction::Timers;
use voxide_sip::ua::UaConfig;
use voxide_store::{NewRoute, Role, RouteTarget, RoutingSnapshot, Store};

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

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    sip: SipConfig,
    #[serde(default)]
    routes: Vec<RouteConfig>,
    #[serde(default)]
    media: MediaSection,
    #[serde(default)]
    originate: OriginateSection,
    data_dir: Option<PathBuf>,
    drain_timeout_secs: Option<u64>,
    /// HTTP listen address of the control API (default 0.0.0.0:8080; "off" for none).
    http: Option<String>,
    /// The store's URL (default sqlite://<data_dir>/voxide.db).
    database_url: Option<String>,
    /// Most calls running a flow at once (sandbox slots reserved up front). Default 10,000.
    max_calls: Option<u32>,
    /// A compiled flow that no route or call holds is freed this long after it was last
    /// loaded or looked up.
    keep_unused_flows_secs: Option<u64>,
    /// The store tenant (by name) that owns the config file's routes and the calls to its
    /// registered users — their CDRs, events and recordings. Default "default" (the tenant
    /// the first start creates); created, with an admin key, if missing.
    tenant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SipConfig {
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    advertise: Option<IpAddr>,
    #[serde(default = "default_true")]
    udp: bool,
    #[serde(default = "default_true")]
    tcp: bool,
    /// Digest realm of the registrar (default "voxide").
    realm: Option<String>,
    /// Users that may REGISTER (digest auth, MD5 or SHA-256). None: REGISTER gets 405.
    #[serde(default)]
    users: Vec<SipUser>,
    /// Digest algorithms offered, in order (default ["SHA-256", "MD5"]; clients that only
    /// read the first challenge, like sipp, need "MD5" first).
    digest_algorithms: Option<Vec<String>>,
}

/// A SIP account: `[[sip.users]] user = "alice" password = "…"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SipUser {
    user: String,
    password: String,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: default_listen(),
            advertise: None,
            udp: true,
            tcp: true,
            realm: None,
            users: Vec::new(),
            digest_algorithms: None,
        }
    }
}

/// `[originate]`: what each tenant may place through `POST /api/v1/calls`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OriginateSection {
    /// Outbound calls ringing or connected at once, per tenant. Default 100.
    max_calls: Option<usize>,
    /// Calls placed per second, per tenant. Default 10.
    per_second: Option<f64>,
    /// Destinations that may be called (`*` matches any run of characters). Default: any.
    allow: Option<Vec<String>>,
}

impl OriginateSection {
    fn limits(&self) -> anyhow::Result<OriginateLimits> {
        let default = OriginateLimits::default();
        let per_second = self.per_second.unwrap_or(default.per_second);
        if !(per_second.is_finite() && per_second > 0.0) {
            anyhow::bail!("[originate] per_second = {per_second}: must be more than 0");
        }
        if self.allow.as_ref().is_some_and(Vec::is_empty) {
            anyhow::bail!(
                "[originate] allow = []: leave it out to allow any destination, or set \
                 max_calls = 0 to place no calls"
            );
        }
        Ok(OriginateLimits {
            max_calls: self.max_calls.unwrap_or(default.max_calls),
            per_second,
            allow: self.allow.clone().unwrap_or(default.allow),
        })
    }
}

/// `[media]`: RTP ports, the inactivity timeout, prompt assets.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MediaSection {
    /// RTP port range, "MIN-MAX" (even ports RTP, odd RTCP). Default 10000-20000.
    #[serde(default = "default_rtp_ports")]
    rtp_ports: String,
    /// A call whose peer sends no RTP for this long is hung up. Default 60.
    #[serde(default = "default_rtp_timeout")]
    rtp_timeout_secs: u64,
    /// Where `play("name.wav")` finds WAV files (default: <data_dir>/assets).
    assets: Option<PathBuf>,
}

impl Default for MediaSection {
    fn default() -> Self {
        MediaSection {
            rtp_ports: default_rtp_ports(),
            rtp_timeout_secs: default_rtp_timeout(),
            assets: None,
        }
    }
}

fn default_rtp_ports() -> String {
    "10000-20000".into()
}
fn default_rtp_timeout() -> u64 {
    60
}

fn parse_ports(spec: &str) -> anyhow::Result<(u16, u16)> {
    let parsed = spec
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)));
    match parsed {
        Some((min, max)) if min >= 1024 && max > min + 1 => Ok((min, max)),
        _ => bail!("media.rtp_ports {spec:?}: expected \"MIN-MAX\" with 1024 <= MIN < MAX"),
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 5060))
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteConfig {
    /// Called user: exact, a prefix ending in `*`, or `*`.
    #[serde(rename = "match")]
    pattern: String,
    /// A flow crate directory (built on start) or a `.wasm` component.
    flow: PathBuf,
    /// The flow's manifest; default `flow.toml` in the flow's directory (none: no
    /// capabilities).
    #[serde(default)]
    manifest: Option<PathBuf>,
    #[serde(default)]
    vars: std::collections::BTreeMap<String, String>,
}

/// The sample flows deployed (and routed by their names) on the first start of a store
/// when no config file is given.
const SAMPLES: [&str; 5] = ["hello", "ivr-menu", "voicemail", "conference", "agent"];

fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("sample-flows")
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (mut config, base) = match &args.config {
        Some(path) => (read_config(path)?, path.parent().map(Path::to_owned).unwrap_or_default()),
        None if Path::new("voxide.toml").is_file() => {
            (read_config(Path::new("voxide.toml"))?, PathBuf::from("."))
        }
        None => (Config::default(), PathBuf::from(".")),
    };
    // Without a config file, the sample flows are deployed into a fresh store.
    let deploy_samples = args.config.is_none() && !Path::new("voxide.toml").is_file();
    if let Some(sip) = args.sip {
        config.sip.listen = sip;
    }
    let data_dir =
        args.data_dir.or(config.data_dir.take()).unwrap_or_else(|| PathBuf::from("voxide-data"));
    let engine = FlowEngine::new(FlowEngineConfig {
        cache_dir: Some(data_dir.join("flows")),
        max_concurrent_calls: config.max_calls.unwrap_or(10_000),
        keep_unused: Duration::from_secs(config.keep_unused_flows_secs.unwrap_or(300)),
        ..Default::default()
    })?;

    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let database_url = args
        .database_url
        .clone()
        .or(config.database_url.clone())
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("voxide.db").display()));
    let store = Store::open(&database_url)
        .await
        .with_context(|| format!("opening the store {}", redact(&database_url)))?;
    println!("store {}", redact(&database_url));
    if let Some((tenant, key)) = store.bootstrap().await.context("creating the first tenant")? {
        let file = data_dir.join("admin.key");
        write_secret(&file, &key.secret)?;
        println!(
            "admin API key for tenant {:?} (shown once; also in {}):\n  {}",
            tenant.name,
            file.display(),
            key.secret
        );
        if deploy_samples {
            deploy_sample_flows(&store, &engine, &tenant.id).await?;
        }
    }

    // Routes from the config file come first (the config's tenant), then the store's.
    let tenant_name = config.tenant.clone().unwrap_or_else(|| CONFIG_TENANT.into());
    let config_tenant = config_tenant(&store, &tenant_name, &data_dir).await?;
    let mut static_routes = Vec::new();
    for r in &config.routes {
        let path = if r.flow.is_absolute() { r.flow.clone() } else { base.join(&r.flow) };
        let wasm = if path.extension().is_some_and(|e| e == "wasm") {
            path.clone()
        } else {
            eprintln!("building {} ...", path.display());
            builder::build_flow(&path, &BuildOptions::default())
                .with_context(|| format!("route {:?}", r.pattern))?
        };
        let bytes = std::fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
        let flow = engine
            .load(&bytes)
            .with_context(|| format!("route {:?}: loading {}", r.pattern, wasm.display()))?;
        let manifest = match &r.manifest {
            Some(file) => {
                let file = if file.is_absolute() { file.clone() } else { base.join(file) };
                let text = std::fs::read_to_string(&file).with_context(|| {
                    format!("route {:?}: manifest {}", r.pattern, file.display())
                })?;
                Manifest::parse(&text)
                    .with_context(|| format!("route {:?}: {}", r.pattern, file.display()))?
            }
            None if path.is_dir() => {
                Manifest::load(&path).with_context(|| format!("route {:?}", r.pattern))?
            }
            None => Manifest::default(),
        };
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        static_routes.push(Route {
            pattern: r.pattern.clone(),
            label: name.clone(),
            version: None,
            name,
            tenant: config_tenant.clone(),
            flow,
            vars: r.vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            manifest: Arc::new(manifest),
            weight: 100,
        });
    }
    let mut loader = RouteLoader::new(store.clone(), engine.clone(), static_routes);
    let router = loader.build().await;
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
    let (routes_tx, routes_rx) = tokio::sync::watch::channel(Arc::new(router));
    let mut api = ApiState::new(store.clone(), engine.clone());
    // What calls report is written to the store (events, CDRs, recordings), then streamed
    // and delivered to webhooks.
    let (activity_tx, activity_rx) = tokio::sync::mpsc::unbounded_channel();
    let hub = CallHub::with_limits(activity_tx, config.originate.limits()?);
    api.hub = Some(hub.clone());
    let recorder =
        tokio::spawn(voxide_api::record_activity(store.clone(), activity_rx, api.events.clone()));
    tokio::spawn(voxide_api::deliver_webhooks(store.clone(), api.events.clone(), retry_policy()?));
    tokio::spawn(loader.follow(api.changes.subscribe(), routes_tx));

    let listen = config.sip.listen;
    let advertise_ip =
        args.advertise.or(config.sip.advertise).unwrap_or(if listen.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            listen.ip()
        });
    let listen_spec =
        Listen { udp: config.sip.udp.then_some(listen), tcp: config.sip.tcp.then_some(listen) };
    // Bind UDP first; with port 0 the TCP listener takes the same port number.
    let mut server = SipServer::bind(
        &Listen { udp: listen_spec.udp, tcp: None },
        ua_config(listen, advertise_ip),
    )
    .await
    .with_context(|| format!("binding SIP UDP {listen}"))?;
    let port = server.udp_addr().map_or(listen.port(), |a| a.port());
    if listen_spec.tcp.is_some() {
        let tcp = SocketAddr::new(listen.ip(), port);
        let both = Listen { udp: listen_spec.udp.map(|_| tcp), tcp: Some(tcp) };
        drop(server);
        server = SipServer::bind(&both, ua_config(tcp, advertise_ip))
            .await
            .with_context(|| format!("binding SIP {tcp}"))?;
    }
    if !config.sip.users.is_empty() {
        let realm = config.sip.realm.clone().unwrap_or_else(|| "voxide".into());
        println!("registrar: {} user(s), realm {realm:?}", config.sip.users.len());
        let users = config.sip.users.iter().map(|u| (u.user.clone(), u.password.clone()));
        let mut registrar_config = RegistrarConfig { realm, ..RegistrarConfig::default() };
        if let Some(names) = &config.sip.digest_algorithms {
            registrar_config.algorithms = names
                .iter()
                .map(|n| {
                    Algorithm::parse(n).with_context(|| {
                        format!("sip.digest_algorithms: unknown {n:?} (MD5, SHA-256)")
                    })
                })
                .collect::<anyhow::Result<_>>()?;
            if registrar_config.algorithms.is_empty() {
                bail!("sip.digest_algorithms is empty");
            }
        }
        server = server.with_registrar(Registrar::new(registrar_config, users, &nonce_secret()?));
    }
    if let Some(a) = server.udp_addr() {
        println!("SIP listening on udp {a}");
    }
    if let Some(a) = server.tcp_addr() {
        println!("SIP listening on tcp {a}");
    }
    let (port_min, port_max) = parse_ports(&config.media.rtp_ports)?;
    let media_config = MediaConfig {
        bind_ip: listen.ip(),
        advertised_ip: advertise_ip,
        port_min,
        port_max,
        rtp_timeout: Duration::from_secs(config.media.rtp_timeout_secs.max(1)),
    };
    let tts: Option<Arc<dyn Tts>> = match Espeak::find() {
        Some(espeak) => Some(Arc::new(espeak)),
        None => {
            eprintln!(
                "warning: espeak-ng not found: say() prompts will be silent (apt install espeak-ng)"
            );
            None
        }
    };
    let assets = config.media.assets.clone().unwrap_or_else(|| data_dir.join("assets"));
    let media = Arc::new(MediaServices::new(
        MediaEngine::new(media_config),
        Prompts::new(tts, Some(assets), Some(data_dir.join("tts"))),
        data_dir.join("recordings"),
    ));
    let http_spec =
        args.http.clone().or(config.http.clone()).unwrap_or_else(|| "0.0.0.0:8080".into());
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
    println!("RTP ports {port_min}-{port_max}, recordings in {}", media.recordings_dir.display());
    api.recordings_dir = Some(media.recordings_dir.clone());
    let (sip, events) = server.spawn();
    if let Some(listener) = http {
        let app = voxide_api::router(api).merge(crate::http::routes(
            sip.clone(),
            media.clone(),
            engine.clone(),
        ));
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("HTTP server stopped: {e}");
            }
        });
    }
    let services = calls::CallServices {
        engine,
        kv: MemoryKv::default(),
        advertised: SocketAddr::new(advertise_ip, port),
        media: Some(media),
        hub: hub.clone(),
        config_tenant,
    };
    let calls = tokio::spawn(calls::serve(services, routes_rx, sip.clone(), events));
    tokio::select! {
        _ = shutdown_signal() => {}
        r = calls => {
            r.context("call dispatcher stopped")?;
            return Ok(());
        }
    }
    let drain = Duration::from_secs(args.drain_timeout.or(config.drain_timeout_secs).unwrap_or(30));
    shutdown(&sip, drain).await;
    // The writer ends once the calls that just ended have reported their CDRs.
    hub.close();
    if tokio::time::timeout(Duration::from_secs(5), recorder).await.is_err() {
        tracing::warn!("{} call(s) still running at exit: no CDR for them", hub.len());
    }
    Ok(())
}

/// The id of the store tenant called `name` that the config file's routes and registered
/// users belong to; created (with an admin key, shown once) when the store has none.
async fn config_tenant(store: &Store, name: &str, data_dir: &Path) -> anyhow::Result<String> {
    let context = || format!("the config's tenant {name:?}");
    if let Some(tenant) = store.tenant_by_name(name).await.with_context(context)? {
        return Ok(tenant.id);
    }
    let tenant = match store.create_tenant(name).await {
        Ok(tenant) => tenant,
        // Another node created it a moment ago.
        Err(voxide_store::StoreError::Conflict(_)) => {
            store.tenant_by_name(name).await.with_context(context)?.with_context(context)?
        }
        Err(e) => return Err(e).with_context(context),
    };
    let key = store
        .create_key(&tenant.id, "admin (created for the config file's tenant)", Role::Admin)
        .await
        .with_context(context)?;
    let file = data_dir.join(format!("admin-{name}.key"));
    write_secret(&file, &key.secret)?;
    println!(
        "created tenant {name:?} for the config file's routes; its admin API key (shown once; \
         also in {}):\n  {}",
        file.display(),
        key.secret
    );
    Ok(tenant.id)
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

/// Graceful shutdown: refuse new calls (503), let calls in progress finish for up to `drain`,
/// then hang up the rest and give their BYEs a moment.
async fn shutdown(sip: &SipHandle, drain: Duration) {
    sip.send(Command::Drain).await;
    let active = sip.active_calls().await;
    println!(
        "draining: new calls get 503; waiting up to {}s for {active} call(s) in progress",
        drain.as_secs()
    );
    let deadline = tokio::time::Instant::now() + drain;
    while sip.active_calls().await > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = sip.active_calls().await;
    if left > 0 {
        println!("hanging up {left} call(s)");
        sip.send(Command::HangupAll).await;
        // BYEs go out at once; give their 200s a moment without waiting for Timer F.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("stopped");
}

/// A fresh secret for digest nonces: nonces from before a restart are re-challenged.
fn nonce_secret() -> anyhow::Result<[u8; 32]> {
    use std::io::Read;
    let mut secret = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut secret))
        .context("reading /dev/urandom for the nonce secret")?;
    Ok(secret)
}

fn ua_config(listen: SocketAddr, advertise: IpAddr) -> UaConfig {
    UaConfig {
        advertised: SocketAddr::new(advertise, listen.port()),
        timers: Timers::default(),
        product: format!("Voxide/{}", env!("CARGO_PKG_VERSION")),
    }
}

/// A database URL without its password, for printing.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Writes a secret readable by the owner only (mode 0600), replacing any old file.
fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(file, "{secret}").with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// First start without a config: build the sample flows, store each as version 1 with alias
/// `live`, and route its name to it.
async fn deploy_sample_flows(
    store: &Store,
    engine: &FlowEngine,
    tenant: &str,
) -> anyhow::Result<()> {
    for name in SAMPLES {
        let dir = samples_dir().join(name);
        eprintln!("building {} ...", dir.display());
        let wasm = builder::build_flow(&dir, &BuildOptions::default())
            .with_context(|| format!("building sample flow {name}"))?;
        let bytes = std::fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
        // No flow.toml: an empty manifest (no capabilities).
        let manifest =
            std::fs::read_to_string(dir.join(voxide_runtime::manifest::FILE)).unwrap_or_default();
        let new = voxide_api::validate(engine, bytes, manifest)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("sample flow {name}"))?;
        let (v, _) = store.create_version(tenant, name, new).await?;
        store.set_alias(tenant, name, "live", v.version).await?;
        let target = RouteTarget {
            flow: name.into(),
            alias: Some("live".into()),
            version: None,
            weight: 100,
        };
        store
            .add_route(
                tenant,
                NewRoute {
                    pattern: name.into(),
                    priority: 0,
                    targets: vec![target],
                    vars: Default::default(),
                },
            )
            .await?;
        println!(
            "deployed {name} v{} ({}) as {name}@live, routed from {name:?}",
            v.version,
            &v.digest[..19]
        );
    }
    Ok(())
}

/// Builds the SIP router from the config file's routes and the store's, and rebuilds it when
/// versions, aliases or routes change (through this node's API, or — polled — another's).
struct RouteLoader {
    store: Store,
    engine: FlowEngine,
    static_routes: Vec<Route>,
    /// False when the last build skipped something (the store failed, a target did not load).
    complete: bool,
}

/// How often the store is checked for changes made by other nodes.
const ROUTE_POLL: Duration = Duration::from_secs(5);

impl RouteLoader {
    fn new(store: Store, engine: FlowEngine, static_routes: Vec<Route>) -> RouteLoader {
        RouteLoader { store, engine, static_routes, complete: true }
    }

    /// The router as the store says now. A target that cannot be loaded is skipped (and
    /// logged); the rest of the routes keep working.
    async fn build(&mut self) -> Router {
        let mut routes = self.static_routes.clone();
        let mut snapshot = match self.store.routing_snapshot().await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("loading routes from the store: {e}");
                self.complete = false;
                return Router::new(routes);
            }
        };
        // Exact patterns before prefixes; then priority; then the longer prefix.
        snapshot.routes.sort_by_key(|r| {
            (r.pattern.ends_with('*'), -r.priority, std::cmp::Reverse(r.pattern.len()))
        });
        for r in &snapshot.routes {
            for t in &r.targets {
                match self.load_target(&snapshot, r, t).await {
                    Ok(route) => routes.push(route),
                    Err(e) => {
                        self.complete = false;
                        tracing::error!(pattern = %r.pattern, flow = %t.flow, "route target skipped: {e:#}")
                    }
                }
            }
        }
        Router::new(routes)
    }

    async fn load_target(
        &self,
        snapshot: &RoutingSnapshot,
        r: &voxide_store::Route,
        t: &RouteTarget,
    ) -> anyhow::Result<Route> {
        let (version, via) = snapshot.resolve(&r.tenant_id, t)?;
        let vars = r.vars.iter().map(|(k, val)| (k.clone(), val.clone())).collect();
        let target = VersionRoute {
            tenant: &r.tenant_id,
            version,
            via: &via,
            vars,
            pattern: r.pattern.clone(),
            weight: t.weight,
        };
        target.load(&self.store, &self.engine).await.map_err(anyhow::Error::msg)
    }

    /// Rebuilds on every change signal and every [`ROUTE_POLL`], publishing only when the
    /// routing actually changed.
    async fn follow(
        mut self,
        mut changes: tokio::sync::watch::Receiver<u64>,
        routes: tokio::sync::watch::Sender<Arc<Router>>,
    ) {
        let fingerprint = |router: &Router| -> Vec<(String, String, String, u32)> {
            router
                .routes()
                .iter()
                .map(|r| (r.pattern.clone(), r.label.clone(), r.flow.digest().to_owned(), r.weight))
                .collect()
        };
        let mut current = fingerprint(&routes.borrow());
        let mut poll = tokio::time::interval(ROUTE_POLL);
        // The store's routing generation the current router was built at (None: rebuild on
        // the next poll — unknown, or some target could not be loaded).
        let mut built_at: Option<i64> = None;
        loop {
            let polled = tokio::select! {
                changed = changes.changed() => if changed.is_err() { return } else { false },
                _ = poll.tick() => true,
            };
            if polled {
                // Versions no route or call uses any more are freed here on an idle node.
                self.engine.free_unused();
            }
            let generation = self.store.routing_generation().await.ok();
            if polled && generation.is_some() && generation == built_at {
                continue;
            }
            self.complete = true;
            let router = self.build().await;
            built_at = if self.complete { generation } else { None };
            let next = fingerprint(&router);
            if next != current {
                tracing::info!(routes = router.routes().len(), "routes changed");
                current = next;
                if routes.send(Arc::new(router)).is_err() {
                    return;
                }
            }
        }
    }
}

fn read_config(path: &Path) -> anyhow::Result<Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{}: invalid config", path.display()))
}
