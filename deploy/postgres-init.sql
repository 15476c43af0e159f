-- Run once by the postgres image on an empty data directory (docker-entrypoint-initdb.d).
-- Tenebra connects as an ordinary role that owns its database: row-level security binds
-- every role but superusers and BYPASSRLS ones, so the service must be neither.
-- (An API node may also run as a role that cannot read across tenants: ARCHITECTURE.md,
-- `tenebra-store`, has the SQL to run once the migrations have.)
CREATE ROLE tenebra LOGIN PASSWORD 'tenebra' NOSUPERUSER NOBYPASSRLS;
CREATE DATABASE tenebra OWNER tenebra;
