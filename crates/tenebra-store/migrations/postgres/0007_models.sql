-- The model repository: models uploaded by their owners (tenants), versioned per name and
-- addressed by owner, name and version; the JSON is checked before it is stored, and the
-- model page (layer shapes, splits, measured precision) is computed once at upload.
CREATE TABLE models (
    owner_id      TEXT NOT NULL REFERENCES tenants (id),
    name          TEXT NOT NULL,
    version       BIGINT NOT NULL,
    model_sha256  TEXT NOT NULL,
    model_json    TEXT NOT NULL,
    page_json     TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (owner_id, name, version),
    UNIQUE (owner_id, name, model_sha256)
);

-- Use of a model granted by its owner to another tenant (every version of the name);
-- share_layers lets the grantee fetch the plaintext layers after a split.
CREATE TABLE model_grants (
    owner_id      TEXT NOT NULL REFERENCES tenants (id),
    name          TEXT NOT NULL,
    grantee_id    TEXT NOT NULL REFERENCES tenants (id),
    share_layers  BOOLEAN NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (owner_id, name, grantee_id)
);
CREATE INDEX model_grants_grantee ON model_grants (grantee_id);
