//! `siesta org create | list`.

use clap::Subcommand;
use uuid::Uuid;

use super::common::{CliError, CliResult, Output};
use crate::clock::Timestamp;
use crate::store::{Organization, Store};

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization.
    Create {
        #[arg(long)]
        name: String,
    },
    /// List organizations.
    List,
}

pub async fn run(store: &dyn Store, out: &Output, command: OrgCommand) -> CliResult {
    match command {
        OrgCommand::Create { name } => {
            let name = name.trim().to_owned();
            if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
                return Err(CliError(
                    "--name must be 1 to 200 printable characters".into(),
                ));
            }
            let org = Organization {
                id: Uuid::now_v7(),
                name,
                created_at: Timestamp::now(),
            };
            store.create_org(&org).await?;
            out.show(&org, || {
                format!("created organization {} ({})", org.name, org.id)
            });
        }
        OrgCommand::List => {
            let orgs = store.list_orgs().await?;
            out.show(&orgs, || {
                orgs.iter()
                    .map(|o| format!("{}  {}  created {}", o.id, o.name, o.created_at))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(())
}
