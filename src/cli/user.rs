//! `siesta user create` and `siesta user set-password`.

use clap::Subcommand;
use uuid::Uuid;

use std::io::{BufRead, IsTerminal};

use super::common::{user_arg, CliError, CliResult, Output};
use crate::clock::Timestamp;
use crate::password::Password;
use crate::store::{Store, User};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user.
    Create {
        #[arg(long)]
        email: String,
    },
    /// Set a user's console password (12 to 128 characters). Never from the command line:
    /// a terminal is asked twice, without echo; otherwise the first line of stdin is read.
    SetPassword {
        /// The user's id or email.
        #[arg(long)]
        user: String,
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
        UserCommand::SetPassword { user } => {
            let user = user_arg(store, &user).await?;
            let password = Password::new(read_password()?)
                .map_err(|e| CliError(format!("the password {e}")))?;
            store.set_password(user.id, &password.hash()).await?;
            out.show(&user, || format!("password set for {}", user.email));
        }
    }
    Ok(())
}

/// The new password: typed twice at a terminal, else the first line of stdin.
fn read_password() -> Result<String, CliError> {
    let unreadable = |e: std::io::Error| CliError(format!("could not read the password: {e}"));
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("New password: ").map_err(unreadable)?;
        let again = rpassword::prompt_password("Repeat it: ").map_err(unreadable)?;
        if first != again {
            return Err(CliError(
                "the two passwords differ; nothing was changed".into(),
            ));
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(unreadable)?;
    let line = line.strip_suffix('\n').unwrap_or(&line);
    Ok(line.strip_suffix('\r').unwrap_or(line).to_owned())
}
