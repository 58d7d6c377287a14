//! The `[store]` section: which backend keeps the durable state (the SQLite file, or a PostgreSQL
//! database for several instances), and how often servers follow it.

use std::path::PathBuf;
use std::time::Duration;

use super::raw::RawStore;
use super::{ConfigError, ENV_DATABASE_URL, invalid};

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The SQLite file (used when `backend` is SQLite).
    pub path: PathBuf,
    pub backend: StoreBackend,
    pub refresh_interval: Duration,
    /// How often usage counters are written to the store (the most a crash can lose).
    pub flush_interval: Duration,
    /// How long the keys in memory are trusted without a successful read of the store: past it,
    /// revocations made elsewhere since may be missed, `/readyz` says so, and `on_stale` applies.
    pub max_staleness: Duration,
    pub on_stale: OnStale,
}

/// What the data plane does once the keys in memory are older than `store.max_staleness`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStale {
    /// Refuse key-authenticated requests with 503 until the store answers again: a key revoked
    /// elsewhere meanwhile is never served.
    Refuse,
    /// Go on serving the keys last read (availability over a revocation's reach).
    Serve,
}

impl StoreConfig {
    /// What the store is, fit for a log line: the file, or the database without its credentials.
    pub fn describe(&self) -> String {
        match &self.backend {
            StoreBackend::Sqlite => format!("sqlite {}", self.path.display()),
            StoreBackend::Postgres(pg) => match &pg.schema {
                Some(schema) => format!("postgres {:?} (schema {schema})", pg.url),
                None => format!("postgres {:?}", pg.url),
            },
        }
    }
}

#[derive(Debug, Clone)]
pub enum StoreBackend {
    Sqlite,
    Postgres(PostgresConfig),
}

#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub url: DatabaseUrl,
    /// Connections kept open at most (besides the one that listens for changes).
    pub pool_size: usize,
    /// The longest one statement may run, and the longest a call waits for a pooled connection.
    pub statement_timeout: Duration,
    /// The schema tollgate's tables live in (`search_path`); the server's default when `None`.
    pub schema: Option<String>,
    /// Trust roots besides the webpki ones for the database's certificate (`store.ca_file`).
    pub ca_certs: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// A PostgreSQL connection URL (or key=value string). It may hold a password: `Debug` shows it
/// without one, and nothing else prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: String) -> DatabaseUrl {
        DatabaseUrl(url)
    }

    /// The whole URL, password included, for the connection only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL as `tokio-postgres` reads it: `sslmode=verify-full` and `verify-ca` become `require`, which
    /// over rustls verifies the certificate chain and the host name just as `verify-full` does.
    pub fn for_connection(&self) -> String {
        self.0.replace("sslmode=verify-full", "sslmode=require").replace("sslmode=verify-ca", "sslmode=require")
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

/// The URL without what could be a password: the userinfo's secret part in URL form, and any
/// `password=` value in either form.
fn redact(url: &str) -> String {
    let mut out = match url.split_once("://") {
        // The userinfo ends at the last `@` before the query, even when an unencoded password holds a
        // `/` or an `@`.
        Some((scheme, rest)) => match rest[..rest.find('?').unwrap_or(rest.len())].rfind('@') {
            Some(at) => {
                let (userinfo, host) = rest.split_at(at);
                let user = userinfo.split(':').next().unwrap_or("");
                let hidden = if userinfo.contains(':') { ":[redacted]" } else { "" };
                format!("{scheme}://{user}{hidden}{host}")
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    };
    while let Some(at) = out.find("password=") {
        let start = at + "password=".len();
        let end = out[start..].find(['&', ' ']).map_or(out.len(), |e| start + e);
        out.replace_range(at..end, "pw=[redacted]");
    }
    out
}

/// What a schema name must be (it is written into statements, so nothing else is accepted).
pub const SCHEMA_NAME_RULE: &str = "must be a lowercase identifier (a-z, 0-9, _), at most 63 characters";

/// Whether `s` is a schema name tollgate accepts: a plain lowercase identifier.
pub fn schema_name_ok(s: &str) -> bool {
    s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The backend `[store]` names, from its raw fields and the values `validate.rs` read already (the
/// statement timeout, the certificates of `ca_file`); the errors name the field.
pub(super) fn backend(
    raw: &RawStore,
    statement_timeout: Duration,
    ca_certs: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> Result<StoreBackend, ConfigError> {
    match raw.backend.as_deref().unwrap_or("sqlite") {
        "sqlite" => return Ok(StoreBackend::Sqlite),
        "postgres" => {}
        other => return Err(invalid("store.backend", format!("`{other}` is not sqlite or postgres"))),
    }
    let url = raw.url.clone().ok_or_else(|| {
        invalid("store.url", format!("required when backend = \"postgres\" (or set {ENV_DATABASE_URL})"))
    })?;
    let url = DatabaseUrl(url);
    url.for_connection()
        .parse::<tokio_postgres::Config>()
        .map_err(|e| invalid("store.url", format!("not a PostgreSQL URL: {e}")))?;
    let pool_size = raw.pool_size.unwrap_or(8);
    if !(1..=1000).contains(&pool_size) {
        return Err(invalid("store.pool_size", "must be between 1 and 1000"));
    }
    let schema = raw.schema.clone();
    if let Some(s) = &schema {
        if !schema_name_ok(s) {
            return Err(invalid("store.schema", SCHEMA_NAME_RULE));
        }
    }
    Ok(StoreBackend::Postgres(PostgresConfig { url, pool_size, statement_timeout, schema, ca_certs }))
}

/// `store.max_staleness`: 10 s or three refresh intervals, whichever is longer, by default; never under
/// two intervals, since a healthy server reads the store once an interval at the latest.
pub(super) fn max_staleness(set: Option<Duration>, refresh_interval: Duration) -> Result<Duration, ConfigError> {
    let Some(value) = set else {
        return Ok(refresh_interval.saturating_mul(3).max(Duration::from_secs(10)));
    };
    if value < refresh_interval.saturating_mul(2) {
        return Err(invalid("store.max_staleness", "must be at least twice store.refresh_interval"));
    }
    Ok(value)
}

pub(super) fn on_stale(raw: Option<&str>) -> Result<OnStale, ConfigError> {
    match raw.unwrap_or("refuse") {
        "refuse" => Ok(OnStale::Refuse),
        "serve" => Ok(OnStale::Serve),
        other => Err(invalid("store.on_stale", format!("`{other}` is not refuse or serve"))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn parse(text: &str, url: Option<&str>) -> Result<Config, ConfigError> {
        Config::from_toml(text, |name| (name == ENV_DATABASE_URL).then(|| url.map(str::to_owned)).flatten())
    }

    #[test]
    fn sqlite_is_the_default_and_postgres_takes_its_url_from_the_environment() {
        assert!(matches!(parse("", None).unwrap().store.backend, StoreBackend::Sqlite));
        let text = "[store]\nbackend = \"postgres\"\nurl = \"postgres://file@h/db\"\npool_size = 3\n";
        let c = parse(text, Some("postgres://env:s3cret-canary@db.internal:5432/tg")).unwrap();
        let StoreBackend::Postgres(pg) = &c.store.backend else { panic!("not postgres") };
        assert_eq!(pg.url.expose(), "postgres://env:s3cret-canary@db.internal:5432/tg", "the environment wins");
        assert_eq!((pg.pool_size, pg.statement_timeout), (3, Duration::from_secs(5)));
        for shown in [format!("{c:?}"), c.store.describe()] {
            assert!(!shown.contains("s3cret-canary"), "{shown}");
            assert!(shown.contains("env:[redacted]@db.internal:5432/tg"), "{shown}");
        }
        for url in [
            "host=h user=u password=canary-pw dbname=d",
            "postgres://u:canary-pw/x@y@h:5432/d?sslmode=require",
            "postgres://u@h/d?password=canary-pw&sslmode=require",
        ] {
            let shown = format!("{:?}", DatabaseUrl::new(url.into()));
            assert!(!shown.contains("canary-pw") && shown.contains('h'), "{shown}");
        }
        let e = parse("[store]\nbackend = \"postgres\"\nurl = \"postgres://u:canary-pw%zz@h:x/d\"\n", None);
        assert!(!e.unwrap_err().0.contains("canary-pw"), "a parse error does not echo the URL");
    }

    #[test]
    fn keys_are_trusted_for_ten_seconds_or_three_refresh_intervals_by_default() {
        let store = parse("", None).unwrap().store;
        assert_eq!((store.max_staleness, store.on_stale), (Duration::from_secs(10), OnStale::Refuse));
        let store = parse("[store]\nrefresh_interval = \"30s\"\non_stale = \"serve\"\n", None).unwrap().store;
        assert_eq!((store.max_staleness, store.on_stale), (Duration::from_secs(90), OnStale::Serve));
        let store = parse("[store]\nmax_staleness = \"2s\"\n", None).unwrap().store;
        assert_eq!(store.max_staleness, Duration::from_secs(2));
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            ("[store]\nbackend = \"mysql\"\n", "store.backend"),
            ("[store]\nbackend = \"postgres\"\n", "store.url"),
            ("[store]\nbackend = \"postgres\"\nurl = \"postgres://u@h/d?sslmode=sometimes\"\n", "store.url"),
            (
                "[store]\nbackend = \"postgres\"\nurl = \"postgres://u@h/d\"\nca_file = \"/nonexistent.pem\"\n",
                "store.ca_file",
            ),
            ("[store]\nbackend = \"postgres\"\nurl = \"postgres://u@h/d\"\npool_size = 0\n", "store.pool_size"),
            (
                "[store]\nbackend = \"postgres\"\nurl = \"postgres://u@h/d\"\nstatement_timeout = \"x\"\n",
                "store.statement_timeout",
            ),
            ("[store]\nbackend = \"postgres\"\nurl = \"postgres://u@h/d\"\nschema = \"A;drop\"\n", "store.schema"),
            ("[store]\nrefresh_interval = \"1s\"\nmax_staleness = \"1500ms\"\n", "store.max_staleness"),
            ("[store]\nmax_staleness = \"0s\"\n", "store.max_staleness"),
            ("[store]\non_stale = \"maybe\"\n", "store.on_stale"),
        ];
        for (text, field) in cases {
            let e = parse(text, None).unwrap_err();
            assert!(e.0.starts_with(field), "{text:?} gave {e}");
        }
    }
}
