-- Voxide control plane, PostgreSQL. Times are Unix milliseconds; ids are text.
-- Keep in step with ../sqlite/0001_control_plane.sql (same tables, same columns).

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

-- API keys are stored as the SHA-256 of the secret; `prefix` (not secret) identifies a key in
-- listings and logs.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'deploy', 'read')),
    prefix      TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

-- Component bytes, content-addressed and shared by every version with the same digest.
CREATE TABLE components (
    digest      TEXT PRIMARY KEY,
    bytes       BYTEA NOT NULL
);

CREATE TABLE flows (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE flow_versions (
    tenant_id   TEXT NOT NULL,
    flow        TEXT NOT NULL,
    version     BIGINT NOT NULL,
    digest      TEXT NOT NULL REFERENCES components(digest),
    size        BIGINT NOT NULL,
    world       TEXT NOT NULL,
    manifest    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, flow, version),
    UNIQUE (tenant_id, flow, digest),
    FOREIGN KEY (tenant_id, flow) REFERENCES flows(tenant_id, name)
);

CREATE TABLE aliases (
    tenant_id   TEXT NOT NULL,
    flow        TEXT NOT NULL,
    name        TEXT NOT NULL,
    version     BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, flow, name),
    FOREIGN KEY (tenant_id, flow, version) REFERENCES flow_versions(tenant_id, flow, version)
);

-- A called number (exact, `prefix*` or `*`) or SIP URI user → weighted targets (JSON list of
-- {flow, alias | version, weight}). A pattern belongs to one tenant.
CREATE TABLE routes (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    pattern     TEXT NOT NULL UNIQUE,
    priority    BIGINT NOT NULL,
    targets     TEXT NOT NULL,
    vars        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX routes_tenant ON routes (tenant_id);
