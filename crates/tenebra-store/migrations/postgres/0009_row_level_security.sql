-- Row-level security: defense in depth for tenant isolation. Every query of the store runs
-- in a transaction that names whose rows it may touch: `tenebra.tenant_id` (a tenant's
-- request) or `tenebra.scope = 'system'` (workers, sweeps, operator views), both set with
-- `set_config(..., true)`, so they end with the transaction. A query that forgets its
-- tenant filter sees and changes only that tenant's rows; one outside either scope sees
-- nothing. FORCE makes the policies bind the tables' owner too (only superusers and roles
-- with BYPASSRLS skip them).
--
-- The system scope is honoured only for the roles listed in `cross_tenant_roles` (the role
-- that ran the migrations is listed). An API node may connect as a role that is not: it
-- then cannot read across tenants at all, even by setting the scope itself, and finds API
-- keys through `tenebra_api_key_by_hash` (below). ARCHITECTURE.md shows how to create one.

CREATE TABLE cross_tenant_roles (
    role_name  TEXT PRIMARY KEY
);
INSERT INTO cross_tenant_roles (role_name) VALUES (current_user);

-- Whether the current transaction is in the system scope, as a role allowed to be.
CREATE FUNCTION tenebra_crosses_tenants() RETURNS BOOLEAN
LANGUAGE sql STABLE AS $$
    SELECT current_setting('tenebra.scope', true) = 'system'
        AND EXISTS (SELECT 1 FROM cross_tenant_roles WHERE role_name = current_user)
$$;

-- Whether the current transaction may touch `tenant`'s rows.
CREATE FUNCTION tenebra_sees(tenant TEXT) RETURNS BOOLEAN
LANGUAGE sql STABLE AS $$
    SELECT tenant = current_setting('tenebra.tenant_id', true)
        OR tenebra_crosses_tenants()
$$;

-- Whether the current role may enter the system scope (the store asks as it enters it, so
-- a role that may not gets a clear error instead of empty answers).
CREATE FUNCTION tenebra_may_cross_tenants() RETURNS BOOLEAN
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM cross_tenant_roles WHERE role_name = current_user)
$$;

-- Every table is bound, its owner included (FORCE).
DO $$
DECLARE
    t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenants', 'api_keys', 'key_sets', 'tasks', 'functions',
                             'usage_records', 'version_counters', 'audit_log', 'model_grants',
                             'models', 'meter_exports'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    END LOOP;
    -- The tables whose rows are one tenant's, named by `tenant_id`.
    FOREACH t IN ARRAY ARRAY['api_keys', 'key_sets', 'tasks', 'functions', 'usage_records',
                             'version_counters'] LOOP
        EXECUTE format('CREATE POLICY tenant_rows ON %I USING (tenebra_sees(tenant_id))', t);
    END LOOP;
END
$$;

CREATE POLICY tenant_rows ON tenants USING (tenebra_sees(id));

-- Records of no tenant (operator requests, failed authentications) are the system's to
-- read; any role may append one.
CREATE POLICY tenant_rows ON audit_log
    USING (tenebra_sees(tenant_id) OR (tenant_id IS NULL AND tenebra_crosses_tenants()));
CREATE POLICY tenantless_appends ON audit_log FOR INSERT WITH CHECK (tenant_id IS NULL);

-- A grant is its owner's and its grantee's.
CREATE POLICY tenant_rows ON model_grants
    USING (tenebra_sees(owner_id) OR tenebra_sees(grantee_id));

-- A model is its owner's; a tenant it was granted to (and that accepted) may read it.
CREATE POLICY owner_rows ON models USING (tenebra_sees(owner_id));
CREATE POLICY granted_rows ON models FOR SELECT USING (EXISTS (
    SELECT 1 FROM model_grants g
    WHERE g.owner_id = models.owner_id AND g.name = models.name
      AND g.grantee_id = current_setting('tenebra.tenant_id', true)
      AND g.accepted_at IS NOT NULL));

-- Meter exports name tasks of every tenant: the system's only.
CREATE POLICY system_rows ON meter_exports USING (tenebra_crosses_tenants());

-- Authentication finds a key by its token's HMAC before any tenant is known: the one
-- cross-tenant read an API node needs, as the tables' owner and only by exact hash. (The
-- scope is set and restored in the body: PostgreSQL 15 lets only superusers attach a custom
-- setting to a function.)
CREATE FUNCTION tenebra_api_key_by_hash(hash BYTEA)
RETURNS TABLE (id TEXT, tenant_id TEXT, name TEXT, scope TEXT, created_at BIGINT,
               revoked_at BIGINT)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    outer_scope TEXT := current_setting('tenebra.scope', true);
BEGIN
    PERFORM set_config('tenebra.scope', 'system', true);
    RETURN QUERY SELECT k.id, k.tenant_id, k.name, k.scope, k.created_at, k.revoked_at
        FROM api_keys k WHERE k.token_hash = hash;
    PERFORM set_config('tenebra.scope', COALESCE(outer_scope, ''), true);
END
$$;

-- The queue depth (a metric every node reports): a count, no rows.
CREATE FUNCTION tenebra_queue_depth() RETURNS BIGINT
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    outer_scope TEXT := current_setting('tenebra.scope', true);
    n BIGINT;
BEGIN
    PERFORM set_config('tenebra.scope', 'system', true);
    SELECT COUNT(*) INTO n FROM tasks WHERE status = 'queued';
    PERFORM set_config('tenebra.scope', COALESCE(outer_scope, ''), true);
    RETURN n;
END
$$;
