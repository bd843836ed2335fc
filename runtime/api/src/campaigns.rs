//! The dialer over HTTP: campaigns and their life cycle, lead imports (CSV or JSON),
//! do-not-call lists, attempts, and live figures (JSON and Server-Sent Events). Running
//! campaigns is the node's dialer (`voxide_runtime::dialer::runner`); this module is its API.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use voxide_runtime::dialer::campaign::{Settings, StrategyRef};
use voxide_runtime::dialer::import::{self, MAX_REJECTIONS_LISTED};
use voxide_runtime::dialer::pacer::PACER_EXPORT;
use voxide_runtime::dialer::runner::Stats;
use voxide_runtime::node::routes::{pin_flow, pin_version};
use voxide_store::{Attempt, Campaign, CampaignCounts, DncEntry, Lead, NewCampaign, NewLead, Role};

use crate::{ApiError, ApiJson, ApiResult, ApiState, Auth, ErrorBody, read_limited};

/// Largest lead list one upload may carry (64 MiB).
pub const MAX_LEADS_UPLOAD: usize = 64 << 20;

/// A campaign to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignRequest {
    pub name: String,
    /// `progressive` (default), `predictive` or `adapt-average`; or `NAME@VERSION` (a number or
    /// an alias, pinned to its number now) for a strategy uploaded under `/api/v1/flows`.
    #[serde(default = "default_strategy")]
    pub strategy: String,
    /// Most abandoned over live-answered calls (default and at most 0.03).
    #[serde(default = "default_target")]
    pub abandon_target: f64,
    pub settings: Settings,
}

fn default_strategy() -> String {
    "progressive".into()
}

fn default_target() -> f64 {
    0.03
}

/// A campaign, where its leads stand and (when it runs on this node) its live figures.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CampaignView {
    #[serde(flatten)]
    pub campaign: Campaign,
    pub counts: CampaignCounts,
}

#[utoipa::path(get, path = "/api/v1/campaigns", tag = "dialer",
    responses((status = 200, body = [Campaign]), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_campaigns(
    State(s): State<ApiState>,
    auth: Auth,
) -> ApiResult<Json<Vec<Campaign>>> {
    Ok(Json(s.store.campaigns(auth.tenant()).await?))
}

/// Create a campaign (state `draft`). Every problem with the settings is listed at once.
#[utoipa::path(post, path = "/api/v1/campaigns", tag = "dialer",
    request_body = CampaignRequest,
    responses((status = 201, body = Campaign), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create_campaign(
    State(s): State<ApiState>,
    auth: Auth,
    ApiJson(req): ApiJson<CampaignRequest>,
) -> ApiResult<(StatusCode, Json<Campaign>)> {
    auth.require(Role::Deploy)?;
    let problems = req.settings.problems(&req.strategy, req.abandon_target);
    if !problems.is_empty() {
        return Err(ApiError::invalid(problems.join("; ")));
    }
    let strategy = pin_strategy(&s, auth.tenant(), &req.strategy).await?;
    let mut req = req;
    // Flows are pinned to their version now, like strategies.
    let am = &mut req.settings.answering_machine;
    for spec in [&mut req.settings.flow, &mut am.machine_flow].into_iter().flatten() {
        let v = pin_flow(&s.store, auth.tenant(), spec).await?;
        *spec = format!("{}@{}", v.flow, v.version);
    }
    let settings = serde_json::to_value(&req.settings)
        .map_err(|e| ApiError::invalid(format!("settings: {e}")))?;
    let new =
        NewCampaign { name: req.name, strategy, abandon_target: req.abandon_target, settings };
    let campaign = s.store.create_campaign(auth.tenant(), new).await?;
    Ok((StatusCode::CREATED, Json(campaign)))
}

/// A sample's name as given; an uploaded strategy pinned to its version number (an alias is
/// resolved now, so the campaign paces with what was reviewed), checked to be a strategy.
async fn pin_strategy(s: &ApiState, tenant: &str, strategy: &str) -> ApiResult<String> {
    let StrategyRef::Uploaded { name, version } =
        StrategyRef::parse(strategy).map_err(ApiError::invalid)?
    else {
        return Ok(strategy.to_owned());
    };
    let what = format!("a pacing strategy ({PACER_EXPORT})");
    let v = pin_version(&s.store, tenant, (name, version), PACER_EXPORT, &what).await?;
    Ok(format!("{}@{}", v.flow, v.version))
}

#[utoipa::path(get, path = "/api/v1/campaigns/{name}", tag = "dialer",
    params(("name" = String, Path)),
    responses((status = 200, body = CampaignView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_campaign(
    State(s): State<ApiState>,
    auth: Auth,
    Path(name): Path<String>,
) -> ApiResult<Json<CampaignView>> {
    let campaign = s.store.campaign(auth.tenant(), &name).await?;
    let counts = s.store.campaign_counts(auth.tenant(), &campaign.id).await?;
    Ok(Json(CampaignView { campaign, counts }))
}

async fn move_campaign(
    s: &ApiState,
    auth: &Auth,
    name: &str,
    state: &str,
) -> ApiResult<Json<Campaign>> {
    auth.require(Role::Deploy)?;
    let campaign = s.store.set_campaign_state(auth.tenant(), name, state).await?;
    tracing::info!(tenant = auth.tenant(), campaign = name, "campaign {state}");
    if let Some(dialer) = &s.dialer {
        dialer.wake();
    }
    Ok(Json(campaign))
}

/// Start (or resume) dialling.
#[utoipa::path(post, path = "/api/v1/campaigns/{name}/start", tag = "dialer",
    params(("name" = String, Path)),
    responses((status = 200, body = Campaign), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the campaign is finished")))]
pub(crate) async fn start_campaign(
    State(s): State<ApiState>,
    auth: Auth,
    Path(name): Path<String>,
) -> ApiResult<Json<Campaign>> {
    move_campaign(&s, &auth, &name, "running").await
}

/// Pause: no new dial begins once this answers (calls in progress end normally).
#[utoipa::path(post, path = "/api/v1/campaigns/{name}/pause", tag = "dialer",
    params(("name" = String, Path)),
    responses((status = 200, body = Campaign), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn pause_campaign(
    State(s): State<ApiState>,
    auth: Auth,
    Path(name): Path<String>,
) -> ApiResult<Json<Campaign>> {
    move_campaign(&s, &auth, &name, "paused").await
}

/// Stop for good (`finished`).
#[utoipa::path(post, path = "/api/v1/campaigns/{name}/stop", tag = "dialer",
    params(("name" = String, Path)),
    responses((status = 200, body = Campaign), (status = 404, body = ErrorBody)))]
pub(crate) async fn stop_campaign(
    State(s): State<ApiState>,
    auth: Auth,
    Path(name): Path<String>,
) -> ApiResult<Json<Campaign>> {
    move_campaign(&s, &auth, &name, "finished").await
}

/// One lead in a JSON import.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadInput {
    pub number: String,
    pub tz: Option<String>,
    /// US state or Canadian province (`FL`).
    pub state: Option<String>,
    pub postcode: Option<String>,
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
}

/// A row that was not imported.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Rejection {
    /// The CSV line (1 is the header), or the JSON array index + 1.
    pub line: usize,
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImportReport {
    pub added: usize,
    /// Rows rejected, each with its line (the first 1000 listed).
    pub rejected: Vec<Rejection>,
    pub rejected_total: usize,
}

/// Import leads: `text/csv` (a header with a `number` column; `tz`, `state`, `postcode`;
/// other columns become call variables) or a JSON array of leads. Bad rows are rejected with
/// their line and reason; the good ones are kept.
#[utoipa::path(post, path = "/api/v1/campaigns/{name}/leads", tag = "dialer",
    params(("name" = String, Path)),
    request_body(content = String, content_type = "text/csv"),
    responses((status = 200, body = ImportReport), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub(crate) async fn import_leads(
    State(s): State<ApiState>,
    auth: Auth,
    Path(name): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> ApiResult<Json<ImportReport>> {
    auth.require(Role::Deploy)?;
    let campaign = s.store.campaign(auth.tenant(), &name).await?;
    let content_type =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let body = read_limited(request.into_body(), MAX_LEADS_UPLOAD).await?;
    let (rows, mut rejected, mut rejected_total) = if content_type.starts_with("application/json") {
        let inputs: Vec<LeadInput> = serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid(format!("leads JSON: {e}")))?;
        json_rows(inputs)
    } else {
        let parsed = import::parse_csv(&body, MAX_LEADS_UPLOAD)
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        let rows = parsed
            .leads
            .into_iter()
            .map(|l| {
                let lead = NewLead {
                    number: l.number,
                    tz: l.tz,
                    region: l.state,
                    postcode: l.postcode,
                    vars: l.vars,
                };
                (l.line, lead)
            })
            .collect();
        let rejected = parsed
            .rejected
            .into_iter()
            .map(|r| Rejection { line: r.line, reason: r.reason })
            .collect();
        (rows, rejected, parsed.rejected_total)
    };
    let (lines, leads): (Vec<usize>, Vec<NewLead>) = rows.into_iter().unzip();
    let (added, duplicates) = s.store.add_leads(auth.tenant(), &campaign.id, &leads).await?;
    rejected_total += duplicates.len();
    for i in duplicates {
        if rejected.len() < MAX_REJECTIONS_LISTED {
            let reason = format!("{}: already in the campaign", leads[i].number);
            rejected.push(Rejection { line: lines[i], reason });
        }
    }
    rejected.sort_by_key(|r| r.line);
    tracing::info!(
        tenant = auth.tenant(),
        campaign = name,
        added,
        rejected_total,
        "leads imported"
    );
    Ok(Json(ImportReport { added, rejected, rejected_total }))
}

type Rows = (Vec<(usize, NewLead)>, Vec<Rejection>, usize);

fn json_rows(inputs: Vec<LeadInput>) -> Rows {
    let (mut rows, mut rejected, mut total) = (Vec::new(), Vec::new(), 0);
    for (i, input) in inputs.into_iter().enumerate() {
        match import::e164(&input.number) {
            Ok(number) => rows.push((
                i + 1,
                NewLead {
                    number,
                    tz: input.tz,
                    region: input.state,
                    postcode: input.postcode,
                    vars: input.vars,
                },
            )),
            Err(reason) => {
                total += 1;
                if rejected.len() < MAX_REJECTIONS_LISTED {
                    rejected.push(Rejection { line: i + 1, reason });
                }
            }
        }
    }
    (rows, rejected, total)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct LeadsQuery {
    /// `new`, `dialing`, `retry` or `done`.
    pub status: Option<String>,
    /// At most this many (default 100, at most 10000).
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/campaigns/{name}/leads", tag = "dialer",
    params(("name" = String, Path), LeadsQuery),
    responses((status = 200, body = [Lead]), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_leads(
    State(s): State<ApiState>,
    auth: Auth,
    Path(name): Path<String>,
    Query(q): Query<LeadsQuery>,
) -> ApiResult<Json<Vec<Lead>>> {
    let campaign = s.store.campaign(auth.tenant(), &name).await?;
    let leads = s
        .store
        .leads(
            auth.tenant(),
            &campaign.id,
            q.status.as_deref(),
            q.limit.unwrap_or(100),
            q.offset.unwrap_or(0),
        )
        .await?;
    Ok(Json(leads))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AttemptsQuery {
    /// At most this many, newest first (default 1000).
    pub limit: Option<i64>,
}

/// The audit: one row per attempt.
#[utoipa::path(get, path = "/api/v1/campaigns/{name}/attempts", tag = "dialer",
    params(("name" = String, Path), AttemptsQuery),
    responses((status = 200, body = [Attempt]), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_attempts(
    State(s): State<ApiState>,
    auth: Auth,
    Path(name): Path<String>,
    Query(q): Query<AttemptsQuery>,
) -> ApiResult<Json<Vec<Attempt>>> {
    let campaign = s.store.campaign(auth.tenant(), &name).await?;
    Ok(Json(s.store.attempts(auth.tenant(), &campaign.id, q.limit.unwrap_or(1000)).await?))
}

/// The figures now: live when the campaign runs on this node, else from the store.
async fn stats_of(s: &ApiState, campaign: &Campaign) -> ApiResult<Stats> {
    if let Some(rx) = s.dialer.as_ref().and_then(|d| d.stats(&campaign.id)) {
        return Ok(rx.borrow().clone());
    }
    let counts = s.store.campaign_counts(&campaign.tenant_id, &campaign.id).await?;
    let n = |k: &str| counts.attempts.get(k).copied().unwrap_or(0).max(0) as u64;
    let (answered, abandoned) = (n("human") + n("abandoned"), n("abandoned"));
    Ok(Stats {
        campaign: campaign.name.clone(),
        state: campaign.state.clone(),
        dialled: counts.attempts.values().sum::<i64>().max(0) as u64,
        answered,
        abandoned,
        abandon_rate: if answered == 0 { 0.0 } else { abandoned as f64 * 100.0 / answered as f64 },
        leads_open: counts.leads.iter().filter(|(k, _)| *k != "done").map(|(_, v)| v).sum(),
        ..Stats::default()
    })
}

#[utoipa::path(get, path = "/api/v1/campaigns/{name}/stats", tag = "dialer",
    params(("name" = String, Path)),
    responses((status = 200, body = Stats), (status = 404, body = ErrorBody)))]
pub(crate) async fn campaign_stats(
    State(s): State<ApiState>,
    auth: Auth,
    Path(name): Path<String>,
) -> ApiResult<Json<Stats>> {
    let campaign = s.store.campaign(auth.tenant(), &name).await?;
    Ok(Json(stats_of(&s, &campaign).await?))
}

/// The figures once a second (Server-Sent Events, `event: stats`), until the client leaves.
#[utoipa::path(get, path = "/api/v1/campaigns/{name}/stats/stream", tag = "dialer",
    params(("name" = String, Path)),
    responses((status = 200, content_type = "text/event-stream", body = String),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn stream_stats(
    State(s): State<ApiState>,
    auth: Auth,
    Path(name): Path<String>,
) -> ApiResult<Sse<impl futures_util::Stream<Item = Result<SseEvent, std::convert::Infallible>>>> {
    let tenant = auth.tenant().to_owned();
    s.store.campaign(&tenant, &name).await?;
    let stream = futures_util::stream::unfold(
        (s, tenant, name, true),
        |(s, tenant, name, first)| async move {
            if !first {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let campaign = s.store.campaign(&tenant, &name).await.ok()?;
            let stats = stats_of(&s, &campaign).await.ok()?;
            let event = SseEvent::default()
                .event("stats")
                .data(serde_json::to_string(&stats).unwrap_or_default());
            Some((Ok(event), (s, tenant, name, false)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

// ---- do-not-call ----

#[derive(Debug, Deserialize, IntoParams)]
pub struct DncQuery {
    /// A campaign's list instead of the tenant's.
    pub campaign: Option<String>,
    pub limit: Option<i64>,
}

/// Numbers to add to a do-not-call list.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DncRequest {
    pub numbers: Vec<String>,
    /// A campaign's list instead of the tenant's.
    pub campaign: Option<String>,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DncReport {
    /// Numbers new to the list.
    pub added: usize,
    pub rejected: Vec<Rejection>,
}

async fn campaign_id(s: &ApiState, tenant: &str, name: Option<&str>) -> ApiResult<Option<String>> {
    Ok(match name {
        Some(name) => Some(s.store.campaign(tenant, name).await?.id),
        None => None,
    })
}

#[utoipa::path(get, path = "/api/v1/dnc", tag = "dialer",
    params(DncQuery),
    responses((status = 200, body = [DncEntry]), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_dnc(
    State(s): State<ApiState>,
    auth: Auth,
    Query(q): Query<DncQuery>,
) -> ApiResult<Json<Vec<DncEntry>>> {
    let id = campaign_id(&s, auth.tenant(), q.campaign.as_deref()).await?;
    Ok(Json(s.store.dnc(auth.tenant(), id.as_deref(), q.limit.unwrap_or(1000)).await?))
}

/// Add numbers (any common format; stored in E.164). Bad numbers are rejected by index + 1.
#[utoipa::path(post, path = "/api/v1/dnc", tag = "dialer",
    request_body = DncRequest,
    responses((status = 200, body = DncReport), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn add_dnc(
    State(s): State<ApiState>,
    auth: Auth,
    ApiJson(req): ApiJson<DncRequest>,
) -> ApiResult<Json<DncReport>> {
    auth.require(Role::Deploy)?;
    let id = campaign_id(&s, auth.tenant(), req.campaign.as_deref()).await?;
    let (mut numbers, mut rejected) = (Vec::new(), Vec::new());
    for (i, raw) in req.numbers.iter().enumerate() {
        match import::e164(raw) {
            Ok(n) => numbers.push(n),
            Err(reason) => rejected.push(Rejection { line: i + 1, reason }),
        }
    }
    let reason = if req.reason.is_empty() { "added through the API" } else { &req.reason };
    let added = s.store.add_dnc(auth.tenant(), id.as_deref(), &numbers, reason).await?;
    Ok(Json(DncReport { added, rejected }))
}

#[utoipa::path(delete, path = "/api/v1/dnc/{number}", tag = "dialer",
    params(("number" = String, Path), DncQuery),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn remove_dnc(
    State(s): State<ApiState>,
    auth: Auth,
    Path(number): Path<String>,
    Query(q): Query<DncQuery>,
) -> ApiResult<StatusCode> {
    auth.require(Role::Deploy)?;
    let id = campaign_id(&s, auth.tenant(), q.campaign.as_deref()).await?;
    let number = import::e164(&number).map_err(ApiError::invalid)?;
    s.store.remove_dnc(auth.tenant(), id.as_deref(), &number).await?;
    Ok(StatusCode::NO_CONTENT)
}
