//! Events over HTTP: a live Server-Sent Events stream per tenant, the stored log, and the
//! tenant's webhooks and their deliveries. What makes events durable and delivers webhooks is
//! the node's outbox (`voxide_runtime::node::outbox`); this module is its API.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use utoipa::{IntoParams, ToSchema};
use voxide_store::{Delivery, Event, Role, Store, Webhook};

use crate::{ApiError, ApiJson, ApiResult, ApiState, Auth, ErrorBody};

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
