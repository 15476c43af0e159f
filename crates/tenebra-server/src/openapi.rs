//! The OpenAPI 3.1 description served at `/openapi.json`, written next to the routes it
//! describes (a test checks that every documented operation is routed).

use serde_json::{json, Value};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn json_response(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
    })
}

fn json_list(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {
            "type": "array", "items": {"$ref": format!("#/components/schemas/{schema}")}
        }}}
    })
}

fn binary(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    })
}

fn id_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
}

fn query(name: &str, ty: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": {"type": ty}, "description": description})
}

/// Merges `extra` (parameters, request body) into the operation `o`, then documents the
/// errors it can answer whatever it does: 429 (`too_many` says why), 503 (the database does
/// not answer), 400 when it takes a query or a body (unknown query fields, malformed values
/// and bodies are refused), and 415 when that body is JSON.
fn finish(mut o: Value, extra: Value, too_many: &str) -> Value {
    if let (Some(o), Some(extra)) = (o.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            o.insert(k.clone(), v.clone());
        }
    }
    let takes_json = o["requestBody"]["content"]
        .get("application/json")
        .is_some();
    let takes_input = o.get("requestBody").is_some()
        || o["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
    if let Some(r) = o["responses"].as_object_mut() {
        let why = match r.get("429").and_then(|e| e["description"].as_str()) {
            Some(own) => format!("{own}; or {too_many}"),
            None => too_many.to_owned(),
        };
        r.insert("429".into(), error_response(&why));
        if takes_input && !r.contains_key("400") {
            r.insert(
                "400".into(),
                error_response("invalid_query or invalid_json"),
            );
        }
        r.insert(
            "503".into(),
            error_response(
                "database_unavailable: the database does not answer (Retry-After); \
                 not_on_this_node: this node's database role may not act across tenants",
            ),
        );
        if takes_json {
            r.insert(
                "415".into(),
                error_response("unsupported_media_type: not `Content-Type: application/json`"),
            );
        }
    }
    o
}

/// Adds the errors every authenticated operation can answer.
fn op(summary: &str, scope: &str, mut responses: Value, extra: Value) -> Value {
    if let Some(r) = responses.as_object_mut() {
        r.insert(
            "401".into(),
            error_response("missing, unknown or revoked API key"),
        );
        r.entry("403")
            .or_insert_with(|| error_response("the API key's scope is too small"));
    }
    let o = json!({
        "summary": summary,
        "description": format!("Needs an API key of scope `{scope}` or above."),
        "security": [{"bearer": []}],
        "responses": responses,
    });
    finish(
        o,
        extra,
        "rate_limited (the plan's requests per second per API key or per tenant, Retry-After), or too_many_failed_authentications from this address",
    )
}

/// An operation of the operator API (the operator token, not an API key).
fn operator_op(summary: &str, mut responses: Value, extra: Value) -> Value {
    if let Some(r) = responses.as_object_mut() {
        r.insert(
            "401".into(),
            error_response("missing or wrong operator token"),
        );
        r.insert(
            "403".into(),
            error_response("the operator API is off (no operator token configured)"),
        );
    }
    let o = json!({
        "summary": summary,
        "description": "Needs the operator token (TENEBRA_OPERATOR_TOKEN).",
        "security": [{"operator": []}],
        "responses": responses,
    });
    finish(
        o,
        extra,
        "too_many_failed_authentications from this address (Retry-After)",
    )
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn json_body(schema: &str) -> Value {
    json!({"requestBody": {"required": true, "content": {"application/json": {"schema": schema_ref(schema)}}}})
}

/// Metering, limits and audit: paths.
fn account_paths() -> Value {
    let quota_errors = "402 cu_quota_exceeded (Retry-After: the period's end), 403 task_cu_cap / storage_quota_exceeded / key_set_quota_exceeded, 429 too_many_active_tasks or rate_limited (Retry-After)";
    json!({
        "/v1/quote": {
            "post": op("What running a function costs (CU and price on the tenant's plan), before it runs", "read",
                json!({"200": json_response("the quote", "Quote"), "400": error_response("invalid_size or invalid_json"), "404": error_response("no such function")}),
                json_body("QuoteRequest"))
        },
        "/v1/usage": {
            "get": op("The tenant's usage records (one per ended task, oldest first) and their totals", "read",
                json!({"200": json_response("a page and the totals", "Usage"), "400": error_response("invalid_query")}),
                json!({"parameters": [query("period", "string", "YYYY-MM (instead of from/to)"), query("from", "integer", "Unix ms, inclusive"), query("to", "integer", "Unix ms, exclusive"),
                    query("function", "string", "one function"), query("api_key_id", "string", "one API key"),
                    query("limit", "integer", "1..1000, default 100"), query("after", "string", "the previous page's `next`")]}))
        },
        "/v1/invoices": {
            "get": op("The tenant's invoice for a billing period (calendar month, UTC), JSON or CSV; it adds up exactly to the usage records", "read",
                json!({"200": {"description": "the invoice", "content": {
                    "application/json": {"schema": schema_ref("Invoice")}, "text/csv": {"schema": {"type": "string"}}}},
                    "400": error_response("invalid_period or invalid_format")}),
                json!({"parameters": [query("period", "string", "YYYY-MM (default: the current one)"), query("format", "string", "json (default) or csv")]}))
        },
        "/v1/limits": {
            "get": op(&format!("The tenant's plan (prices, limits) and current usage against it. Limits are enforced at submit and upload: {quota_errors}"), "read",
                json!({"200": json_response("plan and usage", "Limits")}), json!({}))
        },
        "/v1/audit": {
            "get": op("The tenant's audit records (hash-chained), in sequence order", "read",
                json!({"200": json_list("records", "AuditRecord")}),
                json!({"parameters": [query("after", "integer", "records after this sequence number"), query("limit", "integer", "1..1000, default 100")]}))
        },
        "/v1/audit/verify": {
            "get": operator_op("Recompute the audit chain and check it against the signed checkpoints",
                json!({"200": json_response("what the check found", "AuditVerify")}), json!({}))
        },
        "/v1/admin/plans": {
            "get": operator_op("Every plan", json!({"200": json_list("plans", "Plan")}), json!({}))
        },
        "/v1/admin/plans/{name}": {
            "put": operator_op("Create or replace a plan",
                json!({"200": json_response("the plan", "Plan"), "400": error_response("invalid_plan")}),
                {let mut e = json_body("Plan"); e["parameters"] = json!([id_param("name")]); e})
        },
        "/v1/admin/tenants/{id}/plan": {
            "put": operator_op("Put a tenant on a plan",
                json!({"204": {"description": "done"}, "404": error_response("no such tenant or plan")}),
                {let mut e = json!({"requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["plan"], "properties": {"plan": {"type": "string"}}}}}}}); e["parameters"] = json!([id_param("id")]); e})
        },
        "/v1/admin/tenants/{id}/billing": {
            "get": operator_op("The Stripe customer a tenant's usage is billed to",
                json!({"200": json_response("the mapping", "TenantBilling"), "404": error_response("no such tenant")}),
                json!({"parameters": [id_param("id")]})),
            "put": operator_op("Bill a tenant's usage to a Stripe customer (null: to none; its meter events wait)",
                json!({"200": json_response("the mapping", "TenantBilling"), "400": error_response("invalid_customer"), "404": error_response("no such tenant")}),
                {let mut e = json_body("TenantBilling"); e["parameters"] = json!([id_param("id")]); e})
        },
        "/v1/admin/audit": {
            "get": operator_op("Every audit record (all tenants and the operator's)",
                json!({"200": json_list("records", "AuditRecord")}),
                json!({"parameters": [query("after", "integer", "records after this sequence number"), query("limit", "integer", "1..1000, default 100")]}))
        }
    })
}

/// Metering, limits and audit: schemas.
fn account_schemas() -> Value {
    let int = json!({"type": "integer"});
    let opt_int = json!({"type": ["integer", "null"]});
    let string = json!({"type": "string"});
    json!({
        "QuoteRequest": {"type": "object", "required": ["function", "size"], "additionalProperties": false, "properties": {
            "function": string, "size": int, "version": int, "circuit_id": string}},
        "Quote": {"type": "object", "description": "Money is in nano-units of the billing currency.", "properties": {
            "function": string, "size": int, "circuit_id": string, "cu": int, "plan": string,
            "price_nanos_per_cu": int, "amount_nanos": int}},
        "UsageRecord": {"type": "object", "properties": {
            "task_id": string, "api_key_id": string, "function": string, "function_version": int,
            "circuit_id": string, "key_set_id": string, "outcome": {"enum": ["succeeded", "failed", "cancelled"]},
            "error_code": string, "cu": int, "charged_cu": {"type": "integer", "description": "0 when the task failed by the service's fault"},
            "price_nanos_per_cu": int, "amount_nanos": int, "wall_ms": int, "input_bytes": int,
            "result_bytes": int, "attempts": int, "recorded_at": int}},
        "Usage": {"type": "object", "properties": {
            "records": {"type": "array", "items": schema_ref("UsageRecord")},
            "totals": {"type": "object", "properties": {"tasks": int, "cu": int, "charged_cu": int, "amount_nanos": int}},
            "next": string}},
        "Invoice": {"type": "object", "properties": {
            "tenant_id": string, "period": string, "from": int, "to": int, "total_nanos": int,
            "lines": {"type": "array", "items": {"type": "object", "properties": {
                "function": string, "price_nanos_per_cu": int, "tasks": int, "charged_cu": int, "amount_nanos": int}}}}},
        "Plan": {"type": "object", "required": ["name", "price_nanos_per_cu"], "additionalProperties": false, "properties": {
            "name": string, "price_nanos_per_cu": int,
            "function_prices": {"type": "object", "additionalProperties": int},
            "cu_per_period": opt_int, "max_active_tasks": opt_int, "max_stored_bytes": opt_int,
            "max_key_sets": opt_int, "max_task_cu": opt_int, "requests_per_second": opt_int,
            "tenant_requests_per_second": opt_int}},
        "TenantBilling": {"type": "object", "additionalProperties": false, "properties": {
            "stripe_customer_id": {"type": ["string", "null"], "pattern": "^cus_[A-Za-z0-9]{1,250}$"}}},
        "Limits": {"type": "object", "properties": {
            "plan": schema_ref("Plan"), "period": string, "period_from": int, "period_to": int,
            "period_cu": int, "active_tasks": int, "stored_bytes": int, "key_sets": int}},
        "AuditRecord": {"type": "object", "properties": {
            "seq": int, "at": int, "tenant_id": string, "actor": string, "action": string, "target": string,
            "outcome": string, "request_id": string, "prev_hash": string,
            "hash": {"type": "string", "description": "SHA-256 over the previous hash and the record's canonical encoding"}}},
        "AuditVerify": {"type": "object", "properties": {
            "ok": {"type": "boolean"}, "records": int, "last_seq": int, "last_hash": string,
            "checkpoints": int, "first_bad_seq": int, "reason": string}}
    })
}

/// Adds `extra`'s entries to the object at `doc[key]`.
fn merge(doc: &mut Value, key: &[&str], extra: Value) {
    let mut target = doc;
    for k in key {
        target = &mut target[*k];
    }
    if let (Some(t), Value::Object(e)) = (target.as_object_mut(), extra) {
        t.extend(e);
    }
}

/// The whole document.
pub fn document() -> Value {
    let mut doc = base_document();
    merge(&mut doc, &["paths"], account_paths());
    merge(&mut doc, &["components", "schemas"], account_schemas());
    merge(
        &mut doc,
        &["components", "securitySchemes"],
        json!({"operator": {"type": "http", "scheme": "bearer", "description": "The operator token."}}),
    );
    doc
}

/// Tenants' keys, key sets, functions and tasks.
fn base_document() -> Value {
    let task_id = id_param("id");
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Tenebra",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Compute on encrypted data (TFHE). Clients encrypt locally, upload an evaluation key set once, submit encrypted inputs as tasks, and decrypt the results locally. Errors are {\"error\": {\"code\", \"message\"}}."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "An API key, `tnb_...`."}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}
                }}},
                "ApiKey": {"type": "object", "required": ["id", "name", "scope", "created_at"], "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"},
                    "scope": {"enum": ["admin", "compute", "read"]},
                    "created_at": {"type": "integer", "description": "Unix milliseconds"},
                    "revoked_at": {"type": "integer"},
                    "token": {"type": "string", "description": "Only in the response that creates the key."}
                }},
                "CreateApiKey": {"type": "object", "required": ["name", "scope"], "additionalProperties": false, "properties": {
                    "name": {"type": "string"}, "scope": {"enum": ["admin", "compute", "read"]}
                }},
                "KeySet": {"type": "object", "required": ["id", "fingerprint", "size_bytes", "created_at"], "properties": {
                    "id": {"type": "string"},
                    "fingerprint": {"type": "string", "description": "SHA-256 of the server key and public key: the client-side key set id."},
                    "size_bytes": {"type": "integer"}, "created_at": {"type": "integer"},
                    "expires_at": {"type": "integer", "description": "When the set is deleted (uploads with ttl_secs)."}
                }},
                "Function": {"type": "object", "required": ["name", "summary", "signature", "kind", "min_size", "max_size"], "properties": {
                    "name": {"type": "string"}, "summary": {"type": "string"}, "signature": {"type": "string"},
                    "kind": {"enum": ["builtin", "deployed"]},
                    "min_size": {"type": "integer"}, "max_size": {"type": "integer"},
                    "version": {"type": "integer"},
                    "at_size": {"type": "object", "properties": {
                        "size": {"type": "integer"}, "circuit_id": {"type": "string"},
                        "cost_cu": {"type": "integer"}, "ops": {"type": "integer"}
                    }}
                }},
                "Task": {"type": "object", "required": ["id", "function", "size", "circuit_id", "key_set_id", "status", "progress", "cost_cu", "attempts", "cancel_requested", "input_bytes", "created_at"], "properties": {
                    "id": {"type": "string"}, "function": {"type": "string"}, "size": {"type": "integer"},
                    "circuit_id": {"type": "string"}, "key_set_id": {"type": "string"},
                    "status": {"enum": ["queued", "running", "succeeded", "failed", "cancelled", "expired"]},
                    "progress": {"type": "object", "properties": {"done": {"type": "integer"}, "total": {"type": "integer"}}},
                    "cost_cu": {"type": "integer"}, "attempts": {"type": "integer"},
                    "cancel_requested": {"type": "boolean"},
                    "input_bytes": {"type": "integer"}, "result_bytes": {"type": "integer"},
                    "created_at": {"type": "integer"}, "started_at": {"type": "integer"},
                    "finished_at": {"type": "integer"}, "wall_ms": {"type": "integer"},
                    "expires_at": {"type": "integer"},
                    "error": {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}
                }},
                "TaskPage": {"type": "object", "required": ["tasks"], "properties": {
                    "tasks": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}},
                    "next": {"type": "string", "description": "Pass as `after` for the next page."}
                }}
            }
        },
        "paths": {
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}},
            "/readyz": {"get": {"summary": "Readiness (the database answers)", "responses": {"200": {"description": "ready"}, "500": error_response("not ready"), "503": error_response("database_unavailable")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics, for the metrics token (`--metrics-token`; off without one)", "responses": {"200": {"description": "text format 0.0.4"}, "401": error_response("not the metrics token"), "404": error_response("no metrics token is set"), "429": error_response("too_many_failed_authentications from this address")}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/v1/api-keys": {
                "get": op("List the tenant's API keys", "admin", json!({"200": json_list("keys", "ApiKey")}), json!({})),
                "post": op("Create an API key (the token is shown once)", "admin",
                    json!({"201": json_response("created", "ApiKey"), "400": error_response("invalid name or scope"), "403": error_response("api_key_quota_exceeded: 100 live keys")}),
                    json!({"requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CreateApiKey"}}}}}))
            },
            "/v1/api-keys/{id}": {
                "delete": op("Revoke an API key", "admin",
                    json!({"200": json_response("revoked", "ApiKey"), "404": error_response("no such key")}),
                    json!({"parameters": [id_param("id")]}))
            },
            "/v1/key-sets": {
                "get": op("List the tenant's key sets", "read", json!({"200": json_list("key sets", "KeySet")}), json!({})),
                "post": op("Upload a key set (`tenebra keys upload`: compressed server key + compact public key, streamed, size-limited, conformance-checked); the same set again returns the existing one", "compute",
                    json!({"201": json_response("created", "KeySet"), "200": json_response("already uploaded", "KeySet"),
                           "400": error_response("invalid_key_set or invalid_ttl"), "403": error_response("key_set_quota_exceeded or storage_quota_exceeded"), "413": error_response("body_too_large"), "429": error_response("too_many_uploads")}),
                    json!({"parameters": [query("ttl_secs", "integer", "delete the set after this many seconds (>= 60)")],
                           "requestBody": {"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}))
            },
            "/v1/key-sets/{id}": {
                "get": op("A key set", "read", json!({"200": json_response("the key set", "KeySet"), "404": error_response("no such key set")}), json!({"parameters": [id_param("id")]})),
                "delete": op("Delete a key set and its blob", "compute", json!({"204": {"description": "deleted"}, "404": error_response("no such key set")}), json!({"parameters": [id_param("id")]}))
            },
            "/v1/functions": {
                "get": op("List the built-ins and the tenant's deployed functions", "read", json!({"200": json_list("functions", "Function")}), json!({})),
                "post": op("Deploy a circuit (canonical JSON from a builder) as the next version of its name", "compute",
                    json!({"201": json_response("deployed", "Function"), "200": json_response("this circuit is already a version", "Function"),
                           "400": error_response("invalid_circuit, circuit_too_large, circuit_too_deep"), "409": error_response("name_taken: a built-in's name"), "413": error_response("body_too_large")}),
                    json!({"requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}}}))
            },
            "/v1/functions/{name}": {
                "get": op("A function; `size` prices a built-in at that size, `version` picks a deployed version (default: the latest)", "read",
                    json!({"200": json_response("the function", "Function"), "400": error_response("invalid_size or invalid_query"), "404": error_response("no such function")}),
                    json!({"parameters": [id_param("name"), query("size", "integer", "built-ins: input size"), query("version", "integer", "deployed: version"), query("circuit_id", "string", "deployed: the version with this content id")]})),
                "delete": op("Delete a deployed function (one version with `version`, else all)", "compute",
                    json!({"204": {"description": "deleted"}, "404": error_response("no such function"), "409": error_response("builtin")}),
                    json!({"parameters": [id_param("name"), query("version", "integer", "the version to delete")]}))
            },
            "/v1/functions/{name}/circuit": {
                "get": op("The canonical circuit JSON inputs are encrypted against", "read",
                    json!({"200": {"description": "circuit JSON", "content": {"application/json": {"schema": {"type": "object"}}}}, "400": error_response("invalid_size"), "404": error_response("no such function")}),
                    json!({"parameters": [id_param("name"), query("size", "integer", "built-ins: input size"), query("version", "integer", "deployed: version"), query("circuit_id", "string", "deployed: the version with this content id")]}))
            },
            "/v1/models": {
                "get": op("The tenant's models and the models shared with it (pages, never weights)", "read",
                    json!({"200": {"description": "model pages", "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}}}}), json!({})),
                "post": op("Upload a model (JSON: dense layers and activations) as the next version of its name; the page states each split's precision", "compute",
                    json!({"201": {"description": "stored"}, "200": {"description": "the version holding the same JSON"}, "400": error_response("invalid_model or model_too_deep"), "413": error_response("body_too_large")}), json!({}))
            },
            "/v1/models/{owner}/{name}": {
                "get": op("A model's page (owner, or a tenant it was shared with)", "read",
                    json!({"200": {"description": "the page"}, "404": error_response("no such model for this tenant")}),
                    json!({"parameters": [id_param("owner"), id_param("name"), query("version", "integer", "default: the latest")]}))
            },
            "/v1/models/{owner}/{name}/signature": {
                "get": op("What to encrypt for to run the first `layers` layers: task function name, BFV circuit signature, quantization", "read",
                    json!({"200": {"description": "the signature"}, "400": error_response("invalid_split or model_too_deep"), "404": error_response("no such model for this tenant")}),
                    json!({"parameters": [id_param("owner"), id_param("name"), query("layers", "integer", "layers run encrypted"), query("version", "integer", "default: the latest")]}))
            },
            "/v1/models/{owner}/{name}/layers": {
                "get": op("The plaintext layers after a split (the owner, or a grantee the owner shares layers with)", "read",
                    json!({"200": {"description": "the remaining layers"}, "400": error_response("invalid_split"), "403": error_response("forbidden"), "404": error_response("no such model for this tenant")}),
                    json!({"parameters": [id_param("owner"), id_param("name"), query("from", "integer", "the split"), query("version", "integer", "default: the latest")]}))
            },
            "/v1/model-grants/{name}": {
                "get": op("The grants of one of the tenant's models", "read",
                    json!({"200": {"description": "grants"}}), json!({"parameters": [id_param("name")]}))
            },
            "/v1/model-offers": {
                "get": op("Grants offered to the tenant that it has not accepted", "read",
                    json!({"200": {"description": "offers"}}), json!({}))
            },
            "/v1/model-offers/{owner}/{name}": {
                "post": op("Accept an offered grant: only then may the tenant use the model", "compute",
                    json!({"200": {"description": "the accepted grant"}, "404": error_response("no such offer")}),
                    json!({"parameters": [id_param("owner"), id_param("name")]})),
                "delete": op("Decline an offered grant, or give up an accepted one", "compute",
                    json!({"204": {"description": "declined"}, "404": error_response("no such offer")}),
                    json!({"parameters": [id_param("owner"), id_param("name")]}))
            },
            "/v1/model-grants/{name}/{tenant}": {
                "put": op("Offer another tenant the use of a model (every version), which it must accept (`POST /v1/model-offers/...`); `share_layers` lets it fetch the layers after a split", "compute",
                    json!({"200": {"description": "the grant"}, "400": error_response("invalid_grant"), "404": error_response("no such model or tenant")}),
                    json!({"parameters": [id_param("name"), id_param("tenant")]})),
                "delete": op("Revoke a grant", "compute",
                    json!({"204": {"description": "revoked"}, "404": error_response("no such grant")}),
                    json!({"parameters": [id_param("name"), id_param("tenant")]}))
            },
            "/v1/tasks": {
                "get": op("List the tenant's tasks, newest first", "read",
                    json!({"200": json_response("a page", "TaskPage"), "400": error_response("invalid_request or invalid_query")}),
                    json!({"parameters": [query("status", "string", "queued, running, succeeded, failed, cancelled or expired"), query("limit", "integer", "1..1000, default 50"), query("after", "string", "the previous page's `next`")]})),
                "post": op("Submit an encrypted input (from `tenebra encrypt` or the SDK); its header names the function, circuit and key set", "compute",
                    json!({"202": json_response("queued", "Task"), "200": json_response("the task this Idempotency-Key already created", "Task"),
                           "400": error_response("invalid_input, unknown_function, invalid_size, circuit_mismatch, circuit_too_large, unknown_key_set or key_set_expired"), "429": error_response("too_many_requests: this tenant's circuits are being checked"),
                           "409": error_response("idempotency_conflict: the key was used with another input"), "413": error_response("body_too_large")}),
                    json!({"parameters": [{"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string", "maxLength": 255}}],
                           "requestBody": {"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}))
            },
            "/v1/tasks/{id}": {
                "get": op("A task's status and progress; with `wait`, a long poll that answers as soon as the task is final", "read",
                    json!({"200": json_response("the task", "Task"), "404": error_response("no such task")}),
                    json!({"parameters": [task_id, query("wait", "integer", "seconds to wait for the task to end (at most 60)")]}))
            },
            "/v1/tasks/{id}/cancel": {
                "post": op("Cancel a task: a queued one at once, a running one at its next step", "compute",
                    json!({"200": json_response("the task now", "Task"), "404": error_response("no such task")}), json!({"parameters": [id_param("id")]}))
            },
            "/v1/tasks/{id}/result": {
                "get": op("Download a succeeded task's encrypted result", "read",
                    json!({"200": binary("the result bundle"), "404": error_response("no such task"),
                           "409": error_response("not_ready, task_failed or task_cancelled"), "410": error_response("result_expired")}),
                    json!({"parameters": [id_param("id")]}))
            }
        }
    })
}
