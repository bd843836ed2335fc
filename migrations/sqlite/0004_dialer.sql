-- The outbound dialer: campaigns, their leads, do-not-call lists and one audit row per
-- attempt, SQLite. Keep in step with ../postgres/0004_dialer.sql (same tables, same columns).

-- A campaign. `settings` is the JSON the API validated (agents, trunks, caller id, calling
-- window, retry plan, wrap-up, information message); the columns are what is queried.
CREATE TABLE campaigns (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    name            TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('draft', 'running', 'paused', 'finished')),
    strategy        TEXT NOT NULL,
    abandon_target  DOUBLE PRECISION NOT NULL,
    settings        TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

-- A number to call for a campaign, and where it stands (the lead state machine's
-- `Progress`: status, attempts, attempts by outcome, disposition, next attempt).
CREATE TABLE leads (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    campaign_id      TEXT NOT NULL REFERENCES campaigns(id),
    position         BIGINT NOT NULL,
    number           TEXT NOT NULL,
    tz               TEXT,
    region           TEXT,
    postcode         TEXT,
    vars             TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('new', 'dialing', 'retry', 'done')),
    attempts         BIGINT NOT NULL,
    outcomes         TEXT NOT NULL,
    disposition      TEXT,
    next_attempt_at  BIGINT,
    note             TEXT NOT NULL,
    updated_at       BIGINT NOT NULL,
    UNIQUE (campaign_id, number)
);
CREATE INDEX leads_due ON leads (campaign_id, status, next_attempt_at, position);

-- Do-not-call numbers: the tenant's (campaign_id '') and each campaign's.
CREATE TABLE dnc (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    campaign_id  TEXT NOT NULL,
    number       TEXT NOT NULL,
    reason       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, campaign_id, number)
);

-- One row per attempt, written when the call is placed and completed when it ends: the
-- called party's local time, the rules applied, ring and answer-to-agent times, what was
-- played. Also the per-number history compliance reads (attempts in 24 h, last abandon).
CREATE TABLE attempts (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id),
    campaign_id         TEXT NOT NULL,
    lead_id             TEXT NOT NULL,
    number              TEXT NOT NULL,
    call_id             TEXT,
    started_at          BIGINT NOT NULL,
    ended_at            BIGINT,
    outcome             TEXT,
    local_time          TEXT NOT NULL,
    rules               TEXT NOT NULL,
    ring_ms             BIGINT,
    answer_to_agent_ms  BIGINT,
    agent               TEXT,
    played              TEXT,
    detail              TEXT NOT NULL
);
CREATE INDEX attempts_number ON attempts (tenant_id, number, started_at);
CREATE INDEX attempts_campaign ON attempts (campaign_id, started_at);
