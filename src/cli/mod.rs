//! The command line: `serve`, and the commands that administer the same database.

mod common;
mod keys;
mod member;
mod org;
mod serve;
mod user;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::store;
use common::{CliError, Output};

#[derive(Debug, Parser)]
#[command(
    name = "siesta",
    version,
    about = "Self-hosted server for the Siesta AI External API"
)]
pub struct Cli {
    /// Database URL: a SQLite file (the default, created if missing) or postgres://...
    #[arg(
        long,
        global = true,
        env = "SIESTA_DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://siesta.db"
    )]
    pub database: String,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server.
    // Boxed: its many options would make every other command as large.
    Serve(Box<serve::ServeArgs>),
    /// Manage organizations.
    #[command(subcommand)]
    Org(org::OrgCommand),
    /// Manage users.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Add users to organizations and remove them.
    #[command(subcommand)]
    Member(member::MemberCommand),
    /// Create, list, rotate and delete API keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
}

/// Runs a parsed command line and says how the process should exit.
pub async fn run(cli: Cli) -> ExitCode {
    let changes_keys = matches!(
        &cli.command,
        Command::Keys(keys::KeysCommand::Rotate { .. } | keys::KeysCommand::Delete { .. })
            | Command::Member(
                member::MemberCommand::Add { .. } | member::MemberCommand::Remove { .. }
            )
    );
    let result = match cli.command {
        Command::Serve(args) => serve::run(&cli.database, *args).await,
        command => match store::open(&cli.database).await {
            Err(e) => Err(CliError(format!("cannot open the database: {e}"))),
            Ok(store) => {
                let out = Output { json: cli.json };
                match command {
                    Command::Org(c) => org::run(&*store, &out, c).await,
                    Command::User(c) => user::run(&*store, &out, c).await,
                    Command::Member(c) => member::run(&*store, &out, c).await,
                    Command::Keys(c) => keys::run(&*store, &out, c).await,
                    Command::Serve(_) => unreachable!("handled above"),
                }
            }
        },
    };
    if result.is_ok() && changes_keys {
        crate::auth::revocation::announce_from_outside().await;
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
