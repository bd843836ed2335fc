//! The outbox side of events: what calls report becomes durable here, then reaches people —
//! live streams (the API's SSE, through the [`EventBus`]) and signed webhooks with retries.
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

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::{Notify, broadcast, mpsc};
use voxide_store::{Cdr, Event, NewEvent, RecordingMeta, Store};

use crate::hub::{Activity, CallRecord, now_ms};

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
                created_at: now_ms(),
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

/// Writes one event that no call reports (a campaign's), then streams and delivers it like
/// the calls' events.
pub async fn emit(store: &Store, bus: &EventBus, event: voxide_store::NewEvent) {
    let activity = voxide_store::Activity { events: vec![event], ..Default::default() };
    for event in write_batch(store, &[activity]).await {
        let _ = bus.live.send(Arc::new(event));
    }
    bus.committed.notify_one();
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
                    now_ms()
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
    let timestamp = now_ms() / 1000;
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
