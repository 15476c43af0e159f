-- Tasks: one row is both the task and its queue entry, so submitting is one insert.
-- A worker claims a row by setting status = 'running', a lease and a new fence value; every
-- later write of that worker names the fence, so a worker whose lease was taken over cannot
-- write. Times are Unix milliseconds.
CREATE TABLE tasks (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants (id),
    api_key_id        TEXT NOT NULL,
    function          TEXT NOT NULL,
    size              INTEGER NOT NULL,
    circuit_id        TEXT NOT NULL,
    -- The key set row (not a foreign key: a set may be deleted; its queued tasks then fail).
    key_set_id        TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN
                          ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'expired')),
    idempotency_key   TEXT,
    input_sha256      TEXT NOT NULL,
    input_bytes       INTEGER NOT NULL,
    result_bytes      INTEGER,
    cost_cu           INTEGER NOT NULL,
    progress_done     INTEGER NOT NULL DEFAULT 0,
    progress_total    INTEGER NOT NULL DEFAULT 0,
    error_code        TEXT,
    error_message     TEXT,
    cancel_requested  BOOLEAN NOT NULL DEFAULT FALSE,
    attempts          INTEGER NOT NULL DEFAULT 0,
    fence             INTEGER NOT NULL DEFAULT 0,
    worker_id         TEXT,
    lease_until       INTEGER,
    run_after         INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    started_at        INTEGER,
    finished_at       INTEGER,
    wall_ms           INTEGER,
    expires_at        INTEGER,
    UNIQUE (tenant_id, idempotency_key)
);

CREATE INDEX tasks_queue ON tasks (status, run_after);
CREATE INDEX tasks_by_tenant ON tasks (tenant_id, created_at, id);
