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

/// Adds the errors every authenticated operation can answer.
fn op(summary: &str, scope: &str, mut responses: Value, extra: Value) -> Value {
    if let Some(r) = responses.as_object_mut() {
        r.insert(
            "401".into(),
            error_response("missing, unknown or revoked API key"),
        );
        r.insert(
            "403".into(),
            error_response("the API key's scope is too small"),
        );
    }
    let mut o = json!({
        "summary": summary,
        "description": format!("Needs an API key of scope `{scope}` or above."),
        "security": [{"bearer": []}],
        "responses": responses,
    });
    if let (Some(o), Some(extra)) = (o.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            o.insert(k.clone(), v.clone());
        }
    }
    o
}

/// The whole document.
pub fn document() -> Value {
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
            "/readyz": {"get": {"summary": "Readiness (the database answers)", "responses": {"200": {"description": "ready"}, "500": error_response("not ready")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text format 0.0.4"}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/v1/api-keys": {
                "get": op("List the tenant's API keys", "admin", json!({"200": json_list("keys", "ApiKey")}), json!({})),
                "post": op("Create an API key (the token is shown once)", "admin",
                    json!({"201": json_response("created", "ApiKey"), "400": error_response("invalid name or scope")}),
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
                           "400": error_response("invalid_key_set or invalid_ttl"), "413": error_response("body_too_large")}),
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
                           "400": error_response("invalid_circuit"), "409": error_response("name_taken: a built-in's name"), "413": error_response("body_too_large")}),
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
            "/v1/tasks": {
                "get": op("List the tenant's tasks, newest first", "read",
                    json!({"200": json_response("a page", "TaskPage"), "400": error_response("invalid_request or invalid_query")}),
                    json!({"parameters": [query("status", "string", "queued, running, succeeded, failed, cancelled or expired"), query("limit", "integer", "1..1000, default 50"), query("after", "string", "the previous page's `next`")]})),
                "post": op("Submit an encrypted input (from `tenebra encrypt` or the SDK); its header names the function, circuit and key set", "compute",
                    json!({"202": json_response("queued", "Task"), "200": json_response("the task this Idempotency-Key already created", "Task"),
                           "400": error_response("invalid_input, unknown_function, invalid_size, circuit_mismatch or unknown_key_set"),
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
