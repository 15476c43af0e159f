-- A plan's rate limit per tenant, over all its API keys (requests_per_second stays per key).
ALTER TABLE plans ADD COLUMN tenant_requests_per_second BIGINT;

-- The last version number given to each versioned name (a function of a tenant, a model of
-- an owner): a deleted latest version's number is never given again.
CREATE TABLE version_counters (
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    kind          TEXT NOT NULL CHECK (kind IN ('function', 'model')),
    name          TEXT NOT NULL,
    last_version  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, kind, name)
);

INSERT INTO version_counters (tenant_id, kind, name, last_version)
    SELECT tenant_id, 'function', name, MAX(version) FROM functions GROUP BY tenant_id, name;
INSERT INTO version_counters (tenant_id, kind, name, last_version)
    SELECT owner_id, 'model', name, MAX(version) FROM models GROUP BY owner_id, name;

-- A rate window counts one bucket: an API key id, or `tenant:<tenant id>`.
ALTER TABLE rate_windows RENAME COLUMN api_key_id TO bucket;

-- Stored functions and models count toward the storage quota: their bytes, kept per row.
ALTER TABLE functions ADD COLUMN stored_bytes BIGINT NOT NULL DEFAULT 0;
UPDATE functions SET stored_bytes = LENGTH(circuit_json);
ALTER TABLE models ADD COLUMN stored_bytes BIGINT NOT NULL DEFAULT 0;
UPDATE models SET stored_bytes = LENGTH(model_json) + LENGTH(page_json);

-- What a function listing shows of a version, computed once at deploy, so that listing does
-- not parse every stored circuit (NULL for versions deployed before: those are parsed).
ALTER TABLE functions ADD COLUMN scheme TEXT;
ALTER TABLE functions ADD COLUMN signature TEXT;
ALTER TABLE functions ADD COLUMN ops BIGINT;

-- A grant is an offer until the grantee accepts it (grants made before are accepted).
ALTER TABLE model_grants ADD COLUMN accepted_at BIGINT;
UPDATE model_grants SET accepted_at = created_at;
