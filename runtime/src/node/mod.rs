//! A Voxide node: everything `vox serve` runs, composed in one place so that the CLI, tests,
//! benchmarks and (later) cluster members start the same thing.
//!
//! [`Node::builder`] takes a [`NodeConfig`] (and, optionally, a store and an engine made by the
//! caller); [`NodeBuilder::start`] opens the store, makes the config file's tenant, loads the
//! routes (config file first, then the store's), binds SIP (UDP and TCP on one port), opens the
//! media engine, and spawns the node's tasks:
//!
//! - the call dispatcher ([`crate::calls::serve`]), one task per call under it;
//! - the outbox writer ([`outbox::record_activity`]): what calls report becomes CDRs, events
//!   and recordings in the store, then goes live on the [`EventBus`];
//! - the webhook dispatcher ([`outbox::deliver_webhooks`]);
//! - the route loader ([`routes::RouteLoader`]), rebuilding routing on every change signal and
//!   every 5 s poll of the store's routing generation.
//!
//! The control API is not part of this crate (it depends on it): `voxide_api` mounts its
//! router on a running node's parts ([`Node::store`], [`Node::hub`], [`Node::events`],
//! [`Node::changes`] …). [`Node::shutdown`] drains: new calls get 503, calls in progress get
//! the drain time, the rest are hung up, and the writer commits the last CDRs.

pub mod config;
pub mod outbox;
pub mod routes;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use voxide_media::session::{MediaConfig, MediaEngine};
use voxide_sip::auth::Algorithm;
use voxide_sip::registrar::{Registrar, RegistrarConfig};
use voxide_sip::shell::{Command, Listen, SipHandle, SipServer};
use voxide_sip::transaction::Timers;
use voxide_sip::ua::UaConfig;
use voxide_store::{NewKey, NewRoute, NewVersion, Role, RouteTarget, Store, Tenant};

pub use self::config::NodeConfig;
use self::config::parse_ports;
pub use self::outbox::{EventBus, RetryPolicy};
use crate::builder::{self, BuildOptions};
use crate::calls::{self, MediaServices, Router};
use crate::dialer::pacer::{PACER_EXPORT, PacerEngine, PacerLimits};
use crate::dialer::runner::{Dialer, Strategies};
use crate::flows::{FlowEngine, FlowEngineConfig, HANDLER_EXPORT, LoadError};
use crate::hub::CallHub;
use crate::kv::MemoryKv;
use crate::manifest::Manifest;
use crate::prompts::{Espeak, Prompts, Tts};
use crate::routing::CONFIG_TENANT;

/// Flows a node deploys into an empty store (and routes by their names): a directory of
/// flow crates and the names to take from it.
#[derive(Debug, Clone)]
pub struct Samples {
    pub dir: PathBuf,
    pub names: Vec<String>,
}

/// How to start a [`Node`].
#[derive(Debug)]
pub struct NodeBuilder {
    config: NodeConfig,
    base: PathBuf,
    store: Option<Store>,
    engine: Option<FlowEngine>,
    samples: Option<Samples>,
    strategies: Option<PathBuf>,
    retry: RetryPolicy,
}

/// An admin key a start created: its secret is shown once (and kept in `file`, mode 0600).
pub struct AdminKey {
    pub tenant: Tenant,
    pub secret: String,
    pub file: PathBuf,
}

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminKey")
            .field("tenant", &self.tenant.name)
            .field("secret", &"***")
            .field("file", &self.file)
            .finish()
    }
}

impl AdminKey {
    fn new(tenant: Tenant, key: NewKey, file: PathBuf) -> AdminKey {
        AdminKey { tenant, secret: key.secret, file }
    }
}

/// What a start did that the operator should hear about once (printed by `vox serve`).
#[derive(Debug, Default)]
pub struct Started {
    /// The store's URL, password redacted.
    pub store: String,
    /// The first start made a tenant and its admin key.
    pub bootstrapped: Option<AdminKey>,
    /// The config's tenant did not exist: made, with this admin key.
    pub config_tenant_created: Option<AdminKey>,
    /// Sample flows deployed: (name, version, digest).
    pub deployed: Vec<(String, i64, String)>,
    /// Registered users the registrar accepts, and its realm.
    pub registrar: Option<(usize, String)>,
    pub rtp_ports: (u16, u16),
    /// What works less well than it could, and how to fix it.
    pub warnings: Vec<String>,
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    store: Store,
    engine: FlowEngine,
    hub: Arc<CallHub>,
    sip: SipHandle,
    media: Arc<MediaServices>,
    events: EventBus,
    changes: Arc<watch::Sender<u64>>,
    routes: watch::Receiver<Arc<Router>>,
    udp: Option<SocketAddr>,
    tcp: Option<SocketAddr>,
    data_dir: PathBuf,
    drain: Duration,
    calls: JoinHandle<()>,
    writer: JoinHandle<()>,
    dialer: Dialer,
    started: Started,
}

impl Node {
    /// A node configured by `config`, whose relative paths (flows, manifests) are relative to
    /// `base` (the config file's directory).
    pub fn builder(config: NodeConfig, base: impl Into<PathBuf>) -> NodeBuilder {
        NodeBuilder {
            config,
            base: base.into(),
            store: None,
            engine: None,
            samples: None,
            strategies: None,
            retry: RetryPolicy::default(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
    pub fn engine(&self) -> &FlowEngine {
        &self.engine
    }
    pub fn hub(&self) -> &Arc<CallHub> {
        &self.hub
    }
    pub fn sip(&self) -> &SipHandle {
        &self.sip
    }
    pub fn media(&self) -> &Arc<MediaServices> {
        &self.media
    }
    /// Committed events, for live streams.
    /// The campaigns running on this node.
    pub fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    pub fn events(&self) -> &EventBus {
        &self.events
    }
    /// Bump after a change to versions, aliases or routes: the node rebuilds its routing.
    pub fn changes(&self) -> &Arc<watch::Sender<u64>> {
        &self.changes
    }
    /// The routing calls start on now.
    pub fn router(&self) -> Arc<Router> {
        self.routes.borrow().clone()
    }
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp
    }
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp
    }
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
    pub fn recordings_dir(&self) -> &Path {
        &self.media.recordings_dir
    }
    /// What the start did.
    pub fn started(&self) -> &Started {
        &self.started
    }

    /// The node's counters, for `GET /metrics` (a handle: it outlives borrows of the node).
    pub fn metrics(&self) -> Metrics {
        Metrics { sip: self.sip.clone(), media: self.media.clone(), engine: self.engine.clone() }
    }

    /// Runs until the call dispatcher stops (the SIP side ended) or `signal` resolves; then
    /// drains (see [`shutdown`](Self::shutdown)).
    pub async fn run_until(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let mut node = self;
        tokio::select! {
            () = signal => {}
            r = &mut node.calls => {
                r.context("call dispatcher stopped")?;
                return Ok(());
            }
        }
        node.shutdown().await;
        Ok(())
    }

    /// Graceful shutdown: refuse new calls (503), let calls in progress finish for up to the
    /// drain time, then hang up the rest and give their BYEs a moment; the writer then commits
    /// the CDRs of the calls that ended.
    pub async fn shutdown(self) {
        let sip = &self.sip;
        sip.send(Command::Drain).await;
        let active = sip.active_calls().await;
        println!(
            "draining: new calls get 503; waiting up to {}s for {active} call(s) in progress",
            self.drain.as_secs()
        );
        let deadline = tokio::time::Instant::now() + self.drain;
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
        // The writer ends once the calls that just ended have reported their CDRs.
        self.hub.close();
        if tokio::time::timeout(Duration::from_secs(5), self.writer).await.is_err() {
            tracing::warn!("{} call(s) still running at exit: no CDR for them", self.hub.len());
        }
    }
}

/// What `/metrics` reads: calls, SIP counters, media legs, compiled flows.
#[derive(Debug, Clone)]
pub struct Metrics {
    sip: SipHandle,
    media: Arc<MediaServices>,
    engine: FlowEngine,
}

impl Metrics {
    /// The counters in Prometheus text format.
    pub async fn render(&self) -> String {
        let active = self.sip.active_calls().await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let stats = if self.sip.send(Command::Stats(tx)).await { rx.await.ok() } else { None };
        let (dropped, rejected) = stats.map_or((0, 0), |s| (s.dropped, s.rejected));
        format!(
            "# HELP voxide_sip_active_calls Calls in progress.\n# TYPE voxide_sip_active_calls gauge\n\
             voxide_sip_active_calls {active}\n\
             # HELP voxide_sip_dropped_total SIP messages dropped (garbage, stray responses).\n\
             # TYPE voxide_sip_dropped_total counter\nvoxide_sip_dropped_total {dropped}\n\
             # HELP voxide_sip_rejected_total SIP requests refused with an error response.\n\
             # TYPE voxide_sip_rejected_total counter\nvoxide_sip_rejected_total {rejected}\n\
             # HELP voxide_media_legs Media legs (RTP port pairs) open.\n# TYPE voxide_media_legs gauge\n\
             voxide_media_legs {}\n\
             # HELP voxide_flows_loaded Flow versions compiled in memory (routed, running, or used lately).\n\
             # TYPE voxide_flows_loaded gauge\nvoxide_flows_loaded {}\n\
             # HELP voxide_dtmf_shed_total Digits dropped because a call's queue of 64 was full (a flood).\n\
             # TYPE voxide_dtmf_shed_total counter\nvoxide_dtmf_shed_total {}\n",
            self.media.engine.legs_in_use(),
            self.engine.free_unused(),
            calls::digits_shed()
        )
    }
}

impl NodeBuilder {
    /// Use this store instead of opening the config's `database_url`.
    pub fn store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    /// Use this engine (its cache, limits) instead of one made from the config.
    pub fn engine(mut self, engine: FlowEngine) -> Self {
        self.engine = Some(engine);
        self
    }

    /// Deploy these flows into a store on its first start.
    pub fn samples(mut self, samples: Samples) -> Self {
        self.samples = Some(samples);
        self
    }

    /// How webhooks are retried.
    /// Where the sample pacing strategies' crates are (`sample-strategies/`): campaigns
    /// name them, and they are built on first use.
    pub fn strategies(mut self, dir: impl Into<PathBuf>) -> Self {
        self.strategies = Some(dir.into());
        self
    }

    pub fn webhook_retries(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Starts the node: store, routes, SIP, media and the node's tasks.
    pub async fn start(self) -> anyhow::Result<Node> {
        let NodeBuilder { config, base, store, engine, samples, strategies, retry } = self;
        let data_dir = config.data_dir.clone().unwrap_or_else(|| PathBuf::from("voxide-data"));
        let engine = match engine {
            Some(engine) => engine,
            None => FlowEngine::new(FlowEngineConfig {
                cache_dir: Some(data_dir.join("flows")),
                max_concurrent_calls: config.max_calls.unwrap_or(10_000),
                keep_unused: Duration::from_secs(config.keep_unused_flows_secs.unwrap_or(300)),
                ..Default::default()
            })?,
        };
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
        let database_url = config
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("voxide.db").display()));
        let store = match store {
            Some(store) => store,
            None => Store::open(&database_url)
                .await
                .with_context(|| format!("opening the store {}", redact(&database_url)))?,
        };
        let mut started = Started { store: redact(&database_url), ..Started::default() };
        if let Some((tenant, key)) = store.bootstrap().await.context("creating the first tenant")? {
            let file = data_dir.join("admin.key");
            write_secret(&file, &key.secret)?;
            if let Some(samples) = &samples {
                started.deployed = deploy_samples(&store, &engine, &tenant.id, samples).await?;
            }
            started.bootstrapped = Some(AdminKey::new(tenant, key, file));
        }

        // Routes from the config file come first (the config's tenant), then the store's.
        let tenant_name = config.tenant.clone().unwrap_or_else(|| CONFIG_TENANT.into());
        let (config_tenant, created) = config_tenant(&store, &tenant_name, &data_dir).await?;
        started.config_tenant_created = created;
        let static_routes = routes::config_routes(&engine, &config.routes, &base, &config_tenant)?;
        let mut loader = routes::RouteLoader::new(store.clone(), engine.clone(), static_routes);
        let router = loader.build().await;
        let (routes_tx, routes_rx) = watch::channel(Arc::new(router));

        // What calls report is written to the store (events, CDRs, recordings), then streamed
        // and delivered to webhooks.
        let events = EventBus::default();
        let changes = Arc::new(watch::channel(0u64).0);
        let (activity_tx, activity_rx) = tokio::sync::mpsc::unbounded_channel();
        let hub = CallHub::with_limits(activity_tx, config.originate.limits()?);
        let writer =
            tokio::spawn(outbox::record_activity(store.clone(), activity_rx, events.clone()));
        tokio::spawn(outbox::deliver_webhooks(store.clone(), events.clone(), retry));
        tokio::spawn(loader.follow(changes.subscribe(), routes_tx));

        let listen = config.sip.listen;
        let advertise_ip = config.sip.advertise.unwrap_or(if listen.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            listen.ip()
        });
        let mut server = bind_sip(&config, advertise_ip).await?;
        if !config.sip.users.is_empty() {
            let realm = config.sip.realm.clone().unwrap_or_else(|| "voxide".into());
            started.registrar = Some((config.sip.users.len(), realm.clone()));
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
            server =
                server.with_registrar(Registrar::new(registrar_config, users, &nonce_secret()?));
        }
        let (udp, tcp) = (server.udp_addr(), server.tcp_addr());
        let port = udp.or(tcp).map_or(listen.port(), |a| a.port());

        let (port_min, port_max) = parse_ports(&config.media.rtp_ports)?;
        started.rtp_ports = (port_min, port_max);
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
                started.warnings.push(
                    "espeak-ng not found: say() prompts will be silent (apt install espeak-ng)"
                        .into(),
                );
                None
            }
        };
        let assets = config.media.assets.clone().unwrap_or_else(|| data_dir.join("assets"));
        let speech = crate::speech::SpeechEngine::debian_en_us().map_err(|e| {
            let why = format!("no speech recognition: {e}");
            started.warnings.push(format!(
                "{why}; listen() fails (apt install libpocketsphinx-dev pocketsphinx-en-us)"
            ));
            why
        });
        let media = Arc::new(
            MediaServices::new(
                MediaEngine::new(media_config),
                Prompts::new(tts, Some(assets), Some(data_dir.join("tts"))),
                data_dir.join("recordings"),
            )
            .with_speech(speech),
        );

        let (sip, sip_events) = server.spawn();
        let services = calls::CallServices {
            engine: engine.clone(),
            kv: MemoryKv::default(),
            advertised: SocketAddr::new(advertise_ip, port),
            media: Some(media.clone()),
            hub: hub.clone(),
            config_tenant,
        };
        let calls =
            tokio::spawn(calls::serve(services, routes_rx.clone(), sip.clone(), sip_events));
        let pacer = PacerEngine::new(engine.sandbox(), PacerLimits::default())?;
        let dialer = Dialer::spawn(
            store.clone(),
            hub.clone(),
            events.clone(),
            pacer,
            Strategies::new(strategies),
        );
        Ok(Node {
            store,
            engine,
            hub,
            sip,
            media,
            events,
            changes,
            routes: routes_rx,
            udp,
            tcp,
            data_dir,
            drain: Duration::from_secs(config.drain_timeout_secs.unwrap_or(30)),
            calls,
            writer,
            dialer,
            started,
        })
    }
}

/// Binds SIP as configured: UDP first; with port 0 the TCP listener takes the same port number.
async fn bind_sip(config: &NodeConfig, advertise: IpAddr) -> anyhow::Result<SipServer> {
    let listen = config.sip.listen;
    let listen_spec =
        Listen { udp: config.sip.udp.then_some(listen), tcp: config.sip.tcp.then_some(listen) };
    // With port 0 the OS picks a free UDP port, and TCP must take the same number, which a
    // TCP socket may hold already: pick again a few times before giving up.
    let tries = if listen.port() == 0 { 10 } else { 1 };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let server = SipServer::bind(
            &Listen { udp: listen_spec.udp, tcp: None },
            ua_config(listen, advertise),
        )
        .await
        .with_context(|| format!("binding SIP UDP {listen}"))?;
        let port = server.udp_addr().map_or(listen.port(), |a| a.port());
        if listen_spec.tcp.is_none() {
            return Ok(server);
        }
        let tcp = SocketAddr::new(listen.ip(), port);
        let both = Listen { udp: listen_spec.udp.map(|_| tcp), tcp: Some(tcp) };
        drop(server);
        match SipServer::bind(&both, ua_config(tcp, advertise)).await {
            Ok(server) => return Ok(server),
            Err(e) if attempt < tries => {
                tracing::debug!("SIP port {port} is taken for TCP or UDP ({e}); another");
            }
            Err(e) => return Err(anyhow::Error::from(e).context(format!("binding SIP {tcp}"))),
        }
    }
}

fn ua_config(listen: SocketAddr, advertise: IpAddr) -> UaConfig {
    UaConfig {
        advertised: SocketAddr::new(advertise, listen.port()),
        timers: Timers::default(),
        product: format!("Voxide/{}", env!("CARGO_PKG_VERSION")),
    }
}

/// A fresh secret for digest nonces: nonces from before a restart are re-challenged.
fn nonce_secret() -> anyhow::Result<[u8; 32]> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| anyhow::anyhow!("no OS randomness for the nonce secret: {e}"))?;
    Ok(secret)
}

/// The id of the store tenant called `name` that the config file's routes and registered
/// users belong to; created (with an admin key, in `data_dir/admin-NAME.key`) when the store
/// has none.
async fn config_tenant(
    store: &Store,
    name: &str,
    data_dir: &Path,
) -> anyhow::Result<(String, Option<AdminKey>)> {
    let context = || format!("the config's tenant {name:?}");
    if let Some(tenant) = store.tenant_by_name(name).await.with_context(context)? {
        return Ok((tenant.id, None));
    }
    let tenant = match store.create_tenant(name).await {
        Ok(tenant) => tenant,
        // Another node created it a moment ago.
        Err(voxide_store::StoreError::Conflict(_)) => {
            let tenant = store.tenant_by_name(name).await.with_context(context)?;
            return Ok((tenant.with_context(context)?.id, None));
        }
        Err(e) => return Err(e).with_context(context),
    };
    let key = store
        .create_key(&tenant.id, "admin (created for the config file's tenant)", Role::Admin)
        .await
        .with_context(context)?;
    let file = data_dir.join(format!("admin-{name}.key"));
    write_secret(&file, &key.secret)?;
    Ok((tenant.id.clone(), Some(AdminKey::new(tenant, key, file))))
}

/// A component and its manifest checked as an upload is: the manifest parses and the
/// component loads (compiled into `engine`, so routing it costs nothing more).
pub fn validate_version(
    engine: &FlowEngine,
    bytes: Vec<u8>,
    manifest: String,
) -> Result<NewVersion, String> {
    Manifest::parse(&manifest).map_err(|e| e.to_string())?;
    let (digest, world) = match engine.load(&bytes) {
        Ok(flow) => (flow.digest().to_owned(), HANDLER_EXPORT),
        // Not a flow: a pacing strategy is the other kind of component a tenant uploads.
        Err(flow_error @ LoadError::WrongWorld { .. }) => {
            let pacers = PacerEngine::new(engine.sandbox(), PacerLimits::default())
                .map_err(|e| e.to_string())?;
            match pacers.load(&bytes) {
                Ok(strategy) => (strategy.digest().to_owned(), PACER_EXPORT),
                Err(LoadError::WrongWorld { .. }) => {
                    return Err(format!("{flow_error} (nor {PACER_EXPORT}, a pacing strategy)"));
                }
                Err(e) => return Err(format!("a pacing strategy, but: {e}")),
            }
        }
        Err(e) => return Err(e.to_string()),
    };
    Ok(NewVersion { digest, world: world.to_owned(), manifest, bytes })
}

/// First start without a config: build the sample flows, store each as version 1 with alias
/// `live`, and route its name to it.
async fn deploy_samples(
    store: &Store,
    engine: &FlowEngine,
    tenant: &str,
    samples: &Samples,
) -> anyhow::Result<Vec<(String, i64, String)>> {
    let mut deployed = Vec::new();
    for name in &samples.names {
        let dir = samples.dir.join(name);
        tracing::info!("building {} ...", dir.display());
        let wasm = builder::build_flow(&dir, &BuildOptions::default())
            .with_context(|| format!("building sample flow {name}"))?;
        let bytes = std::fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
        // No flow.toml: an empty manifest (no capabilities).
        let manifest = std::fs::read_to_string(dir.join(crate::manifest::FILE)).unwrap_or_default();
        let new = validate_version(engine, bytes, manifest)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("sample flow {name}"))?;
        let (v, _) = store.create_version(tenant, name, new).await?;
        store.set_alias(tenant, name, "live", v.version).await?;
        let target = RouteTarget {
            flow: name.clone(),
            alias: Some("live".into()),
            version: None,
            weight: 100,
        };
        store
            .add_route(
                tenant,
                NewRoute {
                    pattern: name.clone(),
                    priority: 0,
                    targets: vec![target],
                    vars: Default::default(),
                },
            )
            .await?;
        deployed.push((name.clone(), v.version, v.digest.clone()));
    }
    Ok(deployed)
}

/// A database URL without its password, for printing.
pub fn redact(url: &str) -> String {
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
