//! `tollgate projects create|list|set|delete`: an account's projects and their key caps.

use std::process::ExitCode;

use clap::Subcommand;
use tollgate::clock::{rfc3339, unix_now};
use tollgate::config::Config;

use super::{CliResult, control_plane, printable, refused};

#[derive(Subcommand)]
pub enum ProjectsCommand {
    /// Create a project in an account; prints its id
    Create {
        #[arg(long)]
        name: String,
        /// The account that owns the project
        #[arg(long, default_value = "default")]
        account: String,
        /// Active keys the project may hold at once, 1-1000 [default: 5]
        #[arg(long)]
        key_cap: Option<u32>,
    },
    /// List an account's projects with their active keys and caps
    List {
        #[arg(long, default_value = "default")]
        account: String,
    },
    /// Rename a project or change its key cap
    Set {
        id: String,
        #[arg(long, default_value = "default")]
        account: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        key_cap: Option<u32>,
    },
    /// Delete a project that holds no active key
    Delete {
        id: String,
        #[arg(long, default_value = "default")]
        account: String,
    },
}

pub async fn run(config: &Config, command: ProjectsCommand) -> CliResult {
    let control = control_plane(config).await?;
    let now = unix_now();
    match command {
        ProjectsCommand::Create { name, account, key_cap } => {
            let project = control.create_project(&account, &name, key_cap, now).await.map_err(refused)?;
            eprintln!("created project {:?} in {account}, key cap {}", project.name, project.key_cap);
            println!("{}", project.id);
        }
        ProjectsCommand::List { account } => {
            println!("{:<16}  {:>6}  {:>4}  {:<20}  NAME", "ID", "ACTIVE", "CAP", "CREATED");
            for p in control.projects(&account, now).await.map_err(refused)? {
                let created = rfc3339(p.created_at);
                println!("{:<16}  {:>6}  {:>4}  {created:<20}  {}", p.id, p.active_keys, p.key_cap, printable(&p.name));
            }
        }
        ProjectsCommand::Set { id, account, name, key_cap } => {
            let p = control.update_project(&account, &id, name, key_cap, now).await.map_err(refused)?;
            println!("{}: {:?}, key cap {} ({} active)", p.id, p.name, p.key_cap, p.active_keys);
        }
        ProjectsCommand::Delete { id, account } => {
            control.delete_project(&account, &id, now).await.map_err(refused)?;
            println!("deleted {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
