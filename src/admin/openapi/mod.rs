//! The OpenAPI 3.1 document of the management API, served at `/openapi.json`. A test holds it in step
//! with [`super::OPERATIONS`] and with what the server answers.

mod key_kinds;

use serde_json::{Value, json};

use key_kinds::{browser_key_members, end_users, project_schemas, trial_claim};

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn ok(description: &str, schema: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn body(schema: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

/// The common failures of an authenticated operation, plus `extra`.
fn errors(extra: &[(&str, &str)]) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("400".into(), error_response("Invalid request; `field` names the offending field"));
    m.insert("401".into(), error_response("Missing or invalid token"));
    m.insert("403".into(), error_response("The token's kind may not call this operation"));
    m.insert("405".into(), error_response("Method not allowed"));
    m.insert("413".into(), error_response("Request body over 64 KiB"));
    for (code, what) in extra {
        m.insert((*code).into(), error_response(what));
    }
    m
}

fn responses(success: (&str, Value), extra: &[(&str, &str)]) -> Value {
    let mut m = errors(extra);
    m.insert(success.0.into(), success.1);
    Value::Object(m)
}

/// `limit` and `after` of a list operation (see `page.rs`).
fn page_params() -> Value {
    json!([
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "description": "Items on the page"},
        {"name": "after", "in": "query", "schema": {"type": "string", "pattern": "^[A-Za-z0-9_]{1,64}$"}, "description": "The last id of the previous page (its last_id)"}
    ])
}

/// A page of `item`s, oldest first.
fn list_of(item: &str) -> Value {
    json!({
        "type": "object", "required": ["object", "data", "first_id", "last_id", "has_more"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")}},
            "first_id": {"type": ["string", "null"]},
            "last_id": {"type": ["string", "null"]},
            "has_more": {"type": "boolean", "description": "Whether a page follows: ask again with after = last_id"}
        }
    })
}

fn project_param() -> Value {
    json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "description": "The project's id (prj_…)"}])
}

/// What a usage report may be grouped by.
const USAGE_GROUPS: [&str; 4] = ["day", "model", "key", "project"];

fn id_param() -> Value {
    json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "description": "The key's id (or key prefix)"}])
}

/// What the document says an email is; account creation applies the same test.
pub fn is_email(text: &str) -> bool {
    let mut parts = text.splitn(2, '@');
    let (local, domain) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    text.chars().count() <= 254
        && !local.is_empty()
        && !domain.is_empty()
        && !text.chars().any(char::is_whitespace)
        && !local.contains('@')
}

/// The pattern form of [`is_email`]. Whitespace is spelled out as Rust's `char::is_whitespace` reads it
/// (Unicode White_Space), since a pattern's `\\s` differs between dialects (ECMA-262 leaves out U+0085).
const EMAIL_PATTERN: &str = concat!(
    "^[^@\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]+",
    "@[^\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]+$"
);
/// Names: no control characters (1-128 of them is stated by lengths).
const NAME_PATTERN: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// Model names and globs: printable ASCII without space.
const MODEL_PATTERN: &str = "^[!-~]{1,128}$";
/// Descriptions: no control characters but tab and line feed.
const DESCRIPTION_PATTERN: &str = "^[^\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f]*$";
/// An IPv4 address with an optional prefix length.
const IPV4_NETWORK_PATTERN: &str = "^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(/(3[0-2]|[12]?[0-9]))?$";
/// An exact origin as the document promises it is taken: http(s), a DNS name of up to four labels, an
/// optional port up to 9999. The server also takes longer names, IP literals, other ports and one leading
/// `*.` label (see the member's description).
const ORIGIN_PATTERN: &str = "^https?://[A-Za-z0-9]([A-Za-z0-9-]{0,30}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,30}[A-Za-z0-9])?){0,3}(:[1-9][0-9]{0,3})?$";
/// The largest token count JSON carries exactly.
const MAX_TOKENS: u64 = 9_007_199_254_740_991;

pub fn document(config: &crate::config::Config) -> Value {
    let account_token = json!([{"accessToken": []}]);
    let operator = json!([{"operatorToken": []}]);
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "tollgate management API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Accounts, login, service keys and usage. Account operations take an access token from /v1/auth/login; account administration takes the operator token (TOLLGATE_ADMIN_TOKEN). Neither can call provider routes, and service keys cannot call this API."
        },
        "paths": {
            "/v1/accounts": {
                "post": {
                    "operationId": "createAccount", "summary": "Create an account", "security": operator,
                    "requestBody": body("CreateAccount"),
                    "responses": responses(("201", ok("The account", "Account")), &[("409", "Email already in use"), ("429", "Too many password hashes queued; retry after Retry-After seconds")])
                },
                "get": {
                    "operationId": "listAccounts", "summary": "List accounts, oldest first, a page at a time", "security": operator,
                    "parameters": page_params(),
                    "responses": responses(("200", ok("A page of accounts", "AccountList")), &[("404", "`after` is not an id in this list")])
                }
            },
            "/v1/accounts/{id}": {
                "patch": {
                    "operationId": "updateAccount", "summary": "Set an account's plan or key cap, or disable it", "security": operator,
                    "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                    "requestBody": body("PatchAccount"),
                    "responses": responses(("200", ok("The account", "Account")), &[("404", "No such account")])
                }
            },
            "/v1/plans": {
                "get": {
                    "operationId": "listPlans", "summary": "The plans proxy.toml defines, with their monthly token quotas", "security": operator,
                    "responses": responses(("200", ok("The plans", "PlanList")), &[])
                }
            },
            "/v1/auth/login": {
                "post": {
                    "operationId": "login", "summary": "Exchange email and password for an access token", "security": [],
                    "requestBody": body("Login"),
                    "responses": responses(("200", ok("An access token", "LoginResponse")), &[("403", "The account is disabled (answered only to the right password)"), ("429", "Too many attempts from this address or for this account, or too many verifications queued; retry after Retry-After seconds")])
                }
            },
            "/v1/auth/logout": {
                "post": {
                    "operationId": "logout", "summary": "End every access token of the account, this one included", "security": account_token,
                    "responses": responses(("200", ok("Logged out", "LogoutResponse")), &[])
                }
            },
            "/v1/auth/password": {
                "post": {
                    "operationId": "changePassword", "summary": "Change the password (the old one is required); every earlier access token ends, and a new one is returned", "security": account_token,
                    "requestBody": body("ChangePassword"),
                    "responses": responses(("200", ok("A new access token", "LoginResponse")), &[("429", "Too many verifications queued; retry after Retry-After seconds")])
                }
            },
            "/v1/auth/keys": {
                "post": {
                    "operationId": "createKey", "summary": "Create a service key (its secret is returned only here)", "security": account_token,
                    "requestBody": body("CreateKey"),
                    "responses": responses(("201", ok("The key and its secret", "KeyCreated")), &[("404", "project_id names no project of this account"), ("409", "The account's or the project's key cap is reached, or identity is required where the server cannot make signing secrets (signing_unavailable)")])
                },
                "get": {
                    "operationId": "listKeys", "summary": "List the account's keys (never a secret), oldest first, a page at a time", "security": account_token,
                    "parameters": page_params(),
                    "responses": responses(("200", ok("A page of keys", "KeyList")), &[("404", "`after` is not an id in this list")])
                }
            },
            "/v1/auth/keys/{id}": {
                "get": {
                    "operationId": "getKey", "summary": "One key", "security": account_token, "parameters": id_param(),
                    "responses": responses(("200", ok("The key", "Key")), &[("404", "No such key in this account")])
                },
                "patch": {
                    "operationId": "updateKey", "summary": "Rename a key or change its limits, scopes and allowlists", "security": account_token,
                    "parameters": id_param(), "requestBody": body("PatchKey"),
                    "responses": responses(("200", ok("The key", "Key")), &[("404", "No such key in this account"), ("409", "A member that does not suit this kind of key (kind_mismatch), or identity required where the server cannot make signing secrets (signing_unavailable)")])
                },
                "delete": {
                    "operationId": "revokeKey", "summary": "Revoke a key at once", "security": account_token, "parameters": id_param(),
                    "responses": responses(("200", ok("The revoked key", "Key")), &[("404", "No such key in this account")])
                }
            },
            "/v1/auth/keys/{id}/rotate": {
                "post": {
                    "operationId": "rotateKey", "summary": "Replace a key: a new secret now, the old key revoked at once or after grace_seconds",
                    "description": "A key has at most one pending replacement: a key in its grace period cannot be rotated again (409 rotation_pending). With grace_seconds both keys are active for a while, so the rotation must fit under the account's key cap (409 key_cap_reached); without it the rotation is a swap and always fits.",
                    "security": account_token, "parameters": id_param(), "requestBody": body("Rotate"),
                    "responses": responses(("201", ok("The new key and its secret", "KeyCreated")), &[("404", "No such key in this account"), ("409", "The key is not active, already has a pending replacement, or a grace period would exceed the key cap")])
                }
            },
            "/v1/projects": {
                "post": {
                    "operationId": "createProject", "summary": "Create a project: a group of keys under a key cap of its own (default 5) beside the account's", "security": account_token,
                    "requestBody": body("CreateProject"),
                    "responses": responses(("201", ok("The project", "Project")), &[("409", "The account has a project of that name")])
                },
                "get": {
                    "operationId": "listProjects", "summary": "The account's projects, oldest first, with their active keys", "security": account_token,
                    "responses": responses(("200", ok("The projects", "ProjectList")), &[])
                }
            },
            "/v1/projects/{id}": {
                "get": {
                    "operationId": "getProject", "summary": "One project", "security": account_token, "parameters": project_param(),
                    "responses": responses(("200", ok("The project", "Project")), &[("404", "No such project in this account")])
                },
                "patch": {
                    "operationId": "updateProject", "summary": "Rename a project or change its key cap (a cap below its active keys only stops new ones)", "security": account_token,
                    "parameters": project_param(), "requestBody": body("PatchProject"),
                    "responses": responses(("200", ok("The project", "Project")), &[("404", "No such project in this account"), ("409", "The account has a project of that name")])
                },
                "delete": {
                    "operationId": "deleteProject", "summary": "Delete a project that holds no active key", "security": account_token, "parameters": project_param(),
                    "responses": responses(("200", ok("Deleted", "ProjectDeleted")), &[("404", "No such project in this account"), ("409", "The project still has active keys (project_has_keys)")])
                }
            },
            "/v1/usage": {
                "get": {
                    "operationId": "getUsage", "summary": "The account's usage by day, model, key or project", "security": account_token,
                    "parameters": [
                        {"name": "key_id", "in": "query", "schema": {"type": "string"}},
                        {"name": "project_id", "in": "query", "schema": {"type": "string"}},
                        {"name": "from", "in": "query", "schema": {"type": "string", "format": "date"}},
                        {"name": "to", "in": "query", "schema": {"type": "string", "format": "date"}},
                        {"name": "group_by", "in": "query", "schema": {"type": "string", "enum": USAGE_GROUPS}}
                    ],
                    "responses": responses(("200", ok("Usage", "Usage")), &[("404", "No such key or project in this account")])
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi", "summary": "This document", "security": [],
                    "responses": {"200": {"description": "The OpenAPI document", "content": {"application/json": {"schema": {"type": "object"}}}}}
                }
            }
        },
        "components": {
            "securitySchemes": {
                "accessToken": {"type": "http", "scheme": "bearer", "description": "From POST /v1/auth/login"},
                "operatorToken": {"type": "http", "scheme": "bearer", "description": "TOLLGATE_ADMIN_TOKEN"}
            },
            "schemas": schemas(config)
        }
    });
    end_users(&mut doc, &account_token);
    trial_claim(&mut doc, &config.keys.prefix);
    doc
}

fn schemas(config: &crate::config::Config) -> Value {
    // The largest a key's quota can be for any account; an account's own ceiling may be lower.
    let largest_plan = config.plans.values().copied().max().unwrap_or(0);
    let key_tokens_ceiling =
        config.limits.tokens_per_month.map_or(largest_plan, |d| d.min(largest_plan)).min(MAX_TOKENS);
    let providers: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
    let plans: Vec<&str> = config.plans.keys().map(String::as_str).collect();
    let provider_list =
        json!({"type": "array", "items": {"type": "string", "enum": providers}, "minItems": 1, "maxItems": 64});
    let model_list =
        json!({"type": "array", "items": {"type": "string", "pattern": MODEL_PATTERN}, "minItems": 1, "maxItems": 64});
    let name = json!({"type": "string", "minLength": 1, "maxLength": 128, "pattern": NAME_PATTERN});
    let limit = |min: u64, max: u64| json!({"type": ["integer", "null"], "minimum": min, "maximum": max});
    let timestamp = json!({"type": "string", "format": "date-time"});
    let nullable_timestamp = json!({"type": ["string", "null"], "format": "date-time"});
    let strings = json!({"type": ["array", "null"], "items": {"type": "string"}, "minItems": 1, "maxItems": 64});
    let description = json!({"type": ["string", "null"], "maxLength": 1024, "pattern": DESCRIPTION_PATTERN});
    let metadata = json!({
        "type": ["object", "null"], "maxProperties": 32, "propertyNames": {"minLength": 1, "maxLength": 40},
        "additionalProperties": {"type": "string", "maxLength": 500},
        "description": "The owner's own labels: up to 32 string values; shown as given"
    });
    let ip_allowlist = json!({
        "type": ["array", "null"], "minItems": 1, "maxItems": 64,
        "items": {"anyOf": [{"type": "string", "pattern": IPV4_NETWORK_PATTERN}, {"type": "string", "format": "ipv6"}]},
        "description": "Networks (CIDR, IPv4 or IPv6) or addresses the key may be used from; null: anywhere"
    });
    let output_cap = json!({"type": ["integer", "null"], "minimum": 1, "maximum": 10_000_000});
    let scopes = json!({"type": "array", "items": {"type": "string", "enum": ["chat", "embeddings", "models:read", "count_tokens"]}, "minItems": 1});
    let key_properties = json!({
        "id": {"type": "string"},
        "key_prefix": {"type": "string"},
        "kind": {"type": "string", "enum": ["live", "publishable", "trial"]},
        "name": {"type": "string"},
        "description": {"type": ["string", "null"]},
        "metadata": {"type": ["object", "null"]},
        "project_id": {"type": ["string", "null"]},
        "status": {"type": "string", "enum": ["active", "disabled", "revoked", "expired"]},
        "enabled": {"type": "boolean"},
        "ip_allowlist": {"type": ["array", "null"], "items": {"type": "string"}},
        "allowed_origins": {"type": ["array", "null"], "items": {"type": "string"}},
        "allow_browser": {"type": "boolean"},
        "provider_credential": {"type": "string", "enum": ["caller", "server"]},
        "require_identity": {"type": "boolean"},
        "end_user_limits": {"type": "object"},
        "max_output_tokens": {"type": ["integer", "null"]},
        "scopes": scopes,
        "providers": strings,
        "models": strings,
        "limits": {"$ref": "#/components/schemas/Limits"},
        "created_at": timestamp,
        "expires_at": nullable_timestamp,
        "revoked_at": nullable_timestamp,
        "last_used_at": nullable_timestamp,
        "usage_this_month": {
            "type": "object",
            "required": ["requests", "input_tokens", "output_tokens"],
            "properties": {"requests": {"type": "integer"}, "input_tokens": {"type": "integer"}, "output_tokens": {"type": "integer"}}
        }
    });
    let key_required =
        json!(["id", "key_prefix", "name", "status", "scopes", "limits", "created_at", "usage_this_month"]);
    let mut created_properties = key_properties.clone();
    created_properties["raw_key"] =
        json!({"type": "string", "description": "The full key. Shown only in this response."});
    created_properties["replaces"] =
        json!({"type": "object", "properties": {"id": {"type": "string"}, "revoked_at": timestamp}});
    let mut created_required = key_required.clone();
    created_required.as_array_mut().into_iter().for_each(|r| r.push(json!("raw_key")));
    let account = json!({
        "type": "object",
        "required": ["id", "plan", "key_cap", "created_at"],
        "properties": {
            "id": {"type": "string"},
            "email": {"type": ["string", "null"]},
            "plan": {"type": "string"},
            "key_cap": {"type": "integer"},
            "disabled": {"type": "boolean"},
            "created_at": timestamp
        }
    });
    let mut schemas = json!({
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": ["string", "null"]}}
            }}
        },
        "Account": account,
        "AccountList": list_of("Account"),
        "PlanList": {
            "type": "object", "required": ["object", "data"],
            "properties": {"object": {"type": "string", "enum": ["list"]}, "data": {"type": "array", "items": {
                "type": "object", "required": ["object", "name", "tokens_per_month"],
                "properties": {"object": {"type": "string", "enum": ["plan"]}, "name": {"type": "string"}, "tokens_per_month": {"type": "integer", "minimum": 0}}
            }}}
        },
        "CreateAccount": {
            "type": "object", "additionalProperties": false, "required": ["email", "password"],
            "properties": {
                "email": {"type": "string", "maxLength": 254, "pattern": EMAIL_PATTERN},
                "password": {"type": "string", "minLength": 8, "maxLength": 256},
                "plan": {"type": "string", "enum": plans},
                "key_cap": {"type": "integer", "minimum": 1, "maximum": 1000}
            }
        },
        "PatchAccount": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "plan": {"type": "string", "enum": plans},
                "key_cap": {"type": "integer", "minimum": 1, "maximum": 1000},
                "disabled": {"type": "boolean", "description": "true: the account cannot log in, its access tokens end and its keys are refused (401) on provider routes; false enables it again."}
            }
        },
        "ChangePassword": {
            "type": "object", "additionalProperties": false, "required": ["old_password", "new_password"],
            "properties": {"old_password": {"type": "string"}, "new_password": {"type": "string", "minLength": 8, "maxLength": 256}}
        },
        "LogoutResponse": {
            "type": "object", "required": ["account_id", "logged_out"],
            "properties": {"account_id": {"type": "string"}, "logged_out": {"type": "boolean"}}
        },
        "Login": {
            "type": "object", "additionalProperties": false, "required": ["email", "password"],
            "properties": {"email": {"type": "string"}, "password": {"type": "string"}}
        },
        "LoginResponse": {
            "type": "object", "required": ["access_token", "token_type", "expires_in", "expires_at"],
            "properties": {
                "access_token": {"type": "string"}, "token_type": {"type": "string", "enum": ["bearer"]},
                "expires_in": {"type": "integer"}, "expires_at": timestamp, "account_id": {"type": "string"}
            }
        },
        "Limits": {
            "type": "object",
            "properties": {
                "requests_per_minute": {"type": "integer"},
                "requests_per_day": {"type": "integer"},
                "concurrent_requests": {"type": "integer"},
                "tokens_per_month": {"type": ["integer", "null"]}
            }
        },
        "LimitsInput": {
            "type": "object", "additionalProperties": false,
            "description": "Per-key overrides; null returns a limit to the configured default.",
            "properties": {
                "requests_per_minute": limit(1, 1000),
                "requests_per_day": limit(1, 10000),
                "concurrent_requests": limit(1, 100),
                "tokens_per_month": {
                    "type": ["integer", "null"], "minimum": 0, "maximum": key_tokens_ceiling,
                    "description": "At most the account plan's monthly quota and the configured default per-key quota, if any: an account only lowers what it was given."
                }
            }
        },
        "CreateKey": {
            "type": "object", "additionalProperties": false, "required": ["name"],
            "properties": {
                "name": name,
                "scopes": scopes,
                "providers": provider_list,
                "models": model_list,
                "limits": {"$ref": "#/components/schemas/LimitsInput"},
                "expires_in_days": {"type": "integer", "minimum": 1, "maximum": 36500},
                "project_id": {"type": "string", "description": "A project of the account (prj_…): the key counts against its key cap too"},
                "description": description,
                "metadata": metadata,
                "enabled": {"type": "boolean", "description": "false creates the key switched off (403 api_key_disabled until enabled)"},
                "ip_allowlist": ip_allowlist,
                "end_user_limits": {"$ref": "#/components/schemas/EndUserLimitsInput"},
                "max_output_tokens": output_cap
            }
        },
        "PatchKey": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "name": name,
                "scopes": scopes,
                "providers": {"oneOf": [provider_list, {"type": "null"}]},
                "models": {"oneOf": [model_list, {"type": "null"}]},
                "limits": {"$ref": "#/components/schemas/LimitsInput"},
                "description": description,
                "metadata": metadata,
                "enabled": {"type": "boolean", "description": "false switches the key off (403 api_key_disabled), true on again; revocation stays final"},
                "ip_allowlist": ip_allowlist,
                "end_user_limits": {"$ref": "#/components/schemas/EndUserLimitsInput"},
                "max_output_tokens": output_cap
            }
        },
        "Rotate": {
            "type": "object", "additionalProperties": false,
            "properties": {"grace_seconds": {"type": "integer", "minimum": 0, "maximum": 2592000}}
        },
        "Key": {"type": "object", "required": key_required, "properties": key_properties},
        "KeyCreated": {"type": "object", "required": created_required, "properties": created_properties},
        "KeyList": list_of("Key"),
        "Usage": {
            "type": "object", "required": ["from", "to", "group_by", "data"],
            "properties": {
                "object": {"type": "string"},
                "from": {"type": "string", "format": "date"},
                "to": {"type": "string", "format": "date"},
                "group_by": {"type": "string", "enum": USAGE_GROUPS},
                "data": {"type": "array", "items": {
                    "type": "object",
                    "required": ["requests", "input_tokens", "output_tokens", "total_tokens"],
                    "properties": {
                        "day": {"type": "string"}, "model": {"type": "string"}, "key": {"type": "string"},
                        "project": {"type": ["string", "null"]},
                        "requests": {"type": "integer"}, "input_tokens": {"type": "integer"},
                        "output_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}
                    }
                }}
            }
        }
    });
    if let (Some(all), Value::Object(more)) = (schemas.as_object_mut(), project_schemas(&name, &limit)) {
        all.extend(more);
    }
    browser_key_members(&mut schemas, config);
    schemas
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation the API serves is documented, and nothing else is.
    #[test]
    fn the_document_lists_exactly_the_served_operations() {
        let config = crate::config::Config::from_toml("", |_| None).unwrap();
        let doc = document(&config);
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.push((method.clone(), path.clone()));
            }
        }
        documented.sort();
        let mut served: Vec<(String, String)> =
            crate::admin::OPERATIONS.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
        served.sort();
        assert_eq!(documented, served);
        assert!(is_email("a@b") && is_email("a.b+c@d.e") && !is_email("a@") && !is_email("@b") && !is_email("a b@c"));
        // Every reference resolves.
        let text = doc.to_string();
        for name in text.split("#/components/schemas/").skip(1).map(|s| s.split('"').next().unwrap()) {
            assert!(doc["components"]["schemas"].get(name).is_some(), "unresolved {name}");
        }
    }
}
