//! `cs`: parses the command line, loads the settings and runs a command.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use diesel::Connection as _;
use shared::config::Settings;

/// Concat Service: persists the part messages in PostgreSQL and merges every
/// complete id side by side into <storage>/concat/<id>.<ext>.
#[derive(Debug, Parser)]
#[command(name = "cs", version)]
struct Cli {
    /// TOML configuration file (default: ./two-micros.toml when present).
    #[arg(long, env = "TWO_MICROS_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume and merge until SIGINT/SIGTERM (the default).
    Run,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print how many ids are in each state.
    Status,
    /// List failed ids with their reasons, and messages that were rejected.
    Failures,
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref())?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let system = actix::System::new();
            system.block_on(concat_service::startup::run(settings))?;
            // Drained and committed. Exit now: dropping the runtime would wait
            // for blocking tasks such as a Kafka client still closing, which
            // can outlast the shutdown grace period.
            log::info!("cs stopped");
            std::process::exit(0)
        }
        Command::Migrate => {
            let mut conn = connect(&settings)?;
            let n = concat_service::db::migrate(&mut conn)?;
            println!("{n} migration(s) applied");
            Ok(())
        }
        Command::Status => {
            let mut conn = connect_migrated(&settings)?;
            let counts = concat_service::db::state_counts(&mut conn)?;
            let line: Vec<String> = counts.iter().map(|(s, n)| format!("{s}={n}")).collect();
            println!("{}", line.join(" "));
            Ok(())
        }
        Command::Failures => {
            let mut conn = connect_migrated(&settings)?;
            let f = concat_service::db::failures(&mut conn)?;
            println!("{} failed id(s)", f.failed.len());
            for (id, error) in f.failed {
                println!("  {id}\t{error}");
            }
            println!("{} rejected message(s)", f.rejected.len());
            for (at, error) in f.rejected {
                println!("  {at}\t{error}");
            }
            Ok(())
        }
    }
}

fn connect(settings: &Settings) -> anyhow::Result<diesel::PgConnection> {
    diesel::PgConnection::establish(&settings.database.url)
        .context("connecting to PostgreSQL (is it running? `make infra-up` starts one)")
}

/// A connection to a database with the schema in place: `status` and
/// `failures` work before the first `cs run` (they show zeros then).
fn connect_migrated(settings: &Settings) -> anyhow::Result<diesel::PgConnection> {
    let mut conn = connect(settings)?;
    concat_service::db::migrate(&mut conn)?;
    Ok(conn)
}
