//! Maps a request target to a configured provider and an allowlisted endpoint. Only the path is read:
//! the authority of an absolute-form target, `Host` and `X-Forwarded-Host` never choose where a request
//! goes. Empty, dot and percent-encoded segments never match, so normalisation tricks find nothing.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;

use super::{Endpoint, ModelAt, ProviderConfig, ProviderKind, RouteMiss};

/// Longest path that can match any route (base paths are not counted: they come from the config).
const MAX_PATH_LEN: usize = 512;
const MAX_SEGMENTS: usize = 5;

/// Where a request goes.
#[derive(Debug, Clone)]
pub struct Route {
    pub provider: Arc<ProviderConfig>,
    /// The provider's position in the configuration (a bounded metric label).
    pub provider_index: usize,
    pub endpoint: Endpoint,
    /// The upstream path: the provider's base path and the matched segments.
    pub upstream_path: String,
}

impl Route {
    /// The model the request names, where its provider's table says: in the path, or in the body
    /// (whose `model` is given).
    pub fn model<'a>(&'a self, body_model: Option<&'a str>) -> Option<&'a str> {
        match self.provider.kind.spec(self.endpoint).map(|spec| spec.model) {
            Some(ModelAt::Path) => self.path_model(),
            Some(ModelAt::Body) => body_model,
            // Listing names no model; an endpoint its provider does not list never routes.
            Some(ModelAt::Nowhere) | None => None,
        }
    }

    /// The model named in the path (`…/models/{model}:{method}` or `…/models/{model}`), if any.
    pub fn path_model(&self) -> Option<&str> {
        if self.endpoint == Endpoint::ListModels {
            return None;
        }
        let (_, last) = self.upstream_path.rsplit_once('/')?;
        Some(last.split_once(':').map_or(last, |(model, _)| model))
    }
}

/// A path that did not route, with the provider shape its error should take.
#[derive(Debug, Clone)]
pub struct Miss {
    pub shape: ProviderKind,
    pub reason: RouteMiss,
}

pub struct Routes {
    /// Each provider by name, with its position in the configuration.
    by_name: HashMap<String, (usize, Arc<ProviderConfig>)>,
}

impl Routes {
    pub fn new(providers: &[ProviderConfig]) -> Routes {
        let by_name = providers.iter().enumerate().map(|(i, p)| (p.name.clone(), (i, Arc::new(p.clone())))).collect();
        Routes { by_name }
    }

    pub fn resolve(&self, method: &Method, path: &str) -> Result<Route, Miss> {
        let segments = segments(path);
        let segments = segments.as_deref().unwrap_or(&[]);
        let (provider, rest) = match segments.split_first() {
            Some((first, rest)) if self.by_name.contains_key(*first) => (self.by_name.get(*first), rest),
            _ => (self.by_name.get(ProviderKind::of_top_level_path(method, segments).as_str()), segments),
        };
        let shape = provider.map_or_else(|| ProviderKind::of_top_level_path(method, segments), |p| p.1.kind);
        let miss = |reason| Miss { shape, reason };
        let (provider_index, provider) = provider.ok_or(miss(RouteMiss::NotFound))?;
        if rest.is_empty() {
            return Err(miss(RouteMiss::NotFound));
        }
        let endpoint = provider.kind.route(method, rest).map_err(miss)?;
        let mut upstream_path = String::with_capacity(provider.base_path.len() + path.len());
        upstream_path.push_str(&provider.base_path);
        for s in rest {
            upstream_path.push('/');
            upstream_path.push_str(s);
        }
        Ok(Route { provider: Arc::clone(provider), provider_index: *provider_index, endpoint, upstream_path })
    }
}

/// The path's segments, or `None` if it cannot be an allowlisted path at all.
fn segments(path: &str) -> Option<Vec<&str>> {
    if path.len() > MAX_PATH_LEN {
        return None;
    }
    let parts: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    let clean = parts.len() <= MAX_SEGMENTS
        && parts.iter().all(|s| !s.is_empty() && *s != "." && *s != ".." && !s.contains('%'));
    clean.then_some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn routes() -> Routes {
        let c = Config::from_toml(
            r#"
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
            "#,
            |_| None,
        )
        .unwrap();
        Routes::new(&c.providers)
    }

    fn ok(method: Method, path: &str) -> (String, Endpoint, String) {
        let r = routes().resolve(&method, path).unwrap_or_else(|m| panic!("{path}: {m:?}"));
        (r.provider.name.clone(), r.endpoint, r.upstream_path)
    }

    #[test]
    fn top_level_and_named_routes() {
        let cases = [
            (Method::POST, "/v1/chat/completions", "openai", Endpoint::ChatCompletions, "/v1/chat/completions"),
            (Method::GET, "/v1/models/gpt-4o", "openai", Endpoint::GetModel, "/v1/models/gpt-4o"),
            (Method::POST, "/v1/messages", "anthropic", Endpoint::Messages, "/v1/messages"),
            (
                Method::POST,
                "/v1/messages/count_tokens",
                "anthropic",
                Endpoint::CountTokens,
                "/v1/messages/count_tokens",
            ),
            (
                Method::POST,
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
                "gemini",
                Endpoint::StreamGenerateContent,
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            ),
            (
                Method::POST,
                "/v1/models/gemini-2.5-flash:generateContent",
                "gemini",
                Endpoint::GenerateContent,
                "/v1/models/gemini-2.5-flash:generateContent",
            ),
            (
                Method::POST,
                "/groq/v1/chat/completions",
                "groq",
                Endpoint::ChatCompletions,
                "/openai/v1/chat/completions",
            ),
            (
                Method::POST,
                "/gemini/v1beta/models/m:generateContent",
                "gemini",
                Endpoint::GenerateContent,
                "/v1beta/models/m:generateContent",
            ),
            (Method::GET, "/anthropic/v1/models", "anthropic", Endpoint::ListModels, "/v1/models"),
        ];
        for (m, path, provider, endpoint, upstream) in cases {
            assert_eq!(ok(m, path), (provider.to_owned(), endpoint, upstream.to_owned()), "{path}");
        }
    }

    #[test]
    fn the_model_is_read_where_the_provider_names_it() {
        let model = |method, path| {
            let r = routes().resolve(&method, path).unwrap();
            r.model(Some("from-body")).map(str::to_owned)
        };
        assert_eq!(model(Method::POST, "/v1/chat/completions").as_deref(), Some("from-body"));
        assert_eq!(model(Method::POST, "/v1/messages/count_tokens").as_deref(), Some("from-body"));
        assert_eq!(model(Method::GET, "/v1/models/gpt-4o").as_deref(), Some("gpt-4o"));
        assert_eq!(model(Method::GET, "/anthropic/v1/models/claude-x").as_deref(), Some("claude-x"));
        assert_eq!(model(Method::GET, "/v1/models").as_deref(), None);
        assert_eq!(
            model(Method::POST, "/v1beta/models/gemini-2.5-flash:generateContent").as_deref(),
            Some("gemini-2.5-flash")
        );
        assert_eq!(model(Method::POST, "/gemini/v1/models/m:countTokens").as_deref(), Some("m"));
        assert_eq!(model(Method::GET, "/v1beta/models/gemini-pro").as_deref(), Some("gemini-pro"));
        assert_eq!(model(Method::GET, "/v1beta/models").as_deref(), None);
    }

    #[test]
    fn tricks_never_route() {
        for path in [
            "/v1/../v1/chat/completions",
            "/v1/chat/completions/",
            "/v1/chat/./completions",
            "/v1/chat/%2e%2e/completions",
            "/v1%2Fchat/completions",
            "/v1/chat%2Fcompletions",
            "//evil.example/v1/chat/completions",
            "/v1//chat/completions",
            "/groq/../openai/v1/chat/completions",
            "/v1beta/models/..%2F..:generateContent",
            "/v1beta/models/%2e%2e:generateContent",
            "/unknown/v1/chat/completions",
            "/groq",
            "/",
            "",
            "*",
        ] {
            let m = routes().resolve(&Method::POST, path);
            assert!(matches!(m, Err(Miss { reason: RouteMiss::NotFound, .. })), "{path} routed: {m:?}");
        }
    }

    #[test]
    fn misses_take_the_shape_of_the_provider_they_aimed_at() {
        let shape = |path| routes().resolve(&Method::POST, path).unwrap_err().shape;
        assert_eq!(shape("/v1beta/models/x:nope"), ProviderKind::Gemini);
        assert_eq!(shape("/v1/messages/nope"), ProviderKind::Anthropic);
        assert_eq!(shape("/groq/v2/x"), ProviderKind::OpenAi);
        assert_eq!(shape("/nope"), ProviderKind::OpenAi);
    }
}
