//! `siesta user create`.

use clap::Subcommand;
use uuid::Uuid;

use super::common::{CliError, CliResult, Output};
use crate::clock::Timestamp;
use crate::store::{Store, User};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user.
    Create {
        #[arg(long)]
        email: String,
    },
}

fn plausible_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

pub async fn run(store: &dyn Store, out: &Output, command: UserCommand) -> CliResult {
    match command {
        UserCommand::Create { email } => {
            let email = email.trim().to_ascii_lowercase();
            if !plausible_email(&email) {
                return Err(CliError(format!(
                    "--email '{email}' is not an email address"
                )));
            }
            let user = User {
                id: Uuid::now_v7(),
                email,
                created_at: Timestamp::now(),
            };
            store.create_user(&user).await?;
            out.show(&user, || {
                format!("created user {} ({})", user.email, user.id)
            });
        }
    }
    Ok(())
}
