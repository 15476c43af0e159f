-- Uploaded evaluation key sets. The key bytes live in the blob store; this row is the index.
CREATE TABLE key_sets (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    fingerprint  TEXT NOT NULL,
    size_bytes   BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    UNIQUE (tenant_id, fingerprint)
);
