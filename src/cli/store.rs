//! `tollgate store migrate`: brings the configured store's schema up to date and says what it did.
//! The server applies the same migrations at start; this runs them ahead of a rollout.
//! `tollgate store copy`: moves a SQLite file into a PostgreSQL store (`tollgate::store::copy`) and
//! prints, per table, the rows in the source and in the target.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use tollgate::config::{Config, DatabaseUrl, PostgresConfig, StoreBackend};
use tollgate::store::copy::{CopyOptions, CopyOutcome};

use super::CliResult;

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Apply the schema migrations not applied yet (PostgreSQL: under an advisory lock, safe while
    /// other instances start)
    Migrate,
    /// Copy a SQLite file's accounts, projects, keys and usage into a PostgreSQL store
    Copy(CopyArgs),
}

#[derive(Args)]
pub struct CopyArgs {
    /// The SQLite file to copy from (`sqlite:PATH` or PATH); only read
    #[arg(long)]
    from: String,
    /// The PostgreSQL URL to copy to; default: the configured store (whose URL may come from
    /// TOLLGATE_DATABASE_URL, which keeps a password off the command line)
    #[arg(long)]
    to: Option<String>,
    /// The schema of the target's tables (created if missing); default: the configured one
    #[arg(long)]
    schema: Option<String>,
    /// Let the target hold other rows (they are kept); rows of the same key must still be equal
    #[arg(long)]
    merge: bool,
}

pub async fn run(config: &Config, command: StoreCommand) -> CliResult {
    match command {
        StoreCommand::Migrate => migrate(config).await,
        StoreCommand::Copy(args) => copy(config, args).await,
    }
}

async fn migrate(config: &Config) -> CliResult {
    let store = config.store.describe();
    match &config.store.backend {
        StoreBackend::Postgres(pg) => {
            let (total, ran) = tollgate::store::PgStore::migrate(pg).await?;
            println!("{store}: {ran} migration(s) applied now, {total} in all; the schema is up to date");
        }
        StoreBackend::Sqlite => {
            // Opening the file applies its migrations.
            tollgate::store::open(&config.store).await?;
            println!("{store}: the schema is up to date");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The longest one statement of a copy may run (staging or comparing a large table).
const COPY_STATEMENT_TIMEOUT: Duration = Duration::from_secs(600);

/// The target: `--to` (or the configured PostgreSQL store), in `--schema` if given.
fn target(config: &Config, args: &CopyArgs) -> Result<PostgresConfig, String> {
    let configured = match &config.store.backend {
        StoreBackend::Postgres(pg) => Some(pg),
        StoreBackend::Sqlite => None,
    };
    let mut pg = match (&args.to, configured) {
        (Some(url), _) => {
            let url = DatabaseUrl::new(url.clone());
            // The parser's message never holds the URL; this one does not either.
            url.for_connection()
                .parse::<tokio_postgres::Config>()
                .map_err(|e| format!("--to is not a PostgreSQL URL: {e}"))?;
            let ca_certs = configured.map(|c| c.ca_certs.clone()).unwrap_or_default();
            PostgresConfig { url, pool_size: 1, statement_timeout: COPY_STATEMENT_TIMEOUT, schema: None, ca_certs }
        }
        (None, Some(pg)) => PostgresConfig { statement_timeout: COPY_STATEMENT_TIMEOUT, ..pg.clone() },
        (None, None) => return Err("--to is required: the configured store is not PostgreSQL".into()),
    };
    if let Some(schema) = &args.schema {
        if !tollgate::config::schema_name_ok(schema) {
            return Err(format!("--schema {}", tollgate::config::SCHEMA_NAME_RULE));
        }
        pg.schema = Some(schema.clone());
    }
    Ok(pg)
}

async fn copy(config: &Config, args: CopyArgs) -> CliResult {
    let from = PathBuf::from(args.from.strip_prefix("sqlite:").unwrap_or(&args.from));
    let to = target(config, &args)?;
    let options = CopyOptions { merge: args.merge };
    let shown = match &to.schema {
        Some(schema) => format!("postgres {:?} (schema {schema})", to.url),
        None => format!("postgres {:?}", to.url),
    };
    eprintln!("copying sqlite {} to {shown}", from.display());
    let started = std::time::Instant::now();
    let counts = match tollgate::store::copy::copy_sqlite_to_postgres(&from, &to, options).await? {
        CopyOutcome::Copied(counts) => counts,
        CopyOutcome::Refused(refusal) => {
            eprintln!("tollgate: {refusal}");
            eprintln!("  (--merge keeps other rows of the target; rows that differ are never overwritten)");
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("{:<16} {:>10} {:>10} {:>10} {:>10}", "table", "source", "target", "equal", "written");
    for c in &counts {
        println!("{:<16} {:>10} {:>10} {:>10} {:>10}", c.table, c.source, c.target, c.equal, c.written);
    }
    let seconds = started.elapsed().as_secs_f64();
    if counts.iter().all(|c| c.verified(options)) {
        eprintln!("verified in {seconds:.2} s: every row of the source is in the target as it is");
        Ok(ExitCode::SUCCESS)
    } else {
        let off: Vec<&str> = counts.iter().filter(|c| !c.verified(options)).map(|c| c.table).collect();
        eprintln!("tollgate: the counts do not match for {}", off.join(", "));
        Ok(ExitCode::FAILURE)
    }
}
