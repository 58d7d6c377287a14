//! Route resolution ([`Routes::resolve`]) of arbitrary request paths against a configuration with
//! top-level and named providers, one with a base path.
//!
//! Input: a selector byte (the method), then the path (lossily made UTF-8).
//!
//! Invariants checked:
//! - Resolution never panics and is deterministic (the same path resolves the same way twice).
//! - A path that does not start with `/`, is longer than 512 bytes, or has an empty, `.`, `..` or
//!   percent-encoded segment never routes: it misses with `NotFound`.
//! - A routed path names its provider: when its first segment is a configured provider's name, the
//!   route goes to that provider and the upstream path is the provider's base path followed by the
//!   rest of the request path, byte for byte; otherwise it goes to the top-level provider named after
//!   a kind (`openai`, `anthropic`, `gemini`) and the upstream path is its base path and the whole
//!   request path. The provider index points at that provider, and the endpoint's method is the
//!   request's.
//! - A model read from the path is a substring of the path.
#![no_main]

use std::sync::LazyLock;

use http::Method;
use libfuzzer_sys::fuzz_target;
use tollgate::config::{Config, ProviderConfig};
use tollgate::providers::RouteMiss;
use tollgate::providers::routes::{Miss, Routes};

const CONFIG: &str = r#"
[providers.openai]
kind = "openai"
base_url = "https://api.openai.com"
[providers.anthropic]
kind = "anthropic"
base_url = "https://api.anthropic.com"
[providers.gemini]
kind = "gemini"
base_url = "https://generativelanguage.googleapis.com"
[providers.groq]
kind = "openai"
base_url = "https://api.groq.com/openai"
[providers.local-gemini]
kind = "gemini"
base_url = "http://127.0.0.1:9000/proxy/google"
"#;

static PROVIDERS: LazyLock<Vec<ProviderConfig>> =
    LazyLock::new(|| Config::from_toml(CONFIG, |_| None).expect("the fuzz configuration is valid").providers);
static ROUTES: LazyLock<Routes> = LazyLock::new(|| Routes::new(&PROVIDERS));

const METHODS: [Method; 6] = [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH, Method::HEAD];

/// Whether the path can never be allowlisted, by what `routes.rs` promises.
fn never_routes(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else { return true };
    path.len() > 512 || rest.split('/').any(|s| s.is_empty() || s == "." || s == ".." || s.contains('%'))
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, path)) = data.split_first() else { return };
    let method = &METHODS[usize::from(selector) % METHODS.len()];
    let path = String::from_utf8_lossy(path);
    let resolved = ROUTES.resolve(method, &path);
    let again = ROUTES.resolve(method, &path);
    assert_eq!(format!("{resolved:?}"), format!("{again:?}"), "{path:?} resolves two ways");

    let route = match resolved {
        Ok(route) => route,
        Err(Miss { reason, .. }) => {
            if never_routes(&path) {
                assert_eq!(reason, RouteMiss::NotFound, "{path:?}");
            }
            return;
        }
    };
    assert!(!never_routes(&path), "{path:?} routed to {route:?}");
    assert_eq!(route.endpoint.method(), *method);
    assert_eq!(PROVIDERS[route.provider_index].name, route.provider.name);

    let first = path[1..].split('/').next().unwrap_or_default();
    let named = PROVIDERS.iter().find(|p| p.name == first);
    let (provider, rest) = match named {
        Some(p) => (p, &path[1 + first.len()..]),
        None => {
            let top = PROVIDERS.iter().find(|p| p.name == route.provider.name).expect("a configured provider");
            assert!(
                ["openai", "anthropic", "gemini"].contains(&top.name.as_str()),
                "{path:?} went to {} without naming it",
                top.name
            );
            (top, &path[..])
        }
    };
    assert_eq!(route.provider.name, provider.name, "{path:?}");
    assert_eq!(route.upstream_path, format!("{}{rest}", provider.base_path), "{path:?}");
    if let Some(model) = route.path_model() {
        assert!(path.contains(model), "{path:?} read as model {model:?}");
    }
});
