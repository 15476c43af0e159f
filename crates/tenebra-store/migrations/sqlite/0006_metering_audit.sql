-- Plans: the prices and limits an operator sets. Every tenant is on one (`default` unless
-- assigned). Prices are integers in nano-units of the billing currency per CU, so invoices
-- add up exactly; a NULL limit is no limit.
CREATE TABLE plans (
    name                TEXT PRIMARY KEY,
    price_nanos_per_cu  INTEGER NOT NULL CHECK (price_nanos_per_cu >= 0),
    cu_per_period       INTEGER,
    max_active_tasks    INTEGER,
    max_stored_bytes    INTEGER,
    max_key_sets        INTEGER,
    max_task_cu         INTEGER,
    requests_per_second INTEGER,
    updated_at          INTEGER NOT NULL
);

INSERT INTO plans (name, price_nanos_per_cu, updated_at) VALUES ('default', 1000, 0);

-- Per-function prices of a plan (override the plan's price per CU).
CREATE TABLE plan_prices (
    plan                TEXT NOT NULL REFERENCES plans (name) ON DELETE CASCADE,
    function            TEXT NOT NULL,
    price_nanos_per_cu  INTEGER NOT NULL CHECK (price_nanos_per_cu >= 0),
    PRIMARY KEY (plan, function)
);

ALTER TABLE tenants ADD COLUMN plan TEXT NOT NULL DEFAULT 'default';

-- Usage: exactly one record per ended task (keyed by the task), written in the transaction
-- that ends it, priced at that moment.
CREATE TABLE usage_records (
    task_id             TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants (id),
    api_key_id          TEXT NOT NULL,
    function            TEXT NOT NULL,
    function_version    INTEGER,
    circuit_id          TEXT NOT NULL,
    key_set_id          TEXT NOT NULL,
    outcome             TEXT NOT NULL,
    error_code          TEXT,
    -- CU of the nodes that ran; what is billed (0 when the failure was ours).
    cu                  INTEGER NOT NULL,
    charged_cu          INTEGER NOT NULL,
    price_nanos_per_cu  INTEGER NOT NULL,
    amount_nanos        INTEGER NOT NULL,
    wall_ms             INTEGER NOT NULL,
    input_bytes         INTEGER NOT NULL,
    result_bytes        INTEGER NOT NULL,
    attempts            INTEGER NOT NULL,
    recorded_at         INTEGER NOT NULL
);

CREATE INDEX usage_by_tenant ON usage_records (tenant_id, recorded_at, task_id);
CREATE INDEX usage_by_time ON usage_records (recorded_at, task_id);

-- Meter events delivered to the billing provider: each at most once.
CREATE TABLE meter_exports (
    task_id  TEXT PRIMARY KEY,
    sent_at  INTEGER NOT NULL
);

-- Requests per API key and second, shared by every API node (rate limits).
CREATE TABLE rate_windows (
    api_key_id  TEXT NOT NULL,
    second      INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    PRIMARY KEY (api_key_id, second)
);

-- The audit log: a hash chain. Each record's hash is SHA-256 over the previous hash and the
-- record's canonical encoding; appends serialize on the one `audit_head` row.
CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    tenant_id   TEXT,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);

CREATE INDEX audit_by_tenant ON audit_log (tenant_id, seq);

CREATE TABLE audit_head (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    seq   INTEGER NOT NULL,
    hash  TEXT NOT NULL
);

INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
