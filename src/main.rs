//! The `tollgate` command: `serve` (the default), `check-config`, and the operator's `keys`, `accounts`
//! and `usage` commands against the configured store (in [`cli`]). Configuration is validated before anything is bound or opened; a bad
//! configuration exits with status 2 and a message naming the field, any other failure with status 1.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cli::{CliResult, accounts::AccountsCommand, block_on, keys::KeysCommand, projects::ProjectsCommand};
use tollgate::config::{Config, LogFormat};

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
    Keys(Box<KeysCommand>),
    /// Manage accounts in the configured store
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Manage an account's projects in the configured store
    #[command(subcommand)]
    Projects(ProjectsCommand),
    /// Tokens and requests per key, day and model (default: this month so far)
    Usage(cli::usage::UsageArgs),
    /// The configured store itself: `migrate` applies its schema migrations
    #[command(subcommand)]
    Store(cli::store::StoreCommand),
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
        Command::Keys(command) => block_on(cli::keys::run(&config, *command)),
        Command::Accounts(command) => block_on(cli::accounts::run(&config, command)),
        Command::Projects(command) => block_on(cli::projects::run(&config, command)),
        Command::Usage(args) => block_on(cli::usage::run(&config, args)),
        Command::Store(command) => block_on(cli::store::run(&config, command)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tollgate: {e}");
            ExitCode::FAILURE
        }
    }
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
        if config.dashboard.enabled && config.dashboard.listen.is_none() {
            tracing::info!("dashboard at {scheme}://{addr}/dashboard/");
        }
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

fn block_on_probe(pg: &tollgate::config::PostgresConfig) -> Result<(String, usize, usize), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(runtime.block_on(tollgate::store::PgStore::probe(pg))?)
}

fn check_config(config: &Config, path: &std::path::Path) -> CliResult {
    if let Some(files) = &config.server.tls {
        tollgate::server::tls::acceptor(files).map_err(|e| format!("invalid configuration: {e}"))?;
    }
    // The shared store is reached over the network: whether it answers, and how far its schema is.
    let probe = match &config.store.backend {
        tollgate::config::StoreBackend::Postgres(pg) => Some(block_on_probe(pg)?),
        tollgate::config::StoreBackend::Sqlite => None,
    };
    println!("{}: ok", path.display());
    println!("  listen      {}{}", config.server.listen, if config.server.tls.is_some() { " (TLS)" } else { "" });
    println!("  store       {}", config.store.describe());
    if let Some((version, applied, total)) = &probe {
        println!("              connected: PostgreSQL {version}, {applied} of {total} migrations applied");
    }
    if config.counters.backend == tollgate::config::counters::CountersBackend::Redis {
        let found = block_on(async {
            let found = tollgate::metering::limits::redis::check(&config.counters).await?;
            println!("  counters    redis: {found}");
            Ok(ExitCode::SUCCESS)
        });
        found.map_err(|e| format!("counters: {e}"))?;
    }
    for p in &config.providers {
        println!("  provider    {:<12} {:<10} {}://{}{}", p.name, p.kind.as_str(), p.scheme, p.authority, p.base_path);
    }
    Ok(ExitCode::SUCCESS)
}
