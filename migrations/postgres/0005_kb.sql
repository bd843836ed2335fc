-- Knowledge-base documents, Postgres. Keep in step with ../sqlite/0005_kb.sql.
-- A tenant's text (plain or Markdown) its flows answer from; the search index is built
-- from these rows, so they are the whole truth.
CREATE TABLE kb_documents (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    content     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
