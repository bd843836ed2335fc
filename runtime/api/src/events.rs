//! Events: what calls report becomes durable here, then reaches people two ways — a live
//! Server-Sent Events stream per tenant, and signed webhooks with retries.
//!
//! [`record_activity`] drains the call hub's activity channel into the store: a CDR and its
//! `call.completed` event (or a recording and `recording.completed`) in one transaction, with a
//! pending delivery per webhook. Only then is an event published to live streams, so a
//! stream never shows what a restart could lose. [`deliver_webhooks`] works the pending
//! deliveries: POST the event, signed; 2xx is delivered; anything else is retried with
//! exponential backoff until it gives up; leases let several nodes share the work, and
//! delivery is at-least-once (receivers dedupe by the event `id`).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::{Notify, broadcast, mpsc};
use utoipa::{IntoParams, ToSchema};
use voxide_runtime::hub::{Activity, CallRecord};
use voxide_store::{Cdr, Delivery, Event, NewEvent, RecordingMeta, Role, Store, Webhook};

use crate::{ApiError, ApiJson, ApiResult, ApiState, Auth, ErrorBody};

/// Where committed events go live: streams subscribe, the dispatcher is woken.
#[derive(Debug, Clone)]
pub struct EventBus {
    pub live: broadcast::Sender<Arc<Event>>,
    pub committed: Arc<Notify>,
}

impl Default for EventBus {
    fn default() -> EventBus {
        EventBus { live: broadcast::channel(4096).0, committed: Arc::new(Notify::new()) }
    }
}

fn cdr_of(r: CallRecord) -> Cdr {
    Cdr {
        duration_ms: r.ended_at - r.answered_at.unwrap_or(r.ended_at),
        id: r.id,
        tenant_id: r.tenant,
        direction: r.direction.to_owned(),
        from: r.from,
        to: r.to,
        flow: r.flow,
        version: r.version,
        digest: r.digest,
        started_at: r.started_at,
        answered_at: r.answered_at,
        ended_at: r.ended_at,
        outcome: r.outcome,
        detail: r.detail,
        actions: i64::try_from(r.actions).unwrap_or(i64::MAX),
    }
}

/// One hub report as one store transaction.
fn activity_of(a: Activity) -> voxide_store::Activity {
    let event = |tenant: &str, call: &str, kind: &str, data| NewEvent {
        tenant_id: tenant.to_owned(),
        kind: kind.to_owned(),
        call_id: Some(call.to_owned()),
        data,
    };
    match a {
        Activity::Event { tenant, call_id, kind, data } => voxide_store::Activity {
            events: vec![event(&tenant, &call_id, kind, data)],
            ..Default::default()
        },
        Activity::Recording { tenant, call_id, recording } => {
            let meta = RecordingMeta {
                id: recording.id,
                tenant_id: tenant.clone(),
                call_id: call_id.clone(),
                file: recording.file,
                duration_ms: i64::try_from(recording.duration_ms).unwrap_or(i64::MAX),
                channels: i64::from(recording.channels),
                created_at: voxide_runtime::hub::now_ms(),
            };
            let data = serde_json::to_value(&meta).unwrap_or_default();
            voxide_store::Activity {
                events: vec![event(&tenant, &call_id, "recording.completed", data)],
                recording: Some(meta),
                cdr: None,
            }
        }
        Activity::Completed(record) => {
            let cdr = cdr_of(record);
            let data = serde_json::to_value(&cdr).unwrap_or_default();
            voxide_store::Activity {
                events: vec![event(&cdr.tenant_id, &cdr.id, "call.completed", data)],
                cdr: Some(cdr),
                recording: None,
            }
        }
    }
}

/// Most activities written in one transaction.
const MAX_BATCH: usize = 512;

/// Writes what the hub reports until its channel closes: whatever has queued up goes in one
/// transaction (a burst of calls costs one commit). A write that fails is retried (the
/// database may be restarting); if it keeps failing, each activity is tried on its own so
/// one bad record cannot take the others with it.
pub async fn record_activity(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<Activity>,
    bus: EventBus,
) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.clear();
        batch.push(activity_of(first));
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(a) => batch.push(activity_of(a)),
                Err(_) => break,
            }
        }
        let stored = write_batch(&store, &batch).await;
        for event in stored {
            let _ = bus.live.send(Arc::new(event));
        }
        bus.committed.notify_one();
    }
}

async fn write_batch(store: &Store, batch: &[voxide_store::Activity]) -> Vec<Event> {
    let mut delay = Duration::from_millis(100);
    loop {
        match store.record_all(batch.to_vec()).await {
            Ok(events) => return events,
            Err(e) if delay <= Duration::from_secs(2) => {
                tracing::warn!(activities = batch.len(), "writing call activity (will retry): {e}");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => {
                tracing::warn!("writing call activity as a batch failed ({e}); one by one");
                break;
            }
        }
    }
    let mut stored = Vec::new();
    for activity in batch {
        match store.record(activity.clone()).await {
            Ok(events) => stored.extend(events),
            Err(e) => tracing::error!(?activity, "call activity lost: {e}"),
        }
    }
    stored
}

/// How webhooks are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Wait before the first retry; doubles after each failure.
    pub base: Duration,
    /// The longest wait between two attempts.
    pub max_delay: Duration,
    /// Attempts before a delivery is marked `failed`.
    pub max_attempts: i64,
    /// How long one attempt may take.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    /// 1 s, 2 s, 4 s … capped at 10 min, 12 attempts (about an hour), 10 s per attempt.
    fn default() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(1),
            max_delay: Duration::from_secs(600),
            max_attempts: 12,
            timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait after the `attempts`-th failed attempt.
    pub fn delay(&self, attempts: i64) -> Duration {
        let factor = 1u32 << attempts.clamp(1, 20).saturating_sub(1);
        self.base.saturating_mul(factor).min(self.max_delay)
    }
}

/// The `Voxide-Signature` header value for `body` sent at `timestamp` (Unix seconds):
/// `t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    #[allow(clippy::expect_used)]
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// How much longer than one attempt's timeout a claimed delivery stays leased.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// Delivers pending webhook events until the process ends: woken when events commit, and
/// every second for retries that come due.
pub async fn deliver_webhooks(store: Store, bus: EventBus, policy: RetryPolicy) {
    let client = match reqwest::Client::builder()
        .timeout(policy.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("webhooks disabled: no HTTP client: {e}");
            return;
        }
    };
    // A claimed delivery is leased for one attempt and the write recording it; a node that
    // dies holding the lease leaves the delivery to be retried when it runs out.
    let lease_ms = i64::try_from((policy.timeout + LEASE_MARGIN).as_millis()).unwrap_or(i64::MAX);
    loop {
        let due = match store.claim_deliveries(64, lease_ms).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!("webhook deliveries: {e}");
                Vec::new()
            }
        };
        if due.is_empty() {
            tokio::select! {
                () = bus.committed.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        let mut attempts = tokio::task::JoinSet::new();
        for d in due {
            let (client, store, policy) = (client.clone(), store.clone(), policy.clone());
            attempts.spawn(async move {
                let outcome = post_event(&client, &d.url, &d.secret, &d.event).await;
                let tries = d.attempts + 1;
                let retry_at = (outcome.is_err() && tries < policy.max_attempts).then(|| {
                    voxide_runtime::hub::now_ms()
                        + i64::try_from(policy.delay(tries).as_millis()).unwrap_or(i64::MAX)
                });
                match &outcome {
                    Ok(_) => tracing::debug!(event = %d.event.id, webhook = %d.webhook_id, "delivered"),
                    Err((_, e)) if retry_at.is_some() => tracing::info!(event = %d.event.id, webhook = %d.webhook_id, attempt = tries, "webhook delivery failed, will retry: {e}"),
                    Err((_, e)) => tracing::warn!(event = %d.event.id, webhook = %d.webhook_id, attempt = tries, "webhook delivery failed, giving up: {e}"),
                }
                if let Err(e) =
                    store.delivery_attempted(d.event.seq, &d.webhook_id, outcome, retry_at).await
                {
                    // The lease runs out and the delivery is tried again: at-least-once.
                    tracing::warn!("recording a webhook attempt: {e}");
                }
            });
        }
        while attempts.join_next().await.is_some() {}
    }
}

/// One POST of `event` to `url`: the HTTP status if 2xx, else the status (if any) and why.
async fn post_event(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    event: &Event,
) -> Result<u16, (Option<u16>, String)> {
    let body = serde_json::to_vec(event).map_err(|e| (None, e.to_string()))?;
    let timestamp = voxide_runtime::hub::now_ms() / 1000;
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("user-agent", concat!("voxide/", env!("CARGO_PKG_VERSION")))
        .header("voxide-event-id", &event.id)
        .header("voxide-event-type", &event.kind)
        .header("voxide-signature", signature(secret, timestamp, &body))
        .body(body)
        .send()
        .await
        .map_err(|e| (None, error_chain(&e)))?;
    let status = response.status().as_u16();
    if response.status().is_success() {
        Ok(status)
    } else {
        Err((Some(status), format!("HTTP {status}")))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

// ---- routes ----

#[derive(Debug, Deserialize, IntoParams)]
pub struct EventsQuery {
    /// Resume after this event `seq` (like the `Last-Event-ID` header); default: only new
    /// events.
    pub after: Option<i64>,
}

/// The tenant's events as they happen (Server-Sent Events: `id` is the event's `seq`, `event`
/// its type, `data` the event JSON). Reconnect with `Last-Event-ID` (or `?after=`) to get
/// what was missed from the outbox first.
#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    params(EventsQuery),
    responses((status = 200, content_type = "text/event-stream", body = String,
        description = "a stream of events"), (status = 401, body = ErrorBody)))]
pub(crate) async fn stream_events(
    State(s): State<ApiState>,
    auth: Auth,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Sse<impl futures_util::Stream<Item = Result<SseEvent, std::convert::Infallible>>>> {
    let tenant = auth.tenant().to_owned();
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .or(q.after);
    // Subscribe first, then read the outbox: nothing falls between the two.
    let live = s.events.live.subscribe();
    let after = match resume {
        Some(seq) => seq,
        None => s.store.last_event_seq(&tenant).await?,
    };
    let (tx, rx) = mpsc::channel::<SseEvent>(256);
    tokio::spawn(pump_events(s.store.clone(), tenant, after, live, tx));
    let stream =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Feeds one stream: the outbox after `after`, then live events; when the stream falls
/// behind the live channel, back to the outbox. Ends when the client goes away.
async fn pump_events(
    store: Store,
    tenant: String,
    mut after: i64,
    mut live: broadcast::Receiver<Arc<Event>>,
    tx: mpsc::Sender<SseEvent>,
) {
    let sse = |e: &Event| {
        SseEvent::default()
            .id(e.seq.to_string())
            .event(e.kind.clone())
            .data(serde_json::to_string(e).unwrap_or_default())
    };
    'replay: loop {
        loop {
            let page = match store.events_after(&tenant, after, 500).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!("event stream: {e}");
                    return;
                }
            };
            for e in &page {
                if tx.send(sse(e)).await.is_err() {
                    return;
                }
                after = e.seq;
            }
            if page.len() < 500 {
                break;
            }
        }
        loop {
            tokio::select! {
                received = live.recv() => match received {
                    Ok(e) if e.tenant_id == tenant && e.seq > after => {
                        if tx.send(sse(&e)).await.is_err() {
                            return;
                        }
                        after = e.seq;
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => continue 'replay,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                () = tx.closed() => return,
            }
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct EventLogQuery {
    /// Events after this `seq` (default 0: from the oldest kept).
    pub after: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<i64>,
}

/// The tenant's stored events after a point, oldest first (the outbox, for catching up
/// without a stream).
#[utoipa::path(get, path = "/api/v1/events/log", tag = "events",
    params(EventLogQuery),
    responses((status = 200, body = [Event]), (status = 401, body = ErrorBody)))]
pub(crate) async fn event_log(
    State(s): State<ApiState>,
    auth: Auth,
    Query(q): Query<EventLogQuery>,
) -> ApiResult<Json<Vec<Event>>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(s.store.events_after(auth.tenant(), q.after.unwrap_or(0), limit).await?))
}

/// A webhook to register.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NewWebhook {
    /// Where events are POSTed (http:// or https://).
    pub url: String,
    /// Signing secret (at least 16 bytes); generated when absent.
    pub secret: Option<String>,
}

/// A webhook as listed: the secret is only shown when the webhook is created.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookSummary {
    pub id: String,
    pub url: String,
    /// The first characters of the secret.
    pub secret_prefix: String,
    pub created_at: i64,
}

/// Register a webhook: every event of the tenant from now on is POSTed to it as JSON, signed
/// in `Voxide-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, with
/// `Voxide-Event-Id`; retried with exponential backoff until a 2xx (at-least-once).
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks",
    request_body = NewWebhook,
    responses((status = 201, body = Webhook, description = "created; the secret is shown once"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn add_webhook(
    State(s): State<ApiState>,
    auth: Auth,
    ApiJson(new): ApiJson<NewWebhook>,
) -> ApiResult<(StatusCode, Json<Webhook>)> {
    auth.require(Role::Admin)?;
    let hook = s.store.create_webhook(auth.tenant(), &new.url, new.secret).await?;
    Ok((StatusCode::CREATED, Json(hook)))
}

#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = [WebhookSummary]), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_webhooks(
    State(s): State<ApiState>,
    auth: Auth,
) -> ApiResult<Json<Vec<WebhookSummary>>> {
    let hooks = s.store.webhooks(auth.tenant()).await?;
    Ok(Json(
        hooks
            .into_iter()
            .map(|w| WebhookSummary {
                secret_prefix: w.secret.chars().take(10).collect(),
                id: w.id,
                url: w.url,
                created_at: w.created_at,
            })
            .collect(),
    ))
}

#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_webhook(
    State(s): State<ApiState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    auth.require(Role::Admin)?;
    s.store.delete_webhook(auth.tenant(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct DeliveriesQuery {
    /// Only `pending`, `delivered` or `failed`.
    pub status: Option<String>,
    /// At most this many, newest first (default 100).
    pub limit: Option<i64>,
}

/// Where each event stands with a webhook: attempts, last status or error, delivered when.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path), DeliveriesQuery),
    responses((status = 200, body = [Delivery]), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_deliveries(
    State(s): State<ApiState>,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<DeliveriesQuery>,
) -> ApiResult<Json<Vec<Delivery>>> {
    if let Some(status) = &q.status
        && !["pending", "delivered", "failed"].contains(&status.as_str())
    {
        return Err(ApiError::invalid(format!(
            "status {status:?}: one of pending, delivered, failed"
        )));
    }
    let limit = q.limit.unwrap_or(100);
    Ok(Json(s.store.deliveries(auth.tenant(), &id, q.status.as_deref(), limit).await?))
}
