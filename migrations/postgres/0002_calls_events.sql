-- Call records, recordings, the event outbox and webhooks, Postgres.
-- Keep in step with ../sqlite/0002_calls_events.sql (same tables, same columns).

-- One row per ended call, written in the same transaction as its `call.completed` event.
CREATE TABLE cdrs (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    direction    TEXT NOT NULL,
    from_uri     TEXT NOT NULL,
    to_user      TEXT NOT NULL,
    flow         TEXT NOT NULL,
    version      BIGINT,
    digest       TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    answered_at  BIGINT,
    ended_at     BIGINT NOT NULL,
    duration_ms  BIGINT NOT NULL,
    outcome      TEXT NOT NULL,
    detail       TEXT NOT NULL,
    actions      BIGINT NOT NULL
);
CREATE INDEX cdrs_tenant_started ON cdrs (tenant_id, started_at);

-- Recording metadata; the WAV stays in the node's recordings directory.
CREATE TABLE recordings (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    call_id      TEXT NOT NULL,
    file         TEXT NOT NULL,
    duration_ms  BIGINT NOT NULL,
    channels     BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX recordings_tenant ON recordings (tenant_id, created_at);

-- The outbox: every event, in commit order (`seq`), kept for replay (SSE Last-Event-ID).
CREATE TABLE events (
    seq          BIGSERIAL PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    type         TEXT NOT NULL,
    call_id      TEXT,
    data         TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX events_tenant_seq ON events (tenant_id, seq);

CREATE TABLE webhooks (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    url          TEXT NOT NULL,
    secret       TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);

-- One row per (event, webhook), created with the event: what is still to deliver survives
-- a restart. `next_attempt_at` doubles as a lease while a node delivers it.
CREATE TABLE deliveries (
    event_seq        BIGINT NOT NULL,
    webhook_id       TEXT NOT NULL,
    tenant_id        TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         BIGINT NOT NULL,
    next_attempt_at  BIGINT NOT NULL,
    last_status      BIGINT,
    last_error       TEXT,
    delivered_at     BIGINT,
    PRIMARY KEY (event_seq, webhook_id)
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_webhook ON deliveries (tenant_id, webhook_id, event_seq);
