//! voxide-api: the control API under `/api/v1`, over the [`voxide_store::Store`].
//!
//! Every route authenticates (`Authorization: Bearer <key>`), acts for the key's tenant only
//! (another tenant's objects are 404, never 403), checks the key's role, and answers errors in
//! one shape: `{"error": {"code": "...", "message": "..."}}`. The OpenAPI document at
//! `/api/v1/openapi.json` is generated from the handlers' annotations, so it lists exactly the
//! routes the router serves.
//!
//! Uploads are validated before anything is stored: size, WebAssembly component, the world
//! this host serves, imports it can satisfy, a compile with the host's engine, and a manifest
//! whose capabilities are all known.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Multipart, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use voxide_runtime::flows::FlowEngine;
use voxide_runtime::hub::CallHub;
use voxide_store::{
    Alias, FlowSummary, FlowVersion, NewRoute, Principal, Role, Route, Store, StoreError,
};

pub mod calls;
pub mod campaigns;
pub mod events;
pub mod kb;

pub use voxide_runtime::node::outbox::{
    EventBus, RetryPolicy, deliver_webhooks, record_activity, signature,
};
/// Checks an upload the way every deployment path must — the manifest's capabilities, then the
/// component (WebAssembly, a component, the world this host serves, imports it can satisfy, a
/// compile with `engine`) — and returns the version to store, or what is wrong. It compiles:
/// call it off the async threads.
pub use voxide_runtime::node::validate_version as validate;

/// Largest component an upload may carry, unless configured otherwise (32 MiB).
pub const DEFAULT_MAX_UPLOAD: usize = 32 << 20;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub store: Store,
    /// Validates and compiles uploads (the same engine that runs calls: its cache is warm).
    pub engine: FlowEngine,
    pub max_upload: usize,
    /// Bumped after every change to versions, aliases or routes, so the SIP side reloads.
    pub changes: Arc<watch::Sender<u64>>,
    /// This node's live calls (None: the API runs without SIP).
    pub hub: Option<Arc<CallHub>>,
    /// Committed events, for live streams.
    pub events: EventBus,
    /// Where this node's recordings are (None: it keeps none).
    pub recordings_dir: Option<PathBuf>,
    /// This node's dialer (None: campaigns are stored but run elsewhere).
    pub dialer: Option<voxide_runtime::dialer::runner::Dialer>,
}

impl ApiState {
    pub fn new(store: Store, engine: FlowEngine) -> ApiState {
        ApiState {
            store,
            engine,
            max_upload: DEFAULT_MAX_UPLOAD,
            changes: Arc::new(watch::channel(0).0),
            hub: None,
            events: EventBus::default(),
            recordings_dir: None,
            dialer: None,
        }
    }

    /// The API of a running node: its store, engine, calls, events and recordings; a change
    /// through the API rebuilds the node's routing.
    pub fn for_node(node: &voxide_runtime::node::Node) -> ApiState {
        ApiState {
            changes: node.changes().clone(),
            hub: Some(node.hub().clone()),
            events: node.events().clone(),
            recordings_dir: Some(node.recordings_dir().to_owned()),
            dialer: Some(node.dialer().clone()),
            ..ApiState::new(node.store().clone(), node.engine().clone())
        }
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }
}

// ---- errors ----

/// An error answer: status, a stable code, a message for people.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Sent as `Retry-After` (whole seconds, rounded up).
    pub retry_after: Option<std::time::Duration>,
}

/// The one error shape every route answers with.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `invalid`, `invalid_component`, `too_large`, `unsupported_media_type`, `rate_limited`,
    /// `unavailable`, `internal`.
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after: None }
    }

    fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            ErrorBody { error: ErrorDetail { code: self.code.into(), message: self.message } };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.max(1).into());
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(what) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
            }
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            StoreError::Invalid(m) => ApiError::invalid(m),
            other => {
                tracing::error!("store: {other}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the store failed; see the server log",
                )
            }
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A JSON body whose parse errors answer in the API's error shape.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| ApiJson(v))
            .map_err(|e| ApiError::invalid(e.body_text()))
    }
}

// ---- authentication ----

/// The authenticated caller. Extracting it is what makes a route authenticated.
#[derive(Debug, Clone)]
pub struct Auth(pub Principal);

impl Auth {
    /// Fails with 403 unless the key's role allows `needed`.
    fn require(&self, needed: Role) -> ApiResult<()> {
        if self.0.role.allows(needed) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this key's role ({}) cannot do this; it needs {}",
                    self.0.role.as_str(),
                    needed.as_str()
                ),
            ))
        }
    }

    fn tenant(&self) -> &str {
        &self.0.tenant_id
    }
}

impl FromRequestParts<ApiState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("missing Authorization: Bearer <API key>"))?;
        let secret = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| unauthorized("Authorization must be: Bearer <API key>"))?;
        match state.store.authenticate(secret).await? {
            Some(principal) => Ok(Auth(principal)),
            None => Err(unauthorized("invalid or revoked API key")),
        }
    }
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Voxide control API", description = "Flows, versions, aliases and routes of a tenant; its live calls, CDRs, recordings, events and webhooks; dialer campaigns, leads, do-not-call lists and attempts. Every route needs `Authorization: Bearer <API key>`."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(ErrorBody, ErrorDetail))
)]
struct ApiDoc;

/// The API's router (state applied) and its OpenAPI document.
pub fn router(state: ApiState) -> axum::Router {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(whoami))
        .routes(routes!(list_flows))
        .routes(routes!(list_versions, upload_version))
        .routes(routes!(get_version, delete_version))
        .routes(routes!(list_aliases))
        .routes(routes!(set_alias))
        .routes(routes!(list_routes, add_route))
        .routes(routes!(delete_route))
        .routes(routes!(calls::list_calls, calls::originate))
        .routes(routes!(calls::get_call))
        .routes(routes!(calls::hangup_call))
        .routes(routes!(calls::redirect_call))
        .routes(routes!(calls::play_call))
        .routes(routes!(calls::say_call))
        .routes(routes!(calls::list_cdrs))
        .routes(routes!(calls::get_cdr))
        .routes(routes!(calls::list_recordings))
        .routes(routes!(calls::get_recording, calls::delete_recording))
        .routes(routes!(calls::recording_audio))
        .routes(routes!(events::stream_events))
        .routes(routes!(events::event_log))
        .routes(routes!(events::list_webhooks, events::add_webhook))
        .routes(routes!(events::delete_webhook))
        .routes(routes!(events::list_deliveries))
        .routes(routes!(campaigns::list_campaigns, campaigns::create_campaign))
        .routes(routes!(campaigns::get_campaign))
        .routes(routes!(campaigns::start_campaign))
        .routes(routes!(campaigns::pause_campaign))
        .routes(routes!(campaigns::stop_campaign))
        .routes(routes!(campaigns::list_leads, campaigns::import_leads))
        .routes(routes!(campaigns::list_attempts))
        .routes(routes!(campaigns::campaign_stats))
        .routes(routes!(campaigns::stream_stats))
        .routes(routes!(campaigns::list_dnc, campaigns::add_dnc))
        .routes(routes!(campaigns::remove_dnc))
        .routes(routes!(kb::list_documents))
        .routes(routes!(kb::put_document, kb::delete_document))
        .routes(routes!(kb::search))
        .split_for_parts();
    let openapi = Arc::new(openapi);
    router
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move |_: Auth| {
                let openapi = openapi.clone();
                async move { Json(openapi.as_ref().clone()) }
            }),
        )
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route; see /api/v1/openapi.json",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

// ---- handlers ----

/// Who the key belongs to.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    pub tenant_id: String,
    pub key_id: String,
    pub role: Role,
}

#[utoipa::path(get, path = "/api/v1/whoami", tag = "keys",
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
async fn whoami(auth: Auth) -> Json<WhoAmI> {
    let p = auth.0;
    Json(WhoAmI { tenant_id: p.tenant_id, key_id: p.key_id, role: p.role })
}

#[utoipa::path(get, path = "/api/v1/flows", tag = "flows",
    responses((status = 200, body = [FlowSummary]), (status = 401, body = ErrorBody)))]
async fn list_flows(State(s): State<ApiState>, auth: Auth) -> ApiResult<Json<Vec<FlowSummary>>> {
    Ok(Json(s.store.list_flows(auth.tenant()).await?))
}

#[utoipa::path(get, path = "/api/v1/flows/{name}/versions", tag = "flows",
    params(("name" = String, Path, description = "flow name")),
    responses((status = 200, body = [FlowVersion]), (status = 404, body = ErrorBody)))]
async fn list_versions(
    State(s): State<ApiState>,
    auth: Auth,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<FlowVersion>>> {
    Ok(Json(s.store.list_versions(auth.tenant(), &name).await?))
}

/// The result of an upload: the version, and whether these bytes were new.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Uploaded {
    #[serde(flatten)]
    pub version: FlowVersion,
    /// False when identical bytes were uploaded before (the existing version is returned).
    pub created: bool,
}

/// Upload a version: the component as the body (`Content-Type: application/wasm`), or a flow
/// package as `multipart/form-data` with parts `component` and `manifest` (flow.toml).
#[utoipa::path(post, path = "/api/v1/flows/{name}/versions", tag = "flows",
    params(("name" = String, Path, description = "flow name: 1-64 of a-z 0-9 - _ .")),
    request_body(content = Vec<u8>, content_type = "application/wasm",
        description = "a WebAssembly component exporting voxide:flow/handler@0.1.0 (a call flow) or voxide:dialer/pacer@0.1.0 (a pacing strategy)"),
    responses(
        (status = 201, body = Uploaded, description = "a new version"),
        (status = 200, body = Uploaded, description = "these bytes were uploaded before"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "not a usable flow component or manifest")))]
async fn upload_version(
    State(s): State<ApiState>,
    auth: Auth,
    Path(name): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> ApiResult<(StatusCode, Json<Uploaded>)> {
    auth.require(Role::Deploy)?;
    if !voxide_store::valid_name(&name) {
        return Err(ApiError::invalid(format!(
            "flow name {name:?}: 1-64 of a-z 0-9 - _ ., starting with a letter or digit"
        )));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let (bytes, manifest_text) = if content_type.starts_with("application/wasm")
        || content_type.starts_with("application/octet-stream")
    {
        (read_limited(request.into_body(), s.max_upload).await?, String::new())
    } else if content_type.starts_with("multipart/form-data") {
        read_package(request, &s).await?
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "Content-Type {content_type:?}: send application/wasm (a component) or \
                 multipart/form-data (parts component and manifest)"
            ),
        ));
    };
    // Validate and compile off the async threads: a compile takes tens to hundreds of ms.
    let engine = s.engine.clone();
    let new = tokio::task::spawn_blocking(move || validate(&engine, bytes, manifest_text))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_component", m))?;
    let (version, created) = s.store.create_version(auth.tenant(), &name, new).await?;
    if created {
        tracing::info!(tenant = auth.tenant(), flow = %name, version = version.version, digest = %version.digest, "flow version uploaded");
        s.changed();
    }
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(Uploaded { version, created })))
}

/// Reads a body of at most `limit` bytes, or answers 413.
async fn read_limited(body: Body, limit: usize) -> ApiResult<Vec<u8>> {
    axum::body::to_bytes(body, limit).await.map(|b| b.to_vec()).map_err(|_| too_large(limit))
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the upload is larger than this server's limit of {} MiB", limit >> 20),
    )
}

/// A multipart flow package: `component` (the .wasm) and optionally `manifest` (flow.toml).
async fn read_package(request: Request, s: &ApiState) -> ApiResult<(Vec<u8>, String)> {
    let mut multipart =
        Multipart::from_request(request, s).await.map_err(|e| ApiError::invalid(e.body_text()))?;
    let (mut component, mut manifest) = (None, String::new());
    loop {
        let field = multipart.next_field().await.map_err(|e| ApiError::invalid(e.body_text()))?;
        let Some(field) = field else { break };
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = field.bytes().await.map_err(|e| ApiError::invalid(e.body_text()))?;
        if bytes.len() > s.max_upload {
            return Err(too_large(s.max_upload));
        }
        match name.as_str() {
            "component" => component = Some(bytes.to_vec()),
            "manifest" => {
                manifest = String::from_utf8(bytes.to_vec())
                    .map_err(|_| ApiError::invalid("the manifest part is not UTF-8 text"))?;
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "unknown part {other:?}: send component and manifest"
                )));
            }
        }
    }
    let component =
        component.ok_or_else(|| ApiError::invalid("the package has no component part"))?;
    Ok((component, manifest))
}

#[utoipa::path(get, path = "/api/v1/flows/{name}/versions/{version}", tag = "flows",
    params(("name" = String, Path), ("version" = i64, Path)),
    responses((status = 200, body = FlowVersion), (status = 404, body = ErrorBody)))]
async fn get_version(
    State(s): State<ApiState>,
    auth: Auth,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<Json<FlowVersion>> {
    let version = version_number(&version)?;
    Ok(Json(s.store.version(auth.tenant(), &name, version).await?))
}

#[utoipa::path(delete, path = "/api/v1/flows/{name}/versions/{version}", tag = "flows",
    params(("name" = String, Path), ("version" = i64, Path)),
    responses((status = 204), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "an alias or route uses it")))]
async fn delete_version(
    State(s): State<ApiState>,
    auth: Auth,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    auth.require(Role::Deploy)?;
    let version = version_number(&version)?;
    s.store.delete_version(auth.tenant(), &name, version).await?;
    s.changed();
    Ok(StatusCode::NO_CONTENT)
}

fn version_number(text: &str) -> ApiResult<i64> {
    text.parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| ApiError::invalid(format!("version {text:?} is not a version number")))
}

#[utoipa::path(get, path = "/api/v1/flows/{name}/aliases", tag = "aliases",
    params(("name" = String, Path)),
    responses((status = 200, body = [Alias]), (status = 404, body = ErrorBody)))]
async fn list_aliases(
    State(s): State<ApiState>,
    auth: Auth,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<Alias>>> {
    Ok(Json(s.store.aliases(auth.tenant(), &name).await?))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SetAlias {
    pub version: i64,
}

/// Point an alias at a version (create or move it). New calls follow it; calls in progress
/// stay on the version they started with.
#[utoipa::path(put, path = "/api/v1/flows/{name}/aliases/{alias}", tag = "aliases",
    params(("name" = String, Path), ("alias" = String, Path)),
    request_body = SetAlias,
    responses((status = 200, body = Alias), (status = 404, body = ErrorBody)))]
async fn set_alias(
    State(s): State<ApiState>,
    auth: Auth,
    Path((name, alias)): Path<(String, String)>,
    ApiJson(body): ApiJson<SetAlias>,
) -> ApiResult<Json<Alias>> {
    auth.require(Role::Deploy)?;
    let alias = s.store.set_alias(auth.tenant(), &name, &alias, body.version).await?;
    s.changed();
    Ok(Json(alias))
}

#[utoipa::path(get, path = "/api/v1/routes", tag = "routes",
    responses((status = 200, body = [Route]), (status = 401, body = ErrorBody)))]
async fn list_routes(State(s): State<ApiState>, auth: Auth) -> ApiResult<Json<Vec<Route>>> {
    Ok(Json(s.store.routes(auth.tenant()).await?))
}

/// Route a called number or user to weighted flow targets (canaries: several targets).
#[utoipa::path(post, path = "/api/v1/routes", tag = "routes",
    request_body = NewRoute,
    responses((status = 201, body = Route), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn add_route(
    State(s): State<ApiState>,
    auth: Auth,
    ApiJson(new): ApiJson<NewRoute>,
) -> ApiResult<(StatusCode, Json<Route>)> {
    auth.require(Role::Deploy)?;
    let route = s.store.add_route(auth.tenant(), new).await?;
    s.changed();
    Ok((StatusCode::CREATED, Json(route)))
}

#[utoipa::path(delete, path = "/api/v1/routes/{id}", tag = "routes",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_route(
    State(s): State<ApiState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    auth.require(Role::Deploy)?;
    s.store.delete_route(auth.tenant(), &id).await?;
    s.changed();
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests;
