-- Functions deployed by tenants: a circuit (canonical JSON) per name and version. The
-- content id (SHA-256 of the canonical JSON) addresses a version too.
CREATE TABLE functions (
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    name          TEXT NOT NULL,
    version       INTEGER NOT NULL,
    circuit_id    TEXT NOT NULL,
    circuit_json  TEXT NOT NULL,
    cost_cu       INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name, version),
    UNIQUE (tenant_id, name, circuit_id)
);
