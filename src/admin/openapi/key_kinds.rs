//! The parts of the OpenAPI document that the key kinds and projects add (docs/ARCHITECTURE.md, Key
//! kinds): projects, the members of publishable keys and browser use, end users and identity tokens,
//! and claiming a trial key. Each edits the document [`super::document`] builds.

use serde_json::{Value, json};

use super::{MAX_TOKENS, ORIGIN_PATTERN, body, id_param, ok, responses};

/// End users and identity tokens: the signing-secret rotation, `signing_secret` on a created publishable
/// key, `require_identity` and `end_user_limits` on keys, and usage grouped by end user.
pub(super) fn end_users(doc: &mut Value, account_token: &Value) {
    doc["paths"]["/v1/auth/keys/{id}/signing-secret"] = json!({
        "post": {
            "operationId": "rotateSigningSecret",
            "summary": "Give a publishable key a new signing secret for its identity tokens (returned only here)",
            "description": "The old secret stops verifying at once on this server and within one key refresh on the others; tokens it signed are refused 401 invalid_identity_token. 409 kind_mismatch when the key is not publishable, 409 signing_unavailable when the server has no sealing key (TOLLGATE_SIGNING_KEY).",
            "security": account_token, "parameters": id_param(),
            "responses": responses(("200", ok("The new signing secret", "SigningSecret")), &[("404", "No such active key in this account"), ("409", "The key is not publishable (kind_mismatch), or the server has no sealing key (signing_unavailable)")])
        }
    });
    let end_user_limits = json!({
        "type": "object", "additionalProperties": false,
        "description": "Limits each end user of the key runs under, counted per (key, end user); an identity token's `limits` claim may only narrow them.",
        "properties": {
            "requests_per_minute": {"type": ["integer", "null"], "minimum": 1, "maximum": crate::config::RPM_RANGE.1},
            "requests_per_day": {"type": ["integer", "null"], "minimum": 1, "maximum": crate::config::RPD_RANGE.1},
            "tokens_per_month": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_TOKENS}
        }
    });
    let require_identity = json!({"type": "boolean", "description": "Every request must name its end user: an identity token (X-Tollgate-Identity) for a publishable key, X-Tollgate-End-User for a secret key; else 401 invalid_identity_token."});
    let schemas = &mut doc["components"]["schemas"];
    for schema in ["CreateKey", "PatchKey", "Key", "KeyCreated"] {
        schemas[schema]["properties"]["end_user_limits"] = end_user_limits.clone();
        schemas[schema]["properties"]["require_identity"] = require_identity.clone();
    }
    schemas["KeyCreated"]["properties"]["signing_secret"] = json!({
        "type": ["string", "null"],
        "description": "A publishable key's signing secret (`tg_sig_…`), for the app's server to sign identity tokens with (JWT HS256, header kid = the key's id). Shown only here; null when the server has no sealing key."
    });
    schemas["SigningSecret"] = json!({
        "type": "object", "required": ["id", "signing_secret", "created_at"],
        "properties": {"id": {"type": "string"}, "signing_secret": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"}}
    });
    let group_by = json!({"type": "string", "enum": ["day", "model", "end_user"]});
    schemas["Usage"]["properties"]["group_by"] = group_by.clone();
    schemas["Usage"]["properties"]["data"]["items"]["properties"]["end_user"] = json!({"type": "string"});
    let usage = &mut doc["paths"]["/v1/usage"]["get"];
    usage["summary"] = json!("The account's usage by day, by model or by end user");
    if let Some(params) = usage["parameters"].as_array_mut() {
        for param in params.iter_mut().filter(|p| p["name"] == "group_by") {
            param["schema"] = group_by.clone();
        }
    }
}

/// `POST /v1/auth/keys/claim` and its body.
pub(super) fn trial_claim(doc: &mut Value, prefix: &str) {
    doc["paths"]["/v1/auth/keys/claim"] = json!({
        "post": {
            "operationId": "claimTrialKey",
            "summary": "Move a trial key into this account",
            "description": "The trial key (its full text, as X-Tollgate-Key-Provisioned showed it) keeps working, now as a key of the account: the configured default limits, every scope, any provider and model, no expiry, counted against the account's key cap. Its usage so far moves to the account; its device gets a new trial key on its next request without a key.",
            "security": [{"accessToken": []}],
            "requestBody": body("ClaimTrialKey"),
            "responses": responses(
                ("200", ok("The claimed key (without its secret)", "Key")),
                &[("404", "No such trial key, or it is revoked or expired"), ("409", "The key was claimed already (already_claimed), or the account's key cap is reached (key_cap_reached)")]
            )
        }
    });
    doc["components"]["schemas"]["ClaimTrialKey"] = json!({
        "type": "object", "required": ["trial_key"], "additionalProperties": false,
        "properties": {"trial_key": {
            "type": "string", "pattern": format!("^{prefix}_trial_[0-9A-Za-z]{{61}}$"),
            "description": "The whole trial key, tg_trial_…; one of that shape that names no key is a 404"
        }}
    });
}

/// Projects and the per-end-user limits of a key.
pub(super) fn project_schemas(name: &Value, limit: &dyn Fn(u64, u64) -> Value) -> Value {
    let timestamp = json!({"type": "string", "format": "date-time"});
    json!({
        "EndUserLimitsInput": {
            "type": "object", "additionalProperties": false,
            "description": "Limits each end user of the key runs under (identity tokens, X-Tollgate-End-User); null removes one.",
            "properties": {
                "requests_per_minute": limit(1, 1000),
                "requests_per_day": limit(1, 10000),
                "tokens_per_month": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_TOKENS}
            }
        },
        "Project": {
            "type": "object", "required": ["id", "name", "key_cap", "active_keys", "created_at"],
            "properties": {
                "id": {"type": "string"}, "object": {"type": "string"}, "name": {"type": "string"},
                "key_cap": {"type": "integer"}, "active_keys": {"type": "integer"}, "created_at": timestamp
            }
        },
        "ProjectList": {
            "type": "object", "required": ["object", "data"],
            "properties": {"object": {"type": "string"}, "data": {"type": "array", "items": {"$ref": "#/components/schemas/Project"}}}
        },
        "ProjectDeleted": {
            "type": "object", "required": ["id", "deleted"],
            "properties": {"id": {"type": "string"}, "object": {"type": "string"}, "deleted": {"type": "boolean"}}
        },
        "CreateProject": {
            "type": "object", "additionalProperties": false, "required": ["name"],
            "properties": {"name": name, "key_cap": {"type": "integer", "minimum": 1, "maximum": 1000}}
        },
        "PatchProject": {
            "type": "object", "additionalProperties": false,
            "properties": {"name": name, "key_cap": {"type": "integer", "minimum": 1, "maximum": 1000}}
        }
    })
}

/// `CreateKey` as one of two shapes, so that every body the document allows is one the server takes: a
/// live key (no origins) or a publishable key (origins required, no browser switch).
pub(super) fn split_create_key(schemas: &mut Value, kind: Value) {
    let mut live = schemas["CreateKey"].clone();
    let mut publishable = live.clone();
    live["properties"]["kind"] = json!({"type": "string", "enum": ["live"], "description": kind["description"]});
    if let Some(p) = live["properties"].as_object_mut() {
        p.remove("allowed_origins");
    }
    publishable["properties"]["kind"] = json!({"type": "string", "enum": ["publishable"]});
    if let Some(p) = publishable["properties"].as_object_mut() {
        p.remove("allow_browser");
    }
    publishable["required"] = json!(["name", "kind", "allowed_origins"]);
    schemas["CreateLiveKey"] = live;
    schemas["CreatePublishableKey"] = publishable;
    schemas["CreateKey"] = json!({"oneOf": [
        {"$ref": "#/components/schemas/CreateLiveKey"},
        {"$ref": "#/components/schemas/CreatePublishableKey"}
    ]});
}

/// The members of publishable keys and browser use (docs/ARCHITECTURE.md, Browser callers): the key's kind
/// and allowed origins, browser use of a secret key, the server's provider credential, the output cap,
/// and the publishable key's own text on every view.
pub(super) fn browser_key_members(schemas: &mut Value, config: &crate::config::Config) {
    let holders: Vec<&str> = config.providers.iter().filter(|p| p.key_env.is_some()).map(|p| p.name.as_str()).collect();
    let origins = json!({
        "type": "array", "minItems": 1, "maxItems": 64,
        "items": {"type": "string", "pattern": ORIGIN_PATTERN, "examples": ["https://app.example.com", "http://localhost:3000"]},
        "description": "Browser origins a publishable key is accepted from: scheme://host[:port], or one leading wildcard label (https://*.example.com: any subdomain, never the apex). No paths, no other `*`, no wildcard over a public suffix (https://*.com, https://*.github.io). Required for, and only for, publishable keys."
    });
    let members = [
        (
            "allow_browser",
            json!({"type": "boolean", "description": "Let a secret (live) key be used with an Origin header; otherwise such requests are refused 403 secret_key_in_browser."}),
        ),
        (
            "provider_credential",
            json!({
                "type": "string", "enum": if holders.is_empty() { json!(["caller"]) } else { json!(["caller", "server"]) },
                "description": format!("server: call without X-Provider-Key, with the credential a provider holds (key_env in proxy.toml); a caller's X-Provider-Key still wins. Providers holding one: {holders:?}.")
            }),
        ),
        (
            "max_output_tokens",
            json!({"type": ["integer", "null"], "minimum": 1, "maximum": 10_000_000, "description": "The most output tokens one request may ask for (max_tokens and the like); a request asking for more in any output member is refused 400 output_cap_exceeded; one naming none has this cap written into its body and is reserved at it."}),
        ),
    ];
    let mut patch_origins = origins.clone();
    patch_origins["type"] = json!(["array", "null"]);
    let kind = json!({"type": "string", "enum": ["live", "publishable"], "description": "live (tg_live_, secret, the default) or publishable (tg_pub_, for browser code: not secret, needs allowed_origins, scopes default to chat)."});
    for (schema, origins) in
        [("CreateKey", &origins), ("PatchKey", &patch_origins), ("Key", &patch_origins), ("KeyCreated", &patch_origins)]
    {
        let properties = &mut schemas[schema]["properties"];
        properties["allowed_origins"] = origins.clone();
        for (name, member) in &members {
            properties[*name] = member.clone();
        }
    }
    split_create_key(schemas, kind);
    let kinds = json!({"type": "string", "enum": ["live", "publishable", "trial"]});
    schemas["Key"]["properties"]["kind"] = kinds.clone();
    schemas["KeyCreated"]["properties"]["kind"] = kinds;
    let key = json!({"type": "string", "description": "A publishable key's whole text (tg_pub_…): not secret, shown on every view of a publishable key and absent for every other kind."});
    schemas["Key"]["properties"]["key"] = key.clone();
    schemas["KeyCreated"]["properties"]["key"] = key;
}
