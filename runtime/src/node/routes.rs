//! Routing a node's calls: the config file's routes, then the store's, rebuilt when versions,
//! aliases or routes change (through this node's API, or — polled — another node's).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use voxide_store::{FlowVersion, RouteTarget, RoutingSnapshot, Store};

use super::config::RouteConfig;
use crate::builder::{self, BuildOptions};
use crate::flows::FlowEngine;
use crate::manifest::Manifest;
use crate::routing::{Route, Router};

/// The config file's routes (paths relative to `base`), owned by `tenant`: flow directories
/// are built, components loaded, manifests read. A route that cannot be loaded is an error
/// (the operator wrote it).
pub fn config_routes(
    engine: &FlowEngine,
    routes: &[RouteConfig],
    base: &Path,
    tenant: &str,
) -> anyhow::Result<Vec<Route>> {
    let mut static_routes = Vec::new();
    for r in routes {
        let path = if r.flow.is_absolute() { r.flow.clone() } else { base.join(&r.flow) };
        let wasm = if path.extension().is_some_and(|e| e == "wasm") {
            path.clone()
        } else {
            tracing::info!("building {} ...", path.display());
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
            tenant: tenant.to_owned(),
            flow,
            vars: r.vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            manifest: Arc::new(manifest),
            weight: 100,
        });
    }
    Ok(static_routes)
}

/// A stored version as a [`Route`]: what the route loader and the call API both run.
#[derive(Debug)]
pub struct VersionRoute<'a> {
    pub tenant: &'a str,
    pub version: &'a FlowVersion,
    /// How the version was chosen, for the label (` via live`, or empty).
    pub via: &'a str,
    pub vars: Vec<(String, String)>,
    pub pattern: String,
    pub weight: u32,
}

impl VersionRoute<'_> {
    /// The route, with its flow compiled once per digest: an engine that has the flow already
    /// reads no bytes from the store.
    pub async fn load(self, store: &Store, engine: &FlowEngine) -> Result<Route, String> {
        let v = self.version;
        let flow = match engine.loaded_flow(&v.digest) {
            Some(flow) => flow,
            None => {
                let bytes = store.component(&v.digest).await.map_err(|e| e.to_string())?;
                let engine = engine.clone();
                tokio::task::spawn_blocking(move || engine.load(&bytes))
                    .await
                    .map_err(|e| format!("loading {} v{}: {e}", v.flow, v.version))?
                    .map_err(|e| format!("{} v{} no longer loads: {e}", v.flow, v.version))?
            }
        };
        let manifest = Manifest::parse(&v.manifest).map_err(|e| {
            format!("{} v{}: the stored manifest no longer parses: {e}", v.flow, v.version)
        })?;
        Ok(Route {
            pattern: self.pattern,
            name: v.flow.clone(),
            label: format!("{} v{}{}", v.flow, v.version, self.via),
            version: Some(v.version),
            tenant: self.tenant.to_owned(),
            flow,
            vars: self.vars,
            manifest: Arc::new(manifest),
            weight: self.weight,
        })
    }
}

/// Builds the SIP router from the config file's routes and the store's, and rebuilds it when
/// versions, aliases or routes change (through this node's API, or — polled — another's).
#[derive(Debug)]
pub struct RouteLoader {
    store: Store,
    engine: FlowEngine,
    static_routes: Vec<Route>,
    /// False when the last build skipped something (the store failed, a target did not load).
    complete: bool,
}

/// How often the store is checked for changes made by other nodes.
const ROUTE_POLL: Duration = Duration::from_secs(5);

impl RouteLoader {
    pub fn new(store: Store, engine: FlowEngine, static_routes: Vec<Route>) -> RouteLoader {
        RouteLoader { store, engine, static_routes, complete: true }
    }

    /// The router as the store says now. A target that cannot be loaded is skipped (and
    /// logged); the rest of the routes keep working.
    pub async fn build(&mut self) -> Router {
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
    pub async fn follow(
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

/// The stored version `name@at` names (`at`: a version number, or an alias resolved to
/// its number now), which must export `world` (`what` names it in the error).
pub async fn pin_version(
    store: &Store,
    tenant: &str,
    (name, at): (&str, &str),
    world: &str,
    what: &str,
) -> voxide_store::Result<FlowVersion> {
    let number = match at.parse::<i64>() {
        Ok(n) => n,
        Err(_) => store.resolve_alias(tenant, name, at).await?,
    };
    let v = store.version(tenant, name, number).await?;
    if v.world != world {
        return Err(voxide_store::StoreError::Invalid(format!(
            "{name}@{at}: {name} version {number} is a {} component, not {what}",
            v.world
        )));
    }
    Ok(v)
}

/// A stored flow named as `NAME` (its `live` alias), `NAME@ALIAS` or `NAME@VERSION`, pinned to
/// its version number; only call flows (`voxide:flow/handler`) qualify.
pub async fn pin_flow(
    store: &Store,
    tenant: &str,
    spec: &str,
) -> voxide_store::Result<FlowVersion> {
    let named = spec.split_once('@').unwrap_or((spec, "live"));
    pin_version(store, tenant, named, voxide_store::FLOW_WORLD, "a call flow").await
}

/// The flow `spec` names (see [`pin_flow`]) as a route for `tenant`'s calls.
pub async fn flow_route(
    store: &Store,
    engine: &FlowEngine,
    tenant: &str,
    spec: &str,
) -> Result<Route, String> {
    let v = pin_flow(store, tenant, spec).await.map_err(|e| format!("flow {spec}: {e}"))?;
    let target = VersionRoute {
        tenant,
        version: &v,
        via: "",
        vars: Vec::new(),
        pattern: String::new(),
        weight: 100,
    };
    target.load(store, engine).await
}
