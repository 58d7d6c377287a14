//! `tollgate store migrate`: brings the configured store's schema up to date and says what it did.
//! The server applies the same migrations at start; this runs them ahead of a rollout.

use std::process::ExitCode;

use clap::Subcommand;
use tollgate::config::{Config, StoreBackend};

use super::CliResult;

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Apply the schema migrations not applied yet (PostgreSQL: under an advisory lock, safe while
    /// other instances start)
    Migrate,
}

pub async fn run(config: &Config, command: StoreCommand) -> CliResult {
    match command {
        StoreCommand::Migrate => migrate(config).await,
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
