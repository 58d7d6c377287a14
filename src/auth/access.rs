//! What a key may do (docs/ARCHITECTURE.md, Management): its scopes (`chat`, `embeddings`, `models:read`,
//! `count_tokens`) and optional allowlists of providers and models (globs such as `claude-*`). Checked on the data
//! plane before anything is sent upstream.

use crate::providers::Endpoint;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Chat,
    Embeddings,
    ModelsRead,
    CountTokens,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Chat, Scope::Embeddings, Scope::ModelsRead, Scope::CountTokens];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Chat => "chat",
            Scope::Embeddings => "embeddings",
            Scope::ModelsRead => "models:read",
            Scope::CountTokens => "count_tokens",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.name() == s)
    }

    /// The scope a route needs.
    pub fn of(endpoint: Endpoint) -> Scope {
        match endpoint {
            Endpoint::ChatCompletions
            | Endpoint::Completions
            | Endpoint::Responses
            | Endpoint::Messages
            | Endpoint::GenerateContent
            | Endpoint::StreamGenerateContent => Scope::Chat,
            Endpoint::Embeddings | Endpoint::EmbedContent => Scope::Embeddings,
            Endpoint::ListModels | Endpoint::GetModel => Scope::ModelsRead,
            Endpoint::CountTokens => Scope::CountTokens,
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    pub const ALL: Scopes = Scopes(0b1111);

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// From names; an unknown name is returned as the error.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Scopes, String> {
        let mut set = 0;
        for name in names {
            set |= Scope::parse(name).ok_or_else(|| name.to_owned())?.bit();
        }
        Ok(Scopes(set))
    }

    pub fn names(self) -> Vec<&'static str> {
        Scope::ALL.into_iter().filter(|s| self.contains(*s)).map(Scope::name).collect()
    }

    /// The stored form: names joined by commas.
    pub fn to_stored(self) -> String {
        self.names().join(",")
    }

    pub fn from_stored(text: &str) -> Scopes {
        Scopes::from_names(text.split(',').filter(|s| !s.is_empty())).unwrap_or(Scopes(0))
    }
}

impl Default for Scopes {
    fn default() -> Scopes {
        Scopes::ALL
    }
}

/// A key's scopes and allowlists (`None`: any provider or model).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyAccess {
    pub scopes: Scopes,
    pub providers: Option<Vec<String>>,
    pub models: Option<Vec<String>>,
}

/// Why a key may not make a request; the message names what is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub String);

impl KeyAccess {
    pub fn check(&self, provider: &str, endpoint: Endpoint, model: Option<&str>) -> Result<(), Denied> {
        let scope = Scope::of(endpoint);
        if !self.scopes.contains(scope) {
            return Err(Denied(format!("This API key lacks the `{}` scope", scope.name())));
        }
        if let Some(providers) = &self.providers
            && !providers.iter().any(|p| p == provider)
        {
            return Err(Denied(format!("This API key may not use provider `{provider}`")));
        }
        if let (Some(models), Some(model)) = (&self.models, model)
            && !models.iter().any(|pattern| glob(pattern, model))
        {
            return Err(Denied(format!("This API key may not use model `{model}`")));
        }
        Ok(())
    }
}

pub use crate::providers::MAX_MODEL_BYTES;

/// `*` matches any run of characters, everything else itself. Linear in the text: the pieces between
/// stars are found left to right, each at its first place after the previous one (taking the first
/// place never loses a match, since every later piece can then start anywhere a later place allowed),
/// and the last piece is anchored at the end.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (pattern, mut text) = (pattern.as_bytes(), text.as_bytes());
    let mut pieces = pattern.split(|&b| b == b'*');
    // `split` yields at least one piece; with no star that piece is the whole pattern.
    let first = pieces.next().unwrap_or_default();
    let Some(last) = pieces.next_back() else { return text == first };
    let Some(rest) = text.strip_prefix(first) else { return false };
    text = rest;
    for piece in pieces {
        match memchr::memmem::find(text, piece) {
            Some(at) => text = &text[at + piece.len()..],
            None => return false,
        }
    }
    text.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("claude-*", "claude-sonnet-4-5"));
        assert!(glob("*", "anything"));
        assert!(glob("gpt-4o*mini", "gpt-4o-mini"));
        assert!(glob("gpt-4o", "gpt-4o"));
        assert!(!glob("gpt-4o", "gpt-4o-mini"));
        assert!(!glob("claude-*", "gpt-claude-x"));
        assert!(glob("*-mini", "gpt-4o-mini"));
        assert!(glob("a*b*c", "abc") && glob("a*b*c", "axxbyyc") && !glob("a*b*c", "acb"));
        assert!(glob("ab*ba", "aba ba") && !glob("ab*ba", "aba"), "the last piece may not reuse the first's bytes");
        assert!(glob("**", "") && glob("*a*", "xay") && !glob("*a*", "xyz"));
        assert!(glob("", "") && !glob("", "x"));
    }

    /// A pattern built to make a backtracking matcher quadratic, against a long name: one pass each.
    #[test]
    fn hostile_globs_stay_linear() {
        let pattern = format!("*{}b", "a".repeat(126));
        let text = "a".repeat(1 << 20);
        let started = std::time::Instant::now();
        for _ in 0..64 {
            assert!(!glob(&pattern, &text));
        }
        // Quadratic matching of this case takes tens of seconds; linear takes milliseconds.
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    }

    proptest::proptest! {
        /// The linear matcher agrees with a plain recursive definition of `*`.
        #[test]
        fn glob_agrees_with_its_definition(pattern in "[ab*]{0,8}", text in "[ab]{0,10}") {
            fn reference(p: &[u8], t: &[u8]) -> bool {
                match p.split_first() {
                    None => t.is_empty(),
                    Some((b'*', rest)) => (0..=t.len()).any(|i| reference(rest, &t[i..])),
                    Some((c, rest)) => t.first() == Some(c) && reference(rest, &t[1..]),
                }
            }
            proptest::prop_assert_eq!(glob(&pattern, &text), reference(pattern.as_bytes(), text.as_bytes()));
        }
    }

    #[test]
    fn scopes_round_trip_and_are_checked_first() {
        let s = Scopes::from_names(["chat", "models:read"]).unwrap();
        assert_eq!(Scopes::from_stored(&s.to_stored()), s);
        assert_eq!(Scopes::from_names(["admin"]), Err("admin".to_owned()));
        let access =
            KeyAccess { scopes: s, providers: Some(vec!["anthropic".into()]), models: Some(vec!["claude-*".into()]) };
        assert!(access.check("anthropic", Endpoint::Messages, Some("claude-haiku")).is_ok());
        assert!(access.check("anthropic", Endpoint::Embeddings, None).unwrap_err().0.contains("`embeddings` scope"));
        assert!(
            access
                .check("openai", Endpoint::ChatCompletions, Some("claude-x"))
                .unwrap_err()
                .0
                .contains("provider `openai`")
        );
        assert!(
            access.check("anthropic", Endpoint::Messages, Some("gpt-4o")).unwrap_err().0.contains("model `gpt-4o`")
        );
        assert!(access.check("anthropic", Endpoint::ListModels, None).is_ok(), "no model named, nothing to check");
    }
}
