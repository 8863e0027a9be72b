//! `siesta keys create | list | rotate | delete`.

use clap::Subcommand;
use serde::Serialize;
use uuid::Uuid;

use super::common::{id_arg, org_arg, shown, user_arg, CliError, CliResult, Output};
use crate::clock::Timestamp;
use crate::duration::{HumanDuration, PerMinute};
use crate::key::{ApiKey, Environment, Scope};
use crate::lifecycle::{self, Actor, IssuedKey, KeySpec};
use crate::store::{KeyFilter, KeyRecord, Store, StoreError};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum EnvArg {
    Live,
    Test,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ScopeArg {
    Read,
    Write,
    Admin,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key. Its value is printed this once and never again.
    Create {
        #[arg(long)]
        org: String,
        /// The member the key acts for: user id or email.
        #[arg(long)]
        user: String,
        /// Suggested pattern: <system>-<environment>-<purpose>, e.g. crm-prod-sync.
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value = "live")]
        environment: EnvArg,
        #[arg(long, value_enum, default_value = "read")]
        scope: ScopeArg,
        /// Lifetime, like 30d or 12h; without it the key does not expire.
        #[arg(long)]
        expires_in: Option<HumanDuration>,
        /// Requests per minute, like 600/min; without it the server default applies.
        #[arg(long)]
        rate_limit: Option<PerMinute>,
    },
    /// List an organization's keys (never their values).
    List {
        #[arg(long)]
        org: String,
        /// Case-insensitive text in the name.
        #[arg(long)]
        search: Option<String>,
        /// Only keys not used for this long, like 30d.
        #[arg(long)]
        unused_for: Option<HumanDuration>,
    },
    /// Replace a key with a new one; the old one works for the grace period.
    Rotate {
        /// The key's id (not the key itself).
        key_id: String,
        /// How long the old key keeps working, like 24h; 0 ends it at once.
        #[arg(long, default_value = "24h")]
        grace: HumanDuration,
    },
    /// Delete a key; it stops working at once.
    Delete {
        /// The key's id (not the key itself).
        key_id: String,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Deleted {
    id: Uuid,
    deleted: bool,
}

fn issued_text(record: &KeyRecord, key: &ApiKey, what: &str) -> String {
    format!(
        "{what} key {name} ({id}), scope {scope}, environment {env}{expiry}\n\
         \n  {value}\n\n\
         This is the only time the key is shown. Store it in your secret manager now.",
        name = record.name,
        id = record.id,
        scope = record.scope,
        env = record.environment,
        expiry = record
            .ends_at()
            .map(|t| format!(", expires {t}"))
            .unwrap_or_default(),
        value = key.reveal(),
    )
}

fn key_line(k: &KeyRecord, now: Timestamp) -> String {
    let state = match k.ends_at() {
        Some(end) if end <= now => "expired".to_owned(),
        _ if k.replaced_by.is_some() => format!(
            "rotated, works until {}",
            k.grace_ends_at.map_or("-".into(), |t| t.to_string())
        ),
        Some(end) => format!("expires {end}"),
        None => "active".to_owned(),
    };
    format!(
        "{}  {}  {}  {}  {}  last used {}  {}",
        k.id,
        k.name,
        k.environment,
        k.scope,
        k.hint,
        k.last_used_at.map_or("never".into(), |t| t.to_string()),
        state
    )
}

pub async fn run(store: &dyn Store, out: &Output, command: KeysCommand) -> CliResult {
    match command {
        KeysCommand::Create {
            org,
            user,
            name,
            environment,
            scope,
            expires_in,
            rate_limit,
        } => {
            let org_id = org_arg(store, &org).await?;
            let user = user_arg(store, &user).await?;
            if !lifecycle::follows_naming_pattern(&name) {
                eprintln!(
                    "warning: '{}' does not follow the suggested <system>-<environment>-<purpose> pattern (e.g. crm-prod-sync)",
                    shown(&name)
                );
            }
            let spec = KeySpec {
                name,
                environment: match environment {
                    EnvArg::Live => Environment::Live,
                    EnvArg::Test => Environment::Test,
                },
                scope: match scope {
                    ScopeArg::Read => Scope::Read,
                    ScopeArg::Write => Scope::Write,
                    ScopeArg::Admin => Scope::Admin,
                },
                expires_in: expires_in.map(|d| d.0),
                rate_limit: rate_limit.map(|r| r.0),
            };
            if spec.expires_in.is_some_and(|d| d.is_zero()) {
                return Err(CliError("--expires-in must be longer than 0".into()));
            }
            let (record, key) =
                lifecycle::create(store, org_id, user.id, &spec, &Actor::Cli, Timestamp::now())
                    .await
                    .map_err(|e| match e {
                        StoreError::Invalid { field: "user", .. } => CliError(format!(
                            "{} is not a member of organization {org_id}",
                            user.email
                        )),
                        StoreError::Invalid {
                            field: "scope",
                            message,
                        } => CliError(format!(
                            "--scope {}: {message} ({})",
                            spec.scope, user.email
                        )),
                        e => e.into(),
                    })?;
            out.show(&IssuedKey::new(record.clone(), &key), || {
                issued_text(&record, &key, "created")
            });
        }
        KeysCommand::List {
            org,
            search,
            unused_for,
        } => {
            let org_id = org_arg(store, &org).await?;
            let now = Timestamp::now();
            let filter = KeyFilter {
                search: search.filter(|s| !s.is_empty()),
                unused_since: unused_for.map(|d| now.minus(d.0)),
            };
            let keys = store.list_keys(org_id, &filter).await?;
            out.show(&keys, || {
                if keys.is_empty() {
                    return "no keys".to_owned();
                }
                keys.iter()
                    .map(|k| key_line(k, now))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        KeysCommand::Rotate { key_id, grace } => {
            let key_id = id_arg("KEY_ID", &key_id)?;
            let org_id = key_org(store, key_id).await?;
            let (record, key) = lifecycle::rotate(
                store,
                org_id,
                key_id,
                grace.0,
                &Actor::Cli,
                Timestamp::now(),
            )
            .await?;
            out.show(&IssuedKey::new(record.clone(), &key), || {
                format!(
                    "{}\n\nThe old key {key_id} keeps working for {grace}. Put the new key in your backend's secret, \
                     re-test a read-only endpoint such as GET /api/v1/Me, then let the old one lapse.",
                    issued_text(&record, &key, "rotated to")
                )
            });
        }
        KeysCommand::Delete { key_id } => {
            let key_id = id_arg("KEY_ID", &key_id)?;
            let org_id = key_org(store, key_id).await?;
            lifecycle::delete(store, org_id, key_id, &Actor::Cli).await?;
            out.show(
                &Deleted {
                    id: key_id,
                    deleted: true,
                },
                || format!("deleted key {key_id}; it no longer works"),
            );
        }
    }
    Ok(())
}

async fn key_org(store: &dyn Store, key_id: Uuid) -> Result<Uuid, CliError> {
    store.key_org(key_id).await.map_err(|e| match e {
        StoreError::NotFound => CliError(format!("no key with id {key_id}")),
        e => e.into(),
    })
}
