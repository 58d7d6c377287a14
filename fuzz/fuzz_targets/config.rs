//! The configuration parser and validation ([`Config::from_toml`]) on arbitrary text.
//!
//! Input: a selector byte (which environment overrides are set), then the TOML text (lossily made
//! UTF-8). Texts that set a `ca_file` anywhere are skipped: that field makes the parser read a file,
//! and the fuzzer has no business reading the machine's files.
//!
//! Invariants checked:
//! - Parsing never panics.
//! - Parsing is deterministic: an accepted text parses again to the same configuration (by its
//!   `Debug` form, which redacts secrets), and a refused one to the same error.
//! - An accepted configuration keeps its own rules: a key prefix of 1-16 characters of a-z and 0-9,
//!   provider names of 1-32 characters of a-z, 0-9, `-` and `_`, each once, a base path that is empty
//!   or starts with `/` and does not end with one, and routes build from its providers.
//! - A refusal is one line naming what it is about: a TOML syntax or type error (toml's own message,
//!   which names the line and the key), or a `field: why` message whose field is a known section or
//!   an environment variable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::config::Config;
use tollgate::providers::routes::Routes;

const ENV: [(&str, &str); 4] = [
    ("TOLLGATE_KEY_HASH_SECRET", "0123456789abcdef-hash"),
    ("TOLLGATE_ADMIN_TOKEN", "0123456789abcdef-admin"),
    ("TOLLGATE_SESSION_SECRET", "0123456789abcdef-session"),
    ("TOLLGATE_METRICS_TOKEN", "0123456789abcdef-metrics"),
];

/// Where a validation error may point.
const FIELDS: [&str; 11] = [
    "server.",
    "store.",
    "keys.",
    "upstream.",
    "log.",
    "limits.",
    "management.",
    "metrics.",
    "plans.",
    "providers.",
    "TOLLGATE_",
];

/// Whether any table in `value` has a `ca_file` key.
fn sets_ca_file(value: &toml::Value) -> bool {
    match value {
        toml::Value::Table(t) => t.iter().any(|(k, v)| k == "ca_file" || sets_ca_file(v)),
        toml::Value::Array(items) => items.iter().any(sets_ca_file),
        _ => false,
    }
}

fn allowed_name(name: &str, max: usize, extra: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(&b))
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, text)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(text);
    if let Ok(table) = toml::from_str::<toml::Table>(&text)
        && sets_ca_file(&toml::Value::Table(table))
    {
        return;
    }
    let env = |name: &str| {
        ENV.iter()
            .enumerate()
            .find(|(i, (n, _))| selector & (1 << i) != 0 && *n == name)
            .map(|(_, (_, v))| v.to_string())
    };
    let parsed = Config::from_toml(&text, env);
    let again = Config::from_toml(&text, env);
    assert_eq!(format!("{parsed:?}"), format!("{again:?}"), "the same text parses two ways");

    let config = match parsed {
        Ok(config) => config,
        Err(e) => {
            let message = e.to_string();
            assert!(!message.contains('\n'), "a refusal over several lines: {message:?}");
            assert!(
                message.starts_with("TOML parse error") || FIELDS.iter().any(|f| message.starts_with(f)),
                "a refusal that names no field: {message:?}"
            );
            return;
        }
    };
    assert!(allowed_name(&config.keys.prefix, 16, b""), "key prefix {:?}", config.keys.prefix);
    let mut names: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
    for p in &config.providers {
        assert!(allowed_name(&p.name, 32, b"-_"), "provider name {:?}", p.name);
        assert!(p.base_path.is_empty() || (p.base_path.starts_with('/') && !p.base_path.ends_with('/')), "{p:?}");
    }
    names.sort_unstable();
    let count = names.len();
    names.dedup();
    assert_eq!(names.len(), count, "a provider name twice");
    Routes::new(&config.providers);
});
