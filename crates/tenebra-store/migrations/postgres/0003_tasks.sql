-- Tasks: one row is both the task and its queue entry, so submitting is one insert.
-- A worker claims a row by setting status = 'running', a lease and a new fence value; every
-- later write of that worker names the fence, so a worker whose lease was taken over cannot
-- write. Times are Unix milliseconds.
CREATE TABLE tasks (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants (id),
    api_key_id        TEXT NOT NULL,
    function          TEXT NOT NULL,
    size              BIGINT NOT NULL,
    circuit_id        TEXT NOT NULL,
    -- The key set row (not a foreign key: a set may be deleted; its queued tasks then fail).
    key_set_id        TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN
                          ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'expired')),
    idempotency_key   TEXT,
    input_sha256      TEXT NOT NULL,
    input_bytes       BIGINT NOT NULL,
    result_bytes      BIGINT,
    cost_cu           BIGINT NOT NULL,
    progress_done     BIGINT NOT NULL DEFAULT 0,
    progress_total    BIGINT NOT NULL DEFAULT 0,
    error_code        TEXT,
    error_message     TEXT,
    cancel_requested  BOOLEAN NOT NULL DEFAULT FALSE,
    attempts          BIGINT NOT NULL DEFAULT 0,
    fence             BIGINT NOT NULL DEFAULT 0,
    worker_id         TEXT,
    lease_until       BIGINT,
    run_after         BIGINT NOT NULL,
    created_at        BIGINT NOT NULL,
    started_at        BIGINT,
    finished_at       BIGINT,
    wall_ms           BIGINT,
    expires_at        BIGINT,
    UNIQUE (tenant_id, idempotency_key)
);

CREATE INDEX tasks_queue ON tasks (status, run_after);
CREATE INDEX tasks_by_tenant ON tasks (tenant_id, created_at, id);
