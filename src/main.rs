//! The `tollgate` command: `serve` (the default), `check-config`, and `keys create|list|revoke` against
//! the configured store. Configuration is validated before anything is bound or opened; a bad
//! configuration exits with status 2 and a message naming the field, any other failure with status 1.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tollgate::clock::{rfc3339, unix_now};
use tollgate::config::{Config, LogFormat};
use tollgate::keys::{KeyHasher, KeyId, KeyKind};
use tollgate::store::SqliteStore;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "A reverse proxy for LLM APIs with two-key forwarding"
)]
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
    },
    /// List keys: id, prefix, name, created, expiry, status (never a secret)
    List,
    /// Revoke a key by its id or key prefix
    Revoke { id: String },
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
        Command::Keys(command) => keys(&config, command),
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

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::new(&config.log.level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn serve(config: Config) -> CliResult {
    init_tracing(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.server.listen))?;
        let addr = listener.local_addr()?;
        let scheme = if config.server.tls.is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!(%addr, "listening on {scheme}://{addr}");
        tollgate::run(config, listener, shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
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
        tollgate::tls::acceptor(files).map_err(|e| format!("invalid configuration: {e}"))?;
    }
    println!("{}: ok", path.display());
    println!(
        "  listen      {}{}",
        config.server.listen,
        if config.server.tls.is_some() {
            " (TLS)"
        } else {
            ""
        }
    );
    println!("  store       {}", config.store.path.display());
    for p in &config.providers {
        println!(
            "  provider    {:<12} {:<10} {}://{}{}",
            p.name,
            p.kind.as_str(),
            p.scheme,
            p.authority,
            p.base_path
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn keys(config: &Config, command: KeysCommand) -> CliResult {
    let store = SqliteStore::open(&config.store.path)?;
    let now = unix_now();
    match command {
        KeysCommand::Create {
            name,
            expires_in,
            kind,
        } => {
            let name = name.trim();
            if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
                return Err("--name must be 1-128 printable characters".into());
            }
            let kind = KeyKind::parse(&kind).ok_or("--kind must be live or trial")?;
            let expires_at = expires_in.map(|days| now + i64::from(days) * 86_400);
            let hasher = KeyHasher::new(config.keys.hash_secret);
            let (secret, info) =
                store.create_key(&config.keys.prefix, &hasher, kind, name, now, expires_at)?;
            eprintln!("created key {:?}", info.name);
            eprintln!("  id          {}", info.id);
            eprintln!("  key_prefix  {}", info.key_prefix);
            eprintln!(
                "  expires     {}",
                info.expires_at.map_or("never".to_owned(), rfc3339)
            );
            eprintln!("the key below is shown once and cannot be recovered; store it now:");
            println!("{}", secret.expose());
        }
        KeysCommand::List => {
            println!(
                "{:<12}  {:<28}  {:<7}  {:<20}  {:<20}  {:<20}  NAME",
                "ID", "KEY_PREFIX", "STATUS", "CREATED", "EXPIRES", "REVOKED"
            );
            for k in store.list_keys()? {
                println!(
                    "{:<12}  {:<28}  {:<7}  {:<20}  {:<20}  {:<20}  {}",
                    k.id,
                    k.key_prefix,
                    k.status_at(now),
                    rfc3339(k.created_at),
                    k.expires_at.map_or("-".to_owned(), rfc3339),
                    k.revoked_at.map_or("-".to_owned(), rfc3339),
                    k.name
                );
            }
        }
        KeysCommand::Revoke { id } => {
            // Accept the bare id or the whole key prefix (`tg_live_<id>`).
            let bare = id.rsplit('_').next().unwrap_or_default();
            let key_id = KeyId::parse(bare).ok_or_else(|| format!("{id:?} is not a key id"))?;
            if !store.revoke_key(key_id, now)? {
                let state = store
                    .key_info(key_id)?
                    .map_or("does not exist", |_| "is already revoked");
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
