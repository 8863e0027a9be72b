//! What every command shares: its error, how it prints, and how it reads ids, orgs and users.

use serde::Serialize;
use uuid::Uuid;

use crate::store::{Store, StoreError};

/// A failure to report on stderr.
#[derive(Debug)]
pub struct CliError(pub String);

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        CliError(match e {
            StoreError::NotFound => "not found".into(),
            StoreError::Invalid { field, message } => format!("{field} {message}"),
            other => other.to_string(),
        })
    }
}

pub type CliResult = Result<(), CliError>;

/// Prints results as JSON or as text for people.
pub struct Output {
    pub json: bool,
}

impl Output {
    pub fn show<T: Serialize>(&self, value: &T, text: impl FnOnce() -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).expect("serializable")
            );
        } else {
            println!("{}", text());
        }
    }
}

/// A value as an error message may show it: never a key pasted in the wrong place.
pub fn shown(value: &str) -> &str {
    if crate::key::looks_like_key(value) {
        "<an API key, not shown>"
    } else {
        value
    }
}

/// An id given on the command line, where a pasted key is not echoed back.
pub fn id_arg(what: &str, value: &str) -> Result<Uuid, CliError> {
    Uuid::try_parse(value).map_err(|_| {
        CliError(format!(
            "{what} takes an id (a UUID), not '{}'",
            shown(value)
        ))
    })
}

pub async fn org_arg(store: &dyn Store, org: &str) -> Result<Uuid, CliError> {
    let id = id_arg("--org", org)?;
    store.get_org(id).await.map_err(|e| match e {
        StoreError::NotFound => CliError(format!("no organization with id {id}")),
        e => e.into(),
    })?;
    Ok(id)
}

pub async fn user_arg(store: &dyn Store, user: &str) -> Result<crate::store::User, CliError> {
    store.find_user(user).await.map_err(|e| match e {
        StoreError::NotFound => CliError(format!("no user with id or email '{}'", shown(user))),
        e => e.into(),
    })
}
