//! The `tollgate` command: `serve` (the default), `check-config`, and `keys create|list|revoke` against
//! the configured store. Configuration is validated before anything is bound or opened; a bad
//! configuration exits with status 2 and a message naming the field, any other failure with status 1.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tollgate::admin::service::mint;
use tollgate::auth::keys::{KeyHasher, KeyId, KeyKind, KeyLimits};
use tollgate::clock::{self, rfc3339, unix_now};
use tollgate::config::{Config, LogFormat};
use tollgate::config::{OPERATOR_CONCURRENCY_RANGE, OPERATOR_RPD_RANGE, OPERATOR_RPM_RANGE};
use tollgate::store::{self, HashedKey, NewAccount, NewKey, Store};

#[derive(Parser)]
#[command(name = "tollgate", version, about = "A reverse proxy for LLM APIs with two-key forwarding")]
struct Cli {
    /// Configuration file [default: $TOLLGATE_CONFIG, else proxy.toml]
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve on the configured listener (the default)
    Serve,
    /// Validate the configuration (and TLS files) without serving
    CheckConfig,
    /// Manage service keys in the configured store
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage accounts in the configured store
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Tokens and requests per key, day and model (default: this month so far)
    Usage {
        /// Only this key (id or key prefix)
        #[arg(long)]
        key: Option<String>,
        /// First day, YYYY-MM-DD (UTC)
        #[arg(long)]
        from: Option<String>,
        /// Last day, YYYY-MM-DD (UTC)
        #[arg(long)]
        to: Option<String>,
    },
}

/// Limit overrides on the command line; each takes a number or `default`.
#[derive(clap::Args, Default)]
struct LimitArgs {
    /// Requests per minute (rolling), 1-10000000: the operator may grant more than an account's 1-1000
    #[arg(long, value_name = "N|default")]
    rpm: Option<LimitValue>,
    /// Requests per UTC day, 1-1000000000: the operator may grant more than an account's 1-10000
    #[arg(long, value_name = "N|default")]
    daily: Option<LimitValue>,
    /// Requests in flight at once, 1-10000
    #[arg(long, value_name = "N|default")]
    concurrency: Option<LimitValue>,
    /// This key's own monthly token quota (UTC calendar month)
    #[arg(long, value_name = "N|default")]
    tokens_per_month: Option<LimitValue>,
}

#[derive(Clone, Copy)]
enum LimitValue {
    Default,
    Value(u64),
}

impl std::str::FromStr for LimitValue {
    type Err = String;
    fn from_str(s: &str) -> Result<LimitValue, String> {
        if s == "default" {
            return Ok(LimitValue::Default);
        }
        s.parse().map(LimitValue::Value).map_err(|_| format!("{s:?} is neither a number nor `default`"))
    }
}

impl LimitValue {
    /// `default` as a return to the configured default, else the value.
    fn change(self) -> Option<u64> {
        match self {
            LimitValue::Default => None,
            LimitValue::Value(n) => Some(n),
        }
    }
}

impl LimitArgs {
    /// Applies the given flags over `limits`, checking each against its range.
    fn apply(&self, mut limits: KeyLimits) -> Result<KeyLimits, String> {
        fn small(flag: &str, v: Option<LimitValue>, range: (u32, u32), slot: &mut Option<u32>) -> Result<(), String> {
            tollgate::auth::keys::change_limit(v.map(LimitValue::change), range, slot)
                .map_err(|e| format!("--{flag} {e}"))
        }
        small("rpm", self.rpm, OPERATOR_RPM_RANGE, &mut limits.requests_per_minute)?;
        small("daily", self.daily, OPERATOR_RPD_RANGE, &mut limits.requests_per_day)?;
        small("concurrency", self.concurrency, OPERATOR_CONCURRENCY_RANGE, &mut limits.concurrent_requests)?;
        match self.tokens_per_month {
            None => {}
            Some(LimitValue::Default) => limits.tokens_per_month = None,
            Some(LimitValue::Value(n)) => limits.tokens_per_month = Some(n),
        }
        Ok(limits)
    }
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it once, on standard output
    Create {
        #[arg(long)]
        name: String,
        /// Days until the key expires [default: never]
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=36500))]
        expires_in: Option<u32>,
        /// live or trial
        #[arg(long, default_value = "live", value_parser = ["live", "trial"])]
        kind: String,
        /// The account that owns the key
        #[arg(long, default_value = "default")]
        account: String,
        /// Create this many keys alike, in one transaction, printed one per line
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        count: u32,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Change a key's limits; flags not given stay as they are, `default` returns one to proxy.toml's
    SetLimits {
        id: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// List keys: id, prefix, name, created, expiry, status (never a secret)
    List,
    /// Revoke a key by its id or key prefix
    Revoke { id: String },
    /// Replace a key: prints the new key once; the old one is revoked now or after the grace period
    Rotate {
        id: String,
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=2_592_000))]
        grace_seconds: u64,
    },
}

#[derive(Subcommand)]
enum AccountsCommand {
    /// Create an account; its password is read from the first line of standard input
    Create {
        #[arg(long)]
        email: String,
        /// A plan from proxy.toml
        #[arg(long, default_value = "default")]
        plan: String,
        /// Most active keys the account may hold
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
        key_cap: u32,
    },
    /// List accounts
    List,
    /// Set an account's plan (and optionally its key cap)
    SetPlan {
        id: String,
        plan: String,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        key_cap: Option<u32>,
    },
    /// Disable an account: its access tokens end, it cannot log in, and its keys are refused
    Disable { id: String },
    /// Enable a disabled account again (its earlier access tokens stay ended)
    Enable { id: String },
}

const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = cli
        .config
        .or_else(|| std::env::var_os("TOLLGATE_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("proxy.toml"));
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tollgate: invalid configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config),
        Command::CheckConfig => check_config(&config, &path),
        Command::Keys(command) => block_on(keys(&config, command)),
        Command::Accounts(command) => block_on(accounts(&config, command)),
        Command::Usage { key, from, to } => block_on(usage(&config, key.as_deref(), from.as_deref(), to.as_deref())),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tollgate: {e}");
            ExitCode::FAILURE
        }
    }
}

type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

/// Runs one store command: a small current-thread runtime drives the same async store the server uses.
fn block_on(command: impl std::future::Future<Output = CliResult>) -> CliResult {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(command)
}

/// Logs to stderr through a batching writer; the guard writes what is left when it is dropped.
fn init_tracing(config: &Config) -> tollgate::telemetry::log_writer::LogGuard {
    let filter = tracing_subscriber::EnvFilter::new(&config.log.level);
    let (writer, guard) = tollgate::telemetry::log_writer::buffered_stderr();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match config.log.format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    guard
}

fn serve(config: Config) -> CliResult {
    let _logs = init_tracing(&config);
    // One thread needs no work stealing: the current-thread scheduler skips its cross-thread wake-ups.
    let mut runtime = match config.server.worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.server.listen))?;
        let addr = listener.local_addr()?;
        let scheme = if config.server.tls.is_some() { "https" } else { "http" };
        tracing::info!(%addr, "listening on {scheme}://{addr}");
        tollgate::run(config, listener, shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot listen for signals; stop with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}

fn check_config(config: &Config, path: &std::path::Path) -> CliResult {
    if let Some(files) = &config.server.tls {
        tollgate::server::tls::acceptor(files).map_err(|e| format!("invalid configuration: {e}"))?;
    }
    println!("{}: ok", path.display());
    println!("  listen      {}{}", config.server.listen, if config.server.tls.is_some() { " (TLS)" } else { "" });
    println!("  store       {}", config.store.path.display());
    for p in &config.providers {
        println!("  provider    {:<12} {:<10} {}://{}{}", p.name, p.kind.as_str(), p.scheme, p.authority, p.base_path);
    }
    Ok(ExitCode::SUCCESS)
}

async fn keys(config: &Config, command: KeysCommand) -> CliResult {
    let store = store::open(&config.store).await?;
    let now = unix_now();
    match command {
        KeysCommand::Create { name, expires_in, kind, account, count, limits } => {
            let name = name.trim();
            if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
                return Err("--name must be 1-128 printable characters".into());
            }
            let kind = KeyKind::parse(&kind).ok_or("--kind must be live or trial")?;
            let expires_at = expires_in.map(|days| now + i64::from(days) * 86_400);
            let hasher = KeyHasher::new(config.keys.hash_secret);
            if store.account(account.clone()).await?.is_none() {
                return Err(format!("account {account:?} does not exist").into());
            }
            let limits = limits.apply(KeyLimits::default())?;
            let new = NewKey { kind, account, limits, expires_at, ..NewKey::live(name, now) };
            let mut secrets = Vec::with_capacity(count as usize);
            let mut minted = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let (secret, identity) = mint(&config.keys.prefix, &hasher, new.kind)?;
                secrets.push(secret);
                minted.push(HashedKey { identity, key: new.clone() });
            }
            let created = store.create_keys(minted).await?;
            if count > 1 {
                eprintln!("created {count} keys named {name:?}; limits {}", describe_limits(&limits, config));
                eprintln!("the keys below are shown once and cannot be recovered; store them now:");
                use std::io::Write;
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                for secret in &secrets {
                    writeln!(out, "{}", secret.expose())?;
                }
                out.flush()?;
                return Ok(ExitCode::SUCCESS);
            }
            let (secret, info) = (&secrets[0], &created[0]);
            eprintln!("created key {:?}", info.name);
            eprintln!("  id          {}", info.id);
            eprintln!("  key_prefix  {}", info.key_prefix);
            eprintln!("  expires     {}", info.expires_at.map_or("never".to_owned(), rfc3339));
            eprintln!("  limits      {}", describe_limits(&info.limits, config));
            eprintln!("the key below is shown once and cannot be recovered; store it now:");
            println!("{}", secret.expose());
        }
        KeysCommand::List => {
            println!(
                "{:<12}  {:<28}  {:<7}  {:<20}  {:<20}  {:<20}  NAME",
                "ID", "KEY_PREFIX", "STATUS", "CREATED", "EXPIRES", "REVOKED"
            );
            for k in store.list_keys().await? {
                println!(
                    "{:<12}  {:<28}  {:<7}  {:<20}  {:<20}  {:<20}  {}",
                    k.id,
                    k.key_prefix,
                    k.status_at(now),
                    rfc3339(k.created_at),
                    k.expires_at.map_or("-".to_owned(), rfc3339),
                    k.revoked_at.map_or("-".to_owned(), rfc3339),
                    printable(&k.name)
                );
            }
        }
        KeysCommand::SetLimits { id, limits } => {
            let key_id = parse_key_id(&id)?;
            let info = store.key_info(key_id).await?.ok_or_else(|| format!("key {key_id} does not exist"))?;
            let updated = limits.apply(info.limits)?;
            store.update_key(key_id, info.name, updated, info.access).await?;
            println!(
                "{key_id}: {}; running servers apply it within {}ms",
                describe_limits(&updated, config),
                config.store.refresh_interval.as_millis()
            );
        }
        KeysCommand::Rotate { id, grace_seconds } => {
            let key_id = parse_key_id(&id)?;
            let Some(old) = store.key_info(key_id).await? else {
                return Err(format!("key {key_id} does not exist").into());
            };
            // The operator may go over the account's key cap; one pending replacement per key still holds.
            let hasher = KeyHasher::new(config.keys.hash_secret);
            let (secret, identity) = mint(&config.keys.prefix, &hasher, old.kind)?;
            let rotated = store.rotate_key(key_id, identity, now, grace_seconds, false).await?;
            let (info, revoke_at) = (rotated.info, rotated.old_revoked_at);
            eprintln!("rotated {key_id}: revoked at {}", rfc3339(revoke_at));
            eprintln!("  new id      {}", info.id);
            eprintln!("  key_prefix  {}", info.key_prefix);
            eprintln!("the key below is shown once and cannot be recovered; store it now:");
            println!("{}", secret.expose());
        }
        KeysCommand::Revoke { id } => {
            let key_id = parse_key_id(&id)?;
            if !store.revoke_key(key_id, now).await? {
                let state = store.key_info(key_id).await?.map_or("does not exist", |_| "is already revoked");
                return Err(format!("key {key_id} {state}").into());
            }
            println!(
                "revoked {key_id}; running servers refuse it within {}ms",
                config.store.refresh_interval.as_millis()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A key id from the bare id or the whole key prefix (`tg_live_<id>`).
fn parse_key_id(text: &str) -> Result<KeyId, String> {
    let bare = text.rsplit('_').next().unwrap_or_default();
    KeyId::parse(bare).ok_or_else(|| format!("{text:?} is not a key id"))
}

fn describe_limits(l: &KeyLimits, config: &Config) -> String {
    let d = &config.limits;
    let mark = |own: bool| if own { "" } else { " (default)" };
    format!(
        "{} rpm{}, {} per day{}, {} concurrent{}, {}{}",
        l.requests_per_minute.unwrap_or(d.requests_per_minute),
        mark(l.requests_per_minute.is_some()),
        l.requests_per_day.unwrap_or(d.requests_per_day),
        mark(l.requests_per_day.is_some()),
        l.concurrent_requests.unwrap_or(d.concurrent_requests),
        mark(l.concurrent_requests.is_some()),
        l.tokens_per_month
            .or(d.tokens_per_month)
            .map_or("no key token quota".to_owned(), |t| format!("{t} tokens per month")),
        mark(l.tokens_per_month.is_some()),
    )
}

async fn usage(config: &Config, key: Option<&str>, from: Option<&str>, to: Option<&str>) -> CliResult {
    let store = store::open(&config.store).await?;
    let now = unix_now();
    let day = |flag: &str, text: Option<&str>, default: i64| match text {
        None => Ok(default),
        Some(t) => clock::parse_date(t).ok_or_else(|| format!("--{flag} {t:?} is not a date like 2026-11-23")),
    };
    let from = day("from", from, clock::month_first_day(now))?;
    let to = day("to", to, clock::day_of(now))?;
    let key = key.map(parse_key_id).transpose()?;
    let rows = store.usage_report(None, key, from, to).await?;
    println!(
        "{:<28}  {:<10}  {:<32}  {:>9}  {:>12}  {:>12}  {:>12}",
        "KEY", "DAY", "MODEL", "REQUESTS", "INPUT", "OUTPUT", "TOTAL"
    );
    let mut totals: Vec<(String, u64, u64, u64)> = Vec::new();
    for r in &rows {
        println!(
            "{:<28}  {:<10}  {:<32}  {:>9}  {:>12}  {:>12}  {:>12}",
            r.key_prefix,
            clock::date_of_day(r.day),
            printable(&r.model),
            r.requests,
            r.input_tokens,
            r.output_tokens,
            r.input_tokens.saturating_add(r.output_tokens)
        );
        match totals.last_mut() {
            Some(t) if t.0 == r.key_prefix => {
                t.1 = t.1.saturating_add(r.requests);
                t.2 = t.2.saturating_add(r.input_tokens);
                t.3 = t.3.saturating_add(r.output_tokens);
            }
            _ => totals.push((r.key_prefix.clone(), r.requests, r.input_tokens, r.output_tokens)),
        }
    }
    for (prefix, requests, input, output) in totals {
        println!(
            "{:<28}  {:<10}  {:<32}  {:>9}  {:>12}  {:>12}  {:>12}",
            prefix,
            "total",
            "",
            requests,
            input,
            output,
            input.saturating_add(output)
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn accounts(config: &Config, command: AccountsCommand) -> CliResult {
    let store = store::open(&config.store).await?;
    match command {
        AccountsCommand::Create { email, plan, key_cap } => {
            if !config.plans.contains_key(&plan) {
                return Err(format!("--plan {plan:?} is not a plan in the configuration").into());
            }
            let email = email.trim().to_ascii_lowercase();
            if !email.contains('@') || email.len() > 254 {
                return Err("--email is not an email address".into());
            }
            let mut password = String::new();
            std::io::stdin().read_line(&mut password)?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.chars().count() < 8 {
                return Err("the password (first line of standard input) must be at least 8 characters".into());
            }
            let hash = tollgate::auth::passwords::hash(password)?;
            let new = NewAccount {
                email: email.clone(),
                password_hash: hash,
                plan: plan.clone(),
                key_cap,
                created_at: unix_now(),
            };
            let account = store.create_account(new).await?;
            println!("{}", account.id);
            eprintln!("created account {} for {email}: plan {plan}, up to {key_cap} keys", account.id);
        }
        AccountsCommand::List => {
            println!("{:<18}  {:<32}  {:<12}  {:>7}  CREATED", "ID", "EMAIL", "PLAN", "KEY_CAP");
            for a in store.list_accounts().await? {
                let email = printable(a.email.as_deref().unwrap_or("-"));
                println!("{:<18}  {:<32}  {:<12}  {:>7}  {}", a.id, email, a.plan, a.key_cap, rfc3339(a.created_at));
            }
        }
        AccountsCommand::SetPlan { id, plan, key_cap } => {
            if !config.plans.contains_key(&plan) {
                return Err(format!("{plan:?} is not a plan in the configuration").into());
            }
            let current = store.account(id.clone()).await?.ok_or_else(|| format!("account {id} does not exist"))?;
            let key_cap = key_cap.unwrap_or(current.key_cap);
            store.update_account(id.clone(), plan.clone(), key_cap).await?;
            println!("{id}: plan {plan}, up to {key_cap} keys");
        }
        AccountsCommand::Disable { id } => set_disabled(&*store, config, &id, true).await?,
        AccountsCommand::Enable { id } => set_disabled(&*store, config, &id, false).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Text from the store as a terminal shows it safely: control and bidirectional-override characters
/// escaped (`\u{1b}`), so a stored name can neither move the cursor nor forge a row.
fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

async fn set_disabled(
    store: &dyn Store,
    config: &Config,
    id: &str,
    disabled: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    store.set_disabled(id.to_owned(), disabled).await?.ok_or_else(|| format!("account {id} does not exist"))?;
    println!(
        "{id}: {}; running servers apply it within {}ms",
        if disabled { "disabled" } else { "enabled" },
        config.store.refresh_interval.as_millis()
    );
    Ok(())
}
