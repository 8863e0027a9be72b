//! `siesta member add | remove`.

use clap::Subcommand;
use serde::Serialize;
use uuid::Uuid;

use super::common::{org_arg, user_arg, CliError, CliResult, Output};
use crate::audit::Actor;
use crate::clock::Timestamp;
use crate::store::{Membership, Role, Store, StoreError};

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Add a user to an organization, or change their role.
    Add {
        #[arg(long)]
        org: String,
        /// User id or email.
        #[arg(long)]
        user: String,
        #[arg(long, value_enum, default_value = "member")]
        role: Role,
    },
    /// Remove a user from an organization; the keys they created stop working.
    Remove {
        #[arg(long)]
        org: String,
        /// User id or email.
        #[arg(long)]
        user: String,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Removed {
    org_id: Uuid,
    user_id: Uuid,
    removed: bool,
}

pub async fn run(store: &dyn Store, out: &Output, command: MemberCommand) -> CliResult {
    match command {
        MemberCommand::Add { org, user, role } => {
            let org_id = org_arg(store, &org).await?;
            let user = user_arg(store, &user).await?;
            let m = Membership {
                org_id,
                user_id: user.id,
                role,
                created_at: Timestamp::now(),
            };
            let audit = Actor::Cli.record(org_id, "member.added").target(user.id);
            store.add_member(&m, audit).await?;
            out.show(&m, || {
                format!(
                    "{} is now {} of organization {}",
                    user.email,
                    role.as_str(),
                    org_id
                )
            });
        }
        MemberCommand::Remove { org, user } => {
            let org_id = org_arg(store, &org).await?;
            let user = user_arg(store, &user).await?;
            let audit = Actor::Cli.record(org_id, "member.removed").target(user.id);
            store
                .remove_member(org_id, user.id, audit)
                .await
                .map_err(|e| match e {
                    StoreError::NotFound => CliError(format!(
                        "{} is not a member of organization {org_id}",
                        user.email
                    )),
                    e => e.into(),
                })?;
            let removed = Removed {
                org_id,
                user_id: user.id,
                removed: true,
            };
            out.show(&removed, || {
                format!(
                    "removed {} from organization {org_id}; keys they created no longer work",
                    user.email
                )
            });
        }
    }
    Ok(())
}
