//! Live calls (originate, list, show, hang up, redirect, play, say), their CDRs, and
//! recordings.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use voxide_runtime::calls::{Originate, Route};
use voxide_runtime::hub::{CallHub, CallSnapshot, HubError, LegInfo};
pub use voxide_runtime::node::routes::VersionRoute;
use voxide_store::{Cdr, CdrFilter, RecordingMeta, Role};

use crate::{ApiError, ApiJson, ApiResult, ApiState, Auth, ErrorBody};

impl From<HubError> for ApiError {
    fn from(e: HubError) -> ApiError {
        let message = e.to_string();
        match e {
            HubError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            HubError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            HubError::Invalid(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
            }
            HubError::Unavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            HubError::Forbidden(_) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", message),
            HubError::Limited { retry_after, .. } => ApiError {
                retry_after: Some(retry_after),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
            },
        }
    }
}

fn hub(s: &ApiState) -> ApiResult<&Arc<CallHub>> {
    s.hub.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "this node takes no calls")
    })
}

/// Which flow version runs: an alias (default `live`) or a version number.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FlowTarget {
    pub flow: String,
    pub alias: Option<String>,
    pub version: Option<i64>,
    /// Variables the flow reads with `call.vars`.
    #[serde(default)]
    pub vars: std::collections::BTreeMap<String, String>,
}

/// Loads a tenant's flow version as a route a call can run.
pub async fn load_target(s: &ApiState, tenant: &str, t: &FlowTarget) -> ApiResult<Route> {
    let (version, via) = match (&t.alias, t.version) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("give alias or version, not both")),
        (None, Some(v)) => (v, String::new()),
        (alias, None) => {
            let alias = alias.as_deref().unwrap_or("live");
            (s.store.resolve_alias(tenant, &t.flow, alias).await?, format!(" via {alias}"))
        }
    };
    let v = s.store.version(tenant, &t.flow, version).await?;
    let vars = t.vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let target =
        VersionRoute { tenant, version: &v, via: &via, vars, pattern: String::new(), weight: 100 };
    target.load(&s.store, &s.engine).await.map_err(internal)
}

fn internal(message: String) -> ApiError {
    tracing::error!("{message}");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
}

/// A live call.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Call {
    pub id: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    pub from: String,
    pub to: String,
    /// `ringing`, `answered` or `ending`.
    pub state: String,
    pub flow: String,
    /// The version that runs (`ivr-menu v3 via live`).
    pub label: String,
    pub digest: String,
    pub started_at: i64,
    pub answered_at: Option<i64>,
    pub legs: Vec<Leg>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Leg {
    /// `caller`, `callee` or `dialled`.
    pub role: String,
    pub party: String,
    pub state: String,
}

impl From<CallSnapshot> for Call {
    fn from(c: CallSnapshot) -> Call {
        let leg = |l: LegInfo| Leg { role: l.role.into(), party: l.party, state: l.state.into() };
        Call {
            id: c.id,
            direction: c.direction.into(),
            from: c.from,
            to: c.to,
            state: c.state.into(),
            flow: c.flow,
            label: c.label,
            digest: c.digest,
            started_at: c.started_at,
            answered_at: c.answered_at,
            legs: c.legs.into_iter().map(leg).collect(),
        }
    }
}

/// An outbound call to place.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NewCall {
    /// A registered user (`alice`) or a SIP URI (`sip:bob@192.0.2.1:5060`).
    pub to: String,
    /// Caller ID (the From user); `voxide` by default.
    pub from: Option<String>,
    /// The flow that runs when the call is answered.
    #[serde(flatten)]
    pub target: FlowTarget,
    /// Seconds to ring before giving up (default 30, at most 300).
    pub timeout_secs: Option<u64>,
}

/// Place an outbound call. It is listed as `ringing` at once; when answered, the flow runs on
/// it. A call that does not connect leaves a CDR with outcome `busy`, `no-answer`, `failed`
/// or `canceled`. The server bounds what each tenant may place (`[originate]` in its config):
/// destinations outside its allow list are 403; over the calls-at-once or calls-per-second
/// limit is 429 with `Retry-After`.
#[utoipa::path(post, path = "/api/v1/calls", tag = "calls",
    request_body = NewCall,
    responses((status = 201, body = Call),
        (status = 403, body = ErrorBody, description = "a read-only key, or a destination the server does not allow"),
        (status = 429, body = ErrorBody, description = "over the tenant's calls-at-once or calls-per-second limit; see Retry-After"),
        (status = 404, body = ErrorBody, description = "no such flow, alias or version"),
        (status = 422, body = ErrorBody, description = "the target cannot be called"),
        (status = 503, body = ErrorBody, description = "this node takes no calls")))]
pub(crate) async fn originate(
    State(s): State<ApiState>,
    auth: Auth,
    ApiJson(new): ApiJson<NewCall>,
) -> ApiResult<(StatusCode, Json<Call>)> {
    auth.require(Role::Deploy)?;
    let hub = hub(&s)?.clone();
    let timeout = Duration::from_secs(new.timeout_secs.unwrap_or(30).clamp(1, 300));
    let route = load_target(&s, auth.tenant(), &new.target).await?;
    let req =
        Originate { tenant: auth.tenant().to_owned(), to: new.to, from: new.from, route, timeout };
    let call = voxide_runtime::calls::originate(&hub, req).await?;
    Ok((StatusCode::CREATED, Json(call.into())))
}

/// The tenant's calls in progress on this node, oldest first.
#[utoipa::path(get, path = "/api/v1/calls", tag = "calls",
    responses((status = 200, body = [Call]), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_calls(
    State(s): State<ApiState>,
    auth: Auth,
) -> ApiResult<Json<Vec<Call>>> {
    let calls = s.hub.as_ref().map(|h| h.list(auth.tenant())).unwrap_or_default();
    Ok(Json(calls.into_iter().map(Call::from).collect()))
}

#[utoipa::path(get, path = "/api/v1/calls/{id}", tag = "calls",
    params(("id" = String, Path)),
    responses((status = 200, body = Call), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_call(
    State(s): State<ApiState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Call>> {
    let call =
        s.hub.as_ref().ok_or_else(|| HubError::NotFound(id.clone()))?.get(auth.tenant(), &id)?;
    Ok(Json(call.snapshot().into()))
}

/// End a call: BYE if answered, CANCEL if it is still ringing out.
#[utoipa::path(post, path = "/api/v1/calls/{id}/hangup", tag = "calls",
    params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn hangup_call(
    State(s): State<ApiState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    auth.require(Role::Deploy)?;
    hub(&s)?.hangup(auth.tenant(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Run another flow on the live call from now on (the running flow is ended at its current
/// action; the caller stays on the line).
#[utoipa::path(post, path = "/api/v1/calls/{id}/redirect", tag = "calls",
    params(("id" = String, Path)),
    request_body = FlowTarget,
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn redirect_call(
    State(s): State<ApiState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(target): ApiJson<FlowTarget>,
) -> ApiResult<StatusCode> {
    auth.require(Role::Deploy)?;
    let hub = hub(&s)?;
    hub.get(auth.tenant(), &id)?;
    let route = load_target(&s, auth.tenant(), &target).await?;
    hub.redirect(auth.tenant(), &id, route)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlayRequest {
    /// A WAV file in the server's assets directory (`prompts/notice.wav`), or a URL the
    /// running flow's manifest allows.
    pub media: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SayRequest {
    pub text: String,
    pub voice: Option<String>,
}

/// Play a prompt into the call now (over what the flow plays; the flow's next prompt waits
/// for it).
#[utoipa::path(post, path = "/api/v1/calls/{id}/play", tag = "calls",
    params(("id" = String, Path)),
    request_body = PlayRequest,
    responses((status = 202), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "unknown prompt or URL not allowed")))]
pub(crate) async fn play_call(
    State(s): State<ApiState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<PlayRequest>,
) -> ApiResult<StatusCode> {
    auth.require(Role::Deploy)?;
    hub(&s)?.play(auth.tenant(), &id, &req.media).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Speak text into the call now (text to speech), like `play`.
#[utoipa::path(post, path = "/api/v1/calls/{id}/say", tag = "calls",
    params(("id" = String, Path)),
    request_body = SayRequest,
    responses((status = 202), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub(crate) async fn say_call(
    State(s): State<ApiState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SayRequest>,
) -> ApiResult<StatusCode> {
    auth.require(Role::Deploy)?;
    hub(&s)?.say(auth.tenant(), &id, &req.text, req.voice.as_deref()).await?;
    Ok(StatusCode::ACCEPTED)
}

// ---- CDRs ----

/// Ended calls, newest first, with the flow's outcome.
#[utoipa::path(get, path = "/api/v1/cdrs", tag = "cdrs",
    params(CdrFilter),
    responses((status = 200, body = [Cdr]), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_cdrs(
    State(s): State<ApiState>,
    auth: Auth,
    Query(filter): Query<CdrFilter>,
) -> ApiResult<Json<Vec<Cdr>>> {
    Ok(Json(s.store.cdrs(auth.tenant(), &filter).await?))
}

#[utoipa::path(get, path = "/api/v1/cdrs/{id}", tag = "cdrs",
    params(("id" = String, Path, description = "the call id")),
    responses((status = 200, body = Cdr), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_cdr(
    State(s): State<ApiState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Cdr>> {
    Ok(Json(s.store.cdr(auth.tenant(), &id).await?))
}

// ---- recordings ----

#[derive(Debug, Deserialize, IntoParams)]
pub struct RecordingsQuery {
    /// At most this many, newest first (default 100).
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/recordings", tag = "recordings",
    params(RecordingsQuery),
    responses((status = 200, body = [RecordingMeta]), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_recordings(
    State(s): State<ApiState>,
    auth: Auth,
    Query(q): Query<RecordingsQuery>,
) -> ApiResult<Json<Vec<RecordingMeta>>> {
    Ok(Json(s.store.recordings(auth.tenant(), q.limit.unwrap_or(100)).await?))
}

#[utoipa::path(get, path = "/api/v1/recordings/{id}", tag = "recordings",
    params(("id" = String, Path)),
    responses((status = 200, body = RecordingMeta), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_recording(
    State(s): State<ApiState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<RecordingMeta>> {
    Ok(Json(s.store.recording(auth.tenant(), &id).await?))
}

/// The recording's audio (WAV, 8 kHz, 16-bit; two channels for a bridged call).
#[utoipa::path(get, path = "/api/v1/recordings/{id}/audio", tag = "recordings",
    params(("id" = String, Path)),
    responses((status = 200, content_type = "audio/wav", body = Vec<u8>),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn recording_audio(
    State(s): State<ApiState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let meta = s.store.recording(auth.tenant(), &id).await?;
    let path = recording_path(&s, &meta)?;
    let bytes = tokio::fs::read(&path).await.map_err(|e| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("recording {id}: its audio is not on this node ({e})"),
        )
    })?;
    Response::builder()
        .header(header::CONTENT_TYPE, "audio/wav")
        .header(header::CONTENT_DISPOSITION, format!("attachment; filename=\"{}\"", meta.file))
        .body(Body::from(bytes))
        .map_err(|e| internal(e.to_string()))
}

/// Delete a recording: its metadata and its files.
#[utoipa::path(delete, path = "/api/v1/recordings/{id}", tag = "recordings",
    params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_recording(
    State(s): State<ApiState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    auth.require(Role::Deploy)?;
    let meta = s.store.delete_recording(auth.tenant(), &id).await?;
    if let Ok(path) = recording_path(&s, &meta) {
        for file in [path.clone(), path.with_extension("json")] {
            if let Err(e) = tokio::fs::remove_file(&file).await
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!("deleting {}: {e}", file.display());
            }
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The recording's file under the recordings directory (a stored name never leaves it).
fn recording_path(s: &ApiState, meta: &RecordingMeta) -> ApiResult<std::path::PathBuf> {
    let dir = s.recordings_dir.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "this node keeps no recordings")
    })?;
    let plain = !meta.file.is_empty()
        && !meta.file.contains(['/', '\\'])
        && meta.file != ".."
        && meta.file != ".";
    if !plain {
        return Err(internal(format!("recording {}: bad stored file name", meta.id)));
    }
    Ok(dir.join(&meta.file))
}
