//! `tollgate accounts create|list|set-plan|disable|enable`.

use std::process::ExitCode;

use clap::Subcommand;
use tollgate::admin::service::ControlPlane;
use tollgate::clock::{rfc3339, unix_now};
use tollgate::config::Config;

use super::{CliResult, control_plane, printable, refused};

#[derive(Subcommand)]
pub enum AccountsCommand {
    /// Create an account; its password is read from the first line of standard input
    Create {
        #[arg(long)]
        email: String,
        /// A plan from proxy.toml
        #[arg(long, default_value = "default")]
        plan: String,
        /// Most active keys the account may hold, 1-1000 [default: 10]
        #[arg(long)]
        key_cap: Option<u32>,
    },
    /// List accounts
    List,
    /// Set an account's plan (and optionally its key cap)
    SetPlan {
        id: String,
        plan: String,
        /// Most active keys the account may hold, 1-1000
        #[arg(long)]
        key_cap: Option<u32>,
    },
    /// Disable an account: its access tokens end, it cannot log in, and its keys are refused
    Disable { id: String },
    /// Enable a disabled account again (its earlier access tokens stay ended)
    Enable { id: String },
}

pub async fn run(config: &Config, command: AccountsCommand) -> CliResult {
    let control = control_plane(config).await?;
    match command {
        AccountsCommand::Create { email, plan, key_cap } => create(&control, &email, plan, key_cap).await?,
        AccountsCommand::List => {
            println!("{:<18}  {:<32}  {:<12}  {:>7}  CREATED", "ID", "EMAIL", "PLAN", "KEY_CAP");
            for a in control.list_accounts().await.map_err(refused)? {
                let email = printable(a.email.as_deref().unwrap_or("-"));
                println!("{:<18}  {:<32}  {:<12}  {:>7}  {}", a.id, email, a.plan, a.key_cap, rfc3339(a.created_at));
            }
        }
        AccountsCommand::SetPlan { id, plan, key_cap } => {
            let account = control.update_account(&id, Some(plan), key_cap, None).await.map_err(refused)?;
            println!("{id}: plan {}, up to {} keys", account.plan, account.key_cap);
        }
        AccountsCommand::Disable { id } => set_disabled(&control, config, &id, true).await?,
        AccountsCommand::Enable { id } => set_disabled(&control, config, &id, false).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn create(
    control: &ControlPlane<'_>,
    email: &str,
    plan: String,
    key_cap: Option<u32>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']);
    let draft = control.check_account(email.trim(), password, Some(plan), key_cap).map_err(refused)?;
    let hash = tollgate::auth::passwords::hash(password)?;
    let account = control.create_account(draft, hash, unix_now()).await.map_err(refused)?;
    println!("{}", account.id);
    eprintln!(
        "created account {} for {}: plan {}, up to {} keys",
        account.id,
        account.email.as_deref().unwrap_or_default(),
        account.plan,
        account.key_cap
    );
    Ok(())
}

async fn set_disabled(
    control: &ControlPlane<'_>,
    config: &Config,
    id: &str,
    disabled: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    control.set_disabled(id, disabled).await.map_err(refused)?;
    println!(
        "{id}: {}; running servers apply it within {}ms",
        if disabled { "disabled" } else { "enabled" },
        config.store.refresh_interval.as_millis()
    );
    Ok(())
}
