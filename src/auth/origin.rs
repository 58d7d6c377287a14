//! Browser origins (docs/ARCHITECTURE.md, Browser callers): the patterns a publishable key allows, parsed and
//! checked once when a key is written, and the `Origin` header of a request matched against them.
//!
//! A pattern is an exact origin, `scheme://host[:port]` (`http` or `https`, an ASCII host in lowercase,
//! a port only when it is not the scheme's default), or one leading wildcard label,
//! `https://*.example.com`, which matches every subdomain of `example.com` at any depth, never
//! `example.com` itself and never `evil-example.com`. A wildcard over a public suffix (`*.com`,
//! `*.co.uk`, `*.github.io`) would let anyone register a matching site, so it is refused: every
//! single-label base is, and so are the multi-label suffixes of [`MULTI_LABEL_SUFFIXES`]. That list is
//! built in rather than the whole Public Suffix List from a crate, which would compile several
//! megabytes of generated rules into the binary for a check made only when a key is written; it holds
//! the country-code second levels and the hosting domains people actually put wildcards on.

use std::fmt;

/// The longest origin (or pattern) read, in bytes.
pub const MAX_ORIGIN_LEN: usize = 253 + "https://".len() + ":65535".len();

/// Multi-label public suffixes under which a wildcard is refused (single-label ones always are).
#[rustfmt::skip]
pub const MULTI_LABEL_SUFFIXES: &[&str] = &[
    // Country-code second levels.
    "co.uk", "org.uk", "me.uk", "ltd.uk", "plc.uk", "net.uk", "ac.uk", "gov.uk", "sch.uk", "nhs.uk", "com.au",
    "net.au", "org.au", "edu.au", "gov.au", "id.au", "asn.au", "co.nz", "net.nz", "org.nz", "ac.nz", "govt.nz",
    "co.jp", "ne.jp", "or.jp", "ac.jp", "go.jp", "gr.jp", "ed.jp", "co.kr", "or.kr", "ne.kr", "ac.kr", "go.kr",
    "com.cn", "net.cn", "org.cn", "gov.cn", "edu.cn", "com.hk", "org.hk", "net.hk", "edu.hk", "gov.hk",
    "com.tw", "org.tw", "net.tw", "edu.tw", "gov.tw", "com.sg", "org.sg", "net.sg", "edu.sg", "gov.sg",
    "com.my", "org.my", "net.my", "co.id", "or.id", "ac.id", "go.id", "web.id", "com.ph", "org.ph", "net.ph",
    "com.vn", "net.vn", "org.vn", "co.th", "or.th", "ac.th", "in.th", "co.in", "net.in", "org.in", "firm.in",
    "gen.in", "ind.in", "ac.in", "gov.in", "com.pk", "com.bd", "com.br", "net.br", "org.br", "gov.br", "edu.br",
    "com.ar", "net.ar", "org.ar", "gob.ar", "com.mx", "org.mx", "net.mx", "gob.mx", "edu.mx", "com.co",
    "net.co", "org.co", "com.pe", "com.ve", "com.ec", "com.uy", "com.py", "com.bo", "cl.cl", "co.za", "org.za",
    "net.za", "gov.za", "ac.za", "com.ng", "org.ng", "com.eg", "co.ke", "or.ke", "co.tz", "co.ug", "com.gh",
    "co.il", "org.il", "ac.il", "gov.il", "com.tr", "net.tr", "org.tr", "gov.tr", "edu.tr", "com.sa", "com.ae",
    "co.ae", "com.qa", "com.kw", "com.pl", "net.pl", "org.pl", "com.ua", "org.ua", "net.ua", "co.at", "or.at",
    "ac.at", "gv.at", "com.es", "org.es", "nom.es", "com.pt", "com.gr", "com.cy", "com.mt", "co.hu", "com.ru",
    "net.ru", "org.ru", "co.rs", "com.de", "co.it", "co.no", "com.se", "co.fr", "asso.fr",
    // Hosting domains where each customer gets a subdomain.
    "github.io", "githubusercontent.com", "gitlab.io", "netlify.app", "netlify.com", "vercel.app", "now.sh",
    "pages.dev", "workers.dev", "herokuapp.com", "herokussl.com", "appspot.com", "web.app", "firebaseapp.com",
    "azurewebsites.net", "azurestaticapps.net", "cloudapp.net", "cloudfront.net", "amazonaws.com",
    "elasticbeanstalk.com", "s3.amazonaws.com", "blogspot.com", "wordpress.com", "fly.dev", "onrender.com",
    "glitch.me", "repl.co", "replit.app", "replit.dev", "ngrok.io", "ngrok.app", "ngrok-free.app", "ngrok.dev",
    "loca.lt", "trycloudflare.com", "surge.sh", "bitbucket.io", "readthedocs.io", "codeberg.page", "deno.dev",
    "railway.app", "up.railway.app", "ondigitalocean.app", "run.app", "a.run.app", "cloudfunctions.net",
    "firebaseio.com", "stackblitz.io", "webcontainer.io", "csb.app", "codesandbox.io", "gitpod.io",
    "github.dev", "preview.app.github.dev", "app.github.dev", "translate.goog", "myshopify.com", "wixsite.com",
    "squarespace.com", "webflow.io", "framer.app", "framer.website", "carrd.co", "neocities.org", "tumblr.com",
    "substack.com", "pythonanywhere.com", "dyndns.org", "duckdns.org", "no-ip.org", "localhost.run", "lhr.life",
    "serveo.net", "pinggy.link", "supabase.co", "vercel.dev",
];

/// An `http` or `https` scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn parse(text: &str) -> Option<Scheme> {
        if text.eq_ignore_ascii_case("https") {
            Some(Scheme::Https)
        } else if text.eq_ignore_ascii_case("http") {
            Some(Scheme::Http)
        } else {
            None
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A browser origin: scheme, lowercase host and the port in effect (the default one when none is
/// written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// Reads an origin as a browser serializes it (`Origin` header); `None` for `null` and for
    /// anything that is not `scheme://host[:port]`.
    pub fn parse(text: &str) -> Option<Origin> {
        let (scheme, host, port) = split(text).ok()?;
        check_host(&host).ok()?;
        Some(Origin { scheme, host, port })
    }
}

/// An allowed-origin pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    Exact(Origin),
    /// `scheme://*.base[:port]`: any subdomain of `base`.
    Subdomains {
        scheme: Scheme,
        base: String,
        port: u16,
    },
}

impl OriginPattern {
    /// Parses and checks a pattern; `Err` says what is wrong (without repeating the text).
    pub fn parse(text: &str) -> Result<OriginPattern, String> {
        let (scheme, host, port) = split(text)?;
        match host.strip_prefix("*.") {
            Some(base) => {
                if base.contains('*') {
                    return Err("may hold one `*`, as the whole leftmost label (`https://*.example.com`)".into());
                }
                check_host(base)?;
                if base.parse::<std::net::Ipv4Addr>().is_ok() || base.starts_with('[') {
                    return Err("a wildcard needs a domain name, not an IP address".into());
                }
                if is_public_suffix(base) {
                    return Err(format!(
                        "`*.{base}` would match sites anyone can register under a public suffix; \
                         name your own domain (`https://*.yourapp.{base}`)"
                    ));
                }
                Ok(OriginPattern::Subdomains { scheme, base: base.to_owned(), port })
            }
            None if host.contains('*') => {
                Err("may hold one `*`, as the whole leftmost label (`https://*.example.com`)".into())
            }
            None => {
                check_host(&host)?;
                Ok(OriginPattern::Exact(Origin { scheme, host, port }))
            }
        }
    }

    /// Whether a request from `origin` is allowed by this pattern.
    pub fn matches(&self, origin: &Origin) -> bool {
        match self {
            OriginPattern::Exact(exact) => exact == origin,
            OriginPattern::Subdomains { scheme, base, port } => {
                *scheme == origin.scheme
                    && *port == origin.port
                    && origin.host.len() > base.len() + 1
                    && origin.host.ends_with(base.as_str())
                    && origin.host.as_bytes()[origin.host.len() - base.len() - 1] == b'.'
            }
        }
    }
}

/// The canonical text: lowercase, the default port left out.
impl fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, wildcard, host, port) = match self {
            OriginPattern::Exact(o) => (o.scheme, "", &o.host, o.port),
            OriginPattern::Subdomains { scheme, base, port } => (*scheme, "*.", base, *port),
        };
        write!(f, "{}://{wildcard}{host}", scheme.as_str())?;
        if port != scheme.default_port() {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// Whether `origin` (a request's `Origin` header) is allowed by any of `patterns` (stored canonical
/// pattern texts). `null`, a malformed origin and an unreadable pattern match nothing.
pub fn is_allowed(patterns: &[String], origin: &str) -> bool {
    let Some(origin) = Origin::parse(origin) else { return false };
    patterns.iter().filter_map(|p| OriginPattern::parse(p).ok()).any(|p| p.matches(&origin))
}

/// `scheme://authority` into its parts, the host lowercased and the port made explicit. Refuses
/// paths, queries, fragments, userinfo and anything but http and https.
fn split(text: &str) -> Result<(Scheme, String, u16), String> {
    if text.len() > MAX_ORIGIN_LEN || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "must be at most {MAX_ORIGIN_LEN} printable ASCII characters without spaces (a non-ASCII \
             domain in its xn-- form)"
        ));
    }
    let (scheme, rest) = text.split_once("://").ok_or("must look like https://app.example.com")?;
    let scheme = Scheme::parse(scheme).ok_or("must start with https:// or http://")?;
    if rest.contains(['/', '?', '#']) {
        return Err("is an origin: scheme, host and port only, without a path (not even `/`), query or fragment".into());
    }
    if rest.contains('@') {
        return Err("must not carry a user name or password".into());
    }
    let (host, port) = match rest.rsplit_once(':') {
        // An IPv6 literal's colons are inside its brackets.
        Some((host, port)) if !port.contains(']') => {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0 && port.bytes().all(|b| b.is_ascii_digit()))
                .ok_or("has a port that is not a number from 1 to 65535")?;
            (host, port)
        }
        _ => (rest, scheme.default_port()),
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    Ok((scheme, host.to_ascii_lowercase(), port))
}

/// A host: a DNS name of letters, digits and hyphens (labels 1-63 long, not starting or ending with a
/// hyphen), an IPv4 address, or an IPv6 address in brackets.
fn check_host(host: &str) -> Result<(), String> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().map(|_| ()).map_err(|_| "has a bad IPv6 address".into());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if host.len() > 253 || !host.split('.').all(label_ok) {
        return Err("has a host that is not a domain name or IP address".into());
    }
    Ok(())
}

/// Whether `domain` is a public suffix: a single label (`com`, `localhost`) or one of
/// [`MULTI_LABEL_SUFFIXES`].
pub fn is_public_suffix(domain: &str) -> bool {
    !domain.contains('.') || MULTI_LABEL_SUFFIXES.contains(&domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(patterns: &[&str], origin: &str) -> bool {
        let canonical: Vec<String> = patterns.iter().map(|p| OriginPattern::parse(p).unwrap().to_string()).collect();
        is_allowed(&canonical, origin)
    }

    #[test]
    fn patterns_are_canonical() {
        for (text, canonical) in [
            ("https://App.Example.com", "https://app.example.com"),
            ("HTTPS://app.example.com:443", "https://app.example.com"),
            ("http://localhost:3000", "http://localhost:3000"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://[::1]:5173", "http://[::1]:5173"),
            ("https://*.Example.com", "https://*.example.com"),
            ("https://*.example.co.uk:8443", "https://*.example.co.uk:8443"),
            ("http://app.example.com:80", "http://app.example.com"),
        ] {
            assert_eq!(OriginPattern::parse(text).unwrap().to_string(), canonical, "{text}");
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "",
            "app.example.com",
            "ftp://app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://app.example.com?x=1",
            "https://app.example.com#top",
            "https://user:pw@app.example.com",
            "https://app.*.example.com",
            "https://*app.example.com",
            "https://*.*.example.com",
            "https://*",
            "*",
            "https://*.com",
            "https://*.co.uk",
            "https://*.github.io",
            "https://*.vercel.app",
            "https://*.localhost",
            "https://*.127.0.0.1",
            "https://app.example.com:0",
            "https://app.example.com:65536",
            "https://app.example.com:+1",
            "https://app.example.com:",
            "https://-bad.example.com",
            "https://bad_.example.com",
            "https://app..example.com",
            "https://exämple.com",
            "https://app example.com",
            "https://[::zz]",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_origin_matrix() {
        let exact = ["https://app.example.com"];
        assert!(allowed(&exact, "https://app.example.com"));
        assert!(allowed(&exact, "https://app.example.com:443"), "the default port is the same origin");
        assert!(allowed(&exact, "https://APP.example.com"));
        assert!(!allowed(&exact, "http://app.example.com"), "scheme");
        assert!(!allowed(&exact, "https://app.example.com:8443"), "port");
        assert!(!allowed(&exact, "https://example.com"));
        assert!(!allowed(&exact, "https://x.app.example.com"));
        assert!(!allowed(&exact, "https://app.example.com.evil.com"));
        assert!(!allowed(&exact, "null"));
        assert!(!allowed(&exact, ""));
        assert!(!allowed(&exact, "https://app.example.com/"));

        let wildcard = ["https://*.example.com"];
        assert!(allowed(&wildcard, "https://a.example.com"));
        assert!(allowed(&wildcard, "https://a.b.example.com"), "any depth");
        assert!(!allowed(&wildcard, "https://example.com"), "never the apex");
        assert!(!allowed(&wildcard, "https://evil-example.com"), "only at a label boundary");
        assert!(!allowed(&wildcard, "https://evilexample.com"));
        assert!(!allowed(&wildcard, "https://a.example.com.evil.com"));
        assert!(!allowed(&wildcard, "http://a.example.com"), "scheme");
        assert!(!allowed(&wildcard, "https://a.example.com:8443"), "port");
        assert!(!allowed(&wildcard, "https://.example.com"));

        let dev = ["http://localhost:3000"];
        assert!(allowed(&dev, "http://localhost:3000"));
        assert!(!allowed(&dev, "http://localhost:3001"));
        assert!(!allowed(&dev, "http://localhost"));
    }

    #[test]
    fn public_suffixes() {
        assert!(is_public_suffix("com") && is_public_suffix("co.uk") && is_public_suffix("github.io"));
        assert!(!is_public_suffix("example.com") && !is_public_suffix("example.co.uk"));
        assert!(OriginPattern::parse("https://*.me.github.io").is_ok(), "a user's own site may be wildcarded");
    }
}
