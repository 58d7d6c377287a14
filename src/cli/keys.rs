//! `tollgate keys create|set-limits|set|disable|enable|list|claim|revoke|rotate|signing-secret`.

use std::io::Write;
use std::process::ExitCode;

use clap::Subcommand;
use tollgate::admin::service::{Actor, ControlPlane, KeyChange, KeyRequest, LimitChanges, PolicyChanges, Revocation};
use tollgate::auth::keys::KeyKind;
use tollgate::clock::{rfc3339, unix_now};
use tollgate::config::Config;

use super::key_args::PolicyArgs;
use super::{CliResult, control_plane, key_id, printable, refused};

/// Limit overrides on the command line; each takes a number or `default`.
#[derive(clap::Args, Default)]
pub struct LimitArgs {
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

impl LimitArgs {
    /// The flags given; `default` returns a limit to the configured default.
    fn changes(&self) -> LimitChanges {
        let change = |v: Option<LimitValue>| {
            v.map(|v| match v {
                LimitValue::Default => None,
                LimitValue::Value(n) => Some(n),
            })
        };
        LimitChanges {
            requests_per_minute: change(self.rpm),
            requests_per_day: change(self.daily),
            concurrent_requests: change(self.concurrency),
            tokens_per_month: change(self.tokens_per_month),
        }
    }
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it once, on standard output
    Create {
        #[arg(long)]
        name: String,
        /// Days until the key expires [default: never]
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=36500))]
        expires_in: Option<u32>,
        /// live (secret, for servers) or publishable (for browsers; needs --allowed-origin)
        #[arg(long, default_value = "live", value_parser = ["live", "publishable"])]
        kind: String,
        /// The account that owns the key
        #[arg(long, default_value = "default")]
        account: String,
        /// A project of the account, by id
        #[arg(long, value_name = "ID")]
        project: Option<String>,
        /// What the key is for
        #[arg(long)]
        description: Option<String>,
        /// Create this many keys alike, in one transaction, printed one per line
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        count: u32,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Change a key's limits; flags not given stay as they are, `default` returns one to proxy.toml's
    SetLimits {
        id: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Change a key's policy (origins, addresses, credential, end-user limits); flags not given stay
    Set {
        id: String,
        /// What the key is for
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Switch a key off until it is enabled again (requests with it get 403)
    Disable { id: String },
    /// Switch a disabled key back on
    Enable { id: String },
    /// List keys: id, prefix, name, created, expiry, status (never a secret)
    List,
    /// Revoke a key by its id or key prefix
    Revoke { id: String },
    /// Move a trial key into an account (its usage too); `-` reads the key from standard input
    Claim {
        /// The account that takes the key
        #[arg(long)]
        account: String,
        /// The whole trial key (tg_trial_…), or `-` to read it from standard input
        trial_key: String,
    },
    /// Replace a key: prints the new key once; the old one is revoked now or after the grace period
    Rotate {
        id: String,
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=2_592_000))]
        grace_seconds: u64,
    },
    /// Give a publishable key a new signing secret for its identity tokens, printed once; the old one
    /// stops verifying within one key refresh of the running servers
    SigningSecret { id: String },
}

pub async fn run(config: &Config, command: KeysCommand) -> CliResult {
    let control = control_plane(config).await?;
    let now = unix_now();
    match command {
        KeysCommand::Create { name, expires_in, kind, account, project, description, count, limits, policy } => {
            let request = KeyRequest {
                kind: if kind == "publishable" { KeyKind::Publishable } else { KeyKind::Live },
                name: name.trim().to_owned(),
                account,
                scopes: None,
                providers: None,
                models: None,
                limits: limits.changes(),
                expires_in_days: expires_in,
                project,
                description,
                metadata: None,
                policy: policy.changes(),
            };
            create(&control, request, count, now).await?;
        }
        KeysCommand::List => list(&control, now).await?,
        KeysCommand::Claim { account, trial_key } => {
            claim(&control, config, &account, &trial_key, now).await?;
        }
        KeysCommand::SetLimits { id, limits } => {
            let id = key_id(&id)?;
            let change = KeyChange { limits: limits.changes(), ..KeyChange::default() };
            let info = control.update_key(Actor::Operator, id, change).await.map_err(refused)?;
            println!(
                "{id}: {}; running servers apply it within {}ms",
                control.effective_limits(&info.limits),
                config.store.refresh_interval.as_millis()
            );
        }
        KeysCommand::Set { id, description, policy } => {
            let id = key_id(&id)?;
            let change =
                KeyChange { description: description.map(Some), policy: policy.changes(), ..KeyChange::default() };
            control.update_key(Actor::Operator, id, change).await.map_err(refused)?;
            println!("{id} changed; running servers apply it within {}ms", config.store.refresh_interval.as_millis());
        }
        KeysCommand::Disable { id } => {
            set_enabled(&control, config, &id, false).await?;
        }
        KeysCommand::Enable { id } => {
            set_enabled(&control, config, &id, true).await?;
        }
        KeysCommand::Rotate { id, grace_seconds } => {
            let id = key_id(&id)?;
            // The operator may go over the account's key cap; one pending replacement per key still holds.
            let (secret, rotated) =
                control.rotate_key(Actor::Operator, id, grace_seconds, now).await.map_err(refused)?;
            eprintln!("rotated {id}: revoked at {}", rfc3339(rotated.old_revoked_at));
            eprintln!("  new id      {}", rotated.info.id);
            eprintln!("  key_prefix  {}", rotated.info.key_prefix);
            eprintln!("the key below is shown once and cannot be recovered; store it now:");
            println!("{}", secret.expose());
        }
        KeysCommand::SigningSecret { id } => {
            let id = key_id(&id)?;
            let secret = control.issue_signing_secret(id, now).await.map_err(refused)?;
            eprintln!(
                "new signing secret of {id}; the old one stops verifying within {}ms",
                config.store.refresh_interval.as_millis()
            );
            eprintln!("the signing secret below is shown once and cannot be recovered; store it on your server:");
            println!("{}", secret.expose());
        }
        KeysCommand::Revoke { id } => {
            let id = key_id(&id)?;
            if control.revoke_key(id, now).await.map_err(refused)? == Revocation::AlreadyRevoked {
                return Err(format!("key {id} is already revoked").into());
            }
            println!("revoked {id}; running servers refuse it within {}ms", config.store.refresh_interval.as_millis());
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn claim(control: &ControlPlane<'_>, config: &Config, account: &str, text: &str, now: i64) -> CliResult {
    let text = if text == "-" {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim().to_owned()
    } else {
        text.to_owned()
    };
    let info = control.claim_trial_key(account, &text, now).await.map_err(refused)?;
    println!(
        "claimed {} into {account}; running servers apply it within {}ms",
        info.key_prefix,
        config.store.refresh_interval.as_millis()
    );
    Ok(ExitCode::SUCCESS)
}

async fn set_enabled(control: &ControlPlane<'_>, config: &Config, id: &str, enabled: bool) -> CliResult {
    let id = key_id(id)?;
    let policy = PolicyChanges { enabled: Some(enabled), ..PolicyChanges::default() };
    control.update_key(Actor::Operator, id, KeyChange { policy, ..KeyChange::default() }).await.map_err(refused)?;
    let done = if enabled { "enabled" } else { "disabled" };
    println!("{done} {id}; running servers apply it within {}ms", config.store.refresh_interval.as_millis());
    Ok(ExitCode::SUCCESS)
}

async fn create(control: &ControlPlane<'_>, request: KeyRequest, count: u32, now: i64) -> CliResult {
    let name = request.name.clone();
    let created = control.create_keys(Actor::Operator, request, count, now).await.map_err(refused)?;
    let Some((secret, info)) = created.first().filter(|_| count == 1) else {
        let limits = created.first().map(|(_, info)| control.effective_limits(&info.limits));
        let limits = limits.map(|l| l.to_string()).unwrap_or_default();
        eprintln!("created {count} keys named {name:?}; limits {limits}");
        eprintln!("the keys below are shown once and cannot be recovered; store them now:");
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for (secret, _) in &created {
            writeln!(out, "{}", secret.expose())?;
        }
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    };
    eprintln!("created key {:?}", info.name);
    eprintln!("  id          {}", info.id);
    eprintln!("  key_prefix  {}", info.key_prefix);
    eprintln!("  expires     {}", info.expires_at.map_or("never".to_owned(), rfc3339));
    eprintln!("  limits      {}", control.effective_limits(&info.limits));
    if info.kind == KeyKind::Publishable {
        eprintln!(
            "a publishable key is not secret (it goes into browser code); GET /v1/auth/keys/{} shows it",
            info.id
        );
    } else {
        eprintln!("the key below is shown once and cannot be recovered; store it now:");
    }
    println!("{}", secret.expose());
    if info.kind == KeyKind::Publishable {
        match control.signing_for_new(info, now).await.map_err(refused)? {
            Some(signing) => {
                eprintln!("its signing secret, for identity tokens (shown once, keep it on your server):");
                println!("{}", signing.expose());
            }
            None => eprintln!("no signing secret: one {}", tollgate::admin::service::NO_SEALING_KEY),
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(control: &ControlPlane<'_>, now: i64) -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "{:<12}  {:<28}  {:<7}  {:<20}  {:<20}  {:<20}  NAME",
        "ID", "KEY_PREFIX", "STATUS", "CREATED", "EXPIRES", "REVOKED"
    );
    for k in control.list_keys().await.map_err(refused)? {
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
    Ok(())
}
