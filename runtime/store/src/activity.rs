//! What calls leave behind: call detail records, recording metadata, and the event outbox
//! with its webhook deliveries.
//!
//! Invariant: an event and the state change it reports commit together ([`Store::record`]
//! writes a CDR or a recording and its events, and one pending delivery per webhook of the
//! tenant, in one transaction), so a crash can lose neither half alone, and an event that
//! committed is delivered after a restart.

use serde::{Deserialize, Serialize};
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use super::{Millis, Result, Store, StoreError, json, now, random_hex};

/// One ended call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Cdr {
    /// The call id (`CA…`), unique across restarts and nodes.
    pub id: String,
    #[serde(skip)]
    pub tenant_id: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    pub from: String,
    /// The called number or user (inbound), the dialled target (outbound).
    pub to: String,
    /// The flow that ran last (after any redirect); empty when none ran.
    pub flow: String,
    pub version: Option<i64>,
    pub digest: String,
    pub started_at: Millis,
    pub answered_at: Option<Millis>,
    pub ended_at: Millis,
    pub duration_ms: i64,
    /// `completed`, `hung-up`, `deadline-exceeded`, `trapped`, … (the flow's outcome), or for
    /// an originated call that never connected `busy`, `no-answer`, `failed`.
    pub outcome: String,
    /// The outcome in words (`trapped: wasm trap: unreachable`).
    pub detail: String,
    /// Call actions the flow performed.
    pub actions: i64,
}

/// Which CDRs to list; every field narrows.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
pub struct CdrFilter {
    /// Started at or after (Unix ms).
    pub since: Option<Millis>,
    /// Started before (Unix ms).
    pub until: Option<Millis>,
    /// The caller or the called number.
    pub number: Option<String>,
    pub flow: Option<String>,
    pub outcome: Option<String>,
    /// At most this many, newest first (default 100, at most 1000).
    pub limit: Option<i64>,
}

/// A finished recording (the WAV is in the node's recordings directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecordingMeta {
    pub id: String,
    #[serde(skip)]
    pub tenant_id: String,
    pub call_id: String,
    /// File name in the recordings directory.
    pub file: String,
    pub duration_ms: i64,
    pub channels: i64,
    pub created_at: Millis,
}

/// An event to write.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub tenant_id: String,
    /// `call.ringing`, `call.answered`, `call.dtmf`, `flow.event`, `recording.completed`,
    /// `call.redirected`, `call.completed`.
    pub kind: String,
    pub call_id: Option<String>,
    pub data: serde_json::Value,
}

/// A stored event: what SSE streams and webhooks POST.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// Unique id (`ev_…`): receivers dedupe by it (delivery is at-least-once).
    pub id: String,
    /// Commit order; the SSE event id (`Last-Event-ID` resumes after it).
    pub seq: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub call_id: Option<String>,
    pub created_at: Millis,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    #[serde(skip)]
    pub tenant_id: String,
}

/// State changes and the events that report them, committed together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Activity {
    pub cdr: Option<Cdr>,
    pub recording: Option<RecordingMeta>,
    pub events: Vec<NewEvent>,
}

/// A webhook endpoint of a tenant. The secret signs deliveries; listings show its prefix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub secret: String,
    pub created_at: Millis,
}

/// Where one event stands with one webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Delivery {
    pub event_id: String,
    pub event_seq: i64,
    #[serde(rename = "event_type")]
    pub event_kind: String,
    pub webhook_id: String,
    /// `pending`, `delivered` or `failed` (gave up after the last retry).
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: Millis,
    /// The receiver's last HTTP status, if it answered.
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<Millis>,
}

/// A delivery that is due, leased to the caller of [`Store::claim_deliveries`].
#[derive(Debug, Clone, PartialEq)]
pub struct DueDelivery {
    pub event: Event,
    pub webhook_id: String,
    pub url: String,
    pub secret: String,
    pub attempts: i64,
}

const EVENT_COLUMNS: &str = "seq, id, tenant_id, type, call_id, data, created_at";
const CDR_COLUMNS: &str = "id, tenant_id, direction, from_uri, to_user, flow, version, digest, \
     started_at, answered_at, ended_at, duration_ms, outcome, detail, actions";

impl Store {
    /// Writes `activity` in one transaction and returns the stored events (with their
    /// `seq`). Each event gets a pending delivery for every webhook its tenant has now.
    pub async fn record(&self, activity: Activity) -> Result<Vec<Event>> {
        self.record_all(vec![activity]).await
    }

    /// [`record`](Self::record) for several activities in one transaction (one commit for a
    /// burst of calls): all or none.
    pub async fn record_all(&self, batch: Vec<Activity>) -> Result<Vec<Event>> {
        let mut tx = self.pool.begin().await?;
        let mut stored = Vec::new();
        for activity in batch {
            stored.extend(write_activity(&mut tx, activity).await?);
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// The tenant's events after `after_seq`, oldest first.
    pub async fn events_after(
        &self,
        tenant_id: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<Event>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        )))
        .bind(tenant_id)
        .bind(after_seq)
        .bind(limit.clamp(1, 10_000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_row).collect()
    }

    /// The highest event sequence number of the tenant (0 when none).
    pub async fn last_event_seq(&self, tenant_id: &str) -> Result<i64> {
        Ok(sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM events WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?)
    }

    // ---- CDRs ----

    pub async fn cdrs(&self, tenant_id: &str, filter: &CdrFilter) -> Result<Vec<Cdr>> {
        let mut sql = format!("SELECT {CDR_COLUMNS} FROM cdrs WHERE tenant_id = $1");
        let mut n = 1;
        let mut next = || {
            n += 1;
            n
        };
        if filter.since.is_some() {
            sql += &format!(" AND started_at >= ${}", next());
        }
        if filter.until.is_some() {
            sql += &format!(" AND started_at < ${}", next());
        }
        if filter.number.is_some() {
            // The number itself, or the user part of a SIP/tel URI.
            let (exact, user) = (next(), next());
            sql += &format!(
                " AND (to_user = ${exact} OR to_user LIKE ${user} OR from_uri = ${exact} OR from_uri LIKE ${user})"
            );
        }
        if filter.flow.is_some() {
            sql += &format!(" AND flow = ${}", next());
        }
        if filter.outcome.is_some() {
            sql += &format!(" AND outcome = ${}", next());
        }
        sql += &format!(" ORDER BY started_at DESC, id LIMIT ${}", next());
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(tenant_id);
        if let Some(v) = filter.since {
            query = query.bind(v);
        }
        if let Some(v) = filter.until {
            query = query.bind(v);
        }
        if let Some(v) = &filter.number {
            query = query.bind(v.clone()).bind(format!("%:{}@%", like_escape(v)));
        }
        if let Some(v) = &filter.flow {
            query = query.bind(v.clone());
        }
        if let Some(v) = &filter.outcome {
            query = query.bind(v.clone());
        }
        let rows =
            query.bind(filter.limit.unwrap_or(100).clamp(1, 1000)).fetch_all(&self.pool).await?;
        rows.iter().map(cdr_row).collect()
    }

    pub async fn cdr(&self, tenant_id: &str, id: &str) -> Result<Cdr> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CDR_COLUMNS} FROM cdrs WHERE tenant_id = $1 AND id = $2"
        )))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(cdr_row)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("CDR {id}")))
    }

    // ---- recordings ----

    pub async fn recordings(&self, tenant_id: &str, limit: i64) -> Result<Vec<RecordingMeta>> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, call_id, file, duration_ms, channels, created_at FROM recordings \
             WHERE tenant_id = $1 ORDER BY created_at DESC, id LIMIT $2",
        )
        .bind(tenant_id)
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(recording_row).collect()
    }

    pub async fn recording(&self, tenant_id: &str, id: &str) -> Result<RecordingMeta> {
        let row = sqlx::query(
            "SELECT id, tenant_id, call_id, file, duration_ms, channels, created_at FROM recordings \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(recording_row)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("recording {id}")))
    }

    /// Forgets a recording; the caller removes the file.
    pub async fn delete_recording(&self, tenant_id: &str, id: &str) -> Result<RecordingMeta> {
        let meta = self.recording(tenant_id, id).await?;
        sqlx::query("DELETE FROM recordings WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(meta)
    }

    // ---- webhooks ----

    /// Registers `url` for the tenant's events from now on; a secret is generated when none
    /// is given.
    pub async fn create_webhook(
        &self,
        tenant_id: &str,
        url: &str,
        secret: Option<String>,
    ) -> Result<Webhook> {
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 2048 {
            return Err(StoreError::Invalid(format!(
                "webhook URL {url:?}: an http:// or https:// URL of at most 2048 bytes"
            )));
        }
        let secret = secret.unwrap_or_else(|| format!("whsec_{}", random_hex(24)));
        if secret.len() < 16 {
            return Err(StoreError::Invalid("a webhook secret needs at least 16 bytes".into()));
        }
        let hook = Webhook {
            id: format!("wh_{}", random_hex(8)),
            url: url.to_owned(),
            secret,
            created_at: now(),
        };
        sqlx::query(
            "INSERT INTO webhooks (id, tenant_id, url, secret, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&hook.id)
        .bind(tenant_id)
        .bind(&hook.url)
        .bind(&hook.secret)
        .bind(hook.created_at)
        .execute(&self.pool)
        .await?;
        Ok(hook)
    }

    pub async fn webhooks(&self, tenant_id: &str) -> Result<Vec<Webhook>> {
        let rows = sqlx::query(
            "SELECT id, url, secret, created_at FROM webhooks WHERE tenant_id = $1 ORDER BY created_at, id",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Webhook {
                    id: r.try_get("id")?,
                    url: r.try_get("url")?,
                    secret: r.try_get("secret")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Removes a webhook and what was still to deliver to it.
    pub async fn delete_webhook(&self, tenant_id: &str, id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM webhooks WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("webhook {id}")));
        }
        sqlx::query("DELETE FROM deliveries WHERE tenant_id = $1 AND webhook_id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest deliveries to one of the tenant's webhooks (404 for another tenant's).
    pub async fn deliveries(
        &self,
        tenant_id: &str,
        webhook_id: &str,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Delivery>> {
        if !self.webhooks(tenant_id).await?.iter().any(|w| w.id == webhook_id) {
            return Err(StoreError::NotFound(format!("webhook {webhook_id}")));
        }
        let rows = sqlx::query(
            "SELECT e.id AS event_id, d.event_seq, e.type, d.webhook_id, d.status, d.attempts, \
             d.next_attempt_at, d.last_status, d.last_error, d.delivered_at \
             FROM deliveries d JOIN events e ON e.seq = d.event_seq \
             WHERE d.tenant_id = $1 AND d.webhook_id = $2 AND ($3 = '' OR d.status = $3) \
             ORDER BY d.event_seq DESC LIMIT $4",
        )
        .bind(tenant_id)
        .bind(webhook_id)
        .bind(status.unwrap_or(""))
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Delivery {
                    event_id: r.try_get("event_id")?,
                    event_seq: r.try_get("event_seq")?,
                    event_kind: r.try_get("type")?,
                    webhook_id: r.try_get("webhook_id")?,
                    status: r.try_get("status")?,
                    attempts: r.try_get("attempts")?,
                    next_attempt_at: r.try_get("next_attempt_at")?,
                    last_status: r.try_get("last_status")?,
                    last_error: r.try_get("last_error")?,
                    delivered_at: r.try_get("delivered_at")?,
                })
            })
            .collect()
    }

    /// Up to `limit` pending deliveries that are due, oldest event first, each leased for
    /// `lease_ms` (another node, or a later call, skips them until the lease ends).
    pub async fn claim_deliveries(&self, limit: i64, lease_ms: i64) -> Result<Vec<DueDelivery>> {
        let at = now();
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT d.webhook_id, d.attempts, d.next_attempt_at, w.url, w.secret, \
             {} FROM deliveries d JOIN events e ON e.seq = d.event_seq \
             JOIN webhooks w ON w.id = d.webhook_id \
             WHERE d.status = 'pending' AND d.next_attempt_at <= $1 \
             ORDER BY d.event_seq LIMIT $2",
            EVENT_COLUMNS.split(", ").map(|c| format!("e.{c}")).collect::<Vec<_>>().join(", ")
        )))
        .bind(at)
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?;
        let mut due = Vec::with_capacity(rows.len());
        for r in &rows {
            let event = event_row(r)?;
            let webhook_id: String = r.try_get("webhook_id")?;
            let was: i64 = r.try_get("next_attempt_at")?;
            // The lease: only the node that moves `next_attempt_at` from what it read owns it.
            let leased = sqlx::query(
                "UPDATE deliveries SET next_attempt_at = $1 \
                 WHERE event_seq = $2 AND webhook_id = $3 AND status = 'pending' AND next_attempt_at = $4",
            )
            // From now, not from the read: the lease covers the attempt, however long the
            // claims before this one took.
            .bind(now() + lease_ms)
            .bind(event.seq)
            .bind(&webhook_id)
            .bind(was)
            .execute(&self.pool)
            .await?;
            if leased.rows_affected() == 1 {
                due.push(DueDelivery {
                    webhook_id,
                    url: r.try_get("url")?,
                    secret: r.try_get("secret")?,
                    attempts: r.try_get("attempts")?,
                    event,
                });
            }
        }
        Ok(due)
    }

    /// Records one delivery attempt: delivered, or failed with the next attempt at
    /// `retry_at` (`None`: give up, status `failed`).
    pub async fn delivery_attempted(
        &self,
        event_seq: i64,
        webhook_id: &str,
        outcome: std::result::Result<u16, (Option<u16>, String)>,
        retry_at: Option<Millis>,
    ) -> Result<()> {
        let at = now();
        let query = match &outcome {
            Ok(status) => sqlx::query(
                "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, \
                 last_status = $1, last_error = NULL, delivered_at = $2 \
                 WHERE event_seq = $3 AND webhook_id = $4",
            )
            .bind(i64::from(*status))
            .bind(at),
            Err((status, error)) => sqlx::query(
                // Only while still pending: a late failure (our lease ran out and another node
                // delivered it meanwhile) must not undo a delivery.
                "UPDATE deliveries SET status = $1, attempts = attempts + 1, last_status = $2, \
                 last_error = $3, next_attempt_at = $4 \
                 WHERE event_seq = $5 AND webhook_id = $6 AND status = 'pending'",
            )
            .bind(if retry_at.is_some() { "pending" } else { "failed" })
            .bind(status.map(i64::from))
            .bind(error.clone())
            .bind(retry_at.unwrap_or(at)),
        };
        query.bind(event_seq).bind(webhook_id).execute(&self.pool).await?;
        Ok(())
    }
}

/// One activity's rows, inside the caller's transaction.
async fn write_activity(tx: &mut Transaction<'_, Any>, activity: Activity) -> Result<Vec<Event>> {
    if let Some(c) = &activity.cdr {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO cdrs ({CDR_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        )))
        .bind(&c.id)
        .bind(&c.tenant_id)
        .bind(&c.direction)
        .bind(&c.from)
        .bind(&c.to)
        .bind(&c.flow)
        .bind(c.version)
        .bind(&c.digest)
        .bind(c.started_at)
        .bind(c.answered_at)
        .bind(c.ended_at)
        .bind(c.duration_ms)
        .bind(&c.outcome)
        .bind(&c.detail)
        .bind(c.actions)
        .execute(&mut **tx)
        .await?;
    }
    if let Some(r) = &activity.recording {
        sqlx::query(
            "INSERT INTO recordings (id, tenant_id, call_id, file, duration_ms, channels, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&r.id)
        .bind(&r.tenant_id)
        .bind(&r.call_id)
        .bind(&r.file)
        .bind(r.duration_ms)
        .bind(r.channels)
        .bind(r.created_at)
        .execute(&mut **tx)
        .await?;
    }
    let mut stored = Vec::with_capacity(activity.events.len());
    for e in activity.events {
        let id = format!("ev_{}", random_hex(12));
        let created_at = now();
        let seq: i64 = sqlx::query(
            "INSERT INTO events (id, tenant_id, type, call_id, data, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
        )
        .bind(&id)
        .bind(&e.tenant_id)
        .bind(&e.kind)
        .bind(e.call_id.as_deref())
        .bind(json(&e.data))
        .bind(created_at)
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?;
        sqlx::query(
            "INSERT INTO deliveries (event_seq, webhook_id, tenant_id, status, attempts, next_attempt_at) \
             SELECT $1, id, tenant_id, 'pending', 0, $2 FROM webhooks WHERE tenant_id = $3",
        )
        .bind(seq)
        .bind(created_at)
        .bind(&e.tenant_id)
        .execute(&mut **tx)
        .await?;
        stored.push(Event {
            id,
            seq,
            kind: e.kind,
            call_id: e.call_id,
            created_at,
            data: e.data,
            tenant_id: e.tenant_id,
        });
    }
    Ok(stored)
}

/// User input in a LIKE pattern, without its wildcards (`%`, `_`).
fn like_escape(s: &str) -> String {
    s.replace(['%', '_'], "")
}

fn event_row(row: &sqlx::any::AnyRow) -> Result<Event> {
    let data: String = row.try_get("data")?;
    Ok(Event {
        seq: row.try_get("seq")?,
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        kind: row.try_get("type")?,
        call_id: row.try_get("call_id")?,
        data: serde_json::from_str(&data)
            .map_err(|e| StoreError::Invalid(format!("stored event data: {e}")))?,
        created_at: row.try_get("created_at")?,
    })
}

fn cdr_row(row: &sqlx::any::AnyRow) -> Result<Cdr> {
    Ok(Cdr {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        direction: row.try_get("direction")?,
        from: row.try_get("from_uri")?,
        to: row.try_get("to_user")?,
        flow: row.try_get("flow")?,
        version: row.try_get("version")?,
        digest: row.try_get("digest")?,
        started_at: row.try_get("started_at")?,
        answered_at: row.try_get("answered_at")?,
        ended_at: row.try_get("ended_at")?,
        duration_ms: row.try_get("duration_ms")?,
        outcome: row.try_get("outcome")?,
        detail: row.try_get("detail")?,
        actions: row.try_get("actions")?,
    })
}

fn recording_row(row: &sqlx::any::AnyRow) -> Result<RecordingMeta> {
    Ok(RecordingMeta {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        call_id: row.try_get("call_id")?,
        file: row.try_get("file")?,
        duration_ms: row.try_get("duration_ms")?,
        channels: row.try_get("channels")?,
        created_at: row.try_get("created_at")?,
    })
}
